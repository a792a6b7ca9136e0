"""Valid files that failed, and variants poolcli cannot decode, which must say so.

Every file is generated here; each decode is compared with the values written (or with Pillow /
libpng where they are the reference), and the default command (``poolcli pool FILE``) runs on
each valid one. Files poolcli cannot decode are refused as ``unsupported``, never as corrupt.

Tests marked ``xfail(strict=True)`` need a fix in a module owned elsewhere (the reason says
which); they fail loudly once it is in, so the marker can go.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image, PngImagePlugin

from helpers import run_process
from poolcli.errors import ImageReadError
from poolcli.imageio import read_image


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(
        ">I", zlib.crc32(ctype + payload))


def png_bytes(width, height, depth, colour, rows: bytes, chunks=(), interlace=0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + b"".join(png_chunk(t, p) for t, p in chunks)
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))


def packed_rows(values: np.ndarray, depth: int) -> bytes:
    """PNG scanlines (filter 0) of grey samples of ``depth`` bits (1, 2, 4, 8 or 16)."""
    if depth == 16:
        flat = values.reshape(values.shape[0], -1)
        return b"".join(b"\0" + row.astype(">u2").tobytes() for row in flat)
    if depth == 8:
        flat = values.reshape(values.shape[0], -1)
        return b"".join(b"\0" + row.astype(np.uint8).tobytes() for row in flat)
    out = []
    for row in values:
        bits = "".join(format(int(v), f"0{depth}b") for v in row)
        bits += "0" * (-len(bits) % 8)
        out.append(b"\0" + int(bits, 2).to_bytes(len(bits) // 8, "big"))
    return b"".join(out)


def default_command(path):
    """``poolcli pool FILE -q`` as a real process: its stderr lines and exit status."""
    proc = run_process("pool", path, "-q")
    return proc.returncode, proc.stderr.splitlines()


# ==================================================================================================
# Colour keys (tRNS) on grey and RGB PNGs
# ==================================================================================================


@pytest.mark.parametrize("depth", [1, 2, 4, 8, 16])
def test_grey_png_with_colour_key_gets_alpha(tmp_path, depth):
    """Alpha 0 where the sample equals the key, the maximum elsewhere (libpng's tRNS-to-alpha);
    grey samples below 8 bits scaled to 8 bits as libpng and Pillow scale them."""
    rng = np.random.default_rng(depth)
    top = (1 << depth) - 1
    values = rng.integers(0, top + 1, (5, 9))
    key = 1 if depth < 16 else 1234
    values[0, 0] = values[4, 8] = key
    path = tmp_path / f"grey{depth}.png"
    path.write_bytes(png_bytes(9, 5, depth, 0, packed_rows(values, depth),
                               [(b"tRNS", struct.pack(">H", key))]))
    img = read_image(path)
    dtype = np.uint16 if depth == 16 else np.uint8
    scale = 1 if depth >= 8 else 255 // top
    assert img.channels == ("L", "A")
    assert img.mode == ("LA;16" if depth == 16 else "LA")
    assert img.array.dtype == dtype
    np.testing.assert_array_equal(img.array[:, :, 0], (values * scale).astype(dtype))
    full = 65535 if depth == 16 else 255
    np.testing.assert_array_equal(img.array[:, :, 1], np.where(values == key, 0, full))
    assert "colour-key transparency converted to alpha" in img.notes
    status, errors = default_command(path)
    assert (status, errors) == (0, [])


@pytest.mark.parametrize("depth", [8, 16])
def test_rgb_png_with_colour_key_gets_alpha(tmp_path, depth):
    rng = np.random.default_rng(depth)
    dtype = np.uint16 if depth == 16 else np.uint8
    values = rng.integers(0, np.iinfo(dtype).max + 1, (6, 7, 3)).astype(dtype)
    key = (1, 2, 3)
    values[1, 1] = values[5, 0] = key
    values[2, 2] = (1, 2, 4)  # one sample off: opaque
    path = tmp_path / f"rgb{depth}.png"
    path.write_bytes(png_bytes(7, 6, depth, 2, packed_rows(values, depth),
                               [(b"tRNS", struct.pack(">HHH", *key))]))
    img = read_image(path)
    assert img.channels == ("R", "G", "B", "A")
    assert img.mode == ("RGBA;16" if depth == 16 else "RGBA")
    np.testing.assert_array_equal(img.array[:, :, :3], values)
    opaque = np.iinfo(dtype).max
    np.testing.assert_array_equal(img.array[:, :, 3],
                                  np.where((values == key).all(axis=2), 0, opaque))
    status, errors = default_command(path)
    assert (status, errors) == (0, [])


# ==================================================================================================
# Long text chunks and large ICC profiles (Pillow's 1 MiB text limit)
# ==================================================================================================


def _with_text(path, im, chunk, size):
    info = PngImagePlugin.PngInfo()
    text = "poolcli " * (size // 8)
    if chunk == "zTXt":
        info.add_text("Comment", text, zip=True)
    elif chunk == "iTXt":
        info.add_itxt("Comment", text, lang="en", tkey="Comment", zip=True)
    else:
        info.add_text("Comment", text)
    im.save(path, pnginfo=info)


@pytest.mark.parametrize("chunk", ["zTXt", "iTXt"])
@pytest.mark.parametrize("mode", ["P", "1"])
def test_png_with_a_long_text_chunk_decodes(tmp_path, chunk, mode):
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    im = {"P": lambda: Image.fromarray(rgb).quantize(20),
          "1": lambda: Image.fromarray(rgb[:, :, 0]).convert("1")}[mode]()
    path = tmp_path / "text.png"
    _with_text(path, im, chunk, 3 << 20)
    with pytest.raises(ValueError, match="MAX_TEXT_CHUNK"):
        Image.open(path).load()  # what made poolcli fail: Pillow's text limit
    img = read_image(path)
    want = np.asarray(im.convert("RGB" if mode == "P" else "L"))
    np.testing.assert_array_equal(img.array if mode == "P" else img.array[:, :, 0], want)
    assert (default_command(path)) == (0, [])


def test_png_with_a_large_icc_profile_decodes(tmp_path):
    """A 2 MiB (non-sRGB) profile: Pillow refuses it; poolcli notes it and decodes."""
    im = Image.fromarray(np.arange(60, dtype=np.uint8).reshape(6, 10)).quantize(8)
    path = tmp_path / "icc.png"
    im.save(path, icc_profile=b"\0" * 128 + b"desc big profile " * (2 << 16))
    with pytest.raises(ValueError):
        Image.open(path).load()
    img = read_image(path)
    np.testing.assert_array_equal(img.array, np.asarray(im.convert("RGB")))
    assert "non-sRGB ICC colour profile ignored (values used as stored)" in img.notes


def test_orientation_text_chunk_still_reaches_pillow(tmp_path):
    """Text chunks are left out of what Pillow sees, except the ones carrying orientation."""
    rgb = np.random.default_rng(6).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    im = Image.fromarray(rgb).quantize(16)
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
           '22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
           'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp)
    info.add_text("Comment", "x" * (2 << 20), zip=True)
    path = tmp_path / "xmp.png"
    im.save(path, pnginfo=info)
    img = read_image(path)
    np.testing.assert_array_equal(img.array, np.rot90(np.asarray(im.convert("RGB")), -1))
    assert "EXIF orientation applied (rotate 90 clockwise)" in img.notes


# ==================================================================================================
# GIF transparency, BMP alpha
# ==================================================================================================


def test_gif_with_transparency_decodes(tmp_path):
    rgb = np.random.default_rng(7).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    im = Image.fromarray(rgb).quantize(16)
    path = tmp_path / "clear.gif"
    im.save(path, transparency=3)
    img = read_image(path)
    want = np.asarray(Image.open(path).convert("RGBA"))
    np.testing.assert_array_equal(img.array, want)
    assert img.channels == ("R", "G", "B", "A")
    assert (np.asarray(im) == 3).any() and (img.array[:, :, 3] == 0).any()


def test_gif_with_transparency_under_the_default_command(tmp_path):
    im = Image.fromarray(np.random.default_rng(7).integers(0, 256, (8, 10, 3),
                                                            dtype=np.uint8)).quantize(16)
    im.save(tmp_path / "clear.gif", transparency=3)
    assert default_command(tmp_path / "clear.gif") == (0, [])


def bmp_with_alpha(rgba: np.ndarray, header_size: int = 108) -> bytes:
    """A 32-bit BI_BITFIELDS BMP with R, G, B and alpha masks (BITMAPV3/V4/V5 header)."""
    h, w, _ = rgba.shape
    pixels = rgba[::-1, :, [2, 1, 0, 3]].tobytes()  # bottom-up BGRA
    dib = struct.pack("<IiiHHIIiiII", header_size, w, h, 1, 32, 3, len(pixels), 2835, 2835, 0, 0)
    dib += struct.pack("<IIII", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000)
    dib = dib.ljust(header_size, b"\0")
    offset = 14 + len(dib)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + dib + pixels


@pytest.mark.parametrize("header_size", [56, 108, 124])
def test_bmp_with_alpha_mask_decodes(tmp_path, header_size):
    rgba = np.random.default_rng(8).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    path = tmp_path / "alpha.bmp"
    path.write_bytes(bmp_with_alpha(rgba, header_size))
    img = read_image(path)
    assert img.channels == ("R", "G", "B", "A")
    np.testing.assert_array_equal(img.array, rgba)


def test_bmp_with_alpha_under_the_default_command(tmp_path):
    rgba = np.random.default_rng(8).integers(0, 256, (6, 4, 4), dtype=np.uint8)
    (tmp_path / "alpha.bmp").write_bytes(bmp_with_alpha(rgba))
    assert default_command(tmp_path / "alpha.bmp") == (0, [])


# ==================================================================================================
# Unsupported variants say "unsupported"
# ==================================================================================================


def _jpeg() -> bytearray:
    buf = io.BytesIO()
    rgb = np.random.default_rng(9).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return bytearray(buf.getvalue())


def _sof(data: bytes) -> int:
    pos = 2
    while True:
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return pos
        pos += 2 + length


def jpeg_edited(marker=None, precision=None, height=None, components=None) -> bytes:
    """A JPEG written by Pillow with its frame header (SOFn) edited."""
    data = _jpeg()
    pos = _sof(data)
    if marker is not None:
        data[pos + 1] = marker
    if precision is not None:
        data[pos + 4] = precision
    if height is not None:
        data[pos + 5:pos + 7] = struct.pack(">H", height)
    if components is not None:
        data[pos + 9] = components
    return bytes(data)


UNSUPPORTED_JPEG = {
    "precision12": (dict(precision=12), "unsupported JPEG (12-bit precision)"),
    "precision16": (dict(precision=16), "unsupported JPEG (16-bit precision)"),
    "lossless12": (dict(marker=0xC3, precision=12), "unsupported JPEG (12-bit precision)"),
    "sof5": (dict(marker=0xC5), "unsupported JPEG (hierarchical, SOF5)"),
    "sof6": (dict(marker=0xC6), "unsupported JPEG (hierarchical, SOF6)"),
    "sof7": (dict(marker=0xC7), "unsupported JPEG (hierarchical, SOF7)"),
    "sof11": (dict(marker=0xCB), "unsupported JPEG (lossless arithmetic coding, SOF11)"),
    "sof13": (dict(marker=0xCD), "unsupported JPEG (hierarchical, SOF13)"),
    "sof14": (dict(marker=0xCE), "unsupported JPEG (hierarchical, SOF14)"),
    "sof15": (dict(marker=0xCF), "unsupported JPEG (hierarchical, SOF15)"),
    "dnl": (dict(height=0), "unsupported JPEG (height set by a DNL marker)"),
    "two_components": (dict(components=2), "unsupported JPEG (2 components)"),
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED_JPEG))
def test_unsupported_jpeg_variants_say_unsupported(tmp_path, case):
    edit, message = UNSUPPORTED_JPEG[case]
    path = tmp_path / f"{case}.jpg"
    path.write_bytes(jpeg_edited(**edit))
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(info.value) == f"{path}: {message}"
    status, errors = default_command(path)
    assert status == 1 and errors == [f"poolcli: error: {path}: {message}"]


def test_real_12bit_jpeg_says_unsupported(tmp_path):
    import imagecodecs

    values = np.random.default_rng(10).integers(0, 4096, (8, 8), dtype=np.uint16)
    path = tmp_path / "deep.jpg"
    path.write_bytes(imagecodecs.jpeg8_encode(values, bitspersample=12, lossless=True))
    with pytest.raises(ImageReadError, match=r"deep\.jpg: unsupported JPEG \(12-bit precision\)$"):
        read_image(path)


@pytest.mark.parametrize("shape", [(9, 11, 3), (9, 11)])
def test_real_8bit_lossless_jpeg_decodes_exactly(tmp_path, shape):
    """SOF3 at 8 bits is decoded by Pillow's libjpeg-turbo, bit-exact: supported, not refused.
    (A baseline JPEG relabelled SOF3 is then simply corrupt.)"""
    import imagecodecs

    values = np.random.default_rng(11).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "lossless.jpg"
    path.write_bytes(imagecodecs.jpeg8_encode(values, lossless=True))
    img = read_image(path)
    np.testing.assert_array_equal(img.array, values.reshape(img.array.shape))
    relabelled = tmp_path / "relabelled.jpg"
    relabelled.write_bytes(jpeg_edited(marker=0xC3))
    with pytest.raises(ImageReadError, match="truncated or corrupt JPEG data"):
        read_image(relabelled)


def test_cmyk_jpeg_is_supported(tmp_path):
    cmyk = np.random.default_rng(12).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(cmyk, "CMYK").save(path, quality=95)
    img = read_image(path)
    np.testing.assert_array_equal(img.array, np.asarray(Image.open(path).convert("RGB")))


@pytest.mark.parametrize("compression,name", [(6, "BI_ALPHABITFIELDS"), (4, "JPEG"),
                                              (5, "PNG")])
def test_unsupported_bmp_compressions_say_unsupported(tmp_path, compression, name):
    data = bytearray(bmp_with_alpha(np.zeros((2, 2, 4), np.uint8), 40))
    data[30:34] = struct.pack("<I", compression)
    path = tmp_path / "odd.bmp"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(info.value) == f"{path}: unsupported BMP ({name} compression)"


def test_unknown_tiff_compression_says_unsupported(tmp_path):
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8))
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags[259]
        data[tag.valueoffset:tag.valueoffset + 2] = struct.pack("<H", 12345)
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(info.value) == f"{path}: unsupported TIFF compression (compression 12345)"


def test_jpegxl_tiff_is_unsupported_under_the_guard_and_decodes_without(tmp_path):
    values = np.random.default_rng(13).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    path = tmp_path / "jxl.tif"
    tifffile.imwrite(path, values, compression="jpegxl", compressionargs={"lossless": True},
                     photometric="rgb")
    with pytest.raises(ImageReadError, match=r"unsupported TIFF compression \(JPEGXL"):
        read_image(path)
    np.testing.assert_array_equal(read_image(path, max_pixels=None).array, values)


def test_unknown_critical_png_chunk_says_unsupported(tmp_path):
    """A critical chunk (upper-case first letter) the standard does not define: a decoder must
    not show the image; an unknown ancillary chunk is skipped."""
    rows = b"".join(b"\0" + bytes(12) for _ in range(4))
    path = tmp_path / "critical.png"
    path.write_bytes(png_bytes(4, 4, 8, 2, rows, [(b"TeSt", b"ab")]))
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(info.value) == f"{path}: unsupported PNG (unknown critical chunk 'TeSt')"
    path.write_bytes(png_bytes(4, 4, 8, 2, rows, [(b"teSt", b"ab")]))
    assert read_image(path).array.shape == (4, 4, 3)


def test_unknown_tiff_predictor_says_unsupported(tmp_path):
    path = tmp_path / "pred.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8), compression="zlib", predictor=True)
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags[317]
        data[tag.valueoffset:tag.valueoffset + 2] = struct.pack("<H", 7)
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(info.value) == f"{path}: unsupported TIFF predictor (7)"
