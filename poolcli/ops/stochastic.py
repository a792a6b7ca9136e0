"""Stochastic pooling (Zeiler & Fergus, ICLR 2013), following Caffe's ``StoPoolForwardTrain`` and
``StoPoolForwardTest`` kernels.

Activations must be non-negative. In ``train`` mode every window picks one of its cells with
probability ``a_i / sum(a)``; in ``test`` mode it returns the probability-weighted average
``sum(a_i**2) / sum(a_i)``. Window geometry is max pooling's (PyTorch's rule, dilation 1, see
:mod:`poolcli.ops._geometry`); padding cells carry no probability and are never picked.

Randomness is reproducible: one uniform number per output cell is drawn from a
``numpy.random.Generator`` in C order over ``(N, oh, ow, C)``, so a seed gives the same picks on
every run and machine (for a given numpy version's PCG64 stream). :func:`new_seed` draws a seed
to report, :func:`derive_seed` gives each image of a batch its own stream from one base seed.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import secrets

import numpy as np

from poolcli.ops._common import float_dtype_for
from poolcli.ops._fixed import reduce_windows
from poolcli.ops._geometry import Axis, as_batch, pool_axes

__all__ = ["stochastic_pool2d", "derive_seed", "new_seed"]

_MODES = ("train", "test")

# Bytes of float64 cumulative sums per row strip (the train pass keeps ~4 such buffers).
_STRIP_BYTES = 1 << 18


def stochastic_pool2d(
    x,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    mode="train",
    seed=None,
    return_indices=False,
):
    """Stochastic pooling over the two spatial axes (Zeiler & Fergus 2013).

    Parameters
    ----------
    x : ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)`` non-negative activations, any real dtype.
    kernel_size, stride, padding : int or (int, int)
        As :func:`poolcli.ops.max_pool2d` (``stride=None`` means ``kernel_size``, padding at most
        half the kernel, no dilation).
    ceil_mode : bool
        Round the output size up, as max pooling does.
    mode : {"train", "test"}
        ``"train"`` samples one cell per window; ``"test"`` returns ``sum(a**2) / sum(a)``.
    seed : int, numpy.random.Generator or None
        Seed (a non-negative int) or generator for ``"train"`` mode. ``None`` draws fresh OS
        entropy, which cannot be repeated: callers that report the seed should pass
        :func:`new_seed` instead. A generator is used as is (and advanced).
    return_indices : bool
        ``"train"`` only: also return the picked cells as int64 indices ``h * W + w`` into each
        unpadded input plane (PyTorch's encoding, usable by ``max_unpool2d``).

    Returns
    -------
    out : ndarray
        ``"train"``: the picked values, in the input dtype exactly. ``"test"``: float32
        (float64 for float64 and 32/64-bit integer input, as :func:`poolcli.ops.avg_pool2d`),
        computed in float64.
    indices : ndarray of int64
        Only with ``return_indices=True``.

    Raises
    ------
    ValueError
        Negative, NaN or infinite input (the message gives the minimum or what was found), an
        unknown ``mode``, ``return_indices`` with ``mode="test"``, a negative seed, or bad
        window parameters.

    Notes
    -----
    Sampling, per window (Caffe's inverse-CDF walk, vectorized over all windows at once):
    the window's real cells are visited in row-major order accumulating a float64 cumulative
    sum ``S_t``; with ``u`` uniform in ``[0, 1)`` and the window total ``S``, the picked cell is
    the first one with ``S_t > u * S``. Cell ``t`` is thus picked for ``u`` in
    ``[S_{t-1}/S, S_t/S)``, probability ``a_t / S``. The comparison is strict: Caffe uses ``>=``
    with ``u`` in ``(0, 1]``, which is the same distribution, but ``>=`` with ``u = 0`` would pick
    a leading zero cell. With ``>``, a picked cell always raised the cumulative sum, so a
    zero-valued (or padding) cell is never picked in a window with positive mass; and since
    ``u * S < S`` in floating point for ``u < 1``, some cell is always picked. A window whose
    cells are all zero picks its first real cell (value 0).

    The uniforms are drawn with ``Generator.random`` one per output cell in C order over
    ``(N, oh, ow, C)``, whatever the window shape, so a given seed (or generator state) always
    gives the same picks. 8/16-bit integers are summed exactly in integer types; float64 input
    whose window sums could overflow is scaled by a power of two first (same probabilities),
    and in test mode float64 input with values beyond ``2**±480`` is normalized by each
    window's maximum before squaring, so neither overflow nor underflow distorts the result.

    Cost: O(N*oh*ow*C*kh*kw), about ten whole-strip numpy calls per kernel tap and row strip in
    train mode (two passes over the taps) and two separable window sums in test mode; roughly
    10-25x :func:`poolcli.ops.max_pool2d` on an RGB image.

    Examples
    --------
    >>> x = np.array([[0, 0, 1, 3],
    ...               [0, 0, 0, 4]], dtype=np.uint8)
    >>> stochastic_pool2d(x, 2, mode="test")
    array([[0.  , 3.25]], dtype=float32)
    >>> values, indices = stochastic_pool2d(x, 2, seed=7, return_indices=True)
    >>> values, indices
    (array([[0, 4]], dtype=uint8), array([[0, 7]]))
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    if return_indices and mode == "test":
        raise ValueError(
            "return_indices needs mode='train': test mode averages the window, nothing is selected"
        )
    rng = _generator(seed) if mode == "train" else None
    x4, restore = as_batch(x)
    ah, aw = pool_axes(x4.shape[1:3], kernel_size, stride, padding, 1, ceil_mode)
    if mode == "train" and 0 in x4.shape[1:3]:
        raise ValueError(
            f"stochastic pooling needs a non-empty input plane to sample from, got "
            f"{x4.shape[1]}x{x4.shape[2]}"
        )
    largest = _check_activations(x4)
    taps = ah.k * aw.k
    if mode == "test":
        return restore(_test(x4, ah, aw, largest))
    scale = _overflow_scale(x4.dtype, largest, taps)
    values, indices = _train(x4, ah, aw, rng, scale, bool(return_indices))
    if return_indices:
        return restore(values), restore(indices)
    return restore(values)


def derive_seed(base_seed, key: str) -> int:
    """A 63-bit seed for ``key`` (e.g. an input file name) derived from ``base_seed``.

    Deterministic across runs, processes and machines (SHA-256 of the UTF-8 key as a
    ``numpy.random.SeedSequence`` spawn key, not Python's salted ``hash``), and the streams of
    different keys are independent, so each image of a batch gets its own reproducible picks
    whatever order (or worker) processes it.

    >>> derive_seed(42, "cat.png") == derive_seed(42, "cat.png")
    True
    >>> derive_seed(42, "cat.png") == derive_seed(42, "dog.png")
    False
    """
    base = _check_seed(base_seed, "base_seed")
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}")
    try:  # a file name that is not valid UTF-8 hashes its original bytes
        raw = key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # other lone surrogates
        raw = key.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(raw).digest()
    spawn_key = tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 32, 4))
    state = np.random.SeedSequence(base, spawn_key=spawn_key).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def new_seed() -> int:
    """A fresh seed in ``[0, 2**63)`` from OS entropy, to report so a run can be repeated.

    >>> 0 <= new_seed() < 2**63
    True
    """
    return secrets.randbits(63)


