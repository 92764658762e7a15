"""
Exercise dft_gradient: the gradient of DFT's surrogate loss, at u's fixed point and away from it.

DFT minimises, per prompt, the objective (docs/ALGORITHMS.md, "DFT"; losses.dft_loss's docstring)
    J = -s(y)/tau + log mean_j exp(d_j),      d_j = s(y'_j)/tau - logp_0(y'_j)
but what it differentiates is the surrogate
    L = -s(y) + (1/B) sum_j w_j s(y'_j),      w_j = exp(d_j - log_u)  (a constant: no gradient)
The claim to derive: when u sits at its fixed point, log_u = log mean_j exp(d_j) (gamma = 1, or a
converged moving average), the gradient of L is exactly tau times the gradient of J; away from it,
the negatives' part is scaled by exp(-(log_u - fixed point)) and the two are no longer proportional.

One prompt, B = 3 negatives: s(y) = -8, s(y'_j) = (-10, -12, -11), logp_0(y'_j) = (-9, -13, -12),
tau = 0.5. Compute with torch.autograd (or by hand, then check with autograd), in ANSWERS:
  grad_surrogate  [dL/ds(y), dL/ds(y'_1), dL/ds(y'_2), dL/ds(y'_3)], log_u at its fixed point
  grad_objective  [dJ/ds(y), dJ/ds(y'_1), dJ/ds(y'_2), dJ/ds(y'_3)]
  ratio           the number r with grad_surrogate = r * grad_objective
  ratio_off       dL/ds(y'_1) / dJ/ds(y'_1) when log_u is 1.0 ABOVE its fixed point (a stale u)
  derivation      written: derive r by hand in a few lines, and say what ratio_off means for
                  training (graded by the teacher with the rubric)

    python -m exercises.check dft_gradient

A student's copy checks the form of the answers and that they agree with each other; the teacher's
copy checks the numbers.
"""
from exercises.lib import answers, expect, number, numbers, written_check

TITLE = "the gradient of DFT's surrogate is tau times the objective's, at u's fixed point only"
TIME = 25
OBJECTIVE = ("derive what a surrogate loss's gradient equals, and when: constants, fixed points "
             "and a factor tau")
READ = (("docs/ALGORITHMS.md", "DFT"), ("train.py", "train_step"))
TARGETS = ()
NEEDS = ()
S_POS, S_NEG, LOGP0, TAU = -8.0, [-10.0, -12.0, -11.0], [-9.0, -13.0, -12.0], 0.5


def checks(m, opts):
    def filled():
        a = answers(m)
        numbers(a, "grad_surrogate", 4)
        numbers(a, "grad_objective", 4)
        number(a, "ratio")
        number(a, "ratio_off")

    def consistent():
        a = answers(m)
        gs, go = numbers(a, "grad_surrogate", 4), numbers(a, "grad_objective", 4)
        r = number(a, "ratio")
        bad = [k for k in range(4) if abs(gs[k] - r * go[k]) > 1e-4 * max(1.0, abs(gs[k]))]
        expect(not bad, f"your numbers disagree with each other: grad_surrogate = {gs} is not "
               f"ratio * grad_objective = {[round(r * x, 6) for x in go]} at entries {bad} (at the "
               "fixed point the two gradients are proportional, the positive's entry included)")

    def stale():
        a = answers(m)
        r, off = number(a, "ratio"), number(a, "ratio_off")
        expect(abs(off - r) > 1e-3, "ratio_off equals ratio: with log_u 1.0 above its fixed point "
               "the weights w_j = exp(d_j - log_u) change, so the negatives' gradients do too")

    return [("the four answers are filled in", filled),
            ("grad_surrogate = ratio * grad_objective, entry by entry", consistent),
            ("a stale u changes the negatives' gradients", stale),
            written_check(m, "derivation", "the ratio, derived, and what a stale u does", 30)]
