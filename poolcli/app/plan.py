"""The output plan: every path a run reads and writes, decided and checked before any image is read.

A :class:`Plan` expands the inputs (files, directories, glob patterns expanded here, ``-`` for
stdin), names each job's main output and side files (maps, selection pictures, ...), adds the
run's own outputs (a statistics file, a sheet) and the side files it reads (a map, a statistics
file, a pipeline or list file), and checks them all together: nothing written may be something
read, and no two writes may land on one path. Problems are a :class:`~poolcli.errors.UsageError`
(exit 2) while nothing has been read yet.

No numpy here: planning runs before any file is read, so usage errors stay fast.
"""

from __future__ import annotations

import glob
import os
import re
import string
from dataclasses import dataclass, field
from typing import Callable, Iterable

from poolcli.errors import UsageError
from poolcli.formats import SUPPORTED_SUFFIXES

__all__ = ["STDIN", "STDOUT", "Job", "Plan", "make_plan", "expand", "expand_inputs", "output_name",
           "check_template", "TEMPLATE_FIELDS", "DEFAULT_TEMPLATE", "same_file"]

STDIN = "-"
STDOUT = "-"  # -o -: the one result goes to standard output
DEFAULT_TEMPLATE = "{stem}_{op}{ext}"
#: Widest field a name template may ask for (``{index:08d}`` is fine, ``{stem:99999}`` is not).
MAX_FIELD_WIDTH = 64

TEMPLATE_FIELDS = {
    "stem": "input file name without its suffix",
    "ext": "output suffix with its dot (the input's, or --format's)",
    "op": "operator name (pipeline: the stage operators joined by '-')",
    "name": "input file name",
    "parent": "name of the input's directory",
    "index": "position of the input in the (sorted, expanded) input list, from 0",
}


@dataclass
class Job:
    """One input, where its result goes, and the side files written beside it."""

    source: str
    output: str | None = None
    rel_dir: str = ""  # sub-directory of a recursive input, mirrored under -o
    index: int = 0  # position in the expanded input list (before --shard)
    side: tuple[str, ...] = ()
    skip: str | None = None  # why the job is not run (its output exists, --skip-existing)


@dataclass
class Plan:
    """What a run will do; built by :func:`make_plan`."""

    jobs: list[Job]
    missing: list[str] = field(default_factory=list)  # patterns that matched nothing
    unsupported: int = 0  # files in input directories that are not images
    own_outputs: int = 0  # files poolcli wrote, left out of directory and glob expansion
    run_outputs: tuple[str, ...] = ()  # files written once per run (--save-stats, a sheet)
    total: int = 0  # inputs before --shard

    def existing(self) -> list[str]:
        """Planned outputs that already exist, for ``--dry-run`` to mark."""
        return _existing(p for p in self.writes() if p != STDOUT)

    def add_run_output(self, path: str) -> None:
        """Add a file written once per run (decided after expansion, like a sheet named after
        the first input) and check it like the rest."""
        self.run_outputs += (path,)
        _check_collisions(self, ())

    def writes(self) -> list[str]:
        """Every path the run writes, main outputs first."""
        paths = [j.output for j in self.jobs if j.output]
        paths += [p for j in self.jobs for p in j.side]
        return paths + list(self.run_outputs)


def _supported(path: str) -> bool:
    return path.lower().endswith(SUPPORTED_SUFFIXES)


def _is_url(path: str) -> bool:
    """A ``scheme://`` URL (:mod:`poolcli.imageio.store`, imported only when one is seen:
    local runs import neither it nor fsspec)."""
    if "://" not in path:
        return False
    from poolcli.imageio.store import is_url

    return is_url(path)


def _isdir(path: str) -> bool:
    if _is_url(path):
        from poolcli.imageio.store import is_dir

        return is_dir(path)
    return os.path.isdir(path)


def _existing(paths: Iterable[str]) -> list[str]:
    """The paths that exist, in order; URLs are asked for a listing per prefix, not one by one."""
    paths = list(paths)
    urls = [p for p in paths if _is_url(p)]
    found: set[str] = set()
    if urls:
        from poolcli.imageio.store import existing

        found = existing(urls)
    return [p for p in paths if (p in found if _is_url(p) else os.path.lexists(p))]


