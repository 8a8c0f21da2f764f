r"""PPO and BandPO (:func:`ppo_loss`, :func:`bandpo_loss`), on the public core :mod:`fiberlab.gpu.objective`."""

from __future__ import annotations

from typing import Any

import torch

from fiberlab.gpu.band import DIVERGENCES, band_active_bound
from fiberlab.gpu.config import hparam_bool, hparam_choice, hparam_real
from fiberlab.gpu.objective import (checked_inputs, clipped_surrogate, count_frac, finish, read_clip_eps, read_dual_clip,
                                    register_policy_loss)


# --------------------------------------------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------------------------------------------

@register_policy_loss("ppo")
def ppo_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
             response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", config: Any = None,
             rollout_is_weights: torch.Tensor | None = None, **extra: Any) -> tuple[torch.Tensor, dict[str, float]]:
    r"""PPO clip as verl's ``vanilla`` computes it: symmetric clip, clip-higher, dual clip.

    .. math:: r = \exp(\mathrm{clamp}(\log\pi_\theta - \log\pi_{old}, -20, 20)),\quad
              L = \max(-A r, -A\,\mathrm{clip}(r, 1-\epsilon_-, 1+\epsilon_+)),\ \ A<0: L \leftarrow \min(L, -cA)

    Config (verl's actor keys): ``clip_ratio`` (0.2), ``clip_ratio_low``/``clip_ratio_high`` (default
    ``clip_ratio``; ``clip_ratio_high > clip_ratio_low`` is DAPO's clip-higher), ``clip_ratio_c`` (3.0; ``inf``
    turns dual clip off — verl itself always applies it; ``None``, as for every key, means the default).
    """
    old_log_prob, log_prob, advantages, rollout_is_weights = checked_inputs(
        old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights, extra, set(),
        "ppo")
    eps_low, eps_high = read_clip_eps(config)
    c = read_dual_clip(config)
    loss_mat, log_ratio, ratio, ind = clipped_surrogate(log_prob, old_log_prob, advantages,
                                                        1.0 - eps_low, 1.0 + eps_high, c)
    return finish(loss_mat, ind, -log_ratio, response_mask, loss_agg_mode, config, rollout_is_weights)


# BandPO hyperparameters: (our key, default, the BandPO authors' verl key as an alias)
BAND_DIVERGENCE_ALIASES = {"bandkl": "kl", "bandtv": "tv", "bandchi2": "chi2"}


def read_band_config(config: Any) -> dict[str, Any]:
    """BandPO's settings from a config: divergence, δ, upper cap, relax (documented in :func:`bandpo_loss`)."""
    div = hparam_choice(config, "band_divergence", "kl", DIVERGENCES, "tokenwise_ratio_bounds_method",
                        rename=BAND_DIVERGENCE_ALIASES)
    delta = hparam_real(config, "band_delta", 0.05, "band_radius_delta", lo=0.0, lo_open=True,
                        what="the trust-region radius δ, a positive number")
    cap = hparam_real(config, "band_upper_bound_max", None, "upper_bound_max", lo=1.0,
                      what="the cap on the band's upper end (the band contains r = 1)")
    relax = hparam_bool(config, "band_relax", False, "does_relax_high_p_bound")
    # The loss defaults to the lookup table: same accuracy class as the Newton solver (float32 round-off in
    # float32, polished to float64 round-off in float64; see `fiberlab bench band`) at a fraction of the cost.
    method = hparam_choice(config, "band_method", "table", ("newton", "table"))
    return {"divergence": div, "delta": delta, "upper_bound_max": cap, "relax": relax, "method": method}


