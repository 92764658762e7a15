"""
Exercise dft_tau1: what DFT is at tau = 1, by enumerating every output of a toy model.

DFT's exact objective for one prompt x and its answer y is (docs/ALGORITHMS.md, "DFT")
    J(theta) = -s(y)/tau + log sum over ALL outputs y' of exp(s(y')/tau),     s = logp(.|x) under the model
The sum is intractable for a real model, which is why DFT samples negatives. Here it is not: the
checker's model has a vocabulary of 3 tokens and its outputs are exactly L = 4 tokens long (no
end-of-text), so there are 3^4 = 81 of them. Your file defines
  all_outputs(V, L)                         every output: a list of V**L sequences (lists of L token ids)
  exact_dft_objective(model, prompt, y, tau) J as a 0-d tensor with its gradient (model: a model.GPT
                                            whose outputs have len(y) tokens; prompt, y: lists of ids)
  ANSWERS = {"tau1": ..., "loss_name": ...} the questions of exercises/README.md ("what is DFT at tau = 1?")
and the checker compares J and its gradient at tau = 1 and tau = 0.5 with its own enumeration.

Hidden cases (--cases): {"name": ..., "seed": int, "V": int, "L": int, "tau": float, "prompt": [ids],
"y": [ids]}: a fresh toy model from the seed; value and gradient are compared.
"""
import itertools
import math

import torch

from exercises.lib import Fail, answers, choice, close, diagnose, expect, get, is_close

TITLE = "what is DFT at tau = 1? enumerate every output of a toy model and see"
TIME = 30
OBJECTIVE = "see that DFT's exact objective at tau = 1 is the sequence NLL, so only its estimator tells it from SFT"
READ = (("docs/ALGORITHMS.md", "What DFT is at tau = 1"), ("losses.py", "nll_loss"), ("model.py", "GPT"))
TARGETS = ()
NEEDS = ("all_outputs", "exact_dft_objective")
TAU1 = "878cf787d91fd4cb"
LOSS_NAME = "980f205e5a395ddc"
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


def scores(model, prompt, outputs):
    """s(y') for every output, by one batched forward: (len(outputs),) float64 with gradient."""
    P, V = len(prompt), model.config.vocab_size
    ids = torch.tensor([list(prompt) + list(y) for y in outputs])  # (K, P + L)
    pred = torch.log_softmax(model(ids)[:, P - 1:-1].double(), dim=-1)  # (K, L, V): the positions predicting y'
    return (pred * torch.nn.functional.one_hot(ids[:, P:], V)).sum(dim=(1, 2))  # (K,)


def reference(model, prompt, y, tau, sum_tau=True, pos_tau=True, mean=False):
    """J by enumeration; the keyword arguments compute the classic mistakes instead."""
    outs = [list(o) for o in itertools.product(range(model.config.vocab_size), repeat=len(y))]
    s_all, s_y = scores(model, prompt, outs), scores(model, prompt, [y])[0]
    inner = s_all / tau if sum_tau else s_all
    log_z = torch.logsumexp(inner, 0) - (math.log(len(outs)) if mean else 0.0)
    return -s_y / (tau if pos_tau else 1.0) + log_z


def value_and_grad(fn, model):
    model.zero_grad(set_to_none=True)
    out = fn()
    expect(isinstance(out, torch.Tensor) and out.dim() == 0, f"exact_dft_objective should return a 0-d tensor, got {out!r}")
    if not out.requires_grad:
        raise Fail("exact_dft_objective carries no gradient: compute it from the model's output with torch ops")
    out.backward()
    g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in model.parameters()])
    return out.detach(), g


