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
    "DisplayMapping",
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


#: Values per row block of the value mappings (float64 temporaries of 2 MiB).
_BLOCK_CELLS = 1 << 18


def _row_blocks(values: np.ndarray, cells: int = _BLOCK_CELLS):
    """Views of ``values`` (ndim >= 1) along its first axis, about ``cells`` values each.

    Value mapping works block by block so its float64 temporaries stay at a few MiB whatever
    the image size (whole-array float64 copies were 8x a uint8 image, several at once).
    """
    rows = max(1, cells // max(1, _row_size(values)))
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
    flat = values.reshape(1) if values.ndim == 0 else values
    mapping = DisplayMapping(mapping, row_size=_row_size(flat), sigma_k=sigma_k)
    while mapping.wants_pass():  # the whole array is one band
        mapping.add(flat)
        mapping.end_pass()
    out = mapping.map(flat)
    return out.reshape(values.shape), mapping.description(flat.size)


def _row_size(values: np.ndarray) -> int:
    """Values per row (along the first axis) of ``values`` (ndim >= 1)."""
    return int(np.prod(values.shape[1:], dtype=np.int64)) if values.ndim > 1 else 1


class DisplayMapping:
    """:func:`to_display` of an array given band by band: rows along its first axis, in order,
    in bands cut anywhere. The same ``(lo, hi)`` and description, the same ``uint8`` values
    and clipped count as :func:`to_display` on the whole array, which runs this with the whole
    array as its one band.

    The statistics passes (none for clip/clip255, one for minmax, two for sigma: mean, then
    squared deviations) regroup the bands into the row blocks :func:`_row_blocks` cuts from
    row 0 (:class:`poolcli.ops.RowBlocks`), each made float64 and reduced as one, in order, so
    the floating-point sums are the whole array's. Mapping is elementwise: any band.

    >>> m = DisplayMapping("minmax", row_size=1)
    >>> while m.wants_pass():
    ...     for band in (np.array([0.0, 2.0]), np.array([4.0])):
    ...         m.add(band)
    ...     m.end_pass()
    >>> m.map(np.array([1.0, 4.0])).tolist(), m.description(3)
    ([64, 255], 'minmax [0, 4] -> [0, 255] (whole image, all channels)')
    """

    def __init__(self, mapping: str = "minmax", *, row_size: int,
                 sigma_k: float = DEFAULT_SIGMA_K):
        from poolcli.ops import RowBlocks

        name, k = parse_display(mapping)
        if name == "sigma" and ":" not in mapping:
            k = sigma_k
            if not (np.isfinite(k) and k > 0):
                raise ValueError(f"sigma K must be a positive number, got {k}")
        self.name, self.k = name, k
        self.blocks = RowBlocks(_BLOCK_CELLS // max(1, int(row_size)))  # _row_blocks' rows
        self.passes = {"minmax": 1, "sigma": 2}.get(name, 0)  # statistics passes ended
        self.done = 0
        self.count, self.lo, self.hi, self.total, self.squares = 0, np.inf, -np.inf, 0.0, 0.0
        self.mean = 0.0
        self.range: tuple[float, float, str] | None = None  # (lo, hi, description) when known
        self.clipped = 0
        if not self.passes:
            self._finish()

    def wants_pass(self) -> bool:
        """Whether another statistics pass over every band is needed (sigma skips its second
        when no value is finite, as :func:`to_display` does)."""
        return self.range is None

    def add(self, band: np.ndarray) -> None:
        """The next rows of the current statistics pass."""
        if self.range is not None:
            raise ValueError("DisplayMapping.add: the range is known; map() the bands")
        for block in self.blocks.feed(np.asarray(band)):
            self._fold(block)

    def _fold(self, block) -> None:
        if block is None:
            return
        x = block.astype(np.float64)
        if self.done == 0:
            data = x[np.isfinite(x)]
            if data.size:
                self.count += data.size
                self.lo, self.hi = min(self.lo, float(data.min())), max(self.hi,
                                                                        float(data.max()))
                self.total += float(data.sum())
        else:
            d = x[np.isfinite(x)] - self.mean
            self.squares += float(np.einsum("i,i->", d, d))

    def end_pass(self) -> None:
        """End a statistics pass (every band added): after the last, the range is known."""
        if self.range is not None:
            raise ValueError("DisplayMapping.end_pass: every statistics pass has ended")
        self._fold(self.blocks.rest())
        self.done += 1
        if self.done == 1 and self.name == "sigma":
            self.mean = self.total / self.count if self.count else 0.0
        if self.done == self.passes or not self.count:
            self._finish()

    def _finish(self) -> None:
        name, k, count = self.name, self.k, self.count
        if name == "clip":
            self.range = 0.0, 1.0, "clip [0, 1] -> [0, 255]"
        elif name == "clip255":
            self.range = 0.0, 255.0, "clip [0, 255], rounded"
        elif name == "minmax":
            lo, hi = (self.lo, self.hi) if count else (0.0, 0.0)
            if hi > lo:
                self.range = lo, hi, (f"minmax [{lo:.4g}, {hi:.4g}] -> [0, 255] "
                                      f"(whole image, all channels)")
            else:
                self.range = lo, hi, f"minmax: constant image ({lo:.4g}) -> 128"
        else:
            mean = self.mean
            std = float(np.sqrt(self.squares / count)) if count else 0.0
            lo, hi = mean - k * std, mean + k * std
            if hi > lo:
                self.range = lo, hi, (
                    f"sigma {k:g}: mean {mean:.4g} +/- {k:g}*std {std:.4g} "
                    f"= [{lo:.4g}, {hi:.4g}] -> [0, 255], clipped (whole image, all channels)"
                )
            else:
                self.range = lo, hi, f"sigma {k:g}: constant image ({mean:.4g}) -> 128"

    def map(self, band: np.ndarray) -> np.ndarray:
        """``band`` mapped to ``uint8`` (its clipped values counted)."""
        if self.range is None:
            raise ValueError("DisplayMapping.map: end the statistics passes first")
        out, clipped = _map_to_uint8(np.asarray(band), self.name, *self.range[:2])
        self.clipped += clipped
        return out

    def description(self, size: int) -> str:
        """One line naming the mapping and its numbers, with the values clipped among the
        ``size`` mapped (:func:`to_display`'s ``description``)."""
        if self.range is None:
            raise ValueError("DisplayMapping.description: end the statistics passes first")
        if self.clipped:
            return f"{self.range[2]} ({self.clipped} of {size} values clipped)"
        return self.range[2]


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
