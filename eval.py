"""
Held-out likelihood (and exact match) of one or more checkpoints, side by side.

Held-out likelihood asks how probable the model finds answers it was not trained on, scored with
exactly the training tokenization and masking (data/format.py): only response tokens and the
closing EOT count, never the prompt or the padding. On a held-out JSONL file:

  nll, ppl        total NLL of the positives (SFT "response" / preference "chosen") / total scored
                  tokens, and exp(nll)
  logp/pos, /neg  mean summed log-prob of positives and of negatives (ALL the negatives of each
                  example in a --negatives file from sample.py, or the "rejected" of preference
                  data)
  pref_acc        fraction of (positive, negative) pairs with logp(pos) > logp(neg) (a tie loses);
  pref_acc/avg    the same with length-normalized log-probs (logp / n_tokens)
  exact_match     greedy decoding (temperature 0) graded by data.arith.is_correct against the gold
                  response; with --exact-match, or automatically when every positive has a
                  gradable "The answer is N" (data.arith.extract_answer)
  neg/correct     with that checker: the share of the negatives that are correct answers, and
  neg/identical   the share identical to the reference answer (DFT pushes both down)
  pref_acc/wrong  pref_acc over the pairs whose negative the checker marks wrong
  n_examples, n_tokens (scored positive tokens), n_pairs, n_truncated (positives cut to --max-len)

Why sums, not means: nll is a token mean over the WHOLE set. Averaging per-batch (or per-rank) means
would weigh a batch of short answers like one of long answers and depend on batch size and the
number of ranks. So every rank fills in per-example SUMS and COUNTS (summed log-probs, token counts,
0/1 correctness) for its strided shard, one all_reduce(SUM) merges them (the other ranks hold zeros
there), and only then are ratios taken. 2 ranks, 1 rank, batch size 1 or 64: the same numbers.

    python eval.py --init data/base out/sft/final out/dft/final --data data/arith/test.jsonl
    python eval.py --init base=data/base dft=out/dft/final --json out/eval.json
    (compare.py trains several losses and tabulates them; it calls evaluate() below)
    python eval.py --init gpt2 --data heldout.jsonl --negatives out/heldout-negs.jsonl
    torchrun --standalone --nproc_per_node=2 eval.py --init data/base --data data/arith/test.jsonl
    python -m pytest -q tests/test_eval.py
"""

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common import (DEVICE_HELP, ArgumentParser, Progress, amp_dtype, autocast, file_sha256,
                    positive_int, print0, run_main, setup, teardown, write_json)
from data import arith
from data.format import (MAX_LEN_HELP, MAX_PROMPT_LEN_HELP, collate, load_jsonl, resolve_lengths,
                         tokenize)
from data.tokenizer import get_tokenizer
from model import load_model
from negatives import grade_negatives, read_negatives
from sample import GREEDY, generate

# greedy tokens per prompt for exact match: the one default of eval.py and train.py
MAX_NEW_TOKENS = 128


@dataclass(frozen=True)
class EvalSettings:
    """How held-out data is scored: with training's lengths, greedy decoding, in batches."""

    max_len: int = 256  # the truncation of training (data/format.py)
    max_prompt_len: int = 128
    max_new_tokens: int = MAX_NEW_TOKENS  # greedy tokens per prompt for exact match
    batch_size: int = 32  # sequences per forward pass (per rank)
    exact_match: bool = None  # None: when every gold answer has the task's checker
    amp: object = None  # the autocast dtype (common.amp_dtype), None = fp32
    progress: bool = True


# the table's row order
METRICS = ("nll", "ppl", "logp/pos", "logp/neg", "logp/neg/wrong", "pref_acc", "pref_acc/avg",
           "pref_acc/wrong", "exact_match", *(f"mistake/{kind}" for kind in arith.MISTAKES[1:]),
           "neg/correct", "neg/identical", "n_examples", "n_tokens", "n_pairs", "n_truncated")


def preference_accuracy(pos, neg):
    """pos (N,), neg (N, K) with NaN where a pair does not count -> fraction of the valid pairs (i,
    j) with pos[i] > neg[i, j] (NaN if there are none). A tie counts as wrong."""
    valid = ~torch.isnan(neg)  # (N, K)
    wins = (pos[:, None] > neg) & valid  # (N, K)
    return wins.sum().item() / valid.sum().item() if valid.any() else float("nan")


