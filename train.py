"""
Fine-tune a GPT-2 with SFT, DFT, DFT2, ASFT or DPO, on one process or many (torch DDP via torchrun).

With no flags besides --loss it runs the built-in default end to end, offline, on a CPU in minutes:
load the shipped base model (data/base), generate the arithmetic task (data/arith/, if missing),
sample the DFT negatives from the base model (cached under out/negatives/, reused next time), score
the held-out split, train, score again, and print a before/after table.

    python train.py --loss dft                                             # one process
    torchrun --standalone --nproc_per_node=2 train.py --loss dft           # 2 processes (gloo on CPU, nccl on GPUs)
    python train.py --loss sft --max-steps 20 --no-eval                    # the shortest run
    python train.py --help                                                 # every flag

What one optimizer step does (the part worth reading):
  1. The step's global batch of --batch-size prompts is split over ranks, then into micro-batches.
  2. Each micro-batch is ONE forward over every sequence of its prompt groups: each positive and its
     B negatives (DFT/DFT2/ASFT/DPO on SFT data), or chosen + rejected (preference data).
  3. The loss sees per-sequence log-probs (losses.py) and precomputed reference log-probs: the
     starting model's scores, computed once before training and cached in the run directory, so no
     second model is held in memory.
  4. Every micro-batch loss is scaled so that the gradients, summed over micro-batches and averaged
     over ranks by DDP, equal the gradient of the loss of the whole global batch (see `scale` below).
  5. DFT's per-prompt normalizer u: each rank updates the entries of its prompts, then all ranks
     exchange (prompt index, new log_u) so the table is identical everywhere after every step.

The shipped base model (data/base) was made by this script from random weights:
    python -m data.arith --out data/arith
    python train.py --loss sft --init scratch --size nano --data data/arith/base.jsonl --epochs 1 \\
        --batch-size 64 --micro-batch-size 64 --lr 2e-3 --weight-decay 0.1 --no-eval --out-dir out/base
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist

import losses
from data.format import DataError, collate, encode_example, encode_ids, load_jsonl
from data.tokenizer import get_tokenizer
from model import GPT, config_for, model_flops, peak_flops
from sample import sha256_file, weights_sha256

DEFAULT_DATA = "data/arith/train.jsonl"
DEFAULT_EVAL = "data/arith/test.jsonl"
DEFAULT_INIT = "data/base"

# -----------------------------------------------------------------------------
# small distributed helpers (every other function only asks "am I rank 0?")


def compute_init(device_arg):
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_arg == "auto":
        device_arg = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(f"cuda:{local_rank}" if device_arg == "cuda" else device_arg)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before init_process_group, so NCCL binds the right GPU
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def print0(*args, **kw):
    if int(os.environ.get("RANK", 0)) == 0:
        print(*args, **kw, flush=True)


def fail(msg):
    """A clear one-line error and a non-zero exit (on every rank; rank 0 prints it)."""
    print0(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def comm_device(t):
    """NCCL only moves CUDA tensors; gloo takes them where they are."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else t.device


def all_sum(t):
    """In-place sum over ranks (a no-op on one process)."""
    if dist.is_initialized():
        r = t.to(comm_device(t))
        dist.all_reduce(r)
        t.copy_(r)
    return t


def all_cat(t):
    """Concatenate equal-shaped tensors of all ranks along dim 0."""
    if not dist.is_initialized():
        return t
    r = t.to(comm_device(t))
    got = [torch.zeros_like(r) for _ in range(dist.get_world_size())]
    dist.all_gather(got, r)
    return torch.cat(got).to(t.device)


