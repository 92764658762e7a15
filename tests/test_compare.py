"""compare.py, the protocol, on a tiny configuration: lr chosen on validation, seeds scored on test, the
pairs file built from base samples the checker marks wrong, results.json complete, a second run trains
nothing, an interrupted run resumes, and --report rebuilds the tables and the README block; and
train.py --neg-filter keeps wrong negatives only (or says the data has no checker)."""
import json
import math
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
    return ["--init", str(d / "base"), "--train-data", str(a / "train.jsonl"),
            "--base-data", str(a / "base.jsonl"), "--val-data", str(a / "val.jsonl"),
            "--test-data", str(a / "test.jsonl"), "--out", str(d / "out"),
            "--negatives-dir", str(d / "negs"), "--plot", str(d / "curves.png"),
            "--readme", str(d / "README.md"),
            "--methods", "base", "sft", "dft", "sft>dpo", "--ablations", "dft-noneg",
            "--lrs", "1e-3", "3e-3", "--max-extend", "0", "--seeds", "2", "--pairs", "sft:dft",
            "--paired-seeds", "2", "--train-args",
            "--batch-size 8 --micro-batch-size 8 --epochs 1 --neg-max-new-tokens 6 "
            "--eval-max-new-tokens 4", *extra]


def test_protocol_is_complete_and_resumable(tiny, monkeypatch, capsys):
    d = tiny
    (d / "README.md").write_text(f"# x\n{compare.MARK[0]}\nold\n{compare.MARK[1]}\nrest\n")
    res = compare.main(cmp_args(d))
    runs, chosen = res["runs"], res["chosen_lr"]
    assert set(chosen) == {"sft", "dft", "sft>dpo"}
    for m in ("sft", "dft", "sft>dpo"):  # the grid on val (--max-extend 0: it does not grow), then
        # seeds 0 and 1 at the chosen lr on test
        assert res["grid"][m] == [1e-3, 3e-3]
        assert all("val" in runs[compare.run_id(m, lr, 0)] for lr in (1e-3, 3e-3))
        assert all("test" in runs[compare.run_id(m, chosen[m], s)] for s in (0, 1))
        assert chosen[m] == compare.choose_lr(res, m, [1e-3, 3e-3])
    assert all("test" in runs[compare.run_id("dft-noneg", chosen["dft"], s)] for s in (0, 1))
    assert "val" in runs["base"] and "test" in runs["base"]
    # sft>dpo started from the SFT model of its seed, on pairs whose rejected answers the checker
    # marks wrong
    flags = compare.get_args(cmp_args(d))
    cfg = json.load(open(os.path.join(compare.run_dir(flags, "sft>dpo", chosen["sft>dpo"], 1),
                                      "config.json")))
    assert cfg["init"] == os.path.join(compare.run_dir(flags, "sft", chosen["sft"], 1), "final")
    pairs = load_jsonl(str(d / "out" / "pairs.jsonl")).records
    assert pairs and all(not arith.is_correct(p["rejected"], p["chosen"]) for p in pairs)
    assert json.load(open(d / "out" / "results.json")) == json.loads(json.dumps(res))
    # the README block and the plot are rebuilt from results.json
    readme = (d / "README.md").read_text()
    assert "old" not in readme and "| sft | " in readme and readme.endswith("rest\n")
    assert "| dft − sft | " in readme  # the paired comparison, seed by seed
    # a second run trains nothing
    calls = []
    monkeypatch.setattr(train, "main", lambda a: calls.append(a))
    assert compare.main(cmp_args(d))["runs"] == runs and not calls
    monkeypatch.undo()
    # an interrupted run (its final/ not written, its score not saved) resumes from its checkpoint
    rid = compare.run_id("dft", chosen["dft"], 1)
    shutil.rmtree(d / "out" / rid / "final")
    saved = json.load(open(d / "out" / "results.json"))
    del saved["runs"][rid]["test"]
    json.dump(saved, open(d / "out" / "results.json", "w"))
    real, seen = train.main, []
    monkeypatch.setattr(train, "main", lambda a: (seen.append(a), real(a))[1])
    again = compare.main(cmp_args(d))
    assert len(seen) == 1 and "--resume" in seen[0] and "test" in again["runs"][rid]
    assert "plan: 16 scorings (1 to do)" in capsys.readouterr().out
    # results.json carried alone to a new machine: a missing SFT->DPO run trains its SFT start again
    sft_dir = compare.run_dir(flags, "sft", chosen["sft"], 1)
    shutil.rmtree(sft_dir)
    shutil.rmtree(compare.run_dir(flags, "sft>dpo", chosen["sft>dpo"], 1))
    saved = json.load(open(d / "out" / "results.json"))
    del saved["runs"][compare.run_id("sft>dpo", chosen["sft>dpo"], 1)]["test"]
    json.dump(saved, open(d / "out" / "results.json", "w"))
    seen.clear()
    again = compare.main(cmp_args(d))
    assert [a[a.index("--loss") + 1] for a in seen] == ["sft", "dpo"]
    assert seen[1][seen[1].index("--init") + 1] == os.path.join(sft_dir, "final")
    rid = compare.run_id("sft>dpo", chosen["sft>dpo"], 1)
    assert again["runs"][rid]["test"] == runs[rid]["test"]  # the same seed, the same model
    # the results belong to one setup: other --train-args are refused before any work
    monkeypatch.setattr(train, "main", lambda a: calls.append(a))
    other = cmp_args(d)
    other[-1] += " --warmup 0.2"
    with pytest.raises(ValueError, match=r"results of another setup \(differs in: train_args\)"):
        compare.main(other)
    assert not calls



