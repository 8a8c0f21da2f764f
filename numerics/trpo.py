r"""FiberPO's trust-region part in float64: exact tabular MDPs, sample-based TV-TRPO, and APC-Obj.

Spec: ``spec/fiberpo.md`` §1, §2.1-§2.8 (FiberPO, arXiv 2603.08239, App. B-D). Two families of objects:

**Exact tabular MDPs** (:class:`TabularMDP`). States ``S``, actions ``A``, transition ``P[s, a, s']``, reward
``R[s, a]``, start distribution ``μ0``, discount ``γ < 1``. Values, advantages and the discounted occupancy come from
linear solves, never from sampling:

.. math::
    V^\pi = (I - \gamma P_\pi)^{-1} r_\pi,\quad A^\pi(s,a) = R(s,a) + \gamma\,P(\cdot|s,a)\cdot V^\pi - V^\pi(s),\quad
    \rho^\pi = (I - \gamma P_\pi^\top)^{-1}\mu_0,\quad J(\pi) = \mu_0\cdot V^\pi .

``ρ^π(s) = Σ_t γ^t P(s_t = s)`` is the *unnormalised* discounted occupancy, so the paper's linear surrogate
(spec §1, FiberPO Eq. 1) is exactly

.. math::
    J^{(1)}(\theta|\theta_{old}) = J(\theta_{old}) + \mathbb E_{\tau\sim P_{\theta_{old}}}\Big[\sum_t\gamma^t
    r_{s_t,a_t}A^{\theta_{old}}_{s_t,a_t}\Big] = J(\theta_{old}) + \sum_s\rho^{old}(s)\sum_a\pi_\theta(a|s)
    A^{old}(s,a),

because ``E_{a~π_old}[r A] = Σ_a π_θ(a|s) A(s,a)``.

**Sample-based objects** (App. C-D). A batch is given per sampled state-action *pair*: ``state`` (which state the
pair belongs to), ``n`` (its multiplicity ``n_{s,a}``) and per-pair values (ratio deviation ``Δ = r - 1``,
advantage ``Â``). Per-state counts are ``T_s = Σ_a n_{s,a}`` and ``T = Σ_s T_s``. The Monte-Carlo TV estimator of
Eq. 39 has **no factor ½** (spec ambiguity A2): ``D̂_TV(s) = (1/T_s) Σ_a n_{s,a}|Δ_{s,a}|``. The exact
:func:`tv_max` below keeps the textbook ½ (Eq. 34), which is the convention of the surrogate-gap bound (Eq. 55).

The APC-Obj clip of Eq. 3 gives every token of pair ``(s, a)`` the bound
``B_{s,a} = T_s δ - Σ_{other tokens at s}|Δ| = |Δ_{s,a}| - T_s(D̂_TV(s) - δ)``; with ``clip(x, B) := clip(x, -B⁺, B⁺)``
it equals per-state soft-thresholding with ``λ_s = T_s (D̂_TV(s) - δ)⁺`` (spec §2.4).
"""

from __future__ import annotations

import dataclasses

import cvxpy as cp
import numpy as np
from scipy.optimize import linprog, minimize_scalar
from scipy.special import softmax


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def _array(x, name, ndim=None):
    x = np.asarray(x, dtype=float)
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-d, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite")
    return x


def _gamma(gamma, allow_one=False):
    if not np.isfinite(gamma) or gamma <= 0 or gamma > 1 or (gamma == 1 and not allow_one):
        raise ValueError(f"gamma must lie in (0, 1{']' if allow_one else ')'}, got {gamma}")
    return float(gamma)


def _radius(delta):
    if not np.isfinite(delta) or delta < 0:
        raise ValueError(f"delta must be non-negative and finite, got {delta}")
    return float(delta)


def _pairs(state, n, *values):
    """Validate a batch given per pair: ``state`` ids ``0..S-1`` (every id used), multiplicities ``n ≥ 1``."""
    state = np.asarray(state)
    if state.ndim != 1 or state.size == 0:
        raise ValueError(f"state must be a non-empty 1-d array of state ids, got shape {state.shape}")
    if not np.issubdtype(state.dtype, np.integer) or state.min() < 0:
        raise ValueError("state must hold non-negative integer state ids")
    if np.setdiff1d(np.arange(state.max() + 1), state).size:
        raise ValueError("state ids must be 0..S-1 with every state sampled at least once")
    n = np.asarray(n)
    if n.shape != state.shape or not np.issubdtype(n.dtype, np.integer) or np.any(n < 1):
        raise ValueError("n must be positive integer multiplicities, one per pair (same shape as state)")
    out = [state, n]
    for name, v in values:
        v = _array(v, name, ndim=1)
        if v.shape != state.shape:
            raise ValueError(f"{name} must have one entry per pair (shape {state.shape}), got {v.shape}")
        out.append(v)
    return out


def state_counts(state, n):
    """``T_s = Σ_{a ∈ X_s} n_{s,a}`` per state (notation, spec §1)."""
    state, n = _pairs(state, n)
    return np.bincount(state, weights=n).astype(float)


def _per_state_sum(state, x):
    return np.bincount(state, weights=x, minlength=int(state.max()) + 1)


