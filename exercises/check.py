"""
Automatic checkers for the classroom exercises (exercises/README.md says what each one asks).

A checker loads the function(s) under test from a Python file you name with --impl (by path, with
importlib, so the project's own code stays untouched), runs them on cases it builds itself, and
compares the results with independent brute-force references written here (plain python loops and
float64 math, hand-derived gradients), like the project's tests do. Each check prints PASS or FAIL
with what was expected and what came back; the exit status is 0 when every check passes, 1 when one
fails (or your file cannot be imported), 2 for a usage error. Without --impl a checker tests the
reference: the project's own function where there is one (losses.dpo_loss, sample.top_p_filter,
...), else the worked solution in exercises/solutions/.

    python -m exercises.check --list                        # the exercises, in a sensible order
    python -m exercises.check dpo --template > my_dpo.py    # a file with the signature to fill in
    python -m exercises.check dpo --impl my_dpo.py          # check your answer
    python -m exercises.check dpo                           # check the reference (must pass)
    python -m exercises.check sft_vs_dft --impl my_answers.py --runs out   # reads out/sft, out/dft
    python -m pytest -q tests/test_exercises.py             # every checker passes the reference and fails wrong answers

Your file may import anything from the project (`import losses`, `from model import GPT`): the
repository root is put on sys.path. Only torch and the standard library are used here.
"""
import argparse
import importlib
import importlib.util
import json
import math
import os
import random
import sys
import traceback
import types
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
HERE = os.path.dirname(os.path.abspath(__file__))


class Fail(AssertionError):
    """A check's verdict: what was expected and what came back (shown to the student verbatim)."""


class UsageError(Exception):
    """Unknown exercise, missing file: the command line is wrong (exit status 2)."""


# -----------------------------------------------------------------------------
# comparing numbers, with messages a student can act on


def _fmt(x):
    if isinstance(x, torch.Tensor):
        x = x.detach().double().cpu()
        return _fmt(x.item()) if x.dim() == 0 else _fmt(x.tolist())
    if isinstance(x, float):
        return f"{x:.6g}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    return repr(x)


def _as64(x, what):
    if isinstance(x, torch.Tensor):
        return x.detach().double().cpu()
    try:
        return torch.tensor(x, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise Fail(f"{what}: expected numbers, got {type(x).__name__} {x!r}") from None


def close(got, want, what, tol=1e-5):
    """Fail unless got (tensor / number / nested list) equals want within tol (relative and absolute)."""
    g, w = _as64(got, what), _as64(want, what)
    if g.shape != w.shape:
        raise Fail(f"{what}: expected shape {tuple(w.shape)}, got shape {tuple(g.shape)} ({_fmt(g)})")
    ok = torch.isclose(g, w, rtol=tol, atol=tol)
    if not bool(ok.all()):
        if g.numel() <= 8:
            raise Fail(f"{what}: expected {_fmt(w)}, got {_fmt(g)}")
        bad = (~ok).nonzero()
        at = tuple(bad[0].tolist())
        raise Fail(f"{what}: {len(bad)} of {g.numel()} entries differ; the first at index {at}: "
                   f"expected {_fmt(w[at])}, got {_fmt(g[at])}")


def expect(cond, msg):
    if not cond:
        raise Fail(msg)


def logsig(z):
    """log sigmoid(z) in python floats, stable in both directions."""
    return -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))


def sigmoid(z):
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


def lme(xs):
    """log mean exp of a python list, stable."""
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs) / len(xs))


def rand_list(shape, lo, hi, seed):
    g = random.Random(seed)
    if len(shape) == 1:
        return [g.uniform(lo, hi) for _ in range(shape[0])]
    return [[g.uniform(lo, hi) for _ in range(shape[1])] for _ in range(shape[0])]


def t64(rows, grad=False):
    return torch.tensor(rows, dtype=torch.float64, requires_grad=grad)


def loss_and_metrics(out, fn_name):
    """Unpack a loss function's (loss, metrics), checking the shape of the answer first."""
    if not (isinstance(out, tuple) and len(out) == 2):
        raise Fail(f"{fn_name} should return a pair (loss, metrics); got {type(out).__name__}")
    loss, metrics = out
    if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
        raise Fail(f"{fn_name}: loss should be a 0-d tensor (a scalar), got "
                   f"{type(loss).__name__}{'' if not isinstance(loss, torch.Tensor) else ' of shape ' + str(tuple(loss.shape))}")
    if not isinstance(metrics, dict):
        raise Fail(f"{fn_name}: metrics should be a dict, got {type(metrics).__name__}")
    return loss, metrics


def backward(loss, fn_name):
    if not loss.requires_grad:
        raise Fail(f"{fn_name}: the loss carries no gradient (did you call .item(), .detach() or use "
                   "torch.no_grad / python floats on the way?)")
    loss.backward()


def grad_of(t, what):
    if t.grad is None:
        raise Fail(f"{what}: no gradient reached it (it should)")
    return t.grad


# -----------------------------------------------------------------------------
# the exercises


@dataclass
class Exercise:
    name: str
    title: str                 # one line: the goal
    needs: tuple               # names the --impl file must define
    default: object            # the reference: a project module name, "solutions/x.py", or a callable -> namespace
    where: tuple               # (file, name) places in the project to read first
    template: str              # a starting file for --template
    checks: Callable = None    # (namespace, opts) -> list of (check name, thunk)


EXERCISES = {}


def exercise(**kw):
    def deco(fn):
        EXERCISES[kw["name"]] = Exercise(checks=fn, **kw)
        return fn
    return deco


# ---------------------------------------------------------------- 1. sequence_logps: the label mask

def _logps_case(seed, N=4, T=6, V=7, scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(N, T, V, generator=g, dtype=torch.float64) * scale).to(dtype)
    targets = torch.randint(0, V, (N, T), generator=g)
    n_prompt, length = [1, 3, 2, 99], [6, 5, 3, 6]  # row 3 is all prompt: nothing scored
    mask = torch.zeros(N, T, dtype=torch.bool)
    for n in range(N):
        for t in range(length[n]):
            mask[n, t] = t + 1 >= n_prompt[n]  # collate's convention: targets[t] scored iff t + 1 >= n_prompt
    return logits, targets, mask


def _logps_ref(logits, targets, mask):
    """Python loop, float64: sum over scored t of logits[t, y_t] - log sum_v exp(logits[t, v])."""
    out, cnt = [], []
    for n in range(logits.shape[0]):
        tot, c = 0.0, 0
        for t in range(logits.shape[1]):
            if mask[n, t]:
                row = [float(v) for v in logits[n, t].double()]
                m = max(row)
                tot += row[int(targets[n, t])] - (m + math.log(sum(math.exp(v - m) for v in row)))
                c += 1
        out.append(tot)
        cnt.append(c)
    return out, cnt


def _call_logps(m, logits, targets, mask):
    out = m.sequence_logps(logits, targets, mask)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise Fail(f"sequence_logps should return a pair (logps, n_tokens); got {type(out).__name__}")
    return out


