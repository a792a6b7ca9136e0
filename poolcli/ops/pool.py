"""Windowed pooling: max, min, average and Lp, matching ``torch.nn.functional`` element for element.

Arrays are channels-last: ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``; the result has the same
number of dimensions. See :mod:`poolcli.ops._geometry` for the output-size rule and
:mod:`poolcli.ops._fixed` and :mod:`poolcli.ops._select` for how the windows are computed.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from poolcli.ops._common import divide_into, divide_outer, float_dtype_for
from poolcli.ops._fixed import reduce_strips
from poolcli.ops._geometry import as_batch, pool_axes
from poolcli.ops._select import select_fixed

__all__ = ["max_pool2d", "min_pool2d", "avg_pool2d", "lp_pool2d"]


def _select_pool(kind, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    x4, restore = as_batch(x)
    ah, aw = pool_axes(x4.shape[1:3], kernel_size, stride, padding, dilation, ceil_mode)
    if return_indices:
        values, indices = select_fixed(x4, ah, aw, kind)
        return restore(values), restore(indices)
    return restore(reduce_strips(x4, ah, aw, kind, x4.dtype))


def max_pool2d(
    x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """Max pooling over the two spatial axes, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``, any real dtype (kept in the output).
    kernel_size, stride, padding, dilation : int or (int, int)
        ``stride=None`` means ``kernel_size``. Padding is at most half the kernel.
    ceil_mode : bool
        Round the output size up; a last window starting in the right padding is dropped.
    return_indices : bool
        Also return int64 indices ``h * W + w`` into each unpadded input plane (PyTorch's
        encoding, usable by :func:`poolcli.ops.max_unpool2d`).

    Notes
    -----
    ``out = floor((n + 2p - d(k-1) - 1 [+ s-1 if ceil_mode]) / s) + 1`` per axis. Padded cells
    never win; ties go to the first cell in row-major order; NaN wins (the last NaN of a window
    is the one reported), as in PyTorch's CPU kernel. With dilation a window can lie wholly in
    the padding (``n=1, k=2, p=1, d=2``); like PyTorch it gives -inf (the dtype's minimum for
    integers) and PyTorch's index, which then points outside the plane. Cost is O(N*H*W*C*(kh+kw)) with a few
    numpy calls per tap and row strip.

    Examples
    --------
    >>> x = np.arange(16, dtype=np.uint8).reshape(4, 4)
    >>> max_pool2d(x, 2)
    array([[ 5,  7],
           [13, 15]], dtype=uint8)
    >>> max_pool2d(x, 3, stride=2, padding=1, return_indices=True)[1]
    array([[ 5,  7],
           [13, 15]])
    """
    return _select_pool("max", x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def min_pool2d(
    x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """Min pooling: :func:`max_pool2d` with the comparison reversed (not ``-max(-x)``).

    Padded cells never win, the first cell in row-major order wins ties, NaN wins. Negating
    is avoided because it overflows unsigned and minimum signed integers.

    >>> min_pool2d(np.arange(16).reshape(4, 4), 2)
    array([[ 0,  2],
           [ 8, 10]])
    """
    return _select_pool("min", x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def avg_pool2d(
    x,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    """Average pooling, as ``torch.nn.functional.avg_pool2d``.

    Padding is zeros. The divisor of each window is ``divisor_override`` if given; otherwise
    with ``count_include_pad`` the window size clipped to ``[-p, n + p)`` per axis, without it
    the number of real (non-padding) cells. Sums are exact for 8/16-bit integers; the result is
    float32 (float64 for float64 and 32/64-bit integer input).

    >>> avg_pool2d(np.arange(16, dtype=np.uint8).reshape(4, 4), 2)
    array([[ 2.5,  4.5],
           [10.5, 12.5]], dtype=float32)
    """
    x4, restore = as_batch(x)
    ah, aw = pool_axes(x4.shape[1:3], kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, numbers.Integral):
            raise TypeError(f"divisor_override must be an int, got {divisor_override!r}")
        if divisor_override == 0:
            raise ValueError("divisor_override must be non-zero, got 0")
    area = ah.k * aw.k
    result = float_dtype_for(x4.dtype, exact_sum_of=area)
    acc = _exact_int_accumulator(x4.dtype, area) or result
    if divisor_override is not None:
        div_h = div_w = None
        scalar = result.type(divisor_override)
    else:
        div_h = ah.divisors(count_include_pad).astype(result)
        div_w = aw.divisors(count_include_pad).astype(result)
        uniform = (div_h == div_h[0]).all() and (div_w == div_w[0]).all()
        scalar = result.type(div_h[0] * div_w[0]) if uniform else None

    def finish(sums, out, i0, i1):
        # Each strip is divided while still in cache; integer sums are converted on the way.
        if scalar is not None:
            divide_into(sums, scalar, out, result)
        else:
            divide_outer(sums, div_h[i0:i1], div_w, out, result)

    return restore(reduce_strips(x4, ah, aw, "sum", acc, post=finish, out_dtype=result))


def _exact_int_accumulator(dtype, terms: int):
    """A small integer type that holds the sum of ``terms`` values of ``dtype`` exactly, if any.

    Summing uint8 windows in uint16 moves half the bytes of float32 and keeps SIMD integer adds;
    the division to float happens once, on the (smaller) output.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu" or dtype.itemsize > 2:
        return None
    wide = np.dtype(f"{dtype.kind}{dtype.itemsize * 2}")
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    if hi * terms <= np.iinfo(wide).max and lo * terms >= np.iinfo(wide).min:
        return wide
    return None


