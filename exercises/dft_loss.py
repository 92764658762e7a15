"""
Exercise dft_loss: DFT's loss, value and gradient (docs/ALGORITHMS.md, "DFT").

Write losses.dft_loss(pos_logps, neg_logps, neg_ref_logps, log_u, tau=1.0, gamma=0.85), the step it
shares with DFT2, losses.dft_surrogate, and losses.dft2_loss (DFT2: the same step on avg_logp, no
logp_0), so that for each prompt i with B negatives
    d_j     = s(y'_j)/tau - logp_0(y'_j)                         (no gradient)
    log_u_i <- the moving average of update_log_u (exercise u_update), with THIS batch's d
    w_j     = exp(d_j - new log_u_i)                              (no gradient)
    L_i     = -s(y_i) + (1/B) sum_j w_j s(y'_j),    loss = mean_i L_i
and (loss, new_log_u, metrics) comes back. The surrogate L has the right gradient only if d, log_u and
w are constants: a w that carries gradient gives the same loss value and the wrong gradient.

    python -m exercises.check dft_loss

Cases (--cases; the public ones: exercises/cases/dft_loss.json): {"name": ..., "pos": [N], "neg":
[N][B], "ref_neg": [N][B], "log_u": [N], "tau": float, "gamma": float}; add "loss": "dft2" (and no
ref_neg) for dft2_loss. Loss, new_log_u and gradients are compared.
"""
import torch

from exercises.lib import (Fail, backward, case_checks, check_metrics, close, diagnose, expect, fmt, grad_of,
                           is_close, loss_and_metrics, mistakes_of, t64)

TITLE = "DFT's loss: u first, then constant weights w (value and gradient)"
TIME = 30
OBJECTIVE = "build a surrogate loss whose gradient is the objective's: what must carry no gradient, and in which order"
READ = (("docs/ALGORITHMS.md", "DFT"), ("losses.py", "LOSSES"), ("train.py", "train_step"))
TARGETS = (("losses", "dft_surrogate"), ("losses", "dft_loss"), ("losses", "dft2_loss"))
NEEDS = ("dft_loss",)


def run(m, c, grad=False, dtype=torch.float64):
    """Call dft_loss (or dft2_loss) on case c -> (loss, new_log_u, metrics, pos, neg)."""
    p, n = (torch.tensor(c[k], dtype=dtype, requires_grad=grad) for k in ("pos", "neg"))
    kw = {k: float(c[k]) for k in ("tau", "gamma") if k in c}
    if c.get("loss") == "dft2":
        import losses
        fn = getattr(m, "dft2_loss", None) or losses.dft2_loss
        out = fn(p, n, t64(c["log_u"]), **kw)
    else:
        out = m.dft_loss(p, n, torch.tensor(c["ref_neg"], dtype=dtype), t64(c["log_u"]), **kw)
    name = "dft2_loss" if c.get("loss") == "dft2" else "dft_loss"
    loss, new_u, met = loss_and_metrics(out, name, 3)
    expect(isinstance(new_u, torch.Tensor) and tuple(new_u.shape) == (len(c["pos"]),), f"{name} should return "
           f"new_log_u, a tensor of shape (N,) = ({len(c['pos'])},), got {new_u!r}")
    return loss, new_u, met, p, n


def compare(m, c, want):
    """Case c against want = {"new_log_u", "loss", "g_pos", "g_neg", "mistakes"[, "metrics"]}."""
    loss, new_u, met, p, n = run(m, c, grad=True)
    shown = ", ".join(f"{k} = {c[k]}" for k in ("tau", "gamma") if k in c) or "the defaults"
    shown += ", dft2_loss" if c.get("loss") == "dft2" else ""
    expect(bool(torch.isfinite(loss)) and bool(torch.isfinite(new_u).all()), "exp of a raw log-prob sum over- or "
           f"underflows: stay in log space (loss {fmt(loss)}, new_log_u {fmt(new_u)} at {shown})")
    diagnose(new_u, want["new_log_u"], f"new_log_u at {shown}", mistakes_of(want, "new_log_u"), 1e-9,
             "new_log_u is update_log_u(log_u, d, gamma) with d_j = s(y'_j)/tau - logp_0(y'_j)")
    diagnose(loss, want["loss"], f"loss at {shown}", mistakes_of(want, "loss"), 1e-9,
             "L_i = -s(y_i) + (1/B) sum_j w_j s(y'_j), w_j = exp(d_j - new log_u_i), mean over prompts")
    backward(loss, c.get("loss", "dft") + "_loss")
    close(grad_of(p, "pos_logps"), want["g_pos"], "d loss / d pos_logps", 1e-9,
          "the positive's gradient is -1/N for every prompt (the positive is not divided by tau)")
    if not is_close(grad_of(n, "neg_logps"), want["g_neg"], 1e-9):
        raise Fail("the weights w carry gradient: detach them (d, log_u and w are constants of the surrogate "
                   f"loss; the loss value is right but d loss / d neg_logps is {fmt(n.grad)}, expected "
                   f"{fmt(want['g_neg'])})")
    if "metrics" in want:
        check_metrics(met, want["metrics"], "dft_loss")


def checks(m, opts):
    base = {"pos": [-7.0, -3.5, -10.0], "neg": [[-8.0, -5.0], [-4.0, -11.0], [-2.5, -9.0]],
            "ref_neg": [[-8.5, -4.0], [-5.0, -10.5], [-3.0, -8.0]], "log_u": [0.3, -0.4, 1.2]}

    def returns():
        _, new_u, _, _, _ = run(m, base, grad=True)
        expect(not new_u.requires_grad, "new_log_u carries gradient: it is state that train.py writes into its table "
               "(compute it from detached values)")
        expect(new_u.dtype == torch.float64, f"new_log_u should come back in log_u's dtype (float64), got {new_u.dtype}")

    def float32():
        loss, new_u, _, _, _ = run(m, base, dtype=torch.float32)
        expect(loss.dtype == torch.float32 and new_u.dtype == torch.float64, "with float32 log-probs (the model's) "
               f"and a float64 log_u table: expected a float32 loss and a float64 new_log_u, got {loss.dtype}, "
               f"{new_u.dtype}")
        want, _, _, _, _ = run(m, base)  # your own function, in float64
        close(loss, want, "loss from float32 log-probs against the same numbers in float64", 1e-5,
              "compute d, u and w in float64 (from detached values), then cast w to the log-probs' dtype")

    return [("returns (loss, new_log_u, metrics); new_log_u detached, in log_u's dtype", returns)] + \
        case_checks("dft_loss", compare, m) + [("float32 log-probs with a float64 u table", float32)]
