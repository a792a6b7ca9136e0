"""Tests for poolcli.ops.zoo: mixed, SoftPool, GeM, LSE and BlurPool.

References, by role:
- a naive float64 loop reference per operator (explicit window loops, its own size formula),
  parametrized over shapes, dtypes and channel counts,
- identities (mixed alpha=1 is max, alpha=0 is avg; GeM p=1 is the clamped mean; a constant stays
  constant), bounds (avg <= SoftPool/LSE/GeM <= max, hypothesis), overflow with +-1000,
- error messages, one test per rule,
- when torch is installed: BlurPool against ``F.conv2d`` on a reflect-padded input (the
  antialiased-cnns layer), and the other operators against their torch formulas.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference as ref
from poolcli.ops import zoo as zoo_module
from poolcli.ops.pool import avg_pool2d, max_pool2d
from poolcli.ops.zoo import blur_pool2d, gem_pool2d, lse_pool2d, mixed_pool2d, softpool2d

# --------------------------------------------------------------------------- naive references


def to4(x):
    x = np.asarray(x)
    return {2: x[None, :, :, None], 3: x[None], 4: x}[x.ndim]


def back(y4, ndim):
    return {2: y4[0, :, :, 0], 3: y4[0], 4: y4}[ndim]


def naive_windows(x, k, s, p, ceil_mode, fn):
    """Apply ``fn(cells as float64 1-D array)`` to the real cells of every window."""
    x4, restore = ref.batch(x)
    n, _, _, c = x4.shape
    (oh, ow), windows = ref.pool_windows(x4, k, s, p, 1, ceil_mode)
    out = np.empty((n, oh, ow, c))
    for b, i, j, cells in windows:
        for ch in range(c):
            out[b, i, j, ch] = fn(np.array([pixel[ch] for _, pixel in cells], np.float64))
    return restore(out)


def ref_mixed(x, k, s, p, ceil_mode, alpha):
    return naive_windows(x, k, s, p, ceil_mode, lambda a: alpha * a.max() + (1 - alpha) * a.mean())


def ref_softpool(x, k, s, ceil_mode):
    def f(a):
        w = np.exp(a - a.max())  # the shift only keeps float64 finite
        return float((w * a).sum() / w.sum())

    return naive_windows(x, k, s, 0, ceil_mode, f)


def ref_gem(x, k, s, ceil_mode, p, eps):
    return naive_windows(
        x, k, s, 0, ceil_mode, lambda a: np.mean(np.maximum(a, eps) ** p) ** (1 / p)
    )


def ref_lse(x, k, s, ceil_mode, r):
    def f(a):
        m = a.max()
        return m + math.log(np.mean(np.exp(r * (a - m)))) / r

    return naive_windows(x, k, s, 0, ceil_mode, f)


def reflect(i, n):
    while i < 0 or i >= n:
        i = -i if i < 0 else 2 * (n - 1) - i
    return i


def ref_blur(x, k, s, pads):
    """pads = ((top, bottom), (left, right)), reflect; binomial weights via math.comb."""
    x4 = to4(x).astype(np.float64)
    n, h, w, c = x4.shape
    f = np.array([math.comb(k - 1, t) for t in range(k)], dtype=np.float64)
    f2 = np.outer(f, f) / f.sum() ** 2
    (pt, pb), (pl, pr) = pads
    oh, ow = (h + pt + pb - k) // s + 1, (w + pl + pr - k) // s + 1
    out = np.zeros((n, oh, ow, c))
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for a in range(k):
                    for e in range(k):
                        out[b, i, j] += f2[a, e] * x4[b, reflect(i * s + a - pt, h),
                                                      reflect(j * s + e - pl, w)]
    return back(out, np.ndim(x))


# --------------------------------------------------------------------------- inputs

SHAPES = [(7, 6), (5, 8, 1), (6, 7, 3), (2, 5, 6, 4)]
DTYPES = [np.uint8, np.uint16, np.float32, np.float64]
GEOMETRY = [(2, None, False), (3, 2, False), (3, 2, True), (2, 1, False), (3, 3, True)]


def make(shape, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * scale).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True, dtype=dtype)


def float_of(dtype):
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def tol(dtype, x):
    """float32 results: relative 1e-5 of the values' scale."""
    scale = float(np.max(np.abs(x.astype(np.float64)))) or 1.0
    if np.dtype(dtype) == np.float64:
        return {"rtol": 1e-12, "atol": 1e-12 * scale}
    return {"rtol": 2e-5, "atol": 2e-5 * scale}


