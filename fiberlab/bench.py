"""``fiberlab bench band|lpo``: the cost of the objectives, as ratios measured in one run.

``band``: the Band bounds and the BandPO loss. ``lpo``: the LPO losses against ``ppo`` (target: ``lpo``
forward+backward at most 1.2× ``ppo`` on 2^20 tokens in 2^10 sequences, groups of 8). ``fiberpo``: ``fiberpo``
and ``fiberpo_domain`` against ``ppo`` (targets 1.5× and 2×) and ``fiberpo_domain`` at 2^16 … 2^22 tokens.

Every figure is the median of ``--repeats`` timings of the same call on the same tensors, measured
round-robin after one warm-up call of each (which also builds the KL lookup table). The targets of the foundation issue:

* Band-KL bounds at most 3× the TV closed form, and at least 5× cheaper than the BandPO authors' 50-step
  bisection (tol 1e-6, reimplemented in ``fiberlab.gpu.band.band_bounds_authors_bisection``) at equal or
  better accuracy; accuracy of each against 50-digit mpmath on a subsample;
* the ``bandpo`` loss forward+backward at most 1.5× the ``ppo`` loss on the same tensors.

The KL table and BandPO's band pass run as torch.compile'd kernels where compiling works (the default); each is
also timed eagerly (``… (eager)``, what a machine without a compiler gets), and ``compiled`` in the JSON says
which kernels actually ran compiled. ``ppo`` is eager in both: it is held bitwise equal to verl's own loss.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import fiberlab.gpu.band as band_module
from fiberlab.gpu.band import band_bounds, band_bounds_authors_bisection
from fiberlab.gpu.losses import bandpo_loss, get_policy_loss, ppo_loss

#: Band radius of the benchmark: the authors' δ for all three divergences.
BENCH_DELTA = 0.05
#: Tokens of the accuracy subsample (the mpmath reference runs at ~1 ms a token).
ACCURACY_SAMPLE = 2000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_shape(n_tokens: int) -> tuple[int, int]:
    """``(rows, tokens per row)`` of the benchmark batch: rows of 1024 tokens (a remainder is dropped), or one
    row of ``n_tokens`` when there are fewer."""
    T = 1024 if n_tokens >= 1024 else n_tokens
    return max(1, n_tokens // T), T


def bench_tensors(n_tokens: int, device: torch.device, dtype: torch.dtype = torch.float32,
                  seed: int = 0) -> dict[str, torch.Tensor]:
    """A ``[n_tokens/1024, 1024]`` batch: log-probs of tokens sampled from peaked softmaxes (head and tail
    tokens both present), a new policy a small step away, one advantage per sequence, ragged masks."""
    g = torch.Generator().manual_seed(seed)
    B, T = bench_shape(n_tokens)
    logits = 4.0 * torch.randn(B * T, 32, generator=g)
    probs = torch.softmax(logits, -1)
    tok = torch.multinomial(probs, 1, generator=g).squeeze(-1)
    old = torch.log_softmax(logits, -1).gather(-1, tok[:, None]).squeeze(-1).view(B, T)
    step = 0.05 * torch.randn(B, T, generator=g)
    new = torch.where(old + step > 0, old - step, old + step)          # reflected: a log-prob stays ≤ 0
    adv = torch.randn(B, 1, generator=g).expand(B, T).contiguous()
    lengths = torch.randint(T // 4, T + 1, (B, 1), generator=g)
    mask = (torch.arange(T)[None, :] < lengths).to(dtype)
    return {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
            for k, v in {"old_log_prob": old, "log_prob": new, "advantages": adv, "response_mask": mask}.items()}


def _accuracy(old_log_prob: torch.Tensor) -> dict[str, dict[str, float]]:
    """Max relative error of each KL solver (in the benchmark's dtype) against 50-digit mpmath."""
    from fiberlab.numerics.band import band_bounds_reference

    flat = old_log_prob.flatten()
    idx = torch.linspace(0, flat.numel() - 1, min(ACCURACY_SAMPLE, flat.numel())).long()
    sample = flat[idx]
    # The reference is solved at the float value of each sampled input, so only the solver's error is measured.
    lo_ref, up_ref = band_bounds_reference(sample.double().clamp(max=0.0).cpu().numpy(), "kl", BENCH_DELTA)
    out = {}
    for name, fn in (("kl_newton", lambda x: band_bounds(x, "kl", BENCH_DELTA)),
                     ("kl_table", lambda x: band_bounds(x, "kl", BENCH_DELTA, method="table")),
                     ("kl_table_eager", _eager(lambda x: band_bounds(x, "kl", BENCH_DELTA, method="table"))),
                     ("kl_authors_bisection", lambda x: band_bounds_authors_bisection(x, "kl", BENCH_DELTA))):
        lo, up = (t.double().cpu().numpy() for t in fn(sample))
        # Relative error where the true lower end is a normal number of the benchmark's dtype: below that it
        # underflows in any solver (r̲ ≈ e^{-δ/p}), which is representation, not solver error.
        normal = lo_ref >= torch.finfo(old_log_prob.dtype).tiny
        with np.errstate(divide="ignore", invalid="ignore"):
            rel_lo = np.where(lo == lo_ref, 0.0, np.abs(lo - lo_ref) / np.abs(lo_ref))
            rel_up = np.abs(up - up_ref) / up_ref
        out[name] = {"max_abs_lower": float(np.max(np.abs(lo - lo_ref))),
                     "max_abs_upper": float(np.max(np.abs(up - up_ref))),
                     "max_rel_lower": float(np.max(rel_lo[normal])), "max_rel_upper": float(np.max(rel_up)),
                     "zeroed_lower": int(np.sum((lo == 0) & normal))}
    return out


def interleaved_medians(calls: dict[str, Callable[[], Any]], repeats: int, device: torch.device,
                        slow: frozenset[str] = frozenset()) -> dict[str, float]:
    """Median time of each call, measured round-robin (every repetition times every call in turn), so that a
    drift of the machine's speed during the run affects every figure alike and the ratios stay comparable.
    Calls in ``slow`` are timed on every third repetition only."""
    for fn in calls.values():
        fn()                                       # warm-up: allocations, the KL table
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for rep in range(repeats):
        for name, fn in calls.items():
            if name in slow and rep % 3:
                continue
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def fwd_bwd(loss_fn: Callable, x: dict[str, torch.Tensor], loss_agg_mode: str, config: dict[str, Any],
            advantages: torch.Tensor | None = None, **extra: Any) -> Callable[[], None]:
    """A call timing one forward + backward of ``loss_fn`` on the benchmark tensors ``x`` (fresh leaf each call)."""
    adv = x["advantages"] if advantages is None else advantages

    def run() -> None:
        lp = x["log_prob"].detach().requires_grad_(True)
        loss, _ = loss_fn(x["old_log_prob"], lp, adv, x["response_mask"], loss_agg_mode, config, **extra)
        loss.backward()
    return run


def _eager(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with the fused kernels run as plain eager torch (what a machine without torch.compile gets)."""
    def run(*args: Any) -> Any:
        previous, band_module.COMPILE = band_module.COMPILE, False
        try:
            return fn(*args)
        finally:
            band_module.COMPILE = previous
    return run


def bench_band(n_tokens: int, repeats: int, device: torch.device) -> dict[str, Any]:
    x = bench_tensors(n_tokens, device)
    old = x["old_log_prob"]
    d = BENCH_DELTA

    def band_call(loss_fn: Callable, config: dict[str, Any]) -> Callable[[], None]:
        return fwd_bwd(loss_fn, x, "token-mean", config)

    kl = {"band_divergence": "kl", "band_delta": d}
    calls = {
        "tv": lambda: band_bounds(old, "tv", d),
        "chi2": lambda: band_bounds(old, "chi2", d),
        "kl_newton": lambda: band_bounds(old, "kl", d),
        "kl_table": lambda: band_bounds(old, "kl", d, method="table"),
        "kl_table_eager": _eager(lambda: band_bounds(old, "kl", d, method="table")),
        "kl_authors_bisection": lambda: band_bounds_authors_bisection(old, "kl", d),
        "ppo_fwd_bwd": band_call(ppo_loss, {}),
        "bandpo_kl_fwd_bwd": band_call(bandpo_loss, kl),
        "bandpo_kl_eager_fwd_bwd": _eager(band_call(bandpo_loss, kl)),
        "bandpo_kl_newton_fwd_bwd": band_call(bandpo_loss, {**kl, "band_method": "newton"}),
        "bandpo_tv_fwd_bwd": band_call(bandpo_loss, {"band_divergence": "tv", "band_delta": d}),
        "bandpo_chi2_fwd_bwd": band_call(bandpo_loss, {"band_divergence": "chi2", "band_delta": d}),
    }
    t = interleaved_medians(calls, repeats, device, slow=frozenset({"kl_authors_bisection"}))
    ratios = {
        "kl_newton / tv": t["kl_newton"] / t["tv"],
        "kl_table / tv": t["kl_table"] / t["tv"],
        "kl_table (eager) / tv": t["kl_table_eager"] / t["tv"],
        "authors_bisection / kl_newton": t["kl_authors_bisection"] / t["kl_newton"],
        "authors_bisection / kl_table": t["kl_authors_bisection"] / t["kl_table"],
        "authors_bisection / kl_table (eager)": t["kl_authors_bisection"] / t["kl_table_eager"],
        "bandpo_kl (table, default) / ppo (fwd+bwd)": t["bandpo_kl_fwd_bwd"] / t["ppo_fwd_bwd"],
        "bandpo_kl (table, eager) / ppo (fwd+bwd)": t["bandpo_kl_eager_fwd_bwd"] / t["ppo_fwd_bwd"],
        "bandpo_kl (newton) / ppo (fwd+bwd)": t["bandpo_kl_newton_fwd_bwd"] / t["ppo_fwd_bwd"],
        "bandpo_tv / ppo (fwd+bwd)": t["bandpo_tv_fwd_bwd"] / t["ppo_fwd_bwd"],
        "bandpo_chi2 / ppo (fwd+bwd)": t["bandpo_chi2_fwd_bwd"] / t["ppo_fwd_bwd"],
    }
    return {
        "tokens": old.numel(), "shape": list(old.shape), "dtype": str(old.dtype), "device": str(device),
        "threads": torch.get_num_threads(), "repeats": repeats, "delta": d,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch": torch.__version__,
        "compiled": band_module.fused_kernels(),
        "seconds": t, "ratios": ratios, "accuracy": _accuracy(old),
        "targets": {
            "kl_table / tv <= 3": ratios["kl_table / tv"] <= 3.0,
            "kl_table (eager) / tv <= 3": ratios["kl_table (eager) / tv"] <= 3.0,
            "kl_newton / tv <= 3": ratios["kl_newton / tv"] <= 3.0,
            "authors_bisection / kl_table >= 5": ratios["authors_bisection / kl_table"] >= 5.0,
            "authors_bisection / kl_table (eager) >= 5": ratios["authors_bisection / kl_table (eager)"] >= 5.0,
            "authors_bisection / kl_newton >= 5": ratios["authors_bisection / kl_newton"] >= 5.0,
            "bandpo_kl (table, default) / ppo <= 1.5": ratios["bandpo_kl (table, default) / ppo (fwd+bwd)"] <= 1.5,
            "bandpo_kl (table, eager) / ppo <= 1.5": ratios["bandpo_kl (table, eager) / ppo (fwd+bwd)"] <= 1.5,
            "bandpo_kl (newton) / ppo <= 1.5": ratios["bandpo_kl (newton) / ppo (fwd+bwd)"] <= 1.5,
            "bandpo_tv / ppo <= 1.5": ratios["bandpo_tv / ppo (fwd+bwd)"] <= 1.5,
        },
    }


#: LPO benchmark: K responses per prompt (the paper's K = 8).
LPO_GROUP = 8


def bench_lpo(n_tokens: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """``lpo`` (each divergence, token clip, τ from verl's advantages) and ``lpo_pointwise`` against ``ppo``,
    forward+backward, on the same ``[n_tokens/1024, 1024]`` tensors with one binary reward per sequence and
    groups of :data:`LPO_GROUP` consecutive rows, ``seq-mean-token-sum`` aggregation for all."""
    x = bench_tensors(n_tokens, device)
    old, mask = x["old_log_prob"], x["response_mask"]
    b = old.shape[0]
    g = torch.Generator().manual_seed(1)
    rewards = (torch.rand(b, generator=g) < 0.5).to(device=device, dtype=old.dtype)
    group_ids = torch.arange(b, device=device) // LPO_GROUP
    from fiberlab.gpu.advantages import get_advantage
    grpo_adv = (get_advantage("grpo")(rewards, group_ids)[:, None] * mask).contiguous()

    def lpo_call(name: str, config: dict[str, Any], advantages: torch.Tensor, **extra: Any) -> Callable[[], None]:
        return fwd_bwd(get_policy_loss(name), x, "seq-mean-token-sum", config, advantages, **extra)

    kw = {"rewards": rewards, "group_ids": group_ids}
    calls = {
        "ppo_fwd_bwd": lpo_call("ppo", {}, grpo_adv),
        "lpo_fwd_fwd_bwd": lpo_call("lpo", {"lpo_divergence": "fwd"}, grpo_adv, **kw),
        "lpo_rev_fwd_bwd": lpo_call("lpo", {"lpo_divergence": "rev"}, grpo_adv, **kw),
        "lpo_js_fwd_bwd": lpo_call("lpo", {"lpo_divergence": "js"}, grpo_adv, **kw),
        "lpo_fwd_clamp_fwd_bwd": lpo_call("lpo", {"lpo_divergence": "fwd", "lpo_token_clip": "clamp"}, grpo_adv, **kw),
        "lpo_fwd_ppo_clip_fwd_bwd": lpo_call("lpo", {"lpo_divergence": "fwd", "lpo_token_clip": "ppo"}, grpo_adv, **kw),
        "lpo_fwd_from_advantages_fwd_bwd": lpo_call("lpo", {"lpo_group_size": LPO_GROUP}, grpo_adv),
        "lpo_pointwise_fwd_bwd": lpo_call("lpo_pointwise", {}, grpo_adv, **kw),
    }
    t = interleaved_medians(calls, repeats, device)
    ratios = {f"{k[:-len('_fwd_bwd')]} / ppo (fwd+bwd)": v / t["ppo_fwd_bwd"] for k, v in t.items()
              if k != "ppo_fwd_bwd"}
    return {
        "tokens": old.numel(), "shape": list(old.shape), "dtype": str(old.dtype), "device": str(device),
        "threads": torch.get_num_threads(), "repeats": repeats, "group_size": LPO_GROUP,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch": torch.__version__,
        "seconds": t, "ratios": ratios,
        "targets": {"lpo_fwd / ppo <= 1.2": ratios["lpo_fwd / ppo (fwd+bwd)"] <= 1.2,
                    "lpo_rev / ppo <= 1.2": ratios["lpo_rev / ppo (fwd+bwd)"] <= 1.2},
    }


#: FiberPO-Domain benchmark hierarchy: groups of K consecutive rows (rollout.n), the groups split evenly into
#: this many domains.
FIBERPO_GROUP = 8
FIBERPO_DOMAINS = 4
#: Token counts of the linearity sweep of ``fiberpo_domain`` (rows of 1024 tokens).
FIBERPO_SCALING = (1 << 16, 1 << 18, 1 << 20, 1 << 22)


def bench_fiberpo(n_tokens: int, repeats: int, device: torch.device,
                  scaling: tuple[int, ...] = FIBERPO_SCALING) -> dict[str, Any]:
    """``fiberpo`` and ``fiberpo_domain`` (and the RGF baselines ``grpo_rgf``, ``gspo``) against ``ppo``,
    forward+backward on the same ``[n_tokens/1024, 1024]`` tensors, ``seq-mean-token-mean`` aggregation
    (FiberPO's Eq. 6) for all; groups of :data:`FIBERPO_GROUP` rows in :data:`FIBERPO_DOMAINS` domains.
    Targets: ``fiberpo`` at most 1.5× ``ppo``, ``fiberpo_domain`` at most 2× ``ppo``. Then ``fiberpo_domain``
    and ``ppo`` at each size of ``scaling`` (a third of the repeats, at least 3): the cost per token should be
    flat, and its ratio to ``ppo`` at each size separates the objective's scaling from the machine's (memory
    bandwidth per token drops once the tensors leave the caches, for every loss alike)."""

    def setup(n: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        x = bench_tensors(n, device)
        b = x["old_log_prob"].shape[0]
        gids = torch.arange(b, device=device) // FIBERPO_GROUP
        n_groups = int(gids[-1]) + 1
        dids = gids * FIBERPO_DOMAINS // n_groups                        # whole groups per domain
        return x, {"group_ids": gids, "domain_ids": dids}

    def fiber_call(x: dict[str, torch.Tensor], name: str, **extra: Any) -> Callable[[], None]:
        return fwd_bwd(get_policy_loss(name), x, "seq-mean-token-mean", {}, **extra)

    x, ids = setup(n_tokens)
    calls = {"ppo_fwd_bwd": fiber_call(x, "ppo"), "fiberpo_fwd_bwd": fiber_call(x, "fiberpo"),
             "fiberpo_domain_fwd_bwd": fiber_call(x, "fiberpo_domain", **ids),
             "grpo_rgf_fwd_bwd": fiber_call(x, "grpo_rgf"), "gspo_fwd_bwd": fiber_call(x, "gspo")}
    t = interleaved_medians(calls, repeats, device)
    ratios = {f"{k[:-len('_fwd_bwd')]} / ppo (fwd+bwd)": v / t["ppo_fwd_bwd"] for k, v in t.items()
              if k != "ppo_fwd_bwd"}
    sweep = []
    for n in scaling:
        xs, ids_s = setup(n)
        ts = interleaved_medians({"fiberpo_domain": fiber_call(xs, "fiberpo_domain", **ids_s),
                                  "ppo": fiber_call(xs, "ppo")}, max(3, repeats // 3), device)
        sweep.append({"tokens": xs["old_log_prob"].numel(), "seconds": ts["fiberpo_domain"],
                      "ns_per_token": 1e9 * ts["fiberpo_domain"] / xs["old_log_prob"].numel(),
                      "ppo_seconds": ts["ppo"], "ratio_to_ppo": ts["fiberpo_domain"] / ts["ppo"]})
        del xs, ids_s
    return {
        "tokens": x["old_log_prob"].numel(), "shape": list(x["old_log_prob"].shape),
        "dtype": str(x["old_log_prob"].dtype), "device": str(device), "threads": torch.get_num_threads(),
        "repeats": repeats, "group_size": FIBERPO_GROUP, "domains": FIBERPO_DOMAINS,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch": torch.__version__,
        "seconds": t, "ratios": ratios, "scaling": sweep,
        "targets": {"fiberpo / ppo <= 1.5": ratios["fiberpo / ppo (fwd+bwd)"] <= 1.5,
                    "fiberpo_domain / ppo <= 2": ratios["fiberpo_domain / ppo (fwd+bwd)"] <= 2.0},
    }


def _render_scaling(result: dict[str, Any], console: Console) -> None:
    s = Table(title="fiberpo_domain forward+backward by size (linearity: ns/token flat)")
    for col in ("tokens", "ms", "ns/token", "ppo ms", "/ ppo"):
        s.add_column(col, justify="right")
    for row in result["scaling"]:
        s.add_row(f"{row['tokens']:,}", f"{1000 * row['seconds']:.1f}", f"{row['ns_per_token']:.1f}",
                  f"{1000 * row['ppo_seconds']:.1f}", f"{row['ratio_to_ppo']:.2f}")
    console.print(s)


def render(result: dict[str, Any], console: Console, name: str = "band") -> None:
    t = Table(title=f"fiberlab bench {name} — {result['tokens']:,} tokens {result['dtype']} on {result['device']} "
                    f"({result['threads']} threads), median of {result['repeats']}")
    t.add_column("call")
    t.add_column("ms", justify="right")
    for k, v in result["seconds"].items():
        t.add_row(k, f"{1000 * v:.1f}")
    console.print(t)
    r = Table(title="ratios (same run)")
    r.add_column("ratio")
    r.add_column("value", justify="right")
    for k, v in result["ratios"].items():
        r.add_row(k, f"{v:.2f}")
    console.print(r)
    if "accuracy" in result:
        _render_accuracy(result, console)
    if "scaling" in result:
        _render_scaling(result, console)
    if result.get("compiled"):
        console.print("fused kernels: " + ", ".join(f"{k} {'compiled' if v else 'EAGER'}"
                                                     for k, v in result["compiled"].items()))
    for k, ok in result["targets"].items():
        console.print(f"{'[green]met[/green]' if ok else '[red]missed[/red]'}  {k}")


def _render_accuracy(result: dict[str, Any], console: Console) -> None:
    a = Table(title=f"KL accuracy vs 50-digit mpmath ({ACCURACY_SAMPLE} sampled tokens, {result['dtype']})")
    for col in ("solver", "max abs lower", "max abs upper", "max rel lower", "max rel upper", "lower zeroed"):
        a.add_column(col, justify="right" if col != "solver" else "left")
    for k, v in result["accuracy"].items():
        a.add_row(k, f"{v['max_abs_lower']:.1e}", f"{v['max_abs_upper']:.1e}", f"{v['max_rel_lower']:.1e}",
                  f"{v['max_rel_upper']:.1e}", str(v["zeroed_lower"]))
    console.print(a)


def check_args(target: str, n_tokens: int, repeats: int) -> None:
    """Raise ``ValueError`` naming the flag for sizes a benchmark cannot run with, before its warm-up and its
    minutes of timing: a median needs a repetition, and ``lpo`` needs whole groups of :data:`LPO_GROUP` rows."""
    if n_tokens < 1:
        raise ValueError(f"--tokens must be a positive integer, got {n_tokens}")
    if repeats < 1:
        raise ValueError(f"--repeats must be a positive integer, got {repeats}")
    rows, cols = bench_shape(n_tokens)
    if target == "lpo" and rows % LPO_GROUP:
        raise ValueError(f"--tokens must give whole groups of {LPO_GROUP} rows of 1024 tokens for bench lpo "
                         f"(a multiple of {LPO_GROUP * 1024}), got {n_tokens} ({rows} row(s) of {cols})")


def main(args: argparse.Namespace, console: Console) -> int:
    check_args(args.target, args.tokens, args.repeats)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.target == "train":
        result = bench_train(min(args.repeats, 7), device)
        render_train(result, console)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2))
        return 0
    run = {"band": bench_band, "lpo": bench_lpo, "fiberpo": bench_fiberpo}[args.target]
    result = run(args.tokens, args.repeats, device)
    render(result, console, args.target)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        console.print(f"wrote {args.json}")
    return 0


def bench_train(repeats: int, device: torch.device) -> dict[str, Any]:
    """``fiberlab bench train``: one RL iteration of the harness's default model and its generation cost.

    Reports the median wall time of an RL iteration (sample 16 × 8 responses, reward, 2 optimiser steps) on the
    `addition` task, sampled tokens per second, peak memory (CUDA: allocator peak; CPU: the process's peak resident
    set), and the sampling time for response lengths 8, 16, 32, 64, which a KV cache keeps linear in the length.
    """
    import resource

    import numpy as np

    from fiberlab.gpu.harness import ModelConfig, RLConfig, TinyLM, rl_train, sample
    from fiberlab.gpu.tasks import make_task

    torch.manual_seed(0)
    model = TinyLM(ModelConfig(max_len=96)).to(device)
    task = make_task("addition", digits=2)
    cfg = RLConfig(steps=1, eval_every=0)
    times, tokens = [], []
    for rep in range(repeats + 1):                       # the first iteration is a warm-up
        _sync(device)
        t0 = time.perf_counter()
        row = rl_train(model, task, cfg, seed=rep, device=device)[0]
        _sync(device)
        if rep:
            times.append(time.perf_counter() - t0)
            tokens.append(row["response_length"] * cfg.prompts_per_step * cfg.group_size)
    it = statistics.median(times)
    prompts = torch.randint(3, 13, (128, 6), device=device)
    gen = {}
    for length in (8, 16, 32, 64):
        ts = []
        for _ in range(max(3, repeats // 2)):
            _sync(device)
            t0 = time.perf_counter()
            sample(model, prompts, length, torch.Generator(device=device.type).manual_seed(0))
            _sync(device)
            ts.append(time.perf_counter() - t0)
        gen[length] = statistics.median(ts)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    slope = float(np.polyfit(list(gen), list(gen.values()), 1)[0])
    return {"device": str(device), "threads": torch.get_num_threads(), "params": model.n_params(),
            "iteration_seconds": it, "tokens_per_second": statistics.median(tokens) / it,
            "peak_memory_bytes": int(peak), "sample_seconds_by_length": gen, "sample_seconds_per_token": slope,
            "linear_in_length": gen[64] / gen[8] < 8 * 1.5}


def render_train(result: dict[str, Any], console: Console) -> None:
    t = Table(title=f"fiberlab bench train — {result['params']:,}-parameter model on {result['device']} "
                    f"({result['threads']} threads)")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("RL iteration (16 × 8 responses, 2 updates), s", f"{result['iteration_seconds']:.3f}")
    t.add_row("sampled tokens per second (whole iteration)", f"{result['tokens_per_second']:,.0f}")
    t.add_row("peak memory, MiB", f"{result['peak_memory_bytes'] / 2 ** 20:.0f}")
    for k, v in result["sample_seconds_by_length"].items():
        t.add_row(f"sample 128 responses of {k} tokens, ms", f"{1000 * v:.1f}")
    console.print(t)
    console.print(f"{'[green]linear[/green]' if result['linear_in_length'] else '[red]superlinear[/red]'} in response "
                  f"length (64-token sampling / 8-token sampling < 12)")
