"""Theory-layer checks of BandPO's claims: SymPy derivations compared with the statements.

Each check calls a derivation in :mod:`fiberlab.theory.band` and passes only if every difference it
returns simplifies to exactly ``0`` (and every sign it needs is decided by SymPy's assumptions), so
``max_error = 0.0`` and ``tolerance = 0.0``. Anything SymPy cannot reduce to ``0`` fails the check and
is listed in the detail.
"""

from __future__ import annotations

import sympy as sp

from fiberlab.claims.band import (authors_bisection, bottleneck, chi2_closed_form, kl_bounds, limits, mirror,
                                  monotone, reduction, saturation, small_delta, tv_closed_form)
from fiberlab.claims._symbolic import symbolic_evidence as _symbolic
from fiberlab.registry import Evidence
from fiberlab.theory import band as sym_band


# ---------------------------------------------------------------------------------------------
# band.reduction (BandPO Thm. 1)
# ---------------------------------------------------------------------------------------------
@reduction.check("theory")
def _jensen_proportional_completion() -> Evidence:
    """For generic f: Σ w_i t_i = s for every completion, and the proportional one attains g_f exactly."""
    out = {}
    for n in (2, 3, 5):                      # several numbers of other tokens
        out.update({f"{k} (n={n})": v for k, v in sym_band.reduction_jensen(n).items()})
    return _symbolic(out, detail="Jensen's mean is s for any completion and the proportional completion is a "
                                 "distribution attaining g_f, for n = 2, 3, 5 other tokens and generic f")


@reduction.check("theory")
def _g_convex_with_minimum_at_one() -> Evidence:
    """d²g/dr² = p f''(r) + p²/(1-p) f''(s) (positive weights), g(p,1) = f(1), ∂g/∂r(p,1) = 0, generic f."""
    out = sym_band.reduction_convexity()
    return _symbolic({k: out[k] for k in ("second_derivative", "value_at_one", "slope_at_one")},
                     {"weights p, p²/(1-p) positive": out["weights_positive"]},
                     detail="g_f'' = p f''(r) + p²/(1-p) f''(s) with positive weights; g_f(p,1) = f(1) = 0 and "
                            "∂g/∂r(p,1) = 0 for generic f")


@reduction.check("theory")
def _special_forms() -> Evidence:
    """g_KL = binary KL(Bern(p)‖Bern(rp)), g_TV = p|r-1|, g_χ² = p(r-1)²/(1-p) on both branches."""
    out = {f"{div} {side}": d for div, pair in sym_band.specialised_g().items()
           for side, d in zip(("r<1", "1<r<1/p"), pair)}
    return _symbolic(out, detail="spec §1.2 special forms hold on r < 1 and 1 < r < 1/p for kl, tv, chi2")


# ---------------------------------------------------------------------------------------------
# band.tv_closed_form, band.chi2_closed_form (BandPO Prop. 4)
# ---------------------------------------------------------------------------------------------
def _closed_form_evidence(divergence: str) -> Evidence:
    lo_diff, up_diff = sym_band.closed_form_vs_stated(divergence)
    lo_root, up_root = sym_band.branch_roots(divergence)
    # The clamps of Prop. 4 must switch on exactly at Prop. 3's saturation thresholds: solving
    # root = simplex edge for p has to give the same p as solving g_f(p, edge) = δ.
    # Solved in the odds k = (1-p)/p > 0 (so √ and signs are decided), then mapped back p = 1/(1+k).
    sat = sym_band.saturation_thresholds(divergence)
    up_edge = [1 / (1 + kk) for kk in sp.solve(sp.Eq(up_root.subs(sym_band.ON_UNIT_INTERVAL), 1 + sym_band.k), sym_band.k)]
    lo_edge = [1 / (1 + kk) for kk in sp.solve(sp.Eq(lo_root.subs(sym_band.ON_UNIT_INTERVAL), 0), sym_band.k)]
    ids = {"lower root - stated": lo_diff, "upper root - stated": up_diff}
    facts = {"one p where the upper root meets 1/p": len(up_edge) == 1,
             "one p where the lower root meets 0": len(lo_edge) == 1}
    if len(up_edge) == 1 and len(lo_edge) == 1:
        ids["upper clamp switch - Prop. 3 threshold"] = up_edge[0] - sat["upper"][0]
        ids["lower clamp switch - Prop. 3 threshold"] = lo_edge[0] - sat["lower"][0]
    return _symbolic(ids, facts, detail=f"solve(Eq(g_{divergence}, δ), r) on each branch gives "
                                        f"{sp.sstr(lo_root)}, {sp.sstr(up_root)} = Prop. 4; clamps switch at "
                                        f"Prop. 3's thresholds")


