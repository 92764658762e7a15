"""
A self-contained GPT-2 in plain PyTorch, that reads and writes the public GPT-2 safetensors files.

GPT-2 is a decoder-only transformer: token + learned position embeddings, n_layer pre-LayerNorm
blocks (causal self-attention, then a 4x-wide GELU MLP, each added to a residual stream), a final
LayerNorm, and an output layer that reuses the token embedding matrix ("tied" weights).

Three ways through the network, all sharing the same weights:
  model(idx)                  full causal forward -> logits (B, T, V). The plain reference.
  model.logps(x, y, mask)     per-sequence log-probs of the scored tokens, computing the output
                              layer only where the mask is True (training and scoring use this).
  model.prefill / .decode     incremental decoding with a KV cache (sample.py uses this).

Weights: GPT.from_pretrained(source) takes a preset name ("gpt2", "gpt2-medium", ... downloaded on
demand from the hub), a .safetensors file, or a directory with model.safetensors (+ config.json).
save_pretrained(dir) writes the same layout back, so the common HF loader opens our checkpoints.

    python model.py  # the shipped base model (data/base) answers a task prompt
    python model.py --init gpt2 --prompt "The meaning of life is"  # fetches GPT-2 124M on first use
    python -m pytest -q tests/test_model.py
"""
import hashlib
import json
import math
import os
import struct
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from common import DEVICE_HELP, ArgumentParser, atomic_path, read_json, run_main, setup
from data.download import Expect, cache_dir, download, hf_url
from data.tokenizer import get_tokenizer

DEFAULT_INIT = "data/base"  # the shipped base model: the default --init of every script


@dataclass
class GPTConfig:
    block_size: int = 1024  # max sequence length (n_positions)
    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    layer_norm_epsilon: float = 1e-5


PRESETS = {
    # the public OpenAI GPT-2 checkpoints (downloadable)
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 355M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
    # small configurations, trained from scratch (--init scratch --size nano)
    "nano": dict(n_layer=4, n_head=2, n_embd=128, block_size=256),  # the CPU default base, ~7.3M
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, block_size=128),  # for tests, ~1.6M
}
HUB_PRESETS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


def config_for(name: str) -> GPTConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model size {name!r}; choose one of {', '.join(PRESETS)}")
    return GPTConfig(**PRESETS[name])


# -----------------------------------------------------------------------------
# The network


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x, kv=None, attn_mask=None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        H = self.n_head
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
        # causal attention over this sequence (attn_mask: packed sequences, see logps)
        if kv is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                               is_causal=attn_mask is None)
        # static shapes: write at a column held on the device, attend over every column
        elif torch.is_tensor(kv[2]):
            k_buf, v_buf, col = kv  # (B, H, max_len, hd) each; col (1,) long, T == 1
            k_buf.index_copy_(2, col, k)
            v_buf.index_copy_(2, col, v)
            # unwritten columns are masked
            y = F.scaled_dot_product_attention(q, k_buf, v_buf, attn_mask=attn_mask)
        else:  # write this step's keys/values into the cache, attend over everything cached so far
            k_buf, v_buf, start = kv  # (B, H, max_len, hd) each
            k_buf[:, :, start:start + T] = k
            v_buf[:, :, start:start + T] = v
            k, v = k_buf[:, :, :start + T], v_buf[:, :, :start + T]  # (B, H, start+T, hd)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # GPT-2's "gelu_new"


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.mlp = MLP(cfg)

    def forward(self, x, kv=None, attn_mask=None):
        x = x + self.attn(self.ln_1(x), kv, attn_mask)
        return x + self.mlp(self.ln_2(x))


