"""Does clipping each sampled token to its Band keep the state inside the trust region? (claim ``band.trust_region``)

At one state, ``P = π_old(·|s)`` has full support on ``K`` actions and a set ``S`` of ``m`` distinct actions was
sampled. BandPO clips each sampled ratio to its own Band (``fiberlab.numerics.band``), so the new policies the
clip admits are the polytope

    𝒬(P, S, δ) = {Q ∈ Δ_K : r̲(P_i) ≤ Q_i/P_i ≤ r̄(P_i) for i ∈ S}.

The question is how large ``D_f(P‖Q) = Σ_i P_i f(Q_i/P_i)`` can be on 𝒬. ``D_f(P‖·)`` is convex, so its maximum
over a polytope is attained at a vertex (a convex function on a segment is at most the larger end value) —
maximising it is *not* a convex program, and no solver is asked to do it. :func:`trust_region_sup` enumerates the
vertices instead: the polytope is a box cut by the hyperplane ``Σ Q = 1``, so every vertex has ``K - 1``
coordinates at a bound (``P_i r̲_i`` or ``P_i r̄_i`` on ``S``, ``0`` off ``S``) and the last one fixed by the sum.
Coordinates with the same ``(P_i, i ∈ S)`` are interchangeable, so the enumeration counts how many of each such
group sit at their upper end, which keeps uniform or few-level ``P`` (e.g. ``K = 32``) cheap.

The closed forms it is checked against (derived in ``theory.band.trust_region_*``):

* :func:`box_bound` — with every action sampled, ``D_f ≤ Σ_i max(P_i f(r̲_i), P_i f(r̄_i))``, each term ``≤ δ``
  (χ²: ``= (1 - P_i) δ``; TV: ``δ/2``), so ``≤ Kδ``, and ``(K - 1)δ`` for χ².
* :func:`unsampled_sup` — whatever δ is (even ``δ = 0``), the mass ``P_U`` of the unsampled actions ``U`` can be
  piled onto one of them: ``D_f ≥ max_{j∈U} P_j f(P_U/P_j) + (P_U - P_j) f(0)``, which is ``P_U - min_U P_j``
  (TV), ``P_U²/min_U P_j - P_U`` (χ²) and ``+∞`` (KL) once ``|U| ≥ 2``.
* :func:`least_divergence_given_sampled` — the convex program that *is* one: the smallest ``D_f`` of any ``Q``
  with given sampled probabilities (cvxpy), against its Jensen closed form (unsampled mass rescaled
  proportionally).
"""

from __future__ import annotations

import itertools

import cvxpy as cp
import numpy as np

from fiberlab.numerics.band import DIVERGENCES, GENERATORS, _check_delta, _check_divergence, band_bounds

#: Vertex enumeration stops with an error beyond this many vertices (per free group) instead of running for hours.
MAX_VERTICES = 1 << 21
#: A vertex's free coordinate ``1 - Σ others`` is computed in float64; it counts as inside its bounds within this
#: slack (K ≤ 64 terms of size ≤ 1 summed: rounding ≲ 64 ε ≈ 1.4e-14), and is then clamped onto them.
VERTEX_SLACK = 1e-13


def _check_state(P, sampled):
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 1 or P.size < 2 or not np.all(np.isfinite(P)) or np.any(P <= 0) or abs(P.sum() - 1.0) > 1e-12:
        raise ValueError("P must be a 1-D distribution with >= 2 entries, all > 0, summing to 1")
    sampled = np.asarray(sampled)
    if sampled.shape != P.shape or sampled.dtype != bool:
        raise ValueError(f"sampled must be a boolean mask of shape {P.shape}")
    return P, sampled


def phi(P, Q, divergence):
    """Per-action terms ``P_i f(Q_i/P_i)`` of ``D_f(P‖Q)`` (``+∞`` for KL at ``Q_i = 0``)."""
    with np.errstate(divide="ignore"):
        return P * GENERATORS[divergence](Q / P)


def band_box(P, sampled, divergence, delta):
    """Probability bounds ``(lo, hi)`` of each action: ``[P_i r̲_i, P_i r̄_i]`` on ``S``, ``[0, 1]`` off it."""
    P, sampled = _check_state(P, sampled)
    lower, upper = band_bounds(P, divergence, delta)
    lo = np.where(sampled, P * lower, 0.0)
    hi = np.where(sampled, np.minimum(P * upper, 1.0), 1.0)
    return lo, hi


