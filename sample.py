"""
Sampling from a GPT with its KV cache, and the DFT data step: negatives sampled once from the base model.

Sampling. Prompts of different lengths are left-padded into one (B, T) batch, prefilled once, then
decoded one token per step; a row that emits <|endoftext|> is finished (it is fed a pad token from
then on and its output is frozen). Each token is drawn by inverse-CDF sampling with uniforms drawn up
front, (B, N): a row's tokens depend only on its own uniforms and logits, never on which rows share its
batch. temperature 0 means greedy (argmax, first index on ties). top-k works on the k candidates only.
A prompt longer than block_size - max_new_tokens keeps its END.

    python sample.py --prompt $'Question: Mia has 7 apples. She buys 5 more. How many apples does Mia have now?\\nAnswer:'
                                                                     # ^ the shipped base model, data/base
    python sample.py --init gpt2 --prompt "The meaning of life is" --num 3 --temperature 0.8
    python sample.py --init scratch --size tiny --prompt "hello"     # random weights: the code path only

DFT negatives (docs/ALGORITHMS.md, "Negatives"): for every training example, B * epochs responses
sampled from the base model (temperature 0.7, top_k 50, top_p 1.0); epoch e uses negatives
[e*B, (e+1)*B). Everything that decides their content is one frozen NegativeSettings: it is
sample_negatives' signature, the file's header, and (hashed) the name of train.py's cache file.

    python sample.py --negatives --data data/arith/train.jsonl --out out/negatives/arith.jsonl --max-new-tokens 64
    torchrun --standalone --nproc_per_node=2 sample.py --negatives --data data/arith/train.jsonl --out out/negatives/arith2.jsonl --max-new-tokens 64
    python -m pytest -q tests/test_sample.py

The negatives file (JSONL) starts with {"meta": {...}}: the settings, data path and data_sha256,
n_examples, init and init_sha256 (of model.safetensors, or of the in-memory weights when there is no
file), n_per_prompt, created, nanodft_version. Then one line per example, in data order:
    {"i": 0, "negatives": [{"ids": [...], "text": "...", "eos": true}, ...]}
ids exclude the EOT; eos=false means it stopped at max_new_tokens (scored without an EOT).

Reproducibility: example i's random numbers come from a generator seeded by (seed, i) alone, so its
negatives do not depend on sharding, batching or resumption (up to float rounding of batched kernels,
which can move a sample only when a uniform falls within ~1e-7 of a CDF step). Resumption is
byte-identical: records are appended per batch to <out>.partial, batches are a fixed plan, and a
restart keeps the complete batches and redoes the rest with the very same batches.
"""
import datetime
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from common import ArgumentParser, DEVICE_HELP, Progress, amp_dtype, atomic_path, autocast, print0, run_main, setup, teardown
from data import arith
from data.format import load_jsonl
from data.tokenizer import EOT, VOCAB_SIZE, get_tokenizer
from model import DEFAULT_INIT, PRESETS, load_model, weights_sha256

VERSION = "2"
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
def _generate(model, prompts, u, temperature, top_k, top_p, eos_id=EOT, amp=None, decode=None):
    """prompts: B token lists; u (B, N) uniforms, one per row and step. -> B x (new_ids, ended_with_eos).
    amp: the autocast dtype (the KV cache is kept in it too), None = the weights' dtype. decode: the
    one-token step, model.decode by default (model.decode_static, maybe compiled, is the fixed-shape one)."""
    decode = decode or model.decode
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
    cache = model.new_cache(B, T + N, dtype=amp)
    with autocast(dev, amp):
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
        with autocast(dev, amp):
            logits = decode(tok, cache)  # (B, V); finished rows are fed EOT as a pad, output ignored
    result = []
    for row in out.tolist():
        n = row.index(eos_id) if eos_id in row else N
        result.append((row[:n], n < N))
    return result


def generate(model, prompts, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None, eos_id=EOT, amp=None,
             decode=None):
    """Sample a continuation of every prompt (a list of token-id lists, any lengths) in one batch.

    Returns a list of (new_ids without the EOT, ended_with_eos). temperature 0 = greedy. Same
    generator seed + model + inputs = same samples. block_size: max_new_tokens is capped at
    block_size - 1, and a prompt longer than block_size - max_new_tokens keeps its last tokens.
    Host syncs: one every CHECK_EVERY steps, to stop once every row has ended. amp, decode: as in _generate."""
    check_settings(temperature, top_k, top_p)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    N = min(max_new_tokens, model.config.block_size - 1)
    u = torch.rand(len(prompts), N, generator=generator, dtype=torch.float64)  # (B, N)
    return _generate(model, prompts, u, temperature, top_k, top_p, eos_id, amp, decode)


