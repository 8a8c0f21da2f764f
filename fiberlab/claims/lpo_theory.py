"""Theory-layer checks of LPO's claims: SymPy derivations from :mod:`fiberlab.theory.lpo`.

A check passes only if every difference it gets simplifies to exactly ``0`` (and every fact it needs is
established), so ``max_error = 0.0`` and ``tolerance = 0.0``; anything SymPy cannot reduce is listed in the detail.
"""

from __future__ import annotations

import sympy as sp

from fiberlab.claims.lpo import (fwd_bounded, gibbs_target, implicit_targets, length_normalisation,
                                 monotone_improvement, pg_is_reverse_kl, rev_is_proximal, rev_unbounded, zero_sum)
from fiberlab.claims._symbolic import symbolic_evidence as _symbolic
from fiberlab.registry import Evidence
from fiberlab.theory import lpo as sym_lpo
def _limits(pairs: dict) -> dict:
    return {k: a - b for k, (a, b) in pairs.items()}


@pg_is_reverse_kl.check("theory")
def _pg_equals_minus_reverse_kl_gradient() -> Evidence:
    """c^rev = P(d - d̄) is the derivative of KL(P‖softmax(φ)) (K = 3); at s = 0 it is -(A - Ā)/K (K = 3, 4), i.e.
    -A/K for zero-mean A; through s = Xθ the θ-gradients agree (K = 3, d = 2); softmax(A + b) = softmax(A)."""
    ids = {f"{k} (K=3)": v for k, v in sym_lpo.reverse_kl_coefficients(3).items()}
    for K in (3, 4):
        ids.update({f"{k} (K={K})": v for k, v in sym_lpo.pg_on_policy(K).items()})
    ids.update({f"{k} (s = Xθ)": v for k, v in sym_lpo.pg_parameter_space(3, 2).items()})
    ids.update(sym_lpo.shift_invariance(3))
    return _symbolic(ids, detail="c^rev = ∂KL/∂s = P(d - d̄); at s = 0, c^rev = -(A - Ā)/K = -A/K (ΣA = 0) for K = 3, 4; "
                                 "θ-gradient identity through a symbolic 3×2 feature map; shift invariance of softmax")


@gibbs_target.check("theory")
def _lagrangian_stationarity_and_concavity() -> Evidence:
    """Lagrangian stationarity of Ĵ solved by SymPy (K = 3) gives one point, the Gibbs form; ∇²Ĵ = -τ diag(1/w)."""
    out = sym_lpo.gibbs_target(3)
    facts = {"exactly one stationary point": out["n_solutions"] == 1,
             "Hessian eigenvalues all negative for w > 0": bool(out["hessian_eigs"]) and
             all(sp.ask(sp.Q.negative(e)) is True for e in out["hessian_eigs"])}
    ids = dict(out["identities"])
    ids.update(_limits(sym_lpo.gibbs_limits(3)))
    return _symbolic(ids, facts, detail="w_k = P_{t,k} e^{R_k/τ}/Σ_j P_{t,j} e^{R_j/τ} is the only stationary point; "
                                        f"Hessian eigenvalues {out['hessian_eigs']} < 0 (strictly concave, unique); "
                                        "τ→0⁺: w → e_argmax; τ→∞: w → P_t (K = 3)")


@zero_sum.check("theory")
def _general_divergence_coefficients() -> Evidence:
    """Chain rule through the softmax for an undefined L(P) (K = 3), and Σ c = 0."""
    return _symbolic(sym_lpo.general_divergence_coefficients(3),
                     detail="∂L/∂s_k = P_k(∂L/∂P_k - Σ P_j ∂L/∂P_j) and Σ_k c_k = 0 for a generic L(P_1, P_2, P_3)")


@fwd_bounded.check("theory")
def _forward_coefficients_and_tv() -> Evidence:
    """∂KL(w*‖softmax(s))/∂s = P - w*, Σ = 0, = 0 at P = w* (K = 3); |x| = 2max(x,0) - x gives Σ|c| = 2 TV."""
    ids = sym_lpo.forward_kl_coefficients(3)
    ids.update(sym_lpo.l1_is_twice_positive_part())
    return _symbolic(ids, detail="c^fwd = P - w* derived (K = 3), zero-sum, vanishes at P = w*; per-coordinate "
                                 "|x| = 2 max(x, 0) - x with Σ c = 0 gives Σ|c_k| = 2 Σ max(c_k, 0) = 2 TV; "
                                 "|c_k| ≤ 1 since P_k, w*_k ∈ [0, 1]")


