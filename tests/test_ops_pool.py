"""poolcli.ops.pool (max, min, average and Lp pooling) by role, against tests/reference.py.

- output shape and dtype: the reference's output-size formula, the dtype rules of DESIGN.md;
- values and indices: max/min exactly (bit for bit, NaN included; only the sign of a zero that
  ties with a zero differs from the first-cell rule, see the xfail below), averages exactly for
  integer input and within a rounding bound for float input, Lp exactly where the arithmetic
  is exact and within a rounding bound elsewhere;
- invariants: min <= avg <= max, constant images, indices that point at the value;
- error messages; non-contiguous input; a hypothesis search over small geometries.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from poolcli.ops.pool import avg_pool2d, lp_pool2d, max_pool2d, min_pool2d

DTYPES = ["uint8", "uint16", "float32", "float64"]
SHAPES = [(1, 1), (1, 6), (5, 1), (2, 3), (7, 9), (8, 8)]  # (H, W): 1-pixel and odd sizes
LAYOUTS = ["hw", "hw1", "hw3", "hw4", "nhwc"]  # (H, W), (H, W, C) with C = 1, 3, 4, (2, H, W, 3)

# (kernel_size, stride, padding, dilation, ceil_mode)
GEOMETRIES = [
    (1, None, 0, 1, False),
    (2, None, 0, 1, False),
    (2, 1, 1, 1, True),
    (3, 2, 1, 1, False),
    (3, 1, 1, 1, True),
    (3, 2, 0, 1, True),  # ceil-mode windows that hang over the edge
    ((3, 2), (2, 1), (1, 0), 1, True),
    ((1, 4), (1, 3), (0, 2), 1, True),
    (5, 3, 2, 1, True),
    (2, 1, 1, 2, False),  # dilation: windows wholly in the padding on 1-pixel axes
    (3, 3, 1, 2, True),
    ((2, 3), (1, 2), (1, 1), (3, 2), False),
]
AVG_GEOMETRIES = [g for g in GEOMETRIES if g[3] == 1]
CASES = [(shape, g) for shape in SHAPES for g in GEOMETRIES]


def _gid(geom):
    k, s, p, d, cm = geom
    return f"k{k}-s{s}-p{p}-d{d}-{'ceil' if cm else 'floor'}".replace(" ", "")


def _id(case):
    (h, w), geom = case
    return f"{h}x{w}-{_gid(geom)}"


def image(shape, dtype, seed=0, *, special=True, negative=True):
    """Test data with many ties; floats also hold -0.0 and, with ``special``, NaN and +-inf."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        x = rng.integers(-3 if negative else 0, 4, shape).astype(dtype) / 2
        noise = rng.random(shape) < 0.4
        x[noise] = (rng.standard_normal(int(noise.sum())) * 10).astype(dtype)
        if not negative:
            x = np.abs(x)
        x[rng.random(shape) < 0.1] = -0.0
        if special:
            x[rng.random(shape) < 0.05] = np.nan
            x[rng.random(shape) < 0.03] = np.inf
            x[rng.random(shape) < 0.03] = -np.inf
        return x
    top = int(np.iinfo(dtype).max)
    x = rng.integers(0, top, shape, endpoint=True).astype(dtype)
    ties = rng.random(shape) < 0.5
    x[ties] = rng.choice([0, 1, top - 1, top], int(ties.sum()))
    return x


def layout(h, w, name, dtype, seed=0, **kw):
    shape = {"hw": (h, w), "hw1": (h, w, 1), "hw3": (h, w, 3), "hw4": (h, w, 4),
             "nhwc": (2, h, w, 3)}[name]
    return image(shape, dtype, seed, **kw)


def out_shape(x, oh, ow):
    """The result shape for input ``x``: same layout, the pooled plane ``oh x ow``."""
    return ((oh, ow) + x.shape[2:]) if x.ndim < 4 else (x.shape[0], oh, ow, x.shape[3])


def valid(h, w, k, s, p, d, cm):
    (kh, kw), (ph, pw), (dh, dw) = ref.pair(k), ref.pair(p), ref.pair(d)
    sh, sw = ref.pair(s) if s is not None else (kh, kw)
    oh, ow = ref.output_size(h, kh, sh, ph, dh, cm), ref.output_size(w, kw, sw, pw, dw, cm)
    return oh, ow, oh >= 1 and ow >= 1


