"""Image encoding: :func:`write_image` and the encoders behind it.

:func:`write_image` picks the format from the suffix (or ``format=``), checks that the array can
be stored exactly (``ValueError`` if not: map floats with :func:`~poolcli.imageio.to_display` /
:func:`~poolcli.imageio.fit_to_dtype`, or write ``.npy``/``.tiff``), then writes atomically
through :func:`poolcli.imageio.files.atomic_write`. :func:`~poolcli.imageio.output_dtype_for`
tells the caller which dtype a format will hold. Pillow and tifffile are imported only by the
encoder that needs them. ``provenance=`` records in the file's own metadata that poolcli wrote it
(:mod:`poolcli.imageio.provenance` says where, per format, and reads it back).
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np

from poolcli.errors import ImageWriteError
from poolcli.formats import FORMAT_ALIASES, FORMATS, SUFFIX_FORMAT, SUFFIX_HINT
from poolcli.imageio._common import is_stdio, pil
from poolcli.imageio.files import atomic_write, os_problem
from poolcli.imageio.provenance import Provenance, prepare_provenance
from poolcli.imageio.store import is_url

__all__ = ["DEFAULT_JPEG_QUALITY", "DEFAULT_PNG_COMPRESS_LEVEL", "write_image"]

#: Deflate level for PNG (libdeflate, :mod:`poolcli.imageio.png`) and deflate TIFF (zlib) output.
#: ``benchmarks/bench_png.py`` on the 2-core development machine (median of 3; sizes exact):
#:
#:   image                     level 0     level 1 (default)   level 6            level 9
#:   astronaut 512x512 RGB     3 ms 769K   17 ms 433K          31 ms 434K         51 ms 433K
#:   coffee 600x400 RGB        1 ms 704K   17 ms 446K          30 ms 442K         41 ms 441K
#:   camera 512x512 grey       0 ms 257K    3 ms 145K           8 ms 142K         31 ms 141K
#:   astronaut 2x nearest      11 ms 3073K  34 ms 668K          64 ms 650K        200 ms 634K
#:   Pillow (zlib), same images: level 1 36/38/13/61 ms, 456/472/155/649K; level 6 113/104/41/253
#:   ms, 415/439/139/578K.
#:
#: Level 1 is the knee: levels above it save 0-2% on photographs (5% on an enlargement) at
#: 2-6x the time, and level 1 is already 5% smaller than Pillow's level 1 at under half its time.
#: Pillow's level 6 is 2-13% smaller still (zlib's lazy matching) at 3-4x Pillow's level-1 time;
#: ``--compress-level 9`` is there for who needs the bytes more than the time.
DEFAULT_PNG_COMPRESS_LEVEL = 1

#: JPEG/WebP quality when ``quality`` is not given.
DEFAULT_JPEG_QUALITY = 90


def write_image(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    channels: tuple[str, ...] | None = None,
    compress_level: int | None = None,
    quality: int | None = None,
    overwrite: bool = False,
    format: str | None = None,
    on_commit: Callable[[str], None] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> None:
    """Encode ``array`` and write it to ``path`` atomically.

    Parameters
    ----------
    path : str or path-like
        Output file; its suffix selects the format (see :data:`SUPPORTED_SUFFIXES`). ``"-"`` writes
        to standard output and then needs ``format``. A URL (``s3://bucket/out.png``) is encoded
        in memory and stored in one request (:func:`poolcli.imageio.store.write_bytes`).
    array : ndarray, shape (H, W) or (H, W, C)
        Pixels, channels last. Non-contiguous views are fine.
    channels : tuple of str, optional
        Channel names (as in :attr:`Image.channels`). Default by count: 1 ``L``, 2 ``LA``,
        3 ``RGB``, 4 ``RGBA``, otherwise ``c0, c1, ...``. Used for TIFF photometric/alpha tags.
    compress_level : int, optional
        Deflate level 0-9 for PNG (libdeflate) and TIFF (zlib); default
        :data:`DEFAULT_PNG_COMPRESS_LEVEL`.
    quality : int, optional
        JPEG/WebP quality 1-100 (default :data:`DEFAULT_JPEG_QUALITY`).
    overwrite : bool, optional
        Replace an existing file. Without it an existing target is an error.
    format : str, optional
        Format name overriding the suffix (``"PNG"``, ``"JPEG"``, ``"TIFF"``, ``"BMP"``, ``"WEBP"``,
        ``"GIF"``, ``"NPY"``).
    on_commit : callable, optional
        Called with the path once the file is complete and renamed into place (see
        :func:`poolcli.imageio.files.atomic_write`).
    provenance : mapping, optional
        What made this image (``{"command": "pool", "op": "max", "params": {...}, "source":
        "photo.png"}``), stored as compact JSON in the format's metadata with ``"software":
        "poolcli <version>"`` first, so :func:`poolcli.imageio.provenance.read_provenance`
        recognises the file. PNG: ``Software`` and ``poolcli`` text chunks before the image
        data; TIFF: ``Software`` and ``ImageDescription`` tags; JPEG: a COM marker; WebP: XMP;
        GIF: a comment extension. BMP and ``.npy`` have nowhere to keep it: it is checked and
        then not stored. ``ValueError`` if it is not JSON-serialisable or over
        :data:`~poolcli.imageio.provenance.MAX_PROVENANCE_BYTES`. The pixels are the same
        with or without it.

    Notes
    -----
    What each format stores (anything else raises ``ValueError`` before a file is touched):

    - PNG: ``uint8`` or ``uint16``, 1 (L / I;16), 2 (LA), 3 (RGB) or 4 (RGBA) channels, written
      by :func:`poolcli.imageio.png.write_png` (rows filtered by numpy, libdeflate): 2-4x faster
      than Pillow's zlib encoder at level 1 and 3-7% smaller on photographs, 16-bit colour
      included.
    - JPEG: ``uint8``, 1 or 3 channels (no alpha: ``ImageWriteError``); lossy, ``quality``;
      no chroma subsampling (4:4:4).
    - WebP: ``uint8``, 1, 3 or 4 channels; lossy, ``quality``; grey is stored as RGB.
    - GIF: ``uint8``, 1 or 3 channels; RGB is quantised to 256 colours (lossy).
    - BMP: ``uint8``, 1 or 3 channels (Pillow's 32-bit BMP loses alpha).
    - TIFF (tifffile, deflate): any integer or float dtype, any channel count, written exactly
      (NaN and inf included).
    - NPY: the exact array (``np.save``, no pickles), in the shape given.

    The data goes to a hidden temporary file ``.<name>.<random>.part`` in the target directory,
    which is renamed onto ``path`` only when complete (``os.link`` when not overwriting, so an
    existing file is never clobbered by a race). On any failure the temporary file is removed.

    Raises
    ------
    ValueError
        The array's dtype or shape cannot be stored in the format, the format is unknown, or an
        option is out of range.
    ImageWriteError
        The file cannot be written: exists (without ``overwrite``), directory missing or read-only,
        disk full, alpha in a format without alpha, ...
    """
    to_stdout = is_stdio(path)
    target = "<stdout>" if to_stdout else os.fspath(path)
    fmt = _output_format(target, format, to_stdout)
    original = np.asarray(array)
    hwc = _as_hwc(original)
    names = _channel_names(channels, hwc.shape[2])
    level = DEFAULT_PNG_COMPRESS_LEVEL if compress_level is None else compress_level
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level <= 9:
        raise ValueError(f"compress_level must be an integer 0-9, got {compress_level!r}")
    qual = DEFAULT_JPEG_QUALITY if quality is None else quality
    if isinstance(qual, bool) or not isinstance(qual, (int, np.integer)) or not 1 <= qual <= 100:
        raise ValueError(f"quality must be an integer 1-100, got {quality!r}")
    _check_storable(target, fmt, hwc)
    stamp = None if provenance is None else prepare_provenance(provenance)

    def encode(fh: BinaryIO) -> None:
        _encode(fh, fmt, hwc, original, names, int(level), int(qual), stamp)

    if to_stdout:
        buffer = io.BytesIO()
        encode(buffer)
        try:
            sys.stdout.buffer.write(buffer.getvalue())
            sys.stdout.buffer.flush()
        except OSError as exc:
            raise ImageWriteError(f"<stdout>: {os_problem(exc, 'cannot write')}") from None
        return
    if is_url(target):
        _write_url(target, encode, overwrite, on_commit)
        return
    atomic_write(target, encode, overwrite, on_commit)


def _write_url(target: str, encode: Callable[[BinaryIO], None], overwrite: bool,
               on_commit: Callable[[str], None] | None) -> None:
    """Encode into memory, then store the whole object in one request: a store never holds a
    partial object (:func:`poolcli.imageio.store.write_bytes`)."""
    from poolcli.imageio.store import write_bytes

    buffer = io.BytesIO()
    try:
        encode(buffer)
    except MemoryError:
        raise ImageWriteError(f"{target}: not enough memory to encode the image") from None
    except Exception as exc:
        raise ImageWriteError(f"{target}: encoding failed ({type(exc).__name__}: {exc})") \
            from exc
    data = buffer.getvalue()
    del buffer
    write_bytes(target, data, overwrite=overwrite, on_commit=on_commit)


def _output_format(target: str, format: str | None, to_stdout: bool) -> str:
    if format is not None:
        fmt = FORMAT_ALIASES.get(format.upper(), format.upper())
        if fmt not in FORMATS:
            known = ", ".join(FORMATS)
            raise ValueError(f"unknown output format {format!r} (known: {known})")
        return fmt
    if to_stdout:
        raise ValueError("writing to standard output needs an explicit format")
    suffix = Path(target).suffix.lower()
    if suffix not in SUFFIX_FORMAT:
        shown = suffix or "(none)"
        raise ValueError(f"{target}: unsupported output suffix {shown} ({SUFFIX_HINT})")
    return SUFFIX_FORMAT[suffix]


def _as_hwc(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim != 3:
        raise ValueError(f"image array must be (H, W) or (H, W, C), got shape {array.shape}")
    if 0 in array.shape:
        raise ValueError(f"image array is empty (shape {array.shape})")
    return array  # any strides: the PNG writer copies strips itself, others use _contiguous


def _contiguous(array: np.ndarray) -> np.ndarray:
    """``array`` with C-order strides, copied only if needed (Pillow and tifffile want that).

    numpy calls an array with length-1 axes contiguous whatever their strides (a (1, 1, 3)
    global pooling result can keep strides (6, 2, 2)), so the strides are checked too.
    """
    array = np.ascontiguousarray(array)
    canonical = tuple(int(np.prod(array.shape[i + 1 :])) * array.itemsize
                      for i in range(array.ndim))
    return array if array.strides == canonical else array.copy()


def _channel_names(channels: tuple[str, ...] | None, count: int) -> tuple[str, ...]:
    if channels is None:
        defaults = {1: ("L",), 2: ("L", "A"), 3: ("R", "G", "B"), 4: ("R", "G", "B", "A")}
        return defaults.get(count, tuple(f"c{i}" for i in range(count)))
    names = tuple(channels)
    if len(names) != count:
        raise ValueError(f"{len(names)} channel names given for an array with {count} channels")
    return names


# Channel counts Pillow writes and reads back. BMP: Pillow writes RGBA as 32-bit BI_RGB, which it
# (like most readers) reads back as RGB, so alpha would be lost silently.
# GIF keeps alpha as its one transparent palette entry (alpha 0; other alpha is opaque), BMP as
# a 32-bit BGRA bitmap with an alpha mask (written here: Pillow drops a BMP's alpha).
_PILLOW_WRITE = {"JPEG": (1, 3), "WEBP": (1, 3, 4), "GIF": (1, 3, 4), "BMP": (1, 3, 4)}


def _check_storable(target: str, fmt: str, hwc: np.ndarray) -> None:
    """Raise ValueError/ImageWriteError if ``fmt`` cannot hold the array exactly."""
    dtype, count = hwc.dtype, hwc.shape[2]
    hint = "map it with to_display()/fit_to_dtype() or write .npy/.tiff to keep the values"
    if fmt == "NPY":
        if dtype.hasobject or dtype.names is not None or dtype.kind not in "biufc":
            raise ValueError(f"cannot write dtype {dtype} to .npy (numeric arrays only)")
        return
    if fmt == "TIFF":
        if dtype.kind not in "biuf":
            raise ValueError(f"TIFF output supports integer and float arrays, not {dtype}")
        return
    if fmt == "PNG":
        if dtype not in (np.uint8, np.uint16):
            raise ValueError(f"PNG stores uint8 or uint16, not {dtype}; {hint}")
        if count > 4:
            raise ValueError(f"PNG stores 1-4 channels, not {count}; write .tiff or .npy")
        return
    allowed = _PILLOW_WRITE[fmt]
    if dtype != np.uint8:
        raise ValueError(f"{fmt} stores uint8 only, not {dtype}; {hint}")
    if count in (2, 4) and count not in allowed:
        raise ImageWriteError(f"{target}: {fmt} has no alpha channel; write .png to keep alpha")
    if count not in allowed:
        counts = ", ".join(str(c) for c in allowed)
        raise ValueError(f"{fmt} stores {counts} channels, not {count}; write .tiff or .npy")


def _encode(
    fh: BinaryIO,
    fmt: str,
    hwc: np.ndarray,
    original: np.ndarray,
    names: tuple[str, ...],
    level: int,
    quality: int,
    stamp: Provenance | None,
) -> None:
    count = hwc.shape[2]
    if fmt == "NPY":
        np.save(fh, original, allow_pickle=False)  # no metadata: provenance is not stored
        return
    if fmt == "PNG":
        from poolcli.imageio.png import write_png

        chunks = stamp.png_chunks() if stamp else []
        write_png(fh, hwc, level, chunks)  # reads any strides, a strip at a time
        return
    hwc = _contiguous(hwc)
    if fmt == "TIFF":
        _encode_tiff(fh, hwc, names, level, stamp)
    elif fmt == "BMP" and count == 4:
        _encode_bmp_bgra(fh, hwc)
    else:
        im = pil().fromarray(hwc[:, :, 0] if count == 1 else hwc)
        options: dict[str, Any] = {}
        if stamp and fmt in ("JPEG", "GIF"):
            options["comment"] = stamp.comment()
        elif stamp and fmt == "WEBP":
            options["xmp"] = stamp.xmp()
        if fmt == "JPEG":
            # 4:4:4 (no chroma subsampling): colour edges of pooled blocks stay sharp.
            im.save(fh, format="JPEG", quality=quality, subsampling=0, **options)
        elif fmt == "WEBP":
            im.save(fh, format="WEBP", quality=quality, **options)
        else:
            im.save(fh, format=fmt, **options)  # BMP: no metadata, options is empty


def _encode_bmp_bgra(fh: BinaryIO, rgba: np.ndarray) -> None:
    """A 32-bit BMP with alpha: BITMAPV4HEADER, BI_BITFIELDS masks B, G, R, A, rows top-down
    (negative height), as Windows, browsers and Pillow's reader understand it."""
    import struct

    h, w, _ = rgba.shape
    pixels = np.ascontiguousarray(rgba[:, :, [2, 1, 0, 3]]).tobytes()
    header = struct.pack("<IiiHHIIiiII", 108, w, -h, 1, 32, 3, len(pixels), 2835, 2835, 0, 0)
    masks = struct.pack("<IIII", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000)
    v4 = header + masks + struct.pack("<I", 0x73524742) + bytes(36 + 12)  # 'sRGB'
    offset = 14 + len(v4)
    fh.write(b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset))
    fh.write(v4)
    fh.write(pixels)


def _encode_tiff(
    fh: BinaryIO, hwc: np.ndarray, names: tuple[str, ...], level: int, stamp: Provenance | None
) -> None:
    import tifffile

    count = hwc.shape[2]
    options: dict[str, Any] = {}
    if stamp:  # ours instead of tifffile's shape JSON and "tifffile.py"
        options.update(description=stamp.tiff_description(), metadata=None,
                       software=stamp.software)
    if level > 0:
        options.update(compression="zlib", compressionargs={"level": level})
    if count == 1:
        tifffile.imwrite(fh, hwc[:, :, 0], photometric="minisblack", **options)
        return
    if count >= 3 and names[:3] == ("R", "G", "B"):
        photometric, extras = "rgb", names[3:]
    else:
        photometric, extras = "minisblack", names[1:]
    extrasamples = ["unassalpha" if name == "A" else "unspecified" for name in extras]
    tifffile.imwrite(
        fh,
        hwc,
        photometric=photometric,
        planarconfig="contig",
        extrasamples=extrasamples,
        **options,
    )

