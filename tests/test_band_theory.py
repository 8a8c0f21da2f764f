"""BandPO theory layer: each claim has a SymPy check (tests/test_claims.py runs them all), and the derivations
behave as documented."""

import pytest
import sympy as sp

import fiberlab.claims  # noqa: F401  (declares the claims and attaches every layer's checks)
from fiberlab import registry
from fiberlab.theory import band as T



# The claims of fiberlab/claims/band_bounds.py, band_shape.py and band_clipping.py this layer covers (all of
# them when this was written).
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


# Each theory check compares its derivation with the statement it reads from T.STATED at the check, so flipping a
# statement must fail the check that reads it.
WRONG_STATEMENTS = {
    "g_tv": ("band.reduction", 2 * T.p * sp.Abs(T.r - 1)),
    "chi2_roots": ("band.chi2_closed_form", (1 - sp.sqrt(T.delta / T.p), 1 + sp.sqrt(T.delta * (1 - T.p) / T.p))),
    "r_star": ("band.limits", {"kl": sp.exp(-2 * T.delta), "tv": 1 - T.delta, "chi2": sp.Integer(1)}),
    "margin_p_to_0": ("band.limits", {"kl": 1 - sp.exp(-T.delta), "tv": 2 * T.delta}),
    "small_delta_halfwidth": ("band.small_delta", sp.sqrt(T.delta * (1 - T.p) / (T.fpp_1 * T.p))),
    "clip_margin": ("clip.bottleneck", T.eps * T.p ** 2),
    "clip_threshold": ("clip.bottleneck", 1 / (1 + 2 * T.eps)),
}


@pytest.mark.parametrize("key", sorted(WRONG_STATEMENTS))
def test_each_wrong_statement_fails_a_theory_check(monkeypatch, key):
    claim_id, wrong = WRONG_STATEMENTS[key]
    monkeypatch.setitem(T.STATED, key, wrong)
    statuses = [registry.run_check(ch).status for ch in registry.get_claim(claim_id).checks if ch.layer == "theory"]
    assert "fail" in statuses


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


@pytest.mark.parametrize("p_value", T.STATED["kl_radical_ps"])
def test_kl_equation_is_a_polynomial_at_rational_p(p_value):
    """e^{-b(g - δ)} - 1 = P(r) e^{bδ}/(b-a)^(b-a) at p = a/b, with P of degree b ≤ 4."""
    a, b, poly, _ = T.kl_rational_polynomial(p_value)
    lhs = sp.expand(sp.exp(-b * (T.g("kl").subs(T.p, p_value) - T.delta))) - 1
    assert sp.simplify(lhs - poly * sp.exp(b * T.delta) / (b - a) ** (b - a)) == 0
    assert sp.degree(poly, T.r) == b <= 4


@pytest.mark.parametrize("p_value", T.STATED["kl_radical_ps"])
def test_kl_radical_ends_solve_the_band_equation(p_value):
    """The two radical roots chosen as the ends lie on either side of 1 in (0, 1/p) and satisfy g_KL = δ."""
    out = T.kl_radical_roots(p_value)
    assert out["all_radical"] and out["n_roots"] == p_value.q
    lo, up = out["ends_in_simplex"]
    assert 0 < lo < 1 < up < 1 / p_value
    for end in (out["lower"], out["upper"]):
        residual = (T.g("kl").subs(T.p, p_value) - T.delta).subs(T.r, end).subs(T.delta, T.KL_SELECT_DELTA)
        assert abs(complex(residual.evalf(40))) < 1e-30


def test_kl_third_matches_the_issue_example():
    """p = 1/3, δ = 0.05: Cardano's roots are the band (0.595458, 1.469207)."""
    lo, up = T.kl_radical_roots(sp.Rational(1, 3))["ends_in_simplex"]
    assert (round(lo, 6), round(up, 6)) == (0.595458, 1.469207)


def test_kl_half_radicals_are_the_stated_roots():
    out = T.kl_radical_roots(sp.Rational(1, 2))
    for got, stated in zip((out["lower"], out["upper"]), T.STATED["kl_half_roots"]):
        assert sp.simplify(got - stated) == 0


def test_a_wrong_half_root_fails_the_radical_check(monkeypatch):
    monkeypatch.setitem(T.STATED, "kl_half_roots", (1 - sp.sqrt(1 - sp.exp(-T.delta)), 1 + sp.sqrt(1 - sp.exp(-T.delta))))
    check = next(ch for ch in registry.get_claim("band.kl_bounds").checks if ch.name.endswith("radicals_at_rational_p"))
    assert registry.run_check(check).status == "fail"
