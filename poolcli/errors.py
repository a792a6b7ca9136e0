"""Error types shared by the library and the CLI.

The core raises plain ``ValueError``/``TypeError`` for bad arguments (numpy style). I/O and
file-level problems raise :class:`PoolcliError` subclasses; ``poolcli.cli`` turns both into one-line
messages and exit codes, nowhere else.
"""


class PoolcliError(Exception):
    """A problem with one input or output that should be reported in one line."""


class ImageReadError(PoolcliError):
    """An input file could not be decoded (missing, unreadable, corrupt, unsupported)."""


class ImageWriteError(PoolcliError):
    """An output could not be written (exists, read-only directory, disk full, ...)."""


class IndexMapError(PoolcliError):
    """A max-location map file is missing, corrupt, or does not match the image."""


class StatsFileError(PoolcliError):
    """A batch-norm statistics file is missing, malformed, or does not match the images."""
