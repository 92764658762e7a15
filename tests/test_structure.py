"""The shape of the code a reader meets: imports go one way (common <- data/ <- model, losses <-
sample <- negatives <- eval, rundir <- train <- compare, bench), no project import hides inside a
function, no loss name is compared outside losses.py, no function of the runtime files is longer
than 80 lines or takes more than 6 parameters, no line of them is over 100 columns, train.py shows
the algorithm before its bookkeeping, no tracked file names a machine path, and every --help shows
real defaults."""
import ast
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYER = {"common": 0, "data": 1, "model": 2, "losses": 2, "sample": 3, "negatives": 4, "eval": 5,
         "rundir": 5, "train": 6, "compare": 7, "bench": 7}
RUNTIME = [f for f in sorted(os.listdir(ROOT)) if f.endswith(".py")] + \
    [os.path.join("data", f) for f in sorted(os.listdir(os.path.join(ROOT, "data")))
     if f.endswith(".py")]
SCRIPTS = ["train.py", "eval.py", "sample.py", "negatives.py", "model.py", "bench.py",
           "compare.py"] + \
    [f"-m data.{m}" for m in ("arith", "format", "download", "gsm8k", "hh_rlhf", "metamathqa")]


def module_of(path):
    return "data" if path.startswith("data") else path[:-3]


def project_imports(tree):
    """(line, module, inside a function?) for every import of a project module."""
    out, funcs = [], [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(x) for f in funcs for x in ast.walk(f) if x is not f}
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        for name in names:
            top = name.split(".")[0]
            if top in LAYER:
                out.append((node.lineno, top, id(node) in inner))
    return out


@pytest.mark.parametrize("path", RUNTIME)
def test_imports_go_one_way_and_sit_at_the_top(path):
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    me = module_of(path)
    for line, mod, inside in project_imports(tree):
        assert not inside, f"{path}:{line}: imports {mod} inside a function"
        assert mod == me or LAYER[mod] < LAYER[me], f"{path}:{line}: {me} imports {mod} (a higher layer)"


@pytest.mark.parametrize("path", RUNTIME)
def test_functions_are_short(path):
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80]
    assert not long, f"{path}: functions longer than 80 lines: {long}"


def test_no_loss_name_is_compared_outside_losses_py():
    import losses
    names = "|".join(map(re.escape, losses.LOSSES))
    pattern = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    for path in RUNTIME:
        if path == "losses.py":
            continue
        for i, line in enumerate(open(os.path.join(ROOT, path)), 1):
            assert not pattern.search(line), f"{path}:{i}: compares a loss name: {line.strip()}"


def test_no_tracked_file_names_a_machine_path():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    # the patterns are built in pieces, so this file does not match itself
    bad = re.compile("|".join(["/" + "work/", r"\.\./" + "shared", "/" + "root/", "/" + "home/", "/tmp/" + "pytest"]))
    hits = []
    for f in files:
        if f.endswith((".py", ".md", ".txt", ".json", "run", ".cfg", ".toml")):
            text = open(os.path.join(ROOT, f), encoding="utf-8", errors="replace").read()
            hits += [f"{f}: {m.group(0)}" for m in bad.finditer(text)]
    assert not hits, hits


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_real_defaults(script):
    r = subprocess.run([sys.executable, *script.split(), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "(default: None)" not in r.stdout
    assert "usage:" in r.stdout


@pytest.mark.parametrize("path", RUNTIME)
def test_lines_fit_in_100_columns(path):
    lines = open(os.path.join(ROOT, path)).read().split("\n")
    long = [i for i, line in enumerate(lines, 1) if len(line) > 100]
    assert not long, f"{path}: lines over 100 columns: {long[:10]}"


@pytest.mark.parametrize("path", RUNTIME)
def test_functions_take_at_most_6_parameters(path):
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    many = []
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = n.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
            names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
            names = [x for x in names if x not in ("self", "cls")]
            if len(names) > 6:
                many.append((n.name, len(names)))
    assert not many, f"{path}: functions with more than 6 parameters: {many}"


def test_train_py_shows_the_algorithm_before_the_bookkeeping():
    names = [n.name for n in ast.parse(open(os.path.join(ROOT, "train.py")).read()).body
             if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    story = ["main", "train", "train_step", "exchange_log_u"]
    bookkeeping = ["make_optimizer", "resume", "held_out", "Clock", "finish_on_request"]
    assert [names.index(n) for n in story] == sorted(names.index(n) for n in story)
    assert max(names.index(n) for n in story) < min(names.index(n) for n in bookkeeping)
    text = open(os.path.join(ROOT, "train.py")).read()
    # the run directory and the negatives machinery live in their own files
    for gone in ("def claim", "os.replace", "shutil.", "signal.signal", "_open_partial"):
        assert gone not in text, gone


def test_train_main_reads_like_its_docstring():
    tree = ast.parse(open(os.path.join(ROOT, "train.py")).read())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    assert main.end_lineno - main.lineno + 1 <= 80
