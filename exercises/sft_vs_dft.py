"""
Exercise sft_vs_dft: run SFT, DFT and DPO briefly on the built-in task, and read the numbers against the
instructor's, measured over several seeds.

Three short runs from the shipped base model, the same flags and seed (about 40 s to 1.5 minutes each on 2 CPU
cores, DFT the longest; pick any seed):
    python train.py --loss sft --max-examples 256 --epochs 1 --lr 1e-4 --eval-max-examples 200 --log-every 1 --seed 0 --out-dir out/sft_vs_dft/sft
    ... the same with --loss dft --out-dir out/sft_vs_dft/dft, and --loss dpo --out-dir out/sft_vs_dft/dpo
The checker reads the three run directories (--runs, default out/sft_vs_dft), checks their settings,
compares their numbers with exercises/reference_numbers.json (the instructor's runs of seeds 0-4: mean,
sd, and a tolerance of max(3 sd, a floor)), and checks your ANSWERS: the numbers you read from your
tables, and the trends, which must rest on the instructor's multi-seed numbers, not on one run.

Instructors: `python -m exercises.sft_vs_dft --measure --seeds 0 1 2 3 4 --root DIR` runs the 15 runs one
after the other and rewrites exercises/reference_numbers.json from them (about 15 minutes on 2 idle cores).
"""
import argparse
import json
import math
import os
import subprocess
import sys

from exercises.lib import Fail, answers, choice, expect, number, word

TITLE = "run SFT, DFT and DPO briefly; compare with the instructor's multi-seed numbers and read the trends"
TIME = 40
OBJECTIVE = "run a controlled experiment, tell a trend from seed noise, and explain what DFT and DPO do to likelihoods"
READ = (("train.py", "main"), ("eval.py", "compute_metrics"), ("docs/ALGORITHMS.md", "DFT"), ("README.md", "Results"))
TARGETS = ()
NEEDS = ()
LIMIT = 60
HERE = os.path.dirname(os.path.abspath(__file__))
NUMBERS = os.path.join(HERE, "reference_numbers.json")
LOSSES = ("sft", "dft", "dpo")
FLAGS = "--max-examples 256 --epochs 1 --lr 1e-4 --eval-max-examples 200 --log-every 1"
COMMAND = "python train.py --loss {loss} " + FLAGS + " --seed {seed} --out-dir {runs}/{loss}"
SETTINGS = {"init": "data/base", "data": "data/arith/train.jsonl", "max_examples": 256, "epochs": 1, "batch_size": 32,
            "lr": 1e-4, "warmup": 0.1, "weight_decay": 0.0, "grad_clip": 1.0, "num_negatives": 2, "neg_temperature": 0.7,
            "neg_top_k": 50, "neg_top_p": 1.0, "neg_filter": "none", "eval_max_examples": 200, "eval_max_new_tokens": 128,
            "eval_data": None, "log_every": 1, "max_steps": None, "tau": None, "gamma": None, "beta": None,
            "label_smoothing": None, "lam": None, "negatives": None}
FLOORS = {"nll": 0.002, "exact_match": 0.03, "logp_pos": 0.03, "neg_vs_base": 0.05, "chosen_vs_ref": 0.05}
WHY_NEG_DOWN, NLL_MEANING, WHY_DFT_NLL = "bf34cb4514c394aa", "763c69d22de91c17", "6ac3aadcb00587a4"


