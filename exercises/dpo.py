"""
Exercise dpo: DPO's loss from its equation (docs/ALGORITHMS.md, "DPO").

Write losses.dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1,
label_smoothing=0.0) -> (loss, metrics):
    Delta = (s(y_w) - s_0(y_w)) - (s(y_l) - s_0(y_l))
    L = -(1 - eps) log sigmoid(beta Delta) - eps log sigmoid(-beta Delta),   mean over the pairs
rejected may be (N,) or (N, B): each chosen is paired with each of its B rejected.

Hidden cases (--cases): {"name": ..., "chosen": [N], "rejected": [N] or [N][B], "ref_chosen": [N],
"ref_rejected": like rejected, "beta": float, "label_smoothing": float}; value and gradients are
compared with the checker's float64 reference.
"""
import math

import torch

from exercises.lib import (backward, check_metrics, close, diagnose, expect, fmt, grad_of, logsig, loss_and_metrics,
                           pairs_of, rand_list, sigmoid, t64)

TITLE = "DPO's loss from its equation (value, gradient, label smoothing, metrics)"
TIME = 20
OBJECTIVE = "turn a published equation into exact, stable code; see that DPO only ever looks at a margin"
READ = (("docs/ALGORITHMS.md", "DPO"), ("losses.py", "_pairs"), ("losses.py", "LOSSES"))
TARGETS = (("losses", "dpo_loss"),)
NEEDS = ("dpo_loss",)


def reference(cw, cl, rw, rl, beta, eps, ref=True, smooth_sign=1.0):
    """Python floats -> loss, d/dchosen, d/drejected, per-pair (r_w, r_l). ref=False and smooth_sign=-1
    compute two classic mistakes (the reference forgotten, the smoothing term's sign flipped)."""
    P = pairs_of(cw, cl)
    loss, g_w, g_l, rewards = 0.0, [0.0] * len(cw), [list(r) if isinstance(r, list) else 0.0 for r in cl], []
    for i, j, c, r in P:
        r0 = rl[i][j] if isinstance(rl[i], list) else rl[i]
        r_w, r_l = beta * (c - rw[i] * ref), beta * (r - r0 * ref)
        z = r_w - r_l
        loss += (-(1 - eps) * logsig(z) - smooth_sign * eps * logsig(-z)) / len(P)
        dz = (sigmoid(z) - (1 - eps)) / len(P)  # dL/dz per pair
        g_w[i] += beta * dz
        if isinstance(g_l[i], list):
            g_l[i][j] = -beta * dz
        else:
            g_l[i] = -beta * dz
        rewards.append((r_w, r_l))
    return loss, g_w, g_l, rewards


def mistakes(cw, cl, rw, rl, beta, eps):
    return [(reference(cw, cl, rw, rl, beta, eps, ref=False)[0],
             "the reference log-probs are not subtracted: rewards are s - s_0, relative to the starting model"),
            (reference(cw, cl, rw, rl, beta, eps, smooth_sign=-1.0)[0],
             "the label-smoothing term has the wrong sign: both terms are -log sigmoid(...)"),
            (reference(cw, cl, rw, rl, beta, 1 - eps)[0] if eps else math.nan,
             "eps and 1 - eps are swapped: (1 - eps) weighs log sigmoid(+beta Delta)"),
            (reference(cw, cl, rw, rl, 1.0, eps)[0], "beta is missing: the loss is -log sigmoid(beta * Delta)")]


def run(m, cw, cl, rw, rl, grad=False, **kw):
    a, b = t64(cw, grad), t64(cl, grad)
    loss, met = loss_and_metrics(m.dpo_loss(a, b, t64(rw), t64(rl), **kw), "dpo_loss")
    return loss, met, a, b


