"""
Sampling from a GPT with its KV cache, and the DFT data step: negatives sampled once from the base model.

Sampling. Prompts of different lengths are left-padded into one (B, T) batch, prefilled once, then
decoded one token per step; a row that emits <|endoftext|> is finished (it is fed a pad token from
then on and its output is frozen). Each token is drawn by inverse-CDF sampling with uniforms drawn up
front, (B, N): a row's tokens depend only on its own uniforms and logits, never on which rows share its
batch. temperature 0 means greedy (argmax, first index on ties). top-k works on the k candidates only.

    python sample.py --prompt $'Question: Mia has 7 apples. She buys 5 more. How many apples does Mia have now?\\nAnswer:'
                                                                     # ^ the shipped base model, data/base
    python sample.py --init gpt2 --prompt "The meaning of life is" --num 3 --temperature 0.8
    python sample.py --init tiny --prompt "hello" --device cpu       # random weights: the code path only

DFT negatives (ALGORITHMS.md, "Negatives"): for every training example, B * epochs responses sampled
from the base model (temperature 0.7, top_k 50, top_p 1.0); epoch e uses negatives [e*B, (e+1)*B).

    python sample.py --negatives --data data/arith/train.jsonl --out out/negatives/arith.jsonl --max-new-tokens 64
    torchrun --standalone --nproc_per_node=2 sample.py --negatives --data data/arith/train.jsonl --out ...
    python -m pytest -q tests/test_sample.py

The negatives file (JSONL) starts with {"meta": {...}}: data path, data_sha256, n_examples, init,
init_sha256 (of model.safetensors, or of the in-memory weights when there is no file),
num_negatives_per_epoch, epochs, n_per_prompt, temperature, top_k, top_p, max_new_tokens, neg_prefix,
seed, max_prompt_len, batch_size, created, nanodft_version. Then one line per example, in data order:
    {"i": 0, "negatives": [{"ids": [...], "text": "...", "eos": true}, ...]}
ids exclude the EOT; eos=false means it stopped at max_new_tokens (scored without an EOT).

Reproducibility: example i's random numbers come from a generator seeded by (seed, i) alone, so its
negatives do not depend on sharding, batching or resumption (up to float rounding of batched kernels,
which can move a sample only when a uniform falls within ~1e-7 of a CDF step). Resumption is
byte-identical: records are appended per batch to <out>.partial, batches are a fixed plan, and a
restart keeps the complete batches and redoes the rest with the very same batches.
"""
import argparse
import datetime
import hashlib
import json
import os
import sys
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist

from data.tokenizer import EOT, VOCAB_SIZE, get_tokenizer

DEFAULT_INIT = "data/base"
VERSION = "1"
CHECK_EVERY = 8  # decode steps between host syncs asking "is every row done?" (a finished batch decodes <= 7 extra steps)

# -----------------------------------------------------------------------------
# choosing the next token


def top_k_filter(logits, k):
    """Keep the k largest logits of each row, -inf elsewhere. Exactly k survive: on a tie at the k-th
    value, the tied tokens torch.topk returns (the same ones every call on a given device)."""
    vals, idx = logits.topk(min(k, logits.shape[-1]), dim=-1)  # (B, k) each
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, vals)


def top_p_filter(logits, p):
    """Nucleus: keep the smallest set of most likely tokens whose probability sums to >= p (the top
    token always). Tokens tied with the last kept one are all kept: deterministic, independent of
    token order."""
    probs = logits.softmax(-1)  # (B, V)
    sorted_p = probs.sort(-1, descending=True).values  # (B, V)
    before = sorted_p.cumsum(-1) - sorted_p  # (B, V) mass of the tokens ranked above each one
    n_keep = (before < p).sum(-1, keepdim=True).clamp(min=1)  # (B, 1)
    return logits.masked_fill(probs < sorted_p.gather(-1, n_keep - 1), float("-inf"))


