"""
Tests for data/format.py: JSONL validation errors, tokenization + truncation, and the batch/label/mask
convention.

    python -m pytest -q tests/test_format.py
"""
import json
import random

import pytest
import torch

from data.format import DataError, collate, encode_ids, load_jsonl, pack, tokenize, truncation_report
from data.tokenizer import EOT, get_tokenizer

E = EOT


def write(tmp_path, lines, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(p)


def sft(prompt="Q", response="A", **extra):
    return json.dumps({"prompt": prompt, "response": response, **extra})


def pref(prompt="Q", chosen="good", rejected="bad"):
    return json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected})


# ---------------------------------------------------------------- load_jsonl

def test_load_sft_blank_lines_and_extra_keys(tmp_path):
    path = write(tmp_path, [sft("a", "b", id=7), "", "   ", sft("c", "d")])
    kind, records = load_jsonl(path)
    assert kind == "sft"
    assert records == [{"prompt": "a", "response": "b"}, {"prompt": "c", "response": "d"}]


def test_load_pref_detected(tmp_path):
    path = write(tmp_path, [pref("p", "c", "r"), pref()])
    data = load_jsonl(path)
    assert data.kind == "pref"
    assert data.records[0] == {"prompt": "p", "chosen": "c", "rejected": "r"}


