"""
Worked solution of the dpo_chosen exercise.

    python -m exercises.check dpo_chosen --impl exercises/solutions/dpo_chosen.py

dL/dtheta = -beta sigmoid(-m) (g_w - g_l), so one step of gradient descent moves theta by
lr beta sigmoid(-m) (g_w - g_l), and s_w changes, to first order, by that step dotted with g_w:
lr beta sigmoid(-m) (|g_w|^2 - g_w . g_l). It is negative exactly when g_w . g_l > |g_w|^2: when the
rejected's gradient points the chosen's way and is longer. In the unigram toy model g(y) = counts(y) -
len(y) softmax(theta), so a rejected that uses the chosen's token 0 five times, plus a token of its own,
pulls p(0) down hard; the chosen needs token 0 too, and falls with it, while the margin grows because
the rejected falls faster. On real data chosen and rejected answers share most of their tokens (the
same prompt, the same format, often the same first sentences), which is why DPO's chosen log-prob falls
in practice: in the short runs of exercise sft_vs_dft, held-out logp of the gold answers ends far below
the base model's (exercises/reference_numbers.json: dpo/logp_pos against before/logp_pos).

ASFT is different: its loss holds -(1 + lam beta) a(y_w), the chosen's own likelihood, so its pull on the
chosen is a constant that never fades with the margin, and lowering both likelihoods together raises the
loss. DPO's pull, beta sigmoid(-m), fades as the margin grows, and a common shift costs it nothing.
"""
import math

import torch


def chosen_change(g_w, g_l, margin, beta, lr):
    sig = torch.sigmoid(torch.tensor(-float(margin), dtype=torch.float64))  # -dL/dm
    return (lr * beta * sig * (g_w @ g_w - g_w @ g_l)).item()  # step = lr beta sig (g_w - g_l); dot with g_w


def make_case():
    return [0, 1], [0, 0, 0, 0, 0, 2]  # the rejected shares token 0 with the chosen, five times over


ANSWERS = {
    "dpo_grad_chosen": -0.1 / (1 + math.exp(3.0)),  # -beta sigmoid(-m) at m = 3: a weak pull
    "dpo_shift": 0.0,  # the loss only sees the margin, which does not move
    "asft_grad_chosen": -1.1,  # -(1 + lam beta), whatever a(y_l)
    # L = -a_w - lam (beta a_w + log(1 - exp(beta a_l))), after minus before
    "asft_shift": (1.5 - 0.1 * (-1.5 + math.log(-math.expm1(-2.5)))) - (1.0 - 0.1 * (-1.0 + math.log(-math.expm1(-2.0)))),
    "why": ("DPO's loss depends only on the margin: it falls whenever the rejected falls faster than the chosen, "
            "even when both fall. With shared parameters, the step lr beta sigmoid(-m) (g_w - g_l) changes s_w "
            "by lr beta sigmoid(-m) (|g_w|^2 - g_w . g_l): negative when the rejected's gradient points the "
            "chosen's way and is longer, as when chosen and rejected share most of their tokens."),
    "why_asft": ("ASFT's loss holds the chosen's likelihood in absolute terms: -(1 + lam beta) a(y_w), whose "
                 "gradient is a constant -1.1 that never fades, so lowering the chosen always costs (asft_shift "
                 "> 0). DPO's pull on the chosen, beta sigmoid(-m), fades as the margin grows, and lowering both "
                 "log-probs together costs nothing (dpo_shift = 0): nothing in DPO keeps the chosen up."),
}
