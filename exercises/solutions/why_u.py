"""
Worked solution of the why_u exercise.

    python -m exercises.check why_u --impl exercises/solutions/why_u.py

A batch's own estimate of the normalizer, logmeanexp over its B negatives, is an unbiased estimate of
u in linear space but not in log space: by Jensen's inequality E[log X] <= log E[X], so on average it
sits below log u, and with B = 2 by a lot. Worse, normalizing a batch's weights by the batch itself
makes them sum to B whatever the model thinks of these negatives: the batch can only redistribute its
push among its own members. u averages exp(d) over the steps in linear space, so the log is taken of
an average (log_mean_batch_u = true_log_u), and a batch whose negatives the model likes more than
usual gets weights that sum to more than B.
"""
import itertools
import math

import torch

D = torch.tensor([0.0, -1.0, -2.0, -4.0], dtype=torch.float64)
batches = torch.tensor(list(itertools.product(range(4), repeat=2)))  # (16, 2): all ordered pairs (j, k)
lme = lambda x: torch.logsumexp(x, -1) - math.log(x.shape[-1])  # log mean exp along the last dim

true_log_u = lme(D)  # log E[exp(d)]
batch_log_u = lme(D[batches])  # (16,): each batch's own estimate
log_mean_batch_u = torch.log(D[batches].exp().mean(-1).mean())  # average the u estimates, then log
pair = D[torch.tensor([0, 3])]

ANSWERS = {
    "true_log_u": true_log_u.item(),
    "mean_batch_log_u": batch_log_u.mean().item(),  # below true_log_u: biased low
    "log_mean_batch_u": log_mean_batch_u.item(),  # equals true_log_u
    "w_sum_batch": torch.exp(pair - lme(pair)).sum().item(),  # always B = 2
    "w_sum_u": torch.exp(pair - true_log_u).sum().item(),  # more than 2: this batch holds the most liked negative
    "why_u": ("A batch's own estimate, logmeanexp of its d, is unbiased for u in linear space but not in "
              "log space: by Jensen E[log X] <= log E[X], so mean_batch_log_u lies below true_log_u, and with "
              "B = 2 by a lot. Worse, normalizing a batch by itself makes its weights sum to B (w_sum_batch = 2) "
              "whatever the model thinks of these negatives: the batch can only move its push among its own "
              "members. u averages exp(d) over the steps in linear space, so log_mean_batch_u = true_log_u, and a "
              "batch of negatives the model likes more than usual gets weights summing to more than B "
              "(w_sum_u > 2): it is pushed down harder, as the exact objective's gradient asks."),
}
