"""
Exercise asft: ASFT's loss, exact and with a bounded gradient (docs/ALGORITHMS.md, "ASFT").

Write losses.asft_loss(chosen_avg_logps, rejected_avg_logps, lam=0.1, beta=1.0) -> (loss, metrics):
with a = avg_logp and odds(x) = x - log(1 - exp(x)),
    L = -a(y_w) - lam * [ log sigmoid(odds(beta a(y_w))) + log sigmoid(-odds(beta a(y_l))) ]
      = -a(y_w) - lam * [ beta a(y_w) + log(1 - exp(beta a(y_l))) ]
where beta a(y_l) is clamped at X_MAX = -1e-3 first, so a rejected response the model is almost sure
of (a(y_l) near 0) gives a finite loss and a bounded gradient.

    python -m exercises.check asft

Cases (--cases; the public ones: exercises/cases/asft.json): {"name": ..., "chosen": [N], "rejected":
[N] or [N][B], "lam": float, "beta": float}; a case without lam and beta calls asft_loss with its
defaults. Value and gradients are compared.
"""
import math

import torch

from exercises.lib import (backward, case_checks, check_metrics, close, diagnose, expect, fmt, grad_of,
                           loss_and_metrics, mistakes_of, t64)

TITLE = "ASFT's loss: exact, and a bounded gradient when a rejected log-prob nears 0"
TIME = 25
OBJECTIVE = "compute log(1 - exp(x)) without losing it, and see why a clamp bounds the gradient"
READ = (("docs/ALGORITHMS.md", "ASFT"), ("losses.py", "X_MAX"), ("losses.py", "_pairs"))
TARGETS = (("losses", "asft_loss"),)
NEEDS = ("asft_loss",)
X_MAX = -1e-3  # docs/ALGORITHMS.md: beta * a_l is clamped at x <= -1e-3
GRAD = "the value is right but not its gradient: a python float, .item() or .detach() on the way?"


def run(m, aw, al, grad=False, **kw):
    a, b = t64(aw, grad), t64(al, grad)
    loss, met = loss_and_metrics(m.asft_loss(a, b, **kw), "asft_loss")
    return loss, met, a, b


def compare(m, c, want):
    """Case c against want = {"loss", "g_chosen", "g_rejected", "mistakes"[, "metrics"]}."""
    kw = {k: float(c[k]) for k in ("lam", "beta") if k in c}
    loss, met, a, b = run(m, c["chosen"], c["rejected"], grad=True, **kw)
    shown = ", ".join(f"{k}={v}" for k, v in kw.items()) or "the defaults lam=0.1, beta=1"
    expect(bool(torch.isfinite(loss)), f"the loss is not finite ({fmt(loss)}) at {shown}: log(1 - exp(x)) "
           "is log(0) = -inf at x = 0; clamp x = beta*a_l at X_MAX = -1e-3 and use log(-expm1(x))")
    diagnose(loss, want["loss"], f"loss at {shown}", mistakes_of(want, "loss"))
    backward(loss, "asft_loss")
    close(grad_of(a, "chosen_avg_logps"), want["g_chosen"], "d loss / d chosen_avg_logps", 1e-6, GRAD)
    close(grad_of(b, "rejected_avg_logps"), want["g_rejected"], "d loss / d rejected_avg_logps", 1e-6,
          "the rejected side's gradient is off: it is exactly 0 where beta*a_l is past X_MAX (the clamp) and "
          "lam*beta*exp(x)/(1-exp(x))/(pairs) below it")
    if "metrics" in want:
        check_metrics(met, want["metrics"], "asft_loss")


def checks(m, opts):
    def near_zero():
        lam, beta, rej = 0.1, 1.0, [-1e-9, 0.0, -5e-4, -2e-3]  # three past the clamp, one just below it
        loss, _, _, b = run(m, [-0.5] * 4, rej, grad=True, lam=lam, beta=beta)
        expect(bool(torch.isfinite(loss)), "log(1 - exp(x)) is log(0) = -inf at x = 0: clamp x = beta*a_l at "
               f"X_MAX = -1e-3 (and use log(-expm1(x))) (loss at a(y_l) = 0 is {fmt(loss)})")
        backward(loss, "asft_loss")
        g = grad_of(b, "rejected_avg_logps")
        bound = lam * beta * math.exp(X_MAX) / -math.expm1(X_MAX) / 4
        expect(bool(torch.isfinite(g).all()) and float(g.abs().max()) <= bound * (1 + 1e-6),
               f"the rejected-side gradient is unbounded near 0 (d/dx log(1 - exp(x)) = -exp(x)/(1 - exp(x))): clamp "
               f"x = beta*a_l at X_MAX = -1e-3, which bounds it by {bound:.4g} here (got {fmt(g)})")
        expect(float(g[:3].abs().max()) == 0.0, "past the clamp the rejected side's gradient is exactly 0 (a "
               f"clamp, not a smooth limit): got {fmt(g)} for a(y_l) = -1e-9, 0, -5e-4, -2e-3")

    return case_checks("asft", compare, m)[:4] + [
        ("a rejected log-prob near 0: finite loss, bounded gradient", near_zero)] + case_checks("asft", compare, m)[4:]