@exercise(name="sequence_logps", title="the label mask: sum the log-probs of the scored (response) tokens only",
          needs=("sequence_logps",), default="losses",
          where=(("losses.py", "sequence_logps"), ("data/format.py", "collate")),
          template='''import torch


def sequence_logps(logits, targets, mask):
    """logits (N, T, V), targets (N, T) long, mask (N, T) bool -> (logps (N,) float32, n_tokens (N,) long).
    logps[n] = sum over t with mask[n, t] of log softmax(logits[n, t])[targets[n, t]]; n_tokens[n] = mask[n].sum().
    Prompt and padding positions (mask False) must contribute nothing, whatever their logits or targets."""
    raise NotImplementedError
''')
def check_sequence_logps(m, opts):
    def value():
        logits, targets, mask = _logps_case(0)
        lp, _ = _call_logps(m, logits, targets, mask)
        close(lp, _logps_ref(logits, targets, mask)[0], "logps (summed over scored positions)", 1e-5)

    def counts():
        logits, targets, mask = _logps_case(1)
        _, n = _call_logps(m, logits, targets, mask)
        expect(isinstance(n, torch.Tensor) and not n.is_floating_point(),
               f"n_tokens should be an integer tensor, got {n.dtype if isinstance(n, torch.Tensor) else type(n).__name__}")
        close(n, _logps_ref(logits, targets, mask)[1], "n_tokens (scored tokens per row)", 0)

    def masked_free():
        logits, targets, mask = _logps_case(2)
        want = _logps_ref(logits, targets, mask)[0]
        g = torch.Generator().manual_seed(3)
        l2, y2 = logits.clone(), targets.clone()
        l2[~mask] = torch.randn(int((~mask).sum()), logits.shape[-1], generator=g, dtype=torch.float64) * 100
        l2[1, 0, :] = -math.inf  # a prompt position whose every logit is -inf
        l2[3] = -math.inf  # a row with nothing scored (its logps must be 0)
        y2[~mask] = (y2[~mask] + 3) % logits.shape[-1]
        lp, _ = _call_logps(m, l2, y2, mask)
        expect(bool(torch.isfinite(torch.as_tensor(lp)).all()),
               f"logps should be finite when a PROMPT position has -inf logits, got {_fmt(lp)} "
               "(a prompt position's -inf must not reach the sum; and 0 * -inf is NaN, so select with torch.where "
               "rather than multiply by the mask)")
        close(lp, want, "logps after scrambling the prompt and padding positions (they must not matter)", 1e-5)

    def gradient():
        logits, targets, mask = _logps_case(4)
        x = logits.clone().requires_grad_(True)
        lp, _ = _call_logps(m, x, targets, mask)
        backward(torch.as_tensor(lp).sum(), "sequence_logps")
        want = torch.softmax(logits, -1).neg()  # d/dlogits of log softmax[y] = onehot(y) - softmax
        want.scatter_add_(-1, targets[..., None], torch.ones_like(want[..., :1]))
        want[~mask] = 0.0
        close(grad_of(x, "logits"), want, "d sum(logps) / d logits (onehot - softmax at scored positions, 0 elsewhere)", 1e-5)

    def bf16():
        logits, targets, mask = _logps_case(5, V=1000, dtype=torch.bfloat16)
        lp, _ = _call_logps(m, logits, targets, mask)
        expect(isinstance(lp, torch.Tensor) and lp.dtype in (torch.float32, torch.float64),
               f"logps from bfloat16 logits should be float32 (upcast before log_softmax), got "
               f"{lp.dtype if isinstance(lp, torch.Tensor) else type(lp).__name__}")
        close(lp, _logps_ref(logits, targets, mask)[0], "logps from bfloat16 logits (compute in float32)", 2e-4)

    return [("value equals a python loop over the scored positions", value),
            ("n_tokens counts the scored positions (integers)", counts),
            ("prompt and padding positions do not count, even at -inf", masked_free),
            ("gradient: onehot - softmax at scored positions, zero elsewhere", gradient),
            ("bfloat16 logits are summed in float32", bf16)]


# ---------------------------------------------------------------- 2. DPO

def _dpo_ref(cw, cl, rw, rl, beta, eps):
    """Python floats. cw, rw: (N,); cl, rl: (N,) or (N, B) lists. -> loss, d/dcw, d/dcl, per-pair (r_w, r_l)."""
    N = len(cw)
    pairs = [(i, j) for i in range(N) for j in range(len(cl[i]) if isinstance(cl[i], list) else 1)]
    P = len(pairs)
    get = lambda a, i, j: a[i][j] if isinstance(a[i], list) else a[i]
    loss, g_w, g_l, rewards = 0.0, [0.0] * N, [list(r) if isinstance(r, list) else 0.0 for r in cl], []
    for i, j in pairs:
        r_w, r_l = beta * (cw[i] - rw[i]), beta * (get(cl, i, j) - get(rl, i, j))
        z = r_w - r_l
        loss += (-(1 - eps) * logsig(z) - eps * logsig(-z)) / P
        dz = (sigmoid(z) - (1 - eps)) / P  # dL/dz per pair
        g_w[i] += beta * dz
        if isinstance(g_l[i], list):
            g_l[i][j] = -beta * dz
        else:
            g_l[i] = -beta * dz
        rewards.append((r_w, r_l))
    return loss, g_w, g_l, rewards


@exercise(name="dpo", title="DPO's loss from its equation (value, gradient, label smoothing, metrics)",
          needs=("dpo_loss",), default="losses", where=(("losses.py", "dpo_loss"), ("losses.py", "_pairs")),
          template='''import torch
import torch.nn.functional as F


def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1, label_smoothing=0.0):
    """DPO (/work/shared/ALGORITHMS.md, exercises/README.md):
        Delta = (s(y_w) - s_0(y_w)) - (s(y_l) - s_0(y_l))
        L = -(1 - eps) log sigmoid(beta Delta) - eps log sigmoid(-beta Delta),   averaged over the pairs
    chosen / ref_chosen (N,); rejected / ref_rejected (N,) or (N, B) (each chosen paired with its B rejected).
    Returns (loss, metrics) with metrics["rewards/chosen"], ["rewards/rejected"], ["rewards/margins"],
    ["rewards/accuracies"] (means over the pairs)."""
    raise NotImplementedError
''')
def check_dpo(m, opts):
    N = 5
    cw, cl, rw, rl = (rand_list((N,), -60, -5, s) for s in range(4))

    def run(cw, cl, rw, rl, grad=False, **kw):
        a, b = t64(cw, grad), t64(cl, grad)
        loss, met = loss_and_metrics(m.dpo_loss(a, b, t64(rw), t64(rl), **kw), "dpo_loss")
        return loss, met, a, b

    def log2():
        z = [0.0] * 4
        loss, _, _, _ = run(z, z, z, z)
        close(loss, math.log(2), "loss with every log-prob 0 (zero margin: -log sigmoid(0) = log 2)", 1e-6)

    def value_default():
        loss, _, _, _ = run(cw, cl, rw, rl)  # defaults: beta 0.1, label_smoothing 0
        close(loss, _dpo_ref(cw, cl, rw, rl, 0.1, 0.0)[0], "loss at the defaults beta=0.1, label_smoothing=0", 1e-6)

    def reference_matters():
        loss, _, _, _ = run(cw, cl, rw, rl, beta=0.5)
        close(loss, _dpo_ref(cw, cl, rw, rl, 0.5, 0.0)[0], "loss with beta=0.5 (the reference log-probs must be "
              "subtracted: Delta = (s_w - s0_w) - (s_l - s0_l))", 1e-6)

    def smoothing():
        loss, _, _, _ = run(cw, cl, rw, rl, beta=0.5, label_smoothing=0.2)
        close(loss, _dpo_ref(cw, cl, rw, rl, 0.5, 0.2)[0], "loss with beta=0.5, label_smoothing=0.2", 1e-6)

    def gradient():
        loss, _, a, b = run(cw, cl, rw, rl, grad=True, beta=0.5, label_smoothing=0.1)
        backward(loss, "dpo_loss")
        _, g_w, g_l, _ = _dpo_ref(cw, cl, rw, rl, 0.5, 0.1)
        close(grad_of(a, "chosen_logps"), g_w, "d loss / d chosen_logps", 1e-6)
        close(grad_of(b, "rejected_logps"), g_l, "d loss / d rejected_logps", 1e-6)

    def pairs():
        B = 3
        cl2, rl2 = rand_list((N, B), -60, -5, 10), rand_list((N, B), -60, -5, 11)
        loss, _, a, b = run(cw, cl2, rw, rl2, grad=True, beta=0.3)
        want, g_w, g_l, _ = _dpo_ref(cw, cl2, rw, rl2, 0.3, 0.0)
        close(loss, want, f"loss with rejected of shape ({N}, {B}) (each chosen paired with its {B} rejected, "
              "mean over the pairs)", 1e-6)
        backward(loss, "dpo_loss")
        close(grad_of(a, "chosen_logps"), g_w, "d loss / d chosen_logps with (N, B) rejected", 1e-6)

    def metrics():
        _, met, _, _ = run(cw, cl, rw, rl, beta=0.5)
        rw_l = _dpo_ref(cw, cl, rw, rl, 0.5, 0.0)[3]
        want = {"rewards/chosen": sum(a for a, _ in rw_l) / N, "rewards/rejected": sum(b for _, b in rw_l) / N,
                "rewards/margins": sum(a - b for a, b in rw_l) / N,
                "rewards/accuracies": sum(a > b for a, b in rw_l) / N}
        for k, v in want.items():
            expect(k in met, f'metrics has no "{k}" (it has {sorted(met)})')
            close(met[k], v, f'metrics["{k}"]', 1e-5)

    def stable():
        loss, _, a, _ = run([-1000.0], [0.0], [0.0], [0.0], grad=True, beta=1.0)  # beta * Delta = -1000
        expect(bool(torch.isfinite(loss)), f"loss at beta*Delta = -1000 should be 1000, got {_fmt(loss)} "
               "(sigmoid(-1000) underflows to 0 and log(0) = -inf: use F.logsigmoid)")
        close(loss, 1000.0, "loss at beta*Delta = -1000", 1e-6)
        backward(loss, "dpo_loss")
        close(grad_of(a, "chosen_logps"), [-1.0], "d loss / d chosen_logps at beta*Delta = -1000", 1e-6)
        loss, _, _, _ = run([1000.0], [0.0], [0.0], [0.0], beta=1.0)
        close(loss, 0.0, "loss at beta*Delta = +1000", 1e-6)

    return [("zero margin gives log 2", log2),
            ("value at the defaults (beta 0.1, no smoothing)", value_default),
            ("value with beta 0.5: rewards are relative to the reference", reference_matters),
            ("label smoothing (conservative DPO)", smoothing),
            ("gradient w.r.t. chosen and rejected log-probs", gradient),
            ("rejected of shape (N, B): pairs, averaged", pairs),
            ("metrics: rewards/chosen, /rejected, /margins, /accuracies", metrics),
            ("large margins stay finite (log sigmoid, not log of sigmoid)", stable)]


