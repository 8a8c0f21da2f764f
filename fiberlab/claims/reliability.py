"""The input contract of the objectives: every dtype, extreme but valid inputs, finite results or a named error.

Not a paper's statement but the one every paper's loss relies on when it is trained: a loss that returns NaN,
inf or a silent zero on finite input stops a run (or, worse, does not). Checked in the gpu layer by a seeded
sweep over dtype × objective × extreme inputs, and by the promise that half inputs are computed in float32.
"""

from __future__ import annotations

import math

import torch

from fiberlab.registry import Evidence, claim

objectives_finite = claim(
    "objectives.finite", paper="classical", source="fiberlab's objective contract (verl's policy-loss signature; "
                                                   "IEEE 754 ranges)",
    statement="For every finite, valid input in float16, bfloat16, float32 or float64 (log-probs ≤ 0, log-ratios "
              "to ±1000, advantages to 1e30, any δ and τ), every objective returns a finite loss, gradient and "
              "metrics, or a ValueError naming the argument or key whose true result is beyond the working dtype; "
              "half inputs are computed in float32.")

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: (objective, config) pairs of the sweep: every registered objective, BandPO's three divergences, LPO's five.
VARIANTS = (("ppo", {}), ("bandpo", {"band_divergence": "kl"}), ("bandpo", {"band_divergence": "tv"}),
            ("bandpo", {"band_divergence": "chi2"}), ("grpo_rgf", {}), ("gspo", {}), ("fiberpo", {}),
            ("fiberpo_domain", {}), ("apc", {}), ("lpo", {"lpo_divergence": "fwd"}),
            ("lpo", {"lpo_divergence": "rev"}), ("lpo", {"lpo_divergence": "js"}),
            ("lpo", {"lpo_divergence": "hellinger"}), ("lpo", {"lpo_divergence": "chi2"}), ("lpo_pointwise", {}))
#: Every argument or key a ValueError of the contract may name.
NAMES = ("old_log_prob", "log_prob", "advantages", "rewards", "lpo_tau", "lpo_divergence", "band_delta")
B, T = 4, 5


def _extras(name: str, rewards: torch.Tensor) -> dict:
    from fiberlab.gpu.losses import batch_extras

    return batch_extras(name, rewards=rewards, group_ids=torch.tensor([0, 0, 1, 1]),
                        domain_ids=torch.zeros(B, dtype=torch.long), state_ids=torch.arange(B * T).view(B, T) % 3)


def sweep_case(seed: int, dtype: torch.dtype, extreme: bool) -> dict:
    """One batch: log p per token from {0, -tiny, -U(0,1), -U(0,30), -U(0,1000)}; log-ratios N(0, 0.3²) or, when
    ``extreme``, N(0, 1000²), reflected so that log π ≤ 0; advantages N(0, 1) or N(0, 1e30²) (clamped to a
    quarter of the dtype's max); rewards {0, 1} or {0, 100}; δ and τ drawn from their extreme ranges."""
    g = torch.Generator().manual_seed(seed)
    fmax = torch.finfo(dtype).max
    kind = torch.randint(5, (B, T), generator=g)
    u = torch.rand(B, T, generator=g, dtype=torch.float64)
    choices = torch.stack([torch.zeros_like(u), torch.full_like(u, -torch.finfo(dtype).tiny), -u, -30 * u,
                           -min(1000.0, fmax) * u])
    old = choices.gather(0, kind[None]).squeeze(0)
    lr = (1000.0 if extreme else 0.3) * torch.randn(B, T, generator=g, dtype=torch.float64)
    new = torch.where(old + lr > 0, old - lr, old + lr)
    adv = torch.clamp((1e30 if extreme else 1.0) * torch.randn(B, T, generator=g, dtype=torch.float64),
                      -fmax / 4, fmax / 4)
    mask = torch.rand(B, T, generator=g) < 0.7
    mask[0, 0] = True
    rewards = (torch.rand(B, generator=g) < 0.5).to(dtype) * (100.0 if extreme else 1.0)
    pick = int(torch.randint(3, (1,), generator=g))
    return {"old": old.to(dtype), "new": torch.minimum(new.to(dtype), torch.zeros((), dtype=dtype)),
            "adv": adv.to(dtype), "mask": mask, "rewards": rewards,
            "delta": (1e-12, 0.05, 50.0)[pick] if extreme else 0.05,
            "tau": (1e-3, 1.0, 1e3)[pick] if extreme else "grpo"}


def run_case(name: str, cfg: dict, case: dict):
    """``(loss, grad, metrics)`` of one objective on one case (gradient with respect to ``log_prob``)."""
    from fiberlab.gpu.losses import get_policy_loss

    cfg = dict(cfg)
    if name == "bandpo":
        cfg["band_delta"] = case["delta"]
    if name.startswith("lpo"):
        cfg["lpo_tau"] = case["tau"]
    lp = case["new"].clone().requires_grad_(True)
    loss, metrics = get_policy_loss(name)(case["old"], lp, case["adv"], case["mask"], config=cfg,
                                          **_extras(name, case["rewards"]))
    (grad,) = torch.autograd.grad(loss, lp)
    return loss, grad, metrics


@objectives_finite.check("gpu")
def _sweep_finite_or_named_error() -> Evidence:
    counts = {"finite": 0, "named error": 0}
    bad: list[str] = []
    for dtype in DTYPES:
        for name, cfg in VARIANTS:
            for seed in range(6):
                extreme = seed % 2 == 1
                case = sweep_case(seed, dtype, extreme)
                label = f"{name} {cfg} {dtype} seed {seed}"
                try:
                    loss, grad, metrics = run_case(name, cfg, case)
                except ValueError as exc:
                    if not extreme or not any(n in str(exc) for n in NAMES):
                        bad.append(f"{label}: {exc}")
                    counts["named error"] += 1
                    continue
                finite = (bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all())
                          and all(math.isfinite(v) for v in metrics.values()))
                if finite:
                    counts["finite"] += 1
                else:
                    bad.append(f"{label}: non-finite result")
    n = sum(counts.values())
    return Evidence(passed=not bad, max_error=float(len(bad)), tolerance=0.0, cases=n,
                    detail=f"{len(VARIANTS)} objective variants × 4 dtypes × 6 seeded batches (half of them extreme: "
                           f"log-ratios ~1000, advantages ~1e30, δ and τ at the ends of their ranges): "
                           f"{counts['finite']} finite, {counts['named error']} named ValueErrors (all on extreme "
                           f"batches); max_error counts non-finite results or unnamed/moderate-input errors"
                           + (f"; first: {bad[0]}" if bad else ""))


@objectives_finite.check("gpu")
def _half_inputs_compute_in_float32() -> Evidence:
    differing, n = 0, 0
    for half in (torch.float16, torch.bfloat16):
        for name, cfg in VARIANTS:
            for seed in range(2):
                case = sweep_case(100 + seed, half, extreme=False)
                as32 = {k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
                        for k, v in case.items()}
                l_h, g_h, m_h = run_case(name, cfg, case)
                l_f, g_f, m_f = run_case(name, cfg, as32)
                same = (l_h.dtype == torch.float32 and torch.equal(l_h, l_f) and g_h.dtype == half
                        and torch.equal(g_h, g_f.to(half)) and m_h == m_f)
                differing += 0 if same else 1
                n += 1
    return Evidence(passed=differing == 0, max_error=float(differing), tolerance=0.0, cases=n,
                    detail="float16 and bfloat16 inputs give bitwise the loss and metrics of the same values cast to "
                           "float32, and the float32 gradient cast back to the input dtype, for every objective "
                           "variant (max_error counts differing cases)")
