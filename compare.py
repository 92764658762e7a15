"""
Experiments: train several methods from the same base and compare them the way a claim needs it.

    python compare.py --plan        # the runs it would do and a rough time estimate; runs nothing
    python compare.py               # the whole protocol on the built-in task (resumable)
    python compare.py --timing      # each method's cost, one run at a time (for the time column)
    python compare.py --report      # rebuild the README's tables and docs/curves.png from results
    python compare.py --methods sft dft --lrs 1e-4 --seeds 1 --out out/quick   # a quick look

The protocol. Every method trains from the same starting model on the same fine-tuning set (2
epochs, batch 32, cosine schedule), and:
  1. an lr grid on the VALIDATION split, seed 0: the lr with the best validation exact match is
     chosen (lower nll breaks ties). A choice at an end of the grid is no choice: the grid grows
     by a half-decade step (x sqrt(10)) past that end, until the best lr has a neighbour on each
     side (at most --max-extend times);
  2. seeds at the chosen lr, scored on the TEST split once: --seeds for every method, and
     --paired-seeds for the methods of --pairs, whose difference is reported seed by seed (the same
     seed is the same data order);
  3. DFT's ablations (--ablations) at DFT's chosen lr, --paired-seeds seeds each (each is compared
     with DFT seed by seed), on the test split:
     negatives filtered to wrong answers, tau 0.5, B 8, the exact proposal (temperature 1, no
     top-k), and no negative term at all (train.py --loss nll).
Every finished run is kept (its final/ and its line in results.json) and skipped when the command
runs again; an interrupted run resumes from its checkpoint. One results.json holds every number,
and it belongs to one setup (the starting weights, the data, --train-args): another setup is
refused, so old numbers are never reported for a new setup.

The methods (train.py's --loss, with the data each one reads):
  base        the starting model itself (no training)
  control     SFT on as many problems of the base model's own training split: "more of the same"
  sft         likelihood of the answers (a mean over tokens)
  dft, dft2   discriminative fine-tuning with 2 negatives per prompt and epoch sampled from the base
  dpo, asft   from the base, on preference pairs built without labels: chosen = the gold answer,
              rejected = a base-model sample the task's checker marks wrong (pairs.jsonl)
  sft>dpo, sft>asft   the same, starting from the SFT model at SFT's chosen lr and the same seed
"""
import json
import math
import os
import statistics
import sys

import torch

import train
from common import (ArgumentParser, atomic_path, file_sha256, positive_int, print0, read_json,
                    run_main, write_json, write_jsonl)
from data import arith
from data.format import load_jsonl, resolve_lengths
from eval import EvalSettings, evaluate
from model import DEFAULT_INIT, load_model, weights_sha256
from negatives import NegativeSettings, get_negatives, negatives_path, origin_of, preference_pairs

# name: (train.py --loss, data: "train" | "base" | "pairs", starting model: "base" | "sft")
METHODS = {"base": (None, None, "base"), "control": ("sft", "base", "base"),
           "sft": ("sft", "train", "base"), "dft": ("dft", "train", "base"),
           "dft2": ("dft2", "train", "base"), "dpo": ("dpo", "pairs", "base"),
           "asft": ("asft", "pairs", "base"), "sft>dpo": ("dpo", "pairs", "sft"),
           "sft>asft": ("asft", "pairs", "sft")}
