"""
The process plumbing every script shares: which process am I, on which device and in which precision;
print once, fail once, sum across processes, write files atomically, show progress.

Under torchrun every process reads RANK / LOCAL_RANK / WORLD_SIZE; a plain `python` run is rank 0 of 1.
A script calls setup() first and teardown() last; every other function only asks "am I rank 0?".

    rank, world, device = setup("auto")       # cuda:LOCAL_RANK when there is a GPU, else cpu
    with autocast(device, amp_dtype(device)):  # bf16 on CUDA, exact fp32 on the CPU
        ...
"""
import argparse
import os
import sys
import time
from contextlib import contextmanager, nullcontext

import torch
import torch.distributed as dist

DEVICE_HELP = "auto (cuda:LOCAL_RANK when CUDA is available, else cpu), cpu, cuda or cuda:N"


def setup(device="auto"):
    """-> (rank, world, device); joins the process group (nccl on GPUs, gloo on CPU) under torchrun."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device on this machine (use --device cpu)")
    dev = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if device == "cuda" else device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # before init_process_group, so NCCL binds the right GPU
        torch.set_float32_matmul_precision("high")  # TF32 for what runs outside bf16 autocast
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def teardown():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank0():
    return dist.get_rank() == 0 if dist.is_initialized() else int(os.environ.get("RANK", 0)) == 0


def print0(*args, **kw):
    if rank0():
        print(*args, **kw, flush=True)


def fail(msg):
    """A one-line error (rank 0 prints it) and exit status 2, on every rank."""
    print0(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def run_main(main):
    """A script's entry point: library code raises ValueError / OSError naming the file, line or flag;
    here, once, that becomes a one-line message and exit status 2 instead of a traceback."""
    try:
        main()
    except (ValueError, OSError) as e:
        fail(str(e))


def _comm(t):  # NCCL only moves CUDA tensors; gloo takes them where they are
    return t.to(torch.device("cuda", torch.cuda.current_device())) if dist.get_backend() == "nccl" else t


def all_sum(values):
    """{name: number or tensor} -> {name: float64 CPU tensor of the same shape}, summed over ranks in ONE
    all-reduce (no host sync before it: device tensors stay where they are until the sum is done)."""
    keys = sorted(values)
    dev = next((v.device for v in values.values() if torch.is_tensor(v)), torch.device("cpu"))
    parts = [torch.as_tensor(values[k], dtype=torch.float64, device=dev) for k in keys]
    vec = torch.cat([p.reshape(-1) for p in parts]) if parts else torch.zeros(0, dtype=torch.float64)
    if dist.is_initialized():
        vec = _comm(vec)
        dist.all_reduce(vec)
    out, vec = {}, vec.cpu()
    for k, p in zip(keys, parts):
        out[k], vec = vec[:p.numel()].view(p.shape), vec[p.numel():]
    return out


def all_cat(t):
    """Concatenate equal-shaped tensors of all ranks along dim 0 (the tensor itself on one process)."""
    if not dist.is_initialized():
        return t
    got = [torch.zeros_like(_comm(t)) for _ in range(dist.get_world_size())]
    dist.all_gather(got, _comm(t))
    return torch.cat(got).to(t.device)


def amp_dtype(device, precision="auto"):
    """The one precision choice: 'auto' is bf16 autocast on CUDA and exact fp32 elsewhere; None means fp32."""
    return torch.bfloat16 if precision == "bf16" or (precision == "auto" and device.type == "cuda") else None


def autocast(device, dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@contextmanager
def atomic_path(path):
    """Yield a temporary path to write; on success it is fsynced and renamed to `path` (readers see the
    old file or the whole new one, never half of it); on failure it is removed."""
    tmp = f"{path}.{os.getpid()}.tmp"  # unique per process: concurrent writers never share one
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class Progress:
    """The one progress line of every script: '\\r'-redrawn on stderr by rank 0, at most 4 times a second:
    'what: done/total unit (pct) rate, ETA'. unit "B" counts bytes and shows MB; total may be unknown (None).
    The rate and ETA count only this run's work (a resumed job starts at `initial`)."""

    def __init__(self, what, total=None, unit="", on=True, initial=0):
        self.what, self.total, self.unit, self.done, self.initial = what, total, unit, initial, initial
        self.on, self.t0, self.last = on and rank0(), time.time(), 0.0

    def _amount(self, n):
        return f"{n / 1e6:.1f} MB" if self.unit == "B" else f"{n:,}{' ' + self.unit if self.unit else ''}"

    def update(self, done=None, extra=""):
        """Set the count to `done` (or add 1 when None) and redraw if a quarter second has passed."""
        self.done = self.done + 1 if done is None else done
        now = time.time()
        if self.on and (now - self.last > 0.25 or self.done == self.total):
            self.last, rate = now, (self.done - self.initial) / max(now - self.t0, 1e-9)
            line = f"{self.what}: {self._amount(self.done)}" + (f"/{self._amount(self.total)}" if self.total else "") + extra
            if self.total and rate > 0:
                line += f", ETA {(self.total - self.done) / rate:.0f}s"
            print("\r" + line.ljust(79), end="", file=sys.stderr, flush=True)

    def close(self):
        if self.on:
            print(f"\r{self.what}: {self._amount(self.done)} in {time.time() - self.t0:.1f}s".ljust(79), file=sys.stderr, flush=True)
            self.on = False


class ArgumentParser(argparse.ArgumentParser):
    """argparse with --help showing every real default, and a bad flag raising ValueError (one line at the
    entry point, exit status 2) instead of printing the usage text."""

    def __init__(self, *args, **kw):
        super().__init__(*args, formatter_class=HelpFormatter, **kw)

    def error(self, message):
        raise ValueError(message)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows every flag's real default; a flag whose default is decided elsewhere says so in its
    own help text instead of '(default: None)'."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool) or "default:" in (action.help or ""):
            return action.help
        if action.default == "":
            return f"{action.help} (default: none)"
        return super()._get_help_string(action)
