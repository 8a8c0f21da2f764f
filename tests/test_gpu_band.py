"""fiberlab.gpu.band: the Band clip interval (BandPO §1) against 60-digit mpmath, its properties, and its API.

The reference is a small mpmath solver written here (independent of ``fiberlab.numerics.band``, which is
cross-checked against it at the end): the two KL roots of ``kl(p‖q) = δ`` (spec §1.2, ``q = r p``) by
safeguarded Newton at 60 digits, in ``x = log q`` (lower root) and ``z = log(1 - q)`` (upper root), so tail
(``p = e^-700``) and head (``p = 1 - 1e-15``) tokens are exact inputs; TV and χ² by their closed forms
(Prop. 4 with the Prop. 3 clamps) evaluated in mpmath.

Error model (why the tolerances are what they are). The solver works in logs, so an input ``log p`` or an
intermediate ``log q`` of size ``|ℓ|`` carries an absolute rounding error ``~eps·|ℓ|``, which ``exp`` turns
into a relative error ``eps·|ℓ|`` of the ratio; a relative perturbation ``eps`` of ``p`` or of ``δ`` (and of
``h = kl - δ`` around the root, whose terms are each ``≤ δ``) moves ``log r`` by ``eps`` times the
implicit-function sensitivities ``|∂log r/∂log p|`` and ``|∂log r/∂log δ|``. Hence the condition number

    κ = 1 + |log p| + |log r| + |∂log r/∂log p| + |∂log r/∂log δ|

(:func:`kl_condition_number`, float64 from the implicit-function theorem on ``kl(p‖q) = δ``), and the bound
``|r̂ - r| ≤ KL_ROOT_C · eps · κ · r``. Measured: the worst error/(eps·κ) is 0.62 on the float64 grid below (max
relative error 6.1e-14) and 0.9 in float32 (random points, and the lookup-table solver), so ``KL_ROOT_C = 8``
leaves a ~10x margin, and still fails a float64 solver one Newton step short by 500x (error 7.6e-12 at
log p = -20.7, δ = 4.6e-10, against a tolerance of 1.4e-14).
"""

from __future__ import annotations

import functools
import math

import mpmath as mp
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fiberlab.gpu.band as band_module
from fiberlab.gpu.band import DIVERGENCES, band_active_bound, band_bounds, band_bounds_authors_bisection

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)
TINY64 = float(np.finfo(np.float64).tiny)
TINY32 = float(np.finfo(np.float32).tiny)

#: Error bound constant for KL roots: |r̂ - r| ≤ KL_ROOT_C·eps·κ·r (module docstring; measured ratio ≤ 0.9).
KL_ROOT_C = 8.0
#: TV/χ² are closed forms of a few correctly rounded operations (exp, sqrt, ·, +) on exact inputs: the half-width
#: s has relative error ≤ ~4 eps, so lower = max(1 - s, 0) is within CLOSED_FORM_C·eps·(1 + s) absolutely and
#: upper = min(1 + s, 1/p) within CLOSED_FORM_C·eps relatively.
CLOSED_FORM_C = 8.0
#: The authors' bisection stops when the bracket is ≤ tol = 1e-6 and returns its midpoint: error ≤ tol/2;
#: 64 eps relative covers evaluating g near the root (spec §1.5).
AUTHORS_HALF_TOL = 0.5e-6
#: Spec §1.5: where g(p, 1e-12) ≤ δ the authors flag the KL lower bound as saturated and return 0; the true
#: bound is then ≤ 1e-12 (g is decreasing on [0, 1]), so the artefact moves the bound by at most this much.
AUTHORS_CLAMP = 1e-12
#: Digits of the mpmath reference.
REF_DPS = 60

# Grid of the brief: log p ∈ [-700, -1e-15] (log-spaced in |log p|, plus landmarks) × δ ∈ [1e-10, 20].
GRID_LOG_P = np.unique(np.concatenate([
    -np.minimum(np.logspace(-15, math.log10(700.0), 36), 700.0),
    [-1e-15, -1e-8, -1e-3, -math.log(2.0), -1.0, -5.0, -30.0, -200.0, -700.0],
]))
GRID_DELTA = np.logspace(-10, math.log10(20.0), 18)


# --------------------------------------------------------------------------------------------------------------
# The mpmath reference (independent of the code under test)
# --------------------------------------------------------------------------------------------------------------

def _newton_from_left(f, df, lo, hi):
    """Root of a convex decreasing ``f`` on ``[lo, hi]`` (``f(lo) > 0 ≥ f(hi)``).

    Newton from the left end climbs monotonically to the root (a convex function lies above its tangents);
    the bracket check only guards against round-off. Converges to ~REF_DPS - 10 digits.
    """
    tol = mp.mpf(10) ** (10 - REF_DPS)
    x = lo
    for _ in range(500):
        fx = f(x)
        if fx == 0:
            return x
        if fx > 0:
            lo = x
        else:
            hi = x
        slope = df(x)
        x_new = x - fx / slope if slope != 0 else (lo + hi) / 2
        if not lo <= x_new <= hi:
            x_new = (lo + hi) / 2
        if abs(x_new - x) <= tol * (1 + abs(x)):
            return x_new
        x = x_new
    raise RuntimeError("reference root did not converge")


