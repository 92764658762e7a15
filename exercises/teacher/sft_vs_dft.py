"""
Teacher's part of exercise sft_vs_dft: the keys of the trend questions, the check of
tokens_per_answer, the rubric of the written answer (exercises/teacher/rubric.md), and the evidence
the grader asks for.

The keys are fixed answers, read from the instructor's numbers (exercises/reference_numbers.json)
with the exercise's rule: compare two numbers seed by seed, and call the mean of the per-seed
differences a trend when it is larger than twice their sd plus half the floor. A key stays only
while it clears that threshold by at least two more sds, so that re-measuring cannot flip it
(tests/test_exercises.py checks every key against the file; after `--measure`, rerun that test
and drop or change a key that fails).

Evidence: each of the three run directories must hold its final/ model, and that model, scored
again on the held-out split (exercises/evidence.py, rescore), must give the numbers the run's
eval.json claims. A run directory typed in, or copied from someone else's numbers, fails here.
"""
import math
import os

from exercises.evidence import rescore
from exercises.lib import answers, diagnose, expect, number, one_of
from exercises.sft_vs_dft import FLOORS, TRENDS, reference, summarize

RUNS = ("sft", "dft", "dpo")
RUNS_DIR = os.path.join("out", "sft_vs_dft")  # the grader copies the student's run directories here
RUBRIC = {"why_dft": 4}
# the two numbers each trend compares (a against b), and its answers for a > b, a < b and neither
COMPARES = {"sft_em": ("sft/exact_match", "before/exact_match", ("up", "down", "same")),
            "lower_nll": ("sft/nll", "dft/nll", ("dft", "sft", "same")),
            "dft_gold": ("dft/logp_pos", "sft/logp_pos", ("up", "down", "same")),
            "dft_neg": ("dft/neg_vs_base", None, ("up", "down", "same"))}
KEYS = {"sft_em": "up", "lower_nll": "sft", "dft_gold": "down", "dft_neg": "down"}


def paired(ref, a, b):
    """(mean, sd, threshold) of the per-seed differences a - b (b None: a itself)."""
    va = ref["metrics"][a]["values"]
    vb = ref["metrics"][b]["values"] if b else [0.0] * len(va)
    d = [x - y for x, y in zip(va, vb)]
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    return mean, sd, 2 * sd + FLOORS[a.split("/")[1]] / 2


def trend(ref, key):
    """(the answer the rule gives, its margin past the threshold in sds of the differences)."""
    a, b, (up, down, same) = COMPARES[key]
    mean, sd, threshold = paired(ref, a, b)
    answer = same if abs(mean) <= threshold else up if mean > 0 else down
    return answer, abs(abs(mean) - threshold) / max(sd, 1e-12)


def checks(m, opts):
    runs = opts.get("runs") or RUNS_DIR

    def key_check(key):
        def thunk():
            got = one_of(answers(m, runs), key, TRENDS[key])
            a, b, _ = COMPARES[key]
            mean, sd, threshold = paired(reference(), a, b)
            expect(got == KEYS[key], f'ANSWERS["{key}"] = {got!r}, but the instructor\'s '
                   f"{len(reference()['seeds'])} seeds say otherwise: compare {a}"
                   + (f" with {b}" if b else " with 0") + " seed by seed in "
                   "exercises/reference_numbers.json (one run can mislead; a trend is a mean "
                   "difference larger than twice its sd plus half the floor)")
        return thunk

    def tokens():
        mine = summarize(runs)
        want = -mine["before/logp_pos"] / mine["before/nll"]
        diagnose(number(answers(m, runs), "tokens_per_answer"), want, 'ANSWERS["tokens_per_answer"]',
                 [(1 / mine["before/nll"], "that is 1 / nll: nll is a mean over tokens, logp/pos "
                   "a sum over each answer's tokens, averaged over answers"),
                  (mine["before/logp_pos"] * mine["before/nll"], "a product: divide the mean "
                   "log-prob of an answer by the mean log-prob of a token")], 0.05,
                 "nll = -(sum of the log-probs of all scored tokens) / (number of tokens); logp/pos "
                 "= (the same sum) / (number of answers)")

    out = [(f"key: {key}", key_check(key)) for key in KEYS]
    out.append(("key: tokens_per_answer, from nll and logp/pos", tokens))
    if opts.get("evidence"):
        out += [(f"evidence: {loss}/final scores the held-out numbers its eval.json claims",
                 (lambda loss=loss: rescore(os.path.join(runs, loss)) and None)) for loss in RUNS]
    return out
