"""
Worked solution of the simpo exercise: a new loss, added to the registry from outside losses.py.

    python -m exercises.check simpo --impl exercises/solutions/simpo.py

SimPO (Meng, Xia and Chen, 2024, arXiv 2405.14734) is DPO without the reference model: the reward of
a response is its length-normalized log-prob, a(y) = avg_logp(y|x), and a target margin gamma asks the
chosen to beat the rejected by at least gamma/beta in average log-prob:

    L = -log sigmoid( beta * (a(y_w) - a(y_l)) - gamma )

Defaults beta = 2.0, gamma = 0.5: the paper tunes beta in about [2, 2.5] (later advice: larger) and
the margin per model; these are the values common implementations default to.

To train with it for real, add the entry in your own copy of losses.py, after LOSSES:
    LOSSES["simpo"] = LossSpec(simpo_loss, dict(chosen_avg_logps="pos", rejected_avg_logps="neg"),
                               {...}, length_normalized=True, pairs_with_rejected=True)
train.py builds one --flag per hyperparameter name, shared by the losses that take it: --gamma would
then set DFT's gamma and SimPO's margin, and be checked against the range of the first loss that
declared it (DFT's: 0 < gamma <= 1). A distinct name (say "margin") avoids that.
"""
import torch.nn.functional as F

from losses import HParam, LossSpec, _pairs


def simpo_loss(chosen_avg_logps, rejected_avg_logps, beta=2.0, gamma=0.5):
    a_w, a_l = _pairs(chosen_avg_logps, rejected_avg_logps)  # (N, B) each: every chosen with each of its rejected
    margin = beta * (a_w - a_l) - gamma  # (N, B)
    loss = -F.logsigmoid(margin).mean()  # logsigmoid: finite even at a margin of -1000
    return loss, {"loss": loss.detach().float(), "margin": margin.detach().float().mean(),
                  "accuracy": (a_w > a_l).float().mean()}


def register(losses_dict):
    # reads positives and negatives (no reference log-probs), length-normalized, no per-prompt state;
    # on preference data its negative is the rejected response
    hparams = {"beta": HParam(2.0, "SimPO scale of the avg_logp difference", low=0),
               "gamma": HParam(0.5, "SimPO target margin", low=0, low_inclusive=True)}
    # inputs: simpo_loss's argument -> the batch key it takes
    inputs = dict(chosen_avg_logps="pos", rejected_avg_logps="neg")
    losses_dict["simpo"] = LossSpec(simpo_loss, inputs, hparams, length_normalized=True,
                                    pairs_with_rejected=True)
    return losses_dict
