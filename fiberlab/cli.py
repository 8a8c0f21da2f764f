"""``fiberlab`` command line: ``verify`` runs the claim registry, ``bench`` runs the benchmarks.

    fiberlab verify [--paper P] [--claim ID ...] [--layer L] [--json PATH]
    fiberlab bench band|lpo|fiberpo|train [--tokens N] [--repeats K] [--json PATH]
    fiberlab claims [--paper P]           # list the registry without running it
    fiberlab claims --where ID [--json PATH]   # everything about one claim, with file:line locations
    fiberlab train --task T --objective O [--seeds N] [--steps S] [--device D] [--set key=value ...]
    fiberlab experiment NAME|all [--seeds N] [--reduced] [--out DIR]
    fiberlab verl-check --loss-mode NAME [--set key=value ...] [--agg MODE] [--mixed-precision bf16]
    fiberlab imports [--dot] [--check]        # the import graph through the package mapping
    fiberlab --version

A bad invocation is rejected before any work (checks, warm-ups, training, benchmarks take minutes): one line on
stderr, ``fiberlab <command>: error: <message>`` naming the flag and the value, and exit status 2, argparse's
convention (argparse's own parse errors add its usage line above). ``verify`` exits 1 when a check fails and 2
when its filters select nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from fiberlab.registry import LAYERS, PAPERS, error_ratio
from fiberlab.report import fmt_err, package_version, run_claims, select_claims, verdict, verify_document

#: Below this terminal width `fiberlab claims` prints one claim per block instead of a six-column table.
NARROW = 100

_STYLE = {"verified": "green", "conditional": "yellow", "refuted": "magenta", "FAILED": "bold red"}


class UsageError(SystemExit):
    """A rejected invocation. A ``SystemExit`` with status 2, like argparse's own errors, so that in-process
    callers see the same thing for both; :func:`main` prints the message as one line before it propagates."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = " ".join(str(message).split())          # one line, whatever the source's wrapping

    def __str__(self) -> str:
        return self.message


def _error_line(command: str, message: str) -> None:
    print(f"fiberlab {command}: error: {message}", file=sys.stderr)


def _positive(flag: str, value: int | None, least: int = 1, why: str = "") -> None:
    if value is not None and value < least:
        what = "a positive integer" if least == 1 else f"at least {least}{why}"
        raise UsageError(f"{flag} must be {what}, got {value}")


def _one_of(flag: str, value: str, known) -> None:
    """``known`` is the registry itself (a dict or tuple), never a copy, so a new entry is accepted at once."""
    if value not in known:
        raise UsageError(f"{flag} must be one of {', '.join(sorted(known))}; got {value!r}")


def _paper(paper: str | None) -> None:
    if paper is not None and paper.lower() not in {p.lower() for p in PAPERS}:
        raise UsageError(f"--paper must be one of {', '.join(PAPERS)} (any case); got {paper!r}")


def _writable(flag: str, path: str, directory: bool = False) -> None:
    """Fail now if ``path`` cannot be written, instead of after the run: create the missing folders and the file
    (or a temporary file in the folder), then remove whatever this created. Trying it is the only honest test:
    permission bits do not bind root, and read-only mounts or a file in the way only show on a real attempt."""
    p = Path(path)
    if not directory and p.is_dir():
        raise UsageError(f"{flag} {path!r} is a directory, not a file")
    if directory and p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {path!r} exists and is not a directory")
    folder = p if directory else p.parent
    created: list[Path] = []
    try:
        for d in [*reversed(folder.parents), folder]:
            if d.exists() and not d.is_dir():
                raise UsageError(f"{flag} {path!r} is not writable ({str(d)!r} is not a directory)")
            if not d.is_dir():
                d.mkdir()
                created.append(d)
        if directory:
            with tempfile.TemporaryFile(dir=folder):
                pass
        else:
            existed = p.exists()
            with p.open("a"):
                pass
            if not existed:
                p.unlink()
    except OSError as e:
        raise UsageError(f"{flag} {path!r} is not writable ({e.strerror or e})") from None
    finally:
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                pass


