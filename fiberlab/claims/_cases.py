"""Case generators and helpers shared by the checks of several claim modules.

Every random draw comes from ``numpy.random.default_rng`` (or a seeded ``torch.Generator``) with a fixed seed, so
every check sees the same cases on every run.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import torch

from fiberlab.gpu.losses import get_policy_loss
from fiberlab.registry import Evidence


# ---------------------------------------------------------------------------------------------
# BandPO (band_bounds, band_shape, band_clipping, band_trust)
# ---------------------------------------------------------------------------------------------
BAND_SEED = 20260305  # BandPO's arXiv submission date; any fixed seed would do
#: δ at which most numerics checks of the Band evaluate it
BAND_DELTAS = (0.01, 0.05, 0.2, 1.0)
EPS64 = float(np.finfo(np.float64).eps)


def random_completion(rng: np.random.Generator, K: int, p: float) -> tuple[np.ndarray, int]:
    """A random K-ary distribution P with P[a] = p at a random position a (the rest Dirichlet(1))."""
    a = int(rng.integers(K))
    P = np.empty(K)
    P[np.arange(K) != a] = rng.dirichlet(np.ones(K - 1)) * (1.0 - p)
    P[a] = p
    return P, a


def mp_log_p(p) -> mp.mpf:
    with mp.workdps(60):
        return mp.log(mp.mpf(p))


def mp_log_1mp(p) -> mp.mpf:
    """log(1 − p) exactly for the float p (so that p and 1 − p are exact complements in mpmath)."""
    with mp.workdps(60):
        return mp.log1p(-mp.mpf(p))


def ratio_error(x, ref) -> float:
    return abs(float(x) - float(ref)) / max(1.0, abs(float(ref)))


def log_error(got: float, ref: mp.mpf) -> float:
    """Error of a float64 band end in log r, relative to max(1, |log r|).

    e^x in float64 carries the rounding of x: a relative error ≈ ε·|x| is unavoidable for r̲ ≈ e^{-δ/p}, so the
    error is measured in x = log r (for r near 1 this is the relative error of r). An r below the float64 range
    must round to 0 (or the smallest subnormals).
    """
    if ref < np.finfo(float).tiny:
        return 0.0 if got < np.finfo(float).tiny else np.inf
    log_ref = float(mp.log(ref))
    return abs(np.log(got) - log_ref) / max(1.0, abs(log_ref))


def measures_evidence(errors: dict[str, tuple[float, float]], cases: int, detail: str) -> Evidence:
    """Evidence from ``{name: (error, tolerance)}`` (:meth:`Evidence.worst_of`: the absolute pair nearest its
    tolerance), every measure listed in the detail."""
    parts = ", ".join(f"{k}: {e:.2e} (tol {t:.0e})" for k, (e, t) in errors.items())
    return Evidence.worst_of(errors, cases, detail=f"{detail}. {parts}")


def as_torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


# ---------------------------------------------------------------------------------------------
# LPO (lpo_targets, lpo_coefficients, lpo_improvement)
# ---------------------------------------------------------------------------------------------
LPO_SEED = 20260507  # LPO v1's arXiv date; any fixed seed would do

# Round-off and finite-difference budgets of the numerics checks, shared by the LPO modules.

# Analytic on-policy identities (coefficients, θ-gradients through exact score functions): a few float64 operations
# on O(1) numbers, so a few ulp; measured ≲ 1e-16. Relative to max(1, ‖g‖∞).
ROUNDOFF_TOL = 1e-13
# Central differences with step h = 1e-5 on O(1) smooth functions: truncation h² f'''/6 ≲ 1e-10 and rounding
# ε|f|/h ≲ 1e-11; measured ≲ 2e-10. Relative to max(1, ‖g‖∞).
FD_STEP = 1e-5
FD_TOL = 1e-8
# Exact identities (Prop. 3, Thm. 2(a)) summed in float64 with |terms| ≤ max|R|/τ ≈ 1e2: relative 1e-13.
IDENTITY_TOL = 1e-13
# Zero-sum of computed coefficients: Σ of K ≤ 16 numbers of size ≤ 1e2: ≲ 1e-13.
SUM_TOL = 1e-12
# Sums of K ≤ 16 float64 terms of size ≤ 1 (coefficients, R̂ differences, TV): a few ulp, ≲ 1e-15; 1e-14 leaves 10×.
UNIT_SUM_TOL = 1e-14
#: float64 gradients built from sums of O(K·T) ≤ 100 terms of size O(1) in a different order than the oracle's:
#: a few hundred ulp (eps ≈ 2.2e-16), relative to max(1, ‖g‖∞). Measured ≲ 1e-15.
GRAD_TOL = 1e-12


def seeded_rng(k=0):
    """The LPO checks' generator number ``k`` (each check draws from its own offset of the seed)."""
    return np.random.default_rng(LPO_SEED + k)


def rel_error(a, b):
    """Largest absolute difference of two arrays, relative to max(1, max|b|)."""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(1.0, float(np.max(np.abs(b)))))


def lpo_batch(seed, n_groups=4, k=5, t=7, drift=0.3, equal_lengths=False):
    g = torch.Generator().manual_seed(seed)
    b = n_groups * k
    old = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    step = drift * torch.randn(b, t, generator=g, dtype=torch.float64)
    lp = torch.where(old + step > 0, old - step, old + step)   # reflected: a log-prob (old - step ≤ 2·old ≤ 0)
    lengths = torch.full((b,), t) if equal_lengths else torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    rewards = (torch.rand(b, generator=g, dtype=torch.float64) < 0.5).to(torch.float64)
    return old, lp, mask, rewards, torch.arange(b) // k


def loss_grad(name, old, lp, mask, mode, cfg, **extra):
    """Gradient of the registered policy loss ``name`` with respect to ``log_prob``."""
    lp = lp.detach().clone().requires_grad_()
    value, _ = get_policy_loss(name)(old, lp, None, mask, mode, cfg, **extra)
    (g,) = torch.autograd.grad(value, lp)
    return g


def rel_error_torch(a, b):
    """:func:`rel_error` for torch tensors."""
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))
