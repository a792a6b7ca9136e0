"""PNG read and written a band of rows at a time (private to :mod:`poolcli.imageio`)."""

from __future__ import annotations

__all__ = ["PngBandWriter", "open_png_reader"]


def open_png_reader(fh, source, size, max_pixels, notes):
    return None  # first version: not streamed yet


class PngBandWriter:
    def __init__(self, *args, **kw):
        raise ValueError("PNG band writer: not yet")
