"""TIFF decoded by tifffile: the first page, in its own dtype.

Private to :mod:`poolcli.imageio`. Before any pixel is decoded (by tifffile, or by Pillow for
the colour spaces tifffile leaves as stored) the first page is checked against the
decompression-bomb guard from what tifffile parsed: the decoded bytes of the page,
the bytes of one strip or tile (at most the image's own size, or 16 MiB), and for segments
compressed as images of their own (JPEG, PNG, WebP, JPEG 2000) the size each segment's stream
header claims, which must fit its strip or tile. Compressions whose streams cannot be bounded
that way (JPEG XL, JPEG XR, ...) are refused as unsupported while the guard is on.
"""

from __future__ import annotations

import io
from math import prod
from typing import Callable

import numpy as np

from poolcli.errors import ImageReadError
from poolcli.imageio._common import Blob, apply_orientation, corrupt, no_memory
from poolcli.imageio._guard import check_bytes, check_pixels, check_segment
from poolcli.imageio._headers import embedded_size

__all__ = ["decode_tiff"]

# Image compressions whose segment headers poolcli reads (JPEG, PNG, WebP, JPEG 2000); other
# image compressions decode to whatever size their streams claim, so they are refused while the
# guard is on (``read_image(..., max_pixels=None)`` decodes them).
_BOUNDED_STREAMS = frozenset({6, 7, 33007, 34892, 34933, 50001, 33003, 33004, 33005, 34712})


def decode_tiff(blob: Blob, source: str, max_pixels: int | None, notes: list[str],
                fallback: Callable[[Blob], tuple]):
    """``(array, channels, mode)`` of the first page; ``fallback`` decodes the colour spaces
    tifffile returns as stored (CMYK, YCbCr, CIELAB) with Pillow."""
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
        check_pixels(source, width, height, max_pixels)
        rgb_like = (
            tifffile.PHOTOMETRIC.MINISBLACK,
            tifffile.PHOTOMETRIC.MINISWHITE,
            tifffile.PHOTOMETRIC.RGB,
            tifffile.PHOTOMETRIC.PALETTE,
        )
        _check_guard(page, data, source, max_pixels)
        if photometric not in rgb_like:
            # CMYK (SEPARATED), uncompressed YCbCr, CIELAB, ...: let Pillow convert to RGB.
            return fallback(Blob(data))
        _check_supported(page, source)
        try:
            array = page.asarray()
            axes = page.axes
            extrasamples = tuple(int(e) for e in page.extrasamples)
            colormap = page.colormap
            bits = int(page.bitspersample)
            orientation_tag = page.tags.get(274)
            orientation = orientation_tag.value if orientation_tag is not None else None
        except MemoryError:
            raise no_memory(source, width, height) from None
        except Exception:
            raise corrupt(source, "TIFF") from None
    del data, tif  # the file's bytes are no longer needed
    return _to_image(array, axes, photometric, extrasamples, colormap, bits, orientation,
                     pages, source, notes)


def _check_supported(page, source: str) -> None:
    """Refuse a first page tifffile cannot decode (sample format, layout, codec, predictor)."""
    import tifffile

    if page.dtype is None:
        raise ImageReadError(
            f"{source}: unsupported TIFF sample format ({page.bitspersample}-bit, "
            f"SampleFormat {int(page.sampleformat)})")
    if page.axes not in ("YX", "YXS", "SYX"):
        raise ImageReadError(
            f"{source}: unsupported TIFF layout (axes {page.axes!r} in the first page)")
    compression = int(page.compression)
    if compression != 1 and compression not in tifffile.TIFF.DECOMPRESSORS:
        raise ImageReadError(f"{source}: unsupported TIFF compression ({_name(compression)})")
    predictor = int(page.predictor)
    if (predictor != 1 and predictor not in tifffile.TIFF.UNPREDICTORS
            and compression not in tifffile.TIFF.IMAGE_COMPRESSIONS):
        raise ImageReadError(f"{source}: unsupported TIFF predictor ({predictor})")


def _check_guard(page, data: bytes, source: str, max_pixels: int | None) -> None:
    """Refuse a first page whose decoding would balloon (by tifffile or by Pillow's libtiff,
    which allocates whole strips and tiles the same way): its decoded bytes, one strip or tile,
    and the streams inside image-compressed segments."""
    import tifffile

    if max_pixels is None:
        return
    width, height = int(page.imagewidth), int(page.imagelength)
    itemsize = page.dtype.itemsize if page.dtype is not None else max(
        1, (int(page.bitspersample) + 7) // 8)
    name = page.dtype.name if page.dtype is not None else ""
    channels = max(1, prod(page.shape) // max(1, width * height))
    check_bytes(source, width, height, channels, itemsize, name, max_pixels)
    kind = "tiles" if page.is_tiled else "strips"
    dims = (page.tilewidth, page.tilelength) if page.is_tiled else (width, page.rowsperstrip)
    image_bytes = prod(page.shaped) * itemsize
    check_segment(source, width, height, dims, kind, prod(page.chunks) * itemsize,
                  image_bytes, max_pixels)
    compression = int(page.compression)
    if compression in tifffile.TIFF.IMAGE_COMPRESSIONS:
        _check_streams(page, data, source, compression, dims, kind)


def _check_streams(page, data: bytes, source: str, compression: int,
                   dims: tuple[int, int], kind: str) -> None:
    """Each image-compressed segment must claim no more than its strip or tile."""
    if compression not in _BOUNDED_STREAMS:
        raise ImageReadError(
            f"{source}: unsupported TIFF compression ({_name(compression)}: the size of its "
            "streams cannot be checked before decoding)")
    view = memoryview(data)
    for offset, count in zip(page.dataoffsets, page.databytecounts):
        if not count or offset >= len(data):
            continue
        size = embedded_size(compression, bytes(view[offset:offset + min(count, 1 << 16)]))
        if size is None:
            raise corrupt(source, "TIFF")
        if size[0] > dims[0] or size[1] > dims[1]:
            raise ImageReadError(
                f"{source}: {page.imagewidth}x{page.imagelength} image in {dims[0]}x{dims[1]} "
                f"{kind} holding a {size[0]}x{size[1]} {_name(compression)} stream exceeds its "
                f"{kind[:-1]} (decompression-bomb guard)")


def _name(compression: int) -> str:
    import tifffile

    try:
        return tifffile.COMPRESSION(compression).name.replace("_", " ")
    except ValueError:
        return f"compression {compression}"


def _to_image(array, axes, photometric, extrasamples, colormap, bits, orientation, pages,
              source, notes):
    import tifffile

    if 0 in array.shape or array.ndim < 2:
        raise ImageReadError(f"{source}: image has no pixels (TIFF of size {array.shape})")
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
    array = apply_orientation(array, orientation, notes)
    return array, channels, describe_mode(array.dtype, channels)


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


def describe_mode(dtype: np.dtype, channels: tuple[str, ...]) -> str:
    """A Pillow-like mode name for an array's dtype and channels (``"RGB;16"``, ``"F"``, ...)."""
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
