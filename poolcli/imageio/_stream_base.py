"""The band reader and band writer every streaming format shares (see :mod:`poolcli.imageio.stream`).

Private to :mod:`poolcli.imageio`. A format's reader only says how to decode the next rows
(:meth:`BandReader._produce`); keeping the rows a caller may ask for again, and checking the
calls, is done here once. A format's writer only encodes rows to an open binary file
(:meth:`BandWriter._encode` / :meth:`BandWriter._finish`); the temporary file, the atomic
commit with the no-clobber rule of :func:`poolcli.imageio.files.atomic_write`, and the clean-up on
abort are done here once.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from typing import BinaryIO, Callable

import numpy as np

from poolcli.errors import ImageWriteError
from poolcli.imageio._quiet import captured
from poolcli.imageio.files import (
    TEMP_SUFFIX,
    default_file_mode,
    link_no_clobber,
    os_problem,
    retrying,
    signals_blocked,
    temp_prefix,
)

__all__ = ["BandReader", "BandWriter", "ReadAhead", "started_pool"]


class BandReader:
    """Rows of one image, decoded a band at a time (a context manager).

    Attributes are those of :class:`poolcli.imageio.Image` for the same file: ``height``,
    ``width``, ``channels`` (names), ``dtype``, ``format``, ``mode``, ``notes`` and ``source``.
    What the decoding libraries say is captured as in ``read_image``: at open it is in
    ``notes``; a warning met later, while rows are decoded, is added to ``notes`` then.
    """

    def __init__(self, *, source: str, fmt: str, height: int, width: int,
                 channels: tuple[str, ...], dtype: np.dtype, mode: str, notes: list[str]):
        self.source, self.format, self.mode, self.notes = source, fmt, mode, notes
        self.height, self.width = int(height), int(width)
        self.channels, self.dtype = tuple(channels), np.dtype(dtype)
        self._kept: list[np.ndarray] = []  # decoded rows not yet given up, in order
        self._first = 0  # the image row of self._kept[0][0]
        self._next = 0  # the first row not decoded yet
        self._closed = False

    # ---- what a format implements ----

    def _produce(self, wanted: int) -> np.ndarray:
        """The next rows, from row ``self._next`` on: at least one row, ``(n, W, C)`` in the
        reader's dtype. ``wanted`` is the first row the caller needs: a format that can seek
        may skip the rows before it (and return rows starting there, setting ``self._next``)."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free the format's resources (files, decompressors)."""

    def use_threads(self, count: int) -> None:
        """Let the format decode with up to ``count`` threads of its own (call it before the
        first :meth:`read_rows`); the rows are the same. The default ignores it."""

    #: Whether :meth:`rows_at` works: a format whose rows can be decoded from anywhere.
    random_access = False

    def rows_at(self, start: int, stop: int) -> np.ndarray:
        """``(stop - start, W, C)`` rows, the values :meth:`read_rows` gives, for a format with
        :attr:`random_access`: callable from several threads at once, each band decoding its
        own rows where it is computed. The file's pieces that two bands share are decoded once,
        by the threads that ask for them, and kept until :meth:`release_before` gives them up.
        No library chatter is captured here (a format offers this only where decoding a piece
        can only raise), so :attr:`notes` are those of the open."""
        raise NotImplementedError(f"{self.format} rows are read in order only")

    def release_before(self, row: int) -> None:
        """Rows before ``row`` will not be asked of :meth:`rows_at` again."""

    def _check_rows(self, start: int, stop: int) -> None:
        if self._closed:
            raise ValueError(f"{self.source}: band reader is closed")
        if not 0 <= start < stop <= self.height:
            raise ValueError(f"rows {start}:{stop} outside 0:{self.height}")

    # ---- the interface ----

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """``(stop - start, W, C)`` rows, exactly the values :func:`read_image` gives.

        ``start`` never decreases from one call to the next; the rows may overlap the previous
        call's (they are kept until a call starts past them). Asking for rows already given up
        raises ``ValueError``; decoding problems raise :class:`~poolcli.errors.ImageReadError`.
        """
        self._check_rows(start, stop)
        if start < self._first:
            raise ValueError(f"rows from {start} were already given up (kept from {self._first})")
        self._drop_before(start)
        while self._next < stop:
            with captured() as chatter:
                block = self._produce(start)
            self.notes.extend(n for n in chatter.notes() if n not in self.notes)
            if not self._kept:
                self._first = self._next
            self._kept.append(block)
            self._next += len(block)
            self._drop_before(start)
        return self._assemble(start, stop)

    def _drop_before(self, row: int) -> None:
        while self._kept and self._first + len(self._kept[0]) <= row:
            self._first += len(self._kept.pop(0))
        if not self._kept:
            self._first = max(self._first, min(row, self._next))

    def _assemble(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.width, len(self.channels)), self.dtype)
        row = self._first
        for block in self._kept:
            lo, hi = max(start, row), min(stop, row + len(block))
            if lo < hi:
                out[lo - start:hi - start] = block[lo - row:hi - row]
            row += len(block)
        return out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._kept = []
            self._release()

    def __enter__(self) -> BandReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.source!r} {self.format} {self.width}x{self.height}"
                f" {''.join(self.channels)} {self.dtype}>")


