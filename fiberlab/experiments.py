"""Named training comparisons: every arm × seed of a prediction, resumable, with a computed verdict.

A run is one (task, objective configuration, seed): supervised warm-up (cached per task and seed, so every arm of
a comparison starts from the *same* policy and the comparison is paired by seed), then RL with
:func:`fiberlab.gpu.harness.rl_train`. Each run writes ``<out>/<experiment>/<arm>/seed<k>.jsonl`` (one metrics
row per RL iteration) and is skipped when that file is complete, so an interrupted experiment resumes where it
stopped. The verdict compares a summary statistic between two arms, paired by seed, with a bootstrap confidence
interval: ``confirmed`` (the interval lies on the predicted side of 0), ``reversed`` (on the other side) or
``not confirmed`` (it contains 0).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fiberlab.gpu.harness import ModelConfig, RLConfig, TinyLM, WarmupConfig, rl_train, set_seed, warmup
from fiberlab.gpu.tasks import make_task

#: Bootstrap resamples for the verdict's confidence interval, and its level.
BOOTSTRAP = 4000
CI_LEVEL = 0.95


@dataclasses.dataclass
class Arm:
    """One objective configuration of a comparison."""

    name: str
    objective: str
    loss_config: dict = dataclasses.field(default_factory=dict)
    advantage: str = "grpo"
    loss_agg_mode: str = "token-mean"
    updates_per_step: int | None = None          # None: the experiment's default


@dataclasses.dataclass
class Comparison:
    """A prediction: ``statistic(history)`` is larger for ``better`` than for ``worse`` (paired by seed)."""

    better: str
    worse: str
    statistic: str                                # a key of SUMMARIES
    description: str


@dataclasses.dataclass
class Experiment:
    name: str
    claim: str
    task: str
    arms: list[Arm]
    comparisons: list[Comparison]
    task_kwargs: dict = dataclasses.field(default_factory=dict)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    warmup: WarmupConfig = dataclasses.field(default_factory=WarmupConfig)
    rl: RLConfig = dataclasses.field(default_factory=RLConfig)
    seeds: int = 5


def _tail(history: list[dict[str, Any]], key: str, frac: float = 0.25) -> float:
    """Mean of ``key`` over the last ``frac`` of the rows that have it."""
    vals = [row[key] for row in history if key in row]
    if not vals:
        raise ValueError(f"no row has {key!r}")
    n = max(1, int(round(len(vals) * frac)))
    return float(np.mean(vals[-n:]))


#: Summary statistics of one run's history (larger = the direction a comparison predicts for ``better``).
SUMMARIES: dict[str, Callable[[list[dict[str, Any]]], float]] = {
    "final_entropy": lambda h: _tail(h, "entropy"),
    "final_reward": lambda h: _tail(h, "reward"),
    "final_pass@1": lambda h: _tail(h, "pass@1", 0.34),
    "final_pass@k": lambda h: _tail(h, [k for k in h[-1] if k.startswith("pass@") and k != "pass@1"][0], 0.34),
    "ratio_stability": lambda h: -_tail(h, "ratio_mean_abs_dev", 0.5),
    # log growth of the gradient norm from the first five iterations to the last quarter (1e-12 guards a zero
    # gradient, e.g. a policy that already solves every prompt)
    "grad_norm_flatness": lambda h: -float(np.log((_tail(h, "grad_norm") + 1e-12)
                                                  / (np.mean([r["grad_norm"] for r in h[:5]]) + 1e-12))),
    "final_length": lambda h: _tail(h, "response_length"),
    "neg_final_length": lambda h: -_tail(h, "response_length"),
}


def run_one(exp: Experiment, arm: Arm, seed: int, out: Path, device: torch.device) -> list[dict[str, Any]]:
    """Train one arm for one seed (or read the finished run back)."""
    path = out / exp.name / arm.name / f"seed{seed}.jsonl"
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if len(rows) == exp.rl.steps:
            return rows
    task = make_task(exp.task, **exp.task_kwargs)
    ckpt = out / exp.name / "_warmup" / f"seed{seed}.pt"
    set_seed(seed)
    model = TinyLM(exp.model).to(device)
    if ckpt.exists():
        model.load_state_dict(torch.load(ckpt, map_location=device))
    else:
        warmup(model, task, exp.warmup, np.random.default_rng(seed), device)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), ckpt)
    cfg = dataclasses.replace(exp.rl, objective=arm.objective, loss_config=dict(arm.loss_config),
                              advantage=arm.advantage, loss_agg_mode=arm.loss_agg_mode,
                              updates_per_step=arm.updates_per_step or exp.rl.updates_per_step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    with tmp.open("w") as fh:
        def log(row: dict[str, Any]) -> None:
            row = dict(row, ratio_mean_abs_dev=abs(row.get("ratio_mean", 1.0) - 1.0))
            fh.write(json.dumps(row) + "\n")
            fh.flush()
        rl_train(model, task, cfg, seed=10_000 + seed, device=device, log=log)
    tmp.replace(path)
    return [json.loads(line) for line in path.read_text().splitlines()]


def paired_verdict(better: np.ndarray, worse: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Mean paired difference ``better - worse`` with a percentile-bootstrap CI and the verdict."""
    d = np.asarray(better, dtype=float) - np.asarray(worse, dtype=float)
    if d.size < 2:
        raise ValueError("a verdict needs at least two seeds")
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, (BOOTSTRAP, d.size))].mean(1)
    lo, hi = np.quantile(boots, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2])
    verdict = "confirmed" if lo > 0 else "reversed" if hi < 0 else "not confirmed"
    return {"effect": float(d.mean()), "ci": [float(lo), float(hi)], "verdict": verdict, "seeds": int(d.size)}


def run_experiment(exp: Experiment, out: Path, device: torch.device, seeds: int | None = None,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every arm × seed (resuming), then the verdict of each comparison; writes ``results.json``."""
    n = seeds or exp.seeds
    summaries: dict[str, dict[str, list[float]]] = {}
    for arm in exp.arms:
        for seed in range(n):
            if progress:
                progress(f"{exp.name}: {arm.name} seed {seed}")
            hist = run_one(exp, arm, seed, out, device)
            for key, fn in SUMMARIES.items():
                try:
                    summaries.setdefault(arm.name, {}).setdefault(key, []).append(fn(hist))
                except (ValueError, IndexError, KeyError):
                    pass
    verdicts = []
    for c in exp.comparisons:
        v = paired_verdict(np.array(summaries[c.better][c.statistic]), np.array(summaries[c.worse][c.statistic]))
        verdicts.append({"better": c.better, "worse": c.worse, "statistic": c.statistic,
                         "description": c.description, **v})
    result = {"experiment": exp.name, "claim": exp.claim, "task": exp.task, "seeds": n,
              "steps": exp.rl.steps, "summaries": summaries, "verdicts": verdicts}
    (out / exp.name).mkdir(parents=True, exist_ok=True)
    (out / exp.name / "results.json").write_text(json.dumps(result, indent=2))
    return result
