"""Running claims and presenting their evidence: one code path for the command line, the tests and the book."""

from __future__ import annotations

import dataclasses
import datetime
import html
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fiberlab.registry import Claim, CheckResult, claim_json, claim_outcome, get_claim, run_check, select


@dataclasses.dataclass
class ClaimRun:
    claim: Claim
    results: list[CheckResult]

    @property
    def outcome(self) -> str:
        return claim_outcome(self.results)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.results)

    def as_json(self) -> dict[str, Any]:
        return claim_json(self.claim, self.results)


def run_claims(claims: Iterable[Claim], layer: str | None = None,
               on_check: Callable[[Claim, Any], None] | None = None,
               on_start: Callable[[Claim, Any], None] | None = None) -> list[ClaimRun]:
    """Run every check (of ``layer`` if given) of each claim; ``on_start`` is called before each check (a
    progress display names the check that is running) and ``on_check`` after it."""
    runs = []
    for c in claims:
        results = []
        for chk in c.checks:
            if layer and chk.layer != layer:
                continue
            if on_start:
                on_start(c, chk)
            results.append(run_check(chk))
            if on_check:
                on_check(c, chk)
        runs.append(ClaimRun(c, results))
    return runs


def package_version() -> str:
    """The installed distribution's version, else the package's own ``__version__`` (a source tree on sys.path)."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("fiberlab")
    except PackageNotFoundError:
        from fiberlab import __version__

        return __version__


def source_commit(timeout: float = 2.0) -> str | None:
    """The git commit of the tree this package was imported from, or ``None`` (no git, not a checkout, an installed
    copy, a slow disk). Only when the package's own ``__init__.py`` is tracked there: a copy installed into a
    virtualenv that happens to sit inside some other checkout does not report that checkout's commit."""
    here = Path(__file__).resolve().parent
    try:
        tracked = subprocess.run(["git", "-C", str(here), "ls-files", "--error-unmatch", "__init__.py"],
                                 capture_output=True, text=True, timeout=timeout)
        if tracked.returncode != 0:
            return None
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return commit if head.returncode == 0 and commit else None


def verify_document(runs: list[ClaimRun], filters: dict[str, Any], checks: int) -> dict[str, Any]:
    """``fiberlab verify --json``: a header (version, source commit, UTC time, the filters as given, the summary
    line's counts) beside ``"claims"``, one :meth:`ClaimRun.as_json` per claim."""
    summary: dict[str, int] = {s: sum(1 for run in runs if verdict(run) == s)
                               for s in ("verified", "conditional", "refuted", "FAILED")}
    summary["checks"] = checks
    return {"fiberlab": package_version(), "commit": source_commit(),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "filters": dict(filters), "summary": summary, "fields": EVIDENCE_FIELDS,
            "claims": [run.as_json() for run in runs]}


#: What each number of a check's JSON entry means (written into the document's header).
EVIDENCE_FIELDS: dict[str, str] = {
    "max_error": "the largest error the check saw, in its own units (for several measures, or a bound per case: "
                 "the one nearest its tolerance, named in the detail)",
    "tolerance": "the bound max_error is held to, in the same units",
    "error_ratio": "max_error / tolerance: what a check that holds errors to a tolerance compares with 1",
    "cases": "instances examined",
    "seconds": "wall time of the check",
}


def fmt_err(x: float | None) -> str:
    return "—" if x is None else ("0" if x == 0 else f"{x:.2e}")


def verdict(run: ClaimRun) -> str:
    """``verified``/``refuted``/``conditional`` when the evidence reproduces, else ``FAILED``."""
    return run.claim.status if run.outcome == "pass" else "FAILED"


# --------------------------------------------------------------------------------------------------------------
# Book display: an HTML table of a claim's evidence (rendered by myst-nb from a cell's output)
# --------------------------------------------------------------------------------------------------------------

class EvidenceTable:
    """Rich display object: ``_repr_html_`` for the book, ``__repr__`` as plain text."""

    def __init__(self, runs: list[ClaimRun]):
        self.runs = runs

    @property
    def all_passed(self) -> bool:
        return all(r.outcome == "pass" for r in self.runs)

    def rows(self) -> list[list[str]]:
        out = []
        for run in self.runs:
            for r in run.results:
                out.append([run.claim.id, verdict(run), r.layer, r.name, r.status, fmt_err(r.max_error),
                            fmt_err(r.tolerance), str(r.cases), f"{r.seconds:.2f}", r.detail])
        return out

    HEADER = ["claim", "status", "layer", "check", "result", "max error", "tolerance", "cases", "s", "detail"]

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in self.HEADER)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self.rows())
        return f'<table class="fiberlab-evidence"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    def __repr__(self) -> str:
        return "\n".join(" | ".join(row[:9]) for row in [self.HEADER] + self.rows())


def show_claims(*claim_ids: str, layer: str | None = None) -> EvidenceTable:
    """Run the named claims' checks and return their evidence table; raise if any check does not pass.

    The book calls this in executed cells, so a failing check fails the book build (``raise_on_error``).
    """
    claims = [get_claim(i) for i in claim_ids]
    table = EvidenceTable(run_claims(claims, layer=layer))
    if not table.all_passed:
        bad = [(r.claim_id, r.layer, r.name, r.status, r.detail) for run in table.runs for r in run.results
               if r.status != "pass"]
        raise AssertionError(f"checks did not pass: {bad}")
    return table


def select_claims(paper: str | None = None, claim_ids: Iterable[str] | None = None,
                  layer: str | None = None) -> list[Claim]:
    return select(paper=paper, claim_ids=claim_ids, layer=layer)


# --------------------------------------------------------------------------------------------------------------
# Book display: the registry's record of a claim, and which claims a page has shown
# --------------------------------------------------------------------------------------------------------------

_SHOWN: set[str] = set()


class ClaimCard:
    """A claim's record (id, paper and source, status, statement, condition) as an HTML table."""

    def __init__(self, claim: Claim):
        self.claim = claim

    def rows(self) -> list[tuple[str, str]]:
        c = self.claim
        return [("claim", c.id), ("paper / source", f"{c.paper}, {c.source}"), ("status", c.status),
                ("statement", c.statement)] + ([("condition", c.condition)] if c.condition else []) + [
                ("declared", c.declared_at or "?"), ("checked by", self.checked_by())]

    def checked_by(self) -> str:
        """Each check (layer, name, file:line) and the code it exercises (``fiberlab.where``), one per line."""
        from fiberlab.where import check_locations

        lines = []
        for k in check_locations(self.claim):
            calls = ", ".join(f"{e['name'].removeprefix('fiberlab.')} ({e['at']})" for e in k["exercises"])
            lines.append(f"{k['layer']} {k['name']} ({k['at']})" + (f" → {calls}" if calls else ""))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{html.escape(v).replace(chr(10), '<br>')}</td>"
                       f"</tr>" for k, v in self.rows())
        return f"<table class='fiberlab-claim'>{body}</table>"

    def __repr__(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self.rows())


def claim_card(claim_id: str) -> ClaimCard:
    """Display a claim's card in a notebook (and return it); records the claim as shown on this page."""
    card = ClaimCard(get_claim(claim_id))
    _SHOWN.add(claim_id)
    try:
        from IPython.display import display
    except ImportError:  # outside a notebook: the caller prints the returned card
        return card
    display(card)
    return card


def shown_claims() -> set[str]:
    """Ids passed to :func:`claim_card` in this process (one book page runs in one kernel)."""
    return set(_SHOWN)
