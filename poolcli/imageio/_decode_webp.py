"""WebP decoded by libwebp (``imagecodecs.webp_decode``) straight into numpy.

Private to :mod:`poolcli.imageio`. Pillow's WebP path holds the image four times over (libwebp's
canvas, the bytes it hands back, Pillow's image, the array): a 13000 x 13000 RGBA WebP peaked at
2.6 GB for 676 MB of pixels. libwebp writes into the result array itself: 0.77 GB. The pixels are
the same as Pillow's (both use libwebp's default decoder; tests compare them); an animation gives
its first frame, composed on its canvas as Pillow does.
"""

from __future__ import annotations

import struct

import numpy as np

from poolcli.imageio._common import (
    ICC_NOTE,
    Blob,
    apply_orientation,
    corrupt,
    exif_orientation_from_bytes,
    icc_is_srgb,
    no_memory,
)
from poolcli.imageio._guard import check_pixels
from poolcli.imageio._headers import bytes_reader, webp_header

__all__ = ["decode_webp"]


def _chunks(data: bytes):
    """``(fourcc, payload)`` of each chunk of a RIFF WEBP file (complete chunks only)."""
    view = memoryview(data)
    pos, end = 12, min(len(data), 8 + struct.unpack("<I", data[4:8])[0])
    while pos + 8 <= end:
        fourcc = bytes(view[pos:pos + 4])
        size = struct.unpack("<I", view[pos + 4:pos + 8])[0]
        if pos + 8 + size > end:
            return
        yield fourcc, view[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)


def decode_webp(blob: Blob, source: str, max_pixels: int | None, notes: list[str]):
    """``(array, channels, mode)``: ``RGB``, or ``RGBA`` when the file has alpha."""
    import imagecodecs

    data = blob.take()
    header = webp_header(bytes_reader(data))
    if header is None:
        raise corrupt(source, "WEBP")
    check_pixels(source, header.width, header.height, max_pixels)  # 4 bytes a pixel at most
    try:
        array = imagecodecs.webp_decode(data)
    except MemoryError:
        raise no_memory(source, header.width, header.height) from None
    except Exception:
        raise corrupt(source, "WEBP") from None
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
        raise corrupt(source, "WEBP")
    frames, orientation = 0, None
    for fourcc, payload in _chunks(data):
        if fourcc == b"ANMF":
            frames += 1
        elif fourcc == b"EXIF":
            orientation = exif_orientation_from_bytes(bytes(payload))
        elif fourcc == b"ICCP" and not icc_is_srgb(bytes(payload)):
            notes.append(ICC_NOTE)
    del data
    if frames > 1:
        notes.append(f"first frame of {frames} (animated WEBP)")
    channels = ("R", "G", "B", "A")[: array.shape[2]]
    return apply_orientation(array, orientation, notes), channels, "".join(channels)
