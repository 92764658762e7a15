"""
Exercise dpo: DPO's loss from its equation (docs/ALGORITHMS.md, "DPO").

Write losses.dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1,
label_smoothing=0.0) -> (loss, metrics):
    Delta = (s(y_w) - s_0(y_w)) - (s(y_l) - s_0(y_l))
    L = -(1 - eps) log sigmoid(beta Delta) - eps log sigmoid(-beta Delta),   mean over the pairs
rejected may be (N,) or (N, B): each chosen is paired with each of its B rejected.

    python -m exercises.check dpo

Cases (--cases; the public ones: exercises/cases/dpo.json): {"name": ..., "chosen": [N], "rejected":
[N] or [N][B], "ref_chosen": [N], "ref_rejected": like rejected, "beta": float, "label_smoothing":
float}; a case without beta calls dpo_loss with its defaults. Value and gradients are compared.
"""
import math

import torch

from exercises.lib import (backward, case_checks, check_metrics, close, diagnose, expect, fmt, grad_of,
                           loss_and_metrics, mistakes_of, t64)

TITLE = "DPO's loss from its equation (value, gradient, label smoothing, metrics)"
TIME = 20
OBJECTIVE = "turn a published equation into exact, stable code; see that DPO only ever looks at a margin"
READ = (("docs/ALGORITHMS.md", "DPO"), ("losses.py", "_pairs"), ("losses.py", "LOSSES"))
TARGETS = (("losses", "dpo_loss"),)
NEEDS = ("dpo_loss",)
GRAD = "the value is right but not its gradient: a python float, .item() or .detach() on the way?"


def run(m, cw, cl, rw, rl, grad=False, **kw):
    a, b = t64(cw, grad), t64(cl, grad)
    loss, met = loss_and_metrics(m.dpo_loss(a, b, t64(rw), t64(rl), **kw), "dpo_loss")
    return loss, met, a, b


def compare(m, c, want):
    """Case c against want = {"loss", "g_chosen", "g_rejected", "mistakes"[, "metrics"]}."""
    kw = {k: float(c[k]) for k in ("beta", "label_smoothing") if k in c}
    loss, met, a, b = run(m, c["chosen"], c["rejected"], c["ref_chosen"], c["ref_rejected"], grad=True, **kw)
    shown = ", ".join(f"{k}={v}" for k, v in kw.items()) or "the defaults beta=0.1, label_smoothing=0"
    expect(bool(torch.isfinite(loss)), f"the loss is not finite ({fmt(loss)}) at {shown}: log(sigmoid(z)) "
           "is -inf where sigmoid underflows; use F.logsigmoid")
    diagnose(loss, want["loss"], f"loss at {shown}", mistakes_of(want, "loss"))
    backward(loss, "dpo_loss")
    close(grad_of(a, "chosen_logps"), want["g_chosen"], "d loss / d chosen_logps", 1e-6, GRAD)
    close(grad_of(b, "rejected_logps"), want["g_rejected"], "d loss / d rejected_logps", 1e-6, GRAD)
    if "metrics" in want:
        check_metrics(met, want["metrics"], "dpo_loss")


def checks(m, opts):
    def log2():
        z = [0.0] * 4
        loss, _, _, _ = run(m, z, z, z, z)
        close(loss, math.log(2), "loss with every log-prob 0", 1e-6, "at a zero margin -log sigmoid(0) = "
              "log 2 whatever beta and eps: the loss is a mean of -log sigmoid terms")

    def stable():
        loss, _, a, _ = run(m, [-1000.0], [0.0], [0.0], [0.0], grad=True, beta=1.0)  # beta * Delta = -1000
        expect(bool(torch.isfinite(loss)), "log(sigmoid(z)) is -inf at z = -1000 (sigmoid underflows to 0): use "
               f"F.logsigmoid(z) (loss at beta*Delta = -1000 should be 1000, got {fmt(loss)})")
        close(loss, 1000.0, "loss at beta*Delta = -1000", 1e-6, "-log sigmoid(z) is -z for very negative z")
        backward(loss, "dpo_loss")
        close(grad_of(a, "chosen_logps"), [-1.0], "d loss / d chosen_logps at beta*Delta = -1000", 1e-6,
              "dL/dz = sigmoid(z) - 1 = -1 there: a saturated gradient, not a vanishing one")
        loss, _, _, _ = run(m, [1000.0], [0.0], [0.0], [0.0], beta=1.0)
        close(loss, 0.0, "loss at beta*Delta = +1000", 1e-6, "-log sigmoid(z) is 0 for very positive z")

    return [("zero margin gives log 2", log2)] + case_checks("dpo", compare, m) + [
        ("large margins stay finite (log sigmoid, not log of sigmoid)", stable)]
