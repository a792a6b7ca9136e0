"""Standard output faults, with real processes (``python -m poolcli ...``).

Every command that prints (pool, norm, unpool, chain, stats, compare, explain, ops; with and
without ``--json``; ``-o -`` for image bytes on stdout) runs with its standard output

- on a full device (``/dev/full``: every write fails with ENOSPC),
- closed (file descriptor 1 closed before ``exec``: Python starts with ``sys.stdout = None``, and
  the first file poolcli opens gets descriptor 1),
- a pipe whose reader is gone (the read end closed before the start, EPIPE on the first write),
  and a reader that reads one line of a long output and then closes the pipe.

Each run must end with exit status 1 and exactly one ``poolcli:`` line on stderr about standard
output (exit 0 and nothing on stderr when the command prints nothing: ``-q``), no
``Traceback`` and no ``Exception ignored``; inputs byte-identical, no ``.part`` file, and every
output on disk complete: equal to the output of the same command run normally (so nothing was
printed into an output file that happened to get descriptor 1).

Tests marked ``xfail(strict=True)`` need a fix in a module owned elsewhere (the reason says
which); they fail loudly once it is in, so the marker can go.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

POOLCLI = [sys.executable, "-m", "poolcli"]
INPUTS = ("img.png", "img2.png")

# name: (arguments, prints something on stdout)
CASES = {
    "pool": (["pool", "img.png"], True),
    "pool-json": (["pool", "-q", "--json", "img.png"], True),
    "pool-quiet": (["pool", "-q", "img.png"], False),
    "pool-to-stdout": (["pool", "-q", "img.png", "-o", "-"], True),
    "pool-batch-json": (["pool", "-q", "--json", "-j", "2", "img.png", "img2.png",
                         "--save-indices"], True),
    "norm": (["norm", "img.png"], True),
    "norm-json": (["norm", "-q", "--json", "img.png"], True),
    "norm-batch-fit": (["norm", "--op", "batch", "--fit", "--save-stats", "s.json", "img.png",
                        "img2.png"], True),
    "unpool": (["unpool", "p.png", "--indices", "p.indices.npz"], True),
    "unpool-json": (["unpool", "-q", "--json", "p.png", "--indices", "p.indices.npz"], True),
    "chain": (["chain", "-i", "img.png", "pool", "norm", "unpool"], True),
    "chain-json": (["chain", "-q", "--json", "-i", "img.png", "-i", "img2.png", "pool", "norm"],
                   True),
    "stats": (["stats", "img.png"], True),
    "stats-json": (["stats", "-q", "--json", "img.png", "img2.png"], True),
    "compare": (["compare", "img.png", "--ops", "max,avg"], True),
    "compare-json": (["compare", "-q", "--json", "img.png", "--ops", "max,avg"], True),
    "compare-to-stdout": (["compare", "-q", "img.png", "--ops", "max", "-o", "-"], True),
    "explain": (["explain", "--op", "max"], True),
    "explain-plain": (["explain", "--op", "avg", "--plain"], True),
    "ops": (["ops"], True),
    "ops-json": (["ops", "--json"], True),
}

KNOWN: dict = {}  # every case passes now; a new finding goes here as a strict xfail


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def part_files(root) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files
            if f.endswith(".part")]


def make_inputs(directory) -> None:
    """Two small RGB images, and a pooled image with its index map (for unpool)."""
    rng = np.random.default_rng(7)
    for name, shape in zip(INPUTS, [(24, 32, 3), (24, 32, 3)]):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(directory / name)
    subprocess.run(POOLCLI + ["pool", "-q", "img.png", "-o", "p.png", "--save-indices"],
                   cwd=directory, check=True, capture_output=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Every case run normally (in this process, for speed): its directory, by case name."""
    from click.testing import CliRunner

    from poolcli.cli import main

    root = tmp_path_factory.mktemp("reference")
    make_inputs(root)
    out, cwd = {}, os.getcwd()
    try:
        for name, (args, _) in CASES.items():
            d = root / name
            shutil.copytree(root, d, ignore=lambda src, names: [n for n in names if n in CASES])
            os.chdir(d)
            res = CliRunner().invoke(main, args, catch_exceptions=False)
            assert res.exit_code == 0, (name, res.output)
            out[name] = d
    finally:
        os.chdir(cwd)
    return out


def load(path):
    if str(path).endswith(".npy"):
        return np.load(path)
    if str(path).endswith(".npz"):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    if str(path).endswith(".json"):
        with open(path) as fh:
            return sorted(json.load(fh))  # complete JSON (its keys; times may differ)
    with Image.open(path) as im:
        return np.asarray(im)


