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
    "why": None,      # "a", "b", "c" or "d": why does DPO lower the chosen log-prob?
    "predict": None,  # "up", "down" or "same": held-out logp of the gold answers after a short DPO run
}
