"""
Tests for the real-dataset converters (data/hh_rlhf.py, data/gsm8k.py, data/metamathqa.py), run end
to end against the local HTTP server of conftest.py playing the hub and GitHub, on the tiny
fixtures in tests/fixtures/ (same structure as the real files).

    python -m pytest -q tests/test_datasets.py
"""
import json
import os
import socket
import subprocess
import sys

import pytest

from common import run_main
from data import gsm8k, hh_rlhf, metamathqa
from data.arith import extract_answer

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fixture_bytes(name):
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def hub(local_server, monkeypatch, tmp_path):
    """The local server as hub + GitHub, holding the fixture files where the real ones live."""
    for split in ("train", "test"):
        local_server.add(f"datasets/Anthropic/hh-rlhf/resolve/main/helpful-base/{split}.jsonl.gz",
                         fixture_bytes(f"hh_rlhf_helpful-base_{split}.jsonl.gz"), etag=True)
        local_server.add(f"openai/grade-school-math/master/grade_school_math/data/{split}.jsonl",
                         fixture_bytes(f"gsm8k_{split}.jsonl"))
    local_server.add("datasets/meta-math/MetaMathQA/resolve/main/MetaMathQA-395K.json",
                     fixture_bytes("MetaMathQA-395K.json"), etag=True)
    monkeypatch.setenv("NANODFT_HF_BASE", local_server.url)
    monkeypatch.setenv("NANODFT_GITHUB_RAW_BASE", local_server.url)
    monkeypatch.setenv("NANODFT_CACHE", str(tmp_path / "cache"))
    return local_server


# ----------------------------------------------------------------------------- HH-RLHF

EGG = ("\n\nHuman: How do I boil an egg?\n\nAssistant: Put the egg in boiling water for about nine "
       "minutes.\n\nHuman: And if I want a soft yolk?\n\nAssistant:")


def test_hh_split_pair_multi_turn():
    rec, reason = hh_rlhf.split_pair(EGG + " Six minutes.", EGG + " Eggs come from chickens.")
    assert reason is None
    assert rec == {"prompt": EGG, "chosen": " Six minutes.", "rejected": " Eggs come from chickens."}
    # the prompt ends at the LAST assistant marker, so earlier turns stay in the prompt
    assert rec["prompt"].count("\n\nAssistant:") == 2
    assert hh_rlhf.split_pair("\n\nHuman: hi", "\n\nHuman: hi") == (None, "no '\\n\\nAssistant:' turn in chosen")
    assert hh_rlhf.split_pair(EGG + " a", EGG.replace("egg", "EGG") + " b")[1] == \
        "rejected does not share chosen's prompt"
    assert hh_rlhf.split_pair(EGG + " a", EGG + " a")[1] == "chosen == rejected"
    assert hh_rlhf.split_pair(EGG + " a", EGG + "  ")[1] == "empty chosen or rejected response"


def test_hh_neg_prefix():
    assert hh_rlhf.NEG_PREFIX + EGG == hh_rlhf.with_neg_prefix(EGG)
    assert hh_rlhf.with_neg_prefix(EGG).startswith("You are an unhelpful assistant.\n\nHuman: How do I")
    assert hh_rlhf.with_neg_prefix("Question: 1+1?\nAnswer:") == \
        "You are an unhelpful assistant.\n\nQuestion: 1+1?\nAnswer:"


def test_hh_end_to_end(hub, tmp_path, capsys):
    out = tmp_path / "hh"
    hh_rlhf.main(["--out", str(out)])
    balcony = "\n\nHuman: What are some vegetables I can grow on a small balcony?\n\nAssistant:"
    assert read_jsonl(out / "train.jsonl") == [
        {"prompt": balcony,
         "chosen": " Cherry tomatoes, lettuce, radishes and herbs such as basil all do well in pots.",
         "rejected": " I don't know, vegetables are boring."},
        {"prompt": EGG, "chosen": " Take it out after about six minutes and cool it in cold water.",
         "rejected": " Eggs come from chickens."},
    ]
    cafe = "\n\nHuman: Can you recommend a café drink that is not too sweet?\n\nAssistant:"
    assert read_jsonl(out / "test.jsonl") == [
        {"prompt": cafe, "chosen": " A cortado: espresso with a little steamed milk.", "rejected": " Drink sugar."}]
    assert "café" in (out / "test.jsonl").read_text(encoding="utf-8")  # UTF-8, not \\u escapes
    stdout = capsys.readouterr().out
    assert f"wrote {out / 'train.jsonl'}: 2 preference-style records, skipped 1" in stdout
    assert "skipped 1: rejected does not share chosen's prompt" in stdout
    assert f"wrote {out / 'test.jsonl'}: 1 preference-style records, skipped 2" in stdout
    assert "skipped 1: chosen == rejected" in stdout and "skipped 1: empty chosen or rejected response" in stdout
    # raw files were cached; a second run (here: SFT-style) makes no HTTP request
    n = len(hub.requests)
    assert n == 2
    hh_rlhf.main(["--out", str(tmp_path / "sft"), "--sft", "--splits", "train"])
    assert len(hub.requests) == n
    assert read_jsonl(tmp_path / "sft" / "train.jsonl") == [
        {"prompt": balcony, "response": " Cherry tomatoes, lettuce, radishes and herbs such as basil all do well in pots."},
        {"prompt": EGG, "response": " Take it out after about six minutes and cool it in cold water."},
    ]
    assert sorted(os.listdir(out)) == ["test.jsonl", "train.jsonl"]  # no temporary files left


