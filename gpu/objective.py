r"""The public core every objective is built on: verl's loss signature (:class:`PolicyLossFn`), the registry
(verl ``core_algos`` style), the input contract (:func:`validate_batch`, :func:`checked_inputs`), the aggregation
(:func:`agg_loss`), PPO's clipped surrogate, and the finishing step that turns a per-token loss into verl's metrics
(:func:`finish`). It imports no objective; :mod:`fiberlab.gpu.losses` is the index that imports them all.

Every loss is ``loss_fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
config=None, rollout_is_weights=None, **extra) -> (loss, metrics)`` on ``[batch, response_length]`` tensors,
so :func:`fiberlab.gpu.verl.register` can put it into verl 0.9.1's ``POLICY_LOSS_REGISTRY`` unchanged.
``metrics`` is a dict of floats with verl's names (``actor/pg_clipfrac``, ``actor/ppo_kl``,
``actor/pg_clipfrac_lower``) plus the objective's own under ``fiberlab/``.

Bad input raises ``ValueError`` naming the argument (shape mismatch, non-binary or empty mask, NaN/inf in
log-probabilities, advantages or weights, an empty batch, a non-positive radius); all input checks and all
metrics cost one host synchronisation each, and nothing returns NaN silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch

from fiberlab.gpu.config import check_config, global_batch_info, hparam_real

class PolicyLossFn(Protocol):
    """verl 0.9.1's policy-loss signature (``core_algos.PolicyLossFn``), with the objective's batch extras as
    keywords (declared at registration, :data:`POLICY_LOSS_EXTRAS`)."""

    def __call__(self, old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                 response_mask: torch.Tensor, loss_agg_mode: str = ..., config: Any = ...,
                 rollout_is_weights: torch.Tensor | None = ..., **extra: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        ...


POLICY_LOSSES: dict[str, PolicyLossFn] = {}

AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm", "token-sum")

#: verl clamps the log-ratio before ``exp`` (``core_algos.compute_policy_loss_vanilla``); so do we, for parity
#: and so that a diverged token cannot overflow.
LOG_RATIO_CLAMP = 20.0


#: The batch quantities beyond verl's arguments that an objective can take, each ``[B]`` (per sequence) unless
#: noted: ``rewards``, ``group_ids`` (prompt groups), ``domain_ids``, ``state_ids`` (``[B, T]``, per token).
BATCH_EXTRAS = ("rewards", "group_ids", "domain_ids", "state_ids")
#: What each registered objective takes of :data:`BATCH_EXTRAS`, declared when it is registered.
POLICY_LOSS_EXTRAS: dict[str, tuple[str, ...]] = {}


def register_policy_loss(name: str, extras: tuple[str, ...] = ()) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Decorator: register a policy loss under ``name`` (verl's ``register_policy_loss`` pattern), with the batch
    quantities it takes beyond verl's arguments (``extras``, from :data:`BATCH_EXTRAS`), so that a trainer asks
    the registry what to pass instead of guessing from the name."""
    unknown = set(extras) - set(BATCH_EXTRAS)
    if unknown:
        raise ValueError(f"extras of {name!r} must be among {BATCH_EXTRAS}, got {sorted(unknown)}")

    def deco(fn: PolicyLossFn) -> PolicyLossFn:
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss {name!r} is registered twice")
        POLICY_LOSSES[name] = fn
        POLICY_LOSS_EXTRAS[name] = tuple(extras)
        return fn

    return deco


def get_policy_loss(name: str) -> PolicyLossFn:
    if name not in POLICY_LOSSES:
        raise ValueError(f"unknown policy loss {name!r}; registered: {sorted(POLICY_LOSSES)}")
    return POLICY_LOSSES[name]


def batch_extras(name: str, **available: Any) -> dict[str, Any]:
    """The keyword arguments objective ``name`` takes, picked from ``available`` (values, or zero-argument
    callables evaluated only when the objective takes them, for quantities that cost work to build)."""
    get_policy_loss(name)
    missing = [k for k in POLICY_LOSS_EXTRAS[name] if k not in available]
    if missing:
        raise ValueError(f"policy loss {name!r} takes {list(POLICY_LOSS_EXTRAS[name])}; not available: {missing}")
    return {k: available[k]() if callable(available[k]) else available[k] for k in POLICY_LOSS_EXTRAS[name]}


