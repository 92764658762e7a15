"""
Exercise dft_loss: DFT's loss, value and gradient (docs/ALGORITHMS.md, "DFT").

Write losses.dft_loss(pos_logps, neg_logps, neg_ref_logps, log_u, tau=1.0, gamma=0.85) and the step it
shares with DFT2, losses.dft_surrogate, so that for each prompt i with B negatives
    d_j     = s(y'_j)/tau - logp_0(y'_j)                         (no gradient)
    log_u_i <- the moving average of update_log_u (exercise u_update), with THIS batch's d
    w_j     = exp(d_j - new log_u_i)                              (no gradient)
    L_i     = -s(y_i) + (1/B) sum_j w_j s(y'_j),    loss = mean_i L_i
and (loss, new_log_u, metrics) comes back. The surrogate L has the right gradient only if d, log_u and
w are constants: a w that carries gradient gives the same loss value and the wrong gradient.

Hidden cases (--cases): {"name": ..., "pos": [N], "neg": [N][B], "ref_neg": [N][B], "log_u": [N],
"tau": float, "gamma": float}; loss, new_log_u and gradients are compared with the reference.
"""
import math

import torch

from exercises.lib import (Fail, backward, check_metrics, close, diagnose, expect, fmt, grad_of, is_close, lae, lme,
                           loss_and_metrics, rand_list, t64)

TITLE = "DFT's loss: u first, then constant weights w (value and gradient)"
TIME = 30
OBJECTIVE = "build a surrogate loss whose gradient is the objective's: what must carry no gradient, and in which order"
READ = (("docs/ALGORITHMS.md", "DFT"), ("losses.py", "dft2_loss"), ("losses.py", "LOSSES"), ("train.py", "train_step"))
TARGETS = (("losses", "dft_surrogate"), ("losses", "dft_loss"))
NEEDS = ("dft_loss",)


def reference(pos, neg, ref, log_u, tau, gamma, old_u=False, no_ref=False, pos_tau=False, ref_tau=False, no_tau=False):
    """Python floats -> (loss, new log_u, d loss/d pos, d loss/d neg). The keyword arguments compute the
    classic mistakes instead: weights from the old u, no logp_0, the positive over tau, tau misplaced."""
    N, B = len(pos), len(neg[0])
    loss, new_u, g_pos, g_neg = 0.0, [], [], []
    for i in range(N):
        d = [(s / (1 if no_tau else tau)) - (0.0 if no_ref else r) for s, r in zip(neg[i], ref[i])]
        if ref_tau:
            d = [(s - r) / tau for s, r in zip(neg[i], ref[i])]
        new = lme(d) if gamma == 1 else lae(math.log(1 - gamma) + log_u[i], math.log(gamma) + lme(d))
        w = [math.exp(x - (log_u[i] if old_u else new)) for x in d]
        loss += (-pos[i] / (tau if pos_tau else 1) + sum(a * b for a, b in zip(w, neg[i])) / B) / N
        new_u.append(new)
        g_pos.append(-1 / (tau if pos_tau else 1) / N)
        g_neg.append([x / (B * N) for x in w])
    return loss, new_u, g_pos, g_neg


def mistakes(args, which):
    msgs = {"old_u": "the weights use the old log_u: update u first (with this batch's d), then w_j = exp(d_j - new log_u)",
            "no_ref": "d must subtract logp_0(y'_j), the base model's log-prob: the importance weight 1/pi_0",
            "pos_tau": "the positive term is -s(y_i), not -s(y_i)/tau (the published convention, docs/ALGORITHMS.md)",
            "ref_tau": "only s(y'_j) is divided by tau, not logp_0: d_j = s(y'_j)/tau - logp_0(y'_j)",
            "no_tau": "d divides s(y'_j) by tau: d_j = s(y'_j)/tau - logp_0(y'_j)"}
    return [(reference(*args, **{k: True})[which], msgs[k]) for k in msgs]


def run(m, pos, neg, ref, log_u, grad=False, dtype=torch.float64, **kw):
    p, n = (torch.tensor(x, dtype=dtype, requires_grad=grad) for x in (pos, neg))
    out = loss_and_metrics(m.dft_loss(p, n, torch.tensor(ref, dtype=dtype), t64(log_u), **kw), "dft_loss", 3)
    return out[0], out[1], out[2], p, n