PREFERENCE = ("dpo", "asft", "sft>dpo", "sft>asft")
# DFT at its chosen lr with one knob changed: (train.py --loss, extra flags)
ABLATIONS = {
    "dft-wrong": ("dft", ["--neg-filter", "wrong"]),  # negatives: wrong answers only
    "dft-tau0.5": ("dft", ["--tau", "0.5"]),  # a sharper softmax than NLL's
    "dft-B8": ("dft", ["--num-negatives", "8"]),  # more negatives per prompt and epoch
    "dft-exact": ("dft", ["--neg-temperature", "1", "--neg-top-k", "0"]),  # the proposal IS pi_0
    "dft-noneg": ("nll", []),  # no negative term: the sequence NLL
}
# held-out negatives, sampled from the base: logp/neg, pref_acc and logp/neg/wrong on val and test
EVAL_NEG = NegativeSettings(B=2, epochs=1, max_new_tokens=64, seed=1234)
# the flags compare.py sets for each run itself: --train-args may not change them
OWN_FLAGS = ("--loss", "--lr", "--seed", "--out-dir", "--data", "--init", "--max-examples",
             "--negatives-dir", "--no-eval", "--resume", "--overwrite", "--max-steps")
HALF_DECADE = math.sqrt(10)
# the papers' claims (DFT beats SFT and is comparable to SFT then DPO; ASFT beats DPO), and DFT2
# against the DFT it simplifies
DEFAULT_PAIRS = ("sft:dft", "sft>dpo:dft", "dpo:asft", "dft:dft2")


def get_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                   help="methods to compare")
    p.add_argument("--ablations", nargs="*", default=list(ABLATIONS), choices=list(ABLATIONS),
                   help="DFT ablations (need dft among --methods)")
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-5, 10**-4.5, 1e-4, 10**-3.5],
                   help="the starting lr grid of every method (half-decade steps); it grows at an "
                   "end that wins")
    p.add_argument("--max-extend", type=int, default=3, help="how often a grid may grow")
    p.add_argument("--seeds", type=positive_int, default=3, help="seeds at the chosen lr")
    p.add_argument("--pairs", nargs="*", default=None, metavar="A:B",
                   help="comparisons reported seed by seed (B - A); their methods get "
                   f"--paired-seeds (default: {' '.join(DEFAULT_PAIRS)}, those among --methods)")
    p.add_argument("--paired-seeds", type=positive_int, default=5,
                   help="seeds of the methods of --pairs and of each ablation")
    p.add_argument("--init", default=DEFAULT_INIT, help="the starting model of every method")
    p.add_argument("--train-data", default=arith.DEFAULT_TRAIN, help="the fine-tuning set")
    p.add_argument("--base-data", default=f"{arith.DEFAULT_DIR}/base.jsonl", help="the "
                   "control's data: the base model's own training split (its first N problems, "
                   "N = the size of --train-data)")
    p.add_argument("--val-data", default=arith.DEFAULT_VAL, help="validation: chooses the lr")
    p.add_argument("--test-data", default=arith.DEFAULT_TEST, help="test: the reported numbers")
    p.add_argument("--out", default="out/compare", help="run directories, pairs.jsonl, results")
    p.add_argument("--negatives-dir", default="out/negatives", help="train.py's negatives cache")
    p.add_argument("--train-args", default="", help="extra train.py flags for every run, e.g. "
                   f"'--epochs 1' (not the flags compare.py sets: {' '.join(OWN_FLAGS)})")
    p.add_argument("--plan", action="store_true", help="print the planned runs, run nothing")
    p.add_argument("--timing", action="store_true", help="measure each method's cost, one short "
                   "run at a time, into results.json (for the time column), train nothing else")
    p.add_argument("--timing-steps", type=positive_int, default=16, help="steps of a timing run")
    p.add_argument("--report", action="store_true", help="print the tables and write the plot "
                   "from results.json, train nothing")
    p.add_argument("--results", default=None, help="results.json (default: OUT/results.json)")
    p.add_argument("--plot", default="docs/curves.png", help="the training-curves PNG of --report "
                   "(needs matplotlib)")
    p.add_argument("--readme", default="README.md", help="the file whose results block --report "
                   "rewrites")
    args = p.parse_args(argv)
    check_args(args)
    return args


