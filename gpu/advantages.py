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
no Python loop over groups or sequences and one host synchronisation per call, after the result is computed: it
reads the input checks and the output's range check together. Group codes come from a stable sort of the ids,
so any integer ids (negative, sparse, unordered) work without a ``torch.unique`` round-trip.

Numerics. The group mean is taken about a pivot (the group's first member in sorted order):
:math:`\mu_G = p_G + \mathrm{mean}(R - p_G)`. A constant group then centres to exact zeros, so zero-variance
groups give exact 0 advantages, never NaN, never the rounding residue :math:`\sim 10^{-11}` that
``torch.mean`` leaves for e.g. three rewards of 0.1 in float64 (verl 0.9.1's ``grpo`` does); shifting a group
by a large constant costs no cancellation. :math:`\sigma_G` is the two-pass Bessel-corrected std
(``torch.std`` semantics). On GPU ``index_add_`` accumulates with atomics, so the last bits can vary from run
to run unless ``torch.use_deterministic_algorithms(True)``. ``maxrl`` takes its :math:`\mu_G` (the divisor)
as a plain segment mean instead: its rewards are ≥ 0, so that sum cannot cancel, whereas the pivot form loses
:math:`\mu_G` when :math:`\mu_G \ll p_G` (one success among many zeros); its numerator stays pivot-centred.

Range. Every estimator returns finite values for every finite input representable in float16, bfloat16,
float32 or float64, or raises ``ValueError`` naming ``rewards`` where the result itself is beyond the rewards'
dtype (IEEE: it would round to inf); never NaN, inf, or a silent zero from an overflowed variance.

* The arithmetic runs in float32 for half inputs (float16, bfloat16), in the input's dtype otherwise, and the
  result is rounded once into the rewards' dtype. (bfloat16 has float32's range, so widening alone is not
  enough: the scaling below is what keeps it finite.)
* Each group is computed in its own unit :math:`s_G = 2^{k_G}`, the power of two with
  :math:`\max_G|R|/s_G \in [1, 2)` (smaller where the floors below apply): :math:`R/s_G`, its mean about the
  pivot, :math:`(R-\mu_G)/s_G` and the variance of those (at most :math:`64K`) never overflow, and the
  variance of the smallest normals no longer underflows. Dividing by a power of two is exact, so wherever the
  unscaled arithmetic neither overflows nor underflows the scaled one gives **the very same bits** (verl
  parity and the exact zeros of constant groups are unchanged); :math:`\sigma_G = s_G\,\sigma(R/s_G)`.
* ``reinforce_pp_baseline`` whitens :math:`A'/S` with the batch unit :math:`S = 2^E`,
  :math:`\max|A'|/S \in [1/2, 1)`, formed from integer exponents (:math:`s_G/S` is built from its bits), so
  that groups of very different magnitude neither overflow nor flush each other.
* ε in scaled units is :math:`\epsilon/s` (resp. :math:`\epsilon/S`): :math:`(R-\mu)/(\sigma+\epsilon)
  = \frac{(R-\mu)/s}{\sigma/s + \epsilon/s}` exactly, so the :math:`\sigma+\epsilon` semantics are kept at every
  scale. Two guards, both below round-off. Where ε is used (``grpo``, ``maxrl``, ``reinforce_pp_baseline``)
  the unit is at least :math:`\approx\epsilon\cdot2^{-60}` (and always at least the smallest normal), so
  :math:`\epsilon/s \le 2^{61}` stays finite for rewards far below ε, where :math:`A \approx (R-\mu)/\epsilon`
  and :math:`\sigma/s` is negligible beside it. And :math:`\epsilon/s` is floored at the smallest normal, so
  that for rewards so large that :math:`\epsilon/s` underflows a constant group still gives
  :math:`0/(0+\epsilon/s) = 0` (a non-constant group has :math:`\sigma/s` of at least about :math:`u/K`
  there, so the floor is invisible). ε itself must be representable in the arithmetic dtype (``ValueError``
  naming ``epsilon`` above 3.4e38 for float32 and half rewards).
* What remains unbounded is the size of the answer: ``drgrpo``, ``rloo`` and ``grpo(norm_by_std=False)``
  return :math:`R-\mu_G` in reward units, which exceeds the dtype for e.g. float16 rewards
  ``[65504, -65504, -65504, -65504]`` (98 256); ``maxrl`` is bounded by :math:`K-1` (rewards ≥ 0), so it
  overflows float16 only for groups of more than 65 520; ``grpo`` and ``reinforce_pp_baseline`` are bounded by
  :math:`(K-1)/\sqrt K` and :math:`(B-1)/\sqrt B`. These raise ``ValueError`` naming ``rewards``.
* The error is that of the unscaled algorithm: a few :math:`K u` of the group's largest :math:`|A|` (``u`` the
  arithmetic dtype's unit round-off; the segment sums add K terms one by one), then the final rounding.

Singleton groups (one sequence for a prompt). ``grpo`` follows verl 0.9.1's ``compute_grpo_outcome_advantage``
exactly: mean 0 and std 1, so :math:`A = R/(1+\epsilon)` (or :math:`A = R` with ``norm_by_std=False``);
verl's ``reinforce_plus_plus_baseline`` uses the same mean-0 convention. The other estimators use the true
group mean, so a singleton gets :math:`A' = 0` (``drgrpo``, ``maxrl``, ``reinforce_pp_baseline``); ``rloo``
needs two members and raises (verl's ``rloo`` instead passes :math:`A = R` through unchanged).

Bad input raises ``ValueError`` naming the argument: ``rewards`` not a 1-D floating tensor, empty, NaN/inf, or
with an advantage beyond its dtype (above); ``group_ids`` of the wrong length or of a float dtype; a
non-positive ``epsilon`` or one beyond the arithmetic dtype; an unknown estimator name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from fiberlab.gpu.segments import raise_flagged, sorted_runs

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

def group_tensor(group_ids: Any, batch: int, device: torch.device, *, name: str = "group_ids",
                 length_of: str = "rewards' length") -> torch.Tensor:
    """``group_ids`` as an int64 tensor on ``device`` (any integer values; labels are factorised on the host).
    Errors name the argument ``name``; ``length_of`` says what ``batch`` is the length of (``""``: nothing)."""
    if isinstance(group_ids, torch.Tensor):
        if group_ids.is_floating_point() or group_ids.is_complex():
            raise ValueError(f"{name} must be integer (or hashable labels), got a {group_ids.dtype} tensor")
        ids = group_ids
    else:
        if isinstance(group_ids, (str, bytes)) or not isinstance(group_ids, (Sequence, np.ndarray)):
            raise ValueError(f"{name} must be a tensor, array or sequence of labels, got {type(group_ids).__name__}")
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
                raise ValueError(f"{name} must hold hashable labels: {exc}") from None
        elif arr.dtype.kind in "fc":
            raise ValueError(f"{name} must be integers or hashable labels, not floats (dtype {arr.dtype})")
        else:
            raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if ids.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(ids.shape)}")
    if ids.shape[0] != batch:
        raise ValueError(f"{name} has length {ids.shape[0]}, expected {batch}" + (f" ({length_of})" if length_of else ""))
    return ids.to(device=device, dtype=torch.int64)


def _wide_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the group arithmetic runs in: float32 for half inputs (float16, bfloat16), else the input's."""
    return torch.float32 if torch.finfo(dtype).bits < 32 else dtype


#: IEEE layout of the arithmetic dtypes: (integer type of the same width, mantissa bits, exponent bias)
_LAYOUT = {torch.float32: (torch.int32, 23, 127), torch.float64: (torch.int64, 52, 1023)}


def _pow2(e: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """:math:`2^e` exactly for an integer tensor ``e`` (built from the bits, no ``pow``): 0 below the smallest
    normal exponent, and exponents above the largest finite one are clamped (callers keep them in range)."""
    itype, mant, bias = _LAYOUT[dtype]
    bits = (torch.clamp(e, 1 - bias, bias).to(itype) + bias) << mant
    return torch.where(e < 1 - bias, torch.zeros((), dtype=dtype, device=e.device), bits.view(dtype))


def _unit_floor(dtype: torch.dtype, epsilon: float | None) -> int:
    r"""The least scale exponent :math:`f`: :math:`2^f \in (\ell/2, \ell]` for
    :math:`\ell = \max(\epsilon\cdot2^{-60}, \text{smallest normal})`, so a unit :math:`s \ge 2^f` keeps
    :math:`\epsilon/s \le 2^{61}` finite (module docstring, "Range"; ε is at most the dtype's max). Without ε
    (``None``: an estimator that does not divide by it) the floor is the smallest normal's exponent."""
    eps_part = 0.0 if epsilon is None else math.ldexp(epsilon, -60)
    return math.frexp(max(eps_part, torch.finfo(dtype).tiny))[1] - 1


class _Groups:
    r"""Dense group codes ``seg`` in ``[0, B)`` and per-sequence group statistics, by segment sums.

    ``seg`` is the rank of the sequence's id among the distinct ids (stable sort, then a run counter), so
    segment buffers of length ``B`` always suffice and no data-dependent size reaches the host.

    Every statistic is in the *scaled units* of its group (module docstring, "Range"): ``scale`` is the group's
    power of two :math:`s_G = 2^{k_G}` (``scale_exp`` is :math:`k_G`), and ``scaled``, ``centred``, ``std()``
    are :math:`R/s_G`, :math:`(R-\mu_G)/s_G`, :math:`\sigma_G/s_G`, all in the arithmetic dtype ``dtype``.
    """

    def __init__(self, rewards: torch.Tensor, ids: torch.Tensor, epsilon: float, uses_epsilon: bool) -> None:
        b = rewards.shape[0]                                 # responses in the batch
        self.dtype = _wide_dtype(rewards.dtype)
        self.tiny = torch.finfo(self.dtype).tiny
        self.epsilon = epsilon
        self.floor_exp = _unit_floor(self.dtype, epsilon if uses_epsilon else None)
        r = rewards.to(self.dtype)
        perm, new_run, seg_sorted = sorted_runs(ids)
        pos = torch.arange(b, device=ids.device)
        # Pivot: each group's first member in sorted order (deterministic, unlike a racing scatter).
        run_start = torch.cummax(torch.where(new_run, pos, torch.zeros_like(pos)), 0).values
        self.seg = torch.empty_like(seg_sorted).scatter_(0, perm, seg_sorted)
        ones = torch.ones(b, dtype=torch.int64, device=ids.device)
        self.count = self.segsum(ones)[self.seg].to(self.dtype)           # K_G per sequence
        # k_G = e - 1 for max|R| = m·2^e (m in [1/2, 1)), at least floor_exp: |R/s_G| < 2, and dividing by a
        # power of two is exact, so ordinary inputs give the unscaled arithmetic's very bits.
        amax = torch.zeros(b, dtype=self.dtype, device=r.device).scatter_reduce_(0, self.seg, r.abs(), "amax")
        k = torch.clamp(torch.frexp(amax).exponent - 1, min=self.floor_exp)   # frexp(0) has exponent 0
        self.scale_exp = k[self.seg]
        self.scale = _pow2(self.scale_exp, self.dtype)
        x = r / self.scale
        pivot = torch.empty_like(x).scatter_(0, perm, x[perm[run_start]])
        d = x - pivot                                                     # exact 0 for a constant group
        mean_d = self.segsum(d)[self.seg] / self.count
        self.scaled = x                                                   # R/s_G
        self.centred = d - mean_d                                         # (R - μ_G)/s_G
        self.singleton = self.count == 1
        self.probes: list[tuple[torch.Tensor, str]] = []

    def segsum(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device).index_add_(0, self.seg, x)

    def std(self) -> torch.Tensor:
        """Bessel-corrected group std per sequence (``torch.std``), scaled; 0 for singletons (never used)."""
        ss = self.segsum(self.centred * self.centred)[self.seg]
        return torch.sqrt(ss / torch.clamp(self.count - 1, min=1))

    def eps_over(self, scale: torch.Tensor) -> torch.Tensor:
        """ε in the units of ``scale``: ε/s (at most about 2^61), floored at the smallest normal so that a
        constant group's 0/(0 + ε/s) is 0, never 0/0."""
        return torch.clamp(torch.full_like(scale, self.epsilon) / scale, min=self.tiny)

    def batch_unit(self) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The batch unit :math:`S = 2^E` (a 0-d tensor) with :math:`\max_i |R_i-\mu_G|/S \in [1/2, 1)`
        (:math:`E` clamped to ``[floor_exp, emax]``), and the per-sequence :math:`s_G/S`, exact powers of two
        built from exponents, so that neither a huge :math:`s_G` nor a tiny one under- or overflows."""
        c = self.centred
        e_c = torch.frexp(c).exponent + self.scale_exp                  # |R - μ_G| < 2^e_c
        e_c = torch.where(c != 0, e_c, torch.full_like(e_c, self.floor_exp))
        e = torch.clamp(e_c.max(), min=self.floor_exp, max=_LAYOUT[self.dtype][2])
        return _pow2(e, self.dtype), _pow2(self.scale_exp - e, self.dtype)


def _prepare(rewards: Any, group_ids: Any, epsilon: Any, *, need_pairs: bool = False,
             nonnegative: bool = False, uses_epsilon: bool = True) -> _Groups:
    """Validate the arguments and build the group statistics. The data-dependent checks are queued as probes
    on the result (no host synchronisation yet); :func:`_finish` evaluates them with the output's range check."""
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
    if epsilon > torch.finfo(_wide_dtype(rewards.dtype)).max:
        raise ValueError(f"epsilon = {epsilon!r} is beyond {_wide_dtype(rewards.dtype)}, the dtype the advantages "
                         f"of {rewards.dtype} rewards are computed in")
    ids = group_tensor(group_ids, rewards.shape[0], rewards.device)
    rewards = rewards.detach()
    groups = _Groups(rewards, ids, float(epsilon), uses_epsilon)
    groups.probes.append((~torch.isfinite(rewards).all(), "rewards contains NaN or inf"))
    if need_pairs:
        groups.probes.append((groups.singleton.any(), "group_ids has a group with a single sequence; RLOO's "
                              "leave-one-out baseline needs at least two per group"))
    if nonnegative:
        groups.probes.append(((rewards < 0).any(), "rewards must be ≥ 0 for maxrl (its temperature τ = μ_G must "
                              "be positive)"))
    return groups


def _finish(g: _Groups, out: torch.Tensor, name: str) -> torch.Tensor:
    """Run the queued checks and the output's range check in the one host synchronisation; return ``out``.

    The input checks come first (a NaN reward makes the output NaN too, and must be reported as such).
    """
    too_large = (f"rewards are too large for {out.dtype}: the {name} advantage of some sequence is beyond its largest "
                 f"finite value ({torch.finfo(out.dtype).max:.6g}); rescale the rewards or pass them in a wider dtype")
    raise_flagged(g.probes + [(~torch.isfinite(out).all(), too_large)])
    return out


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
    g = _prepare(rewards, group_ids, epsilon, uses_epsilon=norm_by_std)
    r = rewards.detach()
    if norm_by_std:
        # (1 + ε) evaluated in the rewards' dtype; verl adds ε to a float32 tensor(1.0), which rounds
        # differently from float64 (see the module docstring of tests/test_gpu_advantages.py).
        a = (g.centred / (g.std() + g.eps_over(g.scale))).to(r.dtype)
        return _finish(g, torch.where(g.singleton, r / (1.0 + epsilon), a), "grpo")
    return _finish(g, torch.where(g.singleton, r, (g.centred * g.scale).to(r.dtype)), "grpo")


@register_advantage("drgrpo")
@torch.no_grad()
def drgrpo_advantage(rewards: torch.Tensor, group_ids: Any, *, epsilon: float = 1e-6, **kw: Any) -> torch.Tensor:
    r"""Dr.GRPO (LPO §1.4, :math:`\tau=1`): :math:`A_k = R_k - \mu_G`; a singleton gets 0."""
    g = _prepare(rewards, group_ids, epsilon, uses_epsilon=False)
    return _finish(g, (g.centred * g.scale).to(rewards.dtype), "drgrpo")


@register_advantage("rloo")
@torch.no_grad()
def rloo_advantage(rewards: torch.Tensor, group_ids: Any, *, epsilon: float = 1e-6, **kw: Any) -> torch.Tensor:
    r"""RLOO (LPO §1.4, :math:`\tau=(K-1)/K`): the mean of the *other* members as baseline,

    .. math:: A_k = R_k - \frac{1}{K-1}\sum_{j\ne k} R_j = \frac{K}{K-1}(R_k - \mu_G).

    Every group needs :math:`K\ge2`: a singleton raises ``ValueError`` naming ``group_ids``.
    """
    g = _prepare(rewards, group_ids, epsilon, need_pairs=True, uses_epsilon=False)
    return _finish(g, (g.centred * (g.count / (g.count - 1)) * g.scale).to(rewards.dtype), "rloo")


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
    # μ_G/s_G as a plain segment mean: the terms are ≥ 0, so its relative error is at most K·u, whereas the
    # pivot form p + mean(R - p) cancels when μ_G ≪ p (one success among many zeros). The numerator keeps
    # the pivot-centred R - μ_G, so a constant group still gives exact zeros.
    mean = g.segsum(g.scaled)[g.seg] / g.count
    return _finish(g, (g.centred / (mean + g.eps_over(g.scale))).to(rewards.dtype), "maxrl")


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
    unit, ratio = g.batch_unit()
    a = g.centred * ratio                                 # A'/S: the ratio s_G/S is an exact power of two
    b = a.shape[0]                                        # responses in the batch
    dev = a - a.mean()
    std = torch.sqrt((dev * dev).sum() / max(b - 1, 1))
    return _finish(g, (dev / (std + g.eps_over(unit))).to(rewards.dtype), "reinforce_pp_baseline")
