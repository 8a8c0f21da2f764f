"""Evidence for symbolic (theory-layer) checks, shared by every paper's theory checks.

:func:`proof_evidence` takes the steps a check has decided itself, SymPy-tests style: each identity is written
at the check as ``sp.simplify(lhs - rhs) == 0`` and each fact as a boolean. :func:`symbolic_evidence` takes
expressions and does the zero test here (the older form).
"""

from __future__ import annotations

import sympy as sp

from fiberlab.registry import Evidence


def symbolic_evidence(identities: dict, facts: dict | None = None, detail: str = "") -> Evidence:
    """Evidence for identities (``name -> expression that must simplify to 0``) and facts (``name -> bool``).

    Exact: max_error 0 and tolerance 0 when everything is proved; otherwise a failure naming what was not.
    """
    facts = facts or {}
    bad = [f"{k} = {sp.sstr(v)}" for k, v in identities.items() if sp.simplify(v) != 0]
    bad += [f"{k} is not established" for k, v in facts.items() if v is not True]
    cases = len(identities) + len(facts)
    if bad:
        return Evidence(passed=False, max_error=float("nan"), tolerance=0.0, cases=cases,
                        detail="not proved: " + "; ".join(bad[:6]) + (f" (+{len(bad) - 6} more)" if len(bad) > 6 else ""))
    return Evidence(passed=True, max_error=0.0, tolerance=0.0, cases=cases,
                    detail=detail or f"{cases} identities/facts proved by simplification")


def proof_evidence(proved: dict, detail: str = "") -> Evidence:
    """Evidence for a symbolic proof whose steps the check decided (``name -> True`` when the step holds).

    Exact: max_error 0 and tolerance 0 when every step holds; otherwise a failure naming the steps that do not.
    """
    bad = [k for k, ok in proved.items() if ok is not True]
    if bad:
        return Evidence(passed=False, max_error=float("nan"), tolerance=0.0, cases=len(proved),
                        detail="not proved: " + "; ".join(bad[:6]) + (f" (+{len(bad) - 6} more)" if len(bad) > 6 else ""))
    return Evidence(passed=True, max_error=0.0, tolerance=0.0, cases=len(proved),
                    detail=detail or f"{len(proved)} identities/facts proved by simplification")
