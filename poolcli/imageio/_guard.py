"""The decompression-bomb guard: pixels, decoded bytes, TIFF strips and tiles, file size.

Private to :mod:`poolcli.imageio`. Every limit derives from ``max_pixels`` (``--max-pixels``), so
raising that option raises them all; ``None`` switches the guard off. Every refusal is one line,
``FILE: WxH ... exceeds ... (decompression-bomb guard)``, raised before the decoder allocates.
"""

from __future__ import annotations

from poolcli.errors import ImageReadError
from poolcli.imageio._common import corrupt
from poolcli.imageio._headers import Header, Reader, header_of

__all__ = ["BYTES_PER_PIXEL", "SEGMENT_FLOOR", "check_bytes", "check_file_size", "check_pixels",
           "check_segment", "decoded_byte_limit", "file_size_limit", "preflight"]

#: Decoded bytes allowed per pixel of ``max_pixels``: 4 channels x 2 bytes. An honest 16-bit
#: RGBA image (the deepest layout PNG has, and the deepest photo TIFFs use) of exactly
#: ``max_pixels`` pixels is exactly at the limit; 8-bit RGB uses 3/8 of it. Deeper samples
#: (float32 or float64, many channels) are allowed on proportionally fewer pixels. At the
#: default of 178,956,970 pixels that is 1,431,655,760 bytes (1.33 GiB) of decoded image.
BYTES_PER_PIXEL = 8

#: A TIFF strip or tile may decode to as many bytes as the whole image (one strip for the whole
#: image is common), or to this much when the image is smaller than one tile (a 1024 x 1024
#: 16-bit RGBA tile is 8 MiB). A tile claiming more holds nothing of the image: refused.
SEGMENT_FLOOR = 16 << 20

#: Files are read whole. A file may be at most twice the decoded-size limit (plus 1 MiB): an
#: honest single image is at most about its decoded size even stored uncompressed, and the worst
#: encoders (LZW on noise) expand by half; multi-page files beyond that need --max-pixels raised.
FILE_FACTOR = 2
FILE_SLACK = 1 << 20

_GUARD = "decompression-bomb guard"


def decoded_byte_limit(max_pixels: int | None) -> int | None:
    """Most bytes an image may decode to (``None``: no limit)."""
    return None if max_pixels is None else max_pixels * BYTES_PER_PIXEL


def file_size_limit(max_pixels: int | None) -> int | None:
    """Largest file read (``None``: no limit)."""
    limit = decoded_byte_limit(max_pixels)
    return None if limit is None else FILE_FACTOR * limit + FILE_SLACK


def check_pixels(source: str, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageReadError(
            f"{source}: {width}x{height} = {width * height} pixels exceeds "
            f"--max-pixels {max_pixels} ({_GUARD})"
        )


def check_bytes(source: str, width: int, height: int, channels: int, sample_bytes: int,
                dtype: str, max_pixels: int | None, planes: int = 1) -> None:
    """Refuse images that decode to more than :func:`decoded_byte_limit` bytes."""
    limit = decoded_byte_limit(max_pixels)
    total = width * height * planes * channels * sample_bytes
    if limit is None or total <= limit:
        return
    size = f"{width}x{height}" + (f"x{planes}" if planes > 1 else "")
    kind = dtype or f"{8 * sample_bytes}-bit"
    raise ImageReadError(
        f"{source}: {size} x {channels} channel{'s' if channels != 1 else ''} x {kind} = "
        f"{total} bytes decoded exceeds {limit}, {BYTES_PER_PIXEL} bytes a pixel at "
        f"--max-pixels {max_pixels} ({_GUARD})"
    )


def check_segment(source: str, width: int, height: int, shape: tuple[int, ...], kind: str,
                  segment_bytes: int, image_bytes: int, max_pixels: int | None) -> None:
    """Refuse a TIFF whose strips or tiles decode to more than the image (or 16 MiB)."""
    if max_pixels is None:
        return
    limit = max(image_bytes, SEGMENT_FLOOR)
    if segment_bytes > limit:
        dims = "x".join(str(n) for n in shape)
        raise ImageReadError(
            f"{source}: {width}x{height} image in {dims} {kind} of {segment_bytes} bytes each "
            f"exceeds {limit} bytes a {kind[:-1]}, the image's own size or 16 MiB ({_GUARD})"
        )


def check_file_size(source: str, size: int, max_pixels: int | None) -> None:
    limit = file_size_limit(max_pixels)
    if limit is not None and size > limit:
        what = "standard input" if source == "<stdin>" else f"file of {size} bytes"
        raise ImageReadError(
            f"{source}: {what} exceeds {limit} bytes, twice the decoded-bytes limit at "
            f"--max-pixels {max_pixels} ({_GUARD})"
        )


def preflight(source: str, fmt: str, read: Reader, size: int,
              max_pixels: int | None) -> Header | None:
    """Check what the header promises before the file is read whole or decoded.

    Refuses unsupported variants (``FILE: unsupported JPEG (12-bit precision)``), images over
    the pixel or byte limit, and uncompressed layouts whose pixels cannot fit in the file.
    Returns the header, or ``None`` when it is unreadable (the decoder then reports it).
    """
    header = header_of(fmt, read)
    if header is None:
        return None
    if header.unsupported:
        raise ImageReadError(f"{source}: unsupported {fmt} ({header.unsupported})")
    check_pixels(source, header.width, header.height, max_pixels)
    check_bytes(source, header.width, header.height, header.channels, header.sample_bytes,
                header.dtype, max_pixels, header.planes)
    if header.data_bytes is not None and header.data_bytes > size:
        raise corrupt(source, fmt)
    return header
