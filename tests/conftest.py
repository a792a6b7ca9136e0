import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_images"


@pytest.fixture
def samples():
    return SAMPLES


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A temporary current directory holding copies of two sample images."""
    import shutil

    for name in ("chelsea.png", "camera.png"):
        shutil.copy(SAMPLES / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path
