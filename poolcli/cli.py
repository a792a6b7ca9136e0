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
    """Where output goes, and the error tally of one command run."""

    def __init__(self, as_json: bool, quiet: bool, verbose: bool = False):
        self.as_json = as_json
        self.quiet = quiet
        self.verbose = verbose
        self.failed = 0
        self.ok = 0
        self._console = None

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            # Tables go to stdout unless stdout carries JSON.
            self._console = Console(stderr=self.as_json, highlight=False)
        return self._console

    def error(self, message: str) -> None:
        self.failed += 1
        click.echo(f"poolcli: error: {message}", err=True)

    def warn(self, message: str) -> None:
        if not self.quiet:
            click.echo(f"poolcli: {message}", err=True)

    def emit(self, record: dict, table=True) -> None:
        self.ok += 1
        if self.as_json:
            from poolcli.report import json_line

            click.echo(json_line(record))
        if table and not self.quiet:
            from poolcli.report import stats_table

            self.console.print(stats_table(record))

    def exit(self):
        sys.exit(EXIT_FAILED if self.failed else EXIT_OK)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def run_jobs(session: Session, jobs, work) -> None:
    """Run ``work(job) -> record`` for each job, reporting failures in one line and going on."""
    from poolcli.errors import PoolcliError

    for job in jobs:
        try:
            record = work(job)
        except PoolcliError as exc:
            session.error(_one_line(exc))
        except (ValueError, TypeError, MemoryError) as exc:
            if session.verbose:
                import traceback

                traceback.print_exc()
            session.error(f"{job.source}: {_one_line(exc)}")
        else:
            session.emit(record)


def common_output_options(f):
    """Options shared by commands that write one result per input."""
    f = click.option("-q", "--quiet", is_flag=True, help="No tables; errors only.")(f)
    f = click.option("-v", "--verbose", is_flag=True, help="Tracebacks for errors.")(f)
    f = click.option("--json", "as_json", is_flag=True,
                     help="One JSON object per image on stdout; tables go to stderr.")(f)
    f = click.option("--max-pixels", type=click.IntRange(min=1), default=None,
                     help="Refuse images with more pixels (decompression-bomb guard) "
                          "[default: 178956970].")(f)
    f = click.option("--compress-level", type=click.IntRange(0, 9), default=None,
                     help="PNG/TIFF zlib level [default: 1, see README].")(f)
    f = click.option("--quality", type=click.IntRange(1, 100), default=None,
                     help="JPEG/WebP quality [default: 90].")(f)
    f = click.option("--force", is_flag=True, help="Replace existing outputs (never inputs).")(f)
    f = click.option("--format", "fmt", type=click.Choice(FORMATS, case_sensitive=False),
                     default=None, help="Output format [default: the input's].")(f)
    f = click.option("-o", "--output", type=click.Path(), default=None,
                     help="Output file (one input) or directory (created if missing) "
                          "[default: beside each input as {stem}_{op}{ext}].")(f)
    f = click.option("-r", "--recursive", is_flag=True,
                     help="Descend into sub-directories of directory inputs.")(f)
    return f


def plan(session: Session, inputs, op_name, output, fmt, recursive):
    """Expand inputs and name outputs; usage problems exit 2 before any file is read."""
    from poolcli.batch import expand_inputs, plan_outputs

    jobs, skipped, missing = expand_inputs(inputs, recursive=recursive)
    for pattern in missing:
        session.error(f"{pattern}: no files match")
    if skipped:
        session.warn(f"skipped {skipped} unsupported file(s) in input directories")
    if not jobs and not missing:
        raise click.UsageError("no input images found")
    problems = plan_outputs(jobs, op_name, output, fmt)
    if problems:
        raise click.UsageError("; ".join(problems))
    return jobs


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
    directory = os.path.dirname(out_path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    imageio.write_image(out_path, data, channels=channels, overwrite=opts["force"],
                        compress_level=opts["compress_level"], quality=opts["quality"])


def _stats(x, channels=None):
    from poolcli.stats import channel_stats

    return [s.as_dict() for s in channel_stats(x, channels)]


def _read(path, max_pixels):
    from poolcli import imageio

    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
    return imageio.read_image(path, **kwargs)


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
    """Check window parameters that do not depend on the image (exit 2 before reading files)."""
    if "kernel" in op.params and "padding" in op.params:
        k, p = params["kernel"], params.get("padding") or (0, 0)
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise click.BadParameter(
                f"padding {p[0]}x{p[1]} is more than half the kernel {k[0]}x{k[1]} "
                f"(at most {k[0] // 2}x{k[1] // 2})", param_hint="'-p' / '--padding'")


@main.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True)
@click.option("--op", "op_name", type=click.Choice(registry.names("pool")), default="max",
              show_default=True, help="Pooling operator (see `poolcli ops`).")