def check_settings(temperature, top_k, top_p):
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 1 (0 or None = off), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def pick(logits, u, temperature, top_k=None, top_p=None):
    """Next token per row from logits (B, V) and uniforms u (B,) in [0, 1): inverse-CDF sampling."""
    if temperature == 0:
        return logits.argmax(-1)  # (B,)
    logits = logits.float() / temperature  # (B, V)
    cand = None
    if top_k:  # same as top_k_filter, but then work on the k candidates only: (B, k), best first
        logits, cand = logits.topk(min(top_k, logits.shape[-1]), dim=-1)
    if top_p is not None and top_p < 1:
        logits = top_p_filter(logits, top_p)
    probs = logits.softmax(-1, dtype=torch.float64)  # (B, K); float64 so rare tokens keep their share
    cdf = probs.cumsum(-1)  # (B, K)
    j = torch.searchsorted(cdf, (u.double() * cdf[:, -1])[:, None], right=True)[:, 0]  # first cdf > u
    j = j.clamp(max=probs.shape[1] - 1)  # (B,)
    # a zero-probability token is reachable only through rounding at a flat stretch of the cdf
    j = torch.where(probs.gather(1, j[:, None])[:, 0] > 0, j, probs.argmax(-1))
    return j if cand is None else cand.gather(1, j[:, None])[:, 0]


@torch.no_grad()
def _generate(model, prompts, u, temperature, top_k, top_p, eos_id=EOT):
    """prompts: B token lists; u (B, N) uniforms, one per row and step. -> B x (new_ids, ended_with_eos)."""
    B, N = u.shape
    keep = model.config.block_size - N  # prompt + new tokens must fit in block_size
    prompts = [list(p)[-keep:] for p in prompts]  # a long prompt keeps its END
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt: start it with <|endoftext|> for unconditional samples")
    dev = model.lm_head_weight.device
    T = max(len(p) for p in prompts)
    idx = torch.full((B, T), eos_id, dtype=torch.long)  # (B, T), left-padded
    valid = torch.zeros(B, T, dtype=torch.bool)  # (B, T)
    for r, p in enumerate(prompts):
        idx[r, T - len(p):], valid[r, T - len(p):] = torch.tensor(p), True
    # bf16 on GPUs (the cache too), as in training; exact fp32 on the CPU
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    cache = model.new_cache(B, T + N, dtype=torch.bfloat16 if dev.type == "cuda" else None)
    with amp:
        logits = model.prefill(idx.to(dev), valid.to(dev), cache)  # (B, V)
    u = u.to(dev)
    out = torch.full((B, N), eos_id, dtype=torch.long, device=dev)  # (B, N)
    done = torch.zeros(B, dtype=torch.bool, device=dev)  # (B,)
    for t in range(N):
        tok = torch.where(done, eos_id, pick(logits, u[:, t], temperature, top_k, top_p))  # (B,)
        out[:, t] = tok
        done |= tok == eos_id
        if t == N - 1 or ((t + 1) % CHECK_EVERY == 0 and bool(done.all())):  # the only host sync
            break
        with amp:
            logits = model.decode(tok, cache)  # (B, V); finished rows are fed EOT as a pad, output ignored
    result = []
    for row in out.tolist():
        n = row.index(eos_id) if eos_id in row else N
        result.append((row[:n], n < N))
    return result


def generate(model, prompts, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None, eos_id=EOT):
    """Sample a continuation of every prompt (a list of token-id lists, any lengths) in one batch.

    Returns a list of (new_ids without the EOT, ended_with_eos). temperature 0 = greedy. Same
    generator seed + model + inputs = same samples. block_size: max_new_tokens is capped at
    block_size - 1, and a prompt longer than block_size - max_new_tokens keeps its last tokens.
    Host syncs: one every CHECK_EVERY steps, to stop once every row has ended."""
    check_settings(temperature, top_k, top_p)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    N = min(max_new_tokens, model.config.block_size - 1)
    u = torch.rand(len(prompts), N, generator=generator, dtype=torch.float64)  # (B, N)
    return _generate(model, prompts, u, temperature, top_k, top_p, eos_id)


