"""The input contract of every objective and of the Band API, tried as a hostile user would.

Every objective keeps its loss, gradient and metrics finite for every finite, valid input in every dtype
(float16, bfloat16, float32, float64), or raises a ``ValueError`` that names the argument; bad configuration
and bad ``global_batch_info`` values raise naming the key. One regression test per finding of the reliability
issue (numbered as there), then a Hypothesis sweep over dtype × objective × extreme inputs.
"""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fiberlab.gpu.band import band_active_bound
from fiberlab.gpu.losses import POLICY_LOSSES, get_policy_loss, log_prob_roundoff, working_dtype

HALF = (torch.float16, torch.bfloat16)
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: Every argument or key an error may name; a ValueError that names none of them is not a clear error.
NAMES = ("old_log_prob", "log_prob", "advantages", "response_mask", "rollout_is_weights", "rewards", "group_ids",
         "lpo_tau", "lpo_divergence", "band_delta", "global_batch_info", "config")

# Extras each objective needs: B = 4 rows in two prompt groups of two, in one domain.
GROUPS = torch.tensor([0, 0, 1, 1])


def extras(name: str, shape: tuple[int, int], rewards: torch.Tensor | None = None) -> dict:
    B, T = shape
    if name in ("lpo", "lpo_pointwise"):
        return {"group_ids": GROUPS[:B], "rewards": rewards if rewards is not None else
                torch.tensor([1.0, 0.0, 0.0, 1.0])[:B]}
    if name == "fiberpo_domain":
        return {"group_ids": GROUPS[:B], "domain_ids": torch.zeros(B, dtype=torch.long)}
    if name == "apc":
        return {"state_ids": torch.arange(B * T).view(B, T) % 3}
    return {}


def run(name: str, old, lp, adv, mask, mode=None, config=None, **extra):
    """The loss, its gradient with respect to ``lp`` and the metrics."""
    fn = get_policy_loss(name)
    lp = lp.detach().clone().requires_grad_(True)
    kw = extras(name, tuple(lp.shape)) | extra
    args = (old, lp, adv, mask) + ((mode,) if mode else ())
    loss, metrics = fn(*args, config=config, **kw)
    (grad,) = torch.autograd.grad(loss, lp)
    return loss, grad, metrics


def assert_finite(loss, grad, metrics, lp_dtype):
    assert torch.isfinite(loss).all(), loss
    assert grad.dtype == lp_dtype and torch.isfinite(grad).all(), grad
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    assert not bad, bad


# --------------------------------------------------------------------------------------------------------------
# 1. Half inputs: the ratio e^11.1 overflows float16; objectives compute in float32
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
@pytest.mark.parametrize("dtype", HALF)
def test_half_inputs_far_off_policy_give_finite_loss_and_gradient(name, dtype):
    # the issue's repro, widened to 4 rows: a token with log-ratio 12 (r = e^12 > 65504) beside on-policy ones
    old = torch.tensor([[-13.0, -1.0]] * 4, dtype=dtype)
    lp = torch.tensor([[-1.0, -1.0]] * 4, dtype=dtype)
    adv = torch.tensor([[1.0, 1.0], [1.0, 1.0], [-1.0, -1.0], [-1.0, -1.0]], dtype=dtype)
    loss, grad, metrics = run(name, old, lp, adv, torch.ones(4, 2))
    assert loss.dtype == torch.float32                      # computed and returned in the working dtype
    assert_finite(loss, grad, metrics, dtype)


def test_half_ppo_gradient_of_the_clipped_token_is_zero():
    """The repro's exact values: the clipped token's gradient is 0 (it was NaN), the other one's -A/N."""
    h = torch.float16
    old = torch.tensor([[-13.0, -1.0]], dtype=h)
    lp = torch.tensor([[-1.0, -1.0]], dtype=h)
    loss, grad, _ = run("ppo", old, lp, torch.ones(1, 2, dtype=h), torch.ones(1, 2))
    assert grad.tolist() == [[0.0, -0.5]]
    assert loss.item() == pytest.approx(-(1.2 + 1.0) / 2, rel=1e-6)     # clipped at 1 + ε, and r = 1


