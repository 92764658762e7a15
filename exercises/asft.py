"""
Exercise asft: ASFT's loss, exact and with a bounded gradient (docs/ALGORITHMS.md, "ASFT").

Write losses.asft_loss(chosen_avg_logps, rejected_avg_logps, lam=0.1, beta=1.0) -> (loss, metrics):
with a = avg_logp and odds(x) = x - log(1 - exp(x)),
    L = -a(y_w) - lam * [ log sigmoid(odds(beta a(y_w))) + log sigmoid(-odds(beta a(y_l))) ]
      = -a(y_w) - lam * [ beta a(y_w) + log(1 - exp(beta a(y_l))) ]
where beta a(y_l) is clamped at X_MAX = -1e-3 first, so a rejected response the model is almost sure
of (a(y_l) near 0) gives a finite loss and a bounded gradient.

Hidden cases (--cases): {"name": ..., "chosen": [N], "rejected": [N] or [N][B], "lam": float,
"beta": float}; value and gradients are compared with the checker's float64 reference.
"""
import math

import torch

from exercises.lib import (backward, check_metrics, close, diagnose, expect, fmt, grad_of, loss_and_metrics, pairs_of,
                           rand_list, t64)

TITLE = "ASFT's loss: exact, and a bounded gradient when a rejected log-prob nears 0"
TIME = 25
OBJECTIVE = "compute log(1 - exp(x)) without losing it, and see why a clamp bounds the gradient"
READ = (("docs/ALGORITHMS.md", "ASFT"), ("losses.py", "X_MAX"), ("losses.py", "_pairs"))
TARGETS = (("losses", "asft_loss"),)
NEEDS = ("asft_loss",)
X_MAX = -1e-3  # docs/ALGORITHMS.md: beta * a_l is clamped at x <= -1e-3


def reference(aw, al, lam, beta, clamp_on_a=False, sign=1.0, sft=1.0, beta_outside=False, clamp=True):
    """Python floats -> (loss, d/dchosen, d/drejected, mean of the bracket). The keyword arguments
    compute the classic mistakes instead: the clamp on a_l, a flipped sign, no SFT term, beta outside."""
    P = pairs_of(aw, al)
    loss, align, g_w, g_l = 0.0, 0.0, [0.0] * len(aw), [list(r) if isinstance(r, list) else 0.0 for r in al]
    for i, j, w, r in P:
        if beta_outside:
            x = min(r, X_MAX)
            bracket = beta * (w + math.log(-math.expm1(x)))
        else:
            x = (beta * min(r, X_MAX)) if clamp_on_a else (min(beta * r, X_MAX) if clamp else beta * r)
            bracket = beta * w + sign * math.log(-math.expm1(x))
        loss += (-sft * w - lam * bracket) / len(P)
        align += bracket / len(P)
        g_w[i] += (-1 - lam * beta) / len(P)
        g = lam * beta * math.exp(beta * r) / -math.expm1(beta * r) / len(P) if beta * r < X_MAX else 0.0
        if isinstance(g_l[i], list):
            g_l[i][j] = g
        else:
            g_l[i] = g
    return loss, g_w, g_l, align


def mistakes(aw, al, lam, beta):
    return [(reference(aw, al, lam, beta, beta_outside=True)[0],
             "beta belongs inside the odds: the bracket is beta a_w + log(1 - exp(beta a_l))"),
            (reference(aw, al, lam, beta, sft=0.0)[0], "the SFT term -a(y_w) is missing"),
            (reference(aw, al, lam, beta, sign=-1.0)[0],
             "the rejected term has the wrong sign: log sigmoid(-odds(x)) = +log(1 - exp(x))"),
            (reference(aw, al, lam, beta, clamp_on_a=True)[0],
             "the clamp is on a_l; it belongs on x = beta * a_l (clamp x at X_MAX = -1e-3)")]


def run(m, aw, al, grad=False, **kw):
    a, b = t64(aw, grad), t64(al, grad)
    loss, met = loss_and_metrics(m.asft_loss(a, b, **kw), "asft_loss")
    return loss, met, a, b


