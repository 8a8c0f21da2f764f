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


# ---------------------------------------------------------------------------------------------
# lpo.entropy_redundant (LPO App. C.7)
# ---------------------------------------------------------------------------------------------
def entropy(p):
    """Shannon entropy ``H(p) = -Σ p log p`` with ``0 log 0 = 0``."""
    p = np.asarray(p, float)
    m = p > 0
    return float(-np.sum(p[m] * np.log(p[m])))


def entropy_bonus_objective(w, rewards, tau, gamma):
    """``J_γ(w) = Σ w R - τ KL(w‖1/K) + γ H(w)``: the on-policy listwise objective (Eq. 7 with ``P_t = 1/K``) plus an
    entropy bonus (App. C.7)."""
    R = np.asarray(rewards, float)
    return float(np.dot(w, R) - _tau(tau) * kl(w, np.full(R.size, 1.0 / R.size)) + float(gamma) * entropy(w))


def entropy_bonus_target(rewards, tau, gamma):
    """Closed form of the maximiser of :func:`entropy_bonus_objective`: ``softmax(R/(τ+γ))`` (App. C.7)."""
    R = _vec(rewards, "rewards")
    tau = _tau(tau)
    if not np.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be non-negative and finite, got {gamma}")
    return softmax(R / (tau + gamma))


def entropy_bonus_target_cvx(rewards, tau, gamma, solver="CLARABEL"):
    """The oracle: ``max_w Σ wR - τ Σ rel_entr(w, 1/K) + γ Σ entr(w)`` over the simplex (cvxpy). Returns ``(w, value)``."""
    R = _vec(rewards, "rewards")
    tau = _tau(tau)
    if not np.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be non-negative and finite, got {gamma}")
    K = R.size
    w = cp.Variable(K)
    obj = R @ w - tau * cp.sum(cp.rel_entr(w, np.full(K, 1.0 / K))) + gamma * cp.sum(cp.entr(w))
    prob = cp.Problem(cp.Maximize(obj), [w >= 0, cp.sum(w) == 1])
    prob.solve(solver=solver)
    if prob.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"cvxpy returned {prob.status}")
    return np.clip(w.value, 0.0, None), float(prob.value)


# ---------------------------------------------------------------------------------------------
# lpo.mode_coverage (LPO Cor. 2)
# ---------------------------------------------------------------------------------------------
def _unit(x, name):
    x = float(x)
    if not np.isfinite(x) or not (0.0 < x < 1.0):
        raise ValueError(f"{name} must lie in (0, 1), got {x}")
    return x


def _divergence_budget(D):
    D = float(D)
    if not np.isfinite(D) or D < 0:
        raise ValueError(f"D must be non-negative and finite, got {D}")
    return D


def mode_coverage_bound(alpha, D):
    """Cor. 2's lower bound ``α exp(-D/α - 1)`` on ``P_k`` when ``w*_k ≥ α`` and ``KL(w*‖P) ≤ D``."""
    alpha, D = _unit(alpha, "alpha"), _divergence_budget(D)
    return float(alpha * np.exp(-D / alpha - 1.0))


def mode_coverage_binary_bound(x, D):
    """The sharper intermediate bound of the proof, ``f(x) = x e^{-D/x} (1-x)^{(1-x)/x}``."""
    x, D = _unit(x, "x"), _divergence_budget(D)
    return float(x * np.exp(-D / x + (1 - x) / x * np.log1p(-x)))


def binary_kl(x, p):
    """``x log(x/p) + (1-x) log((1-x)/(1-p))``: KL between Bernoulli(x) and Bernoulli(p)."""
    return float(x * np.log(x / p) + (1 - x) * (np.log1p(-x) - np.log1p(-p)))


def min_mass_exact(x, D):
    """``min P_k`` over the simplex subject to ``KL(w*‖P) ≤ D`` with ``w*_k = x``: by data processing onto ``{k}``,
    ``KL(w*‖P) ≥ kl(x‖P_k)`` with equality when ``P_{-k} ∝ w*_{-k}``, so the minimum is the root ``p < x`` of
    ``kl(x‖p) = D`` (bisection with brentq; 0 never attains it since ``kl(x‖0⁺) = ∞``)."""
    from scipy.optimize import brentq
    x, D = _unit(x, "x"), _divergence_budget(D)
    if D == 0:
        return x
    lo = x * np.exp(-D / x - 1.0) * 1e-3        # below Cor. 2's bound: kl(x‖lo) > D there
    return float(brentq(lambda p: binary_kl(x, p) - D, lo, x, xtol=1e-300, rtol=4 * np.finfo(float).eps))


