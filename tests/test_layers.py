"""The layering of the design's layout table, read through the package mapping (``fiberlab.layers``), and the
size rule of the objective layer."""

from __future__ import annotations

import ast
from pathlib import Path

from fiberlab.cli import main
from fiberlab.layers import import_graph, layer_of, layer_violations, package_dirs

ROOT = Path(__file__).resolve().parents[1]

#: The objective layer's functions stay short enough to read as their algorithm (issue: "no function in gpu/
#: longer than 60 lines").
MAX_GPU_FUNCTION_LINES = 60


def test_the_mapping_puts_the_design_folders_under_fiberlab():
    dirs = package_dirs()
    assert dirs["fiberlab.gpu"] == ROOT / "gpu" and dirs["fiberlab.theory"] == ROOT / "theory"
    assert dirs["fiberlab.numerics"] == ROOT / "numerics" and dirs["fiberlab.claims"] == ROOT / "fiberlab/claims"


def test_the_graph_connects_the_layers():
    graph = import_graph()
    assert "fiberlab.gpu.ppo" in graph["fiberlab.gpu.losses"]                  # inside gpu/
    assert "fiberlab.gpu.objective" in graph["fiberlab.gpu.ppo"]
    assert any("fiberlab.theory.band" in dsts for src, dsts in graph.items() if layer_of(src) == "claims")
    crossings = {(layer_of(s), layer_of(d)) for s, ds in graph.items() for d in ds}
    assert {("claims", "theory"), ("claims", "numerics"), ("claims", "gpu"), ("fiberlab", "gpu")} <= crossings


def test_no_layer_imports_upward():
    assert layer_violations() == []


def test_an_upward_import_is_reported():
    graph = {"fiberlab.gpu.ppo": {"fiberlab.claims.losses"}, "fiberlab.theory.band": {"fiberlab.numerics.band"},
             "fiberlab.numerics.band": {"fiberlab.theory.band"}, "fiberlab.claims.losses": {"fiberlab.gpu.ppo"}}
    assert layer_violations(graph) == [("fiberlab.gpu.ppo", "fiberlab.claims.losses"),
                                       ("fiberlab.theory.band", "fiberlab.numerics.band")]


def test_relative_imports_resolve_against_the_package(tmp_path, monkeypatch):
    import fiberlab.layers as layers
    pkg = tmp_path / "gpu"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\nfrom .b import f\n")
    (pkg / "b.py").write_text("def f():\n    return 1\n")
    monkeypatch.setattr(layers, "PACKAGES", ("fiberlab.gpu",))
    monkeypatch.setattr(layers, "package_dirs", lambda: {"fiberlab.gpu": pkg})
    assert layers.import_graph()["fiberlab.gpu.a"] == {"fiberlab.gpu.b"}


def test_imports_check_command(capsys):
    assert main(["imports", "--check"]) == 0
    assert "no layer imports upward" in capsys.readouterr().out


def test_no_gpu_function_is_longer_than_the_limit():
    long = [(path.name, node.name, node.end_lineno - node.lineno + 1)
            for path in sorted((ROOT / "gpu").glob("*.py"))
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_GPU_FUNCTION_LINES]
    assert long == []
