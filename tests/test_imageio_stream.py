"""Band readers and writers (poolcli.imageio.stream) against read_image and write_image.

Every file here is written by the test. A band reader must give exactly read_image's array
(values, dtype, channels, mode, notes) over any sequence of bands whose starts never decrease
and that overlap each other; a file it cannot stream gives None; the bomb guard and corrupt
data raise read_image's one-line errors. A band writer's file reads back to the rows written,
PNG with the same scanlines (filter choices) as write_image's, and is atomic.
"""

from __future__ import annotations

import functools
import itertools
import os
import struct
import sys
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from poolcli.errors import ImageReadError, ImageWriteError
from poolcli.imageio import _stream_png, read_image, write_image
from poolcli.imageio.provenance import read_provenance
from poolcli.imageio.stream import open_band_reader, open_band_writer

MAX = 10**8
RNG = np.random.default_rng(17)


def image(h, w, c, dtype=np.uint8, seed=0):
    """Half smooth (filters that predict), half noise (filters that do not)."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max if np.dtype(dtype).kind in "ui" else 1.0
    a = rng.random((h, w, c)) * top
    a[: h // 2] = np.linspace(0, top, w)[None, :, None] * rng.random((h // 2, 1, c))
    return a.astype(dtype)


def band_plans(height, rng):
    """Band sequences: fixed sizes, one row at a time, and random overlapping bands."""
    yield [(y, min(height, y + 7)) for y in range(0, height, 7)]
    yield [(y, y + 1) for y in range(height)]
    plan, start = [], 0
    while start < height:
        stop = min(height, start + int(rng.integers(1, 40)))
        plan.append((start, stop))
        start = max(start, stop - int(rng.integers(0, 12)))  # overlap the previous band
        start = min(start + int(rng.integers(0, 3)), height - 1) if stop < height else height
    yield plan


def assert_streams_like_read_image(path):
    ref = read_image(path, max_pixels=MAX)
    for threads, plan in zip((1, 2, 1), band_plans(ref.height, RNG)):
        reader = open_band_reader(path, max_pixels=MAX)
        assert reader is not None, f"{path} not streamed"
        reader.use_threads(threads)  # PNG: inflated ahead in a thread of its own
        with reader:
            assert (reader.height, reader.width) == ref.array.shape[:2]
            assert reader.channels == ref.channels and reader.dtype == ref.array.dtype
            assert (reader.format, reader.mode, reader.notes, reader.source) == \
                (ref.format, ref.mode, ref.notes, ref.source)
            for start, stop in plan:
                rows = reader.read_rows(start, stop)
                assert rows.dtype == ref.array.dtype
                np.testing.assert_array_equal(rows, ref.array[start:stop], err_msg=f"{start}")
    with open_band_reader(path, max_pixels=MAX) as reader:
        if reader.random_access:
            assert_rows_at_like_read_image(reader, ref.array)


def assert_rows_at_like_read_image(reader, expected, threads=3):
    """``rows_at`` from ``threads`` threads at once, on bands that overlap (so pieces are shared
    and decoded by whichever thread comes first), each thread's in any order, the pieces given
    up behind the lowest band still to come: every band the whole image's rows."""
    height = len(expected)
    bands = [(a, min(height, a + int(RNG.integers(1, 12)))) for a in range(0, height, 3)]
    order = [int(i) for i in RNG.permutation(len(bands))]
    lock, left = threading.Lock(), set(order)

    def work(mine):
        for i in mine:
            start, stop = bands[i]
            rows = reader.rows_at(start, stop)
            assert rows.dtype == expected.dtype
            np.testing.assert_array_equal(rows, expected[start:stop], err_msg=f"{start}")
            with lock:
                left.discard(i)
                reader.release_before(min((bands[j][0] for j in left), default=height))

    shares = [order[k::threads] for k in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work, share) for share in shares]:
            future.result()
    assert not getattr(reader, "_shared", None)  # every piece given up once nothing needs it


# ---- PNG written byte by byte, for the layouts no encoder at hand writes ----------------------


def chunk(ctype, payload):
    return struct.pack(">I", len(payload)) + ctype + payload + \
        struct.pack(">I", zlib.crc32(ctype + payload))


def raw_png(width, height, depth, colour, packed_rows, extra=(), interlace=0, idat_size=None):
    """A PNG of ``packed_rows`` (bytes, one per row), each with a varied filter (all five)."""
    bpp = max(1, depth * {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour] // 8)
    lines, above = [], bytes(len(packed_rows[0]))
    for y, row in enumerate(packed_rows):
        kind = y % 5
        lines.append(bytes([kind]) + _filter(kind, row, above, bpp))
        above = row
    data = zlib.compress(b"".join(lines), 6)
    size = idat_size or len(data)
    idats = b"".join(chunk(b"IDAT", data[i:i + size]) for i in range(0, len(data), size))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + b"".join(chunk(t, p) for t, p in extra)
            + idats + chunk(b"IEND", b""))


