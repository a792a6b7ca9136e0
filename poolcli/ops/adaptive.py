"""Adaptive and global pooling, as ``torch.nn.functional.adaptive_{avg,max}_pool2d``.

Output cell ``i`` of an axis of length ``n`` pooled to ``out`` cells covers input
``[floor(i*n/out), ceil((i+1)*n/out))``: windows may overlap by one cell and differ in size.
Global pooling is adaptive pooling to 1x1.
"""

from __future__ import annotations

import numbers

import numpy as np

from poolcli.ops._adaptive import adaptive_reduce, adaptive_select, banded_height
from poolcli.ops._bands import AdaptiveRows, RowBlocks
from poolcli.ops._common import divide_into, divide_outer, float_dtype_for, int_accumulator
from poolcli.ops._geometry import adaptive_bounds, as_batch

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "global_avg_pool2d",
    "global_max_pool2d",
    "adaptive_band_rows",
    "adaptive_pool_rows",
    "GlobalPool",
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


def _avg_types(dtype, area: int):
    """``(acc, divide_in, result)`` of an adaptive average whose largest window has ``area``
    cells: exact integer sums for 8/16-bit integers, float32 for small float32 windows, else
    float64; the division's type; the result's."""
    result = float_dtype_for(dtype)
    if dtype.kind in "iu" and dtype.itemsize <= 2:
        acc = int_accumulator(dtype, area)  # exact sums
        bound = max(abs(int(np.iinfo(dtype).min)), int(np.iinfo(dtype).max)) * area
        divide_in = result if bound < 1 << 24 else np.dtype(np.float64)
    elif dtype == np.float32 and area <= 64:
        acc = divide_in = result
    else:
        acc = divide_in = np.dtype(np.float64)
    return acc, divide_in, result


def _avg(x4, oh: int, ow: int, *, height=None, band=None, heights=None):
    """Adaptive average of ``x4`` (N, H, W, C) to ``oh x ow`` (see :func:`adaptive_avg_pool2d`);
    ``height``, ``band``, ``heights``: see :func:`adaptive_pool_rows` and ``adaptive_reduce``."""
    h, w = (x4.shape[1] if height is None else height), x4.shape[2]
    sh, eh = adaptive_bounds(h, oh)
    sw, ew = adaptive_bounds(w, ow)
    area = int((eh - sh).max()) * int((ew - sw).max())
    acc, divide_in, result = _avg_types(x4.dtype, area)
    len_h, len_w = (eh - sh).astype(divide_in), (ew - sw).astype(divide_in)
    uniform = (len_h == len_h[0]).all() and (len_w == len_w[0]).all()

    def finish(sums, out, i0, i1):
        if uniform:
            divide_into(sums, len_h[0] * len_w[0], out, divide_in)
        else:
            divide_outer(sums, len_h[i0:i1], len_w, out, divide_in)

    return adaptive_reduce(x4, (sh, eh), (sw, ew), "sum", acc, post=finish, out_dtype=result,
                           band=band, heights=heights)


def adaptive_avg_pool2d(x, output_size):
    """Adaptive average pooling to ``output_size`` (int or ``(h, w)``; ``None`` keeps an axis).

    Sums are exact for 8/16-bit integers; float32 windows of more than 64 cells are summed in
    float32 blocks of at most 64 rows accumulated in float64; other types in float64. Returns
    float32 (float64 for float64 and 32/64-bit integer input). Cost is about one pass over the
    input whatever the output size.

    >>> adaptive_avg_pool2d(np.arange(6.0).reshape(1, 6), (1, 4))
    array([[0.5, 1.5, 3.5, 4.5]])
    """
    x4, restore = as_batch(x)
    oh, ow = _output_size(output_size, x4.shape[1:3])
    return restore(_avg(x4, oh, ow))


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """Adaptive max pooling; with ``return_indices`` also PyTorch-encoded int64 indices.

    Ties go to the first cell in row-major order and NaN wins (the last NaN of a window is
    reported), as in PyTorch's CPU kernel. The input dtype is kept.

    >>> adaptive_max_pool2d(np.array([[1, 5, 2, 7, 3]]), (1, 2), return_indices=True)
    (array([[5, 7]]), array([[1, 3]]))
    """
    x4, restore = as_batch(x)
    oh, ow = _output_size(output_size, x4.shape[1:3])
    bh = adaptive_bounds(x4.shape[1], oh)
    bw = adaptive_bounds(x4.shape[2], ow)
    if return_indices:
        values, indices = adaptive_select(x4, bh, bw, "max")
        return restore(values), restore(indices)
    return restore(adaptive_reduce(x4, bh, bw, "max", x4.dtype))


def global_avg_pool2d(x):
    """Mean of each channel plane, shaped ``(1, 1, C)`` (or ``(N, 1, 1, C)``; ``(1, 1)`` for grey).

    Same sums and result type as :func:`adaptive_avg_pool2d` to 1x1.

    >>> global_avg_pool2d(np.arange(8, dtype=np.uint8).reshape(2, 2, 2))
    array([[[3., 4.]]], dtype=float32)
    """
    x4, restore = as_batch(x)
    if x4.shape[1] < 1 or x4.shape[2] < 1:
        raise ValueError(f"input plane must be non-empty, got {x4.shape[1]}x{x4.shape[2]}")
    return restore(_avg(x4, 1, 1))


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
    whole = (np.array([0]), np.array([h])), (np.array([0]), np.array([w]))
    if not return_indices:
        return restore(adaptive_reduce(x4, *whole, "max", x4.dtype))
    values, index = adaptive_select(x4, *whole, "max")
    return restore(values), restore(index)


