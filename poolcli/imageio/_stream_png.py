"""PNG read and written a band of rows at a time (private to :mod:`poolcli.imageio`).

Reading: the chunks are walked once at open (headers only, every CRC but the image data's
checked, as ``read_image`` checks them all before decoding); the image data is inflated as the
rows are asked for, by ISA-L (python-isal's zlib-compatible ``isal_zlib.decompressobj``, about
1.5x zlib's speed, the GIL released) or, where isal is not importable, ``zlib.decompressobj``: the
same DEFLATE stream, the same bytes (see :func:`_inflater`). Each band of filtered scanlines is
handed to libpng (``imagecodecs.png_decode``) as a small PNG of its own: the row above the band,
stored unfiltered, then the band's rows as filtered in the file. libpng unfilters them in C (the
Paeth and Average filters are sequential along a row: numpy cannot do them fast), and the values are
then laid out as ``read_image`` lays them out (colour key to alpha, palette expanded, 1-, 2- and
4-bit grey scaled to 8 bits). Each image-data chunk's CRC is checked when its last byte is read.

Writing: :class:`PngBandWriter` filters the rows with the code :func:`poolcli.imageio.png.write_png`
uses (:class:`poolcli.imageio.png.RowFilter`), and deflates them with zlib in independent pieces
that threads encode side by side and that concatenate into one stream (pigz's way), with ISA-L
(python-isal; zlib where it is missing): libdeflate, which the in-memory writer uses, only
compresses a whole buffer at once. The pixels are identical
to ``write_image``'s file, the compressed bytes are not; they depend on nothing but the rows, the
level and the pieces (not on the thread count).
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import BinaryIO, NamedTuple

import numpy as np

from poolcli.errors import ImageReadError
from poolcli.imageio._common import ICC_NOTE, corrupt, exif_orientation_from_bytes, icc_is_srgb
from poolcli.imageio._pngchunks import _PNG_ORIENTATION_TEXT, png_iccp_profile
from poolcli.imageio._stream_base import BandReader, BandWriter, ReadAhead, started_pool
from poolcli.imageio.png import COLOUR_TYPES, IDAT_BYTES, RowFilter, png_head, write_chunk

__all__ = ["Encoded", "PngBandWriter", "encode_rows", "open_png_reader"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_NAMES = {0: ("L",), 2: ("R", "G", "B"), 4: ("L", "A"), 6: ("R", "G", "B", "A")}
_READ_BYTES = 1 << 20  # compressed bytes read from the file at a time
_BLOCK_BYTES = 1 << 20  # raw scanline bytes unfiltered at a time
_CHUNK_BYTES = 1 << 20  # scanline bytes deflated as one piece (see PngBandWriter)
_INFLATED_AHEAD = 2  # blocks of scanlines the inflate thread may hold ready
_TEXT = (b"tEXt", b"zTXt", b"iTXt")
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_CRITICAL = (b"IHDR", b"PLTE", b"IDAT", b"IEND")
KEY_NOTE = "colour-key transparency converted to alpha"


@dataclass
class _Walk:
    """What the chunks before and after the image data say."""

    ihdr: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)  # W, H, depth, colour, interlace
    idat: list[tuple[int, int, int]] = field(default_factory=list)  # offset, length, crc
    plte: bytes | None = None
    trns: bytes | None = None
    icc: bytes | None = None
    orientation: object = None
    animated: bool = False
    oriented_text: bool = False


def open_png_reader(fh: BinaryIO, source: str, size: int, max_pixels: int | None,
                    notes: list[str]) -> BandReader | None:
    """A band reader of the PNG open in ``fh``, or ``None`` for a variant not streamed."""
    walk = _walk(fh, source, size)
    width, height, depth, colour, interlace = walk.ihdr
    if interlace or walk.animated or walk.oriented_text or not walk.idat:
        return None
    if walk.orientation not in (None, 1) and _is_orientation(walk.orientation):
        return None
    layout = _layout(walk, depth, colour)
    if layout is None:
        return None
    channels, dtype, mode, layout_notes, icc_first = layout
    icc_notes = [ICC_NOTE] if walk.icc is not None and not icc_is_srgb(walk.icc) else []
    notes.extend(icc_notes + layout_notes if icc_first else layout_notes + icc_notes)
    return _PngReader(fh, walk, source=source, fmt="PNG", height=height, width=width,
                      channels=channels, dtype=dtype, mode=mode, notes=notes)


def _is_orientation(value: object) -> bool:
    try:
        return int(value) in range(2, 9)
    except (TypeError, ValueError):
        return False


def _layout(walk: _Walk, depth: int, colour: int):
    """``(channels, dtype, mode, notes, ICC note first)`` as read_image gives them, or ``None``.

    libpng's route (every 16-bit PNG, 8-bit grey/LA/RGB/RGBA, colour keys) notes the key then
    the profile; Pillow's (palette, 1/2/4-bit grey) notes the profile then the expansion.
    """
    if colour in (0, 2, 4, 6) and depth in (8, 16):
        keyed = colour in (0, 2) and walk.trns is not None
        if keyed and (len(walk.trns) != 2 * _SAMPLES[colour]
                      or max(struct.unpack(f">{len(walk.trns) // 2}H", walk.trns)) >> depth):
            return None  # a malformed key: libpng warns (a note read_image gives) or ignores it
        names = _NAMES[colour + 4 if keyed else colour]
        mode = "".join(names)
        if depth == 16:
            mode = "I;16" if mode == "L" else f"{mode};16"
        dtype = np.dtype(np.uint16 if depth == 16 else np.uint8)
        return names, dtype, mode, [KEY_NOTE] if keyed else [], False
    if colour == 3 and depth in (1, 2, 4, 8):
        if walk.plte is None or not walk.plte or len(walk.plte) % 3 or len(walk.plte) > 768:
            return None
        if walk.trns is not None:
            note = "palette expanded to RGBA, transparency kept"
            return ("R", "G", "B", "A"), np.dtype(np.uint8), "RGBA", [note], True
        return ("R", "G", "B"), np.dtype(np.uint8), "RGB", ["palette expanded to RGB"], True
    if colour == 0 and depth in (1, 2, 4) and walk.trns is None:
        if depth == 1:
            return ("L",), np.dtype(np.uint8), "1", ["1-bit image expanded to 0/255 uint8"], True
        return ("L",), np.dtype(np.uint8), "L", [], True
    return None


# ---- the chunk walk ------------------------------------------------------------------------------


def _walk(fh: BinaryIO, source: str, size: int) -> _Walk:
    """Walk every chunk to IEND: headers, the small chunks' payloads and CRCs, where the image
    data is. A cut file or a bad CRC is the error ``read_image`` gives before decoding."""
    walk = _Walk()
    pos = 8
    while True:
        fh.seek(pos)
        head = fh.read(8)
        if len(head) < 8:
            raise corrupt(source, "PNG")
        length, ctype = struct.unpack(">I4s", head)
        if pos + 12 + length > size:
            raise corrupt(source, "PNG")
        if ctype == b"IDAT":
            fh.seek(pos + 8 + length)
            walk.idat.append((pos + 8, length, struct.unpack(">I", fh.read(4))[0]))
        else:
            _chunk(walk, ctype, _checked_payload(fh, source, ctype, length), source, pos)
        pos += 12 + length
        if ctype == b"IEND":
            return walk


def _checked_payload(fh: BinaryIO, source: str, ctype: bytes, length: int) -> bytes:
    from imagecodecs import deflate_crc32

    payload = fh.read(length)
    stored = fh.read(4)
    if len(payload) < length or len(stored) < 4:
        raise corrupt(source, "PNG")
    if deflate_crc32(payload, zlib.crc32(ctype)) != struct.unpack(">I", stored)[0]:
        raise crc_error(source, ctype)
    return payload


def crc_error(source: str, ctype: bytes) -> ImageReadError:
    """The message ``read_image`` gives for a chunk failing its CRC."""
    name = ctype.decode("latin-1")
    shown = name if name.isalpha() else repr(name)
    return ImageReadError(
        f"{source}: truncated or corrupt PNG data (CRC checksum mismatch in the {shown} chunk)")


def _chunk(walk: _Walk, ctype: bytes, payload: bytes, source: str, pos: int) -> None:
    if ctype == b"IHDR":
        if pos != 8 or len(payload) != 13:
            raise corrupt(source, "PNG")
        width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", payload)
        walk.ihdr = (width, height, depth, colour, interlace)
    elif ctype.isalpha() and ctype[:1].isupper() and ctype not in _CRITICAL:
        raise ImageReadError(
            f"{source}: unsupported PNG (unknown critical chunk {ctype.decode('ascii')!r})")
    elif ctype == b"PLTE":
        walk.plte = payload
    elif ctype == b"tRNS" and not walk.idat:
        walk.trns = payload
    elif ctype == b"iCCP" and not walk.idat:
        walk.icc = png_iccp_profile(payload)
    elif ctype == b"eXIf":
        walk.orientation = exif_orientation_from_bytes(payload)
    elif ctype in (b"acTL", b"fcTL"):
        walk.animated = True
    elif ctype in _TEXT:
        walk.oriented_text |= payload[:80].partition(b"\x00")[0] in _PNG_ORIENTATION_TEXT


# ---- the reader ----------------------------------------------------------------------------------


class _PngReader(BandReader):
    def __init__(self, fh: BinaryIO, walk: _Walk, **kw):
        super().__init__(**kw)
        self._fh, self._walk = fh, walk
        _, _, depth, colour, _ = walk.ihdr
        self._depth, self._colour = depth, colour
        bits = depth * _SAMPLES[colour]
        self._row_bytes = (self.width * bits + 7) // 8
        self._above = bytes(self._row_bytes)  # the unfiltered row above the next band
        self._block = max(1, _BLOCK_BYTES // (1 + self._row_bytes))
        self._z, self._z_error = _inflater()
        self._chunk, self._offset = 0, 0  # the IDAT chunk being read, and where in it
        self._crc = zlib.crc32(b"IDAT")
        self._lut = _palette_lut(walk.plte, walk.trns) if colour == 3 else None
        self._key = _key(walk.trns) if colour in (0, 2) and walk.trns else None
        self._ahead: ReadAhead | None = None

    def use_threads(self, count: int) -> None:
        """With more than one thread the image data is inflated ahead in a thread of its own
        (ISA-L and zlib release the GIL), overlapping libpng's unfiltering and the caller's
        work: one zlib stream is inflated in order, so one thread is all it can use."""
        if count > 1 and self._ahead is None and self._next == 0:
            self._ahead = ReadAhead(self._blocks(), _INFLATED_AHEAD, "poolcli-png-inflate")

    def _blocks(self):
        """The scanlines of each block :meth:`_produce` takes, in order."""
        for start in range(0, self.height, self._block):
            yield self._inflate(min(self._block, self.height - start) * (1 + self._row_bytes))

    def _produce(self, wanted: int) -> np.ndarray:
        count = min(self._block, self.height - self._next)
        if self._ahead is not None:
            raw = next(self._ahead)
        else:
            raw = self._inflate(count * (1 + self._row_bytes))
        rows = self._unfilter(raw, count)
        return self._lay_out(rows)

    def _release(self) -> None:
        if self._ahead is not None:
            self._ahead.close()  # before the file it reads is closed
        self._fh.close()
        self._z = None

    def _inflate(self, size: int) -> bytes:
        parts, have = [], 0
        while have < size:
            data = self._z.unconsumed_tail or self._read_idat()
            try:  # with no input left, ISA-L may still hold output (zlib keeps the input)
                piece = self._z.decompress(data, size - have)
            except self._z_error:
                raise corrupt(self.source, "PNG") from None
            if not piece and (not data or self._z.eof):
                raise corrupt(self.source, "PNG")  # the image data ends before the image
            parts.append(piece)
            have += len(piece)
        return b"".join(parts)

    def _read_idat(self) -> bytes:
        """The next compressed bytes (empty at the end); a chunk's CRC checked at its end."""
        from imagecodecs import deflate_crc32

        chunks = self._walk.idat
        while self._chunk < len(chunks) and self._offset == chunks[self._chunk][1]:
            self._next_chunk()
        if self._chunk == len(chunks):
            return b""
        start, length, _ = chunks[self._chunk]
        self._fh.seek(start + self._offset)
        data = self._fh.read(min(_READ_BYTES, length - self._offset))
        if not data:
            raise corrupt(self.source, "PNG")  # the file shrank since it was opened
        self._crc = deflate_crc32(data, self._crc)
        self._offset += len(data)
        if self._offset == length:
            self._next_chunk()
        return data

    def _next_chunk(self) -> None:
        if self._crc != self._walk.idat[self._chunk][2]:
            raise crc_error(self.source, b"IDAT")
        self._chunk, self._offset, self._crc = self._chunk + 1, 0, zlib.crc32(b"IDAT")

    def _unfilter(self, raw: bytes, count: int) -> np.ndarray:
        """The band's scanlines unfiltered by libpng: ``(count, W[, C])`` samples for 8- and
        16-bit grey/LA/RGB/RGBA, ``(count, row bytes)`` packed bytes for the other layouts."""
        import imagecodecs

        if self._colour in (0, 2, 4, 6) and self._depth in (8, 16):
            width, depth, colour = self.width, self._depth, self._colour
        else:  # the same bytes, one a pixel: libpng unfilters them as 8-bit grey
            width, depth, colour = self._row_bytes, 8, 0
        ihdr = struct.pack(">IIBBBBB", width, count + 1, depth, colour, 0, 0, 0)
        try:
            rows = imagecodecs.png_decode(_mini_png(ihdr, b"\x00" + self._above + raw))[1:]
        except Exception:
            raise corrupt(self.source, "PNG") from None  # a filter type byte over 4
        last = rows[-1]
        self._above = (last.astype(">u2") if last.dtype == np.uint16 else last).tobytes()
        return rows

    def _lay_out(self, rows: np.ndarray) -> np.ndarray:
        if self._lut is not None:
            return self._lut[_unpack(rows, self._depth, self.width)]
        if self._depth < 8:  # grey: scaled to 8 bits as Pillow does (1-bit: 0/255)
            scale = np.uint8(255 // ((1 << self._depth) - 1))
            return (_unpack(rows, self._depth, self.width) * scale)[:, :, np.newaxis]
        if rows.ndim == 2:
            rows = rows[:, :, np.newaxis]
        if self._key is None:
            return rows
        top = np.iinfo(rows.dtype).max
        alpha = np.where((rows == self._key.astype(rows.dtype)).all(axis=2), 0, top)
        return np.concatenate([rows, alpha.astype(rows.dtype)[:, :, np.newaxis]], axis=2)


def _inflater():
    """``(a new decompressobj, the error it raises)``: ISA-L's if python-isal is importable,
    else zlib's.

    The one serial step of a streamed PNG is inflating its image data (one DEFLATE stream, in
    order); measured by ``benchmarks/bench_large.py --only inflate`` on the 4096² and 8192²
    test images, ISA-L inflates 1.50-1.58x faster than zlib 1.2.13 (zlib-ng 1.08-1.13x), the
    same bytes.
    isal raises its own error class on a damaged stream, not ``zlib.error``.
    """
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib.decompressobj(), zlib.error
    return isal_zlib.decompressobj(), isal_zlib.error


def _mini_png(ihdr: bytes, scanlines: bytes) -> bytes:
    """A PNG of the IHDR payload ``ihdr`` whose image data is ``scanlines`` stored (DEFLATE
    blocks of type 0, no compression), made with one copy: libdeflate's level 0 took 0.9 ms per
    MiB, most of the unfiltering's time, where the stored blocks' headers and libdeflate's
    checksums take a tenth of it."""
    from imagecodecs import deflate_adler32, deflate_crc32

    view, parts = memoryview(scanlines), [b"\x78\x01"]  # zlib header: no dictionary, fastest
    for start in range(0, len(view), 65535):
        block = view[start:start + 65535]
        final = start + 65535 >= len(view)
        parts += [struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF), block]
    parts.append(struct.pack(">I", deflate_adler32(scanlines)))
    crc = deflate_crc32(b"IDAT")
    for part in parts:
        crc = deflate_crc32(part, crc)
    size = sum(len(part) for part in parts)
    return b"".join((_SIGNATURE, _chunk_bytes(b"IHDR", ihdr), struct.pack(">I", size), b"IDAT",
                     *parts, struct.pack(">I", crc), _IEND))


