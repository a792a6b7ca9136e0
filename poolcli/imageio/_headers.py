"""Image headers read without decoding, for the decompression-bomb guard and unsupported variants.

Private to :mod:`poolcli.imageio`. Each parser takes ``read(offset, size) -> bytes`` (random
access to a file or to bytes already in memory; short at the end) and returns a :class:`Header`,
or ``None`` when the header is not what it should be: then the decoder runs and reports the
file as corrupt in its own words. Nothing here allocates more than a header's worth of bytes.
"""

from __future__ import annotations

import ast
import struct
from dataclasses import dataclass
from typing import Callable

__all__ = ["Header", "Reader", "bytes_reader", "embedded_size", "header_of", "jpeg_header",
           "png_header", "tiff_header"]

Reader = Callable[[int, int], bytes]


@dataclass(frozen=True)
class Header:
    """What a header promises: ``width x height`` pixels of ``channels`` samples of
    ``sample_bytes`` bytes once decoded (the most a decoder may produce from this header), and
    ``unsupported`` naming a variant poolcli cannot decode (``None`` when it can)."""

    width: int
    height: int
    channels: int = 4
    sample_bytes: int = 1
    unsupported: str | None = None
    dtype: str = ""  # a name for the samples in messages ("uint8", "float64", ...)
    data_bytes: int | None = None  # file bytes an uncompressed layout needs for its pixels
    planes: int = 1  # image planes (a volumetric TIFF's ImageDepth)

    @property
    def decoded_bytes(self) -> int:
        return self.width * self.height * self.planes * self.channels * self.sample_bytes


def bytes_reader(data: bytes) -> Reader:
    view = memoryview(data)
    return lambda offset, size: bytes(view[offset:offset + size])


# ---- PNG, GIF, BMP, WebP -------------------------------------------------------------------------

_PNG_CHANNELS = {0: 2, 2: 4, 3: 4, 4: 2, 6: 4}  # with the alpha a tRNS chunk may add


def png_header(read: Reader) -> Header | None:
    head = read(8, 25)
    if len(head) < 25 or head[4:8] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", head[8:18])
    if colour not in _PNG_CHANNELS:
        return None
    return Header(width, height, _PNG_CHANNELS[colour], 2 if depth == 16 else 1)


def gif_header(read: Reader) -> Header:
    width, height = struct.unpack("<HH", read(6, 4).ljust(4, b"\0"))
    return Header(width, height)


_BMP_UNSUPPORTED = {4: "JPEG compression", 5: "PNG compression",
                    6: "BI_ALPHABITFIELDS compression"}


def bmp_header(read: Reader) -> Header | None:
    head = read(0, 54)
    if len(head) < 26:
        return None
    offset, size = struct.unpack("<II", head[10:18])
    if size == 12:  # OS/2 BITMAPCOREHEADER
        width, height, _, bpp = struct.unpack("<HHHH", head[18:26])
        compression = 0
    elif size >= 40 and len(head) >= 34:
        width, height, _, bpp, compression = struct.unpack("<iiHHI", head[18:34])
    else:
        return None
    height = abs(height)
    stride = (abs(width) * bpp + 31) // 32 * 4
    stored = offset + stride * height if compression in (0, 3) else None
    return Header(abs(width), height, 4, 1, _BMP_UNSUPPORTED.get(compression),
                  data_bytes=stored)


def webp_header(read: Reader) -> Header | None:
    head = read(12, 18)
    if len(head) < 18:
        return None
    kind = head[:4]
    if kind == b"VP8X":
        width = int.from_bytes(head[12:15], "little") + 1
        height = int.from_bytes(head[15:18], "little") + 1
    elif kind == b"VP8L" and head[8] == 0x2F:
        bits = int.from_bytes(head[9:13], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif kind == b"VP8 " and head[11:14] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", read(26, 4).ljust(4, b"\0"))
        width, height = width & 0x3FFF, height & 0x3FFF
    else:
        return None
    return Header(width, height)


# ---- JPEG ----------------------------------------------------------------------------------------

# SOFn markers libjpeg-turbo (Pillow's decoder) cannot decode. Baseline, extended and
# progressive Huffman (SOF0-2), 8-bit lossless (SOF3) and arithmetic coding (SOF9, SOF10) it can.
_JPEG_UNSUPPORTED = {0xC5: "hierarchical, SOF5", 0xC6: "hierarchical, SOF6",
                     0xC7: "hierarchical, SOF7", 0xCB: "lossless arithmetic coding, SOF11",
                     0xCD: "hierarchical, SOF13", 0xCE: "hierarchical, SOF14",
                     0xCF: "hierarchical, SOF15"}
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD9)) | {0x01}