def kl_root_logs_mp(log_p: float, delta: float) -> tuple[mp.mpf, mp.mpf]:
    """``(log q̲, log(1 - q̄))`` for the two roots of ``kl(p‖q) = δ``, ``log p < 0``, ``δ > 0``, at REF_DPS digits."""
    lp = mp.mpf(log_p)
    d = mp.mpf(delta)
    p = mp.exp(lp)
    omp = -mp.expm1(lp)                                         # 1 - p, exact for p → 1
    l1 = mp.log1p(-p) if p < 0.5 else mp.log(omp)               # log(1 - p), exact for p → 0

    def f_lo(x):                                                # kl(p‖e^x) - δ, x < log p: decreasing, convex
        return p * (lp - x) + omp * (l1 - mp.log(-mp.expm1(x))) - d

    def df_lo(x):
        return (mp.exp(x) - p) / (-mp.expm1(x))

    def f_up(z):                                                # kl(p‖1 - e^z) - δ, z < log(1-p): same shape
        return p * (lp - mp.log(-mp.expm1(z))) + omp * (l1 - z) - d

    def df_up(z):
        return (mp.exp(z) - omp) / (-mp.expm1(z))

    # Brackets: -log(1-q) ≥ 0 and -log q ≥ 0 make each f ≥ p (resp. 1 - p) > 0 at the left end.
    x = _newton_from_left(f_lo, df_lo, lp + (omp * l1 - d) / p - 1, lp)
    z = _newton_from_left(f_up, df_up, l1 - (d - p * lp) / omp - 1, l1)
    return x, z


def reference_bounds_mp(log_p: float, divergence: str, delta: float) -> tuple[mp.mpf, mp.mpf]:
    """``(r̲, r̄)`` at 60 digits: KL by :func:`kl_root_logs_mp`, TV/χ² by Prop. 4 with the Prop. 3 clamps."""
    with mp.workdps(REF_DPS):
        lp = mp.mpf(log_p)
        d = mp.mpf(delta)
        if d == 0:
            return mp.mpf(1), mp.mpf(1)
        p = mp.exp(lp)
        omp = -mp.expm1(lp)
        if divergence == "kl":
            if lp == 0:                                         # p = 1: g → -log r (spec §1.7)
                return mp.exp(-d), mp.mpf(1)
            x, z = kl_root_logs_mp(log_p, delta)
            return mp.exp(x - lp), -mp.expm1(z) / p
        s = d / p if divergence == "tv" else mp.sqrt(d * omp / p)
        return max(1 - s, mp.mpf(0)), min(1 + s, 1 / p)


@functools.lru_cache(maxsize=None)
def reference_bounds(log_p: float, divergence: str, delta: float) -> tuple[float, float]:
    """:func:`reference_bounds_mp` rounded to float64 (cached: several tests share grid points)."""
    lo, up = reference_bounds_mp(log_p, divergence, delta)
    return float(lo), float(up)


def half_width(log_p: float, divergence: str, delta: float) -> float:
    """The TV/χ² half-width s (δ/p, resp. √(δ(1-p)/p)) in float64 (inf when it overflows)."""
    with np.errstate(over="ignore"):
        if divergence == "tv":
            return float(delta * np.exp(-log_p))
        return float(np.sqrt(delta * -np.expm1(log_p)) * np.exp(-0.5 * log_p))


def kl_condition_number(log_p, delta, r) -> np.ndarray:
    r"""κ = 1 + |log p| + |log r| + |∂log r/∂log p| + |∂log r/∂log δ| for a root ``r`` of ``kl(p‖rp) = δ``.

    Implicit function theorem on ``kl(p‖q) = δ`` with ``∂kl/∂q = (q-p)/(q(1-q))`` and
    ``∂kl/∂p = log(p/q) - log((1-p)/(1-q))``:
    ``∂log r/∂log δ = δ(1-q)/(q-p)`` and ``∂log r/∂log p = -p (1-q) ∂kl/∂p / (q-p) - 1``; float64, vectorised.
    At ``p = 1`` the band is ``[e^{-δ}, 1]`` and κ = 1 + δ. Only its order of magnitude matters.
    """
    lp, d, r = np.broadcast_arrays(np.asarray(log_p, float), np.asarray(delta, float), np.asarray(r, float))
    with np.errstate(all="ignore"):
        log_r = np.log(r)
        lq = log_r + lp
        omq = -np.expm1(lq)                                      # 1 - q (0 when q rounds to 1: terms vanish)
        p = np.exp(lp)
        l1 = np.where(lp < -math.log(2.0), np.log1p(-p), np.log(-np.expm1(lp)))
        q_minus_p = p * np.expm1(log_r)
        xlogx = np.where(omq > 0, omq * np.log(np.where(omq > 0, omq, 1.0)), 0.0)
        dkl_dp_omq = (lp - lq) * omq - l1 * omq + xlogx          # (1-q) ∂kl/∂p, finite as 1 - q → 0
        # r rounded to exactly 1 (δ below the float resolution of the band): r - 1 ∝ √δ, sensitivity 1/2.
        degenerate = q_minus_p == 0
        safe = np.where(degenerate, 1.0, q_minus_p)
        sens_delta = np.where(degenerate, 0.5, np.abs(d * omq / safe))
        sens_p = np.where(degenerate, 1.0, np.abs(-p * dkl_dp_omq / safe - 1.0))
        kappa = 1.0 + np.abs(lp) + np.abs(log_r) + sens_p + sens_delta
    return np.where(lp == 0.0, 1.0 + d, kappa)


