"""Float64 helpers of the references: python floats, no torch, each written from its equation."""
import math


def logsig(z):
    """log sigmoid(z), stable in both directions."""
    return -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))


def sigmoid(z):
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


def lme(xs):
    """log mean exp of a python list, stable."""
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs) / len(xs))


def lae(a, b):
    """log(exp(a) + exp(b)), stable; -inf allowed."""
    if a == -math.inf:
        return b
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def pairs_of(chosen, rejected):
    """[(i, j, chosen_i, rejected_ij)] for rejected given as (N,) or (N, B) nested lists."""
    out = []
    for i, c in enumerate(chosen):
        row = rejected[i] if isinstance(rejected[i], list) else [rejected[i]]
        out += [(i, j, c, r) for j, r in enumerate(row)]
    return out


def _finite(v):
    return all(_finite(x) for x in v) if isinstance(v, (list, tuple)) else math.isfinite(v)


def mistakes(pairs):
    """{output: [[value, message], ...]} from (output, value, message) triples, for a case's want
    (a mistake with no value here, or a non-finite one, is left out)."""
    out = {}
    for key, value, message in pairs:
        if value is not None and _finite(value):
            out.setdefault(key, []).append([value, message])
    return out
