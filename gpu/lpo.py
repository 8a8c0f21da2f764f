r"""LPO: listwise policy optimisation (arXiv 2605.06139 v2), as verl policy losses ``lpo`` and ``lpo_pointwise``.

One group = the K responses :math:`y_1..y_K` to one prompt. With token log-ratios
:math:`\delta_{k,i} = \log\pi_\theta(y_{k,i}|\cdot) - \log\pi_b(y_{k,i}|\cdot)`:

* listwise logits (Eq. 4), summed over tokens (spec A1): :math:`s_k = \sum_i \delta_{k,i}`, :math:`P_\theta=\mathrm{softmax}(s)`;
* target (Thm. 1, Eq. 8): :math:`w^* = \mathrm{softmax}(\phi)`, :math:`\phi_k = (R_k-\mu_G)/\tau + s_{t,k}` with the
  anchor's :math:`s_{t,k} = \log\pi_t(y_k)/\pi_b(y_k)` (0 without an anchor, the paper's setting, A5);
* projection coefficients :math:`c_k = \partial D/\partial s_k` (App. C.6):
  :math:`c_k = g_k - P_k\sum_j g_j` with :math:`g_k = P_k\,\partial D/\partial P_k` (any additive constant in
  :math:`\partial D/\partial P` cancels). ``fwd``: :math:`D_{KL}(w^*\|P)`, :math:`c = P - w^*` (Eq. 10);
  ``rev``: :math:`D_{KL}(P\|w^*)`, :math:`c = P(d-\bar d)`, :math:`d = s - \phi` (Eq. 11);
  ``js``, ``hellinger``, ``chi2`` (Pearson :math:`\chi^2(P\|w^*)`) or any callable ``g(log_P, log_w)``.

The coefficients are constants (no gradient); the surrogate whose gradient is Algorithm 1's step is

.. math:: L = \frac{1}{N_{seq}}\sum_{k} \sum_i (-\psi_k)\,\delta_{k,i},\qquad \psi_k = -K_G\,c_k

(``loss_agg_mode="seq-mean-token-sum"``). :math:`\psi` is the *listwise advantage*: on-policy LPO_rev has
:math:`\psi = (R-\mu_G)/\tau`, exactly the paired PG advantage (Prop. 1), and LPO_fwd has
:math:`\psi = K w^* - 1`. The factor :math:`K_G` makes the mean over sequences a mean over prompts of the sum
over the group, so with groups of equal size ``seq-mean-token-sum`` gives Algorithm 1's
:math:`\frac1B\sum_x\sum_k c_k\nabla\log\pi_\theta(y_k|x)` exactly. ``token-mean`` and
``seq-mean-token-sum-norm`` divide by a batch-wide constant instead (Dr.GRPO style) and keep
:math:`\sum_k c_k = 0` in parameter space; ``seq-mean-token-mean`` weights each response by :math:`1/|y_k|` and
breaks it (spec A1; claim ``lpo.length_normalisation``).

Token clipping (App. D.3, spec A2), ``lpo_token_clip``: ``"none"`` (default: the exact Algorithm-1 gradient),
``"clamp"`` (the paper's literal reading: :math:`\delta` clamped to :math:`[\log(1-\epsilon_-),\log(1+\epsilon_+)]`
then weighted, which blocks the gradient outside the band in *both* directions), ``"ppo"`` (PPO's min form with
:math:`\psi` as the advantage, which blocks only in the direction the advantage favours; its gradient at
:math:`r=1` is Algorithm 1's). :math:`P_\theta` and :math:`c` always use the unclipped :math:`s` (A2's other
question; the clip cannot bound :math:`s` anyway).

Whole groups (spec A3). :math:`P_\theta` needs every member's :math:`s_k` under the current parameters. The group
aggregates (size, reward mean and spread, the two log-partitions, :math:`\sum_j g_j`) are per-segment sums and
maxima (:mod:`fiberlab.gpu.segments`): with ``process_group`` set they are all-reduced across data-parallel ranks,
so a group split across ranks gives the single-process loss and gradient. Micro-batches of one rank: compute
:func:`listwise_state` once on the mini-batch's sequence log-ratios (no gradient; the parameters do not move
between micro-batches) and pass it as ``lpo_state`` to each micro-batch's loss.

Temperature rules (``lpo_tau``, LPO §1.4; the paper copies τ from the paired baseline, never tunes it):
``"grpo"`` :math:`\sigma_G+\epsilon` (Bessel-corrected by default, as verl's GRPO, so that
:math:`(R-\mu_G)/\tau` *is* verl's GRPO advantage; ``lpo_tau_std_unbiased=False`` gives the population σ, A4),
``"drgrpo"`` 1, ``"rloo"`` :math:`(K-1)/K`, ``"maxrl"`` :math:`\mu_G+\epsilon`, a positive number, or
``"advantages"``: :math:`\phi_k` = the sequence's advantage as computed upstream (verl's ``advantages`` tensor,
constant over a response). Since softmax ignores a per-group shift, ``"advantages"`` with verl's GRPO advantages
is the ``"grpo"`` target, and so on for each estimator: the pairing of the paper needs no rewards in the loss.

Group membership: ``group_ids`` (``[B]`` integer tensor or labels such as verl's ``uid``); without it,
``lpo_group_size`` = n makes rows ``[jn, (j+1)n)`` a group (verl lays out ``rollout.n`` responses contiguously;
keep ``trainer.balance_batch=False``, ``shuffle=False`` and mini/micro-batch sizes multiples of n so that verl
never splits a group). Across ranks or with a shared ``lpo_state`` the ids must be non-negative integers that
mean the same group everywhere.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from fiberlab.gpu.advantages import group_tensor
from fiberlab.gpu.config import hparam, hparam_bool, hparam_choice, hparam_real
from fiberlab.gpu.objective import checked_inputs, clipped_surrogate, finish, read_clip_eps, register_policy_loss
from fiberlab.gpu.segments import (Probes, dense_segments, raise_flagged, reducer_for, segment_codes,
                                   segment_logsumexp, segment_max, segment_sum)

# --------------------------------------------------------------------------------------------------------------
# Divergences: g_k = P_k ∂D/∂P_k (up to P_k × constant), from log P and log w*, in forms that cannot overflow
# where the coefficient itself is finite.
# --------------------------------------------------------------------------------------------------------------

GFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOG2 = math.log(2.0)


def _g_fwd(log_p: torch.Tensor, log_w: torch.Tensor) -> torch.Tensor:
    # D = KL(w*‖P) = Σ w log(w/P): ∂D/∂P_k = -w_k/P_k  →  g = -w (Σ g = -1, so c = P - w*, Eq. 10)
    return -torch.exp(log_w)


def _g_rev(log_p: torch.Tensor, log_w: torch.Tensor) -> torch.Tensor:
    # D = KL(P‖w*): ∂D/∂P_k = log(P_k/w_k) + 1  →  g = P log(P/w) (the +1 cancels; Eq. 14)
    return torch.exp(log_p) * (log_p - log_w)


def _g_js(log_p: torch.Tensor, log_w: torch.Tensor) -> torch.Tensor:
    # D = JS(P, w*) = ½KL(P‖M) + ½KL(w*‖M), M = (P + w*)/2: ∂D/∂P_k = ½ log(2P_k/(P_k + w_k))
    #   = ½(log 2 + ℓ - softplus(ℓ)) with ℓ = log(P/w): bounded in ℓ → -∞ and ℓ → ∞.
    lr = log_p - log_w
    return 0.5 * torch.exp(log_p) * (LOG2 + lr - F.softplus(lr))


def _g_hellinger(log_p: torch.Tensor, log_w: torch.Tensor) -> torch.Tensor:
    # D = Σ (√P - √w)²: ∂D/∂P_k = 1 - √(w_k/P_k)  →  g = P - √(P w)
    return torch.exp(log_p) - torch.exp(0.5 * (log_p + log_w))


def _g_chi2(log_p: torch.Tensor, log_w: torch.Tensor) -> torch.Tensor:
    # D = Pearson χ²(P‖w*) = Σ (P - w)²/w: ∂D/∂P_k = 2(P_k/w_k - 1)  →  g = 2(P²/w - P). Unbounded as w_k → 0:
    # the coefficient itself grows like P²/w. The losses do not use this form (P²/w overflows, then
    # c = g - P·Σg is inf - inf): see _c_chi2.
    return 2.0 * (torch.exp(2.0 * log_p - log_w) - torch.exp(log_p))


def _c_chi2(log_p: torch.Tensor, log_w: torch.Tensor, log_rho_bar: torch.Tensor) -> torch.Tensor:
    r"""Pearson χ²'s coefficient without the overflow of ``g - P Σg``: with :math:`
