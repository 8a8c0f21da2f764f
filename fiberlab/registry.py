"""The claim registry: every statement the suite checks, with its checks and their evidence.

A *claim* is one statement from a paper (or a classical result a paper relies on). A *check* is a
function, tagged with the layer it exercises (``theory``, ``numerics``, ``gpu``, ``harness``), that
returns :class:`Evidence`. ``Evidence.passed`` means *the evidence supports the claim's recorded
status*: for a ``verified`` claim the statement held on every case; for a ``refuted`` or
``conditional`` claim the counterexample (or the failure outside the stated condition) reproduced.

Claims are declared once, in a topic module of ``fiberlab.claims``, with :func:`claim`, each followed by its
checks, attached with the :meth:`Claim.check` decorator::

    tv = claim("band.tv_closed_form", paper="BandPO", source="BandPO Prop. 4",
               statement="TV bounds are max(1-δ/p, 0) and min(1+δ/p, 1/p).")

    @tv.check("theory")
    def _tv_sympy() -> Evidence: ...

The command line, the tests and the book all run checks through :func:`run_check`, so they cannot
disagree.
"""

from __future__ import annotations

import dataclasses
import math
import time
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("theory", "numerics", "gpu", "harness")
STATUSES = ("verified", "conditional", "refuted")
PAPERS = ("BandPO", "FiberPO", "LPO", "classical")


@dataclasses.dataclass
class Evidence:
    """What one check found.

    ``max_error`` is the largest discrepancy seen, in the check's own units (``0.0`` for an exact symbolic
    identity), and ``tolerance`` the bound it was held to, in the same units; ``cases`` counts the instances
    examined. Where a check holds several measures to their own tolerances (:meth:`worst_of`) or each case to
    its own bound, the pair reported is the one nearest its bound, so ``max_error / tolerance`` (the JSON's
    ``error_ratio``) is what passing compares with 1. ``counterexample`` carries the instance that breaks a
    refuted/conditional statement.
    """

    passed: bool
    max_error: float | None = None
    tolerance: float | None = None
    cases: int = 1
    detail: str = ""
    counterexample: dict[str, Any] | None = None

    @classmethod
    def within(cls, max_error: float, tolerance: float, cases: int, detail: str = "", **kw: Any) -> "Evidence":
        """Evidence that passes iff ``max_error <= tolerance`` (NaN never passes)."""
        ok = bool(max_error <= tolerance) and not math.isnan(max_error)
        return cls(passed=ok, max_error=float(max_error), tolerance=float(tolerance), cases=int(cases),
                   detail=detail, **kw)

    @classmethod
    def worst_of(cls, parts: dict[str, tuple[float, float]], cases: int, detail: str = "", **kw: Any
                 ) -> "Evidence":
        """Evidence over several measures ``{name: (error, tolerance)}``, each held to its own tolerance: passes
        iff every error ≤ its tolerance (NaN never passes). ``max_error`` and ``tolerance`` are the absolute pair
        of the measure with the largest error/tolerance ratio, which the detail names."""
        if not parts:
            raise ValueError("parts: at least one (error, tolerance) measure is needed")
        ratios = {k: error_ratio(float(e), float(t)) for k, (e, t) in parts.items()}
        name = max(ratios, key=lambda k: ratios[k])
        ok = all(bool(float(e) <= float(t)) and not math.isnan(float(e)) for e, t in parts.values())
        err, tol = parts[name]
        note = f"nearest its tolerance: {name}"
        return cls(passed=ok, max_error=float(err), tolerance=float(tol), cases=int(cases),
                   detail=f"{detail} ({note})" if detail else note, **kw)


def error_ratio(error: float | None, tolerance: float | None) -> float | None:
    """``error / tolerance``: 0 for an exact 0, inf for a positive error held to 0, NaN for NaN."""
    if error is None or tolerance is None:
        return None
    if math.isnan(error):
        return math.nan
    if error == 0:
        return 0.0
    return error / tolerance if tolerance > 0 else math.inf


@dataclasses.dataclass
class CheckResult:
    """A check's evidence plus its timing; ``status`` is ``pass``, ``fail`` or ``error``."""

    claim_id: str
    layer: str
    name: str
    status: str
    max_error: float | None
    tolerance: float | None
    cases: int
    seconds: float
    detail: str
    counterexample: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        out = {
            "layer": self.layer,
            "name": self.name,
            "status": self.status,
            "max_error": _json_float(self.max_error),
            "tolerance": _json_float(self.tolerance),
            "error_ratio": _json_float(error_ratio(self.max_error, self.tolerance)),
            "cases": self.cases,
            "seconds": round(self.seconds, 6),
            "detail": self.detail,
        }
        if self.counterexample is not None:
            out["counterexample"] = {k: _jsonable(v) for k, v in self.counterexample.items()}
        return out


