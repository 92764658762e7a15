"""sample.py: KV-cache sampling equals the slow full-forward loop, batching changes nothing, the
filters keep exactly the intended tokens, EOS stops a row, seeds reproduce; the negatives file has its
schema, resumes byte-identically, refuses stale or broken files, and 2 ranks write what 1 rank writes."""
import dataclasses
import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import sample
from data.tokenizer import EOT, get_tokenizer
from model import GPT, config_for
from sample import (NegativeSettings, _generate, epoch_slice, generate, keep_wrong, load_negatives, negative_shares,
                    negatives_meta, negatives_path, pick, sample_negatives, top_k_filter, top_p_filter)

SET = NegativeSettings(B=2, epochs=2, max_new_tokens=6, batch_size=8, seed=0)  # 2 prompts per batch


def neg(model, records, out, path, world=1, rank=0, **changes):
    """sample_negatives with the test's settings (changed by keyword)."""
    return sample_negatives(model, records, out, dataclasses.replace(SET, **changes), path, "tiny", rank=rank, world=world)
PROMPTS = ["Question: 2 + 3?\nAnswer:", "Hi", "A much longer prompt, with quite a few more tokens in it than the others.",
           "x", "Tell me a story about a cat.", "1 2 3 4 5", "The end"]


class Interrupted(Exception):
    """Stands in for a crash or Ctrl-C in the middle of sampling."""


def tiny_model():
    torch.manual_seed(0)
    return GPT(config_for("tiny")).eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's ops are too small to share: one thread is as fast alone and far faster when
    other processes load the cores (OpenMP threads then spin-wait on each other)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "response": " ok"}) + "\n" for p in PROMPTS))
    return str(path), [{"prompt": p, "response": " ok"} for p in PROMPTS]


