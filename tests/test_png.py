"""poolcli.imageio.png: the PNG writer, checked against two independent decoders and the spec by
hand."""

from __future__ import annotations

import io
import pathlib
import struct
import zlib

import imagecodecs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from poolcli.imageio import png
from poolcli.imageio.png import encode_png

SAMPLES = pathlib.Path(__file__).resolve().parent.parent / "sample_images"


def chunks(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        yield ctype, payload, crc
        pos += 12 + length


def naive_filter(rows: list[list[int]], bpp: int) -> list[list[int]]:
    """Scanlines straight from the PNG specification, one byte at a time.

    Each row tries None, Sub, Up and Average and keeps the first with the smallest sum of
    |residual| (residual bytes read as signed), the heuristic poolcli.imageio.png documents.
    """
    out = []
    for r, row in enumerate(rows):
        candidates = []
        for kind in range(4):
            line = []
            for i, x in enumerate(row):
                left = row[i - bpp] if i >= bpp else 0
                up = rows[r - 1][i] if r > 0 else 0
                predictor = [0, left, up, (left + up) // 2][kind]
                line.append((x - predictor) % 256)
            score = sum(v if v < 128 else 256 - v for v in line)
            candidates.append((score, kind, line))
        score, kind, line = min(candidates, key=lambda c: (c[0], c[1]))
        out.append([kind] + line)
    return out


SHAPES = [(1, 1), (1, 7), (7, 1), (5, 3), (33, 65)]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("level", [0, 1, 9])
def test_round_trip_through_libpng(dtype, channels, shape, level):
    rng = np.random.default_rng(hash((shape, channels, level)) % 2**32)
    a = rng.integers(0, np.iinfo(dtype).max + 1, (*shape, channels), dtype=dtype)
    back = imagecodecs.png_decode(encode_png(a, level))
    assert back.dtype == dtype
    assert np.array_equal(back.reshape(a.shape), a)


@pytest.mark.parametrize("channels,mode", [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
def test_pillow_reads_8_bit(channels, mode):
    rng = np.random.default_rng(channels)
    a = rng.integers(0, 256, (17, 23, channels), dtype=np.uint8)
    with Image.open(io.BytesIO(encode_png(a, 1))) as im:
        assert im.mode == mode
        assert np.array_equal(np.asarray(im).reshape(a.shape), a)


def test_pillow_reads_16_bit_grey():
    a = np.array([[0, 1, 255], [256, 4660, 65535]], np.uint16)[:, :, None]
    with Image.open(io.BytesIO(encode_png(a, 1))) as im:
        assert im.mode == "I;16"
        assert np.array_equal(np.asarray(im), a[:, :, 0])


@pytest.mark.parametrize("dtype,channels", [(np.uint8, 3), (np.uint8, 2), (np.uint16, 1),
                                            (np.uint16, 4)])
def test_scanlines_match_the_spec(dtype, channels):
    rng = np.random.default_rng(7)
    a = rng.integers(0, np.iinfo(dtype).max + 1, (6, 5, channels), dtype=dtype)
    data = encode_png(a, 1)
    idat = b"".join(p for t, p, _ in chunks(data) if t == b"IDAT")
    raw = zlib.decompress(idat)
    bpp = channels * a.itemsize
    big = a.astype(">u2") if dtype == np.uint16 else a
    rows = [list(big[r].tobytes()) for r in range(a.shape[0])]
    expected = naive_filter(rows, bpp)
    assert list(raw) == [b for line in expected for b in line]


@pytest.mark.parametrize("kind", ["ramp", "blocks", "sparse"])
def test_each_filter_is_chosen_where_it_wins(kind):
    """Structured rows make every filter type win somewhere; the bytes still match the spec."""
    y, x = np.mgrid[0:12, 0:10]
    if kind == "ramp":
        a = np.stack([x * 20, y * 20, (x + y) * 9], -1).astype(np.uint8)
    elif kind == "blocks":
        a = (np.random.default_rng(1).integers(0, 256, (6, 5, 3))
             .repeat(2, 0).repeat(2, 1).astype(np.uint8))
    else:
        a = np.zeros((12, 10, 3), np.uint8)
        a[::3, ::4] = np.random.default_rng(2).integers(1, 256, a[::3, ::4].shape)
    raw = zlib.decompress(b"".join(p for t, p, _ in chunks(encode_png(a, 1)) if t == b"IDAT"))
    rows = [list(a[r].tobytes()) for r in range(a.shape[0])]
    expected = naive_filter(rows, 3)
    assert list(raw) == [b for line in expected for b in line]
    assert np.array_equal(imagecodecs.png_decode(encode_png(a, 1)), a)


def test_all_four_filters_occur_on_a_photo():
    from poolcli.imageio import read_image

    photo = read_image(SAMPLES / "chelsea.png").array
    enlarged = photo.repeat(2, 0).repeat(2, 1)
    types = set()
    for img in (photo, enlarged, np.zeros_like(photo)):
        raw = zlib.decompress(b"".join(p for t, p, _ in chunks(encode_png(img, 1))
                                       if t == b"IDAT"))
        stride = 1 + img.shape[1] * img.shape[2]
        types |= set(raw[::stride])
    assert types == {0, 1, 2, 3}


def test_strips_join_without_seams(monkeypatch):
    """Rows filtered in separate strips still see the last row of the previous strip."""
    monkeypatch.setattr(png, "_STRIP_BYTES", 10)  # one or two rows per strip
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (9, 4, 3), dtype=np.uint8)
    raw = zlib.decompress(b"".join(p for t, p, _ in chunks(encode_png(a, 1)) if t == b"IDAT"))
    rows = [list(a[r].tobytes()) for r in range(9)]
    assert list(raw) == [b for line in naive_filter(rows, 3) for b in line]


def test_header_chunks_and_crcs(monkeypatch):
    monkeypatch.setattr(png, "_IDAT_BYTES", 1000)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 65536, (40, 30, 4), dtype=np.uint16)  # incompressible: several IDATs
    data = encode_png(a, 1)
    found = list(chunks(data))
    types = [t for t, _, _ in found]
    assert types[0] == b"IHDR" and types[-1] == b"IEND"
    assert set(types[1:-1]) == {b"IDAT"} and len(types) > 4
    assert all(len(p) <= 1000 for t, p, _ in found if t == b"IDAT")
    for ctype, payload, crc in found:
        assert zlib.crc32(ctype + payload) == crc
    width, height, depth, colour, comp, filt, interlace = struct.unpack(">IIBBBBB", found[0][1])
    assert (width, height, depth, colour, comp, filt, interlace) == (30, 40, 16, 6, 0, 0, 0)
    assert np.array_equal(imagecodecs.png_decode(data), a)


def test_level_zero_is_stored_and_unfiltered():
    a = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    idat = b"".join(p for t, p, _ in chunks(encode_png(a, 0)) if t == b"IDAT")
    raw = zlib.decompress(idat)
    assert raw == b"\x00" + a[0].tobytes() + b"\x00" + a[1].tobytes()
    assert len(idat) > len(raw)  # stored blocks: no compression at all


def test_level_1_is_not_larger_than_pillows_level_1_on_a_photo():
    from PIL import Image as PILImage

    from poolcli.imageio import read_image

    photo = read_image(SAMPLES / "astronaut.png").array
    size = len(encode_png(photo, 1))
    buf = io.BytesIO()
    PILImage.fromarray(photo).save(buf, format="PNG", compress_level=1)
    assert size <= len(buf.getvalue())  # measured: 443604 against 466k


@pytest.mark.parametrize(
    "array,message",
    [
        (np.zeros((2, 2, 5), np.uint8), "shape"),
        (np.zeros((0, 2, 3), np.uint8), "shape"),
        (np.zeros((2, 2), np.uint8), "shape"),
        (np.zeros((2, 2, 3), np.float32), "uint8 or uint16"),
    ],
)
def test_refuses_what_png_cannot_hold(array, message):
    with pytest.raises(ValueError, match=message):
        encode_png(array, 1)


def test_refuses_bad_level():
    with pytest.raises(ValueError, match="0-9"):
        encode_png(np.zeros((2, 2, 3), np.uint8), 10)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_any_strides_are_written_like_a_contiguous_copy(dtype, monkeypatch):
    """Views (planar buffers seen channels-last, flipped, strided) give the same file."""
    monkeypatch.setattr(png, "_STRIP_BYTES", 64)  # several strips
    rng = np.random.default_rng(5)
    planar = rng.integers(0, np.iinfo(dtype).max + 1, (3, 13, 11), dtype=dtype)
    views = [planar.transpose(1, 2, 0), planar.transpose(1, 2, 0)[::-1, ::2],
             planar[:1].transpose(1, 2, 0), planar.transpose(2, 1, 0)[:, :, :2]]
    for view in views:
        assert not view.flags.c_contiguous or view.shape[2] == 1  # (odd strides, flagged C)
        assert encode_png(view, 1) == encode_png(np.ascontiguousarray(view), 1)
        assert np.array_equal(imagecodecs.png_decode(encode_png(view, 1)).reshape(view.shape),
                              view)


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    dtype=st.sampled_from([np.uint8, np.uint16]),
    channels=st.integers(1, 4),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    level=st.integers(0, 9),
    strip=st.sampled_from([1, 64, 1 << 18]),
)
def test_any_image_round_trips(data, dtype, channels, height, width, level, strip):
    """Random sizes, depths, levels, strip sizes and layouts decode back exactly (libpng)."""
    top = int(np.iinfo(dtype).max)
    flat = data.draw(st.sampled_from(["random", "constant", "ramp", "sparse"]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a = rng.integers(0, top + 1, (height, width, channels), dtype=dtype)
    if flat == "constant":
        a[:] = a[0, 0]
    elif flat == "ramp":
        a = (np.arange(a.size, dtype=np.int64).reshape(a.shape) * 37 % (top + 1)).astype(dtype)
    elif flat == "sparse":
        a[rng.random(a.shape) < 0.8] = 0
    if data.draw(st.booleans()):  # a planar buffer seen channels-last
        a = np.ascontiguousarray(a.transpose(2, 0, 1)).transpose(1, 2, 0)
    old = png._STRIP_BYTES
    png._STRIP_BYTES = strip
    try:
        encoded = encode_png(a, level)
    finally:
        png._STRIP_BYTES = old
    assert np.array_equal(imagecodecs.png_decode(encoded).reshape(a.shape), a)
