"""Small helpers shared by the modules of :mod:`poolcli.imageio` (private to the package)."""

from __future__ import annotations

from typing import Any, BinaryIO, Callable

import numpy as np

from poolcli.errors import ImageReadError

__all__ = ["ICC_NOTE", "Blob", "NpyVersionError", "apply_orientation", "corrupt",
           "exif_orientation_from_bytes", "hwc", "icc_is_srgb", "is_stdio", "no_memory",
           "npy_header", "pil"]


def pil():
    """Pillow's ``Image`` module, imported on first use: PNG, TIFF and ``.npy`` never need it."""
    from PIL import Image

    return Image


def is_stdio(path: object) -> bool:
    """Whether ``path`` is ``"-"`` (standard input or output)."""
    return isinstance(path, str) and path == "-"


def corrupt(source: str, fmt: str) -> ImageReadError:
    """The error for a file whose ``fmt`` data is cut short or damaged."""
    return ImageReadError(f"{source}: truncated or corrupt {fmt} data")


def no_memory(source: str, width: int, height: int) -> ImageReadError:
    return ImageReadError(f"{source}: not enough memory to decode a {width}x{height} image")


class Blob:
    """A file's bytes handed to one decoder: :meth:`take` leaves no other reference behind."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes):
        self._data: bytes | None = data

    def take(self) -> bytes:
        data, self._data = self._data, None
        if data is None:
            raise RuntimeError("image data already taken")
        return data


def hwc(array: np.ndarray) -> np.ndarray:
    """``(H, W)`` as ``(H, W, 1)``; ``(H, W, C)`` unchanged."""
    return array[:, :, np.newaxis] if array.ndim == 2 else array


# ---- colour profiles and orientation -------------------------------------------------------------

ICC_NOTE = "non-sRGB ICC colour profile ignored (values used as stored)"


def icc_is_srgb(profile: bytes) -> bool:
    """Heuristic: an sRGB profile names itself in its description tag."""
    return b"sRGB" in profile


# EXIF orientation value -> (description, transform of an (H, W, C) array). Matches
# PIL.ImageOps.exif_transpose (checked in tests/test_imageio.py).
_ORIENTATIONS: dict[int, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    2: ("mirror left-right", lambda a: a[:, ::-1]),
    3: ("rotate 180", lambda a: a[::-1, ::-1]),
    4: ("mirror top-bottom", lambda a: a[::-1]),
    5: ("transpose", lambda a: a.transpose(1, 0, 2)),
    6: ("rotate 90 clockwise", lambda a: np.rot90(a, -1)),
    7: ("transverse", lambda a: a[::-1, ::-1].transpose(1, 0, 2)),
    8: ("rotate 90 counter-clockwise", lambda a: np.rot90(a, 1)),
}


def exif_orientation_from_bytes(payload: bytes) -> int | None:
    """The Orientation tag of raw EXIF data (a TIFF structure), or ``None``."""
    try:
        exif = pil().Exif()
        exif.load(payload)
        return exif.get(0x0112)
    except Exception:
        return None


def apply_orientation(array: np.ndarray, orientation: Any, notes: list[str]) -> np.ndarray:
    """``array`` turned upright for an EXIF orientation value (noted when it changes)."""
    try:
        value = int(orientation) if orientation is not None else 1
    except (TypeError, ValueError):
        return array
    if value not in _ORIENTATIONS:
        return array
    description, transform = _ORIENTATIONS[value]
    notes.append(f"EXIF orientation applied ({description})")
    return np.ascontiguousarray(transform(array))


# ---- .npy headers --------------------------------------------------------------------------------


class NpyVersionError(ValueError):
    """A ``.npy`` header of a format version :func:`npy_header` does not read."""


def npy_header(fh: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from a ``.npy`` header; ``fh`` is left at the data.

    Versions 1.0 and 2.0 only (:class:`NpyVersionError` otherwise). numpy's reader caps the
    header at 10,000 bytes and parses it without evaluating code; a malformed header raises
    ``ValueError`` (or ``SyntaxError``/``TypeError`` from the literal parser; numpy's retry of
    an old header through ``tokenize`` raises ``TokenError``, made a ``ValueError`` here).
    """
    import tokenize

    version = np.lib.format.read_magic(fh)
    try:
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise NpyVersionError(f"unsupported .npy format version {version[0]}.{version[1]}")
    except tokenize.TokenError:  # numpy retries a header that does not parse via tokenize
        raise ValueError("malformed .npy header") from None
    return tuple(shape), bool(fortran), dtype
