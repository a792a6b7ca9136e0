"""Tests for poolcli.imageio: decoding, encoding, atomic writes, display mapping.

Every input file is generated here (Pillow, tifffile, imagecodecs, numpy, hand-made bytes); only
the sample-image test reads ``sample_images/`` from the repository.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageOps

from poolcli import imageio
from poolcli.imageio import files as imageio_files
from poolcli.imageio import read as imageio_read
from poolcli.imageio import write as imageio_write
from poolcli.errors import ImageReadError, ImageWriteError
from poolcli.imageio import output_dtype_for, read_image, to_display, write_image

REPO = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(20240601)


def rand(shape, dtype=np.uint8):
    info = np.iinfo(dtype)
    return RNG.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)


def smooth_rgb(h=48, w=64):
    """A smooth colour image (compresses well, survives JPEG reasonably)."""
    yy, xx = np.mgrid[0:h, 0:w]
    planes = [xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) * 255 // (h + w - 2)]
    return np.dstack(planes).astype(np.uint8)


def parts(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".part")]


def assert_read_error(path, *, contains=None, **kwargs) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert os.path.basename(os.fspath(path)) in message
    if contains is not None:
        assert contains in message, message
    return message


# --------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channels", "mode"),
    [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")],
)
def test_png_uint8_roundtrip(tmp_path, channels, mode):
    arr = rand((17, 23, channels))
    path = tmp_path / "a.png"
    write_image(path, arr)
    with Image.open(path) as im:
        assert im.mode == mode
    img = read_image(path)
    assert img.array.dtype == np.uint8
    assert img.array.shape == (17, 23, channels)
    np.testing.assert_array_equal(img.array, arr)
    assert img.format == "PNG" and img.mode == mode
    assert img.channels == tuple(mode)
    assert img.source == str(path)


def test_png_2d_input_is_grey(tmp_path):
    arr = rand((9, 11))
    write_image(tmp_path / "g.png", arr)
    img = read_image(tmp_path / "g.png")
    assert img.array.shape == (9, 11, 1)
    np.testing.assert_array_equal(img.array[:, :, 0], arr)


@pytest.mark.parametrize(
    ("channels", "mode"), [(1, "I;16"), (2, "LA;16"), (3, "RGB;16"), (4, "RGBA;16")]
)
def test_png_uint16_roundtrip_bit_exact(tmp_path, channels, mode):
    arr = rand((13, 19, channels), np.uint16)
    arr[0, 0] = 65535
    arr[0, 1] = 0
    arr[0, 2] = 257  # would survive an 8-bit reduction; 258 would not
    arr[0, 3] = 258
    path = tmp_path / "a16.png"
    write_image(path, arr)
    data = path.read_bytes()
    assert data[24] == 16  # IHDR bit depth
    assert data[25] == {1: 0, 2: 4, 3: 2, 4: 6}[channels]  # IHDR colour type
    img = read_image(path)
    assert img.array.dtype == np.uint16
    assert img.mode == mode
    np.testing.assert_array_equal(img.array, arr)


def test_png_uint16_grey_written_by_pillow_reads_exact(tmp_path):
    arr = rand((10, 12), np.uint16)
    Image.fromarray(arr).save(tmp_path / "p.png")
    img = read_image(tmp_path / "p.png")
    assert img.array.dtype == np.uint16 and img.mode == "I;16"
    np.testing.assert_array_equal(img.array[:, :, 0], arr)


def test_png_compress_level_changes_size_not_pixels(tmp_path):
    arr = np.tile(smooth_rgb(), (4, 4, 1))
    write_image(tmp_path / "l0.png", arr, compress_level=0)
    write_image(tmp_path / "l9.png", arr, compress_level=9)
    assert (tmp_path / "l0.png").stat().st_size > 2 * (tmp_path / "l9.png").stat().st_size
    for name in ("l0.png", "l9.png"):
        np.testing.assert_array_equal(read_image(tmp_path / name).array, arr)
    with pytest.raises(ValueError, match="compress_level"):
        write_image(tmp_path / "bad.png", arr, compress_level=10)


def test_jpeg_quality(tmp_path):
    arr = np.ascontiguousarray(np.tile(smooth_rgb(), (2, 2, 1)))
    arr = np.clip(arr.astype(int) + RNG.integers(-20, 21, arr.shape), 0, 255).astype(np.uint8)
    write_image(tmp_path / "q20.jpg", arr, quality=20)
    write_image(tmp_path / "q95.jpg", arr, quality=95)
    lo, hi = read_image(tmp_path / "q20.jpg"), read_image(tmp_path / "q95.jpg")
    assert lo.format == hi.format == "JPEG"
    assert lo.array.shape == hi.array.shape == arr.shape and hi.array.dtype == np.uint8
    assert (tmp_path / "q95.jpg").stat().st_size > (tmp_path / "q20.jpg").stat().st_size
    err = lambda im: np.abs(im.array.astype(int) - arr).mean()  # noqa: E731
    assert err(hi) < err(lo)
    assert err(hi) < 6


def test_jpeg_grey(tmp_path):
    arr = smooth_rgb()[:, :, :1]
    write_image(tmp_path / "g.jpeg", arr)
    img = read_image(tmp_path / "g.jpeg")
    assert img.array.shape == arr.shape and img.channels == ("L",)
    assert np.abs(img.array.astype(int) - arr).max() <= 4


def test_float_tiff_exact_with_nan_and_inf(tmp_path):
    for dtype in (np.float32, np.float64):
        arr = RNG.standard_normal((7, 9, 1)).astype(dtype) * 1e3
        arr[0, 0, 0] = np.nan
        arr[1, 1, 0] = np.inf
        arr[2, 2, 0] = -np.inf
        arr[3, 3, 0] = -0.0
        arr[4, 4, 0] = np.finfo(dtype).tiny
        path = tmp_path / f"f_{np.dtype(dtype).name}.tif"
        write_image(path, arr)
        img = read_image(path)
        assert img.array.dtype == dtype and img.format == "TIFF"
        assert img.array.shape == arr.shape
        np.testing.assert_array_equal(img.array, arr)  # NaN == NaN for assert_array_equal
        assert np.signbit(img.array[3, 3, 0])
    assert read_image(tmp_path / "f_float32.tif").mode == "F"


@pytest.mark.parametrize("level", [0, 6])
def test_multichannel_uint16_tiff(tmp_path, level):
    rgba = rand((8, 10, 4), np.uint16)
    write_image(tmp_path / "rgba.tiff", rgba, compress_level=level)
    img = read_image(tmp_path / "rgba.tiff")
    assert img.channels == ("R", "G", "B", "A") and img.mode == "RGBA;16"
    np.testing.assert_array_equal(img.array, rgba)

    five = rand((8, 10, 5), np.uint16)
    write_image(tmp_path / "five.tif", five, channels=tuple(f"c{i}" for i in range(5)))
    img = read_image(tmp_path / "five.tif")
    assert img.channels == ("c0", "c1", "c2", "c3", "c4")
    np.testing.assert_array_equal(img.array, five)


def test_tiff_integer_dtypes_exact(tmp_path):
    for dtype in (np.uint8, np.int16, np.int32, np.uint32):
        arr = rand((5, 6, 3), dtype)
        write_image(tmp_path / "x.tif", arr, overwrite=True)
        img = read_image(tmp_path / "x.tif")
        assert img.array.dtype == dtype
        np.testing.assert_array_equal(img.array, arr)


def test_tiff_planar_separate_is_channels_last(tmp_path):
    import tifffile

    arr = rand((3, 6, 7), np.uint16)  # planes first on disk
    tifffile.imwrite(tmp_path / "planar.tif", arr, photometric="rgb", planarconfig="separate")
    img = read_image(tmp_path / "planar.tif")
    assert img.array.shape == (6, 7, 3)
    np.testing.assert_array_equal(img.array, np.moveaxis(arr, 0, -1))


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "1", "CMYK", "I;16", "F"])
def test_pillow_written_tiffs(tmp_path, mode):
    base = Image.fromarray(smooth_rgb()).convert(mode if mode not in ("I;16", "F") else "L")
    if mode in ("I;16", "F"):
        dtype = np.uint16 if mode == "I;16" else np.float32
        base = Image.fromarray(np.asarray(base).astype(dtype) * 3)
    base.save(tmp_path / "p.tif")
    img = read_image(tmp_path / "p.tif")
    expected = {"L": (1, np.uint8), "RGB": (3, np.uint8), "P": (3, np.uint8), "1": (1, np.uint8),
                "CMYK": (3, np.uint8), "I;16": (1, np.uint16), "F": (1, np.float32)}[mode]
    assert img.array.shape == (48, 64, expected[0])
    assert img.array.dtype == expected[1]
    if mode == "1":
        assert set(np.unique(img.array)) <= {0, 255}
    if mode in ("L", "RGB", "I;16", "F"):
        np.testing.assert_array_equal(img.array, imageio_read._hwc(np.asarray(base)))
    if mode == "P":
        np.testing.assert_array_equal(img.array, np.asarray(base.convert("RGB")))
        assert any("palette" in n for n in img.notes)
    if mode == "CMYK":
        assert any("CMYK" in n for n in img.notes)


def test_multipage_tiff_first_page_and_note(tmp_path):
    import tifffile

    pages = rand((5, 6, 7), np.uint16)
    with tifffile.TiffWriter(tmp_path / "stack.tif") as tw:
        for page in pages:
            tw.write(page, photometric="minisblack")
    img = read_image(tmp_path / "stack.tif")
    np.testing.assert_array_equal(img.array[:, :, 0], pages[0])
    assert "first page of 5 (multi-page TIFF)" in img.notes


def test_npy_exact(tmp_path):
    for arr in (
        RNG.standard_normal((6, 7, 3)).astype(np.float32),
        RNG.standard_normal((6, 7)).astype(np.float64),
        rand((6, 7, 2), np.int16),
        np.asfortranarray(rand((6, 7, 5), np.uint16)),
        rand((6, 7), np.uint8).astype(">u2"),
    ):
        write_image(tmp_path / "a.npy", arr, overwrite=True)
        back = np.load(tmp_path / "a.npy")
        assert back.shape == arr.shape and back.dtype == arr.dtype
        np.testing.assert_array_equal(back, arr)
        img = read_image(tmp_path / "a.npy")
        assert img.format == "NPY"
        assert img.array.shape == (arr.shape + (1,) if arr.ndim == 2 else arr.shape)
        assert img.array.dtype == arr.dtype.newbyteorder("=")
        assert img.array.dtype.isnative
        assert img.channels == tuple(f"c{i}" for i in range(img.array.shape[2]))
        np.testing.assert_array_equal(img.array.reshape(arr.shape), arr)


def test_npy_bool_and_float16(tmp_path):
    np.save(tmp_path / "b.npy", np.array([[True, False], [False, True]]))
    img = read_image(tmp_path / "b.npy")
    assert img.array.dtype == np.uint8 and img.array[:, :, 0].tolist() == [[1, 0], [0, 1]]
    assert any("bool" in n for n in img.notes)
    np.save(tmp_path / "h.npy", np.array([[0.5, -2.0]], np.float16))
    img = read_image(tmp_path / "h.npy")
    assert img.array.dtype == np.float32 and img.array[0, :, 0].tolist() == [0.5, -2.0]


@pytest.mark.parametrize(("suffix", "channels"), [(".bmp", 1), (".bmp", 3), (".gif", 1)])
def test_lossless_8bit_formats(tmp_path, suffix, channels):
    arr = rand((12, 14, channels))
    write_image(tmp_path / f"x{suffix}", arr)
    img = read_image(tmp_path / f"x{suffix}")
    assert img.array.dtype == np.uint8
    if suffix == ".gif":
        # GIF stores a palette; a grey image round-trips as RGB with R == G == B == value.
        assert img.array.shape == (12, 14, 3)
        np.testing.assert_array_equal(img.array, np.repeat(arr, 3, axis=2))
    else:
        np.testing.assert_array_equal(img.array, arr)


def test_webp(tmp_path):
    arr = smooth_rgb()
    write_image(tmp_path / "x.webp", arr, quality=95)
    img = read_image(tmp_path / "x.webp")
    assert img.format == "WEBP" and img.array.shape == arr.shape
    assert np.abs(img.array.astype(int) - arr).mean() < 4
    rgba = np.dstack([arr, rand(arr.shape[:2])])
    write_image(tmp_path / "a.webp", rgba)
    img = read_image(tmp_path / "a.webp")
    assert img.channels == ("R", "G", "B", "A")


# --------------------------------------------------------------------------------------------------
# Modes and metadata
# --------------------------------------------------------------------------------------------------


def test_palette_with_transparency(tmp_path):
    index = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    im = Image.new("P", (3, 2))
    im.putdata(index.ravel().tolist())
    im.putpalette([10, 20, 30, 200, 0, 0, 0, 255, 0] + [0] * (768 - 9))
    im.save(tmp_path / "pal.png", transparency=bytes([0, 255, 128]))
    img = read_image(tmp_path / "pal.png")
    assert img.channels == ("R", "G", "B", "A") and img.array.shape == (2, 3, 4)
    assert img.array[0, 0].tolist() == [10, 20, 30, 0]
    assert img.array[0, 1].tolist() == [200, 0, 0, 255]
    assert img.array[0, 2].tolist() == [0, 255, 0, 128]
    assert "palette expanded to RGBA, transparency kept" in img.notes

    im.save(tmp_path / "pal_opaque.png")
    img = read_image(tmp_path / "pal_opaque.png")
    assert img.channels == ("R", "G", "B") and img.array[1, 0].tolist() == [0, 255, 0]
    assert "palette expanded to RGB" in img.notes


def test_cmyk_jpeg(tmp_path):
    Image.fromarray(smooth_rgb()).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
    img = read_image(tmp_path / "cmyk.jpg")
    assert img.array.shape == (48, 64, 3) and img.channels == ("R", "G", "B")
    assert any("CMYK converted to RGB" in n for n in img.notes)
    assert np.abs(img.array.astype(int) - smooth_rgb()).mean() < 8


def test_mode_1(tmp_path):
    bits = rand((9, 10)) > 128
    Image.fromarray(bits).save(tmp_path / "bw.png")
    with Image.open(tmp_path / "bw.png") as im:
        assert im.mode == "1"
    img = read_image(tmp_path / "bw.png")
    assert img.array.dtype == np.uint8 and img.mode == "1"
    np.testing.assert_array_equal(img.array[:, :, 0], bits.astype(np.uint8) * 255)
    assert any("0/255" in n for n in img.notes)


def test_grey_colour_key_transparency(tmp_path):
    arr = np.array([[0, 7], [7, 9]], np.uint8)
    Image.fromarray(arr).save(tmp_path / "key.png", transparency=7)
    img = read_image(tmp_path / "key.png")
    assert img.channels == ("L", "A")
    assert img.array[:, :, 1].tolist() == [[255, 0], [0, 255]]
    np.testing.assert_array_equal(img.array[:, :, 0], arr)


def _jpeg_with_orientation(path, arr, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(path, quality=95, exif=exif.tobytes())


def test_exif_rotated_jpeg(tmp_path):
    arr = smooth_rgb(40, 64)
    _jpeg_with_orientation(tmp_path / "rot.jpg", arr, 6)
    img = read_image(tmp_path / "rot.jpg")
    assert img.array.shape == (64, 40, 3)
    assert "EXIF orientation applied (rotate 90 clockwise)" in img.notes
    # Top-left of the rotated image is the original bottom-left.
    assert np.abs(img.array[0, 0].astype(int) - arr[-1, 0]).max() < 12


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(tmp_path, orientation):
    arr = rand((6, 10, 3))
    _jpeg_with_orientation(tmp_path / "o.jpg", arr, orientation)
    with Image.open(tmp_path / "o.jpg") as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    img = read_image(tmp_path / "o.jpg")
    np.testing.assert_array_equal(img.array, expected)
    assert any("EXIF orientation" in n for n in img.notes) == (orientation != 1)


def test_orientation_applies_to_16bit_png(tmp_path):
    import imagecodecs

    arr = rand((4, 6, 3), np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 8
    png = imagecodecs.png_encode(arr)
    payload = exif.tobytes().removeprefix(b"Exif\x00\x00")
    ihdr_end = 8 + 8 + 13 + 4
    (tmp_path / "o16.png").write_bytes(png[:ihdr_end] + _chunk(b"eXIf", payload) + png[ihdr_end:])
    img = read_image(tmp_path / "o16.png")
    np.testing.assert_array_equal(img.array, np.rot90(arr, 1))
    assert "EXIF orientation applied (rotate 90 counter-clockwise)" in img.notes


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((6, 7), 40 * i, np.uint8)).convert("P") for i in range(4)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    img = read_image(tmp_path / "anim.gif")
    assert img.format == "GIF"
    assert img.array.shape[:2] == (6, 7)
    assert np.all(img.array == 0)
    assert "first frame of 4 (animated GIF)" in img.notes


def test_suffix_mismatch_is_noted(tmp_path):
    Image.fromarray(smooth_rgb()).save(tmp_path / "really_jpeg.png", format="JPEG")
    img = read_image(tmp_path / "really_jpeg.png")
    assert img.format == "JPEG"
    assert any("content is JPEG" in n for n in img.notes)


def test_stdin(monkeypatch):
    arr = rand((5, 6, 3))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")

    class FakeStdin:
        buffer = io.BytesIO(buf.getvalue())

    monkeypatch.setattr(sys, "stdin", FakeStdin())
    img = read_image("-")
    assert img.source == "<stdin>" and img.format == "PNG"
    np.testing.assert_array_equal(img.array, arr)

    class EmptyStdin:
        buffer = io.BytesIO(b"")

    monkeypatch.setattr(sys, "stdin", EmptyStdin())
    with pytest.raises(ImageReadError, match="<stdin>"):
        read_image("-")


def test_stdin_npy(monkeypatch):
    arr = RNG.standard_normal((3, 4, 2)).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, arr)

    class FakeStdin:
        buffer = io.BytesIO(buf.getvalue())

    monkeypatch.setattr(sys, "stdin", FakeStdin())
    np.testing.assert_array_equal(read_image("-").array, arr)


def test_sample_images():
    samples = REPO / "sample_images"
    expected = {
        "chelsea.png": ((300, 451, 3), np.uint8),
        "coffee.png": ((400, 600, 3), np.uint8),
        "astronaut.png": ((512, 512, 3), np.uint8),
        "camera.png": ((512, 512, 1), np.uint8),
        "chelsea_rgba.png": ((300, 451, 4), np.uint8),
        "camera16.png": ((512, 512, 1), np.uint16),
        "coffee16.png": ((200, 300, 3), np.uint16),
    }
    for name, (shape, dtype) in expected.items():
        img = read_image(samples / name)
        assert img.array.shape == shape, name
        assert img.array.dtype == dtype, name
    alpha = read_image(samples / "chelsea_rgba.png").array[:, :, 3]
    assert alpha.min() == 0 and alpha.max() == 255 and len(np.unique(alpha)) > 100
    cam16 = read_image(samples / "camera16.png").array
    assert np.any(cam16 % 257)  # genuinely more than 8 bits
    assert np.any(read_image(samples / "coffee16.png").array % 257)
    assert (samples / "LICENSES.md").is_file()
    assert sum(p.stat().st_size for p in samples.iterdir()) < 3 * 1024 * 1024


# --------------------------------------------------------------------------------------------------
# Read errors
# --------------------------------------------------------------------------------------------------


def _png_bytes(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(ctype + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", crc)


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    assert_read_error(tmp_path / "empty.png", contains="file is empty")


def test_truncated_png(tmp_path):
    data = _png_bytes(rand((64, 64, 3)))
    for cut in (20, 40, len(data) // 2):
        (tmp_path / "trunc.png").write_bytes(data[:cut])
        assert_read_error(tmp_path / "trunc.png", contains="truncated or corrupt PNG data")


def test_truncated_16bit_png(tmp_path):
    import imagecodecs

    data = imagecodecs.png_encode(rand((32, 32, 3), np.uint16))
    (tmp_path / "t16.png").write_bytes(data[: len(data) // 2])
    assert_read_error(tmp_path / "t16.png", contains="truncated or corrupt PNG data")


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(rand((64, 64, 3))).save(buf, format="JPEG")
    data = buf.getvalue()
    for cut in (3, 200, len(data) // 2):
        (tmp_path / "trunc.jpg").write_bytes(data[:cut])
        assert_read_error(tmp_path / "trunc.jpg", contains="JPEG")


def test_truncated_tiff_and_npy(tmp_path):
    write_image(tmp_path / "t.tif", rand((32, 32, 3), np.uint16), compress_level=0)
    data = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    assert_read_error(tmp_path / "cut.tif", contains="TIFF")
    np.save(tmp_path / "t.npy", rand((32, 32, 3)))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    assert_read_error(tmp_path / "cut.npy", contains="truncated or corrupt NPY data")


def test_random_bytes_named_png(tmp_path):
    noise = bytes(RNG.integers(0, 256, 4096, dtype=np.uint8)) + b"\x00"
    (tmp_path / "noise.png").write_bytes(noise)
    assert_read_error(tmp_path / "noise.png", contains="not an image file (unrecognised data)")


def test_text_file(tmp_path):
    (tmp_path / "page.png").write_text("<!DOCTYPE html><html>404 Not Found</html>\n")
    assert_read_error(tmp_path / "page.png", contains="not an image file (looks like text)")


def test_directory(tmp_path):
    (tmp_path / "x.png").mkdir()
    assert_read_error(tmp_path / "x.png", contains="is a directory")


def test_missing_file(tmp_path):
    assert_read_error(tmp_path / "nope.png", contains="no such file")


def test_broken_symlink(tmp_path):
    os.symlink(tmp_path / "gone.png", tmp_path / "link.png")
    assert_read_error(tmp_path / "link.png", contains="broken symbolic link")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read unreadable files")
def test_permission_denied(tmp_path):
    path = tmp_path / "secret.png"
    path.write_bytes(_png_bytes(rand((4, 4))))
    path.chmod(0)
    try:
        assert_read_error(path, contains="permission denied")
    finally:
        path.chmod(0o644)


def test_permission_denied_simulated(tmp_path, monkeypatch):
    # Runs as root too: the OS error is injected where the file is opened.
    path = tmp_path / "secret.png"
    path.write_bytes(_png_bytes(rand((4, 4))))

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(imageio_read, "open", denied, raising=False)
    assert_read_error(path, contains="secret.png: permission denied")


def test_symlink_loop(tmp_path):
    os.symlink(tmp_path / "b.png", tmp_path / "a.png")
    os.symlink(tmp_path / "a.png", tmp_path / "b.png")
    assert_read_error(tmp_path / "a.png", contains="symbolic links")


def test_decompression_bomb_png(tmp_path):
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
    data += _chunk(b"IEND", b"")
    (tmp_path / "bomb.png").write_bytes(data)
    message = assert_read_error(tmp_path / "bomb.png", contains="100000x100000 = 10000000000")
    assert "--max-pixels 178956970" in message and "decompression-bomb" in message
    # Also as a 16-bit RGB PNG (imagecodecs path) and via a small explicit limit for Pillow formats.
    ihdr16 = struct.pack(">IIBBBBB", 100_000, 100_000, 16, 2, 0, 0, 0)
    data16 = data.replace(_chunk(b"IHDR", ihdr), _chunk(b"IHDR", ihdr16))
    (tmp_path / "bomb16.png").write_bytes(data16)
    assert_read_error(tmp_path / "bomb16.png", contains="decompression-bomb")
    for name in ("small.jpg", "small.gif", "small.tif", "small.npy", "small.png"):
        write_image(tmp_path / name, rand((20, 30, 1)))
        expected = "30x20 = 600 pixels exceeds --max-pixels 599"
        assert_read_error(tmp_path / name, contains=expected, max_pixels=599)
        assert read_image(tmp_path / name, max_pixels=600).array.shape[:2] == (20, 30)


def test_bigger_than_pillow_limit_allowed_when_asked(tmp_path, monkeypatch):
    # Pillow's own guard must not fire: pretend Pillow's limit is tiny.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    write_image(tmp_path / "ok.jpg", rand((20, 30, 3)))
    assert read_image(tmp_path / "ok.jpg").array.shape == (20, 30, 3)


def test_npy_bad_arrays(tmp_path):
    np.save(tmp_path / "nd4.npy", np.zeros((2, 3, 4, 5), np.float32))
    assert_read_error(tmp_path / "nd4.npy", contains="4 dimensions")
    np.save(tmp_path / "nd1.npy", np.zeros(5, np.float32))
    assert_read_error(tmp_path / "nd1.npy", contains="1 dimensions")
    np.save(tmp_path / "obj.npy", np.array([[{"a": 1}, None]], dtype=object), allow_pickle=True)
    assert_read_error(tmp_path / "obj.npy", contains="Python objects")
    np.save(tmp_path / "cplx.npy", np.zeros((3, 3), np.complex64))
    assert_read_error(tmp_path / "cplx.npy", contains="complex")
    np.save(tmp_path / "str.npy", np.array([["a", "b"]]))
    assert_read_error(tmp_path / "str.npy", contains="not numeric")
    np.save(tmp_path / "empty.npy", np.zeros((0, 3), np.float32))
    assert_read_error(tmp_path / "empty.npy", contains="empty")


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def test_float_into_png_is_value_error_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="PNG stores uint8 or uint16"):
        write_image(tmp_path / "f.png", np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="int32"):
        write_image(tmp_path / "i.png", np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match="uint8 only"):
        write_image(tmp_path / "u16.jpg", np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match="1-4 channels"):
        write_image(tmp_path / "five.png", np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="suffix"):
        write_image(tmp_path / "x.xyz", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        write_image(tmp_path / "x.png", np.zeros((2, 4, 4, 1), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_jpeg_alpha_is_write_error(tmp_path):
    with pytest.raises(ImageWriteError, match=r"a\.jpg: JPEG has no alpha.*\.png"):
        write_image(tmp_path / "a.jpg", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ImageWriteError, match="BMP has no alpha"):
        write_image(tmp_path / "a.bmp", np.zeros((4, 4, 2), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_missing_directory(tmp_path):
    target = tmp_path / "no" / "such" / "out.png"
    with pytest.raises(ImageWriteError, match="out.png: directory does not exist"):
        write_image(target, np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only directories")
def test_unwritable_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ImageWriteError, match="permission denied"):
            write_image(ro / "out.png", np.zeros((4, 4), np.uint8))
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_unwritable_directory_simulated(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(imageio_files.tempfile, "NamedTemporaryFile", denied)
    with pytest.raises(ImageWriteError, match="out.png: permission denied"):
        write_image(tmp_path / "out.png", np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
        (RuntimeError("encoder exploded"), "encoding failed"),
    ],
)
def test_failure_mid_write_cleans_up(tmp_path, monkeypatch, exc, expected):
    def failing_encode(fh, *args, **kwargs):
        fh.write(b"half a file")
        raise exc

    monkeypatch.setattr(imageio_write, "_encode", failing_encode)
    with pytest.raises(ImageWriteError) as info:
        write_image(tmp_path / "out.png", np.zeros((4, 4), np.uint8))
    assert "out.png" in str(info.value) and expected in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_interrupt_mid_write_cleans_up(tmp_path, monkeypatch):
    def interrupted(fh, *args, **kwargs):
        fh.write(b"x")
        raise KeyboardInterrupt

    monkeypatch.setattr(imageio_write, "_encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "out.npy", np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_temp_file_is_hidden_part_in_target_dir(tmp_path, monkeypatch):
    seen = []

    def spying_encode(fh, *args, **kwargs):
        seen.append(Path(fh.name))
        fh.write(b"data")

    monkeypatch.setattr(imageio_write, "_encode", spying_encode)
    write_image(tmp_path / "out.png", np.zeros((4, 4), np.uint8))
    (temp,) = seen
    assert temp.parent == tmp_path
    assert temp.name.startswith(".out.png.") and temp.name.endswith(".part")
    assert (tmp_path / "out.png").read_bytes() == b"data"
    assert parts(tmp_path) == []


def test_overwrite(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"precious")
    with pytest.raises(ImageWriteError, match=r"out\.png: exists \(use --force to replace\)"):
        write_image(target, np.zeros((4, 4), np.uint8))
    assert target.read_bytes() == b"precious"
    assert parts(tmp_path) == []
    write_image(target, np.full((4, 4), 9, np.uint8), overwrite=True)
    assert read_image(target).array.max() == 9
    with pytest.raises(ImageWriteError, match="is a directory"):
        write_image(tmp_path, np.zeros((4, 4), np.uint8), overwrite=True, format="PNG")


@pytest.mark.parametrize("stem", ["a" * 246, "\u00e9" * 123, "x" * 251])
def test_name_near_the_length_limit_still_writes(tmp_path, stem):
    """``.NAME.<8 random>.part`` would pass 255 bytes: the temporary name is shortened."""
    name = stem + ".png" if len(stem) < 251 else stem[:251] + ".npy"  # 250 or 255 bytes
    assert len(os.fsencode(name)) in (250, 255)
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_image(tmp_path / name, arr)
    np.testing.assert_array_equal(read_image(tmp_path / name).array[:, :, 0], arr)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_temp_prefix_fits_the_name_limit(tmp_path):
    for name in ("out.png", "a" * 250, "\u00e9" * 125, "b" * 255, "\udcff" * 200):
        prefix = imageio_files.temp_prefix(str(tmp_path), name)
        assert prefix.startswith(".") and prefix.endswith(".")
        assert len(os.fsencode(prefix)) + 8 + len(".part") <= 255
    assert imageio_files.temp_prefix(str(tmp_path), "out.png") == ".out.png."


def test_atomic_write_is_public_and_cleans_up(tmp_path):
    target = tmp_path / "side.json"
    imageio.atomic_write(target, lambda fh: fh.write(b"{}"), False)
    assert target.read_bytes() == b"{}"
    with pytest.raises(ImageWriteError, match="exists"):
        imageio.atomic_write(target, lambda fh: fh.write(b"[]"), False)

    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("encoder exploded")

    with pytest.raises(ImageWriteError, match="side.json: encoding failed"):
        imageio.atomic_write(target, boom, True)
    assert target.read_bytes() == b"{}" and parts(tmp_path) == []


def test_os_problem_phrases():
    assert imageio_files.os_problem(OSError(errno.ENOSPC, "x"), "cannot write") == \
        "disk full (no space left on device)"
    assert imageio_files.os_problem(OSError(errno.ESTALE, "Stale file handle"), "cannot write") \
        == "cannot write (Stale file handle)"


def test_written_file_mode_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        imageio_files._FILE_MODE = None
        write_image(tmp_path / "m.png", np.zeros((4, 4), np.uint8))
    finally:
        os.umask(old)
        imageio_files._FILE_MODE = None
    assert stat.S_IMODE((tmp_path / "m.png").stat().st_mode) == 0o640


def test_non_contiguous_arrays(tmp_path):
    base = rand((10, 12, 3))
    for suffix in (".png", ".tif", ".npy", ".bmp"):
        view = base.transpose(1, 0, 2)[::2]
        write_image(tmp_path / f"v{suffix}", view)
        np.testing.assert_array_equal(read_image(tmp_path / f"v{suffix}").array, view)
    view16 = rand((10, 12, 4), np.uint16)[:, ::-1]
    write_image(tmp_path / "v16.png", view16)
    np.testing.assert_array_equal(read_image(tmp_path / "v16.png").array, view16)


def test_write_to_stdout(monkeypatch):
    class FakeStdout:
        buffer = io.BytesIO()

    fake = FakeStdout()
    monkeypatch.setattr(sys, "stdout", fake)
    arr = rand((4, 5, 3))
    write_image("-", arr, format="png")
    assert fake.buffer.getvalue().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="explicit format"):
        write_image("-", arr)


def test_channel_names_must_match(tmp_path):
    with pytest.raises(ValueError, match="channel names"):
        write_image(tmp_path / "x.tif", np.zeros((2, 2, 3), np.uint8), channels=("L",))


# --------------------------------------------------------------------------------------------------
# to_display, fit_to_dtype, output_dtype_for
# --------------------------------------------------------------------------------------------------


def test_to_display_minmax():
    arr = np.array([[-1.0, 0.0], [1.0, 3.0]], np.float32)
    out, desc = to_display(arr)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 64], [128, 255]]
    assert desc.startswith("minmax [-1, 3] -> [0, 255]")
    out, desc = to_display(np.full((2, 2, 3), 5.0))
    assert np.all(out == 128) and "constant" in desc


def test_to_display_minmax_is_whole_image_not_per_channel():
    arr = np.dstack([np.zeros((2, 2)), np.full((2, 2), 10.0)])
    arr[0, 0, 0] = 5.0
    out, _ = to_display(arr)
    assert out[0, 0, 0] == 128 and out[1, 1, 0] == 0 and np.all(out[:, :, 1] == 255)


def test_to_display_nan_and_inf():
    arr = np.array([np.nan, -np.inf, 0.0, 1.0, np.inf])
    out, desc = to_display(arr)
    assert out.tolist() == [0, 0, 0, 255, 255]
    assert "[0, 1]" in desc
    out, _ = to_display(np.array([np.nan, np.nan]))
    assert out.tolist() == [0, 0]


def test_to_display_sigma():
    arr = RNG.standard_normal((100, 100)).astype(np.float32) * 2 + 5
    out, desc = to_display(arr, "sigma:2")
    assert desc.startswith("sigma 2: mean") and "clipped" in desc
    m, s = float(arr.astype(np.float64).mean()), float(arr.astype(np.float64).std())
    assert out.ravel()[np.argmin(np.abs(arr - m))] in (127, 128)
    assert np.all(out[arr <= m - 2 * s] == 0) and np.all(out[arr >= m + 2 * s] == 255)
    _, desc3 = to_display(arr, "sigma", sigma_k=3)
    assert desc3.startswith("sigma 3:")
    with pytest.raises(ValueError):
        to_display(arr, "sigma:abc")
    with pytest.raises(ValueError):
        to_display(arr, "gamma")


def test_to_display_clip_modes():
    out, desc = to_display(np.array([-0.2, 0.0, 0.5, 1.0, 1.7]), "clip")
    assert out.tolist() == [0, 0, 128, 255, 255] and desc.startswith("clip [0, 1]")
    out, desc = to_display(np.array([-3.0, 12.4, 12.6, 254.5, 300.0]), "clip255")
    assert out.tolist() == [0, 12, 13, 254, 255]
    assert "2 of 5 values clipped" in desc


@pytest.mark.parametrize(("text", "expected"), [
    ("minmax", ("minmax", None)), ("clip", ("clip", None)), ("clip255", ("clip255", None)),
    ("sigma", ("sigma", 3.0)), ("sigma:2", ("sigma", 2.0)), ("sigma:0.5", ("sigma", 0.5)),
    ("sigma:3.", ("sigma", 3.0)), ("sigma:1e1", ("sigma", 10.0)),
])
def test_parse_display(text, expected):
    assert imageio.parse_display(text) == expected


@pytest.mark.parametrize("text", ["", "gamma", "sigma:", "sigma:0", "sigma:-1", "sigma:abc",
                                  "sigma:inf", "sigma:nan", "sigma:1e999", "sigma: 3",
                                  "minmax:2", "clip:1", "SIGMA", "sigma:3:4"])
def test_parse_display_refuses(text):
    with pytest.raises(ValueError, match="display mapping"):
        imageio.parse_display(text)


def test_to_display_takes_the_spec_string():
    arr = RNG.standard_normal((20, 20))
    assert to_display(arr, "sigma:2")[1] == to_display(arr, "sigma", sigma_k=2)[1]
    with pytest.raises(ValueError, match="K must be"):
        to_display(arr, "sigma:0")


def test_one_format_table():
    from poolcli import formats

    assert formats.SUPPORTED_SUFFIXES == (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp",
                                          ".webp", ".gif", ".npy")
    assert imageio.SUPPORTED_SUFFIXES is formats.SUPPORTED_SUFFIXES
    assert set(formats.OUTPUT_FORMATS) == {"png", "tif", "tiff", "npy", "jpg", "jpeg", "webp",
                                           "bmp"}
    assert all("." + f in formats.SUFFIX_FORMAT for f in formats.OUTPUT_FORMATS)
    assert formats.SUFFIX_FORMAT[".gif"] == "GIF"  # read, and written when the suffix says so


def test_every_suffix_is_writable(tmp_path):
    from poolcli import formats

    arr = rand((4, 5, 3))
    for suffix in formats.SUPPORTED_SUFFIXES:
        write_image(tmp_path / f"o{suffix}", arr)
        assert read_image(tmp_path / f"o{suffix}").array.shape == (4, 5, 3)
    for name in formats.OUTPUT_FORMATS:
        write_image(tmp_path / "o.bin", arr, format=name, overwrite=True)


def test_fit_to_dtype():
    arr = np.array([-5.0, 0.5, 1.5, 2.4, 70000.0, np.nan])
    assert imageio.fit_to_dtype(arr, np.uint16).tolist() == [0, 0, 2, 2, 65535, 0]
    assert imageio.fit_to_dtype(arr, np.uint8).tolist() == [0, 0, 2, 2, 255, 0]
    u8 = np.array([1, 2], np.uint8)
    assert imageio.fit_to_dtype(u8, np.uint8) is u8


@pytest.mark.parametrize(
    ("name", "dtype", "source", "expected"),
    [
        ("o.png", np.uint8, None, np.uint8),
        ("o.png", np.uint16, None, np.uint16),
        ("o.png", np.float32, None, np.uint8),
        ("o.PNG", np.float32, np.uint16, np.uint16),
        ("o.png", np.float32, np.uint8, np.uint8),
        ("o.png", np.int32, None, np.uint16),
        ("o.jpg", np.uint16, None, np.uint8),
        ("o.webp", np.float64, None, np.uint8),
        ("o.tif", np.float32, None, np.float32),
        ("o.tiff", np.int64, None, np.int64),
        ("o.npy", np.float64, None, np.float64),
        ("o.npy", np.int8, None, np.int8),
    ],
)
def test_output_dtype_for(name, dtype, source, expected):
    assert output_dtype_for(name, dtype, source_dtype=source) == np.dtype(expected)


def test_output_dtype_for_unknown_suffix():
    with pytest.raises(ValueError):
        output_dtype_for("o.xyz", np.uint8)


def test_output_dtype_for_agrees_with_write_image(tmp_path):
    for suffix in (".png", ".jpg", ".tif", ".npy", ".bmp", ".gif", ".webp"):
        for dtype in (np.uint8, np.uint16, np.float32, np.int32):
            target = output_dtype_for(f"x{suffix}", dtype)
            arr = imageio.fit_to_dtype(RNG.uniform(0, 300, (4, 4, 3)), target)
            write_image(tmp_path / f"x{suffix}", arr, overwrite=True)


def test_import_is_light():
    code = (
        "import sys, poolcli.imageio; "
        "bad = [m for m in ('PIL', 'tifffile', 'imagecodecs', 'torch') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------------
# Property: lossless formats round-trip any array they accept
# --------------------------------------------------------------------------------------------------

_LOSSLESS = st.sampled_from(
    [
        (".png", np.uint8, 4),
        (".png", np.uint16, 4),
        (".tif", np.float32, 6),
        (".tif", np.int16, 6),
        (".npy", np.float64, 6),
    ]
)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), spec=_LOSSLESS)
def test_lossless_roundtrip_property(tmp_path_factory, data, spec):
    suffix, dtype, max_channels = spec
    shape = data.draw(
        st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, max_channels)), label="shape"
    )
    elements = None
    if np.dtype(dtype).kind == "f":
        width = np.dtype(dtype).itemsize * 8
        elements = st.floats(width=width, allow_nan=True, allow_infinity=True)
    arr = data.draw(hnp.arrays(dtype, shape, elements=elements), label="array")
    path = tmp_path_factory.mktemp("prop") / f"x{suffix}"
    write_image(path, arr)
    img = read_image(path)
    assert img.array.dtype == arr.dtype and img.array.shape == arr.shape
    np.testing.assert_array_equal(img.array, arr)
