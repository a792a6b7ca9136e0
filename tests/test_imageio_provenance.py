"""poolcli.imageio.provenance: outputs record that poolcli wrote them, and are recognised.

Round trips through write_image -> read_provenance for every format with metadata, pixels
unchanged by the metadata (checked with Pillow, tifffile, libpng and poolcli's own reader),
foreign files not claimed, and truncated, damaged or hostile files giving None.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import struct
import subprocess
import sys
import zlib

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image

from poolcli import __version__
from poolcli.imageio import read_image, write_image
from poolcli.imageio.png import encode_png, text_chunk
from poolcli.imageio.provenance import (
    MAX_PROVENANCE_BYTES,
    SOFTWARE,
    is_poolcli_output,
    prepare_provenance,
    read_provenance,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(20260509)
PROV = {"command": "pool", "op": "max", "params": {"size": 2, "stride": 2}, "source": "photo.png"}
EXPECTED = {"software": SOFTWARE, **PROV}

# (suffix, dtype, channels) written with provenance; the lossy ones are compared with the same
# encoder's output without provenance.
LOSSLESS = [
    (".png", np.uint8, 1), (".png", np.uint8, 2), (".png", np.uint8, 3), (".png", np.uint8, 4),
    (".png", np.uint16, 1), (".png", np.uint16, 3), (".tif", np.uint8, 3), (".tif", np.uint16, 1),
    (".tif", np.float32, 5), (".tiff", np.int32, 4),
]
LOSSY = [(".jpg", 1), (".jpg", 3), (".webp", 3), (".webp", 4), (".gif", 1), (".gif", 3)]


def image(dtype, channels, shape=(23, 37)):
    if np.dtype(dtype).kind == "f":
        return RNG.standard_normal((*shape, channels)).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, (*shape, channels), dtype=dtype, endpoint=True)


def squeeze(array):
    return array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array


def png_chunk_types(data: bytes) -> list[bytes]:
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return out


def raw_chunk(ctype: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(ctype))
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", crc)


# ---- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix,dtype,channels", LOSSLESS)
def test_lossless_round_trip_and_pixels(tmp_path, suffix, dtype, channels):
    array = image(dtype, channels)
    path = tmp_path / f"out{suffix}"
    write_image(path, array, provenance=PROV)
    assert read_provenance(path) == EXPECTED
    assert is_poolcli_output(path)
    if suffix == ".png":
        data = path.read_bytes()
        assert np.array_equal(squeeze(imagecodecs.png_decode(data)), squeeze(array))  # libpng
        if dtype == np.uint8:
            with Image.open(path) as im:
                assert np.array_equal(squeeze(np.asarray(im)), squeeze(array))
    else:
        decoded = tifffile.imread(path)
        assert decoded.dtype == array.dtype
        assert np.array_equal(squeeze(decoded), squeeze(array))
    assert np.array_equal(read_image(path).array, array)  # poolcli's reader (CRC checks, ...)


@pytest.mark.parametrize("suffix,channels", LOSSY)
def test_lossy_round_trip_same_pixels_as_without(tmp_path, suffix, channels):
    array = image(np.uint8, channels)
    stamped, plain = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    write_image(stamped, array, provenance=PROV)
    write_image(plain, array)
    assert read_provenance(stamped) == EXPECTED
    assert read_provenance(plain) is None
    with Image.open(stamped) as a, Image.open(plain) as b:
        assert a.size == b.size and a.mode == b.mode
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_png_text_chunks_come_before_the_image_data(tmp_path):
    path = tmp_path / "out.png"
    write_image(path, image(np.uint8, 3), provenance=PROV)
    data = path.read_bytes()
    assert png_chunk_types(data)[:4] == [b"IHDR", b"tEXt", b"tEXt", b"IDAT"]
    with Image.open(path) as im:
        assert im.info["Software"] == f"poolcli {__version__}"
        assert json.loads(im.info["poolcli"]) == EXPECTED


def test_png_image_data_identical_with_and_without(tmp_path):
    array = image(np.uint16, 4)
    plain = encode_png(array, 1)
    stamped = encode_png(array, 1, prepare_provenance(PROV).png_chunks())
    idat = [c for c in png_chunk_types(plain) if c == b"IDAT"]
    assert len(stamped) > len(plain) and idat
    assert np.array_equal(imagecodecs.png_decode(stamped), imagecodecs.png_decode(plain))


def test_tiff_tags(tmp_path):
    path = tmp_path / "out.tif"
    record = {**PROV, "params": {"shape": [2, 2]}}  # a key tifffile would take for its own JSON
    array = image(np.uint8, 3)
    write_image(path, array, provenance=record)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.tags["Software"].value == SOFTWARE
        assert json.loads(page.description) == {"software": SOFTWARE, **record}
        assert not page.is_shaped
        assert tif.series[0].shape == array.shape
    assert read_provenance(path) == {"software": SOFTWARE, **record}


@pytest.mark.parametrize("kwargs", [{"bigtiff": True}, {"byteorder": ">"},
                                    {"bigtiff": True, "byteorder": ">"}])
def test_tiff_variants_are_read(tmp_path, kwargs):
    path = tmp_path / "out.tif"
    text = prepare_provenance(PROV).tiff_description()
    tifffile.imwrite(path, image(np.uint16, 1)[:, :, 0], description=text, metadata=None, **kwargs)
    assert read_provenance(path) == EXPECTED


def test_short_tiff_description_inline_is_not_ours(tmp_path):
    path = tmp_path / "out.tif"
    tifffile.imwrite(path, image(np.uint8, 1)[:, :, 0], description="{}", metadata=None)
    assert read_provenance(path) is None


def test_stdout_output_carries_provenance(monkeypatch):
    buffer = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", type("Out", (), {"buffer": buffer})())
    write_image("-", image(np.uint8, 3), format="PNG", provenance=PROV)
    assert b"tEXtpoolcli\x00" in buffer.getvalue()


# ---- text: non-ASCII, non-Latin-1, undecodable file names ---------------------------------------


# The last name has a byte that is not UTF-8 (Python holds it as a lone surrogate).
SOURCES = ["café.png", "東京 <&> \"q\".png", os.fsdecode(b"caf\xe9.png")]


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg", ".webp", ".gif"])
@pytest.mark.parametrize("source", SOURCES)
def test_non_ascii_sources_round_trip(tmp_path, suffix, source):
    path = tmp_path / f"out{suffix}"
    channels = 1 if suffix == ".gif" else 3
    write_image(path, image(np.uint8, channels), provenance={**PROV, "source": source})
    assert read_provenance(path) == {**EXPECTED, "source": source}


def test_png_text_chunk_kind_follows_the_text(tmp_path):
    latin = prepare_provenance({**PROV, "source": "café.png"}).png_chunks()
    wide = prepare_provenance({**PROV, "source": "東京.png"}).png_chunks()
    assert [c for c, _ in latin] == [b"tEXt", b"tEXt"]
    assert [c for c, _ in wide] == [b"tEXt", b"iTXt"]
    path = tmp_path / "wide.png"
    write_image(path, image(np.uint8, 3), provenance={**PROV, "source": "東京.png"})
    with Image.open(path) as im:
        assert json.loads(im.info["poolcli"])["source"] == "東京.png"
    assert np.array_equal(imagecodecs.png_decode(path.read_bytes()), read_image(path).array)


# ---- what is and is not stored -----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".bmp", ".npy"])
def test_formats_without_metadata_store_nothing(tmp_path, suffix):
    array = image(np.uint8, 3)
    write_image(tmp_path / f"a{suffix}", array, provenance=PROV)
    write_image(tmp_path / f"b{suffix}", array)
    assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()
    assert read_provenance(tmp_path / f"a{suffix}") is None


def test_software_goes_first_and_a_given_one_is_kept():
    record = json.loads(prepare_provenance({"op": "avg", "software": "poolcli 9.9"}).text)
    assert list(record) == ["software", "op"] and record["software"] == "poolcli 9.9"
    assert prepare_provenance({"op": "avg"}).software == SOFTWARE


def test_numpy_scalars_and_paths_are_converted():
    text = prepare_provenance({"k": np.int64(3), "f": np.float32(0.5),
                               "p": pathlib.Path("a/b.png")}).text
    assert json.loads(text) == {"software": SOFTWARE, "k": 3, "f": 0.5, "p": "a/b.png"}


@pytest.mark.parametrize("bad", [
    {"x": object()}, {"x": float("nan")}, {1: "int key"}, {"software": "gimp 2.10"},
    {"software": 3}, {"source": "x" * MAX_PROVENANCE_BYTES}, ["not", "a", "mapping"],
])
def test_bad_provenance_is_refused_before_a_file_is_touched(tmp_path, bad):
    path = tmp_path / "out.png"
    with pytest.raises(ValueError):
        write_image(path, image(np.uint8, 3), provenance=bad)
    assert not path.exists() and not list(tmp_path.iterdir())


# ---- foreign files are not claimed -------------------------------------------------------------


@pytest.mark.parametrize("fmt,kwargs", [
    ("PNG", {}), ("JPEG", {"comment": b"hello"}), ("WEBP", {"xmp": b"<x:xmpmeta/>"}),
    ("GIF", {"comment": b"{\"a\": 1}"}), ("BMP", {}), ("TIFF", {"description": "{\"shape\": 1}"}),
])
def test_pillow_files_are_not_ours(tmp_path, fmt, kwargs):
    path = tmp_path / "foreign"
    Image.fromarray(image(np.uint8, 3)).save(path, format=fmt, **kwargs)
    assert read_provenance(path) is None


def test_tifffile_default_json_is_not_ours(tmp_path):
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, image(np.float32, 3), photometric="rgb")  # {"shape": [...]}
    assert read_provenance(path) is None


def test_png_foreign_text_is_not_ours(tmp_path):
    array = image(np.uint8, 3)
    chunks = [text_chunk("Software", "poolcli 0.1.0"),  # the Software chunk alone is not enough
              text_chunk("poolcli", json.dumps({"software": "GIMP 2.10"})),
              text_chunk("Comment", json.dumps(EXPECTED))]  # right JSON, wrong keyword
    path = tmp_path / "f.png"
    path.write_bytes(encode_png(array, 1, chunks))
    assert read_provenance(path) is None


def test_png_large_chunks_before_ours_are_seeked_over(tmp_path):
    array = image(np.uint8, 3)
    big = [(b"prVt", bytes(4 << 20)), (b"tEXt", b"Comment\x00" + b"x" * (1 << 20))]
    chunks = big + prepare_provenance(PROV).png_chunks()
    path = tmp_path / "big.png"
    path.write_bytes(encode_png(array, 1, chunks))
    assert read_provenance(path) == EXPECTED  # 5 MiB before it, well over the read budget
    assert np.array_equal(imagecodecs.png_decode(path.read_bytes()), array)


def test_png_chunk_after_the_image_data_is_not_looked_for(tmp_path):
    data = encode_png(image(np.uint8, 3), 1)
    ctype, payload = prepare_provenance(PROV).png_chunks()[1]
    late = data[:-12] + raw_chunk(ctype, payload) + data[-12:]  # just before IEND
    path = tmp_path / "late.png"
    path.write_bytes(late)
    with Image.open(path) as im:
        im.load()
        assert "poolcli" in im.info  # a valid file, the chunk is there...
    assert read_provenance(path) is None  # ...but after IDAT: documented, not read


def test_png_bad_crc_is_ignored(tmp_path):
    path = tmp_path / "out.png"
    write_image(path, image(np.uint8, 3), provenance=PROV)
    data = bytearray(path.read_bytes())
    data[data.index(b"tEXtpoolcli") + 20] ^= 0x01
    path.write_bytes(bytes(data))
    assert read_provenance(path) is None


# ---- truncated, garbage, hostile ---------------------------------------------------------------


def stamped_bytes(tmp_path, suffix):
    path = tmp_path / f"s{suffix}"
    write_image(path, image(np.uint8, 1 if suffix == ".gif" else 3), provenance=PROV)
    return path.read_bytes()


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg", ".webp", ".gif"])
def test_every_truncation_gives_none_or_the_record(tmp_path, suffix):
    data = stamped_bytes(tmp_path, suffix)
    path = tmp_path / "cut"
    results = []
    for size in sorted({*range(0, min(len(data), 400)), *range(400, len(data), 211)}):
        path.write_bytes(data[:size])
        got = read_provenance(path)
        assert got in (None, EXPECTED)
        results.append(got is not None)
    if suffix in (".png", ".jpg", ".gif"):  # metadata first: found once it is complete
        first = results.index(True)
        assert all(results[first:])


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg", ".webp", ".gif"])
def test_random_damage_never_raises(tmp_path, suffix):
    data = stamped_bytes(tmp_path, suffix)
    rng = np.random.default_rng(7)
    path = tmp_path / "damaged"
    for _ in range(300):
        damaged = bytearray(data)
        for pos in rng.integers(0, min(len(data), 600), rng.integers(1, 4)):
            damaged[pos] = int(rng.integers(0, 256))
        path.write_bytes(bytes(damaged))
        got = read_provenance(path)  # damage inside the JSON may change it (no CRC but PNG's)
        assert got is None or got["software"].startswith("poolcli")


WEBP_VP8X_XMP = b"RIFF\xff\xff\xff\xffWEBPVP8X" + struct.pack("<I", 10) + b"\x04" + bytes(9)
HOSTILE = {
    "png huge chunk": b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 0xFFFFFFFF) + b"tEXt" + b"x" * 64,
    "png endless empty chunks": b"\x89PNG\r\n\x1a\n" + raw_chunk(b"abCd", b"") * 5000,
    "jpeg fill bytes": b"\xff\xd8" + b"\xff" * 100_000,
    "jpeg tiny length": b"\xff\xd8\xff\xfe\x00\x01rest",
    "jpeg markers": b"\xff\xd8" + b"\xff\xe1\x00\x02" * 10_000,
    "tiff offset past end": b"II*\x00" + struct.pack("<I", 1 << 31) + b"\x00" * 8,
    "tiff huge count": b"II*\x00\x08\x00\x00\x00" + struct.pack("<H", 65535) + b"\x00" * 64,
    "tiff description far": (b"MM\x00*\x00\x00\x00\x08\x00\x01"
                             + struct.pack(">HHII", 270, 2, 1000, 0xFFFFFF00) + b"\x00" * 8),
    "bigtiff absurd": b"II+\x00\x08\x00\x00\x00" + struct.pack("<Q", 1 << 62),
    "webp huge chunk": WEBP_VP8X_XMP + b"ABCD" + struct.pack("<I", 0xFFFFFFF0),
    "webp xmp absurd": WEBP_VP8X_XMP + b"XMP " + struct.pack("<I", 0xFFFFFFF0) + b"<poolcli:",
    "gif huge palette then nothing": b"GIF89a\x01\x00\x01\x00\xf7\x00\x00",
    "gif endless blocks": b"GIF89a\x01\x00\x01\x00\x00\x00\x00!\xfe" + b"\x01x" * 50_000,
    "gif deep json": b"GIF89a\x01\x00\x01\x00\x00\x00\x00!\xfe" + b"\xff" + b"[" * 255 + b"\x00;",
    "random": bytes(RNG.integers(0, 256, 4096, dtype=np.uint8)),
    "empty": b"",
    "short png": b"\x89PNG",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_give_none(tmp_path, name):
    path = tmp_path / "hostile"
    path.write_bytes(HOSTILE[name])
    assert read_provenance(path) is None


def test_deeply_nested_json_gives_none(tmp_path):
    path = tmp_path / "deep.png"
    text = "[" * 8000 + "]" * 8000  # under the size cap, over the recursion limit
    path.write_bytes(encode_png(image(np.uint8, 1), 1, [text_chunk("poolcli", text)]))
    assert read_provenance(path) is None


def test_huge_sparse_file_is_not_read(tmp_path):
    path = tmp_path / "sparse.png"
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.truncate(1 << 33)  # 8 GiB of zeros: empty chunks of type 0000, forever
    assert read_provenance(path) is None


def test_not_regular_files_give_none(tmp_path):
    assert read_provenance(tmp_path) is None  # a directory
    assert read_provenance(tmp_path / "missing.png") is None
    assert read_provenance(str(tmp_path / "nul\x00.png")) is None
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo.png"
        os.mkfifo(fifo)
        assert read_provenance(fifo) is None  # no writer: opening must not block


def test_reading_imports_no_codec(tmp_path):
    paths = []
    for suffix in (".png", ".tif", ".jpg", ".webp", ".gif"):
        paths.append(tmp_path / f"s{suffix}")
        paths[-1].write_bytes(stamped_bytes(tmp_path, suffix))
    code = (
        "import sys; from poolcli.imageio.provenance import read_provenance; "
        f"found = [read_provenance(p) is not None for p in {[str(p) for p in paths]!r}]; "
        "bad = [m for m in ('PIL', 'tifffile', 'imagecodecs') if m in sys.modules]; "
        "print(found, bad); sys.exit(0 if all(found) and not bad else 1)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
