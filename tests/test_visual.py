"""Pictures and worked examples: `poolcli compare`, terminal previews, `poolcli explain`."""

import hashlib
import io
import json
import math
import pathlib

import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from poolcli import registry, visual
from poolcli.cli import main
from poolcli.app.sheet import auto_cols
from poolcli.explain import explain, parse_values, render_plain, render_rich
from poolcli.imageio import read_image
from poolcli.ops import max_pool2d, max_unpool2d


SAMPLES = pathlib.Path(__file__).resolve().parent.parent / "sample_images"
SAMPLE_FILES = sorted(p.name for p in SAMPLES.glob("*.png"))
DEFAULT_OPS = ["max", "avg", "min", "stochastic", "sort", "lp"]
SELECTING_DEFAULT = ["max", "min", "stochastic"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def first_json(output: str) -> dict:
    """The sheet record (the line after it, if any, is the session summary)."""
    return json.loads(output.splitlines()[0])


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


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


# ----------------------------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_FILES)
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
    before = sha("chelsea.png")
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
    assert sha("chelsea.png") == before


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


def test_auto_cols_balances_rows():
    assert [auto_cols(n) for n in (1, 4, 6, 7, 10, 12, 15, 23)] == [1, 4, 6, 4, 5, 6, 5, 6]


# ----------------------------------------------------------------------------------------------
# selection picture, resizing
# ----------------------------------------------------------------------------------------------


def test_selection_picture_by_hand():
    x = np.array([[[1, 10], [5, 50]],
                  [[7, 70], [2, 20]]], dtype=np.uint8)  # 2x2, two channels
    idx = np.array([[[2, 1]]])  # channel 0 picked (1,0), channel 1 picked (0,1)
    pic = visual.selection_picture(x, idx, (1, 1))
    assert pic.dtype == np.uint8
    assert pic[..., 0].tolist() == [[0, 0], [7, 0]]
    assert pic[..., 1].tolist() == [[0, 50], [0, 0]]
    # out-of-plane indices (windows wholly in the padding) are ignored
    assert visual.selection_picture(x[..., :1], np.array([[4]])).sum() == 0


def test_selection_picture_equals_max_unpool_of_the_pooled_values():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 255, size=(9, 11, 3), dtype=np.uint8)
    values, idx = max_pool2d(x, 3, 2, 1, return_indices=True)
    expected = max_unpool2d(values, idx, 3, 2, 1, output_size=(9, 11))
    np.testing.assert_array_equal(visual.selection_picture(x, idx), expected)


def test_resize_max_keeps_sparse_pixels_visible():
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    img[5, 6] = 200
    small = visual.resize_max(img, (2, 2))
    assert small[1, 1].tolist() == [200, 200, 200] and small.sum() == 600
    assert visual.resize_nearest(img, (2, 2)).sum() == 0  # what plain sampling would show


# ----------------------------------------------------------------------------------------------
# terminal preview
# ----------------------------------------------------------------------------------------------

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
BLACK, GREY, YELLOW, DARK = (0, 0, 0), (128, 128, 128), (255, 255, 0), (1, 2, 3)
FOUR_BY_TWO = np.array([[RED, GREEN, BLUE, WHITE],
                        [BLACK, GREY, YELLOW, DARK]], dtype=np.uint8)  # 4 wide, 2 tall


def test_halfblocks_4x2_exact():
    expected = (
        "\x1b[38;2;255;0;0m\x1b[48;2;0;0;0m▀"
        "\x1b[38;2;0;255;0m\x1b[48;2;128;128;128m▀"
        "\x1b[38;2;0;0;255m\x1b[48;2;255;255;0m▀"
        "\x1b[38;2;255;255;255m\x1b[48;2;1;2;3m▀"
        "\x1b[0m"
    )
    assert visual.render_halfblocks(FOUR_BY_TWO, 4) == expected


def test_halfblocks_downscale_samples_cell_centres():
    # width 2 -> 1 pixel row (2 * 2 / 4); sampled at centres: row 1, columns 1 and 3;
    # one pixel row only: foreground set, the lower half keeps the terminal background.
    assert visual.render_halfblocks(FOUR_BY_TWO, 2) == (
        "\x1b[38;2;128;128;128m▀\x1b[38;2;1;2;3m▀\x1b[0m")


def test_halfblocks_grey_odd_height():
    grey = np.array([[10, 20], [30, 40], [50, 60]], dtype=np.uint8)[:, :, None]
    assert visual.render_halfblocks(grey, 2) == (
        "\x1b[38;2;10;10;10m\x1b[48;2;30;30;30m▀\x1b[38;2;20;20;20m\x1b[48;2;40;40;40m▀"
        "\x1b[0m\n"
        "\x1b[38;2;50;50;50m▀\x1b[38;2;60;60;60m▀\x1b[0m")