def min_mass_cvx(target, k, D, solver="CLARABEL"):
    """The adversary, as a convex program: ``min P_k`` s.t. ``Σ rel_entr(w*, P) ≤ D``, ``P`` on the simplex (cvxpy).
    Returns ``(min P_k, P)``."""
    w = _simplex(target, "target")
    D = _divergence_budget(D)
    if not 0 <= int(k) < w.size:
        raise ValueError(f"k must index the target (0..{w.size - 1}), got {k}")
    P = cp.Variable(w.size)
    prob = cp.Problem(cp.Minimize(P[int(k)]), [cp.sum(cp.rel_entr(w, P)) <= D, cp.sum(P) == 1, P >= 0])
    prob.solve(solver=solver)
    if prob.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"cvxpy returned {prob.status}")
    return float(prob.value), np.clip(P.value, 0.0, None)


# ---------------------------------------------------------------------------------------------
# lpo.full_space (LPO Prop. 2)
# ---------------------------------------------------------------------------------------------
def gibbs_iteration(pi0, rewards, tau, steps):
    """Iterate ``π_{t+1} ∝ π_t e^{R/τ}`` exactly over a finite response set, in log space (each step renormalised by
    logsumexp, so no mass underflows to a spurious 0). Returns ``log π_t`` for ``t = 0..steps`` as rows."""
    p0 = _simplex(pi0, "pi0")
    if np.any(p0 <= 0):
        raise ValueError("pi0 must be positive everywhere (Prop. 2's assumption)")
    R = _vec(rewards, "rewards")
    if R.shape != p0.shape:
        raise ValueError(f"rewards must have the shape of pi0 {p0.shape}, got {R.shape}")
    tau = _tau(tau)
    if int(steps) < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    out = np.empty((int(steps) + 1, p0.size))
    out[0] = np.log(p0)
    for t in range(int(steps)):
        x = out[t] + R / tau
        out[t + 1] = x - logsumexp(x)
    return out


def gibbs_closed_form(pi0, rewards, tau, t):
    """Prop. 2's closed form ``log π_t = log softmax(log π_0 + tR/τ)``."""
    return log_softmax(np.log(np.asarray(pi0, float)) + t * np.asarray(rewards, float) / _tau(tau))


def suboptimality(log_pi, rewards):
    """``max R - E_π[R] = Σ_{y ∉ argmax} π(y)(max R - R(y))``, summed term by term (no cancellation)."""
    R = np.asarray(rewards, float)
    return float(np.sum(np.exp(log_pi) * (R.max() - R)))


# ---------------------------------------------------------------------------------------------
# lpo.k2_bce (LPO App. C.5)
# ---------------------------------------------------------------------------------------------
def listwise_forward_ce(s, target):
    """``-Σ_k w*_k log softmax(s)_k``: the forward-KL loss of Eq. 10 up to the constant ``H(w*)``."""
    s = _vec(s, "s")
    w = _simplex(target, "target")
    if w.shape != s.shape:
        raise ValueError(f"target must have the shape of s {s.shape}, got {w.shape}")
    return float(-np.dot(w, log_softmax(s)))


def k2_soft_bce(s_w, s_l, tau):
    """App. C.5's soft-label BCE ``-σ(1/τ) log σ(s_w - s_l) - σ(-1/τ) log σ(s_l - s_w)`` (winner reward 1, loser 0)."""
    from scipy.special import expit, log_expit
    tau = _tau(tau)
    s_w, s_l = float(s_w), float(s_l)
    if not (np.isfinite(s_w) and np.isfinite(s_l)):
        raise ValueError("s_w and s_l must be finite")
    return float(-expit(1 / tau) * log_expit(s_w - s_l) - expit(-1 / tau) * log_expit(s_l - s_w))


