"""PNG at the byte level, for the decoder: IHDR, chunk walking, CRC checks, the decode route.

Private to :mod:`poolcli.imageio` (used by :mod:`poolcli.imageio.read`). Nothing here decodes
pixels: it decides how a PNG is decoded and refuses damaged files before any decoder runs.
"""

from __future__ import annotations

import struct
import zlib

from poolcli.errors import ImageReadError
from poolcli.imageio._common import corrupt

__all__ = [
    "ICC_READ_MAX",
    "check_png_crcs",
    "png_chunks",
    "png_direct",
    "png_for_pillow",
    "png_iccp_profile",
    "png_ihdr",
    "png_interlaced",
    "png_unknown_critical",
]

#: Most bytes of an ICC profile inflated from an iCCP chunk: enough for any profile's header and
#: description (all poolcli reads), however large the chunk claims to inflate.
ICC_READ_MAX = 1 << 20


def png_ihdr(data: bytes, source: str) -> tuple[int, int, int, int]:
    """Return ``(width, height, bit_depth, colour_type)`` from the PNG IHDR chunk."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise corrupt(source, "PNG")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, colour


def check_png_crcs(data: bytes, source: str) -> None:
    """Refuse a PNG whose chunks fail their CRC-32 (libpng does; Pillow skips image data).

    Only complete chunks are checked (a cut file is reported by the decoder as truncated). The
    CRCs are computed over memoryviews, so nothing is copied, by libdeflate's CRC-32: 0.8 ms for
    10 MB where ``zlib.crc32`` took 6.6 ms.
    """
    from imagecodecs import deflate_crc32

    view = memoryview(data)
    pos, end = 8, len(data)
    while pos + 12 <= end:
        length = int.from_bytes(view[pos : pos + 4], "big")
        stop = pos + 12 + length
        if stop > end:
            return
        stored = int.from_bytes(view[stop - 4 : stop], "big")
        if deflate_crc32(view[pos + 4 : stop - 4]) != stored:
            name = bytes(view[pos + 4 : pos + 8]).decode("latin-1")
            shown = name if name.isalpha() else repr(name)
            raise ImageReadError(
                f"{source}: truncated or corrupt PNG data (CRC checksum mismatch in the {shown} "
                "chunk)"
            )
        if view[pos + 4 : pos + 8] == b"IEND":
            return
        pos = stop


def png_chunks(data: bytes):
    """Yield ``(type, payload)`` for each complete chunk up to IEND (payloads are memoryviews)."""
    view = memoryview(data)
    pos = 8
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", view[pos : pos + 8])
        if pos + 12 + length > len(data):
            return
        yield ctype, view[pos + 8 : pos + 8 + length]
        if ctype == b"IEND":
            return
        pos += 12 + length


# Text keywords from which Pillow reads an orientation (XMP, ImageMagick's raw EXIF profile, a
# plain "exif" text chunk).
_PNG_ORIENTATION_TEXT = (b"XML:com.adobe.xmp", b"Raw profile type exif", b"Raw profile type APP1",
                         b"exif")
_TEXT = (b"tEXt", b"zTXt", b"iTXt")


def png_direct(data: bytes, depth: int, colour: int) -> bool:
    """Whether the PNG decodes straight into numpy (``imagecodecs.png_decode``, libpng).

    Every 16-bit PNG does (Pillow reduces 16-bit LA/RGB/RGBA to 8 bits). Plain 8-bit grey, LA,
    RGB and RGBA do too: Pillow holds RGB as 4 bytes a pixel and ``np.asarray`` copies that,
    so for an 8192 x 8192 RGB image libpng needs 1.8x the decoded size where Pillow needs 2.5x.
    Grey and RGB with a tRNS colour key do, at every bit depth: libpng turns the key into alpha
    (Pillow compares a 2- or 4-bit grey key with the pixels scaled to 8 bits, and misses).
    Files with something Pillow interprets (palette, animation, an orientation in XMP or text
    chunks), and other bit depths below 8 and interlaced 8-bit files, stay with Pillow.
    """
    if depth == 16:
        return True
    if colour not in (0, 2, 4, 6) or depth not in (1, 2, 4, 8):
        return False
    keyed = False
    for ctype, payload in png_chunks(data):
        if ctype in (b"acTL", b"fcTL"):
            return False
        if ctype == b"tRNS":
            keyed = colour in (0, 2)
        if ctype in _TEXT:
            keyword = bytes(payload[:80]).partition(b"\x00")[0]
            if keyword in _PNG_ORIENTATION_TEXT:
                return False
    if keyed:
        return True
    return depth == 8 and not png_interlaced(data)


_CRITICAL = (b"IHDR", b"PLTE", b"IDAT", b"IEND")


def png_unknown_critical(data: bytes) -> str | None:
    """The name of a critical chunk (upper-case first letter) the PNG standard does not define:
    a decoder must not show such an image (libpng refuses it, Pillow skips it)."""
    for ctype, _ in png_chunks(data):
        if ctype.isalpha() and ctype[:1].isupper() and ctype not in _CRITICAL:
            return ctype.decode("ascii")
    return None


def png_interlaced(data: bytes) -> bool:
    """Adam7 interlacing (IHDR interlace method 1)."""
    return len(data) > 28 and data[28] == 1


def png_iccp_profile(payload: bytes) -> bytes:
    """The ICC profile of a PNG iCCP chunk, inflated to :data:`ICC_READ_MAX` bytes at most
    (empty if unreadable): a chunk inflating to gigabytes costs a megabyte."""
    _, sep, rest = payload.partition(b"\x00")
    try:
        return zlib.decompressobj().decompress(rest[1:], ICC_READ_MAX) if sep else b""
    except zlib.error:
        return b""


def _text_size(ctype: bytes, payload: memoryview, limit: int) -> int:
    """Bytes of text a text chunk holds once inflated (counting stops past ``limit``)."""
    keyword, _, rest = bytes(payload).partition(b"\x00")
    if ctype == b"zTXt":
        compressed = rest[1:]
    elif ctype == b"iTXt" and rest[:1] == b"\x01":
        compressed = rest[2:].split(b"\x00", 2)[-1]
    else:
        return len(rest)
    try:
        return len(zlib.decompressobj().decompress(compressed, limit + 1))
    except zlib.error:
        return 0


def png_for_pillow(data: bytes, text_limit: int) -> tuple[bytes, bytes | None, list[str]]:
    """The PNG as handed to Pillow: ``(data, ICC profile or None, notes)``.

    Pillow refuses text chunks that inflate beyond ``PngImagePlugin.MAX_TEXT_CHUNK`` (1 MiB)
    and ICC profiles beyond it, so a valid PNG with a long comment would fail. poolcli uses no
    text but an orientation, and reads the ICC profile itself (:func:`png_iccp_profile`): text
    chunks other than orientation metadata, and iCCP, are left out of the bytes Pillow sees
    (their CRCs are already checked); an orientation chunk over ``text_limit`` is left out too,
    with a note. ``data`` itself is returned when nothing is left out.
    """
    keep: list[memoryview] = []
    notes: list[str] = []
    icc = None
    view = memoryview(data)
    pos, last = 8, 0
    dropped = False
    for ctype, payload in png_chunks(data):
        end = pos + 12 + len(payload)
        drop = ctype == b"iCCP" or ctype in _TEXT
        if ctype == b"iCCP":
            icc = png_iccp_profile(bytes(payload))
        elif ctype in _TEXT:
            keyword = bytes(payload[:80]).partition(b"\x00")[0]
            if keyword in _PNG_ORIENTATION_TEXT:
                drop = _text_size(ctype, payload, text_limit) > text_limit
                if drop:
                    name = keyword.decode("latin-1")
                    notes.append(f"{name!r} text chunk over {text_limit} bytes ignored "
                                 "(an orientation in it is not applied)")
        if drop:
            keep.append(view[last:pos])
            last, dropped = end, True
        pos = end
    if not dropped:
        return data, icc, notes
    keep.append(view[last:])
    return b"".join(keep), icc, notes