# ---------------------------------------------------------------- 3. the u update

def _project_u_update():
    """The project's own u update: losses.update_log_u."""
    import losses

    return types.SimpleNamespace(update_log_u=losses.update_log_u, __file__=os.path.join(ROOT, "losses.py"))


def _u_linear(log_u, d, gamma):
    """Linear space, python floats: u <- (1 - gamma) u + gamma mean_j exp(d_j). Only for moderate values."""
    return [math.log((1 - gamma) * math.exp(lu) + gamma * sum(math.exp(x) for x in row) / len(row))
            for lu, row in zip(log_u, d)]


def _call_u(m, log_u, d, gamma):
    out = m.update_log_u(t64(log_u), t64(d), gamma)
    if not isinstance(out, torch.Tensor):
        raise Fail(f"update_log_u should return a tensor of shape ({len(log_u)},), got {type(out).__name__}")
    return out


@exercise(name="u_update", title="DFT's per-prompt moving average u, kept in log space",
          needs=("update_log_u",), default=_project_u_update,
          where=(("losses.py", "update_log_u"), ("losses.py", "logmeanexp"), ("losses.py", "logaddexp"),
                 ("train.py", "main")),
          template='''import math

import torch


def update_log_u(log_u, d, gamma):
    """One step of DFT's moving average, in log space (no gradient needed):
        log_u_i <- log( (1 - gamma) exp(log_u_i) + gamma * mean_j exp(d_ij) )
                 = logaddexp(log(1 - gamma) + log_u_i, log(gamma) + logmeanexp_j d_ij)
    log_u (N,) float64, d (N, B) float64, 0 < gamma <= 1 (gamma == 1: the old u is forgotten).
    Must stay finite for d around -1e4 or +1e3: never exponentiate d directly. Returns the new log_u (N,)."""
    raise NotImplementedError
''')
def check_u_update(m, opts):
    N, B = 3, 4

    def one_step():
        log_u, d = [0.0] * N, rand_list((N, B), -3, 2, 20)
        close(_call_u(m, log_u, d, 0.85), _u_linear(log_u, d, 0.85),
              "new log_u from log_u = 0, gamma = 0.85 (log of (1-gamma) u + gamma mean_j exp(d_j))", 1e-9)

    def steps():
        log_u, gamma = torch.zeros(N, dtype=torch.float64), 0.9
        ref = [0.0] * N
        for s in range(5):
            d = rand_list((N, B), -4, 3, 30 + s)
            out = m.update_log_u(log_u, t64(d), gamma)
            ref = _u_linear(ref, d, gamma)
            close(out, ref, f"log_u after {s + 1} steps of the running average (gamma = 0.9)", 1e-9)
            log_u = torch.as_tensor(out, dtype=torch.float64).detach()

    def gamma_one():
        d = rand_list((N, B), -3, 2, 40)
        close(_call_u(m, [7.0, -5.0, 0.0], d, 1.0), [lme(r) for r in d],
              "gamma = 1: the new log_u is logmeanexp_j d_j whatever the old u (careful: log(1 - 1) = -inf)", 1e-9)

    def very_negative():
        # summed log-probs of long negatives are around -1e4: exp underflows to 0 in float64
        off = rand_list((N, B), -2, 2, 50)
        d = [[-1e4 + o for o in row] for row in off]
        c = [0.5, -1.0, 0.0]
        log_u = [-1e4 + x for x in c]
        want = [-1e4 + math.log(0.15 * math.exp(ci) + 0.85 * sum(math.exp(o) for o in row) / B) for ci, row in zip(c, off)]
        out = _call_u(m, log_u, d, 0.85)
        expect(bool(torch.isfinite(out).all()), f"new log_u for d ~ -1e4 should be finite, got {_fmt(out)} "
               "(exp(-1e4) underflows: subtract the max before exponentiating)")
        close(out, want, "new log_u for log_u and d around -1e4", 1e-9)

    def very_positive():
        off = rand_list((N, B), -2, 2, 60)
        d = [[1e3 + o for o in row] for row in off]  # d = s/tau - logp_0 can be large and positive
        want = [1e3 + math.log(0.85) + lme(row) for row in off]  # (1 - gamma) * exp(0) is negligible next to exp(1e3)
        out = _call_u(m, [0.0] * N, d, 0.85)
        expect(bool(torch.isfinite(out).all()), f"new log_u for d ~ +1e3 should be finite, got {_fmt(out)} "
               "(exp(1e3) overflows: subtract the max before exponentiating)")
        close(out, want, "new log_u for d around +1e3", 1e-9)

    return [("one step from log_u = 0 equals the linear-space average", one_step),
            ("five steps: a running average", steps),
            ("gamma = 1 forgets the old u", gamma_one),
            ("stable for d and log_u around -1e4", very_negative),
            ("stable for d around +1e3", very_positive)]


# ---------------------------------------------------------------- 4. top-p

def _top_p_ref(row, p):
    """One row of logits (python floats) -> sorted list of kept token ids: the smallest set of most likely
    tokens whose probability reaches p (the top token always), plus every token tied with the last kept."""
    m = max(row)
    e = [math.exp(x - m) for x in row]
    probs = [x / sum(e) for x in e]
    order = sorted(range(len(row)), key=lambda i: -probs[i])
    kept, mass = [], 0.0
    for i in order:
        if mass >= p:
            break
        kept.append(i)
        mass += probs[i]
    last = probs[kept[-1]]
    return sorted(i for i in range(len(row)) if probs[i] >= last or i in kept)


