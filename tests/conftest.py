import os

import pytest
from hypothesis import settings

from helpers import SAMPLES

# Hypothesis profiles: "ci" (the default, what CI runs) and "long" for a deeper search:
#   HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz.py
# Tests that set max_examples themselves keep their own number in both.
settings.register_profile("ci", max_examples=100, deadline=None, print_blob=True)
settings.register_profile("long", max_examples=5000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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

