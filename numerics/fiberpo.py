"""FiberPO's gating (arXiv 2603.08239 v1, §4–§6, App. E) in float64 NumPy: the reference the PyTorch losses are
tested against.

Spec: ``spec/fiberpo.md`` §2.9–§2.14. Tokens are a flat array of log-ratios ``log r_i`` with an integer
trajectory id per token (any integers; trajectories need not be contiguous). Per trajectory ``τ`` with ``T_τ``
tokens the sign-channel aggregates are (FiberPO Eq. 9)

    log s⁺_τ = (1/T_τ) Σ_t max(log r_t, 0),      log s⁻_τ = (1/T_τ) Σ_t max(-log r_t, 0),

and the gated ratio of token ``i`` in ``τ`` is (Eqs. 7, 8, 16)

    log 𝒢_i = g_agg(log s⁺_τ, C⁺, T_τ) - g_agg(log s⁻_τ, C⁻, T_τ) + clip(l_i u_i, ±ε) - clip(l_i v_i, ±ε),

with the sign label ``l_i = sign(log r_i)`` (spec A4: ``l = +1`` for ``log r ≥ 0``; the *value* of 𝒢 does not
depend on that convention because both readings give the same number at ``log r_i = 0``), the fiber residual
``u_i = l_i log r_i - log s^{(l_i)}_τ`` (Eq. 14) and the opposite aggregate ``v_i = -log s^{(-l_i)}_τ`` (Eq. 15).
The objective is Eq. 6, ``Ĵ = Σ_i 𝒢_i Â_i / (|Tj| T_τ)``, without PPO's min and without KL terms (spec A8).

Besides the closed forms, the module builds the paper's *objects*: the Fiber Bundle Gating of FiberPO as explicit
matrices (decomposition 𝓕, pushforward π_E*, reflecting kernel K, recovery 𝓡; App. E.5.4) and the Fibration
Gating Hierarchy for a chain of index maps token → trajectory → group → domain (Eqs. 26–28, App. E.7), so the
closed forms can be checked against the definitions they were derived from.

Regime conventions (spec A12): ``g_agg`` passes ``|x| ≤ C``, rolls back on ``C < |x| < C*``, zeroes
``|x| ≥ C*``, ``C* = (1 + 1/T) C``; a clip is inactive on the closed interval ``|z| ≤ ε``. Derivatives use the
same intervals (the indicator ``𝕀_{|u| ≤ ε}`` of Eq. 20).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

# ----------------------------------------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------------------------------------


def _log_ratios(log_r, name: str = "log_r") -> np.ndarray:
    x = np.asarray(log_r, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite (no NaN or inf log-ratios)")
    return x


def _ids(ids, n: int, name: str) -> np.ndarray:
    a = np.asarray(ids)
    if a.shape != (n,):
        raise ValueError(f"{name} must have one entry per token, shape ({n},), got {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    return a


def _positive(x, name: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {x!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be positive and finite, got {x!r}")
    return v


def _budgets(C, name: str, levels: int) -> tuple[float, ...]:
    """A budget shared by every level (a number) or one per level, top level first (spec A5)."""
    if np.ndim(C) == 0:
        return (_positive(C, name),) * levels
    Cs = tuple(_positive(c, f"{name}[{k}]") for k, c in enumerate(C))
    if len(Cs) != levels:
        raise ValueError(f"{name} must be a number or {levels} per-level budgets, got {len(Cs)}")
    return Cs


# ----------------------------------------------------------------------------------------------------------
# the aggregate gate g_agg (Eq. 10 / 78)
# ----------------------------------------------------------------------------------------------------------

PASS, ROLLBACK, ZERO = 0, 1, 2
REGIME_NAMES = ("P", "R", "Z")


def g_agg(x, C, T):
    """FiberPO Eq. 10: ``x`` for ``|x| ≤ C``; ``sign(x)(T+1)C - T x`` for ``C < |x| < C* = (1 + 1/T)C``; else 0.

    The rollback branch is the unique line joining ``(C, C)`` to ``(C*, 0)`` (slope ``-T``); as ``T → ∞`` the
    gate tends to a hard clip at ``±C`` followed by zero. ``x`` and ``T`` broadcast; ``C > 0`` and ``T > 0``.
    """
    x = np.asarray(x, dtype=float)
    C = np.asarray(C, dtype=float)
    T = np.asarray(T, dtype=float)
    if np.any(~np.isfinite(C)) or np.any(C <= 0):
        raise ValueError("C must be positive and finite")
    if np.any(~np.isfinite(T)) or np.any(T <= 0):
        raise ValueError("T must be positive and finite")
    ax = np.abs(x)
    c_star = (1.0 + 1.0 / T) * C
    rollback = np.sign(x) * (T + 1.0) * C - T * x
    return np.where(ax <= C, x, np.where(ax < c_star, rollback, 0.0))


def g_agg_regime(x, C, T) -> np.ndarray:
    """Regime of ``g_agg`` (``PASS``, ``ROLLBACK``, ``ZERO``) with the intervals of Eq. 10 (spec A12)."""
    ax = np.abs(np.asarray(x, dtype=float))
    c_star = (1.0 + 1.0 / np.asarray(T, dtype=float)) * np.asarray(C, dtype=float)
    return np.where(ax <= C, PASS, np.where(ax < c_star, ROLLBACK, ZERO)).astype(int)


def g_agg_slope(x, C, T) -> np.ndarray:
    """``γ = ∂g_agg/∂x ∈ {1, -T, 0}`` (the γ of Prop. 5.2), one-sided at the kinks by the intervals of Eq. 10."""
    reg = g_agg_regime(x, C, T)
    T = np.broadcast_to(np.asarray(T, dtype=float), reg.shape)
    return np.where(reg == PASS, 1.0, np.where(reg == ROLLBACK, -T, 0.0))


# ----------------------------------------------------------------------------------------------------------
# FiberPO (Def. 5.1, Eqs. 6–16)
# ----------------------------------------------------------------------------------------------------------


class TrajectoryAggregates(NamedTuple):
    """Per-trajectory quantities of Eq. 9; ``index[i]`` is token ``i``'s trajectory (0..n_traj-1, order of
    ``labels``), ``T``, ``log_s_pos``, ``log_s_neg`` are per trajectory."""

    index: np.ndarray
    labels: np.ndarray
    T: np.ndarray
    log_s_pos: np.ndarray
    log_s_neg: np.ndarray


def trajectory_aggregates(log_r, traj_ids) -> TrajectoryAggregates:
    """Eq. 9: ``T_τ`` and the sign-channel means ``log s^±_τ = (1/T_τ) Σ_t max(±log r_t, 0)``."""
    x = _log_ratios(log_r)
    ids = _ids(traj_ids, x.size, "traj_ids")
    labels, index = np.unique(ids, return_inverse=True)
    n = labels.size
    T = np.bincount(index, minlength=n).astype(float)
    pos = np.bincount(index, weights=np.maximum(x, 0.0), minlength=n) / T
    neg = np.bincount(index, weights=np.maximum(-x, 0.0), minlength=n) / T
    return TrajectoryAggregates(index, labels, T, pos, neg)


def sign_label(log_r) -> np.ndarray:
    """``l_i = sign(log r_i)`` with ``l = +1`` at ``log r = 0`` (spec A4)."""
    return np.where(_log_ratios(log_r) >= 0, 1.0, -1.0)


class FiberPOParts(NamedTuple):
    """Every per-token constituent of Eq. 7 (arrays over tokens unless stated)."""

    l: np.ndarray           # sign label l_i
    T: np.ndarray           # T_τ of the token's trajectory
    log_s_pos: np.ndarray   # log s⁺_τ (Eq. 9), broadcast to tokens
    log_s_neg: np.ndarray   # log s⁻_τ
    u: np.ndarray           # fiber residual u_i (Eq. 14)
    v: np.ndarray           # opposite aggregate v_i (Eq. 15)
    log_w_base: np.ndarray  # log w^base_τ (Eq. 8)
    log_r_fiber: np.ndarray  # log r̃^fiber_i (Eq. 16)
    gamma_pos: np.ndarray   # γ⁺_τ = g_agg'(log s⁺_τ)
    gamma_neg: np.ndarray   # γ⁻_τ
    index: np.ndarray       # trajectory index per token


def fiberpo_parts(log_r, traj_ids, eps, C_pos, C_neg) -> FiberPOParts:
    """The constituents of FiberPO's gated ratio (Eqs. 8, 9, 14–16) per token."""
    eps = _positive(eps, "eps")
    C_pos = _positive(C_pos, "C_pos")
    C_neg = _positive(C_neg, "C_neg")
    x = _log_ratios(log_r)
    agg = trajectory_aggregates(x, traj_ids)
    T = agg.T[agg.index]
    sp, sn = agg.log_s_pos[agg.index], agg.log_s_neg[agg.index]
    l = sign_label(x)
    same = np.where(l > 0, sp, sn)
    opp = np.where(l > 0, sn, sp)
    u = l * x - same                                              # Eq. 14
    v = -opp                                                      # Eq. 15
    log_w = g_agg(sp, C_pos, T) - g_agg(sn, C_neg, T)             # Eq. 8
    log_fiber = np.clip(l * u, -eps, eps) - np.clip(l * v, -eps, eps)   # Eq. 16
    return FiberPOParts(l, T, sp, sn, u, v, log_w, log_fiber, g_agg_slope(sp, C_pos, T),
                        g_agg_slope(sn, C_neg, T), agg.index)