def _filter(kind, row, above, bpp):
    out = bytearray()
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = above[i]
        c = above[i - bpp] if i >= bpp else 0
        if kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
        else:
            pred = (0, a, b, (a + b) // 2)[kind]
        out.append((x - pred) & 255)
    return bytes(out)


def packed(samples, depth):
    """Rows of ``depth``-bit samples packed big-endian, as PNG stores them."""
    if depth == 16:
        return [row.astype(">u2").tobytes() for row in samples]
    if depth == 8:
        return [row.astype(np.uint8).tobytes() for row in samples]
    per = 8 // depth
    rows = []
    for row in samples:
        row = np.concatenate([row.ravel(), np.zeros((-len(row.ravel())) % per, int)])
        groups = row.reshape(-1, per)
        rows.append(bytes(int(sum(int(v) << (8 - depth * (k + 1)) for k, v in enumerate(g)))
                          for g in groups))
    return rows


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_written_by_poolcli_and_pillow(tmp_path, channels, dtype):
    a = image(61, 37, channels, dtype, seed=channels)
    ours = tmp_path / "ours.png"
    write_image(ours, a, provenance={"command": "test"})
    assert_streams_like_read_image(ours)
    if dtype == np.uint8:  # Pillow's encoder chooses Paeth too
        pillow = tmp_path / "pillow.png"
        PILImage.fromarray(a[:, :, 0] if channels == 1 else a).save(pillow)
        assert_streams_like_read_image(pillow)


@pytest.mark.parametrize("depth", [1, 2, 4, 8])
@pytest.mark.parametrize("alpha", [False, True])
def test_png_palette(tmp_path, depth, alpha):
    width, height = 23, 19
    colours = 1 << depth
    index = RNG.integers(0, colours + (depth == 8) * 10, (height, width))  # some past PLTE
    index = np.minimum(index, (1 << depth) - 1)
    plte = RNG.integers(0, 256, 3 * min(colours, 200), dtype=np.uint8).tobytes()
    extra = [(b"PLTE", plte)] + ([(b"tRNS", bytes([0, 128, 255, 7]))] if alpha else [])
    path = tmp_path / "palette.png"
    path.write_bytes(raw_png(width, height, depth, 3, packed(index, depth), extra))
    assert_streams_like_read_image(path)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_png_low_bit_grey(tmp_path, depth):
    grey = RNG.integers(0, 1 << depth, (17, 29))
    path = tmp_path / "grey.png"
    path.write_bytes(raw_png(29, 17, depth, 0, packed(grey, depth)))
    assert_streams_like_read_image(path)


@pytest.mark.parametrize("colour,depth", [(0, 8), (0, 16), (2, 8), (2, 16)])
def test_png_colour_key_becomes_alpha(tmp_path, colour, depth):
    samples = 3 if colour == 2 else 1
    a = RNG.integers(0, 4, (21, 15, samples)) * (85 if depth == 8 else 21845)
    key = a[0, 0]
    trns = struct.pack(f">{samples}H", *(int(k) for k in key))
    path = tmp_path / "keyed.png"
    path.write_bytes(raw_png(15, 21, depth, colour, packed(a.reshape(21, -1), depth),
                             [(b"tRNS", trns)], idat_size=50))
    assert_streams_like_read_image(path)
    assert read_image(path).channels[-1] == "A"


def test_png_many_small_idat_chunks_and_a_non_srgb_profile(tmp_path):
    a = image(40, 30, 3)
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    iccp = b"lcms\x00\x00" + zlib.compress(icc)  # valid, and not named sRGB: noted
    path = tmp_path / "chunks.png"
    path.write_bytes(raw_png(30, 40, 8, 2, packed(a.reshape(40, -1), 8), [(b"iCCP", iccp)],
                             idat_size=7))
    assert_streams_like_read_image(path)
    assert read_image(path).notes  # the profile is noted


def test_not_streamed_gives_none(tmp_path):
    a = image(20, 20, 3)
    interlaced = tmp_path / "interlaced.png"
    interlaced.write_bytes(raw_png(20, 20, 8, 2, packed(a.reshape(20, -1), 8), interlace=1))
    for name in ("x.jpg", "x.webp", "x.gif", "x.bmp"):
        write_image(tmp_path / name, a)
    rotated = tmp_path / "rotated.tif"
    tifffile.imwrite(rotated, a, extratags=[(274, 3, 1, 6, True)])
    names = ["interlaced.png", "x.jpg", "x.webp", "x.gif", "x.bmp", "rotated.tif", "missing.png"]
    for name in names:
        assert open_band_reader(tmp_path / name, max_pixels=MAX) is None, name
    assert open_band_reader("-", max_pixels=MAX) is None


# ---- TIFF and NPY --------------------------------------------------------------------------------


TIFF_CASES = {
    "striped u8 rgb": (image(70, 45, 3), {"rowsperstrip": 5}),
    "striped deflate u16 rgba": (image(70, 45, 4, np.uint16), {"compression": "zlib"}),
    "tiled lzw predictor": (image(100, 90, 3), {"tile": (32, 48), "compression": "lzw",
                                                "predictor": True}),
    "tiled bigtiff float": (image(50, 70, 1, np.float32), {"tile": (16, 16), "bigtiff": True}),
    "planar separate": (np.moveaxis(image(60, 40, 3, np.uint16), -1, 0),
                        {"planarconfig": "separate", "photometric": "rgb", "rowsperstrip": 7}),
    "planar tiled alpha": (np.moveaxis(image(60, 40, 4), -1, 0),
                           {"planarconfig": "separate", "photometric": "rgb", "tile": (16, 32),
                            "extrasamples": ["unassalpha"]}),
    "5 channels int16": (image(33, 21, 5, np.int16), {"photometric": "minisblack",
                                                      "planarconfig": "contig"}),
    "min-is-white": (image(30, 20, 1)[:, :, 0], {"photometric": "miniswhite", "rowsperstrip": 3}),
    "big-endian": (image(30, 20, 3, np.uint16), {"byteorder": ">", "compression": "zlib"}),
}


@pytest.mark.parametrize("case", TIFF_CASES)
def test_tiff(tmp_path, case):
    data, options = TIFF_CASES[case]
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, data, **options)
    assert_streams_like_read_image(path)


