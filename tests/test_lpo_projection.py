"""LPO's single-response case, the group target's SNIS limit, Thm. 2 with the projection 1-2 steps reach, and gradient
norms (fiberlab.claims.lpo_coefficients, lpo_targets, lpo_improvement), plus Cor. 2's own statement on the bandit;
each check is shown to fail under a mutation."""

import itertools

import numpy as np
import pytest
import sympy as sp
from scipy.special import expit, softmax

import fiberlab.claims  # noqa: F401  (declares the claims and attaches every layer's checks)
import fiberlab.claims.lpo_bandit as LB
import fiberlab.claims.lpo_coefficients as Co
import fiberlab.claims.lpo_improvement as Im
import fiberlab.claims.lpo_targets as Ta
from fiberlab import registry
from fiberlab.numerics import lpo as N
from fiberlab.numerics import lpo_bandit as B
from fiberlab.theory import lpo as T

# A few float64 operations on O(1) numbers (same budget as the other LPO tests).
ROUNDOFF = 1e-13

NEW_IDS = {"lpo.single_response": ("verified", {"theory", "gpu"}),
           "lpo.target_consistency": ("verified", {"numerics"}),
           "lpo.inexact_projection": ("conditional", {"theory", "numerics"}),
           "lpo.gradient_norm": ("conditional", {"numerics"})}


def _check(claim_id, name):
    return next(ch for ch in registry.get_claim(claim_id).checks if ch.name == name)


def test_claims_are_declared_with_status_layers_and_condition():
    for cid, (status, layers) in NEW_IDS.items():
        c = registry.get_claim(cid)
        assert c.paper == "LPO" and c.status == status and set(c.layers) == layers, cid
        if status != "verified" or cid == "lpo.single_response":      # the objective's K = 1 behaviour is stated
            assert c.condition, cid
    cov = registry.get_claim("lpo.bandit_fwd_coverage")
    assert "cor2_on_sampled_groups" in {ch.name for ch in cov.checks}
    assert "Cor. 2's own statement" in cov.condition and "initial mass" in cov.condition


# ---------------------------------------------------------------------------------------------
# lpo.single_response
# ---------------------------------------------------------------------------------------------
def test_virtual_simplex_coefficient_api():
    c = N.virtual_simplex_coefficient(0.0, 1.0, 0.25, 0.5)
    assert c == pytest.approx(0.5 - expit(1.5), abs=ROUNDOFF)
    assert c == pytest.approx(-0.5 * np.tanh(0.75), abs=ROUNDOFF)
    # on the two-point simplex it is Eq. 10's P - w* for the real response
    s = 0.7
    assert N.virtual_simplex_coefficient(s, 1.0, 0.25, 0.5) == pytest.approx(
        (N.forward_coefficients(np.array([s, 0.0]), softmax(np.array([1.0, 0.25]) / 0.5)))[0], abs=ROUNDOFF)
    assert np.all(np.abs(N.virtual_simplex_coefficient(0.0, np.linspace(-50, 50, 101), 0.0, 0.1)) <= 0.5)


