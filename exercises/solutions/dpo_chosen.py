"""
Worked solution of the dpo_chosen exercise.

    python -m exercises.check dpo_chosen --impl exercises/solutions/dpo_chosen.py

dL/dtheta = -beta sigmoid(-m) (g_w - g_l), so one step of gradient descent moves theta by
lr beta sigmoid(-m) (g_w - g_l), and s_w changes, to first order, by that step dotted with g_w:
lr beta sigmoid(-m) (|g_w|^2 - g_w . g_l). It is negative exactly when g_w . g_l > |g_w|^2: when the
rejected's gradient points the chosen's way and is longer. In the unigram toy model g(y) = counts(y) -
len(y) softmax(theta), so a rejected that uses the chosen's token 0 five times, plus a token of its own,
pulls p(0) down hard; the chosen needs token 0 too, and falls with it, while the margin grows because
the rejected falls faster. On real data chosen and rejected answers share most of their tokens (the
same prompt, the same format, often the same first sentences), which is why DPO's chosen log-prob falls
in practice: in the short runs of exercise sft_vs_dft, held-out logp of the gold answers drops from
about -2.2 to -4.1 (the mean over eight seeds).
"""
import torch


def chosen_change(g_w, g_l, margin, beta, lr):
    sig = torch.sigmoid(torch.tensor(-float(margin), dtype=torch.float64))  # -dL/dm
    return (lr * beta * sig * (g_w @ g_w - g_w @ g_l)).item()  # step = lr beta sig (g_w - g_l); dot with g_w


def make_case():
    return [0, 1], [0, 0, 0, 0, 0, 2]  # the rejected shares token 0 with the chosen, five times over


ANSWERS = {"why": "d", "predict": "down"}