# --------------------------------------------------------------------------- helpers


def _check_seed(seed, name: str) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative int, got {seed!r}")
    if seed < 0:
        raise ValueError(f"{name} must be a non-negative int, got {seed!r}")
    return int(seed)


def _generator(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"seed must be a non-negative int, a numpy.random.Generator or None, got {seed!r}"
        )
    return np.random.default_rng(_check_seed(seed, "seed"))


def _check_activations(x4: np.ndarray) -> float:
    """Reject NaN, negative and infinite input; return the largest value (0.0 if empty)."""
    if x4.size == 0:
        return 0.0
    lo = x4.min()  # NaN propagates
    if x4.dtype.kind == "f" and np.isnan(lo):
        count = int(np.count_nonzero(np.isnan(x4)))
        raise ValueError(
            f"stochastic pooling needs input without NaN; found {count} NaN value"
            f"{'' if count == 1 else 's'}"
        )
    if lo < 0:
        raise ValueError(f"stochastic pooling needs non-negative input; minimum is {lo}")
    hi = x4.max()
    if x4.dtype.kind == "f" and np.isinf(hi):
        raise ValueError("stochastic pooling needs finite input; found inf")
    return float(hi)


def _overflow_scale(dtype, largest: float, taps: int) -> float:
    """Power of two that keeps float64 window sums finite (train mode); 1.0 almost always.

    Only float64 input can get there; scaling by a power of two keeps the probabilities.
    """
    if np.dtype(dtype) != np.float64 or largest <= np.finfo(np.float64).max / (2 * taps):
        return 1.0
    return math.ldexp(1.0, -math.frexp(largest)[1])  # largest * scale in [0.5, 1)


