"""Teacher's part of exercise why_u: the numbers, with the values the usual mistakes give, and the
rubric of the written answer (exercises/teacher/rubric.md)."""
import math

from exercises.lib import answers, diagnose, number
from exercises.why_u import D

from .ref import lme

BATCHES = [(j, k) for j in range(4) for k in range(4)]
RUBRIC = {"why_u": 3}


def key():
    """The numbers, from their definitions, with the values the usual mistakes give."""
    true = lme(D)
    batch = [lme([D[j], D[k]]) for j, k in BATCHES]
    mean_batch = sum(batch) / len(batch)
    u_mean = sum((math.exp(D[j]) + math.exp(D[k])) / 2 for j, k in BATCHES) / len(BATCHES)
    log_mean = math.log(u_mean)
    unordered = [lme([D[j], D[k]]) for j in range(4) for k in range(j + 1, 4)]

    def w(lu):
        return math.exp(D[0] - lu) + math.exp(D[3] - lu)
    return {
        "true_log_u": (true, [(true + math.log(4), "a logsumexp: u is the MEAN of exp(d) over the "
                                                   "negatives")]),
        "mean_batch_log_u": (mean_batch, [
            (sum(unordered) / len(unordered), "average over all 16 ordered pairs (j, k) with "
                                              "replacement, j = k "
             "included"),
            (true, "that is the log of the average of u; this one is the average of each batch's "
                   "log estimate"),
            (mean_batch + math.log(2), "a logsumexp: each batch's estimate is a MEAN over its two "
                                       "negatives")]),
        "log_mean_batch_u": (log_mean, [(mean_batch, "that is the average of the logs; average "
                                                     "the batches' "
                                         "estimates of u first (in linear space, as u does), then "
                                         "take the log")]),
        "w_sum_batch": (w(lme([D[0], D[3]])), [(1.0, "w = exp(d - log_u) with log_u = logMEANexp "
                                                     "of the batch: "
                                                  "the weights sum to B, not 1")]),
        "w_sum_u": (w(true), [(w(true + math.log(4)), "log_u is the log of the MEAN of exp(D), "
                                                      "not of the sum")]),
    }


def checks(m, opts):
    def num(name):
        def thunk():
            want, wrong = key()[name]
            diagnose(number(answers(m), name), want, f'ANSWERS["{name}"]', wrong, 1e-4,
                     "recompute it from its definition in exercises/why_u.py, with code")
        return thunk
    return [(f"key: {name}", num(name)) for name in key()]
