"""
The classroom exercises (exercises/): every checker passes its solution and rejects plausible wrong answers
with a message that names the mistake (a checker that cannot fail is a defect; the wrong answers below
were written before the checks); the student edition holds no solution and fails cleanly until solved;
the command line answers with the right output and exit status; the teacher's page names every exercise
and the code it points to.

    python -m pytest -q tests/test_exercises.py
"""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

import losses
from exercises import check, student

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EX = os.path.join(ROOT, "exercises")
SOL = os.path.join(EX, "solutions")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}


def run(name, impl=None, runs=None, cases=None, time_limit=None):
    return check.run_exercise(name, impl=impl, runs=runs, cases=cases, time_limit_s=time_limit)


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


def _solution_but(**answers):
    """An sft_vs_dft answers file: the worked solution's answers with some changed."""
    return (f"import importlib.util\nspec = importlib.util.spec_from_file_location('sol', {os.path.join(SOL, 'sft_vs_dft.py')!r})\n"
            "sol = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(sol)\n"
            f"def answers(runs):\n    return {{**sol.answers(runs), **{answers!r}}}\n")


def _runs_with(change):
    return lambda root: fake_runs(root, change)


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
    ],
    "why_u": [
        ("a logsumexp for the true normalizer", "logsumexp", """
            import math
            D = [0.0, -1.0, -2.0, -4.0]
            ANSWERS = {"true_log_u": math.log(sum(math.exp(x) for x in D)), "mean_batch_log_u": -1.5,
                       "log_mean_batch_u": -1.0, "w_sum_batch": 2.0, "w_sum_u": 2.6, "why_u": "c"}
         """),
        ("the batches without replacement", "ordered pairs", """
            import itertools, math
            D = [0.0, -1.0, -2.0, -4.0]
            lme = lambda xs: math.log(sum(math.exp(x) for x in xs) / len(xs))
            pairs = list(itertools.combinations(range(4), 2))
            ANSWERS = {"true_log_u": lme(D), "mean_batch_log_u": sum(lme([D[j], D[k]]) for j, k in pairs) / len(pairs),
                       "log_mean_batch_u": lme(D), "w_sum_batch": 2.0, "w_sum_u": 2.68, "why_u": "c"}
         """),
        ("the average of logs where the log of the average is asked", "average of the logs", """
            import itertools, math
            D = [0.0, -1.0, -2.0, -4.0]
            lme = lambda xs: math.log(sum(math.exp(x) for x in xs) / len(xs))
            pairs = list(itertools.product(range(4), repeat=2))
            m = sum(lme([D[j], D[k]]) for j, k in pairs) / 16
            ANSWERS = {"true_log_u": lme(D), "mean_batch_log_u": m, "log_mean_batch_u": m, "w_sum_batch": 2.0,
                       "w_sum_u": 2.68, "why_u": "c"}
         """),
        ("the wrong reason", "is not it", """
            import importlib.util
            spec = importlib.util.spec_from_file_location("sol", SOL_WHY_U)
            sol = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(sol)
            ANSWERS = {**sol.ANSWERS, "why_u": "d"}
         """),
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
    "dft2_no_ref": [
        ("believes DFT2 reads the reference log-probs", "no reference log-probs", """
            ANSWERS = {"dft_inputs": {"pos", "neg", "ref_neg", "log_u"},
                       "dft2_inputs": {"pos", "pos_n", "neg", "neg_n", "ref_neg", "log_u"},
                       "w_base": [1.7616, 0.2384], "w_shifted": [1.7616, 0.2384], "w_matched": [1.0, 1.0],
                       "why": "b", "train_function": "reference_logps"}
         """),
        ("thinks a constant shift of logp_0 changes the weights", "cancels", """
            ANSWERS = {"dft_inputs": {"pos", "neg", "ref_neg", "log_u"},
                       "dft2_inputs": {"pos", "pos_n", "neg", "neg_n", "log_u"},
                       "w_base": [1.7616, 0.2384], "w_shifted": [1.0, 1.0], "w_matched": [1.0, 1.0],
                       "why": "b", "train_function": "reference_logps"}
         """),
        ("picks the wrong reason", "is not it", """
            ANSWERS = {"dft_inputs": {"pos", "neg", "ref_neg", "log_u"},
                       "dft2_inputs": {"pos", "pos_n", "neg", "neg_n", "log_u"},
                       "w_base": [1.7616, 0.2384], "w_shifted": [1.7616, 0.2384], "w_matched": [1.0, 1.0],
                       "why": "c", "train_function": "reference_logps"}
         """),
        ("forgets what a length-normalized loss divides by", "divides by pos_n", """
            ANSWERS = {"dft_inputs": {"pos", "neg", "ref_neg", "log_u"}, "dft2_inputs": {"pos", "neg", "log_u"},
                       "w_base": [1.7616, 0.2384], "w_shifted": [1.7616, 0.2384], "w_matched": [1.0, 1.0],
                       "why": "b", "train_function": "reference_logps"}
         """),
    ],
    "dpo_chosen": [
        ("the sign flipped", "sign is flipped", """
            import torch
            def chosen_change(g_w, g_l, margin, beta, lr):
                return -lr * beta * torch.sigmoid(torch.tensor(-margin)).item() * float(g_w @ g_w - g_w @ g_l)
            def make_case():
                return [0, 1], [0, 0, 0, 0, 0, 2]
            ANSWERS = {"why": "d", "predict": "down"}
         """),
        ("sigmoid(m) for sigmoid(-m)", "sigmoid(-m)", """
            import torch
            def chosen_change(g_w, g_l, margin, beta, lr):
                return lr * beta * torch.sigmoid(torch.tensor(float(margin))).item() * float(g_w @ g_w - g_w @ g_l)
            def make_case():
                return [0, 1], [0, 0, 0, 0, 0, 2]
            ANSWERS = {"why": "d", "predict": "down"}
         """),
        ("a case without shared tokens: the chosen rises", "rises", """
            import torch
            def chosen_change(g_w, g_l, margin, beta, lr):
                return lr * beta * torch.sigmoid(torch.tensor(-float(margin))).item() * float(g_w @ g_w - g_w @ g_l)
            def make_case():
                return [1], [2]
            ANSWERS = {"why": "d", "predict": "down"}
         """),
        ("chosen and rejected the same", "same answer", """
            import torch
            def chosen_change(g_w, g_l, margin, beta, lr):
                return lr * beta * torch.sigmoid(torch.tensor(-float(margin))).item() * float(g_w @ g_w - g_w @ g_l)
            def make_case():
                return [0, 1], [0, 1]
            ANSWERS = {"why": "d", "predict": "down"}
         """),
        ("the wrong reason", "is not it", """
            import torch
            def chosen_change(g_w, g_l, margin, beta, lr):
                return lr * beta * torch.sigmoid(torch.tensor(-float(margin))).item() * float(g_w @ g_w - g_w @ g_l)
            def make_case():
                return [0, 1], [0, 0, 0, 0, 0, 2]
            ANSWERS = {"why": "b", "predict": "down"}
         """),
    ],
    "sft_vs_dft": [
        ("a run with another learning rate", "other settings", _runs_with(
            lambda loss, cfg, after: cfg.update(lr=1e-3) if loss == "dft" else None)),
        ("a DFT run far from the instructor's numbers", "dft/nll", _runs_with(
            lambda loss, cfg, after: after.update(nll=after["nll"] + 0.05) if loss == "dft" else None)),
        ("the runs with different seeds", "different seeds", _runs_with(
            lambda loss, cfg, after: cfg.update(seed=7) if loss == "dpo" else None)),
        ("a trend read from one run", "not what the instructor", _solution_but(lower_nll="dft")),
        ("what the held-out nll is", "is not it", _solution_but(nll_meaning="b")),
        ("a reported number off", "your run files say", _solution_but(nll_after_dft=0.5)),
    ],
}


