"""poolcli.ops.adaptive (adaptive and global average/max pooling) by role, against
tests/reference.py.

- output shape and dtype for sizes smaller than, equal to and larger than the input;
- values and indices: max exactly (NaN and the last-NaN index included), averages exactly for
  integer input and within a rounding bound for float input, over cases chosen to run every
  path of the engine (uniform, periodic, irregular, long and short windows; the cases are
  checked to reach them);
- invariants: same size is the identity, constant images, max >= mean, 1x1 is global pooling;
- error messages; non-contiguous input; a hypothesis search over small sizes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from poolcli.ops.adaptive import (
    adaptive_avg_pool2d,
    adaptive_max_pool2d,
    global_avg_pool2d,
    global_max_pool2d,
)
from test_ops_pool import assert_bits_equal, assert_selected, assert_within, image, out_shape

DTYPES = ["uint8", "uint16", "float32", "float64"]

# ((H, W, C), (oh, ow)) and the engine path each is here for
CASES = [
    ((8, 12, 3), (4, 3)),  # uniform windows: the fixed-window engines
    ((9, 7, 2), (4, 5)),  # short irregular windows, tap by tap
    ((64, 80, 3), (20, 25)),  # periodic rows (residue classes), folded columns
    ((40, 200, 2), (16, 90)),  # periodic columns: sliding sums picked per class
    ((70, 70, 1), (65, 65)),  # the same with one channel
    ((30, 97, 1), (7, 70)),  # slabs of rows; irregular columns picked by take
    ((50, 45, 3), (3, 4)),  # a few long windows: slabs, folds, searched winners
    ((150, 20, 2), (2, 3)),  # float32 windows of more than 64 rows: float64 blocks
    ((64, 10, 2), (5, 7)),  # long rows, short columns
    ((10, 70, 2), (7, 5)),  # short rows, long (folded) columns
    ((5, 7, 3), (11, 16)),  # larger than the input: overlapping windows of 1-2 cells
    ((6, 70, 2), (4, 100)),  # larger, more than 64 periodic columns: one-cell windows too
    ((5, 67, 1), (3, 101)),  # the same, irregular
    ((1, 1, 3), (3, 2)),  # one pixel, spread out
    ((1, 9, 1), (1, 4)),
    ((7, 9, 2), (None, 4)),  # None keeps that axis
]
# Long windows on both axes and more than 4096 (window, channel) pairs: per-row winners.
BIG = ((232, 235, 4), (33, 33))


def _sizes(case):
    (h, w, _), (oh, ow) = case
    return (h if oh is None else oh), (w if ow is None else ow)


def _id(case):
    (h, w, c), (oh, ow) = case
    return f"{h}x{w}x{c}-to-{oh}x{ow}"


def _check_avg(x, size, want=None):
    """Integer input: exact (exact sums, one correctly rounded division). Float input: at most
    (cells - 1) roundings of the sum, one of the division and two of the reference:
    ``(cells + 2) * eps * mean(|x|)``."""
    got = adaptive_avg_pool2d(x, size)
    want = ref.adaptive_avg_pool2d(x, size) if want is None else want
    assert got.dtype == ref.average_dtype(x.dtype)
    if x.dtype.kind in "iu":
        np.testing.assert_array_equal(got, want.astype(got.dtype))
        return got
    h, w = ref.batch(x)[0].shape[1:3]
    oh, ow = want.shape[-3:-1] if x.ndim > 2 else want.shape
    cells = (-(-h // oh) + 1) * (-(-w // ow) + 1)
    eps = np.finfo(got.dtype).eps / 2
    assert_within(got, want, (cells + 2) * eps * ref.adaptive_avg_pool2d(np.abs(x), size))
    return got


def _check_max(x, size):
    want, want_idx = ref.adaptive_max_pool2d(x, size)
    got, idx = adaptive_max_pool2d(x, size, return_indices=True)
    assert idx.dtype == np.int64 and got.shape == idx.shape == want.shape
    assert_selected(got, want)
    np.testing.assert_array_equal(idx, want_idx)
    assert_selected(adaptive_max_pool2d(x, size), want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_adaptive_matches_reference(case, dtype):
    (h, w, c), size = case
    oh, ow = _sizes(case)
    plain = image((h, w, c), dtype, 1, special=False)
    got = _check_avg(plain, size)
    assert got.shape == (oh, ow, c)
    _check_max(plain, size)
    _check_max(image((h, w, c), dtype, seed=CASES.index(case)), size)  # NaN and +-inf too


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_long_windows_on_both_axes_and_many_of_them(dtype):
    (h, w, c), size = BIG
    _check_max(image((h, w, c), dtype, 3), size)
    _check_avg(image((h, w, c), dtype, 4, special=False), size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6, 7), (6, 7, 1), (2, 6, 7, 3), (1, 5, 4, 4)], ids=str)
@pytest.mark.parametrize("size", [(3, 2), (4, 9), 1], ids=str)
def test_layouts(shape, size, dtype):
    x = image(shape, dtype, 2)
    oh, ow = ref.pair(size)
    _check_max(x, size)
    got = _check_avg(image(shape, dtype, 5, special=False), size)
    assert got.shape == out_shape(x, oh, ow)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 1), (1, 6, 2), (2, 7, 9, 4)], ids=str)
def test_global_matches_reference(shape, dtype):
    x = image(shape, dtype, 6)
    want, want_idx = ref.global_max_pool2d(x)
    got, idx = global_max_pool2d(x, return_indices=True)
    assert got.shape == out_shape(x, 1, 1)
    assert_selected(got, want)
    np.testing.assert_array_equal(idx, want_idx)
    assert_selected(global_max_pool2d(x), want)
    y = image(shape, dtype, 7, special=False)
    got = global_avg_pool2d(y)
    assert got.shape == out_shape(y, 1, 1)
    _check_avg(y, 1, ref.global_avg_pool2d(y))
    assert_bits_equal(got, adaptive_avg_pool2d(y, 1))


def test_last_nan_and_first_tie():
    x = np.array([[1.0, np.nan, 2.0], [np.nan, 2.0, 0.0]], np.float32)
    v, i = adaptive_max_pool2d(x, (1, 2), return_indices=True)  # windows [0, 2) and [1, 3)
    assert np.isnan(v).all() and i.tolist() == [[3, 1]]
    v, i = global_max_pool2d(np.nan_to_num(x, nan=-1), return_indices=True)
    assert v[0, 0] == 2 and i[0, 0] == 2


def test_cases_cover_every_engine_path():
    """The cases above reach each path of the adaptive engine (see poolcli/ops/_adaptive.py),
    so that the fast paths are compared with the reference, not only with each other."""
    from poolcli.ops import _adaptive as engine

    def windows(n, out):
        bounds = [ref.adaptive_window(i, n, out) for i in range(out)]
        return engine._Windows([b[0] for b in bounds], [b[1] for b in bounds], n)

    reached = set()
    for case in CASES + [BIG]:
        (h, w, c), _ = case
        oh, ow = _sizes(case)
        wh, ww = windows(h, oh), windows(w, ow)
        if wh.fixed and ww.fixed:
            reached.add("uniform")
            continue
        reached.add("periodic rows" if wh.period else "slab rows" if wh.lmax > 3 else
                    "short rows")
        if ww.fixed is None:
            reached.add("folded columns" if ow <= 64 else
                        "periodic columns" if ww.period else "irregular columns")
        if wh.long and ww.long:
            reached.add("searched" if oh * ow * c <= 4096 else "per-row winners, long")
        elif wh.long or ww.long:
            reached.add("per-row winners")
        else:
            reached.add("tap by tap")
        if h > 64 and wh.lmax > 64:
            reached.add("float64 blocks")
    assert reached == {"uniform", "periodic rows", "slab rows", "short rows", "folded columns",
                       "periodic columns", "irregular columns", "searched",
                       "per-row winners, long", "per-row winners", "tap by tap",
                       "float64 blocks"}


# ---------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_size_is_the_identity(dtype):
    x = image((5, 7, 3), dtype, 8)
    v, i = adaptive_max_pool2d(x, (5, 7), return_indices=True)
    assert_bits_equal(v, x)
    np.testing.assert_array_equal(i, np.broadcast_to(np.arange(35).reshape(5, 7, 1), x.shape))
    y = image((5, 7, 3), dtype, 9, special=False)
    want = y.astype(ref.average_dtype(dtype))
    np.testing.assert_array_equal(adaptive_avg_pool2d(y, (5, 7)), want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [(1, 1), (3, 4), (7, 7), (13, 20), (40, 2)], ids=str)
def test_constant_image_stays_constant(size, dtype):
    c = np.array(200 if np.dtype(dtype).kind in "iu" else 0.75, dtype)
    x = np.full((9, 11, 3), c)
    assert (adaptive_max_pool2d(x, size) == c).all()
    assert (adaptive_avg_pool2d(x, size) == c).all()


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float64"])
@pytest.mark.parametrize("size", [(2, 3), (6, 5), (17, 4)], ids=str)
def test_max_is_at_least_the_mean(size, dtype):
    """Integer sums are exact, and float64 means of these values round far inside the max."""
    x = image((12, 10, 3), dtype, 10, special=False)
    assert (adaptive_max_pool2d(x, size) >= adaptive_avg_pool2d(x, size)).all()


# -------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("call,match", [
    (lambda x: adaptive_avg_pool2d(x, 0), r"output_size must be positive ints \(or None\), got 0"),
    (lambda x: adaptive_max_pool2d(x, (2, -1)), r"output_size must be positive ints"),
    (lambda x: adaptive_max_pool2d(x, (2, 2.5)), r"output_size must be positive ints"),
    (lambda x: adaptive_avg_pool2d(x[:0], 2), r"input plane must be non-empty, got 0x6"),
    (lambda x: adaptive_max_pool2d(x[:, :0], (2, None)), r"input plane must be non-empty"),
    (lambda x: global_avg_pool2d(x[:, :0]), r"input plane must be non-empty, got 5x0"),
    (lambda x: global_max_pool2d(x[:0], return_indices=True), r"input plane must be non-empty"),
    (lambda x: adaptive_avg_pool2d(x[0, 0], 1), r"x must be \(H, W\), \(H, W, C\) or \(N, H, W"),
    (lambda x: global_max_pool2d(x[None, None]), r"x must be \(H, W\)"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.zeros((5, 6, 3), np.uint8))


@pytest.mark.parametrize("size", [True, 2.0, (1, 2, 3), "a", None], ids=repr)
def test_output_size_type_errors(size):
    with pytest.raises(TypeError, match=r"output_size must be an int or a pair"):
        adaptive_avg_pool2d(np.zeros((5, 6)), size)


# ------------------------------------------------------------------- non-contiguous input

VIEWS = {
    "transposed": lambda a: a.transpose(1, 0, 2),
    "strided": lambda a: a[::2, 1::3],
    "reversed-channels": lambda a: a[:, ::-1, ::-1],
    "fortran": np.asfortranarray,
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("view", VIEWS, ids=str)
@pytest.mark.parametrize("size", [(7, 5), (3, 30), (20, 20), (2, 2)], ids=str)
def test_non_contiguous_input_gives_the_contiguous_result(size, view, dtype):
    x = VIEWS[view](image((40, 60, 3), dtype, 11))
    assert not x.flags.c_contiguous
    c = np.ascontiguousarray(x)
    for fn in (lambda a: adaptive_max_pool2d(a, size, return_indices=True),
               lambda a: adaptive_avg_pool2d(a, size), lambda a: global_max_pool2d(a, True),
               lambda a: global_avg_pool2d(a)):
        got, want = fn(x), fn(c)
        for g, w in zip(got if isinstance(got, tuple) else (got,),
                        want if isinstance(want, tuple) else (want,)):
            assert_bits_equal(g, w)


# ---------------------------------------------------------------------------- hypothesis


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), c=st.integers(1, 3),
       oh=st.integers(1, 25), ow=st.integers(1, 25), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_hypothesis_matches_reference(h, w, c, oh, ow, dtype, seed):
    _check_max(image((h, w, c), dtype, seed), (oh, ow))
    _check_avg(image((h, w, c), dtype, seed, special=False), (oh, ow))