# Float64 values outside [_TINY, _HUGE] may underflow or overflow when squared.
_TINY = math.ldexp(1.0, -480)
_HUGE = math.ldexp(1.0, 480)


def _test(x4: np.ndarray, ah: Axis, aw: Axis, largest: float) -> np.ndarray:
    """``sum(a**2) / sum(a)`` per window (0 for an all-zero window), in float64.

    8/16-bit integers are summed exactly in unsigned integer types (what float64 would give,
    with fewer bytes moved); the one division is float64.
    """
    result = float_dtype_for(x4.dtype)
    taps = ah.k * aw.k
    acc = _exact_accumulator(x4.dtype, taps)
    acc_sq = _exact_accumulator(x4.dtype, taps, squares=True)
    if acc is not None and acc_sq is not None:
        total = reduce_windows(x4, ah, aw, "sum", acc)
        a = x4.astype(f"u{2 * x4.dtype.itemsize}")  # non-negative, squares fit exactly
        squares = reduce_windows(np.square(a, out=a), ah, aw, "sum", acc_sq)
        out = np.divide(squares, np.maximum(total, 1), dtype=np.float64)  # 0 / 1 when empty
    elif x4.dtype == np.float64 and x4.size and (
        largest > _HUGE or np.min(x4, where=x4 > 0, initial=np.inf) < _TINY
    ):
        return _test_normalized(x4, ah, aw).astype(result, copy=False)
    else:
        a = x4.astype(np.float64, copy=True)
        total = reduce_windows(a, ah, aw, "sum", np.float64)
        squares = reduce_windows(np.square(a, out=a), ah, aw, "sum", np.float64)
        # the smallest subnormal leaves every positive total as is and makes 0 / 0 give 0
        out = np.divide(squares, np.maximum(total, np.finfo(np.float64).smallest_subnormal))
    return out.astype(result, copy=False)


def _test_normalized(x4: np.ndarray, ah: Axis, aw: Axis) -> np.ndarray:
    """Test mode for float64 input with extreme magnitudes: ``M * sum(b**2) / sum(b)`` with
    ``b = a / M`` and ``M`` the window maximum, so squares neither overflow nor underflow
    (a term lost to underflow is below ``1e-300`` of the window's largest term)."""
    n, _, _, c = x4.shape
    planes = x4.transpose(0, 3, 1, 2)
    peak = np.ascontiguousarray(reduce_windows(x4, ah, aw, "max", np.float64).transpose(0, 3, 1, 2))
    total = np.zeros_like(peak)
    squares = np.zeros_like(peak)
    for b in range(n):
        for th in ah.useful_taps():
            j0h, j1h = ah.tap_range(th)
            for tw in aw.useful_taps():
                j0w, j1w = aw.tap_range(tw)
                if j1h <= j0h or j1w <= j0w:
                    continue
                hs, ws = j0h * ah.s - ah.p + th, j0w * aw.s - aw.p + tw
                src = planes[b, :, hs : hs + (j1h - j0h - 1) * ah.s + 1 : ah.s,
                             ws : ws + (j1w - j0w - 1) * aw.s + 1 : aw.s]
                m = peak[b, :, j0h:j1h, j0w:j1w]
                ratio = np.divide(src, m, out=np.zeros(m.shape), where=m > 0)
                total[b, :, j0h:j1h, j0w:j1w] += ratio
                squares[b, :, j0h:j1h, j0w:j1w] += ratio * ratio
    out = np.zeros_like(peak)
    np.divide(squares, total, out=out, where=total > 0)
    out *= peak
    return out.transpose(0, 2, 3, 1)


