"""fiberlab's objectives inside verl 0.9.1: parity with verl's own ``vanilla`` loss, and the registry adapter.

* ``ppo`` vs ``get_policy_loss_fn("vanilla")`` (``compute_policy_loss_vanilla``): loss value, gradient w.r.t.
  ``log_prob`` and the three metrics, on Hypothesis batches, every aggregation mode, clip-higher and dual clip,
  with a real verl actor config (``fiberlab.gpu.verl.actor_config``) and ``response_mask`` as bool, as verl's
  ``ppo_loss`` passes it; also with ``config.global_batch_info`` filled in as verl's workers do.
* ``bandpo`` looked up through verl's registry after ``register()`` and configured through verl's config equals
  a direct call with a plain dict.
* ``register()``: idempotent, ``fiberlab_<name>`` aliases, never silently replaces a different verl loss.

Tolerance: none. fiberlab's ``ppo`` runs the same torch operations, in the same order and dtype, as verl's
``vanilla`` (clamp, exp, the two branches, max, min, where, masked sums), and CPU kernels are deterministic, so
the results are bitwise equal (``VERL_ULPS = 0``); any difference means a formula changed. This needs the mask's
1e-8 guard to be added as verl adds it (to the mask's own sum), see ``fiberlab.gpu.losses.agg_loss``: before
that was fixed, float64 runs with a bool mask differed from verl by ~1e-9 relative in ``seq-mean-token-mean``
and in every metric (float32 runs were already bitwise equal).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.verl

core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")

from fiberlab.claims.losses import flat_tie_batch  # noqa: E402
from fiberlab.gpu import verl as fverl  # noqa: E402  (imports verl)
from fiberlab.gpu.band import DIVERGENCES  # noqa: E402
from fiberlab.gpu.losses import POLICY_LOSSES, bandpo_loss, ppo_loss  # noqa: E402

#: verl's aggregation modes (the four of the actor config, plus token-sum, which verl's agg_loss also has).
VERL_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm", "token-sum")
#: Allowed difference in units in the last place between fiberlab and verl: the formulas are the same ops.
VERL_ULPS = 0

CLIP_PAIRS = ((0.2, 0.2), (0.2, 0.28), (0.1, 0.4))       # (clip_ratio_low, clip_ratio_high): PPO, DAPO, wide
DUAL_CLIPS = (1.2, 3.0, 10.0)                             # clip_ratio_c (verl asserts > 1; 3 is its default)
BAND_DELTAS = (0.02, 0.05, 0.3)


@pytest.fixture(autouse=True, scope="module")
def _restore_verl_registry():
    """register() writes into verl's global registry; leave it as this module found it."""
    snapshot = dict(core_algos.POLICY_LOSS_REGISTRY)
    yield
    core_algos.POLICY_LOSS_REGISTRY.clear()
    core_algos.POLICY_LOSS_REGISTRY.update(snapshot)


@functools.lru_cache(maxsize=None)
def vanilla_config(low: float, high: float, c: float):
    """A real verl actor config (built by verl from its trainer YAML; ~0.2 s each, hence cached and read-only)."""
    return fverl.actor_config(clip_ratio_low=low, clip_ratio_high=high, clip_ratio_c=c)


@functools.lru_cache(maxsize=None)
def bandpo_config(delta: float, divergence: str):
    return fverl.actor_config({"loss_mode": "bandpo", "band_delta": delta, "band_divergence": divergence},
                              clip_ratio_c=10.0)


@functools.lru_cache(maxsize=None)
def _global_batch_config():
    """One config whose ``global_batch_info`` (a mutable dict, as verl's workers use it) the test rewrites."""
    return fverl.actor_config(clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0)


# --------------------------------------------------------------------------------------------------------------
# Batches: no margins needed here — both sides run the same ops, so exact ties (on-policy tokens, r on an end of
# the interval) must agree too, and are included on purpose.
# --------------------------------------------------------------------------------------------------------------

