"""The streaming path through the CLI: forced small bands give the in-memory outputs and records.

``POOLCLI_STREAM_ROWS`` forces streaming with that many output rows per band, so small files
exercise it; each run is compared with the same command run in memory (no variable).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from poolcli.cli import main

# (operator options, whether the output is computed band by band for uint8 input)
CASES = [
    ("--op max -k 2", True),
    ("--op max -k 3 -s 2 -p 1 --dilation 2 --ceil-mode", True),
    ("--op min -k 3 -s 2 -p 1", True),
    ("--op avg -k 2", True),
    ("--op avg -k 3 -s 2 -p 1 --no-count-include-pad --ceil-mode", True),
    ("--op lp -k 3 -s 2 --norm-type 3", True),
    ("--op mixed -k 3 -s 2 -p 1 --alpha 0.3", True),
    ("--op softpool -k 2", True),
    ("--op gem -k 3 -s 2", True),
    ("--op lse -k 2 --lse-r 2", True),
    ("--op sort -k 3 -s 2", True),
    ("--op blur -k 5", True),
    ("--op avg -k 2 -s 3", True),  # rows no window reads: still in the statistics, once
    ("--op kmax", True),  # row by row along the width, k = W // 2
    ("--op kmax --k 5", True),
    ("--op kmax --k-top 3 --layer 1 --layers 3", True),  # DCNN's dynamic k, from W
]


def run(args, env=None):
    result = CliRunner().invoke(main, args, env=env or {}, catch_exceptions=False)
    return result.exit_code, result.output


def records(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{\"input")]


@pytest.fixture(autouse=True)
def streamed(monkeypatch):
    """How many jobs the streaming path completed (it must, where the test expects it)."""
    from poolcli.app.stream import pool as stream

    done = []
    real = stream._Streamed.run

    def counted(self, build_record):
        record = real(self, build_record)
        done.append(record is not None)
        return record

    monkeypatch.setattr(stream._Streamed, "run", counted)
    return done


def pool_both(tmp_path, src, opts, suffix, rows="5", threads=None):
    """Run ``pool`` in memory and streamed; returns (memory path, streamed path, records)."""
    outs, recs = [], []
    for name, env in (("mem", {}), ("st", {"POOLCLI_STREAM_ROWS": rows})):
        if threads:
            env["POOLCLI_THREADS"] = threads
        out = tmp_path / f"{name}{suffix}"
        code, text = run(["pool", str(src), *opts.split(), "-o", str(out), "--json",
                          "--force"], env)
        assert code == 0, text
        rec = records(text)[0]
        rec["output"] = None
        outs.append(out)
        recs.append(rec)
    return outs[0], outs[1], recs


@pytest.fixture
def rgb_npy(tmp_path):
    rng = np.random.default_rng(7)
    path = tmp_path / "in.npy"
    np.save(path, rng.integers(0, 256, (61, 37, 3), dtype=np.uint8))
    return path


@pytest.mark.parametrize("opts,_", CASES)
def test_npy_streamed_equals_memory(tmp_path, rgb_npy, opts, _, streamed):
    mem, st, (rm, rs) = pool_both(tmp_path, rgb_npy, opts, ".npy")
    assert streamed == [True]
    assert mem.read_bytes() == st.read_bytes()
    assert rm == rs


def test_kmax_along_the_height_runs_in_memory(tmp_path, rgb_npy, streamed):
    """Each column's k largest need the whole column: not banded."""
    mem, st, (rm, rs) = pool_both(tmp_path, rgb_npy, "--op kmax --axis h --k 4", ".npy")
    assert streamed == []
    assert mem.read_bytes() == st.read_bytes() and rm == rs


def test_kmax_max_locations_streamed(tmp_path, rgb_npy, streamed):
    """The map of a streamed K-max holds the whole image's flat ``h * W + w``."""
    mem, st, (rm, rs) = pool_both(tmp_path, rgb_npy, "--op kmax --k 6 --save-indices", ".npy",
                                  rows="4")
    assert streamed == [True]
    assert mem.read_bytes() == st.read_bytes()
    a = np.load(str(mem).replace(".npy", ".indices.npz"))
    b = np.load(str(st).replace(".npy", ".indices.npz"))
    assert a.files == b.files
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name])


def test_float_input_and_threads(tmp_path, streamed):
    rng = np.random.default_rng(3)
    src = tmp_path / "f.npy"
    np.save(src, rng.standard_normal((83, 29, 2)).astype(np.float32))
    for opts in ("--op avg -k 2 -s 1", "--op lp -k 3 -s 2", "--op max -k 3 -s 2 -p 1"):
        for threads in ("1", "2"):
            mem, st, (rm, rs) = pool_both(tmp_path, src, opts, ".npy", rows="3",
                                          threads=threads)
            assert mem.read_bytes() == st.read_bytes(), (opts, threads)
            assert rm == rs
    assert streamed == [True] * 6
    # float sums over a padded height are not order-safe: that runs in memory
    pool_both(tmp_path, src, "--op avg -k 3 -p 1", ".npy")
    assert streamed == [True] * 6


