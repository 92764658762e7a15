"""
Exercise top_p: nucleus (top-p) filtering for sampling.

Write sample.top_p_filter(logits, p): for each row of (B, V) logits, keep the smallest set of most
likely tokens whose probabilities sum to at least p (the top token always), plus any token exactly as
likely as the last one kept; return a new tensor with the kept logits unchanged and -inf elsewhere.

    python -m exercises.check top_p

Cases (--cases): {"name": ..., "logits": [[...], ...], "p": float}; the kept tokens of every row are
verified by brute force (nucleus_ok below; avoid p within 1e-4 of a cumulative probability: float
rounding).
"""
import math
import random

import torch

from exercises.lib import Fail, expect, fmt

TITLE = "nucleus (top-p) filtering for sampling"
TIME = 20
OBJECTIVE = "write a sort-and-cumsum filter with the boundary, ties and in-place pitfalls right"
READ = (("sample.py", "pick"), ("sample.py", "top_k_filter"))
TARGETS = (("sample", "top_p_filter"),)
NEEDS = ("top_p_filter",)
VERIFIED = True  # cases are verified by brute force: they need no expected outputs


def nucleus_ok(row, kept_ids, p, slack=1e-6):
    """A brute-force verifier, not a filter: kept_ids is the nucleus of `row` (python floats) at p iff,
    with t the probability of its least likely token, it holds every token at least that likely (ties
    too), the tokens MORE likely than t weigh less than p (so t's token was needed), and the kept mass
    reaches p (or every token is kept). Returns (ok, why not)."""
    if not kept_ids:
        return False, "no token is kept: the top token always survives"
    m = max(row)
    e = [math.exp(x - m) for x in row]
    probs = [x / sum(e) for x in e]
    t = min(probs[i] for i in kept_ids)
    if sorted(kept_ids) != [i for i in range(len(row)) if probs[i] >= t]:
        return False, "a token at least as likely as a kept one is dropped (ties, or the sort order?)"
    if sum(q for q in probs if q > t) >= p + slack:
        return False, "too many tokens kept: the ones before the last kept already reach p"
    if sum(probs[i] for i in kept_ids) < p - slack and len(kept_ids) < len(row):
        return False, ("the token that makes the sum reach p is dropped: keep tokens while the mass BEFORE "
                       "them is < p")
    return True, ""


def kept(out, what):
    if not isinstance(out, torch.Tensor):
        raise Fail(f"{what}: top_p_filter should return a tensor, got {type(out).__name__}")
    return [r.nonzero()[:, 0].tolist() for r in (out > float("-inf"))]


def far_from_boundary(row, p, margin=1e-4):
    """True if no cumulative probability (in sorted order) is within margin of p: float32 and float64 agree."""
    m = max(row)
    e = sorted((math.exp(x - m) for x in row), reverse=True)
    c = 0.0
    for x in e:
        c += x / sum(e)
        if abs(c - p) < margin:
            return False
    return True