def abs_tolerance(divergence: str, log_p: float, delta: float, which: str, ref: float, eps: float,
                  tiny: float) -> float:
    """Allowed |computed - ref| for a result computed with machine epsilon ``eps`` (module docstring)."""
    if delta == 0:
        return 0.0
    if divergence == "kl":
        return KL_ROOT_C * eps * float(kl_condition_number(log_p, delta, ref)) * ref + tiny if ref > 0 else tiny
    s = half_width(log_p, divergence, delta)
    if which == "lower":
        return CLOSED_FORM_C * eps * (1.0 + min(s, 2.0))
    return CLOSED_FORM_C * eps * ref


def _bounds64(log_p: float, divergence: str, delta: float, **kw) -> tuple[float, float]:
    lo, up = band_bounds(torch.tensor([log_p], dtype=torch.float64), divergence, delta, **kw)
    return lo.item(), up.item()


def _assert_close_to_reference(log_p, divergence, delta, lo, up) -> tuple[float, float]:
    """Assert both ends are within :func:`abs_tolerance` (float64) of the reference; return the reference."""
    ref_lo, ref_up = reference_bounds(log_p, divergence, delta)
    for which, got, ref in (("lower", lo, ref_lo), ("upper", up, ref_up)):
        tol = abs_tolerance(divergence, log_p, delta, which, ref, EPS64, TINY64)
        assert abs(got - ref) <= tol, (
            f"{divergence} {which}: log p={log_p!r}, δ={delta!r}: got {got!r}, reference {ref!r}, "
            f"error {abs(got - ref):.3e} > tolerance {tol:.3e}")
    return ref_lo, ref_up


# --------------------------------------------------------------------------------------------------------------
# Accuracy against the reference
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_grid_matches_mpmath_reference(divergence):
    """Every (log p, δ) on the brief's grid, both ends, at float64 round-off (KL: ≤ KL_ROOT_C·eps·κ)."""
    log_p = torch.tensor(GRID_LOG_P, dtype=torch.float64)
    for delta in GRID_DELTA:
        lo, up = band_bounds(log_p, divergence, float(delta))
        for i, lp in enumerate(GRID_LOG_P):
            _assert_close_to_reference(float(lp), divergence, float(delta), lo[i].item(), up[i].item())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("delta", [1e-12, 1e-6, 0.05, 2.0, 20.0])
def test_kl_table_method_matches_mpmath_reference(dtype, delta):
    """The lookup-table KL solver (``method="table"``) meets the same bound as Newton, in float64 and float32."""
    finfo = torch.finfo(dtype)
    lps = GRID_LOG_P if dtype == torch.float64 else GRID_LOG_P[GRID_LOG_P >= -80.0]
    lps = torch.tensor(lps, dtype=dtype)
    lo, up = band_bounds(lps, "kl", delta, method="table")
    for i, lp in enumerate(lps.double().tolist()):
        for which, got, ref in zip(("lower", "upper"), (lo[i].item(), up[i].item()),
                                   reference_bounds(lp, "kl", delta)):
            tol = abs_tolerance("kl", lp, delta, which, ref, finfo.eps, finfo.tiny)
            assert abs(got - ref) <= tol, (dtype, lp, delta, which, got, ref, tol)


@pytest.fixture
def eager(monkeypatch):
    """Run the fused kernels as plain eager torch (what happens where torch.compile is unavailable)."""
    monkeypatch.setattr(band_module, "COMPILE", False)


@pytest.mark.parametrize("delta", [1e-12, 1e-6, 0.05, 2.0, 20.0])
def test_kl_table_float32_eager_matches_mpmath_reference(eager, delta):
    """The float32 table kernel run eagerly (compiling off or unavailable) meets the same bound as compiled."""
    test_kl_table_method_matches_mpmath_reference(torch.float32, delta)


@given(log_p=st.floats(-80.0, 0.0, width=32), delta=st.floats(1e-10, 20.0))
def test_kl_table_float32_random_points(log_p, delta):
    """The float32 table between its nodes (random log p, random δ, so random positions in the cells) meets the
    same bound against the float64 Newton solver as the Newton solver itself, and keeps 0 ≤ r̲ ≤ 1 ≤ r̄ ≤ 1/p."""
    lo32, up32 = band_bounds(torch.tensor([log_p], dtype=torch.float32), "kl", delta, method="table")
    lo64, up64 = _bounds64(log_p, "kl", delta)
    for which, got, ref in (("lower", lo32.item(), lo64), ("upper", up32.item(), up64)):
        tol = (abs_tolerance("kl", log_p, delta, which, ref, EPS32, TINY32)
               + abs_tolerance("kl", log_p, delta, which, ref, EPS64, TINY64))
        assert abs(got - ref) <= tol, (which, log_p, delta, got, ref, tol)
    inv_p = float(torch.exp(-torch.tensor(log_p, dtype=torch.float32)))
    assert 0.0 <= lo32.item() <= 1.0 <= up32.item() <= inv_p * (1 + EPS32), (lo32.item(), up32.item(), inv_p)


def test_kl_table_out_of_range_delta_falls_back_to_newton():
    """A δ so small that the table's y-range would leave float32 (δ ≲ 1e-25) is solved by Newton instead."""
    lps = torch.tensor([-30.0, -3.0, -0.1, -1e-6], dtype=torch.float32)
    for delta in (1e-30, 1e-27):
        lo_t, up_t = band_bounds(lps, "kl", delta, method="table")
        lo_n, up_n = band_bounds(lps, "kl", delta, method="newton")
        assert torch.equal(lo_t, lo_n) and torch.equal(up_t, up_n)


@given(log_p=st.floats(-700.0, 0.0), delta=st.floats(1e-10, 20.0), divergence=st.sampled_from(DIVERGENCES))
def test_random_points_match_mpmath_reference(log_p, delta, divergence):
    lo, up = _bounds64(log_p, divergence, delta)
    _assert_close_to_reference(log_p, divergence, delta, lo, up)