@tv_closed_form.check("theory")
def _tv_solve_matches_prop4() -> Evidence:
    return _closed_form_evidence("tv")


@chi2_closed_form.check("theory")
def _chi2_solve_matches_prop4() -> Evidence:
    return _closed_form_evidence("chi2")


# ---------------------------------------------------------------------------------------------
# band.kl_bounds
# ---------------------------------------------------------------------------------------------
@kl_bounds.check("theory")
def _kl_roots_unique_on_each_branch() -> Evidence:
    """∂g/∂r = p(r-1)/(r(1-rp)) has the sign of r-1, g'' > 0, g → ∞ at 0 and 1/p, g(p,1) = 0: one root per side."""
    out = sym_band.kl_root_structure()
    ids = {"∂g/∂r - p(r-1)/(r(1-rp))": out["slope_error"], "g(p, 1)": out["value_at_one"]}
    # p = 1/2 roots found by solve must satisfy the equation (they are used as a numerical check point);
    # compared as exp(-2(g - δ)) - 1, which is 0 iff g = δ, so that no log identity needs forcing.
    g_half = sym_band.g("kl").subs(sym_band.p, sp.Rational(1, 2))
    for i, root in enumerate(out["half_roots"]):
        ids[f"exp(-2(g(1/2, root {i}) - δ)) - 1"] = sp.expand(sp.exp(-2 * (g_half.subs(sym_band.r, root) - sym_band.delta))) - 1
    facts = {"(∂g/∂r)/(r-1) > 0 on 0 < r < 1/p": out["slope_over_r_minus_1_positive"],
             "∂²g/∂r² > 0 on 0 < r < 1/p": out["curvature_positive"],
             "g(p, 0+) = +oo": out["edge_values"][0] == sp.oo,
             "g(p, 1/p-) = +oo": out["edge_values"][1] == sp.oo,
             "two roots at p = 1/2": len(out["half_roots"]) == 2}
    found = "no closed form found by solve" if out["symbolic_solution"] is None \
        else f"solve returned {out['symbolic_solution']}"
    return _symbolic(ids, facts, detail="g_KL strictly decreasing on (0,1), strictly increasing on (1,1/p), "
                                        f"strictly convex, +oo at both ends: exactly one root per side for all "
                                        f"δ > 0; symbolic p: {found}; p = 1/2: roots {out['half_roots']}")


@kl_bounds.check("theory")
def _kl_radicals_at_rational_p() -> Evidence:
    """At p = a/b, b ≤ 4: e^{-b(g - δ)} - 1 = P(r) e^{bδ}/(b-a)^(b-a), deg P = b, and roots() solves P in radicals."""
    ids, facts, ends = {}, {}, []
    for pv in sym_band.STATED["kl_radical_ps"]:
        a, b, poly, identity = sym_band.kl_rational_polynomial(pv)
        out = sym_band.kl_radical_roots(pv)
        ids[f"p = {pv}: e^(-{b}(g - δ)) - 1 - P(r) e^({b}δ)/{(b - a) ** (b - a)}"] = identity
        facts[f"p = {pv}: deg P = {b} ≤ 4"] = out["degree"] == b <= 4
        facts[f"p = {pv}: roots() returns all {b} roots, none a CRootOf"] = out["n_roots"] == b and out["all_radical"]
        ends.append(f"p = {pv}: ({out['ends_in_simplex'][0]:.6f}, {out['ends_in_simplex'][1]:.6f})")
    half = sym_band.kl_radical_roots(sp.Rational(1, 2))
    for name, got, stated in zip(("lower", "upper"), (half["lower"], half["upper"]), sym_band.STATED["kl_half_roots"]):
        ids[f"p = 1/2 {name} radical - (1 ∓ √(1 - e^(-2δ)))"] = sp.simplify(got - stated)
    return _symbolic(ids, facts, detail="g_KL = δ at p = a/b is r^a (b - a r)^(b-a) = (b-a)^(b-a) e^{-bδ}, degree b: "
                                        "quadratic (1/2), cubic (1/3, 2/3), quartic (1/4, 3/4), all solved in "
                                        f"radicals by sympy.roots; ends at δ = {sym_band.KL_SELECT_DELTA}: "
                                        + "; ".join(ends))


