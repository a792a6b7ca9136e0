"""``--from-list`` files: one input path a line.

Blank lines and lines starting with ``#`` are skipped; surrounding whitespace is stripped (a
path cannot start or end with spaces here); a UTF-8 byte-order mark is dropped. Bytes that are
not UTF-8 survive as surrogate escapes (like the names ``os.listdir`` returns), so any file name
can be listed. Lines are split at ``\\n`` only (``\\r\\n`` works), never at other Unicode line
breaks, which are legal in file names.

Read from a regular file, a pipe (``--from-list <(find ...)``) or standard input (``-``), at most
:data:`MAX_BYTES` and :data:`MAX_LINES`. Any problem raises :class:`~poolcli.errors.ListFileError`
naming the file (``<stdin>`` for ``-``) and, for a NUL byte, the line.
"""

from __future__ import annotations

import os
import sys

from poolcli.errors import ListFileError
from poolcli.imageio._sidefile import read_capped, read_side_file

#: Largest list read, in bytes, and most lines in it (blank and comment lines included).
MAX_BYTES = 64 << 20
MAX_LINES = 1_000_000

STDIN = "-"

__all__ = ["MAX_BYTES", "MAX_LINES", "STDIN", "parse_list", "read_list"]


def read_list(path: str | os.PathLike[str]) -> list[str]:
    """The paths listed in ``path`` (``"-"`` = standard input), in order.

    Raises
    ------
    ListFileError
        Missing file, a directory or device (``/dev/zero``), more than :data:`MAX_BYTES` or
        :data:`MAX_LINES`, a NUL byte (a binary file, or ``find -print0`` output).
    """
    if isinstance(path, str) and path == STDIN:
        name = "<stdin>"
        data = read_capped(_stdin(), name, error=ListFileError, what="list file",
                           max_bytes=MAX_BYTES)
    else:
        name, data = read_side_file(path, error=ListFileError, what="list file",
                                    max_bytes=MAX_BYTES, allow_pipe=True, allow_empty=True)
    return parse_list(data, name)


def _stdin():
    stream = sys.stdin
    if stream is None:
        raise ListFileError("<stdin>: standard input is not available")
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        return buffer
    return _TextAsBytes(stream)


class _TextAsBytes:
    """A text stream (a test harness's stdin) read as UTF-8 bytes."""

    def __init__(self, stream):
        self._stream = stream

    def read(self, size: int) -> bytes:
        return self._stream.read(size).encode("utf-8", "surrogateescape")


def parse_list(data: bytes, name: str) -> list[str]:
    """Paths from the bytes of a list file named ``name`` (see the module docstring)."""
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ListFileError(f"{name}: line {line} holds a NUL byte: not a text list of paths "
                            "(for find -print0 output use find -print)")
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if lines > MAX_LINES:
        raise ListFileError(f"{name}: {lines} lines, more than the {MAX_LINES} a list may hold "
                            "(split it, or give a directory)")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    text = data.decode("utf-8", errors="surrogateescape")
    paths = []
    for line in text.split("\n"):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            paths.append(entry)
    return paths
