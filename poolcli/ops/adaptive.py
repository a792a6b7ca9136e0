"""Adaptive and global pooling, as ``torch.nn.functional.adaptive_{avg,max}_pool2d``.

Output cell ``i`` of an axis of length ``n`` pooled to ``out`` cells covers input
``[floor(i*n/out), ceil((i+1)*n/out))``: windows may overlap by one cell and differ in size.
Global pooling is adaptive pooling to 1x1.
"""

from __future__ import annotations

import numbers

import numpy as np

from poolcli.ops._geometry import adaptive_bounds, as_batch
from poolcli.ops._reduce import adaptive_taps, select_with_indices
from poolcli.ops.pool import float_dtype_for

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "global_avg_pool2d",
    "global_max_pool2d",
]


def _output_size(output_size, hw) -> tuple[int, int]:
    """Resolve ``output_size`` (int, pair, ``None`` in a pair keeps that input size)."""
    if isinstance(output_size, (bool, np.bool_)):
        raise TypeError(f"output_size must be an int or a pair, got {output_size!r}")
    if isinstance(output_size, numbers.Integral):
        pair = (output_size, output_size)
    else:
        try:
            pair = tuple(output_size)
        except TypeError:
            raise TypeError(f"output_size must be an int or a pair, got {output_size!r}") from None
        if len(pair) != 2:
            raise TypeError(f"output_size must be an int or a pair, got {output_size!r}")
    size = []
    for v, n in zip(pair, hw):
        if v is None:
            size.append(int(n))
        elif isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) and v >= 1:
            size.append(int(v))
        else:
            raise ValueError(f"output_size must be positive ints (or None), got {output_size!r}")
    if hw[0] < 1 or hw[1] < 1:
        raise ValueError(f"input plane must be non-empty, got {hw[0]}x{hw[1]}")
    return size[0], size[1]


def _window_sums(x4: np.ndarray, starts, ends, axis: int, acc) -> np.ndarray:
    """Sum ``x4`` over ``[start, end)`` windows along ``axis``, one tap at a time.

    (A running-sum difference would be O(1) per window but lets one NaN or inf poison every
    later window, so taps are added with a validity mask instead.)
    """
    taps = adaptive_taps(starts, ends)
    shape = [1] * x4.ndim
    shape[axis] = starts.size
    total = np.take(x4, taps[0], axis=axis).astype(acc)
    for t, tap in enumerate(taps[1:], start=1):
        valid = (starts + t < ends).reshape(shape)
        np.add(total, np.take(x4, tap, axis=axis), out=total, where=valid)
    return total


def adaptive_avg_pool2d(x, output_size):
    """Adaptive average pooling to ``output_size`` (int or ``(h, w)``; ``None`` keeps an axis).

    Windows are summed in float64, height then width. Returns float32 (float64 for float64 and 32/64-bit integer input).

    >>> adaptive_avg_pool2d(np.arange(6.0).reshape(1, 6), (1, 4))
    array([[0.5, 1.5, 3.5, 4.5]])
    """
    x4, restore = as_batch(x)
    oh, ow = _output_size(output_size, x4.shape[1:3])
    sh, eh = adaptive_bounds(x4.shape[1], oh)
    sw, ew = adaptive_bounds(x4.shape[2], ow)
    rows = _window_sums(x4, sh, eh, 1, np.float64)
    sums = _window_sums(rows, sw, ew, 2, np.float64)
    counts = np.multiply.outer(eh - sh, ew - sw)[None, :, :, None]
    return restore((sums / counts).astype(float_dtype_for(x4.dtype), copy=False))


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """Adaptive max pooling; with ``return_indices`` also PyTorch-encoded int64 indices.

    Ties go to the first cell in row-major order and NaN wins (the last NaN of a window is
    reported), as in PyTorch's CPU kernel. The input dtype is kept.

    >>> adaptive_max_pool2d(np.array([[1, 5, 2, 7, 3]]), (1, 2), return_indices=True)
    (array([[5, 7]]), array([[1, 3]]))
    """
    x4, restore = as_batch(x)
    oh, ow = _output_size(output_size, x4.shape[1:3])
    taps_h = adaptive_taps(*adaptive_bounds(x4.shape[1], oh))
    taps_w = adaptive_taps(*adaptive_bounds(x4.shape[2], ow))
    values, indices = select_with_indices(x4, taps_h, taps_w, "max")
    if return_indices:
        return restore(values), restore(indices)
    return restore(values)


def global_avg_pool2d(x):
    """Mean of each channel plane, shaped ``(1, 1, C)`` (or ``(N, 1, 1, C)``; ``(1, 1)`` for grey).

    >>> global_avg_pool2d(np.arange(8, dtype=np.uint8).reshape(2, 2, 2))
    array([[[3., 4.]]], dtype=float32)
    """
    x4, restore = as_batch(x)
    if x4.shape[1] < 1 or x4.shape[2] < 1:
        raise ValueError(f"input plane must be non-empty, got {x4.shape[1]}x{x4.shape[2]}")
    means = x4.mean(axis=(1, 2), dtype=np.float64, keepdims=True)
    return restore(means.astype(float_dtype_for(x4.dtype), copy=False))


def global_max_pool2d(x, return_indices=False):
    """Max of each channel plane, shaped like :func:`global_avg_pool2d`, input dtype kept.

    Indices follow PyTorch (first maximum wins, the last NaN wins when there is one).

    >>> global_max_pool2d(np.array([[1, 9], [9, 0]]), return_indices=True)
    (array([[9]]), array([[1]]))
    """
    x4, restore = as_batch(x)
    n, h, w, c = x4.shape
    if h < 1 or w < 1:
        raise ValueError(f"input plane must be non-empty, got {h}x{w}")
    flat = x4.reshape(n, h * w, c)
    if not return_indices:
        return restore(flat.max(axis=1).reshape(n, 1, 1, c))
    index = flat.argmax(axis=1)  # first occurrence; NaN counts as the maximum
    if x4.dtype.kind == "f":
        nan = np.isnan(flat)
        has_nan = nan.any(axis=1)
        last_nan = h * w - 1 - nan[:, ::-1].argmax(axis=1)
        index = np.where(has_nan, last_nan, index)
    values = np.take_along_axis(flat, index[:, None, :], axis=1)
    return restore(values.reshape(n, 1, 1, c)), restore(index.reshape(n, 1, 1, c).astype(np.int64))
