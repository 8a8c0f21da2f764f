"""Paired statistics for training predictions, decided before any run.

A prediction compares two arms trained from the same warm-up with the same RL seed, so each seed gives one paired
difference ``d_i = better_i - worse_i`` of a primary statistic. The tests:

1. **Paired t-interval** for the mean of ``d`` (two-sided, level :data:`CI_LEVEL`). With 5 seeds a percentile
   bootstrap covers about 85 % instead of 95 % (``tests/test_stats.py`` measures it); the t-interval is exact for
   normal differences and is what a reviewer recomputes from ``per_seed``.
2. **Sign-flip permutation p-value** (two-sided): under H0 the sign of each paired difference is a fair coin, so
   the null distribution of ``|mean d|`` is the one over all ``2^n`` sign patterns — enumerated exactly for
   ``n <=`` :data:`EXACT_FLIPS_MAX`, else :data:`FLIP_SAMPLES` seeded draws (with the observed pattern counted,
   so p is never 0).
3. **Holm's step-down correction** across the primaries of all experiments (family-wise error ``ALPHA``).
4. **TOST** (two one-sided t-tests) for an equivalence margin stated in advance.

:func:`verdict` turns them into one of :data:`VERDICTS`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy import stats as _st

#: Family-wise error rate of the primaries, and the level of every confidence interval (1 - ALPHA).
ALPHA = 0.05
CI_LEVEL = 1 - ALPHA
#: Paired seeds a prediction needs before it can be decided (fewer: at most ``inconclusive``).
MIN_SEEDS = 8
#: Up to this many seeds the sign-flip null is enumerated (2^16 = 65,536 patterns); above it, sampled.
EXACT_FLIPS_MAX = 16
FLIP_SAMPLES = 100_000

VERDICTS = ("confirmed", "refuted", "equivalent", "inconclusive", "not testable")


def _diffs(d: Sequence[float]) -> np.ndarray:
    x = np.asarray(d, dtype=float)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"d: need a 1-D array of at least two paired differences, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("d: paired differences must be finite")
    return x


def paired_t_interval(d: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float]:
    """Two-sided t-interval for the mean paired difference: mean ± t_{n-1, (1+level)/2} · s/√n."""
    x = _diffs(d)
    n = x.size
    half = _st.t.ppf((1 + level) / 2, n - 1) * x.std(ddof=1) / np.sqrt(n)
    return float(x.mean() - half), float(x.mean() + half)


def sign_flip_p(d: Sequence[float], seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of H0: the paired differences are symmetric about 0.

    p = #{sign patterns s : |mean(s·|d|)| >= |mean d|} / #patterns, exact for n <= EXACT_FLIPS_MAX."""
    x = _diffs(d)
    obs = abs(x.mean())
    a = np.abs(x)
    # a relative slack of 1e-12 keeps patterns whose mean equals the observed one up to summation order
    tol = 1e-12 * max(1.0, float(a.sum()))
    if x.size <= EXACT_FLIPS_MAX:
        signs = np.array(list(itertools.product((-1.0, 1.0), repeat=x.size)))
        null = np.abs(signs @ a) / x.size
        return float(np.mean(null >= obs - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(FLIP_SAMPLES, x.size))
    null = np.abs(signs @ a) / x.size
    return float((1 + np.sum(null >= obs - tol)) / (1 + FLIP_SAMPLES))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: p_(i) · (m - i + 1), made monotone, capped at 1 (order of input kept)."""
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError(f"pvalues: need a 1-D array of values in [0, 1], got {pvalues!r}")
    m = p.size
    order = np.argsort(p, kind="stable")
    adj = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return [float(v) for v in out]


def tost_p(d: Sequence[float], margin: float) -> float:
    """TOST p-value of equivalence within ±margin: the larger of the two one-sided paired t-test p-values
    (H0a: mean <= -margin, H0b: mean >= +margin). Equivalent at level α when this is below α, i.e. when the
    (1 - 2α) t-interval lies inside (-margin, margin)."""
    if not (np.isfinite(margin) and margin > 0):
        raise ValueError(f"margin: must be positive and finite, got {margin!r}")
    x = _diffs(d)
    n = x.size
    se = x.std(ddof=1) / np.sqrt(n)
    if se == 0:
        return 0.0 if abs(x.mean()) < margin else 1.0
    p_low = _st.t.sf((x.mean() + margin) / se, n - 1)
    p_high = _st.t.cdf((x.mean() - margin) / se, n - 1)
    return float(max(p_low, p_high))


def verdict(d: Sequence[float], p_adjusted: float, margin: float | None = None, gate_passed: bool = True,
            alpha: float = ALPHA, min_seeds: int = MIN_SEEDS) -> str:
    """The verdict of a prediction "mean d > 0", decided in this order:

    1. ``not testable`` when the validity gate failed (the mechanism does not act, or a run collapsed/saturated);
    2. ``confirmed`` / ``refuted`` when the Holm-adjusted p is below α and the mean is positive / negative;
    3. ``equivalent`` when a margin was stated in advance and TOST rejects non-equivalence at α;
    4. ``inconclusive`` otherwise, and always when fewer than ``min_seeds`` pairs were run."""
    x = _diffs(d)
    if not gate_passed:
        return "not testable"
    if x.size < min_seeds:
        return "inconclusive"
    if p_adjusted < alpha and x.mean() != 0:
        return "confirmed" if x.mean() > 0 else "refuted"
    if margin is not None and tost_p(x, margin) < alpha:
        return "equivalent"
    return "inconclusive"


__all__ = ["ALPHA", "CI_LEVEL", "MIN_SEEDS", "VERDICTS", "paired_t_interval", "sign_flip_p", "holm", "tost_p",
           "verdict"]
