"""CLI round trips for unpooling and the fancy operators."""

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from poolcli import imageio, registry
from poolcli.cli import main
from poolcli.imageio import indexmap
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


def test_malformed_stats_files_are_one_line_errors(workdir):
    open("bad.json", "w").write("{not json")
    json.dump({"format": "poolcli-batchnorm-stats", "running_mean": [1, 2, 3]}, open("x.json", "w"))
    for f in ("bad.json", "x.json"):
        r = run("norm", "--op", "batch", "--stats", f, "chelsea.png")
        assert r.exit_code == 2 and f in r.output
    r = run("norm", "--op", "batch", "chelsea.png", "camera.png")
    assert r.exit_code == 1 and "camera.png" in r.output and "one shape" in r.output
    assert os.path.exists("chelsea_batch.png")  # the others are still normalized


def test_fit_reproduces_pytorch_running_statistics(workdir):
    torch = pytest.importorskip("torch")
    x = imageio.read_image("chelsea.png").array
    imgs = [x, x[::-1].copy(), x[:, ::-1].copy(), (x // 2).astype(np.uint8), x]
    for i, a in enumerate(imgs):
        imageio.write_image(f"b{i}.png", a)
    r = run("norm", "--op", "batch", "--fit", "--save-stats", "s.json", "--batch-size", "2",
            "--momentum", "0.3", *[f"b{i}.png" for i in range(5)], "-q")
    assert r.exit_code == 0, r.output
    stats = json.load(open("s.json"))
    bn = torch.nn.BatchNorm2d(3, momentum=0.3).double().train()
    for chunk in ([0, 1], [2, 3], [4]):
        t = torch.from_numpy(np.stack([imgs[i] for i in chunk]).astype(np.float64))
        bn(t.permute(0, 3, 1, 2))
    np.testing.assert_allclose(stats["running_mean"], bn.running_mean.numpy(), rtol=1e-10)
    np.testing.assert_allclose(stats["running_var"], bn.running_var.numpy(), rtol=1e-10)
    assert stats["num_batches_tracked"] == int(bn.num_batches_tracked)
    # inference with the stored statistics equals BatchNorm2d in eval mode
    r = run("norm", "--op", "batch", "--stats", "s.json", "b3.png", "--format", "npy", "-q")
    assert r.exit_code == 0, r.output
    bn.eval()
    ref = bn(torch.from_numpy(imgs[3].astype(np.float64)).permute(2, 0, 1)[None])
    np.testing.assert_allclose(np.load("b3_batch.npy"), ref[0].permute(1, 2, 0).detach().numpy(),
                               rtol=1e-5, atol=1e-5)
