"""CLI behaviour through click's CliRunner, plus one real run of the installed console script."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from poolcli import registry
from poolcli.cli import main
from poolcli.imageio import indexmap
from poolcli.ops import avg_pool2d, max_pool2d


def records(result):
    """JSON records of a --json run, without the final summary object."""
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert "summary" in lines[-1]
    return [rec for rec in lines if "summary" not in rec]


def run(*args):
    runner = CliRunner()
    return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_pool_writes_beside_input_and_matches_core(workdir):
    before = sha("chelsea.png")
    r = run("pool", "--op", "max", "-k", "3", "-s", "2", "-p", "1", "chelsea.png")
    assert r.exit_code == 0, r.output
    out = np.asarray(Image.open("chelsea_max.png"))
    ref = max_pool2d(np.asarray(Image.open("chelsea.png")), 3, 2, 1)
    np.testing.assert_array_equal(out, ref)
    assert sha("chelsea.png") == before
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
    r = run("pool", "chelsea.png")
    assert r.exit_code == 1 and "exists" in r.output
    assert run("pool", "chelsea.png", "--force").exit_code == 0
    before = sha("chelsea.png")
    r = run("pool", "chelsea.png", "-o", "chelsea.png", "--force")
    assert r.exit_code == 2 and "overwrite an input" in r.output
    assert sha("chelsea.png") == before


def test_bad_file_fails_alone_and_others_are_processed(workdir):
    open("broken.png", "wb").write(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    r = run("pool", "broken.png", "chelsea.png", "missing.png")
    assert r.exit_code == 1
    errors = [l for l in r.output.splitlines() if l.startswith("poolcli: error:")]
    assert len(errors) == 2
    assert any("broken.png" in e for e in errors) and any("missing.png" in e for e in errors)
    assert os.path.exists("chelsea_max.png")
    assert not os.path.exists("broken_max.png")
    assert not [f for f in os.listdir(".") if f.endswith(".part")]


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


def test_directory_input_and_output_directory(workdir):
    os.mkdir("in")
    shutil.copy("chelsea.png", "in/a.png")
    shutil.copy("camera.png", "in/b.png")
    open("in/notes.txt", "w").write("not an image")
    r = run("pool", "in", "-o", "deep/out")
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir("deep/out")) == ["a_max.png", "b_max.png"]
    assert "skipped 1" in r.output


def test_stats_command(workdir):
    r = run("stats", "camera.png", "--json")
    assert r.exit_code == 0
    rec = records(r)[0]
    x = np.asarray(Image.open("camera.png")).astype(np.float64)
    assert rec["stats_in"][0]["min"] == x.min() and rec["stats_in"][0]["max"] == x.max()
    assert rec["stats_in"][0]["zero_fraction"] == pytest.approx((x == 0).mean())


def test_ops_lists_every_registered_operator():
    r = run("ops")
    assert r.exit_code == 0
    for op in registry.OPERATORS:
        assert op.name in r.output and op.summary in r.output


def test_every_command_has_help():
    for name, cmd in main.commands.items():
        assert cmd.help, name
        r = run(name, "--help")
        assert r.exit_code == 0 and "Usage" in r.output


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and "poolcli" in r.output


def test_norm_instance_and_batch_stats_roundtrip(workdir):
    from poolcli.ops.norm import batch_norm

    r = run("norm", "--op", "instance", "chelsea.png", "--format", "npy", "-q")
    assert r.exit_code == 0
    y = np.load("chelsea_instance.npy")
    assert np.allclose(y.mean(axis=(0, 1)), 0, atol=1e-5)
    assert np.allclose(y.std(axis=(0, 1)), 1, atol=1e-3)
    shutil.copy("chelsea.png", "c2.png")
    img = np.asarray(Image.open("chelsea.png"))
    Image.fromarray(img[::-1].copy()).save("c3.png")
    r = run("norm", "--op", "batch", "--fit", "--save-stats", "s.json", "--batch-size", "2",
            "chelsea.png", "c2.png", "c3.png", "-q")
    assert r.exit_code == 0, r.output
    stats = json.load(open("s.json"))
    rm, rv = np.zeros(3), np.ones(3)
    batches = [np.stack([img, img]), np.stack([img[::-1]])]
    for b in batches:
        batch_norm(b.astype(np.float64), rm, rv, training=True, momentum=0.1)
    np.testing.assert_allclose(stats["running_mean"], rm, rtol=1e-12)
    np.testing.assert_allclose(stats["running_var"], rv, rtol=1e-12)
    r = run("norm", "--op", "batch", "--stats", "s.json", "camera.png")
    assert r.exit_code == 1 and "channels" in r.output
    r = run("norm", "--op", "batch", "--stats", "nope.json", "chelsea.png")
    assert r.exit_code == 2 and "nope.json" in r.output


def test_console_script_runs_as_a_real_process(workdir):
    exe = shutil.which("poolcli")
    cmd = [exe] if exe else [sys.executable, "-m", "poolcli"]
    p = subprocess.run(cmd + ["pool", "--op", "max", "-k", "2", "chelsea.png", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[0])["shape_out"] == [150, 225, 3]
    p = subprocess.run([sys.executable, "-m", "poolcli", "--version"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and "poolcli" in p.stdout
