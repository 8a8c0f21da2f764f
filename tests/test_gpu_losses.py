"""fiberlab.gpu.losses: ``ppo`` and ``bandpo`` against the float64 NumPy reference (fiberlab.numerics.ppo).

Value, gradient (autograd on ``log_prob``) and verl's metrics on Hypothesis-generated batches: B ∈ 1..6,
T ∈ 1..8, masks with all-zero rows (at least one valid token), advantages constant per sequence or per token,
clip-higher (ε₋ ≠ ε₊), dual clip c ∈ (1, 10] or off, all five aggregation modes, rollout weights on/off,
verl's global-batch arguments. BandPO: each divergence, the reference fed the bounds from ``band_bounds``.

The surrogate has kinks (``r = 1 + ε₊`` for A > 0, ``r = 1 - ε₋`` and ``r = c`` for A < 0, ``|Δ| = 20``) where the
gradient is one-sided; the generator keeps every log-ratio ``KINK_MARGIN`` away from them
(:func:`fiberlab.numerics.ppo.log_ratio_kinks`), so the reference's gradient is unambiguous. Exact on-policy
tokens (``Δ = 0``, ties ``L₁ = L₂`` inside the interval) are tested separately: torch's tie rule gives ``-A``.

Mask dtype matters at the 1e-9 level in float64: verl (and fiberlab) add 1e-8 to the mask's own sum before
dividing. A bool mask sums to an integer tensor, ``+ 1e-8`` is then evaluated in torch's default float32 and
rounds away; a float64 mask keeps it. The reference models this with ``seq_len_guard``/``count_guard``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from fiberlab.claims.losses import active_end_case
from fiberlab.gpu.band import DIVERGENCES, band_bounds
from fiberlab.gpu.losses import AGG_MODES, POLICY_LOSSES, bandpo_loss, clipped_surrogate, get_policy_loss, ppo_loss
from fiberlab.numerics.ppo import (agg_loss_np, agg_weights_np, clipped_surrogate_np, log_ratio_kinks,
                                   policy_loss_np, surrogate_metrics_np)

#: Loss values: sums of ≤ 48 terms in another order and a few divisions: error ≤ ~50 eps·Σ|terms| ≈ 1e-14·Σ|terms|;
#: compared as |L - L_ref| ≤ LOSS_RTOL·Σ|a w L| (the condition of the sum, so cancellation cannot fail it).
LOSS_RTOL = 1e-12
#: Per-token gradient a·w·(-A)·r: a handful of roundings (and torch's exact 1/2 + 1/2 at max ties): ≤ ~8 eps.
GRAD_RTOL = 1e-12
#: Metrics: a masked count or sum divided by the token count; same reasoning as LOSS_RTOL.
METRIC_RTOL = 1e-12
#: Distance (in log-ratio) the generator keeps from every kink: far above the ~1e-14 rounding of Δ = new - old
#: and of exp, far below any scale of the data.
KINK_MARGIN = 1e-7
#: verl's guard added to the token count / sequence length (agg_loss, masked_mean).
VERL_GUARD = 1e-8


# --------------------------------------------------------------------------------------------------------------
# Batch generation
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Batch:
    old_log_prob: torch.Tensor
    log_prob: torch.Tensor
    advantages: torch.Tensor
    response_mask: torch.Tensor
    rollout_is_weights: torch.Tensor | None

    def np(self, name: str) -> np.ndarray | None:
        t = getattr(self, name)
        return None if t is None else t.detach().double().numpy()

    @property
    def guard(self) -> float:
        return VERL_GUARD if self.response_mask.dtype == torch.float64 else 0.0


def _uniform(g, shape, lo, hi):
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)


def make_mask(g: torch.Generator, B: int, T: int, mask_dtype: torch.dtype) -> torch.Tensor:
    """Per row: empty (20 %), a prefix of random length like a response (40 %), or Bernoulli(0.6) (40 %);
    at least one valid token overall."""
    kind = torch.rand(B, generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    prefix = torch.arange(T)[None, :] < lengths[:, None]
    bern = torch.rand(B, T, generator=g) < 0.6
    mask = torch.where((kind < 0.6)[:, None], prefix, bern) & (kind >= 0.2)[:, None]
    if not bool(mask.any()):
        mask[int(torch.randint(B, (1,), generator=g)), int(torch.randint(T, (1,), generator=g))] = True
    return mask.to(mask_dtype)


def make_old_log_prob(g, B, T) -> torch.Tensor:
    scale = [0.5, 4.0, 30.0][int(torch.randint(3, (1,), generator=g))]
    old = -scale * torch.rand(B, T, generator=g, dtype=torch.float64)
    return torch.where(torch.rand(B, T, generator=g) < 0.1, torch.zeros_like(old), old)   # some p = 1 tokens


def deepen_old_log_prob(g, old: torch.Tensor) -> torch.Tensor:
    """About 20 % of the tokens other than p = 1 moved to [-45, -25], where a far log-ratio up to +25 stays a
    log-probability (a ratio r ≤ 1/p_old). Drawn after the mask, advantages and weights, so a seed gives the
    same ones as without it."""
    deep = _uniform(g, old.shape, -45.0, -25.0)
    return torch.where((torch.rand(old.shape, generator=g) < 0.2) & (old != 0), deep, old)


def make_advantages(g, B, T, per_sequence: bool) -> torch.Tensor:
    a = torch.randn(B, 1 if per_sequence else T, generator=g, dtype=torch.float64)
    a = torch.where(torch.rand(a.shape, generator=g) < 0.1, torch.zeros_like(a), a)
    return a.expand(B, T).clone()


def make_log_ratio(g, old, adv, lower, upper, c) -> np.ndarray:
    """Log-ratios: mostly near on-policy, some far (beyond the ±20 clamp), some exactly 0; reflected
    (Δ → -Δ) where ``old + Δ`` would exceed 0, so ``old + Δ`` is a log-probability (then Δ > -old ≥ 0 and
    old - Δ ≤ 2·old ≤ 0). Then each is moved by 2.5 margins until it is KINK_MARGIN away from all of its token's
    kinks (≤ 5 kinks, ≤ 6 moves): right, or left where 8 moves right could reach ``old + Δ > 0`` (a p = 1 token,
    whose r = 1 can be a kink)."""
    B, T = adv.shape
    near = 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    far = _uniform(g, (B, T), -25.0, 25.0)
    u = torch.rand(B, T, generator=g)
    delta = torch.where(u < 0.7, near, torch.where(u < 0.9, far, torch.zeros_like(near))).numpy()
    old = old.numpy()
    delta = np.where(old + delta > 0, -delta, delta)
    step = np.where(old + delta + 8 * 2.5 * KINK_MARGIN > 0, -2.5 * KINK_MARGIN, 2.5 * KINK_MARGIN)
    kinks = log_ratio_kinks(adv.numpy(), lower, upper, c)
    for _ in range(8):
        close = (np.abs(delta[..., None] - kinks) < KINK_MARGIN).any(-1)
        if not close.any():
            return delta
        delta = np.where(close, delta + step, delta)
    raise AssertionError("could not place log-ratios away from the kinks")


def build_batch(seed: int, B: int, T: int, per_sequence: bool, weights: bool, mask_dtype: torch.dtype,
                bounds) -> tuple[Batch, Any, Any]:
    """``bounds(old_log_prob) -> (lower, upper)`` (scalars for PPO, arrays for BandPO); returns the batch and the
    bounds the reference is fed."""
    g = torch.Generator().manual_seed(seed)
    old = make_old_log_prob(g, B, T)
    adv = make_advantages(g, B, T, per_sequence)
    mask = make_mask(g, B, T, mask_dtype)
    w = None
    if weights:
        w = _uniform(g, (B, T), 0.0, 2.0)
        w = torch.where(torch.rand(B, T, generator=g) < 0.1, torch.zeros_like(w), w)
    old = deepen_old_log_prob(g, old)
    lower, upper, c = bounds(old)
    delta = make_log_ratio(g, old, adv, lower, upper, c)
    new = old + torch.from_numpy(delta)
    return Batch(old, new, adv, mask, w), lower, upper


# --------------------------------------------------------------------------------------------------------------
# Checking one call against the reference
# --------------------------------------------------------------------------------------------------------------

def run_loss(fn, batch: Batch, mode: str, config) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    log_prob = batch.log_prob.clone().requires_grad_(True)
    loss, metrics = fn(batch.old_log_prob, log_prob, batch.advantages, batch.response_mask, mode, config,
                       batch.rollout_is_weights)
    loss.backward()
    return loss.detach(), log_prob.grad, metrics


def check_against_reference(fn, batch: Batch, mode: str, config, lower, upper, c, agg_kw=None) -> None:
    agg_kw = dict(agg_kw or {})
    loss, grad, metrics = run_loss(fn, batch, mode, config)
    old, new, adv, mask, w = (batch.np(n) for n in ("old_log_prob", "log_prob", "advantages", "response_mask",
                                                      "rollout_is_weights"))
    ref_loss, ref_grad = policy_loss_np(old, new, adv, mask, mode, lower, upper, c, w,
                                        seq_len_guard=batch.guard, **agg_kw)
    # Condition of the aggregate: Σ |a w L| (the reference's per-token terms).
    ratio = np.exp(np.clip(new - old, -20, 20))
    terms = agg_weights_np(mask, mode, seq_len_guard=batch.guard, **agg_kw) \
        * (1.0 if w is None else w) * clipped_surrogate_np(ratio, adv, lower, upper, c).loss
    scale = np.abs(terms).sum()
    assert abs(loss.item() - ref_loss) <= LOSS_RTOL * scale + 1e-300, (loss.item(), ref_loss, scale)
    g = grad.numpy()
    assert np.all(np.abs(g - ref_grad) <= GRAD_RTOL * np.abs(ref_grad)), np.abs(g - ref_grad).max()
    ref_metrics = surrogate_metrics_np(old, new, adv, mask, lower, upper, c, count_guard=batch.guard)
    kl_scale = np.abs(np.clip(new - old, -20, 20))[mask > 0].mean()
    for key, ref in ref_metrics.items():
        scale = kl_scale if key == "actor/ppo_kl" else abs(ref)
        assert abs(metrics[key] - ref) <= METRIC_RTOL * scale + 1e-15, (key, metrics[key], ref)


# --------------------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------------------

shapes = st.tuples(st.integers(1, 6), st.integers(1, 8))
seeds = st.integers(0, 2**32 - 1)
modes = st.sampled_from(AGG_MODES)
mask_dtypes = st.sampled_from([torch.bool, torch.float64])
dual_clip = st.one_of(st.none(), st.floats(1.0, 10.0, exclude_min=True))
eps_low_s = st.floats(0.0, 0.9)
eps_high_s = st.floats(0.0, 2.0)


def _c_config(c):
    """``None`` (no dual clip) is spelled ``inf`` in a config: ``clip_ratio_c: null`` means verl's default 3."""
    return float("inf") if c is None else c


