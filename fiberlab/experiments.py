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

from fiberlab.gpu.advantages import get_advantage
from fiberlab.gpu.harness import (ModelConfig, RLConfig, TinyLM, WarmupConfig, _extras, rl_train, set_seed,
                                  warmup)
from fiberlab.gpu.losses import get_policy_loss
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
    kind: str = "greater"                         # or "equivalent": |better - worse| within ±margin
    margin: float = 0.0


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
    plot_keys: tuple[str, ...] = ("reward", "entropy", "ratio_mean", "grad_norm", "response_length")
    #: RL iterations of the CI-size run (:func:`reduced`); ``None``: 30.
    reduced_steps: int | None = None


def _tail(history: list[dict[str, Any]], key: str, frac: float = 0.25) -> float:
    """Mean of ``key`` over the last ``frac`` of the rows that have it."""
    vals = [row[key] for row in history if key in row]
    if not vals:
        raise ValueError(f"no row has {key!r}")
    n = max(1, int(round(len(vals) * frac)))
    return float(np.mean(vals[-n:]))


def _pass_at_k(history: list[dict[str, Any]]) -> str:
    """The run's pass@k key (k = the evaluation's sample count; pass@1 excluded)."""
    return next(k for k in history[-1] if k.startswith("pass@") and k != "pass@1")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


#: Summary statistics of one run's history (larger = the direction a comparison predicts for ``better``).
SUMMARIES: dict[str, Callable[[list[dict[str, Any]]], float]] = {
    "final_entropy": lambda h: _tail(h, "entropy"),
    "final_reward": lambda h: _tail(h, "reward"),
    "mean_reward": lambda h: float(np.mean([r["reward"] for r in h])),
    "mean_entropy": lambda h: float(np.mean([r["entropy"] for r in h])),
    "mean_pass@k": lambda h: _tail(h, _pass_at_k(h), 1.0),
    "final_pass@1": lambda h: _tail(h, "pass@1", 0.34),
    "final_pass@k": lambda h: _tail(h, _pass_at_k(h), 0.34),
    "ratio_stability": lambda h: -_tail(h, "ratio_mean_abs_dev", 0.5),
    # log growth of the gradient norm from the first five iterations to the last quarter (1e-12 guards a zero
    # gradient, e.g. a policy that already solves every prompt)
    "grad_norm_flatness": lambda h: -float(np.log((_tail(h, "grad_norm") + 1e-12)
                                                  / (np.mean([r["grad_norm"] for r in h[:5]]) + 1e-12))),
    "final_length": lambda h: _tail(h, "response_length"),
    # mean length of the unrewarded responses over the iterations that had any (1/|y| penalises a long wrong
    # answer less per token: the mechanism of GRPO's length bias)
    "mean_wrong_length": lambda h: _tail(h, "length_wrong", 1.0),
}


def arm_config(exp: Experiment, arm: Arm) -> RLConfig:
    """The RL configuration a run of ``arm`` trains with: the experiment's, with the arm's objective settings."""
    return dataclasses.replace(exp.rl, objective=arm.objective, loss_config=dict(arm.loss_config),
                               advantage=arm.advantage, loss_agg_mode=arm.loss_agg_mode,
                               updates_per_step=arm.updates_per_step or exp.rl.updates_per_step)


def check_arm(exp: Experiment, arm: Arm) -> None:
    """Call the arm's advantage and objective once, forward and backward, on a tiny valid batch with the
    configuration and extras :func:`~fiberlab.gpu.harness.rl_train` passes, so that a bad setting raises the
    objective's own ``ValueError`` now rather than after minutes of warm-up. The batch is one group of two
    responses of two tokens: LPO's group statistics need two responses in a group."""
    cfg = arm_config(exp, arm)
    loss_fn, adv_fn = get_policy_loss(cfg.objective), get_advantage(cfg.advantage)
    rewards, group_ids = torch.tensor([1.0, 0.0]), torch.zeros(2, dtype=torch.long)
    prompts, responses = torch.zeros(2, 1, dtype=torch.long), torch.full((2, 2), 3, dtype=torch.long)
    mask = torch.ones(2, 2, dtype=torch.bool)
    old_lp = torch.full((2, 2), -1.0)
    lp = old_lp.clone().requires_grad_(True)
    adv = adv_fn(rewards, group_ids)[:, None] * mask
    loss, _ = loss_fn(old_lp, lp, adv, mask, cfg.loss_agg_mode, cfg.loss_config,
                      **_extras(cfg.objective, rewards, group_ids, prompts, responses))
    loss.backward()


