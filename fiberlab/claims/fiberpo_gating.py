"""FiberPO's gating claims (Fibration Policy Optimization, arXiv 2603.08239 v1, §4–§6, App. E; spec
``spec/fiberpo.md`` §2.9–§2.14): Fiber Bundle Gating, the FiberPO objective, its regimes and Jacobian, the
Fibration Gating Hierarchy and FiberPO-Domain — declared here with their theory and numerics checks.

Readings (spec §5): sign label ``l = +1`` at ``log r = 0`` (A4; the value of 𝒢 does not depend on it), no PPO
min (A8), regime intervals of Eq. 10 with a closed clip interval (A12), one budget shared by all levels of
FiberPO-Domain unless per-level budgets are given (A5).
"""

from __future__ import annotations

import numpy as np

from fiberlab.claims._symbolic import symbolic_evidence as _symbolic
from fiberlab.numerics import fiberpo as ref_fiberpo
from fiberlab.registry import Evidence, claim
from fiberlab.theory import fiberpo as sym_fiberpo

# Tolerances. Every closed form here is a handful of float64 operations on O(1) numbers, so two evaluations of the
# same quantity by different routes (matrices vs closed form) agree to a few ulp; 1e-12 leaves three orders of
# margin. Central differences with relative step 1e-6 on a map that is smooth on the branch (𝒢 = exp(linear in
# log r)) err by O(h²) ≈ 1e-12 plus rounding O(2^-52/h) ≈ 1e-10 per unit of |𝒢|; 1e-7 (relative to max(1, |J|))
# leaves three orders of margin and is still 1e-5 of the smallest coupling term (G/(rT) with T ≤ 12).
EXACT_TOL = 1e-12
FD_STEP = 1e-6
FD_TOL = 1e-7
# Finite-difference points are drawn at least this far (in log-ratio units) from every kink (kink_margin), so a
# step of FD_STEP·r (|Δ log r| ≤ 1.1e-6, |Δu| ≤ 2.2e-6) never crosses one.
KINK_MARGIN = 1e-4

SEED = 20260309


# ---------------------------------------------------------------------------------------------------------------
# declarations
# ---------------------------------------------------------------------------------------------------------------

g_agg_claim = claim(
    "fiberpo.g_agg", paper="FiberPO", source="FiberPO Eq. 10/78, Fig. 2(a)",
    statement="g_agg(x, C, T) is continuous (value C at |x| = C, 0 at |x| = C* = (1+1/T)C), has slopes 1, -T, 0 on "
              "pass-through, rollback and zeroed, and is odd; with k = T = 3, C = 0.15 it is zero from |x| = 0.2 on.")

fbg_construction = claim(
    "fbg.construction", paper="FiberPO", source="FiberPO Def. 4.3/4.4, App. E.5.4",
    statement="FiberPO is the FBG with 𝓕(r)_(i;l) = max(l log r_i, 0)/T_τ, π_E*(i;l) = (τ;l), K = 1/T_τ, "
              "𝓡(σ)_i = exp(T_τ(σ_(i;+) - σ_(i;-))), g_Fiber = clip(·, ±ε/T_τ), g_Base = g_agg(·, C^(l), T_τ): the "
              "reflecting condition π_E*∘K = id and 𝓡∘𝓕 = id hold and 𝓡∘G∘𝓕 is Eq. 7.")

fbg_first_order = claim(
    "fbg.first_order", paper="FiberPO", source="FiberPO Thm. 4.5, Remarks 4.6/E.3",
    statement="With gates that are the identity (value and slope 1) at the on-policy point, G(𝓕(1)) = 𝓕(1) and the "
              "Jacobian of the gating map there is the identity, so Ĵ and ∇Ĵ agree with the linear surrogate at "
              "θ_old; naive ratio-space mixing of a global and a local gate does not have this property.")

fgh_composition = claim(
    "fgh.composition", paper="FiberPO", source="FiberPO Def. 6.2, Eqs. 26–29, Remark 6.3, App. E.7",
    statement="The FGH gating map G(σ) = Σ_k K_{n←k} G_k(π_{k←n*}σ) over token → trajectory → group → domain, with "
              "reflecting kernels at every level, reproduces FiberPO-Domain's Eq. 31 exactly; n = 1 is FBG/FiberPO.")

decoupling = claim(
    "fiberpo.decoupling", paper="FiberPO", source="FiberPO §5.2 (ratio decoupling) and its G-I corollary",
    statement="If |u_i| ≤ ε and |v_i| ≤ ε then log r̃_i = log r_i - mean_t log r_t; in G-I with no clip active, "
              "𝒢_i = r_i exactly.")

global_regimes = claim(
    "fiberpo.global_regimes", paper="FiberPO", source="FiberPO §5.1, Fig. 2(b)",
    status="conditional",
    statement="With C+ = 0.2, C- = 0.1, k = 2 the channel boundaries are C*+ = 0.3, C*- = 0.15; |log w^base| rises in "
              "G-II,r, peaks at the surviving channel's C in G-II, declines in G-III,r and w = 1 in G-III.",
    condition="The exact statements hold on every point of each region: G-I log w = log s+ - log s-, G-II "
              "|log w| = the surviving channel's aggregate ≤ its C (supremum C), G-III w = 1. 'Rising' and "
              "'declining' describe a path on which both channel drifts grow together (the diagonal log s+ = log s- "
              "of Fig. 2b); they are not properties of the regions: at log s+ = 0 and log s- ∈ (C-, C*-) (G-II,r) "
              "|log w| = g_agg(log s-) falls as the drift grows.")

jacobian = claim(
    "fiberpo.jacobian", paper="FiberPO", source="FiberPO Prop. 5.2 (Eq. 20), Properties 5.3, 5.4",
    statement="∂𝒢_i/∂r_j is Eq. 20 away from kinks; it is block-diagonal over trajectories and the identity at r = 1.")

scale_separation = claim(
    "fiberpo.scale_separation", paper="FiberPO", source="FiberPO Property 5.5",
    status="conditional",
    statement="Eq. 20's local term (a) is O(1) and the trajectory-mediated term (b) is O(1/T_τ): |J_ij| ≤ "
              "2𝒢_i/(r_j T_τ) for i ≠ j.",
    condition="Only while both channels of the trajectory are in pass-through or zeroed (γ ∈ {1, 0}). In rollback "
              "γ = -T_τ and the off-diagonal coupling is O(1): |J_ij| r_j T_τ/𝒢_i = T_τ or T_τ + 1.")

