"""
The classroom exercises' checkers (exercises/check.py): every checker passes the reference solution
and fails deliberately wrong ones (a checker that cannot fail is a defect), the starting templates
fail, the command line answers with the right exit status, and exercises/README.md names every
exercise, its check command and the project code it points to, so the docs cannot rot.

    python -m pytest -q tests/test_exercises.py
"""
import ast
import io
import json
import os
import subprocess
import sys
import textwrap

import pytest

import losses
from exercises import check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOL = os.path.join(ROOT, "exercises", "solutions")


def run(name, impl=None, runs=None):
    return check.run_exercise(name, impl=impl, runs=runs, stream=io.StringIO())


def failed(results):
    return [r.name for r in results if not r.ok]


def write(tmp_path, code, name="student.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return str(path)


def fake_runs(root, sft_after, dft_after, neg=(-40.0, -55.0), pos=(-20.0, -12.0), before=(2.5, 0.02)):
    """Fabricated run directories like train.py writes: <root>/{sft,dft}/eval.json, <root>/dft/metrics.jsonl.
    sft_after / dft_after / before: (nll, exact_match); neg / pos: (first, last) logged logp/neg, logp/pos."""
    def metrics(nll, em):
        return {"nll": nll, "ppl": 2.718281828 ** nll, "logp/pos": -nll * 9, "exact_match": em,
                "n_examples": 500.0, "n_tokens": 4500.0, "n_truncated": 0.0}
    for loss, after in (("sft", sft_after), ("dft", dft_after)):
        d = root / loss
        d.mkdir(parents=True)
        (d / "eval.json").write_text(json.dumps({"before": metrics(*before), "after": metrics(*after)}, indent=2))
    rows = [{"loss": 1.0, "logp/pos": pos[0] + (pos[1] - pos[0]) * k / 3, "logp/neg": neg[0] + (neg[1] - neg[0]) * k / 3,
             "step": 5 * (k + 1)} for k in range(4)]
    (root / "dft" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(root)


# -------------------------------------------------------------------- the references pass

@pytest.mark.parametrize("name", [n for n in check.EXERCISES if n != "sft_vs_dft"])
def test_reference_passes(name):
    res = run(name)
    assert res and not failed(res), [(r.name, r.message) for r in res if not r.ok]


def test_solution_files_pass_too():
    """The worked solutions a student may read, where the default reference is the project's own code."""
    res = run("u_update", impl=os.path.join(SOL, "u_update.py"))
    assert res and not failed(res), [(r.name, r.message) for r in res if not r.ok]


def test_sft_vs_dft_reference_reads_the_runs(tmp_path):
    runs = fake_runs(tmp_path / "out", sft_after=(1.1, 0.30), dft_after=(1.3, 0.35))
    res = run("sft_vs_dft", runs=runs)
    assert res and not failed(res), [(r.name, r.message) for r in res if not r.ok]


def test_simpo_check_leaves_the_project_registry_alone():
    before = dict(losses.LOSSES)
    run("simpo")
    assert losses.LOSSES == before and "simpo" not in losses.LOSSES


# -------------------------------------------------------------------- wrong answers fail

WRONG = {
    "sequence_logps": [
        ("multiplies by the mask (0 * -inf = NaN)", "prompt and padding", """
            import torch
            def sequence_logps(logits, targets, mask):
                lp = logits.float().log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
                return (lp * mask).sum(1), mask.sum(1)
         """),
        ("ignores the mask", "value equals", """
            import torch
            def sequence_logps(logits, targets, mask):
                lp = logits.float().log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
                return lp.sum(1), mask.sum(1)
         """),
        ("log_softmax in bfloat16", "bfloat16", """
            import torch
            def sequence_logps(logits, targets, mask):
                lp = logits.log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
                return torch.where(mask, lp, torch.zeros_like(lp)).sum(1).float(), mask.sum(1)
         """),
    ],
    "dpo": [
        ("forgets the reference model", "relative to the reference", """
            import torch.nn.functional as F
            def dpo_loss(cw, cl, rw, rl, beta=0.1, label_smoothing=0.0):
                cw = cw.unsqueeze(1) if cl.dim() == 2 else cw
                z = beta * (cw - cl)
                loss = (-(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)).mean()
                return loss, {}
         """),
        ("log of sigmoid", "large margins", """
            import torch
            def dpo_loss(cw, cl, rw, rl, beta=0.1, label_smoothing=0.0):
                if cl.dim() == 2:
                    cw, rw = cw.unsqueeze(1), rw.unsqueeze(1)
                z = beta * ((cw - rw) - (cl - rl))
                loss = (-(1 - label_smoothing) * torch.log(torch.sigmoid(z))
                        - label_smoothing * torch.log(torch.sigmoid(-z))).mean()
                r_w, r_l = (beta * (cw - rw)).expand_as(z), beta * (cl - rl)
                return loss, {"rewards/chosen": r_w.mean(), "rewards/rejected": r_l.mean(),
                              "rewards/margins": z.mean(), "rewards/accuracies": (r_w > r_l).double().mean()}
         """),
        ("label smoothing terms swapped", "label smoothing", """
            import torch.nn.functional as F
            def dpo_loss(cw, cl, rw, rl, beta=0.1, label_smoothing=0.0):
                if cl.dim() == 2:
                    cw, rw = cw.unsqueeze(1), rw.unsqueeze(1)
                z = beta * ((cw - rw) - (cl - rl))
                loss = (-(1 - label_smoothing) * F.logsigmoid(z) + label_smoothing * F.logsigmoid(-z)).mean()
                return loss, {}
         """),
    ],
    "u_update": [
        ("logsumexp instead of logmeanexp", "one step", """
            import math, torch
            def update_log_u(log_u, d, gamma):
                if gamma == 1:
                    return torch.logsumexp(d, 1)
                return torch.logaddexp(math.log(1 - gamma) + log_u, math.log(gamma) + torch.logsumexp(d, 1))
         """),
        ("exponentiates d directly", "-1e4", """
            import torch
            def update_log_u(log_u, d, gamma):
                return torch.log((1 - gamma) * torch.exp(log_u) + gamma * torch.exp(d).mean(1))
         """),
        ("math.log(1 - gamma) at gamma = 1", "gamma = 1", """
            import math, torch
            def update_log_u(log_u, d, gamma):
                lme = torch.logsumexp(d, 1) - math.log(d.shape[1])
                return torch.logaddexp(math.log(1 - gamma) + log_u, math.log(gamma) + lme)
         """),
    ],
    "top_p": [
        ("drops the token that makes the sum reach p", "hand case", """
            import torch
            def top_p_filter(logits, p):
                probs, idx = logits.softmax(-1).sort(-1, descending=True)
                keep_sorted = probs.cumsum(-1) < p
                keep_sorted[..., 0] = True
                keep = torch.zeros_like(keep_sorted).scatter(-1, idx, keep_sorted)
                return logits.masked_fill(~keep, float("-inf"))
         """),
        ("filters in place", "not modified", """
            import torch
            def top_p_filter(logits, p):
                probs = logits.softmax(-1)
                sorted_p = probs.sort(-1, descending=True).values
                n_keep = ((sorted_p.cumsum(-1) - sorted_p) < p).sum(-1, keepdim=True).clamp(min=1)
                return logits.masked_fill_(probs < sorted_p.gather(-1, n_keep - 1), float("-inf"))
         """),
        ("breaks ties by sort order", "tied", """
            import torch
            def top_p_filter(logits, p):
                probs, idx = logits.softmax(-1).sort(-1, descending=True)
                keep_sorted = (probs.cumsum(-1) - probs) < p
                keep = torch.zeros_like(keep_sorted).scatter(-1, idx, keep_sorted)
                return logits.masked_fill(~keep, float("-inf"))
         """),
    ],
    "simpo": [
        ("registers it on summed log-probs", "through the registry", """
            import torch.nn.functional as F
            from losses import LossSpec, _pairs
            def simpo_loss(a_w, a_l, beta=2.0, gamma=0.5):
                a_w, a_l = _pairs(a_w, a_l)
                loss = -F.logsigmoid(beta * (a_w - a_l) - gamma).mean()
                return loss, {"loss": loss.detach()}
            def register(d):
                d["simpo"] = LossSpec(simpo_loss, {"beta": 2.0, "gamma": 0.5}, True, (), False, False)
         """),
        ("adds the margin instead of subtracting it", "subtracted", """
            import torch.nn.functional as F
            from losses import LossSpec, _pairs
            def simpo_loss(a_w, a_l, beta=2.0, gamma=0.5):
                a_w, a_l = _pairs(a_w, a_l)
                loss = -F.logsigmoid(beta * (a_w - a_l) + gamma).mean()
                return loss, {"loss": loss.detach()}
            def register(d):
                d["simpo"] = LossSpec(simpo_loss, {"beta": 2.0, "gamma": 0.5}, True, (), True, False)
         """),
    ],
    "kv_cache": [
        ("calls the model's full forward each step", "full-forward", """
            import torch
            def greedy_decode(model, idx, n):
                T, steps = idx.shape[1], []
                for _ in range(n):
                    steps.append(model(idx)[:, -1])
                    idx = torch.cat([idx, steps[-1].argmax(-1, keepdim=True)], 1)
                return idx[:, T:], torch.stack(steps, 1)
         """),
        ("runs the blocks by hand but recomputes the whole sequence (no cache)", "once", """
            import math, torch
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
        ("every new token at position 0", "full-forward", None),  # the solution with one line changed, below
    ],
    "dft2_no_ref": [
        ("believes DFT2 reads the reference log-probs", "dft2') reads", """
            ANSWERS = {"dft_reads": {"logps", "neg_logps", "neg_ref_logps"},
                       "dft2_reads": {"logps", "n_tokens", "neg_logps", "neg_n_tokens", "neg_ref_logps"},
                       "w_base": [1.7616, 0.2384], "w_shifted": [1.7616, 0.2384], "w_matched": [1.0, 1.0],
                       "why": "b", "train_function": "reference_logps"}
         """),
        ("thinks a constant shift of logp_0 changes the weights, picks the wrong reason", "shifted", """
            ANSWERS = {"dft_reads": {"logps", "neg_logps", "neg_ref_logps"},
                       "dft2_reads": {"logps", "n_tokens", "neg_logps", "neg_n_tokens"},
                       "w_base": [1.7616, 0.2384], "w_shifted": [1.0, 1.0], "w_matched": [1.0, 1.0],
                       "why": "c", "train_function": "reference_logps"}
         """),
    ],
}
CASES = [(name, label, must_fail, code) for name, cases in WRONG.items() for label, must_fail, code in cases]


@pytest.mark.parametrize("name,label,must_fail,code", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_wrong_implementation_fails(tmp_path, name, label, must_fail, code):
    if code is None:  # kv_cache: the worked solution with the new tokens' positions wrong
        src = open(os.path.join(SOL, "kv_cache.py")).read()
        old = "pos = torch.arange(start, start + t, device=tokens.device)"
        assert old in src
        code = src.replace(old, "pos = torch.arange(0, t, device=tokens.device)")
    res = run(name, impl=write(tmp_path, code))
    bad = failed(res)
    assert any(must_fail in n for n in bad), f"{label}: expected a failing check about {must_fail!r}, failed: {bad}"
    if name == "dft2_no_ref" and "shift" in label:
        assert any("multiple choice" in n for n in bad)


def test_sft_vs_dft_answers_are_checked_against_the_files(tmp_path):
    a = fake_runs(tmp_path / "a", sft_after=(1.1, 0.30), dft_after=(1.3, 0.35), neg=(-40.0, -55.0))
    b = fake_runs(tmp_path / "b", sft_after=(1.4, 0.30), dft_after=(1.2, 0.25), neg=(-40.0, -35.0))
    student = write(tmp_path, """
        ANSWERS = {"nll_before": 2.5, "nll_after_sft": 1.1, "nll_after_dft": 1.3, "exact_match_after_sft": 0.3,
                   "exact_match_after_dft": 0.35, "lower_nll": "sft", "dft_logp_pos": "up", "dft_logp_neg": "down",
                   "why_neg_down": "b", "nll_meaning": "c"}
    """)
    assert not failed(run("sft_vs_dft", impl=student, runs=a))  # right for run a ...
    bad = failed(run("sft_vs_dft", impl=student, runs=b))  # ... and wrong for run b
    for must in ("nll after SFT", "nll after DFT", "exact match after DFT", "lower held-out nll", "logp/neg"):
        assert any(must in n for n in bad), (must, bad)
    assert not any("logp/pos" in n or "multiple choice" in n or "before" in n for n in bad), bad
    wrong_choice = write(tmp_path, open(student).read().replace('"nll_meaning": "c"', '"nll_meaning": "b"'), "w2.py")
    assert failed(run("sft_vs_dft", impl=wrong_choice, runs=a)) == ["what the held-out nll measures (multiple choice)"]


def test_sft_vs_dft_says_which_run_is_missing(tmp_path):
    res = run("sft_vs_dft", runs=str(tmp_path / "nothing"))
    assert res and all(not r.ok for r in res)
    assert "python train.py --loss sft" in res[0].message


@pytest.mark.parametrize("name", list(check.EXERCISES))
def test_template_fails_but_loads(tmp_path, name, capsys):
    """The starting file of every exercise imports cleanly and fails (nothing is filled in yet)."""
    assert check.main([name, "--template"]) == 0
    path = write(tmp_path, capsys.readouterr().out)
    runs = fake_runs(tmp_path / "out", sft_after=(1.1, 0.3), dft_after=(1.3, 0.35)) if name == "sft_vs_dft" else None
    res = run(name, impl=path, runs=runs)
    assert res[0].name not in ("import", "definitions"), res[0].message
    assert all(not r.ok for r in res if "comparable" not in r.name), [r.name for r in res if r.ok]


def test_import_errors_and_missing_functions_fail_cleanly(tmp_path):
    res = run("dpo", impl=write(tmp_path, "def dpo_loss(:\n", "syntax.py"))
    assert [r.name for r in res] == ["import"] and "SyntaxError" in res[0].message
    res = run("dpo", impl=write(tmp_path, "def dpo(x):\n    return x\n", "named_wrong.py"))
    assert [r.name for r in res] == ["definitions"] and "dpo_loss" in res[0].message
    res = run("dpo", impl=write(tmp_path, "def dpo_loss(*a, **k):\n    return 1 / 0\n", "raises.py"))
    assert all(not r.ok for r in res) and "ZeroDivisionError" in res[0].message and "raises.py:2" in res[0].message


# -------------------------------------------------------------------- the command line

def test_cli_exit_status(tmp_path, capsys):
    assert check.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in check.EXERCISES) and len(check.EXERCISES) >= 6
    assert check.main(["no_such_exercise"]) == 2
    assert check.main(["dpo", "--impl", str(tmp_path / "missing.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert check.main(["top_p"]) == 0  # the reference passes: status 0
    wrong = write(tmp_path, WRONG["top_p"][0][2])
    assert check.main(["top_p", "--impl", wrong]) == 1
    out = capsys.readouterr().out
    assert "FAIL  hand case" in out and "expected kept tokens [1, 3], got [1]" in out


def test_cli_as_a_command(tmp_path):
    """The documented command, in a fresh interpreter, from outside the repository: FAIL lines and status 1."""
    wrong = write(tmp_path, WRONG["dpo"][0][2])
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "exercises.check", "dpo", "--impl", wrong], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "PASS  zero margin gives log 2" in p.stdout and "FAIL  value with beta 0.5" in p.stdout


# -------------------------------------------------------------------- the docs

def _defined(path, name):
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return True
    return False


def test_readme_names_every_exercise_and_the_code_it_points_to():
    readme = open(os.path.join(ROOT, "exercises", "README.md")).read()
    for name, ex in check.EXERCISES.items():
        assert f"python -m exercises.check {name}" in readme, name
        for path, fn in ex.where:
            assert _defined(path, fn), f"exercise {name} points to {path}: {fn}, which is not defined there"
            assert f"`{path}`" in readme and f"`{fn}`" in readme, (name, path, fn)
        if isinstance(ex.default, str) and ex.default.endswith(".py"):
            assert os.path.exists(os.path.join(ROOT, "exercises", ex.default))
