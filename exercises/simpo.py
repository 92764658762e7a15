"""
Exercise simpo: a new loss, SimPO, added to the registry without editing losses.py.

SimPO (Meng, Xia and Chen, 2024) is DPO without a reference model: the reward is the length-normalized
log-prob a(y) = avg_logp(y|x), and a target margin gamma asks the chosen to win by a margin:
    L = -log sigmoid(beta * (a(y_w) - a(y_l)) - gamma),   mean over the pairs;  beta = 2.0, gamma = 0.5
Your file defines simpo_loss(chosen_avg_logps, rejected_avg_logps, beta=2.0, gamma=0.5) -> (loss,
metrics) and register(losses_dict), which adds losses_dict["simpo"] = losses.LossSpec(...). The checker
hands register a copy of losses.LOSSES and swaps it in only while it runs compute_loss("simpo", ...).

    python -m exercises.check simpo

Cases (--cases; the public ones: exercises/cases/simpo.json): {"name": ..., "chosen": [N], "rejected":
[N] or [N][B], "beta": float, "gamma": float}; a case without beta and gamma calls simpo_loss with its
defaults. Value and gradients are compared.
"""
import inspect

import torch

from exercises.lib import (Fail, backward, case_checks, close, diagnose, expect, fmt, grad_of, loss_and_metrics,
                           mistakes_of, t64)

TITLE = "add a new loss (SimPO) and register it in LOSSES, without touching losses.py"
TIME = 25
OBJECTIVE = "see what a loss declares to the trainer (inputs, normalization, hyperparameters) and extend the registry"
READ = (("losses.py", "LossSpec"), ("losses.py", "HParam"), ("losses.py", "compute_loss"), ("train.py", "hparam_flags"))
TARGETS = ()
NEEDS = ("simpo_loss", "register")
DEFAULTS = {"beta": 2.0, "gamma": 0.5}
GRAD = "the value is right but not its gradient: a python float, .item() or .detach() on the way?"


class PatchedRegistry:
    """losses.LOSSES replaced by a copy the student's register() filled in, restored afterwards (compute_loss
    reads the module global, so it sees the copy)."""

    def __init__(self, m):
        self.m = m

    def __enter__(self):
        import losses
        self.losses, self.saved = losses, losses.LOSSES
        reg = dict(losses.LOSSES)
        out = self.m.register(reg)
        losses.LOSSES = out if isinstance(out, dict) else reg  # register may also return the dict it filled in
        return losses.LOSSES

    def __exit__(self, *exc):
        self.losses.LOSSES = self.saved
        return False


def arguments(fn, hparams):
    """fn's arguments that are not hyperparameters, in order: what LossSpec.inputs maps to batch keys."""
    return [k for k in inspect.signature(fn).parameters if k not in hparams]


def run(m, aw, al, grad=False, **kw):
    a, b = t64(aw, grad), t64(al, grad)
    loss, met = loss_and_metrics(m.simpo_loss(a, b, **kw), "simpo_loss")
    return loss, met, a, b


def compare(m, c, want):
    """Case c against want = {"loss", "g_chosen", "g_rejected", "mistakes"}."""
    kw = {k: float(c[k]) for k in ("beta", "gamma") if k in c}
    loss, _, a, b = run(m, c["chosen"], c["rejected"], grad=True, **kw)
    shown = ", ".join(f"{k}={v}" for k, v in kw.items()) or "the defaults beta=2.0, gamma=0.5"
    diagnose(loss, want["loss"], f"loss at {shown}", mistakes_of(want, "loss"), 1e-6,
             "L = -log sigmoid(beta (a_w - a_l) - gamma), the mean over the pairs")
    backward(loss, "simpo_loss")
    close(grad_of(a, "chosen_avg_logps"), want["g_chosen"], "d loss / d chosen_avg_logps", 1e-6, GRAD)
    close(grad_of(b, "rejected_avg_logps"), want["g_rejected"], "d loss / d rejected_avg_logps", 1e-6, GRAD)


def batch(N=5, B=3):
    """Summed log-probs and token counts, the way train.py hands them to compute_loss; no reference log-probs."""
    g = torch.Generator().manual_seed(83)
    pos_n, neg_n = torch.randint(2, 40, (N,), generator=g), torch.randint(2, 40, (N, B), generator=g)
    pos = -torch.rand(N, generator=g, dtype=torch.float64) * pos_n * 2
    neg = -torch.rand(N, B, generator=g, dtype=torch.float64) * neg_n * 2
    return {"pos": pos, "pos_n": pos_n, "neg": neg, "neg_n": neg_n}