l3_jacobian = claim(
    "fiberpo.l3_jacobian", paper="FiberPO", source="FiberPO §5.2 (L-III remark), open question A11",
    status="conditional",
    statement="In L-III (every |u_i| > ε) the Jacobian reduces to 𝒢/r_j · γ^(l_j)/T_τ.",
    condition="Only if also |v_i| > ε (or l_i = l_j). With |v_i| ≤ ε Eq. 20 keeps -𝕀[|v_i| ≤ ε](1-𝕀[l_i = l_j])/T_τ; "
              "e.g. log r = (0.3, 0.3, 0.001, -0.05), ε = 0.02, C+ = 0.2, C- = 0.1 is L-III with log s- = 0.0125 ≤ ε, "
              "and ∂𝒢_0/∂r_3 = 0 while the remark gives 𝒢_0/(4 r_3) ≈ 0.31.")

eq79 = claim(
    "fiberpo.eq79", paper="FiberPO", source="FiberPO Eq. 79 vs Eq. 7/80, open question A10",
    status="conditional",
    statement="Eq. 79's per-token gate l·clip(l log r - log s^(l), ±ε) + l·g_agg(log s^(l), C^(l), T) is FiberPO's "
              "log gated ratio (Eq. 7).",
    condition="Eq. 7 minus Eq. 79 is l·[clip(log s^(-l), ±ε) - g_agg(log s^(-l), C^(-l), T)] (the opposite "
              "channel's terms): they coincide when log s^(-l) ≤ ε and that channel is in pass-through (ε ≤ C), and differ "
              "otherwise (apart from isolated rollback points where g_agg = ε). Eq. 7 is the objective.")

restorative = claim(
    "fiberpo.restorative", paper="FiberPO", source="FiberPO §5.1/§5.2 (rollback regime)",
    statement="For a trajectory with every log r_t = x ∈ (C+, C*+) and Â > 0, ∂Ĵ/∂x < 0 (restorative), whereas the "
              "PPO/GRPO clip with the same ε gives 0 there.")

domain_reductions = claim(
    "fiberpo_domain.reductions", paper="FiberPO", source="FiberPO Def. 6.4, Eqs. 30–33, App. E.7",
    statement="FiberPO-Domain equals FiberPO when every level gate is in pass-through (telescoping) and when each "
              "group has one trajectory and each domain one group; its Jacobian at r = 1 is the identity; it is not "
              "block-diagonal over trajectories once a group-level gate leaves pass-through.")


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------


def _random_batch(rng, n_traj=None, scale=None):
    """A flat batch: trajectory lengths 2..6, log-ratios N(drift, scale) with a per-trajectory drift."""
    n_traj = n_traj or int(rng.integers(2, 5))
    lengths = rng.integers(2, 7, size=n_traj)
    ids = np.repeat(rng.permutation(100)[:n_traj], lengths)
    perm = rng.permutation(ids.size)                 # trajectories need not be contiguous
    ids = ids[perm]
    scale = scale if scale is not None else float(rng.choice([0.01, 0.05, 0.15, 0.3]))
    drift = rng.normal(0, scale, size=100)
    lr = drift[ids] + rng.normal(0, scale, size=ids.size)
    return lr, ids


def _params(rng):
    eps = float(rng.uniform(0.01, 0.06))
    return eps, float(rng.uniform(0.08, 0.25)), float(rng.uniform(0.04, 0.15))


def _gate(ids, eps, c_pos, c_neg):
    return lambda r: ref_fiberpo.fiberpo_gated_ratio(np.log(r), ids, eps, c_pos, c_neg)


def _away_from_kinks(rng, n_cases, **kw):
    """Random (log_r, ids, eps, C+, C-) at least KINK_MARGIN from every kink."""
    out = []
    while len(out) < n_cases:
        lr, ids = _random_batch(rng, **kw)
        eps, c_pos, c_neg = _params(rng)
        if ref_fiberpo.kink_margin(lr, ids, eps, c_pos, c_neg) > KINK_MARGIN:
            out.append((lr, ids, eps, c_pos, c_neg))
    return out


# ---------------------------------------------------------------------------------------------------------------
# fiberpo.g_agg
# ---------------------------------------------------------------------------------------------------------------


@g_agg_claim.check("theory")
def _g_agg_symbolic() -> Evidence:
    """Continuity, slopes, oddness branch by branch; the Piecewise agrees with the branches; Fig. 2(a)'s C* = 0.2."""
    ids = sym_fiberpo.g_agg_properties()
    ids.update(sym_fiberpo.piecewise_agrees_with_branches())
    return _symbolic(ids, detail="g_agg continuous at ±C (value ±C) and ±C* (value 0), slopes 1, -T, 0, odd on every "
                                 "branch; Fig. 2(a): C = 0.15, T = 3 gives C* = 0.2 exactly, where rollback hits 0")


@g_agg_claim.check("numerics")
def _g_agg_float64() -> Evidence:
    """float64 g_agg vs SymPy's Piecewise on a grid; one-sided limits at C and C*; slopes by differences inside
    each branch; g(-x) = -g(x); Fig. 2(a): zero on [0.2, 0.5], positive just below."""
    import sympy as sp
    errs = []
    cases = 0
    for Cv, Tv in ((0.15, 3), (0.2, 2), (0.1, 2), (0.05, 17)):
        f = sp.lambdify(sym_fiberpo.x, sym_fiberpo.g_agg(sym_fiberpo.x, sp.Float(Cv), sp.Integer(Tv)), "numpy")
        xs = np.linspace(-2.5 * Cv, 2.5 * Cv, 1001)
        errs.append(np.max(np.abs(ref_fiberpo.g_agg(xs, Cv, Tv) - np.array([float(f(v)) for v in xs]))))
        errs.append(np.max(np.abs(ref_fiberpo.g_agg(-xs, Cv, Tv) + ref_fiberpo.g_agg(xs, Cv, Tv))))
        cs = (1 + 1 / Tv) * Cv
        d = 1e-9                         # one-sided limits: the gate moves by at most T·d across d
        errs += [abs(ref_fiberpo.g_agg(Cv - d, Cv, Tv) - Cv) - d, abs(ref_fiberpo.g_agg(Cv + d, Cv, Tv) - Cv) - Tv * d,
                 abs(ref_fiberpo.g_agg(cs - d, Cv, Tv)) - Tv * d, abs(ref_fiberpo.g_agg(cs + d, Cv, Tv))]
        for lo, hi, slope in ((0, Cv, 1.0), (Cv, cs, -Tv), (cs, 2 * cs, 0.0)):
            z = np.linspace(lo, hi, 12)[1:-1]
            h = (hi - lo) / 1000
            fd = (ref_fiberpo.g_agg(z + h, Cv, Tv) - ref_fiberpo.g_agg(z - h, Cv, Tv)) / (2 * h)
            errs.append(np.max(np.abs(fd - slope)) / max(1.0, abs(slope)))
        cases += xs.size
    far = np.linspace(0.2, 0.5, 301)
    zero_beyond = float(np.max(np.abs(ref_fiberpo.g_agg(far, 0.15, 3))) + np.max(np.abs(ref_fiberpo.g_agg(-far, 0.15, 3))))
    below = float(ref_fiberpo.g_agg(0.2 - 1e-3, 0.15, 3))
    err = max(max(errs), zero_beyond)
    ok = err <= 1e-9 and below > 0
    return Evidence(passed=ok, max_error=err, tolerance=1e-9, cases=cases,
                    detail=f"float64 = Piecewise, continuous, slopes 1/-T/0, odd (C, T) ∈ {{(0.15,3), (0.2,2), (0.1,2), "
                           f"(0.05,17)}}; Fig. 2(a): g = 0 on |x| ∈ [0.2, 0.5], g(0.199) = {below:.4f} > 0; "
                           "tolerance 1e-9 = the one-sided probe d (slopes by differences on linear pieces are exact "
                           "to rounding)")