class KVCache:
    """Preallocated keys and values of every layer, written by column, gpt-fast style.

    Rows of a batch may hold prompts of different lengths. We put every prompt in the same columns
    (padded on the left or right) and keep two things per row: which columns hold real tokens
    (`valid`, used as the attention mask, so a row never attends to padding) and the position id of
    its next token (`pos`, so position embeddings are those of the unpadded sequence). Then every
    row's logits equal those of that prompt run alone.
    """

    def __init__(self, cfg: GPTConfig, batch_size: int, max_len: int, device=None,
                 dtype=torch.float32):
        shape = (cfg.n_layer, batch_size, cfg.n_head, max_len, cfg.n_embd // cfg.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        # (B, max_len)
        self.valid = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
        self.pos = torch.zeros(batch_size, dtype=torch.long, device=device)  # (B,) next position id
        self.length = 0  # columns written so far (a python int: no host sync to read it)
        self.col = None  # decode_static's copy of length, on the device
        self.max_len = max_len


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.h = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.apply(self._init_weights)
        # GPT-2: scale residual projections by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    @property
    def lm_head_weight(self):
        return self.wte.weight  # tied: the output layer is the token embedding, (V, C)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def hidden(self, idx, pos=None, cache=None, attn_mask=None):
        """Final hidden states (after ln_f), (B, T, C). pos: (B, T) position ids, default 0..T-1."""
        B, T = idx.shape
        if pos is None:
            if T > self.config.block_size:
                raise ValueError(f"sequence of {T} tokens is longer than "
                                 f"block_size={self.config.block_size}")
            pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        for i, block in enumerate(self.h):
            kv = None if cache is None else (cache.k[i], cache.v[i], cache.length)
            x = block(x, kv, attn_mask)
        return self.ln_f(x)

    def forward(self, idx, targets=None, mask=None, pos=None, doc=None):
        """model(idx): the plain path, logits (B, T, V) at every position, causal, positions 0..T-1.
        model(x, y, mask[, pos, doc]): self.logps(...). Training calls it this way because DDP only
        arms its gradient all-reduce for calls that go through the wrapper's forward."""
        if targets is not None:
            return self.logps(idx, targets, mask, pos, doc)
        return F.linear(self.hidden(idx), self.lm_head_weight)  # (B, T, V)

    def logps(self, x, y, mask, pos=None, doc=None, chunk_tokens=4096):
        """Per-sequence summed log-probs of scored tokens, (N,) float32, and their counts (N,).

        The same numbers as losses.sequence_logps(model(x), y, mask), but the 50,257-way output
        layer, which dominates the cost of a small model, runs only at scored positions (prompt and
        padding positions never need it), in chunks so fp32 logits for the whole batch never exist.
        Packed rows (data/format.py pack): pos (R, T) holds each token's position in its own
        sequence and doc (R, T) that sequence's index (-1 = padding); attention stays inside a
        sequence, and the result has one entry per sequence, not per row.
        """
        attn = None
        if doc is not None:  # causal AND the same sequence: (R, 1, T, T)
            T = x.shape[1]
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            attn = (causal[None] & (doc[:, :, None] == doc[:, None, :]))[:, None]
        h = self.hidden(x, pos, attn_mask=attn)  # (N, T, C)
        rows, cols = mask.nonzero(as_tuple=True)  # (M,) each: the scored positions
        h_sel, y_sel = h[rows, cols], y[rows, cols]  # (M, C), (M,)
        tok_logp = []
        for s in range(0, h_sel.shape[0], chunk_tokens):
            logits = F.linear(h_sel[s:s + chunk_tokens], self.lm_head_weight).float()  # (m, V)
            picked = logits.gather(1, y_sel[s:s + chunk_tokens, None]).squeeze(1)  # (m,)
            tok_logp.append(picked - logits.logsumexp(1))
        tok_logp = torch.cat(tok_logp) if tok_logp else h.new_zeros(0, dtype=torch.float32)  # (M,)
        if doc is None:
            sums = torch.zeros(x.shape[0], device=x.device, dtype=torch.float32)  # (N,)
            return sums.index_add(0, rows, tok_logp), mask.sum(1)
        seq, n_seq = doc[rows, cols], int(doc.max()) + 1  # (M,): the sequence of each scored token
        sums = torch.zeros(n_seq, device=x.device, dtype=torch.float32)  # (S,)
        counts = torch.zeros(n_seq, device=x.device, dtype=torch.long)  # (S,)
        return sums.index_add(0, seq, tok_logp), counts.index_add(0, seq, torch.ones_like(seq))

    # --- incremental decoding -------------------------------------------------------------------

    def _step(self, idx, valid, cache):
        """Run tokens idx (B, T) through the cache at columns [length, length+T);
        return hidden (B, T, C)."""
        B, T = idx.shape
        start = cache.length
        if start + T > cache.max_len:
            raise ValueError(f"KV cache is full ({cache.max_len} columns)")
        # a row's position ids never exceed the columns written, so this bound needs no host sync
        if start + T > self.config.block_size:
            raise ValueError(f"sequence longer than block_size={self.config.block_size}")
        cache.valid[:, start:start + T] = valid
        pos = cache.pos[:, None] + valid.long().cumsum(1) - 1  # (B, T) position ids of real tokens
        cache.pos += valid.long().sum(1)
        # a query may see cached real keys and real keys up to itself; a padding query sees itself
        # only (it needs one key, else softmax over nothing gives NaN; its output is never used)
        end = start + T
        ones = torch.ones(T, end, dtype=torch.bool, device=idx.device)
        causal = ones.tril(diagonal=start)  # (T, end)
        attn_mask = causal[None] & cache.valid[:, None, :end]  # (B, T, end)
        attn_mask[:, torch.arange(T), start + torch.arange(T)] = True
        h = self.hidden(idx, pos.clamp(min=0), cache, attn_mask[:, None])  # (B, T, C)
        cache.length = end
        return h

    def prefill(self, idx, valid, cache):
        """Feed padded prompts idx (B, T) with valid (B, T) marking real tokens; logits (B, V) after
        each row's last real token. Rows may be padded on the left or the right."""
        h = self._step(idx, valid, cache)  # (B, T, C)
        # (B,) column of the last real token
        last = valid.shape[1] - 1 - valid.flip(1).long().argmax(1)
        return F.linear(h[torch.arange(h.shape[0]), last], self.lm_head_weight)  # (B, V)

    def decode_static(self, tok, cache):
        """decode() with every shape fixed, for torch.compile or CUDA graphs: attend over all
        max_len columns (the unwritten ones masked out) and write at the column held in the device
        tensor cache.col, so no shape and no python number changes from one step to the next. Same
        logits as decode()."""
        if cache.col is None:
            cache.col = torch.full((1,), cache.length, dtype=torch.long, device=tok.device)
        cache.valid.index_fill_(1, cache.col, True)
        x = self.wte(tok[:, None]) + self.wpe(cache.pos[:, None])  # (B, 1, C)
        cache.pos.add_(1)
        mask = cache.valid[:, None, None, :]  # (B, 1, 1, max_len)
        for i, block in enumerate(self.h):
            x = block(x, (cache.k[i], cache.v[i], cache.col), mask)
        cache.col.add_(1)
        cache.length += 1
        return F.linear(self.ln_f(x)[:, 0], self.lm_head_weight)  # (B, V)

    def decode(self, tok, cache):
        """Feed one new token per row, tok (B,); logits (B, V) for the token after it."""
        valid = torch.ones(tok.shape[0], 1, dtype=torch.bool, device=tok.device)
        h = self._step(tok[:, None], valid, cache)  # (B, 1, C)
        return F.linear(h[:, 0], self.lm_head_weight)  # (B, V)

    def new_cache(self, batch_size, max_len, device=None, dtype=None):
        p = self.wte.weight
        return KVCache(self.config, batch_size, max_len, device or p.device, dtype or p.dtype)

    # --- weights on disk --------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, source, device="cpu", dtype=torch.float32):
        """source: a preset name (downloaded), a .safetensors file, or a directory with
        model.safetensors."""
        path = resolve_weights(source)
        tensors = read_safetensors(path)
        config_path = os.path.join(os.path.dirname(path), "config.json")
        cfg = read_config(config_path) or infer_config(tensors, path)
        model = cls(cfg)
        model.load_state_dict(hub_to_ours(tensors, model, path))
        return model.to(device=device, dtype=dtype)

    def save_pretrained(self, out_dir, dtype=None):
        """Write model.safetensors (hub layout) + config.json into out_dir, each atomically."""
        os.makedirs(out_dir, exist_ok=True)
        tensors = {}
        for name, p in self.state_dict().items():
            t = p.detach().to("cpu", dtype or p.dtype)
            # back to Conv1D (in, out)
            tensors[name] = (t.t() if name.endswith(CONV1D) else t).contiguous()
        with atomic_path(os.path.join(out_dir, "model.safetensors")) as tmp:
            save_file(tensors, tmp, metadata={"format": "pt"})
        c = self.config
        hf_config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                     "activation_function": "gelu_new", "n_layer": c.n_layer, "n_head": c.n_head,
                     "n_embd": c.n_embd, "vocab_size": c.vocab_size, "n_positions": c.block_size,
                     "n_ctx": c.block_size, "n_inner": None,
                     "layer_norm_epsilon": c.layer_norm_epsilon, "bos_token_id": 50256,
                     "eos_token_id": 50256, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
                     "attn_pdrop": 0.0, "initializer_range": 0.02, "scale_attn_weights": True,
                     "tie_word_embeddings": True,
                     "torch_dtype": str(next(iter(tensors.values())).dtype).replace("torch.", "")}
        with atomic_path(os.path.join(out_dir, "config.json")) as tmp, open(tmp, "w") as f:
            json.dump(hf_config, f, indent=2)