# -----------------------------------------------------------------------------
# configuration


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("what to train")
    g.add_argument("--loss", required=True, choices=sorted(losses.LOSSES), help="the fine-tuning loss")
    g.add_argument("--init", default=DEFAULT_INIT, help="starting weights: a preset (gpt2, gpt2-medium, ...), a .safetensors "
                   "file, a checkpoint directory, or 'scratch' for random weights of --size")
    g.add_argument("--size", default="nano", help="model size for --init scratch (nano, tiny, gpt2, ...)")
    g.add_argument("--data", default=DEFAULT_DATA, help="training JSONL: {prompt, response} or {prompt, chosen, rejected}")
    g.add_argument("--negatives", default=None, help="negatives file from sample.py (default: out/negatives/<data>-<init>.jsonl, "
                   "sampled now if missing); used by dft, dft2, and by asft/dpo on SFT-style data")
    g.add_argument("--out-dir", default=None, help="run directory (default: out/<loss>)")
    g = p.add_argument_group("loss hyperparameters (default: the loss's own, from ALGORITHMS.md)")
    g.add_argument("--tau", type=float, default=None, help="DFT/DFT2 temperature (1.0 / 0.3)")
    g.add_argument("--gamma", type=float, default=None, help="DFT/DFT2 moving-average rate of u (0.85 / 0.9)")
    g.add_argument("--beta", type=float, default=None, help="DPO inverse temperature (0.1)")
    g.add_argument("--label-smoothing", type=float, default=None, help="DPO label smoothing eps (0.0)")
    g.add_argument("--lam", type=float, default=None, help="ASFT weight of the alignment term (0.1)")
    g = p.add_argument_group("negatives (sampled once from the starting model when the file is missing)")
    g.add_argument("--num-negatives", type=int, default=2, help="B: negatives per prompt per epoch")
    g.add_argument("--neg-max-new-tokens", type=int, default=None, help="max tokens per negative (default 320; 64 on the built-in task)")
    g.add_argument("--neg-temperature", type=float, default=0.7, help="sampling temperature of negatives")
    g.add_argument("--neg-top-k", type=int, default=50, help="top-k of negative sampling")
    g.add_argument("--neg-top-p", type=float, default=1.0, help="top-p of negative sampling")
    g.add_argument("--neg-prefix", default="auto", help="adversarial text put before the prompt while sampling only; "
                   "'auto': the published 'You are an unhelpful assistant.' for chat data (HH-RLHF prompts starting "
                   "'\\n\\nHuman:'), none otherwise; '' for none")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=2, help="passes over the data (each with fresh negatives)")
    g.add_argument("--batch-size", type=int, default=32, help="prompts per optimizer step, over all ranks")
    g.add_argument("--micro-batch-size", type=int, default=8, help="prompts per forward pass on one rank")
    g.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (AdamW)")
    g.add_argument("--warmup", type=float, default=0.1, help="fraction of steps of linear warmup, then cosine decay to 0")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay, on matrices only")
    g.add_argument("--grad-clip", type=float, default=1.0, help="max global gradient norm (0 = off)")
    g.add_argument("--max-len", type=int, default=None, help="max tokens of prompt+response (default: min(1024, model block size))")
    g.add_argument("--max-prompt-len", type=int, default=None, help="max prompt tokens kept when cutting (default: max-len / 2)")
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (the schedule still spans all epochs)")
    g.add_argument("--seed", type=int, default=0, help="seed for data order, negatives and initialization")
    g = p.add_argument_group("running")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--log-every", type=int, default=5, help="print and log metrics every N steps")
    g.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: only at the end)")
    g.add_argument("--save-dtype", default="float32", choices=["float32", "bfloat16"], help="dtype of the saved weights")
    g.add_argument("--resume", action="store_true", help="continue the run in --out-dir from its last checkpoint")
    g.add_argument("--no-eval", action="store_true", help="skip scoring the held-out split before and after")
    g.add_argument("--eval-data", default=None, help=f"held-out JSONL (default: {DEFAULT_EVAL} on the built-in task)")
    g.add_argument("--eval-max", type=int, default=500, help="score at most this many held-out examples")
    g.add_argument("--eval-max-new-tokens", type=int, default=64, help="greedy tokens per prompt for exact match")
    args = p.parse_args(argv)
    args.out_dir = args.out_dir or os.path.join("out", args.loss)
    return args


# -----------------------------------------------------------------------------
# data: tokenize once, up front