# --------------------------------------------------------------------------------------------------------------
# PPO and BandPO against the reference
# --------------------------------------------------------------------------------------------------------------

@given(shape=shapes, seed=seeds, mode=modes, per_sequence=st.booleans(), weights=st.booleans(),
       mask_dtype=mask_dtypes, eps_low=eps_low_s, eps_high=eps_high_s, c=dual_clip)
def test_ppo_matches_reference(shape, seed, mode, per_sequence, weights, mask_dtype, eps_low, eps_high, c):
    lower, upper = 1.0 - eps_low, 1.0 + eps_high
    batch, lo, up = build_batch(seed, *shape, per_sequence, weights, mask_dtype, lambda old: (lower, upper, c))
    config = {"clip_ratio_low": eps_low, "clip_ratio_high": eps_high, "clip_ratio_c": _c_config(c)}
    check_against_reference(ppo_loss, batch, mode, config, lo, up, c)


@given(shape=shapes, seed=seeds, mode=modes, per_sequence=st.booleans(), weights=st.booleans(),
       mask_dtype=mask_dtypes, divergence=st.sampled_from(DIVERGENCES), delta=st.floats(1e-4, 3.0),
       cap=st.one_of(st.none(), st.floats(1.0, 50.0)), relax=st.one_of(st.none(), st.tuples(eps_low_s, eps_high_s)),
       c=dual_clip)
