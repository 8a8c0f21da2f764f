"""BandPO's Band operator in SymPy: the reduction, the closed forms, saturation, limits, expansions.

Spec: ``spec/bandpo.md`` §1 (the operator) and §3 (the statements). Notation as in the paper's figures:
``p = π_old(a|s)``, ``r = π_θ(a|s)/p``, the other tokens rescaled by ``s = (1 - r p)/(1 - p)``, and

    g_f(p, r) = p f(r) + (1 - p) f(s)                                   (BandPO Thm. 1, spec §1.2)

Every function here *derives* its result (``simplify``, ``solve``, ``limit``, ``series``) and returns
what it derived: an expression, a ``solve`` result, a limit value. The checks (``fiberlab.claims``) hold the
identity: they write ``derived - stated`` and its zero test (``sp.simplify(...) == 0``) in one place. Nothing
is typed in here except the definitions (the generators, ``g_f``) and, in ``STATED``, the paper's statements
transcribed so that derivations can be compared against them.

Domain. SymPy cannot carry ``p < 1`` as an assumption, so where a proof needs ``0 < p < 1`` (the sign
of ``1 - p`` inside ``Abs``, ``sqrt`` or ``log``) it works in the odds ``k = (1 - p)/p > 0``, i.e.
``p = 1/(1 + k)``, which maps ``k ∈ (0, ∞)`` one-to-one onto ``p ∈ (0, 1)``; an identity in ``k`` for
all ``k > 0`` is the identity for all ``p ∈ (0, 1)``. Likewise ``r ∈ (0, 1/p)`` is written
``r = (1 + k)/(1 + m)`` with ``m > 0`` (``m = 1/(r p) - 1``); the branches ``r < 1`` and ``1 < r < 1/p``
are ``r = w/(1 + w)`` and ``r = 1 + k/(1 + w)`` with ``w > 0``. Where only the side of ``r = 1`` matters
(``solve`` on a branch), ``r = 1 ± t`` with ``t > 0``.
"""

import sympy as sp

# ---------------------------------------------------------------------------------------------
# Symbols (SymPy-tests style: every assumption the maths needs, none it does not)
# ---------------------------------------------------------------------------------------------
p = sp.Symbol("p", positive=True)          # π_old(a|s) ∈ (0, 1]
r = sp.Symbol("r", positive=True)          # ratio π_θ(a|s)/π_old(a|s) ∈ (0, 1/p]
delta = sp.Symbol("delta", positive=True)  # trust-region radius δ
eps = sp.Symbol("epsilon", positive=True)  # canonical clip ε₊
q = sp.Symbol("q", positive=True)          # new probability of a, q = r p (probability space)
s = sp.Symbol("s", positive=True)          # the complement ratio (1 - r p)/(1 - p) as a free variable
t = sp.Symbol("t", positive=True)          # distance from r = 1 on one branch: r = 1 ± t
h = sp.Symbol("h", real=True)              # expansion variable r = 1 + h
k = sp.Symbol("k", positive=True)          # odds (1 - p)/p, so p = 1/(1 + k) ∈ (0, 1)
j = sp.Symbol("j", positive=True)          # inverse odds p/(1 - p), so p = j/(1 + j) ∈ (0, 1)
m = sp.Symbol("m", positive=True)          # r p = 1/(1 + m) ∈ (0, 1), i.e. r ∈ (0, 1/p)
w = sp.Symbol("w", positive=True)          # position inside one branch (see LOWER_BRANCH, UPPER_BRANCH)
u = sp.Symbol("u", positive=True)          # argument of a generator
f = sp.Function("f")                       # a generic generator: convex, f(1) = 0 (spec §1.1)

DIVERGENCES = ("kl", "tv", "chi2")

ON_UNIT_INTERVAL = {p: 1 / (1 + k)}                # p ∈ (0, 1)
INVERSE_ODDS = {p: j / (1 + j)}                    # p ∈ (0, 1), with 1 - p = 1/(1 + j) (decides log(1 - p) < 0)
INSIDE_SIMPLEX = {p: 1 / (1 + k), r: (1 + k) / (1 + m)}  # p ∈ (0, 1) and r ∈ (0, 1/p)
LOWER_BRANCH = {r: w / (1 + w)}                    # r ∈ (0, 1) as w ranges over (0, ∞)
UPPER_BRANCH = {r: 1 + k / (1 + w)}                # r ∈ (1, 1 + k) = (1, 1/p), use with ON_UNIT_INTERVAL


def generator(divergence):
    """The generator ``f(u)`` of a registered divergence (spec §1.1 table, repo ``band.py``).

    ``kl``: ``-log u + u - 1`` (gives KL(π_old‖π_θ)); ``tv``: ``|u - 1|/2``; ``chi2``: ``(u - 1)²``
    (Pearson χ² with π_old in the denominator).
    """
    if divergence == "kl":
        return lambda x: -sp.log(x) + x - 1
    if divergence == "tv":
        return lambda x: sp.Abs(x - 1) / 2
    if divergence == "chi2":
        return lambda x: (x - 1) ** 2
    raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")


def complement(p_=p, r_=r):
    """``s = (1 - r p)/(1 - p)``: the common ratio of every other token under the proportional completion."""
    return (1 - r_ * p_) / (1 - p_)


def g_f(fn, p_=p, r_=r):
    """``g_f(p, r) = p f(r) + (1 - p) f((1 - r p)/(1 - p))`` (BandPO Thm. 1, spec §1.2)."""
    return p_ * fn(r_) + (1 - p_) * fn(complement(p_, r_))


def g(divergence, p_=p, r_=r):
    """``g_f`` for a named divergence, straight from the definition (``Abs`` and ``log`` unsimplified)."""
    return g_f(generator(divergence), p_, r_)