@given(log_p=st.floats(-80.0, 0.0, width=32), delta=st.floats(1e-10, 20.0),
       divergence=st.sampled_from(DIVERGENCES))
def test_float32_agrees_with_float64(log_p, delta, divergence):
    """float32 vs float64 on the same (float32-representable) log p: within KL_ROOT_C·eps32·κ (resp. the
    closed-form bound with eps32) plus the float64 result's own error. ``log p ≥ -80`` keeps p a normal float32
    (below -87.3 p itself is subnormal and has no relative precision left); results below float32's smallest
    normal number are compared absolutely."""
    lo32, up32 = band_bounds(torch.tensor([log_p], dtype=torch.float32), divergence, delta)
    lo64, up64 = _bounds64(log_p, divergence, delta)
    assert lo32.dtype == up32.dtype == torch.float32
    for which, got, ref in (("lower", lo32.item(), lo64), ("upper", up32.item(), up64)):
        tol = (abs_tolerance(divergence, log_p, delta, which, ref, EPS32, TINY32)
               + abs_tolerance(divergence, log_p, delta, which, ref, EPS64, TINY64))
        assert abs(got - ref) <= tol, (which, log_p, delta, got, ref, tol)


# --------------------------------------------------------------------------------------------------------------
# Properties (BandPO §1.2, §1.7)
# --------------------------------------------------------------------------------------------------------------

@given(log_p=st.floats(-700.0, 0.0), delta=st.floats(0.0, 20.0), divergence=st.sampled_from(DIVERGENCES))
def test_interval_contains_one_and_lies_in_the_simplex(log_p, delta, divergence):
    """0 ≤ r̲ ≤ 1 ≤ r̄ ≤ 1/p (Thm. 1: feasible ratios keep Q in the simplex and r = 1 has divergence 0)."""
    lo, up = _bounds64(log_p, divergence, delta)
    assert 0.0 <= lo <= 1.0, lo                      # exact: lower = exp(x - log p) with x ≤ log p
    # upper = exp(log1mexp(x') - log p) (KL) can round to within its tolerance below 1 or above 1/p.
    slack = 0.0 if divergence != "kl" else abs_tolerance("kl", log_p, delta, "upper", up, EPS64, TINY64)
    assert 1.0 - slack <= up <= math.exp(-log_p) + slack, (up, slack)


def _pair_tolerance(divergence, delta, which, points):
    return sum(abs_tolerance(divergence, lp, d, which, ref, EPS64, TINY64) for lp, d, ref in points)


@given(a=st.floats(-700.0, 0.0), b=st.floats(-700.0, 0.0), delta=st.floats(1e-10, 20.0),
       divergence=st.sampled_from(DIVERGENCES))
def test_monotone_in_p(a, b, delta, divergence):
    """r̄ is non-increasing and r̲ non-decreasing in p (spec §1.7). The exact bounds are monotone and each
    computed one is within its tolerance of them, so the computed ones are monotone up to the two tolerances."""
    lp1, lp2 = min(a, b), max(a, b)
    lo1, up1 = _bounds64(lp1, divergence, delta)
    lo2, up2 = _bounds64(lp2, divergence, delta)
    assert up1 >= up2 - _pair_tolerance(divergence, delta, "upper", [(lp1, delta, up1), (lp2, delta, up2)])
    assert lo1 <= lo2 + _pair_tolerance(divergence, delta, "lower", [(lp1, delta, lo1), (lp2, delta, lo2)])


@given(log_p=st.floats(-700.0, 0.0), d1=st.floats(0.0, 20.0), d2=st.floats(0.0, 20.0),
       divergence=st.sampled_from(DIVERGENCES))
def test_interval_widens_with_delta(log_p, d1, d2, divergence):
    """δ₁ ≤ δ₂ ⇒ [r̲(δ₁), r̄(δ₁)] ⊆ [r̲(δ₂), r̄(δ₂)] (nested sublevel sets), up to the two tolerances."""
    d1, d2 = min(d1, d2), max(d1, d2)
    lo1, up1 = _bounds64(log_p, divergence, d1)
    lo2, up2 = _bounds64(log_p, divergence, d2)
    tol_up = sum(abs_tolerance(divergence, log_p, d, "upper", u, EPS64, TINY64) for d, u in ((d1, up1), (d2, up2)))
    tol_lo = sum(abs_tolerance(divergence, log_p, d, "lower", v, EPS64, TINY64) for d, v in ((d1, lo1), (d2, lo2)))
    assert up2 >= up1 - tol_up and lo2 <= lo1 + tol_lo


# --------------------------------------------------------------------------------------------------------------
# Exact values and extreme tokens
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_delta_zero_is_exactly_one(divergence, dtype):
    lp = torch.tensor([0.0, -1e-12, -0.5, -3.0, -11.0], dtype=dtype)
    if dtype == torch.float64:
        lp = torch.cat([lp, torch.tensor([-200.0, -700.0, -745.0], dtype=dtype)])
    lo, up = band_bounds(lp, divergence, 0.0)
    assert torch.equal(lo, torch.ones_like(lp)) and torch.equal(up, torch.ones_like(lp))