def test_tiff_without_pread(tmp_path, monkeypatch):
    """Where os.pread is missing (Windows), a seek and a read under a lock: the same rows, in
    order and from threads."""
    from poolcli.imageio import _stream_tiff

    monkeypatch.setattr(_stream_tiff, "_PREAD", None)
    data, options = TIFF_CASES["tiled lzw predictor"]
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, data, **options)
    assert_streams_like_read_image(path)


def test_tiff_palette_multipage_and_write_image(tmp_path):
    index = RNG.integers(0, 6, (30, 20)).astype(np.uint8)
    colormap = (RNG.integers(0, 256, (3, 256)) * 257).astype(np.uint16)
    tifffile.imwrite(tmp_path / "palette.tif", index, photometric="palette", colormap=colormap,
                     rowsperstrip=4)
    assert_streams_like_read_image(tmp_path / "palette.tif")
    tifffile.imwrite(tmp_path / "pages.tif", image(3, 30, 20).reshape(3, 30, 20),
                     photometric="minisblack", planarconfig="contig")
    assert_streams_like_read_image(tmp_path / "pages.tif")
    write_image(tmp_path / "ours.tif", image(40, 30, 2, np.float64))
    assert_streams_like_read_image(tmp_path / "ours.tif")


@pytest.mark.parametrize("dtype", ["u1", ">u2", "f2", "?", "<f8", "i4"])
def test_npy(tmp_path, dtype):
    path = tmp_path / "x.npy"
    np.save(path, (image(40, 11, 3, np.float64) * 200).astype(dtype))
    assert_streams_like_read_image(path)


def test_content_sniffed_not_the_suffix(tmp_path):
    write_image(tmp_path / "x.png", image(20, 10, 3))
    path = tmp_path / "really_png.tif"
    path.write_bytes((tmp_path / "x.png").read_bytes())
    assert_streams_like_read_image(path)  # noted as read_image notes it


# ---- the guard and damaged files -----------------------------------------------------------------


def test_a_small_file_claiming_a_huge_size_is_refused_before_any_work(tmp_path):
    png = tmp_path / "bomb.png"
    png.write_bytes(raw_png(4, 2, 8, 0, [bytes(4)] * 2).replace(
        struct.pack(">II", 4, 2), struct.pack(">II", 100_000, 100_000), 1))
    npy = tmp_path / "bomb.npy"
    with open(npy, "wb") as fh:
        header = {"descr": "|u1", "fortran_order": False, "shape": (100_000, 100_000)}
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(bytes(16))
    tiff = tmp_path / "honest.tif"
    tifffile.imwrite(tiff, np.zeros((64, 64), np.uint8))
    for path, limit in ((png, 178_956_970), (npy, 178_956_970), (tiff, 100)):
        with pytest.raises(ImageReadError) as expected:
            read_image(path, max_pixels=limit)
        with pytest.raises(ImageReadError) as got:
            open_band_reader(path, max_pixels=limit)
        assert str(got.value) == str(expected.value)
        assert "decompression-bomb guard" in str(got.value) and "\n" not in str(got.value)
    reader = open_band_reader(tiff, max_pixels=None)
    assert reader is not None  # the guard raised: streamed
    reader.close()


