"""
Held-out likelihood (and exact match) of one or more checkpoints, side by side.

Held-out likelihood asks how probable the model finds answers it was not trained on, scored with
exactly the training tokenization and masking (data/format.py): only response tokens and the
closing EOT count, never the prompt or the padding. On a held-out JSONL file:

  nll, ppl        total NLL of the positives (SFT "response" / preference "chosen") / total scored
                  tokens, and exp(nll)
  logp/pos, /neg  mean summed log-prob of positives and of negatives (ALL the negatives of each
                  example in a --negatives file from sample.py, or the "rejected" of preference data)
  pref_acc        fraction of (positive, negative) pairs with logp(pos) > logp(neg) (a tie is a loss);
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
    python eval.py --init base=data/base dft=out/dft/final --data data/arith/test.jsonl --json out/eval.json
    (compare.py trains several losses and tabulates them; it calls evaluate() below)
    python eval.py --init gpt2 --data heldout.jsonl --negatives out/negatives/heldout.jsonl --max-len 512
    torchrun --standalone --nproc_per_node=2 eval.py --init data/base --data data/arith/test.jsonl
    python -m pytest -q tests/test_eval.py
"""

import json
import math
import os

import torch
import torch.distributed as dist

from common import (ArgumentParser, DEVICE_HELP, Progress, amp_dtype, atomic_path, autocast, print0, run_main, setup,
                    teardown)
from data import arith
from data.format import MAX_LEN_HELP, MAX_PROMPT_LEN_HELP, collate, load_jsonl, tokenize
from data.tokenizer import get_tokenizer
from model import load_model
from sample import generate, gold_key, grade_negatives, has_checker, load_negatives

MAX_NEW_TOKENS = 128  # greedy tokens per prompt for exact match: the one default of eval.py and train.py
METRICS = ("nll", "ppl", "logp/pos", "logp/neg", "pref_acc", "pref_acc/avg", "pref_acc/wrong", "exact_match",
           "neg/correct", "neg/identical", "n_examples", "n_tokens", "n_pairs", "n_truncated")  # the table's row order


def preference_accuracy(pos, neg):
    """pos (N,), neg (N, K) with NaN where a pair does not count -> fraction of the valid pairs (i, j) with
    pos[i] > neg[i, j] (NaN if there are none). A tie counts as wrong."""
    valid = ~torch.isnan(neg)  # (N, K)
    wins = (pos[:, None] > neg) & valid  # (N, K)
    return wins.sum().item() / valid.sum().item() if valid.any() else float("nan")


def compute_metrics(pos_lp, pos_n, neg_lp=None, neg_n=None, correct=None, n_truncated=0, neg_correct=None,
                    neg_identical=None):
    """Metrics from per-example sums. pos_lp, pos_n (N,); neg_lp, neg_n (N, K), neg_n == 0 where there
    is no j-th negative; correct (N,) 0/1 or None; neg_correct, neg_identical (N, K) 0/1 or None.
    Returns a dict of python floats."""
    n_tok = pos_n.sum().item()
    m = {"nll": -pos_lp.sum().item() / n_tok}
    m["ppl"] = math.exp(m["nll"]) if m["nll"] < 700 else float("inf")
    m["logp/pos"] = pos_lp.mean().item()
    if neg_lp is not None and (neg_n > 0).any():
        has = neg_n > 0  # (N, K)
        nan = torch.full_like(neg_lp, float("nan"))
        m["logp/neg"] = neg_lp[has].mean().item()
        m["pref_acc"] = preference_accuracy(pos_lp, torch.where(has, neg_lp, nan))
        m["pref_acc/avg"] = preference_accuracy(pos_lp / pos_n, torch.where(has, neg_lp / neg_n.clamp(min=1), nan))
        m["n_pairs"] = float(has.sum().item())
        if neg_correct is not None:
            m["pref_acc/wrong"] = preference_accuracy(pos_lp, torch.where(has & (neg_correct == 0), neg_lp, nan))
            m["neg/correct"] = neg_correct[has].mean().item()
            m["neg/identical"] = neg_identical[has].mean().item()
    if correct is not None:
        m["exact_match"] = correct.mean().item()
    m.update(n_examples=float(len(pos_lp)), n_tokens=float(n_tok), n_truncated=float(n_truncated))
    return m


