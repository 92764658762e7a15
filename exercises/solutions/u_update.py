"""
Worked solution of the u_update exercise: DFT's moving average of its normalizer, in log space.

    python -m exercises.check u_update --impl exercises/solutions/u_update.py

DFT estimates, per prompt i, the normalizer u_i = E_{y'~pi_0}[exp(s(y')/tau) / pi_0(y'|x_i)] from the
B negatives of the current batch, and smooths that estimate over the epochs with a moving average:

    u_i <- (1 - gamma) u_i + gamma * mean_j exp(d_ij),      d_ij = s(y'_j)/tau - logp_0(y'_j|x_i)

d is a difference of summed log-probs of whole responses: hundreds or thousands in size, so exp(d)
under- or overflows even in float64. Everything stays in log space, and every logsumexp subtracts its
max first. The project's own version is losses.update_log_u, with torch.logaddexp and logmeanexp.
"""
import math

import torch


def update_log_u(log_u, d, gamma):
    m = d.amax(dim=1, keepdim=True)  # (N, 1): the largest d of each row
    lme = (m + torch.exp(d - m).mean(dim=1, keepdim=True).log()).squeeze(1)  # (N,) logmeanexp_j d_j
    if gamma == 1:  # log(1 - gamma) = -inf (and math.log(0) raises): the old u is forgotten
        return lme
    a = math.log(1 - gamma) + log_u  # (N,) the old u's share
    b = math.log(gamma) + lme  # (N,) the batch's share
    top = torch.maximum(a, b)
    return top + torch.log(torch.exp(a - top) + torch.exp(b - top))  # (N,) logaddexp, max subtracted