@rev_unbounded.check("theory")
def _reverse_coefficients_grow_like_inverse_tau() -> Evidence:
    """τ c^rev_k → -P_k(R_k - Σ P_j R_j) ≠ 0 as τ → 0⁺ (K = 3): c^rev ~ 1/τ."""
    ids = _limits(sym_lpo.reverse_growth(3))
    return _symbolic(ids, detail="lim_{τ→0⁺} τ c^rev_k = -P_k(R_k - Σ_j P_j R_j), non-zero unless R is constant, so "
                                 "c^rev grows like 1/τ (K = 3); |c^rev_k| ≤ max d - min d as P_k ≤ 1, |d_k - d̄| ≤ "
                                 "max d - min d")


@rev_is_proximal.check("theory")
def _proximal_identity() -> Evidence:
    """Ĵ(P) + τ KL(P‖w*) - τ log Ẑ ≡ 0 for symbolic s, s_t, R, τ (K = 3)."""
    return _symbolic({"Prop. 3": sym_lpo.proximal_identities(3)["Prop. 3"]},
                     detail="Ĵ(P_θ) = -τ KL(P_θ‖w*) + τ log Ẑ for symbolic s, s_t, R, τ (K = 3)")


@implicit_targets.check("theory")
def _rloo_temperature() -> Evidence:
    """A^RLOO = K/(K-1)(R - μ_G) (K = 3, 4, 5) and c^rev(s = 0) toward softmax(R·K/(K-1)) = -A^RLOO/K (K = 3)."""
    ids = {}
    for K in (3, 4, 5):
        ids.update({f"{k} (K={K})": v for k, v in sym_lpo.rloo_advantage(K).items()})
    ids.update(sym_lpo.rloo_coefficients(3))
    return _symbolic(ids, detail="RLOO's leave-one-out advantage is K/(K-1)(R - μ_G), so its implicit τ is exactly "
                                 "(K-1)/K (Table 1's '≈ 1' is approximate); on-policy c^rev toward softmax(R/τ) "
                                 "equals -A^RLOO/K")


from fiberlab.claims.lpo import implicit_target_remax  # noqa: E402


@implicit_target_remax.check("theory")
def _remax_gap_is_uncentred_baseline() -> Evidence:
    """(R_k - b)/K + c^rev_k(s = 0, φ = R) ≡ (μ_G - b)/K for every k (K = 3, 4); the gap vanishes iff b = μ_G."""
    ids, facts = {}, {}
    for K in (3, 4):
        gap_ids, gap, b, mu = sym_lpo.remax_gap(K)
        ids.update({f"{k} (K={K})": v for k, v in gap_ids.items()})
        facts[f"gap ≢ 0 (K={K})"] = sp.simplify(gap) != 0
        facts[f"gap = 0 only at b = μ_G (K={K})"] = sp.solve(sp.Eq(gap, 0), b) == [mu]
    return _symbolic(ids, facts, detail="ReMax's PG minus -∇KL(P_θ‖softmax(R)) on-policy is ((μ_G - b)/K) Σ_k ∇log π(y_k): "
                                        "the same gap on every response, zero iff b = μ_G (the condition)")


@monotone_improvement.check("theory")
def _target_gain_is_jeffreys() -> Evidence:
    """Thm. 2(a): R̂(w*) - R̂(P_t) - τ[KL(w*‖P_t) + KL(P_t‖w*)] ≡ 0 (K = 3)."""
    return _symbolic({"Thm. 2(a)": sym_lpo.proximal_identities(3)["Thm. 2(a)"]},
                     detail="R̂(w*) - R̂(P_t) = τ [KL(w*‖P_t) + KL(P_t‖w*)] for symbolic s_t, R, τ (K = 3)")


