"""The batch options every image command shares: inputs (files, directories, -r, globs, stdin,
--from-list), per-file failures, output naming (-o, --name), --shard, --dry-run, -j, --fail-fast,
and interrupts of a parallel run."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from helpers import SAMPLES, digest, json_lines, run
from poolcli import imageio
from poolcli.ops import max_pool2d


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """200 small sample-derived images (nested), 3 bad files among them."""
    monkeypatch.chdir(tmp_path)
    src = np.asarray(Image.open(os.path.join(SAMPLES, "chelsea.png")))
    os.makedirs("in/sub")
    rng = np.random.default_rng(0)
    for i in range(197):
        y, x = rng.integers(0, 200), rng.integers(0, 350)
        sub = "in/sub" if i % 4 == 0 else "in"
        Image.fromarray(src[y:y + 64, x:x + 96]).save(f"{sub}/img{i:03d}.png")
    open("in/bad1.png", "wb").write(b"")
    open("in/bad2.png", "wb").write(b"\x89PNG\r\n\x1a\n" + os.urandom(50))
    open("in/sub/bad3.jpg", "wb").write(b"\xff\xd8\xff" + b"\x00" * 20)
    open("in/readme.txt", "w").write("not an image")
    return tmp_path


def test_bad_file_fails_alone_and_others_are_processed(workdir):
    open("broken.png", "wb").write(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    r = run("pool", "broken.png", "chelsea.png", "missing.png")
    assert r.exit_code == 1
    errors = [l for l in r.output.splitlines() if l.startswith("poolcli: error:")]
    assert len(errors) == 2
    assert any("broken.png" in e for e in errors) and any("missing.png" in e for e in errors)
    assert os.path.exists("chelsea_max.png")
    assert not os.path.exists("broken_max.png")
    assert not [f for f in os.listdir(".") if f.endswith(".part")]


def test_directory_input_and_output_directory(workdir):
    os.mkdir("in")
    shutil.copy("chelsea.png", "in/a.png")
    shutil.copy("camera.png", "in/b.png")
    open("in/notes.txt", "w").write("not an image")
    r = run("pool", "in", "-o", "deep/out")
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir("deep/out")) == ["a_max.png", "b_max.png"]
    assert "skipped 1" in r.output


def test_200_images_with_3_bad_in_parallel(folder):
    before = {p: digest(os.path.join(d, p)) for d, _, fs in os.walk("in") for p in fs}
    r = run("pool", "in", "-r", "-o", "out", "-j", "2", "--json", "-q")
    assert r.exit_code == 1
    recs = json_lines(r)
    summary = recs[-1]["summary"]
    assert summary["ok"] == 197 and summary["failed"] == 3 and summary["skipped"] == 1
    errors = [l for l in r.stderr.splitlines() if l.startswith("poolcli: error:")]
    assert len(errors) == 3
    for bad in ("bad1.png", "bad2.png", "bad3.jpg"):
        assert sum(bad in e for e in errors) == 1
    # results in input order, structure mirrored under -o
    inputs = [rec["input"] for rec in recs[:-1]]
    assert inputs == sorted(inputs, key=lambda p: (os.path.dirname(p) != "in", p))
    assert len(os.listdir("out/sub")) == 50 and os.path.exists("out/img001_max.png")
    after = {p: digest(os.path.join(d, p)) for d, _, fs in os.walk("in") for p in fs}
    assert before == after
    leftovers = [f for d, _, fs in os.walk(".") for f in fs if f.endswith(".part")]
    assert leftovers == []
    out = np.asarray(Image.open("out/img001_max.png"))
    np.testing.assert_array_equal(out, max_pool2d(np.asarray(Image.open("in/img001.png")), 2))


def test_parallel_equals_serial(folder):
    a = run("pool", "in", "-o", "a", "-j", "1", "-q", "--op", "stochastic", "--seed", "3")
    b = run("pool", "in", "-o", "b", "-j", "2", "-q", "--op", "stochastic", "--seed", "3")
    assert a.exit_code == b.exit_code == 1
    assert sorted(os.listdir("a")) == sorted(os.listdir("b"))
    for f in os.listdir("a"):
        assert digest(f"a/{f}") == digest(f"b/{f}")


def test_fail_fast_dry_run_shard_and_list(folder):
    r = run("pool", "in/bad1.png", "in/img001.png", "--fail-fast", "-j", "1")
    assert r.exit_code == 1 and not os.path.exists("in/img001_max.png")
    r = run("pool", "in", "-o", "dry", "--dry-run")
    assert r.exit_code == 0 and not os.path.exists("dry")
    assert "in/img001.png -> dry/img001_max.png" in r.stdout
    shards = [run("pool", "in", "--dry-run", "--shard", f"{i}/3", "-o", "s").stdout.splitlines()
              for i in (1, 2, 3)]
    full = run("pool", "in", "--dry-run", "-o", "s").stdout.splitlines()
    assert sorted(sum(shards, [])) == sorted(full) and all(len(s) in (49, 50) for s in shards)
    open("list.txt", "w").write("# two files\nin/img001.png\n\nin/img002.png\n")
    r = run("pool", "--from-list", "list.txt", "-o", "l", "-q")
    assert r.exit_code == 0 and sorted(os.listdir("l")) == ["img001_max.png", "img002_max.png"]
    r = run("stats", "--from-list", "-", "--json", input="in/img003.png\n")
    assert json_lines(r)[0]["input"] == "in/img003.png"


def test_name_template_format_and_collisions(folder):
    r = run("pool", "in/img001.png", "-o", "t", "--name", "{parent}-{index}-{stem}.{op}{ext}",
            "--format", "npy", "-q")
    assert r.exit_code == 0 and os.listdir("t") == ["in-0-img001.max.npy"]
    r = run("pool", "in/img001.png", "in/img002.png", "-o", "t", "--name", "same{ext}")
    assert r.exit_code == 2 and "would both write" in r.output
    r = run("pool", "in/img001.png", "--name", "{nope}")
    assert r.exit_code == 2 and "{stem}" in r.output
    before = digest("in/img001.png")
    r = run("pool", "in/img001.png", "--name", "{name}", "--force")
    assert r.exit_code == 2 and "overwrite an input" in r.output
    assert digest("in/img001.png") == before


def test_glob_and_stdin(folder):
    r = run("pool", "in/img00*.png", "-o", "g", "-q")
    assert r.exit_code == 0 and len(os.listdir("g")) == 7  # img000, 004, 008 are in sub/
    r = run("pool", "in/zzz*.png")
    assert r.exit_code == 1 and "no files match" in r.output
    data = open("in/img001.png", "rb").read()
    r = run("pool", "-", "-o", "from_stdin.png", "-q", input=data)
    assert r.exit_code == 0 and os.path.exists("from_stdin.png")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_only_complete_outputs(tmp_path, sig):
    src = np.asarray(Image.open(os.path.join(SAMPLES, "astronaut.png")))
    os.makedirs(tmp_path / "in")
    for i in range(40):
        Image.fromarray(np.roll(src, i, axis=1)).save(tmp_path / "in" / f"a{i:02d}.png")
    exe = [sys.executable, "-m", "poolcli"]
    p = subprocess.Popen(exe + ["pool", "--op", "softpool", "-k", "3", "-s", "1", "in", "-o",
                                "out", "-j", "2", "-q", "--compress-level", "9"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "out").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode in (130, 1, 0), err
    files = [f for d, _, fs in os.walk(tmp_path) for f in fs]
    assert not [f for f in files if f.endswith(".part")]
    for f in os.listdir(tmp_path / "out"):
        arr = imageio.read_image(str(tmp_path / "out" / f)).array  # every output is complete
        assert arr.shape == (510, 510, 3)
    if p.returncode == 130:
        assert b"interrupted" in err
