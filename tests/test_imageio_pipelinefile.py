"""poolcli.imageio.pipelinefile: pipeline files (TOML/JSON) into stage argv, bad ones refused."""

from __future__ import annotations

import os
import threading
import time

import pytest

import sidefiles
from sidefiles import assert_refused, no_hang  # noqa: F401  (no_hang: autouse)

from poolcli.errors import PipelineFileError
from poolcli.imageio import pipelinefile
from poolcli.imageio.pipelinefile import read_pipeline


def write(tmp_path, content, name="p.json") -> str:
    return sidefiles.write(tmp_path, content, name)


def refused(path, *words) -> str:
    return assert_refused(PipelineFileError, read_pipeline, path, *words)


TOML = """
# a pipeline
[[stage]]
command = "pool"
op = "max"
kernel = "3x3"
stride = 2
save-indices = true
ceil_mode = false

[[stage]]
command = "norm"
op = "instance"
eps = 1e-5

[[stage]]
command = "unpool"
"""


def test_toml_and_json_give_the_same_argv(tmp_path):
    expected = [("pool", ["--op=max", "--kernel=3x3", "--stride=2", "--save-indices"]),
                ("norm", ["--op=instance", "--eps=1e-05"]),
                ("unpool", [])]
    assert read_pipeline(write(tmp_path, TOML, "p.toml")) == expected
    stages = [{"command": "pool", "op": "max", "kernel": "3x3", "stride": 2,
               "save_indices": True, "ceil-mode": False},
              {"command": "norm", "op": "instance", "eps": 1e-5},
              {"command": "unpool"}]
    assert read_pipeline(write(tmp_path, {"stage": stages})) == expected
    assert read_pipeline(write(tmp_path, {"stages": stages})) == expected
    assert read_pipeline(write(tmp_path, stages)) == expected  # a bare list
    assert read_pipeline(write(tmp_path, TOML, "P.TOML")) == expected


def test_lists_null_and_option_like_values(tmp_path):
    stages = [{"command": "pool", "op": "sort", "weights": [0.5, 0.3, 0.2], "kernel": [3, 2],
               "output-size": None, "name": "--help"}]
    assert read_pipeline(write(tmp_path, stages)) == [
        ("pool", ["--op=sort", "--weights=0.5,0.3,0.2", "--kernel=3,2", "--name=--help"])]


# ---- the file itself ------------------------------------------------------------------------


def test_missing_directory_device(tmp_path):
    refused(tmp_path / "none.toml", "no such file")
    refused(tmp_path, "directory")
    refused("/dev/zero", "character device")


def test_fifo_without_a_writer_does_not_hang(tmp_path):
    fifo = tmp_path / "p.json"
    os.mkfifo(fifo)
    started = time.monotonic()
    refused(str(fifo), "empty")
    assert time.monotonic() - started < 5


def test_pipe_with_a_writer_is_read():
    read_fd, write_fd = os.pipe()

    def feed():
        with open(write_fd, "wb") as fh:
            fh.write(b'[{"command": "unpool"}]')

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        assert read_pipeline(f"/dev/fd/{read_fd}") == [("unpool", [])]
    finally:
        writer.join()
        os.close(read_fd)


def test_size_cap(tmp_path):
    big = write(tmp_path, '[{"command": "unpool"}' + " " * pipelinefile.MAX_BYTES + "]")
    refused(big, "over the 1 MiB limit")


@pytest.mark.parametrize(("name", "content", "words"), [
    ("p.json", "", ["empty"]),
    ("p.toml", "\n\n", ["empty"]),
    ("p.json", "{not json", ["invalid JSON", "line 1"]),
    ("p.toml", "[[stage]\ncommand = 'pool'", ["invalid TOML"]),
    ("p.toml", b"command = '\xff'", ["not UTF-8"]),
    ("p.json", "[" * 100_000, ["nested"]),
    ("p.toml", "a = " + "[" * 100_000, ["nested"]),
    ("p.json", '{"stage": [{"command": "pool", "k": [[[[[[[[[1]]]]]]]]]}]}', ["nested"]),
    ("p.json", "{}", ["no stages"]),
    ("p.json", "[]", ["no stages"]),
    ("p.json", '{"stage": {"command": "pool"}}', ["no stages"]),
    ("p.toml", "[stage]\ncommand = 'pool'\n", ["no stages"]),
    ("p.json", '{"stage": [{"command": "pool"}], "stages": []}', ["both"]),
    ("p.json", '"pool"', ["no stages"]),
])
def test_unreadable_or_empty_pipelines(tmp_path, name, content, words):
    refused(write(tmp_path, content, name), *words)


