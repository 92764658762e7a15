"""Your KV-cache decoder (exercise kv_cache): check it with  python -m exercises.check kv_cache --impl THIS_FILE
(in the student edition, exercises/yours/kv_cache.py is checked without --impl)."""
import math

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
