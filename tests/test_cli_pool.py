"""`poolcli pool`: results against the core, JSON records, per-file and usage errors, side files
(index maps, selection pictures), every pool operator from the command line, previews."""

import os

import numpy as np
import pytest
from PIL import Image

from helpers import digest, records, run
from poolcli import imageio, registry
from poolcli.imageio import indexmap
from poolcli.ops import avg_pool2d, max_pool2d


def test_pool_writes_beside_input_and_matches_core(workdir):
    before = digest("chelsea.png")
    r = run("pool", "--op", "max", "-k", "3", "-s", "2", "-p", "1", "chelsea.png")
    assert r.exit_code == 0, r.output
    out = np.asarray(Image.open("chelsea_max.png"))
    ref = max_pool2d(np.asarray(Image.open("chelsea.png")), 3, 2, 1)
    np.testing.assert_array_equal(out, ref)
    assert digest("chelsea.png") == before
    assert "std (population)" in r.output and "chelsea_max.png" in r.output


def test_pool_json_lines_parse_and_carry_the_documented_fields(workdir):
    r = run("pool", "--op", "max", "-k", "3", "-s", "2", "-p", "1", "--ceil-mode",
            "chelsea.png", "camera.png", "--json", "-o", "out")
    assert r.exit_code == 0
    lines = records(r)
    assert [rec["input"] for rec in lines] == ["chelsea.png", "camera.png"]
    rec = lines[0]
    for key in ("input", "output", "op", "params", "shape_in", "shape_out", "dtype_in",
                "dtype_out", "stats_in", "stats_out"):
        assert key in rec
    # ceil((300 + 2 - 3) / 2) + 1 = 151, ceil((451 + 2 - 3) / 2) + 1 = 226
    assert rec["shape_out"] == [151, 226, 3]
    assert rec["stats_in"][0]["channel"] == "R"
    x = np.asarray(Image.open("chelsea.png"))[..., 0].astype(np.float64)
    assert rec["stats_in"][0]["mean"] == pytest.approx(x.mean())
    assert rec["stats_in"][0]["std"] == pytest.approx(x.std())
    assert set(rec["stats_in"][0]) >= {"channel", "min", "max", "mean", "std", "zero_fraction"}


def test_avg_float_result_is_rounded_for_png_and_exact_in_npy(workdir):
    assert run("pool", "--op", "mean", "-k", "2", "chelsea.png").exit_code == 0
    assert run("pool", "--op", "avg", "-k", "2", "chelsea.png", "--format", "npy").exit_code == 0
    ref = avg_pool2d(np.asarray(Image.open("chelsea.png")), 2)
    np.testing.assert_array_equal(np.load("chelsea_avg.npy"), ref)
    png = np.asarray(Image.open("chelsea_avg.png"))
    np.testing.assert_array_equal(png, np.clip(np.rint(ref), 0, 255).astype(np.uint8))


def test_existing_output_needs_force_and_inputs_are_never_overwritten(workdir):
    assert run("pool", "chelsea.png").exit_code == 0
    r = run("pool", "chelsea.png")  # one exit status in every command: 2, before reading
    assert r.exit_code == 2 and "exists" in r.output and "--skip-existing" in r.output
    assert run("pool", "chelsea.png", "--force").exit_code == 0
    before = digest("chelsea.png")
    r = run("pool", "chelsea.png", "-o", "chelsea.png", "--force")
    assert r.exit_code == 2 and "overwrite an input" in r.output
    assert digest("chelsea.png") == before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["-k", "0"], "kernel"),
        (["-s", "0"], "stride"),
        (["-k", "2", "-p", "2"], "half the kernel"),
        (["-k", "abc"], "not N or HxW"),
        (["--op", "adaptive-avg", "--output-size", "0x3"], "output size"),
        (["--op", "lp", "--norm-type", "-1"], "must be >"),
        (["--op", "nope"], "nope"),
        (["--op", "avg", "--save-indices"], "does not select"),
    ],
)
def test_bad_parameters_are_usage_errors_before_reading(workdir, args, needle):
    r = run("pool", *args, "does-not-exist.png")
    assert r.exit_code == 2
    assert needle in r.output
    assert "does-not-exist" not in r.output  # nothing was read


def test_kernel_larger_than_image_fails_that_file(workdir):
    Image.fromarray(np.zeros((2, 2), np.uint8)).save("tiny.png")
    r = run("pool", "-k", "5", "tiny.png", "chelsea.png")
    assert r.exit_code == 1 and "tiny.png" in r.output and "output size is too small" in r.output
    assert os.path.exists("chelsea_max.png")