def checks(m, opts):
    def stable():
        loss, _, a, _ = run(m, [-500.0], [0.0], grad=True, beta=2.0, gamma=0.5)  # z = -1000.5
        expect(bool(torch.isfinite(loss)), f"log(sigmoid(z)) is -inf at z = -1000: use F.logsigmoid (loss {fmt(loss)})")
        close(loss, 1000.5, "loss at beta (a_w - a_l) - gamma = -1000.5", 1e-6, "-log sigmoid(z) is -z for very "
              "negative z")
        backward(loss, "simpo_loss")
        close(grad_of(a, "chosen_avg_logps"), [-2.0], "gradient at a margin of -1000.5", 1e-6, "dL/da_w = "
              "-beta (1 - sigmoid(z)): saturated at -beta there, not vanishing")

    def metrics():
        loss, met, _, _ = run(m, [-1.0, -0.5], [-1.5, -0.4])
        expect("loss" in met, f'metrics should have "loss" (the trainer logs it), it has {sorted(met)}')
        for k, v in met.items():
            expect(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad, f'metrics["{k}"] should be a '
                   f"detached 0-d tensor (the trainer all-reduces them), got {v!r}")
        close(met["loss"], loss, 'metrics["loss"]', 1e-6, "the metric is the loss itself, detached")

    def spec():
        import losses
        with PatchedRegistry(m) as reg:
            expect("simpo" in reg, f'register() did not add "simpo" (the registry has {sorted(reg)})')
            s = reg["simpo"]
            expect(isinstance(s, losses.LossSpec), f'LOSSES["simpo"] should be a losses.LossSpec, got {type(s).__name__}')
            expect(s.fn is m.simpo_loss, "LOSSES['simpo'].fn should be your simpo_loss")
            expect(isinstance(s.hparams, dict) and all(isinstance(h, losses.HParam) for h in s.hparams.values()),
                   "LossSpec.hparams maps each name to losses.HParam(default, help, ...): train.py builds its --flags and "
                   f"their checks from them; got {s.hparams!r}")
            expect(dict(s.defaults) == DEFAULTS, f"defaults should be {DEFAULTS}, got {s.defaults}")
            for k in losses.LOSSES:
                expect(reg.get(k) is losses.LOSSES[k], f'register() changed the entry "{k}": only add "simpo"')

    def through_registry():
        import losses
        b = batch()
        with PatchedRegistry(m):
            try:
                loss, new_u, _ = losses.compute_loss("simpo", b)
            except ValueError as e:
                if "missing" not in str(e):
                    raise
                raise Fail(f"SimPO reads the positives and the negatives and nothing else (no reference model): "
                           f"inputs should be {{argument: 'pos', argument: 'neg'}}, one per argument of simpo_loss "
                           f"({e})") from None
            own, _, _, _ = run(m, (b["pos"] / b["pos_n"]).tolist(), (b["neg"] / b["neg_n"]).tolist())
            summed, _, _, _ = run(m, b["pos"].tolist(), b["neg"].tolist())
            diagnose(loss, own, "compute_loss('simpo', batch) against your simpo_loss on avg_logp = logp / n_tokens",
                     [(summed, "the loss sees summed log-probs: declare length_normalized=True, and compute_loss "
                       "divides by n_tokens for you")], 1e-9)
            expect(new_u is None, "compute_loss('simpo') should return new_log_u None: SimPO keeps no per-prompt state")
            loss, _, _ = losses.compute_loss("simpo", b, beta=1.0, gamma=0.0)
            own, _, _, _ = run(m, (b["pos"] / b["pos_n"]).tolist(), (b["neg"] / b["neg_n"]).tolist(), beta=1.0,
                               gamma=0.0)
            close(loss, own, "compute_loss('simpo', batch, beta=1.0, gamma=0.0)", 1e-9, "the hyperparameters given "
                  "to compute_loss reach simpo_loss through LossSpec.hparams (their names are simpo_loss's)")

    return case_checks("simpo", compare, m) + [
        ("large margins stay finite", stable),
        ("metrics: 0-d tensors, with the loss", metrics),
        ("register() adds a LossSpec with HParam hyperparameters and SimPO's defaults", spec),
        ("compute_loss('simpo', batch) works through the registry, with no reference log-probs", through_registry)]
