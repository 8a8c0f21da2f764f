"""Training predictions, registered before running: arms, one primary statistic with its window and direction,
a validity gate, paired statistics, and a parallel, resumable runner.

A run is one (task, arm, seed): supervised warm-up (cached per task and seed, so every arm of an experiment starts
from the *same* policy and the arms are paired by seed), then RL with :func:`fiberlab.gpu.harness.rl_train`.
Each run writes ``<out>/<experiment>/<arm>/seed<k>.jsonl`` (one metrics row per RL iteration) and is skipped when
that file is complete, so an interrupted experiment resumes where it stopped.

What is decided, and how (:mod:`fiberlab.stats`):

1. Every :class:`Prediction` names its statistic — the mean of one logged metric over a window of iterations,
   with the sign that the paper predicts — and whether it is the experiment's **primary**. Each experiment has
   exactly one primary; secondaries are reported with the same statistics but do not vote.
2. Before any verdict, a **validity gate** is evaluated per arm and seed on the prediction's window
   (:func:`gate_reasons`): no collapse (reward → 0, all-EOS responses, a zero gradient), no saturation, and the
   paper's mechanism measurably acting (:class:`Mechanism`). A prediction is ``not testable`` when fewer than
   :data:`GATE_MIN_PASS` of the seeds of either arm pass.
3. The paired differences (one per seed) give a paired t-interval and an exact sign-flip p-value; the primaries of
   all experiments are Holm-corrected together (:func:`decide`); verdicts: confirmed, refuted, equivalent (TOST
   within a margin stated here), inconclusive, not testable.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fiberlab import stats
from fiberlab.gpu.advantages import get_advantage
from fiberlab.gpu.harness import (ModelConfig, RLConfig, TinyLM, WarmupConfig, _extras, rl_train, set_seed,
                                  warmup)
from fiberlab.gpu.losses import get_policy_loss
from fiberlab.gpu.tasks import make_task

#: A prediction is testable when at least this fraction of the seeds of each of its arms passes the gate.
GATE_MIN_PASS = 0.75
#: Collapse: mean reward over the window below this (the policy stopped solving anything).
COLLAPSE_REWARD = 0.02
#: Collapse: more than this fraction of responses are a bare EOS, on average over the window.
COLLAPSE_EMPTY = 0.5
#: Saturation: reward above this in more than half of the window's iterations (no mixed groups left to learn from).
SATURATED_REWARD = 0.95
#: A gradient norm below this is zero (a float32 sum of squares of nonzero gradients is far above it).
ZERO_GRAD = 1e-10


# --------------------------------------------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Arm:
    """One objective configuration of an experiment."""

    name: str
    objective: str
    loss_config: dict = dataclasses.field(default_factory=dict)
    advantage: str = "grpo"
    loss_agg_mode: str = "token-mean"
    #: RLConfig fields this arm changes (lr, epochs, updates_per_step, rollout_lag, ...)
    rl: dict = dataclasses.field(default_factory=dict)
    #: task settings this arm changes for RL (the warm-up, shared by the arms, uses the experiment's)
    task: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Statistic:
    """A number per run: ``sign`` × the mean of ``metric`` over iterations ``window = (start, stop)`` (the rows
    that carry it). ``sign = -1`` when the paper predicts the *better* arm has the smaller value."""

    metric: str
    window: tuple[int, int]
    sign: int = 1

    def __call__(self, history: list[dict[str, Any]]) -> float:
        return self.sign * window_mean(history, self.metric, self.window)

    @property
    def label(self) -> str:
        lo, hi = self.window
        return f"{'' if self.sign > 0 else '−'}{self.metric}, mean over iterations {lo}–{hi - 1}"


@dataclasses.dataclass(frozen=True)
class Prediction:
    """``statistic(better) > statistic(worse)``, paired by seed — or, with a ``margin``, that the two are
    equivalent within ±margin (TOST). Stated before running."""

    description: str
    better: str
    worse: str
    statistic: Statistic
    primary: bool = False
    margin: float | None = None


@dataclasses.dataclass(frozen=True)
class Mechanism:
    """The paper's mechanism, measured on ``arm``: the mean of ``metric`` over ``window`` must be at least
    ``threshold`` (or at most, with ``at_most``) in a seed for that seed to pass the gate."""

    arm: str
    metric: str
    window: tuple[int, int]
    threshold: float
    description: str
    at_most: bool = False


@dataclasses.dataclass
class Experiment:
    name: str
    claim: str
    task: str
    arms: list[Arm]
    predictions: list[Prediction]
    task_kwargs: dict = dataclasses.field(default_factory=dict)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    warmup: WarmupConfig = dataclasses.field(default_factory=WarmupConfig)
    rl: RLConfig = dataclasses.field(default_factory=RLConfig)
    mechanisms: list[Mechanism] = dataclasses.field(default_factory=list)
    #: the setting in words: why the mechanism acts here (measured), what the arms isolate
    setting: str = ""
    seeds: int = 16
    #: the first seed: a registration runs seeds ``first_seed, ..., first_seed + seeds - 1``, so a re-registration
    #: can run on seeds that no earlier registration or pilot has seen
    first_seed: int = 0
    #: which registration round of this experiment the definition is (earlier rounds' results are archived in
    #: book/results/<first|second|third>_registration)
    registration: int = 1
    plot_keys: tuple[str, ...] = ("reward", "entropy", "ratio_max", "grad_norm")
    #: seeds of the CI-size run (:func:`reduced`, primaries' arms only)
    reduced_seeds: int = 4

    @property
    def primary(self) -> Prediction | None:
        return next((p for p in self.predictions if p.primary), None)


def window_mean(history: list[dict[str, Any]], key: str, window: tuple[int, int]) -> float:
    """Mean of ``key`` over the rows with ``window[0] <= step < window[1]`` that carry it."""
    vals = [row[key] for row in history if key in row and window[0] <= row["step"] < window[1]]
    if not vals:
        raise ValueError(f"no row in iterations {window[0]}–{window[1] - 1} has {key!r}")
    return float(np.mean(vals))


def arm_config(exp: Experiment, arm: Arm) -> RLConfig:
    """The RL configuration a run of ``arm`` trains with: the experiment's, with the arm's settings."""
    return dataclasses.replace(exp.rl, objective=arm.objective, loss_config=dict(arm.loss_config),
                               advantage=arm.advantage, loss_agg_mode=arm.loss_agg_mode, **arm.rl)


def check_experiment(exp: Experiment) -> None:
    """Well-formedness, before any training: arm names unique, predictions and mechanisms name arms, windows
    lie inside the run, exactly one primary."""
    names = [a.name for a in exp.arms]
    if len(set(names)) != len(names):
        raise ValueError(f"{exp.name}: arm names must be unique, got {names}")
    for p in exp.predictions:
        if p.better not in names or p.worse not in names:
            raise ValueError(f"{exp.name}: prediction {p.description!r} names an arm not in {names}")
        lo, hi = p.statistic.window
        if not 0 <= lo < hi <= exp.rl.steps:
            raise ValueError(f"{exp.name}: window {p.statistic.window} outside 0..{exp.rl.steps}")
    for m in exp.mechanisms:
        if m.arm not in names:
            raise ValueError(f"{exp.name}: mechanism names arm {m.arm!r} not in {names}")
    if exp.first_seed < 0:
        raise ValueError(f"{exp.name}: first_seed must be ≥ 0, got {exp.first_seed}")
    if exp.predictions and sum(p.primary for p in exp.predictions) != 1:
        raise ValueError(f"{exp.name}: exactly one prediction must be primary")


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


# --------------------------------------------------------------------------------------------------------------
# Running: warm-ups first (one per seed, shared by the arms), then every (arm, seed), over worker processes
# --------------------------------------------------------------------------------------------------------------

def seed_range(exp: Experiment, seeds: int) -> range:
    """The seeds of ``exp``'s runs: ``seeds`` of them from :attr:`Experiment.first_seed`."""
    return range(exp.first_seed, exp.first_seed + seeds)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _run_path(out: Path, exp: Experiment, arm: Arm, seed: int) -> Path:
    return out / exp.name / arm.name / f"seed{seed}.jsonl"