# ---------------------------------------------------------------------------------------------
# lpo.off_policy_gap (LPO App. B.2, Eq. 29)
# ---------------------------------------------------------------------------------------------
def off_policy_coefficients(s, advantages):
    """Ascent-sign coefficients of ``∇_θ log π_θ(y_k|x)`` off-policy (App. B.2): ``c^PG_k = r_k A_k/K`` with
    ``r_k = e^{s_k}`` (unclipped IS-weighted PG) and ``c^revKL_k = -P_k(d_k - d̄)``, ``d = s - A`` (minus Eq. 11's
    descent coefficient toward ``softmax(A)``). Returns ``(c_pg, c_rev)``."""
    s, A = _vec(s, "s"), _vec(advantages, "advantages")
    if A.shape != s.shape:
        raise ValueError(f"advantages must have the shape of s {s.shape}, got {A.shape}")
    return np.exp(s) * A / s.size, -reverse_coefficients(s, A)


def off_policy_first_order(s, advantages):
    """The spec's first-order gap ``Δ_k ≈ (1/K)[(s_k - s̄) + s̄ A_k + (1/K) Σ_m s_m A_m]`` (valid for ``Σ A = 0``)."""
    s, A = _vec(s, "s"), _vec(advantages, "advantages")
    K = s.size
    sbar = s.mean()
    return ((s - sbar) + sbar * A + np.dot(s, A) / K) / K


def drift(s):
    """``δ̄ = max_k |r_k - 1|`` with ``r_k = e^{s_k}`` (``expm1`` keeps small drifts exact)."""
    return float(np.max(np.abs(np.expm1(_vec(s, "s")))))


# ---------------------------------------------------------------------------------------------
# lpo.pointwise_target (ambiguity A9)
# ---------------------------------------------------------------------------------------------
def pointwise_target_c4(rewards, tau, behaviour_probs):
    """App. C.4's pointwise target as printed: ``w_k ∝ π_b(y_k) e^{R_k/τ}`` on the sampled group."""
    R = _vec(rewards, "rewards")
    b = _vec(behaviour_probs, "behaviour_probs")
    if b.shape != R.shape or np.any(b <= 0):
        raise ValueError(f"behaviour_probs must be positive with the shape of rewards {R.shape}")
    return softmax(R / _tau(tau) + np.log(b))


def pointwise_coefficients(target):
    """``c^point = ∂L_point/∂s = -w*`` for ``L_point = -Σ w*_k log π_θ(y_k|x)`` (App. C.4): independent of π_θ."""
    return -_simplex(target, "target")


def snis_measure(samples, weights, n_responses):
    """The group's weighted empirical measure ``Σ_k w_k δ_{y_k}`` aggregated over a finite response set."""
    y = np.asarray(samples, int)
    w = _vec(weights, "weights")
    if y.shape != w.shape:
        raise ValueError(f"weights must have the shape of samples {y.shape}, got {w.shape}")
    return np.bincount(y, weights=w, minlength=int(n_responses))


# ---------------------------------------------------------------------------------------------
# lpo.single_response (LPO App. C.2): the K = 1 "virtual simplex"
# ---------------------------------------------------------------------------------------------
def virtual_simplex_coefficient(s, reward, baseline, tau):
    """App. C.2: one real response (listwise logit ``s``, reward ``R``) paired with a *virtual* response whose logit is
    fixed at 0 and whose reward is the batch baseline ``b``. ``P = softmax(s, 0)``, ``w* = softmax(R/τ, b/τ)``, and
    the forward coefficient of the real response is ``c = P_1 - w*_1 = σ(s) - σ((R - b)/τ)`` (Eq. 10 on the
    two-point simplex); on-policy (``s = 0``) ``c = ½ - σ((R - b)/τ)``. The virtual response carries ``-c`` but has no
    parameters, so the gradient keeps only ``c``: zero-sum is lost. Vectorised over matching arrays."""
    from scipy.special import expit
    s, R, b = (np.asarray(x, dtype=float) for x in (s, reward, baseline))
    for name, x in (("s", s), ("reward", R), ("baseline", b)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} must be finite")
    return expit(s) - expit((R - b) / _tau(tau))