def png_streams(path) -> bool:
    from poolcli.imageio.stream import open_band_reader

    try:
        reader = open_band_reader(path, max_pixels=10**8)
    except Exception:  # the PNG band reader is being written (issue 17)
        return False
    if reader is None:
        return False
    reader.close()
    return True


@pytest.mark.parametrize("opts", ["--op avg -k 2", "--op max -k 3 -s 2"])
def test_png_streamed_equals_memory(tmp_path, opts, streamed):
    from PIL import Image

    rng = np.random.default_rng(1)
    src = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 256, (75, 41, 3), dtype=np.uint8)).save(src)
    assert png_streams(src)
    mem, st, (rm, rs) = pool_both(tmp_path, src, opts, ".png")
    assert streamed == [True]
    # pixels, not bytes: the band writer may cut the zlib stream into other IDAT chunks
    assert np.array_equal(np.asarray(Image.open(mem)), np.asarray(Image.open(st)))
    assert rm == rs


@pytest.mark.parametrize("opts", ["--op avg -k 2", "--op max -k 3 -s 2 -p 1"])
def test_png_threads_give_the_same_bytes(tmp_path, monkeypatch, opts, streamed):
    """Decoded ahead, pooled on the pool, deflated in a thread (2 and 3 threads) or all in one
    thread: the same file, the in-memory pixels, the same record (statistics included)."""
    from PIL import Image

    from poolcli.imageio import _stream_png

    monkeypatch.setattr(_stream_png, "_BLOCK_BYTES", 2000)  # many inflate blocks
    rng = np.random.default_rng(5)
    src = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 256, (97, 53, 3), dtype=np.uint8)).save(src)
    files, recs = [], []
    for threads in ("1", "2", "3"):
        mem, st, (rm, rs) = pool_both(tmp_path, src, opts, ".png", rows="4", threads=threads)
        assert rm == rs, threads
        assert np.array_equal(np.asarray(Image.open(mem)), np.asarray(Image.open(st)))
        files.append(st.read_bytes())
        recs.append(rs)
    assert streamed == [True] * 3
    assert files[0] == files[1] == files[2]
    assert recs[0] == recs[1] == recs[2]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("opts,dtype", [
    ("--op avg -k 3 -s 2 -p 1 --ceil-mode", np.uint16),  # 16-bit PNG: rounded floats
    ("--op stochastic -k 3 -s 2 --seed 3", np.uint8),
    ("--op adaptive-avg --output-size 19x23", np.uint8),
    ("--op kmax --k 9", np.uint16),
    ("--op max -k 2 -s 3", np.uint8),  # rows no window reads
])
def test_bands_encoded_in_their_threads(tmp_path, monkeypatch, opts, dtype, suffix, streamed):
    """A PNG or TIFF output's bands are encoded where they are computed, each as its own piece
    (a PNG's given the output row above it, computed once more; a TIFF strip): every band
    arrives encoded, the same bytes for 1 and 2 threads, the in-memory pixels and record."""
    from poolcli.imageio import _stream_png, _stream_tiff, read_image

    pieces = []
    for cls in (_stream_png.PngBandWriter, _stream_tiff.TiffBandWriter):
        def counted(self, piece, real=cls.write_encoded):
            pieces.append(piece.rows)
            return real(self, piece)

        monkeypatch.setattr(cls, "write_encoded", counted)
    rng = np.random.default_rng(9)
    src = tmp_path / "in.npy"
    np.save(src, rng.integers(0, np.iinfo(dtype).max, (83, 47, 3), dtype=dtype))
    files = []
    for threads in ("1", "2"):
        pieces.clear()
        mem, st, (rm, rs) = pool_both(tmp_path, src, opts, suffix, rows="4", threads=threads)
        assert rm == rs, threads
        a, b = read_image(mem).array, read_image(st).array
        assert a.dtype == b.dtype and np.array_equal(a, b)  # (TIFF keeps float results)
        assert sum(pieces) == b.shape[0] and len(pieces) == -(-b.shape[0] // 4)
        files.append(st.read_bytes())
    assert files[0] == files[1]
    assert streamed == [True] * 2


def test_a_refused_geometry_names_the_image_not_a_band(tmp_path, streamed):
    """An output too small for the kernel is the in-memory error, naming the image's size."""
    src = tmp_path / "tall.npy"
    np.save(src, np.zeros((9, 1, 3), np.uint8))
    texts = []
    for env in ({}, {"POOLCLI_STREAM_ROWS": "1"}, {"POOLCLI_STREAM_ROWS": "1",
                                                   "POOLCLI_THREADS": "2"}):
        code, text = run(["pool", str(src), "--op", "min", "-k", "2", "-o",
                          str(tmp_path / "o.png")], env)
        assert code == 1
        texts.append(text)
    assert "input 9x1" in texts[0] and texts[0] == texts[1] == texts[2]
    assert not (tmp_path / "o.png").exists()


def test_bands_taller_than_the_image(tmp_path, streamed):
    """POOLCLI_STREAM_ROWS far past the height: one band, one strip of the output's height."""
    from poolcli.imageio import read_image

    src = tmp_path / "in.npy"
    np.save(src, np.random.default_rng(4).integers(0, 256, (37, 21, 3), dtype=np.uint8))
    for suffix in (".tif", ".png"):
        mem, st, (rm, rs) = pool_both(tmp_path, src, "--op max -k 2", suffix, rows="4294967296")
        assert np.array_equal(read_image(mem).array, read_image(st).array) and rm == rs
    assert streamed == [True, True]


@pytest.mark.parametrize("layout", [{"tile": (32, 32)}, {"rowsperstrip": 5}],
                         ids=["tiled", "striped"])
@pytest.mark.parametrize("opts,threads", [
    ("--op avg -k 2", ("1", "2", "3")),
    ("--op max -k 2 -s 3", ("1", "2")),  # rows no window reads: still in the statistics
    ("--op avg -k 3 -s 2 -p 1 --ceil-mode", ("1", "3")),  # bands share tile rows
    ("--op stochastic -k 3 -s 2 --seed 3", ("1", "2")),
])
def test_tiff_bands_decoded_in_their_threads(tmp_path, streamed, layout, opts, threads):
    """A TIFF's bands each decode their own rows in the pool thread that computes them, the
    strips or tiles two bands share decoded once by whichever comes first: the same output
    bytes for every thread count, with the in-memory pixels and record (its statistics too)."""
    import tifffile

    from poolcli.imageio import read_image

    rng = np.random.default_rng(8)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, rng.integers(0, 256, (150, 140, 3), dtype=np.uint8),
                     compression="zlib", photometric="rgb", **layout)
    files = []
    for count in threads:
        mem, st, (rm, rs) = pool_both(tmp_path, src, opts, ".tif", rows="6", threads=count)
        assert rm == rs and rm["stats_in"], count
        assert np.array_equal(read_image(mem).array, read_image(st).array)
        files.append(st.read_bytes())
    assert streamed == [True] * len(threads)
    assert len(set(files)) == 1