def _fprime(x, order=1):
    """``f^{(order)}(x)`` for the generic ``f``, written the way SymPy writes chain-rule derivatives."""
    return sp.diff(f(u), u, order).subs(u, x)


fpp_1 = sp.Symbol("fpp_1", positive=True)  # f''(1) > 0 of a generic (strictly convex at 1) f


def _name_fpp_1(expr):
    """Replace SymPy's ``Subs(Derivative(f(ξ), (ξ, 2)), ξ, 1)`` (any dummy ``ξ``) by the symbol ``fpp_1``."""
    def is_fpp_1(e):
        return (isinstance(e, sp.Subs) and e.point == (1,) and isinstance(e.expr, sp.Derivative)
                and e.expr.expr.func == f and e.expr.derivative_count == 2)
    return expr.replace(is_fpp_1, lambda e: fpp_1)


def f_second_at_one(divergence):
    """``f''(1)`` of a named generator, by differentiation (KL: 1, χ²: 2; TV has a kink at 1: ``nan``)."""
    value = sp.diff(generator(divergence)(u), u, 2).subs(u, 1)
    return sp.nan if value.has(sp.DiracDelta) or not value.is_finite else value


def _back_to_p(expr):
    """Undo the odds parametrisation ``p = 1/(1 + k)`` (``k = (1 - p)/p``)."""
    return sp.simplify(expr.subs(k, (1 - p) / p))


# ---------------------------------------------------------------------------------------------
# The paper's statements, transcribed (spec §1.2-§1.4, §3), for derivations to be compared against
# ---------------------------------------------------------------------------------------------
STATED = {
    # spec §1.2 "Special forms"
    "g_kl": p * sp.log(p / (r * p)) + (1 - p) * sp.log((1 - p) / (1 - r * p)),  # binary KL(Bern(p)‖Bern(rp))
    "g_tv": p * sp.Abs(r - 1),
    "g_chi2": p * (r - 1) ** 2 / (1 - p),
    # BandPO Prop. 4 (spec §1.4), unclamped roots (lower, upper)
    "tv_roots": (1 - delta / p, 1 + delta / p),
    "chi2_roots": (1 - sp.sqrt(delta * (1 - p) / p), 1 + sp.sqrt(delta * (1 - p) / p)),
    # BandPO Prop. 3 (spec §1.3): (upper saturates for p >= ..., lower saturates for p <= ...)
    "tv_saturation": (1 - delta, delta),
    "chi2_saturation": (1 / (1 + delta), delta / (1 + delta)),
    # spec §1.7 / §3 limits: r* as p -> 1 and the upward probability margin as p -> 0
    "r_star": {"kl": sp.exp(-delta), "tv": 1 - delta, "chi2": sp.Integer(1)},
    "margin_p_to_0": {"kl": 1 - sp.exp(-delta), "tv": delta},   # χ²: margin/√(δp) -> 1
    # BandPO §3 small-δ: r ≈ 1 ± √(2δ(1-p)/(f''(1) p))
    "small_delta_halfwidth": sp.sqrt(2 * delta * (1 - p) / (fpp_1 * p)),
    # P-clip: upward margin and head-token threshold
    "clip_margin": eps * p,
    "clip_threshold": 1 / (1 + eps),
    # band.kl_bounds: KL's ends at p = 1/2 (quadratic r(2 - r) = e^{-2δ}) and the rational p at which the
    # exponentiated equation is a polynomial of degree ≤ 4 in r, hence solvable in radicals (denominator ≤ 4)
    "kl_half_roots": (1 - sp.sqrt(1 - sp.exp(-2 * delta)), 1 + sp.sqrt(1 - sp.exp(-2 * delta))),
    "kl_radical_ps": tuple(sp.Rational(a, b) for b in (2, 3, 4) for a in range(1, b) if sp.gcd(a, b) == 1),
}


# ---------------------------------------------------------------------------------------------
# BandPO Thm. 1: the reduction to one scalar, convexity, minimum at r = 1
# ---------------------------------------------------------------------------------------------
def reduction_jensen(n_other=3):
    """BandPO Thm. 1, the Jensen step, for a generic ``f`` and ``n_other`` other tokens.

    With ``P = (p, P_1, …, P_n)`` (``P_n = 1 - p - Σ_{i<n} P_i``) and ``Q(a) = r p``, write
    ``w_i = P_i/(1 - p)`` and ``t_i = Q_i/P_i``. Then
    ``Σ_i P_i f(t_i) = (1 - p) Σ_i w_i f(t_i) ≥ (1 - p) f(Σ_i w_i t_i) = (1 - p) f(s)`` by Jensen, because
    ``Σ_i w_i t_i = Σ_i Q_i/(1 - p) = (1 - r p)/(1 - p) = s`` for every completion ``Q``. Equality holds
    for the proportional completion ``Q_i = P_i s`` (all ``t_i`` equal), which is a distribution.

    Returns the expressions the check compares (unsimplified):
      ``weighted_mean``: ``Σ w_i t_i`` for a completion with free ``Q_1..Q_{n-1}`` (to equal ``s``, :func:`complement`);
      ``total_mass``: ``Σ_x Q(x)`` for the proportional completion (to equal 1);
      ``D_prop``: ``D_f(P‖Q_prop)`` (to equal ``g_f(p, r)``, :func:`g_f`).
    """
    P = list(sp.symbols(f"P1:{n_other}", positive=True))
    P.append(1 - p - sum(P))
    Qfree = list(sp.symbols(f"Q1:{n_other}", positive=True))
    Qfree.append(1 - r * p - sum(Qfree))                     # any completion with Q(a) = r p, Σ Q = 1
    weights = [Pi / (1 - p) for Pi in P]
    weighted_mean = sum(w * (Qi / Pi) for w, Qi, Pi in zip(weights, Qfree, P))
    Qprop = [Pi * complement() for Pi in P]                  # Q(x) = P(x)(1 - r p)/(1 - p), x ≠ a
    total_mass = r * p + sum(Qprop)
    D_prop = p * f(r) + sum(Pi * f(Qi / Pi) for Pi, Qi in zip(P, Qprop))   # D_f = Σ_x P f(Q/P)
    return {"weighted_mean": weighted_mean, "total_mass": total_mass, "D_prop": D_prop}