@pytest.mark.parametrize("delta", [1e-10, 1e-3, 0.05, 0.5, 1.0, 3.0, 20.0])
def test_p_equal_one(delta):
    """log p = 0 (p = 1): [e^{-δ}, 1] for KL, [max(1-δ, 0), 1] for TV, [1, 1] for χ² (spec §1.7)."""
    for zero in (0.0, -0.0):
        lp = torch.tensor([zero], dtype=torch.float64)
        lo, up = band_bounds(lp, "kl", delta)
        assert up.item() == 1.0
        assert abs(lo.item() - math.exp(-delta)) <= KL_ROOT_C * EPS64 * (1 + delta) * math.exp(-delta)
        lo, up = band_bounds(lp, "tv", delta)
        assert (lo.item(), up.item()) == (max(1.0 - delta, 0.0), 1.0)
        lo, up = band_bounds(lp, "chi2", delta)
        assert (lo.item(), up.item()) == (1.0, 1.0)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
@pytest.mark.parametrize("delta", [1e-10, 0.05, 3.0])
def test_p_equal_one_float32_table(monkeypatch, compiled, delta):
    """The float32 table at p = 1 from either zero, and from round-off above 0 (read as p = 1): [e^{-δ}, 1].
    -0.0 and +0.0 reach different cells of y = expm1(-log p) (y = +0.0 and -0.0, whose bits are the most
    negative int32): both must read row 0."""
    monkeypatch.setattr(band_module, "COMPILE", compiled)
    lp = torch.tensor([0.0, -0.0, 1e-7, 3e-5], dtype=torch.float32)
    lo, up = band_bounds(lp, "kl", delta, method="table")
    ref = math.exp(-delta)
    assert torch.equal(up, torch.ones_like(lp)), up
    assert all(abs(v - ref) <= KL_ROOT_C * EPS32 * (1 + delta) * ref for v in lo.tolist()), (lo, ref)


@pytest.mark.parametrize("log_p", [-200.0, -700.0])
@pytest.mark.parametrize("delta", [1e-10, 0.05, 1.0, 20.0])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_tail_tokens_finite_and_correct(log_p, delta, divergence):
    """Tail tokens keep full precision: r̄ ≈ (1 - e^{-δ})/p ≈ 1e304 for KL at p = e^-700 (spec §1.7), r̲ ≥ 0."""
    lo, up = _bounds64(log_p, divergence, delta)
    assert math.isfinite(lo) and math.isfinite(up) and lo >= 0.0
    _, ref_up = _assert_close_to_reference(log_p, divergence, delta, lo, up)
    if divergence == "kl":
        # Spec §1.7: the probability margin p(r̄ - 1) → 1 - e^{-δ} as p → 0 (the O(p log p) rest is < 1e-80 here).
        margin = -math.expm1(-delta)
        rel = abs_tolerance("kl", log_p, delta, "upper", ref_up, EPS64, TINY64) / ref_up + 4 * EPS64
        assert abs(up * math.exp(log_p) - margin) <= rel * margin


@pytest.mark.parametrize("dtype, log_ps", [
    (torch.float32, [-85.0, -87.5, -88.0, -90.0, -103.0, -110.0, -200.0, -700.0]),
    (torch.float64, [-705.0, -708.0, -709.0, -740.0, -745.0, -800.0]),
])
@pytest.mark.parametrize("delta", [1e-6, 0.05, 2.0, 5.0, 20.0])
def test_probabilities_below_the_float_range(dtype, log_ps, delta):
    """p at or below the dtype's smallest normal number (float32 from log p ≈ -87, float64 from ≈ -708).

    Regression: for δ ≳ 2 the KL root log q ≈ log p - δ/p is below the float range, the Newton iterate
    overflowed to -inf, the next step's inf - inf = NaN was read by ``fmin`` as the degenerate root r = 1, and
    ``exp(log p_clamped - log p)`` then gave lower bounds > 1 (up to inf). The lower bound is 0 there; the upper
    bound q̄/p keeps its precision while finite and overflows to inf exactly when the true value does."""
    finfo = torch.finfo(dtype)
    eps, tiny = finfo.eps, finfo.tiny
    for divergence in DIVERGENCES:
        lo, up = band_bounds(torch.tensor(log_ps, dtype=dtype), divergence, delta)
        assert bool(((lo >= 0) & (lo <= 1) & (up >= 1)).all()), (divergence, lo, up)
        for i, lp in enumerate(log_ps):
            ref_lo, ref_up = reference_bounds(lp, divergence, delta)
            assert abs(lo[i].item() - ref_lo) <= tiny, (divergence, lp, lo[i].item(), ref_lo)
            if ref_up > finfo.max:
                assert up[i].item() == math.inf, (divergence, lp, up[i].item())
            elif up[i].item() == math.inf:
                # Documented (band_bounds): the upper end may overflow to inf when 1/p does (TV's min(1 + δ/p, 1/p)
                # is evaluated through 1/p); irrelevant to the loss, whose ratio is at most e^20.
                assert -lp > math.log(finfo.max), (divergence, lp, ref_up)
            else:
                tol = abs_tolerance(divergence, lp, delta, "upper", ref_up, eps, tiny)
                assert abs(up[i].item() - ref_up) <= tol, (divergence, lp, up[i].item(), ref_up, tol)


# --------------------------------------------------------------------------------------------------------------
# relax and upper_bound_max (spec §1.6 steps 4-5)
# --------------------------------------------------------------------------------------------------------------

@given(log_p=st.lists(st.floats(-50.0, 0.0), min_size=1, max_size=8), delta=st.floats(1e-6, 2.0),
       divergence=st.sampled_from(DIVERGENCES), eps_low=st.floats(0.0, 1.0), eps_high=st.floats(0.0, 5.0),
       cap=st.one_of(st.none(), st.floats(1.0, 1e6)), use_relax=st.booleans())
