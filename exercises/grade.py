"""
Grade a class from the teacher's copy: every student's answers checked by the teacher's checkers,
references, keys and hidden cases, each exercise in a process of its own, under time limits.

    python -m exercises.grade SUBMISSIONS [--out DIR] [--time-limit S] [--check-time-limit S]
                              [--only NAMES] [--keep]

SUBMISSIONS holds one folder per student: their copy of the student edition, or only their answer
files at the same relative paths (losses.py, sample.py, negatives.py, train.py,
exercises/yours/*.py, and the run directories of the experiments: out/ex_plot,
out/sft_vs_dft/{sft,dft,dpo}). For each student the grader
  1. builds a fresh copy of the project from the teacher's files, as the student edition is built
     (no solutions, no teacher's folder), and puts in it ONLY the student's answers: each function
     an exercise asks for, taken from their file by name (their other code, edited checkers or
     project files are ignored), their exercises/yours/NAME.py, and their run directories;
  2. reads each answer (audit): code that imports the course's modules (exercises, exercises.*),
     loads modules or runs code by name (importlib, exec), reaches into the grader's memory
     (sys._getframe, gc, sys.modules), names the course's files, or starts programs scores 0 for
     that exercise;
  3. runs each exercise in its own process, in the copy, with the teacher's part loaded from the
     teacher's copy under a private name and a guard (exercises/guard.py) that refuses, at run
     time, the same imports and file reads from the answer's code: an attempt scores 0 too;
  4. asks the experiment exercises for evidence (exercises/evidence.py: their models scored again,
     their runs trained again).
It writes DIR/grades.csv (student, exercise, check, points, max_points, message: one row per check;
1 point per automatic check; a written answer gets 0 and "rubric: to grade by hand", its points
from exercises/teacher/rubric.md), DIR/reports/STUDENT.md (points per exercise, the first failure,
the reasons for any 0, and the written answers to grade) and DIR/summary.csv.

    python -m exercises.grade submissions/ --only dpo,why_u --out out/grades
"""
import argparse
import ast
import csv
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
HERE = os.path.dirname(os.path.abspath(__file__))

from exercises.lib import WRITTEN  # noqa: E402

HAND = "rubric: to grade by hand"
# names an answer has no use for: frames, other modules' globals, the collector's objects
REFLECTION = {"_getframe", "f_back", "f_globals", "f_locals", "f_builtins", "tb_frame", "gi_frame",
              "cr_frame", "ag_frame", "__globals__", "__builtins__", "__subclasses__",
              "currentframe", "getouterframes", "getinnerframes", "get_objects", "get_referrers",
              "get_referents", "settrace", "setprofile", "addaudithook", "modules"}
LOADERS = {"importlib", "imp", "runpy", "pkgutil", "zipimport", "subprocess", "pty",
           "multiprocessing", "ctypes"}
PROGRAMS = {"system", "popen", "execv", "execve", "spawnv", "posix_spawn"}  # os.system and kin
DYNAMIC = {"__import__", "exec", "eval", "compile"} | PROGRAMS
COURSE_WORDS = re.compile(r"(^|[\\/.])(exercises|solutions|teacher|hidden)([\\/.]|$)")
# a run directory's parts the grader does not copy: checkpoints to resume from, caches, the lock
RUN_PARTS = ("last", "last.old", "last.tmp", "final.tmp", "final.old", "final.previous", ".lock")


# -----------------------------------------------------------------------------
# reading an answer


def _docstrings(tree):
    return {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)
            and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}


def _attribute_of(node, module):
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
        node.value.id == module


