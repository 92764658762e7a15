"""Teacher's part of exercise u_update: the float64 reference and the cases it scores."""
import math

from exercises.lib import rand_list
from exercises.u_update import compare

from .ref import lae, lme, mistakes as named

_N, _B = 3, 4
PUBLIC = [{"name": "one step from log_u = [0, 0.5, -1], gamma 0.85", "log_u": [0.0, 0.5, -1.0],
           "d": rand_list((_N, _B), -3, 2, 20), "gamma": 0.85},
          {"name": "five steps of the running average, gamma 0.9", "log_u": [0.0] * _N,
           "steps": [rand_list((_N, _B), -4, 3, 30 + s) for s in range(5)], "gamma": 0.9},
          {"name": "gamma = 1 forgets the old u", "log_u": [7.0, -5.0, 0.0],
           "d": rand_list((_N, _B), -3, 2, 40), "gamma": 1.0},
          {"name": "stable for d and log_u around -1e4",
           "log_u": [-1e4 + c for c in (0.5, -1.0, 0.0)],
           "d": [[-1e4 + o for o in row] for row in rand_list((_N, _B), -2, 2, 50)], "gamma": 0.85},
          {"name": "stable for d around +1e3", "log_u": [0.0] * _N,
           "d": [[1e3 + o for o in row] for row in rand_list((_N, _B), -2, 2, 60)], "gamma": 0.85}]
CASES = [{"name": "gamma 0.5, one negative per prompt", "log_u": [1.5, -2.0], "d": [[0.3], [-4.0]],
          "gamma": 0.5},
         {"name": "three steps, gamma 0.3, d around -300", "log_u": [-300.0, -290.0],
          "steps": [[[-300 + o for o in row] for row in rand_list((2, 3), -5, 5, 70 + s)]
                    for s in range(3)], "gamma": 0.3}]


def reference(log_u, d, gamma, swap=False, mean=True):
    """log((1 - gamma) exp(log_u) + gamma mean_j exp(d_j)) per row, stable. swap=True weighs the old
    u by gamma (a classic mistake); mean=False sums instead of averaging (another)."""
    out = []
    for lu, row in zip(log_u, d):
        batch = lme(row) + (0.0 if mean else math.log(len(row)))
        g_old, g_new = (gamma, 1 - gamma) if swap else (1 - gamma, gamma)
        old = math.log(g_old) + lu if g_old > 0 else -math.inf
        out.append(lae(old, math.log(g_new) + batch) if g_new > 0 else old)
    return out


def mistakes(log_u, d, gamma):
    partial = gamma < 1  # at gamma = 1 these mistakes give the right answer
    return [(reference(log_u, d, gamma, mean=False), "a logsumexp where a logmeanexp belongs: the "
             "batch's estimate is the MEAN of exp(d_j) over the B negatives (subtract log B)"),
            (reference(log_u, d, gamma, swap=True) if partial else None, "gamma and 1 - gamma are "
             "swapped: gamma weighs the batch's estimate, 1 - gamma the old u"),
            ([(1 - gamma) * lu + gamma * lme(row) for lu, row in zip(log_u, d)] if partial else
             None, "a moving average of log u: the new log_u is the LOG of the moving average (1 - "
             "gamma) u + gamma mean_j exp(d_j), not (1 - gamma) log u + gamma "
             "log(mean_j exp(d_j)); "
             "average u itself, in log space: logaddexp(log(1 - gamma) + log_u, log(gamma) + "
             "logmeanexp_j d_j)"),
            ([(1 - gamma) * lu + gamma * sum(row) / len(row) for lu, row in zip(log_u, d)],
             "a moving average of log u and a plain mean of d: u averages exp(d) in linear space; "
             "the new log_u is logaddexp(log(1 - gamma) + log_u, log(gamma) + logmeanexp_j d_j)")]


def expected(c):
    gamma, log_u = float(c["gamma"]), c["log_u"]
    out, wrong = [], []
    for k, d in enumerate(c["steps"] if "steps" in c else [c["d"]]):
        wrong += [(f"step{k}", v, msg) for v, msg in mistakes(log_u, d, gamma)]
        log_u = reference(log_u, d, gamma)
        out.append(log_u)
    return {"log_u": out, "mistakes": named(wrong)}


def checks(m, opts):
    return [(f"teacher case: {c['name']}", (lambda c=c: compare(m, c, expected(c)))) for c in CASES]
