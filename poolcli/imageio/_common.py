"""Small helpers shared by the modules of :mod:`poolcli.imageio` (private to the package)."""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

from poolcli.errors import ImageReadError

__all__ = ["NpyVersionError", "corrupt", "is_stdio", "npy_header", "pil"]


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


class NpyVersionError(ValueError):
    """A ``.npy`` header of a format version :func:`npy_header` does not read."""


def npy_header(fh: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from a ``.npy`` header; ``fh`` is left at the data.

    Versions 1.0 and 2.0 only (:class:`NpyVersionError` otherwise). numpy's reader caps the
    header at 10,000 bytes and parses it without evaluating code; a malformed header raises
    ``ValueError`` (or ``SyntaxError``/``TypeError`` from the literal parser).
    """
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise NpyVersionError(f"unsupported .npy format version {version[0]}.{version[1]}")
    return tuple(shape), bool(fortran), dtype
