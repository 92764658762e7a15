"""
The fine-tuning losses: SFT, DFT, DFT2, ASFT and DPO (and NLL, DFT's ablation), exactly as
docs/ALGORITHMS.md states them.

Every loss sees per-sequence log-probabilities, never logits, so it is independent of the model:
  logp(y|x)     summed log-prob of the scored tokens of response y (response tokens + EOT)
  n_tokens(y)   number of scored tokens;  avg_logp = logp / n_tokens (length-normalized)
  logp_0        the same under the frozen starting model pi_0 (base / reference), precomputed once
  pos / neg     the given answer y_i and its B sampled negatives y'_1..y'_B (shapes (N,), (N, B));
                DPO/ASFT call them chosen / rejected.
- SFT maximises the likelihood of the answers (token mean); NLL is the same as a mean over prompts
  (DFT without its negative term).
- DFT treats fine-tuning as picking the right answer among all answers: it pushes logp(y_i) up and
  the negatives' logp down, each negative weighted by w_j = exp(d_j - log_u_i), its share of the
  softmax normalizer (importance-weighted by pi_0). log_u_i is a per-prompt moving average of that
  normalizer; the caller keeps it in a table (one number per training prompt, starting at 0), passes
  the current values in and writes the returned new_log_u back. DFT2 is the same with avg_logp and
  no pi_0 term. At tau = 1 DFT's exact objective IS the sequence NLL (docs/ALGORITHMS.md, "What DFT
  is at tau = 1"): everything that tells it apart from SFT there is the estimator.
- DPO is the Bradley-Terry loss on reference-relative rewards; ASFT adds absolute-likelihood terms
  for chosen and rejected to SFT, without a reference model.
With SFT data + sampled negatives, DPO and ASFT pair the positive with each of its B negatives
(rejected of shape (N, B)) and average the N*B per-pair losses; preference data is B = 1, shape
(N,).

Conventions. Every loss returns a scalar `loss`, the mean over the batch's prompts (SFT: over its
scored tokens), and `metrics`: a dict of 0-d detached float32 tensors, so the trainer can all-reduce
them. Internal no-gradient state (d, log_u, w) is computed in float64.

The registry. `LOSSES[name]` is a LossSpec holding every decision the trainer needs about a loss:
which inputs it reads (`inputs`: each argument of its function and the batch key it takes), whether
the step's loss is a mean over prompts or over scored tokens (`step_mean`), whether it reads
length-normalized log-probs, whether it pairs with the "rejected" responses of a preference file,
and its hyperparameters (default, help text, valid range: train.py builds its --flags from them).
One call runs any of them:
    loss, new_log_u, metrics = compute_loss(name, batch, **hparams)
batch keys: pos (N,), pos_n (N,), neg (N, B), neg_n (N, B), ref_pos (N,), ref_neg (N, B): summed
logps and scored-token counts; log_u (N,) for the stateful losses. new_log_u is None for the others.

    python -m pytest -q tests/test_losses.py
    python -c "import torch, losses; print(losses.dpo_loss(*torch.zeros(4, 2).unbind(0))[0])"
"""
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F


def sequence_logps(logits, targets, mask):
    """logp(y|x) = sum_t mask[t] * log softmax(logits[t])[targets[t]], in float32.
    logits (N, T, V), targets (N, T) long, mask (N, T) bool -> logps (N,) float32, n_tokens (N,)
    long. Prompt and padding positions (mask False) contribute nothing, whatever their logits or
    targets."""
    logprobs = logits.float().log_softmax(dim=-1)                          # (N, T, V)
    token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)      # (N, T)
    # where, not multiply: a -inf at a masked position times 0 would be NaN
    token_lp = torch.where(mask, token_lp, torch.zeros_like(token_lp))
    return token_lp.sum(dim=1), mask.sum(dim=1)


def logmeanexp(x, dim=-1):
    """log mean_j exp(x_j) along dim; logsumexp subtracts the max first (an all -inf row gives
    -inf)."""
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


def _metric(x):  # a metric: detached float32 0-d mean
    return x.detach().float().mean()