def test_bandpo_matches_reference_fed_band_bounds(shape, seed, mode, per_sequence, weights, mask_dtype, divergence,
                                                  delta, cap, relax, c):
    def bounds(old):
        lo, up = band_bounds(old, divergence, delta, upper_bound_max=cap, relax=relax)
        return lo.numpy(), up.numpy(), c

    batch, lo, up = build_batch(seed, *shape, per_sequence, weights, mask_dtype, bounds)
    config = {"band_divergence": divergence, "band_delta": delta, "band_upper_bound_max": cap,
              "band_relax": relax is not None, "clip_ratio_c": _c_config(c)}
    if relax is not None:
        config.update(clip_ratio_low=relax[0], clip_ratio_high=relax[1])
    check_against_reference(bandpo_loss, batch, mode, config, lo, up, c)


@given(shape=shapes, seed=seeds, mode=st.sampled_from(AGG_MODES), loss=st.sampled_from(["ppo", "bandpo"]),
       dp_size=st.integers(1, 8), extra_tokens=st.integers(0, 40), extra_seqs=st.integers(0, 6),
       lsf=st.one_of(st.none(), st.floats(1.0, 4096.0)))
def test_global_batch_info(shape, seed, mode, loss, dp_size, extra_tokens, extra_seqs, lsf):
    """verl's ``config.global_batch_info`` (dp_size, global token and sequence counts, loss_scale_factor) is
    honoured as verl's agg_loss does (ecosystem §A.5: global normalisation under micro-batching)."""
    c = 3.0
    if loss == "ppo":
        def bounds(old):
            return 0.8, 1.28, c
    else:
        def bounds(old):
            lo, up = band_bounds(old, "kl", 0.05)
            return lo.numpy(), up.numpy(), c
    batch, lo, up = build_batch(seed, *shape, True, False, torch.bool, bounds)
    n_tok = int(batch.response_mask.sum()) + extra_tokens
    n_seq = int((batch.response_mask.sum(-1) > 0).sum()) + extra_seqs
    info = {"dp_size": dp_size, "batch_num_tokens": n_tok, "global_batch_size": n_seq, "loss_scale_factor": lsf}
    config = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": c, "global_batch_info": info}
    agg_kw = dict(dp_size=dp_size, batch_num_tokens=n_tok, global_batch_size=n_seq, loss_scale_factor=lsf)
    check_against_reference(POLICY_LOSSES[loss], batch, mode, config, lo, up, c, agg_kw)


