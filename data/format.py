"""
The data format, in one place: reading JSONL, tokenizing with truncation, and building batches.

Two JSONL formats (one JSON object per line; blank lines are skipped; extra keys are ignored):

    SFT-style         {"prompt": "Question: ...\\nAnswer:",
                       "response": " 7 + 5 = 12. The answer is 12."}
    preference-style  {"prompt": "...", "chosen": "...", "rejected": "..."}

A file holds one kind only (detected from its first record, or forced with kind="sft"/"pref").
Every text field must be a string that is non-empty after stripping whitespace. Bad input raises
DataError with "path:line: what was expected", e.g.
    data/train.jsonl:17: expected a JSON object with string fields "prompt" and "response", got list

Tokenization of one example (prompt and response are encoded separately, then concatenated, so the
prompt/response boundary is exact; "<|endoftext|>" written inside the text is plain text, never the
special token):

    ids = enc(prompt) + enc(response) + [EOT]              n_prompt = len(enc(prompt))

Scored tokens are the response tokens and the closing EOT. Truncation when len(ids) > max_len:
  1. keep the END of the prompt: cut tokens from its start, only as many as needed, but never below
     max_prompt_len tokens (a prompt already shorter than max_prompt_len is never cut);
  2. if it still does not fit, cut the END of response+[EOT] at max_len: a cut response has no EOT.
So a response is cut only when the prompt, already at max_prompt_len, leaves too little room.
Sampled negatives that stopped at max_new_tokens carry no EOT (eos=False): nothing is appended.

Batch / label convention (collate): for ids of length L, inputs x = ids[:-1], targets y = ids[1:],
mask[t] = True iff y[t] is scored, i.e. t + 1 >= n_prompt. Right-padded with EOT in x and y, mask
False on padding. x (N, T) long, y (N, T) long, mask (N, T) bool, T = max L - 1.

    python -m data.format data/arith/train.jsonl --max-len 256 --max-prompt-len 128   # check a file
    python -m pytest -q tests/test_format.py
"""
import json
from typing import NamedTuple

import torch

from common import ArgumentParser, run_main
from data import arith
from data.tokenizer import EOT, get_tokenizer

FIELDS = {"sft": ("prompt", "response"), "pref": ("prompt", "chosen", "rejected")}


MAX_LEN_HELP = ("max tokens of prompt + response + EOT; a longer example is cut "
                "(see --max-prompt-len)")
MAX_PROMPT_LEN_HELP = ("when an example is longer than --max-len, its prompt loses tokens from its "
                       "start, but never below this many; then the end of the response is cut")


def resolve_lengths(block_size, max_len=None, max_prompt_len=None):
    """--max-len and --max-prompt-len of every script, resolved for a model of block_size positions:
    max_len defaults to min(1024, block_size), max_prompt_len to max_len // 2. -> (max_len,
    max_prompt_len); a value that cannot work is a ValueError naming the flag."""
    max_len = max_len or min(1024, block_size)
    if max_len > block_size:
        raise ValueError(f"--max-len {max_len} exceeds the model's block size {block_size}")
    max_prompt_len = max_prompt_len or max_len // 2
    if max_prompt_len >= max_len:
        raise ValueError(f"--max-prompt-len ({max_prompt_len}) must be < --max-len ({max_len})")
    return max_len, max_prompt_len


class DataError(ValueError):
    """Bad input data; the message names the file and line and says what was expected."""


class Jsonl(NamedTuple):
    kind: str  # "sft" or "pref"
    records: list  # dicts holding only the keys of FIELDS[kind]


def _expected(kind):
    if kind == "pref":
        names = '"prompt", "chosen" and "rejected"'
    else:
        names = " and ".join(f'"{f}"' for f in FIELDS[kind])
    return f"expected a JSON object with string fields {names}"


def _detect_kind(obj):
    # chosen+rejected wins: a preference record may carry an extra "response" key, which is ignored.
    if "chosen" in obj and "rejected" in obj:
        return "pref"
    if "response" in obj:
        return "sft"
    return None


