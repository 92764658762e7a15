"""
Teacher's part of exercise sft_vs_dft: the evidence the grader asks for, and the place for its keys.

Evidence: each of the three run directories must hold its final/ model, and that model, scored again
on the held-out split (exercises/evidence.py, rescore), must give the numbers the run's eval.json
claims. A run directory typed in, or copied from someone else's numbers, fails here.

The keys. The exercise's questions live in exercises/sft_vs_dft.py, with their answers stored as
hashes, while the instructor's numbers (exercises/reference_numbers.json) are re-measured. When they
are re-keyed, the answers go in KEYS below ({question: answer}; written answers get their points in
RUBRIC), the hashes leave exercises/sft_vs_dft.py, and `checks` compares ANSWERS with KEYS, as
exercises/teacher/why_u.py does.
"""
import os

from exercises.evidence import rescore

RUNS = ("sft", "dft", "dpo")
RUNS_DIR = os.path.join("out", "sft_vs_dft")  # the grader copies the student's run directories here
# the re-measured answers of sft_vs_dft go here: {"why_neg_down": ..., "nll_meaning": ..., ...}
KEYS = {}
RUBRIC = {}  # and the points of its written answers, if it gets any


def checks(m, opts):
    runs = opts.get("runs") or RUNS_DIR
    if not opts.get("evidence"):
        return []
    return [(f"evidence: {loss}/final scores the held-out numbers its eval.json claims",
             (lambda loss=loss: rescore(os.path.join(runs, loss)) and None)) for loss in RUNS]
