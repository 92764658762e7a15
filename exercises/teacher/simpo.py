"""Teacher's part of exercise simpo: the float64 reference, the cases it scores, and SimPO's
LossSpec."""
from exercises.lib import expect, rand_list
from exercises.simpo import PatchedRegistry, arguments, compare

from .ref import logsig, mistakes as named, pairs_of, sigmoid

_AW, _AL = rand_list((5,), -3, -0.2, 80), rand_list((5,), -3, -0.2, 81)
PUBLIC = [{"name": "the defaults beta 2, gamma 0.5", "chosen": _AW, "rejected": _AL},
          {"name": "the target margin gamma is subtracted (beta 1.5, gamma 1)", "chosen": _AW,
           "rejected": _AL, "beta": 1.5, "gamma": 1.0},
          {"name": "rejected of shape (N, B): pairs, averaged", "chosen": _AW,
           "rejected": rand_list((5, 3), -3, -0.2, 82), "beta": 2.0, "gamma": 0.5}]
CASES = [{"name": "other log-probs, beta 2.5, gamma 0.3", "chosen": rand_list((4,), -2, -0.1, 90),
          "rejected": rand_list((4, 2), -2, -0.1, 91), "beta": 2.5, "gamma": 0.3}]


def reference(aw, al, beta, gamma, sign=-1.0):
    """Python floats: mean over pairs of -log sigmoid(beta (a_w - a_l) + sign * gamma), and its
    gradients."""
    P = pairs_of(aw, al)
    loss, g_w = 0.0, [0.0] * len(aw)
    g_l = [list(r) if isinstance(r, list) else 0.0 for r in al]
    for i, j, w, r in P:
        z = beta * (w - r) + sign * gamma
        loss -= logsig(z) / len(P)
        dz = -(1 - sigmoid(z)) / len(P)
        g_w[i] += beta * dz
        if isinstance(g_l[i], list):
            g_l[i][j] = -beta * dz
        else:
            g_l[i] = -beta * dz
    return loss, g_w, g_l


def expected(c):
    beta, gamma = float(c.get("beta", 2.0)), float(c.get("gamma", 0.5))
    aw, al = c["chosen"], c["rejected"]
    loss, g_w, g_l = reference(aw, al, beta, gamma)
    return {"loss": loss, "g_chosen": g_w, "g_rejected": g_l, "mistakes": named([
        ("loss", reference(aw, al, beta, gamma, sign=1.0)[0], "the margin is added; it is "
                                                              "subtracted: the chosen "
         "must win BY gamma (-log sigmoid(beta (a_w - a_l) - gamma))"),
        ("loss", reference(aw, al, beta, 0.0)[0], "the target margin gamma is missing")])}


def checks(m, opts):
    def spec():
        with PatchedRegistry(m) as reg:
            s = reg["simpo"]
            want = dict(zip(arguments(m.simpo_loss, s.hparams), ("pos", "neg")))
            expect(s.inputs == want, "SimPO reads the positives and the negatives (rejected), and "
                   "nothing else: inputs maps each argument of simpo_loss to the batch key it "
                   f"takes, so inputs should be {want!r}, got {s.inputs!r}")
            want = dict(needs_ref=(), length_normalized=True, stateful=False, step_mean="prompts",
                        pairs_with_rejected=True)
            for k, v in want.items():
                expect(getattr(s, k) == v, f"LossSpec.{k} should be {v!r} for SimPO, got "
                       f"{getattr(s, k)!r} (on preference data its negative is the rejected "
                       "response: pairs_with_rejected)")
    cases = [(f"teacher case: {c['name']}", (lambda c=c: compare(m, c, expected(c))))
             for c in CASES]
    return cases + [("teacher: LossSpec fields (inputs, normalization, pairs with rejected)", spec)]
