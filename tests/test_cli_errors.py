"""Bad invocations of `fiberlab` are rejected before any work: exit status 2, one line on stderr naming the flag,
no traceback. Every expensive entry point is replaced by one that fails the test if it is reached, so a check
that happened only after the work (or not at all) shows up as an AssertionError, not as a slow pass."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from fiberlab import bench, cli, experiments

#: A bad invocation is answered in well under this (the work it must not do takes minutes).
FAST_S = 15.0


@pytest.fixture
def no_work(monkeypatch):
    """Every function that does the work of a command raises instead."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the command did its work before rejecting the invocation")

    monkeypatch.setattr(cli, "run_claims", forbidden)
    monkeypatch.setattr(bench, "main", forbidden)
    for name in ("bench_band", "bench_lpo", "bench_fiberpo", "bench_train", "interleaved_medians"):
        monkeypatch.setattr(bench, name, forbidden)
    for name in ("run_one", "run_experiment", "run_experiments", "run_all", "warmup", "rl_train", "plot_experiment"):
        monkeypatch.setattr(experiments, name, forbidden)


def run(argv: list[str], capsys) -> tuple[int, str, float]:
    """``main(argv)`` in-process: (exit status, stderr, seconds). A rejection raises SystemExit, as argparse does."""
    t0 = time.perf_counter()
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err, time.perf_counter() - t0


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    return f


TRAIN = ["train", "--task", "parity", "--objective", "ppo"]
BAND = ["train", "--task", "parity", "--objective", "bandpo"]

# (argv, what the one-line message must contain); "{file}" is a regular file, "{tmp}" the test's folder.
BAD = [
    (["verify", "--claim", "band.mirror", "--json", "/proc/nope/x.json"], "--json '/proc/nope/x.json' is not writable"),
    (["verify", "--claim", "band.mirror", "--json", "{tmp}"], "is a directory"),
    (["verify", "--claim", "band.mirror", "--json", "{file}/x.json"], "is not a directory"),
    (["verify", "--claim", "no.such.claim"], "--claim 'no.such.claim' matches no claim"),
    (["verify", "--claim", "band.mirror", "--claim", "typo.claim"], "--claim 'typo.claim' matches no claim"),
    (["verify", "--paper", "Nope"], "--paper must be one of"),
    (["verify", "--paper", "LPO", "--claim", "band.*"], "no claim matches --paper LPO --claim band.*"),
    (["claims", "--paper", "Nope"], "--paper must be one of"),
    (["bench", "band", "--tokens", "0"], "--tokens must be a positive integer, got 0"),
    (["bench", "band", "--tokens", "-5"], "--tokens must be a positive integer, got -5"),
    (["bench", "train", "--repeats", "0"], "--repeats must be a positive integer, got 0"),
    (["bench", "fiberpo", "--repeats", "-3"], "--repeats must be a positive integer, got -3"),
    (["bench", "lpo", "--tokens", "7"], "--tokens must give whole groups of 8 rows"),
    (["bench", "lpo", "--tokens", "9216"], "got 9216 (9 row(s) of 1024)"),
    (["bench", "band", "--json", "/proc/nope/x.json"], "--json '/proc/nope/x.json' is not writable"),
    (["bench", "band", "--json", "{tmp}"], "is a directory"),
    (["experiment", "band_entropy", "--seeds", "-1"], "--seeds must be at least 2"),
    (["experiment", "band_entropy", "--seeds", "0"], "--seeds must be at least 2"),
    (["experiment", "band_entropy", "--seeds", "1"], "--seeds must be at least 2"),
    (["experiment", "nope"], "experiment must be one of"),
    (["experiment", "band_entropy", "--workers", "0"], "--workers must be a positive integer, got 0"),
    (["experiment", "all", "--out", "{file}"], "--out"),
    (["experiment", "band_entropy", "--publish", "{file}/pub"], "--publish"),
    (["experiment", "band_entropy", "--device", "nope"], "--device must be a torch device"),
    (TRAIN + ["--steps", "0"], "--steps must be a positive integer, got 0"),
    (TRAIN + ["--steps", "-5"], "--steps must be a positive integer, got -5"),
    (TRAIN + ["--updates", "0"], "--updates must be a positive integer, got 0"),
    (TRAIN + ["--updates", "17"], "--updates must be at most 16"),
    (TRAIN + ["--seeds", "0"], "--seeds must be a positive integer, got 0"),
    (TRAIN + ["--advantage", "nope"], "--advantage must be one of"),
    (TRAIN + ["--agg", "nope"], "--agg must be one of"),
    (["train", "--task", "nope", "--objective", "ppo"], "--task must be one of"),
    (["train", "--task", "parity", "--objective", "nope"], "--objective must be one of"),
    (BAND + ["--set", "band_delta=-1"], "--objective bandpo rejects --set band_delta=-1: band_delta"),
    (BAND + ["--set", "band_divergence=hellinger"], "band_divergence"),
    (TRAIN + ["--set", "clip_ratio=abc"], "clip_ratio"),
    (TRAIN + ["--set", "foo"], "--set takes KEY=VALUE, got 'foo'"),
    (TRAIN + ["--set", "=3"], "--set takes KEY=VALUE, got '=3'"),
    (TRAIN + ["--device", "nope"], "--device must be a torch device"),
    (TRAIN + ["--device", "cuda:99"], "--device cuda:99"),
    (TRAIN + ["--device", "meta"], "--device meta is not usable"),
    (TRAIN + ["--lr", "nan"], "--lr must be a positive finite number, got nan"),
    (TRAIN + ["--lr", "inf"], "--lr must be a positive finite number, got inf"),
    (TRAIN + ["--lr=-1e-3"], "--lr must be a positive finite number"),
    (TRAIN + ["--lr", "0"], "--lr must be a positive finite number"),
    (TRAIN + ["--out", "/proc/nope"], "--out '/proc/nope' is not writable"),
    (TRAIN + ["--out", "{file}"], "exists and is not a directory"),
    (TRAIN + ["--out", "{file}/sub"], "is not a directory"),
]
if not torch.cuda.is_available():
    BAD.append((TRAIN + ["--device", "cuda"], "--device cuda: no CUDA device is available"))


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_invocation_is_one_line_and_exit_2_before_any_work(argv, message, no_work, tmp_path, a_file, capsys):
    argv = [a.format(tmp=tmp_path, file=a_file) for a in argv]
    rc, err, seconds = run(argv, capsys)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fiberlab {argv[0]}: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in err
    assert seconds < FAST_S
    assert a_file.read_text() == "x"                      # a probe never touches what is there
    assert not (a_file.parent / "pub").exists()


