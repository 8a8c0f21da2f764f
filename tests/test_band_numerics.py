"""BandPO numerics layer: each claim has a numerics check (tests/test_claims.py runs them all), and the public
API of fiberlab.numerics.band works."""

import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fiberlab.claims  # noqa: F401  (declares the claims and attaches every layer's checks)
from fiberlab import registry
from fiberlab.numerics import band as N


# The authors' solver stops at bracket width tol = 1e-6 and returns the midpoint: error ≤ tol/2 (spec §1.5).
AUTHORS_ABS_ERROR = 5e-7 + 1e-12
# Spec §1.2 quotes its test vectors to 6 decimals.
SPEC_VECTOR_TOL = 1e-6


# ---------------------------------------------------------------------------------------------
# (a) the registry's numerics checks
# ---------------------------------------------------------------------------------------------
# The claims of fiberlab/claims/band_bounds.py, band_shape.py and band_clipping.py this layer covers (all of
# them when this was written).
COVERED = ("band.reduction", "band.tv_closed_form", "band.chi2_closed_form", "band.kl_bounds", "band.saturation",
           "band.limits", "band.small_delta", "band.mirror", "band.monotone", "clip.bottleneck",
           "band.authors_bisection")


@pytest.mark.parametrize("claim_id", COVERED)
def test_claim_has_a_numerics_check(claim_id):
    assert "numerics" in registry.get_claim(claim_id).layers


def test_an_unclamped_closed_form_fails_its_check(monkeypatch):
    """Dropping Prop. 3's clamps from the TV closed form must be caught (saturated ends are in the grid)."""
    def unclamped(p, divergence, delta):
        p = np.asarray(p, dtype=float)
        return 1.0 - delta / p, 1.0 + delta / p

    monkeypatch.setattr(N, "band_bounds_closed_form", unclamped)
    check = next(ch for ch in registry.get_claim("band.tv_closed_form").checks
                 if ch.layer == "numerics" and "scalar_roots" in ch.name)
    assert registry.run_check(check).status == "fail"


def test_a_reversed_kl_direction_fails_the_oracle_check(monkeypatch):
    """KL(π_θ‖π_old) instead of KL(π_old‖π_θ) gives a different band; the cvxpy oracle must notice."""
    import cvxpy as cp

    def reversed_kl(P, a, divergence, delta, solver="CLARABEL", **kw):
        Q = cp.Variable(P.size)
        cons = [Q >= 0, cp.sum(Q) == 1, cp.sum(cp.kl_div(Q, P)) <= delta]   # KL(Q‖P)
        vals = [cp.Problem(obj(Q[a] / P[a]), cons).solve(solver=solver) for obj in (cp.Minimize, cp.Maximize)]
        return vals[0], vals[1]

    monkeypatch.setattr(N, "band_bounds_cvx", reversed_kl)
    check = next(ch for ch in registry.get_claim("band.kl_bounds").checks if "cvx" in ch.name)
    assert registry.run_check(check).status == "fail"


# ---------------------------------------------------------------------------------------------
# (b) argument validation: ValueError naming the argument
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, name", [
    (lambda: N.g_f(0.0, 1.0, "kl"), "p"),
    (lambda: N.g_f(1.5, 1.0, "kl"), "p"),
    (lambda: N.g_f(np.nan, 1.0, "tv"), "p"),
    (lambda: N.g_f(0.5, -0.1, "kl"), "r"),
    (lambda: N.g_f(0.5, 1.0, "js"), "divergence"),
    (lambda: N.band_bounds_closed_form(0.3, "kl", 0.1), "divergence"),
    (lambda: N.band_bounds_closed_form(0.3, "tv", -0.1), "delta"),
    (lambda: N.band_bounds_closed_form(0.3, "tv", math.inf), "delta"),
    (lambda: N.band_bounds_closed_form(-0.3, "chi2", 0.1), "p"),
    (lambda: N.band_bounds(0.3, "kl", "0.1"), "delta"),
    (lambda: N.band_bounds_mp(0.1, "kl", 0.05), "log_p"),
    (lambda: N.band_bounds_mp(-math.inf, "kl", 0.05), "log_p"),
    (lambda: N.band_bounds_mp(-1.0, "kl", -1.0), "delta"),
    (lambda: N.band_bounds_mp(-1.0, "chi", 0.1), "divergence"),
    (lambda: N.band_bounds_mp(-1.0, "kl", 0.1, dps=5), "dps"),
    (lambda: N.band_bounds_reference([-1.0, 0.5], "kl", 0.1), "log_p_array"),
    (lambda: N.band_bounds_cvx(np.array([0.2, 0.8]), 0, "kl", 0.0), "delta"),
    (lambda: N.band_bounds_cvx(np.array([0.2, 0.7]), 0, "kl", 0.1), "P"),
    (lambda: N.band_bounds_cvx(np.array([0.0, 1.0]), 0, "tv", 0.1), "P"),
    (lambda: N.band_bounds_cvx(np.array([0.2, 0.8]), 2, "tv", 0.1), "a"),
    (lambda: N.band_bounds_cvx(np.array([0.2, 0.8]), 0, "hellinger", 0.1), "divergence"),
    (lambda: N.band_bounds_authors_bisection(1.0, "kl", 0.05), "p"),
    (lambda: N.band_bounds_authors_bisection(0.5, "kl", 0.05, max_iter=0), "max_iter"),
    (lambda: N.band_bounds_authors_bisection(0.5, "kl", 0.05, tol=0.0), "tol"),
    (lambda: N.band_bounds_authors_bisection(0.5, "kl", 0.05, dtype=np.float16), "dtype"),
    (lambda: N.f_divergence([0.5, 0.5], [1.2, -0.2], "kl"), "Q"),
])
def test_bad_arguments_raise_value_error_naming_them(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()


# ---------------------------------------------------------------------------------------------
# (b) known points and documented behaviour
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p, div, delta, expected", [
    (0.08, "kl", 0.05, (0.261696, 2.410554)),      # spec §1.2
    (0.3, "tv", 0.2, (1 / 3, 5 / 3)),              # spec §1.2
    (0.02, "chi2", 0.2, (0.0, 4.130495)),          # spec §1.2 (lower saturated: p ≤ δ/(1+δ))
])
def test_band_bounds_mp_matches_spec_vectors(p, div, delta, expected):
    lo, up = N.band_bounds_mp(math.log(p), div, delta)
    assert abs(float(lo) - expected[0]) <= SPEC_VECTOR_TOL
    assert abs(float(up) - expected[1]) <= SPEC_VECTOR_TOL


