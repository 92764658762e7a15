"""Your answers to exercise dft2_no_ref (questions: exercises/README.md): check them with
python -m exercises.check dft2_no_ref --impl THIS_FILE  (in the student edition, exercises/yours/dft2_no_ref.py
is checked without --impl). Each answer should come from an experiment: write the code that finds it here."""

ANSWERS = {
    "dft_inputs": None,    # set of batch keys compute_loss("dft", batch) reads, e.g. {"pos", ...}
    "dft2_inputs": None,   # the same for "dft2"
    "w_base": None,        # [w_1, w_2] for logp_0 = (-11, -11)
    "w_shifted": None,     # [w_1, w_2] for logp_0 = (-30, -30)
    "w_matched": None,     # [w_1, w_2] for logp_0 = (-10, -12)
    "train_function": None,  # the name of the train.py function whose work DFT needs and DFT2 skips
    "why": None,           # a few sentences: why does DFT2 need no reference model?
}