def _kept(out, what):
    if not isinstance(out, torch.Tensor):
        raise Fail(f"{what}: top_p_filter should return a tensor, got {type(out).__name__}")
    return [r.nonzero()[:, 0].tolist() for r in (out > float("-inf"))]


def _far_from_boundary(row, p, margin=1e-4):
    """True if no cumulative probability (in sorted order) is within margin of p: float32 and float64 agree."""
    m = max(row)
    e = sorted((math.exp(x - m) for x in row), reverse=True)
    s, c = sum(e), 0.0
    for x in e:
        c += x / s
        if abs(c - p) < margin:
            return False
    return True


@exercise(name="top_p", title="nucleus (top-p) filtering for sampling",
          needs=("top_p_filter",), default="sample", where=(("sample.py", "top_p_filter"), ("sample.py", "pick")),
          template='''import torch


def top_p_filter(logits, p):
    """logits (B, V) -> a new tensor of the same shape: the logits of the nucleus unchanged, -inf elsewhere.
    The nucleus of a row: its most likely tokens, fewest first, until their probability sums to >= p (the
    top token always survives), plus any token whose probability equals that of the last one kept.
    Do not modify `logits` in place."""
    raise NotImplementedError
''')
def check_top_p(m, opts):
    def hand():
        x = torch.tensor([[0.15, 0.5, 0.05, 0.3]]).log()
        for p, want in ((1e-6, [1]), (0.4, [1]), (0.5, [1]), (0.7, [1, 3]), (0.8, [1, 3]), (0.9, [0, 1, 3]),
                        (0.99, [0, 1, 2, 3])):
            got = _kept(m.top_p_filter(x.clone(), p), f"p={p}")[0]
            expect(got == want, f"probs [0.15, 0.5, 0.05, 0.3], p = {p}: expected kept tokens {want}, got {got}"
                   + (" (keep the token that makes the sum reach p)" if len(got) < len(want) else ""))

    def values():
        g = torch.Generator().manual_seed(70)
        x = torch.randn(2, 30, generator=g) * 2
        out = m.top_p_filter(x.clone(), 0.7)
        keep = [_top_p_ref(r, 0.7) for r in x.tolist()]
        for b in range(2):
            for v in range(30):
                got, want = out[b, v].item(), (x[b, v].item() if v in keep[b] else float("-inf"))
                expect(got == want, f"row {b}, token {v}: expected {'the unchanged logit ' + _fmt(want) if v in keep[b] else '-inf'}, "
                       f"got {_fmt(got)} (kept logits stay as they are: the softmax of the result renormalizes them)")

    def batch():
        g = torch.Generator().manual_seed(71)
        x = torch.randn(4, 50, generator=g) * torch.tensor([[0.5], [1.0], [2.0], [4.0]])  # flat ... peaked rows
        out = m.top_p_filter(x.clone(), 0.8)
        for b, (row, got) in enumerate(zip(x.tolist(), _kept(out, "batch"))):
            want = _top_p_ref(row, 0.8)
            expect(got == want, f"row {b} of 4 (p = 0.8): expected {len(want)} kept tokens {want}, got {len(got)}: {got} "
                   "(every row has its own nucleus)")

    def randoms():
        g, rng = torch.Generator().manual_seed(72), random.Random(73)
        n = 0
        while n < 40:
            row = (torch.randn(1, 20, generator=g) * rng.uniform(0.3, 3)).tolist()[0]
            p = rng.uniform(0.05, 0.99)
            if not _far_from_boundary(row, p):
                continue
            n += 1
            got = _kept(m.top_p_filter(torch.tensor([row]), p), "random")[0]
            want = _top_p_ref(row, p)
            expect(got == want, f"random case {n} (20 tokens, p = {p:.4f}): expected kept {want}, got {got}")

    def top_survives():
        x = torch.tensor([[5.0, 1.0, 0.0, -1.0], [0.0, 0.1, 0.2, 0.3]])
        got = _kept(m.top_p_filter(x.clone(), 1e-9), "p tiny")
        expect(got == [[0], [3]], f"p = 1e-9: expected only the top token of each row [[0], [3]], got {got}")

    def ties():
        x = torch.tensor([[0.2, 0.4, 0.2, 0.2]]).log()
        got = _kept(m.top_p_filter(x.clone(), 0.5), "ties")[0]
        expect(got == [0, 1, 2, 3], "probs [0.2, 0.4, 0.2, 0.2], p = 0.5: expected [0, 1, 2, 3] (the 2nd kept token "
               f"ties with two others: keep every token as likely as the last one kept), got {got}")

    def p_one():
        x = torch.tensor([[0.1, 0.2, 0.3, 0.4], [2.0, 1.0, 0.0, -1.0]]).log_softmax(-1)
        got = _kept(m.top_p_filter(x.clone(), 1.0), "p = 1")
        expect(got == [[0, 1, 2, 3]] * 2, f"p = 1.0: expected every token kept, got {got}")

    def not_in_place():
        g = torch.Generator().manual_seed(74)
        x = torch.randn(3, 10, generator=g)
        x0 = x.clone()
        m.top_p_filter(x, 0.5)
        expect(torch.equal(x, x0), "top_p_filter changed its input in place (use masked_fill, not masked_fill_, "
               "or clone first): the caller's logits must stay as they were")

    return [("hand case: probs [0.15, 0.5, 0.05, 0.3] at seven values of p", hand),
            ("kept logits unchanged, the others -inf", values),
            ("each row of a batch is filtered on its own", batch),
            ("40 random rows and values of p", randoms),
            ("the top token always survives", top_survives),
            ("tokens tied with the last kept one are kept", ties),
            ("p = 1 keeps every token", p_one),
            ("the input is not modified", not_in_place)]


# ---------------------------------------------------------------- 5. SimPO: a new loss in the registry

SIMPO_DEFAULTS = {"beta": 2.0, "gamma": 0.5}


def _simpo_ref(aw, al, beta, gamma):
    """Python floats: mean over pairs of -log sigmoid(beta (a_w - a_l) - gamma), and d/da_w, d/da_l."""
    N = len(aw)
    pairs = [(i, j) for i in range(N) for j in range(len(al[i]) if isinstance(al[i], list) else 1)]
    P, get = len(pairs), (lambda a, i, j: a[i][j] if isinstance(a[i], list) else a[i])
    loss, g_w, g_l = 0.0, [0.0] * N, [list(r) if isinstance(r, list) else 0.0 for r in al]
    for i, j in pairs:
        z = beta * (aw[i] - get(al, i, j)) - gamma
        loss -= logsig(z) / P
        dz = -(1 - sigmoid(z)) / P
        g_w[i] += beta * dz
        if isinstance(g_l[i], list):
            g_l[i][j] = -beta * dz
        else:
            g_l[i] = -beta * dz
    return loss, g_w, g_l


class _PatchedRegistry:
    """Run with losses.LOSSES replaced by a copy the student's register() filled in; restored afterwards,
    so the project's registry is never changed (and compute_loss, which reads the module global, sees it)."""

    def __init__(self, m):
        self.m = m

    def __enter__(self):
        import losses
        self.losses, self.saved = losses, losses.LOSSES
        reg = dict(losses.LOSSES)
        out = self.m.register(reg)
        if isinstance(out, dict):  # register may also return the dict it filled in
            reg = out
        losses.LOSSES = reg
        return reg

    def __exit__(self, *exc):
        self.losses.LOSSES = self.saved
        return False


