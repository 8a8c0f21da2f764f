"""One hop from a claim id to everything about it: where it is declared, every check with its layer and
``file:line``, the derivations, references and objectives those checks call (``file:line``), and the book pages
that show it (``fiberlab claims --where ID``, the book's claim cards), each with the claim id as its anchor:
``book/bandpo.md#band.kl_bounds`` is the card in the built page ``bandpo.html#band.kl_bounds``.

The calls are found by reading each check's source (``ast``) and resolving every called name in the check's
own namespace (module globals and closure). A call into a helper of the claim catalogue (``fiberlab.claims``) is
followed, up to :data:`FOLLOW_DEPTH` levels, because checks often build their cases in a shared helper; what is
reported is what lies outside the catalogue — ``theory``, ``numerics``, ``gpu`` and the rest of ``fiberlab``.
Paths are relative to the repository root.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
import types
from pathlib import Path
from typing import Any

from fiberlab.registry import Claim, get_claim

#: the repository root (paths are printed relative to it)
ROOT = Path(__file__).resolve().parents[1]
#: how many levels of catalogue helpers are followed from a check to the code it exercises
FOLLOW_DEPTH = 3
#: modules whose functions are reported as what a check exercises (the layers' packages, by import name)
EXERCISED = ("fiberlab.theory", "fiberlab.numerics", "fiberlab.gpu", "fiberlab.stats", "fiberlab.experiments")
#: modules never reported or followed (the registry's own machinery)
_SKIP = ("fiberlab.registry", "fiberlab.where", "fiberlab.report")
_DEF = re.compile(r"\s*(async\s+def|def|class)\s")


def location(obj: Any) -> str | None:
    """``path:line`` of a function's or class's ``def``/``class`` line (below its decorators), relative to the
    repository root; None for builtins and code outside the repository."""
    obj = inspect.unwrap(obj)
    try:
        path = Path(inspect.getsourcefile(obj) or "")
        lines, line = inspect.getsourcelines(obj)
    except (TypeError, OSError):
        return None
    # the def/class line itself, below any decorators
    line += next((k for k, text in enumerate(lines) if _DEF.match(text)), 0)
    try:
        path = path.resolve().relative_to(ROOT)
    except ValueError:
        return None                      # outside the repository (a library): not ours to point at
    return f"{path.as_posix()}:{line}"


def _resolve(node: ast.expr, namespace: dict[str, Any]) -> Any:
    """The object a call target such as ``f``, ``mod.f`` or ``mod.sub.f`` names in ``namespace``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in namespace:
        return None
    obj = namespace[node.id]
    for attr in reversed(parts):
        obj = getattr(obj, attr, None)
        if obj is None:
            return None
    return obj


def _namespace(fn: types.FunctionType) -> dict[str, Any]:
    cv = inspect.getclosurevars(fn)
    return {**fn.__globals__, **cv.nonlocals}


def _called(fn: Any) -> list[Any]:
    """The functions and classes ``fn``'s body calls, in source order, resolved in its namespace."""
    fn = inspect.unwrap(fn)
    if not isinstance(fn, types.FunctionType):
        return []
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, SyntaxError, TypeError):
        return []
    ns = _namespace(fn)
    for node in ast.walk(tree):           # imports inside the body (checks import heavy modules lazily)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            try:
                mod = importlib.import_module(node.module)
            except ImportError:
                continue
            ns.update({a.asname or a.name: getattr(mod, a.name) for a in node.names if hasattr(mod, a.name)})
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    ns[a.asname] = importlib.import_module(a.name)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            obj = _resolve(node.func, ns)
            if obj is not None and (inspect.isfunction(obj) or inspect.isclass(obj)) and obj not in out:
                out.append(obj)
    return out


def _module(obj: Any) -> str:
    return getattr(inspect.unwrap(obj), "__module__", "") or ""


def exercised(fn: Any, depth: int = FOLLOW_DEPTH) -> list[tuple[str, str]]:
    """``[(qualified name, path:line)]`` of what ``fn`` exercises outside the catalogue (see the module doc)."""
    found: list[tuple[str, str]] = []
    seen: set[int] = set()

    def visit(f: Any, level: int) -> None:
        for obj in _called(f):
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            mod = _module(obj)
            if mod.startswith(_SKIP):
                continue
            if mod.startswith("fiberlab.claims"):
                if level < depth:
                    visit(obj, level + 1)
                continue
            if mod.startswith(EXERCISED) and (loc := location(obj)):
                found.append((f"{mod}.{obj.__qualname__}", loc))

    visit(fn, 1)
    return found


def book_pages(claim_id: str, book: Path = ROOT / "book") -> list[str]:
    """The book pages (``book/<page>.md``) whose claim cards show ``claim_id``."""
    pat = re.compile(r"(?:claim_card|show_claims)\(\s*[\"']" + re.escape(claim_id) + r"[\"']")
    return sorted(p.relative_to(ROOT).as_posix() for p in book.glob("*.md") if pat.search(p.read_text()))


def check_locations(c: Claim) -> list[dict[str, Any]]:
    """Each check of ``c``: layer, name, ``path:line``, and what it exercises (``[{"name", "at"}]``)."""
    return [{"layer": k.layer, "name": k.name, "at": location(k.fn),
             "exercises": [{"name": n, "at": loc} for n, loc in exercised(k.fn)]} for k in c.checks]


def where(claim: Claim | str) -> dict[str, Any]:
    """Everything about a claim, one hop from its id (the JSON of ``fiberlab claims --where``); ``"book"`` lists
    each page that shows it as ``book/<page>.md#<claim id>`` (the card's element id in the built page)."""
    c = get_claim(claim) if isinstance(claim, str) else claim
    return {"claim": c.id, "paper": c.paper, "source": c.source, "status": c.status, "statement": c.statement,
            "condition": c.condition, "declared": c.declared_at, "checks": check_locations(c),
            "book": [f"{page}#{c.id}" for page in book_pages(c.id)]}


__all__ = ["FOLLOW_DEPTH", "ROOT", "book_pages", "check_locations", "exercised", "location", "where"]
