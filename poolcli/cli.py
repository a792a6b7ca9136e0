"""The ``poolcli`` command line: thin click commands over :mod:`poolcli.ops`.

Start-up matters (``poolcli --help`` is run often): this module imports only click and the
registry; numpy, Pillow and rich are imported inside the commands that need them.

Exit status: 0 all inputs processed, 1 some inputs failed (the others were still processed),
2 usage error (nothing was read).
"""

from __future__ import annotations

import os
import sys

import click

from poolcli import __version__, registry
from poolcli.paramtypes import FLOATS, PAIR, SIZE, BoundedFloat, click_type_for

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
FORMATS = ("png", "tif", "tiff", "npy", "jpg", "jpeg", "webp", "bmp")


# ----------------------------------------------------------------------------------------------
# Shared plumbing
# ----------------------------------------------------------------------------------------------


class Session:
    """Where output goes, and the tally of one command run."""

    def __init__(self, as_json: bool, quiet: bool, verbose: bool = False):
        import time

        self.as_json = as_json
        self.quiet = quiet
        self.verbose = verbose
        self.failed = 0
        self.ok = 0
        self.skipped = 0
        self.started = time.perf_counter()
        self._console = None

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            # Tables go to stdout unless stdout carries JSON.
            self._console = Console(stderr=self.as_json, highlight=False)
        return self._console

    def error(self, message: str) -> None:
        from poolcli.report import printable

        self.failed += 1
        click.echo(f"poolcli: error: {printable(message)}", err=True)

    def warn(self, message: str) -> None:
        from poolcli.report import printable

        if not self.quiet:
            click.echo(f"poolcli: {printable(message)}", err=True)

    def emit(self, record: dict, table=True) -> None:
        self.ok += 1
        if self.as_json:
            from poolcli.report import json_line

            click.echo(json_line(record))
        if table and not self.quiet:
            from poolcli.report import stats_table

            self.console.print(stats_table(record))

    def summary(self) -> dict:
        import time

        return {"ok": self.ok, "failed": self.failed, "skipped": self.skipped,
                "seconds": round(time.perf_counter() - self.started, 3)}

    def exit(self, summary: bool = True):
        if summary and self.as_json:
            import json

            click.echo(json.dumps({"summary": self.summary()}))
        sys.exit(EXIT_FAILED if self.failed else EXIT_OK)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def guarded(fn, job, args, verbose=False):
    """Run ``fn(job, *args)``; return ``("ok", record)`` or ``("error", one-line message)``.

    Top-level so worker processes can run it; exceptions never cross the process boundary.
    """
    from poolcli.errors import PoolcliError

    try:
        return "ok", fn(job, *args)
    except PoolcliError as exc:
        return "error", _one_line(exc)
    except (ValueError, TypeError, MemoryError, OverflowError) as exc:
        message = f"{job.source}: {_one_line(exc)}"
        if verbose:
            import traceback

            message += "\n" + traceback.format_exc()
        return "error", message


def _reuse_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory for the next image instead of unmapping it.

    Every image allocates a few MiB (file bytes, pixels, result, PNG buffers). By default glibc
    maps blocks over 128 KiB fresh and trims the heap top on free, so each image faulted in and
    zeroed ~2.4 MiB of new pages: on 200 RGB images of 512x512, 128k page faults and 0.6 s of
    kernel time. Kept (blocks up to 32 MiB from the heap, up to 256 MiB of it retained): 6k
    faults and 0.2 s; over 7 interleaved rounds ``-j 1`` went 3615 -> 3301 ms (9%) and ``-j 2``
    2091 -> 2007 ms (4%). Blocks over 32 MiB (large images) are still mapped and returned at
    once, so peak memory on big images is unchanged; only batches of two or more images use it.
    Called before workers fork, so they inherit it; a no-op where there is no glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt  # this process's own C library
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 256 << 20)
    mallopt(m_top_pad, 16 << 20)


