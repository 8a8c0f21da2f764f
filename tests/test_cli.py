"""The claim registry and the `fiberlab` command line: JSON shape, exit codes, filters, evidence semantics."""

from __future__ import annotations

import json
import math

import pytest

from fiberlab import cli, registry
from fiberlab.registry import Check, Evidence, get_claim, run_check

DESIGN_CHECK_KEYS = {"layer", "status", "max_error", "tolerance", "cases", "seconds", "detail"}
DESIGN_CLAIM_KEYS = {"id", "paper", "source", "statement", "status", "checks"}


def test_verify_json_has_the_design_shape(tmp_path):
    out = tmp_path / "v.json"
    assert cli.main(["verify", "--claim", "band.mirror", "--claim", "clip.bottleneck", "--json", str(out),
                     "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    assert [c["id"] for c in doc["claims"]] == ["band.mirror", "clip.bottleneck"]
    for c in doc["claims"]:
        assert DESIGN_CLAIM_KEYS <= set(c)
        assert c["checks"] and all(DESIGN_CHECK_KEYS <= set(k) for k in c["checks"])
        assert all(k["status"] == "pass" for k in c["checks"])


def test_layer_and_paper_filters(tmp_path):
    out = tmp_path / "v.json"
    assert cli.main(["verify", "--paper", "bandpo", "--layer", "theory", "--claim", "band.*", "--json", str(out),
                     "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    assert doc["claims"] and all(c["id"].startswith("band.") for c in doc["claims"])
    assert {k["layer"] for c in doc["claims"] for k in c["checks"]} == {"theory"}
    assert cli.main(["verify", "--claim", "no.such.claim", "--no-progress"]) == 2


def test_a_failing_check_makes_verify_exit_nonzero(monkeypatch, capsys):
    c = get_claim("band.mirror")
    failing = Check(c.id, "numerics", "deliberately_failing", lambda: Evidence.within(1.0, 0.5, 1, "forced"))
    monkeypatch.setattr(c, "checks", c.checks + [failing])
    assert cli.main(["verify", "--claim", "band.mirror", "--no-progress"]) == 1
    assert "deliberately_failing" in capsys.readouterr().out


def test_a_crashing_check_is_an_error_not_a_pass():
    def boom() -> Evidence:
        raise RuntimeError("boom")

    res = run_check(Check("x", "theory", "boom", boom))
    assert res.status == "error" and "RuntimeError: boom" in res.detail


def test_nan_evidence_never_passes():
    assert not Evidence.within(math.nan, 1.0, 1).passed
    assert Evidence.within(0.5, 0.5, 1).passed and not Evidence.within(0.50001, 0.5, 1).passed


def test_registry_rejects_bad_declarations():
    with pytest.raises(ValueError, match="declared twice"):
        registry.claim("band.mirror", paper="BandPO", source="x", statement="x")
    with pytest.raises(ValueError, match="status"):
        registry.claim("tmp.bad_status", paper="BandPO", source="x", statement="x", status="maybe")
    with pytest.raises(ValueError, match="layer"):
        get_claim("band.mirror").check("quantum")


def test_every_claim_has_checks_and_refuted_or_conditional_ones_say_why():
    for c in registry.all_claims():
        assert c.checks, c.id
        if c.status in ("refuted", "conditional"):
            assert c.condition, c.id


def test_claims_listing_runs():
    assert cli.main(["claims", "--paper", "BandPO"]) == 0


def test_claims_prints_square_brackets_as_text(capsys):
    """Statements hold intervals such as [max(1 - δ/p, 0), ...]: rich must not read them as markup (it dropped
    them: "For TV, the band is .")."""
    assert cli.main(["claims", "--paper", "BandPO"]) == 0
    out = capsys.readouterr().out
    assert "[max(1" in out


def test_version_prints_the_package_version_and_exits_0(capsys):
    from fiberlab.report import package_version

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"fiberlab {package_version()}"


def test_help_has_examples_and_every_option_is_explained(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out.lower() and "fiberlab verify --claim" in out and "fiberlab verl-check" in out
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, cli.argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for action in p._actions:
            assert action.help, f"fiberlab {name} {action.option_strings or action.dest} has no help text"


def test_verify_json_has_a_header_and_keeps_unicode_readable(tmp_path):
    out = tmp_path / "v.json"
    assert cli.main(["verify", "--claim", "band.tv_closed_form", "--layer", "theory", "--json", str(out),
                     "--no-progress"]) == 0
    text = out.read_text(encoding="utf-8")
    assert "δ" in text and "\\u03b4" not in text                 # the statement's δ, not an escape
    doc = json.loads(text)
    assert {"fiberlab", "commit", "time", "filters", "summary", "claims"} <= set(doc)
    assert doc["filters"] == {"paper": None, "claim": ["band.tv_closed_form"], "layer": "theory"}
    assert doc["summary"]["verified"] == 1 and doc["summary"]["FAILED"] == 0 and doc["summary"]["checks"] >= 1
    assert doc["commit"] is None or len(doc["commit"]) == 40
    assert doc["time"].endswith("+00:00")
    assert [c["id"] for c in doc["claims"]] == ["band.tv_closed_form"]


@pytest.mark.parametrize("width", [80, 120])
def test_claims_keeps_every_id_whole_at_terminal_widths(width):
    """At 80 columns the six-column table split ids mid-word (``band.reduc``/``tion``) and gave statements 10
    characters; every id must appear whole on one line, since it is what ``--claim`` takes."""
    import argparse
    import io

    from rich.console import Console

    buf = io.StringIO()
    cli._claims(argparse.Namespace(paper=None, where=None, json=None), Console(file=buf, width=width))
    from rich.cells import cell_len

    lines = buf.getvalue().splitlines()
    assert all(cell_len(line) <= width for line in lines)        # display cells (r̲'s combining mark takes none)
    for c in registry.all_claims():
        assert any(c.id in line for line in lines), c.id


@pytest.mark.parametrize("width", [80, 120])
def test_verify_keeps_ids_and_statuses_whole(monkeypatch, width):
    """At 120 columns ``verify`` truncated the ids a user needs for ``--claim`` (``band.chi2_closed_f…``); at 80 it
    also cut the status to ``veri…``. The longest theory-checked id and its status must appear whole."""
    import io

    from rich.cells import cell_len
    from rich.console import Console

    longest = max((c for c in registry.all_claims() if "theory" in c.layers), key=lambda c: len(c.id))
    buf = io.StringIO()
    monkeypatch.setattr(cli, "Console", lambda **kw: Console(file=buf, width=width))
    assert cli.main(["verify", "--claim", "band.chi2_closed_form", "--claim", longest.id, "--layer",
                     "theory", "--no-progress"]) == 0
    lines = buf.getvalue().splitlines()
    assert all(cell_len(line) <= width for line in lines)
    for c in ("band.chi2_closed_form", longest.id):
        row = next(line for line in lines if c in line)
        assert registry.get_claim(c).status in row
