"""GPU-layer checks of LPO's claims: the ``lpo`` / ``lpo_pointwise`` losses people train with.

Every check runs the PyTorch loss in float64 on CPU (the same code runs on CUDA) on random ragged batches and
compares its gradient with an oracle that does not share its coefficient formulas: autograd through the
divergence written as a function of the listwise logits, or the ``ppo`` loss with GRPO advantages.
"""

from __future__ import annotations

import math

import torch

from fiberlab.claims.lpo import implicit_targets as _implicit_targets
from fiberlab.claims.lpo import length_normalisation, pg_is_reverse_kl, zero_sum
from fiberlab.gpu.advantages import get_advantage
from fiberlab.gpu.losses import get_policy_loss
from fiberlab.gpu.lpo import LPO_DIVERGENCES, listwise_state
from fiberlab.registry import Evidence, claim

#: float64 gradients built from sums of O(K·T) ≤ 100 terms of size O(1) in a different order than the oracle's:
#: a few hundred ulp (eps ≈ 2.2e-16), relative to max(1, ‖g‖∞). Measured ≲ 1e-15.
GRAD_TOL = 1e-12
#: Zero-sum in parameter space: a sum of K coefficient-weighted terms that cancel exactly in exact arithmetic.
ZERO_SUM_TOL = 1e-13
#: A broken zero-sum must be visible well above round-off: at least this (measured ≈ 1e-2 for these batches).
BROKEN_MIN = 1e-6
TAU_RULES = ("grpo", "drgrpo", "rloo", "maxrl", 0.4)

loss = claim(
    "lpo.loss", paper="LPO", source="LPO Algorithm 1, Eqs. 10/11, App. C.6",
    statement="The lpo loss's gradient is Algorithm 1's step (1/B) Σ_x Σ_k c_k ∇ log π_θ(y_k|x) with c = ∂D/∂s for "
              "the chosen divergence (forward/reverse KL, JS, Hellinger, Pearson χ²), also when a group is split "
              "across micro-batches.")


def _batch(seed, n_groups=4, k=5, t=7, drift=0.3, equal_lengths=False):
    g = torch.Generator().manual_seed(seed)
    b = n_groups * k
    old = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    step = drift * torch.randn(b, t, generator=g, dtype=torch.float64)
    lp = torch.where(old + step > 0, old - step, old + step)   # reflected: a log-prob (old - step ≤ 2·old ≤ 0)
    lengths = torch.full((b,), t) if equal_lengths else torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    rewards = (torch.rand(b, generator=g, dtype=torch.float64) < 0.5).to(torch.float64)
    return old, lp, mask, rewards, torch.arange(b) // k


def paired_tau(rule, r):
    """τ of one group's rewards ``r`` under ``rule`` (LPO §1.4; Bessel σ_G as verl's GRPO, ε = 1e-6), written
    directly from the table, independently of :mod:`fiberlab.gpu.lpo`'s segment code."""
    k = r.shape[0]
    return {"grpo": lambda: r.std() + 1e-6, "drgrpo": lambda: torch.tensor(1.0, dtype=r.dtype),
            "rloo": lambda: torch.tensor((k - 1) / k, dtype=r.dtype), "maxrl": lambda: r.mean() + 1e-6
            }.get(rule, lambda: torch.tensor(float(rule), dtype=r.dtype))()


def divergence_value(div, log_p, log_w):
    """D(P, w*) of one group from log P and log w* (the value, not its coefficients): the autograd oracle."""
    p, w = log_p.exp(), log_w.exp()
    if div == "fwd":
        return (w * (log_w - log_p)).sum()
    if div == "rev":
        return (p * (log_p - log_w)).sum()
    if div == "js":
        log_m = torch.logaddexp(log_p, log_w) - math.log(2.0)
        return 0.5 * ((p * (log_p - log_m)).sum() + (w * (log_w - log_m)).sum())
    if div == "hellinger":
        return ((p.sqrt() - w.sqrt()) ** 2).sum()
    return ((p - w) ** 2 / w).sum()                       # Pearson χ²(P‖w*)