def test_timing_measures_each_method_alone(tiny):
    """--timing: one short run per method, fresh (its own negatives and reference log-probs), and
    the time column made of them, SFT→DPO paying for its SFT run and DFT's samples."""
    res = compare.main(cmp_args(tiny, "--timing", "--timing-steps", "1"))
    t = res["timing"]
    assert set(t) == {"sft", "dft", "sft>dpo"}
    assert t["dft"]["negatives_s"] > 0 and t["sft>dpo"]["reference_s"] > 0
    assert json.load(open(tiny / "out" / "results.json"))["timing"] == json.loads(json.dumps(t))
    steps = 2  # 16 problems, batch 8, 1 epoch
    sft = t["sft"]["negatives_s"] + t["sft"]["reference_s"] + t["sft"]["step_s"] * steps
    assert compare.full_run_s(res, "sft") == pytest.approx(sft)
    assert compare.full_run_s(res, "sft>dpo") == pytest.approx(
        t["dft"]["negatives_s"] + t["sft>dpo"]["reference_s"] + t["sft>dpo"]["step_s"] * steps + sft)
    assert "| sft | " in compare.main_table(res) and "1.0x" in compare.main_table(res)

def test_plan_runs_nothing(tiny, capsys):
    res = compare.main(cmp_args(tiny, "--plan", "--out", str(tiny / "plan")))
    assert res["runs"] == {} and res["chosen_lr"] == {}
    assert not (tiny / "plan" / "results.json").exists()
    out = capsys.readouterr().out
    assert "plan: 16 scorings (16 to do)" in out and "grid  sft " in out


