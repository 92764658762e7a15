"""
DFT's negatives: for every training prompt, B * epochs answers sampled ONCE from the starting model,
before training. Epoch e trains on a prompt's negatives [e*B, (e+1)*B), so every epoch sees fresh
ones.

Why sample from the starting model: DFT's normalizer, the sum over all answers y' of exp(s(y')/tau),
is an expectation under the base model pi_0, E_{y'~pi_0}[exp(s(y')/tau) / pi_0(y'|x)], and B samples
per prompt and epoch estimate it (docs/ALGORITHMS.md, "DFT"). They are drawn once, up front, and
cached: every loss that reads negatives (DFT, DFT2, and DPO/ASFT on data without rejected answers)
trains on the same file.

    python negatives.py --data data/arith/train.jsonl --out out/negs.jsonl --max-new-tokens 64
    torchrun --standalone --nproc_per_node=2 negatives.py --data data/arith/train.jsonl \\
        --out out/negs2.jsonl --max-new-tokens 64
    python -m pytest -q tests/test_negatives.py

The file (JSONL) starts with {"meta": {...}}: every sampling setting (NegativeSettings), what they
were sampled for and from (Origin: the data's and the weights' sha256), n_per_prompt, created,
nanodft_version. Then one line per example, in data order:
    {"i": 0, "negatives": [{"ids": [...], "text": "...", "eos": true}, ...]}
ids exclude the EOT; eos=false means it stopped at max_new_tokens (scored without an EOT). Reading a
file checks its header against what the reader expects and names every field that differs.

Reproducibility: example i's random numbers come from a generator seeded by (seed, i) alone, so its
negatives do not depend on sharding, batching or resumption (up to float rounding of batched
kernels, which can move a sample only when a uniform falls within ~1e-7 of a CDF step). Sampling is
resumable and byte-identical: records are appended per batch to <out>.partial, batches are a fixed
plan, and a restart keeps the complete batches and redoes the rest with the very same batches (the
machinery is below the second rule of this file).
"""

import datetime
import hashlib
import json
import os
import sys
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from common import (DEVICE_HELP, ArgumentParser, Progress, amp_dtype, atomic_path, file_lock,
                    file_sha256, open_fraction, nonneg_float, nonneg_int, positive_int, print0,
                    rank_and_world, run_main, setup, teardown)
from data import arith
from data.format import load_jsonl
from data.tokenizer import VOCAB_SIZE, get_tokenizer
from model import DEFAULT_INIT, load_model, weights_sha256
from sample import Decoding, check_settings, sample_rows

VERSION = "3"
# the chat recipe's instruction, put before the prompt while sampling only (--neg-prefix auto)
CHAT_PREFIX = "You are an unhelpful assistant."


