"""negatives.py: the negatives file has its schema, resumes byte-identically, refuses stale or
broken files (naming the header fields that differ), 2 ranks write what 1 rank writes, the cache
name depends on everything that decides the file, the task's checker grades the negatives, and the
command line writes the file."""
import dataclasses
import json
import os
import re

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import negatives
from common import file_sha256
from data.tokenizer import get_tokenizer
from model import GPT, config_for
from negatives import (NegativeSettings, Origin, epoch_columns, get_negatives, header_of,
                       keep_wrong, negative_shares, negatives_path, origin_of, read_header,
                       read_negatives, sample_negatives)

SET = NegativeSettings(B=2, epochs=2, max_new_tokens=6, batch_size=8, seed=0)  # 2 prompts a batch
PROMPTS = ["Question: 2 + 3?\nAnswer:", "Hi",
           "A much longer prompt, with quite a few more tokens in it than the others.",
           "x", "Tell me a story about a cat.", "1 2 3 4 5", "The end"]


def origin(model, path):
    return origin_of(path, len(PROMPTS), model, "tiny")


def neg(model, records, out, path, **changes):
    """sample_negatives with the test's settings (changed by keyword); returns out."""
    settings = dataclasses.replace(SET, **changes)
    sample_negatives(model, records, out, settings, origin(model, path))
    return out


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