def expand_inputs(items: Iterable, *, recursive: bool = False, include_outputs: bool = True
                  ) -> tuple[list[Job], int, list[str]]:
    """Expand files, directories and glob patterns (expanded here, not by the shell).

    Returns ``(jobs, unsupported, missing)``: unsupported files found inside directories are
    skipped and counted; patterns that match nothing are reported in ``missing``. A plain file
    path is kept even if it does not exist or has an odd suffix, so that reading it gives a clear
    error naming it. Without ``include_outputs``, files that directories and patterns turn up
    but that poolcli itself wrote (their metadata says so) are left out; use
    :func:`expand` to know how many.
    """
    jobs, unsupported, missing, _ = expand(items, recursive=recursive,
                                           include_outputs=include_outputs)
    return jobs, unsupported, missing


def expand(items: Iterable, *, recursive: bool = False, include_outputs: bool = True
           ) -> tuple[list[Job], int, list[str], int]:
    """:func:`expand_inputs`, plus the count of poolcli's own outputs left out."""
    jobs: list[Job] = []
    unsupported, own = 0, 0
    missing: list[str] = []
    for item in items:
        item = os.fspath(item)
        if item == STDIN:
            jobs.append(Job(STDIN))
        elif _is_url(item):
            found, skip, gone = _expand_url(item, recursive)
            jobs.extend(found)
            unsupported += skip
            missing.extend(gone)
        elif os.path.isdir(item) and not _supported(item):
            found, skip = _walk(item, recursive)
            jobs.extend(found)
            unsupported += skip
        elif glob.has_magic(item) and not os.path.lexists(item):
            matches = sorted(glob.glob(item, recursive=recursive))
            if not matches:
                missing.append(item)
            for m in matches:
                if os.path.isdir(m):
                    found, skip = _walk(m, recursive)
                    jobs.extend(found)
                    unsupported += skip
                else:
                    jobs.append(Job(m, rel_dir="*"))  # "*": found by a pattern
        else:
            jobs.append(Job(item, rel_dir="="))  # "=": named on the command line
    if not include_outputs:
        from poolcli.imageio.provenance import is_poolcli_output

        kept = [j for j in jobs if j.rel_dir == "=" or j.source == STDIN
                or not is_poolcli_output(j.source)]
        own, jobs = len(jobs) - len(kept), kept
    for i, job in enumerate(jobs):
        job.index = i
        if job.rel_dir in ("=", "*"):
            job.rel_dir = ""
    return jobs, unsupported, missing, own


def _expand_url(item: str, recursive: bool) -> tuple[list[Job], int, list[str]]:
    """:func:`expand` for one URL: a pattern, a prefix ("directory") or an object. An object
    with an image suffix is taken as named, with no request (reading it says what is wrong)."""
    from poolcli.imageio import store

    if glob.has_magic(item) and not store.exists(item):
        jobs, skipped = [], 0
        matches = store.glob_urls(item, recursive)
        for url, is_dir in matches:
            if is_dir:
                found, skip = _walk_url(url, recursive)
                jobs.extend(found)
                skipped += skip
            else:
                jobs.append(Job(url, rel_dir="*"))
        return jobs, skipped, [] if matches else [item]
    if not _supported(item) and store.is_dir(item):
        return (*_walk_url(item, recursive), [])
    return [Job(item, rel_dir="=")], 0, []


def _walk_url(root: str, recursive: bool) -> tuple[list[Job], int]:
    jobs, skipped = [], 0
    for url, rel in _store_list(root, recursive):
        if _supported(url):
            jobs.append(Job(url, rel_dir=rel))
        else:
            skipped += 1
    return jobs, skipped


def _store_list(root: str, recursive: bool) -> list[tuple[str, str]]:
    from poolcli.imageio.store import list_files

    return list_files(root, recursive)


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