# ---------------------------------------------------------------------------------------------
# band.saturation (BandPO Prop. 3)
# ---------------------------------------------------------------------------------------------
@saturation.check("theory")
def _saturation_thresholds_by_solve() -> Evidence:
    ids, facts = {}, {}
    for div in ("tv", "chi2"):
        th = sym_band.saturation_thresholds(div)
        stated_up, stated_lo = sym_band.STATED[f"{div}_saturation"]
        ids[f"{div} upper threshold - stated"] = th["upper"][0] - stated_up
        ids[f"{div} lower threshold - stated"] = th["lower"][0] - stated_lo
        facts[f"{div} upper saturates above the threshold"] = th["upper"][1] == ">="
        facts[f"{div} lower saturates below the threshold"] = th["lower"][1] == "<="
    kl = sym_band.saturation_thresholds("kl")
    facts["kl never saturates (g = +oo at both simplex edges)"] = (kl["upper"][1] == "never"
                                                                    and kl["lower"][1] == "never")
    return _symbolic(ids, facts, detail="solve(Eq(g_f(p, edge), δ), p) and the sign of d/dp give TV: p ≥ 1-δ, "
                                        "p ≤ δ; χ²: p ≥ 1/(1+δ), p ≤ δ/(1+δ); KL: g = +oo at 0 and 1/p")


# ---------------------------------------------------------------------------------------------
# band.limits
# ---------------------------------------------------------------------------------------------
@limits.check("theory")
def _limits_by_sympy() -> Evidence:
    ids = {}
    for div in sym_band.DIVERGENCES:
        one = sym_band.limit_p_to_1(div)
        zero = sym_band.limit_p_to_0(div)
        ids[f"{div}: r* - stated"] = one["r_star"] - sym_band.STATED["r_star"][div]
        ids[f"{div}: lim_(p→1) 1/p - 1"] = one["upper"] - 1
        for branch, val in zero["g_fixed_r"].items():
            ids[f"{div}: lim_(p→0) g(p, {branch})"] = val   # every fixed r > 0 becomes feasible
        if div == "chi2":
            ids["chi2: lim margin"] = zero["margin"]
            ids["chi2: lim margin/√(δp) - 1"] = zero["scaled_margin"] - 1
        else:
            ids[f"{div}: lim margin - stated"] = zero["margin"] - sym_band.STATED["margin_p_to_0"][div]
    ids["kl: lim_(p→1) g(p, r) + log r"] = sym_band.limit_p_to_1("kl")["g_limit"] + sp.log(sym_band.r)
    return _symbolic(ids, detail="p→1: r* = e^{-δ}, 1-δ, 1 and r̄ → 1; p→0: g(p, r) → 0 at fixed r (so r̲ → 0, "
                                 "r̄ → ∞), margin → 1-e^{-δ} (KL), δ (TV), 0 with margin/√(δp) → 1 (χ²)")


# ---------------------------------------------------------------------------------------------
# band.small_delta
# ---------------------------------------------------------------------------------------------
@small_delta.check("theory")
def _second_order_series() -> Evidence:
    out = sym_band.small_delta()
    _, b = sym_band.kl_second_order_root()
    ids = {k: out[k] for k in ("lower_order_terms", "coefficient_error", "halfwidth_error", "chi2_remainder",
                               "kl_vs_chi2")}
    facts = {"KL's O(δ) coefficient b(p) is finite for 0 < p < 1":
             bool(sp.simplify(b.subs(sym_band.ON_UNIT_INTERVAL)).is_finite)}
    return _symbolic(ids, facts, detail=f"g_f(p, 1+h) = f''(1) p/(2(1-p)) h² + O(h³) for generic f; exact for χ²; "
                                        f"KL(δ) half-width = χ²(2δ) half-width; KL next term b(p) = {sp.sstr(b)}")


# ---------------------------------------------------------------------------------------------
# band.mirror
# ---------------------------------------------------------------------------------------------
@mirror.check("theory")
def _mirror_identity_generic_f() -> Evidence:
    out = sym_band.mirror()
    ids = {"g_f(p, r) - g_f(1-p, s)": out["identity"],
           "r(s=0) - 1/p": out["edges"][0] - 1 / sym_band.p,
           "r(s=1/(1-p))": out["edges"][1]}
    ids.update({f"{div}: r̲(p) - [1-(1-p) r̄(1-p)]/p": d for div, d in out["closed_form_lower"].items()})
    facts = {"dr/ds < 0 (ends swap)": bool(sp.simplify(out["slope"].subs(sym_band.ON_UNIT_INTERVAL)).is_negative)}
    return _symbolic(ids, facts, detail=f"g_f(p, r) = g_f(1-p, s) for generic f; r = {sp.sstr(out['inverse'])} is "
                                        "decreasing in s and maps [0, 1/(1-p)] onto [1/p, 0]")


