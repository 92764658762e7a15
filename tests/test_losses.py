"""
Tests for losses.py against independent brute-force references: plain python loops over float64 math
(DFT's u tracked in LINEAR space, ASFT in its published log-odds form), hand-derived gradients where the
loss has stop-gradients (DFT, DFT2), central finite differences of the reference elsewhere.

    python -m pytest -q tests/test_losses.py
"""
import math
import random

import pytest
import torch

import losses
from losses import LOSSES, asft_loss, compute_loss, dft2_loss, dft_loss, dpo_loss, sequence_logps, sft_loss


def logsig(z):  # log sigmoid(z), stable in both directions
    return -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))


def lme(xs):  # log mean exp, reference
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs) / len(xs))


def t64(rows, grad=True):
    return torch.tensor(rows, dtype=torch.float64, requires_grad=grad)


def rand(shape, lo, hi, seed):
    g = random.Random(seed)
    if len(shape) == 1:
        return [g.uniform(lo, hi) for _ in range(shape[0])]
    return [[g.uniform(lo, hi) for _ in range(shape[1])] for _ in range(shape[0])]


def fd_grad(ref, args, h=1e-6):
    """Central finite differences of a python-list reference ref(*args) w.r.t. every element of every arg."""
    grads = []
    for k, a in enumerate(args):
        flat = [(i, None) for i in range(len(a))] if not isinstance(a[0], list) else \
            [(i, j) for i in range(len(a)) for j in range(len(a[0]))]
        g = [0.0] * len(a) if not isinstance(a[0], list) else [[0.0] * len(a[0]) for _ in a]
        for i, j in flat:
            vals = []
            for sgn in (1, -1):
                b = [list(r) if isinstance(r, list) else r for r in a]
                if j is None:
                    b[i] += sgn * h
                else:
                    b[i][j] += sgn * h
                vals.append(ref(*[b if m == k else x for m, x in enumerate(args)]))
            if j is None:
                g[i] = (vals[0] - vals[1]) / (2 * h)
            else:
                g[i][j] = (vals[0] - vals[1]) / (2 * h)
        grads.append(g)
    return grads


def close(t, ref, tol=1e-9):
    assert torch.allclose(t.detach().double(), torch.tensor(ref, dtype=torch.float64), rtol=tol, atol=tol), (t, ref)


# ---------------------------------------------------------------- sequence_logps

def _batch(seed=0, N=3, T=7, V=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, T, V, generator=g) * 3
    targets = torch.randint(0, V, (N, T), generator=g)
    n_prompt, length = [2, 4, 1], [7, 5, 3]   # sequence lengths in targets positions (rest is padding)
    mask = torch.zeros(N, T, dtype=torch.bool)
    for n in range(N):
        for t in range(length[n]):
            mask[n, t] = t + 1 >= n_prompt[n]   # the collate convention: targets[t] scored iff t+1 >= n_prompt
    return logits, targets, mask


def test_sequence_logps_matches_loop():
    logits, targets, mask = _batch()
    logps, n = sequence_logps(logits, targets, mask)
    assert logps.dtype == torch.float32 and n.dtype == torch.long and logps.shape == (3,)
    for i in range(3):
        tot, cnt = 0.0, 0
        for t in range(7):
            if mask[i, t]:
                row = [float(v) for v in logits[i, t]]
                tot += row[targets[i, t]] - math.log(sum(math.exp(v) for v in row))
                cnt += 1
        assert abs(logps[i].item() - tot) < 1e-4 and n[i].item() == cnt
    assert n.tolist() == [6, 2, 3]
    lp16, _ = sequence_logps(logits.bfloat16(), targets, mask)     # float32 out, even from bf16 logits
    assert lp16.dtype == torch.float32


def test_sequence_logps_ignores_prompt_and_padding():
    logits, targets, mask = _batch(1)
    logits.requires_grad_(True)
    ref, _ = sequence_logps(logits, targets, mask)
    ref.sum().backward()
    assert (logits.grad[~mask] == 0).all() and (logits.grad[mask].abs().sum(-1) > 0).all()
    l2, y2 = logits.detach().clone(), targets.clone()
    l2[~mask] = torch.randn_like(l2[~mask]) * 100
    l2[0, 0, :] = -float("inf")                                       # even -inf at a prompt position
    y2[~mask] = (y2[~mask] + 3) % 11
    out, _ = sequence_logps(l2, y2, mask)
    assert torch.equal(out, ref.detach())
    l2[mask] += torch.randn_like(l2[mask])                             # scored positions DO matter
    assert not torch.allclose(sequence_logps(l2, y2, mask)[0], ref.detach())