@_op_options("pool")
@click.option("--save-indices", is_flag=True,
              help="Also write the max-location map {output stem}.indices.npz (selecting ops).")
@common_output_options
def pool(inputs, op_name, save_indices, output, fmt, force, quality, compress_level, max_pixels,
         as_json, verbose, quiet, recursive, **op_params):
    """Pool each image in INPUTS (files, directories, glob patterns, - for stdin).

    Prints per-channel statistics of input and output; writes the result beside each input as
    {stem}_{op}{ext} unless -o is given. Inputs are never overwritten.
    """
    op = registry.get(op_name)
    params = {name: op_params[name] for name in op.params}
    _validate_geometry(op, params)
    if save_indices and not op.selects:
        selecting = ", ".join(o.name for o in registry.OPERATORS if o.selects)
        raise click.BadParameter(f"--op {op.name} does not select cells; --save-indices works "
                                 f"with {selecting}", param_hint="'--save-indices'")
    session = Session(as_json, quiet, verbose)
    jobs = plan(session, inputs, op.name, output, fmt, recursive)
    opts = {"force": force, "quality": quality, "compress_level": compress_level}

    def work(job):
        return pool_one(job, op, params, save_indices, opts, max_pixels)

    run_jobs(session, jobs, work)
    session.exit()


def pool_one(job, op, params, save_indices, opts, max_pixels) -> dict:
    """Read, pool, write (and save indices) for one job; returns the report record."""
    from poolcli import indexmap

    img = _read(job.source, max_pixels)
    x = img.array
    result = op.run(x, params, save_indices)
    values = result.values
    notes = list(img.notes)
    notes.extend(f"{k}: {v}" for k, v in result.info.items())
    map_path = None
    if save_indices:
        map_path = indexmap.map_path_for(job.output)
        meta = indexmap.build_meta(operator=op.name, params=params, input_shape=x.shape,
                                   input_dtype=x.dtype, output_shape=values.shape,
                                   source=img.source)
        indexmap.save(map_path, result.indices, meta, overwrite=opts["force"])
    try:
        write_result(values, job.output, channels=img.channels, source_dtype=x.dtype, opts=opts,
                     notes=notes)
    except BaseException:
        if map_path and os.path.exists(map_path):
            os.unlink(map_path)  # no half result: the map without its image is useless
        raise
    record = {
        "input": img.source,
        "output": job.output,
        "op": op.name,
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        "shape_in": list(x.shape),
        "shape_out": list(values.shape),
        "dtype_in": str(x.dtype),
        "dtype_out": str(values.dtype),
        "stats_in": _stats(x, img.channels),
        "stats_out": _stats(values, img.channels),
        "notes": notes,
    }
    record.update(result.info)
    if map_path:
        record["indices"] = map_path
    return record


@main.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True, help="Descend into sub-directories.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image on stdout.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="Refuse images with more pixels [default: 178956970].")
@click.option("-q", "--quiet", is_flag=True, help="No tables; errors only.")
@click.option("-v", "--verbose", is_flag=True, help="Tracebacks for errors.")
def stats(inputs, recursive, as_json, max_pixels, quiet, verbose):
    """Print per-channel statistics (min, max, mean, population std, zeros) of each image."""
    from poolcli.batch import expand_inputs

    session = Session(as_json, quiet, verbose)
    jobs, skipped, missing = expand_inputs(inputs, recursive=recursive)
    for pattern in missing:
        session.error(f"{pattern}: no files match")
    if skipped:
        session.warn(f"skipped {skipped} unsupported file(s) in input directories")

    def work(job):
        img = _read(job.source, max_pixels)
        return {"input": img.source, "shape_in": list(img.array.shape),
                "dtype_in": str(img.array.dtype), "channels": list(img.channels),
                "stats_in": _stats(img.array, img.channels), "notes": list(img.notes)}

    run_jobs(session, jobs, work)
    session.exit()


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