# ---------------------------------------------------------------------------------------------
# band.monotone
# ---------------------------------------------------------------------------------------------
@monotone.check("theory")
def _dg_dp_is_bregman() -> Evidence:
    out = sym_band.monotonicity()
    return _symbolic(out, detail="∂g/∂p = f(r) - f(s) - f'(s)(r - s) ≥ 0 (Bregman, convex f) and "
                                 "∂g/∂r = p(f'(r) - f'(s)) with s on the other side of 1: the band shrinks "
                                 "as p grows and grows with δ (∂r/∂δ = 1/g_r)")


# ---------------------------------------------------------------------------------------------
# clip.bottleneck
# ---------------------------------------------------------------------------------------------
@bottleneck.check("theory")
def _clip_margin_and_head_threshold() -> Evidence:
    out = sym_band.clip_bottleneck()
    ids = {"margin - ε p": out["margin_error"], "lim_(p→0) margin": out["margin_limit"],
           "threshold - 1/(1+ε)": out["threshold"] - sym_band.STATED["clip_threshold"],
           "1+ε - 1/p at the threshold": out["excess_at_threshold"]}
    return _symbolic(ids, {"1+ε - 1/p increasing in p": out["excess_slope_positive"]},
                     detail=f"margin = {sp.sstr(out['margin'])} → 0; 1+ε > 1/p exactly for p > "
                            f"{sp.sstr(out['threshold'])}")


# ---------------------------------------------------------------------------------------------
# band.authors_bisection (conditional: the clamp artifact)
# ---------------------------------------------------------------------------------------------
@authors_bisection.check("theory")
def _clamp_misfires_on_an_interval_of_tail_p() -> Evidence:
    """The clamped test E(p) = g_KL(p, c) ≤ δ holds on (0, p_c] with δ/(L+c) ≤ p_c ≤ δ/(L+c-1), L = log(1/c);
    there the authors return r̲ = 0 although g_KL(p, 0+) = +∞ (KL never saturates)."""
    out = sym_band.authors_clamp_edge()
    lower_end, upper_end = out["ends"]
    c = sym_band.AUTHORS_CLAMP
    # the condition's threshold δ/(log 10¹² - 1) is the right end with the +c term dropped: the relative gap
    # simplifies (symbolic c) to c/(log(1/c) + c - 1), then is evaluated at c = 1e-12 to 30 digits
    stated = sym_band.delta / (-sp.log(sym_band.clamp) - 1)
    relative_gap = sp.simplify((stated - upper_end) / stated).subs(sym_band.clamp, c).evalf(30)
    ids = {"E(p) - [p(log(1/c) + c) + (1-p) log(1-p)]": out["closed_form_error"],
           "lower end - δ/(log(1/c) + c)": lower_end - sym_band.delta / (-sp.log(sym_band.clamp) + sym_band.clamp),
           "upper end - δ/(log(1/c) + c - 1)": upper_end - sym_band.delta / (-sp.log(sym_band.clamp) + sym_band.clamp - 1)}
    facts = dict(out["facts"])
    facts["true g_KL(p, 0+) = +oo"] = sym_band.edge_values("kl")[0] == sp.oo
    facts["0 ≤ (stated edge - upper end)/stated ≤ c"] = bool(relative_gap >= 0) and bool(relative_gap <= c)
    ev = _symbolic(ids, facts, detail="the authors' clamped saturation test holds exactly on (0, p_c], "
                                      "δ/(log 1e12 + 1e-12) ≤ p_c ≤ δ/(log 1e12 - 1 + 1e-12) (the condition's "
                                      f"δ/(log 10¹² - 1) up to a relative {float(relative_gap):.1e}), where the "
                                      "true g_KL(p, 0+) = +∞, so the true r̲ > 0: the test misfires")
    d = 0.05
    ev.counterexample = {"delta": d, "p_c_between": [float(lower_end.subs({sym_band.clamp: c, sym_band.delta: d})),
                                                      float(upper_end.subs({sym_band.clamp: c, sym_band.delta: d}))],
                         "authors_lower": 0.0, "true_g_at_0": "inf"}
    return ev
