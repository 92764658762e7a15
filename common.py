"""
The process plumbing every script shares: which process am I, on which device and in which
precision; print once, fail once, sum across processes; read flags; write files atomically and under
a lock; show progress.

Under torchrun every process reads RANK / LOCAL_RANK / WORLD_SIZE; a plain `python` run is rank 0 of
1. A script calls setup() first and teardown() last; every other function only asks "am I rank 0?".

    rank, world, device = setup("auto")       # cuda:LOCAL_RANK when there is a GPU, else cpu
    with autocast(device, amp_dtype(device)):  # bf16 on CUDA, exact fp32 on the CPU
        ...
"""

import argparse
import hashlib
import json
import math
import os
import re
import sys
import time
from contextlib import contextmanager, nullcontext

import torch
import torch.distributed as dist

DEVICE_HELP = "auto (cuda:LOCAL_RANK when CUDA is available, else cpu), cpu, cuda or cuda:N"

# -----------------------------------------------------------------------------
# processes and devices


def setup(device="auto"):
    """-> (rank, world, device); joins the process group (nccl on GPUs, gloo on CPU) under
    torchrun."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device on this machine (use --device cpu)")
    local_rank = os.environ.get("LOCAL_RANK", 0)
    dev = torch.device(f"cuda:{local_rank}" if device == "cuda" else device)
    if dev.type == "cuda":
        # before init_process_group, so NCCL binds the right GPU
        torch.cuda.set_device(dev)
        # TF32 for what runs outside bf16 autocast
        torch.set_float32_matmul_precision("high")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def teardown():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_and_world():
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), 1


def rank0():
    return rank_and_world()[0] == 0


def print0(*args, **kw):
    if rank0():
        print(*args, **kw, flush=True)


def fail(msg):
    """A one-line error (rank 0 prints it) and exit status 2, on every rank."""
    print0(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def run_main(main):
    """A script's entry point: library code raises ValueError / OSError naming the file, line or
    flag; here, once, that becomes a one-line message and exit status 2 instead of a traceback."""
    try:
        main()
    except (ValueError, OSError) as e:
        fail(str(e))


# NCCL only moves CUDA tensors; gloo takes them where they are
def _comm(t):
    if dist.get_backend() == "nccl":
        return t.to(torch.device("cuda", torch.cuda.current_device()))
    return t


def all_sum(values, op="sum"):
    """{name: number or tensor} -> {name: float64 CPU tensor of the same shape}, reduced over ranks
    in ONE all-reduce (op "sum" or "max"). No host sync before it: device tensors stay where they
    are until the reduction is done."""
    keys = sorted(values)
    dev = next((v.device for v in values.values() if torch.is_tensor(v)), torch.device("cpu"))
    parts = [torch.as_tensor(values[k], dtype=torch.float64, device=dev) for k in keys]
    flat = [p.reshape(-1) for p in parts]
    vec = torch.cat(flat) if parts else torch.zeros(0, dtype=torch.float64)
    if dist.is_initialized():
        vec = _comm(vec)
        dist.all_reduce(vec, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    out, vec = {}, vec.cpu()
    for k, p in zip(keys, parts):
        out[k], vec = vec[: p.numel()].view(p.shape), vec[p.numel() :]
    return out


def all_cat(t):
    """Concatenate equal-shaped tensors of all ranks along dim 0 (the tensor itself on one
    process)."""
    if not dist.is_initialized():
        return t
    got = [torch.zeros_like(_comm(t)) for _ in range(dist.get_world_size())]
    dist.all_gather(got, _comm(t))
    return torch.cat(got).to(t.device)


def amp_dtype(device, precision="auto"):
    """The one precision choice: 'auto' is bf16 autocast on CUDA and exact fp32 elsewhere; None
    means fp32."""
    auto_bf16 = precision == "auto" and device.type == "cuda"
    return torch.bfloat16 if precision == "bf16" or auto_bf16 else None


def autocast(device, dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


# -----------------------------------------------------------------------------
# flags: each checked where it is declared (type=...), so a bad value stops a script before any work


class ArgumentParser(argparse.ArgumentParser):
    """argparse with --help showing every real default, and a bad flag raising ValueError (one line
    at the entry point, exit status 2) instead of printing the usage text."""

    def __init__(self, *args, **kw):
        super().__init__(*args, formatter_class=HelpFormatter, **kw)

    def error(self, message):
        # "argument --lr: must be >= 0, got -1.0" reads better as "--lr must be >= 0, got -1.0"
        raise ValueError(re.sub(r"^argument (--[\w-]+)(/-\w)?: must", r"\1 must", message))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows every flag's real default; a flag whose default is decided elsewhere says so in
    its own help text instead of '(default: None)'."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or isinstance(action.default, bool) or "default:" in text:
            return action.help
        if action.default == "":
            return f"{action.help} (default: none)"
        return super()._get_help_string(action)


def _number(kind, text):
    try:
        v = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return v


def checked(kind, low=None, high=None, low_open=False, high_open=False):
    """An argparse type: a finite int or float in [low, high] (open at an end when asked), with the
    range in its error. checked(int, 1) -> an int >= 1."""

    def parse(text):
        v = _number(kind, text)
        too_low = low is not None and (v <= low if low_open else v < low)
        too_high = high is not None and (v >= high if high_open else v > high)
        if too_low or too_high:
            allowed = _range(low, high, low_open, high_open)
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {v}")
        return v

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def _range(low, high, low_open, high_open):
    if high is None:
        return f"{'>' if low_open else '>='} {low}"
    if low is None:
        return f"{'<' if high_open else '<='} {high}"
    return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


positive_int = checked(int, 1)
nonneg_int = checked(int, 0)
nonneg_float = checked(float, 0)
positive_float = checked(float, 0, low_open=True)
fraction = checked(float, 0, 1)
open_fraction = checked(float, 0, 1, low_open=True)  # (0, 1]: top-p
below_one = checked(float, 0, 1, high_open=True)  # [0, 1): Adam's betas

# -----------------------------------------------------------------------------
# files: hashes, atomic writes, locks


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextmanager
def atomic_path(path):
    """Yield a temporary path to write; on success it is fsynced and renamed to `path` (readers see
    the old file or the whole new one, never half of it); on failure it is removed."""
    tmp = f"{path}.{os.getpid()}.tmp"  # unique per process: concurrent writers never share one
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    """--json PATH of every script: '-' prints to stdout, anything else is written atomically."""
    if path == "-":
        print(json.dumps(obj, indent=2), flush=True)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2)


def write_jsonl(path, records):
    """Write dicts as JSONL to path atomically (no half-written file). Returns the count."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_json(path, what="a JSON file", advice="delete it"):
    """A JSON file the project wrote and reads back; a damaged one is one line naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{path}: damaged, expected {what}; {advice}") from None


class LockHeld(ValueError):
    """Another live process holds the lock."""


@contextmanager
def file_lock(path, wait=True, waiting=None):
    """An exclusive lock on the file `path` (flock): the OS releases it when its holder dies, so a
    lock file left by a killed process is simply taken over. The holder's pid is written into the
    file. wait=False: raise LockHeld naming the holder instead of waiting. waiting: a line printed
    before a wait. The holder deletes the file when done; a waiter that then gets the lock on the
    deleted file retries on a fresh one (the samestat check), so two processes never both hold it.
    No fcntl (Windows): no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if not wait:
                os.close(fd)
                raise LockHeld(f"{path} is held by process {holder}") from None
            if waiting:
                print(waiting, file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    try:
        yield
    finally:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        os.close(fd)  # closing releases the flock


# -----------------------------------------------------------------------------
# progress


class Progress:
    """The one progress line of every script: '\\r'-redrawn on stderr by rank 0, at most 4 times a
    second: 'what: done/total unit (pct) rate, ETA'. unit "B" counts bytes and shows MB; total may
    be unknown (None). The rate and ETA count only this run's work (a resumed job starts at
    `initial`)."""

    def __init__(self, what, total=None, unit="", on=True, initial=0):
        self.what, self.total, self.unit = what, total, unit
        self.done, self.initial = initial, initial
        self.on, self.t0, self.last = on and rank0(), time.time(), 0.0

    def _amount(self, n):
        if self.unit == "B":
            return f"{n / 1e6:.1f} MB"
        return f"{n:,}{' ' + self.unit if self.unit else ''}"

    def update(self, done=None, extra=""):
        """Set the count to `done` (or add 1 when None) and redraw if a quarter second has
        passed."""
        self.done = self.done + 1 if done is None else done
        now = time.time()
        if not self.on or (now - self.last <= 0.25 and self.done != self.total):
            return
        self.last, rate = now, (self.done - self.initial) / max(now - self.t0, 1e-9)
        line = f"{self.what}: {self._amount(self.done)}"
        if self.total:
            line += f"/{self._amount(self.total)}"
        line += extra
        if self.total and rate > 0:
            line += f", ETA {(self.total - self.done) / rate:.0f}s"
        print("\r" + line.ljust(79), end="", file=sys.stderr, flush=True)

    def close(self):
        if self.on:
            line = f"{self.what}: {self._amount(self.done)} in {time.time() - self.t0:.1f}s"
            print("\r" + line.ljust(79), file=sys.stderr, flush=True)
            self.on = False
