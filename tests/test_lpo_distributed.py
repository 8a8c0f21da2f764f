"""Two gloo processes, every LPO group split across them, give the single-process loss and gradients.

Each rank holds every other row of the batch (so every group has members on both ranks), computes the loss with
``process_group="world"`` (group aggregates all-reduced through :mod:`fiberlab.gpu.segments`) and verl's global
normalisation (``global_batch_size`` = all sequences, ``dp_size`` = 1 so that the rank losses *sum* to the
global loss). The sum of the rank losses and the per-row gradients must equal one process holding everything,
to float64 round-off (only the summation order differs).
"""

from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fiberlab.gpu.losses import get_policy_loss

WORLD = 2
# float64, sums over ≤ 32 rows in a different order across ranks: round-off ≲ 1e-15 relative.
TOL = 1e-12
CASES = [("fwd", "grpo", "seq-mean-token-sum"), ("rev", "grpo", "seq-mean-token-sum"),
         ("js", "maxrl", "token-mean"), ("hellinger", "rloo", "seq-mean-token-sum"),
         ("rev", 0.3, "token-mean")]


def _batch():
    g = torch.Generator().manual_seed(1234)
    n_groups, k, t = 4, 6, 7
    b = n_groups * k
    old = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    step = 0.4 * torch.randn(b, t, generator=g, dtype=torch.float64)
    lp = torch.where(old + step > 0, old - step, old + step)          # reflected: old - step ≤ 2·old ≤ 0 there
    mask = torch.arange(t)[None, :] < torch.randint(1, t + 1, (b,), generator=g)[:, None]
    rewards = (torch.rand(b, generator=g, dtype=torch.float64) < 0.5).to(torch.float64)
    rewards[:k] = 1.0                                   # a zero-variance group as well
    ids = torch.arange(b) // k
    return old, lp, mask, rewards, ids


def _run(old, lp, mask, rewards, ids, div, tau, mode, process_group, n_seq, n_tok):
    lp = lp.clone().requires_grad_()
    cfg = {"lpo_divergence": div, "lpo_tau": tau,
           "global_batch_info": {"global_batch_size": n_seq, "batch_num_tokens": n_tok, "dp_size": 1}}
    loss, _ = get_policy_loss("lpo")(old, lp, None, mask, mode, cfg, rewards=rewards, group_ids=ids,
                                     process_group=process_group)
    (grad,) = torch.autograd.grad(loss, lp)
    return loss.detach(), grad


def _worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        old, lp, mask, rewards, ids = _batch()
        rows = torch.arange(ids.shape[0])[rank::WORLD]
        n_seq, n_tok = ids.shape[0], int(mask.sum())
        results = []
        for div, tau, mode in CASES:
            loss, grad = _run(old[rows], lp[rows], mask[rows], rewards[rows], ids[rows], div, tau, mode,
                              "world", n_seq, n_tok)
            total = loss.clone()
            dist.all_reduce(total)
            results.append((total, rows, grad))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_split_groups_across_two_gloo_ranks_equal_single_process():
    with tempfile.TemporaryDirectory() as d:
        init_file = os.path.join(d, "init")
        mp.spawn(_worker, args=(init_file, d), nprocs=WORLD, join=True)
        per_rank = [torch.load(os.path.join(d, f"rank{r}.pt")) for r in range(WORLD)]
    old, lp, mask, rewards, ids = _batch()
    for i, (div, tau, mode) in enumerate(CASES):
        loss, grad = _run(old, lp, mask, rewards, ids, div, tau, mode, None, ids.shape[0], int(mask.sum()))
        split_grad = torch.zeros_like(grad)
        for r in range(WORLD):
            total, rows, g = per_rank[r][i]
            assert abs(float(total - loss)) <= TOL * max(1.0, abs(float(loss))), (div, tau, mode)
            split_grad[rows] = g
        scale = max(1.0, float(grad.abs().max()))
        assert float((split_grad - grad).abs().max()) <= TOL * scale, (div, tau, mode)
        assert float(grad.abs().max()) > 1e-3          # the comparison is not between zeros