def prepare_data(args, spec, tok, block_size, rank, world, device, start_model):
    """Tokenized positives, negatives per epoch, and reference log-probs. Fails early on bad input."""
    builtin = os.path.abspath(args.data) == os.path.abspath(DEFAULT_DATA)
    if builtin:
        from data.arith import ensure_default_data
        if rank == 0:
            ensure_default_data(os.path.dirname(DEFAULT_DATA))
        if dist.is_initialized():
            dist.barrier()
    if not os.path.exists(args.data):
        fail(f"{args.data}: no such data file")
    try:
        kind, records = load_jsonl(args.data)
    except DataError as e:
        fail(str(e))
    max_len = args.max_len or min(1024, block_size)
    if max_len > block_size:
        fail(f"--max-len {max_len} exceeds the model's block size {block_size}")
    max_prompt_len = args.max_prompt_len or max_len // 2
    pos_key = "response" if kind == "sft" else "chosen"
    pos, cut = [], 0
    for r in records:
        ids, n_prompt, truncated = encode_example(tok, r["prompt"], r[pos_key], max_len, max_prompt_len)
        pos.append((ids, n_prompt))
        cut += truncated
    print0(f"data: {len(records)} {kind} examples from {args.data}" + (f"; cut {cut} to max_len={max_len}" if cut else ""))

    # negatives: rejected responses of preference data, or B * epochs samples from the starting model
    negs = None  # negs[e][i] = list of (ids, n_prompt) for epoch e, prompt i
    # which weights the negatives and reference log-probs came from: hashed once, names both caches
    init_sha = weights_sha256(start_model, args.init) if (spec.needs_negatives or spec.needs_ref) else None
    if spec.needs_negatives:
        if kind == "pref" and args.loss in ("asft", "dpo"):
            rej = [encode_example(tok, r["prompt"], r["rejected"], max_len, max_prompt_len)[:2] for r in records]
            negs = [[[x] for x in rej]] * args.epochs  # B = 1, the same rejected every epoch
        else:
            negs = load_or_sample_negatives(args, records, tok, max_len, max_prompt_len, builtin, rank, world, start_model, init_sha)
    ref = reference_logps(args, spec, pos, negs, rank, world, device, start_model, init_sha) if spec.needs_ref else None
    return records, pos, negs, ref, max_len, max_prompt_len


