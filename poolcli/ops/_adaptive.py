"""Adaptive windows: reductions and selections over ``[floor(i*n/out), ceil((i+1)*n/out))``.

Adaptive windows (see :func:`adaptive_reduce` and :func:`adaptive_select`) reuse the fixed-window
engines (:mod:`poolcli.ops._fixed`, :mod:`poolcli.ops._select`) when they are uniform and short;
long ones are reduced one slab of rows / one fold of columns at a time and short irregular ones
through sliding sums of every window length in use, so the cost stays about one pass over the input
whatever the output size (7x7 from 4096x4096 reads each input row once). Irregular windows repeat
with a short period (4096 -> 1280: every 5 windows, 16 cells), so each residue class of windows is
a fixed-stride set reached by basic slicing: rows are combined one class at a time (no gather of
rows) and the sliding sums are picked per class with one strided copy each, writing planar output
rows; results are the same bits as the general passes (see :func:`_signed_zero_rows` for the one
subtlety, the sign of zero sums).
"""

from __future__ import annotations

import copy
import math

import numpy as np

from poolcli.ops._common import UFUNCS, has_nan, holds, int_accumulator, overflow_is_inf
from poolcli.ops._fixed import WidthPass, apply_taps, reduce_strips, strip_rows
from poolcli.ops._geometry import Axis
from poolcli.ops._select import select_fixed, select_with_indices

# Selection with indices treats adaptive windows longer than this as "long" (searched window by
# window, see adaptive_select); shorter ones go tap by tap over all windows at once.
_LONG = 6
# Row windows longer than this are reduced one slab of rows at a time (one call per window).
_SLAB_ROWS = 3
# Up to this many column windows, each is reduced by folding (log2(length) calls per window).
_FOLD_WINDOWS = 64
# Uniform adaptive windows up to this size are pooled like fixed windows (one call per tap).
_FIXED_MAX = 32
# Periodic adaptive windows (see _Windows.period) are pooled one residue class at a time, with
# one call per class and tap, when there are at most this many classes of windows this short,
# each holding at least this many windows.
_PERIOD_MAX = 32
_PERIOD_LMAX = 32
_PERIOD_MIN_REPEATS = 4


class _Windows:
    """Windows ``[start, end)`` of one axis, as in adaptive pooling (they may overlap by one)."""

    def __init__(self, starts, ends, n: int):
        self.starts = np.asarray(starts, dtype=np.intp)
        self.ends = np.asarray(ends, dtype=np.intp)
        self.n, self.out = n, self.starts.size
        lengths = self.ends - self.starts
        self.lmax = int(lengths.max())
        self.long = self.lmax > _LONG
        self.fixed = None  # uniform windows, when short enough for the tap-by-tap passes
        k = n // self.out
        if (n % self.out == 0 and k <= _FIXED_MAX and (lengths == k).all()
                and (self.starts == np.arange(self.out) * k).all()):
            self.fixed = Axis(n, k, k, 0, 1, self.out)
        # Period of the windows: with g = gcd(n, out), window i + q (q = out / g) is window i
        # moved by p = n / g cells, so each residue class i % q is a set of equal windows at a
        # fixed stride p, reachable by basic slicing (4096 -> 1280: q = 5, p = 16).
        self.period = None
        g = math.gcd(n, self.out)
        q, p = self.out // g, n // g
        if (self.fixed is None and self.lmax <= _PERIOD_LMAX and q <= _PERIOD_MAX
                and self.out >= _PERIOD_MIN_REPEATS * q
                and (self.starts[q:] == self.starts[:-q] + p).all()
                and (self.ends[q:] == self.ends[:-q] + p).all()):
            self.period = (q, p)
        self.offset = 0  # first input row held by the array the windows are applied to

    def shifted(self, r0: int) -> "_Windows":
        """These windows (same passes) over an array holding input rows ``r0`` on."""
        other = copy.copy(self)
        other.starts, other.ends, other.offset = self.starts - r0, self.ends - r0, r0
        return other

    def classes(self, lo: int, hi: int):
        """For windows ``[lo, hi)`` with a period: ``(a, count, start, length)`` of each residue
        class, ``a`` its first window; the class is windows ``a, a + q, ...`` (``count`` of
        them) starting at ``start, start + p, ...``."""
        q, _ = self.period
        for a in range(lo, min(hi, lo + q)):
            yield a, len(range(a, hi, q)), int(self.starts[a]), int(self.ends[a] - self.starts[a])

    def tap(self, t: int, lo: int, hi: int, invalid=None):
        """Position of tap ``t`` of windows ``[lo, hi)``; past a window's end it repeats its last
        cell, or is ``invalid`` when given."""
        s, e = self.starts[lo:hi], self.ends[lo:hi]
        pos = np.minimum(s + t, e - 1)
        if invalid is not None:
            pos = np.where(s + t < e, pos, invalid)
        return pos


