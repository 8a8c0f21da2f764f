"""LPO's exact toy experiment (spec §4.4): a multi-armed *response bandit* with several correct arms.

One prompt, ``M`` responses ("arms") with rewards ``r ∈ R^M`` (correct arms ``r = 1``, wrong arms ``r = 0``, optionally
a ``0.1`` format reward as in the paper's Countdown setting), and a tabular softmax policy ``π_θ = softmax(θ)``,
``θ ∈ R^M``. Everything is float64 and vectorised over independent seeds (the leading axis ``S`` of every array).

Each iteration follows LPO's Algorithm 1 (spec §2.7) with one prompt per batch:

1. ``π_b ← π_θ`` (and ``π_t = π_b``, so ``s_t = 0``: the on-policy target, spec A5).
2. Draw ``K`` arms ``y_1..y_K ~ π_b`` (with replacement) and read their rewards ``R_k = r[y_k]``.
3. Group statistics ``μ_G``, ``σ_G`` and the paired temperature ``τ`` (LPO Table 1): GRPO ``τ = σ_G``, Dr.GRPO
   ``τ = 1``, MaxRL ``τ = μ_G``; advantages ``A = (R - μ_G)/τ`` and target ``w* = softmax(R/τ) = softmax(A)``
   (LPO Thm. 1 / Eq. 8 with ``s_t = 0``; softmax is shift-invariant, so the centred form is used: it is exactly
   zero on an all-equal group).
4. ``E`` inner gradient steps on θ. Step ``e`` recomputes the listwise logits ``s_k = log π_θ(y_k) - log π_b(y_k)``
   and ``P = softmax(s)`` (Eq. 4) from the *current* θ, so every step after the first is off-policy.

The loss gradient of every method has the form ``Σ_k c_k ∇_θ log π_θ(y_k)`` (descent coefficients ``c``), and for a
tabular softmax ``∇_θ log π_θ(y) = e_y - π_θ`` exactly, so the gradient is ``Σ_k c_k e_{y_k} - (Σ_k c_k) π_θ``:

* ``"pg"``: unclipped importance-weighted group PG (spec App. B.2), ``c_k = -r_k A_k / K`` with the *sequence* ratio
  ``r_k = e^{s_k}`` (Eq. 3 on-policy, where ``r_k = 1``). With ``clip_eps`` set it is PPO's min-form clipped
  surrogate of Eq. 2 instead (the gradient of ``min(r A, clip(r, 1±ε) A)`` is ``r A ∇log π`` where the unclipped
  branch is active and 0 where the clip binds).
* ``"lpo_fwd"``: ``c = P - w*`` (LPO Eq. 10).
* ``"lpo_rev"``: ``c = P(d - d̄)``, ``d = s - φ``, ``φ = A`` (LPO Eq. 11 with ``φ = R/τ + s_t`` shifted by the
  constant ``μ_G/τ``, which ``d - d̄`` cancels).
* ``"pointwise"``: ``c = -w*`` (App. C.4, the ablation of §5.4.1): no self-correction and a net pull ``Σ c = -1``.

Ambiguities (spec §6) and the readings taken here:

* A4, ``σ_G``: the *population* standard deviation by default (Table 1's ``σ_G = √(μ_G(1-μ_G))`` for binary
  rewards); ``std="unbiased"`` gives verl's ``torch.std`` (ddof 1). Both temperatures get ``+ eps`` so that an
  all-equal group (``σ_G = 0``) or an all-zero group under MaxRL (``μ_G = 0``) has a finite ``τ``; on such a group
  ``A = 0`` exactly, ``w*`` is uniform and every method's on-policy coefficient is 0.
* A1 does not arise: a response is one arm, its "sequence" log-probability is a single term.
* A2: LPO's coefficients are used unclipped (the paper's toy analysis of App. B.2 is unclipped too).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats
from scipy.special import log_softmax, softmax

METHODS = ("pg", "lpo_fwd", "lpo_rev", "pointwise")
TAU_FAMILIES = ("grpo", "dr_grpo", "maxrl")
OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class BanditConfig:
    """One bandit experiment (spec §4.4). ``rewards`` has one entry per arm; arms with reward 1 are *correct*.

    ``init_logits`` (default all zero) is the same for every seed: seeds differ only in the sampled groups.
    ``tau_family`` picks the PG method and with it LPO's paired temperature (Table 1). ``optimizer`` is plain
    SGD ``θ ← θ - lr·g`` or Adam (``betas``, ``adam_eps``), whose state persists across iterations as in training.
    """

    rewards: tuple[float, ...]
    init_logits: tuple[float, ...] | None = None
    K: int = 8
    E: int = 2
    lr: float = 0.5
    iterations: int = 150
    tau_family: str = "grpo"
    std: str = "population"
    eps: float = 1e-6
    optimizer: str = "sgd"
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    clip_eps: float | None = None

    def __post_init__(self):
        r = np.asarray(self.rewards, dtype=float)
        if r.ndim != 1 or r.size < 2:
            raise ValueError(f"rewards must be a 1-d sequence of at least 2 arms, got shape {r.shape}")
        if not np.all(np.isfinite(r)):
            raise ValueError("rewards must be finite (no NaN or inf)")
        if self.init_logits is not None:
            z = np.asarray(self.init_logits, dtype=float)
            if z.shape != r.shape:
                raise ValueError(f"init_logits must have the shape of rewards {r.shape}, got {z.shape}")
            if not np.all(np.isfinite(z)):
                raise ValueError("init_logits must be finite")
        if int(self.K) != self.K or self.K < 2:
            raise ValueError(f"K must be an integer >= 2 (a group needs two responses), got {self.K}")
        if int(self.E) != self.E or self.E < 1:
            raise ValueError(f"E must be an integer >= 1, got {self.E}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be positive and finite, got {self.lr}")
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {self.iterations}")
        if self.tau_family not in TAU_FAMILIES:
            raise ValueError(f"tau_family must be one of {TAU_FAMILIES}, got {self.tau_family!r}")
        if self.std not in ("population", "unbiased"):
            raise ValueError(f"std must be 'population' or 'unbiased', got {self.std!r}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"eps must be positive and finite, got {self.eps}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.clip_eps is not None and not (math.isfinite(self.clip_eps) and self.clip_eps > 0):
            raise ValueError(f"clip_eps must be None or positive, got {self.clip_eps}")

    @property
    def reward_vector(self) -> np.ndarray:
        return np.asarray(self.rewards, dtype=float)

    @property
    def correct_arms(self) -> np.ndarray:
        """Indices of the arms with the maximal reward 1 (the "correct" responses)."""
        return np.flatnonzero(self.reward_vector >= 1.0)


@dataclasses.dataclass
class BanditRun:
    """Per-seed trajectories. ``T = iterations``; index 0 of the ``T + 1`` axis is the initial policy.

    ``logits`` (S, T+1, M); ``expected_reward`` E_π[R] (S, T+1); ``entropy`` H(π) (S, T+1); ``correct_mass`` π on
    each correct arm (S, T+1, C); ``grad_norm`` ‖∇_θ‖₂ of each inner step (S, T, E); ``coef_sum`` Σ_k c_k of each inner
    step (S, T, E); ``samples`` the arms drawn (S, T, K)."""

    method: str
    config: BanditConfig
    logits: np.ndarray
    expected_reward: np.ndarray
    entropy: np.ndarray
    correct_mass: np.ndarray
    grad_norm: np.ndarray
    coef_sum: np.ndarray
    samples: np.ndarray

    def pass_at(self, k: int) -> np.ndarray:
        """``pass@k = 1 - (1 - Σ_correct π)^k`` per seed and iteration (S, T+1)."""
        return pass_at_k(self.correct_mass.sum(-1), k)


# ---------------------------------------------------------------------------------------------
# Group statistics, temperatures and coefficients (vectorised over the leading axes)
# ---------------------------------------------------------------------------------------------
def pass_at_k(correct_mass, k):
    """``1 - (1 - p)^k``: the probability that ``k`` independent draws hit a correct arm (``expm1``/``log1p`` keep
    small ``p`` exact)."""
    if int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}")
    p = np.clip(np.asarray(correct_mass, dtype=float), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        return -np.expm1(k * np.log1p(-p))


def group_temperature(R, tau_family, std="population", eps=1e-6):
    """Per-group ``(μ_G, τ)`` for groups along the last axis (LPO Table 1; spec A4 for ``std`` and ``eps``)."""
    R = np.asarray(R, dtype=float)
    mu = R.mean(-1)
    if tau_family == "grpo":
        K = R.shape[-1]
        sd = R.std(-1, ddof=0 if std == "population" else 1) if K > 1 else np.zeros_like(mu)
        return mu, sd + eps
    if tau_family == "dr_grpo":
        return mu, np.ones_like(mu)
    if tau_family == "maxrl":
        return mu, mu + eps
    raise ValueError(f"tau_family must be one of {TAU_FAMILIES}, got {tau_family!r}")


def descent_coefficients(method, s, A, clip_eps=None):
    """Coefficients ``c`` of ``∇_θ L = Σ_k c_k ∇_θ log π_θ(y_k)`` for listwise logits ``s`` and centred advantages ``A``
    (groups along the last axis; ``w* = softmax(A)``). See the module docstring for the four methods."""
    s, A = np.asarray(s, dtype=float), np.asarray(A, dtype=float)
    K = s.shape[-1]
    if method == "pg":
        ratio = np.exp(s)
        c = -ratio * A / K                                       # App. B.2: c^PG = r_k A_k / K (ascent sign)
        if clip_eps is not None:
            # PPO min-form (Eq. 2): the gradient vanishes where the clipped branch is the minimum, i.e. r > 1+ε with
            # A > 0 or r < 1-ε with A < 0.
            clipped = ((A > 0) & (ratio > 1 + clip_eps)) | ((A < 0) & (ratio < 1 - clip_eps))
            c = np.where(clipped, 0.0, c)
        return c
    P = softmax(s, axis=-1)
    if method == "lpo_fwd":
        return P - softmax(A, axis=-1)                           # LPO Eq. 10
    if method == "lpo_rev":
        d = s - A                                                # LPO Eq. 11, φ = A (= R/τ up to a constant)
        return P * (d - np.sum(P * d, axis=-1, keepdims=True))
    if method == "pointwise":
        return -softmax(A, axis=-1)                              # App. C.4: c = -w*, independent of θ
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def tabular_gradient(logits, samples, c):
    """Exact ``∇_θ Σ_k c_k log softmax(θ)_{y_k} = Σ_k c_k e_{y_k} - (Σ_k c_k) softmax(θ)``, rows over seeds."""
    logits = np.asarray(logits, dtype=float)
    M = logits.shape[-1]
    onehot = samples[..., None] == np.arange(M)                   # (S, K, M)
    return np.einsum("sk,skm->sm", c, onehot) - c.sum(-1, keepdims=True) * softmax(logits, axis=-1)


def _entropy(logp):
    return -np.sum(np.exp(logp) * logp, axis=-1)


# ---------------------------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------------------------
def check_run_args(method, config, n_seeds):
    """The arguments of a bandit run (:func:`simulate` and its tracing twin), each error naming its argument."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(config, BanditConfig):
        raise ValueError(f"config must be a BanditConfig, got {type(config).__name__}")
    if int(n_seeds) != n_seeds or n_seeds < 1:
        raise ValueError(f"n_seeds must be an integer >= 1, got {n_seeds}")


