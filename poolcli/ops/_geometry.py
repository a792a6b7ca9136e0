"""Window geometry shared by every windowed operator: the only place output sizes are computed.

Conventions (PyTorch's, per spatial axis): input length ``n``, kernel ``k``, stride ``s``,
padding ``p``, dilation ``d``. Output window ``j`` reads input positions ``j*s - p + t*d`` for taps
``t = 0..k-1``; positions outside ``[0, n)`` are padding.

    out = floor((n + 2p - d(k-1) - 1 + (s-1 if ceil_mode else 0)) / s) + 1

and with ``ceil_mode`` the last window is dropped when it would start in the right padding,
``(out-1)*s >= n + p``. Padding must be at most ``k // 2`` and ``out`` at least 1.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Axis",
    "as_pair",
    "as_batch",
    "check_numeric",
    "pool_axes",
    "pool_output_size",
    "adaptive_bounds",
]


def as_pair(value, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """Expand an int or an ``(h, w)`` pair into a validated pair of ints.

    >>> as_pair(3, "kernel_size")
    (3, 3)
    >>> as_pair((2, 1), "stride")
    (2, 1)
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, numbers.Integral):
        pair = (int(value), int(value))
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
        if len(items) != 2 or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in items
        ):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        pair = (int(items[0]), int(items[1]))
    for v in pair:
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def check_numeric(x, name: str = "x") -> np.ndarray:
    """Return ``x`` as an ndarray of a real numeric dtype, or raise TypeError."""
    x = np.asarray(x)
    if x.dtype.kind not in "uif":
        raise TypeError(
            f"{name} must have a real numeric dtype (unsigned, signed int or float), got {x.dtype}"
        )
    return x


def as_batch(x, name: str = "x"):
    """View ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)`` input as ``(N, H, W, C)``.

    Returns ``(x4, restore)`` where ``restore(y4)`` gives an ``(N, h, w, C)`` result back the
    caller's number of dimensions.
    """
    x = check_numeric(x, name)
    if x.ndim == 2:
        return x[None, :, :, None], lambda y: y[0, :, :, 0]
    if x.ndim == 3:
        return x[None], lambda y: y[0]
    if x.ndim == 4:
        return x, lambda y: y
    raise ValueError(
        f"{name} must be (H, W), (H, W, C) or (N, H, W, C), got an array of shape {x.shape}"
    )


def pool_output_size(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """Output length of one axis, exactly as ``torch.nn.functional.max_pool2d`` computes it.

    >>> pool_output_size(5, 2, 2, 0, 1, False), pool_output_size(5, 2, 2, 0, 1, True)
    (2, 3)
    """
    span = n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = span // s + 1  # floor division: rounds toward -inf like PyTorch's div_rtn
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


@dataclass(frozen=True)
class Axis:
    """Geometry of one spatial axis of a fixed-window pooling."""

    n: int
    k: int
    s: int
    p: int
    d: int
    out: int

    def tap_range(self, t: int, lo: int = 0, hi: int | None = None) -> tuple[int, int]:
        """Output windows ``[j0, j1)`` (within ``[lo, hi)``) whose tap ``t`` lies inside the input.

        The input position of window ``j`` is ``j*s - p + t*d``.
        """
        hi = self.out if hi is None else hi
        off = t * self.d - self.p
        j0 = max(lo, -(off // self.s))  # ceil(-off / s)
        j1 = min(hi, (self.n - 1 - off) // self.s + 1)
        return j0, max(j0, j1)

    def useful_taps(self) -> range:
        """Taps that lie inside the input for at least one window, as ``range(t0, t1)``.

        Window ``j`` reads ``j*s - p + t*d``; over ``j = 0..out-1`` tap ``t`` can land in
        ``[0, n)`` only when ``p - (out-1)*s <= t*d <= p + n - 1``. Every other tap is padding
        for every window (it never wins a max or min, adds nothing to a sum and is never
        sampled), so loops over taps can skip it: a kernel far larger than the image, legal
        with padding up to ``k // 2``, then costs O(n) tap passes instead of O(k).

        >>> Axis(n=10, k=2001, s=1, p=1000, d=1, out=10).useful_taps()
        range(991, 1010)
        """
        t0 = -((self.p - (self.out - 1) * self.s) // -self.d)  # ceil division
        t1 = (self.p + self.n - 1) // self.d + 1
        return range(max(0, t0), max(max(0, t0), min(self.k, t1)))

    def first_tap_positions(self) -> np.ndarray:
        """Input position of the first in-range tap of every window (PyTorch's initial argmax)."""
        starts = np.arange(self.out) * self.s - self.p
        skip = np.maximum(0, -(starts // self.d))  # ceil(-start / d) taps fall in the padding
        return starts + skip * self.d

    def divisors(self, count_include_pad: bool) -> np.ndarray:
        """Per-window element counts used by ``avg_pool2d`` (PyTorch's rule)."""
        starts = np.arange(self.out) * self.s - self.p
        ends = np.minimum(starts + self.k, self.n + self.p)
        if count_include_pad:
            return ends - starts
        return np.minimum(ends, self.n) - np.maximum(starts, 0)


def pool_axes(
    hw: tuple[int, int], kernel_size, stride, padding, dilation, ceil_mode: bool
) -> tuple[Axis, Axis]:
    """Validate pooling parameters against an input plane and return the (height, width) axes."""
    k = as_pair(kernel_size, "kernel_size", minimum=1)
    s = k if stride is None else as_pair(stride, "stride", minimum=1)
    p = as_pair(padding, "padding", minimum=0)
    d = as_pair(dilation, "dilation", minimum=1)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(
            f"padding must be at most half the kernel size: got padding={p[0]}x{p[1]} for "
            f"kernel_size={k[0]}x{k[1]} (allowed up to {k[0] // 2}x{k[1] // 2})"
        )
    axes = tuple(
        Axis(n, k[i], s[i], p[i], d[i], pool_output_size(n, k[i], s[i], p[i], d[i], ceil_mode))
        for i, n in enumerate(hw)
    )
    if axes[0].out < 1 or axes[1].out < 1:
        raise ValueError(
            f"output size is too small: input {hw[0]}x{hw[1]} with kernel_size={k[0]}x{k[1]}, "
            f"stride={s[0]}x{s[1]}, padding={p[0]}x{p[1]}, dilation={d[0]}x{d[1]} gives "
            f"{axes[0].out}x{axes[1].out}; use a smaller kernel or ceil_mode"
        )
    return axes  # type: ignore[return-value]


def adaptive_bounds(n: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Window ``[start, end)`` of each adaptive output cell: ``floor(i*n/out)``, ``ceil((i+1)*n/out)``."""
    i = np.arange(out)
    return (i * n) // out, -((-(i + 1) * n) // out)