def _worker_init():
    """Workers: SIGTERM unwinds like Ctrl-C, so temporary files are removed."""
    import signal

    signal.signal(signal.SIGTERM, _raise_interrupt)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_batch(session: Session, jobs, fn, args=(), *, workers=1, fail_fast=False) -> None:
    """Run ``fn(job, *args)`` over ``jobs``, in parallel with ``workers`` processes.

    Results and errors are reported in input order. A failing input is one line on stderr and
    the others go on (``fail_fast`` stops at the first failure). Ctrl-C or SIGTERM stops
    cleanly: running images finish or are abandoned with their temporary files removed, nothing
    half-written remains, and what was done is reported (exit 130).
    """
    import signal

    from poolcli.batch import STDIN

    if any(j.source == STDIN for j in jobs):
        workers = 1  # stdin can be read once, by this process
    workers = max(1, min(workers, len(jobs)))
    if len(jobs) > 1:
        _reuse_freed_memory()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    progress = _progress(session, len(jobs))
    done = 0
    executor = None
    futures = []
    try:
        if workers == 1:
            results = (guarded(fn, job, args, session.verbose) for job in jobs)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
            executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init)
            futures = [executor.submit(guarded, fn, job, args, session.verbose) for job in jobs]
            results = (f.result() for f in futures)
        for status, payload in results:
            done += 1
            if progress:
                progress.advance(progress.task_ids[0])
            if status == "ok":
                session.emit(payload)
            else:
                session.error(payload)
                if fail_fast:
                    session.warn(f"--fail-fast: stopped after {done} of {len(jobs)} inputs")
                    break
    except KeyboardInterrupt:
        finished = session.ok
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
            executor = None
            # images that workers completed after the last one reported here
            finished += sum(1 for f in futures[done:] if f.done() and not f.cancelled()
                            and f.exception() is None and f.result()[0] == "ok")
        if progress:
            progress.stop()
        click.echo(f"poolcli: interrupted: {finished} of {len(jobs)} images written, "
                   f"{session.failed} failed, the rest not processed; no partial files left",
                   err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        if progress:
            progress.stop()


def _progress(session: Session, total: int):
    """A rich progress bar on stderr, only when it is a terminal (and not with -q)."""
    if session.quiet or total < 2 or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    progress = Progress("[progress.description]{task.description}", BarColumn(),
                        MofNCompleteColumn(), TimeRemainingColumn(),
                        console=Console(stderr=True), transient=True)
    progress.add_task("images", total=total)
    progress.start()
    return progress


def preview_option(f):
    """``--preview`` (= auto), ``--preview always|never``: draw results in the terminal."""
    return click.option(
        "--preview", type=click.Choice(["auto", "always", "never"]), default="never",
        is_flag=False, flag_value="auto", show_default=True,
        help="Draw each result on stderr with true-colour half blocks: alone or 'auto' when "
             "stderr is a terminal and NO_COLOR is unset, 'always' to force; never with --json "
             "(runs with one worker).")(f)


def _maybe_preview(values, mode, as_json, source_dtype=None, channels=None):
    if mode and mode != "never":
        from poolcli.cli_visual import show_preview

        show_preview(values, mode, as_json=as_json, source_dtype=source_dtype, channels=channels)


def _default_jobs() -> int:
    return os.cpu_count() or 1


def common_output_options(f):
    """Options shared by commands that write one result per input (batch processing)."""
    options = [
        click.option("-r", "--recursive", is_flag=True,
                     help="Descend into sub-directories of directory inputs (the folder "
                          "structure is mirrored under -o)."),
        click.option("--from-list", "from_list", type=click.Path(allow_dash=True), default=None,
                     help="Read more input paths from FILE, one a line (- for stdin)."),
        click.option("-o", "--output", type=click.Path(), default=None,
                     help="Output file (one input) or directory (created if missing) "
                          "[default: beside each input]."),
        click.option("--name", "name_template", default="{stem}_{op}{ext}", show_default=True,
                     help="Output file name template: {stem} {ext} {op} {name} {parent} "
                          "{index} (see README)."),
        click.option("--format", "fmt", type=click.Choice(FORMATS, case_sensitive=False),
                     default=None, help="Output format [default: the input's]."),
        click.option("--force", is_flag=True, help="Replace existing outputs (never inputs)."),
        click.option("--quality", type=click.IntRange(1, 100), default=None,
                     help="JPEG/WebP quality [default: 90]."),
        click.option("--compress-level", type=click.IntRange(0, 9), default=None,
                     help="PNG/TIFF deflate level, 0 = none [default: 1, see README]."),
        click.option("--max-pixels", type=click.IntRange(min=1), default=None,
                     help="Refuse images with more pixels (decompression-bomb guard) "
                          "[default: 178956970]."),
        click.option("-j", "--jobs", "workers", type=click.IntRange(min=1), default=None,
                     help="Parallel worker processes [default: number of cores]."),
        click.option("--fail-fast", is_flag=True, help="Stop at the first failing input."),
        click.option("--dry-run", is_flag=True, help="List what would be written; read nothing."),
        click.option("--shard", type=ShardType(), default=None,
                     help="Process only slice I of N (I/N, 1-based) of the sorted inputs, "
                          "for N array jobs on a cluster."),
        click.option("--json", "as_json", is_flag=True,
                     help="One JSON object per image on stdout, then a summary object; "
                          "tables go to stderr."),
        click.option("-v", "--verbose", is_flag=True, help="Tracebacks for errors."),
        click.option("-q", "--quiet", is_flag=True, help="No tables or progress; errors only."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


BATCH_KEYS = ("recursive", "from_list", "output", "name_template", "fmt", "force", "quality",
              "compress_level", "max_pixels", "workers", "fail_fast", "dry_run", "shard",
              "as_json", "verbose", "quiet")


class ShardType(click.ParamType):
    name = "I/N"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            i, n = (int(v) for v in str(value).split("/"))
        except ValueError:
            self.fail(f"{value!r} is not I/N (e.g. 2/8)", param, ctx)
        if not 1 <= i <= n:
            self.fail(f"{value!r}: need 1 <= I <= N", param, ctx)
        return (i, n)


def split_batch(kw: dict) -> tuple[dict, dict]:
    """Split a command's keyword arguments into (batch options, the rest)."""
    batch = {k: kw.pop(k) for k in BATCH_KEYS if k in kw}
    return batch, kw


def read_list(path: str) -> list[str]:
    """Paths from a list file (``-`` = stdin): one a line, blank lines and ``#`` comments skipped."""
    try:
        if path == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(path, encoding="utf-8", errors="surrogateescape") as fh:
                lines = fh.read().splitlines()
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror or exc}",
                                 param_hint="'--from-list'") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def plan(session: Session, inputs, op_name, b: dict, *, name_outputs=True):
    """Expand inputs and name outputs; usage problems exit 2 before any file is read."""
    from poolcli.batch import check_template, expand_inputs, plan_outputs

    items = list(inputs)
    if b.get("from_list"):
        items += read_list(b["from_list"])
    if not items:
        raise click.UsageError("no inputs given (INPUTS... or --from-list)")
    template = b.get("name_template") or "{stem}_{op}{ext}"
    problem = check_template(template)
    if problem:
        raise click.BadParameter(problem, param_hint="'--name'")
    jobs, skipped, missing = expand_inputs(items, recursive=b.get("recursive", False))
    session.skipped += skipped
    for pattern in missing:
        session.error(f"{pattern}: no files match")
    if skipped:
        session.warn(f"skipped {skipped} unsupported file(s) in input directories")
    if not jobs and not missing:
        raise click.UsageError("no input images found")
    if name_outputs:
        problems = plan_outputs(jobs, op_name, b.get("output"), b.get("fmt"), template=template)
        if problems:
            raise click.UsageError("; ".join(problems[:5]) + (
                f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
    if b.get("shard"):
        i, n = b["shard"]
        jobs = jobs[i - 1::n]
    if b.get("dry_run"):
        import json

        from poolcli.report import printable

        for job in jobs:
            if b.get("as_json"):
                click.echo(json.dumps({"input": printable(job.source),
                                       "output": printable(job.output), "dry_run": True}))
            else:
                click.echo(f"{printable(job.source)} -> {printable(job.output)}")
        sys.exit(EXIT_FAILED if session.failed else EXIT_OK)
    return jobs


def write_opts(b: dict) -> dict:
    # Statistics cost a pass over input and output; skip them when nobody will see them.
    return {"force": b.get("force", False), "quality": b.get("quality"),
            "compress_level": b.get("compress_level"),
            "stats": bool(b.get("as_json") or not b.get("quiet"))}


def batch_run(session, jobs, fn, args, b):
    run_batch(session, jobs, fn, args, workers=b.get("workers") or _default_jobs(),
              fail_fast=b.get("fail_fast", False))


def write_result(values, out_path, *, channels, source_dtype, opts, notes):
    """Write ``values`` to ``out_path`` in a dtype the format holds, noting any rounding."""
    import numpy as np

    from poolcli import imageio

    target = imageio.output_dtype_for(out_path, values.dtype, source_dtype=source_dtype)
    data = values
    if np.dtype(target) != values.dtype:
        data = imageio.fit_to_dtype(values, target)
        notes.append(f"written as {np.dtype(target)} (rounded and clipped); "
                     f"use --format npy or tiff for the exact values")
    imageio.make_parent_dirs(out_path)
    imageio.write_image(out_path, data, channels=channels, overwrite=opts["force"],
                        compress_level=opts["compress_level"], quality=opts["quality"])


def _stats(x, channels=None):
    from poolcli.stats import channel_stats

    return [s.as_dict() for s in channel_stats(x, channels)]


class _Background:
    """Run a side-effect-free ``fn()`` in a daemon thread; :meth:`result` joins and re-raises.

    Used for the statistics, which only the report needs, while the main thread encodes and
    writes: numpy and libdeflate release the GIL, so on two cores the work overlaps (a 2048x2048
    pool run with its tables: 430 against 470 ms, 11 interleaved runs). Importing rich the same
    way during the decode was slower, not faster (475-501 against 463 ms): the two threads only
    took turns with the GIL. Anything that touches files stays in the main thread, so an
    interrupt never leaves a file to a thread.
    """

    def __init__(self, fn):
        import threading

        self._value = self._error = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn):
        try:
            self._value = fn()
        except BaseException as exc:  # handed to result()
            self._error = exc

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _stats_pair(x, values, channels, wanted=True):
    """Statistics of input and output, computed beside the caller's writing (or None)."""
    if not wanted:
        return None
    return _Background(lambda: (_stats(x, channels), _stats(values, channels)))


def _read(path, max_pixels):
    from poolcli import imageio

    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
    return imageio.read_image(path, **kwargs)


def entry() -> None:
    """The console script (and ``python -m poolcli``): run the CLI, then skip the teardown.

    Python's interpreter teardown (freeing every module, array and thread state) took 50-70 ms
    of a ~0.55 s ``poolcli pool`` run on the development machine, and poolcli needs none of it:
    outputs are written and renamed, worker pools shut down and temporary files removed before
    a command returns. So the exit status is taken from ``SystemExit`` and, once stdout and
    stderr are flushed, the process ends with ``os._exit``. A reader that closed the pipe early
    (``poolcli stats ... | head -1``) gets no "Exception ignored" noise, and exit status 1 if
    the command had succeeded. Any other exception propagates as usual (a traceback is a bug).
    """
    try:
        main()
        code = EXIT_OK
    except SystemExit as exc:
        code = exc.code
    if code is None:
        code = EXIT_OK
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = EXIT_FAILED
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the reader went away (BrokenPipeError), or closed
            code = code or EXIT_FAILED
    os._exit(code)


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="poolcli")
def main():
    """See what CNN pooling and normalization operators do to real images.

    \b
    Examples:
      poolcli pool --op max -k 2 photo.png          # writes photo_max.png, prints statistics
      poolcli pool --op avg -k 3 -s 2 -p 1 dir/ -o out/
      poolcli stats photo.png --json
      poolcli ops                                    # every operator with its source
    """


def _op_options(family):
    """Add one click option per registry parameter of ``family`` (the CLI never lists them)."""

    def decorate(f):
        for param in reversed(registry.params_for(family)):
            kind = param.kind
            if kind == "bool":
                f = click.option(*param.flags, param.name, default=param.default,
                                 show_default=True, help=param.help)(f)
            else:
                f = click.option(*param.flags, param.name, type=click_type_for(param),
                                 default=param.default, show_default=param.default is not None,
                                 help=param.help)(f)
        return f

    return decorate


def _validate_geometry(op, params):
    """Check parameters that do not depend on the image (exit 2 before reading any file)."""
    import math

    def bad(hint, message):
        raise click.BadParameter(message, param_hint=hint)

    k = params.get("kernel")
    if k is not None and "padding" in op.params:
        p = params.get("padding") or (0, 0)
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            bad("'-p' / '--padding'", f"padding {p[0]}x{p[1]} is more than half the kernel "
                f"{k[0]}x{k[1]} (at most {k[0] // 2}x{k[1] // 2})")
    if op.name == "sort":
        w = params["weights"]
        if not any(w):
            bad("'--weights'", f"{','.join(map(str, w))}: weights must be not all zero")
        if len(w) > k[0] * k[1]:
            bad("'--weights'", f"{len(w)} weights for a {k[0]}x{k[1]} window (at most "
                f"{k[0] * k[1]})")
    if op.name == "mixed" and not 0 <= params["alpha"] <= 1:
        bad("'--alpha'", f"{params['alpha']}: alpha must be in 0..1")
    for name, hint in (("p", "'--gem-p'"), ("r", "'--lse-r'"), ("eps", "'--eps'")):
        if name in op.params and not math.isfinite(params[name]):
            bad(hint, f"{params[name]}: must be a finite number > 0")
    if op.name == "blur":
        if k[0] != k[1]:
            bad("'-k' / '--kernel'", f"{k[0]}x{k[1]}: blur needs a square kernel")
        if not 1 <= k[0] <= 7:
            bad("'-k' / '--kernel'", f"{k[0]}: blur kernels are binomial of size 1..7")


@main.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1)
@click.option("--op", "op_name", type=click.Choice(registry.names("pool")), default="max",
              show_default=True, help="Pooling operator (see `poolcli ops`).")
