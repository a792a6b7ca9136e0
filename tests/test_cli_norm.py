"""`poolcli norm`: instance norm, batch-norm fitting and inference with a statistics file, and
one-line errors for bad statistics files."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import run
from poolcli import imageio


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
    # --running: inference with the running statistics equals BatchNorm2d in eval mode
    r = run("norm", "--op", "batch", "--stats", "s.json", "--running", "b3.png", "--format",
            "npy", "-q")
    assert r.exit_code == 0, r.output
    bn.eval()
    ref = bn(torch.from_numpy(imgs[3].astype(np.float64)).permute(2, 0, 1)[None])
    np.testing.assert_allclose(np.load("b3_batch.npy"), ref[0].permute(1, 2, 0).detach().numpy(),
                               rtol=1e-5, atol=1e-5)


def test_inference_uses_the_exact_statistics_of_the_fitted_set_by_default(workdir):
    """The tutorial: inference uses the mean and variance of the whole training set (running
    averages only when the set is too large). Fitted on three images of different sizes."""
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, shape, dtype=np.uint8)
            for shape in [(20, 30, 3), (31, 17, 3), (8, 8, 3)]]
    for i, a in enumerate(imgs):
        imageio.write_image(f"m{i}.png", a)
    r = run("norm", "--op", "batch", "--fit", "--save-stats", "s.json", "m0.png", "m1.png",
            "m2.png", "--batch-size", "2", "-q")
    assert r.exit_code == 0, r.output
    stats = json.load(open("s.json"))
    pixels = np.concatenate([a.reshape(-1, 3) for a in imgs]).astype(np.float64)
    np.testing.assert_allclose(stats["mean"], pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["var"], pixels.var(axis=0), rtol=1e-12)
    assert stats["images"] == 3 and stats["count"] == len(pixels)
    r = run("norm", "--op", "batch", "--stats", "s.json", "m1.png", "--format", "npy")
    assert r.exit_code == 0 and "exact statistics of 3 images" in r.output
    y = np.load("m1_batch.npy")
    ref = (imgs[1] - pixels.mean(axis=0)) / np.sqrt(pixels.var(axis=0) + 1e-5)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    r = run("norm", "--op", "batch", "--stats", "s.json", "--running", "m1.png", "--format",
            "npy", "--force")
    assert r.exit_code == 0 and "running statistics" in r.output
    assert not np.allclose(np.load("m1_batch.npy"), ref, atol=1e-2)  # PyTorch's, from 0 and 1


def test_running_without_stats_is_a_usage_error(workdir):
    r = run("norm", "--op", "batch", "--running", "chelsea.png")
    assert r.exit_code == 2 and "--running" in r.output
