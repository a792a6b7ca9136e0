"""Separable window reductions: the engine behind max, min, average and Lp pooling.

A 2-D window reduction with a rectangular window is two 1-D reductions: along the height, then
along the width. Both passes are a handful of whole-array numpy ufunc calls per kernel tap (no
Python loop over windows), run on strips of output rows small enough to stay in cache, so every
input byte comes from memory once and every output byte goes back once.

* The height pass combines whole input rows, so numpy's inner loop runs over contiguous
  ``W*C`` elements.
* The width pass has two methods, picked per call from the stride and element size
  (:class:`_WidthPass`):

  - *shift*: for the windows that lie wholly inside the input, combine the strip with itself
    shifted by ``t*d`` pixels (contiguous SIMD loops over whole rows, computing the window at
    every pixel), then keep every ``s``-th pixel with one strided copy per channel (or one
    copy of whole pixels when a pixel is 1, 2, 4 or 8 bytes). This wins for small strides:
    a contiguous loop is 3-8x faster per element than a strided one.
  - *strided*: read the strip through a transposed ``(rows, C, W)`` view and combine the
    ``t``-th tap of every window, writing a planar ``(rows, C, ow)`` buffer, so the inner loop
    runs along the image width instead of over the 2-4 channels of a pixel.

  Windows touching the padding (at most a few columns per side) always use the strided method,
  which skips padded taps.

:func:`reduce_windows` returns an ``(N, oh, ow, C)`` view of its output buffer (planar
``(N, oh, C, ow)`` memory for most channel counts). :func:`_reduce` is the same engine with two
hooks used by the pooling operators: ``pre`` transforms input rows (e.g. ``|x|**p``) as they are
read, ``post`` finishes each strip (e.g. divides sums by window sizes) while it is still in cache.

Selecting reductions that also report *where* the winner was (``return_indices``) use the same
passes: :func:`select_fixed` computes the extreme value of each window first, then the first tap
equal to it, counted as "number of leading taps not equal" with three whole-array ufuncs per tap
(``np.copyto(where=)`` would be 10-50x slower; see :func:`_first_equal`). It goes width first
and then height, carrying the winning column of each row, so that the first cell in row-major
order wins a tie, as in PyTorch; a NaN wins and the last NaN of a window is reported (an extra
pass over the taps, run only when a strip holds a NaN). Winning taps are small unsigned
integers, turned into PyTorch's ``h * W + w`` int64 index once per strip.
:func:`select_with_indices` is the general version for arbitrary per-tap position arrays.

Adaptive windows (``[floor(i*n/out), ceil((i+1)*n/out))``, see :func:`adaptive_reduce` and
:func:`adaptive_select`) reuse the fixed-window engine when they are uniform and short; long ones
are reduced one slab of rows / one fold of columns at a time and short irregular ones through
sliding sums of every window length in use, so the cost stays about one pass over the input
whatever the output size (7x7 from 4096x4096 reads each input row once). Irregular windows
repeat with a short period (4096 -> 1280: every 5 windows, 16 cells), so each residue class of
windows is a fixed-stride set reached by basic slicing: rows are combined one class at a time
(no gather of rows) and the sliding sums are picked per class with one strided copy each,
writing planar output rows; results are the same bits as the general passes (see
:func:`_signed_zero_rows` for the one subtlety, the sign of zero sums).

Throughput notes (numpy 2.x, one thread): the work is done on strips of a few MiB, large enough
that numpy's per-call overhead (~1-3 us) stays small and small enough for L3; ``np.isnan`` with a
strided ``out=`` is wrong in numpy 2.4, so NaN masks are computed as ``x != x``; broadcast
operands are laid out in the output's memory order, since numpy otherwise may run its inner loop
over the 3 channels of a pixel.
"""

from __future__ import annotations

import math

import numpy as np

from poolcli.ops._geometry import Axis

# Bytes of working buffer to aim for per strip (the CPU here has 512 KiB of L2 per core).
# Selection with indices makes ~10 numpy calls per tap and strip, so it uses larger strips to
# keep the per-call overhead small.
_STRIP_BYTES = 1 << 22
_SELECT_BYTES = 1 << 23

