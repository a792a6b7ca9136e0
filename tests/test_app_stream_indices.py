"""Max-location maps written band by band, and banded unpooling (issue 17).

``POOLCLI_STREAM_ROWS`` forces streaming with small bands; every streamed run is compared with
the same command run in memory (no variable): the image, the ``.indices.npz`` map and the
record must be byte-identical, and unpooling a streamed map (read lazily, a band of index rows
at a time) must give the in-memory unpool's file and record.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from poolcli.cli import main

GEOMETRIES = [
    "--op max -k 2",
    "--op max -k 3 -s 2 -p 1 --dilation 2 --ceil-mode",
    "--op max -k 3 -s 1",  # overlapping windows: cells selected twice
    "--op max -k 2 -s 1 -p 1 --ceil-mode",
    "--op min -k 3 -s 2 -p 1",
    "--op max -k 2 -s 3",  # gaps: rows no window reads
    "--op stochastic -k 3 -s 2 -p 1 --seed 4",
]


def run(args, env=None):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env or {},
                                catch_exceptions=False)
    return result.exit_code, result.output


def record(output: str, *paths) -> dict:
    rec = [json.loads(line) for line in output.splitlines() if line.startswith("{\"input")][0]
    text = json.dumps(rec)
    for i, path in enumerate(paths):
        text = text.replace(json.dumps(str(path))[1:-1], f"<{i}>")
    return json.loads(text)


@pytest.fixture(autouse=True)
def streamed(monkeypatch):
    """Which streaming runs completed: ("pool" | "unpool", whether it streamed)."""
    from poolcli.app.stream import pool, unpool

    done = []

    def counting(cls, kind):
        real = cls.run

        def counted(self, build_record):
            result = real(self, build_record)
            done.append((kind, result is not None))
            return result

        monkeypatch.setattr(cls, "run", counted)

    counting(pool._Streamed, "pool")
    counting(unpool._Unpooled, "unpool")
    return done


@pytest.fixture
def lazy_maps(monkeypatch):
    """Streamed unpool runs load every map lazily (a band of index rows read at a time); the
    in-memory runs never do (a lazy map alone would make them stream)."""
    from poolcli.imageio import indexmap

    def lazy(on: bool):
        monkeypatch.setattr(indexmap, "LAZY_BYTES", 1 if on else 1 << 62)

    return lazy


def pool_both(tmp_path, src, opts, suffix, rows, threads="1"):
    """``pool --save-indices`` in memory and streamed: ``{name: (image, map, record)}``."""
    out = {}
    for name, env in (("mem", {}), ("st", {"POOLCLI_STREAM_ROWS": rows})):
        env["POOLCLI_THREADS"] = threads
        image = tmp_path / f"{name}{suffix}"
        maps = tmp_path / f"{name}.indices.npz"
        code, text = run(["pool", src, *opts.split(), "--save-indices", "-o", image, "--json",
                          "--force"], env)
        assert code == 0, text
        out[name] = (image, maps, record(text, image, maps))
    return out


def unpool_both(tmp_path, pooled, maps, suffix, rows, extra=(), lazy=None):
    """``unpool`` in memory and streamed (the map loaded lazily when ``lazy`` is the
    ``lazy_maps`` fixture): ``{name: (image, record)}``."""
    out = {}
    for name, env in (("umem", {}), ("ust", {"POOLCLI_STREAM_ROWS": rows})):
        if lazy is not None:
            lazy(name == "ust")
        image = tmp_path / f"{name}{suffix}"
        code, text = run(["unpool", pooled, "--indices", maps, *extra, "-o", image, "--json",
                          "--force"], env)
        assert code == 0, text
        out[name] = (image, record(text, image))
    return out


@pytest.fixture
def rgb_npy(tmp_path):
    rng = np.random.default_rng(11)
    path = tmp_path / "in.npy"
    a = rng.integers(0, 256, (53, 38, 3), dtype=np.uint8)
    a[10:20, 5:15] = 7  # ties: the first maximum in window order wins, band or not
    np.save(path, a)
    return path


@pytest.mark.parametrize("opts", GEOMETRIES)
@pytest.mark.parametrize("rows,threads", [("1", "1"), ("4", "2")])
def test_streamed_map_image_and_record_equal_memory(tmp_path, rgb_npy, opts, rows, threads,
                                                    streamed):
    out = pool_both(tmp_path, rgb_npy, opts, ".npy", rows, threads)
    (mi, mm, mr), (si, sm, sr) = out["mem"], out["st"]
    assert streamed == [("pool", True)]
    assert mi.read_bytes() == si.read_bytes()
    assert mm.read_bytes() == sm.read_bytes()
    assert mr == sr and sr["indices"] == "<1>"


@pytest.mark.parametrize("opts", GEOMETRIES)
@pytest.mark.parametrize("accumulate", [False, True])
def test_unpool_of_a_streamed_map_equals_memory(tmp_path, rgb_npy, opts, accumulate, streamed,
                                                lazy_maps):
    out = pool_both(tmp_path, rgb_npy, opts, ".npy", "3")
    image, maps, _ = out["st"]
    extra = ["--accumulate"] if accumulate else []
    for rows in ("1", "5"):
        res = unpool_both(tmp_path, image, maps, ".npy", rows, extra)
        (mi, mr), (si, sr) = res["umem"], res["ust"]
        assert mi.read_bytes() == si.read_bytes(), rows
        assert mr == sr
    assert streamed == [("pool", True), ("unpool", True), ("unpool", True)]


def test_unpool_of_float_values_with_accumulate(tmp_path, rgb_npy, streamed, lazy_maps):
    """Float sums of overlapping windows (float64, in the whole image's order, rounded once),
    integer sums widened to int64, a uint16 image written as 16-bit PNG."""
    out = pool_both(tmp_path, rgb_npy, "--op max -k 3 -s 1", ".npy", "4")
    _, maps, _ = out["st"]
    rng = np.random.default_rng(2)
    shape = np.load(out["st"][0]).shape
    values = {"f32.npy": rng.standard_normal(shape).astype(np.float32) * 1e3,
              "u16.npy": rng.integers(0, 65536, shape, dtype=np.uint16)}
    for name, array in values.items():
        np.save(tmp_path / name, array)
        for extra, suffix in (([], ".npy"), (["--accumulate"], ".npy"), ([], ".tif")):
            res = unpool_both(tmp_path, tmp_path / name, maps, suffix, "2", extra, lazy_maps)
            if suffix == ".tif":  # the band writer cuts other strips: the same pixels
                from poolcli.imageio import read_image

                a, b = (read_image(res[k][0]).array for k in ("umem", "ust"))
                assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), name
            else:
                assert res["umem"][0].read_bytes() == res["ust"][0].read_bytes(), (name, extra)
            assert res["umem"][1] == res["ust"][1]
    assert streamed == [("pool", True)] + [("unpool", True)] * 6


def test_signed_float_to_png_runs_in_memory(tmp_path, rgb_npy, streamed):
    """A signed result mapped to PNG by its range needs the whole image."""
    out = pool_both(tmp_path, rgb_npy, "--op max -k 2", ".npy", "4")
    _, maps, _ = out["st"]
    signed = tmp_path / "signed.npy"
    np.save(signed, np.random.default_rng(3).standard_normal(np.load(out["st"][0]).shape))
    res = unpool_both(tmp_path, signed, maps, ".png", "2")
    assert res["umem"][0].read_bytes() == res["ust"][0].read_bytes()
    assert streamed == [("pool", True), ("unpool", False)]


def picture_both(tmp_path, src, opts, rows, threads, extra=()):
    """``pool --indices-png`` in memory and streamed: ``{name: (image, picture, record)}``."""
    from poolcli.imageio import read_image

    out = {}
    for name, env in (("mem", {}), ("st", {"POOLCLI_STREAM_ROWS": rows})):
        env["POOLCLI_THREADS"] = threads
        image = tmp_path / f"{name}.npy"
        code, text = run(["pool", src, *opts.split(), "--indices-png", *extra, "-o", image,
                          "--json", "--force"], env)
        assert code == 0, text
        picture = read_image(tmp_path / f"{name}.selected.png")
        out[name] = (image.read_bytes(), picture,
                     record(text, image, tmp_path / f"{name}.indices.npz"))
    return out


@pytest.mark.parametrize("opts", GEOMETRIES + ["--op kmax --k 7"])
@pytest.mark.parametrize("rows,threads", [("1", "1"), ("4", "2")])
def test_indices_png_streamed_equals_memory(tmp_path, rgb_npy, opts, rows, threads, streamed):
    """The picture of the selected cells, written band by band (cells that windows of two
    bands select, rows no window reads), is the in-memory picture; so are the image and the
    record."""
    out = picture_both(tmp_path, rgb_npy, opts, rows, threads)
    (mi, mp, mr), (si, sp, sr) = out["mem"], out["st"]
    assert streamed == [("pool", True)]
    assert mi == si and mr == sr
    assert mp.array.dtype == sp.array.dtype and np.array_equal(mp.array, sp.array)
    assert 0 < np.count_nonzero(sp.array) < sp.array.size
    from poolcli.imageio.provenance import read_provenance

    assert read_provenance(tmp_path / "st.selected.png") == \
        read_provenance(tmp_path / "mem.selected.png")


def test_indices_png_of_16_bit_grey_with_a_map(tmp_path, streamed):
    """16-bit grey, against the naive picture: each window's argmax cell set, the rest 0."""
    rng = np.random.default_rng(8)
    a = rng.integers(0, 65536, (41, 29, 1), dtype=np.uint16)
    np.save(tmp_path / "g.npy", a)
    out = picture_both(tmp_path, tmp_path / "g.npy", "--op max -k 3 -s 2", "2", "2",
                       ["--save-indices"])
    assert streamed == [("pool", True)]
    naive = np.zeros_like(a[:, :, 0])
    for i in range(0, 41 - 2, 2):
        for j in range(0, 29 - 2, 2):
            window = a[i:i + 3, j:j + 3, 0]
            di, dj = np.unravel_index(np.argmax(window), window.shape)
            naive[i + di, j + dj] = window[di, dj]
    for name in ("mem", "st"):
        np.testing.assert_array_equal(out[name][1].array.reshape(naive.shape), naive)
    assert out["mem"][2] == out["st"][2]
    assert (tmp_path / "st.indices.npz").read_bytes() == (tmp_path / "mem.indices.npz").read_bytes()


def test_indices_png_of_a_float_image_runs_in_memory(tmp_path, streamed):
    """A float input's picture is mapped to 8 bits by its whole range: in memory."""
    np.save(tmp_path / "f.npy", np.random.default_rng(1).standard_normal((30, 20, 3)))
    out = picture_both(tmp_path, tmp_path / "f.npy", "--op max -k 2", "3", "1")
    assert streamed == [("pool", False)]
    assert out["mem"][0] == out["st"][0] and out["mem"][2] == out["st"][2]
    assert np.array_equal(out["mem"][1].array, out["st"][1].array)


def test_a_map_with_an_index_outside_its_window_unpools_in_memory(tmp_path, rgb_npy, streamed,
                                                                  lazy_maps):
    """A map edited by hand may send a value anywhere in the plane: the band would miss it, so
    the job runs in memory, with the in-memory result."""
    from poolcli.imageio import indexmap

    out = pool_both(tmp_path, rgb_npy, "--op max -k 2", ".npy", "4")
    image, maps, _ = out["st"]
    m = indexmap.load(maps)
    idx = m.indices.copy()
    idx[0, 0, 0] = idx[-1, -1, 0]  # the top-left value lands at the bottom right
    edited = tmp_path / "edited.indices.npz"
    indexmap.save(edited, idx, m.meta)
    res = unpool_both(tmp_path, image, edited, ".npy", "4", lazy=lazy_maps)
    assert res["umem"][0].read_bytes() == res["ust"][0].read_bytes()
    assert streamed == [("pool", True), ("unpool", False)]


def test_png_to_png_with_map_and_unpool(tmp_path, streamed, lazy_maps):
    from PIL import Image

    rng = np.random.default_rng(5)
    src = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 256, (67, 45, 3), dtype=np.uint8)).save(src)
    out = pool_both(tmp_path, src, "--op max -k 3 -s 2 -p 1", ".png", "4", "2")
    (mi, mm, mr), (si, sm, sr) = out["mem"], out["st"]
    assert np.array_equal(np.asarray(Image.open(mi)), np.asarray(Image.open(si)))
    assert mm.read_bytes() == sm.read_bytes() and mr == sr
    res = unpool_both(tmp_path, si, sm, ".png", "3", lazy=lazy_maps)
    assert np.array_equal(np.asarray(Image.open(res["umem"][0])),
                          np.asarray(Image.open(res["ust"][0])))
    assert res["umem"][1] == res["ust"][1]
    assert streamed == [("pool", True), ("unpool", True)]


def test_a_failed_image_leaves_no_map(tmp_path, rgb_npy, monkeypatch, streamed):
    """The map and the picture are committed before the image, as in memory; when the image
    then fails, the runner removes them again."""
    from poolcli.imageio import _stream_npy

    def broken(self, fh):  # the image's last step, after the map was committed
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_stream_npy.NpyBandWriter, "_finish", broken)
    for extra in (["--save-indices"], ["--save-indices", "--indices-png"]):
        code, text = run(["pool", rgb_npy, "--op", "max", *extra, "-o", tmp_path / "o.npy"],
                         {"POOLCLI_STREAM_ROWS": "4"})
        assert code != 0 and "disk full" in text
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]  # (only the band
        # writer fails: the streamed path ran)
