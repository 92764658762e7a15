"""
Experiments: train several methods from the same base and compare them the way a claim needs it.

    python compare.py --plan        # the runs it would do and a rough time estimate; runs nothing
    python compare.py               # the whole protocol on the built-in task (resumable: run it again to continue)
    python compare.py --report      # rebuild the README's tables and docs/curves.png from results.json
    python compare.py --methods sft dft --lrs 1e-4 --seeds 1 --out out/quick   # a quick look

The protocol. Every method trains from the same starting model on the same 1,000 problems (2 epochs,
batch 32, cosine schedule), and:
  1. an lr grid (--lrs; preference methods use --pref-lrs), seed 0, each run scored on the
     VALIDATION split; the lr with the best validation exact match is chosen (lower nll breaks ties);
  2. --seeds seeds at the chosen lr, scored on the TEST split: the tables give mean +- sd over them;
  3. the ablations of DFT (--ablations), at DFT's chosen lr, --seeds seeds each, on the test split:
     negatives filtered to wrong answers, tau 0.5, B 8, the exact proposal (temperature 1, no top-k),
     and no negative term at all (train.py --loss nll).
Every finished run is kept (its final/ and its line in results.json) and skipped when the command is
run again; an interrupted run resumes from its last checkpoint. One results.json holds every number.

The methods (train.py's --loss, with the data each one reads):
  base        the starting model itself (no training)
  control     SFT on 1,000 problems of the base model's own training split: "more of the same" training
  sft         likelihood of the answers (a mean over tokens)
  dft, dft2   discriminative fine-tuning with 2 negatives per prompt and epoch sampled from the base
  dpo, asft   from the base, on preference pairs built without labels: chosen = the gold answer,
              rejected = a base-model sample the task's checker marks wrong (pairs.jsonl)
  sft>dpo, sft>asft   the same, starting from the SFT model at SFT's chosen lr and the same seed
"""
import json
import os
import statistics
import sys
import time

import torch

import train
from common import ArgumentParser, atomic_path, print0, run_main
from data import arith
from data.download import write_jsonl_atomic
from data.format import load_jsonl
from eval import evaluate, write_json
from model import DEFAULT_INIT, load_model, weights_sha256
from sample import NegativeSettings, get_negatives, negatives_path, preference_pairs

METHODS = {  # name: (train.py --loss, data: "train" | "base" | "pairs", starting model: "base" | "sft")
    "base": (None, None, "base"), "control": ("sft", "base", "base"), "sft": ("sft", "train", "base"),
    "dft": ("dft", "train", "base"), "dft2": ("dft2", "train", "base"),
    "dpo": ("dpo", "pairs", "base"), "asft": ("asft", "pairs", "base"),
    "sft>dpo": ("dpo", "pairs", "sft"), "sft>asft": ("asft", "pairs", "sft"),
}
PREFERENCE = ("dpo", "asft", "sft>dpo", "sft>asft")
ABLATIONS = {  # DFT at its chosen lr with one knob changed: (train.py --loss, extra flags)
    "dft-wrong": ("dft", ["--neg-filter", "wrong"]),                       # negatives: wrong answers only
    "dft-tau0.5": ("dft", ["--tau", "0.5"]),                               # a sharper softmax than NLL's
    "dft-B8": ("dft", ["--num-negatives", "8"]),                           # more negatives per prompt and epoch
    "dft-exact": ("dft", ["--neg-temperature", "1", "--neg-top-k", "0"]),  # the proposal IS the base model
    "dft-noneg": ("nll", []),                                             # no negative term: the sequence NLL
}
EVAL_NEG = NegativeSettings(B=2, epochs=1, max_new_tokens=64, seed=1234)  # held-out negatives, from the base