# -------------------------------------------------------------------- the solutions pass

@pytest.mark.parametrize("name", [n for n in check.ORDER if n != "sft_vs_dft"])
def test_solution_passes(name):
    res = run(name)
    assert res and not failed(res), [(r.name, r.message) for r in failed(res)]


def test_worked_solution_of_an_in_place_exercise_passes():
    res = run("u_update", impl=os.path.join(SOL, "u_update.py"))
    assert res and not failed(res), [(r.name, r.message) for r in failed(res)]


def test_fifteen_exercises_in_course_order():
    assert len(check.ORDER) == len(set(check.ORDER)) >= 12
    files = {f[:-3] for f in os.listdir(EX) if f.endswith(".py")} - {"__init__", "check", "lib", "student"}
    assert files == set(check.ORDER)


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


@pytest.mark.parametrize("name,label,must,code", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_wrong_answer_fails_naming_the_mistake(tmp_path, name, label, must, code):
    runs = fake_runs(tmp_path / "runs") if name == "sft_vs_dft" else None
    if callable(code):  # a change to the run files rather than to the answers
        runs, code = code(tmp_path / "changed"), open(os.path.join(SOL, "sft_vs_dft.py")).read()
    elif code in EDITS:  # the worked solution with one line changed
        src, (old, new) = open(os.path.join(SOL, "kv_cache.py")).read(), EDITS[code]
        assert old in src
        code = src.replace(old, new)
    res = run(name, impl=write(tmp_path, code.replace("SOL_WHY_U", repr(os.path.join(SOL, "why_u.py")))), runs=runs)
    bad = failed(res)
    assert bad, f"{label}: every check passed"
    assert must.lower() in bad[0].message.lower(), f"{label}: the first FAIL ({bad[0].name}) says {bad[0].message!r}"


def test_sft_vs_dft_solution_reads_the_runs(tmp_path):
    res = run("sft_vs_dft", runs=fake_runs(tmp_path / "runs"))
    assert res and not failed(res), [(r.name, r.message) for r in failed(res)]


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
    runs = fake_runs(tmp_path / "runs") if name == "sft_vs_dft" else None
    res = run(name, impl=path, runs=runs)
    assert res[0].name not in ("import", "definitions"), res[0].message
    assert not any(r.passed for r in res if "runs" not in r.name and "seed spread" not in r.name and "instructor" not in r.name)
    assert any(r.unsolved for r in res)


# -------------------------------------------------------------------- the student edition

def _code_lines(src, names=None):
    """Code lines of the functions `names` (their bodies), or with names None of a whole file (every statement
    but imports; function bodies without their def line): docstrings and comments left out."""
    tree, lines, out = ast.parse(src), src.splitlines(), set()
    stmts = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (names is None or node.name in names):
            stmts += node.body[1:] if student._has_docstring(node) else node.body
        elif names is None and not isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.Expr)):
            stmts.append(node)
    for stmt in stmts:
        for k in range(stmt.lineno - 1, stmt.end_lineno):
            out.add(lines[k].split("  #")[0].strip())
    return out


