"""bench.py: the synthetic batches count real tokens only (padding excluded), the GPU peak table refuses
what it does not know, a tiny CPU run of each suite prints every section with positive finite throughputs
and no MFU, the padding fraction is measured on train.py's own micro-batches, and the fixed-shape decode
step gives the same samples as the growing one."""
import json
import math

import pytest
import torch

import bench
from data.format import collate
from data.tokenizer import EOT
from model import GPT, config_for, model_flops, peak_flops
from sample import Decoding, generate


def test_synthetic_groups_count_real_tokens_only():
    gen = torch.Generator().manual_seed(1)
    data = bench.synthetic(4, 2, 64, gen)
    assert len(data.pos) == 4 and [len(g) for g in data.negs] == [2] * 4
    for (ids, n), group in zip(data.pos, data.negs):
        assert all(neg[:n] == ids[:n] and m == n for neg, m in group)  # negatives share the prompt
    seqs = data.pos + [s for g in data.negs for s in g]
    lengths = [len(ids) for ids, _ in seqs]
    assert max(lengths) <= 64 and len(set(lengths)) > 1  # lengths vary, so the batch holds padding
    x, y, mask = collate(seqs)
    real, scored = bench.count_tokens(seqs)
    assert real == sum(L - 1 for L in lengths)  # inputs are ids[:-1]
    assert real == int((x != EOT).sum()) < x.numel()  # EOT is the pad id and never an input token here
    assert scored == int(mask.sum())


def test_peak_flops_table():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    for unknown in ("NVIDIA H100 NVL", "NVIDIA GeForce RTX 4090", "cpu"):
        assert peak_flops(unknown) is None


def test_model_flops_output_layer_only_at_scored_tokens():
    cfg = config_for("tiny")
    n_params = sum(p.numel() for p in GPT(cfg).parameters())
    seqs = [([1, 2, 3, EOT], 2)]  # 3 real input tokens, 2 scored
    body = n_params - cfg.vocab_size * cfg.n_embd - cfg.block_size * cfg.n_embd
    fwd = 2 * body * 3 + 2 * cfg.vocab_size * cfg.n_embd * 2 + 4 * cfg.n_layer * cfg.n_embd * 9
    assert model_flops(cfg, n_params, seqs, backward=False) == fwd
    assert model_flops(cfg, n_params, seqs) == 3 * fwd


def test_losses_suite_cpu_smoke_json(capsys):
    out = bench.main(["--size", "tiny", "--seq-len", "32", "--batch-size", "6", "--iters", "2", "--warmup", "1",
                      "--sample-batch-sizes", "2,3", "--sample-prompt-len", "4", "--sample-new-tokens", "5",
                      "--device", "cpu", "--json", "-"])
    text = capsys.readouterr().out
    res = json.loads(text[text.index("{\n"):])  # the table, then one JSON object
    assert res == json.loads(json.dumps(out))
    cases = [r["case"] for r in res["rows"]]
    assert cases == ["train sft", "train nll", "train dft", "train dft2", "train asft", "train dpo",
                     "sample b=2, 5 new", "sample b=3, 5 new", "scoring"]
    for r in res["rows"]:
        assert r["mfu"] is None and r["dtype"] == "fp32"  # what ran on the CPU, and no MFU without a known peak
        assert r["scored_tok_s"] > 0 and math.isfinite(r["scored_tok_s"]) and r["peak_mem_mib"] > 0
    for r in res["rows"][:6] + res["rows"][-1:]:
        assert 0 < r["scored_tok_s"] < r["real_tok_s"] and math.isfinite(r["real_tok_s"])
    assert res["rows"][0]["seqs"] == 6 and res["rows"][2]["seqs"] == 6  # 6 positives; 2 prompts x (1 + 2)


def test_gpu_suite_runs_tiny_on_the_cpu(capsys):
    res = bench.main(["--suite", "gpu", "--device", "cpu", "--tiny"])
    out = capsys.readouterr().out
    assert "train dft" in out and "sample b=8, 16 new (static)" in out and "scoring" in out
    assert "padding fraction of train.py's micro-batches: built-in task" in out
    assert set(res["padding"]) == {"built-in task", "GSM8K-like", "built-in task, --pack", "GSM8K-like, --pack"}
    assert all(0 <= v < 1 for v in res["padding"].values())
    assert res["padding"]["GSM8K-like, --pack"] < 0.10 < res["padding"]["GSM8K-like"]  # what packing is for
    checks = res["checks"]
    assert checks["bf16 tracks fp32 (20 SFT steps, max relative loss gap)"][0] is True
    assert checks["nccl: 2 ranks equal 1"][0] is None  # skipped on the CPU, and it says so
    assert ("not measured (pip install transformers" in out) != res["hf"]


def test_static_decode_equals_growing_decode():
    torch.manual_seed(0)
    m = GPT(config_for("tiny")).eval()
    prompts = [[1, 2, 3, 4, 5], [7], [9] * 9]  # left-padded to different lengths
    for temperature in (0.0, 0.9):
        growing, static = Decoding(temperature, 50), Decoding(temperature, 50, static=True)
        a = generate(m, prompts, 20, growing, generator=torch.Generator().manual_seed(1))
        b = generate(m, prompts, 20, static, generator=torch.Generator().manual_seed(1))
        assert a == b


@pytest.mark.parametrize("argv,msg", [(["--size", "tiny", "--seq-len", "4096"], "--seq-len must be in [8, 128]"),
                                      (["--losses", "sft,nope"], "unknown ['nope']"),
                                      (["--batch-size", "2"], "at least 1 + --num-negatives"),
                                      (["--suite", "cuda"], "argument --suite: invalid choice")])
def test_bad_flags_are_value_errors(argv, msg):
    with pytest.raises(ValueError) as e:
        bench.get_args(argv)
    assert msg in str(e.value)
