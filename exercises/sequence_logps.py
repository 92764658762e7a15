"""
Exercise sequence_logps: the label mask, the core of every SFT-style loss.

Write losses.sequence_logps(logits, targets, mask) -> (logps, n_tokens): for every row, the sum of
log softmax(logits[t])[targets[t]] over the positions where mask[t] is True, and how many there are.
Prompt tokens and padding must count for nothing: a dropped mask silently trains on prompts.

    python -m exercises.check sequence_logps

Cases (--cases, and the public ones in exercises/cases/sequence_logps.json): {"name": ..., "seed":
int, "N": rows, "T": positions, "V": vocabulary, "scale": logit size, "n_prompt": [per row],
"length": [per row]}, or explicit {"logits": [N][T][V], "targets": [N][T], "n_prompt", "length"};
the mask comes from n_prompt and length (targets[t] scored iff n_prompt <= t + 1 < length + 1,
data/format.py's convention). Value, counts and gradient are compared.
"""
import math

import torch

from exercises.lib import Fail, backward, case_checks, close, diagnose, expect, fmt, grad_of, mistakes_of

TITLE = "the label mask: sum the log-probs of the scored (response) tokens only"
TIME = 20
OBJECTIVE = "know which tokens an SFT-style loss learns from, and compute their log-probs exactly and stably"
READ = (("data/format.py", "collate"), ("docs/ALGORITHMS.md", "Log-probabilities of a response"))
TARGETS = (("losses", "sequence_logps"),)
NEEDS = ("sequence_logps",)


def mask_of(n_prompt, length, N, T):
    mask = torch.zeros(N, T, dtype=torch.bool)
    for n in range(N):
        for t in range(min(length[n], T)):
            mask[n, t] = t + 1 >= n_prompt[n]  # collate's convention: targets[t] scored iff t + 1 >= n_prompt
    return mask


def build(c, dtype=torch.float64):
    """A case's inputs: (logits, targets, mask), from its seed or given explicitly."""
    if "logits" in c:
        logits, targets = torch.tensor(c["logits"], dtype=dtype), torch.tensor(c["targets"])
    else:
        N, T, V = int(c.get("N", 4)), int(c.get("T", 6)), int(c.get("V", 7))
        g = torch.Generator().manual_seed(int(c.get("seed", 0)))
        logits = (torch.randn(N, T, V, generator=g, dtype=torch.float64) * float(c.get("scale", 3.0))).to(dtype)
        targets = torch.randint(0, V, (N, T), generator=g)
    N, T = targets.shape
    return logits, targets, mask_of(c.get("n_prompt", [1] * N), c.get("length", [T] * N), N, T)


def call(m, logits, targets, mask):
    out = m.sequence_logps(logits, targets, mask)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise Fail(f"sequence_logps should return a pair (logps, n_tokens); got {type(out).__name__}")
    return out


def gradient_property(logits, targets, mask, got_grad):
    """d sum(logps) / d logits = onehot(target) - softmax at the scored positions, 0 elsewhere."""
    want = torch.softmax(logits.double(), -1).neg()
    want.scatter_add_(-1, targets[..., None], torch.ones_like(want[..., :1]))
    want[~mask] = 0.0
    close(got_grad, want, "d sum(logps) / d logits (onehot - softmax at scored positions, 0 elsewhere)", 1e-5,
          "the gradient does not match the values: a position counted that should not be, or a "
          "no-grad step on the way")


def compare(m, c, want):
    """The answer on case c against want = {"logps", "n_tokens", "mistakes"}; and its gradient."""
    logits, targets, mask = build(c)
    x = logits.clone().requires_grad_(True)
    lp, n = call(m, x, targets, mask)
    expect(isinstance(lp, torch.Tensor) and bool(torch.isfinite(lp).all()), "a non-finite log-prob: "
           "log(softmax(x)) underflows to log(0) = -inf for a token far below the top one; use "
           f"log_softmax, which stays in log space (logps = {fmt(lp)})")
    diagnose(lp, want["logps"], "logps (summed over scored positions)", mistakes_of(want, "logps"), 1e-5)
    close(n, want["n_tokens"], "n_tokens (scored tokens per row)", 0, "count the positions where mask is True")
    backward(lp.sum(), "sequence_logps")
    gradient_property(logits, targets, mask, grad_of(x, "logits"))


def checks(m, opts):
    def counts():
        logits, targets, mask = build({"seed": 1, "n_prompt": [1, 3, 2, 99], "length": [6, 5, 3, 6]})
        _, n = call(m, logits, targets, mask)
        expect(isinstance(n, torch.Tensor) and not n.is_floating_point(), "n_tokens should be an integer tensor "
               f"(the number of scored positions), got {n.dtype if isinstance(n, torch.Tensor) else type(n).__name__}")
        close(n, mask.sum(1), "n_tokens (scored tokens per row)", 0, "count the positions where mask is True")

    def masked_free():
        logits, targets, mask = build({"seed": 2, "n_prompt": [1, 3, 2, 99], "length": [6, 5, 3, 6]})
        want, _ = call(m, logits.clone(), targets.clone(), mask)
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
        close(lp, want, "logps after scrambling the prompt and padding positions", 1e-5,
              "the masked positions change the result: the mask is ignored, or shifted by one position")
        close(lp[3], 0.0, "logps of a row with nothing scored", 1e-9, "a row without scored tokens sums to 0")

    def bf16():
        logits, targets, mask = build({"seed": 5, "V": 1000}, dtype=torch.bfloat16)
        lp, _ = call(m, logits, targets, mask)
        expect(isinstance(lp, torch.Tensor) and lp.dtype in (torch.float32, torch.float64),
               "logps from bfloat16 logits should come back in float32: upcast (logits.float()) before "
               f"log_softmax, got {lp.dtype if isinstance(lp, torch.Tensor) else type(lp).__name__}")
        ref, _ = call(m, logits.double(), targets, mask)  # your own function, on the same numbers in float64
        close(lp, ref, "logps from bfloat16 logits against the same logits in float64", 2e-4,
              "log_softmax computed in bfloat16 loses the sums (8 bits of mantissa): upcast the logits to "
              "float32 first")

    return case_checks("sequence_logps", compare, m) + [
        ("n_tokens counts the scored positions (integers)", counts),
        ("prompt and padding positions do not count, even at -inf", masked_free),
        ("bfloat16 logits are summed in float32", bf16)]
