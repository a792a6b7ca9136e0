"""Max and min of windows together with *where* the winner was (``return_indices``).

Selection uses the same strip passes as the fixed-window reductions (:mod:`poolcli.ops._fixed`):
:func:`select_fixed` computes the extreme value of each window first, then the first tap
equal to it, counted as "number of leading taps not equal" with three whole-array ufuncs per tap
(``np.copyto(where=)`` would be 10-50x slower; see :func:`_first_equal`). It goes width first
and then height, carrying the winning column of each row, so that the first cell in row-major
order wins a tie, as in PyTorch; a NaN wins and the last NaN of a window is reported (an extra
pass over the taps, run only when a strip holds a NaN). Winning taps are small unsigned
integers, turned into PyTorch's ``h * W + w`` int64 index once per strip.
:func:`select_with_indices` is the general version for arbitrary per-tap position arrays.

NaN masks are computed as ``x != x``: ``np.isnan`` with a strided ``out=`` is wrong in numpy 2.4.
"""

from __future__ import annotations

import numpy as np

from poolcli.ops._common import UFUNCS, has_nan, identity
from poolcli.ops._fixed import (
    WidthPass,
    apply_taps,
    gather_pixels,
    input_rows,
    pixel_chunk,
    strip_rows,
)
from poolcli.ops._geometry import Axis

# Selection with indices makes ~10 numpy calls per tap and strip, so it uses larger strips
# than the fixed-window reductions to keep the per-call overhead small.
_SELECT_BYTES = 1 << 23


def _tap_dtype(k: int) -> np.dtype:
    for t in (np.uint8, np.uint16, np.uint32):
        if k <= np.iinfo(t).max + 1:
            return np.dtype(t)
    return np.dtype(np.uint64)


def _assign_where(dst, value, mask, tmp) -> None:
    """``dst[mask] = value`` for unsigned ``dst`` without ``np.copyto(where=)`` (10-50x slower):
    ``dst += mask * (value - dst)`` in wrapping unsigned arithmetic, exact."""
    np.subtract(value, dst, out=tmp)
    np.multiply(tmp, mask.view(np.uint8) if tmp.dtype.itemsize == 1 else mask, out=tmp)
    np.add(dst, tmp, out=dst)


