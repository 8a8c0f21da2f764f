"""The claim catalogue. Importing this package declares every claim and attaches its checks.

The modules are organised by topic: each holds, for every claim of its topic, the ``claim(...)`` declaration
immediately followed by all its checks, layer by layer (theory, numerics, gpu), so a claim reads in one place. Case
generators and helpers used by several modules are in ``_cases``. The modules are imported in the order below,
which is the order of the registry (``fiberlab claims``, ``fiberlab verify``).

BandPO: ``band_bounds`` (the reduction, the TV/χ² closed forms, the KL ends, saturation), ``band_shape`` (limits,
small δ, mirror, monotonicity), ``band_clipping`` (canonical clipping's bottleneck, the authors' bisection),
``band_trust`` (does the Band keep a state in the trust region).

Notation: ``p = π_old(a|s)``, ``r = π_θ(a|s)/p``, ``g_f(p, r) = p f(r) + (1-p) f((1-rp)/(1-p))``, divergence
``D_f = E_{π_old}[f(π_θ/π_old)]`` (so KL is KL(π_old‖π_θ)). Theorem numbers follow the authors' code comments
(``Theorem 1``, ``Proposition 3``, ``Prop 4``); statements are reconstructed from the paper and the authors' code.

What a check of each layer compares:

* theory: a derivation of :mod:`fiberlab.theory.band` compared with the statement; the check passes only if every
  difference simplifies to exactly ``0`` (and every sign it needs is decided by SymPy's assumptions), so
  ``max_error = 0.0`` and ``tolerance = 0.0``; anything SymPy cannot reduce to ``0`` is listed in the detail;
* numerics: the convex oracle :func:`~fiberlab.numerics.band.band_bounds_cvx` (the Band problem over the whole
  simplex, assuming nothing about the reduction) against :func:`~fiberlab.numerics.band.band_bounds_mp` (the
  scalar problem ``{r : g_f(p, r) ≤ δ}`` at 50 digits) and the float64 solvers; closed forms and thresholds come
  from the SymPy derivations (lambdified), never typed in;
* gpu: :func:`fiberlab.gpu.band.band_bounds`, which people train with, in float64 on CPU (the same code runs on
  CUDA), against the 50-digit reference or the closed forms.

Random draws and the helpers shared with the other Band modules are in :mod:`fiberlab.claims._cases`. Tolerances
are named next to the checks that use them, with the reason for their size. Checks whose measures have different
natural tolerances report the absolute error and tolerance of the measure nearest its tolerance (named in their
detail).

LPO: ``lpo_targets`` (PG as reverse KL, the Gibbs target, the proximal objective, implicit targets, the entropy
bonus, K = 2, the pointwise target, the group target's large-K limit), ``lpo_bandit`` (the paper's toy
experiment), ``lpo_coefficients`` (zero-sum, bounded forward and unbounded reverse coefficients, length
normalisation, the off-policy gap, the ``lpo`` loss, the single-response case, gradient norms),
``lpo_improvement`` (monotone improvement, inexact projection, mode coverage, the full-space iteration).

Notation: a group of ``K`` responses, listwise logits ``s_k = log π_θ(y_k|x) - log π_b(y_k|x)`` (summed over
tokens), ``P_θ = softmax(s)`` (Eq. 4), target ``w* = softmax(R/τ + s_t)`` (Thm. 1), ``c^fwd = P - w*`` (Eq. 10),
``c^rev = P(d - d̄)`` with ``d = s - φ`` (Eq. 11). Where the paper is ambiguous the most plausible
reading is used (open questions A1: summed sequence log-probs; A4: population σ_G; A8: Pinsker with the square root).

What a check of each layer compares:

* theory: SymPy derivations from :mod:`fiberlab.theory.lpo`; a check passes only if every difference it gets
  simplifies to exactly ``0`` (and every fact it needs is established), so ``max_error = 0.0`` and
  ``tolerance = 0.0``; anything SymPy cannot reduce is listed in the detail;
* numerics: float64 NumPy, finite differences, cvxpy (Clarabel) oracles, exact enumeration. Gradients of toy
  policies (:class:`~fiberlab.numerics.lpo.LogLinearPolicy`, a full response set with its partition function;
  :class:`~fiberlab.numerics.lpo.UnigramTokenPolicy`, sums over tokens of varying length) are compared with
  central finite differences of the divergence in θ, never with the formula under test alone; targets are
  compared with cvxpy programs that assume nothing about their form;
* gpu: the ``lpo`` / ``lpo_pointwise`` losses people train with, in float64 on CPU (the same code runs on CUDA),
  on random ragged batches, against an oracle that does not share their coefficient formulas: autograd through
  the divergence written as a function of the listwise logits, or the ``ppo`` loss with GRPO advantages.

Random draws, the shared round-off and finite-difference budgets and the gpu batches are in
:mod:`fiberlab.claims._cases`; every other tolerance is named next to the checks that use it, with the reason for
its size.
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
