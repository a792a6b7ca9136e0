"""poolcli.imageio.statsfile: the batch-norm statistics file, saved and loaded field by field."""

from __future__ import annotations

import json
import os
import time

import pytest

import sidefiles
from sidefiles import assert_refused, no_hang  # noqa: F401  (no_hang: autouse)

from poolcli.errors import ImageWriteError, StatsFileError
from poolcli.imageio import statsfile


def record(**changes) -> dict:
    """A valid record as ``norm --op batch --fit`` writes it, with ``changes`` applied."""
    good = {
        "format": statsfile.FORMAT, "format_version": 1, "poolcli_version": "0.1.0",
        "channels": ["R", "G", "B"], "images": 4, "count": 4096,
        "mean": [120.5, 110.25, 90], "var": [400.0, 380.5, 350.0],
        "var_unbiased": [400.1, 380.6, 350.1], "running_mean": [100.0, 95.5, 80.0],
        "running_var": [420.0, 390.0, 360.0], "num_batches_tracked": 2, "momentum": 0.1,
        "batch_size": 2, "eps": 1e-5, "shape": [32, 32, 3], "sources": ["a.png", "b.png"],
    }
    for key, value in changes.items():
        if value is _DELETE:
            good.pop(key)
        else:
            good[key] = value
    return good


_DELETE = object()


def write(tmp_path, content, name="stats.json") -> str:
    return sidefiles.write(tmp_path, content, name)


def refused(path, *words, **kwargs) -> str:
    return assert_refused(StatsFileError, statsfile.load, path, *words, **kwargs)


# ---- round trip -----------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    path = tmp_path / "stats.json"
    rec = record()
    del rec["format"], rec["format_version"]  # filled in by save
    statsfile.save(path, rec, overwrite=False)
    text = path.read_text()
    assert text.startswith('{\n  "format": "poolcli-batchnorm-stats",\n  "format_version": 1,')
    loaded = statsfile.load(path)
    assert loaded == record() | {"mean": [120.5, 110.25, 90.0]}
    assert all(isinstance(v, float) for v in loaded["mean"])
    assert loaded["sources"] == ["a.png", "b.png"]  # unknown keys kept


def test_save_refuses_what_load_would_refuse(tmp_path):
    path = tmp_path / "stats.json"
    with pytest.raises(ValueError, match=r"stats\.json: statistics field 'mean\[1\]'"):
        statsfile.save(path, record(mean=[1.0, float("nan"), 2.0]), overwrite=True)
    assert not path.exists()
    statsfile.save(path, record(), overwrite=False)
    with pytest.raises(ImageWriteError, match="exists"):
        statsfile.save(path, record(), overwrite=False)
    statsfile.save(path, record(images=9), overwrite=True)
    assert statsfile.load(path)["images"] == 9
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]


def test_save_reports_the_commit(tmp_path):
    seen = []
    statsfile.save(tmp_path / "s.json", record(), overwrite=False, on_commit=seen.append)
    assert seen == [str(tmp_path / "s.json")]


def test_optional_fields():
    rec = record(momentum=None)
    del rec["eps"]
    assert statsfile.validate(rec)["momentum"] is None
    rec = record(momentum=_DELETE)
    assert "momentum" not in statsfile.validate(rec)
    assert statsfile.validate(record(momentum=0, eps=1))["eps"] == 1.0


# ---- the file itself ------------------------------------------------------------------------


def test_missing_directory_device_fifo(tmp_path):
    refused(tmp_path / "none.json", "no such file")
    refused(tmp_path, "directory")
    refused("/dev/zero", "character device")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    started = time.monotonic()
    refused(fifo, "FIFO")
    assert time.monotonic() - started < 5


def test_size_cap(tmp_path):
    path = write(tmp_path, record())
    refused(path, "over the 100 bytes limit", max_bytes=100)
    big = write(tmp_path, " " * (statsfile.MAX_FILE_BYTES + 1), name="big.json")
    refused(big, "16 MiB")