def adaptive_taps(starts: np.ndarray, ends: np.ndarray) -> list[np.ndarray]:
    """Taps for adaptive windows ``[start, end)``: shorter windows repeat their last cell."""
    length = int((ends - starts).max())
    return [np.minimum(starts + t, ends - 1) for t in range(length)]


def _slab_dtype(dtype, acc):
    """Type and row count for reducing a slab of rows before adding it to ``acc``."""
    dtype, acc = np.dtype(dtype), np.dtype(acc)
    if dtype.kind in "iu":
        inner = int_accumulator(dtype, 2)  # one size up
        info, ii = np.iinfo(dtype), np.iinfo(inner)
        rows = min(ii.max // max(1, info.max), ii.min // info.min if info.min < 0 else 1 << 62)
        return (inner, max(1, rows)) if inner.itemsize < acc.itemsize else (acc, 1 << 62)
    if dtype == np.float32 and acc == np.float64:
        return dtype, 64  # float32 partial sums of <= 64 rows, accumulated in float64
    return acc, 1 << 62


def _height_by_class(kind, dtype, acc, win: _Windows) -> bool:
    """Whether :func:`_height_classes` gives the same result as the general row passes: always
    for max/min and exact integer sums; for other sums when the general pass also adds the
    rows one after the other in ``acc`` (it sums float32 slabs in float32 when ``acc`` is wider)."""
    if win.period is None:
        return False
    if kind != "sum" or win.lmax <= _SLAB_ROWS or (dtype.kind in "iu" and acc.kind in "iu"):
        return True
    inner, block = _slab_dtype(dtype, acc)
    return inner == acc and block >= win.lmax


def _height_classes(kind, img, win: _Windows, i0, i1, st, cast_buf):
    """Periodic row windows ``[i0, i1)`` of ``img`` into ``st``, one residue class at a time:
    ``st[a - i0 :: q] = op(rows start + t :: p)`` over the taps ``t`` (whole rows, basic slices,
    rows added one after the other as in the general pass). Input of another type than ``st`` is
    first converted into ``cast_buf`` with one contiguous casting copy: same-type ufuncs are much
    faster than mixed-type ones, which numpy runs through small cast buffers."""
    ufunc = UFUNCS[kind]
    _, p = win.period
    r0, r1 = int(win.starts[i0]), int(win.ends[i0:i1].max())
    src = img[r0:r1]
    if src.dtype != st.dtype:
        src = cast_buf[: r1 - r0]
        np.copyto(src, img[r0:r1], casting="unsafe")
    for a, count, start, length in win.classes(i0, i1):
        dst = st[a - i0 :: win.period[0]]
        tap = lambda t: src[start - r0 + t :: p][:count]  # noqa: E731
        if length == 1:
            np.copyto(dst, tap(0))
            continue
        ufunc(tap(0), tap(1), out=dst)
        for t in range(2, length):
            ufunc(dst, tap(t), out=dst)


def _signed_zero_rows(kind, dtype, acc, win: _Windows):
    """Rows whose float sums the general row pass never leaves at -0.0, or None.

    :func:`_height_classes` adds the rows of a window one after the other, so all -0.0 rows give
    -0.0; the general pass starts long windows from +0.0 (``ufunc.reduce``) and adds +0.0 for
    the missing taps of shorter windows, giving +0.0. The two differ only there, and only in the
    sign of zero, so adding +0.0 to the finished output rows (a cheap pass over the small
    output) makes them identical; cheaper than starting every window from zero.
    """
    if kind != "sum" or acc.kind != "f" or not _height_by_class(kind, dtype, acc, win):
        return None
    lengths = win.ends - win.starts
    rows = (lengths > _SLAB_ROWS) | (lengths < win.lmax)
    return rows if rows.any() else None


def banded_height(kind, dtype, acc, n: int):
    """``(inner, block)`` when the height pass of one window over all ``n`` rows (global
    pooling) is the slab path: blocks of ``block`` rows from row 0, each reduced in ``inner``
    and added in order to ``acc`` (one block for max/min). A band-by-band reduction that cuts
    the same blocks (:class:`poolcli.ops.adaptive.GlobalPool`) then gives the same bits;
    ``None`` for the other passes (short or uniform windows)."""
    win = _Windows(np.array([0]), np.array([n]), n)
    if win.fixed is not None or win.period is not None or win.lmax <= _SLAB_ROWS:
        return None
    return _slab_dtype(dtype, acc) if kind == "sum" else (np.dtype(acc), 1 << 62)


def _height_windows(kind, img, win: _Windows, i0, i1, st, tmp_row, cast_buf=None):
    """Reduce the adaptive row windows ``[i0, i1)`` of ``img`` (H, W, C) into ``st`` (r, W, C)."""
    ufunc = UFUNCS[kind]
    if win.fixed is not None:
        off = win.offset
        apply_taps(kind, st, lambda a, z, step: img[a - off : z - off : step], win.fixed, i0, i1,
                   0)
        return
    if _height_by_class(kind, img.dtype, st.dtype, win):
        _height_classes(kind, img, win, i0, i1, st, cast_buf)
        return
    if win.lmax > _SLAB_ROWS:
        inner, block = _slab_dtype(img.dtype, st.dtype) if kind == "sum" else (st.dtype, 1 << 62)
        for i in range(i0, i1):
            row = st[i - i0]
            s, e = int(win.starts[i]), int(win.ends[i])
            for b0 in range(s, e, block):
                b1 = min(e, b0 + block)
                if b0 == s and inner == st.dtype:
                    ufunc.reduce(img[b0:b1], axis=0, out=row, dtype=inner)
                    continue
                part = tmp_row.view(inner)[: row.size].reshape(row.shape)
                ufunc.reduce(img[b0:b1], axis=0, out=part, dtype=inner)
                if b0 == s:
                    np.copyto(row, part, casting="unsafe")
                else:
                    ufunc(row, part, out=row, casting="unsafe")
        return
    # Short windows: tap by tap over all windows; a padded tap of a sum reads a zeroed row.
    for t in range(win.lmax):
        pos = win.tap(t, i0, i1)
        src = img.take(pos, axis=0)
        if kind == "sum" and t > 0:
            past = win.starts[i0:i1] + t >= win.ends[i0:i1]
            if past.any():
                src[past] = 0
        if t == 0:
            np.copyto(st, src, casting="unsafe")
        else:
            ufunc(st, src, out=st, casting="unsafe")


def _fold(kind, a, c: int, out, buf):
    """Reduce the ``L`` pixels of ``a`` (rows, L*C) into ``out`` (rows, C) by halving."""
    ufunc = UFUNCS[kind]
    length = a.shape[1] // c
    while length > 1:
        if kind == "sum":
            half = length // 2
            dst = buf[:, : half * c]
            ufunc(a[:, : half * c], a[:, half * c : 2 * half * c], out=dst)
            if length % 2:
                ufunc(dst[:, :c], a[:, 2 * half * c : (2 * half + 1) * c], out=dst[:, :c])
        else:  # overlapping halves are harmless for max/min
            half = (length + 1) // 2
            dst = buf[:, : half * c]
            ufunc(a[:, : half * c], a[:, (length - half) * c : length * c], out=dst)
        a, length = dst, half
    np.copyto(out, a[:, :c], casting="unsafe")


def _width_windows(kind, st, win: _Windows, dst, bufs):
    """Reduce the adaptive column windows of ``st`` (r, W, C) into ``dst`` (r, ow, C).

    A few windows (any length): fold each one. Many windows: sliding reductions of every length
    in use, ``S_L[q] = op(st[q .. q+L-1])`` for all ``q`` (one contiguous shifted ufunc per
    length), then ``S_len(j)[start(j)]`` is picked by one strided copy per residue class for
    periodic windows into a planar ``dst``, else by a single ``take`` (``dst`` contiguous, of
    ``st``'s dtype).
    """
    ufunc = UFUNCS[kind]
    r, w, c = st.shape
    flat = st.reshape(r, w * c)
    if win.out <= _FOLD_WINDOWS:
        fold_buf = bufs["fold"][:r]
        for j in range(win.out):
            s, e = int(win.starts[j]), int(win.ends[j])
            _fold(kind, flat[:, s * c : e * c], c, dst[:, j], fold_buf)
        return
    lengths = win.ends - win.starts
    lmin = int(lengths.min())
    levels = bufs["levels"][:r]  # (r, nL * W * C): level L - lmin holds S_L
    prev = flat
    for length in range(2, win.lmax + 1):
        m = (w - length + 1) * c
        lev = length - lmin
        cur = levels[:, lev * w * c : lev * w * c + m] if lev >= 0 else bufs["scratch"][:r, :m]
        ufunc(prev[:, :m], flat[:, (length - 1) * c : w * c], out=cur)
        prev = cur
    if lmin == 1:
        np.copyto(levels[:, : w * c], flat)
    levels3 = levels.reshape(r, -1, c)
    if win.period is not None and (c == 1 or dst.strides[1] < dst.strides[2]):
        # Planar destination: one strided copy per residue class, writing along the width
        # (about half the time of the take below, which copies one 2-4 element pixel at a time).
        q, p = win.period
        dstP = dst.transpose(0, 2, 1)
        for a, count, start, length in win.classes(0, win.out):
            pos = (length - lmin) * w + start
            np.copyto(dstP[:, :, a::q],
                      levels3[:, pos : pos + (count - 1) * p + 1 : p].transpose(0, 2, 1))
        return
    pos = (lengths - lmin) * w + win.starts
    np.take(levels3, pos, axis=1, out=dst)


@overflow_is_inf
def adaptive_reduce(x4, bounds_h, bounds_w, kind, acc_dtype, *, post=None, out_dtype=None,
                    band=None, heights=None):
    """Reduce adaptive windows ``[start, end)`` (per axis, as from ``adaptive_bounds``).

    Uniform windows (the size divides evenly) go through :func:`reduce_strips`; otherwise long
    windows are reduced as slabs of rows / folds of columns and short ones tap by tap, on strips
    of output rows. Sums of ``kind == "sum"`` are exact in integer accumulators; float32 slabs
    are summed in float32 blocks of at most 64 rows added in ``acc_dtype``. ``post`` as in
    :func:`reduce_strips`.

    ``band = (a, b, r0)``: output rows ``[a, b)`` only, of an image ``bounds_h[1][-1]`` rows
    high of which ``x4`` holds the rows from ``r0`` on; each row goes through the whole image's
    passes in the same order, so its bits are the whole image's. ``heights``: the height pass
    already done, ``(n, oh, W, C)`` in ``acc_dtype`` (``x4`` then only gives shape and dtype).
    """
    n, h, w, c = x4.shape
    acc = np.dtype(acc_dtype)
    a, b, r0 = band or (0, len(bounds_h[0]), 0)
    if x4.size == 0:
        return np.empty((n, b - a, len(bounds_w[0]), c),
                        acc if post is None else np.dtype(out_dtype))
    wh = _Windows(*bounds_h, h if band is None else int(bounds_h[1][-1]))
    ww = _Windows(*bounds_w, w)
    if wh.fixed is not None and ww.fixed is not None and heights is None:
        return _fixed_band(x4, wh, ww, kind, acc, post, out_dtype, (a, b, r0))
    wh = wh.shifted(r0) if r0 else wh
    out_dtype = acc if post is None else np.dtype(out_dtype)
    ow = ww.out
    if heights is None and not x4[0].flags.c_contiguous:
        x4 = np.ascontiguousarray(x4)
    if ww.fixed is not None:
        width = WidthPass(ww.fixed, c, acc)
        planar = width.planar
    else:  # periodic windows are gathered by class, writing planar rows (see _width_windows)
        width, planar = None, ww.period is not None and ww.out > _FOLD_WINDOWS and c > 1
    # As in reduce_strips: when out_dtype holds every sum exactly, the width pass writes
    # (converting) straight into the output and post works in place; not with np.take, which
    # cannot convert.
    direct = post is not None and holds(out_dtype, acc) and (
        out_dtype == acc or width is not None or ow <= _FOLD_WINDOWS or ww.period is not None)
    buf = np.empty((n, b - a, c, ow) if planar else (n, b - a, ow, c), out_dtype)
    out = buf.transpose(0, 1, 3, 2) if planar else buf
    by_class = _height_by_class(kind, x4.dtype, acc, wh) and x4.dtype != acc
    per_row = w * c * acc.itemsize * (3 + (-(-wh.n // wh.out) if by_class else 0))
    rows = strip_rows(b - a, per_row)
    st = np.empty((rows, w, c), acc)
    cast_buf = None  # input rows of a strip converted to acc, for periodic row windows
    if by_class:
        span = max(int(wh.ends[i : i + rows].max() - wh.starts[i]) for i in range(a, b, rows))
        cast_buf = np.empty((span, w, c), acc)
    tmp_row = np.empty(w * c * 8, np.uint8)
    bufs = {}
    if width is None and ow <= _FOLD_WINDOWS:
        bufs["fold"] = np.empty((rows, ((ww.lmax + 1) // 2) * c), acc)
    elif width is None:
        n_levels = ww.lmax - int((ww.ends - ww.starts).min()) + 1
        bufs["levels"] = np.empty((rows, n_levels * w * c), acc)
        bufs["scratch"] = np.empty((rows, w * c), acc)
    mbuf = np.empty((rows, width.span * c), acc) if width is not None and width.shift else None
    if post is not None and not direct:
        sums = np.empty((rows, c, ow) if planar else (rows, ow, c), acc)
        sums = sums.transpose(0, 2, 1) if planar else sums
    zero_rows = _signed_zero_rows(kind, x4.dtype, acc, wh)
    if zero_rows is not None and out.dtype.kind != "f":
        zero_rows = None
    for m in range(n):
        img = x4[m]
        for i0 in range(a, b, rows):
            i1 = min(b, i0 + rows)
            s, o = st[: i1 - i0], out[m, i0 - a : i1 - a]
            if heights is None:
                _height_windows(kind, img, wh, i0, i1, s, tmp_row, cast_buf)
            else:
                np.copyto(s, heights[m, i0:i1])
            dst = o if post is None or direct else sums[: i1 - i0]
            if width is not None:
                width.run(kind, s, dst, mbuf)
            else:
                _width_windows(kind, s, ww, dst, bufs)
            if post is not None:
                post(dst, o, i0, i1)
            if zero_rows is not None:
                z = zero_rows[i0:i1]
                if z.all():
                    np.add(o, out.dtype.type(0), out=o)
                elif z.any():
                    o[z] += out.dtype.type(0)
    return out


def _fixed_band(x4, wh: _Windows, ww: _Windows, kind, acc, post, out_dtype, band):
    """Uniform windows on both axes (:func:`reduce_strips`); for a band, on its own rows."""
    a, b, r0 = band
    if (a, b) == (0, wh.out):
        return reduce_strips(x4, wh.fixed, ww.fixed, kind, acc, post=post, out_dtype=out_dtype)
    k = wh.fixed.k
    if r0 != a * k or x4.shape[1] < (b - a) * k:
        raise ValueError(f"rows from {r0} do not hold output rows [{a}, {b})")
    shifted = post if post is None else (lambda s, o, i0, i1: post(s, o, i0 + a, i1 + a))
    return reduce_strips(x4[:, : (b - a) * k], Axis((b - a) * k, k, k, 0, 1, b - a), ww.fixed,
                         kind, acc, post=shifted, out_dtype=out_dtype)


def adaptive_select(x4, bounds_h, bounds_w, kind):
    """Max or min of adaptive windows with PyTorch-encoded int64 indices.

    Uniform windows go through :func:`select_fixed`; a few long windows (7x7 or global pooling
    of a large image) are found in one pass plus a search of the winning chunk of each window
    (:func:`_select_search`); many windows long on one axis by per-row winners
    (:func:`_select_long`); short ones through :func:`select_with_indices`.
    """
    n, h, w, c = x4.shape
    if x4.size == 0:
        shape = (n, len(bounds_h[0]), len(bounds_w[0]), c)
        return np.empty(shape, x4.dtype), np.empty(shape, np.int64)
    wh, ww = _Windows(*bounds_h, h), _Windows(*bounds_w, w)
    if wh.fixed is not None and ww.fixed is not None:
        return select_fixed(x4, wh.fixed, ww.fixed, kind)
    if not (wh.long or ww.long):
        return select_with_indices(x4, adaptive_taps(wh.starts, wh.ends),
                                   adaptive_taps(ww.starts, ww.ends), kind)
    if wh.long and ww.long and wh.out * ww.out * c <= _SEARCH_WINDOWS:
        return _select_search(x4, wh, ww, kind)
    return _select_long(x4, wh, ww, kind)


# Up to this many (window, channel) pairs, large windows are located by searching each one.
_SEARCH_WINDOWS = 4096


def _select_search(x4, wh: _Windows, ww: _Windows, kind):
    """Few large windows, in one pass over the input: for each row window, chunks of its rows are
    reduced to one row, then to every column window (``reduceat`` of the non-overlapping part plus
    the window's last cell); a running per-window winner remembers the chunk where its value
    first appeared (the last chunk holding a NaN, for NaN). Only that chunk of each window and
    channel is searched again for the exact cell (first match in row-major order; last NaN)."""
    n, h, w, c = x4.shape
    ufunc = UFUNCS[kind]
    better = np.greater if kind == "max" else np.less
    oh, ow = wh.out, ww.out
    vals = np.empty((n, oh, c, ow), x4.dtype)
    idx = np.empty((n, oh, ow, c), np.int64)
    chunk = max(1, min(64, (1 << 21) // max(1, w * c * x4.dtype.itemsize)))
    seg = np.append(ww.starts[1:], w)  # reduceat segments [s_j, s_j+1): no overlap
    last_cell = ww.ends - 1  # the one cell a window may share with the next
    isfloat = x4.dtype.kind == "f"
    for b in range(n):
        for i in range(oh):
            r0, r1 = int(wh.starts[i]), int(wh.ends[i])
            best = vals[b, i]  # (C, ow)
            where = np.zeros((c, ow), np.intp)  # chunk start (relative to r0) of the winner
            for a in range(0, r1 - r0, chunk):
                z = min(r1 - r0, a + chunk)
                rows = ufunc.reduce(x4[b, r0 + a : r0 + z], axis=0)  # (W, C)
                planar = np.ascontiguousarray(rows.T)  # (C, W)
                cm = ufunc.reduceat(planar, ww.starts, axis=1)  # (C, ow)
                ufunc(cm, planar[:, last_cell], out=cm)
                if a == 0:
                    best[...] = cm
                    continue
                win = better(cm, best)
                if isfloat:
                    nan = cm != cm
                    win &= ~(best != best)  # a NaN winner stays (NaN compares false anyway)
                    win |= nan  # ... and a later NaN replaces it: the last NaN wins
                np.copyto(best, cm, where=win)
                where[win] = a
            for j in range(ow):
                c0, c1 = int(ww.starts[j]), int(ww.ends[j])
                for ch in range(c):
                    a = int(where[ch, j])
                    z = min(r1 - r0, a + chunk)
                    part = x4[b, r0 + a : r0 + z, c0:c1, ch]  # strided; compared in place
                    v = best[ch, j]
                    if v != v:  # the last NaN
                        hit = (part != part).ravel()
                        k = hit.size - 1 - int(np.argmax(hit[::-1]))
                    else:  # argmax of a boolean array: its first True, in row-major order
                        k = int(np.argmax(part == v))
                    idx[b, i, j, ch] = (r0 + a + k // (c1 - c0)) * w + c0 + k % (c1 - c0)
    return vals.transpose(0, 1, 3, 2), idx


def _first_match(seg, best, axis: int):
    """Index along ``axis`` of the first element of ``seg`` equal to ``best`` (broadcast along
    ``axis``), or of the last NaN where ``best`` is NaN."""
    where = np.argmax(seg == np.expand_dims(best, axis), axis=axis)
    if has_nan(best):
        nan = seg != seg
        last = seg.shape[axis] - 1 - np.argmax(np.flip(nan, axis=axis), axis=axis)
        where = np.where(best != best, last, where)
    return where


def _select_long(x4, wh: _Windows, ww: _Windows, kind):
    """Adaptive selection with long windows on at least one axis (see :func:`adaptive_select`).

    Per output row: the winner of every column window in every row of the row window (folds of
    long windows, taps of short ones, on row chunks), then the first row holding the window's
    winner, then the first matching column in that row only.
    """
    n, h, w, c = x4.shape
    ufunc = UFUNCS[kind]
    oh, ow = wh.out, ww.out
    vals = np.empty((n, oh, ow, c), x4.dtype)
    idx = np.empty((n, oh, ow, c), np.int64)
    chunk = strip_rows(h, w * c * x4.dtype.itemsize * 2)
    fold_buf = np.empty((chunk, ((ww.lmax + 1) // 2) * c), x4.dtype) if ww.long else None
    taps_w = np.arange(ww.lmax)
    cols = np.minimum(ww.starts[:, None] + taps_w, ww.ends[:, None] - 1)  # (ow, Lw)
    for b in range(n):
        img = x4[b]
        for i in range(oh):
            s, e = int(wh.starts[i]), int(wh.ends[i])
            row_best = np.empty((e - s, ow, c), x4.dtype)
            for r0 in range(s, e, chunk):
                r1 = min(e, r0 + chunk)
                rows = img[r0:r1]
                if ww.long:
                    flat = np.ascontiguousarray(rows).reshape(r1 - r0, w * c)
                    for j in range(ow):
                        a, z = int(ww.starts[j]), int(ww.ends[j])
                        _fold(kind, flat[:, a * c : z * c], c, row_best[r0 - s : r1 - s, j],
                              fold_buf[: r1 - r0])
                else:
                    bestP = np.take(np.ascontiguousarray(rows.transpose(0, 2, 1)), cols[:, 0], axis=2)
                    for t in range(1, ww.lmax):
                        ufunc(bestP, np.take(rows.transpose(0, 2, 1), cols[:, t], axis=2), out=bestP)
                    row_best[r0 - s : r1 - s] = bestP.transpose(0, 2, 1)
            v = vals[b, i]
            ufunc.reduce(row_best, axis=0, out=v)
            th = s + _first_match(row_best, v, 0)  # (ow, C) winning input row
            # The winning row's cells of each window: (ow, C, Lw), padded by repeating the last.
            seg = img[th[:, :, None], cols[:, None, :], np.arange(c)[None, :, None]]
            tw = _first_match(seg, v, 2)
            col = np.minimum(ww.starts[:, None] + tw, ww.ends[:, None] - 1)
            idx[b, i] = th * w + col
    return vals, idx
