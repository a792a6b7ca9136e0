"""`poolcli compare`: the sheet's layout, tiles and labels, naming and --force, usage errors,
failed operator tiles, the preview."""

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from helpers import SAMPLE_PNGS, SAMPLES, digest, run
from poolcli import visual
from poolcli.imageio import read_image
from poolcli.ops import max_pool2d


DEFAULT_OPS = ["max", "avg", "min", "stochastic", "sort", "lp"]


SELECTING_DEFAULT = ["max", "min", "stochastic"]


def first_json(output: str) -> dict:
    """The sheet record (the line after it, if any, is the session summary)."""
    return json.loads(output.splitlines()[0])


def nearest(img, th, tw):
    """Independent nearest-neighbour sampling at cell centres (the sheet's documented rule)."""
    h, w = img.shape[:2]
    rows = np.minimum(np.floor((np.arange(th) + 0.5) * h / th).astype(int), h - 1)
    cols = np.minimum(np.floor((np.arange(tw) + 0.5) * w / tw).astype(int), w - 1)
    return img[rows][:, cols]


def expected_display(x):
    """What an input tile must show: 16-bit / 257, alpha over grey 128, grey as grey."""
    v = np.rint(x / 257.0) if x.dtype == np.uint16 else x.astype(np.float64)
    c = x.shape[2]
    if c == 4:
        a = v[..., 3:] / 255.0
        v = np.rint(v[..., :3] * a + 128 * (1 - a))
    elif c == 1:
        v = np.repeat(v, 3, axis=2)
    return v.astype(np.uint8)