def jpeg_header(read: Reader, start: int = 0) -> Header | None:
    """The frame header (SOFn) of the JPEG starting at ``start``, walking the markers before it."""
    pos = start + 2
    for _ in range(10_000):  # markers before the frame: APPn, COM, DQT, DHT, DRI, ...
        head = read(pos, 4)
        if len(head) < 4 or head[0] != 0xFF:
            return None
        marker = head[1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # a scan or the end before any frame header
            return None
        length = struct.unpack(">H", head[2:4])[0]
        if marker in _SOF:
            return _jpeg_frame(marker, read(pos + 4, 6))
        pos += 2 + length
    return None


def _jpeg_frame(marker: int, sof: bytes) -> Header | None:
    if len(sof) < 6:
        return None
    precision, height, width, components = struct.unpack(">BHHB", sof)
    unsupported = _JPEG_UNSUPPORTED.get(marker)
    if unsupported is None and precision != 8:
        unsupported = f"{precision}-bit precision"
    if unsupported is None and components not in (1, 3, 4):
        unsupported = f"{components} components"
    if unsupported is None and height == 0:
        unsupported = "height set by a DNL marker"
    return Header(width, height, max(components, 3), 1, unsupported)


# ---- NPY -----------------------------------------------------------------------------------------


def npy_header(read: Reader) -> Header | None:
    """Shape and dtype of a ``.npy`` file (versions 1.0 to 3.0), parsed without numpy's reader
    so that only the header's bytes are read; anything odd is left to :func:`numpy.load`."""
    import numpy as np

    head = read(0, 12)
    if len(head) < 10 or head[6] not in (1, 2, 3):
        return None
    if head[6] == 1:
        size, start = struct.unpack("<H", head[8:10])[0], 10
    else:
        size, start = struct.unpack("<I", head[8:12])[0], 12
    if size > 100_000:
        return None
    try:
        meta = ast.literal_eval(read(start, size).decode("latin-1"))
        shape = tuple(int(n) for n in meta["shape"])
        dtype = np.dtype(meta["descr"])
    except Exception:
        return None
    if len(shape) not in (2, 3) or min(shape) < 0 or dtype.hasobject or dtype.names:
        return None
    channels = shape[2] if len(shape) == 3 else 1
    itemsize = max(dtype.itemsize, 4 if dtype == np.float16 else 1)  # float16 is widened
    count = shape[0] * shape[1] * channels
    return Header(shape[1], shape[0], channels, itemsize, dtype=dtype.name,
                  data_bytes=start + size + count * dtype.itemsize)


# ---- TIFF ----------------------------------------------------------------------------------------

_TIFF_TYPES = {1: "B", 3: "H", 4: "I", 16: "Q", 6: "b", 8: "h", 9: "i", 17: "q"}
_TIFF_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
               13: 4, 16: 8, 17: 8, 18: 8}
_TIFF_WANTED = (256, 257, 258, 277, 339, 32997)  # sizes, bits, samples, format, depth
_TIFF_KINDS = {1: "uint", 2: "int", 3: "float"}


