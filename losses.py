"""
The fine-tuning losses: SFT, DFT, DFT2, ASFT and DPO, exactly as /work/shared/ALGORITHMS.md states them.

Every loss sees per-sequence log-probabilities, never logits, so it is independent of the model:
  logp(y|x)     summed log-prob of the scored tokens of response y (response tokens + EOT)
  n_tokens(y)   number of scored tokens;  avg_logp = logp / n_tokens (length-normalized)
  logp_0        the same under the frozen starting model pi_0 (base / reference), precomputed once
  pos / neg     the given answer y_i and its B sampled negatives y'_1..y'_B (shapes (N,), (N, B));
                DPO/ASFT call them chosen / rejected.
- SFT maximises the likelihood of the answers (token mean).
- DFT treats fine-tuning as picking the right answer among all answers: it pushes logp(y_i) up and
  the negatives' logp down, each negative weighted by w_j = exp(d_j - log_u_i), its share of the
  softmax normalizer (importance-weighted by pi_0). log_u_i is a per-prompt moving average of that
  normalizer; the caller keeps it in a table (one number per training prompt, starting at 0), passes
  the current values in and writes the returned new_log_u back. DFT2 is the same with avg_logp and
  no pi_0 term.
- DPO is the Bradley-Terry loss on reference-relative rewards; ASFT adds absolute-likelihood terms
  for chosen and rejected to SFT, without a reference model.
With SFT data + sampled negatives, DPO and ASFT pair the positive with each of its B negatives
(rejected of shape (N, B)) and average the N*B per-pair losses; preference data is B = 1, shape (N,).

Conventions. The label convention is data/format.py collate's: targets = ids[1:], mask[t] = True iff
targets[t] is scored (response or closing EOT); padding is EOT with mask False. Every loss returns
a scalar `loss` (mean over the batch) and `metrics`: a dict of 0-d detached float32 tensors, so the
trainer can all-reduce them. Internal no-gradient state (d, log_u, w) is computed in float64.

Uniform entry point for the trainer: `spec = LOSSES[name]` says what the loss needs, and
    loss, new_log_u, metrics = compute_loss(name, batch, log_u=None, normalizer=None, **hparams)
reads the keys it needs from `batch` (summed logps and counts; it forms avg_logp itself):
    logps (N,), n_tokens (N,), neg_logps (N, B), neg_n_tokens (N, B), ref_logps (N,), neg_ref_logps (N, B)
new_log_u is None for losses without per-prompt state.

    python -m pytest -q tests/test_losses.py
    python -c "import torch, losses; print(losses.dpo_loss(*torch.zeros(4, 2).unbind(0))[0])"  # log 2
"""
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F


def sequence_logps(logits, targets, mask):
    """logp(y|x) = sum_t mask[t] * log softmax(logits[t])[targets[t]], in float32.
    logits (N, T, V), targets (N, T) long, mask (N, T) bool -> logps (N,) float32, n_tokens (N,) long.
    Prompt and padding positions (mask False) contribute nothing, whatever their logits or targets."""
    logprobs = logits.float().log_softmax(dim=-1)                          # (N, T, V)
    token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)      # (N, T)
    # where, not multiply: a -inf at a masked position times 0 would be NaN
    token_lp = torch.where(mask, token_lp, torch.zeros_like(token_lp))
    return token_lp.sum(dim=1), mask.sum(dim=1)


def logmeanexp(x, dim=-1):
    """log mean_j exp(x_j) along dim, with the max subtracted first (an all -inf row gives -inf)."""
    m = x.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return (m + torch.exp(x - m).mean(dim=dim, keepdim=True).log()).squeeze(dim)


def logaddexp(a, b):
    """log(exp(a) + exp(b)) elementwise, with the max subtracted first."""
    m = torch.maximum(a, b)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m + torch.log(torch.exp(a - m) + torch.exp(b - m))


def _m(x):  # a metric: detached float32 0-d mean
    return x.detach().float().mean()


