"""bench.py: the synthetic batches count real tokens only (padding excluded), the GPU peak table refuses
what it does not know, and a tiny CPU run prints one JSON object with every section, positive finite
throughputs and no MFU."""
import json
import math

import pytest
import torch

import bench
from data.format import collate
from data.tokenizer import EOT
from model import GPT, config_for


def test_synthetic_group_counts_real_tokens_only():
    gen = torch.Generator().manual_seed(1)
    pos, negs = bench.synthetic_group(4, 2, 64, gen)
    assert len(pos) == 4 and len(negs) == 1 and [len(g) for g in negs[0]] == [2] * 4
    for (ids, n), group in zip(pos, negs[0]):
        assert all(neg[:n] == ids[:n] and m == n for neg, m in group)  # negatives share the prompt
    seqs = bench.all_seqs(pos, negs)
    lengths = [len(ids) for ids, _ in seqs]
    assert max(lengths) <= 64 and len(set(lengths)) > 1  # lengths vary, so the batch holds padding
    x, y, mask = collate(seqs)
    real, scored = bench.count_tokens(seqs)
    assert real == sum(L - 1 for L in lengths)  # inputs are ids[:-1]
    assert real == int((x != EOT).sum()) < x.numel()  # EOT is the pad id and never an input token here
    assert scored == int(mask.sum())
    assert bench.synthetic_group(3, 0, 32, gen)[1] is None  # SFT: no negatives


def test_peak_flops_table():
    assert bench.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert bench.peak_flops("NVIDIA H200") == 989e12
    assert bench.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    for unknown in ("NVIDIA H100 NVL", "NVIDIA GeForce RTX 4090", "cpu"):
        assert bench.peak_flops(unknown) is None


def test_model_flops_output_layer_only_at_scored_tokens():
    cfg = config_for("tiny")
    n_params = sum(p.numel() for p in GPT(cfg).parameters())
    seqs = [([1, 2, 3, EOT], 2)]  # 3 real input tokens, 2 scored
    body = n_params - cfg.vocab_size * cfg.n_embd - cfg.block_size * cfg.n_embd
    fwd = 2 * body * 3 + 2 * cfg.vocab_size * cfg.n_embd * 2 + 4 * cfg.n_layer * cfg.n_embd * 9
    assert bench.model_flops(cfg, n_params, seqs, backward=False) == fwd
    assert bench.model_flops(cfg, n_params, seqs) == 3 * fwd


def test_cpu_smoke_json(capsys):
    out = bench.main(["--size", "tiny", "--seq-len", "32", "--batch-size", "6", "--iters", "2", "--warmup", "1",
                      "--sample-batch-sizes", "2,3", "--sample-prompt-len", "4", "--sample-new-tokens", "5",
                      "--device", "cpu", "--json"])
    res = json.loads(capsys.readouterr().out)  # stdout holds exactly one JSON object
    assert res == json.loads(json.dumps(out))
    assert set(res) == {"config", "train", "sampling", "scoring"}
    assert list(res["train"]) == ["sft", "dft", "dft2", "asft", "dpo"]
    assert res["config"]["peak_flops"] is None
    rows = list(res["train"].values()) + res["sampling"] + [res["scoring"]]
    for r in rows:
        assert r["mfu"] is None and r["dtype"] == "fp32"
        assert r["scored_tok_s"] > 0 and math.isfinite(r["scored_tok_s"]) and r["peak_mem_mib"] > 0
    for r in list(res["train"].values()) + [res["scoring"]]:
        assert 0 < r["scored_tok_s"] < r["real_tok_s"] and math.isfinite(r["real_tok_s"])
    assert res["train"]["sft"]["seqs"] == 6 and res["train"]["dft"]["seqs"] == 6  # 2 prompts x (1 + 2)
    assert [(r["seqs"], r["new_tokens"], r["real_tok_s"]) for r in res["sampling"]] == [(2, 5, None), (3, 5, None)]


def test_bad_flags_are_one_line_errors(capsys):
    for argv, msg in ((["--size", "tiny", "--seq-len", "4096"], "--seq-len must be in [8, 128]"),
                      (["--losses", "sft,nope"], "unknown ['nope']"),
                      (["--batch-size", "2"], "at least 1 + --num-negatives")):
        with pytest.raises(SystemExit):
            bench.get_args(argv)
        assert msg in capsys.readouterr().err
