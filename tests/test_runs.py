"""Run directories you can trust: every bad flag stops the run before any work with one line naming the
flag; resume refuses a checkpoint of another run; a used directory needs --resume or --overwrite and a
finished model survives a failing run; kill -9 or SIGTERM then --resume equals the uninterrupted run
bit for bit (fp32 and --save-dtype bfloat16) with every metrics step once; a crash between the two
renames of a checkpoint still resumes; broken checkpoints and configs give one-line errors."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

import train
from common import run_main
from test_train import argv, setup  # noqa: F401  (the tiny model, data and negatives of test_train.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fails(args, capsys, main=train.main):
    """The entry point's behaviour for args: (exit status, the one stderr line)."""
    with pytest.raises(SystemExit) as e:
        run_main(lambda: main(args))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return e.value.code, err


# -----------------------------------------------------------------------------
# flags: checked right after parsing


@pytest.mark.parametrize("flag,value,says", [
    ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
    ("--micro-batch-size", "0", "--micro-batch-size must be >= 1, got 0"),
    ("--log-every", "0", "--log-every must be >= 1, got 0"),
    ("--lr", "-1", "--lr must be >= 0, got -1.0"),
    ("--num-negatives", "0", "--num-negatives must be >= 1, got 0"),
    ("--num-negatives", "-1", "--num-negatives must be >= 1, got -1"),
    ("--tau", "0", "--tau must satisfy 0 < --tau, got 0.0"),
    ("--gamma", "2", "--gamma must satisfy 0 < --gamma <= 1, got 2.0"),
    ("--beta", "0.1", "--beta is a hyperparameter of asft, dpo, not of dft"),
    ("--size", "huge", "argument --size: invalid choice: 'huge'"),
    ("--max-prompt-len", "96", "--max-prompt-len (96) must be < --max-len (96)"),
    ("--epochs", "0", "--epochs must be >= 1, got 0"),
    ("--max-steps", "0", "--max-steps must be >= 1, got 0"),
    ("--save-every", "0", "--save-every must be >= 1, got 0"),
    ("--warmup", "2", "--warmup must be in [0, 1], got 2.0"),
    ("--adam-betas", "0.9 1.5", "--adam-betas must be in [0, 1), got 1.5"),
    ("--neg-top-p", "0", "--neg-top-p must be in (0, 1], got 0.0"),
    ("--lr", "inf", "--lr must be a finite number, got inf"),
    ("--epochs", "two", "--epochs must be an integer, got 'two'"),
    ("--neg-temperature", "-0.5", "--neg-temperature must be >= 0, got -0.5"),
    ("--micro-batch-size", "3", "--batch-size 8 must be divisible by (processes 1 x --micro-batch-size 3)"),
])
def test_bad_flags_stop_before_any_work(setup, tmp_path, capsys, flag, value, says):
    args = argv(setup, "dft", tmp_path / "run")
    args = [a for a in args if a != "--max-prompt-len" and a != "64"] if flag == "--max-prompt-len" else args
    code, err = fails(args + [flag, *value.split()], capsys)
    assert code == 2 and says in err
    assert not (tmp_path / "run").exists()  # nothing was done


