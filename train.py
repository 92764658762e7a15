"""
Fine-tune a GPT-2 with SFT, DFT, DFT2, ASFT or DPO, on one process or many (torch DDP via torchrun).

With no flags besides --loss it runs the built-in default end to end, offline, on a CPU in minutes:
load the shipped base model (data/base), generate the arithmetic task (data/arith/, if missing),
sample the DFT negatives from the base model (cached under out/negatives/, reused next time), score
the held-out split, train, score it again, and print a before/after table.

    python train.py --loss dft                                        # one process
    torchrun --standalone --nproc_per_node=2 train.py --loss dft      # 2 processes (gloo on CPU)
    python train.py --loss sft --max-steps 20 --no-eval --out-dir out/quick   # a short run
    python train.py --help                                            # every flag

Read main() first: the whole procedure, in the order it runs. Then train(), the loop; train_step(),
one optimizer step; and exchange_log_u(), how DFT's per-prompt state stays the same on every
process. The losses are in losses.py, DFT's negatives in negatives.py, and the run directory
(config.json, metrics, checkpoints, --resume, SIGTERM) in rundir.py.
"""
import hashlib
import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

import losses
from common import (DEVICE_HELP, ArgumentParser, all_cat, all_sum, amp_dtype, atomic_path,
                    autocast, below_one, fail, file_sha256, fraction, nonneg_float, nonneg_int,
                    open_fraction, positive_int, print0, rank_and_world, run_main, setup, teardown)
from data import arith
from data.format import (MAX_LEN_HELP, MAX_PROMPT_LEN_HELP, collate, load_jsonl, pack,
                         resolve_lengths, tokenize, truncation_report)
from data.tokenizer import get_tokenizer
from eval import MAX_NEW_TOKENS, EvalSettings, evaluate, format_table, score
from model import DEFAULT_INIT, PRESETS, load_model, model_flops, peak_flops, stored_dtype
from negatives import (CHAT_PREFIX, NegativeSettings, epoch_columns, get_negatives, keep_wrong,
                       negative_shares, negatives_path, origin_of, read_header)
from rundir import RunDir, run_identity, stop_requests

# --neg-filter wrong samples this many times more negatives, then keeps wrong ones
FILTER_POOL = 4

# -----------------------------------------------------------------------------
# flags: each checked where it is declared, all before any work


def get_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    for add_flags in (what_flags, negatives_flags, optimization_flags, running_flags):
        add_flags(p)
    args = p.parse_args(argv)
    check_args(args)
    return args


def what_flags(p):
    g = p.add_argument_group("what to train")
    g.add_argument("--loss", required=True, choices=sorted(losses.LOSSES), help="the loss")
    g.add_argument("--init", default=DEFAULT_INIT, help="starting weights: a preset (gpt2, "
                   "gpt2-medium, ...: downloaded), a .safetensors file, a checkpoint directory, or "
                   "'scratch' for random weights of --size")
    g.add_argument("--size", default="nano", choices=list(PRESETS), help="size for --init scratch")
    g.add_argument("--data", default=arith.DEFAULT_TRAIN,
                   help="training JSONL: {prompt, response} or {prompt, chosen, rejected}")
    g.add_argument("--max-examples", type=positive_int, default=None,
                   help="train on the first N examples of --data (default: all)")
    g.add_argument("--out-dir", default=None, help="run directory (default: out/<loss>)")
    g = p.add_argument_group("loss hyperparameters (docs/ALGORITHMS.md; each loss reads its own)")
    for name, users in hparam_flags().items():
        g.add_argument(f"--{name.replace('_', '-')}", type=float, help=hparam_help(users))


