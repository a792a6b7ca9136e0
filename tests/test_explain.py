"""`poolcli.explain`: worked examples as data and their plain rendering, without the CLI."""

import re

import numpy as np
import pytest

from poolcli.explain import explain, parse_values, random_matrix, render_plain


def test_plain_rendering_is_pure():
    e = explain(np.arange(6).reshape(2, 3), "gap", {})
    text = render_plain(e)
    assert "(0 + 1 + 2 + 3 + 4 + 5) / 6 = 2.5" in text


def test_parse_values_rows_and_types():
    x = parse_values("1,2,3;4,5,6")
    assert x.dtype == np.int64 and x.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert parse_values("0.5 1\n2 3").tolist() == [[0.5, 1.0], [2.0, 3.0]]  # new line = ';'
    assert parse_values("2.0, 4;;").dtype == np.int64  # integral floats, empty rows dropped


@pytest.mark.parametrize("text, problem", [
    ("", "holds no values"),
    ("1,2;3", "every row needs the same number of values"),
    ("1,x", "row 0 ('1,x') is not a list of numbers"),
    ("1,inf", "values must be finite numbers"),
])
def test_parse_values_refuses_with_the_reason(text, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_values(text)


def test_min_pooling_by_hand():
    # 4 2 / 7 1: the one 2x2 window's minimum is 1 at (1,1), flat index 1*2 + 1 = 3
    e = explain(parse_values("4,2;7,1"), "min", {"kernel": (2, 2), "stride": (2, 2)})
    assert e.output.tolist() == [[1]] and e.indices.tolist() == [[3]]
    assert e.selected == [(1, 1)]
    assert "2x2 input -> 1x1 output" in e.header[2]


def test_average_over_1x2_windows_selects_nothing():
    e = explain(parse_values("1,2,3;4,5,6"), "avg", {"kernel": (1, 2), "stride": (1, 1)})
    assert e.output.tolist() == [[1.5, 2.5], [4.5, 5.5]]
    assert e.indices is None and e.selected == []
    assert "(1 + 2) / 2 = 1.5" in render_plain(e)


def test_random_matrix_is_seeded_digits():
    a = random_matrix((3, 4), seed=9)
    assert a.shape == (3, 4) and a.dtype == np.int64 and 0 <= a.min() and a.max() <= 9
    assert a.tolist() == random_matrix((3, 4), seed=9).tolist()
    with pytest.raises(ValueError, match="each side must lie in 1.."):
        random_matrix((0, 4), seed=9)
