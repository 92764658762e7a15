"""Nothing lost under misuse: each defect of the misuse audit (negatives of another model or other
settings, two runs in one directory, a model directory as --out-dir, SIGTERM in the last step, a
prompt cut to fit its new tokens, non-finite flags, compare.py's results of another setup or flags
it sets itself) has a test here, and every file the project reads back gives one line naming it
when it is truncated, emptied or filled with junk, with nothing else lost."""
import json
import os
import shutil
import signal
import threading
import time

import pytest
import torch

import compare
import eval as ev
import negatives
import sample
import train
from common import file_lock, run_main
from model import GPT, config_for
from negatives import origin_of, sample_negatives
from test_train import NEG_SETTINGS, argv, setup  # noqa: F401


def fails(main, args, capsys):
    """(exit status, the one stderr line) of an entry point that must fail."""
    capsys.readouterr()  # what came before
    with pytest.raises(SystemExit) as e:
        run_main(lambda: main(args))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return e.value.code, err


# -----------------------------------------------------------------------------
# the ten defects


def test_negatives_of_another_model_or_other_settings_are_refused(setup, tmp_path, capsys):
    d = setup
    torch.manual_seed(1)
    GPT(config_for("tiny")).save_pretrained(tmp_path / "other")
    other = GPT.from_pretrained(str(tmp_path / "other"))
    recs = [json.loads(line) for line in open(d / "train.jsonl")]
    origin = origin_of(str(d / "train.jsonl"), len(recs), other, str(tmp_path / "other"))
    sample_negatives(other, recs, str(tmp_path / "other.jsonl"), NEG_SETTINGS, origin)
    a = argv(d, "dft", tmp_path / "run", "--max-steps", "1")
    a[a.index("--negatives") + 1] = str(tmp_path / "other.jsonl")
    code, err = fails(train.main, a, capsys)
    assert code == 2 and "sampled with other settings (init_sha256:" in err
    # on purpose: allowed, and config.json records the header of the file that was used
    train.main(a + ["--negatives-allow", "init_sha256"])
    cfg = json.load(open(tmp_path / "run" / "config.json"))
    assert cfg["negatives_header"]["init_sha256"] == origin.init_sha256
    b = argv(d, "dft", tmp_path / "run2", "--max-steps", "1")
    b[b.index("--neg-max-new-tokens") + 1] = "10"
    assert "max_new_tokens: 12 -> 10" in fails(train.main, b, capsys)[1]


def test_a_directory_in_use_is_refused_naming_its_holder_and_a_stale_lock_is_taken(
        setup, tmp_path, capsys):
    d, run = setup, tmp_path / "run"
    run.mkdir()
    with file_lock(str(run / ".lock")):  # a live holder: this process
        code, err = fails(train.main, argv(d, "sft", run, "--max-steps", "1"), capsys)
    assert code == 2 and f"is in use by another run (process {os.getpid()})" in err
    assert not (run / "metrics.jsonl").exists()
    # a lock file left by a dead process (its flock went with it) is taken over
    (run / ".lock").write_text("999999")
    train.main(argv(d, "sft", run, "--max-steps", "1"))
    assert (run / "metrics.jsonl").exists() and not (run / ".lock").exists()


def test_a_second_sampler_waits_for_the_first_and_reads_its_file(setup, tmp_path, monkeypatch):
    d = setup
    path = str(tmp_path / "negs.jsonl")
    model = GPT.from_pretrained(str(d / "base"))
    recs = [json.loads(line) for line in open(d / "train.jsonl")]
    origin = origin_of(str(d / "train.jsonl"), len(recs), model, str(d / "base"))
    held = threading.Event()

    def first_sampler():  # holds the cache's lock while it writes the file
        with file_lock(path + ".lock"):
            held.set()
            time.sleep(0.5)
            shutil.copy(d / "negs.jsonl", path)

    t = threading.Thread(target=first_sampler)
    t.start()
    held.wait()
    monkeypatch.setattr(negatives, "sample_negatives", lambda *a: pytest.fail("sampled twice"))
    got = negatives.get_negatives(model, recs, NEG_SETTINGS, origin, path)
    t.join()
    assert len(got) == len(recs)


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_model_directory_is_never_an_out_dir(setup, tmp_path, capsys, overwrite):
    d = setup
    model_dir = tmp_path / "model"
    shutil.copytree(d / "base", model_dir)
    before = (model_dir / "config.json").read_text()
    a = argv(d, "sft", model_dir, "--max-steps", "1") + (["--overwrite"] if overwrite else [])
    code, err = fails(train.main, a, capsys)
    assert code == 2 and "holds a model (model.safetensors)" in err
    assert (model_dir / "config.json").read_text() == before
    GPT.from_pretrained(str(model_dir))  # still loads


