"""
Throughput benchmark: training steps of every loss, negative sampling and held-out scoring, on random
weights of a model preset and synthetic data, so it runs anywhere with no downloads.

What runs is the project's own code: a training step is train.forward_group (the positives and their
B negatives collated into ONE batch, model(x, y, mask)) + losses.compute_loss + backward + gradient
clipping + AdamW, as in train.py; sampling is sample.generate (top_k 50, temperature 0.7, KV cache);
scoring is eval.score (forward only, no grad). Synthetic sequences: prompt length uniform in
[seq_len/16, seq_len/4], response length (with its EOT) uniform in [seq_len/8, seq_len - seq_len/4],
so no sequence exceeds --seq-len and a batch has a realistic amount of padding. A step holds
--batch-size sequences: SFT that many positives, the other losses batch_size // (1 + B) prompts with
their B negatives each (the table shows the count).

Honest numbers: every timed region starts and ends with torch.cuda.synchronize (on CUDA); --warmup
iterations are run but not timed; each number is the median over --iters iterations; tokens are
counted from the sequence lengths, so padding never counts: "real" = non-padding input tokens,
"scored" = tokens the loss sees (response + EOT); sampling counts new tokens only (generation runs
the full length: no row can stop early), prefill included in the time. Model flops (PaLM, app. B):
    per real input token      6 * N_body           N_body = parameters outside wte/wpe (blocks + ln_f)
    per scored token          6 * V * C            the tied output layer runs only at scored positions
    per token of a sequence   12 * n_layer * n_embd * L     (attention; L = that sequence's real length)
(scoring: a third of it). MFU = flops/s / the GPU's dense bf16 peak from PEAK_BF16 (by
torch.cuda.get_device_name); on CPU, an unknown GPU or without bf16, MFU is "-" rather than a wrong
number. Peak memory: torch.cuda.max_memory_allocated per section on CUDA; on CPU the process's peak
RSS so far (not per section).

--json prints {"config": {size, n_params, device_name, dtype, batch_size, seq_len, peak_flops (null
when unknown), ...}, "train": {loss: row}, "sampling": [row + prompt_len, new_tokens], "scoring": row
or null}; row = {dtype, seqs, ms_per_iter, real_tok_s (null for sampling), scored_tok_s (new tokens
for sampling), mfu (null: unknown), peak_mem_mib} (+ prompts for train rows).

    python bench.py --size gpt2                                          # on a GPU
    python bench.py --size tiny --seq-len 128 --batch-size 4 --iters 3   # CPU smoke run
    python bench.py --size gpt2 --losses dft,sft --skip-sampling --json  # one JSON object
    python -m pytest -q tests/test_bench.py
The README's performance table comes from `python bench.py --size gpt2-medium` on an H100 (TODO: run it).
"""
import argparse
import json
import resource
import statistics
import sys
import time
import types
from contextlib import contextmanager, nullcontext
from unittest import mock

import torch

import eval as ev
import losses
import sample
import train
from data.tokenizer import EOT
from model import GPT, PRESETS, config_for, model_flops, peak_flops

