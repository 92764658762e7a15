"""Teacher's part of exercise dft_gradient: the gradients, from their formulas, the values the usual
mistakes give, and the rubric of the written answer (exercises/teacher/rubric.md)."""
import math

from exercises.dft_gradient import LOGP0, S_NEG, TAU
from exercises.lib import answers, diagnose, number, numbers

RUBRIC = {"derivation": 4}


def key():
    """At the fixed point w_j / B = softmax(d)_j: dL/ds(y'_j) = softmax(d)_j and dJ/ds(y'_j) =
    softmax(d)_j / tau; the positive's entries are -1 and -1/tau. A log_u delta above the fixed
    point scales the negatives' surrogate gradients by exp(-delta)."""
    d = [s / TAU - p for s, p in zip(S_NEG, LOGP0)]
    e = [math.exp(x - max(d)) for x in d]
    soft = [x / sum(e) for x in e]
    surrogate, objective = [-1.0] + soft, [-1 / TAU] + [x / TAU for x in soft]
    return {"grad_surrogate": (surrogate, [
                ([-1.0] + [x / 3 for x in soft], "the negatives' entries are w_j / B and the "
                 "weights of one prompt sum to B at the fixed point: w_j / B = softmax(d)_j")]),
            "grad_objective": (objective, [
                ([-1 / TAU] + soft, "d_j = s(y'_j)/tau: the chain rule brings a 1/tau to the "
                 "negatives' entries too"),
                ([-1.0] + [x / TAU for x in soft], "the positive's term is -s(y)/tau: its gradient "
                 "is -1/tau")]),
            "ratio": (TAU, [(1 / TAU, "the ratio is the surrogate's over the objective's: tau, not "
                             "1/tau")]),
            "ratio_off": (TAU * math.exp(-1.0), [(TAU * math.exp(1.0), "log_u above its fixed "
                                                  "point makes every w_j = exp(d_j - log_u) "
                                                  "SMALLER: the factor is exp(-1)")])}


def checks(m, opts):
    def check(name):
        def thunk():
            want, wrong = key()[name]
            a = answers(m)
            got = numbers(a, name, 4) if isinstance(want, list) else number(a, name)
            diagnose(got, want, f'ANSWERS["{name}"]', wrong, 1e-4, "compute it with "
                     "torch.autograd from the definitions in exercises/dft_gradient.py, w held "
                     "constant (detached)")
        return thunk
    return [(f"key: {name}", check(name)) for name in key()]
