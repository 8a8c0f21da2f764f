r"""Outcome-reward advantage estimators, found by name through a registry (verl ``register_adv_est`` style).

Every estimator is ``fn(rewards, group_ids, *, epsilon=1e-6, **kw) -> advantages``: ``rewards`` is ``[B]`` (one
outcome reward per sequence, floating point), ``group_ids`` is ``[B]`` (an integer tensor, or a list/array of
hashable labels such as verl's ``uid`` strings), and the result is ``[B]`` in the rewards' dtype and device;
callers broadcast it over tokens (``advantages[:, None] * response_mask``, as verl does). The advantages are
constants: they are computed without gradient.

The families are LPO §1.4's table, :math:`A_k = (R_k - \mu_G)/\tau`:

========================= ====================================================== =========================
name                      advantage                                              implicit :math:`\tau`
========================= ====================================================== =========================
``grpo``                  :math:`(R-\mu_G)/(\sigma_G+\epsilon)` (verl's GRPO)     :math:`\sigma_G`
``drgrpo``                :math:`R-\mu_G`                                        1
``rloo``                  :math:`R_k-\frac{1}{K-1}\sum_{j\ne k}R_j
                          = \frac{K}{K-1}(R_k-\mu_G)`                            :math:`(K-1)/K`
``maxrl``                 :math:`(R-\mu_G)/(\mu_G+\epsilon)`                     :math:`\mu_G`
``reinforce_pp_baseline`` :math:`A'=R-\mu_G`, then
                          :math:`(A'-\mu_B(A'))/(\sigma_B(A')+\epsilon)`         :math:`\sigma_{B'}`
========================= ====================================================== =========================

All group statistics are segment sums (``index_add_`` into a ``[B]`` buffer indexed by a dense group code), with
no Python loop over groups or sequences and no host synchronisation except the single one that validates the
input. Group codes come from a stable sort of the ids, so any integer ids (negative, sparse, unordered) work
without a ``torch.unique`` round-trip.

Numerics. The group mean is taken about a pivot (the group's first member in sorted order):
:math:`\mu_G = p_G + \mathrm{mean}(R - p_G)`. A constant group then centres to exact zeros, so zero-variance
groups give exact 0 advantages, never NaN, never the rounding residue :math:`\sim 10^{-11}` that
``torch.mean`` leaves for e.g. three rewards of 0.1 in float64 (verl 0.9.1's ``grpo`` does); shifting a group
by a large constant costs no cancellation. :math:`\sigma_G` is the two-pass Bessel-corrected std
(``torch.std`` semantics). On GPU ``index_add_`` accumulates with atomics, so the last bits can vary from run
to run unless ``torch.use_deterministic_algorithms(True)``.

Singleton groups (one sequence for a prompt). ``grpo`` follows verl 0.9.1's ``compute_grpo_outcome_advantage``
exactly: mean 0 and std 1, so :math:`A = R/(1+\epsilon)` (or :math:`A = R` with ``norm_by_std=False``);
verl's ``reinforce_plus_plus_baseline`` uses the same mean-0 convention. The other estimators use the true
group mean, so a singleton gets :math:`A' = 0` (``drgrpo``, ``maxrl``, ``reinforce_pp_baseline``); ``rloo``
needs two members and raises (verl's ``rloo`` instead passes :math:`A = R` through unchanged).

Bad input raises ``ValueError`` naming the argument: ``rewards`` not a 1-D floating tensor, empty, NaN/inf;
``group_ids`` of the wrong length or of a float dtype; a non-positive ``epsilon``; an unknown estimator name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from fiberlab.gpu.segments import sorted_runs

AdvantageFn = Callable[..., torch.Tensor]
ADVANTAGES: dict[str, AdvantageFn] = {}


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: register an advantage estimator under ``name`` (verl's ``register_adv_est`` pattern)."""

    def deco(fn: AdvantageFn) -> AdvantageFn:
        if name in ADVANTAGES:
            raise ValueError(f"advantage estimator {name!r} is registered twice")
        ADVANTAGES[name] = fn
        return fn

    return deco


def get_advantage(name: str) -> AdvantageFn:
    if name not in ADVANTAGES:
        raise ValueError(f"unknown advantage estimator {name!r}; registered: {sorted(ADVANTAGES)}")
    return ADVANTAGES[name]


# --------------------------------------------------------------------------------------------------------------
# Group codes and segment statistics
# --------------------------------------------------------------------------------------------------------------