def check_template(template: str) -> str | None:
    """A problem with an output-name template, or None.

    Fields are the names in :data:`TEMPLATE_FIELDS`, with an optional format spec
    (``{index:03d}``, at most :data:`MAX_FIELD_WIDTH` wide); attribute or item access
    (``{stem.__class__}``), conversions and positional fields are refused. The name must end in
    an image suffix, normally through ``{ext}``.
    """
    fields = ", ".join("{" + k + "}" for k in TEMPLATE_FIELDS)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"bad template {template!r} ({exc}); fields: {fields}"
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            return f"bad template {template!r}: unknown field {{{name}}}; fields: {fields}"
        if conversion:
            return f"bad template {template!r}: no conversions (!{conversion}) in fields"
        if "{" in (spec or ""):
            return f"bad template {template!r}: nested fields are not allowed"
        width = _SPEC.match(spec or "").group("width")
        if width and int(width) > MAX_FIELD_WIDTH:
            return f"bad template {template!r}: field width {width} (at most {MAX_FIELD_WIDTH})"
    try:
        name = _render(template, stem="x", ext=".png", op="max", name="x.png", parent="d", index=0)
    except (ValueError, TypeError) as exc:
        return f"bad template {template!r} ({exc})"
    if not name or name.endswith("/"):
        return f"bad template {template!r}: it names no file"
    if not _supported(name):
        return (f"bad template {template!r}: the name must end in an image suffix "
                f"(use {{ext}}, e.g. {DEFAULT_TEMPLATE})")
    return None


#: A format spec: [[fill]align][sign][z][#][0][width][grouping][.precision][type].
_SPEC = re.compile(r"(?:.?[<>=^])?[+\- ]?z?#?(?P<width>\d*)")


def _render(template: str, **values) -> str:
    return template.format(**values)


def output_name(source: str, op: str, fmt: str | None, template: str = DEFAULT_TEMPLATE,
                index: int = 0) -> str:
    """File name for the result of ``op`` on ``source``; ``fmt`` (e.g. ``npy``) changes the suffix.

    Template fields are listed in :data:`TEMPLATE_FIELDS`.
    """
    base = "stdin.png" if source == STDIN else os.path.basename(source)
    stem, ext = os.path.splitext(base)
    if fmt:
        ext = "." + fmt.lower().lstrip(".")
    elif not ext or not _supported(ext):
        ext = ".png"
    if source == STDIN:
        parent = ""
    elif _is_url(source):  # s3://bucket/key.png: the bucket; s3://bucket/dir/key.png: dir
        parent = source.partition("://")[2].rstrip("/").rpartition("/")[0].rpartition("/")[2]
    else:
        parent = os.path.basename(os.path.dirname(os.path.abspath(source)))
    return _render(template, stem=stem, ext=ext, op=op, name=base, parent=parent, index=index)


def same_file(path: str) -> str:
    """A key under which two spellings of one file compare equal (a URL: one spelling of the
    object; ``file:///x`` and ``/x`` are one file)."""
    if _is_url(path):
        from poolcli.imageio.store import canonical

        return canonical(path)
    return os.path.normcase(os.path.realpath(path))


def make_plan(items: Iterable[str], *, op_label: str, output: str | None = None,
              fmt: str | None = None, template: str | None = None, recursive: bool = False,
              shard: tuple[int, int] | None = None, name_outputs: bool = True,
              side_files: Callable[[str], Iterable[str]] | None = None,
              run_outputs: Iterable[str] = (), reads: Iterable[str] = (),
              existing: str = "refuse", include_outputs: bool = True) -> Plan:
    """Expand ``items`` and decide every path the run writes; usage problems raise UsageError.

    ``output``: ``None`` writes beside each input; a path with an image suffix is a single
    output file (one input only); anything else is a directory (created when writing).
    ``side_files(output)`` gives the side files a job writes beside its output;
    ``run_outputs`` are written once per run; ``reads`` are the side files the run reads.
    Every written path is checked against every read path and against the others.

    ``existing`` says what an output that already exists means: ``refuse`` (a usage error
    naming them, before anything is read), ``replace`` (``--force``) or ``skip``
    (``--skip-existing``: the job is marked and not run; a job whose main output is missing
    but a side file exists is still refused). Without ``include_outputs``, directories and
    patterns leave out the images poolcli wrote (named files are always kept).
    """
    template = template or DEFAULT_TEMPLATE
    problem = check_template(template)
    if problem:
        raise UsageError(problem, option="--name")
    items = list(items)
    if not items:
        raise UsageError("no inputs given (INPUTS... or --from-list)")
    jobs, unsupported, missing, own = expand(items, recursive=recursive,
                                             include_outputs=include_outputs)
    if not jobs and not missing:
        more = (f" ({own} image(s) that poolcli wrote left out: --include-outputs takes them)"
                if own else "")
        raise UsageError(f"no input images found{more}")
    plan = Plan(jobs, missing=missing, unsupported=unsupported, own_outputs=own,
                run_outputs=tuple(run_outputs), total=len(jobs))
    if name_outputs:
        _name_outputs(jobs, op_label, output, fmt, template)
        if side_files is not None:
            for job in jobs:
                job.side = () if job.output == STDOUT else tuple(side_files(job.output))
    _check_collisions(plan, reads)  # over every shard: the naming is the same on every node
    if shard:
        i, n = shard
        plan.jobs = jobs[i - 1::n]
    _check_existing(plan, existing)  # this shard's outputs only: the others may be running
    return plan


