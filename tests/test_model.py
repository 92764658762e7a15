"""model.py: weights load to the right logits, save/load round-trips, the KV cache equals the full
forward, bad files are refused with clear messages, and the offline tokenizer is GPT-2's."""
import json
import os
import struct

import numpy as np
import pytest
import torch

from model import GPT, GPTConfig, config_for

CFG = GPTConfig(block_size=32, vocab_size=97, n_layer=2, n_head=2, n_embd=16)


def hub_tensors(cfg, seed=0):
    """A random checkpoint written exactly as the public GPT-2 files are: unprefixed names, Conv1D
    weights as (in, out), per-layer attn.bias causal-mask buffers, no lm_head.weight, float32."""
    g = torch.Generator().manual_seed(seed)
    C, V = cfg.n_embd, cfg.vocab_size
    r = lambda *s: torch.randn(*s, generator=g) * 0.3
    t = {"wte.weight": r(V, C), "wpe.weight": r(cfg.block_size, C), "ln_f.weight": 1 + r(C), "ln_f.bias": r(C)}
    for i in range(cfg.n_layer):
        p = f"h.{i}."
        t.update({p + "ln_1.weight": 1 + r(C), p + "ln_1.bias": r(C), p + "ln_2.weight": 1 + r(C), p + "ln_2.bias": r(C),
                  p + "attn.c_attn.weight": r(C, 3 * C), p + "attn.c_attn.bias": r(3 * C),
                  p + "attn.c_proj.weight": r(C, C), p + "attn.c_proj.bias": r(C),
                  p + "mlp.c_fc.weight": r(C, 4 * C), p + "mlp.c_fc.bias": r(4 * C),
                  p + "mlp.c_proj.weight": r(4 * C, C), p + "mlp.c_proj.bias": r(C),
                  p + "attn.bias": torch.tril(torch.ones(1, 1, cfg.block_size, cfg.block_size))})
    return t


def reference_logits(t, cfg, ids):
    """GPT-2 written out in numpy straight from the hub tensors (Conv1D: x @ W + b), float64."""
    W = {k: v.double().numpy() for k, v in t.items()}
    T, C, H = len(ids), cfg.n_embd, cfg.n_head

    def ln(x, w, b):
        return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    x = W["wte.weight"][ids] + W["wpe.weight"][:T]
    for i in range(cfg.n_layer):
        p = f"h.{i}."
        a = ln(x, W[p + "ln_1.weight"], W[p + "ln_1.bias"]) @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]
        q, k, v = np.split(a, 3, axis=1)
        heads = []
        for h in range(H):
            s = slice(h * C // H, (h + 1) * C // H)
            att = q[:, s] @ k[:, s].T / np.sqrt(C // H) + np.triu(np.full((T, T), -np.inf), 1)
            att = np.exp(att - att.max(1, keepdims=True))
            heads.append(att / att.sum(1, keepdims=True) @ v[:, s])
        x = x + np.concatenate(heads, 1) @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
        m = gelu(ln(x, W[p + "ln_2.weight"], W[p + "ln_2.bias"]) @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"])
        x = x + m @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"]
    return ln(x, W["ln_f.weight"], W["ln_f.bias"]) @ W["wte.weight"].T


def save(tensors, path):
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


IDS = [3, 14, 15, 92, 65, 35, 89, 79]


def test_hub_layout_loads_to_independent_logits(tmp_path):
    t = hub_tensors(CFG)
    save(t, tmp_path / "model.safetensors")
    # no config.json: the size is inferred from shapes (heads 64 wide), so write one for n_head=2
    (tmp_path / "config.json").write_text(json.dumps({"n_layer": 2, "n_head": 2, "n_embd": 16, "vocab_size": 97, "n_positions": 32}))
    model = GPT.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        ours = model(torch.tensor([IDS]))[0].double().numpy()
    np.testing.assert_allclose(ours, reference_logits(t, CFG, IDS), atol=1e-4)


def test_hf_save_pretrained_layout_loads(tmp_path):
    """Names prefixed with 'transformer.' and a tied lm_head.weight, as HF's save_pretrained writes."""
    t = hub_tensors(CFG)
    hf = {"transformer." + k: v for k, v in t.items() if not k.endswith(".attn.bias") or "c_attn" in k}
    hf["lm_head.weight"] = t["wte.weight"].clone()
    save(hf, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"n_layer": 2, "n_head": 2, "n_embd": 16, "vocab_size": 97, "n_positions": 32}))
    model = GPT.from_pretrained(str(tmp_path / "model.safetensors")).eval()
    with torch.no_grad():
        ours = model(torch.tensor([IDS]))[0].double().numpy()
    np.testing.assert_allclose(ours, reference_logits(t, CFG, IDS), atol=1e-4)


def test_a_bare_file_takes_n_head_from_its_preset_or_is_refused(tmp_path):
    # the tiny preset has 2 heads of 16: a guess from the width (heads 64 wide) would say 1
    cfg = GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32)
    save(hub_tensors(cfg), tmp_path / "w.safetensors")
    assert GPT.from_pretrained(str(tmp_path / "w.safetensors")).config == cfg
    other = GPTConfig(block_size=16, vocab_size=50, n_layer=3, n_head=2, n_embd=128)
    save(hub_tensors(other), tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="x.safetensors: no config.json beside it.*no preset's"):
        GPT.from_pretrained(str(tmp_path / "x.safetensors"))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["config.json", "model.safetensors"]  # no temp files left
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["model_type"] == "gpt2" and cfg["architectures"] == ["GPT2LMHeadModel"] and cfg["n_positions"] == 32
    back = GPT.from_pretrained(str(tmp_path / "ckpt")).eval()
    x = torch.tensor([IDS])
    with torch.no_grad():
        assert torch.equal(model(x), back(x))
    # the file is in hub layout: Conv1D weights stored (in, out), no lm_head
    from safetensors.torch import load_file
    t = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert t["h.0.attn.c_attn.weight"].shape == (16, 48) and "lm_head.weight" not in t
    assert torch.equal(t["h.1.mlp.c_fc.weight"], model.h[1].mlp.c_fc.weight.t())


