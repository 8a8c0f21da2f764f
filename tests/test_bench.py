"""`fiberlab bench band` runs end to end and reports what it claims (no timing is asserted here: speed is a
benchmark figure, not a test)."""

from __future__ import annotations

import json

import torch

from fiberlab import cli
from fiberlab.bench import bench_band


def test_bench_band_reports_every_figure_and_the_accuracies():
    r = bench_band(4096, 1, torch.device("cpu"))
    assert {"tv", "chi2", "kl_newton", "kl_table", "kl_authors_bisection", "ppo_fwd_bwd",
            "bandpo_kl_fwd_bwd"} <= set(r["seconds"])
    assert all(v > 0 for v in r["seconds"].values())
    acc = r["accuracy"]
    # float32 solvers: the upper end is well conditioned, a few float32 ulps (eps32 ≈ 1.2e-7) is the bar.
    assert acc["kl_newton"]["max_rel_upper"] < 1e-5 and acc["kl_table"]["max_rel_upper"] < 1e-5
    # The authors' bisection has an absolute tolerance: its relative error on small lower ends is huge.
    assert acc["kl_authors_bisection"]["max_rel_lower"] > 1e3 * acc["kl_newton"]["max_rel_lower"]
    assert acc["kl_newton"]["zeroed_lower"] == 0


def test_bench_cli_writes_json(tmp_path):
    out = tmp_path / "b.json"
    assert cli.main(["bench", "band", "--tokens", "2048", "--repeats", "1", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["tokens"] == 2048 and "ratios" in doc and "targets" in doc


def test_bench_lpo_reports_every_figure():
    from fiberlab.bench import bench_lpo
    r = bench_lpo(8 * 1024 * 2, 1, torch.device("cpu"))
    assert r["shape"] == [16, 1024] and r["group_size"] == 8
    assert {"ppo_fwd_bwd", "lpo_fwd_fwd_bwd", "lpo_rev_fwd_bwd", "lpo_pointwise_fwd_bwd"} <= set(r["seconds"])
    assert all(v > 0 for v in r["seconds"].values())
    assert set(r["targets"]) == {"lpo_fwd / ppo <= 1.2", "lpo_rev / ppo <= 1.2"}


def test_bench_lpo_cli(tmp_path):
    out = tmp_path / "l.json"
    assert cli.main(["bench", "lpo", "--tokens", "16384", "--repeats", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["group_size"] == 8
