"""Separable window reductions: the engine behind max, min, average and Lp pooling.

A 2-D window reduction with a rectangular window is two 1-D reductions: along the height, then
along the width. Both passes are written as a handful of whole-array numpy ufunc calls per kernel
tap (no Python loop over windows), on row strips small enough to stay in cache:

* the height pass combines whole input rows, so numpy's inner loop runs over contiguous
  ``W*C`` elements;
* the width pass reads the strip through a transposed ``(rows, C, W)`` view and writes a planar
  ``(rows, C, ow)`` buffer, so numpy's inner loop runs along the image width instead of over the
  2-4 channels of a pixel (the difference is 2-5x on RGB images).

The result is returned as an ``(N, oh, ow, C)`` *view* of that planar buffer (not C-contiguous).

Selecting reductions that must also report *where* the winner was (``return_indices``) go through
:func:`select_with_indices`, which gathers one tap at a time along the width and then along the
height, keeping PyTorch's rules: strict comparison so the first cell in row-major order wins a tie,
and a NaN always replaces the current winner (so the last NaN of a window is reported).
"""

from __future__ import annotations

import numpy as np

from poolcli.ops._geometry import Axis

# Bytes of strip buffer to aim for per pass; a few hundred KiB keeps a strip in L2.
_STRIP_BYTES = 1 << 19

_UFUNCS = {"max": np.maximum, "min": np.minimum, "sum": np.add}


def identity(kind: str, dtype: np.dtype):
    """The value that never wins (max/min) or adds nothing (sum)."""
    dtype = np.dtype(dtype)
    if kind == "sum":
        return dtype.type(0)
    if dtype.kind == "f":
        return dtype.type(-np.inf if kind == "max" else np.inf)
    info = np.iinfo(dtype)
    return dtype.type(info.min if kind == "max" else info.max)


def _apply_taps(kind, dst, src_of, axis: Axis, lo: int, hi: int, pos_scale: int):
    """Reduce the taps of ``axis`` for output windows ``[lo, hi)`` into ``dst``.

    ``src_of(start, stop, step)`` returns the source view for input positions ``start:stop:step``
    along the reduced axis; ``dst`` is indexed by ``j - lo`` along the same (leading) position.
    """
    ufunc = _UFUNCS[kind]
    ranges = [(t, *axis.tap_range(t, lo, hi)) for t in range(axis.k)]
    full = [t for t, j0, j1 in ranges if j0 == lo and j1 == hi]
    if full:
        t0 = full[0]
        start = lo * axis.s - axis.p + t0 * axis.d
        np.copyto(dst, src_of(start, start + (hi - lo - 1) * axis.s + 1, axis.s), casting="unsafe")
    else:
        t0 = None
        dst[...] = identity(kind, dst.dtype)
    for t, j0, j1 in ranges:
        if t == t0 or j1 <= j0:
            continue
        start = j0 * axis.s - axis.p + t * axis.d
        part = dst[j0 - lo : j1 - lo] if pos_scale == 0 else dst[..., j0 - lo : j1 - lo]
        ufunc(part, src_of(start, start + (j1 - j0 - 1) * axis.s + 1, axis.s), out=part)