def test_band_bounds_mp_handles_extreme_p():
    lo, up = N.band_bounds_mp(-690.0, "kl", 0.05)              # p = e^-690 ≈ 1e-300
    assert 0 < lo < mp.mpf("1e-1000")                          # ≈ e^{-δ/p}: far below float64, still positive
    assert float(up) * math.exp(-690.0) == pytest.approx(1 - math.exp(-0.05), rel=1e-9)   # margin → 1 - e^{-δ}
    lo, up = N.band_bounds_mp(math.log1p(-1e-15), "kl", 0.05)   # p = 1 - 1e-15
    assert float(lo) == pytest.approx(math.exp(-0.05), abs=1e-12) and 1 <= up
    lo, up = N.band_bounds_mp(0.0, "kl", 0.05)                        # p = 1: the limit band [e^{-δ}, 1]
    with mp.workdps(50):
        assert abs(lo - mp.exp(-mp.mpf(0.05))) < mp.mpf("1e-45") and up == 1
    assert N.band_bounds_mp(-1.0, "kl", 0) == (1, 1)                 # δ = 0 collapses the band


def test_band_bounds_reference_shape_and_values():
    lp = np.log(np.array([[0.1, 0.5], [0.9, 1.0]]))
    lo, up = N.band_bounds_reference(lp, "kl", 0.05)
    assert lo.shape == up.shape == lp.shape and lo.dtype == np.float64
    assert float(N.band_bounds_mp(float(lp[0, 1]), "kl", 0.05)[1]) == up[0, 1]


def test_g_f_edges():
    assert N.g_f(0.3, 1.0, "kl") == 0.0
    assert N.g_f(0.3, 0.0, "kl") == math.inf and N.g_f(0.3, 1 / 0.3, "kl") == math.inf   # KL never saturates
    assert N.g_f(0.3, 1 / 0.3, "tv") == pytest.approx(0.7)        # g_TV(p, 1/p) = 1 - p (Prop. 3)
    assert N.g_f(0.3, 5.0, "chi2") == math.inf                     # r > 1/p is outside the simplex
    assert N.g_f(1.0, 0.5, "kl") == pytest.approx(math.log(2))     # p = 1: g = -log r (spec §1.7)


def test_cvx_oracle_spec_vector():
    P = np.array([0.08, 0.3, 0.2, 0.42])
    lo, up = N.band_bounds_cvx(P, 0, "kl", 0.05)
    assert lo == pytest.approx(0.261696, abs=1e-6) and up == pytest.approx(2.410554, abs=1e-6)


def test_authors_bisection_is_accurate_to_half_its_tolerance():
    p = np.concatenate([np.geomspace(1e-3, 0.5, 100), 1 - np.geomspace(1e-3, 0.5, 100)])
    for div in N.DIVERGENCES:
        for delta in (0.01, 0.05, 0.2):
            lo, up = N.band_bounds_authors_bisection(p, div, delta)
            ref_lo, ref_up = N.band_bounds_reference(np.log(p), div, delta)
            assert np.max(np.abs(lo - ref_lo)) <= AUTHORS_ABS_ERROR
            assert np.max(np.abs(up - ref_up)) <= AUTHORS_ABS_ERROR