@exercise(name="simpo", title="add a new loss (SimPO) and register it in LOSSES, without touching losses.py",
          needs=("simpo_loss", "register"), default="solutions/simpo.py",
          where=(("losses.py", "LossSpec"), ("losses.py", "LOSSES"), ("losses.py", "compute_loss"), ("losses.py", "asft_loss")),
          template='''import torch
import torch.nn.functional as F

from losses import LossSpec


def simpo_loss(chosen_avg_logps, rejected_avg_logps, beta=2.0, gamma=0.5):
    """SimPO (Meng et al., 2024), no reference model; a = avg_logp (length-normalized):
        L = -log sigmoid( beta * (a(y_w) - a(y_l)) - gamma ),   averaged over the pairs
    chosen (N,); rejected (N,) or (N, B) (each chosen paired with its B rejected).
    Returns (loss, metrics): metrics a dict of 0-d tensors with at least "loss"."""
    raise NotImplementedError


def register(losses_dict):
    """Add "simpo" to losses_dict (a copy of losses.LOSSES): a LossSpec saying what the loss needs."""
    raise NotImplementedError
''')
def check_simpo(m, opts):
    N, B = 4, 3
    aw, al = rand_list((N,), -3, -0.05, 80), rand_list((N,), -3, -0.05, 81)
    al2 = rand_list((N, B), -3, -0.05, 82)

    def run(aw, al, grad=False, **kw):
        a, b = t64(aw, grad), t64(al, grad)
        loss, met = loss_and_metrics(m.simpo_loss(a, b, **kw), "simpo_loss")
        return loss, met, a, b

    def value():
        loss, _, _, _ = run(aw, al, beta=2.5, gamma=0.3)
        close(loss, _simpo_ref(aw, al, 2.5, 0.3)[0], "loss with beta=2.5, gamma=0.3", 1e-6)

    def margin():
        loss, _, _, _ = run([-1.0, -2.0], [-1.0, -2.0], beta=2.0, gamma=0.7)
        close(loss, math.log1p(math.exp(0.7)), "loss when chosen and rejected are equally likely: "
              "-log sigmoid(-gamma) = log(1 + e^gamma) (gamma is SUBTRACTED from the margin)", 1e-6)

    def defaults():
        loss, _, _, _ = run(aw, al)
        close(loss, _simpo_ref(aw, al, **SIMPO_DEFAULTS)[0], "loss at the defaults beta=2.0, gamma=0.5", 1e-6)

    def gradient():
        loss, _, a, b = run(aw, al, grad=True, beta=2.0, gamma=0.5)
        backward(loss, "simpo_loss")
        _, g_w, g_l = _simpo_ref(aw, al, 2.0, 0.5)
        close(grad_of(a, "chosen_avg_logps"), g_w, "d loss / d chosen_avg_logps", 1e-6)
        close(grad_of(b, "rejected_avg_logps"), g_l, "d loss / d rejected_avg_logps", 1e-6)

    def pairs():
        loss, _, a, b = run(aw, al2, grad=True, beta=2.0, gamma=0.5)
        want, g_w, g_l = _simpo_ref(aw, al2, 2.0, 0.5)
        close(loss, want, f"loss with rejected of shape ({N}, {B}) (pairs, averaged)", 1e-6)
        backward(loss, "simpo_loss")
        close(grad_of(a, "chosen_avg_logps"), g_w, f"d loss / d chosen_avg_logps with ({N}, {B}) rejected", 1e-6)

    def stable():
        loss, _, a, _ = run([-500.0], [0.0], grad=True, beta=2.0, gamma=0.5)  # z = -1000.5
        expect(bool(torch.isfinite(loss)), f"loss at a margin of -1000 should be finite, got {_fmt(loss)} (use F.logsigmoid)")
        close(loss, 1000.5, "loss at beta (a_w - a_l) - gamma = -1000.5", 1e-6)
        backward(loss, "simpo_loss")
        close(grad_of(a, "chosen_avg_logps"), [-2.0], "gradient at a margin of -1000.5", 1e-6)

    def metrics():
        loss, met, _, _ = run(aw, al)
        expect("loss" in met, f'metrics should have "loss" (the trainer logs it), it has {sorted(met)}')
        for k, v in met.items():
            expect(isinstance(v, torch.Tensor) and v.dim() == 0,
                   f'metrics["{k}"] should be a 0-d tensor (the trainer all-reduces them), got '
                   f"{type(v).__name__}{' of shape ' + str(tuple(v.shape)) if isinstance(v, torch.Tensor) else ''}")
        close(met["loss"], loss, 'metrics["loss"]', 1e-6)

    def spec():
        import losses
        with _PatchedRegistry(m) as reg:
            expect("simpo" in reg, f'register() did not add "simpo" (the registry has {sorted(reg)})')
            s = reg["simpo"]
            expect(isinstance(s, losses.LossSpec), f'LOSSES["simpo"] should be a losses.LossSpec, got {type(s).__name__}')
            expect(s.fn is m.simpo_loss, "LOSSES['simpo'].fn should be your simpo_loss")
            expect(dict(s.defaults) == SIMPO_DEFAULTS, f"defaults should be {SIMPO_DEFAULTS} (they become train.py's "
                   f"flag defaults), got {s.defaults}")
            want = dict(needs_negatives=True, needs_ref=(), length_normalized=True, stateful=False)
            for k, v in want.items():
                expect(getattr(s, k) == v, f"LossSpec.{k} should be {v!r} for SimPO, got {getattr(s, k)!r}")
            for k in losses.LOSSES:
                expect(reg.get(k) is losses.LOSSES[k], f'register() changed the entry "{k}": only add "simpo"')

    def through_registry():
        import losses
        g = torch.Generator().manual_seed(83)
        n_tok = torch.randint(2, 40, (N,), generator=g)
        neg_n = torch.randint(2, 40, (N, B), generator=g)
        logps = -torch.rand(N, generator=g, dtype=torch.float64) * n_tok * 2
        neg_logps = -torch.rand(N, B, generator=g, dtype=torch.float64) * neg_n * 2
        batch = {"logps": logps, "n_tokens": n_tok, "neg_logps": neg_logps, "neg_n_tokens": neg_n}  # no reference log-probs
        a_w, a_l = (logps / n_tok).tolist(), (neg_logps / neg_n).tolist()
        with _PatchedRegistry(m):
            loss, new_u, _ = losses.compute_loss("simpo", batch)
            close(loss, _simpo_ref(a_w, a_l, **SIMPO_DEFAULTS)[0],
                  "compute_loss('simpo', batch) at the registry defaults (on avg_logp = logps / n_tokens)", 1e-6)
            expect(new_u is None, "compute_loss('simpo') should return new_log_u None: SimPO keeps no per-prompt state")
            loss, _, _ = losses.compute_loss("simpo", batch, beta=1.0, gamma=0.0)
            close(loss, _simpo_ref(a_w, a_l, 1.0, 0.0)[0], "compute_loss('simpo', batch, beta=1.0, gamma=0.0)", 1e-6)

    return [("value", value),
            ("the target margin gamma is subtracted", margin),
            ("defaults beta = 2.0, gamma = 0.5", defaults),
            ("gradient w.r.t. chosen and rejected", gradient),
            ("rejected of shape (N, B): pairs, averaged", pairs),
            ("large margins stay finite", stable),
            ("metrics: 0-d tensors, with the loss", metrics),
            ("register() adds a LossSpec that says what SimPO needs", spec),
            ("compute_loss('simpo', batch) works through the registry, with no reference log-probs", through_registry)]


# ---------------------------------------------------------------- 6. KV cache

def _kv_model(seed=0):
    """A small GPT in float64 with larger-than-usual random weights, so attention is sharp and every
    mistake (positions, scaling, masking, heads) changes the logits by a lot, not by 1e-3."""
    from model import GPT, GPTConfig

    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=64, vocab_size=101, n_layer=2, n_head=4, n_embd=32)).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.0 if name.startswith(("wte", "wpe")) else 1.5 / math.sqrt(p.shape[1]))
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
    return model


