"""
Exercise dft_curves: plot u, w and the log-probs over a real DFT run, and say what they show.

A tiny DFT run from the shipped base model (about 20 s on 2 CPU cores; 2 epochs of 2 steps):
    python train.py --loss dft --max-examples 64 --max-steps 8 --log-every 1 --lr 1e-4 \
        --out-dir out/ex_plot --no-eval
(--lr 1e-4, ten times DFT's default, so that four steps move the curves visibly.)
train.py writes out/ex_plot/metrics.jsonl: one JSON object per logged step with loss, logp/pos,
logp/neg, logp0/neg, log_u (the batch's new u), log_u/table_mean (the whole table's), w/mean and
w/max. Your file defines
  plot(run_dir, path)   draw log_u/table_mean, w/mean, w/max, logp/pos, logp/neg and logp0/neg
                        against the step, from run_dir/metrics.jsonl, into the image file `path`
                        (.svg: write it by hand, a <polyline> per series, or use matplotlib)
  ANSWERS (or answers(run_dir) returning them), read off your run:
    steps             how many steps were logged
    w_max_peak        the largest w/max of the run
    log_u_last        log_u/table_mean at the last logged step
    neg_vs_base_last  logp/neg - logp0/neg at the last logged step
    u_trend           "up", "down" or "same": log_u/table_mean, first logged step to last
    what_it_shows     written: what do u, w and the log-probs show about what DFT does? (rubric)

    python -m exercises.check dft_curves          # --runs DIR if the run is elsewhere

The checker reads the run directory, calls plot() into a temporary file, and compares your numbers
with the run's metrics.jsonl; the grader also trains the run again with its flags and compares the
curves.
"""
import json
import os
import tempfile
import xml.etree.ElementTree as ET

from exercises.lib import Fail, answers, expect, number, one_of, written_check

TITLE = "plot u, w and the log-probs over a real DFT run, and read them"
TIME = 25
OBJECTIVE = ("read a run's curves: what u, the weights w and the log-probs of positives and "
             "negatives do")
READ = (("train.py", "Clock"), ("docs/ALGORITHMS.md", "State across processes"))
TARGETS = ()
NEEDS = ("plot",)
LIMIT = 120  # the grader's evidence trains the run again
RUNS = os.path.join("out", "ex_plot")
COMMAND = ("python train.py --loss dft --max-examples 64 --max-steps 8 --log-every 1 --lr 1e-4 "
           "--out-dir {runs} --no-eval")
SETTINGS = {"loss": "dft", "init": "data/base", "max_examples": 64, "max_steps": 8,
            "log_every": 1, "no_eval": True, "tau": None, "gamma": None, "lr": 1e-4}
SERIES = ("log_u/table_mean", "w/mean", "w/max", "logp/pos", "logp/neg", "logp0/neg")


def read(runs):
    """The run's metrics rows, after checking it is the exercise's run; Fail naming the command."""
    try:
        with open(os.path.join(runs, "config.json")) as f:
            cfg = json.load(f)
        with open(os.path.join(runs, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        raise Fail(f"{runs} holds no run (config.json, metrics.jsonl): run "
                   f"`{COMMAND.format(runs=runs)}` first (or pass --runs DIR)") from None
    bad = {k: cfg.get(k) for k, v in SETTINGS.items() if cfg.get(k) != v}
    expect(not bad, f"{runs} was run with other settings than the exercise's ({bad}): rerun "
           f"`{COMMAND.format(runs=runs)} --overwrite`")
    expect(len(rows) >= 2 and all(k in rows[-1] for k in SERIES), f"{runs}/metrics.jsonl should "
           f"log every step with {', '.join(SERIES)}: the run did not finish?")
    return rows


def observed(rows):
    """The numbers of the questions, read from the run's rows."""
    first, last = rows[0]["log_u/table_mean"], rows[-1]["log_u/table_mean"]
    trend = "same" if abs(last - first) < 1e-3 else "up" if last > first else "down"
    return {"steps": len(rows), "w_max_peak": max(r["w/max"] for r in rows), "log_u_last": last,
            "neg_vs_base_last": rows[-1]["logp/neg"] - rows[-1]["logp0/neg"], "u_trend": trend}


def image_ok(path):
    """Fail unless path is a PNG or an SVG that draws at least three series."""
    expect(os.path.isfile(path) and os.path.getsize(path) > 0,
           f"plot(run_dir, path) wrote nothing to {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    if head == b"\x89PNG\r\n\x1a\n":
        expect(os.path.getsize(path) > 2000, "the PNG is almost empty: draw the six series")
        return
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise Fail(f"the plot is neither a PNG nor a readable SVG ({e})") from None
    expect(root.tag.endswith("svg"), f"the plot's root element is <{root.tag}>, not <svg>")
    drawn = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] in ("polyline", "path", "line")]
    expect(len(drawn) >= 3, f"the SVG draws {len(drawn)} lines (polyline, path, line): draw the "
           "six series")


def checks(m, opts):
    runs, state = opts.get("runs") or RUNS, {}

    def rows():
        if "rows" not in state:
            state["rows"] = read(runs)
        return state["rows"]

    def picture():
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "dft_curves.svg")
            m.plot(runs, path)
            image_ok(path)

    def numbers():
        a, seen = answers(m, runs), observed(rows())
        for key in ("steps", "w_max_peak", "log_u_last", "neg_vs_base_last"):
            got, want = number(a, key), seen[key]
            expect(abs(got - want) <= 1e-3 + 1e-3 * abs(want), f'ANSWERS["{key}"] = {got!r}, '
                   f"but {runs}/metrics.jsonl says {want:.5g}: read it again from the run's rows")
        got = one_of(a, "u_trend", ("up", "down", "same"))
        first, last = rows()[0]["log_u/table_mean"], rows()[-1]["log_u/table_mean"]
        expect(got == seen["u_trend"], f'ANSWERS["u_trend"] = {got!r}, but log_u/table_mean goes '
               f"from {first:.4g} to {last:.4g} in {runs}")

    return [("the run: the exercise's flags, every step logged", lambda: rows() and None),
            ("plot(run_dir, path) draws the curves into an image file", picture),
            ("the numbers you read are the run's", numbers),
            written_check(m, "what_it_shows", "what u, w and the log-probs show", 30, runs)]