def tiff_header(read: Reader) -> Header | None:
    """Sizes from the first IFD of a classic or Big TIFF (the pixels count, the decoded bytes:
    width x height x depth x samples x bytes a sample)."""
    head = read(0, 16)
    if len(head) < 8:
        return None
    order = "<" if head[:2] == b"II" else ">"
    big = struct.unpack(order + "H", head[2:4])[0] == 43
    if big:
        if len(head) < 16:
            return None
        offset, count_fmt, entry, value_size = struct.unpack(order + "Q", head[8:16])[0], "Q", 20, 8
    else:
        offset, count_fmt, entry, value_size = struct.unpack(order + "I", head[4:8])[0], "H", 12, 4
    count_size = struct.calcsize(count_fmt)
    raw = read(offset, count_size)
    if len(raw) < count_size:
        return None
    count = min(struct.unpack(order + count_fmt, raw)[0], 65_535)
    entries = read(offset + count_size, count * entry)
    tags = _tiff_tags(entries, order, big, entry, value_size, read)
    if 256 not in tags or 257 not in tags:
        return None
    samples = tags.get(277, 1)
    bits = tags.get(258, 1)
    depth = tags.get(32997, 1)
    size = max(1, (bits + 7) // 8)
    kind = _TIFF_KINDS.get(tags.get(339, 1), "uint")
    return Header(tags[256], tags[257], max(samples, 1), size, dtype=f"{kind}{8 * size}",
                  planes=max(depth, 1))


def _tiff_tags(entries, order, big, entry, value_size, read) -> dict[int, int]:
    """The first value (the largest, for BitsPerSample) of each wanted tag."""
    tags: dict[int, int] = {}
    head = order + ("HHQ" if big else "HHI")
    for pos in range(0, len(entries) - entry + 1, entry):
        tag, typ, n = struct.unpack(head, entries[pos:pos + (12 if big else 8)])
        if tag not in _TIFF_WANTED or typ not in _TIFF_TYPES or n < 1:
            continue
        fmt = order + _TIFF_TYPES[typ]
        size = _TIFF_SIZES[typ]
        inline = size * n <= value_size
        n = min(n, 64) if tag == 258 else 1  # the largest of the first bits counts is enough
        field = entries[pos + entry - value_size:pos + entry]
        if not inline:
            where = struct.unpack(order + ("Q" if big else "I"), field)[0]
            field = read(where, size * n)
        values = [struct.unpack(fmt, field[i * size:(i + 1) * size])[0]
                  for i in range(min(n, len(field) // size))]
        if values:
            tags[tag] = max(values)
    return tags


# ---- dispatch ------------------------------------------------------------------------------------

_PARSERS: dict[str, Callable[[Reader], Header | None]] = {
    "PNG": png_header, "JPEG": jpeg_header, "GIF": gif_header, "BMP": bmp_header,
    "WEBP": webp_header, "NPY": npy_header, "TIFF": tiff_header,
}


def header_of(fmt: str, read: Reader) -> Header | None:
    """The header of a file of format ``fmt`` (``None`` when unreadable: the decoder decides)."""
    try:
        return _PARSERS[fmt](read)
    except (struct.error, ValueError, OverflowError, IndexError):
        return None


# ---- streams inside TIFF segments ----------------------------------------------------------------


def embedded_size(compression: int, data: bytes) -> tuple[int, int, int] | None:
    """``(width, height, channels)`` an image-compressed TIFF segment decodes to, when its own
    header says so (JPEG, PNG, WebP, JPEG 2000); ``None`` when the header is unreadable."""
    read = bytes_reader(data)
    try:
        if compression in (6, 7, 33007, 34892):
            found = jpeg_header(read) if data[:2] == b"\xff\xd8" else None
        elif compression == 34933:
            found = png_header(read) if data[:8] == b"\x89PNG\r\n\x1a\n" else None
        elif compression == 50001:
            found = webp_header(read) if data[:4] == b"RIFF" else None
        elif compression in (33003, 33004, 33005, 34712):
            return _j2k_size(data)
        else:
            return None
    except (struct.error, ValueError, IndexError):
        return None
    return None if found is None else (found.width, found.height, found.channels)


def _j2k_size(data: bytes) -> tuple[int, int, int] | None:
    """Image size from a JPEG 2000 codestream's SIZ marker (raw, or in a JP2 ``jp2c`` box)."""
    start = data.find(b"\xff\x4f\xff\x51")
    if start < 0:
        return None
    siz = data[start + 4:start + 4 + 38]
    if len(siz) < 38:
        return None
    xsiz, ysiz, x0, y0 = struct.unpack(">IIII", siz[4:20])
    components = struct.unpack(">H", siz[36:38])[0]
    return max(0, xsiz - x0), max(0, ysiz - y0), components
