r"""Exact probes of an objective's bias on a one-parameter policy, vectorised torch (no model, no sampling loop).

:func:`filler_logit_gradient` measures the length drift a loss aggregation puts on a policy whose only freedom
is how many filler tokens it emits before its answer (the ``filler`` task of :mod:`fiberlab.gpu.tasks`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fiberlab.gpu.advantages import get_advantage
from fiberlab.gpu.losses import batch_extras, get_policy_loss

#: log-probability of each answer token (and the EOS): a constant, independent of θ
ANSWER_LOG_PROB = math.log(0.9)


def filler_distribution(p_filler: float, max_pad: int) -> np.ndarray:
    r"""P(k) for k = 0..max_pad fillers: a geometric number of fillers truncated at ``max_pad``,
    :math:`P(k) = p^k(1-p)` for k < max_pad and :math:`p^{max\_pad}` for k = max_pad."""
    k = np.arange(max_pad + 1)
    pk = p_filler ** k * (1.0 - p_filler)
    pk[max_pad] = p_filler ** max_pad
    return pk


def _reward_logit_offset(pk: np.ndarray, z: np.ndarray, slope: float, pass_rate: float) -> float:
    r"""b with :math:`\sum_k P(k)\,\sigma(b + \text{slope}\cdot z_k) = \text{pass\_rate}` (bisection; monotone in b)."""
    lo, hi = -60.0, 60.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float(np.sum(pk / (1.0 + np.exp(-(mid + slope * z))))) < pass_rate:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _extras(objective: str, rewards: torch.Tensor, group_ids: torch.Tensor) -> dict[str, Any]:
    """What the objective declares it takes (no per-token states here: an objective that needs them is refused)."""
    return batch_extras(objective, rewards=rewards, group_ids=group_ids, domain_ids=lambda: torch.zeros_like(group_ids))


def _filler_batches(pass_rate: float, n: int, p_filler: float, max_pad: int, length_correlation: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` filler counts k (truncated geometric) and rewards (Bernoulli with P(k) from the pass rate and the
    length correlation), drawn in a fixed order from one ``default_rng(seed)`` (common random numbers)."""
    rng = np.random.default_rng(seed)
    k_all = np.minimum(rng.geometric(1.0 - p_filler, n) - 1, max_pad)
    u_all = rng.random(n)
    pk = filler_distribution(p_filler, max_pad)
    ks = np.arange(max_pad + 1)
    mu = float(np.sum(pk * ks))
    sd = math.sqrt(float(np.sum(pk * (ks - mu) ** 2)))
    if length_correlation == 0.0 or pass_rate in (0.0, 1.0):
        prob_k = np.full(max_pad + 1, float(pass_rate))
    else:
        z = (ks - mu) / sd                                       # the standardised filler count
        b = _reward_logit_offset(pk, z, float(length_correlation), float(pass_rate))
        prob_k = 1.0 / (1.0 + np.exp(-(b + length_correlation * z)))
    return k_all, (u_all < prob_k[k_all]).astype(np.float64)