def _warmup_path(out: Path, exp: Experiment, seed: int) -> Path:
    return out / exp.name / "_warmup" / f"seed{seed}.pt"


def finished(exp: Experiment, arm: Arm, seed: int, out: Path) -> list[dict[str, Any]] | None:
    """The run's history when its file is complete, else None."""
    path = _run_path(out, exp, arm, seed)
    if path.exists():
        rows = _read_jsonl(path)
        if len(rows) == arm_config(exp, arm).steps:
            return rows
    return None


def warm_model(exp: Experiment, seed: int, out: Path, device: torch.device) -> TinyLM:
    """The seed's warmed-up policy, from its checkpoint (written atomically the first time)."""
    task = make_task(exp.task, **exp.task_kwargs)
    ckpt = _warmup_path(out, exp, seed)
    set_seed(seed)
    model = TinyLM(exp.model).to(device)
    if ckpt.exists():
        model.load_state_dict(torch.load(ckpt, map_location=device))
    else:
        warmup(model, task, exp.warmup, np.random.default_rng(seed), device)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(f".{os.getpid()}.partial")
        torch.save(model.state_dict(), tmp)
        tmp.replace(ckpt)
    return model


def run_one(exp: Experiment, arm: Arm, seed: int, out: Path, device: torch.device) -> list[dict[str, Any]]:
    """Train one arm for one seed (or read the finished run back)."""
    if (rows := finished(exp, arm, seed, out)) is not None:
        return rows
    model = warm_model(exp, seed, out, device)
    task = make_task(exp.task, **{**exp.task_kwargs, **arm.task})
    path = _run_path(out, exp, arm, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    rows = []
    with tmp.open("w") as fh:
        def log(row: dict[str, Any]) -> None:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            rows.append(row)
        rl_train(model, task, arm_config(exp, arm), seed=10_000 + seed, device=device, log=log)
    tmp.replace(path)
    return rows


def _single_thread() -> None:
    torch.set_num_threads(1)


def _job(kind: str, exp: Experiment, arm: Arm | None, seed: int, out: Path, device: str) -> float:
    """One unit of work in a worker process; returns its seconds."""
    t0 = time.perf_counter()
    if kind == "warmup":
        warm_model(exp, seed, out, torch.device(device))
    else:
        run_one(exp, arm, seed, out, torch.device(device))
    return time.perf_counter() - t0


def default_workers() -> int:
    """One single-threaded worker per core (``$FIBERLAB_WORKERS`` overrides)."""
    return int(os.environ.get("FIBERLAB_WORKERS") or os.cpu_count() or 1)


def run_all(exps: list[tuple[Experiment, int]], out: Path, device: torch.device, workers: int | None = None,
            progress: Callable[[int, int, str], None] | None = None) -> None:
    """Every missing warm-up, then every missing (experiment, arm, seed) run, over ``workers`` single-threaded
    processes (inline when 1). ``progress(done, total, message)`` after each finished unit; finished runs are
    counted as done at the start (resumption)."""
    warm = [(e, s) for e, n in exps for s in seed_range(e, n) if not _warmup_path(out, e, s).exists()
            and any(finished(e, a, s, out) is None for a in e.arms)]
    runs = [(e, a, s) for e, n in exps for s in seed_range(e, n) for a in e.arms if finished(e, a, s, out) is None]
    total = sum(n * len(e.arms) for e, n in exps) + len(warm)
    done = total - len(warm) - len(runs)
    if progress:
        progress(done, total, "resuming" if done else "starting")
    workers = max(1, min(workers or default_workers(), len(runs) or 1))
    dev = str(device)
    if workers == 1 or device.type != "cpu":
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for e, s in warm:
                _job("warmup", e, None, s, out, dev)
                done += 1
                progress and progress(done, total, f"{e.name}: warm-up seed {s}")
            for e, a, s in runs:
                _job("run", e, a, s, out, dev)
                done += 1
                progress and progress(done, total, f"{e.name}: {a.name} seed {s}")
        finally:
            torch.set_num_threads(threads)
        return
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_single_thread) as pool:
        for phase, jobs in (("warm-up", [("warmup", e, None, s) for e, s in warm]),
                            ("run", [("run", e, a, s) for e, a, s in runs])):
            futs = {pool.submit(_job, k, e, a, s, out, dev): (e, a, s) for k, e, a, s in jobs}
            for fut in cf.as_completed(futs):
                fut.result()
                e, a, s = futs[fut]
                done += 1
                if progress:
                    progress(done, total, f"{e.name}: {phase} {a.name if a else ''} seed {s}".replace("  ", " "))