# ---------------------------------------------------------------------------------------------------------------
# fbg.construction
# ---------------------------------------------------------------------------------------------------------------


@fbg_construction.check("theory")
def _fbg_reflecting_symbolic() -> Evidence:
    """π_E* K = id for a trajectory of symbolic length: T_τ tokens with kernel weight 1/T_τ."""
    ids = {k: v for k, v in sym_fiberpo.hierarchy_identities().items() if k.startswith("π_3*")}
    return _symbolic(ids, detail="π_E*∘K = id: the fiber over (τ; l) has T_τ tokens, each with kernel weight 1/T_τ")


@fbg_construction.check("numerics")
def _fbg_matrices() -> Evidence:
    """For 40 random batches: the FBG matrices satisfy π_E*K = I, π_E*(σ - Kπ_E*σ) = 0, 𝓡𝓕 = id, and 𝓡∘G∘𝓕 = Eq. 7."""
    rng = np.random.default_rng(SEED)
    err_refl = err_rec = err_eq7 = err_orth = 0.0
    n_tok = 0
    for _ in range(40):
        lr, ids = _random_batch(rng)
        eps, c_pos, c_neg = _params(rng)
        b = ref_fiberpo.fiberpo_bundle(ids, eps, c_pos, c_neg)
        r = np.exp(lr)
        sigma = b.F(r)
        err_refl = max(err_refl, b.fbg.reflecting_defect())
        err_orth = max(err_orth, float(np.max(np.abs(b.pushforward @ (sigma - b.kernel @ (b.pushforward @ sigma))))))
        err_rec = max(err_rec, float(np.max(np.abs(b.R(sigma) / r - 1))))
        G = ref_fiberpo.fiberpo_gated_ratio(lr, ids, eps, c_pos, c_neg)
        err_eq7 = max(err_eq7, float(np.max(np.abs(b.fbg.ratio_gate(r) / G - 1))))
        n_tok += lr.size
    err = max(err_refl, err_rec, err_eq7, err_orth)
    return Evidence.within(err, EXACT_TOL, 40,
                           detail=f"40 batches, {n_tok} tokens, drift scales 0.01–0.3 (all regimes): |π_E*K - I| = "
                                  f"{err_refl:.1e}, |π_E*(σ - Kπ_E*σ)| = {err_orth:.1e}, |𝓡𝓕(r)/r - 1| = {err_rec:.1e}, "
                                  f"|𝓡G𝓕(r)/Eq.7 - 1| = {err_eq7:.1e}")


# ---------------------------------------------------------------------------------------------------------------
# fbg.first_order
# ---------------------------------------------------------------------------------------------------------------


@fbg_first_order.check("theory")
def _first_order_symbolic() -> Evidence:
    """On the on-policy branch log 𝒢_i = y_i (d/dy_j = δ_ij) and Eq. 20's bracket is δ_ij, both sign patterns."""
    return _symbolic(sym_fiberpo.on_policy_identities(3),
                     detail="at r = 1 (all channels pass, no clip) ∂ log 𝒢_i/∂ log r_j = δ_ij, derived and from Eq. 20 "
                            "(T = 3, sign patterns +++ and ++-)")


@fbg_first_order.check("numerics")
def _first_order_fd() -> Evidence:
    """G(𝓕(1)) = 𝓕(1); the σ-space Jacobian of G at 𝓕(1) and the r-space Jacobian of 𝒢 at 1 are identities
    (central differences); a naive product of a trajectory gate and a token clip has Jacobian I + 11ᵀ/T_τ."""
    rng = np.random.default_rng(SEED + 1)
    err = 0.0
    naive_dev = []
    for _ in range(10):
        lr, ids = _random_batch(rng)
        eps, c_pos, c_neg = _params(rng)
        b = ref_fiberpo.fiberpo_bundle(ids, eps, c_pos, c_neg)
        one = np.ones(lr.size)
        s1 = b.F(one)
        err = max(err, float(np.max(np.abs(b.fbg.gate(s1) - s1))))
        Js = ref_fiberpo.numerical_jacobian(lambda s: b.fbg.gate(s - 1.0), s1 + 1.0, FD_STEP)   # shift: step relative to 1
        err = max(err, float(np.max(np.abs(Js - np.eye(s1.size)))))
        Jr = ref_fiberpo.numerical_jacobian(_gate(ids, eps, c_pos, c_neg), one, FD_STEP)
        err = max(err, float(np.max(np.abs(Jr - np.eye(lr.size)))))

        def naive(r, ids=ids, eps=eps, c_pos=c_pos, c_neg=c_neg):   # Remark 4.6: global gate × local clip of the raw ratio
            p = ref_fiberpo.fiberpo_parts(np.log(r), ids, eps, c_pos, c_neg)
            return np.exp(p.log_w_base + np.clip(np.log(r), -eps, eps))
        Jn = ref_fiberpo.numerical_jacobian(naive, one, FD_STEP)
        agg = ref_fiberpo.trajectory_aggregates(lr, ids)
        expected = np.eye(lr.size) + (agg.index[:, None] == agg.index[None, :]) / agg.T[agg.index][:, None]
        err = max(err, float(np.max(np.abs(Jn - expected))))
        naive_dev.append(float(np.max(np.abs(Jn - np.eye(lr.size)))))
    ok = err <= FD_TOL and min(naive_dev) >= 1 / 6 - FD_TOL
    return Evidence(passed=ok, max_error=err, tolerance=FD_TOL, cases=10,
                    detail=f"10 batches: G(𝓕(1)) = 𝓕(1), Jacobians of G (σ-space) and 𝒢 (r-space) at on-policy = I "
                           f"within {err:.1e}; naive mixing w^base·logclip(r, ε) has Jacobian I + 11ᵀ/T_τ "
                           f"(max |J - I| ≥ {min(naive_dev):.3f}): the trajectory mean is counted twice, "
                           "first-order agreement is lost")


# ---------------------------------------------------------------------------------------------------------------
# fgh.composition and fiberpo_domain.reductions
# ---------------------------------------------------------------------------------------------------------------


