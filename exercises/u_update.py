"""
Exercise u_update: DFT's per-prompt moving average u, kept in log space (docs/ALGORITHMS.md, "DFT").

Write losses.update_log_u(log_u, d, gamma) -> new log_u, one step of
    u_i <- (1 - gamma) u_i + gamma mean_j exp(d_ij)
computed in log space: d is a difference of summed log-probs of whole responses (around -1e4 or
+1e3), so exp(d) under- or overflows even in float64. gamma == 1 forgets the old u.

Hidden cases (--cases): {"name": ..., "log_u": [N], "d": [N][B], "gamma": float}; compared with
the checker's reference (linear space with the maximum factored out).
"""
import math

import torch

from exercises.lib import Fail, close, diagnose, expect, fmt, lae, lme, rand_list, t64

TITLE = "DFT's per-prompt moving average u, kept in log space"
TIME = 20
OBJECTIVE = "write a running average of exponentials that never exponentiates a raw log-prob sum"
READ = (("docs/ALGORITHMS.md", "DFT"), ("losses.py", "logmeanexp"), ("train.py", "train_step"))
TARGETS = (("losses", "update_log_u"),)
NEEDS = ("update_log_u",)


def reference(log_u, d, gamma, swap=False, mean=True):
    """log((1 - gamma) exp(log_u) + gamma mean_j exp(d_j)) per row, stable. swap=True weighs the old u by
    gamma (a classic mistake); mean=False sums instead of averaging (another)."""
    out = []
    for lu, row in zip(log_u, d):
        batch = lme(row) + (0.0 if mean else math.log(len(row)))
        g_old, g_new = (gamma, 1 - gamma) if swap else (1 - gamma, gamma)
        old = math.log(g_old) + lu if g_old > 0 else -math.inf
        out.append(lae(old, math.log(g_new) + batch) if g_new > 0 else old)
    return out


def mistakes(log_u, d, gamma):
    return [(reference(log_u, d, gamma, mean=False), "a logsumexp where a logmeanexp belongs: the batch's estimate "
             "is the MEAN of exp(d_j) over the B negatives (subtract log B)"),
            (reference(log_u, d, gamma, swap=True), "gamma and 1 - gamma are swapped: gamma weighs the batch's "
             "estimate, 1 - gamma the old u")]


def call(m, log_u, d, gamma):
    out = m.update_log_u(t64(log_u), t64(d), gamma)
    if not isinstance(out, torch.Tensor):
        raise Fail(f"update_log_u should return a tensor of shape ({len(log_u)},), got {type(out).__name__}")
    return out


def checks(m, opts):
    N, B = 3, 4

    def one_step():
        log_u, d = [0.0, 0.5, -1.0], rand_list((N, B), -3, 2, 20)
        diagnose(call(m, log_u, d, 0.85), reference(log_u, d, 0.85), "new log_u from log_u = [0, 0.5, -1], "
                 "gamma = 0.85", mistakes(log_u, d, 0.85), 1e-9)

    def steps():
        log_u, gamma, ref = torch.zeros(N, dtype=torch.float64), 0.9, [0.0] * N
        for s in range(5):
            d = rand_list((N, B), -4, 3, 30 + s)
            out = m.update_log_u(log_u, t64(d), gamma)
            ref = reference(ref, d, gamma)
            close(out, ref, f"log_u after {s + 1} steps of the running average (gamma = 0.9)", 1e-9)
            log_u = torch.as_tensor(out, dtype=torch.float64).detach()

    def gamma_one():
        d = rand_list((N, B), -3, 2, 40)
        try:
            out = call(m, [7.0, -5.0, 0.0], d, 1.0)
        except ValueError as e:
            raise Fail(f"gamma = 1: log(1 - gamma) = log(0); math.log raises ({e}): handle gamma == 1 first, "
                       "the new log_u is then logmeanexp_j d_j") from None
        close(out, [lme(r) for r in d], "gamma = 1 forgets the old u: the new log_u is logmeanexp_j d_j", 1e-9)

    def very_negative():
        # summed log-probs of long negatives are around -1e4: exp underflows to 0 in float64
        d = [[-1e4 + o for o in row] for row in rand_list((N, B), -2, 2, 50)]
        log_u = [-1e4 + c for c in (0.5, -1.0, 0.0)]
        out = call(m, log_u, d, 0.85)
        expect(bool(torch.isfinite(out).all()), "exp(-1e4) underflows to 0 and log(0) = -inf: subtract the maximum "
               f"before exponentiating (new log_u for d ~ -1e4: {fmt(out)})")
        close(out, reference(log_u, d, 0.85), "new log_u for log_u and d around -1e4", 1e-9)

    def very_positive():
        d = [[1e3 + o for o in row] for row in rand_list((N, B), -2, 2, 60)]  # d = s/tau - logp_0 can be large
        out = call(m, [0.0] * N, d, 0.85)
        expect(bool(torch.isfinite(out).all()), "exp(1e3) overflows to inf: subtract the maximum before "
               f"exponentiating (new log_u for d ~ +1e3: {fmt(out)})")
        close(out, reference([0.0] * N, d, 0.85), "new log_u for d around +1e3", 1e-9)

    def no_grad_needed():
        d = t64(rand_list((N, B), -3, 2, 70), grad=True)
        out = m.update_log_u(torch.zeros(N, dtype=torch.float64), d.detach(), 0.5)
        expect(isinstance(out, torch.Tensor) and tuple(out.shape) == (N,) and out.dtype == torch.float64,
               f"update_log_u should return a float64 tensor of shape ({N},), got {out!r}")

    return [("one step equals the linear-space average", one_step),
            ("five steps: a running average", steps),
            ("gamma = 1 forgets the old u", gamma_one),
            ("stable for d and log_u around -1e4", very_negative),
            ("stable for d around +1e3", very_positive),
            ("shape and dtype of the result", no_grad_needed)]


def run_case(m, c):
    log_u, d, gamma = c["log_u"], c["d"], float(c["gamma"])
    diagnose(call(m, log_u, d, gamma), reference(log_u, d, gamma), "new log_u", mistakes(log_u, d, gamma), 1e-9)
