"""Rank-based pooling: K-max pooling (Kalchbrenner et al. 2014) and sort pooling (Singla 2017).

Both order values instead of comparing them to one winner. NaN counts as the largest value
everywhere (as in max pooling, where NaN wins), so it is kept first and sorts to the top.
"""

from __future__ import annotations

import numbers

import numpy as np

from poolcli.ops._common import float_dtype_for, overflow_is_inf
from poolcli.ops._geometry import as_batch, pool_axes

__all__ = ["kmax_pool", "dynamic_k", "sort_pool2d", "DEFAULT_SORT_WEIGHTS"]

#: Default ``sort_pool2d`` weights, largest value first: they sum to 1 (the image keeps its
#: range), decrease (the maximum dominates, so edges stay crisp as with max pooling, while the
#: runners-up damp single-pixel noise), and need only 3 values, so they fit every window of at
#: least 3 cells, including the common 2x2.
DEFAULT_SORT_WEIGHTS = (0.5, 0.3, 0.2)

# Bytes of gathered window values per row strip in sort_pool2d.
_STRIP_BYTES = 1 << 20


def _check_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def kmax_pool(x, k, axis=1, return_indices=False):
    """Keep the ``k`` largest values of every row (or column), in their original order.

    K-max pooling of Kalchbrenner et al. (2014), applied to each row (``axis=1``) or column
    (``axis=0``) of each channel independently.

    Parameters
    ----------
    x : ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``, any real dtype (kept in the output).
    k : int
        How many values to keep, ``1 <= k <=`` the length of the pooled axis.
    axis : {0, 1}
        Spatial axis pooled: ``1`` along the width (each row keeps ``k`` values, giving
        ``(H, k, C)``), ``0`` along the height (each column keeps ``k`` values, giving
        ``(k, W, C)``). It always names the image's H (0) or W (1) axis, whatever the number of
        dimensions of ``x`` (a leading batch axis does not shift it).
    return_indices : bool
        Also return int64 indices ``h * W + w`` into each input plane (PyTorch's encoding).

    Notes
    -----
    Ties keep the earliest values (a stable order); NaN counts as larger than every number, so
    NaNs are always kept, earliest first. Implemented with a stable ascending argsort of the
    reversed axis (no negation, so unsigned and minimum signed integers are safe): O(L log L)
    per row of length ``L`` (radix sort for 8/16-bit integers).

    Examples
    --------
    >>> x = np.array([[3, 1, 4, 1, 5, 9, 2, 6]], dtype=np.uint8)
    >>> kmax_pool(x, 3)
    array([[5, 9, 6]], dtype=uint8)
    >>> kmax_pool(np.array([[1, 2, 1, 2, 1]]), 3, return_indices=True)[1]
    array([[0, 1, 3]])
    """
    x4, restore = as_batch(x)
    if isinstance(axis, (bool, np.bool_)) or axis not in (0, 1):
        raise ValueError(f"axis must be 0 (along the height) or 1 (along the width), got {axis!r}")
    ax = 1 + int(axis)
    length = x4.shape[ax]
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int, got {k!r}")
    if not 1 <= k <= length:
        name = "width" if axis == 1 else "height"
        raise ValueError(f"k must be between 1 and the {name} {length}, got k={k}")
    k = int(k)
    # Lanes along the last axis, reversed and contiguous so each argsort runs on one block.
    lanes = np.ascontiguousarray(np.flip(np.moveaxis(x4, ax, -1), axis=-1))
    # Ascending stable sort of the reversed lane: equal values come out latest-original first,
    # so the last k positions hold the k largest with ties going to the earliest; NaN sorts last.
    order = np.argsort(lanes, axis=-1, kind="stable")[..., length - k :]
    keep = np.sort((length - 1) - order, axis=-1)  # original positions, original order
    values = np.moveaxis(np.take_along_axis(lanes[..., ::-1], keep, axis=-1), -1, ax)
    keep = np.moveaxis(keep, -1, ax)
    if not return_indices:
        return restore(values)
    w = x4.shape[2]
    if axis == 1:
        index = np.arange(x4.shape[1], dtype=np.int64)[None, :, None, None] * w + keep
    else:
        index = keep.astype(np.int64) * w + np.arange(w, dtype=np.int64)[None, None, :, None]
    return restore(values), restore(index.astype(np.int64, copy=False))