def test_float16_gradient_beyond_its_range_is_an_error_not_inf():
    """Without dual clip, an unclipped A < 0 token far off policy has gradient |A|·r ≈ 4.9e8 ≫ 65504."""
    h = torch.float16
    old = torch.tensor([[-30.0]], dtype=h)
    lp = torch.tensor([[-10.0]], dtype=h, requires_grad=True)
    loss, _ = get_policy_loss("ppo")(old, lp, -torch.ones(1, 1, dtype=h), torch.ones(1, 1),
                                     config={"clip_ratio_c": math.inf})
    assert torch.isfinite(loss)                              # float32 holds e^20
    with pytest.raises(ValueError, match="log_prob is float16.*beyond float16"):
        loss.backward()


def test_gspo_float16_sequence_sums_do_not_overflow():
    h = torch.float16
    old = torch.full((1, 8), -9000.0, dtype=h)
    lp = torch.full((1, 8), -1.0, dtype=h)
    loss, grad, metrics = run("gspo", old, lp, torch.ones(1, 8, dtype=h), torch.ones(1, 8))
    assert_finite(loss, grad, metrics, h)


# --------------------------------------------------------------------------------------------------------------
# 2. LPO's Pearson χ² coefficient: exact where representable, an error where not
# --------------------------------------------------------------------------------------------------------------

def _chi2_psi_mp(rewards, tau, K):
    """ψ = -K·c on policy (P uniform), c_k = 2P_k(ρ_k - Σ_j P_j ρ_j), ρ = P/w*, w* = softmax((R - μ)/τ): 50 digits."""
    mpmath.mp.dps = 50
    mu = sum(mpmath.mpf(r) for r in rewards) / K
    phi = [(mpmath.mpf(r) - mu) / tau for r in rewards]
    z = sum(mpmath.exp(p) for p in phi)
    w = [mpmath.exp(p) / z for p in phi]
    P = mpmath.mpf(1) / K
    rho = [P / wk for wk in w]
    bar = sum(P * r for r in rho)
    return [-K * 2 * P * (r - bar) for r in rho]


