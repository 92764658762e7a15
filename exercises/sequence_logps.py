"""
Exercise sequence_logps: the label mask, the core of every SFT-style loss.

Write losses.sequence_logps(logits, targets, mask) -> (logps, n_tokens): for every row, the sum of
log softmax(logits[t])[targets[t]] over the positions where mask[t] is True, and how many there are.
Prompt tokens and padding must count for nothing: a dropped mask silently trains on prompts.

Hidden cases (--cases): {"name": ..., "seed": int, "N": rows, "T": positions, "V": vocabulary,
"scale": logit size, "n_prompt": [per row], "length": [per row]}; the checker builds random logits
and targets from the seed and the mask from n_prompt and length (targets[t] scored iff
n_prompt <= t + 1 < length + 1, data/format.py's convention), and compares value and gradient.
"""
import math

import torch

from exercises.lib import Fail, backward, close, diagnose, expect, fmt, grad_of

TITLE = "the label mask: sum the log-probs of the scored (response) tokens only"
TIME = 20
OBJECTIVE = "know which tokens an SFT-style loss learns from, and compute their log-probs exactly and stably"
READ = (("data/format.py", "collate"), ("docs/ALGORITHMS.md", "Log-probabilities of a response"))
TARGETS = (("losses", "sequence_logps"),)
NEEDS = ("sequence_logps",)


def case(seed, N=4, T=6, V=7, scale=3.0, n_prompt=(1, 3, 2, 99), length=(6, 5, 3, 6), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(N, T, V, generator=g, dtype=torch.float64) * scale).to(dtype)
    targets = torch.randint(0, V, (N, T), generator=g)
    mask = torch.zeros(N, T, dtype=torch.bool)
    for n in range(N):  # row 3 of the default case is all prompt: nothing scored
        for t in range(min(length[n], T)):
            mask[n, t] = t + 1 >= n_prompt[n]  # collate's convention: targets[t] scored iff t + 1 >= n_prompt
    return logits, targets, mask


def reference(logits, targets, mask, scored=None):
    """Python loop, float64: the sum over scored t of logits[t, y_t] - log sum_v exp(logits[t, v]).
    scored(n, t) overrides which positions count (to compute what a mistake would give)."""
    out, cnt = [], []
    for n in range(logits.shape[0]):
        tot, c = 0.0, 0
        for t in range(logits.shape[1]):
            if (scored(n, t) if scored else mask[n, t]):
                row = [float(v) for v in logits[n, t].double()]
                m = max(row)
                tot += row[int(targets[n, t])] - (m + math.log(sum(math.exp(v - m) for v in row)))
                c += 1
        out.append(tot)
        cnt.append(c)
    return out, cnt


def call(m, logits, targets, mask):
    out = m.sequence_logps(logits, targets, mask)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise Fail(f"sequence_logps should return a pair (logps, n_tokens); got {type(out).__name__}")
    return out


def mistakes(logits, targets, mask):
    """What the usual mistakes compute on this case, each with the message that names it."""
    want, cnt = reference(logits, targets, mask)
    return [(reference(logits, targets, mask, lambda n, t: True)[0],
             "the mask is ignored: prompt and padding positions are summed too"),
            ([w / max(c, 1) for w, c in zip(want, cnt)], "logps is the SUM over the scored tokens, not their mean"),
            (reference(logits, targets, mask, lambda n, t: t + 1 < mask.shape[1] and bool(mask[n, t + 1]))[0],
             "the mask is shifted by one position: mask[t] already says whether targets[t] is scored")]


def checks(m, opts):
    def value():
        logits, targets, mask = case(0)
        lp, _ = call(m, logits, targets, mask)
        diagnose(lp, reference(logits, targets, mask)[0], "logps (summed over scored positions)",
                 mistakes(logits, targets, mask), 1e-5)

    def counts():
        logits, targets, mask = case(1)
        _, n = call(m, logits, targets, mask)
        expect(isinstance(n, torch.Tensor) and not n.is_floating_point(), "n_tokens should be an integer tensor "
               f"(the number of scored positions), got {n.dtype if isinstance(n, torch.Tensor) else type(n).__name__}")
        close(n, reference(logits, targets, mask)[1], "n_tokens (scored tokens per row)", 0)

    def masked_free():
        logits, targets, mask = case(2)
        want = reference(logits, targets, mask)[0]
        g = torch.Generator().manual_seed(3)
        l2, y2 = logits.clone(), targets.clone()
        l2[~mask] = torch.randn(int((~mask).sum()), logits.shape[-1], generator=g, dtype=torch.float64) * 100
        l2[1, 0, :] = -math.inf  # a prompt position whose every logit is -inf
        l2[3] = -math.inf  # a row with nothing scored (its logps must be 0)
        y2[~mask] = (y2[~mask] + 3) % logits.shape[-1]
        lp, _ = call(m, l2, y2, mask)
        expect(bool(torch.isfinite(torch.as_tensor(lp)).all()),
               "multiplying by the mask turns a prompt position's -inf into NaN (0 * -inf = NaN): select with "
               f"torch.where(mask, x, 0) instead (logps = {fmt(lp)})")
        close(lp, want, "logps after scrambling the prompt and padding positions (they must not matter)", 1e-5)

    def gradient():
        logits, targets, mask = case(4)
        x = logits.clone().requires_grad_(True)
        lp, _ = call(m, x, targets, mask)
        backward(torch.as_tensor(lp).sum(), "sequence_logps")
        want = torch.softmax(logits, -1).neg()  # d/dlogits of log softmax[y] = onehot(y) - softmax
        want.scatter_add_(-1, targets[..., None], torch.ones_like(want[..., :1]))
        want[~mask] = 0.0
        close(grad_of(x, "logits"), want, "d sum(logps) / d logits (onehot - softmax at scored positions, 0 elsewhere)", 1e-5)

    def bf16():
        logits, targets, mask = case(5, V=1000, dtype=torch.bfloat16)
        lp, _ = call(m, logits, targets, mask)
        expect(isinstance(lp, torch.Tensor) and lp.dtype in (torch.float32, torch.float64),
               "logps from bfloat16 logits should come back in float32: upcast (logits.float()) before "
               f"log_softmax, got {lp.dtype if isinstance(lp, torch.Tensor) else type(lp).__name__}")
        close(lp, reference(logits, targets, mask)[0], "log_softmax computed in bfloat16 loses the sums "
              "(8 bits of mantissa): upcast the logits to float32 first; logps from bfloat16 logits", 2e-4)

    return [("value equals a python loop over the scored positions", value),
            ("n_tokens counts the scored positions (integers)", counts),
            ("prompt and padding positions do not count, even at -inf", masked_free),
            ("gradient: onehot - softmax at scored positions, zero elsewhere", gradient),
            ("bfloat16 logits are summed in float32", bf16)]


def run_case(m, c):
    N = int(c.get("N", 4))
    kw = {k: c[k] for k in ("T", "V", "scale") if k in c}
    logits, targets, mask = case(int(c.get("seed", 0)), N=N, n_prompt=c.get("n_prompt", [1] * N),
                                 length=c.get("length", [99] * N), **kw)
    x = logits.clone().requires_grad_(True)
    lp, n = call(m, x, targets, mask)
    want, cnt = reference(logits, targets, mask)
    diagnose(lp, want, "logps", mistakes(logits, targets, mask), 1e-5)
    close(n, cnt, "n_tokens", 0)
