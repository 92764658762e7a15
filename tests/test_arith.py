"""
Tests for data/arith.py: determinism, disjoint splits, correct worked answers, the grader, and small
token lengths.

    python -m pytest -q tests/test_arith.py
"""
import json
import os
import re
import subprocess
import sys

import pytest

from data import arith
from data.arith import (extract_answer, generate, generate_splits, is_correct, make_problem,
                        write_splits)
from data.format import load_jsonl
from data.tokenizer import get_tokenizer

SMALL = {"base": 2000, "train": 200, "val": 100, "test": 100}
EQ = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)\.")


def test_deterministic():
    a, b, c = generate(200, seed=0), generate(200, seed=0), generate(200, seed=1)
    assert a == b
    assert a != c
    assert len({p["prompt"] for p in a}) == 200  # distinct within a call


def test_splits_disjoint_and_stable(tmp_path):
    splits = generate_splits(seed=0, sizes=SMALL)
    assert {k: len(v) for k, v in splits.items()} == SMALL
    prompts = {k: {r["prompt"] for r in v} for k, v in splits.items()}
    for k in SMALL:
        assert len(prompts[k]) == SMALL[k]
        for k2 in SMALL:
            if k < k2:
                assert not prompts[k] & prompts[k2], (k, k2)
    # the small splits come first from the stream, so changing the base size leaves them unchanged
    other = generate_splits(seed=0, sizes={**SMALL, "base": 10})
    for k in ("test", "val", "train"):
        assert other[k] == splits[k]
    assert generate_splits(seed=1, sizes=SMALL)["test"] != splits["test"]


def check_problem(p):
    """Re-derive a problem from its prompt and response; assert everything agrees."""
    assert p["prompt"].startswith("Question: ") and p["prompt"].endswith("?\nAnswer:")
    assert p["response"].startswith(" ") and p["response"].endswith(f" The answer is {p['answer']}.")
    body = p["response"][:p["response"].index(" The answer is")]
    eqs = EQ.findall(body)
    assert " ".join(f"{a} {op} {b} = {c}." for a, op, b, c in eqs) == body.strip()  # nothing else there
    assert len(eqs) in (2, 3)
    nums_in_prompt = [int(n) for n in re.findall(r"\d+", p["prompt"])]
    assert nums_in_prompt == [int(eqs[0][0])] + [int(b) for _, _, b, _ in eqs]  # start, then operands
    value = int(eqs[0][0])
    for a, op, b, c in eqs:
        a, b, c = int(a), int(b), int(c)
        assert a == value  # each step continues from the previous result
        assert c == {"+": a + b, "-": a - b, "*": a * b}[op]
        assert 0 <= c <= arith.MAX_VALUE
        if op == "*":
            assert 2 <= b <= 5
        value = c
    assert value == p["answer"] == extract_answer(p["response"])
    assert is_correct(p["response"], p["response"])


def test_every_response_is_correct():
    ops = set()
    for p in generate(3000, seed=123):
        check_problem(p)
        ops |= set(re.findall(r" ([-+*]) ", p["response"]))
    assert ops == {"+", "-", "*"}


def test_n_steps():
    import random
    rng = random.Random(0)
    for n in (1, 2, 3, 4):
        p = make_problem(rng, n)
        assert len(EQ.findall(p["response"])) == n
    assert {len(EQ.findall(p["response"])) for p in generate(100, seed=0, steps=(3,))} == {3}


def test_token_lengths_small():
    tok = get_tokenizer()
    recs = generate(2000, seed=5)
    lens = [len(tok.encode_ordinary(r["prompt"])) + len(tok.encode_ordinary(r["response"])) + 1
            for r in recs]
    assert max(lens) <= 96
    # numbers are single tokens with their leading space (why the values stay small)
    for n in range(arith.MAX_VALUE + 1):
        assert len(tok.encode_ordinary(f" {n}")) == 1


def test_grader():
    assert extract_answer(" 7 + 5 = 12. The answer is 12.") == 12
    assert extract_answer("The answer is 12") == 12  # no final period
    assert extract_answer("the answer is -4.") == -4
    assert extract_answer("The answer is 1,234.") == 1234
    assert extract_answer("The answer is $7.") == 7
    assert extract_answer("The answer is 3.5.") is None
    assert extract_answer("The answer is 3.0.") == 3
    assert extract_answer("The answer is 5. Wait. The answer is 6. Bye") == 6  # the last one counts
    assert extract_answer("7 + 5 = 12.") is None
    assert extract_answer("The answer is unclear.") is None
    assert extract_answer("") is None
    gold = " 7 + 5 = 12. 12 - 3 = 9. The answer is 9."
    assert is_correct(" 7 + 5 = 12. 12 - 3 = 9. The answer is 9.", gold)
    assert is_correct(" 9. The answer is 9<|endoftext|> and more text", gold)
    assert not is_correct(" 7 + 5 = 12. 12 - 3 = 8. The answer is 8.", gold)
    assert not is_correct(" 7 + 5 = 12. 12 - 3 = 9.", gold)  # missing
    assert not is_correct("The answer is 9. No, the answer is 10.", gold)
    assert not is_correct("The answer is -9.", gold)
    assert not is_correct("The answer is 90.", gold)
    assert not is_correct("anything", "no gold answer")  # None never matches, even None == None


def test_write_splits_files(tmp_path):
    out = tmp_path / "arith"
    paths = write_splits(str(out), seed=0, sizes=SMALL)
    assert sorted(os.listdir(out)) == ["base.jsonl", "test.jsonl", "train.jsonl", "val.jsonl"]
    first = {k: open(p, "rb").read() for k, p in paths.items()}
    for split, n in SMALL.items():
        kind, recs = load_jsonl(paths[split])
        assert kind == "sft" and len(recs) == n
    line = first["train"].split(b"\n")[0].decode()
    assert set(json.loads(line)) == {"prompt", "response"}  # no other keys
    write_splits(str(out), seed=0, sizes=SMALL)
    assert {k: open(p, "rb").read() for k, p in paths.items()} == first  # byte-identical rerun