def summarize(runs):
    """The numbers of one seed's three runs: {metric: value}. Raises Fail naming what is missing."""
    out, seeds = {}, set()
    for loss in LOSSES:
        d = os.path.join(runs, loss)
        try:
            with open(os.path.join(d, "config.json")) as f:
                cfg = json.load(f)
            with open(os.path.join(d, "eval.json")) as f:
                ev = json.load(f)
            with open(os.path.join(d, "metrics.jsonl")) as f:
                rows = [json.loads(line) for line in f if line.strip()]
        except OSError:
            raise Fail(f"{d} holds no finished run (config.json, eval.json, metrics.jsonl): run "
                       f"`{COMMAND.format(loss=loss, seed=0, runs=runs)}` first") from None
        except ValueError as e:
            raise Fail(f"{d}: a file is not valid JSON ({e})") from None
        bad = {k: cfg.get(k) for k, v in SETTINGS.items() if cfg.get(k) != v and not (
            isinstance(v, float) and isinstance(cfg.get(k), (int, float)) and math.isclose(cfg[k], v))}
        expect(cfg.get("loss") == loss and not bad, f"{d} was run with other settings than the exercise's "
               f"({', '.join(f'{k}={v!r}, expected {SETTINGS[k]!r}' for k, v in bad.items()) or 'loss ' + str(cfg.get('loss'))}): "
               f"rerun `{COMMAND.format(loss=loss, seed=cfg.get('seed', 0), runs=runs)} --overwrite`")
        expect("before" in ev and "after" in ev, f"{d}/eval.json has no before/after: the run did not finish")
        seeds.add(cfg.get("seed"))
        for when, key in (("before", "before"), ("after", loss)):
            if when == "after" or loss == "sft":
                out.update({f"{key}/nll": ev[when]["nll"], f"{key}/exact_match": ev[when]["exact_match"],
                            f"{key}/logp_pos": ev[when]["logp/pos"]})
        last = rows[-3:]
        if loss == "dft":  # the model's log-prob of the step's negatives minus the base model's, same negatives
            out["dft/neg_vs_base"] = sum(r["logp/neg"] - r["logp0/neg"] for r in last) / len(last)
        if loss == "dpo":  # logp(chosen) - logp_0(chosen) on the step's prompts: rewards/chosen / beta
            out["dpo/chosen_vs_ref"] = sum(r["rewards/chosen"] for r in last) / len(last) / 0.1
    expect(len(seeds) == 1, f"the three runs in {runs} used different seeds {sorted(seeds)}: use one seed for all three")
    return out


def reference():
    with open(NUMBERS) as f:
        return json.load(f)["sft_vs_dft"]


def trend(ref, a, b):
    """'up' when metric a is clearly above metric b in the instructor's numbers, 'down' below, else 'same':
    clearly means by more than twice the larger seed-to-seed sd (plus a floor)."""
    ma, mb = ref["metrics"][a], ref["metrics"][b]
    diff, spread = ma["mean"] - mb["mean"], 2 * max(ma["sd"], mb["sd"]) + FLOORS[a.split("/")[1]] / 2
    return "same" if abs(diff) <= spread else "up" if diff > 0 else "down"


def trends(ref):
    """The trend questions and their answers, from the instructor's multi-seed numbers."""
    lower, neg = trend(ref, "sft/nll", "dft/nll"), ref["metrics"]["dft/neg_vs_base"]
    return {"lower_nll": {"down": "sft", "up": "dft", "same": "same"}[lower],
            "dft_nll": trend(ref, "dft/nll", "before/nll"),
            "dft_neg": "same" if abs(neg["mean"]) <= 2 * neg["sd"] + FLOORS["neg_vs_base"] / 2 else
                       "down" if neg["mean"] < 0 else "up",
            "dpo_logp_pos": trend(ref, "dpo/logp_pos", "before/logp_pos")}


