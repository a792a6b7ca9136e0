"""poolcli.ops against a live PyTorch (CI installs ``poolcli[torch]``; skipped without torch).

~200 fresh random cases per operator from a seeded numpy RNG, over the same parameter space as
``scripts/make_pool_fixtures.py``: random kernel/stride/padding/dilation/ceil_mode (sometimes
invalid on purpose: whenever torch refuses a combination poolcli must raise ValueError), inputs
with ties, NaN and +-inf, float32/float64/uint8. Arrays are channels-last ``(N, H, W, C)``; torch
sees ``torch.from_numpy(x.transpose(0, 3, 1, 2))`` and its results come back through
``.permute(0, 2, 3, 1)``.

Case ``i`` of operator ``op`` uses ``numpy.random.default_rng((SEED, OPS.index(op), i))``, so a
failing id such as ``test_max_pool2d[max_pool2d-137]`` reproduces on its own.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import reference as ref

torch = pytest.importorskip("torch")
F = torch.nn.functional

SEED = 0x9001
N_CASES = 200
OPS = ["max_pool2d", "min_pool2d", "avg_pool2d", "lp_pool2d", "adaptive_avg_pool2d",
       "adaptive_max_pool2d", "max_unpool2d", "max_pool2d_backward"]


def op(name):
    mod = importlib.import_module("poolcli.ops")
    try:
        return getattr(mod, name)
    except AttributeError:
        raise ImportError(f"cannot import name {name!r} from 'poolcli.ops'") from None


def ids(name):
    return [pytest.param(i, id=f"{name}-{i:03d}") for i in range(N_CASES)]


def rng_for(name, i):
    return np.random.default_rng((SEED, OPS.index(name), i))


# ----------------------------------------------------------------------------- torch helpers

def to_torch(x):
    return torch.from_numpy(x.transpose(0, 3, 1, 2))


def to_numpy(t):
    return np.ascontiguousarray(t.detach().permute(0, 2, 3, 1).numpy())


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def torch_max(x, p):
    if x.dtype.kind in "iu":
        # torch 2.13's channels-last integer kernel fails ("input_depth * input_height *
        # input_width <= numeric_limits<integer_t>::max()") once C*H*W exceeds the dtype's range;
        # float64 is exact for these values and follows the same tie rule.
        v, i = torch_max(x.astype(np.float64), p)
        return v.astype(x.dtype), i
    v, i = F.max_pool2d(to_torch(x), p["kernel_size"], p["stride"], p["padding"], p["dilation"],
                        p["ceil_mode"], return_indices=True)
    return to_numpy(v), to_numpy(i)


def torch_min(x, p):
    if x.dtype.kind in "iu":
        v, i = torch_max(-x.astype(np.int32), p)
        return (-v).astype(x.dtype), i
    v, i = torch_max(-x, p)
    return -v, i


# ----------------------------------------------------------------------------- random cases

def rand_shape(rng):
    return (int(rng.choice([1, 2])), int(rng.integers(1, 14)), int(rng.integers(1, 14)),
            int(rng.choice([1, 3, 4])))


def rand_int_or_pair(rng, lo, hi):
    if rng.random() < 0.4:
        return (int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1)))
    return int(rng.integers(lo, hi + 1))


def rand_pool_params(rng, *, dilation=True, invalid=0.08):
    k = rand_int_or_pair(rng, 1, 4)
    kh, kw = pair(k)
    stride = None if rng.random() < 0.3 else rand_int_or_pair(rng, 1, 4)
    if rng.random() < invalid:  # padding beyond k // 2 on purpose: must be rejected
        ph, pw = int(rng.integers(0, kh + 1)), int(rng.integers(0, kw + 1))
    else:
        ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
    padding = ph if ph == pw and rng.random() < 0.6 else (ph, pw)
    p = {"kernel_size": k, "stride": stride, "padding": padding}
    if dilation:
        p["dilation"] = 1 if rng.random() < 0.5 else rand_int_or_pair(rng, 1, 3)
    p["ceil_mode"] = bool(rng.random() < 0.5)
    return p


def max_input(rng, shape, *, allow_int=True):
    r = rng.random()
    if r < 0.12:
        x = rng.integers(0, 4, size=shape).astype(np.float64)
    elif r < 0.2 and allow_int:
        x = rng.integers(0, 256 if rng.random() < 0.5 else 4, size=shape).astype(np.uint8)
    else:
        x = rng.integers(0, 4, size=shape).astype(np.float32)
    if x.dtype.kind == "f":
        r = rng.random()
        if r < 0.18:
            x[rng.random(shape) < rng.choice([0.1, 0.3, 0.6])] = np.nan
        elif r < 0.30:
            x[rng.random(shape) < rng.choice([0.2, 0.5, 0.9])] = -np.inf
            if rng.random() < 0.4:
                x[rng.random(shape) < 0.1] = np.inf
    return x


def empty_windows(n, k, s, p, d, ceil_mode):
    out = ref.output_size(n, k, s, p, d, ceil_mode)
    return any(not any(0 <= o * s - p + j * d < n for j in range(k)) for o in range(max(out, 0)))


def has_empty_window(shape, p):
    """Some dilated window holds only padding: torch answers -inf and a meaningless index."""
    (kh, kw), (ph, pw), (dh, dw) = pair(p["kernel_size"]), pair(p["padding"]), pair(p["dilation"])
    sh, sw = pair(p["stride"]) if p["stride"] is not None else (kh, kw)
    if min(kh, kw, sh, sw, dh, dw) <= 0 or min(ph, pw) < 0:
        return False
    return empty_windows(shape[1], kh, sh, ph, dh, p["ceil_mode"]) or \
        empty_windows(shape[2], kw, sw, pw, dw, p["ceil_mode"])


# ----------------------------------------------------------------------------- assertions

def assert_selected(res, want_v, want_i, x):
    assert isinstance(res, tuple) and len(res) == 2
    vals, idx = res
    assert vals.shape == want_v.shape and idx.shape == want_i.shape
    assert vals.dtype == x.dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, want_i, err_msg="indices differ from torch")
    np.testing.assert_array_equal(vals, want_v, err_msg="values differ from torch")


def assert_close(got, want):
    assert got.shape == want.shape, f"shape {got.shape} != torch {want.shape}"
    assert got.dtype == want.dtype, f"dtype {got.dtype} != torch {want.dtype}"
    if want.dtype == np.float64:
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- tests


def _check_selecting(name, i):
    rng = rng_for(name, i)
    shape = rand_shape(rng)
    p = rand_pool_params(rng)
    x = max_input(rng, shape)
    if has_empty_window(shape, p):
        if x.dtype.kind != "f":
            return  # torch's -inf cannot be represented; nothing to compare
        quirk = True
    else:
        quirk = False
    f = op(name)
    try:
        want_v, want_i = (torch_max if name == "max_pool2d" else torch_min)(x, p)
    except RuntimeError as exc:
        with pytest.raises(ValueError):
            f(x, **p, return_indices=True)
        return exc
    if quirk:  # see test_ops_torch_fixtures.test_all_padding_window
        try:
            res = f(x, **p, return_indices=True)
        except ValueError:
            return None
    else:
        res = f(x, **p, return_indices=True)
    assert_selected(res, want_v, want_i, x)
    np.testing.assert_array_equal(f(x, **p), want_v)
    return None


@pytest.mark.parametrize("i", ids("max_pool2d"))
def test_max_pool2d(i):
    _check_selecting("max_pool2d", i)


@pytest.mark.parametrize("i", ids("min_pool2d"))
def test_min_pool2d(i):
    _check_selecting("min_pool2d", i)


@pytest.mark.parametrize("i", ids("avg_pool2d"))
def test_avg_pool2d(i):
    rng = rng_for("avg_pool2d", i)
    shape = rand_shape(rng)
    p = rand_pool_params(rng, dilation=False)
    p["count_include_pad"] = bool(rng.random() < 0.5)
    p["divisor_override"] = None if rng.random() < 0.6 else int(rng.integers(0 if i % 50 == 7 else 1, 8))
    dtype = np.float64 if rng.random() < 0.25 else np.float32
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    f = op("avg_pool2d")
    try:
        want = to_numpy(F.avg_pool2d(to_torch(x), p["kernel_size"], p["stride"], p["padding"],
                                     p["ceil_mode"], p["count_include_pad"], p["divisor_override"]))
    except RuntimeError:
        with pytest.raises(ValueError):
            f(x, **p)
        return
    assert_close(f(x, **p), want)


@pytest.mark.parametrize("i", ids("lp_pool2d"))
def test_lp_pool2d(i):
    rng = rng_for("lp_pool2d", i)
    shape = rand_shape(rng)
    k = rand_int_or_pair(rng, 1, 4)
    stride = None if rng.random() < 0.3 else rand_int_or_pair(rng, 1, 4)
    norm = [1, 2, 3, 1.5][int(rng.integers(0, 4))]
    (kh, kw), (sh, sw) = pair(k), pair(stride if stride is not None else k)
    # ceil_mode only where it adds no partial window: torch's lp (avg x kernel area) over-counts
    # those, poolcli sums real cells only (DESIGN.md)
    full = shape[1] >= kh and shape[2] >= kw and (shape[1] - kh) % sh == 0 and (shape[2] - kw) % sw == 0
    ceil = bool(full and rng.random() < 0.5)
    dtype = np.float64 if rng.random() < 0.25 else np.float32
    x = rng.uniform(0.05, 2.0, size=shape).astype(dtype)
    f = op("lp_pool2d")
    try:
        want = to_numpy(F.lp_pool2d(to_torch(x), norm, k, stride, ceil))
    except RuntimeError:
        with pytest.raises(ValueError):
            f(x, norm, k, stride, ceil_mode=ceil)
        return
    assert_close(f(x, norm, k, stride, ceil_mode=ceil), want)


def _rand_out(rng, n):
    r = rng.random()
    if r < 0.4:
        return int(rng.integers(1, n + 1))
    if r < 0.55:
        return n
    return int(rng.integers(n + 1, 2 * n + 4))


@pytest.mark.parametrize("i", ids("adaptive_avg_pool2d"))
def test_adaptive_avg_pool2d(i):
    rng = rng_for("adaptive_avg_pool2d", i)
    shape = rand_shape(rng)
    o = (_rand_out(rng, shape[1]), _rand_out(rng, shape[2]))
    dtype = np.float64 if rng.random() < 0.25 else np.float32
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    want = to_numpy(F.adaptive_avg_pool2d(to_torch(x), o))
    assert_close(op("adaptive_avg_pool2d")(x, o), want)
    if o[0] == o[1]:
        assert_close(op("adaptive_avg_pool2d")(x, o[0]), want)


@pytest.mark.parametrize("i", ids("adaptive_max_pool2d"))
def test_adaptive_max_pool2d(i):
    rng = rng_for("adaptive_max_pool2d", i)
    shape = rand_shape(rng)
    o = (_rand_out(rng, shape[1]), _rand_out(rng, shape[2]))
    x = max_input(rng, shape, allow_int=False)  # torch: not implemented for integer dtypes
    v, ix = F.adaptive_max_pool2d(to_torch(x), o, return_indices=True)
    assert_selected(op("adaptive_max_pool2d")(x, o, return_indices=True), to_numpy(v),
                    to_numpy(ix), x)


@pytest.mark.parametrize("i", ids("max_unpool2d"))
def test_max_unpool2d(i):
    rng = rng_for("max_unpool2d", i)
    shape = rand_shape(rng)
    p = rand_pool_params(rng, dilation=False, invalid=0.0)
    p["dilation"] = 1
    x = rng.integers(0, int(rng.choice([4, 100])), size=shape).astype(np.float32)
    try:
        v, ix = torch_max(x, p)
    except RuntimeError:
        return  # pooling itself rejected: covered by test_max_pool2d
    given = rng.random() < 0.8
    out_size = (shape[1], shape[2]) if given else None
    f = op("max_unpool2d")
    try:
        want = to_numpy(F.max_unpool2d(to_torch(v), to_torch(ix), p["kernel_size"], p["stride"],
                                       p["padding"], out_size))
    except ValueError:
        return  # torch's output_size within default +- stride rule: not required of poolcli
    except RuntimeError:  # an index outside the default-size plane
        with pytest.raises(ValueError):
            f(v, ix, p["kernel_size"], p["stride"], p["padding"], output_size=out_size)
        return
    if want.size == 0:
        # torch's default size can be 0 (e.g. w=1, k=4, p=2: (1-1)*4 - 4 + 4); it then returns an
        # empty tensor without checking the indices. Nothing can be unpooled into it: ValueError.
        with pytest.raises(ValueError):
            f(v, ix, p["kernel_size"], p["stride"], p["padding"], output_size=out_size)
        return
    got = f(v, ix, p["kernel_size"], p["stride"], p["padding"], output_size=out_size)
    assert got.shape == want.shape and got.dtype == v.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("i", ids("max_pool2d_backward"))
def test_max_pool2d_backward_is_accumulating_unpool(i):
    rng = rng_for("max_pool2d_backward", i)
    k = rand_int_or_pair(rng, 2, 4)
    kh, kw = pair(k)
    s = rand_int_or_pair(rng, 1, 2)
    pd = (int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1)))
    ceil = bool(rng.random() < 0.5)
    n, c = int(rng.choice([1, 2])), int(rng.choice([1, 3]))
    h, w = int(rng.integers(3, 12)), int(rng.integers(3, 12))
    x = rng.permutation(n * h * w * c).reshape(n, h, w, c).astype(np.float64)  # no ties
    t = to_torch(x).clone().requires_grad_(True)
    try:
        out, ix = F.max_pool2d(t, k, s, pd, 1, ceil, return_indices=True)
    except RuntimeError:
        return
    out.sum().backward()
    want_grad = to_numpy(t.grad)
    vals, idx = op("max_pool2d")(x, k, s, pd, 1, ceil, return_indices=True)
    np.testing.assert_array_equal(vals, to_numpy(out))
    np.testing.assert_array_equal(idx, to_numpy(ix))
    grad = op("max_unpool2d")(np.ones_like(vals), idx, k, s, pd, output_size=(h, w), reduce="sum")
    assert grad.shape == want_grad.shape
    np.testing.assert_array_equal(grad, want_grad)