def reduction_convexity():
    """BandPO Thm. 1, the scalar problem's shape, for a generic ``f``.

    ``d²g/dr² = p f''(r) + p²/(1 - p) f''(s)`` (so ``g_f(p, ·)`` is convex when ``f`` is: both weights are
    positive), ``g_f(p, 1) = f(1)`` (``= 0`` given ``f(1) = 0``) and ``∂g/∂r(p, 1) = 0`` (stationary, hence the
    minimum of a convex function). Returns the derived ``d2g_dr2`` (``∂²g/∂r²``), ``g_at_one`` and ``slope_at_one``,
    and the two ``weights`` of ``f''`` (the second in the odds parametrisation, so that its sign is decided).
    """
    G = g_f(f)
    return {
        "d2g_dr2": sp.diff(G, r, 2),
        "weights": (p, sp.simplify((p**2 / (1 - p)).subs(ON_UNIT_INTERVAL))),
        "g_at_one": G.subs(r, 1),
        "slope_at_one": sp.diff(G, r).subs(r, 1),
    }


def f_second(x):
    """``f''(x)`` of the generic ``f``, written the way SymPy writes it (for comparing derivatives)."""
    return _fprime(x, 2)


# ---------------------------------------------------------------------------------------------
# BandPO Prop. 4: TV and χ² closed forms by solve on each side of r = 1
# ---------------------------------------------------------------------------------------------
def branch_roots(divergence):
    """The roots of ``g_f(p, r) = δ`` on each side of ``r = 1``, by ``solve`` (BandPO Prop. 4).

    On the branch ``r = 1 ± t`` (``t > 0``) the simplified ``g_f`` is solved for ``t``; the positive
    solution gives the root. Returns ``(lower_root, upper_root)`` unclamped, in ``p`` and ``δ``.
    KL has no solution by ``solve`` (see :func:`kl_root_structure`) and raises ``ValueError``.
    """
    if divergence == "kl":
        raise ValueError("divergence 'kl' has no closed-form roots; see kl_root_structure()")
    roots = []
    for sign in (-1, 1):
        e = sp.simplify(g(divergence).subs(r, 1 + sign * t).subs(ON_UNIT_INTERVAL))
        sols = sp.solve(sp.Eq(e, delta), t)                 # t > 0 by assumption: the branch root
        if len(sols) != 1:
            raise ArithmeticError(f"expected one root on the branch, got {sols}")
        roots.append(_back_to_p(1 + sign * sols[0]))
    return tuple(roots)


def band_bounds(divergence):
    """The Band interval ``[max(r_-, 0), min(r_+, 1/p)]`` for TV and χ² (BandPO Prop. 4, spec §1.4).

    The clamp is the simplex: ``g_f(p, ·)`` is monotone on each branch, so when the root lies past the
    simplex edge (``0`` or ``1/p``) the whole branch up to the edge is feasible and the bound is the edge.
    """
    lo, up = branch_roots(divergence)
    return sp.Max(lo, 0), sp.Min(up, 1 / p)


# ---------------------------------------------------------------------------------------------
# BandPO Prop. 3: simplex saturation
# ---------------------------------------------------------------------------------------------
def edge_values(divergence):
    """``(g_f(p, 0), g_f(p, 1/p))`` for ``0 < p < 1`` (one-sided limits, so KL gives ``oo``)."""
    G = g(divergence).subs(ON_UNIT_INTERVAL)
    at0 = sp.limit(G, r, 0, "+")
    at_edge = sp.limit(G, r, 1 + k, "-")                     # 1/p = 1 + k
    return _back_to_p(at0), _back_to_p(at_edge)


def saturation_thresholds(divergence):
    """BandPO Prop. 3: where ``g_f(p, 1/p) ≤ δ`` (upper saturates) and ``g_f(p, 0) ≤ δ`` (lower saturates).

    ``solve(Eq(edge value, δ), p)`` gives the threshold; the sign of ``d/dp`` of the edge value gives the
    side (decreasing in ``p`` ⇒ saturated for ``p ≥`` threshold). Returns
    ``{"upper": (threshold, side), "lower": (threshold, side)}`` with side ``">="``/``"<="``, or
    ``(None, "never")`` when the edge value is ``+∞`` (KL: ``f(0) = +∞``).
    """
    out = {}
    for name, value in zip(("lower", "upper"), edge_values(divergence)):
        if value == sp.oo:
            out[name] = (None, "never")
            continue
        sols = sp.solve(sp.Eq(value, delta), p)
        if len(sols) != 1:
            raise ArithmeticError(f"expected one threshold, got {sols}")
        slope = sp.simplify(sp.diff(value, p).subs(ON_UNIT_INTERVAL))
        if slope.is_negative:
            side = ">="
        elif slope.is_positive:
            side = "<="
        else:
            raise ArithmeticError(f"edge value not monotone in p: slope {slope}")
        out[name] = (sp.simplify(sols[0]), side)
    return out


