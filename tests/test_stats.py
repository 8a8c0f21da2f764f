"""The paired statistics of the training predictions (fiberlab.stats): each test states the number by hand."""

import numpy as np
import pytest
from scipy import stats as st

from fiberlab import stats as S

# Monte Carlo coverage/size estimates below use REPS replications; their standard error is
# sqrt(0.95 · 0.05 / REPS) = 0.0049, and each bound sits at least 4 standard errors from the value it guards.
REPS = 2000
MC_SE = np.sqrt(0.95 * 0.05 / REPS)


def test_t_interval_is_mean_plus_minus_t_quantile_times_standard_error():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * np.std(x, ddof=1) / 2      # t_{3, 0.975}; s/√4
    assert S.paired_t_interval(x) == pytest.approx((2.5 - half, 2.5 + half), abs=1e-12)
    ci = st.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert S.paired_t_interval(x) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_sign_flip_p_counts_the_patterns_as_extreme_as_observed():
    # ±1 ±2 ±3: only the all-plus and all-minus patterns reach |sum| = 6, so p = 2/8
    assert S.sign_flip_p([1.0, 2.0, 3.0]) == 2 / 8
    # mean 0: every pattern is at least as extreme
    assert S.sign_flip_p([1.0, -1.0, 1.0, -1.0]) == 1.0
    # 8 positive differences of equal size: 2 / 2^8
    assert S.sign_flip_p(np.ones(8)) == 2 / 256


def test_sign_flip_p_sampled_above_the_exact_range():
    p = S.sign_flip_p(np.ones(20), seed=3)         # exact value 2 / 2^20 ≈ 1.9e-6; sampled: (1 + hits)/(1 + N)
    assert 0 < p <= 5 / (1 + S.FLIP_SAMPLES)


def test_holm_adjusts_by_rank_and_stays_monotone():
    # sorted 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → monotone 0.06; input order kept
    assert S.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert S.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_tost_matches_the_ninety_percent_interval_inside_the_margin():
    rng = np.random.default_rng(0)
    for _ in range(200):
        d = rng.normal(rng.normal(0, 0.05), 0.1, 8)
        lo, hi = S.paired_t_interval(d, level=1 - 2 * S.ALPHA)
        inside = -0.08 < lo and hi < 0.08
        assert (S.tost_p(d, 0.08) < S.ALPHA) == inside


def test_t_interval_covers_at_its_level_where_the_percentile_bootstrap_does_not():
    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 1.0, (REPS, 5))
    t_cover = np.mean([lo <= 0.3 <= hi for lo, hi in map(S.paired_t_interval, d)])
    assert abs(t_cover - 0.95) < 4 * MC_SE
    boots = d[np.arange(REPS)[:, None, None], rng.integers(0, 5, (REPS, 1000, 5))].mean(2)
    lo, hi = np.quantile(boots, [0.025, 0.975], axis=1)
    boot_cover = np.mean((lo <= 0.3) & (0.3 <= hi))
    assert boot_cover < 0.95 - 4 * MC_SE            # measured 0.849 at 5 seeds


def test_sign_flip_test_holds_its_size_under_the_null():
    rng = np.random.default_rng(2)
    d = rng.standard_t(3, (REPS, 8))                 # symmetric, heavy-tailed
    rate = np.mean([S.sign_flip_p(row) <= S.ALPHA for row in d])
    assert rate <= S.ALPHA + 4 * MC_SE


def test_verdict_order_gate_seeds_direction_equivalence():
    up, down, flat = np.full(8, 1.0) + np.arange(8) * 0.01, -np.ones(8) - np.arange(8) * 0.01, np.arange(8) * 1e-4
    assert S.verdict(up, 0.001, gate_passed=False) == "not testable"
    assert S.verdict(up[:5], 0.001) == "inconclusive"
    assert S.verdict(up, 0.001) == "confirmed"
    assert S.verdict(down, 0.001) == "refuted"
    assert S.verdict(up, 0.2) == "inconclusive"
    assert S.verdict(flat, 0.9, margin=0.01) == "equivalent"
    assert S.verdict(flat, 0.9) == "inconclusive"
    assert set(S.VERDICTS) >= {"confirmed", "refuted", "equivalent", "inconclusive", "not testable"}


@pytest.mark.parametrize("call, name", [
    (lambda: S.paired_t_interval([1.0]), "d"),
    (lambda: S.sign_flip_p([1.0, float("nan")]), "d"),
    (lambda: S.tost_p([1.0, 2.0], 0.0), "margin"),
    (lambda: S.holm([0.5, 1.5]), "pvalues"),
])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
