"""The exact length-bias probe (fiberlab.gpu.probes.filler_logit_gradient): checked against an independent NumPy
computation of the same batches, then its predictions — zero expected drift for every aggregation when rewards
are independent of length, a drift whose size depends on the aggregation when they are not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fiberlab.gpu.losses import AGG_MODES
from fiberlab.gpu.probes import ANSWER_LOG_PROB, filler_distribution, filler_logit_gradient

# Measured (seed 0, groups 20000, group_size 8, p_filler 0.5, max_pad 8, answer_len 3; drift ± SE):
#   c = 0,  pass 0.25: token-mean -1.9e-4 ± 3.4e-4, seq-mean-token-mean -0.9e-4 ± 2.8e-4, sum-norm -0.8e-4 ± 1.4e-4
#   c = -1, pass 0.25: -0.02878 ± 0.00025,  -0.02434 ± 0.00022,  -0.01197 ± 0.00011
#   c = -1, pass 0.75: -0.04954 ± 0.00040,  -0.03689 ± 0.00028,  -0.02061 ± 0.00017
#   c = +1, pass 0.25: +0.04906 ± 0.00039,  +0.03670 ± 0.00029,  +0.02041 ± 0.00017
#   c = +1, pass 0.75: +0.02889 ± 0.00023,  +0.02457 ± 0.00020,  +0.01202 ± 0.00010


def _numpy_reference(agg_mode, pass_rate, group_size, groups, p, max_pad, answer_len, c, seed, chunks):
    """The same batches drawn in the documented order, the gradient by the closed form
    -Σ_i A_i w_i s(k_i) (on-policy PPO: ratio 1, no clipping), with the aggregation's weights w_i."""
    rng = np.random.default_rng(seed)
    n = groups * group_size
    k = np.minimum(rng.geometric(1 - p, n) - 1, max_pad)
    u = rng.random(n)
    pk = filler_distribution(p, max_pad)
    ks = np.arange(max_pad + 1)
    mu = (pk * ks).sum()
    sd = math.sqrt((pk * (ks - mu) ** 2).sum())
    if c == 0:
        prob = np.full(max_pad + 1, pass_rate)
    else:
        from scipy.optimize import brentq
        z = (ks - mu) / sd
        b = brentq(lambda b: (pk / (1 + np.exp(-(b + c * z)))).sum() - pass_rate, -60, 60, xtol=1e-14)
        prob = 1 / (1 + np.exp(-(b + c * z)))
        assert abs((pk * prob).sum() - pass_rate) < 1e-10
    r = (u < prob[k]).astype(float)
    s = k * (1 - p) - p * (k < max_pad)
    ylen = k + answer_len + 1
    T = max_pad + answer_len + 1
    grads = []
    for idx in np.array_split(np.arange(groups), chunks):
        sl = slice(idx[0] * group_size, (idx[-1] + 1) * group_size)
        rr = r[sl].reshape(-1, group_size)
        a = ((rr - rr.mean(1, keepdims=True)) / (rr.std(1, ddof=1, keepdims=True) + 1e-6)).reshape(-1)
        B = a.size
        w = {"token-mean": np.full(B, 1 / ylen[sl].sum()), "token-sum": np.ones(B),
             "seq-mean-token-sum": np.full(B, 1 / B), "seq-mean-token-mean": 1 / (B * ylen[sl]),
             "seq-mean-token-sum-norm": np.full(B, 1 / (B * T))}[agg_mode]
        grads.append(-(a * w * s[sl]).sum())
    g = np.array(grads)
    return g.mean(), g.std(ddof=1) / math.sqrt(len(g))


@pytest.mark.parametrize("agg_mode", AGG_MODES)
@pytest.mark.parametrize("c", [0.0, -1.0])
def test_probe_matches_closed_form(agg_mode, c):
    kw = dict(group_size=4, groups=600, p=0.4, max_pad=5, answer_len=2, c=c, seed=3, chunks=10)
    out = filler_logit_gradient(agg_mode, 0.5, group_size=4, groups=600, p_filler=0.4, max_pad=5, answer_len=2,
                                length_correlation=c, seed=3, chunks=10)
    g, se = _numpy_reference(agg_mode, 0.5, **kw)
    assert out["grad"] == pytest.approx(g, rel=1e-9, abs=1e-12)
    assert out["se"] == pytest.approx(se, rel=1e-6, abs=1e-12)
    assert out["drift"] == -out["grad"]


