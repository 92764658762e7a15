"""Your plot and answers for exercise dft_curves (questions: exercises/dft_curves.py and
exercises/README.md). First the run:
    python train.py --loss dft --max-examples 64 --max-steps 8 --log-every 1 \
        --out-dir out/ex_plot --no-eval
then check with  python -m exercises.check dft_curves --impl THIS_FILE  (in the student edition,
exercises/yours/dft_curves.py is checked without --impl; --runs DIR if the run is elsewhere)."""
import json
import os


def plot(run_dir, path):
    """Draw log_u/table_mean, w/mean, w/max, logp/pos, logp/neg and logp0/neg against the step,
    from run_dir/metrics.jsonl (one JSON object per line), into the image file `path` (.svg: a
    <polyline> per series written by hand is enough; or matplotlib, if you have it)."""
    raise NotImplementedError


ANSWERS = {
    "steps": None,             # how many steps were logged
    "w_max_peak": None,        # the largest w/max of the run
    "log_u_last": None,        # log_u/table_mean at the last logged step
    "neg_vs_base_last": None,  # logp/neg - logp0/neg at the last logged step
    "u_trend": None,           # "up", "down" or "same": log_u/table_mean, first step to last
    "what_it_shows": None,     # a few sentences: what do u, w and the log-probs show?
}
