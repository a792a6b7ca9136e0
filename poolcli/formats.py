"""File formats poolcli reads and writes, by suffix: the one table. Import-light (no numpy).

Everything about suffixes reads from :data:`SUFFIX_FORMAT`: batch expansion (which files in a
directory are images), :mod:`poolcli.imageio` (format of a suffix, output dtypes) and the CLI's
``--format`` choices (:data:`OUTPUT_FORMATS`).
"""

from __future__ import annotations

__all__ = [
    "FORMAT_ALIASES",
    "FORMATS",
    "OUTPUT_FORMATS",
    "SUFFIX_FORMAT",
    "SUFFIX_HINT",
    "SUPPORTED_SUFFIXES",
]

# suffix, container format, offered by ``--format``. GIF is read (first frame) and written when
# an output keeps a .gif input's suffix (quantised to 256 colours, lossy), but ``--format`` does
# not offer it: nobody should pick a palette format on purpose for pooled results.
_TABLE: tuple[tuple[str, str, bool], ...] = (
    (".png", "PNG", True),
    (".jpg", "JPEG", True),
    (".jpeg", "JPEG", True),
    (".tif", "TIFF", True),
    (".tiff", "TIFF", True),
    (".bmp", "BMP", True),
    (".webp", "WEBP", True),
    (".gif", "GIF", False),
    (".npy", "NPY", True),
)

#: Lower-case suffix (with its dot) -> container format name (``".jpg"`` -> ``"JPEG"``).
SUFFIX_FORMAT: dict[str, str] = {suffix: fmt for suffix, fmt, _ in _TABLE}

#: Every suffix poolcli reads and writes, in the table's order.
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(SUFFIX_FORMAT)

#: The container format names (``"BMP"``, ``"GIF"``, ``"JPEG"``, ...), sorted.
FORMATS: tuple[str, ...] = tuple(sorted(set(SUFFIX_FORMAT.values())))

#: Other spellings accepted where a format name is given (``write_image(format="jpg")``).
FORMAT_ALIASES: dict[str, str] = {"JPG": "JPEG", "TIF": "TIFF"}

#: The ``--format`` choices: suffixes without the dot, GIF left out (see the table).
OUTPUT_FORMATS: tuple[str, ...] = tuple(suffix[1:] for suffix, _, offered in _TABLE if offered)

#: The end of an "unsupported suffix" message.
SUFFIX_HINT = "use one of " + ", ".join(SUPPORTED_SUFFIXES)