def checks(m, opts):
    def hand():
        x = torch.tensor([[0.15, 0.5, 0.05, 0.3]]).log()
        for p, want in ((1e-6, [1]), (0.4, [1]), (0.5, [1]), (0.7, [1, 3]), (0.8, [1, 3]), (0.9, [0, 1, 3]),
                        (0.99, [0, 1, 2, 3])):
            got = kept(m.top_p_filter(x.clone(), p), f"p={p}")[0]
            expect(got == want, ("the token that makes the sum reach p is dropped: keep tokens while the mass BEFORE "
                                 "them is < p. " if len(got) < len(want) else "") +
                   f"probs [0.15, 0.5, 0.05, 0.3], p = {p}: expected kept tokens {want}, got {got}")

    def values():
        x = torch.randn(2, 30, generator=torch.Generator().manual_seed(70)) * 2
        out = m.top_p_filter(x.clone(), 0.7)
        expect(isinstance(out, torch.Tensor) and out.shape == x.shape, f"top_p_filter should return a tensor of "
               f"the logits' shape {tuple(x.shape)}, got {out!r}")
        for b in range(2):
            for v in range(30):
                got = out[b, v].item()
                expect(got == x[b, v].item() or got == float("-inf"), "kept logits stay as they are (the softmax of "
                       f"the result renormalizes them), the others become -inf: row {b}, token {v}: the logit "
                       f"{fmt(x[b, v].item())} came back as {fmt(got)}")
        verify(x, out, 0.7, "30 tokens, p = 0.7")

    def batch():
        x = torch.randn(4, 50, generator=torch.Generator().manual_seed(71)) * torch.tensor([[0.5], [1.0], [2.0], [4.0]])
        verify(x, m.top_p_filter(x.clone(), 0.8), 0.8, "every row has its own nucleus: a batch of 4 rows")

    def randoms():
        for row, p, what in random_rows(72, 40):
            verify(torch.tensor([row]), m.top_p_filter(torch.tensor([row]), p), p, what)

    def top_survives():
        x = torch.tensor([[5.0, 1.0, 0.0, -1.0], [0.0, 0.1, 0.2, 0.3]])
        got = kept(m.top_p_filter(x.clone(), 1e-9), "p tiny")
        expect(got == [[0], [3]], f"the top token always survives: p = 1e-9, expected [[0], [3]], got {got}")

    def ties():
        x = torch.tensor([[0.2, 0.4, 0.2, 0.2]]).log()
        got = kept(m.top_p_filter(x.clone(), 0.5), "ties")[0]
        expect(got == [0, 1, 2, 3], "ties are broken by sort order: keep EVERY token as likely as the last one kept "
               f"(keep probs >= that probability). probs [0.2, 0.4, 0.2, 0.2], p = 0.5: expected [0, 1, 2, 3], got {got}")

    def p_one():
        x = torch.tensor([[0.1, 0.2, 0.3, 0.4], [2.0, 1.0, 0.0, -1.0]]).log_softmax(-1)
        got = kept(m.top_p_filter(x.clone(), 1.0), "p = 1")
        expect(got == [[0, 1, 2, 3]] * 2, f"p = 1.0 keeps every token, got {got}")

    def not_in_place():
        x = torch.randn(3, 10, generator=torch.Generator().manual_seed(74))
        x0 = x.clone()
        m.top_p_filter(x, 0.5)
        expect(torch.equal(x, x0), "top_p_filter changed its input in place (masked_fill_, or an in-place assignment): "
               "use masked_fill or clone first; the caller's logits must stay as they were")

    return [("hand case: probs [0.15, 0.5, 0.05, 0.3] at seven values of p", hand),
            ("kept logits unchanged, the others -inf", values),
            ("each row of a batch is filtered on its own", batch),
            ("40 random rows and values of p", randoms),
            ("the top token always survives", top_survives),
            ("tokens tied with the last kept one are kept", ties),
            ("p = 1 keeps every token", p_one),
            ("the input is not modified", not_in_place)]


def random_rows(seed, n, V=20):
    """n random rows of V logits, each with a p far from its cumulative probabilities."""
    g, rng, out = torch.Generator().manual_seed(seed), random.Random(seed + 1), []
    while len(out) < n:
        row = (torch.randn(1, V, generator=g) * rng.uniform(0.3, 3)).tolist()[0]
        p = rng.uniform(0.05, 0.99)
        if far_from_boundary(row, p):
            out.append((row, p, f"random row {len(out) + 1} ({V} tokens, p = {p:.4f})"))
    return out


def verify(x, out, p, what):
    """Every row of out is x's nucleus at p (nucleus_ok), whatever the order of the tokens."""
    for b, (row, got) in enumerate(zip(x.tolist(), kept(out, what))):
        ok, why = nucleus_ok(row, got, p)
        expect(ok, f"{why} ({what}, row {b}: kept {got})")


def compare(m, c, want):
    """Case c (logits, p) verified by brute force; no expected output is needed."""
    x, p = torch.tensor(c["logits"], dtype=torch.float32), float(c["p"])
    x = x[None] if x.dim() == 1 else x
    verify(x, m.top_p_filter(x.clone(), p), p, c.get("name", "case"))
