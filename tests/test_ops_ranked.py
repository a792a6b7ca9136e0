"""Tests for poolcli.ops.ranked: K-max pooling, dynamic k and sort pooling.

References, by role:
- naive float64 loop references (Python's stable ``sorted`` per row / per window),
- identities (one weight = max pooling, equal weights = average pooling),
- invariants (hypothesis), hand-worked tables, error messages, and the doctests.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference as ref
from poolcli.ops import ranked as ranked_module
from poolcli.ops.pool import avg_pool2d, max_pool2d, min_pool2d
from poolcli.ops.ranked import DEFAULT_SORT_WEIGHTS, dynamic_k, kmax_pool, sort_pool2d

DTYPES = [np.uint8, np.uint16, np.float32, np.float64]
CHANNELS = [1, 3, 4]


def _as4(x):
    x = np.asarray(x)
    return x[None, :, :, None] if x.ndim == 2 else (x[None] if x.ndim == 3 else x)


def _restore(like, y):
    return y[0, :, :, 0] if np.ndim(like) == 2 else (y[0] if np.ndim(like) == 3 else y)


def _rank_key(v):
    """Descending key: NaN first (largest), then by value; Python ints for exact integers."""
    if isinstance(v, float) and math.isnan(v):
        return (0, 0)
    return (1, -v)


def _py(v):
    return float(v) if isinstance(v, (float, np.floating)) else int(v)


def _tied_data(shape, dtype, seed=0, nan=False):
    """Few distinct values (many ties), including the dtype's extremes."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        x = rng.integers(0, 5, size=shape).astype(dtype) - np.asarray(1.5, dtype)
        if nan:
            x[rng.random(shape) < 0.1] = np.nan
        return x
    info = np.iinfo(dtype)
    choices = np.array([info.min, info.min + 1, 7, info.max - 1, info.max], dtype=dtype)
    return choices[rng.integers(0, 5, size=shape)]


# --------------------------------------------------------------------------- K-max


def naive_kmax(x, k, axis):
    x4 = _as4(x)
    n, h, w, c = x4.shape
    ax = 1 + axis
    length = x4.shape[ax]
    out_shape = list(x4.shape)
    out_shape[ax] = k
    values = np.zeros(out_shape, dtype=x4.dtype)
    index = np.zeros(out_shape, dtype=np.int64)
    for b in range(n):
        for line in range(x4.shape[2 if axis == 0 else 1]):
            for ch in range(c):
                seq = [
                    _py(x4[b, pos, line, ch] if axis == 0 else x4[b, line, pos, ch])
                    for pos in range(length)
                ]
                best = sorted(range(length), key=lambda i: _rank_key(seq[i]))[:k]  # stable
                for slot, pos in enumerate(sorted(best)):
                    if axis == 0:
                        values[b, slot, line, ch] = x4[b, pos, line, ch]
                        index[b, slot, line, ch] = pos * w + line
                    else:
                        values[b, line, slot, ch] = x4[b, line, pos, ch]
                        index[b, line, slot, ch] = line * w + pos
    return _restore(x, values), _restore(x, index)


KMAX_SHAPES = [(1, 1), (1, 8), (5, 7), (6, 6), (9, 4)]


