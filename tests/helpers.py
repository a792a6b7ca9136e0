"""Helpers shared by the CLI and application-layer tests: running poolcli (in this process
through click's CliRunner, or as a real process), reading its JSON lines, hashing files, and
where the sample images are. Fixtures built on them (``workdir``, ``samples``) live in
``conftest.py``."""

from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_images"
#: The sample PNGs by name, sorted (for parametrizing over every sample).
SAMPLE_PNGS = sorted(p.name for p in SAMPLES.glob("*.png"))
#: The command line of poolcli as a real process (what the console script runs).
POOLCLI = [sys.executable, "-m", "poolcli"]


def run(*args, input=None, **kw):
    """``poolcli ARGS...`` through click's CliRunner; any exception fails the test."""
    from click.testing import CliRunner

    from poolcli.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], input=input,
                              catch_exceptions=False, **kw)


def run_process(*args, **kw):
    """``python -m poolcli ARGS...`` as a real process, output captured as text."""
    return subprocess.run(POOLCLI + [str(a) for a in args], capture_output=True, text=True, **kw)


def json_lines(result) -> list[dict]:
    """Every non-empty stdout line of a CliRunner result, parsed (the summary object last)."""
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def records(result) -> list[dict]:
    """JSON records of a --json run, without the final summary object."""
    lines = json_lines(result)
    assert "summary" in lines[-1]
    return [rec for rec in lines if "summary" not in rec]


def digest(path) -> str:
    """SHA-256 of a file's bytes (to show that a file was not changed)."""
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()