def body(path):
    """The lines after the meta line, as bytes, and the meta without its creation time."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    meta = json.loads(lines[0])["meta"]
    meta.pop("created")
    return meta, lines[1:]


def test_negatives_file_schema_and_reproducibility(model, data, tmp_path):
    path, records = data
    out = neg(model, records, str(tmp_path / "neg.jsonl"), path)
    assert not os.path.exists(out + ".partial")
    lines = open(out, encoding="utf-8").read().splitlines()
    meta = json.loads(lines[0])["meta"]
    assert meta["data"] == path and meta["n_examples"] == len(PROMPTS) and meta["n_per_prompt"] == 4
    assert (meta["B"], meta["epochs"], meta["temperature"], meta["top_k"]) == (2, 2, 0.7, 50)
    assert meta["nanodft_version"] == "3" and len(meta["data_sha256"]) == 64
    assert meta["init_sha256"].startswith("weights:")
    assert read_header(out) == meta and len(lines) == 1 + len(PROMPTS)
    tok = get_tokenizer()
    for i, line in enumerate(lines[1:]):
        rec = json.loads(line)
        assert rec["i"] == i and len(rec["negatives"]) == 4
        for n in rec["negatives"]:
            assert n["text"] == tok.decode(n["ids"]) and (n["eos"] or len(n["ids"]) == 6)
    negs = read_negatives(out, header_of(SET, origin(model, path)))
    assert [len(x) for x in negs] == [4] * len(PROMPTS)
    assert negs[0][epoch_columns(0, 2)] == negs[0][:2]
    assert negs[0][epoch_columns(1, 2)] == negs[0][2:4]
    # get_negatives reads an existing file rather than sampling it again
    assert get_negatives(model, records, SET, origin(model, path), out) == negs
    # the same seed reproduces the file (larger batches too: seeds are per example); another seed
    # does not
    again = neg(model, records, str(tmp_path / "again.jsonl"), path, batch_size=64)
    assert body(again)[1] == body(out)[1]
    other = neg(model, records, str(tmp_path / "other.jsonl"), path, seed=1)
    assert body(other)[1] != body(out)[1]


def test_negatives_resume_is_byte_identical(model, data, tmp_path, monkeypatch):
    path, records = data
    full = neg(model, records, str(tmp_path / "full.jsonl"), path)
    out = str(tmp_path / "neg.jsonl")
    calls, crash_at = [], [3]
    real = negatives.sample_rows

    def crash_on_third(*a, **k):
        calls.append(1)
        if len(calls) == crash_at[0]:
            raise Interrupted
        return real(*a, **k)

    monkeypatch.setattr(negatives, "sample_rows", crash_on_third)
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
    monkeypatch.setattr(negatives, "sample_rows", real)
    stale = r"x.jsonl.partial: left by an interrupted run .*temperature.*delete it"
    with pytest.raises(ValueError, match=stale):
        neg(model, records, str(tmp_path / "x.jsonl"), path, max_new_tokens=5, temperature=0.9)


def test_negatives_stale_and_broken_files_are_refused(model, data, tmp_path):
    path, records = data
    out = neg(model, records, str(tmp_path / "neg.jsonl"), path)
    expected = header_of(SET, origin(model, path))
    other = tmp_path / "other.jsonl"
    other.write_text(open(path).read().replace("Hi", "Hello"))
    # eval.py's check: only the data's sha256 and the number of examples
    sha = file_sha256(str(other))
    with pytest.raises(ValueError, match=rf"{re.escape(out)}: sampled with other settings "
                       rf"\(data_sha256: '{file_sha256(path)}' -> '{sha}'\)"):
        read_negatives(out, {"data_sha256": sha, "n_examples": len(PROMPTS)})
    # more negatives per prompt than the file holds: every field that differs is named
    more = header_of(dataclasses.replace(SET, B=3), origin(model, path))
    with pytest.raises(ValueError, match=r"other settings \(B: 2 -> 3; n_per_prompt: 4 -> 6\)"):
        read_negatives(out, more)
    # train.py's path: an existing file sampled with other settings is refused, unless allowed
    seed5 = dataclasses.replace(SET, seed=5)
    with pytest.raises(ValueError, match=r"other settings \(seed: 0 -> 5\); delete it"):
        get_negatives(model, records, seed5, origin(model, path), out)
    allowed = get_negatives(model, records, seed5, origin(model, path), out, allow=("seed",))
    assert allowed == read_negatives(out, expected)
    lines = open(out, encoding="utf-8").read().splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(lines[:2]) + '{"i": 1, "negatives": [\n' + "".join(lines[3:]))
    with pytest.raises(ValueError, match=rf"{bad}:3: not a JSON line"):
        read_negatives(str(bad), expected)
    bad.write_text("".join(lines[:3]) + "".join(lines[4:]))  # a line missing: order broken
    with pytest.raises(ValueError, match=rf'{bad}:4: expected {{"i": 2'):
        read_negatives(str(bad), expected)
    bad.write_text("".join(lines[:-1]))
    with pytest.raises(ValueError, match="6 example lines, expected 7"):
        read_negatives(str(bad), expected)
    bad.write_text("".join(lines[1:]))
    with pytest.raises(ValueError, match=rf"{bad}:1: expected the line"):
        read_negatives(str(bad), expected)
    with pytest.raises(FileNotFoundError, match="no such negatives file"):
        read_negatives(str(tmp_path / "missing.jsonl"), expected)


def _worker(rank, store_path, records, data_path, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store_path, 2), rank=rank, world_size=2)
    neg(tiny_model(), records, out, data_path)
    assert os.path.exists(out)  # every rank returns only after the merge
    dist.destroy_process_group()


def test_two_ranks_write_the_same_file_as_one(model, data, tmp_path):
    path, records = data
    one = neg(model, records, str(tmp_path / "one.jsonl"), path)
    two = str(tmp_path / "two.jsonl")
    mp.spawn(_worker, args=(str(tmp_path / "store"), records, path, two), nprocs=2)
    assert body(two) == body(one)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".partial")]


def test_negatives_cache_name_depends_on_data_path_weights_and_every_setting():
    o = Origin("a/train.jsonl", "d" * 64, 7, "tiny", "sha1")
    base = negatives_path("c", SET, o)
    assert base.startswith(os.path.join("c", "train-")) and base.endswith(".jsonl")
    others = [negatives_path("c", SET, dataclasses.replace(o, data="b/train.jsonl")),
              negatives_path("c", SET, dataclasses.replace(o, init_sha256="sha2")),
              negatives_path("c", SET, dataclasses.replace(o, n_examples=8))]
    values = (3, 3, 2, 7, 0.5, 10, 0.9, "x", 1, 16)
    others += [negatives_path("c", dataclasses.replace(SET, **{f.name: v}), o)
               for f, v in zip(dataclasses.fields(SET), values)]
    assert len({base, *others}) == 3 + len(dataclasses.fields(SET)) + 1


def test_keep_wrong_and_shares():
    tok = get_tokenizer()
    recs = [{"prompt": "Q", "response": " 1 + 1 = 2. The answer is 2."}] * 2
    right = (tok.encode_ordinary(" 2. The answer is 2."), True)
    same = (tok.encode_ordinary(recs[0]["response"]), True)
    wrong1 = (tok.encode_ordinary(" The answer is 3."), True)
    wrong2 = (tok.encode_ordinary(" no idea"), False)
    pools = [[right, wrong1, same, wrong2], [right, same, right, same]]
    shares = negative_shares(recs, pools)
    assert shares == {"neg/correct": 6 / 8, "neg/identical": 3 / 8}
    kept, none_wrong = keep_wrong(recs, pools, 3)
    assert kept[0] == [wrong1, wrong2, wrong1] and kept[1] == pools[1][:3] and none_wrong == 1
    with pytest.raises(ValueError, match="needs checkable answers"):
        keep_wrong([{"prompt": "Q", "response": " hello"}], [[right]], 1)
    assert negative_shares([{"prompt": "Q", "response": " hello"}], [[right]]) == {}


def test_cli_writes_the_file_and_checks_flags(model, data, tmp_path):
    path, records = data
    model.save_pretrained(str(tmp_path / "base"))
    out = str(tmp_path / "negs.jsonl")
    negatives.main(["--data", path, "--out", out, "--init", str(tmp_path / "base"),
                    "--max-new-tokens", "6", "--batch-size", "8", "--device", "cpu"])
    meta = read_header(out)
    assert (meta["B"], meta["epochs"], meta["max_new_tokens"], meta["n_examples"]) == (2, 2, 6, 7)
    assert meta["init_sha256"] == file_sha256(str(tmp_path / "base" / "model.safetensors"))
    # the same sampling as the library call: the file's examples are the same bytes
    same = neg(model, records, str(tmp_path / "lib.jsonl"), path)
    assert body(out)[1] == body(same)[1]
    for flag, value, says in (("--num-negatives", "0", "--num-negatives must be >= 1, got 0"),
                              ("--top-p", "0", "--top-p must be in (0, 1], got 0.0"),
                              ("--temperature", "-1", "--temperature must be >= 0, got -1.0")):
        with pytest.raises(ValueError, match=re.escape(says)):
            negatives.get_args(["--data", path, "--out", out, flag, value])
