"""Claims about the objectives themselves: PPO as verl computes it, and the BandPO loss (BandPO §2.1).

Both are checked in the gpu layer: the PyTorch loss against the float64 NumPy reference of
``fiberlab.numerics.ppo`` (value and analytic gradient), and against the real verl 0.9.1.
"""

from __future__ import annotations

import numpy as np
import torch

from fiberlab.registry import Evidence, claim

ppo_vanilla = claim(
    "ppo.vanilla", paper="classical", source="PPO (Schulman et al. 2017) + dual clip (Ye et al. 2019); verl core_algos",
    statement="The PPO clipped surrogate with asymmetric clip-higher and dual clip, aggregated in verl's four modes, "
              "has value and gradient max(-A r, -A clip(r, 1-ε₋, 1+ε₊)) (floored at -cA for A < 0), as verl's "
              "`vanilla` loss computes it.")

bandpo_loss = claim(
    "bandpo.loss", paper="BandPO", source="BandPO §2.1 (loss)",
    statement="BandPO's loss is PPO's clipped surrogate with the per-token Band bounds [r̲(p_t), r̄(p_t)] in place of "
              "[1-ε₋, 1+ε₊]; the bounds carry no gradient, so a clipped token gets zero gradient and the others "
              "-A r ∂log π.")

#: float64 loss and gradient against the NumPy reference: the same sums in a different order, relative to the
#: scale Σ|a w L| of the terms: a few ulps per term → 1e-12 leaves two orders of margin on these sizes.
LOSS_RTOL = 1e-12
MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def _reflected(old: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """``old + step``, with the step reflected (``old - step``) where ``old + step`` would exceed 0, so the new
    log-prob is one (then step > -old ≥ 0 and old - step ≤ 2·old ≤ 0): a ratio never exceeds 1/p_old."""
    return torch.where(old + step > 0, old - step, old + step)


def _batch(seed: int, B: int = 6, T: int = 9) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    old = torch.log_softmax(3 * torch.randn(B, T, 16, generator=g, dtype=torch.float64), -1)[..., 0]
    step = 0.4 * torch.randn(B, T, generator=g, dtype=torch.float64)
    new = _reflected(old, step)
    adv = torch.randn(B, 1, generator=g, dtype=torch.float64).expand(B, T).contiguous()
    mask = (torch.rand(B, T, generator=g) < 0.8)
    mask[0] = True
    return {"old": old, "new": new, "adv": adv, "mask": mask}


def _against_reference(loss_fn, config: dict, bounds_fn) -> tuple[float, int]:
    from fiberlab.numerics.ppo import policy_loss_np

    worst, n = 0.0, 0
    for seed in range(12):
        x = _batch(seed)
        lower, upper = bounds_fn(x["old"])
        for mode in MODES:
            lp = x["new"].clone().requires_grad_(True)
            loss, _ = loss_fn(x["old"], lp, x["adv"], x["mask"], mode, config)
            loss.backward()
            ref, ref_grad = policy_loss_np(x["old"].numpy(), x["new"].numpy(), x["adv"].numpy(),
                                           x["mask"].numpy(), mode, lower, upper, config.get("clip_ratio_c", 3.0))
            scale = max(abs(ref), float(np.abs(ref_grad).sum()), 1e-300)
            worst = max(worst, abs(loss.item() - ref) / scale,
                        float(np.abs(lp.grad.numpy() - ref_grad).max()) / scale)
            n += 1
    return worst, n


@ppo_vanilla.check("gpu")
def _ppo_matches_float64_reference() -> Evidence:
    from fiberlab.gpu.losses import ppo_loss

    cfg = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0}
    worst, n = _against_reference(ppo_loss, cfg, lambda old: (0.8, 1.28))
    return Evidence.within(worst, LOSS_RTOL, n, detail="fiberlab `ppo` vs the NumPy reference with analytic "
                                                      "gradient, clip-higher 0.2/0.28, dual clip c = 3, 4 aggregation "
                                                      "modes, 12 random batches; error relative to Σ|terms|")


@ppo_vanilla.check("gpu")
def _ppo_bitwise_equal_to_verl() -> Evidence:
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    from fiberlab.gpu.losses import ppo_loss
    from fiberlab.gpu.verl import actor_config

    vanilla = get_policy_loss_fn("vanilla")
    cfg = actor_config(clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0)
    differing, n = 0, 0
    for seed in range(8):
        x = {k: (v.float() if v.is_floating_point() else v) for k, v in _batch(seed).items()}
        for mode in MODES:
            out = []
            for fn in (vanilla, ppo_loss):
                lp = x["new"].clone().requires_grad_(True)
                loss, metrics = fn(x["old"], lp, x["adv"], x["mask"], mode, cfg)
                loss.backward()
                out.append((loss.detach(), lp.grad, metrics))
            (l0, g0, m0), (l1, g1, m1) = out
            same = torch.equal(l0, l1) and torch.equal(g0, g1) and all(m0[k] == m1[k] for k in m0)
            differing += 0 if same else 1
            n += 1
    return Evidence(passed=differing == 0, max_error=float(differing), tolerance=0.0, cases=n,
                    detail="float32, bool mask, real verl 0.9.1 FSDPActorConfig: loss, gradient and the three metrics "
                           "bitwise equal to verl's `vanilla` in every case (max_error counts differing cases)")


