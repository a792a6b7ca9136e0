"""Small pieces shared by the pooling engines and operators: dtypes, identities, warnings.

Nothing here loops over windows. The float result type of averages (:func:`float_dtype_for`), the
integer type that holds a sum exactly (:func:`int_accumulator`), the value that never wins a
max/min (:func:`identity`), and the decorator that turns float overflow into the IEEE result
PyTorch gives instead of a numpy warning (:func:`overflow_is_inf`).
"""

from __future__ import annotations

import math

import numpy as np

UFUNCS = {"max": np.maximum, "min": np.minimum, "sum": np.add}


def identity(kind: str, dtype: np.dtype):
    """The value that never wins (max/min) or adds nothing (sum)."""
    dtype = np.dtype(dtype)
    if kind == "sum":
        return dtype.type(0)
    if dtype.kind == "f":
        return dtype.type(-np.inf if kind == "max" else np.inf)
    info = np.iinfo(dtype)
    return dtype.type(info.min if kind == "max" else info.max)


def overflow_is_inf(fn):
    """Float sums that pass the dtype's range are +-inf, and a window holding +inf and -inf
    sums to NaN, as in PyTorch (whose CPU average of float32 3e38s is inf too): results, not
    reasons for numpy's RuntimeWarning."""
    import functools

    @functools.wraps(fn)
    def quiet(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore"):
            return fn(*args, **kwargs)

    return quiet


def holds(big, small) -> bool:
    """Whether every value of dtype ``small`` is exactly representable in ``big``."""
    big, small = np.dtype(big), np.dtype(small)
    if big == small:
        return True
    if big.kind == "f" and small.kind in "iu":
        info = np.iinfo(small)
        return max(abs(int(info.min)), int(info.max)) <= 1 << (np.finfo(big).nmant + 1)
    return big.kind == "f" and small.kind == "f" and big.itemsize >= small.itemsize


def int_accumulator(dtype, terms: int):
    """Smallest integer type of the same signedness holding a sum of ``terms`` values."""
    info = np.iinfo(dtype)
    for bits in (16, 32, 64):
        acc = np.dtype(f"{dtype.kind}{bits // 8}")
        ai = np.iinfo(acc)
        if info.max * terms <= ai.max and info.min * terms >= ai.min:
            return acc
    return np.dtype(np.int64 if dtype.kind == "i" else np.uint64)


def has_nan(a: np.ndarray) -> bool:
    """Whether a float array holds a NaN (one SIMD max reduction, which propagates NaN)."""
    return a.dtype.kind == "f" and a.size > 0 and bool(np.isnan(np.max(a)))


def float_dtype_for(dtype, *, exact_sum_of: int = 1) -> np.dtype:
    """Floating dtype for averages: float64 for float64 and 32/64-bit integers, else float32.

    ``exact_sum_of``: number of 8/16-bit integer values that will be added; if their sum could
    exceed float32's exact-integer range (2**24) float64 is used instead.
    """
    dtype = np.dtype(dtype)
    if dtype == np.float64 or (dtype.kind in "iu" and dtype.itemsize >= 4):
        return np.dtype(np.float64)
    if dtype.kind in "iu":
        bound = max(abs(int(np.iinfo(dtype).min)), int(np.iinfo(dtype).max))
        if bound * exact_sum_of >= 1 << 24:
            return np.dtype(np.float64)
    return np.dtype(np.float32)


def divide_into(sums, divisor, out, dtype) -> None:
    """``out = sums / divisor`` computed in ``dtype`` for a scalar divisor; a power of two is
    applied as an (exact, identical, faster) multiplication by its reciprocal."""
    divisor = dtype.type(divisor)
    mantissa, _ = math.frexp(float(divisor))
    if abs(mantissa) == 0.5 and np.isfinite(dtype.type(1) / divisor):
        np.multiply(sums, dtype.type(1) / divisor, out=out, dtype=dtype, casting="unsafe")
    else:
        np.divide(sums, divisor, out=out, dtype=dtype, casting="unsafe")


def divide_outer(sums, rows, cols, out, dtype) -> None:
    """``out = sums / (rows[:, None] * cols[None, :])`` per channel, in ``dtype``; ``sums`` and
    ``out`` are ``(r, ow, C)`` views with the same memory layout. The divisor is laid out like
    the data so that numpy's inner loop runs over whole rows, not over the channels of a pixel."""
    rows, cols = rows.astype(dtype), cols.astype(dtype)
    c = sums.shape[2]
    if c > 1 and sums.strides[2] < sums.strides[1]:  # contiguous pixels: repeat per channel
        div = np.multiply.outer(rows, np.repeat(cols, c)).reshape(sums.shape)
    else:
        div = np.multiply.outer(rows, cols)[:, :, None]
    np.divide(sums, div, out=out, dtype=dtype, casting="unsafe")
