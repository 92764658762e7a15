"""
Exercise negatives: DFT's negatives, reproducible per example (docs/ALGORITHMS.md, "Negatives").

Write two small functions of negatives.py that decide which negatives an example gets:
  example_seed(seed, i)    the seed of example i's random numbers: from (seed, i) alone, so its
                           negatives do not depend on the batch it is sampled in, the rank that
                           samples it, or a restart; a non-negative integer torch.Generator accepts
  epoch_columns(epoch, B)  which of an example's negatives epoch e uses, as a slice of its list:
                           [e*B, (e+1)*B)

The checker also runs the project's sample_negatives with your example_seed on a tiny random model, in
batches of two sizes, and compares what each example gets.

    python -m exercises.check negatives

Cases (--cases): {"name": ..., "pairs": [[seed, i], ...]} (every pair must get its own random
numbers, whatever the order of the calls), or {"name": ..., "n": int, "B": int} (epoch slices of n
negatives).
"""
import contextlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile

import torch

from exercises.lib import Fail, expect, gated, require

TITLE = "negatives reproducible per example: seeds from (seed, i) alone, and epoch slices"
TIME = 20
OBJECTIVE = "make sampled data independent of batching, sharding and restarts, and give each epoch fresh negatives"
READ = (("docs/ALGORITHMS.md", "Negatives"), ("negatives.py", "sample_negatives"),
        ("negatives.py", "_sample_batch"))
TARGETS = (("negatives", "example_seed"), ("negatives", "epoch_columns"))
NEEDS = ("example_seed", "epoch_columns")
VERIFIED = True  # cases are checked by property: they need no expected outputs
LIMIT = 60
GRID = [(s, i) for s in range(4) for i in range(1500)]
GLUED = [(1, 23), (12, 3), (1, 123), (11, 23), (2, 10), (21, 0)]  # pairs whose digits read the same glued
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def seeds(m, pairs):
    out = [m.example_seed(s, i) for s, i in pairs]
    for (s, i), v in zip(pairs, out):
        expect(type(v) is int and 0 <= v < 2 ** 63, f"example_seed({s}, {i}) = {v!r}: a seed for torch.Generator must "
               "be a python int in [0, 2**63) (hash() can be negative; sha256 gives more bits than fit)")
    return out


def streams(values):
    """The first two uniforms of torch's CPU generator for each seed (it keeps only the seed's low 32 bits)."""
    return [tuple(torch.rand(2, generator=torch.Generator().manual_seed(v), dtype=torch.float64).tolist()) for v in values]


def fresh_process(impl, pairs):
    """example_seed's values computed in a new interpreter with another PYTHONHASHSEED: a restart."""
    code = ("import importlib.util, json, sys\nsys.path.insert(0, sys.argv[1])\n"
            "from exercises.guard import from_env\nfrom_env()\nif sys.argv[2]:\n"
            "    spec = importlib.util.spec_from_file_location('impl', sys.argv[2])\n"
            "    mod = importlib.util.module_from_spec(spec)\n    spec.loader.exec_module(mod)\n"
            "else:\n    import negatives as mod\n"
            "print(json.dumps([mod.example_seed(s, i) for s, i in json.loads(sys.argv[3])]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", code, ROOT, impl or "", json.dumps(pairs)], capture_output=True,
                       text=True, env=env, timeout=50)
    if p.returncode != 0:
        raise Fail(f"example_seed failed in a fresh python process: {p.stderr.strip().splitlines()[-1:]}")
    return json.loads(p.stdout)


