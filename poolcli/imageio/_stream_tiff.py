"""TIFF read and written a band of rows at a time (private to :mod:`poolcli.imageio`).

Reading: tifffile parses the first page (and counts the pages, for the same note as
``read_image``); the checks of :mod:`poolcli.imageio._decode_tiff` run on it (the guard on the
page, its strips or tiles, unsupported variants) before any pixel; then only the strips or the
row of tiles holding the rows asked for are read from the file and decoded by tifffile
(``page.decode``: every compression and predictor it knows), and laid out by the same function
``read_image`` uses (channels, min-is-white, palette, byte order). Rows are read in order
(``read_rows``), or from any thread in any order (``rows_at``: the bands of a pool each decode
their own, a strip or row of tiles they share decoded once, tile by tile by the threads
asking). Not streamed (``None``): image codecs inside the TIFF (JPEG, PNG, WebP, JPEG 2000,
...), CMYK/YCbCr/CIELAB (Pillow converts them), samples that are not whole bytes, volumes, an
orientation other than upright.

Writing: :class:`TiffBandWriter` writes a striped TIFF (BigTIFF past 4 GB of pixels) with the
tags ``write_image`` gives its TIFFs: photometric, extra samples (alpha), sample format, deflate
at the level asked for (0: uncompressed), and the provenance in ``ImageDescription`` and
``Software``. Strips are deflated by libdeflate as they fill up: in the calling thread, or on a
pool of ``threads`` (each strip is compressed on its own, so the bytes are the same).
"""

from __future__ import annotations

import os
import struct
import threading
from collections import deque
from functools import partial
from typing import BinaryIO, NamedTuple

import numpy as np

from poolcli.imageio._common import corrupt, no_memory
from poolcli.imageio._decode_tiff import _check_guard, _check_supported, _to_image
from poolcli.imageio._guard import check_pixels
from poolcli.imageio._stream_base import BandReader, BandWriter, started_pool

__all__ = ["TiffBandWriter", "TiffPiece", "encode_strip", "open_tiff_reader"]

_STRIP_BYTES = 256 << 10  # bytes of pixels in one strip written
_PREAD = getattr(os, "pread", None)  # not on Windows


# ---- reading -------------------------------------------------------------------------------------


def open_tiff_reader(fh: BinaryIO, source: str, max_pixels: int | None,
                     notes: list[str]) -> BandReader | None:
    """A band reader of the first page of the TIFF open in ``fh``, or ``None``."""
    import tifffile

    fh.seek(0)
    try:
        tif = tifffile.TiffFile(fh)
        pages = len(tif.pages)
        page = tif.pages[0]
        width, height = int(page.imagewidth), int(page.imagelength)
    except Exception:
        return None  # read_image says what is wrong with it
    try:
        reader = _page_reader(tif, page, pages, width, height, source, max_pixels, notes)
        if reader is not None:
            reader._fh = fh
    except BaseException:
        tif.close()
        raise
    if reader is None:
        tif.close()
    return reader


def _page_reader(tif, page, pages, width, height, source, max_pixels, notes):
    import tifffile

    check_pixels(source, width, height, max_pixels)
    photometric = int(page.photometric)
    rgb_like = (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.MINISWHITE,
                tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.PALETTE)
    if (photometric not in rgb_like or int(page.compression) in _image_codecs()
            or page.dtype is None or page.dtype == np.bool_ or int(page.fillorder) != 1
            or int(page.bitspersample) % 8 or page.imagedepth != 1 or 0 in (width, height)):
        return None
    orientation = page.tags.get(274)
    if orientation is not None and orientation.value not in (1, None):
        return None
    _check_guard(page, b"", source, max_pixels)  # no image codec: the bytes are not looked at
    _check_supported(page, source)
    layout = _Layout(page, pages, source)
    dummy = np.zeros(_dummy_shape(page.axes, int(page.samplesperpixel)), page.dtype)
    array, channels, mode = layout.lay_out(dummy, notes)  # the notes, before any pixel
    return _TiffReader(tif, page, layout, source=source, fmt="TIFF", height=height, width=width,
                       channels=channels, dtype=array.dtype, mode=mode, notes=notes)