@given(shape=shapes, seed=seeds, mode=modes, loss=st.sampled_from(["ppo", "bandpo"]), weights=st.booleans(),
       mask_dtype=mask_dtypes, divergence=st.sampled_from(DIVERGENCES), eps_low=eps_low_s, eps_high=eps_high_s,
       c=dual_clip)
def test_on_policy(shape, seed, mode, loss, weights, mask_dtype, divergence, eps_low, eps_high, c):
    """log_prob == old_log_prob: r = 1 is inside every interval, nothing is clipped, ppo_kl = 0, and the gradient
    is -A × (aggregation weight) × (rollout weight) — also on tokens where r = 1 is an end of the interval
    (ε₋ = 0, or p = 1 where the Band upper bound is 1): torch's max tie splits -A + -A in halves."""
    batch, _, _ = build_batch(seed, *shape, False, weights, mask_dtype, lambda old: (0.5, 2.0, None))
    batch.log_prob = batch.old_log_prob.clone()
    config = {"clip_ratio_low": eps_low, "clip_ratio_high": eps_high, "clip_ratio_c": _c_config(c),
              "band_divergence": divergence, "band_delta": 0.05}
    loss_value, grad, metrics = run_loss(POLICY_LOSSES[loss], batch, mode, config)
    assert metrics["actor/pg_clipfrac"] == 0.0
    assert metrics["actor/pg_clipfrac_lower"] == 0.0
    assert metrics["actor/ppo_kl"] == 0.0
    a = agg_weights_np(batch.np("response_mask"), mode, seq_len_guard=batch.guard)
    w = 1.0 if batch.rollout_is_weights is None else batch.np("rollout_is_weights")
    expected = -batch.np("advantages") * a * w
    assert np.all(np.abs(grad.numpy() - expected) <= GRAD_RTOL * np.abs(expected))
    assert abs(loss_value.item() - expected.sum()) <= LOSS_RTOL * np.abs(expected).sum() + 1e-300


