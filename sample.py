"""
Sampling from a GPT with its KV cache: how the next token is chosen, and how a batch of prompts of
different lengths is continued at once.

Prompts are left-padded into one (B, T) batch, prefilled once, then decoded one token per step; a
row that emits <|endoftext|> is finished (it is fed a pad token from then on and its output is
frozen). Each token is drawn by inverse-CDF sampling with uniforms drawn up front, (B, N): a row's
tokens depend only on its own uniforms and logits, never on which rows share its batch. Temperature
0 means greedy (argmax, first index on ties). top-k works on the k candidates only. DFT's negatives
(negatives.py) are drawn with this code, one seeded generator per example.

    Q=$'Question: Leo has 9 cards. He loses 4. How many cards does Leo have now?\\nAnswer:'
    python sample.py --prompt "$Q" --temperature 0    # the shipped base model answers it
    python sample.py --init gpt2 --prompt "The meaning of life is" --num 3 --temperature 0.8
    python sample.py --init scratch --size tiny --prompt "hello"     # random weights: code path
    python -m pytest -q tests/test_sample.py
"""

import time
from dataclasses import dataclass

import torch

from common import (DEVICE_HELP, ArgumentParser, amp_dtype, autocast, fraction, nonneg_float,
                    nonneg_int, positive_int, print0, run_main, setup, teardown)
from data.tokenizer import EOT, get_tokenizer
from model import DEFAULT_INIT, PRESETS, load_model

# decode steps between host syncs asking "is every row done?" (a finished batch decodes <= 7 extra)
CHECK_EVERY = 8

# -----------------------------------------------------------------------------
# choosing the next token


@dataclass(frozen=True)
class Decoding:
    """How new tokens are chosen (and computed)."""

    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # keep the k most likely tokens (0: off)
    top_p: float = 1.0  # keep the most likely tokens up to this probability mass (1: off)
    stop_at_eos: bool = True  # False: every row runs to max_new_tokens (benchmarks)
    # decode with model.decode_static (fixed shapes: torch.compile, CUDA graphs)
    static: bool = False

    def __post_init__(self):
        check_settings(self.temperature, self.top_k, self.top_p)


def check_settings(temperature, top_k, top_p):
    if not temperature >= 0:  # NaN fails this too
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 1 (0 = off), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


GREEDY = Decoding(temperature=0.0)


def top_k_filter(logits, k):
    """Keep the k largest logits of each row, -inf elsewhere. Exactly k survive: on a tie at the
    k-th value, the tied tokens torch.topk returns (the same ones every call on a given device)."""
    vals, idx = logits.topk(min(k, logits.shape[-1]), dim=-1)  # (B, k) each
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, vals)


def top_p_filter(logits, p):
    """Nucleus: keep the smallest set of most likely tokens whose probability sums to >= p (the top
    token always). Tokens tied with the last kept one are all kept: deterministic, independent of
    token order."""
    probs = logits.softmax(-1)  # (B, V)
    sorted_p = probs.sort(-1, descending=True).values  # (B, V)
    # the mass of the tokens ranked above each one
    before = sorted_p.cumsum(-1) - sorted_p  # (B, V)
    n_keep = (before < p).sum(-1, keepdim=True).clamp(min=1)  # (B, 1)
    return logits.masked_fill(probs < sorted_p.gather(-1, n_keep - 1), float("-inf"))


def pick(logits, uniforms, how):
    """Next token per row from logits (B, V) and uniforms (B,) in [0, 1): inverse-CDF sampling."""
    if how.temperature == 0:
        return logits.argmax(-1)  # (B,)
    logits = logits.float() / how.temperature  # (B, V)
    candidates = None
    if how.top_k:
        # the same as top_k_filter, but then work on the k candidates only, best first
        logits, candidates = logits.topk(min(how.top_k, logits.shape[-1]), dim=-1)  # (B, k) each
    if how.top_p < 1:
        logits = top_p_filter(logits, how.top_p)
    # float64, so rare tokens keep their share
    probs = logits.softmax(-1, dtype=torch.float64)  # (B, K)
    cdf = probs.cumsum(-1)  # (B, K)
    # the first index whose cdf exceeds the uniform
    targets = (uniforms.double() * cdf[:, -1])[:, None]  # (B, 1)
    j = torch.searchsorted(cdf, targets, right=True)[:, 0]  # (B,)
    j = j.clamp(max=probs.shape[1] - 1)
    # a zero-probability token is reachable only through rounding at a flat stretch of the cdf
    j = torch.where(probs.gather(1, j[:, None])[:, 0] > 0, j, probs.argmax(-1))
    return j if candidates is None else candidates.gather(1, j[:, None])[:, 0]


# -----------------------------------------------------------------------------
# continuing a batch of prompts


