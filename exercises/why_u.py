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
  why_u             written, a few sentences: why does DFT keep u instead of each batch's own estimate?
                    Use your numbers (graded by the teacher with the rubric)

    python -m exercises.check why_u

A student's copy checks the form of the answers and how they relate; the teacher's copy checks the
numbers themselves.
"""
import math

from exercises.lib import Fail, answers, expect, number, written_check

TITLE = "why u? a batch's own normalizer is biased; a moving average is not"
TIME = 20
OBJECTIVE = "see that log E[X] is not E[log X] and what that does to DFT's weights; answer 'why u?'"
READ = (("docs/ALGORITHMS.md", "DFT"), ("losses.py", "logmeanexp"))
TARGETS = ()
NEEDS = ()
D = [0.0, -1.0, -2.0, -4.0]
KEYS = ("true_log_u", "mean_batch_log_u", "log_mean_batch_u", "w_sum_batch", "w_sum_u")


def checks(m, opts):
    def numbers():
        a = answers(m)
        for key in KEYS:
            number(a, key)

    def unbiased():
        a = answers(m)
        gap = abs(number(a, "log_mean_batch_u") - number(a, "true_log_u"))
        expect(abs(gap - math.log(4)) > 1e-3, "true_log_u and log_mean_batch_u differ by log 4: one of them is a "
               "logsumexp; u is the MEAN of exp(d) over the negatives (and over the batches)")
        expect(gap <= 1e-4, "the log of the average of the batches' u estimates should equal the true log u (each "
               "batch's mean of exp(d) is unbiased in linear space): recheck log_mean_batch_u and true_log_u "
               f"(they differ by {gap:.4g})")

    def bias():
        a = answers(m)
        if not number(a, "mean_batch_log_u") < number(a, "true_log_u") - 0.05:
            raise Fail("your numbers say a batch's own estimate is not biased; by Jensen's inequality the average of "
                       "log-estimates lies below the log of the average: recheck mean_batch_log_u")

    def weights():
        a = answers(m)
        expect(number(a, "w_sum_u") > number(a, "w_sum_batch"), "this batch holds the negative the model likes "
               "most (D[0] = 0): normalized by the true u its weights should sum to MORE than when the batch "
               "normalizes itself; recheck w_sum_batch and w_sum_u")

    return [("the five numbers are filled in", numbers),
            ("log of the averaged u equals the true log u (linear space: unbiased)", unbiased),
            ("the batch estimate is biased low (log E != E log)", bias),
            ("the true u lets a batch of liked negatives weigh more", weights),
            written_check(m, "why_u", "why does DFT keep u?")]
