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
  why                      multiple choice, exercises/README.md
  train_function           the function of train.py that does the work DFT needs and DFT2 skips
"""
import math

from exercises.lib import Fail, answers, choice, expect, get, is_close, word

TITLE = "why DFT2 needs no reference model: experiments with DFT's weights, and questions"
TIME = 20
OBJECTIVE = "see what the importance weight 1/pi_0 does, and what dropping it changes"
READ = (("losses.py", "dft2_loss"), ("losses.py", "LossSpec"), ("losses.py", "compute_loss"),
        ("train.py", "reference_logps"), ("docs/ALGORITHMS.md", "DFT2"))
TARGETS = ()
NEEDS = ()
NEG = [-10.0, -12.0]
QUESTIONS = {"w_base": [-11.0, -11.0], "w_shifted": [-30.0, -30.0], "w_matched": [-10.0, -12.0]}
KEYS = {"pos", "pos_n", "neg", "neg_n", "ref_pos", "ref_neg", "log_u"}
WHY = "7c8e424f1eca981f"
TRAIN_FUNCTION = "da9508a2df6c9456"


def weights(logp0, s=NEG):
    """DFT's weights with tau = 1, gamma = 1, one prompt: w_j = B exp(d_j) / sum_k exp(d_k), d = s - logp_0."""
    d = [a - b for a, b in zip(s, logp0)]
    e = [math.exp(x - max(d)) for x in d]
    return [len(d) * x / sum(e) for x in e]


def checks(m, opts):
    def reads(name):
        def thunk():
            import losses
            key = f"{name}_inputs"
            got = get(answers(m), key)
            if isinstance(got, str) or not hasattr(got, "__iter__"):
                raise Fail(f'ANSWERS["{key}"] should be a set of batch key names like {{"pos", ...}}, got {got!r}')
            got = {str(x) for x in got}
            expect(got <= KEYS, f'ANSWERS["{key}"] names keys no loss reads: {sorted(got - KEYS)} (the batch keys are '
                   f"{sorted(KEYS)})")
            spec = losses.LOSSES[name]
            divides = {"pos_n", "neg_n"} if spec.needs_negatives else {"pos_n"}
            want = set(spec.inputs.values()) | (divides if spec.length_normalized else set())
            if got != want:
                hint = ("DFT2 reads no reference log-probs at all: look at LOSSES['dft2'].inputs" if "ref_neg" in got - want
                        else "for a length-normalized loss compute_loss divides by pos_n and neg_n: it reads them too"
                        if want - got <= {"pos_n", "neg_n"} else "read the loss's LossSpec in LOSSES and compute_loss, "
                        "or call compute_loss with a batch that lacks a key")
                raise Fail(f'ANSWERS["{key}"] = {sorted(got)}: {len(want - got)} key(s) missing, {len(got - want)} too '
                           f"many. Hint: {hint}")
        return thunk

    def weight(key):
        def thunk():
            got = get(answers(m), key)
            want = weights(QUESTIONS[key])
            if key == "w_shifted" and is_close(got, [1.0, 1.0], 1e-3):
                raise Fail('ANSWERS["w_shifted"]: a constant added to every logp_0 cancels between d_j and log_u: '
                           "the weights do not change")
            expect(is_close(got, want, 1e-3), f'ANSWERS["{key}"] = {got!r} is not right (to 1e-3). Hint: with gamma = 1, '
                   "log_u is this batch's logmeanexp_j d_j, so w_j = exp(d_j - log_u) = B exp(d_j) / sum_k exp(d_k), "
                   "d_j = s(y'_j)/tau - logp_0(y'_j)")
        return thunk

    def why():
        choice(answers(m), "dft2_no_ref", "why", ("a", "b", "c", "d"), WHY, "the negatives are SAMPLES from pi_0; of "
               "which quantity is a plain average over samples from pi_0 an estimate, with no weights at all?")

    def train_function():
        got = word(get(answers(m), "train_function")).removesuffix("()")
        choice({"train_function": got}, "dft2_no_ref", "train_function", (got,), TRAIN_FUNCTION,
               "look in train.py for the function that runs the starting model over every negative once, before training")

    return [("which batch keys compute_loss('dft') reads", reads("dft")),
            ("which batch keys compute_loss('dft2') reads", reads("dft2")),
            ("DFT's weights, equal logp_0", weight("w_base")),
            ("DFT's weights, logp_0 shifted by a constant", weight("w_shifted")),
            ("DFT's weights, logp_0 ranking the negatives like the model", weight("w_matched")),
            ("why DFT2 needs no reference model (multiple choice)", why),
            ("the work in train.py that DFT2 skips", train_function)]