def _oracle_grad(old, lp, mask, r, ids, div, rule):
    """∇ of (1/N_seq) Σ_G K_G D(softmax(s_G), softmax(φ_G)) by autograd, group by group."""
    lp = lp.detach().clone().requires_grad_()
    s = ((lp - old) * mask).sum(-1)
    total = 0.0
    for gid in torch.unique(ids).tolist():
        sel = ids == gid
        rg = r[sel]
        phi = (rg - rg.mean()) / paired_tau(rule, rg)
        total = total + sel.sum() * divergence_value(div, torch.log_softmax(s[sel], 0), torch.log_softmax(phi, 0))
    (g,) = torch.autograd.grad(total / ids.shape[0], lp)
    return g


def _loss_grad(name, old, lp, mask, mode, cfg, **extra):
    lp = lp.detach().clone().requires_grad_()
    value, _ = get_policy_loss(name)(old, lp, None, mask, mode, cfg, **extra)
    (g,) = torch.autograd.grad(value, lp)
    return g


def _rel(a, b):
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


@loss.check("gpu")
def _gradient_is_algorithm_1():
    worst, n = 0.0, 0
    for i, div in enumerate(sorted(LPO_DIVERGENCES)):
        for j, rule in enumerate(TAU_RULES):
            old, lp, mask, r, ids = _batch(100 * i + j)
            g = _loss_grad("lpo", old, lp, mask, "seq-mean-token-sum", {"lpo_divergence": div, "lpo_tau": rule},
                           rewards=r, group_ids=ids)
            worst = max(worst, _rel(g, _oracle_grad(old, lp, mask, r, ids, div, rule)))
            n += 1
    return Evidence.within(worst, GRAD_TOL, n, detail=f"float64 loss gradient vs autograd of (1/N) Σ_G K_G D(P_θ, w*), "
                                                       f"{len(LPO_DIVERGENCES)} divergences × τ rules {TAU_RULES}, "
                                                       "ragged masks; relative to max(1, ‖g‖∞)")


@loss.check("gpu")
def _split_groups_micro_batches():
    """Every group split across micro-batches of 3 rows: per-piece losses with the mini-batch's state sum to the
    whole-batch gradient."""
    worst, n = 0.0, 0
    for div in ("fwd", "rev", "js"):
        old, lp, mask, r, ids = _batch(7)
        b = ids.shape[0]
        whole = _loss_grad("lpo", old, lp, mask, "seq-mean-token-sum", {"lpo_divergence": div},
                           rewards=r, group_ids=ids)
        s = ((lp - old) * mask).sum(-1)
        state = listwise_state(s, ids, rewards=r, tau="grpo", divergence=div, num_groups=int(ids.max()) + 1)
        perm = torch.randperm(b, generator=torch.Generator().manual_seed(1))
        parts = torch.zeros_like(whole)
        cfg = {"lpo_divergence": div, "global_batch_info": {"global_batch_size": b}}
        for chunk in perm.split(3):
            parts[chunk] = _loss_grad("lpo", old[chunk], lp[chunk], mask[chunk], "seq-mean-token-sum", cfg,
                                      rewards=r[chunk], group_ids=ids[chunk], lpo_state=state)
        worst = max(worst, _rel(parts, whole))
        n += 1
    return Evidence.within(worst, GRAD_TOL, n, detail="micro-batches of 3 rows in random order (every group split), "
                                                      "state from listwise_state on the mini-batch; the 2-rank gloo "
                                                      "version is in the test suite")


@pg_is_reverse_kl.check("gpu")
def _lpo_rev_on_policy_is_grpo():
    worst, n = 0.0, 0
    for seed in range(6):
        old, _, mask, r, ids = _batch(seed, k=8)
        g_lpo = _loss_grad("lpo", old, old, mask, "seq-mean-token-sum", {"lpo_divergence": "rev", "lpo_tau": "grpo"},
                           rewards=r, group_ids=ids)
        adv = get_advantage("grpo")(r, ids)[:, None] * mask
        lp = old.clone().requires_grad_()
        value, _ = get_policy_loss("ppo")(old, lp, adv, mask, "seq-mean-token-sum",
                                          {"clip_ratio_low": 1.0, "clip_ratio_high": 1e9, "clip_ratio_c": None})
        (g_pg,) = torch.autograd.grad(value, lp)
        worst = max(worst, _rel(g_lpo, g_pg))
        n += 1
    return Evidence.within(worst, GRAD_TOL, n, detail="lpo (rev, τ = σ_G) at log_prob = old_log_prob vs the ppo loss "
                                                      "with verl-convention GRPO advantages, seq-mean-token-sum")


