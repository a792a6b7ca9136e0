"""Banded evaluation (ops/_bands.py) equals the whole-image operators bit for bit.

For random geometries (padding, dilation, ceil_mode, odd sizes) and band heights 1..7, each
operator is run on the slices :meth:`BandRows.slice_for` names and the kept rows are compared
with the whole-image result with ``np.array_equal`` (NaN-aware where floats are involved);
selection indices must be global.
"""

from __future__ import annotations

import numpy as np
import pytest

from poolcli import ops
from poolcli.ops import blur_rows, keep_band, order_safe, plan_bands, window_rows


def banded(fn, x, rows, band):
    """``fn`` run band by band over ``x``'s rows and stacked, as the streaming path does."""
    parts = []
    for a, b in plan_bands(rows, band):
        r0, r1, skip = rows.slice_for(a, b)
        parts.append(keep_band(fn(x[r0:r1]), skip, b - a, r0, x.shape[1]))
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate(p) for p in zip(*parts))
    return np.concatenate(parts)


def same(a, b):
    if isinstance(a, tuple):
        return all(same(u, v) for u, v in zip(a, b))
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


def image(rng, h, w, c, dtype):
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal((h, w, c)).astype(dtype) * 10
    return rng.integers(0, np.iinfo(dtype).max, (h, w, c), endpoint=True).astype(dtype)


def geometry(rng, padded=True):
    k = (int(rng.integers(1, 6)), int(rng.integers(1, 5)))
    s = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    p = (int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1))) \
        if padded else (0, 0)
    d = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    return k, s, p, d, bool(rng.integers(0, 2))


# (name, function(x, k, s, p, d, ceil) -> result, uses padding, uses dilation, exact arithmetic)
OPERATORS = {
    "max": (lambda x, k, s, p, d, c: ops.max_pool2d(x, k, s, p, d, c), True, True, True),
    "max-indices": (lambda x, k, s, p, d, c: ops.max_pool2d(x, k, s, p, d, c, True),
                    True, True, True),
    "min-indices": (lambda x, k, s, p, d, c: ops.min_pool2d(x, k, s, p, d, c, True),
                    True, True, True),
    "avg": (lambda x, k, s, p, d, c: ops.avg_pool2d(x, k, s, p, c), True, False, False),
    "avg-no-pad-count": (lambda x, k, s, p, d, c: ops.avg_pool2d(x, k, s, p, c, False),
                         True, False, False),
    "lp": (lambda x, k, s, p, d, c: ops.lp_pool2d(x, 3.0, k, s, c), False, False, False),
    "lp2": (lambda x, k, s, p, d, c: ops.lp_pool2d(x, 2, k, s, c), False, False, False),
    "mixed": (lambda x, k, s, p, d, c: ops.mixed_pool2d(x, k, s, p, c, alpha=0.3),
              True, False, False),
    "softpool": (lambda x, k, s, p, d, c: ops.softpool2d(x, k, s, c), False, False, False),
    "gem": (lambda x, k, s, p, d, c: ops.gem_pool2d(x, k, s, c, p=3.0), False, False, False),
    "lse": (lambda x, k, s, p, d, c: ops.lse_pool2d(x, k, s, c, r=2.0), False, False, False),
    "sort": (lambda x, k, s, p, d, c: ops.sort_pool2d(x, k, s, (0.7, 0.3)[: k[0] * k[1]], p, c),
             True, False, False),
}


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("name", list(OPERATORS))
def test_banded_equals_whole(name, dtype):
    fn, padded, dilated, exact = OPERATORS[name]
    rng = np.random.default_rng(abs(hash((name, np.dtype(dtype).name))) % 2**32)
    tried = 0
    while tried < 12:
        k, s, p, d, ceil = geometry(rng, padded)
        d = d if dilated else (1, 1)
        h, w = int(rng.integers(5, 24)), int(rng.integers(5, 16))
        x = image(rng, h, w, int(rng.integers(1, 4)), dtype)
        try:
            whole = fn(x, k, s, p, d, ceil)
        except ValueError:  # geometry too large for this image
            continue
        tried += 1
        rows = window_rows(h, k, s, p, d, ceil)
        assert rows.out == (whole[0] if isinstance(whole, tuple) else whole).shape[0]
        if not order_safe(rows, exact or np.dtype(dtype).kind in "iu" and name == "avg"):
            continue
        for band in range(1, 8):
            assert same(banded(lambda xs: fn(xs, k, s, p, d, ceil), x, rows, band), whole), \
                (name, k, s, p, d, ceil, h, w, band)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_blur_banded_equals_whole(dtype):
    rng = np.random.default_rng(5)
    for _ in range(10):
        k, s = int(rng.integers(1, 8)), int(rng.integers(1, 4))
        h, w = int(rng.integers(8, 30)), 9
        x = image(rng, h, w, 3, dtype)
        padding = None if rng.integers(0, 2) else int(rng.integers(0, k // 2 + 1))
        whole = ops.blur_pool2d(x, k, s, padding)
        rows = blur_rows(h, k, s, padding)
        assert rows.out == whole.shape[0]
        for band in range(1, 8):
            assert same(banded(lambda xs: ops.blur_pool2d(xs, k, s, padding), x, rows, band),
                        whole), (k, s, padding, h, band)


def test_indices_are_global():
    x = np.zeros((9, 4, 1), np.uint8)
    x[7, 2, 0] = 9
    rows = window_rows(9, 3, 2, 1, 1, False)
    values, idx = banded(lambda xs: ops.max_pool2d(xs, 3, 2, 1, 1, False, True), x, rows, 1)
    assert idx.max() == 7 * 4 + 2
    assert same((values, idx), ops.max_pool2d(x, 3, 2, 1, 1, False, True))


def test_float_sums_over_padded_rows_are_not_order_safe():
    rows = window_rows(20, 3, 1, 1, 1, False)
    assert not order_safe(rows, exact=False)
    assert order_safe(rows, exact=True)
    assert order_safe(window_rows(20, 3, 1, 0, 1, False), exact=False)
    assert order_safe(window_rows(20, 2, 1, 1, 1, False), exact=False)


def test_row_blocks_regroup_any_bands_into_the_blocks_from_row_0():
    from poolcli.ops import RowBlocks

    a = np.arange(23 * 2).reshape(23, 2)
    for bands in ([23], [1] * 23, [5, 1, 9, 8], [7, 7, 7, 2]):
        blocks, rows, at = [], RowBlocks(7), 0
        for n in bands:
            blocks += list(rows.feed(a[at:at + n]))
            at += n
        blocks.append(rows.rest())
        assert rows.rest() is None
        expected = [a[0:7], a[7:14], a[14:21], a[21:23]]  # fixed blocks, the last one short
        assert len(blocks) == len(expected)
        for got, want in zip(blocks, expected):
            np.testing.assert_array_equal(got, want)