def test_logmeanexp_and_u_update_are_stable():
    x = torch.tensor([[1e4, 1e4 - 1.0, 1e4 - 50.0], [-1e4, -2e4, -3e4], [-math.inf] * 3], dtype=torch.float64)
    out = losses.logmeanexp(x, dim=1)        # naive exp overflows / underflows on every row
    close(out[:2], [lme(r) for r in x[:2].tolist()])
    assert out[2].item() == -math.inf        # an all -inf row is -inf, not NaN
    log_u = torch.tensor([1e4, -1e4, 0.0], dtype=torch.float64)
    new = losses.update_log_u(log_u, x, 0.5)  # log(0.5 e^log_u + 0.5 mean e^d), with no overflow anywhere
    close(new[:2], [1e4 + math.log(0.5 + 0.5 * math.exp(lme(x[0].tolist()) - 1e4)),
                    math.log(0.5) + lme(x[1].tolist()) + math.log1p(math.exp(-1e4 - lme(x[1].tolist())))])
    assert new[2].item() == math.log(0.5)    # an all -inf row of d only decays u


# ---------------------------------------------------------------- SFT

def test_sft_value_and_grad():
    lp, n = [-3.0, -10.0, -0.5], [2, 7, 1]
    x = t64(lp)
    loss, m = sft_loss(x, torch.tensor(n))
    loss.backward()
    close(loss, -sum(lp) / sum(n))
    close(x.grad, [-1 / sum(n)] * 3)
    close(m["nll"], -sum(lp) / sum(n), 1e-6)
    _, _, m2 = compute_loss("sft", {"pos": t64(lp), "pos_n": torch.tensor(n)})
    close(m2["logp/pos"], sum(lp) / 3, 1e-6)   # the summed log-prob, added to every loss's metrics


# ---------------------------------------------------------------- DFT / DFT2 references

def dft_ref(pos, neg, d, log_u, gamma):
    """Linear-space reference: u = (1-gamma) u + gamma mean_j exp(d_j); w = exp(d)/u;
    L = mean_i(-pos_i + mean_j w_ij neg_ij); dL/dpos = -1/N, dL/dneg = w/(N B)."""
    N, B = len(neg), len(neg[0])
    new_u, w = [], []
    for i in range(N):
        u = (1 - gamma) * math.exp(log_u[i]) + gamma * sum(math.exp(x) for x in d[i]) / B
        new_u.append(math.log(u))
        w.append([math.exp(x) / u for x in d[i]])
    loss = sum(-pos[i] + sum(w[i][j] * neg[i][j] for j in range(B)) / B for i in range(N)) / N
    return loss, new_u, w, [-1 / N] * N, [[w[i][j] / (N * B) for j in range(B)] for i in range(N)]


def test_dft_value_grad_and_no_grad_to_state():
    pos, neg, ref = rand((3,), -30, -5, 1), rand((3, 4), -40, -10, 2), rand((3, 4), -40, -10, 3)
    log_u, tau, gamma = rand((3,), -1, 1, 4), 0.7, 0.85
    d = [[neg[i][j] / tau - ref[i][j] for j in range(4)] for i in range(3)]
    r_loss, r_u, r_w, g_pos, g_neg = dft_ref(pos, neg, d, log_u, gamma)
    P, Q, R, U = t64(pos), t64(neg), t64(ref), t64(log_u)
    loss, new_u, m = dft_loss(P, Q, R, U, tau=tau, gamma=gamma)
    loss.backward()
    close(loss, r_loss)
    close(new_u, r_u)
    close(P.grad, g_pos)
    close(Q.grad, g_neg)
    assert R.grad is None and U.grad is None and not new_u.requires_grad
    assert all(v.dim() == 0 and not v.requires_grad for v in m.values())
    flat_w = [x for row in r_w for x in row]
    for k, v in {"loss": r_loss, "logp0/neg": sum(map(sum, ref)) / 12, "log_u": sum(r_u) / 3,
                 "w/mean": sum(flat_w) / 12, "w/max": max(flat_w)}.items():
        assert abs(m[k].item() - v) < 1e-4 * max(1, abs(v)), k


