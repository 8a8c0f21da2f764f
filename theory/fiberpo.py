"""FiberPO's gating (arXiv 2603.08239 v1, §4–§6) in SymPy: the aggregate gate, the log-space gated ratio branch
by branch, and the Jacobian of Prop. 5.2 derived by differentiation.

Spec: ``spec/fiberpo.md`` §2.9–§2.14. Everything is piecewise linear in the log-ratios ``y_t = log r_t``: on a
fixed *branch* (sign of every ``y_t``, regime P/R/Z of each channel's ``g_agg``, clip active or not for every
``u_i`` and ``v_i``) the log gated ratio

    log 𝒢_i = g_agg(log s⁺, C⁺, T) - g_agg(log s⁻, C⁻, T) + clip(l_i u_i, ±ε) - clip(l_i v_i, ±ε)     (Eq. 16)

is a linear form in ``y``, so ∂log 𝒢_i/∂y_j is derived exactly by ``diff`` and compared with Eq. 20's bracket
(``∂𝒢_i/∂r_j = 𝒢_i/r_j · ∂log 𝒢_i/∂y_j``). Functions return dicts ``name -> expression that must simplify to 0``
(identities) or ``name -> bool`` (facts); the checks decide.
"""

from __future__ import annotations

import itertools

import sympy as sp

x = sp.Symbol("x", real=True)
C = sp.Symbol("C", positive=True)
T = sp.Symbol("T", positive=True)
eps = sp.Symbol("epsilon", positive=True)
C_pos, C_neg = sp.symbols("C_+ C_-", positive=True)

REGIMES = ("P", "R", "Z")


def g_agg(x, C, T):
    """FiberPO Eq. 10 as a SymPy Piecewise (intervals of spec A12)."""
    c_star = (1 + 1 / T) * C
    return sp.Piecewise((x, sp.Abs(x) <= C), (sp.sign(x) * (T + 1) * C - T * x, sp.Abs(x) < c_star), (0, True))


def g_agg_branch(a, regime: str, C, T, sign: int = 1):
    """The branch of Eq. 10 in ``regime`` for an argument of the given sign (aggregates are ``≥ 0``)."""
    return {"P": a, "R": sign * (T + 1) * C - T * a, "Z": sp.Integer(0)}[regime]


def c_star(C, T):
    """``C* = (1 + 1/T) C``, where the rollback branch reaches 0 (Eq. 10)."""
    return (1 + 1 / T) * C


def g_agg_properties() -> dict:
    """Continuity at ``|x| = C`` (value ``C``) and at ``|x| = C*`` (value 0), slopes ``1, -T, 0``, odd symmetry
    branch by branch, and Fig. 2(a)'s numbers (``C = 0.15``, ``T = k = 3``: zero from ``0.2`` on)."""
    y = sp.Symbol("y", positive=True)
    out = {}
    for s in (1, -1):
        P, R, Z = (g_agg_branch(x, reg, C, T, s) for reg in REGIMES)
        out[f"continuity at x = {s}C: P - R"] = (P - R).subs(x, s * C)
        out[f"value at x = {s}C minus {s}C"] = P.subs(x, s * C) - s * C
        out[f"continuity at x = {s}C*: R - Z"] = (R - Z).subs(x, s * c_star(C, T))
        out[f"slope P - 1 (sign {s})"] = sp.diff(P, x) - 1
        out[f"slope R + T (sign {s})"] = sp.diff(R, x) + T
        out[f"slope Z (sign {s})"] = sp.diff(Z, x)
    for reg in REGIMES:   # g(-y) = -g(y) for y > 0 on each branch
        out[f"odd symmetry ({reg})"] = g_agg_branch(-y, reg, C, T, -1) + g_agg_branch(y, reg, C, T, 1)
    fig = {C: sp.Rational(15, 100), T: 3}
    out["Fig. 2(a): C* - 0.2"] = c_star(C, T).subs(fig) - sp.Rational(1, 5)
    out["Fig. 2(a): rollback branch at 0.2"] = g_agg_branch(x, "R", C, T).subs(fig).subs(x, sp.Rational(1, 5))
    return out