def sft_loss(logps, n_tokens):
    """L_SFT = -(sum_i logp(y_i)) / (sum_i n_tokens(y_i)): a token mean, so a short example weighs
    no more than a long one. logps (N,), n_tokens (N,). The trainer makes the mean one over the
    whole optimizer step (all micro-batches and ranks): LOSSES["sft"].step_mean == "tokens".
    Metrics: loss, nll (= loss, the token mean of this batch)."""
    loss = -logps.sum() / n_tokens.sum()
    return loss, {"loss": loss.detach().float(), "nll": loss.detach().float()}


def _check_tau_gamma(tau, gamma):
    if not tau > 0 or not 0 < gamma <= 1:
        raise ValueError(f"need tau > 0 and 0 < gamma <= 1, got tau={tau} gamma={gamma}")


def nll_loss(logps):
    """L = -(1/N) sum_i logp(y_i): the sequence NLL, a mean over prompts (SFT's mean is over
    tokens). It is DFT without its negative term, and at tau = 1 it has the gradient of DFT's exact
    objective (docs/ALGORITHMS.md, "What DFT is at tau = 1"): the ablation that shows what DFT's
    estimator adds. logps (N,). Metrics: loss."""
    loss = -logps.mean()
    return loss, {"loss": loss.detach().float()}


# DFT's procedure, the part one step computes (negatives.py samples the negatives once, before
# training; train.py keeps one log_u per training prompt for the whole run and writes back the new
# values this step returns):
#   1. d_j: how much more the model now likes negative j than the sampler did (in log space)
#   2. u_i: a moving average, over the prompt's visits, of mean_j exp(d_j): the normalizer
#   3. w_j = exp(d_j) / u_i: negative j's share of the normalizer, a constant (no gradient)
#   4. L_i = -s(y_i) + (1/B) sum_j w_j s(y'_j): push the answer up, each negative down by its share


def dft_loss(pos_logps, neg_logps, neg_ref_logps, log_u, tau=1.0, gamma=0.85):
    """DFT with importance weights (docs/ALGORITHMS.md, "DFT"); s = logp (summed), and logp_0 =
    neg_ref_logps, the starting model's log-prob of each negative on the training prompt:
        d_j     = s(y'_j)/tau - logp_0(y'_j|x_i)                                 (no gradient)
        log_u_i <- logaddexp(log(1-gamma) + log_u_i, log(gamma) + logmeanexp_j d_j)
        w_j     = exp(d_j - log_u_i)                                             (no gradient)
        L_i     = -s(y_i) + (1/B) sum_j w_j s(y'_j),       loss = mean_i L_i
    pos_logps (N,), neg_logps (N, B), neg_ref_logps (N, B), log_u (N,) = the current u of these
    prompts. Returns (loss, new_log_u (N,) detached, in log_u's dtype, metrics). At the fixed point
    of u the surrogate's gradient is tau times the gradient of the objective
        -s(y_i)/tau + log mean_j exp(s(y'_j)/tau - logp_0(y'_j))
    (the positive is not divided by tau: the published implementation's convention, kept).
    Metrics: loss, logp0/neg, log_u (new), w/mean, w/max."""
    _check_tau_gamma(tau, gamma)
    d = neg_logps.detach().double() / tau - neg_ref_logps.detach().double()  # (N, B)
    loss, new_log_u, metrics = dft_surrogate(pos_logps, neg_logps, d, log_u, gamma)
    metrics["logp0/neg"] = _metric(neg_ref_logps)
    return loss, new_log_u, metrics


def dft2_loss(pos_avg_logps, neg_avg_logps, log_u, tau=0.3, gamma=0.9):
    """DFT2, reference-free and length-normalized (docs/ALGORITHMS.md, "DFT2"); s = avg_logp:
        d_j     = avg_logp(y'_j|x_i)/tau                                         (no gradient)
        log_u_i <- logaddexp(log(1-gamma) + log_u_i, log(gamma) + logmeanexp_j d_j)
        w_j     = exp(d_j - log_u_i)                                             (no gradient)
        L_i     = -avg_logp(y_i) + (1/B) sum_j w_j avg_logp(y'_j),   loss = mean_i L_i
    No base-model term: it drops the importance weight 1/pi_0(y'), so it needs no reference model.
    pos_avg_logps (N,), neg_avg_logps (N, B), log_u (N,). Returns (loss, new_log_u, metrics). At the
    fixed point of u the gradient is tau times that of  -a(y_i)/tau + log mean_j exp(a(y'_j)/tau).
    Metrics: loss, avg_logp/pos, avg_logp/neg, log_u (new), w/mean, w/max."""
    _check_tau_gamma(tau, gamma)
    d = neg_avg_logps.detach().double() / tau  # (N, B)
    loss, new_log_u, metrics = dft_surrogate(pos_avg_logps, neg_avg_logps, d, log_u, gamma)
    metrics.update({"avg_logp/pos": _metric(pos_avg_logps), "avg_logp/neg": _metric(neg_avg_logps)})
    return loss, new_log_u, metrics