def load_or_sample_negatives(args, records, tok, max_len, max_prompt_len, builtin, rank, world, start_model, init_sha):
    from sample import load_negatives, sample_negatives

    B, E = args.num_negatives, args.epochs
    default_path = args.negatives is None
    if default_path:  # named after the data, the weights (hash: a retrained base gets its own file) and settings
        stem = os.path.splitext(os.path.basename(args.data))[0]
        tag = os.path.basename(os.path.normpath(args.init)) + "-" + init_sha.split(":")[-1][:8]
        args.negatives = os.path.join("out", "negatives", f"{stem}-{tag}-B{B}xE{E}-s{args.seed}.jsonl")
    if args.neg_prefix == "auto":  # the DFT chat recipe's adversarial instruction, for chat-style data only
        from data.hh_rlhf import NEG_PREFIX
        args.neg_prefix = NEG_PREFIX if all(r["prompt"].startswith("\n\nHuman:") for r in records) else ""
    # our own cache file is handed to sample_negatives every time: it reuses the file when it was sampled
    # with these settings from these weights and refuses a stale one; a file the user names is only checked
    # against the data
    if not os.path.exists(args.negatives) or default_path:
        if os.path.exists(args.negatives):
            print0(f"negatives: reusing {args.negatives}")
        else:
            print0(f"negatives: {args.negatives} not found; sampling {B}x{E} per prompt from {args.init} now (cached for next time)")
        max_new = args.neg_max_new_tokens or (64 if builtin else min(320, start_model.config.block_size - max_prompt_len))
        try:
            sample_negatives(start_model, records, args.negatives, B=B, epochs=E, max_new_tokens=max_new,
                             temperature=args.neg_temperature, top_k=args.neg_top_k, top_p=args.neg_top_p,
                             neg_prefix=args.neg_prefix, seed=args.seed, max_prompt_len=max_prompt_len,
                             init_source=args.init, data_path=args.data, rank=rank, world_size=world)
        except ValueError as e:
            fail(str(e))
    else:
        print0(f"negatives: using {args.negatives}")
    try:
        raw = load_negatives(args.negatives, args.data, len(records), B * E)
    except (ValueError, OSError) as e:
        fail(str(e))
    # score each negative on the TRAINING prompt (no adversarial prefix)
    negs = [[[] for _ in records] for _ in range(E)]
    for i, r in enumerate(records):
        p_ids = tok.encode_ordinary(r["prompt"])
        for j, (ids, eos) in enumerate(raw[i][: B * E]):
            seq = encode_ids(p_ids, ids, max_len, max_prompt_len, eos=eos)[:2]
            negs[j // B][i].append(seq)  # epoch e uses negatives [e*B, (e+1)*B)
    return negs


@torch.no_grad()
def reference_logps(args, spec, pos, negs, rank, world, device, model, init_sha):
    """The starting model's log-probs of the positives and/or negatives (the sides spec.needs_ref names:
    DFT's logp_0 of the negatives, DPO's s_0 of both), computed once before training and cached."""
    n, E = len(pos), len(negs) if negs else 0
    B = len(negs[0][0]) if negs else 0
    do_pos, do_neg = "pos" in spec.needs_ref, "neg" in spec.needs_ref and E > 0
    ident = [init_sha, sha256_file(args.data), args.negatives and sha256_file(args.negatives), n, E, B,
             args.max_len, args.max_prompt_len, do_pos, do_neg]  # what the cached numbers depend on
    key = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]
    path = os.path.join(args.out_dir, f"ref_logps-{key}.npz")
    if os.path.exists(path):
        z = np.load(path)
        print0(f"reference log-probs: reusing {path}")
        return torch.from_numpy(z["pos"]), torch.from_numpy(z["neg"])
    t0 = time.time()
    ref_pos = torch.zeros(n, dtype=torch.float64)  # stays 0 where a side is not needed
    ref_neg = torch.zeros(E, n, B, dtype=torch.float64)
    model.eval()
    mine = list(range(rank, n, world))  # each rank scores a strided shard; a SUM all-reduce merges them
    for s in range(0, len(mine), 16):
        idx = mine[s:s + 16]
        seqs = [pos[i] for i in idx] * do_pos + [negs[e][i][j] for e in range(E) for i in idx for j in range(B)] * do_neg
        x, y, m = (t.to(device) for t in collate(seqs))
        with autocast(device):
            lp, _ = model.logps(x, y, m)
        lp = lp.double().cpu()
        if do_pos:
            ref_pos[idx] = lp[: len(idx)]
        if do_neg:
            ref_neg[:, idx] = lp[len(idx) * do_pos:].view(E, len(idx), B)
        print0(f"\rreference log-probs: {min(s + 16, len(mine))}/{len(mine)} prompts", end="")
    model.train()
    all_sum(ref_pos), all_sum(ref_neg)
    print0(f" ({time.time() - t0:.1f}s)")
    if rank == 0:
        os.makedirs(args.out_dir, exist_ok=True)
        np.savez(path + ".tmp.npz", pos=ref_pos.numpy(), neg=ref_neg.numpy())
        os.replace(path + ".tmp.npz", path)
    return ref_pos, ref_neg


