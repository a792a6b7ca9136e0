"""The fast paths of ``poolcli.ops._adaptive`` give bit-identical results to the general ones.

Periodic adaptive windows (``_Windows.period``: e.g. 4096 -> 1280 repeats every 5 windows / 16
cells) are pooled one residue class at a time with basic slices. These tests run every case
twice, with the periodic path and with it disabled (``_PERIOD_MAX = 0``, the general row and
column passes), and require the same bits, sign of zero and NaN positions included; integer
averages are also checked against exact float64 means.
"""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from poolcli import ops
from poolcli.ops import _adaptive
from poolcli.ops._geometry import adaptive_bounds


def _general(monkeypatch, fn, *args):
    with monkeypatch.context() as m:
        m.setattr(_adaptive, "_PERIOD_MAX", 0)
        return fn(*args)


def _bits_equal(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype
    if a.dtype.kind == "f":
        assert np.array_equal(np.isnan(a), np.isnan(b))
        ok = ~np.isnan(a)
        assert np.array_equal(a[ok].view(f"u{a.itemsize}"), b[ok].view(f"u{b.itemsize}"))
    else:
        assert np.array_equal(a, b)


def _data(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        x = (rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 1e4], shape)).astype(dtype)
        x[rng.random(shape) < 0.3] = -0.0
        x[rng.random(shape) < 0.1] = 0.0
        return x
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def _periodic(n, out):
    return _adaptive._Windows(*adaptive_bounds(n, out), n).period is not None


SIZES = [  # (H, W, C), output sizes: periodic ones and a few that are not
    ((64, 80, 3), [(20, 25), (16, 20), (48, 60), (32, 40), (7, 7), (63, 79)]),
    ((128, 100, 1), [(40, 75), (100, 60), (96, 25), (40, 1), (1, 75)]),
    ((50, 48, 4), [(40, 36), (10, 12), (25, 16)]),
]


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "int32", "int64",
                                   "float16", "float32", "float64"])
@pytest.mark.parametrize("shape,outs", SIZES)
def test_adaptive_periodic_matches_general(monkeypatch, dtype, shape, outs):
    rng = np.random.default_rng(7)
    x = _data(rng, (2,) + shape, dtype)
    for out in outs:
        for fn in (ops.adaptive_avg_pool2d, ops.adaptive_max_pool2d):
            _bits_equal(fn(x, out), _general(monkeypatch, fn, x, out))


def test_cases_use_the_periodic_path():
    assert _periodic(4096, 1280) and _periodic(64, 20) and _periodic(128, 40)
    assert not _periodic(64, 63)  # one period: nothing to gain


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_sign_of_zero_and_nan(monkeypatch, dtype):
    rng = np.random.default_rng(3)
    x = np.full((128, 128, 3), -0.0, dtype)
    x[:40] = rng.standard_normal((40, 128, 3))
    x[100:, :5] = np.nan
    for out in [(40, 40), (100, 100), (32, 96), (20, 20), (127, 127), (64, 20)]:
        for fn in (ops.adaptive_avg_pool2d, ops.adaptive_max_pool2d):
            _bits_equal(fn(x, out), _general(monkeypatch, fn, x, out))


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16"])
def test_integer_average_is_exact(dtype):
    rng = np.random.default_rng(5)
    x = _data(rng, (96, 120, 3), dtype)
    want = ref.adaptive_avg_pool2d(x, (30, 75))
    got = ops.adaptive_avg_pool2d(x, (30, 75))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_non_contiguous_input(monkeypatch):
    rng = np.random.default_rng(9)
    x = _data(rng, (80, 130, 3), "float32")[:, ::2]
    for fn in (ops.adaptive_avg_pool2d, ops.adaptive_max_pool2d):
        _bits_equal(fn(x, (20, 25)), _general(monkeypatch, fn, x, (20, 25)))
        _bits_equal(fn(x, (20, 25)), fn(np.ascontiguousarray(x), (20, 25)))
