"""Your answers to exercise dpo_chosen (questions: exercises/README.md): check them with
python -m exercises.check dpo_chosen --impl THIS_FILE  (in the student edition, exercises/yours/dpo_chosen.py is
checked without --impl)."""
import math

import torch


def chosen_change(g_w, g_l, margin, beta, lr):
    """The first-order change of s_w = log pi(y_w) after one gradient-descent step of size lr on the DPO loss
    of one pair, L = -log sigmoid(m), m = beta * Delta (the current margin). g_w, g_l: 1-D tensors, the
    gradients of s_w and s_l with respect to the shared parameters. Returns a float."""
    raise NotImplementedError


def make_case():
    """(chosen, rejected): two lists of token ids in range(5) for the toy unigram model, such that 20 steps of
    gradient descent on DPO lower the loss and the chosen's log-prob."""
    raise NotImplementedError


ANSWERS = {
    "predict": None,           # "up", "down" or "same": held-out logp of the gold answers after a short DPO run
    "dpo_grad_chosen": None,   # dL/ds(y_w) of one DPO pair, beta = 0.1, margin beta * Delta = 3
    "dpo_shift": None,         # change of that loss when s(y_w) and s(y_l) both fall by 5 (s_0 fixed)
    "asft_grad_chosen": None,  # dL/da(y_w) of one ASFT pair, lam = 0.1, beta = 1, a(y_w) = -1, a(y_l) = -2
    "asft_shift": None,        # change of that loss when a(y_w) and a(y_l) both fall by 0.5
    "why": None,               # a few sentences: why does DPO lower the chosen log-prob?
    "why_asft": None,          # a few sentences: why does ASFT keep pushing its chosen up?
}
