"""The ``lpo`` and ``lpo_pointwise`` policy losses against independent oracles.

Oracles: (i) the divergence itself, written as a differentiable function of the listwise logits
``s = Σ_t (log π_θ - log π_b)`` per group and differentiated by autograd (no coefficient formula involved);
(ii) :mod:`fiberlab.numerics.lpo`'s float64 NumPy coefficients; (iii) the ``ppo`` loss with GRPO advantages
(Prop. 1). Everything is float64 unless a test says otherwise, so agreement is to round-off.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fiberlab.claims.lpo_coefficients import divergence_value, paired_tau
from fiberlab.gpu.advantages import get_advantage
from fiberlab.gpu.losses import get_policy_loss
from fiberlab.gpu.lpo import LPO_DIVERGENCES, listwise_state
from fiberlab.numerics import lpo as N

lpo = get_policy_loss("lpo")
lpo_pointwise = get_policy_loss("lpo_pointwise")
ppo = get_policy_loss("ppo")

# float64 sums of O(K·T) terms of size O(1): a few hundred ulp; relative to max(1, |value|).
TOL64 = 1e-12


def _reflected(old, noise):
    """``old + noise``, with the noise reflected (``old - noise``) where ``old + noise`` would exceed 0: a
    log-probability (then noise > -old ≥ 0 and old - noise ≤ 2·old ≤ 0)."""
    return torch.where(old + noise > 0, old - noise, old + noise)


def _batch(n_groups=3, k=4, t=6, drift=0.3, seed=0, dtype=torch.float64, binary=True):
    g = torch.Generator().manual_seed(seed)
    b = n_groups * k
    old = -torch.rand(b, t, generator=g, dtype=dtype) * 3 - 0.05
    lp = _reflected(old, drift * torch.randn(b, t, generator=g, dtype=dtype)).requires_grad_()
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    rewards = (torch.rand(b, generator=g, dtype=dtype) < 0.5).to(dtype) if binary else \
        torch.rand(b, generator=g, dtype=dtype)
    ids = torch.arange(b) // k
    return old, lp, mask, rewards, ids


def _oracle_loss(old, lp, mask, rewards, ids, div, rule, anchor=None):
    """(1/N_seq) Σ_groups K_G · D(P_θ, w*) with P_θ = softmax(s) differentiated through s (autograd)."""
    s = ((lp - old) * mask).sum(-1)
    st = None if anchor is None else ((anchor - old) * mask).sum(-1)
    total = 0.0
    groups = torch.unique(ids)
    for gid in groups.tolist():
        sel = ids == gid
        k = int(sel.sum())
        r = rewards[sel]
        phi = (r - r.mean()) / paired_tau(rule, r)
        if st is not None:
            phi = phi + st[sel]
        log_w = torch.log_softmax(phi, 0)
        log_p = torch.log_softmax(s[sel], 0)
        total = total + k * divergence_value(div, log_p, log_w)
    return total / ids.shape[0]


def _grad(loss, lp):
    (g,) = torch.autograd.grad(loss, lp)
    return g


def _close(a, b, tol=TOL64):
    scale = max(1.0, float(b.abs().max()))
    assert float((a - b).abs().max()) <= tol * scale, float((a - b).abs().max())


@pytest.mark.parametrize("div", sorted(LPO_DIVERGENCES))
@pytest.mark.parametrize("rule", ["grpo", "drgrpo", "rloo", "maxrl", 0.37])
def test_gradient_equals_autograd_of_the_divergence(div, rule):
    """∇ of the surrogate (seq-mean-token-sum) = ∇ of (1/N) Σ_G K_G D(P_θ, w*): Algorithm 1's step, any f."""
    old, lp, mask, r, ids = _batch(seed=hash((div, str(rule))) % 1000)
    loss, _ = lpo(old, lp, None, mask, "seq-mean-token-sum", {"lpo_divergence": div, "lpo_tau": rule},
                  rewards=r, group_ids=ids)
    oracle = _oracle_loss(old, lp, mask, r, ids, div, rule)
    _close(_grad(loss, lp), _grad(oracle, lp))


