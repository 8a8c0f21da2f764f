r"""Advantage estimators over the whole range of the rewards' dtype: finite results or a ``ValueError``.

The contract (``fiberlab.gpu.advantages``, module docstring, "Range"): for every finite input representable in
float16, bfloat16, float32 or float64, each estimator returns finite values equal (to round-off) to the exact
formula, or, where the exact result is beyond the dtype's largest finite value, raises a ``ValueError`` naming
``rewards``. Never NaN, never inf, never a silent zero.

* Regressions: the examples of the finding (float16 ``[0, 600]``; float32 × 1e20; float16 × 6e4; rewards
  whose ``R - μ`` exceeds float16/float32/float64; a ``maxrl`` group of more than 65 520 members in float16).
* Hypothesis, per dtype × estimator: rewards drawn bit-exactly in the dtype (sign, full mantissa, any exponent
  from the smallest normal up to the largest), groups of 1–6 sharing or mixing magnitudes, constant and
  near-constant groups, groups of ± the largest values; ε from 1e-30 to 1e30. The reference is the plain
  textbook formula, in NumPy float64 for the 16/32-bit dtypes (their values, group sums and squares all fit
  float64: |R| ≤ 3.4e38, |R|² ≤ 1.2e77, 6·|R| finite; the smallest normal 1.2e-38 squares to 1.4e-76, still
  normal) and in mpmath at 160 bits for float64 inputs (whose sums and squares overflow float64).

Tolerance. With :math:`u_w` the unit round-off of the arithmetic dtype (float32 for half inputs, else the
input's) and :math:`u_d` that of the output dtype, a result :math:`A_i` of a group (or, for
``reinforce_pp_baseline``, a batch) of :math:`n` members with largest reference magnitude :math:`M` satisfies

.. math:: |A_i - A_i^{\rm ref}| \le u_d |A_i^{\rm ref}| + c_n u_w M + \mathrm{sub}_d,\qquad
          c_n = 4(n+2)(1+\sqrt n) + 8

where the implementation's scaling by a power of two is exact, the pivot-centred :math:`R-\mu` has error at
most :math:`2(n+2)u_w\max_j|R_j-\mu|` (``n`` additions, one division, one subtraction, and
:math:`|d_i| \le 2\max|c|` about the pivot), the Bessel std inherits that times :math:`\sqrt n` relative to
:math:`\|c\|`, and a few further roundings (the divisor, ``K/(K-1)``, ``maxrl``'s plain mean of terms ≥ 0
with relative error :math:`(n+1)u_w`) stay under :math:`c_n u_w` — about twice the bound. (Observed over
30 000 examples: at most :math:`3.3\,u_w M` beyond the final rounding.) The final
rounding into the output dtype is :math:`u_d|A|` for a normal result and at most half the smallest subnormal
:math:`\mathrm{sub}_d` below that. Overflow is IEEE's: a result rounds to inf iff its magnitude reaches
:math:`T = \max + \tfrac12\mathrm{ulp}(\max)`; within the error bound of :math:`T` either outcome is
accepted.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fiberlab.gpu.advantages import get_advantage

NAMES = ("grpo", "drgrpo", "rloo", "maxrl", "reinforce_pp_baseline")
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
EPS = 1e-6

MP = mpmath.MPContext()
MP.prec = 160

#: (precision p with the implicit bit, exponent of the smallest normal, exponent of the largest finite value)
FORMAT = {torch.float16: (11, -14, 15), torch.bfloat16: (8, -126, 127), torch.float32: (24, -126, 127),
          torch.float64: (53, -1022, 1023)}


def wide(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def smallest_subnormal(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).tiny * torch.finfo(dtype).eps


def overflow_threshold(dtype: torch.dtype):
    """T = max + ulp(max)/2 (exact, in mpmath): round-to-nearest gives inf from T on."""
    p, _, emax = FORMAT[dtype]
    return MP.mpf(torch.finfo(dtype).max) + MP.ldexp(1, emax - p)


def c_n(n: int) -> float:
    return 4 * (n + 2) * (1 + math.sqrt(n)) + 8


# ----------------------------------------------------------------------------------------------------------
# The reference: the textbook formulas, a plain loop over groups
# ----------------------------------------------------------------------------------------------------------

def reference(name: str, x: list, ids: list[int], *, norm_by_std: bool = True, eps: float = EPS) -> list:
    """A_i for rewards ``x`` (NumPy float64 or mpmath numbers); ``sqrt`` picked from the number type."""
    sqrt = MP.sqrt if isinstance(x[0], mpmath.mpf) else np.sqrt
    zero = x[0] * 0
    out = [zero] * len(x)
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(ids):
        groups.setdefault(g, []).append(i)
    for idx in groups.values():
        xs = [x[i] for i in idx]
        k = len(xs)
        mu = sum(xs, zero) / k
        if name == "grpo" and k == 1:
            vals = [xs[0] / (1 + eps)] if norm_by_std else [xs[0]]
        elif name == "grpo" and norm_by_std:
            sd = sqrt(sum(((v - mu) * (v - mu) for v in xs), zero) / (k - 1))
            vals = [(v - mu) / (sd + eps) for v in xs]
        elif name in ("grpo", "drgrpo", "reinforce_pp_baseline"):
            vals = [v - mu for v in xs]
        elif name == "rloo":
            total = sum(xs, zero)
            vals = [v - (total - v) / (k - 1) for v in xs]
        elif name == "maxrl":
            vals = [(v - mu) / (mu + eps) for v in xs]
        for i, v in zip(idx, vals):
            out[i] = v
    if name == "reinforce_pp_baseline":
        b = len(out)
        mean = sum(out, zero) / b
        sd = sqrt(sum(((v - mean) * (v - mean) for v in out), zero) / max(b - 1, 1))
        out = [(v - mean) / (sd + eps) for v in out]
    return out


def exact_numbers(rewards: torch.Tensor) -> list:
    """The rewards' exact values: NumPy float64 for the 16/32-bit dtypes, mpmath for float64."""
    vals = rewards.to(torch.float64).tolist()
    return [MP.mpf(v) for v in vals] if rewards.dtype == torch.float64 else [np.float64(v) for v in vals]


