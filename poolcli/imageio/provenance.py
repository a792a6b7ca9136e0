"""Provenance: every image poolcli writes says so in its own metadata, and can be recognised.

``poolcli pool --op avg photos/`` after ``poolcli pool --op max photos/`` must not pool
``img_max.png`` again. So :func:`~poolcli.imageio.write_image` takes a ``provenance`` mapping
(the caller builds it, e.g. ``{"command": "pool", "op": "max", "params": {...}, "source":
"photo.png"}``) and stores it as one compact JSON object in the format's own metadata, as
ImageMagick and GIMP record themselves; :func:`read_provenance` reads it back from the metadata
alone, never the pixels, and :func:`is_poolcli_output` is the test directory expansion uses.

The JSON object always starts with ``"software": "poolcli <version>"`` (added when the caller
leaves it out; a caller's own value must start with ``poolcli``): that key is what marks a file
as poolcli's, in every format. The JSON is UTF-8 with non-ASCII characters as they are
(``café.png``); a string that cannot be UTF-8 (a file name with undecodable bytes, held by Python
as lone surrogates) makes the whole object ASCII with ``\\u`` escapes, which round-trips too.
At most :data:`MAX_PROVENANCE_BYTES` bytes.

Where each format keeps it (``read_provenance`` looks exactly there):

======  ===========================================================================================
PNG     two text chunks right after IHDR, before the first IDAT: ``Software`` = ``poolcli
        <version>`` and ``poolcli`` = the JSON; ``tEXt`` when the text is Latin-1, else an
        uncompressed ``iTXt`` (UTF-8). A ``poolcli`` chunk after the first IDAT is not looked for:
        poolcli never writes one there, and finding it would mean reading the image data.
TIFF    first IFD: ``Software`` (305) = ``poolcli <version>`` and ``ImageDescription`` (270) = the
        JSON, ASCII with ``\\u`` escapes (TIFF ASCII is 7-bit); tifffile's own shape JSON is not
        written (``metadata=None``).
JPEG    a COM (comment) marker holding the JSON, before the scan (Pillow's ``comment=``).
WebP    an XMP packet (``XMP `` chunk, VP8X extended format; Pillow's ``xmp=``):
        ``xmp:CreatorTool`` = ``poolcli <version>`` and the JSON as the text of a
        ``poolcli:provenance`` element (``&``, ``<``, ``>`` escaped). WebP puts metadata after the
        image data: the reader seeks over it, reading only chunk headers.
GIF     a comment extension in the header, before the first image (Pillow's ``comment=``).
BMP     nothing: BMP has no metadata block. A poolcli BMP is not recognised.
NPY     nothing: the ``.npy`` header holds exactly ``descr``, ``fortran_order`` and ``shape``
        (numpy's reader refuses any other key) and bytes after the data would be an anomaly to
        every other reader. A poolcli ``.npy`` is not recognised from its content; only its name
        (the ``{stem}_{op}`` pattern) can tell, and that is the expansion's business, not this
        module's.
======  ===========================================================================================

Reading is sniffed from the first bytes, not the suffix. Reads are bounded (at most
:data:`READ_BUDGET` bytes and :data:`STEP_LIMIT` chunks, markers or blocks per file; large
chunks are seeked over, never read), only regular files are opened (a FIFO or device gives
``None`` at once), and a missing, unreadable, truncated, damaged or hostile file gives ``None``.
This module imports none of Pillow, tifffile or imagecodecs: reading needs none of them.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

from poolcli import __version__
from poolcli.imageio.png import Chunk, text_chunk
from poolcli.imageio.store import is_url

__all__ = [
    "MAX_PROVENANCE_BYTES",
    "READ_BUDGET",
    "SOFTWARE",
    "STEP_LIMIT",
    "Provenance",
    "is_poolcli_output",
    "prepare_provenance",
    "read_provenance",
]

#: The ``software`` value and PNG/TIFF ``Software`` text: ``"poolcli <version>"``.
SOFTWARE = f"poolcli {__version__}"

#: Largest provenance JSON written (UTF-8 bytes); ``ValueError`` above it. JPEG comments hold
#: 65,533 bytes; a command, an operator, its parameters and a source path need far less.
MAX_PROVENANCE_BYTES = 16384

#: Most bytes :func:`read_provenance` reads from one file (seeks over larger chunks are free).
READ_BUDGET = 256 * 1024

#: Most chunks, markers or blocks :func:`read_provenance` walks in one file.
STEP_LIMIT = 4096

_PNG_KEYWORD = "poolcli"
_XMP_NS = "https://poolcli.invalid/ns/1.0/"  # a namespace name, never fetched
_XMP_ELEMENT = re.compile(rb"<poolcli:provenance>([^<]*)</poolcli:provenance>")
# A text that long cannot be ours: never read it (XMP: & escaped as &amp; at worst 5x, + packet).
_TEXT_CAP = MAX_PROVENANCE_BYTES + 256
_XMP_CAP = 5 * MAX_PROVENANCE_BYTES + 4096


# ---- writing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provenance:
    """A checked, serialised provenance record, ready for each format's metadata.

    Made by :func:`prepare_provenance`; :func:`~poolcli.imageio.write_image` calls it.
    """

    software: str  #: ``"poolcli <version>"`` (or the caller's ``software`` value)
    text: str  #: the compact JSON object, ``software`` first

    def png_chunks(self) -> list[Chunk]:
        """``Software`` and ``poolcli`` text chunks, for before the first IDAT."""
        return [text_chunk("Software", self.software), text_chunk(_PNG_KEYWORD, self.text)]

    def tiff_description(self) -> str:
        """The JSON in ASCII, for ``ImageDescription``.

        tifffile takes a description holding ``"shape":`` for its own shaped-array JSON; a key
        ``shape`` is written ``"shape" :`` (the same JSON) so that it never does.
        """
        ascii_text = _dumps(json.loads(self.text), ascii_only=True)
        return ascii_text.replace('"shape":', '"shape" :')

    def comment(self) -> bytes:
        """The JSON in UTF-8, for a JPEG COM marker or a GIF comment extension."""
        return self.text.encode("utf-8")

    def xmp(self) -> bytes:
        """An XMP packet naming poolcli as ``CreatorTool`` and holding the JSON."""
        tool = _xml_escape(self.software).replace('"', "&quot;")
        return (
            '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
            ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
            '  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
            f'    xmlns:poolcli="{_XMP_NS}" xmp:CreatorTool="{tool}">\n'
            f"   <poolcli:provenance>{_xml_escape(self.text)}</poolcli:provenance>\n"
            "  </rdf:Description>\n"
            " </rdf:RDF>\n"
            "</x:xmpmeta>\n"
            '<?xpacket end="r"?>'
        ).encode("utf-8")


def prepare_provenance(provenance: Mapping[str, Any]) -> Provenance:
    """Check and serialise a provenance mapping (``ValueError`` if it cannot be stored).

    Keys must be strings and values JSON (numpy scalars and paths are converted; NaN and inf
    are refused). ``software`` defaults to :data:`SOFTWARE`; a given one must be a string
    starting with ``poolcli``, since that is how a reader recognises the file.
    """
    if not isinstance(provenance, Mapping):
        raise ValueError(f"provenance must be a mapping, not {type(provenance).__name__}")
    if not all(isinstance(key, str) for key in provenance):
        raise ValueError("provenance keys must be strings")
    software = provenance.get("software", SOFTWARE)
    if not _is_ours(software):
        raise ValueError(f"provenance software must start with 'poolcli', got {software!r}")
    record = {"software": software, **{k: v for k, v in provenance.items() if k != "software"}}
    try:
        text = _dumps(record, ascii_only=False)
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates (undecodable file names): escape them
        text = _dumps(record, ascii_only=True)
        size = len(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"provenance is not JSON-serialisable: {exc}") from None
    if size > MAX_PROVENANCE_BYTES:
        raise ValueError(f"provenance is {size} bytes as JSON; at most {MAX_PROVENANCE_BYTES}")
    return Provenance(software, text)


def _dumps(record: Any, *, ascii_only: bool) -> str:
    return json.dumps(record, ensure_ascii=ascii_only, allow_nan=False, separators=(",", ":"),
                      default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy scalars, without importing numpy here
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _xml_unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _is_ours(software: object) -> bool:
    return isinstance(software, str) and (software == "poolcli" or software.startswith("poolcli "))


# ---- reading -----------------------------------------------------------------------------------


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance record poolcli stored in the image at ``path``, or ``None``.

    Reads only the metadata before (PNG, JPEG, GIF, TIFF) or around (WebP) the image data,
    within :data:`READ_BUDGET` bytes. ``None`` when the file is not one poolcli wrote with
    provenance (see the module docstring for BMP and ``.npy``), and when it is missing,
    unreadable, not a regular file, truncated, damaged or hostile: nothing is raised for what a
    file contains.
    """
    opened = _open_regular(path)
    if opened is None:
        return None
    fh, size = opened
    with fh:
        reader = _Reader(fh, size)
        try:
            for text in _candidates(reader):
                record = _parse(text)
                if record is not None:
                    return record
        except (_Stop, OSError, struct.error):
            return None
    return None


