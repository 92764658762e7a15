"""
The grader (python -m exercises.grade): a class of students, each a folder like the ones they
hand in, graded from the teacher's copy with the right points and reasons: a correct one, a wrong
one (with an edited checker in their folder, which the grader ignores), one whose answers use the
course's code (caught by reading the answer, and at run time for a form the reading misses), one
with faked run
directories (caught by the evidence: a model scored again, a run trained again) and one whose answer
hangs (stopped by the time limits). Then the two safeguards on their own: the audit of an answer's
code, and the guard that refuses the course's modules and files at run time.

    python -m pytest -q tests/test_grading.py
"""
import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from exercises import grade

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EX = os.path.join(ROOT, "exercises")
SOL = os.path.join(EX, "solutions")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ENV.pop("PYTHONPATH", None)
FIELDS = ["student", "exercise", "check", "points", "max_points", "message"]
DPO_LINE = "    r_w, r_l = _pairs(beta * (chosen_logps - ref_chosen_logps.detach()),"
# the reference log-probs forgotten
DPO_WITHOUT_REF = (DPO_LINE + "\n" + " " * 22
                   + "beta * (rejected_logps - ref_rejected_logps.detach()))",
                   "    r_w, r_l = _pairs(beta * chosen_logps, beta * rejected_logps)")


def read(*parts):
    with open(os.path.join(*parts)) as f:
        return f.read()


def losses_with(old, new):
    src = read(ROOT, "losses.py")
    assert old in src
    return src.replace(old, new)


