"""``fiberlab`` command line: ``verify`` runs the claim registry, ``bench`` runs the benchmarks.

    fiberlab verify [--paper P] [--claim ID ...] [--layer L] [--json PATH]
    fiberlab bench band|lpo|fiberpo|train [--tokens N] [--repeats K] [--json PATH]
    fiberlab claims                       # list the registry without running it
    fiberlab train --task T --objective O [--seeds N] [--steps S] [--device D] [--set key=value ...]
    fiberlab experiment NAME|all [--seeds N] [--reduced] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fiberlab.registry import LAYERS
from fiberlab.report import fmt_err, run_claims, select_claims, verdict

_STYLE = {"verified": "green", "conditional": "yellow", "refuted": "magenta", "FAILED": "bold red"}


def worst_ratio(run) -> float | None:
    """Largest max_error/tolerance over the claim's checks (errors are in different units per check; the ratio
    to each check's own tolerance is comparable: ≤ 1 passes). Exact checks (tolerance 0, error 0) count as 0."""
    ratios = []
    for r in run.results:
        if r.max_error is None or r.tolerance is None:
            continue
        ratios.append(0.0 if r.max_error == 0 else (r.max_error / r.tolerance if r.tolerance > 0 else float("inf")))
    return max(ratios) if ratios else None


