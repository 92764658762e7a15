"""
What every exercise's checker shares: the verdict (Fail), comparisons whose messages a student can act
on, the public cases, and the helpers of the question exercises.

A check is a function that returns nothing when the answer is right and raises Fail with a message
when it is not. The message names the most likely mistake first ("the weights w carry gradient:
detach them"), then what was expected and what came back. `diagnose` does the naming: it compares
the answer with what each known mistake would have produced.

What a student's copy holds: properties (a loss of log 2 at zero margin, a gradient equal to the
derivative of the student's own values, a result that does not change when the masked positions do),
brute-force checks that verify an answer without computing it, and public cases: fixed inputs with
their expected outputs and the outputs of the usual mistakes (exercises/cases/NAME.json). The
references that compute expected outputs for any input, the answer keys and the hidden cases are the
teacher's (exercises/teacher/), and the grader runs them too.
"""
import json
import os
import random

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
WRITTEN = "written: "  # the name of a check that records a written answer for the teacher's rubric


class Fail(AssertionError):
    """A check's verdict: what was expected, what came back, and the likely mistake (shown verbatim)."""


class NotRun(Fail):
    """A check that was skipped because an earlier one failed (its message says which)."""


# -----------------------------------------------------------------------------
# comparing numbers


def fmt(x):
    if isinstance(x, torch.Tensor):
        x = x.detach().double().cpu()
        return fmt(x.item()) if x.dim() == 0 else fmt(x.tolist())
    if isinstance(x, float):
        return f"{x:.6g}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in x) + "]"
    return repr(x)


def as64(x, what):
    if isinstance(x, torch.Tensor):
        return x.detach().double().cpu()
    try:
        return torch.tensor(x, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise Fail(f"{what}: expected numbers, got {type(x).__name__} {x!r}") from None


def is_close(got, want, tol=1e-6):
    """True when got and want (tensors, numbers or nested lists) have the same shape and agree
    within tol."""
    try:
        g, w = as64(got, ""), as64(want, "")
    except Fail:
        return False
    return g.shape == w.shape and bool(torch.isclose(g, w, rtol=tol, atol=tol).all())


def close(got, want, what, tol=1e-6, hint=""):
    """Fail unless got equals want within tol (relative and absolute), saying where they differ;
    hint, the likely mistake, comes first."""
    g, w = as64(got, what), as64(want, what)
    lead = f"{hint} (" if hint else ""
    tail = ")" if hint else ""
    if g.shape != w.shape:
        raise Fail(f"{lead}{what}: expected shape {tuple(w.shape)}, got shape {tuple(g.shape)} "
                   f"({fmt(g)}){tail}")
    ok = torch.isclose(g, w, rtol=tol, atol=tol)
    if not bool(ok.all()):
        if g.numel() <= 8:
            raise Fail(f"{lead}{what}: expected {fmt(w)}, got {fmt(g)}{tail}")
        bad = (~ok).nonzero()
        at = tuple(bad[0].tolist())
        raise Fail(f"{lead}{what}: {len(bad)} of {g.numel()} entries differ; the first at index "
                   f"{at}: expected {fmt(w[at])}, got {fmt(g[at])}{tail}")


def diagnose(got, want, what, mistakes=(), tol=1e-6, hint=""):
    """close(), but when got is wrong and matches what a known mistake computes, say that mistake
    first. mistakes: (value the mistake would give, message naming it) pairs."""
    if is_close(got, want, tol):
        return
    for value, message in mistakes:
        if value is not None and is_close(got, value, tol):
            raise Fail(f"{message} ({what}: expected {fmt(as64(want, what))}, "
                       f"got {fmt(as64(got, what))})")
    close(got, want, what, tol, hint)


def expect(cond, msg):
    if not cond:
        raise Fail(msg)


def finite(x, what, why):
    expect(isinstance(x, torch.Tensor) and bool(torch.isfinite(x).all()), f"{why} ({what} = {fmt(x)})")


def rand_list(shape, lo, hi, seed):
    g = random.Random(seed)
    if len(shape) == 1:
        return [g.uniform(lo, hi) for _ in range(shape[0])]
    return [[g.uniform(lo, hi) for _ in range(shape[1])] for _ in range(shape[0])]


def t64(rows, grad=False):
    return torch.tensor(rows, dtype=torch.float64, requires_grad=grad)


def loss_and_metrics(out, fn_name, n=2):
    """Unpack a loss function's (loss, metrics) or (loss, new_log_u, metrics), checking its shape
    first."""
    if not (isinstance(out, tuple) and len(out) == n):
        what = "(loss, metrics)" if n == 2 else "(loss, new_log_u, metrics)"
        raise Fail(f"{fn_name} should return a tuple {what}; got {type(out).__name__}"
                   + (f" of length {len(out)}" if isinstance(out, tuple) else ""))
    loss, metrics = out[0], out[-1]
    if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
        raise Fail(f"{fn_name}: the loss should be a 0-d tensor (a scalar), got {type(loss).__name__}"
                   + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else ""))
    if not isinstance(metrics, dict):
        raise Fail(f"{fn_name}: metrics should be a dict, got {type(metrics).__name__}")
    return out