# ---------------------------------------------------------------------------------------------
# Limits p -> 1 and p -> 0 (spec §1.7, §3)
# ---------------------------------------------------------------------------------------------
def limit_p_to_1(divergence):
    """``r* = lim_{p→1} r̲(p)`` and ``lim_{p→1} r̄(p)`` (spec §1.7).

    KL: ``lim_{p→1} g_KL(p, r) = -log r`` (the ``(1 - p) f(s)`` term tends to ``1 - r``), so
    ``r* = solve(-log r = δ)``. TV/χ²: the limit of the clamped lower root. The upper bound is squeezed
    between ``1`` and ``1/p → 1``. Returns ``{"g_limit", "r_star", "upper"}``.
    """
    upper = sp.limit(1 / p, p, 1, "-")
    if divergence == "kl":
        glim = sp.limit(g("kl"), p, 1, "-")
        sols = sp.solve(sp.Eq(glim, delta), r)
        if len(sols) != 1:
            raise ArithmeticError(f"expected one r*, got {sols}")
        return {"g_limit": glim, "r_star": sols[0], "upper": upper}
    lo, _ = branch_roots(divergence)
    return {"g_limit": None, "r_star": sp.limit(lo, p, 1, "-"), "upper": upper}


def limit_p_to_0(divergence):
    """The upward probability margin ``p(r̄ - 1)`` as ``p → 0`` (spec §1.7, "Band resolves the bottleneck").

    KL: with ``q = r p`` fixed, ``lim_{p→0} g_KL(p, q/p) = -log(1 - q)``; the margin ``q - p → q`` solves
    ``-log(1 - q) = δ``. TV: ``lim p(r_+ - 1)``. χ²: the margin vanishes, ``lim p(r_+ - 1)/√(δ p) = 1``.
    Also ``lim_{p→0} g_f(p, r)`` at fixed ``r`` (``0`` ⇒ every fixed ``r > 0`` is eventually feasible, so
    ``r̲ → 0`` and ``r̄ → ∞``). Returns ``{"margin", "scaled_margin", "g_fixed_r"}``.
    """
    g_fixed_r = {br: sp.limit(g(divergence).subs(r, br), p, 0, "+") for br in (1 - t, 1 + t)}
    if divergence == "kl":
        glim = sp.limit(g("kl").subs(r, q / p), p, 0, "+")
        sols = sp.solve(sp.Eq(glim, delta), q)
        if len(sols) != 1:
            raise ArithmeticError(f"expected one margin, got {sols}")
        return {"g_limit": glim, "margin": sols[0], "scaled_margin": None, "g_fixed_r": g_fixed_r}
    _, up = branch_roots(divergence)
    margin = sp.limit(p * (up - 1), p, 0, "+")
    scaled = sp.limit(p * (up - 1) / sp.sqrt(delta * p), p, 0, "+")
    return {"g_limit": None, "margin": margin, "scaled_margin": scaled, "g_fixed_r": g_fixed_r}


# ---------------------------------------------------------------------------------------------
# Small-δ expansion (BandPO §3): g ≈ f''(1) p/(2(1-p)) (r-1)²
# ---------------------------------------------------------------------------------------------
def small_delta():
    """Second-order expansion of ``g_f`` at ``r = 1`` for a generic ``f`` (spec §1.4, §3).

    ``g_f(p, 1 + h) = f(1) + c h² + O(h³)`` with ``c = f''(1) p/(2(1 - p))``; with ``f(1) = 0`` the
    sublevel set ``c h² ≤ δ`` gives ``r ≈ 1 ± √(δ/c) = 1 ± √(2δ(1 - p)/(f''(1) p))``.
    ``f''(1)`` is the symbol :data:`fpp_1`. Returns ``series`` (the second-order series of ``g_f(p, 1 + h)`` in
    ``h``), ``coefficient`` (its ``h²`` coefficient ``c``) and ``halfwidth`` (``√(δ/c)``, in ``f''(1)``).
    """
    ser = _name_fpp_1(sp.series(g_f(f).subs(r, 1 + h), h, 0, 3).removeO())
    ser = sp.expand(sp.simplify(ser))
    c = sp.simplify(ser.coeff(h, 2))
    return {"series": ser, "coefficient": c, "halfwidth": sp.sqrt(delta / c)}


def kl_second_order_root():
    """The next term of the KL upper root, ``r̄ = 1 + a√δ + b δ + O(δ^{3/2})``, from the cubic series.

    Substituting ``h = a√δ + bδ`` into ``c₂ h² + c₃ h³ = δ`` and matching orders gives ``a = 1/√c₂`` and
    ``b = -c₃/(2 c₂²)`` (the same ``b`` for the lower root, ``h = -a√δ + bδ``). A non-zero ``b`` is why the
    small-δ error is ``Θ(δ)`` for KL (BandPO §3). It comes out as ``2(1 - 2p)/(3p)``, which vanishes at
    ``p = 1/2``: there ``g_KL`` is even in ``r - 1`` and the error is ``O(δ^{3/2})``, still ``O(δ)``.
    Returns ``(a, b)`` in ``p``.
    """
    ser = sp.expand(sp.simplify(sp.series(g("kl").subs(r, 1 + h), h, 0, 4).removeO()))
    c2, c3 = sp.simplify(ser.coeff(h, 2)), sp.simplify(ser.coeff(h, 3))
    return sp.simplify(1 / sp.sqrt(c2)), sp.simplify(-c3 / (2 * c2**2))