@_op_options("pool")
@click.option("--save-indices", is_flag=True,
              help="Also write the max-location map {output stem}.indices.npz (selecting ops).")
@click.option("--indices-png", is_flag=True,
              help="Also write {output stem}.selected.png: the input with only the selected "
                   "cells kept (others black), selecting ops.")
@preview_option
@common_output_options
def pool(inputs, op_name, save_indices, indices_png, preview, **kw):
    """Pool each image in INPUTS (files, directories, glob patterns, - for stdin).

    Prints per-channel statistics of input and output; writes the result beside each input as
    {stem}_{op}{ext} unless -o or --name say otherwise. Inputs are never overwritten.
    """
    b, op_params = split_batch(kw)
    op = registry.get(op_name)
    params = {name: op_params[name] for name in op.params}
    _validate_geometry(op, params)
    if (save_indices or indices_png) and not op.selects:
        selecting = ", ".join(o.name for o in registry.OPERATORS if o.selects)
        flag = "--save-indices" if save_indices else "--indices-png"
        raise click.BadParameter(f"--op {op.name} does not select cells; {flag} works "
                                 f"with {selecting}", param_hint=f"'{flag}'")
    session = Session(b["as_json"], b["quiet"], b["verbose"])
    jobs = plan(session, inputs, op.name, b)
    flags = {"save_indices": save_indices, "indices_png": indices_png,
             "preview": None if b["as_json"] else preview}
    if preview != "never":
        b["workers"] = 1  # pictures drawn in input order by this process
    batch_run(session, jobs, pool_one, (op, params, flags, write_opts(b), b["max_pixels"]), b)
    session.exit()


