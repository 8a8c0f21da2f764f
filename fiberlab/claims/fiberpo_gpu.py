"""GPU-layer checks of FiberPO's claims: the PyTorch objectives (``fiberpo``, ``fiberpo_domain``, ``apc``) against
the float64 references of :mod:`fiberlab.numerics.fiberpo` and :mod:`fiberlab.numerics.trpo`.

Every check runs the PyTorch code in float64 on CPU (the same code runs on CUDA) on random ragged batches that mix
the regimes, and compares with NumPy code written independently from the paper's equations: the gated ratio
(Eq. 7 / Eqs. 30–33), the Jacobian of Prop. 5.2 (Eq. 20), APC-Obj's soft threshold; end to end, the gradient at
θ_old on a tabular softmax policy.
"""

from __future__ import annotations

import numpy as np
import torch

from fiberlab.claims.fiberpo_gating import domain_reductions, fbg_first_order, jacobian, restorative
from fiberlab.claims.fiberpo_trust import soft_threshold
from fiberlab.gpu.fiberpo import apc_gated_ratio, fiberpo_domain_gated_ratio, fiberpo_gated_ratio
from fiberlab.gpu.losses import get_policy_loss
from fiberlab.numerics import fiberpo as ref_fiberpo
from fiberlab.numerics import trpo as NT
from fiberlab.registry import Evidence, claim

#: Same quantity by two float64 routes (a handful of exp/log/clip operations on O(1) numbers): a few ulp;
#: relative to max(1, |value|).
EXACT_TOL = 1e-12
#: Points for Jacobian comparisons are drawn at least this far (in log-ratio units) from every kink, so that
#: the regimes (and hence the branch of Eq. 20) are unambiguous.
KINK_MARGIN = 1e-4
EPS, C_POS, C_NEG = 0.03, 0.12, 0.06
SEED = 20260309

loss = claim(
    "fiberpo.loss", paper="FiberPO", source="FiberPO Def. 5.1 (Eqs. 6–11), Def. 6.4 (Eqs. 30–33)",
    statement="The fiberpo and fiberpo_domain losses compute the gated ratio of Eq. 7 (and Eq. 31 with per-level "
              "budgets) and the objective of Eq. 6 (loss = -Ĵ under seq-mean-token-mean), in every regime.")


def _batch(rng, b, t, drift):
    lengths = rng.integers(1, t + 1, b)
    mask = np.arange(t)[None, :] < lengths[:, None]
    lr = np.where(mask, drift * rng.standard_normal((b, t)) + rng.normal(0, drift, (b, 1)), 0.0)
    return lr, mask


def _flat(lr, mask):
    rows = np.nonzero(mask)[0]
    return lr[mask], rows


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(1.0, float(np.max(np.abs(b)))))