def check_args(args):
    if any(not lr > 0 or not math.isfinite(lr) for lr in args.lrs):
        raise ValueError("--lrs must be finite and > 0")
    if args.ablations and "dft" not in args.methods:
        raise ValueError("--ablations run at DFT's chosen lr: add dft to --methods (or pass "
                         "--ablations with no names)")
    if any(m.startswith("sft>") for m in args.methods) and "sft" not in args.methods:
        raise ValueError("sft>dpo and sft>asft start from the SFT runs: add sft to --methods")
    own = [f for f in args.train_args.split() if f.split("=")[0] in OWN_FLAGS]
    if own:
        raise ValueError(f"--train-args {own[0]}: compare.py sets it for each run; use its own "
                         "flags (--lrs, --seeds, --init, --train-data, ...)")
    if args.pairs is None:
        args.pairs = [p for p in DEFAULT_PAIRS if all(m in args.methods for m in p.split(":"))]
    for pair in args.pairs:
        names = pair.split(":")
        if len(names) != 2 or not all(n in args.methods for n in names):
            raise ValueError(f"--pairs {pair}: expected A:B with both among --methods")
    # every train.py flag is checked now, before any work (a typo would fail the first run)
    train.get_args(["--loss", "sft", *args.train_args.split()])
    args.results = args.results or os.path.join(args.out, "results.json")


# -----------------------------------------------------------------------------
# the protocol


def main(argv=None):
    args = get_args(argv)
    results = load_results(args.results)
    if args.report:
        return report(args, results)
    for path in (args.train_data, args.val_data, args.test_data, args.base_data):
        arith.ensure_default_file(path)  # a fresh clone: generate the built-in task
    check_setup(results, setup_of(args), args.results)
    results["pairs"] = args.pairs
    todo = [r for r in plan(args, results) if not done(results, r)]
    print0(f"plan: {len(plan(args, results))} scorings ({len(todo)} to do) of the runs below; the "
           "grids grow where an end wins")
    if args.plan:
        for stage, m, lr, seed in plan(args, results):
            lr_text = "(chosen)" if lr is None else lr_label(lr)
            status = "  done" if done(results, (stage, m, lr, seed)) else ""
            print0(f"  {stage:4s}  {m:10s}  lr {lr_text:9s}  seed {seed}{status}")
        return results
    ctx = Context(args, results, shared_data(args))
    if args.timing:
        return measure_costs(ctx)
    if "base" in args.methods:
        for stage in ("grid", "test"):
            record(ctx, stage, "base", None, 0)
    for m in trained(args.methods):
        results["chosen_lr"][m] = grid_search(ctx, m)
        for seed in range(n_seeds(args, m)):
            record(ctx, "test", m, results["chosen_lr"][m], seed)
    for a in args.ablations:
        for seed in range(args.paired_seeds):
            record(ctx, "test", a, results["chosen_lr"]["dft"], seed)
    return report(args, results)


def grid_search(ctx, method):
    """Score the grid on validation; while the best lr is at an end, grow the grid past that end.
    Returns the chosen lr."""
    grid = sorted(ctx.results["grid"].get(method, ctx.args.lrs))
    for extension in range(ctx.args.max_extend + 1):
        ctx.results["grid"][method] = grid
        for lr in grid:
            record(ctx, "grid", method, lr, 0)
        grown = grow_grid(grid, choose_lr(ctx.results, method, grid))
        if grown == grid or extension == ctx.args.max_extend:
            break
        grid = grown
    return choose_lr(ctx.results, method, grid)


def grow_grid(grid, best):
    """The grid, with one more lr past the end that won (the same grid when best is inside)."""
    if best == grid[0]:
        return [grid[0] / HALF_DECADE] + grid
    if best == grid[-1]:
        return grid + [grid[-1] * HALF_DECADE]
    return grid


