"""The guarantees every writing command gives, by construction (one plan, one runner, one
error boundary): parametrized over the commands, side files included.

- Collisions: nothing a run writes may be something it reads (images, maps, statistics,
  pipeline and list files), and no two writes may share a path: exit 2 before anything is read.
- Interrupts: SIGINT and SIGTERM end every command with exit 130, no ``.part`` file, and a
  message whose count of written outputs equals the outputs on disk.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from poolcli.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def digest(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def snapshot(root="."):
    return {os.path.join(d, f): digest(os.path.join(d, f))
            for d, _, files in os.walk(root) for f in files}


@pytest.fixture
def images(tmp_path, monkeypatch):
    """a.png, b.png (8x8 RGB), their max-pooled a_max.png + map, a stats file, a pipeline."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(f"{name}.png")
    assert run("pool", "a.png", "--save-indices", "-q").exit_code == 0
    assert run("norm", "--op", "batch", "--fit", "--save-stats", "s.json", "a.png", "b.png",
               "-q").exit_code == 0
    with open("pipe.json", "w") as fh:
        json.dump({"stage": [{"command": "pool", "op": "max", "save-indices": True}]}, fh)
    with open("list.txt", "w") as fh:
        fh.write("a.png\n")
    return tmp_path


# Each case: a command line whose writes hit something it reads (or each other).
COLLISIONS = {
    "pool-output-is-input": ["pool", "a.png", "-o", "a.png", "--force"],
    "pool-map-is-input": ["pool", "--save-indices", "a.png", "a_max.indices.npz", "--force"],
    "pool-selection-is-input": ["pool", "--indices-png", "--name", "{stem}{ext}", "-o", ".",
                                "a.png", "a.selected.png", "--force"],
    "pool-two-inputs-one-output": ["pool", "a.png", "sub/a.png", "-o", "out", "--force"],
    "pool-output-is-list-file": ["pool", "--from-list", "list.txt", "--name", "list{ext}",
                                 "--format", "png", "--force", "b.png", "-o", "."],
    "norm-output-is-input": ["norm", "a.png", "-o", "a.png", "--force"],
    "norm-save-stats-is-input": ["norm", "--op", "batch", "--fit", "--save-stats", "a.png",
                                 "a.png", "b.png", "--force"],
    "norm-inference-output-is-stats": ["norm", "--op", "batch", "--stats", "s.json", "a.png",
                                       "--name", "s.json", "--force"],
    "unpool-output-is-input": ["unpool", "a_max.png", "--indices", "a_max.indices.npz", "-o",
                               "a_max.png", "--force"],
    "unpool-output-is-map": ["unpool", "a_max.png", "--indices", "a_max.png", "-o",
                             "a_max.png", "--force"],
    "chain-output-is-input": ["chain", "-i", "a.png", "-o", "a.png", "--force", "pool"],
    "chain-stage-map-is-input": ["chain", "-i", "a.png", "-i", "a_max.stage1.indices.npz",
                                 "--force", "pool", "--save-indices"],
    "chain-output-is-pipeline": ["chain", "-i", "a.png", "--pipeline", "pipe.json", "--name",
                                 "pipe.json", "--force"],
    "compare-sheet-is-input": ["compare", "a.png", "--ops", "max", "-o", "a.png", "--force"],
}


@pytest.mark.parametrize("args", COLLISIONS.values(), ids=COLLISIONS.keys())
def test_writes_never_hit_reads_or_each_other(images, args):
    os.makedirs("sub", exist_ok=True)
    Image.open("a.png").save("sub/a.png")
    before = snapshot()
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert snapshot() == before  # nothing read, nothing written, nothing replaced


RUN_OUTPUTS = {
    "norm-save-stats": (["norm", "--op", "batch", "--fit", "--save-stats", "s.json", "a.png",
                         "b.png"], "s.json"),
    "compare-sheet": (["compare", "a.png", "--ops", "max", "-o", "a_max.png"], "a_max.png"),
}


@pytest.mark.parametrize("args,existing", RUN_OUTPUTS.values(), ids=RUN_OUTPUTS.keys())
def test_a_run_output_never_replaces_a_file_without_force(images, args, existing):
    before = digest(existing)
    result = run(*args)
    assert result.exit_code == 2 and existing in result.output and "--force" in result.output
    assert digest(existing) == before
    assert run(*args, "--force").exit_code == 0


