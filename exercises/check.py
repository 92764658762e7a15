"""
The checker of the classroom exercises: `python -m exercises.check NAME` runs exercise NAME's checks
and prints one line per check, PASS or FAIL with the likely mistake. Each exercise is one file,
exercises/NAME.py (its objective, what to read, and the public checks); this file only runs them.

What is checked:
  - an exercise on a function of the project (dpo: losses.dpo_loss) checks that function where it
    lives, in place: in the student edition it is a stub to fill in;
  - an exercise answered in a file of your own (simpo, kv_cache, the question exercises) checks
    exercises/yours/NAME.py, or the worked solution in exercises/solutions/ when there is none;
  - --impl FILE checks the function(s) defined in FILE instead (the project's code is untouched;
    while the checks run, the project's module sees your function in its place).
A student's copy runs the public checks: properties, brute force and public cases. The teacher's
copy (and the grader, python -m exercises.grade) also runs exercises/teacher/NAME.py: checks against
its references and answer keys, and hidden cases.

    python -m exercises.check --list                       # the exercises, in course order
    python -m exercises.check dpo                          # check losses.dpo_loss where it is
    python -m exercises.check dpo --template > my_dpo.py   # a starting file, then:
    python -m exercises.check dpo --impl my_dpo.py
    python -m exercises.check dpo --json                   # one JSON object, for grading scripts
    python -m exercises.check dpo --cases hidden.json      # extra cases (exercises/README.md)
    python -m exercises.check dpo --public                 # only what a student's copy checks
    python -m exercises.check --smoke                      # is this machine ready for the course?

Exit status: 0 every check passed, 1 a check failed (or the exercise is not solved yet), 2 usage
error. A check that runs longer than its time limit (--time-limit, default per exercise) fails.
"""
import argparse
import importlib
import importlib.util
import json
import os
import signal
import sys
import threading
import time
import traceback
import types
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
HERE = os.path.dirname(os.path.abspath(__file__))

from common import HelpFormatter  # noqa: E402
from exercises.lib import WRITTEN, Fail  # noqa: E402

# course order (exercises/README.md has the syllabus)
ORDER = ("sequence_logps", "dpo", "dpo_chosen", "asft", "u_update", "dft_loss", "dft2_no_ref",
         "dft_gradient", "why_u", "dft_tau1", "top_p", "negatives", "kv_cache", "u_exchange",
         "simpo", "dft_curves", "sft_vs_dft")
# where the teacher's part lives; the grader loads it from the teacher's copy into "loaded"
TEACHER = {"package": "exercises.teacher", "folder": os.path.join(HERE, "teacher"), "loaded": {}}


class UsageError(Exception):
    """Unknown exercise, missing file, bad --cases: the command line is wrong (exit status 2)."""


class TimeLimit(BaseException):
    """Raised inside a check that ran too long (BaseException: `except Exception` cannot hide it)."""


@dataclass
class Result:
    name: str
    passed: bool
    message: str = ""
    unsolved: bool = False


def exercise(name):
    if name not in ORDER:
        raise UsageError(f"unknown exercise {name!r}; choose one of: {', '.join(ORDER)} (or --list)")
    return importlib.import_module(f"exercises.{name}")


def teacher_part(name):
    """exercises/teacher/NAME.py, the references, keys and hidden checks: None in a student's copy."""
    if name in TEACHER["loaded"]:
        return TEACHER["loaded"][name]
    if not os.path.isfile(os.path.join(TEACHER["folder"], f"{name}.py")):
        return None
    return importlib.import_module(f"{TEACHER['package']}.{name}")


def load_file(path, what="--impl"):
    """Import a python file by path as a fresh module (its own name, so several load side by side)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise UsageError(f"{what} {path}: no such file")
    name = "_exercise_file_" + str(abs(hash(path)))
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def default_file(name):
    """The file a file exercise checks without --impl: yours first, else the worked solution."""
    for folder in ("yours", "solutions"):
        path = os.path.join(HERE, folder, f"{name}.py")
        if os.path.exists(path):
            return path
    raise UsageError(f"exercise {name}: no file to check; write exercises/yours/{name}.py (start "
                     f"from `python -m exercises.check {name} --template`) or pass --impl FILE")


def target_namespace(ex):
    """The project's own functions an in-place exercise is about, looked up where they live."""
    ns = types.SimpleNamespace()
    for module, fn in ex.TARGETS:
        setattr(ns, fn, getattr(importlib.import_module(module), fn))
    return ns


@contextmanager
def patched(ex, m):
    """While the checks run, the project's modules see the --impl file's functions in their place."""
    saved = []
    for module, fn in getattr(ex, "TARGETS", ()):
        mod = importlib.import_module(module)
        if hasattr(m, fn):
            saved.append((mod, fn, getattr(mod, fn)))
            setattr(mod, fn, getattr(m, fn))
    try:
        yield
    finally:
        for mod, fn, old in saved:
            setattr(mod, fn, old)


