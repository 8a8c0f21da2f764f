"""Running claims and presenting their evidence: one code path for the command line, the tests and the book."""

from __future__ import annotations

import dataclasses
import datetime
import html
import re
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
# Book display: HTML that fits the book's content column. Every table is laid out at the column's width
# (``table-layout: fixed``, book/_static/fiberlab.css) with few, short columns; long text (a check's detail, the
# file:line of each check) is folded into a ``<details>`` element under its row.
# --------------------------------------------------------------------------------------------------------------

def _esc(text: str) -> str:
    """HTML-escaped text with its line breaks kept."""
    return html.escape(text).replace("\n", "<br>")


def _details(summary: str, body_html: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary><div class='fiberlab-detail'>{body_html}</div></details>"


class HtmlTable:
    """A table for the book: ``columns`` as ``(header, width)`` pairs (a CSS width such as ``"30%"``, or ``""``),
    ``rows`` of already formatted cells (plain text, escaped here), and for each row an optional folded text
    (``folded[i]``: ``(summary, text)``), shown under the row at the table's full width."""

    def __init__(self, columns: list[tuple[str, str]], rows: list[list[str]], title: str = "",
                 folded: list[tuple[str, str] | None] | None = None, css_class: str = "fiberlab-table",
                 element_id: str = ""):
        self.columns, self.rows, self.title, self.css_class, self.element_id = columns, rows, title, css_class, \
            element_id
        self.folded = folded or [None] * len(rows)

    def _repr_html_(self) -> str:
        cols = "".join(f"<col style='width:{w}'>" if w else "<col>" for _, w in self.columns)
        head = "".join(f"<th>{html.escape(h)}</th>" for h, _ in self.columns)
        body = []
        for row, fold in zip(self.rows, self.folded):
            body.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
            if fold and fold[1]:
                body.append(f"<tr class='fiberlab-folded'><td colspan='{len(self.columns)}'>"
                            f"{_details(fold[0], _esc(fold[1]))}</td></tr>")
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        ident = f" id='{html.escape(self.element_id)}'" if self.element_id else ""
        return (f"<table class='fiberlab {self.css_class}'{ident}>{caption}<colgroup>{cols}</colgroup>"
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")

    def __repr__(self) -> str:
        lines = [" | ".join(h for h, _ in self.columns)] + [" | ".join(r) for r in self.rows]
        return (self.title + "\n" if self.title else "") + "\n".join(lines)


class EvidenceTable:
    """Rich display object: ``_repr_html_`` for the book (one compact table per claim: check, layer, result,
    error / tolerance, time, with the check's detail folded under its row), ``__repr__`` as plain text."""

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
    #: the book's columns and their share of the content column
    COLUMNS = [("check", "38%"), ("layer", "14%"), ("result", "16%"), ("error / tolerance", "20%"), ("time", "12%")]

    def tables(self) -> list[HtmlTable]:
        """One :class:`HtmlTable` per claim."""
        out = []
        for run in self.runs:
            rows, folded = [], []
            for r in run.results:
                cases = f"{r.cases} case" + ("" if r.cases == 1 else "s")
                rows.append([r.name, r.layer, f"{r.status}\n{cases}",
                             f"{fmt_err(r.max_error)}\n/ {fmt_err(r.tolerance)}", f"{r.seconds:.2f} s"])
                folded.append(("detail", r.detail))
            out.append(HtmlTable(self.COLUMNS, rows, title=f"Evidence for {run.claim.id}: {verdict(run)}",
                                 folded=folded, css_class="fiberlab-evidence"))
        return out

    def _repr_html_(self) -> str:
        return "".join(t._repr_html_() for t in self.tables())

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

    #: rows shown as a folded ``<details>`` under the card's table (long, one ``file:line`` per line)
    FOLDED = ("declared", "checked by")
    #: an ambiguity label in a claim's source or statement ("open question A13", and the older "spec A8")
    _LABEL = re.compile(r"(?:spec (?:ambiguity )?|open question )A(\d+)")

    def _linked(self, escaped: str) -> str:
        """``escaped`` with each ambiguity label of the claim's paper turned into a link to its entry on the book's
        page of open questions (``open_questions.html#oq-<paper>-a<n>``), where the book has one."""
        labels = _open_question_labels()
        paper = self.claim.paper.lower()

        def link(m: re.Match) -> str:
            label = f"oq-{paper}-a{m.group(1)}"
            if label not in labels:
                return m.group(0)
            text = f"open question {html.escape(self.claim.paper)} A{m.group(1)}"
            return f"<a href='open_questions.html#{label}'>{text}</a>"

        return self._LABEL.sub(link, escaped)

    def _repr_html_(self) -> str:
        """The card as a two-column table inside an element whose id is the claim id exactly (``page.html#id``
        reaches it; Sphinx's own labels would turn the dots into dashes). The declaration and the checks'
        locations are folded."""
        rows = self.rows()
        shown = "".join(f"<tr><th>{k}</th><td>{self._linked(_esc(v))}</td></tr>" for k, v in rows
                        if k not in self.FOLDED)
        folded = "<br>".join(f"<b>{k}</b>: {_esc(v)}" if k == "declared" else f"<b>{k}</b>:<br>{_esc(v)}"
                             for k, v in rows if k in self.FOLDED)
        ident = html.escape(self.claim.id)
        return (f"<div class='fiberlab-claim' id='{ident}'><table class='fiberlab fiberlab-card'>"
                f"<colgroup><col style='width:22%'><col></colgroup>{shown}</table>"
                f"{_details('where it is declared and checked', folded)}</div>")

    def __repr__(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self.rows())


def _open_question_labels(page: Path = Path(__file__).resolve().parents[1] / "book" / "open_questions.md") -> set[str]:
    """The labels (``oq-fiberpo-a1``, …) of the book's page of open questions; empty where no book is beside the
    package."""
    try:
        return set(re.findall(r"^\((oq-[a-z]+-[a-z]\d+)\)=$", page.read_text(encoding="utf-8"), flags=re.M))
    except OSError:
        return set()


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
