"""
Exercise simpo: a new loss, SimPO, added to the registry without editing losses.py.

SimPO (Meng, Xia and Chen, 2024) is DPO without a reference model: the reward is the length-normalized
log-prob a(y) = avg_logp(y|x), and a target margin gamma asks the chosen to win by a margin:
    L = -log sigmoid(beta * (a(y_w) - a(y_l)) - gamma),   mean over the pairs;  beta = 2.0, gamma = 0.5
Your file defines simpo_loss(chosen_avg_logps, rejected_avg_logps, beta=2.0, gamma=0.5) -> (loss,
metrics) and register(losses_dict), which adds losses_dict["simpo"] = losses.LossSpec(...). The checker
hands register a copy of losses.LOSSES and swaps it in only while it runs compute_loss("simpo", ...).

Hidden cases (--cases): {"name": ..., "chosen": [N], "rejected": [N] or [N][B], "beta": float,
"gamma": float}; value and gradients are compared with the checker's float64 reference.
"""
import inspect

import torch

from exercises.lib import (backward, close, diagnose, expect, fmt, grad_of, logsig, loss_and_metrics, pairs_of,
                           rand_list, sigmoid, t64)

TITLE = "add a new loss (SimPO) and register it in LOSSES, without touching losses.py"
TIME = 25
OBJECTIVE = "see what a loss declares to the trainer (inputs, normalization, hyperparameters) and extend the registry"
READ = (("losses.py", "LossSpec"), ("losses.py", "HParam"), ("losses.py", "compute_loss"), ("train.py", "hparam_flags"))
TARGETS = ()
NEEDS = ("simpo_loss", "register")
DEFAULTS = {"beta": 2.0, "gamma": 0.5}


def reference(aw, al, beta, gamma, sign=-1.0):
    """Python floats: mean over pairs of -log sigmoid(beta (a_w - a_l) + sign * gamma), and its gradients."""
    P = pairs_of(aw, al)
    loss, g_w, g_l = 0.0, [0.0] * len(aw), [list(r) if isinstance(r, list) else 0.0 for r in al]
    for i, j, w, r in P:
        z = beta * (w - r) + sign * gamma
        loss -= logsig(z) / len(P)
        dz = -(1 - sigmoid(z)) / len(P)
        g_w[i] += beta * dz
        if isinstance(g_l[i], list):
            g_l[i][j] = -beta * dz
        else:
            g_l[i] = -beta * dz
    return loss, g_w, g_l


def mistakes(aw, al, beta, gamma):
    return [(reference(aw, al, beta, gamma, sign=1.0)[0], "the margin is added; it is subtracted: the chosen must win "
             "BY gamma (-log sigmoid(beta (a_w - a_l) - gamma))"),
            (reference(aw, al, beta, 0.0)[0], "the target margin gamma is missing")]


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
    """fn's arguments that are not hyperparameters, in order: what LossSpec.inputs maps to batch
    keys."""
    return [k for k in inspect.signature(fn).parameters if k not in hparams]


def run(m, aw, al, grad=False, **kw):
    a, b = t64(aw, grad), t64(al, grad)
    loss, met = loss_and_metrics(m.simpo_loss(a, b, **kw), "simpo_loss")
    return loss, met, a, b