def negatives_flags(p):
    g = p.add_argument_group("negatives (sampled once from the starting model: negatives.py)")
    g.add_argument("--negatives", default=None, help="negatives file, or where to sample them "
                   "(default: a file in --negatives-dir named after the data, the weights and "
                   "every sampling setting)")
    g.add_argument("--negatives-allow", default="", metavar="FIELDS", help="comma-separated "
                   "header fields of --negatives that may differ from this run's settings, on "
                   "purpose (e.g. init_sha256: negatives of another model)")
    g.add_argument("--negatives-dir", default="out/negatives", help="cache of negatives, shared")
    g.add_argument("--num-negatives", type=positive_int, default=2,
                   help="B: negatives per prompt per epoch")
    g.add_argument("--neg-max-new-tokens", type=positive_int, default=None,
                   help="max tokens per negative (default: 64 on the built-in task, else "
                   "min(320, the room --max-prompt-len leaves in the model's block size))")
    g.add_argument("--neg-temperature", type=nonneg_float, default=0.7, help="sampling temperature")
    g.add_argument("--neg-top-k", type=nonneg_int, default=50, help="top-k of sampling (0: off)")
    g.add_argument("--neg-top-p", type=open_fraction, default=1.0, help="top-p of sampling")
    g.add_argument("--neg-prefix", default="auto", help="text put before the prompt while "
                   f"sampling only; 'auto': the published '{CHAT_PREFIX}' for chat data (prompts "
                   "starting '\\n\\nHuman:'), none otherwise; '' for none")
    g.add_argument("--neg-filter", default="none", choices=["none", "wrong"],
                   help=f"'wrong': sample {FILTER_POOL}x more and keep the answers the task's "
                   "checker marks wrong (needs checkable answers)")


def optimization_flags(p):
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=positive_int, default=2, help="passes over the data")
    g.add_argument("--batch-size", type=positive_int, default=32,
                   help="prompts per optimizer step, over all ranks")
    g.add_argument("--micro-batch-size", type=positive_int, default=8,
                   help="prompts per forward pass on one rank")
    g.add_argument("--lr", type=nonneg_float, default=None, help="peak learning rate of AdamW "
                   "(default: the loss's lr chosen on the built-in task's validation split: " +
                   ", ".join(f"{name} {spec.lr:.3g}" for name, spec in losses.LOSSES.items()) + ")")
    g.add_argument("--warmup", type=fraction, default=0.1,
                   help="fraction of steps of linear warmup, then cosine decay to 0")
    g.add_argument("--weight-decay", type=nonneg_float, default=0.0, help="on matrices only")
    g.add_argument("--adam-betas", type=below_one, nargs=2, default=(0.9, 0.999),
                   metavar=("B1", "B2"), help="AdamW betas (the published recipe's)")
    g.add_argument("--grad-clip", type=nonneg_float, default=1.0,
                   help="max global gradient norm (0: off)")
    g.add_argument("--max-len", type=positive_int, default=None,
                   help=MAX_LEN_HELP + " (default: min(1024, the model's block size))")
    g.add_argument("--max-prompt-len", type=positive_int, default=None,
                   help=MAX_PROMPT_LEN_HELP + " (default: max-len / 2)")
    g.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many "
                   "steps; the schedule still spans all epochs (default: all)")
    g.add_argument("--seed", type=int, default=0, help="data order, negatives, initialization")


def running_flags(p):
    g = p.add_argument_group("running")
    g.add_argument("--device", default="auto", help=DEVICE_HELP)
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--pack", action="store_true", help="pack each micro-batch's sequences end to "
                   "end instead of padding them (worth it when lengths vary a lot, e.g. GSM8K)")
    g.add_argument("--log-every", type=positive_int, default=5, help="log metrics every N steps")
    g.add_argument("--save-every", type=positive_int, default=None, help="checkpoint last/ every N "
                   "steps (default: about every 10%% of the run; also at the end, on SIGTERM and "
                   "on Ctrl-C)")
    g.add_argument("--save-dtype", default="float32", choices=["float32", "bfloat16"],
                   help="dtype of final/ (last/ always keeps fp32, for an exact --resume)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out-dir from "
                   "last/ (refused when its identity differs: loss, data, weights, batch, seed...)")
    g.add_argument("--resume-changing", default="", metavar="FIELDS",
                   help="comma-separated identity fields --resume may change (e.g. epochs)")
    g.add_argument("--overwrite", action="store_true", help="replace the run in --out-dir (its "
                   "final/ is kept until this run's own final/ is complete)")
    g.add_argument("--no-eval", action="store_true", help="skip scoring the held-out split")
    g.add_argument("--eval-data", default=None, help=f"held-out JSONL (default: "
                   f"{arith.DEFAULT_TEST} on the built-in task, none otherwise)")
    g.add_argument("--eval-max-examples", type=positive_int, default=500,
                   help="score at most this many held-out examples")
    g.add_argument("--eval-max-new-tokens", type=positive_int, default=MAX_NEW_TOKENS,
                   help="greedy tokens per prompt for exact match")


