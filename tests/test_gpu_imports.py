"""The objective layer's structure: the modules of ``gpu/`` import each other without a cycle and import no private
name from one another (a name shared across modules is public, in :mod:`fiberlab.gpu.objective` or its owner)."""

from __future__ import annotations

from fiberlab.layers import imports


def _imports() -> dict[str, list[tuple[str, list[str]]]]:
    """``{module: [(imported gpu module, [names]), ...]}`` for every import statement in gpu/, at any depth, as the
    project's import graph resolves it (:func:`fiberlab.layers.imports`), module names shortened to their stem."""
    gpu = "fiberlab.gpu."
    return {mod[len(gpu):]: [(target[len(gpu):], [name] if name else []) for target, name in found
                             if target.startswith(gpu)]
            for mod, found in imports().items() if mod.startswith(gpu)}


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
