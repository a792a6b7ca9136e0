"""Shared checks of the side-file loaders (index maps, statistics, pipelines, lists).

Private to :mod:`poolcli.imageio`. A loader opens its file with :func:`open_checked` (kind and
size checked on the open descriptor, before a byte is read; FIFOs never block the open), reads
it with :func:`read_capped` (a URL: :func:`read_url`, the object's size checked before it is
downloaded), parses JSON with :func:`parse_json` (nesting capped) and
validates fields with the ``check_*`` helpers, which raise :class:`FieldError`; the loader
turns that into its own :class:`~poolcli.errors.SideFileError` subclass with the file name in
front.
"""

from __future__ import annotations

import json
import math
import os
import reprlib
import stat
from typing import Any, BinaryIO

from poolcli.errors import SideFileError
from poolcli.imageio.files import os_problem
from poolcli.imageio.store import is_url

__all__ = [
    "FieldError",
    "check_bool",
    "check_depth",
    "check_int",
    "check_number",
    "check_number_list",
    "check_pair",
    "check_str",
    "decode_utf8",
    "display_name",
    "human_bytes",
    "is_int",
    "nesting_depth",
    "open_checked",
    "parse_json",
    "read_capped",
    "read_side_file",
    "read_url",
    "require",
    "shown",
]


class FieldError(ValueError):
    """A field of a side file is missing or malformed; ``str()`` is ``field 'name': problem``."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"field {field!r}: {problem}")
        self.field = field
        self.problem = problem


def display_name(path: str | os.PathLike[str] | bytes) -> str:
    """The path as text for messages (undecodable bytes as surrogate escapes, like listdir)."""
    return os.fsdecode(os.fspath(path))


def human_bytes(size: int) -> str:
    """``16777216`` -> ``"16 MiB"`` (binary units, whole numbers where exact)."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            value = size / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


