r"""Band: per-token, probability-aware clip intervals from an f-divergence trust region (BandPO).

For a sampled token with old probability :math:`p = \pi_{old}(a|s)` the Band interval is

.. math::  [\underline r, \overline r] = \{ r \in [0, 1/p] : g_f(p, r) \le \delta \},
           \qquad g_f(p, r) = p f(r) + (1-p) f\!\big(\tfrac{1 - r p}{1 - p}\big)

(BandPO Thm. 1: the simplex problem reduces to this scalar one). With :math:`D_f = E_{\pi_{old}}[f(\pi_\theta/\pi_{old})]`:

* ``"tv"``   (:math:`f = |u-1|/2`):  :math:`[\max(1-\delta/p, 0), \min(1+\delta/p, 1/p)]` (Prop. 4);
* ``"chi2"`` (:math:`f = (u-1)^2`):  :math:`1 \pm \sqrt{\delta (1-p)/p}`, clamped to :math:`[0, 1/p]` (Prop. 4);
* ``"kl"``   (:math:`f = -\log u + u - 1`, i.e. KL(π_old‖π_θ)): no closed form; here
  :math:`g = \mathrm{KL}(\mathrm{Bern}(p) \,\|\, \mathrm{Bern}(q))` with :math:`q = r p`, solved below.

The KL solver
-------------
Both ends are roots of the *binary* KL equation :math:`\mathrm{kl}(p\,\|\,q) = \delta`. Since
:math:`\mathrm{kl}(p\|q) = \mathrm{kl}(1-p\|1-q)` (the mirror identity), the upper root for ``p`` is one minus the
lower root for ``1-p``; one solver for the *lower* root serves both ends, called with
:math:`(\log p, \log(1-p))` and with the pair swapped. Working from ``log p`` and ``log(1-p)`` (computed with
``log1mexp``, exact near ``p → 1``) keeps every regime at round-off:

* the lower root is solved in :math:`x = \log q`, so :math:`\underline r = e^{x - \log p}` stays exact when it is
  astronomically small (:math:`\approx e^{-\delta/p}` for tail tokens);
* the upper bound is :math:`\overline r = (1 - e^{x'})/p` with :math:`x'` the mirrored root, taken as
  :math:`\exp(\mathrm{log1mexp}(x') - \log p)` so head tokens (``p → 1``) and tail tokens (``p → 0``) keep full
  relative precision.

In :math:`x`, :math:`h(x) = p(\log p - x) + (1-p)(\log(1-p) - \log(1-e^x)) - \delta` is **convex and decreasing**
on :math:`x < \log p`. Newton's method started to the left of the root therefore increases monotonically to it
(the tangent of a convex function lies below it) and converges quadratically. The start is the larger of two
points known to lie left of the root:

* :math:`x_{safe} = \log p + ((1-p)\log(1-p) - \delta)/p`, from :math:`-\log(1-q) \ge 0` (exact as
  :math:`q \to 0`: large δ or tail tokens);
* one Newton step from the second-order guess :math:`q = p - \sqrt{2\delta p (1-p)}` (exact as δ → 0); a Newton
  step from either side of a convex decreasing function lands left of the root.

A fixed number of steps (``KL_NEWTON_STEPS``) then reaches float64 round-off over the whole range
(``fiberlab bench band`` and the tests measure it against 50-digit mpmath roots): no data-dependent loop, no
host-device synchronisation.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from typing import Literal

import torch

Divergence = Literal["kl", "tv", "chi2"]
DIVERGENCES: tuple[str, ...] = ("kl", "tv", "chi2")

#: Newton steps after the start point, by working dtype. Measured against 50-digit roots on
#: log p ∈ [-700, -1e-15] × δ ∈ [1e-12, 20]: the worst relative error after 2/3/4 steps is ~2e-5/6e-11/round-off,
#: so float32 (eps 6e-8) needs 3 and float64 (eps 1.1e-16) 4; each step is ~15 elementwise kernels on both roots.
KL_NEWTON_STEPS = {torch.float32: 3, torch.float64: 4}

#: The quadratic start q = p(1 - w) is used while w < W_QUAD_MAX (q > 0); beyond it x_safe is already close.
W_QUAD_MAX = 0.999


#: Taylor coefficients of (e^x - 1)/x = Σ x^k/(k+1)!, k = 8 … 0: on |x| < 1/2 the first omitted term is
#: 2^-9/10! ≈ 5e-13 relative, far below float32's and near float64's round-off (the kernels run in float32).
_EXPM1_TAYLOR = tuple(1.0 / math.factorial(k + 1) for k in range(8, -1, -1))


def _expm1(x: torch.Tensor) -> torch.Tensor:
    """e^x - 1, accurate inside a compiled float32 kernel too.

    Eagerly (and for other dtypes) this is ``torch.expm1``. While torch.compile traces a float32 kernel it is a
    polynomial on |x| < 1/2 and ``exp(x) - 1`` beyond (where e^x/|e^x - 1| ≤ 2.6 bounds the cancellation),
    ≤ 2 half-ulps: torch.compile's vectorised CPU code lowers ``expm1(x)`` to ``exp(x) - 1`` (measured: 19%
    relative error at x = 1e-7), which would cost the χ² band its digits near p → 1 (1 - p) and misplace the
    KL table's cell there by an absolute eps in y = 1/p - 1. Nine multiply-adds keep the kernel at memory
    speed; Kahan's (w - 1)·x/log w, the other accurate form, costs a log and a division and measured 50% slower.
    """
    if not (torch.compiler.is_compiling() and x.dtype == torch.float32):
        return torch.expm1(x)
    poly = torch.full_like(x, _EXPM1_TAYLOR[0])
    for c in _EXPM1_TAYLOR[1:]:
        poly = poly * x + c
    return torch.where(x.abs() < 0.5, poly * x, torch.exp(x) - 1.0)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x ≤ 0, accurate on the whole range (Mächler 2012: switch at -log 2)."""
    return torch.where(x > -math.log(2.0), torch.log(-_expm1(x)), torch.log1p(-torch.exp(x)))