def test_save_indices_writes_a_self_describing_map(workdir):
    r = run("pool", "--op", "max", "-k", "3", "-s", "2", "-p", "1", "--save-indices",
            "chelsea.png")
    assert r.exit_code == 0
    m = indexmap.load("chelsea_max.indices.npz")
    x = np.asarray(Image.open("chelsea.png"))
    _, ref = max_pool2d(x, 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(m.indices, ref)
    assert m.meta["input_shape"] == [300, 451, 3]
    assert m.meta["kernel"] == [3, 3] and m.meta["stride"] == [2, 2]
    assert m.meta["operator"] == "max" and m.meta["source"] == "chelsea.png"
    # the same encoding PyTorch uses: index -> value in the input plane
    flat = x.reshape(-1, 3)
    vals = np.asarray(Image.open("chelsea_max.png"))
    for c in range(3):
        np.testing.assert_array_equal(flat[m.indices[..., c], c], vals[..., c])


def test_stochastic_seed_is_reproducible_and_reported(workdir):
    def once(*extra):
        r = run("pool", "--op", "stochastic", "-k", "3", "chelsea.png", "camera.png", "--json",
                "-q", "--force", *extra)
        assert r.exit_code == 0, r.output
        return records(r)

    a = once("--seed", "7")
    img_a = imageio.read_image("chelsea_stochastic.png").array
    b = once("--seed", "7")
    img_b = imageio.read_image("chelsea_stochastic.png").array
    np.testing.assert_array_equal(img_a, img_b)
    assert a[0]["seed"] == 7 and a[1]["seed"] != 7  # the first image gets the seed itself
    assert all(0 <= r["seed"] < 2**53 for r in a)  # exact in any JSON reader
    c = once()
    seed = c[0]["seed"]
    img_c = imageio.read_image("chelsea_stochastic.png").array
    once("--seed", seed)
    np.testing.assert_array_equal(imageio.read_image("chelsea_stochastic.png").array, img_c)


def test_kmax_and_dynamic_k(workdir):
    r = run("pool", "--op", "kmax", "--k", "10", "--axis", "h", "camera.png", "--json", "-q")
    assert records(r)[0]["shape_out"] == [10, 512, 1]
    r = run("pool", "--op", "kmax", "--k-top", "3", "--layer", "1", "--layers", "3",
            "camera.png", "--json", "-q", "--force")
    rec = records(r)[0]
    assert rec["k"] == 342 and rec["shape_out"] == [512, 342, 1]  # ceil(2/3 * 512)


@pytest.mark.parametrize("op", ["sort", "mixed", "softpool", "gem", "lse", "blur", "lp", "gap",
                                "gmp", "adaptive-avg", "adaptive-max", "min", "avg"])
def test_every_pool_operator_runs_from_the_cli(workdir, op):
    kernel = ["-k", "3"] if "kernel" in registry.get(op).params else []
    r = run("pool", "--op", op, *kernel, "chelsea.png", "--json", "-q")
    assert r.exit_code == 0, r.output
    rec = records(r)[0]
    assert os.path.exists(rec["output"])


def test_preview_on_pool_norm_and_never_with_json(workdir):
    r = run("pool", "-k", "8", "camera.png", "--preview", "always", "-q")
    assert r.exit_code == 0 and "\u2580" in r.stderr and "\x1b[38;2;" in r.stderr
    r = run("norm", "camera.png", "--preview", "always", "-q", "-o", "n")
    assert r.exit_code == 0 and "\u2580" in r.stderr
    r = run("pool", "-k", "8", "camera.png", "--preview", "always", "--json", "--force")
    assert r.exit_code == 0 and "\u2580" not in r.stderr + r.stdout
    r = run("pool", "-k", "8", "camera.png", "--preview", "--force", "-q")  # auto: not a tty
    assert r.exit_code == 0 and "\u2580" not in r.stderr


def test_indices_png_keeps_only_selected_cells(workdir):
    r = run("pool", "-k", "2", "--indices-png", "chelsea.png", "-q")
    assert r.exit_code == 0, r.output
    pic = imageio.read_image("chelsea_max.selected.png").array
    x = imageio.read_image("chelsea.png").array
    assert pic.shape == x.shape
    kept = pic != 0
    np.testing.assert_array_equal(pic[kept], x[kept])
    assert 0.2 < kept.mean() <= 0.25  # one cell per 2x2 window (fewer where the max is 0)
    r = run("pool", "--op", "avg", "--indices-png", "chelsea.png")
    assert r.exit_code == 2


# ------------------------------------------------------------------------------------------------
# 16-bit into 8-bit formats, seeds, options that would be ignored
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpg", "webp", "bmp"])
def test_16_bit_into_an_8_bit_format_is_scaled_not_clipped(tmp_path, monkeypatch, fmt):
    monkeypatch.chdir(tmp_path)
    ramp = np.linspace(0, 65535, 40)[None, :, None] * np.linspace(0.2, 1, 32)[:, None, None]
    x = (ramp * np.array([1.0, 0.7, 0.4])).astype(np.uint16)  # smooth: lossy codecs stay close
    imageio.write_image("c16.png", x)
    r = run("pool", "--op", "max", "c16.png", "--format", fmt, "--json", "-q", "--quality", "100")
    assert r.exit_code == 0, r.output
    rec = records(r)[0]
    assert any("x/257" in n for n in rec["notes"])
    got = imageio.read_image(rec["output"]).array.astype(np.float64)
    expected = np.rint(max_pool2d(x, 2) / 257.0)  # what ImageMagick, vips and Pillow do
    tolerance = 0 if fmt == "bmp" else 8  # lossy codecs, even at quality 100
    assert np.abs(got - expected).mean() <= tolerance / 4
    assert np.abs(got - expected).max() <= tolerance
    assert got.mean() < 250  # the bug: a white picture


def test_float_average_of_16_bit_into_jpeg_is_scaled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x = np.full((8, 8, 1), 30000, np.uint16)
    imageio.write_image("g16.png", x)
    r = run("pool", "--op", "avg", "g16.png", "--format", "bmp", "-q")
    assert r.exit_code == 0
    got = imageio.read_image("g16_avg.bmp").array
    assert np.all(got == round(30000 / 257))


def test_a_seed_from_a_record_repeats_that_image_alone_under_any_name(workdir):
    r = run("pool", "--op", "stochastic", "-k", "3", "chelsea.png", "camera.png", "-o", "a",
            "--json", "-q")
    seeds = {x["input"]: x["seed"] for x in records(r)}
    assert len(set(seeds.values())) == 2 and all(s < 2**53 for s in seeds.values())
    os.rename("camera.png", "renamed.png")
    r = run("pool", "--op", "stochastic", "-k", "3", "renamed.png", "--seed",
            seeds["camera.png"], "-o", "b.png", "-q")
    assert r.exit_code == 0
    assert digest("b.png") == digest("a/camera_stochastic.png")
    # -q still tells the drawn seed (without it nothing could be repeated)
    r = run("pool", "--op", "stochastic", "chelsea.png", "-o", "c.png", "-q")
    assert "repeat the run with --seed" in r.stderr


@pytest.mark.parametrize("op, args, option", [
    ("kmax", ["-k", "4"], "-k"), ("gap", ["-s", "2"], "-s"), ("avg", ["--dilation", "2"],
                                                                 "--dilation"),
    ("max", ["--weights", "1,0"], "--weights"), ("stochastic", ["--gem-p", "2"], "--gem-p"),
])
def test_an_option_the_operator_does_not_use_is_a_usage_error(workdir, op, args, option):
    r = run("pool", "--op", op, *args, "chelsea.png")
    assert r.exit_code == 2 and option in r.output and f"--op {op}" in r.output
    assert not os.path.exists(f"chelsea_{op}.png")


def test_help_shows_pair_defaults_as_one_number_and_blur_stride(workdir):
    text = run("pool", "--help").output
    assert "[default: 2]" in text and "2, 2" not in text
    assert "blur: 2" in text


def test_verbose_adds_the_traceback_to_a_decode_error_too(workdir):
    open("bad.png", "wb").write(b"garbage")
    r = run("pool", "bad.png")
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    r = run("pool", "bad.png", "-v")
    assert r.exit_code == 1 and r.stderr.startswith("poolcli: error: bad.png: not an image")
    assert "Traceback (most recent call last)" in r.stderr and "read_image" in r.stderr


def test_logs_keep_one_path_per_line_and_the_batch_norm_summary_unwrapped(tmp_path,
                                                                          monkeypatch):
    """Not a terminal (a log, a pipe): a long path is one line, never wrapped at the table's
    width; the batch-norm caption likewise (it wrapped at 24 columns)."""
    monkeypatch.chdir(tmp_path)
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    img = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    imageio.write_image(deep / "picture.png", img)
    imageio.write_image(deep / "other.png", img[::-1])
    r = run("pool", str(deep / "picture.png"), "-o", "out")
    assert r.exit_code == 0
    title = f"{deep / 'picture.png'} → out/picture_max.png"
    assert title in r.stdout.splitlines()
    r = run("norm", "--op", "batch", "--fit", "--save-stats", "s.json", str(deep / "picture.png"),
            str(deep / "other.png"))
    assert r.exit_code == 0
    caption = [line for line in r.stdout.splitlines() if line.startswith("momentum 0.1;")]
    assert len(caption) == 1 and caption[0].count(", ") == 2  # three channels, one line