def slow_greedy(model, ids, n):
    """The obviously-correct reference: full forward over the whole sequence at every step."""
    idx = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(n):
            idx = torch.cat([idx, model(idx)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx[0, len(ids):].tolist()


def body(path):
    """The lines after the meta line, as bytes, and the meta without its creation time."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    meta = json.loads(lines[0])["meta"]
    meta.pop("created")
    return meta, lines[1:]


# -----------------------------------------------------------------------------
# sampling


def test_greedy_kv_cache_equals_full_forward_and_batch_equals_one_by_one(model):
    tok = get_tokenizer()
    prompts = [tok.encode_ordinary(p) for p in PROMPTS[:4]]  # lengths 9, 1, 19, 1
    batch = generate(model, prompts, 10, temperature=0)
    for p, (new, eos) in zip(prompts, batch):
        assert (new, eos) == (slow_greedy(model, p, 10), False)
        assert generate(model, [p], 10, temperature=0) == [(new, eos)]


def test_prompt_longer_than_block_size_keeps_its_end(model):
    long = list(range(1000, 1000 + 200))  # block_size is 128
    out = generate(model, [long], 8, temperature=0)
    assert out[0][0] == slow_greedy(model, long[-(128 - 8):], 8)
    assert len(generate(model, [[1]], 500, temperature=0)[0][0]) == 127  # capped at block_size - 1


def test_top_k_filter_exact_and_ties_deterministic():
    x = torch.tensor([[1.0, 3.0, 2.0, 0.0, -1.0]])
    kept = lambda y: (y > float("-inf"))[0].nonzero()[:, 0].tolist()
    assert kept(top_k_filter(x, 1)) == [1]
    assert kept(top_k_filter(x, 3)) == [0, 1, 2]
    assert kept(top_k_filter(x, 99)) == [0, 1, 2, 3, 4]
    assert torch.equal(top_k_filter(x, 3)[0, :3], x[0, :3])  # kept logits unchanged
    ties = torch.tensor([[5.0, 2.0, 1.0, 2.0]])  # a tie at the k-th value: exactly k kept, the same every call
    first = kept(top_k_filter(ties, 2))
    assert len(first) == 2 and first[0] == 0 and first[1] in (1, 3)
    assert all(kept(top_k_filter(ties, 2)) == first for _ in range(5))


def test_top_p_filter_exact_and_ties_kept():
    x = torch.tensor([[0.15, 0.5, 0.05, 0.3]]).log()
    kept = lambda y: (y > float("-inf"))[0].nonzero()[:, 0].tolist()
    assert kept(top_p_filter(x, 1e-6)) == [1]  # the top token always survives
    assert kept(top_p_filter(x, 0.4)) == [1]
    assert kept(top_p_filter(x, 0.7)) == [1, 3]  # 0.5 < 0.7 <= 0.8
    assert kept(top_p_filter(x, 0.9)) == [0, 1, 3]
    assert kept(top_p_filter(x, 0.99)) == [0, 1, 2, 3]
    ties = torch.tensor([[0.2, 0.4, 0.2, 0.2]]).log()
    assert kept(top_p_filter(ties, 0.5)) == [0, 1, 2, 3]  # the 2nd token ties with two others: all kept


def test_pick_is_exact_inverse_cdf_sampling():
    logits = torch.tensor([0.1, 0.2, 0.3, 0.4]).log().expand(1000, 4)
    u = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000  # evenly spread uniforms
    assert torch.bincount(pick(logits, u, 1.0), minlength=4).tolist() == [100, 200, 300, 400]
    assert torch.bincount(pick(logits, u, 1.0, top_k=2), minlength=4).tolist() == [0, 0, 429, 571]  # 3/7, 4/7
    assert torch.bincount(pick(logits, u, 1.0, top_p=0.5), minlength=4).tolist() == [0, 0, 429, 571]
    assert pick(logits, u, 0.0).unique().tolist() == [3]  # temperature 0 = argmax


def test_temperature_zero_is_greedy_and_negative_raises(model):
    p = [[15496, 995]]
    assert generate(model, p, 6, temperature=0, generator=torch.Generator().manual_seed(1)) == \
        [(slow_greedy(model, p[0], 6), False)]
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        generate(model, p, 6, temperature=-0.5)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, p, 6, top_p=0.0)


def test_eos_stops_one_row_while_others_continue(model, monkeypatch):
    prompts = [[15496, 995], [40, 1842, 345]]
    alone = generate(model, prompts[1:], 12, temperature=0)[0]
    real_decode, calls = model.decode, []

    def decode(tok, cache):  # row 0 emits EOT at step 2 (logits of the 2nd decode call)
        logits = real_decode(tok, cache)
        calls.append(tok.clone())
        if len(calls) == 2:
            logits[0] = float("-inf")
            logits[0, EOT] = 0.0
        return logits

    monkeypatch.setattr(model, "decode", decode)
    out = generate(model, prompts, 12, temperature=0)
    assert out[0] == (slow_greedy(model, prompts[0], 2), True)  # 2 tokens, then EOT (not in ids)
    assert out[1] == alone  # the other row is untouched
    assert all(int(t[0]) == EOT for t in calls[2:])  # the finished row is fed the pad token

    def all_eot(tok, cache):  # every row emits EOT at step 1
        calls.append(tok)
        return torch.full((2, 50257), -1e9).index_fill_(1, torch.tensor([EOT]), 0.0)

    calls.clear()
    monkeypatch.setattr(model, "decode", all_eot)
    out = generate(model, prompts, 100, temperature=0)
    assert out == [(slow_greedy(model, p, 1), True) for p in prompts]
    assert len(calls) < sample.CHECK_EVERY  # the loop stopped at the next all-done check, not after 100 steps


def test_same_seed_same_samples_different_seed_different(model):
    p = [[15496, 995], [40]]
    a = generate(model, p, 8, temperature=1.0, top_k=50, generator=torch.Generator().manual_seed(3))
    b = generate(model, p, 8, temperature=1.0, top_k=50, generator=torch.Generator().manual_seed(3))
    c = generate(model, p, 8, temperature=1.0, top_k=50, generator=torch.Generator().manual_seed(4))
    assert a == b and a != c


def test_cli_prints_numbered_samples(capsys):
    sample.main(["--init", "scratch", "--size", "tiny", "--prompt", "Hello", "--num", "2", "--max-new-tokens", "4", "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.count("--- prompt ---\nHello\n") == 1
    assert "--- sample 1 of 2" in out and "--- sample 2 of 2" in out and "tokens/s" in out


def test_cli_missing_default_model_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="shipped base model is missing.*--init gpt2"):
        sample.main(["--prompt", "hi", "--device", "cpu"])


# -----------------------------------------------------------------------------
# negatives


def test_negatives_file_schema_and_reproducibility(model, data, tmp_path):
    path, records = data
    out = neg(model, records, str(tmp_path / "neg.jsonl"), path)
    assert not os.path.exists(out + ".partial")
    lines = open(out, encoding="utf-8").read().splitlines()
    meta = json.loads(lines[0])["meta"]
    assert meta["data"] == path and meta["n_examples"] == len(PROMPTS) and meta["n_per_prompt"] == 4
    assert (meta["B"], meta["epochs"], meta["temperature"], meta["top_k"]) == (2, 2, 0.7, 50)
    assert meta["nanodft_version"] == "2" and len(meta["data_sha256"]) == 64 and meta["init_sha256"].startswith("weights:")
    assert negatives_meta(out) == meta and len(lines) == 1 + len(PROMPTS)
    tok = get_tokenizer()
    for i, line in enumerate(lines[1:]):
        rec = json.loads(line)
        assert rec["i"] == i and len(rec["negatives"]) == 4
        for n in rec["negatives"]:
            assert n["text"] == tok.decode(n["ids"]) and (n["eos"] or len(n["ids"]) == 6)
    negs = load_negatives(out, path, len(PROMPTS), 4)
    assert [len(x) for x in negs] == [4] * len(PROMPTS) and epoch_slice(negs[0], 1, 2) == negs[0][2:4]
    # the same seed reproduces the file (larger batches too: seeds are per example); another seed does not
    again = neg(model, records, str(tmp_path / "again.jsonl"), path, batch_size=64)
    assert body(again)[1] == body(out)[1]
    other = neg(model, records, str(tmp_path / "other.jsonl"), path, seed=1)
    assert body(other)[1] != body(out)[1]


def test_negatives_resume_is_byte_identical(model, data, tmp_path, monkeypatch):
    path, records = data
    full = neg(model, records, str(tmp_path / "full.jsonl"), path)
    out = str(tmp_path / "neg.jsonl")
    calls, crash_at = [], [3]

    def crash_on_third(*a, **k):
        calls.append(1)
        if len(calls) == crash_at[0]:
            raise Interrupted
        return _generate(*a, **k)

    monkeypatch.setattr(sample, "_generate", crash_on_third)
    with pytest.raises(Interrupted):
        neg(model, records, out, path)
    with open(out + ".partial", "rb") as f:
        lines = f.read().split(b"\n")
    assert len(lines) == 1 + 4 + 1  # header + 2 batches of 2 records + b""
    with open(out + ".partial", "wb") as f:  # keep 3 records (mid-batch) and add half a line
        f.write(b"\n".join(lines[:4]) + b'\n{"i": 3, "negati')
    calls.clear()
    crash_at[0] = None
    neg(model, records, out, path)
    assert len(calls) == 3  # 4 batches of 2,2,2,1 prompts: the first kept, the 3 others redone
    assert body(out) == body(full)  # every byte but the meta's creation time
    # a partial left by a run with other settings is refused
    calls.clear()
    crash_at[0] = 3
    with pytest.raises(Interrupted):
        neg(model, records, str(tmp_path / "x.jsonl"), path)
    monkeypatch.setattr(sample, "_generate", _generate)
    with pytest.raises(ValueError, match=r"x.jsonl.partial: left by an interrupted run .*temperature.*delete it"):
        neg(model, records, str(tmp_path / "x.jsonl"), path, max_new_tokens=5, temperature=0.9)


def test_negatives_stale_and_broken_files_are_refused(model, data, tmp_path):
    path, records = data
    out = neg(model, records, str(tmp_path / "neg.jsonl"), path)
    other = tmp_path / "other.jsonl"
    other.write_text(open(path).read().replace("Hi", "Hello"))
    with pytest.raises(ValueError, match=r"negatives file .*neg.jsonl was sampled for a different data file"):
        load_negatives(out, str(other), len(PROMPTS), 4)
    with pytest.raises(ValueError, match="needed 7 x 6"):
        load_negatives(out, path, len(PROMPTS), 6)
    with pytest.raises(ValueError, match="exists but was sampled with other settings"):
        neg(model, records, out, path, seed=5)
    lines = open(out, encoding="utf-8").read().splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(lines[:2]) + '{"i": 1, "negatives": [\n' + "".join(lines[3:]))
    with pytest.raises(ValueError, match=rf"{bad}:3: invalid JSON"):
        load_negatives(str(bad), path, len(PROMPTS), 4)
    bad.write_text("".join(lines[:3]) + "".join(lines[4:]))  # a line missing: order broken
    with pytest.raises(ValueError, match=rf'{bad}:4: expected {{"i": 2'):
        load_negatives(str(bad), path, len(PROMPTS), 4)
    bad.write_text("".join(lines[:-1]))
    with pytest.raises(ValueError, match="6 example lines, expected 7"):
        load_negatives(str(bad), path, len(PROMPTS), 4)
    bad.write_text("".join(lines[1:]))
    with pytest.raises(ValueError, match=rf"{bad}:1: expected the line"):
        load_negatives(str(bad), path, len(PROMPTS), 4)


def _worker(rank, store_path, records, data_path, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store_path, 2), rank=rank, world_size=2)
    neg(tiny_model(), records, out, data_path, world=2, rank=rank)
    assert os.path.exists(out)  # every rank returns only after the merge
    dist.destroy_process_group()


def test_two_ranks_write_the_same_file_as_one(model, data, tmp_path):
    path, records = data
    one = neg(model, records, str(tmp_path / "one.jsonl"), path)
    two = str(tmp_path / "two.jsonl")
    mp.spawn(_worker, args=(str(tmp_path / "store"), records, path, two), nprocs=2)
    assert body(two) == body(one)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".partial")]


def test_negatives_cache_name_depends_on_data_path_weights_and_every_setting(tmp_path):
    base = negatives_path("c", "a/train.jsonl", "sha1", SET)
    assert base.startswith(os.path.join("c", "train-")) and base.endswith(".jsonl")
    others = [negatives_path("c", "b/train.jsonl", "sha1", SET), negatives_path("c", "a/train.jsonl", "sha2", SET)]
    others += [negatives_path("c", "a/train.jsonl", "sha1", dataclasses.replace(SET, **{f.name: v}))
               for f, v in zip(dataclasses.fields(SET), (3, 3, 2, 7, 0.5, 10, 0.9, "x", 1, 16))]
    assert len({base, *others}) == 2 + len(dataclasses.fields(SET)) + 1


def test_keep_wrong_and_shares():
    tok = get_tokenizer()
    recs = [{"prompt": "Q", "response": " 1 + 1 = 2. The answer is 2."}] * 2
    right, same = (tok.encode_ordinary(" 2. The answer is 2."), True), (tok.encode_ordinary(recs[0]["response"]), True)
    wrong1, wrong2 = (tok.encode_ordinary(" The answer is 3."), True), (tok.encode_ordinary(" no idea"), False)
    pools = [[right, wrong1, same, wrong2], [right, same, right, same]]
    shares = negative_shares(recs, pools)
    assert shares == {"neg/correct": 6 / 8, "neg/identical": 3 / 8}
    kept, none_wrong = keep_wrong(recs, pools, 3)
    assert kept[0] == [wrong1, wrong2, wrong1] and kept[1] == pools[1][:3] and none_wrong == 1
    with pytest.raises(ValueError, match="needs checkable answers"):
        keep_wrong([{"prompt": "Q", "response": " hello"}], [[right]], 1)
    assert negative_shares([{"prompt": "Q", "response": " hello"}], [[right]]) == {}