# argparse's own errors: its usage line, then one error line, status 2.
ARGPARSE = [["bench", "band", "--tokens", "abc"], ["bench", "nope"], ["verify", "--layer", "nope"],
            ["train", "--task", "parity"], ["train", "--task", "parity", "--objective", "ppo", "--lr", "x"], []]


@pytest.mark.parametrize("argv", ARGPARSE, ids=[" ".join(a) or "(none)" for a in ARGPARSE])
def test_argparse_errors_keep_its_usage_line(argv, no_work, capsys):
    rc, err, _ = run(argv, capsys)
    assert rc == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("fiberlab") and ": error: " in last and "Traceback" not in err


def test_output_probes_leave_nothing_behind(no_work, tmp_path, capsys):
    """A rejected invocation does not leave the folders its output probe created."""
    out = tmp_path / "new" / "deeper"
    rc, err, _ = run(TRAIN + ["--steps", "0", "--out", str(out)], capsys)
    assert rc == 2 and not (tmp_path / "new").exists()
    rc, err, _ = run(["verify", "--claim", "no.such", "--json", str(out / "v.json")], capsys)
    assert rc == 2 and not (tmp_path / "new").exists()


def test_good_invocations_reach_the_work(monkeypatch, tmp_path, capsys):
    """Valid arguments pass the checks (and a new output folder is accepted); the work itself is stubbed."""
    calls = []

    def fake_run_one(exp, arm, seed, out, device):
        calls.append((exp.name, arm.loss_config, seed, device.type))
        return [{"step": 0, "reward": 0.5}]

    monkeypatch.setattr(experiments, "run_one", fake_run_one)
    monkeypatch.setattr(experiments, "plot_experiment", lambda exp, out, seeds: out / "figures.png")
    argv = BAND + ["--seeds", "2", "--steps", "3", "--updates", "16", "--lr", "1e-4", "--agg", "seq-mean-token-mean",
                   "--advantage", "rloo", "--device", "cpu", "--set", "band_delta=0.1", "--set", "band_divergence=tv",
                   "--out", str(tmp_path / "new" / "results")]
    assert cli.main(argv) == 0
    assert calls == [("train_parity", {"band_delta": 0.1, "band_divergence": "tv"}, s, "cpu") for s in (0, 1)]

    def fake_run_experiments(exps, out, device, seeds=None, workers=None, progress=None, others=None):
        progress(1, 2, "half")
        return {e.name: {"experiment": e.name, "claim": e.claim, "seeds": seeds, "steps": e.rl.steps,
                         "verdicts": []} for e in exps}

    monkeypatch.setattr(experiments, "run_experiments", fake_run_experiments)
    assert cli.main(["experiment", "lpo_training", "--seeds", "2", "--reduced", "--device", "cpu",
                     "--out", str(tmp_path / "r")]) == 0


def test_every_objective_accepts_its_defaults_in_the_dry_call():
    """The dry call runs for every registered objective and advantage without a setting: it rejects only bad
    settings, never a valid objective."""
    from fiberlab.gpu.advantages import ADVANTAGES
    from fiberlab.gpu.losses import POLICY_LOSSES

    for objective in POLICY_LOSSES:
        for advantage in ADVANTAGES:
            arm = experiments.Arm(objective, objective, {}, advantage=advantage)
            experiments.check_arm(experiments.Experiment("x", "", "parity", [arm], []), arm)


def test_a_rejection_from_the_shell_is_one_line_and_exit_2(tmp_path):
    """The installed entry point (not only main()): status 2, one stderr line, no traceback."""
    p = subprocess.run([sys.executable, "-c", "import sys; from fiberlab.cli import main; sys.exit(main())",
                        "bench", "band", "--tokens", "0"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["fiberlab bench: error: --tokens must be a positive integer, got 0"]