def test_stage_count_cap(tmp_path):
    stages = [{"command": "unpool"}] * (pipelinefile.MAX_STAGES + 1)
    refused(write(tmp_path, stages), f"{pipelinefile.MAX_STAGES + 1} stages", "more than")
    assert len(read_pipeline(write(tmp_path, stages[:-1]))) == pipelinefile.MAX_STAGES


def test_a_million_stages_are_refused_quickly(tmp_path):
    path = write(tmp_path, "[[stage]]\ncommand = 'unpool'\n" * 1_000_000, "p.toml")
    started = time.monotonic()
    refused(path, "limit")
    path = write(tmp_path, "[" + ",".join(["{}"] * 300_000) + "]")
    refused(path, "300000 stages")
    assert time.monotonic() - started < 5


# ---- stages, keys and values ----------------------------------------------------------------


@pytest.mark.parametrize(("stage", "words"), [
    ({"op": "max"}, ["no 'command'"]),
    ({"command": "explode"}, ["'command'", "'explode'"]),
    ({"command": 3}, ["'command'"]),
    ({"command": ["pool"]}, ["'command'"]),
    ({"command": "pool", "help": True}, ["'help'", "not allowed"]),
    ({"command": "pool", "h": True}, ["'h'", "not allowed"]),
    ({"command": "pool", "version": True}, ["'version'", "not allowed"]),
    ({"command": "pool", "--help": True}, ["'--help'", "not an option name"]),
    ({"command": "pool", "-k": 2}, ["'-k'", "not an option name"]),
    ({"command": "pool", "Kernel": 2}, ["'Kernel'", "not an option name"]),
    ({"command": "pool", "": 2}, ["''", "not an option name"]),
    ({"command": "pool", "ker nel": 2}, ["'ker nel'", "not an option name"]),
    ({"command": "pool", "k" * 65: 2}, ["not an option name"]),
    ({"command": "pool", "save_indices": True, "save-indices": True},
     ["'save-indices'", "twice"]),
    ({"command": "pool", "kernel": {"h": 2}}, ["'kernel'", "expected a string, number"]),
    ({"command": "pool", "kernel": [[2, 2]]}, ["'kernel'[0]", "expected a string or a number"]),
    ({"command": "pool", "kernel": [True, 2]}, ["'kernel'[0]", "true/false"]),
    ({"command": "pool", "kernel": []}, ["'kernel'", "empty list"]),
    ({"command": "pool", "kernel": 10**20}, ["'kernel'", "too large"]),
    ({"command": "pool", "op": "max\x00--help"}, ["'op'", "NUL"]),
])
def test_bad_stages(tmp_path, stage, words):
    good = {"command": "unpool"}
    refused(write(tmp_path, {"stage": [good, stage]}), "stage 2", *words)


def test_a_stage_that_is_not_a_table(tmp_path):
    refused(write(tmp_path, [{"command": "unpool"}, 3]), "stage 2", "table")
    refused(write(tmp_path, {"stage": ["pool"]}), "stage 1", "table")


@pytest.mark.parametrize(("name", "content"), [
    ("p.json", '[{"command": "pool", "alpha": NaN}]'),
    ("p.json", '[{"command": "pool", "alpha": Infinity}]'),
    ("p.json", '[{"command": "pool", "alpha": 1e999}]'),
    ("p.toml", "[[stage]]\ncommand = 'pool'\nalpha = nan\n"),
    ("p.toml", "[[stage]]\ncommand = 'pool'\nalpha = -inf\n"),
    ("p.toml", "[[stage]]\ncommand = 'pool'\nweights = [0.5, inf]\n"),
])
def test_non_finite_numbers(tmp_path, name, content):
    refused(write(tmp_path, content, name), "stage 1", "finite")


def test_toml_dates_and_inline_tables(tmp_path):
    refused(write(tmp_path, "[[stage]]\ncommand = 'pool'\nseed = 2024-01-01\n", "p.toml"),
            "stage 1", "'seed'", "date")
    refused(write(tmp_path, "[[stage]]\ncommand = 'pool'\nkernel = {h = 2}\n", "p.toml"),
            "stage 1", "'kernel'", "dict")