def _name_outputs(jobs: list[Job], op: str, output: str | None, fmt: str | None,
                  template: str) -> None:
    if output == STDOUT:
        if len(jobs) != 1:
            raise UsageError(f"-o - writes one result to standard output, but there are "
                             f"{len(jobs)} inputs", option="-o")
        jobs[0].output = STDOUT
        return
    single_file = (output is not None and len(jobs) == 1 and _supported(output)
                   and not _isdir(output))
    if single_file and fmt:
        from poolcli.formats import FORMAT_ALIASES, SUFFIX_FORMAT

        named = SUFFIX_FORMAT[os.path.splitext(output)[1].lower()]
        wanted = SUFFIX_FORMAT.get("." + fmt.lower(), FORMAT_ALIASES.get(fmt.upper()))
        if named != wanted:
            raise UsageError(f"-o {output} is a {named} name but --format is {fmt}; "
                             f"give one or make them agree", option="--format")
    if output is not None and len(jobs) > 1 and _supported(output) and not _isdir(output):
        raise UsageError(f"-o {output} names one file, but there are {len(jobs)} inputs; "
                         f"give a directory", option="-o")
    for job in jobs:
        if single_file:
            job.output = output
            continue
        name = output_name(job.source, op, fmt, template, job.index)
        if output is None:
            directory = "." if job.source == STDIN else os.path.dirname(job.source)
        else:
            directory = os.path.join(output, job.rel_dir)
        job.output = os.path.join(directory, name)


def _check_existing(plan: Plan, existing: str) -> None:
    if existing == "replace":
        return
    present = set(_existing(p for p in plan.writes() if p != STDOUT))
    found = []
    for job in plan.jobs:
        if not job.output or job.output == STDOUT:
            continue
        there = [p for p in (job.output, *job.side) if p in present]
        if existing == "skip" and job.output in present:
            job.skip = f"{job.output} exists"
        elif there:
            found.extend(there)
    found += [p for p in plan.run_outputs if p in present]
    if found:
        more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
        verb = "exists" if len(found) == 1 else "exist"
        hint = "" if existing == "skip" else " (or --skip-existing to keep existing outputs)"
        raise UsageError(f"{', '.join(found[:5])}{more} {verb}; use --force to replace{hint}")


def _check_collisions(plan: Plan, reads: Iterable[str]) -> None:
    read_keys = {same_file(j.source): j.source for j in plan.jobs if j.source != STDIN}
    read_keys.update({same_file(p): p for p in reads if p and p != STDIN})
    writes = [(j.output, j.source) for j in plan.jobs if j.output]
    writes += [(p, j.source) for j in plan.jobs for p in j.side]
    writes += [(p, None) for p in plan.run_outputs]
    problems, seen = [], {}
    for path, who in writes:
        if path == STDOUT:
            continue
        key = same_file(path)
        if key in read_keys:
            where = f"{who}: output " if who is not None else ""
            problems.append(f"{where}{path} would overwrite an input ({read_keys[key]}); "
                            f"inputs are never overwritten")
        elif key in seen:
            first = seen[key] if seen[key] is not None else "the run"
            problems.append(f"{who if who is not None else 'the run'} and {first} would both "
                            f"write {path}")
        else:
            seen[key] = who
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise UsageError("; ".join(problems[:5]) + more)
