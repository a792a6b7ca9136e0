"""The `poolcli` group and the console entry point: --help and --version, exit statuses and
output that survive the skipped interpreter teardown, a real run of the installed script."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import POOLCLI, run, run_process
from poolcli.cli import main


def test_every_command_has_help():
    for name, cmd in main.commands.items():
        assert cmd.help, name
        r = run(name, "--help")
        assert r.exit_code == 0 and "Usage" in r.output


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and "poolcli" in r.output


def test_console_script_runs_as_a_real_process(workdir):
    exe = shutil.which("poolcli")
    cmd = [exe] if exe else [sys.executable, "-m", "poolcli"]
    p = subprocess.run(cmd + ["pool", "--op", "max", "-k", "2", "chelsea.png", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[0])["shape_out"] == [150, 225, 3]
    p = subprocess.run([sys.executable, "-m", "poolcli", "--version"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and "poolcli" in p.stdout


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(path)
    return path


def test_success_writes_everything_and_exits_0(png, tmp_path):
    out = tmp_path / "out.png"
    p = run_process("pool", "--op", "max", "-k", "2", str(png), "-o", str(out), "--json")
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert lines[0]["shape_out"] == [2, 2, 3] and "summary" in lines[-1]
    assert np.array_equal(np.asarray(Image.open(out)),
                          np.arange(48, dtype=np.uint8).reshape(4, 4, 3)[1::2, 1::2])


def test_failed_input_exits_1_with_its_message(tmp_path):
    p = run_process("stats", str(tmp_path / "missing.png"))
    assert p.returncode == 1
    assert "missing.png" in p.stderr and "Traceback" not in p.stderr


def test_usage_error_exits_2():
    p = run_process("pool", "-k", "0", "x.png")
    assert p.returncode == 2 and "kernel" in p.stderr.lower()


def test_help_and_version_exit_0():
    assert run_process("--help").returncode == 0
    p = run_process("--version")
    assert p.returncode == 0 and "poolcli" in p.stdout


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """200 tiny images: their JSON lines are more than a pipe buffer (64 KiB)."""
    d = tmp_path_factory.mktemp("many")
    paths = []
    for i in range(200):
        path = d / f"img{i:03d}.png"
        Image.fromarray(np.full((3, 3, 3), i, np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_large_output_is_flushed_before_exit(many):
    p = run_process("stats", *many, "--json")
    assert p.returncode == 0
    assert len(p.stdout) > 65536
    records = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(records) == 201 and records[-1]["summary"]["ok"] == 200
    assert [r["input"] for r in records[:-1]] == many


def test_reader_closing_the_pipe_gives_no_traceback(many):
    p = subprocess.Popen(POOLCLI + ["stats", *many, "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.read(100)
    p.stdout.close()  # poolcli still has more than a pipe buffer to write
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 1
    assert "Traceback" not in err and "Exception ignored" not in err


@pytest.mark.parametrize("argv", [["--help"], ["ops"], ["ops", "--json"], ["pool", "--help"],
                                  ["norm", "--help"], ["chain", "--help"], ["compare", "--help"]])
def test_help_and_ops_import_neither_numpy_nor_codecs_nor_rich(argv):
    """Start-up is part of every command's time: the CLI layer loads click and the registry;
    numpy, the codecs, rich and the application layer only when a command does work."""
    probe = ("import sys\nfrom poolcli.cli import main\n"
             f"try:\n    main.main(args={argv!r}, standalone_mode=False)\n"
             "except SystemExit:\n    pass\n"
             "bad = [m for m in ('numpy', 'PIL', 'rich', 'tifffile', 'imagecodecs', "
             "'poolcli.app.runner', 'poolcli.imageio') if m in sys.modules]\n"
             "print('loaded:' + ','.join(bad))\n")
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == "loaded:"


EXTRAS = ("fsspec", "s3fs", "gcsfs", "adlfs", "botocore", "aiobotocore", "dask", "distributed")


@pytest.mark.parametrize("argv", [
    ["pool", "--op", "max", "-k", "2", "{src}", "-o", "{out}/a.png", "--save-indices"],
    ["pool", "--op", "avg", "-k", "2", "{src}", "{src2}", "-o", "{out}", "-j", "2", "--json"],
    ["norm", "--op", "batch", "--fit", "--save-stats", "{out}/s.json", "{src}", "{src2}",
     "-o", "{out}"],
    ["chain", "-i", "{src}", "-o", "{out}", "pool", "--op", "max", "unpool"],
    ["stats", "{src}", "--json"],
    ["pool", "--help"],
], ids=["pool", "pool-j2", "norm-fit", "chain", "stats", "help"])
def test_local_runs_import_no_cluster_or_store_package(argv, tmp_path):
    """The extras (Dask, fsspec and its protocols) cost hundreds of milliseconds to import: a run
    on local paths, without --dask, imports none of them, workers included (-j 2 forks after
    the parent's imports, so the parent's modules are the workers')."""
    src, src2 = tmp_path / "in.png", tmp_path / "in2.png"
    rng = np.random.default_rng(0)
    for p in (src, src2):
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(p)
    out = tmp_path / "out"
    out.mkdir()
    args = [a.format(src=src, src2=src2, out=out) for a in argv]
    probe = ("import sys\nfrom poolcli.cli import main\n"
             f"try:\n    main.main(args={args!r}, standalone_mode=False)\n"
             "except SystemExit as e:\n    assert not e.code, e.code\n"
             f"bad = [m for m in {EXTRAS!r} if m in sys.modules]\n"
             "print('loaded:' + ','.join(bad), file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines()[-1] == "loaded:", p.stderr
    if argv[0] != "stats" and "--help" not in argv:
        assert any(out.iterdir())  # the run did its work