@torch.no_grad()
def score(model, seqs, batch_size, device, amp=None, progress=None):
    """The repository's one scoring loop. seqs: list of (ids, n_prompt) -> summed logps (S,) float64 and
    scored-token counts (S,), in input order. Batches are formed after sorting by length, so little of
    each is padding. amp: the autocast dtype (common.amp_dtype), None = fp32."""
    lp, n = torch.zeros(len(seqs), dtype=torch.float64), torch.zeros(len(seqs), dtype=torch.float64)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        x, y, mask = (t.to(device) for t in collate([seqs[i] for i in idx]))  # (B, T) each
        with autocast(device, amp):
            b_lp, b_n = model.logps(x, y, mask)  # (B,), (B,)
        lp[idx], n[idx] = b_lp.double().cpu(), b_n.double().cpu()
        if progress:
            progress.update(s + len(idx))
    return lp, n


def greedy_correct(model, prompts, golds, max_new_tokens, batch_size, amp=None, progress=None):
    """Greedy-decode each prompt (list of token ids) and grade it: (P,) float64 of 0/1."""
    tok, out = get_tokenizer(), torch.zeros(len(prompts), dtype=torch.float64)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        gens = generate(model, [prompts[i] for i in idx], max_new_tokens, temperature=0.0, amp=amp)
        for i, (new_ids, _eos) in zip(idx, gens):
            out[i] = float(arith.is_correct(tok.decode(list(new_ids)), golds[i]))
        if progress:
            progress.update(s + len(idx))
    return out


@torch.no_grad()
def evaluate(model, records, negatives=None, exact_match=None, max_len=256, max_prompt_len=128, batch_size=32,
             max_new_tokens=MAX_NEW_TOKENS, device=None, amp=None, progress=True):
    """Held-out metrics of `model` on records (dicts with prompt + response, or prompt + chosen + rejected).
    negatives: None, or per example a list of (token ids, eos) (sample.load_negatives); preference data
    uses its "rejected" when negatives is None. exact_match: True/False, or None = auto (a checker exists).
    Under an initialized torch.distributed group each rank scores a strided shard and per-example sums
    are all-reduced; every rank returns the same dict of python floats."""
    if not records:
        raise ValueError("evaluate: no records")
    if not 1 <= max_prompt_len < max_len:
        raise ValueError(f"need 1 <= max_prompt_len < max_len, got {max_prompt_len} and {max_len}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if max_len > model.config.block_size:
        raise ValueError(f"max_len={max_len} exceeds the model's block_size={model.config.block_size}")
    if negatives is not None and len(negatives) != len(records):
        raise ValueError(f"evaluate: {len(negatives)} negative lists for {len(records)} records")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    tok, checker = get_tokenizer(), has_checker(records)
    if negatives is None and "rejected" in records[0]:
        negatives = [[(ids, True)] for ids in tok.encode_ordinary_batch([r["rejected"] for r in records])]
    exact_match = checker if exact_match is None else exact_match
    N, K = len(records), max((len(v) for v in negatives), default=0) if negatives else 0
    mine = list(range(rank, N, world))
    recs, negs = [records[i] for i in mine], [negatives[i] for i in mine] if negatives else None
    pos, neg_seqs, cut = tokenize(tok, recs, max_len, max_prompt_len, negs)
    # per-example sums, filled in for this rank's shard only; the other ranks hold zeros there
    t = {"pos": torch.zeros(N, 4, dtype=torch.float64),  # logp, n_tokens, truncated, correct
         "neg": torch.zeros(N, 4, K, dtype=torch.float64)}  # logp, n_tokens, correct, identical
    seqs = pos + [s for row in neg_seqs for s in row]
    was_training = model.training
    model.eval()
    try:
        pr = Progress("scoring sequences", len(seqs), on=progress)
        lp, n = score(model, seqs, batch_size, device, amp, pr)
        pr.close()
        t["pos"][mine, 0], t["pos"][mine, 1] = lp[:len(pos)], n[:len(pos)]
        t["pos"][mine, 2] = torch.tensor(cut, dtype=torch.float64)
        k = len(pos)
        for i, row in zip(mine, neg_seqs):
            t["neg"][i, 0, :len(row)], t["neg"][i, 1, :len(row)] = lp[k:k + len(row)], n[k:k + len(row)]
            k += len(row)
        if checker and negs:
            for i, grades in zip(mine, grade_negatives(recs, negs)):
                for j, (c, same) in enumerate(grades):
                    t["neg"][i, 2, j], t["neg"][i, 3, j] = float(c), float(same)
        if exact_match:
            pr = Progress("greedy decoding prompts", len(mine), on=progress)
            # prompts keep their last max_prompt_len tokens (as training keeps the end); NOTE: the answer
            # is capped at block_size - max_prompt_len tokens when max_new_tokens does not fit
            new_tokens = min(max_new_tokens, model.config.block_size - max_prompt_len)
            prompts = [ids[:n_p][-max_prompt_len:] for ids, n_p in pos]
            t["pos"][mine, 3] = greedy_correct(model, prompts, [r[gold_key(recs)] for r in recs], new_tokens, batch_size, amp, pr)
            pr.close()
    finally:
        model.train(was_training)
    if world > 1:  # a SUM of per-example slots: each slot was written by exactly one rank
        for key, v in t.items():
            v = v.to(device)
            dist.all_reduce(v)
            t[key] = v.cpu()
    P, G = t["pos"], t["neg"]
    return compute_metrics(P[:, 0], P[:, 1], G[:, 0] if K else None, G[:, 1] if K else None,
                           P[:, 3] if exact_match else None, int(P[:, 2].sum().item()),
                           G[:, 2] if K and checker else None, G[:, 3] if K and checker else None)


def _fmt(key, v):
    if v is None:
        return "-"
    if key.startswith("n_"):  # counts
        return str(int(v))
    return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4g}"


