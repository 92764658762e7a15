"""
Worked solution of the kv_cache exercise: greedy decoding with a KV cache written from scratch.

    python -m exercises.check kv_cache --impl exercises/solutions/kv_cache.py

The idea: in a causal transformer the keys and values of a position never change once computed
(position t only ever attends to positions <= t). So keep every layer's keys and values, and for a
new token compute only ITS query, key and value, attend over the cached keys plus its own, and append.
Each token then goes through the network once: generating n tokens after a T-token prompt costs
O(T + n) token-passes instead of O(n * (T + n)) for the plain loop that re-runs the whole sequence.

The project's own cache (model.py: KVCache, GPT._step/prefill/decode) does the same with
preallocated buffers written by column, and handles padded batches of different prompt lengths;
this one keeps growing tensors and assumes every prompt of the batch has the same length.
"""
import math

import torch


@torch.no_grad()
def greedy_decode(model, idx, max_new_tokens):
    B, T = idx.shape
    H = model.config.n_head
    cache = [None] * len(model.h)  # per layer: (keys, values), each (B, H, t, hd), grown every step

    def forward(tokens, start):
        """tokens (B, t) at positions start .. start+t-1, through every layer with the cache -> logits (B, V)
        of the last one. The cache already holds positions 0 .. start-1."""
        t = tokens.shape[1]
        pos = torch.arange(start, start + t, device=tokens.device)
        x = model.wte(tokens) + model.wpe(pos)  # (B, t, C)
        C = x.shape[-1]
        hd = C // H
        # query i sits at position start+i: it may see keys 0 .. start+i (all cached ones, and the new ones up to itself)
        allowed = torch.ones(t, start + t, dtype=torch.bool, device=tokens.device).tril(diagonal=start)  # (t, start+t)
        for layer, block in enumerate(model.h):
            q, k, v = block.attn.c_attn(block.ln_1(x)).split(C, dim=2)  # (B, t, C) each
            q, k, v = (z.view(B, t, H, hd).transpose(1, 2) for z in (q, k, v))  # (B, H, t, hd)
            if cache[layer] is not None:
                k = torch.cat([cache[layer][0], k], dim=2)  # (B, H, start+t, hd)
                v = torch.cat([cache[layer][1], v], dim=2)
            cache[layer] = (k, v)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)  # (B, H, t, start+t)
            att = att.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
            y = (att @ v).transpose(1, 2).reshape(B, t, C)  # (B, t, C): the heads side by side again
            x = x + block.attn.c_proj(y)
            x = x + block.mlp(block.ln_2(x))
        h = model.ln_f(x[:, -1])  # (B, C): only the last position's next-token logits are needed
        return h @ model.lm_head_weight.t()  # (B, V)

    logits = forward(idx, 0)  # prefill: the whole prompt in one pass, filling the cache
    new, steps = [], []
    for i in range(max_new_tokens):
        tok = logits.argmax(-1)  # (B,)
        new.append(tok)
        steps.append(logits)
        if i + 1 < max_new_tokens:  # the last token is returned, never fed
            logits = forward(tok[:, None], T + i)  # decode: one token per row
    return torch.stack(new, dim=1), torch.stack(steps, dim=1)  # (B, n), (B, n, V)