# -----------------------------------------------------------------------------
# DFT negatives


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_sha256(model, init_source):
    """sha256 of the model.safetensors bytes when init_source is on disk, else of the in-memory weights."""
    path = os.path.join(init_source, "model.safetensors") if init_source and os.path.isdir(init_source) else init_source
    if path and os.path.isfile(path):
        return sha256_file(path)
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode() + t.detach().float().cpu().numpy().tobytes())
    return "weights:" + h.hexdigest()


def example_seed(seed, i):
    """Example i's random numbers come from this seed alone (not from its batch, rank or restart)."""
    return int.from_bytes(hashlib.sha256(f"nanodft-negatives:{seed}:{i}".encode()).digest()[:8], "little") >> 1


def epoch_slice(negs, e, B):
    """The negatives of one example that epoch e uses: [e*B, (e+1)*B), so every epoch sees fresh ones."""
    return negs[e * B:(e + 1) * B]


def _same(a, b):
    """Meta/header dicts equal apart from the creation time; returns the keys that differ."""
    a, b = dict(a or {}), dict(b or {})
    return sorted(k for k in set(a) | set(b) if k != "created" and a.get(k) != b.get(k))


def _open_partial(path, header, order, batches):
    """Open a rank's .partial file for appending; returns (file, number of batches already done).

    Complete batches are kept; whatever follows the last complete batch (a half-written line, part
    of a batch) is cut, and that batch is redone as a whole, so the result is byte-identical."""
    if not os.path.exists(path):
        f = open(path, "w", encoding="utf-8")
        f.write(json.dumps(header) + "\n")
        f.flush()
        return f, 0
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")  # the last item is b"" or an incomplete line
    try:
        old = json.loads(lines[0])
        diff = _same(old["meta"], header["meta"]) + [f"shard.{k}" for k in _same(old["shard"], header["shard"])]
    except (ValueError, KeyError, TypeError):
        diff = ["the first line is not a header"]
    if diff:
        raise ValueError(f"{path}: left by an interrupted run with other settings (differs in: {', '.join(diff)}); "
                         "delete it to start over")
    k = 0  # complete records, in plan order
    for line in lines[1:-1]:
        try:
            ok = k < len(order) and json.loads(line)["i"] == order[k]
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            break
        k += 1
    n_done = kept = 0
    while n_done < len(batches) and kept + len(batches[n_done]) <= k:
        kept += len(batches[n_done])
        n_done += 1
    with open(path, "r+b") as f:
        f.truncate(sum(len(line) + 1 for line in lines[:1 + kept]))
    return open(path, "a", encoding="utf-8"), n_done


def _merge(out_path, parts, n_examples, max_new_tokens):
    """Rank 0: interleave the ranks' records into data order, write <out> atomically. Returns stats."""
    meta, lines = None, {}
    stats = dict(negatives=0, eos=0, empty=0, repeated=0, tokens=0)
    for part in parts:
        with open(part, encoding="utf-8") as f:
            header = json.loads(f.readline())
            meta = meta or header["meta"]  # rank 0's (the first part)
            for line in f:
                rec = json.loads(line)
                lines[rec["i"]] = line
                for neg in rec["negatives"]:
                    ids = neg["ids"]
                    stats["negatives"] += 1
                    stats["eos"] += neg["eos"]
                    stats["tokens"] += len(ids)
                    stats["empty"] += len(ids) == 0
                    stats["repeated"] += len(ids) == max_new_tokens and len(set(ids)) == 1
    missing = [i for i in range(n_examples) if i not in lines]
    if missing:
        raise RuntimeError(f"{out_path}: merging rank files, {len(missing)} examples missing (first: {missing[0]})")
    with open(out_path + ".tmp", "w", encoding="utf-8") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
        f.writelines(lines[i] for i in range(n_examples))
    os.replace(out_path + ".tmp", out_path)
    for part in parts:
        os.remove(part)
    return stats


