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
CMYK, YCbCr, LAB, HSV               converted to ``RGB`` by Pillow (noted; no colour management)
16-bit PNG (grey, LA, RGB, RGBA)    ``uint16``, bit-exact. Pillow reduces 16-bit LA/RGB/RGBA PNG
                                    to 8 bits, so every 16-bit PNG is decoded with
                                    ``imagecodecs.png_decode`` (the IHDR chunk is read first)
TIFF (tifffile)                     first page, dtype as stored (``uint16``, ``float32``, ...);
                                    page count noted; CMYK/YCbCr/LAB TIFF fall back to Pillow
``.npy``                            as stored (``np.load``, ``allow_pickle=False``); ``(H, W)``
                                    or ``(H, W, C)``; ``bool`` -> ``uint8`` 0/1, ``float16`` ->
                                    ``float32`` (both noted); channels ``c0, c1, ...``
==================================  ============================================================

PNG chunk checksums (CRC-32) are verified for every chunk, image data included: a damaged file
is an error, never silently decoded (Pillow checks only the chunks before the image data).
Plain 8-bit grey, LA, RGB and RGBA PNGs are decoded by libpng (``imagecodecs``) straight into
numpy, like 16-bit ones: the same pixels as Pillow at 1.8x the decoded size in memory instead
of 2.5x (Pillow stores RGB as 4 bytes a pixel); other images are copied out of Pillow in
strips of rows. The file's bytes are released as soon as they are decoded.

The format is sniffed from the leading bytes, never trusted from the suffix (a mismatch is noted).
EXIF orientation (JPEG, PNG ``eXIf``, WebP, TIFF ``Orientation``) is applied and noted. Embedded
ICC profiles are ignored: values are used as stored (noted unless the profile is sRGB). Every
failure raises :class:`~poolcli.errors.ImageReadError` with one line naming the file and the
problem.