def reduce_windows(
    x4: np.ndarray, ah: Axis, aw: Axis, kind: str, acc_dtype, *, planar: bool = False
) -> np.ndarray:
    """Reduce every ``ah x aw`` window of ``x4`` (N, H, W, C) with ``kind`` in max/min/sum.

    Returns an ``(N, oh, ow, C)`` array of ``acc_dtype`` (a transposed view of a planar buffer),
    or the planar ``(N, oh, C, ow)`` buffer itself with ``planar=True`` so that a following
    elementwise step runs on contiguous memory.
    """
    n, _, w, c = x4.shape
    acc_dtype = np.dtype(acc_dtype)
    out = np.empty((n, ah.out, c, aw.out), dtype=acc_dtype)
    rows = max(1, min(ah.out, _STRIP_BYTES // max(1, w * c * acc_dtype.itemsize)))
    tmp = np.empty((rows, w, c), dtype=acc_dtype)
    for b in range(n):
        img = x4[b]
        for i0 in range(0, ah.out, rows):
            i1 = min(ah.out, i0 + rows)
            strip = tmp[: i1 - i0]
            # Height pass: whole rows, contiguous inner loop.
            _apply_taps(kind, strip, lambda a, z, st: img[a:z:st], ah, i0, i1, 0)
            # Width pass: (rows, C, W) view in, planar (rows, C, ow) out.
            stripT = strip.transpose(0, 2, 1)
            _apply_taps(
                kind, out[b, i0:i1], lambda a, z, st: stripT[:, :, a:z:st], aw, 0, aw.out, 1
            )
    return out if planar else out.transpose(0, 1, 3, 2)


def fixed_taps(axis: Axis) -> list[np.ndarray]:
    """Input position read by each tap of every window, clipped into the window's real cells.

    A padded tap is replaced by the nearest real cell of the same window. Repeating a window's
    first real cell before it, or its last real cell after it, changes neither the max/min nor
    which index wins under PyTorch's rules (first wins ties; the last NaN wins), so selecting
    reductions can gather without masks.
    """
    starts = np.arange(axis.out) * axis.s - axis.p
    first = axis.first_tap_positions()
    last_tap = (axis.k - 1) * axis.d
    last = np.minimum(starts + last_tap, axis.n - 1)
    last = last - ((last - starts) % axis.d)  # step back onto the dilation grid
    last = np.maximum(last, first)  # empty windows (see empty_windows) read any real cell
    return [np.clip(starts + t * axis.d, first, last).clip(0, axis.n - 1) for t in range(axis.k)]


def empty_windows(axis: Axis) -> np.ndarray:
    """Windows with no real cell on this axis: possible only with dilation, e.g. ``n=1, k=2,
    p=1, d=2`` reads positions -1 and 1. PyTorch outputs the identity (-inf for max) there."""
    return axis.first_tap_positions() >= axis.n


def adaptive_taps(starts: np.ndarray, ends: np.ndarray) -> list[np.ndarray]:
    """Taps for adaptive windows ``[start, end)``: shorter windows repeat their last cell."""
    length = int((ends - starts).max())
    return [np.minimum(starts + t, ends - 1) for t in range(length)]


def select_with_indices(x4: np.ndarray, taps_h, taps_w, kind: str, empty=None):
    """Max or min over windows given by per-tap position arrays, with PyTorch-encoded indices.

    Width first, then height: the winner is the earliest row holding the extreme value and, in
    that row, its earliest column, i.e. the first cell in row-major order, as in PyTorch. NaN
    replaces the running winner, so the last NaN in row-major order is selected.

    ``empty`` optionally gives ``(mask_h, mask_w, first_h, first_w)``: windows with no real
    cell get the identity value and PyTorch's index ``first_h * W + first_w`` (the first dilation
    grid position at or after 0 on each axis, which then lies outside the plane).

    Returns ``(values (N, oh, ow, C), indices (N, oh, ow, C) int64)`` with ``h * W + w`` indices.
    """
    _, _, w, _ = x4.shape
    isfloat = x4.dtype.kind == "f"
    better = np.greater if kind == "max" else np.less

    def scan(src, taps, axis, carry=None):
        """Reduce ``src`` along ``axis`` over taps; return values, winning position, carried."""
        best = np.take(src, taps[0], axis=axis)
        pos = np.broadcast_to(_along(taps[0], axis, src.ndim), best.shape).copy()
        kept = None if carry is None else np.take(carry, taps[0], axis=axis)
        for tap in taps[1:]:
            cand = np.take(src, tap, axis=axis)
            win = better(cand, best)
            if isfloat:
                win |= np.isnan(cand)
            np.copyto(best, cand, where=win)
            np.copyto(pos, _along(tap, axis, src.ndim), where=win)
            if kept is not None:
                np.copyto(kept, np.take(carry, tap, axis=axis), where=win)
        return best, pos, kept

    vals_w, col, _ = scan(x4, taps_w, axis=2)
    vals, row, col = scan(vals_w, taps_h, axis=1, carry=col)
    index = row * w + col
    if empty is not None:
        mask_h, mask_w, first_h, first_w = empty
        mask = np.logical_or.outer(mask_h, mask_w)
        if mask.any():
            vals[:, mask] = identity(kind, vals.dtype)
            index[:, mask] = np.add.outer(first_h * w, first_w)[mask][:, None]
    return vals, index


def _along(index: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = index.size
    return index.astype(np.int64).reshape(shape)
