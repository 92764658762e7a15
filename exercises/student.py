"""
The student edition: a copy of the repository in which the exercises are left to do.

    python -m exercises.student OUT                        # every exercise
    python -m exercises.student OUT --only dpo,top_p,kv_cache

What OUT receives:
  - of exercises/, the course's public files only, named one by one (course_files): the checkers,
    the public cases, the templates, this page's README; never the teacher's part
    (exercises/teacher/: references, keys, hidden cases, rubric), the worked solutions
    (exercises/solutions/) or anything else found there, tracked by git or not;
  - elsewhere, the files git tracks (never out/, .git or caches), plus an untracked python module
    only when the project imports it (it is named in the summary: commit it);
  - no test that reads the solutions (tests/test_exercises.py, tests/test_grading.py), nor the
    project's tests of the losses (tests/test_losses.py: float64 references of the exercises').
Then, for every exercise chosen:
  - an exercise on a function of the project (dpo: losses.dpo_loss) gets that function replaced by a
    stub that keeps its signature and docstring and raises NotImplementedError, so the project itself
    is what the student completes, and `python -m exercises.check dpo` checks it in place;
  - an exercise answered in a file of its own (simpo, kv_cache, the question exercises) gets its
    starting file, exercises/yours/NAME.py, which `python -m exercises.check NAME` checks.
Until it is solved, each exercise's check reports "not solved yet" and exits with status 1.

The grader (exercises/grade.py) builds its copy for each student the same way, with the student's
functions, taken one by one from their files, in place of the stubs (write_edition's `source`).
"""
import argparse
import ast
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
SKIP = {".git", "__pycache__", ".pytest_cache", ".cache", ".benchmarks"}  # never copied (nor out/)
# tests that read the solutions, and the project's loss tests: float64 references of the losses the
# exercises ask for
LEAVE_OUT = ("tests/test_exercises.py", "tests/test_grading.py", "tests/test_losses.py")
MODULES = ("__init__.py", "README.md", "check.py", "lib.py", "student.py", "grade.py", "guard.py",
           "smoke.py", "evidence.py", "reference_numbers.json")  # the course's public files, besides
# each exercise's exercises/NAME.py, templates/NAME.py and cases/NAME.json


def _git(args, root):
    p = subprocess.run(["git", *args, "-z"], cwd=root, capture_output=True, check=True)
    return [f for f in p.stdout.decode().split("\0") if f]


def course_files(root=ROOT):
    """exercises/ as a student's copy holds it: the public files, by name."""
    from exercises.check import ORDER
    names = list(MODULES) + [f for n in ORDER for f in (f"{n}.py", f"templates/{n}.py", f"cases/{n}.json")]
    return [f"exercises/{f}" for f in names if os.path.isfile(os.path.join(root, "exercises", f))]