def piecewise_agrees_with_branches() -> dict:
    """The Piecewise of Eq. 10 evaluated at one rational point inside each branch (both signs) equals the branch."""
    vals = {C: sp.Rational(3, 20), T: 3}
    pts = {"P": sp.Rational(1, 10), "R": sp.Rational(7, 40), "Z": sp.Rational(1, 4)}
    out = {}
    for reg, p in pts.items():
        for s in (1, -1):
            out[f"Piecewise = branch {reg} at {s * p}"] = (g_agg(x, C, T).subs(vals).subs(x, s * p)
                                                            - g_agg_branch(s * p, reg, C, T, s).subs(vals))
    return out


# ---------------------------------------------------------------------------------------------------------------
# one trajectory, branch by branch
# ---------------------------------------------------------------------------------------------------------------


def trajectory_symbols(signs):
    """Log-ratios ``y_t`` with the sign of each fixed by an assumption (``+1``: positive, ``-1``: negative)."""
    return [sp.Symbol(f"y{t}", positive=True) if s > 0 else sp.Symbol(f"y{t}", negative=True)
            for t, s in enumerate(signs)]


def aggregates(y):
    """Eq. 9 with ``Max`` resolved by the sign assumptions."""
    n = len(y)
    return sum(sp.Max(v, 0) for v in y) / n, sum(sp.Max(-v, 0) for v in y) / n


def log_gated_ratio_branch(y, signs, reg_pos, reg_neg, u_active, v_active):
    """Eq. 16 on one branch. ``u_active[i]``/``v_active[i]`` say whether the clip of ``l_i u_i``/``l_i v_i`` is
    saturated; a saturated clip is the constant ``±ε`` (its sign does not matter for derivatives)."""
    n = len(y)
    sp_, sn_ = aggregates(y)
    lw = g_agg_branch(sp_, reg_pos, C_pos, n) - g_agg_branch(sn_, reg_neg, C_neg, n)
    out = []
    for i, l in enumerate(signs):
        same, opp = (sp_, sn_) if l > 0 else (sn_, sp_)
        lu = y[i] - l * same          # l_i u_i (Eq. 14)
        lv = -l * opp                 # l_i v_i (Eq. 15)
        out.append(lw + (eps if u_active[i] else lu) - (eps if v_active[i] else lv))
    return out


def eq20_bracket(i, j, signs, gammas, u_active, v_active):
    """The bracket of Eq. 20: ``𝕀[|u_i| ≤ ε]𝕀[i=j] + (γ^{(l_j)} - 𝕀[|u_i| ≤ ε]𝕀[l_i=l_j] - 𝕀[|v_i| ≤ ε]𝕀[l_i≠l_j])/T``."""
    n = len(signs)
    au, av = (0 if u_active[i] else 1), (0 if v_active[i] else 1)
    same = 1 if signs[i] == signs[j] else 0
    g = gammas[0] if signs[j] > 0 else gammas[1]
    return au * (1 if i == j else 0) + sp.Rational(1, n) * (g - au * same - av * (1 - same))


def _gamma(reg, n):
    return {"P": 1, "R": -n, "Z": 0}[reg]


def eq20_identities(signs=(1, 1, -1)) -> dict:
    """``∂ log 𝒢_i/∂y_j - bracket_ij`` on every branch of one trajectory with the given sign pattern: 9 global
    regime pairs × every clip pattern of ``u`` × every clip pattern of ``v`` (``v_i`` depends only on ``l_i``)."""
    y = trajectory_symbols(signs)
    n = len(y)
    out = {}
    chans = sorted(set(signs))
    for rp, rn in itertools.product(REGIMES, REGIMES):
        for ua in itertools.product((False, True), repeat=n):
            for va_c in itertools.product((False, True), repeat=len(chans)):
                va = [va_c[chans.index(s)] for s in signs]
                logG = log_gated_ratio_branch(y, signs, rp, rn, ua, va)
                gam = (_gamma(rp, n), _gamma(rn, n))
                for i in range(n):
                    for j in range(n):
                        out[f"{rp}{rn} u{ua} v{va} ({i},{j})"] = (sp.diff(logG[i], y[j])
                                                                  - eq20_bracket(i, j, signs, gam, ua, va))
    return out


