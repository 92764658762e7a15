"""
Exercise dft2_no_ref: why DFT2 needs no reference model; experiments with DFT's weights, and questions.

DFT scores each sampled negative with the starting model pi_0 (logp_0) before training; DFT2 does not.
Find out where logp_0 enters DFT and why DFT2 can do without it. Answer in ANSWERS:
  dft_inputs, dft2_inputs  the batch keys compute_loss("dft", ...) and compute_loss("dft2", ...) read,
                           its own inputs and what it divides by (a set of names among pos, pos_n, neg,
                           neg_n, ref_pos, ref_neg, log_u)
  w_base, w_shifted, w_matched  DFT's weights [w_1, w_2] for one prompt with two negatives,
                           s(y'_1) = -10, s(y'_2) = -12, tau = 1, gamma = 1 (log_u is then this batch's
                           logmeanexp_j d_j), when logp_0 = (-11, -11), (-30, -30) and (-10, -12)
  train_function           the function of train.py that does the work DFT needs and DFT2 skips
  why                      written, a few sentences: why does DFT2 need no reference model? (graded by
                           the teacher with the rubric)

    python -m exercises.check dft2_no_ref

A student's copy checks the form of the answers; the teacher's copy checks them against the key.
"""
import ast
import os

from exercises.lib import Fail, answers, expect, get, numbers, word, written_check

TITLE = "why DFT2 needs no reference model: experiments with DFT's weights, and questions"
TIME = 20
OBJECTIVE = "see what the importance weight 1/pi_0 does, and what dropping it changes"
READ = (("losses.py", "LossSpec"), ("losses.py", "compute_loss"), ("train.py", "reference_logps"),
        ("docs/ALGORITHMS.md", "DFT2"))
TARGETS = ()
NEEDS = ()
KEYS = {"pos", "pos_n", "neg", "neg_n", "ref_pos", "ref_neg", "log_u"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def key_set(m, name):
    key = f"{name}_inputs"
    got = get(answers(m), key)
    if isinstance(got, str) or not hasattr(got, "__iter__"):
        raise Fail(f'ANSWERS["{key}"] should be a set of batch key names like {{"pos", ...}}, got {got!r}')
    got = {str(x) for x in got}
    expect(got <= KEYS, f'ANSWERS["{key}"] names keys no loss reads: {sorted(got - KEYS)} (the batch keys are '
           f"{sorted(KEYS)})")
    return got


def checks(m, opts):
    def reads():
        for name in ("dft", "dft2"):
            key_set(m, name)

    def weights():
        a = answers(m)
        for key in ("w_base", "w_shifted", "w_matched"):
            w = numbers(a, key, 2)
            expect(abs(sum(w) - 2) < 1e-3, f'ANSWERS["{key}"] = {w}: with gamma = 1, log_u is the batch\'s own '
                   "logmeanexp, so the weights w_j = exp(d_j - log_u) of one prompt sum to B = 2")

    def train_function():
        got = word(get(answers(m), "train_function")).removesuffix("()")
        with open(os.path.join(ROOT, "train.py")) as f:
            defined = {n.name for n in ast.parse(f.read()).body if isinstance(n, ast.FunctionDef)}
        expect(got in defined, f'ANSWERS["train_function"] = {got!r} is not a function of train.py: name the '
               "function that runs the starting model over every negative once, before training")

    return [("which batch keys each loss reads: sets of batch keys", reads),
            ("DFT's weights for three choices of logp_0: two numbers each", weights),
            ("the work in train.py that DFT2 skips: a function of train.py", train_function),
            written_check(m, "why", "why does DFT2 need no reference model?")]
