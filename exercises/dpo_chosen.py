"""
Exercise dpo_chosen: why DPO can lower the log-prob of the very answer it prefers.

DPO's loss depends only on the margin Delta = (s_w - s0_w) - (s_l - s0_l): it falls whenever the
rejected falls faster than the chosen, including when both fall. With shared parameters theta, one
gradient step of size lr changes the chosen's log-prob s_w, to first order, by
    lr * (-dL/dtheta) . g_w,    g_w = ds_w/dtheta,  g_l = ds_l/dtheta,  dL/dtheta = -beta sigmoid(-m) (g_w - g_l)
with m = beta * Delta. Your file defines
  chosen_change(g_w, g_l, margin, beta, lr)  that first-order change of s_w (a float or 0-d tensor), for
                                             1-D tensors g_w, g_l and the current margin m = beta * Delta
  make_case()                                (chosen, rejected): two token lists for the checker's toy model
                                             (below) in which 20 steps of gradient descent on DPO lower the
                                             loss AND the chosen's log-prob
  ANSWERS = {"why": ..., "predict": ...}     the questions of exercises/README.md
The toy model: one prompt, a unigram softmax over V = 5 tokens, s(y) = sum_t log softmax(theta)[y_t],
theta = 0 at the start and as the reference; plain gradient descent, lr 0.5, beta 0.5.
"""
import torch
import torch.nn.functional as F

from exercises.lib import Fail, answers, choice, diagnose, expect, fmt, get, sigmoid, word

TITLE = "why does DPO lower the chosen log-prob? predict it, then build a case where it happens"
TIME = 30
OBJECTIVE = "see that a relative objective can lower both likelihoods, and predict when from the gradients"
READ = (("docs/ALGORITHMS.md", "DPO"), ("README.md", "Results"), ("losses.py", "LOSSES"))
TARGETS = ()
NEEDS = ("chosen_change", "make_case")
V, LR, BETA, STEPS = 5, 0.5, 0.5, 20
WHY = "14123356b9f796ec"


def s_of(theta, y):
    return torch.log_softmax(theta, 0)[torch.tensor(y)].sum()


def dpo_steps(chosen, rejected, steps=STEPS, lr=LR, beta=BETA):
    """Gradient descent on the toy model's DPO loss -> [(loss, s_w, s_l, theta)] before each step and after the last."""
    theta, ref = torch.zeros(V, dtype=torch.float64, requires_grad=True), torch.zeros(V, dtype=torch.float64)
    s0w, s0l = s_of(ref, chosen), s_of(ref, rejected)
    hist = []
    for _ in range(steps + 1):
        sw, sl = s_of(theta, chosen), s_of(theta, rejected)
        loss = -F.logsigmoid(beta * ((sw - s0w) - (sl - s0l)))
        hist.append((loss.item(), sw.item(), sl.item(), theta.detach().clone()))
        g, = torch.autograd.grad(loss, theta)
        theta = (theta - lr * g).detach().requires_grad_()
    return hist


def grads(theta, y):
    t = theta.clone().requires_grad_()
    g, = torch.autograd.grad(s_of(t, y), t)
    return g


def formula(g_w, g_l, margin, beta, lr, sign=1.0, sig=None):
    s = sigmoid(-margin) if sig is None else sig
    return sign * lr * beta * s * float(g_w @ g_w - g_w @ g_l)


def call(m, g_w, g_l, margin, beta, lr):
    out = m.chosen_change(g_w.clone(), g_l.clone(), margin, beta, lr)
    try:
        return float(out)
    except (TypeError, ValueError, RuntimeError):
        raise Fail(f"chosen_change should return a number (a float or a 0-d tensor), got {out!r}") from None


def case(m):
    out = m.make_case()
    ok = (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(y, (list, tuple)) and y and all(
        type(t) is int and 0 <= t < V for t in y) for y in out))
    expect(ok, f"make_case() should return (chosen, rejected): two non-empty lists of token ids in range({V}), got {out!r}")
    expect(list(out[0]) != list(out[1]), "chosen and rejected are the same answer: the margin is always 0 and nothing moves")
    return list(out[0]), list(out[1])


