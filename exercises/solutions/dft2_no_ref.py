"""
Worked solution of the dft2_no_ref exercise: the answers, each found by an experiment with losses.py.

    python -m exercises.check dft2_no_ref --impl exercises/solutions/dft2_no_ref.py
"""
import torch

import losses


def keys_read(name):
    """Call compute_loss with every batch key but one: the keys whose absence makes it fail are the ones it reads."""
    t = lambda *v: torch.tensor(v, dtype=torch.float64)
    full = {"pos": t(-5.0), "pos_n": torch.tensor([5]), "neg": t([-8.0, -9.0]), "neg_n": torch.tensor([[4, 6]]),
            "ref_pos": t(-6.0), "ref_neg": t([-7.0, -9.5]), "log_u": t(0.0)}
    read = set()
    for key in full:
        try:
            losses.compute_loss(name, {k: v for k, v in full.items() if k != key})
        except (KeyError, ValueError):
            read.add(key)
    return read


def weights(logp0, s=(-10.0, -12.0)):
    """DFT's w_j for one prompt with tau = 1, gamma = 1 (so log_u = this batch's logmeanexp_j d_j).
    dft_loss reports only w/mean and w/max, so recompute w from new_log_u: w_j = exp(d_j - log_u)."""
    neg, ref = torch.tensor([s], dtype=torch.float64), torch.tensor([logp0], dtype=torch.float64)
    _, new_log_u, _ = losses.dft_loss(torch.zeros(1, dtype=torch.float64), neg, ref, torch.zeros(1, dtype=torch.float64),
                                      tau=1.0, gamma=1.0)
    return torch.exp(neg - ref - new_log_u[:, None])[0].tolist()


ANSWERS = {
    "dft_inputs": keys_read("dft"),     # pos, neg, ref_neg, log_u: pi_0's log-probs of the negatives
    "dft2_inputs": keys_read("dft2"),   # pos, pos_n, neg, neg_n, log_u: nothing from pi_0
    "w_base": weights([-11.0, -11.0]),  # [1.76, 0.24]: B * softmax(s): pi_0 finds both equally likely
    "w_shifted": weights([-30.0, -30.0]),  # the same: a constant shift of logp_0 cancels in the normalization
    "w_matched": weights([-10.0, -12.0]),  # [1, 1]: pi_0 already ranks the negatives like the model does
    "train_function": "reference_logps",  # scores every negative with the starting model before training
    "why": ("DFT's normalizer is a sum over ALL responses of exp(s/tau); to estimate it from samples of pi_0 "
            "each sample is divided by its probability pi_0(y'), the importance weight, which is why DFT needs "
            "logp_0 and reference_logps. DFT2's normalizer is instead the expectation under pi_0 of "
            "exp(a(y')/tau): the negatives are samples from pi_0, so their plain average estimates it with no "
            "weights at all, and logp_0 never enters d. A constant shift of logp_0 does not change the weights; "
            "only how pi_0 ranks the negatives does."),
}