# ---------------------------------------------------------------------------------------------
# Exact tabular MDPs (Eq. 1/55, Thm 2.1)
# ---------------------------------------------------------------------------------------------
def _mdp_arrays(P, R, mu0):
    """``(P, R, mu0)`` as float arrays, checked: ``P[s, a, s']`` rows on the simplex, ``R[s, a]``, ``mu0`` a
    distribution over the states. Shared by the discounted and the finite-horizon MDP."""
    P = _array(P, "P", ndim=3)
    S, A, S2 = P.shape
    if S2 != S or np.any(P < 0) or np.max(np.abs(P.sum(-1) - 1)) > 1e-12:
        raise ValueError("P must have shape (S, A, S) with rows on the probability simplex")
    R = _array(R, "R", ndim=2)
    if R.shape != (S, A):
        raise ValueError(f"R must have shape {(S, A)}, got {R.shape}")
    mu0 = _array(mu0, "mu0", ndim=1)
    if mu0.shape != (S,) or np.any(mu0 < 0) or abs(mu0.sum() - 1) > 1e-12:
        raise ValueError("mu0 must be a probability vector over the states")
    return P, R, mu0


@dataclasses.dataclass
class TabularMDP:
    """A finite discounted MDP: ``P[s, a, s']`` transition, ``R[s, a]`` reward, ``mu0`` start distribution."""

    P: np.ndarray
    R: np.ndarray
    mu0: np.ndarray
    gamma: float

    def __post_init__(self):
        self.P, self.R, self.mu0 = _mdp_arrays(self.P, self.R, self.mu0)
        self.gamma = _gamma(self.gamma)

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    def _policy(self, pi):
        pi = _array(pi, "pi", ndim=2)
        if pi.shape != self.R.shape or np.any(pi < 0) or np.max(np.abs(pi.sum(-1) - 1)) > 1e-12:
            raise ValueError(f"pi must be a policy table of shape {self.R.shape} with rows on the simplex")
        return pi

    def values(self, pi):
        """``V^π`` from the Bellman linear system ``(I - γ P_π) V = r_π``."""
        pi = self._policy(pi)
        P_pi = np.einsum("sa,sat->st", pi, self.P)
        r_pi = np.sum(pi * self.R, axis=1)
        return np.linalg.solve(np.eye(self.n_states) - self.gamma * P_pi, r_pi)

    def advantages(self, pi):
        """``A^π(s, a) = R(s, a) + γ Σ_{s'} P(s'|s, a) V^π(s') - V^π(s)``."""
        V = self.values(pi)
        return self.R + self.gamma * self.P @ V - V[:, None]

    def occupancy(self, pi):
        """Unnormalised discounted occupancy ``ρ^π(s) = Σ_t γ^t P(s_t = s)``: ``(I - γ P_π)ᵀ ρ = μ0``."""
        pi = self._policy(pi)
        P_pi = np.einsum("sa,sat->st", pi, self.P)
        return np.linalg.solve((np.eye(self.n_states) - self.gamma * P_pi).T, self.mu0)

    def J(self, pi):
        """``J(π) = E[Σ_t γ^t R(s_t, a_t)] = μ0 · V^π``."""
        return float(self.mu0 @ self.values(pi))

    def linear_surrogate(self, pi, pi_old):
        """FiberPO's ``J^(1)(θ|θ_old) = J(θ_old) + Σ_s ρ^{old}(s) Σ_a π_θ(a|s) A^{old}(s, a)`` (Eq. 1; spec §1).

        The occupancy and advantages are the *old* policy's: the surrogate is the first-order expansion of J
        around ``θ_old`` (it matches J and ∇J there)."""
        pi = self._policy(pi)
        return self.J(pi_old) + float(self.occupancy(pi_old) @ np.sum(pi * self.advantages(pi_old), axis=1))

    def gap_coefficient(self, pi_old):
        """``4γ‖A^{old}‖_∞/(1-γ)²``, the coefficient of ``(D^max_TV)²`` in Eq. 1/55."""
        return 4 * self.gamma * float(np.max(np.abs(self.advantages(pi_old)))) / (1 - self.gamma) ** 2


def random_mdp(rng, n_states, n_actions, gamma, reward_scale=1.0, concentration=1.0):
    """A random MDP: Dirichlet(``concentration``) transition rows and start, Gaussian rewards."""
    if n_states < 1 or n_actions < 1:
        raise ValueError("n_states and n_actions must be positive")
    P = rng.dirichlet(np.full(n_states, concentration), size=(n_states, n_actions))
    R = rng.normal(size=(n_states, n_actions)) * reward_scale
    mu0 = rng.dirichlet(np.ones(n_states))
    return TabularMDP(P, R, mu0, gamma)


def tabular_softmax(theta):
    """``π_θ(a|s) = softmax(θ[s, :])_a`` (the logits parametrisation of spec §1)."""
    theta = _array(theta, "theta", ndim=2)
    return softmax(theta, axis=1)


def tv_per_state(pi_old, pi):
    """Exact ``D_TV(s) = ½ Σ_a |π_old(a|s) - π(a|s)|`` (Eq. 34, *with* ½; spec A2)."""
    pi_old, pi = _array(pi_old, "pi_old", ndim=2), _array(pi, "pi", ndim=2)
    if pi_old.shape != pi.shape:
        raise ValueError(f"pi must have the shape of pi_old {pi_old.shape}, got {pi.shape}")
    return 0.5 * np.sum(np.abs(pi_old - pi), axis=1)


def tv_max(pi_old, pi):
    """``D^max_TV = max_s D_TV(s)`` (with ½)."""
    return float(np.max(tv_per_state(pi_old, pi)))


def kl_max(pi_old, pi):
    """``D^max_KL = max_s Σ_a π_old log(π_old/π)`` (Def. B.1)."""
    pi_old, pi = _array(pi_old, "pi_old", ndim=2), _array(pi, "pi", ndim=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pi_old > 0, pi_old * (np.log(pi_old) - np.log(pi)), 0.0)
    return float(np.max(terms.sum(axis=1)))


