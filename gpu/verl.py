r"""Put fiberlab's objectives into verl 0.9.1, the engine users scale on.

Two lines in a verl run (every Ray worker registers the losses at start-up through Ray's
``worker_process_setup_hook``, so the actor processes find them by name)::

    +ray_kwargs.ray_init.runtime_env.worker_process_setup_hook=fiberlab.gpu.verl.register
    actor_rollout_ref.actor.policy_loss.loss_mode=bandpo

Hyperparameters: verl's actor keys (``clip_ratio_low``, ``clip_ratio_high``, ``clip_ratio_c``,
``loss_agg_mode``) are read as verl reads them. verl's ``PolicyLossConfig`` is a closed dataclass, so the
objective-specific keys travel in :class:`FiberlabPolicyLossConfig`, a subclass with those fields::

    actor_rollout_ref.actor.policy_loss._target_=fiberlab.gpu.verl.FiberlabPolicyLossConfig
    +actor_rollout_ref.actor.policy_loss.band_delta=0.05

LPO in verl. verl's actor hands a policy loss only the token tensors, not the prompt ids or rewards, so the LPO
objectives take the group from ``lpo_group_size`` (= ``rollout.n``: verl lays a prompt's responses out on
consecutive rows) and the target from verl's advantages (``lpo_tau`` unset: :math:`w^*=\mathrm{softmax}(A)`,
which for every outcome estimator is the paired τ rule, since softmax ignores the group's baseline)::

    actor_rollout_ref.actor.policy_loss.loss_mode=lpo
    actor_rollout_ref.actor.policy_loss._target_=fiberlab.gpu.verl.FiberlabPolicyLossConfig
    +actor_rollout_ref.actor.policy_loss.lpo_divergence=fwd
    +actor_rollout_ref.actor.policy_loss.lpo_group_size=8          # = actor_rollout_ref.rollout.n
    actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum
    trainer.balance_batch=False                                    # keep each group's rows together
    actor_rollout_ref.actor.shuffle=False

with mini- and micro-batch sizes multiples of ``rollout.n`` so that no group is split (for split groups, see
:func:`fiberlab.gpu.lpo.listwise_state` and the ``process_group`` extra). ``actor.use_dynamic_bsz=True`` and
``actor.shuffle=True`` regroup rows (verl's ``rearrange_micro_batches`` balances token load, not groups): the
objective reads both from the actor config and refuses contiguous groups under either. ``trainer.balance_batch``
reorders rows too but is not in the actor's config: keep it off.

``fiberpo_domain`` and ``apc`` cannot run as a verl ``loss_mode`` (:data:`NEEDS_IDS`):
:class:`FiberlabPolicyLossConfig` refuses them when verl builds the config.

This module imports verl; the rest of :mod:`fiberlab.gpu` does not need it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from verl.trainer.ppo import core_algos
from verl.workers.config.actor import PolicyLossConfig

from fiberlab.gpu.losses import POLICY_LOSSES

#: Alias under which every objective is also registered, whatever its plain name.
PREFIX = "fiberlab_"

#: Objectives verl 0.9.1 cannot run: its ``ppo_loss`` (``verl.workers.utils.losses``) calls a policy loss with
#: a fixed set of keywords (the token tensors, ``loss_agg_mode``, ``config``, ``rollout_is_weights``), so ids
#: that live in the batch (``uid``, ``data_source``) or nowhere (per-token states) never reach it.
NEEDS_IDS = {
    "fiberpo_domain": "FiberPO-Domain needs group_ids and domain_ids per trajectory, and verl's ppo_loss passes a "
                      "policy loss no ids (the batch's uid and data_source stay behind); it cannot run as a verl "
                      "loss_mode. Use fiberpo (the trajectory level) or call fiberpo_domain_loss with the ids.",
    "apc": "APC-Obj needs state_ids per token, and verl's ppo_loss passes a policy loss no ids; it cannot run as a "
           "verl loss_mode (with prefix states it is the per-token clip 1 + clip(r - 1, ±δ) anyway).",
}


@dataclasses.dataclass
class FiberlabPolicyLossConfig(PolicyLossConfig):
    """verl's ``PolicyLossConfig`` plus fiberlab's objective settings (defaults as in each objective)."""

    band_divergence: str = "kl"
    band_delta: float = 0.05
    band_upper_bound_max: Optional[float] = None
    band_relax: bool = False
    band_method: str = "table"
    lpo_divergence: str = "fwd"
    lpo_tau: Optional[str] = None
    lpo_tau_eps: float = 1e-6
    lpo_tau_std_unbiased: bool = True
    lpo_token_clip: str = "none"
    lpo_group_size: Optional[int] = None
    # FiberPO family (fiberlab.gpu.fiberpo): grpo_rgf / gspo min, APC-Obj radius, FiberPO budgets
    rgf_min: bool = True
    apc_delta: float = 0.18
    fiberpo_eps: float = 0.03
    fiberpo_c_pos: float = 0.12
    fiberpo_c_neg: float = 0.06
    fiberpo_c_pos_levels: Optional[list[float]] = None
    fiberpo_c_neg_levels: Optional[list[float]] = None

    def __post_init__(self) -> None:
        # verl builds this config when the trainer starts: refuse there, not at the first micro-batch, an
        # objective that verl gives no way to receive the ids it needs.
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        name = self.loss_mode.removeprefix(PREFIX)
        if name in NEEDS_IDS:
            raise ValueError(f"loss_mode={self.loss_mode!r}: {NEEDS_IDS[name]}")


def register(names: list[str] | None = None, *, overwrite: bool = False) -> list[str]:
    """Register fiberlab's policy losses into verl's ``POLICY_LOSS_REGISTRY``.

    Each objective goes in under its fiberlab name and under ``fiberlab_<name>``. A plain name already used by
    a *different* verl loss (verl has its own ``gspo``) is left to verl unless ``overwrite=True``; the prefixed
    alias is always set. Returns the registry keys written. Safe to call more than once (Ray calls it with no
    argument in every worker).
    """
    chosen = list(POLICY_LOSSES) if names is None else list(names)
    written = []
    for name in chosen:
        if name not in POLICY_LOSSES:
            raise ValueError(f"names: unknown fiberlab objective {name!r}; known: {sorted(POLICY_LOSSES)}")
        fn = POLICY_LOSSES[name]
        current = core_algos.POLICY_LOSS_REGISTRY.get(name)
        if current is None or current is fn or overwrite:
            core_algos.POLICY_LOSS_REGISTRY[name] = fn
            written.append(name)
        core_algos.POLICY_LOSS_REGISTRY[PREFIX + name] = fn
        written.append(PREFIX + name)
    return written


def actor_config(policy_loss: dict[str, Any] | None = None, **actor: Any) -> Any:
    """A real verl actor config (``FSDPActorConfig``) built the way verl builds it from its trainer YAML.

    Loads verl's generated ``ppo_trainer`` YAML, applies ``actor`` overrides to ``actor_rollout_ref.actor`` and
    ``policy_loss`` overrides to its ``policy_loss`` (with :class:`FiberlabPolicyLossConfig` as ``_target_``
    when a fiberlab key is given), and instantiates it with ``verl.utils.config.omega_conf_to_dataclass``.
    Used by the tests and by anyone who wants verl's exact config semantics outside a verl run.
    """
    import os

    import verl
    from omegaconf import OmegaConf
    from verl.utils.config import omega_conf_to_dataclass

    path = os.path.join(os.path.dirname(verl.__file__), "trainer", "config", "_generated_ppo_trainer.yaml")
    cfg = OmegaConf.load(path)
    OmegaConf.set_struct(cfg, False)
    cfg.actor_rollout_ref.rollout.n = actor.pop("rollout_n", 4)
    if cfg.actor_rollout_ref.actor.get("ppo_micro_batch_size_per_gpu") is None:
        cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu = 2
    section = OmegaConf.to_container(cfg.actor_rollout_ref.actor, resolve=True)
    section.update(actor)
    pl = dict(section["policy_loss"])
    extra = dict(policy_loss or {})
    own = {f.name for f in dataclasses.fields(FiberlabPolicyLossConfig)} - {f.name for f in dataclasses.fields(PolicyLossConfig)}
    if own & set(extra):
        pl["_target_"] = f"{__name__}.FiberlabPolicyLossConfig"
    pl.update(extra)
    section["policy_loss"] = pl
    return omega_conf_to_dataclass(OmegaConf.create(section))