@dataclass(frozen=True)
class NegativeSettings:
    """Everything that decides what a negatives file holds.

    NOTE: the proposal is not pi_0. The published recipe samples at temperature 0.7 with top-k 50,
    while DFT's importance weights use logp_0 at temperature 1 (train.py scores the negatives with
    the starting model), so the weights are biased; temperature 1 with top_k 0 is the exact
    proposal."""

    B: int = 2  # negatives per prompt per epoch
    epochs: int = 2  # epochs of training that use them: epoch e takes [e*B, (e+1)*B)
    pool: int = 1  # sample this many times more; train.py --neg-filter wrong keeps the wrong ones
    max_new_tokens: int = 320  # per negative (256 in the published math setting)
    temperature: float = 0.7
    top_k: int = 50  # 0 = off
    top_p: float = 1.0
    prefix: str = ""  # put in front of the prompt while sampling only (the chat recipe)
    seed: int = 0
    batch_size: int = 64  # sequences decoded together (batched kernels round differently)

    @property
    def n_per_prompt(self):
        return self.B * self.epochs * self.pool

    def check(self, block_size):
        check_settings(self.temperature, self.top_k, self.top_p)
        for name in ("B", "epochs", "pool", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"negatives: {name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.max_new_tokens < block_size:
            raise ValueError(f"negatives: max_new_tokens must be in [1, block_size={block_size}), "
                             f"got {self.max_new_tokens}")


@dataclass(frozen=True)
class Origin:
    """What the negatives are sampled for and from; part of the file's header, checked when read."""

    data: str  # the training file (its path is informative; its sha256 is checked)
    data_sha256: str
    n_examples: int
    init: str  # the starting model (likewise: its weights' sha256 is checked)
    init_sha256: str


def origin_of(data_path, n_examples, model, init):
    return Origin(data_path, file_sha256(data_path), n_examples, init, weights_sha256(model, init))


def example_seed(seed, i):
    """Example i's random numbers come from this seed alone (not from its batch, rank or restart).
    A hash of both numbers, so no two (seed, i) pairs share a stream."""
    digest = hashlib.sha256(f"nanodft-negatives:{seed}:{i}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def epoch_columns(epoch, B):
    """Which of a prompt's negatives epoch e trains on: [e*B, (e+1)*B), fresh ones every epoch."""
    return slice(epoch * B, (epoch + 1) * B)


def sample_negatives(model, records, path, settings, origin, amp=None):
    """Write settings.n_per_prompt negatives for every record (dicts with "prompt") to path. Under
    torchrun every rank calls this: rank r samples examples r, r+W, ... and rank 0 merges them.
    amp: the autocast dtype (common.amp_dtype), None = fp32."""
    s, block_size = settings, model.config.block_size
    s.check(block_size)
    rank, world = rank_and_world()
    tok, mine = get_tokenizer(), range(rank, len(records), world)
    prefix = tok.encode_ordinary(s.prefix)
    # prompt + new tokens must fit in the model's positions; a longer prompt keeps its END, as
    # training keeps it (train.py makes sure this room is at least --max-prompt-len)
    room = block_size - s.max_new_tokens - len(prefix)
    if room < 1:
        raise ValueError(f"negatives: {s.max_new_tokens} new tokens and a {len(prefix)}-token "
                         f"prefix leave no room for the prompt in the model's {block_size} "
                         "positions")
    prompts = {i: prefix + tok.encode_ordinary(records[i]["prompt"])[-room:] for i in mine}
    # longest first: little padding per batch, and running out of memory shows at once
    order = sorted(mine, key=lambda i: (-len(prompts[i]), i))
    per_batch = max(1, s.batch_size // s.n_per_prompt)
    plan = [order[k : k + per_batch] for k in range(0, len(order), per_batch)]
    header = {"meta": header_of(s, origin), "shard": {"rank": rank, "world_size": world}}
    partial = path + (".partial" if world == 1 else f".rank{rank}.partial")
    f, n_done = _open_partial(partial, header, order, plan)
    what = "negatives: prompts" + (f" (rank 0's shard of {world})" if world > 1 else "")
    progress = Progress(what, len(order), initial=sum(len(b) for b in plan[:n_done]))
    with f:
        for batch in plan[n_done:]:
            rows = _sample_batch(model, prompts, batch, s, amp)
            _append(f, batch, rows, s.n_per_prompt)
            progress.update(progress.done + len(batch))
    progress.close()
    _merge_shards(path, partial, len(records), s.max_new_tokens)


def _sample_batch(model, prompts, batch, s, amp):
    """One batch of the plan: n_per_prompt samples of each of its prompts, each example's from its
    own generator (seeded by example_seed), so they do not depend on which examples share the
    batch."""
    rows = [prompts[i] for i in batch for _ in range(s.n_per_prompt)]
    uniforms = []
    for i in batch:
        gen = torch.Generator().manual_seed(example_seed(s.seed, i))
        # (n_per_prompt, max_new_tokens) for example i
        shape = (s.n_per_prompt, s.max_new_tokens)
        uniforms.append(torch.rand(shape, dtype=torch.float64, generator=gen))
    how = Decoding(s.temperature, s.top_k, s.top_p)
    return sample_rows(model, rows, torch.cat(uniforms), how, amp)


def get_negatives(model, records, settings, origin, path, allow=()):
    """The negatives of every record, per record a list of (ids, eos) settings.n_per_prompt long:
    path's file when it exists (its header must match settings and origin, apart from the fields in
    allow), else sampled into it now. A second process asking for the same file while it is being
    sampled waits for it, then reads it."""
    rank, world = rank_and_world()
    # the ranks may wait long: for another run's sampling, or for a slower rank's shard
    group = patient_group() if world > 1 else None
    waiting = f"negatives: waiting for another process sampling {path}"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with file_lock(path + ".lock", waiting=waiting) if rank == 0 else nullcontext():
        _barrier(group)
        if os.path.exists(path):
            print0(f"negatives: using {path}")
        else:
            print0(f"negatives: {path} not found; sampling {settings.n_per_prompt} per prompt "
                   f"from {origin.init} now (kept for next time)")
            sample_negatives(model, records, path, settings, origin, amp_dtype(_device(model)))
        _barrier(group)
    if group is not None:
        dist.destroy_process_group(group)
    expected = header_of(settings, origin)
    advice = "delete it to sample anew, or pass another file with --negatives"
    return read_negatives(path, expected, allow, advice)


def _device(model):
    return next(model.parameters()).device


def patient_group():
    """A gloo group with a 12-hour timeout, for ranks that wait on sampling (their own run's or
    another's): NCCL's watchdog would kill a rank that waits that long."""
    return dist.new_group(backend="gloo", timeout=datetime.timedelta(hours=12))


def _barrier(group):
    if group is not None:
        dist.barrier(group=group)


def negatives_path(cache_dir, settings, origin):
    """train.py's cache file: named after the data file, with a short hash of its path, the number
    of its examples used, the starting weights and every sampling setting, so no two samplings share
    a name."""
    key = [os.path.abspath(origin.data), origin.n_examples, origin.init_sha256, asdict(settings)]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    stem = os.path.splitext(os.path.basename(origin.data))[0]
    return os.path.join(cache_dir, f"{stem}-{digest}.jsonl")


# -----------------------------------------------------------------------------
# negatives on a task with checkable answers (the built-in task, GSM8K): which ones are correct


def grade_negatives(records, negatives):
    """Per record and negative: (correct, identical to the gold answer), by the task's checker."""
    tok = get_tokenizer()
    texts = [[(tok.decode(ids), eos) for ids, eos in row] for row in negatives]
    return arith.grade(records, texts)


def keep_wrong(records, negatives, n):
    """--neg-filter wrong: of each record's sampled pool keep n that the checker marks wrong, in
    pool order (cycling through them when there are fewer). A record whose pool has no wrong answer
    keeps its first n samples: those are counted. -> (negatives, records without a wrong sample)."""
    arith.require_checker(records, "--neg-filter wrong")
    out, none_wrong = [], 0
    for pool, grades in zip(negatives, grade_negatives(records, negatives)):
        wrong = [neg for neg, (correct, _) in zip(pool, grades) if not correct]
        none_wrong += not wrong
        wrong = wrong or pool
        out.append([wrong[j % len(wrong)] for j in range(n)])
    return out, none_wrong


def preference_pairs(records, negatives):
    """Preference pairs without labels: chosen = the gold answer, rejected = the first sampled
    answer the checker marks wrong (one that ended with EOT when there is one). Prompts whose
    samples are all correct are dropped. -> (preference records, number of prompts dropped)."""
    arith.require_checker(records, "preference pairs from samples")
    tok, key, pairs = get_tokenizer(), arith.gold_key(records), []
    for r, pool, grades in zip(records, negatives, grade_negatives(records, negatives)):
        # (ended without EOT, index) of the wrong, non-empty answers: EOT-ended ones sort first
        wrong = [(not eos, j) for j, ((ids, eos), (correct, _)) in enumerate(zip(pool, grades))
                 if not correct and tok.decode(ids).strip()]
        if wrong:
            rejected = pool[min(wrong)[1]][0]
            pair = {"prompt": r["prompt"], "chosen": r[key], "rejected": tok.decode(rejected)}
            pairs.append(pair)
    return pairs, len(records) - len(pairs)


def negative_shares(records, negatives):
    """{'neg/correct', 'neg/identical'}: shares of the negatives the checker marks correct, and
    identical to the gold answer (an empty dict without a checker)."""
    if not arith.has_checker(records):
        return {}
    grades = [g for row in grade_negatives(records, negatives) for g in row]
    n = len(grades)
    return {"neg/correct": sum(c for c, _ in grades) / n,
            "neg/identical": sum(same for _, same in grades) / n}


# -----------------------------------------------------------------------------
# the file: its header, reading it back checked, and the resumable, sharded writing


def header_of(settings, origin):
    return dict(asdict(settings), n_per_prompt=settings.n_per_prompt, **asdict(origin),
                nanodft_version=VERSION)


# fields of a header that may differ without changing what the file holds
INFORMATIVE = ("created", "data", "init")


def read_header(path):
    """The {"meta": ...} line of a negatives file, checked."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such negatives file")
    with open(path, "rb") as f:
        first = f.readline()
    try:
        meta = json.loads(first)["meta"]
        assert isinstance(meta, dict)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise ValueError(f'{path}:1: expected the line {{"meta": {{...}}}} of a negatives file '
                         "(negatives.py writes them); delete it or resample it") from None
    if meta.get("nanodft_version") != VERSION:
        raise ValueError(f"{path}:1: nanodft_version {meta.get('nanodft_version')!r}, expected "
                         f"{VERSION!r}; delete it to resample")
    return meta


def header_diff(meta, expected, allow=()):
    """'field: file's value -> expected value' for each expected field that differs."""
    return [f"{k}: {meta.get(k)!r} -> {v!r}" for k, v in expected.items()
            if k not in INFORMATIVE and k not in allow and meta.get(k) != v]


def read_negatives(path, expected, allow=(), advice="delete it or name another file"):
    """-> per example a list of (ids, eos), meta["n_per_prompt"] long. expected: the header fields
    this file must hold (e.g. header_of(settings, origin), or only data_sha256 and n_examples); a
    mismatch names every field that differs, unless allowed. `advice` ends the messages."""
    meta = read_header(path)
    diff = header_diff(meta, expected, allow)
    if diff:
        raise ValueError(f"{path}: sampled with other settings ({'; '.join(diff)}); {advice}")
    n_examples, n_per_prompt = meta.get("n_examples"), meta.get("n_per_prompt")
    out = []
    with open(path, "rb") as f:
        f.readline()
        for lineno, line in enumerate(f, 2):
            where = f"{path}:{lineno}"
            out.append(_read_record(line, where, lineno - 2, n_examples, n_per_prompt))
    if len(out) != n_examples:
        raise ValueError(f"{path}: {len(out)} example lines, expected {n_examples} (a truncated "
                         f"file?); {advice}")
    return out


def _read_record(line, where, i, n_examples, n_per_prompt):
    try:
        rec = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{where}: not a JSON line ({getattr(e, 'msg', e)})") from None
    if not isinstance(rec, dict) or rec.get("i") != i or i >= n_examples:
        raise ValueError(f'{where}: expected {{"i": {i}, "negatives": [...]}} '
                         "(one line per example, in data order)")
    negs = rec.get("negatives")
    if not isinstance(negs, list) or len(negs) != n_per_prompt:
        raise ValueError(f"{where}: expected a list of {n_per_prompt} negatives")
    row = []
    for j, neg in enumerate(negs):
        ids, eos = (neg.get("ids"), neg.get("eos")) if isinstance(neg, dict) else (None, None)
        ok_ids = isinstance(ids, list) and all(type(t) is int and 0 <= t < VOCAB_SIZE for t in ids)
        if not (ok_ids and isinstance(eos, bool)):
            raise ValueError(f'{where}: negative {j}: expected '
                             '{"ids": [token ids], "text": ..., "eos": true|false}')
        row.append((ids, eos))
    return row


def _open_partial(path, header, order, plan):
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
        diff = header_diff(old["meta"], header["meta"])
        diff += [f"shard {k}" for k in header["shard"] if old["shard"].get(k) != header["shard"][k]]
    except (ValueError, KeyError, TypeError, AttributeError):
        diff = ["the first line is not a header"]
    if diff:
        raise ValueError(f"{path}: left by an interrupted run with other settings "
                         f"({'; '.join(diff)}); delete it to start over")
    n_complete = 0  # complete records, in plan order
    for line in lines[1:-1]:
        try:
            ok = n_complete < len(order) and json.loads(line)["i"] == order[n_complete]
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            break
        n_complete += 1
    n_done = kept = 0
    while n_done < len(plan) and kept + len(plan[n_done]) <= n_complete:
        kept += len(plan[n_done])
        n_done += 1
    with open(path, "r+b") as f:
        f.truncate(sum(len(line) + 1 for line in lines[: 1 + kept]))
    return open(path, "a", encoding="utf-8"), n_done


def _append(f, batch, rows, n_per_prompt):
    """One batch's records, flushed and fsynced: a crash loses at most the batch being written."""
    tok = get_tokenizer()
    for j, i in enumerate(batch):
        mine = rows[j * n_per_prompt : (j + 1) * n_per_prompt]
        negs = [{"ids": ids, "text": tok.decode(ids), "eos": eos} for ids, eos in mine]
        f.write(json.dumps({"i": i, "negatives": negs}, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def _merge_shards(path, partial, n_examples, max_new_tokens):
    """Every rank waits for every shard; rank 0 interleaves them into data order and writes the file
    atomically; every rank returns once it exists."""
    rank, world = rank_and_world()
    group = patient_group() if world > 1 else None
    _barrier(group)
    if rank == 0:
        parts = [partial] if world == 1 else [f"{path}.rank{r}.partial" for r in range(world)]
        st = _merge(path, parts, n_examples, max_new_tokens)
        print(f"negatives: wrote {path}: {n_examples} examples x {st['per_prompt']}, "
              f"{st['tokens']:,} tokens, {st['eos'] / max(1, st['negatives']):.0%} ended with EOT; "
              f"degenerate (kept): {st['empty']} empty, {st['repeated']} one token repeated to "
              "max_new_tokens", file=sys.stderr)
    _barrier(group)
    if group is not None:
        dist.destroy_process_group(group)


def _merge(out_path, parts, n_examples, max_new_tokens):
    """Interleave the ranks' records into data order and write out_path atomically. -> stats."""
    meta, lines = None, {}
    stats = dict(negatives=0, eos=0, empty=0, repeated=0, tokens=0, per_prompt=0)
    for part in parts:
        with open(part, encoding="utf-8") as f:
            header = json.loads(f.readline())
            meta = meta or header["meta"]  # rank 0's (the first part)
            for line in f:
                rec = json.loads(line)
                lines[rec["i"]] = line
                stats["per_prompt"] = len(rec["negatives"])
                for neg in rec["negatives"]:
                    ids = neg["ids"]
                    stats["negatives"] += 1
                    stats["eos"] += neg["eos"]
                    stats["tokens"] += len(ids)
                    stats["empty"] += len(ids) == 0
                    stats["repeated"] += len(ids) == max_new_tokens and len(set(ids)) == 1
    missing = [i for i in range(n_examples) if i not in lines]
    if missing:
        raise RuntimeError(f"{out_path}: merging rank files, {len(missing)} examples missing "
                           f"(first: {missing[0]})")
    meta["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with atomic_path(out_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
        f.writelines(lines[i] for i in range(n_examples))
    for part in parts:
        os.remove(part)
    return stats


# -----------------------------------------------------------------------------
# command line


def get_args(argv=None):
    p = ArgumentParser(description="Write the DFT negatives file of a training set.")
    p.add_argument("--data", required=True, help="training JSONL with a 'prompt' field")
    p.add_argument("--out", required=True, help="negatives file to write (resumes <out>.partial)")
    p.add_argument("--init", default=DEFAULT_INIT, help="the starting model: a preset (gpt2, "
                   "gpt2-medium, ...: downloaded), a .safetensors file or a checkpoint directory")
    p.add_argument("--num-negatives", type=positive_int, default=2,
                   help="B: negatives per prompt per epoch")
    p.add_argument("--epochs", type=positive_int, default=2,
                   help="epochs of training that will use them")
    p.add_argument("--max-new-tokens", type=positive_int, default=320, help="tokens per negative")
    p.add_argument("--temperature", type=nonneg_float, default=0.7,
                   help="sampling temperature (0: greedy)")
    p.add_argument("--top-k", type=nonneg_int, default=50,
                   help="keep the k most likely tokens (0: off)")
    p.add_argument("--top-p", type=open_fraction, default=1.0,
                   help="nucleus: keep the most likely tokens up to this mass")
    p.add_argument("--prefix", default="",
                   help=f"text put before each prompt while sampling only, e.g. '{CHAT_PREFIX}'")
    p.add_argument("--seed", type=int, default=0, help="the seed of every example's random numbers")
    p.add_argument("--batch-size", type=positive_int, default=64, help="sequences decoded together")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    args = p.parse_args(argv)
    check_settings(args.temperature, args.top_k, args.top_p)
    return args


def main(argv=None):
    args = get_args(argv)
    _, _, device = setup(args.device)
    model = load_model(args.init, device).eval()
    arith.ensure_default_file(args.data)  # a fresh clone: generate the built-in task
    records = load_jsonl(args.data).records
    settings = NegativeSettings(B=args.num_negatives, epochs=args.epochs,
                                max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                top_k=args.top_k, top_p=args.top_p, prefix=args.prefix,
                                seed=args.seed, batch_size=args.batch_size)
    get_negatives(model, records, settings, origin_of(args.data, len(records), model, args.init),
                  args.out)
    teardown()


if __name__ == "__main__":
    run_main(main)