def _verify(args: argparse.Namespace, console: Console) -> int:
    claims = select_claims(paper=args.paper, claim_ids=args.claim, layer=args.layer)
    if not claims:
        console.print("[red]no claim matches the filters[/red]")
        return 2
    n_checks = sum(1 for c in claims for k in c.checks if not args.layer or k.layer == args.layer)
    with Progress(TextColumn("[bold]verify"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=console, transient=True, disable=args.no_progress) as progress:
        task = progress.add_task("", total=n_checks)

        def tick(claim, check) -> None:
            progress.update(task, advance=1, description=f"{claim.id} [{check.layer}]")

        runs = run_claims(claims, layer=args.layer, on_check=tick)

    table = Table(title="fiberlab verify", show_lines=False)
    for col, kw in [("claim", {}), ("paper", {}), ("source", {"overflow": "fold"}), ("checks by layer", {}),
                    ("status", {}), ("worst error/tol", {"justify": "right"}), ("time (s)", {"justify": "right"})]:
        table.add_column(col, **kw)
    for run in runs:
        v = verdict(run)
        counts: dict[str, list[int]] = {}
        for r in run.results:
            ok_bad = counts.setdefault(r.layer, [0, 0])
            ok_bad[0 if r.status == "pass" else 1] += 1
        layers = " ".join(f"{k} {v[0]}" + (f" ✗{v[1]}" if v[1] else "") for k, v in counts.items())
        table.add_row(escape(run.claim.id), run.claim.paper, escape(run.claim.source), layers, f"[{_STYLE[v]}]{v}[/]",
                      fmt_err(worst_ratio(run)), f"{run.seconds:.2f}")
    console.print(table)
    failed = [r for run in runs for r in run.results if r.status != "pass"]
    for r in failed:
        console.print(f"[red]✗ {escape(r.claim_id)} \\[{r.layer}] {escape(r.name)}: {r.status}[/red]")
        console.print(r.detail, markup=False)
    counts = {s: sum(1 for run in runs if verdict(run) == s) for s in ("verified", "conditional", "refuted", "FAILED")}
    console.print("  ".join(f"{k}: {v}" for k, v in counts.items()) + f"  checks: {n_checks}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"claims": [run.as_json() for run in runs]}, indent=2))
        console.print(f"wrote {args.json}")
    return 1 if failed else 0


def _claims(args: argparse.Namespace, console: Console) -> int:
    table = Table(title="fiberlab claims")
    for col in ("claim", "paper", "source", "status", "layers", "statement"):
        table.add_column(col, overflow="fold")
    for c in select_claims(paper=args.paper):
        table.add_row(c.id, c.paper, c.source, c.status, " ".join(c.layers), c.statement)
    console.print(table)
    return 0


def _bench(args: argparse.Namespace, console: Console) -> int:
    from fiberlab import bench

    return bench.main(args, console)


def _value(text: str):
    """``--set`` values: JSON when it parses (numbers, booleans, null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _device(name: str | None):
    import torch

    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _verdict_table(result: dict, console: Console) -> None:
    t = Table(title=f"{result['experiment']} ({result['claim']}): {result['seeds']} seeds × {result['steps']} iterations")
    for col in ("prediction", "statistic", "effect", "95% CI", "verdict"):
        t.add_column(col, overflow="fold")
    colour = {"confirmed": "green", "reversed": "magenta", "not confirmed": "yellow"}
    for v in result["verdicts"]:
        t.add_row(escape(v["description"]), f"{v['statistic']} ({v['better']} − {v['worse']})", f"{v['effect']:+.4f}",
                  f"[{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]", f"[{colour[v['verdict']]}]{v['verdict']}[/]")
    console.print(t)


def _train(args: argparse.Namespace, console: Console) -> int:
    from fiberlab.experiments import Arm, Experiment, plot_experiment, run_one
    from fiberlab.gpu.harness import RLConfig
    from fiberlab.gpu.losses import POLICY_LOSSES
    from fiberlab.gpu.tasks import TASKS

    if args.task not in TASKS:
        raise SystemExit(f"--task must be one of {TASKS}")
    if args.objective not in POLICY_LOSSES:
        raise SystemExit(f"--objective must be one of {sorted(POLICY_LOSSES)}")
    loss_config = dict(kv.split("=", 1) for kv in (args.set or []))
    loss_config = {k: _value(v) for k, v in loss_config.items()}
    rl = RLConfig(steps=args.steps, updates_per_step=args.updates, lr=args.lr)
    arm = Arm(args.objective, args.objective, loss_config, advantage=args.advantage, loss_agg_mode=args.agg)
    exp = Experiment(name=f"train_{args.task}", claim="", task=args.task, arms=[arm], comparisons=[], rl=rl,
                     seeds=args.seeds)
    out = Path(args.out)
    device = _device(args.device)
    with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("", total=args.seeds)
        rows = []
        for seed in range(args.seeds):
            progress.update(task, description=f"{args.objective} on {args.task}, seed {seed}")
            rows.append(run_one(exp, arm, seed, out, device)[-1])
            progress.advance(task)
    t = Table(title=f"{args.objective} on {args.task}: last iteration per seed")
    keys = ("reward", "pass@1", "pass@8", "entropy", "ratio_mean", "grad_norm", "response_length")
    t.add_column("seed")
    for k in keys:
        t.add_column(k, justify="right")
    for seed, row in enumerate(rows):
        t.add_row(str(seed), *(f"{row[k]:.3f}" if k in row else "–" for k in keys))
    console.print(t)
    console.print(f"runs in {out / exp.name}; figure {plot_experiment(exp, out, args.seeds)}")
    return 0


def _experiment(args: argparse.Namespace, console: Console) -> int:
    from fiberlab.experiments import EXPERIMENTS, plot_experiment, reduced, run_experiment

    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    for name in names:
        if name not in EXPERIMENTS:
            raise SystemExit(f"experiment must be one of {sorted(EXPERIMENTS)} or 'all', got {name!r}")
    out = Path(args.out)
    device = _device(args.device)
    for name in names:
        exp = reduced(EXPERIMENTS[name]) if args.reduced else EXPERIMENTS[name]
        seeds = args.seeds or exp.seeds
        total = len(exp.arms) * seeds
        with Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                      transient=True) as progress:
            task = progress.add_task("", total=total)
            # called as each run starts: the bar counts runs started (finished runs are read back, not redone)
            result = run_experiment(exp, out, device, seeds=seeds,
                                    progress=lambda m: progress.update(task, description=m, advance=1))
        _verdict_table(result, console)
        figure = plot_experiment(exp, out, seeds)
        console.print(f"results {out / name / 'results.json'}, figure {figure}")
        if args.publish:
            import shutil

            dest = Path(args.publish)
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / name / "results.json", dest / f"{name}.json")
            shutil.copyfile(figure, dest / f"{name}.png")
            console.print(f"published to {dest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fiberlab", description="Verify trust-region policy-optimisation claims.")
    sub = ap.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="run the claim registry and print one row per claim")
    v.add_argument("--paper", help="BandPO, FiberPO, LPO or classical")
    v.add_argument("--claim", action="append", help="claim id (repeatable; a trailing * matches a prefix)")
    v.add_argument("--layer", choices=LAYERS)
    v.add_argument("--json", metavar="PATH", help="also write the evidence as JSON")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.set_defaults(func=_verify)
    c = sub.add_parser("claims", help="list the registry")
    c.add_argument("--paper")
    c.set_defaults(func=_claims)
    b = sub.add_parser("bench", help="run a benchmark")
    b.add_argument("target", choices=["band", "lpo", "fiberpo", "train"])
    b.add_argument("--tokens", type=int, default=1 << 20, help="tokens per tensor (default 2^20)")
    b.add_argument("--repeats", type=int, default=15, help="repetitions (round-robin); the median is reported")
    b.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    b.set_defaults(func=_bench)
    t = sub.add_parser("train", help="train one objective on one task (small model, from scratch)")
    t.add_argument("--task", required=True)
    t.add_argument("--objective", required=True)
    t.add_argument("--seeds", type=int, default=1)
    t.add_argument("--steps", type=int, default=80)
    t.add_argument("--updates", type=int, default=2, help="optimiser steps per rollout batch")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--advantage", default="grpo")
    t.add_argument("--agg", default="token-mean", help="loss_agg_mode")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="objective setting (repeatable)")
    t.add_argument("--device")
    t.add_argument("--out", default="results")
    t.set_defaults(func=_train)
    e = sub.add_parser("experiment", help="run a named comparison (every arm and seed; resumes)")
    e.add_argument("name", help="an experiment name or 'all'")
    e.add_argument("--seeds", type=int)
    e.add_argument("--reduced", action="store_true", help="the CI size (fewer seeds and iterations)")
    e.add_argument("--device")
    e.add_argument("--out", default="results")
    e.add_argument("--publish", metavar="DIR", help="also copy results.json and the figure to DIR (the book uses "
                                                    "book/results)")
    e.set_defaults(func=_experiment)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A pipe or CI log has no width; give the tables room instead of folding every cell.
    console = Console(width=None if sys.stdout.isatty() else 150)
    return args.func(args, console)


if __name__ == "__main__":
    sys.exit(main())