@length_normalisation.check("theory")
def _length_weights_break_zero_sum() -> Evidence:
    """K = 2, ΣA = 0: Σ_k A_k/(K|y_k|) = A_1(|y_2| - |y_1|)/(2|y_1||y_2|), non-zero for unequal lengths; 0 if equal."""
    net, stated, unnorm, (L1, L2, a) = sym_lpo.length_normalised_net_coefficient()
    ids = {"net - A1(L2-L1)/(2 L1 L2)": net - stated, "summed-log-prob coefficients sum": unnorm,
           "net at equal lengths": net.subs(L2, L1)}
    facts = {"net coefficient is not identically 0": sp.simplify(net) != 0,
             "net ≠ 0 at A1 = 1, |y| = (1, 2)": sp.simplify(net.subs({a: 1, L1: 1, L2: 2})) != 0}
    return _symbolic(ids, facts, detail="with 1/|y_k| weights the PG coefficients sum to A_1(|y_2|-|y_1|)/(2|y_1||y_2|) "
                                        "≠ 0 (zero-sum lost; the counterexample of the condition), 0 for equal lengths "
                                        "and for summed log-probs")


# ---------------------------------------------------------------------------------------------
# Claims added after the first nine (App. C.7, Cor. 2, Prop. 2, App. C.5, App. B.2, A9)
# ---------------------------------------------------------------------------------------------
from fiberlab.claims.lpo import entropy_redundant  # noqa: E402


@entropy_redundant.check("theory")
def _max_ent_form_and_entropy_target() -> Evidence:
    """-KL(P‖softmax(φ)) = Σ Pφ + H(P) - log Z_φ (K = 3); Lagrange conditions of Σ wR - τKL(w‖1/K) + γH(w)."""
    out = sym_lpo.entropy_bonus_target(3)
    ids = dict(sym_lpo.max_ent_form(3))
    ids.update(out["identities"])
    ids.update(out["ratio_identities"])
    facts = {"one stationary root per coordinate": out["n_solutions"] == 1,
             "Hessian eigenvalues all negative for w > 0": bool(out["hessian_eigs"]) and
             all(sp.ask(sp.Q.negative(e)) is True for e in out["hessian_eigs"])}
    return _symbolic(ids, facts, detail="-D_KL(P‖w*) = Σ P φ + H(P) - log Z_φ for symbolic s, φ (K = 3); stationarity "
                                        "∂J_γ/∂w_k = λ has one root per k with w_k/w_1 = e^{(R_k-R_1)/(τ+γ)}, and "
                                        "softmax(R/(τ+γ)) satisfies it with a common λ; Hessian eigenvalues "
                                        f"{out['hessian_eigs']} < 0 (strictly concave: the unique maximiser)")


from fiberlab.claims.lpo import mode_coverage  # noqa: E402


@mode_coverage.check("theory")
def _binary_bound_monotone_and_constant() -> Evidence:
    """Binary data-processing bound solved for P_k, d log f/dx = (D - log(1-x))/x² > 0, (1-α)^{(1-α)/α} > e^{-1}."""
    ids, facts = sym_lpo.mode_coverage()
    return _symbolic(ids, facts, detail="D ≥ x log(x/p) + (1-x) log(1-x) solved for p gives f(x) = x e^{-D/x}(1-x)^{(1-x)/x}; "
                                        "d log f/dx = (D - log(1-x))/x² = (D + v)/x² > 0 (x = 1 - e^{-v}); "
                                        "log (1-α)^{(1-α)/α} = -v/(e^v - 1) > -1 ⇔ e^v - 1 - v > 0 (0 at v = 0, "
                                        "derivative ∫_0^v e^t dt > 0); lim_{α→0⁺} (1-α)^{(1-α)/α} = e^{-1} (sharp)")


from fiberlab.claims.lpo import full_space  # noqa: E402


@full_space.check("theory")
def _gibbs_iteration_induction() -> Evidence:
    """Induction step and base case of π_t ∝ π_0 e^{tR/τ}, dE/dt = Var/τ, and π_t → e_argmax (M = 3)."""
    ids, lims = sym_lpo.full_space_iteration(3)
    ids.update(_limits(lims))
    return _symbolic(ids, detail="π_t e^{R/τ}/Σ = softmax(log π_0 + (t+1)R/τ) given π_t = softmax(log π_0 + tR/τ), "
                                 "and π_0 at t = 0 (induction); d/dt E_{π_t}[R] = Var_{π_t}(R)/τ ≥ 0 (monotone: E_{t+1} "
                                 "- E_t = ∫ Var/τ); π_{t,1} → 1 for the unique maximiser R_1 (M = 3), so E → max R")


