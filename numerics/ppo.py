r"""Float64 NumPy reference of the clipped policy surrogate (PPO, DAPO clip-higher, dual clip, BandPO) and of
verl's loss aggregation, with the analytic gradient with respect to ``log π_θ``.

Written from the formulas (spec ``bandpo.md`` §2.1-2.3 and ``ecosystem.md`` §A.1: verl 0.9.1
``compute_policy_loss_vanilla`` and ``agg_loss``), independently of ``fiberlab.gpu.losses``; no torch here.

Per token, with :math:`\Delta = \log\pi_\theta - \log\pi_{old}` and the clip interval :math:`[\ell, u]`
(``[1-ε₋, 1+ε₊]`` for PPO, the Band bounds for BandPO):

.. math::
    r = e^{\mathrm{clamp}(\Delta, -20, 20)},\quad L_1 = -A r,\quad L_2 = -A\,\mathrm{clip}(r, \ell, u),\quad
    L_{clip} = \max(L_1, L_2),\quad L = \begin{cases}\min(L_{clip}, -cA) & A < 0 \\ L_{clip} & A \ge 0\end{cases}

then :math:`L \leftarrow w L` with the rollout importance weights ``w`` if given, and the aggregate is linear in
the loss matrix, :math:`\mathcal L = \sum_{i,t} a_{it} L_{it}`, with the weights :math:`a_{it}` of
:func:`agg_weights_np`. Hence

.. math::
    \frac{\partial\mathcal L}{\partial\log\pi_\theta(i,t)} = a_{it}\, w_{it}\, \frac{\partial L_{it}}{\partial r}\, r\,
    \mathbb 1[|\Delta| \le 20],\qquad \frac{\partial L}{\partial r} = -A \text{ where the unclipped branch is
    active and dual clip is not}, 0 \text{ otherwise.}

**Kinks and torch's convention** (what ``torch.autograd`` returns where the loss is not differentiable; checked
on torch 2.13, and reproduced here so that a test that lands on a kink still agrees):

* ``clamp`` passes the gradient on the *closed* interval ``ℓ ≤ r ≤ u`` (and ``|Δ| ≤ 20`` for the log-ratio clamp);
* ``maximum``/``minimum`` split the gradient half/half at a tie. Inside ``[ℓ, u]`` the two branches of
  :math:`L_{clip}` are equal and have the same derivative ``-A``, so the split is invisible; at the dual-clip tie
  :math:`L_{clip} = -cA` (i.e. ``r = c``) the gradient is halved: ``-A/2``;
* an exact tie ``L_1 = L_2`` outside ``[ℓ, u]`` needs ``A = 0`` (derivative 0 anyway) or two ratios one ulp apart
  whose products with ``A`` round to the same number; that last case is the one place where the convention here
  can differ from torch, which is why tests generate log-ratios a margin away from every kink
  (:func:`log_ratio_kinks`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: verl (and OpenRLHF) clamp the log-ratio to ±20 before exp (ecosystem §A.1 step 1).
LOG_RATIO_CLAMP = 20.0

#: verl's five aggregation modes (``token-sum`` is the fifth, used with global token counts).
AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm", "token-sum")


class Surrogate(NamedTuple):
    """Per-token clipped surrogate: value, derivative in the ratio, and verl's metric indicators."""

    loss: np.ndarray            #: L_t (before rollout weights and aggregation)
    dloss_dratio: np.ndarray    #: ∂L_t/∂r_t with torch's kink convention (module docstring)
    clipped: np.ndarray         #: L_2 > L_1: the pessimistic max picked the clipped branch (``pg_clipfrac``)
    dual_clipped: np.ndarray    #: A < 0 and L_clip > -cA: dual clip active (``pg_clipfrac_lower``)


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def clipped_surrogate_np(ratio, adv, lower, upper, c) -> Surrogate:
    r"""The per-token clipped surrogate (PPO / BandPO §2.1) with optional dual clip.

    Args:
        ratio: ``r = π_θ/π_old`` per token (already clamped, as the policy losses do).
        adv: advantages ``A``, broadcastable to ``ratio``.
        lower, upper: the clip interval ``[ℓ, u]``, scalars or per-token arrays (``ℓ ≤ 1 ≤ u``).
        c: dual-clip constant ``c > 1`` (Ye et al. 2019), or ``None`` for no dual clip.
    """
    r, a = np.broadcast_arrays(_f64(ratio), _f64(adv))
    lo = np.broadcast_to(_f64(lower), r.shape)
    up = np.broadcast_to(_f64(upper), r.shape)
    l1 = -a * r
    l2 = -a * np.minimum(np.maximum(r, lo), up)        # clip(r, ℓ, u)
    l_clip = np.maximum(l1, l2)
    inside = (r >= lo) & (r <= up)                     # clamp passes the gradient on the closed interval
    d_clip = np.where(inside | (l1 > l2), -a, 0.0)     # at a tie inside [ℓ, u] both branches have slope -A
    clipped = l2 > l1
    if c is None:
        return Surrogate(l_clip, d_clip, clipped, np.zeros(r.shape, dtype=bool))
    c = float(c)
    if not c > 1.0:
        raise ValueError(f"c (dual clip) must be > 1, got {c}")
    l3 = -a * c
    neg = a < 0
    loss = np.where(neg, np.minimum(l_clip, l3), l_clip)
    # A < 0: min(L_clip, L3) — below the floor the clip branch carries the gradient, above it none, half at a tie.
    d_dual = np.where(l_clip < l3, d_clip, np.where(l_clip > l3, 0.0, 0.5 * d_clip))
    d = np.where(neg, d_dual, d_clip)
    return Surrogate(loss, d, clipped, neg & (l_clip > l3))


