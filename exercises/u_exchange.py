"""
Exercise u_exchange: DFT's u under DDP, the same table on every rank (docs/ALGORITHMS.md, "State across
processes").

Write train.exchange_log_u(log_u, new_u, rows): after a step, every rank writes every rank's new log_u
values into its own table, in place. log_u is the (n,) float64 table (one entry per training prompt);
new_u is this rank's [(prompt indices, new log_u values (m,)), ...], one pair per micro-batch; rows is
the most prompts any rank had this step. all_gather needs the same shape on every rank, so each rank
sends exactly `rows` (index, value) rows, padded with index -1, and the padding is dropped on arrival.
It must also work on one process (no torch.distributed), where train.py calls it too.

The checker runs it on one process, then in two processes on the CPU (torch.distributed with the gloo
backend, started with torch.multiprocessing, meeting through a file in a temporary folder).

    python -m exercises.check u_exchange

Cases (--cases): {"name": ..., "n": table size, "rows": int, "updates": [[[ids], [values]], ...]}
(micro-batches of one process; the table must end with exactly those values written).
"""
import datetime
import json
import os
import tempfile
import time
import traceback

import torch

from exercises.lib import Fail, expect, fmt, gated, require

TITLE = "DFT's u under DDP: every rank writes every rank's new values (all_gather, padding)"
TIME = 30
OBJECTIVE = "move per-example state between processes: equal shapes for a collective, padding, exact float64"
READ = (("docs/ALGORITHMS.md", "State across processes"), ("common.py", "all_cat"), ("train.py", "train_step"))
TARGETS = (("train", "exchange_log_u"),)
NEEDS = ("exchange_log_u",)
VERIFIED = True  # cases are checked against the values they write: no expected outputs
LIMIT = 90
N = 8
# per scenario: rows, and each rank's micro-batches of (prompt indices, new values)
SCENARIOS = {
    "unequal shares": (3, [[([5, 1], [-0.1234567890123, 0.9876543210987]), ([6], [-2.718281828459045])],
                           [([0, 3], [1.4142135623730951, -0.5772156649015329])]]),
    "a rank without prompts": (2, [[([2, 4], [3.141592653589793, -1.6180339887498949])], []]),
    "equal shares": (2, [[([7], [0.1111111111111111])], [([2], [-0.3333333333333333])]]),
}


def table():
    return torch.tensor([-0.01 * (k + 1) / 3 for k in range(N)], dtype=torch.float64)


def expected(updates):
    t = table().tolist()
    for rank in updates:
        for ids, vals in rank:
            for i, v in zip(ids, vals):
                t[i] = v
    return t


def load(impl):
    if impl:
        from exercises.check import load_file
        return load_file(impl).exchange_log_u
    import train
    return train.exchange_log_u