def dft_surrogate(s_pos, s_neg, d, log_u, gamma):
    """The step DFT and DFT2 share, given d (N, B) float64 (no gradient):
        log_u_i <- update_log_u(log_u_i, d_i, gamma)
        w_j = exp(d_j - log_u_i);   L_i = -s(y_i) + (1/B) sum_j w_j s(y'_j);   loss = mean_i L_i"""
    # u is updated BEFORE w is computed, so the current negatives are part of the normalizer (this
    # also bounds w_j <= B/gamma); a prompt's u moves once per visit, i.e. once per epoch
    new_log_u = update_log_u(log_u.detach().double(), d, gamma)  # (N,)
    # w is a constant weight: the gradient flows only through s(y'_j)
    w = torch.exp(d - new_log_u.unsqueeze(1)).to(s_neg.dtype)  # (N, B)
    loss = (-s_pos + (w * s_neg).mean(dim=1)).mean()
    metrics = {"loss": loss.detach().float(), "log_u": _metric(new_log_u), "w/mean": _metric(w),
               # the batch's largest weight (train.py takes the maximum over the step)
               "w/max": w.detach().float().max()}
    return loss, new_log_u.to(log_u.dtype), metrics


def update_log_u(log_u, d, gamma):
    """The moving average u_i <- (1-gamma) u_i + gamma mean_j exp(d_j), kept in log space:
        log_u_i <- logaddexp(log(1-gamma) + log_u_i, log(gamma) + logmeanexp_j d_j)
    log_u (N,), d (N, B) -> (N,). It averages u, not log u: the log of a moving average, not a
    moving average of logs. No exp of a raw log-prob sum anywhere: both helpers subtract the max."""
    lme = logmeanexp(d, dim=1)  # (N,)
    if gamma == 1:  # log(1 - gamma) = -inf: the old u is forgotten entirely
        return lme
    return torch.logaddexp(math.log(1 - gamma) + log_u, math.log(gamma) + lme)


def _pairs(chosen, rejected):
    """chosen (N,) and rejected (N,) or (N, B) -> both (N, B): each chosen is paired with its B
    rejected."""
    rejected = rejected.unsqueeze(1) if rejected.dim() == 1 else rejected
    return chosen.unsqueeze(1).expand_as(rejected), rejected


# log(1 - exp(x)) has gradient -exp(x) / (1 - exp(x)), unbounded as x -> 0 (a rejected response the
# model is nearly sure of). x is clamped at X_MAX: past it the rejected-side gradient is exactly
# zero, and before it its size is at most lam * beta * exp(X_MAX) / (1 - exp(X_MAX)) ~= 999.5 * lam
# * beta.
X_MAX = -1e-3


def asft_loss(chosen_avg_logps, rejected_avg_logps, lam=0.1, beta=1.0):
    """ASFT; a = avg_logp, odds(x) = x - log(1 - exp(x)), beta scales the log-probs inside the odds:
        L = -a(y_w) - lam * [ log sigmoid(odds(beta a(y_w))) + log sigmoid(-odds(beta a(y_l))) ]
    beta = 1 (the default) is the published formula; the public turbo-alignment implementation uses
    beta = 0.1 and lam = 1.0. Computed through the identities log sigmoid(odds(x)) = x and
    log sigmoid(-odds(x)) = log(1 - exp(x)):
        L = -a(y_w) - lam * [beta a(y_w) + log(-expm1(beta a(y_l)))],
    exact and stable; beta a(y_l) is clamped at X_MAX = -1e-3, which bounds the rejected-side
    gradient (see X_MAX). chosen (N,), rejected (N,) or (N, B) (pairs, averaged; see module
    docstring). Metrics: loss, align (mean of the bracket), avg_logp/pos, avg_logp/neg."""
    a_w, a_l = _pairs(chosen_avg_logps, rejected_avg_logps)  # (N, B) each
    # log sigmoid(odds(beta a_w))
    log_sig_w = beta * a_w
    # log sigmoid(-odds(beta a_l))
    log_sig_l = torch.log(-torch.expm1((beta * a_l).clamp(max=X_MAX)))
    align = log_sig_w + log_sig_l
    loss = (-a_w - lam * align).mean()
    return loss, {"loss": loss.detach().float(), "align": _metric(align),
                  "avg_logp/pos": _metric(chosen_avg_logps),
                  "avg_logp/neg": _metric(rejected_avg_logps)}


