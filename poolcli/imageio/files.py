"""Writing files safely: atomic writes, output directories, short messages for OS errors.

Every file poolcli writes (images, index maps, statistics) goes through :func:`atomic_write`: the
data goes to a hidden temporary file ``.<name>.<random>.part`` in the target directory, which
is renamed onto the target only when complete (``os.link`` when not overwriting, so an existing
file is never clobbered by a race). On any failure, ``KeyboardInterrupt`` included, the temporary
file is removed, so a crash leaves no half file. Import-light: no numpy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Callable

from poolcli.errors import ImageWriteError

__all__ = [
    "NAME_MAX",
    "TEMP_SUFFIX",
    "atomic_write",
    "default_file_mode",
    "link_no_clobber",
    "make_parent_dirs",
    "os_problem",
    "retried_commits",
    "retrying",
    "temp_prefix",
]

#: Suffix of the temporary files (``.out.png.k3j9x0qa.part``); batch clean-up looks for it.
TEMP_SUFFIX = ".part"

#: File-name length limit in bytes when the file system does not say (ext4, XFS, tmpfs, ...).
NAME_MAX = 255

# tempfile.NamedTemporaryFile puts 8 random characters between prefix and suffix.
_RANDOM_CHARS = 8

_KNOWN_ERRNOS = {
    errno.ELOOP: "too many levels of symbolic links (symlink loop?)",
    errno.ENAMETOOLONG: "file name too long",
    errno.ENOTDIR: "a parent of the path is not a directory",
    errno.EISDIR: "is a directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EIO: "input/output error",
}


def os_problem(exc: OSError, fallback: str) -> str:
    """A short phrase for an OSError (no path, no errno number).

    Known errnos get a fixed phrase (``"disk full (no space left on device)"``); anything else is
    ``"<fallback> (<strerror>)"``, e.g. ``"cannot write (Stale file handle)"``.
    """
    if exc.errno in _KNOWN_ERRNOS:
        return _KNOWN_ERRNOS[exc.errno]
    detail = exc.strerror or str(exc) or type(exc).__name__
    return f"{fallback} ({detail})"


def default_file_mode() -> int:
    """Permission bits a plain ``open(path, "w")`` would give (0o666 minus the umask)."""
    global _FILE_MODE
    if _FILE_MODE is None:
        umask = os.umask(0o022)
        os.umask(umask)
        _FILE_MODE = 0o666 & ~umask
    return _FILE_MODE


_FILE_MODE: int | None = None


def temp_prefix(directory: str, basename: str) -> str:
    """The temporary-file prefix ``.<basename>.`` for a target in ``directory``.

    When ``.<basename>.<8 random>.part`` would pass the file system's name limit (255 bytes on
    most), ``basename`` is cut (on a character boundary) so that the temporary name fits: a
    target whose own name is near the limit can still be written.
    """
    try:
        limit = int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        limit = NAME_MAX
    if limit <= 0:
        limit = NAME_MAX
    budget = limit - len(b"..") - _RANDOM_CHARS - len(TEMP_SUFFIX)
    name = basename
    if len(os.fsencode(name)) > budget:
        encoded = os.fsencode(name)[: max(0, budget)]
        name = encoded.decode("utf-8", errors="ignore")  # drop a character cut in half
        while name and len(os.fsencode(name)) > budget:  # surrogate escapes re-encode longer
            name = name[:-1]
    return f".{name}."


@contextlib.contextmanager
def signals_blocked():
    """SIGINT and SIGTERM wait until the block ends, so a rename and the bookkeeping that says
    it happened are never split by an interrupt.

    Masking the main thread (``pthread_sigmask``) is not enough in a process with other threads
    (a Dask client's event loop, an executor's manager thread): the kernel hands the signal to a
    thread that does not block it, and Python then runs the handler in the main thread, inside
    the block. So the block also swaps in handlers that only note the signal, and the noted
    signal goes to the previous handler when the block ends (outermost block last).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread runs signal handlers
        return
    noted: list[int] = []
    previous = {}
    mask = None
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not None:  # None: set outside Python, kept as is
                previous[signum] = signal.signal(signum, lambda s, _frame: noted.append(s))
        if hasattr(signal, "pthread_sigmask"):
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if mask is not None:  # a signal held by the mask now reaches the restored handler
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if noted:
            _deliver(noted[0], previous[noted[0]])


