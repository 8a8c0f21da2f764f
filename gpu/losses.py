r"""Every policy loss, by name: the index of fiberlab's objectives (verl ``core_algos`` style).

Importing it registers every objective — PPO and BandPO (:mod:`fiberlab.gpu.ppo`), LPO (:mod:`fiberlab.gpu.lpo`),
the FiberPO family (:mod:`fiberlab.gpu.fiberpo`) — on the public core :mod:`fiberlab.gpu.objective`, whose names
it re-exports. Every loss is ``loss_fn(old_log_prob, log_prob, advantages, response_mask,
loss_agg_mode="token-mean", config=None, rollout_is_weights=None, **extra) -> (loss, metrics)`` on
``[batch, response_length]`` tensors, so :func:`fiberlab.gpu.verl.register` can put it into verl 0.9.1's
``POLICY_LOSS_REGISTRY`` unchanged. ``metrics`` is a dict of floats with verl's names (``actor/pg_clipfrac``,
``actor/ppo_kl``, ``actor/pg_clipfrac_lower``) plus the objective's own under ``fiberlab/``.

Bad input raises ``ValueError`` naming the argument (shape mismatch, non-binary or empty mask, NaN/inf in
log-probabilities, advantages or weights, an empty batch, a non-positive radius); all input checks and all
metrics cost one host synchronisation each, and nothing returns NaN silently.
"""

from __future__ import annotations

# registration order: PPO and BandPO, then LPO, then the FiberPO family
from fiberlab.gpu.ppo import BAND_DIVERGENCE_ALIASES, bandpo_loss, ppo_loss, read_band_config  # noqa: E402,F401
import fiberlab.gpu.lpo  # noqa: E402,F401,I001  (lpo, lpo_pointwise)
import fiberlab.gpu.fiberpo  # noqa: E402,F401,I001  (fiberpo, fiberpo_domain, grpo_rgf/grpo, gspo, apc)
from fiberlab.gpu.objective import (AGG_MODES, BATCH_EXTRAS, LOG_PROB_ROUNDOFF_ULPS, LOG_RATIO_CLAMP,  # noqa: E402,F401
                                    POLICY_LOSS_EXTRAS, POLICY_LOSSES, PolicyLossFn, agg_loss, batch_extras,
                                    check_extras, checked_inputs, clipped_surrogate, finish, get_policy_loss,
                                    log_prob_roundoff, register_policy_loss, upcast, validate_batch, working_dtype)

__all__ = ["AGG_MODES", "BAND_DIVERGENCE_ALIASES", "BATCH_EXTRAS", "LOG_PROB_ROUNDOFF_ULPS", "LOG_RATIO_CLAMP",
           "POLICY_LOSS_EXTRAS", "POLICY_LOSSES", "PolicyLossFn", "agg_loss", "bandpo_loss", "batch_extras",
           "check_extras", "checked_inputs", "clipped_surrogate", "finish", "get_policy_loss", "log_prob_roundoff",
           "ppo_loss", "read_band_config", "register_policy_loss", "upcast", "validate_batch", "working_dtype"]
