"""poolcli.imageio.listfile: ``--from-list`` files, from disk, pipes and standard input."""

from __future__ import annotations

import io
import os
import sys
import threading
import time

from sidefiles import assert_refused, no_hang  # noqa: F401  (no_hang: autouse)

from poolcli.errors import ListFileError
from poolcli.imageio import listfile
from poolcli.imageio.listfile import read_list


def refused(path, *words) -> str:
    shown = "<stdin>" if path == "-" else str(path)
    return assert_refused(ListFileError, read_list, path, *words, shown=shown)


def test_paths_comments_blank_lines_and_whitespace(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"\xef\xbb\xbfa.png\n# a comment\n\n   \n  b c.png  \r\n\t#indented comment\n"
                     b"dir/d.tif")
    assert read_list(path) == ["a.png", "b c.png", "dir/d.tif"]
    assert read_list(str(path)) == read_list(os.fsencode(path))


def test_odd_bytes_survive_and_unicode_line_breaks_do_not_split(tmp_path):
    raw = b"caf\xe9.png"  # Latin-1, not UTF-8
    path = tmp_path / "list.txt"
    path.write_bytes(raw + b"\n" + "a\u2028b\x85.png".encode() + b"\n")
    first, second = read_list(path)
    assert os.fsencode(first) == raw
    assert second == "a\u2028b\x85.png"


def test_empty_list_is_empty(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    assert read_list(tmp_path / "empty.txt") == []
    (tmp_path / "comments.txt").write_text("# nothing yet\n")
    assert read_list(tmp_path / "comments.txt") == []


def test_nul_bytes_are_refused_with_the_line(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"a.png\nb.png\nc.png\x00d.png\x00")
    refused(path, "line 3", "NUL")
    (tmp_path / "binary.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    refused(tmp_path / "binary.png", "line 3", "NUL")


def test_missing_directory_and_devices(tmp_path):
    refused(tmp_path / "none.txt", "no such file")
    refused(tmp_path, "directory")
    refused("/dev/zero", "character device")


def test_fifo_without_a_writer_does_not_hang(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert read_list(fifo) == []
    assert time.monotonic() - started < 5


def test_pipe_with_a_writer_is_read():
    read_fd, write_fd = os.pipe()  # process substitution, <(find ...), hands over a pipe like this

    def feed():
        with open(write_fd, "wb") as fh:
            fh.write(b"a.png\n")
            time.sleep(0.2)  # the reader waits for the rest
            fh.write(b"b.png\n")

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        assert read_list(f"/dev/fd/{read_fd}") == ["a.png", "b.png"]
    finally:
        writer.join()
        os.close(read_fd)


def test_size_and_line_caps(tmp_path, monkeypatch):
    path = tmp_path / "list.txt"
    path.write_text("a.png\nb.png\nc.png\nd.png\n")
    monkeypatch.setattr(listfile, "MAX_LINES", 3)
    refused(path, "4 lines", "more than the 3")
    monkeypatch.setattr(listfile, "MAX_LINES", 4)
    assert len(read_list(path)) == 4
    monkeypatch.setattr(listfile, "MAX_BYTES", 10)
    refused(path, "over the 10 bytes limit")


def test_a_million_blank_lines_are_refused_quickly(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"\n" * (listfile.MAX_LINES + 1))
    started = time.monotonic()
    refused(path, "lines")
    assert time.monotonic() - started < 2


def test_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x.png\n# c\ny\xff.png\n")))
    first, second = read_list("-")
    assert first == "x.png" and os.fsencode(second) == b"y\xff.png"
    monkeypatch.setattr(sys, "stdin", io.StringIO("text.png\n"))  # no .buffer
    assert read_list("-") == ["text.png"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a\x00")))
    refused("-", "line 1", "NUL")
    monkeypatch.setattr(sys, "stdin", None)
    refused("-", "not available")


def test_stdin_over_the_cap(monkeypatch):
    monkeypatch.setattr(listfile, "MAX_BYTES", 8)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"abcdefgh\nmore\n")))
    refused("-", "limit")
