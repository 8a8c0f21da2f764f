r"""FiberPO's trust-region part in SymPy: the TRPO radius, its γ → 1 collapse, APC-Obj's clip, and the GSPO scale.

Spec: ``spec/fiberpo.md`` §2.1-§2.8 (FiberPO, arXiv 2603.08239: Eq. 1/55-56/76, Thm 2.1/B.3, Def. 3.2/C.1,
App. C.2, C.5, C.6, D.2-D.4). Every function *derives* its result (``diff``, ``solve``, ``limit``, ``series``,
case substitution) and returns what a check compares: a dict ``name -> expression that must simplify to 0``,
limit values, or facts.

TV convention (spec A2): the surrogate-gap bound and ``δ^(TRPO)`` use the textbook ``D_TV = ½ Σ|π - π'|``; the
APC-Obj budgets use the estimator ``D̂_TV(s) = (1/T_s) Σ n|r - 1|`` without ½ (Eq. 39). The symbolic statements
here are about the formulas as written and do not depend on the convention, except :func:`gspo_scale`, whose
``√(ε/2)`` is in the ½ convention.
"""

import sympy as sp

gamma = sp.Symbol("gamma", positive=True)      # discount γ ∈ (0, 1]
t = sp.Symbol("t", nonnegative=True)           # TV radius (the common D̂_TV at the optimum, Thm D.3)
M = sp.Symbol("M", nonnegative=True)           # M of Thm D.3
A_inf = sp.Symbol("A_inf", positive=True)      # ‖Â‖_∞ (> 0, else every update is trivial)


def _zero_piecewise(e):
    """Rewrite Min/Max/Abs/sign as Piecewise, fold and simplify: a case analysis SymPy can close."""
    return sp.simplify(sp.piecewise_fold(e.rewrite(sp.Piecewise)))


def clip(x, lo, hi):
    """``min(max(x, lo), hi)``."""
    return sp.Min(sp.Max(x, lo), hi)


# ---------------------------------------------------------------------------------------------
# Eq. 1/56/76, Lemma B.2, Thm D.3: the minoriser in the radius and its maximiser
# ---------------------------------------------------------------------------------------------
def minoriser(gamma_=gamma):
    """``j(t) = t M/(1-γ) - 4γ‖A‖ t²/(1-γ)²``: Eq. 68 along ``Δ = t Δ̂*`` (Thm D.3) and Eq. 56's minoriser."""
    return t * M / (1 - gamma_) - 4 * gamma_ * A_inf * t ** 2 / (1 - gamma_) ** 2


def trpo_radius():
    """Maximise :func:`minoriser` over ``t`` (for ``γ < 1``, substituted as ``γ = 1/(1+k)``, ``k > 0``).

    Returns ``{"t_star", "delta_trpo", "identities", "facts"}``: the unique stationary point ``t*`` from
    ``solve(dj/dt)``; identities ``t* - (1-γ)M/(8γ‖A‖)`` and ``δ^(TRPO) - (1-γ)/(8γ)`` where ``δ^(TRPO)`` is ``t*`` at
    ``M = ‖A‖`` (the largest M allowed by Lemma D.2), and ``δ^(TRPO) - t* - (1-γ)(‖A‖ - M)/(8γ‖A‖)`` (so
    ``t* ≤ δ^(TRPO)`` iff ``M ≤ ‖A‖``); facts: one stationary point, ``j'' < 0``."""
    k = sp.Symbol("k", positive=True)              # γ = 1/(1+k) ∈ (0, 1)
    g = 1 / (1 + k)
    j = minoriser(g)
    sols = sp.solve(sp.diff(j, t), t)
    t_star = sols[0] if len(sols) == 1 else sp.nan
    second = sp.simplify(sp.diff(j, t, 2))
    delta = sp.simplify(t_star.subs(M, A_inf))
    back = {k: (1 - gamma) / gamma}                # 1/(1+k) = γ  ⇔  k = (1-γ)/γ
    t_g, d_g = sp.simplify(t_star.subs(back)), sp.simplify(delta.subs(back))
    identities = {
        "t* - (1-γ)M/(8γ‖A‖)": t_g - (1 - gamma) * M / (8 * gamma * A_inf),
        "δ_TRPO - (1-γ)/(8γ)": d_g - (1 - gamma) / (8 * gamma),
        "δ_TRPO - t* - (1-γ)(‖A‖-M)/(8γ‖A‖)": d_g - t_g - (1 - gamma) * (A_inf - M) / (8 * gamma * A_inf),
    }
    identities["j(t*) - M²/(16γ‖A‖)"] = sp.simplify(sp.simplify(j.subs(t, t_star)).subs(back)) - \
        M ** 2 / (16 * gamma * A_inf)
    facts = {"exactly one stationary point": len(sols) == 1,
             "j''(t) < 0 (concave)": sp.ask(sp.Q.negative(second)) is True}
    return {"t_star": t_g, "delta_trpo": d_g, "identities": identities, "facts": facts, "second": second}


