"""Inputs and outputs of a batch run: expanding paths, naming outputs, guarding inputs.

No numpy here: this runs before any file is read, so usage errors stay fast.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from poolcli.formats import SUPPORTED_SUFFIXES

__all__ = ["Job", "expand_inputs", "plan_outputs", "STDIN"]

STDIN = "-"


@dataclass
class Job:
    """One input file and where its result goes."""

    source: str
    output: str | None = None
    rel_dir: str = ""  # sub-directory of a recursive input, mirrored under -o


def _supported(path: str) -> bool:
    return path.lower().endswith(SUPPORTED_SUFFIXES)


def expand_inputs(items, *, recursive: bool = False) -> tuple[list[Job], int, list[str]]:
    """Expand files, directories and glob patterns (expanded here, not by the shell).

    Returns ``(jobs, skipped, missing)``: unsupported files found inside directories are skipped
    and counted; patterns that match nothing are reported in ``missing``. A plain file path is
    kept even if it does not exist or has an odd suffix, so that reading it gives a clear error.
    """
    jobs: list[Job] = []
    skipped = 0
    missing: list[str] = []
    for item in items:
        item = os.fspath(item)
        if item == STDIN:
            jobs.append(Job(STDIN))
        elif os.path.isdir(item) and not _supported(item):
            found, skip = _walk(item, recursive)
            jobs.extend(found)
            skipped += skip
        elif glob.has_magic(item) and not os.path.lexists(item):
            matches = sorted(glob.glob(item, recursive=recursive))
            if not matches:
                missing.append(item)
            for m in matches:
                if os.path.isdir(m):
                    found, skip = _walk(m, recursive)
                    jobs.extend(found)
                    skipped += skip
                else:
                    jobs.append(Job(m))
        else:
            jobs.append(Job(item))
    return jobs, skipped, missing


def _walk(root: str, recursive: bool) -> tuple[list[Job], int]:
    jobs, skipped = [], 0
    if recursive:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, root)
            for f in sorted(filenames):
                if f.startswith("."):
                    continue
                if _supported(f):
                    jobs.append(Job(os.path.join(dirpath, f), rel_dir="" if rel == "." else rel))
                else:
                    skipped += 1
    else:
        for f in sorted(os.listdir(root)):
            path = os.path.join(root, f)
            if f.startswith(".") or os.path.isdir(path):
                continue
            if _supported(f):
                jobs.append(Job(path))
            else:
                skipped += 1
    return jobs, skipped


TEMPLATE_FIELDS = {
    "stem": "input file name without its suffix",
    "ext": "output suffix with its dot (the input's, or --format's)",
    "op": "operator name (pipeline: the stage operators joined by '-')",
    "name": "input file name",
    "parent": "name of the input's directory",
    "index": "position of the input in the (sorted, expanded) input list, from 0",
}


def check_template(template: str) -> str | None:
    """A problem with an output-name template, or None."""
    try:
        name = template.format(**{k: "x" for k in TEMPLATE_FIELDS})
    except (KeyError, IndexError, ValueError) as exc:
        return (f"bad template {template!r} ({exc}); fields: "
                + ", ".join("{" + k + "}" for k in TEMPLATE_FIELDS))
    if not name or "/" in template.replace("{", "").replace("}", "") and name.endswith("/"):
        return f"bad template {template!r}: it names no file"
    return None


def output_name(source: str, op: str, fmt: str | None, template: str = "{stem}_{op}{ext}",
                index: int = 0) -> str:
    """File name for the result of ``op`` on ``source``; ``fmt`` (e.g. ``npy``) changes the suffix.

    Template fields are listed in :data:`TEMPLATE_FIELDS`.
    """
    base = "stdin.png" if source == STDIN else os.path.basename(source)
    stem, ext = os.path.splitext(base)
    if fmt:
        ext = "." + fmt.lower().lstrip(".")
    elif not ext:
        ext = ".png"
    parent = os.path.basename(os.path.dirname(os.path.abspath(source))) if source != STDIN else ""
    return template.format(stem=stem, ext=ext, op=op, name=base, parent=parent, index=index)


def plan_outputs(jobs: list[Job], op: str, output: str | None, fmt: str | None, *,
                 template: str = "{stem}_{op}{ext}") -> list[str]:
    """Fill ``job.output`` for every job; return a list of problems (empty if all is well).

    ``output``: ``None`` writes beside each input; a path with an image suffix is a single output
    file (only for one input); anything else is a directory (created when writing). Problems:
    two inputs that would write the same output, an output that is one of the inputs.
    """
    problems = []
    single_file = (
        output is not None
        and len(jobs) == 1
        and output.lower().endswith(SUPPORTED_SUFFIXES)
        and not os.path.isdir(output)
    )
    for index, job in enumerate(jobs):
        if single_file:
            job.output = output
            continue
        name = output_name(job.source, op, fmt, template, index)
        if output is None:
            directory = "." if job.source == STDIN else os.path.dirname(job.source)
        else:
            directory = os.path.join(output, job.rel_dir)
        job.output = os.path.join(directory, name)
    inputs = {_key(j.source) for j in jobs if j.source != STDIN}
    seen: dict[str, str] = {}
    for job in jobs:
        key = _key(job.output)
        if key in inputs:
            problems.append(f"{job.source}: output {job.output} would overwrite an input")
        elif key in seen:
            problems.append(
                f"{job.source} and {seen[key]} would both write {job.output}"
            )
        else:
            seen[key] = job.source
    return problems


def _key(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))
