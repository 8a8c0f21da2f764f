r"""FiberPO (arXiv 2603.08239) and the objectives it is derived from, as verl policy losses.

Registered names: ``grpo_rgf``, ``gspo``, ``apc``, ``fiberpo``, ``fiberpo_domain``. All are written in the
paper's Ratio Gating Formalism (RGF, Def. 3.1, Eq. 2): a fixed weight :math:`\mu` per token, a *gated ratio*
:math:`\mathcal G(r_\bullet)` per token, and

.. math:: \hat J = \sum_i \mu_i\,\mathcal G(r_\bullet)_i\,\hat A_i, \qquad \text{loss} = -\hat J .

The per-token loss matrix is :math:`-\mathcal G\hat A`; verl's ``loss_agg_mode`` supplies :math:`\mu`:

* ``seq-mean-token-mean``: :math:`\mu = \frac{1}{|\mathrm{Tj}|}\frac{1}{T_\tau}` — FiberPO's Eq. 6 (and GRPO's,
  GSPO's weights in App. C.4); the default of every loss here except ``apc``, and the mode to set in verl
  (``actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean``; verl's own default is ``token-mean``);
* ``token-mean``: :math:`\mu = 1/T` (PPO's :math:`n_{s,a}/T`, and APC-Obj's Eq. 3: the default of ``apc``);
* ``seq-mean-token-sum``: :math:`\mu = 1/|\mathrm{Tj}|` (FBG Eq. 5 without the :math:`1/T_\tau`);
* ``seq-mean-token-sum-norm``: :math:`\mu = 1/(|\mathrm{Tj}|\,L)` with verl's constant :math:`L` (Dr.GRPO).

The gate itself never depends on ``loss_agg_mode``: :math:`T_\tau` inside the aggregates is always the
trajectory's own length, so only the outer weighting changes.

Trajectories are rows: every row of ``[batch, response_length]`` is one whole trajectory :math:`\tau` with
:math:`T_\tau` = its number of valid tokens. A trajectory must never be split across micro-batches (its
:math:`s^\pm_\tau` are sums over all its tokens); verl never splits a row.

Hyperparameters (``config.policy_loss.<key>`` or ``config.<key>``, see :func:`fiberlab.gpu.config.hparam`):

* ``rgf_min`` (bool, default True): ``grpo_rgf`` and ``gspo`` with PPO's pessimistic ``min`` (App. C.4, how the
  baselines are run in practice); False gives Remark C.5's plain clip maps, the form the paper derives.
* ``clip_ratio`` / ``clip_ratio_low`` / ``clip_ratio_high``: ε of ``grpo_rgf`` and ``gspo`` (verl's keys).
* ``apc_delta`` (δ > 0, default 0.18): APC-Obj's relaxed per-state TV budget (Eq. 3 after §2.10 step 1). The
  default is the FiberPO trajectory budget :math:`\delta = C^+ + C^-` of the defaults below (§2.10 step 4).
* ``fiberpo_eps`` (ε > 0, default 0.03), ``fiberpo_c_pos`` (:math:`C^+`, default 0.12), ``fiberpo_c_neg``
  (:math:`C^-`, default 0.06). The paper gives no defaults (spec A3); these sit in the middle of A3's plausible
  range (ε 0.02–0.05, :math:`C^+` 0.10–0.15, :math:`C^-` 0.05–0.09) and honour the paper's
  :math:`C^- < C^+` and :math:`\epsilon \ll \delta = C^+ + C^- = 0.18`.
* ``fiberpo_c_pos_levels`` / ``fiberpo_c_neg_levels`` (FiberPO-Domain): three budgets
  ``(domain, group, trajectory)``; default ``None`` = the shared :math:`C^\pm` at every level, which is Eq. 31
  (spec A5: the abstract's "independent budgets per level" made an option).

Conventions (spec §5): sign label :math:`l_i = +1` for :math:`\log r_i \ge 0` (A4), also in the derivative of
the aggregates, so that autograd reproduces Prop. 5.2 everywhere including :math:`r = 1`; no PPO ``min`` and no
KL term in FiberPO (A8); no stop-gradient anywhere — the aggregates :math:`s^\pm` are differentiated (A9). The
token log-ratio is clamped to ±20 before use (``LOG_RATIO_CLAMP``, as in every fiberlab loss; not in the
paper, numerical safety only).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from fiberlab.gpu.advantages import group_tensor
from fiberlab.gpu.config import as_real, hparam, hparam_bool, hparam_real
from fiberlab.gpu.objective import (LOG_RATIO_CLAMP, checked_inputs, clipped_surrogate, finish, masked_frac, masked_mean,
                                    read_clip_eps, register_policy_loss)
from fiberlab.gpu.segments import (SegmentReducer, dense_segments, raise_flagged, reducer_for, segment_codes,
                                   segment_max, segment_sum, segment_sum_global)

#: Defaults (module docstring; spec A3's plausible range).
FIBERPO_EPS = 0.03
FIBERPO_C_POS = 0.12
FIBERPO_C_NEG = 0.06
APC_DELTA = FIBERPO_C_POS + FIBERPO_C_NEG
#: Global-regime names of a trajectory (§5.1, Fig. 2b), by the pair of channel regimes (P/R/Z).
GLOBAL_REGIMES = ("G-I", "G-II,r", "G-II", "G-III,r", "G-III")


# --------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------

def _positive(config: Any, key: str, default: float, what: str) -> float:
    return hparam_real(config, key, default, lo=0.0, lo_open=True, what=f"{what}, a positive number")


def _levels(config: Any, key: str, shared: float) -> tuple[float, float, float]:
    v = hparam(config, key, None)
    if v is None:
        return (shared, shared, shared)
    what = "three positive finite numbers (domain, group, trajectory)"
    if isinstance(v, (str, bytes)) or not hasattr(v, "__len__") or len(v) != 3:
        raise ValueError(f"{key} must be {what}, got {v!r}")
    vals = tuple(as_real(key, x, what) for x in v)
    if not all(0.0 < x < math.inf for x in vals):
        raise ValueError(f"{key} must be {what}, got {v!r}")
    return vals  # type: ignore[return-value]


def read_fiberpo_config(config: Any) -> dict[str, Any]:
    """ε, C⁺, C⁻ and the per-level budgets of FiberPO / FiberPO-Domain (module docstring)."""
    eps = _positive(config, "fiberpo_eps", FIBERPO_EPS, "the fiber budget ε")
    c_pos = _positive(config, "fiberpo_c_pos", FIBERPO_C_POS, "the positive-channel budget C⁺")
    c_neg = _positive(config, "fiberpo_c_neg", FIBERPO_C_NEG, "the negative-channel budget C⁻")
    return {"eps": eps, "c_pos": c_pos, "c_neg": c_neg,
            "c_pos_levels": _levels(config, "fiberpo_c_pos_levels", c_pos),
            "c_neg_levels": _levels(config, "fiberpo_c_neg_levels", c_neg)}


def _read_rgf_min(config: Any) -> bool:
    return hparam_bool(config, "rgf_min", True)


def _ids(ids: Any, b: int, device: torch.device, name: str) -> torch.Tensor:
    """One id per trajectory as an int64 ``[B]`` tensor; errors name ``name``."""
    if ids is None:
        raise ValueError(f"{name} is required (one id per trajectory, shape [{b}])")
    return group_tensor(ids, b, device, name=name, length_of="")


# --------------------------------------------------------------------------------------------------------------
# Building blocks: g_agg (Eq. 10), trajectory aggregates (Eq. 9), the fiber residual (Eqs. 14-16)
# --------------------------------------------------------------------------------------------------------------

def g_agg(x: torch.Tensor, c: float | torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    r"""The aggregate gate, FiberPO Eq. 10 / 78, with rollback slope :math:`-k`
    (:math:`k = T_\tau`, :math:`T_g` or :math:`T_D`).

    .. math:: g^{agg}(x, C, k) = \begin{cases} x & |x| \le C \\ \mathrm{sign}(x)(k+1)C - kx & C < |x| < (1+k^{-1})C
              \\ 0 & \text{otherwise} \end{cases}

    Continuous (value :math:`C` at :math:`|x| = C`, 0 at :math:`|x| = C^* = (1+1/k)C`), odd, slopes 1, :math:`-k`,
    0 (regimes P, R, Z). At the kinks autograd takes the slope of the closed side (spec A12).
    """
    ax = x.abs()
    rollback = torch.sign(x) * (k + 1.0) * c - k * x                          # Eq. 10, middle case
    return torch.where(ax <= c, x, torch.where(ax < (1.0 + 1.0 / k) * c, rollback, torch.zeros_like(x)))


def g_agg_regime(x: torch.Tensor, c: float | torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """0 = pass-through (P), 1 = rollback (R), 2 = zeroed (Z), with Eq. 10's boundaries."""
    ax = x.abs()
    return torch.where(ax <= c, 0, torch.where(ax < (1.0 + 1.0 / k) * c, 1, 2))