def _group_tensor(group_ids: Any, batch: int, device: torch.device) -> torch.Tensor:
    """``group_ids`` as an int64 tensor on ``device`` (any integer values; labels are factorised on the host)."""
    if isinstance(group_ids, torch.Tensor):
        if group_ids.is_floating_point() or group_ids.is_complex():
            raise ValueError(f"group_ids must be integer (or hashable labels), got a {group_ids.dtype} tensor")
        ids = group_ids
    else:
        if isinstance(group_ids, (str, bytes)) or not isinstance(group_ids, (Sequence, np.ndarray)):
            raise ValueError(f"group_ids must be a tensor, array or sequence of labels, got {type(group_ids).__name__}")
        arr = np.asarray(group_ids) if len(group_ids) else np.zeros(0, dtype=np.int64)
        if arr.dtype.kind in "iub":
            ids = torch.as_tensor(arr.astype(np.int64, copy=False))
        elif arr.dtype.kind in "US":
            ids = torch.as_tensor(np.unique(arr, return_inverse=True)[1].reshape(-1).astype(np.int64))
        elif arr.dtype.kind == "O" and arr.ndim == 1:
            # Arbitrary hashables (verl's uid objects): factorise by hashing, as verl's dict grouping does.
            codes: dict[Any, int] = {}
            try:
                ids = torch.tensor([codes.setdefault(x, len(codes)) for x in arr], dtype=torch.int64)
            except TypeError as exc:
                raise ValueError(f"group_ids must hold hashable labels: {exc}") from None
        elif arr.dtype.kind in "fc":
            raise ValueError(f"group_ids must be integers or hashable labels, not floats (dtype {arr.dtype})")
        else:
            raise ValueError(f"group_ids must be 1-D, got shape {arr.shape}")
    if ids.dim() != 1:
        raise ValueError(f"group_ids must be 1-D, got shape {tuple(ids.shape)}")
    if ids.shape[0] != batch:
        raise ValueError(f"group_ids has length {ids.shape[0]}, expected {batch} (rewards' length)")
    return ids.to(device=device, dtype=torch.int64)


class _Groups:
    """Dense group codes ``seg`` in ``[0, B)`` and per-sequence group statistics, by segment sums.

    ``seg`` is the rank of the sequence's id among the distinct ids (stable sort, then a run counter), so
    segment buffers of length ``B`` always suffice and no data-dependent size reaches the host.
    """

    def __init__(self, rewards: torch.Tensor, ids: torch.Tensor) -> None:
        b = rewards.shape[0]
        perm, new_run, seg_sorted = sorted_runs(ids)
        pos = torch.arange(b, device=ids.device)
        # Pivot: each group's first member in sorted order (deterministic, unlike a racing scatter).
        run_start = torch.cummax(torch.where(new_run, pos, torch.zeros_like(pos)), 0).values
        self.seg = torch.empty_like(seg_sorted).scatter_(0, perm, seg_sorted)
        pivot = torch.empty_like(rewards).scatter_(0, perm, rewards[perm[run_start]])
        ones = torch.ones(b, dtype=torch.int64, device=ids.device)
        self.count = self.segsum(ones)[self.seg].to(rewards.dtype)        # K_G per sequence
        d = rewards - pivot                                               # exact 0 for a constant group
        mean_d = self.segsum(d)[self.seg] / self.count
        self.centred = d - mean_d                                         # R - μ_G
        self.mean = pivot + mean_d                                        # μ_G
        self.singleton = self.count == 1

    def segsum(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device).index_add_(0, self.seg, x)

    def std(self) -> torch.Tensor:
        """Bessel-corrected group std per sequence (``torch.std``); 0 for singletons (never used there)."""
        ss = self.segsum(self.centred * self.centred)[self.seg]
        return torch.sqrt(ss / torch.clamp(self.count - 1, min=1))


def _prepare(rewards: Any, group_ids: Any, epsilon: Any, *, need_pairs: bool = False,
             nonnegative: bool = False) -> _Groups:
    """Validate (one host synchronisation for every data-dependent check) and build the group statistics."""
    if not isinstance(rewards, torch.Tensor):
        raise ValueError(f"rewards must be a torch.Tensor, got {type(rewards).__name__}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [batch] (one outcome reward per sequence), got shape "
                         f"{tuple(rewards.shape)}")
    if not rewards.is_floating_point():
        raise ValueError(f"rewards must be floating point, got {rewards.dtype}")
    if rewards.shape[0] == 0:
        raise ValueError("rewards is empty: the batch has no sequence")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not (0 < epsilon < math.inf):
        raise ValueError(f"epsilon must be a positive finite number, got {epsilon!r}")
    ids = _group_tensor(group_ids, rewards.shape[0], rewards.device)
    rewards = rewards.detach()
    groups = _Groups(rewards, ids)

    probes = [rewards.sum(dtype=torch.float64)]
    if need_pairs:
        probes.append(groups.singleton.any().to(torch.float64))
    if nonnegative:
        probes.append((rewards < 0).any().to(torch.float64))
    vals = torch.stack(probes).tolist()                     # the one host synchronisation
    if not math.isfinite(vals[0]) and not bool(torch.isfinite(rewards).all()):
        raise ValueError("rewards contains NaN or inf")
    k = 1
    if need_pairs:
        if vals[k]:
            raise ValueError("group_ids has a group with a single sequence; RLOO's leave-one-out baseline needs "
                             "at least two per group")
        k += 1
    if nonnegative and vals[k]:
        raise ValueError("rewards must be ≥ 0 for maxrl (its temperature τ = μ_G must be positive)")
    return groups


