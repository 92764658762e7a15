"""
Fine-tune a GPT-2 with SFT, DFT, DFT2, ASFT or DPO, on one process or many (torch DDP via torchrun).

With no flags besides --loss it runs the built-in default end to end, offline, on a CPU in minutes:
load the shipped base model (data/base), generate the arithmetic task (data/arith/, if missing),
sample the DFT negatives from the base model (cached under out/negatives/, reused next time), score
the held-out split, train, score again, and print a before/after table.

    python train.py --loss dft                                             # one process
    torchrun --standalone --nproc_per_node=2 train.py --loss dft           # 2 processes (gloo on CPU, nccl on GPUs)
    python train.py --loss sft --max-steps 20 --no-eval --out-dir out/quick  # a short run
    python train.py --help                                                 # every flag

What main() does:
  1. check every flag (a bad value stops the run here, before any work), set up the processes, load
     the starting model, and claim the run directory (a used one needs --resume or --overwrite);
  2. tokenize the training data and attach each prompt's negatives: the rejected response of a
     preference file for the losses that pair with it, else B * epochs samples from the starting
     model (sample.py; cached); then the starting model's log-probs of the sides the loss needs;
  3. score the held-out split ("before"), train, score it again ("after").

What one optimizer step does (train_step):
  1. The step's --batch-size prompts (a fixed permutation per epoch) are split over ranks; each rank
     sorts its share longest first and cuts it into micro-batches of --micro-batch-size.
  2. Each micro-batch is ONE forward over every sequence of its prompts: each positive and its B
     negatives of this epoch; the model returns per-sequence log-probs.
  3. losses.compute_loss sees those, the precomputed reference log-probs and DFT's per-prompt log_u;
     it returns the mean over the micro-batch's prompts (SFT: over its scored tokens).
  4. That loss is scaled by  units(micro-batch) / units(step) x world  (units: prompts, or scored
     tokens for SFT) and backpropagated: gradients add up over micro-batches and DDP averages them
     over ranks, so their total is the gradient of the mean over the whole step.
  5. Clip the global gradient norm. A non-finite loss on any rank makes the all-reduced gradients
     non-finite on every rank, so every rank stops here together, before the update. AdamW updates.
  6. DFT's u: every rank gathers every rank's (prompt index, new log_u) and writes them into its
     table, so the table is identical everywhere after every step.

The run directory (--out-dir) holds config.json (the resolved flags and the run's identity),
metrics.jsonl (one line per logged step), eval.json (before/after), the cached reference log-probs,
last/ (fp32 weights + the training state: --resume continues from it bit for bit) and, once the run
is complete, final/ (HF-loadable, in --save-dtype). data/base/README.md has the command that made the
shipped base model with this script.
"""
import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist

import losses
from common import (ArgumentParser, DEVICE_HELP, all_cat, all_sum, amp_dtype, atomic_path, autocast, fail, print0,
                    run_main, setup, teardown)
from data import arith
from data.format import MAX_LEN_HELP, MAX_PROMPT_LEN_HELP, collate, load_jsonl, tokenize, truncation_report
from data.format import pack as pack_seqs
from data.hh_rlhf import NEG_PREFIX
from data.tokenizer import get_tokenizer
from eval import MAX_NEW_TOKENS, evaluate, format_table, score, write_json
from model import DEFAULT_INIT, PRESETS, load_model, model_flops, peak_flops, weights_sha256
from sample import (NegativeSettings, check_settings, file_sha256, get_negatives, has_checker, keep_wrong, negative_shares,
                    negatives_path)

FILTER_POOL = 4  # --neg-filter wrong samples this many times more negatives, then keeps wrong ones
# what may differ between a run and its --resume (everything else is the run's identity)
NOT_IDENTITY = ("out_dir", "resume", "overwrite", "resume_changing", "max_steps", "device", "compile", "pack", "log_every", "save_every",
                "save_dtype", "no_eval", "eval_data", "eval_max_examples", "eval_max_new_tokens", "negatives_dir")

# -----------------------------------------------------------------------------
# configuration: every flag, checked once, right after parsing