def grade_class(tmp_path, students, *flags):
    """Run the grader on {student: {relative path: text, or "DIR/": a folder to copy}};
    -> (rows by (student, exercise), reports by student)."""
    subs = tmp_path / "submissions"
    for name, files in students.items():
        for rel, text in files.items():
            if rel.endswith("/"):
                shutil.copytree(text, subs / name / rel)
            else:
                (subs / name / rel).parent.mkdir(parents=True, exist_ok=True)
                (subs / name / rel).write_text(text)
    out = tmp_path / "grades"
    p = subprocess.run([sys.executable, "-m", "exercises.grade", str(subs), "--out", str(out),
                        *flags], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    with open(out / "grades.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == FIELDS
        rows = list(reader)
    by = {}
    for r in rows:
        by.setdefault((r["student"], r["exercise"]), []).append(r)
    reports = {n: (out / "reports" / f"{n}.md").read_text() for n in students}
    return by, reports


def points(rows):
    """(points, automatic maximum) of an exercise's rows."""
    auto = [r for r in rows if not r["check"].startswith("written: ")]
    return sum(int(r["points"]) for r in rows), sum(int(r["max_points"]) for r in auto)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    why_u = read(SOL, "why_u.py")
    wrong_w = why_u.replace('"w_sum_u": torch.exp(pair - true_log_u).sum().item()',
                            '"w_sum_u": 2.5')
    students = {
        "good": {"losses.py": read(ROOT, "losses.py"), "exercises/yours/why_u.py": why_u},
        "wrong": {
            "losses.py": losses_with(*DPO_WITHOUT_REF),
            "exercises/yours/why_u.py": wrong_w,
            # an edited checker and teacher's part in the student's folder: the grader uses its own
            "exercises/dpo.py": "TITLE = 'x'\nTIME = 1\nTARGETS = (('losses', 'dpo_loss'),)\n"
                                "NEEDS = ()\ndef checks(m, opts):\n    return []\n",
            "exercises/teacher/dpo.py": "def checks(m, opts):\n    return []\n"},
        "cheat": {
            "losses.py": losses_with(DPO_LINE, "    from exercises.dpo import compare  # noqa\n"
                                     + DPO_LINE),
            # no course name in the code: only the guard can catch this one, at run time
            "exercises/yours/why_u.py": "import builtins\n"
                                        "find = getattr(builtins, '__imp' + 'ort__')\n"
                                        "lib = find('exer' + 'cises.lib')\nANSWERS = {}\n"},
    }
    return grade_class(tmp_path_factory.mktemp("class"), students, "--only", "dpo,why_u")


def test_a_correct_student_gets_every_automatic_point(graded):
    by, reports = graded
    for ex in ("dpo", "why_u"):
        got, top = points(by["good", ex])
        assert got == top > 0, by["good", ex]
    written = [r for r in by["good", "why_u"] if r["check"].startswith("written: ")]
    assert len(written) == 1 and written[0]["points"] == "0" and written[0]["max_points"] == "3"
    assert written[0]["message"] == "rubric: to grade by hand"
    assert "Jensen" in reports["good"] and "why_u" in reports["good"]
    assert any(r["check"].startswith("hidden case") for r in by["good", "dpo"])  # the teacher's
    assert any(r["check"].startswith("key:") for r in by["good", "why_u"])


def test_a_wrong_student_loses_the_right_points_with_the_mistake_named(graded):
    by, reports = graded
    dpo = by["wrong", "dpo"]
    got, top = points(dpo)
    assert 0 < got < top and top == points(by["good", "dpo"])[1]  # the edited checker was not used
    first = next(r for r in dpo if r["points"] == "0")
    assert "not subtracted" in first["message"]
    why = {r["check"]: r for r in by["wrong", "why_u"]}
    assert why["key: w_sum_u"]["points"] == "0" and "2.5" in why["key: w_sum_u"]["message"]
    assert why["key: true_log_u"]["points"] == "1"
    assert "not subtracted" in reports["wrong"]


def test_an_answer_that_uses_the_course_code_scores_zero_with_the_reason(graded):
    by, reports = graded
    for ex in ("dpo", "why_u"):
        rows = by["cheat", ex]
        assert rows and all(r["points"] == "0" for r in rows)
        assert all(r["message"].startswith("scored 0: ") for r in rows)
        assert len(rows) == len(by["good", ex])  # every check it could have scored, at 0
    assert "imports exercises.dpo" in by["cheat", "dpo"][0]["message"]
    assert "at run time: import exercises.lib" in by["cheat", "why_u"][0]["message"]
    assert "imports exercises.dpo" in reports["cheat"] and "at run time" in reports["cheat"]


def test_faked_run_directories_fail_the_evidence(tmp_path):
    """sft_vs_dft: run directories with the instructor's mean numbers typed in, two without their
    final/ model and one whose final/ is the untrained base model; dft_curves: metrics.jsonl typed
    in. Their own checks pass (the numbers look right); the evidence does not."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from test_exercises import fake_curves_run, fake_runs
    runs = tmp_path / "made"
    fake_runs(runs / "sft_vs_dft")
    shutil.copytree(os.path.join(ROOT, "data", "base"), runs / "sft_vs_dft" / "dft" / "final")
    fake_curves_run(runs / "ex_plot")
    files = {"out/": str(runs), "exercises/yours/dft_curves.py": read(SOL, "dft_curves.py"),
             "exercises/yours/sft_vs_dft.py": read(SOL, "sft_vs_dft.py")}
    for rel in ("losses.py", "sample.py", "negatives.py", "train.py"):  # what a DFT run needs
        files[rel] = read(ROOT, rel)
    by, reports = grade_class(tmp_path, {"faked": files}, "--only", "dft_curves,sft_vs_dft")
    svd = {r["check"]: r for r in by["faked", "sft_vs_dft"]}
    claims = "scores the held-out numbers its eval.json claims"
    evidence = {k: r for k, r in svd.items() if k.startswith("evidence:")}
    assert len(evidence) == 3 and all(r["points"] == "0" for r in evidence.values())
    assert "has no final/ model" in svd[f"evidence: sft/final {claims}"]["message"]
    assert "do not come from this model" in svd[f"evidence: dft/final {claims}"]["message"]
    assert all(r["points"] == "1" for k, r in svd.items() if not k.startswith(("evidence:", "written:")))
    assert svd["written: why_dft: an explanation of DFT's gold log-prob, and the run that tests it"][
        "message"] == "rubric: to grade by hand"
    curves = {r["check"]: r for r in by["faked", "dft_curves"]}
    again = curves["evidence: the run trains again to the same curves"]
    assert again["points"] == "0" and "not what these flags train" in again["message"]
    assert curves["the numbers you read are the run's"]["points"] == "1"
    assert "has no final/ model" in reports["faked"]


def test_a_hanging_answer_is_stopped_by_the_time_limits(tmp_path):
    hang = losses_with(DPO_LINE, "    while True:\n        pass\n" + DPO_LINE)
    by, _ = grade_class(tmp_path, {"slow": {"losses.py": hang}}, "--only", "dpo",
                        "--time-limit", "6", "--check-time-limit", "1")
    rows = by["slow", "dpo"]
    assert all(r["points"] == "0" for r in rows)
    messages = " ".join(r["message"] for r in rows)
    assert "time limit of 1 s" in messages and "stopped after 6 s" in messages


# ------------------------------------------------------------ the two safeguards on their own

CLEAN = {"a project function": "def dpo_loss(a, b):\n    import torch.nn.functional as F\n"
                               "    return F.logsigmoid(a - b)\n",
         "a run's files": "import json, os\ndef answers(run_dir):\n"
                          "    return json.load(open(os.path.join(run_dir, 'eval.json')))\n",
         "a docstring naming the course": 'def f():\n    """See exercises/README.md."""\n'
                                          "    return 1\n"}
CHEATS = {"from exercises.dpo import compare": "imports exercises.dpo",
          "import exercises.lib": "imports exercises.lib",
          "from exercises import lib": "imports exercises.lib",
          "from . import lib": "relative import",
          "import importlib\nm = importlib.import_module('x')": "imports importlib",
          "m = __import__('os')": "uses __import__",
          "exec('x = 1')": "uses exec",
          "import sys\nf = sys._getframe(1).f_globals": "uses _getframe",
          "import inspect\ns = inspect.stack()": "uses _getframe",
          "import gc\nobjs = gc.get_objects()": "uses get_objects",
          "import sys\nm = sys.modules": "uses modules",
          "text = open('exercises/solutions/dft_tau1.py').read()": "names 'exercises/solutions",
          "path = os.path.join(HERE, 'dpo.py')": "names 'dpo.py'",
          "import subprocess": "imports subprocess",
          "import os\nos.system('ls')": "uses system"}


def test_the_audit_reads_each_way_of_reaching_the_course():
    for code, reason in CHEATS.items():
        found = grade.audit([("answer.py", code)])
        assert found and any(reason in r for r in found), (code, found)
    for what, code in CLEAN.items():
        assert grade.audit([("answer.py", code)]) == [], what


def test_the_worked_solutions_pass_the_audit():
    from exercises import check
    for name in check.ORDER:
        path = os.path.join(SOL, f"{name}.py")
        if os.path.exists(path):
            assert grade.audit([(name, read(path))]) == [], name
    assert grade.audit([("losses.py", read(ROOT, "losses.py"))]) == []


ANSWER = """
import importlib
def imports():
    import exercises.lib
def imports_module():
    importlib.import_module("exercises.check")
def reads(path):
    return open(path).read()
def starts():
    import subprocess
    subprocess.run(["true"])
def through_the_project():
    import json
    return json.dumps([1])
"""
DRIVER = """
import importlib.util, json, os, sys
sys.path.insert(0, {root!r})
import exercises.lib
from exercises.guard import Guard
g = Guard([{answer!r}], forbidden=[{ex!r}], allowed=[os.path.join({ex!r}, "yours")]).install()
spec = importlib.util.spec_from_file_location("answer", {answer!r})
a = importlib.util.module_from_spec(spec)
spec.loader.exec_module(a)
out = {{}}
for name, call in (("imports", a.imports), ("imports_module", a.imports_module),
                   ("reads", lambda: a.reads({checker!r})), ("starts", a.starts),
                   ("project", a.through_the_project)):
    try:
        call()
        out[name] = "allowed"
    except Exception as e:
        out[name] = type(e).__name__ + ": " + str(e)
import exercises.dpo  # the grader's own code still imports the course
out["violations"] = g.violations
print(json.dumps(out))
"""


def test_the_guard_refuses_the_course_at_run_time(tmp_path):
    """In a process of its own (a guard stays for the process's life): an answer's file may not
    import exercises.*, open a checker, or start a program; the checkers and libraries may, even on
    its behalf."""
    answer, driver = tmp_path / "answer.py", tmp_path / "driver.py"
    answer.write_text(ANSWER)
    # the driver is a file: code built at run time (python -c, exec) counts as an answer's
    driver.write_text(DRIVER.format(root=ROOT, answer=str(answer), ex=EX,
                                    checker=os.path.join(EX, "dpo.py")))
    p = subprocess.run([sys.executable, str(driver)], cwd=tmp_path, env=ENV, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.splitlines()[-1])
    assert out["imports"].startswith("ImportError") and "not available to answers" in out["imports"]
    assert out["imports_module"].startswith("ImportError")
    assert out["reads"].startswith("PermissionError")
    assert out["starts"].startswith("PermissionError")
    assert out["project"] == "allowed"
    assert len(out["violations"]) == 4