def get_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), help="methods to compare")
    p.add_argument("--ablations", nargs="*", default=list(ABLATIONS), choices=list(ABLATIONS), help="DFT ablations "
                   "(need dft among --methods)")
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-5, 3e-5, 1e-4], help="lr grid of the likelihood methods "
                   "(control, sft, dft, dft2)")
    p.add_argument("--pref-lrs", type=float, nargs="+", default=[1e-5, 3e-5, 1e-4], help="lr grid of dpo, asft, sft>*")
    p.add_argument("--seeds", type=int, default=3, help="seeds at the chosen lr (seed 0 is the grid's run)")
    p.add_argument("--init", default=DEFAULT_INIT, help="the starting model of every method")
    p.add_argument("--train-data", default=arith.DEFAULT_TRAIN, help="the fine-tuning set")
    p.add_argument("--base-data", default=f"{arith.DEFAULT_DIR}/base.jsonl", help="the control's data: the base "
                   "model's own training split (its first N problems, N = the size of --train-data)")
    p.add_argument("--val-data", default=arith.DEFAULT_VAL, help="validation split: chooses the lr")
    p.add_argument("--test-data", default=arith.DEFAULT_TEST, help="test split: the reported numbers")
    p.add_argument("--out", default="out/compare", help="run directories, pairs.jsonl and results.json")
    p.add_argument("--negatives-dir", default="out/negatives", help="cache of sampled negatives (train.py's flag)")
    p.add_argument("--train-args", default="", help="extra train.py flags for every run, e.g. '--epochs 1'")
    p.add_argument("--plan", action="store_true", help="print the planned runs and a time estimate, run nothing")
    p.add_argument("--report", action="store_true", help="print the tables and write the plot from results.json, train nothing")
    p.add_argument("--results", default=None, help="results.json to read or write (default: OUT/results.json)")
    p.add_argument("--plot", default="docs/curves.png", help="the training-curves PNG --report writes (needs matplotlib)")
    p.add_argument("--readme", default="README.md", help="the file whose results block --report rewrites")
    args = p.parse_args(argv)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if any(lr <= 0 for lr in args.lrs + args.pref_lrs):
        raise ValueError("--lrs and --pref-lrs must be > 0")
    if args.ablations and "dft" not in args.methods:
        raise ValueError("--ablations run at DFT's chosen lr: add dft to --methods (or pass --ablations with no names)")
    if any(m.startswith("sft>") for m in args.methods) and "sft" not in args.methods:
        raise ValueError("sft>dpo and sft>asft start from the SFT runs: add sft to --methods")
    args.results = args.results or os.path.join(args.out, "results.json")
    return args


# -----------------------------------------------------------------------------
# the plan: which runs, in which order (a later run may start from an earlier one's model)


def plan(args, chosen):
    """[(stage, method, lr, seed)]: the grid (seed 0, scored on val), then the seeds at the chosen lr and
    the ablations (scored on test). An lr not chosen yet (the grid is not done) shows as None."""
    trained = [m for m in args.methods if METHODS[m][0]]
    runs = [("grid", m, lr, 0) for m in trained for lr in (args.pref_lrs if m in PREFERENCE else args.lrs)]
    runs += [("test", m, chosen.get(m), s) for m in trained for s in range(args.seeds)]
    runs += [("test", a, chosen.get("dft"), s) for a in args.ablations for s in range(args.seeds)]
    return runs


def estimate_s(args, n_runs, results):
    """A rough wall time: a timed forward + backward of 24 task-sized sequences (60 tokens, 40% of them
    scored) with the starting model, times the sequences a run trains (2 epochs x 3 per prompt), plus
    as much again for its sampling, reference scoring and evaluation. Once runs are done: their median."""
    done = [sum(r["timing"][k] for k in ("train_s", "negatives_s", "reference_s")) for r in results["runs"].values() if "timing" in r]
    if done:
        return n_runs * statistics.median(done) * 1.3  # + scoring
    model = load_model(args.init)
    x = torch.randint(0, 50000, (24, 60))
    mask = torch.arange(60)[None].expand(24, 60) >= 36
    t0 = time.time()
    for _ in range(3):
        model.logps(x, x, mask)[0].sum().backward()
    per_seq = (time.time() - t0) / 72
    return n_runs * 2 * (len(load_jsonl(args.train_data).records) * 2 * 3 * per_seq)


# -----------------------------------------------------------------------------
# data every run shares