def gamma1_limits():
    """Thm 2.1/B.3: ``lim_{γ→1⁻} δ^(TRPO) = 0``, ``δ^(TRPO)(1) = 0``, ``lim_{γ→1⁻} 4γ/(1-γ)² = ∞``, and
    ``lim_{γ→1⁻} t* = 0`` for every fixed ``M, ‖A‖``. Returns ``name -> (value, expected)``."""
    delta = (1 - gamma) / (8 * gamma)
    t_star = (1 - gamma) * M / (8 * gamma * A_inf)
    return {
        "lim δ_TRPO (γ→1⁻)": (sp.limit(delta, gamma, 1, "-"), 0),
        "δ_TRPO at γ = 1": (delta.subs(gamma, 1), 0),
        "lim 4γ/(1-γ)² (γ→1⁻)": (sp.limit(4 * gamma / (1 - gamma) ** 2, gamma, 1, "-"), sp.oo),
        "lim t* (γ→1⁻)": (sp.limit(t_star, gamma, 1, "-"), 0),
        "dδ_TRPO/dγ = -1/(8γ²) < 0": (sp.simplify(sp.diff(delta, gamma) + 1 / (8 * gamma ** 2)), 0),
    }


def zero_tv_is_identity(K=3):
    """``D_TV(p, q) = 0 ⇒ p = q`` for ``K`` probabilities: ``solve(½ Σ|p - q| = 0)`` over reals has only
    ``p = q`` (solved coordinatewise, as ``|d_k| ≥ 0`` and a sum of non-negatives vanishes only if each does).
    Returns the solution set of ``Σ_k |d_k| = 0`` for real ``d`` (must be ``{d = 0}``)."""
    d = sp.symbols(f"d1:{K + 1}", real=True)
    # Each |d_k| ≥ 0 and the sum is 0, so each |d_k| = 0; solve that system.
    sols = sp.solve([sp.Abs(v) for v in d], d, dict=True)
    return sols