@pytest.mark.parametrize("B", [1, 3])
def test_dft_u_recursion_over_steps(B):
    tau, gamma = 1.0, 0.85
    log_u_ref, log_u = [0.0, 0.0], torch.zeros(2, dtype=torch.float64)   # u starts at 0 for every prompt
    for step in range(6):
        pos, neg, ref = rand((2,), -20, -5, 10 * step), rand((2, B), -30, -5, 10 * step + 1), \
            rand((2, B), -30, -5, 10 * step + 2)
        d = [[neg[i][j] / tau - ref[i][j] for j in range(B)] for i in range(2)]
        r_loss, log_u_ref, *_ = dft_ref(pos, neg, d, log_u_ref, gamma)
        loss, log_u, _ = dft_loss(t64(pos), t64(neg), t64(ref), log_u, tau=tau, gamma=gamma)
        close(loss, r_loss)
        close(log_u, log_u_ref)


def test_dft_gamma_one_forgets_old_u():
    pos, neg, ref = rand((2,), -20, -5, 5), rand((2, 3), -30, -5, 6), rand((2, 3), -30, -5, 7)
    d = [[neg[i][j] / 0.5 - ref[i][j] for j in range(3)] for i in range(2)]
    outs = [dft_loss(t64(pos), t64(neg), t64(ref), t64(lu, False), tau=0.5, gamma=1.0) for lu in ([0., 0.], [5., -9.])]
    for loss, new_u, _ in outs:
        close(new_u, [lme(row) for row in d])
        close(loss, outs[0][0].item())


def _fixed_point_check(loss_fn, objective, pos, neg, d, tau, gamma, extra=()):
    """At u's fixed point (log_u = logmeanexp d), grad(surrogate) == tau * grad(objective)."""
    P, Q = t64(pos), t64(neg)
    loss, new_u, _ = loss_fn(P, Q, *extra, t64([lme(r) for r in d], False), tau=tau, gamma=gamma)
    close(new_u, [lme(r) for r in d])                    # it really is a fixed point
    loss.backward()
    P2, Q2 = t64(pos), t64(neg)
    objective(P2, Q2).backward()
    close(P.grad, (tau * P2.grad).tolist())
    close(Q.grad, (tau * Q2.grad).tolist())


@pytest.mark.parametrize("gamma", [1.0, 0.85])
def test_dft_surrogate_gradient_is_tau_times_objective_gradient(gamma):
    tau, B = 0.6, 4
    pos, neg, ref = rand((3,), -20, -5, 20), rand((3, B), -30, -5, 21), rand((3, B), -30, -5, 22)
    d = [[neg[i][j] / tau - ref[i][j] for j in range(B)] for i in range(3)]
    R = torch.tensor(ref, dtype=torch.float64)
    objective = lambda p, q: (-p / tau + torch.logsumexp(q / tau - R, 1) - math.log(B)).mean()
    _fixed_point_check(dft_loss, objective, pos, neg, d, tau, gamma, extra=(R,))


def test_dft2_value_grad_and_recursion():
    tau, gamma, B = 0.3, 0.9, 2
    log_u_ref, log_u = [0.0] * 3, torch.zeros(3, dtype=torch.float64)
    for step in range(4):
        pos, neg = rand((3,), -3, -0.1, 30 + step), rand((3, B), -5, -0.5, 40 + step)
        d = [[neg[i][j] / tau for j in range(B)] for i in range(3)]
        r_loss, log_u_ref, r_w, g_pos, g_neg = dft_ref(pos, neg, d, log_u_ref, gamma)
        P, Q, U = t64(pos), t64(neg), log_u.clone().requires_grad_(True)
        loss, log_u, m = dft2_loss(P, Q, U, tau=tau, gamma=gamma)
        loss.backward()
        close(loss, r_loss)
        close(log_u, log_u_ref)
        close(P.grad, g_pos)
        close(Q.grad, g_neg)
        assert U.grad is None and not log_u.requires_grad
        assert abs(m["avg_logp/neg"].item() - sum(map(sum, neg)) / 6) < 1e-5
        assert abs(m["w/max"].item() - max(max(r) for r in r_w)) < 1e-5


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_dft2_surrogate_gradient_is_tau_times_objective_gradient(gamma):
    tau, B = 0.3, 3
    pos, neg = rand((2,), -3, -0.1, 50), rand((2, B), -5, -0.5, 51)
    d = [[neg[i][j] / tau for j in range(B)] for i in range(2)]
    objective = lambda p, q: (-p / tau + torch.logsumexp(q / tau, 1) - math.log(B)).mean()
    _fixed_point_check(dft2_loss, objective, pos, neg, d, tau, gamma)