def test_malformed_json_names_file_and_line(tmp_path):
    path = write(tmp_path, [sft(), '{"prompt": "a" "response": "b"}'])
    with pytest.raises(DataError) as e:
        load_jsonl(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:2: invalid JSON (")
    assert "column" in msg and "\n" not in msg


def test_missing_field(tmp_path):
    path = write(tmp_path, [sft(), sft(), json.dumps({"prompt": "a"})])
    with pytest.raises(DataError) as e:
        load_jsonl(path)
    assert str(e.value) == (f'{path}:3: expected a JSON object with string fields "prompt" and '
                            f"\"response\", got keys ['prompt']")


def test_missing_field_first_record(tmp_path):
    path = write(tmp_path, [json.dumps({"prompt": "a", "answer": "b"})])
    with pytest.raises(DataError, match=r":1: expected a JSON object .*got keys \['answer', 'prompt'\]"):
        load_jsonl(path)


def test_empty_response_after_strip(tmp_path):
    path = write(tmp_path, [sft(), sft(), sft("q", "  \n ")])
    with pytest.raises(DataError) as e:
        load_jsonl(path)
    assert str(e.value) == f'{path}:3: empty "response"'


def test_empty_prompt_and_empty_rejected(tmp_path):
    with pytest.raises(DataError, match=r':1: empty "prompt"'):
        load_jsonl(write(tmp_path, [sft("", "x")], "a.jsonl"))
    with pytest.raises(DataError, match=r':2: empty "rejected"'):
        load_jsonl(write(tmp_path, [pref(), pref(rejected=" ")], "b.jsonl"))


def test_non_string_field_and_non_object(tmp_path):
    with pytest.raises(DataError, match=r':1: field "response" must be a string, got int'):
        load_jsonl(write(tmp_path, [json.dumps({"prompt": "a", "response": 3})], "a.jsonl"))
    with pytest.raises(DataError, match=r":2: expected a JSON object .* got list"):
        load_jsonl(write(tmp_path, [sft(), "[1, 2]"], "b.jsonl"))


def test_mixed_kinds(tmp_path):
    with pytest.raises(DataError, match=r":3: pref-style record in a sft-style file \(line 1"):
        load_jsonl(write(tmp_path, [sft(), "", pref()], "a.jsonl"))
    with pytest.raises(DataError, match=r":2: sft-style record in a pref-style file"):
        load_jsonl(write(tmp_path, [pref(), sft()], "b.jsonl"))


def test_forced_kind(tmp_path):
    path = write(tmp_path, [sft()])
    with pytest.raises(DataError, match=r":1: sft-style record in a pref-style file"):
        load_jsonl(path, kind="pref")
    assert load_jsonl(path, kind="sft").kind == "sft"


def test_empty_file(tmp_path):
    for name, lines in [("a.jsonl", []), ("b.jsonl", ["", "  "])]:
        path = write(tmp_path, lines, name)
        with pytest.raises(DataError) as e:
            load_jsonl(path)
        assert str(e.value) == f"{path}: empty file, expected JSONL"


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_jsonl(str(tmp_path / "nope.jsonl"))


# ---------------------------------------------------------------- encode_ids / encode_example

def test_encode_no_truncation():
    assert encode_ids([1, 2, 3], [4, 5], max_len=10, max_prompt_len=2) == ([1, 2, 3, 4, 5, E], 3, False)
    # exactly max_len fits
    assert encode_ids([1, 2, 3], [4, 5], max_len=6, max_prompt_len=2) == ([1, 2, 3, 4, 5, E], 3, False)


def test_encode_prompt_cut_from_start_only_as_needed():
    # 5 + 2 + 1 = 8 > 6: drop 2 prompt tokens from the start; the response keeps its EOT
    assert encode_ids([1, 2, 3, 4, 5], [6, 7], max_len=6, max_prompt_len=2) == ([3, 4, 5, 6, 7, E], 3, True)


def test_encode_prompt_to_max_prompt_len_then_response_cut_without_eot():
    ids, n_prompt, cut = encode_ids([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], max_len=6, max_prompt_len=2)
    assert (ids, n_prompt, cut) == ([4, 5, 6, 7, 8, 9], 2, True)
    assert E not in ids


def test_encode_short_prompt_never_cut():
    # the prompt (1 token) is already below max_prompt_len: only the response is cut
    assert encode_ids([1], [2, 3, 4, 5, 6, 7, 8, 9], max_len=4, max_prompt_len=2) == ([1, 2, 3, 4], 1, True)


def test_encode_cut_exactly_at_eot():
    # prompt cannot shrink (already max_prompt_len); the response fits but its EOT does not
    assert encode_ids([1, 2], [3, 4], max_len=4, max_prompt_len=2) == ([1, 2, 3, 4], 2, True)


def test_encode_eos_false():
    assert encode_ids([1, 2], [3, 4], max_len=10, max_prompt_len=1, eos=False) == ([1, 2, 3, 4], 2, False)
    assert encode_ids([1, 2], [3, 4], max_len=4, max_prompt_len=1, eos=False) == ([1, 2, 3, 4], 2, False)
    assert encode_ids([1, 2], [3, 4], max_len=3, max_prompt_len=1, eos=False) == ([2, 3, 4], 1, True)


def test_encode_bad_arguments():
    with pytest.raises(ValueError, match="max_prompt_len"):
        encode_ids([1], [2], max_len=4, max_prompt_len=4)
    with pytest.raises(ValueError, match="empty prompt"):
        encode_ids([], [2], max_len=4, max_prompt_len=2)
    with pytest.raises(ValueError, match="nothing to score"):
        encode_ids([1], [], max_len=4, max_prompt_len=2, eos=False)


def test_encode_random_against_rules():
    rng = random.Random(0)
    for _ in range(2000):
        p = [rng.randrange(100) for _ in range(rng.randint(1, 12))]
        r = [rng.randrange(100) for _ in range(rng.randint(0, 12))]
        max_len = rng.randint(2, 20)
        mpl = rng.randint(1, max_len - 1)
        ids, n_prompt, cut = encode_ids(p, r, max_len, mpl)
        full = p + r + [E]
        assert cut == (len(full) > max_len)
        assert len(ids) == min(len(full), max_len)
        assert ids[:n_prompt] == p[len(p) - n_prompt:]  # a suffix of the prompt
        assert ids[n_prompt:] == (r + [E])[:len(ids) - n_prompt]  # a prefix of response + EOT
        assert n_prompt >= min(len(p), mpl)  # never cut below max_prompt_len
        if ids[n_prompt:] != r + [E]:  # response (or its EOT) cut -> only after the prompt hit its floor
            assert n_prompt == min(len(p), mpl)
        if n_prompt < len(p) and ids[n_prompt:] == r + [E]:  # prompt cut just enough: no slack left
            assert len(ids) == max_len


def test_tokenize_text_and_boundary():
    tok = get_tokenizer()
    prompt, response = "Question: 2 + 3?\nAnswer:", " 5. The answer is 5."
    pos, negs, cut = tokenize(tok, [{"prompt": prompt, "response": response}], max_len=64, max_prompt_len=32)
    assert pos[0][0] == tok.encode_ordinary(prompt) + tok.encode_ordinary(response) + [E]
    assert pos[0][1] == len(tok.encode_ordinary(prompt)) and cut == [False] and negs == [[]]


def test_endoftext_in_text_is_plain_text():
    tok = get_tokenizer()
    (ids, n_prompt), = tokenize(tok, [{"prompt": "a <|endoftext|> b", "response": " c<|endoftext|>"}], 64, 32)[0]
    assert ids[-1] == E and E not in ids[:-1]
    assert tok.decode(ids[:-1]) == "a <|endoftext|> b c<|endoftext|>"


def test_tokenize_counts_truncation():
    tok = get_tokenizer()
    records = [{"prompt": "Hi", "response": " there"},
               {"prompt": "Hi", "response": " one two three four five six seven eight"}]
    pos, _, cut = tokenize(tok, records, max_len=6, max_prompt_len=2)
    assert cut == [False, True] and len(pos[1][0]) == 6
    assert truncation_report(sum(cut), len(pos), 6) == "cut 1 of 2 examples to max_len=6"
    assert truncation_report(3, 1000, 256, 128) == "cut 3 of 1000 examples to max_len=256 (max_prompt_len=128)"


def test_tokenize_negatives_share_the_positive_prompt():
    """Rejected responses and sampled negatives are scored on the same (cut) prompt as their positive;
    a sampled negative that ran out of tokens (eos False) gets no EOT."""
    tok = get_tokenizer()
    pref = [{"prompt": "Q: 1+1?", "chosen": " 2", "rejected": " 3"}]
    pos, negs, _ = tokenize(tok, pref, 16, 8, "rejected")
    p = tok.encode_ordinary("Q: 1+1?")
    assert pos[0] == (p + tok.encode_ordinary(" 2") + [E], len(p))
    assert negs[0] == [(p + tok.encode_ordinary(" 3") + [E], len(p))]
    pos, negs, _ = tokenize(tok, [{"prompt": "Q: 1+1?", "response": " 2"}], 16, 8, [[([11, 12], True), ([13], False)]])
    assert negs[0] == [(p + [11, 12, E], len(p)), (p + [13], len(p))]


# ---------------------------------------------------------------- collate

def test_collate_hand_case():
    x, y, mask = collate([([1, 2, 3, 4, 5], 2), ([6, 7, 8], 1, False)])
    assert x.dtype == torch.long and y.dtype == torch.long and mask.dtype == torch.bool
    assert x.tolist() == [[1, 2, 3, 4], [6, 7, E, E]]
    assert y.tolist() == [[2, 3, 4, 5], [7, 8, E, E]]
    # row 0: prompt [1, 2]; targets 3, 4, 5 are scored. row 1: prompt [6]; targets 7, 8 scored; padding not
    assert mask.tolist() == [[False, True, True, True], [True, True, False, False]]


def test_collate_pad_id_and_scored_tokens_match_encode():
    ids, n_prompt, _ = encode_ids([10, 11, 12], [20, 21], max_len=16, max_prompt_len=4)
    x, y, mask = collate([(ids, n_prompt), ([1, 2], 1)], pad_id=0)
    assert x.shape == y.shape == mask.shape == (2, 5)
    assert y[0][mask[0]].tolist() == [20, 21, E]  # exactly the response tokens + EOT
    assert x[1].tolist() == [1, 0, 0, 0, 0] and mask[1].tolist() == [True, False, False, False, False]


def test_collate_rejects_bad_n_prompt():
    with pytest.raises(ValueError, match="n_prompt=0"):
        collate([([1, 2, 3], 0)])
    with pytest.raises(ValueError, match="n_prompt=3"):
        collate([([1, 2, 3], 3)])


def test_pack_lays_sequences_end_to_end():
    seqs = [([1, 2, 3, 4, 5], 2), ([6, 7, 8], 1), ([9, 10], 1), ([11, 12, 13, 14, 15, 16, 17, 18, 19], 4)]
    x, y, mask, pos, doc = pack(seqs)
    assert x.shape[0] < len(seqs) and x.shape[1] >= 8  # fewer rows than sequences, each at least the longest
    for i, (ids, n) in enumerate(seqs):
        r, cols = (doc == i).nonzero(as_tuple=True)
        assert len(set(r.tolist())) == 1 and cols.tolist() == list(range(cols[0], cols[0] + len(ids) - 1))  # contiguous
        assert x[r, cols].tolist() == ids[:-1] and y[r, cols].tolist() == ids[1:] and pos[r, cols].tolist() == list(range(len(ids) - 1))
        assert mask[r, cols].tolist() == [t + 1 >= n for t in range(len(ids) - 1)]  # the same label mask as collate
    assert (mask & (doc < 0)).sum() == 0 and (doc >= 0).sum() == sum(len(s[0]) - 1 for s in seqs)