# ---------------------------------------------------------------------------------------------
# App. C.2: APC-Obj clip, regimes, soft-thresholding
# ---------------------------------------------------------------------------------------------
def apc_regimes_and_soft_threshold():
    """Case analysis of Eq. 3's clip for one token with deviation ``x = σa`` (``a = |Δ| > 0``, ``σ = ±1``), the other
    tokens at its state consuming ``O ≥ 0``, ``T_s = T > 0``, radius ``δ``: ``T D̂ = a + O``,
    ``B = Tδ - O``, ``λ = T(D̂ - δ)⁺``.

    Returns ``(identities, facts)``:

    * ``B - (a - T(D̂ - δ))`` = 0: the bound is own deviation minus the state's excess (spec §2.4);
    * the paper's rollback test ``a/T > D̂ - δ`` is ``B/T > 0`` exactly: ``T(a/T - (D̂ - δ)) - B`` = 0;
    * in each regime, parametrised so its conditions hold by construction — (P) ``Tδ = a + O + p``;
      (R) ``Tδ = O + a w/(1+w)`` (so ``0 < B < a``); (Z) ``O = Tδ + z`` (so ``B < 0``), ``p, w, z > 0`` (the
      boundaries ``B = a``, ``B = 0`` are limits where neighbouring regimes give the same value) —
      ``clip(x, -B⁺, B⁺)`` minus the regime's value (``x``; ``σB``; ``0``) and minus the soft-threshold
      ``σ max(a - λ, 0)``, for ``σ = ±1``. All simplify to 0."""
    a, T, p, w, z, O, dl = sp.symbols("a T p w z O delta", positive=True)
    ids = {}
    Dhat = (a + O) / T
    B = T * dl - O
    ids["B - (|Δ| - T(D̂-δ))"] = B - (a - T * (Dhat - dl))
    ids["T(|Δ|/T - (D̂-δ)) - B"] = sp.expand(T * (a / T - (Dhat - dl)) - B)
    regimes = {
        "P": ({dl: (a + O + p) / T}, lambda sg, Bv: sg * a),
        "R": ({dl: (O + a * w / (1 + w)) / T}, lambda sg, Bv: sg * Bv),
        "Z": ({O: T * dl + z}, lambda sg, Bv: 0),
    }
    for name, (sub, value) in regimes.items():
        for sg in (1, -1):
            Bv = sp.simplify(B.subs(sub))
            lam = sp.simplify((T * sp.Max(Dhat - dl, 0)).subs(sub))
            x = sg * a
            clipped = clip(x, -sp.Max(Bv, 0), sp.Max(Bv, 0))
            soft = sg * sp.Max(a - lam, 0)
            ids[f"({name}, σ={sg:+d}) clip - regime value"] = sp.simplify(clipped - value(sg, Bv))
            ids[f"({name}, σ={sg:+d}) clip - soft-threshold"] = sp.simplify(clipped - soft)
    # In rollback the clipped value σB = σ(Tδ - O) does not contain the token's own |Δ| (spec §2.4 gradient note).
    Bv_R = sp.simplify(B.subs(regimes["R"][0]))
    facts = {"rollback value independent of own deviation": sp.diff(B, a) == 0,
             "rollback bound 0 < B < |Δ|": sp.ask(sp.Q.positive(Bv_R)) is True
             and sp.ask(sp.Q.positive(sp.simplify(a - Bv_R))) is True}
    return ids, facts


# ---------------------------------------------------------------------------------------------
# Thm D.3 / Lemma D.2 (per-state LP) and A1 (two radii)
# ---------------------------------------------------------------------------------------------
def per_state_lp_vertex():
    """The per-state unit-TV vertex of Eq. 69 for two sampled actions (the smallest case; ``n_1, n_2`` copies,
    advantages ``A_1 > A_2`` centred by ``n_1 A_1 + n_2 A_2 = 0``): solve the two constraints
    ``n_1 Δ_1 + n_2 Δ_2 = 0`` and ``(n_1|Δ_1| + n_2|Δ_2|)/T = 1`` with ``Δ_1 > 0``; returns identities
    ``value - T(A_1 - A_2)/2`` (Lemma D.2's ``M(s)``), the mass on the arg max, and
    ``max(a, b) - (a + b)/2 = |a - b|/2 ≥ 0`` with ``a = max Â``, ``b = -min Â``, i.e. ``M(s)/T_s ≤ ‖Â‖_∞``
    (Lemma D.2)."""
    n1, n2, A1, d1 = sp.symbols("n1 n2 A1 Delta1", positive=True)
    T = n1 + n2
    A2 = -n1 * A1 / n2                    # centring (66)
    d2 = -n1 * d1 / n2                    # probability constraint (65); Δ_1 > 0 > Δ_2
    sol = sp.solve(sp.Eq((n1 * d1 + n2 * (-d2)) / T, 1), d1)
    d1s = sol[0]
    value = sp.simplify(n1 * d1s * A1 + n2 * d2.subs(d1, d1s) * A2)
    M_s = T * (A1 - A2) / 2
    # Lemma D.2 per state: M(s)/T_s = (A_1 + |A_2|)/2 is the mean of two numbers, so at most their max ‖A‖:
    # max(a, b) - (a + b)/2 = |a - b|/2 ≥ 0.
    a, b = sp.symbols("a b", positive=True)          # a = A_1 = max Â, b = -A_2 = -min Â
    facts = {"one vertex": len(sol) == 1}
    return {"vertex value - T(A1 - A2)/2": sp.simplify(value - M_s),
            "max(a, b) - (a + b)/2 - |a - b|/2 (Lemma D.2)": _zero_piecewise(
                sp.Max(a, b) - (a + b) / 2 - sp.Abs(a - b) / 2),
        "mass on argmax - T/2": sp.simplify(n1 * d1s - T / 2)}, facts