def _worker(rank, world, store_path, impl, out_dir):
    """One of the two processes: run every scenario, write the tables (or the error) to rank<r>.json."""
    import torch.distributed as dist

    err = os.open(os.path.join(out_dir, f"rank{rank}.err"), os.O_WRONLY | os.O_CREAT)
    os.dup2(err, 2)  # gloo's own complaints go to a file the parent reads, not to the student's screen
    torch.set_num_threads(1)
    res = {}
    try:
        from exercises.guard import from_env
        from_env()  # under the grader: the answer is guarded here as in the grader's own process
        fn = load(impl)
        store = dist.FileStore(store_path, world)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=20))
        for name, (rows, updates) in SCENARIOS.items():
            log_u = table()
            fn(log_u, [(ids, torch.tensor(v, dtype=torch.float64)) for ids, v in updates[rank]], rows)
            res[name] = log_u.tolist()
    except BaseException as e:
        f = traceback.extract_tb(e.__traceback__)[-1]
        res["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} ({os.path.basename(f.filename)}:{f.lineno})"
        res["unsolved"] = isinstance(e, NotImplementedError)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(res, f)
    if dist.is_initialized():
        dist.destroy_process_group()


def two_processes(impl, deadline=60):
    """Run _worker on 2 processes; -> [rank 0's results, rank 1's]. A rank that dies or hangs is a Fail."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as d:
        procs = mp.start_processes(_worker, args=(2, os.path.join(d, "store"), impl, d), nprocs=2, join=False,
                                   start_method="spawn").processes
        t0, died = time.time(), None
        try:
            while any(p.is_alive() for p in procs):
                time.sleep(0.1)
                if died is None and any(p.exitcode not in (None, 0) for p in procs):
                    died = time.time()
                if time.time() - t0 > deadline or (died and time.time() - died > 3):
                    break
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                p.join()
        out = []
        for r, p in enumerate(procs):
            path = os.path.join(d, f"rank{r}.json")
            if os.path.exists(path):
                with open(path) as f:
                    out.append(json.load(f))
                continue
            with open(os.path.join(d, f"rank{r}.err"), errors="replace") as f:
                said = [line.strip() for line in f if line.strip()]
            why = next((line for line in said if "what()" in line or "Error" in line), said[-1] if said else "")
            if died is None:
                raise Fail(f"the two processes did not finish in {deadline} s: a rank waits forever in a collective "
                           "the other never joins (every rank, even one without prompts, must call all_gather once)")
            out.append({"error": f"rank {r} was killed (exit code {p.exitcode}): {why}"})
        return out


def verdict(name, got, want, rank):
    if got == want:
        return
    if got[-1] == -1.0 and want[-1] != -1.0:
        raise Fail(f"the padding rows (index -1) were written: log_u[-1] is the last prompt's entry; drop the rows "
                   f"whose index is -1 ({name}, rank {rank}: log_u[-1] = {got[-1]})")
    if all(abs(g - w) < 1e-6 for g, w in zip(got, want)):
        raise Fail(f"the values were rounded (float32?): keep float64 all the way ({name}, rank {rank}: expected "
                   f"{want}, got {got})")
    missing = [i for i, (g, w, t) in enumerate(zip(got, want, table().tolist())) if g == t != w]
    if missing:
        raise Fail(f"rank {rank} lacks other ranks' new values (prompts {missing} keep their old u): gather every "
                   f"rank's (index, value) rows (common.all_cat or dist.all_gather) and write them all ({name})")
    raise Fail(f"every rank's (index, value) rows go into the table as they are, nothing else changes "
               f"({name}, rank {rank}: expected the table {fmt(want)}, got {fmt(got)})")


def one_process(m, n, updates, rows, name):
    log_u = table() if n == N else torch.arange(n, dtype=torch.float64) / -7
    before = log_u.clone()
    want = before.tolist()
    for ids, vals in updates:
        for i, v in zip(ids, vals):
            want[i] = v
    try:
        out = m.exchange_log_u(log_u, [(ids, torch.tensor(v, dtype=torch.float64)) for ids, v in updates], rows)
    except (RuntimeError, ValueError) as e:
        if "process group" in str(e) or "init_process_group" in str(e):
            raise Fail("exchange_log_u must also work on one process, without torch.distributed (train.py calls it "
                       "there too): common.all_cat returns the tensor itself on one process") from None
        raise
    if torch.equal(log_u, before) and isinstance(out, torch.Tensor):
        raise Fail("exchange_log_u returned a new table and left log_u as it was: write into log_u in place "
                   "(the trainer keeps its table)")
    verdict(name, log_u.tolist(), want, 0)


def checks(m, opts):
    state = {}

    @gated(state, "one")
    def single():
        one_process(m, N, SCENARIOS["unequal shares"][1][0], 3, "one process")
        one_process(m, N, [([7, 0], [0.5, -0.25])], 4, "one process, padded")

    def two(name):
        def thunk():
            require(state, "one", "make it work on one process")
            if "results" not in state:
                try:
                    state["results"] = two_processes(opts.get("impl"))
                except Fail as e:
                    state["results"] = [{"error": str(e), "final": True}] * 2
            errors = [(r, res) for r, res in enumerate(state["results"]) if "error" in res]
            errors.sort(key=lambda e: "killed" not in e[1]["error"])  # the rank that died says the most
            for rank, res in errors:
                if res.get("unsolved"):
                    raise NotImplementedError(res["error"])
                if res.get("final"):
                    raise Fail(res["error"])
            if errors:
                msg = " / ".join(f"rank {r}: {res['error']}" for r, res in errors)
                keys = ("size", "shape", "mismatch", "timeout", "timed out", "killed", "reset by peer")
                raise Fail(("all_gather needs the same shape on every rank: send exactly `rows` rows, padded with index "
                            "-1" if any(k in msg.lower() for k in keys) else "it raised") + f" ({msg[:300]})")
            for rank, res in enumerate(state["results"]):
                expect(name in res, f"rank {rank} did not get to the scenario {name!r}")
                verdict(name, res[name], expected(SCENARIOS[name][1]), rank)
        return thunk

    return [("one process: new values written in place, exact, padding dropped", single)] + [
        (f"two processes, {name}: every rank ends with the same table", two(name)) for name in SCENARIOS]


def compare(m, c, want):
    """Case c (n, rows, updates) on one process: the table must end with exactly those values written."""
    one_process(m, int(c["n"]), [(ids, vals) for ids, vals in c["updates"]], int(c["rows"]), c.get("name", "case"))