def compute_metrics(pos, neg=None, answers=None):
    """Metrics from per-example sums. pos (N, 3): summed logp, scored tokens, truncated (0/1) of
    each positive; neg (N, 4, K): logp, tokens, correct, identical of each negative (tokens == 0
    where an example has no j-th negative; correct and identical are NaN without a checker), or
    None; answers (N,): the index in arith.MISTAKES of each greedy answer's kind (0: correct), or
    None without exact match. Returns a dict of python floats."""
    pos_lp, pos_n = pos[:, 0], pos[:, 1]
    n_tok = pos_n.sum().item()
    m = {"nll": -pos_lp.sum().item() / n_tok}
    # NaN weights give a NaN nll: show NaN, not an infinite perplexity
    m["ppl"] = math.exp(m["nll"]) if m["nll"] < 700 or math.isnan(m["nll"]) else float("inf")
    m["logp/pos"] = pos_lp.mean().item()
    if neg is not None and (neg[:, 1] > 0).any():
        m.update(_negative_metrics(pos_lp, pos_n, neg))
    if answers is not None:
        m["exact_match"] = (answers == 0).double().mean().item()
        for k, kind in enumerate(arith.MISTAKES[1:], 1):
            m[f"mistake/{kind}"] = (answers == k).double().mean().item()
    m.update(n_examples=float(len(pos_lp)), n_tokens=float(n_tok),
             n_truncated=pos[:, 2].sum().item())
    return m


def _negative_metrics(pos_lp, pos_n, neg):
    neg_lp, neg_n, neg_correct, neg_identical = neg.unbind(1)  # (N, K) each
    has = neg_n > 0  # (N, K)
    nan = torch.full_like(neg_lp, float("nan"))
    m = {"logp/neg": neg_lp[has].mean().item()}
    m["pref_acc"] = preference_accuracy(pos_lp, torch.where(has, neg_lp, nan))
    avg = torch.where(has, neg_lp / neg_n.clamp(min=1), nan)
    m["pref_acc/avg"] = preference_accuracy(pos_lp / pos_n, avg)
    m["n_pairs"] = float(has.sum().item())
    if not neg_correct.isnan().all():  # the task's checker graded them
        wrong = torch.where(has & (neg_correct == 0), neg_lp, nan)
        m["pref_acc/wrong"] = preference_accuracy(pos_lp, wrong)
        # how likely the model finds the base model's own wrong answers
        m["logp/neg/wrong"] = wrong[~wrong.isnan()].mean().item()
        m["neg/correct"] = neg_correct[has].mean().item()
        m["neg/identical"] = neg_identical[has].mean().item()
    return m


@torch.no_grad()
def score(model, seqs, batch_size, amp=None, progress=None):
    """The repository's one scoring loop. seqs: list of (ids, n_prompt) -> summed logps (S,) float64
    and scored-token counts (S,), in input order. Batches are formed after sorting by length, so
    little of each is padding. amp: the autocast dtype (common.amp_dtype), None = fp32."""
    device = next(model.parameters()).device
    lp = torch.zeros(len(seqs), dtype=torch.float64)
    n = torch.zeros(len(seqs), dtype=torch.float64)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        x, y, mask = (t.to(device) for t in collate([seqs[i] for i in idx]))  # (B, T) each
        with autocast(device, amp):
            b_lp, b_n = model.logps(x, y, mask)  # (B,), (B,)
        lp[idx], n[idx] = b_lp.double().cpu(), b_n.double().cpu()
        if progress:
            progress.update(s + len(idx))
    return lp, n