def _image_codecs() -> frozenset[int]:
    import tifffile

    return frozenset(int(c) for c in tifffile.TIFF.IMAGE_COMPRESSIONS)


def _dummy_shape(axes: str, samples: int) -> tuple[int, ...]:
    return {"YX": (1, 1), "YXS": (1, 1, samples), "SYX": (samples, 1, 1)}[axes]


class _Layout:
    """The page's values as ``read_image`` lays them out (``_decode_tiff._to_image``)."""

    def __init__(self, page, pages: int, source: str):
        self.axes, self.photometric = page.axes, int(page.photometric)
        self.extrasamples = tuple(int(e) for e in page.extrasamples)
        self.colormap, self.bits = page.colormap, int(page.bitspersample)
        self.pages, self.source = pages, source

    def lay_out(self, array: np.ndarray, notes: list[str]):
        return _to_image(array, self.axes, self.photometric, self.extrasamples, self.colormap,
                         self.bits, None, self.pages, self.source, notes)


class _SharedRow:
    """A segment row being decoded for :meth:`_TiffReader.rows_at` by the threads asking."""

    def __init__(self, band: np.ndarray, jobs: list):
        self.band, self.jobs, self.left = band, deque(jobs), len(jobs)
        self.rows: np.ndarray | None = None  # laid out, once every segment is decoded
        self.error: tuple | None = None  # (segment index, exception) of the first failure
        self.done = threading.Event()