def format_table(rows):
    """rows: {checkpoint name: metrics dict} -> one plain-text table, a column per checkpoint and a
    row per metric (METRICS order, then any others; '-' where a checkpoint lacks the metric)."""
    names = list(rows)
    keys = [k for k in METRICS if any(k in m for m in rows.values())]
    keys += sorted({k for m in rows.values() for k in m} - set(keys))
    cells = [["metric"] + names] + [[k] + [_fmt(k, rows[c].get(k)) for c in names] for k in keys]
    widths = [max(len(r[j]) for r in cells) for j in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def write_json(path, obj):
    """--json PATH of every script: '-' prints to stdout, anything else is written atomically."""
    if path == "-":
        print(json.dumps(obj, indent=2), flush=True)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2)


def get_args(argv=None):
    p = ArgumentParser(description="Held-out likelihood, preference accuracy and exact match of checkpoints, "
                                "side by side.")
    p.add_argument("--init", nargs="+", default=["data/base"], help="checkpoints (preset, .safetensors file or "
                   "directory), each optionally named NAME=PATH; one table column per checkpoint")
    p.add_argument("--data", default=arith.DEFAULT_TEST, help="held-out JSONL: {prompt, response} or {prompt, chosen, rejected}")
    p.add_argument("--negatives", default=None, help="negatives file from sample.py for --data (all of each example's "
                   "negatives are scored; default: none, or the rejected responses of preference data)")
    p.add_argument("--exact-match", action="store_true", help="also greedy-decode and grade answers (automatic "
                   "when every response ends in a gradable 'The answer is N')")
    p.add_argument("--max-len", type=int, default=256, help=MAX_LEN_HELP)
    p.add_argument("--max-prompt-len", type=int, default=128, help=MAX_PROMPT_LEN_HELP)
    p.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass (per rank)")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="greedy decoding length for exact match")
    p.add_argument("--max-examples", type=int, default=None, help="score only the first N examples (default: all)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write {checkpoint: metrics} as JSON to PATH ('-': stdout)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    args = p.parse_args(argv)
    for flag, v in (("--max-len", args.max_len), ("--max-prompt-len", args.max_prompt_len), ("--batch-size", args.batch_size),
                    ("--max-new-tokens", args.max_new_tokens), ("--max-examples", args.max_examples)):
        if v is not None and v < 1:
            raise ValueError(f"{flag} must be >= 1, got {v}")
    if args.max_prompt_len >= args.max_len:
        raise ValueError(f"--max-prompt-len ({args.max_prompt_len}) must be < --max-len ({args.max_len})")
    return args


def main(argv=None):
    args = get_args(argv)
    rank, world, device = setup(args.device)
    arith.ensure_default_file(args.data)
    kind, records = load_jsonl(args.data)
    negatives = load_negatives(args.negatives, args.data, len(records), 0, "pass the negatives of this --data file") \
        if args.negatives else None
    if args.max_examples is not None:
        records, negatives = records[:args.max_examples], negatives[:args.max_examples] if negatives else None
    results = {}
    for spec in args.init:
        name, path = spec.split("=", 1) if "=" in spec and not os.path.exists(spec) else (spec, spec)
        print0(f"{name}: {path}")
        model = load_model(path, device)
        results[name] = evaluate(model, records, negatives, exact_match=args.exact_match or None, max_len=args.max_len,
                                 max_prompt_len=args.max_prompt_len, batch_size=args.batch_size,
                                 max_new_tokens=args.max_new_tokens, device=device, amp=amp_dtype(device))
        del model
    print0(f"held-out: {args.data} ({kind}, {len(records)} examples)\n" + format_table(results))
    if args.json and rank == 0:
        write_json(args.json, results)
    teardown()
    return results


if __name__ == "__main__":
    run_main(main)