def _validate_log_prob(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    # The one host-device synchronisation of the module: bad input must raise, never turn into NaN.
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")


def _validate_delta(delta: float) -> float:
    if isinstance(delta, torch.Tensor):
        raise ValueError("delta must be a Python float (one radius per call), not a tensor")
    try:
        d = float(delta)
    except (TypeError, ValueError):
        raise ValueError(f"delta must be a real number, got {delta!r}") from None
    if not math.isfinite(d) or d < 0:
        raise ValueError(f"delta must be finite and ≥ 0, got {delta!r}")
    return d


def _validate_options(upper_bound_max: float | None, relax: tuple[float, float] | None, method: str) -> None:
    if upper_bound_max is not None and not (float(upper_bound_max) >= 1.0):
        raise ValueError(f"upper_bound_max must be ≥ 1 (the band contains r = 1), got {upper_bound_max!r}")
    if relax is not None:
        try:
            ok = len(relax) == 2 and all(0.0 <= float(e) for e in relax) and float(relax[0]) <= 1.0
        except (TypeError, ValueError):          # not a pair of numbers (e.g. a bare float)
            ok = False
        if not ok:
            raise ValueError(f"relax must be (eps_low, eps_high) with 0 ≤ eps_low ≤ 1 and eps_high ≥ 0, got {relax!r}")
    if method not in ("newton", "table"):
        raise ValueError(f"method must be 'newton' or 'table', got {method!r}")


def _arguments(old_log_prob: torch.Tensor, divergence: str, delta: float, upper_bound_max: float | None,
               relax: tuple[float, float] | None, method: str) -> tuple[float, torch.Tensor]:
    """Validate the options shared by :func:`band_bounds` and :func:`band_active_bound`; return δ as a float
    and the working tensor (half types are solved in float32)."""
    if divergence not in _SOLVERS:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    d = _validate_delta(delta)
    _validate_options(upper_bound_max, relax, method)
    work = old_log_prob if old_log_prob.dtype in (torch.float32, torch.float64) else old_log_prob.float()
    return d, work


def _kl_lower_log_root(log_p: torch.Tensor, log_1mp: torch.Tensor, delta: float,
                       steps: int | None = None, x0: torch.Tensor | None = None) -> torch.Tensor:
    r"""``x = log q`` of the root ``q < p`` of ``kl(p‖q) = δ``, given ``log p`` and ``log(1-p)`` (δ > 0).

    The caller clamps both logs at ``log(tiny)``: a probability that underflows is solved as the smallest
    normal number, which changes the bounds by O(tiny) — below round-off — and keeps every term finite.
    ``x0``, when given, replaces the start below (the lookup table's estimate, polished by ``steps`` steps).
    """
    finfo = torch.finfo(log_p.dtype)
    p = torch.exp(log_p)
    omp = torch.exp(log_1mp)                       # 1 - p, exact near p → 1
    odds = torch.exp(log_p - log_1mp)              # p / (1 - p)
    neg_odds = -odds

    def h_and_slope(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # kl(p‖q) = p φ(r-1) + (1-p) φ(s-1) with φ(t) = t - log(1+t) ≥ 0, r = q/p, s = (1-q)/(1-p): the linear
        # parts cancel exactly (s - 1 = -(r-1) p/(1-p)), so nothing large cancels near the root.
        y = x - log_p                              # log r
        t = torch.expm1(y)                         # r - 1
        t_s = t * neg_odds                         # s - 1
        phi_s = t_s - torch.log1p(t_s)
        h = torch.addcmul(omp * phi_s, p, t - y).sub_(delta)
        slope = odds * t / (1.0 + t_s)             # h'(x) = (q - p)/(1 - q) = (p/(1-p)) (r-1)/s < 0
        return h, slope

    def newton(x: torch.Tensor, n_steps: int) -> torch.Tensor:
        for _ in range(n_steps):                   # fixed count: no data-dependent loop, no sync
            h, slope = h_and_slope(x)
            # Monotone from the left. fmin keeps x below log p and maps a 0/0 at a degenerate root (δ below
            # round-off of the band) to log p, i.e. r = 1, the right answer there. A root below the float range
            # (δ/p overflows: tail tokens with large δ) sends x to -inf; it stays there (r̲ = 0) instead of
            # letting the next step's inf - inf = NaN be read by fmin as the degenerate case (r̲ > 1).
            x = torch.where(x == -math.inf, x, torch.fmin(x - h / slope, log_p))
        return x

    if x0 is not None:
        return newton(x0, steps or 0)
    # Start 1: -log(1-q) ≥ 0 gives h(x) ≥ p(log p - x) + (1-p)log(1-p) - δ, zero at x_safe ⇒ h(x_safe) ≥ 0.
    x_safe = (log_p + (omp * log_1mp - delta) / p).clamp_min(0.5 * finfo.min)
    # Start 2: one Newton step from the quadratic guess q = p(1 - w), w = √(2δ(1-p)/p), written in logs so a
    # head token keeps q < p; a Newton step from either side of the root of a convex decreasing function
    # lands left of it.
    w = math.sqrt(2.0 * delta) * torch.exp(0.5 * (log_1mp - log_p))
    x_quad = log_p + torch.log1p(-w.clamp_max(W_QUAD_MAX))
    h_q, s_q = h_and_slope(x_quad)
    x = torch.where(w < W_QUAD_MAX, torch.maximum(x_safe, x_quad - h_q / s_q), x_safe)
    return newton(x, KL_NEWTON_STEPS.get(log_p.dtype, 4) if steps is None else steps)


def _mirrored_pairs(log_p: torch.Tensor, log_1mp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p, log(1-p))`` stacked with its mirror ``(log(1-p), log p)``, clamped at ``log(tiny)``.

    Both roots are solved in one stacked call (half the kernel launches): the lower root for p and, by the
    mirror identity kl(p‖q) = kl(1-p‖1-q), the lower root for 1-p, which is log(1 - q̄).
    """
    tiny_log = math.log(torch.finfo(log_p.dtype).tiny)
    return (torch.stack((log_p, log_1mp)).clamp_min(tiny_log), torch.stack((log_1mp, log_p)).clamp_min(tiny_log))


def _kl_bounds(log_p: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    log_1mp = _log1mexp(log_p)
    a, b = _mirrored_pairs(log_p, log_1mp)
    x = _kl_lower_log_root(a, b, delta)
    lower = torch.exp(x[0] - log_p)                            # q̲ / p
    upper = torch.exp(_log1mexp(x[1]) - log_p)                 # q̄ / p, with 1 - q̄ = e^{x'}
    return lower, upper


# --------------------------------------------------------------------------------------------------------------
# Per-δ lookup table for the KL band (the authors suggest one; spec §4.2). Default of ``bandpo``.
# --------------------------------------------------------------------------------------------------------------

#: Cells per octave of the table coordinate ``y = 1/p - 1`` (the inverse odds): the cell index is the exponent
#: and the top ``KL_TABLE_BITS`` mantissa bits of ``y``, read straight from the float's bit pattern, so a cell
#: spans a relative width 2^-10 of y (≈ 1e-3 in logit p). Linear interpolation errs by ≤ h²/8 max|V''|; both
#: tabulated functions vary on a scale of 1 in log y, so that is ~1e-7 relative at most, about float32's eps:
#: measured against the float64 solver the float32 table stays within 1.7 eps·κ (κ the condition number of the
#: tests), no worse than at 2^-12 cells. Linear rather than higher order because the cost is the gather: two
#: values per function.
KL_TABLE_BITS = 10
#: Newton polish steps after the table estimate, by dtype: none in float32 (the table is at round-off), two in
#: float64 (~1e-8 → below 1e-16 by quadratic convergence).
KL_TABLE_POLISH = {torch.float32: 0, torch.float64: 2}
#: The table covers y ∈ [y_lo, y_hi] with y_lo ≈ eps·δ/1e4 and y_hi ≈ 1e4/(eps·δ); beyond them both tabulated
#: functions are flat to round-off, so clamping y to the table is exact. A δ so small that this range leaves the
#: float range (δ ≲ 1e-25 in float32) falls back to the Newton solver.
_KL_TABLE_MARGIN = 1e4
_KL_TABLES: dict[tuple[float, torch.dtype, str], tuple | None] = {}
#: (mantissa bits, integer type of the same width, largest binary exponent) of each working dtype.
_FLOAT_BITS = {torch.float32: (23, torch.int32, 128), torch.float64: (52, torch.int64, 1024)}


def _f32_full_range(rows: torch.Tensor, k0: int, k1: int, first: tuple[torch.Tensor, torch.Tensor],
                    last: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The float32 table over every cell of a non-negative float: ``rows`` (cells k0..k1) in place, and below /
    beyond them the ``first`` / ``last`` node's values (-C, Q) with a zero step, which is what clamping y to
    [y_lo, y_hi] does."""
    full = torch.zeros(_F32_CELLS, 4, dtype=torch.float64)
    full[:k0, 0], full[:k0, 2] = first                                           # y < y_lo: the node at y_lo
    full[k0:k1 + 1] = rows
    full[k1 + 1:, 0], full[k1 + 1:, 2] = last                                    # beyond: the last node
    return full


def _kl_table(delta: float, dtype: torch.dtype, device: torch.device) -> tuple | None:
    r"""Interpolation rows of the KL band on cells of ``y = 1/p - 1``, or ``None`` when δ is out of range.

    Two functions of ``p`` are tabulated, both smooth and bounded on the whole of (0, 1):

    * :math:`C = -p\log\underline r` (→ δ at both ends, with corrections O(p/δ) and O((1-p)log(1-p)/δ)), so
      :math:`\underline r = \exp(-C/p) = \exp(-C\,(1 + y))` keeps full relative precision for tail tokens, where
      it is astronomically small;
    * in float32 :math:`Q = \overline q = p\,\overline r` (→ 1-e^{-δ} as p → 0, → 1 as p → 1), so
      :math:`\overline r = Q\,(1 + y)` is one multiplication; in float64 instead
      :math:`B = \log\frac{1 - \overline q}{1 - p}`, so that the mirrored Newton variable
      :math:`\log(1 - \overline q) = B + \log(1-p)` starts the polish with a relative error ~1e-8 *of the
      band's half-width* (a float64 Q near 1 would lose the digits of 1 - Q, and interpolating
      :math:`\log(1 - \overline q)` itself leaves an error larger than the half-width when δ ≲ 1e-10).

    A cell is ``bits(y) >> (mantissa bits − KL_TABLE_BITS)``: cells are uniform within an octave of y and double
    from one octave to the next, i.e. nearly uniform in log y = -logit p, the scale on which the band varies,
    from p → 1 (log y ≈ log(1-p)) to p → 0 (log y ≈ -log p). Nodes are the cell starts, exact floats; a cell
    stores, for each function, its value at the start and the step to the next node, so the value inside is
    ``v0 + t·dv`` with ``t`` ∈ [0, 1) the position inside the cell, which is the remaining mantissa bits. Node
    values come from the float64 Newton solver above; the accurate cells span ``[y_lo, y_hi]``.

    Returns ``(rows, k0, y_lo, y_hi, shift)`` with ``rows`` of shape ``[n_cells, 4]`` =
    ``(-C, Δ(-C), Q or B, Δ(Q or B))``, gathered as one row per token. In float64 the rows are cells
    ``k0 … k1`` and the caller clamps y to ``[y_lo, y_hi]``. In float32 the rows cover *every* cell of a
    non-negative float (``k0 = 0``, ``_F32_CELLS`` rows, 4 MiB; :func:`_f32_full_range`), so the float32
    evaluation needs no per-δ constant besides the rows — one compiled kernel serves every δ (:func:`_kl_table_f32`).
    """
    key = (float(delta), dtype, str(device))
    if key in _KL_TABLES:
        return _KL_TABLES[key]
    nm, ibits, max_exp = _FLOAT_BITS[dtype]
    shift = nm - KL_TABLE_BITS
    finfo = torch.finfo(dtype)
    y_lo = 2.0 ** math.floor(math.log2(min(finfo.eps * delta / _KL_TABLE_MARGIN, 0.25)))
    y_hi = 2.0 ** math.ceil(math.log2(max(_KL_TABLE_MARGIN / (finfo.eps * delta), 4.0)))
    if y_hi > 2.0 ** (max_exp - 8) or y_lo < 2.0 ** (8 - max_exp):
        _KL_TABLES[key] = None
        return None

    def cell(v: float) -> int:
        return int(torch.tensor([v], dtype=dtype).view(ibits).item()) >> shift

    k0, k1 = cell(y_lo), cell(y_hi)
    ks = torch.arange(k0, k1 + 2, dtype=torch.int64)                             # cells k0..k1 and k1's end
    y = (ks << shift).to(ibits).view(dtype).to(torch.float64)                    # the cell starts, exactly
    log_p = -torch.log1p(y)
    log_1mp = -torch.log1p(1.0 / y)
    x = _kl_lower_log_root(log_p, log_1mp, delta)                                # log q̲
    x_up = _kl_lower_log_root(log_1mp, log_p, delta)                             # log(1 - q̄), by the mirror
    neg_c = (x - log_p) * torch.exp(log_p)                                       # -C = p log r̲
    second = -torch.expm1(x_up) if dtype == torch.float32 else x_up - log_1mp    # Q = q̄, or B
    rows = torch.stack((neg_c[:-1], neg_c[1:] - neg_c[:-1], second[:-1], second[1:] - second[:-1]), 1)
    if dtype == torch.float32:
        rows, k0 = _f32_full_range(rows, k0, k1, (neg_c[0], second[0]), (neg_c[-1], second[-1])), 0
    entry = (rows.to(dtype=dtype, device=device).contiguous(), k0, y_lo, y_hi, shift)
    if len(_KL_TABLES) > 16:
        _KL_TABLES.clear()
    _KL_TABLES[key] = entry
    return entry


#: float32 cells: ``bits(y) >> _F32_SHIFT`` for y ∈ [+0, +inf] runs from 0 to 0x3FC00 (the cell of +inf). The
#: table has 2^18 rows, so that ``-0.0`` (``y = expm1(-0.0)`` when log p = +0.0), whose sign bit makes its cell
#: -2^18 under the arithmetic shift, indexes row -2^18 ≡ 0 (a negative index counts from the end, in eager
#: indexing and in the compiled gather alike) without a masking operation in the kernel.
_F32_SHIFT = _FLOAT_BITS[torch.float32][0] - KL_TABLE_BITS
_F32_CELLS = 1 << (31 - _F32_SHIFT)


def _kl_table_f32(log_p: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 table evaluation on a 1-D ``log p`` (any value ≤ 0 read as 0): ``(lower, upper)``.

    Two spellings of one computation (tests hold both to the same mpmath bounds). Compiled (:func:`_fused`),
    functional tensor expressions that torch.compile fuses into one loop: a pass over ``log p`` with one
    gather of a row per token (in-place operations on the views here would make it materialise copies).
    Eagerly (compiling off or unavailable), in-place operations save the fresh buffers that cost as much as
    the arithmetic on a CPU, and the gather reads each 16-byte row as one complex128 element (faster than a
    4-float row). Every per-δ quantity is in ``rows`` (full-range layout of :func:`_kl_table`).
    """
    scale = 2.0 ** -_F32_SHIFT
    if torch.compiler.is_compiling():                       # functional: fuses into one loop
        y = _expm1(-log_p.clamp(max=0.0))                   # 1/p - 1, exact near p → 1
        bits = y.view(torch.int32)
        idx = bits >> _F32_SHIFT                             # -2^18 for -0.0: row 0 (see _F32_CELLS)
        t = (bits & ((1 << _F32_SHIFT) - 1)).to(torch.float32) * scale
        g = rows[idx]
        inv_p = y + 1.0
        return (torch.exp((g[:, 0] + t * g[:, 1]) * inv_p),                     # exp(-C/p)
                torch.clamp_min((g[:, 2] + t * g[:, 3]) * inv_p, 1.0))          # q̄/p; clamp: round-off at r̄ ≈ 1
    # eager: the same arithmetic in place, with the row gather done as one complex128 element per token
    y = log_p.clamp(max=0.0).neg_().expm1_()
    bits = y.view(torch.int32)
    idx = (bits >> _F32_SHIFT).bitwise_and_(_F32_CELLS - 1)
    t = (bits & ((1 << _F32_SHIFT) - 1)).to(torch.float32).mul_(scale)
    g = rows.view(torch.complex128).view(-1).index_select(0, idx).view(torch.float32).view(-1, 4)
    inv_p = y.add_(1.0)                                      # y's bits are read above
    lower = torch.addcmul(g[:, 0], t, g[:, 1]).mul_(inv_p).exp_()
    upper = t.mul_(g[:, 3]).add_(g[:, 2]).mul_(inv_p).clamp_min_(1.0)
    return lower, upper


def _kl_bounds_table(log_p: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The table solver; ``log_p`` may hold round-off above 0 (read as 0)."""
    table = _kl_table(delta, log_p.dtype, log_p.device)
    if table is None:                                   # δ below the table's range: the Newton solver
        return _kl_bounds(log_p.clamp(max=0.0), delta)
    rows, k0, y_lo, y_hi, shift = table
    if log_p.dtype == torch.float32:
        lower, upper = _fused("kl_table_f32", _kl_table_f32, log_p.reshape(-1), rows)
        return lower.view(log_p.shape), upper.view(log_p.shape)
    log_p = log_p.clamp(max=0.0)
    # float64: the table's estimate of both Newton variables (log q̲, log(1 - q̄)), then a two-step polish.
    y = log_p.neg().expm1_()                            # 1/p - 1, exact near p → 1
    bits = y.clamp(y_lo, y_hi).view(_FLOAT_BITS[log_p.dtype][1]).view(-1)
    idx = (bits >> shift).sub_(k0)
    t = bits.bitwise_and_((1 << shift) - 1).to(log_p.dtype).mul_(2.0 ** -shift)
    g = torch.nn.functional.embedding(idx, rows)        # one gather of a 4-value row per token
    second = torch.addcmul(g[:, 2], g[:, 3], t).view_as(log_p)     # B
    neg_c = t.mul_(g[:, 1]).add_(g[:, 0]).view_as(log_p)           # -C
    inv_p = y.add_(1.0)                                 # 1/p (y is not used again)
    log_1mp = _log1mexp(log_p)
    a_c, b_c = _mirrored_pairs(log_p, log_1mp)
    x0 = torch.stack((torch.addcmul(log_p, neg_c, inv_p), second + log_1mp))
    finfo = torch.finfo(log_p.dtype)
    x = _kl_lower_log_root(a_c, b_c, delta, steps=KL_TABLE_POLISH[torch.float64],
                           x0=torch.fmin(x0.clamp_min(0.5 * finfo.min), a_c))
    return torch.exp(x[0] - log_p), torch.exp(_log1mexp(x[1]) - log_p)


# --------------------------------------------------------------------------------------------------------------
# Fused kernels: torch.compile where it works, the same code eagerly where it does not
# --------------------------------------------------------------------------------------------------------------

#: ``torch.compile`` the fused kernels (read at each call). Off with the environment variable
#: ``FIBERLAB_COMPILE=0``; a kernel whose compilation fails falls back to eager torch with one warning.
COMPILE = os.environ.get("FIBERLAB_COMPILE", "1").strip().lower() not in ("0", "false", "no", "off")
#: (name, device type) → (the eager function, what runs it: its compiled form, or itself after a fallback).
_FUSED: dict[tuple[str, str], tuple[Callable, Callable]] = {}


def _fused(name: str, fn: Callable, x: torch.Tensor, *args: torch.Tensor):
    """``fn(x, *args)`` through ``torch.compile(fn, dynamic=True)``, one compiled kernel per (name, device type).

    Results agree with eager ``fn`` to round-off (the compiled kernel may contract a multiply-add or use
    another vectorised ``exp``); tests check both paths against the same mpmath bounds. Empty inputs and
    ``COMPILE = False`` run eagerly. A failure to compile (no C++ compiler for the CPU backend, no Triton for
    CUDA) warns once and switches that kernel to eager for the rest of the process.
    """
    if not COMPILE or x.numel() == 0:
        return fn(x, *args)
    key = (name, x.device.type)
    if key not in _FUSED:
        _FUSED[key] = (fn, torch.compile(fn, dynamic=True))
    f = _FUSED[key][1]
    if f is fn:
        return fn(x, *args)
    try:
        return f(x, *args)
    except Exception as err:                            # noqa: BLE001 (any backend failure: eager is exact)
        warnings.warn(f"fiberlab: torch.compile of {name} failed on {x.device.type} ({type(err).__name__}: "
                      f"{err}); running it eagerly", RuntimeWarning, stacklevel=2)
        _FUSED[key] = (fn, fn)
        return fn(x, *args)


def fused_kernels() -> dict[str, bool]:
    """The fused kernels this process has used, ``"name (device type)"`` → whether they run compiled (False:
    compiling is off, ``FIBERLAB_COMPILE=0``, or failed and fell back to eager)."""
    return {f"{name} ({dev})": COMPILE and run is not fn for (name, dev), (fn, run) in _FUSED.items()}


def _tv_bounds(log_p: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_p = torch.exp(-log_p)
    lower = (1.0 - delta * inv_p).clamp_min(0.0)                # BandPO Prop. 4 (TV)
    upper = torch.minimum(1.0 + delta * inv_p, inv_p)
    return lower, upper


def _chi2_bounds(log_p: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_p = torch.exp(-log_p)
    # √(δ(1-p)/p) = √(δ(1-p)) · e^{-log p / 2}; (1-p) from log1mexp keeps head tokens exact.
    s = torch.sqrt(delta * torch.exp(_log1mexp(log_p))) * torch.exp(-0.5 * log_p)
    lower = (1.0 - s).clamp_min(0.0)                            # BandPO Prop. 4 (χ²)
    upper = torch.minimum(1.0 + s, inv_p)
    return lower, upper


_SOLVERS = {"kl": _kl_bounds, "tv": _tv_bounds, "chi2": _chi2_bounds}


@torch.no_grad()
def band_bounds(old_log_prob: torch.Tensor, divergence: Divergence = "kl", delta: float = 0.05, *,
                upper_bound_max: float | None = None, relax: tuple[float, float] | None = None,
                method: str = "newton", validate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Band clip interval ``(lower, upper)`` on the ratio ``π_θ/π_old`` for each token.

    Args:
        old_log_prob: ``log π_old(a_t|s_t)`` of the sampled tokens, any shape, any float dtype and device.
            Values above 0 (round-off of a log-softmax) are read as 0, i.e. ``p = 1``.
        divergence: ``"kl"`` (KL(π_old‖π_θ)), ``"tv"`` or ``"chi2"`` (Pearson, π_old in the denominator).
        delta: the trust-region radius δ ≥ 0; δ = 0 gives exactly ``[1, 1]``.
        upper_bound_max: optional cap on the upper bound (the authors' scripts use 10; not in the theory,
            spec ambiguity 5). Must be ≥ 1 so the interval keeps 1.
        relax: optional ``(eps_low, eps_high)``: union with the clip-higher interval
            ``[1 - eps_low, 1 + eps_high]`` (the paper's "relax" ablation).
        method: KL only: ``"newton"`` (default; the fixed-step solver, float64 round-off) or ``"table"`` (a per-δ
            linear lookup table in 1/p - 1, built once per δ/dtype/device and cached; at float32 round-off, and
            polished by two Newton steps in float64). TV and χ² are closed forms either way.
        validate: check inputs (one host sync); leave on unless the caller has validated already.

    Returns:
        ``(lower, upper)`` in ``old_log_prob``'s dtype, without gradient. Half types are solved in float32.
        The default (no cap, no relax) is the theory's interval, whose upper end is ``1/p`` at most and
        overflows to ``inf`` only when ``1/p`` does.
    """
    if validate:
        _validate_log_prob("old_log_prob", old_log_prob)
    d, work = _arguments(old_log_prob, divergence, delta, upper_bound_max, relax, method)
    out_dtype = old_log_prob.dtype
    if d == 0.0:
        lower = torch.ones_like(work)
        upper = torch.ones_like(work)
    elif divergence == "kl" and method == "table":
        lower, upper = _kl_bounds_table(work, d)            # reads log p > 0 as 0 itself (fused in float32)
    else:
        lower, upper = _SOLVERS[divergence](work.clamp(max=0.0), d)
    if relax is not None:
        lower = lower.clamp_max(1.0 - float(relax[0]))
        upper = upper.clamp_min(1.0 + float(relax[1]))
    if upper_bound_max is not None:
        upper = upper.clamp_max(float(upper_bound_max))
    return lower.to(out_dtype), upper.to(out_dtype)


@torch.no_grad()
def band_bounds_authors_bisection(old_log_prob: torch.Tensor, divergence: Divergence = "kl", delta: float = 0.05,
                                  max_iter: int = 50, tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """The BandPO authors' v2 "universal bisection" solver, reimplemented as the spec (§1.5) describes.

    Kept as the baseline of ``fiberlab bench band``: ``g_f`` evaluated with ``r`` and the complement clamped
    to ≥ 1e-12, saturation flags, bisection on ``[1, 1/p]`` and ``[0, 1]``, a global stopping test
    ``max(U - L) ≤ tol`` read on the host every iteration (``.item()``), and the bracket midpoint returned.
    No limit overrides, relax or cap (those are post-processing, the same for every solver).
    """
    _validate_log_prob("old_log_prob", old_log_prob)
    d = _validate_delta(delta)
    if divergence not in _SOLVERS:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    f = {"kl": lambda u: -torch.log(u) + u - 1.0,
         "tv": lambda u: 0.5 * (u - 1.0).abs(),
         "chi2": lambda u: (u - 1.0) ** 2}[divergence]
    p = old_log_prob.clamp(-700.0, 0.0).exp()
    one_m_p = (1.0 - p).clamp_min(1e-12)

    def g(r: torch.Tensor) -> torch.Tensor:
        r_c = r.clamp_min(1e-12)
        comp = ((1.0 - r * p) / one_m_p).clamp_min(1e-12)
        return p * f(r_c) + (1.0 - p) * f(comp)

    inv_p = 1.0 / p.clamp_min(1e-12)
    upper_sat = g(inv_p) <= d
    lower_sat = g(torch.zeros_like(p)) <= d

    def bisect(lo: torch.Tensor, hi: torch.Tensor, increasing: bool) -> torch.Tensor:
        # Keep the half whose end still straddles δ; stop on the global width test, read on the host.
        for _ in range(max_iter):
            mid = 0.5 * (lo + hi)
            below = g(mid) < d
            move_lo = below if increasing else ~below
            lo, hi = torch.where(move_lo, mid, lo), torch.where(move_lo, hi, mid)
            if (hi - lo).max().item() <= tol:
                break
        return 0.5 * (lo + hi)

    upper = torch.where(upper_sat, inv_p, bisect(torch.ones_like(p), inv_p.clone(), increasing=True))
    lower = torch.where(lower_sat, torch.zeros_like(p), bisect(torch.zeros_like(p), torch.ones_like(p), increasing=False))
    return lower, upper


# --------------------------------------------------------------------------------------------------------------
# The loss's fused path: the active end of the band and the band's statistics, in one kernel
# --------------------------------------------------------------------------------------------------------------

_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant tensor, made once per (values, dtype, device): creating it on an accelerator at every
    call would be a blocking host-to-device copy."""
    key = (values, dtype, str(device))
    t = _CONSTANTS.get(key)
    if t is None:
        if len(_CONSTANTS) > 256:
            _CONSTANTS.clear()
        t = _CONSTANTS[key] = torch.tensor(values, dtype=dtype, device=device)
    return t


def _tail_log_upper(divergence: str, delta: float) -> tuple[float, float]:
    r"""``(a, b)`` with :math:`\log\overline r = a(-\log p) + b + O(p)` as :math:`p \to 0`, for the tokens whose
    :math:`\overline r` overflows the working dtype (:math:`1/p` beyond its range: there :math:`O(p)` is below
    its round-off). KL: :math:`\overline q = p\overline r \to 1 - e^{-\delta}` (the constraint tends to
    :math:`-\log(1-q) \le \delta`); TV: :math:`\overline r = \min(1 + \delta/p, 1/p)`, so
    :math:`\overline q \to \min(\delta, 1)`; Pearson χ²: :math:`\overline r \approx \sqrt{\delta/p}`."""
    if delta <= 0.0:
        return 1.0, 0.0                           # δ = 0: r̄ = 1 is never inf; any finite pair serves
    if divergence == "kl":
        return 1.0, math.log(-math.expm1(-delta))
    if divergence == "tv":
        return 1.0, math.log(min(delta, 1.0))
    return 0.5, 0.5 * math.log(delta)


def _active(lower: torch.Tensor, upper: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
            post: torch.Tensor, log_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Relax/cap (``post[:3]`` = ``(1 - eps_low, 1 + eps_high, cap)``, neutral values ``(1, 1, inf)``), then the
    active end ``r̄`` where A > 0 and ``r̲`` elsewhere, with the masked terms of ``r̲`` and ``log r̄`` stacked.
    ``log r̄`` is finite where ``r̄`` overflows (1/p beyond the dtype): there it is the tail asymptote
    ``a(-log p) + b`` of :func:`_tail_log_upper` (``post[3:]``), exact to the dtype's round-off."""
    lower = torch.minimum(lower, post[0])
    upper = torch.minimum(torch.maximum(upper, post[1]), post[2])
    m = mask.to(lower.dtype)
    bound = torch.where(advantages > 0, upper, lower)
    log_upper = torch.where(torch.isinf(upper), post[3] * log_p.clamp(max=0.0).neg() + post[4], torch.log(upper))
    # The masked terms, summed by the caller: a reduction inside a dynamic-shape kernel is parallelised or
    # not by the size of the first batch it was compiled for; a pointwise kernel always is.
    return bound, torch.stack((lower * m, log_upper * m))


def _active_kl_table_f32(log_p, advantages, mask, rows, post):
    return _active(*_kl_table_f32(log_p, rows), advantages, mask, post, log_p)


def _active_tv(log_p, advantages, mask, delta, post):
    return _active(*_tv_bounds(log_p.clamp(max=0.0), delta), advantages, mask, post, log_p)


def _active_chi2(log_p, advantages, mask, delta, post):
    return _active(*_chi2_bounds(log_p.clamp(max=0.0), delta), advantages, mask, post, log_p)


@torch.no_grad()
def band_active_bound(old_log_prob: torch.Tensor, advantages: torch.Tensor, response_mask: torch.Tensor,
                      divergence: Divergence = "kl", delta: float = 0.05, *, upper_bound_max: float | None = None,
                      relax: tuple[float, float] | None = None, method: str = "table"
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The end of each token's Band interval that PPO's pessimistic clip can reach, and the band's statistics.

    For the clipped surrogate :math:`\max(-A r, -A\,\mathrm{clip}(r, \underline r, \overline r))` only one end
    matters per token: :math:`\overline r` when A > 0 (the max is :math:`-A\min(r, \overline r)`) and
    :math:`\underline r` when A < 0 (it is :math:`-A\max(r, \underline r)`); either way it equals
    :math:`\max(-A r, -A b)` with ``b`` the active end, bit for bit (rounding is monotone). A = 0 takes
    :math:`\underline r` (the loss is 0 either way). Returns ``(b, Σ_valid r̲, Σ_valid log r̄)``: the two sums
    over ``response_mask`` are BandPO's band statistics, taken in the same pass.

    Same arguments and intervals as :func:`band_bounds` (``relax`` and ``upper_bound_max`` applied before the
    selection), for inputs the caller has validated (shapes equal, values finite). In float32 (and half types,
    solved in float32) with ``method="table"`` or a closed form, it is one fused kernel (:func:`_fused`): one read
    of ``old_log_prob``, ``advantages`` and the mask, one write of ``b``, instead of a dozen passes and two
    stored bounds. Otherwise (float64, or the Newton solver) it composes :func:`band_bounds` eagerly.
    """
    d, work = _arguments(old_log_prob, divergence, delta, upper_bound_max, relax, method)
    out_dtype = old_log_prob.dtype
    el, eh = (0.0, 0.0) if relax is None else (float(relax[0]), float(relax[1]))
    cap = math.inf if upper_bound_max is None else float(upper_bound_max)
    # relax and cap, applied by _active, and the tail asymptote of log r̄
    post = _constant((1.0 - el, 1.0 + eh, cap, *_tail_log_upper(divergence, d)), work.dtype, work.device)
    fused, table = work.dtype == torch.float32 and d > 0, None
    if fused and divergence == "kl":                      # the Newton solver, or a δ beyond the table: eager
        table = _kl_table(d, torch.float32, work.device) if method == "table" else None
        fused = table is not None
    if not fused:
        lower, upper = band_bounds(work, divergence, d, method=method, validate=False)
        bound, terms = _active(lower, upper, advantages, response_mask, post, work)
        s_lo, s_log_up = terms.flatten(1).sum(1)
        return bound.to(out_dtype), s_lo, s_log_up
    shape = work.shape
    args = (work.reshape(-1), advantages.reshape(-1), response_mask.reshape(-1))
    if divergence == "kl":
        out = _fused("active_kl_table_f32", _active_kl_table_f32, *args, table[0], post)
    else:
        d_t = _constant((d,), torch.float32, work.device)[0]     # a tensor: one kernel serves every δ
        name, fn = ("active_tv", _active_tv) if divergence == "tv" else ("active_chi2", _active_chi2)
        out = _fused(name, fn, *args, d_t, post)
    bound, terms = out
    s_lo, s_log_up = terms.sum(1)
    return bound.view(shape).to(out_dtype), s_lo, s_log_up