def test_ensure_default_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(arith, "DEFAULT_SIZES", SMALL)
    out = tmp_path / "arith"
    out.mkdir()
    (out / "train.jsonl").write_text("custom\n")
    paths = arith.ensure_default_data(str(out))
    assert "generating" in capsys.readouterr().err
    assert (out / "train.jsonl").read_text() == "custom\n"  # existing files are left alone
    assert len(load_jsonl(paths["test"]).records) == SMALL["test"]
    before = (out / "test.jsonl").stat().st_mtime_ns
    arith.ensure_default_data(str(out))  # nothing missing: a no-op
    assert "generating" not in capsys.readouterr().err
    assert (out / "test.jsonl").stat().st_mtime_ns == before


def test_cli(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "data.arith", "--out", str(out), "--seed", "3",
                        "--n-base", "30", "--n-train", "20", "--n-val", "10", "--n-test", "10"],
                       cwd=root, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr and "train.jsonl" in r.stderr
    assert len(load_jsonl(str(out / "base.jsonl")).records) == 30
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


@pytest.mark.parametrize("seed", [0, 7])
def test_generated_split_problems_check(seed):
    sizes = {"base": 300, "train": 50, "val": 20, "test": 20}
    splits = generate_splits(seed=seed, sizes=sizes)
    for split in ("train", "val", "test"):  # the fine-tuning and held-out splits are clean
        for p in splits[split]:
            check_problem(p)
    # the base split holds the same problems as with no flaw, each worked answer either whole or
    # stopped one step short (arith.flawed), at about FLAW_RATE
    clean = generate_splits(seed=seed, sizes=sizes, flaw_rate=0)["base"]
    assert len(splits["base"]) == len(clean) == sizes["base"]
    short = 0
    for p, whole in zip(splits["base"], clean):
        check_problem(whole)
        short += p != whole
        assert p in (whole, arith.stop_early(whole))
        assert (p == whole) == is_correct(p["response"], whole["response"])
    assert abs(short / len(clean) - arith.FLAW_RATE) < 0.1


def test_checker_helpers_and_grade():
    """The task's checker as the rest of the project uses it: which field holds the gold answer,
    whether every one is checkable, and per text (correct, identical to the gold answer)."""
    sft = [{"prompt": "Q", "response": " 1 + 1 = 2. The answer is 2."}]
    pref = [{"prompt": "Q", "chosen": " The answer is 2.", "rejected": " The answer is 3."}]
    assert arith.gold_key(sft) == "response" and arith.gold_key(pref) == "chosen"
    assert arith.has_checker(sft) and arith.has_checker(pref)
    unchecked = sft + [{"prompt": "Q", "response": " hello"}]
    assert not arith.has_checker(unchecked)
    with pytest.raises(ValueError, match="--x needs checkable answers"):
        arith.require_checker(unchecked, "--x")
    gold = sft[0]["response"]
    texts = [[(" The answer is 2.", True), (gold, True), (gold, False),
              (" The answer is 3.", True)]]
    # identical needs the same text AND its end (EOT): a cut-off copy is not the answer given
    assert arith.grade(sft, texts) == [[(True, False), (True, True), (True, False), (False, False)]]


def test_stop_early_is_the_answer_before_the_last_step():
    p = {"prompt": "Q", "response": " 7 + 5 = 12. 12 - 3 = 9. 9 * 2 = 18. The answer is 18.",
         "answer": 18}
    short = arith.stop_early(p)
    assert short["response"] == " 7 + 5 = 12. 12 - 3 = 9. The answer is 9." and short["answer"] == 9
    assert arith.mistake(short["response"], p["response"]) == "stops early"


def test_the_flaw_is_in_the_base_split_only_and_stable_under_its_size():
    small = generate_splits(seed=0, sizes={"base": 300, "train": 50, "val": 20, "test": 20})
    large = generate_splits(seed=0, sizes={"base": 900, "train": 50, "val": 20, "test": 20})
    # the first N base problems are flawed the same way whatever the split's size
    assert large["base"][:300] == small["base"]
    for split in ("train", "val", "test"):  # the splits a method is trained and judged on are clean
        for p in small[split]:
            assert arith.mistake(p["response"], p["response"]) == "correct"
            assert len(arith.STEP.findall(p["response"])) in (2, 3)
    kinds = [arith.mistake(p["response"], q["response"])
             for p, q in zip(small["base"], generate_splits(
                 seed=0, sizes={"base": 300, "train": 50, "val": 20, "test": 20},
                 flaw_rate=0)["base"])]
    assert set(kinds) == {"correct", "stops early"}
    assert generate_splits(seed=0, sizes={"base": 300}, flaw_rate=0)["base"] != small["base"]


def test_mistake_kinds():
    gold = " 7 + 5 = 12. 12 - 3 = 9. The answer is 9."
    cases = {gold: "correct", " 7 + 5 = 12. The answer is 12.": "stops early",
             " 7 + 5 = 13. 13 - 3 = 10. The answer is 10.": "arithmetic slip",
             " 7 + 6 = 13. 13 - 3 = 10. The answer is 10.": "wrong step",
             " 7 + 5 = 12. 12 - 3 = 9. 9 + 1 = 10. The answer is 10.": "extra step",
             " The answer is 8.": "no working", " 7 + 5 = 12.": "no answer"}
    for completion, kind in cases.items():
        assert arith.mistake(completion, gold) == kind, completion
    assert set(cases.values()) == set(arith.MISTAKES)