def test_anchor_shifts_the_target_as_theorem_1_says():
    old, lp, mask, r, ids = _batch(seed=3)
    anchor = _reflected(old, 0.2 * torch.randn_like(old))
    loss, _ = lpo(old, lp, None, mask, "seq-mean-token-sum", {"lpo_divergence": "rev", "lpo_tau": 0.5},
                  rewards=r, group_ids=ids, anchor_log_prob=anchor)
    oracle = _oracle_loss(old, lp, mask, r, ids, "rev", 0.5, anchor=anchor)
    _close(_grad(loss, lp), _grad(oracle, lp))
    # and the state's target logits give numerics' listwise_target(R, τ, s_t) per group
    s = ((lp - old) * mask).sum(-1).detach()
    s_t = ((anchor - old) * mask).sum(-1)
    stt = listwise_state(s, ids, rewards=r, anchor_log_ratio=s_t, tau=0.5, num_groups=3)
    for gid in range(3):
        sel = (ids == gid).numpy()
        rr = r.numpy()[sel]
        phi = (rr - rr.mean()) / 0.5 + s_t.numpy()[sel]
        lse = float(stt.lse_phi[gid])
        np.testing.assert_allclose(np.exp(phi - lse), N.listwise_target(rr, 0.5, s_t.numpy()[sel]), atol=1e-14)


def test_coefficients_match_numerics_reference():
    """ψ = -K c from the loss's metrics path equals numerics' forward/reverse coefficients (float64 NumPy)."""
    old, lp, mask, r, ids = _batch(seed=5, k=5)
    s = ((lp - old) * mask).sum(-1).detach()
    from fiberlab.gpu.lpo import _coefficients, _g_rev, _phi
    st = listwise_state(s, ids, rewards=r, tau="drgrpo", divergence="rev", num_groups=3)
    phi = _phi(st, ids, r, None, None)
    c, _, _ = _coefficients(st, ids, s, phi, _g_rev)
    for gid in range(3):
        sel = (ids == gid).numpy()
        ref = N.reverse_coefficients(s.numpy()[sel], r.numpy()[sel] / 1.0)
        np.testing.assert_allclose(c.numpy()[sel], ref, atol=1e-14)
        assert abs(c.numpy()[sel].sum()) < 1e-15 * 10


def test_rev_on_policy_gradient_is_unclipped_grpo():
    """Prop. 1 / spec §4.3: at log_prob == old_log_prob LPO_rev's gradient equals GRPO's with A = (R-μ)/τ."""
    old, _, mask, r, ids = _batch(seed=7, k=8, n_groups=4)
    lp = old.clone().requires_grad_()
    loss, _ = lpo(old, lp, None, mask, "seq-mean-token-sum", {"lpo_divergence": "rev", "lpo_tau": "grpo"},
                  rewards=r, group_ids=ids)
    adv = get_advantage("grpo")(r, ids)[:, None] * mask
    loss_pg, _ = ppo(old, lp, adv, mask, "seq-mean-token-sum", {"clip_ratio_low": 1.0, "clip_ratio_high": 1e9, "clip_ratio_c": None})
    g_pg = _grad(loss_pg, lp)
    _close(_grad(loss, lp), g_pg)
    # the same through verl's own advantage tensor: lpo_tau="advantages" takes φ from it
    loss_a, _ = lpo(old, lp, adv, mask, "seq-mean-token-sum", {"lpo_divergence": "rev"}, group_ids=ids)
    _close(_grad(loss_a, lp), g_pg)


def test_fwd_on_policy_coefficients_are_uniform_minus_target():
    old, _, mask, r, ids = _batch(seed=8, k=4)
    lp = old.clone().requires_grad_()
    loss, _ = lpo(old, lp, None, mask, "token-sum", {"lpo_tau": "drgrpo"}, rewards=r, group_ids=ids)
    g = _grad(loss, lp)
    for gid in range(3):
        sel = ids == gid
        w = torch.softmax(r[sel], 0)
        c = 1.0 / 4 - w                                     # Eq. 10 at P = 1/K; loss weight K c per token
        _close(g[sel], (4 * c)[:, None] * mask[sel])


@pytest.mark.parametrize("rule", ["grpo", "drgrpo", "rloo"])
@pytest.mark.parametrize("div", ["fwd", "rev"])
def test_constant_added_to_a_groups_rewards_changes_nothing(rule, div):
    old, lp, mask, r, ids = _batch(seed=11)
    cfg = {"lpo_divergence": div, "lpo_tau": rule}
    l1, _ = lpo(old, lp, None, mask, "seq-mean-token-sum", cfg, rewards=r, group_ids=ids)
    shifted = r + torch.where(ids == 1, 7.25, torch.where(ids == 2, -3.5, 0.0)).to(r.dtype)
    l2, _ = lpo(old, lp, None, mask, "seq-mean-token-sum", cfg, rewards=shifted, group_ids=ids)
    _close(_grad(l1, lp), _grad(l2, lp))