def load_jsonl(path, kind=None) -> Jsonl:
    """Read and validate a JSONL file. Returns Jsonl(kind, records);
    `kind, records = load_jsonl(p)`."""
    if kind not in (None, "sft", "pref"):
        raise ValueError(f'kind must be None, "sft" or "pref", got {kind!r}')
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file, expected a JSONL file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a JSONL file") from None
    records, first_line = [], None
    with f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: not valid UTF-8 "
                                f"({e.reason} at byte {e.start})") from None
            if lineno == 1:
                line = line.lstrip("\ufeff")  # tolerate a byte-order mark
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{where}: {_expected(kind or 'sft')}, got {type(obj).__name__}")
            if kind is None:  # auto-detect from the first record
                kind = _detect_kind(obj)
                if kind is None:
                    raise DataError(f'{where}: {_expected("sft")} '
                                    '(or "prompt", "chosen", "rejected"), '
                                    f"got keys {sorted(obj)}")
            if first_line is None:
                first_line = lineno
            fields = FIELDS[kind]
            if not all(k in obj for k in fields):
                other = "sft" if kind == "pref" else "pref"
                if _detect_kind(obj) == other:
                    raise DataError(f"{where}: {other}-style record in a {kind}-style file (line "
                                    f"{first_line} was {kind}-style); a file holds one kind only")
                raise DataError(f"{where}: {_expected(kind)}, got keys {sorted(obj)}")
            for k in fields:
                if not isinstance(obj[k], str):
                    raise DataError(f'{where}: field "{k}" must be a string, '
                                    f"got {type(obj[k]).__name__}")
                if not obj[k].strip():
                    raise DataError(f'{where}: empty "{k}"')
            records.append({k: obj[k] for k in fields})
    if not records:
        raise DataError(f"{path}: empty file, expected JSONL")
    return Jsonl(kind, records)


def encode_ids(prompt_ids, response_ids, max_len, max_prompt_len, eos=True):
    """Token-level tokenization + truncation (see module docstring).

    Returns (ids, n_prompt, truncated). eos=False: the response gets no EOT (a sampled negative that
    ran out of tokens)."""
    if not 1 <= max_prompt_len < max_len:
        raise ValueError(f"need 1 <= max_prompt_len < max_len, "
                         f"got max_prompt_len={max_prompt_len}, max_len={max_len}")
    if len(prompt_ids) == 0:
        # the first response token is predicted from the last prompt token: no prompt, no score
        raise ValueError("empty prompt: at least one prompt token is needed to score the response")
    tail = list(response_ids) + ([EOT] if eos else [])
    if len(tail) == 0:
        raise ValueError("empty response with eos=False: nothing to score")
    prompt_ids = list(prompt_ids)
    if len(prompt_ids) + len(tail) <= max_len:
        return prompt_ids + tail, len(prompt_ids), False
    # 1. keep the end of the prompt: drop from its start only what is needed, never below
    #    max_prompt_len
    keep = min(len(prompt_ids), max(max_prompt_len, max_len - len(tail)))
    prompt_ids = prompt_ids[len(prompt_ids) - keep:]
    # 2. cut the end of response+EOT (a no-op if the prompt cut was enough); a cut response has
    #    no EOT
    tail = tail[:max_len - keep]
    return prompt_ids + tail, keep, True


def tokenize(tok, records, max_len, max_prompt_len, negatives=None):
    """The one tokenization path of training and evaluation: every record's positive and its
    negatives.

    records: dicts with prompt + response (SFT-style) or prompt + chosen + rejected; the positive is
    the "response" or the "chosen". negatives: None; "rejected" (each record's rejected response is
    its one negative); or per record a list of (token ids, eos) sampled from a model (sample.py),
    which are scored on the bare prompt. Uses encode_ordinary: "<|endoftext|>" in the text stays
    plain text. Returns (pos, negs, cut): pos[i] = (ids, n_prompt); negs[i] = a list of (ids,
    n_prompt), empty without negatives; cut[i] = True when positive i was cut to max_len."""
    key = "chosen" if "chosen" in records[0] else "response"
    prompts = tok.encode_ordinary_batch([r["prompt"] for r in records])
    responses = tok.encode_ordinary_batch([r[key] for r in records])
    if negatives == "rejected":
        rejected = tok.encode_ordinary_batch([r["rejected"] for r in records])
        negatives = [[(ids, True)] for ids in rejected]
    pos, negs, cut = [], [], []
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids, n_prompt, was_cut = encode_ids(p, r, max_len, max_prompt_len)
        pos.append((ids, n_prompt))
        cut.append(was_cut)
        record_negs = negatives[i] if negatives else []
        negs.append([encode_ids(p, n, max_len, max_prompt_len, eos=e)[:2] for n, e in record_negs])
    return pos, negs, cut


def truncation_report(n_truncated, n_total, max_len, max_prompt_len=None, what="examples"):
    """One line for the log, e.g. 'cut 3 of 1000 examples to max_len=256 (max_prompt_len=128)'."""
    extra = f" (max_prompt_len={max_prompt_len})" if max_prompt_len is not None else ""
    return f"cut {n_truncated} of {n_total} {what} to max_len={max_len}{extra}"


