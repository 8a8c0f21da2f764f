"""Reading hyperparameters from verl's actor config, a dataclass of ours, a dict, or nothing.

Every objective reads its hyperparameters through :func:`hparam` (or one of its typed forms), which looks, in
order, at ``config.policy_loss.<name>`` (where verl keeps per-loss settings), then ``config.<name>`` (where verl
keeps ``clip_ratio_*``), then any alias (e.g. the BandPO authors' key names), then the documented default. It
accepts an omegaconf ``DictConfig``, verl's ``ActorConfig`` (a ``Mapping``), a plain dataclass, a ``dict``, any
object with attributes, or ``None``; a string, number, sequence or set is not a config and is refused.

Values are checked where they are read, and a bad one raises ``ValueError`` naming the key: a number must be a
real number (``True`` is not 1.0, ``"0.05"`` is not 0.05: a YAML or OmegaConf config already gives numbers),
finite unless the key documents ``inf``, and in the key's range; a flag must be ``True`` or ``False`` (``"false"``
is not a flag); a choice must be one of its names. :func:`global_batch_info` checks verl's global-batch counts
the same way.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

_MISSING = object()

#: Types that are never a config object (``config="abc"`` or ``config=5`` used to be ignored silently).
_NOT_A_CONFIG = (str, bytes, numbers.Number, list, tuple, set, frozenset)


def check_config(config: Any) -> None:
    """Refuse a ``config`` that is not a mapping, a config object or ``None``."""
    if isinstance(config, _NOT_A_CONFIG):
        raise ValueError(f"config must be a mapping, an OmegaConf DictConfig, a dataclass or None, "
                         f"got {type(config).__name__} {config!r}")


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


def _find(config: Any, name: str, aliases: tuple[str, ...]) -> tuple[str, Any]:
    """``(key, value)`` of the first key set (not ``None``) in ``config.policy_loss`` then ``config``; an alias
    is reported as ``"alias (name)"`` so that an error names both what was written and the documented key."""
    check_config(config)
    sub = _lookup(config, "policy_loss")
    for scope in ((sub, config) if sub is not _MISSING else (config,)):
        for key in (name, *aliases):
            v = _lookup(scope, key)
            if v is not _MISSING and v is not None:
                return (key if key == name else f"{key} ({name})"), v
    return name, _MISSING


def hparam(config: Any, name: str, default: Any, *aliases: str) -> Any:
    """The value of ``name`` (or an alias) in ``config.policy_loss`` or ``config``, else ``default``.

    A value of ``None`` in the config means "use the default", as verl's ``clip_ratio_low: null`` does.
    """
    v = _find(config, name, aliases)[1]
    return default if v is _MISSING else v


def as_real(key: str, v: Any, what: str = "a real number") -> float:
    """``v`` as a float if it is a real number (not a bool, not a string); else ``ValueError`` naming ``key``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ValueError(f"{key} must be {what}, got {type(v).__name__} {v!r}")
    return float(v)


def hparam_real(config: Any, name: str, default: float | None, *aliases: str, lo: float = -math.inf,
                hi: float = math.inf, lo_open: bool = False, hi_open: bool = False, allow_inf: bool = False,
                what: str = "") -> float | None:
    """A real-valued key in ``[lo, hi]`` (``lo_open``/``hi_open`` make an end open); ``default`` when unset.

    NaN is always refused, ±inf unless ``allow_inf``; the error names the key that was set and its range.
    """
    key, v = _find(config, name, aliases)
    if v is _MISSING:
        return default
    desc = what or "a real number"
    x = as_real(key, v, desc)
    in_range = ((x > lo) if lo_open else (x >= lo)) and ((x < hi) if hi_open else (x <= hi))
    if math.isnan(x) or (math.isinf(x) and not allow_inf) or not in_range:
        closed_hi = not hi_open and (allow_inf or hi < math.inf)
        rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{']' if closed_hi else ')'}"
        raise ValueError(f"{key} must be {desc} in {rng}, got {v!r}")
    return x


def hparam_bool(config: Any, name: str, default: bool, *aliases: str) -> bool:
    """A flag: ``True`` or ``False`` only (``"false"``, 0 and 1 are refused, naming the key)."""
    key, v = _find(config, name, aliases)
    if v is _MISSING:
        return default
    if not isinstance(v, bool):
        raise ValueError(f"{key} must be True or False, got {type(v).__name__} {v!r}")
    return v


def hparam_choice(config: Any, name: str, default: str, choices: tuple[str, ...], *aliases: str,
                  rename: Mapping[str, str] | None = None) -> str:
    """One of ``choices`` (after ``rename``, e.g. the BandPO authors' spellings); the error lists them."""
    key, v = _find(config, name, aliases)
    if v is _MISSING:
        return default
    if isinstance(v, str) and rename:
        v = rename.get(v, v)
    if not isinstance(v, str) or v not in choices:
        raise ValueError(f"{key} must be one of {choices}, got {v!r}")
    return v


def _count(key: str, v: Any, integer: bool) -> float | int | None:
    """A global-batch count: ``None`` (not given), or a positive finite number (an integer for ``dp_size``)."""
    if v is None:
        return None
    if hasattr(v, "dim") and hasattr(v, "item") and v.dim() == 0:     # a 0-d tensor (one host sync; verl passes ints)
        v = v.item()
    what = "a positive integer" if integer else "a positive finite number"
    x = as_real(f"global_batch_info[{key!r}]", v, what)
    if not (0.0 < x < math.inf) or (integer and x != int(x)):
        raise ValueError(f"global_batch_info[{key!r}] must be {what}, got {v!r}")
    return int(x) if integer else v


_GLOBAL_KEYS = {"dp_size": True, "batch_num_tokens": False, "global_batch_size": False, "loss_scale_factor": False}


def global_batch_info(config: Any) -> dict[str, Any]:
    """verl's ``config.global_batch_info`` (dp_size, batch_num_tokens, global_batch_size, loss_scale_factor),
    checked: each is ``None`` or positive and finite (``dp_size`` an integer). A zero, negative or NaN count
    would scale the loss and its gradient to ±inf, 0 or the wrong sign without any error."""
    check_config(config)
    info = _lookup(config, "global_batch_info")
    if info is _MISSING or info is None:
        return {}
    if not (isinstance(info, Mapping) or callable(getattr(info, "keys", None))):
        raise ValueError(f"global_batch_info must be a mapping, got {type(info).__name__}")
    return {k: (_count(k, info[k], _GLOBAL_KEYS[k]) if k in _GLOBAL_KEYS else info[k]) for k in info}