def checks(m, opts):
    N = 5
    cw, cl, rw, rl = (rand_list((N,), -60, -5, s) for s in range(4))

    def log2():
        z = [0.0] * 4
        loss, _, _, _ = run(m, z, z, z, z)
        close(loss, math.log(2), "loss with every log-prob 0 (zero margin: -log sigmoid(0) = log 2)")

    def value_default():
        loss, _, _, _ = run(m, cw, cl, rw, rl)  # defaults: beta 0.1, label_smoothing 0
        diagnose(loss, reference(cw, cl, rw, rl, 0.1, 0.0)[0], "loss at the defaults beta=0.1, label_smoothing=0",
                 mistakes(cw, cl, rw, rl, 0.1, 0.0))

    def reference_matters():
        loss, _, _, _ = run(m, cw, cl, rw, rl, beta=0.5)
        diagnose(loss, reference(cw, cl, rw, rl, 0.5, 0.0)[0], "loss with beta=0.5", mistakes(cw, cl, rw, rl, 0.5, 0.0))

    def smoothing():
        loss, _, _, _ = run(m, cw, cl, rw, rl, beta=0.5, label_smoothing=0.2)
        diagnose(loss, reference(cw, cl, rw, rl, 0.5, 0.2)[0], "loss with beta=0.5, label_smoothing=0.2",
                 mistakes(cw, cl, rw, rl, 0.5, 0.2))

    def gradient():
        loss, _, a, b = run(m, cw, cl, rw, rl, grad=True, beta=0.5, label_smoothing=0.1)
        backward(loss, "dpo_loss")
        _, g_w, g_l, _ = reference(cw, cl, rw, rl, 0.5, 0.1)
        close(grad_of(a, "chosen_logps"), g_w, "d loss / d chosen_logps")
        close(grad_of(b, "rejected_logps"), g_l, "d loss / d rejected_logps")

    def pairs():
        B = 3
        cl2, rl2 = rand_list((N, B), -60, -5, 10), rand_list((N, B), -60, -5, 11)
        loss, _, a, _ = run(m, cw, cl2, rw, rl2, grad=True, beta=0.3)
        want, g_w, _, _ = reference(cw, cl2, rw, rl2, 0.3, 0.0)
        close(loss, want, f"loss with rejected of shape ({N}, {B}): pair each chosen with its {B} rejected "
              "(chosen.unsqueeze(1)) and take the mean over all pairs")
        backward(loss, "dpo_loss")
        close(grad_of(a, "chosen_logps"), g_w, "d loss / d chosen_logps with (N, B) rejected")

    def metrics():
        _, met, _, _ = run(m, cw, cl, rw, rl, beta=0.5)
        rw_l = reference(cw, cl, rw, rl, 0.5, 0.0)[3]
        check_metrics(met, {"rewards/chosen": sum(a for a, _ in rw_l) / N, "rewards/rejected": sum(b for _, b in rw_l) / N,
                            "rewards/margins": sum(a - b for a, b in rw_l) / N,
                            "rewards/accuracies": sum(a > b for a, b in rw_l) / N}, "dpo_loss")

    def stable():
        loss, _, a, _ = run(m, [-1000.0], [0.0], [0.0], [0.0], grad=True, beta=1.0)  # beta * Delta = -1000
        expect(bool(torch.isfinite(loss)), "log(sigmoid(z)) is -inf at z = -1000 (sigmoid underflows to 0): use "
               f"F.logsigmoid(z) (loss at beta*Delta = -1000 should be 1000, got {fmt(loss)})")
        close(loss, 1000.0, "loss at beta*Delta = -1000")
        backward(loss, "dpo_loss")
        close(grad_of(a, "chosen_logps"), [-1.0], "d loss / d chosen_logps at beta*Delta = -1000")
        loss, _, _, _ = run(m, [1000.0], [0.0], [0.0], [0.0], beta=1.0)
        close(loss, 0.0, "loss at beta*Delta = +1000")

    return [("zero margin gives log 2", log2),
            ("value at the defaults (beta 0.1, no smoothing)", value_default),
            ("value with beta 0.5: rewards are relative to the reference", reference_matters),
            ("label smoothing (conservative DPO)", smoothing),
            ("gradient w.r.t. chosen and rejected log-probs", gradient),
            ("rejected of shape (N, B): pairs, averaged", pairs),
            ("metrics: rewards/chosen, /rejected, /margins, /accuracies", metrics),
            ("large margins stay finite (log sigmoid, not log of sigmoid)", stable)]


def run_case(m, c):
    beta, eps = float(c.get("beta", 0.1)), float(c.get("label_smoothing", 0.0))
    args = [c["chosen"], c["rejected"], c["ref_chosen"], c["ref_rejected"]]
    loss, _, a, b = run(m, *args, grad=True, beta=beta, label_smoothing=eps)
    want, g_w, g_l, _ = reference(*args, beta, eps)
    diagnose(loss, want, "loss", mistakes(*args, beta, eps))
    backward(loss, "dpo_loss")
    close(grad_of(a, "chosen_logps"), g_w, "d loss / d chosen_logps")
    close(grad_of(b, "rejected_logps"), g_l, "d loss / d rejected_logps")
