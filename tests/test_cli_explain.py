"""`poolcli explain`: the worked example of every operator, plain and rich, and its usage
errors."""

import pytest

from helpers import run
from poolcli import registry
from poolcli.explain import explain, parse_values, render_rich


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