def _imports(node):
    """The module names an import statement names (for `from X import a`: X, or X.a under a
    package whose submodules matter)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.module in ("exercises", "importlib"):
            return [f"{node.module}.{a.name}" for a in node.names]
        return [node.module or ""]
    return []


def audit(code):
    """The reasons an answer scores 0 before it runs: code is [(where, source text)]; [] if
    clean."""
    from exercises.check import ORDER
    files = {f"{n}.py" for n in ORDER} | {f"{n}.py" for n in ("check", "lib", "grade", "guard",
                                                              "student")}
    reasons = []
    for where, text in code:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue  # the checks report it
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            at = f"{where} (line {getattr(node, 'lineno', '?')})"
            if isinstance(node, ast.ImportFrom) and node.level:
                reasons.append(f"{at}: a relative import reaches the course's package")
            for name in _imports(node):
                top = name.split(".")[0]
                if top == "exercises":
                    reasons.append(f"{at}: imports {name}: the course's own modules (checkers, "
                                   "references, solutions) are off limits in an answer")
                elif top in LOADERS:
                    reasons.append(f"{at}: imports {name}: an answer may not load modules by name "
                                   "or path, nor start programs")
            ident = node.id if isinstance(node, ast.Name) else \
                node.attr if isinstance(node, ast.Attribute) else None
            if ident in ("stack", "trace") and _attribute_of(node, "inspect"):
                ident = "_getframe"  # inspect.stack() and inspect.trace() hand out frames too
            if ident in REFLECTION and (ident != "modules" or _attribute_of(node, "sys")):
                reasons.append(f"{at}: uses {ident}: an answer may not reach into the grader's "
                               "memory")
            if ident in DYNAMIC and (isinstance(node, ast.Name) or ident in PROGRAMS):
                reasons.append(f"{at}: uses {ident}: an answer may not run code or programs built "
                               "at run time")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    id(node) not in docs:
                v = node.value.strip()
                if COURSE_WORDS.search(v) or os.path.basename(v) in files:
                    reasons.append(f"{at}: names {v[:60]!r}: an answer may not read the course's "
                                   "files")
    return sorted(set(reasons))


# -----------------------------------------------------------------------------
# one exercise in its own process


def _load_teacher(folder, name):
    """The teacher's part of exercise `name`, loaded from the teacher's copy under a private name
    and taken out of sys.modules again: no answer can import it by any name."""
    import importlib.util

    from exercises import check
    private = "_course_key_" + secrets.token_hex(8)
    spec = importlib.util.spec_from_file_location(private, os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[private] = pkg
    spec.loader.exec_module(pkg)
    check.TEACHER.update(package=private, folder=folder)
    check.TEACHER["loaded"][name] = check.teacher_part(name)
    for k in [k for k in sys.modules if k == private or k.startswith(private + ".")]:
        del sys.modules[k]


def worker(job):
    """In the grading copy (the working folder): run one exercise under the guard; write one JSON
    line per result to the parent's pipe, each carrying the job's nonce (a line without it came
    from the answer). job: name, teacher, impl, runs, cases, limit, student, nonce, log."""
    import importlib

    out = os.fdopen(os.dup(1), "w", buffering=1)
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)  # the answer's prints go to a log, never into the results
    os.dup2(log, 2)
    copy = os.getcwd()
    sys.path.insert(0, copy)
    from exercises import check
    from exercises.guard import Guard

    name = job["name"]
    _load_teacher(job["teacher"], name)
    for mod, _ in getattr(check.exercise(name), "TARGETS", ()):
        importlib.import_module(mod)  # the project's modules load before the guard goes up
    teacher_copy = os.path.dirname(os.path.dirname(job["teacher"]))
    yours = os.path.join(copy, "exercises", "yours")
    numbers = os.path.join(copy, "exercises", "reference_numbers.json")
    guard = Guard(job["student"], forbidden=[os.path.join(copy, "exercises"), teacher_copy],
                  allowed=[copy, yours, numbers]).install()
    def emit(r):  # as each check ends: what ran before a time limit stopped the rest is kept
        out.write(json.dumps({"nonce": job["nonce"], "check": r.name, "passed": r.passed,
                              "message": r.message, "unsolved": r.unsolved}) + "\n")

    try:
        results = check.run_exercise(name, impl=job.get("impl"), runs=job.get("runs"),
                                     cases=job.get("cases"), time_limit_s=job.get("limit"),
                                     extra={"evidence": True}, on_result=emit)
        for r in results:
            if r.name in ("import", "definitions"):  # returned before any check ran
                emit(r)
    except check.UsageError as e:
        emit(check.Result("usage", False, f"the grader could not run it: {e}"))
    out.write(json.dumps({"nonce": job["nonce"], "done": True,
                          "violations": guard.violations}) + "\n")


def run_exercise_process(copy, job, timeout, limit):
    """Run worker(job) in a new process in `copy`; -> (results, violations, note). Killed, with
    every process it started, when it runs past timeout (what is left of the limit, in s)."""
    log = os.path.join(os.path.dirname(copy), f"{job['name']}.log")
    job = {**job, "nonce": secrets.token_hex(16), "log": log}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NANODFT_GUARD")}
    env.update(OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.Popen([sys.executable, "-m", "exercises.grade", "--worker"], cwd=copy, env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, start_new_session=True)
    note = ""
    try:
        stdout, _ = p.communicate(json.dumps(job), timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        stdout, _ = p.communicate()
        note = f"stopped after {limit:.0f} s: the student's time limit"
    rows, violations, done = [], [], False
    for line in stdout.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or row.get("nonce") != job["nonce"]:
            continue  # not the worker's: the answer printed it
        if row.get("done"):
            violations, done = row.get("violations", []), True
        else:
            rows.append(row)
    if not done and not note:
        note = f"the exercise's process ended early (exit status {p.returncode})"
    return rows, violations, note


# -----------------------------------------------------------------------------
# the rows of one exercise


def planned(name, cases):
    """The names of the checks exercise `name` runs under the grader, in order: what a student can
    score, whether or not their answer gets to run them. The lists are built without calling it."""
    import types

    from exercises.check import exercise, load_cases, teacher_part
    ex, tp, dummy = exercise(name), teacher_part(name), types.SimpleNamespace()
    opts = {"impl": None, "runs": getattr(tp, "RUNS_DIR", None), "name": name, "evidence": True}
    names = [n for n, _ in ex.checks(dummy, opts)]
    names += [n for n, _ in tp.checks(dummy, opts)] if tp else []
    extra = load_cases(cases, name) if cases else []
    return names + [f"hidden case {i + 1}" + (f": {c['name']}" if c.get("name") else "")
                    for i, c in enumerate(extra)]


def rubric_points(tp, check_name):
    """The points of a written answer: exercises/teacher/NAME.py's RUBRIC[key] (2 if not set)."""
    key = check_name[len(WRITTEN):].split(":")[0].strip()
    return (getattr(tp, "RUBRIC", {}) or {}).get(key, 2)