def _random_hierarchy(rng, n_traj=None, scale=None):
    lr, ids = _random_batch(rng, n_traj=n_traj or int(rng.integers(3, 7)), scale=scale)
    labels = np.unique(ids)
    n_g = int(rng.integers(1, labels.size + 1))
    g_of = dict(zip(labels, rng.integers(0, n_g, size=labels.size)))
    d_of_g = rng.integers(0, 2, size=n_g)
    gid = np.array([g_of[t] for t in ids])
    did = d_of_g[gid]
    return lr, ids, gid, did


@fgh_composition.check("theory")
def _fgh_symbolic() -> Evidence:
    """Reflecting identities of K_0, K_1, K_2 with symbolic counts; the path weight K_2K_1K_0; telescoping."""
    return _symbolic(sym_fiberpo.hierarchy_identities(),
                     detail="π_{k*}K_{k-1} = id at every level (symbolic T_τ, |Tj(g)|); the domain term reaches a token "
                            "with weight 1/(|Tj(D)|T_τ), undoing the gate's |Tj(D)| scaling; level arguments telescope")


@fgh_composition.check("numerics")
def _fgh_matrices() -> Evidence:
    """30 random token → trajectory → group → domain hierarchies: reflecting defects, FGH vs Eq. 31 (shared and
    per-level budgets), n = 1 FGH vs FBG vs Eq. 7."""
    rng = np.random.default_rng(SEED + 2)
    err_refl = err31 = err_n1 = 0.0
    for k in range(30):
        lr, ids, gid, did = _random_hierarchy(rng)
        eps, c_pos, c_neg = _params(rng)
        if k % 2:   # spec A5: per-level budgets (domain, group, trajectory)
            c_pos, c_neg = tuple(rng.uniform(0.05, 0.25, 3)), tuple(rng.uniform(0.03, 0.15, 3))
        H = ref_fiberpo.fiberpo_domain_fgh(ids, gid, did, eps, c_pos, c_neg)
        err_refl = max(err_refl, max(H.reflecting_defects()))
        r = np.exp(lr)
        closed = ref_fiberpo.fiberpo_domain_gated_ratio(lr, ids, gid, did, eps, c_pos, c_neg)
        err31 = max(err31, float(np.max(np.abs(H.ratio_gate(r) / closed - 1))))
        e1, c1, n1 = _params(rng)
        one = ref_fiberpo.fiberpo_fgh(ids, e1, c1, n1)
        G = ref_fiberpo.fiberpo_gated_ratio(lr, ids, e1, c1, n1)
        err_n1 = max(err_n1, float(np.max(np.abs(one.ratio_gate(r) / G - 1))),
                     float(np.max(np.abs(ref_fiberpo.fiberpo_bundle(ids, e1, c1, n1).fbg.gate(one.decompose(r))
                                         - one.gate(one.decompose(r))))))
    err = max(err_refl, err31, err_n1)
    return Evidence.within(err, EXACT_TOL, 30,
                           detail=f"30 hierarchies (3–6 trajectories, random groups and 2 domains, shared and per-level "
                                  f"budgets): reflecting defects ≤ {err_refl:.1e}; FGH 𝓡G𝓕 vs Eq. 31 {err31:.1e} "
                                  f"(relative); n = 1 FGH = FBG = Eq. 7 within {err_n1:.1e}")


@domain_reductions.check("theory")
def _domain_telescoping_symbolic() -> Evidence:
    """Telescoping of the three level arguments (pass-through) to log s_τ."""
    ids = {k: v for k, v in sym_fiberpo.hierarchy_identities().items() if k.startswith("telescoping")}
    return _symbolic(ids, detail="in pass-through Eq. 31's bracket is s_D + (s_g - s_D) + (s_τ - s_g) = s_τ per channel, "
                                 "so log w^Base = log s+_τ - log s-_τ as in FiberPO's G-I")


@domain_reductions.check("numerics")
def _domain_reductions_float64() -> Evidence:
    """(a) small drift, every level in pass-through ⇒ = FiberPO; (b) singleton groups and domains ⇒ = FiberPO at
    any drift; (c) Jacobian at r = 1 is I; (d) group in rollback ⇒ nonzero cross-trajectory Jacobian entries."""
    rng = np.random.default_rng(SEED + 3)
    errs = {"a": 0.0, "b": 0.0, "c": 0.0}
    n_a = 0
    while n_a < 20:
        lr, ids, gid, did = _random_hierarchy(rng, scale=0.01)
        eps, c_pos, c_neg = 0.03, 0.2, 0.12
        parts = ref_fiberpo.fiberpo_domain_parts(lr, ids, gid, did, eps, c_pos, c_neg)
        if not all(np.all(ref_fiberpo.g_agg_regime(a, C, T) == ref_fiberpo.PASS) for lv in parts["levels"].values() for a, C, T in lv):
            continue
        n_a += 1
        errs["a"] = max(errs["a"], float(np.max(np.abs(ref_fiberpo.fiberpo_domain_gated_ratio(lr, ids, gid, did, eps, c_pos, c_neg)
                                                       / ref_fiberpo.fiberpo_gated_ratio(lr, ids, eps, c_pos, c_neg) - 1))))
    for _ in range(20):
        lr, ids = _random_batch(rng, scale=0.3)
        eps, c_pos, c_neg = _params(rng)
        errs["b"] = max(errs["b"], float(np.max(np.abs(ref_fiberpo.fiberpo_domain_gated_ratio(lr, ids, ids, ids, eps, c_pos, c_neg)
                                                       / ref_fiberpo.fiberpo_gated_ratio(lr, ids, eps, c_pos, c_neg) - 1))))
    for _ in range(5):
        lr, ids, gid, did = _random_hierarchy(rng)
        f = lambda r, a=(ids, gid, did): ref_fiberpo.fiberpo_domain_gated_ratio(np.log(r), *a, 0.03, 0.2, 0.1)  # noqa: E731
        J = ref_fiberpo.numerical_jacobian(f, np.ones(lr.size), FD_STEP)
        errs["c"] = max(errs["c"], float(np.max(np.abs(J - np.eye(lr.size)))))
    # (d) one domain, two groups: group 0 (trajectories 0, 1) drifts up by 0.3 per token, group 1 (trajectories
    # 2–7) stays on-policy. The domain mean is 0.075 and group 0's argument log s+_g - log s+_D = 0.225 lies in its
    # rollback band (0.2, 0.2·(1 + 1/6)); the trajectory and domain levels pass through.
    lr = np.concatenate([[0.30, 0.28, 0.32, 0.31, 0.29, 0.30], 0.002 * np.array([1, -1, 0.5, -0.5, 1, 1, -1, 0.5,
                                                                                 -1, 0.5, 1, -0.5])])
    ids = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7])
    gid = (ids >= 2).astype(int)
    did = np.zeros(ids.size, dtype=int)
    eps, c_pos, c_neg = 0.03, 0.2, 0.1
    parts = ref_fiberpo.fiberpo_domain_parts(lr, ids, gid, did, eps, c_pos, c_neg)
    lv = parts["levels"][1]                                   # positive channel: (domain, group, trajectory)
    regimes = [ref_fiberpo.REGIME_NAMES[int(ref_fiberpo.g_agg_regime(a, C, T)[0])] for a, C, T in lv]
    f = lambda r: ref_fiberpo.fiberpo_domain_gated_ratio(np.log(r), ids, gid, did, eps, c_pos, c_neg)  # noqa: E731
    J = ref_fiberpo.numerical_jacobian(f, np.exp(lr), FD_STEP)
    cross = float(np.max(np.abs(J[np.ix_(ids == 0, ids != 0)])))
    J_fp = ref_fiberpo.numerical_jacobian(_gate(ids, eps, c_pos, c_neg), np.exp(lr), FD_STEP)
    cross_fp = float(np.max(np.abs(J_fp[np.ix_(ids == 0, ids != 0)])))
    grp_regime = ref_fiberpo.g_agg_regime(*lv[1])
    err = max(errs.values())
    ok = (err <= FD_TOL and regimes == ["P", "R", "P"] and bool(np.all(grp_regime[:2] == ref_fiberpo.ROLLBACK))
          and cross > 1e-3 and cross_fp == 0.0)
    return Evidence(passed=ok, max_error=err, tolerance=FD_TOL, cases=45 + 1,
                    detail=f"(a) 20 all-pass hierarchies = FiberPO within {errs['a']:.1e}; (b) 20 batches with singleton "
                           f"groups/domains = FiberPO within {errs['b']:.1e} (any drift); (c) Jacobian at r = 1 = I "
                           f"within {errs['c']:.1e}; (d) positive-channel levels (domain, group, trajectory) of trajectory 0 "
                           f"in {regimes} (group argument {lv[1][0][0]:.3f} ∈ (0.2, 0.233)): max |∂𝒢_i/∂r_j| from "
                           f"trajectory 0 to the others = {cross:.3f} (FiberPO: {cross_fp}) — not block-diagonal")