def autocast(device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


# -----------------------------------------------------------------------------
# checkpoints: model (HF-loadable safetensors) + the training state, swapped in atomically


def save_checkpoint(run_dir, name, model, args, state):
    final, tmp = os.path.join(run_dir, name), os.path.join(run_dir, name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, dtype=getattr(torch, args.save_dtype))
    if state is not None:
        torch.save(state, os.path.join(tmp, "state.pt"))
    old = final + ".old"
    if os.path.exists(final):
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def lr_at(step, total, args):
    warm = max(1, int(args.warmup * total))
    if step < warm:
        return args.lr * (step + 1) / warm
    return args.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


# -----------------------------------------------------------------------------


def main(argv=None):
    args = get_args(argv)
    spec = losses.LOSSES[args.loss]
    hparams = {k: getattr(args, k) for k in spec.defaults if getattr(args, k, None) is not None}
    hparams = {**spec.defaults, **hparams}
    token_level = args.loss == "sft"  # SFT is a mean over tokens; every other loss a mean over prompts
    rank, world, device = compute_init(args.device)
    torch.manual_seed(args.seed)
    tok = get_tokenizer()

    # model
    if args.init == "scratch":
        model = GPT(config_for(args.size)).to(device)
    else:
        try:
            model = GPT.from_pretrained(args.init, device=device)
        except (OSError, ValueError, RuntimeError) as e:  # RuntimeError: data.download.DownloadError
            hint = " (the shipped base model; restore it with `git checkout data/base`)" if args.init == DEFAULT_INIT else ""
            fail(f"cannot load --init {args.init}{hint}: {e}")
    print0(f"model: {args.init}, {model.num_params() / 1e6:.1f}M parameters, {asdict(model.config)}; device {device}, {world} process(es)")

    if args.resume and not os.path.exists(os.path.join(args.out_dir, "last", "state.pt")):
        fail(f"--resume: no checkpoint in {args.out_dir}/last")
    if not args.resume and os.path.exists(os.path.join(args.out_dir, "final")):
        print0(f"note: {args.out_dir} holds a finished run; it will be replaced")
    records, pos, negs, ref, max_len, max_prompt_len = prepare_data(args, spec, tok, model.config.block_size, rank, world, device, model)

    eval_data = args.eval_data or (DEFAULT_EVAL if os.path.abspath(args.data) == os.path.abspath(DEFAULT_DATA) else None)
    results = {}
    if eval_data and not args.no_eval and not args.resume:
        results["before"] = run_eval(model, eval_data, args, max_len, max_prompt_len, device)

    # geometry of a step: global batch -> ranks -> micro-batches (llm.c style: assert divisibility)
    G, M = args.batch_size, args.micro_batch_size
    if G % world or (G // world) % M:
        fail(f"--batch-size {G} must be divisible by (processes {world} x --micro-batch-size {M})")
    steps_per_epoch = len(records) // G
    if steps_per_epoch == 0:
        fail(f"--batch-size {G} is larger than the data ({len(records)} examples)")
    total = steps_per_epoch * args.epochs
    print0(f"training: {args.epochs} epochs x {steps_per_epoch} steps of {G} prompts ({G // world // M} micro-batches of {M} per rank); "
           f"{args.loss} {hparams}")

    # optimizer: decay matrices (and embeddings), never biases or LayerNorm gains
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), fused=device.type == "cuda")
    log_u = torch.zeros(len(records), dtype=torch.float64)  # DFT's per-prompt log u, starts at 0
    step = 0
    if args.resume:
        st = torch.load(os.path.join(args.out_dir, "last", "state.pt"), weights_only=True)
        model.load_state_dict(GPT.from_pretrained(os.path.join(args.out_dir, "last"), device=device).state_dict())
        opt.load_state_dict(st["optimizer"])
        log_u, step = st["log_u"], st["step"]
        torch.set_rng_state(st["rng"])
        print0(f"resumed {args.out_dir}/last at step {step}")
    elif rank == 0:
        os.makedirs(args.out_dir, exist_ok=True)
        shutil.rmtree(os.path.join(args.out_dir, "final"), ignore_errors=True)
        with open(os.path.join(args.out_dir, "config.json"), "w") as f:
            json.dump({**vars(args), "hparams": hparams, "world_size": world}, f, indent=2)
    if rank == 0 and not args.resume and os.path.exists(os.path.join(args.out_dir, "metrics.jsonl")):
        os.remove(os.path.join(args.out_dir, "metrics.jsonl"))

    raw_model = model
    if args.compile:
        model = torch.compile(model)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else None
    fwd = ddp or model

    # MFU only where the GPU's bf16 peak is known (no number beats a wrong one)
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    n_params = raw_model.num_params()
    stop_at = min(total, args.max_steps) if args.max_steps else total
    t_start = time.time()
    while step < stop_at:
        epoch, s_in_epoch = divmod(step, steps_per_epoch)
        order = torch.randperm(len(records), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        batch = order[s_in_epoch * G:(s_in_epoch + 1) * G].tolist()
        # this rank's prompts of the step, longest group first: each micro-batch then pads to similar
        # lengths (the step's gradient is a sum over micro-batches, so their order changes nothing)
        mine = sorted(batch[rank::world], key=lambda i: -group_len(i, pos, negs, epoch))
        lr = lr_at(step, total, args)
        for gr in opt.param_groups:
            gr["lr"] = lr
        # the normalizer of the whole step: prompts, or scored tokens for SFT (known up front on every rank)
        norm = sum(len(pos[i][0]) - pos[i][1] for i in batch) if token_level else G
        t0 = time.time()
        met_sum, new_u, n_tok, loss_sum = {}, [], 0, 0.0  # device tensors: no host sync per micro-batch
        for k in range(0, len(mine), M):
            idx = mine[k:k + M]
            last = k + M >= len(mine)
            sync = nullcontext() if (ddp is None or last) else ddp.no_sync()  # all-reduce once, at the last micro-batch
            with sync:
                b, ntok = forward_group(fwd, idx, pos, negs, ref, epoch, device)
                n_tok += ntok
                lu = log_u[idx].to(device) if spec.stateful else None
                # losses return a mean over the micro-batch (or, for SFT, sum NLL / normalizer). Scale so that
                # sum over micro-batches and mean over ranks (DDP) = the loss of the whole global batch.
                if token_level:
                    loss, nu, met = losses.compute_loss(args.loss, b, normalizer=norm / world, **hparams)
                    scaled = loss
                else:
                    loss, nu, met = losses.compute_loss(args.loss, b, log_u=lu, **hparams)
                    scaled = loss * len(idx) * world / G
                scaled.backward()
            loss_sum = loss_sum + scaled.detach()  # summed over micro-batches (and averaged over ranks below) = the step's loss
            if nu is not None:
                new_u.append(torch.stack([torch.tensor(idx, dtype=torch.float64), nu.detach().double().cpu()], 1))  # (m, 2)
            # the same two curves for every loss (summed log-probs), so runs can be compared side by side
            met["logp/pos"] = b["logps"].detach().mean()
            if "neg_logps" in b:
                met["logp/neg"] = b["neg_logps"].detach().mean()
            for name, v in met.items():
                if name == "loss":
                    continue
                met_sum[name] = met_sum.get(name, 0.0) + v.detach().double() * len(idx)
        gnorm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), args.grad_clip if args.grad_clip > 0 else float("inf"))
        # one check per step, before the update. A NaN loss on any rank makes the all-reduced gradients NaN
        # on every rank, so every rank stops here together (no rank is left waiting in a collective).
        if not (torch.isfinite(loss_sum) and torch.isfinite(gnorm)):
            what = "loss" if not torch.isfinite(loss_sum) else "gradient norm"
            fail(f"non-finite {what} at step {step}; the weights were not updated; the last good checkpoint is in {args.out_dir}/last")
        opt.step()
        opt.zero_grad(set_to_none=True)
        if spec.stateful:  # every rank applies every rank's new log_u: the table stays identical everywhere
            upd = all_cat(torch.cat(new_u))  # (G, 2): (prompt index, new log_u) from every rank
            log_u[upd[:, 0].long()] = upd[:, 1]
        step += 1
        if step % args.log_every == 0 or step == stop_at:
            vec = all_sum(torch.stack([torch.as_tensor(met_sum[k], dtype=torch.float64).cpu() for k in sorted(met_sum)]
                                   + [torch.as_tensor(loss_sum, dtype=torch.float64).cpu(), torch.tensor(float(n_tok), dtype=torch.float64)]))
            row = {"loss": vec[-2].item() / world, **{k: vec[j].item() / G for j, k in enumerate(sorted(met_sum))}}
            dt = time.time() - t0
            row.update(step=step, epoch=epoch, lr=lr, grad_norm=gnorm.item(), tok_per_s=vec[-1].item() / dt)
            if peak:
                seqs = [pos[i] for i in batch] + ([s for i in batch for s in negs[epoch][i]] if negs else [])
                row["mfu"] = model_flops(raw_model.config, n_params, seqs) / dt / (peak * world)
            if spec.stateful:
                row["log_u/table_mean"] = log_u.mean().item()
            eta = (time.time() - t_start) / step * (stop_at - step) if not args.resume else 0
            print0(f"step {step:4d}/{stop_at} | loss {row.get('loss', float('nan')):.4f} | "
                   + " | ".join(f"{k} {v:.3f}" for k, v in row.items() if k not in ("loss", "step", "epoch", "lr", "tok_per_s"))
                   + f" | lr {lr:.2e} | {row['tok_per_s']:.0f} tok/s | eta {eta:.0f}s")
            if rank == 0:
                with open(os.path.join(args.out_dir, "metrics.jsonl"), "a") as f:
                    f.write(json.dumps(row) + "\n")
        if rank == 0 and args.save_every and step % args.save_every == 0 and step < stop_at:
            save_checkpoint(args.out_dir, "last", raw_model, args,
                            {"optimizer": opt.state_dict(), "log_u": log_u, "step": step, "rng": torch.get_rng_state()})
        if dist.is_initialized() and args.save_every and step % args.save_every == 0:
            dist.barrier()

    if rank == 0:
        state = {"optimizer": opt.state_dict(), "log_u": log_u, "step": step, "rng": torch.get_rng_state()}
        save_checkpoint(args.out_dir, "last", raw_model, args, state)
        if step == total:
            save_checkpoint(args.out_dir, "final", raw_model, args, None)  # the finished model, without optimizer state
    print0(f"done: {step} steps in {time.time() - t_start:.0f}s; " +
           (f"model in {args.out_dir}/final" if step == total else f"stopped early; continue with --resume --out-dir {args.out_dir}"))
    if "before" in results:
        results["after"] = run_eval(raw_model, eval_data, args, max_len, max_prompt_len, device)
        from eval import format_table
        print0(f"\nheld-out ({eval_data}):\n" + format_table({"before": results["before"], f"after {args.loss}": results["after"]}))
        if rank == 0:
            with open(os.path.join(args.out_dir, "eval.json"), "w") as f:
                json.dump(results, f, indent=2)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return raw_model, log_u