@torch.no_grad()
def _greedy_full(model, idx, n):
    """The plain, obviously correct loop: the whole sequence through model(idx) for every new token.
    -> new tokens (B, n) and the logits each was chosen from (B, n, V)."""
    T, logits = idx.shape[1], []
    for _ in range(n):
        logits.append(model(idx)[:, -1])  # (B, V)
        idx = torch.cat([idx, logits[-1].argmax(-1, keepdim=True)], dim=1)
    return idx[:, T:], torch.stack(logits, 1)


class _Forbidden:
    def __init__(self, what):
        self.what = what

    def __call__(self, *a, **kw):
        raise Fail(f"{self.what} is off limits in this exercise: run the blocks' parts yourself "
                   "(wte, wpe, ln_1, attn.c_attn, attn.c_proj, ln_2, mlp, ln_f, lm_head_weight) and keep your own cache")


def _run_kv(m, model, idx, n):
    """Call the student's greedy_decode with the model's own fast paths switched off, counting how many
    token positions go through each layer's attention input projection."""
    counts = [0] * len(model.h)
    hooks = [blk.attn.c_attn.register_forward_hook(
        lambda mod, inp, out, i=i: counts.__setitem__(i, counts[i] + inp[0].shape[:-1].numel()))
        for i, blk in enumerate(model.h)]
    off = ["forward", "hidden", "logps", "prefill", "decode", "_step", "new_cache"]
    for name in off:
        setattr(model, name, _Forbidden(f"model.{name}"))
    for blk in model.h:
        blk.forward = _Forbidden("Block.forward")
        blk.attn.forward = _Forbidden("CausalSelfAttention.forward (it has the project's cache inside)")
    try:
        with torch.no_grad():
            out = m.greedy_decode(model, idx.clone(), n)
    finally:
        for h in hooks:
            h.remove()
        for name in off:
            delattr(model, name)
        for blk in model.h:
            del blk.forward
            del blk.attn.forward
    if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
        raise Fail(f"greedy_decode should return a pair of tensors (new tokens ({idx.shape[0]}, {n}), logits "
                   f"({idx.shape[0]}, {n}, V)), got {type(out).__name__}")
    return out[0], out[1], counts


@exercise(name="kv_cache", title="greedy decoding with a KV cache you write yourself",
          needs=("greedy_decode",), default="solutions/kv_cache.py",
          where=(("model.py", "CausalSelfAttention"), ("model.py", "Block"), ("model.py", "GPT"),
                 ("model.py", "KVCache"), ("sample.py", "_generate")),
          template='''import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def greedy_decode(model, idx, max_new_tokens):
    """Greedy decoding with a KV cache: model is a model.GPT, idx (B, T) long prompt tokens (no padding).
    Returns (new tokens (B, n) long, logits (B, n, V)): logits[:, i] are the next-token logits the i-th
    new token was picked from (its argmax). The same numbers as the plain loop
        for _ in range(n): logits = model(idx)[:, -1]; idx = cat([idx, logits.argmax(-1, keepdim=True)], 1)
    but every token goes through the network once: keep each layer's keys and values and, for each
    new token, compute only its own q, k, v. Use the blocks' parts (model.wte, model.wpe, block.ln_1,
    block.attn.c_attn, block.attn.c_proj, block.ln_2, block.mlp, model.ln_f, model.lm_head_weight);
    model(...), model.prefill/decode and Block/attention forward are switched off by the checker."""
    raise NotImplementedError
''')
def check_kv_cache(m, opts):
    def same(seed, idx, n, what):
        model = _kv_model(seed)
        want_tok, want_logits = _greedy_full(model, idx, n)
        tok, logits, _ = _run_kv(m, model, idx, n)
        B = idx.shape[0]
        expect(tuple(tok.shape) == (B, n), f"{what}: expected new tokens of shape {(B, n)}, got {tuple(tok.shape)}")
        expect(tuple(logits.shape) == tuple(want_logits.shape),
               f"{what}: expected logits of shape {tuple(want_logits.shape)}, got {tuple(logits.shape)}")
        for i in range(n):  # the first step that differs says the most: prefill (i = 0) or decode (i > 0)
            if not torch.allclose(logits[:, i].double(), want_logits[:, i], rtol=1e-7, atol=1e-7):
                err = (logits[:, i].double() - want_logits[:, i]).abs().max().item()
                raise Fail(f"{what}: the logits of new token {i} differ from the full forward's by up to {err:.3g} "
                           + ("(step 0 is the prompt pass: check positions, the causal mask, the head split)" if i == 0 else
                              "(the prompt pass is right; check the new token's position, and that it attends to the "
                              "cached keys AND its own)"))
        expect(torch.equal(tok.long(), want_tok), f"{what}: the logits match but the tokens do not: pick argmax(-1) "
               f"of each step's logits. expected {want_tok.tolist()}, got {tok.tolist()}")

    def batch():
        idx = torch.randint(0, 101, (3, 5), generator=torch.Generator().manual_seed(90))
        same(0, idx, 12, "3 prompts of 5 tokens, 12 new tokens")

    def one_token():
        same(1, torch.tensor([[7]]), 20, "a one-token prompt, 20 new tokens")

    def once():
        model = _kv_model(2)
        B, T, n = 2, 6, 10
        idx = torch.randint(0, 101, (B, T), generator=torch.Generator().manual_seed(91))
        _, _, counts = _run_kv(m, model, idx, n)
        most = B * (T + n)  # each prompt token and each new token once (feeding the last new token is allowed)
        expect(all(c <= most for c in counts), f"tokens through each layer's c_attn: {counts}; with a cache each "
               f"position is computed once: at most B * (T + n) = {most}, not a recompute of the whole sequence each step")
        expect(all(c >= B * (T + n - 1) for c in counts), f"tokens through each layer's c_attn: {counts}; expected "
               f"at least B * (T + n - 1) = {B * (T + n - 1)} (every prompt token and every new token but the last; call "
               "block.attn.c_attn(x) as a module, not F.linear on its weight, so the checker can count)")

    return [("same logits and tokens as the full-forward greedy loop (3 prompts)", batch),
            ("a one-token prompt", one_token),
            ("each token goes through the network once", once)]


# ---------------------------------------------------------------- 7. DFT2 needs no reference model

class _Recorder(dict):
    """A batch dict that remembers which keys were read."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.read = set()

    def __getitem__(self, k):
        self.read.add(k)
        return super().__getitem__(k)


def keys_read(loss_name):
    """The batch keys losses.compute_loss(loss_name, ...) actually reads (an experiment, not a list)."""
    import losses

    N, B = 2, 2
    batch = _Recorder(logps=-torch.rand(N, dtype=torch.float64) - 1, n_tokens=torch.tensor([3, 4]),
                      neg_logps=-torch.rand(N, B, dtype=torch.float64) - 1, neg_n_tokens=torch.tensor([[2, 5], [3, 3]]),
                      ref_logps=-torch.rand(N, dtype=torch.float64) - 1, neg_ref_logps=-torch.rand(N, B, dtype=torch.float64) - 1)
    spec = losses.LOSSES[loss_name]
    losses.compute_loss(loss_name, batch, log_u=torch.zeros(N, dtype=torch.float64) if spec.stateful else None)
    return batch.read


def _w_ref(s, logp0):
    """DFT's weights with tau = 1, gamma = 1, one prompt: w_j = B exp(d_j) / sum_k exp(d_k), d = s - logp0."""
    d = [a - b for a, b in zip(s, logp0)]
    mx = max(d)
    e = [math.exp(x - mx) for x in d]
    return [len(d) * x / sum(e) for x in e]


DFT2_NEG_LOGPS = [-10.0, -12.0]
DFT2_QUESTIONS = {  # question key -> logp_0 of the two negatives, for the weight questions
    "w_base": [-11.0, -11.0], "w_shifted": [-30.0, -30.0], "w_matched": [-10.0, -12.0]}
