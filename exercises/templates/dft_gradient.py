"""Your answers to exercise dft_gradient (questions: exercises/dft_gradient.py and
exercises/README.md): check them with  python -m exercises.check dft_gradient --impl THIS_FILE
(in the student edition, exercises/yours/dft_gradient.py is checked without --impl). Compute the
gradients with torch.autograd, holding w constant."""
import torch

# s(y), s(y'_j), logp_0(y'_j), tau
S_POS, S_NEG, LOGP0, TAU = -8.0, [-10.0, -12.0, -11.0], [-9.0, -13.0, -12.0], 0.5

ANSWERS = {
    "grad_surrogate": None,  # [dL/ds(y), dL/ds(y'_1), dL/ds(y'_2), dL/ds(y'_3)], u at rest
    "grad_objective": None,  # [dJ/ds(y), dJ/ds(y'_1), dJ/ds(y'_2), dJ/ds(y'_3)]
    "ratio": None,           # r with grad_surrogate = r * grad_objective
    "ratio_off": None,       # dL/ds(y'_1) / dJ/ds(y'_1) with log_u 1.0 above its fixed point
    "derivation": None,      # a few lines: derive r by hand; what ratio_off means for training
}