def shared_data(args):
    """The pairs file (when a preference method is planned) and the held-out negatives of val and test."""
    base = load_model(args.init)
    sha = weights_sha256(base, args.init)
    out = {}
    for split in ("val", "test"):
        path = getattr(args, f"{split}_data")
        recs = load_jsonl(path).records
        neg_path = negatives_path(args.negatives_dir, path, sha, EVAL_NEG, len(recs))
        out[split] = (recs, get_negatives(base, recs, path, EVAL_NEG, args.init, neg_path, sha))
    if any(m in PREFERENCE for m in args.methods):
        out["pairs"] = os.path.join(args.out, "pairs.jsonl")
        if not os.path.exists(out["pairs"]):
            recs = load_jsonl(args.train_data).records
            s = NegativeSettings(max_new_tokens=64)  # the DFT run's own seed-0 negatives: B 2 x 2 epochs
            negs = get_negatives(base, recs, args.train_data, s, args.init, negatives_path(args.negatives_dir, args.train_data, sha, s, len(recs)), sha)
            pairs, dropped = preference_pairs(recs, negs)
            print0(f"pairs: {len(pairs)} of {len(recs)} prompts have a wrong base sample ({dropped} dropped): {out['pairs']}")
            os.makedirs(args.out, exist_ok=True)
            write_jsonl_atomic(out["pairs"], pairs)
    return out


# -----------------------------------------------------------------------------
# one run: train (or resume, or skip when finished), then score


def run_dir(args, method, lr, seed):
    return os.path.join(args.out, method, f"lr{lr:g}-s{seed}")


def train_argv(args, shared, method, lr, seed, chosen):
    """train.py's flags for one run: the method's loss, data and starting model, this lr and seed."""
    loss, data, start = METHODS[method] if method in METHODS else (ABLATIONS[method][0], "train", "base")
    argv = ["--loss", loss, "--lr", f"{lr:g}", "--seed", str(seed), "--no-eval", "--out-dir", run_dir(args, method, lr, seed)]
    if data == "pairs":
        argv += ["--data", shared["pairs"]]
    elif data == "base":  # the control: as many problems of the base's own split as the fine-tuning set has
        argv += ["--data", args.base_data, "--max-examples", str(len(load_jsonl(args.train_data).records))]
    else:
        argv += ["--data", args.train_data]
    init = args.init if start == "base" else os.path.join(run_dir(args, "sft", chosen["sft"], seed), "final")
    return argv + ["--init", init, "--negatives-dir", args.negatives_dir] + ABLATIONS.get(method, (None, []))[1] + \
        args.train_args.split()


def train_run(args, shared, method, lr, seed, chosen):
    """Train one run unless its final/ exists; an interrupted run continues from its checkpoint."""
    d = run_dir(args, method, lr, seed)
    if not os.path.exists(os.path.join(d, "final")):
        resume = os.path.exists(os.path.join(d, "last", "state.pt"))
        print0(f"\n=== {method} lr {lr:g} seed {seed}" + (" (resuming)" if resume else "") + " ===")
        train.main(train_argv(args, shared, method, lr, seed, chosen) + (["--resume"] if resume else ["--overwrite"]))
    return d


