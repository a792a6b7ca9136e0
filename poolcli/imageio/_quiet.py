"""Libraries' chatter during a decode, caught and handed back as notes on the file.

Private to :mod:`poolcli.imageio`. Decoders talk: imagecodecs logs libpng's ``PNG warning: ...`` and
tifffile logs warnings (``<TiffPages @8> invalid circular reference``), which logging's last-resort
handler prints on ``sys.stderr``; Pillow and numpy raise Python warnings; code may write to
``sys.stderr`` directly, and C libraries straight to file descriptor 2. :func:`captured` catches all
of it for the decode running in the calling thread, and :meth:`Chatter.notes` turns them into at
most a few one-line notes (``decoder warning (libpng): sRGB: invalid``), or nothing for chatter
poolcli already handles.

Thread safety: file descriptor 2, ``sys.stderr``, the warning filters and the loggers are
process-wide, so captures are serialized by one lock and everything else is routed by
thread. The decode's threads are the capturing thread and the threads started during the
capture (tifffile decodes tiles in a pool of its own); any other thread's writes to
``sys.stderr`` are held back and written out when the capture ends, and its warnings and log
records go where they would have gone. Bytes written to
descriptor 2 cannot be told apart by thread: lines starting with ``poolcli`` (poolcli's own
messages) are written out again after the capture, the rest become notes of the file; nothing
is dropped. The capture file is per process (worker processes do not share it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from typing import Iterator

__all__ = ["Chatter", "captured"]

_LOCK = threading.RLock()
_MAX_NOTES = 3
_MAX_CHARS = 200
_FD_READ_MAX = 64 << 10

# Chatter about cases poolcli already handles: dropped, not noted.
_SILENCED = (
    # imagecodecs reads interlaced PNGs with png_read_image; the pixels are right.
    "Interlace handling should be turned on when using png_read_image",
)


class Chatter:
    """What libraries said during one decode: ``(origin, text)`` pieces, in order."""

    def __init__(self) -> None:
        self._pieces: list[tuple[str, str]] = []
        self._partial: dict[str, str] = {}

    def add(self, origin: str, text: str) -> None:
        """A whole message (a warning, a log record)."""
        for line in str(text).splitlines():
            self._pieces.append((origin, line))

    def write(self, origin: str, text: str) -> None:
        """Stream text, possibly in pieces of lines."""
        text = self._partial.pop(origin, "") + str(text)
        lines = text.split("\n")
        self._partial[origin] = lines.pop()
        self._pieces.extend((origin, line) for line in lines)

    def lines(self) -> list[tuple[str, str]]:
        """``(origin, line)`` of everything said, in order, blank lines left out."""
        pieces = self._pieces + [(o, t) for o, t in self._partial.items() if t]
        return [(o, t.strip()) for o, t in pieces if t.strip()]

    def notes(self) -> list[str]:
        """One note per distinct message (at most three, then a count of the rest)."""
        seen: list[str] = []
        for origin, text in self.lines():
            if any(s in text for s in _SILENCED):
                continue
            note = _note(origin, text)
            if note not in seen:
                seen.append(note)
        if len(seen) > _MAX_NOTES:
            rest = len(seen) - _MAX_NOTES
            seen = seen[:_MAX_NOTES] + [f"{rest} more decoder warning{'s' if rest > 1 else ''}"]
        return seen


def _note(origin: str, text: str) -> str:
    if origin == "stderr" and text.startswith("PNG warning: "):
        origin, text = "libpng", text[len("PNG warning: "):]
    text = re.sub(r"<[^<>]{0,200}>\s*", "", text).strip() or text  # <TiffPages @8> ...
    text = "".join(c if c.isprintable() else "?" for c in text)
    if len(text) > _MAX_CHARS:
        text = text[:_MAX_CHARS - 3] + "..."
    return f"decoder warning ({origin}): {text}"


@contextlib.contextmanager
def captured() -> Iterator[Chatter]:
    """Catch the chatter of the code run inside the block (see the module docstring)."""
    with _LOCK:
        chatter = Chatter()
        owner = _Owner()
        with _python_stderr(owner, chatter), _python_warnings(owner, chatter), \
                _library_log(owner, chatter), _fd_stderr(chatter):
            yield chatter


# ---- sys.stderr ----------------------------------------------------------------------------------


class _Owner:
    """Which threads belong to the decode: this one, and those started after it began."""

    def __init__(self) -> None:
        self._me = threading.get_ident()
        self._before = {t.ident for t in threading.enumerate()} - {self._me}

    def __contains__(self, ident: int | None) -> bool:
        return ident == self._me or ident not in self._before


class _StderrProxy:
    """``sys.stderr`` during a capture: the capturing thread's text is chatter, other threads'
    text is held back and written to the real stream when the capture ends."""

    def __init__(self, real, owner: _Owner, chatter: Chatter):
        self._real, self._owner, self._chatter = real, owner, chatter
        self.held: list[str] = []

    def write(self, text):
        if threading.get_ident() in self._owner:
            self._chatter.write("stderr", text)
        else:
            self.held.append(text)
        return len(text)

    def flush(self):
        pass

    def __getattr__(self, name):
        return getattr(self._real, name)


@contextlib.contextmanager
def _python_stderr(owner: _Owner, chatter: Chatter):
    real = sys.stderr
    if real is None:
        yield
        return
    proxy = _StderrProxy(real, owner, chatter)
    sys.stderr = proxy
    try:
        yield
    finally:
        if sys.stderr is proxy:
            sys.stderr = real
        if proxy.held:
            with contextlib.suppress(Exception):
                real.write("".join(proxy.held))
                real.flush()


# ---- warnings and log records --------------------------------------------------------------------


def _origin(filename: str) -> str:
    path = filename.replace("\\", "/")
    for part, name in (("/PIL/", "Pillow"), ("/tifffile/", "tifffile"),
                       ("/imagecodecs/", "imagecodecs"), ("/numpy/", "numpy")):
        if part in path:
            return name
    return os.path.splitext(os.path.basename(path))[0] or "python"


@contextlib.contextmanager
def _python_warnings(owner: _Owner, chatter: Chatter):
    with warnings.catch_warnings():
        previous = warnings.showwarning
        # "always": a warning already shown once in this process (for another file) is seen too.
        warnings.simplefilter("always")

        def show(message, category, filename, lineno, file=None, line=None):
            # a ResourceWarning comes from the garbage collector finalizing whatever object it
            # met (often not this file's): never a decoder's word about this file
            if threading.get_ident() in owner and not issubclass(category, ResourceWarning):
                chatter.add(_origin(filename), f"{category.__name__}: {message}")
            else:
                previous(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


class _Catch(logging.Filter):
    def __init__(self, owner: _Owner, chatter: Chatter):
        super().__init__()
        self._owner, self._chatter = owner, chatter

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread not in self._owner or record.levelno < logging.WARNING:
            return True
        origin = {"PIL": "Pillow"}.get(record.name.split(".")[0], record.name.split(".")[0])
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        if message.startswith("PNG warning: "):
            origin, message = "libpng", message[len("PNG warning: "):]
        self._chatter.add(origin, message)
        return False


def _library_loggers() -> list[logging.Logger]:
    """The loggers decoders log to: tifffile, imagecodecs (libpng's warnings), Pillow's."""
    names = ["tifffile", "imagecodecs"] + [
        name for name in list(logging.Logger.manager.loggerDict)
        if name == "PIL" or name.startswith("PIL.")]
    return [logging.getLogger(name) for name in names]


@contextlib.contextmanager
def _library_log(owner: _Owner, chatter: Chatter):
    loggers = _library_loggers()
    catch = _Catch(owner, chatter)
    for logger in loggers:
        logger.addFilter(catch)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(catch)


# ---- file descriptor 2 ---------------------------------------------------------------------------

_CAPTURE: dict[int, int] = {}  # pid -> the capture file descriptor of that process


def _capture_fd() -> int:
    """A deleted temporary file's descriptor, one per process (a forked child must not share
    its parent's file offset); a bare descriptor, closed by the OS at exit."""
    pid = os.getpid()
    fd = _CAPTURE.get(pid)
    if fd is None:
        _CAPTURE.clear()
        fd, name = tempfile.mkstemp(prefix="poolcli-stderr-")
        os.unlink(name)
        _CAPTURE[pid] = fd
    return fd


@contextlib.contextmanager
def _fd_stderr(chatter: Chatter):
    try:
        with contextlib.suppress(Exception):
            sys.__stderr__.flush()
        fd = _capture_fd()
        saved = os.dup(2)
    except OSError:  # no descriptor 2, no temporary directory: nothing to capture
        yield
        return
    try:
        os.dup2(fd, 2)
    except OSError:
        os.close(saved)
        yield
        return
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        _collect(fd, chatter, saved_to=2)


def _collect(fd: int, chatter: Chatter, saved_to: int) -> None:
    """Move what the capture file got into ``chatter``; poolcli's own lines go back out."""
    size = os.fstat(fd).st_size
    if not size:
        return
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while size > 0:
        chunk = os.read(fd, min(size, _FD_READ_MAX))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    raw = b"".join(chunks)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    ours = []
    for line in raw.decode("utf-8", "replace").splitlines(keepends=True):
        if line.startswith("poolcli"):
            ours.append(line)
        else:
            chatter.write("stderr", line)
    if ours:
        with contextlib.suppress(OSError):
            os.write(saved_to, "".join(ours).encode("utf-8", "replace"))