def test_device_cuda_without_cuda(setup, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, err = fails(argv(setup, "sft", tmp_path / "run") + ["--device", "cuda"], capsys)
    assert "--device cuda: no CUDA device on this machine" in err


@pytest.mark.parametrize("script,args,says", [
    ("sample", ["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
    ("sample", ["--num", "0"], "--num must be >= 1, got 0"),
    ("eval", ["--max-examples", "0"], "--max-examples must be >= 1, got 0"),
    ("eval", ["--max-len", "64", "--max-prompt-len", "64"], "--max-prompt-len (64) must be < --max-len (64)"),
    ("model", ["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
    ("negatives", ["--data", "d.jsonl", "--out", "n.jsonl", "--num-negatives", "0"],
     "--num-negatives must be >= 1, got 0"),
    ("negatives", ["--data", "d.jsonl", "--out", "n.jsonl", "--batch-size", "0"],
     "--batch-size must be >= 1, got 0"),
])
def test_other_scripts_check_flags(capsys, script, args, says):
    mod = __import__(script)
    code, err = fails(args, capsys, mod.main)
    assert code == 2 and says in err


# -----------------------------------------------------------------------------
# the run directory


def test_resume_refuses_another_run(setup, tmp_path, capsys):
    d = setup
    train.main(argv(d, "dft", tmp_path / "run", "--max-steps", "2"))
    other = tmp_path / "other.jsonl"
    other.write_text((d / "train.jsonl").read_text().replace("Question", "Q"))
    for flag, value, field in (("--loss", "sft", "loss"), ("--lr", "1e-3", "lr"), ("--batch-size", "4", "batch_size"),
                               ("--seed", "1", "seed"), ("--data", str(other), "data")):
        a = argv(d, "dft", tmp_path / "run", "--resume") + [flag, value]  # the last value of a flag wins
        if flag in ("--loss", "--data"):
            a = [x for x in a if x not in ("--negatives", str(d / "negs.jsonl"))]
        code, err = fails(a, capsys)
        assert f"--resume: {tmp_path / 'run'}/last belongs to another run" in err and f"{field}: " in err, err
        assert "--resume-changing" in err
    # an allowed change: the lr schedule's peak, named explicitly
    train.main(argv(d, "dft", tmp_path / "run", "--resume", "--lr", "1e-3", "--resume-changing", "lr"))
    assert (tmp_path / "run" / "final").exists()


def test_used_directory_needs_resume_or_overwrite(setup, tmp_path, capsys, monkeypatch):
    d, run = setup, tmp_path / "run"
    train.main(argv(d, "sft", run))
    first = load_file(run / "final" / "model.safetensors")
    code, err = fails(argv(d, "dft", run), capsys)
    assert "already holds a complete run (final/); continue it with --resume, replace it with --overwrite" in err
    # an --overwrite run that dies before finishing: the finished model is kept, as final.previous/
    monkeypatch.setattr(train, "train_step", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        train.main(argv(d, "dft", run, "--overwrite"))
    assert not (run / "final").exists() and not (run / "last").exists()
    assert load_file(run / "final.previous" / "model.safetensors").keys() == first.keys()
    monkeypatch.undo()
    code, err = fails(argv(d, "dft", run, "--resume"), capsys)  # the dead run saved nothing to resume
    assert "--resume: no checkpoint" in err
    train.main(argv(d, "dft", run, "--overwrite"))  # completes: its own final/ replaces the old one
    assert (run / "final").exists() and not (run / "final.previous").exists()
    assert json.load(open(run / "config.json"))["loss"] == "dft"


def test_checkpoint_swap_crash_resumes_from_last_old(setup, tmp_path):
    d = setup
    full, _ = train.main(argv(d, "dft", tmp_path / "full"))
    train.main(argv(d, "dft", tmp_path / "run", "--max-steps", "2"))
    os.replace(tmp_path / "run" / "last", tmp_path / "run" / "last.old")  # the crash between the two renames
    resumed, _ = train.main(argv(d, "dft", tmp_path / "run", "--resume"))
    for k, v in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


def test_broken_checkpoints_and_configs(setup, tmp_path, capsys):
    d = setup
    bad = tmp_path / "bad"
    shutil.copytree(d / "base", bad)
    (bad / "config.json").write_text("<html>not json</html>")
    assert f"{bad}/config.json: not a JSON file" in fails(_init(d, bad, tmp_path), capsys)[1]
    (bad / "config.json").write_text(json.dumps({"n_head": 2, "n_embd": 32, "vocab_size": 50257}))
    assert f"{bad}/config.json: not a GPT-2 config.json (missing or invalid 'n_layer')" in fails(_init(d, bad, tmp_path), capsys)[1]
    shutil.copy(d / "base" / "config.json", bad / "config.json")
    t = load_file(bad / "model.safetensors")
    save_file({k: v.to(torch.int32) for k, v in t.items()}, bad / "model.safetensors")
    assert "has dtype torch.int32; a checkpoint holds floating-point weights" in fails(_init(d, bad, tmp_path), capsys)[1]
    a = argv(d, "sft", tmp_path / "run")
    a[a.index("--data") + 1] = str(tmp_path)
    assert f"{tmp_path}: is a directory, expected a JSONL file" in fails(a, capsys)[1]


def _init(d, init, tmp_path):
    a = argv(d, "sft", tmp_path / "run")
    a[a.index("--init") + 1] = str(init)
    return a


# -----------------------------------------------------------------------------
# hard kills and preemption, in a real process


def _cmd(d, out, *extra):
    """A DFT run of 8 steps (4 epochs of 2), a checkpoint every step, its negatives sampled into a cache
    beside the run (shared by the runs of one test)."""
    a = argv(d, "dft", out, "--epochs", "4", "--save-every", "1", "--negatives-dir", str(out.parent / "negs"), *extra)
    i = a.index("--negatives")
    return [sys.executable, "train.py"] + a[:i] + a[i + 2:]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run_until(cmd, metrics, n_lines, sig):
    """Start cmd, wait until metrics has n_lines lines, send sig; return the finished process."""
    p = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while time.time() - t0 < 120:
        if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= n_lines:
            break
        if p.poll() is not None:
            break
        time.sleep(0.005)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    return p, out, err


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_kill_9_then_resume_is_bit_identical(setup, tmp_path, dtype):
    d = setup
    ref = subprocess.run(_cmd(d, tmp_path / "full", "--save-dtype", dtype), cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    p, _, err = _run_until(_cmd(d, run, "--save-dtype", dtype), run / "metrics.jsonl", 3, signal.SIGKILL)
    assert p.returncode == -9 and not (run / "final").exists(), "the run finished before it could be killed"
    r = subprocess.run(_cmd(d, run, "--save-dtype", dtype, "--resume"), cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = load_file(tmp_path / "full" / "final" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a) and str(next(iter(b.values())).dtype) == f"torch.{dtype}"
    assert next(iter(load_file(run / "last" / "model.safetensors").values())).dtype == torch.float32  # exact state
    steps = [json.loads(line)["step"] for line in open(run / "metrics.jsonl")]
    assert steps == list(range(1, 9)), steps  # every step once, in order


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_saves_and_exits_cleanly(setup, tmp_path, sig, status):
    """SIGTERM (a scheduler's preemption) or Ctrl-C: the step ends, last/ is saved, and the process
    exits with 128 + the signal's number, saying how to continue."""
    d = setup
    run = tmp_path / "run"
    p, out, err = _run_until(_cmd(d, run), run / "metrics.jsonl", 3, sig)
    assert p.returncode == status, err
    step = torch.load(run / "last" / "state.pt")["step"]
    assert "Traceback" not in err
    said = f"{sig.name}: saved {run}/last at step {step}; continue with --resume --out-dir {run}"
    assert said in out
    assert not (run / "final").exists()
    r = subprocess.run(_cmd(d, run, "--resume"), cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0 and (run / "final").exists(), r.stderr


def test_sigterm_handler_is_restored_after_training(setup, tmp_path):
    """compare.py calls train.main in-process, then scores the model: a SIGTERM in between must reach the
    process's own handler, not a finished run's flag (where it would be silently ignored)."""
    d = setup
    before = signal.getsignal(signal.SIGTERM)
    train.main(argv(d, "sft", tmp_path / "run", "--max-steps", "1"))
    assert signal.getsignal(signal.SIGTERM) is before