def test_round_trip_bf16(tmp_path):
    model = GPT(CFG)
    model.save_pretrained(tmp_path, dtype=torch.bfloat16)
    back = GPT.from_pretrained(str(tmp_path))
    assert torch.equal(back.wte.weight, model.wte.weight.bfloat16().float())


def test_hf_transformers_loads_our_checkpoint(tmp_path):
    transformers = pytest.importorskip("transformers")  # optional: only where it happens to be installed
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    model.save_pretrained(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path)).eval()
    x = torch.tensor([IDS])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x), atol=1e-5, rtol=0)


# --- bad files ----------------------------------------------------------------------------------

def _write_dir(tmp_path, t):
    save(t, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"n_layer": 2, "n_head": 2, "n_embd": 16, "vocab_size": 97, "n_positions": 32}))
    return str(tmp_path)


def test_wrong_shape_refused(tmp_path):
    t = hub_tensors(CFG)
    t["h.1.mlp.c_fc.weight"] = t["h.1.mlp.c_fc.weight"].t()  # stored as nn.Linear instead of Conv1D
    with pytest.raises(ValueError, match=r"wrong shape: h\.1\.mlp\.c_fc\.weight \(64, 16\) \(expected \(16, 64\)\)"):
        GPT.from_pretrained(_write_dir(tmp_path, t))


def test_missing_and_unexpected_refused(tmp_path):
    t = hub_tensors(CFG)
    del t["h.0.ln_2.bias"]
    t["h.0.attn.rotary"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"missing: h\.0\.ln_2\.bias \(1\); unexpected: h\.0\.attn\.rotary \(1\)"):
        GPT.from_pretrained(_write_dir(tmp_path, t))


def test_untied_head_refused(tmp_path):
    t = hub_tensors(CFG)
    t["lm_head.weight"] = t["wte.weight"] + 1
    with pytest.raises(ValueError, match="lm_head.weight differs from wte.weight"):
        GPT.from_pretrained(_write_dir(tmp_path, t))