def _first_equal(best, k: int, taps, out_tap, scratch, carry=None):
    """Store in ``out_tap`` the first tap equal to ``best``; NaN windows: the last NaN tap.

    ``taps`` lists ``(t, sl, src, carried)`` for the real taps in increasing ``t < k``: ``sl``
    indexes ``best``/``out_tap``/``scratch``/``carry`` for the windows where tap ``t`` is real
    and ``src`` holds its values there. ``scratch`` is ``(bool, bool, like out_tap)`` buffers
    shaped like ``best``. ``carry`` (optional, dtype of ``out_tap``) receives ``carried`` of the
    winning tap (the within-row winner of the winning row).

    The first equal tap is the number of leading taps that are not equal (padded taps count as
    not equal), so it is accumulated as ``out_tap += not_found`` over taps ``0..k-2``, all with
    whole-array ufuncs (``np.copyto(where=)`` is 10-50x slower). A window still not found at the
    last tap wins there, so the last tap needs no comparison.
    """
    nf_buf, eq, tmp = scratch
    u8 = out_tap.dtype.itemsize == 1
    as_int = (lambda b: b.view(np.uint8)) if u8 else (lambda b: b)
    taps = sorted(taps, key=lambda e: e[0])
    nf = nf_buf  # windows whose first equal tap is not found yet
    alias = False  # nf is out_tap's bytes (one-byte taps, right after tap 0)
    if taps and taps[0][0] == 0 and best[taps[0][1]].shape == best.shape:
        _, _, src, csrc = taps[0]
        # After tap 0 the count is "tap 0 is not equal": with one-byte taps it is computed
        # straight into out_tap viewed as bool, which also serves as the mask until tap 1.
        first = out_tap.view(np.bool_) if u8 else nf_buf
        if carry is None:
            np.not_equal(src, best, out=first)
        else:
            np.equal(src, best, out=eq)
            np.multiply(csrc, as_int(eq), out=carry, casting="unsafe")
            np.logical_not(eq, out=first)
        if u8:
            nf, alias = first, True
        else:
            np.copyto(out_tap, nf_buf, casting="unsafe")
        rest, prev = taps[1:], 0
    else:
        nf_buf[...] = True
        out_tap[...] = 0
        if carry is not None:
            carry[...] = 0
        rest, prev = taps, -1
    for t, sl, src, csrc in rest:
        gap = t - prev - 1  # taps padded for every window here: not equal
        prev = t
        last = t == k - 1
        if alias and (gap > 0 or best[sl].shape != best.shape):
            np.copyto(nf_buf, nf)  # out_tap is about to change: give the mask its own buffer
            nf, alias = nf_buf, False
        if gap > 0:
            np.add(out_tap, as_int(nf) if gap == 1 else np.multiply(as_int(nf), gap,
                   dtype=out_tap.dtype), out=out_tap, casting="unsafe")
        f = nf[sl]
        if carry is not None:
            c, x = carry[sl], tmp[sl]
            if last:  # still not found: this (real) tap wins
                np.multiply(csrc, as_int(f), out=x, casting="unsafe")
            else:
                e = eq[sl]
                np.equal(src, best[sl], out=e)
                np.logical_and(f, e, out=e)  # found at this tap
                np.logical_xor(f, e, out=nf_buf[sl])
                np.multiply(csrc, as_int(e), out=x, casting="unsafe")
            np.add(c, x, out=c)
        elif not last:
            e = eq[sl]
            np.not_equal(src, best[sl], out=e)
            np.logical_and(f, e, out=nf_buf[sl])
        if not last:
            nf, alias = nf_buf, False
            np.add(out_tap, as_int(nf), out=out_tap, casting="unsafe")
    # Windows still not found after the last real tap are NaN or empty windows, fixed below or
    # by the caller, so the remaining (padded) taps need not be counted.
    if has_nan(best):
        for t, sl, src, csrc in taps:
            m = eq[sl]
            np.not_equal(src, src, out=m)  # NaN test; np.isnan(out=strided) is wrong in numpy 2.4
            _assign_where(out_tap[sl], t, m, tmp[sl])
            if carry is not None:
                _assign_where(carry[sl], csrc, m, tmp[sl])


def _select_width(kind, block, width: WidthPass, best, tap, bufs):
    """Width pass with winners: ``best``/``tap`` (rows, ow, C) from ``block`` (rows, W, C).

    ``bufs``: ``(mbuf, tbuf, scratch_m)`` for the shift method (flat ``(rows, span*C)``) and
    ``scratch_o`` shaped like ``best`` (see :func:`_first_equal`).
    """
    axis, c = width.axis, width.c
    rows = block.shape[0]
    mbuf, tbuf, scratch_m, scratch_o = bufs
    if width.shift:
        m = width.shifted(kind, block, mbuf)  # mbuf has block's dtype: no conversion
        flat = block.reshape(rows, -1)
        size = width.span * c
        taps = width.shift_taps()
        t_m = tbuf[:rows, :size]
        everything = (slice(None), slice(None))
        _first_equal(m, axis.k, [(t, everything, flat[:, o : o + size], None) for t, o in taps],
                     t_m, tuple(a[:rows, :size] for a in scratch_m))
        sel = (slice(None), slice(width.jf0, width.jf1))
        gather_pixels(m.reshape(rows, width.span, c), best[sel], axis.s, width.chunk)
        gather_pixels(t_m.reshape(rows, width.span, c), tap[sel], axis.s,
                      pixel_chunk(c, tap.dtype.itemsize) if width.chunk is not None else None)
    blockT = block.transpose(0, 2, 1)
    for lo, hi in width.edges():
        bT = best[:, lo:hi].transpose(0, 2, 1)
        tT = tap[:, lo:hi].transpose(0, 2, 1)
        sc = tuple(a[:rows, lo:hi].transpose(0, 2, 1) for a in scratch_o)
        apply_taps(kind, bT, lambda a, z, st: blockT[:, :, a:z:st], axis, lo, hi, 1)
        taps = []
        for t in axis.useful_taps():
            j0, j1 = axis.tap_range(t, lo, hi)
            if j1 > j0:
                a = j0 * axis.s - axis.p + t * axis.d
                src = blockT[:, :, a : a + (j1 - j0 - 1) * axis.s + 1 : axis.s]
                taps.append((t, (Ellipsis, slice(j0 - lo, j1 - lo)), src, None))
        _first_equal(bT, axis.k, taps, tT, sc)


