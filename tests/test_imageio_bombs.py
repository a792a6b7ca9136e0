"""Decompression bombs beyond the pixel count: decoded bytes, tiles and strips, embedded streams.

Every hostile file is generated here (nothing downloaded, no binary blobs). Each is read by
``read_image`` in a child process whose peak resident memory is measured: a bomb is
refused with the one-line guard message before anything large is allocated, or decoded within the
guard, never ballooning. (The peak is the child's ``VmHWM``: ``ru_maxrss`` of a child carries the
parent's peak over fork and exec on Linux.) A deflate stream of N zero bytes is assembled from
repeated fully flushed blocks (``zeros_deflate``), so a 1 GiB tile costs a fraction of a second to
make.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from poolcli.errors import ImageReadError
from poolcli.imageio import DEFAULT_MAX_PIXELS, read_image

#: Peak resident memory allowed to a child that reads one hostile file (Python, numpy, Pillow
#: and tifffile imported take about 60 MB).
PEAK_MB = 300
GUARD = "(decompression-bomb guard)"
GiB = 1 << 30


# ==================================================================================================
# Crafting
# ==================================================================================================


def zeros_deflate(n: int, chunk: int = 1 << 20) -> bytes:
    """A valid zlib stream of ``n`` zero bytes, about n/1000 long, without compressing n bytes.

    After a full flush the compressor starts afresh, so every further chunk of zeros compresses
    to the same bytes; the Adler-32 of n zeros is ``(n mod 65521) << 16 | 1``.
    """
    count, rest = divmod(n, chunk)
    c = zlib.compressobj(9)
    pieces = []
    if count:
        pieces.append(c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH))
    if count > 1:
        body = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
        pieces.append(body * (count - 1))
    pieces.append((c.compress(bytes(rest)) + c.flush())[:-4])
    return b"".join(pieces) + struct.pack(">I", ((n % 65521) << 16) | 1)


def test_zeros_deflate_is_valid():
    for n in (0, 5, 1 << 20, 3 << 20, (3 << 20) + 7):
        assert zlib.decompress(zeros_deflate(n)) == bytes(n)


SHORT, LONG = 3, 4


def tiff_bytes(width, height, segments, *, spp=1, bps=8, sampleformat=1, photometric=1,
               compression=1, tile=None, rowsperstrip=None, extra=(), more_ifds=()):
    """A little-endian classic TIFF: one IFD describing ``segments`` (strips, or tiles of
    ``tile=(length, width)``), then ``more_ifds`` (tag lists) chained after it.

    Segments that are the same object are stored once and shared by offset. ``extra`` tags are
    ``(tag, type, values)``; a value ``("ifd", k)`` is the offset of the k-th IFD.
    """
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    where: dict[int, int] = {}
    offsets, counts = [], []
    for seg in segments:
        if id(seg) not in where:
            where[id(seg)] = len(out)
            out += seg + b"\0" * (len(seg) % 2)
        offsets.append(where[id(seg)])
        counts.append(len(seg))
    tags = [(256, LONG, [width]), (257, LONG, [height]), (258, SHORT, [bps] * spp),
            (259, SHORT, [compression]), (262, SHORT, [photometric]), (277, SHORT, [spp]),
            (339, SHORT, [sampleformat] * spp)]
    if tile:
        tags += [(322, LONG, [tile[1]]), (323, LONG, [tile[0]]), (324, LONG, offsets),
                 (325, LONG, counts)]
    else:
        tags += [(273, LONG, offsets), (278, LONG, [rowsperstrip or height]),
                 (279, LONG, counts)]
    ifds = [tags + list(extra)] + [list(t) for t in more_ifds]
    # IFD positions are fixed first (values out of line go after all IFDs), then written.
    sizes = [2 + 12 * len(t) + 4 for t in ifds]
    starts = [len(out)]
    for size in sizes[:-1]:
        starts.append(starts[-1] + size)
    heap = bytearray()
    heap_at = starts[-1] + sizes[-1]
    out[4:8] = struct.pack("<I", starts[0])
    for k, tags in enumerate(ifds):
        out += struct.pack("<H", len(tags))
        for tag, typ, values in sorted(tags, key=lambda t: t[0]):
            values = [starts[v[1]] if isinstance(v, tuple) else v for v in values]
            raw = struct.pack(f"<{len(values)}{'H' if typ == SHORT else 'I'}", *values)
            if len(raw) <= 4:
                field = raw.ljust(4, b"\0")
            else:
                field = struct.pack("<I", heap_at + len(heap))
                heap += raw + b"\0" * (len(raw) % 2)
            out += struct.pack("<HHI", tag, typ, len(values)) + field
        out += struct.pack("<I", starts[k + 1] if k + 1 < len(ifds) else 0)
    return bytes(out + heap)


def test_tiff_bytes_is_a_tiff():
    a = np.arange(12, dtype=np.uint16).reshape(3, 4)
    data = tiff_bytes(4, 3, [zlib.compress(a.tobytes())], bps=16, compression=8,
                      more_ifds=[[(256, LONG, [1])]])
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        np.testing.assert_array_equal(tif.pages[0].asarray(), a)


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(
        ">I", zlib.crc32(ctype + payload))


def png_bytes(width, height, depth, colour, idat: bytes, chunks=()) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + b"".join(png_chunk(t, p) for t, p in chunks)
            + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def pillow_bytes(fmt: str, shape=(4, 6, 3), **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(shape, 90, np.uint8)).save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg_sof(data: bytes) -> int:
    """Position of the first SOFn marker of a JPEG."""
    pos = 2
    while True:
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return pos
        pos += 2 + length


def jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(pillow_bytes("JPEG", (16, 16, 3)))
    pos = jpeg_sof(data)
    data[pos + 5:pos + 9] = struct.pack(">HH", height, width)
    return bytes(data)


# ==================================================================================================
# Measuring
# ==================================================================================================

_CHILD = """
import json, resource, sys
from poolcli.imageio import read_image