# --------------------------------------------------------------------------------------------------------------
# Input validation and the working dtype (one host sync for all data-dependent checks)
# --------------------------------------------------------------------------------------------------------------

#: Log-probabilities above 0 by at most this many ulps of 1 are accepted as round-off: a log-softmax over
#: logits of magnitude up to 64 (or a fused cross-entropy kernel) rounds within 64·eps(dtype) of the true value
#: ≤ 0 (float64 1.4e-14, float32 7.6e-6, float16 0.06, bfloat16 0.5). Anything larger is not a log-probability
#: (a probability or a logit passed by mistake).
LOG_PROB_ROUNDOFF_ULPS = 64


def log_prob_roundoff(dtype: torch.dtype) -> float:
    """The largest positive value accepted in a log-probability of ``dtype`` (:data:`LOG_PROB_ROUNDOFF_ULPS`)."""
    return LOG_PROB_ROUNDOFF_ULPS * torch.finfo(dtype).eps


def working_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The dtype every objective computes and returns its loss in: torch's promotion of its floating inputs
    (``log_prob``, ``old_log_prob``, ``advantages``, ``rollout_is_weights``), but at least float32.

    Half inputs (bfloat16, float16) are computed in float32: a ratio :math:`e^{11.1}` already overflows float16,
    and group sums overflow both. Mixed float32/float64 inputs compute in float64, as torch arithmetic would."""
    dt = torch.float32
    for t in tensors:
        if t is not None:
            dt = torch.promote_types(dt, t.dtype)
    return dt


class _Float16Upcast(torch.autograd.Function):
    """A float16 ``log_prob`` cast up to the working dtype; backward casts the gradient back to float16 and
    refuses one beyond its range (65504) instead of returning inf. Its one host sync is on this path only
    (bfloat16 has float32's range: its cast cannot overflow)."""

    @staticmethod
    def forward(ctx, x, dtype):
        return x.to(dtype)

    @staticmethod
    def backward(ctx, g):
        big = g.abs().max()
        if not bool(big <= torch.finfo(torch.float16).max):
            raise ValueError(f"log_prob is float16 and the gradient of the loss with respect to it reaches "
                             f"{float(big):.3g}, beyond float16's range (65504); pass log_prob in float32 or "
                             f"bfloat16, or scale the loss down")
        return g.to(torch.float16), None


def upcast(log_prob: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``log_prob`` in the working dtype, differentiably (float16: through :class:`_Float16Upcast`)."""
    if log_prob.dtype == dtype:
        return log_prob
    if log_prob.dtype == torch.float16 and log_prob.requires_grad:
        return _Float16Upcast.apply(log_prob, dtype)
    return log_prob.to(dtype)


def check_extras(extra: dict[str, Any], allowed: set[str] | frozenset[str], loss: str) -> None:
    """Every objective refuses keyword arguments it does not take, naming them (a typo must not be ignored)."""
    unknown = set(extra) - set(allowed)
    if unknown:
        raise ValueError(f"unexpected keyword argument(s) for {loss}: {sorted(unknown)}"
                         + (f"; it takes {sorted(allowed)}" if allowed else ""))


def _empty_mask_allowed(loss_agg_mode: str, config: Any) -> bool:
    """A micro-batch that is all padding contributes exactly 0 when the aggregation divides by a global count
    (verl's ``global_batch_info``: dynamic batching can legitimately produce one); without it, its local
    denominator is 0 and the batch is an error."""
    info = global_batch_info(config)
    if loss_agg_mode == "token-sum":
        return True
    if loss_agg_mode == "token-mean":
        return info.get("batch_num_tokens") is not None
    return info.get("global_batch_size") is not None


def _check_structure(named: dict[str, Any]) -> None:
    """Types, one 2-D shape, a non-empty batch and floating dtypes (no data read: no host synchronisation)."""
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    shape = named["log_prob"].shape
    if len(shape) != 2:
        raise ValueError(f"log_prob must be [batch, response_length], got shape {tuple(shape)}")
    for name, t in named.items():
        if t.shape != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)} (log_prob's)")
    if named["log_prob"].numel() == 0:
        raise ValueError(f"the batch is empty: log_prob has shape {tuple(shape)}")
    for name in ("old_log_prob", "log_prob", "advantages", "rollout_is_weights"):
        if name in named and not named[name].is_floating_point():
            raise ValueError(f"{name} must be floating point, got {named[name].dtype}")


def validate_batch(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                   response_mask: torch.Tensor, rollout_is_weights: torch.Tensor | None = None, *,
                   allow_empty: bool = False) -> None:
    """Raise ``ValueError`` naming the offending argument; the data checks share one ``.tolist()``.

    Checks: tensors of one 2-D shape, a non-empty batch, floating log-probs and advantages, finite values,
    log-probs ≤ :func:`log_prob_roundoff` of their dtype, non-negative weights, a binary mask with at least
    one valid token (unless ``allow_empty``: see :func:`_empty_mask_allowed`)."""
    named = {"old_log_prob": old_log_prob, "log_prob": log_prob, "advantages": advantages,
             "response_mask": response_mask}
    if rollout_is_weights is not None:
        named["rollout_is_weights"] = rollout_is_weights
    _check_structure(named)

    # Finiteness through one reduction per tensor (a sum is non-finite iff some term is, barring overflow of
    # values near the dtype's max); only on that rare path are the exact per-tensor checks run, to name the
    # argument. The mask checks are skipped for bool masks, which are binary by construction.
    m = response_mask
    floats = [old_log_prob, log_prob, advantages] + ([rollout_is_weights] if rollout_is_weights is not None else [])
    probes = [t.sum(dtype=torch.float64) for t in floats]
    probes += [old_log_prob.max().to(torch.float64), log_prob.detach().max().to(torch.float64)]
    if rollout_is_weights is not None:
        probes.append((rollout_is_weights < 0).any().to(torch.float64))
    if m.dtype != torch.bool:
        probes.append(((m != 0) & (m != 1)).any().to(torch.float64))
    probes.append((m != 0).any().to(torch.float64))
    vals = torch.stack(probes).tolist()                    # the one host synchronisation
    names = ["old_log_prob", "log_prob", "advantages", "rollout_is_weights"][:len(floats)]
    for name, t, v in zip(names, floats, vals):
        if not math.isfinite(v) and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf")
    k = len(floats)
    for name, t in (("old_log_prob", old_log_prob), ("log_prob", log_prob)):
        if vals[k] > log_prob_roundoff(t.dtype):
            raise ValueError(f"{name} must hold log-probabilities (≤ 0, up to {log_prob_roundoff(t.dtype):.2g} of "
                             f"{t.dtype} round-off), got a value {vals[k]:.6g}")
        k += 1
    if rollout_is_weights is not None:
        if vals[k]:
            raise ValueError("rollout_is_weights must be ≥ 0")
        k += 1
    if m.dtype != torch.bool:
        if vals[k]:
            raise ValueError("response_mask must be binary (0/1 or bool)")
        k += 1
    if not vals[k] and not allow_empty:
        raise ValueError("response_mask is empty (no valid token); an all-padding micro-batch is accepted when "
                         "global_batch_info gives the count the aggregation divides by")


def checked_inputs(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                   response_mask: torch.Tensor, loss_agg_mode: str, config: Any,
                   rollout_is_weights: torch.Tensor | None, extra: dict[str, Any],
                   allowed: set[str] | frozenset[str], loss: str
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Every objective's first step: check ``config``, the keyword extras, the aggregation mode and the batch
    (:func:`validate_batch`), then return ``(old_log_prob, log_prob, advantages, rollout_is_weights)`` in the
    :func:`working_dtype` (gradient still flows to the caller's ``log_prob``)."""
    check_config(config)
    check_extras(extra, allowed, loss)
    if loss_agg_mode not in AGG_MODES:
        raise ValueError(f"loss_agg_mode must be one of {AGG_MODES}, got {loss_agg_mode!r}")
    validate_batch(old_log_prob, log_prob, advantages, response_mask, rollout_is_weights,
                   allow_empty=_empty_mask_allowed(loss_agg_mode, config))
    dt = working_dtype(old_log_prob, log_prob, advantages, rollout_is_weights)
    return (old_log_prob.detach().to(dt), upcast(log_prob, dt), advantages.detach().to(dt),
            None if rollout_is_weights is None else rollout_is_weights.detach().to(dt))


# --------------------------------------------------------------------------------------------------------------
# Aggregation: verl's modes (core_algos.agg_loss), with its global-batch arguments
# --------------------------------------------------------------------------------------------------------------

def agg_loss(loss_mat: torch.Tensor, loss_mask: torch.Tensor, loss_agg_mode: str, *, dp_size: int = 1,
             batch_num_tokens: Any = None, global_batch_size: Any = None, loss_scale_factor: Any = None
             ) -> torch.Tensor:
    r"""Aggregate a ``[B, T]`` loss matrix the way verl 0.9.1 does.

    * ``token-mean``: :math:`\sum_{i,t} m L / N_{tok}` (global token count when given), times ``dp_size``;
    * ``token-sum``: :math:`\sum_{i,t} m L` times ``dp_size``;
    * ``seq-mean-token-sum``: mean over non-empty sequences of :math:`\sum_t m L`;
    * ``seq-mean-token-mean``: mean over non-empty sequences of :math:`\sum_t m L / |y_i|` (GRPO);
    * ``seq-mean-token-sum-norm``: ``seq-mean-token-sum`` divided by ``loss_scale_factor`` (default: the padded
      length ``T``; Dr. GRPO's constant).

    ``dp_size`` cancels DDP/FSDP gradient averaging; with ``dp_size=1`` and no global counts these are the
    textbook formulas.
    """
    mask = loss_mask.to(loss_mat.dtype)
    # verl masks with where() then multiplies, against NaN in padding; our inputs are validated finite and the
    # ratio clamped, so the product alone gives the same sums (masked entries are ±0).
    masked = loss_mat * mask
    if loss_agg_mode == "token-mean":
        n_tok = mask.sum() if batch_num_tokens is None else batch_num_tokens
        return masked.sum() / n_tok * dp_size
    if loss_agg_mode == "token-sum":
        return masked.sum() * dp_size
    seq_len = mask.sum(-1)
    seq_valid = (seq_len > 0).to(loss_mat.dtype)
    n_seq = seq_valid.sum() if global_batch_size is None else global_batch_size
    if loss_agg_mode in ("seq-mean-token-sum", "seq-mean-token-sum-norm"):
        loss = (masked.sum(-1) * seq_valid).sum() / n_seq * dp_size
        if loss_agg_mode == "seq-mean-token-sum-norm":
            loss = loss / (loss_mask.shape[-1] if loss_scale_factor is None else loss_scale_factor)
        return loss
    if loss_agg_mode == "seq-mean-token-mean":
        # verl's 1e-8 guard, kept for parity and added to the mask's own sum as verl does: for a bool/int mask
        # that sum is an integer tensor, "+ 1e-8" is evaluated in torch's default float32 and rounds away.
        seq_loss = masked.sum(-1) / (loss_mask.sum(-1) + 1e-8)
        return (seq_loss * seq_valid).sum() / n_seq * dp_size
    raise ValueError(f"loss_agg_mode must be one of {AGG_MODES}, got {loss_agg_mode!r}")


def _agg_kwargs(config: Any) -> dict[str, Any]:
    info = global_batch_info(config)
    kw = {k: info[k] for k in ("dp_size", "batch_num_tokens", "global_batch_size", "loss_scale_factor") if k in info}
    if kw.get("loss_scale_factor") is None:
        lsf = hparam_real(config, "loss_scale_factor", None, lo=0.0, lo_open=True,
                          what="the seq-mean-token-sum-norm divisor")
        if lsf is not None:
            kw["loss_scale_factor"] = lsf
    return kw


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(values.dtype)
    # verl_F.masked_mean: the 1e-8 is added to the mask's own sum (see agg_loss), not to its float cast.
    return (values * m).sum() / (mask.sum() + 1e-8)


def masked_frac(indicator: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Fraction of valid tokens where a bool indicator holds: an integer count over verl's guarded token count,
    in the data's dtype (verl counts in float32 whatever the data; equal for float32 data)."""
    return count_frac((indicator & mask.bool()).sum(), mask, dtype)


def count_frac(count: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An integer count of valid tokens over verl's guarded token count, in ``dtype``."""
    return count.to(dtype) / (mask.sum() + 1e-8)


# --------------------------------------------------------------------------------------------------------------
# The clipped surrogate shared by PPO and BandPO
# --------------------------------------------------------------------------------------------------------------

class _ClippedSurrogate(torch.autograd.Function):
    r"""Per-token pessimistic clipped loss with optional dual clip, as one autograd node (PPO; BandPO §2.1).

    .. math:: r = \exp(\mathrm{clamp}(\log\pi_\theta - \log\pi_{old}, -20, 20)),\quad
              L_1 = -A r,\quad L_2 = -A\,\mathrm{clip}(r, \ell, u),\quad L = \max(L_1, L_2)
    .. math:: \text{dual clip (Ye et al. 2019), } A < 0:\ L \leftarrow \min(L, -cA)

    The forward pass computes the value exactly as verl's ``vanilla`` does (same operations, same bits). The
    backward pass is the gradient autograd would produce through those operations, written out:
    :math:`\partial L/\partial \log\pi_\theta = (g \cdot (-A)\,s) \cdot r` with :math:`s = 1` where the unclipped
    branch is active, 0 where clipped or dual-clipped, and 0 outside the ±20 log-ratio clamp; ties halve it the
    way torch's ``maximum``/``minimum`` split a tie: :math:`s = \tfrac12` at an exact tie of the dual floor, and
    at a tie :math:`L_1 = L_2` where the clip is flat (r outside [ℓ, u], one ulp from an end, yet
    :math:`-A r` and :math:`-A\,\mathrm{clip}(r)` round to the same float: only the :math:`L_1` half carries
    gradient); both ties give ¼. One saved tensor pair and one fused multiply in backward, instead of the
    graph of five max/min/where nodes.

    ``upper=None`` passes the *active end* b of a per-token interval in ``lower`` (r̄ where A > 0, r̲ where
    A < 0; :func:`fiberlab.gpu.band.band_active_bound`): :math:`L_2 = -A b` then equals
    :math:`-A\,\mathrm{clip}(r, \underline r, \overline r)` wherever the max can pick it, so value and clip
    indicator are the same to the bit, with one stored bound instead of two; the clip is flat where r lies
    strictly beyond b.
    """

    @staticmethod
    def forward(ctx, log_prob, old_log_prob, advantages, lower, upper, clip_ratio_c):
        diff = log_prob - old_log_prob
        log_ratio = torch.clamp(diff, min=-LOG_RATIO_CLAMP, max=LOG_RATIO_CLAMP)
        ratio = torch.exp(log_ratio)
        neg_adv = -advantages
        pg1 = neg_adv * ratio
        if upper is None:
            pg2 = neg_adv * lower
            flat = (ratio - lower).mul_(advantages) > 0          # r strictly beyond the active end
        else:
            clipped_ratio = torch.clamp(ratio, min=lower, max=upper)
            pg2 = neg_adv * clipped_ratio
            flat = clipped_ratio != ratio                          # clamp's gradient is 0 outside [ℓ, u]
        clipped = pg2 > pg1
        loss = torch.maximum(pg1, pg2)
        keep = ~clipped
        keep &= (diff >= -LOG_RATIO_CLAMP) & (diff <= LOG_RATIO_CLAMP)      # clamp passes its closed interval
        coef = keep.to(ratio.dtype)
        # a tie where the clip is flat keeps ½ (in place: on a CPU a fresh buffer costs as much as the arithmetic)
        coef.mul_(((pg2 == pg1).logical_and_(flat)).to(ratio.dtype).mul_(-0.5).add_(1.0))
        if clip_ratio_c is None:
            dual = torch.zeros_like(clipped)
        else:
            pg3 = neg_adv * clip_ratio_c
            neg = advantages < 0
            dual = (loss > pg3) & neg
            tie = (loss == pg3) & neg                                # minimum splits a tie with the floor
            loss = torch.where(neg, torch.minimum(pg3, loss), loss)
            coef.masked_fill_(dual, 0.0).mul_(tie.to(ratio.dtype).mul_(-0.5).add_(1.0))
        ctx.save_for_backward(coef.mul_(neg_adv), ratio)
        ctx.mark_non_differentiable(log_ratio, ratio, clipped, dual)
        return loss, log_ratio, ratio, clipped, dual

    @staticmethod
    def backward(ctx, grad_loss, *unused):
        coef, ratio = ctx.saved_tensors
        return grad_loss * coef * ratio, None, None, None, None, None


def clipped_surrogate(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                      lower: torch.Tensor | float, upper: torch.Tensor | float | None, clip_ratio_c: float | None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``(loss_mat, log_ratio, ratio, indicators)``; see :class:`_ClippedSurrogate`. Gradient flows to
    ``log_prob`` only (``old_log_prob``, ``advantages`` and the bounds are data). With ``upper=None``,
    ``lower`` is the per-token active end of the interval (:func:`fiberlab.gpu.band.band_active_bound`):
    r̄ where A > 0, r̲ where A < 0."""
    loss, log_ratio, ratio, clipped, dual = _ClippedSurrogate.apply(
        log_prob, old_log_prob.detach(), advantages.detach(), lower, upper, clip_ratio_c)
    return loss, log_ratio, ratio, {"clipped": clipped, "dual": dual}


def read_dual_clip(config: Any) -> float | None:
    """verl's ``clip_ratio_c`` (default 3.0): > 1, or ``inf`` to turn the dual clip off."""
    c = hparam_real(config, "clip_ratio_c", 3.0, lo=1.0, lo_open=True, allow_inf=True,
                    what="the dual-clip constant c (inf: off)")
    return None if math.isinf(c) else c


def read_clip_eps(config: Any) -> tuple[float, float]:
    """``(ε₋, ε₊)`` from verl's ``clip_ratio`` / ``clip_ratio_low`` / ``clip_ratio_high``."""
    eps = hparam_real(config, "clip_ratio", 0.2, lo=0.0, what="the clip range ε")
    lo = hparam_real(config, "clip_ratio_low", None, lo=0.0, hi=1.0, what="the lower clip range ε₋")
    hi = hparam_real(config, "clip_ratio_high", eps, lo=0.0, what="the upper clip range ε₊")
    if lo is None:
        if eps > 1.0:
            raise ValueError(f"clip_ratio (the default of clip_ratio_low) must be ≤ 1 (1 - ε₋ ≥ 0), got {eps}")
        lo = eps
    return lo, hi


def finish(loss_mat: torch.Tensor, ind: dict[str, torch.Tensor], neg_log_ratio: torch.Tensor,
            response_mask: torch.Tensor, loss_agg_mode: str, config: Any,
            rollout_is_weights: torch.Tensor | None, extra_metrics: dict[str, torch.Tensor] | None = None,
            clipped_count: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Aggregate, weight and report verl's three metrics plus ``extra_metrics``. ``clipped_count``: the number of
    valid clipped tokens, from a caller that has counted them already (BandPO's metrics).

    The loss rides along in the metrics' one host sync: inputs are validated finite, so a non-finite loss can
    only be an overflow of the working dtype (e.g. |A|·r beyond float32), and it raises instead of
    returning inf or NaN. ``loss_agg_mode`` was checked by :func:`checked_inputs`, every objective's first step."""
    if rollout_is_weights is not None:
        loss_mat = loss_mat * rollout_is_weights
    loss = agg_loss(loss_mat, response_mask, loss_agg_mode, **_agg_kwargs(config))
    named = {
        "actor/pg_clipfrac": (masked_frac(ind["clipped"], response_mask, loss_mat.dtype) if clipped_count is None
                              else count_frac(clipped_count, response_mask, loss_mat.dtype)),
        "actor/ppo_kl": masked_mean(neg_log_ratio.detach(), response_mask),
        "actor/pg_clipfrac_lower": masked_frac(ind["dual"], response_mask, loss_mat.dtype),
    }
    named.update(extra_metrics or {})
    values = torch.stack([v.detach().to(torch.float64) for v in named.values()]
                         + [loss.detach().to(torch.float64)]).tolist()                 # one sync
    if not math.isfinite(values[-1]):
        raise ValueError(f"the loss overflows {loss.dtype}: the advantages (and rollout_is_weights) times the "
                         f"ratios or coefficients exceed its range; scale the advantages down or pass float64 "
                         f"inputs")
    return loss, dict(zip(named, values[:-1]))
