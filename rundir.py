"""
A training run's directory: what makes a run itself, its files, and saving and resuming them safely.
train.py calls a handful of methods; everything about files, locks and signals lives here.

    with RunDir(out_dir, identity) as run:                # the directory is locked within
        checkpoint = run.claim(resume, overwrite, changing)  # a used one needs resume or overwrite
        state = run.load_state(checkpoint)                # optimizer, u, step, RNG (when resuming)
        with stop_requests() as stop:                     # SIGTERM, Ctrl-C: save, then exit
            ... run.log(row); run.save_last(model, state) ...
        run.save_final(model, dtype)

The directory holds:
  config.json     every resolved flag and the run's identity (what --resume must match)
  metrics.jsonl   one line per logged step (on resume, cut back to the checkpoint's step)
  eval.json, timing.json, ref_logps-*.npz (the reference log-probs, cached)
  last/           fp32 weights + state.pt (optimizer, DFT's u, step, RNG): --resume starts here
  final/          the finished model (HF-loadable, in --save-dtype), once the run is complete
  .lock           held while a run uses the directory (a second run is refused, naming the holder)

Saving is atomic: a checkpoint is written to name.tmp/, fsynced, then swapped in by renames, so a
crash leaves name/ or name.old/ complete, and --resume takes whichever exists. --overwrite keeps the
old run's final/ as final.previous/ until the new run's own final/ is complete: a failing run never
destroys a finished model.

    python -m pytest -q tests/test_runs.py
"""

import json
import os
import shutil
import signal
from contextlib import contextmanager

import torch
import torch.distributed as dist

from common import LockHeld, all_sum, atomic_path, file_lock, print0, read_json, write_json

# what may differ between a run and its --resume (everything else is the run's identity)
NOT_IDENTITY = (
    "out_dir", "resume", "overwrite", "resume_changing", "max_steps", "device", "compile", "pack",
    "log_every", "save_every", "save_dtype", "no_eval", "eval_data", "eval_max_examples",
    "eval_max_new_tokens", "negatives_dir", "negatives_allow",
)  # fmt: skip
# what a run writes at the top of its directory (anything else there is not this project's)
RUN_FILES = ("metrics.jsonl", "last", "last.old", "final")
WRITTEN = RUN_FILES + (
    "config.json", "eval.json", "timing.json", "last.tmp", "final.tmp", "final.old",
    "final.previous", ".lock",
)  # fmt: skip


def run_identity(flags, **facts):
    """What makes two runs the same run: every resolved flag but NOT_IDENTITY, plus facts (the data
    and weights hashes, the resolved lengths, hyperparameters, negatives settings)."""
    identity = {k: v for k, v in flags.items() if k not in NOT_IDENTITY}
    identity.update(facts)
    return json.loads(json.dumps(identity))  # plain JSON types, as stored


