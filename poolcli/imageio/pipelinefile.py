"""Pipeline files for ``poolcli chain --pipeline FILE``: the stages as data.

TOML (a name ending in ``.toml``)::

    [[stage]]
    command = "pool"
    op = "max"
    kernel = "3x3"
    stride = 2
    save-indices = true

    [[stage]]
    command = "norm"
    op = "instance"

or JSON: ``{"stage": [{"command": "pool", "op": "max", "kernel": 2}, ...]}`` (``"stages"`` and a
bare list work too). ``command`` is ``pool``, ``norm`` or ``unpool``; every other key is a long
option of that stage command without ``--`` (``_`` and ``-`` are the same), its value a string,
number, boolean or a list of strings/numbers. ``true`` adds a flag, ``false`` (or JSON ``null``)
leaves the option out, a list is joined with commas (``weights = [0.5, 0.3, 0.2]``).

:func:`read_pipeline` returns ``[(command, argv)]`` for the stage commands to parse. Each option
is one ``--name=value`` token, so a value can never be taken for another option (``"--help"``
as a value is a value). Keys that would make the parser print help or a version and exit
(``help``, ``h``, ``version``) are refused, as is anything not shaped like an option name.
Every problem raises :class:`~poolcli.errors.PipelineFileError` naming the file, the stage
number and the key.
"""

from __future__ import annotations

import math
import os
import re
import sys

from poolcli.errors import PipelineFileError
from poolcli.imageio._sidefile import check_depth, decode_utf8, parse_json, read_side_file, shown

#: Largest pipeline file read, most stages, how deeply it may nest (the format needs 4).
MAX_BYTES = 1 << 20
MAX_STAGES = 64
MAX_DEPTH = 8

#: The stage commands.
COMMANDS = ("pool", "norm", "unpool")

#: Option names a stage may not set: the parser would print help or a version and exit.
REFUSED_KEYS = frozenset({"help", "h", "version"})

_KEY = re.compile(r"[a-z][a-z0-9_-]{0,63}")

__all__ = ["COMMANDS", "MAX_BYTES", "MAX_DEPTH", "MAX_STAGES", "REFUSED_KEYS", "read_pipeline"]


def read_pipeline(path: str | os.PathLike[str]) -> list[tuple[str, list[str]]]:
    """Read and validate a pipeline file into ``[(command, argv)]``.

    Raises
    ------
    PipelineFileError
        One line naming the file (and the stage and key when one is at fault): missing, not a
        regular file or pipe, over :data:`MAX_BYTES`, not UTF-8 TOML/JSON, nested too deeply,
        no stages or more than :data:`MAX_STAGES`, a stage without a known ``command``, a key
        that is not an option name or is refused, a value of the wrong type.
    """
    name, data = read_side_file(path, error=PipelineFileError, what="pipeline file",
                                max_bytes=MAX_BYTES, allow_pipe=True)
    try:
        if name.lower().endswith(".toml"):
            parsed = _parse_toml(data)
        else:
            parsed = parse_json(data, max_depth=MAX_DEPTH)
    except ValueError as exc:
        raise PipelineFileError(f"{name}: not a readable pipeline file: {exc}") from None
    stages = _stage_list(parsed, name)
    return [_stage(stage, i, name) for i, stage in enumerate(stages, 1)]


def _parse_toml(data: bytes):
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    try:
        parsed = tomllib.loads(decode_utf8(data))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"invalid TOML: {exc}") from None
    except RecursionError:
        raise ValueError(f"nested too deeply, at most {MAX_DEPTH} levels") from None
    check_depth(parsed, MAX_DEPTH)
    return parsed


def _stage_list(parsed: object, name: str) -> list:
    if isinstance(parsed, dict):
        if "stage" in parsed and "stages" in parsed:
            raise PipelineFileError(f"{name}: both 'stage' and 'stages' given; use one")
        stages = parsed.get("stage", parsed.get("stages"))
    else:
        stages = parsed
    if not isinstance(stages, list) or not stages:
        raise PipelineFileError(
            f"{name}: no stages (expected [[stage]] tables or a 'stage' list)")
    if len(stages) > MAX_STAGES:
        raise PipelineFileError(
            f"{name}: {len(stages)} stages, more than the {MAX_STAGES} a pipeline may have")
    return stages


def _stage(stage: object, number: int, name: str) -> tuple[str, list[str]]:
    """``(command, argv)`` of one stage table."""
    where = f"{name}: stage {number}"
    if not isinstance(stage, dict):
        raise PipelineFileError(f"{where}: expected a table of options, got {shown(stage)}")
    command = stage.get("command")
    if command is None:
        raise PipelineFileError(f"{where}: no 'command' key (pool, norm or unpool)")
    if command not in COMMANDS:
        raise PipelineFileError(
            f"{where}, key 'command': {shown(command)} is not a stage (pool, norm or unpool)")
    argv: list[str] = []
    seen: set[str] = set()
    for key, value in stage.items():
        if key == "command":
            continue
        option = _option_name(key, where)
        if option in seen:
            raise PipelineFileError(f"{where}, key {key!r}: option --{option} given twice")
        seen.add(option)
        argv += _tokens(option, value, f"{where}, key {key!r}")
    return command, argv


def _option_name(key: object, where: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise PipelineFileError(
            f"{where}, key {shown(key)}: not an option name (lower-case letters, digits, - and "
            "_, starting with a letter, without the leading --)")
    option = key.replace("_", "-")
    if option in REFUSED_KEYS:
        raise PipelineFileError(
            f"{where}, key {key!r}: not allowed in a pipeline file (it would print "
            f"{'the version' if option == 'version' else 'help'} and stop the run)")
    return option


def _tokens(option: str, value: object, where: str) -> list[str]:
    """The argv tokens of one option: ``[]``, ``["--flag"]`` or ``["--name=value"]``."""
    if value is True:
        return [f"--{option}"]
    if value is False or value is None:
        return []
    if isinstance(value, list):
        if not value:
            raise PipelineFileError(f"{where}: empty list")
        parts = [_scalar(v, f"{where}[{i}]", in_list=True) for i, v in enumerate(value)]
        return [f"--{option}={','.join(parts)}"]
    return [f"--{option}={_scalar(value, where)}"]


def _scalar(value: object, where: str, *, in_list: bool = False) -> str:
    if isinstance(value, str):
        if "\x00" in value:
            raise PipelineFileError(f"{where}: the value holds a NUL character")
        return value
    if isinstance(value, bool):
        raise PipelineFileError(f"{where}: true/false inside a list (a list holds strings or "
                                "numbers)")
    if isinstance(value, int):
        if abs(value) >= 10**18:
            raise PipelineFileError(f"{where}: number too large")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PipelineFileError(f"{where}: {value} is not a finite number")
        return str(value)
    expected = "a string or a number" if in_list else "a string, number, boolean or list"
    raise PipelineFileError(f"{where}: expected {expected}, got {type(value).__name__} "
                            f"{shown(value)}")
