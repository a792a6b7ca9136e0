"""Global and adaptive pooling streamed: forced small bands give the in-memory file and record.

``POOLCLI_STREAM_ROWS`` forces streaming (that many output rows per band for adaptive pooling,
input rows per band for global pooling); each case runs the CLI once in memory (no variable)
and once per band size, writing the same path, and compares the file's bytes and the JSON line's
text. Counters on the band computations prove the streaming path ran (and did not in memory).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from poolcli.cli import main

ROWS = ("1", "2", "7")


@pytest.fixture
def bands(monkeypatch):
    """Bands computed by the streaming path: adaptive output bands, global input bands."""
    from poolcli.app.stream import pool as stream
    from poolcli.ops import adaptive

    seen = {"adaptive": 0, "global": 0}
    compute, add = stream._Adaptive.compute, adaptive.GlobalPool.add

    def counted_compute(self, *args):
        seen["adaptive"] += 1
        return compute(self, *args)

    def counted_add(self, rows):
        seen["global"] += 1
        return add(self, rows)

    monkeypatch.setattr(stream._Adaptive, "compute", counted_compute)
    monkeypatch.setattr(adaptive.GlobalPool, "add", counted_add)
    return seen


def run(src, out, opts: str, env: dict) -> tuple[bytes, str]:
    """``pool`` of ``src`` to ``out``: the file's bytes and the JSON record's line."""
    result = CliRunner().invoke(main, ["pool", str(src), *opts.split(), "-o", str(out),
                                       "--json", "--force"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith('{"input')]
    assert len(lines) == 1, result.output
    json.loads(lines[0])
    return out.read_bytes(), lines[0]


def check(tmp_path, src, opts: str, suffix: str, bands, kind: str, expect, env=None) -> None:
    """In memory, then streamed with each of ROWS: same bytes, same record. ``expect(rows)``:
    the number of bands the streamed run computes (0: it must run in memory)."""
    out = tmp_path / f"out{suffix}"
    bands[kind] = 0
    mem = run(src, out, opts, dict(env or {}))
    assert bands[kind] == 0
    for rows in ROWS:
        bands[kind] = 0
        st = run(src, out, opts, {**(env or {}), "POOLCLI_STREAM_ROWS": rows})
        assert st[1] == mem[1], (opts, rows)
        assert st[0] == mem[0], (opts, rows)
        assert bands[kind] == expect(int(rows)), (opts, rows)


def image(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(shape) * 40 + 100).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


DTYPES = [np.uint8, np.uint16, np.float32]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", ["adaptive-avg", "adaptive-max"])
@pytest.mark.parametrize("size", ["3", "5x4", "7x37", "40x19", "60x36"])
def test_adaptive_streamed_equals_memory(tmp_path, bands, dtype, op, size):
    """61x37: output heights dividing it or not, above half the input (40, 60), widths too."""
    src = tmp_path / "in.npy"
    np.save(src, image(dtype, (61, 37, 3)))
    oh = int(size.split("x")[0])
    check(tmp_path, src, f"--op {op} --output-size {size}", ".npy", bands, "adaptive",
          lambda rows: -(-oh // rows))


@pytest.mark.parametrize("op", ["adaptive-avg", "adaptive-max"])
def test_adaptive_grey_uniform_and_periodic_windows(tmp_path, bands, op):
    """Uniform windows (64 -> 16, the fixed-window engine) and periodic ones (80 -> 25, one
    residue class at a time) on a grey float32 image: every pass of the engine, banded."""
    src = tmp_path / "in.npy"
    np.save(src, image(np.float32, (80, 64), seed=2))
    for size, oh in (("16", 16), ("25x20", 25), ("79x63", 79), ("1x5", 1)):
        check(tmp_path, src, f"--op {op} --output-size {size}", ".npy", bands, "adaptive",
              lambda rows, oh=oh: -(-oh // rows))


@pytest.mark.parametrize("threads", ["1", "3"])
def test_adaptive_threads_give_the_same_bytes(tmp_path, bands, threads):
    src = tmp_path / "in.npy"
    np.save(src, image(np.float32, (97, 41, 3), seed=4))
    check(tmp_path, src, "--op adaptive-avg --output-size 50x13", ".npy", bands, "adaptive",
          lambda rows: -(-50 // rows), env={"POOLCLI_THREADS": threads})


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", ["gap", "gmp"])
@pytest.mark.parametrize("shape", [(71, 45, 3), (133, 29)])
def test_global_streamed_equals_memory(tmp_path, bands, dtype, op, shape):
    """Odd heights across float32's 64-row blocks (71, 133 rows): 1-, 2- and 7-row bands."""
    src = tmp_path / "in.npy"
    np.save(src, image(dtype, shape, seed=1))
    check(tmp_path, src, f"--op {op}", ".npy", bands, "global",
          lambda rows: -(-shape[0] // rows))


def test_global_float_cases_in_memory(tmp_path, bands):
    """float64 sums (one reduction over all rows, numpy's order) and a float max that is a zero
    (its sign depends on the order) run in memory: the same bytes, trivially."""
    src = tmp_path / "f64.npy"
    np.save(src, image(np.float64, (70, 30, 2)))
    check(tmp_path, src, "--op gap", ".npy", bands, "global", lambda rows: 0)
    zero = image(np.float32, (70, 30, 2)) * 0 - 1
    zero[5, 3, 1] = -0.0
    zero[9, 4, 1] = 0.0
    src = tmp_path / "zero.npy"
    np.save(src, zero)
    out = tmp_path / "out.npy"
    for rows in ROWS:  # read band by band, then given up: the in-memory run's bytes
        assert run(src, out, "--op gmp", {"POOLCLI_STREAM_ROWS": rows}) == run(
            src, out, "--op gmp", {})


def test_png_to_png(tmp_path, bands):
    """PNG in and out: global pooling writes the tiny result in memory (the same bytes);
    adaptive pooling through the band writer (the same pixels and record)."""
    from PIL import Image

    from poolcli.imageio.stream import open_band_reader

    src = tmp_path / "in.png"
    Image.fromarray(image(np.uint8, (75, 41, 3), seed=3)).save(src)
    reader = open_band_reader(str(src), max_pixels=10**8)
    assert reader is not None  # a non-interlaced PNG streams
    reader.close()
    check(tmp_path, src, "--op gap", ".png", bands, "global", lambda rows: -(-75 // rows))
    out = tmp_path / "out.png"
    mem = run(src, out, "--op adaptive-avg --output-size 30x20", {})
    mem_pixels = np.asarray(Image.open(out))
    st = run(src, out, "--op adaptive-avg --output-size 30x20", {"POOLCLI_STREAM_ROWS": "4"})
    assert bands["adaptive"] == 8
    assert st[1] == mem[1]
    assert np.array_equal(np.asarray(Image.open(out)), mem_pixels)


def test_save_indices_runs_in_memory(tmp_path, bands):
    src = tmp_path / "in.npy"
    np.save(src, image(np.uint8, (61, 37, 3)))
    for op in ("--op gmp", "--op adaptive-max --output-size 9"):
        check(tmp_path, src, f"{op} --save-indices", ".npy", bands,
              "global" if "gmp" in op else "adaptive", lambda rows: 0)