def delta_trpo(gamma):
    """``δ^(TRPO) = (1-γ)/(8γ)`` (Eq. 76); 0 at ``γ = 1``."""
    gamma = _gamma(gamma, allow_one=True)
    return (1 - gamma) / (8 * gamma)


# ---------------------------------------------------------------------------------------------
# APC-Obj (Def. 3.2/C.1, Eq. 3) and its regimes (App. C.2)
# ---------------------------------------------------------------------------------------------
def tv_hat(state, n, dev):
    """``D̂_TV(s) = (1/T_s) Σ_a n_{s,a}|Δ_{s,a}|`` (Eq. 39; no ½, spec A2), one value per state."""
    state, n, dev = _pairs(state, n, ("dev", dev))
    return _per_state_sum(state, n * np.abs(dev)) / _per_state_sum(state, n)


def apc_clip_bound(state, n, dev, delta):
    """Eq. 3's bound per pair: ``B = T_s δ - Σ_{other tokens at s}|Δ|``; the other tokens include the
    ``n_{s,a} - 1`` other copies of the same pair."""
    state, n, dev = _pairs(state, n, ("dev", dev))
    delta = _radius(delta)
    T_s = _per_state_sum(state, n)
    used = _per_state_sum(state, n * np.abs(dev))
    return T_s[state] * delta - (used[state] - np.abs(dev))


def apc_clip(state, n, dev, delta):
    """``clip(Δ, B) = clip(Δ, -B⁺, B⁺)`` of Eq. 3 (spec §1 convention), computed from the bound as written."""
    B = np.maximum(apc_clip_bound(state, n, dev, delta), 0.0)
    return np.clip(np.asarray(dev, float), -B, B)


def soft_threshold(state, n, dev, delta):
    """Per-state soft-thresholding ``sign(Δ) max(|Δ| - λ_s, 0)``, ``λ_s = T_s (D̂_TV(s) - δ)⁺`` (spec §2.4)."""
    state, n, dev = _pairs(state, n, ("dev", dev))
    lam = _per_state_sum(state, n) * np.maximum(tv_hat(state, n, dev) - _radius(delta), 0.0)
    return np.sign(dev) * np.maximum(np.abs(dev) - lam[state], 0.0)


#: Regime labels of App. C.2: pass-through, rollback, zeroed.
PASS, ROLLBACK, ZEROED = "P", "R", "Z"


def apc_regimes(state, n, dev, delta):
    """App. C.2's regime of every pair, from the paper's conditions (not from the clip):
    (P) ``D̂_TV(s) ≤ δ``; (R) ``D̂_TV(s) > δ`` and ``|Δ|/T_s > D̂_TV(s) - δ``; (Z) otherwise."""
    state, n, dev = _pairs(state, n, ("dev", dev))
    delta = _radius(delta)
    D = tv_hat(state, n, dev)[state]
    T_s = _per_state_sum(state, n)[state]
    return np.where(D <= delta, PASS, np.where(np.abs(dev) / T_s > D - delta, ROLLBACK, ZEROED))


def apc_objective(state, n, dev, adv, delta):
    """``Ĵ^{APC-Obj} = (1/T) Σ_tokens [clip(Δ, B) Â + Â]`` (Eq. 3), summing the ``n`` identical tokens of a pair."""
    state, n, dev, adv = _pairs(state, n, ("dev", dev), ("adv", adv))
    return float(np.sum(n * (apc_clip(state, n, dev, delta) + 1.0) * adv) / n.sum())


def weighted_apc_objective(state, n, dev, adv, delta, Gamma_s, gamma):
    """Surrogated APC-Obj ``j^(APC)(Δ, δ)`` of Def. D.5 / Eq. 74 (with its centring correction ``C(Δ)_s``)."""
    state, n, dev, adv = _pairs(state, n, ("dev", dev), ("adv", adv))
    w = _state_weights(state, n, Gamma_s, gamma)
    g = apc_clip(state, n, dev, delta)
    C = _per_state_sum(state, n * g) / _per_state_sum(state, n)
    return float(np.sum(w[state] * n * (g * adv + (1 - C[state]) * adv)))


def retraction(state, n, u, delta):
    """Def. D.8: ``G(u) = clip(u, T_s(δ - D̂_TV(s, u)) + |u|)`` followed by the centred projection
    ``proj(g) = g - C(g)_s``, ``C(g)_s = (1/T_s) Σ_a n g``."""
    state, n, u = _pairs(state, n, ("u", u))
    delta = _radius(delta)
    T_s = _per_state_sum(state, n)
    B = np.maximum(T_s[state] * (delta - tv_hat(state, n, u)[state]) + np.abs(u), 0.0)
    g = np.clip(u, -B, B)
    return g - (_per_state_sum(state, n * g) / T_s)[state]


# ---------------------------------------------------------------------------------------------
# Sample-based TV-TRPO (Def. D.1, Lemma D.2, Thm D.3)
# ---------------------------------------------------------------------------------------------
def _state_weights(state, n, Gamma_s, gamma):
    """``Γ(s)/((1-γ) Γ T_s)``: the weight of ``Σ_a n Δ Â`` at state s in Eq. 68."""
    gamma = _gamma(gamma)
    S = int(state.max()) + 1
    Gamma_s = _array(Gamma_s, "Gamma_s", ndim=1)
    if Gamma_s.shape != (S,) or np.any(Gamma_s <= 0):
        raise ValueError(f"Gamma_s must hold one positive weight per state ({S}), got shape {Gamma_s.shape}")
    return Gamma_s / ((1 - gamma) * Gamma_s.sum() * _per_state_sum(state, n))