def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1,
             label_smoothing=0.0):
    """DPO; s = logp (summed), s_0 = the reference (starting) model's, eps = label_smoothing:
        Delta = (s(y_w) - s_0(y_w)) - (s(y_l) - s_0(y_l))
        L = -(1 - eps) log sigmoid(beta Delta) - eps log sigmoid(-beta Delta)
    (TRL's form of the label smoothing up to v0.28)
    chosen/ref_chosen (N,), rejected/ref_rejected (N,) or (N, B) (pairs, averaged). Metrics
    (ecosystem names): rewards/chosen = beta (s(y_w) - s_0(y_w)), rewards/rejected, rewards/margins,
    rewards/accuracies (fraction of pairs with chosen reward > rejected). TRL's logps/chosen and
    logps/rejected are this repository's logp/pos and logp/neg, which compute_loss adds for every
    loss."""
    r_w, r_l = _pairs(beta * (chosen_logps - ref_chosen_logps.detach()),
                      beta * (rejected_logps - ref_rejected_logps.detach()))   # (N, B) each
    margin = r_w - r_l                                                         # beta * Delta
    eps = label_smoothing
    loss = (-(1 - eps) * F.logsigmoid(margin) - eps * F.logsigmoid(-margin)).mean()
    return loss, {"loss": loss.detach().float(), "rewards/chosen": _metric(r_w),
                  "rewards/rejected": _metric(r_l), "rewards/margins": _metric(margin),
                  "rewards/accuracies": _metric(r_w > r_l)}


# -----------------------------------------------------------------------------
# The registry: every per-loss decision the trainer and evaluator need


@dataclass(frozen=True)
class HParam:
    default: float
    help: str
    low: float = -math.inf      # valid range: low < value (or <=, with low_inclusive) ...
    high: float = math.inf      # ... and value <= high (or <, with high_exclusive)
    low_inclusive: bool = False
    high_exclusive: bool = False

    def check(self, flag, v):
        """Raise ValueError naming the flag and its valid range when v is outside it."""
        ok_low = v >= self.low if self.low_inclusive else v > self.low
        ok_high = v < self.high if self.high_exclusive else v <= self.high
        if not (ok_low and ok_high and math.isfinite(v)):
            low_op = "<=" if self.low_inclusive else "<"
            high_op = "<" if self.high_exclusive else "<="
            lo = "" if self.low == -math.inf else f"{self.low} {low_op} "
            hi = "" if self.high == math.inf else f" {high_op} {self.high}"
            raise ValueError(f"{flag} must satisfy {lo}{flag}{hi}, got {v}")


# the batch keys a loss may read
INPUTS = ("pos", "pos_n", "neg", "neg_n", "ref_pos", "ref_neg", "log_u")


@dataclass(frozen=True)
class LossSpec:
    fn: Callable
    # fn's argument name -> the batch key it takes (see INPUTS)
    inputs: dict
    # name -> HParam: fn's keyword arguments, and train.py's flags
    hparams: dict = field(default_factory=dict)
    # the step's loss is a mean over "prompts" or over scored "tokens"
    step_mean: str = "prompts"
    # pos/neg arrive as avg_logp = logp / n_tokens
    length_normalized: bool = False
    # on preference data its negative is the "rejected" response (B = 1)
    pairs_with_rejected: bool = False
    # train.py's default --lr: what the validation split chose for it on the built-in task
    # (README, Results; a test holds it to docs/results.json)
    lr: float = 3e-5

    @property
    def needs_negatives(self):
        return "neg" in self.inputs.values()

    @property
    def needs_ref(self):
        """Which sides need the starting model's log-probs: ("pos",), ("neg",), both or ()."""
        return tuple(side for side in ("pos", "neg") if f"ref_{side}" in self.inputs.values())

    @property
    def stateful(self):
        """It carries per-prompt state log_u (reads it and returns the new one)."""
        return "log_u" in self.inputs.values()

    @property
    def defaults(self):
        return {k: h.default for k, h in self.hparams.items()}