def checks(m, opts):
    N, B = 5, 3
    aw, al, al2 = rand_list((N,), -3, -0.2, 80), rand_list((N,), -3, -0.2, 81), rand_list((N, B), -3, -0.2, 82)

    def value(kw):
        def thunk():
            loss, _, _, _ = run(m, aw, al, **kw)
            hp = {**DEFAULTS, **kw}
            diagnose(loss, reference(aw, al, **hp)[0], f"loss at beta={hp['beta']}, gamma={hp['gamma']}",
                     mistakes(aw, al, **hp))
        return thunk

    def gradient():
        loss, _, a, b = run(m, aw, al, grad=True, beta=2.0, gamma=0.5)
        backward(loss, "simpo_loss")
        _, g_w, g_l = reference(aw, al, 2.0, 0.5)
        close(grad_of(a, "chosen_avg_logps"), g_w, "d loss / d chosen_avg_logps")
        close(grad_of(b, "rejected_avg_logps"), g_l, "d loss / d rejected_avg_logps")

    def pairs():
        loss, _, a, _ = run(m, aw, al2, grad=True, beta=2.0, gamma=0.5)
        want, g_w, _ = reference(aw, al2, 2.0, 0.5)
        close(loss, want, f"loss with rejected of shape ({N}, {B}): pair each chosen with its {B} rejected, mean over pairs")
        backward(loss, "simpo_loss")
        close(grad_of(a, "chosen_avg_logps"), g_w, f"d loss / d chosen_avg_logps with ({N}, {B}) rejected")

    def stable():
        loss, _, a, _ = run(m, [-500.0], [0.0], grad=True, beta=2.0, gamma=0.5)  # z = -1000.5
        expect(bool(torch.isfinite(loss)), f"log(sigmoid(z)) is -inf at z = -1000: use F.logsigmoid (loss {fmt(loss)})")
        close(loss, 1000.5, "loss at beta (a_w - a_l) - gamma = -1000.5")
        backward(loss, "simpo_loss")
        close(grad_of(a, "chosen_avg_logps"), [-2.0], "gradient at a margin of -1000.5")

    def metrics():
        loss, met, _, _ = run(m, aw, al)
        expect("loss" in met, f'metrics should have "loss" (the trainer logs it), it has {sorted(met)}')
        for k, v in met.items():
            expect(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad, f'metrics["{k}"] should be a '
                   f"detached 0-d tensor (the trainer all-reduces them), got {v!r}")
        close(met["loss"], loss, 'metrics["loss"]')

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
            want = dict(zip(arguments(m.simpo_loss, s.hparams), ("pos", "neg")))
            expect(s.inputs == want, "SimPO reads the positives and the negatives (rejected), and "
                   "nothing else: inputs maps each argument of simpo_loss to the batch key it "
                   f"takes, so inputs should be {want!r}, got {s.inputs!r}")
            want = dict(needs_ref=(), length_normalized=True, stateful=False, step_mean="prompts", pairs_with_rejected=True)
            for k, v in want.items():
                expect(getattr(s, k) == v, f"LossSpec.{k} should be {v!r} for SimPO, got {getattr(s, k)!r}")
            for k in losses.LOSSES:
                expect(reg.get(k) is losses.LOSSES[k], f'register() changed the entry "{k}": only add "simpo"')

    def through_registry():
        import losses
        g = torch.Generator().manual_seed(83)
        pos_n, neg_n = torch.randint(2, 40, (N,), generator=g), torch.randint(2, 40, (N, B), generator=g)
        pos = -torch.rand(N, generator=g, dtype=torch.float64) * pos_n * 2
        neg = -torch.rand(N, B, generator=g, dtype=torch.float64) * neg_n * 2
        batch = {"pos": pos, "pos_n": pos_n, "neg": neg, "neg_n": neg_n}  # no reference log-probs at all
        a_w, a_l = (pos / pos_n).tolist(), (neg / neg_n).tolist()
        with PatchedRegistry(m):
            loss, new_u, _ = losses.compute_loss("simpo", batch)
            diagnose(loss, reference(a_w, a_l, **DEFAULTS)[0], "compute_loss('simpo', batch) at the defaults",
                     [(reference(pos.tolist(), neg.tolist(), **DEFAULTS)[0], "the loss sees summed log-probs: declare "
                       "length_normalized=True, and compute_loss divides by n_tokens for you")])
            expect(new_u is None, "compute_loss('simpo') should return new_log_u None: SimPO keeps no per-prompt state")
            loss, _, _ = losses.compute_loss("simpo", batch, beta=1.0, gamma=0.0)
            close(loss, reference(a_w, a_l, 1.0, 0.0)[0], "compute_loss('simpo', batch, beta=1.0, gamma=0.0)")

    return [("value at the defaults", value({})),
            ("the target margin gamma is subtracted", value({"beta": 1.5, "gamma": 1.0})),
            ("gradient w.r.t. chosen and rejected", gradient),
            ("rejected of shape (N, B): pairs, averaged", pairs),
            ("large margins stay finite", stable),
            ("metrics: 0-d tensors, with the loss", metrics),
            ("register() adds a LossSpec that says what SimPO needs", spec),
            ("compute_loss('simpo', batch) works through the registry, with no reference log-probs", through_registry)]


def run_case(m, c):
    beta, gamma = float(c.get("beta", 2.0)), float(c.get("gamma", 0.5))
    loss, _, a, b = run(m, c["chosen"], c["rejected"], grad=True, beta=beta, gamma=gamma)
    want, g_w, g_l = reference(c["chosen"], c["rejected"], beta, gamma)
    diagnose(loss, want, "loss", mistakes(c["chosen"], c["rejected"], beta, gamma))
    backward(loss, "simpo_loss")
    close(grad_of(a, "chosen_avg_logps"), g_w, "d loss / d chosen_avg_logps")
    close(grad_of(b, "rejected_avg_logps"), g_l, "d loss / d rejected_avg_logps")