# ---------------------------------------------------------------------------------------------
# Mirror identity (v1 KL solver): g_f(p, r) = g_f(1 - p, s)
# ---------------------------------------------------------------------------------------------
def mirror():
    """Mirror identity for every ``f`` (spec §1.4) and its consequence for the lower bound.

    ``g_f(p, r) = g_f(1 - p, s)`` with ``s = (1 - r p)/(1 - p)``: the same two-point distribution seen
    from the other token. Inverting, ``r = (1 - (1 - p) s)/p``, which is *decreasing* in ``s``
    (``dr/ds = -(1 - p)/p``) and maps ``s ∈ [0, 1/(1 - p)]`` onto ``r ∈ [1/p, 0]``; so the sublevel set in
    ``s`` (the band at ``1 - p``) maps onto the band at ``p`` with ends swapped:
    ``r̲_f(p) = [1 - (1 - p) r̄_f(1 - p)]/p``.

    Returns ``g_mirrored`` (``g_f(1 - p, s)``, to equal ``g_f(p, r)``), ``inverse`` (the solved ``r(s)``), ``slope``
    (``dr/ds``), ``edges`` (``r`` at ``s = 0`` and ``s = 1/(1 - p)``), and ``closed_form_lower`` per TV/χ²: Prop. 4's
    lower root and the mirror ``[1 - (1 - p) r̄(1 - p)]/p`` of its upper root, as a pair.
    """
    sols = sp.solve(sp.Eq(s, complement()), r)
    if len(sols) != 1:
        raise ArithmeticError(f"expected one inverse, got {sols}")
    inverse = sols[0]
    slope = sp.simplify(sp.diff(inverse, s))
    edges = (sp.simplify(inverse.subs(s, 0)), sp.simplify(inverse.subs(s, 1 / (1 - p))))
    closed = {}
    for div in ("tv", "chi2"):
        lo, up = branch_roots(div)
        closed[div] = (lo, (1 - (1 - p) * up.subs(p, 1 - p)) / p)
    return {"g_mirrored": g_f(f, 1 - p, complement()), "inverse": inverse, "slope": slope, "edges": edges,
            "closed_form_lower": closed}


# ---------------------------------------------------------------------------------------------
# Monotonicity (BandPO §3): ∂g/∂p is a Bregman divergence
# ---------------------------------------------------------------------------------------------
def monotonicity():
    """Why ``r̄`` falls and ``r̲`` rises with ``p``, and both widen with ``δ``, for every convex ``f``.

    ``∂g/∂p = f(r) - f(s) - f'(s)(r - s)`` (using ``r - s = (r - 1)/(1 - p)``): a Bregman divergence of
    the convex ``f``, hence ``≥ 0``. So at fixed ``r`` the constraint tightens as ``p`` grows, the sublevel set
    ``{g ≤ δ}`` shrinks, and so does the simplex ``[0, 1/p]``: the band shrinks. Implicitly,
    ``∂r/∂p = -g_p/g_r`` and ``∂r/∂δ = 1/g_r`` with ``g_r = p (f'(r) - f'(s))``, whose sign is that of
    ``r - 1`` because ``s - 1 = -p (r - 1)/(1 - p)`` lies on the other side of 1 and ``f'`` is monotone.
    Returns ``(derived, stated)`` pairs: ``dg_dp`` (``∂g/∂p``, the Bregman term), ``dg_dr`` (``∂g/∂r``,
    ``p (f'(r) - f'(s))``), ``s_minus_1``, ``r_minus_s``; and ``bregman_kl``: KL's Bregman term and
    ``x - 1 - log x`` at ``x = r/s`` (non-negative), to be compared inside the simplex (:data:`INSIDE_SIMPLEX`).
    """
    G = g_f(f)
    bregman = f(r) - f(complement()) - _fprime(complement()) * (r - complement())
    fkl = generator("kl")
    x = r / complement()
    bregman_kl = fkl(r) - fkl(complement()) - sp.diff(fkl(u), u).subs(u, complement()) * (r - complement())
    return {"dg_dp": (sp.diff(G, p), bregman),
            "dg_dr": (sp.diff(G, r), p * (_fprime(r) - _fprime(complement()))),
            "s_minus_1": (complement() - 1, -p * (r - 1) / (1 - p)),
            "r_minus_s": (r - complement(), (r - 1) / (1 - p)),
            "bregman_kl": (bregman_kl, x - 1 - sp.log(x))}


# ---------------------------------------------------------------------------------------------
# KL: the two roots exist, are unique, and solve finds no closed form
# ---------------------------------------------------------------------------------------------
def kl_root_structure():
    """Why the KL band ends are exactly two roots, one in ``(0, 1)`` and one in ``(1, 1/p)`` (spec §1.4).

    ``∂g/∂r = p (r - 1)/(r (1 - r p))`` (derived, compared), which on ``0 < r < 1/p`` has the sign of
    ``r - 1``; ``∂²g/∂r² > 0`` there (strict convexity, shown positive in the ``k, m`` parametrisation);
    ``g → +∞`` at both ends and ``g(p, 1) = 0``. By continuity and strict monotonicity each branch crosses
    every ``δ > 0`` exactly once. ``solve`` finds no closed form for symbolic ``p``; for ``p = 1/2`` the
    equation is ``r(2 - r) = e^{-2δ}`` and ``solve`` gives ``1 ± √(1 - e^{-2δ})`` (a check point for the
    numerical roots).
    """
    G = g("kl")
    ratio = sp.simplify((sp.diff(G, r) / (r - 1)).subs(INSIDE_SIMPLEX))
    curvature = sp.simplify(sp.diff(G, r, 2).subs(INSIDE_SIMPLEX))
    ends = edge_values("kl")
    try:
        sols = sp.solve(sp.Eq(G, delta), r)
        symbolic_solution = sols
    except NotImplementedError:
        symbolic_solution = None
    half = sp.solve(sp.Eq(G.subs(p, sp.Rational(1, 2)), delta), r)
    return {"slope": sp.diff(G, r), "slope_over_r_minus_1_positive": bool(ratio.is_positive),
            "curvature_positive": bool(curvature.is_positive), "edge_values": ends,
            "value_at_one": G.subs(r, 1), "symbolic_solution": symbolic_solution,
            "half_roots": tuple(sorted(half, key=lambda e: float(e.subs(delta, 1))))}


