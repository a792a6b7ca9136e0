"""PNG decoded by libpng (``imagecodecs.png_decode``) straight into numpy.

Private to :mod:`poolcli.imageio` (see :func:`poolcli.imageio._pngchunks.png_direct` for which
PNGs come here: every 16-bit one, and plain 8-bit grey, LA, RGB and RGBA).
"""

from __future__ import annotations

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
from poolcli.imageio._guard import check_bytes, check_pixels
from poolcli.imageio._pngchunks import png_chunks, png_iccp_profile, png_ihdr

__all__ = ["decode_png_direct"]

_LAYOUTS = {
    0: (("L",), "L"),
    4: (("L", "A"), "LA"),
    2: (("R", "G", "B"), "RGB"),
    6: (("R", "G", "B", "A"), "RGBA"),
}
KEY_NOTE = "colour-key transparency converted to alpha"


def decode_png_direct(blob: Blob, source: str, max_pixels: int | None, notes: list[str]):
    """``(array, channels, mode)`` of a PNG decoded by libpng.

    A ``tRNS`` colour key on a grey or RGB image becomes an alpha channel, as libpng's
    ``png_set_tRNS_to_alpha`` gives it: 0 where the pixel equals the key, the maximum elsewhere
    (``LA;16`` / ``RGBA;16`` for 16-bit images, noted).
    """
    import imagecodecs

    data = blob.take()
    width, height, depth, colour = png_ihdr(data, source)
    if colour not in _LAYOUTS:
        raise corrupt(source, "PNG")
    keyed = colour in (0, 2) and any(ctype == b"tRNS" for ctype, _ in png_chunks(data))
    channels, mode = _LAYOUTS[colour + 4 if keyed else colour]
    check_pixels(source, width, height, max_pixels)
    dtype = np.dtype(np.uint16 if depth == 16 else np.uint8)
    check_bytes(source, width, height, len(channels), dtype.itemsize, dtype.name, max_pixels)
    try:
        array = imagecodecs.png_decode(data)
    except MemoryError:
        raise no_memory(source, width, height) from None
    except Exception:
        raise corrupt(source, "PNG") from None
    if array.dtype != dtype:
        raise corrupt(source, "PNG")
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if depth == 16:
        mode = "I;16" if mode == "L" else f"{mode};16"
    if array.shape != (height, width, len(channels)):
        raise corrupt(source, "PNG")
    if keyed:
        notes.append(KEY_NOTE)

    orientation = None
    for ctype, payload in png_chunks(data):
        if ctype == b"iCCP" and not icc_is_srgb(png_iccp_profile(bytes(payload))):
            notes.append(ICC_NOTE)
        elif ctype == b"eXIf":
            orientation = exif_orientation_from_bytes(bytes(payload))
    del data
    return apply_orientation(array, orientation, notes), channels, mode
