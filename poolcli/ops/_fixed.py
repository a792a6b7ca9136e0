"""Separable window reductions: the engine behind max, min, average and Lp pooling.

A 2-D window reduction with a rectangular window is two 1-D reductions: along the height, then
along the width. Both passes are a handful of whole-array numpy ufunc calls per kernel tap (no
Python loop over windows), run on strips of output rows small enough to stay in cache, so every
input byte comes from memory once and every output byte goes back once.

* The height pass combines whole input rows, so numpy's inner loop runs over contiguous
  ``W*C`` elements.
* The width pass has two methods, picked per call from the stride and element size
  (:class:`WidthPass`):

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
``(N, oh, C, ow)`` memory for most channel counts). :func:`reduce_strips` is the same engine with
two hooks used by the pooling operators: ``pre`` transforms input rows (e.g. ``|x|**p``) as they
are read, ``post`` finishes each strip (e.g. divides sums by window sizes) while it is still in
cache.

Throughput notes (numpy 2.x, one thread): the work is done on strips of a few MiB, large enough
that numpy's per-call overhead (~1-3 us) stays small and small enough for L3; broadcast operands
are laid out in the output's memory order, since numpy otherwise may run its inner loop over the
3 channels of a pixel.
"""

from __future__ import annotations

import numpy as np

from poolcli.ops._common import UFUNCS, holds, identity, overflow_is_inf
from poolcli.ops._geometry import Axis

# Bytes of working buffer to aim for per strip (the CPU here has 512 KiB of L2 per core).
_STRIP_BYTES = 1 << 22

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


def _combine(ufunc, a, b, out):
    """``out = ufunc(a, b)`` computed in ``out``'s dtype (exact for the widening sums used here)."""
    ufunc(a, b, out=out, dtype=out.dtype, casting="unsafe")


def apply_taps(kind, dst, src_of, axis: Axis, lo: int, hi: int, pos_scale: int):
    """Reduce the taps of ``axis`` for output windows ``[lo, hi)`` into ``dst``.

    ``src_of(start, stop, step)`` returns the source view for input positions ``start:stop:step``
    along the reduced axis; ``dst`` is indexed by ``j - lo`` along the leading axis
    (``pos_scale == 0``) or the last axis (``pos_scale == 1``). Padded taps are skipped; a window
    without any real tap keeps the identity.
    """
    ufunc = UFUNCS[kind]

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


def pixel_chunk(c: int, itemsize: int):
    """Unsigned dtype holding one whole pixel, if a pixel is 1, 2, 4 or 8 bytes."""
    b = c * itemsize
    return np.dtype(f"u{b}") if b in (1, 2, 4, 8) else None


def gather_pixels(src3: np.ndarray, dst3: np.ndarray, step: int, chunk) -> None:
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


class WidthPass:
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
        self.chunk = pixel_chunk(c, dtype.itemsize) if self.shift else None
        self.planar = force_planar or self.chunk is None

    def shift_taps(self):
        """``(tap, flat offset)`` of each tap for the shifted windows."""
        return [(t, (self.b0 + t * self.axis.d) * self.c) for t in range(self.axis.k)]

    def edges(self):
        """Output column ranges computed by the strided method."""
        if not self.shift:
            return [(0, self.axis.out)]
        return [(lo, hi) for lo, hi in ((0, self.jf0), (self.jf1, self.axis.out)) if hi > lo]

    def shifted(self, kind, strip: np.ndarray, mbuf: np.ndarray | None) -> np.ndarray:
        """The shift method's windows at every pixel, ``(rows, span * C)``: the flat ``strip``
        combined with itself shifted by each tap (a view of ``strip`` for one tap, else in
        ``mbuf``, converting to its dtype)."""
        ufunc = UFUNCS[kind]
        rows = strip.shape[0]
        flat = strip.reshape(rows, -1)
        width = self.span * self.c
        taps = self.shift_taps()
        if len(taps) == 1:
            return flat[:, taps[0][1] : taps[0][1] + width]
        m = mbuf[:rows, :width]
        (_, o0), (_, o1) = taps[:2]
        _combine(ufunc, flat[:, o0 : o0 + width], flat[:, o1 : o1 + width], m)
        for _, o in taps[2:]:
            ufunc(m, flat[:, o : o + width], out=m)
        return m

    def run(self, kind, strip: np.ndarray, dst: np.ndarray, mbuf: np.ndarray | None) -> None:
        """Reduce ``strip`` (rows, W, C), contiguous, into ``dst`` (rows, ow, C), any strides."""
        rows = strip.shape[0]
        stripT = strip.transpose(0, 2, 1)
        if self.shift:
            m = self.shifted(kind, strip, mbuf)
            gather_pixels(m.reshape(rows, self.span, self.c), dst[:, self.jf0 : self.jf1],
                          self.axis.s, self.chunk)
        for lo, hi in self.edges():
            apply_taps(kind, dst[:, lo:hi].transpose(0, 2, 1),
                       lambda a, z, st: stripT[:, :, a:z:st], self.axis, lo, hi, 1)


def strip_rows(total: int, bytes_per_row: int) -> int:
    """Output rows per strip: as many as fit the strip budget, at least 1, at most ``total``."""
    return max(1, min(total, _STRIP_BYTES // max(1, bytes_per_row)))


def input_rows(ah: Axis, i0: int, i1: int) -> tuple[int, int]:
    """Input rows read by the real taps of output rows ``[i0, i1)``."""
    lo = max(0, i0 * ah.s - ah.p)
    hi = min(ah.n, (i1 - 1) * ah.s - ah.p + (ah.k - 1) * ah.d + 1)
    return lo, max(lo, hi)


@overflow_is_inf
def reduce_strips(x4, ah: Axis, aw: Axis, kind, acc_dtype, *, planar=False, pre=None,
                  post=None, out_dtype=None):
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
    width = WidthPass(aw, c, acc, force_planar=planar)
    if width.planar:
        buf = np.empty((n, oh, c, ow), out_dtype)
        out = buf.transpose(0, 1, 3, 2)
    else:
        buf = out = np.empty((n, oh, ow, c), out_dtype)

    # With a post step whose output type holds every accumulated value exactly, the width pass
    # writes (converting) straight into the output and the post step works in place.
    direct = post is not None and holds(out_dtype, acc)
    per_row = w * c * acc.itemsize * (2 if width.shift else 1)
    if post is not None and not direct:
        per_row += ow * c * acc.itemsize
    if pre is not None:
        per_row += w * c * acc.itemsize * max(1, min(ah.s, ah.k))
    rows = strip_rows(oh, per_row)
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
                r0, r1 = input_rows(ah, i0, i1)
                blk = pbuf[: r1 - r0]
                pre(img[r0:r1], blk)
                src_of = lambda a, z, step, blk=blk, r0=r0: blk[a - r0 : z - r0 : step]
            else:
                src_of = lambda a, z, step, img=img: img[a:z:step]
            apply_taps(kind, st, src_of, ah, i0, i1, 0)
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


def reduce_windows(
    x4: np.ndarray, ah: Axis, aw: Axis, kind: str, acc_dtype, *, planar: bool = False
) -> np.ndarray:
    """Reduce every ``ah x aw`` window of ``x4`` (N, H, W, C) with ``kind`` in max/min/sum.

    Returns an ``(N, oh, ow, C)`` array of ``acc_dtype`` (a view of the output buffer, not
    necessarily C-contiguous), or with ``planar=True`` the planar ``(N, oh, C, ow)`` buffer
    itself, so that a following elementwise step runs on contiguous memory.
    """
    return reduce_strips(x4, ah, aw, kind, acc_dtype, planar=planar)