def delta_apc_formulas():
    """Spec A1: Def. 3.2/C.1's ``δ_main = (1-γ)² M/(8γ‖Â‖ T)`` against App. D.4's ``δ_D4 = (1-γ)M/(8γ‖Â‖)``, which is
    ``t*`` of :func:`trpo_radius`. Returns ``{"ratio": δ_main/t*, "solutions": solve(δ_main = t*, T),
    "identities": {"δ_D4 - t*"}}``."""
    T = sp.Symbol("T", positive=True)
    Mp = sp.Symbol("M", positive=True)
    main = (1 - gamma) ** 2 * Mp / (8 * gamma * A_inf * T)
    d4 = (1 - gamma) * Mp / (8 * gamma * A_inf)
    t_star = trpo_radius()["t_star"].subs(M, Mp)
    return {"ratio": sp.simplify(main / t_star),
            "solutions": sp.solve(sp.Eq(main, t_star), T),
            "identities": {"δ_D4 - t*": sp.simplify(d4 - t_star)},
            "at γ = 1": (main.subs(gamma, 1), d4.subs(gamma, 1))}


# ---------------------------------------------------------------------------------------------
# App. C.5: relaxation identities
# ---------------------------------------------------------------------------------------------
def relaxation_identities(T_traj=3):
    """Identities of the relaxation chain APC-Obj → PPO/GRPO/GSPO (App. C.5, without ``min``):

    * PPO step (2): with a per-token constant bound ε, ``clip(r - 1, ±ε) + 1 = clip(r, 1 ± ε)`` (case analysis);
    * APC-Obj at a state sampled once (``T_s = 1``): Eq. 3's bound is ``δ - 0``, so the token term is PPO's;
    * GSPO step (3): the unclipped trajectory term ``(1/T_τ) Σ_t (log r_t + 1) Â_τ`` equals ``(log s_τ + 1)Â_τ``
      with ``s_τ = (Π r_t)^{1/T_τ}`` (``T_τ = 3``);
    * GSPO steps (3)-(4) approximations: ``log s - (s - 1) = -(s-1)²/2 + O((s-1)³)`` and
      ``-log(1 - ε) - ε = ε²/2 + O(ε³)`` (series), i.e. second-order errors, not identities."""
    e = sp.Symbol("epsilon", positive=True)
    x = sp.Symbol("x", real=True)                  # r = 1 + x
    ids = {"clip(r-1, ±ε) + 1 - clip(r, 1±ε)": _zero_piecewise(clip(x, -e, e) + 1 - clip(1 + x, 1 - e, 1 + e))}
    dl = sp.Symbol("delta", positive=True)
    B_single = 1 * dl - 0                          # T_s δ minus the (empty) sum over other tokens at s
    ids["T_s = 1: clip(Δ, δ - 0) + 1 - clip(r, 1±δ)"] = _zero_piecewise(
        clip(x, -sp.Max(B_single, 0), sp.Max(B_single, 0)) + 1 - clip(1 + x, 1 - dl, 1 + dl))
    r = sp.symbols(f"r1:{T_traj + 1}", positive=True)
    A = sp.Symbol("A", real=True)
    s = sp.Mul(*r) ** sp.Rational(1, T_traj)
    ids[f"(1/T)Σ(log r_t + 1)Â - (log s_τ + 1)Â (T_τ={T_traj})"] = sp.expand_log(
        sum((sp.log(v) + 1) * A for v in r) / T_traj - (sp.log(s) + 1) * A, force=True)
    y = sp.Symbol("y", real=True)                   # s = 1 + y
    series = {"log s - (s-1)": (sp.series(sp.log(1 + y) - y, y, 0, 3).removeO(), -y ** 2 / 2),
              "-log(1-ε) - ε": (sp.series(-sp.log(1 - e) - e, e, 0, 3).removeO(), e ** 2 / 2)}
    return ids, series