def test_halfblocks_rejects_bad_input():
    with pytest.raises(TypeError, match="uint8"):
        visual.render_halfblocks(FOUR_BY_TWO.astype(np.float32), 4)
    with pytest.raises(ValueError, match="width"):
        visual.render_halfblocks(FOUR_BY_TWO, 0)


class FakeStream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("mode, tty, env, shown", [
    ("auto", True, {}, True),
    ("auto", True, {"NO_COLOR": "1"}, False),
    ("auto", True, {"NO_COLOR": ""}, True),  # no-color.org: only a non-empty value counts
    ("auto", True, {"TERM": "dumb"}, False),
    ("auto", False, {}, False),
    ("always", False, {"NO_COLOR": "1"}, True),
    ("never", True, {}, False),
])
def test_preview_enabled_rules(mode, tty, env, shown):
    assert visual.preview_enabled(mode, FakeStream(tty), env) is shown


def test_preview_enabled_rejects_unknown_mode_and_odd_streams():
    with pytest.raises(ValueError, match="auto, always, never"):
        visual.preview_enabled("sometimes", FakeStream(True), {})
    assert visual.preview_enabled("auto", object(), {}) is False


def show_preview(array, mode, *, as_json=False, stream=None, **kw):
    """The CLI's preview: never with --json (the reporter), else :func:`visual.draw_preview`."""
    return False if as_json else visual.draw_preview(array, mode, stream, **kw)


def test_show_preview_prints_to_the_stream_and_never_with_json():
    stream = FakeStream(True)
    assert show_preview(FOUR_BY_TWO, "always", as_json=True, stream=stream) is False
    assert stream.getvalue() == ""
    assert show_preview(FOUR_BY_TWO, "always", as_json=False, width=4, stream=stream)
    assert stream.getvalue() == visual.render_halfblocks(FOUR_BY_TWO, 4) + "\n"
    # float results on an 8-bit scale (average pooling) and signed ones (normalization)
    stream = FakeStream(False)
    assert show_preview(FOUR_BY_TWO.astype(np.float32) / 2, "always", as_json=False,
                        source_dtype=np.uint8, width=4, stream=stream)
    # red / 2 = 127.5 rounds half to even -> 128; grey / 2 = 64
    assert stream.getvalue().startswith(
        "\x1b[38;2;128;0;0m\x1b[48;2;0;0;0m▀\x1b[38;2;0;128;0m\x1b[48;2;64;64;64m▀")
    stream = FakeStream(False)
    assert show_preview(np.linspace(-1, 1, 8).reshape(2, 4), "always", as_json=False,
                        stream=stream)
    lines = stream.getvalue().splitlines()
    assert [line.count("▀") for line in lines] == [16] * 4  # tiny results: 16 columns


# ----------------------------------------------------------------------------------------------
# explain
# ----------------------------------------------------------------------------------------------

VALUES = "1,3,2,1;5,6,1,7;0,2,9,4;8,3,4,4"

# Hand-worked: max pooling 2x2, stride 2 of
#   1 3 2 1
#   5 6 1 7
#   0 2 9 4
#   8 3 4 4
# window (0,0) {1,3,5,6} -> 6 at (1,1), flat 1*4+1 = 5;  window (0,1) {2,1,1,7} -> 7 at (1,3) = 7
# window (1,0) {0,2,8,3} -> 8 at (3,0) = 12;             window (1,1) {9,4,4,4} -> 9 at (2,2) = 10
EXPECTED_MAX = """\
input (4x4); [v] = selected by a window, | and - separate the windows:
     0   1 | 2   3
  0  1   3 | 2   1
  1  5  [6]| 1  [7]
    -------+-------
  2  0   2 |[9]  4
  3 [8]  3 | 4   4

windows:
  window (0,0): rows 0-1, cols 0-1: max(1, 3, 5, 6) = 6 at (1,1) -> index 5
  window (0,1): rows 0-1, cols 2-3: max(2, 1, 1, 7) = 7 at (1,3) -> index 7
  window (1,0): rows 2-3, cols 0-1: max(0, 2, 8, 3) = 8 at (3,0) -> index 12
  window (1,1): rows 2-3, cols 2-3: max(9, 4, 4, 4) = 9 at (2,2) -> index 10

output (2x2):
     0   1
  0  6   7
  1  8   9

indices (flat h*W + w with W = 4; output cell -> input cell):
      0    1
  0   5    7
  1  12   10

unpooled (max_unpool2d, 4x4): selected values in place, 0 elsewhere:
     0   1   2   3
  0  0   0   0   0
  1  0  [6]  0  [7]
  2  0   0  [9]  0
  3 [8]  0   0   0
"""


