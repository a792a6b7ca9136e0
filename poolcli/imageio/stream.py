"""Images larger than memory: decoders and encoders that work a band of rows at a time.

:func:`open_band_reader` gives the rows of an image file band by band, exactly as
:func:`~poolcli.imageio.read_image` would give them whole (same dtype, channels, palette,
grey, alpha and 16-bit handling, same notes); it returns ``None`` for a file it cannot stream,
and the caller then reads it whole. :func:`open_band_writer` writes an image band by band to a
temporary file renamed onto the target on commit, with the rules of
:func:`~poolcli.imageio.files.atomic_write`.

What streams (everything else returns ``None``):

==============  ================================================================================
Format          Band reader
==============  ================================================================================
PNG             non-interlaced, 8- and 16-bit grey, LA, RGB, RGBA (a tRNS colour key becoming
                alpha as in ``read_image``), palette at 1-8 bits (expanded to RGB or RGBA), and
                1/2/4-bit grey; the zlib stream is inflated band by band and the rows unfiltered
                by libpng (``imagecodecs``). Not: Adam7 interlacing, APNG, an EXIF or text-chunk
                orientation other than upright, colour-keyed grey below 8 bits.
TIFF/BigTIFF    the first page, striped or tiled, contiguous or planar, every compression
                tifffile decodes except the image codecs (JPEG, PNG, WebP, ... inside TIFF);
                only the strips or tiles holding the rows asked for are read. Not: an
                orientation other than upright, CMYK/YCbCr/CIELAB (Pillow's conversions).
NPY             C-order arrays, read from the file a band at a time.
JPEG, WebP,     not streamed (``None``): see the README's "Dependencies" for why pyvips was
GIF, BMP        not added for them.
==============  ================================================================================

The band writers: PNG (the same filtering as :mod:`poolcli.imageio.png`, one zlib stream
deflated band by band), TIFF (striped, deflate as :func:`~poolcli.imageio.write_image` does or
uncompressed; BigTIFF when the pixels pass 4 GB) and NPY (byte-identical to ``np.save``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from poolcli.formats import FORMAT_ALIASES, SUFFIX_FORMAT
from poolcli.imageio._common import is_stdio
from poolcli.imageio._guard import check_file_size, preflight
from poolcli.imageio._quiet import captured
from poolcli.imageio._stream_base import BandReader, BandWriter, ReadAhead, started_pool

__all__ = ["BandReader", "BandWriter", "ReadAhead", "open_band_reader", "open_band_writer",
           "started_pool"]

_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
          (b"II+\x00", "TIFF"), (b"MM\x00+", "TIFF"), (b"\x93NUMPY", "NPY"))


def open_band_reader(path: str | os.PathLike[str], *, max_pixels: int | None) -> BandReader | None:
    """A :class:`BandReader` for ``path``, or ``None`` when this file cannot be streamed.

    ``None`` means: use :func:`~poolcli.imageio.read_image` (a format or variant not streamed,
    see the module docstring; also standard input, a pipe, or a file that cannot be opened,
    which ``read_image`` then reports in its own words). Header checks and the bomb guard
    (``max_pixels``, as in ``read_image``) apply before any pixel is decoded: a file claiming
    too many pixels raises the same one-line :class:`~poolcli.errors.ImageReadError`.
    """
    if is_stdio(path):
        return None
    source = os.fsdecode(os.fspath(path))
    try:
        fh = open(source, "rb")
    except OSError:
        return None
    try:
        with captured() as chatter:  # the libraries' warnings become notes, as in read_image
            reader = _open_regular(fh, source, max_pixels)
    except BaseException:
        fh.close()
        raise
    if reader is None:
        fh.close()
    else:
        reader.notes.extend(chatter.notes())
    return reader


def _open_regular(fh, source: str, max_pixels: int | None) -> BandReader | None:
    st = os.fstat(fh.fileno())
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return None
    head = fh.read(16)
    fmt = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
    if fmt is None:
        return None
    check_file_size(source, st.st_size, max_pixels)

    def read_at(offset: int, count: int) -> bytes:
        fh.seek(offset)
        return fh.read(count)

    if preflight(source, fmt, read_at, st.st_size, max_pixels) is None:
        return None  # an unreadable header: read_image says what is wrong with it
    notes: list[str] = []
    expected = SUFFIX_FORMAT.get(Path(source).suffix.lower())
    if expected is not None and expected != fmt:
        notes.append(f"content is {fmt} although the name ends in {Path(source).suffix}")
    if fmt == "PNG":
        from poolcli.imageio._stream_png import open_png_reader

        return open_png_reader(fh, source, st.st_size, max_pixels, notes)
    if fmt == "TIFF":
        from poolcli.imageio._stream_tiff import open_tiff_reader

        return open_tiff_reader(fh, source, max_pixels, notes)
    from poolcli.imageio._stream_npy import open_npy_reader

    return open_npy_reader(fh, source, st.st_size, max_pixels, notes)


def open_band_writer(path: str | os.PathLike[str], *, height: int, width: int,
                     channels: int | tuple[str, ...], dtype: Any, fmt: str, overwrite: bool,
                     on_commit: Callable[[str], None] | None = None,
                     metadata: Mapping[str, Any] | None = None,
                     compress_level: int | None = None, threads: int | None = None,
                     piece_rows: int | None = None) -> BandWriter:
    """A :class:`BandWriter` for a ``height x width`` image to be written at ``path``.

    Parameters
    ----------
    channels : int or tuple of str
        The channel count, or their names (as :attr:`BandReader.channels`; TIFF uses them for
        its photometric and alpha tags, like :func:`~poolcli.imageio.write_image`).
    dtype : dtype
        Of every band written. PNG: ``uint8``/``uint16`` with 1-4 channels; TIFF: integer or
        float; NPY: any numeric dtype.
    fmt : str
        ``"PNG"``, ``"TIFF"`` or ``"NPY"`` (aliases as in :mod:`poolcli.formats`).
    overwrite : bool
        Replace an existing target; without it an existing target is refused now, and a file
        appearing there meanwhile is never clobbered (hard link on commit).
    on_commit : callable, optional
        Called with the path right after the rename, signals held back (as ``atomic_write``).
    metadata : mapping, optional
        The provenance record, as ``write_image(provenance=...)`` takes it: written where
        ``write_image`` writes it (PNG text chunks before the image data, TIFF
        ``ImageDescription`` and ``Software``; ``.npy`` has nowhere to keep it).
    compress_level : int, optional
        Deflate level 0-9 for PNG and TIFF (default that of ``write_image``).
    threads : int, optional
        ``1`` (the default): every byte encoded in the calling thread (a ``-j N`` worker,
        where the runner's processes already use the cores). More: PNG deflates its chunks and
        TIFF its strips on ``threads`` threads, overlapping the caller's next band. The bytes
        are the same.
    piece_rows : int, optional
        TIFF: the rows of a strip, so that a caller encoding whole strips where their rows
        are made (:meth:`BandWriter.encoder`) can cut them as its bands (default about 256
        KiB a strip). PNG and NPY ignore it (a PNG's pieces may have any number of rows).

    Raises
    ------
    ValueError
        A format not streamed, or a dtype/shape it cannot store.
    ImageWriteError
        The target exists (without ``overwrite``), is a directory, its directory is missing or
        not writable; later, from ``write_rows``/``commit``, disk full and the like.
    """
    from poolcli.imageio.write import DEFAULT_PNG_COMPRESS_LEVEL

    name = FORMAT_ALIASES.get(str(fmt).upper(), str(fmt).upper())
    target = os.fsdecode(os.fspath(path))
    names = _channel_names(channels)
    level = DEFAULT_PNG_COMPRESS_LEVEL if compress_level is None else int(compress_level)
    if not 0 <= level <= 9:
        raise ValueError(f"compress_level must be an integer 0-9, got {compress_level!r}")
    stamp = None
    if metadata is not None:
        from poolcli.imageio.provenance import prepare_provenance

        stamp = prepare_provenance(metadata)
    common = dict(height=height, width=width, names=names, dtype=np.dtype(dtype),
                  overwrite=overwrite, on_commit=on_commit)
    if name == "PNG":
        from poolcli.imageio._stream_png import PngBandWriter

        return PngBandWriter(target, level=level, stamp=stamp, threads=threads or 1,
                             **common)
    if name == "TIFF":
        from poolcli.imageio._stream_tiff import TiffBandWriter

        return TiffBandWriter(target, level=level, stamp=stamp, threads=threads or 1,
                              strip_rows=piece_rows, **common)
    if name == "NPY":
        from poolcli.imageio._stream_npy import NpyBandWriter

        return NpyBandWriter(target, **common)
    raise ValueError(f"cannot write {fmt} band by band (PNG, TIFF or NPY)")


def _channel_names(channels: int | tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(channels, (int, np.integer)):
        defaults = {1: ("L",), 2: ("L", "A"), 3: ("R", "G", "B"), 4: ("R", "G", "B", "A")}
        return defaults.get(int(channels), tuple(f"c{i}" for i in range(int(channels))))
    return tuple(channels)