def _chunk_bytes(ctype: bytes, payload: bytes) -> bytes:
    from imagecodecs import deflate_crc32

    crc = deflate_crc32(payload, zlib.crc32(ctype))
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", crc)


def _unpack(rows: np.ndarray, depth: int, width: int) -> np.ndarray:
    """``(n, W)`` samples of ``depth`` bits from ``(n, row bytes)`` packed big-endian bytes."""
    if depth == 8:
        return rows[:, :width]
    shifts = np.arange(8 - depth, -1, -depth, dtype=np.uint8)
    mask = np.uint8((1 << depth) - 1)
    samples = (rows[:, :, np.newaxis] >> shifts) & mask
    return samples.reshape(len(rows), -1)[:, :width]


def _palette_lut(plte: bytes, trns: bytes | None) -> np.ndarray:
    """256 colours as Pillow expands them: entries past the palette black, alpha 255 past tRNS."""
    lut = np.zeros((256, 3 if trns is None else 4), np.uint8)
    colours = np.frombuffer(plte, np.uint8).reshape(-1, 3)
    lut[:len(colours), :3] = colours
    if trns is not None:
        lut[:, 3] = 255
        alpha = np.frombuffer(trns[:256], np.uint8)
        lut[:len(alpha), 3] = alpha
    return lut


