"""CLI round trips for unpooling and the fancy operators."""

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from poolcli import imageio, indexmap
from poolcli.cli import main
import pathlib

SAMPLES = pathlib.Path(__file__).resolve().parent.parent / "sample_images"


def records(result):
    """JSON records of a --json run, without the final summary object."""
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert "summary" in lines[-1]
    return [rec for rec in lines if "summary" not in rec]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


SAMPLE_NAMES = sorted(p.name for p in SAMPLES.iterdir() if p.suffix == ".png")


@pytest.mark.parametrize("name", SAMPLE_NAMES)
@pytest.mark.parametrize("geometry", [["-k", "2"], ["-k", "3", "-s", "2", "-p", "1", "--ceil-mode"]])
def test_pool_then_unpool_restores_size_and_selected_values(tmp_path, monkeypatch, name, geometry):
    monkeypatch.chdir(tmp_path)
    shutil.copy(SAMPLES / name, name)
    r = run("pool", "--op", "max", *geometry, "--save-indices", name, "-q")
    assert r.exit_code == 0, r.output
    stem = os.path.splitext(name)[0]
    r = run("unpool", f"{stem}_max.png", "--indices", f"{stem}_max.indices.npz", "-o",
            "restored.png", "-q")
    assert r.exit_code == 0, r.output
    x = imageio.read_image(name).array
    y = imageio.read_image("restored.png").array
    assert y.shape == x.shape and y.dtype == x.dtype
    nz = y != 0
    np.testing.assert_array_equal(y[nz], x[nz])  # every non-zero cell is the input there
    if geometry == ["-k", "2"]:
        # non-overlapping 2x2: one cell per window survives (fewer if the winner is 0)
        assert (1 - nz.mean()) >= 1 - 1 / 4 - 1e-9


def test_unpool_errors_are_one_line(workdir):
    assert run("pool", "--save-indices", "chelsea.png", "-q").exit_code == 0
    r = run("unpool", "camera.png", "--indices", "chelsea_max.indices.npz")
    assert r.exit_code == 1 and "made for a 150x225" in r.output
    open("junk.npz", "wb").write(b"not a zip")
    r = run("unpool", "chelsea_max.png", "--indices", "junk.npz")
    assert r.exit_code == 1 and "junk.npz" in r.output and len(r.output.splitlines()) == 1
    np.savez("other.npz", a=np.zeros(3))
    r = run("unpool", "chelsea_max.png", "--indices", "other.npz")
    assert r.exit_code == 1 and "not a poolcli index map" in r.output
    r = run("unpool", "chelsea_max.png", "--indices", "missing.npz")
    assert r.exit_code == 1 and "missing.npz" in r.output


def test_unpool_accumulate_counts_overlaps(workdir):
    assert run("pool", "-k", "3", "-s", "1", "-p", "1", "--save-indices", "camera.png", "-q",
               "--format", "npy").exit_code == 0
    ones = np.ones((512, 512, 1), np.float64)
    np.save("ones.npy", ones)
    r = run("unpool", "ones.npy", "--indices", "camera_max.indices.npz", "--accumulate",
            "-o", "acc.npy", "-q")
    assert r.exit_code == 0, r.output
    acc = np.load("acc.npy")
    m = indexmap.load("camera_max.indices.npz")
    ref = np.bincount(m.indices.ravel(), minlength=512 * 512).reshape(512, 512, 1)
    np.testing.assert_array_equal(acc, ref)
    assert acc.sum() == 512 * 512


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
    assert a[0]["seed"] == 7 and a[0]["stream"] != a[1]["stream"]
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
    r = run("pool", "--op", op, "-k", "3", "chelsea.png", "--json", "-q")
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
