"""Tests for poolcli.ops.stochastic: stochastic pooling (train and test modes) and seeds.

References, by role:
- a naive float64 loop reference (explicit loops over images, windows, channels and cells),
  drawing the same uniforms in the documented order, so train mode must match it exactly;
- a chi-square test of the selection frequencies against a_i / sum(a);
- invariants (hypothesis), error messages, and the doctests.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference as ref
from poolcli.ops import stochastic as stochastic_module
from poolcli.ops.pool import max_pool2d, min_pool2d
from poolcli.ops.stochastic import derive_seed, new_seed, stochastic_pool2d

# --------------------------------------------------------------------------- naive reference


def naive_stochastic(x, kernel_size, stride=None, padding=0, ceil_mode=False, mode="train",
                     seed=0):
    """Caffe's two-pass kernel, one window at a time, in float64."""
    x4, restore = ref.batch(x)
    n, _, _, c = x4.shape
    (oh, ow), windows = ref.pool_windows(x4, kernel_size, stride, padding, 1, ceil_mode)
    u = np.random.default_rng(seed).random((n, oh, ow, c))  # documented draw order
    values = np.zeros((n, oh, ow, c), dtype=x4.dtype if mode == "train" else np.float64)
    index = np.zeros((n, oh, ow, c), dtype=np.int64)
    for b, i, j, cells in windows:
        for ch in range(c):
            vals = [float(pixel[ch]) for _, pixel in cells]
            if mode == "test":
                total = math.fsum(vals)
                values[b, i, j, ch] = math.fsum(v * v for v in vals) / total if total else 0.0
                continue
            total = 0.0
            for v in vals:
                total += v
            thres = u[b, i, j, ch] * total
            pick = 0  # all-zero window: the first real cell
            if total > 0:
                cum = 0.0
                for t, v in enumerate(vals):
                    cum += v
                    if cum > thres:
                        pick = t
                        break
            flat, pixel = cells[pick]
            values[b, i, j, ch] = pixel[ch]
            index[b, i, j, ch] = flat
    return restore(values), restore(index)


