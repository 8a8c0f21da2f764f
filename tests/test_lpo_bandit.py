"""The LPO response bandit (fiberlab.numerics.lpo_bandit): exact gradients, coefficients against the float64 references
of fiberlab.numerics.lpo, degenerate groups, argument validation, determinism, and the four bandit claims' checks."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from scipy.special import log_softmax, softmax

import fiberlab.claims.lpo_bandit as C
from fiberlab.numerics import lpo as N
from fiberlab.numerics import lpo_bandit as B

# A few float64 operations on O(1) numbers (same budget as the LPO numerics checks).
ROUNDOFF = 1e-13
# Central differences with h = 1e-5 of a smooth O(1) function: truncation + rounding ≲ 1e-10 (as FD_TOL in claims/_cases).
FD_STEP, FD_TOL = 1e-5, 1e-8

SMALL = B.BanditConfig(rewards=(1.0, 1.0, 0.1, 0.0, 0.0, 0.0), init_logits=(-1.0, -2.0, 0.0, 0.0, 0.5, 0.0),
                       K=4, E=2, lr=0.3, iterations=30)


@given(st.integers(2, 9), st.integers(2, 12), st.integers(0, 2**31 - 1))
def test_tabular_gradient_matches_finite_differences(M, K, seed):
    rng = np.random.default_rng(seed)
    theta, y, c = rng.normal(size=M) * 2, rng.integers(0, M, size=K), rng.normal(size=K)

    def objective(th):                                   # Σ_k c_k log π_θ(y_k)
        return float(c @ log_softmax(th)[y])
    g = B.tabular_gradient(theta[None], y[None], c[None])[0]
    np.testing.assert_allclose(g, N.fd_gradient(objective, theta, FD_STEP), atol=FD_TOL)


@given(st.integers(2, 12), st.integers(0, 2**31 - 1), st.floats(0.1, 3.0))
def test_coefficients_match_reference_implementations(K, seed, scale):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(3, K)) * scale
    A = rng.normal(size=(3, K))
    A -= A.mean(-1, keepdims=True)
    for row in range(3):
        w = softmax(A[row])
        fwd = B.descent_coefficients("lpo_fwd", s, A)[row]
        rev = B.descent_coefficients("lpo_rev", s, A)[row]
        pg = B.descent_coefficients("pg", s, A)[row]
        point = B.descent_coefficients("pointwise", s, A)[row]
        np.testing.assert_allclose(fwd, N.forward_coefficients(s[row], w), atol=ROUNDOFF)
        np.testing.assert_allclose(rev, N.reverse_coefficients(s[row], A[row]), atol=ROUNDOFF * max(1, scale * 10))
        c_pg_ascent, _ = N.off_policy_coefficients(s[row], A[row])
        np.testing.assert_allclose(pg, -c_pg_ascent, atol=ROUNDOFF * np.exp(4 * scale))
        np.testing.assert_allclose(point, N.pointwise_coefficients(w), atol=ROUNDOFF)


def test_on_policy_reverse_equals_pg_coefficients():
    A = np.array([[1.2, -0.4, -0.8], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(B.descent_coefficients("lpo_rev", np.zeros((2, 3)), A),
                               B.descent_coefficients("pg", np.zeros((2, 3)), A), atol=ROUNDOFF)


def test_ppo_clip_zeroes_the_clipped_branch():
    s = np.log(np.array([[1.5, 0.5, 1.05, 0.95]]))
    A = np.array([[1.0, -1.0, 1.0, -1.0]])
    c = B.descent_coefficients("pg", s, A, clip_eps=0.2)
    # r = 1.5 with A > 0 and r = 0.5 with A < 0 are clipped; the two ratios inside the band keep r A / K.
    np.testing.assert_allclose(c[0], [0.0, 0.0, -1.05 / 4, 0.95 / 4], atol=ROUNDOFF)


@pytest.mark.parametrize("family", ["grpo", "dr_grpo", "maxrl"])
def test_temperatures_match_table1(family):
    R = np.array([1.0, 0.0, 0.1, 1.0, 0.0])
    mu, tau = B.group_temperature(R[None], family, eps=1e-6)
    A_ref, tau_ref = N.group_advantages(family, R)
    eps = 0.0 if family == "dr_grpo" else 1e-6
    assert tau[0] == pytest.approx(tau_ref + eps, abs=ROUNDOFF)
    np.testing.assert_allclose((R - mu[0]) / tau[0], A_ref * tau_ref / (tau_ref + eps), atol=ROUNDOFF)
    _, tau_unbiased = B.group_temperature(R[None], "grpo", std="unbiased")
    assert tau_unbiased[0] == pytest.approx(R.std(ddof=1) + 1e-6)


@pytest.mark.parametrize("family", ["grpo", "dr_grpo", "maxrl"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fully_on_policy_reverse_kl_is_pg(family, optimizer):
    cfg = B.BanditConfig(**{**SMALL.__dict__, "E": 1, "tau_family": family, "optimizer": optimizer,
                            "lr": 0.3 if optimizer == "sgd" else 0.05})
    a, b = B.simulate("pg", cfg, 8, seed=3), B.simulate("lpo_rev", cfg, 8, seed=3)
    assert np.array_equal(a.samples, b.samples)
    assert np.abs(a.logits - b.logits).max() <= C.TRAJECTORY_TOL
    # E = 2: the second update is off-policy and the two separate.
    cfg2 = B.BanditConfig(**{**cfg.__dict__, "E": 2})
    assert np.abs(B.simulate("pg", cfg2, 8, 3).logits - B.simulate("lpo_rev", cfg2, 8, 3).logits).max() > 1e-6


@pytest.mark.parametrize("family", ["grpo", "dr_grpo", "maxrl"])
def test_all_equal_groups_give_zero_update_and_no_nan(family):
    # All-zero rewards: σ_G = 0 and μ_G = 0 in every group (τ = eps); A = 0, w* uniform, c = 0 on-policy.
    R = np.zeros((4, 6))
    mu, tau = B.group_temperature(R, family)
    A = (R - mu[:, None]) / tau[:, None]
    assert np.all(A == 0) and np.all(np.isfinite(tau))
    for method in ("pg", "lpo_fwd", "lpo_rev"):
        np.testing.assert_array_equal(B.descent_coefficients(method, np.zeros_like(A), A), 0.0)
    np.testing.assert_allclose(B.descent_coefficients("pointwise", np.zeros_like(A), A), -1 / 6)
    cfg = B.BanditConfig(rewards=(0.0,) * 5, K=6, iterations=10, tau_family=family, optimizer="adam", lr=0.1)
    for method in ("pg", "lpo_fwd", "lpo_rev"):
        r = B.simulate(method, cfg, 4, seed=1)
        assert np.all(r.logits == 0.0) and np.all(r.grad_norm == 0.0)
    r = B.simulate("pointwise", cfg, 4, seed=1)      # self-training on its own samples: moves, but stays finite
    assert np.all(np.isfinite(r.logits)) and r.grad_norm.max() > 0
    np.testing.assert_allclose(r.coef_sum, -1.0, atol=ROUNDOFF)


def test_metrics_are_consistent():
    r = B.simulate("lpo_fwd", SMALL, 5, seed=2)
    pi = softmax(r.logits, axis=-1)
    np.testing.assert_allclose(r.expected_reward, pi @ SMALL.reward_vector, atol=ROUNDOFF)
    np.testing.assert_allclose(r.correct_mass, pi[..., [0, 1]], atol=ROUNDOFF)
    np.testing.assert_allclose(r.pass_at(1), r.correct_mass.sum(-1), atol=ROUNDOFF)
    np.testing.assert_allclose(r.pass_at(3), 1 - (1 - pi[..., :2].sum(-1)) ** 3, atol=ROUNDOFF)
    np.testing.assert_allclose(r.entropy, -(pi * np.log(pi)).sum(-1), atol=ROUNDOFF)
    assert r.grad_norm.shape == (5, 30, 2) and r.samples.shape == (5, 30, 4)


def test_determinism_with_fixed_seed():
    a, b = B.simulate("lpo_fwd", SMALL, 6, seed=11), B.simulate("lpo_fwd", SMALL, 6, seed=11)
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, B.simulate("lpo_fwd", SMALL, 6, seed=12).samples)


def test_sampling_follows_the_behaviour_policy():
    # One iteration at a tiny learning rate: the first groups are draws from softmax(init_logits).
    cfg = B.BanditConfig(**{**SMALL.__dict__, "iterations": 1, "K": 16, "lr": 1e-12})
    y = B.simulate("pg", cfg, 4000, seed=5).samples.ravel()
    p = softmax(np.asarray(SMALL.init_logits))
    counts = np.bincount(y, minlength=p.size)
    assert stats.chisquare(counts, p * counts.sum()).pvalue > 1e-4


def test_mean_ci_is_student_t():
    x = np.array([0.1, 0.4, -0.2, 0.3, 0.0])
    m, h = B.mean_ci(x)
    lo, hi = stats.t.interval(0.95, 4, loc=x.mean(), scale=stats.sem(x))
    assert m == pytest.approx(x.mean()) and h == pytest.approx((hi - lo) / 2)


@pytest.mark.parametrize("kwargs, name", [
    ({"rewards": ((1.0, 0.0), (0.0, 1.0))}, "rewards"),
    ({"rewards": (1.0,)}, "rewards"),
    ({"rewards": (1.0, float("nan"), 0.0)}, "rewards"),
    ({"init_logits": (0.0, 0.0)}, "init_logits"),
    ({"K": 1}, "K"),
    ({"E": 0}, "E"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -0.1}, "lr"),
    ({"iterations": 0}, "iterations"),
    ({"tau_family": "ppo"}, "tau_family"),
    ({"std": "sample"}, "std"),
    ({"eps": 0.0}, "eps"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"clip_eps": -0.2}, "clip_eps"),
])
def test_bad_config_raises_naming_the_argument(kwargs, name):
    base = {"rewards": (1.0, 0.0, 0.0)}
    with pytest.raises(ValueError, match=name):
        B.BanditConfig(**{**base, **kwargs})


def test_bad_simulate_arguments_raise():
    with pytest.raises(ValueError, match="method"):
        B.simulate("ppo", SMALL)
    with pytest.raises(ValueError, match="n_seeds"):
        B.simulate("pg", SMALL, n_seeds=0)
    with pytest.raises(ValueError, match="config"):
        B.simulate("pg", {"rewards": (1.0, 0.0)})
    with pytest.raises(ValueError, match="k"):
        B.pass_at_k(0.5, 0)
    with pytest.raises(ValueError, match="tau_family"):
        B.group_temperature(np.zeros((1, 3)), "ppo")


# The four claim checks themselves run in tests/test_claims.py with every registry check.