@contextmanager
def time_limit(seconds):
    """Raise TimeLimit in the main thread after `seconds` (where the platform has SIGALRM)."""
    if not seconds or not hasattr(signal, "SIGALRM") or \
            threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(*_):
        raise TimeLimit()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def where(e, impl=None):
    """The line an exception came from: in the --impl file if it passed through it, else the last
    frame."""
    frames = traceback.extract_tb(e.__traceback__)
    mine = [f for f in frames if impl and os.path.abspath(f.filename) == os.path.abspath(impl)]
    f = mine[-1] if mine else (frames[-1] if frames else None)
    if f is None:
        return ""
    shown = os.path.relpath(f.filename, ROOT) if f.filename.startswith(ROOT) else \
        os.path.basename(f.filename)
    return f" ({shown}:{f.lineno}: {(f.line or '').strip()})"


def run_check(name, thunk, limit, impl=None):
    try:
        with time_limit(limit):
            out = thunk()
        # a written answer comes back as its text, for the teacher's grade sheet
        return Result(name, True, out if name.startswith(WRITTEN) and isinstance(out, str) else "")
    except TimeLimit:
        return Result(name, False, f"took longer than its time limit of {limit:g} s (an endless "
                      "loop, a hang waiting for another process, or far more work than needed?)")
    except NotImplementedError as e:
        fn = traceback.extract_tb(e.__traceback__)[-1].name
        return Result(name, False, f"not solved yet: {str(e) or f'{fn} raises NotImplementedError'}",
                      unsolved=True)
    except Fail as e:
        return Result(name, False, str(e))
    except Exception as e:  # the code under test raised: a failed check, with the line it came from
        return Result(name, False, f"raised {type(e).__name__}: {e}{where(e, impl)}")


def load_cases(path, name):
    """Extra (hidden) cases: a .json file {"exercise": NAME, "cases": [...]} or a .py file that
    defines EXERCISE = NAME and CASES = [...]. Each case is a dict; exercises/README.md lists its
    fields."""
    try:
        if path.endswith(".py"):
            mod = load_file(path, "--cases")
            data = {"exercise": getattr(mod, "EXERCISE", None), "cases": getattr(mod, "CASES", None)}
        else:
            with open(path) as f:
                data = json.load(f)
    except UsageError:
        raise
    except (OSError, ValueError) as e:
        raise UsageError(f"--cases {path}: {e}") from None
    except Exception as e:
        raise UsageError(f"--cases {path}: cannot load it: {type(e).__name__}: {e}") from None
    if not isinstance(data, dict) or data.get("exercise") != name or \
            not isinstance(data.get("cases"), list):
        raise UsageError(f'--cases {path}: expected {{"exercise": "{name}", "cases": [{{...}}, ...]}} '
                         f"(or EXERCISE = {name!r} and CASES = [...] in a .py file)")
    if not all(isinstance(c, dict) for c in data["cases"]):
        raise UsageError(f"--cases {path}: every case should be a dict of fields")
    return data["cases"]


def case_checks(ex, tp, m, cases):
    """One check per extra case; its expected outputs come with it ("want") or from the teacher's
    reference."""
    if cases and not hasattr(ex, "compare"):
        raise UsageError(f"exercise {ex.__name__.rsplit('.', 1)[-1]} takes no cases")
    verified = getattr(ex, "VERIFIED", False)  # its cases are checked by brute force: no "want"
    if not verified and tp is None and any("want" not in c for c in cases):
        raise UsageError("these cases hold inputs only: their expected outputs come from the "
                         "teacher's references (exercises/teacher/), which this copy does not have")

    def want(c):
        return c["want"] if "want" in c else None if verified else tp.expected(c)
    return [(f"hidden case {i + 1}" + (f": {c['name']}" if c.get("name") else ""),
             (lambda c=c: ex.compare(m, c, want(c)))) for i, c in enumerate(cases)]


