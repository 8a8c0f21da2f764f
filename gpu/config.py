"""Reading hyperparameters from verl's actor config, a dataclass of ours, a dict, or nothing.

Every objective reads its hyperparameters through :func:`hparam`, which looks, in order, at
``config.policy_loss.<name>`` (where verl keeps per-loss settings), then ``config.<name>`` (where verl keeps
``clip_ratio_*``), then any alias (e.g. the BandPO authors' key names), then the documented default. It
accepts an omegaconf ``DictConfig``, verl's ``ActorConfig`` (a ``Mapping``), a plain dataclass, a ``dict``,
or ``None``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

_MISSING = object()


def _lookup(obj: Any, name: str) -> Any:
    if obj is None:
        return _MISSING
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return getattr(obj, name, _MISSING)          # verl's BaseConfig is a dataclass too
    getter = getattr(obj, "get", None)
    if isinstance(obj, Mapping) or callable(getter):
        try:
            return getter(name, _MISSING)             # dict, omegaconf DictConfig
        except (KeyError, AttributeError, TypeError):
            return _MISSING
    return getattr(obj, name, _MISSING)


def hparam(config: Any, name: str, default: Any, *aliases: str) -> Any:
    """The value of ``name`` (or an alias) in ``config.policy_loss`` or ``config``, else ``default``.

    A value of ``None`` in the config means "use the default", as verl's ``clip_ratio_low: null`` does.
    """
    sub = _lookup(config, "policy_loss")
    for scope in ((sub, config) if sub is not _MISSING else (config,)):
        for key in (name, *aliases):
            v = _lookup(scope, key)
            if v is not _MISSING and v is not None:
                return v
    return default


def global_batch_info(config: Any) -> dict[str, Any]:
    """verl's ``config.global_batch_info`` (dp_size, batch_num_tokens, global_batch_size, loss_scale_factor)."""
    info = _lookup(config, "global_batch_info")
    if info is _MISSING or info is None:
        return {}
    return {k: info[k] for k in info}
