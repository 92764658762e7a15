"""
Exercise dft_tau1: what DFT is at tau = 1, by enumerating every output of a toy model, then by hand.

DFT's exact objective for one prompt x and its answer y is (docs/ALGORITHMS.md, "DFT")
    J(theta) = -s(y)/tau + log Z,   Z = sum over ALL outputs y' of exp(s(y')/tau),   s = logp(.|x)
The sum is intractable for a real model, which is why DFT samples negatives. Here it is not: the
checker's model has a vocabulary of 3 tokens and its outputs are exactly L = 4 tokens long (no
end-of-text), so there are 3^4 = 81 of them. Your file defines
  all_outputs(V, L)                         every output: a list of V**L sequences (lists of L token ids)
  exact_dft_objective(model, prompt, y, tau) J as a 0-d tensor with its gradient (model: a model.GPT
                                            whose outputs have len(y) tokens; prompt, y: lists of ids)
  ANSWERS = {...}                           the derivation, below
and the checker compares J and its gradient with the sequence NLL at tau = 1 and with stored values
at other tau. Then derive it (exercises/README.md, exercise dft_tau1):
  log_z_tau1   the value of log Z at tau = 1, for ANY model and prompt (a number)
  grad_log_z   the size of the gradient of log Z with respect to theta at tau = 1 (a number)
  loss_name    the entry of losses.LOSSES whose objective is DFT's exact objective at tau = 1
  tau1         written: the derivation, in a few lines (graded by the teacher with the rubric)

    python -m exercises.check dft_tau1

Cases (--cases; the public ones: exercises/cases/dft_tau1.json): {"name": ..., "seed": int, "V": int,
"L": int, "tau": float, "prompt": [ids], "y": [ids]}: a fresh toy model from the seed; value and
gradient are compared.
"""
import torch

from exercises.lib import (Fail, answers, case_checks, close, diagnose, expect, get, is_close, mistakes_of,
                           number, written_check)

TITLE = "what is DFT at tau = 1? enumerate every output of a toy model, then derive it"
TIME = 30
OBJECTIVE = "see that DFT's exact objective at tau = 1 is the sequence NLL, so only its estimator tells it from SFT"
READ = (("docs/ALGORITHMS.md", "What DFT is at tau = 1"), ("losses.py", "nll_loss"), ("model.py", "GPT"))
TARGETS = ()
NEEDS = ("all_outputs", "exact_dft_objective")
PROMPT, Y = [1, 0], [2, 1, 1, 0]


def toy_model(seed=0, V=3, L=4):
    """A one-layer GPT in float64 with large weights, so its output distribution is far from uniform."""
    from model import GPT, GPTConfig

    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=16, vocab_size=V, n_layer=1, n_head=2, n_embd=8)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.8)
    return model


def s_of(model, prompt, y):
    """log pi(y | prompt) of ONE output, summed over its tokens (the logits at position t predict t + 1)."""
    ids = torch.tensor([list(prompt) + list(y)])
    pred = torch.log_softmax(model(ids)[0, len(prompt) - 1:-1].double(), dim=-1)  # (L, V)
    return pred.gather(-1, ids[0, len(prompt):, None]).sum()


def value_and_grad(fn, model):
    model.zero_grad(set_to_none=True)
    out = fn()
    expect(isinstance(out, torch.Tensor) and out.dim() == 0, f"exact_dft_objective should return a 0-d tensor, got {out!r}")
    if not out.requires_grad:
        raise Fail("exact_dft_objective carries no gradient: compute it from the model's output with torch ops")
    out.backward()
    g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in model.parameters()])
    return out.detach(), g


def compare(m, c, want):
    """Case c against want = {"J", "grad" (over model.parameters(), flattened), "mistakes"}."""
    model, tau = toy_model(int(c.get("seed", 0)), int(c.get("V", 3)), int(c.get("L", 4))), float(c.get("tau", 1.0))
    prompt, y = list(c.get("prompt", PROMPT)), list(c.get("y", Y))
    got, g_got = value_and_grad(lambda: m.exact_dft_objective(model, prompt, y, tau), model)
    diagnose(got, want["J"], f"J at tau = {tau}", mistakes_of(want, "J"), 1e-5,
             "J = -s(y)/tau + logsumexp over every output of s(y')/tau, s summing the output's tokens only")
    if not is_close(g_got, want["grad"], 1e-4):
        _, g_nll = value_and_grad(lambda: -s_of(model, prompt, y) / tau, model)
        if tau != 1 and is_close(g_got, g_nll, 1e-4):
            raise Fail(f"at tau = {tau} the gradient is only the positive's: the log-normalizer must carry gradient "
                       "(no torch.no_grad or .detach() on it)")
        close(g_got, want["grad"], f"d J / d parameters at tau = {tau}", 1e-4, "the value is right but not the "
              "gradient: something on the way is detached")


def checks(m, opts):
    model = toy_model()

    def outputs():
        import itertools
        for V, L in ((3, 2), (3, 4), (2, 3)):
            got = [tuple(int(t) for t in o) for o in m.all_outputs(V, L)]
            want = set(itertools.product(range(V), repeat=L))
            expect(all(len(o) == L for o in got), f"all_outputs({V}, {L}): every output has exactly {L} tokens")
            expect(len(set(got)) == len(got), f"all_outputs({V}, {L}) lists some outputs twice")
            expect(set(got) == want, f"all_outputs({V}, {L}) has {len(set(got))} outputs, expected all {V}**{L} = "
                   f"{len(want)}: tokens may repeat (every sequence of {L} ids from range({V}))")

    def normalizer():
        got, _ = value_and_grad(lambda: m.exact_dft_objective(model, PROMPT, Y, 1.0), model)
        nll = -s_of(model, PROMPT, Y).detach()
        diagnose(got, nll, "J at tau = 1 against the sequence NLL -logp(y|x)", [(nll - 4 * torch.log(torch.tensor(
            3.0, dtype=torch.float64)), "a logmeanexp: the normalizer is a SUM over all outputs")], 1e-5,
                 "at tau = 1 the normalizer sums pi(y'|x) over every output: 1, so J is the NLL; check which "
                 "positions you score (the logits at position t predict token t + 1) and that you sum every output")

    def grad_tau1():
        _, g = value_and_grad(lambda: m.exact_dft_objective(model, PROMPT, Y, 1.0), model)
        _, g_nll = value_and_grad(lambda: -s_of(model, PROMPT, Y), model)
        close(g, g_nll, "d J / d parameters at tau = 1 against the NLL's gradient", 1e-4,
              "at tau = 1 the log-normalizer's gradient is E_pi[grad log pi] = 0: only the positive's remains")

    def derivation():
        a = answers(m)
        for key in ("log_z_tau1", "grad_log_z"):
            number(a, key)
        import losses
        name = str(get(a, "loss_name")).strip()
        expect(name in losses.LOSSES, f'ANSWERS["loss_name"] should name an entry of losses.LOSSES '
               f"({', '.join(losses.LOSSES)}), got {name!r}")

    return [("all_outputs lists every output once", outputs),
            ("at tau = 1, J is the sequence NLL", normalizer),
            ("at tau = 1, J has the NLL's gradient", grad_tau1)] + case_checks("dft_tau1", compare, m) + [
        ("the derivation: log Z and its gradient at tau = 1, the loss with that objective", derivation),
        written_check(m, "tau1", "what is DFT at tau = 1? (the derivation)", 30)]
