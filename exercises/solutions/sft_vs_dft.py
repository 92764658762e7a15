"""
Worked solution of the sft_vs_dft exercise: the numbers read from the run directories, the trends
from the instructor's numbers seed by seed.

    python -m exercises.check sft_vs_dft --impl exercises/solutions/sft_vs_dft.py --runs out/sft_vs_dft

A student's file usually holds a plain dict ANSWERS = {...} typed in from the printed tables; this one
defines answers(runs) instead, which the checker calls with the --runs folder.
"""
import json
import os
import statistics

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOORS = {"nll": 0.002, "exact_match": 0.03, "logp_pos": 0.03, "neg_vs_base": 0.05}


def answers(runs):
    ev = {}
    for loss in ("sft", "dft", "dpo"):
        with open(os.path.join(runs, loss, "eval.json")) as f:
            ev[loss] = json.load(f)  # {"before": {...}, "after": {...}}: train.py's final table
    with open(os.path.join(HERE, "reference_numbers.json")) as f:
        ref = json.load(f)["sft_vs_dft"]["metrics"]  # every number, seed by seed

    def trend(a, b, up="up", down="down"):
        # the same seed, the same data order: compare seed by seed
        vb = ref[b]["values"] if b else [0.0] * len(ref[a]["values"])
        d = [x - y for x, y in zip(ref[a]["values"], vb)]
        mean, sd = statistics.mean(d), statistics.stdev(d)
        clear = abs(mean) > 2 * sd + FLOORS[a.split("/")[1]] / 2
        return (up if mean > 0 else down) if clear else "same"

    before = ev["sft"]["before"]
    return {
        "nll_before": before["nll"],
        "nll_after_sft": ev["sft"]["after"]["nll"],
        "nll_after_dft": ev["dft"]["after"]["nll"],
        "nll_after_dpo": ev["dpo"]["after"]["nll"],
        "exact_match_before": before["exact_match"],
        "exact_match_after_sft": ev["sft"]["after"]["exact_match"],
        "exact_match_after_dft": ev["dft"]["after"]["exact_match"],
        # nll = -(sum over tokens) / tokens, logp/pos = (the same sum) / answers
        "tokens_per_answer": -before["logp/pos"] / before["nll"],
        "sft_em": trend("sft/exact_match", "before/exact_match"),  # up: the base has room
        "lower_nll": trend("sft/nll", "dft/nll", up="dft", down="sft"),  # sft
        "dft_gold": trend("dft/logp_pos", "sft/logp_pos"),  # down
        "dft_neg": trend("dft/neg_vs_base", None),  # down: DFT pushes its negatives below the base
        "why_dft": (
            "Hypothesis: about 18% of DFT's negatives are correct answers (train.py prints the share), "
            "and DFT pushes every negative down (dft/neg_vs_base is -1.25), so it pushes correct "
            "answers, and with them the gold, down: DFT's logp_pos ends 0.35 below SFT's. Test: the "
            "same DFT run with --neg-filter wrong (wrong negatives only), seeds 0-4. If its logp_pos "
            "stays as far below SFT's, seed by seed, the hypothesis is refuted."),
    }