def expected_error(path) -> ImageReadError:
    with pytest.raises(ImageReadError) as expected:
        read_image(path)
    return expected.value


def _same_error(path, stream_all):
    with pytest.raises(ImageReadError) as expected:
        read_image(path)
    with pytest.raises(ImageReadError) as got:
        stream_all(path)
    assert str(got.value) == str(expected.value) and "\n" not in str(got.value)
    assert str(got.value).startswith(str(path))


def _read_all(path, threads=1):
    with open_band_reader(path, max_pixels=MAX) as reader:
        reader.use_threads(threads)
        for y in range(0, reader.height, 5):
            reader.read_rows(y, min(reader.height, y + 5))


def hide_isal(monkeypatch, inflate):
    """``zlib``: python-isal not importable, so the PNG reader falls back to zlib."""
    if inflate == "zlib":
        monkeypatch.setitem(sys.modules, "isal", None)
        monkeypatch.setitem(sys.modules, "isal.isal_zlib", None)
    else:
        pytest.importorskip("isal")


@pytest.mark.parametrize("inflate", ["isal", "zlib"])
def test_png_streams_like_read_image_with_either_inflater(tmp_path, monkeypatch, inflate):
    hide_isal(monkeypatch, inflate)
    monkeypatch.setattr(_stream_png, "_BLOCK_BYTES", 700)  # many inflate calls per band
    a = image(97, 61, 3)
    path = tmp_path / "a.png"
    path.write_bytes(raw_png(61, 97, 8, 2, packed(a.reshape(97, -1), 8), idat_size=333))
    z, _ = _stream_png._inflater()
    assert type(z).__module__.startswith("isal") == (inflate == "isal")
    assert_streams_like_read_image(path)