DFT2_CHOICE = "b"
DFT2_TRAIN_FUNCTION = "reference_logps"


def _answers(m, *args):
    if callable(getattr(m, "answers", None)):
        a = m.answers(*args)
    else:
        a = getattr(m, "ANSWERS", None)
    if not isinstance(a, dict):
        raise Fail("your file should define a dict ANSWERS = {...} (or a function answers(...) returning one)")
    return a


def _get(a, key):
    if a.get(key) is None:
        raise Fail(f'ANSWERS["{key}"] is missing or None: fill it in')
    return a[key]


def _choice(v):
    return str(v).strip().lower().strip("().")


def _key_set(v, what):
    if isinstance(v, str) or not hasattr(v, "__iter__"):
        raise Fail(f"{what}: expected a set of key names like {{\"logps\", ...}}, got {v!r}")
    return {str(x) for x in v}


@exercise(name="dft2_no_ref", title="why DFT2 needs no reference model: experiments with the weights, and questions",
          needs=(), default="solutions/dft2_no_ref.py",
          where=(("losses.py", "dft_loss"), ("losses.py", "dft2_loss"), ("losses.py", "_dft_core"),
                 ("losses.py", "compute_loss"), ("train.py", "reference_logps")),
          template='''# Answers for `python -m exercises.check dft2_no_ref --impl this_file.py` (questions: exercises/README.md).
ANSWERS = {
    "dft_reads": None,     # set of batch keys compute_loss("dft", batch, log_u=...) reads, e.g. {"logps", ...}
    "dft2_reads": None,    # the same for "dft2"
    "w_base": None,        # [w_1, w_2] for logp_0 = (-11, -11)
    "w_shifted": None,     # [w_1, w_2] for logp_0 = (-30, -30)
    "w_matched": None,     # [w_1, w_2] for logp_0 = (-10, -12)
    "why": None,           # "a", "b", "c" or "d"
    "train_function": None,  # the name of the train.py function whose work DFT needs and DFT2 skips
}
''')
def check_dft2_no_ref(m, opts):
    def reads(name):
        def thunk():
            key = f"{name}_reads"
            got = _key_set(_get(_answers(m), key), f'ANSWERS["{key}"]')
            want = keys_read(name)
            if got != want:
                missing, extra = want - got, got - want
                raise Fail(f'ANSWERS["{key}"] = {sorted(got)} is not what compute_loss("{name}", ...) reads: '
                           f"{len(missing)} key(s) missing, {len(extra)} too many. Experiment: call compute_loss with a "
                           "batch that lacks a key and see whether it complains (KeyError)")
        return thunk

    def weights(key):
        def thunk():
            got = _get(_answers(m), key)
            want = _w_ref(DFT2_NEG_LOGPS, DFT2_QUESTIONS[key])
            try:
                ok = len(got) == 2 and all(abs(float(g) - w) < 1e-3 for g, w in zip(got, want))
            except (TypeError, ValueError):
                ok = False
            expect(ok, f'ANSWERS["{key}"] = {got!r} is not right (to 1e-3). Hint: with gamma = 1, log_u is this batch\'s '
                   "logmeanexp_j d_j, so w_j = exp(d_j - log_u) = B exp(d_j) / sum_k exp(d_k), d_j = s(y'_j)/tau - logp_0(y'_j)")
        return thunk

    def why():
        got = _choice(_get(_answers(m), "why"))
        expect(got in "abcd" and len(got) == 1, f'ANSWERS["why"] should be one of "a", "b", "c", "d", got {got!r}')
        expect(got == DFT2_CHOICE, f'ANSWERS["why"] = "{got}" is not it. Hint: the negatives are SAMPLES from pi_0; which '
               "quantity is a plain average over samples from pi_0 an estimate of, with no weights at all?")

    def train_function():
        got = str(_get(_answers(m), "train_function")).strip().removesuffix("()")
        expect(got == DFT2_TRAIN_FUNCTION, f'ANSWERS["train_function"] = {got!r} is not it. Hint: look in train.py '
               "for the function that runs the starting model over every negative once, before training")

    return [("which batch keys compute_loss('dft') reads", reads("dft")),
            ("which batch keys compute_loss('dft2') reads", reads("dft2")),
            ("DFT's weights, equal logp_0", weights("w_base")),
            ("DFT's weights, logp_0 shifted by a constant", weights("w_shifted")),
            ("DFT's weights, logp_0 ranking the negatives like the model", weights("w_matched")),
            ("why DFT2 needs no reference model (multiple choice)", why),
            ("the work in train.py that DFT2 skips", train_function)]


# ---------------------------------------------------------------- 8. SFT vs DFT on the built-in task

SFT_DFT_CHOICES = {"why_neg_down": "b", "nll_meaning": "c"}


def read_runs(runs):
    """The numbers the sft_vs_dft questions are about, from <runs>/sft/eval.json, <runs>/dft/eval.json
    and <runs>/dft/metrics.jsonl. Raises Fail with the command to run when a file is missing."""
    out = {}
    for loss in ("sft", "dft"):
        path = os.path.join(runs, loss, "eval.json")
        if not os.path.exists(path):
            raise Fail(f"{path} is missing: run `python train.py --loss {loss}` first (or pass --runs DIR, the "
                       "folder holding sft/ and dft/)")
        try:
            with open(path) as f:
                ev = json.load(f)
            out[loss] = {k: {m: float(ev[k][m]) for m in ("nll", "exact_match")} for k in ("before", "after")}
        except (ValueError, KeyError, TypeError) as e:
            raise Fail(f"{path}: expected train.py's eval.json with before/after nll and exact_match ({e!r})") from None
    path = os.path.join(runs, "dft", "metrics.jsonl")
    if not os.path.exists(path):
        raise Fail(f"{path} is missing: run `python train.py --loss dft` first")
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    r = json.loads(line)
                    rows.append((float(r["logp/pos"]), float(r["logp/neg"])))
                except (ValueError, KeyError, TypeError):
                    raise Fail(f"{path}:{lineno}: expected a JSON row with logp/pos and logp/neg") from None
    if len(rows) < 2:
        raise Fail(f"{path}: needs at least two logged steps, found {len(rows)}")
    out["dft_first"], out["dft_last"] = rows[0], rows[-1]
    return out


def _trend(a, b):
    return "up" if b > a else "down" if b < a else "flat"


