"""Instance, layer and group norm streamed: three passes over forced small bands give the
in-memory result and record.

``POOLCLI_STREAM_ROWS`` forces streaming (that many input rows per band); each case runs the CLI
once in memory (no variable) and once per band size, writing the same path. NPY outputs are
compared byte for byte; TIFF outputs by their decoded values (dtype and bits: the band writer
lays out its strips and IFD unlike tifffile, as for pooling); the JSON line's text always.
Counters on :class:`poolcli.ops.norm.NormBands` prove the streaming path ran (and did not in
memory). The statistics cut the same row blocks as the in-memory pass: a small
``_BLOCK_VALUES`` makes blocks span several bands and bands several blocks.

An 8-bit PNG output gets the display mapping (``--display``) of the whole result: the streamed
path normalizes the bands once more per display statistics pass (none for clip, one for minmax,
two for sigma) and once to write them; the PNG's bytes may differ (the band writer deflates with
zlib, the in-memory one with libdeflate), so its decoded pixels are compared, and the JSON line
(display description, clipped count, note) as always. ``small_blocks`` cuts the display
statistics' row blocks small too.
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
    from poolcli.imageio import values
    from poolcli.ops import norm

    monkeypatch.setattr(norm, "_BLOCK_VALUES", 100)
    monkeypatch.setattr(values, "_BLOCK_CELLS", 40)


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


def check(tmp_path, src, opts: str, suffix: str, passes, streams: bool = True, env=None,
          display: int = 0):
    """In memory, then streamed with each of ROWS: the same values (bytes for NPY) and record.
    ``display``: the display statistics passes expected (each normalizes every band)."""
    out = tmp_path / f"out{suffix}"
    passes.update(add=0, apply=0)
    mem = run(src, out, opts, dict(env or {}))
    mem_values = values(out)
    assert passes == {"add": 0, "apply": 0}
    h = mem_values.shape[0]
    for rows in ROWS:
        passes.update(add=0, apply=0)
        streamed_equals(src, out, opts, suffix, rows, mem, mem_values, env)
        bands = -(-h // int(rows))
        expect = {"add": 2 * bands, "apply": bands * (1 + display)} if streams \
            else {"add": 0, "apply": 0}
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


#: --display specs and their statistics passes (sigma's second skipped when nothing is finite)
DISPLAYS = {"minmax": 1, "sigma": 2, "sigma:2": 2, "clip": 0, "clip255": 0}


def display_passes(spec: str, finite: bool = True) -> int:
    return min(DISPLAYS[spec], 1 if not finite else 2)


@pytest.mark.parametrize("spec", DISPLAYS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=lambda d: np.dtype(d).name)
def test_png_output_streamed_with_display(tmp_path, passes, small_blocks, spec, dtype):
    src = tmp_path / "in.npy"
    np.save(src, image(dtype, (19, 9, 3), seed=8))
    check(tmp_path, src, f"--op instance --gamma 2,1,0.5 --display {spec}", ".png", passes,
          display=display_passes(spec))


@pytest.mark.parametrize("spec", DISPLAYS)
def test_png_display_of_nan_inf_and_constant_planes(tmp_path, passes, small_blocks, spec):
    """A float32 TIFF: a NaN poisons channel 0, a huge gamma overflows channel 1 to +/-inf in
    places, channel 2 is constant (0 + beta); clipped counts differ from mapping to mapping."""
    import tifffile

    x = image(np.float32, (23, 7, 3), seed=9)
    x[5, 3, 0] = np.nan
    x[..., 2] = 7.0
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, x, photometric="rgb", rowsperstrip=3)
    check(tmp_path, src, f"--op instance --gamma 1,3e38,1 --beta 0,0,0.25 --display {spec}",
          ".png", passes, display=display_passes(spec))


@pytest.mark.parametrize("spec", DISPLAYS)
def test_png_display_of_all_nan_and_constant_images(tmp_path, passes, small_blocks, spec):
    """No finite value (minmax/sigma of nothing), and one constant image (-> 128)."""
    import tifffile

    src = tmp_path / "in.tif"
    x = image(np.float32, (11, 5, 3), seed=10)
    x[0, 0, :] = np.nan  # every channel poisoned: every result NaN
    tifffile.imwrite(src, x, photometric="rgb", rowsperstrip=2)
    check(tmp_path, src, f"--op layer --display {spec}", ".png", passes,
          display=display_passes(spec, finite=False))
    tifffile.imwrite(src, np.full((11, 5, 3), 3.0, np.float32), photometric="rgb",
                     rowsperstrip=2)
    check(tmp_path, src, f"--op layer --beta 0.5 --display {spec}", ".png", passes,
          display=display_passes(spec))


def test_png_display_grey_and_png_inputs(tmp_path, passes, small_blocks):
    """A grey 8-bit PNG in (layer norm), a 16-bit RGB PNG in (group norm)."""
    from PIL import Image

    from poolcli.imageio import write_image

    png = tmp_path / "in.png"
    Image.fromarray(image(np.uint8, (21, 13), seed=11)).save(png)
    check(tmp_path, png, "--op layer --display sigma:2", ".png", passes, display=2)
    png16 = tmp_path / "in16.png"
    write_image(str(png16), image(np.uint16, (18, 10, 3), seed=15), channels=("R", "G", "B"))
    check(tmp_path, png16, "--op group --groups 3 --display minmax", ".png", passes, display=1)


def test_png_display_real_blocks(tmp_path, passes):
    """The display's real (unpatched) row blocks of 2**18 values, several of them."""
    src = tmp_path / "in.npy"
    np.save(src, image(np.uint16, (700, 600, 2), seed=12))  # 840000 values: 4 display blocks
    check(tmp_path, src, "--op instance --display sigma", ".png", passes, display=2)