def test_relax_and_cap(log_p, delta, divergence, eps_low, eps_high, cap, use_relax):
    """relax = union with [1-ε₋, 1+ε₊]; then the cap clamps the upper end: exact elementwise identities."""
    lp = torch.tensor(log_p, dtype=torch.float64)
    lo0, up0 = band_bounds(lp, divergence, delta)
    relax = (eps_low, eps_high) if use_relax else None
    lo, up = band_bounds(lp, divergence, delta, relax=relax, upper_bound_max=cap)
    exp_lo, exp_up = lo0, up0
    if use_relax:
        exp_lo = torch.minimum(lo0, torch.tensor(1.0 - eps_low, dtype=torch.float64))
        exp_up = torch.maximum(up0, torch.tensor(1.0 + eps_high, dtype=torch.float64))
    if cap is not None:
        exp_up = torch.minimum(exp_up, torch.tensor(cap, dtype=torch.float64))
    assert torch.equal(lo, exp_lo) and torch.equal(up, exp_up)
    assert bool((lo <= 1).all()) and bool((up >= 1).all())
    if cap is not None:
        assert bool((up <= cap).all())


def test_cap_of_one_and_full_relax():
    lp = torch.tensor([-0.1, -3.0, -30.0], dtype=torch.float64)
    lo, up = band_bounds(lp, "kl", 0.05, upper_bound_max=1.0)
    assert torch.equal(up, torch.ones_like(lp))
    lo, up = band_bounds(lp, "kl", 0.05, relax=(1.0, 0.0))
    assert torch.equal(lo, torch.zeros_like(lp))


# --------------------------------------------------------------------------------------------------------------
# dtypes, autograd, shapes
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_dtype_preserved(dtype, divergence):
    """Output dtype = input dtype; half types are solved in float32 and rounded once."""
    lp = torch.tensor([[0.0, -0.01, -0.7], [-2.0, -5.0, -9.0]], dtype=dtype)
    lo, up = band_bounds(lp, divergence, 0.05, upper_bound_max=10.0)
    assert lo.dtype == up.dtype == dtype and lo.shape == up.shape == lp.shape
    if dtype in (torch.float16, torch.bfloat16):
        lo32, up32 = band_bounds(lp.float(), divergence, 0.05, upper_bound_max=10.0)
        assert torch.equal(lo, lo32.to(dtype)) and torch.equal(up, up32.to(dtype))


def test_no_grad_on_outputs():
    lp = torch.tensor([-0.3, -2.0], dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        for div in DIVERGENCES:
            lo, up = band_bounds(lp, div, 0.1, relax=(0.2, 0.28), upper_bound_max=10.0)
            assert not lo.requires_grad and not up.requires_grad
            assert lo.grad_fn is None and up.grad_fn is None
            lo, up = band_bounds_authors_bisection(lp, div, 0.1)
            assert not lo.requires_grad and not up.requires_grad


def test_empty_and_scalar_shapes():
    lo, up = band_bounds(torch.tensor(-1.0, dtype=torch.float64), "kl", 0.05)
    assert lo.shape == up.shape == torch.Size([])
    with pytest.raises(ValueError, match="old_log_prob"):
        band_bounds(torch.empty(0, dtype=torch.float64), "kl", 0.05)


# --------------------------------------------------------------------------------------------------------------
# The loss's fused path: band_active_bound
# --------------------------------------------------------------------------------------------------------------

def _active_reference(lp, adv, mask, divergence, delta, **kw):
    """The definition, from band_bounds run eagerly: r̄ where A > 0 else r̲, and the masked sums in float64."""
    lo, up = band_bounds(lp, divergence, delta, **kw)
    m = mask.double()
    return (torch.where(adv > 0, up, lo), (lo.double() * m).sum().item(),
            (up.double().log().clamp_max(torch.finfo(up.dtype).max) * m).sum().item())


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), divergence=st.sampled_from(DIVERGENCES),
       delta=st.floats(1e-6, 5.0), method=st.sampled_from(["table", "newton"]),
       cap=st.one_of(st.none(), st.floats(1.0, 50.0)),
       relax=st.one_of(st.none(), st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 2.0))))