# ---------------------------------------------------------------------------------------------
# KL at rational p: the equation is a polynomial in r, solvable in radicals when its degree is ≤ 4
# ---------------------------------------------------------------------------------------------
#: δ at which the radical roots are sorted into the band's ends (any δ > 0 would do: see kl_radical_roots)
KL_SELECT_DELTA = sp.Rational(1, 20)


def kl_rational_polynomial(p_value):
    """At ``p = a/b`` (lowest terms) the KL equation ``g_KL(p, r) = δ`` is the polynomial equation

        P(r) = r^a (b - a r)^(b-a) - (b - a)^(b-a) e^{-bδ} = 0,   of degree b in r.

    With ``1 - r p = (b - a r)/b`` and ``1 - p = (b - a)/b``, ``e^{-b g} = r^a ((b - a r)/(b - a))^(b-a)``, so
    ``e^{-b(g - δ)} - 1 = P(r) e^{bδ}/(b - a)^(b-a)``; since ``exp`` is one-to-one on the reals, ``g = δ`` iff
    ``P(r) = 0``, for ``r`` in the simplex ``(0, 1/p)`` (there ``g`` is real). Returns ``(a, b, P, lhs)`` with
    ``lhs = e^{-b(g - δ)} - 1`` expanded (to equal ``P(r) e^{bδ}/(b - a)^(b-a)``).
    """
    p_value = sp.Rational(p_value)
    a, b = int(p_value.p), int(p_value.q)
    poly = sp.expand(r**a * (b - a * r)**(b - a) - (b - a)**(b - a) * sp.exp(-b * delta))
    G = g("kl").subs(p, p_value)
    return a, b, poly, sp.expand(sp.exp(-b * (G - delta))) - 1


def kl_radical_roots(p_value):
    """The KL band's ends at rational ``p`` with denominator ≤ 4, in radicals of ``e^{-bδ}`` (``sympy.roots``).

    ``roots`` solves ``P`` (degree ``b ≤ 4``: Cardano, Ferrari) with every root a radical expression, no
    ``CRootOf``. ``P`` has exactly two roots in ``(0, 1/p)`` (``kl_root_structure``: one per side of 1), and the
    others lie outside (``r ≤ 0``, ``r ≥ 1/p`` or complex). Which radical expression is which end is read off
    at ``δ = KL_SELECT_DELTA`` with 30-digit ``evalf``. The set of roots cannot reorder as ``δ > 0`` varies
    (``P' = a b r^(a-1) (b - a r)^(b-a-1) (1 - r)`` vanishes only at ``r ∈ {0, 1, b/a}``, where ``P ≠ 0`` for
    ``δ > 0``, so no two roots meet), but a formula with principal-branch cube roots could still swap labels;
    the numerics and gpu checks confirm the labels at every ``δ`` they test. For ``b = 3`` all three roots
    are real (casus irreducibilis), so the radicals pass through complex numbers and evaluate with imaginary
    parts at rounding level. Returns ``{"lower", "upper", "degree", "n_roots", "all_radical", "ends_in_simplex"}``.
    """
    p_value = sp.Rational(p_value)
    a, b, poly, _ = kl_rational_polynomial(p_value)
    found = sp.roots(sp.Poly(poly, r))
    at = {e: complex(e.subs(delta, KL_SELECT_DELTA).evalf(30)) for e in found}
    tiny = 1e-20
    lower = [e for e, z in at.items() if abs(z.imag) < tiny and 0 < z.real < 1]
    upper = [e for e, z in at.items() if abs(z.imag) < tiny and 1 < z.real < 1 / float(p_value)]
    if len(lower) != 1 or len(upper) != 1:
        raise ArithmeticError(f"p = {p_value}: expected one root per side of 1 in (0, 1/p), got {at}")
    return {"lower": lower[0], "upper": upper[0], "degree": sp.degree(poly, r),
            "n_roots": sum(found.values()), "all_radical": not any(e.has(sp.CRootOf, sp.RootOf) for e in found),
            "ends_in_simplex": (at[lower[0]].real, at[upper[0]].real)}


# ---------------------------------------------------------------------------------------------
# P-clip: the bottleneck of canonical clipping
# ---------------------------------------------------------------------------------------------
def clip_bottleneck():
    """Canonical clipping ``r ∈ [1 - ε₋, 1 + ε₊]`` (BandPO §1, P-clip).

    The upward probability margin is ``p(1 + ε₊) - p = ε₊ p``, which ``→ 0`` as ``p → 0``; the ratio bound
    crosses the simplex edge where ``p(1 + ε₊) = 1``, i.e. ``p = 1/(1 + ε₊)`` by ``solve``, and
    ``1 + ε₊ - 1/p`` is increasing in ``p`` (derivative ``1/p²``), so it exceeds ``1/p`` exactly above.
    Returns ``margin``, ``margin_limit``, ``threshold``, ``excess_at_threshold`` and ``excess_slope_positive``.
    """
    margin = sp.simplify(p * (1 + eps) - p)
    sols = sp.solve(p * (1 + eps) - 1, p)
    if len(sols) != 1:
        raise ArithmeticError(f"expected one threshold, got {sols}")
    excess = 1 + eps - 1 / p
    return {"margin": margin,
            "margin_limit": sp.limit(margin, p, 0, "+"), "threshold": sols[0],
            "excess_at_threshold": sp.simplify(excess.subs(p, sols[0])),
            "excess_slope_positive": bool(sp.diff(excess, p).is_positive)}


# ---------------------------------------------------------------------------------------------
# The authors' solver (band/solver.py): the clamp artifact of the saturation test
# ---------------------------------------------------------------------------------------------
clamp = sp.Symbol("c", positive=True)   # the authors' clamp r, comp ≥ c (c = 1e-12 in the repo)
AUTHORS_CLAMP = sp.Rational(1, 10**12)