def _reflected(old: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``old + delta``, with ``delta`` reflected (``old - delta``) where ``old + delta`` would exceed 0: a
    log-probability (then delta > -old ≥ 0 and old - delta ≤ 2·old ≤ 0, in any dtype)."""
    new = old + delta
    return torch.where(new > 0, old - delta, new)


@st.composite
def verl_batches(draw, dtypes=(torch.float32, torch.float64)):
    B = draw(st.integers(1, 6))
    T = draw(st.integers(1, 8))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from(dtypes))
    old = -draw(st.sampled_from([0.5, 5.0, 30.0])) * torch.rand(B, T, generator=g, dtype=torch.float64)
    old = torch.where(torch.rand(B, T, generator=g) < 0.1, torch.zeros_like(old), old)
    u = torch.rand(B, T, generator=g)
    delta = torch.where(u < 0.6, 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64),
                        torch.where(u < 0.85, 50.0 * torch.rand(B, T, generator=g, dtype=torch.float64) - 25.0,
                                    torch.zeros(B, T, dtype=torch.float64)))
    # a few log-ratios exactly on the PPO clip ends (ties of the two branches)
    ends = torch.log(torch.tensor([0.8, 1.28, 1.2], dtype=torch.float64))
    on_end = torch.rand(B, T, generator=g) < 0.1
    delta = torch.where(on_end, ends[torch.randint(3, (B, T), generator=g)], delta)
    if draw(st.booleans()):
        adv = torch.randn(B, 1, generator=g, dtype=torch.float64).expand(B, T).clone()
    else:
        adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.where(torch.rand(B, T, generator=g) < 0.1, torch.zeros_like(adv), adv)
    kind = torch.rand(B, generator=g)
    prefix = torch.arange(T)[None, :] < torch.randint(1, T + 1, (B,), generator=g)[:, None]
    mask = torch.where((kind < 0.6)[:, None], prefix, torch.rand(B, T, generator=g) < 0.6) & (kind >= 0.2)[:, None]
    if not bool(mask.any()):
        mask[0, 0] = True
    weights = None
    if draw(st.booleans()):
        weights = (2 * torch.rand(B, T, generator=g, dtype=torch.float64)).to(dtype)
    # about a fifth of the tokens other than p = 1 deep in [-45, -25]: room for far log-ratios up to +25
    deep = -25.0 - 20.0 * torch.rand(B, T, generator=g, dtype=torch.float64)
    old = torch.where((torch.rand(B, T, generator=g) < 0.2) & (old != 0), deep, old)
    old, delta = old.to(dtype), delta.to(dtype)
    new = _reflected(old, delta)
    return old, new, adv.to(dtype), mask, weights


def _run(fn, batch, mode, config, mask=None):
    old, new, adv, m, w = batch
    log_prob = new.clone().requires_grad_(True)
    loss, metrics = fn(old_log_prob=old, log_prob=log_prob, advantages=adv,
                       response_mask=m if mask is None else mask, loss_agg_mode=mode, config=config,
                       rollout_is_weights=w)
    loss.backward()
    return loss.detach(), log_prob.grad, metrics


def _ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in units in the last place between two same-dtype tensors (0 iff bitwise equal,
    counting -0 == +0)."""
    if torch.equal(a, b):
        return 0
    spacing = torch.finfo(a.dtype).eps * torch.maximum(a.abs(), b.abs()).clamp_min(torch.finfo(a.dtype).tiny)
    return int(((a - b).abs() / spacing).ceil().max())


def verl_clipfrac_in_float32(data_dtype: torch.dtype, mask_dtype: torch.dtype) -> bool:
    """verl casts the clip indicators with ``.float()`` (``torch.gt(pg_losses2, pg_losses1).float()``), so
    ``pg_clipfrac`` and ``pg_clipfrac_lower`` are float32 numbers unless a float64 mask promotes them back;
    fiberlab keeps the data's dtype. In a float64 run they then differ by verl's float32 rounding of k/N."""
    return data_dtype == torch.float64 and mask_dtype != torch.float64


def _assert_same(ours, theirs, clipfrac_in_float32=False):
    (l1, g1, m1), (l2, g2, m2) = ours, theirs
    assert l1.dtype == l2.dtype and g1.dtype == g2.dtype
    assert _ulps(l1, l2) <= VERL_ULPS, (l1.item(), l2.item())
    assert _ulps(g1, g2) <= VERL_ULPS, (g1 - g2).abs().max().item()
    for key in ("actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"):
        mine = m1[key]
        if clipfrac_in_float32 and key != "actor/ppo_kl":
            # k/N rounded once to float32 equals float32's own k/N (checked for all k ≤ N < 2000).
            mine = float(torch.tensor(mine, dtype=torch.float64).float())
        assert mine == m2[key], (key, m1[key], m2[key])


# --------------------------------------------------------------------------------------------------------------
# ppo == verl vanilla
# --------------------------------------------------------------------------------------------------------------

@given(batch=verl_batches(), mode=st.sampled_from(VERL_AGG_MODES), clip=st.sampled_from(CLIP_PAIRS),
       c=st.sampled_from(DUAL_CLIPS), mask_kind=st.sampled_from(["bool", "bool", "int64", "data"]))
def test_ppo_equals_verl_vanilla(batch, mode, clip, c, mask_kind):
    """Bitwise equal value, gradient and metrics. The mask is bool (what verl's ppo_loss passes) most of the
    time; int64 (an attention-mask slice) and a float mask of the data's dtype check that the 1e-8 guard is
    added where verl adds it. (A float mask *wider* than the data is left out on purpose: verl's sums then
    promote to the mask's dtype, fiberlab's stay in the data's.)"""
    config = vanilla_config(*clip, c)
    mask_dtype = {"bool": torch.bool, "int64": torch.int64, "data": batch[0].dtype}[mask_kind]
    mask = batch[3].to(mask_dtype)
    vanilla = core_algos.get_policy_loss_fn("vanilla")
    _assert_same(_run(ppo_loss, batch, mode, config, mask), _run(vanilla, batch, mode, config, mask),
                 verl_clipfrac_in_float32(batch[0].dtype, mask_dtype))


@given(batch=verl_batches(), mode=st.sampled_from(VERL_AGG_MODES), dp_size=st.integers(1, 8),
       extra_tokens=st.integers(0, 50), extra_seqs=st.integers(0, 8),
       lsf=st.one_of(st.none(), st.sampled_from([1.0, 7.0, 512.0, 4096.0])))
def test_ppo_equals_verl_vanilla_with_global_batch_info(batch, mode, dp_size, extra_tokens, extra_seqs, lsf):
    """verl's workers write dp_size, the global token/sequence counts and loss_scale_factor into
    ``config.global_batch_info`` before calling the loss (verl.workers.utils.losses.ppo_loss); both sides must
    normalise by them identically."""
    config = _global_batch_config()
    mask = batch[3]
    config.global_batch_info.clear()
    config.global_batch_info.update(dp_size=dp_size, batch_num_tokens=int(mask.sum()) + extra_tokens,
                                    global_batch_size=int((mask.sum(-1) > 0).sum()) + extra_seqs,
                                    loss_scale_factor=lsf)
    try:
        vanilla = core_algos.get_policy_loss_fn("vanilla")
        _assert_same(_run(ppo_loss, batch, mode, config), _run(vanilla, batch, mode, config),
                     verl_clipfrac_in_float32(batch[0].dtype, mask.dtype))
    finally:
        config.global_batch_info.clear()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("end", [0.8, 1.28])
def test_tie_where_the_clip_is_flat(dtype, end):
    """Found by Hypothesis: at such a tie torch.maximum sends half the gradient to the clipped branch, whose
    clamp passes none of it, so verl's gradient is half the unclipped one; fiberlab's written-out backward
    gave the whole. Now bitwise equal, value, gradient and metrics."""
    old, new, adv = flat_tie_batch(dtype, end)
    batch = (old, new, adv, torch.ones_like(old, dtype=torch.bool), None)
    config = vanilla_config(0.2, 0.28, 3.0)
    vanilla = core_algos.get_policy_loss_fn("vanilla")
    ours, theirs = _run(ppo_loss, batch, "token-mean", config), _run(vanilla, batch, "token-mean", config)
    _assert_same(ours, theirs)
    unclipped = (-adv * torch.exp(new - old)) / adv.numel()
    assert torch.equal(theirs[1], 0.5 * unclipped)      # the halving is real, and is what both now give


def test_vanilla_config_is_read_by_both():
    """The configs differ where they should: clip-higher and c change both implementations alike."""
    g = torch.Generator().manual_seed(1)
    old = -torch.rand(3, 5, generator=g)
    batch = (old, _reflected(old, torch.randn(3, 5, generator=g)), -torch.rand(3, 5, generator=g).abs() - 0.1,
             torch.ones(3, 5, dtype=torch.bool), None)
    vanilla = core_algos.get_policy_loss_fn("vanilla")
    a = _run(ppo_loss, batch, "token-mean", vanilla_config(0.2, 0.2, 1.2))
    b = _run(ppo_loss, batch, "token-mean", vanilla_config(0.1, 0.4, 10.0))
    assert not torch.equal(a[0], b[0])
    _assert_same(b, _run(vanilla, batch, "token-mean", vanilla_config(0.1, 0.4, 10.0)))


# --------------------------------------------------------------------------------------------------------------
# bandpo through verl's registry and config
# --------------------------------------------------------------------------------------------------------------

@given(batch=verl_batches(), mode=st.sampled_from(VERL_AGG_MODES), delta=st.sampled_from(BAND_DELTAS),
       divergence=st.sampled_from(DIVERGENCES))
def test_bandpo_via_verl_registry_equals_direct_call(batch, mode, delta, divergence):
    fverl.register()
    fn = core_algos.get_policy_loss_fn("bandpo")
    assert fn is bandpo_loss and core_algos.get_policy_loss_fn("fiberlab_bandpo") is bandpo_loss
    via_verl = _run(fn, batch, mode, bandpo_config(delta, divergence))
    direct = _run(bandpo_loss, batch, mode, {"band_delta": delta, "band_divergence": divergence, "clip_ratio_c": 10.0})
    _assert_same(via_verl, direct)
    assert via_verl[2] == direct[2]                     # fiberlab's own metrics too


def test_bandpo_verl_config_carries_the_band_settings():
    """The verl config is really read: δ and the divergence change the result the same way as in a dict."""
    cfg = bandpo_config(0.3, "tv")
    assert type(cfg.policy_loss).__name__ == "FiberlabPolicyLossConfig"
    assert (cfg.policy_loss.band_delta, cfg.policy_loss.band_divergence, cfg.clip_ratio_c) == (0.3, "tv", 10.0)
    g = torch.Generator().manual_seed(2)
    old = -4 * torch.rand(4, 6, generator=g)
    batch = (old, _reflected(old, torch.randn(4, 6, generator=g)), torch.randn(4, 6, generator=g),
             torch.ones(4, 6, dtype=torch.bool), None)
    assert not torch.equal(_run(bandpo_loss, batch, "token-mean", cfg)[0],
                           _run(bandpo_loss, batch, "token-mean", bandpo_config(0.02, "kl"))[0])


# --------------------------------------------------------------------------------------------------------------
# register()
# --------------------------------------------------------------------------------------------------------------

def test_register_is_idempotent_and_adds_aliases():
    first = fverl.register()
    snapshot = dict(core_algos.POLICY_LOSS_REGISTRY)
    second = fverl.register()
    assert first == second
    assert core_algos.POLICY_LOSS_REGISTRY == snapshot
    for name, fn in POLICY_LOSSES.items():
        assert core_algos.get_policy_loss_fn(fverl.PREFIX + name) is fn
        assert fverl.PREFIX + name in first
    assert core_algos.get_policy_loss_fn("vanilla") is core_algos.compute_policy_loss_vanilla   # untouched


def test_register_never_silently_replaces_a_verl_loss(monkeypatch):
    """A fiberlab objective whose plain name verl already uses for a different loss: verl's stays, the prefixed
    alias is ours; overwrite=True replaces it. Uses a temporary dummy name, removed afterwards."""
    name = "fiberlab_test_dummy_loss"

    def ours(*args, **kwargs):
        raise AssertionError("not called")

    def theirs(*args, **kwargs):
        raise AssertionError("not called")

    registry = core_algos.POLICY_LOSS_REGISTRY
    before = dict(registry)
    monkeypatch.setitem(POLICY_LOSSES, name, ours)
    try:
        registry[name] = theirs
        written = fverl.register([name])
        assert registry[name] is theirs and name not in written
        assert registry[fverl.PREFIX + name] is ours and fverl.PREFIX + name in written
        assert fverl.register([name]) == written                       # idempotent here too
        written = fverl.register([name], overwrite=True)
        assert registry[name] is ours and name in written
        # the same function already registered is not a conflict
        assert name in fverl.register([name])
    finally:
        registry.clear()
        registry.update(before)
    assert name not in registry and fverl.PREFIX + name not in registry


def test_register_unknown_name():
    with pytest.raises(ValueError, match="names"):
        fverl.register(["no_such_objective"])


# --------------------------------------------------------------------------------------------------------------
# lpo through verl's registry and config (verl passes no group ids or rewards: contiguous groups + advantages)
# --------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def lpo_config(divergence: str, n: int):
    return fverl.actor_config({"loss_mode": "lpo", "lpo_divergence": divergence, "lpo_group_size": n},
                              rollout_n=n)


@pytest.mark.parametrize("divergence", ["fwd", "rev"])
@pytest.mark.parametrize("mode", ["seq-mean-token-sum", "token-mean"])
def test_lpo_via_verl_registry_uses_verl_grpo_advantages_as_the_paired_target(divergence, mode):
    """In a verl run the loss sees verl's GRPO advantages; its target softmax(A) is LPO's τ = σ_G rule."""
    from fiberlab.gpu.lpo import lpo_loss

    fverl.register()
    fn = core_algos.get_policy_loss_fn("lpo")
    assert fn is lpo_loss and core_algos.get_policy_loss_fn("fiberlab_lpo") is lpo_loss
    n, groups, t = 4, 3, 5
    g = torch.Generator().manual_seed(3)
    b = n * groups
    old = -3 * torch.rand(b, t, generator=g, dtype=torch.float64)
    lp = _reflected(old, 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)).requires_grad_()
    mask = torch.arange(t)[None, :] < torch.randint(1, t + 1, (b,), generator=g)[:, None]
    rewards = (torch.rand(b, generator=g) < 0.5).to(torch.float64)
    uid = np.array([f"prompt-{i // n}" for i in range(b)], dtype=object)
    adv, _ = core_algos.compute_grpo_outcome_advantage(rewards[:, None] * torch.eye(t, dtype=torch.float64)[-1],
                                                       torch.ones(b, t), uid)
    adv = adv[:, :1].expand(b, t) * mask                                  # verl's layout: one scalar per row
    cfg = lpo_config(divergence, n)
    assert (cfg.policy_loss.lpo_divergence, cfg.policy_loss.lpo_group_size) == (divergence, n)
    via_verl, _ = fn(old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask, loss_agg_mode=mode,
                     config=cfg, rollout_is_weights=None)
    (g_verl,) = torch.autograd.grad(via_verl, lp)
    direct, _ = lpo_loss(old, lp, None, mask, mode, {"lpo_divergence": divergence}, rewards=rewards,
                         group_ids=uid)
    (g_direct,) = torch.autograd.grad(direct, lp)
    # verl's GRPO advantage vs ours: same formula, summation order differs (≲ 1e-15 on φ, relative)
    assert float((g_verl - g_direct).abs().max()) <= 1e-12 * max(1.0, float(g_direct.abs().max()))
    assert float(g_direct.abs().max()) > 1e-3
