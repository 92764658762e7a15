"""
Worked solution of the simpo exercise: a new loss, added to the registry from outside losses.py.

    python -m exercises.check simpo --impl exercises/solutions/simpo.py

SimPO (Meng, Xia and Chen, 2024, arXiv 2405.14734) is DPO without the reference model: the reward of
a response is its length-normalized log-prob, a(y) = avg_logp(y|x), and a target margin gamma asks the
chosen to beat the rejected by at least gamma/beta in average log-prob:

    L = -log sigmoid( beta * (a(y_w) - a(y_l)) - gamma )

Defaults beta = 2.0, gamma = 0.5: the paper tunes beta in about [2, 2.5] (later advice: larger) and
the margin per model; these are the values common implementations default to.

To train with it for real, make register() run before train.py builds its --loss choices, e.g. add
one line at the end of your own copy of losses.py:  LOSSES["simpo"] = LossSpec(simpo_loss, ...).
Note train.py's --gamma flag (documented for DFT) then sets SimPO's gamma: one name, two meanings.
"""
import torch.nn.functional as F

from losses import LossSpec, _pairs


def simpo_loss(chosen_avg_logps, rejected_avg_logps, beta=2.0, gamma=0.5):
    a_w, a_l = _pairs(chosen_avg_logps, rejected_avg_logps)  # (N, B) each: every chosen with each of its rejected
    margin = beta * (a_w - a_l) - gamma  # (N, B)
    loss = -F.logsigmoid(margin).mean()  # logsigmoid: finite even at margin -1000
    return loss, {"loss": loss.detach().float(), "margin": margin.detach().float().mean(),
                  "accuracy": (a_w > a_l).float().mean(),
                  "avg_logp/chosen": chosen_avg_logps.detach().float().mean(),
                  "avg_logp/rejected": rejected_avg_logps.detach().float().mean()}


def register(losses_dict):
    # needs rejected responses (or sampled negatives), no reference log-probs, uses avg_logp, no per-prompt state
    losses_dict["simpo"] = LossSpec(simpo_loss, {"beta": 2.0, "gamma": 0.5}, needs_negatives=True, needs_ref=(),
                                    length_normalized=True, stateful=False)
    return losses_dict