def is_poolcli_output(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` records that poolcli wrote it (:func:`read_provenance`)."""
    return read_provenance(path) is not None


def _open_regular(path: str | os.PathLike[str]) -> tuple[BinaryIO, int] | None:
    """The file opened for reading and its size, if it is a regular file; else ``None``.

    Opened non-blocking, so a FIFO without a writer does not hang; then refused by ``fstat``.
    An object at a URL is read in small ranged requests (:func:`poolcli.imageio.store.open_ranged`).
    """
    if is_url(path):
        from poolcli.imageio.store import open_ranged

        return open_ranged(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError):  # missing, unreadable, a NUL in the name, ...
        return None
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            return os.fdopen(fd, "rb"), info.st_size
    except OSError:
        pass
    os.close(fd)
    return None


def _parse(text: str) -> dict[str, Any] | None:
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(record, dict) and _is_ours(record.get("software")):
        return record
    return None


class _Stop(Exception):
    """The walk ends: truncated, over budget, or not a structure we read."""


class _Reader:
    """Exact, bounded reads and seeks over a file of known size."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh, self.size, self.budget, self.steps = fh, size, READ_BUDGET, STEP_LIMIT

    def read(self, count: int) -> bytes:
        self.budget -= count
        if count < 0 or self.budget < 0:
            raise _Stop
        data = self.fh.read(count)
        if len(data) != count:
            raise _Stop
        return data

    def skip(self, count: int) -> None:
        target = self.fh.tell() + count
        if count < 0 or target > self.size:
            raise _Stop
        self.fh.seek(target)

    def seek(self, offset: int) -> None:
        if not 0 <= offset <= self.size:
            raise _Stop
        self.fh.seek(offset)

    def step(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise _Stop


def _candidates(reader: _Reader) -> Iterator[str]:
    head = reader.read(12) if reader.size >= 12 else b""
    walker = _walker(head)
    if walker is None:
        return iter(())
    reader.seek(0)
    return walker(reader)


def _walker(head: bytes) -> Callable[[_Reader], Iterator[str]] | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_texts
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _tiff_texts
    if head.startswith(b"\xff\xd8"):
        return _jpeg_comments
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_texts
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _gif_comments
    return None


def _png_texts(reader: _Reader) -> Iterator[str]:
    """``poolcli`` tEXt/iTXt texts with a good CRC, from IHDR up to the first IDAT."""
    reader.skip(8)
    while True:
        reader.step()
        length, ctype = struct.unpack(">I4s", reader.read(8))
        if ctype in (b"IDAT", b"IEND"):
            return
        if ctype not in (b"tEXt", b"iTXt") or length > _TEXT_CAP:
            reader.skip(length + 4)
            continue
        payload = reader.read(length)
        (crc,) = struct.unpack(">I", reader.read(4))
        if zlib.crc32(payload, zlib.crc32(ctype)) != crc:
            continue
        keyword, _, rest = payload.partition(b"\x00")
        if keyword != _PNG_KEYWORD.encode():
            continue
        if ctype == b"tEXt":
            yield rest.decode("latin-1")
        elif rest[:2] == b"\x00\x00":  # iTXt, uncompressed (poolcli never compresses it)
            _language, _, rest = rest[2:].partition(b"\x00")
            _translated, _, text = rest.partition(b"\x00")
            decoded = _utf8(text)
            if decoded is not None:
                yield decoded


def _tiff_texts(reader: _Reader) -> Iterator[str]:
    """The ``ImageDescription`` of the first IFD (classic TIFF or BigTIFF)."""
    head = reader.read(16 if reader.size >= 16 else 8)
    order = "<" if head[:2] == b"II" else ">"
    big = struct.unpack(order + "H", head[2:4])[0] == 43
    if big:
        (offset,) = struct.unpack(order + "Q", head[8:16])
        count_fmt, entry_fmt, entry_size, inline = "Q", "HHQQ", 20, 8
    else:
        (offset,) = struct.unpack(order + "I", head[4:8])
        count_fmt, entry_fmt, entry_size, inline = "H", "HHII", 12, 4
    reader.seek(offset)
    count_size = struct.calcsize(count_fmt)
    (count,) = struct.unpack(order + count_fmt, reader.read(count_size))
    if count > STEP_LIMIT:
        return
    table = reader.read(count * entry_size)
    for index in range(count):
        tag, kind, length, value = struct.unpack_from(order + entry_fmt, table, index * entry_size)
        if tag != 270 or kind not in (1, 2, 7) or length > _TEXT_CAP:  # BYTE, ASCII, UNDEFINED
            continue
        if length <= inline:
            start = index * entry_size + (12 if big else 8)
            data = table[start : start + length]
        else:
            reader.seek(value)
            data = reader.read(length)
        decoded = _utf8(data.rstrip(b"\x00"))
        if decoded is not None:
            yield decoded


def _jpeg_comments(reader: _Reader) -> Iterator[str]:
    """COM marker texts, from SOI up to the first SOS (start of scan)."""
    reader.skip(2)
    while True:
        reader.step()
        if reader.read(1) != b"\xff":
            return
        marker = reader.read(1)[0]
        while marker == 0xFF:  # fill bytes
            reader.step()
            marker = reader.read(1)[0]
        if marker in (0xD9, 0xDA):  # EOI, SOS
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            continue
        (length,) = struct.unpack(">H", reader.read(2))
        if length < 2:
            return
        if marker != 0xFE or length - 2 > _TEXT_CAP:
            reader.skip(length - 2)
            continue
        decoded = _utf8(reader.read(length - 2))
        if decoded is not None:
            yield decoded


def _webp_texts(reader: _Reader) -> Iterator[str]:
    """The ``poolcli:provenance`` text of an XMP chunk of an extended (VP8X) WebP."""
    reader.skip(12)
    fourcc, size = struct.unpack("<4sI", reader.read(8))
    if fourcc != b"VP8X" or size < 10 or not reader.read(size + (size & 1))[0] & 0x04:
        return  # simple WebP (no metadata), or no XMP flag
    while True:
        reader.step()
        fourcc, size = struct.unpack("<4sI", reader.read(8))
        if fourcc != b"XMP ":
            reader.skip(size + (size & 1))
            continue
        if size > _XMP_CAP:
            return
        match = _XMP_ELEMENT.search(reader.read(size))
        decoded = _utf8(match.group(1)) if match else None
        if decoded is not None:
            yield _xml_unescape(decoded)
        return


def _gif_comments(reader: _Reader) -> Iterator[str]:
    """Comment extension texts before the first image descriptor."""
    screen = reader.read(13)  # header, logical screen descriptor
    if screen[10] & 0x80:  # global colour table
        reader.skip(3 << ((screen[10] & 0x07) + 1))
    while True:
        reader.step()
        introducer = reader.read(1)
        if introducer != b"!":  # image descriptor, trailer or garbage: no more comments
            return
        is_comment = reader.read(1)[0] == 0xFE
        parts: list[bytes] = []
        total = 0
        while True:
            reader.step()
            size = reader.read(1)[0]
            if size == 0:
                break
            total += size
            if is_comment and total <= _TEXT_CAP:
                parts.append(reader.read(size))
            else:
                reader.skip(size)
        if is_comment and total <= _TEXT_CAP:
            decoded = _utf8(b"".join(parts))
            if decoded is not None:
                yield decoded


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