def worst_ratio(run) -> float | None:
    """Largest max_error/tolerance over the claim's checks (errors are in different units per check; the ratio
    to each check's own tolerance is comparable: ≤ 1 passes). Exact checks (tolerance 0, error 0) count as 0."""
    ratios = [error_ratio(r.max_error, r.tolerance) for r in run.results]
    ratios = [x for x in ratios if x is not None]
    return max(ratios) if ratios else None


def _verify(args: argparse.Namespace, console: Console) -> int:
    _paper(args.paper)
    if args.json:
        _writable("--json", args.json)
    # A --claim that matches nothing is a typo, not a smaller run: the selection must be what was asked for.
    for pattern in args.claim or []:
        if not select_claims(claim_ids=[pattern]):
            _error_line("verify", f"--claim {pattern!r} matches no claim (fiberlab claims lists them)")
            return 2
    claims = select_claims(paper=args.paper, claim_ids=args.claim, layer=args.layer)
    if not claims:
        filters = " ".join(f"--{k} {v}" for k, v in (("paper", args.paper), ("layer", args.layer)) if v)
        filters += "".join(f" --claim {c}" for c in args.claim or [])
        _error_line("verify", f"no claim matches {filters.strip()}")
        return 2
    n_checks = sum(1 for c in claims for k in c.checks if not args.layer or k.layer == args.layer)
    with Progress(TextColumn("[bold]verify"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=console, transient=True, disable=args.no_progress) as progress:
        task = progress.add_task("", total=n_checks)

        def start(claim, check) -> None:        # the label names the check now running, not the last one done
            progress.update(task, description=escape(f"{claim.id} [{check.layer}]"))

        def tick(claim, check) -> None:
            progress.update(task, advance=1)

        runs = run_claims(claims, layer=args.layer, on_check=tick, on_start=start)

    table = Table(title="fiberlab verify", show_lines=False)
    id_width = max((len(run.claim.id) for run in runs), default=5)     # ids whole: they are what --claim takes
    wide = console.width >= NARROW                                      # narrow: the id names the paper already
    columns = [("claim", {"no_wrap": True, "min_width": id_width})]
    columns += [("paper", {}), ("source", {"overflow": "fold"})] if wide else []
    columns += [("checks by layer", {}), ("status", {"no_wrap": True}),
                ("error/tol" if not wide else "worst error/tol", {"justify": "right", "no_wrap": True}), ("time (s)", {"justify": "right"})]
    for col, kw in columns:
        table.add_column(col, **kw)
    for run in runs:
        v = verdict(run)
        counts: dict[str, list[int]] = {}
        for r in run.results:
            ok_bad = counts.setdefault(r.layer, [0, 0])
            ok_bad[0 if r.status == "pass" else 1] += 1
        layers = " ".join(f"{k} {v[0]}" + (f" ✗{v[1]}" if v[1] else "") for k, v in counts.items())
        head = [escape(run.claim.id)] + ([run.claim.paper, escape(run.claim.source)] if wide else [])
        table.add_row(*head, layers, f"[{_STYLE[v]}]{v}[/]", fmt_err(worst_ratio(run)), f"{run.seconds:.2f}")
    console.print(table)
    failed = [r for run in runs for r in run.results if r.status != "pass"]
    for r in failed:
        console.print(f"[red]✗ {escape(r.claim_id)} \\[{r.layer}] {escape(r.name)}: {r.status}[/red]")
        console.print(r.detail, markup=False)
    counts = {s: sum(1 for run in runs if verdict(run) == s) for s in ("verified", "conditional", "refuted", "FAILED")}
    console.print("  ".join(f"{k}: {v}" for k, v in counts.items()) + f"  checks: {n_checks}")
    if args.json:
        doc = verify_document(runs, {"paper": args.paper, "claim": args.claim, "layer": args.layer}, n_checks)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        # UTF-8 and unescaped: statements and details hold δ, χ², r̄ and must stay readable in the file
        Path(args.json).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        console.print(f"wrote {args.json}")
    return 1 if failed else 0


def _where(args: argparse.Namespace, console: Console) -> int:
    """``claims --where ID``: the claim, where it is declared, every check with the code it exercises, the book
    pages that show it (:func:`fiberlab.where.where`)."""
    from fiberlab.registry import all_claims
    from fiberlab.where import where

    known = {c.id for c in all_claims()}
    if args.where not in known:
        near = sorted(k for k in known if k.split(".")[0] == args.where.split(".")[0]) or sorted(known)[:8]
        raise UsageError(f"--where {args.where!r} is not a claim id; for example {', '.join(near[:8])} "
                         f"(fiberlab claims lists them all)")
    if args.json:
        _writable("--json", args.json)
    w = where(args.where)
    console.print(f"[bold]{escape(w['claim'])}[/bold]  {escape(w['paper'])} · {escape(w['status'])} · "
                  f"{escape(w['source'])}")
    console.print(escape(w["statement"]), overflow="fold")
    if w["condition"]:
        console.print(f"[dim]condition:[/dim] {escape(w['condition'])}", overflow="fold")
    console.print(f"declared  {escape(w['declared'] or '?')}")
    console.print(f"book      {escape(', '.join(w['book']) or '(no page shows it)')}")
    for k in w["checks"]:
        console.print(f"check     {escape(k['layer'])} {escape(k['name'])}  {escape(k['at'] or '?')}")
        for e in k["exercises"]:
            console.print(f"            → {escape(e['name'])}  {escape(e['at'])}", overflow="fold")
    if args.json:
        Path(args.json).write_text(json.dumps(w, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


def _claims(args: argparse.Namespace, console: Console) -> int:
    if args.where:
        return _where(args, console)
    if args.json:
        raise UsageError("--json goes with --where (the list itself is `fiberlab claims`)")
    _paper(args.paper)
    claims = select_claims(paper=args.paper)
    # claim text holds intervals such as [r̲, r̄]: printed as text, never read as rich markup
    if console.width < NARROW:
        # a narrow terminal: one header line per claim (the id whole: it is what --claim takes), then the
        # statement wrapped under it, instead of six columns squeezed to a few characters each
        for c in claims:
            console.print(f"[bold]{escape(c.id)}[/bold]  {escape(c.paper)} · {escape(c.status)} · "
                          f"{escape(' '.join(c.layers))} · {escape(c.source)}")
            console.print(escape(c.statement), style="dim", overflow="fold")
            console.print()
        return 0
    table = Table(title="fiberlab claims")
    table.add_column("claim", no_wrap=True, min_width=max((len(c.id) for c in claims), default=5))
    for col in ("paper", "source", "status", "layers"):
        table.add_column(col, overflow="fold")
    table.add_column("statement", overflow="fold", ratio=1)
    for c in claims:
        table.add_row(*(escape(x) for x in (c.id, c.paper, c.source, c.status, " ".join(c.layers), c.statement)))
    console.print(table)
    return 0


def _bench(args: argparse.Namespace, console: Console) -> int:
    from fiberlab import bench

    try:
        bench.check_args(args.target, args.tokens, args.repeats)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.json:
        _writable("--json", args.json)
    return bench.main(args, console)


def _value(text: str):
    """``--set`` values: JSON when it parses (numbers, booleans, null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _settings(items: list[str] | None) -> dict:
    """``--set KEY=VALUE`` items as the objective's config dict. The keys are the objective's own (a free-form
    dict, read by ``hparam``), so only the form is checked here; the values are checked by the objective itself."""
    config = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set takes KEY=VALUE, got {item!r}")
        config[key.strip()] = _value(text)
    return config


def _device(name: str | None):
    """The torch device to train on, checked usable now (a missing GPU would otherwise surface after the warm-up)."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"--device must be a torch device such as cpu, cuda or cuda:0; got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: no such CUDA device (this machine has {torch.cuda.device_count()})")
        return device
    try:
        torch.zeros(1, device=device).add(1).cpu()
    except Exception as e:  # noqa: BLE001 - any backend failure means the device cannot train
        raise UsageError(f"--device {name} is not usable here ({type(e).__name__}: {str(e)[:120]})") from None
    return device


def _verdict_table(result: dict, console: Console) -> None:
    t = Table(title=f"{result['experiment']} ({result['claim']}): {result['seeds']} seeds × {result['steps']} iterations")
    for col in ("prediction", "statistic (better − worse)", "effect", "95% CI (paired t)", "p", "p (Holm)", "gate",
                "verdict"):
        t.add_column(col, overflow="fold")
    colour = {"confirmed": "green", "refuted": "magenta", "equivalent": "cyan", "inconclusive": "yellow",
              "not testable": "red"}
    for v in result["verdicts"]:
        ci = "–" if v["ci"] is None else f"[{v['ci'][0]:+.4g}, {v['ci'][1]:+.4g}]"
        gate = ", ".join(f"{a} {g['passed']}/{g['run']}" for a, g in v["gate"].items())
        t.add_row(("[bold]primary:[/bold] " if v["primary"] else "") + escape(v["description"]),
                  f"{escape(v['statistic'])} ({v['better']} − {v['worse']})", f"{v['effect']:+.4g}", ci,
                  "–" if v["p"] is None else f"{v['p']:.3g}", "–" if v["p_holm"] is None else f"{v['p_holm']:.3g}",
                  gate, f"[{colour[v['verdict']]}]{v['verdict']}[/]")
    console.print(t)


def _train(args: argparse.Namespace, console: Console) -> int:
    from fiberlab.experiments import Arm, Experiment, check_arm, plot_experiment, run_one
    from fiberlab.gpu.advantages import ADVANTAGES
    from fiberlab.gpu.harness import RLConfig
    from fiberlab.gpu.losses import AGG_MODES, POLICY_LOSSES
    from fiberlab.gpu.tasks import TASKS

    _one_of("--task", args.task, TASKS)
    _one_of("--objective", args.objective, POLICY_LOSSES)
    _one_of("--advantage", args.advantage, ADVANTAGES)
    _one_of("--agg", args.agg, AGG_MODES)
    for flag, value in (("--seeds", args.seeds), ("--steps", args.steps), ("--updates", args.updates)):
        _positive(flag, value)
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a positive finite number, got {args.lr}")
    loss_config = _settings(args.set)
    rl = RLConfig(steps=args.steps, updates_per_step=args.updates, lr=args.lr)
    # The rollout is split into `updates` mini-batches of whole prompts: more than there are prompts would
    # silently take fewer steps than asked.
    if args.updates > rl.prompts_per_step:
        raise UsageError(f"--updates must be at most {rl.prompts_per_step} (one mini-batch per prompt group), "
                         f"got {args.updates}")
    arm = Arm(args.objective, args.objective, loss_config, advantage=args.advantage, loss_agg_mode=args.agg)
    exp = Experiment(name=f"train_{args.task}", claim="", task=args.task, arms=[arm], predictions=[], rl=rl,
                     seeds=args.seeds)
    try:
        check_arm(exp, arm)
    except (ValueError, TypeError) as e:
        given = " ".join(f"--set {item}" for item in args.set or []) or "its default settings"
        raise UsageError(f"--objective {args.objective} rejects {given}: {e}") from None
    device = _device(args.device)
    _writable("--out", args.out, directory=True)
    out = Path(args.out)
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
    from fiberlab import experiments as ex

    if args.name != "all" and args.name not in ex.EXPERIMENTS:
        raise UsageError(f"experiment must be one of {', '.join(sorted(ex.EXPERIMENTS))} or 'all'; got {args.name!r}")
    names = list(ex.EXPERIMENTS) if args.name == "all" else [args.name]
    _positive("--seeds", args.seeds, 2, " (a verdict pairs the arms' runs seed by seed)")
    if args.workers is not None:
        _positive("--workers", args.workers)
    device = _device(args.device)
    _writable("--out", args.out, directory=True)
    if args.publish:
        _writable("--publish", args.publish, directory=True)
    out = Path(args.out)
    exps = [ex.reduced(ex.EXPERIMENTS[n]) if args.reduced else ex.EXPERIMENTS[n] for n in names]
    # the Holm family is every registered primary: experiments not run now count with their published results
    others = ex.published(Path(args.publish)) if args.publish and not args.reduced else {}
    with Progress(TextColumn("[bold]experiments"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("", total=None)

        def tick(done: int, total: int, message: str) -> None:
            progress.update(task, completed=done, total=total, description=escape(message))

        results = ex.run_experiments(exps, out, device, seeds=args.seeds, workers=args.workers, progress=tick,
                                     others=others)
    for exp in exps:
        result = results[exp.name]
        _verdict_table(result, console)
        figure = ex.plot_experiment(exp, out, args.seeds or exp.seeds)
        console.print(f"results {out / exp.name / 'results.json'}, figure {figure}")
        if args.publish:
            import shutil

            dest = Path(args.publish)
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / exp.name / "results.json", dest / f"{exp.name}.json")
            shutil.copyfile(figure, dest / f"{exp.name}.png")
            console.print(f"published to {dest}")
    return 0


def _verl_check(args: argparse.Namespace, console: Console) -> int:
    """One real verl 0.9.1 actor step on CPU (``fiberlab.gpu.verl_cpu.check``, in a process of its own)."""
    from fiberlab.gpu.losses import AGG_MODES

    _one_of("--agg", args.agg, AGG_MODES)
    if args.dynamic_bsz is not None:
        _positive("--dynamic-bsz", args.dynamic_bsz)
    try:
        from fiberlab.gpu import verl_cpu
    except ImportError as e:
        raise UsageError(f"verl-check needs verl 0.9.1 and the verl-actor extra ({e})") from None
    policy_loss = _settings(args.set)
    with console.status(f"verl actor step on CPU for loss_mode={args.loss_mode} …"):
        res = verl_cpu.run_isolated(verl_cpu.check, args.loss_mode, policy_loss, loss_agg_mode=args.agg,
                                    mixed_precision=args.mixed_precision, max_token_len=args.dynamic_bsz,
                                    timeout=300)
    if res["error"]:
        console.print(f"[red]✗ verl-check {escape(args.loss_mode)}: {escape(res['error'])}[/red]")
        return 1
    table = Table(title=f"verl actor step: loss_mode={escape(args.loss_mode)}, {args.agg}, {args.mixed_precision}")
    for col in ("mini-batch", "micro-batches", "verl Σ micro-batch losses", "one call on the mini-batch", "match",
                "gradient finite", "clip fraction", "grad norm"):
        table.add_column(col, justify="right")
    clip, gnorm = res["metrics"].get("actor/pg_clipfrac", []), res["metrics"].get("actor/grad_norm", [])
    for i, m in enumerate(res["mini_batches"]):
        table.add_row(str(i), str(m["micro_batches"]), f"{m['verl_loss']:+.8f}", f"{m['direct_loss']:+.8f}",
                      "yes" if m["match"] else "[red]NO[/red]", "yes" if m["grad_finite"] else "[red]NO[/red]",
                      f"{clip[i]:.3f}" if i < len(clip) else "", f"{gnorm[i]:.4f}" if i < len(gnorm) else "")
    console.print(table)
    metrics = Table(title="verl's metrics (last mini-batch)")
    metrics.add_column("metric")
    metrics.add_column("value", justify="right")
    for k, v in sorted(res["metrics"].items()):
        last = v[-1] if isinstance(v, list) and v else v
        if isinstance(last, (int, float)):
            metrics.add_row(escape(k), f"{last:.6g}")
    console.print(metrics)
    ok = all(m["match"] and m["grad_finite"] for m in res["mini_batches"]) and res["params_finite"]
    console.print(("[green]✓ the micro-batched loss equals one call on each mini-batch; gradients and weights "
                   "finite[/green]") if ok else "[red]✗ mismatch or non-finite values (table above)[/red]")
    return 0 if ok else 1


EXAMPLES = """\
examples:
  fiberlab verify --claim band.tv_closed_form          verify one claim (every layer)
  fiberlab verify --paper BandPO --layer gpu --json bandpo-gpu.json
                                                      a paper's gpu checks, evidence written as JSON
  fiberlab claims --paper LPO                          list a paper's claims without running them
  fiberlab bench band                                  time the Band bounds and the BandPO loss against PPO
  fiberlab verl-check --loss-mode bandpo --set band_delta=0.05
                                                      one real verl actor step on CPU with fiberlab's loss

'fiberlab COMMAND --help' describes each command's options.
"""

_PAPER_HELP = f"only this paper's claims: {', '.join(PAPERS)} (any case)"


def _imports(args: argparse.Namespace, console: Console) -> int:
    from fiberlab.layers import import_graph, layer_of, layer_violations, to_dot
    graph = import_graph()
    bad = layer_violations(graph)
    if args.dot:
        print(to_dot(graph))
    elif not args.check:
        for src in sorted(graph):
            for dst in sorted(graph[src]):
                print(f"{src} -> {dst}    ({layer_of(src)} -> {layer_of(dst)})")
    for src, dst in bad:
        print(f"upward import: {src} -> {dst} ({layer_of(src)} may not import {layer_of(dst)})", file=sys.stderr)
    if args.check and not bad:
        print(f"{len(graph)} modules, {sum(map(len, graph.values()))} imports, no layer imports upward")
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fiberlab", description="Verify trust-region policy-optimisation claims.",
                                 epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"fiberlab {package_version()}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    v = sub.add_parser("verify", help="run the claim registry and print one row per claim")
    v.add_argument("--paper", help=_PAPER_HELP)
    v.add_argument("--claim", action="append", metavar="ID",
                   help="only this claim: an exact id, or a prefix ending in * such as 'band.*' (no other "
                        "wildcards); repeatable, a claim matching any of them is run")
    v.add_argument("--layer", choices=LAYERS,
                   help=f"only the checks of this layer: {', '.join(LAYERS)} (default: every layer)")
    v.add_argument("--json", metavar="PATH", help="also write the evidence as JSON (UTF-8): a header (version, "
                   "commit, time, filters, summary) and one entry per claim")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.set_defaults(func=_verify)
    c = sub.add_parser("claims", help="list the registry")
    c.add_argument("--paper", help=_PAPER_HELP)
    c.add_argument("--where", metavar="ID", help="everything about one claim: statement, status, condition, where "
                   "it is declared, each check (layer, file:line) with the derivations, references and objectives "
                   "it calls (file:line), and the book pages that show it")
    c.add_argument("--json", metavar="PATH", help="with --where: also write it as JSON (UTF-8)")
    c.set_defaults(func=_claims)
    b = sub.add_parser("bench", help="run a benchmark")
    b.add_argument("target", choices=["band", "lpo", "fiberpo", "train"],
                   help="what to time: band (the Band bounds and the BandPO loss), lpo or fiberpo (their losses "
                        "against ppo), train (one RL iteration of the training harness)")
    b.add_argument("--tokens", type=int, default=1 << 20, help="tokens per tensor (default 2^20)")
    b.add_argument("--repeats", type=int, default=15, help="repetitions (round-robin); the median is reported")
    b.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    b.set_defaults(func=_bench)
    t = sub.add_parser("train", help="train one objective on one task (small model, from scratch)")
    t.add_argument("--task", required=True, help="a task of fiberlab.gpu.tasks (a wrong name lists them)")
    t.add_argument("--objective", required=True,
                   help="a policy loss of fiberlab.gpu.losses (a wrong name lists them)")
    t.add_argument("--seeds", type=int, default=1, help="independent runs (default 1)")
    t.add_argument("--steps", type=int, default=80, help="RL iterations per run (default 80)")
    t.add_argument("--updates", type=int, default=2, help="optimiser steps per rollout batch")
    t.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    t.add_argument("--advantage", default="grpo", help="advantage estimator (default grpo)")
    t.add_argument("--agg", default="token-mean", help="loss_agg_mode")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="objective setting (repeatable)")
    t.add_argument("--device", help="torch device such as cpu or cuda:0 (default: cuda when available)")
    t.add_argument("--out", default="results", metavar="DIR", help="where the runs are written (default results)")
    t.set_defaults(func=_train)
    e = sub.add_parser("experiment", help="run a named comparison (every arm and seed; resumes)")
    e.add_argument("name", help="an experiment name or 'all'")
    e.add_argument("--seeds", type=int, help="seeds per arm (default: the experiment's own)")
    e.add_argument("--reduced", action="store_true", help="the CI size (the primaries' arms, fewer seeds)")
    e.add_argument("--workers", type=int, help="parallel single-threaded runs (default: one per core)")
    e.add_argument("--device", help="torch device such as cpu or cuda:0 (default: cuda when available)")
    e.add_argument("--out", default="results", metavar="DIR",
                   help="where the runs are written; finished runs there are reused (default results)")
    e.add_argument("--publish", metavar="DIR", help="also copy results.json and the figure to DIR (the book uses "
                                                    "book/results)")
    e.set_defaults(func=_experiment)
    vc = sub.add_parser("verl-check", help="one real verl actor step on CPU for a loss_mode (tiny random model)")
    vc.add_argument("--loss-mode", required=True, help="verl's actor.policy_loss.loss_mode (fiberlab's or verl's)")
    vc.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="a policy_loss setting, as in +actor_rollout_ref.actor.policy_loss.KEY=VALUE (repeatable)")
    vc.add_argument("--agg", default="token-mean", help="actor.loss_agg_mode (default token-mean, verl's)")
    vc.add_argument("--mixed-precision", choices=("fp32", "bf16"), default="fp32",
                    help="fp32, or bf16 (verl's default: bf16 parameters under autocast)")
    vc.add_argument("--dynamic-bsz", type=int, metavar="TOKENS",
                    help="actor.use_dynamic_bsz with this many tokens per micro-batch")
    vc.set_defaults(func=_verl_check)
    im = sub.add_parser("imports", help="the project's import graph, with theory/numerics/gpu resolved through the "
                                        "package mapping (static tools that map names to folders miss it)")
    im.add_argument("--dot", action="store_true", help="print Graphviz source, one cluster per layer")
    im.add_argument("--check", action="store_true", help="print only a summary; exit 1 if a layer imports upward")
    im.set_defaults(func=_imports)
    return ap


def main(argv: list[str] | None = None) -> int:
    """The exit status of the command (``verify``: 1 when a check failed, 2 when nothing was selected); a
    rejected invocation raises ``SystemExit(2)`` after one line on stderr, as argparse's own errors do."""
    args = build_parser().parse_args(argv)
    # A pipe or CI log has no width; give the tables room instead of folding every cell.
    console = Console(width=None if sys.stdout.isatty() else 150)
    try:
        return args.func(args, console)
    except UsageError as e:
        _error_line(args.command, e.message)
        raise


if __name__ == "__main__":
    sys.exit(main())
