"""FiberPO trust-region part: the API of fiberlab.theory.trpo and fiberlab.numerics.trpo, argument validation, and
the claims' checks (including that the counterexample checks really detect what they claim to)."""

import numpy as np
import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

import fiberlab.claims.fiberpo_trust as C  # noqa: F401  (declares the claims and attaches their checks)
from fiberlab import registry
from fiberlab.numerics import trpo as N
from fiberlab.theory import trpo as T

IDS = ["trpo.radius", "trpo.gamma1_collapse", "trpo.surrogate_gap", "apc.regimes", "apc.soft_threshold",
       "tvtrpo.maximiser", "apc.retraction", "apc.tvtrpo_equivalence", "apc.delta_formula", "apc.relaxations",
       "gspo.tv_bound"]
# Same rounding budget as the checks (see fiberlab/claims/fiberpo_trust.py).
ROUNDOFF = 1e-12


def _batch(seed, n_states=3):
    return N.random_batch(np.random.default_rng(seed), n_states)


# ---------------------------------------------------------------------------------------------
# theory
# ---------------------------------------------------------------------------------------------
def test_radius_is_derived_not_typed():
    out = T.trpo_radius()
    assert all(sp.simplify(v) == 0 for v in out["identities"].values())
    assert all(out["facts"].values())
    g = sp.Rational(9, 10)
    assert out["delta_trpo"].subs(T.gamma, g) == sp.Rational(1, 72)


def test_gamma1_limits():
    lims = T.gamma1_limits()
    assert lims["lim δ_TRPO (γ→1⁻)"][0] == 0 and lims["lim 4γ/(1-γ)² (γ→1⁻)"][0] == sp.oo


def test_case_analysis_and_relaxation_identities_close():
    ids, facts = T.apc_regimes_and_soft_threshold()
    assert all(sp.simplify(v) == 0 for v in ids.values()) and all(facts.values())
    ids, series = T.relaxation_identities()
    assert all(sp.simplify(v) == 0 for v in ids.values())
    assert all(sp.simplify(a - b) == 0 for a, b in series.values())


def test_delta_formulas_a1():
    out = T.delta_apc_formulas()
    Ts = sp.Symbol("T", positive=True)
    assert sp.simplify(out["ratio"] - (1 - T.gamma) / Ts) == 0
    assert out["identities"]["δ_D4 - t*"] == 0


def test_gspo_arithmetic():
    assert T.gspo_scale()["delta"] == sp.sqrt(2) / 100


# ---------------------------------------------------------------------------------------------
# numerics: exact MDPs
# ---------------------------------------------------------------------------------------------
def test_values_match_monte_carlo_free_identities():
    rng = np.random.default_rng(0)
    mdp = N.random_mdp(rng, 4, 3, 0.8)
    pi = N.tabular_softmax(rng.normal(size=(4, 3)))
    V, A, rho = mdp.values(pi), mdp.advantages(pi), mdp.occupancy(pi)
    assert np.allclose(np.sum(pi * A, axis=1), 0, atol=1e-12)          # E_π[A^π] = 0
    assert np.isclose(rho.sum(), 1 / (1 - 0.8))                        # Σ_s ρ(s) = Σ_t γ^t
    assert np.isclose(mdp.J(pi), mdp.mu0 @ V)
    # J = Σ_s ρ(s) r_π(s): the occupancy and the values describe the same discounted sum
    assert np.isclose(mdp.J(pi), rho @ np.sum(pi * mdp.R, axis=1))


def test_linear_surrogate_is_exact_in_one_state():
    """With one state J is linear in π (r_π/(1-γ)), so J = J^(1) exactly: the gap is second order, as Eq. 55 says."""
    rng = np.random.default_rng(1)
    mdp = N.random_mdp(rng, 1, 4, 0.7)
    pi_old, pi = N.tabular_softmax(rng.normal(size=(1, 4))), N.tabular_softmax(rng.normal(size=(1, 4)))
    assert abs(mdp.J(pi) - mdp.linear_surrogate(pi, pi_old)) < 1e-12


def test_tv_and_delta_trpo():
    p, q = np.array([[0.5, 0.5]]), np.array([[0.9, 0.1]])
    assert np.isclose(N.tv_max(p, q), 0.4)                 # ½-TV
    assert N.delta_trpo(1.0) == 0.0 and np.isclose(N.delta_trpo(0.5), 1 / 8)
    assert N.kl_max(p, p) == 0.0


