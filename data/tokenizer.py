"""
The GPT-2 tokenizer, offline.

GPT-2 uses byte-level BPE: text -> UTF-8 bytes -> pre-split by a regex -> merged by 50,000 ranked
merges (50,256 ranks with the 256 single bytes), plus one special token <|endoftext|> = 50256.
tiktoken does the fast BPE; we build its Encoding from the merge-rank file shipped beside this
module (data/gpt2.tiktoken, from the openai-whisper sdist, MIT licensed: see gpt2.tiktoken.LICENSE),
so nothing is fetched at run time.

    python -c "from data.tokenizer import *; print(get_tokenizer().encode('Hello world'))"
    # [15496, 995]
"""
import base64
import functools
import hashlib
import os

import tiktoken

EOT = 50256  # <|endoftext|>: GPT-2's only special token; ends every scored response
VOCAB_SIZE = 50257
RANKS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpt2.tiktoken")
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# GPT-2's pre-tokenizer: contractions, letter runs, digit runs, other runs, whitespace.
SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@functools.lru_cache(maxsize=None)
def get_tokenizer() -> tiktoken.Encoding:
    with open(RANKS_FILE, "rb") as f:
        raw = f.read()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != RANKS_SHA256:
        raise RuntimeError(f"{RANKS_FILE}: sha256 {digest} != expected {RANKS_SHA256}; "
                           "the file is corrupted or not the GPT-2 merge ranks")
    ranks = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    assert len(ranks) == EOT, f"expected {EOT} merge ranks, got {len(ranks)}"
    return tiktoken.Encoding(name="gpt2-offline", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": EOT})