@pytest.mark.parametrize("inflate", ["isal", "zlib"])
@pytest.mark.parametrize("threads", [1, 2])
def test_damage_mid_stream_is_read_images_error(tmp_path, monkeypatch, threads, inflate):
    hide_isal(monkeypatch, inflate)
    monkeypatch.setattr(_stream_png, "_BLOCK_BYTES", 500)  # a few rows decoded at a time
    _read_all_threads = functools.partial(_read_all, threads=threads)
    a = image(80, 40, 3)
    good = raw_png(40, 80, 8, 2, packed(a.reshape(80, -1), 8), idat_size=300)
    last_idat = good.rindex(b"IDAT")
    crc = tmp_path / "crc.png"  # a late chunk's data damaged: found when it is read
    crc.write_bytes(good[:last_idat + 10] + bytes([good[last_idat + 10] ^ 1])
                    + good[last_idat + 11:])
    reader = open_band_reader(crc, max_pixels=MAX)
    reader.use_threads(threads)
    np.testing.assert_array_equal(reader.read_rows(0, 5), a[:5])
    reader.close()
    _same_error(crc, _read_all_threads)
    stream = tmp_path / "zlib.png"  # valid CRCs around a broken zlib stream
    raw = b"".join(b"\x00" + row for row in packed(a.reshape(80, -1), 8))
    data = zlib.compress(raw)
    data = data[:len(data) // 2] + b"\xff" * 40 + data[len(data) // 2 + 40:]
    ihdr = struct.pack(">IIBBBBB", 40, 80, 8, 2, 0, 0, 0)
    stream.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data)
                       + chunk(b"IEND", b""))
    _same_error(stream, _read_all_threads)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good[: len(good) // 2])
    _same_error(cut, lambda p: open_band_reader(p, max_pixels=MAX))


def test_damaged_tiff_tile(tmp_path):
    """In order, and for rows_at from threads: the same rows before the damage, the same
    one-line error at it."""
    a = image(200, 200, 3)
    path = tmp_path / "tiles.tif"
    tifffile.imwrite(path, a, tile=(64, 64), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[9]
    data = bytearray(path.read_bytes())
    data[offset:offset + 40] = bytes(40)
    path.write_bytes(bytes(data))
    _same_error(path, _read_all)
    with open_band_reader(path, max_pixels=MAX) as reader:
        np.testing.assert_array_equal(reader.read_rows(0, 128), a[:128])
        with pytest.raises(ImageReadError):
            reader.read_rows(128, 140)
    # decoded for rows_at by the threads asking: each of them gets the same one-line error,
    # the rows of other tile rows stay readable
    with open_band_reader(path, max_pixels=MAX) as reader, ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(reader.rows_at, 128 + k, 140 + k) for k in range(6)]
        errors = {str(f.exception()) for f in futures}
        assert len(errors) == 1 and errors.pop() == str(expected_error(path))
        np.testing.assert_array_equal(reader.rows_at(60, 128), a[60:128])
        np.testing.assert_array_equal(reader.rows_at(192, 200), a[192:200])


def test_read_ahead_in_order_errors_in_place_and_closes():
    from poolcli.imageio.stream import ReadAhead

    assert list(ReadAhead(iter(range(100)), 2)) == list(range(100))

    def failing():
        yield from range(5)
        raise ImageReadError("x: truncated")

    ahead = ReadAhead(failing(), 2)
    assert [next(ahead) for _ in range(5)] == list(range(5))
    with pytest.raises(ImageReadError, match="truncated"):
        next(ahead)
    with pytest.raises(StopIteration):
        next(ahead)
    produced = []

    def endless():
        for i in itertools.count():
            produced.append(i)
            yield i

    ahead = ReadAhead(endless(), 3)
    assert next(ahead) == 0
    ahead.close()  # stops the thread: a bounded number of items made, none after
    made = len(produced)
    assert made <= 1 + 3 + 1
    assert not any(t.name == "poolcli-band-reader" for t in threading.enumerate())
    assert len(produced) == made
    never = ReadAhead(endless(), 1)
    never.close()  # never started: nothing to stop


def test_png_inflated_ahead_is_the_same_and_stops_on_close(tmp_path, monkeypatch):
    monkeypatch.setattr(_stream_png, "_BLOCK_BYTES", 300)
    a = image(90, 33, 3)
    write_image(tmp_path / "x.png", a)
    with open_band_reader(tmp_path / "x.png", max_pixels=MAX) as reader:
        reader.use_threads(2)
        np.testing.assert_array_equal(reader.read_rows(0, 12), a[:12])
        assert any(t.name == "poolcli-png-inflate" for t in threading.enumerate())
    assert not any(t.name == "poolcli-png-inflate" for t in threading.enumerate())


def test_going_backwards_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(_stream_png, "_BLOCK_BYTES", 100)
    a = image(50, 10, 1)
    write_image(tmp_path / "x.png", a)
    with open_band_reader(tmp_path / "x.png", max_pixels=MAX) as reader:
        reader.read_rows(0, 20)
        np.testing.assert_array_equal(reader.read_rows(10, 40), a[10:40])
        with pytest.raises(ValueError, match="already given up"):
            reader.read_rows(5, 12)


# ---- writers -------------------------------------------------------------------------------------


def write_bands(path, a, fmt, sizes=(13, 1, 40), **options):
    h, w, c = a.shape
    options.setdefault("overwrite", False)
    with open_band_writer(path, height=h, width=w, channels=c, dtype=a.dtype, fmt=fmt,
                          **options) as writer:
        y, k = 0, 0
        while y < h:
            writer.write_rows(a[y:y + sizes[k % len(sizes)]])
            y, k = y + sizes[k % len(sizes)], k + 1
        writer.commit()


def idat_stream(path):
    data, pos, out = path.read_bytes(), 8, b""
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        if ctype == b"IDAT":
            out += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return zlib.decompress(out)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("level", [0, 1, 9])
def test_png_writer_matches_write_image(tmp_path, channels, dtype, level):
    """Pixel-identical, with the very same scanlines (filters chosen alike); the deflate bytes
    differ (zlib band by band, libdeflate in memory)."""
    a = image(67, 41, channels, dtype, seed=level)[:, ::-1]  # a strided view
    stamp = {"command": "test", "op": "max"}
    write_image(tmp_path / "whole.png", a, compress_level=level, provenance=stamp)
    write_bands(tmp_path / "bands.png", a, "PNG", compress_level=level, metadata=stamp)
    np.testing.assert_array_equal(read_image(tmp_path / "bands.png").array, a)
    assert idat_stream(tmp_path / "bands.png") == idat_stream(tmp_path / "whole.png")
    assert read_provenance(tmp_path / "bands.png") == read_provenance(tmp_path / "whole.png")
    assert_streams_like_read_image(tmp_path / "bands.png")


@pytest.mark.parametrize("dtype,names", [(np.uint8, ("R", "G", "B")), (np.uint16, ("L", "A")),
                                         (np.float32, ("c0", "c1", "c2", "c3", "c4")),
                                         (np.int32, ("L",))])
@pytest.mark.parametrize("level", [0, 1])
def test_tiff_writer(tmp_path, dtype, names, level):
    a = image(300, 50, len(names), dtype)
    write_image(tmp_path / "whole.tif", a, channels=names, provenance={"command": "t"},
                compress_level=level)
    h, w, c = a.shape
    with open_band_writer(tmp_path / "bands.tif", height=h, width=w, channels=names, dtype=dtype,
                          fmt="tif", overwrite=False, metadata={"command": "t"},
                          compress_level=level) as writer:
        for y in range(0, h, 70):
            writer.write_rows(a[y:y + 70])
        writer.commit()
    got, ref = read_image(tmp_path / "bands.tif"), read_image(tmp_path / "whole.tif")
    np.testing.assert_array_equal(got.array, a)
    assert (got.channels, got.mode) == (ref.channels, ref.mode)
    assert read_provenance(tmp_path / "bands.tif") == read_provenance(tmp_path / "whole.tif")
    assert_streams_like_read_image(tmp_path / "bands.tif")


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_writer_threads_give_the_same_bytes(tmp_path, monkeypatch, fmt):
    """Deflated in the calling thread, in one worker (PNG) or on a pool of strips (TIFF): the
    same file, byte for byte; an abort with work in flight leaves nothing behind."""
    from poolcli.imageio import _stream_tiff

    monkeypatch.setattr(_stream_tiff, "_STRIP_BYTES", 900)  # many strips in flight
    a = image(151, 47, 3)
    files = []
    for threads in (1, 2, 3):
        path = tmp_path / f"t{threads}.{fmt.lower()}"
        write_bands(path, a, fmt, threads=threads, compress_level=1)
        files.append(path.read_bytes())
        np.testing.assert_array_equal(read_image(path).array, a)
    assert files[0] == files[1] == files[2]
    with pytest.raises(RuntimeError):
        with open_band_writer(tmp_path / "gone.tif", height=151, width=47, channels=3,
                              dtype=np.uint8, fmt=fmt, overwrite=False, threads=2) as writer:
            writer.write_rows(a[:100])
            raise RuntimeError("stop")
    assert leftovers(tmp_path) == [] and not (tmp_path / "gone.tif").exists()
    assert not any(t.name.startswith(("poolcli-tiff-deflate", "poolcli-png-deflate"))
                   for t in threading.enumerate())


@pytest.mark.parametrize("deflate", ["isal", "zlib"])
@pytest.mark.parametrize("level", [0, 1, 6, 9])
@pytest.mark.parametrize("chunk", [1, 700, 5000])
def test_png_chunks_give_one_stream_whatever_the_bands_and_threads(tmp_path, monkeypatch,
                                                                    level, chunk, deflate):
    """Scanlines filtered and deflated in fixed chunks (one row each, a few rows, the whole
    image) on 1-3 threads and fed in any bands: one valid zlib stream holding the very
    scanlines of ``write_image`` (checked by ``zlib.decompress``, which verifies the
    Adler-32), and the same file bytes every time."""
    monkeypatch.setattr(_stream_png, "_CHUNK_BYTES", chunk)
    hide_isal(monkeypatch, deflate)  # zlib: python-isal missing, pieces deflated by zlib
    z = _stream_png._deflater(level)
    assert type(z).__module__.startswith("isal") == (deflate == "isal" and level > 0)
    a = image(83, 37, 3, np.uint16, seed=chunk)
    write_image(tmp_path / "whole.png", a, compress_level=level)
    files = set()
    for threads, sizes in [(1, (83,)), (1, (1,)), (2, (13, 1, 40)), (3, (5,)), (2, (82, 1))]:
        path = tmp_path / f"b{threads}{sizes[0]}.png"
        write_bands(path, a, "PNG", sizes=sizes, threads=threads, compress_level=level)
        assert idat_stream(path) == idat_stream(tmp_path / "whole.png")
        np.testing.assert_array_equal(read_image(path).array, a)
        files.add(path.read_bytes())
    assert len(files) == 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_pieces_encoded_by_the_caller(tmp_path, dtype):
    """Rows encoded where they are made (``encoder()``, any thread, each piece given its row
    above) and written in order: the scanlines of ``write_image``; pieces cut elsewhere give
    other bytes, the same pixels; mixing with write_rows, or too many rows, is refused."""
    from concurrent.futures import ThreadPoolExecutor

    a = image(71, 23, 4, dtype, seed=5)
    write_image(tmp_path / "whole.png", a)
    for name, cuts in (("p1", [0, 1, 30, 31, 71]), ("p2", [0, 71]), ("p3", list(range(72)))):
        h, w, c = a.shape
        with open_band_writer(tmp_path / f"{name}.png", height=h, width=w, channels=c,
                              dtype=dtype, fmt="PNG", overwrite=False) as writer:
            encode = writer.encoder()
            with ThreadPoolExecutor(3) as pool:
                pieces = [pool.submit(encode, a[y0:y1], a[y0 - 1] if y0 else None)
                          for y0, y1 in zip(cuts, cuts[1:])]
                for piece in pieces:
                    writer.write_encoded(piece.result())
            with pytest.raises(ValueError, match="rows for an image"):
                writer.write_encoded(encode(a[:1], None))
            with pytest.raises(ValueError, match="not this image's layout"):
                writer.write_encoded(encode(a[:2, :5], None))
            writer.commit()
        assert idat_stream(tmp_path / f"{name}.png") == idat_stream(tmp_path / "whole.png")
        np.testing.assert_array_equal(read_image(tmp_path / f"{name}.png").array, a)
    with open_band_writer(tmp_path / "mixed.png", height=71, width=23, channels=4, dtype=dtype,
                          fmt="PNG", overwrite=False) as writer:
        writer.write_rows(a[:3])
        with pytest.raises(ValueError, match="after write_rows"):
            writer.write_encoded(writer.encoder()(a[3:5], a[2]))
    assert leftovers(tmp_path) == [] and not (tmp_path / "mixed.png").exists()
    with open_band_writer(tmp_path / "x.npy", height=71, width=23, channels=4, dtype=dtype,
                          fmt="NPY", overwrite=False) as writer:
        assert writer.encoder() is None


@pytest.mark.parametrize("level", [0, 1])
def test_tiff_strips_encoded_by_the_caller(tmp_path, level):
    """Strips of ``piece_rows`` rows encoded where they are made, the last one shorter: the
    image of write_rows with those strips; a strip of another height is refused."""
    from concurrent.futures import ThreadPoolExecutor

    a = image(71, 23, 3, np.uint16, seed=2)
    files = []
    for name, encoded in (("enc", True), ("rows", False)):
        with open_band_writer(tmp_path / f"{name}.tif", height=71, width=23, channels=3,
                              dtype=np.uint16, fmt="TIFF", overwrite=False, piece_rows=10,
                              compress_level=level) as writer:
            if encoded:
                encode = writer.encoder()
                with ThreadPoolExecutor(2) as pool:
                    pieces = [pool.submit(encode, a[y:y + 10], None) for y in range(0, 71, 10)]
                    for piece in pieces:
                        writer.write_encoded(piece.result())
            else:
                writer.write_rows(a)
            writer.commit()
        np.testing.assert_array_equal(read_image(tmp_path / f"{name}.tif").array, a)
        files.append((tmp_path / f"{name}.tif").read_bytes())
    assert files[0] == files[1]
    with open_band_writer(tmp_path / "bad.tif", height=71, width=23, channels=3,
                          dtype=np.uint16, fmt="TIFF", overwrite=False, piece_rows=10) as writer:
        with pytest.raises(ValueError, match="a strip of 9 rows"):
            writer.write_encoded(writer.encoder()(a[:9], None))
        with pytest.raises(ValueError, match="a strip of rows"):  # another layout
            writer.write_encoded(writer.encoder()(a[:10, :, :2], None))


def test_a_refused_png_target_starts_no_thread(tmp_path):
    """The writer's threads start only once its temporary file is open."""
    (tmp_path / "taken.png").write_bytes(b"x")
    for _ in range(3):
        with pytest.raises(ImageWriteError, match="exists"):
            open_band_writer(tmp_path / "taken.png", height=4, width=4, channels=3,
                             dtype=np.uint8, fmt="PNG", overwrite=False, threads=4)
    assert not any(t.name.startswith("poolcli-png-deflate") for t in threading.enumerate())


def test_adler32_combine_is_adler32_of_the_concatenation():
    rng = np.random.default_rng(3)
    for n1, n2 in [(0, 0), (0, 9), (1, 0), (5552, 5553), (70000, 3), (1, 300000)]:
        a = rng.integers(0, 256, n1, np.uint8).tobytes()
        b = rng.integers(0, 256, n2, np.uint8).tobytes()
        b = b if n2 != 3 else b"\xff" * 3
        assert _stream_png._adler32_combine(zlib.adler32(a), zlib.adler32(b), n2) \
            == zlib.adler32(a + b), (n1, n2)


def test_npy_writer_is_np_save(tmp_path):
    a = image(30, 20, 3, np.float32)
    np.save(tmp_path / "whole.npy", a)
    write_bands(tmp_path / "bands.npy", a, "NPY")
    assert (tmp_path / "bands.npy").read_bytes() == (tmp_path / "whole.npy").read_bytes()


def leftovers(directory):
    return [name for name in os.listdir(directory) if name.endswith(".part")]


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "NPY"])
def test_writer_is_atomic(tmp_path, fmt):
    a = image(20, 10, 3)
    target = tmp_path / f"out.{fmt.lower()}"
    with pytest.raises(RuntimeError):
        with open_band_writer(target, height=20, width=10, channels=3, dtype=np.uint8, fmt=fmt,
                              overwrite=False) as writer:
            writer.write_rows(a[:5])
            assert leftovers(tmp_path)
            raise RuntimeError("the computation failed halfway")
    assert not target.exists() and not leftovers(tmp_path)
    with open_band_writer(target, height=20, width=10, channels=3, dtype=np.uint8, fmt=fmt,
                          overwrite=False) as writer:
        writer.write_rows(a[:5])  # left without commit: aborted
    assert not target.exists() and not leftovers(tmp_path)
    with pytest.raises(ImageWriteError, match="5 rows written of 20"):
        with open_band_writer(target, height=20, width=10, channels=3, dtype=np.uint8, fmt=fmt,
                              overwrite=False) as writer:
            writer.write_rows(a[:5])
            writer.commit()
    assert not target.exists() and not leftovers(tmp_path)