def tvtrpo_coefficient(adv, gamma):
    """``c = 4γ‖Â‖_∞/(1-γ)²``, the penalty coefficient in Eq. 68."""
    adv = _array(adv, "adv", ndim=1)
    gamma = _gamma(gamma)
    return 4 * gamma * float(np.max(np.abs(adv))) / (1 - gamma) ** 2


def tvtrpo_objective(state, n, dev, adv, Gamma_s, gamma):
    """Reduced sample-based TV-TRPO objective ``j(Δ)`` of Eq. 68."""
    state, n, dev, adv = _pairs(state, n, ("dev", dev), ("adv", adv))
    w = _state_weights(state, n, Gamma_s, gamma)
    lin = float(np.sum(w[state] * n * dev * adv))
    return lin - tvtrpo_coefficient(adv, gamma) * float(np.max(tv_hat(state, n, dev))) ** 2


def unit_tv_maximiser(state, n, adv):
    """Per-state unit-TV maximiser ``Δ̂*`` of Eq. 69 and its value ``M(s)`` in closed form (Lemma D.2 proof):
    mass ``+T_s/2`` on ``argmax_a Â`` and ``-T_s/2`` on ``argmin_a Â``, so ``M(s) = T_s (max Â - min Â)/2``.

    Assumes the arg max and arg min are unique in every state where they differ (ties are a null set for continuous
    advantages; with ties the min-L2 tie-break would spread the mass). Returns ``(Δ̂*, M(s))``."""
    state, n, adv = _pairs(state, n, ("adv", adv))
    S = int(state.max()) + 1
    T_s = _per_state_sum(state, n)
    unit = np.zeros_like(adv)
    M_s = np.zeros(S)
    for s in range(S):
        idx = np.flatnonzero(state == s)
        hi, lo = idx[np.argmax(adv[idx])], idx[np.argmin(adv[idx])]
        if adv[hi] == adv[lo]:
            continue                  # M(s) = 0: every feasible direction has value 0; min-L2 picks Δ = 0
        unit[hi] = T_s[s] / (2 * n[hi])
        unit[lo] = -T_s[s] / (2 * n[lo])
        M_s[s] = T_s[s] * (adv[hi] - adv[lo]) / 2
    return unit, M_s


def tvtrpo_closed_form(state, n, adv, Gamma_s, gamma):
    """Thm D.3: ``M = Σ_s (Γ(s)/Γ) M(s)/T_s``, ``t* = (1-γ) M/(8γ‖Â‖_∞)``, maximiser ``Δ* = t* Δ̂*``.

    Returns ``(t*, M, Δ*)``; ``t*`` is App. D.4's ``δ^(APC-Obj)``."""
    state, n, adv = _pairs(state, n, ("adv", adv))
    gamma = _gamma(gamma)
    unit, M_s = unit_tv_maximiser(state, n, adv)
    Gamma_s = _array(Gamma_s, "Gamma_s", ndim=1)
    _state_weights(state, n, Gamma_s, gamma)           # validates Gamma_s
    M = float(np.sum(Gamma_s / Gamma_s.sum() * M_s / _per_state_sum(state, n)))
    t_star = (1 - gamma) * M / (8 * gamma * float(np.max(np.abs(adv))))
    return t_star, M, t_star * unit


def delta_apc_main_text(state, n, adv, Gamma_s, gamma):
    """Def. 3.2/C.1's radius ``(1-γ)² M/(8γ‖Â‖_∞ T)`` (spec A1; the proofs use App. D.4's ``t*`` instead)."""
    _, M, _ = tvtrpo_closed_form(state, n, adv, Gamma_s, gamma)
    n = np.asarray(n)
    return (1 - gamma) ** 2 * M / (8 * gamma * float(np.max(np.abs(adv))) * float(n.sum()))


def _centred_mask(centred, S):
    """``centred`` as one flag per state: ``True``/``False`` for all states, or a boolean array of length S."""
    mask = np.broadcast_to(np.asarray(centred, dtype=bool), (S,)) if np.ndim(centred) == 0 else \
        np.asarray(centred, dtype=bool)
    if mask.shape != (S,):
        raise ValueError(f"centred must be a bool or one bool per state ({S}), got shape {mask.shape}")
    return mask


def tvtrpo_lp_value(state, n, adv, Gamma_s, gamma, t, centred=True):
    """``LP(t) = max Σ_s w_s Σ_a n Δ Â`` s.t. ``D̂_TV(s, Δ) ≤ t`` (and ``Σ_a n Δ = 0`` if ``centred``), by scipy's
    HiGHS with ``Δ = Δ⁺ - Δ⁻``. ``centred`` may be one flag per state (where the probability
    constraint (65) is imposed). Returns ``(value, Δ)``."""
    state, n, adv = _pairs(state, n, ("adv", adv))
    w = _state_weights(state, n, Gamma_s, gamma)
    S, Pn = int(state.max()) + 1, state.size
    T_s = _per_state_sum(state, n)
    c = w[state] * n * adv
    cost = np.concatenate([-c, c])                        # minimise -(lin(Δ⁺) - lin(Δ⁻))
    E = np.zeros((S, Pn))
    E[state, np.arange(Pn)] = n / T_s[state]
    A_ub, b_ub = np.hstack([E, E]), np.full(S, float(t))
    kw = {}
    mask = _centred_mask(centred, S)
    if mask.any():
        kw = dict(A_eq=np.hstack([E, -E])[mask], b_eq=np.zeros(int(mask.sum())))
    res = linprog(cost, A_ub=A_ub, b_ub=b_ub, bounds=(0, None), method="highs", **kw)
    if res.status != 0:
        raise RuntimeError(f"linprog failed: {res.message}")
    return -float(res.fun), res.x[:Pn] - res.x[Pn:]


