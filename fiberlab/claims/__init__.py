"""The claim catalogue. Importing this package declares every claim and attaches its checks.

The modules are organised by topic: each holds, for every claim of its topic, the ``claim(...)`` declaration
immediately followed by all its checks, layer by layer (theory, numerics, gpu), so a claim reads in one place. Case
generators and helpers used by several modules are in ``_cases``. The modules are imported in the order below,
which is the order of the registry (``fiberlab claims``, ``fiberlab verify``).

BandPO: ``band_bounds`` (the reduction, the TV/χ² closed forms, the KL ends, saturation), ``band_shape`` (limits,
small δ, mirror, monotonicity), ``band_clipping`` (canonical clipping's bottleneck, the authors' bisection),
``band_trust`` (does the Band keep a state in the trust region).

LPO: ``lpo_targets`` (PG as reverse KL, the Gibbs target, the proximal objective, implicit targets, the entropy
bonus, K = 2, the pointwise target, the group target's large-K limit), ``lpo_bandit`` (the paper's toy
experiment), ``lpo_coefficients`` (zero-sum, bounded forward and unbounded reverse coefficients, length
normalisation, the off-policy gap, the ``lpo`` loss, the single-response case, gradient norms),
``lpo_improvement`` (monotone improvement, inexact projection, mode coverage, the full-space iteration).
"""

from fiberlab.claims import band_bounds, band_shape, band_clipping  # noqa: F401  (BandPO, by topic)
from fiberlab.claims import band_trust  # noqa: F401  (band.trust_region: declaration and its checks)
from fiberlab.claims import losses, reliability  # noqa: F401
from fiberlab.claims import fiberpo_trust, fiberpo_gating, fiberpo_gpu  # noqa: F401
from fiberlab.claims import fiberpo_figures  # noqa: F401  (FiberPO Fig. 4, FiberPO-Domain decoupling)
from fiberlab.claims import fiberpo_trust_extra  # noqa: F401
from fiberlab.claims import lpo_targets  # noqa: F401  (LPO, by topic)
from fiberlab.claims import lpo_bandit  # noqa: F401  (the toy experiment; lpo_coefficients and lpo_improvement use it)
from fiberlab.claims import lpo_coefficients, lpo_improvement  # noqa: F401
from fiberlab.claims import harness  # noqa: F401  (training predictions; slowest checks)