def get_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_argument_group("what to train")
    g.add_argument("--loss", required=True, choices=sorted(losses.LOSSES), help="the fine-tuning loss")
    g.add_argument("--init", default=DEFAULT_INIT, help="starting weights: a preset (gpt2, gpt2-medium, ...: downloaded), "
                   "a .safetensors file, a checkpoint directory, or 'scratch' for random weights of --size")
    g.add_argument("--size", default="nano", choices=list(PRESETS), help="model size for --init scratch")
    g.add_argument("--data", default=arith.DEFAULT_TRAIN, help="training JSONL: {prompt, response} or {prompt, chosen, rejected}")
    g.add_argument("--max-examples", type=int, default=None, help="train on the first N examples of --data (default: all)")
    g.add_argument("--out-dir", default=None, help="run directory (default: out/<loss>)")
    g = p.add_argument_group("loss hyperparameters (docs/ALGORITHMS.md; each loss reads its own)")
    for name, users in hparam_flags().items():
        helps = list(dict.fromkeys(h.help for _, h in users))  # one text, or one per loss when they differ
        text = helps[0] if len(helps) == 1 else "; ".join(f"{loss}: {h.help}" for loss, h in users)
        g.add_argument(f"--{name.replace('_', '-')}", type=float, default=None, help=f"{text} (default: " +
                       ", ".join(f"{h.default} for {loss}" for loss, h in users) + ")")
    g = p.add_argument_group("negatives (sampled once from the starting model, cached in --negatives-dir)")
    g.add_argument("--negatives", default=None, help="negatives file from sample.py, or where to sample them (default: "
                   "a file in --negatives-dir named after the data, the weights and every sampling setting)")
    g.add_argument("--negatives-dir", default="out/negatives", help="cache of sampled negatives, shared by runs")
    g.add_argument("--num-negatives", type=int, default=2, help="B: negatives per prompt per epoch")
    g.add_argument("--neg-max-new-tokens", type=int, default=None, help="max tokens per negative (default: 64 on the "
                   "built-in task, else min(320, block size - max-prompt-len))")
    g.add_argument("--neg-temperature", type=float, default=0.7, help="sampling temperature of negatives")
    g.add_argument("--neg-top-k", type=int, default=50, help="top-k of negative sampling (0 = off)")
    g.add_argument("--neg-top-p", type=float, default=1.0, help="top-p of negative sampling")
    g.add_argument("--neg-prefix", default="auto", help="text put before the prompt while sampling only; 'auto': the "
                   "published 'You are an unhelpful assistant.' for chat data (prompts starting '\\n\\nHuman:'), none "
                   "otherwise; '' for none")
    g.add_argument("--neg-filter", default="none", choices=["none", "wrong"], help="'wrong': sample "
                   f"{FILTER_POOL}x more and keep the answers the task's checker marks wrong (needs checkable answers)")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=2, help="passes over the data (each with fresh negatives)")
    g.add_argument("--batch-size", type=int, default=32, help="prompts per optimizer step, over all ranks")
    g.add_argument("--micro-batch-size", type=int, default=8, help="prompts per forward pass on one rank")
    g.add_argument("--lr", type=float, default=3e-5, help="peak learning rate (AdamW); the default is what the "
                   "validation split chose for SFT on the built-in task (each method's own choice: README, Results)")
    g.add_argument("--warmup", type=float, default=0.1, help="fraction of steps of linear warmup, then cosine decay to 0")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay, on matrices only")
    g.add_argument("--adam-betas", type=float, nargs=2, default=(0.9, 0.999), metavar=("B1", "B2"), help="AdamW betas "
                   "(the published recipe's, PyTorch's defaults)")
    g.add_argument("--grad-clip", type=float, default=1.0, help="max global gradient norm (0 = off)")
    g.add_argument("--max-len", type=int, default=None, help=MAX_LEN_HELP + " (default: min(1024, the model's block size))")
    g.add_argument("--max-prompt-len", type=int, default=None, help=MAX_PROMPT_LEN_HELP + " (default: max-len / 2)")
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many steps; the schedule still spans "
                   "all epochs, and --resume continues (default: all)")
    g.add_argument("--seed", type=int, default=0, help="seed for data order, negatives and initialization")
    g = p.add_argument_group("running")
    g.add_argument("--device", default="auto", help=DEVICE_HELP)
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--pack", action="store_true", help="pack each micro-batch's sequences end to end instead of padding "
                   "them (worth it when lengths vary a lot, e.g. GSM8K; bench.py --suite gpu reports the padding)")
    g.add_argument("--log-every", type=int, default=5, help="print and log metrics every N steps")
    g.add_argument("--save-every", type=int, default=None, help="checkpoint last/ every N steps (default: about every "
                   "10%% of the run; it is also saved at the end and on SIGTERM)")
    g.add_argument("--save-dtype", default="float32", choices=["float32", "bfloat16"], help="dtype of final/ "
                   "(last/ always keeps fp32, for an exact --resume)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out-dir from last/ (refused when its "
                   "identity differs: loss, data, weights, batch geometry, schedule, seed, ...)")
    g.add_argument("--resume-changing", default="", metavar="FIELDS", help="comma-separated identity fields --resume may "
                   "change (e.g. epochs); default: none")
    g.add_argument("--overwrite", action="store_true", help="replace the run in --out-dir (its final/ is kept until "
                   "this run's own final/ is complete)")
    g.add_argument("--no-eval", action="store_true", help="skip scoring the held-out split before and after")
    g.add_argument("--eval-data", default=None, help=f"held-out JSONL (default: {arith.DEFAULT_TEST} on the built-in "
                   "task, none otherwise)")
    g.add_argument("--eval-max-examples", type=int, default=500, help="score at most this many held-out examples")
    g.add_argument("--eval-max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="greedy tokens per prompt for exact match")
    args = p.parse_args(argv)
    check_args(args)
    return args


def hparam_flags():
    """{hyperparameter name: [(loss, HParam)]}: one flag per name, shared by the losses that take it."""
    flags = {}
    for loss, spec in losses.LOSSES.items():
        for name, h in spec.hparams.items():
            flags.setdefault(name, []).append((loss, h))
    return flags


def check_args(a):
    """Every flag's range, before any work; a bad value is a ValueError naming the flag and the range."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    for flag, v in (("--batch-size", a.batch_size), ("--micro-batch-size", a.micro_batch_size), ("--epochs", a.epochs),
                    ("--log-every", a.log_every), ("--num-negatives", a.num_negatives), ("--max-steps", a.max_steps),
                    ("--save-every", a.save_every), ("--max-examples", a.max_examples), ("--max-len", a.max_len),
                    ("--max-prompt-len", a.max_prompt_len), ("--neg-max-new-tokens", a.neg_max_new_tokens),
                    ("--eval-max-examples", a.eval_max_examples), ("--eval-max-new-tokens", a.eval_max_new_tokens)):
        if v is not None and v < 1:
            raise ValueError(f"{flag} must be >= 1, got {v}")
    for flag, v, ok, rng in (("--lr", a.lr, a.lr >= 0, ">= 0"), ("--warmup", a.warmup, 0 <= a.warmup <= 1, "in [0, 1]"),
                             ("--weight-decay", a.weight_decay, a.weight_decay >= 0, ">= 0"),
                             ("--grad-clip", a.grad_clip, a.grad_clip >= 0, ">= 0 (0 = off)"),
                             ("--adam-betas", a.adam_betas, all(0 <= b < 1 for b in a.adam_betas), "in [0, 1)")):
        if not ok:
            raise ValueError(f"--{flag.lstrip('-')} must be {rng}, got {v}")
    if a.batch_size % world or (a.batch_size // world) % a.micro_batch_size:
        raise ValueError(f"--batch-size {a.batch_size} must be divisible by (processes {world} x --micro-batch-size "
                         f"{a.micro_batch_size})")
    if a.max_len and a.max_prompt_len and a.max_prompt_len >= a.max_len:
        raise ValueError(f"--max-prompt-len ({a.max_prompt_len}) must be < --max-len ({a.max_len})")
    if a.resume and a.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    for name, users in hparam_flags().items():
        v = getattr(a, name)
        if v is not None:
            if a.loss not in [loss for loss, _ in users]:
                raise ValueError(f"--{name.replace('_', '-')} is a hyperparameter of {', '.join(l for l, _ in users)}, "
                                 f"not of {a.loss}")
            dict(users)[a.loss].check(f"--{name.replace('_', '-')}", v)  # this loss's own range
    check_settings(a.neg_temperature, a.neg_top_k, a.neg_top_p)
    a.out_dir = a.out_dir or os.path.join("out", a.loss)


# -----------------------------------------------------------------------------
# the run directory: identity, claiming it, checkpoints


def run_identity(args, data_sha, init_sha, hparams, neg_settings, max_len, max_prompt_len):
    """What makes two runs the same run: every resolved flag except NOT_IDENTITY, plus the data and weights hashes."""
    ident = {k: v for k, v in vars(args).items() if k not in NOT_IDENTITY}
    ident.update(hparams=hparams, data_sha256=data_sha, init_sha256=init_sha, max_len=max_len,
                 max_prompt_len=max_prompt_len, adam_betas=list(args.adam_betas),
                 negatives=dataclasses.asdict(neg_settings) if neg_settings else None)
    return json.loads(json.dumps(ident))  # plain JSON types, as stored


RUN_FILES = ("metrics.jsonl", "last", "last.old", "final")  # a directory with one of these holds a run


def claim_run_dir(args, rank):
    """A new run may not silently mix with an old one: a used --out-dir needs --resume or --overwrite.
    --overwrite removes the old run's files now but keeps its final/ (as final.previous/) until this run's
    own final/ is complete. Returns the checkpoint directory to resume from (or None)."""
    d = args.out_dir
    used = [f for f in RUN_FILES if os.path.exists(os.path.join(d, f))]
    if args.resume:
        for name in ("last", "last.old"):  # last.old: a crash between save_checkpoint's two renames
            if os.path.exists(os.path.join(d, name, "state.pt")):
                return os.path.join(d, name)
        raise ValueError(f"--resume: no checkpoint in {d}/last (nothing to continue; start the run without --resume)")
    if used and not args.overwrite:
        what = "a complete run (final/)" if "final" in used else f"a run's files ({', '.join(used)})"
        raise ValueError(f"--out-dir {d} already holds {what}; continue it with --resume, replace it with --overwrite, "
                         "or choose another --out-dir")
    if rank == 0 and used:  # the old run's files go together: its checkpoints, logs and caches
        used += [f for f in os.listdir(d) if f.startswith("ref_logps-") or f in ("config.json", "eval.json", "last.tmp")]
        for f in used:
            if f != "final":
                path = os.path.join(d, f)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        if "final" in used:
            shutil.rmtree(os.path.join(d, "final.previous"), ignore_errors=True)
            os.replace(os.path.join(d, "final"), os.path.join(d, "final.previous"))
            print0(f"--overwrite: the previous run's model is kept in {d}/final.previous until this run completes")
    os.makedirs(d, exist_ok=True)
    return None


def check_identity(ckpt, ident, changing):
    """Refuse to resume a checkpoint of another run; name the fields that differ."""
    old = torch.load(os.path.join(ckpt, "state.pt"), weights_only=True, map_location="cpu")["identity"]
    old = json.loads(old)
    diff = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k) and k not in changing)
    if diff:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {ident.get(k)!r}" for k in diff[:6])
        raise ValueError(f"--resume: {ckpt} belongs to another run ({details}); resume with its settings, or allow "
                         f"the change with --resume-changing {','.join(diff)}, or start anew with --overwrite")


def _fsync_dir(path):
    for name in os.listdir(path):
        with open(os.path.join(path, name), "rb") as f:
            os.fsync(f.fileno())


def save_checkpoint(run_dir, name, model, dtype, state=None):
    """Write run_dir/name atomically: into name.tmp, fsynced, then swapped in by renames. A crash leaves
    either name/ or name.old/ complete, and --resume takes whichever exists."""
    final, tmp, old = (os.path.join(run_dir, name + s) for s in ("", ".tmp", ".old"))
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, dtype=dtype)
    if state is not None:
        torch.save(state, os.path.join(tmp, "state.pt"))
    _fsync_dir(tmp)
    if os.path.exists(final):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def append_metrics(run_dir, row):
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


def truncate_metrics(run_dir, step):
    """On resume: keep the metrics rows up to the checkpoint's step (a killed run may have logged more)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(path):
        rows = [line for line in open(path) if line.strip() and json.loads(line)["step"] <= step]
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            f.writelines(rows)


# -----------------------------------------------------------------------------
# data: tokenize once, attach negatives, score the reference side(s)


@dataclasses.dataclass
class TrainData:
    pos: list                # per prompt: (ids, n_prompt) of its positive
    negs: list               # per prompt: its negatives (ids, n_prompt): B per epoch, or B reused every epoch
    B: int                   # negatives per prompt in one step (0: none)
    reuse: bool              # True: the same B negatives every epoch (preference data's rejected)
    ref_pos: torch.Tensor = None  # (n,) float64: the starting model's logp of each positive
    ref_neg: torch.Tensor = None  # (n, len(negs[i])) float64: ... of each negative

    def cols(self, epoch):
        """Which of a prompt's negatives epoch e uses: [e*B, (e+1)*B), so every epoch sees fresh ones."""
        return slice(0, self.B) if self.reuse else slice(epoch * self.B, (epoch + 1) * self.B)


def neg_settings(args, records, block_size, max_prompt_len):
    """The NegativeSettings of this run, or None when the loss needs no sampled negatives."""
    spec, kind = losses.LOSSES[args.loss], "pref" if "rejected" in records[0] else "sft"
    if not spec.needs_negatives or (kind == "pref" and spec.pairs_with_rejected):
        return None
    if args.neg_filter == "wrong" and not has_checker(records):
        raise ValueError(f"--neg-filter wrong needs checkable answers: every response of {args.data} must end in "
                         "'The answer is N' (the built-in task, GSM8K)")
    chat = all(r["prompt"].startswith("\n\nHuman:") for r in records)
    builtin = os.path.abspath(args.data) == os.path.abspath(arith.DEFAULT_TRAIN)
    return NegativeSettings(
        B=args.num_negatives, epochs=args.epochs, pool=FILTER_POOL if args.neg_filter == "wrong" else 1,
        max_new_tokens=args.neg_max_new_tokens or (64 if builtin else min(320, block_size - max_prompt_len)),
        temperature=args.neg_temperature, top_k=args.neg_top_k, top_p=args.neg_top_p,
        prefix=(NEG_PREFIX if chat else "") if args.neg_prefix == "auto" else args.neg_prefix, seed=args.seed)


def load_train_data(args, records, settings, model, init_sha, lens, rank, world, device):
    """Tokenize positives and attach each prompt's negatives: (TrainData, stats of the negatives)."""
    spec, tok, (max_len, max_prompt_len) = losses.LOSSES[args.loss], get_tokenizer(), lens
    raw, reuse, stats = None, False, {}
    if spec.needs_negatives and settings is None:  # preference data: the rejected response, every epoch
        raw, reuse = "rejected", True
    elif settings is not None:
        path = args.negatives or negatives_path(args.negatives_dir, args.data, init_sha, settings, len(records))
        raw = get_negatives(model, records, args.data, settings, args.init, path, init_sha, rank, world, amp_dtype(device),
                            advice="delete it to sample anew, or pass another file with --negatives")
        if args.neg_filter == "wrong":
            raw, none_wrong = keep_wrong(records, raw, settings.B * settings.epochs)
            print0(f"negatives: kept wrong answers only; {none_wrong} of {len(records)} prompts had none, and keep theirs")
        stats = negative_shares(records, raw)
        print0("negatives: " + ", ".join(f"{v:.1%} {k.split('/')[1]}" for k, v in stats.items()) + " (by the task's checker)"
               if stats else "negatives: no checker for this data")
    pos, negs, cut = tokenize(tok, records, max_len, max_prompt_len, raw)
    print0(f"data: {len(records)} examples from {args.data}; " + truncation_report(sum(cut), len(records), max_len, max_prompt_len))
    B = 1 if reuse else (settings.B if settings else 0)
    return TrainData(pos, negs, B, reuse), stats


@torch.no_grad()
def reference_logps(model, data, sides, cache, device, amp, rank, world):
    """The starting model's log-probs of the sides the loss names (DFT's logp_0 of the negatives, DPO's s_0
    of both): scored once, before training, with eval.score (each rank a strided shard, merged by a sum),
    and cached at `cache`."""
    if os.path.exists(cache):
        print0(f"reference log-probs: reusing {cache}")
        z = np.load(cache)
        data.ref_pos, data.ref_neg = torch.from_numpy(z["pos"]), torch.from_numpy(z["neg"])
        return
    n, K = len(data.pos), len(data.negs[0])
    mine = list(range(rank, n, world))
    seqs = [data.pos[i] for i in mine] * ("pos" in sides) + [s for i in mine for s in data.negs[i]] * ("neg" in sides)
    t0 = time.time()
    lp, _ = score(model, seqs, 32, device, amp)
    ref_pos, ref_neg = torch.zeros(n, dtype=torch.float64), torch.zeros(n, K, dtype=torch.float64)  # 0 where not needed
    if "pos" in sides:
        ref_pos[mine], lp = lp[:len(mine)], lp[len(mine):]
    if "neg" in sides:
        ref_neg[mine] = lp.view(len(mine), K)
    merged = all_sum({"pos": ref_pos, "neg": ref_neg})  # each entry was written by one rank
    data.ref_pos, data.ref_neg = merged["pos"], merged["neg"]
    print0(f"reference log-probs: {len(seqs) * world:,} sequences in {time.time() - t0:.1f}s")
    if rank == 0:
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, pos=data.ref_pos.numpy(), neg=data.ref_neg.numpy())