def tvtrpo_linprog(state, n, adv, Gamma_s, gamma, centred=True, xatol=1e-12):
    """Maximise ``LP(t)/1 - c t²`` over ``t`` by bounded Brent search, one HiGHS LP per evaluation (no use of
    the linearity of ``LP`` in ``t``). Returns ``(t, value, Δ)``."""
    adv = _array(adv, "adv", ndim=1)
    c = tvtrpo_coefficient(adv, gamma)
    t_hi = (1 - gamma) / (8 * gamma) * 4           # ≥ 4 δ^(TRPO) ≥ 4 t* by Lemma D.2 (with or without centring)
    f = lambda t: -(tvtrpo_lp_value(state, n, adv, Gamma_s, gamma, t, centred)[0] - c * t * t)  # noqa: E731
    res = minimize_scalar(f, bounds=(0.0, t_hi), method="bounded", options={"xatol": xatol})
    value, dev = tvtrpo_lp_value(state, n, adv, Gamma_s, gamma, res.x, centred)
    return float(res.x), value - c * res.x ** 2, dev


def tvtrpo_cvx(state, n, adv, Gamma_s, gamma, centred=True, solver="CLARABEL"):
    """Eq. 68 as a convex program (epigraph form): maximise ``Σ_s w_s Σ_a n Δ Â - c t²`` subject to
    ``(1/T_s) Σ_a n|Δ| ≤ t`` and, where ``centred`` (a flag, or one per state), the probability constraint
    ``Σ_a n Δ = 0`` (Eq. 65).
    Returns ``(t, value, Δ)``."""
    state, n, adv = _pairs(state, n, ("adv", adv))
    w = _state_weights(state, n, Gamma_s, gamma)
    S = int(state.max()) + 1
    T_s = _per_state_sum(state, n)
    E = np.zeros((S, state.size))
    E[state, np.arange(state.size)] = n
    d, t = cp.Variable(state.size), cp.Variable()
    cons = [E @ cp.abs(d) <= T_s * t]
    mask = _centred_mask(centred, S)
    if mask.any():
        cons.append(E[mask] @ d == 0)
    prob = cp.Problem(cp.Maximize((w[state] * n * adv) @ d - tvtrpo_coefficient(adv, gamma) * cp.square(t)), cons)
    prob.solve(solver=solver)
    if prob.status != cp.OPTIMAL:
        raise RuntimeError(f"cvxpy status {prob.status}")
    return float(t.value), float(prob.value), np.asarray(d.value, float)


# ---------------------------------------------------------------------------------------------
# Random sample batches
# ---------------------------------------------------------------------------------------------
def random_batch(rng, n_states, max_actions=4, max_count=4, centred=True):
    """A random batch: every state has 2..``max_actions`` sampled actions with multiplicities 1..``max_count``,
    Gaussian advantages centred per state when ``centred`` (Eq. 66), and positive weights ``Γ(s)``.
    Returns ``(state, n, adv, Gamma_s)``."""
    k = rng.integers(2, max_actions + 1, size=n_states)
    state = np.repeat(np.arange(n_states), k)
    n = rng.integers(1, max_count + 1, size=state.size)
    adv = rng.normal(size=state.size)
    if centred:
        adv = centre(state, n, adv)
    Gamma_s = rng.uniform(0.2, 3.0, size=n_states)
    return state, n, adv, Gamma_s


def centre(state, n, x):
    """``x - (1/T_s) Σ_a n x`` per state: makes ``Σ_a n_{s,a} x_{s,a} = 0`` (Eqs. 65, 66)."""
    state, n, x = _pairs(state, n, ("x", x))
    return x - (_per_state_sum(state, n * x) / _per_state_sum(state, n))[state]


# ---------------------------------------------------------------------------------------------
# Trajectory-level objectives (App. C.4-C.6): GRPO, GSPO and GSPO's relaxation step (3), without the min
# ---------------------------------------------------------------------------------------------
def _trajectories(log_r, mask, adv):
    log_r = _array(log_r, "log_r", ndim=2)
    mask = np.asarray(mask)
    if mask.shape != log_r.shape or not np.all((mask == 0) | (mask == 1)):
        raise ValueError(f"mask must be a 0/1 array of the shape of log_r {log_r.shape}")
    mask = mask.astype(bool)
    lengths = mask.sum(axis=1)
    if np.any(lengths == 0):
        raise ValueError("mask must leave at least one token in every trajectory")
    adv = _array(adv, "adv", ndim=1)
    if adv.shape != (log_r.shape[0],):
        raise ValueError(f"adv must hold one advantage per trajectory ({log_r.shape[0]}), got {adv.shape}")
    return np.where(mask, log_r, 0.0), mask, lengths.astype(float), adv


def grpo_objective(log_r, mask, adv, eps):
    """GRPO without the min (App. C.5): ``Σ_τ Σ_t (1/(|Tj| T_τ)) clip(r_t, 1 ± ε) Â_τ``."""
    log_r, mask, L, adv = _trajectories(log_r, mask, adv)
    _radius(eps)
    term = np.where(mask, np.clip(np.exp(log_r), 1 - eps, 1 + eps), 0.0).sum(axis=1) / L
    return float(np.mean(term * adv))