def assert_bits_equal(got, want, *, zero_sign=True):
    """Same shape, dtype and bits (floats: NaN where NaN, the same sign of zero unless
    ``zero_sign=False``: see :func:`test_tie_of_signed_zeros_keeps_the_first_sign`)."""
    assert got.shape == want.shape and got.dtype == want.dtype
    if got.dtype.kind == "f":
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        ok = ~np.isnan(got) & ((got != 0) | zero_sign)
        np.testing.assert_array_equal(np.signbit(got[ok]), np.signbit(want[ok]))
    np.testing.assert_array_equal(got, want)


def assert_selected(got, want):
    """Max/min values: bit for bit, except the sign of a zero that tied with a zero."""
    assert_bits_equal(got, want, zero_sign=False)


def assert_within(got, want, bound):
    """``|got - want| <= bound`` elementwise, NaN exactly where the reference has NaN."""
    assert got.shape == want.shape
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    err = np.abs(got.astype(np.float64)[~nan] - want[~nan])
    assert (err <= bound[~nan]).all(), f"max error {err.max()} over bound"


# ------------------------------------------------------------------------ max and min


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_max_min_match_reference(case, dtype):
    (h, w), (k, s, p, d, cm) = case
    oh, ow, ok = valid(h, w, k, s, p, d, cm)
    for seed, name in enumerate(LAYOUTS):
        x = layout(h, w, name, dtype, seed)
        if not ok:
            with pytest.raises(ValueError, match="output size is too small"):
                max_pool2d(x, k, s, p, d, cm)
            continue
        for fn, naive in ((max_pool2d, ref.max_pool2d), (min_pool2d, ref.min_pool2d)):
            want, want_idx = naive(x, k, s, p, d, cm)
            got, idx = fn(x, k, s, p, d, cm, return_indices=True)
            assert got.shape == idx.shape == out_shape(x, oh, ow)
            assert idx.dtype == np.int64
            assert_selected(got, want)
            np.testing.assert_array_equal(idx, want_idx)
            assert_selected(fn(x, k, s, p, d, cm), want)  # same values without indices


def test_window_wholly_in_padding_gives_the_identity_and_pytorchs_index():
    # n=1, k=2, p=1, d=2 reads positions -1 and 1: no real cell (DESIGN.md, max/min)
    x = np.array([[5, 7, 9]], np.uint8)
    got, idx = max_pool2d(x, (2, 1), 1, (1, 0), (2, 1), return_indices=True)
    assert got.tolist() == [[0, 0, 0]] and idx.tolist() == [[3, 4, 5]]  # uint8 min; 1*W + w
    got, idx = min_pool2d(x.astype(np.float32), (2, 1), 1, (1, 0), (2, 1), return_indices=True)
    assert np.isposinf(got).all() and idx.tolist() == [[3, 4, 5]]
    want, want_idx = ref.min_pool2d(x.astype(np.float32), (2, 1), 1, (1, 0), (2, 1))
    assert_bits_equal(got, want)
    np.testing.assert_array_equal(idx, want_idx)


@pytest.mark.xfail(strict=True, reason="a tie of +0.0 and -0.0 reports the sign of the later "
                   "zero (np.maximum keeps its second operand on ties); PyTorch the first's")
@pytest.mark.parametrize("fn", [max_pool2d, min_pool2d])
def test_tie_of_signed_zeros_keeps_the_first_sign(fn):
    x = np.array([[-0.0, 0.0], [0.0, -0.0]], np.float32)
    got, idx = fn(x, (1, 2), return_indices=True)
    assert idx.ravel().tolist() == [0, 2]  # the first cell wins the tie ...
    assert np.signbit(got.ravel()).tolist() == [True, False]  # ... but not its sign