def on_policy_identities(n: int = 3) -> dict:
    """Thm 4.5 / Property 5.4: at ``y = 0`` every channel and clip is in pass-through, ``log 𝒢_i = y_i`` on that
    branch to first order, and Eq. 20's bracket is ``𝕀[i=j]`` for either sign pattern."""
    out = {}
    for signs in ((1,) * n, (1,) * (n - 1) + (-1,)):
        y = trajectory_symbols(signs)
        logG = log_gated_ratio_branch(y, signs, "P", "P", (False,) * n, (False,) * n)
        for i in range(n):
            for j in range(n):
                out[f"signs {signs}: d log G_{i}/d y_{j} - δ_ij"] = sp.diff(logG[i], y[j]) - (1 if i == j else 0)
                out[f"signs {signs}: bracket_{i}{j} - δ_ij"] = (eq20_bracket(i, j, signs, (1, 1), (False,) * n,
                                                                             (False,) * n) - (1 if i == j else 0))
    return out


def decoupling_identities(signs=(1, 1, -1)) -> dict:
    """§5.2: with ``|u_i|, |v_i| ≤ ε`` (no clip saturated) ``log r̃_i = log r_i - mean_t log r_t``, because
    ``log s⁺ - log s⁻ = mean log r``; in G-I also ``log w = mean log r``, so ``log 𝒢_i = log r_i``."""
    y = trajectory_symbols(signs)
    n = len(y)
    sp_, sn_ = aggregates(y)
    mean = sum(y) / n
    no_clip = (False,) * n
    fiber = log_gated_ratio_branch(y, signs, "Z", "Z", no_clip, no_clip)   # Z, Z: log w = 0 isolates the fiber
    full = log_gated_ratio_branch(y, signs, "P", "P", no_clip, no_clip)
    out = {"log s+ - log s- - mean log r": sp_ - sn_ - mean}
    for i in range(n):
        out[f"log r~_{i} - (y_{i} - mean)"] = fiber[i] - (y[i] - mean)
        out[f"G-I: log G_{i} - y_{i}"] = full[i] - y[i]
    return out


def l3_remark(signs=(1, 1, -1)) -> tuple[dict, dict]:
    """A11: in L-III (every ``u`` clip saturated) the derived Jacobian bracket is
    ``(γ^{(l_j)} - 𝕀[|v_i| ≤ ε]𝕀[l_i ≠ l_j])/T``; the remark's ``γ^{(l_j)}/T`` drops the second term.

    Returns identities (the derived bracket with ``|v_i| > ε`` equals the remark's) and facts (with
    ``|v_i| ≤ ε`` and ``l_i ≠ l_j`` it does not)."""
    y = trajectory_symbols(signs)
    n = len(y)
    sat = (True,) * n
    ids, facts = {}, {}
    for rp, rn in itertools.product(REGIMES, REGIMES):
        gam = {1: _gamma(rp, n), -1: _gamma(rn, n)}
        with_v = log_gated_ratio_branch(y, signs, rp, rn, sat, sat)
        without_v = log_gated_ratio_branch(y, signs, rp, rn, sat, (False,) * n)
        for i in range(n):
            for j in range(n):
                remark = sp.Rational(gam[signs[j]], n)
                ids[f"{rp}{rn} |v|>ε ({i},{j})"] = sp.diff(with_v[i], y[j]) - remark
                if signs[i] != signs[j]:
                    facts[f"{rp}{rn} |v|≤ε ({i},{j}) differs from γ/T"] = bool(
                        sp.simplify(sp.diff(without_v[i], y[j]) - remark) != 0)
    return ids, facts


def scale_separation_facts() -> dict:
    """Property 5.5 from Eq. 20's off-diagonal bracket ``(γ - a 𝕀_same - b 𝕀_diff)/T`` with ``a, b ∈ {0, 1}``:
    ``T|bracket| ≤ 1 ≤ 2`` when ``γ ∈ {1, 0}``; in rollback (``γ = -T``) ``|bracket| ≥ 1`` for every ``T``."""
    facts = {}
    for g in (1, 0):
        for a, b, same in itertools.product((0, 1), (0, 1), (0, 1)):
            val = g - a * same - b * (1 - same)
            facts[f"γ={g}, a={a}, b={b}, same={same}: |γ - …| ≤ 2"] = bool(abs(val) <= 2)
    for a, b, same in itertools.product((0, 1), (0, 1), (0, 1)):
        val = (-T - a * same - b * (1 - same)) / T
        facts[f"rollback a={a}, b={b}, same={same}: |bracket| ≥ 1"] = bool(sp.simplify(-val - 1).is_nonnegative)
    return facts