ho_k = P_k/w_k`,

    .. math:: c_k = g_k - P_k\sum_j g_j = 2P_k(
ho_k - ar
ho),\qquad
              \logar
ho = \log\sum_j P_j
ho_j = \mathrm{logsumexp}_j(2\log P_j - \log w_j)

    evaluated as :math:`2\,\mathrm{sign}\cdot e^{\log P_k + \max(\ell_k, \logar
ho)}(1 - e^{-|\ell_k - \logar
ho|})`,
    :math:`\ell_k = \log
ho_k`: finite whenever :math:`c_k` itself is representable (it overflows only when
    the true coefficient does, and the loss then raises)."""
    ell = log_p - log_w
    hi = torch.maximum(ell, log_rho_bar)
    gap = (ell - log_rho_bar).abs()
    return 2.0 * torch.sign(ell - log_rho_bar) * torch.exp(log_p + hi) * (-torch.expm1(-gap))


LPO_DIVERGENCES: dict[str, GFn] = {"fwd": _g_fwd, "rev": _g_rev, "js": _g_js, "hellinger": _g_hellinger,
                                   "chi2": _g_chi2}
TAU_RULES = ("grpo", "drgrpo", "rloo", "maxrl", "advantages")
TOKEN_CLIPS = ("none", "clamp", "ppo")
#: ε added to σ_G and μ_G (verl's GRPO ε): keeps zero-variance and all-zero groups finite (w* = P_t there).
TAU_EPS = 1e-6
#: "advantages" must be constant along each response: relative spread allowed (verl writes one scalar per row).
ADV_CONST_RTOL = 1e-6


def _resolve_divergence(divergence: Any) -> tuple[str, GFn | None]:
    if callable(divergence):
        return getattr(divergence, "__name__", "callable"), divergence
    if divergence == "pointwise":
        return "pointwise", None
    if divergence not in LPO_DIVERGENCES:
        raise ValueError(f"lpo_divergence must be one of {sorted(LPO_DIVERGENCES)} or a callable g(log_P, log_w), "
                         f"got {divergence!r}")
    return divergence, LPO_DIVERGENCES[divergence]


def _resolve_tau(tau: Any) -> str | float:
    if isinstance(tau, str):
        if tau not in TAU_RULES:           # a number in a string is refused, as for every other numeric key
            raise ValueError(f"lpo_tau must be one of {TAU_RULES} or a positive number, got {tau!r}")
        return tau
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (0.0 < float(tau) < math.inf):
        raise ValueError(f"lpo_tau must be one of {TAU_RULES} or a positive finite number, got {tau!r}")
    return float(tau)


# --------------------------------------------------------------------------------------------------------------
# Group state: everything segment-wide the coefficients need
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ListwiseState:
    """Per-group aggregates ``[G]`` (indexed by group id) from which any piece of a group gets its coefficients.

    ``count`` K_G; ``pivot`` and ``mean`` of the rewards (μ_G = pivot + mean(R - pivot): exact zeros for a
    constant group); ``tau``; the log-partitions ``lse_s`` of P_θ and ``lse_phi`` of w*; ``g_sum`` = Σ_j g_j
    (for ``chi2`` its log-space form log ρ̄ = log Σ_j P_j²/w_j, which cannot overflow: :func:`_c_chi2`).
    ``tau_rule`` and ``divergence`` record how it was built, and ``dense`` whether the ids were local codes
    (such a state cannot be shared with another piece of the batch).
    """

    num_groups: int
    count: torch.Tensor
    pivot: torch.Tensor
    mean: torch.Tensor
    tau: torch.Tensor
    lse_s: torch.Tensor
    lse_phi: torch.Tensor
    g_sum: torch.Tensor
    tau_rule: str | float
    divergence: str
    dense: bool


def _phi(state: ListwiseState, seg: torch.Tensor, rewards: torch.Tensor | None, adv_seq: torch.Tensor | None,
         s_t: torch.Tensor | None) -> torch.Tensor:
    """Target logits φ_k = (R_k - μ_G)/τ_G + s_t,k (Thm. 1), or the upstream advantage + s_t,k."""
    if state.tau_rule == "advantages":
        phi = adv_seq
    else:
        centred = (rewards - state.pivot[seg]) - (state.mean - state.pivot)[seg]
        phi = centred / state.tau[seg]
    return phi if s_t is None else phi + s_t


def _coefficients(state: ListwiseState, seg: torch.Tensor, s: torch.Tensor, phi: torch.Tensor,
                  g_fn: GFn | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c, log P, log w*) per sequence from the group state: c = g - P Σ_j g_j (App. C.6), or -w* (pointwise)."""
    log_p = s - state.lse_s[seg]
    log_w = phi - state.lse_phi[seg]
    if g_fn is None:                                  # pointwise ablation (App. C.4): c = -w*, no self-correction
        return -torch.exp(log_w), log_p, log_w
    if g_fn is _g_fwd:                                # Σ g = -Σ w* = -1 exactly: c = P - w* (Eq. 10)
        return torch.exp(log_p) - torch.exp(log_w), log_p, log_w
    if g_fn is _g_chi2:                               # c = 2P(ρ - ρ̄) in log space (g_sum holds log ρ̄)
        return _c_chi2(log_p, log_w, state.g_sum[seg]), log_p, log_w
    g = g_fn(log_p, log_w)
    return g - torch.exp(log_p) * state.g_sum[seg], log_p, log_w


def _group_temperature(r: torch.Tensor, seg: torch.Tensor, G: int, count: torch.Tensor, tau_rule: str | float,
                       tau_eps: float, std_unbiased: bool, reducer: Any
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per group ``[G]``: the pivot (max reward), the mean μ_G = pivot + mean(R − pivot) (exact zeros for a constant
    group) and the temperature τ_G of the rule (GRPO σ_G, Dr.GRPO 1, RLOO (K−1)/K, MaxRL μ_G, or a constant)."""
    dt, dev = r.dtype, r.device
    zeros = torch.zeros(G, dtype=dt, device=dev)
    pivot = reducer.max(segment_max(r, seg, G))
    pivot = torch.where(torch.isfinite(pivot), pivot, zeros)
    mean = pivot + reducer.sum(segment_sum(r - pivot[seg], seg, G)) / count.clamp_min(1)
    if tau_rule == "grpo":
        centred = (r - pivot[seg]) - (mean - pivot)[seg]
        # σ_G = a·√(Σ(x/a)²/n) with a = max|x| per group: Σx² would overflow for |R| ≳ 1e19 (float32)
        # and turn every φ into a silent 0
        a = reducer.max(segment_max(centred.abs(), seg, G))
        a = torch.where(a > 0, a, torch.ones_like(a))
        scaled = centred / a[seg]
        ss = reducer.sum(segment_sum(scaled * scaled, seg, G))
        denom = (count - 1) if std_unbiased else count
        return pivot, mean, a * torch.sqrt(ss / denom.clamp_min(1)) + tau_eps
    if tau_rule == "drgrpo":
        return pivot, mean, torch.ones(G, dtype=dt, device=dev)
    if tau_rule == "rloo":
        return pivot, mean, (count - 1) / count.clamp_min(1)
    if tau_rule == "maxrl":
        return pivot, mean, mean + tau_eps
    return pivot, mean, torch.full((G,), float(tau_rule), dtype=dt, device=dev)


@torch.no_grad()
def listwise_state(seq_log_ratio: torch.Tensor, group_ids: Any, *, rewards: torch.Tensor | None = None,
                   seq_advantages: torch.Tensor | None = None, anchor_log_ratio: torch.Tensor | None = None,
                   tau: Any = "grpo", divergence: Any = "fwd", tau_eps: float = TAU_EPS,
                   std_unbiased: bool = True, process_group: Any = None, num_groups: int | None = None,
                   _dense: bool | None = None) -> ListwiseState:
    r"""The group aggregates of LPO for sequences with listwise logits ``seq_log_ratio`` (``[B]``, s_k).

    ``group_ids``: ``[B]`` ids. ``rewards`` (``[B]``) for the τ rules, or ``seq_advantages`` for
    ``tau="advantages"``; ``anchor_log_ratio`` s_t (``[B]``) or ``None``. With ``process_group`` the pieces
    on every rank of the group are combined (call it on every rank); ids must then be non-negative integers,
    and ``num_groups`` (default: the largest id + 1, one host synchronisation) sizes the buffers.
    Build it on a whole mini-batch and pass it as ``lpo_state`` to the loss of each of its micro-batches.
    """
    tau_rule = _resolve_tau(tau)
    div_name, g_fn = _resolve_divergence(divergence)
    reducer = reducer_for(process_group)
    s = seq_log_ratio.detach()
    b = s.shape[0]                                     # responses (one listwise logit each)
    ids = group_tensor(group_ids, b, s.device)
    dense = (not reducer.distributed and num_groups is None) if _dense is None else _dense
    seg, G, probes = segment_codes(ids, not dense, reducer, num_groups, "group_ids",
                                   "process_group or num_groups given")
    raise_flagged(probes)
    dt = s.dtype
    count = reducer.sum(segment_sum(torch.ones(b, dtype=dt, device=s.device), seg, G))
    zeros = torch.zeros(G, dtype=dt, device=s.device)
    pivot, mean, tau_g = zeros, zeros, torch.ones(G, dtype=dt, device=s.device)
    if tau_rule != "advantages":
        pivot, mean, tau_g = _group_temperature(rewards.detach().to(dt), seg, G, count, tau_rule, tau_eps,
                                                std_unbiased, reducer)
    state = ListwiseState(G, count, pivot, mean, tau_g, zeros, zeros, zeros, tau_rule, div_name, dense)
    phi = _phi(state, seg, None if tau_rule == "advantages" else rewards.detach().to(dt),
               None if seq_advantages is None else seq_advantages.detach().to(dt),
               None if anchor_log_ratio is None else anchor_log_ratio.detach().to(dt))
    state.lse_s = segment_logsumexp(s, seg, G, reducer)
    state.lse_phi = segment_logsumexp(phi, seg, G, reducer)
    if g_fn is _g_chi2:
        log_p = s - state.lse_s[seg]
        state.g_sum = segment_logsumexp(2.0 * log_p - (phi - state.lse_phi[seg]), seg, G, reducer)   # log ρ̄
    elif g_fn is not None and g_fn is not _g_fwd:
        log_p = s - state.lse_s[seg]
        log_w = phi - state.lse_phi[seg]
        state.g_sum = reducer.sum(segment_sum(g_fn(log_p, log_w), seg, G))
    return state


# --------------------------------------------------------------------------------------------------------------
# The losses
# --------------------------------------------------------------------------------------------------------------

def _read_lpo_config(config: Any, pointwise: bool, have_rewards: bool) -> dict[str, Any]:
    tau = hparam(config, "lpo_tau", None)
    if tau is None:
        tau = "grpo" if have_rewards else "advantages"
    div = "pointwise" if pointwise else hparam(config, "lpo_divergence", "fwd")
    clip = hparam_choice(config, "lpo_token_clip", "none", TOKEN_CLIPS)
    eps = hparam_real(config, "lpo_tau_eps", TAU_EPS, lo=0.0, lo_open=True, what="a positive number")
    gsize = hparam(config, "lpo_group_size", None)
    if gsize is not None and (isinstance(gsize, bool) or not isinstance(gsize, int) or gsize < 1):
        raise ValueError(f"lpo_group_size must be a positive integer, got {gsize!r}")
    div_name, g_fn = _resolve_divergence(div)
    return {"tau": _resolve_tau(tau), "divergence": div, "div_name": div_name, "g_fn": g_fn, "token_clip": clip,
            "tau_eps": eps, "std_unbiased": hparam_bool(config, "lpo_tau_std_unbiased", True),
            "group_size": gsize}


def _check_seq_tensor(name: str, t: Any, b: int, device: torch.device) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [{b}], got {type(t).__name__}")
    if t.dim() != 1 or t.shape[0] != b:
        raise ValueError(f"{name} must have shape [{b}] (one value per sequence), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {t.dtype}")
    return t.to(device)


def _lpo_group_ids(extra: dict[str, Any], cfg: dict[str, Any], config: Any, b: int,
                   dev: torch.device) -> torch.Tensor:
    """``[B]`` group ids: ``extra["group_ids"]``, or contiguous groups of ``lpo_group_size`` rows when verl's actor
    config says the rows are still in rollout order."""
    group_ids = extra.get("group_ids")
    if group_ids is None:
        n = cfg["group_size"]
        if n is None:
            raise ValueError("group_ids is required (or set lpo_group_size for contiguous groups of n rows)")
        for key, why in (("use_dynamic_bsz", "verl's dynamic batching balances micro-batches by token load, not "
                          "by group (rearrange_micro_batches)"),
                         ("shuffle", "verl shuffles the rows of a mini-batch")):
            if hparam(config, key, False) is True:
                raise ValueError(f"lpo_group_size={n} takes contiguous rows as a group, but {key}=True: {why}, so "
                                 f"the rows of one micro-batch are not whole groups and the loss would merge "
                                 f"groups silently; set actor.{key}=False (or pass group_ids)")
        if b % n:
            raise ValueError(f"lpo_group_size={n} does not divide the batch of {b} sequences")
        group_ids = torch.arange(b, device=dev) // n
    return group_tensor(group_ids, b, dev)


def _lpo_target_inputs(extra: dict[str, Any], cfg: dict[str, Any], advantages: torch.Tensor,
                       old_log_prob: torch.Tensor, response_mask: torch.Tensor, probes: Probes
                       ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """What the target w* is built from (Thm. 1): rewards ``r`` ``[B]`` (a τ rule) or the per-sequence advantage
    ``adv_seq`` ``[B]`` (``lpo_tau='advantages'``), and the anchor logits ``s_t = log π_t/π_b`` ``[B]`` or None."""
    B, T = old_log_prob.shape                                  # sequences, response tokens
    dev, m = old_log_prob.device, response_mask.to(old_log_prob.dtype)
    rewards = extra.get("rewards")
    r = adv_seq = s_t = None
    if cfg["tau"] == "advantages":
        if rewards is not None:
            raise ValueError("rewards given but lpo_tau='advantages' takes the target from advantages")
        first = torch.argmax(response_mask.to(torch.int8), dim=-1)       # first valid token of each row
        adv_seq = advantages.gather(1, first[:, None]).squeeze(1)
        spread = ((advantages - adv_seq[:, None]).abs() * m).amax()
        probes.append((spread > ADV_CONST_RTOL * (1.0 + adv_seq.abs().max()),
                       "advantages must be constant over each response's tokens for lpo_tau='advantages' "
                       "(a per-sequence advantage, as verl's outcome estimators give)"))
    else:
        if rewards is None:
            raise ValueError(f"rewards is required for lpo_tau={cfg['tau']!r} (or use lpo_tau='advantages')")
        r = _check_seq_tensor("rewards", rewards, B, dev).detach()
        probes.append(((~torch.isfinite(r)).any(), "rewards contains NaN or inf"))
        if cfg["tau"] == "maxrl":
            probes.append(((r < 0).any(), "rewards must be ≥ 0 for lpo_tau='maxrl' (τ = μ_G must be positive)"))
    anchor = extra.get("anchor_log_prob")
    if anchor is not None:
        if not isinstance(anchor, torch.Tensor) or anchor.shape != (B, T):
            raise ValueError(f"anchor_log_prob must be a tensor of shape {(B, T)}")
        probes.append(((~torch.isfinite(anchor)).any(), "anchor_log_prob contains NaN or inf"))
        s_t = ((anchor.detach() - old_log_prob.detach()) * m).sum(-1)          # s_t = log π_t/π_b (Thm. 1)
    return r, adv_seq, s_t


@torch.no_grad()
def _lpo_state(s: torch.Tensor, ids: torch.Tensor, r: torch.Tensor | None, adv_seq: torch.Tensor | None,
               s_t: torch.Tensor | None, cfg: dict[str, Any], extra: dict[str, Any], probes: Probes
               ) -> tuple[ListwiseState, torch.Tensor]:
    """The group state (given as ``lpo_state``, or built from this batch) and each row's segment index into it."""
    state = extra.get("lpo_state")
    if state is None:
        state = listwise_state(s, ids, rewards=r, seq_advantages=adv_seq, anchor_log_ratio=s_t,
                               tau=cfg["tau"], divergence=cfg["divergence"], tau_eps=cfg["tau_eps"],
                               std_unbiased=cfg["std_unbiased"], process_group=extra.get("process_group"))
        seg = dense_segments(ids) if state.dense else ids
    else:
        if not isinstance(state, ListwiseState):
            raise ValueError(f"lpo_state must be a ListwiseState, got {type(state).__name__}")
        if state.dense:
            raise ValueError("lpo_state was built with local group codes; build it with num_groups= (or a "
                             "process_group) to share it between micro-batches")
        if state.tau_rule != cfg["tau"] or state.divergence != cfg["div_name"]:
            raise ValueError(f"lpo_state was built for tau={state.tau_rule!r}, divergence={state.divergence!r}; "
                             f"the loss is configured with tau={cfg['tau']!r}, divergence={cfg['divergence']!r}")
        probes.append((((ids < 0) | (ids >= state.num_groups)).any(),
                       f"group_ids must lie in [0, {state.num_groups}) (lpo_state's groups)"))
        # clamped so that nothing indexes out of range before the probes raise (an IndexError on CPU, a device
        # assert on CUDA, instead of the message above)
        seg = ids.clamp(0, state.num_groups - 1)
    if cfg["tau"] in ("grpo", "rloo") and (cfg["tau"] == "rloo" or cfg["std_unbiased"]):
        probes.append(((state.count[seg] < 2).any(),
                       f"group_ids leaves a group with a single sequence; lpo_tau={cfg['tau']!r} needs at least "
                       f"two per group"))
    return state, seg


def _lpo_surrogate(psi: torch.Tensor, log_prob: torch.Tensor, old_log_prob: torch.Tensor, log_ratio: torch.Tensor,
                   response_mask: torch.Tensor, clip: str, config: Any
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Per-token loss ``-ψ · δ`` (``[B, T]``) under ``lpo_token_clip``: none, ``clamp`` (δ clamped to
    [log(1-ε_low), log(1+ε_high)], gradient 0 outside in both directions, A2) or ``ppo`` (PPO's clipped surrogate
    with ψ as the advantage); with the clip indicators and -log r for ``finish``."""
    psi_t = psi[:, None].to(log_prob.dtype)
    if clip == "ppo":
        eps_low, eps_high = read_clip_eps(config)
        loss_mat, lr_raw, _, ind = clipped_surrogate(log_prob, old_log_prob, psi_t.expand_as(log_prob),
                                                     1.0 - eps_low, 1.0 + eps_high, None)
        return loss_mat, ind, -lr_raw
    if clip == "clamp":
        eps_low, eps_high = read_clip_eps(config)
        lo, hi = math.log(max(1.0 - eps_low, 1e-300)), math.log1p(eps_high)
        surrogate = torch.clamp(log_ratio, lo, hi)
        clipped = (log_ratio < lo) | (log_ratio > hi)
    else:
        surrogate, clipped = log_ratio, torch.zeros_like(response_mask, dtype=torch.bool)
    return -psi_t * surrogate, {"clipped": clipped, "dual": torch.zeros_like(clipped)}, -log_ratio


@torch.no_grad()
def _lpo_metrics(log_p: torch.Tensor, log_w: torch.Tensor, c: torch.Tensor, psi: torch.Tensor, k_g: torch.Tensor,
                 tau: torch.Tensor) -> dict[str, torch.Tensor]:
    """Group-level diagnostics as averages over groups: Σ_i term_i / Σ_i 1/K_G(i) (exact when groups are whole)."""
    p, w = torch.exp(log_p), torch.exp(log_w)
    inv_k = 1.0 / k_g
    n_groups = inv_k.sum()

    def xlogy(x: torch.Tensor, lx: torch.Tensor, ly: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x * (lx - ly), torch.zeros_like(x))

    return {
        "lpo/kl_fwd": xlogy(w, log_w, log_p).sum() / n_groups,
        "lpo/kl_rev": xlogy(p, log_p, log_w).sum() / n_groups,
        "lpo/tv": 0.5 * (p - w).abs().sum() / n_groups,
        "lpo/coef_absmax": c.abs().max(),
        "lpo/psi_absmax": psi.abs().max(),
        "lpo/tau_mean": (tau * inv_k).sum() / n_groups,
        "lpo/target_entropy": -xlogy(w, log_w, torch.zeros_like(log_w)).sum() / n_groups,
    }


def _lpo(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights, extra,
         pointwise):
    """LPO (Algorithm 1): s = Σ_i δ → P = softmax_G(s), w* = softmax_G(φ) → c → ψ = −K c → L = −ψ · δ."""
    if advantages is None:
        advantages = torch.zeros_like(log_prob)
    old_log_prob, log_prob, advantages, rollout_is_weights = checked_inputs(
        old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights, extra,
        {"rewards", "group_ids", "anchor_log_prob", "process_group", "lpo_state"},
        "lpo_pointwise" if pointwise else "lpo")
    cfg = _read_lpo_config(config, pointwise, extra.get("rewards") is not None)
    B, T = log_prob.shape                                                     # sequences, response tokens
    probes: Probes = []
    ids = _lpo_group_ids(extra, cfg, config, B, log_prob.device)
    r, adv_seq, s_t = _lpo_target_inputs(extra, cfg, advantages, old_log_prob, response_mask, probes)

    log_ratio = (log_prob - old_log_prob.detach()) * response_mask.to(log_prob.dtype)   # δ_{k,i}, masked
    s = log_ratio.detach().sum(-1)                                            # listwise logits s_k (Eq. 4)
    state, seg = _lpo_state(s, ids, r, adv_seq, s_t, cfg, extra, probes)
    with torch.no_grad():
        phi = _phi(state, seg, None if r is None else r.to(log_prob.dtype), adv_seq, s_t)   # target logits (Thm. 1)
        c, log_p, log_w = _coefficients(state, seg, s, phi, cfg["g_fn"])      # c = g − P Σ g (App. C.6)
        k_g = state.count[seg]
        psi = -k_g * c                                                        # listwise advantage ψ = −K c
    # Inputs are finite, so a non-finite ψ is an overflow of the working dtype: a target so peaked (rewards/τ)
    # that the divergence's coefficient itself is beyond its range (χ²'s grows like P²/w*).
    probes.append(((~torch.isfinite(psi)).any(),
                f"lpo: the listwise coefficients overflow {log_prob.dtype} (lpo_divergence={cfg['div_name']!r}, "
                f"lpo_tau={cfg['tau']!r}: rewards/τ make the target so peaked that the coefficient is beyond the "
                f"dtype's range); use a larger lpo_tau, the 'fwd' divergence (|c| ≤ 1) or float64 inputs"))
    raise_flagged(probes)

    loss_mat, ind, neg_kl = _lpo_surrogate(psi, log_prob, old_log_prob, log_ratio, response_mask,
                                           cfg["token_clip"], config)         # L = −ψ · δ per token
    metrics = _lpo_metrics(log_p, log_w, c, psi, k_g, state.tau[seg])
    return finish(loss_mat, ind, neg_kl, response_mask, loss_agg_mode, config, rollout_is_weights, metrics)


@register_policy_loss("lpo", extras=("rewards", "group_ids"))
def lpo_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor | None,
             response_mask: torch.Tensor, loss_agg_mode: str = "seq-mean-token-sum", config: Any = None,
             rollout_is_weights: torch.Tensor | None = None, **extra: Any) -> tuple[torch.Tensor, dict[str, float]]:
    r"""LPO (module docstring): project the group's listwise distribution onto the Gibbs target.

    Extras: ``rewards`` ``[B]``, ``group_ids`` ``[B]``, ``anchor_log_prob`` ``[B, T]`` (π_t; default π_b),
    ``process_group`` (split groups across ranks), ``lpo_state`` (from :func:`listwise_state`, for micro-batches).
    Config: ``lpo_divergence`` ("fwd" | "rev" | "js" | "hellinger" | "chi2" | callable; default "fwd"),
    ``lpo_tau`` ("grpo" | "drgrpo" | "rloo" | "maxrl" | "advantages" | number; default "grpo" with rewards,
    "advantages" without), ``lpo_tau_eps`` (1e-6), ``lpo_tau_std_unbiased`` (True), ``lpo_token_clip``
    ("none" | "clamp" | "ppo"; default "none"; ε from ``clip_ratio_low``/``clip_ratio_high``),
    ``lpo_group_size`` (contiguous groups when ``group_ids`` is absent).
    """
    return _lpo(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights,
                extra, pointwise=False)


@register_policy_loss("lpo_pointwise", extras=("rewards", "group_ids"))
def lpo_pointwise_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor | None,
                       response_mask: torch.Tensor, loss_agg_mode: str = "seq-mean-token-sum", config: Any = None,
                       rollout_is_weights: torch.Tensor | None = None, **extra: Any
                       ) -> tuple[torch.Tensor, dict[str, float]]:
    r"""The pointwise ablation (App. C.4, §5.4.1): :math:`L = -\sum_k w^*_k \log\pi_\theta(y_k|x)`, i.e.
    :math:`c_k = -w^*_k`: one-sided (:math:`\sum_k c_k = -1`), independent of :math:`\pi_\theta`, so it never
    self-corrects. Same extras and config as :func:`lpo_loss` (``lpo_divergence`` is ignored); the target is
    Eq. 8's (spec A9: C.4's extra :math:`\pi_b(y_k)` factor is not used) and log-probs are summed over tokens.
    """
    return _lpo(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights,
                extra, pointwise=True)