def _image(shape, dtype, seed=0, zeros=0.3):
    """Non-negative test data with many zeros (and some all-zero windows)."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        x = rng.random(shape) * 10
    else:
        x = rng.integers(0, min(np.iinfo(dtype).max, 1000) + 1, size=shape)
    x[rng.random(shape) < zeros] = 0
    return x.astype(dtype)


GEOMETRIES = [
    # (H, W), kernel_size, stride, padding, ceil_mode
    ((1, 1), 1, None, 0, False),
    ((5, 7), 2, None, 0, False),
    ((6, 6), 2, None, 0, False),
    ((5, 7), 2, None, 0, True),
    ((7, 6), 3, 2, 1, False),
    ((7, 6), 3, 2, 1, True),
    ((4, 5), (2, 3), (1, 2), (1, 0), False),
    ((3, 3), 4, None, 0, True),  # kernel bigger than the input
    ((2, 5), (4, 2), (3, 1), (2, 1), True),
    ((9, 8), 3, 1, 0, False),
]
DTYPES = [np.uint8, np.uint16, np.float32, np.float64]
CHANNELS = [1, 3, 4]


def _geom_id(g):
    (h, w), k, s, p, cm = g
    return f"{h}x{w}-k{k}-s{s}-p{p}-{'ceil' if cm else 'floor'}"


# --------------------------------------------------------------------------- train mode


@pytest.mark.parametrize("geom", GEOMETRIES, ids=_geom_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("channels", CHANNELS)
def test_train_matches_naive_reference(geom, dtype, channels):
    (h, w), k, s, p, cm = geom
    x = _image((2, h, w, channels), dtype, seed=h * 100 + w)
    got, idx = stochastic_pool2d(x, k, s, p, cm, seed=123, return_indices=True)
    want, want_idx = naive_stochastic(x, k, s, p, cm, "train", seed=123)
    assert got.dtype == x.dtype
    assert idx.dtype == np.int64
    assert got.shape == want.shape
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("geom", GEOMETRIES, ids=_geom_id)
def test_train_integer_and_float_sums_pick_alike(geom):
    """8/16-bit input sums in integers with threshold floor(u * S); float64 sums pick the same."""
    (h, w), k, s, p, cm = geom
    x = _image((2, h + 5, w + 5, 3), np.uint16, seed=21, zeros=0.4)
    for dtype in (np.uint8, np.uint16):
        xi = (x % 256).astype(dtype) if dtype == np.uint8 else x
        by_int = stochastic_pool2d(xi, k, s, p, cm, seed=8, return_indices=True)[1]
        by_float = stochastic_pool2d(xi.astype(np.float64), k, s, p, cm, seed=8,
                                     return_indices=True)[1]
        np.testing.assert_array_equal(by_int, by_float)


def test_threshold_exactly_on_a_cumulative_sum():
    """u * S landing exactly on a partial sum picks the next cell (strict ">")."""

    class FixedGen(np.random.Generator):
        def __init__(self, values):
            super().__init__(np.random.PCG64(0))
            self.values = values

        def random(self, size=None, dtype=np.float64, out=None):
            return np.resize(np.asarray(self.values, dtype=np.float64), size)

    x = np.array([[1, 2, 3, 4]], dtype=np.uint8)  # cumulative sums 1, 3, 6, 10
    for u, want in [(0.0, 0), (0.1, 1), (0.25, 1), (0.3, 2), (0.5, 2), (0.6, 3), (0.99, 3)]:
        for arr in (x, x.astype(np.float32)):
            idx = stochastic_pool2d(arr, (1, 4), seed=FixedGen([u]), return_indices=True)[1]
            assert idx[0, 0] == want, (u, arr.dtype)


@pytest.mark.parametrize("strip_bytes", [1, 2048])
@pytest.mark.parametrize("geom", GEOMETRIES, ids=_geom_id)
def test_train_row_strips(monkeypatch, geom, strip_bytes):
    """Small strip buffers (one or a few output rows) give the same picks as the reference."""
    monkeypatch.setattr(stochastic_module, "_STRIP_BYTES", strip_bytes)
    (h, w), k, s, p, cm = geom
    x = _image((2, h + 9, w + 4, 3), np.float32, seed=h + 2 * w)
    got, idx = stochastic_pool2d(x, k, s, p, cm, seed=77, return_indices=True)
    want, want_idx = naive_stochastic(x, k, s, p, cm, "train", seed=77)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("geom", GEOMETRIES, ids=_geom_id)
def test_train_grey_and_single_image(geom):
    (h, w), k, s, p, cm = geom
    x = _image((h, w), np.float32, seed=1)
    got, idx = stochastic_pool2d(x, k, s, p, cm, seed=9, return_indices=True)
    want, want_idx = naive_stochastic(x, k, s, p, cm, "train", seed=9)
    assert got.ndim == 2
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(idx, want_idx)
    x3 = _image((h, w, 3), np.uint8, seed=2)
    got3 = stochastic_pool2d(x3, k, s, p, cm, seed=9)
    np.testing.assert_array_equal(got3, naive_stochastic(x3, k, s, p, cm, "train", seed=9)[0])


def _window_stats(x, kernel_size, stride, padding, ceil_mode):
    """Per window (N, oh, ow, C): min and max over real cells."""
    hi = max_pool2d(x, kernel_size, stride, padding, 1, ceil_mode)
    lo = min_pool2d(x, kernel_size, stride, padding, 1, ceil_mode)
    return lo, hi


@pytest.mark.parametrize("geom", GEOMETRIES, ids=_geom_id)
def test_train_picks_value_at_index_within_window_bounds(geom):
    (h, w), k, s, p, cm = geom
    x = _image((3, h, w, 3), np.uint16, seed=4, zeros=0.5)
    vals, idx = stochastic_pool2d(x, k, s, p, cm, seed=5, return_indices=True)
    plane = x.reshape(3, h * w, 3)
    at_index = np.take_along_axis(plane, idx.reshape(3, -1, 3), axis=1).reshape(vals.shape)
    np.testing.assert_array_equal(vals, at_index)
    lo, hi = _window_stats(x, k, s, p, cm)
    assert (vals <= hi).all() and (vals >= lo).all()
    # a window with positive mass never yields a zero; an all-zero window gives its first cell
    assert (vals[hi > 0] > 0).all()


def test_zero_cells_never_picked_in_window_with_mass():
    # each 2x2 window holds one positive cell among zeros, at every possible position
    x = np.zeros((8, 8), dtype=np.uint8)
    x[0, 0] = x[0, 3] = x[3, 4] = x[3, 7] = 1
    x[4:, :] = _image((4, 8), np.uint8, seed=3, zeros=0.75)
    for seed in range(50):
        vals, idx = stochastic_pool2d(x, 2, seed=seed, return_indices=True)
        hi = max_pool2d(x, 2)
        assert (vals[hi > 0] > 0).all()
        # rows 0-3: one positive cell or an all-zero window (which gives its first cell)
        np.testing.assert_array_equal(idx[0], [0, 3, 4, 6])
        np.testing.assert_array_equal(idx[1], [16, 18, 28, 31])


def test_leading_zero_cell_not_picked_even_for_u_zero():
    # u = 0 gives threshold 0: a ">=" rule would pick the leading zero cell, ">" must not.
    class ZeroGen(np.random.Generator):
        def random(self, size=None, dtype=np.float64, out=None):
            return np.zeros(size)

    x = np.array([[0, 0], [0, 5]], dtype=np.uint8)
    gen = ZeroGen(np.random.PCG64(0))
    vals, idx = stochastic_pool2d(x, 2, seed=gen, return_indices=True)
    assert vals[0, 0] == 5 and idx[0, 0] == 3


def test_all_zero_window_picks_first_real_cell():
    x = np.zeros((5, 5, 2), dtype=np.float32)
    vals, idx = stochastic_pool2d(x, 3, 2, 1, seed=0, return_indices=True)
    # windows start at -1, 1, 3: first real cells are rows/cols 0, 1, 3
    first = np.array([0, 1, 3])
    want = (first[:, None] * 5 + first[None, :])[:, :, None].repeat(2, axis=2)
    np.testing.assert_array_equal(idx, want)
    assert (vals == 0).all()
    vals, idx = stochastic_pool2d(np.zeros((3, 3), np.uint8), 4, ceil_mode=True, seed=1,
                                  return_indices=True)
    assert idx.tolist() == [[0]]


def test_padding_never_picked():
    x = np.ones((4, 4), dtype=np.uint8)
    for seed in range(20):
        vals, idx = stochastic_pool2d(x, 3, 1, 1, seed=seed, return_indices=True)
        assert (vals == 1).all()
        assert ((idx >= 0) & (idx < 16)).all()


def test_same_seed_same_output_and_generator_equivalent():
    x = _image((32, 40, 3), np.uint8, seed=7)
    a = stochastic_pool2d(x, 2, seed=2024, return_indices=True)
    b = stochastic_pool2d(x, 2, seed=2024, return_indices=True)
    c = stochastic_pool2d(x, 2, seed=np.random.default_rng(2024), return_indices=True)
    for first, other in ((a, b), (a, c)):
        np.testing.assert_array_equal(first[0], other[0])
        np.testing.assert_array_equal(first[1], other[1])


def test_different_seeds_different_picks():
    x = _image((64, 64, 3), np.uint8, seed=8, zeros=0.0) + 1
    i1 = stochastic_pool2d(x, 2, seed=1, return_indices=True)[1]
    i2 = stochastic_pool2d(x, 2, seed=2, return_indices=True)[1]
    assert (i1 != i2).mean() > 0.3


def test_draw_order_is_c_order_over_batch():
    """Image b of a batch uses the uniforms after those of images 0..b-1."""
    x = _image((3, 6, 6, 2), np.uint8, seed=9, zeros=0.0) + 1
    whole = stochastic_pool2d(x, 2, seed=11, return_indices=True)[1]
    rng = np.random.default_rng(11)
    for b in range(3):
        one = stochastic_pool2d(x[b], 2, seed=rng, return_indices=True)[1]
        np.testing.assert_array_equal(one, whole[b])


def test_non_contiguous_input():
    x = _image((12, 10, 3), np.uint8, seed=12)
    view = x[::-1, ::2].transpose(1, 0, 2)
    got = stochastic_pool2d(view, 2, seed=3, return_indices=True)
    want = stochastic_pool2d(np.ascontiguousarray(view), 2, seed=3, return_indices=True)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


# --------------------------------------------------------------------------- chi-square


CHI2_CRIT_P001 = {3: 16.266, 8: 26.124}  # chi-square critical values for p = 0.001


def _chi_square(counts, probs):
    expected = counts.sum() * probs
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_selection_frequencies_chi_square_2x2(seed):
    window = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    x = np.tile(window, (100, 100))  # 10 000 windows [1, 2, 3, 4]
    idx = stochastic_pool2d(x, 2, seed=seed, return_indices=True)[1]
    rows, cols = np.divmod(idx, x.shape[1])
    tap = (rows % 2) * 2 + cols % 2
    counts = np.bincount(tap.ravel(), minlength=4)
    assert _chi_square(counts, np.array([1, 2, 3, 4]) / 10) < CHI2_CRIT_P001[3]


def test_selection_frequencies_chi_square_3x3_with_zeros_and_floats():
    window = np.array([[0, 5, 1], [0, 2.5, 0], [0.5, 0, 8]], dtype=np.float32)
    x = np.tile(window[:, :, None], (60, 60, 2))  # 7 200 windows
    idx = stochastic_pool2d(x, 3, seed=99, return_indices=True)[1]
    rows, cols = np.divmod(idx, x.shape[1])
    tap = (rows % 3) * 3 + cols % 3
    counts = np.bincount(tap.ravel(), minlength=9)
    positive = window.ravel() > 0
    assert counts[~positive].sum() == 0
    probs = window.ravel()[positive].astype(np.float64) / window.sum()
    assert _chi_square(counts[positive], probs) < CHI2_CRIT_P001[3]


def test_selection_frequencies_chi_square_edge_windows_with_padding():
    # 3x3 windows, stride 3, padding 1 over a 2x2 tile: each window sees one 2x2 block
    block = np.array([[1, 2], [3, 4]], dtype=np.uint16)
    x = np.zeros((3 * 40, 3 * 40), np.uint16)
    for i in range(40):
        for j in range(40):
            x[3 * i : 3 * i + 2, 3 * j : 3 * j + 2] = block
    idx = stochastic_pool2d(x, 3, 3, 1, seed=5, return_indices=True)[1]
    rows, cols = np.divmod(idx, x.shape[1])
    tap = (rows % 3) * 2 + cols % 3
    counts = np.bincount(tap.ravel(), minlength=4)
    assert counts.sum() == idx.size == 40 * 40
    assert _chi_square(counts, np.array([1, 2, 3, 4]) / 10) < CHI2_CRIT_P001[3]


# --------------------------------------------------------------------------- test mode


@pytest.mark.parametrize("geom", GEOMETRIES, ids=_geom_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("channels", CHANNELS)
def test_test_mode_matches_naive_reference(geom, dtype, channels):
    (h, w), k, s, p, cm = geom
    x = _image((2, h, w, channels), dtype, seed=h * 10 + w)
    got = stochastic_pool2d(x, k, s, p, cm, mode="test")
    want, _ = naive_stochastic(x, k, s, p, cm, "test")
    expected_dtype = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    assert got.dtype == expected_dtype
    assert got.shape == want.shape
    tol = 1e-12 if expected_dtype == np.float64 else 1e-6
    np.testing.assert_allclose(got, want, rtol=tol, atol=0)


def test_test_mode_hand_worked():
    x = np.array([[1, 3], [0, 4]], dtype=np.uint8)
    assert stochastic_pool2d(x, 2, mode="test")[0, 0] == np.float32(26 / 8)
    assert stochastic_pool2d(np.zeros((2, 2)), 2, mode="test")[0, 0] == 0.0
    c = np.full((4, 4, 3), 7, np.uint16)
    np.testing.assert_array_equal(stochastic_pool2d(c, 2, mode="test"), np.full((2, 2, 3), 7.0))


def test_huge_float64_values_do_not_overflow():
    x = np.array([[1e308, 1e308], [1e308, 0.0]])
    assert stochastic_pool2d(x, 2, mode="test")[0, 0] == pytest.approx(1e308, rel=1e-12)
    x = np.array([[1e200, 3e200], [0.0, 0.0]])
    assert stochastic_pool2d(x, 2, mode="test")[0, 0] == pytest.approx(2.5e200, rel=1e-12)
    vals = stochastic_pool2d(np.full((4, 4), 1.7e308), 2, seed=0)
    assert (vals == 1.7e308).all()


def test_tiny_float64_values_do_not_underflow():
    # regression (found by hypothesis): squaring 3.5e-185 underflowed to 0, giving 0 < window min
    assert stochastic_pool2d(np.array([[3.49655704e-185]]), 1, mode="test")[0, 0] == 3.49655704e-185
    x = np.array([[1e-200, 3e-200, 5.0, 1.0]])
    np.testing.assert_allclose(stochastic_pool2d(x, (1, 2), mode="test"), [[2.5e-200, 13 / 3]],
                               rtol=1e-12)


@pytest.mark.parametrize("geom", GEOMETRIES, ids=_geom_id)
@pytest.mark.parametrize("power", [-850, 700, 1019])  # 1019: window sums overflow
def test_extreme_float64_magnitudes_scale_exactly(geom, power):
    (h, w), k, s, p, cm = geom
    x = _image((2, h, w, 3), np.float64, seed=h + w)
    scale = 2.0**power
    got = stochastic_pool2d(x * scale, k, s, p, cm, mode="test")
    np.testing.assert_allclose(got / scale, stochastic_pool2d(x, k, s, p, cm, mode="test"),
                               rtol=1e-12, atol=0)
    picks = stochastic_pool2d(x * scale, k, s, p, cm, seed=3, return_indices=True)[1]
    np.testing.assert_array_equal(picks, stochastic_pool2d(x, k, s, p, cm, seed=3,
                                                           return_indices=True)[1])


# --------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=7),
        elements=st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
    ),
    k=st.integers(1, 3),
    stride=st.integers(1, 3),
    pad=st.integers(0, 1),
    ceil_mode=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_property_train_within_window_min_max(x, k, stride, pad, ceil_mode, seed):
    pad = min(pad, k // 2)
    try:
        vals, idx = stochastic_pool2d(x, k, stride, pad, ceil_mode, seed=seed,
                                      return_indices=True)
    except ValueError:  # output too small
        return
    lo, hi = _window_stats(x, k, stride, pad, ceil_mode)
    assert (vals >= lo).all() and (vals <= hi).all()
    assert (vals[hi > 0] > 0).all()
    test = stochastic_pool2d(x, k, stride, pad, ceil_mode, mode="test")
    assert (test <= hi * (1 + 1e-12)).all() and (test >= lo * (1 - 1e-12)).all()


# --------------------------------------------------------------------------- errors


def test_negative_input_message_names_minimum():
    x = np.array([[1.0, -3.5], [0.0, -1.0]])
    with pytest.raises(ValueError, match=r"non-negative input; minimum is -3\.5$"):
        stochastic_pool2d(x, 2)
    with pytest.raises(ValueError, match=r"minimum is -3$"):
        stochastic_pool2d(np.array([[2, -3]], dtype=np.int16), (1, 2), mode="test")


def test_nan_and_inf_rejected():
    x = np.array([[1.0, np.nan], [0.0, 2.0]], dtype=np.float32)
    with pytest.raises(ValueError, match=r"without NaN; found 1 NaN value$"):
        stochastic_pool2d(x, 2)
    with pytest.raises(ValueError, match="NaN"):
        stochastic_pool2d(np.array([[np.nan, -1.0]]), (1, 2), mode="test")
    with pytest.raises(ValueError, match="finite input; found inf"):
        stochastic_pool2d(np.array([[np.inf, 1.0]]), (1, 2))


def test_mode_and_indices_errors():
    x = np.ones((4, 4))
    with pytest.raises(ValueError, match=r"mode must be 'train' or 'test', got 'eval'"):
        stochastic_pool2d(x, 2, mode="eval")
    with pytest.raises(ValueError, match="return_indices needs mode='train'"):
        stochastic_pool2d(x, 2, mode="test", return_indices=True)


def test_seed_errors():
    x = np.ones((4, 4))
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        stochastic_pool2d(x, 2, seed=-1)
    with pytest.raises(TypeError, match="seed must be"):
        stochastic_pool2d(x, 2, seed=1.5)
    with pytest.raises(TypeError, match="seed must be"):
        stochastic_pool2d(x, 2, seed=True)


def test_geometry_errors_come_from_pool_axes():
    with pytest.raises(ValueError, match="padding must be at most half the kernel size"):
        stochastic_pool2d(np.ones((4, 4)), 2, padding=2)
    with pytest.raises(ValueError, match="output size is too small"):
        stochastic_pool2d(np.ones((3, 3)), 4)
    with pytest.raises(TypeError, match="real numeric dtype"):
        stochastic_pool2d(np.array([["a"]]), 1)


# --------------------------------------------------------------------------- seeds


def test_derive_seed_is_deterministic_and_independent():
    a = derive_seed(42, "cat.png")
    assert a == derive_seed(42, "cat.png")
    assert 0 <= a < 2**63
    assert len({derive_seed(42, f"img{i}.png") for i in range(100)}) == 100
    assert derive_seed(43, "cat.png") != a
    assert derive_seed(np.int64(42), "cat.png") == a


def test_derive_seed_pinned_value():
    # Pins SHA-256 + numpy's SeedSequence: a change here breaks reproducing reported runs.
    assert derive_seed(12345, "astronaut.png") == 2260330521812047366


def test_train_pinned_picks():
    # Pins numpy's PCG64 ``random()`` stream and the sampling rule: a reported seed must keep
    # reproducing the same picks across poolcli versions.
    x = (np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 37) % 11
    vals, idx = stochastic_pool2d(x, 2, seed=2024, return_indices=True)
    assert idx.tolist() == [[[5, 0, 1], [7, 7, 2]], [[8, 8, 9], [10, 11, 14]]]
    assert vals.tolist() == [[[10, 4, 9], [9, 2, 7]], [[10, 3, 5], [9, 3, 4]]]


def test_derive_seed_errors():
    with pytest.raises(ValueError, match="base_seed must be a non-negative int"):
        derive_seed(-1, "a")
    with pytest.raises(TypeError, match="key must be a str"):
        derive_seed(1, b"a")
    with pytest.raises(TypeError, match="base_seed must be"):
        derive_seed("1", "a")


def test_new_seed_range_and_fresh():
    seeds = {new_seed() for _ in range(10)}
    assert len(seeds) == 10
    assert all(0 <= s < 2**63 for s in seeds)


def test_doctests():
    result = doctest.testmod(stochastic_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0

