"""Your SimPO (exercise simpo): check it with  python -m exercises.check simpo --impl THIS_FILE
(in the student edition, exercises/yours/simpo.py is checked without --impl)."""
import torch
import torch.nn.functional as F

from losses import HParam, LossSpec


def simpo_loss(chosen_avg_logps, rejected_avg_logps, beta=2.0, gamma=0.5):
    """SimPO: L = -log sigmoid(beta * (a(y_w) - a(y_l)) - gamma), the mean over the pairs.
    chosen_avg_logps (N,); rejected_avg_logps (N,) or (N, B) (each chosen paired with its B rejected).
    Returns (loss, metrics): metrics a dict of detached 0-d tensors, with "loss"."""
    raise NotImplementedError


def register(losses_dict):
    """Add losses_dict["simpo"] = LossSpec(...): which batch key each argument of simpo_loss reads
    (a dict {argument name: batch key}), whether they arrive length-normalized, whether it pairs
    with the "rejected" responses of preference data, and its hyperparameters as HParam(default,
    help, ...)."""
    raise NotImplementedError