def peak_mb():
    # VmHWM is this process's own high-water mark; ru_maxrss would include the parent's peak,
    # which Linux carries across fork and exec (pytest may have grown large by then).
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


kwargs = json.loads(sys.argv[2])
try:
    img = read_image(sys.argv[1], **kwargs)
    out = {"shape": list(img.array.shape), "dtype": str(img.array.dtype), "notes": img.notes}
except Exception as exc:
    out = {"error": str(exc), "type": type(exc).__name__}
out["peak_mb"] = peak_mb()
print(json.dumps(out))
"""


def read_in_child(path, **kwargs) -> dict:
    """``read_image(path, **kwargs)`` in a fresh process: its result or error, and its peak RSS."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), json.dumps(kwargs)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_refused(path, *words, **kwargs) -> dict:
    out = read_in_child(path, **kwargs)
    assert out.get("type") == "ImageReadError", out
    message = out["error"]
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    for word in words:
        assert word in message, (word, message)
    assert out["peak_mb"] < PEAK_MB, out
    return out


# ==================================================================================================
# The decoded-bytes limit
# ==================================================================================================


def test_byte_limit_is_eight_bytes_a_pixel():
    """An honest 16-bit RGBA image at the pixel limit is exactly at the byte limit."""
    from poolcli.imageio import read as imageio_read

    assert imageio_read.decoded_byte_limit(DEFAULT_MAX_PIXELS) == DEFAULT_MAX_PIXELS * 4 * 2
    assert imageio_read.decoded_byte_limit(1000) == 8000
    assert imageio_read.decoded_byte_limit(None) is None


def test_many_float64_channels_tiff_is_refused(tmp_path):
    """256 x 256 x 4096 float64 = 2 GiB decoded from an 8 KB file (256 strips share one blob)."""
    strip = zeros_deflate(256 * 4096 * 8)
    path = tmp_path / "channels.tif"
    path.write_bytes(tiff_bytes(256, 256, [strip] * 256, spp=4096, bps=64, sampleformat=3,
                                compression=8, rowsperstrip=1))
    assert path.stat().st_size < 64 << 10
    out = assert_refused(path, "256x256", "4096 channels", "float64", "2147483648 bytes",
                         GUARD)
    assert f"--max-pixels {DEFAULT_MAX_PIXELS}" in out["error"]


def test_many_float64_channels_npy_is_refused(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (256, 256, 4096)})
    path = tmp_path / "channels.npy"
    path.write_bytes(header.getvalue() + bytes(1 << 20))  # the rest is missing
    assert_refused(path, "256x256", "4096 channels", "float64", GUARD)