def greedy_answers(model, prompts, golds, settings, progress=None):
    """Greedy-decode each prompt (a list of token ids) and grade it: (P,) float64, the index in
    arith.MISTAKES of each answer's kind (0: correct). Prompts keep their last max_prompt_len tokens
    (as training keeps the end), and the answer is capped at the block_size - max_prompt_len
    positions left after them."""
    tok, out = get_tokenizer(), torch.zeros(len(prompts), dtype=torch.float64)
    room = model.config.block_size - settings.max_prompt_len
    new_tokens = min(settings.max_new_tokens, room)
    prompts = [p[-settings.max_prompt_len:] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for s in range(0, len(order), settings.batch_size):
        idx = order[s:s + settings.batch_size]
        answers = generate(model, [prompts[i] for i in idx], new_tokens, GREEDY, amp=settings.amp)
        for i, (new_ids, _eos) in zip(idx, answers):
            kind = arith.mistake(tok.decode(list(new_ids)), golds[i])
            out[i] = float(arith.MISTAKES.index(kind))
        if progress:
            progress.update(s + len(idx))
    return out


@torch.no_grad()
def evaluate(model, records, negatives=None, settings=EvalSettings()):
    """Held-out metrics of `model` on records (dicts with prompt + response, or prompt + chosen +
    rejected). negatives: None, or per example a list of (token ids, eos)
    (negatives.read_negatives); preference data uses its "rejected" when negatives is None. Under an
    initialized torch.distributed group each rank scores a strided shard and per-example sums are
    all-reduced; every rank returns the same dict of python floats."""
    if not records:
        raise ValueError("evaluate: no records")
    if negatives is not None and len(negatives) != len(records):
        raise ValueError(f"evaluate: {len(negatives)} negative lists for {len(records)} records")
    tok, checker = get_tokenizer(), arith.has_checker(records)
    if negatives is None and "rejected" in records[0]:
        rejected = tok.encode_ordinary_batch([r["rejected"] for r in records])
        negatives = [[(ids, True)] for ids in rejected]
    # exact match asked for on data without checkable answers: nothing to grade, shown as n/a
    ungradable = bool(settings.exact_match) and not checker
    exact_match = checker if settings.exact_match is None else settings.exact_match and checker
    was_training = model.training
    model.eval()
    try:
        sums = _example_sums(model, records, negatives, settings, exact_match)
    finally:
        model.train(was_training)
    pos, neg, answers = sums["pos"][:, :3], sums["neg"], sums["pos"][:, 3]
    metrics = compute_metrics(pos, neg if neg.shape[2] else None, answers if exact_match else None)
    if ungradable:
        metrics["exact_match"] = None
    return metrics


def _example_sums(model, records, negatives, settings, exact_match):
    """Per-example sums, each slot filled in by the one rank whose strided shard holds the example
    (the others hold zeros there) and summed over ranks: {"pos": (N, 4), "neg": (N, 4, K)}."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    N, K = len(records), max((len(v) for v in negatives), default=0) if negatives else 0
    mine = list(range(rank, N, world))
    recs = [records[i] for i in mine]
    negs = [negatives[i] for i in mine] if negatives else None
    pos, neg_seqs, cut = tokenize(get_tokenizer(), recs, settings.max_len, settings.max_prompt_len,
                                  negs)
    t = {
        "pos": torch.zeros(N, 4, dtype=torch.float64),  # logp, n_tokens, truncated, answer kind
        "neg": torch.zeros(N, 4, K, dtype=torch.float64),  # logp, n_tokens, correct, identical
    }
    progress = Progress("scoring sequences", len(pos) + sum(map(len, neg_seqs)),
                        on=settings.progress)
    lp, n = score(model, pos + [s for row in neg_seqs for s in row], settings.batch_size,
                  settings.amp, progress)
    progress.close()
    t["pos"][mine, 0], t["pos"][mine, 1] = lp[: len(pos)], n[: len(pos)]
    t["pos"][mine, 2] = torch.tensor(cut, dtype=torch.float64)
    k = len(pos)
    for i, row in zip(mine, neg_seqs):
        t["neg"][i, 0, : len(row)], t["neg"][i, 1, : len(row)] = (lp[k : k + len(row)],
                                                                  n[k : k + len(row)])
        k += len(row)
    if K and not arith.has_checker(records):
        t["neg"][:, 2:] = float("nan")  # nothing to grade them with
    elif negs:
        for i, grades in zip(mine, grade_negatives(recs, negs)):
            for j, (correct, same) in enumerate(grades):
                t["neg"][i, 2, j], t["neg"][i, 3, j] = float(correct), float(same)
    if exact_match:
        progress = Progress("greedy decoding prompts", len(mine), on=settings.progress)
        golds = [r[arith.gold_key(recs)] for r in recs]
        prompts = [ids[:n_prompt] for ids, n_prompt in pos]
        t["pos"][mine, 3] = greedy_answers(model, prompts, golds, settings, progress)
        progress.close()
    if world > 1:  # a SUM of per-example slots: each slot was written by exactly one rank
        device = next(model.parameters()).device
        for key, v in t.items():
            v = v.to(device)
            dist.all_reduce(v)
            t[key] = v.cpu()
    return t


def format_value(key, v):
    if v is None:  # a metric that cannot be computed on this data
        return "n/a"
    if key.startswith("n_"):  # counts
        return str(int(v))
    return f"{v:.4f}" if abs(v) < 1e5 or math.isnan(v) else f"{v:.4g}"


def format_table(rows):
    """rows: {checkpoint name: metrics dict} -> one plain-text table, a column per checkpoint and a
    row per metric (METRICS order, then any others; '-' where a checkpoint lacks the metric, n/a
    where it cannot be computed)."""
    names = list(rows)
    keys = [k for k in METRICS if any(k in m for m in rows.values())]
    keys += sorted({k for m in rows.values() for k in m} - set(keys))
    cells = [["metric"] + names]
    for k in keys:
        cells.append([k] + [format_value(k, rows[c][k]) if k in rows[c] else "-" for c in names])
    widths = [max(len(r[j]) for r in cells) for j in range(len(cells[0]))]

    def line(row):
        cells = [c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells)

    lines = [line(r) for r in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def get_args(argv=None):
    p = ArgumentParser(description="Held-out likelihood, preference accuracy and exact match of "
                       "checkpoints, side by side.")
    p.add_argument("--init", nargs="+", default=["data/base"], help="checkpoints (preset, "
                   ".safetensors file or directory), each optionally named NAME=PATH; one table "
                   "column per checkpoint")
    p.add_argument("--data", default=arith.DEFAULT_TEST,
                   help="held-out JSONL: {prompt, response} or {prompt, chosen, rejected}")
    p.add_argument("--negatives", default=None, help="negatives file of --data from "
                   "negatives.py (all of each example's negatives are scored; default: none, or "
                   "the rejected responses of preference data)")
    p.add_argument("--exact-match", action="store_true", help="also greedy-decode and grade "
                   "answers (automatic when every response ends in a gradable 'The answer is N')")
    p.add_argument("--max-len", type=positive_int, default=None,
                   help=MAX_LEN_HELP + " (default: min(1024, the model's block size))")
    p.add_argument("--max-prompt-len", type=positive_int, default=None,
                   help=MAX_PROMPT_LEN_HELP + " (default: max-len / 2)")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="sequences per forward pass (per rank)")
    p.add_argument("--max-new-tokens", type=positive_int, default=MAX_NEW_TOKENS,
                   help="greedy decoding length for exact match")
    p.add_argument("--max-examples", type=positive_int, default=None,
                   help="score only the first N examples (default: all)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write {checkpoint: metrics} as JSON to PATH ('-': stdout)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    args = p.parse_args(argv)
    args.checkpoints = [named_path(spec) for spec in args.init]
    check_paths(args)
    return args


def named_path(spec):
    """NAME=PATH -> (NAME, PATH); a bare PATH names itself."""
    if "=" in spec and not os.path.exists(spec):
        return tuple(spec.split("=", 1))
    return spec, spec


def check_paths(args):
    """Every path flag, before any model is scored (a late failure would lose the earlier
    scores)."""
    for _, path in args.checkpoints:
        looks_like_a_path = os.sep in path or path.endswith(".safetensors")
        if looks_like_a_path and not os.path.exists(path):
            raise ValueError(f"--init {path}: no such checkpoint")
    if args.json and args.json != "-":
        folder = os.path.dirname(os.path.abspath(args.json))
        if os.path.isdir(args.json) or (os.path.exists(folder) and not os.access(folder, os.W_OK)):
            raise ValueError(f"--json {args.json}: cannot write there")


def main(argv=None):
    args = get_args(argv)
    rank, world, device = setup(args.device)
    arith.ensure_default_file(args.data)
    kind, records = load_jsonl(args.data)
    negatives = None
    if args.negatives:
        expected = {"data_sha256": file_sha256(args.data), "n_examples": len(records)}
        negatives = read_negatives(args.negatives, expected,
                                   advice="pass the negatives of this --data file")
    if args.max_examples is not None:
        records = records[: args.max_examples]
        negatives = negatives[: args.max_examples] if negatives else None
    results = {}
    for name, path in args.checkpoints:
        print0(f"{name}: {path}")
        model = load_model(path, device)
        max_len, max_prompt_len = resolve_lengths(model.config.block_size, args.max_len,
                                                  args.max_prompt_len)
        settings = EvalSettings(max_len, max_prompt_len, args.max_new_tokens, args.batch_size,
                                exact_match=args.exact_match or None, amp=amp_dtype(device))
        results[name] = evaluate(model, records, negatives, settings)
        del model
    print0(f"held-out: {args.data} ({kind}, {len(records)} examples)\n" + format_table(results))
    if args.json and rank == 0:
        write_json(args.json, results)
    teardown()
    return results


if __name__ == "__main__":
    run_main(main)
