"""LPO numerics layer: the API of fiberlab.numerics.lpo, argument validation, and proofs that the checks can fail."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import softmax

import fiberlab.claims  # noqa: F401  (declares the claims and attaches every layer's checks)
from fiberlab import registry
from fiberlab.claims import lpo_numerics as C
from fiberlab.numerics import lpo as N

# Same round-off / finite-difference budgets as the checks (see fiberlab/claims/lpo_numerics.py).
ROUNDOFF = 1e-13
FD = 1e-8
# An exact projection with a full feature map (Φ = I) reaches w* up to the solver's accuracy: an objective gap
# ≈ 1e-8 gives ‖P - w*‖ ≲ √(2·1e-8) ≈ 1.4e-4.
FULL_RANK_PROJECTION_TOL = 2e-4
# Clarabel's point in the target program: √(2·1e-7/0.5) ≈ 6.3e-4 (strong-concavity certificate).
CVX_POINT_TOL = 7e-4


def _numerics_check(claim_id):
    return next(ch for ch in registry.get_claim(claim_id).checks if ch.layer == "numerics")


logits = st.lists(st.floats(-30, 30), min_size=2, max_size=12)


@given(logits, st.integers(0, 2**31 - 1))
def test_coefficients_bounded_and_zero_sum(s, seed):
    s = np.array(s)
    phi = np.random.default_rng(seed).normal(size=s.size) * 10
    c_fwd = N.forward_coefficients(s, softmax(phi))
    c_rev = N.reverse_coefficients(s, phi)
    assert np.all(np.abs(c_fwd) <= 1.0)
    assert abs(c_fwd.sum()) <= 1e-12 and abs(c_rev.sum()) <= 1e-11 * max(1.0, np.abs(s - phi).max())
    d = s - phi
    assert np.all(np.abs(c_rev) <= d.max() - d.min() + 1e-12)
    np.testing.assert_allclose(N.reverse_coefficients_eq14(s, phi), c_rev, atol=1e-11 * max(1, np.abs(d).max()))


def test_on_policy_reverse_coefficients_are_minus_pg():
    A = np.array([0.3, -1.0, 0.7])
    np.testing.assert_allclose(N.reverse_coefficients(np.zeros(3), A), -A / 3, atol=ROUNDOFF)


def test_target_limits_and_cvx():
    R, st_ = np.array([0.2, 0.9, 0.5]), np.array([0.1, -0.3, 0.4])
    assert N.listwise_target(R, 1e-4, st_)[1] == pytest.approx(1.0)
    np.testing.assert_allclose(N.listwise_target(R, 1e6, st_), softmax(st_), atol=1e-5)
    w, val = N.target_cvx(R, 0.5, softmax(st_))
    # Clarabel certifies w only through strong concavity: ‖w - w*‖₁ ≤ √(2·gap/τ) ≈ 6e-4 at τ = 0.5 (see the check)
    np.testing.assert_allclose(w, N.listwise_target(R, 0.5, st_), atol=CVX_POINT_TOL)
    assert val == pytest.approx(N.proximal_objective(N.listwise_target(R, 0.5, st_), R, 0.5, softmax(st_)), abs=1e-7)


def test_full_rank_projection_reaches_target():
    w = softmax(np.array([0.5, -1.0, 2.0, 0.0]))
    _, P = N.forward_projection_loglinear(np.eye(4), w)
    assert np.max(np.abs(P - w)) <= FULL_RANK_PROJECTION_TOL


def test_scores_match_finite_differences():
    rng = np.random.default_rng(0)
    pol, th = N.LogLinearPolicy(rng.normal(size=(7, 3))), rng.normal(size=3)
    g = N.fd_gradient(lambda t: pol.log_prob(t, [2])[0], th, 1e-5)
    np.testing.assert_allclose(pol.score(th, [2])[0], g, atol=FD)
    tok, th = N.UnigramTokenPolicy(), rng.normal(size=5)
    seq = [np.array([0, 3, 3, 1])]
    g = N.fd_gradient(lambda t: tok.log_prob(t, seq)[0], th, 1e-5)
    np.testing.assert_allclose(tok.score(th, seq)[0], g, atol=FD)


def test_group_advantages_temperatures():
    R = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    assert N.group_advantages("grpo", R)[1] == pytest.approx(np.sqrt(0.6 * 0.4))
    assert N.group_advantages("rloo", R)[1] == pytest.approx(4 / 5)
    assert N.group_advantages("maxrl", R)[1] == pytest.approx(0.6)
    A, tau = N.group_advantages("remax", R, baseline=0.25)
    assert tau == 1.0 and np.allclose(A, R - 0.25)


@pytest.mark.parametrize("call, arg", [
    (lambda: N.listwise_target([1.0, 0.0], 0.0), "tau"),
    (lambda: N.listwise_target([1.0, 0.0], 1.0, [0.0]), "s_t"),
    (lambda: N.listwise_target([[1.0]], 1.0), "rewards"),
    (lambda: N.listwise_target([np.nan, 1.0], 1.0), "rewards"),
    (lambda: N.target_cvx([1.0, 0.0], 1.0, [0.7, 0.7]), "p_t"),
    (lambda: N.reverse_coefficients([0.0, 1.0], [0.0]), "phi"),
    (lambda: N.group_advantages("ppo", [1.0, 0.0]), "method"),
    (lambda: N.group_advantages("grpo", [1.0, 1.0]), "rewards"),
    (lambda: N.group_advantages("maxrl", [0.0, 0.0]), "rewards"),
    (lambda: N.group_advantages("remax", [1.0, 0.0]), "baseline"),
    (lambda: N.group_advantages("reinforce_pp_baseline", [1.0, 0.0]), "batch"),
    (lambda: N.group_advantages("reinforce_pp_baseline", [1.0, 0.0], batch=np.ones((2, 3))), "batch"),
    (lambda: N.LogLinearPolicy(np.ones(3)), "features"),
    (lambda: N.forward_projection_loglinear(np.eye(2), [0.5, 0.6]), "target"),
])
def test_bad_arguments_name_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


# ---------------------------------------------------------------------------------------------
# The checks can fail
# ---------------------------------------------------------------------------------------------
def test_forward_coefficients_in_place_of_reverse_fail_prop1(monkeypatch):
    monkeypatch.setattr(N, "reverse_coefficients", lambda s, phi: softmax(s) - softmax(phi))
    assert registry.run_check(_numerics_check("lpo.pg_is_reverse_kl")).status == "fail"


def test_wrong_temperature_placement_fails_gibbs(monkeypatch):
    monkeypatch.setattr(N, "listwise_target", lambda R, tau, st=None: softmax(np.asarray(R) * tau + st))
    assert registry.run_check(_numerics_check("lpo.gibbs_target")).status == "fail"


def test_uncentred_general_coefficients_fail_zero_sum(monkeypatch):
    monkeypatch.setattr(N, "general_coefficients", lambda s, g: softmax(s) * np.asarray(g))
    assert registry.run_check(_numerics_check("lpo.zero_sum")).status == "fail"


def test_doubled_forward_coefficients_fail_tv_identity(monkeypatch):
    orig = N.forward_coefficients
    monkeypatch.setattr(N, "forward_coefficients", lambda s, w: 2 * orig(s, w))
    assert registry.run_check(_numerics_check("lpo.fwd_bounded")).status == "fail"


def test_clipped_reverse_coefficients_fail_growth(monkeypatch):
    orig = N.reverse_coefficients
    monkeypatch.setattr(N, "reverse_coefficients", lambda s, phi: np.clip(orig(s, phi), -1, 1))
    assert registry.run_check(_numerics_check("lpo.rev_unbounded")).status == "fail"


def test_unweighted_partition_fails_prop3(monkeypatch):
    from scipy.special import logsumexp
    monkeypatch.setattr(N, "log_partition", lambda R, tau, p_t: float(logsumexp(np.asarray(R) / tau)))
    assert registry.run_check(_numerics_check("lpo.rev_is_proximal")).status == "fail"


def test_rloo_with_tau_one_is_caught():
    worst, _ = C.implicit_target_errors(n_groups=10, taus={"rloo": lambda R, t: 1.0})
    assert worst["rloo"] > 1e-3 and worst["grpo"] <= ROUNDOFF


def test_pinsker_without_square_root_is_violated():
    _, slack, viol, _ = C.improvement_bound(n_cases=50)
    _, _, viol_lin, _ = C.improvement_bound(n_cases=50, sqrt_pinsker=False)
    assert slack >= 0 and viol == 0 and viol_lin > 0


def test_wrong_tau_in_target_fails_monotone(monkeypatch):
    orig = N.listwise_target
    monkeypatch.setattr(N, "listwise_target", lambda R, tau, st=None: orig(R, 2 * tau, st))
    assert registry.run_check(_numerics_check("lpo.monotone_improvement")).status == "fail"


def test_equal_lengths_do_not_reproduce_the_counterexample(monkeypatch):
    orig = C.length_normalisation_gap
    monkeypatch.setattr(C, "length_normalisation_gap", lambda seed_offset=11, lengths=None: orig(seed_offset, [9] * 4))
    assert registry.run_check(_numerics_check("lpo.length_normalisation")).status == "fail"