def test_on_policy_with_eps_low_zero_exact_tie():
    """A hand-made exact tie: ε₋ = 0 puts r = 1 on the lower end for A < 0; autograd gives exactly -A·a."""
    old = torch.tensor([[-0.5, -1.0, 0.0]], dtype=torch.float64)
    adv = torch.tensor([[-1.0, 2.0, -3.0]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    for fn, cfg in ((ppo_loss, {"clip_ratio_low": 0.0, "clip_ratio_high": 0.0}),
                    (bandpo_loss, {"band_delta": 0.05})):
        lp = old.clone().requires_grad_(True)
        loss, m = fn(old, lp, adv, mask, "token-mean", cfg)
        loss.backward()
        expected = -adv / 3
        assert bool(((lp.grad - expected).abs() <= GRAD_RTOL * expected.abs()).all())
        assert m["actor/pg_clipfrac"] == 0.0


def _surrogate_outputs(lp0, old, adv, lower, upper, c):
    lp = lp0.clone().requires_grad_(True)
    loss, log_ratio, ratio, ind = clipped_surrogate(lp, old, adv, lower, upper, c)
    loss.sum().backward()
    return loss.detach(), ind["clipped"], ind["dual"], lp.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(seed=seeds, n=st.integers(1, 200), c=dual_clip)
def test_active_end_surrogate_equals_two_sided(dtype, seed, n, c):
    """``clipped_surrogate(..., b, None)`` with b = r̄ where A > 0 and r̲ elsewhere (what bandpo feeds it) gives
    the two-sided ``clip(r, r̲, r̄)`` surrogate's value, clip and dual-clip indicators and gradient to the bit,
    including ratios placed exactly on the active end, one ulp either side of it (ties of the two branches
    after rounding), and at A = 0."""
    old, lp, adv, lower, upper, b = active_end_case(dtype, seed, n)
    two = _surrogate_outputs(lp, old, adv, lower, upper, c)
    one = _surrogate_outputs(lp, old, adv, b, None, c)
    for a, z, name in zip(two, one, ("loss", "clipped", "dual", "grad")):
        assert torch.equal(a, z), (name, (a != z).nonzero())


def test_reference_aggregation_is_linear():
    """Sanity of the reference itself: agg_loss_np(L) = Σ agg_weights_np · L for every mode."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        L = rng.normal(size=(4, 6))
        m = rng.random((4, 6)) < 0.5
        m[0] = False
        m[1, 0] = True
        for mode in AGG_MODES:
            for kw in ({}, {"dp_size": 3, "batch_num_tokens": 50, "global_batch_size": 7, "loss_scale_factor": 9.0}):
                assert math.isclose(agg_loss_np(L, m, mode, **kw), (agg_weights_np(m, mode, **kw) * L).sum(),
                                    rel_tol=1e-13, abs_tol=1e-15)


# --------------------------------------------------------------------------------------------------------------
# Config reading
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class PolicyLossSection:
    loss_mode: str = "bandpo"
    band_divergence: str = "tv"
    band_delta: float = 0.1
    band_upper_bound_max: float | None = 10.0
    band_relax: bool = True


@dataclasses.dataclass
class FlatConfig:
    clip_ratio: float = 0.2
    clip_ratio_low: float = 0.15
    clip_ratio_high: float = 0.3
    clip_ratio_c: float = 2.5
    band_divergence: str = "tv"
    band_delta: float = 0.1
    band_upper_bound_max: float | None = 10.0
    band_relax: bool = True


@dataclasses.dataclass
class NestedConfig:
    clip_ratio: float = 0.2
    clip_ratio_low: float = 0.15
    clip_ratio_high: float = 0.3
    clip_ratio_c: float = 2.5
    policy_loss: PolicyLossSection = dataclasses.field(default_factory=PolicyLossSection)


def _fixed_batch(seed=7, B=4, T=6):
    """A batch far enough off-policy (log-ratios ~ N(0, 1), reflected where ``old + Δ`` would exceed 0) that the
    clip interval matters on many tokens."""
    batch, _, _ = build_batch(seed, B, T, False, True, torch.bool, lambda old: (0.8, 1.3, 2.5))
    g = torch.Generator().manual_seed(seed + 1)
    noise = torch.randn(B, T, generator=g, dtype=torch.float64)
    old = batch.old_log_prob
    batch.log_prob = torch.where(old + noise > 0, old - noise, old + noise)
    return batch


def _outputs(fn, batch, mode, config):
    return run_loss(fn, batch, mode, config)


def _assert_identical(a, b):
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]


@pytest.mark.parametrize("mode", AGG_MODES)
def test_config_dict_dictconfig_dataclass_identical(mode):
    batch = _fixed_batch()
    flat = dataclasses.asdict(FlatConfig())
    nested = dataclasses.asdict(NestedConfig())
    variants = [flat, OmegaConf.create(flat), FlatConfig(), nested, OmegaConf.create(nested), NestedConfig()]
    for fn in (ppo_loss, bandpo_loss):
        outs = [_outputs(fn, batch, mode, cfg) for cfg in variants]
        for other in outs[1:]:
            _assert_identical(outs[0], other)
    # The settings are really read: with the defaults (KL, δ = 0.05, no cap, no relax) the loss differs.
    assert not torch.equal(_outputs(bandpo_loss, batch, mode, flat)[0], _outputs(bandpo_loss, batch, mode, None)[0])
    assert not torch.equal(_outputs(ppo_loss, batch, mode, flat)[0], _outputs(ppo_loss, batch, mode, None)[0])


def test_config_none_uses_documented_defaults():
    batch = _fixed_batch()
    defaults = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.2, "clip_ratio_c": 3.0}
    _assert_identical(_outputs(ppo_loss, batch, "token-mean", None), _outputs(ppo_loss, batch, "token-mean", defaults))
    band_defaults = {"band_divergence": "kl", "band_delta": 0.05, "clip_ratio_c": 3.0}
    _assert_identical(_outputs(bandpo_loss, batch, "token-mean", None),
                      _outputs(bandpo_loss, batch, "token-mean", band_defaults))
    # verl's "null means default": clip_ratio_low: None falls back to clip_ratio
    _assert_identical(_outputs(ppo_loss, batch, "token-mean", {"clip_ratio": 0.3, "clip_ratio_low": None}),
                      _outputs(ppo_loss, batch, "token-mean", {"clip_ratio_low": 0.3, "clip_ratio_high": 0.3}))


@pytest.mark.parametrize("authors, ours", [
    ({"tokenwise_ratio_bounds_method": "bandtv", "band_radius_delta": 0.1},
     {"band_divergence": "tv", "band_delta": 0.1}),
    ({"tokenwise_ratio_bounds_method": "bandkl", "band_radius_delta": 0.02, "upper_bound_max": 10.0},
     {"band_divergence": "kl", "band_delta": 0.02, "band_upper_bound_max": 10.0}),
    ({"tokenwise_ratio_bounds_method": "bandchi2", "band_radius_delta": 0.3, "does_relax_high_p_bound": True,
      "clip_ratio_low": 0.2, "clip_ratio_high": 0.28},
     {"band_divergence": "chi2", "band_delta": 0.3, "band_relax": True, "clip_ratio_low": 0.2,
      "clip_ratio_high": 0.28}),
])
def test_authors_alias_keys(authors, ours):
    batch = _fixed_batch(seed=11)
    for mode in ("token-mean", "seq-mean-token-mean"):
        _assert_identical(_outputs(bandpo_loss, batch, mode, authors), _outputs(bandpo_loss, batch, mode, ours))
        _assert_identical(_outputs(bandpo_loss, batch, mode, {"policy_loss": authors}),
                          _outputs(bandpo_loss, batch, mode, ours))


def test_registry():
    assert get_policy_loss("ppo") is ppo_loss and get_policy_loss("bandpo") is bandpo_loss
    with pytest.raises(ValueError, match="nope"):
        get_policy_loss("nope")


# --------------------------------------------------------------------------------------------------------------
# Bad input: ValueError naming the argument
# --------------------------------------------------------------------------------------------------------------

def _good():
    g = torch.Generator().manual_seed(3)
    old = -0.1 - torch.rand(3, 4, generator=g, dtype=torch.float64)     # ≤ -0.1: log_prob = old + 0.1 ≤ 0
    return {"old_log_prob": old, "log_prob": old + 0.1, "advantages": torch.randn(3, 4, generator=g, dtype=torch.float64),
            "response_mask": torch.ones(3, 4, dtype=torch.bool)}


def _call(fn, overrides=None, mode="token-mean", config=None, weights=None):
    args = _good()
    args.update(overrides or {})
    return fn(args["old_log_prob"], args["log_prob"], args["advantages"], args["response_mask"], mode, config,
              weights)


def _names(arg: str) -> str:
    """Regex: the message names ``arg`` (``log_prob`` must not be matched inside ``old_log_prob``)."""
    return rf"(?<![A-Za-z_]){re.escape(arg)}(?![A-Za-z_])"


BAD_TENSORS = []
for _name in ("old_log_prob", "log_prob", "advantages"):
    for _bad in (float("nan"), float("inf"), float("-inf")):
        BAD_TENSORS.append((_name, _bad))


@pytest.mark.parametrize("fn", [ppo_loss, bandpo_loss], ids=["ppo", "bandpo"])
@pytest.mark.parametrize("name, bad", BAD_TENSORS)
def test_non_finite_inputs(fn, name, bad):
    t = _good()[name].clone()
    t[1, 2] = bad
    with pytest.raises(ValueError, match=_names(name)):
        _call(fn, {name: t})


@pytest.mark.parametrize("fn", [ppo_loss, bandpo_loss], ids=["ppo", "bandpo"])
@pytest.mark.parametrize("name", ["old_log_prob", "advantages", "response_mask"])
def test_shape_mismatch(fn, name):
    t = _good()[name]
    with pytest.raises(ValueError, match=_names(name)):
        _call(fn, {name: torch.cat([t, t[:, :1]], dim=1)})
    with pytest.raises(ValueError, match=_names(name)):
        _call(fn, {name: t[:2]})


@pytest.mark.parametrize("fn", [ppo_loss, bandpo_loss], ids=["ppo", "bandpo"])
def test_bad_shapes_of_log_prob_and_weights(fn):
    with pytest.raises(ValueError, match=_names("log_prob")):
        _call(fn, {"log_prob": _good()["log_prob"][0]})           # 1-D
    with pytest.raises(ValueError, match=_names("rollout_is_weights")):
        _call(fn, weights=torch.ones(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=_names("rollout_is_weights")):
        _call(fn, weights=-torch.ones(3, 4, dtype=torch.float64))


@pytest.mark.parametrize("fn", [ppo_loss, bandpo_loss], ids=["ppo", "bandpo"])
@pytest.mark.parametrize("mask", [torch.full((3, 4), 0.5, dtype=torch.float64),
                                  2 * torch.ones(3, 4, dtype=torch.long),
                                  -torch.ones(3, 4, dtype=torch.float64)])
def test_non_binary_mask(fn, mask):
    with pytest.raises(ValueError, match=_names("response_mask")):
        _call(fn, {"response_mask": mask})


@pytest.mark.parametrize("fn", [ppo_loss, bandpo_loss], ids=["ppo", "bandpo"])
@pytest.mark.parametrize("dtype", [torch.bool, torch.float64])
def test_empty_mask(fn, dtype):
    with pytest.raises(ValueError, match=_names("response_mask")):
        _call(fn, {"response_mask": torch.zeros(3, 4, dtype=dtype)})


@pytest.mark.parametrize("fn", [ppo_loss, bandpo_loss], ids=["ppo", "bandpo"])
@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (0, 0)])
def test_empty_batch(fn, shape):
    z = torch.zeros(shape, dtype=torch.float64)
    with pytest.raises(ValueError, match=_names("log_prob")):
        fn(z, z.clone(), z.clone(), torch.zeros(shape, dtype=torch.bool), "token-mean", None)


@pytest.mark.parametrize("delta", [0.0, -0.05, float("nan"), float("inf"), "abc"])
def test_bad_band_delta(delta):
    for key in ("band_delta", "band_radius_delta"):
        with pytest.raises(ValueError, match="band_delta"):
            _call(bandpo_loss, config={key: delta})


@pytest.mark.parametrize("div", ["js", "KL", "bandjs", ""])
def test_unknown_band_divergence(div):
    with pytest.raises(ValueError, match="band_divergence"):
        _call(bandpo_loss, config={"band_divergence": div})
    with pytest.raises(ValueError, match="band_divergence"):
        _call(bandpo_loss, config={"tokenwise_ratio_bounds_method": div})


@pytest.mark.parametrize("fn", [ppo_loss, bandpo_loss], ids=["ppo", "bandpo"])
@pytest.mark.parametrize("mode", ["mean", "token_mean", "seq-mean", ""])
def test_unknown_loss_agg_mode(fn, mode):
    with pytest.raises(ValueError, match="loss_agg_mode"):
        _call(fn, mode=mode)


@pytest.mark.parametrize("fn", [ppo_loss, bandpo_loss], ids=["ppo", "bandpo"])
@pytest.mark.parametrize("c", [1.0, 0.5, 0.0, -3.0])
def test_dual_clip_constant_must_exceed_one(fn, c):
    with pytest.raises(ValueError, match="clip_ratio_c"):
        _call(fn, config={"clip_ratio_c": c})


@pytest.mark.parametrize("key, value", [("clip_ratio_low", -0.1), ("clip_ratio_low", 1.5), ("clip_ratio_high", -0.2)])
def test_bad_clip_ratio(key, value):
    with pytest.raises(ValueError, match=key):
        _call(ppo_loss, config={key: value})


@given(seed=seeds, divergence=st.sampled_from(DIVERGENCES), delta=st.floats(1e-3, 1.0),
       mask_dtype=mask_dtypes, zero_adv=st.booleans())
def test_bandpo_metrics_match_their_definitions(seed, divergence, delta, mask_dtype, zero_adv):
    """BandPO's own metrics against their definitions over the valid tokens: the high (low) clip fraction counts
    A > 0 and r > r̄ (A < 0 and r < r̲), the band means are the masked mean of r̲ and of log r̄. The ratios are
    spread far enough (log-ratio noise 0.5, reflected where ``old + Δ`` would exceed 0) that both sides clip;
    some advantages are exactly zero."""
    g = torch.Generator().manual_seed(seed)
    B, T = 6, 40
    old = torch.log_softmax(3.0 * torch.randn(B, T, 16, generator=g, dtype=torch.float64), -1)[..., 0]
    noise = 0.5 * torch.randn(B, T, generator=g, dtype=torch.float64)
    new = torch.where(old + noise > 0, old - noise, old + noise)
    adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    if zero_adv:
        adv[:, ::3] = 0.0
    mask = (torch.rand(B, T, generator=g) < 0.7)
    mask[0, 0] = True
    lo, up = band_bounds(old, divergence, delta)
    _, met = bandpo_loss(old, new, adv, mask.to(mask_dtype), "token-mean",
                         {"band_divergence": divergence, "band_delta": delta, "clip_ratio_c": float("inf")})
    r = torch.exp(new - old)
    # verl's guarded count, as every masked mean of the suite: the 1e-8 survives only a float64 mask's sum
    n = (mask.to(mask_dtype).sum() + 1e-8).item()
    want = {
        "fiberlab/clipfrac_high": ((adv > 0) & (r > up) & mask).sum().item() / n,
        "fiberlab/clipfrac_low": ((adv < 0) & (r < lo) & mask).sum().item() / n,
        "fiberlab/band_lower_mean": lo[mask].sum().item() / n,
        "fiberlab/band_log_upper_mean": torch.log(up[mask]).sum().item() / n,
    }
    for key, value in want.items():
        # counts are exact; the sums differ by summation order (a few ulp of ~100 terms of size ≤ 10)
        assert met[key] == pytest.approx(value, rel=1e-12, abs=1e-12), (key, met[key], value)
    assert met["actor/pg_clipfrac"] == pytest.approx(want["fiberlab/clipfrac_high"] + want["fiberlab/clipfrac_low"],
                                                     rel=1e-12, abs=1e-12)


def test_objectives_declare_the_batch_extras_they_take():
    from fiberlab.gpu.losses import BATCH_EXTRAS, POLICY_LOSS_EXTRAS, POLICY_LOSSES, batch_extras, register_policy_loss

    assert set(POLICY_LOSS_EXTRAS) == set(POLICY_LOSSES)
    B, T = 4, 3
    torch.manual_seed(0)
    old = -torch.rand(B, T, dtype=torch.float64) - 0.1
    mask = torch.ones(B, T, dtype=torch.bool)
    adv = torch.randn(B, 1, dtype=torch.float64).expand(B, T)

    def never():
        raise AssertionError("built although the objective does not take it")

    for name, fn in POLICY_LOSSES.items():
        available = {"rewards": torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64),
                     "group_ids": torch.tensor([0, 0, 1, 1]), "domain_ids": lambda: torch.zeros(B, dtype=torch.long),
                     "state_ids": lambda: torch.arange(B * T).view(B, T) % 2}
        if "domain_ids" not in POLICY_LOSS_EXTRAS[name]:
            available["domain_ids"] = never
        if "state_ids" not in POLICY_LOSS_EXTRAS[name]:
            available["state_ids"] = never
        extras = batch_extras(name, **available)
        assert set(extras) == set(POLICY_LOSS_EXTRAS[name]) <= set(BATCH_EXTRAS)
        lp = (old + 0.05).requires_grad_(True)
        loss, _ = fn(old, lp, adv, mask, "seq-mean-token-mean", {}, **extras)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(lp.grad).all(), name
        if POLICY_LOSS_EXTRAS[name]:                 # the declaration is needed: without it the loss refuses
            with pytest.raises(ValueError):
                fn(old, old + 0.05, adv, mask, "seq-mean-token-mean", {})
    with pytest.raises(ValueError, match="not available"):
        batch_extras("lpo", rewards=torch.zeros(B))
    with pytest.raises(ValueError, match="extras of 'x' must be among"):
        register_policy_loss("x", extras=("prompts",))