@torch.no_grad()
def sample_rows(model, prompts, uniforms, how, amp=None):
    """prompts: B token lists; uniforms (B, N), one per row and step -> B x (new_ids,
    ended_with_eos). A prompt longer than block_size - N keeps its END. amp: the autocast dtype (the
    KV cache is kept in it too), None = the weights' dtype."""
    decode = model.decode_static if how.static else model.decode
    eos_id = EOT if how.stop_at_eos else -1
    B, N = uniforms.shape
    keep = model.config.block_size - N  # prompt + new tokens must fit in block_size
    prompts = [list(p)[-keep:] for p in prompts]
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt: start it with <|endoftext|> for unconditional samples")
    dev = model.lm_head_weight.device
    T = max(len(p) for p in prompts)
    idx = torch.full((B, T), EOT, dtype=torch.long)  # (B, T), left-padded
    valid = torch.zeros(B, T, dtype=torch.bool)  # (B, T)
    for r, p in enumerate(prompts):
        idx[r, T - len(p) :], valid[r, T - len(p) :] = torch.tensor(p), True
    cache = model.new_cache(B, T + N, dtype=amp)
    with autocast(dev, amp):
        logits = model.prefill(idx.to(dev), valid.to(dev), cache)  # (B, V)
    uniforms = uniforms.to(dev)
    out = torch.full((B, N), EOT, dtype=torch.long, device=dev)  # (B, N)
    done = torch.zeros(B, dtype=torch.bool, device=dev)  # (B,)
    for t in range(N):
        tok = torch.where(done, EOT, pick(logits, uniforms[:, t], how))  # (B,)
        out[:, t] = tok
        done |= tok == eos_id
        # the only host sync: every CHECK_EVERY steps, stop once every row has ended
        if t == N - 1 or ((t + 1) % CHECK_EVERY == 0 and bool(done.all())):
            break
        # finished rows are fed EOT as a pad; their output is ignored
        with autocast(dev, amp):
            logits = decode(tok, cache)  # (B, V)
    result = []
    for row in out.tolist():
        n = row.index(eos_id) if eos_id in row else N
        result.append((row[:n], n < N))
    return result


def generate(model, prompts, max_new_tokens, how=GREEDY, generator=None, amp=None):
    """Continue every prompt (a list of token-id lists, any lengths) in one batch.

    Returns a list of (new_ids without the EOT, ended_with_eos). Same generator seed + model +
    inputs = same samples. A prompt is never cut to make room: max_new_tokens is capped so that the
    longest prompt and its new tokens fit in block_size (only a prompt of block_size tokens or more
    keeps its end). Host syncs: one every CHECK_EVERY steps. amp: as in sample_rows."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    N = fitting_new_tokens(model, prompts, max_new_tokens)
    uniforms = torch.rand(len(prompts), N, generator=generator, dtype=torch.float64)  # (B, N)
    return sample_rows(model, prompts, uniforms, how, amp)


def fitting_new_tokens(model, prompts, max_new_tokens):
    """The new tokens that fit after the longest prompt in block_size (at least 1)."""
    longest = max(len(p) for p in prompts)
    return max(1, min(max_new_tokens, model.config.block_size - longest))


# -----------------------------------------------------------------------------
# command line


def get_args(argv=None):
    p = ArgumentParser(description="Sample continuations of a prompt from a GPT.")
    p.add_argument("--init", default=DEFAULT_INIT, help="model: preset (gpt2, gpt2-medium, ...: "
                   "downloaded), .safetensors file, checkpoint directory, or 'scratch' for random "
                   "weights of --size")
    p.add_argument("--size", default="nano", choices=list(PRESETS),
                   help="model size for --init scratch")
    p.add_argument("--prompt", default="",
                   help="text to continue ('' = unconditional, from <|endoftext|>)")
    p.add_argument("--num", type=positive_int, default=3, help="number of samples")
    p.add_argument("--max-new-tokens", type=positive_int, default=100, help="tokens per sample")
    p.add_argument("--temperature", type=nonneg_float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=nonneg_int, default=50,
                   help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=fraction, default=1.0,
                   help="nucleus: keep the most likely tokens up to this mass")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    args = p.parse_args(argv)
    args.how = Decoding(args.temperature, args.top_k, args.top_p)
    return args


def main(argv=None):
    args = get_args(argv)
    _, _, device = setup(args.device)
    model = load_model(args.init, device, args.size, args.seed).eval()
    tok = get_tokenizer()
    ids = tok.encode_ordinary(args.prompt) or [EOT]
    print0(f"{args.init} ({model.num_params() / 1e6:.1f}M parameters, {device}), temperature "
           f"{args.temperature}, top-k {args.top_k}, top-p {args.top_p}, seed {args.seed}")
    n_new = fitting_new_tokens(model, [ids], args.max_new_tokens)
    if n_new < args.max_new_tokens:
        print0(f"--max-new-tokens {args.max_new_tokens}: only {n_new} fit after the prompt's "
               f"{len(ids)} tokens in the model's {model.config.block_size} positions; sampling "
               f"{n_new}")
    print0("--- prompt ---\n" + (args.prompt or "(none: starting from <|endoftext|>)"))
    t0 = time.time()
    gen = torch.Generator().manual_seed(args.seed)
    samples = generate(model, [ids] * args.num, n_new, args.how, gen, amp_dtype(device))
    dt = time.time() - t0  # generate ends with .tolist(): the device is done
    for k, (new, eos) in enumerate(samples, 1):
        end = "ended with <|endoftext|>" if eos else "stopped at --max-new-tokens"
        print0(f"--- sample {k} of {args.num} ({len(new)} tokens, {end}) ---\n{tok.decode(new)}")
    n_tok = sum(len(new) + eos for new, eos in samples)
    print0(f"--- {args.num} samples, {n_tok} new tokens in {dt:.2f} s: {n_tok / dt:,.0f} tokens/s "
           "---")
    teardown()


if __name__ == "__main__":
    run_main(main)
