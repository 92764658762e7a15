"""
Benchmarks: how fast training, negative sampling and held-out scoring run, on random weights and
synthetic data (no downloads), and (--suite gpu) how that compares with HF transformers.

    python bench.py --size nano --seq-len 128 --iters 5 --sample-batch-sizes 64 \\
        --sample-new-tokens 64                      # the README's CPU table
    python bench.py --suite gpu                     # one GPU: gpt2-medium shapes vs HF, checks
    python bench.py --suite gpu --device cpu --tiny # the same on the CPU, tiny, in under a minute
    python -m pytest -q tests/test_bench.py

What runs is the project's own code: a training step is train.train_step (the positives and their B
negatives collated into ONE forward per micro-batch, losses.compute_loss, backward, clipping,
AdamW); sampling is sample.generate (top-k 50, temperature 0.7, the KV cache); scoring is
eval.score. Precision is common.amp_dtype's choice (--precision), and every row says what ran.

Honest numbers: every timed region starts and ends with a device synchronize; --warmup iterations
run untimed; each number is the median over --iters; tokens are counted from the sequence lengths,
so padding never counts ("real" = non-padding input tokens, "scored" = response + EOT); sampling
counts new tokens, prefill included in the time. Model flops (model.model_flops): 6 N_body per real
token, 6 V C per scored token (the output layer runs only there), attention per sequence; scoring is
a third of it. MFU = flop/s / the GPU's dense bf16 peak (model.PEAK_BF16); "-" on the CPU, an
unknown GPU or without bf16. Peak memory: torch.cuda.max_memory_allocated on CUDA, the process's
peak RSS on the CPU.

The gpu suite: (1) a DFT training step on gpt2-medium shapes (16 prompts x 3 sequences of up to 512
tokens) against HF's GPT2LMHeadModel training step on the same sequences; (2) sampling at batch 64,
top-k 50, the same new tokens, against HF generate(); (3) scoring against an HF forward pass; (4)
the padding fraction of train.py's micro-batches on the built-in task's lengths and on GSM8K-like
lengths; (5) correctness: 20 bf16 training steps track fp32, the compiled model's logits match
eager, and, when there are 2 GPUs, 2 ranks equal 1 under nccl (tests/test_train.py's DDP tests). HF
transformers is optional (pip install transformers): without it the comparisons say so and the rest
runs.
"""
import os
import random
import resource
import statistics
import subprocess
import sys
import time

from dataclasses import dataclass

import torch

import losses
from common import (DEVICE_HELP, ArgumentParser, Progress, amp_dtype, autocast, nonneg_int,
                    positive_int, run_main, setup, write_json)
from data import arith
from data.format import load_jsonl, pack, tokenize
from data.tokenizer import EOT, get_tokenizer
from eval import score
from model import GPT, PRESETS, config_for, model_flops, peak_flops
from sample import Decoding, generate
from train import StepConfig, TrainData, micro_batches, train_step

# -----------------------------------------------------------------------------
# synthetic data and honest timing


def synthetic(n_prompts, B, seq_len, gen, prompt=(1 / 16, 1 / 4), response=(1 / 8, 3 / 4)):
    """TrainData of n_prompts random groups: a positive and B negatives sharing its prompt. Prompt
    and response lengths are uniform in the given fractions of seq_len; tokens avoid EOT (the
    padding id) except each response's closing EOT. No sequence exceeds seq_len."""
    def rand(lo, hi):
        low, high = max(1, int(lo * seq_len)), max(2, int(hi * seq_len)) + 1
        return int(torch.randint(low, high, (1,), generator=gen))

    def seq(p):
        r = min(rand(*response), seq_len - len(p))
        return p + torch.randint(0, EOT, (r - 1,), generator=gen).tolist() + [EOT], len(p)

    pos, negs = [], []
    for _ in range(n_prompts):
        p = torch.randint(0, EOT, (rand(*prompt),), generator=gen).tolist()
        pos.append(seq(p))
        negs.append([seq(p) for _ in range(B)])
    return TrainData(pos, negs, B, reuse=True)