# -----------------------------------------------------------------------------
# Reading the hub's files: an explicit list of rules

# GPT-2 was trained in TensorFlow with "Conv1D" layers whose weight is (in, out): the transpose of
# nn.Linear's (out, in). These four are stored transposed; everything else maps one to one.
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def resolve_weights(source: str) -> str:
    """Map --init to a model.safetensors path, downloading a hub preset on first use."""
    if source in HUB_PRESETS and not os.path.exists(source):
        d = cache_dir("models", source)
        files = (("config.json", read_config), ("model.safetensors", check_safetensors))
        for fname, verify in files:
            download(hf_url("model", f"openai-community/{source}", fname), os.path.join(d, fname),
                     desc=f"{source}/{fname}", expect=Expect(verify=verify))
        return os.path.join(d, "model.safetensors")
    if os.path.isdir(source):
        path = os.path.join(source, "model.safetensors")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{source}: directory has no model.safetensors")
        return path
    if os.path.isfile(source):
        return source
    raise FileNotFoundError(f"{source}: no such file or directory, and not one of the presets "
                            f"{', '.join(HUB_PRESETS)}")


def read_safetensors(path: str) -> dict:
    """Load every tensor of a safetensors file, with our own check of the header first so that a
    wrong or truncated file gets a message that says so. (Never torch.load: pickles run code.)"""
    check_safetensors(path)
    tensors = load_file(path)
    bad = sorted(k for k, t in tensors.items() if not t.is_floating_point())
    if bad:
        raise ValueError(f"{path}: {bad[0]} has dtype {tensors[bad[0]].dtype}; "
                         "a checkpoint holds floating-point weights")
    return tensors


