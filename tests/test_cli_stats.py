"""`poolcli stats`: per-channel statistics of an image as JSON."""

import numpy as np
import pytest
from PIL import Image

from helpers import records, run


def test_stats_command(workdir):
    r = run("stats", "camera.png", "--json")
    assert r.exit_code == 0
    rec = records(r)[0]
    x = np.asarray(Image.open("camera.png")).astype(np.float64)
    assert rec["stats_in"][0]["min"] == x.min() and rec["stats_in"][0]["max"] == x.max()
    assert rec["stats_in"][0]["zero_fraction"] == pytest.approx((x == 0).mean())
