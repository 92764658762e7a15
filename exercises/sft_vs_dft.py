"""
Exercise sft_vs_dft: run SFT, DFT and DPO briefly on the built-in task, read the numbers against the
instructor's, measured over several seeds, and explain one of them.

Three short runs from the shipped base model, the same flags and seed (about a minute each on 2 CPU
cores, DFT the longest; pick any seed):
    python train.py --loss sft --max-examples 256 --epochs 1 --lr 1e-4 --eval-max-examples 200 --log-every 1 --seed 0 --out-dir out/sft_vs_dft/sft
    ... the same with --loss dft --out-dir out/sft_vs_dft/dft, and --loss dpo --out-dir out/sft_vs_dft/dpo
The checker reads the three run directories (--runs, default out/sft_vs_dft), checks their settings and
compares their numbers with exercises/reference_numbers.json: the instructor's runs of seeds 0-4, each
number's values seed by seed, mean, sd, and a tolerance of max(3 sd, a floor).

ANSWERS (exercises/README.md, exercise sft_vs_dft):
  nll_before, nll_after_sft, nll_after_dft, nll_after_dpo, exact_match_before, exact_match_after_sft,
  exact_match_after_dft     read from your runs' final tables (eval.json)
  tokens_per_answer         from two numbers of the "before" column only, nll and logp/pos: the mean
                            number of scored tokens per gold answer (what does each of them average over?)
  sft_em                    "up", "down" or "same": SFT's exact match against the base model's
  lower_nll                 "sft", "dft" or "same": which ends with the lower held-out nll
  dft_gold                  "up", "down" or "same": DFT's held-out logp of the gold answers against SFT's
  dft_neg                   "up", "down" or "same": DFT's log-prob of its own negatives against the base
                            model's log-prob of the same negatives (dft/neg_vs_base)
  why_dft                   written: DFT ends below SFT on the gold answers here. Give one explanation
                            that fits the numbers (name them: train.py's printed share of correct
                            negatives, the grad_norm columns of metrics.jsonl, ...) and the one run,
                            with its flags, that would test it. (Graded by the teacher with the rubric.)
The four trend answers rest on the instructor's five seeds, not on your one run: compare two numbers
seed by seed (the same seed: the same data order), and call a difference a trend only when the mean of
the per-seed differences is larger than twice their sd plus half the floor of that kind of number
(FLOORS); otherwise "same". A student's copy checks the runs, the numbers you read and the form of the
answers; the teacher's copy checks the answers themselves.

Instructors: `python -m exercises.sft_vs_dft --measure --seeds 0 1 2 3 4 --root DIR` runs the 15 runs one
after the other and rewrites exercises/reference_numbers.json from them (about 20 minutes on one core);
exercises/teacher/sft_vs_dft.py holds the keys, and a test checks that each clears its threshold.
"""
import argparse
import json
import math
import os
import subprocess
import sys

from exercises.lib import Fail, answers, expect, number, one_of, written_check

TITLE = "run SFT, DFT and DPO briefly; read trends from the instructor's seeds, explain one, design a test"
TIME = 40
OBJECTIVE = "run a controlled experiment, tell a trend from seed noise, and turn an explanation into a test"
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
# the trend questions: {key: the options}, keyed in exercises/teacher/sft_vs_dft.py
TRENDS = {"sft_em": ("up", "down", "same"), "lower_nll": ("sft", "dft", "same"),
          "dft_gold": ("up", "down", "same"), "dft_neg": ("up", "down", "same")}
READ_OFF = (("nll_before", "before/nll"), ("nll_after_sft", "sft/nll"), ("nll_after_dft", "dft/nll"),
            ("nll_after_dpo", "dpo/nll"), ("exact_match_before", "before/exact_match"),
            ("exact_match_after_sft", "sft/exact_match"), ("exact_match_after_dft", "dft/exact_match"))


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

    def filled():
        a = answers(m, runs)
        for key, options in TRENDS.items():
            one_of(a, key, options)
        expect(number(a, "tokens_per_answer") > 0, 'ANSWERS["tokens_per_answer"] is a count of tokens: '
               "it should be positive")

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
            ("the numbers you report are your runs'", lambda: [reported(k, v)() for k, v in READ_OFF] and None),
            ("the trend answers and tokens_per_answer are filled in (the teacher's copy checks them)", filled),
            written_check(m, "why_dft", "an explanation of DFT's gold log-prob, and the run that tests it", 40, runs)]


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
