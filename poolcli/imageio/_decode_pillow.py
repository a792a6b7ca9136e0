"""Images decoded by Pillow: PNG up to 8 bits that libpng does not take, JPEG, BMP, WebP, GIF,
and the TIFF colour spaces tifffile leaves as stored (CMYK, YCbCr, CIELAB).

Private to :mod:`poolcli.imageio`. Pillow's layouts hold at most 4 bytes a pixel, so an image
within ``--max-pixels`` is within the decoded-bytes limit too; the pixel count is checked after
Pillow has parsed the header and before it decodes.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from poolcli.errors import ImageReadError
from poolcli.imageio._common import (
    ICC_NOTE,
    Blob,
    apply_orientation,
    corrupt,
    hwc,
    icc_is_srgb,
    no_memory,
    pil,
)
from poolcli.imageio._guard import check_pixels
from poolcli.imageio._pngchunks import png_for_pillow

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["decode_pillow", "pil_array", "pillow_to_array"]

KEY_NOTE = "colour-key transparency converted to alpha"


def _png_bytes(data: bytes, notes: list[str]) -> tuple[bytes, bytes | None]:
    """The PNG without the text and ICC chunks Pillow would refuse (see ``png_for_pillow``)."""
    from PIL import PngImagePlugin

    data, icc, more = png_for_pillow(data, PngImagePlugin.MAX_TEXT_CHUNK)
    notes.extend(more)
    return data, icc


def decode_pillow(blob: Blob, source: str, fmt: str, max_pixels: int | None, notes: list[str],
                  strip_bytes: int):
    """``(array, channels, mode)`` of the first frame, decoded by Pillow."""
    # poolcli's own max_pixels check (below, before load) replaces Pillow's guard. Assigning the
    # same value from every thread is race-free.
    PILImage = pil()
    PILImage.MAX_IMAGE_PIXELS = None
    data = blob.take()
    icc = None
    if fmt == "PNG":
        data, icc = _png_bytes(data, notes)
    stream = io.BytesIO(data)  # the only reference to the file's bytes
    del data
    try:
        im = PILImage.open(stream, formats=[fmt])
    except Exception:  # UnidentifiedImageError, DecompressionBombError, struct/zlib errors, ...
        raise corrupt(source, fmt) from None
    with im:
        width, height = im.size
        check_pixels(source, width, height, max_pixels)
        frames = _frame_count(im)
        try:
            im.load()
        except MemoryError:
            raise no_memory(source, width, height) from None
        except Exception:
            raise corrupt(source, fmt) from None
        try:
            orientation = im.getexif().get(0x0112)
        except Exception:
            orientation = None
        icc = icc if fmt == "PNG" else im.info.get("icc_profile")
        if icc and not icc_is_srgb(icc):
            notes.append(ICC_NOTE)
        stream.close()  # frees the file's bytes: only the decoded pixels are needed now
        try:
            array, channels, mode = pillow_to_array(im, source, notes, strip_bytes)
        except MemoryError:
            raise no_memory(source, width, height) from None
    if frames > 1:
        what = "page" if fmt == "TIFF" else "frame"
        kind = "multi-page TIFF" if fmt == "TIFF" else f"animated {fmt}"
        notes.append(f"first {what} of {frames} ({kind})")
    return apply_orientation(array, orientation, notes), channels, mode


def _frame_count(im) -> int:
    """Frames of an animation or pages of a TIFF, counted before loading (counting seeks
    through the file and back to frame 0)."""
    try:
        return int(getattr(im, "n_frames", 1))
    except Exception:
        try:
            im.seek(0)
        except Exception:
            pass
        return 1


def pil_array(im: PILImage.Image, strip_bytes: int, convert: str | None = None) -> np.ndarray:
    """``np.asarray(im.convert(convert) if convert else im)``, one strip of rows at a time.

    ``np.asarray`` on a whole Pillow image goes through ``Image.tobytes``, which holds the raw
    pixels twice (a list of chunks, then their join) beside Pillow's own copy: four image-sized
    buffers at the peak, and ``convert`` adds a whole converted image. Strip by strip, the peak
    is Pillow's image plus the result array (and one strip of ``strip_bytes``).
    """
    width, height = im.size
    first = im.crop((0, 0, width, min(height, 1)))
    first = np.asarray(first.convert(convert) if convert else first)
    row_bytes = max(1, first.nbytes)
    if height * row_bytes <= strip_bytes:
        return np.asarray(im.convert(convert) if convert else im)
    out = np.empty((height,) + first.shape[1:], dtype=first.dtype)
    rows = max(1, strip_bytes // row_bytes)
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        strip = im.crop((0, y0, width, y1))
        out[y0:y1] = np.asarray(strip.convert(convert) if convert else strip)
    return out


def _keyed(im: PILImage.Image, strip_bytes: int, notes: list[str]):
    """A grey or RGB image with a colour key (``transparency``) with the key as alpha."""
    notes.append(KEY_NOTE)
    if im.mode == "RGB":
        return pil_array(im, strip_bytes, "RGBA"), ("R", "G", "B", "A"), "RGBA"
    if im.mode == "1":
        im = im.convert("L")
    return pil_array(im, strip_bytes, "RGBA")[:, :, [0, 3]], ("L", "A"), "LA"


_SIMPLE = {"L": ("L",), "LA": ("L", "A"), "RGB": ("R", "G", "B"), "RGBA": ("R", "G", "B", "A")}


def pillow_to_array(im: PILImage.Image, source: str, notes: list[str], strip_bytes: int):
    """Convert a loaded Pillow image to ``(array (H, W, C), channel names, mode)``."""
    mode = im.mode
    if mode in ("1", "L", "RGB") and "transparency" in im.info:
        return _keyed(im, strip_bytes, notes)
    if mode == "1":
        notes.append("1-bit image expanded to 0/255 uint8")
        return hwc(pil_array(im, strip_bytes, "L")), ("L",), "1"
    if mode in ("P", "PA"):
        try:
            keyed = mode == "PA" or im.has_transparency_data
        except AssertionError:  # Pillow asserts a palette: a PNG without its PLTE chunk
            raise ImageReadError(f"{source}: corrupt palette image (no palette)") from None
        if keyed:
            notes.append("palette expanded to RGBA, transparency kept")
            return pil_array(im, strip_bytes, "RGBA"), ("R", "G", "B", "A"), "RGBA"
        notes.append("palette expanded to RGB")
        return pil_array(im, strip_bytes, "RGB"), ("R", "G", "B"), "RGB"
    if mode in _SIMPLE:
        return hwc(pil_array(im, strip_bytes)), _SIMPLE[mode], mode
    if mode in ("La", "RGBa"):
        target = "LA" if mode == "La" else "RGBA"
        notes.append(f"premultiplied alpha ({mode}) converted to {target}")
        return pil_array(im, strip_bytes, target), tuple(target), target
    if mode == "RGBX":
        return pil_array(im, strip_bytes, "RGB"), ("R", "G", "B"), "RGB"
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        notes.append(f"{mode} converted to RGB (no colour management)")
        return pil_array(im, strip_bytes, "RGB"), ("R", "G", "B"), "RGB"
    if mode.startswith("I;16"):
        return hwc(pil_array(im, strip_bytes).astype(np.uint16)), ("L",), "I;16"
    if mode == "I":
        return hwc(pil_array(im, strip_bytes).astype(np.int32)), ("L",), "I"
    if mode == "F":
        return hwc(pil_array(im, strip_bytes).astype(np.float32)), ("L",), "F"
    raise ImageReadError(f"{source}: unsupported image mode {mode!r}")