def test_maxrl_is_scale_invariant_not_shift_invariant():
    old, lp, mask, r, ids = _batch(seed=12, binary=False)
    cfg = {"lpo_tau": "maxrl"}
    g1 = _grad(lpo(old, lp, None, mask, "seq-mean-token-sum", cfg, rewards=r, group_ids=ids)[0], lp)
    g2 = _grad(lpo(old, lp, None, mask, "seq-mean-token-sum", cfg, rewards=3 * r, group_ids=ids)[0], lp)
    g3 = _grad(lpo(old, lp, None, mask, "seq-mean-token-sum", cfg, rewards=r + 1, group_ids=ids)[0], lp)
    _close(g1, g2, tol=1e-5)              # τ = μ + ε: ε/μ ≈ 1e-6 breaks exact scale invariance
    assert float((g1 - g3).abs().max()) > 1e-3


@given(st.integers(0, 10_000))
def test_permuting_rows_permutes_the_gradient(seed):
    old, lp, mask, r, ids = _batch(seed=seed)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(ids.shape[0]))
    cfg = {"lpo_divergence": "js", "lpo_tau": "grpo"}
    g1 = _grad(lpo(old, lp, None, mask, "seq-mean-token-sum", cfg, rewards=r, group_ids=ids)[0], lp)
    lp2 = lp.detach()[perm].clone().requires_grad_()
    g2 = _grad(lpo(old[perm], lp2, None, mask[perm], "seq-mean-token-sum", cfg, rewards=r[perm],
                   group_ids=ids[perm] * 13 + 5)[0], lp2)                 # relabelled ids too
    _close(g2, g1[perm])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rule", ["grpo", "maxrl", "drgrpo"])
@pytest.mark.parametrize("div", sorted(LPO_DIVERGENCES))
def test_all_equal_rewards_on_policy_give_zero_gradient(dtype, rule, div):
    old, _, mask, _, ids = _batch(seed=13, dtype=dtype)
    lp = old.clone().requires_grad_()
    for value in (0.0, 1.0, 0.1):
        r = torch.full((ids.shape[0],), value, dtype=dtype)
        loss, met = lpo(old, lp, None, mask, "seq-mean-token-sum", {"lpo_divergence": div, "lpo_tau": rule},
                        rewards=r, group_ids=ids)
        g = _grad(loss, lp)
        assert torch.isfinite(loss) and all(math.isfinite(v) for v in met.values())
        assert float(g.abs().max()) == 0.0


def test_zero_variance_group_after_drift_gives_the_restoring_coefficient():
    """Spec §3: with σ_G = 0, w* = P_t (uniform without anchor), so c^fwd = P_θ - 1/K ≠ 0 off-policy."""
    old, lp, mask, _, ids = _batch(seed=14)
    r = torch.ones(ids.shape[0], dtype=torch.float64)
    loss, _ = lpo(old, lp, None, mask, "token-sum", {"lpo_tau": "grpo"}, rewards=r, group_ids=ids)
    s = ((lp - old) * mask).sum(-1).detach()
    c = torch.cat([torch.softmax(s[ids == g], 0) - 0.25 for g in range(3)])
    _close(_grad(loss, lp), (4 * c)[:, None] * mask)


def test_pointwise_coefficient_is_minus_target():
    old, lp, mask, r, ids = _batch(seed=15)
    loss, _ = lpo_pointwise(old, lp, None, mask, "token-sum", {"lpo_tau": "drgrpo"}, rewards=r, group_ids=ids)
    w = torch.cat([torch.softmax(r[ids == g] - r[ids == g].mean(), 0) for g in range(3)])
    _close(_grad(loss, lp), (-4 * w)[:, None] * mask)


def test_zero_sum_in_parameter_space_depends_on_aggregation():
    """A1: token-mean keeps Σ_k c_k = 0 for a shared parameter (a per-sequence bias b: log π += b·|y|·0 ...)."""
    old, lp, mask, r, ids = _batch(seed=16)
    # a parameter θ that adds θ to every token log-prob: ∂L/∂θ = Σ_k c_k |y_k| (weighted) — not zero-sum;
    # one that adds θ/|y_k| per token moves every s_k by θ: ∂L/∂θ ∝ Σ_k c_k = 0 under summed aggregation only.
    theta = torch.zeros((), dtype=torch.float64, requires_grad=True)
    lengths = mask.sum(-1, keepdim=True).to(torch.float64)
    for mode, zero in (("seq-mean-token-sum", True), ("token-mean", True), ("seq-mean-token-mean", False)):
        lp2 = lp.detach() + theta / lengths * mask
        loss, _ = lpo(old, lp2, None, mask, mode, {"lpo_divergence": "fwd"}, rewards=r, group_ids=ids)
        (gt,) = torch.autograd.grad(loss, theta)
        assert (abs(float(gt)) < 1e-14) == zero, (mode, float(gt))