def check_safetensors(path: str):
    """Raise ValueError unless path starts with a safetensors header (8-byte length + JSON) and is
    as long as that header says."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        if n is None or n > min(size - 8, 100_000_000):
            raise ValueError(f"{path}: not a safetensors file (no valid header)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"{path}: not a safetensors file (header is not JSON)") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size < 8 + n + end:
        raise ValueError(f"{path}: truncated safetensors file ({size} bytes, "
                         f"header describes {8 + n + end})")


def read_config(path: str):
    """A GPT-2 config.json -> GPTConfig (None when there is no file); ValueError naming the file
    otherwise."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            c = json.load(f)
        if c.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"activation_function {c['activation_function']!r} "
                             "is not GPT-2's gelu_new")
        return GPTConfig(block_size=int(c.get("n_positions", c.get("n_ctx", 1024))),
                         vocab_size=int(c["vocab_size"]), n_layer=int(c["n_layer"]),
                         n_head=int(c["n_head"]), n_embd=int(c["n_embd"]),
                         layer_norm_epsilon=float(c.get("layer_norm_epsilon", 1e-5)))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON file ({type(e).__name__}: {e}); "
                         "expected a GPT-2 config.json") from None
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a GPT-2 config.json (missing or invalid {e})") from None


def strip_prefix(tensors: dict) -> dict:
    return {k.removeprefix("transformer."): v for k, v in tensors.items()}


