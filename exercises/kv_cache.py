"""
Exercise kv_cache: greedy decoding with a KV cache you write yourself.

Your file defines greedy_decode(model, idx, max_new_tokens) -> (tokens (B, n), logits (B, n, V)) for a
model.GPT and a (B, T) batch of prompts of equal length: the same numbers as the plain loop
    for _ in range(n): logits = model(idx)[:, -1]; idx = cat([idx, logits.argmax(-1, keepdim=True)], 1)
but with every token going through the network once. The checker switches off model(...), its
prefill/decode paths and the forward of Block and CausalSelfAttention (which hold the project's
cache): build the pass from the parts (wte, wpe, ln_1, attn.c_attn, attn.c_proj, ln_2, mlp, ln_f,
lm_head_weight).

    python -m exercises.check kv_cache

Cases (--cases): {"name": ..., "seed": int (the random model), "prompts": [[ids], ...] (equal
lengths, ids < 101), "n": new tokens}; logits and tokens are compared with the full forward's.
"""
import math

import torch

from exercises.lib import Fail, expect

TITLE = "greedy decoding with a KV cache you write yourself"
TIME = 45
OBJECTIVE = "know what a transformer recomputes and what it may keep: positions, causal mask, heads, one pass per token"
READ = (("model.py", "CausalSelfAttention"), ("model.py", "Block"), ("model.py", "KVCache"),
        ("sample.py", "sample_rows"))
TARGETS = ()
NEEDS = ("greedy_decode",)
VERIFIED = True  # cases are compared with the full forward: they need no expected outputs


def random_model(seed=0):
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
def greedy_full(model, idx, n):
    """The plain, obviously correct loop: the whole sequence through model(idx) for every new token."""
    T, logits = idx.shape[1], []
    for _ in range(n):
        logits.append(model(idx)[:, -1])  # (B, V)
        idx = torch.cat([idx, logits[-1].argmax(-1, keepdim=True)], dim=1)
    return idx[:, T:], torch.stack(logits, 1)


class Forbidden:
    def __init__(self, what):
        self.what = what

    def __call__(self, *a, **kw):
        raise Fail(f"{self.what} is off limits in this exercise: run the blocks' parts yourself "
                   "(wte, wpe, ln_1, attn.c_attn, attn.c_proj, ln_2, mlp, ln_f, lm_head_weight) and keep your own cache")


def run(m, model, idx, n):
    """The student's greedy_decode with the model's own paths switched off, counting the token positions
    that go through each layer's attention input projection."""
    counts = [0] * len(model.h)
    hooks = [blk.attn.c_attn.register_forward_hook(
        lambda mod, inp, out, i=i: counts.__setitem__(i, counts[i] + inp[0].shape[:-1].numel()))
        for i, blk in enumerate(model.h)]
    off = ["forward", "hidden", "logps", "prefill", "decode", "decode_static", "_step", "new_cache"]
    for name in off:
        setattr(model, name, Forbidden(f"model.{name}"))
    for blk in model.h:
        blk.forward = Forbidden("Block.forward")
        blk.attn.forward = Forbidden("CausalSelfAttention.forward (it has the project's cache inside)")
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


def same(m, seed, idx, n, what):
    model = random_model(seed)
    want_tok, want_logits = greedy_full(model, idx, n)
    tok, logits, _ = run(m, model, idx, n)
    B = idx.shape[0]
    expect(tuple(tok.shape) == (B, n), f"{what}: expected new tokens of shape {(B, n)}, got {tuple(tok.shape)}")
    expect(tuple(logits.shape) == tuple(want_logits.shape),
           f"{what}: expected logits of shape {tuple(want_logits.shape)}, got {tuple(logits.shape)}")
    for i in range(n):  # the first step that differs says the most: the prompt pass (i = 0) or a decode step
        if not torch.allclose(logits[:, i].double(), want_logits[:, i], rtol=1e-7, atol=1e-7):
            err = (logits[:, i].double() - want_logits[:, i]).abs().max().item()
            raise Fail(("the prompt pass is wrong (step 0): check positions, the causal mask, the 1/sqrt(head_dim) "
                        "scale and the head split" if i == 0 else
                        "the prompt pass is right but a decode step is not: check the new token's position "
                        "(start + t, not 0) and that it attends to the cached keys AND its own")
                       + f" ({what}: the logits of new token {i} differ from the full forward's by up to {err:.3g})")
    expect(torch.equal(tok.long(), want_tok), f"{what}: the logits match but the tokens do not: pick argmax(-1) of each "
           f"step's logits. expected {want_tok.tolist()}, got {tok.tolist()}")


def checks(m, opts):
    def batch():
        idx = torch.randint(0, 101, (3, 5), generator=torch.Generator().manual_seed(90))
        same(m, 0, idx, 12, "3 prompts of 5 tokens, 12 new tokens")

    def one_token():
        same(m, 1, torch.tensor([[7]]), 20, "a one-token prompt, 20 new tokens")

    def once():
        model, (B, T, n) = random_model(2), (2, 6, 10)
        idx = torch.randint(0, 101, (B, T), generator=torch.Generator().manual_seed(91))
        _, _, counts = run(m, model, idx, n)
        most = B * (T + n)  # each prompt token and each new token once (feeding the last new token is allowed)
        expect(all(c <= most for c in counts), f"the whole sequence is recomputed every step (no cache): tokens "
               f"through each layer's c_attn: {counts}; with a cache each position is computed once, at most "
               f"B * (T + n) = {most}")
        expect(all(c >= B * (T + n - 1) for c in counts), f"tokens through each layer's c_attn: {counts}; expected at "
               f"least B * (T + n - 1) = {B * (T + n - 1)} (call block.attn.c_attn(x) as a module, not F.linear on its "
               "weight, so the checker can count)")

    return [("same logits and tokens as the full-forward greedy loop (3 prompts)", batch),
            ("a one-token prompt", one_token),
            ("each token goes through the network once", once)]


def compare(m, c, want):
    """Case c (seed, prompts, n) against the full forward's greedy loop; no expected output needed."""
    same(m, int(c.get("seed", 0)), torch.tensor(c["prompts"]), int(c.get("n", 8)), c.get("name", "case"))