def _key(trns: bytes) -> np.ndarray:
    """The colour key of a grey or RGB tRNS chunk (its samples within the bit depth)."""
    return np.frombuffer(trns, ">u2").astype(np.uint16)


# ---- the writer ----------------------------------------------------------------------------------


class Encoded(NamedTuple):
    """Rows made into a piece of a PNG's image data by :func:`encode_rows`."""

    data: bytes  #: raw DEFLATE, ended by a sync flush (byte-aligned, not final)
    adler: int  #: Adler-32 of the scanlines
    size: int  #: bytes of scanlines
    rows: int  #: image rows


def encode_rows(rows: np.ndarray, above: np.ndarray | None, *, level: int) -> Encoded:
    """Filter ``rows`` (``(n, W, C)`` uint8/uint16, any strides) as :func:`~poolcli.imageio.png.
    write_png` does, ``above`` being the image row above the first (``None``: the top of the
    image), and deflate them at ``level`` as one independent piece. Any thread may call it
    (zlib and numpy release the GIL): the pieces of consecutive rows, each given its row above,
    concatenate into one DEFLATE stream in any grouping."""
    from imagecodecs import deflate_adler32  # libdeflate's: 20x zlib.adler32

    n, width, channels = rows.shape
    row_filter = RowFilter(width, channels, rows.dtype, filtered=level > 0)
    if above is not None:
        row_filter.start_below(above)
    scanlines = np.empty((n, 1 + row_filter.line), np.uint8)
    row_filter.filter_into(rows, scanlines)
    z = _deflater(level)
    data = z.compress(scanlines) + z.flush(zlib.Z_SYNC_FLUSH)
    return Encoded(data, deflate_adler32(scanlines), scanlines.nbytes, n)