def synthetic_group(n_prompts, n_neg, seq_len, gen):
    """n_prompts random prompt groups: positives [(ids, n_prompt)] and negatives [[B x (ids, n_prompt)]]
    wrapped in an epoch list as train.forward_group reads them (None when n_neg = 0). Negatives share
    their positive's prompt. Tokens avoid EOT (the padding id) except each response's closing EOT."""
    def rand(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    def toks(n):
        return torch.randint(0, EOT, (n,), generator=gen).tolist()

    p_lo, p_hi = max(1, seq_len // 16), max(1, seq_len // 4)
    r_lo, r_hi = max(1, seq_len // 8), seq_len - p_hi  # prompt + response <= seq_len
    pos, negs = [], []
    for _ in range(n_prompts):
        prompt = toks(rand(p_lo, p_hi))
        pos.append((prompt + toks(rand(r_lo, r_hi) - 1) + [EOT], len(prompt)))
        negs.append([(prompt + toks(rand(r_lo, r_hi) - 1) + [EOT], len(prompt)) for _ in range(n_neg)])
    return pos, ([negs] if n_neg else None)


def all_seqs(pos, negs):
    return pos + ([s for group in negs[0] for s in group] if negs else [])


def count_tokens(seqs):
    """(real, scored): non-padding input tokens (x = ids[:-1]) and scored tokens (response + EOT)."""
    return sum(len(ids) - 1 for ids, n in seqs), sum(len(ids) - n for ids, n in seqs)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mem_mib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def timed(label, fn, args, device, peak, dtype, **extra):
    """Run fn(i) for --warmup + --iters iterations; fn returns (real, scored, flops, n_seqs) of its
    work (None where it does not apply). -> one row: medians over the timed iterations."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs, n = [], args.warmup + args.iters
    for i in range(n):
        print(f"\r{label}: {i + 1}/{n}{' (warm-up)' if i < args.warmup else '          '}", end="", file=sys.stderr, flush=True)
        sync(device)  # nothing queued from before may land in this iteration's time
        t0 = time.perf_counter()
        res = fn(i)
        sync(device)  # the GPU has finished this iteration's work before the clock is read
        if i >= args.warmup:
            runs.append((time.perf_counter() - t0, res))
    print(file=sys.stderr)
    med = lambda f: statistics.median(f(dt, *r) for dt, r in runs)  # noqa: E731
    real, _, flops, n_seqs = runs[0][1]
    # the peak is bf16's: any other dtype (or no flop count) gets no MFU rather than a wrong one
    mfu = med(lambda dt, r, s, f, n: f / dt / peak) if peak and dtype == "bf16" and flops is not None else None
    return {"dtype": dtype, "seqs": n_seqs, "ms_per_iter": med(lambda dt, *_: dt * 1e3),
            "real_tok_s": med(lambda dt, r, *_: r / dt) if real is not None else None,
            "scored_tok_s": med(lambda dt, r, s, *_: s / dt), "mfu": mfu, "peak_mem_mib": peak_mem_mib(device), **extra}


@contextmanager
def precision(dtype, device):
    """'auto' leaves each script's own choice: train.py and eval.py autocast to bf16 on CUDA (fp32 on
    CPU), sample.py runs in the weights' dtype. 'bf16'/'fp32' impose one choice on all three, by
    swapping train.py's and eval.py's autocast helpers for the duration."""
    if dtype == "auto":
        yield
        return
    ctx = (lambda *_: torch.autocast(device.type, dtype=torch.bfloat16)) if dtype == "bf16" else (lambda *_: nullcontext())
    with mock.patch.object(train, "autocast", ctx), mock.patch.object(ev, "_autocast", ctx), ctx():
        yield


def bench_train(name, model, fwd, args, device, peak, dtype):
    spec = losses.LOSSES[name]
    B = args.num_negatives if spec.needs_negatives else 0
    n_prompts = args.batch_size // (1 + B)
    gen = torch.Generator().manual_seed(args.seed)
    steps = [synthetic_group(n_prompts, B, args.seq_len, gen) for _ in range(args.warmup + args.iters)]
    # reference (starting-model) log-probs are precomputed in train.py; any finite numbers do here
    ref = (-torch.rand(n_prompts, dtype=torch.float64) * 100, -torch.rand(1, n_prompts, max(B, 1), dtype=torch.float64) * 100)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0, fused=device.type == "cuda")
    n_params = model.num_params()

    def step(i):
        pos, negs = steps[i]
        idx = list(range(n_prompts))
        b, _ = train.forward_group(fwd, idx, pos, negs, ref if spec.needs_ref else None, 0, device)
        log_u = torch.zeros(n_prompts, dtype=torch.float64, device=device) if spec.stateful else None
        loss, _, _ = losses.compute_loss(name, b, log_u=log_u)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        seqs = all_seqs(pos, negs)
        return (*count_tokens(seqs), model_flops(model.config, n_params, seqs), len(seqs))

    model.train()
    return timed(f"train {name}", step, args, device, peak, dtype, prompts=n_prompts)


def bench_scoring(model, fwd, args, device, peak, dtype):
    gen = torch.Generator().manual_seed(args.seed)
    batches = [synthetic_group(args.batch_size, 0, args.seq_len, gen)[0] for _ in range(args.warmup + args.iters)]
    n_params = model.num_params()
    # eval.score calls model.logps(x, y, mask); this routes it through fwd(x, y, mask), the compiled one with --compile
    scorer = types.SimpleNamespace(logps=fwd)

    def step(i):
        with torch.no_grad():
            ev.score(scorer, batches[i], args.batch_size, device)
        return (*count_tokens(batches[i]), model_flops(model.config, n_params, batches[i], backward=False), len(batches[i]))

    model.eval()
    return timed("scoring", step, args, device, peak, dtype)


def bench_sampling(model, batch, args, device, dtype):
    P = args.sample_prompt_len
    N = min(args.sample_new_tokens, model.config.block_size - P)  # prompt + new tokens fit in block_size
    gen = torch.Generator().manual_seed(args.seed)
    # NOTE: equal prompt lengths, so no row is padded: eos_id=-1 (never sampled) is then never embedded
    prompts = [torch.randint(0, EOT, (P,), generator=gen).tolist() for _ in range(batch)]

    def step(i):
        res = sample.generate(model, prompts, N, temperature=0.7, top_k=50, generator=gen, eos_id=-1)
        assert sum(len(ids) for ids, _ in res) == batch * N, "generation stopped early"
        return None, batch * N, None, batch

    model.eval()
    return timed(f"sampling batch {batch}", step, args, device, None, dtype, prompt_len=P, new_tokens=N)


def fmt(v, kind):
    if v is None:
        return "-"
    return {"tok": f"{v:,.0f}", "ms": f"{v:,.1f}", "mfu": f"{100 * v:.1f}%", "mem": f"{v:,.0f} MiB"}.get(kind, str(v))


def format_table(result):
    c = result["config"]
    rows = [(f"train {k}", r) for k, r in result["train"].items()] + \
           [(f"sample b={r['seqs']}, {r['new_tokens']} new", r) for r in result["sampling"]] + \
           ([("scoring", result["scoring"])] if result["scoring"] else [])
    head = ("case", "dtype", "seqs", "ms/iter", "real tok/s", "scored/new tok/s", "MFU", "peak mem")
    body = [(name, r["dtype"], str(r["seqs"]), fmt(r["ms_per_iter"], "ms"), fmt(r["real_tok_s"], "tok"),
             fmt(r["scored_tok_s"], "tok"), fmt(r["mfu"], "mfu"), fmt(r["peak_mem_mib"], "mem")) for name, r in rows]
    w = [max(len(x[j]) for x in [head] + body) for j in range(len(head))]
    line = lambda x: "  ".join(s.ljust(w[0]) if j == 0 else s.rjust(w[j]) for j, s in enumerate(x))  # noqa: E731
    return "\n".join([f"{c['size']} ({c['n_params'] / 1e6:.1f}M params), {c['device_name']}, batch {c['batch_size']} x "
                      f"seq-len {c['seq_len']}, B={c['num_negatives']} negatives, median of {c['iters']} iters "
                      f"after {c['warmup']} warm-up, torch {c['torch']}", line(head), line(["-" * n for n in w])]
                     + [line(x) for x in body] + [f"MFU: model flops (bench.py's docstring) / " + (
                         f"{c['peak_flops'] / 1e12:.0f} TFLOP/s bf16 peak" if c["peak_flops"] else "- (no bf16 peak known here)")
                         + f"; peak mem: {c['mem_kind']}"])


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", default="gpt2", choices=list(PRESETS), help="model preset (random weights)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per training / scoring step")
    p.add_argument("--seq-len", type=int, default=512, help="max tokens of a sequence (prompt + response)")
    p.add_argument("--num-negatives", type=int, default=2, help="B: negatives per prompt (all losses but sft)")
    p.add_argument("--losses", default=",".join(losses.LOSSES), help="comma-separated losses to time ('' for none)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per case (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations before them")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: as the scripts do it (bf16 autocast for training/scoring on CUDA, fp32 on CPU and for sampling)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for training and scoring (new lengths "
                   "recompile at first: raise --warmup)")
    p.add_argument("--skip-sampling", action="store_true", help="do not time negative sampling")
    p.add_argument("--skip-scoring", action="store_true", help="do not time held-out scoring")
    p.add_argument("--sample-batch-sizes", default="64,256", help="comma-separated sampling batch sizes")
    p.add_argument("--sample-prompt-len", type=int, default=64, help="prompt tokens per sampled row")
    p.add_argument("--sample-new-tokens", type=int, default=256, help="new tokens per row (capped by block_size)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and synthetic data")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    args.losses = [s for s in args.losses.split(",") if s]
    args.sample_batch_sizes = [int(s) for s in args.sample_batch_sizes.split(",") if s]
    bad = [s for s in args.losses if s not in losses.LOSSES]
    block = config_for(args.size).block_size
    for cond, msg in ((bad, f"--losses: unknown {bad}; choose from {','.join(losses.LOSSES)}"),
                      (not 8 <= args.seq_len <= block, f"--seq-len must be in [8, {block}] (block_size of {args.size})"),
                      (args.batch_size < 1 + args.num_negatives, "--batch-size must be at least 1 + --num-negatives"),
                      (args.iters < 1 or args.warmup < 0, "--iters must be >= 1 and --warmup >= 0"),
                      (not args.skip_sampling and not 1 <= args.sample_prompt_len < block,
                       f"--sample-prompt-len must be in [1, {block - 1}]"),
                      (args.device == "cuda" and not torch.cuda.is_available(), "--device cuda: no CUDA device")):
        if cond:
            p.error(msg)
    return args


def main(argv=None):
    args = get_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    torch.manual_seed(args.seed)
    model = GPT(config_for(args.size)).to(device)
    fwd = torch.compile(model) if args.compile else model
    # the dtype each section really runs in
    mm = args.dtype if args.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    sampling_dtype = args.dtype if args.dtype != "auto" else "fp32"
    peak = peak_flops(name) if device.type == "cuda" else None
    cfg = model.config
    result = {"config": {"size": args.size, "n_params": model.num_params(), "n_layer": cfg.n_layer, "n_embd": cfg.n_embd,
                         "vocab_size": cfg.vocab_size, "device": str(device), "device_name": name, "dtype": args.dtype,
                         "batch_size": args.batch_size, "seq_len": args.seq_len, "num_negatives": args.num_negatives,
                         "iters": args.iters, "warmup": args.warmup, "compile": args.compile, "peak_flops": peak,
                         "mem_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process peak RSS",
                         "torch": torch.__version__},
              "train": {}, "sampling": [], "scoring": None}
    with precision(args.dtype, device):
        for loss in args.losses:
            result["train"][loss] = bench_train(loss, model, fwd, args, device, peak, mm)
        if not args.skip_sampling:
            result["sampling"] = [bench_sampling(model, b, args, device, sampling_dtype) for b in args.sample_batch_sizes]
        if not args.skip_scoring:
            result["scoring"] = bench_scoring(model, fwd, args, device, peak, mm)
    print(json.dumps(result) if args.json else format_table(result), flush=True)
    return result


if __name__ == "__main__":
    main()
