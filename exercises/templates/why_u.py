"""Your answers to exercise why_u (questions: exercises/README.md): check them with
python -m exercises.check why_u --impl THIS_FILE  (in the student edition, exercises/yours/why_u.py is checked
without --impl). Compute the numbers with a few lines of code here, not by hand."""
import math

import torch


D = [0.0, -1.0, -2.0, -4.0]  # d of the four equally likely negatives of the toy prompt

ANSWERS = {
    "true_log_u": None,        # log of the mean of exp(D)
    "mean_batch_log_u": None,  # average over the 16 ordered pairs (j, k) of logmeanexp(D[j], D[k])
    "log_mean_batch_u": None,  # log of the average over the 16 pairs of mean(exp(D[j]), exp(D[k]))
    "w_sum_batch": None,       # batch (D[0], D[3]), log_u = its own estimate: sum of w = exp(d - log_u)
    "w_sum_u": None,           # the same sum with log_u = true_log_u
    "why_u": None,             # a few sentences, with your numbers: why does DFT keep u?
}