def token_mean_objective(log_r, mask, adv, eps):
    """PPO-style token mean ``(1/T) Σ_tokens clip(r, 1 ± ε) Â_τ`` (APC-Obj's weights ``μ = 1/T``)."""
    log_r, mask, L, adv = _trajectories(log_r, mask, adv)
    _radius(eps)
    term = np.where(mask, np.clip(np.exp(log_r), 1 - eps, 1 + eps), 0.0).sum(axis=1)
    return float(np.sum(term * adv) / L.sum())


def gspo_objective(log_r, mask, adv, eps):
    """GSPO without the min (App. C.4-C.5): ``Σ_τ (1/|Tj|) clip(s_τ, 1 ± ε) Â_τ``, ``s_τ = exp(mean_t log r_t)``."""
    log_r, mask, L, adv = _trajectories(log_r, mask, adv)
    _radius(eps)
    s = np.exp(log_r.sum(axis=1) / L)
    return float(np.mean(np.clip(s, 1 - eps, 1 + eps) * adv))


def gspo_relaxation_step3(log_r, mask, adv, delta_seq):
    """GSPO's relaxation after steps (1)-(3) of App. C.5: the trajectory-coupled log-ratio clip
    ``Σ_τ Σ_t (1/(|Tj| T_τ)) [clip(log r_t, T_τ δ - Σ_{t'≠t}|log r_t'|) + 1] Â_τ`` (budget per trajectory)."""
    log_r, mask, L, adv = _trajectories(log_r, mask, adv)
    _radius(delta_seq)
    used = np.abs(log_r).sum(axis=1, keepdims=True)
    B = np.maximum(L[:, None] * delta_seq - (used - np.abs(log_r)), 0.0)
    term = np.where(mask, np.clip(log_r, -B, B) + 1.0, 0.0).sum(axis=1) / L
    return float(np.mean(term * adv))


def random_chain(rng, length, n_actions, drift, logit_scale=1.5):
    """Old and new next-token distributions at ``length`` positions (each position its own state, as for LLM
    prefixes): logits ``z_old ~ N(0, logit_scale²)``, ``z = z_old + N(0, drift²)``. Returns ``(π_old, π)``."""
    if length < 1 or n_actions < 2:
        raise ValueError("length must be ≥ 1 and n_actions ≥ 2")
    if not np.isfinite(drift) or drift < 0:
        raise ValueError(f"drift must be non-negative, got {drift}")
    z_old = rng.normal(size=(length, n_actions)) * logit_scale
    z = z_old + rng.normal(size=(length, n_actions)) * drift
    return softmax(z_old, axis=1), softmax(z, axis=1)


def sample_actions(rng, pi_old, n_traj):
    """``n_traj`` action sequences sampled from ``π_old`` (one row per trajectory)."""
    pi_old = _array(pi_old, "pi_old", ndim=2)
    u = rng.random((n_traj, pi_old.shape[0], 1))
    return np.minimum((u > np.cumsum(pi_old, axis=1)[None]).sum(-1), pi_old.shape[1] - 1)