def lp_pool2d(x, norm_type, kernel_size, stride=None, ceil_mode=False):
    """Power-average (Lp) pooling: ``(sum over window of |x|**p) ** (1/p)``.

    Equals ``torch.nn.functional.lp_pool2d`` wherever PyTorch is well defined (non-negative
    input, full windows). Two deliberate differences (DESIGN.md): ``|x|`` is used, so negative
    input with a fractional ``p`` gives the true Lp norm rather than NaN, and ceil-mode partial
    windows sum only their real cells (PyTorch scales an average by the full kernel area and
    over-counts them). ``norm_type=inf`` gives max ``|x|``. Integer input is summed in float64
    when ``|x|**p`` could overflow float32 (e.g. ``p = 20`` on 8-bit data); float input whose
    powers overflow gives inf, as in PyTorch (without numpy warnings).

    >>> lp_pool2d(np.array([[3.0, 4.0]]), 2, (1, 2))
    array([[5.]])
    """
    if isinstance(norm_type, bool) or not isinstance(norm_type, numbers.Real):
        raise TypeError(f"norm_type must be a positive number, got {norm_type!r}")
    p = float(norm_type)
    if not p > 0:  # also rejects NaN
        raise ValueError(f"norm_type must be > 0, got {norm_type!r}")
    x4, restore = as_batch(x)
    ah, aw = pool_axes(x4.shape[1:3], kernel_size, stride, 0, 1, ceil_mode)
    result = float_dtype_for(x4.dtype)
    acc = result
    if x4.dtype.kind in "iu" and not math.isinf(p):
        # |x|**p of integers can overflow float32 (255**20 does): sum in float64 then.
        info = np.iinfo(x4.dtype)
        bound = max(abs(int(info.min)), int(info.max))
        if p * math.log(bound) + math.log(ah.k * aw.k) >= math.log(np.finfo(acc).max):
            acc = np.dtype(np.float64)
    absolute = x4.dtype.kind != "u"

    def magnitude(rows, buf):
        # Cast first: abs of the minimum signed integer overflows in its own dtype.
        np.copyto(buf, rows, casting="unsafe")
        if absolute:
            np.abs(buf, out=buf)
        if p == 2:
            np.square(buf, out=buf)
        elif p != 1 and not math.isinf(p):
            np.power(buf, acc.type(p), out=buf)

    if math.isinf(p):
        return restore(reduce_strips(x4, ah, aw, "max", acc, pre=magnitude))

    def root(sums, out, i0, i1):
        if p == 2:
            np.sqrt(sums, out=out, casting="same_kind")
        else:
            np.power(sums, acc.type(1.0 / p), out=out, casting="same_kind")

    # Like PyTorch, float input whose |x|**p overflows gives inf; numpy's warnings are silenced.
    with np.errstate(over="ignore", invalid="ignore"):
        if p == 1:
            return restore(reduce_strips(x4, ah, aw, "sum", acc, pre=magnitude))
        return restore(reduce_strips(x4, ah, aw, "sum", acc, pre=magnitude, post=root,
                                     out_dtype=result))