def _group_shift_gradient(mode, div, equal_lengths, seed):
    """∂L/∂θ_G for a parameter that shifts every s_k of group G by θ_G (θ_G/|y_k| on each token): K·Σ_k c_k/N."""
    old, lp, mask, r, ids = _batch(seed, equal_lengths=equal_lengths)
    theta = torch.zeros(int(ids.max()) + 1, dtype=torch.float64, requires_grad=True)
    lengths = mask.sum(-1, keepdim=True).to(torch.float64)
    value, _ = get_policy_loss("lpo")(old, lp + theta[ids][:, None] / lengths * mask, None, mask, mode,
                                      {"lpo_divergence": div}, rewards=r, group_ids=ids)
    (g,) = torch.autograd.grad(value, theta)
    return float(g.abs().max())


@zero_sum.check("gpu")
def _loss_is_zero_sum():
    worst, n = 0.0, 0
    for div in sorted(LPO_DIVERGENCES):
        for mode in ("seq-mean-token-sum", "token-mean", "seq-mean-token-sum-norm"):
            worst = max(worst, _group_shift_gradient(mode, div, False, 11))
            n += 1
    return Evidence.within(worst, ZERO_SUM_TOL, n, detail="gradient of the lpo loss along a per-group shift of all "
                                                          "s_k (= Σ_k c_k up to a constant) under the summed "
                                                          "aggregations, every divergence")


@length_normalisation.check("gpu")
def _per_sequence_mean_breaks_zero_sum():
    broken = min(_group_shift_gradient("seq-mean-token-mean", div, False, 12) for div in ("fwd", "rev"))
    equal = max(_group_shift_gradient("seq-mean-token-mean", div, True, 12) for div in ("fwd", "rev"))
    summed = max(_group_shift_gradient("seq-mean-token-sum", div, False, 12) for div in ("fwd", "rev"))
    ok = broken > BROKEN_MIN and equal <= ZERO_SUM_TOL and summed <= ZERO_SUM_TOL
    return Evidence(passed=ok, max_error=max(equal, summed), tolerance=ZERO_SUM_TOL, cases=6,
                    detail=f"lpo loss, per-group shift gradient: seq-mean-token-mean with ragged lengths "
                           f"{broken:.2e} (counterexample, > {BROKEN_MIN:g}); equal lengths {equal:.1e}; "
                           f"seq-mean-token-sum {summed:.1e}")


# --------------------------------------------------------------------------------------------------------------
# lpo.implicit_targets: the objective's τ rule against the claims layer's (population vs Bessel σ_G)
# --------------------------------------------------------------------------------------------------------------

#: τ from one float64 group: a sum of K ≤ 8 squares and one sqrt in a different order than NumPy's, relative.
TAU_RTOL = 1e-13


@_implicit_targets.check("gpu")
def _objective_tau_matches_the_claims_layer() -> Evidence:
    """The numerics layer reads GRPO's implicit temperature as the population σ_G (Table 1, spec A4); the
    objective's default is the Bessel-corrected σ_G, so that (R - μ_G)/τ is verl's GRPO advantage. Both are
    checked here: ``lpo_tau_std_unbiased=False`` is the claims layer's τ, and the default is √(K/(K-1)) times it
    (each plus the same ε)."""
    import numpy as np

    from fiberlab.numerics.lpo import group_advantages

    g = torch.Generator().manual_seed(11)
    worst, n = 0.0, 0
    for K in range(2, 9):
        for _ in range(6):
            r = torch.rand(K, generator=g, dtype=torch.float64) * 3.0
            _, sd = group_advantages("grpo", r.numpy())
            ids = torch.zeros(K, dtype=torch.long)
            for unbiased, want in ((False, sd), (True, sd * math.sqrt(K / (K - 1)))):
                st = listwise_state(torch.zeros(K, dtype=torch.float64), ids, rewards=r, tau="grpo",
                                    std_unbiased=unbiased)
                got = float(st.tau[0]) - 1e-6                     # TAU_EPS, added to σ_G by the objective
                worst = max(worst, abs(got - want) / max(want, 1e-300))
                n += 1
    return Evidence.within(worst, TAU_RTOL, n, detail="lpo_tau='grpo': the objective's τ with "
                           "lpo_tau_std_unbiased=False equals the numerics layer's population σ_G (Table 1's reading, "
                           "A4); its default, Bessel's σ_G (verl's GRPO), equals √(K/(K-1)) times it; K = 2..8, "
                           "relative error after removing ε = 1e-6")
