"""BandPO's Band operator in float64, in mpmath (the reference) and as a convex program (the oracle).

Spec: ``spec/bandpo.md`` §1. For the old probability ``p = π_old(a|s)`` of the sampled token and a
divergence ``D_f(P‖Q) = Σ_x P(x) f(Q(x)/P(x))`` (old policy outside, so ``kl`` is KL(π_old‖π_θ)), the band

    [r̲, r̄] = {r ∈ [0, 1/p] : g_f(p, r) ≤ δ},   g_f(p, r) = p f(r) + (1-p) f((1 - r p)/(1 - p))   (BandPO Thm. 1)

is the set of ratios ``π_θ(a)/π_old(a)`` reachable inside the trust region ``D_f ≤ δ``.

Four ways to compute it, each for a different job:

* :func:`band_bounds_closed_form` (TV, χ²; BandPO Prop. 4) and :func:`band_bounds` (all three, vectorised
  float64, KL by bisection in log coordinates): fast.
* :func:`band_bounds_mp`: the reference. mpmath at 50 digits, from ``log p`` so that ``p = 1e-300`` and
  ``p = 1 - 1e-15`` are fine; KL roots by bracketed root finding in log coordinates.
* :func:`band_bounds_cvx`: the oracle. The original problem over the whole simplex, in cvxpy, with no
  reduction to ``p`` assumed.
* :func:`band_bounds_authors_bisection`: the BandPO authors' v2 solver (spec §1.5), emulated in NumPy to
  measure its accuracy and its clamp artifact.
"""

from __future__ import annotations

import numbers

import cvxpy as cp
import mpmath as mp
import numpy as np

DIVERGENCES = ("kl", "tv", "chi2")
CLOSED_FORM_DIVERGENCES = ("tv", "chi2")

# Generators f(u) (spec §1.1; the repo's f_kl, f_tv, f_chi2). f(1) = 0, convex.
GENERATORS = {
    "kl": lambda u: -np.log(u) + u - 1.0,
    "tv": lambda u: 0.5 * np.abs(u - 1.0),
    "chi2": lambda u: (u - 1.0) ** 2,
}

# The authors' safe-evaluation clamp (repo solver.py `_safe_g_f`, eps=1e-12).
AUTHORS_CLAMP = 1e-12


# ---------------------------------------------------------------------------------------------
# Argument validation: every error names the argument
# ---------------------------------------------------------------------------------------------
def _check_divergence(divergence, allowed=DIVERGENCES):
    if divergence not in allowed:
        raise ValueError(f"divergence must be one of {allowed}, got {divergence!r}")
    return divergence


def _check_delta(delta, allow_zero=True):
    if isinstance(delta, bool) or not isinstance(delta, (numbers.Real, mp.mpf)):
        raise ValueError(f"delta must be a real number, got {delta!r}")
    if not mp.isfinite(delta) or delta < 0 or (delta == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"delta must be finite and {bound}, got {delta!r}")
    return delta