def test_ties_first_cell_and_last_nan():
    x = np.array([[1.0, 3.0, 3.0], [3.0, np.nan, np.nan]], np.float32)
    v, i = max_pool2d(x, (2, 3), return_indices=True)
    assert np.isnan(v[0, 0]) and i[0, 0] == 5  # the window's last NaN
    v, i = max_pool2d(x[:1], (1, 3), return_indices=True)
    assert v[0, 0] == 3 and i[0, 0] == 1  # the first of the tied cells
    np.testing.assert_array_equal(i, ref.max_pool2d(x[:1], (1, 3))[1])


# ----------------------------------------------------------------------------- average


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("geom", AVG_GEOMETRIES, ids=[_gid(g) for g in AVG_GEOMETRIES])
def test_avg_matches_reference(geom, count_include_pad, dtype):
    """Integer input: exact (sums are exact, and one division correctly rounded to float32
    equals the float64 quotient rounded to float32). Float input: sums in the input's precision
    differ from the exact mean by at most (cells - 1) roundings of the running sum plus one of
    the division, and the reference (exactly rounded sum, then division) by two roundings:
    ``(area + 2) * eps * avg(|x|)`` in all."""
    k, s, p, _, cm = geom
    for n_case, (h, w) in enumerate(SHAPES):
        oh, ow, ok = valid(h, w, k, s, p, 1, cm)
        if not ok or ref.pair(p)[0] > ref.pair(k)[0] // 2 or ref.pair(p)[1] > ref.pair(k)[1] // 2:
            continue
        x = layout(h, w, LAYOUTS[n_case % len(LAYOUTS)], dtype, n_case, special=False)
        for divisor in (None, 3, -2):
            want = ref.avg_pool2d(x, k, s, p, cm, count_include_pad, divisor)
            got = avg_pool2d(x, k, s, p, cm, count_include_pad, divisor)
            assert got.shape == out_shape(x, oh, ow)
            assert got.dtype == ref.average_dtype(dtype)
            if x.dtype.kind in "iu":
                np.testing.assert_array_equal(got, want.astype(got.dtype))
                continue
            area = math.prod(ref.pair(k))
            scale = ref.avg_pool2d(np.abs(x), k, s, p, cm, count_include_pad, divisor)
            eps = np.finfo(got.dtype).eps / 2
            assert_within(got, want, (area + 2) * eps * np.abs(scale))


def test_avg_nan_propagates_and_padding_is_zero():
    x = np.ones((3, 3), np.float32)
    x[0, 0] = np.nan
    got = avg_pool2d(x, 3, 1, 1, count_include_pad=True)
    want = ref.avg_pool2d(x, 3, 1, 1, count_include_pad=True)
    assert_within(got, want, np.full(want.shape, 1e-6))
    assert np.isnan(got[:2, :2]).all() and got[2, 2] == np.float32(4 / 9)


# ---------------------------------------------------------------------------------- Lp

LP_GEOMETRIES = [(2, None, False), (3, 2, True), ((1, 3), (1, 2), False), ((3, 2), 1, True)]