_UFUNCS = {"max": np.maximum, "min": np.minimum, "sum": np.add}

# Rough cost in ns per output element of the two width-pass methods (measured on x86-64 AVX2,
# numpy 2.x, 4096-wide strips), by item size: a contiguous binary ufunc per shifted pixel, the
# final strided copy of the shift method, and a binary ufunc reading strided taps (cheaper for one
# channel, where the taps of a window are only ``s`` elements apart). Used only to choose the
# faster method; both give identical results.
_CONTIG_NS = {1: 0.06, 2: 0.09, 4: 0.18, 8: 0.35}
_GATHER_NS = 0.6
_STRIDED_NS = {1: 0.8, 2: 1.0, 4: 1.26, 8: 1.6}
_STRIDED_NS_1CH = {1: 0.8, 2: 0.8, 4: 1.2, 8: 0.6}


def _prefer_shift(k: int, s: int, c: int, itemsize: int) -> bool:
    size = min(itemsize, 8)
    if s == 1:
        return c > 1  # with one channel the strided taps are contiguous already
    strided = (_STRIDED_NS if c > 1 else _STRIDED_NS_1CH)[size] * max(1, k - 1)
    return (k - 1) * s * _CONTIG_NS[size] + _GATHER_NS < strided


def identity(kind: str, dtype: np.dtype):
    """The value that never wins (max/min) or adds nothing (sum)."""
    dtype = np.dtype(dtype)
    if kind == "sum":
        return dtype.type(0)
    if dtype.kind == "f":
        return dtype.type(-np.inf if kind == "max" else np.inf)
    info = np.iinfo(dtype)
    return dtype.type(info.min if kind == "max" else info.max)