def pool_one(job, op, params, flags, opts, max_pixels) -> dict:
    """Read, pool, write (and save indices) for one job; returns the report record."""
    img = _read(job.source, max_pixels)
    x = img.array
    run_params = dict(params)
    if "seed" in op.params:  # each image its own random stream, derived from one base seed
        run_params["_key"] = os.path.basename(job.source)
    want_indices = flags["save_indices"] or flags["indices_png"]
    result = op.run(x, run_params, want_indices)
    values = result.values
    stats = _stats_pair(x, values, img.channels, opts.get("stats", True))
    notes = list(img.notes)
    notes.extend(f"{k}: {v}" for k, v in result.info.items())
    written = []  # side files, removed again if the main output cannot be written
    try:
        if flags["save_indices"]:
            from poolcli import indexmap

            map_path = indexmap.map_path_for(job.output)
            meta = indexmap.build_meta(operator=op.name, params=params, input_shape=x.shape,
                                       input_dtype=x.dtype, output_shape=values.shape,
                                       source=img.source)
            indexmap.save(map_path, result.indices, meta, overwrite=opts["force"])
            written.append(map_path)
        if flags["indices_png"]:
            picture = selection_picture(x, result.indices)
            pic_path = os.path.splitext(job.output)[0] + ".selected.png"
            write_result(picture, pic_path, channels=img.channels, source_dtype=x.dtype,
                         opts=opts, notes=[])
            written.append(pic_path)
        write_result(values, job.output, channels=img.channels, source_dtype=x.dtype, opts=opts,
                     notes=notes)
    except BaseException:
        for path in written:
            if os.path.exists(path):
                os.unlink(path)  # no half result: a map without its image is useless
        raise
    map_path = written[0] if flags["save_indices"] else None
    _maybe_preview(values, flags.get("preview"), False, x.dtype, img.channels)
    record = {
        "input": img.source,
        "output": job.output,
        "op": op.name,
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        "shape_in": list(x.shape),
        "shape_out": list(values.shape),
        "dtype_in": str(x.dtype),
        "dtype_out": str(values.dtype),
        "stats_in": None,
        "stats_out": None,
        "notes": notes,
    }
    if stats is not None:
        record["stats_in"], record["stats_out"] = stats.result()
    record.update(result.info)
    if map_path:
        record["indices"] = map_path
    return record


def selection_picture(x, indices):
    """The input with only the selected cells kept (others 0), the size of the input."""
    import numpy as np

    h, w, c = x.shape
    flat = np.zeros((h * w, c), dtype=x.dtype)
    src = x.reshape(h * w, c)
    for ch in range(c):
        idx = indices[..., ch].ravel()
        idx = idx[(idx >= 0) & (idx < h * w)]
        flat[idx, ch] = src[idx, ch]
    return flat.reshape(h, w, c)


