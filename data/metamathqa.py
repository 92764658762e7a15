"""
MetaMathQA -> nanoDFT JSONL (SFT-style), in the same format as data/gsm8k.py and data/arith.py.

MetaMathQA (Yu et al., 2023) holds 395K math problems bootstrapped from the GSM8K and MATH training
sets (rephrased questions, backward reasoning, ...), the training set of the DFT paper's math
setting. The raw file is ONE JSON array (~400 MB) of objects

    {"query": "...", "response": "... step by step ...\\nThe answer is: 18",
     "type": "GSM_Rephrased", "original_question": "..."}

Each becomes

    {"prompt": "Question: {query}\\nAnswer:", "response": " {reasoning} The answer is 18."}

The closing "The answer is: X" is normalised to "The answer is X." (thousands commas dropped from a
plain number; a GSM8K-style "#### X" line right before it dropped), which data.arith.extract_answer
grades; records without it are skipped and counted.
The file comes from the dataset hub (repo meta-math/MetaMathQA) into $NANODFT_CACHE/raw/metamathqa/,
resumably and checked against the hub's sha256 ETag.

    python -m data.metamathqa --out data/metamathqa                      # all 395K -> train.jsonl
    python -m data.metamathqa --out data/metamathqa --types GSM --limit 20000
    python -m pytest -q tests/test_datasets.py
"""
import collections
import json
import os
import re

from common import ArgumentParser, Progress, run_main
from data.download import cache_dir, download, hf_url, write_jsonl_atomic
from data.gsm8k import format_prompt

REPO = "meta-math/MetaMathQA"
FILE = "MetaMathQA-395K.json"
_FINAL = re.compile(r"The answer is:?[ \t]*")
_GROUPED = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")  # 1,234 or -12,345.5
_WS = re.compile(r"\s*")
_HASHES = re.compile(r"(?:^|\n)[ \t]*####[^\n]*$")  # a trailing "#### N" line


def normalize_response(response: str):
    """' {reasoning} The answer is X.' from '{reasoning}\\nThe answer is: X',
    or None if it has none."""
    matches = list(_FINAL.finditer(response))
    if not matches:
        return None
    m = matches[-1]
    answer = response[m.end():].strip()
    if answer.endswith("."):
        answer = answer[:-1].rstrip()
    if not answer:
        return None
    if _GROUPED.fullmatch(answer):
        answer = answer.replace(",", "")
    # GSM-derived responses repeat GSM8K's "#### N" line just before "The answer is: N": drop it
    reasoning = _HASHES.sub("", response[: m.start()].rstrip()).strip()
    return f" {reasoning} The answer is {answer}." if reasoning else f" The answer is {answer}."


def iter_json_array(path: str):
    """Yield (index, object) from a file holding one JSON array, decoding one element at a time.

    json.load would build all 395K dicts at once (several GB); raw_decode on the text builds one
    at a time, so memory is the text (~400 MB) plus one record, and --limit stops early.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    dec = json.JSONDecoder()

    def fail(pos, what):
        line = text.count("\n", 0, pos) + 1
        raise ValueError(f"{path}:{line}: expected {what} "
                         "(MetaMathQA is one JSON array of objects)")

    i = _WS.match(text, 0).end()
    if not text.startswith("[", i):
        fail(i, "'['")
    i = _WS.match(text, i + 1).end()
    if text.startswith("]", i):
        return
    k = 0
    while True:
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            fail(e.pos, f"a JSON value ({e.msg})")
        yield k, obj
        k += 1
        i = _WS.match(text, i).end()
        if text.startswith(",", i):
            i = _WS.match(text, i + 1).end()
        elif text.startswith("]", i):
            return
        else:
            fail(i, "',' or ']'")


def convert_file(path: str, types, limit, skipped: collections.Counter):
    """Yield output records (at most `limit`), keeping types that start with one of `types`."""
    progress = Progress(f"converting {os.path.basename(path)}", total=limit, unit="records")
    n = 0
    try:
        for k, raw in iter_json_array(path):
            if limit is not None and n >= limit:
                break
            try:
                query, response, kind = raw["query"], raw["response"], raw.get("type", "")
                if not isinstance(query, str) or not isinstance(response, str):
                    raise TypeError("not strings")
            except (KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{path}: record {k}: expected an object with string keys "
                                 f"'query' and 'response' ({type(e).__name__}: {e})") from None
            if types and not any(str(kind).startswith(t) for t in types):
                skipped[f"type {kind} not selected"] += 1
                continue
            out = normalize_response(response)
            if out is None:
                skipped["no 'The answer is: X' at the end"] += 1
                continue
            n += 1
            progress.update()
            yield {"prompt": format_prompt(query), "response": out}
    finally:
        progress.close()


def fetch() -> str:
    """Path of the cached raw file, downloading it first if needed (~400 MB)."""
    dest = os.path.join(cache_dir("raw", "metamathqa"), FILE)
    return download(hf_url("dataset", REPO, FILE), dest, desc=f"metamathqa {FILE}")


def main(argv=None):
    p = ArgumentParser(description="Convert MetaMathQA to nanoDFT SFT-style JSONL.")
    p.add_argument("--out", default="data/metamathqa", help="output directory (gets train.jsonl)")
    p.add_argument("--limit", type=int, default=None,
                   help="write at most this many records (the first ones)")
    p.add_argument("--types", nargs="+", default=None,
                   help="keep only records whose type starts with one of these "
                        "(e.g. GSM, MATH_Rephrased)")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 0:
        raise ValueError(f"--limit must be >= 0, got {args.limit}")

    skipped = collections.Counter()
    out = os.path.join(args.out, "train.jsonl")
    n = write_jsonl_atomic(out, convert_file(fetch(), args.types, args.limit, skipped))
    print(f"wrote {out}: {n} SFT-style records, skipped {sum(skipped.values())}")
    for reason, k in skipped.most_common():
        print(f"  skipped {k}: {reason}")


if __name__ == "__main__":
    run_main(main)
