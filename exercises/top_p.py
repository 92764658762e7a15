"""
Exercise top_p: nucleus (top-p) filtering for sampling.

Write sample.top_p_filter(logits, p): for each row of (B, V) logits, keep the smallest set of most
likely tokens whose probabilities sum to at least p (the top token always), plus any token exactly as
likely as the last one kept; return a new tensor with the kept logits unchanged and -inf elsewhere.

Hidden cases (--cases): {"name": ..., "logits": [[...], ...], "p": float}; the kept tokens are compared
with a brute-force python loop (avoid p within 1e-4 of a cumulative probability: float rounding).
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


def reference(row, p):
    """One row of logits (python floats) -> sorted list of kept token ids: the most likely tokens until their
    probability reaches p (the top token always), plus every token tied with the last one kept."""
    m = max(row)
    e = [math.exp(x - m) for x in row]
    probs = [x / sum(e) for x in e]
    kept, mass = [], 0.0
    for i in sorted(range(len(row)), key=lambda i: -probs[i]):
        if mass >= p:
            break
        kept.append(i)
        mass += probs[i]
    return sorted(i for i in range(len(row)) if probs[i] >= probs[kept[-1]] or i in kept)


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
        keep = [reference(r, 0.7) for r in x.tolist()]
        for b in range(2):
            for v in range(30):
                got, want = out[b, v].item(), (x[b, v].item() if v in keep[b] else float("-inf"))
                expect(got == want, f"kept logits stay as they are (the softmax of the result renormalizes them): "
                       f"row {b}, token {v}: expected {'the logit ' + fmt(want) if v in keep[b] else '-inf'}, got {fmt(got)}")

    def batch():
        x = torch.randn(4, 50, generator=torch.Generator().manual_seed(71)) * torch.tensor([[0.5], [1.0], [2.0], [4.0]])
        for b, (row, got) in enumerate(zip(x.tolist(), kept(m.top_p_filter(x.clone(), 0.8), "batch"))):
            want = reference(row, 0.8)
            expect(got == want, f"every row has its own nucleus: row {b} of 4 (p = 0.8): expected {len(want)} kept "
                   f"tokens {want}, got {len(got)}: {got}")

    def randoms():
        g, rng, n = torch.Generator().manual_seed(72), random.Random(73), 0
        while n < 40:
            row = (torch.randn(1, 20, generator=g) * rng.uniform(0.3, 3)).tolist()[0]
            p = rng.uniform(0.05, 0.99)
            if far_from_boundary(row, p):
                n += 1
                got, want = kept(m.top_p_filter(torch.tensor([row]), p), "random")[0], reference(row, p)
                expect(got == want, f"random case {n} (20 tokens, p = {p:.4f}): expected kept {want}, got {got}")

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


def run_case(m, c):
    x, p = torch.tensor(c["logits"], dtype=torch.float32), float(c["p"])
    x = x[None] if x.dim() == 1 else x
    for b, (row, got) in enumerate(zip(x.tolist(), kept(m.top_p_filter(x.clone(), p), "case"))):
        expect(got == reference(row, p), f"row {b} (p = {p}): expected kept {reference(row, p)}, got {got}")
