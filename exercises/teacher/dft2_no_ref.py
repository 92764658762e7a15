"""Teacher's part of exercise dft2_no_ref: the key (from losses.LOSSES and DFT's weights) and the
rubric of the written answer (exercises/teacher/rubric.md)."""
import math

from exercises.dft2_no_ref import key_set
from exercises.lib import Fail, answers, expect, get, is_close, numbers, word

NEG = [-10.0, -12.0]
QUESTIONS = {"w_base": [-11.0, -11.0], "w_shifted": [-30.0, -30.0], "w_matched": [-10.0, -12.0]}
TRAIN_FUNCTION = "reference_logps"
RUBRIC = {"why": 3}


def weights(logp0, s=NEG):
    """DFT's weights with tau = 1, gamma = 1, one prompt: w_j = B exp(d_j) / sum_k exp(d_k),
    d = s - logp_0."""
    d = [a - b for a, b in zip(s, logp0)]
    e = [math.exp(x - max(d)) for x in d]
    return [len(d) * x / sum(e) for x in e]


def hint_for(got, want):
    if "ref_neg" in got - want:
        return "DFT2 reads no reference log-probs at all: look at LOSSES['dft2'].inputs"
    if want - got <= {"pos_n", "neg_n"}:
        return "for a length-normalized loss compute_loss divides by pos_n and neg_n: it reads them"
    return "read the loss's LossSpec in LOSSES and compute_loss, or call compute_loss with a " \
        "batch that lacks a key"


def checks(m, opts):
    def reads(name):
        def thunk():
            import losses
            got = key_set(m, name)
            spec = losses.LOSSES[name]
            divides = {"pos_n", "neg_n"} if spec.needs_negatives else {"pos_n"}
            want = set(spec.inputs.values()) | (divides if spec.length_normalized else set())
            if got != want:
                raise Fail(f'ANSWERS["{name}_inputs"] = {sorted(got)}: {len(want - got)} key(s) '
                           f"missing, {len(got - want)} too many. Hint: {hint_for(got, want)}")
        return thunk

    def weight(key):
        def thunk():
            got = numbers(answers(m), key, 2)
            want = weights(QUESTIONS[key])
            if key == "w_shifted" and is_close(got, [1.0, 1.0], 1e-3):
                raise Fail('ANSWERS["w_shifted"]: a constant added to every logp_0 cancels between '
                           "d_j and log_u: the weights do not change")
            expect(is_close(got, want, 1e-3), f'ANSWERS["{key}"] = {got!r} is not right (to '
                   "1e-3). Hint: with gamma = 1, log_u is this batch's logmeanexp_j d_j, so w_j = "
                   "exp(d_j - log_u) = B exp(d_j) / sum_k exp(d_k), d_j = s(y'_j)/tau - "
                   "logp_0(y'_j)")
        return thunk

    def train_function():
        got = word(get(answers(m), "train_function")).removesuffix("()")
        expect(got == TRAIN_FUNCTION, f'ANSWERS["train_function"] = {got!r} is not it. Hint: look '
               "in train.py for the function that runs the starting model over every negative "
               "once, before training")

    return [("key: the batch keys compute_loss('dft') reads", reads("dft")),
            ("key: the batch keys compute_loss('dft2') reads", reads("dft2")),
            ("key: DFT's weights, equal logp_0", weight("w_base")),
            ("key: DFT's weights, logp_0 shifted by a constant", weight("w_shifted")),
            ("key: DFT's weights, logp_0 ranking the negatives like the model",
             weight("w_matched")),
            ("key: the work in train.py that DFT2 skips", train_function)]