def _chunk_gradient(k: torch.Tensor, rewards: torch.Tensor, group_size: int, p_filler: float, max_pad: int,
                    answer_len: int, agg_mode: str, objective: str, loss_fn: Any, adv_fn: Any) -> float:
    """dLoss/dθ on one mini-batch of responses with ``k`` ``[n]`` fillers, on-policy (every ratio 1), float64."""
    T = max_pad + answer_len + 1                                 # the padded length
    t = torch.arange(T)
    k = k[:, None]
    gid = torch.arange(k.shape[0] // group_size).repeat_interleave(group_size)
    theta = torch.tensor(math.log(p_filler) - math.log1p(-p_filler), dtype=torch.float64, requires_grad=True)
    log_fill = torch.nn.functional.logsigmoid(theta)
    log_stop = torch.nn.functional.logsigmoid(-theta)
    mask = t[None, :] < k + answer_len + 1
    first = (t[None, :] == k) & (k < max_pad)                    # the answer's first token carries the stop
    lp = torch.where(t[None, :] < k, log_fill,
                     torch.where(first, log_stop + ANSWER_LOG_PROB,
                                 torch.full((), ANSWER_LOG_PROB, dtype=torch.float64)))
    lp = lp * mask                                               # padding: log-prob 0, masked out
    adv = adv_fn(rewards, gid)[:, None] * mask
    loss, _ = loss_fn(lp.detach(), lp, adv, mask, agg_mode, {"clip_ratio": 0.2}, **_extras(objective, rewards, gid))
    (g,) = torch.autograd.grad(loss, theta)
    return float(g)


def filler_logit_gradient(agg_mode: str, pass_rate: float, group_size: int = 8, groups: int = 20000,
                          p_filler: float = 0.5, max_pad: int = 8, answer_len: int = 3,
                          length_correlation: float = 0.0, seed: int = 0, objective: str = "ppo",
                          chunks: int = 100, advantage: str = "grpo") -> dict[str, float]:
    r"""The on-policy gradient dLoss/dθ of the filler logit θ under aggregation ``agg_mode``, with its Monte-Carlo
    standard error.

    **Policy.** One scalar θ = logit(``p_filler``). At each of up to ``max_pad`` steps the policy emits a filler
    with probability σ(θ); the first non-filler is the answer's first token, so it carries the stop decision
    log(1 − σ(θ)) when k < ``max_pad`` (at k = ``max_pad`` there is no decision left). The answer's
    ``answer_len`` tokens and the EOS have constant log-probabilities (:data:`ANSWER_LOG_PROB`), so
    :math:`|y| = k + \text{answer\_len} + 1` and the padded length is ``T = max_pad + answer_len + 1`` (the
    divisor of ``seq-mean-token-sum-norm``). A sequence's score is
    :math:`s(k) = \partial_\theta \log\pi(y) = k(1-p) - p\,[k < \text{max\_pad}]`, with :math:`E[s(k)] = 0`.

    **Batches.** ``groups`` groups of ``group_size`` responses: k from the truncated geometric
    (:func:`filler_distribution`), reward Bernoulli. With ``length_correlation = c = 0`` the reward probability is
    ``pass_rate`` for every k; otherwise it is :math:`\sigma(b + c z_k)` with :math:`z_k` the standardised k
    (exact mean and sd of the truncated geometric) and b solved so that the mean pass rate stays ``pass_rate``
    (c < 0: long answers are more often wrong). All draws come from one ``np.random.default_rng(seed)`` in a
    fixed order (k, then one uniform per response compared against the reward probability), so the **same
    batches** serve every ``agg_mode`` and ``objective`` (and the same k and uniforms every ``c``: common random
    numbers). Advantages: ``get_advantage(advantage)(rewards, group_ids)`` broadcast over the tokens × mask;
    loss: ``get_policy_loss(objective)(old, lp, adv, mask, agg_mode, {"clip_ratio": 0.2})`` on-policy
    (``old = lp.detach()``, every ratio exactly 1), in float64.

    **Why the drift vanishes without correlation.** The gradient of every aggregation is
    :math:`-\sum_i A_i\, g_i(k_1..k_B)` with :math:`g_i = w_i s(k_i)` and a weight :math:`w_i` that depends on
    the lengths only (1/N_tok for ``token-mean`` — jointly on all lengths —, 1/(B|y_i|) for
    ``seq-mean-token-mean``, 1/(B T) for ``seq-mean-token-sum-norm``, 1/B for ``seq-mean-token-sum``). When the
    rewards are independent of the lengths, so are the advantages, hence
    :math:`E[\sum_i A_i g_i] = \sum_i E[A_i]\,E[g_i]`; GRPO's advantages are exchangeable within a group and sum
    to zero there, so :math:`E[A_i] = 0` and the expected drift is **zero for every aggregation**, whatever the
    pass rate. A per-sequence ``1/|y|`` rescales which sequences count, but a nonzero expected drift needs a
    length–reward correlation (``length_correlation ≠ 0``); tests/test_probes.py checks both numerically.

    Returns ``{"grad", "se", "drift", "reward_mean", "filler_mean"}``: ``grad`` the mean over ``chunks`` equal
    chunks of groups of each chunk's gradient (each chunk one mini-batch, so ``token-mean``'s N_tok is the
    chunk's), ``se`` the standard error over chunks, ``drift = -grad`` (> 0: a gradient-descent step raises
    the filler probability, i.e. lengthens answers), and the realised mean reward and filler count."""
    if not 0.0 < p_filler < 1.0:
        raise ValueError(f"p_filler must be in (0, 1), got {p_filler}")
    if not 0.0 <= pass_rate <= 1.0:
        raise ValueError(f"pass_rate must be in [0, 1], got {pass_rate}")
    if max_pad < 1 or answer_len < 0 or group_size < 2:
        raise ValueError(f"need max_pad ≥ 1, answer_len ≥ 0, group_size ≥ 2; got {max_pad}, {answer_len}, {group_size}")
    chunks = min(int(chunks), int(groups))
    if chunks < 2:
        raise ValueError(f"need at least 2 chunks (and groups) for a standard error, got {chunks}")
    k_all, r_all = _filler_batches(pass_rate, group_size * groups, p_filler, max_pad, length_correlation, seed)
    loss_fn, adv_fn = get_policy_loss(objective), get_advantage(advantage)
    grads = []
    for idx in np.array_split(np.arange(groups), chunks):
        lo, hi = int(idx[0]) * group_size, (int(idx[-1]) + 1) * group_size
        grads.append(_chunk_gradient(torch.from_numpy(k_all[lo:hi]), torch.from_numpy(r_all[lo:hi]), group_size,
                                     p_filler, max_pad, answer_len, agg_mode, objective, loss_fn, adv_fn))
    g = np.asarray(grads)
    mean, se = float(g.mean()), float(g.std(ddof=1) / math.sqrt(len(g)))
    return {"grad": mean, "se": se, "drift": -mean, "reward_mean": float(r_all.mean()),
            "filler_mean": float(k_all.mean())}


__all__ = ["filler_logit_gradient", "filler_distribution", "ANSWER_LOG_PROB"]