def _distinctive(line):
    return len(line) >= 24 and not line.startswith(("return loss", "raise ", "def ", "import ", "from "))


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "edition"
    assert student.main([str(out)]) == 0
    return out


def test_student_edition_holds_no_solution(edition):
    """Neither the project's code of any exercise nor a line of a worked solution is anywhere in the edition."""
    solution_lines = set()
    for name in check.ORDER:
        ex = check.exercise(name)
        for module, fn in ex.TARGETS:
            with open(os.path.join(ROOT, module + ".py")) as f:
                solution_lines |= _code_lines(f.read(), {fn})
    for f in os.listdir(SOL):
        with open(os.path.join(SOL, f)) as fh:
            solution_lines |= _code_lines(fh.read())
    shared = set()  # lines the project keeps outside the exercises' functions: not answers
    for rel in student.repo_files():
        if rel.endswith(".py") and not rel.startswith(("exercises/", "tests/")):
            with open(os.path.join(ROOT, rel)) as f:
                src = f.read()
            mine = {fn for name in check.ORDER for m, fn in check.exercise(name).TARGETS if m + ".py" == rel}
            shared |= {ln.strip() for ln in (student.stub_source(src, mine, "x") if mine else src).splitlines()}
    distinctive = {ln for ln in solution_lines if _distinctive(ln) and not any(ln in sh for sh in shared)}
    assert len(distinctive) > 60
    assert not os.path.exists(edition / "exercises" / "solutions")
    assert not os.path.exists(edition / "tests" / "test_exercises.py") and not os.path.exists(edition / "out")
    for d, _, files in os.walk(edition):
        for f in files:
            try:
                text = open(os.path.join(d, f), encoding="utf-8").read()
            except UnicodeDecodeError:
                continue  # weights, images
            found = [ln for ln in distinctive if ln in text]
            assert not found, f"{os.path.relpath(os.path.join(d, f), edition)} holds solution lines: {found[:3]}"