ids_dtype = lambda d: np.dtype(d).name  # noqa: E731


# --------------------------------------------------------------------------- vs naive


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=ids_dtype)
@pytest.mark.parametrize("geom", GEOMETRY, ids=str)
def test_mixed_matches_naive(shape, dtype, geom):
    k, s, ceil_mode = geom
    x = make(shape, dtype, 1)
    for p, alpha in [(0, 0.3), (k // 2, 0.75)]:
        got = mixed_pool2d(x, k, s, p, ceil_mode, alpha=alpha)
        want = ref_mixed(x, k, s or k, p, ceil_mode, alpha)
        assert got.shape == want.shape
        assert got.dtype == float_of(dtype)
        np.testing.assert_allclose(got, want, **tol(dtype, x))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=ids_dtype)
@pytest.mark.parametrize("geom", GEOMETRY, ids=str)
def test_softpool_matches_naive(shape, dtype, geom):
    k, s, ceil_mode = geom
    # integer images are pooled in their own units; scale floats so weights are not one-hot
    x = make(shape, dtype, 2, scale=2.0)
    got = softpool2d(x, k, s, ceil_mode)
    want = ref_softpool(x, k, s or k, ceil_mode)
    assert got.shape == want.shape and got.dtype == float_of(dtype)
    np.testing.assert_allclose(got, want, **tol(dtype, x))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=ids_dtype)
@pytest.mark.parametrize("geom", GEOMETRY, ids=str)
@pytest.mark.parametrize("p", [1.0, 3.0, 0.5])
def test_gem_matches_naive(shape, dtype, geom, p):
    k, s, ceil_mode = geom
    x = make(shape, dtype, 3)
    got = gem_pool2d(x, k, s, ceil_mode, p=p, eps=1e-6)
    want = ref_gem(x, k, s or k, ceil_mode, p, 1e-6)
    assert got.shape == want.shape and got.dtype == float_of(dtype)
    np.testing.assert_allclose(got, want, **tol(dtype, x))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=ids_dtype)