# ---------------------------------------------------------------------------------------------
# lpo.target_consistency: the group target as a self-normalised importance-sampling estimate
# ---------------------------------------------------------------------------------------------
def compositions(K, M):
    """Every count vector ``n ∈ N^M`` with ``Σ n = K`` (the outcomes of a multinomial), as rows of an int array."""
    K, M = int(K), int(M)
    if K < 0 or M < 1:
        raise ValueError(f"K must be >= 0 and M >= 1, got K={K}, M={M}")
    if M == 1:
        return np.array([[K]], dtype=np.int64)
    blocks = []
    for n0 in range(K + 1):
        rest = compositions(K - n0, M - 1)
        blocks.append(np.column_stack([np.full(len(rest), n0, dtype=np.int64), rest]))
    return np.concatenate(blocks)


def density_target(pi_b, rewards, tau, pi_t=None):
    """The full-space KL-regularised target ``π* ∝ π_t e^{R/τ}`` (``π_t = π_b`` on-policy): Thm. 1 with ``K → ∞``."""
    b = _simplex(pi_b, "pi_b")
    R = _vec(rewards, "rewards")
    if R.shape != b.shape:
        raise ValueError(f"rewards must have the shape of pi_b {b.shape}, got {R.shape}")
    anchor = b if pi_t is None else _simplex(pi_t, "pi_t")
    if anchor.shape != b.shape:
        raise ValueError(f"pi_t must have the shape of pi_b {b.shape}, got {anchor.shape}")
    with np.errstate(divide="ignore"):
        return softmax(np.log(anchor) + R / _tau(tau))


def snis_group_target_exact(pi_b, rewards, K, tau=None, tau_rule=None, pi_t=None, eps=1e-6, target=None):
    """Exact law of the group target over ``K`` responses drawn from ``π_b`` on a finite response set.

    A group is a multinomial count vector ``n ~ Mult(K, π_b)``; Eq. 8 puts ``w*_k = softmax(R/τ + s_t)_k`` on the
    sampled ``y_k`` (``s_t = log π_t/π_b``), i.e. the measure ``μ_K(y) = n_y g_y/Σ_j n_j g_j`` with
    ``g = (π_t/π_b) e^{R/τ}``: a self-normalised importance-sampling (SNIS) estimate of ``π* ∝ π_t e^{R/τ}``.
    ``tau_rule="grpo"`` uses the group's population σ_G + eps as τ (its limit is π_b's σ(R) + eps); otherwise
    ``tau`` is fixed. ``target(R_group, tau, b_group)`` (default: Eq. 8's ``listwise_target`` with ``s_t``) may replace
    the group target, for a mutation. Every outcome is enumerated and weighted by its multinomial probability,
    so the moments are exact up to round-off.

    Returns a dict: ``limit`` (π*), ``bias`` (``E μ_K - π*``), ``mse`` (``E Σ_y (μ_K(y) - π*(y))²``), ``tv``
    (``E TV(μ_K, π*)``), ``outcomes``, ``prob_mass`` (Σ of the enumerated probabilities, 1 up to round-off)."""
    from scipy.special import gammaln
    b = _simplex(pi_b, "pi_b")
    R = _vec(rewards, "rewards")
    if R.shape != b.shape:
        raise ValueError(f"rewards must have the shape of pi_b {b.shape}, got {R.shape}")
    if np.any(b <= 0):
        raise ValueError("pi_b must be positive on every response")
    if int(K) != K or K < 1:
        raise ValueError(f"K must be an integer >= 1, got {K}")
    if tau_rule not in (None, "grpo"):
        raise ValueError(f"tau_rule must be None (fixed tau) or 'grpo', got {tau_rule!r}")
    st = np.zeros_like(b) if pi_t is None else np.log(_simplex(pi_t, "pi_t")) - np.log(b)
    n = compositions(int(K), b.size)
    logp = gammaln(K + 1) - gammaln(n + 1).sum(1) + n @ np.log(b)
    prob = np.exp(logp)
    if tau_rule == "grpo":
        mean = n @ R / K
        taus = np.sqrt(np.maximum(n @ (R * R) / K - mean ** 2, 0.0)) + eps
        tau_lim = float(np.sqrt(max(b @ (R * R) - (b @ R) ** 2, 0.0))) + eps
    else:
        taus = np.full(len(n), _tau(tau))
        tau_lim = _tau(tau)
    limit = density_target(b, R, tau_lim, None if pi_t is None else pi_t)
    if target is None:
        logw = R[None, :] / taus[:, None] + st[None, :]          # Eq. 8 per distinct response, times n_y copies
        logw = np.where(n > 0, logw, -np.inf)                   # unsampled responses: no weight (and no max)
        logw = logw - logw.max(1, keepdims=True)
        mu = n * np.exp(logw)
        mu /= mu.sum(1, keepdims=True)
    else:
        mu = np.empty((len(n), b.size))
        for i, (row, t) in enumerate(zip(n, taus)):
            ys = np.repeat(np.arange(b.size), row)
            mu[i] = np.bincount(ys, weights=target(R[ys], t, b[ys]), minlength=b.size)
    err = mu - limit[None, :]
    return {"limit": limit, "bias": prob @ err, "mse": float(prob @ (err ** 2).sum(1)),
            "tv": float(prob @ (0.5 * np.abs(err).sum(1))), "outcomes": len(n), "prob_mass": float(prob.sum()),
            "tau_limit": tau_lim}


