"""One hop from a claim id (``fiberlab claims --where``): every location it prints is where it says, and the code a
check exercises is found through the catalogue's helpers and lazy imports."""

from __future__ import annotations

import json

import pytest

from fiberlab import cli
from fiberlab.registry import all_claims
from fiberlab.report import ClaimCard
from fiberlab.where import ROOT, exercised, where


def _line(at: str) -> tuple[list[str], int]:
    path, line = at.rsplit(":", 1)
    return (ROOT / path).read_text().splitlines(), int(line) - 1


@pytest.mark.parametrize("c", all_claims(), ids=lambda c: c.id)
def test_every_location_is_where_it_says(c):
    w = where(c)
    src, i = _line(w["declared"])
    # the claim(...) call starts at the declared line; its id is a literal there or comes from a registered
    # experiment (the training claims are declared in one loop)
    assert "claim(" in src[i], (w["declared"], src[i])
    assert f'"{c.id}"' in "\n".join(src[i:i + 3]) or "_exp.claim" in src[i]
    for k in w["checks"]:
        src, i = _line(k["at"])
        # a decorated def (the decorator a few lines above) or a lambda passed to .check(...)(...)
        assert ("def " in src[i] and ".check(" in "\n".join(src[max(i - 3, 0):i])) or \
            (".check(" in src[i] and "lambda" in src[i]), (k["at"], src[i])
        for e in k["exercises"]:
            src, i = _line(e["at"])
            name = e["name"].rsplit(".", 1)[1]
            assert f"def {name}(" in src[i] or f"class {name}" in src[i], (e, src[i])
    assert w["book"], f"{c.id}: no book page shows it"
    for entry in w["book"]:
        page, anchor = entry.split("#", 1)          # the card's anchor is the claim id exactly
        assert anchor == c.id and f'"{c.id}"' in (ROOT / page).read_text()


def test_checks_are_followed_to_the_derivations_references_and_objectives():
    w = where("band.kl_bounds")
    by_layer = {}
    for k in w["checks"]:
        by_layer.setdefault(k["layer"], set()).update(e["name"] for e in k["exercises"])
    assert "fiberlab.theory.band.kl_root_structure" in by_layer["theory"]
    assert "fiberlab.numerics.band.band_bounds_mp" in by_layer["numerics"]
    assert "fiberlab.gpu.band.band_bounds" in by_layer["gpu"]
    # through a lazy import inside the check's body
    probe = next(k for k in where("agg.length_bias")["checks"] if k["layer"] == "gpu")
    assert [e["name"] for e in probe["exercises"]] == ["fiberlab.gpu.probes.filler_logit_gradient"]
    # nearly every check exercises code outside the catalogue (the exceptions compute a closed form inline)
    checks = [k for c in all_claims() for k in where(c)["checks"]]
    assert sum(not k["exercises"] for k in checks) <= 0.02 * len(checks)


def test_exercised_reads_calls_in_a_functions_own_namespace():
    def check():
        from fiberlab.numerics.band import band_bounds_mp
        return band_bounds_mp(0.5, "tv", 0.1), len([1])        # a builtin is not ours to point at

    assert [n for n, _ in exercised(check)] == ["fiberlab.numerics.band.band_bounds_mp"]
    assert exercised(len) == []


def test_claim_card_carries_the_locations():
    card = dict(ClaimCard(next(c for c in all_claims() if c.id == "band.tv_closed_form")).rows())
    assert card["declared"].startswith("fiberlab/claims/") and "numerics/band.py:" in card["checked by"]
    assert "<br>" in ClaimCard(next(c for c in all_claims() if c.id == "band.tv_closed_form"))._repr_html_()


def test_cli_where_prints_and_writes_json(tmp_path, capsys):
    out = tmp_path / "w.json"
    assert cli.main(["claims", "--where", "band.kl_bounds", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    w = where("band.kl_bounds")
    assert json.loads(out.read_text(encoding="utf-8")) == w
    for k in w["checks"]:
        assert k["at"] in text
    assert w["declared"] in text and "book/" in text


@pytest.mark.parametrize("argv, flag", [(["claims", "--where", "band.nope"], "--where"),
                                        (["claims", "--json", "x.json"], "--json")])
def test_cli_where_rejects_bad_use(argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and flag in capsys.readouterr().err


def test_claim_card_links_an_open_question_label():
    """A claim whose source cites an open question (``(open question A13)``) links it to its entry on the book's
    Open questions page; the page must have that entry (its label) for the link to appear."""
    html = ClaimCard(next(c for c in all_claims() if c.id == "apc.tvtrpo_equivalence"))._repr_html_()
    assert "href='open_questions.html#oq-fiberpo-a13'" in html
    plain = ClaimCard(next(c for c in all_claims() if c.id == "band.tv_closed_form"))._repr_html_()
    assert "open_questions.html" not in plain
