"""Tests for poolcli.ops.unpool.max_unpool2d.

References, by role:
- a naive loop reference (one Python assignment per input cell, in C order),
- round trips through poolcli's own max_pool2d (hypothesis),
- error messages, one test per rule,
- when torch is installed: live comparison with ``F.max_unpool2d`` (contiguous NCHW tensors,
  whose CPU kernel is deterministic) and with the autograd gradient of ``max_pool2d``.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poolcli.ops import unpool as unpool_module
from poolcli.ops.pool import max_pool2d
from poolcli.ops.unpool import max_unpool2d, unpool_output_size

# --------------------------------------------------------------------------- naive reference


def naive_unpool(x, idx, out_hw, reduce=None):
    """Loop over every (n, h, w, c) input cell in C order and write/add it to its target."""
    x4 = np.asarray(x)
    i4 = np.asarray(idx)
    squeeze = x4.ndim
    if x4.ndim == 2:
        x4, i4 = x4[None, :, :, None], i4[None, :, :, None]
    elif x4.ndim == 3:
        x4, i4 = x4[None], i4[None]
    n, h, w, c = x4.shape
    oh, ow = out_hw
    if reduce is None:
        out = np.zeros((n, oh, ow, c), dtype=x4.dtype)
    else:
        acc = np.int64
        if x4.dtype.kind == "f":
            acc = np.float64
        elif x4.dtype == np.uint64:
            acc = np.uint64
        out = np.zeros((n, oh, ow, c), dtype=acc)
    for b in range(n):
        for r in range(h):
            for q in range(w):
                for ch in range(c):
                    t = int(i4[b, r, q, ch])
                    if reduce is None:
                        out[b, t // ow, t % ow, ch] = x4[b, r, q, ch]
                    else:
                        out[b, t // ow, t % ow, ch] += x4[b, r, q, ch]
    if reduce is not None and x4.dtype.kind == "f":
        out = out.astype(x4.dtype)
    if squeeze == 2:
        return out[0, :, :, 0]
    if squeeze == 3:
        return out[0]
    return out


def random_values(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


# --------------------------------------------------------------------------- vs naive reference

SHAPES = [(3, 4), (2, 3, 1), (3, 2, 3), (2, 3, 3, 4), (1, 1, 1, 1)]
DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduce", [None, "sum"])
def test_matches_naive_with_collisions(shape, dtype, reduce):
    rng = np.random.default_rng(hash((shape, np.dtype(dtype).name, reduce)) % 2**32)
    x = random_values(rng, shape, dtype)
    h, w = (shape[0], shape[1]) if len(shape) < 4 else (shape[1], shape[2])
    out_hw = (2 * h, 2 * w)  # default for kernel 2, stride 2, padding 0
    # small index range: many inputs land on the same cell
    idx = rng.integers(0, min(3, out_hw[0] * out_hw[1]), size=shape)
    got = max_unpool2d(x, idx, 2, reduce=reduce)
    want = naive_unpool(x, idx, out_hw, reduce)
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_last_input_in_row_major_order_wins():
    x = np.array([[1, 2], [3, 4]], dtype=np.float32)
    idx = np.array([[3, 3], [3, 0]])
    got = max_unpool2d(x, idx, 2)
    want = np.zeros((4, 4), np.float32)
    want[0, 0], want[0, 3] = 4, 3  # cell 3 written by 1, then 2, then 3: 3 survives
    np.testing.assert_array_equal(got, want)


def test_collisions_never_cross_channels_or_images():
    x = np.arange(2 * 1 * 2 * 3, dtype=np.int16).reshape(2, 1, 2, 3)
    idx = np.zeros(x.shape, dtype=np.int64)
    got = max_unpool2d(x, idx, (1, 2), output_size=(1, 4))
    # per (n, c): the second column (last in row-major order) wins at cell 0
    np.testing.assert_array_equal(got[:, 0, 0, :], x[:, 0, 1, :])
    assert not got[:, 0, 1:, :].any()


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int32, np.int64])
def test_integer_sum_is_int64_and_never_wraps(dtype):
    info = np.iinfo(dtype)
    x = np.full((2, 2), info.max, dtype=dtype)
    got = max_unpool2d(x, np.zeros((2, 2), np.int64), 2, reduce="sum")
    assert got.dtype == np.int64
    if dtype != np.int64:
        assert got[0, 0] == 4 * int(info.max)
    lo = np.full((2, 2), info.min, dtype=dtype)
    got = max_unpool2d(lo, np.zeros((2, 2), np.int64), 2, reduce="sum")
    if dtype != np.int64:
        assert got[0, 0] == 4 * int(info.min)


def test_uint64_sum_is_uint64():
    x = np.full((1, 2), 2**63, dtype=np.uint64)
    got = max_unpool2d(x, np.array([[0, 1]], np.uint8), (1, 2))
    assert got.dtype == np.uint64
    got = max_unpool2d(x, np.array([[0, 1]], np.uint8), (1, 2), reduce="sum")
    assert got.dtype == np.uint64 and got[0, 0] == 2**63


def test_float_sum_keeps_dtype_and_rounds_once():
    x = np.array([[1.0, 2.0**-24, 2.0**-24]], dtype=np.float32)
    got = max_unpool2d(x, np.zeros((1, 3), np.int64), (1, 3), reduce="sum")
    assert got.dtype == np.float32
    # float32 sequential adds would drop both tiny terms; float64 keeps them, then rounds once
    assert got[0, 0] == np.float32(1.0 + 2.0**-23)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_nan_inf_and_signed_zero_are_moved_verbatim(dtype):
    x = np.array([[np.nan, -np.inf], [-0.0, 5.0]], dtype=dtype)
    idx = np.array([[0, 3], [9, 15]])
    got = max_unpool2d(x, idx, 2)
    assert got.dtype == dtype
    assert np.isnan(got[0, 0]) and got[0, 3] == -np.inf and got[3, 3] == 5
    assert got[2, 1] == 0 and np.signbit(got[2, 1])
    assert np.count_nonzero(~np.isnan(got) & (got != 0)) == 2


def test_dims_agree():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 5, 3))
    v, i = max_pool2d(x, 2, return_indices=True)
    full = max_unpool2d(v, i, 2, output_size=(4, 5))
    np.testing.assert_array_equal(max_unpool2d(v[1], i[1], 2, output_size=(4, 5)), full[1])
    np.testing.assert_array_equal(
        max_unpool2d(v[1, :, :, 2], i[1, :, :, 2], 2, output_size=(4, 5)), full[1, :, :, 2]
    )


def test_output_size_forms_agree():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 7, 6, 3))
    v, i = max_pool2d(x, 3, 2, 1, return_indices=True)
    a = max_unpool2d(v, i, 3, 2, 1, output_size=(7, 6))
    b = max_unpool2d(v, i, 3, 2, 1, output_size=x.shape)  # (n, h, w, c)
    c = max_unpool2d(v, i, 3, 2, 1, output_size=[np.int64(7), np.int64(6)])
    d = max_unpool2d(v[0], i[0], 3, 2, 1, output_size=x.shape[1:])  # (h, w, c)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(a[0], d)
    assert a.shape == x.shape


def test_non_contiguous_inputs():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 8, 2)).astype(np.float32)
    v, i = max_pool2d(x, 2, return_indices=True)
    vt, it = np.asfortranarray(v), np.asfortranarray(i)
    np.testing.assert_array_equal(max_unpool2d(vt, it, 2), max_unpool2d(v.copy(), i.copy(), 2))
    strided = np.zeros((6, 8, 4), np.float32)[:, :, ::2]
    idx = np.zeros((6, 8, 4), np.int32)[:, :, ::2]
    assert max_unpool2d(strided, idx, 1).shape == (6, 8, 2)


def test_unpool_output_size_rule():
    assert unpool_output_size((3, 4), 2) == (6, 8)
    assert unpool_output_size((3, 3), 3, 2, 1) == (5, 5)
    # strictly inside (default - s, default + s)
    assert unpool_output_size((3, 3), 2, 2, 0, (5, 7)) == (5, 7)
    for bad in [(4, 6), (6, 8)]:
        with pytest.raises(ValueError, match="strictly between 4 and 8"):
            unpool_output_size((3, 3), 2, 2, 0, bad)


# --------------------------------------------------------------------------- round trips


@st.composite
def pooled_case(draw):
    k = draw(st.integers(1, 4))
    s = draw(st.integers(1, 4))
    p = draw(st.integers(0, k // 2))
    h = draw(st.integers(k, 12))
    w = draw(st.integers(k, 12))
    c = draw(st.integers(1, 3))
    ceil_mode = draw(st.booleans())
    dtype = draw(st.sampled_from([np.uint8, np.int16, np.float32, np.float64]))
    seed = draw(st.integers(0, 2**32 - 1))
    return k, s, p, (h, w, c), ceil_mode, dtype, seed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pooled_case())
def test_unpool_of_pool_keeps_exactly_the_selected_values(case):
    k, s, p, shape, ceil_mode, dtype, seed = case
    rng = np.random.default_rng(seed)
    x = random_values(rng, shape, dtype)
    v, i = max_pool2d(x, k, s, p, ceil_mode=ceil_mode, return_indices=True)
    y = max_unpool2d(v, i, k, s, p, output_size=shape[:2])
    assert y.shape == x.shape and y.dtype == x.dtype
    selected = np.zeros(x.shape, dtype=bool)
    hh, ww = np.divmod(i, shape[1])
    selected[hh, ww, np.arange(shape[2])] = True
    np.testing.assert_array_equal(y[selected], x[selected])
    assert not y[~selected].any()
    # and the accumulating mode counts how often each cell was selected
    counts = max_unpool2d(np.ones_like(v), i, k, s, p, output_size=shape[:2], reduce="sum")
    naive = np.zeros(x.shape, np.int64)
    np.add.at(naive, (hh, ww, np.arange(shape[2])), 1)
    np.testing.assert_array_equal(counts, naive)


@pytest.mark.parametrize("shape", [(8, 8, 1), (6, 10, 3), (2, 4, 6, 4)])
def test_non_overlapping_2x2_keeps_a_quarter(shape):
    rng = np.random.default_rng(4)
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float32) + 1  # distinct, > 0
    v, i = max_pool2d(x, 2, return_indices=True)
    y = max_unpool2d(v, i, 2)
    assert y.shape == x.shape
    assert np.count_nonzero(y) / y.size == 0.25
    np.testing.assert_array_equal(y[y != 0], x[y != 0])


# --------------------------------------------------------------------------- errors


def test_rejects_index_outside_plane():
    x = np.ones((2, 2), np.float32)
    msg = r"invalid max index 16 at position \(1, 1\).*\[0, 16\).*4x4"
    with pytest.raises(ValueError, match=msg):
        max_unpool2d(x, np.array([[0, 1], [2, 16]]), 2)
    with pytest.raises(ValueError, match=r"invalid max index -1 at position \(0, 1\)"):
        max_unpool2d(x, np.array([[0, -1], [2, 3]]), 2)
    # in range for the default 4x4 plane, not for an explicit 3x3 one
    with pytest.raises(ValueError, match=r"invalid max index 12 .*\[0, 9\) for a 3x3"):
        max_unpool2d(x, np.array([[0, 1], [2, 12]]), 2, output_size=(3, 3))


def test_rejects_huge_unsigned_index():
    with pytest.raises(ValueError, match="invalid max index 18446744073709551615"):
        max_unpool2d(np.ones((1, 1)), np.array([[2**64 - 1]], np.uint64), 2)


def test_rejects_output_size_outside_torch_range():
    x = np.ones((3, 3))
    i = np.zeros((3, 3), np.int64)
    # default 6 (kernel 2, stride 2); torch allows 5..7 only
    with pytest.raises(ValueError, match=r"dim 0 \(h\) must lie strictly between 4 and 8"):
        max_unpool2d(x, i, 2, output_size=(8, 6))
    with pytest.raises(ValueError, match=r"dim 1 \(w\) must lie strictly between 4 and 8"):
        max_unpool2d(x, i, 2, output_size=(6, 4))
    assert max_unpool2d(x, i, 2, output_size=(5, 7)).shape == (5, 7)


def test_rejects_output_size_of_wrong_length_or_dims():
    x = np.ones((2, 3, 3, 2))
    i = np.zeros(x.shape, np.int64)
    with pytest.raises(ValueError, match="2 elements .* got 1"):
        max_unpool2d(x, i, 2, output_size=(6,))
    with pytest.raises(ValueError, match="got 5"):
        max_unpool2d(x, i, 2, output_size=(1, 2, 6, 6, 2))
    with pytest.raises(ValueError, match="has c=3 but the input has c=2"):
        max_unpool2d(x, i, 2, output_size=(2, 6, 6, 3))
    with pytest.raises(ValueError, match="has n=1 but the input has n=2"):
        max_unpool2d(x, i, 2, output_size=(1, 6, 6, 2))
    with pytest.raises(TypeError, match="output_size must hold ints"):
        max_unpool2d(x, i, 2, output_size=(6.0, 6))
    with pytest.raises(TypeError, match="output_size must be a sequence"):
        max_unpool2d(x, i, 2, output_size=6)


def test_rejects_empty_output():
    # default size (1-1)*1 - 0 + 1 = 1 is fine; padding pushes it below 1
    with pytest.raises(ValueError, match="at least 1x1, got -1x-1"):
        max_unpool2d(np.ones((1, 1)), np.zeros((1, 1), np.int64), 1, 1, 1)


def test_rejects_shape_mismatch():
    msg = r"same shape as x: x has shape \(2, 2\), indices \(2, 1\)"
    with pytest.raises(ValueError, match=msg):
        max_unpool2d(np.ones((2, 2)), np.zeros((2, 1), np.int64), 2)
    with pytest.raises(ValueError, match="same shape"):
        max_unpool2d(np.ones((2, 2, 1)), np.zeros((2, 2), np.int64), 2)


@pytest.mark.parametrize(
    "bad", [np.zeros((2, 2)), np.zeros((2, 2), bool), np.array([["a"] * 2] * 2)]
)
def test_rejects_non_integer_indices(bad):
    with pytest.raises(TypeError, match="indices must have an integer dtype"):
        max_unpool2d(np.ones((2, 2)), bad, 2)


def test_rejects_bad_arguments():
    x, i = np.ones((2, 2)), np.zeros((2, 2), np.int64)
    with pytest.raises(ValueError, match="reduce must be None or 'sum', got 'mean'"):
        max_unpool2d(x, i, 2, reduce="mean")
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        max_unpool2d(x, i, 0)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        max_unpool2d(x, i, 2, 0)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        max_unpool2d(x, i, 2, 2, -1)
    with pytest.raises(ValueError, match=r"\(H, W\), \(H, W, C\) or \(N, H, W, C\)"):
        max_unpool2d(np.ones(4), np.zeros(4, np.int64), 2)
    with pytest.raises(TypeError, match="real numeric dtype"):
        max_unpool2d(np.ones((2, 2), bool), i, 2)


def test_doctests():
    result = doctest.testmod(unpool_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- live PyTorch


def _torch():
    return pytest.importorskip("torch")


def _nchw(t, a):
    """NHWC numpy -> contiguous NCHW tensor (torch's deterministic CPU unpool kernel)."""
    return t.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def _random_pool_case(rng):
    k = int(rng.integers(1, 5))
    s = int(rng.integers(1, 5))
    p = int(rng.integers(0, k // 2 + 1))
    shape = (int(rng.integers(1, 3)), int(rng.integers(k, 13)), int(rng.integers(k, 13)),
             int(rng.integers(1, 4)))
    return k, s, p, bool(rng.random() < 0.5), shape


@pytest.mark.parametrize("seed", range(200))
def test_matches_torch_max_unpool2d(seed):
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(1000 + seed)
    k, s, p, ceil_mode, shape = _random_pool_case(rng)
    # few distinct values: ties, so torch's tie rule for the indices is exercised too
    x = rng.integers(0, 5, size=shape).astype(np.float32) if seed % 2 else \
        rng.standard_normal(shape).astype(np.float32)
    tv, ti = F.max_pool2d(_nchw(torch, x), k, s, p, ceil_mode=ceil_mode, return_indices=True)
    v, i = _nhwc(tv), _nhwc(ti)
    for output_size in (shape[1:3], None):
        try:
            want = _nhwc(F.max_unpool2d(tv, ti, k, s, p, output_size))
        except (ValueError, RuntimeError) as exc:
            with pytest.raises(ValueError):
                max_unpool2d(v, i, k, s, p, output_size=output_size)
            assert output_size is None or "output_size" in str(exc)
            continue
        if want.size == 0:  # torch returns an empty plane (e.g. default 0x12); poolcli refuses
            with pytest.raises(ValueError, match="at least 1x1"):
                max_unpool2d(v, i, k, s, p, output_size=output_size)
            continue
        got = max_unpool2d(v, i, k, s, p, output_size=output_size)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


@pytest.fixture
def one_torch_thread():
    """torch's unpool kernel for channels-last tensors (which includes contiguous ones with C=1)
    scatters pixels in parallel, so on several threads the survivor of a collision depends on
    timing. On one thread every kernel writes in row-major order and the last write wins."""
    torch = _torch()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(before)


@pytest.mark.parametrize("seed", range(40))
def test_overlap_winner_matches_torch(seed, one_torch_thread):
    """Arbitrary indices with many collisions: torch keeps the last write in row-major order."""
    torch = one_torch_thread
    F = torch.nn.functional
    rng = np.random.default_rng(2000 + seed)
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 6)), int(rng.integers(1, 6)),
             int(rng.integers(1, 4)))
    k = int(rng.integers(1, 4))
    plane = (shape[1] * k) * (shape[2] * k)
    x = rng.standard_normal(shape)
    i = rng.integers(0, max(1, plane // 4), size=shape)
    want = _nhwc(F.max_unpool2d(_nchw(torch, x), _nchw(torch, i), k))
    np.testing.assert_array_equal(max_unpool2d(x, i, k), want)


@pytest.mark.parametrize("seed", range(60))
def test_sum_mode_is_max_pool2d_backward(seed):
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(3000 + seed)
    k, s, p, ceil_mode, shape = _random_pool_case(rng)
    if seed < 20:  # make sure overlapping windows are well represented
        k, s, p = 3, int(rng.integers(1, 3)), int(rng.integers(0, 2))
        shape = (shape[0], max(shape[1], 3), max(shape[2], 3), shape[3])
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64)  # distinct values
    tx = _nchw(torch, x).requires_grad_(True)
    out, ti = F.max_pool2d(tx, k, s, p, ceil_mode=ceil_mode, return_indices=True)
    upstream = rng.standard_normal(out.shape) if seed % 2 else np.ones(out.shape)
    (out * torch.from_numpy(upstream)).sum().backward()
    want = _nhwc(tx.grad)
    g = upstream.transpose(0, 2, 3, 1)
    got = max_unpool2d(g, _nhwc(ti), k, s, p, output_size=shape[1:3], reduce="sum")
    assert got.shape == want.shape and got.dtype == np.float64
    if seed % 2:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    else:
        np.testing.assert_array_equal(got, want)
        # our own max_pool2d gives the same indices, so the whole backward is torch-free
        _, i = max_pool2d(x, k, s, p, ceil_mode=ceil_mode, return_indices=True)
        ones = np.ones(i.shape)
        np.testing.assert_array_equal(
            max_unpool2d(ones, i, k, s, p, output_size=x.shape, reduce="sum"), want
        )


def test_torch_rejects_what_we_reject():
    torch = _torch()
    F = torch.nn.functional
    x = torch.ones(1, 1, 3, 3)
    i = torch.zeros(1, 1, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="must be between 4 and 8"):
        F.max_unpool2d(x, i, 2, output_size=(8, 6))  # torch: exclusive, despite "between"
    i[0, 0, 2, 2] = 36
    with pytest.raises(RuntimeError, match="invalid max index: 36"):
        F.max_unpool2d(x, i, 2)


def test_dilated_pooling_unpools_with_the_effective_kernel():
    """PyTorch's output_size rule ignores dilation; the effective kernel d*(k-1)+1 restores it."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((10, 10, 2))
    v, i = max_pool2d(x, 3, 1, dilation=2, return_indices=True)  # 6x6
    with pytest.raises(ValueError, match="strictly between 7 and 9"):
        max_unpool2d(v, i, 3, 1, output_size=x.shape)
    y = max_unpool2d(v, i, 2 * (3 - 1) + 1, 1, output_size=x.shape)
    assert y.shape == x.shape
    np.testing.assert_array_equal(y[y != 0], x[y != 0])


def test_output_size_as_array_and_bad_containers():
    x, i = np.ones((3, 3)), np.zeros((3, 3), np.int64)
    assert max_unpool2d(x, i, 2, output_size=np.array([6, 5])).shape == (6, 5)
    for bad in (np.array(6), "66", 6.0):
        with pytest.raises(TypeError, match="output_size must be a sequence"):
            max_unpool2d(x, i, 2, output_size=bad)
