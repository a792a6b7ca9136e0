"""Image decoding: :func:`read_image` and every decoder behind it.

Reading
-------
:func:`read_image` returns an :class:`Image` whose ``array`` is always ``(H, W, C)`` with ``C >= 1``
(a grey image is ``(H, W, 1)``), in the file's own dtype and bit depth:

==================================  ============================================================
File                                Array
==================================  ============================================================
8-bit PNG/JPEG/BMP/WebP/GIF/TIFF    ``uint8``; channels ``L``, ``LA``, ``RGB`` or ``RGBA``
1-bit (Pillow mode ``1``, bilevel)  ``uint8`` 0/255 (noted)
palette (``P``)                     expanded to ``RGB``, or ``RGBA`` when it has transparency
                                    (PNG ``tRNS``, GIF transparent index)
colour key (grey or RGB + tRNS)     the key becomes an alpha channel, as libpng does: ``LA`` /
                                    ``RGBA``, alpha 0 where the pixel equals the key and the
                                    maximum elsewhere (16-bit: ``LA;16`` / ``RGBA;16``); noted
CMYK, YCbCr, LAB, HSV               converted to ``RGB`` by Pillow (noted; no colour management)
16-bit PNG (grey, LA, RGB, RGBA)    ``uint16``, bit-exact. Pillow reduces 16-bit LA/RGB/RGBA PNG
                                    to 8 bits, so every 16-bit PNG is decoded with
                                    ``imagecodecs.png_decode`` (the IHDR chunk is read first)
32-bit BMP with an alpha mask       ``RGBA`` (BITMAPV3/V4/V5 headers with BI_BITFIELDS)
TIFF (tifffile)                     first page, dtype as stored (``uint16``, ``float32``, ...);
                                    page count noted; CMYK/YCbCr/LAB TIFF fall back to Pillow
``.npy``                            as stored (``np.load``, ``allow_pickle=False``); ``(H, W)``
                                    or ``(H, W, C)``; ``bool`` -> ``uint8`` 0/1, ``float16`` ->
                                    ``float32`` (both noted); channels ``c0, c1, ...``
==================================  ============================================================

Unsupported variants are refused from their headers with ``FILE: unsupported ...``, never as
corrupt: JPEG with 12- or 16-bit precision, hierarchical JPEG (SOF5-7, SOF13-15), lossless
arithmetic JPEG (SOF11), JPEG with 2 or more than 4 components or a DNL-defined height; BMP with
JPEG or PNG data or BI_ALPHABITFIELDS; PNG with a critical chunk the standard does not define; TIFF
sample formats, layouts, compressions and predictors tifffile cannot decode (and, while the guard is
on, JPEG XL/XR compressed TIFF, see below). 8-bit lossless JPEG (SOF3) and arithmetic-coded JPEG
(SOF9, SOF10) are decoded (libjpeg-turbo).

PNG chunk checksums (CRC-32) are verified for every chunk, image data included: a damaged file is an
error, never silently decoded (Pillow checks only the chunks before the image data). Plain 8-bit
grey, LA, RGB and RGBA PNGs are decoded by libpng (``imagecodecs``) straight into numpy, like 16-bit
ones: the same pixels as Pillow at 1.8x the decoded size in memory instead of 2.5x (Pillow stores
RGB as 4 bytes a pixel). WebP is decoded by libwebp (``imagecodecs``) straight into numpy too
(Pillow's WebP path held four copies); other images are copied out of Pillow in strips of rows. Text
chunks (``tEXt``, ``zTXt``, ``iTXt``) other than orientation metadata and the ``iCCP`` profile are
not handed to Pillow, whose 1 MiB text limit would refuse a valid file with a long comment; poolcli
reads the profile itself, inflating at most 1 MiB of it. The file's bytes are released as soon as
they are decoded.

The format is sniffed from the leading bytes, never trusted from the suffix (a mismatch is noted).
EXIF orientation (JPEG, PNG ``eXIf``, WebP, TIFF ``Orientation``) is applied and noted. Embedded
ICC profiles are ignored: values are used as stored (noted unless the profile is sRGB). Every
failure raises :class:`~poolcli.errors.ImageReadError` with one line naming the file and the
problem. What the decoding libraries say on the way (libpng's ``PNG warning: ...``, tifffile's
log warnings, Pillow's and numpy's Python warnings, C libraries' writes to descriptor 2) never
reaches the terminal: it becomes a note on the image, ``decoder warning (libpng): ...``
(:mod:`poolcli.imageio._quiet`), or nothing when poolcli already handles the case.

Decompression bombs
-------------------
poolcli owns the guard (:mod:`poolcli.imageio._guard`); every limit follows ``max_pixels``
(``--max-pixels``, default 178,956,970 = twice Pillow's warning level), and each refusal is one
line, ``FILE: WxH ... exceeds ... (decompression-bomb guard)``, raised before decoding:

* pixels: width x height at most ``max_pixels``;
* decoded bytes: width x height x channels x bytes a sample at most ``8 * max_pixels`` (an honest
  16-bit RGBA image at the pixel limit is exactly at it; 4096 float64 channels are not);
* TIFF strips and tiles: each decodes to at most the image's own size (or 16 MiB), and a strip
  or tile compressed as a JPEG, PNG, WebP or JPEG 2000 stream must claim no more than its own
  size (other image compressions are refused while the guard is on);
* files: at most twice the decoded-bytes limit (plus 1 MiB) are read, and uncompressed layouts
  (``.npy``, BMP) must hold the pixels their header claims.

The header (PNG IHDR, JPEG SOF, GIF screen, BMP, WebP, ``.npy``, the first TIFF IFD) is read
before the rest of a regular file; decoders check again from what their library parsed.
Pillow's own guard (``PIL.Image.MAX_IMAGE_PIXELS``) is switched off by ``read_image`` so that its
warning/error never leaks and ``--max-pixels`` can raise the limit.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from poolcli.errors import ImageReadError
from poolcli.formats import SUFFIX_FORMAT
from poolcli.imageio._common import (
    Blob,
    NpyVersionError,
    corrupt,
    hwc,
    is_stdio,
    no_memory,
    npy_header,
)
from poolcli.imageio._decode_pillow import decode_pillow
from poolcli.imageio._decode_png import decode_png_direct
from poolcli.imageio._decode_tiff import decode_tiff
from poolcli.imageio._decode_webp import decode_webp
from poolcli.imageio._guard import (
    check_bytes,
    check_file_size,
    check_pixels,
    decoded_byte_limit,
    file_size_limit,
    preflight,
)
from poolcli.imageio._headers import bytes_reader
from poolcli.imageio._pngchunks import (
    check_png_crcs,
    png_direct,
    png_ihdr,
    png_unknown_critical,
)
from poolcli.imageio._quiet import captured
from poolcli.imageio.files import os_problem
from poolcli.imageio.store import is_url

__all__ = ["DEFAULT_MAX_PIXELS", "Image", "decoded_byte_limit", "read_image"]


#: Largest image (width x height) read without ``--max-pixels``: twice Pillow's own warning
#: threshold (89,478,485 = 1024 * 1024 * 1024 // 4 // 3), i.e. the size at which Pillow itself would
#: refuse. About 13400 x 13400; a uint8 RGB image of that size is 537 MB in memory.
DEFAULT_MAX_PIXELS = 178_956_970

# Bytes of one strip when a Pillow image is copied into numpy (see _decode_pillow.pil_array).
_STRIP_BYTES = 4 << 20

# Leading bytes read first: enough to sniff the format and describe what is not an image.
_HEAD_BYTES = 1024

_hwc = hwc  # the name tests/test_imageio.py uses

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x93NUMPY", "NPY"),
    (b"BM", "BMP"),
)


@dataclass
class Image:
    """A decoded image.

    Attributes
    ----------
    array : ndarray, shape (H, W, C)
        Pixel values, channels last, ``C >= 1`` (grey is ``(H, W, 1)``), in the file's dtype.
    channels : tuple of str
        One name per channel: ``("L",)``, ``("L", "A")``, ``("R", "G", "B")``,
        ``("R", "G", "B", "A")``, or ``("c0", "c1", ...)`` for ``.npy`` and other layouts.
    source : str
        The path as given, or ``"<stdin>"``.
    format : str
        Detected container format: ``"PNG"``, ``"JPEG"``, ``"TIFF"``, ``"BMP"``, ``"WEBP"``,
        ``"GIF"`` or ``"NPY"``.
    mode : str
        Pillow mode (``"L"``, ``"RGBA"``, ``"I;16"``, ``"F"``, ...) or a description in the same
        spirit (``"RGB;16"``, ``"LA;16"``, ``"RGB;float32"``, ``"npy float32"``).
    notes : list of str
        Human-readable notes about what decoding did (orientation applied, palette expanded,
        first frame of an animation, ...).
    """

    array: np.ndarray
    channels: tuple[str, ...]
    source: str
    format: str
    mode: str
    notes: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        """Number of rows."""
        return int(self.array.shape[0])

    @property
    def width(self) -> int:
        """Number of columns."""
        return int(self.array.shape[1])

    @property
    def has_alpha(self) -> bool:
        """Whether the last channel is an alpha channel."""
        return bool(self.channels) and self.channels[-1] == "A"


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image:
    """Decode one image file (or standard input) into an ``(H, W, C)`` array.

    Parameters
    ----------
    path : str or path-like
        File to read; ``"-"`` reads all of standard input (format sniffed from its bytes); a
        URL (``s3://bucket/key.png``, :mod:`poolcli.imageio.store`) reads the object whole.
    max_pixels : int or None, optional
        Refuse images with more than this many pixels (width x height), or more than 8 bytes a
        pixel of it once decoded, checked from the header before any pixel data is decoded
        (see the module docstring). ``None`` disables the guard.

    Returns
    -------
    Image
        The decoded image; see the module docstring for dtypes and channel layouts.

    Raises
    ------
    ImageReadError
        For every problem (missing, unreadable, empty, unrecognised, truncated, too large,
        unsupported layout), with a one-line message that starts with the file name.
    """
    # A bytes path is decoded like the names os.listdir gives (undecodable bytes as surrogate
    # escapes), so every message and record holds a str.
    source = "<stdin>" if is_stdio(path) else os.fsdecode(os.fspath(path))
    if is_stdio(path):
        fmt, data = _checked(source, _read_stdin(file_size_limit(max_pixels)), max_pixels)
    elif is_url(source):
        fmt, data = _checked(source, _read_url(source, max_pixels), max_pixels)
    else:
        fmt, data = _read_file(source, max_pixels)

    notes: list[str] = []
    if source != "<stdin>":
        expected = SUFFIX_FORMAT.get(Path(source).suffix.lower())
        if expected is not None and expected != fmt:
            notes.append(f"content is {fmt} although the name ends in {Path(source).suffix}")

    direct = False
    if fmt == "PNG":
        check_png_crcs(data, source)
        unknown = png_unknown_critical(data)
        if unknown:
            raise ImageReadError(f"{source}: unsupported PNG (unknown critical chunk {unknown!r})")
        _, _, depth, colour = png_ihdr(data, source)
        direct = png_direct(data, depth, colour)
    # The file's bytes go to the decoder, which drops them as soon as it has decoded (a large
    # PNG's bytes need not live beside its pixels while they are converted to an array).
    blob = Blob(data)
    del data
    with captured() as chatter:
        array, channels, mode = _decode(blob, source, fmt, direct, max_pixels, notes)
    notes.extend(chatter.notes())

    if array.ndim != 3 or 0 in array.shape:
        raise ImageReadError(f"{source}: image has no pixels (shape {array.shape})")
    return Image(
        array=np.ascontiguousarray(array),
        channels=tuple(channels),
        source=source,
        format=fmt,
        mode=mode,
        notes=notes,
    )


def _decode(blob: Blob, source: str, fmt: str, direct: bool, max_pixels: int | None,
            notes: list[str]):
    def pillow(b: Blob, kind: str = fmt):
        return decode_pillow(b, source, kind, max_pixels, notes, _STRIP_BYTES)

    if fmt == "NPY":
        return _decode_npy(blob, source, max_pixels, notes)
    if fmt == "TIFF":
        return decode_tiff(blob, source, max_pixels, notes, lambda b: pillow(b, "TIFF"))
    if fmt == "WEBP":
        return decode_webp(blob, source, max_pixels, notes)
    if direct:
        return decode_png_direct(blob, source, max_pixels, notes)
    return pillow(blob)


def _read_stdin(limit: int | None) -> bytes:
    stream = getattr(sys, "stdin", None)
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        raise ImageReadError("<stdin>: standard input is not available")
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        raise ImageReadError("<stdin>: standard input is a terminal (pipe an image in)")
    try:
        return buffer.read() if limit is None else buffer.read(limit + 1)
    except OSError as exc:
        raise ImageReadError(f"<stdin>: cannot read ({exc.strerror or exc})") from exc


def _read_url(source: str, max_pixels: int | None) -> bytes:
    """An object's bytes (:mod:`poolcli.imageio.store`), its size checked against the guard's
    file-size limit before it is downloaded."""
    from poolcli.imageio.store import read_bytes

    def check(size: int) -> None:
        check_file_size(source, size, max_pixels)

    return read_bytes(source, error=ImageReadError, check_size=check,
                      max_bytes=file_size_limit(max_pixels))


def _checked(source: str, data: bytes, max_pixels: int | None) -> tuple[str, bytes]:
    """``(format, data)`` of bytes read whole (standard input, a pipe), headers checked."""
    if not data:
        empty = "no data on standard input" if source == "<stdin>" else "file is empty"
        raise ImageReadError(f"{source}: {empty}")
    check_file_size(source, len(data), max_pixels)
    fmt = _sniff(data)
    if fmt is None:
        raise ImageReadError(f"{source}: not an image file ({_describe_unknown(data)})")
    preflight(source, fmt, bytes_reader(data), len(data), max_pixels)
    return fmt, data


def _read_file(source: str, max_pixels: int | None) -> tuple[str, bytes]:
    try:
        with open(source, "rb") as fh:
            st = os.fstat(fh.fileno())
            kind = _device_kind(st.st_mode)
            if kind:  # /dev/zero would be read until memory runs out
                raise ImageReadError(f"{source}: not an image file ({kind}, not a regular file)")
            limit = file_size_limit(max_pixels)
            if not stat.S_ISREG(st.st_mode):  # a pipe: read whole (bounded), then checked
                return _checked(source, fh.read() if limit is None else fh.read(limit + 1),
                                max_pixels)
            check_file_size(source, st.st_size, max_pixels)
            return _read_regular(fh, source, st.st_size, max_pixels)
    except MemoryError:
        raise ImageReadError(f"{source}: not enough memory to read the file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{source}: is a directory") from None
    except FileNotFoundError:
        problem = "broken symbolic link" if os.path.islink(source) else "no such file"
        raise ImageReadError(f"{source}: {problem}") from None
    except PermissionError:
        raise ImageReadError(f"{source}: permission denied") from None
    except OSError as exc:
        raise ImageReadError(f"{source}: {os_problem(exc, 'cannot read')}") from None


def _read_regular(fh, source: str, size: int, max_pixels: int | None) -> tuple[str, bytes]:
    """Sniff and check the header of a regular file, then read it whole."""
    head = fh.read(_HEAD_BYTES)
    if not head:
        raise ImageReadError(f"{source}: file is empty")
    fmt = _sniff(head)
    if fmt is None:
        raise ImageReadError(f"{source}: not an image file ({_describe_unknown(head)})")

    def read_at(offset: int, count: int) -> bytes:
        fh.seek(offset)
        return fh.read(count)

    preflight(source, fmt, read_at, size, max_pixels)
    fh.seek(0)
    limit = file_size_limit(max_pixels)
    # read(n) allocates n bytes up front: ask for the file's own size (plus one byte, to see
    # whether it grew past the limit since), never the limit itself (GiBs under `ulimit -v`)
    want = size + 1 if limit is None else min(limit, size) + 1
    data = fh.read(want)
    if len(data) == want and (limit is None or want <= limit):  # it grew: read the rest
        data += fh.read() if limit is None else fh.read(limit + 1 - len(data))
    check_file_size(source, len(data), max_pixels)  # it may have grown since
    return fmt, data


def _device_kind(mode: int) -> str | None:
    """A name for device files, which are never images (pipes are fine: ``<(cat img.png)``)."""
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return None


def _sniff(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    return None


def _describe_unknown(data: bytes) -> str:
    head = data[:1024]
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            # A multi-byte character cut at the 1024-byte boundary is still text.
            if exc.start < len(head) - 4:
                return "unrecognised data"
        return "looks like text"
    return "unrecognised data"


# ---- NPY ---------------------------------------------------------------------------------------


def _decode_npy(blob: Blob, source: str, max_pixels: int | None, notes: list[str]):
    fh = io.BytesIO(blob.take())
    try:
        shape, _, dtype = npy_header(fh)
    except NpyVersionError as exc:
        raise ImageReadError(f"{source}: {exc}") from None
    except Exception:
        raise corrupt(source, "NPY") from None

    if dtype.hasobject:
        raise ImageReadError(
            f"{source}: .npy holds Python objects (dtype {dtype}); only numeric arrays are read"
        )
    if dtype.names is not None:
        raise ImageReadError(f"{source}: .npy holds a structured array, not an image")
    if dtype.kind == "c":
        raise ImageReadError(f"{source}: .npy holds complex numbers (dtype {dtype}); not an image")
    if dtype.kind not in "biuf":
        raise ImageReadError(f"{source}: .npy dtype {dtype} is not numeric; not an image")
    if len(shape) not in (2, 3):
        raise ImageReadError(
            f"{source}: .npy array has {len(shape)} dimensions {tuple(shape)}; "
            "expected (H, W) or (H, W, C)"
        )
    if 0 in shape:
        raise ImageReadError(f"{source}: .npy array is empty (shape {tuple(shape)})")
    height, width = int(shape[0]), int(shape[1])
    check_pixels(source, width, height, max_pixels)
    channels = int(shape[2]) if len(shape) == 3 else 1
    itemsize = 4 if dtype == np.float16 else dtype.itemsize  # float16 is widened
    check_bytes(source, width, height, channels, itemsize, dtype.name, max_pixels)
    if len(fh.getbuffer()) - fh.tell() < width * height * channels * dtype.itemsize:
        raise corrupt(source, "NPY")  # before np.load allocates for what is not there

    fh.seek(0)
    try:
        array = np.load(fh, allow_pickle=False)
    except MemoryError:
        raise no_memory(source, width, height) from None
    except Exception:
        raise corrupt(source, "NPY") from None

    mode = f"npy {array.dtype.name}"
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
        notes.append("bool array read as uint8 0/1")
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
        notes.append("float16 widened to float32 (exact)")
    array = hwc(array)
    return array, tuple(f"c{i}" for i in range(array.shape[2])), mode
