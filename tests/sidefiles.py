"""Helpers shared by the side-file loader tests (tests/test_imageio_{indexmap,statsfile,
listfile,pipelinefile}.py): writing crafted files, and the one-line-error assertion."""

from __future__ import annotations

import json
import signal

import pytest

from poolcli.errors import ExitStatus, SideFileError


@pytest.fixture(autouse=True)
def no_hang():
    """A loader that blocks (on a FIFO, say) fails the test instead of hanging the suite."""
    def timeout(signum, frame):
        raise AssertionError("the loader blocked")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def write(tmp_path, content, name: str) -> str:
    """Write ``content`` (bytes, text, or anything else as JSON) to ``tmp_path/name``."""
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")
    return str(path)


def assert_refused(error: type[SideFileError], load, path, *words, shown=None, **kwargs) -> str:
    """``load(path, **kwargs)`` raises ``error``: a usage error (exit 2) in one line that starts
    with the file's name (``shown``, default ``str(path)``) and contains every one of ``words``
    (the field at fault, the problem). Returns the message."""
    with pytest.raises(error) as info:
        load(path, **kwargs)
    message = str(info.value)
    assert isinstance(info.value, SideFileError)
    assert info.value.exit_status == ExitStatus.USAGE
    assert "\n" not in message
    assert message.startswith(f"{shown or path}: "), message
    for word in words:
        assert word in message, (word, message)
    return message