def score(model_path, shared, split):
    recs, negs = shared[split]
    model = load_model(model_path)
    max_len = min(1024, model.config.block_size)  # train.py's defaults
    return evaluate(model, recs, negs, max_len=max_len, max_prompt_len=max_len // 2)


def record(args, results, shared, stage, method, lr, seed):
    """Train and score one run (unless results.json has it) and save results.json."""
    rid = method if lr is None else f"{method}/lr{lr:g}-s{seed}"
    split = "val" if stage == "grid" else "test"
    row = results["runs"].setdefault(rid, {"method": method, "lr": lr, "seed": seed})
    if split in row:
        return row
    if lr is None:  # the starting model itself
        row[split] = score(args.init, shared, split)
    else:
        d = train_run(args, shared, method, lr, seed, results["chosen_lr"])
        row[split] = score(os.path.join(d, "final"), shared, split)
        cfg = json.load(open(os.path.join(d, "config.json")))
        row.update(timing=json.load(open(os.path.join(d, "timing.json"))), train_negatives=cfg.get("negatives_stats", {}))
    print0(f"{rid} on {split}: exact match {row[split].get('exact_match', float('nan')):.3f}, nll {row[split]['nll']:.4f}")
    write_json(args.results, results)
    return row


def load_results(path):
    return json.load(open(path)) if os.path.exists(path) else {"runs": {}, "chosen_lr": {}}


def choose_lr(results, method, lrs):
    """The lr with the best validation exact match of the seed-0 grid runs (lower nll breaks ties)."""
    val = {lr: results["runs"][f"{method}/lr{lr:g}-s0"]["val"] for lr in lrs}
    return max(lrs, key=lambda lr: (val[lr].get("exact_match", 0.0), -val[lr]["nll"]))


def main(argv=None):
    args = get_args(argv)
    results = load_results(args.results)
    if args.report:
        return report(args, results)
    for path in (args.train_data, args.val_data, args.test_data, args.base_data):
        arith.ensure_default_file(path)  # a fresh clone: generate the built-in task
    runs = plan(args, results["chosen_lr"])
    trained = [r for r in runs if not (r[0] == "test" and r[3] == 0 and r[1] in METHODS)]  # seed 0 IS the grid's run
    todo = [r for r in runs if not _done(results, r)]
    print0(f"plan: {len(trained)} training runs and {len(runs)} scorings ({len(todo)} to do), plus the base model; "
           f"about {estimate_s(args, len(todo), results) / 60:.0f} min on this machine (a rough estimate)")
    if args.plan:
        for stage, m, lr, seed in runs:
            print0(f"  {stage:4s}  {m:10s}  lr {'(chosen)' if lr is None else f'{lr:g}':9s}  seed {seed}" +
                   ("  done" if _done(results, (stage, m, lr, seed)) else ""))
        return results
    shared = shared_data(args)
    if "base" in args.methods:
        for split in ("val", "test"):
            record(args, results, shared, "grid" if split == "val" else "test", "base", None, 0)
    for m in [m for m in args.methods if METHODS[m][0]]:
        grid = args.pref_lrs if m in PREFERENCE else args.lrs
        for lr in grid:
            record(args, results, shared, "grid", m, lr, 0)
        results["chosen_lr"][m] = choose_lr(results, m, grid)
        for seed in range(args.seeds):
            record(args, results, shared, "test", m, results["chosen_lr"][m], seed)
    for a in args.ablations:
        for seed in range(args.seeds):
            record(args, results, shared, "test", a, results["chosen_lr"]["dft"], seed)
    return report(args, results)


def _done(results, run):
    stage, m, lr, seed = run
    row = results["runs"].get(f"{m}/lr{lr:g}-s{seed}" if lr is not None else "")
    return bool(row) and ("val" if stage == "grid" else "test") in row


# -----------------------------------------------------------------------------
# the report: README tables (mean +- sd over seeds) and the training curves


def _stats(results, method, lr, key, split="test"):
    """(mean, sd, n) of a metric over the method's runs at lr (the base: its one score)."""
    vals = [r[split][key] for r in results["runs"].values()
            if r["method"] == method and r["lr"] == lr and split in r and key in r[split]]
    if not vals:
        return None
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def _fmt(st, pct=False, digits=3):
    if st is None:
        return "-"
    mean, sd, n = st
    f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.{digits}f}")
    return f"{f(mean)} ± {f(sd)}" if n > 1 else f(mean)


def _time(results, method, lr):
    """Median wall seconds of the method's test runs: training + sampling its negatives + reference scoring."""
    t = [r["timing"] for r in results["runs"].values() if r["method"] == method and r["lr"] == lr and "timing" in r]
    if not t:
        return None
    return statistics.median(x["train_s"] for x in t) + max(x["negatives_s"] for x in t) + \
        statistics.median(x["reference_s"] for x in t)