# ---------------------------------------------------------------------------------------------
# Claim 3.5 / Remark 3.6: GSPO's trajectory TV scale
# ---------------------------------------------------------------------------------------------
def gspo_scale():
    """Remark 3.6's arithmetic, exactly: ``ε = 4·10⁻⁴ ⇒ δ = √(ε/2) = √2/100 ≈ 0.01414``; and the Pinsker
    step ``δ² = ε/2`` solved for ``δ > 0``. Returns ``{"delta": exact δ, "solve": solve(δ² - ε/2, δ)}``."""
    eps = sp.Rational(4, 10 ** 4)
    d = sp.Symbol("delta", positive=True)
    return {"delta": sp.sqrt(eps / 2), "solve": sp.solve(sp.Eq(d ** 2, eps / 2), d),
            "budget convention (no ½)": 2 * sp.sqrt(eps / 2)}


# ---------------------------------------------------------------------------------------------
# γ = 1 with a finite horizon: the coupling sum behind Eq. 55, truncated instead of discounted
# ---------------------------------------------------------------------------------------------
def finite_horizon_coefficient():
    """TRPO's coupling argument (Eq. 55's proof): with ``α = D^max_TV`` (½-TV) the surrogate gap is at most
    ``Σ_t w_t · 2(1 - (1-α)^t) · 2α‖A‖ ≤ 4α²‖A‖ Σ_t w_t t``. Discounted, ``w_t = γ^t`` over ``t ≥ 0``; with a horizon
    ``H`` and no discount, ``w_t = 1`` for ``t < H``. Derived here with ``summation``:

    * ``Σ_{t≥0} γ^t t = γ/(1-γ)²``, so the discounted coefficient is Eq. 55's ``4γ‖A‖/(1-γ)²``, infinite at γ = 1
      only because the sum runs over infinitely many steps;
    * ``Σ_{t<H} t = H(H-1)/2``, so the finite-horizon coefficient is ``c_H = 2H(H-1)‖A‖``;
    * the exact coupling sum ``Σ_{t<H} (1 - (1-α)^t) = H - (1 - (1-α)^H)/α`` (before Bernoulli's ``1-(1-α)^t ≤ tα``);
    * the MM step ``max_α α M_H - c_H α²`` (``M_H = Σ_t E_{d_t}[max_a A_t - min_a A_t] ≤ 2H‖A‖``) is at
      ``α* = M_H/(4H(H-1)‖A‖) ≤ 1/(2(H-1))``, positive for every finite H.

    Returns ``(identities, facts, values)``."""
    H = sp.Symbol("H", integer=True, positive=True)
    tt = sp.Symbol("t", integer=True, nonnegative=True)
    al = sp.Symbol("alpha", positive=True)
    MH = sp.Symbol("M_H", nonnegative=True)
    disc = sp.summation(gamma ** tt * tt, (tt, 0, sp.oo))
    disc = sp.simplify(disc.args[0][0]) if isinstance(disc, sp.Piecewise) else sp.simplify(disc)
    fin = sp.summation(tt, (tt, 0, H - 1))
    coupling = sp.summation(1 - (1 - al) ** tt, (tt, 0, H - 1))
    cH = 4 * A_inf * fin
    j = al * MH - cH * al ** 2
    sols = sp.solve(sp.diff(j, al), al)
    a_star = sols[0] if len(sols) == 1 else sp.nan
    radius = sp.simplify(a_star.subs(MH, 2 * H * A_inf))
    ids = {"Σ_t γ^t t - γ/(1-γ)²": sp.simplify(disc - gamma / (1 - gamma) ** 2),
           "4‖A‖Σ_t γ^t t - 4γ‖A‖/(1-γ)² (Eq. 55)": sp.simplify(4 * A_inf * disc - 4 * gamma * A_inf / (1 - gamma) ** 2),
           "Σ_{t<H} t - H(H-1)/2": sp.simplify(fin - H * (H - 1) / 2),
           "c_H - 2H(H-1)‖A‖": sp.simplify(cH - 2 * H * (H - 1) * A_inf),
           "Σ_{t<H}(1-(1-α)^t) - (H - (1-(1-α)^H)/α)": sp.simplify(
               sp.simplify(coupling) - (H - (1 - (1 - al) ** H) / al)),
           "α* - M_H/(4H(H-1)‖A‖)": sp.simplify(a_star - MH / (4 * H * (H - 1) * A_inf)),
           "α*(M_H = 2H‖A‖) - 1/(2(H-1))": sp.simplify(radius - 1 / (2 * (H - 1)))}
    # Bernoulli 1 - (1-α)^t ≤ tα on α ∈ [0, 1], for t = 0..6: tα - 1 + (1-α)^t has non-negative derivative
    # t(1 - (1-α)^{t-1}) there and vanishes at α = 0.
    a01 = sp.Symbol("a", nonnegative=True)
    bern = all(sp.simplify(sp.diff(k * a01 - 1 + (1 - a01) ** k, a01) - k * (1 - (1 - a01) ** (k - 1))) == 0
               for k in range(1, 7))
    facts = {"one stationary point": len(sols) == 1,
             "lim_{γ→1⁻} 4γ/(1-γ)² = ∞ while c_H < ∞": sp.limit(4 * gamma / (1 - gamma) ** 2, gamma, 1, "-") == sp.oo
             and cH.subs({H: 1000, A_inf: 1}).is_finite,
             "α* > 0 at H = 1000, M_H = ‖A‖": bool(sp.simplify(a_star.subs({H: 1000, MH: A_inf})) > 0),
             "Bernoulli step (t ≤ 6)": bern}
    return ids, facts, {"c_H": sp.factor(cH), "alpha_star": a_star, "radius": radius, "discounted": disc}


