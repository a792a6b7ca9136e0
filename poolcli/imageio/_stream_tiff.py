"""TIFF read and written a band of rows at a time (private to :mod:`poolcli.imageio`)."""

from __future__ import annotations

__all__ = ["TiffBandWriter", "open_tiff_reader"]


def open_tiff_reader(fh, source, max_pixels, notes):
    return None  # first version: not streamed yet


class TiffBandWriter:
    def __init__(self, *args, **kw):
        raise ValueError("TIFF band writer: not yet")