def load_runs(out: Path, exp: Experiment, seeds: int) -> dict[str, list[list[dict[str, Any]]]]:
    """``{arm: [history of seed 0, seed 1, ...]}`` for the finished runs under ``out``."""
    runs: dict[str, list[list[dict[str, Any]]]] = {}
    for arm in exp.arms:
        for seed in seed_range(exp, seeds):
            if (rows := finished(exp, arm, seed, out)) is not None:
                runs.setdefault(arm.name, []).append(rows)
    return runs


# --------------------------------------------------------------------------------------------------------------
# The gate and the verdicts
# --------------------------------------------------------------------------------------------------------------

def gate_reasons(history: list[dict[str, Any]], window: tuple[int, int],
                 mechanisms: list[Mechanism] = ()) -> list[str]:
    """Why one run cannot test a prediction over ``window`` (empty: it can)."""
    rows = [r for r in history if window[0] <= r["step"] < window[1]]
    reward = np.array([r["reward"] for r in rows])
    out = []
    if reward.mean() < COLLAPSE_REWARD:
        out.append(f"collapsed (mean reward {reward.mean():.3f})")
    empty = np.mean([r.get("empty_frac", 0.0) for r in rows])
    if empty > COLLAPSE_EMPTY:
        out.append(f"all-EOS ({empty:.0%} bare EOS)")
    zero = np.mean([r["grad_norm"] < ZERO_GRAD for r in rows])
    if zero > 0.5:
        out.append(f"zero gradient in {zero:.0%} of iterations")
    sat = np.mean(reward > SATURATED_REWARD)
    if sat > 0.5:
        out.append(f"saturated (reward > {SATURATED_REWARD} in {sat:.0%} of iterations)")
    for m in mechanisms:
        try:
            v = window_mean(history, m.metric, m.window)
        except ValueError:
            out.append(f"mechanism not measured ({m.metric} absent)")
            continue
        if (v > m.threshold) if m.at_most else (v < m.threshold):
            out.append(f"mechanism not acting ({m.metric} = {v:.3g}, needs {'≤' if m.at_most else '≥'} "
                       f"{m.threshold:g})")
    return out