# ---------------------------------------------------------------------------------------------
# Spec A2: Eq. 39 estimates 2·D_TV, so Eq. 68 penalises 4× the Monte Carlo version of Eq. 56
# ---------------------------------------------------------------------------------------------
def half_factor(K=3):
    """For ``K`` actions: ``E_{a~π_old}|r_a - 1| = Σ_a |π_a - π_old,a| = 2 D_TV`` (Eq. 37 keeps the ½, Eq. 39 drops
    it), so ``E[D̂_TV(s)] = 2 D_TV(s)``; along ``Δ = tΔ̂*`` (``t`` = the common D̂_TV level, Thm D.3) Eq. 56 reads
    ``tM/(1-γ) - c(t/2)²`` while Eq. 68 reads ``tM/(1-γ) - ct²``. Returns ``(identities, facts, values)``: the
    maximisers ``t_56 = 4 t*`` and ``t_68 = t*``, and ``t_56`` at ``M = ‖A‖`` (``(1-γ)/(2γ)``: 2δ^(TRPO) in ½-TV)."""
    p = sp.symbols(f"p1:{K + 1}", positive=True)
    q = sp.symbols(f"q1:{K + 1}", positive=True)
    ratio_form = sum(pi * sp.Abs(qi / pi - 1) for pi, qi in zip(p, q))
    direct = sum(sp.Abs(qi - pi) for pi, qi in zip(p, q))
    c = 4 * gamma * A_inf / (1 - gamma) ** 2
    j56 = t * M / (1 - gamma) - c * (t / 2) ** 2
    j68 = t * M / (1 - gamma) - c * t ** 2
    t56, t68 = sp.solve(sp.diff(j56, t), t), sp.solve(sp.diff(j68, t), t)
    t_star = (1 - gamma) * M / (8 * gamma * A_inf)
    ids = {"Σ π_old|r - 1| - Σ|π - π_old| (Eq. 37 × 2)": sp.simplify(ratio_form - direct),
           "t_68 - t*": sp.simplify(t68[0] - t_star),
           "t_56 - 4t*": sp.simplify(t56[0] - 4 * t_star),
           "t_56(M = ‖A‖) - (1-γ)/(2γ)": sp.simplify(t56[0].subs(M, A_inf) - (1 - gamma) / (2 * gamma)),
           "penalty_68/penalty_56 - 4": sp.simplify((c * t ** 2) / (c * (t / 2) ** 2) - 4)}
    facts = {"one stationary point each": len(t56) == 1 and len(t68) == 1}
    return ids, facts, {"t56": t56[0], "t68": t68[0]}


