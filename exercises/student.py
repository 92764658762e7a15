"""
The student edition: a copy of the repository in which the exercises are left to do.

    python -m exercises.student OUT                        # every exercise
    python -m exercises.student OUT --only dpo,top_p,kv_cache

OUT receives the repository's files (those git tracks, and new ones it does not ignore; never out/,
.git or caches), except the answers: exercises/solutions/ and the tests that read them are left out.
Then, for every exercise chosen:
  - an exercise on a function of the project (dpo: losses.dpo_loss) gets that function replaced by a
    stub that keeps its signature and docstring and raises NotImplementedError, so the project itself
    is what the student completes, and `python -m exercises.check dpo` checks it in place;
  - an exercise answered in a file of its own (simpo, kv_cache, the question exercises) gets its
    starting file, exercises/yours/NAME.py, which `python -m exercises.check NAME` checks.
Until it is solved, each exercise's check reports "not solved yet" and exits with status 1. The
project's own tests of a stubbed function fail too until it is written. The checkers and tests keep
their float64 references (python loops written from the equations), not the project's code.
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
LEAVE_OUT = ("exercises/solutions/", "tests/test_exercises.py")  # the answers, and the tests that read them


def repo_files(root=ROOT):
    """Tracked files and new ones git does not ignore (without git: every file outside SKIP), relative paths."""
    try:
        p = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, check=True)
        files = [f for f in p.stdout.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (a student edition, say)
        files = []
        for d, dirs, names in os.walk(root):
            dirs[:] = [x for x in dirs if x not in SKIP]
            files += [os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/") for f in names]
    return sorted(f for f in files if not SKIP & set(f.split("/")[:-1]) and not f.startswith(("out/",) + LEAVE_OUT)
                  and not f.endswith((".pyc", ".partial", ".tmp")) and os.path.isfile(os.path.join(root, f)))


def _functions(tree, names, path):
    found = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name in names}
    missing = set(names) - set(found)
    if missing:
        raise ValueError(f"{path}: no top-level function {', '.join(sorted(missing))} to turn into an exercise")
    return found


def _has_docstring(fn):
    return bool(fn.body) and isinstance(fn.body[0], ast.Expr) and isinstance(getattr(fn.body[0], "value", None), ast.Constant) \
        and isinstance(fn.body[0].value.value, str)


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


def write_edition(out, only=None):
    """Write the student edition into `out` (which must not exist or be empty). Returns a summary line."""
    from exercises.check import ORDER, exercise
    names = list(ORDER) if only is None else only
    out = os.path.abspath(out)
    inside = os.path.commonpath([out, ROOT]) == ROOT
    if inside and not out.startswith(os.path.join(ROOT, "out") + os.sep):
        raise ValueError(f"{out} is inside the repository: write the student edition elsewhere (or under out/)")
    if os.path.exists(out) and os.listdir(out):
        raise ValueError(f"{out} exists and is not empty: choose a new folder")
    stubs, yours = {}, []
    for name in names:
        ex = exercise(name)
        for module, fn in getattr(ex, "TARGETS", ()):
            stubs.setdefault(module.replace(".", "/") + ".py", []).append((fn, name))
        if not getattr(ex, "TARGETS", ()):
            yours.append(name)
    for rel in repo_files():
        dst = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if rel in stubs:
            with open(os.path.join(ROOT, rel)) as f:
                src = f.read()
            for fn, name in stubs[rel]:
                src = stub_source(src, [fn], name, rel)
            with open(dst, "w") as f:
                f.write(src)
        else:
            shutil.copy2(os.path.join(ROOT, rel), dst)
    os.makedirs(os.path.join(out, "exercises", "yours"), exist_ok=True)
    for name in yours:
        shutil.copy2(os.path.join(ROOT, "exercises", "templates", f"{name}.py"), os.path.join(out, "exercises", "yours", f"{name}.py"))
    with open(os.path.join(out, "exercises", "yours", "README.md"), "w") as f:
        f.write("# Your files\n\nThe exercises answered in a file of their own start here, one file each: fill it in, "
                "then\n`python -m exercises.check NAME` checks it (exercises/README.md has the questions and hints).\n")
    funcs = [f"{rel[:-3].replace('/', '.')}.{fn}" for rel, fns in stubs.items() for fn, _ in fns]
    return (f"wrote the student edition of {len(names)} exercises to {out}\n  to write in place: {', '.join(funcs) or '-'}"
            f"\n  starting files in exercises/yours/: {', '.join(yours) or '-'}\n  check one: cd {out} && python -m "
            "exercises.check NAME")


def main(argv=None):
    from common import HelpFormatter
    p = argparse.ArgumentParser(prog="python -m exercises.student", description="Write the student edition of the "
                                "repository: the exercises' functions stubbed, no solutions (exercises/README.md).",
                                formatter_class=HelpFormatter)
    p.add_argument("out", help="a new folder (outside the repository, or under its out/)")
    p.add_argument("--only", default=None, help="comma-separated exercises to leave to do (default: all of them)")
    args = p.parse_args(argv)
    try:
        from exercises.check import ORDER
        only = None if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in only or [] if n not in ORDER]
        if unknown:
            raise ValueError(f"--only: unknown exercises {unknown}; choose among {', '.join(ORDER)}")
        print(write_edition(args.out, only))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