def sft_loss(logps, n_tokens, normalizer=None):
    """L_SFT = -(sum_i logp(y_i)) / normalizer, normalizer = sum_i n_tokens(y_i) by default.
    logps (N,), n_tokens (N,). A token mean, so a short example weighs no more than a long one.
    Grad accumulation / DDP: gradients of micro-batches add up and DDP averages them over W ranks, so
    for one optimizer step to equal one big batch pass normalizer = (scored tokens of the whole step,
    all micro-batches and ranks) / W, and do NOT also divide by the accumulation steps.
    Metrics: loss, nll (this micro-batch's token mean), logp/pos (mean summed logp)."""
    total = n_tokens.sum()
    normalizer = total if normalizer is None else normalizer
    loss = -logps.sum() / normalizer
    return loss, {"loss": loss.detach().float(), "nll": -logps.detach().float().sum() / total,
                  "logp/pos": _m(logps)}


def _check_tau_gamma(tau, gamma):
    if not tau > 0 or not 0 < gamma <= 1:
        raise ValueError(f"need tau > 0 and 0 < gamma <= 1, got tau={tau} gamma={gamma}")


def update_log_u(log_u, d, gamma):
    """The moving average u_i <- (1-gamma) u_i + gamma mean_j exp(d_j), kept in log space:
        log_u_i <- logaddexp(log(1-gamma) + log_u_i, log(gamma) + logmeanexp_j d_j)
    log_u (N,), d (N, B) -> (N,). No exp of a raw log-prob sum anywhere: both helpers subtract the max."""
    lme = logmeanexp(d, dim=1)                                            # (N,)
    if gamma == 1:  # log(1 - gamma) = -inf: the old u is forgotten entirely
        return lme
    return logaddexp(math.log(1 - gamma) + log_u, math.log(gamma) + lme)


def _dft_core(s_pos, s_neg, d, log_u, gamma):
    """Shared DFT/DFT2 step: d (N, B) float64, no gradient.
        log_u_i <- logaddexp(log(1-gamma) + log_u_i, log(gamma) + logmeanexp_j d_j)   (gamma < 1)
        log_u_i <- logmeanexp_j d_j                                                  (gamma == 1)
        w_j = exp(d_j - log_u_i);   L_i = -s(y_i) + (1/B) sum_j w_j s(y'_j);   loss = mean_i L_i
    u is updated BEFORE w is computed, so the current negatives are part of the normalizer; this also
    bounds w_j <= B/gamma. w and new_log_u carry no gradient."""
    new_log_u = update_log_u(log_u.detach().double(), d, gamma)           # (N,)
    w = torch.exp(d - new_log_u.unsqueeze(1)).to(s_neg.dtype)             # (N, B)
    loss = (-s_pos + (w * s_neg).mean(dim=1)).mean()
    metrics = {"loss": loss.detach().float(), "log_u": _m(new_log_u), "w/mean": _m(w),
               "w/max": w.detach().float().max()}
    return loss, new_log_u.to(log_u.dtype), metrics


def dft_loss(pos_logps, neg_logps, neg_ref_logps, log_u, tau=1.0, gamma=0.85):
    """DFT with importance weights; s = logp (summed), logp_0 = neg_ref_logps (base model, training prompt).
        d_j = s(y'_j)/tau - logp_0(y'_j|x_i)          then the u update, w and L_i of _dft_core.
    pos_logps (N,), neg_logps (N, B), neg_ref_logps (N, B), log_u (N,) = the current u of these prompts.
    Returns (loss, new_log_u (N,) detached, in log_u's dtype, metrics). At the fixed point of u the
    surrogate's gradient is tau times the gradient of the objective
        -s(y_i)/tau + log mean_j exp(s(y'_j)/tau - logp_0(y'_j))
    (the positive is not divided by tau: the published implementation's convention, kept).
    Metrics: loss, logp/pos, logp/neg, logp0/neg, log_u (new), w/mean, w/max."""
    _check_tau_gamma(tau, gamma)
    d = neg_logps.detach().double() / tau - neg_ref_logps.detach().double()   # (N, B)
    loss, new_log_u, metrics = _dft_core(pos_logps, neg_logps, d, log_u, gamma)
    metrics.update({"logp/pos": _m(pos_logps), "logp/neg": _m(neg_logps), "logp0/neg": _m(neg_ref_logps)})
    return loss, new_log_u, metrics


