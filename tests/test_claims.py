"""Every check in the claim registry, every layer, run once through the same path as `fiberlab verify`.

A check passes when its evidence supports the claim's recorded status (for a refuted or conditional claim: the
counterexample reproduces). The book runs the same checks again and fails its build on any failure.
"""

from __future__ import annotations

import pytest

from fiberlab import registry

ALL_CHECKS = [ch for c in registry.all_claims() for ch in c.checks]


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda ch: f"{ch.claim_id}:{ch.layer}:{ch.name}")
def test_registry_check_passes(check):
    result = registry.run_check(check)
    assert result.status == "pass", result.detail
    if check.layer == "theory":
        assert result.max_error == 0.0 and result.tolerance == 0.0   # symbolic identities are exact
    elif check.layer == "numerics":
        assert result.max_error is not None and result.max_error <= result.tolerance


def test_every_band_claim_is_checked_in_at_least_two_layers():
    """Every BandPO statement about the operator is checked two independent ways; training predictions (layer
    ``harness``) have one layer by nature."""
    band = [c for c in registry.all_claims() if c.id.startswith(("band.", "clip.")) and c.layers != ["harness"]]
    assert band and all(len(c.layers) >= 2 for c in band), [(c.id, c.layers) for c in band if len(c.layers) < 2]


def test_run_claims_announces_each_check_before_running_it():
    """The progress label names the running check (it showed the last finished one while a slow one ran)."""
    from fiberlab.registry import get_claim
    from fiberlab.report import run_claims

    events = []
    run_claims([get_claim("band.mirror")], layer="theory",
               on_start=lambda c, k: events.append(("start", c.id, k.layer)),
               on_check=lambda c, k: events.append(("done", c.id, k.layer)))
    assert events and events[0][0] == "start"
    assert [e[0] for e in events] == ["start", "done"] * (len(events) // 2)


# ---------------------------------------------------------------------------------------------
# One meaning for max_error: absolute, in the check's units; error_ratio beside it
# ---------------------------------------------------------------------------------------------
def test_worst_of_reports_the_absolute_pair_nearest_its_tolerance():
    from fiberlab.registry import Evidence
    ev = Evidence.worst_of({"a": (1e-9, 1e-8), "b": (3e-3, 1e-2), "c": (0.0, 0.0)}, 5, detail="d")
    assert ev.passed and (ev.max_error, ev.tolerance) == (3e-3, 1e-2) and ev.cases == 5
    assert ev.detail == "d (nearest its tolerance: b)"
    bad = Evidence.worst_of({"a": (2e-8, 1e-8), "b": (3e-3, 1e-2)}, 1)
    assert not bad.passed and (bad.max_error, bad.tolerance) == (2e-8, 1e-8)
    assert not Evidence.worst_of({"a": (float("nan"), 1.0)}, 1).passed
    with pytest.raises(ValueError, match="parts"):
        Evidence.worst_of({}, 1)


def test_json_error_ratio_is_max_error_over_tolerance():
    from fiberlab.registry import CheckResult
    row = CheckResult("x", "numerics", "n", "pass", 2e-9, 1e-8, 3, 0.1, "").as_json()
    assert row["error_ratio"] == pytest.approx(0.2) and row["max_error"] == 2e-9 and row["tolerance"] == 1e-8
    assert CheckResult("x", "theory", "n", "pass", 0.0, 0.0, 1, 0.1, "").as_json()["error_ratio"] == 0.0
    assert CheckResult("x", "gpu", "n", "fail", 1e-3, 0.0, 1, 0.1, "").as_json()["error_ratio"] == "inf"



def test_no_check_reports_a_bare_ratio_as_its_error():
    """Checks once reported max error/tolerance against a tolerance of 1.0 (ten of them, in different units from
    every other check); now they report the absolute pair nearest its tolerance (``Evidence.worst_of``), so no
    check holds an error to a literal 1.0 and no detail explains a ratio convention."""
    import inspect
    import re
    from pathlib import Path

    import fiberlab.claims as catalogue

    sources = {p.name: p.read_text() for p in Path(inspect.getfile(catalogue)).parent.glob("*.py")}
    bare = {name for name, text in sources.items() if re.search(r"Evidence\.within\([^,()]+, 1\.0,", text)}
    assert bare == set()
    assert not any(re.search(r"error/tolerance ratio|max error/tolerance", text) for text in sources.values())