def _lp_exact(dtype, p, area):
    """Lp is exact when no step rounds: p = inf (a max of |x|), integer p = 1 sums and uint8
    p = 2 squares (integers below 2**24 in float32), whose square root is correctly rounded."""
    return math.isinf(p) or (dtype.kind in "iu" and (p == 1 or (p == 2 and dtype.itemsize == 1
                                                                and area <= 256)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [1, 2, 3.5, math.inf])
@pytest.mark.parametrize("geom", LP_GEOMETRIES, ids=str)
def test_lp_matches_reference(geom, p, dtype):
    """Elsewhere each |x|**p and the root are within an ulp and the sum of non-negative terms
    within (cells - 1) roundings; the exponent 1/p, rounded to the result's precision, moves
    the root by up to ``|ln(result)|`` roundings more: ``(area + 4 + |ln(result)|) * eps``."""
    k, s, cm = geom
    area = math.prod(ref.pair(k))
    for n_case, (h, w) in enumerate(SHAPES):
        oh, ow, ok = valid(h, w, k, s, 0, 1, cm)
        if not ok:
            continue
        x = layout(h, w, LAYOUTS[n_case % len(LAYOUTS)], dtype, n_case, special=False)
        got, want = lp_pool2d(x, p, k, s, cm), ref.lp_pool2d(x, p, k, s, cm)
        assert got.shape == out_shape(x, oh, ow) and got.dtype == ref.average_dtype(dtype)
        if _lp_exact(x.dtype, p, area):
            np.testing.assert_array_equal(got, want.astype(got.dtype))
        else:
            eps = np.finfo(got.dtype).eps / 2
            with np.errstate(divide="ignore"):
                log = np.where(want > 0, np.abs(np.log(want)), 0)
            assert_within(got, want, (area + 4 + log) * eps * want)


def test_lp_uses_absolute_values():
    x = np.array([[-3.0, 4.0]])
    assert lp_pool2d(x, 2, (1, 2))[0, 0] == 5.0 == ref.lp_pool2d(x, 2, (1, 2))[0, 0]
    assert lp_pool2d(x, 0.5, (1, 2))[0, 0] == pytest.approx(ref.lp_pool2d(x, 0.5, (1, 2))[0, 0])


# ---------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("k,s,cm", [(2, None, False), (3, 2, True), ((2, 3), 1, False)])
def test_min_avg_max_order(dtype, k, s, cm):
    """Without padding every window's average lies between its min and its max (float32 data
    here are halves: sums are exact, so rounding cannot push the mean past the extremes)."""
    x = image((9, 7, 3), dtype, 4, special=False, negative=False)
    if dtype == "float32":
        x = np.round(x * 2) / 2
    lo, hi = min_pool2d(x, k, s, ceil_mode=cm), max_pool2d(x, k, s, ceil_mode=cm)
    mid = avg_pool2d(x, k, s, ceil_mode=cm)
    assert (lo <= mid).all() and (mid <= hi).all()
    assert (lo < hi).any()  # the data are not trivially flat


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p,cm", [(3, 2, 1, True), (2, 1, 0, False), ((3, 1), 2, (1, 0), True)])
def test_constant_image_stays_constant(dtype, k, s, p, cm):
    c = np.array(200, dtype) if np.dtype(dtype).kind in "iu" else np.array(0.75, dtype)
    x = np.full((7, 6, 3), c)
    for y in (max_pool2d(x, k, s, p, ceil_mode=cm), min_pool2d(x, k, s, p, ceil_mode=cm)):
        assert y.dtype == x.dtype and (y == c).all()
    y = avg_pool2d(x, k, s, p, cm, count_include_pad=False)
    assert (y == c).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_indices_point_at_the_values(dtype):
    x = image((2, 9, 8, 3), dtype, 5)
    for fn in (max_pool2d, min_pool2d):
        v, i = fn(x, 3, 2, 1, 1, True, return_indices=True)
        planes = x.reshape(2, 72, 3)
        picked = np.take_along_axis(planes, i.reshape(2, -1, 3), axis=1).reshape(v.shape)
        assert_selected(v, picked)


def test_min_is_max_of_the_negation_without_nan():
    x = image((8, 7, 3), "float64", 6, special=False)
    v, i = min_pool2d(x, 3, 2, 1, return_indices=True)
    nv, ni = max_pool2d(-x, 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(v, -nv)
    np.testing.assert_array_equal(i, ni)


# -------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("call,match", [
    (lambda x: max_pool2d(x, 3, padding=2), r"padding must be at most half the kernel size"),
    (lambda x: max_pool2d(x, 0), r"kernel_size must be >= 1, got 0"),
    (lambda x: max_pool2d(x, 2, stride=(1, 0)), r"stride must be >= 1"),
    (lambda x: min_pool2d(x, 2, padding=-1), r"padding must be >= 0"),
    (lambda x: max_pool2d(x, 2, dilation=0), r"dilation must be >= 1"),
    (lambda x: max_pool2d(x, 7), r"output size is too small: input 5x6 .* gives 0x0"),
    (lambda x: max_pool2d(x, 3, dilation=3), r"output size is too small"),
    (lambda x: avg_pool2d(x, 2, divisor_override=0), r"divisor_override must be non-zero"),
    (lambda x: avg_pool2d(x, (6, 2)), r"output size is too small"),
    (lambda x: lp_pool2d(x, 0, 2), r"norm_type must be > 0, got 0"),
    (lambda x: lp_pool2d(x, float("nan"), 2), r"norm_type must be > 0"),
    (lambda x: max_pool2d(x[None, None], 2), r"x must be \(H, W\), \(H, W, C\) or \(N, H, W, C\)"),
    (lambda x: avg_pool2d(x[0, 0], 1), r"x must be \(H, W\)"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.zeros((5, 6, 3), np.uint8))


@pytest.mark.parametrize("call,match", [
    (lambda x: max_pool2d(x, 2.0), r"kernel_size must be an int or a pair of ints"),
    (lambda x: max_pool2d(x, True), r"kernel_size must be an int or a pair of ints"),
    (lambda x: max_pool2d(x, (2, 2, 2)), r"kernel_size must be an int or a pair"),
    (lambda x: avg_pool2d(x, 2, divisor_override=1.5), r"divisor_override must be an int"),
    (lambda x: lp_pool2d(x, "2", 2), r"norm_type must be a positive number"),
    (lambda x: max_pool2d(x.astype(bool), 2), r"x must have a real numeric dtype"),
])
def test_type_errors(call, match):
    with pytest.raises(TypeError, match=match):
        call(np.zeros((5, 6, 3), np.uint8))


# ------------------------------------------------------------------- non-contiguous input

VIEWS = {
    "transposed": lambda a: a.transpose(1, 0, 2),
    "strided": lambda a: a[::2, 1::3],
    "reversed-channels": lambda a: a[:, ::-1, ::-1],
    "fortran": np.asfortranarray,
    "batch-transposed": lambda a: np.stack([a, a[::-1]]).transpose(0, 2, 1, 3),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("view", VIEWS, ids=str)
def test_non_contiguous_input_gives_the_contiguous_result(view, dtype):
    base = image((13, 17, 4), dtype, 7, special=False)
    x = VIEWS[view](base)
    assert not x.flags.c_contiguous
    c = np.ascontiguousarray(x)
    for fn in (
        lambda a: max_pool2d(a, 3, 2, 1, return_indices=True),
        lambda a: min_pool2d(a, 2, 1, 1, 2, True, return_indices=True),
        lambda a: max_pool2d(a, 2),
        lambda a: avg_pool2d(a, 3, 2, 1, True, False),
        lambda a: lp_pool2d(a, 2, 2, ceil_mode=True),
    ):
        for got, want in zip(_tuple(fn(x)), _tuple(fn(c))):
            assert_bits_equal(got, want)


def _tuple(r):
    return r if isinstance(r, tuple) else (r,)


# ---------------------------------------------------------------------------- hypothesis


@st.composite
def geometries(draw, dilation=True):
    """A valid geometry: each axis at least as long as its dilated kernel minus the padding."""
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilation else (1, 1)
    least = [max(1, d[i] * (k[i] - 1) + 1 - 2 * p[i]) for i in (0, 1)]
    h, w = (draw(st.integers(n, n + 6)) for n in least)
    return h, w, k, s, p, d, draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(g=geometries(), dtype=st.sampled_from(DTYPES), c=st.integers(1, 3),
       seed=st.integers(0, 2**16), kind=st.sampled_from(["max", "min"]))
def test_hypothesis_select_matches_reference(g, dtype, c, seed, kind):
    h, w, k, s, p, d, cm = g
    x = image((h, w, c), dtype, seed)
    fn, naive = (max_pool2d, ref.max_pool2d) if kind == "max" else (min_pool2d, ref.min_pool2d)
    want, want_idx = naive(x, k, s, p, d, cm)
    got, idx = fn(x, k, s, p, d, cm, return_indices=True)
    assert_selected(got, want)
    np.testing.assert_array_equal(idx, want_idx)


@settings(max_examples=100, deadline=None)
@given(g=geometries(dilation=False), dtype=st.sampled_from(["uint8", "uint16"]),
       cip=st.booleans(), seed=st.integers(0, 2**16))
def test_hypothesis_integer_avg_is_exact(g, dtype, cip, seed):
    h, w, k, s, p, _, cm = g
    x = image((h, w, 2), dtype, seed)
    got = avg_pool2d(x, k, s, p, cm, cip)
    np.testing.assert_array_equal(got, ref.avg_pool2d(x, k, s, p, cm, cip).astype(np.float32))