# ---------------------------------------------------------------------------------------------------------------
# fiberpo.decoupling
# ---------------------------------------------------------------------------------------------------------------


@decoupling.check("theory")
def _decoupling_symbolic() -> Evidence:
    return _symbolic(sym_fiberpo.decoupling_identities((1, 1, -1)) | {f"{k} (+-)": v for k, v in
                                                              sym_fiberpo.decoupling_identities((1, -1)).items()},
                     detail="log s+ - log s- = mean log r; unclipped log r̃_i = log r_i - mean; in G-I log 𝒢_i = log r_i "
                            "(T = 3 with signs ++-, T = 2 with +-)")


@decoupling.check("numerics")
def _decoupling_float64() -> Evidence:
    """Random small-drift trajectories with every |u|, |v| ≤ ε: log r̃ = log r - mean; in G-I 𝒢 = r."""
    rng = np.random.default_rng(SEED + 4)
    err_fiber = err_g = 0.0
    n = n_gi = 0
    for _ in range(400):
        lr, ids = _random_batch(rng, scale=float(rng.choice([0.005, 0.01, 0.02])))
        eps, c_pos, c_neg = 0.05, float(rng.uniform(0.005, 0.03)), float(rng.uniform(0.005, 0.03))
        p = ref_fiberpo.fiberpo_parts(lr, ids, eps, c_pos, c_neg)
        ok = (np.abs(p.u) <= eps) & (np.abs(p.v) <= eps)
        agg = ref_fiberpo.trajectory_aggregates(lr, ids)
        mean = (np.bincount(agg.index, weights=lr) / agg.T)[agg.index]
        if ok.any():
            n += int(ok.sum())
            err_fiber = max(err_fiber, float(np.max(np.abs(p.log_r_fiber - (lr - mean))[ok])))
        gi = (ref_fiberpo.global_regime(p.log_s_pos, p.log_s_neg, c_pos, c_neg, p.T) == 0)
        sel = gi & ok
        # a trajectory is in the corollary's case when every one of its tokens is unclipped
        full = np.bincount(agg.index, weights=(~ok).astype(float), minlength=agg.T.size)[agg.index] == 0
        sel &= full
        if sel.any():
            n_gi += int(sel.sum())
            G = ref_fiberpo.fiberpo_gated_ratio(lr, ids, eps, c_pos, c_neg)
            err_g = max(err_g, float(np.max(np.abs(G / np.exp(lr) - 1)[sel])))
    err = max(err_fiber, err_g)
    ok = err <= EXACT_TOL and n > 100 and n_gi > 100
    return Evidence(passed=ok, max_error=err, tolerance=EXACT_TOL, cases=n + n_gi,
                    detail=f"{n} unclipped tokens: |log r̃ - (log r - mean log r)| ≤ {err_fiber:.1e}; {n_gi} tokens of "
                           f"G-I, fully unclipped trajectories: |𝒢/r - 1| ≤ {err_g:.1e}")


# ---------------------------------------------------------------------------------------------------------------
# fiberpo.global_regimes (Fig. 2b)
# ---------------------------------------------------------------------------------------------------------------

FIG2B = {"C_pos": 0.2, "C_neg": 0.1, "T": 2}


def fig2b_grid(n: int = 401, top: float = 0.4):
    """Fig. 2(b): log w^base over (log s+, log s-) ∈ [0, top]², and the regime of every point."""
    a = np.linspace(0, top, n)
    A, B = np.meshgrid(a, a, indexing="xy")       # A = log s+ (x axis), B = log s- (y axis)
    c_pos, c_neg, T = FIG2B["C_pos"], FIG2B["C_neg"], FIG2B["T"]
    logw = ref_fiberpo.g_agg(A, c_pos, T) - ref_fiberpo.g_agg(B, c_neg, T)
    return A, B, logw, ref_fiberpo.global_regime(A, B, c_pos, c_neg, T)


