"""
Exercise u_update: DFT's per-prompt moving average u, kept in log space (docs/ALGORITHMS.md, "DFT").

Write losses.update_log_u(log_u, d, gamma) -> new log_u, one step of
    u_i <- (1 - gamma) u_i + gamma mean_j exp(d_ij)
computed in log space: d is a difference of summed log-probs of whole responses (around -1e4 or
+1e3), so exp(d) under- or overflows even in float64. gamma == 1 forgets the old u. It is the log
of a moving average of u, not a moving average of log u.

    python -m exercises.check u_update

Cases (--cases; the public ones: exercises/cases/u_update.json): {"name": ..., "log_u": [N], "d":
[N][B], "gamma": float}, or {"name": ..., "log_u": [N], "steps": [[N][B], ...], "gamma": float} for
several steps in a row, each fed the previous result.
"""

import torch

from exercises.lib import Fail, case_checks, diagnose, expect, fmt, mistakes_of, t64

TITLE = "DFT's per-prompt moving average u, kept in log space"
TIME = 20
OBJECTIVE = "write a running average of exponentials that never exponentiates a raw log-prob sum"
READ = (("docs/ALGORITHMS.md", "DFT"), ("losses.py", "logmeanexp"), ("train.py", "train_step"))
TARGETS = (("losses", "update_log_u"),)
NEEDS = ("update_log_u",)


def call(m, log_u, d, gamma):
    try:
        out = m.update_log_u(torch.as_tensor(log_u, dtype=torch.float64), t64(d), gamma)
    except ValueError as e:
        if gamma == 1:
            raise Fail(f"gamma = 1: log(1 - gamma) = log(0); math.log raises ({e}): handle gamma == 1 first, "
                       "the new log_u is then logmeanexp_j d_j") from None
        raise
    if not isinstance(out, torch.Tensor):
        raise Fail(f"update_log_u should return a tensor of shape ({len(log_u)},), got {type(out).__name__}")
    expect(tuple(out.shape) == (len(log_u),) and out.dtype == torch.float64,
           f"update_log_u should return a float64 tensor of shape ({len(log_u)},), got {out.dtype} of shape "
           f"{tuple(out.shape)}")
    return out


def compare(m, c, want):
    """Case c against want = {"log_u": [one list per step], "mistakes"}."""
    gamma, log_u = float(c["gamma"]), c["log_u"]
    steps = c["steps"] if "steps" in c else [c["d"]]
    for k, d in enumerate(steps):
        out = call(m, log_u, d, gamma)
        big = max(abs(x) for row in d for x in row) > 500
        expect(bool(torch.isfinite(out).all()), ("exp(d) under- or overflows for d this large and log(0) = -inf: "
               "subtract the maximum before exponentiating (torch.logsumexp, torch.logaddexp) " if big else
               "a non-finite result: ") + f"(new log_u = {fmt(out)} for d around {fmt(d[0][0])})")
        what = f"new log_u after step {k + 1} of {len(steps)} (gamma = {gamma})" if len(steps) > 1 else \
            f"new log_u (gamma = {gamma})"
        diagnose(out, want["log_u"][k], what, mistakes_of(want, f"step{k}"), 1e-9,
                 "a running average: feed each step the previous step's result")
        log_u = out.detach().tolist()


def checks(m, opts):
    return case_checks("u_update", compare, m)
