"""
The classroom exercises (exercises/): every checker passes its solution and rejects plausible wrong answers
with a message that names the mistake (a checker that cannot fail is a defect; the wrong answers below
were written before the checks); a student's copy, which runs only the public checks, passes the solutions
too; the public cases are those the teacher's references compute; the student edition holds no solution,
no answer key, no reference and no teacher's file, and fails cleanly until solved; the command line answers
with the right output and exit status; the teacher's page names every exercise and the code it points to.

    python -m pytest -q tests/test_exercises.py
"""
import ast
import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

import losses
from exercises import check, lib, student

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EX = os.path.join(ROOT, "exercises")
SOL = os.path.join(EX, "solutions")
TEACHER = os.path.join(EX, "teacher")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}


def run(name, impl=None, runs=None, cases=None, time_limit=None, public=False):
    return check.run_exercise(name, impl=impl, runs=runs, cases=cases, time_limit_s=time_limit, public=public)


def failed(results):
    return [r for r in results if not r.passed]


def write(tmp_path, code, name="student.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return str(path)


def fake_runs(root, change=None):
    """Run directories like train.py writes for the sft_vs_dft experiment, with the instructor's mean numbers:
    <root>/{sft,dft,dpo}/{config.json, eval.json, metrics.jsonl}. change(loss, config, after) may alter them."""
    from exercises import sft_vs_dft as ex
    with open(os.path.join(EX, "reference_numbers.json")) as f:
        mean = {k: v["mean"] for k, v in json.load(f)["sft_vs_dft"]["metrics"].items()}
    before = {"nll": mean["before/nll"], "exact_match": mean["before/exact_match"], "logp/pos": mean["before/logp_pos"]}
    for loss in ex.LOSSES:
        d = root / loss
        d.mkdir(parents=True)
        config = {**ex.SETTINGS, "loss": loss, "seed": 3}
        after = {"nll": mean[f"{loss}/nll"], "exact_match": mean[f"{loss}/exact_match"], "logp/pos": mean[f"{loss}/logp_pos"]}
        if change:
            change(loss, config, after)
        rows = [{"step": k, "loss": 0.5, "logp/pos": -2.0, "logp/neg": -3.0, "logp0/neg": -3.0 - mean["dft/neg_vs_base"],
                 "rewards/chosen": 0.1 * mean["dpo/chosen_vs_ref"]} for k in range(1, 9)]
        (d / "config.json").write_text(json.dumps(config))
        (d / "eval.json").write_text(json.dumps({"before": before, "after": after}))
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(root)


def fake_curves_run(root, change=None):
    """A run directory like the one exercise dft_curves asks for (config.json, metrics.jsonl of 4 steps);
    change(config, rows) may alter it. The checks read it; only the grader trains it again."""
    from exercises import dft_curves as ex
    root.mkdir(parents=True)
    config = {**ex.SETTINGS, "seed": 0, "epochs": 2, "batch_size": 32}
    rows = [{"step": k, "loss": 0.3 - 0.2 * k, "logp/pos": -3.0 - 0.2 * k, "logp/neg": -3.5 - 0.4 * k,
             "logp0/neg": -3.5 - 0.1 * k, "log_u": -0.05 * k, "log_u/table_mean": -0.03 * (k - 1), "w/mean": 1.0 - 0.02 * k,
             "w/max": 1.0 + 0.3 * k - 0.05 * k * k} for k in range(1, 5)]
    if change:
        change(config, rows)
    (root / "config.json").write_text(json.dumps(config))
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(root)


def _but(name, code="", **answers):
    """An answers file for exercise `name`: its worked solution, with `code` (definitions that replace the
    solution's) and some ANSWERS changed."""
    return (f"import importlib.util\nspec = importlib.util.spec_from_file_location('sol_{name}', "
            f"{os.path.join(SOL, name + '.py')!r})\nsol = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(sol)\nglobals().update({k: v for k, v in vars(sol).items() if not k.startswith('__')})\n"
            + textwrap.dedent(code) + f"\nCHANGED = {answers!r}\n"
            "if callable(getattr(sol, 'answers', None)):\n"
            "    def answers(*a):\n        return {**sol.answers(*a), **CHANGED}\n"
            "else:\n    ANSWERS = {**sol.ANSWERS, **CHANGED}\n")


def _mean(key):
    with open(os.path.join(EX, "reference_numbers.json")) as f:
        return json.load(f)["sft_vs_dft"]["metrics"][key]["mean"]


def _runs_with(change):
    return lambda root: fake_runs(root, change)


def _curves_with(change):
    return lambda root: fake_curves_run(root, change)


def _lme(xs):
    return math.log(sum(math.exp(x) for x in xs) / len(xs))


_D = [0.0, -1.0, -2.0, -4.0]  # exercise why_u's four negatives
_MEAN_BATCH_LOG_U = sum(_lme([_D[j], _D[k]]) for j in range(4) for k in range(4)) / 16
_UNORDERED = sum(_lme([_D[j], _D[k]]) for j in range(4) for k in range(j + 1, 4)) / 6
_E = [math.exp(s / 0.5 - p) for s, p in zip([-10.0, -12.0, -11.0], [-9.0, -13.0, -12.0])]
_SOFTMAX_D = [e / sum(_E) for e in _E]  # exercise dft_gradient: w_j / B at u's fixed point


# (what the answer gets wrong, a phrase the first failing check's message must contain, the answer's code)
WRONG = {
    "sequence_logps": [
        ("multiplies by the mask (0 * -inf = NaN)", "torch.where", """
            def sequence_logps(logits, targets, mask):
                lp = logits.float().log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
                return (lp * mask).sum(1), mask.sum(1)
         """),
        ("ignores the mask", "mask is ignored", """
            def sequence_logps(logits, targets, mask):
                lp = logits.float().log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
                return lp.sum(1), mask.sum(1)
         """),
        ("log_softmax in bfloat16", "upcast", """
            import torch
            def sequence_logps(logits, targets, mask):
                lp = logits.log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
                return torch.where(mask, lp, torch.zeros_like(lp)).sum(1).float(), mask.sum(1)
         """),
        ("the mean over scored tokens", "SUM", """
            import torch
            def sequence_logps(logits, targets, mask):
                lp = logits.float().log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
                return torch.where(mask, lp, torch.zeros_like(lp)).sum(1) / mask.sum(1).clamp(min=1), mask.sum(1)
         """),
        ("the log of softmax, not log_softmax: large logit gaps underflow", "log_softmax", """
            import torch
            def sequence_logps(logits, targets, mask):
                lp = torch.log(torch.softmax(logits.float(), -1)).gather(-1, targets[..., None]).squeeze(-1)
                return torch.where(mask, lp, torch.zeros_like(lp)).sum(1), mask.sum(1)
         """),
    ],
    "dpo": [
        ("forgets the reference model", "not subtracted", """
            import torch.nn.functional as F
            def dpo_loss(cw, cl, rw, rl, beta=0.1, label_smoothing=0.0):
                cw = cw.unsqueeze(1) if cl.dim() == 2 else cw
                z = beta * (cw - cl)
                return (-(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)).mean(), {}
         """),
        ("log of sigmoid", "F.logsigmoid", """
            import torch
            def dpo_loss(cw, cl, rw, rl, beta=0.1, label_smoothing=0.0):
                if cl.dim() == 2:
                    cw, rw = cw.unsqueeze(1), rw.unsqueeze(1)
                r_w, r_l = beta * (cw - rw), beta * (cl - rl)
                z = r_w - r_l
                loss = (-(1 - label_smoothing) * torch.log(torch.sigmoid(z))
                        - label_smoothing * torch.log(torch.sigmoid(-z))).mean()
                r_w = r_w.expand_as(z)
                return loss, {"rewards/chosen": r_w.mean().detach(), "rewards/rejected": r_l.mean().detach(),
                              "rewards/margins": z.mean().detach(), "rewards/accuracies": (r_w > r_l).double().mean()}
         """),
        ("label smoothing term with the wrong sign", "wrong sign", """
            import torch.nn.functional as F
            def dpo_loss(cw, cl, rw, rl, beta=0.1, label_smoothing=0.0):
                if cl.dim() == 2:
                    cw, rw = cw.unsqueeze(1), rw.unsqueeze(1)
                z = beta * ((cw - rw) - (cl - rl))
                return (-(1 - label_smoothing) * F.logsigmoid(z) + label_smoothing * F.logsigmoid(-z)).mean(), {}
         """),
        ("beta left out", "beta is missing", """
            import torch.nn.functional as F
            def dpo_loss(cw, cl, rw, rl, beta=0.1, label_smoothing=0.0):
                if cl.dim() == 2:
                    cw, rw = cw.unsqueeze(1), rw.unsqueeze(1)
                z = (cw - rw) - (cl - rl)
                return (-(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)).mean(), {}
         """),
    ],
    "dpo_chosen": [
        ("the sign flipped", "sign is flipped", _but("dpo_chosen", """
            import torch
            def chosen_change(g_w, g_l, margin, beta, lr):
                return -lr * beta * torch.sigmoid(torch.tensor(-float(margin))).item() * float(g_w @ g_w - g_w @ g_l)
         """)),
        ("sigmoid(m) for sigmoid(-m)", "sigmoid(-m)", _but("dpo_chosen", """
            import torch
            def chosen_change(g_w, g_l, margin, beta, lr):
                return lr * beta * torch.sigmoid(torch.tensor(float(margin))).item() * float(g_w @ g_w - g_w @ g_l)
         """)),
        ("beta left out", "beta is missing", _but("dpo_chosen", """
            import torch
            def chosen_change(g_w, g_l, margin, beta, lr):
                return lr * torch.sigmoid(torch.tensor(-float(margin))).item() * float(g_w @ g_w - g_w @ g_l)
         """)),
        ("a case without shared tokens: the chosen rises", "rises", _but("dpo_chosen", """
            def make_case():
                return [1], [2]
         """)),
        ("chosen and rejected the same", "same answer", _but("dpo_chosen", """
            def make_case():
                return [0, 1], [0, 1]
         """)),
        ("the ASFT shift with its sign flipped", "sign is flipped", _but("dpo_chosen", asft_shift=-0.5440)),
        ("ASFT's pull on the chosen without its SFT term", "SFT term", _but("dpo_chosen", asft_grad_chosen=-0.1)),
    ],
    "asft": [
        ("no clamp: an epsilon instead (unbounded gradient)", "unbounded", """
            import torch
            def asft_loss(aw, al, lam=0.1, beta=1.0):
                aw2 = aw.unsqueeze(1).expand_as(al) if al.dim() == 2 else aw
                bracket = beta * aw2 + torch.log(-torch.expm1(beta * al) + 1e-12)
                loss = (-aw2 - lam * bracket).mean()
                return loss, {"loss": loss.detach(), "align": bracket.mean().detach(),
                              "avg_logp/pos": aw.mean().detach(), "avg_logp/neg": al.mean().detach()}
         """),
        ("no clamp at all", "log(0)", """
            import torch
            def asft_loss(aw, al, lam=0.1, beta=1.0):
                aw2 = aw.unsqueeze(1).expand_as(al) if al.dim() == 2 else aw
                loss = (-aw2 - lam * (beta * aw2 + torch.log(-torch.expm1(beta * al)))).mean()
                return loss, {}
         """),
        ("beta outside the odds", "beta belongs inside", """
            import torch
            def asft_loss(aw, al, lam=0.1, beta=1.0):
                aw2 = aw.unsqueeze(1).expand_as(al) if al.dim() == 2 else aw
                loss = (-aw2 - lam * beta * (aw2 + torch.log(-torch.expm1(al.clamp(max=-1e-3))))).mean()
                return loss, {}
         """),
        ("the SFT term forgotten", "SFT term", """
            import torch
            def asft_loss(aw, al, lam=0.1, beta=1.0):
                aw2 = aw.unsqueeze(1).expand_as(al) if al.dim() == 2 else aw
                loss = (-lam * (beta * aw2 + torch.log(-torch.expm1((beta * al).clamp(max=-1e-3))))).mean()
                return loss, {}
         """),
        ("the clamp on a(y_l) instead of beta * a(y_l)", "clamp is on a_l", """
            import torch
            def asft_loss(aw, al, lam=0.1, beta=1.0):
                aw2 = aw.unsqueeze(1).expand_as(al) if al.dim() == 2 else aw
                bracket = beta * aw2 + torch.log(-torch.expm1(beta * al.clamp(max=-1e-3)))
                loss = (-aw2 - lam * bracket).mean()
                return loss, {"loss": loss.detach(), "align": bracket.mean().detach(),
                              "avg_logp/pos": aw.mean().detach(), "avg_logp/neg": al.mean().detach()}
         """),
    ],
    "u_update": [
        ("logsumexp instead of logmeanexp", "logmeanexp belongs", """
            import math, torch
            def update_log_u(log_u, d, gamma):
                if gamma == 1:
                    return torch.logsumexp(d, 1)
                return torch.logaddexp(math.log(1 - gamma) + log_u, math.log(gamma) + torch.logsumexp(d, 1))
         """),
        ("exponentiates d directly", "maximum", """
            import torch
            def update_log_u(log_u, d, gamma):
                return torch.log((1 - gamma) * torch.exp(log_u) + gamma * torch.exp(d).mean(1))
         """),
        ("math.log(1 - gamma) at gamma = 1", "gamma == 1", """
            import math, torch
            def update_log_u(log_u, d, gamma):
                lme = torch.logsumexp(d, 1) - math.log(d.shape[1])
                return torch.logaddexp(math.log(1 - gamma) + log_u, math.log(gamma) + lme)
         """),
        ("gamma and 1 - gamma swapped", "swapped", """
            import math, torch
            def update_log_u(log_u, d, gamma):
                lme = torch.logsumexp(d, 1) - math.log(d.shape[1])
                if gamma == 1:
                    return log_u.clone()
                return torch.logaddexp(math.log(gamma) + log_u, math.log(1 - gamma) + lme)
         """),
        ("a moving average of log u (the log of the moving average is asked)", "moving average of log u", """
            import math, torch
            def update_log_u(log_u, d, gamma):
                lme = torch.logsumexp(d, 1) - math.log(d.shape[1])
                return lme if gamma == 1 else (1 - gamma) * log_u + gamma * lme
         """),
    ],
    "dft_loss": [
        ("the weights w carry gradient", "detach them", """
            from losses import update_log_u
            def dft_loss(pos, neg, ref, log_u, tau=1.0, gamma=0.85):
                d = neg.double() / tau - ref.double()
                new = update_log_u(log_u.double(), d.detach(), gamma)
                w = (d - new[:, None]).exp().to(neg.dtype)
                loss = (-pos + (w * neg).mean(1)).mean()
                return loss, new, {}
         """),
        ("the weights use the old u", "old log_u", """
            from losses import update_log_u
            def dft_loss(pos, neg, ref, log_u, tau=1.0, gamma=0.85):
                d = (neg.detach().double() / tau - ref.double())
                w = (d - log_u.double()[:, None]).exp().to(neg.dtype)
                new = update_log_u(log_u.double(), d, gamma)
                return (-pos + (w * neg).mean(1)).mean(), new, {}
         """),
        ("no logp_0 in d", "subtract logp_0", """
            from losses import update_log_u
            def dft_loss(pos, neg, ref, log_u, tau=1.0, gamma=0.85):
                d = neg.detach().double() / tau
                new = update_log_u(log_u.double(), d, gamma)
                w = (d - new[:, None]).exp().to(neg.dtype)
                return (-pos + (w * neg).mean(1)).mean(), new, {}
         """),
        ("the positive divided by tau", "not -s(y_i)/tau", """
            from losses import update_log_u
            def dft_loss(pos, neg, ref, log_u, tau=1.0, gamma=0.85):
                d = neg.detach().double() / tau - ref.double()
                new = update_log_u(log_u.double(), d, gamma)
                w = (d - new[:, None]).exp().to(neg.dtype)
                return (-pos / tau + (w * neg).mean(1)).mean(), new, {}
         """),
        ("new_log_u with gradient", "new_log_u carries gradient", """
            from losses import update_log_u
            def dft_loss(pos, neg, ref, log_u, tau=1.0, gamma=0.85):
                d = neg.double() / tau - ref.double()
                new = update_log_u(log_u.double(), d, gamma)
                w = (d - new[:, None]).exp().to(neg.dtype)
                return (-pos + (w * neg).mean(1)).mean(), new, {}
         """),
        ("dft2_loss with a base-model term", "no base-model term", """
            from losses import dft_loss
            def dft2_loss(pos, neg, log_u, tau=0.3, gamma=0.9):
                return dft_loss(pos, neg, neg.detach(), log_u, tau, gamma)
         """),
    ],
    "dft2_no_ref": [
        ("believes DFT2 reads the reference log-probs", "no reference log-probs", _but(
            "dft2_no_ref", dft2_inputs={"pos", "pos_n", "neg", "neg_n", "ref_neg", "log_u"})),
        ("thinks a constant shift of logp_0 changes the weights", "cancels", _but("dft2_no_ref", w_shifted=[1.0, 1.0])),
        ("forgets what a length-normalized loss divides by", "divides by pos_n", _but(
            "dft2_no_ref", dft2_inputs={"pos", "neg", "log_u"})),
        ("names a function train.py does not have", "not a function of train.py", _but(
            "dft2_no_ref", train_function="sample_negatives")),
        ("weights that sum to 1, not B", "sum to B", _but("dft2_no_ref", w_base=[0.8808, 0.1192])),
    ],
    "dft_gradient": [
        ("the ratio the wrong way round (1/tau)", "disagree", _but("dft_gradient", ratio=2.0)),
        ("the negatives' entries w_j, not w_j / B", "disagree", _but(
            "dft_gradient", grad_surrogate=[-1.0] + [3 * x for x in _SOFTMAX_D])),
        ("a stale u that changes nothing", "ratio_off equals ratio", _but("dft_gradient", ratio_off=0.5)),
        ("a stale u read the wrong way (weights grow)", "SMALLER", _but("dft_gradient", ratio_off=0.5 * math.e)),
        ("an answer without the argument", "words", _but("dft_gradient", derivation="tau, by the chain rule.")),
    ],
    "why_u": [
        ("a logsumexp for the true normalizer", "logsumexp", _but(
            "why_u", true_log_u=math.log(sum(math.exp(x) for x in [0.0, -1.0, -2.0, -4.0])))),
        ("the batches without replacement", "ordered pairs", _but("why_u", mean_batch_log_u=_UNORDERED)),
        ("the average of logs where the log of the average is asked", "equal the true log u", _but(
            "why_u", log_mean_batch_u=_MEAN_BATCH_LOG_U)),
        ("a weight sum read wrong", "recompute", _but("why_u", w_sum_u=2.5)),
        ("a one-line reason", "words", _but("why_u", why_u="log E is not E log.")),
    ],
    "dft_tau1": [
        ("a logmeanexp for the normalizer", "SUM over all outputs", """
            import itertools, math, torch
            def all_outputs(V, L):
                return [list(y) for y in itertools.product(range(V), repeat=L)]
            def exact_dft_objective(model, prompt, y, tau):
                outs = all_outputs(model.config.vocab_size, len(y)) + [list(y)]
                ids = torch.tensor([list(prompt) + o for o in outs])
                tok = model(ids[:, :-1]).log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
                s = tok[:, len(prompt) - 1:].sum(1)
                return -s[-1] / tau + torch.logsumexp(s[:-1] / tau, 0) - math.log(len(outs) - 1)
         """),
        ("the positive not divided by tau", "divide it by tau too", """
            import itertools, torch
            def all_outputs(V, L):
                return [list(y) for y in itertools.product(range(V), repeat=L)]
            def exact_dft_objective(model, prompt, y, tau):
                outs = all_outputs(model.config.vocab_size, len(y)) + [list(y)]
                ids = torch.tensor([list(prompt) + o for o in outs])
                tok = model(ids[:, :-1]).log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
                s = tok[:, len(prompt) - 1:].sum(1)
                return -s[-1] + torch.logsumexp(s[:-1] / tau, 0)
         """),
        ("a normalizer without gradient", "must carry gradient", """
            import itertools, torch
            def all_outputs(V, L):
                return [list(y) for y in itertools.product(range(V), repeat=L)]
            def exact_dft_objective(model, prompt, y, tau):
                outs = all_outputs(model.config.vocab_size, len(y)) + [list(y)]
                ids = torch.tensor([list(prompt) + o for o in outs])
                tok = model(ids[:, :-1]).log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
                s = tok[:, len(prompt) - 1:].sum(1)
                return -s[-1] / tau + torch.logsumexp(s[:-1].detach() / tau, 0)
         """),
        ("permutations: no repeated tokens", "tokens may repeat", """
            import itertools
            def all_outputs(V, L):
                return [list(y) for y in itertools.permutations(range(V), L)]
            def exact_dft_objective(model, prompt, y, tau):
                raise NotImplementedError
         """),
        ("log Z at tau = 1 as the log of the number of outputs", "NUMBER of outputs", _but(
            "dft_tau1", log_z_tau1=math.log(81))),
        ("SFT for the sequence NLL", "TOKENS", _but("dft_tau1", loss_name="sft")),
        ("a loss name the registry does not have", "entry of losses.LOSSES", _but("dft_tau1", loss_name="mle")),
    ],
    "top_p": [
        ("drops the token that makes the sum reach p", "is dropped", """
            import torch
            def top_p_filter(logits, p):
                probs, idx = logits.softmax(-1).sort(-1, descending=True)
                keep_sorted = probs.cumsum(-1) < p
                keep_sorted[..., 0] = True
                keep = torch.zeros_like(keep_sorted).scatter(-1, idx, keep_sorted)
                return logits.masked_fill(~keep, float("-inf"))
         """),
        ("filters in place", "in place", """
            def top_p_filter(logits, p):
                probs = logits.softmax(-1)
                sorted_p = probs.sort(-1, descending=True).values
                n_keep = ((sorted_p.cumsum(-1) - sorted_p) < p).sum(-1, keepdim=True).clamp(min=1)
                return logits.masked_fill_(probs < sorted_p.gather(-1, n_keep - 1), float("-inf"))
         """),
        ("breaks ties by sort order", "ties", """
            import torch
            def top_p_filter(logits, p):
                probs, idx = logits.softmax(-1).sort(-1, descending=True)
                keep_sorted = (probs.cumsum(-1) - probs) < p
                keep = torch.zeros_like(keep_sorted).scatter(-1, idx, keep_sorted)
                return logits.masked_fill(~keep, float("-inf"))
         """),
    ],
    "negatives": [
        ("python's salted hash()", "salted", """
            def example_seed(seed, i):
                return hash(f"{seed}:{i}") & (2 ** 63 - 1)
            def epoch_columns(epoch, B):
                return slice(epoch * B, (epoch + 1) * B)
         """),
        ("seed + i", "seed + i collides", """
            def example_seed(seed, i):
                return seed + i
            def epoch_columns(epoch, B):
                return slice(epoch * B, (epoch + 1) * B)
         """),
        ("a counter", "order of calls", """
            import itertools
            _count = itertools.count()
            def example_seed(seed, i):
                return seed * 10 ** 9 + next(_count)
            def epoch_columns(epoch, B):
                return slice(epoch * B, (epoch + 1) * B)
         """),
        ("the seed in the high bits", "low 32 bits", """
            def example_seed(seed, i):
                return seed * 2 ** 32 + i
            def epoch_columns(epoch, B):
                return slice(epoch * B, (epoch + 1) * B)
         """),
        ("strided epoch slices", "consecutive block", """
            import hashlib
            def example_seed(seed, i):
                return int(hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()[:15], 16)
            def epoch_columns(epoch, B):
                return slice(epoch, None, B)
         """),
        ("every epoch the same negatives", "fresh negatives", """
            import hashlib
            def example_seed(seed, i):
                return int(hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()[:15], 16)
            def epoch_columns(epoch, B):
                return slice(0, B)
         """),
        ("seed and i glued together without a separator", "glued", """
            import hashlib
            def example_seed(seed, i):
                return int(hashlib.sha256(f"{seed}{i}".encode()).hexdigest()[:15], 16)
            def epoch_columns(epoch, B):
                return slice(epoch * B, (epoch + 1) * B)
         """),
    ],
    "kv_cache": [
        ("calls the model's full forward each step", "off limits", """
            import torch
            def greedy_decode(model, idx, n):
                T, steps = idx.shape[1], []
                for _ in range(n):
                    steps.append(model(idx)[:, -1])
                    idx = torch.cat([idx, steps[-1].argmax(-1, keepdim=True)], 1)
                return idx[:, T:], torch.stack(steps, 1)
         """),
        ("runs the blocks by hand but recomputes the whole sequence", "recomputed", """
            import torch
            def greedy_decode(model, idx, n):
                T, H, steps = idx.shape[1], model.config.n_head, []
                for _ in range(n):
                    B, t = idx.shape
                    x = model.wte(idx) + model.wpe(torch.arange(t))
                    C = x.shape[-1]
                    for blk in model.h:
                        q, k, v = blk.attn.c_attn(blk.ln_1(x)).split(C, 2)
                        q, k, v = (z.view(B, t, H, C // H).transpose(1, 2) for z in (q, k, v))
                        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
                        x = x + blk.attn.c_proj(y.transpose(1, 2).reshape(B, t, C))
                        x = x + blk.mlp(blk.ln_2(x))
                    steps.append(model.ln_f(x[:, -1]) @ model.lm_head_weight.t())
                    idx = torch.cat([idx, steps[-1].argmax(-1, keepdim=True)], 1)
                return idx[:, T:], torch.stack(steps, 1)
         """),
        ("every new token at position 0", "decode step", "KV_POSITION_0"),
        ("no 1/sqrt(head_dim) scale", "prompt pass is wrong", "KV_NO_SCALE"),
    ],
    "u_exchange": [
        ("writes only its own rows", "lacks other ranks", """
            import torch
            def exchange_log_u(log_u, new_u, rows):
                for ids, nu in new_u:
                    log_u[torch.tensor(ids)] = nu.double()
         """),
        ("no padding: unequal shapes in all_gather", "same shape", """
            import torch
            from common import all_cat
            def exchange_log_u(log_u, new_u, rows):
                mine = [(i, u) for ids, nu in new_u for i, u in zip(ids, nu.tolist())]
                upd = all_cat(torch.tensor(mine, dtype=torch.float64).view(-1, 2))
                log_u[upd[:, 0].long()] = upd[:, 1]
         """),
        ("the padding rows written too", "padding rows", """
            import torch
            from common import all_cat
            def exchange_log_u(log_u, new_u, rows):
                upd = torch.full((rows, 2), -1.0, dtype=torch.float64)
                mine = [(i, u) for ids, nu in new_u for i, u in zip(ids, nu.tolist())]
                upd[:len(mine)] = torch.tensor(mine, dtype=torch.float64).view(-1, 2)
                upd = all_cat(upd)
                log_u[upd[:, 0].long()] = upd[:, 1]
         """),
        ("float32 on the way", "rounded", """
            import torch
            from common import all_cat
            def exchange_log_u(log_u, new_u, rows):
                upd = torch.full((rows, 2), -1.0)
                mine = [(i, u) for ids, nu in new_u for i, u in zip(ids, nu.tolist())]
                upd[:len(mine)] = torch.tensor(mine).view(-1, 2)
                upd = all_cat(upd)
                upd = upd[upd[:, 0] >= 0]
                log_u[upd[:, 0].long()] = upd[:, 1].double()
         """),
        ("a new table returned, the caller's left alone", "in place", """
            import torch
            from common import all_cat
            def exchange_log_u(log_u, new_u, rows):
                upd = torch.full((rows, 2), -1.0, dtype=torch.float64)
                mine = [(i, u) for ids, nu in new_u for i, u in zip(ids, nu.tolist())]
                upd[:len(mine)] = torch.tensor(mine, dtype=torch.float64).view(-1, 2)
                upd = all_cat(upd)
                upd = upd[upd[:, 0] >= 0]
                out = log_u.clone()
                out[upd[:, 0].long()] = upd[:, 1]
                return out
         """),
    ],
    "simpo": [
        ("declared on summed log-probs", "length_normalized", """
            import torch.nn.functional as F
            from losses import HParam, LossSpec, _pairs
            def simpo_loss(a_w, a_l, beta=2.0, gamma=0.5):
                a_w, a_l = _pairs(a_w, a_l)
                loss = -F.logsigmoid(beta * (a_w - a_l) - gamma).mean()
                return loss, {"loss": loss.detach()}
            def register(d):
                d["simpo"] = LossSpec(simpo_loss, dict(a_w="pos", a_l="neg"),
                                      {"beta": HParam(2.0, "b"), "gamma": HParam(0.5, "g")},
                                      pairs_with_rejected=True)
         """),
        ("the margin added", "margin is added", """
            import torch.nn.functional as F
            from losses import _pairs
            def simpo_loss(a_w, a_l, beta=2.0, gamma=0.5):
                a_w, a_l = _pairs(a_w, a_l)
                loss = -F.logsigmoid(beta * (a_w - a_l) + gamma).mean()
                return loss, {"loss": loss.detach()}
            def register(d):
                pass
         """),
        ("asks for reference log-probs", "inputs should be", """
            import torch.nn.functional as F
            from losses import HParam, LossSpec, _pairs
            def simpo_loss(a_w, a_l, ref_w=None, ref_l=None, beta=2.0, gamma=0.5):
                a_w, a_l = _pairs(a_w, a_l)
                loss = -F.logsigmoid(beta * (a_w - a_l) - gamma).mean()
                return loss, {"loss": loss.detach()}
            def register(d):
                inputs = dict(a_w="pos", a_l="neg", ref_w="ref_pos", ref_l="ref_neg")
                d["simpo"] = LossSpec(simpo_loss, inputs, {"beta": HParam(2.0, "b"),
                                      "gamma": HParam(0.5, "g")}, length_normalized=True,
                                      pairs_with_rejected=True)
         """),
        ("plain numbers for the hyperparameters", "HParam", """
            import torch.nn.functional as F
            from losses import LossSpec, _pairs
            def simpo_loss(a_w, a_l, beta=2.0, gamma=0.5):
                a_w, a_l = _pairs(a_w, a_l)
                loss = -F.logsigmoid(beta * (a_w - a_l) - gamma).mean()
                return loss, {"loss": loss.detach()}
            def register(d):
                d["simpo"] = LossSpec(simpo_loss, dict(a_w="pos", a_l="neg"),
                                      {"beta": 2.0, "gamma": 0.5}, length_normalized=True,
                                      pairs_with_rejected=True)
         """),
    ],
    "dft_curves": [
        ("a number read wrong", "says", _but("dft_curves", w_max_peak=9.0)),
        ("a plot that writes nothing", "wrote nothing", _but("dft_curves", """
            def plot(run_dir, path):
                pass
         """)),
        ("an empty SVG", "draws 0 lines", _but("dft_curves", """
            def plot(run_dir, path):
                open(path, "w").write('<svg xmlns="http://www.w3.org/2000/svg"></svg>')
         """)),
        ("u's trend read backwards", "goes from", _but("dft_curves", u_trend="up")),
        ("a run with other flags", "other settings", _curves_with(lambda cfg, rows: cfg.update(max_steps=20))),
    ],
    "sft_vs_dft": [
        ("a run with another learning rate", "other settings", _runs_with(
            lambda loss, cfg, after: cfg.update(lr=1e-3) if loss == "dft" else None)),
        ("a DFT run far from the instructor's numbers", "dft/nll", _runs_with(
            lambda loss, cfg, after: after.update(nll=after["nll"] + 0.05) if loss == "dft" else None)),
        ("the runs with different seeds", "different seeds", _runs_with(
            lambda loss, cfg, after: cfg.update(seed=7) if loss == "dpo" else None)),
        ("a trend read from one run", "seeds say otherwise", _but("sft_vs_dft", lower_nll="dft")),
        ("tokens per answer as 1 / nll", "1 / nll", _but(
            "sft_vs_dft", tokens_per_answer=1 / _mean("before/nll"))),
        ("the DFT trend of the gold answers reversed", "seeds say otherwise", _but("sft_vs_dft", dft_gold="up")),
        ("no written answer", "not filled in", _but("sft_vs_dft", why_dft="")),
        ("a reported number off", "your run files say", _but("sft_vs_dft", nll_after_dft=0.5)),
    ],
}


# -------------------------------------------------------------------- the solutions pass

RUNS = {"dft_curves": fake_curves_run, "sft_vs_dft": fake_runs}  # the experiments read run directories


def _runs_for(name, tmp_path):
    return RUNS[name](tmp_path / "runs") if name in RUNS else None


@pytest.mark.parametrize("name", check.ORDER)
def test_solution_passes(name, tmp_path):
    res = run(name, runs=_runs_for(name, tmp_path))
    assert res and not failed(res), [(r.name, r.message) for r in failed(res)]
    assert check.teacher_part(name) is not None, f"{name}: no exercises/teacher/{name}.py"


@pytest.mark.parametrize("name", check.ORDER)
def test_a_students_copy_passes_the_solution_too(name, tmp_path):
    """The public checks alone (what a student's copy runs) pass the worked solution as well."""
    res = run(name, runs=_runs_for(name, tmp_path), public=True)
    full = run(name, runs=_runs_for(name, tmp_path / "again"))
    assert res and not failed(res), [(r.name, r.message) for r in failed(res)]
    assert len(res) < len(full) or name in ("sft_vs_dft", "dft_curves"), f"{name}: the teacher's part adds nothing"


@pytest.mark.parametrize("name", [n for n in check.ORDER if os.path.exists(os.path.join(TEACHER, "hidden", f"{n}.json"))])
def test_the_teachers_hidden_cases_pass_the_solution(name):
    res = run(name, cases=os.path.join(TEACHER, "hidden", f"{name}.json"))
    assert any(r.name.startswith("hidden case") for r in res)
    assert res and not failed(res), [(r.name, r.message) for r in failed(res)]


def test_every_function_exercise_has_hidden_cases():
    for name in check.ORDER:
        if hasattr(check.exercise(name), "compare"):
            assert os.path.exists(os.path.join(TEACHER, "hidden", f"{name}.json")), name


def test_public_cases_are_what_the_references_compute():
    p = subprocess.run([sys.executable, "-m", "exercises.teacher.make_cases", "--check"], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr


def test_worked_solution_of_an_in_place_exercise_passes():
    res = run("u_update", impl=os.path.join(SOL, "u_update.py"))
    assert res and not failed(res), [(r.name, r.message) for r in failed(res)]


def test_exercises_in_course_order():
    assert len(check.ORDER) == len(set(check.ORDER)) >= 12
    files = {f[:-3] for f in os.listdir(EX) if f.endswith(".py")} - {
        "__init__", "check", "lib", "student", "grade", "guard", "smoke", "evidence"}
    assert files == set(check.ORDER)
    order = list(check.ORDER)
    assert order.index("dpo_chosen") == order.index("dpo") + 1
    assert order.index("dft2_no_ref") == order.index("dft_loss") + 1


def test_no_multiple_choice_left():
    """Answers are numbers, short words checked against the teacher's key, or written and graded with the
    rubric: no options to try one by one, no hashed answers in a student's copy."""
    for name in check.ORDER:
        text = open(os.path.join(EX, f"{name}.py")).read()
        assert "choice(" not in text and "multiple choice" not in text, name
    assert not hasattr(lib, "choice") and not hasattr(lib, "digest")


def test_sft_vs_dft_keys_clear_their_thresholds_by_two_sd(tmp_path):
    """Each trend key is what the exercise's rule gives on the instructor's seeds, and the mean
    per-seed difference clears the rule's threshold by at least 2 sds of the differences, so that
    re-measuring the reference numbers does not flip it; a key that fails goes."""
    from exercises.sft_vs_dft import TRENDS
    from exercises.teacher import sft_vs_dft as t
    ref = json.load(open(os.path.join(EX, "reference_numbers.json")))["sft_vs_dft"]
    assert set(t.KEYS) == set(TRENDS) == set(t.COMPARES)
    for key, want in t.KEYS.items():
        got, margin = t.trend(ref, key)
        assert got == want and margin >= 2, (key, got, want, margin)
    # the worked solution reads the same keys off the same file, its own way
    sol = check.load_file(os.path.join(SOL, "sft_vs_dft.py"))
    got = sol.answers(fake_runs(tmp_path / "runs"))
    assert {k: got[k] for k in t.KEYS} == t.KEYS


def test_simpo_check_leaves_the_project_registry_alone():
    before = dict(losses.LOSSES)
    run("simpo")
    assert losses.LOSSES == before and "simpo" not in losses.LOSSES


# -------------------------------------------------------------------- wrong answers fail, naming the mistake

EDITS = {"KV_POSITION_0": ("pos = torch.arange(start, start + t, device=tokens.device)",
                          "pos = torch.arange(0, t, device=tokens.device)"),
         "KV_NO_SCALE": ("/ math.sqrt(hd)", "")}
CASES = [(name, label, must, code) for name, cases in WRONG.items() for label, must, code in cases]


def test_every_exercise_rejects_three_wrong_answers():
    counts = {name: len(WRONG.get(name, [])) for name in check.ORDER}
    assert all(n >= 3 for n in counts.values()), counts


def _wrong_file(tmp_path, name, code):
    """(answer file, run directories) of a wrong variant."""
    runs = _runs_for(name, tmp_path)
    if callable(code):  # a change to the run files rather than to the answers
        runs, code = code(tmp_path / "changed"), open(os.path.join(SOL, f"{name}.py")).read()
    elif code in EDITS:  # the worked solution with one line changed
        src, (old, new) = open(os.path.join(SOL, "kv_cache.py")).read(), EDITS[code]
        assert old in src
        code = src.replace(old, new)
    return write(tmp_path, code), runs


@pytest.mark.parametrize("name,label,must,code", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_wrong_answer_fails_naming_the_mistake(tmp_path, name, label, must, code):
    impl, runs = _wrong_file(tmp_path, name, code)
    res = run(name, impl=impl, runs=runs)
    bad = failed(res)
    assert bad, f"{label}: every check passed"
    assert must.lower() in bad[0].message.lower(), f"{label}: the first FAIL ({bad[0].name}) says {bad[0].message!r}"


def test_sft_vs_dft_says_which_run_is_missing(tmp_path):
    res = run("sft_vs_dft", runs=str(tmp_path / "nothing"))
    assert res and not any(r.passed for r in res)
    assert "python train.py --loss sft --max-examples 256" in res[0].message


def test_reference_numbers_come_from_several_seeds():
    with open(os.path.join(EX, "reference_numbers.json")) as f:
        ref = json.load(f)["sft_vs_dft"]
    assert len(ref["seeds"]) >= 3
    for key, m in ref["metrics"].items():
        assert len(m["values"]) == len(ref["seeds"]) and m["tol"] >= 3 * m["sd"] - 1e-4, key
        assert abs(sum(m["values"]) / len(m["values"]) - m["mean"]) < 1e-4, key


# -------------------------------------------------------------------- templates: they load, and are unsolved

@pytest.mark.parametrize("name", check.ORDER)
def test_template_loads_and_is_unsolved(tmp_path, name, capsys):
    assert check.main([name, "--template"]) == 0
    path = write(tmp_path, capsys.readouterr().out)
    runs = _runs_for(name, tmp_path)
    res = run(name, impl=path, runs=runs)
    assert res[0].name not in ("import", "definitions"), res[0].message
    about_runs = ("runs", "seed spread", "instructor", "the run:")
    assert not any(r.passed for r in res if not any(w in r.name for w in about_runs))
    assert any(r.unsolved for r in res)


# -------------------------------------------------------------------- the student edition

def _code_lines(src, names=None):
    """Code lines of the functions `names` (their bodies), or with names None of a whole file (every statement
    but imports; function bodies without their def line): docstrings and comments left out."""
    tree, lines, out = ast.parse(src), src.splitlines(), set()
    stmts = []
    for node in ast.walk(tree) if names is None else tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (names is None or node.name in names):
            stmts += node.body[1:] if student._has_docstring(node) else node.body
    if names is None:  # module-level statements, but the inputs of public cases (they are public)
        stmts += [n for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.Expr))
                  and not (isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and (
                      t.id == "PUBLIC" or t.id.startswith("_")) for t in n.targets))]
    for stmt in stmts:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for k in range(stmt.lineno - 1, stmt.end_lineno):
            out.add(lines[k].split("  #")[0].strip())
    return out