def check_against_reference(name: str, rewards: torch.Tensor, ids: list[int], **kw) -> None:
    """Finite and within the module docstring's bound of the reference, or ValueError('rewards') exactly when
    the reference is beyond the dtype (either outcome inside the error band around the threshold)."""
    dtype = rewards.dtype
    ref = [MP.mpf(float(v)) if not isinstance(v, mpmath.mpf) else v for v in
           reference(name, exact_numbers(rewards), ids, **kw)]
    ud, uw, sub = unit_roundoff(dtype), unit_roundoff(wide(dtype)), smallest_subnormal(dtype)
    sets: dict[int, list[int]] = {}
    for i, g in enumerate(ids):
        sets.setdefault(0 if name == "reinforce_pp_baseline" else g, []).append(i)
    abs_tol = [MP.mpf(0)] * len(ref)
    for idx in sets.values():
        m = max(abs(ref[i]) for i in idx)
        for i in idx:
            abs_tol[i] = ud * abs(ref[i]) + c_n(len(idx)) * uw * m + sub
    t = overflow_threshold(dtype)
    must_raise = any(abs(r) - tol > t for r, tol in zip(ref, abs_tol))
    may_raise = must_raise or any(abs(r) + tol >= t for r, tol in zip(ref, abs_tol))
    est_kw = {("epsilon" if k == "eps" else k): v for k, v in kw.items()}
    try:
        got = get_advantage(name)(rewards, torch.tensor(ids), **est_kw)
    except ValueError as exc:
        assert may_raise, f"{name} raised for a representable result: {exc}"
        assert "rewards" in str(exc)
        return
    assert not must_raise, f"{name} returned {got} for a result beyond {dtype}"
    assert got.dtype == dtype and bool(torch.isfinite(got).all()), got
    g64 = got.to(torch.float64).tolist()
    for i, (a, r, tol) in enumerate(zip(g64, ref, abs_tol)):
        assert abs(MP.mpf(a) - r) <= tol, (name, dtype, i, a, float(r), float(tol), rewards, ids)


