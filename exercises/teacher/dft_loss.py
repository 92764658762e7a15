"""Teacher's part of exercise dft_loss: the float64 reference and the cases it scores."""
import math

from exercises.dft_loss import compare
from exercises.lib import rand_list

from .ref import lae, lme, mistakes as named


def _case(seed, N=3, B=2, lo=-12, hi=-2):
    pos, neg = rand_list((N,), lo, hi, seed), rand_list((N, B), lo, hi, seed + 1)
    offsets = rand_list((N, B), -1.5, 1.5, seed + 2)
    ref = [[x + o for x, o in zip(row, off)] for row, off in zip(neg, offsets)]
    return {"pos": pos, "neg": neg, "ref_neg": ref}


_BASE = {**_case(0), "log_u": [0.3, -0.4, 1.2]}
PUBLIC = [{"name": "new_log_u: the moving average of d_j = s(y'_j)/tau - logp_0(y'_j)", **_BASE,
           "tau": 0.7, "gamma": 0.85},
          {"name": "the defaults tau 1, gamma 0.85", **_BASE},
          {"name": "u is updated before the weights: log_u far from the batch's estimate", **_BASE,
           "log_u": [4.0, -4.0, 2.5], "gamma": 0.5},
          {"name": "tau = 0.5 divides s(y'_j) only", **_BASE, "tau": 0.5},
          {"name": "gradient: -1/N for the positive, w_j/(B N) for each negative", **_BASE,
           "tau": 0.8},
          {"name": "gamma = 1 forgets the old u", **_BASE, "gamma": 1.0},
          {"name": "log-probs of long responses: d around +1100, no overflow",
           "pos": [-500.0, -800.0], "neg": [[-300.0, -310.0], [-290.0, -305.0]],
           "ref_neg": [[-2600.0, -2590.0], [-2610.0, -2580.0]], "log_u": [0.0, 0.0], "tau": 0.2,
           "gamma": 0.85},
          {"name": "metrics: loss, log_u, w/mean, w/max, logp0/neg", **_BASE, "tau": 0.7,
           "metrics": True},
          {"name": "dft2_loss runs through the same dft_surrogate", "loss": "dft2",
           "pos": [-0.4, -0.9], "neg": [[-0.8, -1.1], [-0.5, -2.0]], "log_u": [0.1, -0.2],
           "tau": 0.3, "gamma": 0.9}]
CASES = [{"name": "four negatives per prompt, tau 0.6, gamma 0.7", **_case(40, N=2, B=4),
          "log_u": [-0.5, 0.8], "tau": 0.6, "gamma": 0.7, "metrics": True},
         {"name": "dft2_loss at tau 0.5, gamma 0.8", "loss": "dft2", "pos": [-1.2, -0.3, -2.0],
          "neg": [[-0.9, -1.4, -2.2], [-0.2, -0.6, -1.0], [-3.0, -1.5, -2.5]],
          "log_u": [0.0, 0.4, -0.6], "tau": 0.5, "gamma": 0.8}]
MESSAGES = {"old_u": "the weights use the old log_u: update u first (with this batch's d), then "
                     "w_j = exp(d_j - new log_u)",
            "no_ref": "d must subtract logp_0(y'_j), the base model's log-prob: the importance "
                      "weight 1/pi_0",
            "pos_tau": "the positive term is -s(y_i), not -s(y_i)/tau (the published convention, "
                       "docs/ALGORITHMS.md)",
            "ref_tau": "only s(y'_j) is divided by tau, not logp_0: d_j = s(y'_j)/tau - "
                       "logp_0(y'_j)",
            "no_tau": "d divides s(y'_j) by tau: d_j = s(y'_j)/tau - logp_0(y'_j)"}


def reference(pos, neg, ref, log_u, tau, gamma, mistake=None):
    """Python floats -> (loss, new log_u, d loss/d pos, d loss/d neg); mistake, one of MESSAGES'
    keys, computes that classic mistake instead."""
    N, B = len(pos), len(neg[0])
    loss, new_u, g_pos, g_neg = 0.0, [], [], []
    pos_div = tau if mistake == "pos_tau" else 1.0
    for i in range(N):
        d = [(s / (1 if mistake == "no_tau" else tau)) - (0.0 if mistake == "no_ref" else r)
             for s, r in zip(neg[i], ref[i])]
        if mistake == "ref_tau":
            d = [(s - r) / tau for s, r in zip(neg[i], ref[i])]
        new = lme(d) if gamma == 1 else \
            lae(math.log(1 - gamma) + log_u[i], math.log(gamma) + lme(d))
        w = [math.exp(x - (log_u[i] if mistake == "old_u" else new)) for x in d]
        loss += (-pos[i] / pos_div + sum(a * b for a, b in zip(w, neg[i])) / B) / N
        new_u.append(new)
        g_pos.append(-1 / pos_div / N)
        g_neg.append([x / (B * N) for x in w])
    return loss, new_u, g_pos, g_neg


def expected(c):
    dft2 = c.get("loss") == "dft2"
    tau = float(c.get("tau", 0.3 if dft2 else 1.0))
    gamma = float(c.get("gamma", 0.9 if dft2 else 0.85))
    ref = c.get("ref_neg") or [[0.0] * len(row) for row in c["neg"]]
    args = (c["pos"], c["neg"], ref, c["log_u"], tau, gamma)
    loss, new_u, g_pos, g_neg = reference(*args)
    wrong = []
    for k, msg in MESSAGES.items():
        if k in ("no_ref", "ref_tau") and dft2:
            continue
        try:
            w_loss, w_u, _, _ = reference(*args, mistake=k)
        except OverflowError:  # this mistake overflows here: nothing to compare with
            continue
        wrong += [("new_log_u", w_u, msg), ("loss", w_loss, msg)]
    if dft2:  # DFT2 with a base-model term taken from somewhere
        w_loss, w_u, _, _ = reference(c["pos"], c["neg"], c["neg"], c["log_u"], tau, gamma)
        msg = "DFT2's d has no base-model term: d_j = avg_logp(y'_j)/tau (it needs no reference " \
            "model)"
        wrong += [("new_log_u", w_u, msg), ("loss", w_loss, msg)]
    want = {"new_log_u": new_u, "loss": loss, "g_pos": g_pos, "g_neg": g_neg,
            "mistakes": named(wrong)}
    if c.get("metrics"):
        w = [x * len(c["neg"][0]) * len(c["pos"]) for row in g_neg for x in row]  # g = w / (B N)
        want["metrics"] = {"loss": loss, "log_u": sum(new_u) / len(new_u),
                           "w/mean": sum(w) / len(w), "w/max": max(w),
                           "logp0/neg": sum(sum(r) for r in ref) / len(w)}
    return want


def checks(m, opts):
    return [(f"teacher case: {c['name']}", (lambda c=c: compare(m, c, expected(c)))) for c in CASES]