def _distinctive(line):
    return len(line) >= 24 and not line.startswith(("return loss", "raise ", "def ", "import ", "from ", "return ["))


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    """The student edition, built while an untracked file sits in exercises/ and in a folder of the
    repository's root, as a teacher's hidden cases might."""
    out = tmp_path_factory.mktemp("student") / "edition"
    strays = [os.path.join(EX, "hidden", "dpo.json"), os.path.join(EX, "notes.md"),
              os.path.join(ROOT, "hidden_cases", "dpo.json")]
    made = [p for p in strays if not os.path.exists(p)]
    try:
        for p in made:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write('{"exercise": "dpo", "cases": [{"name": "SECRET-HIDDEN-CASE"}]}\n')
        assert student.main([str(out)]) == 0
    finally:
        for p in made:
            os.remove(p)
            if not os.listdir(os.path.dirname(p)):
                os.rmdir(os.path.dirname(p))
    return out


def _texts(folder):
    for d, _, files in os.walk(folder):
        for f in files:
            try:
                yield os.path.relpath(os.path.join(d, f), folder), open(os.path.join(d, f), encoding="utf-8").read()
            except UnicodeDecodeError:
                continue  # weights, images


def test_student_edition_holds_no_untracked_or_teacher_file(edition):
    names = {rel for rel, _ in _texts(edition)} | {
        os.path.relpath(os.path.join(d, f), edition) for d, _, fs in os.walk(edition) for f in fs}
    assert not any(n.startswith(("exercises/hidden", "hidden_cases", "exercises/teacher", "exercises/solutions"))
                   for n in names), sorted(n for n in names if "hidden" in n or "teacher" in n)
    assert "exercises/notes.md" not in names and "tests/test_exercises.py" not in names
    assert "tests/test_grading.py" not in names and not os.path.exists(edition / "out")
    assert not any("SECRET-HIDDEN-CASE" in text for _, text in _texts(edition))