@bandpo_loss.check("gpu")
def _bandpo_matches_reference_with_band_bounds() -> Evidence:
    from fiberlab.gpu.band import band_bounds
    from fiberlab.gpu.losses import bandpo_loss as loss_fn

    worst, n = 0.0, 0
    for div in ("kl", "tv", "chi2"):
        cfg = {"band_divergence": div, "band_delta": 0.05, "clip_ratio_c": 10.0}
        w, k = _against_reference(loss_fn, cfg, lambda old: tuple(t.numpy() for t in band_bounds(old, div, 0.05)))
        worst, n = max(worst, w), n + k
    return Evidence.within(worst, LOSS_RTOL, n, detail="`bandpo` (KL, TV, χ², δ = 0.05, c = 10) vs the NumPy "
                                                      "reference fed the Band bounds: value and gradient, where the "
                                                      "reference's gradient is zero exactly on clipped tokens")


@bandpo_loss.check("gpu")
def _bandpo_through_verl_registry() -> Evidence:
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    from fiberlab.gpu.losses import bandpo_loss as loss_fn
    from fiberlab.gpu.verl import actor_config, register

    register()
    via_verl = get_policy_loss_fn("bandpo")
    differing, n = 0, 0
    for div in ("kl", "tv", "chi2"):
        cfg = actor_config({"loss_mode": "bandpo", "band_divergence": div, "band_delta": 0.1}, clip_ratio_c=10.0)
        plain = {"band_divergence": div, "band_delta": 0.1, "clip_ratio_c": 10.0}
        for seed in range(4):
            x = {k: (v.float() if v.is_floating_point() else v) for k, v in _batch(100 + seed).items()}
            out = []
            for fn, c in ((via_verl, cfg), (loss_fn, plain)):
                lp = x["new"].clone().requires_grad_(True)
                loss, metrics = fn(x["old"], lp, x["adv"], x["mask"], "seq-mean-token-mean", c)
                loss.backward()
                out.append((loss.detach(), lp.grad, metrics))
            (l0, g0, m0), (l1, g1, m1) = out
            differing += 0 if (torch.equal(l0, l1) and torch.equal(g0, g1) and m0 == m1) else 1
            n += 1
    return Evidence(passed=differing == 0, max_error=float(differing), tolerance=0.0, cases=n,
                    detail="`bandpo` looked up in verl's POLICY_LOSS_REGISTRY after register(), with a real verl "
                           "actor config (FiberlabPolicyLossConfig), equals the direct call with a plain dict, bitwise")


