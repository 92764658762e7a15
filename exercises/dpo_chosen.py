"""
Exercise dpo_chosen: why DPO can lower the log-prob of the very answer it prefers, and why ASFT cannot
profit from that.

DPO's loss depends only on the margin Delta = (s_w - s0_w) - (s_l - s0_l): it falls whenever the
rejected falls faster than the chosen, including when both fall. With shared parameters theta, one
gradient step of size lr changes the chosen's log-prob s_w, to first order, by
    lr * (-dL/dtheta) . g_w,    g_w = ds_w/dtheta,  g_l = ds_l/dtheta,  dL/dtheta = -beta sigmoid(-m) (g_w - g_l)
with m = beta * Delta. Your file defines
  chosen_change(g_w, g_l, margin, beta, lr)  that first-order change of s_w (a float or 0-d tensor), for
                                             1-D tensors g_w, g_l and the current margin m = beta * Delta
  make_case()                                (chosen, rejected): two token lists for the checker's toy model
                                             (below) in which 20 steps of gradient descent on DPO lower the
                                             loss AND the chosen's log-prob
  ANSWERS                                    the questions below
The toy model: one prompt, a unigram softmax over V = 5 tokens, s(y) = sum_t log softmax(theta)[y_t],
theta = 0 at the start and as the reference; plain gradient descent, lr 0.5, beta 0.5.

ANSWERS (exercises/README.md, exercise dpo_chosen):
  dpo_grad_chosen   dL/ds(y_w) of one DPO pair at beta = 0.1 and margin beta * Delta = 3
  dpo_shift         the change of that pair's DPO loss when s(y_w) and s(y_l) both fall by 5 (s_0 fixed)
  asft_grad_chosen  dL/da(y_w) of one ASFT pair (lam = 0.1, beta = 1) at a(y_w) = -1, a(y_l) = -2
  asft_shift        the change of that pair's ASFT loss when a(y_w) and a(y_l) both fall by 0.5
  why               written: why does DPO lower the chosen log-prob? (graded with the rubric)
  why_asft          written: why can DPO's chosen likelihood fall while ASFT keeps pushing its chosen up?

    python -m exercises.check dpo_chosen
"""
import math

import torch
import torch.nn.functional as F

from exercises.lib import Fail, answers, expect, fmt, number, written_check

TITLE = "why does DPO lower the chosen log-prob? build a case, and compare with ASFT"
TIME = 35
OBJECTIVE = "see that a relative objective can lower both likelihoods, and predict when from the gradients"
READ = (("docs/ALGORITHMS.md", "DPO"), ("docs/ALGORITHMS.md", "ASFT"), ("README.md", "Results"),
        ("losses.py", "LOSSES"))
TARGETS = ()
NEEDS = ("chosen_change", "make_case")
V, LR, BETA, STEPS = 5, 0.5, 0.5, 20
NUMBERS = ("dpo_grad_chosen", "dpo_shift", "asft_grad_chosen", "asft_shift")


def s_of(theta, y):
    return torch.log_softmax(theta, 0)[torch.tensor(y)].sum()


def dpo_steps(chosen, rejected, steps=STEPS, lr=LR, beta=BETA, theta=None):
    """Gradient descent on the toy model's DPO loss from theta (default 0; the reference is 0) ->
    [(loss, s_w, s_l, theta)] before each step and after the last."""
    theta = (torch.zeros(V, dtype=torch.float64) if theta is None else theta.clone()).requires_grad_()
    ref = torch.zeros(V, dtype=torch.float64)
    s0w, s0l = s_of(ref, chosen), s_of(ref, rejected)
    hist = []
    for _ in range(steps + 1):
        sw, sl = s_of(theta, chosen), s_of(theta, rejected)
        loss = -F.logsigmoid(beta * ((sw - s0w) - (sl - s0l)))
        hist.append((loss.item(), sw.item(), sl.item(), theta.detach().clone()))
        g, = torch.autograd.grad(loss, theta)
        theta = (theta - lr * g).detach().requires_grad_()
    return hist


def grads(theta, y):
    t = theta.clone().requires_grad_()
    g, = torch.autograd.grad(s_of(t, y), t)
    return g


