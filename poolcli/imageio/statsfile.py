"""Batch-norm statistics files: what ``poolcli norm --op batch --fit --save-stats`` writes.

A JSON object (``indent=2``)::

    {"format": "poolcli-batchnorm-stats", "format_version": 1,
     "channels": ["R", "G", "B"], "images": 12, "count": 2359296,
     "mean": [...], "var": [...], "var_unbiased": [...],
     "running_mean": [...], "running_var": [...], "num_batches_tracked": 3,
     "momentum": 0.1, "eps": 1e-05, ...}

``mean``/``var`` are the exact statistics of every fitted pixel (what inference uses by
default), ``running_mean``/``running_var`` PyTorch's momentum averages (used on request). Other
keys (``poolcli_version``, ``batch_size``, ``shape``, ``sources``) are kept but not checked.

:func:`load` validates every field it relies on and returns a plain ``dict`` (the file's
object, with the numeric lists as lists of ``float``); any problem is a
:class:`~poolcli.errors.StatsFileError` naming the file and the field.
"""

from __future__ import annotations

import json
import os
from typing import Callable

from poolcli.errors import StatsFileError
from poolcli.imageio._sidefile import (
    FieldError,
    check_int,
    check_number,
    check_number_list,
    check_str,
    display_name,
    is_int,
    parse_json,
    read_side_file,
    require,
    shown,
)
from poolcli.imageio.files import atomic_write
from poolcli.imageio.store import is_url, write_bytes

FORMAT = "poolcli-batchnorm-stats"
FORMAT_VERSION = 1

#: Largest statistics file read (a file with 100,000 channels is about 12 MB).
MAX_FILE_BYTES = 16 << 20

#: How deeply the JSON may nest (the format itself needs 2).
MAX_DEPTH = 8

#: Per-channel lists, all as long as ``channels``; the variances are >= 0.
VECTORS = ("mean", "var", "var_unbiased", "running_mean", "running_var")
_VARIANCES = ("var", "var_unbiased", "running_var")

#: Non-negative integer counters.
COUNTS = ("count", "images", "num_batches_tracked")

__all__ = ["COUNTS", "FORMAT", "FORMAT_VERSION", "MAX_FILE_BYTES", "VECTORS", "load", "save",
           "validate"]


def validate(record: object) -> dict:
    """Check a statistics record (a parsed file); return a copy with float lists.

    Raises
    ------
    FieldError
        (a ``ValueError``) naming the field: missing, wrong type (booleans are not numbers),
        NaN/inf, a negative variance, lists of different lengths.
    """
    if not isinstance(record, dict):
        raise FieldError("(top level)", f"expected a JSON object, got {shown(record)}")
    fmt = require(record, "format")
    if fmt != FORMAT:
        raise FieldError("format", f"expected {FORMAT!r} (not a poolcli batch-norm statistics "
                                   f"file), got {shown(fmt)}")
    version = require(record, "format_version")
    if not is_int(version) or version != FORMAT_VERSION:
        raise FieldError("format_version", f"version {shown(version)} is not supported (this "
                                           f"poolcli reads version {FORMAT_VERSION})")
    channels = require(record, "channels")
    if not (isinstance(channels, list) and channels):
        raise FieldError("channels", f"expected a non-empty list of names, got {shown(channels)}")
    for i, channel in enumerate(channels):
        check_str(f"channels[{i}]", channel, nonempty=False)
    out = dict(record)
    for field in VECTORS:
        out[field] = check_number_list(field, require(record, field), length=len(channels),
                                       minimum=0.0 if field in _VARIANCES else None)
    for field in COUNTS:
        check_int(field, require(record, field), minimum=0)
    if "eps" in record:
        out["eps"] = check_number("eps", record["eps"], above=0.0)
    if record.get("momentum") is not None:
        out["momentum"] = check_number("momentum", record["momentum"], minimum=0.0, maximum=1.0)
    return out


def load(path: str | os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES) -> dict:
    """Read and validate a statistics file (see :func:`validate` for the fields).

    Raises
    ------
    StatsFileError
        One line naming the file: missing, not a regular file (directory, FIFO, device), over
        ``max_bytes``, not UTF-8 JSON, nested too deeply, or a field at fault.
    """
    name, data = read_side_file(path, error=StatsFileError, what="statistics file",
                                max_bytes=max_bytes)
    try:
        record = parse_json(data, max_depth=MAX_DEPTH)
    except ValueError as exc:
        raise StatsFileError(f"{name}: not a readable statistics JSON: {exc}") from None
    try:
        return validate(record)
    except FieldError as exc:
        raise StatsFileError(f"{name}: statistics {exc}") from None


def save(path: str | os.PathLike[str], record: dict, *, overwrite: bool,
         on_commit: Callable[[str], None] | None = None) -> None:
    """Write ``record`` as a statistics file, atomically (JSON, ``indent=2``).

    ``format`` and ``format_version`` are filled in when missing. The record is validated first
    (so nothing is written that :func:`load` would refuse, such as NaN statistics).
    ``on_commit`` is passed to :func:`~poolcli.imageio.files.atomic_write`.

    Raises
    ------
    ValueError
        The record is not valid (the message names the file and the field).
    ImageWriteError
        The file cannot be written (exists without ``overwrite``, directory missing, ...).
    """
    name = display_name(path)
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **record}
    try:
        validate(full)
    except FieldError as exc:
        raise ValueError(f"{name}: statistics {exc}") from None
    text = json.dumps(full, indent=2, allow_nan=False) + "\n"
    if is_url(name):
        write_bytes(name, text.encode("utf-8"), overwrite=overwrite, on_commit=on_commit)
        return
    atomic_write(name, lambda fh: fh.write(text.encode("utf-8")), overwrite, on_commit)