def select_fixed(x4: np.ndarray, ah: Axis, aw: Axis, kind: str):
    """Max or min of every fixed ``ah x aw`` window with PyTorch-encoded int64 indices.

    Returns ``(values (N, oh, ow, C), indices (N, oh, ow, C) int64)``, the same as
    :func:`select_with_indices` over the windows' real taps with the windows that have none
    handled (:func:`_fix_empty`), but strip-wise with the fast passes (see the module docstring).
    """
    n, h, w, c = x4.shape
    dtype = x4.dtype
    ufunc = UFUNCS[kind]
    oh, ow = ah.out, aw.out
    if x4.size == 0:
        return np.empty((n, oh, ow, c), dtype), np.empty((n, oh, ow, c), np.int64)
    width = WidthPass(aw, c, dtype)
    shape = (n, oh, c, ow) if width.planar else (n, oh, ow, c)
    vals_buf = np.empty(shape, dtype)
    idx_buf = np.empty(shape, np.int64)
    if width.planar:
        vals, idx = vals_buf.transpose(0, 1, 3, 2), idx_buf.transpose(0, 1, 3, 2)
    else:
        vals, idx = vals_buf, idx_buf
    ttype = _tap_dtype(max(ah.k, aw.k))

    # Strip of output rows: its input block plus per-row buffers should fit the budget.
    per_in_row = w * c * (dtype.itemsize * 2 + 2 + 3 * ttype.itemsize)
    span_rows = lambda r: min(h, (r - 1) * ah.s + (ah.k - 1) * ah.d + 1)
    rows = 1
    while rows < oh and span_rows(rows * 2) * per_in_row <= _SELECT_BYTES:
        rows *= 2
    rows = min(rows, oh)
    nin = span_rows(rows)

    def layout(r, m, dt):
        a = np.empty((r, c, m) if width.planar else (r, m, c), dt)
        return a.transpose(0, 2, 1) if width.planar else a

    row_best, row_tap = layout(nin, ow, dtype), layout(nin, ow, ttype)
    big = max(nin, rows)
    scratch_o = (layout(big, ow, np.bool_), layout(big, ow, np.bool_), layout(big, ow, ttype))
    size = width.span * c if width.shift else 0
    scratch_m = (np.empty((nin, size), np.bool_), np.empty((nin, size), np.bool_),
                 np.empty((nin, size), ttype))
    bufs = (np.empty((nin, size), dtype), np.empty((nin, size), ttype), scratch_m, scratch_o)
    h_tap, col = layout(rows, ow, ttype), layout(rows, ow, ttype)
    max_off = (ah.k - 1) * ah.d * w + (aw.k - 1) * aw.d
    off = layout(rows, ow, np.uint16 if max_off < 1 << 16 else np.int64)
    block_buf = None if x4[0].flags.c_contiguous else np.empty((nin, w, c), dtype)

    col_base = (np.arange(ow) * aw.s - aw.p)[None, :]
    for b in range(n):
        img = x4[b]
        for i0 in range(0, oh, rows):
            i1 = min(oh, i0 + rows)
            r = i1 - i0
            r0, r1 = input_rows(ah, i0, i1)
            block = img[r0:r1]
            if block_buf is not None:
                block = block_buf[: r1 - r0]
                np.copyto(block, img[r0:r1])
            rb, rt = row_best[: r1 - r0], row_tap[: r1 - r0]
            if r1 > r0:
                _select_width(kind, block, width, rb, rt, bufs)
            # Height pass over the row winners, carrying their column tap.
            v, ht, cl = vals[b, i0:i1], h_tap[:r], col[:r]
            apply_taps(kind, v, lambda a, z, st: rb[a - r0 : z - r0 : st], ah, i0, i1, 0)
            taps = []
            for t in ah.useful_taps():
                j0, j1 = ah.tap_range(t, i0, i1)
                if j1 > j0:
                    a = j0 * ah.s - ah.p + t * ah.d - r0
                    sl = slice(a, a + (j1 - j0 - 1) * ah.s + 1, ah.s)
                    taps.append((t, slice(j0 - i0, j1 - i0), rb[sl], rt[sl]))
            _first_equal(v, ah.k, taps, ht, tuple(a[:r] for a in scratch_o), carry=cl)
            # index = (i*s - p + th*d) * W + (j*s - p + tw*d): the tap part in a small type,
            # then one widening copy and one broadcast add of the window origins.
            o = off[:r]
            np.multiply(ht, ah.d * w, out=o, dtype=off.dtype, casting="unsafe")
            if aw.d == 1:
                np.add(o, cl, out=o, dtype=off.dtype, casting="unsafe")
            else:
                o += cl.astype(off.dtype) * aw.d
            out = idx[b, i0:i1]
            np.copyto(out, o, casting="unsafe")
            # Broadcast add in memory order (a broadcast operand whose strides disagree with
            # the output's would make numpy loop over the C channels innermost).
            base = (np.arange(i0, i1) * ah.s - ah.p)[:, None] * w + col_base  # (r, ow)
            if width.planar:
                idx_buf[b, i0:i1] += base[:, None, :]
            else:
                out += base[:, :, None]

    _fix_empty(vals, idx, kind, ah, aw, w)
    return vals, idx


