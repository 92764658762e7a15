"""
Is this machine ready for the course? One command, a minute or less on a laptop:

    python -m exercises.check --smoke

It checks, printing one line each: Python and the packages the project needs; the project's modules;
the shipped base model (it loads and scores an answer); the built-in task's data (written on first
use); a folder to write runs in (out/); two processes talking through torch.distributed on the CPU
(exercise u_exchange needs it); and every exercise's checker (it loads, lists its checks, and runs
the first: on a student's copy that says "not solved yet", which is fine). Exit status 0 when the
machine is ready, 1 when a line says FAIL.
"""
import importlib
import os
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _environment():
    v = sys.version_info
    assert v >= (3, 10), f"Python {v.major}.{v.minor}: the project needs 3.10 or later"
    out = []
    for name in ("torch", "numpy", "tiktoken", "safetensors"):
        mod = importlib.import_module(name)
        out.append(f"{name} {getattr(mod, '__version__', '?')}")
    return f"Python {v.major}.{v.minor}.{v.micro}; " + ", ".join(out)


def _project():
    for name in ("common", "model", "losses", "sample", "negatives", "eval", "rundir", "train"):
        importlib.import_module(name)
    return "common, model, losses, sample, negatives, eval, rundir, train import"


def _base_model():
    import torch

    from data.tokenizer import get_tokenizer
    from model import load_model
    model = load_model("data/base", "cpu").eval()
    ids = torch.tensor([get_tokenizer().encode_ordinary("Question: 2 + 3?\nAnswer: 5")])
    with torch.no_grad():
        logits = model(ids)
    assert torch.isfinite(logits).all(), "the base model's logits are not finite"
    size = model.num_params() / 1e6
    return f"data/base: {size:.1f}M parameters, a forward pass of {ids.shape[1]} tokens"


def _data():
    from data import arith
    from data.format import load_jsonl
    for path in (arith.DEFAULT_TRAIN, arith.DEFAULT_TEST):
        arith.ensure_default_file(path)
    return f"{arith.DEFAULT_TEST}: {len(load_jsonl(arith.DEFAULT_TEST).records)} examples"


def _writable():
    os.makedirs(os.path.join(ROOT, "out"), exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=os.path.join(ROOT, "out")):
        pass
    return "out/ is writable (runs go there)"


def _two_processes():
    from exercises.u_exchange import two_processes
    res = two_processes(None, deadline=60)
    if any("error" in r and "process group" in r["error"] for r in res):
        raise AssertionError(f"torch.distributed (gloo) did not start: {res[0]['error']}")
    return "two processes met through torch.distributed (gloo, CPU)"


def _checkers():
    from exercises.check import ORDER, exercise, run_check, target_namespace, teacher_part
    lines, bad = [], []
    for name in ORDER:
        ex = exercise(name)
        try:
            if ex.TARGETS:
                m = target_namespace(ex)
            else:
                from exercises.check import default_file, load_file
                m = load_file(default_file(name))
        except Exception as e:  # an unfinished file of a student is not the machine's fault
            lines.append(f"{name}: checker loads; the answer file does not import yet "
                         f"({type(e).__name__})")
            continue
        checks = list(ex.checks(m, {"impl": None, "runs": None, "name": name}))
        tp = teacher_part(name)
        first = run_check(checks[0][0], checks[0][1], 60) if checks else None
        state = "no checks" if first is None else "PASS" if first.passed else \
            "not solved yet" if first.unsolved else "waiting for its runs" if \
            "holds no" in first.message else f"FAIL: {first.message[:80]}"
        if first and not first.passed and not first.unsolved and first.message.startswith("raised"):
            bad.append(name)
        lines.append(f"{name}: {len(checks)} checks{' + teacher part' if tp else ''}; first: "
                     f"{state}")
    if bad:
        raise AssertionError("checkers that raised: " + ", ".join(bad) + "\n      "
                             + "\n      ".join(lines))
    return f"{len(ORDER)} checkers load\n      " + "\n      ".join(lines)


STEPS = (("environment", _environment), ("project", _project), ("base model", _base_model),
         ("task data", _data), ("runs folder", _writable), ("two processes", _two_processes),
         ("checkers", _checkers))


def smoke():
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    os.chdir(ROOT)
    import torch
    torch.set_num_threads(1)  # the timings of exercises/teacher/README.md are single-thread
    failed, t_all = 0, time.time()
    for label, step in STEPS:
        t0 = time.time()
        try:
            msg = step()
            print(f"  ok    {label:14s} {msg}  [{time.time() - t0:.1f} s]", flush=True)
        except Exception as e:
            failed += 1
            where = traceback.extract_tb(e.__traceback__)[-1]
            print(f"  FAIL  {label:14s} {type(e).__name__}: {e} "
                  f"({os.path.basename(where.filename)}:{where.lineno})",
                  flush=True)
    print(f"{'ready' if not failed else f'{failed} problem(s): see FAIL above'} "
          f"({time.time() - t_all:.0f} s)")
    return 1 if failed else 0
