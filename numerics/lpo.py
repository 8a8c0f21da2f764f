"""LPO (arXiv 2605.06139 v2) in float64 NumPy, plus its target as a cvxpy program (the oracle).

Spec: ``spec/lpo.md``. Listwise logits ``s_k = log π_θ(y_k|x) - log π_b(y_k|x)`` (summed over tokens),
``P = softmax(s)`` (LPO Eq. 4); target ``w* = softmax(R/τ + s_t)`` (LPO Thm. 1); projection coefficients
``c^fwd = P - w*`` (Eq. 10) and ``c^rev = P(d - d̄)``, ``d = s - φ`` (Eq. 11). A gradient of any ``L(P_θ)`` is
``Σ_k c_k ∇_θ log π_θ(y_k|x)``.

Toy policies used by the checks:

* :class:`LogLinearPolicy`: ``π_θ = softmax(Φ θ)`` over a finite response set (rows of ``Φ`` are response
  features); ``∇_θ log π_θ(y) = Φ_y - π_θᵀ Φ`` exactly.
* :class:`UnigramTokenPolicy`: an autoregressive policy whose next-token distribution is ``softmax(θ)`` whatever the
  prefix, so ``log π_θ(y) = Σ_i log softmax(θ)_{y_i}`` is a genuine sum over tokens of varying length.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
from scipy.special import log_softmax, logsumexp, softmax


def _vec(x, name):
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or x.size < 1:
        raise ValueError(f"{name} must be a non-empty 1-d array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite")
    return x


def _simplex(p, name):
    p = _vec(p, name)
    if np.any(p < 0) or abs(p.sum() - 1.0) > 1e-9:
        raise ValueError(f"{name} must be a probability vector (non-negative, summing to 1)")
    return p


def _tau(tau):
    if not np.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau must be positive and finite, got {tau}")
    return float(tau)


def kl(p, q):
    """``D_KL(p‖q) = Σ p log(p/q)`` with ``0 log 0 = 0``."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    m = p > 0
    return float(np.sum(p[m] * (np.log(p[m]) - np.log(q[m]))))


def kl_logits(a, b):
    """``D_KL(softmax(a)‖softmax(b))`` from logits (no log of a rounded probability)."""
    la, lb = log_softmax(a), log_softmax(b)
    return float(np.sum(np.exp(la) * (la - lb)))


def tv(p, q):
    """Total variation ``1 - Σ min(p, q)`` (the event form, not computed from ``‖p - q‖₁``)."""
    return float(1.0 - np.minimum(p, q).sum())


def listwise_target(rewards, tau, s_t=None):
    """``w* = softmax(R/τ + s_t)`` (LPO Thm. 1, Eq. 8); ``s_t = 0`` on-policy."""
    R = _vec(rewards, "rewards")
    tau = _tau(tau)
    st = np.zeros_like(R) if s_t is None else _vec(s_t, "s_t")
    if st.shape != R.shape:
        raise ValueError(f"s_t must have the shape of rewards {R.shape}, got {st.shape}")
    return softmax(R / tau + st)


def proximal_objective(w, rewards, tau, p_t):
    """``Ĵ(w) = Σ w R - τ KL(w‖P_t)`` (LPO Eq. 7)."""
    return float(np.dot(w, rewards) - _tau(tau) * kl(w, p_t))


def target_cvx(rewards, tau, p_t, solver="CLARABEL"):
    """The oracle for Thm. 1: ``max_w Σ w R - τ Σ rel_entr(w, P_t)`` over the simplex, solved by cvxpy."""
    R = _vec(rewards, "rewards")
    Pt = _simplex(p_t, "p_t")
    if Pt.shape != R.shape:
        raise ValueError(f"p_t must have the shape of rewards {R.shape}, got {Pt.shape}")
    tau = _tau(tau)
    w = cp.Variable(R.size)
    prob = cp.Problem(cp.Maximize(R @ w - tau * cp.sum(cp.rel_entr(w, Pt))), [w >= 0, cp.sum(w) == 1])
    prob.solve(solver=solver)
    if prob.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"cvxpy returned {prob.status}")
    return np.clip(w.value, 0.0, None), float(prob.value)


def forward_coefficients(s, target):
    """``c^fwd = P - w*`` = ``∂ KL(w*‖softmax(s))/∂s`` (LPO Eq. 10)."""
    s = _vec(s, "s")
    return softmax(s) - np.asarray(target, float)


def reverse_coefficients(s, phi):
    """``c^rev_k = P_k (d_k - d̄)``, ``d = s - φ``, ``d̄ = Σ P d`` = ``∂ KL(softmax(s)‖softmax(φ))/∂s`` (Eq. 11)."""
    s, phi = _vec(s, "s"), _vec(phi, "phi")
    if s.shape != phi.shape:
        raise ValueError(f"phi must have the shape of s {s.shape}, got {phi.shape}")
    P = softmax(s)
    d = s - phi
    return P * (d - np.dot(P, d))


def reverse_coefficients_eq14(s, phi):
    """Eq. 14's form: ``c^rev_k = P_k [log(P_k/w*_k) - KL(P‖w*)]``."""
    lp, lw = log_softmax(s), log_softmax(phi)
    P = np.exp(lp)
    return P * ((lp - lw) - np.dot(P, lp - lw))


def general_coefficients(s, grad_P):
    """LPO App. C.6: ``c_k = P_k (∂L/∂P_k - Σ_j P_j ∂L/∂P_j)`` for any differentiable ``L(P)``."""
    P = softmax(_vec(s, "s"))
    g = np.asarray(grad_P, float)
    return P * (g - np.dot(P, g))


