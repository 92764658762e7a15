"""compare.py, the protocol, on a tiny configuration: lr chosen on validation, seeds scored on test, the
pairs file built from base samples the checker marks wrong, results.json complete, a second run trains
nothing, an interrupted run resumes, and --report rebuilds the tables and the README block; and
train.py --neg-filter keeps wrong negatives only (or says the data has no checker)."""
import json
import os
import shutil

import pytest
import torch

import compare
import train
from common import run_main
from data import arith
from data.format import load_jsonl
from model import GPT, config_for
from test_train import argv, setup  # noqa: F401


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    torch.manual_seed(0)
    GPT(config_for("tiny")).save_pretrained(d / "base")
    arith.write_splits(str(d / "arith"), sizes={"base": 40, "train": 16, "val": 6, "test": 6})
    return d


def cmp_args(d, *extra):
    a = d / "arith"
    return ["--init", str(d / "base"), "--train-data", str(a / "train.jsonl"), "--base-data", str(a / "base.jsonl"),
            "--val-data", str(a / "val.jsonl"), "--test-data", str(a / "test.jsonl"), "--out", str(d / "out"),
            "--negatives-dir", str(d / "negs"), "--plot", str(d / "curves.png"), "--readme", str(d / "README.md"),
            "--methods", "base", "sft", "dft", "sft>dpo", "--ablations", "dft-noneg", "--lrs", "1e-3", "3e-3",
            "--pref-lrs", "1e-3", "--seeds", "2", "--train-args",
            "--batch-size 8 --micro-batch-size 8 --epochs 1 --neg-max-new-tokens 6 --eval-max-new-tokens 4", *extra]


def test_protocol_is_complete_and_resumable(tiny, monkeypatch, capsys):
    d = tiny
    (d / "README.md").write_text(f"# x\n{compare.MARK[0]}\nold\n{compare.MARK[1]}\nrest\n")
    res = compare.main(cmp_args(d))
    runs = res["runs"]
    assert set(res["chosen_lr"]) == {"sft", "dft", "sft>dpo"} and res["chosen_lr"]["sft>dpo"] == 1e-3
    for m in ("sft", "dft"):  # the grid on val, then seeds 0 and 1 at the chosen lr on test
        assert {"val"} <= set(runs[f"{m}/lr0.001-s0"]) and {"val"} <= set(runs[f"{m}/lr0.003-s0"])
        lr = res["chosen_lr"][m]
        assert all("test" in runs[f"{m}/lr{lr:g}-s{s}"] for s in (0, 1))
        assert res["chosen_lr"][m] == compare.choose_lr(res, m, [1e-3, 3e-3])
    assert all("test" in runs[f"dft-noneg/lr{res['chosen_lr']['dft']:g}-s{s}"] for s in (0, 1))
    assert "val" in runs["base"] and "test" in runs["base"]
    # sft>dpo started from the SFT model of its seed, on pairs whose rejected answers the checker marks wrong
    cfg = json.load(open(d / "out" / "sft>dpo" / "lr0.001-s1" / "config.json"))
    assert cfg["init"].endswith(os.path.join("sft", f"lr{res['chosen_lr']['sft']:g}-s1", "final"))
    pairs = load_jsonl(str(d / "out" / "pairs.jsonl")).records
    assert pairs and all(not arith.is_correct(p["rejected"], p["chosen"]) for p in pairs)
    assert json.load(open(d / "out" / "results.json")) == json.loads(json.dumps(res))
    # the README block and the plot are rebuilt from results.json
    readme = (d / "README.md").read_text()
    assert "old" not in readme and "| sft | " in readme and readme.endswith("rest\n")
    # a second run trains nothing
    calls = []
    monkeypatch.setattr(train, "main", lambda a: calls.append(a))
    assert compare.main(cmp_args(d))["runs"] == runs and not calls
    monkeypatch.undo()
    # an interrupted run (its final/ not written, its score not saved) resumes from its checkpoint
    rid = f"dft/lr{res['chosen_lr']['dft']:g}-s1"
    shutil.rmtree(d / "out" / rid / "final")
    saved = json.load(open(d / "out" / "results.json"))
    del saved["runs"][rid]["test"]
    json.dump(saved, open(d / "out" / "results.json", "w"))
    real, seen = train.main, []
    monkeypatch.setattr(train, "main", lambda a: (seen.append(a), real(a))[1])
    again = compare.main(cmp_args(d))
    assert len(seen) == 1 and "--resume" in seen[0] and "test" in again["runs"][rid]
    assert "plan: 10 training runs" in capsys.readouterr().out


def test_plan_runs_nothing(tiny, capsys):
    res = compare.main(cmp_args(tiny, "--plan", "--out", str(tiny / "plan")))
    assert res == {"runs": {}, "chosen_lr": {}} and not (tiny / "plan" / "results.json").exists()
    assert "grid  sft" in capsys.readouterr().out


def test_bad_protocol_flags(tiny, capsys):
    for extra, says in ((["--seeds", "0"], "--seeds must be >= 1"), (["--methods", "sft>dpo", "--ablations"], "add sft to --methods"),
                        (["--methods", "sft", "--ablations", "dft-B8"], "add dft to --methods")):
        with pytest.raises(SystemExit):
            run_main(lambda: compare.main(cmp_args(tiny, *extra)))
        assert says in capsys.readouterr().err


def test_neg_filter_wrong(setup, tmp_path, capsys, monkeypatch):  # noqa: F811
    """--neg-filter wrong samples a 4x pool and keeps what the checker marks wrong; on data without a checker
    it is a one-line error before anything is sampled."""
    d = setup
    a = argv(d, "dft", tmp_path / "run", "--neg-filter", "wrong", "--negatives-dir", str(tmp_path / "negs"), "--max-steps", "1")
    i = a.index("--negatives")
    a = a[:i] + a[i + 2:]
    train.main(a)
    cfg = json.load(open(tmp_path / "run" / "config.json"))
    assert cfg["identity"]["negatives"]["pool"] == 4 and cfg["negatives_stats"]["neg/correct"] == 0.0
    (path,) = os.listdir(tmp_path / "negs")
    assert json.loads(open(tmp_path / "negs" / path).readline())["meta"]["n_per_prompt"] == 16
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({"prompt": f"Say {i}", "response": " hello"}) + "\n" for i in range(16)))
    a[a.index("--data") + 1] = str(plain)
    a[a.index("--out-dir") + 1] = str(tmp_path / "run2")
    with pytest.raises(SystemExit):
        run_main(lambda: train.main(a))
    assert "--neg-filter wrong needs checkable answers" in capsys.readouterr().err