def test_student_edition_keeps_signatures_and_docstrings(edition):
    for name in check.ORDER:
        for module, fn in check.exercise(name).TARGETS:
            ref, ed = (ast.parse(open(os.path.join(r, module + ".py")).read()) for r in (ROOT, edition))
            a, b = ([n for n in t.body if isinstance(n, ast.FunctionDef) and n.name == fn][0] for t in (ref, ed))
            assert ast.dump(a.args) == ast.dump(b.args) and ast.get_docstring(a) == ast.get_docstring(b), fn
            assert isinstance(b.body[-1], ast.Raise) and len(b.body) == 2, fn
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
        if r["name"] != "sft_vs_dft":  # the experiment first asks for its runs
            assert r["out"]["unsolved"] and r["out"]["checks"][0]["message"].startswith("not solved yet"), r
    p = subprocess.run([sys.executable, "-m", "exercises.check", "dpo"], cwd=edition, env={**ENV, "PYTHONPATH": ""},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr and "not solved yet" in p.stdout
    shutil.copy(os.path.join(ROOT, "losses.py"), edition / "losses.py")  # "solve" the loss exercises in place
    p = subprocess.run([sys.executable, "-m", "exercises.check", "dpo"], cwd=edition, env={**ENV, "PYTHONPATH": ""},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "all 8 checks passed" in p.stdout, p.stdout
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
    assert os.listdir(tmp_path / "few" / "exercises" / "yours") == ["README.md", "simpo.py"] or \
        sorted(os.listdir(tmp_path / "few" / "exercises" / "yours")) == ["README.md", "simpo.py"]


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
    assert len(lines) == 8 and "FAIL  hand case" in out and "expected kept tokens [1, 3], got [1]" in out


def test_cli_json(tmp_path, capsys):
    assert check.main(["dpo", "--json", "--impl", write(tmp_path, WRONG["dpo"][0][2])]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["exercise"] == "dpo" and out["passed"] is False and out["n_checks"] == len(out["checks"]) == 8
    assert set(out["checks"][0]) == {"name", "passed", "message"}
    assert check.main(["dpo", "--json"]) == 0 and json.loads(capsys.readouterr().out)["passed"] is True


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
    assert "PASS  zero margin gives log 2" in p.stdout and "FAIL  value at the defaults" in p.stdout


# -------------------------------------------------------------------- sizes and the docs

def test_file_sizes():
    limit = len(open(os.path.join(ROOT, "model.py")).read().splitlines())
    assert len(open(os.path.join(EX, "check.py")).read().splitlines()) <= 300
    for d, _, files in os.walk(EX):
        for f in files:
            if f.endswith((".py", ".md", ".json")):
                n = len(open(os.path.join(d, f)).read().splitlines())
                assert n <= limit, f"{f}: {n} lines, more than model.py's {limit}"


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


def test_no_stale_or_machine_text():
    stale = re.compile(r"/work|\.\./shared|this task|the targets|had no GPU|/tmp/|/root|developed on", re.I)
    for d, _, files in os.walk(EX):
        for f in files:
            if f.endswith((".py", ".md", ".json")):
                text = open(os.path.join(d, f)).read()
                assert not stale.search(text), (f, stale.search(text).group())
