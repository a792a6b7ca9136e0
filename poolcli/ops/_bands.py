"""Bands of output rows: which input rows each needs, so a large image is pooled band by band.

Every windowed operator is local along the height: output row ``j`` reads input rows
``j*s - top + t*d`` for taps ``t < k`` (``top`` rows of padding above the image). A band of output
rows ``[a, b)`` is computed by running the *unchanged* operator on a slice of input rows and
keeping some of its output rows (:meth:`BandRows.slice_for`):

* a band whose windows reach the top padding starts its slice at row 0, so the operator pads it
  exactly as it pads the whole image;
* any other band starts its slice ``m = ceil(top / s)`` windows early, at row ``(a - m) * s``:
  the operator's own padding then lands on those ``m`` extra windows, which are dropped, and
  the kept windows read exactly the rows (and get the divisors) they read in the whole image;
* the slice ends at the last row the kept windows read; if that is the image's last row, the
  operator's bottom padding is the image's.

This reproduces every value exactly when the arithmetic of a window does not depend on how the
whole-image engine splits rows into strips. It does not for float sums over a padded height
(the engine's tap order near the top padding follows its strip layout), which is why
:func:`order_safe` decides, per run, whether banding is bit-identical. Selection indices
(``h * W + w``) come out relative to the slice and are moved by ``r0 * W`` (:func:`keep_band`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from poolcli.ops._geometry import pool_output_size

__all__ = ["BandRows", "window_rows", "blur_rows", "order_safe", "keep_band", "plan_bands",
           "RowBlocks"]


@dataclass(frozen=True)
class BandRows:
    """The height axis of a windowed operator: ``n`` input rows, kernel ``k``, stride ``s``,
    ``top`` padding rows above, dilation ``d``, ``out`` output rows; ``bottom`` padding rows
    below (a slice must be taller than its padding: reflect padding needs it)."""

    n: int
    k: int
    s: int
    top: int
    d: int
    out: int
    bottom: int = 0

    def slice_for(self, a: int, b: int) -> tuple[int, int, int]:
        """``(r0, r1, skip)``: run the operator on input rows ``[r0, r1)`` and keep its output
        rows ``[skip, skip + b - a)`` to get output rows ``[a, b)`` of the whole image."""
        if not 0 <= a < b <= self.out:
            raise ValueError(f"band [{a}, {b}) is outside the {self.out} output rows")
        margin = -(-self.top // self.s)
        if a <= margin:
            r0, skip = 0, a
        else:
            r0, skip = (a - margin) * self.s, margin
        last = (b - 1) * self.s - self.top + (self.k - 1) * self.d  # last row read by row b-1
        pad = max(self.top, self.bottom)
        r1 = min(self.n, max(last + 1, r0 + pad + 1))
        if r1 - r0 <= pad:  # at the bottom, shorter than its (reflect) padding: start earlier
            back = min(r0 // self.s, -(-(pad + 1 - (r1 - r0)) // self.s))
            r0, skip = r0 - back * self.s, skip + back
        return r0, r1, skip

    def reach(self, a: int, b: int) -> tuple[int, int]:
        """Input rows ``[r0, r1)`` read for output rows ``[a, b)`` (what a reader must hold)."""
        r0, r1, _ = self.slice_for(a, b)
        return r0, r1


def window_rows(n: int, kernel, stride, padding, dilation, ceil_mode: bool) -> BandRows:
    """The :class:`BandRows` of a PyTorch-style pooling (``kernel`` etc. are ``(h, w)`` pairs or
    ints; ``stride`` None means the kernel)."""
    k = _first(kernel)
    s = k if stride is None else _first(stride)
    p, d = _first(padding), _first(dilation)
    return BandRows(n, k, s, p, d, pool_output_size(n, k, s, p, d, bool(ceil_mode)), p)


def blur_rows(n: int, kernel, stride, padding) -> BandRows:
    """The :class:`BandRows` of :func:`poolcli.ops.blur_pool2d` (reflect padding, ``None``: the
    reference ``(k-1)//2`` above and ``k//2`` below)."""
    k, s = _first(kernel), _first(stride)
    top, bottom = ((k - 1) // 2, k // 2) if padding is None else (_first(padding),) * 2
    return BandRows(n, k, s, top, 1, pool_output_size(n + top + bottom, k, s, 0, 1, False),
                    bottom)


def _first(value) -> int:
    return int(value) if np.ndim(value) == 0 else int(value[0])


def order_safe(rows: BandRows, exact: bool) -> bool:
    """Whether banding gives the whole-image result bit for bit.

    ``exact``: the operator's arithmetic does not depend on the order taps are combined in
    (max/min, integer sums). Otherwise a float sum is order-safe unless the height is padded
    and three or more taps are summed: with one or two taps, ``a + b == b + a`` exactly.
    """
    return exact or rows.top == 0 or rows.k <= 2


def keep_band(result, skip: int, count: int, r0: int, width: int):
    """Rows ``[skip, skip + count)`` of ``result`` (an array, or ``(values, indices)``), with
    indices moved from the slice's plane to the whole image's (``+ r0 * width``)."""
    if isinstance(result, tuple):
        values, indices = result
        return values[skip : skip + count], indices[skip : skip + count] + np.int64(r0 * width)
    return result[skip : skip + count]


def plan_bands(rows: BandRows, band: int) -> list[tuple[int, int]]:
    """Output rows ``[a, b)`` in bands of ``band`` rows (the last one shorter)."""
    band = max(1, int(band))
    return [(a, min(rows.out, a + band)) for a in range(0, rows.out, band)]


# ---- adaptive pooling (poolcli.ops.adaptive.adaptive_band_rows) --------------------------------


@dataclass(frozen=True)
class AdaptiveRows:
    """The height axis of adaptive pooling: ``n`` input rows to ``out`` output rows, row ``i``
    reading ``[floor(i*n/out), ceil((i+1)*n/out))``; ``s`` is about the input rows per output
    row (for sizing bands). The band's rows are computed by
    :func:`poolcli.ops.adaptive.adaptive_pool_rows` with the whole image's windows, not by the
    operator on the slice (a slice's own adaptive windows would differ)."""

    n: int
    out: int

    @property
    def s(self) -> int:
        return max(1, -(-self.n // self.out))

    def slice_for(self, a: int, b: int) -> tuple[int, int, int]:
        """``(r0, r1, 0)``: output rows ``[a, b)`` read input rows ``[r0, r1)``."""
        if not 0 <= a < b <= self.out:
            raise ValueError(f"band [{a}, {b}) is outside the {self.out} output rows")
        return (a * self.n) // self.out, -((-b * self.n) // self.out), 0

    def reach(self, a: int, b: int) -> tuple[int, int]:
        r0, r1, _ = self.slice_for(a, b)
        return r0, r1


class RowBlocks:
    """Rows that arrive in bands of any size, regrouped into blocks of ``rows`` rows counted
    from row 0: a reduction that adds the same blocks in the same order as the in-memory pass
    gives the same floating-point result, wherever the bands happen to start."""

    def __init__(self, rows: int):
        self.rows = max(1, int(rows))
        self._pending: list[np.ndarray] = []
        self._count = 0

    def feed(self, band: np.ndarray) -> Iterator[np.ndarray]:
        """The blocks ``band`` completes, in order; its last rows wait for the next band."""
        while band.shape[0]:
            take = min(self.rows - self._count, band.shape[0])
            self._pending.append(band[:take])
            self._count += take
            band = band[take:]
            if self._count == self.rows:
                yield self.rest()

    def rest(self) -> np.ndarray | None:
        """The rows of the unfinished block (``None`` when there are none); a new block starts."""
        if not self._pending:
            return None
        block = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._count = [], 0
        return block