def call(m, g_w, g_l, margin, beta, lr):
    out = m.chosen_change(g_w.clone(), g_l.clone(), margin, beta, lr)
    try:
        return float(out)
    except (TypeError, ValueError, RuntimeError):
        raise Fail(f"chosen_change should return a number (a float or a 0-d tensor), got {out!r}") from None


def case(m):
    out = m.make_case()
    ok = (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(y, (list, tuple)) and y and all(
        type(t) is int and 0 <= t < V for t in y) for y in out))
    expect(ok, f"make_case() should return (chosen, rejected): two non-empty lists of token ids in range({V}), got {out!r}")
    expect(list(out[0]) != list(out[1]), "chosen and rejected are the same answer: the margin is always 0 and nothing moves")
    return list(out[0]), list(out[1])


def checks(m, opts):
    def predicts_a_step():
        chosen, rejected = [0, 1], [0, 0, 2]
        theta = dpo_steps(chosen, rejected, steps=3)[-1][3]  # three steps in: a margin that is not 0
        margin = BETA * ((s_of(theta, chosen) - s_of(torch.zeros(V, dtype=torch.float64), chosen))
                         - (s_of(theta, rejected) - s_of(torch.zeros(V, dtype=torch.float64), rejected))).item()
        hist = dpo_steps(chosen, rejected, steps=1, lr=1e-6, theta=theta)  # small: first order is all there is
        pred = call(m, grads(theta, chosen), grads(theta, rejected), margin, BETA, 1e-6)
        actual = hist[1][1] - hist[0][1]
        if abs(pred - actual) <= 1e-3 * abs(actual) + 1e-12:
            return
        ratio = pred / actual if actual else math.inf
        why = ("the sign is flipped: gradient DEScent moves theta by -lr dL/dtheta. " if abs(ratio + 1) < 1e-2 else
               "dL/dm = -sigmoid(-m), not -sigmoid(m): the worse the margin, the larger the step. "
               if abs(ratio - math.exp(margin)) < 1e-2 else "beta is missing: dL/dtheta = -beta sigmoid(-m) "
               "(g_w - g_l). " if abs(ratio - 1 / BETA) < 1e-2 else "the step is -lr dL/dtheta; its dot product "
               "with g_w is the chosen's change (is the rejected's gradient in it?). ")
        raise Fail(f"{why}chosen_change predicts {pred:.6g} for one step of lr 1e-6 on the toy model at margin "
                   f"{margin:.4f} (chosen {chosen}, rejected {rejected}); the step itself changes s_w by {actual:.6g}")

    def loss_falls():
        hist = dpo_steps(*case(m))
        expect(hist[-1][0] < hist[0][0] - 1e-6, f"the DPO loss does not fall in your case ({hist[0][0]:.4f} -> "
               f"{hist[-1][0]:.4f}): chosen and rejected must differ in a way theta can separate")

    def chosen_falls():
        chosen, rejected = case(m)
        hist = dpo_steps(chosen, rejected)
        expect(hist[-1][1] < hist[0][1] - 1e-6, f"in your case the chosen's log-prob rises ({hist[0][1]:.4f} -> "
               f"{hist[-1][1]:.4f}): it falls only when g_w . g_l > |g_w|^2, when the rejected shares the chosen's "
               "tokens (and uses them more): pushing the rejected down then drags the chosen down with it")

    def predicted_fall():
        chosen, rejected = case(m)
        theta = torch.zeros(V, dtype=torch.float64)
        pred = call(m, grads(theta, chosen), grads(theta, rejected), 0.0, BETA, LR)
        expect(pred < 0, f"your chosen_change predicts {fmt(pred)} for the first step of your own case: it should "
               "predict the fall you built (check the formula on this case)")

    def filled():
        a = answers(m)
        for key in NUMBERS:
            number(a, key)

    return [("chosen_change predicts a small step of the toy model", predicts_a_step),
            ("your case: the DPO loss falls over 20 steps", loss_falls),
            ("your case: ... while the chosen's log-prob falls too", chosen_falls),
            ("your chosen_change predicts that fall", predicted_fall),
            ("the four derivatives are filled in", filled),
            written_check(m, "why", "why does DPO lower the chosen log-prob?"),
            written_check(m, "why_asft", "why does ASFT keep pushing its chosen up?")]
