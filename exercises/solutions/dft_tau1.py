"""
Worked solution of the dft_tau1 exercise: DFT's exact objective by enumerating every output.

    python -m exercises.check dft_tau1 --impl exercises/solutions/dft_tau1.py

At tau = 1 the normalizer is sum_y' exp(logp(y'|x)) = sum_y' pi_theta(y'|x) = 1: its log is 0 and its
gradient is E_pi[grad log pi] = grad sum_y' pi = 0. What is left is -logp(y|x), the sequence NLL, the
loss "nll" of losses.py. So at tau = 1 DFT and NLL/SFT share their objective; DFT's training differs
only through its estimator: B sampled negatives per prompt and epoch instead of the sum, a u that moves
only when its prompt is seen, and negatives drawn at temperature 0.7 / top-k 50 while the weights
divide by pi_0 at temperature 1. Below tau = 1, P(y|x) ~ pi^(1/tau) is sharper than pi, and the
objective itself pulls mass away from the outputs the model already likes.
"""
import itertools

import torch


def all_outputs(V, L):
    return [list(y) for y in itertools.product(range(V), repeat=L)]  # V**L sequences, tokens may repeat


def exact_dft_objective(model, prompt, y, tau):
    outs = all_outputs(model.config.vocab_size, len(y)) + [list(y)]  # every output, then y itself last
    ids = torch.tensor([list(prompt) + o for o in outs])  # (K + 1, P + L)
    logp = model(ids[:, :-1]).log_softmax(-1)  # (K + 1, P + L - 1, V): next-token log-probs
    tok = logp.gather(-1, ids[:, 1:, None])[..., 0]  # (K + 1, P + L - 1): log-prob of each next token
    s = tok[:, len(prompt) - 1:].sum(1)  # (K + 1,): only the output's tokens are scored
    return -s[-1] / tau + torch.logsumexp(s[:-1] / tau, 0)


ANSWERS = {
    "log_z_tau1": 0.0,  # Z = sum_y' pi(y'|x) = 1, for any model and prompt
    "grad_log_z": 0.0,  # grad log Z = grad Z / Z = grad 1 = 0
    "loss_name": "nll",  # -logp(y|x), a mean over prompts (SFT's is over tokens)
    "tau1": ("At tau = 1, exp(s(y')) = pi_theta(y'|x), so Z = sum over all outputs of "
             "pi_theta(y'|x) = 1 for every theta: log Z = 0 and its gradient, sum_y' pi grad log pi "
             "= grad sum_y' pi = 0. What is left of J is -logp(y|x), the sequence NLL, with the "
             "NLL's gradient. So at tau = 1 DFT and NLL share their objective; DFT's training "
             "differs only through its estimator: B sampled negatives instead of the sum, a u that "
             "moves only when its prompt is seen, and negatives sampled at temperature 0.7 while "
             "the weights divide by pi_0 at temperature 1."),
}