def run_exercise(name, impl=None, runs=None, cases=None, time_limit_s=None, out=None, public=False,
                 extra=None, on_result=None):
    """Run one exercise's checks; print one line per check to `out` (None: silent); return the
    Results. public=True runs only what a student's copy runs; extra: more options for the checks
    (the grader's {"evidence": True}); on_result(result) is called as each check ends. Raises
    UsageError for a bad name or path."""
    say = (lambda s: print(s, file=out)) if out else (lambda s: None)
    ex = exercise(name)
    tp = None if public else teacher_part(name)
    targets = getattr(ex, "TARGETS", ())
    more = load_cases(cases, name) if cases else []
    path = os.path.abspath(impl) if impl else (None if targets else default_file(name))
    if path and not os.path.isfile(path):
        raise UsageError(f"--impl {path}: no such file")
    say(f"exercise {name} (about {ex.TIME} min): {ex.TITLE}")
    try:
        m = load_file(path) if path else target_namespace(ex)
    except Exception as e:  # a SyntaxError or an exception at import time is the student's to fix
        msg = f"cannot import {'your file' if path else 'the project code'}: {type(e).__name__}: " \
              f"{e}{where(e, path)}"
        say(f"  FAIL  import: {msg}")
        return [Result("import", False, msg)]
    shown = os.path.relpath(path, ROOT) if path and path.startswith(ROOT) else path
    say(f"checking {', '.join(ex.NEEDS) or 'the answers'} " + (f"from {shown}" if path else "in " + ", ".join(
        sorted({f'{mod.replace(".", "/")}.py' for mod, _ in targets}))))
    missing = [n for n in ex.NEEDS if not callable(getattr(m, n, None))]
    if missing:
        msg = f"{shown} defines no {', '.join(missing)} (`python -m exercises.check {name} " \
              "--template` shows the signature)"
        say(f"  FAIL  definitions: {msg}")
        return [Result("definitions", False, msg)]
    opts = {"impl": path, "runs": runs, "name": name, **(extra or {})}
    checks = list(ex.checks(m, opts)) + (list(tp.checks(m, opts)) if tp else [])
    checks += case_checks(ex, tp, m, more)
    results = []
    with patched(ex, m) if path else nullcontext():
        for check_name, thunk in checks:
            t0 = time.time()
            r = run_check(check_name, thunk, time_limit_s or getattr(ex, "LIMIT", 30), path)
            results.append(r)
            if on_result:
                on_result(r)
            secs = f"  [{time.time() - t0:.0f} s]" if time.time() - t0 >= 5 else ""
            if r.passed:
                words = f" (recorded for the teacher: {len(r.message.split())} words)" if r.message else ""
                say(f"  PASS  {check_name}{words}{secs}")
            else:
                say(f"  FAIL  {check_name}: {' '.join(r.message.split())}{secs}")
    n = sum(r.passed for r in results)
    if n == len(results):
        say(f"all {n} checks passed.")
    elif all(r.unsolved for r in results if not r.passed) and n == 0:
        say(f"not solved yet: 0 of {len(results)} checks passed. Write the code (or answers), then "
            "run this again.")
    else:
        say(f"{n} of {len(results)} checks passed; the first FAIL names the likely mistake. "
            f"Hints: exercises/README.md, exercise {name}.")
    return results


def listing():
    lines = [" #  exercise         min  what"]
    for i, name in enumerate(ORDER, 1):
        ex = exercise(name)
        lines.append(f"{i:2d}  {name:15s} {ex.TIME:4d}  {ex.TITLE}")
    lines.append("\ncheck one: python -m exercises.check NAME   (--impl FILE: your own file; "
                 "--template: a file to start from)")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m exercises.check", description="Check a classroom "
                                "exercise (exercises/README.md).", epilog="example: python -m "
                                "exercises.check dpo --impl my_dpo.py", formatter_class=HelpFormatter)
    p.add_argument("exercise", nargs="?", help="the exercise to check (see --list)")
    p.add_argument("--list", action="store_true", help="list the exercises, in course order")
    p.add_argument("--impl", default=None, help="your python file defining the function(s) under "
                   "test (default: the function in place, or exercises/yours/NAME.py)")
    p.add_argument("--template", action="store_true", help="print a starting file for the exercise")
    p.add_argument("--json", action="store_true", help="print one JSON object {exercise, passed, "
                   "checks} instead of text")
    p.add_argument("--cases", default=None, metavar="FILE", help="extra (hidden) cases from a .json "
                   "or .py file")
    p.add_argument("--time-limit", type=float, default=None, metavar="S", help="seconds each check "
                   "may take (default: the exercise's own limit, 30 s for most)")
    p.add_argument("--runs", default=None, metavar="DIR", help="experiment exercises: the folder "
                   "holding the run directories (default: the one the exercise names)")
    p.add_argument("--public", action="store_true", help="only the checks a student's copy runs "
                   "(leave out exercises/teacher/)")
    p.add_argument("--smoke", action="store_true", help="check that this machine is ready for the "
                   "course (a minute or two), then exit")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on a bad flag and 0 on --help
        return int(e.code or 0)
    if args.smoke:
        from exercises.smoke import smoke
        return smoke()
    if args.list or not args.exercise:
        print(listing())
        return 0 if args.list else 2
    try:
        if args.template:
            ex = exercise(args.exercise)
            if getattr(ex, "TARGETS", ()):
                from exercises.student import template
                sys.stdout.write(template(ex))
            else:
                with open(os.path.join(HERE, "templates", f"{args.exercise}.py")) as f:
                    sys.stdout.write(f.read())
            return 0
        if args.time_limit is not None and args.time_limit <= 0:
            raise UsageError(f"--time-limit must be > 0, got {args.time_limit}")
        results = run_exercise(args.exercise, args.impl, args.runs, args.cases, args.time_limit,
                               out=None if args.json else sys.stdout, public=args.public)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ok = bool(results) and all(r.passed for r in results)
    if args.json:
        print(json.dumps({"exercise": args.exercise, "passed": ok, "n_passed": sum(r.passed for r in results),
                          "n_checks": len(results), "unsolved": any(r.unsolved for r in results),
                          "checks": [{k: v for k, v in asdict(r).items() if k != "unsolved"}
                                     for r in results]}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