def _kind(mode: int) -> str | None:
    """What a non-regular file is, for messages; ``None`` for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_checked(path: str | os.PathLike[str], *, error: type[SideFileError], what: str,
                 max_bytes: int, allow_pipe: bool = False) -> BinaryIO:
    """Open a side file for reading after checking what it is, before reading anything.

    The file is opened non-blocking (a FIFO without a writer cannot hang the open), then its
    kind and size are checked on the open descriptor (no race with a swapped path). Refused,
    with ``error("<name>: ...")``: missing files, directories, devices (``/dev/zero``), sockets,
    FIFOs unless ``allow_pipe``, and regular files over ``max_bytes``. A pipe is returned in
    blocking mode; read it with :func:`read_capped`.
    """
    name = display_name(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(os.fspath(path), flags)
    except FileNotFoundError:
        problem = "broken symbolic link" if os.path.islink(name) else "no such file"
        raise error(f"{name}: {problem}") from None
    except OSError as exc:
        raise error(f"{name}: {os_problem(exc, 'cannot open')}") from None
    try:
        info = os.fstat(fd)
        kind = _kind(info.st_mode)
        if kind is not None and not (allow_pipe and stat.S_ISFIFO(info.st_mode)):
            raise error(f"{name}: is {kind}, not a regular file")
        if kind is None and info.st_size > max_bytes:
            raise error(f"{name}: {what} is {info.st_size} bytes, over the "
                        f"{human_bytes(max_bytes)} limit")
        if kind is not None and hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a pipe: wait for its writer's data from here on
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(fh: BinaryIO, name: str, *, error: type[SideFileError], what: str,
                max_bytes: int) -> bytes:
    """All of ``fh`` (a file, pipe or standard input), refusing more than ``max_bytes``."""
    try:
        data = fh.read(max_bytes + 1)
    except MemoryError:
        raise error(f"{name}: not enough memory to read the {what}") from None
    except OSError as exc:
        raise error(f"{name}: {os_problem(exc, 'cannot read')}") from None
    if len(data) > max_bytes:
        raise error(f"{name}: {what} is over the {human_bytes(max_bytes)} limit")
    return data


def read_side_file(path: str | os.PathLike[str], *, error: type[SideFileError], what: str,
                   max_bytes: int, allow_pipe: bool = False,
                   allow_empty: bool = False) -> tuple[str, bytes]:
    """``(name for messages, bytes)`` of a side file: :func:`open_checked`, then
    :func:`read_capped`; a file of nothing but whitespace is refused unless ``allow_empty``."""
    name = display_name(path)
    if is_url(name):
        data = read_url(name, error=error, what=what, max_bytes=max_bytes)
    else:
        with open_checked(path, error=error, what=what, max_bytes=max_bytes,
                          allow_pipe=allow_pipe) as fh:
            data = read_capped(fh, name, error=error, what=what, max_bytes=max_bytes)
    if not allow_empty and not data.strip():
        raise error(f"{name}: {what} is empty")
    return name, data


def read_url(url: str, *, error: type[SideFileError], what: str, max_bytes: int) -> bytes:
    """The bytes of a side file at a URL (``s3://bucket/stats.json``): its size is checked
    against ``max_bytes`` before it is downloaded (:mod:`poolcli.imageio.store`)."""
    from poolcli.imageio.store import read_bytes

    def check(size: int) -> None:
        if size > max_bytes:
            raise error(f"{url}: {what} is {size} bytes, over the {human_bytes(max_bytes)} limit")

    return read_bytes(url, error=error, check_size=check, max_bytes=max_bytes)


def decode_utf8(data: bytes) -> str:
    """``data`` as UTF-8 text; ValueError ``not UTF-8 text (byte N)`` otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None


def nesting_depth(value: Any) -> int:
    """How deeply lists and dicts nest in a parsed value (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children
                         if isinstance(child, (list, dict)))
    return deepest


def check_depth(value: Any, max_depth: int) -> None:
    """Raise ValueError if lists/dicts in ``value`` nest more than ``max_depth`` deep."""
    depth = nesting_depth(value)
    if depth > max_depth:
        raise ValueError(f"nested {depth} levels deep, at most {max_depth}")


def parse_json(text: str | bytes, *, max_depth: int) -> Any:
    """Parse JSON text whose arrays/objects nest at most ``max_depth`` deep.

    Raises ValueError with a short reason: not UTF-8, invalid JSON (with line and column),
    nested too deeply, an integer too long to convert. A file of ``[[[[...`` stops the parser
    at Python's recursion limit (``RecursionError``, caught here: the C parser checks the limit
    before each level, so nothing is left half done); shallower excess nesting is measured
    after parsing.
    """
    if isinstance(text, bytes):
        text = decode_utf8(text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") \
            from None
    except RecursionError:
        raise ValueError(f"nested too deeply, at most {max_depth} levels") from None
    except ValueError:  # int() refuses more than 4300 digits
        raise ValueError("an integer too long to read") from None
    check_depth(value, max_depth)
    return value


# ---- field checks ---------------------------------------------------------------------------


def is_int(value: object) -> bool:
    """An integer that is not a boolean (JSON ``true`` is not ``1`` here)."""
    return isinstance(value, int) and not isinstance(value, bool)


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 50, 50, 6, 4, 2


def shown(value: object) -> str:
    """``value`` for a message: short (containers and strings cut), ``true``/``false``/``null``
    spelled as in JSON."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    try:
        text = _REPR.repr(value)
    except ValueError:  # an integer of more than 4300 digits
        return "a very large integer"
    return text if len(text) <= 60 else text[:57] + "..."


def check_int(field: str, value: object, *, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer (not a boolean) in ``[minimum, maximum]``."""
    if not is_int(value):
        raise FieldError(field, f"expected an integer, got {shown(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise FieldError(field, f"expected an integer >= {minimum}{upper}, got {shown(value)}")
    return value


def check_number(field: str, value: object, *, minimum: float | None = None,
                 maximum: float | None = None, above: float | None = None) -> float:
    """A finite real number (int or float, not a boolean) within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(field, f"expected a number, got {shown(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise FieldError(field, f"expected a finite number, got {shown(value)}")
    if minimum is not None and number < minimum:
        raise FieldError(field, f"expected a number >= {minimum:g}, got {shown(value)}")
    if maximum is not None and number > maximum:
        raise FieldError(field, f"expected a number <= {maximum:g}, got {shown(value)}")
    if above is not None and number <= above:
        raise FieldError(field, f"expected a number > {above:g}, got {shown(value)}")
    return number


def check_number_list(field: str, value: object, *, length: int,
                      minimum: float | None = None) -> list[float]:
    """A list of exactly ``length`` finite numbers (each ``>= minimum`` if given), as floats."""
    if not isinstance(value, list):
        raise FieldError(field, f"expected a list of {length} numbers, got {shown(value)}")
    if len(value) != length:
        raise FieldError(field, f"expected {length} numbers (one per channel), got {len(value)}")
    return [check_number(f"{field}[{i}]", v, minimum=minimum) for i, v in enumerate(value)]


def check_pair(field: str, value: object, *, minimum: int, maximum: int,
               nullable: bool = False) -> list[int] | None:
    """A list of two integers in ``[minimum, maximum]`` (or ``null`` when ``nullable``)."""
    if value is None and nullable:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(is_int(v) for v in value)):
        raise FieldError(field, f"expected a list of two integers, got {shown(value)}")
    if not all(minimum <= v <= maximum for v in value):
        raise FieldError(field, f"expected integers {minimum}..{maximum}, got {shown(value)}")
    return list(value)


def check_str(field: str, value: object, *, nonempty: bool = True) -> str:
    """A string (non-empty unless told)."""
    if not isinstance(value, str) or (nonempty and not value):
        raise FieldError(field, f"expected a non-empty string, got {shown(value)}")
    return value


def check_bool(field: str, value: object) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise FieldError(field, f"expected true or false, got {shown(value)}")
    return value


def require(record: dict, field: str) -> Any:
    """``record[field]``, or a FieldError saying it is missing."""
    if field not in record:
        raise FieldError(field, "missing")
    return record[field]
