"""Pooling operators from the literature beyond PyTorch's built-ins.

mixed (max/average blend), SoftPool, GeM (generalized mean), LSE (log-sum-exp) and BlurPool
(anti-aliased subsampling). Arrays are channels-last ``(H, W)``, ``(H, W, C)`` or
``(N, H, W, C)``; results are float32 (float64 for float64 and 32/64-bit integer input) with the
input's number of dimensions. Window geometry is :func:`poolcli.ops._geometry.pool_axes` (no
padding except for mixed pooling): with ``ceil_mode`` a partial last window uses its real cells
only, and means divide by their number.

SoftPool, GeM and LSE are evaluated relative to each window's own maximum ``M`` (found by the
max engine), one kernel tap at a time over strided views (O(kh*kw) whole-array passes, on row
strips). A shift shared by a whole channel would not do: ``exp(x - global_max)`` underflows to
zero in every window far below the global maximum, giving 0/0 or log(0); relative to the window
maximum the largest term of every window is exactly 1.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from poolcli.ops._common import float_dtype_for
from poolcli.ops._fixed import reduce_windows
from poolcli.ops._geometry import Axis, as_batch, as_pair, pool_axes, pool_output_size
from poolcli.ops.pool import avg_pool2d, max_pool2d

__all__ = ["mixed_pool2d", "softpool2d", "gem_pool2d", "lse_pool2d", "blur_pool2d"]

# Bytes of one temporary per tap pass; a few hundred KiB keeps a strip in L2.
_STRIP_BYTES = 1 << 18


# --------------------------------------------------------------------------- validation


def _real(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


def _positive(value, name: str) -> float:
    v = _real(value, name)
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


# --------------------------------------------------------------------------- shared machinery


def _planar(x4: np.ndarray, acc: np.dtype) -> np.ndarray:
    """(N, H, W, C) -> contiguous (N*C, H, W) copy in ``acc``: tap passes run along the width."""
    n, h, w, c = x4.shape
    return np.ascontiguousarray(x4.transpose(0, 3, 1, 2), dtype=acc).reshape(n * c, h, w)


def _unplanar(y3: np.ndarray, n: int, c: int) -> np.ndarray:
    """(N*C, oh, ow) -> (N, oh, ow, C) view."""
    return y3.reshape(n, c, *y3.shape[1:]).transpose(0, 2, 3, 1)


def _beyond_range(value: float, dtype: np.dtype) -> str | None:
    """``"inf"`` above the dtype's largest value, ``"zero"`` below its smallest normal one,
    else None: an exponent there cannot be used as a number of that dtype (``p * log(r)``
    rounds to 0 or overflows), so GeM and LSE take the limit instead."""
    finfo = np.finfo(dtype)
    if value > float(finfo.max):
        return "inf"
    return "zero" if value < float(finfo.tiny) else None


def _window_max(x3: np.ndarray, ah: Axis, aw: Axis) -> np.ndarray:
    """Max of every window of the planar ``x3`` as a contiguous (N*C, oh, ow) array (NaN wins)."""
    m = reduce_windows(x3[..., None], ah, aw, "max", x3.dtype)  # (N*C, oh, ow, 1)
    return np.ascontiguousarray(m[..., 0])


def _taps(axis: Axis, lo: int, hi: int):
    """``(output slice, input slice)`` per kernel tap for windows ``[lo, hi)`` of ``axis``;
    taps that fall outside the input (ceil-mode partial windows) are left out."""
    for t in axis.useful_taps():
        j0, j1 = axis.tap_range(t, lo, hi)
        if j1 > j0:
            start = j0 * axis.s - axis.p + t * axis.d
            yield slice(j0, j1), slice(start, start + (j1 - j0 - 1) * axis.s + 1, axis.s)


def _tap_sums(x3, m3, ah: Axis, aw: Axis, n_acc: int, step):
    """Accumulate per-window sums of tap terms: ``step(x_tap, m_tap, acc_views)`` adds the terms
    of one tap (input cells and their windows' maxima, aligned) into the accumulator views."""
    nc, oh, ow = m3.shape
    accs = [np.zeros_like(m3) for _ in range(n_acc)]
    rows = max(1, min(oh, _STRIP_BYTES // max(1, nc * ow * m3.itemsize)))
    w_taps = list(_taps(aw, 0, ow))
    for i0 in range(0, oh, rows):
        for out_h, in_h in _taps(ah, i0, min(oh, i0 + rows)):
            for out_w, in_w in w_taps:
                step(x3[:, in_h, in_w], m3[:, out_h, out_w], [a[:, out_h, out_w] for a in accs])
    return accs


def _counts(ah: Axis, aw: Axis, dtype) -> np.ndarray:
    """Number of real cells of every (unpadded) window, as an (oh, ow) array."""
    return np.multiply.outer(ah.divisors(False), aw.divisors(False)).astype(dtype)


def _infinite_max_wins(out: np.ndarray, m3: np.ndarray) -> np.ndarray:
    """Where a window's maximum is infinite the shifted form gives inf - inf; the limit is M."""
    np.copyto(out, m3, where=np.isinf(m3))
    return out


def _prepare(x, kernel_size, stride, ceil_mode):
    x4, restore = as_batch(x)
    ah, aw = pool_axes(x4.shape[1:3], kernel_size, stride, 0, 1, ceil_mode)
    x3 = _planar(x4, float_dtype_for(x4.dtype))
    return x4, restore, ah, aw, x3


# --------------------------------------------------------------------------- operators


def mixed_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, alpha=0.5):
    """Mixed max-average pooling: ``alpha * max + (1 - alpha) * avg`` over each window.

    Yu, Wang, Chen & Wei, "Mixed pooling for convolutional neural networks" (RSKT 2014)
    switch between max and average pooling; the fixed convex blend computed here is the
    "mixed max-average pooling" of Lee, Gallagher & Tu, "Generalizing pooling functions in
    convolutional neural networks: mixed, gated, and tree" (AISTATS 2016).

    Parameters
    ----------
    x : ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``, any real dtype.
    kernel_size, stride, padding : int or (int, int)
        As :func:`poolcli.ops.pool.max_pool2d` (``stride=None`` means ``kernel_size``; padding
        at most half the kernel).
    ceil_mode : bool
        Round the output size up (PyTorch's rule).
    alpha : float in [0, 1]
        Weight of the max. ``alpha=1`` is exactly max pooling, ``alpha=0`` exactly the average.

    Returns
    -------
    ndarray
        Float, the dtype :func:`poolcli.ops.pool.avg_pool2d` gives for ``x``.

    Notes
    -----
    Built from :func:`~poolcli.ops.pool.max_pool2d` and
    :func:`~poolcli.ops.pool.avg_pool2d` with ``count_include_pad=False``: padded cells neither
    win the max nor count in the mean, so padding does not darken the image border.

    Examples
    --------
    >>> x = np.array([[0, 4], [2, 2]], dtype=np.uint8)
    >>> mixed_pool2d(x, 2, alpha=0.25)
    array([[2.5]], dtype=float32)
    """
    a = _real(alpha, "alpha")
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    avg = avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad=False)
    if a == 0.0:
        return avg
    mx = max_pool2d(x, kernel_size, stride, padding, 1, ceil_mode)
    f = avg.dtype
    if a == 1.0:
        return mx.astype(f)
    out = np.multiply(mx, f.type(a), dtype=f)
    out += f.type(1.0 - a) * avg
    return out


def softpool2d(x, kernel_size, stride=None, ceil_mode=False):
    """SoftPool: the softmax-weighted mean ``sum(exp(a) * a) / sum(exp(a))`` of each window.

    Stergiou, Poppe & Kalliatakis, "Refining activation downsampling with SoftPool" (ICCV 2021).

    Parameters
    ----------
    x : ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``, any real dtype (values are used as they
        are: an 8-bit image is pooled in its 0..255 units, where SoftPool is nearly max pooling).
    kernel_size, stride : int or (int, int)
        ``stride=None`` means ``kernel_size``. No padding.
    ceil_mode : bool
        Round the output size up; partial windows use their real cells.

    Returns
    -------
    ndarray
        Float32 (float64 for float64 and 32/64-bit integer input).

    Notes
    -----
    Overflow-free: with the window maximum ``M``, ``result = M + sum(w * (a - M)) / sum(w)``,
    ``w = exp(a - M)`` in ``(0, 1]``, so the maximum's weight is exactly 1 and nothing overflows
    or divides 0 by 0, however far apart the values (e.g. 1000 and -1000 in one image). A
    constant window returns that constant exactly; the result lies in ``[mean, max]`` of the
    window (up to rounding). ``-inf`` cells get weight 0, a ``+inf`` cell makes the result
    ``+inf``, and NaN propagates. Cost: O(N*oh*ow*C*kh*kw) with ~6 numpy calls per tap.

    Examples
    --------
    >>> softpool2d(np.array([[0.0, np.log(3.0)]]), (1, 2))  # weights 1/4 and 3/4
    array([[0.82395922]])
    """
    x4, restore, ah, aw, x3 = _prepare(x, kernel_size, stride, ceil_mode)
    m3 = _window_max(x3, ah, aw)
    lowest = np.finfo(x3.dtype).min

    def step(xt, mt, accs):
        num, den = accs
        d = xt - mt  # <= 0
        np.maximum(d, lowest, out=d)  # -inf -> lowest: weight 0 without 0 * inf = NaN
        e = np.exp(d)
        den += e
        d *= e
        num += d

    # inf - inf where M is infinite (fixed below); -inf cells next to a finite max overflow
    # the subtraction to -inf, which is clamped above: IEEE results, not warnings
    with np.errstate(invalid="ignore", over="ignore"):
        num, den = _tap_sums(x3, m3, ah, aw, 2, step)
        out = np.divide(num, den, out=num)
        out += m3
    return restore(_unplanar(_infinite_max_wins(out, m3), x4.shape[0], x4.shape[3]))


def gem_pool2d(x, kernel_size, stride=None, ceil_mode=False, p=3.0, eps=1e-6):
    """Generalized-mean (GeM) pooling: ``mean(clamp(x, eps) ** p) ** (1/p)`` over each window.

    Radenović, Tolias & Chum, "Fine-tuning CNN image retrieval with no human annotation"
    (TPAMI 2018). ``p=1`` is the average of the clamped values, large ``p`` approaches the max.

    Parameters
    ----------
    x : ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``, any real dtype.
    kernel_size, stride : int or (int, int)
        ``stride=None`` means ``kernel_size``. No padding.
    ceil_mode : bool
        Round the output size up; partial windows average their real cells only.
    p : float
        Finite exponent > 0.
    eps : float
        Finite lower clamp >= 0 (values below it, negatives included, count as ``eps``).

    Returns
    -------
    ndarray
        Float32 (float64 for float64 and 32/64-bit integer input).

    Notes
    -----
    Computed as ``M * mean((x / M) ** p) ** (1/p)`` with ``M`` the window maximum, so
    ``x ** p`` never overflows (e.g. 1000 ** 20 in float32) and a window far below the rest of
    the image does not underflow to zero. For p < 1 the mean is taken of
    ``expm1(p * log(x / M))`` and undone with ``log1p``: for small p, ``(x / M) ** p`` rounds to
    1 in float32 and the plain formula tends to the max, while this one tends to the geometric
    mean, the true limit as p -> 0 (taken exactly for p below the dtype's smallest normal
    number; p above its largest gives the max). A window whose maximum is 0 (``eps=0``) gives 0; one
    holding ``+inf`` gives ``+inf``; NaN propagates.

    Examples
    --------
    >>> gem_pool2d(np.array([[1.0, 2.0, 2.0, 3.0]]), (1, 4), p=1)
    array([[2.]])
    >>> gem_pool2d(np.array([[3.0, 4.0]]), (1, 2), p=2) ** 2  # mean of squares
    array([[12.5]])
    """
    pv = _positive(p, "p")
    ev = _real(eps, "eps")
    if not (ev >= 0 and math.isfinite(ev)):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    x4, restore, ah, aw, x3 = _prepare(x, kernel_size, stride, ceil_mode)
    np.maximum(x3, x3.dtype.type(ev), out=x3)  # clamp; NaN stays NaN
    m3 = _window_max(x3, ah, aw)
    # p -> 0 is the geometric mean and p -> inf the max (see _beyond_range).
    # Below p = 1, r ** p crowds towards 1 and loses the digits the final ** (1/p) magnifies
    # (float32 gives the max for p ~ 1e-8), so small p works with log(r) (about 2x the time).
    limit = _beyond_range(pv, x3.dtype)
    mode = ("max" if limit == "inf" else "geometric" if limit == "zero" else
            "mean" if pv == 1.0 else "square" if pv == 2.0 else "power" if pv > 1.0 else
            "small")
    if mode == "max":
        return restore(_unplanar(m3, x4.shape[0], x4.shape[3]))
    pw = x3.dtype.type(pv)

    def step(xt, mt, accs):
        r = xt / mt  # in [0, 1]
        if mode == "square":
            np.square(r, out=r)
        elif mode == "geometric":
            np.log(r, out=r)
        elif mode == "power":
            np.power(r, pw, out=r)
        elif mode == "small":  # expm1(p * log r) = r ** p - 1, exact where r ** p rounds to 1
            np.log(r, out=r)
            np.multiply(r, pw, out=r)
            np.expm1(r, out=r)
        accs[0] += r

    # M = 0 or inf is fixed below; log1p(..) / p may overflow to -inf for p near the dtype's
    # tiny, and exp(-inf) = 0 is then the right value
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        (sums,) = _tap_sums(x3, m3, ah, aw, 1, step)
        out = np.divide(sums, _counts(ah, aw, x3.dtype), out=sums)
        if mode == "square":
            np.sqrt(out, out=out)
        elif mode == "geometric":
            np.exp(out, out=out)
        elif mode == "power":
            np.power(out, x3.dtype.type(1.0 / pv), out=out)
        elif mode == "small":  # mean(r ** p) ** (1/p) = exp(log1p(mean(r ** p - 1)) / p)
            np.log1p(out, out=out)
            np.divide(out, pw, out=out)
            np.exp(out, out=out)
        out *= m3
    np.copyto(out, m3, where=(m3 == 0) | np.isinf(m3))
    return restore(_unplanar(out, x4.shape[0], x4.shape[3]))


def lse_pool2d(x, kernel_size, stride=None, ceil_mode=False, r=1.0):
    """Log-sum-exp (LSE) pooling: ``(1/r) * log(mean(exp(r * x)))`` over each window.

    Pinheiro & Collobert, "From image-level to pixel-level labeling with convolutional
    networks" (CVPR 2015). ``r -> 0`` approaches the average, ``r -> inf`` the max.

    Parameters
    ----------
    x : ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``, any real dtype.
    kernel_size, stride : int or (int, int)
        ``stride=None`` means ``kernel_size``. No padding.
    ceil_mode : bool
        Round the output size up; partial windows average their real cells only.
    r : float
        Finite sharpness > 0.

    Returns
    -------
    ndarray
        Float32 (float64 for float64 and 32/64-bit integer input).

    Notes
    -----
    Computed as ``M + log(mean(exp(r * (x - M)))) / r`` with ``M`` the window maximum: the
    largest term is exactly 1, so nothing overflows (``r * x = 1000``) or underflows to log(0),
    and ``M - log(count) / r <= result <= M``. A window holding ``+inf`` (or only ``-inf``)
    gives that infinity; NaN propagates.

    Examples
    --------
    >>> lse_pool2d(np.array([[0.0, 0.0, 0.0, np.log(5.0)]]), (1, 4))  # log((1+1+1+5)/4)
    array([[0.69314718]])
    """
    rv = _positive(r, "r")
    x4, restore, ah, aw, x3 = _prepare(x, kernel_size, stride, ceil_mode)
    m3 = _window_max(x3, ah, aw)
    # r -> 0 is the mean and r -> inf the max (see _beyond_range). Below r = 1, exp(r * d)
    # crowds towards 1 and the old form drifted to the max (r = 1e-8 gave the max in float32),
    # so small r sums expm1(r * d) and undoes it with log1p.
    limit = _beyond_range(rv, x3.dtype)
    mode = ("max" if limit == "inf" else "mean" if limit == "zero" else
            "small" if rv < 1.0 else "exp")
    if mode == "max":
        return restore(_unplanar(m3, x4.shape[0], x4.shape[3]))
    rr = x3.dtype.type(rv)

    def step(xt, mt, accs):
        d = xt - mt  # <= 0
        if mode != "mean":
            if rv != 1.0:
                d *= rr
            (np.expm1 if mode == "small" else np.exp)(d, out=d)
        accs[0] += d

    # inf - inf where M is infinite (fixed below); log1p(..) / r may overflow to -inf for r near
    # the dtype's tiny, which is then a window of -inf cells anyway
    with np.errstate(invalid="ignore", over="ignore"):
        (sums,) = _tap_sums(x3, m3, ah, aw, 1, step)
        out = np.divide(sums, _counts(ah, aw, x3.dtype), out=sums)
        if mode != "mean":
            (np.log1p if mode == "small" else np.log)(out, out=out)
            if rv != 1.0:
                out /= rr
        out += m3
    return restore(_unplanar(_infinite_max_wins(out, m3), x4.shape[0], x4.shape[3]))


def binomial_filter(k: int) -> np.ndarray:
    """Normalized 1-D binomial filter of length ``k`` (row ``k-1`` of Pascal's triangle / 2**(k-1)).

    >>> binomial_filter(4)
    array([0.125, 0.375, 0.375, 0.125])
    """
    return np.array([math.comb(k - 1, t) for t in range(k)], dtype=np.float64) / 2.0 ** (k - 1)


def blur_pool2d(x, kernel_size=3, stride=2, padding=None):
    """BlurPool: binomial low-pass filter, then subsample by ``stride`` (anti-aliased downsampling).

    Zhang, "Making convolutional networks shift-invariant again" (ICML 2019); this is the
    ``BlurPool`` layer of its reference implementation (``antialiased-cnns``).

    Parameters
    ----------
    x : ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``, any real dtype.
    kernel_size : int or (int, int)
        Filter size 1..7 per axis: the outer product of binomial rows [1], [1, 1], [1, 2, 1],
        [1, 3, 3, 1], ... normalized to sum 1 (size 1 is plain subsampling).
    stride : int or (int, int)
        Subsampling step >= 1.
    padding : None, int or (int, int)
        Reflect padding (``a b c | b a``, the edge not repeated, as ``torch`` ``"reflect"``).
        ``None`` (default): the reference implementation's ``(k-1)//2`` before and
        ``ceil((k-1)/2)`` after on each axis, so that ``out = ceil(n / stride)``. An int/pair
        ``p`` pads ``p`` on both sides, ``out = floor((n + 2p - k) / stride) + 1``. Reflect
        padding needs every pad smaller than the axis it pads.

    Returns
    -------
    ndarray
        Float32 (float64 for float64 and 32/64-bit integer input).

    Notes
    -----
    Equals ``F.conv2d(F.pad(x, (pl, pr, pt, pb), mode="reflect"), filt, stride=stride,
    groups=C)`` in NCHW. Separable: ``kh + kw`` multiply-adds per output cell over strided
    views. Kornia's ``blur_pool2d`` zero-pads ``(k-1)//2`` instead; near borders the two differ.

    Examples
    --------
    >>> blur_pool2d(np.array([[0.0, 0.0, 4.0, 0.0, 0.0]]), (1, 3), stride=1)
    array([[0., 1., 2., 1., 0.]])
    >>> blur_pool2d(np.full((5, 6), 7, dtype=np.uint8)).shape  # ceil(5/2) x ceil(6/2)
    (3, 3)
    """
    k = as_pair(kernel_size, "kernel_size", minimum=1)
    if k[0] > 7 or k[1] > 7:
        raise ValueError(f"kernel_size must lie in 1..7, got {kernel_size!r}")
    s = as_pair(stride, "stride", minimum=1)
    if padding is None:
        pads = tuple(((ki - 1) // 2, ki // 2) for ki in k)
    else:
        p = as_pair(padding, "padding", minimum=0)
        pads = ((p[0], p[0]), (p[1], p[1]))
    x4, restore = as_batch(x)
    n, h, w, c = x4.shape
    outs = []
    for name, size, ki, si, (lo, hi) in zip(("height", "width"), (h, w), k, s, pads):
        if max(lo, hi) >= size and max(lo, hi) > 0:
            raise ValueError(
                f"reflect padding must be smaller than the input: {name} {size} cannot be padded "
                f"by ({lo}, {hi}); use a larger image or a smaller kernel_size/padding"
            )
        out = pool_output_size(size + lo + hi, ki, si, 0, 1, False)
        if out < 1:
            raise ValueError(
                f"output size is too small: {name} {size} with kernel_size={ki}, stride={si}, "
                f"padding=({lo}, {hi}) gives {out}"
            )
        outs.append(out)
    acc = float_dtype_for(x4.dtype)
    x3 = _planar(x4, acc)
    if any(pads[0] + pads[1]):
        x3 = np.pad(x3, ((0, 0), pads[0], pads[1]), mode="reflect")
    oh, ow = outs
    fh, fw = binomial_filter(k[0]).astype(acc), binomial_filter(k[1]).astype(acc)
    # Height pass over whole padded rows, then width pass. A window holding +inf and -inf is
    # NaN, as the weighted sum is in any float arithmetic (and in PyTorch): no warning for it.
    with np.errstate(invalid="ignore"):
        rows = np.multiply(x3[:, 0 : (oh - 1) * s[0] + 1 : s[0]], fh[0])
        for t in range(1, k[0]):
            rows += fh[t] * x3[:, t : t + (oh - 1) * s[0] + 1 : s[0]]
        out = np.multiply(rows[:, :, 0 : (ow - 1) * s[1] + 1 : s[1]], fw[0])
        for t in range(1, k[1]):
            out += fw[t] * rows[:, :, t : t + (ow - 1) * s[1] + 1 : s[1]]
    return restore(_unplanar(out, n, c))