def test_one_thread_starts_no_thread(tmp_path, monkeypatch, streamed):
    """POOLCLI_THREADS=1 (what a -j N worker gets): decode, pool and deflate in the calling
    thread, none started, so N workers use N cores and no more."""
    import threading

    from PIL import Image

    from poolcli.app.stream import pool as stream

    rng = np.random.default_rng(6)
    src = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 256, (60, 40, 3), dtype=np.uint8)).save(src)
    seen = []
    real = stream._Streamed.compute

    def compute(self, *args):
        seen.append({t.name for t in threading.enumerate()})
        return real(self, *args)

    monkeypatch.setattr(stream._Streamed, "compute", compute)
    before = {t.name for t in threading.enumerate()}
    code, text = run(["pool", str(src), "--op", "max", "-o", str(tmp_path / "o.png")],
                     {"POOLCLI_STREAM_ROWS": "4", "POOLCLI_THREADS": "1"})
    assert code == 0, text
    assert streamed == [True] and len(seen) == 8
    assert all(names <= before for names in seen), seen


STOCHASTIC = [
    "--op stochastic -k 2 --seed 11",
    "--op stochastic -k 3 -s 2 -p 1 --ceil-mode --seed 12",
    "--op stochastic -k 3 -s 1 --seed 13",
    "--op stochastic -k 2 --mode test",
    "--op stochastic -k 3 -s 2 -p 1 --mode test",
]


@pytest.mark.parametrize("opts", STOCHASTIC)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_stochastic_streamed_equals_memory(tmp_path, opts, dtype, streamed):
    """The random stream does not depend on the bands: each band's generator is the image's,
    advanced to the band's first output row; 1 and 2 threads, bands of 1, 3 and 7 rows."""
    rng = np.random.default_rng(4)
    src = tmp_path / "in.npy"
    a = rng.integers(0, 256 if dtype == np.uint8 else 65536, (47, 31, 3)).astype(dtype)
    a[5:9, 3:12] = 0  # all-zero windows: their fixed pick
    np.save(src, a)
    for rows, threads in (("1", "1"), ("3", "2"), ("7", "2")):
        mem, st, (rm, rs) = pool_both(tmp_path, src, opts, ".npy", rows=rows, threads=threads)
        assert mem.read_bytes() == st.read_bytes(), (rows, threads)
        assert rm == rs
    assert streamed == [True] * 3


