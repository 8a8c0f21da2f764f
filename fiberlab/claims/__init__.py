"""The claim catalogue. Importing this package declares every claim and attaches its checks.

One module declares a paper's claims (``band``); the checks of each layer live beside it
(``band_theory``, ``band_numerics``, ``band_gpu``) so each layer's evidence reads on its own.
"""

from fiberlab.claims import band  # noqa: F401  (declarations first)
from fiberlab.claims import band_theory, band_numerics, band_gpu  # noqa: F401
from fiberlab.claims import band_trust  # noqa: F401  (band.trust_region: declaration and its checks)
from fiberlab.claims import losses, reliability  # noqa: F401
from fiberlab.claims import fiberpo_trust, fiberpo_gating, fiberpo_gpu  # noqa: F401
from fiberlab.claims import fiberpo_figures  # noqa: F401  (FiberPO Fig. 4, FiberPO-Domain decoupling)
from fiberlab.claims import fiberpo_trust_extra  # noqa: F401
from fiberlab.claims import lpo, lpo_theory, lpo_numerics, lpo_gpu, lpo_bandit  # noqa: F401
from fiberlab.claims import lpo_projection  # noqa: F401  (single_response, target_consistency, inexact_projection, ...)
from fiberlab.claims import harness  # noqa: F401  (training predictions; slowest checks)