def brackets(grid, chosen):
    """The bracketing rule of a grid: >= 4 values, neighbours at most ~3.2x apart (a half decade),
    the chosen lr strictly inside."""
    grid = sorted(grid)
    steps_ok = all(b / a <= HALF_DECADE * 1.01 for a, b in zip(grid, grid[1:]))
    return len(grid) >= 4 and steps_ok and grid[0] < chosen < grid[-1]


def choose_lr(results, method, lrs):
    """The lr with the best validation exact match of the seed-0 grid runs (lower nll breaks
    ties)."""
    val = {lr: results["runs"][run_id(method, lr, 0)]["val"] for lr in lrs}
    return max(lrs, key=lambda lr: (val[lr].get("exact_match", 0.0), -val[lr]["nll"]))


def plan(args, results):
    """[(stage, method, lr, seed)]: the grids as they stand (seed 0, scored on val), then the seeds
    at the chosen lr and the ablations (scored on test). An lr not chosen yet shows as None."""
    chosen = results["chosen_lr"]
    runs = [("grid", "base", None, 0), ("test", "base", None, 0)] if "base" in args.methods else []
    for m in trained(args.methods):
        runs += [("grid", m, lr, 0) for lr in results["grid"].get(m, args.lrs)]
        runs += [("test", m, chosen.get(m), s) for s in range(n_seeds(args, m))]
    runs += [("test", a, chosen.get("dft"), s) for a in args.ablations
             for s in range(args.paired_seeds)]
    return runs


def trained(methods):
    return [m for m in methods if METHODS[m][0]]


def n_seeds(args, method):
    paired = {m for pair in args.pairs for m in pair.split(":")}
    return args.paired_seeds if method in paired else args.seeds


def done(results, run):
    stage, m, lr, seed = run
    row = results["runs"].get(run_id(m, lr, seed) if lr is not None or m == "base" else "")
    return bool(row) and ("val" if stage == "grid" else "test") in row


# -----------------------------------------------------------------------------
# the setup results belong to, and the data every run shares


def setup_of(args):
    """What every number of results.json depends on, besides each run's method, lr and seed."""
    model = load_model(args.init)
    files = {k: getattr(args, f"{k}_data") for k in ("train", "base", "val", "test")}
    return {"init_sha256": weights_sha256(model, args.init), "train_args": args.train_args,
            **{f"{k}_sha256": file_sha256(path) for k, path in files.items()}}


def check_setup(results, setup, path):
    old = results.setdefault("setup", setup)
    diff = [k for k in setup if old.get(k) != setup[k]]
    if diff:
        raise ValueError(f"{path} holds results of another setup (differs in: {', '.join(diff)}); "
                         "choose another --out (or --results)")


def load_results(path):
    if not os.path.exists(path):
        return {"runs": {}, "chosen_lr": {}, "grid": {}}
    results = read_json(path, "compare.py's results.json", "delete it, or choose another --out")
    if not isinstance(results, dict) or not isinstance(results.get("runs"), dict):
        raise ValueError(f"{path}: not a results.json of compare.py (no 'runs'); choose another "
                         "--out (or --results)")
    results.setdefault("chosen_lr", {})
    results.setdefault("grid", {})
    return results


def shared_data(args):
    """The held-out negatives of val and test, and the pairs file when a preference method is
    planned."""
    base = load_model(args.init)
    out = {}
    for split in ("val", "test"):
        path = getattr(args, f"{split}_data")
        recs = load_jsonl(path).records
        origin = origin_of(path, len(recs), base, args.init)
        neg_path = negatives_path(args.negatives_dir, EVAL_NEG, origin)
        out[split] = (recs, get_negatives(base, recs, EVAL_NEG, origin, neg_path))
    if any(m in PREFERENCE for m in args.methods):
        out["pairs"] = os.path.join(args.out, "pairs.jsonl")
        if not os.path.exists(out["pairs"]):
            recs = load_jsonl(args.train_data).records
            # the DFT run's own seed-0 negatives: B 2 x 2 epochs
            settings = NegativeSettings(max_new_tokens=64)
            origin = origin_of(args.train_data, len(recs), base, args.init)
            path = negatives_path(args.negatives_dir, settings, origin)
            negs = get_negatives(base, recs, settings, origin, path)
            pairs, dropped = preference_pairs(recs, negs)
            print0(f"pairs: {len(pairs)} of {len(recs)} prompts have a wrong base sample "
                   f"({dropped} dropped): {out['pairs']}")
            write_jsonl(out["pairs"], pairs)
    return out