def checks(m, opts):
    def formula_check():
        g = torch.Generator().manual_seed(5)
        g_w, g_l = torch.randn(7, generator=g, dtype=torch.float64), torch.randn(7, generator=g, dtype=torch.float64)
        for margin, beta, lr in ((0.3, 0.5, 0.1), (-1.2, 2.0, 0.01)):
            want = formula(g_w, g_l, margin, beta, lr)
            diagnose(call(m, g_w, g_l, margin, beta, lr), want, f"chosen_change at margin {margin}, beta {beta}, lr {lr}", [
                (-want, "the sign is flipped: gradient DEScent moves theta by -lr dL/dtheta"),
                (formula(g_w, g_l, margin, beta, lr, sig=sigmoid(margin)), "dL/dm = -sigmoid(-m), not -sigmoid(m): "
                 "the worse the margin, the larger the step"),
                (formula(g_w, g_l, margin, 1.0, lr), "beta is missing: dL/dtheta = -beta sigmoid(-m) (g_w - g_l)"),
                (lr * beta * sigmoid(-margin) * float(g_w @ g_w), "the rejected's gradient is missing: the loss moves "
                 "theta along g_w - g_l, and the chosen's change is that step dotted with g_w")], 1e-6)

    def predicts_a_step():
        chosen, rejected = [0, 1], [0, 0, 2]
        hist = dpo_steps(chosen, rejected, steps=1, lr=1e-4)
        theta, margin = hist[0][3], 0.0
        pred = call(m, grads(theta, chosen), grads(theta, rejected), margin, BETA, 1e-4)
        actual = hist[1][1] - hist[0][1]
        expect(abs(pred - actual) <= 1e-3 * abs(actual) + 1e-12, f"chosen_change predicts {pred:.6g} for one step of lr "
               f"1e-4 on the toy model (chosen {chosen}, rejected {rejected}); the step itself changes s_w by {actual:.6g}")

    def loss_falls():
        hist = dpo_steps(*case(m))
        expect(hist[-1][0] < hist[0][0] - 1e-6, f"the DPO loss does not fall in your case ({hist[0][0]:.4f} -> "
               f"{hist[-1][0]:.4f}): chosen and rejected must differ in a way theta can separate")

    def chosen_falls():
        chosen, rejected = case(m)
        hist = dpo_steps(chosen, rejected)
        expect(hist[-1][1] < hist[0][1] - 1e-6, f"in your case the chosen's log-prob rises ({hist[0][1]:.4f} -> "
               f"{hist[-1][1]:.4f}): it falls only when g_w . g_l > |g_w|^2, when the rejected shares the chosen's "
               "tokens (and uses them more): pushing the rejected down then drags the chosen down with it")

    def predicted_fall():
        chosen, rejected = case(m)
        theta = torch.zeros(V, dtype=torch.float64)
        pred = call(m, grads(theta, chosen), grads(theta, rejected), 0.0, BETA, LR)
        expect(pred < 0, f"your chosen_change predicts {fmt(pred)} for the first step of your own case: it should "
               "predict the fall you built (check the formula on this case)")

    def why():
        choice(answers(m), "dpo_chosen", "why", ("a", "b", "c", "d"), WHY, "what does DPO's loss depend on, and what "
               "does lowering the rejected do to the chosen when they share parameters?")

    def predict():
        from exercises.sft_vs_dft import reference, trends
        got, want = word(get(answers(m), "predict")), trends(reference())["dpo_logp_pos"]
        expect(got in ("up", "down", "same"), f'ANSWERS["predict"] should be "up", "down" or "same", got {got!r}')
        expect(got == want, f'ANSWERS["predict"] = {got!r}, but the instructor\'s short DPO runs on the built-in task '
               "(exercise sft_vs_dft, exercises/reference_numbers.json) say otherwise: compare dpo/logp_pos with "
               "before/logp_pos, and dpo/chosen_vs_ref")

    return [("chosen_change: the first-order change of s_w after one DPO step", formula_check),
            ("chosen_change predicts a small step of the toy model", predicts_a_step),
            ("your case: the DPO loss falls over 20 steps", loss_falls),
            ("your case: ... while the chosen's log-prob falls too", chosen_falls),
            ("your chosen_change predicts that fall", predicted_fall),
            ("why does DPO lower the chosen log-prob? (multiple choice)", why),
            ("predict: a short DPO run on the built-in task, held-out logp(chosen)", predict)]