def collate(seqs, pad_id=EOT):
    """seqs: list of (ids, n_prompt[, ...]) -> x (N, T) long, y (N, T) long, mask (N, T) bool.

    x = ids[:-1], y = ids[1:], mask[t] = t + 1 >= n_prompt;
    right-padded with pad_id, mask False there."""
    if len(seqs) == 0:
        raise ValueError("collate: empty batch")
    T = max(len(s[0]) for s in seqs) - 1
    x = torch.full((len(seqs), T), pad_id, dtype=torch.long)  # (N, T)
    y = torch.full((len(seqs), T), pad_id, dtype=torch.long)  # (N, T)
    mask = torch.zeros((len(seqs), T), dtype=torch.bool)  # (N, T)
    for i, s in enumerate(seqs):
        ids, n_prompt = s[0], s[1]
        L = len(ids)
        if not 1 <= n_prompt < L:
            raise ValueError(f"collate: sequence {i} has n_prompt={n_prompt} and length {L}; "
                             "need 1 <= n_prompt < length "
                             "(a prompt token, and at least one scored token)")
        t = torch.as_tensor(ids, dtype=torch.long)  # (L,)
        x[i, :L - 1] = t[:-1]
        y[i, :L - 1] = t[1:]
        # y[t] = ids[t+1] is a response token (or the closing EOT) iff t + 1 >= n_prompt
        mask[i, n_prompt - 1:L - 1] = True
    return x, y, mask


def _first_fit(lens, T):
    """Longest first, each into the first row with room: [[sequence indices, tokens used], ...]."""
    rows = []
    for i in sorted(range(len(lens)), key=lambda i: -lens[i]):
        row = next((r for r in rows if r[1] + lens[i] <= T), None)
        if row is None:
            row = [[], 0]
            rows.append(row)
        row[0].append(i)
        row[1] += lens[i]
    return rows


def _row_len(lens):
    """The shortest row length (>= the longest sequence) that fits everything into as few rows as
    rows of twice the longest would: rows come out evenly full, so little of the last one is
    padding."""
    longest, total = max(lens), sum(lens)
    n_rows = len(_first_fit(lens, 2 * longest))
    lo, hi = max(longest, -(-total // n_rows)), 2 * longest
    # first fit needs no more rows as rows get longer: bisect for the shortest that works
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if len(_first_fit(lens, mid)) <= n_rows else (mid + 1, hi)
    return lo


def pack(seqs, row_len=None, pad_id=EOT):
    """Packing: the sequences' inputs laid end to end in rows of row_len tokens (longest first, each
    into the first row with room), so a batch holds almost no padding. row_len defaults to
    _row_len's choice.
    -> x, y, mask (as collate, per row), pos (R, T) each token's position within its own sequence,
    and doc (R, T) the index in seqs of the sequence it belongs to (-1: padding).
    model.logps(x, y, mask, pos, doc) keeps attention inside each sequence and returns one log-prob
    per sequence, in seqs order."""
    if len(seqs) == 0:
        raise ValueError("pack: empty batch")
    lens = [len(s[0]) - 1 for s in seqs]  # inputs are ids[:-1]
    T = row_len or _row_len(lens)
    rows = _first_fit(lens, T)
    x, y = (torch.full((len(rows), T), pad_id, dtype=torch.long) for _ in range(2))  # (R, T) each
    mask = torch.zeros(len(rows), T, dtype=torch.bool)
    pos = torch.zeros(len(rows), T, dtype=torch.long)
    doc = torch.full((len(rows), T), -1, dtype=torch.long)
    for r, (members, _) in enumerate(rows):
        at = 0
        for i in members:
            # (1, L) each: one sequence's inputs, targets, mask
            sx, sy, sm = collate([seqs[i]], pad_id)
            L = sx.shape[1]
            x[r, at:at + L], y[r, at:at + L], mask[r, at:at + L] = sx[0], sy[0], sm[0]
            pos[r, at:at + L], doc[r, at:at + L] = torch.arange(L), i
            at += L
    return x, y, mask, pos, doc


def main():
    p = ArgumentParser(description="Validate a JSONL file and report token lengths and truncation.")
    p.add_argument("path", help="JSONL file, SFT-style or preference-style")
    p.add_argument("--kind", choices=["sft", "pref"], default=None,
                   help="force the format (default: detected from the first record)")
    p.add_argument("--max-len", type=int, default=256, help=MAX_LEN_HELP)
    p.add_argument("--max-prompt-len", type=int, default=128, help=MAX_PROMPT_LEN_HELP)
    args = p.parse_args()
    arith.ensure_default_file(args.path)  # a fresh clone: generate the built-in task
    kind, records = load_jsonl(args.path, args.kind)
    tok = get_tokenizer()
    print(f"{args.path}: {len(records)} {kind}-style records")
    negatives = "rejected" if kind == "pref" else None
    pos, negs, cut = tokenize(tok, records, args.max_len, args.max_prompt_len, negatives)
    positive = "chosen" if kind == "pref" else "response"
    for field, seqs in ((positive, pos), ("rejected", [n[0] for n in negs if n])):
        if seqs:
            lens = sorted(len(s[0]) for s in seqs)
            print(f"  prompt+{field}+EOT tokens: median {lens[len(lens) // 2]}, max {lens[-1]}")
    print("  " + truncation_report(sum(cut), len(pos), args.max_len, args.max_prompt_len))


if __name__ == "__main__":
    run_main(main)