def check_outputs(workdir, refdir, before) -> None:
    """Inputs unchanged, no .part file, every output present equal to the normal run's."""
    assert part_files(workdir) == []
    for name, h in before.items():
        assert digest(workdir / name) == h, f"input {name} changed"
    made = sorted(set(os.listdir(workdir)) - set(before))
    for name in made:
        assert (refdir / name).exists(), f"unexpected file {name}"
        got, want = load(workdir / name), load(refdir / name)
        if isinstance(want, dict):
            assert got.keys() == want.keys()
            for k in want:
                if k != "meta":
                    np.testing.assert_array_equal(got[k], want[k], err_msg=f"{name}:{k}")
        elif isinstance(want, list):
            assert got == want, name
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)


def check_stderr(stderr: str, code: int, prints: bool) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    if not prints:
        assert code == 0 and lines == [], (code, stderr)
        return
    assert code == 1, (code, stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("poolcli:"), stderr
    assert "standard output" in lines[0] or "stdout" in lines[0], stderr


def spawn(args, cwd, mode):
    """Run poolcli with stdout in fault ``mode``; (exit status, stderr)."""
    kw = dict(cwd=cwd, stderr=subprocess.PIPE, text=True, timeout=120)
    if mode == "full":
        with open("/dev/full", "w") as full:
            res = subprocess.run(POOLCLI + args, stdout=full, **kw)
    elif mode == "closed":
        res = subprocess.run(POOLCLI + args, preexec_fn=lambda: os.close(1), **kw)
    elif mode == "epipe":
        r, w = os.pipe()
        os.close(r)  # the reader is gone before poolcli starts
        try:
            res = subprocess.run(POOLCLI + args, stdout=w, **kw)
        finally:
            os.close(w)
    else:
        raise ValueError(mode)
    return res.returncode, res.stderr


def params():
    out = []
    for mode in ("full", "closed", "epipe"):
        for name in CASES:
            marks = ()
            if (mode, name) in KNOWN:
                marks = pytest.mark.xfail(strict=True, reason=KNOWN[mode, name])
            out.append(pytest.param(mode, name, marks=marks, id=f"{mode}-{name}"))
    return out


@pytest.mark.parametrize("mode, name", params())
def test_stdout_fault(mode, name, tmp_path, reference):
    args, prints = CASES[name]
    make_inputs(tmp_path)
    before = {n: digest(tmp_path / n) for n in os.listdir(tmp_path)}
    code, stderr = spawn(args, tmp_path, mode)
    check_stderr(stderr, code, prints)
    check_outputs(tmp_path, reference[name], before)


@pytest.mark.parametrize("name", ["pool-batch-json", "compare-json"])
def test_closed_stdout_through_the_shell(name, tmp_path, reference):
    """``poolcli ... >&-`` as a shell runs it (the same closed descriptor 1, from sh)."""
    args = CASES[name][0]
    make_inputs(tmp_path)
    before = {n: digest(tmp_path / n) for n in os.listdir(tmp_path)}
    command = " ".join(["exec", *POOLCLI, *args, ">&-"])
    res = subprocess.run(["sh", "-c", command], cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                         timeout=120)
    check_stderr(res.stderr, res.returncode, True)
    check_outputs(tmp_path, reference[name], before)


MANY = 160  # x ~600 bytes of JSON (or table) each: well past a 64 KiB pipe buffer


@pytest.fixture(scope="module")
def many_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(3)
    for i in range(MANY):
        Image.fromarray(rng.integers(0, 256, (4, 6), dtype=np.uint8)).save(root / f"m{i:03d}.png")
    return root


def _early_close_params():
    stats_table = pytest.param(["stats", "-j", "1"], id="stats-table")
    return [
        pytest.param(["stats", "-q", "--json", "-j", "1"], id="stats-json"),
        stats_table,
        pytest.param(["pool", "-q", "--json", "-j", "1", "-o", "out"], id="pool-json"),
        pytest.param(["pool", "-q", "--json", "-j", "2", "-o", "out"], id="pool-json-j2"),
    ]


@pytest.mark.parametrize("args", _early_close_params())
def test_reader_closes_the_pipe_after_one_line(args, tmp_path, many_inputs):
    work = tmp_path / "in"
    shutil.copytree(many_inputs, work)
    before = {n: digest(work / n) for n in os.listdir(work)}
    proc = subprocess.Popen(POOLCLI + args + sorted(before), cwd=work, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    stderr = proc.stderr.read()
    proc.stderr.close()
    code = proc.wait(timeout=120)
    assert first.strip()
    check_stderr(stderr, code, True)
    assert part_files(work) == []
    for name, h in before.items():
        assert digest(work / name) == h
    if (work / "out").is_dir():  # every pooled image written is complete: 2x3, the max
        for name in os.listdir(work / "out"):
            got = np.asarray(Image.open(work / "out" / name))
            src = np.asarray(Image.open(work / name.replace("_max", "")))
            np.testing.assert_array_equal(got, src.reshape(2, 2, 3, 2).max(axis=(1, 3)))
