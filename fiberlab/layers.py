"""The project's import graph, read through the installed package mapping.

The design card's top-level folders (``theory/``, ``numerics/``, ``gpu/``) are installed as sub-packages of
``fiberlab`` (setuptools ``package-dir``), so a tool that maps module names to folders by path alone finds no
``fiberlab/gpu`` and draws the layers unconnected. This module asks the import system where each sub-package
lives (``importlib.util.find_spec``), parses every source file, and resolves absolute and relative imports to
module names, which gives the graph as Python sees it. ``fiberlab imports`` prints it (``--dot`` for Graphviz);
:func:`layer_violations` checks it against the layering of the design (no layer reaches upward).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

#: The layers, lowest first, and the fiberlab layers each may import at run time (the design's layout table;
#: ``gpu`` reads ``numerics`` only in the tests, the claim catalogue and the command line read everything).
LAYER_IMPORTS: dict[str, frozenset[str]] = {
    "theory": frozenset(),
    "numerics": frozenset({"theory"}),
    "gpu": frozenset(),
    "fiberlab": frozenset({"theory", "numerics", "gpu", "claims"}),
    "claims": frozenset({"theory", "numerics", "gpu", "fiberlab"}),
}

#: The sub-packages in the graph (``fiberlab`` itself holds the registry, the command line and the reports).
PACKAGES = ("fiberlab", "fiberlab.claims", "fiberlab.theory", "fiberlab.numerics", "fiberlab.gpu")


def package_dirs() -> dict[str, Path]:
    """``{package: folder}`` as the installed mapping resolves it (``fiberlab.gpu`` → ``gpu/`` in a checkout)."""
    out = {}
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(f"{name} is not an importable package (is fiberlab installed?)")
        out[name] = Path(list(spec.submodule_search_locations)[0]).resolve()
    return out


def layer_of(module: str) -> str:
    """``fiberlab.gpu.ppo`` → ``gpu``; ``fiberlab.cli`` → ``fiberlab``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ("claims", "theory", "numerics", "gpu") else "fiberlab"


def _resolve(node: ast.ImportFrom, package: str) -> str:
    """The absolute module an ``ImportFrom`` names, relative imports resolved against ``package``."""
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports() -> dict[str, list[tuple[str, str | None]]]:
    """``{module: [(imported module, name or None), ...]}`` for every import statement at any depth of each module
    of the project that names one of its modules: ``from fiberlab.gpu.ppo import bandpo`` gives
    ``("fiberlab.gpu.ppo", "bandpo")``; ``from fiberlab.gpu import ppo`` and ``import fiberlab.gpu.ppo`` give
    ``("fiberlab.gpu.ppo", None)``."""
    modules = {}
    for package, folder in package_dirs().items():
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = (path, package)
    out: dict[str, list[tuple[str, str | None]]] = {}
    for name, (path, package) in modules.items():
        found: list[tuple[str, str | None]] = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                found += [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, package)
                found += [(f"{base}.{a.name}", None) if f"{base}.{a.name}" in modules else (base, a.name)
                          for a in node.names]
        out[name] = [(target, n) for target, n in found if target in modules and target != name]
    return out


def import_graph() -> dict[str, set[str]]:
    """``{module: {fiberlab modules it imports, at any depth of its body}}`` for every module of the project."""
    return {name: {target for target, _ in found} for name, found in imports().items()}


def layer_violations(graph: dict[str, set[str]] | None = None) -> list[tuple[str, str]]:
    """Every ``(importer, imported)`` edge that crosses into a layer the importer may not read."""
    graph = import_graph() if graph is None else graph
    return sorted((src, dst) for src, dsts in graph.items() for dst in dsts
                  if layer_of(dst) != layer_of(src) and layer_of(dst) not in LAYER_IMPORTS[layer_of(src)])


def to_dot(graph: dict[str, set[str]]) -> str:
    """Graphviz source: one cluster per layer, one edge per import."""
    lines = ["digraph fiberlab {", "  rankdir=LR; node [shape=box, fontsize=10];"]
    for layer in LAYER_IMPORTS:
        members = sorted(m for m in graph if layer_of(m) == layer)
        lines.append(f'  subgraph "cluster_{layer}" {{ label="{layer}"; ' +
                     " ".join(f'"{m}";' for m in members) + " }")
    lines += [f'  "{src}" -> "{dst}";' for src in sorted(graph) for dst in sorted(graph[src])]
    return "\n".join(lines + ["}"])