def authors_clamp_edge():
    """Where the authors' KL saturation test misfires (spec §1.5 "clamp artifact", repo ``_safe_g_f``).

    The test evaluates ``g_KL(p, 0)`` with ``r`` clamped to ``c``: ``E(p) = p f(c) + (1 - p) f(1/(1 - p))``,
    which simplifies to ``p (log(1/c) + c) + (1 - p) log(1 - p)``. ``E(0) = 0`` and ``E`` is increasing, so
    ``{E ≤ δ}`` is an interval ``(0, p_c]``: there the lower bound is flagged "saturated" and set to exactly 0,
    although the true ``g_KL(p, 0) = +∞`` (KL never saturates). Since ``-p ≤ (1 - p) log(1 - p) ≤ 0``,
    ``p (L + c - 1) ≤ E(p) ≤ p (L + c)`` with ``L = log(1/c)``, hence
    ``δ/(L + c) ≤ p_c ≤ δ/(L + c - 1)`` — the condition's ``δ/(log 10¹² - 1)`` is the right end with ``c``
    dropped. Returns ``E`` and its closed form ``edge_value`` (to be compared in the odds parametrisation), the
    facts used, and the two ends ``(lower_end, upper_end)``.
    """
    fkl = generator("kl")
    E = p * fkl(clamp) + (1 - p) * fkl(1 / (1 - p))
    closed = p * (-sp.log(clamp) + clamp) + (1 - p) * sp.log(1 - p)
    slack = (1 - p) * sp.log(1 - p) + p                  # E - p (L + c - 1)
    minus_log_1mp = sp.simplify((-sp.log(1 - p)).subs(INVERSE_ODDS))     # = log(1 + j) > 0
    L_c_minus_1 = (-sp.log(clamp) + clamp - 1).subs(clamp, AUTHORS_CLAMP)  # a number: log 1e12 - 1 + 1e-12
    facts = {
        "E(0) = 0": sp.simplify(closed.subs(p, 0)) == 0,
        "slack(0) = 0": sp.simplify(slack.subs(p, 0)) == 0,
        "d slack/dp = -log(1-p)": sp.simplify(sp.diff(slack, p) + sp.log(1 - p)) == 0,
        "-log(1-p) > 0": bool(minus_log_1mp.is_positive),
        "(1-p) log(1-p) < 0": bool(sp.simplify(((1 - p) * sp.log(1 - p)).subs(INVERSE_ODDS)).is_negative),
        "dE/dp = (L + c - 1) - log(1-p)": sp.simplify(sp.diff(closed, p) - (-sp.log(clamp) + clamp - 1)
                                                      + sp.log(1 - p)) == 0,
        "L + c - 1 > 0 at c = 1e-12": bool(L_c_minus_1.is_positive),
    }
    lower_end = sp.solve(sp.Eq(p * (-sp.log(clamp) + clamp), delta), p)
    upper_end = sp.solve(sp.Eq(p * (-sp.log(clamp) + clamp - 1), delta), p)
    if len(lower_end) != 1 or len(upper_end) != 1:
        raise ArithmeticError(f"expected one end each, got {lower_end}, {upper_end}")
    return {"E": E, "facts": facts, "ends": (lower_end[0], upper_end[0]),
            "edge_value": closed}


def lambdify_mp(expr, *args):
    """``expr`` as an mpmath function of ``args`` (for numerical checks against derived expressions)."""
    return sp.lambdify(args, expr, modules="mpmath")


# ---------------------------------------------------------------------------------------------
# band.trust_region: what clipping every sampled token to its Band implies for the whole state
# ---------------------------------------------------------------------------------------------
STATED["trust_region_chi2_term"] = (1 - p) * delta        # χ²: P_i f(r_i) at a Band end, unclamped
STATED["trust_region_tv_term"] = delta / 2                # TV: P_i f(r_i) at a Band end, unclamped
P_j = sp.Symbol("P_j", positive=True)      # π_old of the unsampled action that takes all the unsampled mass
a_rest = sp.Symbol("a", positive=True)      # π_old mass of the other unsampled actions (|U| ≥ 2 ⇒ a > 0)
# Unsampled floor max_j P_j f(P_U/P_j) + (P_U - P_j) f(0), with P_U = P_j + a
STATED["trust_region_floor"] = {"tv": a_rest, "chi2": (P_j + a_rest) * a_rest / P_j, "kl": sp.oo}