def test_files_no_run_wrote_need_overwrite_and_are_left_alone(setup, tmp_path, capsys):
    d, run = setup, tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert "holds files no run wrote (notes.txt)" in fails(train.main, argv(d, "sft", run), capsys)[1]
    train.main(argv(d, "sft", run, "--max-steps", "1", "--overwrite"))
    assert (run / "notes.txt").read_text() == "mine"
    (run / "ckpt").write_text("")  # an --out-dir that is a regular file
    assert "is a file, expected a run directory" in \
        fails(train.main, argv(d, "sft", run / "ckpt"), capsys)[1]


def test_sigterm_during_the_last_step_saves_what_it_says(setup, tmp_path, monkeypatch, capsys):
    d, run = setup, tmp_path / "run"
    real, calls = train.train_step, []

    def step_and_signal(*a):
        calls.append(1)
        if len(calls) == 4:  # the last of 2 epochs x 2 steps
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a)

    monkeypatch.setattr(train, "train_step", step_and_signal)
    with pytest.raises(SystemExit) as e:
        train.main(argv(d, "sft", run))
    assert e.value.code == 143
    out = capsys.readouterr().out
    assert f"SIGTERM: the last step was done; saved {run}/last and final/" in out
    assert torch.load(run / "last" / "state.pt")["step"] == 4 and (run / "final").exists()


def test_ctrl_c_saves_like_sigterm(setup, tmp_path, monkeypatch, capsys):
    d, run = setup, tmp_path / "run"
    real, calls = train.train_step, []

    def step_and_interrupt(*a):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a)

    monkeypatch.setattr(train, "train_step", step_and_interrupt)
    with pytest.raises(SystemExit) as e:
        train.main(argv(d, "sft", run))
    assert e.value.code == 130
    assert f"SIGINT: saved {run}/last at step 2" in capsys.readouterr().out
    assert torch.load(run / "last" / "state.pt")["step"] == 2 and not (run / "final").exists()


def test_a_prompt_is_never_cut_to_fit_its_new_tokens(setup, tmp_path, capsys):
    d = setup
    model = GPT.from_pretrained(str(d / "base"))  # block_size 128
    prompt = list(range(100, 140))  # 40 tokens
    out = sample.generate(model, [prompt], 1000)
    assert len(out[0][0]) <= 128 - 40  # the new tokens were capped; the prompt was kept whole
    a = argv(d, "dft", tmp_path / "run", "--max-steps", "1")
    a[a.index("--neg-max-new-tokens") + 1] = "100"
    code, err = fails(train.main, a, capsys)
    assert "--neg-max-new-tokens 100 leaves less than --max-prompt-len 64" in err
    assert "use at most 64" in err


@pytest.mark.parametrize("flag,value", [("--neg-temperature", "nan"), ("--lr", "inf"),
                                        ("--lr", "nan"), ("--warmup", "nan"),
                                        ("--grad-clip", "-inf"), ("--tau", "inf")])
def test_every_float_flag_is_finite(setup, tmp_path, capsys, flag, value):
    a = argv(setup, "dft", tmp_path / "run") + [flag, value]
    code, err = fails(train.main, a, capsys)
    assert code == 2 and flag in err and not (tmp_path / "run").exists()


def test_sample_py_refuses_a_nan_temperature_and_says_when_it_caps(capsys):
    code, err = fails(sample.main, ["--temperature", "nan"], capsys)
    assert "--temperature must be a finite number, got nan" in err
    sample.main(["--init", "scratch", "--size", "tiny", "--prompt", "hello", "--num", "1",
                 "--max-new-tokens", "1000000"])
    assert "only 127 fit after the prompt's 1 tokens" in capsys.readouterr().out


def test_compare_refuses_results_of_another_setup(tmp_path, capsys):
    from test_compare import cmp_args
    d = tmp_path
    torch.manual_seed(0)
    GPT(config_for("tiny")).save_pretrained(d / "base")
    torch.manual_seed(1)
    GPT(config_for("tiny")).save_pretrained(d / "other")
    from data import arith
    arith.write_splits(str(d / "arith"), sizes={"base": 40, "train": 16, "val": 6, "test": 6})
    args = cmp_args(d, "--plan")
    compare.main(args)  # --plan writes nothing but checks the setup of an existing results.json
    os.makedirs(d / "out", exist_ok=True)
    json.dump({"runs": {}, "chosen_lr": {}, "setup": compare.setup_of(compare.get_args(args))},
              open(d / "out" / "results.json", "w"))
    other = list(args)
    other[other.index("--init") + 1] = str(d / "other")
    code, err = fails(compare.main, other, capsys)
    assert "holds results of another setup (differs in: init_sha256)" in err


def test_compare_refuses_the_flags_it_sets_itself(tmp_path, capsys):
    for flags in ("--lr 1e-2", "--seed 3", "--max-steps 5", "--out-dir x"):
        code, err = fails(compare.main, ["--plan", "--train-args", flags], capsys)
        assert f"--train-args {flags.split()[0]}: compare.py sets it" in err