def _fix_empty(vals, idx, kind, ah: Axis, aw: Axis, w: int) -> None:
    """Windows with no real cell: identity value and PyTorch's index (see :func:`empty_windows`)."""
    mask_h, mask_w = empty_windows(ah), empty_windows(aw)
    if mask_h.any() or mask_w.any():
        mask = np.logical_or.outer(mask_h, mask_w)
        vals[:, mask] = identity(kind, vals.dtype)
        first = np.add.outer(ah.first_tap_positions() * w, aw.first_tap_positions())
        idx[:, mask] = first[mask][:, None]


def empty_windows(axis: Axis) -> np.ndarray:
    """Windows with no real cell on this axis: possible only with dilation, e.g. ``n=1, k=2,
    p=1, d=2`` reads positions -1 and 1. PyTorch outputs the identity (-inf for max) there."""
    return axis.first_tap_positions() >= axis.n


def select_with_indices(x4: np.ndarray, taps_h, taps_w, kind: str, empty=None):
    """Max or min over windows given by per-tap position arrays, with PyTorch-encoded indices.

    Width first, then height: the winner is the earliest row holding the extreme value and, in
    that row, its earliest column, i.e. the first cell in row-major order, as in PyTorch. NaN
    replaces the running winner, so the last NaN in row-major order is selected. Taps must be in
    increasing position order within a window and may repeat its first cell before it or its
    last cell after it (as :func:`poolcli.ops._adaptive.adaptive_taps` does for shorter
    windows): that changes neither the max/min nor which index wins under these rules.

    ``empty`` optionally gives ``(mask_h, mask_w, first_h, first_w)``: windows with no real
    cell get the identity value and PyTorch's index ``first_h * W + first_w`` (the first dilation
    grid position at or after 0 on each axis, which then lies outside the plane).

    Returns ``(values (N, oh, ow, C), indices (N, oh, ow, C) int64)`` with ``h * W + w`` indices.
    Works on strips of output rows, gathering one tap at a time from a planar copy of the rows a
    strip reads, and carrying the winning taps as small integers (see :func:`_first_equal`).
    """
    n, h, w, c = x4.shape
    taps_h = np.stack([np.asarray(t, dtype=np.intp) for t in taps_h])  # (kh, oh)
    taps_w = np.stack([np.asarray(t, dtype=np.intp) for t in taps_w])  # (kw, ow)
    vals, idx = _select_taps(x4, taps_h, taps_w, kind)
    if empty is not None:
        mask_h, mask_w, first_h, first_w = empty
        mask = np.logical_or.outer(mask_h, mask_w)
        if mask.any():
            vals[:, mask] = identity(kind, vals.dtype)
            idx[:, mask] = np.add.outer(first_h * w, first_w)[mask][:, None]
    return vals, idx


