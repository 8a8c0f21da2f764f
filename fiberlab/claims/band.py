"""BandPO's claims (arXiv 2603.04918) and the canonical-clipping bottleneck it starts from.

Theorem numbers follow the authors' code comments (``Theorem 1``, ``Proposition 3``, ``Prop 4``);
statements are the reconstruction of the spec, checked here four ways. Notation: ``p = π_old(a|s)``,
``r = π_θ(a|s)/p``, ``g_f(p, r) = p f(r) + (1-p) f((1-rp)/(1-p))``, divergence
``D_f = E_{π_old}[f(π_θ/π_old)]`` (so KL is KL(π_old‖π_θ)).
"""

from fiberlab.registry import claim

reduction = claim(
    "band.reduction", paper="BandPO", source="BandPO Thm. 1",
    statement="max/min of Q(a)/P(a) over the simplex under D_f(P,Q) ≤ δ equals the scalar problem "
              "{r ∈ [0, 1/p] : g_f(p, r) ≤ δ}, and g_f(p, ·) is convex with minimum 0 at r = 1, "
              "so the band is an interval containing 1 that depends on P only through p.")

tv_closed_form = claim(
    "band.tv_closed_form", paper="BandPO", source="BandPO Prop. 4",
    statement="For TV, the band is [max(1 - δ/p, 0), min(1 + δ/p, 1/p)].")

chi2_closed_form = claim(
    "band.chi2_closed_form", paper="BandPO", source="BandPO Prop. 4",
    statement="For Pearson χ², the band is [max(1 - √(δ(1-p)/p), 0), min(1 + √(δ(1-p)/p), 1/p)].")

kl_bounds = claim(
    "band.kl_bounds", paper="BandPO", source="BandPO §3 (KL band)",
    statement="For KL(π_old‖π_θ), the band ends are the two roots of "
              "-p log r + (1-p) log((1-p)/(1-rp)) = δ in (0, 1) and (1, 1/p), one on each side of 1, computed by "
              "root finding; as functions of p they have no elementary closed form, but at rational p = a/b the "
              "equation is the polynomial r^a (b - a r)^(b-a) = (b-a)^(b-a) e^{-bδ} of degree b, so for "
              "denominator b ≤ 4 (p = 1/2, 1/3, 2/3, 1/4, 3/4) they are radicals; p = 1/2 is one of these: "
              "1 ± √(1 - e^{-2δ}).")

saturation = claim(
    "band.saturation", paper="BandPO", source="BandPO Prop. 3",
    statement="The upper bound equals the simplex edge 1/p iff g_f(p, 1/p) ≤ δ and the lower bound equals 0 "
              "iff g_f(p, 0) ≤ δ: TV saturates for p ≥ 1-δ (upper) and p ≤ δ (lower), χ² for p ≥ 1/(1+δ) "
              "and p ≤ δ/(1+δ), KL never.")

limits = claim(
    "band.limits", paper="BandPO", source="BandPO §3 (limits)",
    statement="As p → 1 the band tends to [r*, 1] with r* = e^{-δ} (KL), 1-δ (TV), 1 (χ²). As p → 0 the upper "
              "bound diverges and the upward probability margin p(r̄ - 1) tends to 1 - e^{-δ} (KL), δ (TV), "
              "and vanishes as √(δp) (χ²); the lower bound tends to 0.")

small_delta = claim(
    "band.small_delta", paper="BandPO", source="BandPO §3 (small-δ expansion)",
    statement="r̄, r̲ = 1 ± √(2δ(1-p)/(f''(1) p)) + O(δ); exact for χ², so KL at δ matches χ² at 2δ to first order.")

mirror = claim(
    "band.mirror", paper="BandPO", source="BandPO code (v1 KL solver), mirror identity",
    statement="For every f, g_f(p, r) = g_f(1-p, (1-rp)/(1-p)); hence r̲_f(p) = [1 - (1-p) r̄_f(1-p)] / p.")

monotone = claim(
    "band.monotone", paper="BandPO", source="BandPO §3 (monotonicity)",
    statement="r̄ is non-increasing and r̲ non-decreasing in p; both ends move away from 1 as δ grows.")

bottleneck = claim(
    "clip.bottleneck", paper="BandPO", source="BandPO §1 / P-clip",
    statement="Canonical clipping r ∈ [1-ε₋, 1+ε₊] lets π(a) rise by at most ε₊·p, which vanishes for tail "
              "tokens, and for p > 1/(1+ε₊) its upper bound exceeds the simplex edge 1/p.")

authors_bisection = claim(
    "band.authors_bisection", paper="BandPO", source="BandPO code: band/solver.py (universal_bisection_solver)",
    status="conditional",
    statement="The authors' 50-step bisection (tol 1e-6) computes the KL band.",
    condition="Holds to ~5e-7 in absolute terms, but not relatively for tail tokens: its clamp of r at 1e-12 "
              "flags the lower bound 'saturated' and returns exactly 0 when p ≲ δ/(log 10¹² - 1) (≈ 1.9e-3 at "
              "δ = 0.05), where the true r̲ ≈ e^{-δ/p} is positive; harmless for clipping, wrong as a bound.")