def test_stochastic_streamed_batch_and_drawn_seed(tmp_path, streamed):
    """Every image of a batch gets its own seed as in memory; without --seed the seed drawn is
    reported, and the in-memory run with it gives the same file."""
    rng = np.random.default_rng(9)
    srcs = []
    for i in range(3):
        srcs.append(tmp_path / f"in{i}.npy")
        np.save(srcs[-1], rng.integers(0, 256, (40, 30, 3), dtype=np.uint8))
    outs = {}
    for name, env in (("mem", {}), ("st", {"POOLCLI_STREAM_ROWS": "4"})):
        (tmp_path / name).mkdir()
        code, text = run(["pool", *map(str, srcs), "--op", "stochastic", "-k", "2", "--seed",
                          "5", "-j", "1", "-o", str(tmp_path / name), "--json"], env)
        assert code == 0, text
        outs[name] = [(tmp_path / name / f"{p.stem}_stochastic.npy").read_bytes() for p in srcs]
    assert outs["mem"] == outs["st"] and streamed == [True] * 3
    code, text = run(["pool", str(srcs[1]), "--op", "stochastic", "-k", "2", "-o",
                      str(tmp_path / "drawn.npy"), "--json"], {"POOLCLI_STREAM_ROWS": "4"})
    assert code == 0, text
    seed = records(text)[0]["params"]["seed"]
    code, text = run(["pool", str(srcs[1]), "--op", "stochastic", "-k", "2", "--seed",
                      str(seed), "-o", str(tmp_path / "again.npy"), "--json"])
    assert code == 0, text
    assert (tmp_path / "drawn.npy").read_bytes() == (tmp_path / "again.npy").read_bytes()
    assert streamed == [True] * 4


def test_stochastic_float_or_signed_input_runs_in_memory(tmp_path, streamed):
    src = tmp_path / "f.npy"
    np.save(src, np.random.default_rng(2).random((30, 20, 2)).astype(np.float32))
    mem, st, (rm, rs) = pool_both(tmp_path, src, "--op stochastic -k 2 --seed 3", ".npy")
    assert mem.read_bytes() == st.read_bytes() and streamed == []


def test_bomb_guard_before_any_work(tmp_path):
    """A tiny .npy claiming 60000 x 60000 x 3 is refused, streamed or not, unless raised."""
    src = tmp_path / "bomb.npy"
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (60000, 60000, 3), }"
    header = header + " " * (63 - (10 + len(header)) % 64) + "\n"
    src.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
    for env in ({}, {"POOLCLI_STREAM_ROWS": "4"}):
        code, text = run(["pool", str(src), "--op", "avg", "-o", str(tmp_path / "o.npy")], env)
        assert code != 0 and "pixels" in text, text
        assert not (tmp_path / "o.npy").exists()
    code, text = run(["pool", str(src), "--op", "avg", "-o", str(tmp_path / "o.npy"),
                      "--max-pixels", "4000000000"], {"POOLCLI_STREAM_ROWS": "4"})
    assert code != 0 and "pixels" not in text.split("error")[0]  # truncated data, not the guard
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_damaged_tile_is_the_in_memory_error_and_the_batch_goes_on(tmp_path, threads,
                                                                     streamed):
    """A tile that does not inflate, met by a band mid-image (decoded in a pool thread with 2):
    the in-memory one-line error naming the file, no output and no temporary file left, and
    the next image of the batch still written."""
    import tifffile

    rng = np.random.default_rng(5)
    bad, good = tmp_path / "a_bad.tif", tmp_path / "b_good.tif"
    for path in (bad, good):
        tifffile.imwrite(path, rng.integers(0, 256, (160, 96, 3), dtype=np.uint8),
                         tile=(32, 32), compression="zlib", photometric="rgb")
    with tifffile.TiffFile(bad) as tif:
        offset = tif.pages[0].dataoffsets[10]  # tile row 3 of 5
    data = bytearray(bad.read_bytes())
    data[offset:offset + 40] = bytes(40)
    bad.write_bytes(bytes(data))
    texts = []
    for env in ({}, {"POOLCLI_STREAM_ROWS": "6", "POOLCLI_THREADS": threads}):
        out = tmp_path / f"out{len(texts)}"
        code, text = run(["pool", str(bad), str(good), "--op", "max", "-k", "2", "-o",
                          str(out), "-q", "-j", "1"], env)
        assert code == 1, text
        assert sorted(p.name for p in out.iterdir()) == ["b_good_max.tif"]
        texts.append([line for line in text.splitlines() if "a_bad.tif" in line])
    assert texts[0] == texts[1] and len(texts[0]) == 1, texts
    assert streamed == [True]  # the good image of the streamed run