@main.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1)
@click.option("-r", "--recursive", is_flag=True, help="Descend into sub-directories.")
@click.option("--from-list", "from_list", type=click.Path(allow_dash=True), default=None,
              help="Read more input paths from FILE, one a line (- for stdin).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per image on stdout, then a summary object.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="Refuse images with more pixels [default: 178956970].")
@click.option("-j", "--jobs", "workers", type=click.IntRange(min=1), default=None,
              help="Parallel worker processes [default: number of cores].")
@click.option("-q", "--quiet", is_flag=True, help="No tables; errors only.")
@click.option("-v", "--verbose", is_flag=True, help="Tracebacks for errors.")
def stats(inputs, **b):
    """Print per-channel statistics (min, max, mean, population std, zeros) of each image."""
    session = Session(b["as_json"], b["quiet"], b["verbose"])
    jobs = plan(session, inputs, "stats", b, name_outputs=False)
    batch_run(session, jobs, stats_one, (b["max_pixels"],), b)
    session.exit()


def stats_one(job, max_pixels) -> dict:
    img = _read(job.source, max_pixels)
    return {"input": img.source, "shape_in": list(img.array.shape),
            "dtype_in": str(img.array.dtype), "channels": list(img.channels),
            "stats_in": _stats(img.array, img.channels), "notes": list(img.notes)}


@main.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def ops(as_json):
    """List every operator with a one-line description and its source."""
    if as_json:
        import json

        for op in registry.OPERATORS:
            click.echo(json.dumps({"name": op.name, "family": op.family, "aliases": op.aliases,
                                   "summary": op.summary, "source": op.source,
                                   "params": list(op.params), "selects": op.selects}))
        return
    width = max(len(", ".join((op.name, *op.aliases))) for op in registry.OPERATORS)
    for family in ("pool", "norm"):
        members = [op for op in registry.OPERATORS if op.family == family]
        if not members:
            continue
        click.echo(f"{family}:")
        for op in members:
            label = ", ".join((op.name, *op.aliases))
            mark = " [indices]" if op.selects else ""
            click.echo(f"  {label:<{width}}  {op.summary}{mark}")
            click.echo(f"  {'':<{width}}  source: {op.source}")


# ----------------------------------------------------------------------------------------------
# norm
# ----------------------------------------------------------------------------------------------

STATS_FORMAT = "poolcli-batchnorm-stats"


@main.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True)
@click.option("--op", "op_name", type=click.Choice(registry.names("norm")), default="instance",
              show_default=True, help="Normalization (see `poolcli ops`).")
@_op_options("norm")
@click.option("--display", default="sigma:3", show_default=True,
              help="How signed results are mapped to 8-bit files (png/jpg): minmax, sigma:K "
                   "(mean ± K·std to 0..255), clip (0..1). npy/tiff store exact values.")
@click.option("--fit", is_flag=True,
              help="batch: compute running statistics over all inputs, streaming in chunks.")
@click.option("--batch-size", type=click.IntRange(min=2), default=8, show_default=True,
              help="batch --fit: images per chunk.")
@click.option("--momentum", type=BoundedFloat(0, maximum=1), default=0.1, show_default=True,
              help="batch --fit: running = (1-m)·running + m·batch, as PyTorch.")
@click.option("--cumulative", is_flag=True,
              help="batch --fit: cumulative average instead of momentum "
                   "(PyTorch's momentum=None).")
@click.option("--save-stats", type=click.Path(dir_okay=False), default=None,
              help="batch --fit: write the statistics JSON here.")
@click.option("--stats", "stats_file", type=click.Path(dir_okay=False), default=None,
              help="batch: normalize with stored statistics (inference mode).")
@preview_option
@common_output_options
def norm(inputs, op_name, display, fit, batch_size, momentum, cumulative, save_stats, stats_file,
         preview, **kw):
    """Normalize each image in INPUTS (instance, layer, group) or all of them as one batch.

    \b
    batch norm has three modes:
      poolcli norm --op batch a.png b.png ...                 # one batch, batch statistics
      poolcli norm --op batch --fit --save-stats s.json dir/  # fit running statistics
      poolcli norm --op batch --stats s.json new.png          # inference with stored statistics
    """
    b, op_params = split_batch(kw)
    op = registry.get(op_name)
    params = {name: op_params[name] for name in op.params}
    _validate_geometry(op, params)
    _check_display(display)
    if op.name != "batch" and (fit or save_stats or stats_file):
        raise click.UsageError("--fit, --save-stats and --stats work with --op batch only")
    if save_stats and not fit:
        raise click.UsageError("--save-stats needs --fit")
    if fit and stats_file:
        raise click.UsageError("--fit and --stats exclude each other")
    session = Session(b["as_json"], b["quiet"], b["verbose"])
    # fitting writes only the statistics file, so outputs are not named
    jobs = plan(session, inputs, op.name, b, name_outputs=not fit)
    opts = {**write_opts(b), "display": display,
            "preview": None if b["as_json"] else preview}
    if preview != "never":
        b["workers"] = 1
    if op.name != "batch":
        batch_run(session, jobs, norm_one, (op, params, opts, b["max_pixels"]), b)
    elif fit:
        _batch_fit(session, jobs, params, batch_size, None if cumulative else momentum,
                   save_stats, b["max_pixels"])
    else:
        _batch_apply(session, jobs, params, stats_file, opts, b["max_pixels"])
    session.exit()


def _check_display(display):
    import re

    if display in ("minmax", "clip") or re.fullmatch(r"sigma(:\d+(\.\d*)?)?", display):
        return
    raise click.BadParameter(f"{display!r}: use minmax, sigma:K or clip",
                             param_hint="'--display'")


def _affine_arrays(params, channels):
    """--gamma/--beta: one value for all channels or one per channel (checked per image)."""
    out = {}
    for key in ("gamma", "beta"):
        v = params.get(key)
        if v is not None and len(v) not in (1, channels):
            raise ValueError(f"--{key} has {len(v)} values for a {channels}-channel image "
                             f"(give 1 or {channels})")
        out[key] = None if v is None else (v[0] if len(v) == 1 else list(v))
    return {**params, **out}


def write_normalized(values, out_path, *, channels, opts, notes):
    """Exact floats for npy/tiff; a named display mapping for 8-bit formats."""
    import numpy as np

    from poolcli import imageio

    target = imageio.output_dtype_for(out_path, values.dtype)
    data = values
    display = None
    if np.dtype(target) != values.dtype:
        mapping = opts["display"]
        kwargs = {}
        if mapping.startswith("sigma"):
            kwargs["sigma_k"] = float(mapping.split(":", 1)[1]) if ":" in mapping else 3.0
            mapping = "sigma"
        data, display = imageio.to_display(values, mapping, **kwargs)
        notes.append(f"display mapping: {display}")
    imageio.make_parent_dirs(out_path)
    imageio.write_image(out_path, data, channels=channels, overwrite=opts["force"],
                        compress_level=opts["compress_level"], quality=opts["quality"])
    return display