# ---- band by band (poolcli.app.stream) ---------------------------------------------------------


def adaptive_band_rows(height: int, output_size) -> AdaptiveRows:
    """The :class:`~poolcli.ops.AdaptiveRows` of adaptive pooling of ``height`` rows."""
    return AdaptiveRows(height, _output_size(output_size, (height, 1))[0])


def adaptive_pool_rows(x, kind: str, output_size, height: int, a: int, b: int, r0: int):
    """Output rows ``[a, b)`` of :func:`adaptive_avg_pool2d` (``kind="avg"``) or
    :func:`adaptive_max_pool2d` (``"max"``) of an image ``height`` rows high, from ``x``, its
    input rows ``r0`` on (at least up to ``AdaptiveRows.slice_for(a, b)``'s end). The rows are
    the whole image's bit for bit: the whole image's windows, passes and order of additions.

    >>> x = np.arange(30.0).reshape(10, 3)
    >>> bool((adaptive_pool_rows(x[3:], "avg", (3, 2), 10, 1, 3, 3)
    ...       == adaptive_avg_pool2d(x, (3, 2))[1:]).all())
    True
    """
    x4, restore = as_batch(x)
    oh, ow = _output_size(output_size, (height, x4.shape[2]))
    band = (int(a), int(b), int(r0))
    if kind == "avg":
        return restore(_avg(x4, oh, ow, height=height, band=band))
    if kind != "max":
        raise ValueError(f"kind must be 'avg' or 'max', got {kind!r}")
    bh, bw = adaptive_bounds(height, oh), adaptive_bounds(x4.shape[2], ow)
    return restore(adaptive_reduce(x4, bh, bw, "max", x4.dtype, band=band))


class GlobalPool:
    """:func:`global_avg_pool2d` (``kind="avg"``) or :func:`global_max_pool2d` (``"max"``) of an
    ``(H, W, C)`` image given band by band (rows in order, any band sizes), bit for bit.

    The whole image's height pass reduces blocks of rows from row 0 and adds them in order
    (``banded_height``); the bands are cut into the same blocks (rows of a block split between
    bands wait for the rest), then the same width pass and division run on the reduced row.
    :meth:`make` gives ``None`` where that cannot hold: up to 32 rows (uniform windows), and
    float sums done by one reduction over all rows (float64 and float16 input, 32/64-bit
    integers, float32 planes of at most 64 cells), whose order of additions is numpy's and
    would need the whole image at once.
    Integer sums are exact and max is order-free, except the sign of a zero and a NaN's
    payload, so :meth:`result` of a float max with a zero or NaN column is ``None`` too.
    """

    def __init__(self, kind, shape, dtype, acc, inner, block):
        self.kind, self.shape, self.dtype = kind, tuple(shape), np.dtype(dtype)
        self.acc, self.inner, self.block = acc, inner, block
        self.ufunc = np.add if kind == "avg" else np.maximum
        self.exact = kind == "max" or acc.kind in "iu"
        self.row = None  # (W, C) in acc: the height pass so far
        self.blocks = RowBlocks(block)  # float sums: the in-memory pass's row blocks

    @classmethod
    def make(cls, kind: str, height: int, width: int, channels: int, dtype):
        dtype = np.dtype(dtype)
        if kind not in ("avg", "max") or height < 1 or width < 1:
            return None
        acc = _avg_types(dtype, height * width)[0] if kind == "avg" else dtype
        plan = banded_height("sum" if kind == "avg" else kind, dtype, acc, height)
        if plan is None:
            return None
        inner, block = plan
        if not (kind == "max" or acc.kind in "iu") and inner == acc:
            return None  # one float reduction of all rows
        return cls(kind, (height, width, channels), dtype, acc, inner, block)

    def add(self, rows) -> None:
        rows = np.asarray(rows).reshape(rows.shape[0], self.shape[1], self.shape[2])
        if self.exact:
            self._fold(self.ufunc.reduce(rows, axis=0, dtype=self.acc))
            return
        for block in self.blocks.feed(rows):
            self._reduce(block)

    def _reduce(self, block) -> None:
        if block is not None:
            block = np.ascontiguousarray(block)
            self._fold(self.ufunc.reduce(block, axis=0, dtype=self.inner))

    def _fold(self, part) -> None:
        if self.row is None:
            self.row = np.empty(part.shape, self.acc)
            np.copyto(self.row, part, casting="unsafe")
        else:
            self.ufunc(self.row, part, out=self.row, casting="unsafe")

    def result(self):
        """The ``(1, 1, C)`` result, or ``None`` (see the class docstring)."""
        self._reduce(self.blocks.rest())
        row = self.row
        if self.kind == "max" and self.dtype.kind == "f" and ((row == 0) | (row != row)).any():
            return None
        shape = np.broadcast_to(np.zeros((), self.dtype), (1, *self.shape))
        heights = row[None, None]
        if self.kind == "avg":
            return _avg(shape, 1, 1, heights=heights)[0]
        whole = (np.array([0]), np.array([self.shape[0]])), (np.array([0]),
                                                               np.array([self.shape[1]]))
        return adaptive_reduce(shape, *whole, "max", self.dtype, heights=heights)[0]
