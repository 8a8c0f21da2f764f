"""Two gloo processes, every FiberPO-Domain group and domain split across them, give the single-process loss
and gradients — including Prop. 5.2's cross-trajectory coupling terms, which flow through the all-reduced
group/domain aggregates (``fiberlab.gpu.segments.segment_sum_global``; spec A9).

Each rank holds every other row of the batch (so every group and every domain has members on both ranks) and
computes the loss with ``process_group="world"`` and verl's global normalisation (``global_batch_size`` = all
sequences, ``batch_num_tokens`` = all tokens, ``dp_size`` = 1 so that the rank losses *sum* to the global loss).
The sum of the rank losses and the per-row gradients must equal one process holding everything, to float64
round-off (only the summation order differs). The drifts put group and domain gates out of pass-through, and
the test checks that the coupling matters there: dropping it (each rank's aggregates differentiated only through
its own rows, the micro-batch state of :func:`fiberlab.gpu.fiberpo.fiberpo_domain_state`) changes the gradient.
``apc`` with states shared across the ranks goes through the same exchange.
"""

from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fiberlab.gpu.fiberpo import fiberpo_domain_state
from fiberlab.gpu.losses import get_policy_loss

WORLD = 2
# float64, sums over ≤ 32 rows in a different order across ranks: round-off ≲ 1e-15 relative.
TOL = 1e-12
#: (drift of the log-ratios, aggregation mode, per-level budgets or None = shared C±)
CASES = [(0.02, "seq-mean-token-mean", None), (0.25, "seq-mean-token-mean", None),
         (0.25, "token-mean", None), (0.6, "seq-mean-token-sum", ([0.5, 0.3, 0.12], [0.4, 0.2, 0.06]))]
APC_MODES = ["token-mean", "seq-mean-token-mean"]


def _batch(drift=0.25):
    g = torch.Generator().manual_seed(4321)
    n_dom, n_grp_per_dom, k, t = 2, 3, 4, 6
    b = n_dom * n_grp_per_dom * k
    old = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3 - 0.05
    # one common drift per group (so group aggregates differ from the domain's) plus per-token noise
    grp_shift = torch.randn(n_dom * n_grp_per_dom, generator=g, dtype=torch.float64).repeat_interleave(k)
    step = drift * (grp_shift[:, None] + 0.5 * torch.randn(b, t, generator=g, dtype=torch.float64))
    lp = torch.where(old + step > 0, old - step, old + step)          # reflected: old - step ≤ 2·old ≤ 0 there
    mask = (torch.arange(t)[None, :] < torch.randint(2, t + 1, (b,), generator=g)[:, None]).to(torch.float64)
    adv = torch.randn(b, 1, generator=g, dtype=torch.float64).expand(b, t).contiguous()
    gids = torch.arange(b) // k
    dids = gids // n_grp_per_dom
    sids = torch.randint(0, 5, (b, t), generator=g)                    # APC states shared across rows/ranks
    return old, lp, adv, mask, gids, dids, sids


def _cfg(n_seq, n_tok, levels=None):
    cfg = {"global_batch_info": {"global_batch_size": n_seq, "batch_num_tokens": n_tok, "dp_size": 1},
           "apc_delta": 0.15}
    if levels is not None:
        cfg["fiberpo_c_pos_levels"], cfg["fiberpo_c_neg_levels"] = levels
    return cfg


def _run_domain(old, lp, adv, mask, gids, dids, mode, cfg, **extra):
    lp = lp.clone().requires_grad_()
    loss, m = get_policy_loss("fiberpo_domain")(old, lp, adv, mask, mode, cfg, group_ids=gids, domain_ids=dids,
                                                **extra)
    (grad,) = torch.autograd.grad(loss, lp)
    return loss.detach(), grad


def _run_apc(old, lp, adv, mask, sids, mode, cfg, **extra):
    lp = lp.clone().requires_grad_()
    loss, _ = get_policy_loss("apc")(old, lp, adv, mask, mode, cfg, state_ids=sids, **extra)
    (grad,) = torch.autograd.grad(loss, lp)
    return loss.detach(), grad


def _worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = []
        for drift, mode, levels in CASES:
            old, lp, adv, mask, gids, dids, _ = _batch(drift)
            rows = torch.arange(gids.shape[0])[rank::WORLD]
            cfg = _cfg(gids.shape[0], int(mask.sum()), levels)
            loss, grad = _run_domain(old[rows], lp[rows], adv[rows], mask[rows], gids[rows], dids[rows], mode, cfg,
                                     process_group="world")
            total = loss.clone()
            dist.all_reduce(total)
            results.append((total, rows, grad))
        for mode in APC_MODES:
            old, lp, adv, mask, _, _, sids = _batch(0.2)
            rows = torch.arange(sids.shape[0])[rank::WORLD]
            cfg = _cfg(sids.shape[0], int(mask.sum()))
            loss, grad = _run_apc(old[rows], lp[rows], adv[rows], mask[rows], sids[rows], mode, cfg,
                                  process_group="world", num_states=5)
            total = loss.clone()
            dist.all_reduce(total)
            results.append((total, rows, grad))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _assert_split_equals_whole(per_rank, i, loss, grad, label):
    split_grad = torch.zeros_like(grad)
    for r in range(WORLD):
        total, rows, g = per_rank[r][i]
        assert abs(float(total - loss)) <= TOL * max(1.0, abs(float(loss))), label
        split_grad[rows] = g
    scale = max(1.0, float(grad.abs().max()))
    assert float((split_grad - grad).abs().max()) <= TOL * scale, label
    assert float(grad.abs().max()) > 1e-3, label                    # the comparison is not between zeros


def test_split_groups_and_domains_across_two_gloo_ranks_equal_single_process():
    with tempfile.TemporaryDirectory() as d:
        init_file = os.path.join(d, "init")
        mp.spawn(_worker, args=(init_file, d), nprocs=WORLD, join=True)
        per_rank = [torch.load(os.path.join(d, f"rank{r}.pt")) for r in range(WORLD)]
    coupling_mattered = False
    for i, (drift, mode, levels) in enumerate(CASES):
        old, lp, adv, mask, gids, dids, _ = _batch(drift)
        cfg = _cfg(gids.shape[0], int(mask.sum()), levels)
        loss, grad = _run_domain(old, lp, adv, mask, gids, dids, mode, cfg)
        _assert_split_equals_whole(per_rank, i, loss, grad, (drift, mode))
        # Without the gradient through the exchange (aggregates of the other rank as constants) the gradient
        # would differ wherever a group or domain gate is out of pass-through.
        state = fiberpo_domain_state(old, lp, mask, gids, dids)
        local = torch.zeros_like(grad)
        for r in range(WORLD):
            rows = torch.arange(gids.shape[0])[r::WORLD]
            _, g = _run_domain(old[rows], lp[rows], adv[rows], mask[rows], gids[rows], dids[rows], mode, cfg,
                               fiberpo_state=state)
            local[rows] = g
        gap = float((local - grad).abs().max())
        if drift <= 0.02:
            assert gap <= TOL * max(1.0, float(grad.abs().max()))      # pass-through: no coupling to lose
        else:
            coupling_mattered |= gap > 1e-4
    assert coupling_mattered
    for j, mode in enumerate(APC_MODES):
        old, lp, adv, mask, _, _, sids = _batch(0.2)
        loss, grad = _run_apc(old, lp, adv, mask, sids, mode, _cfg(sids.shape[0], int(mask.sum())), num_states=5)
        _assert_split_equals_whole(per_rank, len(CASES) + j, loss, grad, ("apc", mode))