# ---------------------------------------------------------------------------------------------
# Finite-horizon undiscounted MDPs (γ = 1): what holds where Thm 2.1's discounted radius is 0
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FiniteHorizonMDP:
    """An undiscounted MDP with horizon ``H`` (steps ``t = 0..H-1``, ``γ = 1``) and a stationary policy table.

    Values and advantages are time-indexed and come from backward induction, state distributions from forward
    propagation; nothing is sampled:

    .. math::
        V_H = 0,\\quad Q_t(s,a) = R(s,a) + P(\\cdot|s,a)\\cdot V_{t+1},\\quad V_t(s) = \\sum_a\\pi(a|s)Q_t(s,a),\\quad
        A_t = Q_t - V_t,\\quad d_{t+1} = d_t P_\\pi,\\ d_0 = \\mu_0 .

    The linear surrogate is the γ = 1 form of Eq. 1 on θ_old's state distributions,
    ``J^(1)(π|π_old) = J(π_old) + Σ_t d^{old}_t · Σ_a π(a|·) A^{old}_t(·, a)``. An absorbing zero-reward state models
    an end-of-sequence token (random lengths)."""

    P: np.ndarray
    R: np.ndarray
    mu0: np.ndarray
    H: int

    def __post_init__(self):
        self.P, self.R, self.mu0 = _mdp_arrays(self.P, self.R, self.mu0)
        if int(self.H) != self.H or self.H < 1:
            raise ValueError(f"H must be a positive integer horizon, got {self.H}")
        self.H = int(self.H)

    def _policy(self, pi):
        pi = _array(pi, "pi", ndim=2)
        if pi.shape != self.R.shape or np.any(pi < 0) or np.max(np.abs(pi.sum(-1) - 1)) > 1e-12:
            raise ValueError(f"pi must be a policy table of shape {self.R.shape} with rows on the simplex")
        return pi

    def q_values(self, pi):
        """``(V[t, s], Q[t, s, a])`` for ``t = 0..H-1`` by backward induction (``V[H] = 0``)."""
        pi = self._policy(pi)
        S, A = self.R.shape
        V, Q = np.zeros((self.H + 1, S)), np.zeros((self.H, S, A))
        for t in range(self.H - 1, -1, -1):
            Q[t] = self.R + self.P @ V[t + 1]
            V[t] = np.sum(pi * Q[t], axis=1)
        return V[:-1], Q

    def advantages(self, pi):
        """Time-indexed ``A_t(s, a) = Q_t(s, a) - V_t(s)``, shape ``(H, S, A)``."""
        V, Q = self.q_values(pi)
        return Q - V[:, :, None]

    def state_dists(self, pi):
        """``d_t(s) = P(s_t = s)`` for ``t = 0..H-1``, shape ``(H, S)``."""
        pi = self._policy(pi)
        P_pi = np.einsum("sa,sat->st", pi, self.P)
        d = np.zeros((self.H, self.R.shape[0]))
        d[0] = self.mu0
        for t in range(1, self.H):
            d[t] = d[t - 1] @ P_pi
        return d

    def J(self, pi):
        """``J(π) = E[Σ_{t<H} R(s_t, a_t)] = μ0 · V_0``."""
        return float(self.mu0 @ self.q_values(pi)[0][0])

    def linear_surrogate(self, pi, pi_old):
        """``J^(1)(π|π_old) = J(π_old) + Σ_t d^{old}_t · Σ_a π A^{old}_t`` (Eq. 1 at γ = 1, finite horizon)."""
        pi = self._policy(pi)
        A, d = self.advantages(pi_old), self.state_dists(pi_old)
        return self.J(pi_old) + float(np.sum(d * np.sum(pi[None] * A, axis=2)))

    def gap_coefficient(self, pi_old):
        """``2H(H-1)‖A^{old}‖_∞`` with ``‖A‖_∞ = max_{t,s,a}|A_t(s, a)|``: the finite-horizon coefficient of
        ``(D^max_TV)²`` (½-TV) — TRPO's coupling argument with ``Σ_{t<H} t = H(H-1)/2`` in place of
        ``Σ_t γ^t t = γ/(1-γ)²`` (see :func:`fiberlab.theory.trpo.finite_horizon_coefficient`)."""
        return 2.0 * self.H * (self.H - 1) * float(np.max(np.abs(self.advantages(pi_old))))

    def tv_trpo_step(self, pi_old, coefficient=None, solver="CLARABEL"):
        """Maximise the finite-horizon minoriser ``J^(1)(π|π_old) - c (D^max_TV)²`` over policy tables with cvxpy
        (epigraph: ``½ Σ_a |π - π_old| ≤ α`` at every state; ``c`` defaults to :meth:`gap_coefficient`).
        Returns ``(π_new, α, minoriser value)``; by Eq. 55's finite-horizon form ``J(π_new) ≥`` the value."""
        pi_old = self._policy(pi_old)
        c = self.gap_coefficient(pi_old) if coefficient is None else float(coefficient)
        w = np.sum(self.state_dists(pi_old)[:, :, None] * self.advantages(pi_old), axis=0)   # Σ_t d_t(s) A_t(s,a)
        pi, alpha = cp.Variable(pi_old.shape), cp.Variable()
        cons = [pi >= 0, cp.sum(pi, axis=1) == 1, 0.5 * cp.sum(cp.abs(pi - pi_old), axis=1) <= alpha]
        prob = cp.Problem(cp.Maximize(cp.sum(cp.multiply(w, pi)) - c * cp.square(alpha)), cons)
        prob.solve(solver=solver)
        if prob.status != cp.OPTIMAL:
            raise RuntimeError(f"cvxpy status {prob.status}")
        pi_new = np.clip(np.asarray(pi.value, float), 0.0, None)
        pi_new /= pi_new.sum(axis=1, keepdims=True)
        return pi_new, float(alpha.value), self.J(pi_old) + float(prob.value)


def random_finite_horizon_mdp(rng, n_states, n_actions, H, reward_scale=1.0, concentration=1.0, absorbing=False):
    """A random finite-horizon MDP: Dirichlet transition rows and start, Gaussian rewards. With ``absorbing`` the
    last state is a zero-reward sink (an end-of-sequence state) that every other state can reach."""
    if n_states < 1 or n_actions < 1:
        raise ValueError("n_states and n_actions must be positive")
    P = rng.dirichlet(np.full(n_states, concentration), size=(n_states, n_actions))
    R = rng.normal(size=(n_states, n_actions)) * reward_scale
    mu0 = rng.dirichlet(np.ones(n_states))
    if absorbing and n_states > 1:
        P[-1] = 0.0
        P[-1, :, -1] = 1.0
        R[-1] = 0.0
        mu0[-1] = 0.0
        mu0 /= mu0.sum()
    return FiniteHorizonMDP(P, R, mu0, H)


# ---------------------------------------------------------------------------------------------
# Population forms of Eq. 56 and Eq. 68 (the factor ½ of spec A2) on a discounted tabular MDP
# ---------------------------------------------------------------------------------------------
def population_tvtrpo(mdp, pi_old, tv_scale, solver="CLARABEL"):
    """Maximise ``Σ_s ρ^{old}(s) Σ_a π_old Δ A^{old} - c (max_s tv_scale·Σ_a π_old|Δ|)²`` over ratio deviations ``Δ``
    with ``Σ_a π_old Δ = 0`` and ``1 + Δ ≥ 0`` (cvxpy), ``c = 4γ‖A‖∞/(1-γ)²``.

    ``tv_scale = ½`` is Eq. 56 exactly (the linear term is ``J^(1) - J(π_old)``, and ``½ Σ π_old|Δ|`` is Eq. 37's
    D_TV); ``tv_scale = 1`` is Eq. 68 in the population limit (``n/T_s → π_old``, ``Γ(s)/Γ → (1-γ)ρ(s)``,
    ``Â → A``), whose penalty uses Eq. 39's estimator without ½. Returns ``(Δ, t, value)`` with
    ``t = max_s Σ_a π_old|Δ|`` (the level in Eq. 39's units, ``= 2 D^max_TV``)."""
    pi_old = mdp._policy(pi_old)
    A, rho = mdp.advantages(pi_old), mdp.occupancy(pi_old)
    c = mdp.gap_coefficient(pi_old)
    d, t = cp.Variable(pi_old.shape), cp.Variable()
    cons = [cp.sum(cp.multiply(pi_old, cp.abs(d)), axis=1) <= t, cp.sum(cp.multiply(pi_old, d), axis=1) == 0,
            d >= -1]
    lin = cp.sum(cp.multiply(rho[:, None] * pi_old * A, d))
    prob = cp.Problem(cp.Maximize(lin - c * cp.square(tv_scale * t)), cons)
    prob.solve(solver=solver)
    if prob.status != cp.OPTIMAL:
        raise RuntimeError(f"cvxpy status {prob.status}")
    dev = np.asarray(d.value, float)
    return dev, float(np.max(np.sum(pi_old * np.abs(dev), axis=1))), float(prob.value)