TAU = "temperature of DFT's softmax over answers; 1 makes its exact objective the sequence NLL"
GAMMA = "rate of the moving average u of the normalizer (1: no memory)"
LAM = "ASFT weight of the absolute-likelihood term"
ASFT_BETA = ("scale of the log-probs inside ASFT's odds (1: the published formula; the public "
             "implementation uses 0.1)")
DPO_BETA = "DPO inverse temperature on the reference-relative log-ratios"
SMOOTHING = HParam(0.0, "conservative-DPO label smoothing eps", low=0, high=0.5,
                   low_inclusive=True, high_exclusive=True)
LOSSES = {
    "sft": LossSpec(sft_loss, dict(logps="pos", n_tokens="pos_n"), step_mean="tokens", lr=1e-5),
    # not validated on its own: SFT's lr (the same objective, summed over an answer's tokens)
    "nll": LossSpec(nll_loss, dict(logps="pos"), lr=1e-5),
    "dft": LossSpec(
        dft_loss,
        dict(pos_logps="pos", neg_logps="neg", neg_ref_logps="ref_neg", log_u="log_u"),
        {"tau": HParam(1.0, TAU, low=0), "gamma": HParam(0.85, GAMMA, low=0, high=1)},
        lr=1e-5),
    "dft2": LossSpec(
        dft2_loss,
        dict(pos_avg_logps="pos", neg_avg_logps="neg", log_u="log_u"),
        {"tau": HParam(0.3, TAU, low=0), "gamma": HParam(0.9, GAMMA, low=0, high=1)},
        length_normalized=True, lr=10**-5.5),
    "asft": LossSpec(
        asft_loss,
        dict(chosen_avg_logps="pos", rejected_avg_logps="neg"),
        {"lam": HParam(0.1, LAM, low=0, low_inclusive=True), "beta": HParam(1.0, ASFT_BETA, low=0)},
        length_normalized=True, pairs_with_rejected=True, lr=1e-5),
    "dpo": LossSpec(
        dpo_loss,
        dict(chosen_logps="pos", rejected_logps="neg",
             ref_chosen_logps="ref_pos", ref_rejected_logps="ref_neg"),
        {"beta": HParam(0.1, DPO_BETA, low=0), "label_smoothing": SMOOTHING},
        pairs_with_rejected=True, lr=10**-5.5),
}


def compute_loss(name, batch, **hparams):
    """One call for every loss: (loss, new_log_u or None, metrics). batch keys as in the module
    docstring; hparams override LOSSES[name]'s defaults (unknown names are an error). Adds logp/pos
    and logp/neg, the summed log-probs, to every loss's metrics, so runs of different losses can be
    compared side by side."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}")
    spec = LOSSES[name]
    unknown = set(hparams) - set(spec.hparams)
    if unknown:
        raise ValueError(f"loss {name!r} has no hyperparameters {sorted(unknown)}; it takes "
                         f"{sorted(spec.hparams)}")
    missing = [k for k in spec.inputs.values() if k not in batch]
    if missing:
        raise ValueError(f"loss {name!r} reads batch keys {list(spec.inputs.values())}; "
                         f"missing {missing}")
    hp = {**spec.defaults, **hparams}
    for k, v in hp.items():
        spec.hparams[k].check(k, v)
    b = dict(batch)
    if spec.length_normalized:
        b["pos"] = b["pos"] / b["pos_n"]
        if "neg" in b:
            b["neg"] = b["neg"] / b["neg_n"]
    out = spec.fn(**{arg: b[key] for arg, key in spec.inputs.items()}, **hp)
    loss, new_log_u, metrics = out if spec.stateful else (out[0], None, out[1])
    metrics["logp/pos"] = _metric(batch["pos"])
    if "neg" in batch:
        metrics["logp/neg"] = _metric(batch["neg"])
    return loss, new_log_u, metrics