def test_lpo_chi2_peaked_target_is_exact_in_float64():
    """rewards [100, 0, 0, 0], τ = 1 (drgrpo): c reaches 8.4e41 — NaN before (inf - inf), exact now."""
    rewards = torch.tensor([100.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    old = torch.full((4, 3), -1.0, dtype=torch.float64)
    loss, grad, metrics = run("lpo", old, old.clone(), None, torch.ones(4, 3), "seq-mean-token-sum",
                              {"lpo_divergence": "chi2", "lpo_tau": "drgrpo"}, rewards=rewards,
                              group_ids=torch.zeros(4, dtype=torch.long))
    assert_finite(loss, grad, metrics, torch.float64)
    psi = _chi2_psi_mp([100, 0, 0, 0], 1, 4)
    # seq-mean-token-sum: L = (1/B) Σ_k Σ_i (-ψ_k) δ_ki, so ∂L/∂log π_ki = -ψ_k / B; the log-space
    # evaluation costs a few roundings of exp/expm1 on arguments ~100: 1e-13 relative.
    for k in range(4):
        assert float(grad[k, 0]) == pytest.approx(float(-psi[k] / 4), rel=1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("tau", [0.01, "drgrpo", "rloo"])
def test_lpo_chi2_beyond_the_dtype_is_a_named_error(dtype, tau):
    """In float32 the same coefficient (≥ 1e41) has no representation: a ValueError naming the settings."""
    old = torch.full((4, 3), -1.0, dtype=dtype)
    with pytest.raises(ValueError, match="lpo_divergence='chi2'.*lpo_tau"):
        run("lpo", old, old.clone(), None, torch.ones(4, 3), "seq-mean-token-sum",
            {"lpo_divergence": "chi2", "lpo_tau": tau}, rewards=torch.tensor([100.0, 0.0, 0.0, 0.0]),
            group_ids=torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("div", ["fwd", "rev", "js", "hellinger", "chi2"])
def test_lpo_float16_small_tau_is_finite(div):
    """float16 at τ = 1e-8 gave NaN for every divergence. Computed in float32, the bounded coefficients
    (fwd |c| ≤ 1, JS, Hellinger) stay finite; reverse KL's c = P(d - d̄) with d = s - φ grows like 1/τ (here
    ~1e7: finite in float32, beyond float16 as a gradient) and χ²'s like P/w* ~ e^(1e8): both said so."""
    h = torch.float16
    old = torch.full((4, 3), -1.0, dtype=h)
    lp = old + torch.tensor([[-0.1], [0.0], [-0.2], [0.0]], dtype=h)
    cfg = {"lpo_divergence": div, "lpo_tau": 1e-8}
    if div in ("chi2", "rev"):
        with pytest.raises(ValueError, match="lpo_tau" if div == "chi2" else "log_prob is float16"):
            run("lpo", old, lp, None, torch.ones(4, 3), config=cfg)
        return
    loss, grad, metrics = run("lpo", old, lp, None, torch.ones(4, 3), config=cfg)
    assert_finite(loss, grad, metrics, h)


def test_lpo_grpo_tau_of_huge_rewards_is_not_a_silent_zero():
    """σ_G of rewards × 1e20 overflowed Σx² in float32 and every φ became 0; the target is scale-free."""
    old = torch.full((4, 2), -1.0)
    lp = old + torch.tensor([[-0.3], [0.1], [0.0], [-0.2]])
    base = torch.tensor([1.0, 0.0, 0.0, 1.0])
    _, g1, _ = run("lpo", old, lp, None, torch.ones(4, 2), config={"lpo_tau": "grpo"}, rewards=base)
    _, g2, _ = run("lpo", old, lp, None, torch.ones(4, 2), config={"lpo_tau": "grpo"}, rewards=base * 1e20)
    assert g1.abs().max() > 0
    # (R - μ)/σ is scale-free: the two agree to float32 round-off of the scaled σ (a few ulps)
    torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------------------------
# 4. BandPO's band_log_upper_mean on tail tokens (1/p beyond the dtype)
# --------------------------------------------------------------------------------------------------------------

def _tail_log_upper_mp(div: str, delta: float, log_p: float) -> float:
    """log r̄ for tiny p, 50 digits: KL solves p log(p/q) + (1-p) log((1-p)/(1-q)) = δ for q > p."""
    mpmath.mp.dps = 50
    p = mpmath.exp(log_p)
    if div == "tv":
        return float(mpmath.log(min(1 + delta / p, 1 / p)))
    if div == "chi2":
        return float(mpmath.log(min(1 + mpmath.sqrt(delta * (1 - p) / p), 1 / p)))
    f = lambda q: p * mpmath.log(p / q) + (1 - p) * mpmath.log((1 - p) / (1 - q)) - delta   # noqa: E731
    q = mpmath.findroot(f, (p * 2, 1 - mpmath.mpf(10) ** -40), solver="anderson")
    return float(mpmath.log(q) - log_p)


@pytest.mark.parametrize("div", ["kl", "tv", "chi2"])
@pytest.mark.parametrize("dtype, log_p", [(torch.float32, -100.0), (torch.bfloat16, -300.0),
                                          (torch.float64, -1000.0), (torch.float32, -80.0)])
def test_band_log_upper_mean_is_finite_and_right_in_the_tail(div, dtype, log_p):
    """log p = -100 gave 3.4e38 (float32) or inf; now the tail asymptote, which agrees with 50-digit roots —
    also at -80, where float32's r̄ is still finite (the two branches meet)."""
    old = torch.tensor([[log_p]], dtype=dtype)
    _, _, metrics = run("bandpo", old, old.clone(), torch.ones(1, 1, dtype=dtype), torch.ones(1, 1),
                        config={"band_divergence": div})
    got = metrics["fiberlab/band_log_upper_mean"]
    want = _tail_log_upper_mp(div, 0.05, float(old.double()))
    # float32/bfloat16 work in float32: log r̄ ~ 100 to a few float32 ulps (1e-5 relative); float64 to 1e-12
    assert got == pytest.approx(want, rel=1e-12 if dtype == torch.float64 else 1e-5)


def test_band_active_bound_sums_are_finite_for_underflowing_p():
    for dtype in DTYPES:
        old = torch.tensor([-5.0, -60000.0 if dtype == torch.float16 else -1e4], dtype=dtype)
        b, s_lo, s_log_up = band_active_bound(old, torch.ones(2, dtype=dtype), torch.ones(2), "kl", 0.05)
        assert math.isfinite(float(s_lo)) and math.isfinite(float(s_log_up)), dtype


# --------------------------------------------------------------------------------------------------------------
# 5. global_batch_info: every count positive and finite, dp_size an integer
# --------------------------------------------------------------------------------------------------------------

def _batch64(B=4, T=3):
    g = torch.Generator().manual_seed(5)
    old = -3 * torch.rand(B, T, generator=g, dtype=torch.float64)
    return old, old - 0.2 * torch.rand(B, T, generator=g, dtype=torch.float64), \
        torch.randn(B, T, generator=g, dtype=torch.float64), torch.ones(B, T, dtype=torch.bool)


@pytest.mark.parametrize("name", ["ppo", "bandpo", "fiberpo", "lpo"])
@pytest.mark.parametrize("key, value", [("batch_num_tokens", 0), ("batch_num_tokens", float("nan")),
                                        ("batch_num_tokens", -6), ("dp_size", 0), ("dp_size", 1.5),
                                        ("dp_size", "abc"), ("global_batch_size", 0), ("global_batch_size", True),
                                        ("loss_scale_factor", -1.0), ("batch_num_tokens", float("inf"))])
def test_global_batch_info_is_checked(name, key, value):
    old, lp, adv, mask = _batch64()
    info = {"dp_size": 1, "batch_num_tokens": 12, "global_batch_size": 4, "loss_scale_factor": None, key: value}
    with pytest.raises(ValueError, match=rf"global_batch_info\['{key}'\]"):
        run(name, old, lp, adv, mask, config={"global_batch_info": info})


def test_global_batch_info_good_values_scale_the_loss():
    old, lp, adv, mask = _batch64()
    base, _, _ = run("ppo", old, lp, adv, mask)
    scaled, _, _ = run("ppo", old, lp, adv, mask,
                       config={"global_batch_info": {"dp_size": 2, "batch_num_tokens": 24}})
    assert float(scaled) == pytest.approx(float(base) * 2 * 12 / 24, rel=1e-14)


# --------------------------------------------------------------------------------------------------------------
# 6. Config values: type-checked where read, the key named
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, cfg, key", [
    ("bandpo", {"band_relax": "false"}, "band_relax"),
    ("bandpo", {"band_relax": 1}, "band_relax"),
    ("bandpo", {"band_delta": True}, "band_delta"),
    ("bandpo", {"band_delta": "0.05"}, "band_delta"),
    ("bandpo", {"band_upper_bound_max": "ten"}, "band_upper_bound_max"),
    ("bandpo", {"band_upper_bound_max": 0.5}, "band_upper_bound_max"),
    ("bandpo", {"tokenwise_ratio_bounds_method": "bandxx"}, "tokenwise_ratio_bounds_method"),
    ("ppo", {"clip_ratio": "abc"}, "clip_ratio"),
    ("ppo", {"clip_ratio": float("nan")}, "clip_ratio"),
    ("ppo", {"clip_ratio_c": "x"}, "clip_ratio_c"),
    ("ppo", {"clip_ratio_high": [0.2]}, "clip_ratio_high"),
    ("fiberpo", {"fiberpo_eps": True}, "fiberpo_eps"),
    ("fiberpo_domain", {"fiberpo_c_pos_levels": "abc"}, "fiberpo_c_pos_levels"),
    ("grpo_rgf", {"rgf_min": "yes"}, "rgf_min"),
    ("lpo", {"lpo_tau_std_unbiased": "false"}, "lpo_tau_std_unbiased"),
    ("lpo", {"lpo_tau_eps": True}, "lpo_tau_eps"),
    ("lpo", {"lpo_token_clip": 3}, "lpo_token_clip"),
])
def test_bad_config_values_name_the_key(name, cfg, key):
    old, lp, adv, mask = _batch64()
    with pytest.raises(ValueError, match=key):
        run(name, old, lp, adv, mask, config=cfg)


@pytest.mark.parametrize("config", ["abc", 5, 0.2, [("clip_ratio", 0.2)], b"x"])
@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_a_config_that_is_not_a_config_is_refused(name, config):
    old, lp, adv, mask = _batch64()
    with pytest.raises(ValueError, match="config must be"):
        run(name, old, lp, adv, mask, config=config)


@pytest.mark.parametrize("cfg", [{"lpo_tau": 1e5}, {"clip_ratio_high": 1e6, "lpo_token_clip": "ppo"}])
def test_large_settings_with_float16_inputs(cfg):
    """lpo_tau=1e5 or clip_ratio_high=1e6 with float16 raised torch's "cannot be converted to Half"."""
    h = torch.float16
    old = torch.full((4, 2), -2.0, dtype=h)
    lp = old - torch.tensor([[0.0], [0.5], [0.25], [0.0]], dtype=h)
    loss, grad, metrics = run("lpo", old, lp, None, torch.ones(4, 2), config=cfg)
    assert_finite(loss, grad, metrics, h)
    old, lp, adv, mask = (t.to(h) if t.is_floating_point() else t for t in _batch64())
    assert_finite(*run("ppo", old, lp, adv, mask, config={"clip_ratio_high": 1e6}), h)


# --------------------------------------------------------------------------------------------------------------
# 7. Inputs let through: positive log-probs, mixed dtypes, unknown keyword arguments
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
@pytest.mark.parametrize("arg", ["old_log_prob", "log_prob"])
def test_positive_log_probs_are_refused(name, arg):
    old, lp, adv, mask = _batch64()
    bad = {"old_log_prob": old, "log_prob": lp}
    bad[arg] = bad[arg].clone()
    bad[arg][1, 1] = 0.3                                 # a probability passed as a log-probability
    with pytest.raises(ValueError, match=f"^{arg} must hold log-probabilities"):
        run(name, bad["old_log_prob"], bad["log_prob"], adv, mask)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_prob_roundoff_above_zero_is_accepted(dtype):
    """A log-softmax may round a log-probability of ~0 up by a few ulps: within the stated round-off it passes."""
    tol = log_prob_roundoff(dtype)
    old = torch.tensor([[-1.0, tol]], dtype=dtype)
    assert float(old[0, 1]) > 0
    assert_finite(*run("ppo", old, old.clone(), torch.ones(1, 2, dtype=dtype), torch.ones(1, 2)), dtype)
    with pytest.raises(ValueError, match="old_log_prob must hold log-probabilities"):
        run("ppo", old * 4, old.clone(), torch.ones(1, 2, dtype=dtype), torch.ones(1, 2))


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_mixed_dtypes_promote_as_documented(name):
    """float32 log-probs with float64 advantages compute (and return) in float64, torch's promotion; half
    log-probs with float32 data in float32; the gradient comes back in log_prob's own dtype."""
    old, lp, adv, mask = _batch64()
    loss, grad, _ = run(name, old.float(), lp.float(), adv, mask)
    assert loss.dtype == torch.float64 and grad.dtype == torch.float32
    loss, grad, _ = run(name, old.float(), lp.bfloat16(), adv.float(), mask)
    assert loss.dtype == torch.float32 and grad.dtype == torch.bfloat16
    assert working_dtype(lp.half(), old.bfloat16()) == torch.float32


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_unknown_keyword_arguments_are_refused_alike(name):
    old, lp, adv, mask = _batch64()
    with pytest.raises(ValueError, match=rf"unexpected keyword argument\(s\) for {name if name != 'grpo' else 'grpo_rgf'}: \['cliprange'\]"):
        run(name, old, lp, adv, mask, cliprange=0.2)


# --------------------------------------------------------------------------------------------------------------
# 8. An all-padding micro-batch contributes exactly 0 when global counts are given
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean",
                                  "seq-mean-token-sum-norm"])