# -----------------------------------------------------------------------------
# one run: train (or resume, or skip when finished), then score


class Context:
    """What every run of the protocol reads: the flags, the results so far, the shared data."""

    def __init__(self, args, results, shared):
        self.args, self.results, self.shared = args, results, shared


def lr_label(lr):
    return f"{lr:.3g}"


def run_id(method, lr, seed):
    return method if lr is None else f"{method}/lr{lr_label(lr)}-s{seed}"


def run_dir(args, method, lr, seed):
    return os.path.join(args.out, method, f"lr{lr_label(lr)}-s{seed}")


def train_argv(ctx, method, lr, seed):
    """train.py's flags for one run: the method's loss, data and starting model, this lr, seed."""
    args = ctx.args
    if method in METHODS:
        loss, data, start = METHODS[method]
    else:
        loss, data, start = ABLATIONS[method][0], "train", "base"
    argv = ["--loss", loss, "--lr", f"{lr!r}", "--seed", str(seed), "--no-eval",
            "--out-dir", run_dir(args, method, lr, seed), "--negatives-dir", args.negatives_dir]
    if data == "pairs":
        argv += ["--data", ctx.shared["pairs"]]
    elif data == "base":  # as many problems of the base's own split as the fine-tuning set has
        n = len(load_jsonl(args.train_data).records)
        argv += ["--data", args.base_data, "--max-examples", str(n)]
    else:
        argv += ["--data", args.train_data]
    sft_model = os.path.join(run_dir(args, "sft", ctx.results["chosen_lr"].get("sft", 0), seed),
                             "final")
    argv += ["--init", args.init if start == "base" else sft_model]
    return argv + ABLATIONS.get(method, (None, []))[1] + args.train_args.split()


def train_run(ctx, method, lr, seed):
    """Train one run unless its final/ exists; an interrupted run continues from its checkpoint."""
    d = run_dir(ctx.args, method, lr, seed)
    if method.startswith("sft>"):
        # results.json alone carried to a new machine: the SFT model this run starts from is
        # trained again (the same seed gives the same model)
        train_run(ctx, "sft", ctx.results["chosen_lr"]["sft"], seed)
    if not os.path.exists(os.path.join(d, "final")):
        resume = os.path.exists(os.path.join(d, "last", "state.pt"))
        print0(f"\n=== {method} lr {lr_label(lr)} seed {seed}" + (" (resuming)" if resume else "")
               + " ===")
        again = ["--resume"] if resume else ["--overwrite"]
        train.main(train_argv(ctx, method, lr, seed) + again)
    return d


def score_run(model_path, shared, split):
    recs, negs = shared[split]
    model = load_model(model_path)
    # train.py's default lengths
    return evaluate(model, recs, negs, EvalSettings(*resolve_lengths(model.config.block_size)))


def record(ctx, stage, method, lr, seed):
    """Train and score one run (unless results.json has it), and save results.json."""
    rid, split = run_id(method, lr, seed), "val" if stage == "grid" else "test"
    row = ctx.results["runs"].setdefault(rid, {"method": method, "lr": lr, "seed": seed})
    if split in row:
        return row
    if lr is None:  # the starting model itself
        row[split] = score_run(ctx.args.init, ctx.shared, split)
    else:
        d = train_run(ctx, method, lr, seed)
        row[split] = score_run(os.path.join(d, "final"), ctx.shared, split)
        cfg = read_json(os.path.join(d, "config.json"))
        row["timing"] = read_json(os.path.join(d, "timing.json"))
        row["train_negatives"] = cfg.get("negatives_stats", {})
    exact = row[split].get("exact_match", float("nan"))
    print0(f"{rid} on {split}: exact match {exact:.3f}, nll {row[split]['nll']:.4f}")
    write_json(ctx.args.results, ctx.results)
    return row


