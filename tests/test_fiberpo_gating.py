"""FiberPO's gating in float64 (``fiberlab.numerics.fiberpo``) and SymPy (``fiberlab.theory.fiberpo``), and the
claims of ``fiberlab.claims.fiberpo_gating`` run through the registry."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fiberlab.claims.fiberpo_gating as claims_mod
from fiberlab import registry
from fiberlab.numerics import fiberpo as N
from fiberlab.theory import fiberpo as TH

# Closed forms evaluated by different routes agree to a few ulp on O(1) numbers (see the claims module).
EXACT = 1e-12


def _batch(seed, scale=0.2, n_traj=3):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 6, size=n_traj)
    ids = rng.permutation(np.repeat(np.arange(n_traj) * 7 + 3, lengths))
    return rng.normal(0, scale, size=ids.size) + rng.normal(0, scale), ids


# ------------------------------------------------------------------------------------------------- g_agg


def test_g_agg_values_and_regimes():
    C, T = 0.15, 3
    x = np.array([0.0, 0.1, 0.15, 0.175, 0.2, 0.3, -0.175, -0.5])
    expected = [0.0, 0.1, 0.15, 4 * 0.15 - 3 * 0.175, 0.0, 0.0, -(4 * 0.15 - 3 * 0.175), 0.0]
    np.testing.assert_allclose(N.g_agg(x, C, T), expected, atol=EXACT)
    assert N.g_agg_regime(x, C, T).tolist() == [0, 0, 0, 1, 2, 2, 1, 2]
    np.testing.assert_array_equal(N.g_agg_slope(x, C, T), [1, 1, 1, -3, 0, 0, -3, 0])


@given(st.floats(-1, 1), st.floats(0.01, 0.5), st.integers(1, 50))
def test_g_agg_odd_bounded(x, C, T):
    assert N.g_agg(-x, C, T) == -N.g_agg(x, C, T)
    assert abs(N.g_agg(x, C, T)) <= C + EXACT


@pytest.mark.parametrize("kw", [{"C": 0.0}, {"C": -1.0}, {"T": 0.0}, {"C": np.nan}])
def test_g_agg_rejects_bad_parameters(kw):
    args = {"x": 0.1, "C": 0.2, "T": 3} | kw
    with pytest.raises(ValueError, match=next(iter(kw))):
        N.g_agg(**args)


def test_sympy_piecewise_matches_float64():
    import sympy as sp
    f = sp.lambdify(TH.x, TH.g_agg(TH.x, sp.Rational(3, 20), 3), "numpy")
    xs = np.linspace(-0.3, 0.3, 61)
    np.testing.assert_allclose([float(f(v)) for v in xs], N.g_agg(xs, 0.15, 3), atol=EXACT)


# ------------------------------------------------------------------------------------------------- aggregates


def test_trajectory_aggregates_by_hand():
    lr = np.array([0.2, -0.1, 0.4, -0.3, 0.0])
    ids = np.array([5, 1, 5, 1, 5])            # not contiguous, arbitrary labels
    agg = N.trajectory_aggregates(lr, ids)
    assert agg.labels.tolist() == [1, 5]
    np.testing.assert_allclose(agg.T, [2, 3])
    np.testing.assert_allclose(agg.log_s_pos, [0.0, 0.2])
    np.testing.assert_allclose(agg.log_s_neg, [0.2, 0.0])
    assert agg.index.tolist() == [1, 0, 1, 0, 1]


def test_gated_ratio_by_hand():
    # one trajectory, log r = (0.1, -0.04), ε = 0.05, C+ = 0.2, C- = 0.1: s+ = 0.05, s- = 0.02 (both pass)
    lr, ids = np.array([0.1, -0.04]), np.array([0, 0])
    log_w = 0.05 - 0.02
    tok0 = np.clip(0.1 - 0.05, -0.05, 0.05) - np.clip(-0.02, -0.05, 0.05)
    tok1 = np.clip(-0.04 + 0.02, -0.05, 0.05) - np.clip(0.05, -0.05, 0.05)
    np.testing.assert_allclose(N.fiberpo_log_gated_ratio(lr, ids, 0.05, 0.2, 0.1), [log_w + tok0, log_w + tok1],
                               atol=EXACT)
    # no clip active and G-I: 𝒢 = r (decoupling corollary)
    np.testing.assert_allclose(N.fiberpo_gated_ratio(lr, ids, 0.05, 0.2, 0.1), np.exp(lr), rtol=EXACT)


@given(st.integers(0, 10_000), st.sampled_from([0.01, 0.1, 0.4]))
def test_gated_ratio_positive_finite_and_on_policy_one(seed, scale):
    lr, ids = _batch(seed, scale)
    G = N.fiberpo_gated_ratio(lr, ids, 0.03, 0.15, 0.09)
    assert np.all(np.isfinite(G)) and np.all(G > 0)
    assert np.all(N.fiberpo_gated_ratio(np.zeros_like(lr), ids, 0.03, 0.15, 0.09) == 1.0)


@given(st.integers(0, 10_000))
def test_gated_ratio_permutation_equivariant(seed):
    lr, ids = _batch(seed)
    perm = np.random.default_rng(seed).permutation(lr.size)
    G = N.fiberpo_gated_ratio(lr, ids, 0.03, 0.15, 0.09)
    np.testing.assert_allclose(N.fiberpo_gated_ratio(lr[perm], ids[perm], 0.03, 0.15, 0.09), G[perm], rtol=EXACT)


@given(st.integers(0, 10_000))
def test_sign_of_zero_does_not_change_the_value(seed):
    # spec A4: recompute Eq. 16 with l = -1 at log r = 0; both conventions give the same number
    lr, ids = _batch(seed)
    lr[0] = 0.0
    p = N.fiberpo_parts(lr, ids, 0.03, 0.15, 0.09)
    alt_u = -lr[0] - p.log_s_neg[0]
    alt_v = -p.log_s_pos[0]
    alt = p.log_w_base[0] + np.clip(-alt_u, -0.03, 0.03) - np.clip(-alt_v, -0.03, 0.03)
    assert abs(alt - (p.log_w_base[0] + p.log_r_fiber[0])) <= EXACT


def test_objective_is_grpo_weighted_surrogate_near_on_policy():
    lr = np.array([0.01, -0.005, 0.002, 0.004, -0.003])
    ids = np.array([0, 0, 0, 1, 1])
    adv = np.array([1.0, 1.0, 1.0, -0.5, -0.5])
    T = np.array([3, 3, 3, 2, 2])
    expected = np.sum(np.exp(lr) * adv / T) / 2
    assert abs(N.fiberpo_objective(lr, adv, ids, 0.05, 0.2, 0.1) - expected) <= EXACT
    assert abs(N.fiberpo_objective(lr, adv, ids, 0.05, 0.2, 0.1, n_traj=4) - expected / 2) <= EXACT


# ------------------------------------------------------------------------------------------------- Jacobian


@given(st.integers(0, 10_000))
def test_jacobian_eq20_matches_finite_differences(seed):
    lr, ids = _batch(seed, scale=0.15)
    args = (ids, 0.03, 0.15, 0.09)
    if N.kink_margin(lr, *args) < 1e-4:
        return
    Jn = N.numerical_jacobian(lambda r: N.fiberpo_gated_ratio(np.log(r), *args), np.exp(lr))
    Je = N.jacobian_eq20(lr, *args)
    assert np.max(np.abs(Jn - Je) / np.maximum(1, np.abs(Je))) <= 1e-7
    cross = ids[:, None] != ids[None, :]
    assert np.all(Je[cross] == 0) and np.all(Jn[cross] == 0)


def test_jacobian_is_identity_on_policy():
    lr, ids = _batch(3)
    np.testing.assert_array_equal(N.jacobian_eq20(np.zeros_like(lr), ids, 0.03, 0.15, 0.09), np.eye(lr.size))


def test_numerical_jacobian_rejects_non_positive_ratios():
    with pytest.raises(ValueError, match="r must"):
        N.numerical_jacobian(lambda r: r, np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="rel_step"):
        N.numerical_jacobian(lambda r: r, np.array([1.0]), rel_step=0)


# ------------------------------------------------------------------------------------------------- FBG / FGH


@given(st.integers(0, 10_000), st.sampled_from([0.02, 0.2, 0.5]))
def test_fbg_objects_reproduce_eq7(seed, scale):
    lr, ids = _batch(seed, scale)
    b = N.fiberpo_bundle(ids, 0.03, 0.15, 0.09)
    assert b.fbg.reflecting_defect() <= EXACT
    r = np.exp(lr)
    np.testing.assert_allclose(b.R(b.F(r)), r, rtol=EXACT)
    np.testing.assert_allclose(b.fbg.ratio_gate(r), N.fiberpo_gated_ratio(lr, ids, 0.03, 0.15, 0.09), rtol=EXACT)


@given(st.integers(0, 10_000), st.booleans())
def test_fgh_reproduces_fiberpo_domain(seed, per_level):
    rng = np.random.default_rng(seed)
    lr, ids = _batch(seed, 0.2, n_traj=5)
    labels = np.unique(ids)
    g_of = dict(zip(labels, rng.integers(0, 3, labels.size)))
    gid = np.array([g_of[t] for t in ids])
    did = (gid == 2).astype(int)
    Cp, Cn = ((0.3, 0.2, 0.15), (0.2, 0.1, 0.09)) if per_level else (0.15, 0.09)
    H = N.fiberpo_domain_fgh(ids, gid, did, 0.03, Cp, Cn)
    assert max(H.reflecting_defects()) <= EXACT
    np.testing.assert_allclose(H.ratio_gate(np.exp(lr)), N.fiberpo_domain_gated_ratio(lr, ids, gid, did, 0.03, Cp, Cn),
                               rtol=EXACT)


def test_domain_with_singleton_levels_is_fiberpo():
    lr, ids = _batch(11, 0.3)
    np.testing.assert_allclose(N.fiberpo_domain_gated_ratio(lr, ids, ids, ids, 0.03, 0.15, 0.09),
                               N.fiberpo_gated_ratio(lr, ids, 0.03, 0.15, 0.09), rtol=EXACT)


def test_fgh_constructor_validates_shapes():
    P = np.ones((1, 2))
    with pytest.raises(ValueError, match="kernels"):
        N.FibrationGatingHierarchy([P], [np.ones((1, 2))], [abs, abs], None, None)
    with pytest.raises(ValueError, match="kernel"):
        N.FiberBundleGating(P, np.ones((1, 2)), abs, abs, None, None)


# ------------------------------------------------------------------------------------------------- regimes


def test_global_regimes_fig2b():
    Cp, Cn, T = 0.2, 0.1, 2
    a = np.array([0.05, 0.05, 0.05, 0.25, 0.35, 0.25, 0.35])
    b = np.array([0.05, 0.12, 0.2, 0.2, 0.2, 0.12, 0.05])
    names = [N.GLOBAL_REGIMES[k] for k in N.global_regime(a, b, Cp, Cn, T)]
    assert names == ["G-I", "G-II,r", "G-II", "G-III,r", "G-III", "G-III,r", "G-II"]


def test_local_regimes():
    lr = np.array([0.01, 0.012, 0.3, 0.3, 0.001, -0.05, 0.02, 0.5])
    ids = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    assert N.local_regime(lr, ids, 0.02).tolist() == [0, 2, 2]


# ------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("log_r, match", [(np.array([]), "log_r"), (np.array([[0.1]]), "log_r"),
                                          (np.array([0.1, np.nan]), "log_r"), (np.array([np.inf, 0.0]), "log_r")])
def test_bad_log_ratios(log_r, match):
    with pytest.raises(ValueError, match=match):
        N.fiberpo_gated_ratio(log_r, np.zeros(max(log_r.size, 1), dtype=int)[: log_r.size], 0.03, 0.15, 0.09)


def test_bad_ids_and_budgets():
    lr = np.array([0.1, 0.2])
    with pytest.raises(ValueError, match="traj_ids"):
        N.fiberpo_gated_ratio(lr, np.array([0]), 0.03, 0.15, 0.09)
    with pytest.raises(ValueError, match="traj_ids"):
        N.fiberpo_gated_ratio(lr, np.array([0.0, 1.0]), 0.03, 0.15, 0.09)
    for kw in ("eps", "C_pos", "C_neg"):
        args = {"eps": 0.03, "C_pos": 0.15, "C_neg": 0.09} | {kw: 0.0}
        with pytest.raises(ValueError, match=kw):
            N.fiberpo_gated_ratio(lr, np.array([0, 0]), **args)
    with pytest.raises(ValueError, match="adv"):
        N.fiberpo_objective(lr, np.array([1.0]), np.array([0, 0]), 0.03, 0.15, 0.09)
    with pytest.raises(ValueError, match="n_traj"):
        N.fiberpo_objective(lr, np.array([1.0, 1.0]), np.array([0, 0]), 0.03, 0.15, 0.09, n_traj=0)


def test_bad_hierarchy():
    lr = np.array([0.1, 0.2, 0.0])
    ids = np.array([0, 0, 1])
    with pytest.raises(ValueError, match="group_ids"):
        N.fiberpo_domain_gated_ratio(lr, ids, np.array([0, 1, 1]), np.zeros(3, int), 0.03, 0.15, 0.09)
    with pytest.raises(ValueError, match="domain_ids"):
        N.fiberpo_domain_gated_ratio(lr, ids, np.array([0, 0, 0]), np.array([0, 0, 1]), 0.03, 0.15, 0.09)
    with pytest.raises(ValueError, match="C_pos"):
        N.fiberpo_domain_gated_ratio(lr, ids, ids, ids, 0.03, (0.1, 0.2), 0.09)
    with pytest.raises(ValueError, match=r"C_neg\[1\]"):
        N.fiberpo_domain_gated_ratio(lr, ids, ids, ids, 0.03, 0.1, (0.1, -0.2, 0.1))


# ------------------------------------------------------------------------------------------------- the claims

CHECKS = [ch for c in registry.all_claims() for ch in c.checks if c.id in {
    "fiberpo.g_agg", "fbg.construction", "fbg.first_order", "fgh.composition", "fiberpo.decoupling",
    "fiberpo.global_regimes", "fiberpo.jacobian", "fiberpo.scale_separation", "fiberpo.l3_jacobian",
    "fiberpo.eq79", "fiberpo.restorative", "fiberpo_domain.reductions"}]


def test_every_claim_is_declared_and_checked():
    assert claims_mod.jacobian.checks and len(CHECKS) >= 23


@pytest.mark.parametrize("check", CHECKS, ids=lambda ch: f"{ch.claim_id}:{ch.layer}:{ch.name}")
def test_claim_checks_pass(check):
    result = registry.run_check(check)
    assert result.status == "pass", result.detail
    assert result.seconds < 10