from fiberlab.claims.lpo import k2_bce  # noqa: E402


@k2_bce.check("theory")
def _k2_reduction() -> Evidence:
    """w*_w = σ(1/τ), KL = CE - H(w*), CE = soft BCE, BCE - hard = σ(-1/τ)Δ, σ(±1/τ) → 1, 0 as τ → 0⁺."""
    ids, lims = sym_lpo.k2_soft_bce()
    ids.update(_limits(lims))
    return _symbolic(ids, detail="K = 2, φ = (1/τ, 0): w*_w = σ(1/τ); D_KL(w*‖P) = CE - H(w*); CE - soft BCE has zero "
                                 "gradient in (s_w, s_l) and is 0 at s = 0; soft BCE + log σ(Δ) = σ(-1/τ) Δ exactly; "
                                 "σ(1/τ) → 1 and σ(-1/τ) → 0 as τ → 0⁺ (hard preference -log σ(Δ))")


from fiberlab.claims.lpo import off_policy_gap  # noqa: E402


@off_policy_gap.check("theory")
def _off_policy_first_order() -> Evidence:
    """Ascent convention c^PG = rA/K, c^revKL = -P(d - d̄); s = εu, ΣA = 0 (K = 3): Δ(0) = 0, Δ'(0) = spec, Eq. 29."""
    ids, uncentred, abar_k = sym_lpo.off_policy_expansion(3)
    facts = {"without ΣA = 0 the gap at s = 0 is Ā/K (so the condition is needed)":
             sp.simplify(uncentred - abar_k) == 0 and sp.simplify(abar_k) != 0}
    return _symbolic(ids, facts, detail="ascent signs c^PG_k = r_k A_k/K, c^revKL_k = -P_k(d_k - d̄), d = s - A, s = εu, "
                                        "ΣA = 0 (K = 3): Δ_k = 0 at ε = 0 and dΔ_k/dε = (1/K)[(u_k - ū) + ū A_k + "
                                        "(1/K)Σ u_m A_m] — the spec's first-order Δ, signs as printed; Eq. 29's "
                                        "split of c^revKL (A/K + sA/K - s̄A/K - ΣsA/K² - (s - s̄)/K) and c^PG ≈ A/K + sA/K "
                                        "confirmed; with ΣA ≠ 0, Δ(0) = Ā/K ≠ 0")


from fiberlab.claims.lpo import pointwise_target  # noqa: E402


@pointwise_target.check("theory")
def _pointwise_target_vs_eq8() -> Evidence:
    """C.4 vs Eq. 8 ratio = π_b ratio; c^point = -w*, Σ = -1, ≠ 0 at P = w*; SNIS limits (K = 3)."""
    ids, facts, _ = sym_lpo.pointwise_target(3)
    ids2, facts2, ce = sym_lpo.pointwise_target(2)                      # the K = 2 counterexample of the condition
    ids.update({f"{k} (K=2)": v for k, v in ids2.items()})
    facts.update({f"{k} (K=2)": v for k, v in facts2.items()})
    ev = _symbolic(ids, facts, detail="(w^C4_1/w*_1)/(w^C4_2/w*_2) = π_b(y_1)/π_b(y_2): the C.4 target equals Eq. 8's "
                                      "only when π_b is equal on the group; SNIS with Eq. 8's weights → π_b e^{R/τ}/Z "
                                      "(the KL-regularised target), with C.4's → π_b² e^{R/τ}/Z₂; c^point = -w*, "
                                      "Σ c^point = -1, c^point(P = w*) = -w* ≠ 0 while c^fwd(P = w*) = 0 (K = 2, 3); "
                                      f"counterexample π_b = (4/5, 1/5), R = (1, 0), τ = 1: w^C4_1 = {ce['wC4_1']} vs "
                                      f"w*_1 = {ce['w*_1']}")
    if ev.passed:
        ev.counterexample = {"pi_b": [0.8, 0.2], "R": [1, 0], "tau": 1, "wC4_1": float(ce["wC4_1"]),
                             "w_eq8_1": float(ce["w*_1"])}
    return ev