# ---------------------------------------------------------------------------------------------
# numerics: APC-Obj, TV-TRPO
# ---------------------------------------------------------------------------------------------
@given(st.integers(0, 2**31 - 1), st.floats(0.0, 2.0))
def test_clip_is_soft_threshold_and_retraction_lands_inside(seed, delta):
    rng = np.random.default_rng(seed)
    state, n, _, _ = N.random_batch(rng, int(rng.integers(1, 4)))
    dev = N.centre(state, n, rng.normal(size=state.size) * rng.choice([0.01, 0.3]))
    assert np.max(np.abs(N.apc_clip(state, n, dev, delta) - N.soft_threshold(state, n, dev, delta))) <= ROUNDOFF
    v = N.retraction(state, n, dev, delta)
    assert np.all(N.tv_hat(state, n, v) <= delta + ROUNDOFF)
    reg = N.apc_regimes(state, n, dev, delta)
    assert np.all(N.apc_clip(state, n, dev, delta)[reg == N.ZEROED] == 0)


def test_apc_objective_at_zero_deviation_is_mean_advantage():
    state, n, adv, _ = _batch(2)
    assert np.isclose(N.apc_objective(state, n, np.zeros_like(adv), adv, 0.1), np.sum(n * adv) / n.sum())


def test_closed_form_matches_both_solvers():
    state, n, adv, G = _batch(3)
    t_star, M, d_star = N.tvtrpo_closed_form(state, n, adv, G, 0.9)
    assert M <= np.max(np.abs(adv))
    assert np.all(np.isclose(N.tv_hat(state, n, d_star), t_star))   # equal TV at every state (Thm D.3)
    t_lp, _, d_lp = N.tvtrpo_linprog(state, n, adv, G, 0.9)
    t_cvx, _, d_cvx = N.tvtrpo_cvx(state, n, adv, G, 0.9)
    assert abs(t_lp - t_star) <= 1e-7 * t_star and abs(t_cvx - t_star) <= 1e-5 * t_star
    assert np.max(np.abs(d_cvx - d_star)) <= 1e-5 * np.max(np.abs(d_star))


def test_trajectory_objectives():
    log_r = np.array([[0.1, -0.1, 0.0], [0.2, 0.0, 0.0]])
    mask = np.array([[1, 1, 1], [1, 0, 0]])
    adv = np.array([1.0, -1.0])
    # GSPO: s_1 = 1, s_2 = e^0.2 clipped to 1.2
    assert np.isclose(N.gspo_objective(log_r, mask, adv, 0.2), 0.5 * (1.0 - 1.2))
    # GRPO with equal lengths equals the token mean
    full = np.ones_like(mask)
    assert np.isclose(N.grpo_objective(log_r, full, adv, 0.2), N.token_mean_objective(log_r, full, adv, 0.2))


# ---------------------------------------------------------------------------------------------
# validation: bad input raises ValueError naming the argument
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, name", [
    (lambda: N.delta_trpo(1.5), "gamma"),
    (lambda: N.delta_trpo(0.0), "gamma"),
    (lambda: N.tv_hat([0, 0], [1, 1], [0.1, np.nan]), "dev"),
    (lambda: N.tv_hat([0, 2], [1, 1], [0.1, 0.2]), "state"),
    (lambda: N.tv_hat([0, 1], [1, 0], [0.1, 0.2]), "n"),
    (lambda: N.tv_hat([0, 1], [1, 1], [0.1]), "dev"),
    (lambda: N.apc_clip([0, 0], [1, 1], [0.1, 0.2], -0.1), "delta"),
    (lambda: N.tvtrpo_closed_form([0, 0], [1, 1], [0.5, -0.5], [1.0], 1.0), "gamma"),
    (lambda: N.tvtrpo_closed_form([0, 0], [1, 1], [0.5, -0.5], [1.0, 2.0], 0.9), "Gamma_s"),
    (lambda: N.tvtrpo_cvx([0, 0], [1, 1], [0.5, -0.5], [1.0], 0.9, centred=[True, False]), "centred"),
    (lambda: N.TabularMDP(np.ones((2, 2, 2)), np.zeros((2, 2)), [0.5, 0.5], 0.9), "P"),
    (lambda: N.TabularMDP(np.full((2, 2, 2), 0.5), np.zeros((2, 3)), [0.5, 0.5], 0.9), "R"),
    (lambda: N.TabularMDP(np.full((2, 2, 2), 0.5), np.zeros((2, 2)), [0.5, 0.6], 0.9), "mu0"),
    (lambda: N.tv_max(np.ones((2, 2)) / 2, np.ones((3, 2)) / 2), "pi"),
    (lambda: N.gspo_objective(np.zeros((2, 3)), np.zeros((2, 3)), np.ones(2), 0.2), "mask"),
    (lambda: N.gspo_objective(np.zeros((2, 3)), np.ones((2, 3)), np.ones(3), 0.2), "adv"),
    (lambda: N.random_chain(np.random.default_rng(0), 3, 4, -1.0), "drift"),
])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_policy_table_validated():
    mdp = N.random_mdp(np.random.default_rng(0), 2, 2, 0.9)
    with pytest.raises(ValueError, match="pi"):
        mdp.J(np.array([[0.5, 0.6], [0.5, 0.5]]))