def compare(m, model, prompt, y, tau):
    got, g_got = value_and_grad(lambda: m.exact_dft_objective(model, list(prompt), list(y), tau), model)
    want, g_want = value_and_grad(lambda: reference(model, prompt, y, tau), model)
    wrong = [(reference(model, prompt, y, tau, mean=True).detach(), "a logmeanexp: the normalizer is a SUM over all "
              "outputs (at tau = 1 it is sum_y' pi(y'|x) = 1)"),
             (reference(model, prompt, y, tau, pos_tau=False).detach(), "the positive is -s(y)/tau: divide it by tau too"),
             (reference(model, prompt, y, tau, sum_tau=False).detach(), "inside the sum it is exp(s(y')/tau)")]
    diagnose(got, want, f"J at tau = {tau}", wrong, 1e-5)
    if not is_close(g_got, g_want, 1e-4):
        _, g_nll = value_and_grad(lambda: -scores(model, prompt, [y])[0] / tau, model)
        if tau != 1 and is_close(g_got, g_nll, 1e-4):
            raise Fail(f"at tau = {tau} the gradient is only the positive's: the log-normalizer must carry gradient "
                       "(no torch.no_grad or .detach() on it)")
        close(g_got, g_want, f"d J / d parameters at tau = {tau}", 1e-4)


def checks(m, opts):
    model = toy_model()

    def outputs():
        for V, L in ((3, 2), (3, 4), (2, 3)):
            got = [tuple(int(t) for t in o) for o in m.all_outputs(V, L)]
            want = set(itertools.product(range(V), repeat=L))
            expect(all(len(o) == L for o in got), f"all_outputs({V}, {L}): every output has exactly {L} tokens")
            expect(len(set(got)) == len(got), f"all_outputs({V}, {L}) lists some outputs twice")
            expect(set(got) == want, f"all_outputs({V}, {L}) has {len(set(got))} outputs, expected all {V}**{L} = "
                   f"{len(want)}: tokens may repeat (every sequence of {L} ids from range({V}), e.g. itertools.product)")

    def normalizer():
        got, _ = value_and_grad(lambda: m.exact_dft_objective(model, PROMPT, Y, 1.0), model)
        nll = -scores(model, PROMPT, [Y])[0].detach()
        diagnose(got, nll, "J at tau = 1 against the sequence NLL -logp(y|x) (the normalizer sums pi(y'|x) over all "
                 "outputs: 1)", [(nll - 4 * math.log(3), "a logmeanexp: the normalizer is a SUM over all outputs")], 1e-5)

    def grad_tau1():
        _, g = value_and_grad(lambda: m.exact_dft_objective(model, PROMPT, Y, 1.0), model)
        _, g_nll = value_and_grad(lambda: -scores(model, PROMPT, [Y])[0], model)
        close(g, g_nll, "d J / d parameters at tau = 1 against the NLL's gradient (d log Z = E_pi[d log pi] = 0)", 1e-4)

    def tau_half():
        compare(m, model, PROMPT, Y, 0.5)

    def other_model():
        compare(m, toy_model(seed=3, V=2, L=5), [0, 1, 1], [1, 0, 0, 1, 1], 0.7)

    def questions():
        a = answers(m)
        choice(a, "dft_tau1", "tau1", ("a", "b", "c", "d"), TAU1, "at tau = 1 what is the sum over all outputs of "
               "exp(s(y'))? Then what is left of J, and of its gradient?")

    def loss_name():
        got = str(get(answers(m), "loss_name")).strip()
        import losses
        expect(got in losses.LOSSES, f'ANSWERS["loss_name"] should name an entry of losses.LOSSES, got {got!r}')
        choice(answers(m), "dft_tau1", "loss_name", tuple(losses.LOSSES), LOSS_NAME,
               "which loss of losses.py is -logp(y|x), averaged over the prompts?")

    return [("all_outputs lists every output once", outputs),
            ("at tau = 1, J is the sequence NLL", normalizer),
            ("at tau = 1, J has the NLL's gradient", grad_tau1),
            ("at tau = 0.5: value and gradient of the sharpened objective", tau_half),
            ("another toy model (V = 2, L = 5, tau = 0.7)", other_model),
            ("what is DFT at tau = 1? (multiple choice)", questions),
            ("the loss in losses.LOSSES with DFT's exact objective at tau = 1", loss_name)]


def run_case(m, c):
    model = toy_model(int(c.get("seed", 0)), int(c.get("V", 3)), int(c.get("L", 4)))
    compare(m, model, c.get("prompt", PROMPT), c.get("y", Y), float(c.get("tau", 1.0)))