def test_full_size_sparse_npy_is_refused_before_reading(tmp_path):
    """A real 2 GiB .npy (sparse on disk) is refused from its header, not read into memory."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (256, 256, 4096)})
    path = tmp_path / "sparse.npy"
    with open(path, "wb") as fh:
        fh.write(header.getvalue())
        fh.truncate(len(header.getvalue()) + 2 * GiB)
    assert_refused(path, "4096 channels", GUARD)


def test_raised_max_pixels_raises_the_byte_limit(tmp_path):
    """The byte limit follows --max-pixels: what 8 bytes a pixel allows is decoded."""
    a = np.zeros((10, 10, 16), np.float64)  # 1280 bytes a pixel
    np.save(tmp_path / "deep.npy", a)
    with pytest.raises(ImageReadError, match=r"10x10 x 16 channels x float64 = 12800 bytes"):
        read_image(tmp_path / "deep.npy", max_pixels=100)
    assert read_image(tmp_path / "deep.npy", max_pixels=1600).array.shape == (10, 10, 16)
    assert read_image(tmp_path / "deep.npy", max_pixels=None).array.shape == (10, 10, 16)


def test_honest_16bit_rgba_at_the_pixel_limit_passes_the_byte_guard(tmp_path):
    """16-bit RGBA at exactly --max-pixels is exactly at the byte limit: decoded (TIFF, PNG)."""
    import imagecodecs

    a = np.random.default_rng(1).integers(0, 65535, (30, 40, 4), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "rgba16.tif", a, photometric="rgb", extrasamples=["unassalpha"])
    (tmp_path / "rgba16.png").write_bytes(imagecodecs.png_encode(a))
    for name in ("rgba16.tif", "rgba16.png"):
        np.testing.assert_array_equal(read_image(tmp_path / name, max_pixels=30 * 40).array, a)
        with pytest.raises(ImageReadError, match="decompression-bomb"):
            read_image(tmp_path / name, max_pixels=30 * 40 - 1)


# ==================================================================================================
# Tiles and strips
# ==================================================================================================


@pytest.fixture(scope="module")
def gib_of_zeros() -> bytes:
    return zeros_deflate(GiB)


@pytest.mark.parametrize("size", [(10000, 10000), (16, 16)])
def test_one_huge_deflated_tile_is_refused(tmp_path, gib_of_zeros, size):
    """A ~1 MB TIFF whose one 32768 x 32768 tile inflates to 1 GiB (today's peak: 1.15 GB)."""
    width, height = size
    path = tmp_path / "tile.tif"
    tifffile.imwrite(path, iter([gib_of_zeros]), shape=(height, width), dtype=np.uint8,
                     tile=(32768, 32768), compression="zlib")
    assert path.stat().st_size < 2 << 20
    assert_refused(path, f"{width}x{height}", "32768x32768 tiles", "1073741824 bytes", GUARD)


def test_huge_tile_is_refused_before_pillow_decodes_cmyk(tmp_path, gib_of_zeros):
    """CMYK TIFF goes to Pillow's libtiff, which allocates whole tiles too (1.09 GB before)."""
    path = tmp_path / "cmyk.tif"
    tifffile.imwrite(path, iter([gib_of_zeros]), shape=(100, 100, 4), dtype=np.uint8,
                     photometric="separated", tile=(16384, 16384), compression="zlib")
    assert_refused(path, "100x100 image in 16384x16384 tiles", GUARD)


def test_strip_far_beyond_the_image_is_bounded(tmp_path, gib_of_zeros):
    """RowsPerStrip far beyond the image is honest (one strip for the image) and decodes; a
    strip inflating far beyond the image is cut at the image's size, never inflated whole."""
    a = np.arange(64 * 16, dtype=np.uint8).reshape(16, 64)
    honest = tmp_path / "rows.tif"
    honest.write_bytes(tiff_bytes(64, 16, [zlib.compress(a.tobytes())], compression=8,
                                  rowsperstrip=2**32 - 1))
    np.testing.assert_array_equal(read_image(honest).array[:, :, 0], a)
    path = tmp_path / "strip.tif"
    path.write_bytes(tiff_bytes(64, 16, [gib_of_zeros], compression=8, rowsperstrip=1 << 24))
    out = read_in_child(path)
    assert out["peak_mb"] < PEAK_MB, out
    assert out.get("error", "").endswith("truncated or corrupt TIFF data"), out


def test_honest_tiled_and_stripped_tiffs_still_decode(tmp_path):
    rng = np.random.default_rng(2)
    a = rng.integers(0, 65535, (40, 50, 3), dtype=np.uint16)
    for name, kw in [("tiled.tif", {"tile": (16, 16)}), ("strips.tif", {"rowsperstrip": 7}),
                     ("small_image_big_tile.tif", {"tile": (512, 512)})]:
        tifffile.imwrite(tmp_path / name, a, photometric="rgb", compression="zlib", **kw)
        np.testing.assert_array_equal(read_image(tmp_path / name).array, a)


def test_jpeg_tile_claiming_a_huge_image_is_refused(tmp_path):
    """A JPEG-compressed tile whose own SOF claims 60000 x 60000."""
    path = tmp_path / "jpegtile.tif"
    tile = jpeg_with_size(60000, 60000)
    path.write_bytes(tiff_bytes(64, 64, [tile], spp=3, photometric=2, compression=7,
                                tile=(64, 64)))
    out = read_in_child(path)
    assert out["peak_mb"] < PEAK_MB, out
    assert "error" in out, out


def test_png_tile_claiming_a_huge_image_is_refused(tmp_path):
    """A PNG-compressed tile (tifffile decodes it with imagecodecs) claiming 60000 x 60000."""
    path = tmp_path / "pngtile.tif"
    tile = png_bytes(60000, 60000, 8, 0, zeros_deflate(60001 * 60000))
    path.write_bytes(tiff_bytes(64, 64, [tile], compression=34933, tile=(64, 64)))
    out = read_in_child(path)
    assert out["peak_mb"] < PEAK_MB, out
    assert "error" in out, out


def test_small_first_page_with_huge_subifds_and_pages(tmp_path, gib_of_zeros):
    """Page 0 is 16 x 16; its SubIFDs and the next page claim 1 GiB tiles: page 0 is read."""
    small = np.arange(256, dtype=np.uint8).reshape(16, 16)
    huge = [(256, LONG, [30000]), (257, LONG, [30000]), (258, SHORT, [8]), (259, SHORT, [8]),
            (262, SHORT, [1]), (277, SHORT, [1]), (322, LONG, [32768]), (323, LONG, [32768]),
            (324, LONG, [8]), (325, LONG, [len(gib_of_zeros)])]
    data = tiff_bytes(16, 16, [small.tobytes()], extra=[(330, LONG, [("ifd", 1)])],
                      more_ifds=[huge, huge])
    # point the huge tiles at a real 1 GiB stream appended to the file
    data += gib_of_zeros
    data = data.replace(struct.pack("<HHII", 324, LONG, 1, 8),
                        struct.pack("<HHII", 324, LONG, 1, len(data) - len(gib_of_zeros)))
    path = tmp_path / "subifds.tif"
    path.write_bytes(data)
    out = read_in_child(path)
    assert out.get("shape") == [16, 16, 1], out
    assert out["peak_mb"] < PEAK_MB, out


# ==================================================================================================
# Huge headers in every format
# ==================================================================================================


def _gif_with_screen(width, height, frame=None) -> bytes:
    data = bytearray(pillow_bytes("GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    if frame is not None:
        pos = data.index(b"\x2c")  # image descriptor
        data[pos + 5:pos + 9] = struct.pack("<HH", *frame)
    return bytes(data)


def _bmp_with_size(width, height, bpp=24) -> bytes:
    data = bytearray(pillow_bytes("BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    data[28:30] = struct.pack("<H", bpp)
    return bytes(data)


def _webp_vp8x(width, height) -> bytes:
    """An animated-WebP header (VP8X, canvas width x height) with one small lossless frame."""
    frame = pillow_bytes("WEBP", lossless=True)[12:]  # the VP8L chunk
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x10, 0, 0, 0]) + (width - 1).to_bytes(
        3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + frame
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _webp_vp8l(width, height) -> bytes:
    data = bytearray(pillow_bytes("WEBP", lossless=True))
    bits = (width - 1) | ((height - 1) << 14) | (1 << 28)  # alpha hint, version 0
    data[21:25] = struct.pack("<I", bits)
    return bytes(data)


HUGE_HEADERS = {
    "palette.png": lambda: png_bytes(100_000, 100_000, 8, 3, zlib.compress(bytes(1000)),
                                     [(b"PLTE", bytes(768))]),
    "bilevel.png": lambda: png_bytes(400_000, 400_000, 1, 0, zlib.compress(bytes(1000))),
    "rgba16.png": lambda: png_bytes(100_000, 100_000, 16, 6, zlib.compress(bytes(1000))),
    "screen.gif": lambda: _gif_with_screen(65535, 65535),
    "frame.gif": lambda: _gif_with_screen(16, 16, frame=(65535, 65535)),
    "huge.bmp": lambda: _bmp_with_size(100_000, 100_000),
    "tall.bmp": lambda: _bmp_with_size(1, -2_000_000_000),
    "canvas.webp": lambda: _webp_vp8x(16384, 16384),
    "lossless.webp": lambda: _webp_vp8l(16384, 16384),
    "sof.jpg": lambda: jpeg_with_size(65000, 65000),
    "wide.tif": lambda: tiff_bytes(4_000_000_000, 4, [bytes(100)]),
}


@pytest.mark.parametrize("name", sorted(HUGE_HEADERS))
def test_huge_header_dimensions_are_refused_without_ballooning(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(HUGE_HEADERS[name]())
    out = read_in_child(path)
    assert out["peak_mb"] < PEAK_MB, out
    assert out.get("type") == "ImageReadError", out
    assert out["error"].startswith(f"{path}: "), out


WITHIN_GUARD = {
    # Within --max-pixels but with next to no data behind the header: refused as truncated, or
    # decoded from what there is (a 13000 x 13000 lossless WebP of one colour is a few bytes),
    # never by allocating far more than the honest image.
    "palette.png": lambda: png_bytes(13000, 13000, 8, 3, zlib.compress(bytes(100)),
                                     [(b"PLTE", bytes(768))]),
    "sof.jpg": lambda: jpeg_with_size(13000, 13000),
    "tall.bmp": lambda: _bmp_with_size(1, 170_000_000, bpp=32),
    "lossless.webp": lambda: _webp_vp8l(13000, 13000),
    "raw.tif": lambda: tiff_bytes(13000, 13000, [bytes(100)], spp=4, photometric=2, extra=[
        (338, SHORT, [2])]),
    "short.npy": lambda: _npy_header((13000, 13000, 4), "|u1") + bytes(100),
}


def _npy_header(shape, descr) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": descr, "fortran_order": False, "shape": shape})
    return header.getvalue()


@pytest.mark.parametrize("name", sorted(WITHIN_GUARD))
def test_claims_within_the_guard_with_no_data_stay_small(tmp_path, name):
    """Refused in small memory, or decoded in at most 2.5 times the decoded size (Pillow holds
    RGB as 4 bytes a pixel beside the 3-byte array: 2.33 times for a JPEG)."""
    path = tmp_path / name
    path.write_bytes(WITHIN_GUARD[name]())
    out = read_in_child(path)
    if "error" in out:
        assert out["type"] == "ImageReadError" and out["peak_mb"] < PEAK_MB, out
    else:
        decoded_mb = np.prod(out["shape"]) * np.dtype(out["dtype"]).itemsize / 2**20
        assert out["peak_mb"] < 100 + 2.5 * decoded_mb, out


# ==================================================================================================
# Compressed metadata
# ==================================================================================================


@pytest.mark.parametrize("depth,colour", [(16, 2), (8, 2), (8, 3)])
def test_iccp_profile_bomb_is_not_inflated(tmp_path, gib_of_zeros, depth, colour):
    """An iCCP chunk inflating to 1 GiB: the profile is read only as far as poolcli needs."""
    rows = b"".join(b"\0" + bytes(4 * 3 * depth // 8) for _ in range(3))
    chunks = [(b"iCCP", b"bomb\0\0" + gib_of_zeros)]
    if colour == 3:
        chunks.append((b"PLTE", bytes(range(12))))
        rows = b"".join(b"\0" + bytes(4) for _ in range(3))
    path = tmp_path / "iccp.png"
    path.write_bytes(png_bytes(4, 3, depth, colour, zlib.compress(rows), chunks))
    out = read_in_child(path)
    assert out["peak_mb"] < PEAK_MB, out
    assert out.get("shape", [None])[:2] == [3, 4], out


def test_file_larger_than_any_honest_image_is_refused_unread(tmp_path):
    """A file beyond twice the decoded-size limit is refused from its size (sparse here)."""
    path = tmp_path / "huge.tif"
    with open(path, "wb") as fh:
        fh.write(tiff_bytes(16, 16, [bytes(256)]))
        fh.truncate(16 * 8 * 2 * 2 + (2 << 20))
    out = assert_refused(path, "bytes", GUARD, max_pixels=16)
    assert "file" in out["error"]
