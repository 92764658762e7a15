"""Your answers to exercise dft_tau1 (questions: exercises/README.md): check them with
python -m exercises.check dft_tau1 --impl THIS_FILE  (in the student edition, exercises/yours/dft_tau1.py is
checked without --impl)."""
import itertools
import math

import torch


def all_outputs(V, L):
    """Every output of the toy model: all V**L sequences of L token ids from range(V), each once."""
    raise NotImplementedError


def exact_dft_objective(model, prompt, y, tau):
    """DFT's exact objective for one prompt, by enumeration:
        J = -s(y)/tau + log sum over every output y' of exp(s(y')/tau),   s(y) = log pi_theta(y | prompt)
    model: a model.GPT (float64, vocabulary model.config.vocab_size); prompt, y: lists of token ids; every
    output has len(y) tokens. s(y) sums the log-probs of y's tokens only, never the prompt's.
    Returns J as a 0-d tensor that carries gradient to the model's parameters."""
    raise NotImplementedError


ANSWERS = {
    "log_z_tau1": None,  # log Z at tau = 1, for ANY model and prompt (derive it; check it here)
    "grad_log_z": None,  # the size of the gradient of log Z (parameters) at tau = 1
    "loss_name": None,   # the entry of losses.LOSSES with DFT's exact objective at tau = 1
    "tau1": None,        # the derivation, a few lines: DFT at tau = 1, and what tells it from SFT
}
