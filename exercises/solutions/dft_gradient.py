"""
Worked solution of the dft_gradient exercise: the two gradients by autograd, and the derivation.

    python -m exercises.check dft_gradient --impl exercises/solutions/dft_gradient.py

By hand: with w_j constant, dL/ds(y) = -1 and dL/ds(y'_j) = w_j / B. At the fixed point log_u =
log mean_k exp(d_k), so w_j / B = exp(d_j) / sum_k exp(d_k) = softmax(d)_j. The objective
J = -s(y)/tau + log mean_j exp(d_j) has dJ/ds(y) = -1/tau and dJ/ds(y'_j) = softmax(d)_j / tau (the
chain rule through d_j = s(y'_j)/tau - logp_0). Every entry of grad L is tau times grad J: the
surrogate descends the objective with its step scaled by tau. If log_u sits delta above its fixed
point (a stale u, from a batch the model liked more), every w_j shrinks by exp(-delta): the
negatives' entries become tau exp(-delta) softmax(d)_j while the positive's stays -1, so the
direction changes, not only the size: the negatives are pushed down less than the objective asks
until u catches up.
"""
import math

import torch

S_POS, S_NEG, LOGP0, TAU = -8.0, [-10.0, -12.0, -11.0], [-9.0, -13.0, -12.0], 0.5


def gradients(shift=0.0):
    """(grad of the surrogate, grad of the objective) with respect to [s(y), s(y'_1..3)], log_u at
    its fixed point plus shift."""
    s = torch.tensor([S_POS] + S_NEG, dtype=torch.float64, requires_grad=True)
    d = s[1:] / TAU - torch.tensor(LOGP0, dtype=torch.float64)  # (3,)
    log_mean = torch.logsumexp(d, 0) - math.log(len(S_NEG))
    w = torch.exp(d - (log_mean.detach() + shift)).detach()  # constants of the surrogate
    surrogate = -s[0] + (w * s[1:]).mean()
    objective = -s[0] / TAU + log_mean
    g_l, = torch.autograd.grad(surrogate, s)
    g_j, = torch.autograd.grad(objective, s)
    return g_l, g_j


g_l, g_j = gradients()
g_off, _ = gradients(shift=1.0)

ANSWERS = {
    "grad_surrogate": g_l.tolist(),
    "grad_objective": g_j.tolist(),
    "ratio": (g_l[0] / g_j[0]).item(),  # tau, the same for every entry
    "ratio_off": (g_off[1] / g_j[1]).item(),  # tau * exp(-1): the negatives' share shrinks
    "derivation": (
        "With w constant, dL/ds(y) = -1 and dL/ds(y'_j) = w_j / B; at the fixed point log_u = "
        "log mean_k exp(d_k), so w_j / B = softmax(d)_j. J gives dJ/ds(y) = -1/tau and dJ/ds(y'_j) "
        "= softmax(d)_j / tau, by the chain rule through d_j = s(y'_j)/tau - logp_0. Every entry "
        "of grad L is tau times grad J. With log_u one above the fixed point each w_j shrinks by "
        "exp(-1) while the positive's entry stays -1: the direction changes, and the negatives are "
        "pushed down less than the objective asks until u catches up."),
}