# -----------------------------------------------------------------------------
# one optimizer step


def lr_at(step, total, lr, warmup):
    warm = max(1, int(warmup * total))
    if step < warm:
        return lr * (step + 1) / warm
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def forward_group(fwd, idx, data, epoch, device, amp, pack=False):
    """ONE forward over the prompts idx: their positives, then their B negatives each -> the loss's batch.
    pack: lay the sequences end to end in rows (data/format.py pack) instead of padding each one."""
    cols, N, B = data.cols(epoch), len(idx), data.B
    seqs = [data.pos[i] for i in idx] + [s for i in idx for s in data.negs[i][cols]]
    batch = [t.to(device) for t in (pack_seqs(seqs) if pack else collate(seqs))]  # (S, T) each, S = N * (1 + B)
    with autocast(device, amp):
        lp, n = fwd(*batch)  # through DDP's forward, so its backward hooks all-reduce the gradients
    b = {"pos": lp[:N], "pos_n": n[:N]}
    if B:
        b["neg"], b["neg_n"] = lp[N:].view(N, B), n[N:].view(N, B)  # (N, B)
    if data.ref_pos is not None:
        b["ref_pos"] = data.ref_pos[idx].float().to(device)
        if B:
            b["ref_neg"] = data.ref_neg[idx, cols].float().to(device)  # (N, B)
    return b