def snis_asymptotics(pi_b, rewards, tau, pi_t=None):
    """Delta-method constants of the SNIS estimate ``μ_K(y)`` of ``π*(y)`` (fixed τ): with ``g = (π_t/π_b) e^{R/τ}``
    and ``m = E_{π_b} g``, ``K·Var μ_K(y) → σ_y² = E_{π_b}[g² (1{Y=y} - π*(y))²]/m²`` and ``K·(E μ_K(y) - π*(y)) →
    β_y = -E_{π_b}[g² (1{Y=y} - π*(y))]/m²``. So ``K·MSE → Σ σ_y²``, ``√K·E TV → ½√(2/π) Σ_y σ_y`` (a Gaussian's
    mean absolute value) and ``K·bias → β``. Returns ``(sigma2 per y, beta per y)``."""
    b = _simplex(pi_b, "pi_b")
    R = _vec(rewards, "rewards")
    anchor = b if pi_t is None else _simplex(pi_t, "pi_t")
    g = anchor / b * np.exp((R - R.max()) / _tau(tau))
    m = b @ g
    pstar = b * g / m
    ind = np.eye(b.size)                                        # row y: 1{Y = y} over Y
    diff = ind - pstar[:, None]                                 # [y, Y]
    sigma2 = (diff ** 2 * (b * g * g)[None, :]).sum(1) / m ** 2
    beta = -(diff * (b * g * g)[None, :]).sum(1) / m ** 2
    return sigma2, beta


# ---------------------------------------------------------------------------------------------
# lpo.inexact_projection, lpo.gradient_norm, lpo.bandit_fwd_coverage: inside one bandit iteration
# ---------------------------------------------------------------------------------------------
def bandit_inner_trace(method, config, n_seeds=32, seed=0):
    """:func:`fiberlab.numerics.lpo_bandit.simulate`, step for step (same random stream, same arithmetic, so the same
    logits bit for bit), recording what happens *inside* each iteration: per iteration ``t`` and inner step ``e``
    the listwise logits ``s`` the step sees (``s = 0`` at ``e = 0``; at ``e ≥ 1`` they are the projection reached by
    the previous ``e`` steps), the coefficients ``c``, and per iteration the group's rewards ``R``, temperature
    ``τ``, centred advantages ``A`` and the listwise logits ``s_end`` after all ``E`` steps.

    Returns a dict of arrays: ``s`` and ``c`` (S, T, E, K); ``s_end``, ``R``, ``A`` (S, T, K); ``tau`` (S, T);
    ``logits`` (S, T+1, M); ``grad_norm`` (S, T, E)."""
    from fiberlab.numerics import lpo_bandit as B
    cfg = config
    B.check_run_args(method, cfg, n_seeds)
    S, K, E, T = int(n_seeds), int(cfg.K), int(cfg.E), int(cfg.iterations)
    M = cfg.reward_vector.size
    out = {"s": np.empty((S, T, E, K)), "c": np.empty((S, T, E, K)), "s_end": np.empty((S, T, K)),
           "R": np.empty((S, T, K)), "A": np.empty((S, T, K)), "tau": np.empty((S, T)),
           "logits": np.empty((S, T + 1, M)), "grad_norm": np.empty((S, T, E))}
    out["logits"][:, 0] = np.tile(np.zeros(M) if cfg.init_logits is None else np.asarray(cfg.init_logits, float),
                                  (S, 1))
    rows = np.arange(S)[:, None]
    for step in B.bandit_steps(method, cfg, n_seeds, seed):
        if isinstance(step, B.InnerStep):
            out["s"][:, step.t, step.e], out["c"][:, step.t, step.e] = step.s, step.c
            out["grad_norm"][:, step.t, step.e] = np.linalg.norm(step.g, axis=-1)
        else:
            out["s_end"][:, step.t] = log_softmax(step.theta, axis=-1)[rows, step.y] - step.lb
            out["R"][:, step.t], out["A"][:, step.t], out["tau"][:, step.t] = step.R, step.A, step.tau
            out["logits"][:, step.t + 1] = step.theta
    return out


