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

#: The display mapping of signed results (normalization) in 8-bit files, unless --display says.
DEFAULT_DISPLAY = "sigma:3"


def fmt_num(v, *, digits: int = 5, decimals: int | None = None, tiny: float = 0.0,
            whole: bool = False) -> str:
    """A number as short text: the one formatter of tables, labels, captions and examples.

    Integers (and integral floats) as integers, NaN/inf as ``nan``/``inf``/``-inf``, ``None`` as
    ``-``; otherwise ``digits`` significant digits (``whole``: no decimals from ``10**(digits-1)``
    on, instead of an exponent), or at most ``decimals`` decimals when given; magnitudes below
    ``tiny`` as ``0``, and never ``-0``.

    >>> fmt_num(6), fmt_num(2.0), fmt_num(1 / 3), fmt_num(1 / 3, decimals=3), fmt_num(123456.7)
    ('6', '2', '0.33333', '0.333', '1.2346e+05')
    >>> fmt_num(123456.7, digits=4, whole=True), fmt_num(1e-5, tiny=5e-4), fmt_num(-float("inf"))
    ('123457', '0', '-inf')
    """
    import math

    if v is None:
        return "-"
    if isinstance(v, int) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iub"):
        return str(int(v))
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if abs(v) < tiny or v == 0:
        return "0"
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if decimals is not None:
        text = f"{v:.{decimals}f}".rstrip("0").rstrip(".")
    elif whole and 10 ** (digits - 1) <= abs(v) < 1e15:
        text = f"{v:.0f}"  # whole numbers rather than an exponent
    else:
        text = f"{v:.{digits}g}"
    return "0" if text in ("-0", "") else text