def group_len(i, pos, negs, epoch):
    """Longest sequence of prompt i's group (its positive and this epoch's negatives)."""
    return max([len(pos[i][0])] + ([len(s[0]) for s in negs[epoch][i]] if negs else []))


def forward_group(fwd, idx, pos, negs, ref, epoch, device):
    """One forward over the prompts idx: positives then their B negatives; per-sequence log-probs."""
    B = len(negs[epoch][idx[0]]) if negs else 0
    seqs = [pos[i] for i in idx] + [negs[epoch][i][j] for i in idx for j in range(B)]
    x, y, m = (t.to(device) for t in collate(seqs))  # (S, T) each, S = len(idx) * (1 + B)
    with autocast(device):
        lp, n = fwd(x, y, m)  # through DDP's forward, so its backward hooks all-reduce the gradients
    N = len(idx)
    b = {"logps": lp[:N], "n_tokens": n[:N]}
    if B:
        b["neg_logps"], b["neg_n_tokens"] = lp[N:].view(N, B), n[N:].view(N, B)  # (N, B)
    if ref is not None:
        b["ref_logps"] = ref[0][idx].float().to(device)
        if B:
            b["neg_ref_logps"] = ref[1][epoch][idx].float().to(device)  # (N, B)
    return b, int(m.sum())


def run_eval(model, path, args, max_len, max_prompt_len, device):
    from eval import evaluate
    kind, recs = load_jsonl(path)
    return evaluate(model, recs[: args.eval_max], max_len=max_len, max_prompt_len=max_prompt_len, device=device,
                    max_new_tokens=args.eval_max_new_tokens)


if __name__ == "__main__":
    main()
