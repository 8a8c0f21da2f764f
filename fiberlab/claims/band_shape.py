"""The Band's shape (BandPO, arXiv 2603.04918, §3): its limits as p → 0 and p → 1, the small-δ expansion, the
mirror identity, and monotonicity in p and δ.

Notation, and what a check of each layer compares: :mod:`fiberlab.claims` (BandPO).
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import sympy as sp

from fiberlab.claims._cases import BAND_DELTAS as DELTAS
from fiberlab.claims._cases import BAND_SEED as SEED
from fiberlab.claims._cases import (EPS64, as_torch, log_error, measures_evidence, mp_log_1mp, mp_log_p,
                                    ratio_error)
from fiberlab.claims._symbolic import proof_evidence
from fiberlab.claims.band_bounds import FAST_KL_TOL, FLOAT_VS_MP_TOL
from fiberlab.gpu.band import band_bounds
from fiberlab.numerics import band as ref_band
from fiberlab.registry import Evidence, claim
from fiberlab.theory import band as sym_band


# ---------------------------------------------------------------------------------------------
# band.limits
# ---------------------------------------------------------------------------------------------
limits = claim(
    "band.limits", paper="BandPO", source="BandPO §3 (limits)",
    statement="As p → 1 the band tends to [r*, 1] with r* = e^{-δ} (KL), 1-δ (TV), 1 (χ²). As p → 0 the upper "
              "bound diverges and the upward probability margin p(r̄ - 1) tends to 1 - e^{-δ} (KL), δ (TV), "
              "and vanishes as √(δp) (χ²); the lower bound tends to 0.")


@limits.check("theory")
def _limits_by_sympy() -> Evidence:
    proved = {}
    for div in sym_band.DIVERGENCES:
        one = sym_band.limit_p_to_1(div)
        zero = sym_band.limit_p_to_0(div)
        proved[f"{div}: r* - stated"] = sp.simplify(one["r_star"] - sym_band.STATED["r_star"][div]) == 0
        proved[f"{div}: lim_(p→1) 1/p - 1"] = sp.simplify(one["upper"] - 1) == 0
        for branch, val in zero["g_fixed_r"].items():
            proved[f"{div}: lim_(p→0) g(p, {branch})"] = sp.simplify(val) == 0   # every fixed r > 0 becomes feasible
        if div == "chi2":
            proved["chi2: lim margin"] = sp.simplify(zero["margin"]) == 0
            proved["chi2: lim margin/√(δp) - 1"] = sp.simplify(zero["scaled_margin"] - 1) == 0
        else:
            stated = sym_band.STATED["margin_p_to_0"][div]
            proved[f"{div}: lim margin - stated"] = sp.simplify(zero["margin"] - stated) == 0
    g_limit = sym_band.limit_p_to_1("kl")["g_limit"]                  # lim_(p→1) g_KL(p, r) = -log r
    proved["kl: lim_(p→1) g(p, r) + log r"] = sp.simplify(g_limit + sp.log(sym_band.r)) == 0
    return proof_evidence(proved, detail="p→1: r* = e^{-δ}, 1-δ, 1 and r̄ → 1; p→0: g(p, r) → 0 at fixed r (so r̲ → 0, "
                                         "r̄ → ∞), margin → 1-e^{-δ} (KL), δ (TV), 0 with margin/√(δp) → 1 (χ²)")


# Limits at 1 − p = 1e-12 and p = 1e-12 (spec §1.7). How fast each quantity approaches its limit
# (from the expansions): KL r̲ − e^{−δ} = O((1−p) log(1/(1−p))) ≈ 3e-11; TV r̲ − (1−δ) = δ(1−p)/p ≤ 1e-12;
# χ² 1 − r̲ = √(δ(1−p)/p) ≤ 1e-6 (δ ≤ 1); r̄ − 1 ≤ 1/p − 1 ≈ 1e-12; KL margin − (1 − e^{−δ}) = O(p log(1/p)) ≈ 3e-11;
# TV margin = δ exactly; χ² margin/√(δp) = √(1−p) = 1 − 5e-13; KL r̲ ≈ e^{−δ/p}, TV/χ² r̲ = 0 (saturated).
LIMIT_TOL = {"p->1 lower kl": 1e-10, "p->1 lower tv": 1e-10, "p->1 lower chi2": 2e-6, "p->1 upper": 1e-10,
             "p->0 margin": 1e-10, "p->0 lower": 1e-10}
LIMIT_EPS = 1e-12  # how close to 0 and 1 the limits are evaluated


@limits.check("numerics")
def _limits_at_extreme_p() -> Evidence:
    """At 1 − p = 1e-12 and p = 1e-12 (50 digits), the bands sit at the limits derived in theory.band."""
    errors: dict[str, tuple[float, float]] = {}
    cases = 0

    def record(name, err, tol):
        if name not in errors or err / tol > errors[name][0] / errors[name][1]:
            errors[name] = (err, tol)

    near_one, near_zero = mp_log_1mp(LIMIT_EPS), mp_log_p(LIMIT_EPS)
    for div in ref_band.DIVERGENCES:
        r_star = sym_band.lambdify_mp(sym_band.limit_p_to_1(div)["r_star"], sym_band.delta)
        zero = sym_band.limit_p_to_0(div)
        margin = sym_band.lambdify_mp(zero["margin"], sym_band.delta)
        for delta in DELTAS:
            with mp.workdps(50):
                lo, up = ref_band.band_bounds_mp(near_one, div, delta)
                record(f"p->1 lower {div}", float(abs(lo - max(r_star(delta), 0))), LIMIT_TOL[f"p->1 lower {div}"])
                record("p->1 upper", float(abs(up - 1)), LIMIT_TOL["p->1 upper"])
                lo, up = ref_band.band_bounds_mp(near_zero, div, delta)
                p = mp.mpf(LIMIT_EPS)
                if div == "chi2":   # margin vanishes; its rate: margin/√(δp) → scaled_margin = 1
                    got = p * (up - 1) / mp.sqrt(delta * p)
                    record("p->0 margin", float(abs(got - zero["scaled_margin"])), LIMIT_TOL["p->0 margin"])
                else:
                    record("p->0 margin", float(abs(p * (up - 1) - margin(delta))), LIMIT_TOL["p->0 margin"])
                record("p->0 lower", float(lo), LIMIT_TOL["p->0 lower"])
            cases += 2
    return measures_evidence(errors, cases, f"kl/tv/chi2 at δ ∈ {DELTAS}, 1 - p = p = {LIMIT_EPS:g}, limits from "
                                            "sympy (r* = e^{-δ}, max(1-δ, 0), 1; margins 1 - e^{-δ}, δ, √(δp))")


@limits.check("gpu")
def _limits_torch() -> Evidence:
    """Exact values at p = 1, and the approach to each limit at the rate the expansions predict."""
    seen: list[tuple[float, float]] = []          # (deviation from the limit, 4 × its predicted rate) per case
    n = 0
    for delta in (0.01, 0.05, 0.2):
        for div, r_star, margin in (("kl", math.exp(-delta), -math.expm1(-delta)), ("tv", 1 - delta, delta),
                                    ("chi2", 1.0, None)):
            lo, up = band_bounds(as_torch(np.array([0.0])), div, delta)          # p = 1 exactly: [r*, 1]
            seen += [(abs(float(lo[0]) - r_star), 4 * EPS64), (abs(float(up[0]) - 1.0), 4 * EPS64)]
            n += 1
            # p → 1: |r̲ - r*| and r̄ - 1 are O((1-p) log(1/(1-p))) (g's (1-p) term); normalised by that rate.
            for q in (1e-4, 1e-8, 1e-12):
                lo, up = band_bounds(as_torch(np.array([math.log1p(-q)])), div, delta)
                rate = q * (1.0 + abs(math.log(q))) if div != "chi2" else math.sqrt(delta * q)
                seen += [(abs(float(lo[0]) - r_star), 4 * rate), (float(up[0]) - 1.0, 4 * rate)]
                n += 1
            # p → 0: upward probability margin p(r̄ - 1) → 1-e^{-δ} (KL), δ (TV), ~√(δp) (χ²); r̲ → 0.
            for lp in (-30.0, -100.0, -700.0):
                p = math.exp(lp)
                lo, up = band_bounds(as_torch(np.array([lp])), div, delta)
                m = p * (float(up[0]) - 1.0)
                if margin is None:
                    seen.append((abs(m / math.sqrt(delta * p) - 1.0), 4 * math.sqrt(p / delta) + 64 * EPS64))
                else:
                    # KL's margin differs from its limit by O(p (1 + log(1/p) + log(1/margin))) (expand g_KL at
                    # q = 1-e^{-δ}); TV's is exact below p = 1-δ. Plus rounding: r̄ = exp(y), |y| ≈ |log p|.
                    seen.append((abs(m - margin), 4 * p * (1 + abs(lp) + abs(math.log(margin)))
                                 + 4 * EPS64 * (1 + abs(lp)) * margin))
                if float(lo[0]) > 0:
                    seen.append((float(lo[0]), max(4 * math.exp(-delta / p) if delta / p < 700 else 0, 1e-300)))
                n += 1
    tightest = max(seen, key=lambda dt: dt[0] / dt[1])
    return Evidence.worst_of({"deviation from a limit against 4 × its predicted rate, tightest case": tightest}, n,
                             detail="p = 1 exact to 4 eps; p → 1 at rate (1-p)log(1/(1-p)) (χ²: √(δ(1-p))); p → 0 "
                                    "margins 1-e^{-δ} (KL), δ (TV), √(δp) (χ²); every case within 4 × its rate")


# ---------------------------------------------------------------------------------------------
# band.small_delta
# ---------------------------------------------------------------------------------------------
small_delta = claim(
    "band.small_delta", paper="BandPO", source="BandPO §3 (small-δ expansion)",
    statement="r̄, r̲ = 1 ± √(2δ(1-p)/(f''(1) p)) + O(δ); exact for χ², so KL at δ matches χ² at 2δ to first order.")


@small_delta.check("theory")
def _second_order_series() -> Evidence:
    p, r, h, delta, fpp_1 = sym_band.p, sym_band.r, sym_band.h, sym_band.delta, sym_band.fpp_1
    on_unit = sym_band.ON_UNIT_INTERVAL
    out = sym_band.small_delta()
    c, halfwidth = out["coefficient"], out["halfwidth"]            # h² coefficient of g_f(p, 1 + h), √(δ/c)
    _, b = sym_band.kl_second_order_root()

    def half(div, dlt):                                             # the half-width with f''(1) of div, at δ = dlt
        return halfwidth.subs(fpp_1, sym_band.f_second_at_one(div)).subs(delta, dlt)

    c_chi2 = c.subs(fpp_1, sym_band.f_second_at_one("chi2"))
    proved = {
        # constant f(1) and no linear term: g_f(p, 1 + h) = f(1) + c h² + O(h³)
        "lower_order_terms": sp.simplify(out["series"] - c * h**2 - sym_band.f(1)) == 0,
        "coefficient_error": sp.simplify(c - fpp_1 * p / (2 * (1 - p))) == 0,
        "halfwidth_error": sp.simplify((halfwidth - sym_band.STATED["small_delta_halfwidth"]).subs(on_unit)) == 0,
        "chi2_remainder": sp.simplify(sym_band.g("chi2").subs(r, 1 + h) - c_chi2 * h**2) == 0,      # exact for χ²
        "kl_vs_chi2": sp.simplify((half("kl", delta) - half("chi2", 2 * delta)).subs(on_unit)) == 0,
        "KL's O(δ) coefficient b(p) is finite for 0 < p < 1": bool(sp.simplify(b.subs(on_unit)).is_finite),
    }
    return proof_evidence(proved, detail=f"g_f(p, 1+h) = f''(1) p/(2(1-p)) h² + O(h³) for generic f; exact for χ²; "
                                         f"KL(δ) half-width = χ²(2δ) half-width; KL next term b(p) = {sp.sstr(b)}")


# Small δ: r = 1 ± a√δ + bδ + O(δ^{3/2}) with b from theory.kl_second_order_root; at δ ≤ 1e-8 the O(δ^{3/2})
# term changes (r − approx)/δ by ≲ 1e-4 (1 + |b|). The fitted log-log slope of the error over δ ∈ [1e-10, 1e-7]
# is 1 up to the same relative correction. χ²'s expansion is exact: errors are 50-digit round-off.
SMALL_DELTA_COEF_TOL = 1e-3
SMALL_DELTA_SLOPE_TOL = 1e-2
SMALL_DELTA_EXACT_TOL = 1e-40


@small_delta.check("numerics")
def _expansion_error_is_order_delta() -> Evidence:
    """KL: (r − (1 ± √(2δ(1−p)/p)))/δ → b(p) from the cubic series, log-log slope 1; χ²: exact."""
    a_hw = sym_band.small_delta()["halfwidth"]
    halfwidth = {div: sym_band.lambdify_mp(a_hw.subs(sym_band.fpp_1, sym_band.f_second_at_one(div)), sym_band.p, sym_band.delta)
                 for div in ("kl", "chi2")}
    b = sym_band.lambdify_mp(sym_band.kl_second_order_root()[1], sym_band.p)
    worst_coef = worst_slope = worst_exact = 0.0
    cases = 0
    with mp.workdps(50):
        for p in (0.05, 0.2, 0.5, 0.7, 0.9):
            pm = mp.mpf(p)
            # KL: the O(δ) coefficient
            for delta in (1e-10, 1e-9, 1e-8):
                lo, up = ref_band.band_bounds_mp(mp.log(pm), "kl", delta)
                hw = halfwidth["kl"](pm, delta)
                for got in ((up - 1 - hw) / delta, (lo - 1 + hw) / delta):
                    worst_coef = max(worst_coef, float(abs(got - b(pm)) / (1 + abs(b(pm)))))
                cases += 1
            # KL: the order itself, by a log-log fit (b = 0 at p = 1/2, where the error is O(δ^{3/2}))
            if p != 0.5:
                ds = np.geomspace(1e-10, 1e-7, 4)
                errs = []
                for delta in ds:
                    lo, up = ref_band.band_bounds_mp(mp.log(pm), "kl", float(delta))
                    errs.append(float(abs(up - 1 - halfwidth["kl"](pm, delta))))
                slope = np.polyfit(np.log(ds), np.log(errs), 1)[0]
                worst_slope = max(worst_slope, abs(slope - 1))
                cases += len(ds)
            # χ²: the expansion is the closed form (where not saturated)
            for delta in (1e-6, 1e-3, 0.01):
                lo, up = ref_band.band_bounds_mp(mp.log(pm), "chi2", delta)
                hw = halfwidth["chi2"](pm, delta)
                worst_exact = max(worst_exact, float(abs(up - 1 - hw)), float(abs(lo - 1 + hw)))
                cases += 1
    return measures_evidence({"KL (r - approx)/δ vs b(p)": (worst_coef, SMALL_DELTA_COEF_TOL),
                              "KL log-log slope - 1": (worst_slope, SMALL_DELTA_SLOPE_TOL),
                              "χ² r - approx": (worst_exact, SMALL_DELTA_EXACT_TOL)}, cases,
                             "p ∈ {0.05, 0.2, 0.5, 0.7, 0.9}; KL δ ∈ [1e-10, 1e-7]; since χ² at 2δ has the same "
                             "half-width as KL's approximation, KL(δ) - χ²(2δ) = b δ + o(δ) too")


# ---------------------------------------------------------------------------------------------
# band.mirror
# ---------------------------------------------------------------------------------------------
mirror = claim(
    "band.mirror", paper="BandPO", source="BandPO code (v1 KL solver), mirror identity",
    statement="For every f, g_f(p, r) = g_f(1-p, (1-rp)/(1-p)); hence r̲_f(p) = [1 - (1-p) r̄_f(1-p)] / p.")


@mirror.check("theory")
def _mirror_identity_generic_f() -> Evidence:
    p = sym_band.p
    out = sym_band.mirror()
    proved = {"g_f(p, r) - g_f(1-p, s)": sp.simplify(sym_band.g_f(sym_band.f) - out["g_mirrored"]) == 0,
              "r(s=0) - 1/p": sp.simplify(out["edges"][0] - 1 / p) == 0,
              "r(s=1/(1-p))": sp.simplify(out["edges"][1]) == 0}
    for div, (lower, mirrored) in out["closed_form_lower"].items():     # Prop. 4's r̲(p), [1 - (1-p) r̄(1-p)]/p
        difference = (lower - mirrored).subs(sym_band.ON_UNIT_INTERVAL)
        proved[f"{div}: r̲(p) - [1-(1-p) r̄(1-p)]/p"] = sp.simplify(difference) == 0
    proved["dr/ds < 0 (ends swap)"] = bool(sp.simplify(out["slope"].subs(sym_band.ON_UNIT_INTERVAL)).is_negative)
    return proof_evidence(proved, detail=f"g_f(p, r) = g_f(1-p, s) for generic f; r = {sp.sstr(out['inverse'])} is "
                                         "decreasing in s and maps [0, 1/(1-p)] onto [1/p, 0]")


# Mirror identity at 50 digits, compared in probability space p·r̲ vs 1 − (1−p) r̄(1−p): both sides are
# O(1) numbers carried to ~1e-48; the KL roots themselves are exact to ≲ 1e-39 relative (REFERENCE_ROOT_TOL's
# measurement), so ≤ 1e-35.
MIRROR_TOL = 1e-35


@mirror.check("numerics")
def _mirror_band_identity() -> Evidence:
    """p r̲_f(p) = 1 − (1−p) r̄_f(1−p) at 50 digits, kl/tv/chi2, many p (the two sides are solved independently)."""
    ps = np.concatenate([np.geomspace(1e-6, 0.5, 20), 1.0 - np.geomspace(1e-6, 0.5, 20)[::-1]])
    worst, where, cases = 0.0, None, 0
    for div in ref_band.DIVERGENCES:
        for delta in (0.01, 0.2, 1.0):
            for p in ps:
                with mp.workdps(50):
                    lo, _ = ref_band.band_bounds_mp(mp_log_p(p), div, delta)
                    _, up_mirror = ref_band.band_bounds_mp(mp_log_1mp(p), div, delta)
                    pm = mp.mpf(p)
                    err = float(abs(pm * lo - (1 - (1 - pm) * up_mirror)))
                if err > worst:
                    worst, where = err, dict(divergence=div, delta=delta, p=float(p))
                cases += 1
    return Evidence.within(worst, MIRROR_TOL, cases,
                           detail=f"|p r̲(p) - [1 - (1-p) r̄(1-p)]| over p ∈ [1e-6, 1-1e-6], δ ∈ {{0.01, 0.2, 1}}; "
                                  f"worst at {where}. In float64 the mirror formula for r̲ loses log10(1/p) digits "
                                  f"to cancellation (the v1 solver's lower bound)")


# g_f(p, r) vs g_f(1−p, s) in float64 with s = (1 − rp)/(1 − p) rounded: s − 1 = −p(r − 1)/(1 − p) then carries an
# absolute error ~1e-16, i.e. a relative one ~1e-16 (1 − p)/(p |r − 1|) ≤ 1e-11 for p ≥ 1e-3, |r − 1| ≥ 1e-2,
# which g inherits (×2 for χ²); 1 − s(1 − p) = rp loses ≤ 3 more digits for rp ≥ 1e-3. Measured 3e-11.
MIRROR_FLOAT_TOL = 1e-10


@mirror.check("numerics")
def _mirror_g_identity_float() -> Evidence:
    """g_f(p, r) = g_f(1−p, (1−rp)/(1−p)) in float64 at random (p, r), kl/tv/chi2."""
    rng = np.random.default_rng(SEED + 7)
    n = 4000
    p = rng.uniform(1e-3, 1 - 1e-3, n)
    r = rng.uniform(0, 1, n) / p * (1 - 1e-3)            # keep r p ≤ 1 - 1e-3
    r = np.where(np.abs(r - 1) < 1e-2, 1 + 1e-2, r)      # away from r = 1, where g → 0
    s = (1 - r * p) / (1 - p)
    worst = 0.0
    for div in ref_band.DIVERGENCES:
        lhs, rhs = ref_band.g_f(p, r, div), ref_band.g_f(1 - p, s, div)
        worst = max(worst, float(np.max(np.abs(lhs - rhs) / lhs)))
    return Evidence.within(worst, MIRROR_FLOAT_TOL, 3 * n, detail=f"{n} random (p, r) per divergence, relative "
                                                                   f"error {worst:.2e}")


#: Mirror identity in float64 at moderate p: r̲(p) = [1 - (1-p) r̄(1-p)]/p amplifies the rounding of r̄ by
#: (1-p)/p·r̄ ≤ 1/p² ≤ 1e2 for p ≥ 0.1, on top of the two ulps of each side.
MIRROR_TORCH_TOL = 1e2 * 8 * EPS64


@mirror.check("gpu")
def _mirror_identity_torch() -> Evidence:
    p = np.linspace(0.1, 0.9, 161)
    worst, n = 0.0, 0
    for div in ("kl", "tv", "chi2"):
        for delta in (0.01, 0.05, 0.2):
            lo, _ = band_bounds(as_torch(np.log(p)), div, delta)
            _, up_m = band_bounds(as_torch(np.log1p(-p)), div, delta)
            rhs = (1.0 - (1.0 - p) * up_m.numpy()) / p
            worst = max(worst, float(np.max(np.abs(lo.numpy() - np.maximum(rhs, 0.0)))))
            n += p.size
    return Evidence.within(worst, MIRROR_TORCH_TOL, n, detail="p ∈ [0.1, 0.9], δ ∈ {0.01, 0.05, 0.2}, kl/tv/χ²; "
                                                        "absolute error of r̲ against the mirrored r̄")


# ---------------------------------------------------------------------------------------------
# band.monotone
# ---------------------------------------------------------------------------------------------
monotone = claim(
    "band.monotone", paper="BandPO", source="BandPO §3 (monotonicity)",
    statement="r̄ is non-increasing and r̲ non-decreasing in p; both ends move away from 1 as δ grows.")


@monotone.check("theory")
def _dg_dp_is_bregman() -> Evidence:
    out = sym_band.monotonicity()                                   # (derived, stated) for each step
    proved = {name: sp.simplify(derived - stated) == 0
              for name, (derived, stated) in out.items() if name != "bregman_kl"}
    # KL's Bregman term is x - 1 - log x ≥ 0 at x = r/s: compared inside the simplex, where every log has a sign
    bregman_kl, x_minus_1_minus_log_x = out["bregman_kl"]
    inside = (bregman_kl - x_minus_1_minus_log_x).subs(sym_band.INSIDE_SIMPLEX)
    proved["bregman_kl"] = sp.simplify(sp.expand_log(sp.simplify(inside))) == 0
    return proof_evidence(proved, detail="∂g/∂p = f(r) - f(s) - f'(s)(r - s) ≥ 0 (Bregman, convex f) and "
                                         "∂g/∂r = p(f'(r) - f'(s)) with s on the other side of 1: the band shrinks "
                                         "as p grows and grows with δ (∂r/∂δ = 1/g_r)")


# Monotonicity: closed forms are correctly rounded monotone operations and the KL bisection is exact to a few
# ulp while neighbouring grid values differ by ≳ 1e-9 relative; allow 4 ulp of round-off.
MONOTONE_TOL = 4 * np.finfo(np.float64).eps


@monotone.check("numerics")
def _monotone_in_p_dense_grid() -> Evidence:
    """r̄ non-increasing and r̲ non-decreasing over 20 001 p in [1e-4, 1 − 1e-4] (spec §1.7 grid)."""
    ps = np.linspace(1e-4, 1 - 1e-4, 20001)
    worst, where, fast_err = 0.0, None, 0.0
    for div in ref_band.DIVERGENCES:
        for delta in (0.05, 0.2):
            lo, up = ref_band.band_bounds(ps, div, delta)
            up_rise = np.max(np.diff(up) / up[:-1])                       # must be ≤ 0
            lo_fall = np.max(-np.diff(lo) / np.maximum(lo[:-1], np.finfo(float).tiny))   # must be ≤ 0
            for name, v in (("upper rises", up_rise), ("lower falls", lo_fall)):
                if v > worst:
                    worst, where = float(v), dict(divergence=div, delta=delta, violation=name)
            # the grid values are the right ones: spot-check against the reference
            idx = np.linspace(0, ps.size - 1, 21).astype(int)
            for i in idx:   # closed forms: |Δr|/max(1, r) (FLOAT_VS_MP_TOL); KL bisection: in log r (FAST_KL_TOL)
                ref_lo, ref_up = ref_band.band_bounds_mp(mp_log_p(ps[i]), div, delta)
                if div == "kl":
                    e = max(log_error(lo[i], ref_lo), log_error(up[i], ref_up)) / FAST_KL_TOL
                else:
                    e = max(ratio_error(lo[i], ref_lo), ratio_error(up[i], ref_up)) / FLOAT_VS_MP_TOL
                fast_err = max(fast_err, e)
    ev = measures_evidence({"monotonicity violation (relative)": (max(worst, 0.0), MONOTONE_TOL),
                            "grid values vs reference (error/tolerance)": (fast_err, 1.0)}, 6 * ps.size,
                           f"kl/tv/chi2, δ ∈ {{0.05, 0.2}}, 20 001-point grid; "
                           f"{'largest violation ' + str(where) if where else 'no pair out of order'}; grid values "
                           f"spot-checked against band_bounds_mp at 21 points each")
    return ev


@monotone.check("numerics")
def _monotone_in_delta() -> Evidence:
    """Both ends move away from 1 as δ grows: r̄ non-decreasing, r̲ non-increasing, over δ ∈ [1e-4, 4]."""
    ps = np.concatenate([np.geomspace(1e-4, 0.5, 20), 1.0 - np.geomspace(1e-4, 0.5, 20)[::-1]])
    deltas = np.geomspace(1e-4, 4.0, 150)
    worst, where = 0.0, None
    for div in ref_band.DIVERGENCES:
        bounds = np.array([ref_band.band_bounds(ps, div, float(d)) for d in deltas])   # (δ, lower/upper, p)
        lo, up = bounds[:, 0, :], bounds[:, 1, :]
        up_fall = np.max(-np.diff(up, axis=0) / up[:-1])
        lo_rise = np.max(np.diff(lo, axis=0) / np.maximum(lo[:-1], np.finfo(float).tiny))
        for name, v in (("upper falls", up_fall), ("lower rises", lo_rise)):
            if v > worst:
                worst, where = float(v), dict(divergence=div, violation=name)
    return Evidence.within(max(worst, 0.0), MONOTONE_TOL, 3 * ps.size * deltas.size,
                           detail=f"40 p × 150 δ ∈ [1e-4, 4] per divergence: "
                                  f"{'largest relative violation ' + str(where) if where else 'no pair out of order'}")


@monotone.check("gpu")
def _monotone_torch() -> Evidence:
    lp = np.log(np.linspace(1e-4, 1 - 1e-4, 20001))
    violations, n = 0.0, 0
    for div in ("kl", "tv", "chi2"):
        for delta in (0.01, 0.05, 0.2):
            lo, up = (t.numpy() for t in band_bounds(as_torch(lp), div, delta))
            # Relative steps against the direction of the claim (0 when the claim holds exactly).
            violations = max(violations, float(np.max(np.maximum(np.diff(up), 0) / up[1:])),
                             float(np.max(np.maximum(-np.diff(lo), 0) / np.maximum(lo[:-1], 1e-300))))
            n += lp.size
        widen_lo, widen_up = [], []
        for delta in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5):
            lo, up = band_bounds(as_torch(lp), div, delta)
            widen_lo.append(lo.numpy()); widen_up.append(up.numpy())
        violations = max(violations, float(np.max(np.maximum(np.diff(np.stack(widen_lo), axis=0), 0))),
                         float(np.max(np.maximum(-np.diff(np.stack(widen_up), axis=0), 0))))
    # Evaluated ends carry ≲ 4 eps relative error, so a rounding-level reversal between neighbours is allowed.
    return Evidence.within(violations, 8 * EPS64, n, detail="20 001-point grid on p ∈ [1e-4, 1-1e-4]; r̄ non-increasing, "
                                                            "r̲ non-decreasing in p; both move away from 1 as δ grows")