def test_active_bound_is_the_clip_reachable_end(compiled, dtype, seed, n, divergence, delta, method, cap, relax):
    """``band_active_bound`` = r̄ where A > 0, r̲ elsewhere, with Σ_valid r̲ and Σ_valid log r̄, for every
    divergence, option and dtype, fused (compiled) or eager, against band_bounds run eagerly.

    Tolerance: each side is within the error bound of the accuracy tests (:func:`abs_tolerance`, the κ model,
    in the working dtype) of the float64 bounds, so the two agree within twice that per token (the fused
    kernel is another compilation of the same expressions: a contracted multiply-add, another vectorised
    ``exp``/``expm1``); relax and cap are clamps, which do not widen a difference; bfloat16 adds its final
    rounding (half an ulp of each). A sum adds its own rounding, (n + 4)·eps of the sum of magnitudes, to
    the sum of the per-token bounds; ``log r̄`` errs by the relative error of r̄."""
    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(band_module, "COMPILE", compiled)
        g = torch.Generator().manual_seed(seed)
        lp = (-30.0 * torch.rand(n, generator=g) ** 3).to(dtype)
        adv = torch.randn(n, generator=g).to(dtype)
        adv[torch.rand(n, generator=g) < 0.1] = 0.0
        mask = torch.rand(n, generator=g) < 0.8
        kw = {"upper_bound_max": cap, "relax": relax, "method": method}
        bound, s_lo, s_log_up = band_active_bound(lp, adv, mask, divergence, delta, **kw)
        mp_.setattr(band_module, "COMPILE", False)
        work = lp.float() if dtype == torch.bfloat16 else lp
        lo, up = (t.double() for t in band_bounds(work, divergence, delta, **kw))
    assert bound.dtype == dtype and bound.shape == lp.shape and not bound.requires_grad
    wfinfo = torch.finfo(work.dtype)
    lo64, up64 = band_bounds(work.double(), divergence, delta)            # unclamped, for the error model
    tol_lo, tol_up = (torch.tensor([2 * abs_tolerance(divergence, x, delta, which, r, wfinfo.eps, wfinfo.tiny)
                                    for x, r in zip(work.double().tolist(), ref.tolist())], dtype=torch.float64)
                      for which, ref in (("lower", lo64), ("upper", up64)))
    ref = torch.where(adv > 0, up, lo)
    tol = torch.where(adv > 0, tol_up, tol_lo)
    if dtype == torch.bfloat16:
        tol = tol + torch.finfo(dtype).eps * ref
    assert torch.all((bound.double() - ref).abs() <= tol), ((bound.double() - ref).abs() - tol).max()
    m = mask.double()
    log_up = up.log().clamp_max(wfinfo.max)
    log_tol = torch.where(up64.isinf(), 0.0, tol_up / up64)
    for got, vals, tok_tol in ((s_lo, lo, tol_lo), (s_log_up, log_up, log_tol)):
        want = (vals * m).sum().item()
        bound_ = (tok_tol * m).sum().item() + (n + 4) * wfinfo.eps * (vals.abs() * m).sum().item()
        assert abs(got.item() - want) <= bound_, (got.item(), want, bound_)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_fused_kernels_keep_head_tokens_exact(divergence):
    """Head tokens (p → 1) through the compiled float32 kernels, against float64, within the accuracy tests' own
    bound (not doubled). torch.compile's vectorised CPU code lowers ``expm1`` to ``exp - 1``; with it the χ²
    band's 1 - p loses its digits here (31 eps at log p = -7e-6: this test fails). The KL table would stay
    within its κ bound even so: misplacing y = 1/p - 1 by an absolute eps is the error of rounding p itself."""
    lp = -torch.logspace(-9, -1, 400, dtype=torch.float64).float()
    adv = torch.where(torch.arange(400) % 2 == 0, 1.0, -1.0)
    bound, _, _ = band_active_bound(lp, adv, torch.ones(400, dtype=torch.bool), divergence, 0.05)
    lo64, up64 = band_bounds(lp.double(), divergence, 0.05)
    for i, x in enumerate(lp.double().tolist()):
        which, ref = ("upper", up64[i].item()) if adv[i] > 0 else ("lower", lo64[i].item())
        tol = abs_tolerance(divergence, x, 0.05, which, ref, EPS32, TINY32)
        assert abs(bound[i].item() - ref) <= tol, (divergence, x, which, bound[i].item(), ref, tol)


def test_active_bound_sums_in_half_types_are_taken_in_float32():
    """bfloat16 log-probs are solved in float32 (as in band_bounds); the sums are float32 sums of those."""
    lp = torch.tensor([-0.01, -0.7, -3.0, -9.0], dtype=torch.bfloat16)
    adv = torch.tensor([1.0, -1.0, 0.0, 2.0], dtype=torch.bfloat16)
    mask = torch.tensor([True, True, False, True])
    bound, s_lo, s_log_up = band_active_bound(lp, adv, mask, "kl", 0.05)
    lo, up = band_bounds(lp.float(), "kl", 0.05, method="table")
    assert s_lo.dtype == torch.float32 and bound.dtype == torch.bfloat16
    assert torch.allclose(s_lo, (lo * mask).sum(), rtol=4 * EPS32)
    assert torch.allclose(s_log_up, (up.log() * mask).sum(), rtol=4 * EPS32)
    assert torch.equal(bound, torch.where(adv > 0, up, lo).to(torch.bfloat16))