@dataclasses.dataclass
class Check:
    claim_id: str
    layer: str
    name: str
    fn: Callable[[], Evidence]


@dataclasses.dataclass
class Claim:
    id: str
    paper: str
    source: str
    statement: str
    status: str = "verified"
    condition: str = ""
    checks: list[Check] = dataclasses.field(default_factory=list)
    #: ``path:line`` of the :func:`claim` call that declared it (relative to the repository root)
    declared_at: str | None = None

    def check(self, layer: str, name: str | None = None) -> Callable[[Callable[[], Evidence]], Callable[[], Evidence]]:
        """Decorator attaching a check of ``layer`` to this claim."""
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")

        def deco(fn: Callable[[], Evidence]) -> Callable[[], Evidence]:
            self.checks.append(Check(self.id, layer, name or fn.__name__.lstrip("_"), fn))
            return fn

        return deco

    @property
    def layers(self) -> list[str]:
        return sorted({c.layer for c in self.checks}, key=LAYERS.index)


_REGISTRY: dict[str, Claim] = {}


def claim(id: str, *, paper: str, source: str, statement: str, status: str = "verified", condition: str = "") -> Claim:
    """Declare a claim. Ids are unique; declaring one twice is an error."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    if paper not in PAPERS:
        raise ValueError(f"paper must be one of {PAPERS}, got {paper!r}")
    if id in _REGISTRY:
        raise ValueError(f"claim {id!r} is declared twice")
    c = Claim(id=id, paper=paper, source=source, statement=statement, status=status, condition=condition,
              declared_at=_caller_location())
    _REGISTRY[id] = c
    return c


def _caller_location() -> str | None:
    """``path:line`` of the code that called :func:`claim` (relative to the repository root)."""
    frame = sys._getframe(2)
    path = Path(frame.f_code.co_filename).resolve()
    try:
        return f"{path.relative_to(_ROOT).as_posix()}:{frame.f_lineno}"
    except ValueError:
        return None


def _load() -> None:
    # Importing the catalogue modules declares the claims (each module runs its `claim(...)` calls once).
    import fiberlab.claims  # noqa: F401


def all_claims() -> list[Claim]:
    _load()
    return list(_REGISTRY.values())


def get_claim(id: str) -> Claim:
    _load()
    if id not in _REGISTRY:
        raise KeyError(f"unknown claim {id!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[id]


def select(paper: str | None = None, claim_ids: Iterable[str] | None = None, layer: str | None = None) -> list[Claim]:
    """Claims matching the filters (paper case-insensitive; a claim id may end in ``*`` as a prefix)."""
    out = []
    ids = list(claim_ids or [])
    for c in all_claims():
        if paper and c.paper.lower() != paper.lower():
            continue
        if ids and not any(c.id == i or (i.endswith("*") and c.id.startswith(i[:-1])) for i in ids):
            continue
        if layer and layer not in c.layers:
            continue
        out.append(c)
    return out


def run_check(check: Check) -> CheckResult:
    """Run one check, timing it; an exception is an ``error`` with its traceback as detail."""
    t0 = time.perf_counter()
    try:
        ev = check.fn()
        if not isinstance(ev, Evidence):
            raise TypeError(f"check {check.name} returned {type(ev).__name__}, not Evidence")
        status = "pass" if ev.passed else "fail"
        return CheckResult(check.claim_id, check.layer, check.name, status, ev.max_error, ev.tolerance,
                           ev.cases, time.perf_counter() - t0, ev.detail, ev.counterexample)
    except Exception:  # noqa: BLE001 - a crashing check is reported, never hidden
        return CheckResult(check.claim_id, check.layer, check.name, "error", None, None, 0,
                           time.perf_counter() - t0, traceback.format_exc(limit=6))


def claim_outcome(results: list[CheckResult]) -> str:
    """``pass`` when every check passed, else ``fail``."""
    return "pass" if results and all(r.status == "pass" for r in results) else "fail"


def claim_json(c: Claim, results: list[CheckResult]) -> dict[str, Any]:
    return {
        "id": c.id,
        "paper": c.paper,
        "source": c.source,
        "statement": c.statement,
        "status": c.status,
        "condition": c.condition,
        "outcome": claim_outcome(results),
        "checks": [r.as_json() for r in results],
    }


def _json_float(x: float | None) -> float | str | None:
    if x is None:
        return None
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return float(x)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    if isinstance(v, float):
        return _json_float(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
