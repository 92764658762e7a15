"""
Worked solution of the sft_vs_dft exercise: the numbers read from the run directories, the trends from
the instructor's multi-seed numbers.

    python -m exercises.check sft_vs_dft --impl exercises/solutions/sft_vs_dft.py --runs out/sft_vs_dft

A student's file usually holds a plain dict ANSWERS = {...} typed in from the printed tables; this one
defines answers(runs) instead, which the checker calls with the --runs folder.
"""
import json
import os

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def answers(runs):
    ev = {}
    for loss in ("sft", "dft", "dpo"):
        with open(os.path.join(runs, loss, "eval.json")) as f:
            ev[loss] = json.load(f)  # {"before": {...}, "after": {...}}, the table train.py prints at the end
    with open(os.path.join(HERE, "reference_numbers.json")) as f:
        ref = json.load(f)["sft_vs_dft"]["metrics"]  # seeds 0-3: mean and sd of every number

    def trend(a, b):  # a clear difference is one larger than twice the seed-to-seed sd
        d = ref[a]["mean"] - ref[b]["mean"]
        return "same" if abs(d) <= 2 * max(ref[a]["sd"], ref[b]["sd"]) + 0.001 else "up" if d > 0 else "down"

    return {
        "nll_before": ev["sft"]["before"]["nll"],
        "nll_after_sft": ev["sft"]["after"]["nll"],
        "nll_after_dft": ev["dft"]["after"]["nll"],
        "nll_after_dpo": ev["dpo"]["after"]["nll"],
        "exact_match_after_sft": ev["sft"]["after"]["exact_match"],
        "exact_match_after_dft": ev["dft"]["after"]["exact_match"],
        "lower_nll": {"down": "sft", "up": "dft", "same": "same"}[trend("sft/nll", "dft/nll")],  # sft
        "dft_nll": trend("dft/nll", "before/nll"),  # up: in this short run DFT makes the gold answers less likely
        "dft_neg": "down" if ref["dft/neg_vs_base"]["mean"] < -2 * ref["dft/neg_vs_base"]["sd"] else "same",
        "dpo_logp_pos": trend("dpo/logp_pos", "before/logp_pos"),  # down: DPO lowers the chosen log-prob
        # dL_i/ds(y'_j) = w_j / B > 0: gradient descent lowers every negative's log-prob, the heavy ones most
        "why_neg_down": "b",
        # total NLL of the gold answers' scored tokens / number of scored tokens (a token mean over the whole set)
        "nll_meaning": "c",
        # about a third of the base model's samples are correct (a fifth word for word the reference), and DFT
        # pushes every negative down: the correct ones, and with them the gold answers
        "why_dft_nll": "b",
    }