def count_tokens(seqs):
    """(real, scored): non-padding input tokens (x = ids[:-1]) and scored tokens (response +
    EOT)."""
    return sum(len(ids) - 1 for ids, _ in seqs), sum(len(ids) - n for ids, n in seqs)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mem_mib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def timed(label, fn, iters, warmup, device):
    """Run fn(i) warmup + iters times; returns (median seconds of the timed ones, fn's last
    result)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, res, pr = [], None, Progress(label, warmup + iters)
    for i in range(warmup + iters):
        sync(device)  # nothing queued from before may land in this iteration's time
        t0 = time.perf_counter()
        res = fn(i)
        sync(device)  # the device has finished this iteration's work before the clock is read
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        pr.update(i + 1)
    pr.close()
    return statistics.median(times), res


@dataclass
class Bench:
    """What every case needs: the model, the flags, where and in which precision it runs."""
    model: GPT
    args: object
    device: torch.device
    amp: object         # the autocast dtype, None = fp32
    peak: float = None  # the GPU's dense bf16 peak flop/s (None: unknown, or not a GPU)

    @property
    def dtype(self):
        return "bf16" if self.amp == torch.bfloat16 else "fp32"

    def row(self, label, dt, sequences=None, flops=None, **extra):
        """One table row: time, real and scored (or new) tokens per second, MFU, peak memory."""
        if sequences:
            real, scored = count_tokens(sequences)
        else:  # sampling: no real input tokens, the new ones counted instead
            real, scored = None, extra.pop("new_tokens", None)
        bf16_peak = self.peak if self.dtype == "bf16" else None
        return {"case": label, "dtype": self.dtype, "ms": dt * 1e3,
                "real_tok_s": real / dt if real is not None else None,
                "scored_tok_s": scored / dt if scored is not None else None,
                "mfu": flops / dt / bf16_peak if bf16_peak and flops is not None else None,
                "peak_mem_mib": peak_mem_mib(self.device), **extra}


def bench_context(model, args, device):
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_flops(name) if device.type == "cuda" else None
    return Bench(model, args, device, amp_dtype(device, args.precision), peak)


# -----------------------------------------------------------------------------
# the project's own paths


def bench_train(b, loss, B, n_prompts):
    """train.train_step on synthetic groups, one micro-batch of all n_prompts (random reference
    log-probs)."""
    B = B if losses.LOSSES[loss].needs_negatives else 0
    gen = torch.Generator().manual_seed(b.args.seed)
    n_steps = b.args.warmup + b.args.iters
    steps = [synthetic(n_prompts, B, b.args.seq_len, gen) for _ in range(n_steps)]
    for d in steps:
        d.ref_pos = -torch.rand(n_prompts, dtype=torch.float64) * 100
        d.ref_neg = -torch.rand(n_prompts, max(B, 1), dtype=torch.float64) * 100
    opt = torch.optim.AdamW(b.model.parameters(), lr=1e-5, fused=b.device.type == "cuda")
    cfg = StepConfig(loss, {}, n_prompts, grad_clip=1.0, pack=False, amp=b.amp)
    wrapped = torch.compile(b.model) if b.args.compile else b.model
    b.model.train()

    def step(i):
        return train_step(wrapped, opt, list(range(n_prompts)), 0, steps[i], cfg)

    dt, _ = timed(f"train {loss}", step, b.args.iters, b.args.warmup, b.device)
    seqs = steps[0].pos + [s for g in steps[0].negs for s in g]
    flops = model_flops(b.model.config, b.model.num_params(), seqs)
    return b.row(f"train {loss}", dt, seqs, flops, seqs=len(seqs))


def bench_sampling(b, batch, new_tokens, static=False):
    P = b.args.sample_prompt_len
    N = min(new_tokens, b.model.config.block_size - P)
    gen = torch.Generator().manual_seed(b.args.seed)
    # prompts of equal lengths: no padding
    prompts = [torch.randint(0, EOT, (P,), generator=gen).tolist() for _ in range(batch)]
    # stop_at_eos=False: every row runs N steps, as HF's min_new_tokens makes it do
    how = Decoding(temperature=0.7, top_k=50, stop_at_eos=False, static=static)
    b.model.eval()

    def step(i):
        return generate(b.model, prompts, N, how, gen, b.amp)

    dt, res = timed(f"sample b={batch}", step, b.args.iters, b.args.warmup, b.device)
    assert sum(len(ids) for ids, _ in res) == batch * N, "generation stopped early"
    label = f"sample b={batch}, {N} new" + (" (static)" if static else "")
    return b.row(label, dt, new_tokens=batch * N, seqs=batch)


def bench_scoring(b):
    gen = torch.Generator().manual_seed(b.args.seed)
    data = synthetic(b.args.batch_size, 0, b.args.seq_len, gen)
    b.model.eval()

    def step(i):
        return score(b.model, data.pos, b.args.batch_size, b.amp)

    dt, _ = timed("scoring", step, b.args.iters, b.args.warmup, b.device)
    flops = model_flops(b.model.config, b.model.num_params(), data.pos, backward=False)
    return b.row("scoring", dt, data.pos, flops, seqs=len(data.pos))


# -----------------------------------------------------------------------------
# the gpu suite: the same paths against HF transformers, padding, correctness


def hf_model(model, device):
    """HF's GPT2LMHeadModel with our weights (through our own checkpoint format), or None when
    transformers is not installed."""
    try:
        import transformers
    except ImportError:
        return None
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        hf = transformers.GPT2LMHeadModel.from_pretrained(d, torch_dtype=torch.float32,
                                                          attn_implementation="sdpa")
    return hf.to(device)


def hf_train(b, hf, data):
    """HF's training step on the same sequences: padded batch, labels masked like ours, AdamW."""
    seqs = data.pos + [s for g in data.negs for s in g]
    T = max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), T), EOT, dtype=torch.long)
    att, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for r, (s, n) in enumerate(seqs):
        ids[r, :len(s)], att[r, :len(s)] = torch.tensor(s), 1
        labels[r, n:len(s)] = torch.tensor(s[n:])
    ids, att, labels = ids.to(b.device), att.to(b.device), labels.to(b.device)
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-5, fused=b.device.type == "cuda")
    hf.train()

    def step(i):
        with autocast(b.device, b.amp):
            out = hf(input_ids=ids, attention_mask=att, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    dt, _ = timed("HF train", step, b.args.iters, b.args.warmup, b.device)
    flops = model_flops(b.model.config, b.model.num_params(), seqs)
    return b.row("HF train (GPT2LMHeadModel)", dt, seqs, flops, seqs=len(seqs))


def hf_sampling(b, hf, batch, new_tokens):
    P = b.args.sample_prompt_len
    N = min(new_tokens, hf.config.n_positions - P)
    gen = torch.Generator().manual_seed(b.args.seed)
    ids = torch.randint(0, EOT, (batch, P), generator=gen).to(b.device)
    hf.eval()

    def step(i):
        with torch.no_grad(), autocast(b.device, b.amp):
            return hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                               top_k=50, temperature=0.7, max_new_tokens=N, min_new_tokens=N,
                               pad_token_id=EOT)

    dt, out = timed(f"HF generate b={batch}", step, b.args.iters, b.args.warmup, b.device)
    assert out.shape[1] == P + N
    return b.row(f"HF generate b={batch}, {N} new", dt, new_tokens=batch * N, seqs=batch)


