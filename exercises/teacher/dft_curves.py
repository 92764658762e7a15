"""Teacher's part of exercise dft_curves: the evidence the grader asks for (the run trained again
with its flags, curve by curve) and the rubric of the written answer
(exercises/teacher/rubric.md)."""
from exercises.dft_curves import RUNS
from exercises.evidence import rerun

RUNS_DIR = RUNS  # the grader copies the student's run directory here
RUBRIC = {"what_it_shows": 4}
KEYS = ("loss", "logp/pos", "logp/neg", "logp0/neg", "w/max", "log_u/table_mean")


def checks(m, opts):
    if not opts.get("evidence"):
        return []
    runs = opts.get("runs") or RUNS
    return [("evidence: the run trains again to the same curves",
             lambda: rerun(runs, KEYS) and None)]
