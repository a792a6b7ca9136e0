"""`poolcli.explain`: worked examples as data and their plain rendering, without the CLI."""

import numpy as np

from poolcli.explain import explain, render_plain


def test_plain_rendering_is_pure():
    e = explain(np.arange(6).reshape(2, 3), "gap", {})
    text = render_plain(e)
    assert "(0 + 1 + 2 + 3 + 4 + 5) / 6 = 2.5" in text
