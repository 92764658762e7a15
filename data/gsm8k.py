"""
GSM8K -> nanoDFT JSONL (SFT-style), in the same answer format as the built-in task (data/arith.py).

GSM8K (Cobbe et al., 2021) has 7,473 train and 1,319 test grade-school math word problems. Each raw
answer is step-by-step reasoning with calculator annotations <<expr=value>>, then "#### N":

    {"question": "A box holds 12 pens. How many pens are in 3 boxes?",
     "answer": "3 boxes hold 3*12 = <<3*12=36>>36 pens.\\n#### 36"}

We drop the annotations (they are for a calculator tool, not text the model should produce) and
turn the "#### N" line into the built-in task's closing sentence, so data.arith.extract_answer and
is_correct grade GSM8K too:

    {"prompt": "Question: A box holds 12 pens. How many pens are in 3 boxes?\\nAnswer:",
     "response": " 3 boxes hold 3*12 = 36 pens. The answer is 36."}

Reasoning lines keep their newlines; thousands commas are removed from the final number only
("#### 1,234" -> "The answer is 1234."). Raw files come from the grade-school-math GitHub repository
($NANODFT_GITHUB_RAW_BASE) into the cache ($NANODFT_CACHE/raw/gsm8k/).

    python -m data.gsm8k --out data/gsm8k                 # train.jsonl (7473) and test.jsonl (1319)
    python -m data.gsm8k --out data/gsm8k --splits test
    python -m pytest -q tests/test_datasets.py
"""
import collections
import json
import os
import re

from common import ArgumentParser, Progress, run_main
from data.download import Expect, cache_dir, download, github_raw_url, write_jsonl_atomic

REPO, REF = "openai/grade-school-math", "master"
PATH = "grade_school_math/data/{split}.jsonl"
SPLITS = ("train", "test")
EXPECTED_COUNTS = {"train": 7473, "test": 1319}  # the published sizes: a cheap integrity check
PROMPT_TEMPLATE = "Question: {question}\nAnswer:"  # as data/arith.py writes its prompts
_ANNOTATION = re.compile(r"<<[^<>]*>>")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def format_prompt(question: str) -> str:
    return PROMPT_TEMPLATE.format(question=question.strip())


def convert_record(question: str, answer: str):
    """(record, None) or (None, reason) for one raw GSM8K problem."""
    reasoning, sep, final = answer.rpartition("####")
    if not sep:
        return None, "no '#### N' final answer"
    number = final.strip().replace(",", "")
    if not _NUMBER.fullmatch(number):
        return None, "final answer is not a number"
    reasoning = _ANNOTATION.sub("", reasoning).strip()
    response = f" {reasoning} The answer is {number}." if reasoning else f" The answer is {number}."
    return {"prompt": format_prompt(question), "response": response}, None


def convert_file(path: str, skipped: collections.Counter):
    """Yield output records from one raw GSM8K .jsonl file, counting skipped problems by reason."""
    progress = Progress(f"converting gsm8k {os.path.basename(path)}", unit="records")
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                    question, answer = raw["question"], raw["answer"]
                    if not isinstance(question, str) or not isinstance(answer, str):
                        raise TypeError("not strings")
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{path}:{lineno}: expected a JSON object with string keys "
                                     f"'question' and 'answer' ({type(e).__name__}: {e})") from None
                progress.update()
                rec, reason = convert_record(question, answer)
                if rec is None:
                    skipped[reason] += 1
                else:
                    yield rec
    finally:
        progress.close()


def check_raw(path: str, split: str):
    """GitHub sends no sha256: a raw file is accepted when it has exactly the split's problems,
    each a JSON line."""
    with open(path, encoding="utf-8") as f:
        n = sum(1 for line in f if line.strip())
    if n != EXPECTED_COUNTS[split]:
        raise ValueError(f"{path}: {n} problems, GSM8K {split} has {EXPECTED_COUNTS[split]} "
                         "(a truncated or different file)")


def fetch(split: str) -> str:
    """Path of the cached raw file, downloading (and checking) it first if needed."""
    dest = os.path.join(cache_dir("raw", "gsm8k"), f"{split}.jsonl")
    url = github_raw_url(REPO, REF, PATH.format(split=split))
    return download(url, dest, desc=f"gsm8k {split}.jsonl",
                    expect=Expect(verify=lambda p: check_raw(p, split)))


def main(argv=None):
    p = ArgumentParser(description="Convert GSM8K to nanoDFT SFT-style JSONL.")
    p.add_argument("--out", default="data/gsm8k", help="output directory (gets <split>.jsonl)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS,
                   help="splits to write")
    args = p.parse_args(argv)

    summary = []
    for split in args.splits:
        skipped = collections.Counter()
        out = os.path.join(args.out, f"{split}.jsonl")
        raw = fetch(split)
        check_raw(raw, split)  # a cached file from an older version may predate the check
        n = write_jsonl_atomic(out, convert_file(raw, skipped))
        summary.append((split, out, n, skipped))
    for split, out, n, skipped in summary:
        print(f"wrote {out}: {n} SFT-style records, skipped {sum(skipped.values())}")
        for reason, k in skipped.most_common():
            print(f"  skipped {k}: {reason}")



if __name__ == "__main__":
    run_main(main)