# ---------------------------------------------------------------------------------------------
# the claims
# ---------------------------------------------------------------------------------------------
def test_claims_declared_with_statuses():
    status = {i: registry._REGISTRY[i].status for i in IDS}
    assert status["apc.delta_formula"] == "refuted"
    assert {i for i, s in status.items() if s == "conditional"} == {"apc.tvtrpo_equivalence", "apc.relaxations",
                                                                     "gspo.tv_bound", "trpo.gamma1_collapse"}
    assert all(registry._REGISTRY[i].paper == "FiberPO" and registry._REGISTRY[i].checks for i in IDS)
    assert all(registry._REGISTRY[i].condition for i in IDS if status[i] != "verified")


@pytest.mark.parametrize("check", [ch for i in IDS for ch in registry._REGISTRY[i].checks],
                         ids=lambda ch: f"{ch.claim_id}:{ch.layer}:{ch.name}")
def test_check_passes(check):
    r = registry.run_check(check)
    assert r.status == "pass", r.detail
    if check.layer == "theory":
        assert r.max_error == 0.0 and r.tolerance == 0.0
    else:
        assert r.max_error is not None and r.max_error <= r.tolerance


def test_performance_difference_with_the_new_occupancy_is_exact():
    """With the *new* policy's occupancy the expansion is exact (performance-difference lemma); J^(1) differs from it
    only through the occupancy, which is why the gap is second order."""
    rng = np.random.default_rng(4)
    mdp = N.random_mdp(rng, 4, 3, 0.9)
    pi_old, pi = N.tabular_softmax(rng.normal(size=(4, 3))), N.tabular_softmax(rng.normal(size=(4, 3)))
    exact = mdp.J(pi_old) + mdp.occupancy(pi) @ np.sum(pi * mdp.advantages(pi_old), axis=1)
    assert abs(exact - mdp.J(pi)) <= 1e-10 * max(1.0, abs(mdp.J(pi)))


def test_surrogate_gap_check_detects_a_wrong_surrogate(monkeypatch):
    """Built on the start distribution instead of θ_old's discounted occupancy the 'surrogate' is not first order:
    the sanity part of the check fails."""
    def wrong(self, pi, pi_old):
        return self.J(pi_old) + float(self.mu0 @ np.sum(pi * self.advantages(pi_old), axis=1)) / (1 - self.gamma)
    monkeypatch.setattr(N.TabularMDP, "linear_surrogate", wrong)
    fo, _ = C.surrogate_first_order(n_cases=3)
    assert fo > C.FD_TOL


def test_soft_threshold_check_detects_a_missing_factor():
    """Dropping T_s from λ_s (the per-token reading) breaks the identity on multi-token states."""
    rng = np.random.default_rng(5)
    worst = 0.0
    for _ in range(50):
        state, n, dev, _, delta = C.apc_instances(rng)
        lam = np.maximum(N.tv_hat(state, n, dev) - delta, 0)[state]
        wrong = np.sign(dev) * np.maximum(np.abs(dev) - lam, 0)
        worst = max(worst, float(np.max(np.abs(N.apc_clip(state, n, dev, delta) - wrong))))
    assert worst > 1e-3


def test_equivalence_counterexample_is_an_llm_batch():
    state, n, adv, G, prompt = C.singleton_prefix_batch(np.random.default_rng(0))
    T_s = N.state_counts(state, n)
    assert T_s[0] == 4 and np.all(T_s[1:] == 1)
    assert np.all(np.abs(adv[~prompt[state]]) > 0)      # (66) fails at every singleton