def test_png_display_threads(tmp_path, passes, small_blocks):
    src = tmp_path / "in.npy"
    np.save(src, image(np.uint8, (30, 9, 4), seed=13))
    for threads in ("1", "3"):
        check(tmp_path, src, "--op group --groups 2 --display sigma", ".png", passes,
              env={"POOLCLI_THREADS": threads}, display=2)


def test_what_still_runs_in_memory(tmp_path, passes):
    """JPEG (no band writer), a PNG of 5 channels (in memory says PNG cannot hold them):
    never streamed, the same outcome."""
    src = tmp_path / "in.npy"
    np.save(src, image(np.uint8, (10, 8, 3), seed=14))
    check(tmp_path, src, "--op instance", ".jpg", passes, streams=False)
    np.save(src, image(np.uint8, (10, 8, 5), seed=14))
    out = tmp_path / "out.png"
    for env in ({}, {"POOLCLI_STREAM_ROWS": "2"}):
        passes.update(add=0, apply=0)
        text = run(src, out, "--op instance", env, code=1)[1]
        assert "PNG stores 1-4 channels, not 5" in text and not out.exists()
        assert passes == {"add": 0, "apply": 0}


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


# ---- batch norm inference with stored statistics ---------------------------------------------


@pytest.fixture
def inferred(monkeypatch):
    """Bands normalized by the streamed batch-norm inference."""
    from poolcli.app.stream import norm as stream_norm

    seen = [0]
    apply = stream_norm._Inference.apply

    def counted(self, band, r0):
        seen[0] += 1
        return apply(self, band, r0)

    monkeypatch.setattr(stream_norm._Inference, "apply", counted)
    return seen