def test_authors_bisection_clamp_artifact():
    """Spec §1.5: g(p, 1e-12) ≈ 26.6 p ≤ δ flags the KL lower bound as saturated, so it is exactly 0."""
    lo, _ = N.band_bounds_authors_bisection(0.001, "kl", 0.05)
    true_lo, _ = N.band_bounds_mp(math.log(0.001), "kl", 0.05)
    assert lo[()] == 0.0
    assert true_lo > 0 and mp.log(true_lo) == pytest.approx(-50.0, rel=0.1)   # ≈ e^{-δ/p}-ish
    # Just above the artifact threshold the bisection returns its first midpoint below tol: 2^-21
    # (spec §1.5: "p = 0.002 gives lower 4.77e-7 vs exact 5.1e-12").
    lo, _ = N.band_bounds_authors_bisection(0.002, "kl", 0.05)
    assert lo[()] == 2.0**-21
    assert float(N.band_bounds_mp(math.log(0.002), "kl", 0.05)[0]) == pytest.approx(5.1e-12, rel=0.01)


def test_authors_bisection_stop_test_is_global():
    """One hard element keeps every element bisecting: the batch result differs from elementwise runs."""
    _, up_alone = N.band_bounds_authors_bisection(np.array([0.5]), "kl", 0.05)      # bracket [1, 2]: 20 halvings
    _, up_together = N.band_bounds_authors_bisection(np.array([0.5, 1e-4]), "kl", 0.05)  # [1, 1e4] needs 34
    ref = float(N.band_bounds_mp(math.log(0.5), "kl", 0.05)[1])
    assert up_together[0] != up_alone[0]
    assert abs(up_alone[0] - ref) <= AUTHORS_ABS_ERROR
    assert abs(up_together[0] - ref) <= 2.0**-35


# ---------------------------------------------------------------------------------------------
# (b) Hypothesis properties
# ---------------------------------------------------------------------------------------------
probabilities = st.floats(min_value=1e-6, max_value=1 - 1e-6, allow_nan=False, allow_subnormal=False)
radii = st.floats(min_value=1e-4, max_value=2.0, allow_nan=False, allow_subnormal=False)
divergences = st.sampled_from(N.DIVERGENCES)


@settings(deadline=None)
@given(p=probabilities, delta=radii, div=divergences)
def test_band_contains_one_and_lies_in_the_simplex(p, delta, div):
    lo, up = N.band_bounds(p, div, delta)
    assert 0.0 <= lo[()] <= 1.0 <= up[()] <= 1.0 / p


@settings(deadline=None)
@given(p=probabilities, delta=radii, div=divergences)
def test_fast_band_bounds_match_the_reference(p, delta, div):
    lo, up = N.band_bounds(p, div, delta)
    ref_lo, ref_up = N.band_bounds_mp(mp.log(mp.mpf(p)), div, delta)
    assert abs(up[()] - float(ref_up)) <= 1e-14 * float(ref_up)
    if div == "kl" and float(ref_lo) >= np.finfo(float).tiny:   # KL: error in log r (see FAST_KL_TOL)
        assert abs(math.log(lo[()]) - float(mp.log(ref_lo))) <= 1e-14 * max(1.0, abs(float(mp.log(ref_lo))))
    else:
        assert abs(lo[()] - float(ref_lo)) <= 1e-14


@settings(deadline=None)
@given(p=probabilities, d1=radii, d2=radii, div=divergences)
def test_band_grows_with_delta(p, d1, d2, div):
    small, large = sorted((d1, d2))
    lo_s, up_s = N.band_bounds_mp(mp.log(mp.mpf(p)), div, small)
    lo_l, up_l = N.band_bounds_mp(mp.log(mp.mpf(p)), div, large)
    assert lo_l <= lo_s and up_s <= up_l


@settings(deadline=None)
@given(p=st.floats(0.01, 0.9), u=st.floats(0.0, 1.0), K=st.integers(2, 12),
       seed=st.integers(0, 2**32 - 1), div=divergences)
def test_no_completion_beats_g(p, u, K, seed, div):
    """BandPO Thm. 1: any Q with Q(a) = r p has D_f(P‖Q) ≥ g_f(p, r)."""
    rng = np.random.default_rng(seed)
    r = u / p
    P = np.concatenate([[p], rng.dirichlet(np.ones(K - 1)) * (1 - p)])
    Q = np.concatenate([[r * p], rng.dirichlet(np.ones(K - 1)) * (1 - r * p)])
    g = N.g_f(p, r, div)
    assert N.f_divergence(P, Q, div) >= g * (1 - 1e-12) - 1e-15


@settings(deadline=None)
@given(p=st.floats(0.001, 0.999), delta=st.floats(1e-3, 1.0), div=divergences)
def test_authors_bisection_within_half_tolerance(p, delta, div):
    lo, up = N.band_bounds_authors_bisection(p, div, delta)
    ref_lo, ref_up = N.band_bounds_mp(math.log(p), div, delta)
    assert abs(lo[()] - float(ref_lo)) <= AUTHORS_ABS_ERROR
    assert abs(up[()] - float(ref_up)) <= AUTHORS_ABS_ERROR