def test_student_edition_holds_no_solution_key_or_reference(edition):
    """Neither the project's code of any exercise, nor a line of a worked solution, nor a line of the
    teacher's references and keys, nor a model written answer is anywhere in the edition."""
    solution_lines = set()
    for name in check.ORDER:
        ex = check.exercise(name)
        for module, fn in ex.TARGETS:
            with open(os.path.join(ROOT, module + ".py")) as f:
                solution_lines |= _code_lines(f.read(), {fn})
    for folder in (SOL, TEACHER):
        for f in os.listdir(folder):
            if f.endswith(".py"):
                with open(os.path.join(folder, f)) as fh:
                    solution_lines |= _code_lines(fh.read())
    shared = set()  # lines the project and the public checkers keep: not answers
    for rel in student.repo_files()[0]:
        if rel.endswith(".py"):
            with open(os.path.join(ROOT, rel)) as f:
                src = f.read()
            mine = {fn for name in check.ORDER for m, fn in check.exercise(name).TARGETS if m + ".py" == rel}
            shared |= {ln.strip() for ln in (student.stub_source(src, mine, "x") if mine else src).splitlines()}
    distinctive = {ln for ln in solution_lines if _distinctive(ln) and not any(ln in sh for sh in shared)}
    assert len(distinctive) > 100
    for rel, text in _texts(edition):
        found = [ln for ln in distinctive if ln in text]
        assert not found, f"{rel} holds solution, key or reference lines: {found[:3]}"
    from exercises.solutions import why_u  # a model written answer, for one
    assert not any(why_u.ANSWERS["why_u"][:60] in text for _, text in _texts(edition))