def _overflow_is_inf(fn):
    """Float sums that pass the dtype's range are +-inf, and a window holding +inf and -inf
    sums to NaN, as in PyTorch (whose CPU average of float32 3e38s is inf too): results, not
    reasons for numpy's RuntimeWarning."""
    import functools

    @functools.wraps(fn)
    def quiet(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore"):
            return fn(*args, **kwargs)

    return quiet


def _combine(ufunc, a, b, out):
    """``out = ufunc(a, b)`` computed in ``out``'s dtype (exact for the widening sums used here)."""
    ufunc(a, b, out=out, dtype=out.dtype, casting="unsafe")


def _apply_taps(kind, dst, src_of, axis: Axis, lo: int, hi: int, pos_scale: int):
    """Reduce the taps of ``axis`` for output windows ``[lo, hi)`` into ``dst``.

    ``src_of(start, stop, step)`` returns the source view for input positions ``start:stop:step``
    along the reduced axis; ``dst`` is indexed by ``j - lo`` along the leading axis
    (``pos_scale == 0``) or the last axis (``pos_scale == 1``). Padded taps are skipped; a window
    without any real tap keeps the identity.
    """
    ufunc = _UFUNCS[kind]

    def view(arr, j0, j1):
        return arr[j0 - lo : j1 - lo] if pos_scale == 0 else arr[..., j0 - lo : j1 - lo]

    def src(t, j0, j1):
        start = j0 * axis.s - axis.p + t * axis.d
        return src_of(start, start + (j1 - j0 - 1) * axis.s + 1, axis.s)

    ranges = [(t, *axis.tap_range(t, lo, hi)) for t in axis.useful_taps()]
    full = [t for t, j0, j1 in ranges if j0 == lo and j1 == hi]
    done = set(full[:2])
    if len(full) >= 2:  # first two whole taps combined directly: one pass instead of copy + op
        _combine(ufunc, src(full[0], lo, hi), src(full[1], lo, hi), dst)
    elif full:
        np.copyto(dst, src(full[0], lo, hi), casting="unsafe")
    else:
        dst[...] = identity(kind, dst.dtype)
    for t, j0, j1 in ranges:
        if t in done or j1 <= j0:
            continue
        part = view(dst, j0, j1)
        ufunc(part, src(t, j0, j1), out=part, casting="unsafe")


def _pixel_chunk(c: int, itemsize: int):
    """Unsigned dtype holding one whole pixel, if a pixel is 1, 2, 4 or 8 bytes."""
    b = c * itemsize
    return np.dtype(f"u{b}") if b in (1, 2, 4, 8) else None


def _gather(src3: np.ndarray, dst3: np.ndarray, step: int, chunk) -> None:
    """``dst3[:, u] = src3[:, u * step]`` for pixel arrays ``(rows, n, C)``.

    With ``chunk`` (both arrays hold contiguous pixels of that size, same dtype) whole pixels are
    copied as one unsigned integer each; otherwise one strided copy per channel (converting to
    ``dst3``'s dtype if needed), writing along the width.
    """
    m = dst3.shape[1]
    src = src3[:, : (m - 1) * step + 1 : step]
    if chunk is not None and dst3.dtype == src3.dtype:
        np.copyto(dst3.view(chunk)[..., 0], src.view(chunk)[..., 0])
    else:
        np.copyto(dst3.transpose(0, 2, 1), src.transpose(0, 2, 1))


class _WidthPass:
    """Width pass of a strip ``(rows, W, C)`` into ``(rows, ow, C)`` (see the module docstring).

    ``planar`` tells the layout the output buffer should have for this pass to write it
    efficiently: ``(rows, C, ow)`` memory (True) or contiguous pixels ``(rows, ow, C)`` (False).
    """

    def __init__(self, axis: Axis, c: int, dtype, *, force_planar: bool = False):
        self.axis, self.c = axis, c
        dtype = np.dtype(dtype)
        k, s, p, d, n = axis.k, axis.s, axis.p, axis.d, axis.n
        jf0 = min(axis.out, -(-p // s))  # first window with no padded tap
        jf1 = max(jf0, min(axis.out, (n - 1 - (k - 1) * d + p) // s + 1))
        self.jf0, self.jf1 = jf0, jf1
        self.b0 = jf0 * s - p  # first input pixel of window jf0
        self.span = (jf1 - jf0 - 1) * s + 1 if jf1 > jf0 else 0  # pixels computed by shifting
        self.shift = jf1 > jf0 and _prefer_shift(k, s, c, dtype.itemsize)
        self.chunk = _pixel_chunk(c, dtype.itemsize) if self.shift else None
        self.planar = force_planar or self.chunk is None

    def shift_taps(self):
        """``(tap, flat offset)`` of each tap for the shifted windows."""
        return [(t, (self.b0 + t * self.axis.d) * self.c) for t in range(self.axis.k)]

    def edges(self):
        """Output column ranges computed by the strided method."""
        if not self.shift:
            return [(0, self.axis.out)]
        return [(lo, hi) for lo, hi in ((0, self.jf0), (self.jf1, self.axis.out)) if hi > lo]

    def run(self, kind, strip: np.ndarray, dst: np.ndarray, mbuf: np.ndarray | None) -> None:
        """Reduce ``strip`` (rows, W, C), contiguous, into ``dst`` (rows, ow, C), any strides."""
        ufunc = _UFUNCS[kind]
        rows = strip.shape[0]
        stripT = strip.transpose(0, 2, 1)
        if self.shift:
            flat = strip.reshape(rows, -1)
            width = self.span * self.c
            taps = self.shift_taps()
            if len(taps) == 1:
                m = flat[:, taps[0][1] : taps[0][1] + width]
            else:
                m = mbuf[:rows, :width]
                (_, o0), (_, o1) = taps[:2]
                _combine(ufunc, flat[:, o0 : o0 + width], flat[:, o1 : o1 + width], m)
                for _, o in taps[2:]:
                    ufunc(m, flat[:, o : o + width], out=m)
            _gather(m.reshape(rows, self.span, self.c), dst[:, self.jf0 : self.jf1],
                    self.axis.s, self.chunk)
        for lo, hi in self.edges():
            _apply_taps(kind, dst[:, lo:hi].transpose(0, 2, 1),
                        lambda a, z, st: stripT[:, :, a:z:st], self.axis, lo, hi, 1)


def _strip_rows(total: int, bytes_per_row: int) -> int:
    return max(1, min(total, _STRIP_BYTES // max(1, bytes_per_row)))


def _input_rows(ah: Axis, i0: int, i1: int) -> tuple[int, int]:
    """Input rows read by the real taps of output rows ``[i0, i1)``."""
    lo = max(0, i0 * ah.s - ah.p)
    hi = min(ah.n, (i1 - 1) * ah.s - ah.p + (ah.k - 1) * ah.d + 1)
    return lo, max(lo, hi)


@_overflow_is_inf
def _reduce(x4, ah: Axis, aw: Axis, kind, acc_dtype, *, planar=False, pre=None, post=None,
            out_dtype=None):
    """:func:`reduce_windows` with hooks.

    ``pre(rows, buf)`` writes transformed input rows (any view ``(r, W, C)``) into ``buf``
    (``acc_dtype``), applied once per strip to the input rows it reads. ``post(acc, out, i0, i1)``
    writes the final values of output rows ``[i0, i1)`` into ``out`` (``out_dtype``) from the
    reduced ``acc`` (both ``(r, ow, C)`` views). Returns ``(N, oh, ow, C)`` (planar memory if
    ``planar``; then the planar ``(N, oh, C, ow)`` buffer itself is returned).
    """
    n, h, w, c = x4.shape
    acc = np.dtype(acc_dtype)
    out_dtype = acc if post is None else np.dtype(out_dtype)
    oh, ow = ah.out, aw.out
    if x4.size == 0:  # empty batch or no channels
        return np.empty((n, oh, c, ow) if planar else (n, oh, ow, c), out_dtype)
    width = _WidthPass(aw, c, acc, force_planar=planar)
    if width.planar:
        buf = np.empty((n, oh, c, ow), out_dtype)
        out = buf.transpose(0, 1, 3, 2)
    else:
        buf = out = np.empty((n, oh, ow, c), out_dtype)

    # With a post step whose output type holds every accumulated value exactly, the width pass
    # writes (converting) straight into the output and the post step works in place.
    direct = post is not None and _holds(out_dtype, acc)
    per_row = w * c * acc.itemsize * (2 if width.shift else 1)
    if post is not None and not direct:
        per_row += ow * c * acc.itemsize
    if pre is not None:
        per_row += w * c * acc.itemsize * max(1, min(ah.s, ah.k))
    rows = _strip_rows(oh, per_row)
    strip = np.empty((rows, w, c), acc)
    mbuf = np.empty((rows, width.span * c), acc) if width.shift and aw.k > 1 else None
    if post is not None and not direct:
        sums = np.empty((rows, c, ow) if width.planar else (rows, ow, c), acc)
        sums = sums.transpose(0, 2, 1) if width.planar else sums
    if pre is not None:
        span = (rows - 1) * ah.s + (ah.k - 1) * ah.d + 1
        pbuf = np.empty((min(h, span), w, c), acc)

    for b in range(n):
        img = x4[b]
        for i0 in range(0, oh, rows):
            i1 = min(oh, i0 + rows)
            st = strip[: i1 - i0]
            if pre is not None:
                r0, r1 = _input_rows(ah, i0, i1)
                blk = pbuf[: r1 - r0]
                pre(img[r0:r1], blk)
                src_of = lambda a, z, step, blk=blk, r0=r0: blk[a - r0 : z - r0 : step]
            else:
                src_of = lambda a, z, step, img=img: img[a:z:step]
            _apply_taps(kind, st, src_of, ah, i0, i1, 0)
            if post is None:
                width.run(kind, st, out[b, i0:i1], mbuf)
            elif direct:
                o = out[b, i0:i1]
                width.run(kind, st, o, mbuf)
                post(o, o, i0, i1)
            else:
                s = sums[: i1 - i0]
                width.run(kind, st, s, mbuf)
                post(s, out[b, i0:i1], i0, i1)
    return buf if planar else out


def _holds(big, small) -> bool:
    """Whether every value of dtype ``small`` is exactly representable in ``big``."""
    big, small = np.dtype(big), np.dtype(small)
    if big == small:
        return True
    if big.kind == "f" and small.kind in "iu":
        info = np.iinfo(small)
        return max(abs(int(info.min)), int(info.max)) <= 1 << (np.finfo(big).nmant + 1)
    return big.kind == "f" and small.kind == "f" and big.itemsize >= small.itemsize


def reduce_windows(
    x4: np.ndarray, ah: Axis, aw: Axis, kind: str, acc_dtype, *, planar: bool = False
) -> np.ndarray:
    """Reduce every ``ah x aw`` window of ``x4`` (N, H, W, C) with ``kind`` in max/min/sum.

    Returns an ``(N, oh, ow, C)`` array of ``acc_dtype`` (a view of the output buffer, not
    necessarily C-contiguous), or with ``planar=True`` the planar ``(N, oh, C, ow)`` buffer
    itself, so that a following elementwise step runs on contiguous memory.
    """
    return _reduce(x4, ah, aw, kind, acc_dtype, planar=planar)


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


# ----------------------------------------------------------------------------------- selection


def _tap_dtype(k: int) -> np.dtype:
    for t in (np.uint8, np.uint16, np.uint32):
        if k <= np.iinfo(t).max + 1:
            return np.dtype(t)
    return np.dtype(np.uint64)


def _has_nan(a: np.ndarray) -> bool:
    """Whether a float array holds a NaN (one SIMD max reduction, which propagates NaN)."""
    return a.dtype.kind == "f" and a.size > 0 and bool(np.isnan(np.max(a)))


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
    if _has_nan(best):
        for t, sl, src, csrc in taps:
            m = eq[sl]
            np.not_equal(src, src, out=m)  # NaN test; np.isnan(out=strided) is wrong in numpy 2.4
            _assign_where(out_tap[sl], t, m, tmp[sl])
            if carry is not None:
                _assign_where(carry[sl], csrc, m, tmp[sl])


def _select_width(kind, block, width: _WidthPass, best, tap, bufs):
    """Width pass with winners: ``best``/``tap`` (rows, ow, C) from ``block`` (rows, W, C).

    ``bufs``: ``(mbuf, tbuf, scratch_m)`` for the shift method (flat ``(rows, span*C)``) and
    ``scratch_o`` shaped like ``best`` (see :func:`_first_equal`).
    """
    ufunc = _UFUNCS[kind]
    axis, c = width.axis, width.c
    rows = block.shape[0]
    mbuf, tbuf, scratch_m, scratch_o = bufs
    if width.shift:
        flat = block.reshape(rows, -1)
        size = width.span * c
        taps = width.shift_taps()
        if len(taps) == 1:
            m = flat[:, taps[0][1] : taps[0][1] + size]
        else:
            m = mbuf[:rows, :size]
            (_, o0), (_, o1) = taps[:2]
            ufunc(flat[:, o0 : o0 + size], flat[:, o1 : o1 + size], out=m)
            for _, o in taps[2:]:
                ufunc(m, flat[:, o : o + size], out=m)
        t_m = tbuf[:rows, :size]
        everything = (slice(None), slice(None))
        _first_equal(m, axis.k, [(t, everything, flat[:, o : o + size], None) for t, o in taps],
                     t_m, tuple(a[:rows, :size] for a in scratch_m))
        sel = (slice(None), slice(width.jf0, width.jf1))
        _gather(m.reshape(rows, width.span, c), best[sel], axis.s, width.chunk)
        _gather(t_m.reshape(rows, width.span, c), tap[sel], axis.s,
                _pixel_chunk(c, tap.dtype.itemsize) if width.chunk is not None else None)
    blockT = block.transpose(0, 2, 1)
    for lo, hi in width.edges():
        bT = best[:, lo:hi].transpose(0, 2, 1)
        tT = tap[:, lo:hi].transpose(0, 2, 1)
        sc = tuple(a[:rows, lo:hi].transpose(0, 2, 1) for a in scratch_o)
        _apply_taps(kind, bT, lambda a, z, st: blockT[:, :, a:z:st], axis, lo, hi, 1)
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

    Returns ``(values (N, oh, ow, C), indices (N, oh, ow, C) int64)`` like
    :func:`select_with_indices` with :func:`fixed_taps` and the ``empty`` windows handled, but
    strip-wise with the fast passes (see the module docstring).
    """
    n, h, w, c = x4.shape
    dtype = x4.dtype
    ufunc = _UFUNCS[kind]
    oh, ow = ah.out, aw.out
    if x4.size == 0:
        return np.empty((n, oh, ow, c), dtype), np.empty((n, oh, ow, c), np.int64)
    width = _WidthPass(aw, c, dtype)
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
            r0, r1 = _input_rows(ah, i0, i1)
            block = img[r0:r1]
            if block_buf is not None:
                block = block_buf[: r1 - r0]
                np.copyto(block, img[r0:r1])
            rb, rt = row_best[: r1 - r0], row_tap[: r1 - r0]
            if r1 > r0:
                _select_width(kind, block, width, rb, rt, bufs)
            # Height pass over the row winners, carrying their column tap.
            v, ht, cl = vals[b, i0:i1], h_tap[:r], col[:r]
            _apply_taps(kind, v, lambda a, z, st: rb[a - r0 : z - r0 : st], ah, i0, i1, 0)
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


def select_with_indices(x4: np.ndarray, taps_h, taps_w, kind: str, empty=None):
    """Max or min over windows given by per-tap position arrays, with PyTorch-encoded indices.

    Width first, then height: the winner is the earliest row holding the extreme value and, in
    that row, its earliest column, i.e. the first cell in row-major order, as in PyTorch. NaN
    replaces the running winner, so the last NaN in row-major order is selected. Taps must be in
    increasing position order within a window and may repeat a cell of their window (see
    :func:`fixed_taps`, :func:`adaptive_taps`).

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
    ufunc = _UFUNCS[kind]
    (kh, oh), (kw, ow) = taps_h.shape, taps_w.shape
    if x4.size == 0:
        return np.empty((n, oh, ow, c), dtype), np.empty((n, oh, ow, c), np.int64)
    ttype = _tap_dtype(max(kh, kw))
    vals_buf = np.empty((n, oh, c, ow), dtype)
    idx_buf = np.empty((n, oh, c, ow), np.int64)
    lo_all, hi_all = taps_h.min(axis=0), taps_h.max(axis=0) + 1
    rows = _strip_rows(oh, max(1, (hi_all - lo_all).max()) * (w + ow * kw) * c
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


# ---------------------------------------------------------------------------- adaptive windows

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


def _int_accumulator(dtype, terms: int):
    """Smallest integer type of the same signedness holding a sum of ``terms`` values."""
    info = np.iinfo(dtype)
    for bits in (16, 32, 64):
        acc = np.dtype(f"{dtype.kind}{bits // 8}")
        ai = np.iinfo(acc)
        if info.max * terms <= ai.max and info.min * terms >= ai.min:
            return acc
    return np.dtype(np.int64 if dtype.kind == "i" else np.uint64)


def _slab_dtype(dtype, acc):
    """Type and row count for reducing a slab of rows before adding it to ``acc``."""
    dtype, acc = np.dtype(dtype), np.dtype(acc)
    if dtype.kind in "iu":
        inner = _int_accumulator(dtype, 2)  # one size up
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
    ufunc = _UFUNCS[kind]
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


def _height_windows(kind, img, win: _Windows, i0, i1, st, tmp_row, cast_buf=None):
    """Reduce the adaptive row windows ``[i0, i1)`` of ``img`` (H, W, C) into ``st`` (r, W, C)."""
    ufunc = _UFUNCS[kind]
    if win.fixed is not None:
        _apply_taps(kind, st, lambda a, z, step: img[a:z:step], win.fixed, i0, i1, 0)
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
    ufunc = _UFUNCS[kind]
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
    ufunc = _UFUNCS[kind]
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


@_overflow_is_inf
def adaptive_reduce(x4, bounds_h, bounds_w, kind, acc_dtype, *, post=None, out_dtype=None):
    """Reduce adaptive windows ``[start, end)`` (per axis, as from ``adaptive_bounds``).

    Uniform windows (the size divides evenly) go through :func:`_reduce`; otherwise long windows
    are reduced as slabs of rows / folds of columns and short ones tap by tap, on strips of output
    rows. Sums of ``kind == "sum"`` are exact in integer accumulators; float32 slabs are summed
    in float32 blocks of at most 64 rows added in ``acc_dtype``. ``post`` as in :func:`_reduce`.
    """
    n, h, w, c = x4.shape
    acc = np.dtype(acc_dtype)
    if x4.size == 0:
        return np.empty((n, len(bounds_h[0]), len(bounds_w[0]), c),
                        acc if post is None else np.dtype(out_dtype))
    wh, ww = _Windows(*bounds_h, h), _Windows(*bounds_w, w)
    if wh.fixed is not None and ww.fixed is not None:
        return _reduce(x4, wh.fixed, ww.fixed, kind, acc, post=post, out_dtype=out_dtype)
    out_dtype = acc if post is None else np.dtype(out_dtype)
    oh, ow = wh.out, ww.out
    if not x4[0].flags.c_contiguous:
        x4 = np.ascontiguousarray(x4)
    if ww.fixed is not None:
        width = _WidthPass(ww.fixed, c, acc)
        planar = width.planar
    else:  # periodic windows are gathered by class, writing planar rows (see _width_windows)
        width, planar = None, ww.period is not None and ww.out > _FOLD_WINDOWS and c > 1
    # As in _reduce: when out_dtype holds every sum exactly, the width pass writes (converting)
    # straight into the output and post works in place; not with np.take, which cannot convert.
    direct = post is not None and _holds(out_dtype, acc) and (
        out_dtype == acc or width is not None or ow <= _FOLD_WINDOWS or ww.period is not None)
    buf = np.empty((n, oh, c, ow) if planar else (n, oh, ow, c), out_dtype)
    out = buf.transpose(0, 1, 3, 2) if planar else buf
    by_class = _height_by_class(kind, x4.dtype, acc, wh) and x4.dtype != acc
    per_row = w * c * acc.itemsize * (3 + (-(-h // oh) if by_class else 0))
    rows = _strip_rows(oh, per_row)
    st = np.empty((rows, w, c), acc)
    cast_buf = None  # input rows of a strip converted to acc, for periodic row windows
    if by_class:
        span = max(int(wh.ends[i : i + rows].max() - wh.starts[i]) for i in range(0, oh, rows))
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
    for b in range(n):
        img = x4[b]
        for i0 in range(0, oh, rows):
            i1 = min(oh, i0 + rows)
            s = st[: i1 - i0]
            _height_windows(kind, img, wh, i0, i1, s, tmp_row, cast_buf)
            dst = out[b, i0:i1] if post is None or direct else sums[: i1 - i0]
            if width is not None:
                width.run(kind, s, dst, mbuf)
            else:
                _width_windows(kind, s, ww, dst, bufs)
            if post is not None:
                post(dst, out[b, i0:i1], i0, i1)
            if zero_rows is not None:
                o, z = out[b, i0:i1], zero_rows[i0:i1]
                if z.all():
                    np.add(o, out.dtype.type(0), out=o)
                elif z.any():
                    o[z] += out.dtype.type(0)
    return out


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
    ufunc = _UFUNCS[kind]
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
    if _has_nan(best):
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
    ufunc = _UFUNCS[kind]
    oh, ow = wh.out, ww.out
    vals = np.empty((n, oh, ow, c), x4.dtype)
    idx = np.empty((n, oh, ow, c), np.int64)
    chunk = _strip_rows(h, w * c * x4.dtype.itemsize * 2)
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
