"""The naive reference the ops tests check against: the spec of DESIGN.md, "Window semantics".

Plain Python loops over windows and cells, sums with ``math.fsum`` (exactly rounded float64), no
numpy tricks, so each rule reads off directly. It lives with the tests, not in the package: an
independent spec is more trustworthy than a second implementation shipped beside the first.
Slow by design: use small arrays.

Arrays are channels-last ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``; results have the input's
number of dimensions. Selections (max/min) keep the input dtype and return int64 indices
``h * W + w``; averages and Lp return float64 (compare with the dtype poolcli returns, see
:func:`average_dtype`).
"""

from __future__ import annotations

import math

import numpy as np


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def output_size(n, k, s=None, p=0, d=1, ceil_mode=False):
    """Output length of one pooled axis, PyTorch's rule; below 1 the geometry is invalid."""
    s = k if s is None else s
    out = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n + p:  # the last window would start in the padding
        out -= 1
    return out


def adaptive_window(i, n, out):
    """Input cells ``[start, end)`` of adaptive output cell ``i``."""
    return (i * n) // out, -(-(i + 1) * n // out)  # floor(i*n/out), ceil((i+1)*n/out)


def average_dtype(dtype):
    """dtype of poolcli's averages and Lp norms for the inputs the tests use (8/16-bit integers,
    float32, float64, small windows): float64 for float64 input, else float32."""
    return np.dtype(np.float64 if np.dtype(dtype) == np.float64 else np.float32)


def batch(x):
    """``x`` as ``(N, H, W, C)``, and a function giving an ``(N, h, w, C)`` result ``x``'s ndim."""
    x = np.asarray(x)
    if x.ndim == 2:
        return x[None, :, :, None], lambda y: y[0, :, :, 0]
    if x.ndim == 3:
        return x[None], lambda y: y[0]
    return x, lambda y: y


def windows(x4, rows_of, cols_of, oh, ow):
    """Yield ``(b, i, j, cells)`` for every output cell of every image of ``x4`` (N, H, W, C).

    Window ``(i, j)`` reads rows ``rows_of(i)`` x columns ``cols_of(j)``, in that (row-major)
    order; ``cells`` lists ``(h * W + w, pixel)`` for its in-bounds cells only, ``pixel`` being the
    channel values as Python numbers.
    """
    n, h, w, _ = x4.shape
    data = x4.tolist()
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                yield b, i, j, [(r * w + q, data[b][r][q]) for r in rows_of(i)
                                for q in cols_of(j) if 0 <= r < h and 0 <= q < w]


def pool_windows(x4, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """``((oh, ow), windows)`` of fixed-window pooling: window ``(i, j)`` reads rows
    ``i*s - p + t*d`` for taps ``t < k`` (and likewise columns)."""
    (kh, kw), (ph, pw), (dh, dw) = pair(kernel_size), pair(padding), pair(dilation)
    sh, sw = pair(stride) if stride is not None else (kh, kw)
    oh = output_size(x4.shape[1], kh, sh, ph, dh, ceil_mode)
    ow = output_size(x4.shape[2], kw, sw, pw, dw, ceil_mode)
    rows_of = lambda i: [i * sh - ph + t * dh for t in range(kh)]  # noqa: E731
    cols_of = lambda j: [j * sw - pw + t * dw for t in range(kw)]  # noqa: E731
    return (oh, ow), windows(x4, rows_of, cols_of, oh, ow)


def adaptive_windows(x4, output_size):
    """``((oh, ow), windows)`` of adaptive pooling (``None`` in the size keeps that axis)."""
    h, w = x4.shape[1:3]
    oh, ow = pair(output_size)
    oh, ow = h if oh is None else oh, w if ow is None else ow
    rows_of = lambda i: range(*adaptive_window(i, h, oh))  # noqa: E731
    cols_of = lambda j: range(*adaptive_window(j, w, ow))  # noqa: E731
    return (oh, ow), windows(x4, rows_of, cols_of, oh, ow)


# ----------------------------------------------------------------------------- selection


def winner(kind, cells, ch):
    """``(value, index)`` of the max (``kind="max"``) or min of channel ``ch``, or None for no
    cells. The first cell in window order wins a tie; a NaN beats everything, and a later NaN
    beats an earlier one (the last NaN is reported)."""
    best = None
    for index, pixel in cells:
        v = pixel[ch]
        if best is None or v != v:
            best = (v, index)
        elif best[0] == best[0] and (v > best[0] if kind == "max" else v < best[0]):
            best = (v, index)
    return best


def _identity(kind, dtype):
    """What a window with no real cell gives: -inf (max) / +inf (min), or the dtype's limit."""
    if dtype.kind == "f":
        return -math.inf if kind == "max" else math.inf
    return int(np.iinfo(dtype).min if kind == "max" else np.iinfo(dtype).max)


def _first_in_plane(start, d):
    """PyTorch's index for an all-padding window: the first dilation step at or after 0."""
    while start < 0:
        start += d
    return start


def _select(kind, x, oh_ow_windows, empty_index):
    x4, restore = batch(x)
    (oh, ow), wins = oh_ow_windows
    n, _, _, c = x4.shape
    values = np.empty((n, oh, ow, c), x4.dtype)
    index = np.empty((n, oh, ow, c), np.int64)
    for b, i, j, cells in wins:
        for ch in range(c):
            won = winner(kind, cells, ch)
            if won is None:
                won = (_identity(kind, x4.dtype), empty_index(i, j))
            values[b, i, j, ch], index[b, i, j, ch] = won
    return restore(values), restore(index)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               kind="max"):
    """``(values, indices)`` of max pooling (``kind="min"``: min pooling)."""
    (kh, kw), (ph, pw), (dh, dw) = pair(kernel_size), pair(padding), pair(dilation)
    sh, sw = pair(stride) if stride is not None else (kh, kw)
    x4, _ = batch(x)
    w = x4.shape[2]

    def empty_index(i, j):
        return _first_in_plane(i * sh - ph, dh) * w + _first_in_plane(j * sw - pw, dw)

    wins = pool_windows(x4, kernel_size, stride, padding, dilation, ceil_mode)
    return _select(kind, x, wins, empty_index)