def hf_scoring(b, hf):
    gen = torch.Generator().manual_seed(b.args.seed)
    data = synthetic(b.args.batch_size, 0, b.args.seq_len, gen)
    size = b.args.batch_size
    hf.eval()

    # the same per-sequence summed log-probs, from full logits, length-sorted batches like ours
    def step(i):
        order = sorted(range(len(data.pos)), key=lambda k: len(data.pos[k][0]))
        for s in range(0, len(order), size):
            group = [data.pos[k] for k in order[s:s + size]]
            T = max(len(x) for x, _ in group)
            ids = torch.tensor([x + [EOT] * (T - len(x)) for x, _ in group], device=b.device)
            with torch.no_grad(), autocast(b.device, b.amp):
                logits = hf(input_ids=ids).logits[:, :-1].float()  # (B, T-1, V)
            lp = logits.log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1)
            mask = torch.zeros_like(lp, dtype=torch.bool)
            for r, (x, n) in enumerate(group):
                mask[r, n - 1:len(x) - 1] = True
            (lp * mask).sum(1).cpu()

    dt, _ = timed("HF scoring", step, b.args.iters, b.args.warmup, b.device)
    flops = model_flops(b.model.config, b.model.num_params(), data.pos, backward=False)
    return b.row("HF scoring (forward + log_softmax)", dt, data.pos, flops, seqs=len(data.pos))