@global_regimes.check("numerics")
def _global_regimes_fig2b() -> Evidence:
    """Boundaries 0.3/0.15; per-region exact statements on the Fig. 2(b) grid; the diagonal path rises, peaks at
    C+ = 0.2, declines, ends at w = 1; counterexample: log s+ = 0 and log s- ∈ (C-, C*-) has |log w| falling."""
    c_pos, c_neg, T = FIG2B["C_pos"], FIG2B["C_neg"], FIG2B["T"]
    A, B, logw, reg = fig2b_grid()
    c_star_pos, c_star_neg = (1 + 1 / T) * c_pos, (1 + 1 / T) * c_neg
    errs = [abs(c_star_pos - 0.3), abs(c_star_neg - 0.15)]
    errs.append(float(np.max(np.abs(logw - (A - B))[reg == 0])))                       # G-I
    rp, rn = ref_fiberpo.g_agg_regime(A, c_pos, T), ref_fiberpo.g_agg_regime(B, c_neg, T)
    g2 = reg == 2
    surviving = np.where(rp == ref_fiberpo.ZERO, B, A)
    c_surv = np.where(rp == ref_fiberpo.ZERO, c_neg, c_pos)
    errs.append(float(np.max(np.abs(np.abs(logw) - surviving)[g2])))                   # G-II: |log w| = survivor
    errs.append(float(max(0.0, np.max((np.abs(logw) - c_surv)[g2]))))                  # ... ≤ its C
    peak_pos = float(np.max(np.abs(logw)[g2 & (rn == ref_fiberpo.ZERO)]))                        # sup = C+ (grid hits it)
    peak_neg = float(np.max(np.abs(logw)[g2 & (rp == ref_fiberpo.ZERO)]))
    errs += [abs(peak_pos - c_pos), abs(peak_neg - c_neg)]
    errs.append(float(np.max(np.abs(logw[reg == 4]))))                                 # G-III: w = 1
    # the diagonal path log s+ = log s- = t
    t = np.linspace(0, 0.4, 4001)
    lw = np.abs(ref_fiberpo.g_agg(t, c_pos, T) - ref_fiberpo.g_agg(t, c_neg, T))
    rt = ref_fiberpo.global_regime(t, t, c_pos, c_neg, T)
    d = np.diff(lw)
    inner = rt[1:] == rt[:-1]
    rising = bool(np.all(d[inner & (rt[1:] == 1)] > 0))
    declining = bool(np.all(d[inner & (rt[1:] == 3)] < 0))
    peak_t = float(t[np.argmax(lw)])
    errs += [abs(float(lw.max()) - c_pos), float(np.max(lw[rt == 4])), float(np.max(lw[rt == 0]))]
    # off the diagonal: log s+ = 0, log s- through the negative channel's rollback band
    b = np.linspace(c_neg, c_star_neg, 202)[1:-1]
    off = np.abs(ref_fiberpo.g_agg(0 * b, c_pos, T) - ref_fiberpo.g_agg(b, c_neg, T))
    off_reg = ref_fiberpo.global_regime(0 * b, b, c_pos, c_neg, T)
    falls = bool(np.all(off_reg == 1) and np.all(np.diff(off) < 0))
    err = max(errs)
    ok = err <= EXACT_TOL and rising and declining and falls
    counts = {name: int(np.sum(reg == k)) for k, name in enumerate(ref_fiberpo.GLOBAL_REGIMES)}
    return Evidence(passed=ok, max_error=err, tolerance=EXACT_TOL, cases=int(reg.size + t.size + b.size),
                    detail=f"C*+ = {c_star_pos:.2f}, C*- = {c_star_neg:.2f}; grid 401² {counts}: G-I log w = "
                           f"log s+ - log s-, G-II |log w| = surviving aggregate ≤ C (sup {peak_pos:.3f} = C+, "
                           f"{peak_neg:.3f} = C-), G-III w = 1; diagonal: rising in G-II,r {rising}, peak "
                           f"{lw.max():.3f} at t = {peak_t:.3f}, declining in G-III,r {declining}; counterexample "
                           f"log s+ = 0, log s- ∈ (0.10, 0.15) (G-II,r): |log w| falls from {off[0]:.3f} to "
                           f"{off[-1]:.4f}",
                    counterexample={"log_s_pos": 0.0, "log_s_neg": [float(b[0]), float(b[-1])],
                                    "abs_log_w": [float(off[0]), float(off[-1])]})


# ---------------------------------------------------------------------------------------------------------------
# fiberpo.jacobian
# ---------------------------------------------------------------------------------------------------------------


@jacobian.check("theory")
def _eq20_symbolic() -> Evidence:
    ids = sym_fiberpo.eq20_identities((1, 1, -1))
    ids.update({f"{k} [+-]": v for k, v in sym_fiberpo.eq20_identities((1, -1)).items()})
    return _symbolic(ids, detail=f"∂ log 𝒢_i/∂ log r_j derived by diff on every branch (9 regime pairs × every clip "
                                 f"pattern of u and v; T = 3 signs ++- and T = 2 signs +-) equals Eq. 20's bracket: "
                                 f"{len(ids)} identities")


@jacobian.check("numerics")
def _eq20_fd() -> Evidence:
    """Eq. 20 vs central differences at 60 random points ≥ KINK_MARGIN from kinks (mixed regimes); cross-trajectory
    entries exactly 0; identity at r = 1."""
    rng = np.random.default_rng(SEED + 5)
    err = 0.0
    offblock = 0.0
    seen = set()
    clip_frac = []
    for lr, ids, eps, c_pos, c_neg in _away_from_kinks(rng, 60):
        Jn = ref_fiberpo.numerical_jacobian(_gate(ids, eps, c_pos, c_neg), np.exp(lr), FD_STEP)
        Je = ref_fiberpo.jacobian_eq20(lr, ids, eps, c_pos, c_neg)
        err = max(err, float(np.max(np.abs(Jn - Je) / np.maximum(1.0, np.abs(Je)))))
        p = ref_fiberpo.fiberpo_parts(lr, ids, eps, c_pos, c_neg)
        cross = p.index[:, None] != p.index[None, :]
        offblock = max(offblock, float(np.max(np.abs(Jn[cross]), initial=0.0)))
        seen |= set(zip(ref_fiberpo.g_agg_regime(p.log_s_pos, c_pos, p.T).tolist(), ref_fiberpo.g_agg_regime(p.log_s_neg, c_neg, p.T).tolist()))
        clip_frac.append(float(np.mean(np.abs(p.u) > eps)))
        one = np.ones(lr.size)
        err = max(err, float(np.max(np.abs(ref_fiberpo.numerical_jacobian(_gate(ids, eps, c_pos, c_neg), one, FD_STEP) - np.eye(lr.size)))),
                  float(np.max(np.abs(ref_fiberpo.jacobian_eq20(np.zeros(lr.size), ids, eps, c_pos, c_neg) - np.eye(lr.size)))))
    ok = err <= FD_TOL and offblock == 0.0 and len(seen) >= 6
    names = sorted(ref_fiberpo.REGIME_NAMES[a] + ref_fiberpo.REGIME_NAMES[b] for a, b in seen)
    return Evidence(passed=ok, max_error=err, tolerance=FD_TOL, cases=60,
                    detail=f"60 random batches (2–4 trajectories, lengths 2–6): max |J_fd - Eq.20|/max(1,|J|) = {err:.1e}; "
                           f"channel regime pairs covered {names}; token clip fraction {min(clip_frac):.2f}–"
                           f"{max(clip_frac):.2f}; cross-trajectory entries exactly {offblock}; Jacobian at r = 1 = I")


# ---------------------------------------------------------------------------------------------------------------
# fiberpo.scale_separation
# ---------------------------------------------------------------------------------------------------------------