# ----------------------------------------------------------------------------------------------------------
# Regressions: the finding's examples
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("top", [300.0, 600.0, 65504.0])
def test_float16_pair_standardises_to_one_over_root_two(top):
    a = get_advantage("grpo")(torch.tensor([0.0, top], dtype=torch.float16), [0, 0])
    assert a.dtype == torch.float16
    # σ = top/√2, so A = ±(top/2)/(σ + ε) = ±0.70710678·(1 - ε/σ); float16 rounds within u = 2^-11 of it.
    want = 1 / math.sqrt(2) * (top / math.sqrt(2)) / (top / math.sqrt(2) + EPS)
    np.testing.assert_allclose(a.double().numpy(), [-want, want], rtol=2.0 ** -11, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_float32_scaled_by_1e20_matches_unscaled(name):
    base = torch.tensor([0.0, 1.0, 0.5, 0.25, 1.0, 0.0, 0.75, 0.75], dtype=torch.float32)
    ids = [0, 0, 0, 0, 1, 1, 2, 2]
    scaled = base * 1e20
    got = get_advantage(name)(scaled, ids)
    assert bool(torch.isfinite(got).all())
    factor = 1e20 if name in ("drgrpo", "rloo") else 1.0   # grpo/maxrl/reinforce_pp: scale-free up to ε
    want = get_advantage(name)(base.double(), ids).numpy() * factor
    # float32(k/8·1e20) is 1e20·k/8 within u = 2^-24 relative; that (amplified by at most a few), and the
    # float32 arithmetic (this module's c_n·u bound: c_4 = 80 for a group of 4, c_8 = 161 for the batch of 8,
    # 161·2^-24 < 2^-16) stay below 2^-15 of the largest |A|. ε enters as ε/σ ≤ 1e-6/0.1 in the unscaled
    # reference, hence the atol floor 1e-5·max.
    scale = np.abs(want).max()
    np.testing.assert_allclose(got.double().numpy(), want, rtol=2.0 ** -15, atol=max(2.0 ** -15, 1e-5) * scale)
    # and against the float64 reference of the scaled rewards themselves
    check_against_reference(name, scaled, ids)


def test_reinforce_pp_float32_large_rewards_not_zero():
    a = get_advantage("reinforce_pp_baseline")(torch.tensor([0.0, 1e20, 3e20, 0.0]), [0, 0, 1, 1])
    assert bool((a != 0).all())
    check_against_reference("reinforce_pp_baseline", torch.tensor([0.0, 1e20, 3e20, 0.0]), [0, 0, 1, 1])


@pytest.mark.parametrize("name", ["grpo", "maxrl", "drgrpo", "rloo", "reinforce_pp_baseline"])
def test_float16_times_6e4_is_finite_and_matches_float64(name):
    r = torch.tensor([0.0, 1.0, 0.5, 0.25], dtype=torch.float16) * 6e4
    ids = [0, 0, 0, 0]
    got = get_advantage(name)(r, ids)
    assert got.dtype == torch.float16 and bool(torch.isfinite(got).all()), got
    ref = np.array(reference(name, [np.float64(v) for v in r.double().tolist()], ids), dtype=np.float64)
    # float16 round-off u = 2^-11 of each value, plus the float32 arithmetic (c_4·2^-24 of the largest).
    tol = 2.0 ** -11 * np.abs(ref) + c_n(4) * 2.0 ** -24 * np.abs(ref).max()
    assert np.all(np.abs(got.double().numpy() - ref) <= tol), (got, ref)
    check_against_reference(name, r, ids)


@pytest.mark.parametrize("name, kw, rewards, dtype", [
    ("drgrpo", {}, [65504.0, -65504.0, -65504.0, -65504.0], torch.float16),   # R - μ = 98256
    ("grpo", {"norm_by_std": False}, [65504.0, -65504.0, -65504.0, -65504.0], torch.float16),
    ("rloo", {}, [65504.0, -65504.0], torch.float16),                          # 2·65504
    ("rloo", {}, [3.0e38, -3.0e38], torch.bfloat16),
    ("drgrpo", {}, [3.4e38, -3.4e38, -3.4e38], torch.float32),
    ("drgrpo", {}, [1.7e308, -1.7e308, -1.7e308], torch.float64),
    ("rloo", {}, [1.7e308, -1.7e308, 0.0], torch.float64),
])
def test_beyond_the_dtype_raises_naming_rewards(name, kw, rewards, dtype):
    with pytest.raises(ValueError, match="rewards"):
        get_advantage(name)(torch.tensor(rewards, dtype=dtype), [0] * len(rewards), **kw)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_largest_magnitudes_that_fit_are_returned(dtype):
    top = torch.finfo(dtype).max
    r = torch.tensor([top, -top], dtype=dtype)
    assert torch.equal(get_advantage("drgrpo")(r, [0, 0]), r)                 # R - μ = ±max exactly
    a = get_advantage("grpo")(r, [0, 0])
    assert bool(torch.isfinite(a).all()) and abs(float(a[0]) - 1 / math.sqrt(2)) <= 2 * torch.finfo(dtype).eps


def test_maxrl_beyond_float16_in_a_huge_group():
    """|maxrl| ≤ K - 1 for rewards ≥ 0, so float16 overflows only for groups of more than 65 520 members:
    one reward 65504 among 69 999 zeros gives A ≈ 69 999 > 65504. A group of 60 001 gives 60 000 (finite; its
    count is exact in float32, whereas a float16 count stops at 2048). The centred values sum K float32 terms
    one by one (``index_add_``): their error bound is K·u_w (3.6e-3 here) of the group's largest |A|, on top
    of float16's u_d. (That bound is all the zeros' A ≈ -1 get here: about ±210.)"""
    for k, raises in ((70_000, True), (60_001, False)):
        r = torch.zeros(k, dtype=torch.float16)
        r[0] = 65504.0
        ids = torch.zeros(k, dtype=torch.int64)
        if raises:
            with pytest.raises(ValueError, match="rewards"):
                get_advantage("maxrl")(r, ids)
        else:
            a = get_advantage("maxrl")(r, ids)
            want = (65504.0 - 65504.0 / k) / (65504.0 / k + EPS)
            assert bool(torch.isfinite(a).all())
            assert abs(float(a[0]) - want) <= (2.0 ** -11 + k * 2.0 ** -24) * want


def test_tiny_rewards_are_standardised_not_divided_by_epsilon_alone():
    """The smallest normals: their variance underflows unscaled, leaving A = (R - μ)/ε; scaled it is exact."""
    for dtype in DTYPES:
        tiny = torch.finfo(dtype).tiny
        r = torch.tensor([tiny, 2 * tiny, 3 * tiny], dtype=dtype)
        check_against_reference("grpo", r, [0, 0, 0])
        check_against_reference("reinforce_pp_baseline", r, [0, 0, 1])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_groups_at_the_extremes_give_exact_zeros(name, dtype):
    fi = torch.finfo(dtype)
    r = torch.tensor([fi.max] * 3 + [fi.tiny] * 2 + [0.0] * 2, dtype=dtype)
    a = get_advantage(name)(r, [0, 0, 0, 1, 1, 2, 2])
    assert torch.equal(a, torch.zeros_like(a)), a


# ----------------------------------------------------------------------------------------------------------
# Hypothesis: the whole range of each dtype
# ----------------------------------------------------------------------------------------------------------

@st.composite
def representable(draw, dtype: torch.dtype, exponent: st.SearchStrategy, sign: bool):
    """±(2^(p-1) + m)·2^(e-p+1): every normal value of ``dtype`` with exponent drawn from ``exponent``."""
    p, _, _ = FORMAT[dtype]
    m = draw(st.integers(0, 2 ** (p - 1) - 1))
    e = draw(exponent)
    v = math.ldexp(2 ** (p - 1) + m, e - p + 1)
    return -v if sign and draw(st.booleans()) else v


@st.composite
def range_batches(draw, dtype: torch.dtype, min_size: int, signed: bool):
    """(rewards in ``dtype``, ids): up to 6 groups of ``min_size``–6 members, shuffled; each group centred on
    its own exponent (anywhere from the smallest normal to the largest, or at either end), members at it, near
    it, anywhere, zero, or the group constant, near-constant (a few ulps apart) or made of ± the largest
    finite values."""
    p, emin, emax = FORMAT[dtype]
    sizes = draw(st.lists(st.integers(min_size, 6), min_size=1, max_size=6))
    values: list[float] = []
    for k in sizes:
        # the exponent anywhere, or at either end of the range (where overflow and underflow live)
        e0 = draw(st.one_of(st.integers(emin, emax), st.integers(emax - 2, emax), st.integers(emin, emin + 2)))
        kind = draw(st.sampled_from(["same", "near", "mixed", "constant", "ulps", "largest"]))
        if kind == "largest":                             # ± the largest few values: R - μ often overflows
            values += [(-1 if signed and draw(st.booleans()) else 1)
                       * math.ldexp(2 ** p - 1 - draw(st.integers(0, 3)), emax - p + 1) for _ in range(k)]
        elif kind == "constant":
            values += [draw(representable(dtype, st.just(e0), signed))] * k
        elif kind == "ulps":
            base = draw(st.integers(0, 2 ** (p - 1) - 4))
            sgn = -1 if signed and draw(st.booleans()) else 1
            values += [sgn * math.ldexp(2 ** (p - 1) + base + draw(st.integers(0, 3)), e0 - p + 1)
                       for _ in range(k)]
        else:
            exponents = {"same": st.just(e0), "near": st.integers(max(emin, e0 - 3), e0),
                         "mixed": st.integers(emin, emax)}[kind]
            for _ in range(k):
                if draw(st.integers(0, 9)) == 0:
                    values.append(0.0)
                else:
                    values.append(draw(representable(dtype, exponents, signed)))
    ids = [g for g, k in enumerate(sizes) for _ in range(k)]
    perm = draw(st.permutations(range(len(ids))))
    rewards = torch.tensor([values[i] for i in perm], dtype=torch.float64).to(dtype)
    assert rewards.to(torch.float64).tolist() == [values[i] for i in perm]      # drawn bit-exactly
    return rewards, [ids[i] for i in perm]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_whole_range_finite_and_exact_or_valueerror(name, dtype, data):
    rewards, ids = data.draw(range_batches(dtype, min_size=2 if name == "rloo" else 1, signed=name != "maxrl"))
    kw = {"norm_by_std": data.draw(st.booleans())} if name == "grpo" else {}
    # ε: the default, or one that dominates σ for most rewards drawn; the float32 arithmetic holds float32(ε),
    # within u_w of ε, whose effect on A (at most u_w·|A|) the tolerance covers.
    kw["eps"] = data.draw(st.sampled_from([EPS, 1e-30, 1.0, 1e30]))
    check_against_reference(name, rewards, ids, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
def test_epsilon_beyond_the_arithmetic_dtype_names_epsilon(dtype):
    r = torch.tensor([1.0, 0.0], dtype=dtype)
    big = 1e39 if dtype != torch.float64 else None             # float32 arithmetic for half and float32 rewards
    if big is not None:
        with pytest.raises(ValueError, match="epsilon"):
            get_advantage("grpo")(r, [0, 0], epsilon=big)
    assert bool(torch.isfinite(get_advantage("grpo")(r, [0, 0], epsilon=3e38)).all())