class _TiffReader(BandReader):
    def __init__(self, tif, page, layout: _Layout, **kw):
        super().__init__(**kw)
        self._tif, self._page, self._layout = tif, page, layout
        self._fh: BinaryIO | None = None  # the file tifffile reads (closed with the reader)
        self._offsets, self._counts = page.dataoffsets, page.databytecounts
        self._planes = page.shaped[0]  # planar configuration "separate": one set a sample
        self._samples = page.shaped[-1]
        if page.is_tiled:
            self._seg_rows, self._seg_cols = int(page.tilelength), int(page.tilewidth)
        else:
            self._seg_rows, self._seg_cols = min(int(page.rowsperstrip), self.height), self.width
        self._across = -(-self.width // self._seg_cols)
        self._down = -(-self.height // self._seg_rows)
        if len(self._offsets) < self._planes * self._across * self._down:
            raise corrupt(self.source, "TIFF")
        self._lock = threading.Lock()
        self._io_lock = threading.Lock()  # the file's position, where there is no pread
        self._shared: dict[int, _SharedRow] = {}  # segment rows decoded for rows_at
        self._page.decode  # built now, while the open's chatter is captured: then a segment's
        # decode can only raise (tifffile logs only while it builds this function)

    def _produce(self, wanted: int) -> np.ndarray:
        row = max(self._next, wanted) // self._seg_rows
        band, jobs = self._segment_row(row)
        try:  # in order, here: with threads, rows_at decodes where the bands are computed
            for index, dest, x0 in jobs:
                self._decode(index, dest, x0, self._read(index))
        except MemoryError:
            raise no_memory(self.source, self.width, self.height) from None
        self._next = row * self._seg_rows
        return self._laid_out(band)

    def _segment_row(self, row: int):
        """``(band, jobs)`` of segment row ``row`` (a strip, or a row of tiles): the array its
        segments are decoded into and ``(segment index, destination, first column)`` of each."""
        y0 = row * self._seg_rows
        y1 = min(self.height, y0 + self._seg_rows)
        band = np.empty((self._planes, y1 - y0, self.width, self._samples), self._page.dtype)
        jobs = [(plane * self._across * self._down + row * self._across + col, band[plane],
                 col * self._seg_cols) for plane in range(self._planes)
                for col in range(self._across)]
        return band, jobs

    def _laid_out(self, band: np.ndarray) -> np.ndarray:
        stored = band[0] if self._planes == 1 else np.moveaxis(band[..., 0], 0, -1)
        if self._layout.axes == "YX":
            stored = stored[..., 0]
        elif self._layout.axes == "SYX":
            stored = np.moveaxis(stored, -1, 0)
        return self._layout.lay_out(stored, [])[0]

    # ---- random access: segment rows decoded by the band threads that need them ----

    random_access = True

    def rows_at(self, start: int, stop: int) -> np.ndarray:
        self._check_rows(start, stop)
        out = np.empty((stop - start, self.width, len(self.channels)), self.dtype)
        first, last = start // self._seg_rows, (stop - 1) // self._seg_rows
        try:
            for row in range(first, last + 1):
                rows = self._shared_row(row)
                y0 = row * self._seg_rows
                lo, hi = max(start, y0), min(stop, y0 + len(rows))
                out[lo - start:hi - start] = rows[lo - y0:hi - y0]
        except MemoryError:
            raise no_memory(self.source, self.width, self.height) from None
        return out

    def release_before(self, row: int) -> None:
        with self._lock:
            for k in [k for k in self._shared
                      if min(self.height, (k + 1) * self._seg_rows) <= row]:
                del self._shared[k]

    def _shared_row(self, row: int) -> np.ndarray:
        """Segment row ``row`` laid out, decoded once: every thread asking for it takes its
        next undecoded segment until none is left (so two bands needing it share the work, and
        none waits idle while there is some), the one finishing the last lays the row out."""
        with self._lock:
            entry = self._shared.get(row)
            if entry is None:
                entry = self._shared[row] = _SharedRow(*self._segment_row(row))
        while True:
            with self._lock:
                job = entry.jobs.popleft() if entry.jobs else None
            if job is None:
                break
            index, dest, x0 = job
            try:
                self._decode(index, dest, x0, self._read(index))
                failed = None
            except BaseException as exc:  # raised by every thread asking for the row
                failed = (index, exc)
            with self._lock:
                if failed and (entry.error is None or failed[0] < entry.error[0]):
                    entry.error = failed  # the first in file order, as one thread raises it
                entry.left -= 1
                last = entry.left == 0
            if last:
                if entry.error is None:
                    try:
                        entry.rows = self._laid_out(entry.band)
                    except BaseException as exc:
                        entry.error = (-1, exc)
                entry.band = None
                entry.done.set()
        entry.done.wait()
        if entry.error is not None:
            raise entry.error[1]
        return entry.rows

    def _read(self, index: int) -> bytes | None:
        """The stored bytes of segment ``index`` (``None``: a missing segment); from any thread
        (``pread`` on the file's descriptor, no shared file position; where there is no
        ``pread``, Windows, a seek and a read under a lock)."""
        offset, count = int(self._offsets[index]), int(self._counts[index])
        try:
            data = None
            if count and _PREAD is not None:
                data = _PREAD(self._fh.fileno(), count, offset)
            elif count:
                with self._io_lock:
                    self._fh.seek(offset)
                    data = self._fh.read(count)
            if data is not None and len(data) < count:
                raise ValueError("short read")
        except MemoryError:
            raise
        except Exception:
            raise corrupt(self.source, "TIFF") from None
        return data

    def _decode(self, index: int, dest: np.ndarray, x0: int, data: bytes | None) -> None:
        """Decode segment ``index`` (its bytes ``data``) into ``dest[:, x0:]``
        (``(rows, W, samples)``)."""
        try:
            segment = self._page.decode(data, index)[0]
        except MemoryError:
            raise
        except Exception:
            raise corrupt(self.source, "TIFF") from None
        if segment is None:  # a missing segment: tifffile fills it with the fill value
            dest[:, x0:x0 + self._seg_cols] = 0
            return
        segment = segment.reshape(-1, segment.shape[-2], segment.shape[-1])
        rows, cols = min(len(dest), len(segment)), min(dest.shape[1] - x0, segment.shape[1])
        if rows < len(dest):
            raise corrupt(self.source, "TIFF")
        dest[:, x0:x0 + cols] = segment[:rows, :cols]

    def _release(self) -> None:
        self._tif.close()
        if self._fh is not None:
            self._fh.close()  # tifffile leaves a file object it was given open


# ---- writing -------------------------------------------------------------------------------------

# TIFF field types: SHORT, LONG, ASCII, LONG8
_SHORT, _LONG, _ASCII, _LONG8 = 3, 4, 2, 16
_FORMATS = {_SHORT: "H", _LONG: "I", _LONG8: "Q"}


class TiffPiece(NamedTuple):
    """One strip, encoded by :meth:`TiffBandWriter.encoder` where its rows were made."""

    data: object  #: the strip's stored bytes (deflated, or the raw array at level 0)
    rows: int  #: image rows
    row: tuple  #: one row's layout: (width, channels, dtype)


def encode_strip(rows: np.ndarray, above=None, *, little: np.dtype, level: int) -> TiffPiece:
    """One strip of ``rows`` as :class:`TiffBandWriter` stores it (``above`` is not needed:
    strips are deflated on their own)."""
    import imagecodecs

    data = np.ascontiguousarray(rows.astype(little, copy=False))
    row = (rows.shape[1], rows.shape[2] if rows.ndim == 3 else 1, rows.dtype)
    if level > 0:
        return TiffPiece(imagecodecs.deflate_encode(data, level=level), len(rows), row)
    return TiffPiece(data, len(rows), row)


class TiffBandWriter(BandWriter):
    """A striped TIFF written as the rows come; the IFD goes after the strips.

    ``strip_rows`` sets the rows of a strip (default: about :data:`_STRIP_BYTES`). Rows given to
    :meth:`write_rows` are cut into strips here, deflated on ``threads`` threads; or the caller
    encodes whole strips where their rows are made (:meth:`encoder`) and hands them to
    :meth:`write_encoded` in order, each of ``strip_rows`` rows but the last.
    """

    def __init__(self, target: str, *, names: tuple[str, ...], level: int, stamp,
                 threads: int = 1, strip_rows: int | None = None, **kw):
        dtype = np.dtype(kw["dtype"])
        if dtype.kind not in "iuf":
            raise ValueError(f"TIFF band output supports integer and float arrays, not {dtype}")
        self._names, self._level, self._stamp = names, level, stamp
        self._little = dtype.newbyteorder("<")
        row_bytes = kw["width"] * len(names) * dtype.itemsize
        self._rows_per_strip = max(1, strip_rows or _STRIP_BYTES // row_bytes)
        self._big = kw["height"] * row_bytes > 4_000_000_000
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._offsets: list[int] = []
        self._counts: list[int] = []
        self._threads = max(1, int(threads))
        self._pool = None  # deflating strips, when there are threads for it
        self._queued: deque = deque()
        super().__init__(target, channels=len(names), **kw)  # may refuse the target
        if self._threads > 1 and level > 0:
            self._pool = started_pool(self._threads, "poolcli-tiff-deflate")

    def encoder(self):
        """``encode(rows, above) -> TiffPiece`` for :meth:`write_encoded` (thread-safe)."""
        return partial(encode_strip, little=self._little, level=self._level)

    def write_encoded(self, piece: TiffPiece) -> None:
        """Append the next strip, encoded by :meth:`encoder` (not mixed with write_rows)."""
        if self._fh is None:
            raise ValueError(f"{self.target}: band writer is closed")
        if self._buffered or self._queued:
            raise ValueError("write_encoded after write_rows")
        if piece.row != (self.width, self.channel_count, self.dtype):
            raise ValueError(f"a strip of rows {piece.row} for an image of rows "
                             f"{(self.width, self.channel_count, self.dtype)}")
        last = self.rows_written + piece.rows == self.height
        if piece.rows != self._rows_per_strip and not (last and piece.rows < self._rows_per_strip):
            raise ValueError(f"a strip of {piece.rows} rows where strips have "
                             f"{self._rows_per_strip}")
        if self.rows_written + piece.rows > self.height:
            raise ValueError(f"{self.rows_written + piece.rows} rows for an image of "
                             f"{self.height}")
        self._guarded(lambda fh: self._store(fh, piece.data))
        self.rows_written += piece.rows

    def _start(self, fh: BinaryIO) -> None:
        # the header, its IFD offset patched in _finish
        fh.write(b"II+\x00" + struct.pack("<HHQ", 8, 0, 0) if self._big else b"II*\x00\0\0\0\0")

    def _encode(self, fh: BinaryIO, rows: np.ndarray) -> None:
        pos = 0
        while pos < len(rows):
            part = rows[pos:pos + self._rows_per_strip - self._buffered]
            self._buffer.append(part)
            self._buffered += len(part)
            pos += len(part)
            if self._buffered == self._rows_per_strip:
                self._write_strip(fh)

    def _write_strip(self, fh: BinaryIO) -> None:
        data = np.concatenate(self._buffer).astype(self._little, copy=False)
        data = np.ascontiguousarray(data)
        self._buffer, self._buffered = [], 0
        if self._pool is None:
            self._store(fh, self._compress(data))
            return
        # strips are deflated on their own: on the pool, written in order, the same bytes
        self._queued.append(self._pool.submit(self._compress, data))
        self._drain(fh, 2 * self._threads)

    def _compress(self, data: np.ndarray):
        return encode_strip(data, little=self._little, level=self._level).data  # zlib (Adobe)

    def _drain(self, fh: BinaryIO, most: int) -> None:
        while len(self._queued) > most:
            self._store(fh, self._queued.popleft().result())

    def _store(self, fh: BinaryIO, data) -> None:
        self._offsets.append(fh.tell())
        self._counts.append(len(memoryview(data).cast("B")))
        fh.write(data)

    def _discard(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._queued.clear()

    def _finish(self, fh: BinaryIO) -> None:
        if self._buffered:
            self._write_strip(fh)
        self._drain(fh, 0)
        if self._pool is not None:
            self._pool.shutdown()
        if fh.tell() % 2:
            fh.write(b"\0")
        ifd = fh.tell()
        fh.write(self._ifd(ifd))
        fh.seek(8 if self._big else 4)
        fh.write(struct.pack("<Q" if self._big else "<I", ifd))

    def _tags(self) -> list[tuple[int, int, list | bytes]]:
        count, dtype = len(self._names), self.dtype
        if count >= 3 and self._names[:3] == ("R", "G", "B"):
            photometric, extras = 2, self._names[3:]
        else:
            photometric, extras = 1, self._names[1:]
        offset_type = _LONG8 if self._big else _LONG
        tags = [(256, _LONG, [self.width]), (257, _LONG, [self.height]),
                (258, _SHORT, [8 * dtype.itemsize] * count),
                (259, _SHORT, [8 if self._level > 0 else 1]), (262, _SHORT, [photometric]),
                (273, offset_type, self._offsets), (277, _SHORT, [count]),
                (278, _LONG, [self._rows_per_strip]), (279, offset_type, self._counts),
                (284, _SHORT, [1]),
                (339, _SHORT, [{"u": 1, "i": 2, "f": 3}[dtype.kind]] * count)]
        if extras:
            tags.append((338, _SHORT, [2 if name == "A" else 0 for name in extras]))
        if self._stamp is not None:
            tags.append((270, _ASCII, self._stamp.tiff_description().encode("ascii") + b"\0"))
            tags.append((305, _ASCII, self._stamp.software.encode("ascii", "replace") + b"\0"))
        return sorted(tags)

    def _ifd(self, at: int) -> bytes:
        """The IFD written at file offset ``at``, each value too long to fit inline after it."""
        entry, inline, count_fmt = (20, 8, "<Q") if self._big else (12, 4, "<H")
        tags = self._tags()
        table_end = at + len(struct.pack(count_fmt, 0)) + entry * len(tags) + inline
        entries, extra = [], bytearray()
        for tag, kind, values in tags:
            data = bytes(values) if kind == _ASCII else struct.pack(
                f"<{len(values)}{_FORMATS[kind]}", *values)
            if len(data) <= inline:
                field = data.ljust(inline, b"\0")
            else:
                field = struct.pack("<Q" if self._big else "<I", table_end + len(extra))
                extra += data + b"\0" * (len(data) % 2)
            head = struct.pack("<HHQ" if self._big else "<HHI", tag, kind, len(values))
            entries.append(head + field)
        next_ifd = bytes(inline)  # no second page
        return struct.pack(count_fmt, len(tags)) + b"".join(entries) + next_ifd + bytes(extra)
