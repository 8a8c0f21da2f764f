"""Review additions to FiberPO's trust-region claims: finite-horizon bound, the ½ of Eq. 39, Lemma D.12's region, the
sign-channel drift, and mutations showing each check can fail."""

import numpy as np
import pytest
import sympy as sp

import fiberlab.claims.fiberpo_trust as C
import fiberlab.claims.fiberpo_trust_extra as X
from fiberlab import registry
from fiberlab.numerics import trpo as N
from fiberlab.theory import trpo as T

IDS = ["trpo.finite_horizon_bound", "tvtrpo.half_factor", "tvtrpo.sample_in_region",
       "fiberpo.negative_channel_drift", "trpo.gamma1_collapse", "apc.relaxations", "gspo.tv_bound"]


def test_statuses_and_conditions():
    st = {i: registry._REGISTRY[i].status for i in IDS}
    assert st["trpo.finite_horizon_bound"] == "verified" and st["tvtrpo.half_factor"] == "refuted"
    assert st["tvtrpo.sample_in_region"] == st["fiberpo.negative_channel_drift"] == "conditional"
    assert st["trpo.gamma1_collapse"] == "conditional"
    assert "likely satisfied" in registry._REGISTRY["apc.relaxations"].condition
    assert "roughly" in registry._REGISTRY["gspo.tv_bound"].condition
    assert all(registry._REGISTRY[i].condition for i in IDS if st[i] != "verified")


@pytest.mark.parametrize("check", [ch for i in IDS for ch in registry._REGISTRY[i].checks],
                         ids=lambda ch: f"{ch.claim_id}:{ch.layer}:{ch.name}")
def test_check_passes(check):
    r = registry.run_check(check)
    assert r.status == "pass", r.detail
    assert r.max_error is not None and r.max_error <= r.tolerance


def test_finite_horizon_mdp_identities():
    rng = np.random.default_rng(0)
    mdp = N.random_finite_horizon_mdp(rng, 3, 2, 5, absorbing=True)
    pi = N.tabular_softmax(rng.normal(size=(3, 2)))
    A, d = mdp.advantages(pi), mdp.state_dists(pi)
    assert np.allclose(np.sum(pi[None] * A, axis=2), 0, atol=1e-12)            # E_π[A_t] = 0
    assert np.isclose(mdp.J(pi), np.sum(d * np.sum(pi * mdp.R, axis=1)))        # J = Σ_t d_t · r_π
    assert abs(mdp.linear_surrogate(pi, pi) - mdp.J(pi)) < 1e-12
    with pytest.raises(ValueError, match="H"):
        N.FiniteHorizonMDP(mdp.P, mdp.R, mdp.mu0, 0)


def test_finite_horizon_coefficient_values():
    _, _, vals = T.finite_horizon_coefficient()
    H = sp.Symbol("H", integer=True, positive=True)
    assert sp.simplify(vals["radius"].subs(H, 1001) - sp.Rational(1, 2000)) == 0


# ---------------------------------------------------------------------------------------------
# mutations: each check fails when the thing it verifies is broken
# ---------------------------------------------------------------------------------------------
def test_finite_horizon_bound_fails_with_a_linear_in_H_coefficient(monkeypatch):
    """A coefficient of order H (2H‖A‖ instead of 2H(H-1)‖A‖) is violated on the same MDPs."""
    monkeypatch.setattr(N.FiniteHorizonMDP, "gap_coefficient",
                        lambda self, pi_old: 0.02 * self.H * float(np.max(np.abs(self.advantages(pi_old)))))
    _, viol, _, _, _ = X.finite_horizon_cases(n_mdps=60)
    assert viol > X.J_ROUNDOFF_TOL


def test_gamma1_check_fails_when_the_step_is_not_certified():
    """With a tenth of c_H the MM step overshoots and J(π_new) falls below the claimed certificate."""
    a_min, a_rel, viol, imp, cert, _ = C.gamma_one_mm_cases(coefficient_scale=0.02)
    assert viol > C.CVX_VALUE_TOL


def test_half_factor_check_detects_a_restored_half(monkeypatch):
    """If Eq. 68 used the ½ (tv_scale ½), its maximiser would be 4t*, and the t_68 = t* part fails."""
    orig = N.population_tvtrpo
    monkeypatch.setattr(N, "population_tvtrpo", lambda mdp, pi_old, s, **kw: orig(mdp, pi_old, 0.5 if s == 1.0 else s))
    r = X.half_factor_cases(n_mdps=3)
    assert r["e68"] > X.CVX_REL_TOL


def test_in_region_counterexample_is_outside():
    cx = X.in_region_counterexample()
    assert abs(cx["tv_hat"] - cx["delta_trpo"]) < 1e-12 and cx["tv_exact"] > 2 * cx["delta_trpo"]


def test_channel_drift_numerics_fail_without_eos_dependence():
    """Without the EOS coupling the counterexample's expectation is the (positive) mean KL: the 'negative' half of the
    conditional check would not reproduce."""
    L = 8
    pi_old = np.tile([1e-9, 1 - 1e-9], (L, 1))
    pi_old[0] = [0.5, 0.5]
    pi = pi_old.copy()
    pi[0] = [0.9, 0.1]
    e_mean, _, _, kl = N.chain_channel_expectation(pi_old, pi)
    assert e_mean > 0 and abs(e_mean - kl) < 1e-12


def test_gpu_check_detects_a_wrong_channel(monkeypatch):
    """If log s⁻ were computed with relu on the wrong sign (= log s⁺), the identity part fails."""
    import fiberlab.gpu.fiberpo as G
    orig = G.trajectory_aggregates

    def wrong(lr, mask):
        T_, p, n, pos = orig(lr, mask)
        return T_, p, p, pos
    monkeypatch.setattr(G, "trajectory_aggregates", wrong)
    r = X.gpu_channel_drift(n_traj=2000)
    assert r["identity"] > X.ROUNDOFF_TOL


def test_relaxation_and_gspo_sweeps_report_every_scale():
    r = C.relaxation_cases(n_cases=20)
    assert set(r["disagree"]) == set(C.RELAX_SCALES)
    *_, by_drift = C.gspo_cases(n_chains=25, n_traj=200)
    assert set(by_drift) == set(C.GSPO_DRIFTS)
