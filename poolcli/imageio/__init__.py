"""Every file poolcli reads or writes: images, index maps, statistics, pipelines, lists.

=================  ==============================================================================
Module             What it owns
=================  ==============================================================================
``read``           decoding images: :class:`Image`, :func:`read_image`, format sniffing, the PNG,
                   TIFF, ``.npy`` and Pillow decoders, EXIF orientation, the decompression-bomb
                   guard
``write``          encoding images: :func:`write_image` and its encoders
``png``            the PNG writer (numpy filtering, libdeflate)
``values``         :func:`fit_to_dtype`, :func:`to_display` (and :class:`DisplayMapping`, the
                   same band by band), :func:`parse_display`, :func:`output_dtype_for`
``files``          :func:`atomic_write`, :func:`make_parent_dirs`, short OS-error phrases
``indexmap``       max-location map files (``.indices.npz``): save and validated load
``statsfile``      batch-norm statistics files (JSON): save and validated load
``pipelinefile``   pipeline files (TOML/JSON stages): validated read
``listfile``       ``--from-list`` files: validated read
=================  ==============================================================================

Suffixes and format names come from :mod:`poolcli.formats`. Importing this package imports numpy
but never Pillow, tifffile or imagecodecs: each decoder or encoder imports what it needs. Side
files (maps, statistics, pipelines, lists) are validated field by field with size caps; every
problem raises a :class:`~poolcli.errors.SideFileError` subclass naming the file and the field.
"""

from __future__ import annotations

from poolcli.formats import SUPPORTED_SUFFIXES
from poolcli.imageio.files import atomic_write, make_parent_dirs
from poolcli.imageio.read import DEFAULT_MAX_PIXELS, Image, read_image
from poolcli.imageio.values import (
    DISPLAY_MAPPINGS,
    DisplayMapping,
    fit_to_dtype,
    output_dtype_for,
    parse_display,
    to_display,
    to_uint8,
)
from poolcli.imageio.write import DEFAULT_JPEG_QUALITY, DEFAULT_PNG_COMPRESS_LEVEL, write_image

__all__ = [
    "DEFAULT_JPEG_QUALITY",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_PNG_COMPRESS_LEVEL",
    "DISPLAY_MAPPINGS",
    "SUPPORTED_SUFFIXES",
    "DisplayMapping",
    "Image",
    "atomic_write",
    "fit_to_dtype",
    "make_parent_dirs",
    "output_dtype_for",
    "parse_display",
    "read_image",
    "to_display",
    "to_uint8",
    "write_image",
]