def measure_costs(ctx):
    """Each method's cost, one short run at a time in this process (the same threads for all):
    seconds per training step, and the seconds of sampling its negatives and scoring its reference
    log-probs, fresh (no cache). Stored in results["timing"]."""
    args, timing = ctx.args, {}
    for m in [m for m in trained(args.methods) if m in ctx.results["chosen_lr"]]:
        lr = ctx.results["chosen_lr"][m]
        if m.startswith("sft>"):  # its starting model (its cost is SFT's, counted in the report)
            train_run(ctx, "sft", ctx.results["chosen_lr"]["sft"], 0)
        out = os.path.join(args.out, "timing", m.replace(">", "-"))
        argv = train_argv(ctx, m, lr, 0)
        argv[argv.index("--out-dir") + 1] = out
        argv[argv.index("--negatives-dir") + 1] = os.path.join(out, "negatives")
        threads = torch.get_num_threads()
        print0(f"\n=== timing {m}: {args.timing_steps} steps, {threads} threads ===")
        steps = ["--max-steps", str(args.timing_steps), "--log-every", "8"]
        train.main(argv + ["--overwrite"] + steps)
        t = read_json(os.path.join(out, "timing.json"))
        timing[m] = {"step_s": t["train_s"] / t["steps"], "negatives_s": t["negatives_s"],
                     "reference_s": t["reference_s"], "threads": torch.get_num_threads()}
    ctx.results["timing"] = timing
    write_json(args.results, ctx.results)
    return ctx.results


# -----------------------------------------------------------------------------
# the report: the README's tables (mean +- sd over seeds) and the training curves


def values(results, method, lr, key, split="test"):
    """The metric of every run of method at lr that has it, in seed order."""
    runs = [r for r in results["runs"].values()
            if r["method"] == method and r["lr"] == lr and key in r.get(split, {})]
    return [r[split][key] for r in sorted(runs, key=lambda r: r["seed"])]


def mean_sd(xs, pct=False, digits=3):
    if not xs:
        return "-"
    scale = 100 if pct else 1
    fmt = f".{1 if pct else digits}f"
    mean = format(scale * statistics.mean(xs), fmt)
    return mean if len(xs) == 1 else f"{mean} ± {format(scale * statistics.stdev(xs), fmt)}"


def signed_mean_sd(diffs):
    """A difference in points, its sign always shown."""
    text = mean_sd(diffs, pct=True)
    return text if text.startswith("-") else "+" + text


def seeds_ahead(diffs):
    """In how many seeds the second method of a paired difference is ahead: "k of n"."""
    return f"{sum(d > 0 for d in diffs)} of {len(diffs)}"


def full_run_s(results, method):
    """A method's cost as measured by --timing: sampling + reference scoring + the steps of a run
    (and, for sft>*, the SFT run it starts from). None when not measured."""
    t = results.get("timing", {})
    if method not in t:
        return None
    steps = next((r["timing"]["steps"] for r in results["runs"].values() if "timing" in r), 64)
    # a method trained on pairs pays for the samples they come from: DFT's negatives
    on_pairs = METHODS[method][1] == "pairs" and "dft" in t
    sampling = t["dft"]["negatives_s"] if on_pairs else t[method]["negatives_s"]
    cost = sampling + t[method]["reference_s"] + t[method]["step_s"] * steps
    if method.startswith("sft>"):
        cost += full_run_s(results, "sft") or 0.0
    return cost