def stored_dtype(checkpoint: str) -> str:
    """The dtype a checkpoint directory's weights were saved in (its config.json's torch_dtype)."""
    config = read_json(os.path.join(checkpoint, "config.json"), "a GPT-2 config.json")
    return config.get("torch_dtype", "float32")


def infer_config(tensors: dict, path: str) -> GPTConfig:
    """The config of a bare .safetensors file (no config.json beside it). The number of heads cannot
    be read off the weights, so the shapes must be those of a preset, whose n_head is taken."""
    t = strip_prefix(tensors)
    if "wte.weight" not in t or "wpe.weight" not in t:
        raise ValueError(f"{path}: not a GPT-2 checkpoint (no wte.weight / wpe.weight)")
    V, C = t["wte.weight"].shape
    n_layer = sum(1 for k in t if k.startswith("h.") and k.endswith(".ln_1.weight"))
    same_shape = [p for p in PRESETS.values() if (p["n_layer"], p["n_embd"]) == (n_layer, C)]
    preset = same_shape[0] if same_shape else None
    if preset is None:
        raise ValueError(f"{path}: no config.json beside it, and its shapes ({n_layer} layers, "
                         f"{C} wide) are no preset's; put the model's config.json beside it (the "
                         "number of attention heads cannot be read off the weights)")
    return GPTConfig(block_size=t["wpe.weight"].shape[0], vocab_size=V, n_layer=n_layer,
                     n_head=preset["n_head"], n_embd=C)


def hub_to_ours(tensors: dict, model: GPT, path: str) -> dict:
    """Rename/transposed hub tensors into our state dict, refusing anything unexpected by name."""
    t = strip_prefix(tensors)
    # causal-mask buffers of the reference implementation: match the FULL name
    # ("h.0.attn.c_attn.bias" also ends with "attn.bias"!)
    buffers = (".attn.bias", ".attn.masked_bias")
    t = {k: v for k, v in t.items() if not (k.count(".") == 3 and k.endswith(buffers))}
    if "lm_head.weight" in t:  # HF save_pretrained may write the tied head; it must equal wte
        head = t.pop("lm_head.weight")
        if "wte.weight" in t and not torch.equal(head, t["wte.weight"]):
            raise ValueError(f"{path}: lm_head.weight differs from wte.weight; "
                             "only tied heads are supported")
    ours = model.state_dict()
    missing = sorted(set(ours) - set(t))
    unexpected = sorted(set(t) - set(ours))
    wrong = []
    out = {}
    for k in sorted(set(ours) & set(t)):
        v = t[k].t() if k.endswith(CONV1D) else t[k]
        if v.shape != ours[k].shape:
            expected = ours[k].shape[::-1] if k.endswith(CONV1D) else ours[k].shape
            wrong.append(f"{k} {tuple(t[k].shape)} (expected {tuple(expected)})")
        out[k] = v
    if missing or unexpected or wrong:
        problems = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        parts = [f"{label}: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''} ({len(names)})"
                 for label, names in problems if names]
        raise ValueError(f"{path}: not a GPT-2 checkpoint of this size; " + "; ".join(parts))
    return out


# -----------------------------------------------------------------------------
# Model flops utilization: the fraction of the GPU's peak that the model's arithmetic uses

# dense bf16 peak flop/s by device-name substring, first match wins (None: known to be ambiguous)
PEAK_BF16 = (("NVL", None), ("H100 PCIe", 756e12), ("H100 80GB HBM3", 989e12), ("H100 SXM", 989e12),
             ("H200", 989e12), ("A100", 312e12))


