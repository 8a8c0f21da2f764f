"""Training predictions of the three papers, checked by training a small model (layer ``harness``).

Each claim is one registered experiment of :mod:`fiberlab.experiments`: its arms, its one primary prediction
(statistic, window, direction) and its validity gate are data there, stated before the runs. The claim's status
and condition are *derived* from the published default-size result (``book/results/<experiment>.json``, written by
``fiberlab experiment all --publish book/results``): a confirmed primary makes the claim conditional on the
setting, a refuted one refutes it, anything else leaves it conditional with the measured reason.

The registry check re-runs the experiment at the CI size (:func:`fiberlab.experiments.reduced`: the primary's two
arms, fewer seeds, the same iterations — so its seeds are the first seeds of the published run) and asks that the
published finding reproduces: a confirmed or refuted primary keeps the sign of its effect, a gate that failed fails
again, and an equivalent or inconclusive primary's interval overlaps the published one.

The reduced runs are cached under ``<cache>/harness/<hash>`` (:func:`cache_root`: ``$FIBERLAB_CACHE``, else the
user cache directory), keyed by the experiment's configuration and the source of the harness, tasks, objectives
and runner, so the test suite and the book build share one run and a code change never reuses stale results.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fiberlab.experiments import EXPERIMENTS, gate_passed, reduced, run_experiment
from fiberlab.registry import Evidence, claim, get_claim

_ROOT = Path(__file__).resolve().parents[1]
_SOURCES = ("experiments.py", "stats.py")
#: Where the default-size results are published (the book's data).
RESULTS = _ROOT.parent / "book" / "results"


def cache_root() -> Path:
    """Where reduced training runs are kept: ``$FIBERLAB_CACHE``, else the user cache directory
    (``$XDG_CACHE_HOME/fiberlab`` or ``~/.cache/fiberlab``). One absolute place whatever the working directory:
    the book executes its pages from ``book/`` and the tests run from the root, and both must find the same runs;
    running from anywhere else must neither retrain nor leave a cache behind."""
    if os.environ.get("FIBERLAB_CACHE"):
        return Path(os.environ["FIBERLAB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fiberlab"


def _cache_dir(exp) -> Path:
    import fiberlab.gpu as gpu

    h = hashlib.sha256(repr(exp).encode())
    gpu_dir = Path(gpu.__file__).resolve().parent
    for path in sorted(gpu_dir.glob("*.py")) + [_ROOT / s for s in _SOURCES]:
        h.update(path.read_bytes())
    return cache_root() / "harness" / h.hexdigest()[:16]


def published_primary(name: str) -> dict[str, Any]:
    """The published default-size entry of an experiment's primary prediction."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path.name}: no published result; run fiberlab experiment {name} "
                                f"--publish book/results")
    res = json.loads(path.read_text())
    v = next((v for v in res.get("verdicts", []) if v.get("primary")), None)
    if v is None:
        raise FileNotFoundError(f"{path.name}: no primary prediction in the published result; re-run fiberlab "
                                f"experiment {name} --publish book/results")
    return v


def _fmt(v: dict[str, Any]) -> str:
    ci = "" if v["ci"] is None else f" [{v['ci'][0]:+.3g}, {v['ci'][1]:+.3g}]"
    p = "" if v["p_holm"] is None else f", p = {v['p']:.3g} (Holm {v['p_holm']:.3g})"
    return f"{v['effect']:+.3g}{ci}{p}, {v['seeds']} seeds"


def reproduces(reduced_v: dict[str, Any], full: dict[str, Any]) -> tuple[bool, str]:
    """Does the CI-size primary reproduce the published finding? (see the module docstring)"""
    verdict = full["verdict"]
    if verdict == "not testable":
        ok = not gate_passed(reduced_v["gate"])
        return ok, "the gate fails again" if ok else "the gate now passes"
    if verdict in ("confirmed", "refuted"):
        want = 1 if verdict == "confirmed" else -1
        ok = reduced_v["effect"] * want > 0 and gate_passed(reduced_v["gate"])
        return ok, f"effect {reduced_v['effect']:+.3g} keeps the sign" if ok else \
            f"effect {reduced_v['effect']:+.3g} (gate {'passed' if gate_passed(reduced_v['gate']) else 'failed'})"
    # equivalent or inconclusive: a few seeds cannot show equivalence (at 4 seeds the interval is wider than any
    # margin a 96-seed run decides), so the CI size asks that its interval does not contradict the published one
    lo, hi = reduced_v["ci"] or (reduced_v["effect"],) * 2
    ok = lo <= full["ci"][1] and full["ci"][0] <= hi
    return ok, f"interval [{lo:+.3g}, {hi:+.3g}] {'overlaps' if ok else 'is disjoint from'} the published one"


def _check(name: str) -> Evidence:
    full = published_primary(name)
    exp = reduced(EXPERIMENTS[name])
    res = run_experiment(exp, _cache_dir(exp), torch.device("cpu"))
    v = next(v for v in res["verdicts"] if v["primary"])
    ok, why = reproduces(v, full)
    n = min(len(v["per_seed"]), len(full["per_seed"]))
    drift = max(abs(a - b) for a, b in zip(v["per_seed"][:n], full["per_seed"][:n]))
    detail = (f"{full['description']}: published {full['verdict']} ({_fmt(full)}); CI size {_fmt(v)}: {why}; "
              f"the CI seeds are the published run's first {n} — largest per-seed difference {drift:.3g} "
              f"(0 when this machine's arithmetic reproduces the published run)")
    return Evidence(passed=ok, max_error=float(not ok), tolerance=0.0, cases=exp.seeds * len(exp.arms),
                    detail=detail)