def case(seed, N=3, B=2, lo=-12, hi=-2):
    pos, neg = rand_list((N,), lo, hi, seed), rand_list((N, B), lo, hi, seed + 1)
    ref = [[x + o for x, o in zip(row, off)] for row, off in zip(neg, rand_list((N, B), -1.5, 1.5, seed + 2))]
    return pos, neg, ref


def checks(m, opts):
    pos, neg, ref = case(0)
    log_u = [0.3, -0.4, 1.2]

    def returns():
        loss, new_u, _, _, _ = run(m, pos, neg, ref, log_u, grad=True)
        expect(isinstance(new_u, torch.Tensor) and tuple(new_u.shape) == (3,), "dft_loss should return new_log_u, a "
               f"tensor of shape (N,) = (3,), got {new_u!r}")
        expect(not new_u.requires_grad, "new_log_u carries gradient: it is state that train.py writes into its table "
               "(compute it from detached values)")
        expect(new_u.dtype == torch.float64, f"new_log_u should come back in log_u's dtype (float64), got {new_u.dtype}")

    def new_log_u():
        args = (pos, neg, ref, log_u, 0.7, 0.85)
        _, new_u, _, _, _ = run(m, pos, neg, ref, log_u, tau=0.7, gamma=0.85)
        diagnose(new_u, reference(*args)[1], "new_log_u at tau = 0.7, gamma = 0.85", mistakes(args, 1), 1e-9)

    def value():
        args = (pos, neg, ref, log_u, 1.0, 0.85)
        loss, _, _, _, _ = run(m, pos, neg, ref, log_u)
        diagnose(loss, reference(*args)[0], "loss at the defaults tau = 1, gamma = 0.85", mistakes(args, 0), 1e-9)

    def u_first():
        far = [4.0, -4.0, 2.5]  # an old u far from this batch's estimate: the order shows
        args = (pos, neg, ref, far, 1.0, 0.5)
        loss, _, _, _, _ = run(m, pos, neg, ref, far, gamma=0.5)
        diagnose(loss, reference(*args)[0], "loss with log_u far from the batch's estimate (gamma = 0.5)",
                 mistakes(args, 0), 1e-9)

    def tau():
        args = (pos, neg, ref, log_u, 0.5, 0.85)
        loss, _, _, _, _ = run(m, pos, neg, ref, log_u, tau=0.5)
        diagnose(loss, reference(*args)[0], "loss at tau = 0.5", mistakes(args, 0), 1e-9)

    def gradient():
        args = (pos, neg, ref, log_u, 0.8, 0.85)
        loss, _, _, p, n = run(m, pos, neg, ref, log_u, grad=True, tau=0.8)
        want_loss, _, g_pos, g_neg = reference(*args)
        backward(loss, "dft_loss")
        close(grad_of(p, "pos_logps"), g_pos, "d loss / d pos_logps (-1/N for every prompt)", 1e-9)
        if not is_close(grad_of(n, "neg_logps"), g_neg, 1e-9) and is_close(loss, want_loss, 1e-9):
            raise Fail(f"the weights w carry gradient: detach them (d, log_u and w are constants of the surrogate "
                       f"loss; the loss value is right but d loss / d neg_logps is {fmt(n.grad)}, expected {fmt(g_neg)})")
        close(n.grad, g_neg, "d loss / d neg_logps (w_j / (B N))", 1e-9)

    def gamma_one():
        args = (pos, neg, ref, log_u, 1.0, 1.0)
        loss, new_u, _, _, _ = run(m, pos, neg, ref, log_u, gamma=1.0)
        close(new_u, reference(*args)[1], "new_log_u at gamma = 1 (logmeanexp_j d_j: the old u is forgotten)", 1e-9)
        close(loss, reference(*args)[0], "loss at gamma = 1", 1e-9)

    def large():
        big_pos, big_neg = [-500.0, -800.0], [[-300.0, -310.0], [-290.0, -305.0]]
        big_ref = [[-2600.0, -2590.0], [-2610.0, -2580.0]]  # d = s/0.2 - logp_0 ~ +1100: exp(d) overflows
        args = (big_pos, big_neg, big_ref, [0.0, 0.0], 0.2, 0.85)
        loss, new_u, _, _, _ = run(m, *args[:4], tau=0.2, gamma=0.85)
        expect(bool(torch.isfinite(loss)) and bool(torch.isfinite(new_u).all()), "exp of a raw log-prob sum "
               f"overflows: stay in log space (loss {fmt(loss)}, new_log_u {fmt(new_u)} for d around +1100)")
        close(new_u, reference(*args)[1], "new_log_u for d around +1100", 1e-9)
        close(loss, reference(*args)[0], "loss for d around +1100", 1e-9)

    def float32():
        loss, new_u, _, _, _ = run(m, pos, neg, ref, log_u, dtype=torch.float32)
        expect(loss.dtype == torch.float32 and new_u.dtype == torch.float64, "with float32 log-probs (the model's) and "
               f"a float64 log_u table: expected a float32 loss and a float64 new_log_u, got {loss.dtype}, {new_u.dtype}")
        close(loss, reference(pos, neg, ref, log_u, 1.0, 0.85)[0], "loss from float32 log-probs", 1e-5)

    def metrics():
        _, _, met, _, _ = run(m, pos, neg, ref, log_u, tau=0.7)
        loss, new_u, _, g_neg = reference(pos, neg, ref, log_u, 0.7, 0.85)
        w = [x * 3 * 2 for row in g_neg for x in row]  # g_neg = w / (B N)
        check_metrics(met, {"loss": loss, "log_u": sum(new_u) / 3, "w/mean": sum(w) / 6, "w/max": max(w),
                            "logp0/neg": sum(sum(r) for r in ref) / 6}, "dft_loss")

    def dft2_shares_core():
        import losses
        a_pos, a_neg = [-0.4, -0.9], [[-0.8, -1.1], [-0.5, -2.0]]
        zero_ref = [[0.0, 0.0], [0.0, 0.0]]
        loss, new_u, _ = losses.dft2_loss(t64(a_pos), t64(a_neg), t64([0.1, -0.2]), tau=0.3, gamma=0.9)
        want = reference(a_pos, a_neg, zero_ref, [0.1, -0.2], 0.3, 0.9)
        shares = "losses.dft2_loss, which shares dft_surrogate with DFT"
        close(new_u, want[1], f"{shares}: new_log_u (d = avg_logp/tau)", 1e-9)
        close(loss, want[0], f"{shares}: loss", 1e-9)

    return [("returns (loss, new_log_u, metrics); new_log_u detached, in log_u's dtype", returns),
            ("new_log_u: the moving average of d_j = s(y'_j)/tau - logp_0(y'_j)", new_log_u),
            ("value at the defaults (tau 1, gamma 0.85)", value),
            ("u is updated before the weights are computed", u_first),
            ("tau = 0.5 divides s(y'_j) only", tau),
            ("gradient: -1/N for the positive, w_j/(B N) for each negative", gradient),
            ("gamma = 1 forgets the old u", gamma_one),
            ("log-probs of long responses: no overflow", large),
            ("float32 log-probs with a float64 u table", float32),
            ("metrics: loss, log_u, w/mean, w/max, logp0/neg", metrics),
            ("DFT2 runs through the same dft_surrogate", dft2_shares_core)]


def run_case(m, c):
    tau, gamma = float(c.get("tau", 1.0)), float(c.get("gamma", 0.85))
    args = (c["pos"], c["neg"], c["ref_neg"], c["log_u"], tau, gamma)
    loss, new_u, _, p, n = run(m, *args[:4], grad=True, tau=tau, gamma=gamma)
    want, want_u, g_pos, g_neg = reference(*args)
    diagnose(new_u, want_u, "new_log_u", mistakes(args, 1), 1e-9)
    diagnose(loss, want, "loss", mistakes(args, 0), 1e-9)
    backward(loss, "dft_loss")
    close(grad_of(p, "pos_logps"), g_pos, "d loss / d pos_logps", 1e-9)
    close(grad_of(n, "neg_logps"), g_neg, "d loss / d neg_logps (are the weights w detached?)", 1e-9)