def peak_flops(device_name):
    for key, peak in PEAK_BF16:
        if key.lower() in device_name.lower():
            return peak
    return None


def model_flops(cfg, n_params, seqs, backward=True):
    """Model flops of one training (or, backward=False, forward) pass over seqs = [(ids, n_prompt)]:
    2 flops per multiply-add of every weight matrix at every real token, except the tied output
    layer, which runs only at scored tokens (model.logps), plus attention's 4 * n_layer * C * L^2
    per sequence of length L; backward costs twice the forward."""
    C, V = cfg.n_embd, cfg.vocab_size
    body = n_params - V * C - cfg.block_size * C  # the embeddings are lookups, not matmuls
    real, scored = sum(len(ids) - 1 for ids, _ in seqs), sum(len(ids) - n for ids, n in seqs)
    attn = sum((len(ids) - 1) ** 2 for ids, _ in seqs)  # sum over sequences of L * L
    fwd = 2 * body * real + 2 * V * C * scored + 4 * cfg.n_layer * C * attn
    return 3 * fwd if backward else fwd


def load_model(init, device="cpu", size="nano", seed=0):
    """--init of every script: a preset to download (gpt2, ...), a .safetensors file, a checkpoint
    directory, or 'scratch' for random weights of --size (seeded)."""
    if init == "scratch":
        torch.manual_seed(seed)
        return GPT(config_for(size)).to(device)
    if init == DEFAULT_INIT and not os.path.exists(init):
        raise FileNotFoundError(f"{init}: the shipped base model is missing; restore it with "
                                f"`git checkout -- {init}` (data/base/README.md shows how it was "
                                "made), or pass --init gpt2 to download GPT-2 124M")
    return GPT.from_pretrained(init, device=device)


def weights_sha256(model, init):
    """What a cache of the model's outputs depends on: the sha256 of the model.safetensors bytes
    when init is a file or directory on disk, else of the weights in memory (random or
    downloaded)."""
    path = os.path.join(init, "model.safetensors") if os.path.isdir(init) else init
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode() + t.detach().float().cpu().numpy().tobytes())
    return "weights:" + h.hexdigest()


def main(argv=None):
    ap = ArgumentParser(description="Load a GPT-2 checkpoint and print a greedy continuation "
                                    "of a prompt.")
    ap.add_argument("--init", default=DEFAULT_INIT,
                    help="preset name (gpt2, gpt2-medium, ...: downloaded), "
                         ".safetensors file or checkpoint directory")
    ap.add_argument("--prompt",
                    default="Question: Mia has 7 apples. She buys 5 more. Then she gives 3 to Leo. "
                            "How many apples does Mia have now?\nAnswer:",
                    help="text to continue (default: a problem of the built-in task, which the "
                         "shipped base model answers)")
    ap.add_argument("--max-new-tokens", type=int, default=32,
                    help="greedy tokens to generate (stops at <|endoftext|>)")
    ap.add_argument("--device", default="auto", help=DEVICE_HELP)
    args = ap.parse_args(argv)
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    _, _, device = setup(args.device)
    model = load_model(args.init, device).eval()
    print(f"{args.init}: {asdict(model.config)}, {model.num_params() / 1e6:.1f}M parameters")
    tok = get_tokenizer()
    idx = torch.tensor([tok.encode_ordinary(args.prompt)], device=device)  # (1, T)
    n_prompt = idx.shape[1]
    with torch.no_grad():
        for _ in range(min(args.max_new_tokens, model.config.block_size - idx.shape[1])):
            nxt = model(idx[:, -model.config.block_size:])[:, -1].argmax(-1, keepdim=True)  # (1, 1)
            if nxt.item() == tok.eot_token:
                break
            idx = torch.cat([idx, nxt], dim=1)
    continuation = tok.decode(idx[0, n_prompt:].tolist())
    print(f"--- prompt ---\n{args.prompt}\n--- greedy continuation ---\n{continuation}")


if __name__ == "__main__":
    run_main(main)
