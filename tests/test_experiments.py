"""The experiment runner: paired verdicts, resumption, warm-up shared across arms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fiberlab.experiments import Arm, Comparison, Experiment, paired_verdict, run_experiment
from fiberlab.gpu.harness import ModelConfig, RLConfig, WarmupConfig


def test_paired_verdict_directions():
    worse = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    assert paired_verdict(worse + 1.0, worse)["verdict"] == "confirmed"
    assert paired_verdict(worse - 1.0, worse)["verdict"] == "reversed"
    v = paired_verdict(worse + np.array([0.1, -0.1, 0.1, -0.1, 0.0]), worse)
    assert v["verdict"] == "not confirmed" and v["ci"][0] < 0 < v["ci"][1]
    assert paired_verdict(worse + 0.3, worse)["effect"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="two seeds"):
        paired_verdict(np.array([1.0]), np.array([0.0]))


def _tiny():
    return Experiment(
        name="tiny", claim="none", task="parity", task_kwargs={"bits": 3},
        arms=[Arm("ppo", "ppo"), Arm("lpo_fwd", "lpo", {"lpo_divergence": "fwd"})],
        comparisons=[Comparison("lpo_fwd", "ppo", "final_entropy", "toy")],
        model=ModelConfig(d_model=16, n_layer=1, n_head=2, max_len=16),
        warmup=WarmupConfig(steps=5, batch=16),
        rl=RLConfig(steps=3, prompts_per_step=4, group_size=4, eval_prompts=4, eval_k=2, eval_every=1),
        seeds=2)


def test_run_experiment_writes_results_and_resumes(tmp_path):
    exp = _tiny()
    res = run_experiment(exp, tmp_path, torch.device("cpu"))
    assert res["verdicts"][0]["verdict"] in ("confirmed", "reversed", "not confirmed")
    assert json.loads((tmp_path / "tiny" / "results.json").read_text())["seeds"] == 2
    runs = sorted((tmp_path / "tiny").glob("*/seed*.jsonl"))
    assert len(runs) == 4 and all(len(p.read_text().splitlines()) == 3 for p in runs)
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    again = run_experiment(exp, tmp_path, torch.device("cpu"))            # resumes: nothing retrained
    assert {p: p.stat().st_mtime_ns for p in runs} == stamps
    assert again["summaries"] == res["summaries"]
    # both arms start from the same warm-up checkpoint per seed
    assert len(list((tmp_path / "tiny" / "_warmup").glob("seed*.pt"))) == 2


def test_equivalence_verdict():
    base = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    assert paired_verdict(base + 0.001, base, kind="equivalent", margin=0.01)["verdict"] == "confirmed"
    assert paired_verdict(base + 0.1, base, kind="equivalent", margin=0.01)["verdict"] == "not confirmed"
    with pytest.raises(ValueError, match="kind"):
        paired_verdict(base, base, kind="less")


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
    # every named experiment is well formed: its arms' objectives exist and comparisons name its arms
    from fiberlab.gpu.losses import POLICY_LOSSES
    for exp in EXPERIMENTS.values():
        names = {a.name for a in exp.arms}
        assert all(a.objective in POLICY_LOSSES for a in exp.arms)
        assert all(c.better in names and c.worse in names for c in exp.comparisons)


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