def slices(m, n, B):
    negs = [("neg", k) for k in range(n)]
    out = []
    for e in range(n // B):
        cols = m.epoch_columns(e, B)
        expect(isinstance(cols, slice), f"epoch_columns({e}, {B}) = {cols!r}: return a slice "
               "(train.py indexes each example's list of negatives with it)")
        out.append(negs[cols])
    for e, got in enumerate(out):
        want = negs[e * B:(e + 1) * B]
        if got != want:
            strided = negs[e::B] if B > 1 else None
            hint = ("epoch e takes the consecutive block [e*B, (e+1)*B), not every B-th negative" if got == strided else
                    "every epoch must see fresh negatives: epoch e starts at e*B" if e and got == negs[:B] else
                    "epoch e takes negatives [e*B, (e+1)*B)")
            raise Fail(f"{hint} (epoch_columns of {n} negatives, epoch {e}, B = {B}: expected "
                       f"positions {[k for _, k in want]}, got {[k for _, k in got]})")


def checks(m, opts):
    state = {}

    @gated(state, "valid")
    def valid():
        seeds(m, [(0, 0), (1, 7), (2 ** 31 - 1, 10 ** 7), (5, 2 ** 40)])

    @gated(state, "order")
    def order_free():
        pairs = GRID[:300]
        first = seeds(m, pairs)
        random.seed(99)
        random.random()
        torch.rand(3)
        shuffled = pairs[:]
        random.Random(1).shuffle(shuffled)
        again = dict(zip(shuffled, seeds(m, shuffled)))
        bad = [p for p, v in zip(pairs, first) if again[p] != v]
        expect(not bad, f"example_seed{bad[0] if bad else ''} changed between calls: it depends on the order of calls "
               "or on a global random state, so a different batch, rank or restart would change the example's "
               "negatives; compute it from (seed, i) alone")

    def restart():
        require(state, "order", "make example_seed the same from call to call")
        pairs = GRID[::97]
        here, there = seeds(m, pairs), fresh_process(opts.get("impl"), pairs)
        expect(here == there, "example_seed gives other numbers in a fresh python process: hash() of a str or bytes is "
               "salted per process (PYTHONHASHSEED); derive the seed with hashlib (e.g. sha256 of f'{seed}:{i}')")

    def distinct():
        require(state, "valid", "make example_seed return valid seeds")
        glued = dict(zip(GLUED, seeds(m, GLUED)))
        for a, b in zip(GLUED[::2], GLUED[1::2]):
            expect(glued[a] != glued[b], f"examples {a} and {b} (seed, i) get the same seed {glued[a]}: seed and i "
                   f"glued together without a separator collide (both read '{a[0]}{a[1]}'); put a separator between "
                   "them (f'{seed}:{i}') before hashing")
        values = seeds(m, GRID)
        seen = {}
        for (s, i), v in zip(GRID, values):
            if v in seen:
                (s0, i0) = seen[v]
                raise Fail(("seed + i collides: " if s0 + i0 == s + i else "") + f"examples ({s0}, {i0}) and ({s}, {i}) "
                           f"(seed, i) get the same seed {v}: different examples and runs must get different numbers")
            seen[v] = (s, i)
        seen = {}
        for (s, i), r in zip(GRID, streams(values)):
            if r in seen:
                raise Fail(f"(seed, i) = {seen[r]} and {(s, i)} get the same random numbers although their seeds differ: "
                           "torch's CPU generator keeps only the low 32 bits of a seed, so seed * 2**32 + i gives every "
                           "seed the same numbers; mix seed and i (a hash) into the low bits")
            seen[r] = (s, i)

    def end_to_end():
        require(state, "order", "make example_seed the same from call to call")
        from common import file_sha256
        from data.format import load_jsonl
        from model import load_model
        from negatives import NegativeSettings, Origin, header_of, read_negatives, sample_negatives

        model = load_model("scratch", "cpu", "tiny", seed=0).eval()
        with tempfile.TemporaryDirectory() as d:
            data = os.path.join(d, "train.jsonl")
            with open(data, "w") as f:
                for k in range(5):
                    f.write(json.dumps({"prompt": f"Question: {k} + {k}?\nAnswer:", "response": f" {2 * k}"}) + "\n")
            records = load_jsonl(data).records
            origin = Origin(data, file_sha256(data), len(records), "scratch", "tiny-0")
            got = {}
            for bs, seed in ((4, 0), (20, 0), (20, 1)):
                s = NegativeSettings(B=2, epochs=2, max_new_tokens=5, temperature=1.0, top_k=0, seed=seed, batch_size=bs)
                path = os.path.join(d, f"negs-{bs}-{seed}.jsonl")
                with contextlib.redirect_stderr(io.StringIO()):  # its progress lines
                    sample_negatives(model, records, path, s, origin)
                got[bs, seed] = read_negatives(path, header_of(s, origin))
        expect(got[4, 0] == got[20, 0], "with your example_seed, sample_negatives gives an example other negatives when "
               "it is sampled in a batch of 1 prompt than in a batch of 5: example i's numbers must come from (seed, i) alone")
        expect(got[20, 0] != got[20, 1], "with your example_seed, --seed 0 and --seed 1 give the same negatives: "
               "the run's seed must enter example_seed")

    def epochs():
        for n, B in ((12, 3), (8, 2), (5, 1), (6, 6)):
            slices(m, n, B)

    return [("example_seed returns a seed torch.Generator accepts", valid),
            ("the same (seed, i) gives the same seed, whatever was called before", order_free),
            ("... and the same after a restart (a fresh python process)", restart),
            ("different examples and seeds get different random numbers", distinct),
            ("sample_negatives: an example's negatives do not depend on its batch", end_to_end),
            ("epoch_columns: epoch e takes negatives [e*B, (e+1)*B)", epochs)]


def compare(m, c, want):
    """Case c verified by property: {"pairs": [[seed, i], ...]} (every pair its own random numbers,
    whatever the order of the calls) or {"n": int, "B": int} (epoch slices); no expected output."""
    if "pairs" in c:
        pairs = [tuple(p) for p in c["pairs"]]
        values = seeds(m, pairs)
        expect(len(set(streams(values))) == len(set(pairs)), "two of the case's (seed, i) pairs get the same "
               "random numbers: mix seed and i into the seed's low 32 bits, with a separator between them")
        expect(seeds(m, pairs[::-1])[::-1] == values, "the case's seeds change with the order of the calls: "
               "compute example_seed from (seed, i) alone")
    else:
        slices(m, int(c["n"]), int(c["B"]))