def run_one(exp: Experiment, arm: Arm, seed: int, out: Path, device: torch.device) -> list[dict[str, Any]]:
    """Train one arm for one seed (or read the finished run back)."""
    path = out / exp.name / arm.name / f"seed{seed}.jsonl"
    if path.exists():
        rows = _read_jsonl(path)
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
    cfg = arm_config(exp, arm)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    rows = []
    with tmp.open("w") as fh:
        def log(row: dict[str, Any]) -> None:
            row = dict(row, ratio_mean_abs_dev=abs(row.get("ratio_mean", 1.0) - 1.0))
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            rows.append(row)
        rl_train(model, task, cfg, seed=10_000 + seed, device=device, log=log)
    tmp.replace(path)
    return rows


def paired_verdict(better: np.ndarray, worse: np.ndarray, seed: int = 0, kind: str = "greater",
                   margin: float = 0.0) -> dict[str, Any]:
    """Mean paired difference ``better - worse`` with a percentile-bootstrap CI and the verdict.

    ``kind="greater"``: confirmed when the CI lies above 0, reversed when below, else not confirmed.
    ``kind="equivalent"``: confirmed when the CI lies inside ``[-margin, margin]``, else not confirmed."""
    d = np.asarray(better, dtype=float) - np.asarray(worse, dtype=float)
    if d.size < 2:
        raise ValueError("a verdict needs at least two seeds")
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, (BOOTSTRAP, d.size))].mean(1)
    lo, hi = np.quantile(boots, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2])
    if kind == "equivalent":
        verdict = "confirmed" if (-margin <= lo and hi <= margin) else "not confirmed"
    elif kind == "greater":
        verdict = "confirmed" if lo > 0 else "reversed" if hi < 0 else "not confirmed"
    else:
        raise ValueError(f"kind must be 'greater' or 'equivalent', got {kind!r}")
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
        v = paired_verdict(np.array(summaries[c.better][c.statistic]), np.array(summaries[c.worse][c.statistic]),
                           kind=c.kind, margin=c.margin)
        verdicts.append({"better": c.better, "worse": c.worse, "statistic": c.statistic,
                         "description": c.description, "kind": c.kind, **v})
    result = {"experiment": exp.name, "claim": exp.claim, "task": exp.task, "seeds": n,
              "steps": exp.rl.steps, "summaries": summaries, "verdicts": verdicts}
    (out / exp.name).mkdir(parents=True, exist_ok=True)
    (out / exp.name / "results.json").write_text(json.dumps(result, indent=2))
    return result


# --------------------------------------------------------------------------------------------------------------
# Reading runs back and plotting
# --------------------------------------------------------------------------------------------------------------

def load_runs(out: Path, exp: Experiment, seeds: int) -> dict[str, list[list[dict[str, Any]]]]:
    """``{arm: [history of seed 0, seed 1, ...]}`` for the finished runs under ``out``."""
    runs: dict[str, list[list[dict[str, Any]]]] = {}
    for arm in exp.arms:
        for seed in range(seeds):
            path = out / exp.name / arm.name / f"seed{seed}.jsonl"
            if path.exists():
                runs.setdefault(arm.name, []).append(_read_jsonl(path))
    return runs