def _kinds(reasons: list[str]) -> str:
    """The kinds of a gate's failing reasons, without their per-seed numbers (the results file has those)."""
    kinds = dict.fromkeys(r.split(" (")[0].split(" in ")[0] for r in reasons)
    return ", ".join(kinds)


def _status(name: str) -> tuple[str, str]:
    """The claim's status and condition from the published primary and the experiment's setting."""
    exp = EXPERIMENTS[name]
    try:
        v = published_primary(name)
    except FileNotFoundError:
        return "conditional", f"{exp.setting} Not yet run at the default size."
    finding = {
        "confirmed": "The primary prediction is confirmed here",
        "refuted": "The primary prediction is refuted here: the effect is significant in the other direction",
        "equivalent": "The arms are equivalent within the stated margin",
        "inconclusive": "The primary prediction is not decided here",
        "not testable": "Not testable here",
    }[v["verdict"]]
    reasons = "; ".join(f"{arm} {g['passed']}/{g['run']} seeds pass" + (f" (failing: {_kinds(g['reasons'])})"
                                                                          if g["reasons"] else "")
                        for arm, g in v["gate"].items())
    cond = (f"{exp.setting} {finding} ({v['description']}: {v['statistic']}, {v['better']} − {v['worse']} = "
            f"{_fmt(v)}; gate: {reasons}).")
    # equivalent: the predicted difference is absent within the margin stated in advance
    status = "refuted" if v["verdict"] in ("refuted", "equivalent") else "conditional"
    return status, cond


_STATEMENTS = {
    "band.entropy": ("BandPO", "BandPO §1, §4 (entropy and tail tokens)",
                     "Canonical clipping starves low-probability high-advantage tokens and collapses entropy faster "
                     "than Band; Band keeps entropy higher at equal or better reward."),
    "fiberpo.stability": ("FiberPO", "FiberPO via JoyAI report §3.3 (Figs. 6–7)",
                          "With several off-policy steps per batch, GRPO's per-trajectory drift and gradient norm "
                          "grow while FiberPO holds the drift near its budget."),
    "lpo.training": ("LPO", "LPO §5.2, Cor. 2 (mode coverage), Fig. 12",
                     "With several correct answers, LPO (forward KL) keeps probability on every correct answer — "
                     "more mass on the weakest one and more distinct correct answers — than its policy-gradient "
                     "pair GRPO."),
    "agg.length_bias": ("classical", "Dr.GRPO (length bias of 1/|y|)",
                        "GRPO's per-sequence 1/|y| normalisation changes response length relative to Dr.GRPO's "
                        "constant normaliser, with the advantages held identical."),
}

for _name, _exp in EXPERIMENTS.items():
    _paper, _source, _statement = _STATEMENTS[_exp.claim]
    _st, _cond = _status(_name)
    _c = claim(_exp.claim, paper=_paper, source=_source, statement=_statement, status=_st, condition=_cond)
    _c.check("harness", name=f"{_name}_reduced_run_reproduces_the_published_primary")(lambda n=_name: _check(n))


# --------------------------------------------------------------------------------------------------------------
# The length bias's mechanism, exactly (no training): the filler-logit gradient of each aggregation on identical
# batches (fiberlab.gpu.probes). With rewards independent of length and group advantages that sum to zero, the
# expected drift is 0 under every aggregation; a drift needs a correlation between length and reward, and then
# all aggregations move length the same way, 1/|y| changing only how fast.
# --------------------------------------------------------------------------------------------------------------

#: Monte-Carlo z-scores: |z| ≤ 4 is "zero" (a false alarm has probability ~6e-5 per cell), |z| ≥ 20 is a drift.
PROBE_Z_ZERO, PROBE_Z_DRIFT = 4.0, 20.0
PROBE_AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


@get_claim("agg.length_bias").check("gpu", name="filler_drift_is_zero_without_length_reward_correlation")
def _probe() -> Evidence:
    from fiberlab.gpu.probes import filler_logit_gradient

    bad, lines, worst = 0, [], 0.0
    for q in (0.25, 0.75):
        signs = {}
        for c in (0.0, -1.0):
            for agg in PROBE_AGGS:
                r = filler_logit_gradient(agg, q, groups=8000, length_correlation=c)
                z = r["drift"] / r["se"]
                ok = abs(z) <= PROBE_Z_ZERO if c == 0 else abs(z) >= PROBE_Z_DRIFT
                signs.setdefault(c, set()).add(np.sign(r["drift"]) if c else 0)
                worst = max(worst, abs(z)) if c == 0 else worst
                bad += int(not ok)
                lines.append(f"q={q} c={c:+g} {agg}: drift {r['drift']:+.2e} ± {r['se']:.1e}")
        bad += int(len(signs[-1.0]) != 1)             # correlated: every aggregation drifts the same way
    return Evidence(passed=bad == 0, max_error=worst, tolerance=PROBE_Z_ZERO, cases=len(lines),
                    detail="; ".join(lines) + "; c = 0: |z| ≤ 4 (no drift), c = −1 (long answers more often "
                                              "wrong): |z| ≥ 20, one sign for every aggregation")