def _deliver(signum: int, handler) -> None:
    """What the handler in place before :func:`signals_blocked` would have done."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)  # the default action (SIGINT's default raises in Python)


def remove_temporaries(target: str | os.PathLike[str]) -> list[str]:
    """Remove the temporary files :func:`atomic_write` may have left for ``target`` (a process
    killed mid-write can't run its own cleanup); returns the paths removed.

    Only names of the exact ``.<name>.<8 random>.part`` form are touched. A second run writing
    the same target at the same moment would lose its temporary file and fail that write,
    never leave a partial one.
    """
    import glob

    target = os.fsdecode(os.fspath(target))
    directory = os.path.dirname(os.path.abspath(target))
    prefix = temp_prefix(directory, os.path.basename(target))
    pattern = os.path.join(glob.escape(directory), glob.escape(prefix) + "?" * _RANDOM_CHARS
                           + glob.escape(TEMP_SUFFIX))
    removed = []
    for path in glob.glob(pattern, include_hidden=True) if sys.version_info >= (3, 11) \
            else glob.glob(pattern):
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed.append(path)
    return removed


def atomic_write(target: str | os.PathLike[str], encode: Callable[[BinaryIO], None],
                 overwrite: bool, on_commit: Callable[[str], None] | None = None) -> None:
    """Write a file atomically: ``encode(fh)`` fills a temporary file that is then renamed.

    Parameters
    ----------
    target : str or path-like
        The file to create. Its directory must exist (see :func:`make_parent_dirs`).
    encode : callable
        Called once with the open binary temporary file; writes the whole content.
    overwrite : bool
        Replace an existing ``target``. Without it an existing target is an error, also when it
        appears while ``encode`` runs (the temporary file is hard-linked, never renamed over it),
        unless, inside :func:`retried_commits`, it holds exactly the bytes about to be
        committed: that counts as committed (see Notes).
    on_commit : callable, optional
        Called with ``target`` right after the rename, with SIGINT/SIGTERM held back from the
        rename to the end of the call: whoever counts outputs never misses a complete one.

    Raises
    ------
    ImageWriteError
        One line naming ``target``: it exists (without ``overwrite``), is a directory, its
        directory is missing or not writable, disk full, or ``encode`` raised (the message
        then names the exception). The temporary file is removed in every case.

    Notes
    -----
    Inside :func:`retried_commits` the commit is idempotent: a target that exists with the very
    bytes this call produced is the same output already committed, so ``on_commit`` is called
    and nothing is written. A distributed run needs it: when a worker dies after committing an
    output but before its result reached the scheduler, Dask runs the task again elsewhere, and
    that retry must succeed rather than fail with "exists". Bytes that differ (another run,
    another version) stay an error, and the existing file is never touched. Outside it (a
    local run, which never retries) an existing target is an error before anything is encoded.
    """
    target = os.fsdecode(os.fspath(target))
    if os.path.isdir(target):
        raise ImageWriteError(f"{target}: is a directory")
    if not overwrite and not retrying() and os.path.lexists(target):
        raise ImageWriteError(f"{target}: exists (use --force to replace)")
    directory = os.path.dirname(os.path.abspath(target))
    temp_path: str | None = None
    try:
        with tempfile.NamedTemporaryFile(
            mode="wb",
            dir=directory,
            prefix=temp_prefix(directory, os.path.basename(target)),
            suffix=TEMP_SUFFIX,
            delete=False,
        ) as fh:
            temp_path = fh.name
            encode(fh)
        os.chmod(temp_path, default_file_mode())
        with signals_blocked():
            if overwrite:
                os.replace(temp_path, target)
            else:
                link_no_clobber(temp_path, target)  # removes the temporary file
            temp_path = None
            if on_commit is not None:
                on_commit(target)
    except ImageWriteError:
        raise
    except FileNotFoundError:
        raise ImageWriteError(f"{target}: directory does not exist") from None
    except PermissionError:
        raise ImageWriteError(f"{target}: permission denied (directory not writable?)") from None
    except OSError as exc:
        raise ImageWriteError(f"{target}: {os_problem(exc, 'cannot write')}") from None
    except Exception as exc:
        raise ImageWriteError(f"{target}: encoding failed ({type(exc).__name__}: {exc})") from exc
    finally:
        if temp_path is not None:
            try:
                os.unlink(temp_path)
            except OSError:
                pass


def link_no_clobber(temp_path: str, target: str) -> None:
    """Move ``temp_path`` to ``target`` without replacing a file that exists or appeared
    meanwhile; an existing target with the same bytes is this output, already committed."""
    try:
        os.link(temp_path, target)
    except FileExistsError:
        _same_or_exists(temp_path, target)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # Filesystem without hard links (FAT, some network mounts): checked-then-replace.
        if os.path.lexists(target):
            _same_or_exists(temp_path, target)
        else:
            os.replace(temp_path, target)
            return
    os.unlink(temp_path)


_RETRIES = threading.local()


@contextlib.contextmanager
def retried_commits():
    """In this thread, inside the block, :func:`atomic_write` counts an existing target with
    the very bytes it was about to commit as committed: the block may be a retry of work whose
    first attempt died after its commit (a task on a Dask worker that was killed)."""
    previous = retrying()
    _RETRIES.on = True
    try:
        yield
    finally:
        _RETRIES.on = previous


def retrying() -> bool:
    """Whether this thread is inside :func:`retried_commits` (an object store's writer asks)."""
    return getattr(_RETRIES, "on", False)


def _same_or_exists(temp_path: str, target: str) -> None:
    """Return when retrying and the regular file ``target`` holds exactly the bytes of
    ``temp_path``; otherwise raise the "exists" error."""
    if not retrying() or os.path.islink(target) or not _same_bytes(temp_path, target):
        raise ImageWriteError(f"{target}: exists (use --force to replace)") from None


def _same_bytes(a: str, b: str, block: int = 1 << 20) -> bool:
    try:
        if os.path.getsize(a) != os.path.getsize(b) or not os.path.isfile(b):
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                chunk = fa.read(block)
                if chunk != fb.read(block):
                    return False
                if not chunk:
                    return True
    except OSError:
        return False


def make_parent_dirs(path: str | os.PathLike[str]) -> None:
    """Create the directory that will hold ``path`` (and its parents), like ``mkdir -p``.

    Raises
    ------
    ImageWriteError
        One line naming ``path``: a component of the directory is a file (``-o notes.txt/out.png``),
        permission denied, read-only file system, disk full, ...
    """
    target = os.fsdecode(os.fspath(path))
    directory = os.path.dirname(target)
    if not directory or os.path.isdir(directory):
        return
    try:
        os.makedirs(directory, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        # Name the component that is in the way: the first one that exists and is no directory.
        blocker = directory
        parts = Path(directory).parts
        for i in range(1, len(parts) + 1):
            candidate = os.path.join(*parts[:i])
            if os.path.lexists(candidate) and not os.path.isdir(candidate):
                blocker = candidate
                break
        raise ImageWriteError(
            f"{target}: cannot create the output directory: {blocker} is a file, not a directory"
        ) from None
    except OSError as exc:
        raise ImageWriteError(
            f"{target}: cannot create the output directory {directory}: "
            f"{os_problem(exc, 'error')}"
        ) from None