def test_all_padding_micro_batch_with_global_counts_is_exactly_zero(name, mode):
    old, lp, adv, _ = _batch64()
    empty = torch.zeros(4, 3, dtype=torch.bool)
    info = {"dp_size": 2, "batch_num_tokens": 40, "global_batch_size": 16, "loss_scale_factor": None}
    loss, grad, metrics = run(name, old, lp, adv, empty, mode, {"global_batch_info": info})
    assert float(loss) == 0.0 and float(grad.abs().max()) == 0.0
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    with pytest.raises(ValueError, match="response_mask is empty"):         # no global count: an error
        run(name, old, lp, adv, empty, mode)


# --------------------------------------------------------------------------------------------------------------
# The sweep: dtype × objective × extreme inputs
# --------------------------------------------------------------------------------------------------------------

SWEEP_LOSSES = sorted(POLICY_LOSSES) + ["bandpo:tv", "bandpo:chi2", "lpo:rev", "lpo:chi2", "lpo:js"]


def _log_probs(g: torch.Generator, shape, dtype, deep: float) -> torch.Tensor:
    """Per token one of: 0 (p = 1), -tiny (p one smallest normal below 1), -U(0, 1), -U(0, 30), -U(0, deep)."""
    kind = torch.randint(5, shape, generator=g)
    u = torch.rand(shape, generator=g, dtype=torch.float64)
    tiny = torch.finfo(dtype).tiny
    vals = torch.stack([torch.zeros(shape, dtype=torch.float64), torch.full(shape, -tiny, dtype=torch.float64),
                        -u, -30 * u, -deep * u])
    return vals.gather(0, kind[None]).squeeze(0)