def checks(m, opts):
    runs, state = opts.get("runs") or os.path.join("out", "sft_vs_dft"), {}

    def mine():
        if "error" in state:
            raise Fail("not checked: the run directories are not readable (see the first check)")
        if "numbers" not in state:
            try:
                state["numbers"] = summarize(runs)
            except Fail as e:
                state["error"] = e
                raise
        return state["numbers"]

    def within(keys, advice):
        def thunk():
            got, ref = mine(), reference()
            for key in keys:
                r = ref["metrics"][key]
                expect(abs(got[key] - r["mean"]) <= r["tol"], f"{key} = {got[key]:.4f} in {runs}, but the instructor's "
                       f"seeds {ref['seeds']} give {r['mean']:.4f} +- {r['sd']:.4f} (allowed: +- {r['tol']:.4f}): {advice}")
        return thunk

    def reported(key, metric):
        def thunk():
            got, want = number(answers(m, runs), key), mine()[metric]
            expect(abs(got - want) <= 1e-3, f'ANSWERS["{key}"] = {got!r}, but your run files say {want:.4f}')
        return thunk

    def trend_question(key, options, hint):
        def thunk():
            got, want = word(answers(m, runs).get(key)), trends(reference())[key]
            if got == "none":
                raise NotImplementedError(f'ANSWERS["{key}"] is not filled in yet')
            expect(got in options, f'ANSWERS["{key}"] should be one of {", ".join(options)}, got {got!r}')
            expect(got == want, f'ANSWERS["{key}"] = {got!r} is not what the instructor\'s {len(reference()["seeds"])} seeds '
                   f"show (exercises/reference_numbers.json; one run can mislead, the mean over seeds is the evidence). "
                   f"Hint: {hint}")
        return thunk

    def mc(key, sha, hint):
        return lambda: choice(answers(m, runs), "sft_vs_dft", key, ("a", "b", "c", "d"), sha, hint)

    setting = "a changed flag, another base model or test file, or a bug in the code the run used"
    return [("your runs: the exercise's settings, one seed", lambda: mine() and None),
            ("the runs start from the instructor's model and test data", within(
                ["before/nll", "before/exact_match", "before/logp_pos"], "the shipped base model and data/arith/test.jsonl "
                "should give these to within rounding")),
            ("your SFT run is within the instructor's seed spread", within(
                ["sft/nll", "sft/exact_match", "sft/logp_pos"], setting)),
            ("your DFT run is within the instructor's seed spread", within(
                ["dft/nll", "dft/exact_match", "dft/logp_pos", "dft/neg_vs_base"], setting + " (for DFT: update_log_u, "
                "dft_loss, exchange_log_u, example_seed)")),
            ("your DPO run is within the instructor's seed spread", within(
                ["dpo/nll", "dpo/exact_match", "dpo/logp_pos", "dpo/chosen_vs_ref"], setting + " (for DPO: dpo_loss)")),
            ("the numbers you report are your runs'", lambda: [reported(k, v)() for k, v in (
                ("nll_before", "before/nll"), ("nll_after_sft", "sft/nll"), ("nll_after_dft", "dft/nll"),
                ("nll_after_dpo", "dpo/nll"), ("exact_match_after_sft", "sft/exact_match"),
                ("exact_match_after_dft", "dft/exact_match"))] and None),
            ("which has the lower held-out nll, SFT or DFT (over seeds)", trend_question(
                "lower_nll", ("sft", "dft", "same"), "compare the means, and the difference with the sd")),
            ("DFT's held-out nll against the base model's (over seeds)", trend_question(
                "dft_nll", ("up", "down", "same"), "dft/nll against before/nll")),
            ("DFT's log-prob of its negatives against the base model's (over seeds)", trend_question(
                "dft_neg", ("up", "down", "same"), "dft/neg_vs_base is logp/neg - logp0/neg on the same negatives")),
            ("DPO's held-out logp of the gold answers (over seeds)", trend_question(
                "dpo_logp_pos", ("up", "down", "same"), "dpo/logp_pos against before/logp_pos")),
            ("what pushes logp/neg down (multiple choice)", mc("why_neg_down", WHY_NEG_DOWN, "differentiate "
                "L_i = -s(y_i) + (1/B) sum_j w_j s(y'_j) with respect to s(y'_j)")),
            ("what the held-out nll measures (multiple choice)", mc("nll_meaning", NLL_MEANING, "read eval.py's "
                "docstring and compute_metrics: what is summed, what is divided by what?")),
            ("why DFT raises the held-out nll here (multiple choice)", mc("why_dft_nll", WHY_DFT_NLL, "train.py prints "
                "how many of the negatives the task's checker marks correct; what does DFT do to each negative?"))]


def measure(seeds, root, python=sys.executable):
    """Run the exercise's 3 runs for every seed, one after the other, and write reference_numbers.json."""
    per_seed = []
    for seed in seeds:
        runs = os.path.join(root, f"seed{seed}")
        for loss in LOSSES:
            if not os.path.exists(os.path.join(runs, loss, "final")):
                cmd = COMMAND.format(loss=loss, seed=seed, runs=runs).split() + ["--overwrite"]
                subprocess.run([python] + cmd[1:], check=True)
        per_seed.append(summarize(runs))
    metrics = {}
    for key in per_seed[0]:
        vals = [s[key] for s in per_seed]
        mean = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        metrics[key] = {"mean": round(mean, 5), "sd": round(sd, 5), "tol": round(max(3 * sd, FLOORS[key.split("/")[1]]), 5),
                        "values": [round(v, 5) for v in vals]}
    head = {"command": COMMAND.format(loss="LOSS", seed="SEED", runs="out/sft_vs_dft"), "seeds": list(seeds),
            "tolerance": "tol = max(3 sd, floor): sd over the seeds; floors per kind of number: " + json.dumps(FLOORS)}
    lines = [f'  "{k}": {json.dumps(v)},' for k, v in head.items()]
    lines += ['  "metrics": {'] + [f'   "{k}": {json.dumps(v)},' for k, v in metrics.items()]
    lines[-1] = lines[-1].rstrip(",")
    with open(NUMBERS, "w") as f:  # one number per line: the file reads as a table
        f.write('{"sft_vs_dft": {\n' + "\n".join(lines) + "\n  }\n}}\n")
    print(f"wrote {NUMBERS}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Measure the instructor numbers of exercise sft_vs_dft.")
    p.add_argument("--measure", action="store_true", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--root", default=os.path.join("out", "sft_vs_dft_reference"))
    a = p.parse_args()
    measure(a.seeds, a.root)