def padding_fractions(args):
    """The share of padding in train.py's micro-batches (its own micro_batches: each rank's share of
    a step, sorted by length, 8 prompts x 3 sequences), padded and packed, on two length profiles:
    the built-in task (its real problems; as negatives, the answers of other problems) and
    GSM8K-like (prompts 50-250 tokens, answers 50-300, cut at 512)."""
    rnd, out = random.Random(args.seed), {}
    arith.ensure_default_file(arith.DEFAULT_TRAIN)
    recs = load_jsonl(arith.DEFAULT_TRAIN).records
    pos, _, _ = tokenize(get_tokenizer(), recs, 256, 128)
    answers = [len(ids) - n for ids, n in pos]
    builtin = []
    for ids, n in pos:
        # as negatives, the answers of other problems
        negs = [(ids[:n] + [0] * rnd.choice(answers), n) for _ in range(4)]
        builtin.append(((ids, n), negs))
    gsm8k_like = []
    for _ in range(1024):
        prompt = rnd.randint(50, 250)
        answer = ([0] * min(512, prompt + rnd.randint(50, 300)), prompt)
        negs = [([0] * min(512, prompt + rnd.randint(50, 300)), prompt) for _ in range(4)]
        gsm8k_like.append((answer, negs))
    for name, groups in (("built-in task", builtin), ("GSM8K-like", gsm8k_like)):
        data = TrainData([g[0] for g in groups], [g[1] for g in groups], 2, reuse=False)
        real = padded = packed = 0
        for s in range(0, len(groups) - 63, 64):
            for mb in micro_batches(list(range(s, s + 64)), data, 0, 0, 1, 8):
                seqs = [x for i in mb for x in [data.pos[i]] + data.negs[i][data.neg_slice(0)]]
                lens = [len(x[0]) - 1 for x in seqs]
                real += sum(lens)
                padded += max(lens) * len(lens)
                packed += pack(seqs)[0].numel()
        out[name] = 1 - real / padded
        out[name + ", --pack"] = 1 - real / packed
    return out


def correctness(model_cfg, args, device):
    """20 bf16 training steps track fp32; compiled logits match eager; nccl 2 ranks = 1 (2 GPUs)."""
    checks, curves = {}, {}
    for name, amp in (("fp32", None), ("bf16", torch.bfloat16)):
        torch.manual_seed(args.seed)
        model = GPT(model_cfg).to(device)
        gen = torch.Generator().manual_seed(args.seed)
        # the same batch every step: the loss must fall
        data = synthetic(8, 2, min(args.seq_len, 128), gen)
        data.ref_neg = -torch.rand(8, 2, dtype=torch.float64, generator=gen) * 50
        data.ref_pos = torch.zeros(8, dtype=torch.float64)
        # NOTE: a small step. At lr 1e-3 a random gpt2-medium diverges (its loss spikes, in fp32 and
        # bf16 alike), and the gap between two diverging runs measures chaos, not precision
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        cfg = StepConfig("sft", {}, micro_batch_size=4, grad_clip=1.0, pack=False, amp=amp)
        step = [list(range(8)), 0, data, cfg]
        curves[name] = [train_step(model, opt, *step)[0]["loss"].item() / 8 for _ in range(20)]
    rel = max(abs(a - b) / abs(a) for a, b in zip(curves["fp32"], curves["bf16"]))
    checks["bf16 tracks fp32 (20 SFT steps, max relative loss gap)"] = \
        (rel < 0.05, f"{rel:.2%} (tolerance 5%)")
    checks["compiled logits match eager"] = compiled_matches_eager(model_cfg, device)
    n_gpu = torch.cuda.device_count() if device.type == "cuda" else 0
    if n_gpu < 2:
        checks["nccl: 2 ranks equal 1"] = (None, "skipped: needs 2 GPUs (tests/test_train.py "
                                                 "checks 2 gloo ranks = 1 on the CPU)")
    else:  # the DDP tests start their own 2 ranks: on cuda:0 and cuda:1 (nccl) with 2 GPUs
        here = os.path.dirname(os.path.abspath(__file__))
        cmd = [sys.executable, "-m", "pytest", "-q", "tests/test_train.py", "-k", "ddp"]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=here)
        last = (r.stdout.strip().splitlines() or ["no output"])[-1]
        checks["nccl: 2 ranks equal 1"] = (r.returncode == 0, last)
    return checks, curves


def compiled_matches_eager(model_cfg, device):
    """torch.compile computes the same function: logits compared in full fp32 (TF32 is off during
    the check: its rounding, not the compiler, would dominate the difference)."""
    model = GPT(model_cfg).to(device).eval()
    x = torch.randint(0, EOT, (2, 32), device=device)
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.no_grad():
            gap = (torch.compile(model)(x) - model(x)).abs().max().item()
        return gap < 1e-3, f"max |diff| {gap:.2e} (tolerance 1e-3)"
    except Exception as e:  # no compiler on this machine: say so, do not hide it
        return None, f"skipped: torch.compile failed here ({type(e).__name__})"
    finally:
        torch.set_float32_matmul_precision(precision)