@exercise(name="sft_vs_dft", title="run SFT and DFT on the built-in task and read the before/after table",
          needs=(), default="solutions/sft_vs_dft.py",
          where=(("train.py", "main"), ("eval.py", "compute_metrics"), ("eval.py", "format_table"), ("losses.py", "dft_loss")),
          template='''# Answers for `python -m exercises.check sft_vs_dft --impl this_file.py` (questions: exercises/README.md),
# after `python train.py --loss sft` and `python train.py --loss dft`. Numbers to 3 decimals are enough.
ANSWERS = {
    "nll_before": None,             # held-out nll of the starting model (the "before" column)
    "nll_after_sft": None,          # held-out nll after SFT
    "nll_after_dft": None,          # held-out nll after DFT
    "exact_match_after_sft": None,
    "exact_match_after_dft": None,
    "lower_nll": None,              # "sft" or "dft": which run ends with the lower held-out nll
    "dft_logp_pos": None,           # "up" or "down": logp/pos in out/dft/metrics.jsonl, last logged step vs first
    "dft_logp_neg": None,           # "up" or "down": the same for logp/neg
    "why_neg_down": None,           # "a", "b", "c" or "d"
    "nll_meaning": None,            # "a", "b", "c" or "d"
}
''')
def check_sft_vs_dft(m, opts):
    runs = opts.get("runs") or "out"
    state = {}

    def data():
        if "error" in state:  # said once, in the first check
            raise Fail("not checked: the run files are not readable (see the first check)")
        if "data" not in state:
            try:
                state["data"] = read_runs(runs)
            except Fail as e:
                state["error"] = e
                raise
        return state["data"]

    def comparable():
        r = data()
        b1, b2 = r["sft"]["before"], r["dft"]["before"]
        expect(all(abs(b1[k] - b2[k]) < 1e-6 for k in b1), f"the 'before' columns of {runs}/sft and {runs}/dft differ "
               f"({b1} vs {b2}): both runs should start from the same model and score the same held-out set")

    def number(key, get):
        def thunk():
            want = get(data())
            got = _get(_answers(m, runs), key)
            try:
                ok = abs(float(got) - want) <= 1e-3
            except (TypeError, ValueError):
                ok = False
            expect(ok, f'ANSWERS["{key}"] = {got!r}, but the files in {runs}/ say {want:.4f}')
        return thunk

    def word(key, get, options):
        def thunk():
            want = get(data())
            got = _choice(_get(_answers(m, runs), key))
            expect(got in options, f'ANSWERS["{key}"] should be one of {sorted(options)}, got {got!r}')
            expect(got in want, f'ANSWERS["{key}"] = "{got}", but the files in {runs}/ say otherwise')
        return thunk

    def lower(r):
        a, b = r["sft"]["after"]["nll"], r["dft"]["after"]["nll"]
        return {"sft", "dft"} if abs(a - b) < 1e-9 else {"sft"} if a < b else {"dft"}

    def choice(key, hint):
        def thunk():
            got = _choice(_get(_answers(m, runs), key))
            expect(got in ("a", "b", "c", "d"), f'ANSWERS["{key}"] should be one of "a", "b", "c", "d", got {got!r}')
            expect(got == SFT_DFT_CHOICES[key], f'ANSWERS["{key}"] = "{got}" is not it. Hint: {hint}')
        return thunk

    return [("the runs are comparable (same 'before' column)", comparable),
            ("nll before training", number("nll_before", lambda r: r["sft"]["before"]["nll"])),
            ("nll after SFT", number("nll_after_sft", lambda r: r["sft"]["after"]["nll"])),
            ("nll after DFT", number("nll_after_dft", lambda r: r["dft"]["after"]["nll"])),
            ("exact match after SFT", number("exact_match_after_sft", lambda r: r["sft"]["after"]["exact_match"])),
            ("exact match after DFT", number("exact_match_after_dft", lambda r: r["dft"]["after"]["exact_match"])),
            ("which run has the lower held-out nll", word("lower_nll", lower, {"sft", "dft"})),
            ("DFT's logp/pos during training", word("dft_logp_pos", lambda r: {_trend(r["dft_first"][0], r["dft_last"][0])},
                                                     {"up", "down", "flat"})),
            ("DFT's logp/neg during training", word("dft_logp_neg", lambda r: {_trend(r["dft_first"][1], r["dft_last"][1])},
                                                     {"up", "down", "flat"})),
            ("what pushes logp/neg down (multiple choice)",
             choice("why_neg_down", "differentiate L_i = -s(y_i) + (1/B) sum_j w_j s(y'_j) with respect to s(y'_j)")),
            ("what the held-out nll measures (multiple choice)",
             choice("nll_meaning", "read eval.py's docstring and compute_metrics: what is summed, what is divided by what?"))]


# -----------------------------------------------------------------------------
# running


@dataclass
class Result:
    name: str
    ok: bool
    message: str = ""


def load_file(path):
    """Import a python file by path as a fresh module (its own name, so several can be loaded side by side)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise UsageError(f"--impl {path}: no such file")
    name = "_exercise_impl_" + str(abs(hash(path)))
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def load_reference(ex):
    if callable(ex.default):
        return ex.default()
    if ex.default.endswith(".py"):
        return load_file(os.path.join(HERE, ex.default))
    return importlib.import_module(ex.default)


def _where_failed(e, impl_path):
    """The line of the student's file where an exception came from, if it came from there."""
    frames = traceback.extract_tb(e.__traceback__)
    if impl_path:
        mine = [f for f in frames if os.path.abspath(f.filename) == os.path.abspath(impl_path)]
        if mine:
            return f" ({os.path.basename(mine[-1].filename)}:{mine[-1].lineno}: {mine[-1].line})"
    return f" ({os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""


def run_exercise(name, impl=None, runs=None, stream=None):
    """Run one exercise's checks on impl (a file path; None = the reference). Prints PASS/FAIL lines to
    stream (default stdout) and returns the list of Results. Raises UsageError for a bad name or path."""
    out = stream or sys.stdout
    if name not in EXERCISES:
        raise UsageError(f"unknown exercise {name!r}; choose one of: {', '.join(EXERCISES)} (or --list)")
    ex = EXERCISES[name]
    print(f"exercise {name}: {ex.title}", file=out)
    try:
        m = load_file(impl) if impl else load_reference(ex)
    except UsageError:
        raise
    except BaseException as e:  # a SyntaxError or an exception at import time is the student's to fix
        msg = f"cannot import {impl}: {type(e).__name__}: {e}{_where_failed(e, impl)}"
        print(f"  FAIL  {msg}", file=out)
        return [Result("import", False, msg)]
    src = impl or os.path.relpath(getattr(m, "__file__", None) or ex.default, ROOT)
    print(f"testing {', '.join(ex.needs) or 'the answers'} from {src}", file=out)
    missing = [n for n in ex.needs if not callable(getattr(m, n, None))]
    if missing:
        msg = f"{impl or src} defines no function {', '.join(missing)} (python -m exercises.check {name} --template shows the signature)"
        print(f"  FAIL  {msg}", file=out)
        return [Result("definitions", False, msg)]
    if impl:
        for n in ex.needs:
            mod = getattr(getattr(m, n), "__module__", "")
            if mod in ("losses", "sample", "model"):
                print(f"  note: {n} is the project's own {mod}.{n}: this checks the project, not your code", file=out)
    results = []
    for check_name, thunk in ex.checks(m, {"runs": runs}):
        try:
            thunk()
            res = Result(check_name, True)
        except Fail as e:
            res = Result(check_name, False, str(e))
        except Exception as e:  # the code under test raised: report it like a failed check
            res = Result(check_name, False, f"raised {type(e).__name__}: {e}{_where_failed(e, impl)}")
        results.append(res)
        print(f"  PASS  {check_name}" if res.ok else f"  FAIL  {check_name}\n        {res.message}", file=out)
    n_ok = sum(r.ok for r in results)
    print(f"{n_ok} of {len(results)} checks passed" + ("." if n_ok == len(results) else
          f"; see exercises/README.md, exercise {name}, for hints."), file=out)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description="Check a classroom exercise (exercises/README.md).",
                                epilog="example: python -m exercises.check dpo --impl my_dpo.py")
    p.add_argument("exercise", nargs="?", help="the exercise to check (see --list)")
    p.add_argument("--impl", default=None, help="your python file defining the function(s) under test "
                   "(default: the reference solution)")
    p.add_argument("--runs", default="out", help="sft_vs_dft only: the folder holding sft/ and dft/ run directories")
    p.add_argument("--list", action="store_true", help="list the exercises")
    p.add_argument("--template", action="store_true", help="print a starting file for the exercise (redirect it to a file)")
    args = p.parse_args(argv)
    if args.list or not args.exercise:
        for i, (name, ex) in enumerate(EXERCISES.items(), 1):
            print(f"{i:2d}  {name:15s} {ex.title}")
        print("\ncheck one: python -m exercises.check NAME --impl your_file.py   (NAME --template: a file to start from)")
        return 0 if args.list else 2
    try:
        if args.template:
            if args.exercise not in EXERCISES:
                raise UsageError(f"unknown exercise {args.exercise!r}; choose one of: {', '.join(EXERCISES)}")
            sys.stdout.write(EXERCISES[args.exercise].template)
            return 0
        results = run_exercise(args.exercise, args.impl, args.runs)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