def dft2_loss(pos_avg_logps, neg_avg_logps, log_u, tau=0.3, gamma=0.9):
    """DFT2, reference-free and length-normalized; s = avg_logp.
        d_j = avg_logp(y'_j|x_i)/tau                  then the u update, w and L_i of _dft_core,
        L_i = -avg_logp(y_i) + (1/B) sum_j w_j avg_logp(y'_j).
    pos_avg_logps (N,), neg_avg_logps (N, B), log_u (N,). Returns (loss, new_log_u, metrics). At the fixed
    point of u the gradient is tau times that of  -a(y_i)/tau + log mean_j exp(a(y'_j)/tau).
    Metrics: loss, avg_logp/pos, avg_logp/neg, log_u (new), w/mean, w/max."""
    _check_tau_gamma(tau, gamma)
    d = neg_avg_logps.detach().double() / tau                                # (N, B)
    loss, new_log_u, metrics = _dft_core(pos_avg_logps, neg_avg_logps, d, log_u, gamma)
    metrics.update({"avg_logp/pos": _m(pos_avg_logps), "avg_logp/neg": _m(neg_avg_logps)})
    return loss, new_log_u, metrics


def _pairs(chosen, rejected):
    """chosen (N,) and rejected (N,) or (N, B) -> both (N, B): each chosen is paired with its B rejected."""
    rejected = rejected.unsqueeze(1) if rejected.dim() == 1 else rejected
    return chosen.unsqueeze(1).expand_as(rejected), rejected


# log(1 - exp(a)) is -inf at a = 0, which float32 rounding can produce (every token certain); any
# avg_logp above -1e-12 is such a rounded 0, so clamp there to keep loss and gradient finite.
_A_MAX = -1e-12


def asft_loss(chosen_avg_logps, rejected_avg_logps, lam=0.1):
    """ASFT; a = avg_logp, odds(a) = a - log(1 - exp(a)):
        L = -a(y_w) - lam * [ log sigmoid(odds(a(y_w))) + log sigmoid(-odds(a(y_l))) ]
    computed through the identities log sigmoid(odds(a)) = a and log sigmoid(-odds(a)) = log(1 - exp(a)),
    i.e. L = -(1 + lam) a(y_w) - lam log(-expm1(a(y_l))): exact, and stable for a near 0 (a(y_l) is
    clamped at -1e-12). chosen (N,), rejected (N,) or (N, B) (pairs, averaged; see module docstring).
    Metrics: loss, align (mean of the bracket), avg_logp/chosen, avg_logp/rejected."""
    a_w, a_l = _pairs(chosen_avg_logps, rejected_avg_logps)                # (N, B) each
    log_sig_w = a_w                                                        # log sigmoid(odds(a_w))
    log_sig_l = torch.log(-torch.expm1(a_l.clamp(max=_A_MAX)))             # log sigmoid(-odds(a_l))
    align = log_sig_w + log_sig_l
    loss = (-a_w - lam * align).mean()
    return loss, {"loss": loss.detach().float(), "align": _m(align),
                  "avg_logp/chosen": _m(chosen_avg_logps), "avg_logp/rejected": _m(rejected_avg_logps)}