#: ``--compress-level`` 1-9 to ISA-L's levels 1-3 (its 0 is not "stored": level 0 stays zlib's).
_ISAL_LEVELS = {1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 2, 7: 3, 8: 3, 9: 3}


def _deflater(level: int):
    """A raw-DEFLATE compressor for a piece: ISA-L's (python-isal), zlib's where it is missing
    or at level 0 (stored blocks). Measured on a 4096² pool's filtered output in 64-row pieces
    (``benchmarks/bench_large.py --only deflate``): ISA-L level 1 takes a seventh of zlib level
    1's CPU and is 9% smaller; libdeflate's level 1 on the whole image (the in-memory writer)
    takes four times ISA-L's CPU, 2% larger."""
    if level > 0:
        try:
            from isal import isal_zlib
        except ImportError:
            pass
        else:
            return isal_zlib.compressobj(_ISAL_LEVELS[level], isal_zlib.DEFLATED, -15)
    return zlib.compressobj(level, zlib.DEFLATED, -15)


class PngBandWriter(BandWriter):
    """A plain PNG written as the rows come: IHDR, the provenance text, IDAT chunks, IEND.

    The image data is one zlib stream made of independent pieces, as pigz makes it: each run of
    rows is filtered (given the row above it) and deflated on its own by :func:`encode_rows`,
    ended by a sync flush, so the pieces concatenate; an empty final block and the Adler-32 of
    every scanline (combined from each piece's) close it. Not sharing a dictionary between
    pieces costs 0.05% on a 4096² pool's output in pieces of 64 rows.

    Two ways in. :meth:`write_rows` cuts the rows into pieces of :data:`_CHUNK_BYTES` of
    scanlines whatever the bands given, and encodes them on ``threads`` threads (at most
    ``2 * threads`` in flight; with 1, in the caller's thread). :meth:`encoder` hands
    :func:`encode_rows` to the caller, who encodes pieces where the rows are made (a band's
    pool thread) and gives them to :meth:`write_encoded`, in order. Either way the bytes depend
    on the rows and the pieces only, never on the threads.
    """

    def __init__(self, target: str, *, names: tuple[str, ...], level: int, stamp,
                 threads: int = 1, **kw):
        count, dtype = len(names), np.dtype(kw["dtype"])
        if dtype not in (np.uint8, np.uint16):
            raise ValueError(f"PNG stores uint8 or uint16, not {dtype}")
        if count not in COLOUR_TYPES:
            raise ValueError(f"PNG stores 1-4 channels, not {count}; write .tiff or .npy")
        self._level, self._chunks = level, stamp.png_chunks() if stamp else []
        line = 1 + kw["width"] * count * dtype.itemsize
        self._rows_per_chunk = max(1, _CHUNK_BYTES // line)
        self._chunk = np.empty((self._rows_per_chunk, kw["width"], count), dtype)
        self._filled = 0  # rows of self._chunk filled
        self._above: np.ndarray | None = None  # the row above self._chunk
        self._adler, self._pending = 1, bytearray(zlib.compress(b"", level)[:2])  # zlib header
        self._queued: deque = deque()
        self._threads = max(1, int(threads))
        self._worker = None
        super().__init__(target, channels=count, **kw)  # may refuse the target: no threads yet
        if self._threads > 1:
            self._worker = started_pool(self._threads, "poolcli-png-deflate")

    def encoder(self):
        """``encode(rows, above) -> Encoded`` for :meth:`write_encoded` (thread-safe)."""
        return partial(encode_rows, level=self._level)

    def write_encoded(self, piece: Encoded) -> None:
        """Append the next rows, encoded by :meth:`encoder` (not mixed with :meth:`write_rows`)."""
        if self._fh is None:
            raise ValueError(f"{self.target}: band writer is closed")
        if self._filled or self._queued:
            raise ValueError("write_encoded after write_rows")
        line = 1 + self.width * self.channel_count * self.dtype.itemsize
        if piece.size != piece.rows * line:
            raise ValueError(f"a piece of {piece.size} bytes of scanlines for {piece.rows} rows "
                             f"of {line}: not this image's layout")
        if self.rows_written + piece.rows > self.height:
            raise ValueError(f"{self.rows_written + piece.rows} rows for an image of "
                             f"{self.height}")
        self._guarded(lambda fh: self._append(fh, piece))
        self.rows_written += piece.rows

    def _start(self, fh: BinaryIO) -> None:
        fh.write(png_head(self.width, self.height, self.dtype, self.channel_count, self._chunks))

    def _encode(self, fh: BinaryIO, rows: np.ndarray) -> None:
        done = 0
        while done < len(rows):
            take = min(len(rows) - done, self._rows_per_chunk - self._filled)
            self._chunk[self._filled:self._filled + take] = rows[done:done + take]
            self._filled += take
            done += take
            if self._filled == self._rows_per_chunk:
                self._submit(fh)

    def _submit(self, fh: BinaryIO) -> None:
        """Hand the filled rows of the current chunk to be encoded; start a new chunk."""
        rows, above = self._chunk[:self._filled], self._above
        self._above = rows[-1]
        self._chunk, self._filled = np.empty_like(self._chunk), 0
        if self._worker is None:
            self._append(fh, encode_rows(rows, above, level=self._level))
            return
        self._drain(fh, 2 * self._threads - 1)
        self._queued.append(self._worker.submit(encode_rows, rows, above, level=self._level))

    def _drain(self, fh: BinaryIO, most: int) -> None:
        while len(self._queued) > most:
            self._append(fh, self._queued.popleft().result())  # a worker's exception: here

    def _append(self, fh: BinaryIO, piece: Encoded) -> None:
        self._adler = _adler32_combine(self._adler, piece.adler, piece.size)
        self._pending += piece.data
        self._flush(fh, IDAT_BYTES)

    def _finish(self, fh: BinaryIO) -> None:
        if self._filled:
            self._submit(fh)
        self._drain(fh, 0)
        self._stop()
        # an empty final block (fixed Huffman: BFINAL=1, BTYPE=01, end-of-block), the checksum
        self._pending += b"\x03\x00" + struct.pack(">I", self._adler)
        self._flush(fh, 1)
        write_chunk(fh, b"IEND", b"")

    def _discard(self) -> None:
        self._stop()
        self._queued.clear()

    def _stop(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
            self._worker = None

    def _flush(self, fh: BinaryIO, least: int) -> None:
        """Write the compressed bytes in IDAT chunks of :data:`IDAT_BYTES` (the last shorter)."""
        view = memoryview(self._pending)
        start = 0
        while len(view) - start >= least and len(view) > start:
            end = min(len(view), start + IDAT_BYTES)
            write_chunk(fh, b"IDAT", view[start:end])
            start = end
        view.release()
        del self._pending[:start]


def _adler32_combine(first: int, second: int, size: int) -> int:
    """The Adler-32 of ``a + b`` from ``adler32(a)``, ``adler32(b)`` and ``len(b)`` (zlib's
    ``adler32_combine``, which Python does not expose): ``A = 1 + sum(bytes)`` and
    ``B = sum of the running A``, both modulo 65521."""
    base = 65521
    a1, b1 = first & 0xFFFF, first >> 16
    a2, b2 = second & 0xFFFF, second >> 16
    a = (a1 + a2 - 1) % base
    b = (b1 + b2 + size * (a1 - 1)) % base
    return (b << 16) | a