def test_eval_checks_every_path_before_scoring(tmp_path, capsys):
    code, err = fails(ev.main, ["--init", "data/base", str(tmp_path / "nothing")], capsys)
    assert f"--init {tmp_path}/nothing: no such checkpoint" in err
    code, err = fails(ev.main, ["--json", str(tmp_path)], capsys)
    assert "cannot write there" in err


def test_w_max_is_a_true_maximum_over_the_step(setup, tmp_path):
    d = setup
    train.main(argv(d, "dft", tmp_path / "run", "--max-steps", "1"))
    row = json.loads(open(tmp_path / "run" / "metrics.jsonl").readline())
    assert row["w/max"] >= row["w/mean"]


def test_exact_match_is_na_where_nothing_can_be_graded_and_nan_shows_as_nan():
    torch.manual_seed(0)
    model = GPT(config_for("tiny")).eval()
    recs = [{"prompt": "Hi", "response": " there"}, {"prompt": "Yo", "response": " you"}]
    m = ev.evaluate(model, recs, settings=ev.EvalSettings(64, 32, exact_match=True, progress=False))
    assert m["exact_match"] is None and "n/a" in ev.format_table({"x": m})
    with torch.no_grad():
        model.wte.weight.fill_(float("nan"))
    m = ev.evaluate(model, recs, settings=ev.EvalSettings(64, 32, progress=False))
    assert "inf" not in ev.format_table({"x": m}) and "nan" in ev.format_table({"x": m})


# -----------------------------------------------------------------------------
# every file read back: truncated, emptied or junk -> one line naming it, or a correct result


@pytest.fixture(scope="module")
def stopped_run(setup, tmp_path_factory):
    """A DFT run stopped at step 2 of 4, with held-out scores: every kind of file a resume reads."""
    d = setup
    run = tmp_path_factory.mktemp("stopped") / "run"
    train.main(argv(d, "dft", run, "--max-steps", "2", "--save-every", "1", evaluate=True))
    return run


def damage(path, how):
    data = open(path, "rb").read()
    damaged = {"truncated": data[: len(data) // 2], "emptied": b"",
               "junk": bytes(range(256)) * 8 + b"\n{not json\n" * 3}[how]
    open(path, "wb").write(damaged)


# (file in the stopped run, how it is read back, what may stay correct instead of failing)
FILES = [
    ("last/state.pt", "resume", ()),
    ("last/model.safetensors", "resume", ()),
    ("last/config.json", "resume", ()),
    ("ref_logps-*.npz", "resume", ()),
    ("eval.json", "resume", ()),
    # a cut or empty log is what a kill leaves: the resumed run logs from its checkpoint on
    ("metrics.jsonl", "resume", ("truncated", "emptied")),
    ("negatives", "resume", ()),
]


@pytest.mark.parametrize("name,reader,tolerated", FILES)
@pytest.mark.parametrize("how", ["truncated", "emptied", "junk"])
def test_damaged_files_give_one_line_naming_them(setup, stopped_run, tmp_path, capsys, name,
                                                 reader, tolerated, how):
    d, run = setup, tmp_path / "run"
    shutil.copytree(stopped_run, run)
    shutil.copy(d / "negs.jsonl", tmp_path / "negs.jsonl")
    if name == "negatives":
        target = tmp_path / "negs.jsonl"
    else:
        target = next(run.glob(name))
    damage(target, how)
    a = argv(d, "dft", run, "--resume", "--save-every", "1", evaluate=True)
    a[a.index("--negatives") + 1] = str(tmp_path / "negs.jsonl")
    if how in tolerated:
        train.main(a)
        assert (run / "final").exists()
        return
    code, err = fails(train.main, a, capsys)
    assert code == 2 and str(target) in err, err
    assert "Traceback" not in err
    # nothing else lost: the run's checkpoint is where it was
    assert (run / "last").exists() or name.startswith("last/")


@pytest.mark.parametrize("how", ["truncated", "emptied", "junk"])
def test_damaged_results_json(tmp_path, capsys, how):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"runs": {}, "chosen_lr": {}}))
    damage(path, how)
    code, err = fails(compare.main, ["--report", "--results", str(path), "--readme",
                                     str(tmp_path / "none.md")], capsys)
    assert str(path) in err


def test_a_full_disk_keeps_the_last_checkpoint_and_leaves_no_temp_dir(setup, tmp_path,
                                                                     monkeypatch, capsys):
    d, run = setup, tmp_path / "run"
    train.main(argv(d, "sft", run, "--max-steps", "1"))
    real = GPT.save_pretrained

    def full_disk(self, out_dir, dtype=None):
        real(self, out_dir, dtype)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(GPT, "save_pretrained", full_disk)
    code, err = fails(train.main, argv(d, "sft", run, "--resume", "--max-steps", "2"), capsys)
    assert "could not save the checkpoint" in err and "last/ is unchanged" in err
    assert not (run / "last.tmp").exists()
    assert torch.load(run / "last" / "state.pt")["step"] == 1