def _select_taps(x4, taps_h, taps_w, kind):
    """:func:`select_with_indices` on stacked tap positions ``(kh, oh)``, ``(kw, ow)``."""
    n, h, w, c = x4.shape
    dtype = x4.dtype
    ufunc = UFUNCS[kind]
    (kh, oh), (kw, ow) = taps_h.shape, taps_w.shape
    if x4.size == 0:
        return np.empty((n, oh, ow, c), dtype), np.empty((n, oh, ow, c), np.int64)
    ttype = _tap_dtype(max(kh, kw))
    vals_buf = np.empty((n, oh, c, ow), dtype)
    idx_buf = np.empty((n, oh, c, ow), np.int64)
    lo_all, hi_all = taps_h.min(axis=0), taps_h.max(axis=0) + 1
    rows = strip_rows(oh, max(1, (hi_all - lo_all).max()) * (w + ow * kw) * c
                      * (dtype.itemsize + 2) // 2)
    for b in range(n):
        img = x4[b]
        for i0 in range(0, oh, rows):
            i1 = min(oh, i0 + rows)
            r0, r1 = int(lo_all[i0:i1].min()), int(hi_all[i0:i1].max())
            blockP = np.ascontiguousarray(img[r0:r1].transpose(0, 2, 1))  # (nb, C, W)
            shape = blockP.shape[:2] + (ow,)
            best_w = np.take(blockP, taps_w[0], axis=2)
            g = np.empty_like(best_w)
            for t in range(1, kw):
                ufunc(best_w, np.take(blockP, taps_w[t], axis=2, out=g), out=best_w)
            tap_w = np.empty(shape, ttype)
            scratch = (np.empty(shape, np.bool_), np.empty(shape, np.bool_), np.empty(shape, ttype))
            _first_equal(best_w, kw, _TakeTaps(blockP, taps_w, 2), tap_w, scratch)
            # Height pass over the row winners (rows relative to r0), carrying the column tap.
            v = vals_buf[b, i0:i1]  # (r, C, ow)
            rows_t = taps_h[:, i0:i1] - r0
            np.take(best_w, rows_t[0], axis=0, out=v)
            for t in range(1, kh):
                ufunc(v, np.take(best_w, rows_t[t], axis=0), out=v)
            th, col = np.empty(v.shape, ttype), np.empty(v.shape, ttype)
            scratch = (np.empty(v.shape, np.bool_), np.empty(v.shape, np.bool_),
                       np.empty(v.shape, ttype))
            _first_equal(v, kh, _TakeTaps(best_w, rows_t, 0, tap_w), th, scratch, carry=col)
            rowpos = taps_h[th.astype(np.intp), np.arange(i0, i1)[:, None, None]]
            colpos = taps_w[col.astype(np.intp), np.arange(ow)[None, None, :]]
            out = idx_buf[b, i0:i1]
            np.multiply(rowpos, w, out=out)
            out += colpos
    return vals_buf.transpose(0, 1, 3, 2), idx_buf.transpose(0, 1, 3, 2)


class _TakeTaps:
    """Tap list for :func:`_first_equal` that gathers each tap when it is used (whole arrays)."""

    def __init__(self, src, positions, axis, carried=None):
        self.src, self.positions, self.axis, self.carried = src, positions, axis, carried

    def __iter__(self):
        for t in range(len(self.positions)):
            pos = self.positions[t]
            csrc = None if self.carried is None else np.take(self.carried, pos, axis=self.axis)
            yield t, Ellipsis, np.take(self.src, pos, axis=self.axis), csrc