def fitted(tmp_path, channels: int = 3) -> str:
    """A statistics file fitted on three small images."""
    files = []
    for i in range(3):
        files.append(tmp_path / f"fit{i}.npy")
        np.save(files[-1], image(np.uint8, (6, 5, channels), seed=30 + i))
    stats = tmp_path / "stats.json"
    result = CliRunner().invoke(main, ["norm", "--op", "batch", "--fit", "--save-stats",
                                       str(stats), *map(str, files), "-q", "--force"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return str(stats)


def streamed_equals(src, out, opts, suffix, rows, mem, mem_values, env) -> None:
    """The run streamed with ``rows`` rows a band gives the in-memory run's record line, values
    (dtype and bytes) and, for NPY, file bytes."""
    st = run(src, out, opts, {**(env or {}), "POOLCLI_STREAM_ROWS": rows})
    assert st[1] == mem[1], (opts, rows)
    if suffix == ".npy":
        assert st[0] == mem[0], (opts, rows)
    got = values(out)
    assert got.dtype == mem_values.dtype and got.tobytes() == mem_values.tobytes()


def check_batch(tmp_path, src, opts: str, suffix: str, inferred, display: int = 0, env=None):
    """``check`` for ``--op batch --stats``: one pass (plus the display's) per band size."""
    out = tmp_path / f"out{suffix}"
    opts = f"--op batch --stats {fitted(tmp_path)} {opts}"
    inferred[0] = 0
    mem = run(src, out, opts, dict(env or {}))
    mem_values = values(out)
    assert inferred[0] == 0
    for rows in ROWS:
        inferred[0] = 0
        streamed_equals(src, out, opts, suffix, rows, mem, mem_values, env)
        assert inferred[0] == -(-mem_values.shape[0] // int(rows)) * (1 + display), (opts, rows)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("suffix", [".npy", ".tif"])
@pytest.mark.parametrize("opts", ["", "--running --gamma 2,1,0.5 --beta 0,1,-1"])
def test_batch_inference_streamed(tmp_path, inferred, small_blocks, dtype, suffix, opts):
    src = tmp_path / "in.npy"
    x = image(dtype, (17, 9, 3), seed=21)
    if np.dtype(dtype).kind == "f":
        x[4, 4, 1] = np.nan
    np.save(src, x)
    check_batch(tmp_path, src, opts, suffix, inferred)


@pytest.mark.parametrize("spec", DISPLAYS)
def test_batch_inference_to_png(tmp_path, inferred, small_blocks, spec):
    """A float32 TIFF with NaN and an overflow to inf (huge gamma): every display mapping."""
    import tifffile

    x = image(np.float32, (19, 7, 3), seed=22)
    x[3, 2, 0] = np.nan
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, x, photometric="rgb", rowsperstrip=4)
    check_batch(tmp_path, src, f"--gamma 1,3e38,1 --display {spec}", ".png", inferred,
                display=display_passes(spec))


def test_batch_inference_png_input_threads(tmp_path, inferred, small_blocks):
    from PIL import Image

    src = tmp_path / "in.png"
    Image.fromarray(image(np.uint8, (25, 11, 3), seed=23)).save(src)
    for threads in ("1", "3"):
        check_batch(tmp_path, src, "--display minmax", ".png", inferred, display=1,
                    env={"POOLCLI_THREADS": threads})


def test_batch_inference_errors_are_the_in_memory_ones(tmp_path, inferred):
    """Statistics of 3 channels for a 4-channel image: refused before any band, in memory's
    words; a JPEG output and -q runs still work (JPEG in memory)."""
    stats = fitted(tmp_path)
    src = tmp_path / "in.npy"
    np.save(src, image(np.uint8, (10, 8, 4), seed=24))
    out = tmp_path / "out.npy"
    opts = f"--op batch --stats {stats}"
    mem = run(src, out, opts, {}, code=1)[1]
    st = run(src, out, opts, {"POOLCLI_STREAM_ROWS": "2"}, code=1)[1]
    errors = [[line for line in text.splitlines() if '"error"' in line] for text in (mem, st)]
    assert errors[0] == errors[1] and len(errors[0]) == 1 and "channels" in errors[0][0]
    assert inferred[0] == 0 and not out.exists()
    np.save(src, image(np.uint8, (10, 8, 3), seed=24))
    mem = run(src, tmp_path / "o.jpg", opts, {})
    assert run(src, tmp_path / "o.jpg", opts, {"POOLCLI_STREAM_ROWS": "2"}) == mem
    assert inferred[0] == 0