def min_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    return max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, kind="min")


def adaptive_max_pool2d(x, output_size):
    """``(values, indices)`` of adaptive max pooling."""
    return _select("max", x, adaptive_windows(batch(x)[0], output_size), None)


def global_max_pool2d(x):
    return adaptive_max_pool2d(x, 1)


# ------------------------------------------------------------------------ sums and norms


def _reduce(x, oh_ow_windows, fn):
    """float64 ``fn(i, j, values)`` per window and channel, ``values`` its real cells."""
    x4, restore = batch(x)
    (oh, ow), wins = oh_ow_windows
    n, _, _, c = x4.shape
    out = np.empty((n, oh, ow, c), np.float64)
    for b, i, j, cells in wins:
        for ch in range(c):
            out[b, i, j, ch] = fn(i, j, [pixel[ch] for _, pixel in cells])
    return restore(out)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Average pooling: zero padding, PyTorch's divisor."""
    (kh, kw), (ph, pw) = pair(kernel_size), pair(padding)
    sh, sw = pair(stride) if stride is not None else (kh, kw)
    h, w = batch(x)[0].shape[1:3]

    def divisor(i, j, values):
        if divisor_override is not None:
            return divisor_override
        if not count_include_pad:
            return len(values)
        # the window clipped to [-p, n + p) on each axis
        rows = range(max(i * sh - ph, -ph), min(i * sh - ph + kh, h + ph))
        cols = range(max(j * sw - pw, -pw), min(j * sw - pw + kw, w + pw))
        return len(rows) * len(cols)

    wins = pool_windows(batch(x)[0], kernel_size, stride, padding, 1, ceil_mode)
    return _reduce(x, wins, lambda i, j, v: math.fsum(v) / divisor(i, j, v))


def lp_pool2d(x, norm_type, kernel_size, stride=None, ceil_mode=False):
    """``(sum over the real cells of |x|**p) ** (1/p)``; ``p = inf``: the max of ``|x|``."""
    p = float(norm_type)

    def norm(i, j, values):
        if math.isinf(p):
            return max(abs(float(v)) for v in values)
        return math.fsum(abs(float(v)) ** p for v in values) ** (1 / p)

    return _reduce(x, pool_windows(batch(x)[0], kernel_size, stride, 0, 1, ceil_mode), norm)


def adaptive_avg_pool2d(x, output_size):
    return _reduce(x, adaptive_windows(batch(x)[0], output_size),
                   lambda i, j, v: math.fsum(v) / len(v))


def global_avg_pool2d(x):
    return adaptive_avg_pool2d(x, 1)