def _gate(exp: Experiment, pred: Prediction, runs: dict[str, list[list[dict[str, Any]]]]) -> dict[str, Any]:
    gate = {}
    for arm in (pred.better, pred.worse):
        mech = [m for m in exp.mechanisms if m.arm == arm]
        reasons = [gate_reasons(h, pred.statistic.window, mech) for h in runs[arm]]
        failing = sorted({r for rs in reasons for r in rs})
        gate[arm] = {"passed": sum(not r for r in reasons), "run": len(reasons), "reasons": failing}
    return gate


def gate_passed(gate: dict[str, Any]) -> bool:
    return all(g["run"] > 0 and g["passed"] >= GATE_MIN_PASS * g["run"] for g in gate.values())


def evaluate_predictions(exp: Experiment, runs: dict[str, list[list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Every prediction's entry for ``results.json`` — ``p_holm`` and the primaries' verdicts are filled in by
    :func:`decide`, which sees every experiment's primary."""
    entries = []
    for pred in exp.predictions:
        b = np.array([pred.statistic(h) for h in runs[pred.better]])
        w = np.array([pred.statistic(h) for h in runs[pred.worse]])
        n = min(b.size, w.size)
        d = (b[:n] - w[:n])
        gate = _gate(exp, pred, runs)
        entry = {"claim": exp.claim, "description": pred.description, "primary": pred.primary,
                 "statistic": pred.statistic.label, "metric": pred.statistic.metric, "sign": pred.statistic.sign,
                 "window": list(pred.statistic.window), "better": pred.better, "worse": pred.worse, "seeds": int(n),
                 "per_seed": [float(x) for x in d], "effect": float(d.mean()), "ci": None, "p": None,
                 "p_holm": None, "margin": pred.margin, "gate": gate, "verdict": "inconclusive"}
        if n >= 2 and np.ptp(d) > 0:
            entry["ci"] = list(stats.paired_t_interval(d))
            entry["p"] = stats.sign_flip_p(d)
        elif n >= 2:                                     # identical differences: the interval is the point
            entry["ci"] = [float(d[0]), float(d[0])]
            entry["p"] = stats.sign_flip_p(d) if d[0] != 0 else 1.0
        if not pred.primary and entry["p"] is not None:  # secondaries: unadjusted, reported, not voted
            entry["verdict"] = stats.verdict(d, entry["p"], pred.margin, gate_passed(gate))
        elif not gate_passed(gate):
            entry["verdict"] = "not testable"
        entries.append(entry)
    return entries


def decide(results: dict[str, dict[str, Any]]) -> None:
    """Holm-correct the primaries of every registered experiment together and set their verdicts, in place.
    A registered primary with no result yet counts with p = 1 (Holm stays valid, only more conservative)."""
    family = [(name, exp.primary) for name, exp in EXPERIMENTS.items() if exp.primary is not None]
    extra = [(name, v) for name, r in results.items() if name not in EXPERIMENTS
             for v in r.get("verdicts", []) if v.get("primary")]
    keyed = []
    for name, pred in family:
        r = results.get(name)
        v = next((v for v in r.get("verdicts", []) if v.get("primary")), None) if r else None
        keyed.append((v, 1.0 if v is None or v["p"] is None else v["p"]))
    keyed += [(v, 1.0 if v["p"] is None else v["p"]) for _, v in extra]
    adjusted = stats.holm([p for _, p in keyed]) if keyed else []
    for (v, _), p_adj in zip(keyed, adjusted):
        if v is None:
            continue
        v["p_holm"] = p_adj
        d = np.array(v["per_seed"])
        if v["p"] is None:
            v["verdict"] = "not testable" if not gate_passed(v["gate"]) else "inconclusive"
        else:
            v["verdict"] = stats.verdict(d, p_adj, v["margin"], gate_passed(v["gate"]))


#: the metrics whose window means every results.json carries, per arm and seed (reported, never voted)
DESCRIBED = ("reward", "response_length", "length_correct", "length_wrong", "entropy_valid", "correct_entropy",
             "weakest_correct_logp", "distinct_correct", "kl_start_k3", "kl_old_k3", "drift_p90_last", "ratio_max", "grad_norm",
             "clip_frac/p<0.1/pos", "clip_frac/p>=0.5/pos", "mixed_frac", "empty_frac")


def _window_mean_or_none(history: list[dict[str, Any]], key: str, window: tuple[int, int]) -> float | None:
    try:
        return window_mean(history, key, window)
    except ValueError:
        return None


def summarize(exp: Experiment, runs: dict[str, list[list[dict[str, Any]]]], seeds: int) -> dict[str, Any]:
    """The experiment's ``results.json`` before :func:`decide`: per-seed statistics of every arm, the gates and
    the prediction entries, and the runs' time split."""
    stat_of = {p.statistic.label: p.statistic for p in exp.predictions}
    per_arm = {a: {label: [s(h) for h in hs] for label, s in stat_of.items()} for a, hs in runs.items()}
    # descriptive, not voted: every logged metric's window mean over the primary's window, per arm and seed, so
    # that the text can quote a mechanism (a KL, a clip fraction) from the published file
    window = exp.primary.statistic.window if exp.primary else (0, exp.rl.steps)
    described = {a: {k: [_window_mean_or_none(h, k, window) for h in hs] for k in DESCRIBED} for a, hs in runs.items()}
    secs = [r.get("seconds", 0.0) for hs in runs.values() for h in hs for r in h]
    evs = [r.get("eval_seconds", 0.0) for hs in runs.values() for h in hs for r in h]
    return {"experiment": exp.name, "claim": exp.claim, "task": exp.task, "task_kwargs": exp.task_kwargs,
            "registration": exp.registration, "seeds": seeds, "first_seed": exp.first_seed, "steps": exp.rl.steps,
            "rl": {k: getattr(exp.rl, k) for k in ("lr", "epochs", "updates_per_step", "rollout_lag")},
            "warmup_steps": exp.warmup.steps, "summaries": per_arm,
            "described": {"window": list(window), "per_seed": described},
            "arms": {a.name: {"objective": a.objective, "loss_config": a.loss_config, "advantage": a.advantage,
                              "loss_agg_mode": a.loss_agg_mode, "rl": a.rl, "task": a.task} for a in exp.arms},
            "rl_seconds": float(np.sum(secs)), "eval_fraction": float(np.sum(evs) / max(np.sum(secs), 1e-9)),
            "verdicts": evaluate_predictions(exp, runs)}


def run_experiments(exps: list[Experiment], out: Path, device: torch.device, seeds: int | None = None,
                    workers: int | None = None, progress: Callable[[int, int, str], None] | None = None,
                    others: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Run (resuming) every arm × seed of ``exps`` in parallel, then summarise each, Holm-correct the primaries
    together (with ``others``' results, e.g. published ones, for experiments not run now) and write each
    ``<out>/<name>/results.json``."""
    for exp in exps:
        check_experiment(exp)
        for arm in exp.arms:
            check_arm(exp, arm)
    plan = [(exp, seeds or exp.seeds) for exp in exps]
    run_all(plan, out, device, workers, progress)
    results = dict(others or {})
    for exp, n in plan:
        results[exp.name] = summarize(exp, load_runs(out, exp, n), n)
    decide(results)
    for exp, _ in plan:
        (out / exp.name).mkdir(parents=True, exist_ok=True)
        (out / exp.name / "results.json").write_text(json.dumps(results[exp.name], indent=2))
    return {exp.name: results[exp.name] for exp, _ in plan}


def run_experiment(exp: Experiment, out: Path, device: torch.device, seeds: int | None = None,
                   workers: int | None = None, progress: Callable[[int, int, str], None] | None = None,
                   others: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """One experiment (see :func:`run_experiments`)."""
    return run_experiments([exp], out, device, seeds, workers, progress, others)[exp.name]


def published(folder: Path) -> dict[str, dict[str, Any]]:
    """The results JSON files in ``folder`` (e.g. ``book/results``), by experiment name."""
    out = {}
    for name in EXPERIMENTS:
        path = Path(folder) / f"{name}.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out


# --------------------------------------------------------------------------------------------------------------
# Plotting
# --------------------------------------------------------------------------------------------------------------

def curve(histories: list[list[dict[str, Any]]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean over seeds, and a 95% normal-approximation half-width, for rows that carry ``key``."""
    steps = sorted({r["step"] for h in histories for r in h if key in r})
    vals = np.array([[next((r[key] for r in h if r["step"] == s and key in r), np.nan) for s in steps]
                     for h in histories], dtype=float)
    n = np.sum(np.isfinite(vals), 0)
    mean = np.nanmean(vals, 0)
    sd = np.nanstd(vals, 0, ddof=1) if len(histories) > 1 else np.zeros(len(steps))
    half = np.where(n > 1, 1.96 * np.nan_to_num(sd) / np.sqrt(np.maximum(n, 1)), 0.0)
    return np.array(steps), mean, half


def plot_experiment(exp: Experiment, out: Path, seeds: int, keys: tuple[str, ...] | None = None) -> Path:
    """One panel per metric, one line per arm with its confidence band, the primary's window shaded; saved as
    ``figures.png``."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(out, exp, seeds)
    keys = keys or exp.plot_keys
    # two panels a row, so that the figure is read at the book's column width
    ncols = min(2, len(keys))
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        for arm, hist in runs.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)      # an all-missing step: nan, not plotted
                x, m, h = curve(hist, key)
            if x.size:
                ax.plot(x, m, label=arm)
                ax.fill_between(x, m - h, m + h, alpha=0.2)
        if exp.primary is not None:
            ax.axvspan(*exp.primary.statistic.window, color="0.9", zorder=0)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("RL iteration")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    path = out / exp.name / "figures.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------------------
# The predictions. Settings chosen by first measuring the mechanism metric (the book's "Predictions in training"
# chapter gives the measurements); primaries, windows and directions fixed before the default-size runs.
# --------------------------------------------------------------------------------------------------------------

def _rl(**kw: Any) -> RLConfig:
    base = dict(steps=40, prompts_per_step=16, group_size=8, updates_per_step=4, lr=1e-3, eval_every=10,
                eval_prompts=16, eval_k=32)
    base.update(kw)
    return RLConfig(**base)


#: PPO without a clip: the lower bound 1 − 1 = 0 and an upper bound and a dual clip no ratio reaches — the
#: control that separates "Band frees the tail" from "Band brakes the head".
NO_CLIP = {"clip_ratio_low": 1.0, "clip_ratio_high": 1e9, "clip_ratio_c": 1e9}

EXPERIMENTS: dict[str, Experiment] = {}


def _register(exp: Experiment) -> Experiment:
    check_experiment(exp)
    EXPERIMENTS[exp.name] = exp
    return exp


def reduced(exp: Experiment, seeds: int | None = None) -> Experiment:
    """The CI size: the primaries' arms only, :attr:`Experiment.reduced_seeds` seeds, the same iterations (the
    windows are fixed in iterations)."""
    keep = {n for p in exp.predictions if p.primary for n in (p.better, p.worse)}
    keep |= {m.arm for m in exp.mechanisms if m.arm in keep}
    return dataclasses.replace(exp, arms=[a for a in exp.arms if a.name in keep],
                               predictions=[p for p in exp.predictions if p.primary],
                               mechanisms=[m for m in exp.mechanisms if m.arm in keep],
                               seeds=seeds or exp.reduced_seeds)


_register(Experiment(
    name="band_entropy", claim="band.entropy", task="symbols",
    task_kwargs={"classes": 8, "valid": 6, "length": 8, "zipf": 1.5, "invalid_frac": 0.35},
    arms=[Arm("ppo", "ppo", {"clip_ratio": 0.2}),
          Arm("clip_higher", "ppo", {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28}),
          Arm("band_kl", "bandpo", {"band_divergence": "kl", "band_delta": 0.05}),
          Arm("band_tv", "bandpo", {"band_divergence": "tv", "band_delta": 0.05}),
          Arm("no_clip", "ppo", NO_CLIP)],
    predictions=[
        Prediction("Band (KL) keeps more entropy over the valid symbols than PPO's clip", "band_kl", "ppo",
                   Statistic("entropy_valid", (0, 20)), primary=True),
        Prediction("Band (KL) keeps more distinct correct answers (of 32 samples) than PPO", "band_kl", "ppo",
                   Statistic("distinct_correct", (0, 20))),
        Prediction("Band (TV) keeps more entropy over the valid symbols than PPO", "band_tv", "ppo",
                   Statistic("entropy_valid", (0, 20))),
        Prediction("clip-higher keeps more entropy over the valid symbols than PPO", "clip_higher", "ppo",
                   Statistic("entropy_valid", (0, 20))),
        Prediction("Band (KL) keeps more entropy than no clip at all (Band frees the tail, not only brakes the "
                   "head)", "band_kl", "no_clip", Statistic("entropy_valid", (0, 20))),
        Prediction("Band (KL) reaches at least PPO's reward", "band_kl", "ppo", Statistic("reward", (0, 20))),
    ],
    mechanisms=[Mechanism("ppo", "clip_frac/p<0.1/pos", (0, 20), 0.2,
                          "PPO's upper clip binds on ≥ 20% of the positive-advantage tokens with π_old < 0.1")],
    warmup=WarmupConfig(steps=300), rl=_rl(steps=30, lr=3e-3, epochs=4, updates_per_step=4, eval_every=5),
    plot_keys=("reward", "entropy_valid", "clip_frac/p<0.1/pos", "distinct_correct"),
    # third registration: answers of 8 letters (6 in the second, where Band-KL saturated in 5 of 16 seeds)
    first_seed=200, registration=3,
    setting="8 classes × 6 valid letters of 16 (answer: 8 valid letters), warm-up demonstrations Zipf(1.5) over the "
            "valid letters with 35% invalid ones, 16 optimiser steps per batch (4 epochs × 4 mini-batches) at lr "
            "3e-3."))

_register(Experiment(
    name="fiberpo_stability", claim="fiberpo.stability", task="addition", task_kwargs={"digits": 2},
    arms=[Arm("grpo", "grpo", {"clip_ratio": 0.2}, loss_agg_mode="seq-mean-token-mean"),
          Arm("fiberpo", "fiberpo", {}, loss_agg_mode="seq-mean-token-mean"),
          Arm("grpo_lr_x3", "grpo", {"clip_ratio": 0.2}, loss_agg_mode="seq-mean-token-mean", rl={"lr": 9e-4}),
          Arm("fiberpo_lr_x3", "fiberpo", {}, loss_agg_mode="seq-mean-token-mean", rl={"lr": 9e-4})],
    predictions=[
        Prediction("FiberPO holds the p90 per-trajectory drift |mean log r| lower than GRPO (last mini-batch)",
                   "fiberpo", "grpo", Statistic("drift_p90_last", (0, 30), sign=-1), primary=True),
        Prediction("FiberPO's gradient norm stays lower than GRPO's", "fiberpo", "grpo",
                   Statistic("grad_norm", (0, 30), sign=-1)),
        Prediction("FiberPO reaches at least GRPO's reward", "fiberpo", "grpo", Statistic("reward", (0, 30))),
        Prediction("at 3× the step, FiberPO holds the drift lower than GRPO", "fiberpo_lr_x3", "grpo_lr_x3",
                   Statistic("drift_p90_last", (0, 30), sign=-1)),
        Prediction("at 3× the step, FiberPO's reward holds up better than GRPO's", "fiberpo_lr_x3", "grpo_lr_x3",
                   Statistic("reward", (0, 30))),
    ],
    mechanisms=[Mechanism("grpo", "drift_p90_last", (0, 30), 0.12,
                          "GRPO's p90 trajectory drift exceeds FiberPO's budget C⁺ = 0.12")],
    # third registration: lr 3e-4 (1e-3 in the second, where both arms lost ~90% of their reward within 5
    # iterations and FiberPO's gradient was exactly zero in over half of the iterations of 9 of 16 seeds)
    warmup=WarmupConfig(steps=600), rl=_rl(steps=30, lr=3e-4, epochs=4, updates_per_step=4, rollout_lag=2,
                                           eval_every=10, eval_k=8),
    first_seed=200, registration=3,
    plot_keys=("reward", "drift_p90_last", "ratio_max", "grad_norm"),
    setting="two-digit addition (answers of 2-3 digits), off-policy stress: 16 optimiser steps per batch (4 epochs × 4 "
            "mini-batches) at lr 3e-4 on rollouts sampled by the policy of 2 iterations earlier."))

_register(Experiment(
    name="lpo_training", claim="lpo.training", task="pairsum", task_kwargs={"zipf": 1.0, "wrong_frac": 0.6},
    arms=[Arm("grpo", "ppo", {"clip_ratio": 0.2}, loss_agg_mode="seq-mean-token-sum"),
          Arm("lpo_fwd", "lpo", {"lpo_divergence": "fwd"}, loss_agg_mode="seq-mean-token-sum"),
          Arm("lpo_rev", "lpo", {"lpo_divergence": "rev"}, loss_agg_mode="seq-mean-token-sum"),
          Arm("pointwise", "lpo_pointwise", {}, loss_agg_mode="seq-mean-token-sum"),
          Arm("grpo_half_lr", "ppo", {"clip_ratio": 0.2}, loss_agg_mode="seq-mean-token-sum", rl={"lr": 5e-4})],
    predictions=[
        Prediction("LPO_fwd keeps more probability on the weakest correct answer than GRPO (Cor. 2)", "lpo_fwd",
                   "grpo", Statistic("weakest_correct_logp", (0, 20)), primary=True),
        Prediction("LPO_fwd keeps more distinct correct answers (of 32 samples) than GRPO", "lpo_fwd", "grpo",
                   Statistic("distinct_correct", (0, 20))),
        Prediction("LPO_fwd's coverage is not just a smaller step: it beats GRPO at half the step", "lpo_fwd",
                   "grpo_half_lr", Statistic("weakest_correct_logp", (0, 20))),
        Prediction("LPO_fwd covers more than LPO_rev (forward KL is mass-covering)", "lpo_fwd", "lpo_rev",
                   Statistic("weakest_correct_logp", (0, 20))),
        Prediction("the pointwise ablation trails LPO_fwd in reward", "lpo_fwd", "pointwise",
                   Statistic("reward", (0, 20))),
        Prediction("LPO_fwd reaches at least GRPO's reward", "lpo_fwd", "grpo", Statistic("reward", (0, 20))),
    ],
    mechanisms=[Mechanism("grpo", "correct_entropy", (0, 20), 0.9 * float(np.log(10)), at_most=True,
                          description="GRPO concentrates: its entropy over the 10 correct answers falls below "
                                      "90% of the uniform log 10")],
    warmup=WarmupConfig(steps=1000), rl=_rl(steps=20, lr=1e-3, epochs=2, updates_per_step=2, eval_every=2,
                                           eval_prompts=8, eval_k=32),
    registration=2,
    plot_keys=("reward", "weakest_correct_mass", "correct_entropy", "distinct_correct"),
    setting="pairsum: any two digits x, y with x + y ≡ s (mod 10) is correct (10 of 100 answers), warm-up "
            "demonstrations Zipf(1.0) over the correct first digits with 60% wrong answers, 4 optimiser steps per "
            "batch (2 epochs × 2 mini-batches)."))

_AGG = {"seqmean": "seq-mean-token-mean", "tokensum": "seq-mean-token-sum-norm", "tokenmean": "token-mean"}
#: round 3's six arms (three aggregations × two pass rates, 96 seeds), published in book/results/third_registration
AGG_ROUND3_ARMS = [Arm(f"{a}_{int(100 * q)}", "ppo", {"clip_ratio": 0.2}, loss_agg_mode=mode, task={"target": q})
                   for q in (0.25, 0.75) for a, mode in _AGG.items()]
_register(Experiment(
    name="agg_length_bias", claim="agg.length_bias", task="filler", task_kwargs={"max_n": 4, "max_pad": 8},
    # round 4: the primary's two arms only. Round 3 (96 seeds, all six arms) left the primary undecided,
    # +0.59 [-0.01, +1.20] tokens (p = 0.053), with a paired SD of 3.0 tokens; 192 fresh seeds give an interval
    # of about ±0.43, which either excludes 0 (an effect of round 3's size) or fits inside the ±1-token margin (one
    # below ~0.5). Round 3's secondaries (pass rate 0.75, token mean) were decided there: equivalent within ±1.
    arms=[a for a in AGG_ROUND3_ARMS if a.name in ("seqmean_25", "tokensum_25")],
    predictions=[
        Prediction("with most answers wrong (pass rate 0.25), per-sequence 1/|y| lengthens answers relative to "
                   "Dr.GRPO's constant normaliser", "seqmean_25", "tokensum_25",
                   Statistic("response_length", (10, 40)), primary=True, margin=1.0),
    ],
    mechanisms=[Mechanism(a, "mixed_frac", (10, 40), 0.5,
                          "at least half of the groups are mixed (the lottery holds the pass rate)")
                for a in ("seqmean_25", "tokensum_25")],
    warmup=WarmupConfig(steps=200), rl=_rl(steps=40, lr=1e-3, epochs=1, updates_per_step=4, eval_every=10, eval_k=8),
    seeds=192, first_seed=400, registration=4,
    plot_keys=("reward", "response_length", "mixed_frac", "length_wrong"),
    setting="filler: answer n copies of x after 0–8 optional filler dots; a correct answer's reward is a lottery "
            "whose rate a controller sets to hold the pass rate at 0.25, so the dots carry no information about "
            "the reward and the aggregation is the only difference between the arms (identical GRPO advantages)."))