def tables(results):
    """The README's markdown: the main table, the ablations, the lr grid."""
    R, chosen = results, results["chosen_lr"]
    sft_t = _time(R, "sft", chosen.get("sft"))
    cols = [("exact match %", "exact_match", True), ("nll/token", "nll", False), ("logp/pos", "logp/pos", False),
            ("logp/neg", "logp/neg", False), ("pref_acc %", "pref_acc", True), ("pref_acc/wrong %", "pref_acc/wrong", True)]
    out = ["| method | lr | " + " | ".join(c for c, _, _ in cols) + " | time vs SFT |", "|---" * (len(cols) + 3) + "|"]
    for m in [m for m in METHODS if m == "base" or m in chosen]:
        lr = chosen.get(m)
        t = _time(R, m, lr)
        out.append(f"| {m} | {'-' if lr is None else f'{lr:g}'} | " + " | ".join(_fmt(_stats(R, m, lr, k), pct) for _, k, pct in cols)
                   + f" | {'-' if t is None or not sft_t else f'{t / sft_t:.1f}x'} |")
    abl = [m for m in ABLATIONS if any(r["method"] == m for r in R["runs"].values())]
    if abl and "dft" in chosen:
        out += ["", "| DFT variant | exact match % | nll/token | train negatives correct % | identical % | "
                "logp/pos | logp/neg | pref_acc/wrong % |", "|---" * 8 + "|"]
        for m in ["dft"] + abl:
            neg = [r.get("train_negatives", {}) for r in R["runs"].values() if r["method"] == m and r["lr"] == chosen["dft"] and "test" in r]
            share = lambda k: _fmt((statistics.mean(n[k] for n in neg), 0.0, 1), True) if neg and all(k in n for n in neg) else "-"  # noqa: E731
            st = lambda k, pct=False: _fmt(_stats(R, m, chosen["dft"], k), pct)  # noqa: E731
            out.append(f"| {m} | " + " | ".join([st("exact_match", True), st("nll"), share("neg/correct"), share("neg/identical"),
                                                 st("logp/pos"), st("logp/neg"), st("pref_acc/wrong", True)]) + " |")
    lrs = sorted({r["lr"] for r in R["runs"].values() if r["lr"] is not None and "val" in r})
    out += ["", "| validation exact match %, seed 0 | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |", "|---" * (len(lrs) + 1) + "|"]
    for m in [m for m in METHODS if m in chosen]:
        cells = [_fmt(_stats(R, m, lr, "exact_match", "val"), True) for lr in lrs]
        out.append(f"| {m} | " + " | ".join(f"**{c}**" if lr == chosen[m] else c for c, lr in zip(cells, lrs)) + " |")
    return "\n".join(out)


MARK = ("<!-- results: start (python compare.py --report --results docs/results.json rewrites this block) -->",
        "<!-- results: end -->")


def report(args, results):
    """Print the tables; rewrite the README block between the MARK lines; write the training-curves plot."""
    text = tables(results)
    print(text)
    if os.path.exists(args.readme):
        doc = open(args.readme).read()
        if MARK[0] in doc and MARK[1] in doc:
            a, b = doc.index(MARK[0]) + len(MARK[0]), doc.index(MARK[1])
            with atomic_path(args.readme) as tmp, open(tmp, "w") as f:
                f.write(doc[:a] + "\n" + text + "\n" + doc[b:])
    runs = {m: run_dir(args, m, lr, 0) for m, lr in results["chosen_lr"].items()}
    plot_curves({m: d for m, d in runs.items() if os.path.exists(os.path.join(d, "metrics.jsonl"))}, args.plot)
    return results


def plot_curves(run_dirs, out_png):
    """Training curves side by side from the runs' metrics.jsonl: the summed log-prob of the positives and
    of the negatives (where the methods differ: DPO lowers the chosen likelihood too). matplotlib is
    optional: without it, say how to get the plot."""
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
                ax.plot([r["step"] for r in rows], [r[key] for r in rows], color=f"C{n}", label=name)
    for ax, title in zip(axes, ("log-prob of positives (summed, train batch)", "log-prob of negatives (summed, train batch)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png


if __name__ == "__main__":
    run_main(main)
