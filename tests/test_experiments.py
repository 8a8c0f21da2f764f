"""The experiment runner: statistics, windows and gates of registered predictions, Holm across experiments,
resumption, the parallel runner's equality with the inline one, and the warm-up shared across arms."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from fiberlab import stats
from fiberlab.experiments import (EXPERIMENTS, Arm, Experiment, Mechanism, Prediction, Statistic, check_arm,
                                  check_experiment, decide, evaluate_predictions, gate_passed, gate_reasons,
                                  reduced, run_experiment, window_mean)
from fiberlab.gpu.harness import ModelConfig, RLConfig, WarmupConfig


def _hist(reward, grad=1.0, **metrics):
    """A synthetic 10-iteration history: constant reward (or a list), gradient norm and metrics."""
    reward = reward if isinstance(reward, list) else [reward] * 10
    return [{"step": i, "reward": r, "grad_norm": grad, "empty_frac": 0.0, **metrics} for i, r in enumerate(reward)]


def test_window_and_statistic():
    h = [{"step": i, "x": float(i)} for i in range(10)] + [{"step": 10}]
    assert window_mean(h, "x", (2, 5)) == 3.0                         # mean of 2, 3, 4
    assert Statistic("x", (2, 5), sign=-1)(h) == -3.0
    assert "−x" in Statistic("x", (2, 5), sign=-1).label
    with pytest.raises(ValueError, match="no row in iterations 10–10"):
        window_mean(h, "x", (10, 11))


def test_gate_names_each_failure():
    w = (0, 10)
    assert gate_reasons(_hist(0.5), w) == []
    assert gate_reasons(_hist(0.01), w)[0].startswith("collapsed")
    assert any(r.startswith("saturated") for r in gate_reasons(_hist([0.99] * 6 + [0.5] * 4), w))
    assert gate_reasons(_hist([0.99] * 5 + [0.5] * 5), w) == []       # exactly half: not more than half
    assert any(r.startswith("zero gradient") for r in gate_reasons(_hist(0.5, grad=0.0), w))
    assert any(r.startswith("all-EOS") for r in gate_reasons([dict(r, empty_frac=0.9) for r in _hist(0.5)], w))
    m = Mechanism("a", "clip", w, 0.2, "clip binds")
    assert gate_reasons(_hist(0.5, clip=0.3), w, [m]) == []
    assert gate_reasons(_hist(0.5, clip=0.1), w, [m]) == ["mechanism not acting (clip = 0.1, needs ≥ 0.2)"]
    at_most = dataclasses.replace(m, at_most=True)
    assert gate_reasons(_hist(0.5, clip=0.1), w, [at_most]) == []
    assert gate_reasons(_hist(0.5), w, [m]) == ["mechanism not measured (clip absent)"]


def _toy_exp(margin=None, mechanism=0.0):
    return Experiment(
        name="toy", claim="none", task="parity", arms=[Arm("a", "ppo"), Arm("b", "ppo")],
        predictions=[Prediction("a beats b", "a", "b", Statistic("m", (0, 10)), primary=True, margin=margin),
                     Prediction("a's reward", "a", "b", Statistic("reward", (0, 10)))],
        mechanisms=[Mechanism("b", "m", (0, 10), mechanism, "m acts")], rl=RLConfig(steps=10))


def test_predictions_give_the_paired_statistics_a_reviewer_recomputes():
    rng = np.random.default_rng(0)
    worse = rng.normal(1.0, 0.3, 16)
    better = worse + rng.normal(0.2, 0.1, 16)
    runs = {"a": [_hist(0.5, m=float(x)) for x in better], "b": [_hist(0.5, m=float(x)) for x in worse]}
    exp = _toy_exp()
    v = evaluate_predictions(exp, runs)[0]
    d = np.array(v["per_seed"])
    np.testing.assert_allclose(d, better - worse, rtol=0, atol=1e-12)
    assert v["ci"] == list(stats.paired_t_interval(d)) and v["p"] == stats.sign_flip_p(d)
    assert v["effect"] == pytest.approx(float(d.mean())) and v["primary"] and v["p_holm"] is None
    assert v["gate"] == {"a": {"passed": 16, "run": 16, "reasons": []}, "b": {"passed": 16, "run": 16, "reasons": []}}
    # Holm over the family = every registered primary (absent ones count as p = 1) plus this one
    results = {"toy": {"verdicts": [v]}}
    decide(results)
    m = len([e for e in EXPERIMENTS.values() if e.primary]) + 1
    assert v["p_holm"] == pytest.approx(min(1.0, v["p"] * m)) and v["verdict"] == "confirmed"
    # the other direction is refuted; a failing mechanism makes it not testable, whatever the data
    runs_rev = {"a": runs["b"], "b": runs["a"]}
    v2 = evaluate_predictions(exp, runs_rev)[0]
    decide({"toy": {"verdicts": [v2]}})
    assert v2["verdict"] == "refuted"
    v3 = evaluate_predictions(_toy_exp(mechanism=5.0), runs)[0]
    decide({"toy": {"verdicts": [v3]}})
    assert v3["verdict"] == "not testable" and not gate_passed(v3["gate"])
    assert "mechanism not acting" in v3["gate"]["b"]["reasons"][0]


def test_equivalence_within_a_margin_stated_in_advance():
    rng = np.random.default_rng(1)
    worse = rng.normal(1.0, 0.3, 16)
    same = worse + rng.normal(0.0, 0.01, 16)
    runs = {"a": [_hist(0.5, m=float(x)) for x in same], "b": [_hist(0.5, m=float(x)) for x in worse]}
    v = evaluate_predictions(_toy_exp(margin=0.05), runs)[0]
    decide({"toy": {"verdicts": [v]}})
    assert v["verdict"] == "equivalent"
    v = evaluate_predictions(_toy_exp(), runs)[0]                       # no margin: undecided
    decide({"toy": {"verdicts": [v]}})
    assert v["verdict"] == "inconclusive"


def test_too_few_seeds_are_inconclusive():
    runs = {"a": [_hist(0.5, m=2.0 + i) for i in range(4)], "b": [_hist(0.5, m=1.0 + i) for i in range(4)]}
    v = evaluate_predictions(_toy_exp(), runs)[0]
    decide({"toy": {"verdicts": [v]}})
    assert v["verdict"] == "inconclusive" and v["effect"] == 1.0


def test_check_experiment_rejects_bad_definitions():
    exp = _toy_exp()
    with pytest.raises(ValueError, match="names an arm"):
        check_experiment(dataclasses.replace(exp, arms=[Arm("a", "ppo"), Arm("c", "ppo")]))
    with pytest.raises(ValueError, match="window"):
        check_experiment(dataclasses.replace(exp, rl=RLConfig(steps=5)))
    with pytest.raises(ValueError, match="exactly one prediction must be primary"):
        check_experiment(dataclasses.replace(exp, predictions=[dataclasses.replace(p, primary=True)
                                                               for p in exp.predictions]))
    with pytest.raises(ValueError, match="unique"):
        check_experiment(dataclasses.replace(exp, arms=[Arm("a", "ppo"), Arm("a", "ppo")]))


def test_reduced_keeps_the_primary_arms_and_the_iterations():
    for exp in EXPERIMENTS.values():
        r = reduced(exp)
        p = exp.primary
        assert {a.name for a in r.arms} == {p.better, p.worse} and r.predictions == [p]
        assert r.rl == exp.rl and r.seeds == exp.reduced_seeds < exp.seeds


def _tiny():
    return Experiment(
        name="tiny", claim="none", task="parity", task_kwargs={"bits": 3},
        arms=[Arm("ppo", "ppo"), Arm("lpo_fwd", "lpo", {"lpo_divergence": "fwd"}),
              Arm("ppo_lr", "ppo", rl={"lr": 3e-3})],
        predictions=[Prediction("toy", "lpo_fwd", "ppo", Statistic("entropy", (0, 3)), primary=True)],
        model=ModelConfig(d_model=16, n_layer=1, n_head=2, max_len=16),
        warmup=WarmupConfig(steps=5, batch=16),
        rl=RLConfig(steps=3, prompts_per_step=4, group_size=4, eval_prompts=4, eval_k=2, eval_every=1),
        seeds=2)


def _read(root, arm, seed):
    return [json.loads(line) for line in (root / "inline" / "tiny" / arm / f"seed{seed}.jsonl").read_text().splitlines()]


def test_run_experiment_writes_results_resumes_and_parallel_equals_inline(tmp_path):
    exp = _tiny()
    res = run_experiment(exp, tmp_path / "inline", torch.device("cpu"), workers=1)
    v = res["verdicts"][0]
    assert set(v) >= {"claim", "primary", "statistic", "window", "better", "worse", "seeds", "per_seed", "effect",
                      "ci", "p", "p_holm", "margin", "gate", "verdict"}
    assert v["verdict"] in ("inconclusive", "not testable") and v["seeds"] == 2    # 2 seeds never decide
    assert json.loads((tmp_path / "inline" / "tiny" / "results.json").read_text())["seeds"] == 2
    # the descriptive window means: one per seed for a logged metric, None for one this task never logs
    described = res["described"]["per_seed"]["ppo"]
    assert res["described"]["window"] == [0, 3] and len(described["reward"]) == 2
    assert described["reward"][0] == pytest.approx(np.mean([r["reward"] for r in _read(tmp_path, "ppo", 0)]))
    assert described["weakest_correct_logp"] == [None, None]
    runs = sorted((tmp_path / "inline" / "tiny").glob("*/seed*.jsonl"))
    assert len(runs) == 6 and all(len(p.read_text().splitlines()) == 3 for p in runs)
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    again = run_experiment(exp, tmp_path / "inline", torch.device("cpu"), workers=1)     # resumes: nothing retrained
    assert {p: p.stat().st_mtime_ns for p in runs} == stamps and again["summaries"] == res["summaries"]
    # every arm of a seed starts from one warm-up checkpoint; the arm's own RL settings reach its runs
    assert len(list((tmp_path / "inline" / "tiny" / "_warmup").glob("seed*.pt"))) == 2
    # two single-threaded worker processes give the same runs as the inline runner (single-threaded too)
    par = run_experiment(exp, tmp_path / "par", torch.device("cpu"), workers=2)
    assert par["summaries"] == res["summaries"] and par["verdicts"][0]["per_seed"] == v["per_seed"]


def test_a_registration_runs_from_its_first_seed(tmp_path):
    exp = dataclasses.replace(_tiny(), first_seed=7, seeds=1, arms=_tiny().arms[:2])
    res = run_experiment(exp, tmp_path, torch.device("cpu"), workers=1)
    assert res["first_seed"] == 7 and res["seeds"] == 1
    assert sorted(p.name for p in (tmp_path / "tiny").glob("*/seed*")) == ["seed7.jsonl", "seed7.jsonl", "seed7.pt"]
    with pytest.raises(ValueError, match="first_seed"):
        check_experiment(dataclasses.replace(exp, first_seed=-1))


def test_cli_train_and_experiment_names(tmp_path):
    from fiberlab import cli
    from fiberlab.experiments import EXPERIMENTS

    assert cli.main(["train", "--task", "parity", "--objective", "ppo", "--steps", "2", "--out", str(tmp_path),
                     "--set", "clip_ratio=0.1"]) == 0
    assert (tmp_path / "train_parity" / "ppo" / "seed0.jsonl").exists()
    assert (tmp_path / "train_parity" / "figures.png").exists()
    with pytest.raises(SystemExit, match="experiment must be one of"):
        cli.main(["experiment", "nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--objective must be one of"):
        cli.main(["train", "--task", "parity", "--objective", "nope"])
    # every registered experiment is well formed: its arms' objectives exist, predictions name its arms, one
    # primary, windows inside the run, and every arm's objective accepts its settings
    from fiberlab.gpu.losses import POLICY_LOSSES
    for exp in EXPERIMENTS.values():
        check_experiment(exp)
        assert all(a.objective in POLICY_LOSSES for a in exp.arms)
        for arm in exp.arms:
            check_arm(exp, arm)


def test_bench_train_reports_its_figures():
    from fiberlab.bench import bench_train
    r = bench_train(1, torch.device("cpu"))
    assert r["iteration_seconds"] > 0 and r["tokens_per_second"] > 0 and r["peak_memory_bytes"] > 0
    assert list(r["sample_seconds_by_length"]) == [8, 16, 32, 64]
    assert isinstance(r["linear_in_length"], bool)


def test_training_cache_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    """The book (run from book/) and the tests (run from the root) must share the cache, and a run from
    anywhere else must not leave one behind in that directory."""
    from fiberlab.claims import harness

    monkeypatch.delenv("FIBERLAB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    first = harness.cache_root()
    monkeypatch.chdir(tmp_path)
    assert harness.cache_root() == first == tmp_path / "xdg" / "fiberlab"
    monkeypatch.setenv("FIBERLAB_CACHE", str(tmp_path / "mine"))
    assert harness.cache_root() == tmp_path / "mine"


def test_readme_training_table_reads_the_published_primaries():
    """The README's table of training verdicts quotes the published primaries (``book/results``): the verdict,
    the effect and its interval, so that re-publishing a result without rewriting the README fails here."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    section = (root / "README.md").read_text().split("## Predictions in training", 1)[1].split("\n## ", 1)[0]
    for name, exp in EXPERIMENTS.items():
        res = json.loads((root / "book" / "results" / f"{name}.json").read_text())
        v = next(v for v in res["verdicts"] if v["primary"])
        row = next((line for line in section.splitlines() if line.startswith(f"| `{exp.claim}` |")), None)
        assert row is not None, f"README: no row for {exp.claim}"
        assert f"**{v['verdict']}**" in row, (exp.claim, v["verdict"], row)
        assert f"{v['effect']:+.3g}" in row and f"[{v['ci'][0]:+.3g}, {v['ci'][1]:+.3g}]" in row, (exp.claim, row)


