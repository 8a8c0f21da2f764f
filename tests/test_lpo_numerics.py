"""LPO numerics layer: the API of fiberlab.numerics.lpo, argument validation, and proofs that the checks can fail."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import softmax

import fiberlab.claims  # noqa: F401  (declares the claims and attaches every layer's checks)
from fiberlab import registry
from fiberlab.claims import _cases
from fiberlab.claims import lpo_coefficients as Co
from fiberlab.claims import lpo_improvement as Im
from fiberlab.claims import lpo_targets as Ta
from fiberlab.numerics import lpo as N

# Same round-off / finite-difference budgets as the checks (see fiberlab/claims/_cases.py).
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
    worst, _ = Ta.implicit_target_errors(n_groups=10, taus={"rloo": lambda R, t: 1.0})
    assert worst["rloo"] > 1e-3 and worst["grpo"] <= ROUNDOFF


def test_pinsker_without_square_root_is_violated():
    _, slack, viol, _ = Im.improvement_bound(n_cases=50)
    _, _, viol_lin, _ = Im.improvement_bound(n_cases=50, sqrt_pinsker=False)
    assert slack >= 0 and viol == 0 and viol_lin > 0


def test_wrong_tau_in_target_fails_monotone(monkeypatch):
    orig = N.listwise_target
    monkeypatch.setattr(N, "listwise_target", lambda R, tau, st=None: orig(R, 2 * tau, st))
    assert registry.run_check(_numerics_check("lpo.monotone_improvement")).status == "fail"


def test_equal_lengths_do_not_reproduce_the_counterexample(monkeypatch):
    orig = Co.length_normalisation_gap
    monkeypatch.setattr(Co, "length_normalisation_gap", lambda seed_offset=11, lengths=None: orig(seed_offset, [9] * 4))
    assert registry.run_check(_numerics_check("lpo.length_normalisation")).status == "fail"


# ---------------------------------------------------------------------------------------------
# Claims added later: lpo.entropy_redundant, ...
# ---------------------------------------------------------------------------------------------
def test_entropy_bonus_target_api():
    R = np.array([1.0, 0.0, 0.4])
    np.testing.assert_allclose(N.entropy_bonus_target(R, 0.5, 0.0), N.listwise_target(R, 0.5), atol=ROUNDOFF)
    np.testing.assert_allclose(N.entropy_bonus_target(R, 0.5, 1.5), N.listwise_target(R, 2.0), atol=ROUNDOFF)
    w, val = N.entropy_bonus_target_cvx(R, 0.5, 1.5)
    np.testing.assert_allclose(w, N.listwise_target(R, 2.0), atol=CVX_POINT_TOL)
    assert N.entropy(np.ones(4) / 4) == pytest.approx(np.log(4))


@pytest.mark.parametrize("call, arg", [
    (lambda: N.entropy_bonus_target([1.0, 0.0], 1.0, -0.1), "gamma"),
    (lambda: N.entropy_bonus_target([1.0, 0.0], -1.0, 0.1), "tau"),
    (lambda: N.entropy_bonus_target_cvx([1.0, 0.0], 1.0, np.inf), "gamma"),
])
def test_entropy_bad_arguments(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_entropy_bonus_ignored_fails(monkeypatch):
    """A target that ignores γ (softmax(R/τ)) disagrees with the cvxpy maximiser: the check must fail."""
    monkeypatch.setattr(N, "entropy_bonus_target", lambda R, tau, gamma: N.listwise_target(R, tau))
    assert registry.run_check(_numerics_check("lpo.entropy_redundant")).status == "fail"


def test_entropy_bonus_gamma_times_tau_fails(monkeypatch):
    monkeypatch.setattr(N, "entropy_bonus_target", lambda R, tau, gamma: N.listwise_target(R, tau * (1 + gamma)))
    assert registry.run_check(_numerics_check("lpo.entropy_redundant")).status == "fail"


def test_mode_coverage_api():
    a, D = 0.3, 0.1
    m = N.min_mass_exact(a, D)
    assert N.binary_kl(a, m) == pytest.approx(D, rel=1e-10)
    assert N.mode_coverage_bound(a, D) < N.mode_coverage_binary_bound(a, D) <= m < a
    m_cvx, P = N.min_mass_cvx(np.array([0.3, 0.5, 0.2]), 0, D)
    assert m_cvx == pytest.approx(m, rel=1e-5) and N.kl(np.array([0.3, 0.5, 0.2]), P) <= D + 1e-7
    assert N.min_mass_exact(a, 0.0) == a


def test_mode_coverage_without_minus_one_is_violated():
    """α e^{-D/α} (the bound without Cor. 2's -1) is beaten by the adversary at small D: a counterexample."""
    assert N.min_mass_exact(0.3, 0.01) < 0.3 * np.exp(-0.01 / 0.3)


def test_mode_coverage_check_fails_with_a_wrong_bound(monkeypatch):
    monkeypatch.setattr(N, "mode_coverage_bound", lambda a, D: float(a * np.exp(-D / a)))
    assert registry.run_check(_numerics_check("lpo.mode_coverage")).status == "fail"


@pytest.mark.parametrize("call, arg", [
    (lambda: N.mode_coverage_bound(1.0, 0.1), "alpha"),
    (lambda: N.mode_coverage_bound(0.5, -0.1), "D"),
    (lambda: N.min_mass_exact(0.0, 0.1), "x"),
    (lambda: N.min_mass_cvx([0.5, 0.5], 2, 0.1), "k"),
    (lambda: N.min_mass_cvx([0.5, 0.6], 0, 0.1), "target"),
])
def test_mode_coverage_bad_arguments(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_full_space_api():
    p0, R = np.array([0.7, 0.2, 0.1]), np.array([0.0, 1.0, 0.5])
    lp = N.gibbs_iteration(p0, R, 0.5, 30)
    assert lp.shape == (31, 3)
    np.testing.assert_allclose(lp[30], N.gibbs_closed_form(p0, R, 0.5, 30), atol=1e-12)
    E = np.exp(lp) @ R
    assert np.all(np.diff(E) >= 0) and N.suboptimality(lp[30], R) < 1e-12 < N.suboptimality(lp[0], R)


def test_full_space_check_fails_with_the_wrong_sign(monkeypatch):
    """π_{t+1} ∝ π_t e^{-R/τ} moves mass to the worst response: closed form, monotonicity and rate all fail."""
    orig = N.gibbs_iteration
    monkeypatch.setattr(N, "gibbs_iteration", lambda p0, R, tau, steps: orig(p0, -np.asarray(R), tau, steps))
    assert registry.run_check(_numerics_check("lpo.full_space")).status == "fail"


@pytest.mark.parametrize("call, arg", [
    (lambda: N.gibbs_iteration([1.0, 0.0], [1.0, 0.0], 1.0, 3), "pi0"),
    (lambda: N.gibbs_iteration([0.5, 0.5], [1.0], 1.0, 3), "rewards"),
    (lambda: N.gibbs_iteration([0.5, 0.5], [1.0, 0.0], 1.0, -1), "steps"),
    (lambda: N.gibbs_iteration([0.5, 0.5], [1.0, 0.0], 0.0, 1), "tau"),
])
def test_full_space_bad_arguments(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_k2_bce_api():
    from scipy.special import expit, log_expit
    w = N.listwise_target(np.array([1.0, 0.0]), 0.5)
    assert w[0] == pytest.approx(expit(2.0), abs=ROUNDOFF)
    s = np.array([0.4, -0.2])
    assert N.listwise_forward_ce(s, w) == pytest.approx(N.k2_soft_bce(0.4, -0.2, 0.5), abs=ROUNDOFF)
    assert N.k2_soft_bce(0.4, -0.2, 1e-3) == pytest.approx(-log_expit(0.6), abs=ROUNDOFF)


def test_k2_bce_swapped_labels_fail(monkeypatch):
    from scipy.special import expit, log_expit
    monkeypatch.setattr(N, "k2_soft_bce", lambda sw, sl, tau: float(-expit(-1 / tau) * log_expit(sw - sl)
                                                                    - expit(1 / tau) * log_expit(sl - sw)))
    assert registry.run_check(_numerics_check("lpo.k2_bce")).status == "fail"


@pytest.mark.parametrize("call, arg", [
    (lambda: N.k2_soft_bce(0.0, np.nan, 1.0), "s_w and s_l"),
    (lambda: N.k2_soft_bce(0.0, 1.0, 0.0), "tau"),
    (lambda: N.listwise_forward_ce([0.0, 1.0], [1.0]), "target"),
])
def test_k2_bad_arguments(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_off_policy_api():
    A = np.array([1.0, -0.5, -0.5])
    c_pg, c_rev = N.off_policy_coefficients(np.zeros(3), A)
    np.testing.assert_allclose(c_pg, A / 3, atol=ROUNDOFF)
    np.testing.assert_allclose(c_rev, A / 3, atol=ROUNDOFF)
    s = np.array([1e-4, -2e-4, 5e-5])
    c_pg, c_rev = N.off_policy_coefficients(s, A)
    assert np.max(np.abs(c_pg - c_rev - N.off_policy_first_order(s, A))) < 1e-7
    assert N.drift(np.log1p(np.array([0.1, -0.2]))) == pytest.approx(0.2)


def test_off_policy_uncentred_advantages_break_the_bound():
    """Without ΣA = 0 the gap is Ā/K at δ̄ → 0, so the measured C explodes past the proved constant."""
    C_unc, _, _ = Co.off_policy_constants(n_cases=40, centre=False)
    assert C_unc > Co.C_PROVEN


def test_off_policy_descent_sign_fails(monkeypatch):
    orig = N.off_policy_coefficients
    monkeypatch.setattr(N, "off_policy_coefficients", lambda s, A: (orig(s, A)[0], -orig(s, A)[1]))
    assert registry.run_check(_numerics_check("lpo.off_policy_gap")).status == "fail"


def test_off_policy_wrong_first_order_fails(monkeypatch):
    """Flipping the sign of the s̄A_k term leaves a first-order residual: the residual slope drops from 2 to 1."""
    def wrong(s, A):
        s, A = np.asarray(s), np.asarray(A)
        K = s.size
        return ((s - s.mean()) - s.mean() * A + np.dot(s, A) / K) / K
    monkeypatch.setattr(N, "off_policy_first_order", wrong)
    assert registry.run_check(_numerics_check("lpo.off_policy_gap")).status == "fail"


@pytest.mark.parametrize("call, arg", [
    (lambda: N.off_policy_coefficients([0.0, 1.0], [1.0]), "advantages"),
    (lambda: N.drift([]), "s"),
])
def test_off_policy_bad_arguments(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_pointwise_api():
    R, b = np.array([1.0, 0.0]), np.array([0.8, 0.2])
    assert N.pointwise_target_c4(R, 1.0, b)[0] == pytest.approx(4 * np.e / (1 + 4 * np.e), abs=ROUNDOFF)
    assert N.pointwise_target_c4(R, 1.0, np.array([0.3, 0.3]))[0] == pytest.approx(N.listwise_target(R, 1.0)[0])
    w = N.listwise_target(R, 1.0)
    assert N.pointwise_coefficients(w).sum() == pytest.approx(-1.0, abs=ROUNDOFF)
    np.testing.assert_allclose(N.snis_measure([0, 2, 0], [0.2, 0.5, 0.3], 3), [0.5, 0.0, 0.5])


def test_pointwise_with_eq8_target_does_not_reproduce(monkeypatch):
    """If C.4's target had no π_b factor (i.e. equal to Eq. 8's) the counterexample would not reproduce."""
    monkeypatch.setattr(N, "pointwise_target_c4", lambda R, tau, b: N.listwise_target(R, tau))
    assert registry.run_check(_numerics_check("lpo.pointwise_target")).status == "fail"


@pytest.mark.parametrize("call, arg", [
    (lambda: N.pointwise_target_c4([1.0, 0.0], 1.0, [0.5, 0.0]), "behaviour_probs"),
    (lambda: N.pointwise_target_c4([1.0, 0.0], 1.0, [0.5]), "behaviour_probs"),
    (lambda: N.pointwise_coefficients([0.5, 0.6]), "target"),
    (lambda: N.snis_measure([0, 1], [0.5], 2), "weights"),
])
def test_pointwise_bad_arguments(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_remax_gap_is_nonzero_only_off_the_mean():
    pg, ngk, pred, _ = Ta.remax_gradient_gap(baseline=1.0)
    assert np.linalg.norm(pg - ngk) > Ta.REMAX_MIN_GAP * np.linalg.norm(ngk)
    assert np.allclose(pg - ngk, pred, atol=_cases.FD_TOL)
    pg_c, ngk_c, pred_c, _ = Ta.remax_gradient_gap(baseline=None)
    assert np.allclose(pg_c, ngk_c, atol=_cases.FD_TOL) and np.max(np.abs(pred_c)) == 0.0


def test_remax_without_the_condition_would_fail(monkeypatch):
    """A ReMax that centred its advantages would show no gap: the conditional check must then fail."""
    monkeypatch.setattr(N, "group_advantages", lambda m, R, baseline=None, batch=None: (R - R.mean(), 1.0))
    assert registry.run_check(_numerics_check("lpo.implicit_target_remax")).status == "fail"
