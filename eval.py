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
  n_examples, n_tokens (scored positive tokens), n_pairs, n_truncated (positives cut to --max-len)

Why sums, not means: nll is a token mean over the WHOLE set. Averaging per-batch (or per-rank) means
would weigh a batch of short answers like one of long answers and depend on batch size and the
number of ranks. So every rank fills in per-example SUMS and COUNTS (summed log-probs, token counts,
0/1 correctness) for its strided shard, one all_reduce(SUM) merges them (the other ranks hold zeros
there), and only then are ratios taken. 2 ranks, 1 rank, batch size 1 or 64: the same numbers.

    python eval.py --init data/base out/sft/final out/dft/final --data data/arith/test.jsonl
    python eval.py --init base=data/base dft=out/dft/final --data data/arith/test.jsonl --json out/eval.json
    python eval.py --init gpt2 --data heldout.jsonl --negatives out/negatives/heldout.jsonl --max-len 512
    torchrun --standalone --nproc_per_node=2 eval.py --init data/base --data data/arith/test.jsonl
    python -m pytest -q tests/test_eval.py
"""
import argparse
import json
import math
import os
import sys
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist

from data.format import DataError, collate, encode_ids, load_jsonl
from data.tokenizer import get_tokenizer

METRICS = ("nll", "ppl", "logp/pos", "logp/neg", "pref_acc", "pref_acc/avg", "exact_match",
           "n_examples", "n_tokens", "n_pairs", "n_truncated")  # the table's row order


class Progress:
    """A '\\r' progress line on stderr: 'what: done/total (ETA 12s)'."""

    def __init__(self, what, total, on=True):
        self.what, self.total, self.on, self.t0 = what, total, on and total > 0, time.time()

    def update(self, done):
        if self.on:
            dt = time.time() - self.t0
            eta = dt / done * (self.total - done) if done else 0.0
            print(f"\r{self.what}: {done}/{self.total} (ETA {eta:.0f}s)  ", end="", file=sys.stderr, flush=True)

    def close(self):
        if self.on:
            print(f"\r{self.what}: {self.total}/{self.total} ({time.time() - self.t0:.1f}s)  ", file=sys.stderr, flush=True)


def preference_accuracy(pos, neg):
    """pos (N,), neg (N, K) with NaN where example i has fewer than K negatives -> fraction of the
    valid pairs (i, j) with pos[i] > neg[i, j] (NaN if there are none). A tie counts as wrong."""
    valid = ~torch.isnan(neg)  # (N, K)
    wins = (pos[:, None] > neg) & valid  # (N, K)
    return wins.sum().item() / valid.sum().item() if valid.any() else float("nan")


def compute_metrics(pos_lp, pos_n, neg_lp=None, neg_n=None, correct=None, n_truncated=0):
    """Metrics from per-example sums. pos_lp, pos_n (N,); neg_lp, neg_n (N, K), neg_n == 0 where
    there is no j-th negative; correct (N,) 0/1 or None. Returns a dict of python floats."""
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
    if correct is not None:
        m["exact_match"] = correct.mean().item()
    m.update(n_examples=float(len(pos_lp)), n_tokens=float(n_tok), n_truncated=float(n_truncated))
    return m


def _autocast(device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def score(model, seqs, batch_size, device, progress=None):
    """seqs: list of (ids, n_prompt) -> summed logps (S,) float64 and scored-token counts (S,),
    in input order. Batches are formed after sorting by length, so little of each is padding."""
    lp, n = torch.zeros(len(seqs), dtype=torch.float64), torch.zeros(len(seqs), dtype=torch.float64)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        x, y, mask = (t.to(device) for t in collate([seqs[i] for i in idx]))  # (B, T) each
        with _autocast(device):
            b_lp, b_n = model.logps(x, y, mask)  # (B,), (B,)
        lp[idx], n[idx] = b_lp.double().cpu(), b_n.double().cpu()
        if progress:
            progress.update(s + len(idx))
    return lp, n


def greedy_correct(model, prompts, golds, max_new_tokens, batch_size, progress=None):
    """Greedy-decode each prompt (list of token ids) and grade it: (P,) float64 of 0/1."""
    import sample
    from data.arith import is_correct

    tok, out = get_tokenizer(), torch.zeros(len(prompts), dtype=torch.float64)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        gens = sample.generate(model, [prompts[i] for i in idx], max_new_tokens, temperature=0.0)
        for i, (new_ids, _eos) in zip(idx, gens):
            out[i] = float(is_correct(tok.decode(list(new_ids)), golds[i]))
        if progress:
            progress.update(s + len(idx))
    return out


@torch.no_grad()
def evaluate(model, records, negatives=None, exact_match=None, max_len=256, max_prompt_len=128,
             batch_size=32, max_new_tokens=128, device=None, progress=True):
    """Held-out metrics of `model` on records (dicts with prompt + response, or prompt + chosen +
    rejected). negatives: None, or per example a list of (token ids, eos) (sample.load_negatives);
    preference data uses its "rejected" when negatives is None. exact_match: True/False, or None =
    auto. Under an initialized torch.distributed group each rank scores a strided shard and per-example
    sums are all-reduced; every rank returns the same dict of python floats."""
    if not records:
        raise ValueError("evaluate: no records")
    if not 1 <= max_prompt_len < max_len:
        raise ValueError(f"need 1 <= max_prompt_len < max_len, got {max_prompt_len} and {max_len}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if max_len > model.config.block_size:
        raise ValueError(f"max_len={max_len} exceeds the model's block_size={model.config.block_size}")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    show = progress and rank == 0
    pos_key = "chosen" if "chosen" in records[0] else "response"
    if negatives is None and "rejected" in records[0]:
        negatives = "rejected"
    elif negatives is not None and len(negatives) != len(records):
        raise ValueError(f"evaluate: {len(negatives)} negative lists for {len(records)} records")
    if exact_match is None:  # auto: every gold response has a gradable "The answer is N"
        from data.arith import extract_answer
        exact_match = all(extract_answer(r[pos_key]) is not None for r in records)
    N = len(records)
    K = 0 if negatives is None else 1 if negatives == "rejected" else max(len(v) for v in negatives)
    # per-example sums, filled in for this rank's shard only: columns
    # [pos logp, pos n_tokens, truncated, correct, neg logp x K, neg n_tokens x K]
    table = torch.zeros(N, 4 + 2 * K, dtype=torch.float64)  # (N, 4 + 2K)

    tok = get_tokenizer()
    mine = list(range(rank, N, world))
    prompts = tok.encode_ordinary_batch([records[i]["prompt"] for i in mine])
    responses = tok.encode_ordinary_batch([records[i][pos_key] for i in mine])
    seqs, rows = [], []  # (ids, n_prompt) and (example, column of logp, column of n_tokens)
    for i, p, r in zip(mine, prompts, responses):
        ids, n_prompt, cut = encode_ids(p, r, max_len, max_prompt_len)
        seqs.append((ids, n_prompt))
        rows.append((i, 0, 1))
        table[i, 2] = float(cut)
        negs = [(tok.encode_ordinary(records[i]["rejected"]), True)] if negatives == "rejected" else \
            (negatives[i] if negatives is not None else [])
        for j, (neg_ids, eos) in enumerate(negs):
            seqs.append(encode_ids(p, neg_ids, max_len, max_prompt_len, eos=eos)[:2])
            rows.append((i, 4 + j, 4 + K + j))

    was_training = model.training
    model.eval()
    try:
        pr = Progress("scoring sequences", len(seqs), show)
        lp, n = score(model, seqs, batch_size, device, pr)
        pr.close()
        for (i, c_lp, c_n), v, c in zip(rows, lp.tolist(), n.tolist()):
            table[i, c_lp], table[i, c_n] = v, c
        if exact_match:
            # prompts keep their last max_prompt_len tokens (as training keeps the end); NOTE: the
            # answer is capped at block_size - max_prompt_len tokens when max_new_tokens does not fit
            new_tokens = min(max_new_tokens, model.config.block_size - max_prompt_len)
            pr = Progress("greedy decoding prompts", len(mine), show)
            table[mine, 3] = greedy_correct(model, [p[-max_prompt_len:] for p in prompts],
                                            [records[i][pos_key] for i in mine], new_tokens, batch_size, pr)
            pr.close()
    finally:
        model.train(was_training)

    if world > 1:  # a SUM of per-example slots: each slot was written by exactly one rank
        t = table.to(device)
        dist.all_reduce(t)
        table = t.cpu()
    return compute_metrics(table[:, 0], table[:, 1], table[:, 4:4 + K] if K else None,
                           table[:, 4 + K:] if K else None, table[:, 3] if exact_match else None,
                           n_truncated=int(table[:, 2].sum().item()))


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


def plot_curves(run_dirs, out_png):
    """Training curves of several runs side by side, from their metrics.jsonl: the summed log-prob of
    the positives and of the negatives over steps (where the methods differ: DPO is known to lower
    the chosen likelihood too, ASFT and DFT claim not to). matplotlib is optional: without it, say how."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(no plot: pip install matplotlib, then python eval.py --plot {' '.join(run_dirs)})", file=sys.stderr)
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for n, d in enumerate(run_dirs):
        rows = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]
        for ax, key in zip(axes, ("logp/pos", "logp/neg")):  # train.py logs both, summed, for every loss
            if key in rows[0]:  # (sft has no negatives) one colour per run in both panels
                ax.plot([r["step"] for r in rows], [r[key] for r in rows], color=f"C{n}", label=os.path.basename(os.path.normpath(d)))
    for ax, title in zip(axes, ("log-prob of positives (summed, train batch)", "log-prob of negatives (summed, train batch)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    return out_png


def compare(loss_names, out_root, train_args, eval_max, max_new_tokens):
    """Train every loss from the same base on the built-in task, then score base + all of them on the
    test split (with 2 sampled negatives per test prompt, for logp/neg and pref_acc): the README table."""
    import train
    from sample import load_negatives, sample_negatives
    from model import GPT

    runs = {}
    for loss in loss_names:
        print(f"\n=== {loss} ===", file=sys.stderr)
        train.main(["--loss", loss, "--out-dir", os.path.join(out_root, loss), "--no-eval", *train_args])
        final = os.path.join(out_root, loss, "final")
        runs[loss] = final if os.path.exists(final) else os.path.join(out_root, loss, "last")  # --max-steps: no final
    test = train.DEFAULT_EVAL
    _, records = load_jsonl(test)
    records = records[:eval_max]
    base = GPT.from_pretrained(train.DEFAULT_INIT)
    neg_path = os.path.join("out", "negatives", f"test{len(records)}-base-B2.jsonl")
    sub = os.path.join(out_root, f"test{len(records)}.jsonl")
    with open(sub, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    if not os.path.exists(neg_path):
        sample_negatives(base, records, neg_path, B=2, epochs=1, max_new_tokens=64, seed=1,
                         max_prompt_len=128, init_source=train.DEFAULT_INIT, data_path=sub)
    negatives = load_negatives(neg_path, sub, len(records), 2)
    results = {}
    for name, path in [("base", train.DEFAULT_INIT)] + list(runs.items()):
        print(f"scoring {name}", file=sys.stderr)
        results[name] = evaluate(GPT.from_pretrained(path), records, negatives, max_new_tokens=max_new_tokens)
    table = format_table(results)
    print(f"\nheld-out: {test} ({len(records)} examples, 2 base-model negatives each)\n{table}")
    with open(os.path.join(out_root, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    png = plot_curves([os.path.join(out_root, n) for n in runs], os.path.join(out_root, "curves.png"))
    if png:
        print(f"training curves: {png}")
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description="Held-out likelihood / preference accuracy / exact match of "
                                "checkpoints, side by side.")
    p.add_argument("--init", nargs="+", help="checkpoints (preset, .safetensors file or "
                   "directory), each optionally named NAME=PATH; one table column per checkpoint")
    p.add_argument("--data", help="held-out JSONL: {prompt, response} or {prompt, chosen, rejected}")
    p.add_argument("--negatives", default=None, help="negatives JSONL from sample.py for --data (all of each "
                   "example's negatives are scored); preference data uses its rejected responses")
    p.add_argument("--exact-match", action="store_true", help="also greedy-decode and grade answers (automatic "
                   "when every response ends in a gradable 'The answer is N')")
    p.add_argument("--max-len", type=int, default=256, help="max tokens per example (prompt+response+EOT)")
    p.add_argument("--max-prompt-len", type=int, default=128, help="a prompt is never cut below this many tokens")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass (per rank)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="greedy decoding length for exact match")
    p.add_argument("--max-examples", type=int, default=None, help="score only the first N examples")
    p.add_argument("--json", default=None, help="also write {checkpoint: metrics} to this JSON file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (under torchrun: cuda:LOCAL_RANK)")
    g = p.add_argument_group("comparing losses on the built-in task (instead of --init/--data)")
    g.add_argument("--compare", nargs="+", metavar="LOSS", help="train each loss from the shipped base (train.py, "
                   "default flags) and score them all on the test split: the README's results table")
    g.add_argument("--compare-out", default="out/compare", help="where --compare puts its runs, results.json and curves.png")
    g.add_argument("--train-args", default="", help="extra train.py flags for every --compare run, e.g. '--epochs 1'")
    g.add_argument("--plot", nargs="+", metavar="RUN_DIR", help="plot the training curves of these run directories")
    g.add_argument("--plot-out", default="curves.png", help="the PNG --plot writes (needs matplotlib)")
    args = p.parse_args(argv)
    if args.plot:
        missing = [d for d in args.plot if not os.path.isfile(os.path.join(d, "metrics.jsonl"))]
        if missing:
            p.error(f"--plot: no metrics.jsonl in {', '.join(missing)} (a run directory of train.py, e.g. out/dft)")
        png = plot_curves(args.plot, args.plot_out)
        if png:
            print(f"wrote {png}")
        return {}
    if args.compare:
        os.makedirs(args.compare_out, exist_ok=True)
        return compare(args.compare, args.compare_out, args.train_args.split(), args.max_examples or 500, args.max_new_tokens)
    if not args.init or not args.data:
        p.error("--init and --data are required (or use --compare / --plot)")

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if dev == "cuda" else dev)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before init_process_group, so NCCL binds the right GPU
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def fail(msg):
        if rank == 0:
            print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)

    try:
        kind, records = load_jsonl(args.data)
        negatives = None
        if args.negatives:
            from sample import load_negatives
            negatives = load_negatives(args.negatives, args.data, len(records), 0)
    except (DataError, ValueError, OSError) as e:
        fail(str(e))
    if args.max_examples:
        records = records[:args.max_examples]
        negatives = negatives[:args.max_examples] if negatives is not None else None
    from model import GPT

    results = {}
    for spec in args.init:
        name, path = spec.split("=", 1) if "=" in spec and not os.path.exists(spec) else (spec, spec)
        if rank == 0:
            print(f"{name}: {path}", file=sys.stderr)
        try:
            model = GPT.from_pretrained(path, device=device)
            results[name] = evaluate(model, records, negatives, exact_match=args.exact_match or None,
                                     max_len=args.max_len, max_prompt_len=args.max_prompt_len,
                                     batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, device=device)
        except (ValueError, OSError) as e:
            fail(f"{path}: {e}")
        del model
    if rank == 0:
        print(f"held-out: {args.data} ({kind}, {len(records)} examples)\n" + format_table(results))
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
    if dist.is_initialized():
        dist.destroy_process_group()
    return results


if __name__ == "__main__":
    main()