@scale_separation.check("theory")
def _scale_symbolic() -> Evidence:
    return _symbolic({}, sym_fiberpo.scale_separation_facts(),
                     detail="off-diagonal bracket (γ - a𝕀_same - b𝕀_diff)/T: |·|·T ≤ 1 ≤ 2 for γ ∈ {1, 0}; for γ = -T "
                            "|·| ≥ 1 (O(1), no 1/T) for every indicator pattern")


@scale_separation.check("numerics")
def _scale_fd() -> Evidence:
    """Normalised off-diagonal coupling |J_ij| r_j T/𝒢_i from central differences: ≤ 2 in trajectories whose
    channels are in pass-through or zeroed; ≈ T (or T+1) in a trajectory with a channel in rollback."""
    rng = np.random.default_rng(SEED + 6)
    worst_pz = 0.0
    worst_r = 0.0
    n_pz = n_r = 0
    counter = None
    for lr, ids, eps, c_pos, c_neg in _away_from_kinks(rng, 80):
        Jn = ref_fiberpo.numerical_jacobian(_gate(ids, eps, c_pos, c_neg), np.exp(lr), FD_STEP)
        p = ref_fiberpo.fiberpo_parts(lr, ids, eps, c_pos, c_neg)
        G = np.exp(p.log_w_base + p.log_r_fiber)
        norm = np.abs(Jn) * np.exp(lr)[None, :] * p.T[:, None] / G[:, None]
        off = (p.index[:, None] == p.index[None, :]) & ~np.eye(lr.size, dtype=bool)
        rollback = ((ref_fiberpo.g_agg_regime(p.log_s_pos, c_pos, p.T) == ref_fiberpo.ROLLBACK)
                    | (ref_fiberpo.g_agg_regime(p.log_s_neg, c_neg, p.T) == ref_fiberpo.ROLLBACK))[:, None]
        pz = off & ~rollback
        rb = off & rollback
        if pz.any():
            n_pz += int(pz.sum())
            worst_pz = max(worst_pz, float(norm[pz].max()))
        if rb.any():
            n_r += int(rb.sum())
            m = float(norm[rb].max())
            if m > worst_r:
                worst_r = m
                i, j = np.argwhere(rb & (norm == m))[0]
                counter = {"T": float(p.T[i]), "normalised_coupling": m, "J_ij": float(Jn[i, j]),
                           "bound_2G_i/(r_j T)": float(2 * G[i] / (np.exp(lr[j]) * p.T[i]))}
    ok = worst_pz <= 2 + FD_TOL and worst_r > 2 and n_pz > 100 and n_r > 10
    return Evidence(passed=ok, max_error=worst_pz, tolerance=2.0, cases=n_pz + n_r,
                    detail=f"{n_pz} off-diagonal pairs with channels in P/Z: max |J_ij| r_j T/𝒢_i = {worst_pz:.4f} ≤ 2; "
                           f"{n_r} pairs in rollback trajectories: max {worst_r:.2f} (T = {counter and counter['T']:.0f}): "
                           "O(1) coupling, the bound fails", counterexample=counter)


# ---------------------------------------------------------------------------------------------------------------
# fiberpo.l3_jacobian (A11)
# ---------------------------------------------------------------------------------------------------------------

L3_EXAMPLE = {"log_r": [0.3, 0.3, 0.001, -0.05], "eps": 0.02, "C_pos": 0.2, "C_neg": 0.1}


@l3_jacobian.check("theory")
def _l3_symbolic() -> Evidence:
    ids, facts = sym_fiberpo.l3_remark((1, 1, -1))
    return _symbolic(ids, facts, detail="with every u clip saturated and every |v| > ε the derived bracket is γ^(l_j)/T "
                                        "(the remark); with |v_i| ≤ ε it differs for every opposite-sign pair, on all "
                                        "9 regime pairs (T = 3, signs ++-)")


@l3_jacobian.check("numerics")
def _l3_fd() -> Evidence:
    """The remark vs central differences: matches at random L-III points with |v| > ε; fails at L3_EXAMPLE."""
    rng = np.random.default_rng(SEED + 7)
    err = 0.0
    n = 0
    tries = 0
    while n < 15 and tries < 20000:
        tries += 1
        T = int(rng.integers(3, 6))
        lr = rng.choice([-1, 1], T) * rng.uniform(0.05, 0.6, T)
        ids = np.zeros(T, dtype=int)
        eps = float(rng.uniform(0.01, 0.03))
        c_pos, c_neg = float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.05, 0.3))
        p = ref_fiberpo.fiberpo_parts(lr, ids, eps, c_pos, c_neg)
        if not (np.all(np.abs(p.u) > eps) and np.all(np.abs(p.v) > eps)) or ref_fiberpo.kink_margin(lr, ids, eps, c_pos, c_neg) < KINK_MARGIN:
            continue
        n += 1
        G = np.exp(p.log_w_base + p.log_r_fiber)
        gam = np.where(p.l > 0, p.gamma_pos, p.gamma_neg)
        remark = G[:, None] / np.exp(lr)[None, :] * gam[None, :] / T
        Jn = ref_fiberpo.numerical_jacobian(_gate(ids, eps, c_pos, c_neg), np.exp(lr), FD_STEP)
        err = max(err, float(np.max(np.abs(Jn - remark) / np.maximum(1.0, np.abs(remark)))))
    ex = L3_EXAMPLE
    lr = np.array(ex["log_r"])
    ids = np.zeros(lr.size, dtype=int)
    p = ref_fiberpo.fiberpo_parts(lr, ids, ex["eps"], ex["C_pos"], ex["C_neg"])
    G = np.exp(p.log_w_base + p.log_r_fiber)
    gam = np.where(p.l > 0, p.gamma_pos, p.gamma_neg)
    Jn = ref_fiberpo.numerical_jacobian(_gate(ids, ex["eps"], ex["C_pos"], ex["C_neg"]), np.exp(lr), FD_STEP)
    remark03 = float(G[0] / np.exp(lr[3]) * gam[3] / lr.size)
    is_l3 = bool(np.all(np.abs(p.u) > ex["eps"])) and ref_fiberpo.local_regime(lr, ids, ex["eps"])[0] == 2
    v_small = bool(abs(p.v[0]) <= ex["eps"])
    ok = err <= FD_TOL and n == 15 and is_l3 and v_small and abs(Jn[0, 3]) < FD_TOL and remark03 > 0.1
    return Evidence(passed=ok, max_error=err, tolerance=FD_TOL, cases=n + 1,
                    detail=f"{n} random L-III trajectories with all |v| > ε: remark = Jacobian within {err:.1e}; "
                           f"counterexample log r = {ex['log_r']}, ε = {ex['eps']}: L-III, |v_0| = {abs(p.v[0]):.4f} ≤ ε, "
                           f"∂𝒢_0/∂r_3 = {Jn[0, 3]:.1e} but the remark gives {remark03:.4f}",
                    counterexample={**ex, "J_03": float(Jn[0, 3]), "remark_J_03": remark03,
                                    "Eq20_J_03": float(ref_fiberpo.jacobian_eq20(lr, ids, ex['eps'], ex['C_pos'], ex['C_neg'])[0, 3])})


