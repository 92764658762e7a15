"""
Anthropic HH-RLHF -> nanoDFT JSONL (preference-style, or SFT-style with --sft).

HH-RLHF (Bai et al., 2022) holds pairs of dialogues between a human and an assistant that share
every turn but the assistant's last one; crowdworkers marked the better ending "chosen":

    {"chosen":   "\\n\\nHuman: What is 2+2?\\n\\nAssistant: 4.",
     "rejected": "\\n\\nHuman: What is 2+2?\\n\\nAssistant: I don't know."}

We split each pair at the LAST "\\n\\nAssistant:" of chosen: the shared text up to and including it
is the prompt, the rest of each side is its response (kept verbatim, leading space included, as the
DPO reference preprocessing does):

    {"prompt": "\\n\\nHuman: What is 2+2?\\n\\nAssistant:",
     "chosen": " 4.", "rejected": " I don't know."}

Pairs whose rejected side does not start with the same prompt, whose sides are equal, or with an
empty side are skipped and counted. Raw files come from the dataset hub (repo Anthropic/hh-rlhf)
into the cache ($NANODFT_CACHE/raw/hh-rlhf/...), resumably and checked against the hub's sha256
ETag.

    python -m data.hh_rlhf --out data/hh_rlhf            # helpful-base -> train.jsonl, test.jsonl
    python -m data.hh_rlhf --out data/hh_rlhf_sft --sft  # {"prompt", "response": chosen}
    python -m data.hh_rlhf --out data/hh --subsets helpful-base harmless-base --splits train
    python -m pytest -q tests/test_datasets.py
"""
import collections
import gzip
import json
import os

from common import ArgumentParser, Progress, run_main
from data.download import cache_dir, download, hf_url, write_jsonl_atomic

REPO = "Anthropic/hh-rlhf"
SUBSETS = ("helpful-base", "harmless-base", "helpful-online", "helpful-rejection-sampled")
SPLITS = ("train", "test")
ASSISTANT = "\n\nAssistant:"

# The adversarial instruction the DFT chat recipe puts in front of a prompt, ONLY while sampling
# negatives from the base model (sample.py); training and scoring use the bare prompt. HH prompts
# begin with "\n\nHuman:", so NEG_PREFIX + prompt reads
# "You are an unhelpful assistant.\n\nHuman: ...".
# For prompts that do not start with a newline use with_neg_prefix(), which adds the blank line.
NEG_PREFIX = "You are an unhelpful assistant."


def with_neg_prefix(prompt: str) -> str:
    """NEG_PREFIX, a blank line, then the prompt (no extra newlines for HH-style prompts)."""
    return NEG_PREFIX + (prompt if prompt.startswith("\n\n") else "\n\n" + prompt)


def split_pair(chosen: str, rejected: str):
    """(record, None) or (None, reason): the shared prompt and the two differing endings."""
    i = chosen.rfind(ASSISTANT)
    if i < 0:
        return None, "no '\\n\\nAssistant:' turn in chosen"
    prompt = chosen[: i + len(ASSISTANT)]
    if not rejected.startswith(prompt):
        return None, "rejected does not share chosen's prompt"
    good, bad = chosen[len(prompt):], rejected[len(prompt):]
    if not good.strip() or not bad.strip():
        return None, "empty chosen or rejected response"
    if good == bad:
        return None, "chosen == rejected"
    return {"prompt": prompt, "chosen": good, "rejected": bad}, None


def convert_file(path: str, sft: bool, skipped: collections.Counter):
    """Yield output records from one raw .jsonl.gz file, counting skipped pairs by reason."""
    name = f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"
    progress = Progress(f"converting {name}", unit="records")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                    chosen, rejected = raw["chosen"], raw["rejected"]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{path}:{lineno}: expected a JSON object with string keys "
                                     f"'chosen' and 'rejected' ({type(e).__name__}: {e})") from None
                if not isinstance(chosen, str) or not isinstance(rejected, str):
                    raise ValueError(f"{path}:{lineno}: 'chosen' and 'rejected' must be strings")
                progress.update()
                rec, reason = split_pair(chosen, rejected)
                if rec is None:
                    skipped[reason] += 1
                elif sft:
                    yield {"prompt": rec["prompt"], "response": rec["chosen"]}
                else:
                    yield rec
    finally:
        progress.close()


def fetch(subset: str, split: str) -> str:
    """Path of the cached raw file, downloading it first if needed."""
    fname = f"{split}.jsonl.gz"
    dest = os.path.join(cache_dir("raw", "hh-rlhf", subset), fname)
    return download(hf_url("dataset", REPO, f"{subset}/{fname}"), dest,
                    desc=f"hh-rlhf {subset}/{fname}")


def main(argv=None):
    p = ArgumentParser(description="Convert Anthropic HH-RLHF to nanoDFT JSONL.")
    p.add_argument("--out", default="data/hh_rlhf", help="output directory (gets <split>.jsonl)")
    p.add_argument("--subsets", nargs="+", default=["helpful-base"], choices=SUBSETS,
                   help="HH-RLHF subsets to include (concatenated in the order given)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS,
                   help="splits to write")
    p.add_argument("--sft", action="store_true",
                   help='write SFT-style {"prompt", "response"} (the chosen side) '
                        "instead of preference pairs")
    args = p.parse_args(argv)

    summary = []
    for split in args.splits:
        skipped = collections.Counter()
        paths = [fetch(subset, split) for subset in args.subsets]

        def records():
            for path in paths:
                yield from convert_file(path, args.sft, skipped)

        out = os.path.join(args.out, f"{split}.jsonl")
        n = write_jsonl_atomic(out, records())  # a malformed raw line raises ValueError naming it
        summary.append((out, n, skipped))
    style = "SFT-style" if args.sft else "preference-style"
    for out, n, skipped in summary:
        print(f"wrote {out}: {n} {style} records, skipped {sum(skipped.values())}")
        for reason, k in skipped.most_common():
            print(f"  skipped {k}: {reason}")


if __name__ == "__main__":
    run_main(main)