@loss.check("gpu")
def _gated_ratio_matches_reference():
    rng = np.random.default_rng(SEED)
    worst, n = 0.0, 0
    for i in range(60):
        drift = (0.01, 0.05, 0.15, 0.4)[i % 4]                    # L-I … L-III, G-I … G-III
        lr, mask = _batch(rng, 8, 9, drift)
        flat, rows = _flat(lr, mask)
        out = fiberpo_gated_ratio(torch.from_numpy(lr), torch.from_numpy(mask).double(), EPS, C_POS, C_NEG)
        worst = max(worst, _rel(out["G"].numpy()[mask], ref_fiberpo.fiberpo_gated_ratio(flat, rows, EPS, C_POS, C_NEG)))
        groups, domains = np.arange(8) // 2, np.arange(8) // 4
        levels_pos = (C_POS, 0.5 * C_POS, C_POS) if i % 2 else (C_POS,) * 3
        levels_neg = (C_NEG, C_NEG, 0.7 * C_NEG) if i % 2 else (C_NEG,) * 3
        dom = fiberpo_domain_gated_ratio(torch.from_numpy(lr), torch.from_numpy(mask).double(),
                                         torch.from_numpy(groups), torch.from_numpy(domains), 4, 2, EPS,
                                         levels_pos, levels_neg)
        ref = ref_fiberpo.fiberpo_domain_gated_ratio(flat, rows, groups[rows], domains[rows], EPS, levels_pos, levels_neg)
        worst = max(worst, _rel(dom["G"].numpy()[mask], ref))
        # the objective itself, through the registered loss: -Ĵ of Eq. 6
        adv = np.repeat(rng.standard_normal((8, 1)), 9, 1)
        # log-probs with log_prob - old_log_prob = lr exactly: (0, lr) where lr ≤ 0, (-lr, 0) where lr > 0
        old = (-torch.from_numpy(lr)).clamp(max=0.0)
        value, _ = get_policy_loss("fiberpo")(old, torch.from_numpy(lr).clamp(max=0.0), torch.from_numpy(adv),
                                             torch.from_numpy(mask), "seq-mean-token-mean",
                                             {"fiberpo_eps": EPS, "fiberpo_c_pos": C_POS, "fiberpo_c_neg": C_NEG})
        ref_j = ref_fiberpo.fiberpo_objective(flat, adv[mask], rows, EPS, C_POS, C_NEG)
        # seq-mean-token-mean divides each row by T_τ + 1e-8 (verl's guard): relative 1e-8/T_τ ≤ 1e-8
        worst = max(worst, abs(float(value) + ref_j) / max(1.0, abs(ref_j)) * (EXACT_TOL / 1e-8))
        n += 3
    return Evidence.within(worst, EXACT_TOL, n, detail=f"float64 torch vs NumPy Eq. 7 / Eq. 31 (shared and per-level "
                                                       f"budgets) and Eq. 6; ε={EPS}, C±=({C_POS}, {C_NEG}); drifts "
                                                       "0.01–0.4 cover every local and global regime (the objective "
                                                       "is compared at 1e-8, verl's T_τ guard, scaled to this tol)")


@jacobian.check("gpu")
def _autograd_jacobian_is_eq20():
    rng = np.random.default_rng(SEED + 1)
    worst, n, off_block = 0.0, 0, 0.0
    while n < 30:
        lr, mask = _batch(rng, 3, 5, (0.02, 0.08, 0.2)[n % 3])
        flat, rows = _flat(lr, mask)
        if ref_fiberpo.kink_margin(flat, rows, EPS, C_POS, C_NEG) < KINK_MARGIN:
            continue
        m = torch.from_numpy(mask).double()
        idx = torch.from_numpy(np.flatnonzero(mask.reshape(-1)))

        def gate(log_r_flat):
            full = torch.zeros(lr.size, dtype=torch.float64).index_copy(0, idx, log_r_flat).view(lr.shape)
            return fiberpo_gated_ratio(full, m, EPS, C_POS, C_NEG)["G"].reshape(-1)[idx]

        r = torch.from_numpy(np.exp(flat))
        jac = torch.autograd.functional.jacobian(lambda rr: gate(torch.log(rr)), r).numpy()   # ∂𝒢_i/∂r_j
        ref = ref_fiberpo.jacobian_eq20(flat, rows, EPS, C_POS, C_NEG)
        worst = max(worst, _rel(jac, ref))
        off_block = max(off_block, float(np.max(np.abs(jac[rows[:, None] != rows[None, :]]), initial=0.0)))
        n += 1
    return Evidence.within(max(worst, off_block), EXACT_TOL, n,
                           detail=f"torch autograd Jacobian of r ↦ 𝒢(r) (fiberpo, custom autograd node) vs NumPy Eq. 20 "
                                  f"at {n} points ≥ {KINK_MARGIN} from every kink; worst {worst:.1e}; largest "
                                  f"cross-trajectory entry {off_block:.1e} (Property 5.3)")