def dynamic_k(k_top, layer, n_layers, length):
    """K of layer ``layer`` of ``n_layers`` in a DCNN: ``max(k_top, ceil((L - l) / L * s))``.

    Kalchbrenner et al. (2014), eq. 5: ``l`` is the 1-based layer, ``L`` the number of
    convolutional layers, ``s`` the input length; the top layer (``l = L``) uses ``k_top``. The
    ceiling is computed in exact integer arithmetic. The result is not capped at ``length``
    (:func:`kmax_pool` rejects a ``k`` larger than the pooled axis).

    >>> [dynamic_k(3, l, 3, 18) for l in (1, 2, 3)]
    [12, 6, 3]
    """
    k_top = _check_int(k_top, "k_top")
    n_layers = _check_int(n_layers, "n_layers")
    layer = _check_int(layer, "layer")
    length = _check_int(length, "length")
    if layer > n_layers:
        raise ValueError(f"layer must be between 1 and n_layers={n_layers}, got {layer}")
    return max(k_top, -((layer - n_layers) * length // n_layers))


def _check_weights(weights, kernel: tuple[int, int]) -> np.ndarray:
    bad = TypeError(f"weights must be a sequence of numbers, largest value first, got {weights!r}")
    if isinstance(weights, (str, bytes)):
        raise bad
    try:
        arr = np.asarray(weights if isinstance(weights, np.ndarray) else list(weights))
    except TypeError:
        raise bad from None
    if arr.ndim != 1 or arr.dtype.kind not in "uif":
        raise bad
    arr = arr.astype(np.float64)
    if arr.size == 0:
        raise ValueError("weights must hold at least one number, got an empty sequence")
    if not np.isfinite(arr).all():
        raise ValueError(f"weights must be finite, got {arr.tolist()}")
    if (arr < 0).any():
        raise ValueError(f"weights must be non-negative, got {arr.tolist()}")
    if not (arr > 0).any():
        raise ValueError(f"weights must not all be zero, got {arr.tolist()}")
    window = kernel[0] * kernel[1]
    if arr.size > window:
        raise ValueError(
            f"{arr.size} weights use the {arr.size} largest values of each window, but a "
            f"{kernel[0]}x{kernel[1]} window has only {window} cells; pass at most {window} weights"
        )
    return arr


@overflow_is_inf  # huge weights or values give inf, +inf and -inf give NaN: no warning
def sort_pool2d(
    x, kernel_size, stride=None, weights=DEFAULT_SORT_WEIGHTS, padding=0, ceil_mode=False
):
    """Sort pooling: the weighted sum of each window's largest values (Singla 2017).

    Each window is sorted in descending order and ``weights[i]`` multiplies its ``i``-th largest
    value; ``len(weights)`` values are used. ``weights=[1]`` is max pooling, ``kh*kw`` equal
    weights ``1/(kh*kw)`` are average pooling.

    Parameters
    ----------
    x : ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``, any real dtype.
    kernel_size, stride, padding : int or (int, int)
        As :func:`poolcli.ops.max_pool2d` (``stride=None`` means ``kernel_size``, padding at most
        half the kernel, no dilation).
    weights : sequence of float
        Largest value first; at most ``kh*kw`` of them, non-negative, finite, not all zero. They
        are used as given, not normalized: weights summing to 1 keep the image's range, a larger
        sum brightens. Default :data:`DEFAULT_SORT_WEIGHTS` ``(0.5, 0.3, 0.2)``.
    ceil_mode : bool
        Round the output size up, as max pooling does.

    Returns
    -------
    ndarray
        float32 (float64 for float64 and 32/64-bit integer input, as
        :func:`poolcli.ops.avg_pool2d`); the weighted sum is computed in float64.

    Notes
    -----
    Padding cells take no part: they are never among the largest values (like ``-inf``). A
    window with fewer real cells than weights (edge windows with ``padding`` or ``ceil_mode``)
    uses its ``r`` real cells with the first ``r`` weights and drops the leftover weights without
    renormalizing, i.e. the missing values count as 0. Such edge windows therefore come out
    darker when the weights sum to 1 (and may fall below the window minimum); use
    ``padding=0, ceil_mode=False`` or a single weight to avoid them. Singla's layer (2x2
    windows, no padding) never meets the case.

    NaN counts as the largest value (NaN wins, as in max pooling): a NaN that ranks where the
    weight is positive makes the output NaN. A zero weight ignores its rank entirely (so an
    infinite value there does not give ``0 * inf = NaN``).

    Cost: per row strip the ``kh*kw`` taps are gathered into one contiguous plane each and the
    ``m`` largest are selected by a network of whole-plane ``np.maximum``/``np.minimum`` calls,
    ``O(m * kh*kw)`` of them; input holding NaN, or large ``m * kh*kw``, is ordered with
    ``np.sort`` along the taps instead (several times slower).

    Examples
    --------
    >>> x = np.array([[1, 2, 5, 5],
    ...               [3, 4, 0, 9]], dtype=np.uint8)
    >>> sort_pool2d(x, 2)
    array([[3.3, 7. ]], dtype=float32)
    >>> sort_pool2d(x, 2, weights=[1])
    array([[4., 9.]], dtype=float32)
    >>> sort_pool2d(x, 2, weights=[0.25] * 4)
    array([[2.5 , 4.75]], dtype=float32)
    """
    x4, restore = as_batch(x)
    ah, aw = pool_axes(x4.shape[1:3], kernel_size, stride, padding, 1, ceil_mode)
    wts = _check_weights(weights, (ah.k, aw.k))
    n, _, _, c = x4.shape
    oh, ow = ah.out, aw.out
    # Taps lying in the padding for every window are skipped (they are never among a window's
    # values): a kernel far larger than the image costs what the image holds, not k*k planes.
    taps_h, taps_w = ah.useful_taps(), aw.useful_taps()
    taps = len(taps_h) * len(taps_w)
    m = wts.size
    m_sel = min(m, taps)  # a rank beyond the taps holds no cell in any window
    if taps == 0:  # an empty input plane (H or W = 0) with padding: every window is empty
        return restore(np.zeros((n, oh, ow, c), dtype=float_dtype_for(x4.dtype)))
    # Padding fills with the lowest value of the dtype: never above a real cell, and ranks past
    # a window's real cells are masked out below, so a tie with a real minimum is harmless.
    kind = x4.dtype.kind
    fill = x4.dtype.type(-np.inf) if kind == "f" else np.iinfo(x4.dtype).min
    real = np.multiply.outer(ah.divisors(False), aw.divisors(False))  # real cells per window
    ranks = [r for r in range(m) if wts[r] > 0]
    network = _network_cost(taps, m) * x4.dtype.itemsize <= _NETWORK_BUDGET and not (
        kind == "f" and np.isnan(x4).any()  # np.maximum/minimum would duplicate a NaN
    )

    out_dtype = float_dtype_for(x4.dtype)
    out = np.empty((n, c, oh, ow), dtype=out_dtype)  # planar: inner loops run along the width
    planes = x4.transpose(0, 3, 1, 2)  # (N, C, H, W) views
    rows = max(1, min(oh, _STRIP_BYTES // max(1, ow * c * taps * x4.dtype.itemsize)))
    buf = np.empty((taps, c, rows, ow), dtype=x4.dtype)  # one contiguous plane per tap
    # Summed in float64 then rounded once: float32 sums show as 3.3000002 and cancel badly
    # for signed input.
    acc_dtype = np.dtype(np.float64)
    acc = np.empty((c, rows, ow), dtype=acc_dtype)
    term = np.empty_like(acc)
    for b in range(n):
        img = planes[b]
        for i0 in range(0, oh, rows):
            i1 = min(oh, i0 + rows)
            r = i1 - i0
            vals = buf[:, :, :r]
            t = 0
            for th in taps_h:
                j0h, j1h = ah.tap_range(th, i0, i1)
                for tw in taps_w:
                    j0w, j1w = aw.tap_range(tw)
                    dst = vals[t]
                    t += 1
                    if (j0h, j1h, j0w, j1w) != (i0, i1, 0, ow):
                        dst.fill(fill)
                    if j1h <= j0h or j1w <= j0w:
                        continue
                    hs = j0h * ah.s - ah.p + th
                    ws = j0w * aw.s - aw.p + tw
                    dst[:, j0h - i0 : j1h - i0, j0w:j1w] = img[
                        :,
                        hs : hs + (j1h - j0h - 1) * ah.s + 1 : ah.s,
                        ws : ws + (j1w - j0w - 1) * aw.s + 1 : aw.s,
                    ]
            if network:
                top = _select_top(list(vals), m_sel)
            else:
                ordered = np.sort(np.moveaxis(vals, 0, -1), axis=-1)  # ascending, NaN last
                top = [ordered[..., taps - 1 - rank] for rank in range(m_sel)]
            a = out[b, :, i0:i1] if acc_dtype == out_dtype else acc[:, :r]
            tm = term[:, :r]
            strip_real = real[i0:i1]
            for k, rank in enumerate(ranks):
                dst = a if k == 0 else tm
                if rank >= m_sel:  # no window has a cell of this rank (nor of later ones)
                    if k == 0:
                        dst.fill(0)
                    break
                np.multiply(top[rank], acc_dtype.type(wts[rank]), out=dst)
                if rank >= strip_real.min():  # some windows have no cell of this rank
                    np.copyto(dst, 0, where=strip_real <= rank)
                if k:
                    a += tm
            if acc_dtype != out_dtype:
                out[b, :, i0:i1] = a
    return restore(out.transpose(0, 2, 3, 1))


# Selection network vs np.sort: a compare-exchange is two whole-plane ufunc calls (fast, SIMD),
# np.sort pays per window. Measured on 1024x1024x3 images, the network wins while its plane
# operations times the bytes per value stay below ~2400 (e.g. any 7x7 window for uint8, 5x5 with
# all 25 ranks for float32, 3x3 with all 9 ranks for float64).
_NETWORK_BUDGET = 2400


def _network_cost(taps: int, m: int) -> int:
    """Plane operations of :func:`_select_top`: two per compare-exchange, one per last max."""
    exchanges = sum(taps - 1 - r for r in range(min(m, taps) - 1))
    return 2 * exchanges + (taps - min(m, taps))


def _select_top(planes: list, m: int) -> list:
    """The ``m`` largest of ``planes`` (equal-shape arrays), largest first, cell by cell.

    Bubble passes of compare-exchanges (``np.maximum``/``np.minimum``, in place; list entries
    are swapped, not copied): pass ``r`` leaves the ``r``-th largest in ``planes[r]``. The last
    pass only needs the maximum of the rest. Exact for any dtype without NaN.
    """
    taps = len(planes)
    spare = np.empty_like(planes[0])
    for r in range(min(m, taps)):
        if r == m - 1:
            for i in range(r + 1, taps):
                np.maximum(planes[r], planes[i], out=planes[r])
            break
        for i in range(taps - 1, r, -1):
            np.maximum(planes[i - 1], planes[i], out=spare)
            np.minimum(planes[i - 1], planes[i], out=planes[i])
            planes[i - 1], spare = spare, planes[i - 1]
    return planes[:m]
