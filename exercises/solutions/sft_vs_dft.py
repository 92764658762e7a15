"""
Worked solution of the sft_vs_dft exercise: the answers, read from the run directories themselves.

    python train.py --loss sft && python train.py --loss dft
    python -m exercises.check sft_vs_dft --impl exercises/solutions/sft_vs_dft.py --runs out

A student's file usually holds a plain dict ANSWERS = {...} typed in from the printed tables; this one
defines answers(runs) instead, which the checker calls with the --runs folder.
"""
import json
import os


def answers(runs):
    ev = {}
    for loss in ("sft", "dft"):
        with open(os.path.join(runs, loss, "eval.json")) as f:
            ev[loss] = json.load(f)  # {"before": {...}, "after": {...}}, the table train.py prints at the end
    with open(os.path.join(runs, "dft", "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]  # one row per logged step
    first, last = rows[0], rows[-1]
    trend = lambda k: "up" if last[k] > first[k] else "down" if last[k] < first[k] else "flat"
    return {
        "nll_before": ev["sft"]["before"]["nll"],
        "nll_after_sft": ev["sft"]["after"]["nll"],
        "nll_after_dft": ev["dft"]["after"]["nll"],
        "exact_match_after_sft": ev["sft"]["after"]["exact_match"],
        "exact_match_after_dft": ev["dft"]["after"]["exact_match"],
        "lower_nll": "sft" if ev["sft"]["after"]["nll"] <= ev["dft"]["after"]["nll"] else "dft",
        "dft_logp_pos": trend("logp/pos"),
        "dft_logp_neg": trend("logp/neg"),
        # dL_i/ds(y'_j) = w_j / B > 0: gradient descent lowers every negative's log-prob, the heavy ones most
        "why_neg_down": "b",
        # total NLL of the gold answers' scored tokens / number of scored tokens (a token mean over the whole set)
        "nll_meaning": "c",
    }