def masked_log_ratio(log_prob: torch.Tensor, old_log_prob: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:math:`\\log r` on valid tokens, 0 on padding; clamped to ±``LOG_RATIO_CLAMP`` (numerical safety)."""
    lr = torch.clamp(log_prob - old_log_prob.detach(), -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return lr * mask.to(lr.dtype)


def trajectory_aggregates(lr: torch.Tensor, mask: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``(T_τ, log s⁺_τ, log s⁻_τ, positive)`` for a masked log-ratio ``lr`` (padding = 0), Eq. 9:

    .. math:: \log s^+_\tau = \frac1{T_\tau}\sum_t \max(\log r_t, 0),\qquad
              \log s^-_\tau = \frac1{T_\tau}\sum_t \max(-\log r_t, 0) = \log s^+_\tau - \overline{\log r}_\tau

    ``positive`` is the sign label :math:`l_t = +1` (A4: :math:`\log r \ge 0`). Writing :math:`\max(x, 0)` as
    ``x * positive`` makes its derivative :math:`\mathbb I_{l_t=+1}` also at :math:`x = 0`, so each token feeds
    exactly one channel's gradient, the one its label names — Eq. 20's convention (``relu`` would give 0 at
    :math:`x = 0` in both channels). ``T_τ`` is clamped to 1 for an all-padding row (which has no loss term).
    """
    T = mask.to(lr.dtype).sum(-1).clamp_min(1.0)
    positive = lr >= 0
    ls_pos = (lr * positive).sum(-1) / T
    ls_neg = ls_pos - lr.sum(-1) / T                   # Σ max(-x,0) = Σ max(x,0) - Σ x; exact 0 when all x ≥ 0
    return T, ls_pos, ls_neg, positive


class _FiberGate(torch.autograd.Function):
    r"""Token part of the gated ratio, one autograd node (FiberPO Eqs. 7, 14–16):

    .. math:: \mathcal G_i = \exp\Big(b^{(l_i)}_\tau + \mathrm{clip}\big(\log r_i - l_i \log s^{(l_i)}_\tau, \pm\epsilon\big)\Big),
              \qquad b^{(l)}_\tau = \log w^{base}_\tau - \mathrm{clip}\big(-l \log s^{(-l)}_\tau, \pm\epsilon\big)

    Inputs: ``lr`` ``[B, T]`` and per-row ``shift_pos`` = :math:`\log s^+`, ``shift_neg`` = :math:`-\log s^-`
    (so that the residual is ``lr - shift``) and ``base_pos``, ``base_neg`` ``[B]``. The backward pass is the
    chain rule through these five operands written out (:math:`\bar z_i = \bar{\mathcal G}_i \mathcal G_i`,
    :math:`\chi_i = \mathbb I_{|u_i| \le \epsilon}`): :math:`\partial/\partial \log r_i = \bar z_i\chi_i`,
    :math:`\partial/\partial\,\mathrm{shift}^{(l)} = -\sum_{i: l_i = l}\bar z_i\chi_i`,
    :math:`\partial/\partial b^{(l)} = \sum_{i: l_i = l}\bar z_i`; autograd then carries the row gradients
    through the aggregates (Prop. 5.2's term (b)). Same values and gradients as the plain torch expression, in
    fewer passes over the ``[B, T]`` tensors.
    """

    @staticmethod
    def forward(ctx, lr, positive, shift_pos, shift_neg, base_pos, base_neg, eps):
        u = lr - torch.where(positive, shift_pos[:, None], shift_neg[:, None])   # l_i u_i  (Eq. 14)
        inside = u.abs() <= eps                                                 # |u_i| ≤ ε: clip inactive
        z = torch.where(positive, base_pos[:, None], base_neg[:, None]) + u.clamp(-eps, eps)
        g = torch.exp(z)
        ctx.save_for_backward(g, positive, inside)
        ctx.mark_non_differentiable(inside)
        return g, inside

    @staticmethod
    def backward(ctx, grad_g, _unused):
        g, positive, inside = ctx.saved_tensors
        zbar = grad_g * g
        zin = zbar * inside
        pos_in = (zin * positive).sum(-1)
        pos_all = (zbar * positive).sum(-1)
        return (zin, None, -pos_in, -(zin.sum(-1) - pos_in), pos_all, zbar.sum(-1) - pos_all, None)


def _fiber_gate(lr: torch.Tensor, positive: torch.Tensor, ls_pos: torch.Tensor, ls_neg: torch.Tensor,
                log_w: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(𝒢, |u| ≤ ε)`` from the per-row ``log w_base`` and aggregates (Eqs. 7, 16)."""
    # Opposite-channel factor, Eq. 16: l = +1 divides by logclip(1/s⁻), l = -1 by logclip(s⁺):
    #   -clip(l v, ±ε) = -clip(-log s⁻, ±ε) = +min(log s⁻, ε)   for l = +1   (log s^± ≥ 0)
    #                  = -clip(+log s⁺, ±ε) = -min(log s⁺, ε)   for l = -1
    base_pos = log_w + ls_neg.clamp(max=eps)
    base_neg = log_w - ls_pos.clamp(max=eps)
    return _FiberGate.apply(lr, positive, ls_pos, -ls_neg, base_pos, base_neg, eps)


def fiberpo_gated_ratio(lr: torch.Tensor, mask: torch.Tensor, eps: float, c_pos: float, c_neg: float
                        ) -> dict[str, torch.Tensor]:
    r"""FiberPO's gated ratio (Def. 5.1, Eqs. 7–11) for masked log-ratios ``lr`` ``[B, T]`` (one row = one τ).

    .. math:: \log w^{base}_\tau = g^{agg}(\log s^+_\tau, C^+, T_\tau) - g^{agg}(\log s^-_\tau, C^-, T_\tau)\quad(8)
    .. math:: \log\mathcal G_i = \log w^{base}_\tau + \mathrm{clip}(\log r_i - l_i\log s^{(l_i)}_\tau, \pm\epsilon)
              - \mathrm{clip}(-l_i\log s^{(-l_i)}_\tau, \pm\epsilon)\quad(7, 16)

    Returns ``G`` ``[B, T]`` and the pieces used for metrics (``T``, ``ls_pos``, ``ls_neg``, ``log_w``,
    ``inside`` = :math:`|u_i| \le \epsilon`, ``regime_pos``/``regime_neg``). Differentiable in ``lr``, through the
    aggregates too (A9).
    """
    T, ls_pos, ls_neg, positive = trajectory_aggregates(lr, mask)
    log_w = g_agg(ls_pos, c_pos, T) - g_agg(ls_neg, c_neg, T)                   # Eq. 8
    G, inside = _fiber_gate(lr, positive, ls_pos, ls_neg, log_w, eps)
    return {"G": G, "T": T, "ls_pos": ls_pos, "ls_neg": ls_neg, "log_w": log_w, "inside": inside,
            "regime_pos": g_agg_regime(ls_pos.detach(), c_pos, T),
            "regime_neg": g_agg_regime(ls_neg.detach(), c_neg, T)}


# --------------------------------------------------------------------------------------------------------------
# FiberPO-Domain: the three-level hierarchy and its segment aggregates
# --------------------------------------------------------------------------------------------------------------

#: Columns of the per-segment sums: Σ log s⁺_τ, Σ log s⁻_τ, number of trajectories, Σ T_τ.
_SUM_COLS = 4


@dataclasses.dataclass
class FiberPODomainState:
    """Whole-batch per-segment sums ``[G, 4]`` / ``[D, 4]`` (columns: Σ log s⁺_τ, Σ log s⁻_τ, |Tj|, Σ T_τ)
    for :func:`fiberpo_domain_loss` on micro-batches (see :func:`fiberpo_domain_state`)."""

    group_sums: torch.Tensor
    domain_sums: torch.Tensor
    num_groups: int
    num_domains: int


def _row_sums(lr: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    T, ls_pos, ls_neg, positive = trajectory_aggregates(lr, mask)
    valid = (mask.to(lr.dtype).sum(-1) > 0).to(lr.dtype)          # an all-padding row is no trajectory
    # Padding-only rows contribute nothing (their ls are 0 and valid = 0; T is clamped to 1 so use T·valid).
    rows = torch.stack([ls_pos * valid, ls_neg * valid, valid, T * valid], dim=-1)
    return rows, (T, ls_pos, ls_neg, positive)


#: How FiberPO's segments come to be shared across pieces of a batch (named in the range-check message).
_SHARED = "process_group or fiberpo_state"


def fiberpo_domain_state(old_log_prob: torch.Tensor, log_prob: torch.Tensor, response_mask: torch.Tensor,
                         group_ids: Any, domain_ids: Any, process_group: Any = None,
                         num_groups: int | None = None, num_domains: int | None = None) -> FiberPODomainState:
    r"""Per-group and per-domain sums of a whole mini-batch (all ranks with ``process_group``), no gradient.

    Micro-batches of one rank. verl runs forward+backward per micro-batch and accumulates gradients, so the
    members of a group in *other* micro-batches are not in the current graph. Build this state once on the
    mini-batch (the parameters do not move between its micro-batches, so every value is exact) and pass it as
    ``fiberpo_state`` to each micro-batch's loss. The loss then uses, for every segment,

    .. math:: S_g = S^{state}_g + \big(S^{local}_g - \mathrm{sg}[S^{local}_g]\big)

    — exactly the whole-batch value, differentiated only through the micro-batch's own members. Consequence
    for the gradient: Prop. 5.2's cross-trajectory terms (FiberPO-Domain's Eq. 20 analogue) between two
    trajectories of the same group/domain are kept when they are in the same micro-batch and dropped when they
    are not (the other micro-batch's contribution is a constant). In pass-through at the group and domain
    levels those terms vanish anyway (telescoping, §2.14), so the gradient is then exact; beyond, keep whole
    groups in one micro-batch (mini/micro-batch sizes multiples of ``rollout.n``) for the exact gradient.
    """
    with torch.no_grad():
        lr = masked_log_ratio(log_prob.detach(), old_log_prob, response_mask)
        b = lr.shape[0]                                    # trajectories in the mini-batch
        reducer = reducer_for(process_group)
        _, gseg, G, dseg, D, probes = _tree_codes(group_ids, domain_ids, b, lr.device, True, reducer, num_groups,
                                                  num_domains)
        raise_flagged(probes)
        rows, _ = _row_sums(lr, response_mask)
        return FiberPODomainState(reducer.sum(segment_sum(rows, gseg, G)), reducer.sum(segment_sum(rows, dseg, D)),
                                  G, D)


def fiberpo_domain_gated_ratio(lr: torch.Tensor, mask: torch.Tensor, group_seg: torch.Tensor,
                               domain_seg: torch.Tensor, num_groups: int, num_domains: int, eps: float,
                               c_pos_levels: tuple[float, float, float], c_neg_levels: tuple[float, float, float],
                               reducer: SegmentReducer | None = None, state: FiberPODomainState | None = None
                               ) -> dict[str, torch.Tensor]:
    r"""FiberPO-Domain's gated ratio (Def. 6.4, Eqs. 30–33) for rows with group codes ``group_seg`` and domain
    codes ``domain_seg`` (``[B]``, in ``[0, num_groups)`` / ``[0, num_domains)``).

    .. math:: \log s^{(l)}_g = \frac{1}{|\mathrm{Tj}(g)|}\sum_{\tau\in g}\log s^{(l)}_\tau,\qquad
              \log s^{(l)}_D = \frac{1}{|\mathrm{Tj}(D)|}\sum_{\tau\in D}\log s^{(l)}_\tau\quad(33)
    .. math:: \log w^{Base} = \sum_\pm \pm\big[g^{agg}(\log s^\pm_D, C^\pm_0, T_D)
              + g^{agg}(\log s^\pm_g - \log s^\pm_D, C^\pm_1, T_g) + g^{agg}(\log s^\pm_\tau - \log s^\pm_g, C^\pm_2, T_\tau)\big]\quad(31)

    with :math:`T_g = \sum_{\tau\in g}T_\tau`, :math:`T_D = \sum_{\tau\in D}T_\tau` and the fiber residual of Eq. 32
    (= FiberPO's). The segment sums go through ``reducer.sum_differentiable`` (all-reduced, gradient included,
    when segments span ranks) or are completed from ``state`` (micro-batches, see :func:`fiberpo_domain_state`).
    """
    reducer = reducer or SegmentReducer()
    rows, (T, ls_pos, ls_neg, positive) = _row_sums(lr, mask)

    def totals(seg: torch.Tensor, n: int, given: torch.Tensor | None) -> torch.Tensor:
        local = segment_sum(rows, seg, n)
        if given is not None:
            return given.to(local.dtype) + (local - local.detach())       # whole-batch value, local gradient
        return reducer.sum_differentiable(local)

    gs = totals(group_seg, num_groups, None if state is None else state.group_sums)[group_seg]      # [B, 4]
    ds = totals(domain_seg, num_domains, None if state is None else state.domain_sums)[domain_seg]
    g_cnt, d_cnt = gs[:, 2].clamp_min(1.0), ds[:, 2].clamp_min(1.0)
    T_g, T_d = gs[:, 3].clamp_min(1.0), ds[:, 3].clamp_min(1.0)

    def level_sum(col: int, ls_t: torch.Tensor, c: tuple[float, float, float]) -> torch.Tensor:
        ls_g = gs[:, col] / g_cnt                                                       # Eq. 33
        ls_d = ds[:, col] / d_cnt
        return g_agg(ls_d, c[0], T_d) + g_agg(ls_g - ls_d, c[1], T_g) + g_agg(ls_t - ls_g, c[2], T)   # Eq. 31

    log_w = level_sum(0, ls_pos, c_pos_levels) - level_sum(1, ls_neg, c_neg_levels)
    G, inside = _fiber_gate(lr, positive, ls_pos, ls_neg, log_w, eps)                # Eq. 32 = Eq. 16
    return {"G": G, "T": T, "ls_pos": ls_pos, "ls_neg": ls_neg, "log_w": log_w, "inside": inside}


# --------------------------------------------------------------------------------------------------------------
# Metrics shared by the FiberPO losses
# --------------------------------------------------------------------------------------------------------------

def _fiberpo_metrics(out: dict[str, torch.Tensor], mask: torch.Tensor, dtype: torch.dtype
                     ) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        valid_rows = (mask.to(dtype).sum(-1) > 0).to(dtype)
        n_rows = valid_rows.sum().clamp_min(1.0)
        m = {
            "fiberpo/fiber_clipfrac": masked_frac(~out["inside"], mask, dtype),          # |u_i| > ε (L-II/III)
            "fiberpo/log_w_base_mean": (out["log_w"].detach() * valid_rows).sum() / n_rows,
            "fiberpo/log_s_pos_mean": (out["ls_pos"].detach() * valid_rows).sum() / n_rows,
            "fiberpo/log_s_neg_mean": (out["ls_neg"].detach() * valid_rows).sum() / n_rows,
            "fiberpo/gated_ratio_mean": masked_mean(out["G"].detach(), mask),
        }
        if "regime_pos" in out:
            # Global regime by the two channels' regimes (P=0, R=1, Z=2), §5.1: (P,P) G-I; (P,R) G-II,r;
            # (P,Z) G-II; a channel pair with no P but some R: G-III,r (mutual rollback); (Z,Z) G-III.
            a, b = out["regime_pos"], out["regime_neg"]
            lo, hi = torch.minimum(a, b), torch.maximum(a, b)
            code = torch.where(lo == 0, hi, torch.where(hi == 2, torch.where(lo == 2, 4, 3), 3))
            for k, name in enumerate(GLOBAL_REGIMES):
                m[f"fiberpo/frac_traj_{name}"] = ((code == k).to(dtype) * valid_rows).sum() / n_rows
    return m


def _no_dual(clipped: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"clipped": clipped, "dual": torch.zeros_like(clipped)}


# --------------------------------------------------------------------------------------------------------------
# The losses
# --------------------------------------------------------------------------------------------------------------

@register_policy_loss("fiberpo")
def fiberpo_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                 response_mask: torch.Tensor, loss_agg_mode: str = "seq-mean-token-mean", config: Any = None,
                 rollout_is_weights: torch.Tensor | None = None, **extra: Any) -> tuple[torch.Tensor, dict[str, float]]:
    r"""FiberPO (FiberPO-Trajectory), Def. 5.1, Eqs. 6–11:

    .. math:: \hat J = \sum_\tau\sum_{t}\frac{1}{|\mathrm{Tj}|}\frac{1}{T_\tau}\,w^{base}_\tau\,\tilde r^{fiber}_{\tau,t}\,\hat A_{\tau,t}\quad(6)

    (gate: :func:`fiberpo_gated_ratio`). Config: ``fiberpo_eps``, ``fiberpo_c_pos``, ``fiberpo_c_neg``; default
    aggregation ``seq-mean-token-mean`` = Eq. 6 (module docstring for the other modes). Metrics:
    ``actor/pg_clipfrac`` = fraction of tokens with :math:`|u_i| > \epsilon` (their own-ratio gradient path (a)
    of Eq. 20 is cut), ``actor/pg_clipfrac_lower`` = 0 (no dual clip), ``actor/ppo_kl`` as verl, and
    ``fiberpo/*``: the same fiber clip fraction, mean :math:`\log w^{base}`, mean :math:`\log s^\pm`, mean
    :math:`\mathcal G`, and the fraction of trajectories in each global regime (G-I … G-III).
    """
    old_log_prob, log_prob, advantages, rollout_is_weights = checked_inputs(
        old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights, extra,
        set(), "fiberpo")
    cfg = read_fiberpo_config(config)
    lr = masked_log_ratio(log_prob, old_log_prob, response_mask)
    out = fiberpo_gated_ratio(lr, response_mask, cfg["eps"], cfg["c_pos"], cfg["c_neg"])
    loss_mat = -out["G"] * advantages.detach()
    metrics = _fiberpo_metrics(out, response_mask, lr.dtype)
    return finish(loss_mat, _no_dual(~out["inside"]), -lr.detach(), response_mask, loss_agg_mode, config,
                   rollout_is_weights, metrics)


@register_policy_loss("fiberpo_domain", extras=("group_ids", "domain_ids"))
def fiberpo_domain_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                        response_mask: torch.Tensor, loss_agg_mode: str = "seq-mean-token-mean", config: Any = None,
                        rollout_is_weights: torch.Tensor | None = None, **extra: Any
                        ) -> tuple[torch.Tensor, dict[str, float]]:
    r"""FiberPO-Domain (Def. 6.4, Eqs. 30–33): FiberPO with a domain → prompt group → trajectory hierarchy of
    aggregate gates (:func:`fiberpo_domain_gated_ratio`); same weights as Eq. 6.

    Extras: ``group_ids`` and ``domain_ids`` (``[B]`` integer tensors or labels; every group lies in one domain),
    ``process_group`` (``"world"`` or a process group: groups/domains split across data-parallel ranks; the
    segment sums are all-reduced *with* gradient, so rank losses sum to the single-process loss and the row
    gradients equal its gradients), ``fiberpo_state`` (from :func:`fiberpo_domain_state`, for micro-batches; see
    there what it does to the cross-trajectory gradient), ``num_groups`` / ``num_domains`` (buffer sizes for
    shared ids; default: largest id + 1, one host sync). Shared ids must be non-negative integers meaning the
    same segment everywhere. Config: as :func:`fiberpo_loss` plus ``fiberpo_c_pos_levels`` /
    ``fiberpo_c_neg_levels`` (domain, group, trajectory).
    """
    old_log_prob, log_prob, advantages, rollout_is_weights = checked_inputs(
        old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights, extra,
        {"group_ids", "domain_ids", "process_group", "fiberpo_state", "num_groups", "num_domains"}, "fiberpo_domain")
    cfg = read_fiberpo_config(config)
    # FiberPO-Domain (Def. 6.4): 1. the tree's segments, 2. the three-level gate, 3. Eq. 6's surrogate
    state, reducer = _domain_state_and_reducer(extra)
    gseg, G, dseg, D = _domain_segments(extra, log_prob, state, reducer)                     # 1. tree of Def. 6.4
    lr = masked_log_ratio(log_prob, old_log_prob, response_mask)
    out = fiberpo_domain_gated_ratio(lr, response_mask, gseg, dseg, G, D, cfg["eps"], cfg["c_pos_levels"],
                                     cfg["c_neg_levels"], reducer=reducer, state=state)     # 2. Eqs. 30–33
    loss_mat = -out["G"] * advantages.detach()                                             # 3. Eq. 6
    metrics = _fiberpo_metrics(out, response_mask, lr.dtype)
    return finish(loss_mat, _no_dual(~out["inside"]), -lr.detach(), response_mask, loss_agg_mode, config,
                   rollout_is_weights, metrics)


def _domain_state_and_reducer(extra: dict[str, Any]) -> tuple[FiberPODomainState | None, SegmentReducer]:
    """The micro-batch state (``fiberpo_state``) or the reducer over ``process_group``: one or the other."""
    state, pg = extra.get("fiberpo_state"), extra.get("process_group")
    if state is not None:
        if not isinstance(state, FiberPODomainState):
            raise ValueError(f"fiberpo_state must be a FiberPODomainState, got {type(state).__name__}")
        if pg is not None:
            raise ValueError("process_group: give either fiberpo_state (already global, no collective in the loss) "
                             "or process_group, not both")
    return state, reducer_for(pg)


def _domain_segments(extra: dict[str, Any], log_prob: torch.Tensor, state: FiberPODomainState | None,
                     reducer: SegmentReducer) -> tuple[torch.Tensor, int, torch.Tensor, int]:
    """Group and domain codes ``[B]`` with their buffer sizes, after one host sync over every data check: ids in
    range when shared, and every group inside one domain (Def. 6.4's hierarchy is a tree)."""
    shared = state is not None or reducer.distributed
    n_groups = state.num_groups if state is not None else extra.get("num_groups")
    n_domains = state.num_domains if state is not None else extra.get("num_domains")
    did, gseg, G, dseg, D, probes = _tree_codes(extra.get("group_ids"), extra.get("domain_ids"), log_prob.shape[0],
                                                log_prob.device, shared, reducer, n_groups, n_domains)
    d = did.to(torch.float64)
    spread = segment_max(d, gseg, G) + segment_max(-d, gseg, G)                # max - min; -inf if absent
    one_domain = [((spread > 0).any(), "group_ids/domain_ids: a prompt group spans several domains (each group "
                                       "must lie in one domain)")]
    raise_flagged(probes + one_domain)                                                      # one host synchronisation
    return gseg, G, dseg, D


def _tree_codes(group_ids: Any, domain_ids: Any, B: int, device: torch.device, shared: bool, reducer: SegmentReducer,
                n_groups: int | None, n_domains: int | None
                ) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor, int, list[tuple[torch.Tensor, str]]]:
    """Domain ids, group codes and count, domain codes and count (``[B]`` rows), and the range probes still to be
    raised (shared ids only), for the state builder and the loss alike."""
    gid = _ids(group_ids, B, device, "group_ids")
    did = _ids(domain_ids, B, device, "domain_ids")
    gseg, G, probes_g = segment_codes(gid, shared, reducer, n_groups, "group_ids", _SHARED)
    dseg, D, probes_d = segment_codes(did, shared, reducer, n_domains, "domain_ids", _SHARED)
    return did, gseg, G, dseg, D, probes_g + probes_d


# --------------------------------------------------------------------------------------------------------------
# Baselines in RGF form (App. C.4, Remark C.5) and APC-Obj (Def. 3.2, Eq. 3)
# --------------------------------------------------------------------------------------------------------------

@register_policy_loss("grpo")
@register_policy_loss("grpo_rgf")
def grpo_rgf_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                  response_mask: torch.Tensor, loss_agg_mode: str = "seq-mean-token-mean", config: Any = None,
                  rollout_is_weights: torch.Tensor | None = None, **extra: Any
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    r"""GRPO in RGF form (App. C.4): :math:`\mu = \frac{1}{|\mathrm{Tj}|T_\tau}` (``seq-mean-token-mean``),

    .. math:: \mathcal G^{GRPO}(r)_i = \mathrm{sign}(\hat A_i)\min\big(\mathrm{clip}(r_i, 1\pm\epsilon)\,\mathrm{sign}(\hat A_i),\ r_i\,\mathrm{sign}(\hat A_i)\big)

    with ``rgf_min=True`` (default; = PPO's clipped surrogate without dual clip), or
    :math:`\mathcal G = \mathrm{clip}(r, 1\pm\epsilon)` with ``rgf_min=False`` (Remark C.5: the map the paper
    derives from APC-Obj in App. C.5; its gradient is 0 outside the band whatever the advantage's sign).
    ε from ``clip_ratio_low``/``clip_ratio_high`` (verl's keys, default ``clip_ratio`` = 0.2).
    """
    old_log_prob, log_prob, advantages, rollout_is_weights = checked_inputs(
        old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights, extra,
        set(), "grpo_rgf")
    lo, hi = read_clip_eps(config)
    if _read_rgf_min(config):
        loss_mat, log_ratio, _, ind = clipped_surrogate(log_prob, old_log_prob, advantages, 1.0 - lo, 1.0 + hi, None)
    else:
        log_ratio = torch.clamp(log_prob - old_log_prob.detach(), -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        ratio = torch.exp(log_ratio)
        loss_mat = -advantages.detach() * torch.clamp(ratio, 1.0 - lo, 1.0 + hi)       # Remark C.5
        ind = _no_dual((ratio < 1.0 - lo) | (ratio > 1.0 + hi))
    return finish(loss_mat, ind, -log_ratio.detach(), response_mask, loss_agg_mode, config, rollout_is_weights)


#: verl's GSPO clamps the sequence log-ratio from above before ``exp`` (``compute_policy_loss_gspo``); so do we,
#: for parity and against overflow.
GSPO_LOG_RATIO_MAX = 10.0


@register_policy_loss("gspo")
def gspo_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
              response_mask: torch.Tensor, loss_agg_mode: str = "seq-mean-token-mean", config: Any = None,
              rollout_is_weights: torch.Tensor | None = None, **extra: Any) -> tuple[torch.Tensor, dict[str, float]]:
    r"""GSPO in RGF form (App. C.4): :math:`\mu = \frac{1}{|\mathrm{Tj}|T_\tau}`, one gate per trajectory,

    .. math:: s_\tau = \Big(\prod_t r_t\Big)^{1/T_\tau} = \exp\Big(\frac{1}{T_\tau}\sum_t \log r_t\Big),\qquad
              l_\tau = \mathrm{sign}\Big(\sum_t \hat A_t\Big)
    .. math:: \mathcal G^{GSPO}_{\tau,t} = l_\tau\min\big(\mathrm{clip}(s_\tau, 1\pm\epsilon)\,l_\tau,\ s_\tau\,l_\tau\big)
              \ (\texttt{rgf\_min=True, default}),\qquad \mathrm{clip}(s_\tau, 1\pm\epsilon)\ (\texttt{False}, Remark C.5)

    The gradient of :math:`s_\tau` reaches every token of τ (:math:`\partial s_\tau/\partial\log\pi_t = s_\tau/T_\tau`).
    :math:`l_\tau = +1` when :math:`\sum_t\hat A_t = 0` (A4's convention). :math:`\log s_\tau` is clamped at
    10 from above as verl does. verl 0.9.1's ``gspo`` is the GSPO-token form (per-token ratio
    :math:`\mathrm{sg}[s_\tau]\,\pi_t/\mathrm{sg}[\pi_t]`, per-token min with :math:`\hat A_t`); the two agree in value
    and gradient, in every aggregation mode, whenever the advantage is constant along each response (every
    outcome estimator), and differ otherwise (tests/test_gpu_fiberpo.py). ε from ``clip_ratio_low`` /
    ``clip_ratio_high`` (the GSPO paper uses 3e-4 / 4e-4; default ``clip_ratio`` = 0.2).
    """
    old_log_prob, log_prob, advantages, rollout_is_weights = checked_inputs(
        old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights, extra,
        set(), "gspo")
    lo, hi = read_clip_eps(config)
    use_min = _read_rgf_min(config)
    m = response_mask
    diff = log_prob - old_log_prob.detach()
    seq_len = m.sum(-1).clamp(min=1)
    log_s = torch.clamp((diff * m).sum(-1) / seq_len, max=GSPO_LOG_RATIO_MAX)          # log s_τ
    s = torch.exp(log_s)[:, None]
    adv = advantages.detach()
    clipped_s = torch.clamp(s, 1.0 - lo, 1.0 + hi)
    if use_min:
        l_pos = ((adv * m).sum(-1) >= 0)[:, None]                                        # l_τ = +1 (ties: A4)
        # l·min(c·l, s·l) = min(c, s) for l = +1, max(c, s) for l = -1
        G = torch.where(l_pos, torch.minimum(clipped_s, s), torch.maximum(clipped_s, s))
        clipped = (G != s) & (adv != 0)                                                  # gradient cut here
    else:
        G = clipped_s
        clipped = (s < 1.0 - lo) | (s > 1.0 + hi)
    loss_mat = -adv * G
    clipped = clipped.expand_as(loss_mat)
    return finish(loss_mat, _no_dual(clipped), -diff.detach(), response_mask, loss_agg_mode, config,
                   rollout_is_weights)


def apc_gated_ratio(lr: torch.Tensor, mask: torch.Tensor, state_seg: torch.Tensor, num_states: int, delta: float,
                    reducer: SegmentReducer | None = None) -> dict[str, torch.Tensor]:
    r"""APC-Obj's gated ratio (Def. C.3), γ = 1 and a relaxed δ, per token with state codes ``state_seg``
    (``[B, T]`` in ``[0, num_states)``):

    .. math:: \mathcal G^{APC}_i = 1 + \mathrm{clip}\Big(r_i - 1,\ T_s\delta - \sum_{j \ne i,\ s_j = s_i}|r_j - 1|\Big),
              \qquad \mathrm{clip}(a, B) = \mathrm{clip}(a, -B^+, B^+)\quad(3)

    the per-state soft threshold :math:`\mathrm{sign}(\Delta_i)\max(|\Delta_i| - \lambda_s, 0)`,
    :math:`\lambda_s = T_s(\hat D_{TV}(s) - \delta)^+` (spec §2.4). The bound is written as budget minus the
    *other* entries' deviation, as Eq. 3 does (same value as the threshold form, no min/max tie in
    pass-through). Gradients as the formula gives (no stop-gradient): in rollback the clipped value is
    :math:`\mathrm{sign}(\Delta_i)B_i`, independent of :math:`r_i` and decreasing in the other entries' deviation.
    """
    reducer = reducer or SegmentReducer()
    m = mask.to(lr.dtype)
    dev = (torch.exp(lr) - 1.0) * m                                                 # Δ = r - 1, 0 on padding
    seg = state_seg.reshape(-1)
    T_s = reducer.sum(segment_sum(m.reshape(-1), seg, num_states))                  # T_s (a count: no gradient)
    sab = segment_sum_global(dev.abs().reshape(-1), seg, num_states, reducer)       # Σ_{entries at s} |r - 1|
    adev = dev.abs()
    bound = T_s[state_seg] * delta - (sab[state_seg] - adev)                        # Eq. 3's clip bound
    bp = bound.clamp_min(0.0)
    G = 1.0 + torch.maximum(torch.minimum(dev, bp), -bp)
    return {"G": G, "bound": bound, "clipped": adev > bp, "zeroed": bound <= 0, "T_s": T_s, "sab": sab}


@register_policy_loss("apc", extras=("state_ids",))
def apc_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
             response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", config: Any = None,
             rollout_is_weights: torch.Tensor | None = None, **extra: Any) -> tuple[torch.Tensor, dict[str, float]]:
    r"""APC-Obj (Def. 3.2 / C.1, Eq. 3) with γ = 1 and δ relaxed to ``apc_delta`` (default 0.18):

    .. math:: \hat J = \frac1T\sum_i \mathcal G^{APC}_i\hat A_i

    (``token-mean``, the default; :math:`\mathcal G^{APC}` from :func:`apc_gated_ratio`).

    Extras: ``state_ids`` (``[B, T]`` integer tensor: tokens with equal id share a state :math:`s`, e.g. a hash
    of the prefix), ``process_group`` (states shared across ranks: the per-state sums are all-reduced with
    gradient) and ``num_states`` (buffer size for shared ids; default largest id + 1, one host sync). With
    prefix states, :math:`T_s = 1` almost everywhere and APC-Obj degenerates to :math:`1 + \mathrm{clip}(r - 1, \pm\delta)`
    per token (spec §2.4's LLM caveat). Metrics: ``actor/pg_clipfrac`` = tokens with an active clip, and
    ``apc/zeroed_frac`` (bound ≤ 0: censored to :math:`\mathcal G = 1`), ``apc/state_tv_mean``.
    """
    old_log_prob, log_prob, advantages, rollout_is_weights = checked_inputs(
        old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights, extra,
        {"state_ids", "process_group", "num_states"}, "apc")
    delta = _positive(config, "apc_delta", APC_DELTA, "the relaxed APC-Obj radius δ")
    # APC-Obj (Def. 3.2): 1. state codes, 2. Eq. 3's per-state clip, 3. the surrogate Ĵ = (1/T) Σ G·Â
    reducer = reducer_for(extra.get("process_group"))
    seg, n = _state_segments(extra.get("state_ids"), extra.get("num_states"), log_prob, reducer)   # 1.
    lr = masked_log_ratio(log_prob, old_log_prob, response_mask)
    out = apc_gated_ratio(lr, response_mask, seg, n, delta, reducer)                                # 2. Eq. 3
    loss_mat = -out["G"] * advantages.detach()                                                      # 3.
    metrics = _apc_metrics(out, response_mask, lr.dtype)
    return finish(loss_mat, _no_dual(out["clipped"]), -lr.detach(), response_mask, loss_agg_mode, config,
                   rollout_is_weights, metrics)


def _state_segments(ids: Any, num_states: int | None, log_prob: torch.Tensor, reducer: SegmentReducer
                    ) -> tuple[torch.Tensor, int]:
    """State codes ``[B, T]`` for ``state_ids`` and the buffer size: dense codes for local states, the ids
    themselves (range-checked, one host sync) when states are shared across ranks or ``num_states`` is given."""
    shape = tuple(log_prob.shape)
    if ids is None:
        raise ValueError(f"state_ids is required for apc (an integer state id per token, shape {shape})")
    if not isinstance(ids, torch.Tensor) or ids.shape != log_prob.shape or ids.is_floating_point() \
            or ids.is_complex():
        got = f"{ids.dtype} {tuple(ids.shape)}" if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"state_ids must be an integer tensor of shape {shape}, got {got}")
    ids = ids.to(device=log_prob.device, dtype=torch.int64)
    if reducer.distributed or num_states is not None:
        flat, n, probes = segment_codes(ids.reshape(-1), True, reducer, num_states, "state_ids",
                                        "process_group or num_states")
        raise_flagged(probes)
        return flat.view_as(ids), n
    return dense_segments(ids.reshape(-1)).view_as(ids), ids.numel()


def _apc_metrics(out: dict[str, torch.Tensor], mask: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``apc/zeroed_frac`` (bound ≤ 0: censored to G = 1) and ``apc/state_tv_mean``."""
    with torch.no_grad():
        present = out["T_s"] > 0
        return {"apc/zeroed_frac": masked_frac(out["zeroed"], mask, dtype),
                # mean over the states present of D̂_TV(s) = Σ|r-1| / T_s (no ½, spec A2)
                "apc/state_tv_mean": (torch.where(present, out["sab"].detach() / out["T_s"].clamp_min(1.0), 0.0)
                                      .sum() / present.sum().clamp_min(1))}
