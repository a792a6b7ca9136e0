"""`poolcli unpool`: pool -> unpool round trips on every sample, --accumulate, one-line errors."""

import os
import shutil

import numpy as np
import pytest

from helpers import SAMPLE_PNGS, SAMPLES, run
from poolcli import imageio
from poolcli.imageio import indexmap


@pytest.mark.parametrize("name", SAMPLE_PNGS)
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
    r = run("unpool", "chelsea_max.png", "--indices", "junk.npz")  # a bad side file: exit 2
    assert r.exit_code == 2 and "junk.npz" in r.output and len(r.output.splitlines()) == 1
    np.savez("other.npz", a=np.zeros(3))
    r = run("unpool", "chelsea_max.png", "--indices", "other.npz")
    assert r.exit_code == 2 and "not a poolcli index map" in r.output
    r = run("unpool", "chelsea_max.png", "--indices", "missing.npz")
    assert r.exit_code == 2 and "missing.npz" in r.output


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