def _entry(verdict, effect, ci, passed=4, run=4, margin=None):
    gate = {"a": {"passed": passed, "run": run, "reasons": []}, "b": {"passed": run, "run": run, "reasons": []}}
    return {"verdict": verdict, "effect": effect, "ci": ci, "margin": margin, "gate": gate}


def test_ci_size_reproduction_rules():
    from fiberlab.claims.harness import reproduces

    # a decided primary must keep its sign with the gate passing
    assert reproduces(_entry("x", 0.3, [-1, 2]), _entry("confirmed", 0.2, [0.1, 0.3]))[0]
    assert not reproduces(_entry("x", -0.3, [-1, 2]), _entry("confirmed", 0.2, [0.1, 0.3]))[0]
    assert reproduces(_entry("x", -0.3, [-1, 2]), _entry("refuted", -0.2, [-0.3, -0.1]))[0]
    assert not reproduces(_entry("x", -0.3, [-1, 2], passed=1), _entry("refuted", -0.2, [-0.3, -0.1]))[0]
    # a failed gate must fail again
    assert reproduces(_entry("x", 0.0, [-1, 1], passed=1), _entry("not testable", 0.0, [-1, 1], passed=5, run=16))[0]
    assert not reproduces(_entry("x", 0.0, [-1, 1]), _entry("not testable", 0.0, [-1, 1], passed=5, run=16))[0]
    # equivalent and inconclusive: the CI-size interval must not be disjoint from the published one
    for verdict in ("equivalent", "inconclusive"):
        full = _entry(verdict, 0.1, [-0.4, 0.6], margin=1.0)
        assert reproduces(_entry("x", 1.5, [0.5, 2.5]), full)[0]
        assert not reproduces(_entry("x", 2.0, [0.7, 3.3]), full)[0]


def test_every_published_ci_p_and_verdict_recomputes_from_per_seed():
    """What a reviewer does with book/results: recompute each interval, p-value, Holm p and verdict from the
    paired differences alone (and the gate and margin stored beside them)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "book" / "results"
    published = {name: json.loads((root / f"{name}.json").read_text()) for name in EXPERIMENTS}
    primaries = [next(v for v in r["verdicts"] if v["primary"]) for r in published.values()]
    for v, p_holm in zip(primaries, stats.holm([v["p"] for v in primaries])):
        assert v["p_holm"] == pytest.approx(p_holm, rel=1e-12)
    for name, res in published.items():
        for v in res["verdicts"]:
            d = np.array(v["per_seed"])
            assert len(d) == v["seeds"] == res["seeds"]
            assert v["effect"] == pytest.approx(d.mean(), rel=1e-12)
            assert v["ci"] == pytest.approx(list(stats.paired_t_interval(d)), rel=1e-12)
            assert v["p"] == stats.sign_flip_p(d)
            p_used = v["p_holm"] if v["primary"] else v["p"]
            assert v["verdict"] == stats.verdict(d, p_used, v["margin"], gate_passed(v["gate"])), (name, v)