def _rows(student, name, tp, plan, results, reasons, note, problems):
    """One row per planned check: its result, or 0 with why it did not run; all 0 with reasons."""
    got = {r["check"]: r for r in results}
    stray = [r["message"] for r in results if r["check"] not in plan and not r["passed"]]
    missing = "not run: " + ("; ".join(problems + stray) or note or "the exercise gave no result")
    rows = []
    for check_name in plan:
        r = got.get(check_name)
        written = check_name.startswith(WRITTEN)
        top = rubric_points(tp, check_name) if written else 1
        row = {"student": student, "exercise": name, "check": check_name, "points": 0,
               "max_points": top}
        if r is None:
            row["message"] = missing
        elif written:
            row.update(message=HAND if r["passed"] else r["message"],
                       answer=r["message"] if r["passed"] else "")
        else:
            row.update(points=int(r["passed"]), message="" if r["passed"] else r["message"])
        rows.append(row)
    if reasons:
        why = "scored 0: " + "; ".join(dict.fromkeys(reasons))
        for row in rows:
            row.update(points=0, message=why)
            row.pop("answer", None)
    elif problems:
        for row in rows:
            if row["points"] == 0 and row["message"] not in (HAND, missing):
                row["message"] = f"{problems[0]} | {row['message']}"
                break
    return rows


def _report_line(name, rows, reasons, note, seconds):
    auto = [r for r in rows if not r["check"].startswith(WRITTEN)]
    first = next((r["message"] for r in auto if r["points"] == 0), "")
    if reasons:
        first = "0: " + "; ".join(dict.fromkeys(reasons))
    elif note and note not in first:
        first = note + (f"; {first}" if first else "")
    first = " ".join(first.split())[:300].replace("|", "/")
    points = sum(r["points"] for r in auto)
    return f"| {name} | {points} | {len(auto)} | {seconds:.0f} | {first or '-'} |"