def population_t_star(mdp, pi_old):
    """Thm D.3's ``t* = (1-γ)M/(8γ‖A‖∞)`` in the population limit: ``M = Σ_s d(s)(max_a A - min_a A)/2`` with the
    normalised occupancy ``d = (1-γ)ρ`` (Eq. 68's ``Γ(s)/Γ``) and every action present. Returns ``(t*, M)``."""
    pi_old = mdp._policy(pi_old)
    A, rho = mdp.advantages(pi_old), mdp.occupancy(pi_old)
    g = mdp.gamma
    M = float(np.sum((1 - g) * rho * (A.max(axis=1) - A.min(axis=1)) / 2))
    return (1 - g) * M / (8 * g * float(np.max(np.abs(A)))), M


def expected_tv_hat(pi_old_row, dev_row, T_s):
    """Exact ``E[D̂_TV(s)]`` of Eq. 39 over all multinomial samples of ``T_s`` actions from ``π_old(·|s)``
    (enumerated), for a ratio deviation ``Δ`` over the action set. Equals ``Σ_a π_old|Δ| = 2 D_TV(s)``."""
    from itertools import product
    p, dev = _array(pi_old_row, "pi_old_row", ndim=1), _array(dev_row, "dev_row", ndim=1)
    total = 0.0
    for draw in product(range(p.size), repeat=int(T_s)):
        total += float(np.prod(p[list(draw)])) * float(np.mean(np.abs(dev[list(draw)])))
    return total


def lifted_policy(pi_old, state_of_pair, action_of_pair, dev):
    """The policy an update defines from ratio deviations on sampled pairs (complete parametrisation):
    ``π(a|s) ∝ π_old(a|s)(1 + Δ_{s,a})`` on sampled actions, ``π_old(a|s)`` on unsampled ones, renormalised per
    state (the exact probability constraint ``Σ_a π_old Δ = 0`` is not (65)'s ``Σ_a n Δ = 0``)."""
    pi_old = _array(pi_old, "pi_old", ndim=2)
    ratio = np.ones_like(pi_old)
    ratio[np.asarray(state_of_pair), np.asarray(action_of_pair)] = 1.0 + _array(dev, "dev", ndim=1)
    if np.any(ratio < 0):
        raise ValueError("dev must keep every ratio 1 + Δ non-negative")
    pi = pi_old * ratio
    return pi / pi.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# FiberPO's sign channels (Eq. 9) under sampling from π_old: exact expectations by enumeration
# ---------------------------------------------------------------------------------------------
def sign_channels(log_r, mask):
    """``(log s⁺_τ, log s⁻_τ)`` of Eq. 9 per row: ``(1/T_τ) Σ_t max(±log r_t, 0)`` over the masked tokens."""
    log_r, mask, L, _ = _trajectories(log_r, mask, np.zeros(np.shape(log_r)[0]))
    return np.maximum(log_r, 0).sum(axis=1) / L, np.maximum(-log_r, 0).sum(axis=1) / L


def chain_channel_expectation(pi_old, pi, eos=None):
    """Exact expectations over trajectories sampled from ``π_old`` on a chain (position t is state t, at most
    ``L`` positions, K actions): returns ``(E[log s⁻ - log s⁺], E[Σ_t -log r_t], E[T_τ], mean_t KL_t)``.

    ``eos`` (an action index) ends the trajectory after that token, so lengths depend on the sampled actions;
    without it every trajectory has length L. Enumerates all K^L sequences (keep K^L small)."""
    pi_old, pi = _array(pi_old, "pi_old", ndim=2), _array(pi, "pi", ndim=2)
    if pi.shape != pi_old.shape:
        raise ValueError(f"pi must have the shape of pi_old {pi_old.shape}, got {pi.shape}")
    L, K = pi_old.shape
    lr = np.log(pi) - np.log(pi_old)
    e_mean = e_sum = e_len = 0.0

    def walk(t, prob, acc):
        nonlocal e_mean, e_sum, e_len
        if t == L:
            e_mean += prob * (-acc / t)
            e_sum += prob * (-acc)
            e_len += prob * t
            return
        for a in range(K):
            p = prob * pi_old[t, a]
            if eos is not None and a == eos:
                e_mean += p * (-(acc + lr[t, a]) / (t + 1))
                e_sum += p * (-(acc + lr[t, a]))
                e_len += p * (t + 1)
            else:
                walk(t + 1, p, acc + lr[t, a])
    walk(0, 1.0, 0.0)
    kl = np.sum(pi_old * (np.log(pi_old) - np.log(pi)), axis=1)
    return e_mean, e_sum, e_len, float(kl.mean())