def _tabular(seed):
    g = torch.Generator().manual_seed(seed)
    n_states, vocab, horizon, n_traj = 5, 4, 6, 8
    theta_old = torch.randn(n_states, vocab, generator=g, dtype=torch.float64)
    states = torch.randint(0, n_states, (n_traj, horizon), generator=g)
    actions = torch.multinomial(torch.softmax(theta_old[states], -1).reshape(-1, vocab), 1,
                                generator=g).view(n_traj, horizon)
    # a float mask: verl adds its 1e-8 guard to the mask sum, which rounds away for an integer (bool) sum
    mask = (torch.arange(horizon)[None, :] < torch.randint(2, horizon + 1, (n_traj, 1), generator=g)).double()
    adv = torch.randn(n_traj, 1, generator=g, dtype=torch.float64).expand(n_traj, horizon).contiguous()

    def log_prob(theta):
        return torch.log_softmax(theta[states], -1).gather(-1, actions[..., None]).squeeze(-1)

    return theta_old, log_prob, mask, adv


@fbg_first_order.check("gpu")
def _gradient_at_theta_old_is_the_surrogate_gradient():
    worst, n = 0.0, 0
    for seed in range(5):
        theta_old, log_prob, mask, adv = _tabular(seed)
        b = mask.shape[0]
        old = log_prob(theta_old).detach()
        for name, extra in (("fiberpo", {}),
                            ("fiberpo_domain", {"group_ids": torch.arange(b) // 2, "domain_ids": torch.arange(b) // 4})):
            theta = theta_old.clone().requires_grad_()
            value, _ = get_policy_loss(name)(old, log_prob(theta), adv, mask, "seq-mean-token-mean", None, **extra)
            (g_gate,) = torch.autograd.grad(value, theta)
            theta2 = theta_old.clone().requires_grad_()
            r = torch.exp(log_prob(theta2) - old)
            m = mask.double()
            surrogate = ((r * adv * m).sum(-1) / (m.sum(-1) + 1e-8)).sum() / b        # verl's seq guard, both sides
            (g_ref,) = torch.autograd.grad(-surrogate, theta2)
            worst = max(worst, float((g_gate - g_ref).abs().max()) / max(1.0, float(g_ref.abs().max())))
            n += 1
    return Evidence.within(worst, EXACT_TOL, n, detail="tabular softmax policy (5 states, 4 actions, ragged lengths): "
                                                       "∇_θ of the fiberpo / fiberpo_domain loss at θ = θ_old vs ∇_θ "
                                                       "of the un-gated surrogate Σ r Â/(|Tj| T_τ) (Thm. 4.5, Prop. 5.4)")


@restorative.check("gpu")
def _loss_restores_in_rollback():
    worst_sign, n = -np.inf, 0
    for T in (3, 5, 9):
        x0 = C_POS * (1 + 0.5 / T)                                  # inside the rollback band (C⁺, (1+1/T)C⁺)
        x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
        adv = torch.ones(1, T, dtype=torch.float64)
        mask = torch.ones(1, T, dtype=torch.bool)
        # log-probs: old_log_prob = -x0, log_prob = x - x0 (0 at x = x0, so log r = x0 exactly; d log_prob/dx = 1)
        old = torch.full((1, T), -x0, dtype=torch.float64)
        value, _ = get_policy_loss("fiberpo")(old, (x - x0) * torch.ones(1, T), adv, mask,
                                              "seq-mean-token-mean", {"fiberpo_c_pos": C_POS, "fiberpo_c_neg": C_NEG,
                                                                      "fiberpo_eps": EPS})
        (dJ,) = torch.autograd.grad(-value, x)                      # dĴ/dx, Ĵ = -loss
        value_g, _ = get_policy_loss("grpo_rgf")(old, (x - x0) * torch.ones(1, T), adv, mask,
                                                 "seq-mean-token-mean", {"clip_ratio": EPS})
        (dJ_grpo,) = torch.autograd.grad(-value_g, x)
        worst_sign = max(worst_sign, float(dJ))
        ok_grpo = float(dJ_grpo) == 0.0
        n += 1
        if not ok_grpo:
            return Evidence(passed=False, max_error=float(abs(dJ_grpo)), tolerance=0.0, cases=n,
                            detail=f"grpo_rgf gives dĴ/dx = {float(dJ_grpo):.3g} ≠ 0 at T = {T}")
    return Evidence(passed=worst_sign < 0, max_error=max(worst_sign, 0.0), tolerance=0.0, cases=n,
                    detail=f"fiberpo loss, all log r = x in C⁺'s rollback band, Â = 1: largest dĴ/dx = {worst_sign:.3g} "
                           f"(< 0, restorative); grpo_rgf with clip ε = {EPS}: dĴ/dx = 0 exactly")


@domain_reductions.check("gpu")
def _domain_is_not_block_diagonal_once_a_group_gate_rolls_back():
    # four trajectories, groups {0, 1} and {2, 3}, one domain; group 0 drifts, so its group-level argument
    # log s⁺_g - log s⁺_D is put inside that level's rollback band (C, (1 + 1/T_g)C)
    T = 4
    lr = torch.tensor([[0.30, 0.28, 0.31, 0.29], [0.20, 0.22, 0.18, 0.21],
                       [0.02, -0.01, 0.03, 0.00], [0.01, 0.00, -0.02, 0.02]], dtype=torch.float64)
    mask = torch.ones(4, T, dtype=torch.float64)
    groups, domains = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 0])

    def gates(levels_pos):
        def f(flat):
            return fiberpo_domain_gated_ratio(flat.view(4, T), mask, groups, domains, 2, 1, EPS, levels_pos,
                                              (1.0,) * 3)["G"].reshape(-1)
        return torch.autograd.functional.jacobian(f, lr.reshape(-1))

    ls_pos = lr.clamp_min(0).mean(1)
    x_group = float(ls_pos[:2].mean() - ls_pos.mean())              # log s⁺_g - log s⁺_D of group 0
    c_group = x_group / (1 + 0.5 / (2 * T))                          # inside the rollback band, T_g = 2T
    coupled = float(gates((1.0, c_group, 1.0))[:T, T:2 * T].abs().max())   # trajectory 0 ← trajectory 1
    passing = float(gates((1.0, 1.0, 1.0))[:T, T:2 * T].abs().max())
    ok = coupled > 1e-3 and passing == 0.0
    return Evidence(passed=ok, max_error=passing, tolerance=0.0, cases=2,
                    detail=f"torch fiberpo_domain: cross-trajectory Jacobian entries {coupled:.3f} with the group gate "
                           f"in rollback, {passing:.1e} with every level in pass-through (then block-diagonal, = FiberPO)")


@soft_threshold.check("gpu")
def _apc_gate_is_soft_threshold():
    rng = np.random.default_rng(SEED + 2)
    worst, n = 0.0, 0
    for i in range(40):
        b, t = 4, 5
        lr = rng.normal(0, (0.02, 0.1, 0.3)[i % 3], (b, t))
        mask = np.ones((b, t), dtype=bool)
        states = rng.integers(0, 6, (b, t))
        states = np.unique(states, return_inverse=True)[1].reshape(b, t)   # ids 0..S-1, every one used
        S = int(states.max()) + 1
        delta = 0.05
        out = apc_gated_ratio(torch.from_numpy(lr), torch.from_numpy(mask).double(), torch.from_numpy(states), S,
                              delta)["G"].numpy()
        dev = np.exp(lr).reshape(-1) - 1.0
        ref = NT.soft_threshold(states.reshape(-1), np.ones(b * t, dtype=int), dev, delta)
        worst = max(worst, _rel(out.reshape(-1) - 1.0, ref))
        n += 1
    return Evidence.within(worst, EXACT_TOL, n, detail="torch apc gate minus 1 vs NumPy per-state soft threshold "
                                                       "sign(Δ) max(|Δ| - λ_s, 0), λ_s = T_s(D̂_TV(s) - δ)⁺, random "
                                                       "shared states, δ = 0.05")