def _norm_record(img, out_path, op, params, values, notes, display, stats=None):
    stats_in, stats_out = (stats.result() if stats is not None else
                           (_stats(img.array, img.channels), _stats(values, img.channels)))
    return {
        "input": img.source, "output": out_path, "op": op,
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        "shape_in": list(img.array.shape), "shape_out": list(values.shape),
        "dtype_in": str(img.array.dtype), "dtype_out": str(values.dtype),
        "stats_in": stats_in, "stats_out": stats_out,
        "display": display, "notes": notes,
    }


def norm_one(job, op, params, opts, max_pixels) -> dict:
    img = _read(job.source, max_pixels)
    p = _affine_arrays(params, img.array.shape[-1])
    values = op.run(img.array, p, False).values
    notes = list(img.notes)
    stats = _stats_pair(img.array, values, img.channels)
    display = write_normalized(values, job.output, channels=img.channels, opts=opts, notes=notes)
    _maybe_preview(values, opts.get("preview"), False, None, img.channels)
    return _norm_record(img, job.output, op.name, params, values, notes, display, stats)


def _read_batch(session, jobs, max_pixels):
    """Read every job; returns [(job, image)] of the readable ones (errors reported)."""
    from poolcli.errors import PoolcliError

    loaded = []
    for job in jobs:
        try:
            loaded.append((job, _read(job.source, max_pixels)))
        except PoolcliError as exc:
            session.error(_one_line(exc))
    return loaded


def _keep_common_shape(session, loaded):
    """Batch norm needs one shape: keep the most common one, fail each odd image in one line."""
    from collections import Counter

    shapes = Counter(img.array.shape for _, img in loaded)
    if len(shapes) <= 1:
        return loaded
    common = shapes.most_common(1)[0][0]
    for _, img in loaded:
        if img.array.shape != common:
            session.error(f"{img.source}: shape {img.array.shape} differs from the batch's "
                          f"{common} (batch norm needs images of one shape; left out)")
    return [(job, img) for job, img in loaded if img.array.shape == common]


def _batch_stats_table(session, title, mean, var, channels, extra=""):
    if session.quiet:
        return
    from rich.markup import escape
    from rich.table import Table

    from poolcli.report import fmt_num, printable

    t = Table(title=escape(printable(title)), title_justify="left",
              caption=escape(printable(extra)) if extra else None, caption_justify="left")
    for col in ("ch", "mean", "var"):
        t.add_column(col, justify="left" if col == "ch" else "right")
    for c, m, v in zip(channels, mean, var):
        t.add_row(c, fmt_num(float(m)), fmt_num(float(v)))
    session.console.print(t)


def _batch_apply(session, jobs, params, stats_file, opts, max_pixels):
    """Batch norm of all inputs as one batch, or inference with stored statistics."""
    import numpy as np

    from poolcli.ops.norm import batch_norm

    loaded = _read_batch(session, jobs, max_pixels)
    if not loaded:
        return
    if stats_file:
        stored = load_stats(stats_file)
        channels = loaded[0][1].channels
        mean = np.asarray(stored["running_mean"], dtype=np.float64)
        var = np.asarray(stored["running_var"], dtype=np.float64)
        _batch_stats_table(session, f"running statistics from {stats_file}", mean, var,
                           stored.get("channels", channels),
                           f"{stored.get('images')} images, {stored.get('count')} pixels/channel")
        for job, img in loaded:
            try:
                if img.array.shape[-1] != mean.size:
                    raise ValueError(f"{img.array.shape[-1]} channels, but {stats_file} has "
                                     f"statistics for {mean.size}")
                p = _affine_arrays(params, img.array.shape[-1])
                values = batch_norm(img.array[None], mean, var, weight=p["gamma"], bias=p["beta"],
                                    training=False, eps=p["eps"])[0]
                notes = list(img.notes) + [f"inference with running statistics of {stats_file}"]
                display = write_normalized(values, job.output, channels=img.channels, opts=opts,
                                           notes=notes)
            except (ValueError, TypeError) as exc:
                session.error(f"{img.source}: {_one_line(exc)}")
            except Exception as exc:  # PoolcliError from writing
                session.error(_one_line(exc))
            else:
                session.emit(_norm_record(img, job.output, "batch", params, values, notes,
                                          display))
        return
    loaded = _keep_common_shape(session, loaded)
    batch = np.stack([img.array for _, img in loaded])
    channels = loaded[0][1].channels
    try:
        p = _affine_arrays(params, batch.shape[-1])
        values = batch_norm(batch, None, None, weight=p["gamma"], bias=p["beta"], training=True,
                            eps=p["eps"])
    except (ValueError, TypeError) as exc:
        names = ", ".join(img.source for _, img in loaded)
        session.failed += len(loaded) - 1
        session.error(f"{names}: {_one_line(exc)}")
        return
    x64 = batch.astype(np.float64)
    mean = x64.mean(axis=(0, 1, 2))
    var = x64.var(axis=(0, 1, 2))
    _batch_stats_table(session, f"batch statistics over {len(loaded)} images", mean, var,
                       channels, "biased variance, as used for normalizing")
    for (job, img), out in zip(loaded, values):
        notes = list(img.notes) + [f"batch statistics over {len(loaded)} images"]
        try:
            display = write_normalized(out, job.output, channels=img.channels, opts=opts,
                                       notes=notes)
        except Exception as exc:
            session.error(_one_line(exc))
        else:
            session.emit(_norm_record(img, job.output, "batch", params, out, notes, display))


