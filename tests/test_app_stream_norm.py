"""Instance, layer and group norm streamed: three passes over forced small bands give the
in-memory result and record.

``POOLCLI_STREAM_ROWS`` forces streaming (that many input rows per band); each case runs the CLI
once in memory (no variable) and once per band size, writing the same path. NPY outputs are
compared byte for byte; TIFF outputs by their decoded values (dtype and bits: the band writer
lays out its strips and IFD unlike tifffile, as for pooling); the JSON line's text always.
Counters on :class:`poolcli.ops.norm.NormBands` prove the streaming path ran (and did not in
memory). The statistics cut the same row blocks as the in-memory pass: a small
``_BLOCK_VALUES`` makes blocks span several bands and bands several blocks.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from poolcli.cli import main

ROWS = ("1", "2", "7")
DTYPES = [np.uint8, np.uint16, np.float32]


@pytest.fixture
def passes(monkeypatch):
    """Bands fed to the statistics and bands normalized by the streaming path."""
    from poolcli.ops.norm import NormBands

    seen = {"add": 0, "apply": 0}
    add, apply = NormBands.add, NormBands.apply

    def counted_add(self, band):
        seen["add"] += 1
        return add(self, band)

    def counted_apply(self, band, r0):
        seen["apply"] += 1
        return apply(self, band, r0)

    monkeypatch.setattr(NormBands, "add", counted_add)
    monkeypatch.setattr(NormBands, "apply", counted_apply)
    return seen


@pytest.fixture
def small_blocks(monkeypatch):
    from poolcli.ops import norm

    monkeypatch.setattr(norm, "_BLOCK_VALUES", 100)


def run(src, out, opts: str, env: dict, code: int = 0) -> tuple[bytes, str]:
    """``norm`` of ``src`` to ``out``: the file's bytes and the JSON record's line."""
    result = CliRunner().invoke(main, ["norm", str(src), *opts.split(), "-o", str(out),
                                       "--json", "--force"], env=env, catch_exceptions=False)
    assert result.exit_code == code, result.output
    if code:
        return b"", result.output
    lines = [line for line in result.output.splitlines() if line.startswith('{"input')]
    assert len(lines) == 1, result.output
    json.loads(lines[0])
    return out.read_bytes(), lines[0]


def values(path):
    from poolcli.imageio import read_image

    return read_image(str(path)).array


def check(tmp_path, src, opts: str, suffix: str, passes, streams: bool = True, env=None):
    """In memory, then streamed with each of ROWS: the same values (bytes for NPY) and record."""
    out = tmp_path / f"out{suffix}"
    passes.update(add=0, apply=0)
    mem = run(src, out, opts, dict(env or {}))
    mem_values = values(out)
    assert passes == {"add": 0, "apply": 0}
    h = mem_values.shape[0]
    for rows in ROWS:
        passes.update(add=0, apply=0)
        st = run(src, out, opts, {**(env or {}), "POOLCLI_STREAM_ROWS": rows})
        assert st[1] == mem[1], (opts, rows)
        if suffix == ".npy":
            assert st[0] == mem[0], (opts, rows)
        got = values(out)
        assert got.dtype == mem_values.dtype and got.tobytes() == mem_values.tobytes()
        bands = -(-h // int(rows))
        expect = {"add": 2 * bands, "apply": bands} if streams else {"add": 0, "apply": 0}
        assert passes == expect, (opts, rows)


def image(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(shape) * 40 + 100).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("opts", ["", "--gamma 2,0.5,-1 --beta 0.25", "--gamma 3 --beta -1,0,2",
                                  "--eps 0.5"])
def test_instance_norm_streamed_equals_memory(tmp_path, passes, small_blocks, dtype, opts):
    src = tmp_path / "in.npy"
    np.save(src, image(dtype, (23, 9, 3)))
    check(tmp_path, src, f"--op instance {opts}", ".npy", passes)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_tiff_output(tmp_path, passes, small_blocks, dtype):
    src = tmp_path / "in.npy"
    np.save(src, image(dtype, (17, 11, 3), seed=1))
    check(tmp_path, src, "--op instance --gamma 2,1,0.5", ".tif", passes)


@pytest.mark.parametrize("opts", ["--op layer", "--op layer --gamma 1,2,3,4 --beta 1",
                                  "--op group --groups 2", "--op group --groups 2 --gamma 2",
                                  "--op contrast"])
def test_layer_and_group_norm(tmp_path, passes, small_blocks, opts):
    src = tmp_path / "in.npy"
    np.save(src, image(np.uint16, (19, 7, 4), seed=2))
    check(tmp_path, src, opts, ".npy", passes)


def test_real_block_size_grey_and_odd_width(tmp_path, passes):
    """The operator's own blocks (2 of them here), a grey image, no affine."""
    src = tmp_path / "in.npy"
    np.save(src, image(np.float32, (300, 1001), seed=3))
    check(tmp_path, src, "--op instance", ".npy", passes)