@pytest.mark.parametrize(("content", "words"), [
    ("", ["empty"]),
    ("   \n", ["empty"]),
    ("{not json", ["not a readable statistics JSON", "line 1"]),
    (b"\xff\xfe{}", ["not UTF-8"]),
    ("[" * 100_000, ["nested"]),
    ('{"a": ' * 50 + "1" + "}" * 50, ["nested"]),
    ("[1, 2, 3]", ["top level"]),
    ('"text"', ["top level"]),
    ("1" * 5000, ["integer too long"]),
])
def test_not_a_statistics_json(tmp_path, content, words):
    refused(write(tmp_path, content), *words)


# ---- fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "field"), [
    ({"format": "poolcli-indices"}, "'format'"),
    ({"format": _DELETE}, "'format'"),
    ({"format_version": 2}, "'format_version'"),
    ({"format_version": True}, "'format_version'"),
    ({"format_version": "1"}, "'format_version'"),
    ({"channels": _DELETE}, "'channels'"),
    ({"channels": []}, "'channels'"),
    ({"channels": "RGB"}, "'channels'"),
    ({"channels": ["R", 1, "B"]}, "'channels[1]'"),
    ({"mean": _DELETE}, "'mean'"),
    ({"mean": [True, 1.0, 2.0]}, "'mean[0]'"),
    ({"mean": [1.0, "2", 3.0]}, "'mean[1]'"),
    ({"mean": [1.0, None, 3.0]}, "'mean[1]'"),
    ({"mean": [1.0, 2.0]}, "'mean'"),
    ({"mean": [1.0, 2.0, 3.0, 4.0]}, "'mean'"),
    ({"mean": {"R": 1.0}}, "'mean'"),
    ({"mean": [[1.0], 2.0, 3.0]}, "'mean[0]'"),
    ({"var": [1.0, -0.5, 1.0]}, "'var[1]'"),
    ({"var": _DELETE}, "'var'"),
    ({"var_unbiased": [1.0, 1.0, -1e-9]}, "'var_unbiased[2]'"),
    ({"running_mean": _DELETE}, "'running_mean'"),
    ({"running_var": [-1.0, 1.0, 1.0]}, "'running_var[0]'"),
    ({"running_var": [1, 2]}, "'running_var'"),
    ({"count": -1}, "'count'"),
    ({"count": 1.5}, "'count'"),
    ({"count": True}, "'count'"),
    ({"count": _DELETE}, "'count'"),
    ({"images": "4"}, "'images'"),
    ({"num_batches_tracked": None}, "'num_batches_tracked'"),
    ({"eps": 0}, "'eps'"),
    ({"eps": -1e-5}, "'eps'"),
    ({"eps": True}, "'eps'"),
    ({"eps": "1e-5"}, "'eps'"),
    ({"momentum": 1.5}, "'momentum'"),
    ({"momentum": -0.1}, "'momentum'"),
    ({"momentum": "0.1"}, "'momentum'"),
    ({"momentum": True}, "'momentum'"),
])
def test_bad_fields(tmp_path, changes, field):
    message = refused(write(tmp_path, record(**changes)), field)
    assert "statistics field" in message or "'format'" in message


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers(tmp_path, token):
    text = json.dumps(record()).replace('"mean": [120.5,', f'"mean": [{token},')
    refused(write(tmp_path, text), "'mean[0]'", "finite")
    text = json.dumps(record()).replace('"eps": 1e-05', f'"eps": {token}')
    refused(write(tmp_path, text), "'eps'")


def test_huge_integers_are_numbers_too(tmp_path):
    text = json.dumps(record()).replace('"mean": [120.5,', '"mean": [' + "9" * 400 + ",")
    refused(write(tmp_path, text), "'mean[0]'", "finite")


def test_many_channels_within_the_cap(tmp_path):
    n = 20_000
    rec = record(channels=[f"c{i}" for i in range(n)], **{k: [0.5] * n for k in statsfile.VECTORS})
    loaded = statsfile.load(write(tmp_path, rec))
    assert len(loaded["running_var"]) == n