# -----------------------------------------------------------------------------
# DFT negatives


@dataclass(frozen=True)
class NegativeSettings:
    """Everything that decides what a negatives file holds."""
    B: int = 2                  # negatives per prompt per epoch
    epochs: int = 2             # epochs of training that use them: epoch e takes [e*B, (e+1)*B)
    pool: int = 1               # sample this many times more; train.py --neg-filter wrong keeps the wrong ones
    max_new_tokens: int = 320   # per negative (256 in the published math setting)
    temperature: float = 0.7
    top_k: int = 50             # 0 = off
    top_p: float = 1.0
    prefix: str = ""            # put in front of the prompt while sampling only (the chat recipe's instruction)
    seed: int = 0
    batch_size: int = 64        # sequences decoded together (batched kernels round differently)

    @property
    def n_per_prompt(self):
        return self.B * self.epochs * self.pool

    def check(self, block_size):
        check_settings(self.temperature, self.top_k, self.top_p)
        for name in ("B", "epochs", "pool", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"negatives: {name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.max_new_tokens < block_size:
            raise ValueError(f"negatives: max_new_tokens must be in [1, block_size={block_size}), got {self.max_new_tokens}")


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def negatives_path(cache_dir, data_path, init_sha, settings, n_examples=None):
    """train.py's cache file: named after the data file, with a short hash of its path, the number of its
    examples used, the starting weights and every sampling setting, so no two samplings share a name."""
    key = json.dumps([os.path.abspath(data_path), n_examples, init_sha, asdict(settings)], sort_keys=True)
    stem = os.path.splitext(os.path.basename(data_path))[0]
    return os.path.join(cache_dir, f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.jsonl")


def example_seed(seed, i):
    """Example i's random numbers come from this seed alone (not from its batch, rank or restart)."""
    return int.from_bytes(hashlib.sha256(f"nanodft-negatives:{seed}:{i}".encode()).digest()[:8], "little") >> 1


def epoch_slice(negs, e, B):
    """The negatives of one example that epoch e uses: [e*B, (e+1)*B), so every epoch sees fresh ones."""
    return negs[e * B:(e + 1) * B]


def _diff(a, b):
    """Keys whose values differ between two header dicts, apart from the creation time."""
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
        diff = _diff(old["meta"], header["meta"]) + [f"shard.{k}" for k in _diff(old["shard"], header["shard"])]
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
    with atomic_path(out_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
        f.writelines(lines[i] for i in range(n_examples))
    for part in parts:
        os.remove(part)
    return stats


def _sample_batches(model, f, prompts, batches, s, progress, amp):
    """Sample every batch of the plan, appending its records to f (flushed and fsynced per batch)."""
    tok, done, new_tokens, t0 = get_tokenizer(), progress.done, 0, time.time()
    for batch in batches:
        rows = [prompts[i] for i in batch for _ in range(s.n_per_prompt)]
        u = torch.cat([torch.rand(s.n_per_prompt, s.max_new_tokens, dtype=torch.float64,  # (n_per, N) per example
                                  generator=torch.Generator().manual_seed(example_seed(s.seed, i))) for i in batch])
        res = _generate(model, rows, u, s.temperature, s.top_k, s.top_p, amp=amp)
        for j, i in enumerate(batch):
            negs = [{"ids": ids, "text": tok.decode(ids), "eos": eos} for ids, eos in res[j * s.n_per_prompt:(j + 1) * s.n_per_prompt]]
            f.write(json.dumps({"i": i, "negatives": negs}, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
        done += len(batch)
        new_tokens += sum(len(ids) + eos for ids, eos in res)
        progress.update(done, f", {new_tokens / (time.time() - t0):,.0f} new tok/s")


def sample_negatives(model, records, out_path, settings, data_path, init, init_sha=None, rank=0, world=1, amp=None):
    """Write settings.n_per_prompt negatives for every record (dicts with "prompt") to out_path; returns
    out_path. An existing out_path sampled with the same settings is reused; one with other settings is
    refused. With world > 1 every rank calls this (torch.distributed initialized): rank r samples
    examples r, r+W, ... and rank 0 merges. amp: the autocast dtype (common.amp_dtype), None = fp32."""
    s, bs = settings, model.config.block_size
    s.check(bs)
    meta = dict(asdict(s), n_per_prompt=s.n_per_prompt, data=data_path, data_sha256=file_sha256(data_path),
                n_examples=len(records), init=init, init_sha256=init_sha or weights_sha256(model, init),
                created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), nanodft_version=VERSION)
    if os.path.exists(out_path):
        diff = _diff(negatives_meta(out_path), meta)
        if diff:
            raise ValueError(f"{out_path} exists but was sampled with other settings (differs in: {', '.join(diff)}); "
                             "delete it or write to another file")
        return out_path
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    # NOTE: ranks finish their shards at different times; waiting on a gloo group with a long timeout
    # avoids NCCL's watchdog killing a rank that waits for a slower one.
    group = dist.new_group(backend="gloo", timeout=datetime.timedelta(hours=12)) if world > 1 else None
    # the prefix stays in front; a long prompt keeps its END, so that max_new_tokens fit in block_size
    tok, mine = get_tokenizer(), range(rank, len(records), world)  # this rank's strided shard
    pre = tok.encode_ordinary(s.prefix)
    if len(pre) >= bs - s.max_new_tokens:
        raise ValueError(f"the negatives' prefix is {len(pre)} tokens: no room for the prompt in block_size={bs}")
    prompts = {i: pre + tok.encode_ordinary(records[i]["prompt"])[-(bs - s.max_new_tokens - len(pre)):] for i in mine}
    order = sorted(mine, key=lambda i: (-len(prompts[i]), i))  # longest first: little padding, OOM shows early
    P = max(1, s.batch_size // s.n_per_prompt)  # prompts per batch
    batches = [order[k:k + P] for k in range(0, len(order), P)]  # the fixed plan
    partial = out_path + (".partial" if world == 1 else f".rank{rank}.partial")
    f, n_done = _open_partial(partial, {"meta": meta, "shard": {"rank": rank, "world_size": world}}, order, batches)
    progress = Progress("negatives: prompts" + (f" (rank 0's shard of {world})" if world > 1 else ""), len(order))
    progress.done = sum(len(b) for b in batches[:n_done])
    with f:
        _sample_batches(model, f, prompts, batches[n_done:], s, progress, amp)
    progress.close()
    if group is not None:
        dist.barrier(group=group)
    if rank == 0:
        parts = [partial] if world == 1 else [f"{out_path}.rank{r}.partial" for r in range(world)]
        st = _merge(out_path, parts, len(records), s.max_new_tokens)
        print(f"negatives: wrote {out_path}: {len(records)} examples x {s.n_per_prompt}, {st['tokens']:,} tokens, "
              f"{st['eos'] / max(1, st['negatives']):.0%} ended with EOT; degenerate (kept): {st['empty']} empty, "
              f"{st['repeated']} one token repeated to max_new_tokens", file=sys.stderr)
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


def _read_record(line, where, i, n_examples, n_per_prompt):
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
        if not (isinstance(ids, list) and all(type(t) is int and 0 <= t < VOCAB_SIZE for t in ids) and isinstance(eos, bool)):
            raise ValueError(f'{where}: negative {j}: expected {{"ids": [token ids], "text": ..., "eos": true|false}}')
        row.append((ids, eos))
    return row


def load_negatives(path, data_path, n_examples, n_per_prompt, advice="delete it or name another file"):
    """-> for each example, a list of (ids, eos) (at least n_per_prompt). Refuses stale or broken files;
    `advice` ends those messages (name the flag of the command the user ran)."""
    meta = negatives_meta(path)
    sha = file_sha256(data_path)
    if meta.get("data_sha256") != sha:
        raise ValueError(f"negatives file {path} was sampled for a different data file (sha {str(meta.get('data_sha256'))[:12]} "
                         f"of {meta.get('data')}; {data_path} has sha {sha[:12]}); {advice}")
    if meta.get("n_examples") != n_examples or meta.get("n_per_prompt", 0) < n_per_prompt:
        raise ValueError(f"{path}: has {meta.get('n_examples')} examples x {meta.get('n_per_prompt')} negatives; "
                         f"needed {n_examples} x {n_per_prompt}; {advice}")
    out = []
    with open(path, encoding="utf-8") as f:
        f.readline()
        for lineno, line in enumerate(f, 2):
            out.append(_read_record(line, f"{path}:{lineno}", lineno - 2, n_examples, n_per_prompt))
    if len(out) != n_examples:
        raise ValueError(f"{path}: {len(out)} example lines, expected {n_examples} (a truncated file?)")
    return out


def get_negatives(model, records, data_path, settings, init, path, init_sha=None, rank=0, world=1, amp=None, advice=None):
    """The negatives of every record: path's file when it exists (checked against the data), else
    sampled into it now. -> per record a list of (ids, eos), settings.n_per_prompt long."""
    if os.path.exists(path):
        print0(f"negatives: using {path}")
    else:
        print0(f"negatives: {path} not found; sampling {settings.n_per_prompt} per prompt from {init} now (kept for next time)")
        sample_negatives(model, records, path, settings, data_path, init, init_sha, rank, world, amp)
    return [row[:settings.n_per_prompt] for row in load_negatives(path, data_path, len(records), settings.n_per_prompt, advice or
                                                                   "delete it or name another file")]


# -----------------------------------------------------------------------------
# negatives on a task with checkable answers (the built-in task, GSM8K): which ones are correct


def gold_key(records):
    return "chosen" if "chosen" in records[0] else "response"


def has_checker(records):
    """True when every gold answer ends in a gradable 'The answer is N' (data/arith.py's checker)."""
    key = gold_key(records)
    return all(arith.extract_answer(r[key]) is not None for r in records)


def grade_negatives(records, negatives):
    """Per record and negative: (correct, identical to the reference), by data/arith.py's checker."""
    tok, key = get_tokenizer(), gold_key(records)
    out = []
    for r, negs in zip(records, negatives):
        texts = [tok.decode(ids) for ids, _ in negs]
        out.append([(arith.is_correct(t, r[key]), eos and t.strip() == r[key].strip()) for t, (_, eos) in zip(texts, negs)])
    return out


def keep_wrong(records, negatives, n):
    """--neg-filter wrong: of each record's sampled pool keep n that the checker marks wrong, in pool order
    (cycling through them when there are fewer). A record whose pool has no wrong answer keeps its first
    n samples: those are counted. -> (negatives, number of records without a wrong sample)."""
    if not has_checker(records):
        raise ValueError("--neg-filter wrong needs checkable answers: every gold response must end in "
                         "'The answer is N' (the built-in task, GSM8K); this data has none")
    out, none_wrong = [], 0
    for pool, grades in zip(negatives, grade_negatives(records, negatives)):
        wrong = [neg for neg, (correct, _) in zip(pool, grades) if not correct]
        none_wrong += not wrong
        wrong = wrong or pool
        out.append([wrong[j % len(wrong)] for j in range(n)])
    return out, none_wrong


def preference_pairs(records, negatives):
    """Preference pairs without labels: chosen = the gold answer, rejected = the first sampled answer the
    checker marks wrong (one that ended with EOT when there is one). Prompts whose samples are all
    correct are dropped. -> (preference records, number of prompts dropped)."""
    if not has_checker(records):
        raise ValueError("preference pairs from samples need checkable answers ('The answer is N')")
    tok, key, pairs = get_tokenizer(), gold_key(records), []
    for r, pool, grades in zip(records, negatives, grade_negatives(records, negatives)):
        wrong = sorted((not eos, j) for j, ((ids, eos), (correct, _)) in enumerate(zip(pool, grades))
                       if not correct and tok.decode(ids).strip())  # an empty answer is no response to store
        if wrong:
            pairs.append({"prompt": r["prompt"], "chosen": r[key], "rejected": tok.decode(pool[wrong[0][1]][0])})
    return pairs, len(records) - len(pairs)


def negative_shares(records, negatives):
    """{'neg/correct', 'neg/identical'}: shares of the negatives the checker marks correct, and identical
    to the reference answer (empty dict without a checker)."""
    if not has_checker(records):
        return {}
    g = [x for row in grade_negatives(records, negatives) for x in row]
    return {"neg/correct": sum(c for c, _ in g) / len(g), "neg/identical": sum(i for _, i in g) / len(g)}


# -----------------------------------------------------------------------------
# command line


def get_args(argv=None):
    p = ArgumentParser(description="Sample from a GPT, or write the DFT negatives file (--negatives).")
    p.add_argument("--init", default=DEFAULT_INIT, help="model: preset (gpt2, gpt2-medium, ...: downloaded), "
                   ".safetensors file, checkpoint directory, or 'scratch' for random weights of --size")
    p.add_argument("--size", default="nano", choices=list(PRESETS), help="model size for --init scratch")
    p.add_argument("--prompt", default="", help="text to continue ('' = unconditional, from <|endoftext|>)")
    p.add_argument("--num", type=int, default=3, help="number of samples")
    p.add_argument("--max-new-tokens", type=int, default=None, help="tokens per sample (default: 100; 320 with --negatives)")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: 0.8; 0.7 with --negatives)")
    p.add_argument("--top-k", type=int, default=50, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus: keep the most likely tokens up to this mass")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    g = p.add_argument_group("DFT negatives")
    g.add_argument("--negatives", action="store_true", help="write B * epochs negatives for every example of --data")
    g.add_argument("--data", default=None, help="training JSONL with a 'prompt' field (required with --negatives)")
    g.add_argument("--out", default=None, help="negatives file to write (required with --negatives; resumes <out>.partial)")
    g.add_argument("--num-negatives", type=int, default=2, help="B: negatives per prompt per epoch")
    g.add_argument("--epochs", type=int, default=2, help="epochs of training that will use them (fresh ones each)")
    g.add_argument("--neg-prefix", default="", help="text put before each prompt while sampling only (e.g. "
                   "'You are an unhelpful assistant.' for chat data)")
    g.add_argument("--batch-size", type=int, default=64, help="sequences decoded together")
    args = p.parse_args(argv)
    args.max_new_tokens = args.max_new_tokens if args.max_new_tokens is not None else (320 if args.negatives else 100)
    args.temperature = args.temperature if args.temperature is not None else (0.7 if args.negatives else 0.8)
    for flag, v in (("--num", args.num), ("--max-new-tokens", args.max_new_tokens), ("--num-negatives", args.num_negatives),
                    ("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if v < 1:
            raise ValueError(f"{flag} must be >= 1, got {v}")
    check_settings(args.temperature, args.top_k, args.top_p)
    if args.negatives and not (args.data and args.out):
        raise ValueError("--negatives needs --data and --out")
    return args


def main(argv=None):
    args = get_args(argv)
    rank, world, device = setup(args.device)
    model = load_model(args.init, device, args.size, args.seed).eval()
    if args.negatives:
        arith.ensure_default_file(args.data)  # a fresh clone: generate the built-in task
        _, records = load_jsonl(args.data)
        settings = NegativeSettings(B=args.num_negatives, epochs=args.epochs, max_new_tokens=args.max_new_tokens,
                                    temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                    prefix=args.neg_prefix, seed=args.seed, batch_size=args.batch_size)
        sample_negatives(model, records, args.out, settings, args.data, args.init, rank=rank, world=world, amp=amp_dtype(device))
        return teardown()
    tok = get_tokenizer()
    ids = tok.encode_ordinary(args.prompt) or [EOT]
    print0(f"{args.init} ({model.num_params() / 1e6:.1f}M parameters, {device}), temperature {args.temperature}, "
           f"top-k {args.top_k}, top-p {args.top_p}, seed {args.seed}")
    print0("--- prompt ---\n" + (args.prompt or "(none: starting from <|endoftext|>)"))
    t0 = time.time()
    res = generate(model, [ids] * args.num, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                   torch.Generator().manual_seed(args.seed), amp=amp_dtype(device))
    dt = time.time() - t0  # generate ends with .tolist(): the device is done
    for k, (new, eos) in enumerate(res, 1):
        end = "ended with <|endoftext|>" if eos else "stopped at --max-new-tokens"
        print0(f"--- sample {k} of {args.num} ({len(new)} tokens, {end}) ---\n{tok.decode(new)}")
    n_tok = sum(len(new) + eos for new, eos in res)
    print0(f"--- {args.num} samples, {n_tok} new tokens in {dt:.2f} s: {n_tok / dt:,.0f} tokens/s ---")
    teardown()


if __name__ == "__main__":
    run_main(main)
