"""Teacher's part of exercise asft: the float64 reference and the cases it scores."""
import math

from exercises.asft import X_MAX, compare
from exercises.lib import rand_list

from .ref import mistakes as named, pairs_of

_AW, _AL = rand_list((4,), -3, -0.2, 1), rand_list((4,), -4, -0.3, 2)
_BASE = {"chosen": _AW, "rejected": _AL}
PUBLIC = [{"name": "the defaults lam 0.1, beta 1 (the published formula)", **_BASE},
          {"name": "lam 1.0, beta 0.1 (the public implementation's)", **_BASE, "lam": 1.0,
           "beta": 0.1},
          {"name": "lam 0.5, beta 0.5", **_BASE, "lam": 0.5, "beta": 0.5},
          {"name": "rejected of shape (N, B): pairs, averaged", "chosen": _AW,
           "rejected": rand_list((4, 3), -4, -0.3, 3), "lam": 0.3, "beta": 1.0},
          {"name": "rejected avg_logp -1e-9, 0, -5e-4, -2e-3 (x clamped at X_MAX)",
           "chosen": [-0.5] * 4, "rejected": [-1e-9, 0.0, -5e-4, -2e-3], "lam": 0.1, "beta": 1.0},
          {"name": "the clamp applies to beta * a(y_l): beta 0.1, a(y_l) = -5e-3",
           "chosen": [-0.4, -0.6], "rejected": [-5e-3, -0.5], "lam": 1.0, "beta": 0.1},
          {"name": "metrics: loss, align, avg_logp/pos, avg_logp/neg", **_BASE, "lam": 0.5,
           "beta": 0.5, "metrics": True}]
CASES = [{"name": "other log-probs, lam 0.2, beta 2", "chosen": rand_list((5,), -2, -0.05, 30),
          "rejected": rand_list((5,), -1, -0.0001, 31), "lam": 0.2, "beta": 2.0},
         {"name": "two rejected per chosen, one past the clamp", "chosen": [-1.0, -0.3],
          "rejected": [[-2e-4, -0.7], [-1.5, -0.01]], "lam": 0.5, "beta": 0.5, "metrics": True}]


def reference(aw, al, lam, beta, clamp_on_a=False, sign=1.0, sft=1.0, beta_outside=False):
    """Python floats -> (loss, d/dchosen, d/drejected, mean of the bracket). The keyword arguments
    compute the classic mistakes instead: the clamp on a_l, a flipped sign, no SFT term, beta
    outside the odds."""
    P = pairs_of(aw, al)
    loss, align, g_w = 0.0, 0.0, [0.0] * len(aw)
    g_l = [list(r) if isinstance(r, list) else 0.0 for r in al]
    for i, j, w, r in P:
        if beta_outside:
            x = min(r, X_MAX)
            bracket = beta * (w + math.log(-math.expm1(x)))
        else:
            x = (beta * min(r, X_MAX)) if clamp_on_a else min(beta * r, X_MAX)
            bracket = beta * w + sign * math.log(-math.expm1(x))
        loss += (-sft * w - lam * bracket) / len(P)
        align += bracket / len(P)
        g_w[i] += (-1 - lam * beta) / len(P)
        # past the clamp the rejected side's gradient is exactly 0
        g = lam * beta * math.exp(beta * r) / -math.expm1(beta * r) / len(P) if beta * r < X_MAX \
            else 0.0
        if isinstance(g_l[i], list):
            g_l[i][j] = g
        else:
            g_l[i] = g
    return loss, g_w, g_l, align


def expected(c):
    lam, beta = float(c.get("lam", 0.1)), float(c.get("beta", 1.0))
    aw, al = c["chosen"], c["rejected"]
    loss, g_w, g_l, align = reference(aw, al, lam, beta)
    want = {"loss": loss, "g_chosen": g_w, "g_rejected": g_l, "mistakes": named([
        ("loss", reference(aw, al, lam, beta, beta_outside=True)[0],
         "beta belongs inside the odds: the bracket is beta a_w + log(1 - exp(beta a_l))"),
        ("loss", reference(aw, al, lam, beta, sft=0.0)[0], "the SFT term -a(y_w) is missing"),
        ("loss", reference(aw, al, lam, beta, sign=-1.0)[0],
         "the rejected term has the wrong sign: log sigmoid(-odds(x)) = +log(1 - exp(x))"),
        ("loss", reference(aw, al, lam, beta, clamp_on_a=True)[0],
         "the clamp is on a_l; it belongs on x = beta * a_l (clamp x at X_MAX = -1e-3)")])}
    if c.get("metrics"):
        flat = [r for _, _, _, r in pairs_of(aw, al)]
        want["metrics"] = {"loss": loss, "align": align, "avg_logp/pos": sum(aw) / len(aw),
                           "avg_logp/neg": sum(flat) / len(flat)}
    return want


def checks(m, opts):
    return [(f"teacher case: {c['name']}", (lambda c=c: compare(m, c, expected(c)))) for c in CASES]