def _check_p(p, name="p", allow_one=True):
    arr = np.asarray(p, dtype=np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    upper_ok = (arr <= 1.0) if allow_one else (arr < 1.0)
    if not np.all(np.isfinite(arr) & (arr > 0.0) & upper_ok):
        interval = "(0, 1]" if allow_one else "(0, 1)"
        bad = arr[~(np.isfinite(arr) & (arr > 0.0) & upper_ok)].ravel()[:3]
        raise ValueError(f"{name} must lie in {interval}, got values such as {bad.tolist()}")
    return arr


# ---------------------------------------------------------------------------------------------
# g_f and D_f
# ---------------------------------------------------------------------------------------------
def g_f(p, r, divergence):
    """``g_f(p, r)``, vectorised float64 (BandPO Thm. 1; special forms spec §1.2, derived in ``theory.band``).

    KL: ``-p log r + (1-p)[log(1-p) - log(1-rp)]`` (binary KL; ``log1p`` keeps ``1 - p`` and ``1 - rp`` exact);
    TV: ``p|r - 1|``; χ²: ``p (r - 1)²/(1 - p)``.
    At ``p = 1`` the other tokens have no mass and ``g`` is the ``p → 1`` limit (spec §1.7):
    ``f(r) + (1 - r) f'(∞)``, i.e. ``-log r`` (KL), ``1 - r`` (TV), and ``0`` at ``r = 1`` else ``+∞`` (χ²).
    ``r > 1/p`` is outside the simplex (``Q(a) > 1``) and gives ``+∞``, so ``{g ≤ δ}`` is the feasible set.
    """
    _check_divergence(divergence)
    p = _check_p(p)
    r = np.asarray(r, dtype=np.float64)
    if np.any(np.isnan(r)) or np.any(r < 0):
        raise ValueError("r must be >= 0 (a ratio of probabilities) and not NaN")
    p, r = np.broadcast_arrays(p, r)
    out = np.full(p.shape, np.inf)
    inside = r <= 1.0 / p                             # r = 1/p itself is the simplex edge Q(a) = 1
    interior = inside & (p < 1.0)
    edge = inside & (p == 1.0)
    pi, ri = p[interior], r[interior]
    with np.errstate(divide="ignore"):
        if divergence == "kl":
            rp = np.minimum(ri * pi, 1.0)             # (1/p)·p may round to 1 + ulp
            out[interior] = -pi * np.log(ri) + (1.0 - pi) * (np.log1p(-pi) - np.log1p(-rp))
            out[edge] = -np.log(r[edge])
        elif divergence == "tv":
            out[interior] = pi * np.abs(ri - 1.0)
            out[edge] = 1.0 - r[edge]
        else:
            out[interior] = pi * (ri - 1.0) ** 2 / (1.0 - pi)
            out[edge] = np.where(r[edge] == 1.0, 0.0, np.inf)
    return out if out.ndim else float(out)


def f_divergence(P, Q, divergence):
    """``D_f(P‖Q) = Σ_x P(x) f(Q(x)/P(x))`` along the last axis (spec §1.1), straight from the generator."""
    _check_divergence(divergence)
    P = np.asarray(P, dtype=np.float64)
    Q = np.asarray(Q, dtype=np.float64)
    if np.any(P <= 0):
        raise ValueError("P must be > 0 everywhere (D_f divides by P)")
    if np.any(Q < 0):
        raise ValueError("Q must be >= 0")
    with np.errstate(divide="ignore"):
        return np.sum(P * GENERATORS[divergence](Q / P), axis=-1)


# ---------------------------------------------------------------------------------------------
# Closed forms (BandPO Prop. 4)
# ---------------------------------------------------------------------------------------------
def band_bounds_closed_form(p, divergence, delta):
    """``(r̲, r̄)`` for TV and χ² (BandPO Prop. 4, spec §1.4; derived by ``theory.band.branch_roots``).

    TV: ``[max(1 - δ/p, 0), min(1 + δ/p, 1/p)]``; χ²: ``1 ∓ √(δ(1-p)/p)`` clamped to ``[0, 1/p]``.
    The clamps are the simplex saturation of BandPO Prop. 3. ``δ = 0`` gives ``[1, 1]``.
    """
    _check_divergence(divergence, CLOSED_FORM_DIVERGENCES)
    _check_delta(delta)
    p = _check_p(p)
    halfwidth = delta / p if divergence == "tv" else np.sqrt(delta * (1.0 - p) / p)   # Prop. 4
    lower = np.maximum(1.0 - halfwidth, 0.0)       # Prop. 3: lower saturates at 0
    upper = np.minimum(1.0 + halfwidth, 1.0 / p)   # Prop. 3: upper saturates at 1/p
    return lower, upper


# ---------------------------------------------------------------------------------------------
# KL roots in log coordinates (shared by the float64 and mpmath solvers)
# ---------------------------------------------------------------------------------------------
# Lower root: x = log r ∈ (x_lo, 0),
#   h_lo(x) = -p x + (1-p)[log(1-p) - log(1 - p e^x)] - δ = -p x - (1-p) log1p(-p expm1(x)/(1-p)) - δ,
# (1 - p e^x = (1-p)(1 - p expm1(x)/(1-p))); the second form has no cancellation inside the logs, which matters
# for small δ, where the two terms nearly cancel and the root is only as good as h is near it.
# h_lo is decreasing, h_lo(0) = -δ, and since log(1 - p e^x) ≤ 0, h_lo(x) ≥ -p x + (1-p) log(1-p) - δ, which is
# ≥ p > 0 at x_lo = ((1-p) log(1-p) - δ)/p - 1. r̲ = e^x can be astronomically small (≈ p e^{-δ/p}).
#
# Upper root: y = log((1-p)/(1 - r p)) ∈ (0, y_hi), so 1 - r p = (1-p) e^{-y} and
#   r - 1 = -expm1(-y) (1-p)/p,   h_up(y) = (1-p) y - p log1p(r - 1) - δ,
# increasing (h_up'(y) = (1-p)(1 - e^{-y})/(1 - (1-p) e^{-y}) > 0), h_up(0) = -δ, and since r ≤ 1/p,
# h_up(y) ≥ (1-p) y + p log p - δ ≥ 1 - p > 0 at y_hi = (δ - p log p)/(1-p) + 1. Near r = 1/p (p → 0) the
# variable y resolves 1 - r p without cancellation; near r = 1 (small δ) log1p keeps log r exact.
def _kl_lower_bracket(p, one_minus_p, log_one_minus_p, delta):
    return (one_minus_p * log_one_minus_p - delta) / p - 1, 0


def _kl_upper_bracket(p, log_p, one_minus_p, delta):
    return 0, (delta - p * log_p) / one_minus_p + 1


# ---------------------------------------------------------------------------------------------
# The reference: mpmath
# ---------------------------------------------------------------------------------------------
def band_bounds_mp(log_p, divergence, delta, dps=50):
    """``(r̲, r̄)`` as mpmath ``mpf`` at ``dps`` digits: the reference every other solver is tested against.

    Takes ``log p`` (``≤ 0``), so extreme probabilities (``p = 1e-300``, ``p = 1 - 1e-15``) are exact inputs.
    TV, χ²: Prop. 4 evaluated in mpmath. KL: the two roots of ``g_KL(p, r) = δ`` (spec §1.4) by
    ``mp.findroot`` with the Anderson-Björck bracketing solver on the brackets above, in ``x = log r`` (lower)
    and ``y = log((1-p)/(1-rp))`` (upper); KL never saturates (``g_KL = +∞`` at ``r = 0`` and ``r = 1/p``,
    BandPO Prop. 3). ``p = 1``: the limit band ``[r*, 1]`` (spec §1.7). ``δ = 0``: ``[1, 1]``.
    """
    _check_divergence(divergence)
    _check_delta(delta)
    if isinstance(log_p, bool) or not isinstance(log_p, (numbers.Real, mp.mpf)) or not mp.isfinite(log_p) \
            or log_p > 0:
        raise ValueError(f"log_p must be a finite real <= 0 (p in (0, 1]), got {log_p!r}")
    if not isinstance(dps, numbers.Integral) or dps < 15:
        raise ValueError(f"dps must be an integer >= 15, got {dps!r}")
    with mp.workdps(dps):
        lp = mp.mpf(log_p)
        dl = mp.mpf(delta)
        p = mp.exp(lp)
        one_minus_p = -mp.expm1(lp)                       # exact even when p = 1 - 1e-15
        if dl == 0:
            return mp.mpf(1), mp.mpf(1)
        if divergence in CLOSED_FORM_DIVERGENCES:
            half = dl / p if divergence == "tv" else mp.sqrt(dl * one_minus_p / p)   # Prop. 4
            return mp.mpf(max(1 - half, 0)), mp.mpf(min(1 + half, 1 / p))          # Prop. 3 clamps
        if one_minus_p == 0:                              # p = 1: g = -log r (spec §1.7), r* = e^{-δ}
            return mp.exp(-dl), mp.mpf(1)
        log1mp = mp.log1p(-p)

        def h_lo(x):
            return -p * x - one_minus_p * mp.log1p(-p * mp.expm1(x) / one_minus_p) - dl

        def r_up(y):
            return 1 + (-mp.expm1(-y)) * one_minus_p / p

        def h_up(y):
            return one_minus_p * y - p * mp.log1p((-mp.expm1(-y)) * one_minus_p / p) - dl

        x = mp.findroot(h_lo, _kl_lower_bracket(p, one_minus_p, log1mp, dl), solver="anderson")
        y = mp.findroot(h_up, _kl_upper_bracket(p, lp, one_minus_p, dl), solver="anderson")
        return mp.exp(x), r_up(y)


def band_bounds_reference(log_p_array, divergence, delta, dps=50):
    """:func:`band_bounds_mp` over an array of ``log p``, rounded to float64 (a Python loop: the slow oracle)."""
    _check_divergence(divergence)
    _check_delta(delta)
    lp = np.asarray(log_p_array, dtype=np.float64)
    if not np.all(np.isfinite(lp) & (lp <= 0)):
        raise ValueError("log_p_array must hold finite values <= 0 (p in (0, 1])")
    lower = np.empty(lp.shape)
    upper = np.empty(lp.shape)
    for idx, v in np.ndenumerate(lp):
        lo, up = band_bounds_mp(float(v), divergence, delta, dps=dps)
        lower[idx], upper[idx] = float(lo), float(up)
    return lower, upper


# ---------------------------------------------------------------------------------------------
# Fast float64: closed forms, and KL by bisection in log coordinates
# ---------------------------------------------------------------------------------------------
def _bisect_decreasing(fn, lo, hi, max_iter=2200):
    """Root of a decreasing ``fn`` on ``[lo, hi]`` (``fn(lo) > 0 > fn(hi)``), vectorised, to adjacent floats."""
    lo, hi = lo.copy(), hi.copy()
    for _ in range(max_iter):
        mid = lo + 0.5 * (hi - lo)
        active = (mid != lo) & (mid != hi)
        if not active.any():
            break
        positive = fn(mid) > 0
        lo = np.where(active & positive, mid, lo)
        hi = np.where(active & ~positive, mid, hi)
    return lo + 0.5 * (hi - lo)


def band_bounds(p, divergence, delta):
    """``(r̲, r̄)`` in vectorised float64 for all three divergences.

    TV, χ²: :func:`band_bounds_closed_form`. KL: bisection to adjacent floats on the log-coordinate
    equations of :func:`band_bounds_mp` (``x = log r``, ``y = log((1-p)/(1-rp))``), so tail probabilities and
    ``r̲ ≈ e^{-δ/p}`` keep full relative accuracy. ``p = 1`` gives ``[e^{-δ}, 1]``; ``δ = 0`` gives ``[1, 1]``.
    """
    _check_divergence(divergence)
    _check_delta(delta)
    p = _check_p(p)
    if divergence in CLOSED_FORM_DIVERGENCES:
        return band_bounds_closed_form(p, divergence, delta)
    shape = p.shape
    p = p.ravel()
    lower = np.ones_like(p)
    upper = np.ones_like(p)
    if delta > 0:
        at_one = p == 1.0
        lower[at_one] = np.exp(-delta)                  # spec §1.7: lim_{p→1} g_KL = -log r
        q = p[~at_one]
        omq = 1.0 - q
        log1mq = np.log1p(-q)
        x_lo, _ = _kl_lower_bracket(q, omq, log1mq, delta)
        x = _bisect_decreasing(
            lambda x: -q * x - omq * np.log1p(-q * np.expm1(x) / omq) - delta,
            np.asarray(x_lo, dtype=np.float64), np.zeros_like(q))
        _, y_hi = _kl_upper_bracket(q, np.log(q), omq, delta)
        y = _bisect_decreasing(   # -h_up is decreasing
            lambda y: -(omq * y - q * np.log1p(-np.expm1(-y) * omq / q) - delta),
            np.zeros_like(q), np.asarray(y_hi, dtype=np.float64))
        lower[~at_one] = np.exp(x)
        upper[~at_one] = 1.0 + (-np.expm1(-y)) * omq / q
    return lower.reshape(shape), upper.reshape(shape)


# ---------------------------------------------------------------------------------------------
# The oracle: the Band problem over the whole simplex (spec §1.2), in cvxpy
# ---------------------------------------------------------------------------------------------
def band_bounds_cvx(P, a, divergence, delta, solver="CLARABEL", **solver_kwargs):
    """``(r̲, r̄)`` by solving the Band problem over the whole simplex (spec §1.2), with no reduction assumed.

        r̄ = max_Q Q(a)/P(a)   and   r̲ = min_Q Q(a)/P(a)   s.t.  Q ≥ 0,  Σ_x Q(x) = 1,  D_f(P‖Q) ≤ δ,

    with ``D_KL = Σ P log(P/Q)`` (``rel_entr(P, Q)``: KL(π_old‖π_θ), the repo's direction), ``D_TV = ½‖Q - P‖₁``
    and ``D_χ² = Σ (Q - P)²/P``. ``solver_kwargs`` go to the solver (e.g. Clarabel's ``tol_gap_abs``).
    Raises ``RuntimeError`` unless both problems are solved to status ``optimal``.
    """
    _check_divergence(divergence)
    _check_delta(delta, allow_zero=False)   # δ = 0 leaves one feasible point: no interior for the solver
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 1 or P.size < 2 or not np.all(np.isfinite(P)) or np.any(P <= 0) or abs(P.sum() - 1.0) > 1e-12:
        raise ValueError("P must be a 1-D distribution with >= 2 entries, all > 0, summing to 1")
    if isinstance(a, bool) or not isinstance(a, numbers.Integral) or not 0 <= a < P.size:
        raise ValueError(f"a must be an integer index into P (0 <= a < {P.size}), got {a!r}")

    Q = cp.Variable(P.size)
    ratio = Q[a] / P[a]
    divergence_of = {
        "kl": lambda: cp.sum(cp.rel_entr(P, Q)),                 # KL(P‖Q) = Σ P log(P/Q)
        "tv": lambda: 0.5 * cp.norm1(Q - P),                     # TV = ½ Σ |Q - P|
        "chi2": lambda: cp.sum(cp.multiply(1.0 / P, cp.square(Q - P))),   # χ² = Σ (Q - P)²/P
    }
    trust_region = [Q >= 0, cp.sum(Q) == 1, divergence_of[divergence]() <= delta]

    bounds = []
    for objective in (cp.Minimize(ratio), cp.Maximize(ratio)):
        problem = cp.Problem(objective, trust_region)
        problem.solve(solver=solver, **solver_kwargs)
        if problem.status != cp.OPTIMAL:
            raise RuntimeError(f"cvxpy {solver} returned status {problem.status!r} for the {divergence} band")
        bounds.append(float(problem.value))
    return bounds[0], bounds[1]


# ---------------------------------------------------------------------------------------------
# The BandPO authors' v2 solver, emulated (spec §1.5)
# ---------------------------------------------------------------------------------------------
def band_bounds_authors_bisection(p, divergence, delta, max_iter=50, tol=1e-6, dtype=np.float64):
    """The BandPO repo's ``universal_bisection_solver`` (spec §1.5, ``band/solver.py``), in NumPy.

    1. Safe ``g``: ``comp = (1 - r p)/(1 - p)``, ``r`` and ``comp`` clamped to ``≥ 1e-12``, then
       ``p f(r) + (1 - p) f(comp)`` with the generator itself (``f_kl(u) = -log u + u - 1``).
    2. Saturation flags ``g(p, 1/p) ≤ δ`` and ``g(p, 0) ≤ δ``, both through the clamps.
    3. Upper: ``[L, U] = [1, 1/p]``; ``M = (L + U)/2``; ``g(M) < δ`` ⇒ ``L = M`` else ``U = M``; stop after
       ``max_iter`` or once ``max over the batch of (U - L) ≤ tol`` (one global test); return the midpoint,
       or ``1/p`` where saturated.
    4. Lower: ``[0, 1]``, ``g(M) < δ`` ⇒ ``U = M`` else ``L = M``; midpoint, or ``0`` where saturated.

    The clamp makes the KL lower bound exactly 0 where ``g(p, 1e-12) ≈ 26.6 p ≤ δ`` (spec §1.5, "clamp
    artifact"), while the truth ``≈ e^{-δ/p}`` is positive. ``dtype=np.float32`` mimics verl's precision.
    ``p = 1`` is rejected: the solver divides by ``1 - p`` (the repo's ``band()`` masks ``p > 1 - 1e-6``).
    """
    _check_divergence(divergence)
    _check_delta(delta)
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if not (isinstance(tol, numbers.Real) and np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be np.float32 or np.float64, got {dtype!r}")
    p = _check_p(p, allow_one=False).astype(dtype)
    f = GENERATORS[divergence]

    def safe_g(r):                                   # repo `_safe_g_f`
        comp = (1.0 - r * p) / (1.0 - p)
        r_safe = np.maximum(r, dtype(AUTHORS_CLAMP))
        comp_safe = np.maximum(comp, dtype(AUTHORS_CLAMP))
        return p * f(r_safe) + (1.0 - p) * f(comp_safe)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        is_upper_sat = safe_g(1.0 / p) <= delta      # repo `check_simplex_saturation` (Prop. 3)
        is_lower_sat = safe_g(np.zeros_like(p)) <= delta

        L, U = np.ones_like(p), 1.0 / p              # g increasing on [1, 1/p]
        for _ in range(max_iter):
            M = 0.5 * (L + U)
            move_right = safe_g(M) < delta
            L, U = np.where(move_right, M, L), np.where(move_right, U, M)
            if np.max(U - L) <= tol:                 # global stop test (`.item()` in the repo)
                break
        upper = np.where(is_upper_sat, 1.0 / p, 0.5 * (L + U))

        L, U = np.zeros_like(p), np.ones_like(p)     # g decreasing on [0, 1]
        for _ in range(max_iter):
            M = 0.5 * (L + U)
            move_left = safe_g(M) < delta
            L, U = np.where(move_left, L, M), np.where(move_left, M, U)
            if np.max(U - L) <= tol:
                break
        lower = np.where(is_lower_sat, np.zeros_like(p), 0.5 * (L + U))
    return lower.astype(dtype), upper.astype(dtype)
