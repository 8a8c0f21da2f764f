"""The objective layer's structure: the modules of ``gpu/`` import each other without a cycle and import no private
name from one another (a name shared across modules is public, in :mod:`fiberlab.gpu.objective` or its owner)."""

from __future__ import annotations

import ast
from pathlib import Path

GPU = Path(__file__).resolve().parents[1] / "gpu"


def _imports() -> dict[str, list[tuple[str, list[str]]]]:
    """``{module: [(imported gpu module, [names]), ...]}`` for every import statement in gpu/, at any depth."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for path in sorted(GPU.glob("*.py")):
        mod = path.stem
        out[mod] = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "fiberlab.gpu":
                out[mod] += [(a.name, []) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fiberlab.gpu."):
                out[mod].append((node.module.split(".")[2], [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                out[mod] += [(a.name.split(".")[2], []) for a in node.names if a.name.startswith("fiberlab.gpu.")]
    return out


def test_no_private_name_crosses_a_module():
    crossing = [(mod, target, name) for mod, imps in _imports().items() for target, names in imps for name in names
                if name.startswith("_")]
    assert crossing == []


def test_the_gpu_import_graph_has_no_cycle():
    graph = {mod: {t for t, _ in imps if t != mod} for mod, imps in _imports().items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, "import cycle: " + " → ".join(path + [node, nxt])
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])
    # the core imports no objective, and every objective module reaches the registry through the core
    assert not graph["objective"] & {"ppo", "lpo", "fiberpo", "losses"}
    assert {"ppo", "lpo", "fiberpo"} <= graph["losses"]