def hparam_flags():
    """{hyperparameter: [(loss, HParam)]}: one flag per name, shared by the losses that take it."""
    flags = {}
    for loss, spec in losses.LOSSES.items():
        for name, h in spec.hparams.items():
            flags.setdefault(name, []).append((loss, h))
    return flags


def hparam_help(users):
    texts = list(dict.fromkeys(h.help for _, h in users))
    text = texts[0] if len(texts) == 1 else "; ".join(f"{loss}: {h.help}" for loss, h in users)
    return f"{text} (default: " + ", ".join(f"{h.default} for {loss}" for loss, h in users) + ")"


def check_args(a):
    """What no single flag's type can check: how the flags combine."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if a.batch_size % world or (a.batch_size // world) % a.micro_batch_size:
        raise ValueError(f"--batch-size {a.batch_size} must be divisible by (processes {world} x "
                         f"--micro-batch-size {a.micro_batch_size})")
    if a.resume and a.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    for name, users in hparam_flags().items():
        value, flag = getattr(a, name), f"--{name.replace('_', '-')}"
        if value is not None and a.loss not in dict(users):
            owners = ", ".join(loss for loss, _ in users)
            raise ValueError(f"{flag} is a hyperparameter of {owners}, not of {a.loss}")
        if value is not None:
            dict(users)[a.loss].check(flag, value)  # this loss's own range
    for flag in ("data", "eval_data", "negatives"):
        path = getattr(a, flag)
        if path and os.path.isdir(path):
            raise ValueError(f"{path}: is a directory, expected a JSONL file")
    if a.eval_data and not a.no_eval and not os.path.exists(a.eval_data):
        raise ValueError(f"--eval-data {a.eval_data}: no such file")
    a.out_dir = a.out_dir or os.path.join("out", a.loss)
    a.lr = losses.LOSSES[a.loss].lr if a.lr is None else a.lr


# -----------------------------------------------------------------------------
# the procedure


def main(argv=None):
    args = get_args(argv)
    rank, world, device = setup(args.device)
    spec = losses.LOSSES[args.loss]
    hparams = {k: h.default if getattr(args, k) is None else getattr(args, k)
               for k, h in spec.hparams.items()}
    torch.manual_seed(args.seed)
    model = load_model(args.init, device, args.size, args.seed)
    print0(f"model: {args.init}, {model.num_params() / 1e6:.1f}M parameters; {device}, "
           f"{world} process(es)")
    # what the run is, fixed before any work: its data, lengths, negatives and identity
    arith.ensure_default_file(args.data)
    records = load_jsonl(args.data).records[:args.max_examples]
    if len(records) < args.batch_size:
        raise ValueError(f"--batch-size {args.batch_size} is larger than the data "
                         f"({len(records)} examples)")
    lengths = resolve_lengths(model.config.block_size, args.max_len, args.max_prompt_len)
    settings = negative_settings(args, records, model.config.block_size, lengths)
    origin = origin_of(args.data, len(records), model, args.init)
    identity = run_identity(vars(args), hparams=hparams, lengths=lengths,
                            data_sha256=origin.data_sha256, init_sha256=origin.init_sha256,
                            negatives=asdict(settings) if settings else None)
    with RunDir(args.out_dir, identity) as run:
        checkpoint = run.claim(args.resume, args.overwrite, split(args.resume_changing))
        # the data: each prompt's answer and its negatives, tokenized once
        t0 = time.time()
        data, negatives_info = training_data(args, records, settings, origin, model, lengths)
        timing = {"negatives_s": time.time() - t0}
        # the starting model's log-probs of what the loss measures against (DFT: the negatives)
        if spec.needs_ref:
            cache = run.file(f"ref_logps-{reference_key(identity, args)}.npz")
            reference_logps(model, data, spec.needs_ref, cache)
        timing["reference_s"] = time.time() - t0 - timing["negatives_s"]
        # the held-out split before training (a resumed run keeps its first "before")
        eval_data = held_out_data(args)
        results = run.read("eval.json") if checkpoint else {}
        if eval_data and "before" not in results:
            results["before"] = held_out(model, eval_data, args, lengths)
        run.write("config.json", {**vars(args), "identity": identity, "world_size": world,
                                  **negatives_info})
        if results:
            run.write("eval.json", results)
        t0 = time.time()
        step = train(model, data, args, hparams, run, checkpoint)
        # what the run cost; sampling and reference scoring are 0 when they came from a cache
        run.write("timing.json", {**timing, "train_s": time.time() - t0, "steps": step})
        if eval_data:
            results["after"] = held_out(model, eval_data, args, lengths)
            table = {"before": results["before"], f"after {args.loss}": results["after"]}
            print0(f"\nheld-out ({eval_data}):\n" + format_table(table))
            run.write("eval.json", results)
    teardown()
    return model, data.log_u


def train(model, data, args, hparams, run, checkpoint):
    """The training loop: the schedule, resume, steps, logging, checkpoints. Returns the step."""
    rank, world = rank_and_world()
    n, batch = len(data.pos), args.batch_size
    # the last step of an epoch takes the n % batch prompts left over
    steps_per_epoch = math.ceil(n / batch)
    total = steps_per_epoch * args.epochs
    stop_at = min(total, args.max_steps or total)
    save_every = args.save_every or max(1, total // 10)
    opt = make_optimizer(model, args)
    step = resume(run, checkpoint, model, opt, data) if checkpoint else 0
    wrapped = torch.compile(model) if args.compile else model
    if world > 1:
        device = model.lm_head_weight.device
        wrapped = torch.nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[device.index] if device.type == "cuda" else None)
    cfg = StepConfig(args.loss, hparams, args.micro_batch_size, args.grad_clip, args.pack,
                     amp_dtype(model.lm_head_weight.device))
    print0(f"training: {args.epochs} epochs x {steps_per_epoch} steps of {batch} prompts"
           + (f" (the last {n % batch})" if n % batch else "")
           + f", micro-batches of {args.micro_batch_size} per rank; {args.loss} {hparams}, "
           f"lr {args.lr:g}")
    clock = Clock(model, step, stop_at, losses.LOSSES[args.loss].stateful)
    with stop_requests() as requests:
        while step < stop_at:
            epoch, k = divmod(step, steps_per_epoch)
            # a fixed permutation per epoch: the same seed gives the same data order
            seed = torch.Generator().manual_seed(args.seed * 1000 + epoch)
            prompts = torch.randperm(n, generator=seed)[k * batch:(k + 1) * batch].tolist()
            lr = lr_at(step, total, args.lr, args.warmup)
            for group in opt.param_groups:
                group["lr"] = lr
            t0 = time.time()
            sums, maxes, grad_norm = train_step(wrapped, opt, prompts, epoch, data, cfg)
            if not (math.isfinite(float(sums["loss"])) and torch.isfinite(grad_norm)):
                stop_non_finite(sums, step, run)
            step += 1
            if step % args.log_every == 0 or step == stop_at:
                row = clock.row(sums, maxes, prompts, epoch, data, time.time() - t0)
                row.update(step=step, epoch=epoch, lr=lr, grad_norm=grad_norm.item())
                clock.print(row)
                run.log(row)
            # one process's signal stops every rank, at the same step
            stop = bool(all_sum({"stop": float(bool(requests))})["stop"]) if world > 1 \
                else bool(requests)
            if step % save_every == 0 or stop or step == stop_at:
                state = {"optimizer": opt.state_dict(), "log_u": data.log_u, "step": step,
                         "rng": torch.get_rng_state()}
                run.save_last(model, state)
            if stop:
                finish_on_request(run, model, args, (step, total), requests)
    if step == total:
        run.save_final(model, getattr(torch, args.save_dtype))
    done = f"model in {args.out_dir}/final" if step == total else \
        "stopped at --max-steps; continue with --resume"
    print0(f"done: {step} steps in {time.time() - clock.t_start:.0f}s; {done}")
    return step


def lr_at(step, total, lr, warmup):
    """Linear warmup over the first `warmup` fraction of the steps, then cosine decay to 0."""
    warm = max(1, int(warmup * total))
    if step < warm:
        return lr * (step + 1) / warm
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


# -----------------------------------------------------------------------------
# one optimizer step


@dataclass(frozen=True)
class StepConfig:
    """What every step needs besides its prompts, fixed for the run."""
    loss: str
    hparams: dict
    micro_batch_size: int
    grad_clip: float
    pack: bool
    amp: object = None  # the autocast dtype (common.amp_dtype), None = fp32


def train_step(wrapped, opt, step_prompts, epoch, data, cfg):
    """One optimizer step over step_prompts (every rank's); wrapped: the model as training calls
    it (under torch.compile and DDP, when they are on). Returns (this rank's sums and maxima of
    the step's metrics, the global gradient norm); sums are weighted by prompts, to be divided by
    the step's prompt count once summed over ranks."""
    rank, world = rank_and_world()
    spec = losses.LOSSES[cfg.loss]
    # this rank's share of the step's prompts, longest first, in micro-batches
    batches = micro_batches(step_prompts, data, epoch, rank, world, cfg.micro_batch_size)
    step_count = mean_count(step_prompts, spec, data)
    sums, maxes, new_log_u = {"loss": 0.0}, {}, []
    # a rank without prompts (a last step smaller than the world) runs one pass at weight 0, so
    # that DDP's all-reduce still meets every rank
    for k, idx in enumerate(batches or [step_prompts[:1]]):
        # the gradients add up over micro-batches; DDP all-reduces them at the last one only
        # (setting the flag does what the no_sync() context manager does, in one line)
        if world > 1:
            wrapped.require_backward_grad_sync = k == len(batches) - 1 or not batches
        batch = forward_group(wrapped, idx, epoch, data, cfg)
        if spec.stateful:
            # DFT's u of these prompts, as it stands before this visit (one visit per epoch)
            batch["log_u"] = data.log_u[idx].to(batch["pos"].device)
        loss, new_u, metrics = losses.compute_loss(cfg.loss, batch, **cfg.hparams)
        # the step's loss is the mean over ITS prompts (SFT: its scored tokens), so this
        # micro-batch's mean weighs its share of them; x world, since DDP averages the ranks'
        # gradients where the step needs their sum
        scale = mean_count(idx, spec, data) / step_count * world if batches else 0.0
        (loss * scale).backward()
        n = len(idx) if batches else 0  # the weight-0 pass adds zeros
        sums["loss"] = sums["loss"] + loss.detach() * scale / world * len(step_prompts)
        for name, value in metrics.items():
            if name.endswith("/max"):
                maxes[name] = torch.maximum(maxes.get(name, value), value.detach())
            elif name != "loss":
                sums[name] = sums.get(name, 0.0) + value.detach().double() * n
        if new_u is not None and n:
            new_log_u.append((idx, new_u))
    # in the model's order: the order of a sum changes its rounding
    params = [p for p in wrapped.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or float("inf"))
    # a non-finite loss on any rank makes the all-reduced gradients non-finite on every rank, so
    # every rank sees it here and all stop together, before the update
    if not torch.isfinite(grad_norm) or not math.isfinite(float(sums["loss"])):
        return sums, maxes, grad_norm
    opt.step()
    opt.zero_grad(set_to_none=True)
    if spec.stateful:
        exchange_log_u(data.log_u, new_log_u, math.ceil(len(step_prompts) / world))
    return sums, maxes, grad_norm


def exchange_log_u(log_u, new_log_u, rows):
    """DFT's u across ranks: every rank writes every rank's new log_u into its own table, so the
    table is identical everywhere after every step. log_u (n,) float64 on the CPU; new_log_u: this
    rank's [(prompt indices, new log_u (m,))]; rows: the most prompts any rank had this step.

    Why after every step: the published code merges the ranks' tables at the end of each epoch,
    which is exact when each prompt is seen once per epoch. Exchanging after every step keeps the
    table complete at every step, so a mid-epoch checkpoint or resume holds every update."""
    mine = [(i, u) for ids, new in new_log_u for i, u in zip(ids, new.double().cpu().tolist())]
    # all_gather needs equal shapes: a shorter share is padded with prompt index -1
    updates = torch.full((rows, 2), -1.0, dtype=torch.float64)  # (rows, 2): (prompt, new log_u)
    updates[:len(mine)] = torch.tensor(mine, dtype=torch.float64).view(-1, 2)
    updates = all_cat(updates)  # (rows * world, 2)
    updates = updates[updates[:, 0] >= 0]
    log_u[updates[:, 0].long()] = updates[:, 1]


def mean_count(prompts, spec, data):
    """What the step's loss is a mean over: prompts, or (SFT) scored tokens, counted on the CPU."""
    if spec.step_mean == "prompts":
        return len(prompts)
    return sum(len(data.pos[i][0]) - data.pos[i][1] for i in prompts)


def micro_batches(step_prompts, data, epoch, rank, world, size):
    """This rank's share of a step, longest prompt group first (so a micro-batch pads to similar
    lengths), in micro-batches of `size` prompts. A rank may get none: []."""
    mine = sorted(step_prompts[rank::world], key=lambda i: -data.longest(i, epoch))
    return [mine[k:k + size] for k in range(0, len(mine), size)]


def forward_group(wrapped, idx, epoch, data, cfg):
    """ONE forward over the prompts idx: their answers, then each one's B negatives of this epoch
    -> the loss's batch. cfg.pack lays the sequences end to end in rows (data/format.py pack)."""
    N, B, cols = len(idx), data.B, data.neg_slice(epoch)
    seqs = [data.pos[i] for i in idx] + [s for i in idx for s in data.negs[i][cols]]
    device = next(wrapped.parameters()).device
    rows = pack(seqs) if cfg.pack else collate(seqs)  # (S, T) each, S = N * (1 + B)
    with autocast(device, cfg.amp):
        # through DDP's forward, so that its backward hooks all-reduce the gradients
        logps, n_tokens = wrapped(*[t.to(device) for t in rows])  # (S,) each
    batch = {"pos": logps[:N], "pos_n": n_tokens[:N]}
    if B:
        batch["neg"], batch["neg_n"] = logps[N:].view(N, B), n_tokens[N:].view(N, B)  # (N, B)
    if data.ref_pos is not None:
        batch["ref_pos"] = data.ref_pos[idx].float().to(device)
        if B:
            batch["ref_neg"] = data.ref_neg[idx, cols].float().to(device)  # (N, B)
    return batch


# -----------------------------------------------------------------------------
# the data: answers, negatives, reference log-probs


@dataclass
class TrainData:
    pos: list  # per prompt: (ids, n_prompt) of its answer
    negs: list  # per prompt: its negatives (ids, n_prompt), B per epoch (or B reused)
    B: int  # negatives per prompt in one step (0: none)
    reuse: bool  # True: the same B negatives every epoch (a preference file's rejected)
    ref_pos: torch.Tensor = None  # (n,) float64: the starting model's logp of each answer
    ref_neg: torch.Tensor = None  # (n, len(negs[i])) float64: ... of each negative
    log_u: torch.Tensor = None  # (n,) float64: DFT's per-prompt log u, kept for the whole run

    def __post_init__(self):
        # log u starts at 0. At tau = 1 that is the exact value of DFT's normalizer for any weights
        # (pi_theta sums to 1 over all answers); for other tau, and for DFT2, it is only a first
        # guess, which the moving average replaces on the prompt's first visit
        if self.log_u is None:
            self.log_u = torch.zeros(len(self.pos), dtype=torch.float64)

    def neg_slice(self, epoch):
        """Which of a prompt's negatives epoch e uses."""
        return slice(0, self.B) if self.reuse else epoch_columns(epoch, self.B)

    def longest(self, i, epoch):
        """The length of prompt i's longest sequence this epoch (its answer or a negative)."""
        return max(len(ids) for ids, _ in [self.pos[i]] + self.negs[i][self.neg_slice(epoch)])


def negative_settings(args, records, block_size, lengths):
    """The NegativeSettings of this run, or None when the loss samples no negatives."""
    spec, preference = losses.LOSSES[args.loss], "rejected" in records[0]
    if not spec.needs_negatives or (preference and spec.pairs_with_rejected):
        return None
    if args.neg_filter == "wrong":
        arith.require_checker(records, f"--neg-filter wrong (on {args.data})")
    chat = all(r["prompt"].startswith("\n\nHuman:") for r in records)
    prefix = (CHAT_PREFIX if chat else "") if args.neg_prefix == "auto" else args.neg_prefix
    # sampling must leave a prompt at least what training keeps of it: --max-prompt-len tokens
    room = block_size - lengths[1] - len(get_tokenizer().encode_ordinary(prefix))
    new_tokens = args.neg_max_new_tokens or (64 if arith.is_builtin(args.data) else min(320, room))
    if new_tokens > room:
        raise ValueError(f"--neg-max-new-tokens {new_tokens} leaves less than --max-prompt-len "
                         f"{lengths[1]} tokens of the prompt in the model's {block_size} "
                         f"positions: use at most {room}")
    return NegativeSettings(
        B=args.num_negatives, epochs=args.epochs, max_new_tokens=new_tokens,
        pool=FILTER_POOL if args.neg_filter == "wrong" else 1, temperature=args.neg_temperature,
        top_k=args.neg_top_k, top_p=args.neg_top_p, prefix=prefix, seed=args.seed)


def training_data(args, records, settings, origin, model, lengths):
    """Tokenize the answers and attach each prompt's negatives. -> (TrainData, what config.json
    records of the negatives: their file, its header, the checker's shares)."""
    spec, info, negatives = losses.LOSSES[args.loss], {}, None
    reuse = spec.needs_negatives and settings is None
    if reuse:  # preference data: the rejected response, every epoch
        negatives = "rejected"
    elif settings is not None:
        path = args.negatives or negatives_path(args.negatives_dir, settings, origin)
        allow = split(args.negatives_allow)
        negatives = get_negatives(model, records, settings, origin, path, allow)
        if args.neg_filter == "wrong":
            negatives, none_wrong = keep_wrong(records, negatives, settings.B * settings.epochs)
            print0(f"negatives: kept the wrong answers; {none_wrong} of {len(records)} prompts "
                   "have none")
        shares = negative_shares(records, negatives)
        info = {"negatives_file": path, "negatives_header": read_header(path),
                "negatives_stats": shares}
        said = ", ".join(f"{v:.1%} {k.split('/')[1]}" for k, v in shares.items())
        print0(f"negatives: {said} (by the task's checker)" if said else "negatives: no checker")
    pos, negs, cut = tokenize(get_tokenizer(), records, *lengths, negatives)
    print0(f"data: {len(records)} examples from {args.data}; "
           + truncation_report(sum(cut), len(records), *lengths))
    B = 1 if reuse else (settings.B if settings else 0)
    return TrainData(pos, negs, B, reuse), info


@torch.no_grad()
def reference_logps(model, data, sides, cache):
    """The starting model's log-probs of the sides the loss names (DFT's logp_0 of the negatives, at
    temperature 1; DPO's s_0 of both): scored once, before training, with eval.score (each rank a
    strided shard, merged by a sum), and cached."""
    if os.path.exists(cache):
        print0(f"reference log-probs: reusing {cache}")
        data.ref_pos, data.ref_neg = read_reference(cache, data)
        return
    rank, world = rank_and_world()
    n, K = len(data.pos), len(data.negs[0])
    mine = list(range(rank, n, world))
    seqs = [data.pos[i] for i in mine] if "pos" in sides else []
    seqs += [s for i in mine for s in data.negs[i]] if "neg" in sides else []
    t0 = time.time()
    logps, _ = score(model, seqs, 32, amp_dtype(model.lm_head_weight.device))
    # 0 where a side is not needed; each entry is written by one rank, so a sum merges them
    ref_pos, ref_neg = torch.zeros(n, dtype=torch.float64), torch.zeros(n, K, dtype=torch.float64)
    if "pos" in sides:
        ref_pos[mine], logps = logps[:len(mine)], logps[len(mine):]
    if "neg" in sides:
        ref_neg[mine] = logps.view(len(mine), K)
    merged = all_sum({"pos": ref_pos, "neg": ref_neg})
    data.ref_pos, data.ref_neg = merged["pos"], merged["neg"]
    print0(f"reference log-probs: {len(seqs) * world:,} sequences in {time.time() - t0:.1f}s")
    if rank == 0:
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, pos=data.ref_pos.numpy(), neg=data.ref_neg.numpy())


def read_reference(cache, data):
    try:
        with np.load(cache) as z:
            pos, neg = torch.from_numpy(z["pos"]), torch.from_numpy(z["neg"])
        assert pos.shape == (len(data.pos),) and neg.shape == (len(data.pos), len(data.negs[0]))
    except Exception:
        raise ValueError(f"{cache}: damaged reference log-probs; delete it (it is scored "
                         "again)") from None
    return pos, neg


def reference_key(identity, args):
    """The reference log-probs depend on the run's identity and on the negatives file's bytes."""
    negatives_sha = bool(args.negatives) and os.path.exists(args.negatives) and \
        file_sha256(args.negatives)
    key = json.dumps([identity, negatives_sha], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


# -----------------------------------------------------------------------------
# bookkeeping: optimizer, resume, held-out scores, log lines, stops


def make_optimizer(model, args):
    params = [p for p in model.parameters() if p.requires_grad]
    # weight decay on matrices and embeddings, never on biases or gains
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = model.lm_head_weight.is_cuda
    return torch.optim.AdamW(groups, lr=args.lr, betas=tuple(args.adam_betas), fused=fused)


def resume(run, checkpoint, model, opt, data):
    """Load a checkpoint's weights and training state; returns its step."""
    state = run.load_state(checkpoint)
    if stored_dtype(checkpoint) != "float32":
        print0(f"{checkpoint} holds {stored_dtype(checkpoint)} weights, not fp32: this resume "
               "continues from rounded weights and will not equal an uninterrupted run")
    model.load_state_dict(load_model(checkpoint, model.lm_head_weight.device).state_dict())
    opt.load_state_dict(state["optimizer"])
    data.log_u = state["log_u"]
    torch.set_rng_state(state["rng"])
    run.truncate_log(state["step"])
    print0(f"resumed {checkpoint} at step {state['step']}")
    return state["step"]


def held_out_data(args):
    """--eval-data, or the built-in task's test split when training on the built-in task."""
    if args.no_eval:
        return None
    return args.eval_data or (arith.DEFAULT_TEST if arith.is_builtin(args.data) else None)


def held_out(model, path, args, lengths):
    arith.ensure_default_file(path)
    records = load_jsonl(path).records[:args.eval_max_examples]
    amp = amp_dtype(model.lm_head_weight.device)
    return evaluate(model, records, None, EvalSettings(*lengths, args.eval_max_new_tokens, amp=amp))


class Clock:
    """A log line's numbers: the step's metrics (summed or maxed over ranks), speed, MFU, ETA."""

    def __init__(self, model, first_step, stop_at, stateful):
        self.model, self.stateful = model, stateful
        self.first_step, self.stop_at = first_step, stop_at
        self.t_start = time.time()
        device = model.lm_head_weight.device
        # MFU only where the GPU's bf16 peak is known
        self.peak = None
        if device.type == "cuda":
            self.peak = peak_flops(torch.cuda.get_device_name(device))

    def row(self, sums, maxes, prompts, epoch, data, seconds):
        """The step's means over its prompts (one all-reduce), and its true maxima (one more)."""
        row = {k: v.item() / len(prompts) for k, v in all_sum(sums).items()}
        if maxes:
            row.update({k: v.item() for k, v in all_sum(maxes, op="max").items()})
        if self.stateful:
            row["log_u/table_mean"] = data.log_u.mean().item()
        seqs = [s for i in prompts for s in [data.pos[i]] + data.negs[i][data.neg_slice(epoch)]]
        row["tok_per_s"] = sum(len(ids) - 1 for ids, _ in seqs) / seconds
        if self.peak:
            flops = model_flops(self.model.config, self.model.num_params(), seqs)
            row["mfu"] = flops / seconds / (self.peak * rank_and_world()[1])
        return row

    def print(self, row):
        eta = (time.time() - self.t_start) / (row["step"] - self.first_step) * \
            (self.stop_at - row["step"])
        hidden = ("loss", "step", "epoch", "lr", "tok_per_s")
        shown = " | ".join(f"{k} {v:.3f}" for k, v in row.items() if k not in hidden)
        print0(f"step {row['step']:4d}/{self.stop_at} | loss {row['loss']:.4f} | {shown} | "
               f"lr {row['lr']:.2e} | {row['tok_per_s']:.0f} tok/s | eta {eta:.0f}s")


def stop_non_finite(sums, step, run):
    what = "loss" if not math.isfinite(float(sums["loss"])) else "gradient norm"
    last = run.file("last")
    saved = f"its last checkpoint is {last}" if os.path.exists(last) else "it saved no checkpoint"
    fail(f"non-finite {what} at step {step + 1}; the weights were not updated; {saved}")


def finish_on_request(run, model, args, steps, requests):
    """SIGTERM or Ctrl-C: last/ was just saved at this step (final/ is saved too, now, when it was
    the last step). Exits with 128 + the signal's number, as a process it killed would."""
    step, total = steps
    signum = requests[0] if requests else signal.SIGTERM  # another rank received it
    name = signal.Signals(signum).name
    if step == total:
        run.save_final(model, getattr(torch, args.save_dtype))
        print0(f"{name}: the last step was done; saved {args.out_dir}/last and final/")
    else:
        print0(f"{name}: saved {args.out_dir}/last at step {step}; continue with --resume "
               f"--out-dir {args.out_dir}")
    teardown()
    raise SystemExit(128 + signum)


def split(fields):
    return [f for f in fields.split(",") if f]


if __name__ == "__main__":
    run_main(main)