@dataclasses.dataclass
class InnerStep:
    """One inner update ``e`` of iteration ``t``: the listwise logits ``s`` it sees (0 at ``e = 0``), the descent
    coefficients ``c`` (both ``(S, K)``) and the gradient ``g`` on the logits ``(S, M)``."""

    t: int
    e: int
    s: np.ndarray
    c: np.ndarray
    g: np.ndarray


@dataclasses.dataclass
class Iteration:
    """Iteration ``t`` after its ``E`` inner updates: the sampled group ``y``, rewards ``R``, centred advantages
    ``A`` (``(S, K)``), temperature ``tau`` ``(S,)``, behaviour log-probs ``lb`` of the group, and the logits
    ``theta`` ``(S, M)`` the updates reached."""

    t: int
    y: np.ndarray
    R: np.ndarray
    A: np.ndarray
    tau: np.ndarray
    lb: np.ndarray
    theta: np.ndarray


def bandit_steps(method, config, n_seeds=32, seed=0):
    """The bandit's arithmetic, written once: yields an :class:`InnerStep` after each inner update and an
    :class:`Iteration` after each iteration. :func:`simulate` and
    :func:`fiberlab.numerics.lpo.bandit_inner_trace` record different parts of the same stream.

    The randomness is one ``numpy.random.default_rng(seed)`` stream of uniforms of shape ``(n_seeds, K)`` per
    iteration, turned into arms by inverse-CDF sampling from ``π_b``."""
    check_run_args(method, config, n_seeds)
    cfg = config
    S, K, E, T = int(n_seeds), int(cfg.K), int(cfg.E), int(cfg.iterations)
    r = cfg.reward_vector
    M = r.size
    rng = np.random.default_rng(seed)
    theta = np.tile(np.zeros(M) if cfg.init_logits is None else np.asarray(cfg.init_logits, float), (S, 1))
    m_adam, v_adam, t_adam = np.zeros_like(theta), np.zeros_like(theta), 0
    rows = np.arange(S)[:, None]
    for t in range(T):
        logp_b = log_softmax(theta, axis=-1)
        cdf = np.cumsum(np.exp(logp_b), axis=-1)
        u = rng.random((S, K))
        y = np.minimum((u[..., None] >= cdf[:, None, :]).sum(-1), M - 1)   # inverse CDF: y ~ π_b
        R = r[y]
        mu, tau = group_temperature(R, cfg.tau_family, cfg.std, cfg.eps)
        A = (R - mu[:, None]) / tau[:, None]                     # = 0 exactly on an all-equal group
        lb = logp_b[rows, y]
        for e in range(E):
            s = log_softmax(theta, axis=-1)[rows, y] - lb        # Eq. 4 listwise logits, 0 at e = 0
            c = descent_coefficients(method, s, A, cfg.clip_eps)
            g = tabular_gradient(theta, y, c)
            yield InnerStep(t, e, s, c, g)
            if cfg.optimizer == "sgd":
                theta = theta - cfg.lr * g
            else:                                                # Adam, bias-corrected
                b1, b2 = cfg.betas
                t_adam += 1
                m_adam = b1 * m_adam + (1 - b1) * g
                v_adam = b2 * v_adam + (1 - b2) * g * g
                theta = theta - cfg.lr * (m_adam / (1 - b1 ** t_adam)) / (
                    np.sqrt(v_adam / (1 - b2 ** t_adam)) + cfg.adam_eps)
        yield Iteration(t, y, R, A, tau, lb, theta)