def fiberpo_log_gated_ratio(log_r, traj_ids, eps, C_pos, C_neg) -> np.ndarray:
    """``log 𝒢_i = log w^base_τ + log r̃^fiber_i`` (Eqs. 7, 16)."""
    p = fiberpo_parts(log_r, traj_ids, eps, C_pos, C_neg)
    return p.log_w_base + p.log_r_fiber


def fiberpo_gated_ratio(log_r, traj_ids, eps, C_pos, C_neg) -> np.ndarray:
    """FiberPO's ratio gating map 𝒢 per token (Eq. 7 = Eq. 16 in ratio space); always ``> 0``."""
    return np.exp(fiberpo_log_gated_ratio(log_r, traj_ids, eps, C_pos, C_neg))


def _advantages(adv, n: int) -> np.ndarray:
    a = np.asarray(adv, dtype=float)
    if a.shape != (n,):
        raise ValueError(f"adv must have one entry per token, shape ({n},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("adv must be finite")
    return a


def _weighted_objective(G, adv, T, n_traj, n_traj_default):
    n = n_traj_default if n_traj is None else int(_positive(n_traj, "n_traj"))
    return float(np.sum(G * adv / T) / n)


def fiberpo_objective(log_r, adv, traj_ids, eps, C_pos, C_neg, n_traj=None) -> float:
    """FiberPO Eq. 6: ``Ĵ = Σ_i 𝒢_i Â_i / (|Tj| T_τ)``; ``n_traj`` (= |Tj|, default: trajectories present)
    lets a batch slice use the global count (spec A6)."""
    x = _log_ratios(log_r)
    a = _advantages(adv, x.size)
    p = fiberpo_parts(x, traj_ids, eps, C_pos, C_neg)
    G = np.exp(p.log_w_base + p.log_r_fiber)
    return _weighted_objective(G, a, p.T, n_traj, int(p.index.max()) + 1)


def jacobian_eq20(log_r, traj_ids, eps, C_pos, C_neg) -> np.ndarray:
    """Prop. 5.2 (Eq. 20): ``𝔍_ij = ∂𝒢_i/∂r_j``

        = 𝒢_i/r_j 𝕀[τ_i = τ_j] ( 𝕀[|u_i| ≤ ε] 𝕀[i = j]
                               + (1/T_τ)(γ^{(l_j)}_τ - 𝕀[|u_i| ≤ ε] 𝕀[l_i = l_j] - 𝕀[|v_i| ≤ ε] 𝕀[l_i ≠ l_j]) ).

    Valid away from the kinks (where 𝒢 is differentiable); at a kink it is the one-sided value selected by the
    regime intervals of Eq. 10 and the closed clip interval.
    """
    p = fiberpo_parts(log_r, traj_ids, eps, C_pos, C_neg)
    x = np.asarray(log_r, dtype=float)
    G = np.exp(p.log_w_base + p.log_r_fiber)
    r = np.exp(x)
    eps = float(eps)
    same_traj = p.index[:, None] == p.index[None, :]
    same_sign = p.l[:, None] == p.l[None, :]
    a_u = (np.abs(p.u) <= eps)[:, None]
    a_v = (np.abs(p.v) <= eps)[:, None]
    gamma_j = np.where(p.l > 0, p.gamma_pos, p.gamma_neg)[None, :]
    bracket = (a_u * np.eye(x.size)
               + (gamma_j - a_u * same_sign - a_v * ~same_sign) / p.T[:, None])
    return G[:, None] / r[None, :] * same_traj * bracket


def numerical_jacobian(f: Callable[[np.ndarray], np.ndarray], r, rel_step: float = 1e-6) -> np.ndarray:
    """Central-difference Jacobian ``∂f_i/∂r_j`` of a map on positive ratios, step ``h_j = rel_step · r_j``.

    Complex-step differentiation does not apply (𝒢 is built from ``max``, ``|·|`` and ``clip``, which are not
    holomorphic), so this is the float64 reference: truncation ``O(h²)`` plus rounding ``O(ε_mach/h)``, about
    ``1e-10`` relative at the default step, provided no kink lies within ``h`` of ``r`` (see :func:`kink_margin`).
    """
    r = np.asarray(r, dtype=float)
    if r.ndim != 1 or r.size == 0 or np.any(~np.isfinite(r)) or np.any(r <= 0):
        raise ValueError("r must be a non-empty 1-d array of positive finite ratios")
    rel_step = _positive(rel_step, "rel_step")
    f0 = np.asarray(f(r), dtype=float)
    J = np.empty((f0.size, r.size))
    for j in range(r.size):
        h = rel_step * r[j]
        rp, rm = r.copy(), r.copy()
        rp[j] += h
        rm[j] -= h
        J[:, j] = (np.asarray(f(rp)) - np.asarray(f(rm))) / (2 * h)
    return J


def kink_margin(log_r, traj_ids, eps, C_pos, C_neg) -> float:
    """Smallest distance (in the log-ratio units each switch is measured in) from a regime switch of Eq. 7:
    ``log r_i = 0`` (sign label), ``|u_i| = ε``, ``|v_i| = ε``, ``log s^± = C^±`` and ``log s^± = C*^±``.
    A perturbation of ``log r_j`` by ``h`` moves ``u`` by at most ``2h``, the others by at most ``h``; so a
    finite-difference step below ``margin/2`` never crosses a kink."""
    p = fiberpo_parts(log_r, traj_ids, eps, C_pos, C_neg)
    x = np.asarray(log_r, dtype=float)
    d = [np.abs(x), np.abs(np.abs(p.u) - eps), np.abs(np.abs(p.v) - eps)]
    for s, C in ((p.log_s_pos, C_pos), (p.log_s_neg, C_neg)):
        d += [np.abs(s - C), np.abs(s - (1 + 1 / p.T) * C)]
    return float(min(np.min(a) for a in d))


# ----------------------------------------------------------------------------------------------------------
# Fiber Bundle Gating (Def. 4.3) and its FiberPO instance (App. E.5.4)
# ----------------------------------------------------------------------------------------------------------


class FiberBundleGating:
    """An FBG instance (Def. 4.3) with linear maps as explicit matrices.

    ``pushforward`` is π_E* (``|B| × |E|``: sums a density over each fiber), ``kernel`` is K (``|E| × |B|``),
    ``base_gate``/``fiber_gate`` act pointwise on vectors over B and E, ``decompose`` is 𝓕 (ratios → E-densities)
    and ``recover`` is 𝓡 (E-densities → ratios), a left inverse of 𝓕. The gating map is Eq. 4,

        G(σ) = K g_Base(π_E* σ) + g_Fiber(σ - K π_E* σ),

    and the ratio gating map is ``𝒢 = 𝓡 ∘ G ∘ 𝓕`` (Def. 4.4).
    """

    def __init__(self, pushforward, kernel, base_gate, fiber_gate, decompose, recover):
        self.pushforward = np.asarray(pushforward, dtype=float)
        self.kernel = np.asarray(kernel, dtype=float)
        nb, ne = self.pushforward.shape
        if self.kernel.shape != (ne, nb):
            raise ValueError(f"kernel must have shape {(ne, nb)} (E × B), got {self.kernel.shape}")
        self.base_gate, self.fiber_gate = base_gate, fiber_gate
        self.decompose, self.recover = decompose, recover

    def reflecting_defect(self) -> float:
        """``max |π_E* K - I|``: the reflecting condition ``π_E* ∘ K = id_B`` (Def. 4.3) holds iff this is 0."""
        P, K = self.pushforward, self.kernel
        return float(np.max(np.abs(P @ K - np.eye(P.shape[0]))))

    def gate(self, sigma) -> np.ndarray:
        """Eq. 4."""
        sigma = np.asarray(sigma, dtype=float)
        base = self.pushforward @ sigma
        return self.kernel @ self.base_gate(base) + self.fiber_gate(sigma - self.kernel @ base)

    def ratio_gate(self, r) -> np.ndarray:
        """``𝒢(r) = 𝓡(G(𝓕(r)))`` (Def. 4.4)."""
        return self.recover(self.gate(self.decompose(np.asarray(r, dtype=float))))


class FiberPOBundle(NamedTuple):
    """The FiberPO FBG objects for one batch; E is ordered (channel +1 tokens, then channel −1 tokens) and B is
    (channel +1 trajectories, then channel −1 trajectories)."""

    fbg: FiberBundleGating
    F: Callable[[np.ndarray], np.ndarray]
    R: Callable[[np.ndarray], np.ndarray]
    pushforward: np.ndarray
    kernel: np.ndarray
    T_token: np.ndarray


def fiberpo_bundle(traj_ids, eps, C_pos, C_neg) -> FiberPOBundle:
    """FiberPO as an FBG (App. E.5.4): ``E = tokens × {±1}``, ``B = trajectories × {±1}``, ``π_E(i; l) = (τ_i, l)``,

        𝓕(r)_{(i;l)} = max(l log r_i, 0)/T_τ,   K((i;l)|(τ;l)) = 1/T_τ,   𝓡(σ)_i = exp(T_τ(σ_{(i;+)} - σ_{(i;-)})),
        g_Fiber,i(σ) = clip(σ, ±ε/T_τ),          g_Base,(τ;l)(σ) = g_agg(σ, C^{(l)}, T_τ).
    """
    eps = _positive(eps, "eps")
    C_pos = _positive(C_pos, "C_pos")
    C_neg = _positive(C_neg, "C_neg")
    ids = np.asarray(traj_ids)
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError("traj_ids must be a non-empty 1-d integer array")
    _, index = np.unique(ids, return_inverse=True)
    N, n = ids.size, int(index.max()) + 1
    T_traj = np.bincount(index, minlength=n).astype(float)
    T_tok = T_traj[index]
    onehot = np.zeros((n, N))
    onehot[index, np.arange(N)] = 1.0
    Z = np.zeros_like(onehot)
    P = np.block([[onehot, Z], [Z, onehot]])                     # π_E*: sum over the fiber of (τ; l)
    K = np.block([[onehot.T / T_tok[:, None], Z.T], [Z.T, onehot.T / T_tok[:, None]]])
    T_E = np.concatenate([T_tok, T_tok])
    T_B = np.concatenate([T_traj, T_traj])
    C_B = np.concatenate([np.full(n, C_pos), np.full(n, C_neg)])

    def F(r):
        lr = np.log(r)
        return np.concatenate([np.maximum(lr, 0.0), np.maximum(-lr, 0.0)]) / T_E

    def R(sigma):
        return np.exp(T_tok * (sigma[:N] - sigma[N:]))

    fbg = FiberBundleGating(P, K, lambda b: g_agg(b, C_B, T_B), lambda s: np.clip(s, -eps / T_E, eps / T_E), F, R)
    return FiberPOBundle(fbg, F, R, P, K, T_tok)


# ----------------------------------------------------------------------------------------------------------
# Fibration Gating Hierarchy (Def. 6.2, Eqs. 26–28) and FiberPO-Domain (Def. 6.4, Eqs. 30–33, App. E.7)
# ----------------------------------------------------------------------------------------------------------


class FibrationGatingHierarchy:
    """An FGH of depth ``n`` (Def. 6.2): strata ``B_0 ← B_1 ← … ← B_n = E``.

    ``pushforwards[k-1]`` is π_{k*} (``|B_{k-1}| × |B_k|``), ``kernels[k]`` is K_k (``|B_{k+1}| × |B_k|``),
    ``gates[k]`` acts pointwise on ``B_k``-densities (k = 0..n). The gating map is Eqs. 26–28:

        G(σ) = Σ_{k=0}^{n} K_{n←k} G_k(π_{k←n*} σ),   G_0 = g_0,   G_k(σ_k) = g_k(σ_k - K_{k-1} π_{k*} σ_k).
    """

    def __init__(self, pushforwards: Sequence, kernels: Sequence, gates: Sequence[Callable], decompose, recover):
        self.pushforwards = [np.asarray(P, dtype=float) for P in pushforwards]
        self.kernels = [np.asarray(K, dtype=float) for K in kernels]
        n = len(self.pushforwards)
        if len(self.kernels) != n or len(gates) != n + 1:
            raise ValueError("an FGH of depth n needs n pushforwards, n kernels and n + 1 gates")
        for k, (P, K) in enumerate(zip(self.pushforwards, self.kernels)):
            if K.shape != P.T.shape:
                raise ValueError(f"kernels[{k}] must have shape {P.T.shape}, got {K.shape}")
        self.gates = list(gates)
        self.decompose, self.recover = decompose, recover
        self.depth = n

    def reflecting_defects(self) -> list[float]:
        """``max |π_{k*} K_{k-1} - I|`` for k = 1..n (condition (i) of Def. 6.2)."""
        return [float(np.max(np.abs(P @ K - np.eye(P.shape[0])))) for P, K in zip(self.pushforwards, self.kernels)]

    def strata(self, sigma) -> list[np.ndarray]:
        """``[π_{0←n*}σ, …, π_{n←n*}σ = σ]``."""
        out = [np.asarray(sigma, dtype=float)]
        for P in reversed(self.pushforwards):
            out.append(P @ out[-1])
        return out[::-1]

    def level_terms(self, sigma) -> list[np.ndarray]:
        """``K_{n←k} G_k(π_{k←n*}σ)`` for k = 0..n (the summands of Eq. 27), each a density on E."""
        s = self.strata(sigma)
        terms = []
        for k in range(self.depth + 1):
            gk = self.gates[k](s[0]) if k == 0 else self.gates[k](s[k] - self.kernels[k - 1] @ s[k - 1])
            for K in self.kernels[k:]:
                gk = K @ gk
            terms.append(gk)
        return terms

    def gate(self, sigma) -> np.ndarray:
        """Eq. 26/27."""
        return np.sum(self.level_terms(sigma), axis=0)

    def ratio_gate(self, r) -> np.ndarray:
        """Eq. 29's ``𝓡 ∘ G ∘ 𝓕``."""
        return self.recover(self.gate(self.decompose(np.asarray(r, dtype=float))))


def _hierarchy_ids(traj_ids, group_ids, domain_ids, N):
    """Per-token ids → (trajectory index per token, group index per trajectory, domain index per group)."""
    t = _ids(traj_ids, N, "traj_ids")
    g = _ids(group_ids, N, "group_ids")
    d = _ids(domain_ids, N, "domain_ids")
    _, ti = np.unique(t, return_inverse=True)
    n_t = int(ti.max()) + 1
    _, gi = np.unique(g, return_inverse=True)
    _, di = np.unique(d, return_inverse=True)
    g_of_t = np.full(n_t, -1)
    g_of_t[ti] = gi
    if np.any(g_of_t[ti] != gi):
        raise ValueError("group_ids must be constant within each trajectory")
    n_g = int(gi.max()) + 1
    d_of_g = np.full(n_g, -1)
    d_of_g[gi] = di
    if np.any(d_of_g[gi] != di):
        raise ValueError("domain_ids must be constant within each group")
    return ti, g_of_t, d_of_g


def fiberpo_domain_parts(log_r, traj_ids, group_ids, domain_ids, eps, C_pos, C_neg):
    """Per-token ``log w^Base`` (Eq. 31), ``log r̃^Fiber`` (Eq. 32) and the per-level gate arguments.

    ``C_pos``/``C_neg`` are a budget shared by the domain, group and trajectory levels (Eq. 31 as printed) or a
    triple ``(domain, group, trajectory)`` of per-level budgets (spec A5, the abstract's "independent budgets").
    ``group_ids``/``domain_ids`` are per token and must be constant within a trajectory / group.
    """
    eps = _positive(eps, "eps")
    levels_pos = _budgets(C_pos, "C_pos", 3)
    levels_neg = _budgets(C_neg, "C_neg", 3)
    x = _log_ratios(log_r)
    ti, g_of_t, d_of_g = _hierarchy_ids(traj_ids, group_ids, domain_ids, x.size)
    agg = trajectory_aggregates(x, traj_ids)
    n_g, n_d = g_of_t.max() + 1, d_of_g.max() + 1
    d_of_t = d_of_g[g_of_t]
    cnt_g = np.bincount(g_of_t, minlength=n_g).astype(float)        # |Tj(g)|
    cnt_d = np.bincount(d_of_t, minlength=n_d).astype(float)        # |Tj(D)|
    T_g = np.bincount(g_of_t, weights=agg.T, minlength=n_g)         # T_g = Σ_{τ∈g} T_τ
    T_d = np.bincount(d_of_t, weights=agg.T, minlength=n_d)
    levels = {}
    log_w = np.zeros(agg.T.size)
    for sgn, s_t, Cs in ((+1, agg.log_s_pos, levels_pos), (-1, agg.log_s_neg, levels_neg)):
        s_g = np.bincount(g_of_t, weights=s_t, minlength=n_g) / cnt_g   # Eq. 33
        s_d = np.bincount(d_of_t, weights=s_t, minlength=n_d) / cnt_d   # = trajectory mean over the domain
        args = (s_d[d_of_t], s_g[g_of_t] - s_d[d_of_t], s_t - s_g[g_of_t])
        Ts = (T_d[d_of_t], T_g[g_of_t], agg.T)
        levels[sgn] = [(a, C, T) for a, C, T in zip(args, Cs, Ts)]
        log_w = log_w + sgn * sum(g_agg(a, C, T) for a, C, T in levels[sgn])
    p = fiberpo_parts(x, traj_ids, eps, levels_pos[2], levels_neg[2])
    return {"log_w_base": log_w[ti], "log_r_fiber": p.log_r_fiber, "levels": levels, "traj_index": ti,
            "group_of_traj": g_of_t, "domain_of_group": d_of_g, "T": agg.T[ti]}


def fiberpo_domain_gated_ratio(log_r, traj_ids, group_ids, domain_ids, eps, C_pos, C_neg) -> np.ndarray:
    """FiberPO-Domain's gated ratio ``w^Base_i r̃^Fiber_i`` (Eqs. 30–33); see :func:`fiberpo_domain_parts`."""
    p = fiberpo_domain_parts(log_r, traj_ids, group_ids, domain_ids, eps, C_pos, C_neg)
    return np.exp(p["log_w_base"] + p["log_r_fiber"])


def fiberpo_domain_objective(log_r, adv, traj_ids, group_ids, domain_ids, eps, C_pos, C_neg, n_traj=None) -> float:
    """FiberPO-Domain Eq. 30: ``Σ_i w^Base_i r̃^Fiber_i Â_i / (|Tj| T_τ)``."""
    x = _log_ratios(log_r)
    a = _advantages(adv, x.size)
    p = fiberpo_domain_parts(x, traj_ids, group_ids, domain_ids, eps, C_pos, C_neg)
    G = np.exp(p["log_w_base"] + p["log_r_fiber"])
    return _weighted_objective(G, a, p["T"], n_traj, int(p["traj_index"].max()) + 1)


def _onehot(index, n):
    M = np.zeros((n, index.size))
    M[index, np.arange(index.size)] = 1.0
    return M


def _two_channels(M):
    Z = np.zeros_like(M)
    return np.block([[M, Z], [Z, M]])


def fiberpo_domain_fgh(traj_ids, group_ids, domain_ids, eps, C_pos, C_neg) -> FibrationGatingHierarchy:
    """FiberPO-Domain as an FGH of depth 3 (App. E.7): ``B_0 = domains × {±1}``, ``B_1 = groups × {±1}``,
    ``B_2 = trajectories × {±1}``, ``B_3 = E = tokens × {±1}`` (each ordered channel +1 first), with

        K_0(g;l|D;l) = |Tj(g)|/|Tj(D)|,  K_1(τ;l|g;l) = 1/|Tj(g)|,  K_2(i;l|τ;l) = 1/T_τ,
        g_0(σ) = |Tj(D)| g_agg(σ/|Tj(D)|, C, T_D),  g_1(σ) = |Tj(g)| g_agg(σ/|Tj(g)|, C, T_g),
        g_2(σ) = g_agg(σ, C, T_τ),  g_3(σ) = clip(T_τ σ, ±ε)/T_τ,

    and 𝓕, 𝓡 as in :func:`fiberpo_bundle`. Budgets as in :func:`fiberpo_domain_parts`.
    """
    eps = _positive(eps, "eps")
    levels_pos = _budgets(C_pos, "C_pos", 3)
    levels_neg = _budgets(C_neg, "C_neg", 3)
    t = np.asarray(traj_ids)
    N = t.size
    ti, g_of_t, d_of_g = _hierarchy_ids(traj_ids, group_ids, domain_ids, N)
    n_t, n_g, n_d = g_of_t.size, d_of_g.size, int(d_of_g.max()) + 1
    T_t = np.bincount(ti, minlength=n_t).astype(float)
    cnt_g = np.bincount(g_of_t, minlength=n_g).astype(float)
    cnt_d = np.bincount(d_of_g, weights=cnt_g, minlength=n_d)
    T_g = np.bincount(g_of_t, weights=T_t, minlength=n_g)
    T_d = np.bincount(d_of_g, weights=T_g, minlength=n_d)
    P3, P2, P1 = (_two_channels(_onehot(ti, n_t)), _two_channels(_onehot(g_of_t, n_g)),
                  _two_channels(_onehot(d_of_g, n_d)))
    K2 = P3.T / np.concatenate([T_t[ti], T_t[ti]])[:, None]
    K1 = P2.T / np.concatenate([cnt_g[g_of_t], cnt_g[g_of_t]])[:, None]
    K0 = P1.T * (np.concatenate([cnt_g, cnt_g]) / np.concatenate([cnt_d[d_of_g], cnt_d[d_of_g]]))[:, None]
    two = np.concatenate
    C0, C1, C2 = (two([np.full(n_d, levels_pos[0]), np.full(n_d, levels_neg[0])]), two([np.full(n_g, levels_pos[1]), np.full(n_g, levels_neg[1])]),
                  two([np.full(n_t, levels_pos[2]), np.full(n_t, levels_neg[2])]))
    m_d, m_g = two([cnt_d, cnt_d]), two([cnt_g, cnt_g])
    Td2, Tg2, Tt2, T_E = two([T_d, T_d]), two([T_g, T_g]), two([T_t, T_t]), two([T_t[ti], T_t[ti]])
    gates = [lambda s: m_d * g_agg(s / m_d, C0, Td2),
             lambda s: m_g * g_agg(s / m_g, C1, Tg2),
             lambda s: g_agg(s, C2, Tt2),
             lambda s: np.clip(T_E * s, -eps, eps) / T_E]

    def F(r):
        lr = np.log(r)
        return np.concatenate([np.maximum(lr, 0.0), np.maximum(-lr, 0.0)]) / T_E

    def R(sigma):
        return np.exp(T_E[:N] * (sigma[:N] - sigma[N:]))

    return FibrationGatingHierarchy([P1, P2, P3], [K0, K1, K2], gates, F, R)


def fiberpo_fgh(traj_ids, eps, C_pos, C_neg) -> FibrationGatingHierarchy:
    """FiberPO as the depth-1 FGH (Remark 6.3): the FBG of :func:`fiberpo_bundle` written in the FGH form."""
    b = fiberpo_bundle(traj_ids, eps, C_pos, C_neg)
    return FibrationGatingHierarchy([b.pushforward], [b.kernel], [b.fbg.base_gate, b.fbg.fiber_gate], b.F, b.R)


# ----------------------------------------------------------------------------------------------------------
# regimes (§5.1, §5.2)
# ----------------------------------------------------------------------------------------------------------

GLOBAL_REGIMES = ("G-I", "G-II,r", "G-II", "G-III,r", "G-III")


def global_regime(log_s_pos, log_s_neg, C_pos, C_neg, T) -> np.ndarray:
    """§5.1's regime of ``w^base``: G-I both channels pass; G-II,r one rolls back while the other passes;
    G-II one is zeroed while the other passes; G-III,r at least one rolls back and neither passes; G-III both
    zeroed. Returned as indices into :data:`GLOBAL_REGIMES`."""
    rp = g_agg_regime(log_s_pos, C_pos, T)
    rn = g_agg_regime(log_s_neg, C_neg, T)
    lo, hi = np.minimum(rp, rn), np.maximum(rp, rn)
    return np.where(hi == PASS, 0, np.where(lo == PASS, np.where(hi == ROLLBACK, 1, 2),
                                            np.where(hi == ZERO, np.where(lo == ZERO, 4, 3), 3)))


LOCAL_REGIMES = ("L-I", "L-II", "L-III")


def local_regime(log_r, traj_ids, eps, C_pos=1.0, C_neg=1.0) -> np.ndarray:
    """§5.2's local regime per trajectory: L-I no token has ``|u_i| ≥ ε``; L-II some but not all; L-III all."""
    p = fiberpo_parts(log_r, traj_ids, eps, C_pos, C_neg)
    n = int(p.index.max()) + 1
    clipped = np.bincount(p.index, weights=(np.abs(p.u) >= eps).astype(float), minlength=n)
    T = np.bincount(p.index, minlength=n)
    return np.where(clipped == 0, 0, np.where(clipped < T, 1, 2))


# ----------------------------------------------------------------------------------------------------------
# Fig. 4: the parameterised drift r_i = 1 + t Δ̂_i (§5.3)
# ----------------------------------------------------------------------------------------------------------


def parameterised_drift(ts, delta_hat) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 4's drift path ``r_i(t) = 1 + t Δ̂_i`` for every ``t`` in ``ts``, one trajectory per ``t``.

    Returns flat ``(log_r, traj_ids)`` with trajectory ``k`` = the tokens at ``ts[k]`` (``len(delta_hat)``
    tokens each), ready for :func:`fiberpo_parts`; every ratio must stay positive (``1 + t Δ̂_i > 0``).
    """
    ts = np.atleast_1d(np.asarray(ts, dtype=float))
    d = _log_ratios(delta_hat, "delta_hat")
    if ts.ndim != 1 or not np.all(np.isfinite(ts)):
        raise ValueError("ts must be a 1-d array of finite drift parameters")
    r = 1.0 + ts[:, None] * d[None, :]
    if np.any(r <= 0):
        raise ValueError("ts leaves the positive orthant: some 1 + t Δ̂_i ≤ 0")
    return np.log(r).ravel(), np.repeat(np.arange(ts.size), d.size)


def fiberpo_log_gated_ratio_slope(log_r, traj_ids, eps, C_pos, C_neg, k=None) -> np.ndarray:
    """Eq. 7's ``log 𝒢_i`` with the rollback slope ``k`` of ``g_agg`` decoupled from ``T_τ``.

    Fig. 4 draws FiberPO with ``k = 32`` for a trajectory of ``T_τ = 10`` tokens "for illustration" (spec A15):
    ``log w^base_τ = g_agg(log s⁺_τ, C⁺, k) - g_agg(log s⁻_τ, C⁻, k)`` while the aggregates (Eq. 9) and the
    fiber residual (Eq. 16) keep their ``1/T_τ`` means. ``k = None`` is Eq. 7 itself (``k = T_τ``).
    """
    p = fiberpo_parts(log_r, traj_ids, eps, C_pos, C_neg)
    if k is None:
        return p.log_w_base + p.log_r_fiber
    k = _positive(k, "k")
    return g_agg(p.log_s_pos, C_pos, k) - g_agg(p.log_s_neg, C_neg, k) + p.log_r_fiber