@pytest.mark.parametrize("name", SAMPLE_PNGS)
def test_compare_on_each_sample_writes_the_documented_sheet(name, tmp_path):
    out = tmp_path / "sheet.png"
    r = run("compare", SAMPLES / name, "--seed", "0", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    rec = first_json(r.stdout)
    x = read_image(SAMPLES / name).array
    h, w, c = x.shape

    # Tiles: original, the six default operators, then the three selecting ones' cell maps.
    kinds = [t["kind"] for t in rec["tiles"]]
    assert kinds == ["original"] + ["op"] * 6 + ["selection"] * 3
    assert [t["op"] for t in rec["tiles"][1:7]] == DEFAULT_OPS
    assert [t["op"] for t in rec["tiles"][7:]] == SELECTING_DEFAULT
    labels = [t["label"] for t in rec["tiles"]]
    assert labels[0][0] == name
    assert labels[0][1].startswith(f"{h}x{w} ")
    for op, label in zip(DEFAULT_OPS, labels[1:7]):
        assert label[0].split()[0] == op
        assert "k=4 s=4" in label[0]
        assert label[1].startswith(f"{math.floor(h / 4)}x{math.floor(w / 4)}  mean ")
        assert " std " in label[1]
    assert "seed=0" in labels[4][0]  # stochastic reports its seed
    assert labels[7][0] == "max: selected cells"
    assert labels[9][0] == "stochastic: selected cells seed=0"
    if c == 4:
        assert "alpha on grey" in labels[0][1]
    if x.dtype == np.uint16:
        assert "16-bit shown /257" in labels[0][1]

    # Size: 10 tiles -> 2 rows of 5; every sample is landscape or square, so cells are 256 wide.
    assert rec["cols"] == 5 and rec["tile_size"] == 256
    th = round(256 * h / w)
    label_h = visual.label_height(256)
    assert label_h == 3 * 18 + 8  # 14 px font, 18 px lines, 4 px padding above and below
    width = 2 * visual.MARGIN + 5 * 256 + 4 * visual.GAP
    height = 2 * visual.MARGIN + 2 * (th + label_h) + visual.GAP
    assert width == 1336
    with Image.open(out) as im:
        assert im.mode == "RGB"
        assert im.size == (width, height) == tuple(rec["size"])
        sheet = np.asarray(im)
    if name == "chelsea.png":
        assert (width, height) == (1336, 496)

    # Boxes: inside the sheet, the image's tile box, the original tile is the input itself.
    for t in rec["tiles"]:
        bx, by, bw, bh = t["box"]
        assert (bh, bw) == (th, 256)
        assert 0 <= bx and bx + bw <= width and 0 <= by and by + bh <= height
    bx, by, bw, bh = rec["tiles"][0]["box"]
    crop = sheet[by:by + bh, bx:bx + bw]
    np.testing.assert_array_equal(crop, nearest(expected_display(x), bh, bw))
    if c == 1:
        assert (crop[..., 0] == crop[..., 1]).all() and (crop[..., 1] == crop[..., 2]).all()
    if x.dtype == np.uint8 and c == 3:  # a pooled tile: crisp nearest-neighbour blocks
        bx, by, bw, bh = rec["tiles"][1]["box"]
        np.testing.assert_array_equal(sheet[by:by + bh, bx:bx + bw],
                                      nearest(max_pool2d(x, 4), bh, bw))


def test_compare_several_images_cols_title_and_diff(tmp_path):
    out = tmp_path / "s.png"
    r = run("compare", SAMPLES / "chelsea.png", SAMPLES / "camera.png", "--ops", "max,avg",
            "--diff", "avg", "--no-selection", "--cols", "2", "--title", "Max vs avg", "-k", "2",
            "-o", out, "--json")
    assert r.exit_code == 0, r.output
    rec = first_json(r.stdout)
    # Per image: original, max, avg, |max - avg| -> 2 rows of 2; each image starts a new row.
    assert [(t["image"], t["kind"]) for t in rec["tiles"]] == [
        (i, k) for i in (0, 1) for k in ("original", "op", "op", "diff")]
    diff = rec["tiles"][3]
    assert diff["label"][0] == "|max - avg|"
    assert diff["label"][2] == "contrast stretched per tile"
    assert diff["max_diff"] > 0
    label_h = visual.label_height(256)
    title_h = visual.title_height(256, True)
    chelsea_rows = 2 * (170 + label_h) + visual.GAP
    camera_rows = 2 * (256 + label_h) + visual.GAP
    width = 2 * visual.MARGIN + 2 * 256 + visual.GAP
    height = 2 * visual.MARGIN + title_h + chelsea_rows + visual.IMAGE_GAP + camera_rows
    assert (width, height) == (544, 24 + 34 + 472 + 20 + 644)
    with Image.open(out) as im:
        assert im.size == (width, height) == tuple(rec["size"])
        sheet = np.asarray(im)
    # Max >= avg everywhere, so the stretched difference reaches white and never goes negative.
    bx, by, bw, bh = diff["box"]
    assert sheet[by:by + bh, bx:bx + bw].max() == 255
    # The camera row starts below the whole chelsea block.
    assert rec["tiles"][4]["box"][1] == visual.MARGIN + title_h + chelsea_rows + visual.IMAGE_GAP


def test_compare_default_name_force_and_inputs_are_never_overwritten(workdir):
    before = digest("chelsea.png")
    r = run("compare", "chelsea.png", "--ops", "max", "--seed", "1")
    assert r.exit_code == 0, r.output
    assert (workdir / "chelsea_compare.png").exists()
    assert "chelsea_compare.png" in r.stdout
    again = run("compare", "chelsea.png", "--ops", "max")
    assert again.exit_code == 2 and "--force" in again.output
    assert run("compare", "chelsea.png", "--ops", "max", "--force").exit_code == 0
    for target in ("chelsea.png", "camera.png"):
        r = run("compare", "chelsea.png", "camera.png", "--ops", "max", "-o", target, "--force")
        assert r.exit_code == 2 and "never overwritten" in r.output
    assert digest("chelsea.png") == before


def test_compare_usage_errors(workdir):
    r = run("compare", "chelsea.png", "--ops", "max,nope")
    assert r.exit_code == 2 and "nope" in r.output and "stochastic" in r.output
    r = run("compare", "chelsea.png", "--ops", "max,min", "--diff", "avg")
    assert r.exit_code == 2 and "not in --ops" in r.output
    r = run("compare", "chelsea.png", "-k", "2", "-p", "2")
    assert r.exit_code == 2 and "half the kernel" in r.output
    r = run("compare", "chelsea.png", "-o", "sheet.xyz")
    assert r.exit_code == 2


def test_compare_norm_ops_and_failed_operator_tile(workdir):
    # blur kernels are 1..7: an image-independent problem is a usage error before reading.
    r = run("compare", "camera.png", "--ops", "max,blur", "-k", "8", "-o", "s.png")
    assert r.exit_code == 2 and "1..7" in r.output and not os.path.exists("s.png")
    # stochastic pooling refuses negative input: its tile becomes a placeholder, the others
    # still appear, and the run exits 1.
    x = np.linspace(-1, 1, 64 * 48).reshape(64, 48).astype(np.float32)
    np.save("signed.npy", x)
    r = run("compare", "signed.npy", "--ops", "max,stochastic,instance", "-k", "4", "--json",
            "-o", "s.png")
    assert r.exit_code == 1
    rec = first_json(r.stdout)
    kinds = {t.get("op"): t["kind"] for t in rec["tiles"] if t["kind"] != "selection"}
    assert kinds == {None: "original", "max": "op", "stochastic": "error", "instance": "op"}
    inst = next(t for t in rec["tiles"] if t.get("op") == "instance")
    assert abs(inst["mean"]) < 1e-3 and inst["std"] == pytest.approx(1, abs=1e-3)
    assert "stochastic" in r.stderr and "non-negative" in r.stderr


def test_compare_preview_on_stderr_but_never_with_json(workdir):
    r = run("compare", "camera.png", "--ops", "max", "--preview", "always", "-o", "a.png")
    assert r.exit_code == 0
    assert "\x1b[38;2;" in r.stderr and "▀" in r.stderr and "\x1b[" not in r.stdout
    r = run("compare", "camera.png", "--ops", "max", "--preview", "always", "--json",
            "-o", "b.png")
    assert r.exit_code == 0
    assert "\x1b[" not in r.output
    # auto: CliRunner's streams are not terminals
    r = run("compare", "camera.png", "--ops", "max", "-o", "c.png")
    assert "\x1b[" not in r.output