def test_hh_offline_error_names_the_file(monkeypatch, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("NANODFT_HF_BASE", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NANODFT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as e:
        run_main(lambda: hh_rlhf.main(["--out", str(tmp_path / "hh"), "--splits", "test"]))
    msg = capsys.readouterr().err
    assert e.value.code == 2 and msg.count("\n") == 1
    url = f"http://127.0.0.1:{port}/datasets/Anthropic/hh-rlhf/resolve/main/helpful-base/test.jsonl.gz"
    dest = tmp_path / "cache" / "raw" / "hh-rlhf" / "helpful-base" / "test.jsonl.gz"
    assert msg.startswith("error: ") and f"download {url} by hand and save it as {dest}" in msg
    assert not (tmp_path / "hh").exists()


def test_hh_malformed_raw_line(hub, tmp_path, capsys):
    import gzip
    dest = tmp_path / "cache" / "raw" / "hh-rlhf" / "helpful-base" / "test.jsonl.gz"
    dest.parent.mkdir(parents=True)
    with gzip.open(dest, "wt") as f:
        f.write(json.dumps({"chosen": EGG + " a", "rejected": EGG + " b"}) + "\n" + '{"chosen": "x"}\n')
    with pytest.raises(SystemExit):
        run_main(lambda: hh_rlhf.main(["--out", str(tmp_path / "hh"), "--splits", "test"]))
    assert f"{dest}:2: expected a JSON object with string keys 'chosen' and 'rejected'" in capsys.readouterr().err
    assert not (tmp_path / "hh" / "test.jsonl").exists()


# ----------------------------------------------------------------------------- GSM8K


def test_gsm8k_convert_record():
    rec, _ = gsm8k.convert_record("How many?  ", "He has 3*4 = <<3*4=12>>12 and 1,000+12 = <<1000+12=1012>>1,012.\n#### 1,012")
    assert rec == {"prompt": "Question: How many?\nAnswer:",
                   "response": " He has 3*4 = 12 and 1,000+12 = 1,012. The answer is 1012."}
    assert extract_answer(rec["response"]) == 1012  # the built-in task's grader reads it
    assert gsm8k.convert_record("q", "no final line") == (None, "no '#### N' final answer")
    assert gsm8k.convert_record("q", "x\n#### twelve") == (None, "final answer is not a number")


def test_gsm8k_end_to_end(hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gsm8k, "EXPECTED_COUNTS", {"train": 3, "test": 2})  # the fixtures' sizes
    out = tmp_path / "gsm8k"
    gsm8k.main(["--out", str(out)])
    train = read_jsonl(out / "train.jsonl")
    assert train == [
        {"prompt": "Question: Lena bakes 4 trays of cookies with 12 cookies on each tray. She gives away 15 "
                   "cookies. How many cookies does she have left?\nAnswer:",
         "response": " Lena bakes 4*12 = 48 cookies.\nAfter giving some away, she has 48-15 = 33 cookies left. "
                     "The answer is 33."},
        {"prompt": "Question: A farm sells 617 eggs on Saturday and the same number of eggs on Sunday. How many "
                   "eggs does the farm sell over the weekend?\nAnswer:",
         "response": " Over the weekend the farm sells 617*2 = 1234 eggs. The answer is 1234."},
        {"prompt": "Question: Omar has $60. He spends a third of it on a book and $8 on lunch. How much money "
                   "does he have left?\nAnswer:",
         "response": " The book costs 60/3 = $20.\nHe spends 20+8 = $28 in total.\nSo he has 60-28 = $32 left. "
                     "The answer is 32."},
    ]
    assert [extract_answer(r["response"]) for r in train] == [33, 1234, 32]
    test = read_jsonl(out / "test.jsonl")
    assert [r["response"] for r in test] == [
        " The train travels 45*3 = 135 miles. The answer is 135.",
        " She gave away 7+5 = 12 stickers.\nShe has 20-12 = 8 stickers now. The answer is 8."]
    stdout = capsys.readouterr().out
    assert f"wrote {out / 'train.jsonl'}: 3 SFT-style records, skipped 0" in stdout
    n = len(hub.requests)
    gsm8k.main(["--out", str(tmp_path / "again"), "--splits", "test"])
    assert len(hub.requests) == n  # cached
    assert read_jsonl(tmp_path / "again" / "test.jsonl") == test


def test_gsm8k_cli_refuses_a_truncated_file(hub, tmp_path):
    """The module runs as documented (python -m data.gsm8k --out DIR). GitHub sends no sha256: a raw file
    with the wrong number of problems (here the 2-problem fixture for the 1,319-problem split) is an error,
    exit status 2, and nothing is cached as complete, so a fixed mirror is fetched again next time."""
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-m", "data.gsm8k", "--out", str(tmp_path / "g"), "--splits", "test"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "2 problems, GSM8K test has 1319 (a truncated or different file)" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "g").exists() and not os.listdir(tmp_path / "cache" / "raw" / "gsm8k")


# ----------------------------------------------------------------------------- MetaMathQA


def test_metamathqa_normalize_response():
    norm = metamathqa.normalize_response
    assert norm("So x = 4.\nThe answer is: 4") == " So x = 4. The answer is 4."
    assert norm("12 * 5 = 60\n#### 60\nThe answer is: 60") == " 12 * 5 = 60 The answer is 60."
    assert norm("$\\boxed{5}$.The answer is: 5.") == " $\\boxed{5}$. The answer is 5."
    assert norm("It is 1,250.\nThe answer is: -1,250") == " It is 1,250. The answer is -1250."
    assert norm("The answer is: (1, 2)") == " The answer is (1, 2)."  # not a grouped number: kept
    assert norm("no final answer here") is None
    assert norm("The answer is: ") is None


def test_metamathqa_end_to_end(hub, tmp_path, capsys):
    out = tmp_path / "mm"
    metamathqa.main(["--out", str(out)])
    assert read_jsonl(out / "train.jsonl") == [
        {"prompt": "Question: If Mia reads 12 pages a day, how many pages does she read in 5 days?\nAnswer:",
         "response": " Mia reads 12 pages a day for 5 days.\nSo she reads 12 * 5 = 60 pages in total. The answer is 60."},
        {"prompt": "Question: What is the value of $\\frac{3}{4} + \\frac{1}{8}$?\nAnswer:",
         "response": " We write $\\frac{3}{4}$ as $\\frac{6}{8}$, so the sum is $\\frac{6}{8} + \\frac{1}{8} = "
                     "\\boxed{\\frac{7}{8}}$. The answer is \\frac{7}{8}."},
        {"prompt": "Question: A store sells 250 shirts each week. How many shirts does it sell in x weeks if the "
                   "answer is 2500? What is the value of x?\nAnswer:",
         "response": " In x weeks the store sells 250x shirts.\nWe are given that 250x = 2,500, so x = 10.\n"
                     "The total is 2,500 shirts. The answer is 2500."},
    ]
    assert f"wrote {out / 'train.jsonl'}: 3 SFT-style records, skipped 0" in capsys.readouterr().out
    n = len(hub.requests)
    assert n == 1
    metamathqa.main(["--out", str(tmp_path / "gsm"), "--types", "GSM", "--limit", "1"])
    assert len(hub.requests) == n  # cached
    assert read_jsonl(tmp_path / "gsm" / "train.jsonl") == read_jsonl(out / "train.jsonl")[:1]
    metamathqa.main(["--out", str(tmp_path / "gsm2"), "--types", "GSM"])
    assert [extract_answer(r["response"]) for r in read_jsonl(tmp_path / "gsm2" / "train.jsonl")] == [60, 2500]
    assert "skipped 1: type MATH_AnsAug not selected" in capsys.readouterr().out


def test_metamathqa_json_array_reader(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(' \n[ {"a": 1} ,\n{"b": [2, 3]}\n]\n')
    assert list(metamathqa.iter_json_array(str(path))) == [(0, {"a": 1}), (1, {"b": [2, 3]})]
    path.write_text("[]")
    assert list(metamathqa.iter_json_array(str(path))) == []
    path.write_text('[{"a": 1},\n{"b": 2}\n{"c": 3}]')
    with pytest.raises(ValueError, match=r"a\.json:3: expected ',' or '\]'"):
        list(metamathqa.iter_json_array(str(path)))
    path.write_text('{"a": 1}')
    with pytest.raises(ValueError, match=r"a\.json:1: expected '\['"):
        list(metamathqa.iter_json_array(str(path)))


def test_fixtures_are_tiny():
    assert all(os.path.getsize(os.path.join(FIXTURES, f)) < 4096 for f in os.listdir(FIXTURES))