def flat_tie_batch(dtype: torch.dtype, end: float, n: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(old_log_prob, log_prob, advantages)``, shape ``[1, n]``: ratios one ulp *outside* the clip end ``end``
    (0.8 or 1.28 here) whose -A·r and -A·end round to the same float, a tie of the two branches where the clip
    is flat. Searched, not assumed: log-ratios one ulp apart around log(end) until exp lands on the float next to
    ``end``, then advantages (A < 0 below 1, A > 0 above) until the products tie. The log-ratio ``ℓ`` is
    ``log_prob - old_log_prob`` exactly: ``(0, ℓ)`` for ℓ < 0 and ``(-ℓ, 0)`` for ℓ > 0, both log-probabilities."""
    e = torch.tensor(end, dtype=dtype)
    outside = torch.nextafter(e, torch.tensor(0.0 if end < 1 else float("inf"), dtype=dtype))
    lp = torch.log(outside.double()).to(dtype)
    for _ in range(64):
        if torch.exp(lp) == outside:
            break
        lp = torch.nextafter(lp, torch.tensor(float("inf") if torch.exp(lp) < outside else -float("inf"), dtype=dtype))
    if torch.exp(lp) != outside:
        raise AssertionError(f"no log-prob maps onto the float next to {end} in {dtype}")
    sign = -1.0 if end < 1 else 1.0
    adv = sign * torch.linspace(0.5, 3.0, 4000, dtype=torch.float64).to(dtype)
    adv = adv[(-adv * outside) == (-adv * e)][:n]
    if adv.numel() == 0:
        raise AssertionError(f"no advantage ties -A·r with -A·{end} in {dtype}")
    old = torch.zeros(1, adv.numel(), dtype=dtype)
    if lp > 0:
        return old - lp, old.clone(), adv[None, :]
    return old, lp.expand(1, adv.numel()).clone(), adv[None, :]


@ppo_vanilla.check("gpu")
def _ppo_equal_to_verl_at_flat_ties() -> Evidence:
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    from fiberlab.gpu.losses import ppo_loss
    from fiberlab.gpu.verl import actor_config

    vanilla = get_policy_loss_fn("vanilla")
    cfg = actor_config(clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0)
    differing, n, halved = 0, 0, 0
    for dtype in (torch.float32, torch.float64):
        for end in (0.8, 1.28):
            old, new, adv = flat_tie_batch(dtype, end)
            mask = torch.ones_like(old, dtype=torch.bool)
            out = []
            for fn in (vanilla, ppo_loss):
                lp = new.clone().requires_grad_(True)
                loss, metrics = fn(old, lp, adv, mask, "token-mean", cfg)
                loss.backward()
                out.append((loss.detach(), lp.grad, metrics))
            (l0, g0, m0), (l1, g1, m1) = out
            differing += 0 if (torch.equal(l0, l1) and torch.equal(g0, g1) and m0 == m1) else 1
            halved += int(torch.equal(g0, 0.5 * (-adv * torch.exp(new - old)) / adv.numel()))
            n += 1
    return Evidence(passed=differing == 0 and halved == n, max_error=float(differing), tolerance=0.0, cases=n,
                    detail="ratios one ulp outside a clip end whose -A·r rounds to -A·clip(r): torch.maximum splits the "
                           "tie and the flat clamp passes none of its half, so verl's gradient is half the unclipped "
                           f"one ({halved}/{n} cases); fiberlab's written-out backward matches it bitwise")


def active_end_case(dtype: torch.dtype, seed: int, k: int):
    """``(old_log_prob, log_prob, advantages, r̲, r̄, b)`` for ``k`` tokens, b = r̄ where A > 0 and r̲ elsewhere
    (KL band, δ = 0.3), a tenth of the advantages 0, and about a third of the ratios placed exactly on b or one
    ulp either side of it (ties of the two branches after rounding)."""
    from fiberlab.gpu.band import band_bounds

    g = torch.Generator().manual_seed(seed)
    old = (-10.0 * torch.rand(k, generator=g, dtype=torch.float64) ** 2).to(dtype)
    adv = torch.randn(k, generator=g, dtype=torch.float64).to(dtype)
    adv[torch.rand(k, generator=g) < 0.1] = 0.0
    lower, upper = band_bounds(old, "kl", 0.3)
    b = torch.where(adv > 0, upper, lower)
    target = torch.log(b.double()).to(dtype)
    step = torch.randint(-1, 2, (k,), generator=g)
    nudged = torch.nextafter(target, torch.where(step > 0, torch.tensor(float("inf"), dtype=dtype),
                                                 torch.tensor(-float("inf"), dtype=dtype)))
    lp = _reflected(old, (0.5 * torch.randn(k, generator=g, dtype=torch.float64)).to(dtype))
    lp = torch.where(torch.rand(k, generator=g) < 0.3, old + torch.where(step == 0, target, nudged), lp)
    return old, torch.where(torch.isfinite(lp), lp, old), adv, lower, upper, b


@bandpo_loss.check("gpu")
def _bandpo_active_end_is_the_two_sided_surrogate() -> Evidence:
    from fiberlab.gpu.losses import clipped_surrogate

    differing, n, ties = 0, 0, 0
    for dtype in (torch.float32, torch.float64):
        for seed in range(8):
            old, lp, adv, lower, upper, b = active_end_case(dtype, seed, 256)
            outs = []
            for lo, up in ((lower, upper), (b, None)):
                x = lp.clone().requires_grad_(True)
                loss, _, ratio, ind = clipped_surrogate(x, old, adv, lo, up, 10.0)
                loss.sum().backward()
                outs.append((loss.detach(), ind["clipped"], ind["dual"], x.grad))
                ties += int(((-adv * ratio) == (-adv * b)).sum()) if up is None else 0
            differing += 0 if all(torch.equal(a, z) for a, z in zip(*outs)) else 1
            n += 1
    return Evidence(passed=differing == 0 and ties > 0, max_error=float(differing), tolerance=0.0, cases=n,
                    detail="the surrogate fed only the end of the band the clip can reach (r̄ where A > 0, r̲ "
                           "elsewhere: what `bandpo` computes, one fused pass) equals the two-sided clip(r, r̲, r̄) "
                           f"in value, clip and dual-clip indicators and gradient, bitwise; {ties} ties of the two "
                           "branches among the tokens")