def test_filler_distribution():
    pk = filler_distribution(0.5, 8)
    assert pk.sum() == pytest.approx(1.0) and pk[0] == 0.5 and pk[8] == 0.5 ** 8
    assert ANSWER_LOG_PROB < 0


def test_probe_batches_are_shared_and_pass_rate_held():
    a = filler_logit_gradient("token-mean", 0.25, groups=2000, length_correlation=-1.0)
    b = filler_logit_gradient("seq-mean-token-mean", 0.25, groups=2000, length_correlation=-1.0)
    assert a["reward_mean"] == b["reward_mean"] and a["filler_mean"] == b["filler_mean"]
    # the recentred logit keeps the mean pass rate: 16000 draws, binomial SE 0.0034
    assert abs(a["reward_mean"] - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 16000)


MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


@pytest.mark.parametrize("pass_rate", [0.25, 0.75])
@pytest.mark.parametrize("agg_mode", AGG_MODES)
def test_no_drift_without_length_reward_correlation(agg_mode, pass_rate):
    """E[Σ A_i g(k)] = Σ E[A_i] E[g] = 0 for any length weighting: the measured drift is within 4 SE of 0,
    and the SE is small enough for that to mean something (a drift as large as the correlated case's
    smallest, 0.012, would be > 30 SE; measured SEs ≤ 3.4e-4)."""
    out = filler_logit_gradient(agg_mode, pass_rate)
    assert abs(out["drift"]) < 4 * out["se"], out
    if agg_mode in MODES:
        assert out["se"] < 0.012 / 30


@pytest.fixture(scope="module")
def correlated():
    return {(m, pr, c): filler_logit_gradient(m, pr, length_correlation=c)
            for m in MODES for pr in (0.25, 0.75) for c in (-1.0, 1.0)}


@pytest.mark.parametrize("pass_rate", [0.25, 0.75])
@pytest.mark.parametrize("c", [-1.0, 1.0])
def test_drift_follows_the_correlation(correlated, pass_rate, c):
    """When long answers are more often wrong (c < 0) every aggregation shortens them, and lengthens them for
    c > 0: s(k)·w(k) is increasing in k for every weighting here (s(k)/(k+L) too: its slope has the sign of
    (1-p)L + p > 0), so its covariance with the reward has the sign of c. Measured |z| > 100; asserted > 20."""
    for m in MODES:
        out = correlated[(m, pass_rate, c)]
        assert math.copysign(1.0, out["drift"]) == math.copysign(1.0, c) and abs(out["drift"]) > 20 * out["se"]


@pytest.mark.parametrize("pass_rate", [0.25, 0.75])
@pytest.mark.parametrize("c", [-1.0, 1.0])
def test_per_sequence_normalisation_changes_the_drift_size(correlated, pass_rate, c):
    """seq-mean-token-mean weights a sequence 1/|y|, seq-mean-token-sum-norm 1/T (T = 12), so their ratio per
    sequence is T/|y| ∈ [1, 3]; measured drift ratios are 1.79–2.04, i.e. below T/E|y| ≈ 2.4 (the 1/|y| weight
    discounts the long answers, which carry the largest scores). Asserted: the ratio lies in (1.5, 2.3), each
    end more than 10 SEs of the ratio (≈ 0.025) from the measurements."""
    a = correlated[("seq-mean-token-mean", pass_rate, c)]
    b = correlated[("seq-mean-token-sum-norm", pass_rate, c)]
    ratio = a["drift"] / b["drift"]
    se_ratio = ratio * math.hypot(a["se"] / a["drift"], b["se"] / b["drift"])
    assert se_ratio < 0.04
    assert 1.5 < ratio < 2.3, ratio
    pk = filler_distribution(0.5, 8)
    mean_len = float((pk * (np.arange(9) + 4)).sum())
    assert ratio < 12 / mean_len - 5 * se_ratio