def test_tiff_and_png_inputs(tmp_path, passes, small_blocks):
    import tifffile
    from PIL import Image

    x = image(np.uint8, (21, 13, 3), seed=4)
    tif = tmp_path / "in.tif"
    tifffile.imwrite(tif, x, photometric="rgb", rowsperstrip=4)
    check(tmp_path, tif, "--op instance --gamma 1,2,3", ".npy", passes)
    png = tmp_path / "in.png"
    Image.fromarray(x).save(png)
    from poolcli.imageio.stream import open_band_reader

    reader = open_band_reader(png, max_pixels=10**8)
    assert reader is not None  # a non-interlaced PNG streams
    reader.close()
    check(tmp_path, png, "--op layer", ".tif", passes)


def test_nan_and_constant_planes(tmp_path, passes, small_blocks):
    """A NaN poisons its own channel; a constant channel normalizes to 0 (beta)."""
    x = image(np.float32, (15, 6, 3), seed=5)
    x[7, 2, 0] = np.nan
    x[..., 2] = 42.0
    src = tmp_path / "in.npy"
    np.save(src, x)
    check(tmp_path, src, "--op instance --beta 0.5", ".npy", passes)


def test_quiet_run_without_statistics(tmp_path, passes, small_blocks):
    """-q without --json: no statistics wanted (none accumulated), the same file."""
    src = tmp_path / "in.npy"
    np.save(src, image(np.uint8, (12, 5, 3), seed=6))
    out = tmp_path / "out.npy"
    files = []
    for env in ({}, {"POOLCLI_STREAM_ROWS": "2"}):
        result = CliRunner().invoke(main, ["norm", str(src), "-q", "-o", str(out), "--force"],
                                    env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        files.append(out.read_bytes())
    assert files[0] == files[1]
    assert passes == {"add": 12, "apply": 6}


def test_threads_give_the_same_bytes(tmp_path, passes, small_blocks):
    src = tmp_path / "in.npy"
    np.save(src, image(np.uint16, (40, 9, 3), seed=7))
    for threads in ("1", "2", "3"):
        check(tmp_path, src, "--op instance --gamma 2", ".npy", passes,
              env={"POOLCLI_THREADS": threads})


def test_png_output_runs_in_memory(tmp_path, passes):
    """A PNG gets a display mapping over the whole result's range: not streamed."""
    src = tmp_path / "in.npy"
    np.save(src, image(np.uint8, (10, 8, 3), seed=8))
    check(tmp_path, src, "--op instance", ".png", passes, streams=False)
    check(tmp_path, src, "--op instance --display clip", ".png", passes, streams=False)


def test_errors_are_the_in_memory_ones(tmp_path, passes):
    src = tmp_path / "in.npy"
    np.save(src, image(np.uint8, (10, 8, 3), seed=9))
    out = tmp_path / "out.npy"
    for opts in ("--op instance --gamma 1,2", "--op group --groups 2"):
        mem = run(src, out, opts, {}, code=1)[1]
        st = run(src, out, opts, {"POOLCLI_STREAM_ROWS": "2"}, code=1)[1]
        errors = [[line for line in text.splitlines() if '"error"' in line] for text in (mem, st)]
        assert errors[0] == errors[1] and len(errors[0]) == 1, opts
    assert not out.exists()