@register_policy_loss("bandpo")
def bandpo_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", config: Any = None,
                rollout_is_weights: torch.Tensor | None = None, **extra: Any) -> tuple[torch.Tensor, dict[str, float]]:
    r"""BandPO: PPO's clipped surrogate with per-token Band bounds instead of ``[1-ε₋, 1+ε₊]`` (BandPO §2.1).

    .. math:: L_t = \max\big(-A_t r_t,\ -A_t\,\mathrm{clip}(r_t, \underline r_{f,\delta}(p_t), \overline r_{f,\delta}(p_t))\big),
              \qquad p_t = \pi_{old}(a_t|s_t)

    The bounds come from ``old_log_prob`` without gradient (:func:`fiberlab.gpu.band.band_active_bound`: only
    the end the clip can reach, in one fused pass, with the band statistics); gradient
    flows only through :math:`r_t`, and a clipped token gives zero gradient, as in PPO. Dual clip as in
    :func:`ppo_loss` (the authors' scripts use ``clip_ratio_c = 10``).

    Config keys (``config.policy_loss.*`` or ``config.*``; the authors' names work as aliases):
    ``band_divergence`` ("kl" | "tv" | "chi2"; alias ``tokenwise_ratio_bounds_method`` with "bandkl" etc.,
    default "kl"), ``band_delta`` (δ > 0, default 0.05; alias ``band_radius_delta``),
    ``band_upper_bound_max`` (cap on the upper bound, default none = the theory's interval; the authors use
    10; alias ``upper_bound_max``), ``band_relax`` (union with ``[1-clip_ratio_low, 1+clip_ratio_high]``,
    default False; alias ``does_relax_high_p_bound``), ``band_method`` ("table" | "newton": the KL solver,
    see :func:`fiberlab.gpu.band.band_bounds`; default "table"), ``clip_ratio_c``.
    """
    old_log_prob, log_prob, advantages, rollout_is_weights = checked_inputs(
        old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights, extra, set(),
        "bandpo")
    band = read_band_config(config)
    c = read_dual_clip(config)
    relax = read_clip_eps(config) if band["relax"] else None
    # One fused pass over old_log_prob: the end of each token's band that the clip can reach, and the sums of
    # r̲ and log r̄ over the valid tokens (the band statistics below).
    bound, sum_lower, sum_log_upper = band_active_bound(
        old_log_prob.detach(), advantages.detach(), response_mask, band["divergence"], band["delta"],
        upper_bound_max=band["upper_bound_max"], relax=relax, method=band["method"])
    loss_mat, log_ratio, ratio, ind = clipped_surrogate(log_prob, old_log_prob, advantages, bound, None, c)
    metrics, n_clipped = _band_metrics(sum_lower, sum_log_upper, ind["clipped"], advantages, response_mask)
    return finish(loss_mat, ind, -log_ratio, response_mask, loss_agg_mode, config, rollout_is_weights, metrics,
                   clipped_count=n_clipped)


def _band_metrics(sum_lower: torch.Tensor, sum_log_upper: torch.Tensor, clipped: torch.Tensor,
                  advantages: torch.Tensor, response_mask: torch.Tensor
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """BandPO's own metrics over the valid tokens.

    ``band_lower_mean`` and ``band_log_upper_mean`` (the log: r̄ ≈ δ/p is astronomically large on tail tokens,
    its plain mean is meaningless) are the fused kernel's masked sums over verl's guarded token count;
    ``clipfrac_high`` and ``clipfrac_low`` split the clipped tokens by the sign of A. A token is clipped
    (``pg2 > pg1``) exactly when A > 0 and r > r̄, or A < 0 and r < r̲ (A = 0 gives pg1 = pg2), so the low
    count is the clipped count minus the high one. Also returns the clipped count, which ``actor/pg_clipfrac``
    reuses.
    """
    n = response_mask.sum() + 1e-8                 # verl's guarded token count, as in masked_mean
    dtype = sum_lower.dtype
    clipped_valid = clipped & response_mask.bool()
    n_clipped = clipped_valid.sum()
    n_high = clipped_valid.logical_and_(advantages > 0).sum()
    return {
        "fiberlab/band_lower_mean": sum_lower / n,
        "fiberlab/band_log_upper_mean": sum_log_upper / n,
        "fiberlab/clipfrac_high": count_frac(n_high, response_mask, dtype),
        "fiberlab/clipfrac_low": count_frac(n_clipped - n_high, response_mask, dtype),
    }, n_clipped


# Objectives defined in their own modules register themselves on import.