def trust_region_sup(P, sampled, divergence, delta):
    """``(sup, Q*)``: the largest ``D_f(P‖Q)`` over Q whose sampled ratios all lie in their Bands, and a maximiser.

    Exact up to float64 rounding: the maximum of the convex ``D_f(P‖·)`` over the polytope 𝒬(P, S, δ) is at a
    vertex, and every vertex is enumerated (see the module docstring). ``sup = +∞`` (KL) when a vertex puts
    zero mass on some action.
    """
    _check_divergence(divergence)
    _check_delta(delta)
    P, sampled = _check_state(P, sampled)
    K = P.size
    lo, hi = band_box(P, sampled, divergence, delta)
    # Groups of interchangeable coordinates: equal P_i and equal sampled flag.
    keys = sorted({(float(P[i]), bool(sampled[i])) for i in range(K)})
    members = [np.flatnonzero((P == pv) & (sampled == sv)) for pv, sv in keys]
    best, best_Q = -np.inf, None
    for free_g, free_members in enumerate(members):
        j = int(free_members[0])                      # the free coordinate (any member: interchangeable)
        sizes = [len(ix) - (g == free_g) for g, ix in enumerate(members)]
        # How many of each sampled group sit at the upper end (the rest at the lower end); unsampled ones at 0.
        ranges = [range(n + 1) if keys[g][1] else range(1) for g, n in enumerate(sizes)]
        n_vertices = int(np.prod([len(rg) for rg in ranges], dtype=np.float64))
        if n_vertices > MAX_VERTICES:
            raise ValueError(f"{n_vertices} vertices to enumerate; use fewer distinct (P_i, sampled) groups")
        counts = np.array(list(itertools.product(*ranges)), dtype=np.float64).reshape(-1, len(members))
        first = np.array([ix[0] for ix in members])
        sz = np.array(sizes, dtype=np.float64)
        lo_g, hi_g, P_g = lo[first], hi[first], P[first]
        mass = counts @ hi_g + (sz - counts) @ lo_g   # Σ of the K - 1 bound coordinates
        q_free = 1.0 - mass
        ok = (q_free >= lo[j] - VERTEX_SLACK) & (q_free <= hi[j] + VERTEX_SLACK)
        if not ok.any():
            continue
        counts, q_free = counts[ok], np.clip(q_free[ok], lo[j], hi[j])
        with np.errstate(invalid="ignore"):           # 0·∞ for an empty group at a KL zero: no term
            terms = (np.where(counts > 0, counts * phi(P_g, hi_g, divergence), 0.0)
                     + np.where(sz - counts > 0, (sz - counts) * phi(P_g, lo_g, divergence), 0.0))
        value = terms.sum(axis=1) + phi(P[j], q_free, divergence)
        i = int(np.argmax(value))
        if value[i] > best:
            best = float(value[i])
            Q = np.empty(K)
            for g, ix in enumerate(members):
                ix = ix[ix != j]
                c = int(counts[i, g])
                Q[ix[:c]], Q[ix[c:]] = hi_g[g], lo_g[g]
            Q[j] = q_free[i]
            best_Q = Q
    return best, best_Q


def box_bound(P, divergence, delta):
    """``Σ_i max(P_i f(r̲_i), P_i f(r̄_i))``: the separable bound on ``D_f`` when every action is sampled.

    It drops ``Σ Q = 1``, so it is ≥ :func:`trust_region_sup` with ``S`` = all actions; each term is
    ``≤ δ - (1 - P_i) f(s_i) ≤ δ`` (``theory.band.trust_region_per_token``).
    """
    _check_divergence(divergence)
    P, _ = _check_state(P, np.ones(np.shape(P), dtype=bool))
    lower, upper = band_bounds(P, divergence, delta)
    return float(np.sum(np.maximum(phi(P, P * lower, divergence), phi(P, P * upper, divergence))))


def unsampled_sup(P, sampled, divergence):
    """``max_{j∈U} P_j f(P_U/P_j) + (P_U - P_j) f(0)``: the divergence reachable at any δ with ``Q_S = P_S``.

    All of the unsampled mass ``P_U`` on one unsampled action ``j``; this is the exact supremum over ``Q`` with
    ``Q_i = P_i`` on ``S`` (a convex function of ``Q_U`` on the scaled simplex, maximised at a vertex). ``0`` when
    ``|U| ≤ 1``; ``+∞`` for KL when ``|U| ≥ 2`` (``f(0) = +∞``).
    """
    _check_divergence(divergence)
    P, sampled = _check_state(P, sampled)
    U = np.flatnonzero(~sampled)
    if U.size <= 1:
        return 0.0
    PU = float(P[U].sum())
    f0 = {"kl": np.inf, "tv": 0.5, "chi2": 1.0}[divergence]   # f(0) = lim_{u↓0} f(u)
    return float(max(phi(P[j], PU, divergence) + (PU - P[j]) * f0 for j in U))


def least_divergence_given_sampled(P, sampled, q_sampled, divergence, solver="CLARABEL"):
    """``min D_f(P‖Q)`` over Q ∈ Δ with ``Q_i = q_i`` on the sampled actions (a convex program: cvxpy).

    The most favourable reading of the unsampled actions: whatever they do, ``D_f`` is at least this. Returns the
    cvxpy value (Jensen's closed form is :func:`least_divergence_closed_form`).
    """
    _check_divergence(divergence)
    P, sampled = _check_state(P, sampled)
    q_sampled = np.asarray(q_sampled, dtype=np.float64)
    Q = cp.Variable(P.size)
    D = {"kl": lambda: cp.sum(cp.rel_entr(P, Q)),
         "tv": lambda: 0.5 * cp.norm1(Q - P),
         "chi2": lambda: cp.sum(cp.multiply(1.0 / P, cp.square(Q - P)))}[divergence]()
    S = np.flatnonzero(sampled)
    problem = cp.Problem(cp.Minimize(D), [Q >= 0, cp.sum(Q) == 1, Q[S] == q_sampled])
    problem.solve(solver=solver)
    if problem.status != cp.OPTIMAL:
        raise RuntimeError(f"cvxpy {solver} returned status {problem.status!r}")
    return float(problem.value)


def least_divergence_closed_form(P, sampled, q_sampled, divergence):
    """Jensen: ``Σ_S P_i f(q_i/P_i) + P_U f((1 - Σ_S q_i)/P_U)`` (the unsampled mass rescaled proportionally)."""
    P, sampled = _check_state(P, sampled)
    q_sampled = np.asarray(q_sampled, dtype=np.float64)
    value = float(np.sum(phi(P[sampled], q_sampled, divergence)))
    PU = float(P[~sampled].sum())
    if PU > 0:
        value += float(phi(PU, 1.0 - q_sampled.sum(), divergence))
    return value


__all__ = ["DIVERGENCES", "trust_region_sup", "box_bound", "unsampled_sup", "band_box",
           "least_divergence_given_sampled", "least_divergence_closed_form", "phi"]