def gpu_suite(args, device):
    cfg = config_for(args.size)
    args.seq_len = min(args.seq_len, cfg.block_size)
    torch.manual_seed(args.seed)
    b = bench_context(GPT(cfg).to(device), args, device)
    gen = torch.Generator().manual_seed(args.seed)
    data = synthetic(16 if not args.tiny else 4, 2, args.seq_len, gen)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = [bench_train(b, "dft", 2, len(data.pos))]
    hf = hf_model(b.model, device)
    if hf is not None:
        rows.append(hf_train(b, hf, data))
    for static in (False, True):
        rows.append(bench_sampling(b, args.sample_batch, args.sample_new_tokens, static))
    if hf is not None:
        rows.append(hf_sampling(b, hf, args.sample_batch, args.sample_new_tokens))
    rows.append(bench_scoring(b))
    if hf is not None:
        rows.append(hf_scoring(b, hf))
    checks, _ = correctness(cfg, args, device)
    config = {"size": args.size, "device": name, "precision": b.dtype, "torch": torch.__version__}
    return {"config": config, "rows": rows, "hf": hf is not None,
            "padding": padding_fractions(args), "checks": checks}


# -----------------------------------------------------------------------------
# tables


def fmt(v, kind):
    if v is None:
        return "-"
    formats = {"tok": f"{v:,.0f}", "ms": f"{v:,.1f}", "mfu": f"{100 * v:.1f}%",
               "mem": f"{v:,.0f} MiB"}
    return formats[kind]


def format_rows(rows):
    head = ("case", "dtype", "seqs", "ms/iter", "real tok/s", "scored/new tok/s", "MFU", "peak mem")
    body = [(r["case"], r["dtype"], str(r.get("seqs", "-")), fmt(r["ms"], "ms"),
             fmt(r["real_tok_s"], "tok"), fmt(r["scored_tok_s"], "tok"), fmt(r["mfu"], "mfu"),
             fmt(r["peak_mem_mib"], "mem")) for r in rows]
    widths = [max(len(x[j]) for x in [head] + body) for j in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(widths[0]) if j == 0 else c.rjust(widths[j])
                         for j, c in enumerate(cells))

    return "\n".join([line(head), line(["-" * n for n in widths])] + [line(x) for x in body])


def ratios(rows):
    """Ours over HF, per comparison, from the rows' token rates."""
    pairs = (("train dft", "HF train", "real_tok_s", "training"),
             ("sample b=", "HF generate", "scored_tok_s", "sampling"),
             ("scoring", "HF scoring", "real_tok_s", "scoring"))
    out = {}
    for ours, theirs, key, label in pairs:
        a = [r for r in rows if r["case"].startswith(ours) and "static" not in r["case"]]
        b = [r for r in rows if r["case"].startswith(theirs)]
        if a and b:
            out[label] = a[0][key] / b[0][key]
    return out


