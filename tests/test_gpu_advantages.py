"""Advantage estimators (``fiberlab.gpu.advantages``): verl parity, float64 NumPy references, invariances, errors.

* ``grpo`` vs verl 0.9.1's ``compute_grpo_outcome_advantage`` (reward on the last valid token, ``index`` a
  NumPy array of ids), ``norm_adv_by_std_in_grpo`` True and False, float32 and float64, Hypothesis group
  structures with singletons and zero-variance groups. Rewards are drawn from a dyadic grid (k/8, binary-like
  verifier scores), where every sum verl and we form is exact; the one rounding that differs is the mean's
  division (we centre on a pivot, verl divides the raw sum), a few ulps, hence ``VERL_RTOL``. In float64 a
  singleton also differs by ~5e-8 relative: verl adds ε to a float32 ``tensor(1.0)``, so its divisor is
  ``float32(1 + 1e-6)``, not ``1 + 1e-6``; ``VERL_SINGLETON_RTOL`` covers that.
* Each estimator against a plain float64 NumPy loop over groups written here.
* Invariances: a per-group constant shift (all but ``maxrl``, whose τ = μ_G moves with the shift; ``grpo``
  singletons follow verl's mean-0 rule and move too), a per-group positive scale for ``maxrl``, batch
  permutation; RLOO = K/(K-1)(R - μ); zero-variance groups give exact zeros.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fiberlab.gpu.advantages import ADVANTAGES, get_advantage, register_advantage

#: float32 parity with verl: the two means differ by the rounding of one division (a few ulps of |R|), then
#: divided by σ_G ≥ 1/16 on the k/8 grid for a non-constant group.
VERL_RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}
VERL_ATOL = {torch.float32: 1e-5, torch.float64: 1e-12}
#: verl's singleton divisor is float32(1 + 1e-6) = 1.00000095..., ours 1.000001 in float64: 4.6e-8 relative.
VERL_SINGLETON_RTOL = 1e-7
#: float64 NumPy reference: different summation order; eps = 1e-6 amplifies rounding in near-constant groups
#: by at most 1e6, so 1e-16·|R| becomes ~1e-9.
REF_ATOL, REF_RTOL = 1e-8, 1e-9

NAMES = ("grpo", "drgrpo", "rloo", "maxrl", "reinforce_pp_baseline")


# ----------------------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------------------

@st.composite
def batches(draw, min_size: int = 1, grid: bool = True, nonneg: bool = False, max_groups: int = 6):
    """(rewards float64 ndarray, group ids int ndarray): shuffled groups with arbitrary integer ids."""
    sizes = draw(st.lists(st.integers(min_size, 5), min_size=1, max_size=max_groups))
    labels = draw(st.lists(st.integers(-1000, 1000), min_size=len(sizes), max_size=len(sizes), unique=True))
    lo = 0 if nonneg else -16
    rewards = []
    for k in sizes:
        if draw(st.booleans()) and k > 1:                     # a zero-variance group
            v = draw(st.integers(lo, 16)) / 8 if grid else draw(st.floats(lo / 8, 2, allow_subnormal=False))
            rewards += [v] * k
        elif grid:
            rewards += [x / 8 for x in draw(st.lists(st.integers(lo, 16), min_size=k, max_size=k))]
        else:
            rewards += draw(st.lists(st.floats(lo / 8, 2, allow_subnormal=False), min_size=k, max_size=k))
    ids = np.repeat(np.array(labels), sizes)
    perm = np.array(draw(st.permutations(range(len(ids)))), dtype=np.int64)
    return np.array(rewards, dtype=np.float64)[perm], ids[perm]


# ----------------------------------------------------------------------------------------------------------
# float64 NumPy reference: a plain loop over groups
# ----------------------------------------------------------------------------------------------------------

def reference(name: str, r: np.ndarray, ids: np.ndarray, eps: float = 1e-6, norm_by_std: bool = True):
    out = np.zeros_like(r)
    for g in dict.fromkeys(ids.tolist()):
        idx = np.flatnonzero(ids == g)
        x = r[idx]
        k = len(x)
        mu = x.mean()
        if name == "grpo":
            if k == 1:
                out[idx] = x / (1 + eps) if norm_by_std else x
            else:
                out[idx] = (x - mu) / (x.std(ddof=1) + eps) if norm_by_std else x - mu
        elif name == "drgrpo":
            out[idx] = x - mu
        elif name == "rloo":
            out[idx] = [x[i] - (x.sum() - x[i]) / (k - 1) for i in range(k)]
        elif name == "maxrl":
            out[idx] = (x - mu) / (mu + eps)
        elif name == "reinforce_pp_baseline":
            out[idx] = x - mu
    if name == "reinforce_pp_baseline":
        sd = out.std(ddof=1) if len(out) > 1 else 0.0
        out = (out - out.mean()) / (sd + eps)
    return out


def run(name, r, ids, dtype=torch.float64, **kw):
    return get_advantage(name)(torch.tensor(r, dtype=dtype), torch.as_tensor(ids), **kw)


# ----------------------------------------------------------------------------------------------------------
# verl parity
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.verl
@given(batches(), st.booleans(), st.sampled_from([torch.float32, torch.float64]), st.integers(1, 6), st.data())
def test_grpo_matches_verl(batch, norm, dtype, t_max, data):
    core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")
    r, ids = batch
    b = len(r)
    lengths = torch.tensor(data.draw(st.lists(st.integers(1, t_max), min_size=b, max_size=b)))
    mask = (torch.arange(t_max)[None, :] < lengths[:, None]).to(dtype)
    rewards = torch.tensor(r, dtype=dtype)
    tok = torch.zeros(b, t_max, dtype=dtype)
    tok[torch.arange(b), lengths - 1] = rewards                           # outcome reward on the last token
    index = np.array([f"uid-{i}" for i in ids]) if data.draw(st.booleans()) else ids
    verl_adv, verl_ret = core_algos.compute_grpo_outcome_advantage(
        tok, mask, index, epsilon=1e-6, norm_adv_by_std_in_grpo=norm)
    ours = get_advantage("grpo")(rewards, index, norm_by_std=norm)
    assert ours.dtype == dtype and verl_adv.dtype == dtype
    ours_tok = ours[:, None] * mask
    counts = np.array([np.sum(ids == g) for g in ids])
    single = torch.from_numpy(counts == 1)
    torch.testing.assert_close(ours_tok[~single], verl_adv[~single], rtol=VERL_RTOL[dtype], atol=VERL_ATOL[dtype])
    torch.testing.assert_close(ours_tok[single], verl_adv[single], rtol=VERL_SINGLETON_RTOL, atol=0)
    if dtype == torch.float32 or not norm:                       # float32: singleton divisor identical
        assert torch.equal(ours_tok[single], verl_adv[single])
    torch.testing.assert_close(verl_ret, verl_adv, rtol=0, atol=0)


@pytest.mark.verl
def test_verl_leaves_rounding_residue_in_constant_groups():
    """A recorded difference: verl's torch.mean leaves ~1e-11 in a constant float64 group of 0.1; we give 0."""
    core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")
    r = torch.tensor([0.1, 0.1, 0.1], dtype=torch.float64)
    verl_adv, _ = core_algos.compute_grpo_outcome_advantage(r[:, None].clone(), torch.ones(3, 1), np.zeros(3))
    assert 0 < verl_adv.abs().max() < 1e-9
    assert torch.equal(get_advantage("grpo")(r, [0, 0, 0]), torch.zeros(3, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------------------
# NumPy reference, dtype, identities
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_matches_numpy_reference(name, data):
    r, ids = data.draw(batches(min_size=2 if name == "rloo" else 1, grid=data.draw(st.booleans()),
                               nonneg=name == "maxrl"))
    kw = {"norm_by_std": data.draw(st.booleans())} if name == "grpo" else {}
    got = run(name, r, ids, **kw).numpy()
    np.testing.assert_allclose(got, reference(name, r, ids, **kw), rtol=REF_RTOL, atol=REF_ATOL)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtype_preserved_and_finite(name, dtype):
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5, 0.5], dtype=dtype)
    a = get_advantage(name)(r, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert a.dtype == dtype and a.shape == (6,) and bool(torch.isfinite(a).all())


@given(batches(min_size=2))
def test_rloo_identity(batch):
    r, ids = batch
    k = np.array([np.sum(ids == g) for g in ids], dtype=np.float64)
    mu = np.array([r[ids == g].mean() for g in ids])
    np.testing.assert_allclose(run("rloo", r, ids).numpy(), k / (k - 1) * (r - mu), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_zero_variance_groups_give_exact_zeros(name):
    # 0.1 three times: the naive mean leaves a rounding residue; constant groups must centre to exact 0.
    r = torch.tensor([0.1, 0.1, 0.1, 0.0, 0.0, 0.7, 0.7, 1e6 + 0.3, 1e6 + 0.3], dtype=torch.float64)
    ids = torch.tensor([5, 5, 5, 2, 2, 9, 9, 4, 4])
    a = get_advantage(name)(r, ids)
    assert torch.equal(a, torch.zeros_like(a)), a


# ----------------------------------------------------------------------------------------------------------
# Invariances
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["grpo", "drgrpo", "rloo", "reinforce_pp_baseline"])
@given(data=st.data())
def test_group_shift_invariance(name, data):
    """Adding c to one group's rewards: A' = R - μ_G is unchanged, so every estimator built on it is too
    (reinforce_pp_baseline included: it whitens A' over the batch). grpo's singletons follow verl's mean-0
    convention (A = R/(1+ε)), so the shifted group is chosen among groups of two or more for grpo."""
    r, ids = data.draw(batches(min_size=2))
    g = data.draw(st.sampled_from(sorted(set(ids.tolist()))))
    c = data.draw(st.integers(-40, 40)) / 4
    shifted = r + c * (ids == g)
    np.testing.assert_allclose(run(name, shifted, ids).numpy(), run(name, r, ids).numpy(), rtol=1e-9, atol=1e-9)


@given(data=st.data())
def test_maxrl_is_scale_not_shift_invariant(data):
    """MaxRL's τ = μ_G: scaling a group by s > 0 leaves A unchanged up to ε; shifting it does not."""
    r, ids = data.draw(batches(min_size=2, nonneg=True))
    g = data.draw(st.sampled_from(sorted(set(ids.tolist()))))
    s = data.draw(st.sampled_from([0.5, 2.0, 4.0]))
    scaled = r * np.where(ids == g, s, 1.0)
    # ε/μ_G enters as a relative change of order 1e-6/μ_G with μ_G ≥ 1/16 (or A = 0 when μ_G = 0).
    np.testing.assert_allclose(run("maxrl", scaled, ids).numpy(), run("maxrl", r, ids).numpy(), rtol=0, atol=1e-4)
    a = run("maxrl", np.array([1.0, 0.0]), [0, 0])
    b = run("maxrl", np.array([2.0, 1.0]), [0, 0])
    assert not torch.allclose(a, b)                       # (1, -1) vs (1/3, -1/3)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_permutation_equivariance(name, data):
    r, ids = data.draw(batches(min_size=2, nonneg=True))
    perm = np.array(data.draw(st.permutations(range(len(r)))), dtype=np.int64)
    np.testing.assert_allclose(run(name, r[perm], ids[perm]).numpy(), run(name, r, ids).numpy()[perm],
                               rtol=1e-12, atol=1e-12)


def test_group_id_forms_agree():
    r = torch.tensor([1.0, 0.0, 0.5, 0.25, 1.0])
    want = get_advantage("grpo")(r, torch.tensor([7, 7, -3, -3, 7]))
    for ids in ([7, 7, -3, -3, 7], np.array(["a", "a", "b", "b", "a"]), np.array([("x",), ("x",), 3, 3, ("x",)],
                                                                              dtype=object)):
        assert torch.equal(get_advantage("grpo")(r, ids), want)


# ----------------------------------------------------------------------------------------------------------
# Errors name the argument
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("rewards, group_ids, kw, word", [
    (torch.ones(2, 2), [0, 0], {}, "rewards"),
    (torch.tensor([1, 0]), [0, 0], {}, "rewards"),
    ([1.0, 0.0], [0, 0], {}, "rewards"),
    (torch.zeros(0), [], {}, "rewards"),
    (torch.tensor([1.0, float("nan")]), [0, 0], {}, "rewards"),
    (torch.tensor([1.0, float("inf")]), [0, 0], {}, "rewards"),
    (torch.tensor([1.0, 0.0]), [0, 0, 1], {}, "group_ids"),
    (torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), {}, "group_ids"),
    (torch.tensor([1.0, 0.0]), torch.zeros(2, 1, dtype=torch.int64), {}, "group_ids"),
    (torch.tensor([1.0, 0.0]), [0, 0], {"epsilon": 0.0}, "epsilon"),
    (torch.tensor([1.0, 0.0]), [0, 0], {"epsilon": float("nan")}, "epsilon"),
])
def test_bad_input_names_argument(name, rewards, group_ids, kw, word):
    with pytest.raises(ValueError, match=word):
        get_advantage(name)(rewards, group_ids, **kw)


def test_estimator_specific_errors_and_registry():
    with pytest.raises(ValueError, match="group_ids"):
        get_advantage("rloo")(torch.tensor([1.0, 0.0, 1.0]), [0, 0, 1])
    with pytest.raises(ValueError, match="rewards"):
        get_advantage("maxrl")(torch.tensor([1.0, -0.5]), [0, 0])
    with pytest.raises(ValueError, match="advantage estimator 'nope'"):
        get_advantage("nope")
    with pytest.raises(ValueError, match="registered twice"):
        register_advantage("grpo")(lambda *a, **k: None)
    assert set(NAMES) == set(ADVANTAGES)