def tables(results):
    """The README's markdown: main table, paired differences, mechanism, ablations, lr grids."""
    return "\n\n".join(t for t in (main_table(results), paired_table(results),
                                    mechanism_table(results), ablation_table(results),
                                    grid_table(results)) if t)


def main_table(results):
    chosen, sft_cost = results["chosen_lr"], full_run_s(results, "sft")
    cols = [("exact match %", "exact_match", True), ("nll/token", "nll", False),
            ("logp/pos", "logp/pos", False), ("logp/neg/wrong", "logp/neg/wrong", False),
            ("pref_acc/wrong %", "pref_acc/wrong", True)]
    out = ["| method | lr | seeds | " + " | ".join(c for c, _, _ in cols) + " | time vs SFT |",
           "|---" * (len(cols) + 4) + "|"]
    for m in [m for m in METHODS if m == "base" or m in chosen]:
        lr = chosen.get(m)
        cells = [mean_sd(values(results, m, lr, key), pct) for _, key, pct in cols]
        cost = full_run_s(results, m)
        time_cell = f"{cost / sft_cost:.1f}x" if cost and sft_cost else "-"
        n = len(values(results, m, lr, "nll"))
        lr_cell = "-" if lr is None else lr_label(lr)
        out.append(f"| {m} | {lr_cell} | {n} | " + " | ".join(cells) + f" | {time_cell} |")
    return "\n".join(out)


def paired_differences(results, a, b, key="exact_match"):
    """Per seed, b's metric minus a's (the same seed: the same data order), for the seeds both have
    at their chosen lr (an ablation's is DFT's)."""
    chosen = results["chosen_lr"]
    by_seed = {}
    for m in (a, b):
        lr = chosen.get("dft") if m in ABLATIONS else chosen.get(m)
        for r in results["runs"].values():
            if r["method"] == m and r["lr"] == lr and key in r.get("test", {}):
                by_seed.setdefault(r["seed"], {})[m] = r["test"][key]
    return [s[b] - s[a] for _, s in sorted(by_seed.items()) if a in s and b in s]


def paired_table(results):
    rows = []
    for pair in results.get("pairs", []):
        a, b = pair.split(":")
        diff = paired_differences(results, a, b)
        if diff:
            seeds = ", ".join(f"{100 * d:+.1f}" for d in diff)
            ahead = f"{b} in {seeds_ahead(diff)}"
            rows.append(f"| {b} − {a} | {seeds} | {signed_mean_sd(diff)} | {ahead} |")
    if not rows:
        return ""
    head = ["| comparison (test exact match, points) | per seed | mean ± sd | ahead |",
            "|---|---|---|---|"]
    return "\n".join(head + rows)