def restorative() -> tuple[dict, dict]:
    """§5.1: a trajectory with every ``log r_t = x`` in the positive rollback band has ``u = v = 0`` and
    ``log 𝒢 = (T+1)C⁺ - T x``; then ``∂Ĵ/∂x = -T 𝒢 Â/|Tj| < 0`` for ``Â > 0``, while a GRPO clip at
    ``r = e^x > 1 + ε`` is the constant ``1 + ε`` (derivative 0)."""
    A, n_tj = sp.symbols("A n_Tj", positive=True)
    logG = g_agg_branch(x, "R", C_pos, T)
    J = (1 / n_tj) * T * (1 / T) * sp.exp(logG) * A      # Eq. 6 for one trajectory of T identical tokens
    dJ = sp.diff(J, x)
    ids = {"dJ/dx + T G A / n_Tj": dJ + T * sp.exp(logG) * A / n_tj,
           "GRPO: d(1 + ε)A/dx": sp.diff((1 + eps) * A, x)}
    facts = {"dJ/dx < 0": bool(dJ.is_negative)}
    return ids, facts


def eq79_difference() -> tuple[dict, dict]:
    """A10: Eq. 7 minus Eq. 79 for a token of sign ``l`` is ``l[clip(log s^{(-l)}, ±ε) - g_agg(log s^{(-l)}, C, T)]``
    (opposite-channel terms). On the branch ``0 ≤ log s^{(-l)} ≤ ε ≤ C`` both are the identity (difference 0);
    on ``ε < log s^{(-l)} ≤ C`` the difference is ``ε - log s^{(-l)} ≠ 0``."""
    a = sp.Symbol("a", nonnegative=True)
    ids = {"pass-through and unclipped": a - g_agg_branch(a, "P", C, T)}
    b = sp.Symbol("b", positive=True)      # b = log s^{(-l)} - ε > 0
    facts = {"clipped but passing: ε - (ε + b) ≠ 0": bool(sp.simplify(eps - g_agg_branch(eps + b, "P", C, T)) != 0),
             "zeroed: clip ≠ 0": bool(sp.simplify(eps - g_agg_branch(eps + b, "Z", C, T)) != 0)}
    return ids, facts


def hierarchy_identities() -> dict:
    """FGH (Eqs. 26–28, App. E.7) with symbolic counts: the reflecting identity of each kernel, the path weight
    ``K_2K_1K_0`` to a token, and telescoping of the level arguments in pass-through (Eq. 31 → FiberPO)."""
    T1, T2 = sp.symbols("T_1 T_2", positive=True)           # trajectory lengths
    m1, m2 = sp.symbols("m_1 m_2", positive=True)           # |Tj(g)| of two groups in a domain
    mD = m1 + m2                                            # |Tj(D)|
    sD, sg, st = sp.symbols("s_D s_g s_tau", real=True)
    return {
        "π_3* K_2 = 1 (T_τ tokens of weight 1/T_τ)": T1 * (1 / T1) - 1,
        "π_2* K_1 = 1 (|Tj(g)| trajectories of weight 1/|Tj(g)|)": m1 * (1 / m1) - 1,
        "π_1* K_0 = 1 (Σ_g |Tj(g)|/|Tj(D)|)": m1 / mD + m2 / mD - 1,
        "K_2K_1K_0 path weight - 1/(|Tj(D)| T_τ)": (m1 / mD) * (1 / m1) * (1 / T2) - 1 / (mD * T2),
        "level 0 term at a token: T_τ · path · |Tj(D)| g = g": T2 * (1 / (mD * T2)) * mD - 1,
        "telescoping s_D + (s_g - s_D) + (s_τ - s_g) - s_τ": sD + (sg - sD) + (st - sg) - st,
    }
