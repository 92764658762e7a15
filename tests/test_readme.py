"""The README cannot rot: every command in its ```bash blocks is either run here (in its shortest
form: the same command with flags that make it small) or needs a network or a GPU and is marked so.
A new command in the README without an entry below fails test_every_readme_command_is_covered."""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()

# commands that fetch weights or datasets (or need a GPU to be worth running): not run by the tests;
# the README's "real weights and real data" section says so, and tests/test_datasets.py and
# tests/test_model.py run the same code against a local HTTP server
NEEDS_NETWORK = ("data.hh_rlhf", "data.gsm8k", "data.metamathqa", "--init gpt2", "$HH", "$G", "HH=", "G=")
NEEDS_GPU = ("python bench.py --suite gpu",)  # tests/test_bench.py runs the same suite on the CPU at a tiny size


def readme_commands():
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                cmds.append(re.sub(r"\s+", " ", line))
    return cmds


def run(cmd, tmp_path, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run(cmd, shell=True, executable="/bin/bash", cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert p.returncode == 0, f"{cmd}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}"
    return p.stdout + p.stderr


PIP = "pip install -r requirements.txt && "
QUICK_DFT = PIP + "torchrun --standalone --nproc_per_node=1 train.py --loss dft"
QUICK_TESTS = "pip install -r requirements.txt pytest && python -m pytest -q tests"
BASE = ("OMP_NUM_THREADS=1 python train.py --loss sft --init scratch --size nano --data data/arith/base.jsonl "
        "--max-examples 64000 --epochs 1 --batch-size 64 --micro-batch-size 64 --lr 2e-3 --weight-decay 0.1 "
        "--adam-betas 0.9 0.95 --no-eval --save-dtype bfloat16 --out-dir out/base")
SAMPLE = "python sample.py --prompt $'Question: Mia has 7 apples. She buys 5 more. How many apples does Mia have now?\\nAnswer:' --num 3"
BENCH = "python bench.py --size nano --seq-len 128 --batch-size 16 --iters 5 --sample-batch-sizes 64 --sample-new-tokens 64"
NEG = " --negatives-dir {tmp}/negs"  # sampled negatives go to the test's directory, not the repository's out/

# README command -> (shortest form to run, text its output must contain); {tmp} is a fresh directory
SHORTEST = {
    QUICK_DFT: ("torchrun --standalone --nproc_per_node=1 train.py --loss dft --max-examples 64 --max-steps 2 "
                "--eval-max-examples 8 --out-dir {tmp}/dft" + NEG, "after dft"),
    "python train.py --help": ("python train.py --help", "--neg-prefix"),
    "python -m data.arith --out data/arith": ("python -m data.arith --out {tmp}/arith --n-base 10", "train.jsonl"),
    BASE: (BASE.replace("--max-examples 64000", "--max-examples 256").replace("out/base", "{tmp}/base"), "done: 4 steps"),
    "python model.py": ("python model.py --max-new-tokens 8", "7.3M parameters"),
    SAMPLE: ("python sample.py --prompt $'Question: Mia has 7 apples.\\nAnswer:' --num 2 --max-new-tokens 8", "Mia"),
    "python eval.py --data data/arith/val.jsonl": ("python eval.py --data data/arith/val.jsonl --max-examples 4", "exact_match"),
    "python compare.py --plan": ("python compare.py --plan --methods sft dft --ablations --pairs "
                                 "--lrs 1e-4 --seeds 1 --out {tmp}/cmp",
                                 "plan: 4 scorings (4 to do)"),
    "python compare.py": None,  # the hours-long protocol: tests/test_compare.py runs it on a tiny configuration
    "python compare.py --timing": None,  # tests/test_compare.py runs it on the same tiny configuration
    "python compare.py --report --results docs/results.json": (
        "python compare.py --report --results docs/results.json --plot {tmp}/curves.png --readme {tmp}/README.md", "| method |"),
    BENCH: ("python bench.py --size tiny --seq-len 64 --batch-size 4 --iters 1 --warmup 1 --losses sft --sample-batch-sizes 4 "
            "--sample-new-tokens 4", "train sft"),
    "python bench.py --suite gpu --device cpu --tiny": None,  # tests/test_bench.py runs it
    "python -m exercises.check --list": ("python -m exercises.check --list", "dpo"),
}


def test_every_readme_command_is_covered():
    cmds = readme_commands()
    assert QUICK_DFT in cmds and QUICK_TESTS in cmds
    missing = [c for c in cmds if c not in SHORTEST and c != QUICK_TESTS and c not in NEEDS_GPU
               and not any(m in c for m in NEEDS_NETWORK)]
    assert not missing, f"README commands with no test (add them to SHORTEST in {__file__}): {missing}"
    stale = [c for c in SHORTEST if c not in cmds]
    assert not stale, f"SHORTEST names commands the README no longer has: {stale}"


def test_ci_runs_the_readme_test_command():
    assert QUICK_TESTS in open(os.path.join(ROOT, ".ci", "run")).read().splitlines()


@pytest.mark.parametrize("cmd", [c for c, v in SHORTEST.items() if v is not None])
def test_readme_command_runs(cmd, tmp_path):
    shortest, expect = SHORTEST[cmd]
    out = run(shortest.format(tmp=tmp_path), tmp_path)
    assert expect in out, out[-3000:]


def test_the_readme_points_at_code_by_name():
    """The README names the losses' functions (`losses.dft_loss`), never line numbers, and every
    name it gives exists."""
    import losses
    import negatives
    import train
    names = re.findall(r"`(losses|negatives|train)\.(?!(?:py|jsonl|json)`)(\w+)`", README)
    assert len({n for _, n in names}) >= 8
    modules = {"losses": losses, "negatives": negatives, "train": train}
    for module, name in names:
        assert hasattr(modules[module], name), f"{module}.{name}"
    assert not re.search(r"lines \d+-\d+", README)


def test_readme_results_block_is_the_report_of_docs_results_json():
    """The tables between the results markers are exactly what compare.py --report makes of docs/results.json."""
    import json
    import compare
    start, end = README.index(compare.MARK[0]) + len(compare.MARK[0]), README.index(compare.MARK[1])
    results = json.load(open(os.path.join(ROOT, "docs", "results.json")))
    assert README[start:end].strip() == compare.tables(results).strip()


def test_each_loss_defaults_to_its_validated_lr():
    """train.py's default --lr of a loss is the lr validation chose for it in docs/results.json
    (a method not validated yet keeps the registry's fallback), and every choice is bracketed."""
    import json
    import compare
    import losses
    results = json.load(open(os.path.join(ROOT, "docs", "results.json")))
    for method, lr in results["chosen_lr"].items():
        assert compare.brackets(results["grid"][method], lr), method
        if method in losses.LOSSES:
            assert losses.LOSSES[method].lr == pytest.approx(lr, rel=1e-6), method


NO_HEADROOM = ("<!-- no-headroom: start -->", "<!-- no-headroom: end -->")


def test_readme_no_headroom_table_is_docs_results_no_headroom_json():
    """The short table of the run on a clean base is what its results file says."""
    import json
    import compare
    start = README.index(NO_HEADROOM[0]) + len(NO_HEADROOM[0])
    results = json.load(open(os.path.join(ROOT, "docs", "results_no_headroom.json")))
    table = README[start:README.index(NO_HEADROOM[1])].strip()
    assert table == compare.exact_match_table(results).strip()
    assert "| dft | 1e-05 | 54.9 ± 1.3 |" in table

CORE = ("common.py", "model.py", "losses.py", "sample.py", "negatives.py", "eval.py", "train.py",
        "rundir.py", "data/format.py", "data/tokenizer.py")


def test_readme_line_counts_are_the_real_ones():
    """'About N lines ... M with ...': both within 5% of what wc -l counts today."""
    import glob
    m = re.search(r"About ([\d,]+) lines\s+of\s+plain\s+PyTorch\s+for\s+the\s+core.*?([\d,]+)\s+with\s+the\s+experiment\s+driver", README, re.S)
    assert m, "the README's line-count sentence is missing"
    core = sum(len(open(os.path.join(ROOT, f)).readlines()) for f in CORE)
    files = glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "data", "*.py"))
    total = sum(len(open(f).readlines()) for f in files)
    for claimed, real in ((m.group(1), core), (m.group(2), total)):
        assert abs(int(claimed.replace(",", "")) - real) <= 0.05 * real, (claimed, real)