def _batch_fit(session, jobs, params, batch_size, momentum, save_stats, max_pixels):
    """Stream the inputs in chunks and accumulate running statistics (nothing else written)."""
    import json

    import numpy as np

    from poolcli.errors import PoolcliError
    from poolcli.ops.norm import RunningStats

    rs = RunningStats()
    shape = None
    used = []
    chunk = []

    def flush():
        if chunk:
            try:
                rs.update(np.stack([a for _, a in chunk]), momentum=momentum)
            except (ValueError, TypeError) as exc:
                session.failed += len(chunk) - 1
                session.error(f"{', '.join(s for s, _ in chunk)}: {_one_line(exc)}")
            else:
                used.extend(s for s, _ in chunk)
            chunk.clear()

    for job in jobs:
        try:
            img = _read(job.source, max_pixels)
        except PoolcliError as exc:
            session.error(_one_line(exc))
            continue
        if shape is None:
            shape = img.array.shape
            channels = img.channels
        if img.array.shape != shape:
            session.error(f"{img.source}: shape {img.array.shape} differs from the first "
                          f"image's {shape}; batch statistics need one shape")
            continue
        chunk.append((img.source, img.array))
        if len(chunk) == batch_size:
            flush()
    flush()
    if not used:
        return
    record = {
        "format": STATS_FORMAT, "format_version": 1, "poolcli_version": __version__,
        "channels": list(channels), "images": len(used), "count": int(rs.count),
        "mean": rs.mean.tolist(), "var": rs.var.tolist(), "var_unbiased": rs.var_unbiased.tolist(),
        "running_mean": rs.running_mean.tolist(), "running_var": rs.running_var.tolist(),
        "num_batches_tracked": int(rs.num_batches_tracked),
        "momentum": momentum, "batch_size": batch_size, "eps": params["eps"],
        "shape": list(shape), "sources": [os.path.basename(s) for s in used],
    }
    _batch_stats_table(session, f"running statistics over {len(used)} images "
                       f"({rs.num_batches_tracked} chunks)", rs.running_mean, rs.running_var,
                       channels, "momentum " + ("cumulative" if momentum is None else
                                                f"{momentum:g}") +
                       f"; exact mean/var over all pixels: "
                       + ", ".join(f"{m:.4g}/{v:.4g}" for m, v in zip(rs.mean, rs.var)))
    if save_stats:
        from poolcli.imageio import _atomic_write

        text = json.dumps(record, indent=2)
        try:
            _atomic_write(save_stats, lambda fh: fh.write(text.encode()), True)
        except PoolcliError as exc:
            session.error(_one_line(exc))
            return
    if session.as_json:
        click.echo(json.dumps({"stats": record, "output": save_stats}))
    session.ok += 1