def _tap_view(plane, ah: Axis, aw: Axis, th: int, tw: int, i0: int, i1: int):
    """Tap ``(th, tw)`` of output rows ``[i0, i1)``: ``(rows, cols, source)`` where output
    windows ``rows x cols`` (relative to ``i0``) read ``source``, a strided view of ``plane``
    (C, H, W); ``None`` when the tap lies in the padding for every window."""
    j0h, j1h = ah.tap_range(th, i0, i1)
    j0w, j1w = aw.tap_range(tw)
    if j1h <= j0h or j1w <= j0w:
        return None
    hs = j0h * ah.s - ah.p + th
    ws = j0w * aw.s - aw.p + tw
    src = plane[
        :, hs : hs + (j1h - j0h - 1) * ah.s + 1 : ah.s, ws : ws + (j1w - j0w - 1) * aw.s + 1 : aw.s
    ]
    return slice(j0h - i0, j1h - i0), slice(j0w, j1w), src


def _exact_accumulator(dtype, taps: int, squares: bool = False):
    """Unsigned integer type holding window sums (of squares) of ``dtype`` exactly, or None.

    Integer sums are what float64 would compute anyway (they are exact), so results do not
    change; they only move fewer bytes than float64.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu" or dtype.itemsize > 2:
        return None
    peak = int(np.iinfo(dtype).max) ** (2 if squares else 1)
    for acc in (np.uint16, np.uint32, np.uint64):
        if peak * taps <= np.iinfo(acc).max:
            return np.dtype(acc)
    return None


def _train(x4: np.ndarray, ah: Axis, aw: Axis, rng: np.random.Generator, scale: float,
           want_indices: bool):
    """Sample one cell per window; return ``(N, oh, ow, C)`` values and indices (or ``None``).

    Two passes per row strip, each adding the taps in row-major order into one buffer
    (identical operations, so the first pass's total equals the second pass's last cumulative
    sum bit for bit). The first gives the totals ``S`` and the thresholds ``u * S``. In the
    second, after adding tap ``t``, every window whose cumulative sum is still ``<=`` its
    threshold moves its pick to tap ``t + 1`` (its value is selected, a counter incremented):
    cumulative sums never decrease, so the pick ends on the first tap exceeding the threshold,
    with no gather of values and no Python loop over windows. All-zero windows are patched to
    their first real cell at the end.

    The cumulative sums are float64, or an exact unsigned integer type for 8/16-bit integer
    input; then the threshold is ``floor(u * S)``, and for an integer sum ``S_t > u * S``
    exactly when ``S_t > floor(u * S)``: the same picks.
    """
    n, h, w, c = x4.shape
    oh, ow = ah.out, aw.out
    # Taps in the padding of every window are never picked: skipping them changes no pick (the
    # pick moves past a padding tap) and keeps huge padded kernels cheap.
    taps = [(th, tw) for th in ah.useful_taps() for tw in aw.useful_taps()]
    planes = x4.transpose(0, 3, 1, 2)  # (N, C, H, W) views: inner loops run along the width
    sources = planes if scale == 1.0 else planes * scale
    acc = _exact_accumulator(x4.dtype, len(taps)) or np.dtype(np.float64)

    values = np.empty((n, c, oh, ow), dtype=x4.dtype)
    indices = np.empty((n, c, oh, ow), dtype=np.int64) if want_indices else None
    rows = max(1, min(oh, _STRIP_BYTES // max(1, 8 * c * ow)))
    shape = (c, rows, ow)
    cum = np.empty(shape, dtype=acc)
    thres = np.empty(shape, dtype=acc)
    product = np.empty(shape, dtype=np.float64) if acc.kind == "u" else thres
    below = np.empty(shape, dtype=bool)
    positive = np.empty(shape, dtype=bool)
    count = np.empty(shape, dtype=np.uint8 if len(taps) <= 255 else np.int64)
    bits = np.dtype(f"u{x4.dtype.itemsize}")  # values are selected as raw bits
    val = np.empty(shape, dtype=x4.dtype)
    staged = np.empty(shape, dtype=x4.dtype)
    mask = np.empty(shape, dtype=bits)
    scratch = np.empty(shape, dtype=bits)
    # plane offset of each tap from its window's origin, and each window's origin / first cell
    tap_offset = np.array([th * w + tw for th, tw in taps], dtype=np.int64)
    origin = np.add.outer((np.arange(oh) * ah.s - ah.p) * w, np.arange(ow) * aw.s - aw.p)
    first = np.add.outer(ah.first_tap_positions() * w, aw.first_tap_positions())

    for b in range(n):
        # C order over (oh, ow, C) per image, image after image: C order over (N, oh, ow, C).
        u = rng.random((oh, ow, c)).transpose(2, 0, 1)
        for i0 in range(0, oh, rows):
            i1 = min(oh, i0 + rows)
            r = i1 - i0
            cu, th_, pr, bl = cum[:, :r], thres[:, :r], product[:, :r], below[:, :r]
            pos, cnt, v, sv = positive[:, :r], count[:, :r], val[:, :r], staged[:, :r]
            vb, svb, mk, tb = v.view(bits), sv.view(bits), mask[:, :r], scratch[:, :r]
            views = [_tap_view(planes[b], ah, aw, th, tw, i0, i1) for th, tw in taps]
            sums = views if scale == 1.0 else [
                _tap_view(sources[b], ah, aw, th, tw, i0, i1) for th, tw in taps
            ]
            cu.fill(0)
            for view in sums:
                if view is not None:
                    part = cu[:, view[0], view[1]]
                    np.add(part, view[2], out=part, casting="unsafe")  # >= 0: exact
            np.greater(cu, 0, out=pos)
            np.multiply(u[:, i0:i1], cu, out=pr)  # u < 1, so u * S < S: some tap exceeds it
            if acc.kind == "u":
                np.floor(pr, out=pr)
                np.copyto(th_, pr, casting="unsafe")  # exact: 0 <= floor(u * S) < S
            else:
                # ... except where S is subnormal: u * S rounds to S for u >= 0.5 when S is the
                # smallest subnormal, and then no tap would exceed it (the pick ran past the
                # window's last real cell into padding: a stale value). Keep u * S below S.
                np.minimum(th_, np.nextafter(cu, 0), out=th_)
            cu.fill(0)
            if want_indices:
                cnt.fill(0)
            if views[0] is not None:  # tap 0 is picked unless the sums below move on
                np.copyto(v[:, views[0][0], views[0][1]], views[0][2])
            for t in range(len(taps) - 1):
                if sums[t] is not None:
                    part = cu[:, sums[t][0], sums[t][1]]
                    np.add(part, sums[t][2], out=part, casting="unsafe")
                np.less_equal(cu, th_, out=bl)
                if want_indices:
                    np.add(cnt, bl, out=cnt)
                nxt = views[t + 1]
                if nxt is not None:
                    # v = where(bl, next tap, v), branch-free on the bits: v ^= (v ^ sv) & mask
                    # (a masked copy mispredicts a branch per cell: ~20x slower). Outside the
                    # tap's range ``sv`` holds stale values, copied where the next tap is
                    # padding: never the final pick, so a later tap (or the all-zero patch)
                    # overwrites them.
                    np.copyto(sv[:, nxt[0], nxt[1]], nxt[2])
                    np.subtract(0, bl, out=mk, dtype=bits, casting="unsafe")
                    np.bitwise_xor(vb, svb, out=tb)
                    np.bitwise_and(tb, mk, out=tb)
                    np.bitwise_xor(vb, tb, out=vb)
            zero = None if pos.all() else ~pos  # all-zero windows: first real cell, value 0
            if zero is not None:
                v[zero] = 0
            values[b, :, i0:i1] = v
            if want_indices:
                index = indices[b, :, i0:i1]
                np.add(tap_offset.take(cnt, mode="clip"), origin[i0:i1], out=index)
                if zero is not None:
                    index[zero] = np.broadcast_to(first[i0:i1], zero.shape)[zero]
    return values.transpose(0, 2, 3, 1), None if indices is None else indices.transpose(0, 2, 3, 1)
