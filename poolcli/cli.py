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
    run_params = dict(params)
    if "seed" in op.params:  # each image its own random stream, derived from one base seed
        run_params["_key"] = os.path.basename(job.source)
    result = op.run(x, run_params, save_indices)
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
@common_output_options
def norm(inputs, op_name, display, fit, batch_size, momentum, cumulative, save_stats, stats_file,
         output, fmt, force, quality, compress_level, max_pixels, as_json, verbose, quiet,
         recursive, **op_params):
    """Normalize each image in INPUTS (instance, layer, group) or all of them as one batch.

    \b
    batch norm has three modes:
      poolcli norm --op batch a.png b.png ...                 # one batch, batch statistics
      poolcli norm --op batch --fit --save-stats s.json dir/  # fit running statistics
      poolcli norm --op batch --stats s.json new.png          # inference with stored statistics
    """
    op = registry.get(op_name)
    params = {name: op_params[name] for name in op.params}
    _check_display(display)
    if op.name != "batch" and (fit or save_stats or stats_file):
        raise click.UsageError("--fit, --save-stats and --stats work with --op batch only")
    if save_stats and not fit:
        raise click.UsageError("--save-stats needs --fit")
    if fit and stats_file:
        raise click.UsageError("--fit and --stats exclude each other")
    session = Session(as_json, quiet, verbose)
    if fit:  # fitting writes only the statistics file
        from poolcli.batch import expand_inputs

        jobs, skipped, missing = expand_inputs(inputs, recursive=recursive)
        for pattern in missing:
            session.error(f"{pattern}: no files match")
    else:
        jobs = plan(session, inputs, op.name, output, fmt, recursive)
    opts = {"force": force, "quality": quality, "compress_level": compress_level,
            "display": display}
    if op.name != "batch":
        run_jobs(session, jobs, lambda job: norm_one(job, op, params, opts, max_pixels))
    elif fit:
        _batch_fit(session, jobs, params, batch_size, None if cumulative else momentum,
                   save_stats, max_pixels)
    else:
        _batch_apply(session, jobs, params, stats_file, opts, max_pixels)
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
    directory = os.path.dirname(out_path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    imageio.write_image(out_path, data, channels=channels, overwrite=opts["force"],
                        compress_level=opts["compress_level"], quality=opts["quality"])
    return display


def _norm_record(img, out_path, op, params, values, notes, display):
    return {
        "input": img.source, "output": out_path, "op": op,
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        "shape_in": list(img.array.shape), "shape_out": list(values.shape),
        "dtype_in": str(img.array.dtype), "dtype_out": str(values.dtype),
        "stats_in": _stats(img.array, img.channels), "stats_out": _stats(values, img.channels),
        "display": display, "notes": notes,
    }


def norm_one(job, op, params, opts, max_pixels) -> dict:
    img = _read(job.source, max_pixels)
    p = _affine_arrays(params, img.array.shape[-1])
    values = op.run(img.array, p, False).values
    notes = list(img.notes)
    display = write_normalized(values, job.output, channels=img.channels, opts=opts, notes=notes)
    return _norm_record(img, job.output, op.name, params, values, notes, display)


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


def _check_same_shape(loaded):
    from collections import Counter

    shapes = Counter(img.array.shape for _, img in loaded)
    if len(shapes) > 1:
        common = shapes.most_common(1)[0][0]
        odd = [f"{img.source} {img.array.shape}" for _, img in loaded
               if img.array.shape != common]
        raise click.UsageError(
            f"batch norm needs images of one shape; most are {common}, these differ: "
            + ", ".join(odd))


def _batch_stats_table(session, title, mean, var, channels, extra=""):
    if session.quiet:
        return
    from rich.table import Table

    from poolcli.report import fmt_num

    t = Table(title=title, title_justify="left", caption=extra or None, caption_justify="left")
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
    _check_same_shape(loaded)
    batch = np.stack([img.array for _, img in loaded])
    channels = loaded[0][1].channels
    p = _affine_arrays(params, batch.shape[-1])
    x64 = batch.astype(np.float64)
    mean = x64.mean(axis=(0, 1, 2))
    var = x64.var(axis=(0, 1, 2))
    _batch_stats_table(session, f"batch statistics over {len(loaded)} images", mean, var,
                       channels, "biased variance, as used for normalizing")
    values = batch_norm(batch, None, None, weight=p["gamma"], bias=p["beta"], training=True,
                        eps=p["eps"])
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
            rs.update(np.stack([a for _, a in chunk]), momentum=momentum)
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
@common_output_options
def unpool(pooled, map_path, accumulate, output_size, output, fmt, force, quality,
           compress_level, max_pixels, as_json, verbose, quiet, recursive):
    """Rebuild the pre-pooling size from POOLED and its max-location map (zeros elsewhere).

    POOLED may be the pooled image itself or any image of the pooled shape (for example after
    `poolcli norm`). The output size comes from the map, so it never has to be guessed.
    """
    from poolcli import indexmap
    from poolcli.errors import PoolcliError

    session = Session(as_json, quiet, verbose)
    jobs = plan(session, [pooled], "unpool", output, fmt, False)
    job = jobs[0]
    opts = {"force": force, "quality": quality, "compress_level": compress_level,
            "display": "sigma:3"}
    try:
        m = indexmap.load(map_path)
        img = _read(job.source, max_pixels)
        record = unpool_one(img, m, map_path, job.output, accumulate, output_size, opts)
    except PoolcliError as exc:
        session.error(_one_line(exc))
    except (ValueError, TypeError) as exc:
        session.error(f"{job.source}: {_one_line(exc)}")
    else:
        session.emit(record)
    session.exit()


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