def test_dft_rejects_bad_hyperparameters():
    z = torch.zeros(2)
    with pytest.raises(ValueError, match="gamma"):
        dft2_loss(z, z[:, None], z, gamma=0.0)
    with pytest.raises(ValueError, match="tau"):
        dft_loss(z, z[:, None], z[:, None], z, tau=0.0)


# ---------------------------------------------------------------- ASFT

def odds(a):
    return a - math.log(-math.expm1(a))


def asft_ref(chosen, rejected, lam, beta=1.0):
    """Published form with the scale beta inside the odds, pairs (i, j) averaged:
    -a_w - lam [log sig(odds(beta a_w)) + log sig(-odds(beta a_l))]."""
    terms = [-chosen[i] - lam * (logsig(odds(beta * chosen[i])) + logsig(-odds(beta * rejected[i][j])))
             for i in range(len(rejected)) for j in range(len(rejected[0]))]
    return sum(terms) / len(terms)


def test_asft_log_odds_identity():
    for a in (-1e-6, -0.01, -0.5, -3.0, -20.0):
        assert abs(logsig(odds(a)) - a) < 1e-9 * max(1, abs(a))
        assert abs(logsig(-odds(a)) - math.log(1 - math.exp(a))) < 1e-9 * max(1, abs(math.log(1 - math.exp(a))))


@pytest.mark.parametrize("B,beta", [(None, 1.0), (1, 1.0), (3, 1.0), (3, 0.1)])   # None: preference data, shape (N,)
def test_asft_value_and_grad(B, beta):
    lam = 0.3
    chosen = rand((3,), -4, -0.05, 60)
    rejected = rand((3, B or 1), -6, -0.05, 61)
    C, Rj = t64(chosen), t64([r[0] for r in rejected] if B is None else rejected)
    loss, m = asft_loss(C, Rj, lam=lam, beta=beta)
    loss.backward()
    close(loss, asft_ref(chosen, rejected, lam, beta))
    gc, gr = fd_grad(lambda c, r: asft_ref(c, r, lam, beta), [chosen, rejected])
    close(C.grad, gc, 1e-6)
    close(Rj.grad, [r[0] for r in gr] if B is None else gr, 1e-6)
    assert abs(m["avg_logp/neg"].item() - sum(map(sum, rejected)) / (3 * (B or 1))) < 1e-5


def test_asft_rejected_gradient_is_bounded_near_zero():
    """log(1 - exp(a)) has gradient -exp(a)/(1 - exp(a)): about -1e9 at a = -1e-9. Past the clamp it is 0,
    and before it never larger than the documented bound."""
    lam = 0.5
    for a, want in ((-1e-9, 0.0), (-1e-12, 0.0), (0.0, 0.0), (-2e-3, lam * math.exp(-2e-3) / -math.expm1(-2e-3))):
        r = torch.tensor([a], dtype=torch.float64, requires_grad=True)
        loss, _ = asft_loss(torch.tensor([-0.5], dtype=torch.float64), r, lam=lam)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(r.grad).all()
        assert abs(r.grad.item() - want) < 1e-6 * max(1, want), (a, r.grad.item(), want)
        assert r.grad.abs().item() <= lam * math.exp(losses.X_MAX) / -math.expm1(losses.X_MAX) + 1e-9


# ---------------------------------------------------------------- DPO

def dpo_ref(c, r, rc, rr, beta, eps):
    terms = []
    for i in range(len(r)):
        for j in range(len(r[0])):
            z = beta * ((c[i] - rc[i]) - (r[i][j] - rr[i][j]))
            terms.append(-(1 - eps) * logsig(z) - eps * logsig(-z))
    return sum(terms) / len(terms)