@pytest.mark.parametrize("call, arg", [
    (lambda: N.virtual_simplex_coefficient(0.0, 1.0, 0.0, 0.0), "tau"),
    (lambda: N.virtual_simplex_coefficient(np.nan, 1.0, 0.0, 1.0), "s"),
    (lambda: N.virtual_simplex_coefficient(0.0, 1.0, np.inf, 1.0), "baseline"),
])
def test_virtual_simplex_bad_arguments(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_singleton_groups_without_virtual_row():
    beh = Co.singleton_behaviour()
    assert "group_ids" in beh["grpo"] and "single sequence" in beh["grpo"]
    assert "baseline" in beh["baseline"]
    assert beh["zero_grad"] == 0.0


def test_single_response_checks_pass():
    assert registry.run_check(_check("lpo.single_response", "virtual_simplex_coefficient")).status == "pass"
    assert registry.run_check(_check("lpo.single_response", "lpo_loss_on_singleton_groups")).status == "pass"


def test_single_response_theory_fails_with_the_wrong_sign(monkeypatch):
    wrong = lambda z: T._sigmoid(z) - sp.Rational(1, 2)  # noqa: E731
    orig = T.single_response
    monkeypatch.setattr(T, "single_response", lambda stated=None: orig(stated=wrong))
    assert registry.run_check(_check("lpo.single_response", "virtual_simplex_coefficient")).status == "fail"


def test_single_response_gpu_fails_without_the_virtual_row(monkeypatch):
    orig = Co.single_response_gpu
    monkeypatch.setattr(Co, "single_response_gpu", lambda: orig(virtual=False))
    assert registry.run_check(_check("lpo.single_response", "lpo_loss_on_singleton_groups")).status == "fail"


def test_single_response_gpu_fails_with_a_wrong_closed_form(monkeypatch):
    monkeypatch.setattr(N, "virtual_simplex_coefficient", lambda s, R, b, tau: expit((R - b) / tau) - expit(s))
    assert registry.run_check(_check("lpo.single_response", "lpo_loss_on_singleton_groups")).status == "fail"


# ---------------------------------------------------------------------------------------------
# lpo.target_consistency
# ---------------------------------------------------------------------------------------------
def test_compositions_enumerate_the_multinomial():
    n = N.compositions(5, 3)
    assert len(n) == 21 and np.all(n.sum(1) == 5) and len({tuple(r) for r in n}) == 21
    r = N.snis_group_target_exact([0.5, 0.3, 0.2], [1.0, 0.0, 0.4], 9, tau=0.7)
    assert r["prob_mass"] == pytest.approx(1.0, abs=1e-14)


def test_exact_snis_moments_match_brute_force_over_sequences():
    """Independent oracle: every ordered sequence of K draws (M^K of them), Eq. 8's target put on the draws."""
    pib, R, tau, K = np.array([0.5, 0.3, 0.2]), np.array([1.0, 0.0, 0.4]), 0.7, 4
    limit = N.density_target(pib, R, tau)
    mean, mse = np.zeros(3), 0.0
    for ys in itertools.product(range(3), repeat=K):
        ys = np.array(ys)
        p = float(np.prod(pib[ys]))
        mu = N.snis_measure(ys, N.listwise_target(R[ys], tau), 3)
        mean += p * mu
        mse += p * float(((mu - limit) ** 2).sum())
    r = N.snis_group_target_exact(pib, R, K, tau=tau)
    np.testing.assert_allclose(r["bias"], mean - limit, atol=ROUNDOFF)
    assert r["mse"] == pytest.approx(mse, abs=ROUNDOFF)
    # the per-outcome path (a target callable) agrees with the vectorised one
    r2 = N.snis_group_target_exact(pib, R, K, tau=tau, target=lambda Rg, t, bg: N.listwise_target(Rg, t))
    np.testing.assert_allclose(r2["bias"], r["bias"], atol=ROUNDOFF)


def test_density_target_and_anchor():
    pib, R = np.array([0.6, 0.4]), np.array([1.0, 0.0])
    np.testing.assert_allclose(N.density_target(pib, R, 1.0), pib * np.exp(R) / (pib @ np.exp(R)), atol=ROUNDOFF)
    pit = np.array([0.2, 0.8])
    np.testing.assert_allclose(N.density_target(pib, R, 1.0, pit), pit * np.exp(R) / (pit @ np.exp(R)), atol=ROUNDOFF)


@pytest.mark.parametrize("call, arg", [
    (lambda: N.snis_group_target_exact([0.5, 0.5], [1.0], 4, tau=1.0), "rewards"),
    (lambda: N.snis_group_target_exact([0.5, 0.5], [1.0, 0.0], 0, tau=1.0), "K"),
    (lambda: N.snis_group_target_exact([1.0, 0.0], [1.0, 0.0], 4, tau=1.0), "pi_b"),
    (lambda: N.snis_group_target_exact([0.5, 0.5], [1.0, 0.0], 4, tau_rule="maxrl"), "tau_rule"),
    (lambda: N.compositions(-1, 2), "K"),
])
def test_snis_bad_arguments(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_target_consistency_check_passes():
    assert registry.run_check(_check("lpo.target_consistency", "exact_snis_rates")).status == "pass"


def test_c4_target_is_inconsistent_and_fails_the_rate_check():
    """App. C.4's π_b(y_k) e^{R_k/τ} weights converge to π_b² e^{R/τ}: the error stops falling (exponent ≈ 0)."""
    ev = Ta.consistency_evidence(Ta.consistency_table(Ks=(8, 16, 32), target=N.pointwise_target_c4))
    assert not ev.passed and ev.max_error > 10


# ---------------------------------------------------------------------------------------------
# lpo.inexact_projection
# ---------------------------------------------------------------------------------------------
SMALL = LB.bandit_config("moderate", "grpo", "adam", iterations=20)


@pytest.mark.parametrize("method", ["lpo_fwd", "pg", "lpo_rev"])
def test_inner_trace_reproduces_the_simulator_bit_for_bit(method):
    tr = N.bandit_inner_trace(method, SMALL, n_seeds=8, seed=3)
    run = B.simulate(method, SMALL, n_seeds=8, seed=3)
    assert np.array_equal(tr["logits"], run.logits)
    assert np.array_equal(tr["grad_norm"], run.grad_norm)
    assert np.all(tr["s"][:, :, 0] == 0.0)                       # the first inner step is on-policy


def test_projection_errors_identities():
    pe = N.projection_errors(N.bandit_inner_trace("lpo_fwd", SMALL, n_seeds=8, seed=3))
    assert pe["identity"].max() <= 1e-14 and pe["slack"].min() >= -1e-14
    # a two-level group: the target gain equals TV(P_t, w*) (theory: binary_group_gain)
    two = np.array([len(set(r)) == 2 and set(r) <= {0.0, 1.0}
                    for r in N.bandit_inner_trace("lpo_fwd", SMALL, 8, 3)["R"].reshape(-1, 8)]).reshape(8, -1)
    np.testing.assert_allclose(pe["gain"][two], pe["tv0"][two], atol=1e-14)
    with pytest.raises(ValueError, match="r_max"):
        N.projection_errors(N.bandit_inner_trace("lpo_fwd", SMALL, 2, 0), r_max="max")


def test_binary_group_gain_is_symbolic_identity():
    assert all(sp.simplify(derived - stated) == 0 for derived, stated in T.binary_group_gain().values())


def test_exact_projection_would_certify_every_group():
    """Mutation: if 1-2 steps reached w* exactly, the literal certificate would hold everywhere: the conditional
    check's evidence must then fail."""
    tab = Im.projection_table(settings=(("sgd", "grpo"),), project=Im.exact_projection, n_seeds=8)
    v = tab["sgd", "grpo"]["literal"]
    assert v["certified"][v["informative"]].all()
    assert not Im.projection_evidence(tab).passed


def test_inexact_projection_check_passes():
    assert registry.run_check(_check("lpo.inexact_projection", "epsilon_after_one_and_two_steps")).status == "pass"


# ---------------------------------------------------------------------------------------------
# lpo.gradient_norm
# ---------------------------------------------------------------------------------------------
def test_on_policy_norms_reverse_with_the_success_count():
    tab = Co.on_policy_coefficient_norms()
    assert tab[1, "grpo"][0] > tab[1, "grpo"][1] and tab[7, "grpo"][0] < tab[7, "grpo"][1]
    assert tab[1, "grpo"][3] == pytest.approx(np.sqrt(7) / 8, abs=ROUNDOFF)       # Samuelson's bound, attained
    assert tab[1, "maxrl"][3] == pytest.approx(7 / 8, abs=ROUNDOFF)
    assert registry.run_check(_check("lpo.gradient_norm", "on_policy_group_norms")).status == "pass"


def test_gradient_norm_check_fails_if_lpo_steps_were_quartered(monkeypatch):
    """Mutation: LPO_fwd's coefficients scaled by ¼ give lower norms everywhere, so the hard-start reversal (the
    counterexample the conditional claim records) disappears and the check fails."""
    orig = B.descent_coefficients

    def scaled(method, s, A, clip_eps=None):
        c = orig(method, s, A, clip_eps)
        return 0.25 * c if method == "lpo_fwd" else c
    monkeypatch.setattr(B, "descent_coefficients", scaled)
    assert registry.run_check(_check("lpo.gradient_norm", "bandit_gradient_norms")).status == "fail"


# ---------------------------------------------------------------------------------------------
# lpo.bandit_fwd_coverage: Cor. 2's own statement
# ---------------------------------------------------------------------------------------------
def test_cor2_holds_on_every_group_and_its_minus_one_is_needed():
    viol, worst, cases, policy, _ = LB.cor2_on_groups(starts=("hard",), n_seeds=16)
    assert viol == 0 and worst < 1 and cases > 0
    viol2, worst2, _, _, _ = LB.cor2_on_groups(starts=("hard",), n_seeds=16, bound=lambda a, D: a * np.exp(-D / a))
    assert viol2 > 0 and worst2 > 1
    # the policy-level reading (every correct arm above its initial mass) fails on most seeds
    assert max(policy.values()) > 0.5


def test_cor2_check_fails_with_the_policy_level_bound(monkeypatch):
    """Mutation: the stronger reading P_k ≥ w*_k (the projection keeps each mode's target mass) is violated."""
    orig = LB.cor2_on_groups
    monkeypatch.setattr(LB, "cor2_on_groups", lambda: orig(bound=lambda a, D: a * (1 - 1e-12)))
    assert registry.run_check(_check("lpo.bandit_fwd_coverage", "cor2_on_sampled_groups")).status == "fail"