def _report(student, rows, lines):
    auto = [r for r in rows if not r["check"].startswith(WRITTEN)]
    hand = [r for r in rows if r["check"].startswith(WRITTEN)]
    n_auto, n_answers = sum(r["points"] for r in auto), sum(1 for r in hand if r.get("answer"))
    text = [f"# {student}", "",
            f"Automatic points: {n_auto} of {len(auto)}. To grade by hand with "
            f"exercises/teacher/rubric.md: {n_answers} written answers, "
            f"{sum(r['max_points'] for r in hand)} points.", "",
            "| exercise | points | of | seconds | first failure, or why it scored 0 |",
            "|---|---|---|---|---|",
            *lines]
    if hand:
        text += ["", "## Written answers (rubric: to grade by hand)"]
        for r in hand:
            head = f"**{r['exercise']}, {r['check'][len(WRITTEN):]}** ({r['max_points']} points)"
            text += ["", head, "", "> " + (r.get("answer") or f"(none: {r['message']})")]
    return "\n".join(text) + "\n"


# -----------------------------------------------------------------------------
# one student


def fingerprint(folder):
    """sha256 of every file under folder but exercises/yours (course files answers leave alone)."""
    h = {}
    for d, dirs, names in os.walk(folder):
        dirs[:] = [x for x in dirs if x not in ("yours", "__pycache__")]
        for f in names:
            path = os.path.join(d, f)
            with open(path, "rb") as fh:
                h[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return h


def copy_runs(source, copy, rel):
    """The student's run directories under rel, without checkpoints to resume from."""
    src = os.path.join(source, rel)
    if os.path.isdir(src):
        shutil.copytree(src, os.path.join(copy, rel), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(*RUN_PARTS, "*.npz"))


def _hidden(name):
    path = os.path.join(HERE, "teacher", "hidden", f"{name}.json")
    return path if os.path.exists(path) else None


def _restore(copy):
    from exercises.student import course_files
    for rel in course_files():
        shutil.copy2(os.path.join(ROOT, rel), os.path.join(copy, rel))


def grade_student(student, source, names, args):
    """-> (rows, report text)."""
    from exercises import check
    from exercises.student import write_edition

    work = tempfile.mkdtemp(prefix="nanodft-grade-")
    copy = os.path.join(work, "project")
    t_end = time.time() + args.time_limit
    try:
        _, taken = write_edition(copy, source=os.path.abspath(source))
        for name in names:
            runs = getattr(check.teacher_part(name), "RUNS_DIR", None)
            if runs:
                copy_runs(source, copy, runs)
        before = fingerprint(os.path.join(copy, "exercises"))
        mine = [os.path.join(copy, m.replace(".", "/") + ".py") for n in check.ORDER
                for m, _ in getattr(check.exercise(n), "TARGETS", ())]
        mine += [os.path.join(copy, "exercises", "yours", f"{n}.py") for n in check.ORDER]
        rows, lines = [], []
        for name in names:
            tp, ex = check.teacher_part(name), check.exercise(name)
            got = taken.get(name, {"code": [], "problems": []})
            reasons = audit(got["code"])
            yours = os.path.join(copy, "exercises", "yours", f"{name}.py")
            job = {"name": name, "teacher": os.path.join(HERE, "teacher"), "student": mine,
                   "limit": args.check_time_limit, "runs": getattr(tp, "RUNS_DIR", None),
                   "impl": None if getattr(ex, "TARGETS", ()) else yours, "cases": _hidden(name)}
            t0 = time.time()
            left = t_end - t0
            if left > 1:
                results, violations, note = run_exercise_process(copy, job, left, args.time_limit)
            else:
                results, violations, note = [], [], "the student's time limit was reached"
            reasons += [f"at run time: {v}" for v in dict.fromkeys(violations)]
            if fingerprint(os.path.join(copy, "exercises")) != before:
                reasons.append("the answer changed the course's files while it ran")
                _restore(copy)
            ex_rows = _rows(student, name, tp, planned(name, job["cases"]), results, reasons, note,
                            got["problems"])
            rows += ex_rows
            lines.append(_report_line(name, ex_rows, reasons, note, time.time() - t0))
        return rows, _report(student, rows, lines)
    finally:
        if args.keep:
            print(f"  {student}'s grading copy: {copy}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# -----------------------------------------------------------------------------
# the class


def students(folder, out=None):
    """The student folders of `folder` (not the output folder, should it be inside)."""
    skip = os.path.realpath(out) if out else None
    return sorted(d for d in os.listdir(folder) if not d.startswith((".", "_"))
                  and os.path.isdir(os.path.join(folder, d))
                  and os.path.realpath(os.path.join(folder, d)) != skip)


def summary_of(student, rows, seconds):
    auto = [r for r in rows if not r["check"].startswith(WRITTEN)]
    zeroed = sorted({r["exercise"] for r in rows if r["message"].startswith("scored 0")})
    hand = sum(r["max_points"] for r in rows if r["check"].startswith(WRITTEN))
    return {"student": student, "points": sum(r["points"] for r in auto), "max_points": len(auto),
            "to_grade_by_hand": hand, "zeroed": ",".join(zeroed), "seconds": round(seconds)}


def main(argv=None):
    if argv is None and sys.argv[1:] == ["--worker"]:
        worker(json.loads(sys.stdin.read()))
        return 0
    from common import HelpFormatter
    from exercises.check import ORDER, teacher_part
    p = argparse.ArgumentParser(prog="python -m exercises.grade", formatter_class=HelpFormatter,
                                description="Grade a class from the teacher's copy "
                                "(exercises/teacher/README.md).")
    p.add_argument("submissions", help="a folder with one folder per student")
    p.add_argument("--out", default=os.path.join("out", "grades"), help="where grades.csv, "
                   "summary.csv and reports/ go")
    p.add_argument("--time-limit", type=float, default=1800.0, metavar="S", help="seconds for all "
                   "of one student's exercises")
    p.add_argument("--check-time-limit", type=float, default=None, metavar="S", help="seconds per "
                   "check (default: each exercise's own limit)")
    p.add_argument("--only", default=None, help="comma-separated exercises to grade (default: all)")
    p.add_argument("--keep", action="store_true", help="keep each student's grading copy (its path "
                   "is printed)")
    args = p.parse_args(argv)
    names = list(ORDER) if args.only is None else [n.strip() for n in args.only.split(",")
                                                    if n.strip()]
    bad = [n for n in names if n not in ORDER]
    problem = f"unknown exercises {bad}" if bad else \
        f"{args.submissions}: no such folder" if not os.path.isdir(args.submissions) else \
        "no exercises/teacher/ here: grade from the teacher's copy" if teacher_part("dpo") is None \
        else None
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    os.makedirs(os.path.join(args.out, "reports"), exist_ok=True)
    all_rows, summary = [], []
    for student in students(args.submissions, args.out):
        t0 = time.time()
        rows, report = grade_student(student, os.path.join(args.submissions, student), names, args)
        all_rows += rows
        with open(os.path.join(args.out, "reports", f"{student}.md"), "w") as f:
            f.write(report)
        s = summary_of(student, rows, time.time() - t0)
        summary.append(s)
        zero = f", 0 for {s['zeroed']}" if s["zeroed"] else ""
        print(f"{student}: {s['points']} of {s['max_points']} automatic points{zero} "
              f"({s['seconds']} s)", flush=True)
    with open(os.path.join(args.out, "grades.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, ("student", "exercise", "check", "points", "max_points", "message"),
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(all_rows)
    with open(os.path.join(args.out, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, list(summary[0]) if summary else ["student"])
        w.writeheader()
        w.writerows(summary)
    print(f"wrote {os.path.join(args.out, 'grades.csv')}, summary.csv and reports/ "
          f"({len(summary)} students)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