def fd_gradient(f, x, h):
    """Central finite differences of a scalar ``f`` at ``x`` (error ``O(h²) + O(ε/h)``)."""
    x = np.asarray(x, float)
    g = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


# ---------------------------------------------------------------------------------------------
# Implicit temperatures of group PG methods (LPO Table 1/2, App. C.3)
# ---------------------------------------------------------------------------------------------
METHODS = ("grpo", "dr_grpo", "rloo", "maxrl", "remax", "dapo", "reinforce_pp_baseline")


def group_advantages(method, rewards, baseline=None, batch=None):
    """Advantages ``A_k`` of a group as the method computes them, and the implicit ``τ`` of Table 1/2.

    ``grpo``/``dapo``: ``(R - μ_G)/σ_G``, ``τ = σ_G`` (population std, spec A4's reading; DAPO's dynamic sampling
    drops ``σ_G = 0`` groups, which are refused here); ``dr_grpo``: ``R - μ_G``, ``τ = 1``; ``rloo``: leave-one-out,
    ``τ = (K-1)/K``; ``maxrl``: ``(R - μ_G)/μ_G``, ``τ = μ_G``; ``remax``: ``R - b`` with the greedy response's reward
    ``b`` (``baseline``), ``τ = 1``; ``reinforce_pp_baseline``: ``A' = R - μ_G`` then ``(A' - μ_B')/σ_B'`` over the
    ``batch`` (a 2-d array of groups, this group among them), ``τ = σ_B'``. Returns ``(A, tau)``."""
    R = _vec(rewards, "rewards")
    K = R.size
    mu = R.mean()
    if method in ("grpo", "dapo"):
        sd = R.std()
        if sd <= 0:
            raise ValueError("rewards: sigma_G = 0 (all-equal group) has no implicit temperature")
        return (R - mu) / sd, sd
    if method == "dr_grpo":
        return R - mu, 1.0
    if method == "rloo":
        if K < 2:
            raise ValueError("rewards: RLOO needs K >= 2")
        return R - (R.sum() - R) / (K - 1), (K - 1) / K
    if method == "maxrl":
        if mu <= 0:
            raise ValueError("rewards: MaxRL needs mu_G > 0")
        return (R - mu) / mu, mu
    if method == "remax":
        if baseline is None:
            raise ValueError("baseline: ReMax needs the greedy response's reward")
        return R - float(baseline), 1.0
    if method == "reinforce_pp_baseline":
        if batch is None:
            raise ValueError("batch: REINFORCE++ w/ baseline needs the batch of groups")
        B = np.asarray(batch, float)
        if B.ndim != 2 or B.shape[1] != K:
            raise ValueError(f"batch must be 2-d with groups of size {K}, got shape {B.shape}")
        Ap = B - B.mean(axis=1, keepdims=True)
        mb, sb = Ap.mean(), Ap.std()
        if sb <= 0:
            raise ValueError("batch: sigma_B' = 0")
        return ((R - mu) - mb) / sb, sb
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


# ---------------------------------------------------------------------------------------------
# Toy policies
# ---------------------------------------------------------------------------------------------
class LogLinearPolicy:
    """``π_θ(y) = softmax(Φ θ)_y`` over ``M`` responses with features ``Φ ∈ R^{M×d}``."""

    def __init__(self, features):
        self.Phi = np.asarray(features, float)
        if self.Phi.ndim != 2:
            raise ValueError(f"features must be 2-d, got shape {self.Phi.shape}")

    def log_prob(self, theta, ys):
        return log_softmax(self.Phi @ theta)[np.asarray(ys)]

    def score(self, theta, ys):
        """``∇_θ log π_θ(y) = Φ_y - Σ_y' π_θ(y') Φ_y'``, one row per ``y``."""
        pi = softmax(self.Phi @ theta)
        return self.Phi[np.asarray(ys)] - pi @ self.Phi


class UnigramTokenPolicy:
    """Autoregressive policy with next-token distribution ``softmax(θ)`` at every position (vocabulary ``V``)."""

    def log_prob(self, theta, seqs):
        lp = log_softmax(theta)
        return np.array([lp[np.asarray(y)].sum() for y in seqs])

    def score(self, theta, seqs):
        """``∇_θ log π_θ(y) = Σ_i (e_{y_i} - softmax(θ))``."""
        pi = softmax(theta)
        out = np.zeros((len(seqs), theta.size))
        for k, y in enumerate(seqs):
            np.add.at(out[k], np.asarray(y), 1.0)
            out[k] -= len(y) * pi
        return out


def forward_projection_loglinear(features, target, solver="CLARABEL"):
    """Exact forward projection ``min_θ KL(w*‖softmax(Φθ)) = -w*ᵀΦθ + logsumexp(Φθ) + const`` (convex in θ).

    Returns ``(θ, P = softmax(Φθ))``. With a rank-deficient ``Φ`` the projection cannot reach ``w*``."""
    Phi = np.asarray(features, float)
    w = _simplex(target, "target")
    theta = cp.Variable(Phi.shape[1])
    prob = cp.Problem(cp.Minimize(-(w @ Phi) @ theta + cp.log_sum_exp(Phi @ theta)))
    prob.solve(solver=solver)
    if prob.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"cvxpy returned {prob.status}")
    return theta.value, softmax(Phi @ theta.value)


def log_partition(rewards, tau, p_t):
    """``log Ẑ = log Σ P_t e^{R/τ}`` (stable)."""
    return float(logsumexp(np.asarray(rewards) / tau, b=p_t))