def micro_batches(step_prompts, data, epoch, rank, world, M):
    """This rank's share of a step, longest prompt group first (so a micro-batch pads to similar lengths),
    cut into micro-batches of M prompts. The last step of an epoch may hold fewer prompts than there are
    ranks: a rank without any gets [] and still takes part (train_step runs it at weight 0)."""
    mine = sorted(step_prompts[rank::world], key=lambda i: -max(len(s[0]) for s in [data.pos[i]] + data.negs[i][data.cols(epoch)]))
    return [mine[k:k + M] for k in range(0, len(mine), M)]


def train_step(fwd, params, opt, step_prompts, data, log_u, epoch, cfg):
    """One optimizer step, the six steps of the module docstring. Returns (sums of the step's metrics,
    weighted to be divided by the step's prompt count after all_sum; the gradient norm)."""
    spec, world = cfg["spec"], cfg["world"]
    units = (lambda idx: len(idx)) if spec.step_mean == "prompts" else \
        (lambda idx: sum(len(data.pos[i][0]) - data.pos[i][1] for i in idx))  # scored tokens, counted on the CPU
    step_units = units(step_prompts)
    batches = micro_batches(step_prompts, data, epoch, cfg["rank"], world, cfg["micro_batch_size"])        # 1.
    sums, new_u = {"loss": 0.0}, []
    for k, idx in enumerate(batches or [step_prompts[:1]]):  # no prompts: one pass at weight 0 keeps DDP in step
        with fwd.no_sync() if (world > 1 and k < len(batches) - 1) else nullcontext():  # all-reduce at the last one
            b = forward_group(fwd, idx, data, epoch, cfg["device"], cfg["amp"], cfg.get("pack", False))     # 2.
            if spec.stateful:
                b["log_u"] = log_u[idx].to(cfg["device"])
            loss, nu, met = losses.compute_loss(cfg["loss"], b, **cfg["hparams"])                         # 3.
            scale = units(idx) / step_units * world if batches else 0.0                                    # 4.
            (loss * scale).backward()
        n = len(idx) if batches else 0  # the weight-0 pass adds zeros (every rank sums the same metric names)
        sums["loss"] = sums["loss"] + loss.detach() * scale / world * len(step_prompts)  # the step's loss x prompts
        for name, v in met.items():
            if name != "loss":
                sums[name] = sums.get(name, 0.0) + v.detach().double() * n
        if nu is not None and n:
            new_u.append((idx, nu))
    gnorm = torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"] or float("inf"))                     # 5.
    if not (torch.isfinite(torch.as_tensor(sums["loss"])) and torch.isfinite(gnorm)):
        return sums, gnorm
    opt.step()
    opt.zero_grad(set_to_none=True)
    if spec.stateful:                                                                                       # 6.
        exchange_log_u(log_u, new_u, -(-len(step_prompts) // world))
    return sums, gnorm


def exchange_log_u(log_u, new_u, rows):
    """Every rank writes every rank's new log_u into its table, so u is identical everywhere after a step.
    log_u (n,) float64 on the CPU; new_u: this rank's [(prompt indices, new log_u (m,))]; rows: the most
    prompts any rank had this step (all_gather needs equal shapes, so a shorter share is padded with
    index -1). One host copy per step, one all_gather."""
    upd = torch.full((rows, 2), -1.0, dtype=torch.float64)  # (rows, 2): (prompt index, new log_u)
    mine = [(i, u) for ids, nu in new_u for i, u in zip(ids, nu.detach().double().cpu().tolist())]
    upd[:len(mine)] = torch.tensor(mine, dtype=torch.float64).view(-1, 2)
    upd = all_cat(upd)  # (rows * world, 2)
    upd = upd[upd[:, 0] >= 0]
    log_u[upd[:, 0].long()] = upd[:, 1]


# -----------------------------------------------------------------------------


def main(argv=None):
    args = get_args(argv)
    rank, world, device = setup(args.device)
    spec, amp = losses.LOSSES[args.loss], amp_dtype(device)
    hparams = {k: getattr(args, k) if getattr(args, k) is not None else h.default for k, h in spec.hparams.items()}
    torch.manual_seed(args.seed)
    model = load_model(args.init, device, args.size, args.seed)
    print0(f"model: {args.init}, {model.num_params() / 1e6:.1f}M parameters; device {device}, {world} process(es)")
    arith.ensure_default_file(args.data)
    records = load_jsonl(args.data).records[:args.max_examples]
    max_len = args.max_len or min(1024, model.config.block_size)
    if max_len > model.config.block_size:
        raise ValueError(f"--max-len {max_len} exceeds the model's block size {model.config.block_size}")
    lens = (max_len, args.max_prompt_len or max_len // 2)
    if lens[1] >= max_len:
        raise ValueError(f"--max-prompt-len ({lens[1]}) must be < --max-len ({max_len})")
    if len(records) < args.batch_size:
        raise ValueError(f"--batch-size {args.batch_size} is larger than the data ({len(records)} examples)")
    settings = neg_settings(args, records, model.config.block_size, lens[1])
    init_sha = weights_sha256(model, args.init)
    ident = run_identity(args, file_sha256(args.data), init_sha, hparams, settings, *lens)
    ckpt = claim_run_dir(args, rank)
    if ckpt:
        check_identity(ckpt, ident, [f for f in args.resume_changing.split(",") if f])
    t0 = time.time()
    data, neg_stats = load_train_data(args, records, settings, model, init_sha, lens, rank, world, device)
    timing = {"negatives_s": time.time() - t0}
    if spec.needs_ref:
        key = hashlib.sha256(json.dumps([ident, args.negatives and file_sha256(args.negatives)], sort_keys=True).encode())
        reference_logps(model, data, spec.needs_ref, os.path.join(args.out_dir, f"ref_logps-{key.hexdigest()[:16]}.npz"),
                        device, amp, rank, world)
    timing["reference_s"] = time.time() - t0 - timing["negatives_s"]
    eval_data = args.eval_data or (arith.DEFAULT_TEST if os.path.abspath(args.data) == os.path.abspath(arith.DEFAULT_TRAIN) else None)
    results = load_eval_json(args.out_dir) if ckpt else {}
    if eval_data and not args.no_eval and "before" not in results:
        results["before"] = run_eval(model, eval_data, args, lens, device, amp)
    if rank == 0:
        write_json(os.path.join(args.out_dir, "config.json"), {**vars(args), "identity": ident, "world_size": world,
                                                               "negatives_stats": neg_stats})
        if results:
            write_json(os.path.join(args.out_dir, "eval.json"), results)
    t0 = time.time()
    log_u, step = train(model, data, args, ident, hparams, ckpt, rank, world, device, amp)
    if rank == 0:  # what the run cost: sampling and reference scoring are 0 when they came from a cache
        write_json(os.path.join(args.out_dir, "timing.json"), {**timing, "train_s": time.time() - t0, "steps": step})
    if eval_data and not args.no_eval:
        results["after"] = run_eval(model, eval_data, args, lens, device, amp)
        print0(f"\nheld-out ({eval_data}):\n" + format_table({"before": results["before"], f"after {args.loss}": results["after"]}))
        if rank == 0:
            write_json(os.path.join(args.out_dir, "eval.json"), results)
    teardown()
    return model, log_u


def train(model, data, args, ident, hparams, ckpt, rank, world, device, amp):
    """The training loop: optimizer, resume, steps, logging, checkpoints, SIGTERM. Returns (log_u, step)."""
    spec, G, n = losses.LOSSES[args.loss], args.batch_size, len(data.pos)
    steps_per_epoch = -(-n // G)  # the last step of an epoch takes the n % G prompts left over
    total = steps_per_epoch * args.epochs
    stop_at = min(total, args.max_steps or total)
    save_every = args.save_every or max(1, total // 10)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},  # matrices and embeddings
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]                 # never biases or gains
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=tuple(args.adam_betas), fused=device.type == "cuda")
    log_u, step, saved = torch.zeros(n, dtype=torch.float64), 0, None  # DFT's per-prompt log u starts at 0
    if ckpt:
        st = torch.load(os.path.join(ckpt, "state.pt"), weights_only=True)
        model.load_state_dict(load_model(ckpt, device).state_dict())
        opt.load_state_dict(st["optimizer"])
        log_u, step, saved = st["log_u"], st["step"], st["step"]
        torch.set_rng_state(st["rng"])
        if rank == 0:
            truncate_metrics(args.out_dir, step)
        print0(f"resumed {ckpt} at step {step}")
    fwd = torch.compile(model) if args.compile else model
    if world > 1:
        fwd = torch.nn.parallel.DistributedDataParallel(fwd, device_ids=[device.index] if device.type == "cuda" else None)
    cfg = dict(spec=spec, loss=args.loss, hparams=hparams, rank=rank, world=world, device=device, amp=amp,
               micro_batch_size=args.micro_batch_size, grad_clip=args.grad_clip, pack=args.pack)
    print0(f"training: {args.epochs} epochs x {steps_per_epoch} steps of {G} prompts" + (f" (the last {n % G})" if n % G else "")
           + f" ({G // world // args.micro_batch_size} micro-batches of {args.micro_batch_size} per rank); {args.loss} {hparams}")
    term = []
    prev_handler = signal.signal(signal.SIGTERM, lambda *_: term.append(True))  # restored when the loop ends
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    t_start, first = time.time(), step
    run = dict(data=data, model=model, peak=peak, out_dir=args.out_dir, log_u=log_u if spec.stateful else None,
               stop_at=stop_at, t_start=t_start, first=first, rank=rank, world=world)  # what a log line reads
    try:  # a later SIGTERM (say, while compare.py scores this model) must not land in this run's flag
        while step < stop_at:
            epoch, s = divmod(step, steps_per_epoch)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
            prompts = order[s * G:(s + 1) * G].tolist()
            lr = lr_at(step, total, args.lr, args.warmup)
            for gr in opt.param_groups:
                gr["lr"] = lr
            t0 = time.time()
            sums, gnorm = train_step(fwd, params, opt, prompts, data, log_u, epoch, cfg)
            if not (torch.isfinite(torch.as_tensor(sums["loss"])) and torch.isfinite(gnorm)):
                what = "gradient norm" if torch.isfinite(torch.as_tensor(sums["loss"])) else "loss"
                fail(f"non-finite {what} at step {step + 1}; the weights were not updated; " +
                     (f"this run's last checkpoint is {args.out_dir}/last (step {saved})" if saved else "this run saved no checkpoint"))
            step += 1
            if step % args.log_every == 0 or step == stop_at:
                log_step(sums, gnorm, prompts, epoch, step, lr, time.time() - t0, run)
            stop = bool(all_sum({"term": float(bool(term))})["term"]) if world > 1 else bool(term)
            if (step % save_every == 0 or stop) and step < stop_at:
                checkpoint(args.out_dir, model, opt, log_u, step, ident, rank)
                saved = step
            if stop:
                print0(f"SIGTERM: saved {args.out_dir}/last at step {step}; continue with --resume --out-dir {args.out_dir}")
                teardown()
                raise SystemExit(143)
    finally:
        signal.signal(signal.SIGTERM, prev_handler)
    if step > first or not os.path.exists(os.path.join(args.out_dir, "last")):
        checkpoint(args.out_dir, model, opt, log_u, step, ident, rank)
    if step == total and rank == 0:
        save_checkpoint(args.out_dir, "final", model, getattr(torch, args.save_dtype))  # without optimizer state
        shutil.rmtree(os.path.join(args.out_dir, "final.previous"), ignore_errors=True)
    print0(f"done: {step} steps in {time.time() - t_start:.0f}s; " + (f"model in {args.out_dir}/final" if step == total else
           f"stopped at --max-steps; continue with --resume --out-dir {args.out_dir}"))
    return log_u, step


def checkpoint(out_dir, model, opt, log_u, step, ident, rank):
    if rank == 0:
        state = {"optimizer": opt.state_dict(), "log_u": log_u, "step": step, "rng": torch.get_rng_state(),
                 "identity": json.dumps(ident)}
        save_checkpoint(out_dir, "last", model, torch.float32, state)
    if dist.is_initialized():
        dist.barrier()


def log_step(sums, gnorm, prompts, epoch, step, lr, dt, run):
    """Sum the step's metrics over ranks (one all-reduce), print one line, append it to metrics.jsonl."""
    seqs = [s for i in prompts for s in [run["data"].pos[i]] + run["data"].negs[i][run["data"].cols(epoch)]]
    row = {k: v.item() / len(prompts) for k, v in all_sum(sums).items()}
    row.update(step=step, epoch=epoch, lr=lr, grad_norm=gnorm.item(), tok_per_s=sum(len(ids) - 1 for ids, _ in seqs) / dt)
    if run["peak"]:  # MFU only where the GPU's bf16 peak is known
        row["mfu"] = model_flops(run["model"].config, run["model"].num_params(), seqs) / dt / (run["peak"] * run["world"])
    if run["log_u"] is not None:
        row["log_u/table_mean"] = run["log_u"].mean().item()
    eta = (time.time() - run["t_start"]) / (step - run["first"]) * (run["stop_at"] - step)
    print0(f"step {step:4d}/{run['stop_at']} | loss {row['loss']:.4f} | "
           + " | ".join(f"{k} {v:.3f}" for k, v in row.items() if k not in ("loss", "step", "epoch", "lr", "tok_per_s"))
           + f" | lr {lr:.2e} | {row['tok_per_s']:.0f} tok/s | eta {eta:.0f}s")
    if run["rank"] == 0:
        append_metrics(run["out_dir"], row)


def load_eval_json(run_dir):
    path = os.path.join(run_dir, "eval.json")
    return json.load(open(path)) if os.path.exists(path) else {}


def run_eval(model, path, args, lens, device, amp):
    arith.ensure_default_file(path)
    records = load_jsonl(path).records[:args.eval_max_examples]
    return evaluate(model, records, max_len=lens[0], max_prompt_len=lens[1], device=device, amp=amp,
                    max_new_tokens=args.eval_max_new_tokens)


if __name__ == "__main__":
    run_main(main)