class BandWriter:
    """Rows written in order to a temporary file beside the target, renamed on :meth:`commit`.

    A context manager: an exception inside the ``with`` block, or leaving it without
    :meth:`commit`, aborts (the temporary file is removed, the target never appears).
    """

    def __init__(self, target: str, *, height: int, width: int, channels: int,
                 dtype: np.dtype, overwrite: bool,
                 on_commit: Callable[[str], None] | None = None):
        self.target, self.height, self.width = target, int(height), int(width)
        self.channel_count, self.dtype = int(channels), np.dtype(dtype)
        self.rows_written = 0
        self._overwrite, self._on_commit = overwrite, on_commit
        self._fh: BinaryIO | None = None
        self._temp: str | None = None
        self._done = False
        self._open_temporary()

    # ---- what a format implements ----

    def _start(self, fh: BinaryIO) -> None:
        """Write what comes before the rows (called once, from the constructor)."""

    def _encode(self, fh: BinaryIO, rows: np.ndarray) -> None:
        raise NotImplementedError

    def _finish(self, fh: BinaryIO) -> None:
        """Write what comes after the last row."""

    def _discard(self) -> None:
        """Stop any work still running on the file (called by :meth:`abort` before it closes)."""

    # ---- the interface ----

    def encoder(self):
        """A thread-safe ``encode(rows, above)`` whose results :meth:`write_encoded` takes, for
        a format that can encode rows where they are made (PNG); ``None`` otherwise."""
        return None

    def write_encoded(self, piece) -> None:
        raise NotImplementedError(f"{type(self).__name__} takes rows, not encoded pieces")

    def write_rows(self, rows: np.ndarray) -> None:
        """Append ``(n, W, C)`` rows (any strides) of the writer's dtype, in order."""
        if self._fh is None:
            raise ValueError(f"{self.target}: band writer is closed")
        rows = np.asarray(rows)
        if rows.ndim == 2 and self.channel_count == 1:
            rows = rows[:, :, np.newaxis]
        if rows.ndim != 3 or rows.shape[1:] != (self.width, self.channel_count):
            raise ValueError(f"rows of shape {rows.shape} for an image of "
                             f"{self.width} x {self.channel_count} channels")
        if rows.dtype != self.dtype:
            raise ValueError(f"rows of dtype {rows.dtype} for a {self.dtype} image")
        if self.rows_written + len(rows) > self.height:
            raise ValueError(f"{self.rows_written + len(rows)} rows for an image of {self.height}")
        if len(rows):
            self._guarded(lambda fh: self._encode(fh, rows))
            self.rows_written += len(rows)

    def commit(self) -> None:
        """Finish the file and rename it onto the target (``on_commit(target)`` right after)."""
        if self._fh is None:
            raise ValueError(f"{self.target}: band writer is closed")
        if self.rows_written != self.height:
            self.abort()
            raise ImageWriteError(f"{self.target}: {self.rows_written} rows written of "
                                  f"{self.height}; nothing committed")
        self._guarded(self._finish)
        self._guarded(lambda fh: fh.close())
        try:
            self._rename()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the temporary file (the target is left as it was). Safe to call twice."""
        self._discard()
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass
        temp, self._temp = self._temp, None
        if temp is not None:
            try:
                os.unlink(temp)
            except OSError:
                pass

    def __enter__(self) -> BandWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.abort()  # after commit() there is nothing left to abort

    # ---- the file ----

    def _open_temporary(self) -> None:
        target = self.target
        if os.path.isdir(target):
            raise ImageWriteError(f"{target}: is a directory")
        # inside retried_commits() an existing target may be this very output, committed by an
        # earlier attempt of a retried task: the commit (link_no_clobber) compares the bytes
        if not self._overwrite and not retrying() and os.path.lexists(target):
            raise ImageWriteError(f"{target}: exists (use --force to replace)")
        directory = os.path.dirname(os.path.abspath(target))
        try:
            fh = tempfile.NamedTemporaryFile(
                mode="wb", dir=directory, suffix=TEMP_SUFFIX, delete=False,
                prefix=temp_prefix(directory, os.path.basename(target)))
        except FileNotFoundError:
            raise ImageWriteError(f"{target}: directory does not exist") from None
        except PermissionError:
            raise ImageWriteError(
                f"{target}: permission denied (directory not writable?)") from None
        except OSError as exc:
            raise ImageWriteError(f"{target}: {os_problem(exc, 'cannot write')}") from None
        self._fh, self._temp = fh, fh.name
        self._guarded(self._start)

    def _guarded(self, step: Callable[[BinaryIO], None]) -> None:
        """Run one writing step; any failure aborts and becomes one ImageWriteError line."""
        try:
            step(self._fh)
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise ImageWriteError(
                    f"{self.target}: {os_problem(exc, 'cannot write')}") from None
            if isinstance(exc, (ImageWriteError, ValueError)) or not isinstance(exc, Exception):
                raise
            raise ImageWriteError(
                f"{self.target}: encoding failed ({type(exc).__name__}: {exc})") from exc

    def _rename(self) -> None:
        temp, target = self._temp, self.target
        try:
            os.chmod(temp, default_file_mode())
            with signals_blocked():
                if self._overwrite:
                    os.replace(temp, target)
                else:
                    link_no_clobber(temp, target)  # removes the temporary file
                self._temp, self._fh = None, None
                if self._on_commit is not None:
                    self._on_commit(target)
        except ImageWriteError:
            raise
        except FileNotFoundError:
            raise ImageWriteError(f"{target}: directory does not exist") from None
        except PermissionError:
            raise ImageWriteError(
                f"{target}: permission denied (directory not writable?)") from None
        except OSError as exc:
            raise ImageWriteError(f"{target}: {os_problem(exc, 'cannot write')}") from None


def started_pool(count: int, name: str):
    """A ``ThreadPoolExecutor`` of ``count`` threads named ``name``, every thread started now:
    a thread started later, while a reader thread captures a decoder's chatter, would count as
    the decoder's (see :mod:`poolcli.imageio._quiet`)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(count, thread_name_prefix=name)
    barrier = threading.Barrier(count)
    for future in [pool.submit(barrier.wait) for _ in range(count)]:
        future.result()
    return pool


class ReadAhead:
    """The items of an iterator, produced ahead in a thread of their own (at most ``depth``
    waiting), in order: decoding the next bands overlaps the work on these. An exception comes
    out where its item would have; :meth:`close` stops the thread and waits for it. The thread
    starts on the first item asked for."""

    def __init__(self, items, depth: int, name: str = "poolcli-band-reader"):
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(items,), daemon=True,
                                        name=name)
        self._done = False  # the end, an exception or close(): nothing more comes

    def _produce(self, items) -> None:
        try:
            for item in items:
                if not self._put((True, item)):
                    return
        except BaseException as exc:  # handed to the consumer
            self._put((False, exc))
            return
        self._put((False, None))

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        if self._thread.ident is None:
            self._thread.start()
        ok, item = self._queue.get()
        if ok:
            return item
        self._done = True
        if item is None:
            raise StopIteration
        raise item

    def close(self) -> None:
        self._done = True
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()
