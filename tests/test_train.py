"""train.py: 2-process DDP equals 1 process, resume equals an uninterrupted run, every loss runs end
to end, and bad input fails with a clear one-line error."""
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import losses
import train
from data.arith import generate
from common import run_main
from model import GPT, config_for
from negatives import NegativeSettings, origin_of, sample_negatives

# the negatives file of setup(): train.py resolves the same settings from argv's flags
NEG_SETTINGS = NegativeSettings(B=2, epochs=2, max_new_tokens=12, seed=0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random base model, 16 SFT examples + 4 held-out, their negatives (2 x 2 per prompt)."""
    d = tmp_path_factory.mktemp("train")
    torch.manual_seed(0)
    GPT(config_for("tiny")).save_pretrained(d / "base")
    recs = generate(20, seed=3)
    for name, part in (("train.jsonl", recs[:16]), ("heldout.jsonl", recs[16:])):
        with open(d / name, "w") as f:
            for r in part:
                f.write(json.dumps({"prompt": r["prompt"], "response": r["response"]}) + "\n")
    with open(d / "pref.jsonl", "w") as f:
        for r in recs[:16]:
            f.write(json.dumps({"prompt": r["prompt"], "chosen": r["response"], "rejected": " The answer is 0."}) + "\n")
    model = GPT.from_pretrained(str(d / "base"))
    kind_recs = [{"prompt": r["prompt"], "response": r["response"]} for r in recs[:16]]
    origin = origin_of(str(d / "train.jsonl"), len(kind_recs), model, str(d / "base"))
    sample_negatives(model, kind_recs, str(d / "negs.jsonl"), NEG_SETTINGS, origin)
    return d


def argv(d, loss, out, *extra, evaluate=False):
    ev = ["--eval-data", str(d / "heldout.jsonl")] if evaluate else ["--no-eval"]
    return ["--loss", loss, "--init", str(d / "base"), "--data", str(d / "train.jsonl"),
            "--negatives", str(d / "negs.jsonl"), "--neg-max-new-tokens", "12",
            "--out-dir", str(out), "--batch-size", "8", "--micro-batch-size", "2", "--epochs", "2",
            "--lr", "3e-3", "--max-len", "96", "--max-prompt-len", "64",
            "--eval-max-new-tokens", "4", *ev, "--log-every", "1", *extra]


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank, world, port, args, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    model, log_u = train.main(args)
    torch.save({"params": params(model), "log_u": log_u}, f"{out}/rank{rank}.pt")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("loss", ["dft", "sft"])
def test_ddp_two_processes_equal_one(setup, tmp_path, loss):
    """Same global batch: 1 process x 4 micro-batches == 2 processes x 2 micro-batches (gloo).
    dft checks the per-prompt u exchange; sft the token-count normalizer across ranks."""
    d = setup
    one_model, one_u = train.main(argv(d, loss, tmp_path / "one"))
    mp.spawn(_worker, args=(2, free_port(), argv(d, loss, tmp_path / "two"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(r0["log_u"], r1["log_u"])  # u identical on every rank, exactly
    torch.testing.assert_close(r0["log_u"], one_u, atol=1e-5, rtol=0)
    if loss == "dft":
        assert (one_u != 0).sum() == 16  # every prompt's u was updated: the test is not vacuous
    one = params(one_model)
    assert any(not torch.allclose(one[k], p) for k, p in params(GPT.from_pretrained(str(d / "base"))).items())
    for k in one:
        torch.testing.assert_close(r0["params"][k], one[k], atol=2e-5, rtol=1e-4, msg=k)
        assert torch.equal(r0["params"][k], r1["params"][k])


@pytest.mark.parametrize("loss", ["dft", "sft"])
def test_ddp_partial_last_step_equals_one_process(setup, tmp_path, loss):
    """9 prompts, batch 8: each epoch ends with a step of ONE prompt, so rank 1 has none and runs a
    weight-0 pass; the result is still the 1-process one, and that prompt's u is updated."""
    d = setup
    extra = ["--max-examples", "9", "--negatives-dir", str(tmp_path / "negs")]
    a = argv(d, loss, tmp_path / "one", *extra)
    a[a.index("--negatives"):a.index("--negatives") + 2] = []  # sampled for these 9 prompts
    one_model, one_u = train.main(a)
    b = argv(d, loss, tmp_path / "two", *extra)
    b[b.index("--negatives"):b.index("--negatives") + 2] = []
    mp.spawn(_worker, args=(2, free_port(), b, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(r0["log_u"], r1["log_u"]) and len(one_u) == 9
    torch.testing.assert_close(r0["log_u"], one_u, atol=1e-5, rtol=0)
    if loss == "dft":
        assert (one_u != 0).all()  # the prompts of the short steps were trained on too
    assert json.loads(open(tmp_path / "one" / "timing.json").read())["steps"] == 4  # 2 epochs x (8 + 1)
    for k, v in params(one_model).items():
        torch.testing.assert_close(r0["params"][k], v, atol=2e-5, rtol=1e-4, msg=k)


def test_resume_equals_uninterrupted(setup, tmp_path):
    d = setup
    full, full_u = train.main(argv(d, "dft", tmp_path / "a"))
    train.main(argv(d, "dft", tmp_path / "b", "--max-steps", "3"))  # 4 steps in all: stop mid-epoch 0
    assert not (tmp_path / "b" / "final").exists() and (tmp_path / "b" / "last" / "state.pt").exists()
    resumed, resumed_u = train.main(argv(d, "dft", tmp_path / "b", "--resume"))
    assert torch.equal(full_u, resumed_u)
    for k, v in params(full).items():
        torch.testing.assert_close(params(resumed)[k], v, atol=0, rtol=0, msg=k)
    assert (tmp_path / "b" / "final" / "model.safetensors").exists()
    steps = [json.loads(line)["step"] for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize("loss", ["sft", "dft", "dft2", "asft", "dpo"])
def test_every_loss_end_to_end(setup, tmp_path, loss):
    d = setup
    train.main(argv(d, loss, tmp_path, evaluate=True))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert len(rows) == 4 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    expect = {"sft": "nll", "dft": "w/max", "dft2": "w/mean", "asft": "avg_logp/neg", "dpo": "rewards/margins"}[loss]
    assert expect in rows[0]
    if loss == "dft":  # the step's largest weight is at least their mean
        assert all(r["w/max"] >= r["w/mean"] for r in rows)
    ev = json.load(open(tmp_path / "eval.json"))
    assert set(ev) == {"before", "after"} and "nll" in ev["after"]
    cfg = json.load(open(tmp_path / "config.json"))
    assert cfg["loss"] == loss and cfg["identity"]["hparams"] == losses.LOSSES[loss].defaults
    # the saved model is a normal checkpoint
    GPT.from_pretrained(str(tmp_path / "final"))


@pytest.mark.parametrize("loss", ["dpo", "asft"])
def test_preference_data(setup, tmp_path, loss):
    d = setup
    a = argv(d, loss, tmp_path)
    a[a.index("--data") + 1] = str(d / "pref.jsonl")
    model, _ = train.main(a + ["--max-steps", "2"])
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert len(rows) == 2


def test_dpo_starts_at_log2(setup, tmp_path):
    """At step 0 the policy is the reference: every DPO margin is 0 and the loss is log 2."""
    d = setup
    train.main(argv(d, "dpo", tmp_path, "--max-steps", "1", "--lr", "0"))
    row = json.loads(open(tmp_path / "metrics.jsonl").readline())
    assert abs(row["loss"] - 0.6931) < 1e-3 and abs(row["rewards/margins"]) < 1e-4


# --- bad input --------------------------------------------------------------------------------

def run_fails(args, capsys):
    """The entry point's behaviour: one line on stderr, exit status 2."""
    with pytest.raises(SystemExit) as e:
        run_main(lambda: train.main(args))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_malformed_jsonl(setup, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": \n')
    a = argv(setup, "sft", tmp_path / "run")
    a[a.index("--data") + 1] = str(bad)
    err = run_fails(a, capsys)
    assert f"{bad}:2: invalid JSON" in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "final").exists()


def test_missing_field_and_empty_response(setup, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a", "answer": "b"}\n')
    a = argv(setup, "sft", tmp_path / "run")
    a[a.index("--data") + 1] = str(bad)
    assert f"{bad}:2:" in run_fails(a, capsys)
    bad.write_text('{"prompt": "a", "response": "  "}\n')
    assert f'{bad}:1: empty "response"' in run_fails(a, capsys)


def test_negatives_for_other_data(setup, tmp_path, capsys):
    other = tmp_path / "other.jsonl"
    other.write_text((setup / "train.jsonl").read_text().replace("Question", "Q"))
    a = argv(setup, "dft", tmp_path / "run")
    a[a.index("--data") + 1] = str(other)
    err = run_fails(a, capsys)
    assert f"{setup / 'negs.jsonl'}: sampled with other settings (data_sha256: " in err
    assert not (tmp_path / "run" / "final").exists()


@pytest.mark.parametrize("flag,value,field", [("--neg-temperature", "0.9", "temperature"),
                                              ("--neg-max-new-tokens", "10", "max_new_tokens"),
                                              ("--epochs", "3", "epochs")])
def test_negatives_of_other_settings_are_refused_unless_allowed(setup, tmp_path, capsys, flag,
                                                                 value, field):
    """A --negatives file must hold what this run would sample: its settings and starting weights;
    --negatives-allow names a difference made on purpose."""
    a = argv(setup, "dft", tmp_path / "run", flag, value, "--max-steps", "1")
    err = run_fails(a, capsys)
    assert f"{setup / 'negs.jsonl'}: sampled with other settings ({field}: " in err
    assert not (tmp_path / "run" / "final").exists()
    if field != "epochs":  # 3 epochs need more negatives than the file holds
        train.main(a + ["--negatives-allow", field])


def test_negatives_of_other_weights_are_refused_unless_allowed(setup, tmp_path, capsys):
    other = tmp_path / "other"
    torch.manual_seed(1)
    GPT(config_for("tiny")).save_pretrained(other)
    a = argv(setup, "dft", tmp_path / "run", "--max-steps", "1")
    a[a.index("--init") + 1] = str(other)
    assert "sampled with other settings (init_sha256: " in run_fails(a, capsys)
    train.main(a + ["--negatives-allow", "init_sha256"])


def test_unknown_loss(capsys):
    assert "argument --loss: invalid choice: 'ppo'" in run_fails(["--loss", "ppo"], capsys)


def test_bad_batch_geometry(setup, tmp_path, capsys):
    assert "must be divisible" in run_fails(argv(setup, "sft", tmp_path) + ["--micro-batch-size", "3"], capsys)


def test_missing_init(setup, tmp_path, capsys):
    a = argv(setup, "sft", tmp_path)
    a[a.index("--init") + 1] = str(tmp_path / "nope")
    assert f"{tmp_path / 'nope'}: no such file or directory" in run_fails(a, capsys)


def test_non_finite_loss_stops_with_last_good_checkpoint(setup, tmp_path, capsys, monkeypatch):
    d = setup
    real = losses.compute_loss
    calls = {"n": 0}

    def nan_after_two_steps(*a, **kw):  # 4 micro-batches a step: the third step goes bad
        calls["n"] += 1
        loss, nu, met = real(*a, **kw)
        return (loss * float("nan") if calls["n"] > 8 else loss), nu, met

    monkeypatch.setattr(losses, "compute_loss", nan_after_two_steps)
    err = run_fails(argv(d, "dft", tmp_path, "--save-every", "1"), capsys)
    assert ("non-finite loss at step 3; the weights were not updated; its last checkpoint is "
            f"{tmp_path}/last") in err
    assert torch.load(tmp_path / "last" / "state.pt")["step"] == 2 and not (tmp_path / "final").exists()


def test_pack_trains_like_padding(setup, tmp_path):
    """--pack lays each micro-batch's sequences end to end: the same training, up to float rounding."""
    d = setup
    a, _ = train.main(argv(d, "dpo", tmp_path / "a", "--max-steps", "3"))
    b, _ = train.main(argv(d, "dpo", tmp_path / "b", "--max-steps", "3", "--pack"))
    for k, v in params(a).items():
        torch.testing.assert_close(params(b)[k], v, atol=1e-5, rtol=1e-4, msg=k)


def test_max_metrics_are_the_step_maximum(setup, tmp_path, monkeypatch):
    """w/max is the largest weight of the whole step (4 micro-batches here), not a mean of the
    micro-batches' maxima."""
    real, calls = losses.compute_loss, []

    def numbered(*a, **kw):  # micro-batch k of the run reports w/max = k
        loss, new_u, met = real(*a, **kw)
        calls.append(1)
        return loss, new_u, {**met, "w/max": torch.tensor(float(len(calls)))}

    monkeypatch.setattr(losses, "compute_loss", numbered)
    train.main(argv(setup, "dft", tmp_path, "--max-steps", "2"))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["w/max"] for r in rows] == [4.0, 8.0]


@pytest.mark.parametrize("loss", ["sft", "dpo"])
def test_lr_defaults_to_the_losss_own(setup, tmp_path, loss):
    """Without --lr a run takes the lr its loss registers (chosen on the built-in task's validation
    split), and says so in config.json."""
    a = argv(setup, loss, tmp_path, "--max-steps", "1")
    del a[a.index("--lr"):a.index("--lr") + 2]
    train.main(a)
    assert json.load(open(tmp_path / "config.json"))["lr"] == losses.LOSSES[loss].lr