def test_explain_max_2x2_plain_matches_hand_worked_example():
    r = run("explain", "--op", "max", "-k", "2", "-s", "2", "--values", VALUES, "--plain")
    assert r.exit_code == 0, r.output
    head, _, body = r.stdout.partition("\n\ninput")
    assert head.splitlines()[0].startswith("max: ")
    assert "kernel 2x2, stride 2x2, padding 0x0, dilation 1x1, floor mode: 4x4 input -> " \
           "2x2 output" in head
    assert "input" + body == EXPECTED_MAX
    # the library view of the same example
    e = explain(parse_values(VALUES), "max", {"kernel": (2, 2), "stride": (2, 2)})
    assert e.output.tolist() == [[6, 7], [8, 9]]
    assert e.indices.tolist() == [[5, 7], [12, 10]]
    assert e.selected == [(1, 1), (1, 3), (2, 2), (3, 0)]
    assert e.unpooled.tolist() == [[0, 0, 0, 0], [0, 6, 0, 7], [0, 0, 9, 0], [8, 0, 0, 0]]


def test_explain_is_plain_without_a_terminal_and_rich_renders_the_same_numbers():
    r = run("explain", "--op", "max", "--values", VALUES)  # CliRunner stdout is not a tty
    assert r.exit_code == 0 and "\x1b[" not in r.stdout and "[9]" in r.stdout
    from rich.console import Console

    console = Console(record=True, width=120, force_terminal=True, color_system="truecolor")
    console.print(render_rich(explain(parse_values(VALUES), "max", {})))
    text = console.export_text(clear=False)
    assert "max(9, 4, 4, 4) = 9 at (2,2) -> index 10" in text and "[8]" in text
    assert "\x1b[" in console.export_text(styles=True)


@pytest.mark.parametrize("name", registry.names())
def test_every_registry_operator_can_be_explained(name):
    r = run("explain", "--op", name, "--seed", "2", "--plain")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(registry.get(name).name + ": ")
    assert "input (4x4)" in r.stdout and "output (" in r.stdout


def test_explain_padding_ceil_mode_and_dilation():
    r = run("explain", "--op", "max", "-k", "3", "-s", "2", "-p", "1", "--dilation", "2",
            "--ceil-mode", "--input", "5x5", "--plain")
    assert r.exit_code == 0, r.output
    assert "· = padding" in r.stdout and "dilation 2x2, ceil mode" in r.stdout
    assert "rows -1,1,3 (row -1 padding)" in r.stdout
    r = run("explain", "--op", "avg", "-k", "3", "-s", "2", "-p", "1", "--values",
            "1,2,3;4,5,6;7,8,9", "--plain")
    assert r.exit_code == 0
    # corner window: cells 1, 2, 4, 5 of 9 (count_include_pad): 12 / 9
    assert "window (0,0): rows -1..1 (row -1 padding), cols -1..1 (col -1 padding): " \
           "(1 + 2 + 4 + 5) / 9 = 1.333" in r.stdout


def test_explain_avg_sort_and_stochastic_show_their_weights():
    r = run("explain", "--op", "avg", "--values", "1,3;5,7", "--plain")
    assert "(1 + 3 + 5 + 7) / 4 = 4" in r.stdout
    r = run("explain", "--op", "sort", "--values", "1,3;5,7", "--plain")
    # sorted 7, 5, 3 with weights 0.5, 0.3, 0.2: 3.5 + 1.5 + 0.6 = 5.6
    assert "sorted 7, 5, 3, 1: 0.5*7 + 0.3*5 + 0.2*3 = 5.6" in r.stdout
    one = run("explain", "--op", "stochastic", "--values", "0,3;1,0", "--seed", "4", "--plain")
    assert "p = a/4: 0/4, 3/4, 1/4, 0/4 -> drew" in one.stdout
    assert one.stdout == run("explain", "--op", "stochastic", "--values", "0,3;1,0",
                             "--seed", "4", "--plain").stdout


def test_explain_usage_errors():
    r = run("explain", "--values", "1,2;3")
    assert r.exit_code == 2 and "same number of values" in r.output
    r = run("explain", "--values", "1,2;3,4", "--input", "3x3")
    assert r.exit_code == 2
    r = run("explain", "--op", "max", "-k", "5", "--input", "3x3")
    assert r.exit_code == 2 and "too small" in r.output
    r = run("explain", "--input", "30x2")
    assert r.exit_code == 2


def test_plain_rendering_is_pure():
    e = explain(np.arange(6).reshape(2, 3), "gap", {})
    text = render_plain(e)
    assert "(0 + 1 + 2 + 3 + 4 + 5) / 6 = 2.5" in text