def test_student_edition_keeps_signatures_and_docstrings(edition):
    for name in check.ORDER:
        for module, fn in check.exercise(name).TARGETS:
            ref, ed = (ast.parse(open(os.path.join(r, module + ".py")).read()) for r in (ROOT, edition))
            a, b = ([n for n in t.body if isinstance(n, ast.FunctionDef) and n.name == fn][0] for t in (ref, ed))
            assert ast.dump(a.args) == ast.dump(b.args) and ast.get_docstring(a) == ast.get_docstring(b), fn
            assert isinstance(b.body[-1], ast.Raise) and len(b.body) == 2, fn
    assert "dft2_loss" in {fn for n in check.ORDER for _, fn in check.exercise(n).TARGETS}
    for name in check.ORDER:
        if not check.exercise(name).TARGETS:
            assert (edition / "exercises" / "yours" / f"{name}.py").read_text() == \
                open(os.path.join(EX, "templates", f"{name}.py")).read()


def test_student_edition_fails_cleanly_until_solved(edition):
    """In the edition every exercise is unsolved: status 1, one JSON object each, no traceback."""
    code = ("import contextlib, io, json, sys\nfrom exercises import check\nfor n in check.ORDER:\n"
            "    buf = io.StringIO()\n    with contextlib.redirect_stdout(buf):\n        rc = check.main([n, '--json'])\n"
            "    print(json.dumps({'name': n, 'rc': rc, 'out': json.loads(buf.getvalue())}))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=edition, env={**ENV, "PYTHONPATH": str(edition)},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "Traceback" not in p.stdout + p.stderr, p.stderr[-2000:]
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["name"] for r in rows] == list(check.ORDER)
    for r in rows:
        assert r["rc"] == 1 and not r["out"]["passed"] and r["out"]["n_passed"] == 0, r
        if r["name"] not in ("sft_vs_dft", "dft_curves"):  # the experiments first ask for their runs
            assert r["out"]["unsolved"] and r["out"]["checks"][0]["message"].startswith("not solved yet"), r
    p = subprocess.run([sys.executable, "-m", "exercises.check", "dpo"], cwd=edition, env={**ENV, "PYTHONPATH": ""},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr and "not solved yet" in p.stdout
    shutil.copy(os.path.join(ROOT, "losses.py"), edition / "losses.py")  # "solve" the loss exercises in place
    p = subprocess.run([sys.executable, "-m", "exercises.check", "dpo"], cwd=edition, env={**ENV, "PYTHONPATH": ""},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "all 7 checks passed" in p.stdout and "teacher case" not in p.stdout, p.stdout
    p = subprocess.run([sys.executable, "-m", "exercises.check", "dpo", "--cases", os.path.join(
        TEACHER, "hidden", "dpo.json")], cwd=edition, env={**ENV, "PYTHONPATH": ""}, capture_output=True, text=True,
        timeout=120)
    assert p.returncode == 2 and "teacher's references" in p.stderr  # inputs only: the edition cannot score them
    shutil.copy(os.path.join(ROOT, "train.py"), edition / "train.py")  # two processes, started from the edition
    p = subprocess.run([sys.executable, "-m", "exercises.check", "u_exchange"], cwd=edition, env={**ENV, "PYTHONPATH": ""},
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0 and "all 4 checks passed" in p.stdout, p.stdout + p.stderr


def test_student_edition_refuses_a_used_or_inside_folder(tmp_path, capsys):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    assert student.main([str(tmp_path / "used")]) == 2
    assert student.main([os.path.join(ROOT, "docs", "copy")]) == 2
    assert student.main([str(tmp_path / "new"), "--only", "nope"]) == 2
    assert student.main([str(tmp_path / "few"), "--only", "dpo,simpo"]) == 0
    src = (tmp_path / "few" / "losses.py").read_text()
    assert "exercise dpo: write dpo_loss" in src and "exercise asft" not in src
    assert sorted(os.listdir(tmp_path / "few" / "exercises" / "yours")) == ["README.md", "simpo.py"]


# -------------------------------------------------------------------- the command line

def test_cli_list_usage_and_exit_status(tmp_path, capsys):
    assert check.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in check.ORDER)
    assert check.main(["no_such_exercise"]) == 2
    assert check.main(["dpo", "--impl", str(tmp_path / "missing.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert check.main(["top_p"]) == 0
    capsys.readouterr()
    assert check.main(["top_p", "--impl", write(tmp_path, WRONG["top_p"][0][2])]) == 1
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith(("  PASS", "  FAIL"))]
    assert len(lines) == 9 and "FAIL  hand case" in out and "expected kept tokens [1, 3], got [1]" in out
    assert check.main(["top_p", "--public"]) == 0
    assert len([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  PASS")]) == 8


def test_cli_json(tmp_path, capsys):
    assert check.main(["dpo", "--json", "--impl", write(tmp_path, WRONG["dpo"][0][2])]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["exercise"] == "dpo" and out["passed"] is False and out["n_checks"] == len(out["checks"]) == 9
    assert set(out["checks"][0]) == {"name", "passed", "message"}
    assert check.main(["dpo", "--json"]) == 0 and json.loads(capsys.readouterr().out)["passed"] is True
    assert check.main(["why_u", "--json"]) == 0
    written = [c for c in json.loads(capsys.readouterr().out)["checks"] if c["name"].startswith("written: ")]
    assert len(written) == 1 and written[0]["passed"] and len(written[0]["message"].split()) > 25


def test_cli_hidden_cases(tmp_path, capsys):
    case = {"name": "large beta", "chosen": [-3.0, -7.0], "rejected": [[-5.0, -1.0], [-2.0, -9.0]],
            "ref_chosen": [-4.0, -6.0], "ref_rejected": [[-4.0, -2.0], [-3.0, -8.0]], "beta": 2.0, "label_smoothing": 0.1}
    js = tmp_path / "hidden.json"
    js.write_text(json.dumps({"exercise": "dpo", "cases": [case]}))
    py = write(tmp_path, f"EXERCISE = 'dpo'\nCASES = [{case!r}, {{**{case!r}, 'name': 'no smoothing', "
                         "'label_smoothing': 0.0}]\n", "hidden.py")
    assert check.main(["dpo", "--cases", str(js)]) == 0
    assert "PASS  hidden case 1: large beta" in capsys.readouterr().out
    assert check.main(["dpo", "--cases", py, "--json"]) == 0
    assert [c["name"] for c in json.loads(capsys.readouterr().out)["checks"]][-2:] == \
        ["hidden case 1: large beta", "hidden case 2: no smoothing"]
    wrong = write(tmp_path, WRONG["dpo"][0][2], "wrong.py")
    res = run("dpo", impl=wrong, cases=str(js))
    assert not res[-1].passed and "not subtracted" in res[-1].message
    assert check.main(["top_p", "--cases", str(js)]) == 2  # the file is for another exercise
    assert check.main(["why_u", "--cases", str(js)]) == 2
    for name, c in (("u_update", {"log_u": [0.0], "d": [[-1e4, -1e4 + 1]], "gamma": 0.5}),
                    ("top_p", {"logits": [[1.0, 2.0, 3.0]], "p": 0.5}), ("negatives", {"n": 9, "B": 3}),
                    ("dft_loss", {"pos": [-3.0], "neg": [[-4.0, -5.0]], "ref_neg": [[-4.5, -4.0]], "log_u": [0.2],
                                  "tau": 0.5}), ("asft", {"chosen": [-0.5], "rejected": [[-1e-6, -0.2]], "beta": 0.5}),
                    ("u_exchange", {"n": 5, "rows": 3, "updates": [[[4, 1], [0.5, -0.5]]]}),
                    ("sequence_logps", {"seed": 3, "N": 2, "n_prompt": [2, 1], "length": [6, 3]}),
                    ("simpo", {"chosen": [-0.5], "rejected": [-0.7]}), ("kv_cache", {"prompts": [[1, 2, 3]], "n": 4}),
                    ("dft_tau1", {"seed": 1, "V": 2, "L": 3, "tau": 0.3, "prompt": [1], "y": [0, 1, 1]})):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"exercise": name, "cases": [c]}))
        res = run(name, cases=str(path))
        assert res[-1].name == "hidden case 1" and not failed(res), (name, [(r.name, r.message) for r in failed(res)])


def test_cli_time_limit(tmp_path):
    slow = write(tmp_path, "import time\ncalls = []\ndef top_p_filter(logits, p):\n    calls.append(p)\n"
                           "    time.sleep(3 if len(calls) == 1 else 0)\n    return logits\n")
    res = run("top_p", impl=slow, time_limit=0.5)
    assert not res[0].passed and "time limit of 0.5 s" in res[0].message


def test_cli_import_errors_and_missing_functions_fail_cleanly(tmp_path):
    res = run("dpo", impl=write(tmp_path, "def dpo_loss(:\n", "syntax.py"))
    assert [r.name for r in res] == ["import"] and "SyntaxError" in res[0].message
    res = run("dpo", impl=write(tmp_path, "def dpo(x):\n    return x\n", "named_wrong.py"))
    assert [r.name for r in res] == ["definitions"] and "dpo_loss" in res[0].message
    res = run("dpo", impl=write(tmp_path, "def dpo_loss(*a, **k):\n    return 1 / 0\n", "raises.py"))
    assert not any(r.passed for r in res) and "ZeroDivisionError" in res[0].message and "raises.py:2" in res[0].message


def test_cli_as_a_command(tmp_path):
    """The documented command, in a fresh interpreter, from outside the repository."""
    p = subprocess.run([sys.executable, "-m", "exercises.check", "dpo", "--impl", write(tmp_path, WRONG["dpo"][0][2])],
                       cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "PASS  zero margin gives log 2" in p.stdout and "FAIL  public case: the defaults" in p.stdout


def test_smoke_test_of_a_classroom_machine():
    p = subprocess.run([sys.executable, "-m", "exercises.check", "--smoke"], cwd=ROOT, env=ENV, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0 and "ready" in p.stdout, p.stdout + p.stderr
    assert all(f"{name}:" in p.stdout for name in check.ORDER)


# -------------------------------------------------------------------- sizes and the docs

def test_file_sizes_and_line_lengths():
    limit = len(open(os.path.join(ROOT, "model.py")).read().splitlines())
    assert len(open(os.path.join(EX, "check.py")).read().splitlines()) <= 400
    for d, _, files in os.walk(EX):
        for f in files:
            if f.endswith((".py", ".md")):
                n = len(open(os.path.join(d, f)).read().splitlines())
                assert n <= limit, f"{f}: {n} lines, more than model.py's {limit}"
    for f in ("grade.py", "guard.py", "smoke.py", "evidence.py", "dft_gradient.py", "dft_curves.py"):
        long = [i for i, ln in enumerate(open(os.path.join(EX, f)), 1) if len(ln.rstrip("\n")) > 100]
        assert not long, f"{f}: lines over 100 columns: {long[:5]}"


def _defined(path, name):
    text = open(os.path.join(ROOT, path)).read()
    if path.endswith(".md"):
        return re.search(rf"^#+ .*{re.escape(name)}", text, flags=re.M) is not None
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return True
    return False


def test_readme_names_every_exercise_and_the_code_it_points_to():
    readme = open(os.path.join(EX, "README.md")).read()
    flat = " ".join(readme.split())  # line breaks anywhere
    targets = {(m.replace(".", "/") + ".py", fn) for n in check.ORDER for m, fn in check.exercise(n).TARGETS}
    for name in check.ORDER:
        ex = check.exercise(name)
        assert f"python -m exercises.check {name}" in readme and f"`{name}`" in readme, name
        assert ex.TITLE and f"*Objective: {ex.OBJECTIVE}.*" in flat, name
        assert re.search(rf"^\| \d+ \| `{name}` \|[^\n]*\| {ex.TIME} \|", readme, flags=re.M), f"{name}: minutes"
        for path, what in ex.READ:
            assert _defined(path, what), f"exercise {name} points to {path}: {what}, which is not there"
            assert f"`{path}`" in flat and (f"`{what}`" in flat or f'"{what}"' in flat), (name, path, what)
            assert (path, what) not in targets, f"exercise {name} asks to read {what}, an exercise's own code"
    for q in ("why u?", "what is DFT at tau = 1?", "why does DPO lower the chosen log-prob?"):
        assert q in flat.replace("*", "")


def _rows(text, heading):
    """The rows of the table under a heading: (what, minutes)."""
    part = text.split(heading, 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\|([^|\n]+)\|\s*(\d+)\s*\|", part, flags=re.M)


def test_the_syllabus_fits_the_time_it_states():
    """Each session's rows (setup, lectures, breaks, exercises, discussions) add up to its 180 minutes,
    and every exercise is in the plan once, in class or as homework, with its own minutes."""
    kit = open(os.path.join(TEACHER, "README.md")).read()
    seen = {}
    for heading, total in (("### Session 1", 180), ("### Homework 1", None), ("### Session 2", 180),
                           ("### Homework 2", None)):
        rows = _rows(kit, heading)
        if total:
            assert sum(int(m) for _, m in rows) == total, heading
        for what, minutes in rows:
            first = re.match(r"\s*`(\w+)`", what)
            if first and first.group(1) in check.ORDER:
                assert first.group(1) not in seen, first.group(1)
                seen[first.group(1)] = int(minutes)
    assert seen == {n: check.exercise(n).TIME for n in check.ORDER}
    readme = open(os.path.join(EX, "README.md")).read()
    assert sum(check.exercise(n).TIME for n in check.ORDER) == 450 and "450 minutes" in readme


def test_the_teachers_kit_has_what_a_course_needs():
    kit = open(os.path.join(TEACHER, "README.md")).read()
    for must in ("python -m exercises.check --smoke", "python -m exercises.student", "python -m exercises.grade",
                 "OMP_NUM_THREADS=1"):
        assert must in kit, must
    key, rubric = (open(os.path.join(TEACHER, f)).read() for f in ("answer_key.md", "rubric.md"))
    for name in check.ORDER:
        assert f"`{name}`" in kit and f"## {name}" in key and f"`{name}`" in rubric, name
        tp = check.teacher_part(name)
        for k, pts in getattr(tp, "RUBRIC", {}).items():
            assert re.search(rf"`{k}`[^\n]*\b{pts} points", rubric), (name, k, pts)


def test_no_stale_or_machine_text():
    stale = re.compile(r"/work|\.\./shared|this task|the targets|had no GPU|/tmp/|/root|developed on", re.I)
    for d, _, files in os.walk(EX):
        for f in files:
            if f.endswith((".py", ".md", ".json")):
                text = open(os.path.join(d, f)).read()
                assert not stale.search(text), (f, stale.search(text).group())
