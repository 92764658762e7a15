"""Teacher's part of exercise dpo_chosen: the formula of chosen_change, the keys of the
derivatives, and the rubric of the written answers (exercises/teacher/rubric.md)."""
import math

import torch

from exercises.dpo_chosen import call
from exercises.lib import answers, diagnose, number

from .ref import sigmoid

RUBRIC = {"why": 3, "why_asft": 3}


def formula(g_w, g_l, margin, beta, lr, sig=None):
    s = sigmoid(-margin) if sig is None else sig
    return lr * beta * s * float(g_w @ g_w - g_w @ g_l)


def asft_loss(a_w, a_l, lam=0.1, beta=1.0):
    return -a_w - lam * (beta * a_w + math.log(-math.expm1(beta * a_l)))


def key():
    """The four derivatives, each with the values the usual mistakes give."""
    shift = asft_loss(-1.5, -2.5) - asft_loss(-1.0, -2.0)
    return {"dpo_grad_chosen": (-0.1 * sigmoid(-3.0), [
                (-0.1 * sigmoid(3.0), "dL/dm = -sigmoid(-m): at a margin of 3 the pull on the "
                 "chosen is small, not large"),
                (-sigmoid(-3.0), "dL/ds_w = beta dL/dm: beta = 0.1")]),
            "dpo_shift": (0.0, []),
            "asft_grad_chosen": (-1.1, [
                (-1.0, "the bracket has beta a(y_w) too: dL/da_w = -(1 + lam beta)"),
                (-0.1, "the SFT term -a(y_w) counts too: dL/da_w = -(1 + lam beta)")]),
            "asft_shift": (shift, [(-shift, "the sign is flipped: the change is L(after) - "
                                    "L(before), and lowering a(y_w) raises -a(y_w)")])}


def checks(m, opts):
    def formula_check():
        g = torch.Generator().manual_seed(5)
        g_w = torch.randn(7, generator=g, dtype=torch.float64)
        g_l = torch.randn(7, generator=g, dtype=torch.float64)
        for margin, beta, lr in ((0.3, 0.5, 0.1), (-1.2, 2.0, 0.01)):
            want = formula(g_w, g_l, margin, beta, lr)
            wrong = [(-want, "the sign is flipped: gradient DEScent moves theta by -lr dL/dtheta"),
                     (formula(g_w, g_l, margin, beta, lr, sig=sigmoid(margin)), "dL/dm = "
                      "-sigmoid(-m), not -sigmoid(m): the worse the margin, the larger the step"),
                     (formula(g_w, g_l, margin, 1.0, lr), "beta is missing: dL/dtheta = -beta "
                      "sigmoid(-m) (g_w - g_l)"),
                     (lr * beta * sigmoid(-margin) * float(g_w @ g_w), "the rejected's gradient "
                      "is missing: the loss moves theta along g_w - g_l, and the chosen's change "
                      "is that step dotted with g_w")]
            diagnose(call(m, g_w, g_l, margin, beta, lr), want, f"chosen_change at margin {margin}"
                     f", beta {beta}, lr {lr}", wrong, 1e-6, "the step is lr beta sigmoid(-m) "
                     "(g_w - g_l); its dot product with g_w")

    def derivative(name):
        def thunk():
            want, wrong = key()[name]
            diagnose(number(answers(m), name), want, f'ANSWERS["{name}"]', wrong, 1e-4,
                     "write the loss of one pair as a function of the two log-probs and "
                     "differentiate it")
        return thunk

    return [("key: chosen_change, the first-order change of s_w after one DPO step",
             formula_check)] + [(f"key: {name}", derivative(name)) for name in key()]