def backward(loss, fn_name):
    if not loss.requires_grad:
        raise Fail(f"{fn_name}: the loss carries no gradient (an .item(), a .detach(), torch.no_grad "
                   "or python floats on the way?)")
    loss.backward()


def grad_of(t, what):
    if t.grad is None:
        raise Fail(f"{what}: no gradient reached it (a .detach() or torch.no_grad on its way?)")
    return t.grad


def check_metrics(met, want, fn_name, tol=1e-5):
    for k, v in want.items():
        expect(k in met, f'{fn_name}: metrics has no "{k}" (it has {sorted(met)})')
        expect(isinstance(met[k], torch.Tensor) and met[k].dim() == 0 and not met[k].requires_grad,
               f'{fn_name}: metrics["{k}"] should be a detached 0-d tensor (the trainer all-reduces '
               f"them), got {met[k]!r}")
        close(met[k], v, f'metrics["{k}"]', tol, "a metric is the mean over the batch (pairs for "
              "DPO and ASFT), of the detached values")


# -----------------------------------------------------------------------------
# public cases: fixed inputs, their expected outputs and what the usual mistakes give


def public_cases(name):
    """exercises/cases/NAME.json: a list of cases, each its inputs plus "want" (the expected
    outputs and, under "mistakes", [value, message] pairs). The teacher's make_cases writes them."""
    path = os.path.join(HERE, "cases", f"{name}.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)["cases"]


def mistakes_of(want, key):
    """The (value, message) pairs a case stores for output `key`."""
    return [(v, msg) for v, msg in want.get("mistakes", {}).get(key, [])]


def case_checks(name, compare, m, label="public case"):
    """One check per public case of exercise `name`: compare(m, case, case["want"])."""
    return [(f"{label}: {c['name']}", (lambda c=c: compare(m, c, c["want"]))) for c in public_cases(name)]


# -----------------------------------------------------------------------------
# question exercises: an ANSWERS dict in the student's file


def answers(m, *args):
    """The student's answers: a dict ANSWERS, or a function answers(*args) returning one."""
    a = m.answers(*args) if callable(getattr(m, "answers", None)) else getattr(m, "ANSWERS", None)
    if not isinstance(a, dict):
        raise Fail("your file should define a dict ANSWERS = {...} (or a function answers(...) "
                   "returning one)")
    return a


def get(a, key):
    """ANSWERS[key]; an empty answer means the exercise is not done yet (reported as unsolved)."""
    if a.get(key) is None or (isinstance(a[key], str) and not a[key].strip()):
        raise NotImplementedError(f'ANSWERS["{key}"] is not filled in yet')
    return a[key]


def number(a, key):
    v = get(a, key)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise Fail(f'ANSWERS["{key}"] should be a number, got {v!r}') from None


def numbers(a, key, n):
    """ANSWERS[key] as a list of n floats."""
    v = get(a, key)
    try:
        out = [float(x) for x in v]
    except (TypeError, ValueError):
        raise Fail(f'ANSWERS["{key}"] should be a list of {n} numbers, got {v!r}') from None
    expect(len(out) == n, f'ANSWERS["{key}"] should be a list of {n} numbers, got {len(out)}: {v!r}')
    return out


def word(v):
    return str(v).strip().lower().strip("().'\"")


def one_of(a, key, options):
    """A short answer that must be one of `options` ("up", "down", "same"): checked for its form
    here, for its value against the teacher's key."""
    got = word(get(a, key))
    expect(got in options, f'ANSWERS["{key}"] should be one of '
           f'{", ".join(repr(o) for o in options)}, got {got!r}')
    return got


def written(a, key, min_words=15):
    """A written answer, graded by the teacher with the rubric (exercises/teacher/rubric.md): the
    check only makes sure there is one, of a few sentences, and returns it for the grade sheet."""
    text = get(a, key)
    expect(isinstance(text, str), f'ANSWERS["{key}"] should be a few sentences in a string, got '
           f"{type(text).__name__}")
    n = len(text.split())
    expect(n >= min_words, f'ANSWERS["{key}"] has {n} words: write the argument out, in at least '
           f"{min_words} words (the teacher grades it with the rubric)")
    return " ".join(text.split())


def written_check(m, key, question, min_words=25, *args):
    """The check of a written answer ANSWERS[key]: named "written: KEY: question" (the grader gives it
    the rubric's points for KEY); it passes once there is an answer, and returns it for the grade sheet."""
    return f"{WRITTEN}{key}: {question}", lambda: written(answers(m, *args), key, min_words)


# -----------------------------------------------------------------------------
# checks that only make sense once an earlier one passed


def gated(state, key):
    """Decorate a check so that state[key] records "ok", "unsolved" or (failed) nothing."""
    def deco(fn):
        def thunk():
            try:
                out = fn()
            except NotImplementedError:
                state[key] = "unsolved"
                raise
            state[key] = "ok"
            return out
        return thunk
    return deco


def require(state, key, what):
    """Skip a check unless the check recorded under key passed; what: the advice, e.g. 'make X
    work'."""
    if state.get(key) == "unsolved":
        raise NotImplementedError(f"not run: first {what}")
    if state.get(key) != "ok":
        raise NotRun(f"not run: first {what}")