@pytest.mark.parametrize("hw", KMAX_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", DTYPES + [np.int8], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("axis", [0, 1])
def test_kmax_matches_stable_reference(hw, dtype, channels, axis):
    x = _tied_data((2, *hw, channels), dtype, seed=hw[0] * 31 + hw[1], nan=True)
    length = hw[axis]
    for k in sorted({1, (length + 1) // 2, length}):
        got, idx = kmax_pool(x, k, axis=axis, return_indices=True)
        want, want_idx = naive_kmax(x, k, axis)
        assert got.dtype == x.dtype and idx.dtype == np.int64
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("axis", [0, 1])
def test_kmax_grey_and_single_image_axis_semantics(axis):
    x = _tied_data((6, 5), np.uint8, seed=3)
    got = kmax_pool(x, 3, axis=axis)
    assert got.shape == ((3, 5) if axis == 0 else (6, 3))
    np.testing.assert_array_equal(got, naive_kmax(x, 3, axis)[0])
    x3 = _tied_data((6, 5, 3), np.float32, seed=4, nan=True)
    got3, idx3 = kmax_pool(x3, 2, axis=axis, return_indices=True)
    assert got3.shape == ((2, 5, 3) if axis == 0 else (6, 2, 3))
    np.testing.assert_array_equal(idx3, naive_kmax(x3, 2, axis)[1])
    # a batch axis does not shift `axis`
    batch = np.stack([x3, x3[::-1]])
    np.testing.assert_array_equal(kmax_pool(batch, 2, axis=axis)[0], got3)


def test_kmax_hand_worked():
    x = np.array([[3, 1, 4, 1, 5, 9, 2, 6]], dtype=np.uint8)
    assert kmax_pool(x, 3).tolist() == [[5, 9, 6]]
    assert kmax_pool(x, 1).tolist() == [[9]]
    assert kmax_pool(x, 8).tolist() == x.tolist()
    # ties: earliest first
    assert kmax_pool(np.array([[2, 1, 2, 2, 1]]), 2, return_indices=True)[1].tolist() == [[0, 2]]
    # unsigned extremes (negation would wrap) and signed minimum
    assert kmax_pool(np.array([[0, 255, 1, 255]], np.uint8), 2).tolist() == [[255, 255]]
    assert kmax_pool(np.array([[-128, 127, -128]], np.int8), 2).tolist() == [[-128, 127]]
    col = np.array([[1], [9], [3], [7]], dtype=np.uint16)
    vals, idx = kmax_pool(col, 2, axis=0, return_indices=True)
    assert vals.tolist() == [[9], [7]] and idx.tolist() == [[1], [3]]


def test_kmax_nan_is_largest():
    x = np.array([[1.0, np.nan, 5.0, np.nan, 4.0]])
    vals, idx = kmax_pool(x, 3, return_indices=True)
    assert idx.tolist() == [[1, 2, 3]]
    assert np.isnan(vals[0, 0]) and vals[0, 1] == 5.0 and np.isnan(vals[0, 2])
    assert kmax_pool(x, 1, return_indices=True)[1].tolist() == [[1]]


def test_kmax_indices_select_values():
    x = _tied_data((7, 9, 3), np.uint16, seed=5)
    for axis in (0, 1):
        vals, idx = kmax_pool(x, 4, axis=axis, return_indices=True)
        plane = x.reshape(-1, 3)
        np.testing.assert_array_equal(
            np.take_along_axis(plane, idx.reshape(-1, 3), axis=0).reshape(vals.shape), vals
        )


def test_kmax_non_contiguous_input():
    x = _tied_data((10, 8, 3), np.float32, seed=6, nan=True)
    view = x[::-1, ::2]
    np.testing.assert_array_equal(kmax_pool(view, 2), kmax_pool(np.ascontiguousarray(view), 2))


def test_kmax_errors():
    x = np.zeros((4, 6, 3))
    with pytest.raises(ValueError, match=r"k must be between 1 and the width 6, got k=7"):
        kmax_pool(x, 7)
    with pytest.raises(ValueError, match=r"k must be between 1 and the height 4, got k=5"):
        kmax_pool(x, 5, axis=0)
    with pytest.raises(ValueError, match=r"got k=0"):
        kmax_pool(x, 0)
    with pytest.raises(TypeError, match="k must be an int"):
        kmax_pool(x, 2.0)
    with pytest.raises(TypeError, match="k must be an int"):
        kmax_pool(x, True)
    with pytest.raises(ValueError, match="axis must be 0 .* or 1"):
        kmax_pool(x, 2, axis=2)
    with pytest.raises(ValueError, match="axis must be"):
        kmax_pool(x, 2, axis=-1)
    with pytest.raises(ValueError, match=r"must be \(H, W\)"):
        kmax_pool(np.zeros(5), 2)


# --------------------------------------------------------------------------- dynamic k


@pytest.mark.parametrize(
    "k_top, n_layers, length, table",
    [
        (3, 3, 18, [12, 6, 3]),  # Kalchbrenner et al.: s=18, k_top=3, L=3
        (1, 3, 10, [7, 4, 1]),  # ceil(6.67), ceil(3.33)
        (4, 5, 10, [8, 6, 4, 4, 4]),
        (5, 2, 4, [5, 5]),  # k_top dominates (not capped at the length)
        (1, 1, 7, [1]),
    ],
)
def test_dynamic_k_table(k_top, n_layers, length, table):
    assert [dynamic_k(k_top, l, n_layers, length) for l in range(1, n_layers + 1)] == table


def test_dynamic_k_exact_ceiling():
    # (L - l) / L * s in floats is 27.000000000000004 for L=14, l=5, s=42: math.ceil gives 28
    assert dynamic_k(1, 5, 14, 42) == 27


def test_dynamic_k_errors():
    with pytest.raises(ValueError, match="layer must be between 1 and n_layers=3, got 4"):
        dynamic_k(3, 4, 3, 18)
    with pytest.raises(ValueError, match="layer must be >= 1, got 0"):
        dynamic_k(3, 0, 3, 18)
    with pytest.raises(ValueError, match="k_top must be >= 1"):
        dynamic_k(0, 1, 3, 18)
    with pytest.raises(ValueError, match="length must be >= 1"):
        dynamic_k(1, 1, 3, 0)
    with pytest.raises(TypeError, match="n_layers must be an int"):
        dynamic_k(1, 1, 3.0, 18)
    with pytest.raises(TypeError, match="k_top must be an int"):
        dynamic_k(True, 1, 3, 18)


# --------------------------------------------------------------------------- sort pooling


def naive_sort_pool(x, kernel_size, stride=None, weights=DEFAULT_SORT_WEIGHTS, padding=0,
                    ceil_mode=False):
    """Sort each window's real cells (NaN largest), weight the largest, drop leftover weights."""
    x4, restore = ref.batch(x)
    n, _, _, c = x4.shape
    (oh, ow), windows = ref.pool_windows(x4, kernel_size, stride, padding, 1, ceil_mode)
    out = np.zeros((n, oh, ow, c), dtype=np.float64)
    for b, i, j, cells in windows:
        for ch in range(c):
            vals = sorted((float(pixel[ch]) for _, pixel in cells), key=_rank_key)
            out[b, i, j, ch] = sum(wt * v for wt, v in zip(weights, vals) if wt > 0)
    expected = np.float64 if x4.dtype == np.float64 else np.float32
    return restore(out.astype(expected))


GEOMETRIES = [
    # (H, W), kernel_size, stride, padding, ceil_mode
    ((1, 1), 1, None, 0, False),
    ((5, 7), 2, None, 0, False),
    ((6, 6), 2, None, 0, True),
    ((5, 7), 2, None, 0, True),
    ((7, 6), 3, 2, 1, False),
    ((7, 6), 3, 2, 1, True),
    ((4, 5), (2, 3), (1, 2), (1, 0), False),
    ((3, 3), 4, None, 0, True),  # kernel bigger than the input
    ((2, 5), (4, 2), (3, 1), (2, 1), True),
    ((9, 8), 3, 1, 0, False),
]


def _geom_id(g):
    (h, w), k, s, p, cm = g
    return f"{h}x{w}-k{k}-s{s}-p{p}-{'ceil' if cm else 'floor'}"


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.random(shape) * 100 - 20).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


def _weights_for(kernel_size):
    kh, kw = ref.pair(kernel_size)
    m = kh * kw
    return [DEFAULT_SORT_WEIGHTS, (0.7, 0.3), (0.1, 0.0, 0.6, 2.0)][m % 3][:m]


@pytest.mark.parametrize("geom", GEOMETRIES, ids=_geom_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("channels", CHANNELS)
def test_sort_pool_matches_naive_reference(geom, dtype, channels):
    (h, w), k, s, p, cm = geom
    x = _data((2, h, w, channels), dtype, seed=h * 13 + w)
    weights = _weights_for(k)
    got = sort_pool2d(x, k, s, weights, p, cm)
    want = naive_sort_pool(x, k, s, weights, p, cm)
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    rtol = 1e-12 if got.dtype == np.float64 else 1e-6
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("geom", GEOMETRIES, ids=_geom_id)
def test_sort_pool_all_ranks_and_ties(geom):
    (h, w), k, s, p, cm = geom
    kh, kw = ref.pair(k)
    weights = list(np.linspace(1, 0.1, kh * kw))  # every rank used: the np.sort path
    x = _tied_data((h, w, 3), np.float64, seed=7, nan=False)
    np.testing.assert_allclose(sort_pool2d(x, k, s, weights, p, cm),
                               naive_sort_pool(x, k, s, weights, p, cm), rtol=1e-12)
    g = _tied_data((h, w), np.uint16, seed=8)
    np.testing.assert_allclose(sort_pool2d(g, k, s, weights[:2] if kh * kw >= 2 else [1], p, cm),
                               naive_sort_pool(g, k, s, weights[:2] if kh * kw >= 2 else [1], p,
                                               cm), rtol=1e-6)


@pytest.mark.parametrize("geom", GEOMETRIES, ids=_geom_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_sort_pool_single_weight_is_max_pool(geom, dtype):
    (h, w), k, s, p, cm = geom
    x = _data((2, h, w, 3), dtype, seed=1)
    got = sort_pool2d(x, k, s, [1], p, cm)
    np.testing.assert_array_equal(got, max_pool2d(x, k, s, p, 1, cm).astype(got.dtype))


def test_sort_pool_single_weight_is_max_pool_with_nan():
    x = _data((6, 6, 2), np.float32, seed=2)
    x[1, 1, 0] = x[4, 5, 1] = np.nan
    got = sort_pool2d(x, 3, 2, [1], 1, True)
    np.testing.assert_array_equal(got, max_pool2d(x, 3, 2, 1, 1, True))  # NaN == NaN here


@pytest.mark.parametrize(
    "hw, kernel_size, stride",
    [((6, 6), 2, None), ((5, 7), 3, 1), ((8, 9), (2, 3), (3, 2)), ((4, 4), 4, None)],
)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("channels", CHANNELS)
def test_sort_pool_equal_weights_is_avg_pool(hw, kernel_size, stride, dtype, channels):
    kh, kw = ref.pair(kernel_size)
    x = _data((*hw, channels), dtype, seed=3)
    got = sort_pool2d(x, kernel_size, stride, [1 / (kh * kw)] * (kh * kw))
    want = avg_pool2d(x, kernel_size, stride)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-6 if got.dtype == np.float32 else 1e-12)


def test_sort_pool_hand_worked_and_leftover_weights_dropped():
    x = np.array([[1, 2, 5, 5], [3, 4, 0, 9]], dtype=np.uint8)
    np.testing.assert_allclose(sort_pool2d(x, 2), [[3.3, 7.0]], rtol=1e-6)
    # ceil_mode edge windows: 4, 2, 2 and 1 real cells; weights beyond them are dropped
    ones = np.ones((3, 3), dtype=np.uint8)
    np.testing.assert_allclose(sort_pool2d(ones, 2, ceil_mode=True), [[1.0, 0.8], [0.8, 0.5]],
                               rtol=1e-6)
    # padding never ranks among the largest, even below negative values
    neg = -np.ones((2, 2), dtype=np.float32)
    np.testing.assert_allclose(sort_pool2d(neg, 3, 1, [0.5, 0.5], padding=1),
                               -np.ones((2, 2)), rtol=1e-6)


def test_sort_pool_zero_weight_ignores_infinite_rank():
    x = np.array([[5.0, -np.inf]])
    assert sort_pool2d(x, (1, 2), weights=[1, 0])[0, 0] == 5.0
    assert sort_pool2d(x, (1, 2), weights=[1, 1])[0, 0] == -np.inf
    assert sort_pool2d(np.array([[np.nan, 2.0]]), (1, 2), weights=[0, 1])[0, 0] == 2.0


def test_sort_pool_weights_not_normalized():
    x = np.full((2, 2), 10, dtype=np.uint8)
    assert sort_pool2d(x, 2, weights=[1, 1])[0, 0] == 20.0


@pytest.mark.parametrize("strip_bytes", [1, 4096])
@pytest.mark.parametrize("geom", GEOMETRIES, ids=_geom_id)
def test_sort_pool_row_strips(monkeypatch, geom, strip_bytes):
    """Small strip buffers (one or a few output rows) give the same result as the reference."""
    monkeypatch.setattr(ranked_module, "_STRIP_BYTES", strip_bytes)
    (h, w), k, s, p, cm = geom
    x = _data((2, h + 9, w + 4, 3), np.uint8, seed=10)
    weights = _weights_for(k)
    np.testing.assert_allclose(sort_pool2d(x, k, s, weights, p, cm),
                               naive_sort_pool(x, k, s, weights, p, cm), rtol=1e-6)


@pytest.mark.parametrize("geom", GEOMETRIES, ids=_geom_id)
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64],
                         ids=lambda d: np.dtype(d).name)
def test_sort_pool_network_and_sort_paths_agree(monkeypatch, geom, dtype):
    """The selection network and the np.sort fallback give identical results."""
    (h, w), k, s, p, cm = geom
    kh, kw = ref.pair(k)
    x = _tied_data((2, h + 3, w + 2, 3), dtype, seed=11)
    for m in sorted({1, min(3, kh * kw), kh * kw}):
        weights = list(np.linspace(1, 0.2, m))
        monkeypatch.setattr(ranked_module, "_NETWORK_BUDGET", 10**9)
        by_network = sort_pool2d(x, k, s, weights, p, cm)
        monkeypatch.setattr(ranked_module, "_NETWORK_BUDGET", -1)
        by_sort = sort_pool2d(x, k, s, weights, p, cm)
        np.testing.assert_array_equal(by_network, by_sort)
        np.testing.assert_allclose(by_network, naive_sort_pool(x, k, s, weights, p, cm),
                                   rtol=1e-6 if by_network.dtype == np.float32 else 1e-12)


def test_sort_pool_weight_errors():
    x = np.ones((4, 4))
    with pytest.raises(ValueError, match="at least one number"):
        sort_pool2d(x, 2, weights=[])
    with pytest.raises(ValueError, match=r"non-negative, got \[0.5, -0.1\]"):
        sort_pool2d(x, 2, weights=[0.5, -0.1])
    with pytest.raises(ValueError, match="finite"):
        sort_pool2d(x, 2, weights=[np.nan])
    with pytest.raises(ValueError, match="finite"):
        sort_pool2d(x, 2, weights=[np.inf, 1])
    with pytest.raises(ValueError, match="must not all be zero"):
        sort_pool2d(x, 2, weights=[0, 0])
    with pytest.raises(ValueError, match=r"5 weights .* a 2x2 window has only 4 cells"):
        sort_pool2d(x, 2, weights=[0.2] * 5)
    with pytest.raises(ValueError, match=r"a 1x2 window has only 2 cells"):
        sort_pool2d(x, (1, 2))  # the default uses 3 values
    for bad in ("abc", 0.5, [[1.0]], [1, "a"], [True]):
        with pytest.raises(TypeError, match="weights must be a sequence of numbers"):
            sort_pool2d(x, 2, weights=bad)


def test_sort_pool_geometry_errors():
    with pytest.raises(ValueError, match="padding must be at most half"):
        sort_pool2d(np.ones((4, 4)), 2, padding=2)
    with pytest.raises(ValueError, match="output size is too small"):
        sort_pool2d(np.ones((3, 3)), 4)


# --------------------------------------------------------------------------- properties


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=7),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    ),
    k=st.integers(1, 3),
    stride=st.integers(1, 3),
    raw=st.lists(st.floats(0, 1), min_size=1, max_size=9),
)
def test_property_max_ge_sort_pool_ge_min(x, k, stride, raw):
    assume(x.shape[0] >= k and x.shape[1] >= k)
    raw = raw[: k * k]
    assume(sum(raw) > 1e-3)
    weights = [v / sum(raw) for v in raw]
    got = sort_pool2d(x, k, stride, weights)
    hi = max_pool2d(x, k, stride)
    lo = min_pool2d(x, k, stride)
    slack = 1e-9 * np.maximum(np.abs(hi), np.abs(lo)) + 1e-300
    assert (got <= hi + slack).all()
    assert (got >= lo - slack).all()


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12)),
    data=st.data(),
)
def test_property_kmax_keeps_a_sorted_selection(x, data):
    axis = data.draw(st.integers(0, 1))
    k = data.draw(st.integers(1, x.shape[axis]))
    vals, idx = kmax_pool(x, k, axis=axis, return_indices=True)
    # the kept values are the k largest of each line, and indices increase along the axis
    top = -np.sort(-x.astype(np.int64), axis=axis).take(range(k), axis=axis)
    np.testing.assert_array_equal(np.sort(vals.astype(np.int64), axis=axis),
                                  np.sort(top, axis=axis))
    assert (np.diff(idx, axis=axis) > 0).all()
    np.testing.assert_array_equal(x.reshape(-1)[idx], vals)


def test_doctests():
    result = doctest.testmod(ranked_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