# ------------------------------------------------------------------------------------------------
# Interrupts: a real process, a real signal
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def heavy(tmp_path_factory):
    """Inputs that take a few seconds to process, so a signal at 0.5 s lands mid-run: 48 noisy
    1400x1400 RGB PNGs (one file under 48 names), a 2800x2800 pooled image with its map, a
    statistics file."""
    d = tmp_path_factory.mktemp("heavy")
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (2800, 2800, 3), dtype=np.uint8)
    Image.fromarray(noise[:1400, :1400]).save(d / "in00.png", compress_level=0)
    for i in range(1, 48):
        os.link(d / "in00.png", d / f"in{i:02d}.png")
    Image.fromarray(noise).save(d / "whole.png", compress_level=0)
    exe = [sys.executable, "-m", "poolcli"]
    subprocess.run(exe + ["pool", "-k", "1", "--save-indices", "-q", "whole.png", "-o",
                          "big.png"], cwd=d, check=True)
    subprocess.run(exe + ["norm", "--op", "batch", "--fit", "--save-stats", "s.json", "-q",
                          "in00.png", "in01.png"], cwd=d, check=True)
    return d


INPUTS = [f"in{i:02d}.png" for i in range(12)]
MANY = [f"in{i:02d}.png" for i in range(48)]
SLOW = ["--compress-level", "9", "-j", "2"]
COMMANDS = {
    "pool": ["pool", "--op", "softpool", "-k", "3", "-s", "1", *INPUTS, "-o", "out", *SLOW],
    "norm-instance": ["norm", *INPUTS, "-o", "out", "--format", "tif", *SLOW],
    "norm-batch": ["norm", "--op", "batch", *INPUTS, "-o", "out", *SLOW],
    "norm-batch-fit": ["norm", "--op", "batch", "--fit", "--batch-size", "2", "--save-stats",
                       "out/fit.json", *MANY],
    "norm-batch-inference": ["norm", "--op", "batch", "--stats", "s.json", *INPUTS, "-o", "out",
                             *SLOW],
    "unpool": ["unpool", "big.png", "--indices", "big.indices.npz", "--accumulate", "-o",
               "out/u.png", "--compress-level", "9"],
    "chain": ["chain", *sum((["-i", f] for f in INPUTS), []), "-o", "out", *SLOW, "pool",
              "--op", "max", "-k", "3", "-s", "1", "--save-indices", "norm"],
    "compare": ["compare", *INPUTS[:6], "--ops", "softpool,lse,gem,sort", "-k", "3", "-s", "1",
                "--tile-size", "2048", "-o", "out/sheet.png"],
    "stats": ["stats", *MANY, "-j", "1"],
}


def _wait_until_working(p, timeout=30):
    """Until the command itself runs: numpy is loaded only inside commands, after start-up."""
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/maps") as fh:
                if "numpy" in fh.read():
                    return
        except OSError:
            return  # no /proc: fall back to the sleep alone
        time.sleep(0.02)


def _outputs(d):
    out = d / "out"
    return sorted(p for p in os.listdir(out) if not p.startswith(".")) if out.exists() else []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_interrupt_is_exit_130_with_an_exact_count(heavy, tmp_path, command, sig):
    d = tmp_path
    for f in os.listdir(heavy):
        os.symlink(heavy / f, d / f)
    os.makedirs(d / "out")
    p = subprocess.Popen([sys.executable, "-m", "poolcli", *command], cwd=d,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_until_working(p)
    time.sleep(0.3)  # reading, computing or writing (each run takes seconds)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    err = err.decode()
    assert "Traceback" not in err and "Aborted" not in err
    leftovers = [f for _, _, fs in os.walk(d) for f in fs if f.endswith(".part")]
    assert leftovers == []
    assert p.returncode == 130, err
    match = re.search(r"interrupted: (\d+)(?: of \d+)? outputs written", err)
    assert match, err
    written = int(match.group(1))
    mains = [f for f in _outputs(d) if not f.endswith(".indices.npz")]
    if command[0] != "stats":
        assert written == len(mains), (err, mains)
    maps = [f for f in _outputs(d) if f.endswith(".indices.npz")]
    assert len(maps) in (0, len(mains))  # a map never outlives its image
