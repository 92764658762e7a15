"""
Exercise why_u: why DFT keeps a moving average u instead of each batch's own estimate.

A toy prompt: pi_0 has four possible negatives, equally likely, and for the current model their
d = s(y')/tau - logp_0(y') are D below. DFT's normalizer for this prompt is u = E_{y'~pi_0}[exp(d)],
here the plain mean of exp(D); a step sees a batch of B = 2 negatives drawn with replacement, so the 16
ordered pairs (j, k) are equally likely. Answer in ANSWERS (numbers to 1e-4), each from a few lines
of torch or math of your own:

  true_log_u        log u: log of the mean of exp(D) over the four negatives
  mean_batch_log_u  the average over the 16 batches of that batch's own estimate, logmeanexp(D[j], D[k])
  log_mean_batch_u  the log of the average over the 16 batches of mean(exp(D[j]), exp(D[k]))
  w_sum_batch       gamma = 1 (no memory): the sum of the two weights w = exp(d - log_u) of the batch
                    (D[0], D[3]), where log_u is that batch's own estimate
  w_sum_u           the same sum when log_u is the true log u
  why_u             multiple choice, exercises/README.md

The question "why u?" is asked here: the numbers are the answer's evidence.
"""
import math

from exercises.lib import Fail, answers, choice, diagnose, lme, number

TITLE = "why u? a batch's own normalizer is biased; a moving average is not"
TIME = 20
OBJECTIVE = "see that log E[X] is not E[log X] and what that does to DFT's weights; answer 'why u?'"
READ = (("docs/ALGORITHMS.md", "DFT"), ("losses.py", "logmeanexp"))
TARGETS = ()
NEEDS = ()

D = [0.0, -1.0, -2.0, -4.0]
BATCHES = [(j, k) for j in range(4) for k in range(4)]
WHY_U = "f1433582fd9ea236"
OPTIONS = ("a", "b", "c", "d")


def expected():
    """The numbers, from their definitions, with the values the usual mistakes give."""
    true = lme(D)
    batch = [lme([D[j], D[k]]) for j, k in BATCHES]
    mean_batch = sum(batch) / len(batch)
    log_mean = math.log(sum((math.exp(D[j]) + math.exp(D[k])) / 2 for j, k in BATCHES) / len(BATCHES))
    unordered = [lme([D[j], D[k]]) for j in range(4) for k in range(j + 1, 4)]
    w = lambda lu: math.exp(D[0] - lu) + math.exp(D[3] - lu)
    return {
        "true_log_u": (true, [(true + math.log(4), "a logsumexp: u is the MEAN of exp(d) over the negatives")]),
        "mean_batch_log_u": (mean_batch, [
            (sum(unordered) / len(unordered), "average over all 16 ordered pairs (j, k) with replacement, j = k included"),
            (true, "that is the log of the average of u; this one is the average of each batch's log estimate"),
            (mean_batch + math.log(2), "a logsumexp: each batch's estimate is a MEAN over its two negatives")]),
        "log_mean_batch_u": (log_mean, [(mean_batch, "that is the average of the logs; average the batches' estimates "
                                         "of u first (in linear space, as u does), then take the log")]),
        "w_sum_batch": (w(lme([D[0], D[3]])), [(1.0, "w = exp(d - log_u) with log_u = logMEANexp of the batch: "
                                                  "the weights sum to B, not 1")]),
        "w_sum_u": (w(true), []),
    }


def checks(m, opts):
    def num(key):
        def thunk():
            want, wrong = expected()[key]
            diagnose(number(answers(m), key), want, f'ANSWERS["{key}"]', wrong, 1e-4)
        return thunk

    def bias():
        a = answers(m)
        if not number(a, "mean_batch_log_u") < number(a, "true_log_u") - 0.05:
            raise Fail("your numbers say a batch's own estimate is not biased; by Jensen's inequality the average of "
                       "log-estimates lies below the log of the average: recheck mean_batch_log_u")

    def why():
        choice(answers(m), "why_u", "why_u", OPTIONS, WHY_U, "compare mean_batch_log_u with true_log_u, and w_sum_batch "
               "with w_sum_u: what does a batch's own normalizer do to its weights, whatever the model thinks of them?")

    return [("true_log_u: log of the mean of exp(D)", num("true_log_u")),
            ("mean_batch_log_u: the average of the 16 batches' own estimates", num("mean_batch_log_u")),
            ("log_mean_batch_u: the log of the average of their u", num("log_mean_batch_u")),
            ("the batch estimate is biased low (log E != E log)", bias),
            ("w_sum_batch: the weights of one batch normalized by itself", num("w_sum_batch")),
            ("w_sum_u: the same weights normalized by the true u", num("w_sum_u")),
            ("why u? (multiple choice)", why)]