def trust_region_per_token():
    """Per-token terms of ``D_f(P‖Q) = Σ_i P_i f(r_i)`` when every ``r_i`` is in its Band (``g_f(P_i, r_i) ≤ δ``).

    * generic ``f``: ``P_i f(r_i) = g_f(P_i, r_i) - (1 - P_i) f(s_i)`` (the definition of ``g_f``), and ``f ≥ 0`` for
      the three generators (``f(1) = 0`` is the minimum: ``f'(1) = 0``, ``f'' ≥ 0``), so ``P_i f(r_i) ≤ δ``;
    * χ²: ``p f(r) = (1 - p) g_χ²(p, r)``, so the term at a Band end is ``(1 - p) δ``;
    * TV: ``p f(r) = g_TV(p, r)/2`` (on both branches), so the term at a Band end is ``δ/2``;
    * ``K = 2``: ``D_f((p, 1-p) ‖ (rp, 1-rp)) = g_f(p, r)`` for generic ``f`` — one sampled token's Band *is* the
      trust region of a binary state.

    Returns ``{"identities": name -> (derived, stated), "facts": name -> bool}``; each pair is written where its
    signs are decided (odds parametrisation, one branch of ``r``), for the check to compare.
    """
    fc = generator("chi2")
    ft = generator("tv")
    ids = {
        "generic: p f(r) - (g_f - (1-p) f(s))": (p * f(r), g_f(f) - (1 - p) * f(complement())),
        "chi2: p f(r) - (1-p) g": ((p * fc(r)).subs(ON_UNIT_INTERVAL), ((1 - p) * g("chi2")).subs(ON_UNIT_INTERVAL)),
        "chi2: term at g = δ - (1-p) δ": (((1 - p) * g("chi2")).subs(r, 1 + sp.sqrt(delta * (1 - p) / p)),
                                          STATED["trust_region_chi2_term"]),
        "K = 2: D_f((p,1-p)‖(rp,1-rp)) - g_f": (p * f(r * p / p) + (1 - p) * f((1 - r * p) / (1 - p)), g_f(f)),
    }
    for name, sub in (("r<1", LOWER_BRANCH), ("1<r<1/p", UPPER_BRANCH)):
        ids[f"tv {name}: p f(r) - g/2"] = ((p * ft(r)).subs(sub).subs(ON_UNIT_INTERVAL),
                                           (g("tv") / 2).subs(sub).subs(ON_UNIT_INTERVAL))
    ids["tv: term at g = δ - δ/2"] = ((g("tv") / 2).subs(r, 1 + delta / p).subs(ON_UNIT_INTERVAL),
                                      STATED["trust_region_tv_term"])
    facts = {}
    for div in DIVERGENCES:
        fn = generator(div)
        # f ≥ 0 with minimum at 1: convex (f'' ≥ 0 off the kink), f(1) = 0, and 1 is a stationary point or a kink
        second = sp.diff(fn(u), u, 2)
        convex = (second.subs(sp.DiracDelta(u - 1), 0) if div == "tv" else second)
        facts[f"{div}: f(1) = 0"] = sp.simplify(fn(sp.Integer(1))) == 0
        facts[f"{div}: f'' >= 0"] = bool(sp.simplify(convex).is_nonnegative)
        left = sp.limit(sp.diff(fn(u), u), u, 1, "-")
        right = sp.limit(sp.diff(fn(u), u), u, 1, "+")
        facts[f"{div}: 0 is a subgradient at 1"] = bool(left <= 0) and bool(right >= 0)
    return {"identities": ids, "facts": facts}


def trust_region_unsampled_floor():
    """The divergence the unsampled actions alone can reach, whatever δ is.

    Pin every sampled action at ``Q_i = P_i`` (inside every Band, even at δ = 0) and put all the unsampled mass
    ``P_U = P_j + a`` on one unsampled action ``j`` (the other unsampled actions, total ``a > 0``, get 0):
    ``D_f = P_j f(P_U/P_j) + a f(0)``. This is ``a`` (TV), ``(P_j + a) a/P_j`` (χ²), ``+∞`` (KL, ``f(0) = +∞``).
    Returns ``{"identities": name -> (derived, stated), "facts", "floor": {div: expr}}``.
    """
    Pj, a = P_j, a_rest
    PU = Pj + a
    floors, ids = {}, {}
    for div in DIVERGENCES:
        fn = generator(div)
        f0 = sp.limit(fn(u), u, 0, "+")
        floors[div] = sp.oo if f0 == sp.oo else sp.simplify(Pj * fn(PU / Pj) + a * f0)
    stated = STATED["trust_region_floor"]
    for div in ("tv", "chi2"):
        ids[f"{div}: floor - stated"] = (floors[div], stated[div])
    facts = {"kl: f(0) = +oo": floors["kl"] == stated["kl"],
             "tv floor > 0": bool(floors["tv"].is_positive), "chi2 floor > 0": bool(floors["chi2"].is_positive),
             "floors do not depend on delta": not any(sp.sympify(v).has(delta) for v in floors.values())}
    return {"identities": ids, "facts": facts, "floor": floors}


def trust_region_uniform_sup():
    """Every action sampled, ``P`` uniform on ``K`` (``p = 1/K``), ``K`` even, no Band end clamped.

    Half the actions at their upper end, half at their lower end is a vertex of the clipped polytope (the sum is
    still 1, by the symmetry of the unclamped χ² and TV Bands). There ``D_χ² = K · (1 - p) δ = (K - 1) δ``, which is
    the per-token bound ``Σ (1 - P_i) δ`` — so it is the supremum; ``D_TV = K · δ/2``, which meets the pairing bound
    ``⌊K/2⌋ δ`` (TV = total increase = total decrease, each token moving ``≤ δ``). No clamp means
    ``√(δ p (1-p)) ≤ p`` (χ², i.e. ``δ ≤ 1/(K-1)``) and ``δ ≤ p`` (TV, i.e. ``δ ≤ 1/K``).
    Returns ``{"identities": name -> (derived, stated), "chi2", "tv", "chi2_delta_max", "tv_delta_max", "K"}``.
    """
    K = sp.Symbol("K", positive=True, integer=True)
    pu = 1 / K
    half_chi2 = sp.sqrt(delta * pu * (1 - pu))            # |Δπ| at the χ² Band ends (Prop. 4)
    chi2 = sp.simplify(K * half_chi2 ** 2 / pu)
    tv = sp.simplify(K * delta / 2)
    chi2_max = sp.solve(sp.Eq(half_chi2, pu), delta)
    return {"identities": {"chi2: K (Δπ)²/p - (K-1)δ": (chi2, (K - 1) * delta),
                           "chi2: sum of per-token bounds - (K-1)δ": (K * (1 - pu) * delta, (K - 1) * delta),
                           "tv: K δ/2 - (K/2) δ": (tv, K / 2 * delta)},
            "chi2": chi2, "tv": tv, "chi2_delta_max": chi2_max, "tv_delta_max": pu, "K": K}