def projection_errors(trace, r_max="literal"):
    """Thm. 2 on every group of a :func:`bandit_inner_trace` (on-policy anchor: ``P_t = 1/K``, ``w* = softmax(A)``).

    For ``P_e = softmax(s)`` after ``e = 1..E`` inner steps: ``ε_e = TV(P_e, w*)`` (the projection error actually
    reached), ``TV_0 = TV(P_t, w*)``, ``gain = τ·[KL(w*‖P_t) + KL(P_t‖w*)]`` (= R̂(w*) - R̂(P_t), Thm. 2(a)),
    ``R_max`` (``"literal"``: ``max_k |R_k|``, the paper's ``|R_k| ≤ R_max`` at its tightest on the group;
    ``"centred"``: ``(max R - min R)/2``, Thm. 2 applied to ``R - (max R + min R)/2``, legitimate because a constant
    shift changes neither R̂ differences nor w*), ``improvement_e = R̂(P_e) - R̂(P_t)`` and the bound's slack
    ``improvement_e - (gain - 2 R_max ε_e)`` (≥ 0 always: the theorem). The *certificate* of improvement is
    ``2 R_max ε_e ≤ gain``. Arrays (S, T) or (S, T, E); ``informative`` marks groups with ``gain > 0``."""
    if r_max not in ("literal", "centred"):
        raise ValueError(f"r_max must be 'literal' or 'centred', got {r_max!r}")
    R, A, tau = trace["R"], trace["A"], trace["tau"]
    S, T, E, K = trace["s"].shape
    w = softmax(A, axis=-1)
    lw = log_softmax(A, axis=-1)
    p0 = np.full(K, 1.0 / K)
    tv0 = 0.5 * np.abs(w - p0).sum(-1)
    jeff = (w * (lw - np.log(p0))).sum(-1) + (p0 * (np.log(p0) - lw)).sum(-1)
    gain = tau * jeff
    Rhat0 = R.mean(-1)
    rmax = np.abs(R).max(-1) if r_max == "literal" else 0.5 * (R.max(-1) - R.min(-1))
    # after e steps: s seen by step e (e = 1..E-1) and s_end after the last one
    s_after = np.concatenate([trace["s"][:, :, 1:], trace["s_end"][:, :, None]], axis=2)   # (S, T, E, K)
    P = softmax(s_after, axis=-1)
    eps_e = 0.5 * np.abs(P - w[:, :, None]).sum(-1)
    improvement = (P * R[:, :, None]).sum(-1) - Rhat0[:, :, None]
    slack = improvement - (gain[:, :, None] - 2 * rmax[:, :, None] * eps_e)
    # Rhat(w*) - Rhat(P_t) computed directly, for the identity gain = τ·Jeffreys (Thm. 2(a))
    identity = np.abs((w * R).sum(-1) - Rhat0 - gain)
    return {"eps": eps_e, "tv0": tv0, "gain": gain, "rmax": rmax, "improvement": improvement, "slack": slack,
            "certified": 2 * rmax[:, :, None] * eps_e <= gain[:, :, None], "informative": gain > 0,
            "identity": identity, "P": P, "w": w}
