"""`poolcli.visual`: selection pictures, resizing, terminal previews (half blocks), when a
preview is shown."""

import io

import numpy as np
import pytest

from poolcli import visual
from poolcli.ops import max_pool2d, max_unpool2d


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
