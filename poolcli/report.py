"""Rendering results: rich statistics tables for people, JSON lines for scripts."""

from __future__ import annotations

import json
import math

from poolcli.formats import fmt_num

__all__ = ["stats_table", "batch_stats_table", "json_line", "fmt_num", "describe_params",
           "printable", "jsonable_clean"]


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
    """A rich Table of per-channel statistics for one processed image ``record``.

    Sections: ``in`` (the input) and ``out`` (the exact result, before any rounding for the file).
    """
    from rich.markup import escape
    from rich.table import Table

    # File names are text, never rich markup ("a[/b].png" would raise MarkupError).
    title = escape(printable(record.get("input", "")))
    if record.get("output"):
        title = f"{title} → {escape(printable(record['output']))}"
    table = Table(title=title, title_justify="left", caption_justify="left")
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
            table.add_row(label if i == 0 else "", s["channel"], fmt_num(s["min"]),
                          fmt_num(s["max"]), fmt_num(s["mean"]), fmt_num(s["std"]), zero,
                          end_section=i == len(stats) - 1)
    caption = []
    if record.get("shape_in"):
        caption.append(f"in {tuple(record['shape_in'])} {record['dtype_in']}")
    if record.get("shape_out"):
        caption.append(f"out {tuple(record['shape_out'])} {record['dtype_out']}")
    if record.get("op"):
        caption.append(f"{record['op']} {describe_params(record.get('params', {}))}".strip())
    lines = [escape(printable(" · ".join(caption)))] if caption else []
    lines.extend(escape(printable(note)) for note in record.get("notes", []))
    table.caption = "\n".join(lines)
    return table


def batch_stats_table(title: str, channels, mean, var, caption: str = ""):
    """A rich Table of per-channel batch-norm statistics."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(printable(title)), title_justify="left",
              caption=escape(printable(caption)) if caption else None, caption_justify="left")
    for col in ("ch", "mean", "var"):
        t.add_column(col, justify="left" if col == "ch" else "right")
    for c, m, v in zip(channels, mean, var):
        t.add_row(escape(printable(c)), fmt_num(float(m)), fmt_num(float(v)))
    return t


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