def checks(m, opts):
    N = 4
    aw, al = rand_list((N,), -3, -0.2, 1), rand_list((N,), -4, -0.3, 2)

    def value(lam, beta):
        def thunk():
            loss, _, _, _ = run(m, aw, al, **({} if lam is None else {"lam": lam, "beta": beta}))
            lam_, beta_ = (0.1, 1.0) if lam is None else (lam, beta)
            diagnose(loss, reference(aw, al, lam_, beta_)[0], f"loss with lam={lam_}, beta={beta_}",
                     mistakes(aw, al, lam_, beta_))
        return thunk

    def gradient():
        loss, _, a, b = run(m, aw, al, grad=True, lam=0.5, beta=0.5)
        backward(loss, "asft_loss")
        _, g_w, g_l, _ = reference(aw, al, 0.5, 0.5)
        close(grad_of(a, "chosen_avg_logps"), g_w, "d loss / d chosen_avg_logps")
        close(grad_of(b, "rejected_avg_logps"), g_l, "d loss / d rejected_avg_logps")

    def pairs():
        al2 = rand_list((N, 3), -4, -0.3, 3)
        loss, _, a, b = run(m, aw, al2, grad=True, lam=0.3, beta=1.0)
        want, g_w, g_l, _ = reference(aw, al2, 0.3, 1.0)
        close(loss, want, f"loss with rejected of shape ({N}, 3): pair each chosen with its 3 rejected, mean over pairs")
        backward(loss, "asft_loss")
        close(grad_of(b, "rejected_avg_logps"), g_l, "d loss / d rejected_avg_logps with (N, B) rejected")

    def near_zero():
        lam, beta, rej = 0.1, 1.0, [-1e-9, 0.0, -5e-4, -2e-3]  # three past the clamp, one just below it
        loss, _, a, b = run(m, [-0.5] * 4, rej, grad=True, lam=lam, beta=beta)
        expect(bool(torch.isfinite(loss)), "log(1 - exp(x)) is log(0) = -inf at x = 0: clamp x = beta*a_l at "
               f"X_MAX = -1e-3 (and use log(-expm1(x))) (loss at a(y_l) = 0 is {fmt(loss)})")
        backward(loss, "asft_loss")
        g = grad_of(b, "rejected_avg_logps")
        bound = lam * beta * math.exp(X_MAX) / -math.expm1(X_MAX) / 4
        expect(bool(torch.isfinite(g).all()) and float(g.abs().max()) <= bound * (1 + 1e-6),
               f"the rejected-side gradient is unbounded near 0 (d/dx log(1 - exp(x)) = -exp(x)/(1 - exp(x))): clamp "
               f"x = beta*a_l at X_MAX = -1e-3, which bounds it by {bound:.4g} here (got {fmt(g)})")
        want = reference([-0.5] * 4, rej, lam, beta)
        close(loss, want[0], "loss with rejected avg_logp -1e-9, 0, -5e-4, -2e-3 (x clamped at X_MAX = -1e-3)")
        close(g, want[2], "d loss / d rejected: exactly 0 past the clamp, -lam*beta*d/dx log(1 - exp(x)) / 4 below it")

    def clamp_scaled():
        rej = [-5e-3, -0.5]  # with beta = 0.1, x = -5e-4 is past the clamp although a_l = -5e-3 is not
        loss, _, _, b = run(m, [-0.4, -0.6], rej, grad=True, lam=1.0, beta=0.1)
        diagnose(loss, reference([-0.4, -0.6], rej, 1.0, 0.1)[0], "loss at beta = 0.1, rejected avg_logp -5e-3",
                 mistakes([-0.4, -0.6], rej, 1.0, 0.1))
        backward(loss, "asft_loss")
        close(grad_of(b, "rejected_avg_logps"), reference([-0.4, -0.6], rej, 1.0, 0.1)[2], "d loss / d rejected at beta "
              "= 0.1: zero where beta*a_l is past X_MAX (clamp x = beta*a_l, not a_l)")

    def metrics():
        _, met, _, _ = run(m, aw, al, lam=0.5, beta=0.5)
        check_metrics(met, {"loss": reference(aw, al, 0.5, 0.5)[0], "align": reference(aw, al, 0.5, 0.5)[3],
                            "avg_logp/pos": sum(aw) / N, "avg_logp/neg": sum(al) / N}, "asft_loss")

    return [("value at the defaults (lam 0.1, beta 1: the published formula)", value(None, None)),
            ("value at lam 1.0, beta 0.1 (the public implementation's)", value(1.0, 0.1)),
            ("gradient w.r.t. chosen and rejected", gradient),
            ("rejected of shape (N, B): pairs, averaged", pairs),
            ("a rejected log-prob near 0: finite loss, bounded gradient", near_zero),
            ("the clamp applies to beta * a(y_l)", clamp_scaled),
            ("metrics: loss, align, avg_logp/pos, avg_logp/neg", metrics)]


def run_case(m, c):
    lam, beta = float(c.get("lam", 0.1)), float(c.get("beta", 1.0))
    loss, _, a, b = run(m, c["chosen"], c["rejected"], grad=True, lam=lam, beta=beta)
    want, g_w, g_l, _ = reference(c["chosen"], c["rejected"], lam, beta)
    diagnose(loss, want, "loss", mistakes(c["chosen"], c["rejected"], lam, beta))
    backward(loss, "asft_loss")
    close(grad_of(a, "chosen_avg_logps"), g_w, "d loss / d chosen_avg_logps")
    close(grad_of(b, "rejected_avg_logps"), g_l, "d loss / d rejected_avg_logps")
