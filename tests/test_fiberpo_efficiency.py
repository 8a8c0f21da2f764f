"""FiberPO Fig. 4 (``fiberpo.token_efficiency``) and FiberPO-Domain ratio decoupling (``fiberpo_domain.decoupling``):
the drift path, the decoupled-slope gate, the figure's events, and the claims run through the registry."""

from __future__ import annotations

import numpy as np
import pytest

import fiberlab.claims.fiberpo_figures as F
from fiberlab import registry
from fiberlab.numerics import fiberpo as N

EXACT = 1e-12


def test_parameterised_drift_rows_and_domain():
    lr, ids = N.parameterised_drift([0.0, 2.0], [0.1, -0.25])
    np.testing.assert_allclose(lr, [0.0, 0.0, np.log(1.2), np.log(0.5)], atol=EXACT)
    assert ids.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="positive orthant"):
        N.parameterised_drift([4.0], [0.1, -0.25])
    with pytest.raises(ValueError, match="delta_hat"):
        N.parameterised_drift([1.0], [np.nan])


@pytest.mark.parametrize("seed", range(5))
def test_decoupled_slope_reduces_to_eq7(seed):
    rng = np.random.default_rng(seed)
    ids = np.repeat([0, 1, 2], [3, 5, 4])
    lr = rng.normal(0, 0.15, ids.size)
    ref = N.fiberpo_log_gated_ratio(lr, ids, 0.04, 0.12, 0.05)
    np.testing.assert_allclose(N.fiberpo_log_gated_ratio_slope(lr, ids, 0.04, 0.12, 0.05), ref, atol=EXACT)
    one = np.zeros(ids.size, dtype=int)                      # one trajectory of 12 tokens: k = 12 is Eq. 7
    np.testing.assert_allclose(N.fiberpo_log_gated_ratio_slope(lr, one, 0.04, 0.12, 0.05, k=12),
                               N.fiberpo_log_gated_ratio(lr, one, 0.04, 0.12, 0.05), atol=EXACT)
    with pytest.raises(ValueError, match="k"):
        N.fiberpo_log_gated_ratio_slope(lr, ids, 0.04, 0.12, 0.05, k=0)


def test_fig4_reconstruction_and_events():
    d = F.fig4_delta_hat()
    assert d[5] == -0.118 and d[7] == 0.231
    assert np.all(np.sign(d) == np.sign(F.FIG4_READOFF))
    f = F.fig4_features(F.fig4_curves())
    p, m = f["+"], f["-"]
    # token 7 (largest drift) clips first: u_7 = log(1 + 0.231 t) - log s+(t) reaches ε = 0.04 near t = 0.21
    assert p["eps_tokens"].index(p["eps_first"]) == 7 and 0.20 < p["eps_first"] < 0.22
    assert p["eps_first"] < p["onset_neg"] < p["zero_neg"] < p["onset_pos"] < p["zero_pos"]
    assert m["eps_first"] > m["onset_neg"] > m["onset_pos"]           # t < 0: the same order, going left
    assert abs(p["J0"] + 0.2) < EXACT                                   # Ĵ(θ_old) = (4 - 6)/10
    assert abs(p["t_first_max"] - p["onset_neg"]) <= 2 * F.T_STEP
    assert p["g3_w1_err"] == 0.0 and p["g3_gap_to_J0"] > 0.04
    assert p["fewer_kept"] <= 0 and p["superset_example"]["token"] == 2


def test_level_deviations_by_hand():
    # two trajectories in group 0 (lengths 2 and 1), one in group 1; one domain
    lr = np.array([0.02, -0.01, 0.04, 0.01])
    ids, gid, did = np.array([0, 0, 1, 2]), np.array([0, 0, 0, 1]), np.zeros(4, dtype=int)
    dev = F.level_deviations(lr, ids, gid, did)
    s_t = np.array([0.01, 0.04, 0.01])                                  # log s+_τ
    s_g = np.array([0.025, 0.01])                                       # trajectory means, not token means
    s_d = s_t.mean()
    np.testing.assert_allclose(dev[+1][:, 0], [s_d, s_g[0] - s_d, s_t[0] - s_g[0]], atol=EXACT)
    np.testing.assert_allclose(dev[+1][:, 3], [s_d, s_g[1] - s_d, 0.0], atol=EXACT)
    np.testing.assert_allclose(dev[-1][:, 1], [0.005 / 3, 0.0025 - 0.005 / 3, 0.005 - 0.0025], atol=EXACT)
    fac, passing, _ = F._level_factors(lr, ids, gid, did)
    assert passing
    for s in (+1, -1):
        np.testing.assert_allclose(fac[s], dev[s], atol=EXACT)


CHECKS = [ch for c in registry.all_claims() for ch in c.checks
          if c.id in {"fiberpo.token_efficiency", "fiberpo_domain.decoupling"}]


def test_claims_are_declared():
    assert registry.get_claim("fiberpo.token_efficiency").status == "conditional"
    assert registry.get_claim("fiberpo_domain.decoupling").status == "verified"
    assert len(CHECKS) == 6


@pytest.mark.parametrize("check", CHECKS, ids=lambda ch: f"{ch.claim_id}:{ch.layer}:{ch.name}")
def test_claim_checks_pass(check):
    result = registry.run_check(check)
    assert result.status == "pass", result.detail
    assert result.max_error is not None and result.max_error <= result.tolerance
    assert result.seconds < 10