def test_writer_never_clobbers_and_reports_commit(tmp_path):
    a = image(20, 10, 3)
    target = tmp_path / "out.png"
    target.write_bytes(b"precious")
    with pytest.raises(ImageWriteError, match="exists"):
        open_band_writer(target, height=20, width=10, channels=3, dtype=np.uint8, fmt="PNG",
                         overwrite=False)
    assert target.read_bytes() == b"precious" and not leftovers(tmp_path)
    target.unlink()
    committed = []
    writer = open_band_writer(target, height=20, width=10, channels=3, dtype=np.uint8, fmt="PNG",
                              overwrite=False, on_commit=committed.append)
    writer.write_rows(a)
    target.write_bytes(b"appeared meanwhile")
    with pytest.raises(ImageWriteError, match="exists"):
        writer.commit()
    assert target.read_bytes() == b"appeared meanwhile" and not leftovers(tmp_path)
    assert committed == []
    write_bands(target, a, "PNG", overwrite=True, on_commit=committed.append)
    assert committed == [str(target)]
    np.testing.assert_array_equal(read_image(target).array, a)


def test_writer_refuses_what_the_format_cannot_store(tmp_path):
    for fmt, dtype, channels in [("PNG", np.float32, 3), ("PNG", np.uint8, 5),
                                 ("JPEG", np.uint8, 3), ("TIFF", np.bool_, 1)]:
        with pytest.raises(ValueError):
            open_band_writer(tmp_path / "x", height=2, width=2, channels=channels, dtype=dtype,
                             fmt=fmt, overwrite=False)
    assert not os.listdir(tmp_path)
    with open_band_writer(tmp_path / "y.png", height=4, width=3, channels=1, dtype=np.uint8,
                          fmt="PNG", overwrite=False) as writer:
        with pytest.raises(ValueError):
            writer.write_rows(np.zeros((2, 4, 1), np.uint8))
        with pytest.raises(ValueError):
            writer.write_rows(np.zeros((5, 3, 1), np.uint8))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "NPY"])
def test_writer_rerun_of_a_retried_task_is_idempotent(tmp_path, fmt):
    """A Dask task rerun after its first attempt committed a large streamed output: inside
    retried_commits() the same bytes count as committed, other bytes are still refused; outside
    it an existing output is refused before any band is encoded."""
    from poolcli.imageio.files import retried_commits

    a = image(40, 30, 3)
    target = tmp_path / f"out.{fmt.lower()}"
    write_bands(target, a, fmt)
    first = target.read_bytes()
    committed = []
    with retried_commits():
        write_bands(target, a, fmt, on_commit=committed.append)
        assert target.read_bytes() == first and committed == [str(target)]
        with pytest.raises(ImageWriteError, match="exists"):
            write_bands(target, a[::-1].copy(), fmt)
    assert target.read_bytes() == first and not leftovers(tmp_path)
    with pytest.raises(ImageWriteError, match="exists"):
        open_band_writer(target, height=40, width=30, channels=3, dtype=np.uint8, fmt=fmt,
                         overwrite=False)
