"""band.trust_region: its checks pass, each can fail under a named mutation, and the vertex enumeration is exact."""

import itertools

import numpy as np
import pytest
import sympy as sp

import fiberlab.claims  # noqa: F401  (declares the claims and attaches every layer's checks)
from fiberlab import registry
from fiberlab.claims import band_trust as C
from fiberlab.numerics import band_trust as NT
from fiberlab.theory import band as T

CLAIM = "band.trust_region"


def _run(layer, name=None):
    checks = [ch for ch in registry.get_claim(CLAIM).checks if ch.layer == layer and (name is None or ch.name == name)]
    assert checks
    return [registry.run_check(ch) for ch in checks]


@pytest.mark.parametrize("layer", ["theory", "numerics", "gpu"])
def test_checks_pass(layer):
    for res in _run(layer):
        assert res.status == "pass", res.detail


def test_status_is_refuted_with_condition():
    c = registry.get_claim(CLAIM)
    assert c.status == "refuted" and "K = 2" in c.condition and len(c.layers) >= 2


# ---------------------------------------------------------------------------------------------
# mutations: each check must fail
# ---------------------------------------------------------------------------------------------
def test_theory_fails_on_a_wrong_chi2_term(monkeypatch):
    monkeypatch.setitem(T.STATED, "trust_region_chi2_term", T.delta)          # should be (1 - p) δ
    assert _run("theory")[0].status == "fail"


def test_theory_fails_on_a_wrong_floor(monkeypatch):
    monkeypatch.setitem(T.STATED, "trust_region_floor", {**T.STATED["trust_region_floor"], "tv": 2 * T.a_rest})
    assert _run("theory")[0].status == "fail"


def test_vertex_check_fails_when_the_box_bound_is_too_small(monkeypatch):
    real = NT.box_bound
    monkeypatch.setattr(NT, "box_bound", lambda P, div, delta: 0.5 * real(P, div, delta))
    assert _run("numerics", "vertex_sup_vs_derived_bounds")[0].status == "fail"


def test_vertex_check_fails_when_the_floor_is_overstated(monkeypatch):
    real = NT.unsampled_sup
    monkeypatch.setattr(NT, "unsampled_sup", lambda P, S, div: 1.5 * real(P, S, div))
    assert _run("numerics", "vertex_sup_vs_derived_bounds")[0].status == "fail"


def test_vertex_check_fails_if_the_trust_region_held(monkeypatch):
    """If the clip kept D_f ≤ δ (the statement), the counterexample would not reproduce."""
    real = NT.trust_region_sup
    monkeypatch.setattr(NT, "trust_region_sup", lambda P, S, div, delta: (min(real(P, S, div, delta)[0], delta), None))
    res = _run("numerics", "vertex_sup_vs_derived_bounds")[0]
    assert res.status == "fail"


def test_random_check_fails_when_the_sup_is_understated(monkeypatch):
    real = NT.trust_region_sup
    monkeypatch.setattr(NT, "trust_region_sup", lambda *a: (0.9 * real(*a)[0], real(*a)[1]))
    assert _run("numerics", "random_points_and_cvx_floor")[0].status == "fail"


def test_random_check_fails_when_jensen_drops_the_unsampled_term(monkeypatch):
    def no_unsampled(P, S, q, div):
        return float(np.sum(NT.phi(np.asarray(P)[S], np.asarray(q), div)))
    monkeypatch.setattr(NT, "least_divergence_closed_form", no_unsampled)
    assert _run("numerics", "random_points_and_cvx_floor")[0].status == "fail"


def test_gpu_check_fails_when_the_sup_is_understated(monkeypatch):
    real = NT.trust_region_sup
    monkeypatch.setattr(NT, "trust_region_sup", lambda *a: (0.5 * real(*a)[0], None))
    assert _run("gpu")[0].status == "fail"


def test_gpu_check_fails_if_no_state_breaks_the_region(monkeypatch):
    monkeypatch.setattr(C, "BREACH", 10.0)     # no in-Band iterate reaches 10δ: the counterexample is not there
    assert _run("gpu")[0].status == "fail"


# ---------------------------------------------------------------------------------------------
# the enumeration itself
# ---------------------------------------------------------------------------------------------
def _brute_force_sup(P, S, div, delta):
    """Every vertex, without grouping: one free coordinate, the others at lo/hi (sampled) or 0 (unsampled)."""
    lo, hi = NT.band_box(P, S, div, delta)
    K, best = P.size, -np.inf
    for j in range(K):
        others = [i for i in range(K) if i != j]
        for choice in itertools.product(*[(lo[i], hi[i]) if S[i] else (0.0,) for i in others]):
            Q = np.zeros(K)
            Q[others] = choice
            Q[j] = 1.0 - sum(choice)
            if lo[j] - 1e-13 <= Q[j] <= hi[j] + 1e-13:
                Q[j] = min(max(Q[j], lo[j]), hi[j])
                best = max(best, float(NT.phi(P, Q, div).sum()))
    return best


@pytest.mark.parametrize("div", ["kl", "tv", "chi2"])
def test_grouped_enumeration_equals_brute_force(div):
    rng = np.random.default_rng(7)
    for K in (3, 5):
        P = rng.dirichlet(np.ones(K))
        P = np.concatenate([P[:2], np.full(K - 2, P[2:].mean())])   # repeated entries exercise the grouping
        P /= P.sum()
        for m in range(1, K + 1):
            S = np.arange(K) < m
            got, Q = NT.trust_region_sup(P, S, div, 0.05)
            ref = _brute_force_sup(P, S, div, 0.05)
            assert got == pytest.approx(ref, rel=1e-12) or got == ref == np.inf
            if np.isfinite(got):
                assert NT.phi(P, Q, div).sum() == pytest.approx(got, rel=1e-12) and Q.sum() == pytest.approx(1.0)


def test_binary_state_band_is_the_trust_region():
    P = np.array([0.3, 0.7])
    for div in ("kl", "tv", "chi2"):
        for S in ([True, False], [True, True]):
            assert NT.trust_region_sup(P, np.array(S), div, 0.05)[0] == pytest.approx(0.05, rel=1e-12)


def test_zero_radius_leaves_exactly_the_unsampled_floor():
    P = np.array([0.4, 0.1, 0.3, 0.2])
    S = np.array([True, False, False, False])
    for div in ("tv", "chi2"):
        assert NT.trust_region_sup(P, S, div, 0.0)[0] == pytest.approx(NT.unsampled_sup(P, S, div), rel=1e-12)
    # TV floor P_U - min_U P_j = 0.6 - 0.1; χ² floor P_U²/min_U P_j - P_U = 3.6 - 0.6
    assert NT.unsampled_sup(P, S, "tv") == pytest.approx(0.5)
    assert NT.unsampled_sup(P, S, "chi2") == pytest.approx(3.0)
    assert NT.unsampled_sup(P, S, "kl") == np.inf


def test_floor_formula_is_symbolic():
    floor = T.trust_region_unsampled_floor()["floor"]
    assert sp.simplify(floor["chi2"] - T.a_rest * (T.P_j + T.a_rest) / T.P_j) == 0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="sampled"):
        NT.trust_region_sup(np.array([0.5, 0.5]), np.array([1, 0]), "kl", 0.05)
    with pytest.raises(ValueError, match="P must"):
        NT.trust_region_sup(np.array([0.5, 0.6]), np.array([True, False]), "kl", 0.05)
    with pytest.raises(ValueError, match="divergence"):
        NT.trust_region_sup(np.array([0.5, 0.5]), np.array([True, False]), "hellinger", 0.05)