def get_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="losses", choices=["losses", "gpu"], help="losses: every "
                   "loss, sampling and scoring; gpu: the comparisons against HF transformers and "
                   "the correctness checks")
    p.add_argument("--tiny", action="store_true", help="gpu suite: the tiny model instead of "
                   "gpt2-medium (a CPU smoke run)")
    p.add_argument("--size", default=None, choices=list(PRESETS), help="model preset, random "
                   "weights (default: gpt2 for the losses suite, gpt2-medium for the gpu suite, "
                   "tiny with --tiny)")
    p.add_argument("--batch-size", type=positive_int, default=16,
                   help="sequences per training / scoring step")
    p.add_argument("--seq-len", type=positive_int, default=512,
                   help="max tokens of a sequence (prompt + response)")
    p.add_argument("--num-negatives", type=positive_int, default=2,
                   help="B: negatives per prompt (all losses but sft)")
    p.add_argument("--losses", default=",".join(losses.LOSSES),
                   help="comma-separated losses to time ('' for none)")
    p.add_argument("--iters", type=positive_int, default=10,
                   help="timed iterations per case (the median is reported)")
    p.add_argument("--warmup", type=nonneg_int, default=2, help="untimed iterations before them")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 autocast on CUDA, fp32 on the CPU (common.amp_dtype), for "
                   "training, sampling and scoring alike")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for training")
    p.add_argument("--skip-sampling", action="store_true", help="losses suite: no sampling")
    p.add_argument("--skip-scoring", action="store_true", help="losses suite: no scoring")
    p.add_argument("--sample-batch-sizes", default="64,256",
                   help="losses suite: comma-separated sampling batch sizes")
    p.add_argument("--sample-batch", type=positive_int, default=64, help="gpu suite: the "
                   "sampling batch")
    p.add_argument("--sample-prompt-len", type=positive_int, default=64,
                   help="prompt tokens per sampled row")
    p.add_argument("--sample-new-tokens", type=positive_int, default=256,
                   help="new tokens per row (capped by block_size)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and synthetic data")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the results as JSON to PATH ('-': stdout)")
    args = p.parse_args(argv)
    args.losses = [s for s in args.losses.split(",") if s]
    args.sample_batch_sizes = [int(s) for s in args.sample_batch_sizes.split(",") if s]
    if args.suite == "gpu" and args.tiny:
        args.seq_len = min(args.seq_len, 64)
        args.sample_new_tokens = min(args.sample_new_tokens, 16)
        args.sample_batch = min(args.sample_batch, 8)
        args.iters, args.warmup = min(args.iters, 2), min(args.warmup, 1)
    default_size = "gpt2-medium" if args.suite == "gpu" else "gpt2"
    args.size = "tiny" if args.tiny else args.size or default_size
    check_args(args)
    return args


def check_args(args):
    block = config_for(args.size).block_size
    bad = [s for s in args.losses if s not in losses.LOSSES]
    if bad:
        raise ValueError(f"--losses: unknown {bad}; choose from {','.join(losses.LOSSES)}")
    if not 8 <= args.seq_len <= block:
        raise ValueError(f"--seq-len must be in [8, {block}] (the model's block size)")
    if args.batch_size < 1 + args.num_negatives:
        raise ValueError("--batch-size must be at least 1 + --num-negatives")
    if not args.sample_prompt_len < block:
        raise ValueError(f"--sample-prompt-len must be in [1, {block - 1}]")


def main(argv=None):
    args = get_args(argv)
    _, _, device = setup(args.device)
    if args.suite == "gpu":
        res = gpu_suite(args, device)
        print_gpu_suite(res, args)
    else:
        res = losses_suite(args, device)
    if args.json:
        write_json(args.json, res)
    return res


def losses_suite(args, device):
    torch.manual_seed(args.seed)
    b = bench_context(GPT(config_for(args.size)).to(device), args, device)
    rows = []
    for loss in args.losses:
        # a group is a prompt's answer and its B negatives: a batch holds batch_size sequences
        group = 1 + (args.num_negatives if losses.LOSSES[loss].needs_negatives else 0)
        rows.append(bench_train(b, loss, args.num_negatives, args.batch_size // group))
    if not args.skip_sampling:
        for size in args.sample_batch_sizes:
            rows.append(bench_sampling(b, size, args.sample_new_tokens))
    if not args.skip_scoring:
        rows.append(bench_scoring(b))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    params = b.model.num_params() / 1e6
    print(f"{args.size} ({params:.1f}M params, random weights) on {name}, batch "
          f"{args.batch_size} x seq-len {args.seq_len}, B={args.num_negatives}, median of "
          f"{args.iters} iters after {args.warmup} warm-up, torch {torch.__version__}")
    print(format_rows(rows))
    return {"config": vars(args), "rows": rows}


def print_gpu_suite(res, args):
    c = res["config"]
    print(f"gpu suite: {c['size']} (random weights) on {c['device']}, {c['precision']}, torch "
          f"{c['torch']}, median of {args.iters} iters after {args.warmup} warm-up")
    print(format_rows(res["rows"]))
    res["ratios"] = ratios(res["rows"])
    compared = ", ".join(f"{k} {v:.2f}x" for k, v in res["ratios"].items())
    print("ours / HF: " + (compared if res["hf"] else "not measured (pip install transformers)"))
    padding = ", ".join(f"{k} {v:.1%}" for k, v in res["padding"].items())
    print("padding fraction of train.py's micro-batches: " + padding)
    for k, (ok, msg) in res["checks"].items():
        print(f"{'PASS' if ok else 'SKIP' if ok is None else 'FAIL'}  {k}: {msg}")


if __name__ == "__main__":
    run_main(main)