@given(seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from(DTYPES), loss=st.sampled_from(SWEEP_LOSSES),
       ratio_scale=st.sampled_from([0.3, 20.0, 1000.0]), adv_scale=st.sampled_from([1.0, 1e4, 1e30]),
       tau=st.sampled_from([1e-3, 1.0, 1e3, "grpo", "drgrpo"]), delta=st.sampled_from([1e-12, 0.05, 50.0]),
       T=st.integers(1, 5), mode=st.sampled_from(["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"]))
def test_sweep_finite_or_a_named_error(seed, dtype, loss, ratio_scale, adv_scale, tau, delta, T, mode):
    """Finite loss, gradient and metrics, or a ValueError naming an argument — the latter only where the
    inputs are extreme (advantages ≥ 1e4, log-ratios beyond ±20, τ = 1e-3, or Pearson χ², whose coefficient
    is unbounded): at moderate settings every objective must simply work."""
    name, _, variant = loss.partition(":")
    g = torch.Generator().manual_seed(seed)
    B = 4
    fmax = torch.finfo(dtype).max
    old = _log_probs(g, (B, T), dtype, min(1000.0, fmax))
    lr = ratio_scale * torch.randn(B, T, generator=g, dtype=torch.float64)
    new = torch.where(old + lr > 0, old - lr, old + lr)               # a valid log-probability: reflect
    adv = torch.clamp(adv_scale * torch.randn(B, T, generator=g, dtype=torch.float64), -fmax / 4, fmax / 4)
    mask = torch.rand(B, T, generator=g) < 0.7
    mask[0, 0] = True
    old, new, adv = old.to(dtype), new.to(dtype), adv.to(dtype)
    new = torch.minimum(new, torch.zeros_like(new))                   # rounding to the dtype keeps it ≤ 0
    cfg: dict = {}
    if name == "bandpo":
        cfg = {"band_divergence": variant or "kl", "band_delta": delta}
    if name in ("lpo", "lpo_pointwise"):
        cfg = {"lpo_tau": tau, "lpo_divergence": variant or "fwd"}
    rewards = (torch.rand(B, generator=g) < 0.5).to(dtype) * (1.0 if adv_scale == 1.0 else 100.0)
    extra = extras(name, (B, T), rewards)
    extreme = (adv_scale > 1.0 or ratio_scale > 1.0 or variant == "chi2"
               or (name.startswith("lpo") and tau == 1e-3))
    try:
        loss_v, grad, metrics = run(name, old, new, adv, mask, mode, cfg, **extra)
    except ValueError as exc:
        assert extreme, f"a ValueError at moderate settings: {exc}"
        assert any(n in str(exc) for n in NAMES), f"the error names no argument: {exc}"
        return
    assert_finite(loss_v, grad, metrics, dtype)