# ---------------------------------------------------------------------------------------------------------------
# fiberpo.eq79 (A10)
# ---------------------------------------------------------------------------------------------------------------


def eq79_log_gate(log_r, traj_ids, eps, C_pos, C_neg):
    """Eq. 79 per token: ``l clip(l log r - log s^{(l)}, ±ε) + l g_agg(log s^{(l)}, C^{(l)}, T)``."""
    p = ref_fiberpo.fiberpo_parts(log_r, traj_ids, eps, C_pos, C_neg)
    lr = np.asarray(log_r, dtype=float)
    same = np.where(p.l > 0, p.log_s_pos, p.log_s_neg)
    C_same = np.where(p.l > 0, C_pos, C_neg)
    return p.l * np.clip(p.l * lr - same, -eps, eps) + p.l * ref_fiberpo.g_agg(same, C_same, p.T)


@eq79.check("theory")
def _eq79_symbolic() -> Evidence:
    ids, facts = sym_fiberpo.eq79_difference()
    return _symbolic(ids, facts, detail="Eq. 7 - Eq. 79 = l[clip(log s^(-l)) - g_agg(log s^(-l))]: 0 when log s^(-l) ≤ ε ≤ C "
                                        "(both identities); ε - log s^(-l) ≠ 0 when ε < log s^(-l) ≤ C; ε ≠ 0 when zeroed")


@eq79.check("numerics")
def _eq79_float64() -> Evidence:
    """Random batches: Eq. 7 - Eq. 79 = l(clip(s^(-l)) - g_agg(s^(-l))) always; 0 under the condition; ≠ 0 outside."""
    rng = np.random.default_rng(SEED + 8)
    err_formula = err_cond = 0.0
    worst_outside = 0.0
    n_in = n_out = 0
    counter = None
    for _ in range(200):
        lr, ids = _random_batch(rng)
        eps, c_pos, c_neg = _params(rng)
        p = ref_fiberpo.fiberpo_parts(lr, ids, eps, c_pos, c_neg)
        eq7 = p.log_w_base + p.log_r_fiber
        e79 = eq79_log_gate(lr, ids, eps, c_pos, c_neg)
        opp = np.where(p.l > 0, p.log_s_neg, p.log_s_pos)
        C_opp = np.where(p.l > 0, c_neg, c_pos)
        diff = eq7 - e79
        err_formula = max(err_formula, float(np.max(np.abs(diff - p.l * (np.clip(opp, -eps, eps)
                                                                          - ref_fiberpo.g_agg(opp, C_opp, p.T))))))
        cond = (opp <= eps) & (ref_fiberpo.g_agg_regime(opp, C_opp, p.T) == ref_fiberpo.PASS)
        n_in += int(cond.sum())
        n_out += int((~cond).sum())
        if cond.any():
            err_cond = max(err_cond, float(np.max(np.abs(diff[cond]))))
        if (~cond).any():
            k = int(np.argmax(np.where(cond, -1, np.abs(diff))))
            if abs(diff[k]) > worst_outside:
                worst_outside = float(abs(diff[k]))
                counter = {"log_r_token": float(lr[k]), "log_s_opposite": float(opp[k]), "eps": eps,
                           "C_opposite": float(C_opp[k]), "eq7_minus_eq79": float(diff[k])}
    err = max(err_formula, err_cond)
    ok = err <= EXACT_TOL and worst_outside > 1e-3 and n_in > 100 and n_out > 100
    return Evidence(passed=ok, max_error=err, tolerance=EXACT_TOL, cases=n_in + n_out,
                    detail=f"Eq.7 - Eq.79 = l(clip(log s^(-l)) - g_agg(log s^(-l))) within {err_formula:.1e}; {n_in} tokens "
                           f"with log s^(-l) ≤ ε in pass-through agree within {err_cond:.1e}; outside ({n_out} tokens) "
                           f"the gap reaches {worst_outside:.3f} in log 𝒢", counterexample=counter)


# ---------------------------------------------------------------------------------------------------------------
# fiberpo.restorative
# ---------------------------------------------------------------------------------------------------------------


@restorative.check("theory")
def _restorative_symbolic() -> Evidence:
    ids, facts = sym_fiberpo.restorative()
    return _symbolic(ids, facts, detail="all log r_t = x in (C+, C*+): log 𝒢 = (T+1)C+ - Tx, ∂Ĵ/∂x = -T𝒢Â/|Tj| < 0; the "
                                        "GRPO clip is the constant (1+ε)Â there, derivative 0")


@restorative.check("numerics")
def _restorative_float64() -> Evidence:
    """Central differences of Eq. 6 in x for T ∈ {2, 3, 5, 10} across the rollback band vs -T𝒢Â/|Tj|; GRPO's
    clipped surrogate with the same ε has derivative 0 there."""
    eps, c_pos, c_neg, A = 0.03, 0.15, 0.09, 1.0
    err = 0.0
    worst = -np.inf
    grpo = 0.0
    n = 0
    for T in (2, 3, 5, 10):
        ids = np.zeros(T, dtype=int)
        cs = (1 + 1 / T) * c_pos
        for x in np.linspace(c_pos, cs, 9)[1:-1]:
            h = 1e-7
            J = lambda z: ref_fiberpo.fiberpo_objective(np.full(T, z), np.full(T, A), ids, eps, c_pos, c_neg)  # noqa: E731
            d = (J(x + h) - J(x - h)) / (2 * h)
            G = ref_fiberpo.fiberpo_gated_ratio(np.full(T, x), ids, eps, c_pos, c_neg)[0]
            err = max(err, abs(d - (-T * G * A)) / (T * G * A))
            worst = max(worst, d)
            grpo_J = lambda z: float(np.mean(np.clip(np.exp(np.full(T, z)), 1 - eps, 1 + eps) * A))  # noqa: E731
            grpo = max(grpo, abs((grpo_J(x + h) - grpo_J(x - h)) / (2 * h)))
            n += 1
    ok = err <= 1e-6 and worst < 0 and grpo == 0.0
    return Evidence(passed=ok, max_error=err, tolerance=1e-6, cases=n,
                    detail=f"{n} points, T ∈ {{2, 3, 5, 10}}, x across (C+, C*+) with C+ = {c_pos}: ∂Ĵ/∂x = -T𝒢Â within "
                           f"{err:.1e} (relative), largest derivative {worst:.3f} < 0; GRPO clip (ε = {eps}): |∂/∂x| = "
                           f"{grpo}; tolerance 1e-6: step 1e-7 on Ĵ ≈ 1 leaves rounding ≈ 1e-9/1e-7")