def test_dpo_zero_margin_is_log2():
    for eps in (0.0, 0.25):
        x = torch.tensor([-5.0, -50.0])
        loss, m = dpo_loss(x, x - 3, x + 1, x - 2, label_smoothing=eps)   # both rewards shifted equally: Delta = 0
        assert abs(loss.item() - math.log(2)) < 1e-6
        assert m["rewards/accuracies"].item() == 0.0                     # ties are not accurate


@pytest.mark.parametrize("B,eps", [(None, 0.0), (1, 0.1), (3, 0.2)])
def test_dpo_value_and_grad(B, eps):
    beta = 0.5
    c, rc = rand((3,), -30, -5, 70), rand((3,), -30, -5, 71)
    r, rr = rand((3, B or 1), -30, -5, 72), rand((3, B or 1), -30, -5, 73)
    flat = (lambda x: [row[0] for row in x]) if B is None else (lambda x: x)
    C, R, RC, RR = t64(c), t64(flat(r)), t64(rc), t64(flat(rr))
    loss, _ = dpo_loss(C, R, RC, RR, beta=beta, label_smoothing=eps)
    loss.backward()
    close(loss, dpo_ref(c, r, rc, rr, beta, eps))
    gc, gr = fd_grad(lambda c_, r_: dpo_ref(c_, r_, rc, rr, beta, eps), [c, r])
    close(C.grad, gc, 1e-6)
    close(R.grad, flat(gr), 1e-6)
    assert RC.grad is None and RR.grad is None                           # the reference is a constant


def test_dpo_metrics_hand_case():
    loss, m = dpo_loss(torch.tensor([-10.0, -20.0]), torch.tensor([-12.0, -15.0]),
                       torch.tensor([-11.0, -20.0]), torch.tensor([-11.0, -16.0]), beta=0.5)
    # rewards chosen (0.5, 0), rejected (-0.5, 0.5), margins (1, -0.5)
    want = {"rewards/chosen": 0.25, "rewards/rejected": 0.0, "rewards/margins": 0.25,
            "rewards/accuracies": 0.5, "loss": (math.log1p(math.exp(-1)) + math.log1p(math.exp(0.5))) / 2}
    for k, v in want.items():
        assert abs(m[k].item() - v) < 1e-6, k
    assert abs(loss.item() - want["loss"]) < 1e-6
    _, _, m = compute_loss("dpo", {"pos": torch.tensor([-10.0, -20.0]), "neg": torch.tensor([-12.0, -15.0]),
                                   "ref_pos": torch.tensor([-11.0, -20.0]), "ref_neg": torch.tensor([-11.0, -16.0])}, beta=0.5)
    assert (m["logp/pos"].item(), m["logp/neg"].item()) == (-15.0, -13.5)   # TRL's logps/chosen, logps/rejected


# ---------------------------------------------------------------- numerics at the extremes

def _finite(*ts):
    return all(torch.isfinite(t).all() for t in ts)


@pytest.mark.parametrize("gamma,tau", [(1.0, 0.01), (0.85, 0.01), (0.9, 1.0)])
def test_extreme_inputs_stay_finite(gamma, tau):
    hi, lo = -1e-8, -1e4
    for B in (1, 2):
        pos = torch.tensor([hi, lo, hi, lo], requires_grad=True)
        neg = torch.tensor([[hi, lo], [lo, hi], [hi, hi], [lo, lo]])[:, :B].clone().requires_grad_(True)
        ref = torch.tensor([[lo, hi], [hi, lo], [lo, lo], [hi, hi]])[:, :B]
        log_u = torch.tensor([0.0, 0.0, 1e4, -1e4])
        for loss, new_u in (dft_loss(pos, neg, ref, log_u, tau=tau, gamma=gamma)[:2],
                            dft2_loss(pos, neg, log_u, tau=tau, gamma=gamma)[:2]):
            pos.grad = neg.grad = None
            loss.backward()
            assert _finite(loss, new_u, pos.grad, neg.grad)
        for loss, _ in (asft_loss(pos, neg), dpo_loss(pos, neg, ref[:, 0], ref), sft_loss(pos, torch.ones(4))):
            pos.grad = neg.grad = None
            loss.backward()
            assert _finite(loss, pos.grad, *([neg.grad] if neg.grad is not None else []))
    a = torch.tensor([0.0, -1e-8], requires_grad=True)                  # a float32-rounded avg_logp of exactly 0
    loss, _ = asft_loss(a, a.clone())
    loss.backward()
    assert _finite(loss, a.grad)