@pytest.mark.parametrize("geom", GEOMETRY, ids=str)
@pytest.mark.parametrize("r", [1.0, 0.05, 10.0])
def test_lse_matches_naive(shape, dtype, geom, r):
    k, s, ceil_mode = geom
    x = make(shape, dtype, 4)
    got = lse_pool2d(x, k, s, ceil_mode, r=r)
    want = ref_lse(x, k, s or k, ceil_mode, r)
    assert got.shape == want.shape and got.dtype == float_of(dtype)
    np.testing.assert_allclose(got, want, **tol(dtype, x))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=ids_dtype)
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_blur_matches_naive(shape, dtype, k, stride):
    x = make(shape, dtype, 5)
    got = blur_pool2d(x, k, stride)
    pads = (((k - 1) // 2, math.ceil((k - 1) / 2)),) * 2
    want = ref_blur(x, k, stride, pads)
    h, w = (shape[0], shape[1]) if len(shape) < 4 else (shape[1], shape[2])
    assert got.shape[-3 if len(shape) > 2 else -2:][:2] == (-(-h // stride), -(-w // stride))
    assert got.shape == want.shape and got.dtype == float_of(dtype)
    np.testing.assert_allclose(got, want, **tol(dtype, x))


@pytest.mark.parametrize("padding", [0, 1, 2, (0, 2)])
def test_blur_explicit_padding_matches_naive(padding):
    x = make((2, 7, 6, 3), np.float64, 6)
    got = blur_pool2d(x, 5, 2, padding)
    p = (padding, padding) if isinstance(padding, int) else padding
    want = ref_blur(x, 5, 2, ((p[0], p[0]), (p[1], p[1])))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_rectangular_kernels_and_strides():
    x = make((2, 9, 8, 3), np.float64, 7)
    for op, extra in [(softpool2d, {}), (gem_pool2d, {"p": 2.0}), (lse_pool2d, {"r": 2.0})]:
        got = op(x, (3, 2), (2, 1), **extra)
        assert got.shape == (2, 4, 7, 3)
    got = blur_pool2d(x, (3, 1), (2, 1))
    assert got.shape == (2, 5, 8, 3)


# --------------------------------------------------------------------------- identities


@pytest.mark.parametrize("dtype", DTYPES + [np.int32], ids=ids_dtype)
@pytest.mark.parametrize("shape", [(7, 6), (6, 7, 3), (2, 5, 6, 4)], ids=str)
def test_mixed_endpoints_are_exactly_max_and_avg(dtype, shape):
    x = make(shape, dtype, 8)
    for p, ceil_mode in [(0, False), (1, True)]:
        avg = avg_pool2d(x, 3, 2, p, ceil_mode, count_include_pad=False)
        mx = max_pool2d(x, 3, 2, p, ceil_mode=ceil_mode)
        a1 = mixed_pool2d(x, 3, 2, p, ceil_mode, alpha=1)
        a0 = mixed_pool2d(x, 3, 2, p, ceil_mode, alpha=0.0)
        assert a1.dtype == avg.dtype == a0.dtype
        np.testing.assert_array_equal(a1, mx.astype(avg.dtype))
        np.testing.assert_array_equal(a0, avg)


def test_mixed_padding_does_not_darken_edges():
    x = np.full((4, 4), 200, dtype=np.uint8)
    np.testing.assert_array_equal(mixed_pool2d(x, 3, 1, 1, alpha=0.5), np.full((4, 4), 200.0))


@pytest.mark.parametrize("value", [0.0, 7.25, -3.0, 1000.0, -1e30, 0.1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=ids_dtype)
def test_constant_windows_give_the_constant(value, dtype):
    x = np.full((2, 7, 6, 3), value, dtype=dtype)
    value = dtype(value)
    np.testing.assert_array_equal(softpool2d(x, 3, 2, ceil_mode=True), value)
    np.testing.assert_allclose(lse_pool2d(x, 3, 2, ceil_mode=True, r=0.5), value, rtol=1e-6)
    np.testing.assert_allclose(blur_pool2d(x, 5), value, rtol=1e-6)
    np.testing.assert_allclose(mixed_pool2d(x, 3, 2, 1, True, 0.3), value, rtol=1e-6)
    if value > 0:
        np.testing.assert_allclose(gem_pool2d(x, 3, 2, ceil_mode=True, p=4), value, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=ids_dtype)
def test_blur_of_constant_image_is_constant(dtype):
    x = np.full((9, 10, 3), 77, dtype=dtype)
    for k in range(1, 8):
        for s in (1, 2, 3):
            y = blur_pool2d(x, k, s)
            np.testing.assert_allclose(y, 77.0, rtol=1e-6)
            assert y.shape == (-(-9 // s), -(-10 // s), 3)


@pytest.mark.parametrize("dtype", DTYPES, ids=ids_dtype)
def test_gem_p1_is_mean_of_clamped(dtype):
    x = make((2, 6, 7, 3), dtype, 9)
    eps = 0.5
    want = avg_pool2d(np.maximum(x.astype(np.float64), eps), 3, 2, ceil_mode=True)
    got = gem_pool2d(x, 3, 2, ceil_mode=True, p=1, eps=eps)
    np.testing.assert_allclose(got, want, **tol(dtype, x))


def test_gem_large_p_approaches_max_and_clamps_negatives():
    x = make((6, 6, 2), np.float64, 10)
    got = gem_pool2d(x, 3, p=200.0)
    mx = np.maximum(max_pool2d(x, 3), 1e-6)
    np.testing.assert_allclose(got, mx, rtol=0.02)
    assert (got <= mx * (1 + 1e-12)).all()
    neg = -np.abs(x)
    np.testing.assert_allclose(gem_pool2d(neg, 3, eps=0.25), 0.25)


def test_lse_large_r_approaches_max_small_r_the_mean():
    x = make((6, 6, 2), np.float64, 11)
    mx, avg = max_pool2d(x, 3), avg_pool2d(x, 3)
    for r in (1e2, 1e4, 1e8):
        got = lse_pool2d(x, 3, r=r)
        assert (got <= mx).all()
        assert (mx - got <= math.log(9) / r + 1e-12).all()
    np.testing.assert_allclose(lse_pool2d(x, 3, r=1e-6), avg, atol=1e-4)


def test_softpool_hand_worked():
    # weights e^0 : e^ln3 = 1 : 3, so (0 * 1 + ln3 * 3) / 4
    got = softpool2d(np.array([[0.0, math.log(3.0)]]), (1, 2))
    np.testing.assert_allclose(got, [[0.75 * math.log(3.0)]], rtol=1e-15)


# --------------------------------------------------------------------------- overflow


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=ids_dtype)
def test_far_apart_values_do_not_overflow(dtype):
    x = np.zeros((4, 4), dtype=dtype)
    x[:2, :2] = [[1000, 999], [1000, 1000]]  # window 1: exp(1000) overflows unshifted
    x[:2, 2:] = [[-1000, -1000], [-999, -1000]]  # window 2: exp(-1000) underflows unshifted
    x[2:, :2] = [[1000, -1000], [-1000, -1000]]  # window 3: one huge, three tiny
    x[2:, 2:] = 5
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        sp, ls = softpool2d(x, 2), lse_pool2d(x, 2)
        gm = gem_pool2d(np.maximum(x, 0), 2, p=20.0)
    e = math.exp(-1)
    np.testing.assert_allclose(sp[0, 0], 1000 - e / (3 + e), rtol=1e-6)
    np.testing.assert_allclose(sp[0, 1], -1000 + 1 / (1 + 3 * e), rtol=1e-6)
    assert sp[1, 0] == 1000 and sp[1, 1] == 5
    np.testing.assert_allclose(ls[0, 0], 1000 + math.log((3 + e) / 4), rtol=1e-6)
    np.testing.assert_allclose(ls[0, 1], -999 + math.log((1 + 3 * e) / 4), rtol=1e-6)
    np.testing.assert_allclose(ls[1, 0], 1000 + math.log(1 / 4), rtol=1e-6)
    assert ls[1, 1] == 5
    assert np.isfinite(gm).all()  # 1000 ** 20 = 1e60 overflows float32 without the shift
    np.testing.assert_allclose(gm[1, 0], 1000 * (1 / 4) ** (1 / 20), rtol=1e-5)
    np.testing.assert_allclose(gm[0, 0], ((3 + (999 / 1000) ** 20) / 4) ** (1 / 20) * 1000,
                               rtol=1e-5)


def test_window_far_below_the_channel_max_keeps_its_value():
    """A per-channel (global) shift would underflow every exp in the low window: 0/0, log 0."""
    x = np.array([[1000.0, 1000.0, -1000.0, -999.0]], dtype=np.float32)
    np.testing.assert_allclose(softpool2d(x, (1, 2))[0, 1], -999 - 1 / (1 + math.e), rtol=1e-6)
    np.testing.assert_allclose(lse_pool2d(x, (1, 2), r=5)[0, 1],
                               -999 + math.log((1 + math.exp(-5)) / 2) / 5, rtol=1e-6)
    tiny = np.array([[1e30, 1e30, 1e-30, 2e-30]], dtype=np.float32)
    np.testing.assert_allclose(gem_pool2d(tiny, (1, 2), eps=0)[0, 1],
                               ((1 + 8) / 2) ** (1 / 3) * 1e-30, rtol=1e-5)


def test_infinities_and_nan():
    x = np.array([[np.inf, 1.0, -np.inf, 2.0, -np.inf, -np.inf, np.nan, 1.0]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        sp = softpool2d(x, (1, 2))
        ls = lse_pool2d(x, (1, 2))
        gm = gem_pool2d(x, (1, 2))
    np.testing.assert_array_equal(sp[0, :3], [np.inf, 2.0, -np.inf])
    np.testing.assert_array_equal(ls[0, :2], [np.inf, 2.0 + math.log(0.5)])
    assert ls[0, 2] == -np.inf
    assert gm[0, 0] == np.inf and gm[0, 1] == pytest.approx(0.5 ** (1 / 3) * 2)
    assert gm[0, 2] == pytest.approx(1e-6)
    assert np.isnan(sp[0, 3]) and np.isnan(ls[0, 3]) and np.isnan(gm[0, 3])


def test_gem_eps_zero_on_all_zero_window():
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        got = gem_pool2d(np.zeros((2, 2)), 2, eps=0)
    np.testing.assert_array_equal(got, [[0.0]])


# --------------------------------------------------------------------------- invariants


@st.composite
def window_case(draw):
    k = draw(st.integers(1, 4))
    s = draw(st.integers(1, 4))
    h, w, c = draw(st.integers(k, 10)), draw(st.integers(k, 10)), draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([np.uint8, np.float32, np.float64]))
    return k, s, draw(st.booleans()), (h, w, c), dtype, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window_case())
def test_avg_le_soft_lse_gem_le_max(case):
    k, s, ceil_mode, shape, dtype, seed = case
    x = make(shape, dtype, seed, scale=3.0)
    mx = max_pool2d(x, k, s, ceil_mode=ceil_mode).astype(np.float64)
    avg = avg_pool2d(x, k, s, ceil_mode=ceil_mode).astype(np.float64)
    slack = 1e-5 * (np.abs(mx) + 1) if dtype != np.float64 else 1e-12 * (np.abs(mx) + 1)
    for y in (softpool2d(x, k, s, ceil_mode), lse_pool2d(x, k, s, ceil_mode, r=0.7)):
        assert y.shape == mx.shape
        assert (avg - slack <= y).all() and (y <= mx + slack).all()
    xc = np.maximum(x.astype(np.float64), 1e-6)
    mc = max_pool2d(xc, k, s, ceil_mode=ceil_mode)
    ac = avg_pool2d(xc, k, s, ceil_mode=ceil_mode)
    g = gem_pool2d(x, k, s, ceil_mode, p=2.5)
    assert (ac - slack <= g).all() and (g <= mc + slack).all()


@pytest.mark.parametrize("op", [softpool2d, gem_pool2d, lse_pool2d, blur_pool2d,
                                lambda x, k: mixed_pool2d(x, k, padding=1)])
def test_non_contiguous_and_dims(op):
    x = make((2, 8, 9, 3), np.float32, 12)
    want = op(np.ascontiguousarray(x[:, ::-1, :, ::-1]), 3)
    np.testing.assert_array_equal(op(x[:, ::-1, :, ::-1], 3), want)
    np.testing.assert_array_equal(op(x[1], 3), op(x, 3)[1])
    np.testing.assert_array_equal(op(x[1, :, :, 2], 3), op(x, 3)[1, :, :, 2])


@pytest.mark.parametrize("dtype,want", [(np.uint8, np.float32), (np.int16, np.float32),
                                        (np.float16, np.float32), (np.int32, np.float64),
                                        (np.int64, np.float64), (np.float64, np.float64)])
def test_result_dtype(dtype, want):
    x = np.arange(36).reshape(6, 6).astype(dtype)
    for y in (softpool2d(x, 2), gem_pool2d(x, 2), lse_pool2d(x, 2), blur_pool2d(x),
              mixed_pool2d(x, 2)):
        assert y.dtype == want


# --------------------------------------------------------------------------- errors


def test_errors_alpha():
    x = np.ones((4, 4))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\], got"):
            mixed_pool2d(x, 2, alpha=bad)
    with pytest.raises(TypeError, match="alpha must be a real number, got True"):
        mixed_pool2d(x, 2, alpha=True)
    with pytest.raises(TypeError, match="alpha must be a real number"):
        mixed_pool2d(x, 2, alpha="0.5")


def test_errors_p_eps_r():
    x = np.ones((4, 4))
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="p must be a finite number > 0"):
            gem_pool2d(x, 2, p=bad)
        with pytest.raises(ValueError, match="r must be a finite number > 0"):
            lse_pool2d(x, 2, r=bad)
    for bad in (-1e-6, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
            gem_pool2d(x, 2, eps=bad)
    with pytest.raises(TypeError, match="p must be a real number"):
        gem_pool2d(x, 2, p=None)
    with pytest.raises(TypeError, match="r must be a real number"):
        lse_pool2d(x, 2, r=[1.0])


def test_errors_window_geometry():
    x = np.ones((3, 3))
    for op in (softpool2d, gem_pool2d, lse_pool2d, mixed_pool2d):
        with pytest.raises(ValueError, match="output size is too small"):
            op(x, 4)
        with pytest.raises(ValueError, match="kernel_size must be >= 1"):
            op(x, 0)
        with pytest.raises(ValueError, match="stride must be >= 1"):
            op(x, 2, 0)
        with pytest.raises(TypeError, match="real numeric dtype"):
            op(np.ones((3, 3), bool), 2)
    with pytest.raises(ValueError, match="padding must be at most half the kernel"):
        mixed_pool2d(x, 2, padding=2)


def test_errors_blur():
    x = np.ones((5, 5))
    with pytest.raises(ValueError, match=r"kernel_size must lie in 1..7, got 8"):
        blur_pool2d(x, 8)
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        blur_pool2d(x, 0)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        blur_pool2d(x, 3, 0)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        blur_pool2d(x, 3, 2, -1)
    with pytest.raises(ValueError, match=r"reflect padding must be smaller .* height 1 .*\(1, 1\)"):
        blur_pool2d(np.ones((1, 5)), 3)
    with pytest.raises(ValueError, match=r"width 3 cannot be padded by \(3, 3\)"):
        blur_pool2d(np.ones((5, 3)), 7)
    with pytest.raises(ValueError, match="output size is too small"):
        blur_pool2d(np.ones((5, 5)), 7, 1, 0)
    # size-1 axes are fine without padding
    assert blur_pool2d(np.ones((1, 5)), (1, 3)).shape == (1, 3)


def test_doctests():
    result = doctest.testmod(zoo_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- live PyTorch


def _nchw(torch, x):
    return torch.from_numpy(np.ascontiguousarray(to4(x).transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("k", range(1, 8))
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=ids_dtype)
@pytest.mark.parametrize("padding", [None, 0, "half"])
def test_blur_matches_torch_conv2d(k, stride, dtype, padding):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = make((2, 11, 9, 3), dtype, 13 + k)
    if padding is None:  # antialiased-cnns BlurPool: [left, right, top, bottom]
        pads = [(k - 1) // 2, math.ceil((k - 1) / 2)] * 2
        p = None
    else:
        p = 0 if padding == 0 else k // 2
        pads = [p] * 4
    t = _nchw(torch, x)
    a = torch.tensor([math.comb(k - 1, i) for i in range(k)], dtype=t.dtype)
    filt = (a[:, None] * a[None, :]) / a.sum() ** 2
    filt = filt[None, None].repeat(3, 1, 1, 1)
    padded = F.pad(t, pads, mode="reflect") if any(pads) else t
    want = _nhwc(F.conv2d(padded, filt, stride=stride, groups=3))
    got = blur_pool2d(x, k, stride, p)
    assert got.shape == want.shape and got.dtype == dtype
    np.testing.assert_allclose(got, want, **tol(dtype, x))


@pytest.mark.parametrize("seed", range(30))
def test_windowed_ops_match_torch_formulas(seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    k, s = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    ceil_mode = bool(seed % 2)
    shape = (2, int(rng.integers(k, 10)), int(rng.integers(k, 10)), int(rng.integers(1, 4)))
    x = rng.standard_normal(shape) * 2
    t = _nchw(torch, x)

    def avg(v):  # padding 0: ceil-mode partial windows divide by their real cells
        return F.avg_pool2d(v, k, s, 0, ceil_mode)

    soft = avg(t.exp() * t) / avg(t.exp())
    np.testing.assert_allclose(softpool2d(x, k, s, ceil_mode), _nhwc(soft), rtol=1e-10)
    gem = avg(t.clamp(min=1e-6).pow(3.0)).pow(1 / 3.0)
    np.testing.assert_allclose(gem_pool2d(x, k, s, ceil_mode, p=3.0), _nhwc(gem), rtol=1e-10)
    lse = avg((0.5 * t).exp()).log() / 0.5
    np.testing.assert_allclose(lse_pool2d(x, k, s, ceil_mode, r=0.5), _nhwc(lse), rtol=1e-10,
                               atol=1e-12)
    p = k // 2
    mixed = 0.3 * F.max_pool2d(t, k, s, p, ceil_mode=ceil_mode) + 0.7 * F.avg_pool2d(
        t, k, s, p, ceil_mode, count_include_pad=False)
    np.testing.assert_allclose(mixed_pool2d(x, k, s, p, ceil_mode, 0.3), _nhwc(mixed),
                               rtol=1e-12, atol=1e-12)


def ref_geometric(x, k, s, ceil_mode, eps):
    return naive_windows(x, k, s, 0, ceil_mode,
                         lambda a: math.exp(np.mean(np.log(np.maximum(a, eps)))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [1e-300, 1e-45, 1e-30, 1e-9])
def test_gem_small_p_is_the_geometric_mean(dtype, p):
    """p -> 0 is the geometric mean; float32 r ** p rounds to 1 there (which gave the max)."""
    x = (np.random.default_rng(11).random((7, 6, 2)) + 0.05).astype(dtype)
    got = gem_pool2d(x, 3, 2, ceil_mode=True, p=p)
    want = ref_geometric(x, 3, 2, True, 1e-6)
    # GeM differs from its p -> 0 limit by O(p) (relative)
    np.testing.assert_allclose(got, want, rtol=2e-6 if dtype == np.float32 else max(1e-12, 10 * p))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [1e-4, 0.3, 7.5, 1e3])
def test_gem_general_p_matches_float64_naive(dtype, p):
    x = (np.random.default_rng(12).random((9, 8, 3)) + 0.05).astype(dtype)
    got = gem_pool2d(x, 3, 2, p=p)
    m = naive_windows(x, 3, 2, 0, False, np.max)
    # the plain formula in float64, shifted by the window max so 1e3 does not overflow
    want = naive_windows(x, 3, 2, 0, False,
                         lambda a: a.max() * np.mean((a / a.max()) ** p) ** (1 / p))
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-10)
    assert (got <= m * (1 + 1e-6)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("r", [1e-300, 1e-40, 1e-12])
def test_lse_small_r_is_the_mean(dtype, r):
    """r -> 0 is the window mean; exp(r * d) rounding to 1 used to give the max instead."""
    x = np.random.default_rng(14).random((7, 6, 2)).astype(dtype) * 10 - 5
    got = lse_pool2d(x, 3, 2, ceil_mode=True, r=r)
    want = naive_windows(x, 3, 2, 0, True, np.mean)
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-10,
                               atol=1e-6 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("r", [1e-5, 0.25, 4.0])
def test_lse_matches_expm1_float64_naive(dtype, r):
    x = np.random.default_rng(15).random((9, 8, 3)).astype(dtype)
    got = lse_pool2d(x, 3, 2, r=r)
    want = naive_windows(x, 3, 2, 0, False,
                         lambda a: a.max() + math.log1p(np.mean(np.expm1(r * (a - a.max())))) / r)
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("value", [1e39, 1e300])
@pytest.mark.parametrize("op,name,clamp", [(gem_pool2d, "p", 1e-6), (lse_pool2d, "r", None)])
def test_huge_exponent_is_the_max_and_warns_nothing(op, name, clamp, value):
    """GeM's p and LSE's r past float32's range give the max (the limit), NaN still wins."""
    import warnings

    x = np.random.default_rng(13).random((6, 6, 3)).astype(np.float32)
    x[0, 0, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = op(x, 2, **{name: value})
        small = op(x, 2, **{name: 1e-300})
    clamped = x if clamp is None else np.maximum(x, np.float32(clamp))
    np.testing.assert_array_equal(got, max_pool2d(clamped, 2))
    assert np.isnan(got[0, 0, 1]) and np.isnan(small[0, 0, 1])


def test_blur_of_opposite_infinities_is_nan_without_warning():
    import warnings

    x = np.zeros((6, 6), np.float32)
    x[2, 2], x[2, 3] = np.inf, -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = blur_pool2d(x, 3, padding=0)
    with np.errstate(invalid="ignore"):
        want = ref_blur(x, 3, 2, ((0, 0), (0, 0)))
    assert np.isnan(got[0, 1]) and np.isnan(got[1, 1]) and got[0, 0] == np.inf
    np.testing.assert_array_equal(got, want)


def test_softpool_of_extreme_float32_values_warns_nothing():
    """-inf or -3.4e38 next to a large maximum: the subtraction overflows to -inf, which is a
    weight of 0 (an IEEE result, found by a float TIFF holding inf), not a RuntimeWarning."""
    import warnings

    x = np.array([[-np.inf, 1.0, -3.4e38, 3.4e38], [np.inf, 1.0, 0.0, 0.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = softpool2d(x, (1, 2))
    np.testing.assert_allclose(out, np.array([[1.0, 3.4e38], [np.inf, 0.0]], np.float32), rtol=1e-6)