def _check_mask(mask, shape) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"mask has shape {m.shape}, expected {tuple(shape)}")
    m = m.astype(np.float64)
    if not np.all((m == 0) | (m == 1)):
        raise ValueError("mask must be binary")
    return m


def agg_weights_np(mask, mode: str, *, loss_scale_factor=None, dp_size=1, batch_num_tokens=None,
                   global_batch_size=None, seq_len_guard: float = 0.0) -> np.ndarray:
    r"""The weights :math:`a_{it}` with ``agg(L) = Σ_{i,t} a_{it} L_{it}`` for each of verl's modes.

    With :math:`m` the mask, :math:`n_i = \sum_t m_{it}`, :math:`N = \sum_i n_i` (or ``batch_num_tokens``),
    :math:`S = \#\{i : n_i > 0\}` (or ``global_batch_size``), :math:`D` = ``dp_size``, :math:`H` =
    ``loss_scale_factor`` (default: the padded length ``T``):

    * ``token-mean``: :math:`a = D m / N`;  ``token-sum``: :math:`a = D m`;
    * ``seq-mean-token-sum``: :math:`a = D m / S`;  ``seq-mean-token-sum-norm``: :math:`a = D m / (S H)`;
    * ``seq-mean-token-mean``: :math:`a = D m / ((n_i + g) S)`, where verl writes ``g = 1e-8``. With a bool or
      integer mask (as verl passes it) ``n_i + 1e-8`` is computed in torch's default float32 and the guard
      rounds away, so the default here is ``g = 0``, the textbook per-sequence mean; pass
      ``seq_len_guard=1e-8`` to model a float64 mask.
    """
    m = np.asarray(mask, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"mask must be [batch, response_length], got shape {m.shape}")
    seq_len = m.sum(-1)
    n_tok = m.sum() if batch_num_tokens is None else float(batch_num_tokens)
    n_seq = float((seq_len > 0).sum()) if global_batch_size is None else float(global_batch_size)
    if mode == "token-mean":
        w = m / n_tok
    elif mode == "token-sum":
        w = m.copy()
    elif mode == "seq-mean-token-sum":
        w = m / n_seq
    elif mode == "seq-mean-token-sum-norm":
        horizon = m.shape[-1] if loss_scale_factor is None else float(loss_scale_factor)
        w = m / n_seq / horizon
    elif mode == "seq-mean-token-mean":
        denom = np.where(seq_len > 0, seq_len + seq_len_guard, 1.0)    # empty rows have m = 0 anyway
        w = m / denom[:, None] / n_seq
    else:
        raise ValueError(f"mode must be one of {AGG_MODES}, got {mode!r}")
    return w * float(dp_size)


def agg_loss_np(loss_mat, mask, mode: str, loss_scale_factor=None, *, dp_size=1, batch_num_tokens=None,
                global_batch_size=None, seq_len_guard: float = 0.0) -> float:
    """verl's ``agg_loss`` in float64, computed as its formulas read (sums, then the divisions).

    Same modes and arguments as :func:`agg_weights_np`; masked-out entries never enter (even if non-finite).
    """
    L = _f64(loss_mat)
    m = _check_mask(mask, L.shape)
    masked = np.where(m > 0, L, 0.0)
    seq_len = m.sum(-1)
    valid = seq_len > 0
    n_seq = float(valid.sum()) if global_batch_size is None else float(global_batch_size)
    if mode == "token-mean":
        n_tok = m.sum() if batch_num_tokens is None else float(batch_num_tokens)
        out = masked.sum() / n_tok
    elif mode == "token-sum":
        out = masked.sum()
    elif mode in ("seq-mean-token-sum", "seq-mean-token-sum-norm"):
        out = masked.sum(-1)[valid].sum() / n_seq
        if mode == "seq-mean-token-sum-norm":
            out = out / (L.shape[-1] if loss_scale_factor is None else float(loss_scale_factor))
    elif mode == "seq-mean-token-mean":
        out = (masked.sum(-1)[valid] / (seq_len[valid] + seq_len_guard)).sum() / n_seq
    else:
        raise ValueError(f"mode must be one of {AGG_MODES}, got {mode!r}")
    return float(out * dp_size)