@pytest.mark.parametrize("clip", ["clamp", "ppo"])
def test_token_clip_modes(clip):
    old, _, mask, r, ids = _batch(seed=17)
    mask = torch.ones_like(mask)
    # three tokens well outside the band, both directions, the rest inside
    delta = torch.zeros_like(old)
    delta[0, 0], delta[1, 1], delta[2, 2] = 0.5, -0.5, 0.05
    lp = (old + delta).requires_grad_()
    cfg = {"lpo_divergence": "fwd", "lpo_token_clip": clip, "clip_ratio": 0.2}
    loss, met = lpo(old, lp, None, mask, "token-sum", cfg, rewards=r, group_ids=ids)
    g = _grad(loss, lp)
    ref = lpo(old, lp, None, mask, "token-sum", {"lpo_divergence": "fwd"}, rewards=r, group_ids=ids)[0]
    g_free = _grad(ref, lp)
    if clip == "clamp":                       # A2 literal reading: blocked outside the band whatever the sign
        assert g[0, 0] == 0 and g[1, 1] == 0
        assert met["actor/pg_clipfrac"] == pytest.approx(2 / mask.numel())
        inside = torch.ones_like(mask); inside[0, 0] = inside[1, 1] = False
        _close(g[inside], g_free[inside])
    else:                                     # PPO min form: ψ-weighted ratio, blocked only in ψ's direction
        s = ((lp - old) * mask).sum(-1).detach()
        psi = torch.cat([-4 * (torch.softmax(s[ids == k], 0) - torch.softmax((r[ids == k] - r[ids == k].mean())
                                                                            / (r[ids == k].std() + 1e-6), 0))
                         for k in range(3)])
        loss_ppo, _ = ppo(old, lp, psi[:, None].expand_as(old), mask, "token-sum",
                          {"clip_ratio": 0.2, "clip_ratio_c": None})
        _close(g, _grad(loss_ppo, lp))


def test_micro_batches_with_a_shared_state_equal_the_whole_batch():
    """A3: the state built on the mini-batch makes per-micro-batch losses sum to the whole-batch loss."""
    old, lp, mask, r, ids = _batch(seed=19, n_groups=4, k=4)
    cfg = {"lpo_divergence": "rev", "lpo_tau": "grpo"}
    b = ids.shape[0]
    info = {"global_batch_info": {"global_batch_size": b}, **cfg}
    whole, _ = lpo(old, lp, None, mask, "seq-mean-token-sum", cfg, rewards=r, group_ids=ids)
    g_whole = _grad(whole, lp)
    s = ((lp - old) * mask).sum(-1).detach()
    state = listwise_state(s, ids, rewards=r, tau="grpo", divergence="rev", num_groups=4)
    perm = torch.from_numpy(np.random.default_rng(0).permutation(b))      # micro-batches split every group
    total, g_parts = 0.0, torch.zeros_like(lp)
    for chunk in perm.split(5):
        lpc = lp.detach()[chunk].clone().requires_grad_()
        lc, _ = lpo(old[chunk], lpc, None, mask[chunk], "seq-mean-token-sum", info, rewards=r[chunk],
                    group_ids=ids[chunk], lpo_state=state)
        total = total + lc.detach()
        g_parts[chunk] = _grad(lc, lpc)
    _close(torch.as_tensor(total), whole.detach())
    _close(g_parts, g_whole)


def test_group_size_contiguous_blocks_equal_explicit_ids():
    old, lp, mask, r, ids = _batch(seed=21)
    l1, _ = lpo(old, lp, None, mask, "seq-mean-token-sum", {"lpo_group_size": 4}, rewards=r)
    l2, _ = lpo(old, lp, None, mask, "seq-mean-token-sum", {}, rewards=r, group_ids=ids)
    _close(_grad(l1, lp), _grad(l2, lp))


def test_float32_matches_float64():
    """Coefficients in float32: |c| ≤ 1, errors ≈ ε₃₂·(|s| + |φ|) ≲ 1e-5 here; the loss gradient likewise."""
    old, lp, mask, r, ids = _batch(seed=23)
    g64 = _grad(lpo(old, lp, None, mask, "seq-mean-token-sum", {"lpo_divergence": "rev"}, rewards=r,
                    group_ids=ids)[0], lp)
    lp32 = lp.detach().float().requires_grad_()
    g32 = _grad(lpo(old.float(), lp32, None, mask, "seq-mean-token-sum", {"lpo_divergence": "rev"},
                    rewards=r.float(), group_ids=ids)[0], lp32)
    _close(g32.double(), g64, tol=1e-5)