def imported_modules(root, files):
    """The top-level module names the python files among `files` import."""
    names = set()
    for rel in files:
        if rel.endswith(".py"):
            try:
                tree = ast.parse(open(os.path.join(root, rel), encoding="utf-8").read())
            except (SyntaxError, UnicodeDecodeError, OSError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names |= {a.name for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def repo_files(root=ROOT):
    """(relative paths to copy, untracked modules among them). Without git (a copy of a copy): every
    file outside SKIP and out/."""
    try:
        tracked = _git(["ls-files", "--cached"], root)
        others = _git(["ls-files", "--others", "--exclude-standard"], root)
    except (OSError, subprocess.CalledProcessError):
        tracked, others = [], []
        for d, dirs, names in os.walk(root):
            dirs[:] = [x for x in dirs if x not in SKIP]
            tracked += [os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/") for f in names]

    def keep(f):
        return not SKIP & set(f.split("/")[:-1]) and not f.startswith(("out/", "exercises/") + LEAVE_OUT) \
            and not f.endswith((".pyc", ".partial", ".tmp")) and os.path.isfile(os.path.join(root, f))
    files = [f for f in tracked if keep(f)]
    # an untracked module the project cannot run without (a new file not committed yet)
    wanted = imported_modules(root, files)
    extra = [f for f in others if keep(f) and f.endswith(".py") and f.count("/") <= 1 and
             f[:-3].replace("/", ".") in wanted and (f.count("/") == 0 or f.startswith("data/"))]
    return sorted(set(files + extra + course_files(root))), sorted(extra)


def _functions(tree, names, path):
    found = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name in names}
    missing = set(names) - set(found)
    if missing:
        raise ValueError(f"{path}: no top-level function {', '.join(sorted(missing))} to turn into an exercise")
    return found


def _has_docstring(fn):
    return bool(fn.body) and isinstance(fn.body[0], ast.Expr) and \
        isinstance(getattr(fn.body[0], "value", None), ast.Constant) and isinstance(fn.body[0].value.value, str)


def stub_line(fn, exercise):
    indent = " " * fn.body[0].col_offset
    return (f'{indent}raise NotImplementedError("exercise {exercise}: write {fn.name}, then check it with '
            f'python -m exercises.check {exercise}")\n')


def stub_source(src, names, exercise, path="<source>"):
    """src with each function of `names` cut down to its signature and docstring + raise NotImplementedError."""
    lines = src.splitlines(keepends=True)
    fns = _functions(ast.parse(src), names, path)
    for fn in sorted(fns.values(), key=lambda f: -f.lineno):  # from the bottom up: line numbers stay valid
        start = fn.body[0].end_lineno if _has_docstring(fn) else fn.body[0].lineno - 1
        lines[start:fn.end_lineno] = [stub_line(fn, exercise)]
    return "".join(lines)


def function_source(src, fn):
    """The source of top-level function node fn, decorators included."""
    first = fn.decorator_list[0].lineno if fn.decorator_list else fn.lineno
    return "".join(src.splitlines(keepends=True)[first - 1:fn.end_lineno])


def take_function(src, name, theirs, their_src):
    """src with its top-level function `name` replaced by the student's node `theirs` (from their_src)."""
    lines = src.splitlines(keepends=True)
    mine = _functions(ast.parse(src), [name], "<project>")[name]
    first = mine.decorator_list[0].lineno if mine.decorator_list else mine.lineno
    lines[first - 1:mine.end_lineno] = [function_source(their_src, theirs).rstrip("\n") + "\n"]
    return "".join(lines)


def take_imports(src, their_tree, their_src):
    """src with the student's top-level imports that it lacks added after its own imports."""
    tree, lines = ast.parse(src), src.splitlines(keepends=True)
    have = {ast.get_source_segment(src, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))}
    new = []
    for n in their_tree.body:
        if isinstance(n, ast.Import) or (isinstance(n, ast.ImportFrom) and n.module != "__future__"):
            text = ast.get_source_segment(their_src, n)
            if text not in have and text not in new:
                new.append(text)
    if not new:
        return src, []
    last = max((n.end_lineno for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))), default=0)
    lines[last:last] = ["# the student's imports\n"] + [s + "\n" for s in new]
    return "".join(lines), new


def template(ex):
    """A starting file for --impl, for an exercise on project functions: the module's imports, its other
    names, and each function as signature + docstring + raise NotImplementedError."""
    name = ex.__name__.rsplit(".", 1)[-1]
    out = [f'"""Your {", ".join(fn for _, fn in ex.TARGETS)} (exercise {name}): check it with\n'
           f'python -m exercises.check {name} --impl THIS_FILE"""\n']
    for module in dict.fromkeys(mod for mod, _ in ex.TARGETS):
        path = os.path.join(ROOT, *module.split(".")) + ".py"
        with open(path) as f:
            src = f.read()
        tree, mine = ast.parse(src), [fn for mod, fn in ex.TARGETS if mod == module]
        out += [ast.get_source_segment(src, n) + "\n" for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        others = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name not in mine]
        others += [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
        out.append(f"from {module} import (  # the rest of {module}.py, as your function sees it there\n    "
                   + ",\n    ".join(", ".join(others[k:k + 6]) for k in range(0, len(others), 6)) + ")\n")
        lines = src.splitlines(keepends=True)
        for fn in _functions(tree, mine, path).values():
            first = fn.decorator_list[0].lineno if fn.decorator_list else fn.lineno
            end = fn.body[0].end_lineno if _has_docstring(fn) else fn.body[0].lineno - 1
            out.append("\n\n" + "".join(lines[first - 1:end]) + stub_line(fn, name))
    return "".join(out)


def _read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def answer_module(source, rel, record):
    """The student's file `rel` in their folder, parsed: (tree, text), or (None, None) when it is not
    there or does not parse (recorded as a problem of each exercise that lives there)."""
    path = os.path.join(source, rel)
    if not os.path.isfile(path):
        return None, None
    text = _read(path)
    try:
        return ast.parse(text), text
    except SyntaxError as e:
        record.setdefault("problems", []).append(f"{rel} does not parse (line {e.lineno}: {e.msg}): its "
                                                 "functions count as not written")
        return None, None


def _bound(import_text):
    """The names an import statement binds (import a.b as c: c; import a.b: a; from x import y: y)."""
    node = ast.parse(import_text).body[0]
    return {a.asname or a.name.split(".")[0] for a in node.names}


def _names(fn_text):
    return {n.id for n in ast.walk(ast.parse(fn_text)) if isinstance(n, ast.Name)}


def fill_module(rel, stubs, source, taken):
    """The text of project module `rel` for an edition: each exercise function stubbed, or, with a
    student's folder `source`, the student's own function when their copy of the file defines it
    (and their top-level imports, each counted as part of the answers whose functions use it)."""
    src = _read(os.path.join(ROOT, rel))
    record = {}
    tree, text = answer_module(source, rel, record) if source else (None, None)
    theirs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))} if tree else {}
    used = {}
    for fn, name in stubs:
        entry = taken.setdefault(name, {"code": [], "problems": []})
        entry["problems"] = list(dict.fromkeys(entry["problems"] + record.get("problems", [])))
        if fn in theirs:
            src = take_function(src, fn, theirs[fn], text)
            entry["code"].append((f"{rel}: {fn}", function_source(text, theirs[fn])))
            used.setdefault(name, set()).update(_names(function_source(text, theirs[fn])))
        else:
            src = stub_source(src, [fn], name, rel)
    if used:
        src, imports = take_imports(src, tree, text)
        for name, names in used.items():
            taken[name]["code"] += [(f"{rel}: import", s) for s in imports if _bound(s) & names]
    return src