# ---------------------------------------------------------------- registry and the uniform entry point

def test_registry_defaults_and_flags():
    assert set(LOSSES) == {"sft", "nll", "dft", "dft2", "asft", "dpo"}
    assert LOSSES["dft"].defaults == {"tau": 1.0, "gamma": 0.85}
    assert LOSSES["dft2"].defaults == {"tau": 0.3, "gamma": 0.9}
    assert LOSSES["dpo"].defaults["beta"] == 0.1 and LOSSES["asft"].defaults == {"lam": 0.1, "beta": 1.0}
    flags = {k: (s.needs_negatives, s.needs_ref, s.length_normalized, s.stateful, s.step_mean, s.pairs_with_rejected)
             for k, s in LOSSES.items()}
    assert flags == {"sft": (False, (), False, False, "tokens", False), "nll": (False, (), False, False, "prompts", False),
                     "dft": (True, ("neg",), False, True, "prompts", False),
                     "dft2": (True, (), True, True, "prompts", False), "asft": (True, (), True, False, "prompts", True),
                     "dpo": (True, ("pos", "neg"), False, False, "prompts", True)}
    import inspect
    for s in LOSSES.values():  # registered defaults: the functions' own; inputs: its arguments
        params = inspect.signature(s.fn).parameters
        assert all(params[k].default == v for k, v in s.defaults.items())
        assert set(s.inputs) == set(params) - set(s.hparams)
        assert set(s.inputs.values()) <= set(losses.INPUTS)


def test_hyperparameter_ranges():
    for name, v in (("tau", 0.0), ("gamma", 0.0), ("gamma", 1.5), ("tau", float("nan"))):
        with pytest.raises(ValueError, match=f"--{name} must satisfy"):
            LOSSES["dft"].hparams[name].check(f"--{name}", v)
    LOSSES["dft"].hparams["gamma"].check("--gamma", 1.0)                       # gamma = 1 is allowed
    with pytest.raises(ValueError, match="label_smoothing must satisfy 0 <= label_smoothing < 0.5"):
        LOSSES["dpo"].hparams["label_smoothing"].check("label_smoothing", 0.5)


def test_compute_loss_matches_direct_calls():
    g = torch.Generator().manual_seed(3)
    batch = {"pos": -torch.rand(3, generator=g) * 20, "pos_n": torch.tensor([4, 9, 2]),
             "neg": -torch.rand(3, 2, generator=g) * 30, "neg_n": torch.tensor([[5, 3], [8, 1], [2, 6]]),
             "ref_pos": -torch.rand(3, generator=g) * 20, "ref_neg": -torch.rand(3, 2, generator=g) * 30,
             "log_u": torch.tensor([0.0, 1.0, -1.0])}
    b = batch
    pa, na = b["pos"] / b["pos_n"], b["neg"] / b["neg_n"]
    want = {"sft": sft_loss(b["pos"], b["pos_n"])[0], "nll": -b["pos"].mean(),
            "dft": dft_loss(b["pos"], b["neg"], b["ref_neg"], b["log_u"], tau=0.5)[0],
            "dft2": dft2_loss(pa, na, b["log_u"])[0],
            "asft": asft_loss(pa, na)[0],
            "dpo": dpo_loss(b["pos"], b["neg"], b["ref_pos"], b["ref_neg"])[0]}
    for name, w in want.items():
        loss, new_u, m = compute_loss(name, batch, **({"tau": 0.5} if name == "dft" else {}))
        assert torch.equal(loss, w), name
        assert (new_u is not None) == LOSSES[name].stateful
        assert m["logp/pos"].item() == pytest.approx(b["pos"].mean().item())
    assert not torch.equal(compute_loss("dft", batch)[0], want["dft"])   # the override mattered
    with pytest.raises(ValueError, match="beta"):
        compute_loss("dft", batch, beta=0.1)
    with pytest.raises(ValueError, match="unknown loss"):
        compute_loss("ppo", batch)
    with pytest.raises(ValueError, match="log_u"):
        compute_loss("dft2", {k: v for k, v in batch.items() if k != "log_u"})
    with pytest.raises(ValueError, match="tau must satisfy"):
        compute_loss("dft", batch, tau=0.0)
