"""The FiberPO family of policy losses (``grpo_rgf``, ``gspo``, ``apc``, ``fiberpo``, ``fiberpo_domain``).

Oracles: closed forms written out here (g_agg's three cases, Prop. 5.2's Jacobian Eq. 20, APC-Obj's soft
threshold, the un-gated GRPO-weighted surrogate), autograd of a tabular softmax policy, the structural identities
of the paper (telescoping of FiberPO-Domain, first-order agreement at r = 1), verl 0.9.1's own ``gspo`` loss, and
(when present) the float64 NumPy reference :mod:`fiberlab.numerics.fiberpo`. Everything is float64 on CPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from fiberlab.gpu.fiberpo import (APC_DELTA, FIBERPO_C_NEG, FIBERPO_C_POS, FIBERPO_EPS, GLOBAL_REGIMES,
                                  apc_gated_ratio, fiberpo_domain_gated_ratio, fiberpo_domain_state,
                                  fiberpo_gated_ratio, g_agg, masked_log_ratio)
from fiberlab.gpu.losses import get_policy_loss
from fiberlab.gpu.segments import dense_segments

fiberpo = get_policy_loss("fiberpo")
fiberpo_domain = get_policy_loss("fiberpo_domain")
apc = get_policy_loss("apc")
gspo = get_policy_loss("gspo")
grpo_rgf = get_policy_loss("grpo_rgf")

#: float64 sums of O(T) terms of size O(1): a few hundred ulp, relative to max(1, |value|).
TOL64 = 1e-12
#: Keep random test points at least this far (in log-ratio units) from every regime switch, so that the
#: piecewise-linear gates are differentiable there and autograd's one-sided choices do not matter.
KINK_MARGIN = 1e-6
#: verl's ``seq-mean-token-mean`` divides by ``T_τ + 1e-8`` (``core_algos.agg_loss``); references copy it.
VERL_SEQ_GUARD = 1e-8
EPS, CP, CN = FIBERPO_EPS, FIBERPO_C_POS, FIBERPO_C_NEG


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL64) -> bool:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


def _batch(b=6, t=7, drift=0.1, seed=0, ragged=True):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3 - 0.05
    noise = drift * torch.randn(b, t, generator=g, dtype=torch.float64)
    lp = torch.where(old + noise > 0, old - noise, old + noise)   # reflected: old - noise ≤ 2·old ≤ 0 there
    adv = torch.randn(b, 1, generator=g, dtype=torch.float64).expand(b, t).contiguous()
    lengths = torch.randint(1, t + 1, (b,), generator=g) if ragged else torch.full((b,), t)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(torch.float64)
    return old, lp, adv, mask


def _gate(lr, mask, eps=EPS, cp=CP, cn=CN):
    return fiberpo_gated_ratio(lr * mask, mask, eps, cp, cn)["G"]


def _domain_gate(lr, mask, gids, dids, eps=EPS, cp=(CP,) * 3, cn=(CN,) * 3):
    gs, ds = dense_segments(gids), dense_segments(dids)
    b = lr.shape[0]
    return fiberpo_domain_gated_ratio(lr * mask, mask, gs, ds, b, b, eps, cp, cn)["G"]


def _jac_r(gate, r):
    """Autograd Jacobian ∂𝒢_i/∂r_j of r ↦ 𝒢(r) over the flattened [B, T] tokens."""
    shape = r.shape
    J = torch.autograd.functional.jacobian(lambda rr: gate(torch.log(rr.view(shape))).reshape(-1), r.reshape(-1))
    return J


# --------------------------------------------------------------------------------------------------------------
# g_agg (Eq. 10)
# --------------------------------------------------------------------------------------------------------------

def test_g_agg_values_slopes_continuity_oddness():
    C, k = 0.12, torch.tensor(4.0, dtype=torch.float64)
    c_star = (1 + 1 / 4) * C
    cases = [(0.05, 0.05, 1.0), (0.13, 5 * C - 4 * 0.13, -4.0), (0.2, 0.0, 0.0), (-0.05, -0.05, 1.0),
             (-0.13, -(5 * C - 4 * 0.13), -4.0), (-0.2, 0.0, 0.0)]
    for x0, value, slope in cases:
        x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
        y = g_agg(x, C, k)
        (d,) = torch.autograd.grad(y, x)
        assert abs(float(y.detach()) - value) <= TOL64 and float(d) == slope, x0
    # continuity at |x| = C (value C) and at |x| = C* (value 0), from both sides
    h = 1e-12
    for s in (1.0, -1.0):
        for x0, v in ((C, C), (c_star, 0.0)):
            lo = g_agg(torch.tensor(s * (x0 - h), dtype=torch.float64), C, k)
            hi = g_agg(torch.tensor(s * (x0 + h), dtype=torch.float64), C, k)
            assert abs(float(lo) - s * v) < 1e-10 and abs(float(hi) - s * v) < 1e-10
    xs = torch.linspace(-0.3, 0.3, 601, dtype=torch.float64)
    assert torch.equal(g_agg(-xs, C, k), -g_agg(xs, C, k))                           # odd
    assert float(g_agg(xs, C, k).abs().max()) <= C                                     # |g| ≤ C


# --------------------------------------------------------------------------------------------------------------
# The gated ratio: first-order agreement, small drift, positivity, Prop. 5.2
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("domain", [False, True])
def test_gate_is_identity_with_identity_jacobian_at_r_equal_one(domain):
    _, _, _, mask = _batch(b=4, t=5, ragged=False)
    gids, dids = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 0])
    gate = (lambda lr: _domain_gate(lr, mask, gids, dids)) if domain else (lambda lr: _gate(lr, mask))
    r = torch.ones(4, 5, dtype=torch.float64)
    assert torch.equal(gate(torch.log(r)), r)                                          # 𝒢(1) = 1
    assert torch.equal(_jac_r(gate, r), torch.eye(20, dtype=torch.float64))             # Property 5.4
    # one-sided: just off r = 1 the Jacobian is I + O(|r - 1|) (coupling terms cancel, Eq. 20 with γ = 1)
    g = torch.Generator().manual_seed(3)
    r2 = 1 + 1e-7 * torch.randn(4, 5, generator=g, dtype=torch.float64)
    assert float((_jac_r(gate, r2) - torch.eye(20, dtype=torch.float64)).abs().max()) < 1e-6


@pytest.mark.parametrize("domain", [False, True])
def test_small_drift_gives_plain_ratio_and_gate_is_positive(domain):
    old, lp, _, mask = _batch(b=8, t=9, drift=0.004, seed=1)
    lr = masked_log_ratio(lp, old, mask)
    gids, dids = torch.arange(8) // 2, torch.arange(8) // 4
    G = _domain_gate(lr, mask, gids, dids) if domain else _gate(lr, mask)
    # all |u|, |v| ≤ ε and every aggregate in pass-through ⇒ 𝒢 = r (ratio decoupling + telescoping, §5.2)
    assert _close(G * mask, torch.exp(lr) * mask)
    # far off-policy the gate stays positive and bounded: |log 𝒢| ≤ Σ budgets + 2ε (g_agg ≤ C, clip ≤ ε)
    lr_big = 3.0 * torch.randn(8, 9, dtype=torch.float64) * mask
    G = _domain_gate(lr_big, mask, gids, dids) if domain else _gate(lr_big, mask)
    bound = (3 if domain else 1) * (CP + CN) + 2 * EPS
    assert bool((G > 0).all()) and float(torch.log(G).abs().max()) <= bound + TOL64


def _eq20(lr, mask, eps, cp, cn):
    """Prop. 5.2, Eq. 20, written out: 𝔍_ij = 𝒢_i/r_j · 1[τ_i = τ_j]·[1[|u_i|≤ε]1[i=j]
    + (γ^(l_j) - 1[|u_i|≤ε]1[l_i=l_j] - 1[|v_i|≤ε]1[l_i≠l_j]) / T_τ]."""
    b, t = lr.shape
    T = mask.sum(-1)
    ls_pos = (lr.clamp_min(0) * mask).sum(-1) / T
    ls_neg = ((-lr).clamp_min(0) * mask).sum(-1) / T
    l = torch.where(lr >= 0, 1.0, -1.0).to(lr.dtype)
    s_same = torch.where(l > 0, ls_pos[:, None], ls_neg[:, None])
    s_opp = torch.where(l > 0, ls_neg[:, None], ls_pos[:, None])
    u, v = l * lr - s_same, -s_opp                                                     # Eqs. 14, 15

    def gamma(x, c):
        return torch.where(x.abs() <= c, 1.0, torch.where(x.abs() < (1 + 1 / T) * c, -T, 0.0))

    g_pos, g_neg = gamma(ls_pos, cp), gamma(ls_neg, cn)
    G = _gate(lr, mask, eps, cp, cn)
    n = b * t
    J = torch.zeros(n, n, dtype=lr.dtype)
    for tau in range(b):                   # the oracle is allowed loops; the implementation is not
        for i in range(t):
            if not mask[tau, i]:
                continue
            for j in range(t):
                if not mask[tau, j]:
                    continue
                same = float(l[tau, i] == l[tau, j])
                gj = g_pos[tau] if l[tau, j] > 0 else g_neg[tau]
                a = float(u[tau, i].abs() <= eps) * float(i == j)
                bterm = (gj - float(u[tau, i].abs() <= eps) * same - float(v[tau, i].abs() <= eps) * (1 - same))
                J[tau * t + i, tau * t + j] = G[tau, i] / torch.exp(lr[tau, j]) * (a + bterm / T[tau])
    return J, u, v, ls_pos, ls_neg, T


def test_autograd_jacobian_equals_prop_5_2_and_is_block_diagonal():
    g = torch.Generator().manual_seed(7)
    b, t = 6, 4
    mask = torch.ones(b, t, dtype=torch.float64)
    mask[4, 3] = 0.0
    # rows drifting by different amounts so that pass-through, rollback and zeroed channels all occur
    # (T = 4: rollback of the + channel is 0.12 < log s⁺ < 0.15, of the - channel 0.06 < log s⁻ < 0.075)
    centre = torch.tensor([0.0, 0.135, -0.07, 0.4, 0.02, -0.3], dtype=torch.float64)[:, None]
    seen = set()
    checked = 0
    for _ in range(40):
        lr = (centre + 0.01 * torch.randn(b, t, generator=g, dtype=torch.float64)) * mask
        J, u, v, ls_pos, ls_neg, T = _eq20(lr, mask, EPS, CP, CN)
        margins = torch.cat([((u.abs() - EPS).abs() + (1 - mask) * 1).flatten(), (v.abs() - EPS).abs().flatten(),
                             (ls_pos - CP).abs(), (ls_pos - (1 + 1 / T) * CP).abs(),
                             (ls_neg - CN).abs(), (ls_neg - (1 + 1 / T) * CN).abs(), lr.abs()[mask > 0]])
        if float(margins.min()) < KINK_MARGIN:
            continue
        r = torch.exp(lr)
        Ja = _jac_r(lambda x: _gate(x, mask), r)
        valid = mask.reshape(-1) > 0
        assert _close(Ja[valid][:, valid], J[valid][:, valid], 1e-12)
        # block-diagonal over trajectories (Property 5.3): no entry couples two rows
        row = torch.arange(b).repeat_interleave(t)
        assert float(Ja[row[:, None] != row[None, :]].abs().max()) == 0.0
        for c, x, cc in ((0, ls_pos, CP), (1, ls_neg, CN)):
            reg = torch.where(x <= cc, 0, torch.where(x < (1 + 1 / T) * cc, 1, 2))
            seen |= {(c, int(k)) for k in reg}
        checked += 1
    assert checked >= 20
    assert {(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)} <= seen                   # every channel regime


def test_matches_numpy_reference():
    """The torch gates against the float64 NumPy reference of ``fiberlab.numerics.fiberpo`` (Eq. 7 and Eq. 31)."""
    from fiberlab.numerics import fiberpo as N

    old, lp, _, mask = _batch(b=8, t=6, drift=0.15, seed=11)
    lr = masked_log_ratio(lp, old, mask)
    keep = mask.reshape(-1) > 0
    traj = torch.arange(8).repeat_interleave(6)[keep].numpy()
    gids, dids = torch.arange(8) // 2, torch.arange(8) // 4
    ref = N.fiberpo_gated_ratio(lr.reshape(-1)[keep].numpy(), traj, EPS, CP, CN)
    ref_d = N.fiberpo_domain_gated_ratio(lr.reshape(-1)[keep].numpy(), traj, (gids[traj]).numpy(),
                                         (dids[traj]).numpy(), EPS, CP, CN)
    assert _close(_gate(lr, mask).reshape(-1)[keep], torch.as_tensor(ref))
    assert _close(_domain_gate(lr, mask, gids, dids).reshape(-1)[keep], torch.as_tensor(ref_d))


# --------------------------------------------------------------------------------------------------------------
# End to end on a tabular softmax policy
# --------------------------------------------------------------------------------------------------------------

def _tabular(seed=0, n_states=5, vocab=4, horizon=6, n_traj=6):
    """A tabular softmax policy π(a|s) = softmax(θ_s): fixed state sequences, sampled tokens, ragged lengths."""
    g = torch.Generator().manual_seed(seed)
    theta_old = torch.randn(n_states, vocab, generator=g, dtype=torch.float64)
    states = torch.randint(0, n_states, (n_traj, horizon), generator=g)
    probs = torch.softmax(theta_old[states], -1)
    actions = torch.multinomial(probs.reshape(-1, vocab), 1, generator=g).view(n_traj, horizon)
    mask = (torch.arange(horizon)[None, :] < torch.randint(2, horizon + 1, (n_traj, 1), generator=g)).double()
    adv = torch.randn(n_traj, 1, generator=g, dtype=torch.float64).expand(n_traj, horizon).contiguous()

    def log_prob(theta):
        return torch.log_softmax(theta[states], -1).gather(-1, actions[..., None]).squeeze(-1)

    return theta_old, log_prob, mask, adv


@pytest.mark.parametrize("name", ["fiberpo", "fiberpo_domain"])
def test_gradient_at_theta_old_equals_ungated_surrogate(name):
    theta_old, log_prob, mask, adv = _tabular()
    n = mask.shape[0]
    extra = {"group_ids": torch.arange(n) // 2, "domain_ids": torch.arange(n) // 4} if name == "fiberpo_domain" else {}
    old = log_prob(theta_old).detach()
    theta = theta_old.clone().requires_grad_()
    loss, _ = get_policy_loss(name)(old, log_prob(theta), adv, mask, "seq-mean-token-mean", None, **extra)
    (g_fib,) = torch.autograd.grad(loss, theta)
    theta2 = theta_old.clone().requires_grad_()
    r = torch.exp(log_prob(theta2) - old)
    # Σ r Â / (|Tj| T_τ), with verl's 1e-8 guard on T_τ as seq-mean-token-mean adds it (a 1e-9 relative shift)
    surrogate = ((r * adv * mask).sum(-1) / (mask.sum(-1) + VERL_SEQ_GUARD)).sum() / n
    (g_ref,) = torch.autograd.grad(-surrogate, theta2)
    assert float(g_ref.abs().max()) > 1e-3
    assert _close(g_fib, g_ref, 1e-14)                                               # machine precision
    assert abs(float(loss.detach()) + float(surrogate.detach())) <= 1e-14


def test_domain_reduces_to_fiberpo_for_trivial_hierarchy_and_in_pass_through():
    # trivial hierarchy: one trajectory per group, one group per domain, any drift (every regime)
    old, lp, adv, mask = _batch(b=8, t=6, drift=0.3, seed=5)
    ids = torch.arange(8)
    for drift_lp, gids, dids in ((lp, ids, ids),
                                 # pass-through at every level: telescoping (log w = log s⁺_τ - log s⁻_τ)
                                 (old + (lp - old) * (0.04 / 0.3), ids // 2, ids // 4)):
        a = drift_lp.clone().requires_grad_()
        b_ = drift_lp.clone().requires_grad_()
        la, ma = fiberpo(old, a, adv, mask)
        lb, mb = fiberpo_domain(old, b_, adv, mask, group_ids=gids, domain_ids=dids)
        (ga,), (gb,) = torch.autograd.grad(la, a), torch.autograd.grad(lb, b_)
        assert _close(lb, la) and _close(gb, ga)
        assert abs(ma["fiberpo/log_w_base_mean"] - mb["fiberpo/log_w_base_mean"]) < 1e-12
    # the pass-through case is not vacuous: some fiber clips are active there
    assert ma["fiberpo/fiber_clipfrac"] > 0 and ma["fiberpo/frac_traj_G-I"] == 1.0


def test_domain_is_not_block_diagonal_once_a_group_gate_leaves_pass_through():
    t = 3
    mask = torch.ones(4, t, dtype=torch.float64)
    gids, dids = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 0])
    g = torch.Generator().manual_seed(2)
    # group 0 drifts up by ~0.5, group 1 stays on-policy: log s⁺_g0 - log s⁺_D ≈ 0.25 > C⁺ (group gate zeroed)
    lr = torch.tensor([0.5, 0.5, 0.001, 0.001], dtype=torch.float64)[:, None] \
        + 0.01 * torch.rand(4, t, generator=g, dtype=torch.float64)
    r = torch.exp(lr)
    J = _jac_r(lambda x: _domain_gate(x, mask, gids, dids), r)
    row = torch.arange(4).repeat_interleave(t)
    grp = gids[row]
    cross_in_group = (row[:, None] != row[None, :]) & (grp[:, None] == grp[None, :])
    assert float(J[cross_in_group].abs().max()) > 1e-3
    Jf = _jac_r(lambda x: _gate(x, mask), r)                                          # FiberPO: block-diagonal
    assert float(Jf[row[:, None] != row[None, :]].abs().max()) == 0.0


def test_restorative_gradient_in_rollback():
    T = 5
    mask = torch.ones(3, T, dtype=torch.float64)
    old = -torch.rand(3, T, dtype=torch.float64) - 0.2                               # old + x ≤ 0 below
    adv = torch.ones(3, T, dtype=torch.float64)                                       # Â > 0
    for x0 in (CP + 0.2 * CP / T, CP + 0.5 * CP / T, CP + 0.9 * CP / T):             # inside (C⁺, (1+1/T)C⁺)
        x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
        loss, m = fiberpo(old, old + x, adv, mask)
        (d,) = torch.autograd.grad(-loss, x)                                          # dĴ/dx
        assert float(d) < 0 and m["fiberpo/frac_traj_G-II,r"] == 1.0
        # GRPO / PPO clip the same tokens (e^x > 1 + ε): their gradient is 0 there
        for name, cfg in (("grpo_rgf", {"clip_ratio": EPS}), ("grpo_rgf", {"clip_ratio": EPS, "rgf_min": False}),
                          ("ppo", {"clip_ratio": EPS})):
            x2 = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
            loss2, _ = get_policy_loss(name)(old, old + x2, adv, mask, "seq-mean-token-mean", cfg)
            (d2,) = torch.autograd.grad(-loss2, x2)
            assert float(d2) == 0.0


# --------------------------------------------------------------------------------------------------------------
# Micro-batches of one rank: the shared state
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("drift", [0.01, 0.3])
def test_micro_batches_with_state_exact_value_and_documented_gradient(drift):
    old, lp, adv, mask = _batch(b=8, t=5, drift=drift, seed=9)
    gids, dids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    n_seq, n_tok = 8, int(mask.sum())
    cfg = {"global_batch_info": {"global_batch_size": n_seq, "batch_num_tokens": n_tok, "dp_size": 1}}
    full = lp.clone().requires_grad_()
    lf, _ = fiberpo_domain(old, full, adv, mask, "seq-mean-token-mean", cfg, group_ids=gids, domain_ids=dids)
    (gf,) = torch.autograd.grad(lf, full)
    state = fiberpo_domain_state(old, lp, mask, gids, dids)
    micro = [torch.tensor([0, 2, 4, 6]), torch.tensor([1, 3, 5, 7])]                # every group split
    total, grad = 0.0, torch.zeros_like(lp)
    for rows in micro:
        x = lp[rows].clone().requires_grad_()
        l, _ = fiberpo_domain(old[rows], x, adv[rows], mask[rows], "seq-mean-token-mean", cfg,
                              group_ids=gids[rows], domain_ids=dids[rows], fiberpo_state=state)
        (g,) = torch.autograd.grad(l, x)
        total += float(l.detach())
        grad[rows] = g
        # oracle: the whole batch with the other micro-batch's rows as constants, loss restricted to these rows
        leaf = lp[rows].clone().requires_grad_()
        y = torch.index_put(lp.detach().clone(), (rows,), leaf)
        sel = torch.zeros_like(lp)
        sel[rows] = 1.0
        lo, _ = fiberpo_domain(old, y, adv, mask, "seq-mean-token-mean", cfg, group_ids=gids, domain_ids=dids,
                               rollout_is_weights=sel)
        (go,) = torch.autograd.grad(lo, leaf)
        assert _close(g, go)
    assert abs(total - float(lf.detach())) <= TOL64                                             # value: exact
    if drift == 0.01:
        assert _close(grad, gf)                    # pass-through at group/domain level: gradient exact too
    else:
        assert float((grad - gf).abs().max()) > 1e-6     # cross-micro-batch coupling terms are dropped


# --------------------------------------------------------------------------------------------------------------
# APC-Obj
# --------------------------------------------------------------------------------------------------------------

def test_apc_value_equals_soft_threshold_and_degenerates_with_single_visits():
    g = torch.Generator().manual_seed(4)
    old, lp, adv, mask = _batch(b=5, t=6, drift=0.2, seed=4)
    lr = masked_log_ratio(lp, old, mask)
    for delta in (0.01, 0.05, 0.2, 1.0):
        sid = torch.randint(0, 4, (5, 6), generator=g)                                # repeated states
        out = apc_gated_ratio(lr, mask, sid, 4, delta)
        dev = (torch.exp(lr) - 1) * mask
        n_s = torch.zeros(4, dtype=torch.float64).index_add_(0, sid.flatten(), mask.flatten())
        tv = torch.zeros(4, dtype=torch.float64).index_add_(0, sid.flatten(), dev.abs().flatten()) / n_s.clamp_min(1)
        lam = (n_s * (tv - delta)).clamp_min(0)[sid]                                  # λ_s = T_s (D̂_TV - δ)⁺
        soft = torch.sign(dev) * (dev.abs() - lam).clamp_min(0)
        assert _close((out["G"] - 1) * mask, soft * mask)
        loss, _ = apc(old, lp, adv, mask, "token-mean", {"apc_delta": delta}, state_ids=sid)
        assert abs(float(loss) + float(((1 + soft) * adv * mask).sum() / mask.sum())) <= TOL64   # Eq. 3
        # T_s = 1 everywhere (prefix states): 1 + clip(r - 1, ±δ) per token
        uniq = torch.arange(30).view(5, 6)
        out1 = apc_gated_ratio(lr, mask, uniq, 30, delta)
        assert _close(out1["G"] * mask, (1 + torch.clamp(dev, -delta, delta)) * mask)


def test_apc_gradient_is_the_formulas():
    """No stop-gradient: autograd of the soft-threshold objective equals central differences."""
    old, lp, adv, mask = _batch(b=3, t=4, drift=0.2, seed=6, ragged=False)
    sid = torch.tensor([[0, 1, 0, 2], [0, 1, 1, 2], [0, 2, 3, 3]])
    lr = lp - old
    same_state = (sid.flatten()[:, None] == sid.flatten()[None, :]) & ~torch.eye(12, dtype=torch.bool)
    found = False
    for delta in (0.02, 0.05, 0.1, 0.2):
        out = apc_gated_ratio(lr, mask, sid, 4, delta)
        rollback = out["clipped"] & ~out["zeroed"]
        x = lp.clone().requires_grad_()
        assert torch.autograd.gradcheck(
            lambda y: apc(old, y, adv, mask, "token-mean", {"apc_delta": delta}, state_ids=sid)[0], (x,),
            eps=1e-7, atol=1e-7)
        if rollback.any():
            # rollback couples a token to the other tokens of its state (value sign(Δ)·B, B = budget - others)
            J = torch.autograd.functional.jacobian(
                lambda y: apc_gated_ratio(y - old, mask, sid, 4, delta)["G"].flatten(), lp).reshape(12, 12)
            rows = rollback.flatten()
            assert float(J[rows][same_state[rows]].abs().max()) > 0
            assert float(J[rows, rows].abs().max()) == 0.0          # ... and independent of its own ratio
            found = True
    assert found


# --------------------------------------------------------------------------------------------------------------
# RGF baselines
# --------------------------------------------------------------------------------------------------------------

def test_rgf_baselines_with_and_without_min():
    old, lp, adv, mask = _batch(b=6, t=5, drift=0.4, seed=8)
    lr = lp - old
    r = torch.exp(lr)
    sgn = torch.sign(adv)
    eps = 0.2
    G_min = sgn * torch.minimum(torch.clamp(r, 1 - eps, 1 + eps) * sgn, r * sgn)      # App. C.4
    for use_min, G in ((True, G_min), (False, torch.clamp(r, 1 - eps, 1 + eps))):
        loss, _ = grpo_rgf(old, lp, adv, mask, "seq-mean-token-mean", {"rgf_min": use_min})
        ref = ((G * adv * mask).sum(-1) / (mask.sum(-1) + VERL_SEQ_GUARD)).mean()
        assert abs(float(loss) + float(ref)) <= TOL64
    s = torch.exp((lr * mask).sum(-1) / mask.sum(-1))[:, None]
    l = torch.sign((adv * mask).sum(-1))[:, None]
    for use_min, G in ((True, l * torch.minimum(torch.clamp(s, 1 - eps, 1 + eps) * l, s * l)),
                       (False, torch.clamp(s, 1 - eps, 1 + eps))):
        loss, _ = gspo(old, lp, adv, mask, "seq-mean-token-mean", {"rgf_min": use_min})
        ref = ((G * adv * mask).sum(-1) / (mask.sum(-1) + VERL_SEQ_GUARD)).mean()
        assert abs(float(loss) + float(ref)) <= TOL64


def _verl_gspo_config(low, high):
    fverl = pytest.importorskip("fiberlab.gpu.verl")
    return fverl.actor_config(clip_ratio_low=low, clip_ratio_high=high)


@pytest.mark.verl
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean",
                                  "seq-mean-token-sum-norm"])
def test_gspo_equals_verl_gspo_where_the_formulas_coincide(mode):
    """Coincide: advantage constant along each response (every outcome estimator) and ``rgf_min=True``. Then
    verl's GSPO-token ratio sg[s_τ]·π_t/sg[π_t] has s_τ's value, and its per-token gradient s_τ·∇log π_t
    averaged by ``seq-mean-token-mean`` (or summed with weights T_τ by the other modes) is exactly
    Â·∇s_τ = Â s_τ (1/T_τ) Σ_t ∇log π_t: same value and gradient in every mode. Differ: (i) a token-varying
    advantage — verl weights token t's gradient by Â_t, the paper's GSPO by the sequence mean of Â
    (and verl's per-token min uses sign(Â_t), the paper's l_τ = sign(Σ_t Â_t)); (ii) ``rgf_min=False``
    (Remark C.5), which verl does not offer. Both clamp log s_τ at 10 from above (verl's clamp)."""
    core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")
    cfg = _verl_gspo_config(0.05, 0.08)
    old, lp, adv, mask = _batch(b=8, t=7, drift=0.15, seed=12)
    mask = mask.bool()
    old[0] -= 12.0                                         # row 0 shifted down (its log-ratios unchanged) ...
    lp[0] -= 12.0
    lp[0] += 11.0                                          # ... so log s_τ can go beyond verl's clamp at 10 there
    a, b = lp.clone().requires_grad_(), lp.clone().requires_grad_()
    lv, mv = core_algos.compute_policy_loss_gspo(old, a, adv, mask, mode, cfg)
    lo, mo = gspo(old, b, adv, mask, mode, cfg)
    (ga,), (gb,) = torch.autograd.grad(lv, a), torch.autograd.grad(lo, b)
    assert _close(lo, lv) and _close(gb, ga)
    assert mv["actor/pg_clipfrac"] > 0 and abs(mv["actor/pg_clipfrac"] - mo["actor/pg_clipfrac"]) < 1e-7
    assert abs(mv["actor/ppo_kl"] - mo["actor/ppo_kl"]) < 1e-12
    # where they differ: token-varying advantages give different gradients (same value when unclipped)
    adv_tok = torch.randn(8, 7, dtype=torch.float64).abs() * torch.sign(adv)          # per-row sign kept
    a, b = lp.clone().requires_grad_(), lp.clone().requires_grad_()
    lv, _ = core_algos.compute_policy_loss_gspo(old, a, adv_tok, mask, "seq-mean-token-mean", cfg)
    lo, _ = gspo(old, b, adv_tok, mask, "seq-mean-token-mean", cfg)
    (ga,), (gb,) = torch.autograd.grad(lv, a), torch.autograd.grad(lo, b)
    assert _close(lo, lv) and float((ga - gb).abs().max()) > 1e-6


@pytest.mark.verl
def test_fiberpo_through_verl_registry_and_config():
    core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")
    fverl = pytest.importorskip("fiberlab.gpu.verl")
    snapshot = dict(core_algos.POLICY_LOSS_REGISTRY)
    try:
        fverl.register()
        assert core_algos.get_policy_loss_fn("gspo") is snapshot["gspo"]              # verl keeps its gspo
        assert core_algos.get_policy_loss_fn("fiberlab_gspo") is gspo
        keys = {"fiberpo_eps": 0.05, "fiberpo_c_pos": 0.15, "fiberpo_c_neg": 0.09}
        cfg = fverl.actor_config({"loss_mode": "fiberpo", **keys})
        assert cfg.policy_loss.loss_mode == "fiberpo" and cfg.policy_loss.fiberpo_eps == 0.05
        old, lp, adv, mask = _batch(b=6, t=5, drift=0.1, seed=13)
        fn = core_algos.get_policy_loss_fn(cfg.policy_loss.loss_mode)
        a, b = lp.clone().requires_grad_(), lp.clone().requires_grad_()
        lv, mv = fn(old, a, adv, mask.bool(), "seq-mean-token-mean", cfg)
        ld, md = fiberpo(old, b, adv, mask.bool(), "seq-mean-token-mean", keys)
        assert float(lv.detach()) == float(ld.detach()) and mv == md
        assert torch.equal(torch.autograd.grad(lv, a)[0], torch.autograd.grad(ld, b)[0])
        ld2, _ = fiberpo(old, lp, adv, mask.bool(), "seq-mean-token-mean", None)       # the defaults differ
        assert float(ld2) != float(ld.detach())
        # verl cannot feed fiberpo_domain its ids (the config refuses that loss_mode at start-up), but its config
        # keys still parse in verl's actor config, for a caller that passes the ids itself
        cfgd = fverl.actor_config({"loss_mode": "fiberpo", "fiberpo_c_pos_levels": [0.2, 0.15, 0.1]})
        fnd = core_algos.get_policy_loss_fn("fiberpo_domain")
        ids = torch.arange(6)
        lv, _ = fnd(old, lp, adv, mask, "seq-mean-token-mean", cfgd, group_ids=ids // 2, domain_ids=ids // 6)
        ld, _ = fiberpo_domain(old, lp, adv, mask, "seq-mean-token-mean",
                               {"fiberpo_c_pos_levels": [0.2, 0.15, 0.1]}, group_ids=ids // 2, domain_ids=ids // 6)
        assert float(lv) == float(ld)
        cfga = fverl.actor_config({"loss_mode": "fiberpo", "apc_delta": 0.07})
        assert cfga.policy_loss.apc_delta == 0.07
        with pytest.raises(Exception, match="passes a policy loss no ids"):
            fverl.actor_config({"loss_mode": "apc", "apc_delta": 0.07})
    finally:
        core_algos.POLICY_LOSS_REGISTRY.clear()
        core_algos.POLICY_LOSS_REGISTRY.update(snapshot)


# --------------------------------------------------------------------------------------------------------------
# Metrics and bad input
# --------------------------------------------------------------------------------------------------------------

def test_metrics_are_floats_and_regimes_partition_the_trajectories():
    old, lp, adv, mask = _batch(b=12, t=6, drift=0.2, seed=14)
    _, m = fiberpo(old, lp, adv, mask)
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
    assert {"actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"} <= set(m)
    assert abs(sum(m[f"fiberpo/frac_traj_{k}"] for k in GLOBAL_REGIMES) - 1.0) < 1e-12
    assert m["actor/pg_clipfrac"] == m["fiberpo/fiber_clipfrac"]


def test_bad_input_raises_value_error_naming_the_argument():
    old, lp, adv, mask = _batch(b=4, t=5)
    ids = torch.arange(4)
    for key in ("fiberpo_eps", "fiberpo_c_pos", "fiberpo_c_neg"):
        for bad in (0.0, -0.1, float("nan"), float("inf"), "x"):
            with pytest.raises(ValueError, match=key):
                fiberpo(old, lp, adv, mask, config={key: bad})
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="apc_delta"):
            apc(old, lp, adv, mask, config={"apc_delta": bad}, state_ids=torch.zeros(4, 5, dtype=torch.long))
    for bad in ([0.1, 0.1], [0.1, -0.1, 0.1], "abc"):
        with pytest.raises(ValueError, match="fiberpo_c_pos_levels"):
            fiberpo_domain(old, lp, adv, mask, config={"fiberpo_c_pos_levels": bad}, group_ids=ids, domain_ids=ids)
    with pytest.raises(ValueError, match="group_ids"):
        fiberpo_domain(old, lp, adv, mask, domain_ids=ids)
    with pytest.raises(ValueError, match="domain_ids"):
        fiberpo_domain(old, lp, adv, mask, group_ids=ids)
    with pytest.raises(ValueError, match="group_ids"):
        fiberpo_domain(old, lp, adv, mask, group_ids=torch.arange(3), domain_ids=ids)
    with pytest.raises(ValueError, match="domain_ids"):
        fiberpo_domain(old, lp, adv, mask, group_ids=ids, domain_ids=torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="group_ids/domain_ids"):
        fiberpo_domain(old, lp, adv, mask, group_ids=torch.zeros(4, dtype=torch.long), domain_ids=ids)
    with pytest.raises(ValueError, match="state_ids"):
        apc(old, lp, adv, mask)
    with pytest.raises(ValueError, match="state_ids"):
        apc(old, lp, adv, mask, state_ids=torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="state_ids"):
        apc(old, lp, adv, mask, state_ids=torch.zeros(4, 5))
    with pytest.raises(ValueError, match="rgf_min"):
        gspo(old, lp, adv, mask, config={"rgf_min": "yes"})
    with pytest.raises(ValueError, match="unexpected"):
        fiberpo(old, lp, adv, mask, group_ids=ids)
    bad = lp.clone()
    bad[1, 2] = float("nan")
    for fn, kw in ((fiberpo, {}), (fiberpo_domain, {"group_ids": ids, "domain_ids": ids}),
                   (apc, {"state_ids": torch.zeros(4, 5, dtype=torch.long)}), (gspo, {}), (grpo_rgf, {})):
        with pytest.raises(ValueError, match="log_prob"):
            fn(old, bad, adv, mask, **kw)


def test_defaults_documented():
    assert (EPS, CP, CN) == (0.03, 0.12, 0.06) and APC_DELTA == pytest.approx(CP + CN)
    assert CN < CP and EPS < (CP + CN) / 4                                             # C⁻ < C⁺, ε ≪ δ


def test_bench_fiberpo_smoke():
    from fiberlab.bench import bench_fiberpo

    res = bench_fiberpo(1 << 12, 2, torch.device("cpu"), scaling=(1 << 10, 1 << 11))
    assert set(res["ratios"]) >= {"fiberpo / ppo (fwd+bwd)", "fiberpo_domain / ppo (fwd+bwd)"}
    assert all(v > 0 for v in res["seconds"].values()) and len(res["scaling"]) == 2


def test_grpo_is_the_rgf_form():
    """The issue's name for GRPO in RGF form: ``grpo`` is the same function as ``grpo_rgf``."""
    assert get_policy_loss("grpo") is get_policy_loss("grpo_rgf")