def test_active_bound_validates_its_options():
    lp, adv, m = GOOD_LP, torch.tensor([1.0, -1.0], dtype=torch.float64), torch.tensor([True, True])
    with pytest.raises(ValueError, match="divergence"):
        band_active_bound(lp, adv, m, "js", 0.05)
    with pytest.raises(ValueError, match="delta"):
        band_active_bound(lp, adv, m, "kl", -1.0)
    with pytest.raises(ValueError, match="upper_bound_max"):
        band_active_bound(lp, adv, m, "kl", 0.05, upper_bound_max=0.5)
    with pytest.raises(ValueError, match="relax"):
        band_active_bound(lp, adv, m, "kl", 0.05, relax=(0.2,))
    with pytest.raises(ValueError, match="method"):
        band_active_bound(lp, adv, m, "kl", 0.05, method="bisection")


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    """A backend that cannot compile (no C++ compiler, no Triton) must not break training: one warning, then the
    same kernel eagerly, for the rest of the process."""
    def broken_compile(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setattr(band_module, "_FUSED", {})
    monkeypatch.setattr(torch, "compile", broken_compile)
    lp = torch.tensor([-0.01, -0.7, -3.0, -9.0], dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match="no compiler here"):
        lo, up = band_bounds(lp, "kl", 0.05, method="table")
    assert band_module.fused_kernels()["kl_table_f32 (cpu)"] is False          # fell back, for good
    monkeypatch.setattr(band_module, "COMPILE", False)
    lo_e, up_e = band_bounds(lp, "kl", 0.05, method="table")
    assert torch.equal(lo, lo_e) and torch.equal(up, up_e)


# --------------------------------------------------------------------------------------------------------------
# Bad input: ValueError naming the argument
# --------------------------------------------------------------------------------------------------------------

GOOD_LP = torch.tensor([-0.5, -2.0], dtype=torch.float64)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_old_log_prob(bad):
    with pytest.raises(ValueError, match="old_log_prob"):
        band_bounds(torch.tensor([-0.5, bad], dtype=torch.float64), "kl", 0.05)
    with pytest.raises(ValueError, match="old_log_prob"):
        band_bounds_authors_bisection(torch.tensor([-0.5, bad], dtype=torch.float64), "kl", 0.05)


@pytest.mark.parametrize("old_log_prob", [[-0.5, -2.0], torch.tensor([-1, -2])])
def test_old_log_prob_type(old_log_prob):
    with pytest.raises(ValueError, match="old_log_prob"):
        band_bounds(old_log_prob, "kl", 0.05)


@pytest.mark.parametrize("delta", [-1e-3, -1.0, float("nan"), float("inf"), "abc", None])
def test_bad_delta(delta):
    with pytest.raises(ValueError, match="delta"):
        band_bounds(GOOD_LP, "kl", delta)


@pytest.mark.parametrize("divergence", ["KL", "bandkl", "js", "", None])
def test_unknown_divergence(divergence):
    with pytest.raises(ValueError, match="divergence"):
        band_bounds(GOOD_LP, divergence, 0.05)
    with pytest.raises(ValueError, match="divergence"):
        band_bounds_authors_bisection(GOOD_LP, divergence, 0.05)


@pytest.mark.parametrize("cap", [0.999, 0.0, -5.0, float("nan")])
def test_upper_bound_max_below_one(cap):
    with pytest.raises(ValueError, match="upper_bound_max"):
        band_bounds(GOOD_LP, "kl", 0.05, upper_bound_max=cap)


@pytest.mark.parametrize("relax", [(0.2,), (0.2, 0.28, 0.1), (-0.1, 0.2), (1.5, 0.2), (0.2, -0.3),
                                   (float("nan"), 0.2), (0.2, float("nan")), 0.2, ("a", "b")])
def test_bad_relax(relax):
    with pytest.raises(ValueError, match="relax"):
        band_bounds(GOOD_LP, "kl", 0.05, relax=relax)


# --------------------------------------------------------------------------------------------------------------
# The authors' v2 bisection (spec §1.5)
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("delta", [1e-8, 1e-4, 0.01, 0.05, 0.2, 1.0, 5.0, 20.0])
def test_authors_bisection_within_its_tolerance(divergence, delta):
    """On the range where the authors' band() uses the solver (1e-6 ≤ p ≤ 1-1e-6; outside it band() overrides
    both ends, spec §1.6 step 3) the bisection is within tol/2 of the exact bounds, except the documented KL
    clamp artefact: lower flagged saturated (exactly 0) while the exact bound is positive but ≤ 1e-12."""
    lp = torch.tensor(np.concatenate([-np.logspace(-6, math.log10(-math.log(1e-6)), 120),
                                      [math.log(1e-6), math.log1p(-1e-6)]]), dtype=torch.float64)
    lo, up = band_bounds(lp, divergence, delta)
    a_lo, a_up = band_bounds_authors_bisection(lp, divergence, delta)
    artefact = (a_lo == 0) & (lo > 0)
    if divergence != "kl":
        assert not bool(artefact.any())
    else:
        assert bool((lo[artefact] <= AUTHORS_CLAMP).all())
    tol_lo = AUTHORS_HALF_TOL + 64 * EPS64 * lo
    tol_up = AUTHORS_HALF_TOL + 64 * EPS64 * up
    assert bool(((a_lo - lo).abs() <= tol_lo)[~artefact].all()), (a_lo - lo).abs().max().item()
    assert bool(((a_up - up).abs() <= tol_up).all()), (a_up - up).abs().max().item()


def test_authors_clamp_artefact_exists():
    """The artefact is real (spec §1.5): KL, δ = 0.05, p = 1e-3 < 0.00188: the authors return 0, the exact bound
    is e^{-δ/p}-small but positive."""
    lp = torch.tensor([math.log(1e-3)], dtype=torch.float64)
    a_lo, _ = band_bounds_authors_bisection(lp, "kl", 0.05)
    lo, _ = band_bounds(lp, "kl", 0.05)
    assert a_lo.item() == 0.0 and 0.0 < lo.item() <= AUTHORS_CLAMP


# --------------------------------------------------------------------------------------------------------------
# Cross-check: fiberlab.numerics.band's mpmath reference agrees with the one here
# --------------------------------------------------------------------------------------------------------------

def test_numerics_reference_agrees_with_this_reference():
    numerics_band = pytest.importorskip("fiberlab.numerics.band")
    band_bounds_mp = numerics_band.band_bounds_mp
    for lp in (-1e-15, -1e-6, -0.3, -math.log(2.0), -4.0, -60.0, -700.0):
        for delta in (1e-10, 1e-3, 0.05, 2.0, 20.0):
            for div in DIVERGENCES:
                ours = reference_bounds_mp(lp, div, delta)
                theirs = band_bounds_mp(lp, div, delta, dps=50)
                for a, b in zip(ours, theirs):
                    if a > mp.mpf(10) ** -300:             # astronomically small lower roots: both underflow float64
                        assert abs(a - b) <= mp.mpf(10) ** -40 * a, (lp, delta, div, a, b)