def mechanism_table(results):
    chosen = results["chosen_lr"]
    kinds = [k for k in arith.MISTAKES[1:]
             if any(f"mistake/{k}" in r.get("test", {}) and r["test"][f"mistake/{k}"] > 0
                    for r in results["runs"].values())]
    head = ["correct %"] + [f"{k} %" for k in kinds]
    out = ["| greedy answers on test | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for m in [m for m in METHODS if m == "base" or m in chosen]:
        keys = ["exact_match"] + [f"mistake/{k}" for k in kinds]
        cells = [mean_sd(values(results, m, chosen.get(m), key), pct=True) for key in keys]
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(out) if kinds else ""


def ablation_table(results):
    chosen = results["chosen_lr"]
    abl = [m for m in ABLATIONS if any(r["method"] == m for r in results["runs"].values())]
    if not abl or "dft" not in chosen:
        return ""
    out = ["| DFT variant | exact match % | − dft, paired (ahead in) | nll/token | "
           "train negatives correct % | identical % | logp/pos | logp/neg/wrong | stops early % |",
           "|---" * 9 + "|"]
    for m in ["dft"] + abl:
        negs = [r.get("train_negatives", {}) for r in results["runs"].values()
                if r["method"] == m and r["lr"] == chosen["dft"] and "test" in r]

        def share(k):
            have = [n[k] for n in negs if k in n]
            return mean_sd(have[:1], pct=True) if have else "-"

        def cell(k, pct=False):
            return mean_sd(values(results, m, chosen["dft"], k), pct)

        diff = paired_differences(results, "dft", m) if m in ABLATIONS else []
        paired = f"{signed_mean_sd(diff)} ({seeds_ahead(diff)})" if diff else "-"
        out.append(f"| {m} | " + " | ".join([
            cell("exact_match", True), paired, cell("nll"), share("neg/correct"),
            share("neg/identical"), cell("logp/pos"), cell("logp/neg/wrong"),
            cell("mistake/stops early", True)]) + " |")
    return "\n".join(out)


def grid_table(results):
    chosen = results["chosen_lr"]
    lrs = sorted({r["lr"] for r in results["runs"].values() if r["lr"] is not None and "val" in r})
    out = ["| validation exact match %, seed 0 | " + " | ".join(f"lr {lr_label(lr)}" for lr in lrs)
           + " |", "|---" * (len(lrs) + 1) + "|"]
    for m in [m for m in METHODS if m in chosen]:
        cells = []
        for lr in lrs:
            v = values(results, m, lr, "exact_match", "val")
            text = mean_sd(v, pct=True)
            cells.append(f"**{text}**" if lr == chosen[m] else text)
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def exact_match_table(results):
    """The short table of a results file: each method's lr and test exact match (the README's
    table of the run on a base without headroom, docs/results_no_headroom.json)."""
    chosen = results["chosen_lr"]
    out = ["| method | lr | test exact match % |", "|---|---|---|"]
    for m in [m for m in METHODS if m == "base" or m in chosen]:
        lr = chosen.get(m)
        lr_cell = "-" if lr is None else lr_label(lr)
        out.append(f"| {m} | {lr_cell} | {mean_sd(values(results, m, lr, 'exact_match'), True)} |")
    return "\n".join(out)


MARK = ("<!-- results: start (python compare.py --report --results docs/results.json rewrites "
        "this block) -->", "<!-- results: end -->")


def report(args, results):
    """Print the tables; rewrite the README block between the MARK lines; write the plot."""
    results.setdefault("pairs", args.pairs)
    text = tables(results)
    print(text)
    if os.path.exists(args.readme):
        doc = open(args.readme).read()
        if MARK[0] in doc and MARK[1] in doc:
            a, b = doc.index(MARK[0]) + len(MARK[0]), doc.index(MARK[1])
            with atomic_path(args.readme) as tmp, open(tmp, "w") as f:
                f.write(doc[:a] + "\n" + text + "\n" + doc[b:])
    runs = {m: run_dir(args, m, lr, 0) for m, lr in results["chosen_lr"].items()}
    metrics = {m: d for m, d in runs.items() if os.path.exists(os.path.join(d, "metrics.jsonl"))}
    plot_curves(metrics, args.plot)
    return results


def plot_curves(run_dirs, out_png):
    """Training curves side by side from the runs' metrics.jsonl: the summed log-prob of the
    positives and of the negatives (where the methods differ: DPO lowers the chosen likelihood
    too). matplotlib is optional: without it, say how to get the plot."""
    if not run_dirs:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no plot: pip install matplotlib, then run this command again)", file=sys.stderr)
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for n, (name, d) in enumerate(run_dirs.items()):
        rows = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]
        for ax, key in zip(axes, ("logp/pos", "logp/neg")):
            if key in rows[0]:  # one colour per run in both panels
                steps = [r["step"] for r in rows]
                ax.plot(steps, [r[key] for r in rows], color=f"C{n}", label=name)
    titles = ("log-prob of positives (summed, train batch)", "log-prob of negatives (summed, train "
              "batch)")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png


if __name__ == "__main__":
    run_main(main)
