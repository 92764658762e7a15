"""Teacher's part of exercise dft_tau1: the enumeration reference, the key of the derivation, and
the rubric of the written answer (exercises/teacher/rubric.md)."""
import itertools
import math

import torch

from exercises.dft_tau1 import PROMPT, Y, compare, toy_model
from exercises.lib import answers, diagnose, expect, get, number

from .ref import mistakes as named

PUBLIC = [{"name": "tau = 0.5: value and gradient of the sharpened objective", "seed": 0, "V": 3,
           "L": 4, "tau": 0.5, "prompt": PROMPT, "y": Y},
          {"name": "another toy model (V = 2, L = 5, tau = 0.7)", "seed": 3, "V": 2, "L": 5,
           "tau": 0.7, "prompt": [0, 1, 1], "y": [1, 0, 0, 1, 1]}]
CASES = [{"name": "V = 3, L = 3, tau = 0.3", "seed": 5, "V": 3, "L": 3, "tau": 0.3, "prompt": [2],
          "y": [0, 2, 1]}]
RUBRIC = {"tau1": 3}


def scores(model, prompt, outputs):
    """s(y') for every output, by one batched forward: (len(outputs),) float64 with gradient."""
    P, V = len(prompt), model.config.vocab_size
    ids = torch.tensor([list(prompt) + list(y) for y in outputs])  # (K, P + L)
    # (K, L, V): the positions that predict the output's tokens
    pred = torch.log_softmax(model(ids)[:, P - 1:-1].double(), dim=-1)
    return (pred * torch.nn.functional.one_hot(ids[:, P:], V)).sum(dim=(1, 2))  # (K,)


def reference(model, prompt, y, tau, sum_tau=True, pos_tau=True, mean=False):
    """J by enumeration; the keyword arguments compute the classic mistakes instead."""
    outs = [list(o) for o in itertools.product(range(model.config.vocab_size), repeat=len(y))]
    s_all, s_y = scores(model, prompt, outs), scores(model, prompt, [y])[0]
    inner = s_all / tau if sum_tau else s_all
    log_z = torch.logsumexp(inner, 0) - (math.log(len(outs)) if mean else 0.0)
    return -s_y / (tau if pos_tau else 1.0) + log_z


def expected(c):
    model = toy_model(int(c.get("seed", 0)), int(c.get("V", 3)), int(c.get("L", 4)))
    tau, prompt, y = float(c.get("tau", 1.0)), list(c.get("prompt", PROMPT)), list(c.get("y", Y))
    model.zero_grad(set_to_none=True)
    j = reference(model, prompt, y, tau)
    j.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).tolist()
    with torch.no_grad():
        wrong = [("J", reference(model, prompt, y, tau, mean=True).item(), "a logmeanexp: the "
                  "normalizer is a SUM over all outputs (at tau = 1 it is sum_y' pi(y'|x) = 1)"),
                 ("J", reference(model, prompt, y, tau, pos_tau=False).item(), "the positive is "
                  "-s(y)/tau: divide it by tau too"),
                 ("J", reference(model, prompt, y, tau, sum_tau=False).item(), "inside the sum it "
                  "is exp(s(y')/tau)")]
    return {"J": j.item(), "grad": grad, "mistakes": named(wrong)}


def checks(m, opts):
    def log_z():
        a = answers(m)
        diagnose(number(a, "log_z_tau1"), 0.0, 'ANSWERS["log_z_tau1"]', [
            (math.log(81), "that is the log of the NUMBER of outputs: Z sums exp(s(y')) = "
             "pi(y'|x), probabilities, not ones")], 1e-4,
                 "at tau = 1, Z = sum over all y' of pi(y'|x): what do probabilities sum to?")
        diagnose(number(a, "grad_log_z"), 0.0, 'ANSWERS["grad_log_z"]', [], 1e-4,
                 "grad log Z = sum_y' pi(y'|x) grad log pi(y'|x) = grad sum_y' pi(y'|x) = grad 1")

    def loss_name():
        got = str(get(answers(m), "loss_name")).strip()
        why = "SFT averages over TOKENS; J at tau = 1 is -logp(y|x) per prompt, a sequence NLL" \
            if got == "sft" else "which loss of losses.py is -logp(y|x), averaged over prompts?"
        expect(got == "nll", f'ANSWERS["loss_name"] = {got!r} is not it: {why}')

    cases = [(f"teacher case: {c['name']}", (lambda c=c: compare(m, c, expected(c))))
             for c in CASES]
    return cases + [("key: log Z and its gradient at tau = 1", log_z),
                    ("key: the loss with DFT's objective at tau = 1", loss_name)]