def test_paired_methods_and_ablations_get_paired_seeds_and_a_seed_by_seed_difference():
    args = compare.get_args(["--methods", "sft", "dft", "dpo", "--ablations", "dft-B8", "--seeds",
                             "2", "--paired-seeds", "3", "--pairs", "sft:dft"])
    empty = {"runs": {}, "chosen_lr": {}, "grid": {}}
    tests = [(m, s) for stage, m, _, s in compare.plan(args, empty) if stage == "test"]
    assert {m: sum(t[0] == m for t in tests) for m in ("sft", "dft", "dpo", "dft-B8")} == {
        "sft": 3, "dft": 3, "dpo": 2, "dft-B8": 3}
    # an ablation is compared with DFT seed by seed, at DFT's chosen lr (other lrs ignored)
    runs = {f"{m}/{lr}/{s}": {"method": m, "lr": lr, "seed": s, "test": {"exact_match": em}}
            for m, lr, s, em in [("dft", 1e-5, 0, 0.50), ("dft", 1e-5, 1, 0.52),
                                 ("dft-B8", 1e-5, 0, 0.53), ("dft-B8", 1e-5, 1, 0.53),
                                 ("dft-B8", 1e-4, 2, 0.99), ("dft-B8", 1e-5, 3, 0.99)]}
    results = {"runs": runs, "chosen_lr": {"dft": 1e-5}, "grid": {}}
    assert compare.paired_differences(results, "dft", "dft-B8") == pytest.approx([0.03, 0.01])
    row = [r for r in compare.ablation_table(results).splitlines() if r.startswith("| dft-B8 |")]
    assert row[0].split(" | ")[2] == "+2.0 ± 1.4 (2 of 2)"


def test_bad_protocol_flags(tiny, capsys):
    for extra, says in ((["--seeds", "0"], "--seeds must be >= 1"),
                        (["--methods", "sft>dpo", "--ablations"], "add sft to --methods"),
                        (["--methods", "sft", "--ablations", "dft-B8"], "add dft to --methods"),
                        (["--pairs", "sft:dft2"], "--pairs sft:dft2: expected A:B with both among"),
                        (["--train-args", "--lr 1"], "--train-args --lr: compare.py sets it"),
                        (["--train-args", "--bogus 1"], "unrecognized arguments: --bogus")):
        with pytest.raises(SystemExit):
            run_main(lambda: compare.main(cmp_args(tiny, *extra)))
        assert says in capsys.readouterr().err


def fake_scores(best):
    """compare.record standing in for training: a run's validation exact match peaks at
    lr = best."""
    def record(ctx, stage, method, lr, seed):
        score = -abs(math.log10(lr) - math.log10(best))
        row = {"method": method, "lr": lr, "seed": seed, "val": {"exact_match": score, "nll": 1.0}}
        ctx.results["runs"][compare.run_id(method, lr, seed)] = row
    return record


@pytest.mark.parametrize("max_extend", [3, 1, 0])
def test_grid_grows_past_a_winning_end(monkeypatch, max_extend):
    """A chosen lr at an end of the grid is no choice: the grid grows by half-decade steps past that
    end until the best lr is inside, at most --max-extend times; then the best lr that was run is
    chosen."""
    monkeypatch.setattr(compare, "record", fake_scores(best=10 ** -2.5))
    args = compare.get_args(["--lrs", "1e-4", str(10 ** -3.5), "--max-extend", str(max_extend),
                             "--methods", "sft", "--ablations", "--pairs"])
    ctx = compare.Context(args, {"runs": {}, "chosen_lr": {}, "grid": {}}, None)
    chosen = compare.grid_search(ctx, "sft")
    grid = ctx.results["grid"]["sft"]
    assert all(compare.run_id("sft", lr, 0) in ctx.results["runs"] for lr in grid)  # every lr ran
    assert len(grid) == 2 + max_extend and chosen == compare.choose_lr(ctx.results, "sft", grid)
    if max_extend == 3:  # 1e-3.5 -> 1e-3 -> 1e-2.5 -> 1e-2: the best is inside
        assert chosen == pytest.approx(10 ** -2.5) and compare.brackets(grid, chosen)
    else:  # out of extensions: the best that ran, still at the end
        assert chosen == max(grid) and not compare.brackets(grid, chosen)
    assert compare.grow_grid([1.0, 2.0], 1.0) == [1 / compare.HALF_DECADE, 1.0, 2.0]
    assert compare.grow_grid([1.0, 2.0, 3.0], 2.0) == [1.0, 2.0, 3.0]


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
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_main(lambda: train.main(a))
    err = capsys.readouterr().err
    assert err.startswith(f"error: --neg-filter wrong (on {plain}) needs checkable answers")
    assert err.count("\n") == 1  # nothing was sampled
