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
from typing import Literal

import torch

Divergence = Literal["kl", "tv", "chi2"]
DIVERGENCES: tuple[str, ...] = ("kl", "tv", "chi2")

#: Newton steps after the start point; measured: 3 reach float64 round-off on p ∈ [1e-300, 1-1e-16],
#: δ ∈ [1e-12, 20]; one more is kept as a margin (each step is a handful of elementwise kernels).
KL_NEWTON_STEPS = 4

#: The quadratic start q = p(1 - w) is used while w < W_QUAD_MAX (q > 0); beyond it x_safe is already close.
W_QUAD_MAX = 0.999


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x ≤ 0, accurate on the whole range (Mächler 2012: switch at -log 2)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


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


def _kl_lower_log_root(log_p: torch.Tensor, log_1mp: torch.Tensor, delta: float,
                       steps: int | None = None) -> torch.Tensor:
    r"""``x = log q`` of the root ``q < p`` of ``kl(p‖q) = δ``, given ``log p`` and ``log(1-p)``.

    Returns ``-inf`` where ``p == 0`` (the root is ``q = 0``). ``δ > 0`` is assumed (δ = 0 is handled by
    the caller: the band is exactly [1, 1]).
    """
    p = torch.exp(log_p)
    omp = torch.exp(log_1mp)                       # 1 - p, exact near p → 1
    zero_p = p <= 0                                # p underflowed: the root is q = 0
    p_safe = torch.where(zero_p, torch.ones_like(p), p)
    # (1-p) log(1-p) from the exact log(1-p), not log(exp(.)) (which loses it for p → 0); 0 at p = 1.
    omp_log_omp = torch.where(omp > 0, omp * log_1mp, torch.zeros_like(omp))

    odds = torch.exp(log_p - log_1mp)                 # p/(1-p); inf at p = 1 (then the (1-p) term is 0)

    def h_and_slope(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # kl(p‖q) = p φ(r-1) + (1-p) φ(s-1), φ(t) = t - log(1+t) ≥ 0, r = q/p, s = (1-q)/(1-p): the linear
        # parts cancel exactly, so no large terms cancel near the root. s - 1 = -(r-1) p/(1-p) exactly.
        y = x - log_p                              # log r
        t = torch.expm1(y)                         # r - 1
        t_s = -t * odds                            # s - 1
        # At p = 1 exactly (1-p = 0) the second term tends to its linear part (1-p) t_s = -p t.
        tail = torch.where(omp > 0, omp * (t_s - torch.log1p(t_s)), -p_safe * t)
        h = p_safe * (t - y) + tail - delta
        slope = p_safe * t * torch.exp(-_log1mexp(x))          # h'(x) = (q - p)/(1 - q) < 0
        return h, slope

    # Start 1: -log(1-q) ≥ 0 gives h(x) ≥ p(log p - x) + (1-p)log(1-p) - δ, zero at x_safe ⇒ h(x_safe) ≥ 0.
    x_safe = log_p + (omp_log_omp - delta) / p_safe
    # Start 2: one Newton step from the quadratic guess q = p(1 - w), w = √(2δ(1-p)/p), written in logs so a
    # head token (1-p below float resolution) keeps q < p; a Newton step from either side of the root of a
    # convex decreasing function lands left of it.
    w = math.sqrt(2.0 * delta) * torch.exp(0.5 * (log_1mp - log_p))
    x_quad = log_p + torch.log1p(-w.clamp_max(W_QUAD_MAX))
    h_q, s_q = h_and_slope(x_quad)
    x_quad = torch.where(w < W_QUAD_MAX, x_quad - h_q / s_q, x_safe)
    x = torch.maximum(x_safe, torch.nan_to_num(x_quad, nan=-math.inf))
    x = torch.minimum(x, log_p)                    # the root lies below log p
    for _ in range(KL_NEWTON_STEPS if steps is None else steps):   # fixed count: no data-dependent loop, no sync
        h, slope = h_and_slope(x)
        x_new = x - h / slope
        # Monotone from the left; the guard only absorbs round-off at convergence (h ≈ 0, slope ≈ 0).
        x = torch.where(torch.isfinite(x_new), torch.minimum(x_new, log_p), x)
    return torch.where(zero_p, torch.full_like(x, -math.inf), x)


def _kl_bounds(log_p: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    log_1mp = _log1mexp(log_p)
    x_low = _kl_lower_log_root(log_p, log_1mp, delta)          # log q̲
    x_mirror = _kl_lower_log_root(log_1mp, log_p, delta)       # log(1 - q̄): lower root for 1 - p
    lower = torch.exp(x_low - log_p)
    upper = torch.exp(_log1mexp(x_mirror) - log_p)             # q̄ / p
    return lower, upper


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
                validate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
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
        validate: check inputs (one host sync); leave on unless the caller has validated already.

    Returns:
        ``(lower, upper)`` in ``old_log_prob``'s dtype, without gradient. Half types are solved in float32.
        The default (no cap, no relax) is the theory's interval, whose upper end is ``1/p`` at most and
        overflows to ``inf`` only when ``1/p`` does.
    """
    if validate:
        _validate_log_prob("old_log_prob", old_log_prob)
    if divergence not in _SOLVERS:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    d = _validate_delta(delta)
    if upper_bound_max is not None and not (float(upper_bound_max) >= 1.0):
        raise ValueError(f"upper_bound_max must be ≥ 1 (the band contains r = 1), got {upper_bound_max!r}")
    if relax is not None:
        if len(relax) != 2 or not all(0.0 <= float(e) for e in relax) or not float(relax[0]) <= 1.0:
            raise ValueError(f"relax must be (eps_low, eps_high) with 0 ≤ eps_low ≤ 1 and eps_high ≥ 0, got {relax!r}")

    out_dtype = old_log_prob.dtype
    work = old_log_prob if out_dtype in (torch.float32, torch.float64) else old_log_prob.float()
    log_p = work.clamp(max=0.0)
    if d == 0.0:
        lower = torch.ones_like(log_p)
        upper = torch.ones_like(log_p)
    else:
        lower, upper = _SOLVERS[divergence](log_p, d)
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

    lo, hi = torch.ones_like(p), inv_p.clone()
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        below = g(mid) < d
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        if (hi - lo).max().item() <= tol:
            break
    upper = torch.where(upper_sat, inv_p, 0.5 * (lo + hi))

    lo, hi = torch.zeros_like(p), torch.ones_like(p)
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        below = g(mid) < d
        lo, hi = torch.where(below, lo, mid), torch.where(below, mid, hi)
        if (hi - lo).max().item() <= tol:
            break
    lower = torch.where(lower_sat, torch.zeros_like(p), 0.5 * (lo + hi))
    return lower, upper