def load_stats(path) -> dict:
    """Read a statistics JSON written by ``norm --op batch --fit --save-stats``."""
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise click.UsageError(f"{path}: no such statistics file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.UsageError(f"{path}: not a readable statistics JSON ({_one_line(exc)})") \
            from None
    ok = isinstance(data, dict) and data.get("format") == STATS_FORMAT
    if ok:
        rm, rv = data.get("running_mean"), data.get("running_var")
        ok = (isinstance(rm, list) and isinstance(rv, list) and len(rm) == len(rv) > 0
              and all(isinstance(v, (int, float)) for v in rm + rv)
              and all(v >= 0 for v in rv))
    if not ok:
        raise click.UsageError(f"{path}: not a poolcli batch-norm statistics file "
                               f"(format {STATS_FORMAT!r} with running_mean/running_var)")
    return data


# ----------------------------------------------------------------------------------------------
# unpool
# ----------------------------------------------------------------------------------------------


@main.command(context_settings=CONTEXT)
@click.argument("pooled")
@click.option("--indices", "map_path", required=True, type=click.Path(dir_okay=False),
              help="Max-location map written by `pool --save-indices` ({stem}.indices.npz).")
@click.option("--accumulate", is_flag=True,
              help="Add values that land on the same cell (the true backward pass of "
                   "overlapping pooling) instead of overwriting like PyTorch.")
@click.option("--output-size", type=SIZE, default=None,
              help="Override the output size HxW [default: the input size stored in the map].")
@preview_option
@common_output_options
def unpool(pooled, map_path, accumulate, output_size, preview, **kw):
    """Rebuild the pre-pooling size from POOLED and its max-location map (zeros elsewhere).

    POOLED may be the pooled image itself or any image of the pooled shape (for example after
    `poolcli norm`). The output size comes from the map, so it never has to be guessed.
    """
    from poolcli import indexmap
    from poolcli.errors import PoolcliError

    b, _ = split_batch(kw)
    session = Session(b["as_json"], b["quiet"], b["verbose"])
    jobs = plan(session, [pooled], "unpool", b)
    job = jobs[0]
    opts = {**write_opts(b), "display": "sigma:3"}
    try:
        m = indexmap.load(map_path)
        img = _read(job.source, b["max_pixels"])
        record = unpool_one(img, m, map_path, job.output, accumulate, output_size, opts)
        _maybe_preview(imageio_read_back(record), preview, b["as_json"], img.array.dtype,
                       img.channels)
    except PoolcliError as exc:
        session.error(_one_line(exc))
    except (ValueError, TypeError) as exc:
        session.error(f"{job.source}: {_one_line(exc)}")
    else:
        session.emit(record)
    session.exit()


def imageio_read_back(record):
    """The array just written for ``record`` (unpool keeps no copy of it)."""
    from poolcli import imageio

    return imageio.read_image(record["output"]).array


def unpool_one(img, m, map_path, out_path, accumulate, output_size, opts) -> dict:
    """Unpool a decoded image with a loaded map; raises IndexMapError on any mismatch."""
    from poolcli.errors import IndexMapError
    from poolcli.ops import max_unpool2d

    x = img.array
    if x.shape[:2] != m.indices.shape[:2]:
        raise IndexMapError(f"{img.source}: image is {x.shape[0]}x{x.shape[1]} but the map "
                            f"{map_path} was made for a {m.indices.shape[0]}x"
                            f"{m.indices.shape[1]} pooled image")
    if x.shape[2] != m.indices.shape[2]:
        raise IndexMapError(f"{img.source}: {x.shape[2]} channels but the map {map_path} has "
                            f"{m.indices.shape[2]}")
    h, w, _ = m.input_shape
    size = output_size or (h, w)
    geo = m.geometry()
    values = max_unpool2d(x, m.indices, geo["kernel_size"], geo["stride"], geo["padding"],
                          output_size=size, reduce="sum" if accumulate else None)
    notes = list(img.notes) + [f"map {map_path}: {m.meta.get('operator')} of "
                               f"{m.meta.get('source')} {h}x{w}"]
    if x.dtype.kind == "f" and x.min() < 0:  # a normalized image: signed values
        display = write_normalized(values, out_path, channels=img.channels, opts=opts,
                                   notes=notes)
    else:
        display = None
        write_result(values, out_path, channels=img.channels, source_dtype=x.dtype, opts=opts,
                     notes=notes)
    zero = float((values == 0).mean())
    notes.append(f"zero cells: {100 * zero:.1f}% (non-overlapping k x k pooling gives about "
                 f"1 - 1/k²)")
    return {
        "input": img.source, "output": out_path, "op": "unpool",
        "params": {"indices": map_path, "accumulate": accumulate, "output_size": list(size)},
        "shape_in": list(x.shape), "shape_out": list(values.shape),
        "dtype_in": str(x.dtype), "dtype_out": str(values.dtype),
        "stats_in": _stats(x, img.channels), "stats_out": _stats(values, img.channels),
        "zero_fraction": zero, "display": display, "notes": notes,
    }


# ----------------------------------------------------------------------------------------------
# chain: pipelines
# ----------------------------------------------------------------------------------------------


@main.group(chain=True, context_settings=CONTEXT, invoke_without_command=True)
@click.option("-i", "--input", "inputs", multiple=True,
              help="Input file, directory or glob pattern (repeatable; - for stdin).")
@click.option("--pipeline", "pipeline_file", type=click.Path(dir_okay=False), default=None,
              help="Read the stages from a TOML or JSON file (see README); stages given on "
                   "the command line run after them.")
@click.option("--stats", "stats_mode", type=click.Choice(["each", "last", "none"]),
              default="last", show_default=True,
              help="Statistics table rows: after every stage, input and final result, or none.")
@common_output_options
def chain(**kw):
    """Run several stages in order on each image: pool, norm and unpool, each with the options
    of its standalone command.

    \b
    Example:
      poolcli chain -i 'photos/*.jpg' -o out/ pool --op max -k 2 norm --op instance unpool
    `unpool` uses the indices of the most recent selecting stage, so no files are needed in
    between. The output is named {stem}_{op}{ext} with {op} the stage operators joined by '-'.
    """


@chain.result_callback()
def _run_chain(stages, inputs, pipeline_file, stats_mode, **kw):
    from poolcli.pipeline import run_pipeline, stages_from_file

    ctx = click.get_current_context()
    stages = list(stages or [])
    if pipeline_file:
        try:
            parsed = stages_from_file(pipeline_file)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--pipeline'") from None
        file_stages = []
        for command, args in parsed:
            if command not in chain.commands:
                raise click.BadParameter(f"{pipeline_file}: unknown stage {command!r} "
                                         f"(pool, norm or unpool)", param_hint="'--pipeline'")
            cmd = chain.commands[command]
            with cmd.make_context(command, args, parent=ctx) as sub:
                file_stages.append(cmd.invoke(sub))
        stages = file_stages + stages
    if not stages:
        raise click.UsageError("no stages: give pool/norm/unpool after the options, or "
                               "--pipeline FILE")
    if stages[0].command == "unpool":
        raise click.UsageError("a pipeline cannot start with unpool (nothing selected yet)")
    b, _ = split_batch(kw)
    session = Session(b["as_json"], b["quiet"] or stats_mode == "none", b["verbose"])
    name = "-".join(s.op for s in stages)
    jobs = plan(session, inputs, name, b)
    opts = {**write_opts(b), "display": next((s.flags["display"] for s in stages
                                              if s.command == "norm"), "sigma:3")}
    batch_run(session, jobs, run_pipeline, (stages, opts, b["max_pixels"], stats_mode), b)
    session.exit()


@chain.command("pool", context_settings=CONTEXT)
@click.option("--op", "op_name", type=click.Choice(registry.names("pool")), default="max",
              show_default=True, help="Pooling operator.")
@_op_options("pool")
@click.option("--save-indices", is_flag=True,
              help="Also write this stage's map as {output stem}.stageN.indices.npz.")
def chain_pool(op_name, save_indices, **op_params):
    """A pooling stage (options as `poolcli pool`)."""
    from poolcli.pipeline import Stage

    op = registry.get(op_name)
    params = {name: op_params[name] for name in op.params}
    _validate_geometry(op, params)
    return Stage("pool", op.name, params, {"save_indices": save_indices})


@chain.command("norm", context_settings=CONTEXT)
@click.option("--op", "op_name", type=click.Choice(registry.names("norm")), default="instance",
              show_default=True, help="Normalization.")
@_op_options("norm")
@click.option("--display", default="sigma:3", show_default=True,
              help="Mapping of signed results to 8-bit files (minmax, sigma:K, clip).")
@click.option("--stats", "stats_file", type=click.Path(dir_okay=False), default=None,
              help="batch: stored statistics (inference mode; required in a chain).")
def chain_norm(op_name, display, stats_file, **op_params):
    """A normalization stage (options as `poolcli norm`)."""
    from poolcli.pipeline import Stage

    op = registry.get(op_name)
    _check_display(display)
    if op.name == "batch" and not stats_file:
        raise click.UsageError("norm --op batch in a chain needs --stats FILE (fit it first "
                               "with `poolcli norm --op batch --fit --save-stats FILE`)")
    if stats_file:
        load_stats(stats_file)  # fail before any image is read
    params = {name: op_params[name] for name in op.params}
    return Stage("norm", op.name, params, {"display": display, "stats": stats_file})


@chain.command("unpool", context_settings=CONTEXT)
@click.option("--accumulate", is_flag=True,
              help="Add values landing on the same cell (the max-pool backward pass).")
def chain_unpool(accumulate):
    """Unpool with the indices of the most recent selecting stage."""
    from poolcli.pipeline import Stage

    return Stage("unpool", "unpool", {}, {"accumulate": accumulate})


from poolcli import cli_visual  # noqa: E402,F401  (registers compare/explain)