Decompression bombs: poolcli owns the guard. ``read_image`` reads the image size from the header
(PNG IHDR, Pillow's header parse, TIFF tags, ``.npy`` header) and refuses images with more than
``max_pixels`` pixels *before* decoding. Pillow's own guard (``PIL.Image.MAX_IMAGE_PIXELS``) is
switched off by ``read_image`` so that its warning/error never leaks and ``--max-pixels`` can raise
the limit.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from poolcli.errors import ImageReadError
from poolcli.formats import SUFFIX_FORMAT
from poolcli.imageio._common import NpyVersionError, corrupt, is_stdio, npy_header, pil
from poolcli.imageio._pngchunks import (
    check_png_crcs,
    png_chunks,
    png_direct,
    png_iccp_profile,
    png_ihdr,
    png_interlaced,
)
from poolcli.imageio.files import os_problem

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["DEFAULT_MAX_PIXELS", "Image", "read_image"]


#: Largest image (width x height) read without ``--max-pixels``: twice Pillow's own warning
#: threshold (89,478,485 = 1024 * 1024 * 1024 // 4 // 3), i.e. the size at which Pillow itself would
#: refuse. About 13400 x 13400; a uint8 RGB image of that size is 537 MB in memory.
DEFAULT_MAX_PIXELS = 178_956_970


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
        File to read; ``"-"`` reads all of standard input (format sniffed from its bytes).
    max_pixels : int or None, optional
        Refuse images with more than this many pixels (width x height), checked from the header
        before any pixel data is decoded. ``None`` disables the check.

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
    data = _read_stdin() if is_stdio(path) else _read_file(source)
    if not data:
        empty = "no data on standard input" if source == "<stdin>" else "file is empty"
        raise ImageReadError(f"{source}: {empty}")

    fmt = _sniff(data)
    if fmt is None:
        raise ImageReadError(f"{source}: not an image file ({_describe_unknown(data)})")

    notes: list[str] = []
    if source != "<stdin>":
        expected = SUFFIX_FORMAT.get(Path(source).suffix.lower())
        if expected is not None and expected != fmt:
            notes.append(f"content is {fmt} although the name ends in {Path(source).suffix}")

    direct = False
    if fmt == "PNG":
        check_png_crcs(data, source)
        _, _, depth, colour = png_ihdr(data, source)
        direct = png_direct(data, depth, colour)
    # The file's bytes go to the decoder, which drops them as soon as it has decoded (a large
    # PNG's bytes need not live beside its pixels while they are converted to an array).
    blob = _Blob(data)
    del data
    if fmt == "NPY":
        array, channels, mode = _decode_npy(blob, source, max_pixels, notes)
    elif fmt == "TIFF":
        array, channels, mode = _decode_tiff(blob, source, max_pixels, notes)
    elif direct:
        array, channels, mode = _decodepng_direct(blob, source, max_pixels, notes)
    else:
        array, channels, mode = _decode_pillow(blob, source, fmt, max_pixels, notes)

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


class _Blob:
    """A file's bytes handed to one decoder: :meth:`take` leaves no other reference behind."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes):
        self._data: bytes | None = data

    def take(self) -> bytes:
        data, self._data = self._data, None
        if data is None:
            raise RuntimeError("image data already taken")
        return data



def _read_stdin() -> bytes:
    stream = getattr(sys, "stdin", None)
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        raise ImageReadError("<stdin>: standard input is not available")
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        raise ImageReadError("<stdin>: standard input is a terminal (pipe an image in)")
    try:
        return buffer.read()
    except OSError as exc:
        raise ImageReadError(f"<stdin>: cannot read ({exc.strerror or exc})") from exc


def _read_file(source: str) -> bytes:
    try:
        with open(source, "rb") as fh:
            kind = _device_kind(os.fstat(fh.fileno()).st_mode)
            if kind:  # /dev/zero would be read until memory runs out
                raise ImageReadError(f"{source}: not an image file ({kind}, not a regular file)")
            return fh.read()
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


def _check_pixels(source: str, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageReadError(
            f"{source}: {width}x{height} = {width * height} pixels exceeds "
            f"--max-pixels {max_pixels} (decompression-bomb guard)"
        )


def _no_memory(source: str, width: int, height: int) -> ImageReadError:
    return ImageReadError(f"{source}: not enough memory to decode a {width}x{height} image")


# ---- PNG ---------------------------------------------------------------------------------------


def _decodepng_direct(blob: _Blob, source: str, max_pixels: int | None, notes: list[str]):
    import contextlib

    import imagecodecs

    data = blob.take()
    width, height, depth, colour = png_ihdr(data, source)
    _check_pixels(source, width, height, max_pixels)
    if colour not in (0, 2, 4, 6):
        raise corrupt(source, "PNG")
    # For every interlaced image imagecodecs' libpng glue writes "PNG warning: Interlace
    # handling should be turned on when using png_read_image" to sys.stderr (the pixels are
    # right): keep it off the user's terminal.
    quiet = (contextlib.redirect_stderr(io.StringIO()) if png_interlaced(data)
             else contextlib.nullcontext())
    try:
        with quiet:
            array = imagecodecs.png_decode(data)
    except MemoryError:
        raise _no_memory(source, width, height) from None
    except Exception:
        raise corrupt(source, "PNG") from None
    if array.dtype != (np.uint16 if depth == 16 else np.uint8):
        raise corrupt(source, "PNG")
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    channels, mode = {
        0: (("L",), "L"),
        4: (("L", "A"), "LA"),
        2: (("R", "G", "B"), "RGB"),
        6: (("R", "G", "B", "A"), "RGBA"),
    }[colour]
    if depth == 16:
        mode = "I;16" if colour == 0 else f"{mode};16"
    if array.shape != (height, width, len(channels)):
        raise corrupt(source, "PNG")

    orientation = None
    for ctype, payload in png_chunks(data):
        if ctype == b"tRNS":
            notes.append("tRNS colour-key transparency ignored (16-bit PNG)")
        elif ctype == b"iCCP" and not _icc_is_srgb(png_iccp_profile(bytes(payload))):
            notes.append(_ICC_NOTE)
        elif ctype == b"eXIf":
            orientation = _exif_orientation_from_bytes(bytes(payload))
    del data
    return _apply_orientation(array, orientation, notes), channels, mode


_ICC_NOTE = "non-sRGB ICC colour profile ignored (values used as stored)"


def _icc_is_srgb(profile: bytes) -> bool:
    """Heuristic: an sRGB profile names itself in its description tag."""
    return b"sRGB" in profile


def _exif_orientation_from_bytes(payload: bytes) -> int | None:
    try:
        exif = pil().Exif()
        exif.load(payload)
        return exif.get(0x0112)
    except Exception:
        return None


def _apply_orientation(array: np.ndarray, orientation: Any, notes: list[str]) -> np.ndarray:
    try:
        value = int(orientation) if orientation is not None else 1
    except (TypeError, ValueError):
        return array
    if value not in _ORIENTATIONS:
        return array
    description, transform = _ORIENTATIONS[value]
    notes.append(f"EXIF orientation applied ({description})")
    return np.ascontiguousarray(transform(array))


# ---- Pillow (PNG <= 8 bit, JPEG, BMP, WebP, GIF, fallback TIFF) --------------------------------


def _decode_pillow(blob: _Blob, source: str, fmt: str, max_pixels: int | None, notes: list[str]):
    # poolcli's own max_pixels check (below, before load) replaces Pillow's guard. Assigning the
    # same value from every thread is race-free.
    PILImage = pil()
    PILImage.MAX_IMAGE_PIXELS = None
    stream = io.BytesIO(blob.take())  # the only reference to the file's bytes
    try:
        im = PILImage.open(stream, formats=[fmt])
    except Exception:  # UnidentifiedImageError, DecompressionBombError, struct/zlib errors, ...
        raise corrupt(source, fmt) from None
    with im:
        width, height = im.size
        _check_pixels(source, width, height, max_pixels)
        try:  # counted before loading: counting seeks through the file and back to frame 0
            frames = int(getattr(im, "n_frames", 1))
        except Exception:
            frames = 1
            try:
                im.seek(0)
            except Exception:
                pass
        try:
            im.load()
        except MemoryError:
            raise _no_memory(source, width, height) from None
        except Exception:
            raise corrupt(source, fmt) from None
        try:
            orientation = im.getexif().get(0x0112)
        except Exception:
            orientation = None
        icc = im.info.get("icc_profile")
        if icc and not _icc_is_srgb(icc):
            notes.append(_ICC_NOTE)
        stream.close()  # frees the file's bytes: only the decoded pixels are needed now
        try:
            array, channels, mode = _pillow_to_array(im, source, notes)
        except MemoryError:
            raise _no_memory(source, width, height) from None
    if frames > 1:
        what = "page" if fmt == "TIFF" else "frame"
        kind = "multi-page TIFF" if fmt == "TIFF" else f"animated {fmt}"
        notes.append(f"first {what} of {frames} ({kind})")
    return _apply_orientation(array, orientation, notes), channels, mode


# Bytes of one strip when a Pillow image is copied into numpy (see _pil_array).
_STRIP_BYTES = 4 << 20


def _pil_array(im: PILImage.Image, convert: str | None = None) -> np.ndarray:
    """``np.asarray(im.convert(convert) if convert else im)``, one strip of rows at a time.

    ``np.asarray`` on a whole Pillow image goes through ``Image.tobytes``, which holds the raw
    pixels twice (a list of chunks, then their join) beside Pillow's own copy: four image-sized
    buffers at the peak, and ``convert`` adds a whole converted image. Strip by strip, the peak
    is Pillow's image plus the result array (and one small strip).
    """
    width, height = im.size
    first = im.crop((0, 0, width, min(height, 1)))
    first = np.asarray(first.convert(convert) if convert else first)
    row_bytes = max(1, first.nbytes)
    if height * row_bytes <= _STRIP_BYTES:
        return np.asarray(im.convert(convert) if convert else im)
    out = np.empty((height,) + first.shape[1:], dtype=first.dtype)
    rows = max(1, _STRIP_BYTES // row_bytes)
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        strip = im.crop((0, y0, width, y1))
        out[y0:y1] = np.asarray(strip.convert(convert) if convert else strip)
    return out


def _pillow_to_array(im: PILImage.Image, source: str, notes: list[str]):
    """Convert a loaded Pillow image to ``(array (H, W, C), channel names, mode)``."""
    mode = im.mode
    has_key = "transparency" in im.info
    if mode == "1":
        notes.append("1-bit image expanded to 0/255 uint8")
        return _hwc(_pil_array(im, "L")), ("L",), "1"
    if mode == "L" and has_key:
        notes.append("colour-key transparency converted to alpha")
        return _pil_array(im, "RGBA")[:, :, [0, 3]], ("L", "A"), "LA"
    if mode == "RGB" and has_key:
        notes.append("colour-key transparency converted to alpha")
        return _pil_array(im, "RGBA"), ("R", "G", "B", "A"), "RGBA"
    if mode in ("P", "PA"):
        if mode == "PA" or im.has_transparency_data:
            notes.append("palette expanded to RGBA, transparency kept")
            return _pil_array(im, "RGBA"), ("R", "G", "B", "A"), "RGBA"
        notes.append("palette expanded to RGB")
        return _pil_array(im, "RGB"), ("R", "G", "B"), "RGB"
    if mode == "L":
        return _hwc(_pil_array(im)), ("L",), "L"
    if mode == "LA":
        return _pil_array(im), ("L", "A"), "LA"
    if mode == "RGB":
        return _pil_array(im), ("R", "G", "B"), "RGB"
    if mode == "RGBA":
        return _pil_array(im), ("R", "G", "B", "A"), "RGBA"
    if mode in ("La", "RGBa"):
        target = "LA" if mode == "La" else "RGBA"
        notes.append(f"premultiplied alpha ({mode}) converted to {target}")
        return _pil_array(im, target), tuple(target), target
    if mode == "RGBX":
        return _pil_array(im, "RGB"), ("R", "G", "B"), "RGB"
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        notes.append(f"{mode} converted to RGB (no colour management)")
        return _pil_array(im, "RGB"), ("R", "G", "B"), "RGB"
    if mode.startswith("I;16"):
        return _hwc(_pil_array(im).astype(np.uint16)), ("L",), "I;16"
    if mode == "I":
        return _hwc(_pil_array(im).astype(np.int32)), ("L",), "I"
    if mode == "F":
        return _hwc(_pil_array(im).astype(np.float32)), ("L",), "F"
    raise ImageReadError(f"{source}: unsupported image mode {mode!r}")


def _hwc(array: np.ndarray) -> np.ndarray:
    return array[:, :, np.newaxis] if array.ndim == 2 else array


# ---- TIFF --------------------------------------------------------------------------------------


def _decode_tiff(blob: _Blob, source: str, max_pixels: int | None, notes: list[str]):
    import tifffile

    data = blob.take()
    try:
        tif = tifffile.TiffFile(io.BytesIO(data))
    except Exception:
        raise corrupt(source, "TIFF") from None
    with tif:
        try:
            pages = len(tif.pages)
            page = tif.pages[0]
            width, height = int(page.imagewidth), int(page.imagelength)
            photometric = int(page.photometric)
        except Exception:
            raise corrupt(source, "TIFF") from None
        _check_pixels(source, width, height, max_pixels)
        rgb_like = (
            tifffile.PHOTOMETRIC.MINISBLACK,
            tifffile.PHOTOMETRIC.MINISWHITE,
            tifffile.PHOTOMETRIC.RGB,
            tifffile.PHOTOMETRIC.PALETTE,
        )
        if photometric not in rgb_like:
            # CMYK (SEPARATED), uncompressed YCbCr, CIELAB, ...: let Pillow convert to RGB.
            return _decode_pillow(_Blob(data), source, "TIFF", max_pixels, notes)
        try:
            array = page.asarray()
            axes = page.axes
            extrasamples = tuple(int(e) for e in page.extrasamples)
            colormap = page.colormap
            bits = int(page.bitspersample)
            orientation_tag = page.tags.get(274)
            orientation = orientation_tag.value if orientation_tag is not None else None
        except MemoryError:
            raise _no_memory(source, width, height) from None
        except Exception:
            raise corrupt(source, "TIFF") from None
    del data, tif  # the file's bytes are no longer needed

    if axes == "YX":
        array = array[:, :, np.newaxis]
    elif axes == "SYX":
        array = np.moveaxis(array, 0, -1)
    elif axes != "YXS":
        raise ImageReadError(f"{source}: unsupported TIFF layout (axes {axes!r} in the first page)")
    if array.dtype.kind == "c":
        raise ImageReadError(f"{source}: complex-valued TIFF is not supported")
    if array.dtype.kind not in "biuf":
        raise ImageReadError(f"{source}: unsupported TIFF sample type {array.dtype}")

    channels = _tiff_channel_names(photometric, array.shape[2], extrasamples)
    if array.dtype == np.bool_:
        notes.append("1-bit image expanded to 0/255 uint8")
        array = array.astype(np.uint8) * np.uint8(255)
        bits = 8
    if photometric == tifffile.PHOTOMETRIC.MINISWHITE:
        if array.dtype.kind == "u":
            top = (1 << bits) - 1 if bits < array.dtype.itemsize * 8 else np.iinfo(array.dtype).max
            array = (np.asarray(top, array.dtype) - array).astype(array.dtype)
            notes.append("min-is-white TIFF inverted to min-is-black")
        else:
            notes.append("min-is-white TIFF kept as stored (not inverted)")
    if photometric == tifffile.PHOTOMETRIC.PALETTE:
        array, channels = _expand_tiff_palette(array, colormap, source)
        notes.append("palette expanded to RGB")
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))
    if pages > 1:
        notes.append(f"first page of {pages} (multi-page TIFF)")
    array = _apply_orientation(array, orientation, notes)
    return array, channels, _describe_mode(array.dtype, channels)


def _tiff_channel_names(
    photometric: int, count: int, extrasamples: tuple[int, ...]
) -> tuple[str, ...]:
    is_alpha = [e in (1, 2) for e in extrasamples]  # associated / unassociated alpha
    if photometric == 2 and count >= 3:  # RGB
        extra = range(count - 3)
        return ("R", "G", "B") + tuple(
            "A" if i < len(is_alpha) and is_alpha[i] else f"c{3 + i}" for i in extra
        )
    if count == 1:
        return ("L",)
    if count == 2 and is_alpha[:1] == [True]:
        return ("L", "A")
    return tuple(f"c{i}" for i in range(count))


def _expand_tiff_palette(array: np.ndarray, colormap: np.ndarray | None, source: str):
    if colormap is None or array.shape[2] != 1:
        raise corrupt(source, "TIFF")
    cmap = np.asarray(colormap)
    index = array[:, :, 0]
    if index.size and int(index.max()) >= cmap.shape[1]:
        raise corrupt(source, "TIFF")
    # TIFF colormaps are 16-bit. Writers scale 8-bit colours by 257 (libtiff) or 256 (Pillow);
    # either is returned as the exact 8-bit palette, anything else stays uint16.
    if cmap.dtype == np.uint16 and not np.any(cmap % 257):
        cmap = (cmap // 257).astype(np.uint8)
    elif cmap.dtype == np.uint16 and not np.any(cmap % 256):
        cmap = (cmap >> 8).astype(np.uint8)
    return np.moveaxis(cmap[:, index], 0, -1), ("R", "G", "B")


def _describe_mode(dtype: np.dtype, channels: tuple[str, ...]) -> str:
    names = "".join(channels) if all(len(c) == 1 for c in channels) else f"{len(channels)}ch"
    dtype = np.dtype(dtype)
    if names == "L":
        special = {"uint8": "L", "uint16": "I;16", "int32": "I", "float32": "F"}
        if dtype.name in special:
            return special[dtype.name]
    if dtype == np.uint8:
        return names
    if dtype == np.uint16:
        return f"{names};16"
    return f"{names};{dtype.name}"


# ---- NPY ---------------------------------------------------------------------------------------


def _decode_npy(blob: _Blob, source: str, max_pixels: int | None, notes: list[str]):
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
    _check_pixels(source, int(shape[1]), int(shape[0]), max_pixels)

    fh.seek(0)
    try:
        array = np.load(fh, allow_pickle=False)
    except MemoryError:
        raise _no_memory(source, int(shape[1]), int(shape[0])) from None
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
    array = _hwc(array)
    return array, tuple(f"c{i}" for i in range(array.shape[2])), mode


