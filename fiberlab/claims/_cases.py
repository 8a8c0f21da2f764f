"""Case generators and helpers shared by the checks of several claim modules.

Every random draw comes from ``numpy.random.default_rng`` (or a seeded ``torch.Generator``) with a fixed seed, so
every check sees the same cases on every run.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import torch

from fiberlab.registry import Evidence


# ---------------------------------------------------------------------------------------------
# BandPO (band_bounds, band_shape, band_clipping, band_trust)
# ---------------------------------------------------------------------------------------------
BAND_SEED = 20260305  # BandPO's arXiv submission date; any fixed seed would do
#: δ at which most numerics checks of the Band evaluate it
BAND_DELTAS = (0.01, 0.05, 0.2, 1.0)
EPS64 = float(np.finfo(np.float64).eps)


def _completion(rng: np.random.Generator, K: int, p: float) -> tuple[np.ndarray, int]:
    """A random K-ary distribution P with P[a] = p at a random position a (the rest Dirichlet(1))."""
    a = int(rng.integers(K))
    P = np.empty(K)
    P[np.arange(K) != a] = rng.dirichlet(np.ones(K - 1)) * (1.0 - p)
    P[a] = p
    return P, a


def _log_p(p) -> mp.mpf:
    with mp.workdps(60):
        return mp.log(mp.mpf(p))


def _log_1mp(p) -> mp.mpf:
    """log(1 − p) exactly for the float p (so that p and 1 − p are exact complements in mpmath)."""
    with mp.workdps(60):
        return mp.log1p(-mp.mpf(p))


def _ratio_err(x, ref) -> float:
    return abs(float(x) - float(ref)) / max(1.0, abs(float(ref)))


def _log_error(got: float, ref: mp.mpf) -> float:
    """Error of a float64 band end in log r, relative to max(1, |log r|).

    e^x in float64 carries the rounding of x: a relative error ≈ ε·|x| is unavoidable for r̲ ≈ e^{-δ/p}, so the
    error is measured in x = log r (for r near 1 this is the relative error of r). An r below the float64 range
    must round to 0 (or the smallest subnormals).
    """
    if ref < np.finfo(float).tiny:
        return 0.0 if got < np.finfo(float).tiny else np.inf
    log_ref = float(mp.log(ref))
    return abs(np.log(got) - log_ref) / max(1.0, abs(log_ref))


def _normalised(errors: dict[str, tuple[float, float]], cases: int, detail: str) -> Evidence:
    """Evidence from ``{name: (error, tolerance)}``: max_error = max error/tolerance against 1.0."""
    worst_name, (worst_err, worst_tol) = max(errors.items(), key=lambda kv: kv[1][0] / kv[1][1])
    parts = ", ".join(f"{k}: {e:.2e} (tol {t:.0e})" for k, (e, t) in errors.items())
    return Evidence.within(worst_err / worst_tol, 1.0, cases,
                           detail=f"{detail}. max error/tolerance, worst {worst_name}. {parts}")


def _torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