def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1,
             label_smoothing=0.0):
    """DPO; s = logp (summed), s_0 = the reference (starting) model's, eps = label_smoothing:
        Delta = (s(y_w) - s_0(y_w)) - (s(y_l) - s_0(y_l))
        L = -(1 - eps) log sigmoid(beta Delta) - eps log sigmoid(-beta Delta)
    chosen/ref_chosen (N,), rejected/ref_rejected (N,) or (N, B) (pairs, averaged). Metrics (ecosystem
    names): rewards/chosen = beta (s(y_w) - s_0(y_w)), rewards/rejected, rewards/margins,
    rewards/accuracies (fraction of pairs with chosen reward > rejected), logps/chosen, logps/rejected."""
    r_w, r_l = _pairs(beta * (chosen_logps - ref_chosen_logps.detach()),
                      beta * (rejected_logps - ref_rejected_logps.detach()))   # (N, B) each
    margin = r_w - r_l                                                         # beta * Delta
    loss = (-(1 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)).mean()
    return loss, {"loss": loss.detach().float(), "rewards/chosen": _m(r_w), "rewards/rejected": _m(r_l),
                  "rewards/margins": _m(margin), "rewards/accuracies": _m(r_w > r_l),
                  "logps/chosen": _m(chosen_logps), "logps/rejected": _m(rejected_logps)}


@dataclass(frozen=True)
class LossSpec:
    fn: Callable
    defaults: dict = field(default_factory=dict)  # default hyperparameters (the --flags' defaults)
    needs_negatives: bool = False   # needs neg_logps / rejected, (N, B)
    needs_ref: tuple = ()           # which sides need starting-model logps: "pos" and/or "neg"
    length_normalized: bool = False  # uses avg_logp = logp / n_tokens instead of logp
    stateful: bool = False           # carries per-prompt state log_u (takes and returns it)


LOSSES = {
    "sft": LossSpec(sft_loss),
    "dft": LossSpec(dft_loss, {"tau": 1.0, "gamma": 0.85}, needs_negatives=True, needs_ref=("neg",), stateful=True),
    "dft2": LossSpec(dft2_loss, {"tau": 0.3, "gamma": 0.9}, needs_negatives=True, length_normalized=True, stateful=True),
    "asft": LossSpec(asft_loss, {"lam": 0.1}, needs_negatives=True, length_normalized=True),
    "dpo": LossSpec(dpo_loss, {"beta": 0.1, "label_smoothing": 0.0}, needs_negatives=True, needs_ref=("pos", "neg")),
}


def compute_loss(name, batch, log_u=None, normalizer=None, **hparams):
    """One call for every loss: (loss, new_log_u or None, metrics). batch keys as in the module docstring;
    hparams override LOSSES[name].defaults (unknown names are an error). normalizer is SFT's (see
    sft_loss); the other losses are means over the micro-batch's prompts and ignore it (under
    accumulation divide them by the number of equal-sized micro-batches)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}")
    spec = LOSSES[name]
    unknown = set(hparams) - set(spec.defaults)
    if unknown:
        raise ValueError(f"loss {name!r} has no hyperparameters {sorted(unknown)}; "
                         f"it takes {sorted(spec.defaults)}")
    if spec.stateful and log_u is None:
        raise ValueError(f"loss {name!r} carries per-prompt state: pass log_u (N,), the current table values")
    hp = {**spec.defaults, **hparams}
    if name == "sft":
        loss, metrics = sft_loss(batch["logps"], batch["n_tokens"], normalizer, **hp)
        return loss, None, metrics
    pos, neg = batch["logps"], batch["neg_logps"]
    if spec.length_normalized:
        pos, neg = pos / batch["n_tokens"], neg / batch["neg_n_tokens"]
    # every signature is (pos, neg, [ref of pos], [ref of neg], [log_u], **hparams)
    args = [pos, neg] + [batch[k] for side, k in (("pos", "ref_logps"), ("neg", "neg_ref_logps")) if side in spec.needs_ref] \
        + [log_u] * spec.stateful
    out = spec.fn(*args, **hp)
    return out if spec.stateful else (out[0], None, out[1])