def sample_negatives(model, records, out_path, B, epochs, max_new_tokens=320, temperature=0.7, top_k=50, top_p=1.0,
                     neg_prefix="", batch_size=64, seed=0, max_prompt_len=None, init_source=None, data_path=None,
                     rank=0, world_size=1):
    """Write B * epochs negatives per record (dicts with "prompt") to out_path; returns out_path.

    Prompts are tok.encode_ordinary(neg_prefix + prompt), keeping the END when longer than
    max_prompt_len (default: block_size - max_new_tokens). batch_size counts sequences decoded
    together (batch_size // (B*epochs) prompts, at least one). With world_size > 1 every rank calls
    this (torch.distributed already initialized); rank r samples examples r, r+W, ...; rank 0 merges."""
    check_settings(temperature, top_k, top_p)
    if data_path is None:
        raise ValueError("data_path is needed: its sha256 goes into the file so stale negatives are detected")
    n, n_per, bs = len(records), B * epochs, model.config.block_size
    if not 1 <= max_new_tokens < bs:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be in [1, block_size={bs}): the prompt needs room")
    max_prompt_len = min(max_prompt_len or bs, bs - max_new_tokens)
    meta = dict(data=data_path, data_sha256=sha256_file(data_path), n_examples=n, init=init_source,
                init_sha256=weights_sha256(model, init_source), num_negatives_per_epoch=B, epochs=epochs,
                n_per_prompt=n_per, temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens,
                neg_prefix=neg_prefix, seed=seed, max_prompt_len=max_prompt_len, batch_size=batch_size,
                created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                nanodft_version=VERSION)
    if os.path.exists(out_path):
        diff = _same(negatives_meta(out_path), meta)
        if diff:
            raise ValueError(f"{out_path} exists but was sampled with other settings (differs in: {', '.join(diff)}); "
                             "delete it or choose another --out")
        return out_path
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    # NOTE: ranks finish their shards at different times; waiting on a gloo group with a long timeout
    # avoids NCCL's watchdog killing a rank that waits for a slower one.
    group = dist.new_group(backend="gloo", timeout=datetime.timedelta(hours=12)) if world_size > 1 else None

    tok = get_tokenizer()
    mine = list(range(rank, n, world_size))  # this rank's strided shard
    # a long prompt keeps its END; the adversarial prefix always stays in front of what is kept
    pre = tok.encode_ordinary(neg_prefix)
    if len(pre) >= max_prompt_len:
        raise ValueError(f"--neg-prefix is {len(pre)} tokens, no room left in max_prompt_len={max_prompt_len}")
    prompts = {i: pre + tok.encode_ordinary(records[i]["prompt"])[-(max_prompt_len - len(pre)):] for i in mine}
    order = sorted(mine, key=lambda i: (-len(prompts[i]), i))  # longest first: little padding, OOM shows early
    P = max(1, batch_size // n_per)  # prompts per batch
    batches = [order[s:s + P] for s in range(0, len(order), P)]  # the fixed plan
    partial = out_path + (".partial" if world_size == 1 else f".rank{rank}.partial")
    header = {"meta": meta, "shard": {"rank": rank, "world_size": world_size}}
    f, n_done = _open_partial(partial, header, order, batches)
    done0 = done = sum(len(b) for b in batches[:n_done])
    t0, new_tokens = time.time(), 0
    with f:
        for batch in batches[n_done:]:
            rows = [prompts[i] for i in batch for _ in range(n_per)]
            u = torch.cat([torch.rand(n_per, max_new_tokens, dtype=torch.float64,  # (n_per, N) per example
                                      generator=torch.Generator().manual_seed(example_seed(seed, i))) for i in batch])
            res = _generate(model, rows, u, temperature, top_k, top_p)
            for j, i in enumerate(batch):
                negs = [{"ids": ids, "text": tok.decode(ids), "eos": eos} for ids, eos in res[j * n_per:(j + 1) * n_per]]
                f.write(json.dumps({"i": i, "negatives": negs}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            done += len(batch)
            new_tokens += sum(len(ids) + eos for ids, eos in res)
            if rank == 0:
                dt = time.time() - t0
                eta = dt / (done - done0) * (len(order) - done)
                shard = f" (rank 0's shard of {world_size})" if world_size > 1 else ""
                print(f"\rnegatives: {done}/{len(order)} prompts{shard}, {new_tokens / dt:,.0f} new tok/s, ETA "
                      + (f"{eta:.0f} s " if eta < 100 else f"{eta / 60:.1f} min "), end="", file=sys.stderr, flush=True)
    if rank == 0 and done > done0:
        print(file=sys.stderr)
    if group is not None:
        dist.barrier(group=group)
    if rank == 0:
        parts = [partial] if world_size == 1 else [f"{out_path}.rank{r}.partial" for r in range(world_size)]
        s = _merge(out_path, parts, n, max_new_tokens)
        print(f"negatives: wrote {out_path}: {n} examples x {n_per}, {s['tokens']:,} tokens, "
              f"{s['eos'] / max(1, s['negatives']):.0%} ended with EOT; degenerate (kept): {s['empty']} empty, "
              f"{s['repeated']} one token repeated to max_new_tokens", file=sys.stderr)
    if group is not None:
        dist.barrier(group=group)  # every rank returns only once the merged file exists
        dist.destroy_process_group(group)
    return out_path


def negatives_meta(path):
    """The {"meta": ...} line of a negatives file, checked."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such negatives file")
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    try:
        meta = json.loads(first)["meta"]
        assert isinstance(meta, dict)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise ValueError(f'{path}:1: expected the line {{"meta": {{...}}}} of a negatives file from sample.py') from None
    if meta.get("nanodft_version") != VERSION:
        raise ValueError(f"{path}:1: nanodft_version {meta.get('nanodft_version')!r}, expected {VERSION!r}; resample it")
    return meta


def load_negatives(path, data_path, n_examples, n_per_prompt):
    """-> for each example, a list of (ids, eos) (at least n_per_prompt). Refuses stale or broken files."""
    meta = negatives_meta(path)
    sha = sha256_file(data_path)
    if meta.get("data_sha256") != sha:
        raise ValueError(f"negatives file {path} was sampled for a different data file (sha {str(meta.get('data_sha256'))[:12]} "
                         f"of {meta.get('data')}; {data_path} has sha {sha[:12]}); delete it or pass --negatives ...")
    if meta.get("n_examples") != n_examples or meta.get("n_per_prompt", 0) < n_per_prompt:
        raise ValueError(f"{path}: has {meta.get('n_examples')} examples x {meta.get('n_per_prompt')} negatives; "
                         f"needed {n_examples} x {n_per_prompt} (B * epochs); delete it or pass --negatives ...")
    out = []
    with open(path, encoding="utf-8") as f:
        f.readline()
        for lineno, line in enumerate(f, 2):
            where, i = f"{path}:{lineno}", lineno - 2
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{where}: invalid JSON ({getattr(e, 'msg', e)})") from None
            if not isinstance(rec, dict) or rec.get("i") != i or i >= n_examples:
                raise ValueError(f'{where}: expected {{"i": {i}, "negatives": [...]}} (one line per example, in data order)')
            negs = rec.get("negatives")
            if not isinstance(negs, list) or len(negs) < n_per_prompt:
                raise ValueError(f"{where}: expected a list of >= {n_per_prompt} negatives")
            row = []
            for j, neg in enumerate(negs):
                ids, eos = (neg.get("ids"), neg.get("eos")) if isinstance(neg, dict) else (None, None)
                if not (isinstance(ids, list) and all(type(t) is int and 0 <= t < VOCAB_SIZE for t in ids)
                        and isinstance(eos, bool)):
                    raise ValueError(f'{where}: negative {j}: expected {{"ids": [token ids], "text": ..., "eos": true|false}}')
                row.append((ids, eos))
            out.append(row)
    if len(out) != n_examples:
        raise ValueError(f"{path}: {len(out)} example lines, expected {n_examples} (a truncated file?)")
    return out


# -----------------------------------------------------------------------------
# command line


def load_model(init, device, seed=0):
    """--init: a preset (gpt2 ... downloaded; nano/tiny: random weights), a .safetensors file or a directory."""
    from model import GPT, HUB_PRESETS, PRESETS, config_for

    if init in PRESETS and init not in HUB_PRESETS and not os.path.exists(init):
        torch.manual_seed(seed)
        return GPT(config_for(init)).to(device).eval()
    if init == DEFAULT_INIT and not os.path.exists(init):
        raise FileNotFoundError(f"{init}: the default base model is missing; it ships with the repository "
                                f"(git checkout -- {init}; train.py's docstring shows how it was made), "
                                "or pass --init gpt2 to download GPT-2 124M")
    return GPT.from_pretrained(init, device=device).eval()


def main(argv=None):
    p = argparse.ArgumentParser(description="Sample from a GPT, or write the DFT negatives file (--negatives).")
    p.add_argument("--init", default=DEFAULT_INIT, help="model: preset (gpt2, gpt2-medium, ...; nano/tiny = random "
                   "weights), .safetensors file or directory")
    p.add_argument("--prompt", default="", help="text to continue ('' = unconditional, from <|endoftext|>)")
    p.add_argument("--num", type=int, default=3, help="number of samples")
    p.add_argument("--max-new-tokens", type=int, default=None, help="tokens per sample (default 100; 320 with --negatives)")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (default 0.8; 0.7 with --negatives)")
    p.add_argument("--top-k", type=int, default=50, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus: keep the most likely tokens up to this mass")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    g = p.add_argument_group("DFT negatives")
    g.add_argument("--negatives", action="store_true", help="write B * epochs negatives for every example of --data")
    g.add_argument("--data", default=None, help="training JSONL with a 'prompt' field")
    g.add_argument("--out", default=None, help="negatives file to write (resumes <out>.partial if present)")
    g.add_argument("--num-negatives", type=int, default=2, help="B: negatives per prompt per epoch")
    g.add_argument("--epochs", type=int, default=2, help="epochs of training that will use them (fresh ones each)")
    g.add_argument("--neg-prefix", default="", help="text put before each prompt while sampling only (e.g. "
                   "'You are an unhelpful assistant.\\n' for chat data)")
    g.add_argument("--batch-size", type=int, default=64, help="sequences decoded together")
    g.add_argument("--max-prompt-len", type=int, default=None, help="keep the last this many prompt tokens "
                   "(default: block_size - max_new_tokens)")
    args = p.parse_args(argv)
    neg = args.negatives
    max_new = args.max_new_tokens or (320 if neg else 100)
    temperature = args.temperature if args.temperature is not None else (0.7 if neg else 0.8)

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
        torch.cuda.set_device(device)  # before init_process_group, so NCCL binds the right GPU
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        check_settings(temperature, args.top_k, args.top_p)
        model = load_model(args.init, device, args.seed)
        if neg:
            from data.format import DataError, load_jsonl
            if not args.data or not args.out:
                raise ValueError("--negatives needs --data and --out")
            try:
                _, records = load_jsonl(args.data)
            except DataError as e:
                raise ValueError(str(e)) from None
            sample_negatives(model, records, args.out, args.num_negatives, args.epochs, max_new, temperature,
                             args.top_k, args.top_p, args.neg_prefix, args.batch_size, args.seed,
                             args.max_prompt_len, args.init, args.data, rank, world)
            if world > 1:
                dist.destroy_process_group()
            return
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    tok = get_tokenizer()
    ids = tok.encode_ordinary(args.prompt) or [EOT]
    print(f"{args.init} ({model.num_params() / 1e6:.1f}M parameters, {device}), temperature {temperature}, "
          f"top-k {args.top_k}, top-p {args.top_p}, seed {args.seed}")
    print("--- prompt ---\n" + (args.prompt or "(none: starting from <|endoftext|>)"))
    t0 = time.time()
    res = generate(model, [ids] * args.num, max_new, temperature, args.top_k, args.top_p,
                   torch.Generator().manual_seed(args.seed))
    dt = time.time() - t0  # generate ends with .tolist(): the device is done
    for s, (new, eos) in enumerate(res, 1):
        end = "ended with <|endoftext|>" if eos else "stopped at --max-new-tokens"
        print(f"--- sample {s} of {args.num} ({len(new)} tokens, {end}) ---\n{tok.decode(new)}")
    n_tok = sum(len(new) + eos for new, eos in res)
    print(f"--- {args.num} samples, {n_tok} new tokens in {dt:.2f} s: {n_tok / dt:,.0f} tokens/s ---")


if __name__ == "__main__":
    main()