# ---------------------------------------------------------------------------------------------
# FiberPO App. E.5: the sign channels and the reverse KL (the reason for C⁻ < C⁺)
# ---------------------------------------------------------------------------------------------
def channel_drift_identity(T_traj=3, K=3):
    """``log s⁻ - log s⁺ = -(1/T) Σ_t log r_t`` (Eq. 9, from ``max(x,0) - max(-x,0) = x``, ``T = T_traj``), and
    ``KL(p‖q) = Σ_a p_a φ(q_a/p_a)`` with ``φ(x) = x - 1 - log x`` when ``Σ p = Σ q = 1`` (``K`` actions), where
    ``φ ≥ 0``: ``φ(1) = 0``, the only stationary point is ``x = 1`` and ``φ'' = 1/x² > 0``. So
    ``E_{a~p}[-log r] = KL ≥ 0``, zero only at ``q = p``. Returns ``(identities, facts)``."""
    x = sp.symbols(f"x1:{T_traj + 1}", real=True)
    # per token max(-x,0) - max(x,0) = -x (case analysis); the channel means are sums of these over the trajectory
    per_token = [_zero_piecewise(sp.Max(-v, 0) - sp.Max(v, 0) + v) for v in x]
    s_pos = sum(sp.Max(v, 0) for v in x) / T_traj
    s_neg = sum(sp.Max(-v, 0) for v in x) / T_traj
    terms = [sp.Max(-v, 0) - sp.Max(v, 0) + v for v in x]
    ids = {f"log s⁻ - log s⁺ + mean log r - (1/T)Σ_t(per-token term) (T={T_traj})":
           sp.expand(s_neg - s_pos + sum(x) / T_traj - sum(terms) / T_traj),
           "per-token max(-x,0) - max(x,0) + x (case analysis)": per_token[0]}
    p = sp.symbols(f"p1:{K + 1}", positive=True)
    q = sp.symbols(f"q1:{K + 1}", positive=True)
    sub = {p[-1]: 1 - sum(p[:-1]), q[-1]: 1 - sum(q[:-1])}
    kl = sum(pi * sp.log(pi / qi) for pi, qi in zip(p, q))
    xs = sp.Symbol("x", positive=True)
    phi = xs - 1 - sp.log(xs)
    via_phi = sum(pi * phi.subs(xs, qi / pi) for pi, qi in zip(p, q))
    ids[f"KL - Σ p φ(q/p) (K={K}, Σp = Σq = 1)"] = sp.simplify(sp.expand_log((kl - via_phi).subs(sub), force=True))
    stat = sp.solve(sp.diff(phi, xs), xs)
    facts = {"φ(1) = 0": phi.subs(xs, 1) == 0, "φ' = 0 only at x = 1": stat == [1],
             "φ'' = 1/x² > 0": sp.simplify(sp.diff(phi, xs, 2) - 1 / xs ** 2) == 0}
    return ids, facts