def simulate(method, config, n_seeds=32, seed=0):
    """Run ``method`` on ``config`` for ``n_seeds`` independent seeds; returns a :class:`BanditRun`.

    Methods run with the same ``seed`` see the same uniforms (:func:`bandit_steps`), so their groups coincide for
    as long as their policies do (common random numbers; paired comparisons across methods are per seed)."""
    cfg = config
    check_run_args(method, cfg, n_seeds)
    S, K, E, T = int(n_seeds), int(cfg.K), int(cfg.E), int(cfg.iterations)
    r = cfg.reward_vector
    logits = np.empty((S, T + 1, r.size))
    grad_norm = np.empty((S, T, E))
    coef_sum = np.empty((S, T, E))
    samples = np.empty((S, T, K), dtype=np.int64)
    logits[:, 0] = np.tile(np.zeros(r.size) if cfg.init_logits is None else np.asarray(cfg.init_logits, float),
                           (S, 1))
    for step in bandit_steps(method, cfg, n_seeds, seed):
        if isinstance(step, InnerStep):
            grad_norm[:, step.t, step.e] = np.linalg.norm(step.g, axis=-1)
            coef_sum[:, step.t, step.e] = step.c.sum(-1)
        else:
            samples[:, step.t] = step.y
            logits[:, step.t + 1] = step.theta

    logp = log_softmax(logits, axis=-1)
    pi = np.exp(logp)
    return BanditRun(method=method, config=cfg, logits=logits, expected_reward=pi @ r, entropy=_entropy(logp),
                     correct_mass=pi[..., cfg.correct_arms], grad_norm=grad_norm, coef_sum=coef_sum, samples=samples)


# ---------------------------------------------------------------------------------------------
# Statistics over seeds
# ---------------------------------------------------------------------------------------------
def mean_ci(x, level=0.95):
    """Mean over the first axis (seeds) and the half-width of a Student-t confidence interval,
    ``t_{(1+level)/2, n-1} · sd/√n``. Returns ``(mean, half_width)``."""
    x = np.asarray(x, dtype=float)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"x needs at least 2 seeds along axis 0, got {n}")
    q = stats.t.ppf(0.5 + level / 2, n - 1)
    return x.mean(0), q * x.std(0, ddof=1) / math.sqrt(n)