class RunDir:
    def __init__(self, path, identity):
        self.path, self.identity = path, identity
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def file(self, name):
        return os.path.join(self.path, name)

    # --- claiming the directory ----------------------------------------------------------------

    def claim(self, resume, overwrite, changing=()):
        """Take the directory for this run. A used one needs resume (continue its run: returns the
        checkpoint to load, after checking it belongs to this run) or overwrite (its run's files go
        now, its final/ is kept until this run completes). A directory another live run holds, or
        one that holds a model or files no run wrote, is refused. Returns the checkpoint or None."""
        self._check_is_ours(overwrite)
        self._take_lock()
        if resume:
            checkpoint = self._checkpoint()
            self._check_identity(checkpoint, changing)
            return checkpoint
        used = [f for f in RUN_FILES if os.path.exists(self.file(f))]
        if used and not overwrite:
            what = f"a run's files ({', '.join(used)})"
            if "final" in used:
                what = "a complete run (final/)"
            raise ValueError(f"--out-dir {self.path} already holds {what}; continue it with "
                             "--resume, replace it with --overwrite, or choose another --out-dir")
        if used and self.rank == 0:
            self._remove_old_run()
        return None

    def _check_is_ours(self, overwrite):
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(f"--out-dir {self.path}: is a file, expected a run directory")
        if not os.path.isdir(self.path):
            return
        if os.path.exists(self.file("model.safetensors")):
            raise ValueError(f"--out-dir {self.path} holds a model (model.safetensors); a run "
                             "never writes over one: choose another --out-dir")
        names = [n for n in os.listdir(self.path)
                 if n not in WRITTEN and not n.startswith("ref_logps-")]
        if names and not overwrite:
            raise ValueError(f"--out-dir {self.path} holds files no run wrote "
                             f"({', '.join(sorted(names)[:3])}); choose another --out-dir (or "
                             "--overwrite, which leaves them alone)")

    def _take_lock(self):
        """Rank 0 holds the directory's lock for the whole run; every rank learns whether it got
        it."""
        message = ""
        if self.rank == 0:
            os.makedirs(self.path, exist_ok=True)
            self._lock = file_lock(self.file(".lock"), wait=False)
            try:
                self._lock.__enter__()
            except LockHeld as e:
                self._lock, message = None, str(e).split(" is held by ")[-1]
        refused = all_sum({"refused": float(bool(message))})["refused"].item()
        if refused:
            raise ValueError(f"--out-dir {self.path} is in use by another run "
                             f"({message or 'see rank 0'}); wait for it to finish or choose "
                             "another --out-dir")

    def close(self):
        """Release the directory (the end of the run, or its failure)."""
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    def _checkpoint(self):
        # last.old: a crash between save_checkpoint's two renames
        for name in ("last", "last.old"):
            if os.path.exists(self.file(f"{name}/state.pt")):
                return self.file(name)
        raise ValueError(f"--resume: no checkpoint in {self.path}/last (nothing to continue; start "
                         "the run without --resume)")

    def _check_identity(self, checkpoint, changing):
        """Refuse to resume a checkpoint of another run; name the fields that differ."""
        old = json.loads(self.load_state(checkpoint)["identity"])
        new = self.identity
        diff = sorted(k for k in set(old) | set(new)
                      if old.get(k) != new.get(k) and k not in changing)
        if diff:
            details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:6])
            raise ValueError(f"--resume: {checkpoint} belongs to another run ({details}); resume "
                             "with its settings, or allow the change with --resume-changing "
                             f"{','.join(diff)}, or start anew with --overwrite")

    def _remove_old_run(self):
        """--overwrite: the old run's files go together (checkpoints, logs, caches); its final/
        waits as final.previous/ until this run's own final/ is complete."""
        for name in os.listdir(self.path):
            ours = name in WRITTEN or name.startswith("ref_logps-")
            if not ours or name in ("final", "final.previous", ".lock"):
                continue
            path = self.file(name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        if os.path.exists(self.file("final")):
            shutil.rmtree(self.file("final.previous"), ignore_errors=True)
            os.replace(self.file("final"), self.file("final.previous"))
            print0(f"--overwrite: the previous run's model is kept in {self.path}/final.previous "
                   "until this run completes")

    # --- checkpoints -----------------------------------------------------------------------------

    def load_state(self, checkpoint):
        """The training state saved beside a checkpoint's weights, checked."""
        path = os.path.join(checkpoint, "state.pt")
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
            assert {"optimizer", "log_u", "step", "rng", "identity"} <= set(state)
        except Exception:
            raise ValueError(f"{path}: damaged training state; delete {checkpoint} (--resume then "
                             "takes the previous checkpoint, if any) or start anew with "
                             "--overwrite") from None
        return state

    def save_last(self, model, state):
        """last/: fp32 weights (exact, whatever --save-dtype) and the training state. Every rank
        calls it; rank 0 writes, and no rank goes on before the checkpoint is complete."""
        if self.rank == 0:
            state = {**state, "identity": json.dumps(self.identity)}
            self._save("last", model, torch.float32, state)
        if dist.is_initialized():
            dist.barrier()

    def save_final(self, model, dtype):
        """final/: the finished model, without optimizer state; the kept previous model goes."""
        if self.rank == 0:
            self._save("final", model, dtype)
            shutil.rmtree(self.file("final.previous"), ignore_errors=True)

    def _save(self, name, model, dtype, state=None):
        """Write name/ atomically: into name.tmp/, fsynced, then swapped in by renames. A failure
        (a full disk) removes name.tmp/ and leaves the previous name/ as it was."""
        final, tmp, old = (self.file(name + suffix) for suffix in ("", ".tmp", ".old"))
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            # each file is written atomically, fsynced
            model.save_pretrained(tmp, dtype=dtype)
            if state is not None:
                with atomic_path(os.path.join(tmp, "state.pt")) as path:
                    torch.save(state, path)
        except (OSError, RuntimeError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise OSError(
                f"{tmp}: could not save the checkpoint ({e}); {name}/ is unchanged"
            ) from None
        if os.path.exists(final):
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)

    # --- logs and small files --------------------------------------------------------------

    def log(self, row):
        if self.rank == 0:
            with open(self.file("metrics.jsonl"), "a") as f:
                f.write(json.dumps(row) + "\n")

    def truncate_log(self, step):
        """On resume: keep the metrics rows up to the checkpoint's step (a killed run may have
        logged more, and its last line may be cut short: that line goes too)."""
        path = self.file("metrics.jsonl")
        if self.rank != 0 or not os.path.exists(path):
            return
        lines, rows = open(path, "rb").read().split(b"\n"), []
        for lineno, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                keep = row["step"] <= step
            except (ValueError, KeyError, TypeError):
                if lineno >= len(lines) - 1:  # the last line, cut by the kill
                    break
                raise ValueError(f"{path}:{lineno}: damaged metrics line; delete the file (the "
                                 "resumed run logs from its checkpoint on)") from None
            if keep:
                rows.append(line.decode() + "\n")
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            f.writelines(rows)

    def write(self, name, obj):
        if self.rank == 0:
            write_json(self.file(name), obj)

    def read(self, name):
        """A JSON file of this run, or {} when it does not exist."""
        path = self.file(name)
        if not os.path.exists(path):
            return {}
        advice = "delete it or start anew with --overwrite"
        return read_json(path, "a JSON file of this run", advice)


@contextmanager
def stop_requests():
    """Within it, SIGTERM (a scheduler's preemption) and Ctrl-C (SIGINT) do not kill the process:
    they add to the yielded list, and the training loop finishes its step, saves and exits. The
    previous handlers come back at the end: a signal after the loop (say, while compare.py scores
    the model) must reach the process's own handler, not a finished run's flag."""
    requests = []
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, lambda signum, frame: requests.append(signum)) for s in signals}
    try:
        yield requests
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