def test_metrics_are_group_averages():
    old, lp, mask, r, ids = _batch(seed=25)
    _, met = lpo(old, lp, None, mask, "seq-mean-token-sum", {"lpo_tau": "drgrpo"}, rewards=r, group_ids=ids)
    s = ((lp - old) * mask).sum(-1).detach()
    tv = np.mean([0.5 * float((torch.softmax(s[ids == g], 0) - torch.softmax(r[ids == g], 0)).abs().sum())
                  for g in range(3)])
    assert met["lpo/tv"] == pytest.approx(tv, rel=1e-12)
    assert met["lpo/tau_mean"] == pytest.approx(1.0)
    assert {"actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"} <= set(met)


# ------------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------------

def test_bad_input_names_the_argument():
    old, lp, mask, r, ids = _batch()
    call = lambda cfg=None, **kw: lpo(old, lp, None, mask, "seq-mean-token-sum", cfg or {},  # noqa: E731
                                      **{"rewards": r, "group_ids": ids, **kw})
    with pytest.raises(ValueError, match="rewards must have shape"):
        call(rewards=r[:-1])
    with pytest.raises(ValueError, match="rewards must have shape"):
        call(rewards=r[:, None])
    bad = r.clone(); bad[3] = float("nan")
    with pytest.raises(ValueError, match="rewards contains NaN"):
        call(rewards=bad)
    with pytest.raises(ValueError, match="group_ids has length"):
        call(group_ids=ids[:-1])
    single = ids.clone(); single[0] = 99
    with pytest.raises(ValueError, match="single sequence"):
        call(group_ids=single)
    with pytest.raises(ValueError, match="single sequence"):
        call({"lpo_tau": "rloo"}, group_ids=single)
    call({"lpo_tau": "drgrpo"}, group_ids=single)            # a singleton is fine where the rule allows it
    with pytest.raises(ValueError, match="rewards must be ≥ 0"):
        call({"lpo_tau": "maxrl"}, rewards=r - 1)
    with pytest.raises(ValueError, match="lpo_tau"):
        call({"lpo_tau": -1.0})
    with pytest.raises(ValueError, match="lpo_tau"):
        call({"lpo_tau": "sigma"})
    with pytest.raises(ValueError, match="lpo_divergence"):
        call({"lpo_divergence": "tv"})
    with pytest.raises(ValueError, match="lpo_token_clip"):
        call({"lpo_token_clip": "yes"})
    with pytest.raises(ValueError, match="rewards is required"):
        lpo(old, lp, None, mask, "seq-mean-token-sum", {"lpo_tau": "grpo"}, group_ids=ids)
    with pytest.raises(ValueError, match="group_ids is required"):
        lpo(old, lp, None, mask, "seq-mean-token-sum", {}, rewards=r)
    with pytest.raises(ValueError, match="lpo_group_size=5 does not divide"):
        lpo(old, lp, None, mask, "seq-mean-token-sum", {"lpo_group_size": 5}, rewards=r)
    adv = torch.randn_like(old)
    with pytest.raises(ValueError, match="advantages must be constant"):
        lpo(old, lp, adv, mask, "seq-mean-token-sum", {}, group_ids=ids)
    with pytest.raises(ValueError, match="anchor_log_prob"):
        call(anchor_log_prob=old[:, :-1])
    with pytest.raises(ValueError, match="unexpected keyword"):
        call(reward=r)
    nan_lp = lp.detach().clone(); nan_lp[0, 0] = float("nan")
    with pytest.raises(ValueError, match="log_prob contains NaN"):
        lpo(old, nan_lp, None, mask, "seq-mean-token-sum", {}, rewards=r, group_ids=ids)


@pytest.mark.parametrize("bad", [2, 7, -1])
def test_group_ids_outside_a_shared_state_get_the_message_not_an_index_error(bad):
    torch.manual_seed(0)
    old = torch.randn(8, 5) * 0.3 - 1
    lp = (old + 0.1).requires_grad_(True)
    rewards = torch.tensor([1.0, 0, 1, 0, 0, 0, 1, 1])
    state = listwise_state((lp - old).detach().sum(-1), torch.arange(8) // 4, rewards=rewards, num_groups=2)
    ids = torch.arange(8) // 4
    ids[3] = bad
    with pytest.raises(ValueError, match=r"group_ids must lie in \[0, 2\)"):
        get_policy_loss("lpo")(old, lp, None, torch.ones(8, 5, dtype=torch.bool), "seq-mean-token-sum", {},
                               group_ids=ids, rewards=rewards, lpo_state=state)