def curve(histories: list[list[dict[str, Any]]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean over seeds, and a 95% normal-approximation half-width, for rows that carry ``key``."""
    steps = [r["step"] for r in histories[0] if key in r]
    vals = np.array([[r[key] for r in h if key in r] for h in histories], dtype=float)
    half = 1.96 * vals.std(0, ddof=1) / np.sqrt(len(histories)) if len(histories) > 1 else np.zeros(vals.shape[1])
    return np.array(steps), vals.mean(0), half


def plot_experiment(exp: Experiment, out: Path, seeds: int, keys: tuple[str, ...] | None = None) -> Path:
    """One panel per metric, one line per arm with its confidence band; saved as ``figures.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(out, exp, seeds)
    keys = keys or exp.plot_keys
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for arm, hist in runs.items():
            try:
                x, m, h = curve(hist, key)
            except (KeyError, IndexError, ValueError):
                continue
            ax.plot(x, m, label=arm)
            ax.fill_between(x, m - h, m + h, alpha=0.2)
        ax.set_title(key)
        ax.set_xlabel("RL iteration")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = out / exp.name / "figures.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------------------
# The predictions (issue: harness). Defaults: 5 seeds; `reduced()` is the CI size.
# --------------------------------------------------------------------------------------------------------------

def _rl(**kw: Any) -> RLConfig:
    base = dict(steps=80, prompts_per_step=16, group_size=8, updates_per_step=4, lr=1e-3, eval_every=10,
                eval_prompts=64, eval_k=8)
    base.update(kw)
    return RLConfig(**base)


_BAND_ENTROPY = Experiment(
    name="band_entropy", claim="band.entropy", task="tail", task_kwargs={"bits": 5, "tail_fraction": 0.05},
    arms=[Arm("ppo", "ppo", {"clip_ratio": 0.2}),
          Arm("clip_higher", "ppo", {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28}),
          Arm("band_kl", "bandpo", {"band_divergence": "kl", "band_delta": 0.05}),
          Arm("band_tv", "bandpo", {"band_divergence": "tv", "band_delta": 0.05}),
          Arm("band_chi2", "bandpo", {"band_divergence": "chi2", "band_delta": 0.05})],
    comparisons=[Comparison("band_kl", "ppo", "mean_entropy", "Band (KL) keeps entropy higher than PPO clip"),
                 Comparison("band_tv", "ppo", "mean_entropy", "Band (TV) keeps entropy higher than PPO clip"),
                 Comparison("band_kl", "clip_higher", "mean_entropy", "Band (KL) keeps entropy higher than clip-higher"),
                 Comparison("band_kl", "ppo", "mean_reward", "Band (KL) learns the tail answer faster (reward over training)")],
    # A warm-up long enough that every seed can finish the answer once it starts with the rare "!" (at 150 steps
    # half the seeds cannot, and reward then measures the reversal, not the tail token), and a gentle RL step
    # (lr 3e-4, 4 updates per batch): PPO's upper clip binds on 27-42% of the positive-advantage "!" tokens
    # for the first six iterations while Band (KL) clips 0-8% of them. At lr 3e-3 with 8 updates both bounds
    # bind at once (the ratio on "!" reaches ~10, past Band's ~3 too) and most runs break.
    warmup=WarmupConfig(steps=800), rl=_rl(steps=60, lr=3e-4, updates_per_step=4),
    # The entropy comparisons are means over the run, and their sign depends on the window: Band is slightly
    # higher while the tail token rises and lower once it dominates. The CI run keeps all 60 iterations (at 30
    # it measures mostly the rise, and Band (TV) comes out higher there).
    reduced_steps=60,
    plot_keys=("reward", "entropy", "actor/pg_clipfrac", "ratio_max"))

# The same setting with two rewarded answers, "!" + reversal and "?" + reversal, each demonstrated 2.5% of the time:
# with one correct answer, learning its rare first token faster must lower entropy sooner, so this asks whether the
# sign of the entropy comparison turns when the answer is not unique. Derived from band_entropy so the two cannot
# drift apart: only the task's markers change, and the TV and χ² arms are left out. Supporting evidence for
# band.entropy, recorded in its condition; not re-run in CI (all its default-size verdicts are undecided, and a
# 3-seed subset of an undecided comparison can fall either way).
_TWO_ANSWER_ARMS = ("ppo", "clip_higher", "band_kl")
_BAND_ENTROPY_TWO_ANSWERS = dataclasses.replace(
    _BAND_ENTROPY, name="band_entropy_two_answers", task_kwargs={**_BAND_ENTROPY.task_kwargs, "markers": "!?"},
    arms=[a for a in _BAND_ENTROPY.arms if a.name in _TWO_ANSWER_ARMS],
    comparisons=[c for c in _BAND_ENTROPY.comparisons if c.better in _TWO_ANSWER_ARMS and c.worse in _TWO_ANSWER_ARMS])


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    _BAND_ENTROPY,
    _BAND_ENTROPY_TWO_ANSWERS,
    Experiment(
        name="fiberpo_stability", claim="fiberpo.stability", task="addition", task_kwargs={"digits": 1},
        arms=[Arm("grpo", "grpo", {"clip_ratio": 0.2}, loss_agg_mode="seq-mean-token-mean"),
              Arm("fiberpo", "fiberpo", {}, loss_agg_mode="seq-mean-token-mean")],
        comparisons=[Comparison("fiberpo", "grpo", "ratio_stability", "FiberPO's mean importance ratio stays nearer 1"),
                     Comparison("fiberpo", "grpo", "grad_norm_flatness", "FiberPO's gradient norm grows less"),
                     Comparison("fiberpo", "grpo", "final_length", "FiberPO does not compress responses")],
        warmup=WarmupConfig(steps=60), rl=_rl(lr=3e-3, updates_per_step=8),
        plot_keys=("reward", "ratio_mean", "grad_norm", "response_length")),
    Experiment(
        name="lpo_training", claim="lpo.training", task="addition", task_kwargs={"digits": 1},
        arms=[Arm("grpo", "ppo", {"clip_ratio": 0.2}, loss_agg_mode="seq-mean-token-sum"),
              Arm("lpo_fwd", "lpo", {"lpo_divergence": "fwd"}, loss_agg_mode="seq-mean-token-sum"),
              Arm("lpo_rev", "lpo", {"lpo_divergence": "rev"}, loss_agg_mode="seq-mean-token-sum"),
              Arm("pointwise", "lpo_pointwise", {}, loss_agg_mode="seq-mean-token-sum"),
              Arm("grpo_onpolicy", "ppo", {"clip_ratio": 0.2}, loss_agg_mode="seq-mean-token-sum", updates_per_step=1),
              Arm("lpo_rev_onpolicy", "lpo", {"lpo_divergence": "rev"}, loss_agg_mode="seq-mean-token-sum",
                  updates_per_step=1)],
        comparisons=[Comparison("lpo_fwd", "grpo", "mean_pass@k", "LPO_fwd improves pass@k over its PG pair"),
                     Comparison("lpo_fwd", "grpo", "mean_entropy", "LPO_fwd keeps higher entropy"),
                     Comparison("lpo_rev_onpolicy", "grpo_onpolicy", "final_reward", "LPO_rev ≈ PG fully on-policy",
                                kind="equivalent", margin=0.02),
                     Comparison("lpo_fwd", "pointwise", "mean_reward", "the pointwise ablation trails LPO_fwd")],
        warmup=WarmupConfig(steps=60), rl=_rl(updates_per_step=2),
        plot_keys=("reward", "pass@8", "entropy", "grad_norm")),
    Experiment(
        name="agg_length_bias", claim="agg.length_bias", task="count", task_kwargs={"max_n": 6, "max_pad": 4},
        arms=[Arm("grpo", "ppo", {"clip_ratio": 0.2}, loss_agg_mode="seq-mean-token-mean"),
              Arm("drgrpo", "ppo", {"clip_ratio": 0.2}, advantage="drgrpo", loss_agg_mode="seq-mean-token-sum-norm"),
              Arm("token_mean", "ppo", {"clip_ratio": 0.2}, loss_agg_mode="token-mean"),
              Arm("gspo", "gspo", {"clip_ratio": 4e-4}, loss_agg_mode="seq-mean-token-mean")],
        comparisons=[Comparison("grpo", "drgrpo", "final_length", "GRPO's per-sequence 1/|y| lengthens responses "
                                                                  "relative to Dr.GRPO"),
                     Comparison("grpo", "drgrpo", "mean_wrong_length", "GRPO's wrong answers are longer than "
                                                                       "Dr.GRPO's (the mechanism of the bias)"),
                     Comparison("gspo", "grpo", "final_reward", "GSPO's sequence ratio beats token-level clipping on "
                                                                "variable-length answers")],
        warmup=WarmupConfig(steps=30), rl=_rl(updates_per_step=4),
        plot_keys=("reward", "response_length", "entropy", "actor/pg_clipfrac")),
]}


def reduced(exp: Experiment, steps: int | None = None, seeds: int = 3) -> Experiment:
    """The CI size of an experiment: fewer seeds and (unless the experiment says otherwise) 30 iterations, the
    same setting otherwise."""
    steps = steps or exp.reduced_steps or 30
    return dataclasses.replace(exp, rl=dataclasses.replace(exp.rl, steps=steps,
                                                           eval_every=max(1, min(exp.rl.eval_every, steps // 3))),
                               seeds=seeds)
