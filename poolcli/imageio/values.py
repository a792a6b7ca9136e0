"""Value mapping: fitting results into the dtype a file holds, and display stretches.

:func:`output_dtype_for` says which dtype a format holds for a result; :func:`fit_to_dtype` rounds
and clips into it (results on the input's scale); :func:`to_display` maps signed or normalized
values to ``uint8`` with a named, documented stretch (:data:`DISPLAY_MAPPINGS`), and
:func:`parse_display` is the one parser of the display specs users type (``--display sigma:3``).
Everything works in blocks of rows, so temporaries stay at a few MiB whatever the image size.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from poolcli.formats import SUFFIX_FORMAT, SUFFIX_HINT

__all__ = [
    "DEFAULT_SIGMA_K",
    "DISPLAY_MAPPINGS",
    "fit_to_dtype",
    "output_dtype_for",
    "parse_display",
    "to_display",
    "to_uint8",
]

#: Mapping names accepted by :func:`to_display` and :func:`parse_display` (``sigma`` also as
#: ``sigma:K``).
DISPLAY_MAPPINGS = ("minmax", "sigma", "clip", "clip255")

#: K of a bare ``sigma`` mapping: mean +/- 3 standard deviations.
DEFAULT_SIGMA_K = 3.0

_NUMBER = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_display(text: str) -> tuple[str, float | None]:
    """Parse a display spec into ``(name, K)``; K is given for ``sigma`` only, else ``None``.

    ``"minmax"`` -> ``("minmax", None)``, ``"clip"`` -> ``("clip", None)``, ``"sigma"`` ->
    ``("sigma", 3.0)``, ``"sigma:2.5"`` -> ``("sigma", 2.5)``. ``"clip255"`` (values on the
    8-bit scale) is accepted too. K is a plain decimal number (``3``, ``0.5``, ``1e1``), finite
    and greater than 0.

    Raises
    ------
    ValueError
        One line naming the spec and what is wrong with it.
    """
    if not isinstance(text, str):
        raise ValueError(f"display mapping must be a string, not {type(text).__name__}")
    name, sep, arg = text.partition(":")
    if name == "sigma" and sep:
        k = float(arg) if _NUMBER.fullmatch(arg) else math.nan
        if not (math.isfinite(k) and k > 0):
            raise ValueError(
                f"display mapping {text!r}: K must be a finite number greater than 0, "
                f"e.g. sigma:3"
            )
        return name, k
    if sep or name not in DISPLAY_MAPPINGS:
        raise ValueError(
            f"unknown display mapping {text!r} (use minmax, sigma, sigma:K, clip or clip255)"
        )
    return name, (DEFAULT_SIGMA_K if name == "sigma" else None)


def _row_blocks(values: np.ndarray, cells: int = 1 << 18):
    """Views of ``values`` (ndim >= 1) along its first axis, about ``cells`` values each.

    Value mapping works block by block so its float64 temporaries stay at a few MiB whatever
    the image size (whole-array float64 copies were 8x a uint8 image, several at once).
    """
    row = int(np.prod(values.shape[1:], dtype=np.int64)) if values.ndim > 1 else 1
    rows = max(1, cells // max(1, row))
    for r0 in range(0, values.shape[0], rows):
        yield r0, min(values.shape[0], r0 + rows), values[r0 : r0 + rows]


def _float_blocks(values: np.ndarray):
    for r0, r1, block in _row_blocks(values):
        yield r0, r1, block.astype(np.float64)


def to_display(
    array: np.ndarray, mapping: str = "minmax", *, sigma_k: float = DEFAULT_SIGMA_K
) -> tuple[np.ndarray, str]:
    """Map any real array to ``uint8`` for viewing, and describe the mapping.

    The mapping is computed over the whole image, all channels together (so colour balance is
    kept), from the finite values only. NaN becomes 0; +inf/-inf become 255/0. Values are rounded
    half to even (``np.rint``). Memory: the ``uint8`` result plus a few MiB, whatever the size.

    Parameters
    ----------
    array : ndarray
        Values of any integer or float dtype, any shape.
    mapping : str, optional
        A display spec as parsed by :func:`parse_display`:

        - ``"minmax"``: the finite minimum/maximum map to 0/255; a constant image becomes 128.
        - ``"sigma"`` or ``"sigma:K"``: mean - K*std .. mean + K*std map to 0..255, clipped
          (K from the string, else ``sigma_k``); zero spread becomes 128.
        - ``"clip"``: values already in 0..1, clipped to [0, 1] and multiplied by 255.
        - ``"clip255"``: values on the 8-bit scale (e.g. average pooling of an 8-bit image),
          clipped to [0, 255] and rounded.
    sigma_k : float, optional
        K for ``"sigma"`` when the string does not give one.

    Returns
    -------
    display : ndarray of uint8
        Same shape as ``array``.
    description : str
        One line naming the mapping and its numbers, e.g. ``"minmax [-1.732, 2.104] -> [0, 255]
        (whole image, all channels)"``, for the statistics output.

    Raises
    ------
    ValueError
        Unknown mapping, bad K, or a non-numeric array.
    """
    values = np.asarray(array)
    if values.dtype.kind not in "biuf":
        raise ValueError(f"to_display needs a real numeric array, not {values.dtype}")
    name, k = parse_display(mapping)
    if name == "sigma" and ":" not in mapping:
        k = sigma_k
        if not (np.isfinite(k) and k > 0):
            raise ValueError(f"sigma K must be a positive number, got {k}")
    flat = values.reshape(1) if values.ndim == 0 else values
    lo, hi, description = _display_range(flat, name, k)
    out, clipped = _map_to_uint8(flat, name, lo, hi)
    if clipped:
        description += f" ({clipped} of {flat.size} values clipped)"
    return out.reshape(values.shape), description


def _display_range(flat: np.ndarray, name: str, k: float | None) -> tuple[float, float, str]:
    """``(lo, hi, description)`` of a mapping: lo/hi map to 0/255 (minmax and sigma)."""
    if name == "clip":
        return 0.0, 1.0, "clip [0, 1] -> [0, 255]"
    if name == "clip255":
        return 0.0, 255.0, "clip [0, 255], rounded"
    # Pass 1 (and 2 for sigma): statistics of the finite values.
    count, lo, hi, total = 0, np.inf, -np.inf, 0.0
    for _, _, x in _float_blocks(flat):
        data = x[np.isfinite(x)]
        if data.size:
            count += data.size
            lo, hi = min(lo, float(data.min())), max(hi, float(data.max()))
            total += float(data.sum())
    if name == "minmax":
        lo, hi = (lo, hi) if count else (0.0, 0.0)
        if hi > lo:
            return lo, hi, f"minmax [{lo:.4g}, {hi:.4g}] -> [0, 255] (whole image, all channels)"
        return lo, hi, f"minmax: constant image ({lo:.4g}) -> 128"
    mean = total / count if count else 0.0
    squares = 0.0
    if count:
        for _, _, x in _float_blocks(flat):
            d = x[np.isfinite(x)] - mean
            squares += float(np.einsum("i,i->", d, d))
    std = float(np.sqrt(squares / count)) if count else 0.0
    lo, hi = mean - k * std, mean + k * std
    if hi > lo:
        return lo, hi, (
            f"sigma {k:g}: mean {mean:.4g} +/- {k:g}*std {std:.4g} "
            f"= [{lo:.4g}, {hi:.4g}] -> [0, 255], clipped (whole image, all channels)"
        )
    return lo, hi, f"sigma {k:g}: constant image ({mean:.4g}) -> 128"


def _map_to_uint8(flat: np.ndarray, name: str, lo: float, hi: float) -> tuple[np.ndarray, int]:
    """The last pass: map block by block into the ``uint8`` result; also count clipped values."""
    out = np.empty(flat.shape, dtype=np.uint8)
    clipped = 0
    for r0, r1, x in _float_blocks(flat):
        if name in ("minmax", "sigma"):
            if hi > lo:
                scaled = (x - lo) / (hi - lo) * 255.0
            else:
                scaled = np.where(np.isposinf(x), 255.0, np.where(np.isneginf(x), 0.0, 128.0))
        elif name == "clip":
            scaled = x * 255.0
        else:
            scaled = x
        if name in ("sigma", "clip", "clip255"):
            clipped += int(np.count_nonzero((scaled < -0.5) | (scaled > 255.5)))
        nan = np.isnan(x)
        np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        np.rint(scaled, out=scaled)
        np.clip(scaled, 0, 255, out=scaled)
        scaled[nan] = 0
        out[r0:r1] = scaled
    return out, clipped


def fit_to_dtype(array: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """Round and clip ``array`` into an integer ``dtype`` (float results into 8/16-bit files).

    Values are rounded half to even (``np.rint``), clipped to the dtype's range, NaN becomes 0.
    Arrays already of ``dtype`` are returned unchanged; float targets just cast. Works in
    blocks of rows: memory is the result plus a few MiB (no whole-array float64 copies).

    Parameters
    ----------
    array : ndarray
        Real values.
    dtype : dtype
        Target dtype, typically from :func:`output_dtype_for`.
    """
    target = np.dtype(dtype)
    values = np.asarray(array)
    if values.dtype == target:
        return values
    if target.kind == "f":
        return values.astype(target)
    if target.kind not in "iu":
        raise ValueError(f"fit_to_dtype needs an integer or float target dtype, not {target}")
    info = np.iinfo(target)
    # float64 bounds that convert back into the dtype (2**63 - 1 rounds up to 2**63, which
    # would wrap to the minimum for int64)
    lo, hi = float(info.min), float(info.max)
    if int(hi) > info.max:
        hi = float(np.nextafter(hi, -np.inf))
    flat = values.reshape(1) if values.ndim == 0 else values
    out = np.empty(flat.shape, dtype=target)
    for r0, r1, block in _row_blocks(flat):
        x = block.astype(np.float64)
        np.nan_to_num(x, copy=False, nan=0.0, posinf=hi, neginf=lo)
        np.rint(x, out=x)
        np.clip(x, lo, hi, out=x)
        out[r0:r1] = x
    return out.reshape(values.shape)


def output_dtype_for(
    path: str | os.PathLike[str],
    dtype: np.dtype | type,
    *,
    source_dtype: np.dtype | type | None = None,
) -> np.dtype:
    """The dtype the file format at ``path`` will hold for an array of ``dtype``.

    When the result differs from ``dtype`` (typically a float result going to PNG/JPEG), the
    caller must convert: :func:`fit_to_dtype` (round and clip, for results on the input's scale)
    or :func:`to_display` (a documented stretch, for signed/normalized results).

    ================  ==========================================================================
    Suffix            Result
    ================  ==========================================================================
    .png              ``uint16`` for ``uint16`` (and for wider integers, and for floats computed
                      from a 16-bit ``source_dtype``); ``uint8`` otherwise
    .jpg/.jpeg/.webp  ``uint8``
    .gif/.bmp
    .tif/.tiff        ``dtype`` unchanged (``bool`` -> ``uint8``)
    .npy              ``dtype`` unchanged
    ================  ==========================================================================

    Parameters
    ----------
    path : str or path-like
        Output path (only the suffix matters).
    dtype : dtype
        dtype of the array about to be written.
    source_dtype : dtype, optional
        dtype of the input image the array was computed from. A float average of a ``uint16``
        image should go to a 16-bit PNG, so pass it for float results.

    Raises
    ------
    ValueError
        Unknown suffix.
    """
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix not in SUFFIX_FORMAT:
        raise ValueError(f"unsupported output suffix {suffix or '(none)'} ({SUFFIX_HINT})")
    fmt = SUFFIX_FORMAT[suffix]
    dt = np.dtype(dtype)
    if fmt == "NPY":
        return dt
    if fmt == "TIFF":
        return np.dtype(np.uint8) if dt == np.bool_ else dt
    if fmt != "PNG":
        return np.dtype(np.uint8)
    if dt == np.uint16:
        return dt
    if dt.kind in "iu" and dt.itemsize > 2:
        return np.dtype(np.uint16)
    if dt.kind == "f" and source_dtype is not None:
        src = np.dtype(source_dtype)
        if src.kind in "iu" and src.itemsize >= 2:
            return np.dtype(np.uint16)
    return np.dtype(np.uint8)


def to_uint8(array: np.ndarray, scale_dtype: np.dtype | type | None = None
             ) -> tuple[np.ndarray, str]:
    """Values on a 16-bit, wide-integer or float scale into ``uint8`` for an 8-bit-only format
    (JPEG, WebP, BMP, GIF, 8-bit PNG): scaled, never clipped to white.

    ``scale_dtype`` is the dtype whose scale the values are on (the input's, for a float
    average of a 16-bit image; default the array's own):

    - 16-bit integers: ``x / 257``, rounded (65535 -> 255), as ImageMagick, vips and Pillow do;
    - 8-bit or narrower integers: rounded and clipped (they fit already);
    - floats: ``0..1`` values times 255, any other range ``min..max`` -> ``0..255``
      (finite values; NaN -> 0), and wider integers by their range too.

    Returns the ``uint8`` array and a note naming the mapping. Works block by block: memory is
    the result plus a few MiB.

    >>> to_uint8(np.array([0, 257, 65535], np.uint16))[0].tolist()
    [0, 1, 255]
    >>> to_uint8(np.array([0.0, 0.5, 1.0]))[0].tolist()
    [0, 128, 255]
    """
    values = np.asarray(array)
    scale = np.dtype(scale_dtype if scale_dtype is not None else values.dtype)
    if scale.kind in "iub" and scale.itemsize == 1:
        return fit_to_dtype(values, np.uint8), "written as uint8 (rounded and clipped)"
    if scale.kind in "iu" and scale.itemsize == 2:
        lo, hi, note = 0.0, 65535.0, "16-bit values scaled to 8 bits (x/257, rounded)"
    else:
        lo, hi = _finite_range(values)
        if scale.kind == "f" and lo >= 0.0 and hi <= 1.0:
            lo, hi, note = 0.0, 1.0, "float values in 0..1 scaled to 8 bits (x*255, rounded)"
        else:
            hi = hi if hi > lo else lo + 1.0
            note = f"values {lo:.6g}..{hi:.6g} mapped linearly to 0..255 for an 8-bit format"
    flat = values.reshape(1) if values.ndim == 0 else values
    out = np.empty(flat.shape, dtype=np.uint8)
    for r0, r1, block in _row_blocks(flat):
        with np.errstate(invalid="ignore"):  # a signalling NaN warns when widened
            x = block.astype(np.float64)
        np.nan_to_num(x, copy=False, nan=lo, posinf=hi, neginf=lo)
        x -= lo
        x *= 255.0 / (hi - lo)
        np.rint(x, out=x)
        np.clip(x, 0, 255, out=x)
        out[r0:r1] = x
    return out.reshape(values.shape), note


def _finite_range(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.inf, -np.inf
    for _, _, block in _row_blocks(values.reshape(-1) if values.ndim else values.reshape(1)):
        data = block[np.isfinite(block)] if block.dtype.kind == "f" else block
        if data.size:
            lo, hi = min(lo, float(data.min())), max(hi, float(data.max()))
    return (0.0, 0.0) if lo > hi else (lo, hi)
