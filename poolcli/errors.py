"""Error types and exit statuses shared by every layer; import-light (no numpy, no click).

The core (:mod:`poolcli.ops`) raises plain ``ValueError``/``TypeError`` for bad arguments (numpy
style). Everything about files raises a :class:`PoolcliError` subclass whose class says how bad
it is: a problem with one input (:class:`ImageReadError`, :class:`ImageWriteError`) fails that
input and the batch goes on (exit 1); a usage problem (:class:`UsageError`, including a bad side
file) stops the run before any image is read (exit 2). The application layer's error boundary
(:mod:`poolcli.app.runner`) is the one place these become one-line messages.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "ExitStatus",
    "PoolcliError",
    "ImageReadError",
    "ImageWriteError",
    "UsageError",
    "SideFileError",
    "IndexMapError",
    "StatsFileError",
    "PipelineFileError",
    "ListFileError",
    "Interrupted",
    "one_line",
]


class ExitStatus(IntEnum):
    """poolcli's exit statuses (documented in the README)."""

    OK = 0  #: every input processed (or skipped on request)
    FAILED = 1  #: some inputs failed; the others were processed
    USAGE = 2  #: bad option, parameter or side file: nothing was read or written
    INTERRUPTED = 130  #: Ctrl-C or SIGTERM: finished outputs kept, nothing partial left


class PoolcliError(Exception):
    """A problem reported in one line; ``exit_status`` says whether the run can go on."""

    exit_status = ExitStatus.FAILED


class ImageReadError(PoolcliError):
    """An input file could not be decoded (missing, unreadable, corrupt, unsupported)."""


class ImageWriteError(PoolcliError):
    """An output could not be written (exists, read-only directory, disk full, ...)."""


class UsageError(PoolcliError):
    """A problem with the command itself, found before any image is read (exit 2).

    ``option`` names the option at fault (``"--save-stats"``) when there is one.
    """

    exit_status = ExitStatus.USAGE

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


class SideFileError(UsageError):
    """A file other than an image (map, statistics, pipeline, list) is missing or malformed.

    The message names that file and the field at fault, never the image.
    """


class IndexMapError(SideFileError):
    """A max-location map file is missing, corrupt, or malformed."""


class StatsFileError(SideFileError):
    """A batch-norm statistics file is missing or malformed."""


class PipelineFileError(SideFileError):
    """A pipeline file (TOML/JSON stages) is missing or malformed."""


class ListFileError(SideFileError):
    """A ``--from-list`` file is missing, too large or not a list of paths."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped the run; ``written`` outputs are complete, nothing is partial."""

    exit_status = ExitStatus.INTERRUPTED

    def __init__(self, written: int, failed: int, total: int | None = None, *,
                 exact: bool = True):
        self.written, self.failed, self.total = written, failed, total
        of = f" of {total}" if total else ""
        if exact:
            super().__init__(f"interrupted: {written}{of} outputs written, {failed} failed, "
                             f"the rest not processed; no partial files left")
        else:  # a Dask run told twice: tasks already on the workers may still commit theirs
            super().__init__(f"interrupted: at least {written}{of} outputs written, {failed} "
                             f"failed; tasks already on the workers may still write theirs; "
                             f"no partial files left")


def one_line(exc: BaseException) -> str:
    """``exc`` as one line of text: whitespace folded, the type name if it has no message."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())