def policy_loss_np(old_log_prob, log_prob, adv, mask, mode: str, lower, upper, c, weights=None, *,
                   loss_scale_factor=None, dp_size=1, batch_num_tokens=None, global_batch_size=None,
                   seq_len_guard: float = 0.0) -> tuple[float, np.ndarray]:
    r"""Aggregated clipped-surrogate loss and its gradient with respect to ``log_prob`` (module docstring).

    ``lower``/``upper``: the clip interval (``1-ε₋``, ``1+ε₊`` for PPO; per-token Band bounds for BandPO);
    ``c``: dual clip constant or ``None``; ``weights``: verl's ``rollout_is_weights`` (multiply the per-token
    loss, no gradient through them). The aggregation keywords are those of :func:`agg_weights_np`.

    Returns ``(loss, grad)`` with ``grad[i, t] = ∂loss/∂log_prob[i, t]``.
    """
    old = _f64(old_log_prob)
    new = _f64(log_prob)
    if old.shape != new.shape:
        raise ValueError(f"log_prob has shape {new.shape}, expected {old.shape} (old_log_prob's)")
    m = _check_mask(mask, new.shape)
    delta = new - old
    inside_clamp = np.abs(delta) <= LOG_RATIO_CLAMP          # clamp passes the gradient on the closed interval
    ratio = np.exp(np.clip(delta, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    s = clipped_surrogate_np(ratio, adv, lower, upper, c)
    w = np.ones_like(ratio) if weights is None else np.broadcast_to(_f64(weights), ratio.shape)
    kw = dict(dp_size=dp_size, batch_num_tokens=batch_num_tokens, global_batch_size=global_batch_size,
              seq_len_guard=seq_len_guard)
    loss = agg_loss_np(s.loss * w, m, mode, loss_scale_factor, **kw)
    a = agg_weights_np(m, mode, loss_scale_factor=loss_scale_factor, **kw)
    grad = a * w * s.dloss_dratio * ratio * inside_clamp     # chain rule: ∂r/∂log π_θ = r inside the clamp
    return loss, grad


def surrogate_metrics_np(old_log_prob, log_prob, adv, mask, lower, upper, c, *,
                         count_guard: float = 0.0) -> dict[str, float]:
    """verl's three metrics: ``pg_clipfrac``, ``ppo_kl`` (k1: masked mean of ``-Δ``, clamped), ``pg_clipfrac_lower``.

    Means over the valid tokens, divided by ``count + count_guard``. verl's ``masked_mean`` adds 1e-8 to the
    mask's sum; for a bool/int mask that happens in float32 and rounds away (the default ``count_guard = 0``),
    for a float64 mask pass ``count_guard=1e-8``.
    """
    old = _f64(old_log_prob)
    new = _f64(log_prob)
    m = _check_mask(mask, new.shape) > 0
    delta = np.clip(new - old, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    s = clipped_surrogate_np(np.exp(delta), adv, lower, upper, c)
    n = m.sum() + count_guard
    return {
        "actor/pg_clipfrac": float(s.clipped[m].sum() / n),
        "actor/ppo_kl": float((-delta)[m].sum() / n),
        "actor/pg_clipfrac_lower": float(s.dual_clipped[m].sum() / n),
    }


def log_ratio_kinks(adv, lower, upper, c) -> np.ndarray:
    """Per token, the log-ratios where the loss is not differentiable, stacked on a new last axis (``-inf`` pads).

    ``A > 0``: ``log u`` (the clip starts); ``A < 0``: ``log ℓ`` and, with dual clip, ``log c``; always ``±20``
    (the log-ratio clamp). Tests keep ``Δ`` a margin away from these so the gradient is unambiguous.
    """
    a = _f64(adv)
    lo = np.broadcast_to(_f64(lower), a.shape)
    up = np.broadcast_to(_f64(upper), a.shape)
    with np.errstate(divide="ignore"):
        k_up = np.where(a > 0, np.log(up), -np.inf)
        k_lo = np.where(a < 0, np.log(lo), -np.inf)
        k_c = np.where(a < 0, np.log(c), -np.inf) if c is not None else np.full(a.shape, -np.inf)
    return np.stack([k_up, k_lo, k_c, np.full(a.shape, LOG_RATIO_CLAMP), np.full(a.shape, -LOG_RATIO_CLAMP)],
                    axis=-1)
