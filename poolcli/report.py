"""Rendering results: rich statistics tables for people, JSON lines for scripts."""

from __future__ import annotations

import json
import math
import re

from poolcli.formats import fmt_num

__all__ = ["stats_table", "batch_stats_table", "json_line", "fmt_num", "describe_params",
           "printable", "jsonable_clean"]


# C0 controls but newline and tab, DEL and C1: shown as \xNN so a file name can neither restyle
# the terminal (ESC [31m) nor break a one-line message (\v, \r).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` safe to print or put in JSON: undecodable file-name bytes shown as ``\\xNN``.

    On POSIX a file name is bytes; Python decodes the ones that are not valid UTF-8 with
    ``surrogateescape`` (``b"caf\\xe9.png"`` becomes ``"caf\\udce9.png"``), and such a string cannot
    be encoded for a UTF-8 terminal, pipe or JSON document. Every escaped byte is shown as
    ``\\xNN`` instead (``caf\\xe9.png``, backslash-x-e-9), as Python's ``backslashreplace`` does;
    any other lone surrogate as ``\\udNNN``. Valid text is returned unchanged. (A name that really
    contains a backslash followed by ``xNN`` prints the same: the display is for people, the
    files themselves are untouched.)

    >>> import os
    >>> printable(os.fsdecode(b"caf\\xe9.png"))
    'caf\\\\xe9.png'
    >>> printable("café.png")
    'café.png'
    """
    if not isinstance(text, str):
        text = str(text)
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that are not escaped bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def describe_params(params: dict) -> str:
    """``kernel=2x2 stride=2x2`` style text for captions."""
    parts = []
    for k, v in params.items():
        if v is None:
            continue
        if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(a, int) for a in v):
            v = f"{v[0]}x{v[1]}"
        elif isinstance(v, (tuple, list)):
            v = ",".join(fmt_num(a) for a in v)
        elif isinstance(v, float):
            v = fmt_num(v)
        parts.append(f"{k}={v}")
    return " ".join(parts)


def stats_table(record: dict):
    """Per-channel statistics of one processed image ``record``, as rich renderables.

    Sections: ``in`` (the input) and ``out`` (the exact result, before any rounding for the
    file). The title (``input → output``) and the caption lines (shapes, operator, notes) are
    lines of their own, not part of the table, so a long path or note is never wrapped at the
    table's width: in a log each keeps one line.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    title = printable(record.get("input", ""))
    if record.get("output"):
        title = f"{title} → {printable(record['output'])}"
    table = Table()
    for name, justify in [("", "left"), ("ch", "left"), ("min", "right"), ("max", "right"),
                          ("mean", "right"), ("std (population)", "right"),
                          ("zeros", "right")]:
        table.add_column(name, justify=justify)
    sections = [("in", record.get("stats_in"))]
    sections += record.get("sections") or [("out", record.get("stats_out"))]
    for label, stats in sections:
        if not stats:
            continue
        for i, s in enumerate(stats):
            zero = f"{100 * s['zero_fraction']:.1f}%"
            if s.get("nan"):
                zero += f" ({s['nan']} NaN)"
            table.add_row(label if i == 0 else "", Text(printable(s["channel"])),
                          fmt_num(s["min"]), fmt_num(s["max"]), fmt_num(s["mean"]),
                          fmt_num(s["std"]), zero, end_section=i == len(stats) - 1)
    caption = []
    if record.get("shape_in"):
        caption.append(f"in {tuple(record['shape_in'])} {record['dtype_in']}")
    if record.get("shape_out"):
        caption.append(f"out {tuple(record['shape_out'])} {record['dtype_out']}")
    if record.get("op"):
        caption.append(f"{record['op']} {describe_params(record.get('params', {}))}".strip())
    lines = [" · ".join(caption)] if caption else []
    lines.extend(record.get("notes", []))
    return Group(Text(title), table, *(Text(printable(line)) for line in lines))


def batch_stats_table(title: str, channels, mean, var, caption: str = ""):
    """Per-channel batch-norm statistics (title and caption as lines of their own)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    t = Table()
    for col in ("ch", "mean", "var"):
        t.add_column(col, justify="left" if col == "ch" else "right")
    for c, m, v in zip(channels, mean, var):
        t.add_row(Text(printable(c)), fmt_num(float(m)), fmt_num(float(v)))
    return Group(Text(printable(title)), t, *([Text(printable(caption))] if caption else []))


def json_line(record: dict) -> str:
    """One JSON object on one line; NaN/inf become null so every line parses strictly.

    Strings go through :func:`printable`, so a file name that is not valid UTF-8 cannot make
    the line invalid (or crash the print): its undecodable bytes appear as ``\\xNN``.
    """
    return json.dumps(jsonable_clean(record), ensure_ascii=False, allow_nan=False, default=str)


def jsonable_clean(v):
    """``v`` with NaN/inf as None and every string printable (see :func:`json_line`)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, str):
        return printable(v)
    if isinstance(v, dict):
        return {printable(str(k)): jsonable_clean(a) for k, a in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable_clean(a) for a in v]
    return v
