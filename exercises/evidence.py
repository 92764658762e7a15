"""
Evidence that cannot be typed in: what the grader checks about a submitted run directory before it
trusts the numbers read from it (exercise sft_vs_dft: the held-out scores; dft_curves: the training
curves). A run directory is what train.py writes (rundir.py): config.json, metrics.jsonl, eval.json
and final/, the finished model.

  rescore(run, keys)   load run/final, score the held-out split again with eval.py (the run's own
                       --eval-data and --eval-max-examples, scoring only: no greedy decoding) and
                       compare with the "after" numbers the run claims in eval.json
  rerun(run, keys)     train again with the run's own flags into a temporary folder and compare the
                       logged metrics, step by step, with the run's metrics.jsonl

Both raise Fail naming what does not match. The teacher's part of an exercise calls them when the
grader asks for evidence (exercises/teacher/sft_vs_dft.py, exercises/teacher/dft_curves.py).
"""
import json
import math
import os
import subprocess
import sys
import tempfile

from exercises.lib import Fail, expect

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_run(run):
    """(config, eval.json or None, metrics rows) of a run directory; Fail when it is not one."""
    try:
        with open(os.path.join(run, "config.json")) as f:
            cfg = json.load(f)
        with open(os.path.join(run, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        ev = None
        if os.path.exists(os.path.join(run, "eval.json")):
            with open(os.path.join(run, "eval.json")) as f:
                ev = json.load(f)
    except OSError as e:
        raise Fail(f"{run} is not a finished run directory ({e.strerror}: "
                   f"{os.path.basename(e.filename or '')})") from None
    except ValueError as e:
        raise Fail(f"{run}: a file is not valid JSON ({e})") from None
    return cfg, ev, rows


def near(got, want, rel, abs_):
    return math.isfinite(got) and abs(got - want) <= abs_ + rel * abs(want)


def rescore(run, keys=("nll", "logp/pos"), rel=1e-3, abs_=1e-3):
    """Score run/final on the held-out split again and compare with eval.json's "after"."""
    import torch

    from data import arith
    from data.format import load_jsonl, resolve_lengths
    from eval import EvalSettings, evaluate
    from model import load_model

    cfg, ev, _ = read_run(run)
    expect(ev is not None and "after" in ev, f"{run}/eval.json claims no held-out numbers after "
           "training")
    final = os.path.join(run, "final")
    expect(os.path.isdir(final), f"{run} has no final/ model: the numbers it claims cannot be "
           "checked (submit the whole run directory, final/ included)")
    try:
        model = load_model(final, "cpu")
    except Exception as e:  # a broken or foreign checkpoint is the submission's problem
        raise Fail(f"{run}/final cannot be loaded as a model: {type(e).__name__}: {e}") from None
    path = cfg.get("eval_data") or arith.DEFAULT_TEST
    arith.ensure_default_file(path)
    records = load_jsonl(path).records[:cfg.get("eval_max_examples")]
    lengths = resolve_lengths(model.config.block_size, cfg.get("max_len"),
                              cfg.get("max_prompt_len"))
    with torch.no_grad():  # scoring only: the likelihoods, no greedy decoding
        settings = EvalSettings(*lengths, exact_match=False, progress=False)
        got = evaluate(model, records, None, settings)
    for k in keys:
        claimed = ev["after"].get(k)
        ok = isinstance(claimed, (int, float)) and near(got[k], claimed, rel, abs_)
        expect(ok, f"{run}: its final/ model scores {k} = {got[k]:.5f} on "
               f"{os.path.basename(path)}, but its eval.json claims {claimed!r}: the numbers do "
               "not come from this model")
    return got


def rerun(run, keys, rel=0.05, abs_=0.05, timeout=600):
    """Train again with the run's own flags (train.py, in this copy of the project) and compare the
    metrics of every logged step with the run's metrics.jsonl."""
    cfg, _, rows = read_run(run)
    expect(rows, f"{run}/metrics.jsonl logs no step")
    flags = ["--loss", cfg["loss"], "--max-examples", str(cfg["max_examples"]),
             "--log-every", str(cfg["log_every"]), "--seed", str(cfg["seed"]),
             "--lr", str(cfg["lr"]), "--epochs", str(cfg["epochs"])]
    flags += ["--max-steps", str(cfg["max_steps"])] if cfg.get("max_steps") else []
    flags += ["--no-eval"] if cfg.get("no_eval") else []
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "train.py", *flags, "--out-dir", os.path.join(d, "run")]
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            last = (p.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise Fail(f"re-running {run} with its own flags failed: {last}")
        _, _, again = read_run(os.path.join(d, "run"))
    expect(len(again) == len(rows), f"{run} logs {len(rows)} steps; the same flags log "
           f"{len(again)}")
    for mine, ref in zip(rows, again):
        for k in keys:
            ok = k in mine and near(float(mine[k]), float(ref[k]), rel, abs_)
            expect(ok, f"{run}, step {ref.get('step')}: {k} = {mine.get(k)!r} in the submitted "
                   f"metrics.jsonl, but re-running the same flags gives {ref[k]:.5f}: the "
                   "submitted run is not what these flags train")
    return again