def test_not_safetensors_refused(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_bytes(b"PK\x03\x04 this is a zip/pickle, not safetensors" * 10)
    with pytest.raises(ValueError, match="not a safetensors file"):
        GPT.from_pretrained(str(p))
    p.write_bytes(struct.pack("<Q", 20) + b"{not json at all!!!}")
    with pytest.raises(ValueError, match="not a safetensors file"):
        GPT.from_pretrained(str(p))


def test_truncated_refused(tmp_path):
    d = _write_dir(tmp_path, hub_tensors(CFG))
    p = os.path.join(d, "model.safetensors")
    data = open(p, "rb").read()
    open(p, "wb").write(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated safetensors file"):
        GPT.from_pretrained(d)


def test_missing_source():
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        GPT.from_pretrained("no/such/dir")


# --- the fast paths against the plain one ----------------------------------------------------------

def _padded(prompts, side):
    T = max(map(len, prompts))
    idx = torch.zeros(len(prompts), T, dtype=torch.long)
    valid = torch.zeros(len(prompts), T, dtype=torch.bool)
    for i, p in enumerate(prompts):
        s = slice(T - len(p), T) if side == "left" else slice(0, len(p))
        idx[i, s], valid[i, s] = torch.tensor(p), True
    return idx, valid


@pytest.mark.parametrize("side", ["left", "right"])
def test_kv_cache_decoding_equals_full_forward(side):
    torch.manual_seed(0)
    model = GPT(config_for("tiny")).eval()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
    idx, valid = _padded(prompts, side)
    cache = model.new_cache(len(prompts), idx.shape[1] + 8)
    seqs = [list(p) for p in prompts]
    with torch.no_grad():
        logits = model.prefill(idx, valid, cache)  # (B, V)
        for step in range(8):
            for i, s in enumerate(seqs):  # the plain path, one unpadded sequence at a time
                torch.testing.assert_close(logits[i], model(torch.tensor([s]))[0, -1], atol=2e-5, rtol=0)
            nxt = logits.argmax(-1)
            for i in range(len(seqs)):
                seqs[i].append(int(nxt[i]))
            if step < 7:
                logits = model.decode(nxt, cache)


def test_fast_logps_equal_full_logits():
    from losses import sequence_logps
    torch.manual_seed(0)
    model = GPT(config_for("tiny"))
    x, y = torch.randint(0, 50257, (3, 11)), torch.randint(0, 50257, (3, 11))
    mask = torch.rand(3, 11) > 0.4
    fast, n = model.logps(x, y, mask, chunk_tokens=5)  # several chunks
    slow, n_slow = sequence_logps(model(x), y, mask)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    assert torch.equal(n, n_slow)
    g_fast = torch.autograd.grad(fast.sum(), model.h[0].attn.c_attn.weight)[0]
    g_slow = torch.autograd.grad(sequence_logps(model(x), y, mask)[0].sum(), model.h[0].attn.c_attn.weight)[0]
    torch.testing.assert_close(g_fast, g_slow, atol=1e-5, rtol=1e-4)


def test_packed_logps_equal_padded_with_gradients():
    """data/format.py pack + model.logps(x, y, mask, pos, doc): the same per-sequence log-probs and
    gradients as padding each sequence (attention never crosses from one packed sequence to another)."""
    from data.format import collate, pack
    torch.manual_seed(0)
    model = GPT(config_for("tiny"))
    g = torch.Generator().manual_seed(1)
    seqs = [(torch.randint(0, 50257, (L,), generator=g).tolist(), n) for L, n in ((9, 3), (4, 1), (17, 5), (6, 2), (3, 2))]
    padded, n_pad = model.logps(*collate(seqs))
    x, y, mask, pos, doc = pack(seqs)
    assert x.shape[0] < len(seqs)
    packed, n_pack = model.logps(x, y, mask, pos, doc)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=0)
    assert torch.equal(n_pack, n_pad)
    w = model.h[1].attn.c_attn.weight
    torch.testing.assert_close(torch.autograd.grad((packed * torch.arange(5)).sum(), w)[0],
                               torch.autograd.grad((model.logps(*collate(seqs))[0] * torch.arange(5)).sum(), w)[0],
                               atol=1e-5, rtol=1e-4)


def test_preset_download_refuses_an_unverifiable_wrong_file(tmp_path, monkeypatch, local_server):
    """A mirror that sends no sha256 and serves an HTML page as config.json, or a truncated safetensors
    file: an error naming the URL, and nothing cached as complete (the fixed mirror is tried next time)."""
    monkeypatch.setenv("NANODFT_HF_BASE", local_server.url)
    monkeypatch.setenv("NANODFT_CACHE", str(tmp_path / "cache"))
    local_server.add("openai-community/gpt2/resolve/main/config.json", b"<html>Service unavailable</html>")
    with pytest.raises(OSError, match=r"config\.json did not give the expected file \(.*not a JSON file"):
        GPT.from_pretrained("gpt2")
    assert not os.listdir(tmp_path / "cache" / "models" / "gpt2")
    t = hub_tensors(CFG)
    save(t, tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    local_server.add("openai-community/gpt2/resolve/main/config.json",
                     json.dumps({"n_layer": 2, "n_head": 2, "n_embd": 16, "vocab_size": 97, "n_positions": 32}).encode())
    local_server.add("openai-community/gpt2/resolve/main/model.safetensors", data[:len(data) // 2])
    with pytest.raises(OSError, match="model.safetensors did not give the expected file .*truncated safetensors file"):
        GPT.from_pretrained("gpt2")
    assert os.listdir(tmp_path / "cache" / "models" / "gpt2") == ["config.json"]
    local_server.add("openai-community/gpt2/resolve/main/model.safetensors", data)  # the mirror is fixed
    GPT.from_pretrained("gpt2")


def test_too_long_sequence_refused():
    model = GPT(CFG)
    with pytest.raises(ValueError, match="longer than block_size=32"):
        model(torch.zeros(1, 33, dtype=torch.long))


# --- tokenizer --------------------------------------------------------------------------------

def test_tokenizer_is_gpt2():
    from data.tokenizer import EOT, get_tokenizer
    tok = get_tokenizer()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.n_vocab == 50257 and tok.eot_token == EOT == 50256
    assert tok.encode("<|endoftext|>", allowed_special="all") == [50256]
    assert tok.encode_ordinary(" The answer is 42.") == [383, 3280, 318, 5433, 13]
    text = "naïve café — 日本語 🙂 \t\n  x"
    assert tok.decode(tok.encode_ordinary(text)) == text


def test_tokenizer_checks_its_file(tmp_path, monkeypatch):
    import data.tokenizer as T
    bad = tmp_path / "gpt2.tiktoken"
    bad.write_bytes(open(T.RANKS_FILE, "rb").read()[:-10])
    monkeypatch.setattr(T, "RANKS_FILE", str(bad))
    T.get_tokenizer.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="sha256"):
            T.get_tokenizer()
    finally:
        T.get_tokenizer.cache_clear()


# --- preset names download from the hub (here: a local server standing in for it) ---------------

def test_preset_downloads_from_hub_layout(tmp_path, monkeypatch, local_server):
    """`--init gpt2` fetches config.json + model.safetensors from {hub}/openai-community/gpt2/resolve/main/
    into the cache once, then loads from the cache without a request. The served file is in the exact
    hub layout (here at a tiny size, so the config comes from config.json)."""
    src = tmp_path / "src"
    src.mkdir()
    t = hub_tensors(CFG)
    save(t, src / "model.safetensors")
    for name in ("model.safetensors", "config.json"):
        data = (src / name).read_bytes() if name != "config.json" else json.dumps(
            {"n_layer": 2, "n_head": 2, "n_embd": 16, "vocab_size": 97, "n_positions": 32}).encode()
        local_server.add(f"openai-community/gpt2/resolve/main/{name}", data, etag=name.endswith("safetensors"))
    monkeypatch.setenv("NANODFT_HF_BASE", local_server.url)
    monkeypatch.setenv("NANODFT_CACHE", str(tmp_path / "cache"))
    model = GPT.from_pretrained("gpt2").eval()
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.tensor([IDS]))[0].double().numpy(), reference_logits(t, CFG, IDS), atol=1e-4)
    assert os.path.exists(tmp_path / "cache" / "models" / "gpt2" / "model.safetensors")
    n = len(local_server.requests)
    GPT.from_pretrained("gpt2")
    assert len(local_server.requests) == n  # served from the cache


def test_preset_offline_says_what_to_download(tmp_path, monkeypatch):
    from data.download import DownloadError
    monkeypatch.setenv("NANODFT_HF_BASE", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("NANODFT_CACHE", str(tmp_path))
    with pytest.raises(DownloadError, match=r"download http://127\.0\.0\.1:9/openai-community/gpt2-medium/resolve/main/config\.json by hand and save it as .*gpt2-medium/config\.json"):
        GPT.from_pretrained("gpt2-medium")
