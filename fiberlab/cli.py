"""``fiberlab`` command line: ``verify`` runs the claim registry, ``bench`` runs the benchmarks.

    fiberlab verify [--paper P] [--claim ID ...] [--layer L] [--json PATH]
    fiberlab bench band|lpo|fiberpo [--tokens N] [--repeats K] [--json PATH]
    fiberlab claims                       # list the registry without running it
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
    b.add_argument("target", choices=["band", "lpo", "fiberpo"])
    b.add_argument("--tokens", type=int, default=1 << 20, help="tokens per tensor (default 2^20)")
    b.add_argument("--repeats", type=int, default=15, help="repetitions (round-robin); the median is reported")
    b.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    b.set_defaults(func=_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A pipe or CI log has no width; give the tables room instead of folding every cell.
    console = Console(width=None if sys.stdout.isatty() else 150)
    return args.func(args, console)


if __name__ == "__main__":
    sys.exit(main())
