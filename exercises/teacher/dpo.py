"""Teacher's part of exercise dpo: the float64 reference and the cases it scores."""
from exercises.dpo import compare
from exercises.lib import rand_list

from .ref import logsig, mistakes as named, pairs_of, sigmoid

_N = 5
_CW, _CL, _RW, _RL = (rand_list((_N,), -60, -5, s) for s in range(4))
_BASE = {"chosen": _CW, "rejected": _CL, "ref_chosen": _RW, "ref_rejected": _RL}
PUBLIC = [{"name": "the defaults (beta 0.1, no smoothing)", **_BASE},
          {"name": "beta 0.5: rewards are relative to the reference", **_BASE, "beta": 0.5},
          {"name": "label smoothing (conservative DPO)", **_BASE, "beta": 0.5,
           "label_smoothing": 0.2},
          {"name": "rejected of shape (N, B): pairs, averaged", **_BASE,
           "rejected": rand_list((_N, 3), -60, -5, 10),
           "ref_rejected": rand_list((_N, 3), -60, -5, 11), "beta": 0.3},
          {"name": "metrics: rewards/chosen, /rejected, /margins, /accuracies", **_BASE,
           "beta": 0.5, "metrics": True}]
CASES = [{"name": "other log-probs, beta 0.2, smoothing 0.05",
          "chosen": rand_list((6,), -80, -2, 20), "rejected": rand_list((6,), -80, -2, 21),
          "ref_chosen": rand_list((6,), -80, -2, 22),
          "ref_rejected": rand_list((6,), -80, -2, 23), "beta": 0.2, "label_smoothing": 0.05},
         {"name": "two rejected per chosen, beta 1", "chosen": rand_list((3,), -20, -2, 24),
          "rejected": rand_list((3, 2), -20, -2, 25), "ref_chosen": rand_list((3,), -20, -2, 26),
          "ref_rejected": rand_list((3, 2), -20, -2, 27), "beta": 1.0, "metrics": True}]


def reference(cw, cl, rw, rl, beta, eps, ref=True, smooth_sign=1.0):
    """Python floats -> loss, d/dchosen, d/drejected, per-pair (r_w, r_l). ref=False and
    smooth_sign=-1 compute two classic mistakes (the reference forgotten, the smoothing term's sign
    flipped)."""
    P = pairs_of(cw, cl)
    loss, g_w, rewards = 0.0, [0.0] * len(cw), []
    g_l = [list(r) if isinstance(r, list) else 0.0 for r in cl]
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


def expected(c):
    beta, eps = float(c.get("beta", 0.1)), float(c.get("label_smoothing", 0.0))
    args = [c["chosen"], c["rejected"], c["ref_chosen"], c["ref_rejected"]]
    loss, g_w, g_l, rewards = reference(*args, beta, eps)
    want = {"loss": loss, "g_chosen": g_w, "g_rejected": g_l, "mistakes": named([
        ("loss", reference(*args, beta, eps, ref=False)[0], "the reference log-probs are not "
         "subtracted: rewards are s - s_0, relative to the starting model"),
        ("loss", reference(*args, beta, eps, smooth_sign=-1.0)[0] if eps else None,
         "the label-smoothing term has the wrong sign: both terms are -log sigmoid(...)"),
        ("loss", reference(*args, beta, 1 - eps)[0] if eps else None,
         "eps and 1 - eps are swapped: (1 - eps) weighs log sigmoid(+beta Delta)"),
        ("loss", reference(*args, 1.0, eps)[0] if beta != 1 else None,
         "beta is missing: the loss is -log sigmoid(beta * Delta)")])}
    if c.get("metrics"):
        n = len(rewards)
        want["metrics"] = {"rewards/chosen": sum(a for a, _ in rewards) / n,
                           "rewards/rejected": sum(b for _, b in rewards) / n,
                           "rewards/margins": sum(a - b for a, b in rewards) / n,
                           "rewards/accuracies": sum(a > b for a, b in rewards) / n}
    return want


def checks(m, opts):
    return [(f"teacher case: {c['name']}", (lambda c=c: compare(m, c, expected(c)))) for c in CASES]