# --------------------------------------------------------------------------------------------------------------
# Estimators
# --------------------------------------------------------------------------------------------------------------

@register_advantage("grpo")
@torch.no_grad()
def grpo_advantage(rewards: torch.Tensor, group_ids: Any, *, epsilon: float = 1e-6, norm_by_std: bool = True,
                   **kw: Any) -> torch.Tensor:
    r"""GRPO (LPO §1.4, :math:`\tau=\sigma_G`), with verl 0.9.1's conventions.

    .. math:: A_k = \frac{R_k - \mu_G}{\sigma_G + \epsilon},\qquad \sigma_G = \sqrt{\tfrac{1}{K-1}\sum_j (R_j-\mu_G)^2}

    ``norm_by_std=False`` (verl's ``norm_adv_by_std_in_grpo=False``, Dr.GRPO) gives :math:`R_k-\mu_G`.
    A singleton group uses verl's mean 0 / std 1: :math:`A = R/(1+\epsilon)`, or :math:`R` unnormalised.
    Extra keywords (verl passes ``config`` and friends) are ignored.
    """
    g = _prepare(rewards, group_ids, epsilon)
    r = rewards.detach()
    if norm_by_std:
        # (1 + ε) evaluated in the rewards' dtype; verl adds ε to a float32 tensor(1.0), which rounds
        # differently from float64 (see the module docstring of tests/test_gpu_advantages.py).
        return torch.where(g.singleton, r / (1.0 + epsilon), g.centred / (g.std() + epsilon))
    return torch.where(g.singleton, r, g.centred)


@register_advantage("drgrpo")
@torch.no_grad()
def drgrpo_advantage(rewards: torch.Tensor, group_ids: Any, *, epsilon: float = 1e-6, **kw: Any) -> torch.Tensor:
    r"""Dr.GRPO (LPO §1.4, :math:`\tau=1`): :math:`A_k = R_k - \mu_G`; a singleton gets 0."""
    return _prepare(rewards, group_ids, epsilon).centred


@register_advantage("rloo")
@torch.no_grad()
def rloo_advantage(rewards: torch.Tensor, group_ids: Any, *, epsilon: float = 1e-6, **kw: Any) -> torch.Tensor:
    r"""RLOO (LPO §1.4, :math:`\tau=(K-1)/K`): the mean of the *other* members as baseline,

    .. math:: A_k = R_k - \frac{1}{K-1}\sum_{j\ne k} R_j = \frac{K}{K-1}(R_k - \mu_G).

    Every group needs :math:`K\ge2`: a singleton raises ``ValueError`` naming ``group_ids``.
    """
    g = _prepare(rewards, group_ids, epsilon, need_pairs=True)
    return g.centred * (g.count / (g.count - 1))


@register_advantage("maxrl")
@torch.no_grad()
def maxrl_advantage(rewards: torch.Tensor, group_ids: Any, *, epsilon: float = 1e-6, **kw: Any) -> torch.Tensor:
    r"""MaxRL (LPO §1.4, :math:`\tau=\mu_G`, the group's success rate for binary rewards):

    .. math:: A_k = \frac{R_k - \mu_G}{\mu_G + \epsilon}.

    Rewards must be ≥ 0 (so that :math:`\tau>0`). An all-zero group gives 0; a singleton gives 0.
    Unlike the other estimators this one is not invariant to shifting a group's rewards, but it is invariant
    (up to ε) to scaling them.
    """
    g = _prepare(rewards, group_ids, epsilon, nonnegative=True)
    return g.centred / (g.mean + epsilon)


@register_advantage("reinforce_pp_baseline")
@torch.no_grad()
def reinforce_pp_baseline_advantage(rewards: torch.Tensor, group_ids: Any, *, epsilon: float = 1e-6,
                                    **kw: Any) -> torch.Tensor:
    r"""REINFORCE++ with baseline (LPO §1.4, :math:`\tau=\sigma_{B'}`): group-centre, then whiten over the batch,

    .. math:: A'_k = R_k - \mu_G,\qquad A_k = \frac{A'_k - \mu_B(A')}{\sigma_B(A') + \epsilon}

    with :math:`\sigma_B` Bessel-corrected over the B sequences (a batch of one gives 0). A singleton group has
    :math:`A' = 0`. verl 0.9.1's version differs in two ways, both left out here: its singleton keeps
    :math:`A' = R` (mean 0), and it whitens over *tokens* (``masked_whiten``: token-weighted mean and variance,
    :math:`1/\sqrt{\mathrm{var}+10^{-8}}`), so long responses weigh more.
    """
    g = _prepare(rewards, group_ids, epsilon)
    a = g.centred
    b = a.shape[0]
    dev = a - a.mean()
    std = torch.sqrt((dev * dev).sum() / max(b - 1, 1))
    return dev / (std + epsilon)