def write_edition(out, only=None, source=None):
    """Write the student edition into `out` (which must not exist or be empty). source: a student's
    folder, for the grader: their functions and files in place of the stubs and templates. Returns
    (summary line, {exercise: {"code": [(where, text)], "problems": [...]}})."""
    from exercises.check import ORDER, exercise
    names = list(ORDER) if only is None else only
    out = os.path.abspath(out)
    inside = os.path.commonpath([out, ROOT]) == ROOT
    if inside and not out.startswith(os.path.join(ROOT, "out") + os.sep):
        raise ValueError(f"{out} is inside the repository: write the student edition elsewhere (or under out/)")
    if os.path.exists(out) and os.listdir(out):
        raise ValueError(f"{out} exists and is not empty: choose a new folder")
    stubs, yours, taken = {}, [], {}
    for name in names:
        ex = exercise(name)
        for module, fn in getattr(ex, "TARGETS", ()):
            stubs.setdefault(module.replace(".", "/") + ".py", []).append((fn, name))
        if not getattr(ex, "TARGETS", ()):
            yours.append(name)
    files, untracked = repo_files()
    for rel in files:
        dst = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if rel in stubs:
            with open(dst, "w") as f:
                f.write(fill_module(rel, stubs[rel], source, taken))
        else:
            shutil.copy2(os.path.join(ROOT, rel), dst)
    os.makedirs(os.path.join(out, "exercises", "yours"), exist_ok=True)
    for name in yours:
        mine = os.path.join(source, "exercises", "yours", f"{name}.py") if source else None
        src = mine if mine and os.path.isfile(mine) else os.path.join(ROOT, "exercises", "templates", f"{name}.py")
        shutil.copyfile(src, os.path.join(out, "exercises", "yours", f"{name}.py"))
        taken[name] = {"code": [(f"exercises/yours/{name}.py", _read(src))] if src == mine else [], "problems": []}
    with open(os.path.join(out, "exercises", "yours", "README.md"), "w") as f:
        f.write("# Your files\n\nThe exercises answered in a file of their own start here, one file each: fill it "
                "in, then\n`python -m exercises.check NAME` checks it (exercises/README.md has the questions and "
                "hints).\n")
    funcs = [f"{rel[:-3].replace('/', '.')}.{fn}" for rel, fns in stubs.items() for fn, _ in fns]
    note = f"\n  not tracked by git, copied because the project imports them: {', '.join(untracked)}" \
        if untracked else ""
    return (f"wrote the student edition of {len(names)} exercises to {out}\n  to write in place: "
            f"{', '.join(funcs) or '-'}\n  starting files in exercises/yours/: {', '.join(yours) or '-'}{note}\n"
            f"  check one: cd {out} && python -m exercises.check NAME"), taken


def main(argv=None):
    from common import HelpFormatter
    p = argparse.ArgumentParser(prog="python -m exercises.student", description="Write the student edition of "
                                "the repository: the exercises' functions stubbed, no solutions, no teacher's part "
                                "(exercises/README.md).", formatter_class=HelpFormatter)
    p.add_argument("out", help="a new folder (outside the repository, or under its out/)")
    p.add_argument("--only", default=None, help="comma-separated exercises to leave to do (default: all of them)")
    args = p.parse_args(argv)
    try:
        from exercises.check import ORDER
        only = None if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in only or [] if n not in ORDER]
        if unknown:
            raise ValueError(f"--only: unknown exercises {unknown}; choose among {', '.join(ORDER)}")
        print(write_edition(args.out, only)[0])
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
