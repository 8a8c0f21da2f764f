"""BandPO theory layer: each claim has a SymPy check (tests/test_claims.py runs them all), and the derivations
behave as documented."""

import pytest
import sympy as sp

import fiberlab.claims  # noqa: F401  (declares the claims and attaches every layer's checks)
from fiberlab import registry
from fiberlab.theory import band as T



# The claims of fiberlab/claims/band.py this layer covers (all of them when this was written).
COVERED = ("band.reduction", "band.tv_closed_form", "band.chi2_closed_form", "band.kl_bounds", "band.saturation",
           "band.limits", "band.small_delta", "band.mirror", "band.monotone", "clip.bottleneck",
           "band.authors_bisection")


@pytest.mark.parametrize("claim_id", COVERED)
def test_claim_has_a_theory_check(claim_id):
    assert "theory" in registry.get_claim(claim_id).layers


def test_a_wrong_statement_fails_its_check(monkeypatch):
    """The Prop. 4 check compares solve()'s roots with the statement, so a wrong statement must fail."""
    monkeypatch.setitem(T.STATED, "tv_roots", (1 - T.delta / (2 * T.p), 1 + T.delta / T.p))
    check = next(ch for ch in registry.get_claim("band.tv_closed_form").checks if ch.layer == "theory")
    assert registry.run_check(check).status == "fail"


def test_a_wrong_saturation_threshold_fails(monkeypatch):
    monkeypatch.setitem(T.STATED, "chi2_saturation", (1 / (1 + T.delta), T.delta))   # lower should be δ/(1+δ)
    check = next(ch for ch in registry.get_claim("band.saturation").checks if ch.layer == "theory")
    assert registry.run_check(check).status == "fail"


def test_generator_rejects_unknown_divergence():
    with pytest.raises(ValueError, match="divergence"):
        T.generator("hellinger")


def test_kl_has_no_branch_roots():
    with pytest.raises(ValueError, match="kl"):
        T.branch_roots("kl")


def test_g_is_zero_at_r_one_for_each_generator():
    for div in T.DIVERGENCES:
        assert sp.simplify(T.g(div).subs(T.r, 1)) == 0


def test_band_bounds_are_clamped_to_the_simplex():
    lo, up = T.band_bounds("tv")
    assert isinstance(lo, sp.Max) and isinstance(up, sp.Min)
    # at p = 0.9, δ = 0.2 TV saturates above (p ≥ 1 - δ): the band's upper end is the simplex edge 1/p
    assert up.subs({T.p: sp.Rational(9, 10), T.delta: sp.Rational(1, 5)}) == sp.Rational(10, 9)


def test_f_second_at_one():
    assert [T.f_second_at_one(d) for d in ("kl", "chi2")] == [1, 2]
    assert T.f_second_at_one("tv") is sp.nan


def test_kl_next_order_coefficient_vanishes_only_at_half():
    _, b = T.kl_second_order_root()
    assert sp.solve(sp.Eq(b, 0), T.p) == [sp.Rational(1, 2)]
