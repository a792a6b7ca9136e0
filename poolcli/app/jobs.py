"""What each command does to one image, and the one record builder.

A job function takes a :class:`~poolcli.app.plan.Job` and plain, picklable arguments (so worker
processes can run it), reads the image, computes, writes through the output policy
(:mod:`poolcli.app.outputs`) and returns the report record (:func:`build_record`). Side files are
written before the main output; if anything fails the runner removes them again, so a map never
outlives the image it belongs to.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from poolcli import registry
from poolcli.app.outputs import WriteOptions, provenance, write_values
from poolcli.app.runner import track_commit
from poolcli.errors import PoolcliError

__all__ = ["read", "build_record", "channel_stats", "Background", "PoolSpec", "pool_one",
           "pool_compute", "norm_one", "unpool_one", "unpool_compute", "stats_one",
           "selection_path", "pool_side_files", "PREVIEW_KEY"]

#: Record key holding the result array for a terminal preview (never serialized).
PREVIEW_KEY = "_preview"


def read(path: str, max_pixels: int | None):
    """Decode one input (``None``: the default decompression-bomb guard)."""
    from poolcli import imageio

    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
    return imageio.read_image(path, **kwargs)


def channel_stats(x, channels=None) -> list[dict]:
    from poolcli.stats import channel_stats as stats

    return [s.as_dict() for s in stats(x, channels)]


class Background:
    """Run a side-effect-free ``fn()`` in a daemon thread; :meth:`result` joins and re-raises.

    Used for the statistics, which only the report needs, while the main thread encodes and
    writes: numpy and libdeflate release the GIL, so on two cores the work overlaps (a 2048x2048
    pool run with its tables: 430 against 470 ms, 11 interleaved runs). Anything that touches
    files stays in the main thread, so an interrupt never leaves a file to a thread.
    """

    def __init__(self, fn):
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


def stats_beside(x, values, channels, wanted: bool = True) -> Background | None:
    """Statistics of input and output, computed beside the caller's writing (or None)."""
    if not wanted:
        return None
    return Background(lambda: (channel_stats(x, channels), channel_stats(values, channels)))


def jsonable(params: dict) -> dict:
    """Parameters as JSON values (tuples as lists), without private ``_`` keys."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()
            if not k.startswith("_")}


def build_record(img, output: str | None, op: str, params: dict, values, notes: list[str], *,
                 stats=None, display: str | None = None, **extra: Any) -> dict:
    """The one JSON record of a processed image (see the README's "Scripts" for the schema).

    ``stats``: a :class:`Background` computing ``(stats_in, stats_out)``, or ``True`` to compute
    them here, or ``None`` for none (nobody will see them).
    """
    import numpy as np

    if isinstance(stats, Background):
        stats_in, stats_out = stats.result()
    elif stats:
        stats_in, stats_out = channel_stats(img.array, img.channels), channel_stats(
            values, img.channels)
    else:
        stats_in = stats_out = None
    values = np.asarray(values)
    record = {
        "input": img.source, "output": output, "op": op, "params": jsonable(params),
        "shape_in": list(img.array.shape), "shape_out": list(values.shape),
        "dtype_in": str(img.array.dtype), "dtype_out": str(values.dtype),
        "stats_in": stats_in, "stats_out": stats_out, "display": display, "notes": notes,
    }
    record.update(extra)
    return record


# ----------------------------------------------------------------------------------------------
# pool
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSpec:
    """A pooling run: the operator, its parameters and which side files to write."""

    op: str
    params: dict
    save_indices: bool = False
    indices_png: bool = False
    preview: bool = False


def selection_path(output: str) -> str:
    """``{output stem}.selected.png``: the selected cells of the input, others black."""
    return os.path.splitext(output)[0] + ".selected.png"


def pool_side_files(spec: PoolSpec):
    """The side files one pool job writes beside ``output``, for the plan."""
    from poolcli.imageio.indexmap import map_path_for

    def side(output: str) -> list[str]:
        paths = []
        if spec.save_indices:
            paths.append(map_path_for(output))
        if spec.indices_png:
            paths.append(selection_path(output))
        return paths

    return side


def pool_compute(x, op, params: dict, index: int, want_indices: bool):
    """Run a pooling operator on one array, the ``index``-th image of the run: a seeded
    operator gets the image's own seed (:func:`poolcli.registry.image_seed`)."""
    run_params = dict(params)
    if "seed" in op.params and params.get("seed") is not None:
        run_params["seed"] = registry.image_seed(params["seed"], index)
    return op.run(x, run_params, want_indices)


def pool_one(job, spec: PoolSpec, opts: WriteOptions, max_pixels) -> dict:
    """Read, pool, write (side files first) for one job; returns the report record. A large
    image is pooled band by band (:mod:`poolcli.app.stream`) when it can be."""
    from poolcli.app.stream import pool_stream
    from poolcli.imageio import indexmap

    streamed = pool_stream(job, spec, opts, max_pixels, build_record)
    if streamed is not None:
        return streamed
    op = registry.get(spec.op)
    img = read(job.source, max_pixels)
    x = img.array
    want_indices = spec.save_indices or spec.indices_png
    result = pool_compute(x, op, spec.params, job.index, want_indices)
    values = result.values
    stats = stats_beside(x, values, img.channels, opts.stats)
    notes = list(img.notes) + [f"{k}: {v}" for k, v in result.info.items()]
    extra = dict(result.info)
    if spec.save_indices:
        map_path = indexmap.map_path_for(job.output)
        meta = indexmap.build_meta(operator=op.name, params=spec.params, input_shape=x.shape,
                                   input_dtype=x.dtype, output_shape=values.shape,
                                   source=img.source)
        indexmap.save(map_path, result.indices, meta, overwrite=opts.force,
                      on_commit=track_commit)  # a failed or interrupted job removes it
        extra["indices"] = map_path
    made = provenance("pool", op.name, spec.params, result.info)
    if spec.indices_png:
        from poolcli.visual import selection_picture

        write_values(selection_picture(x, result.indices), selection_path(job.output),
                     channels=img.channels, opts=opts, notes=[], source_dtype=x.dtype,
                     provenance={**made, "picture": "selected cells"})
    write_values(values, job.output, channels=img.channels, opts=opts, notes=notes,
                 source_dtype=x.dtype, provenance=made)
    if spec.preview:
        extra[PREVIEW_KEY] = (values, x.dtype, img.channels)
    return build_record(img, job.output, op.name, spec.params, values, notes, stats=stats,
                        **extra)


# ----------------------------------------------------------------------------------------------
# norm (per image: instance, layer, group)
# ----------------------------------------------------------------------------------------------


def norm_one(job, op_name: str, params: dict, opts: WriteOptions, max_pixels,
             preview: bool = False) -> dict:
    """Normalize one job; a large image in passes over its bands when it can be
    (:func:`poolcli.app.stream.norm_stream`)."""
    from poolcli.app.stream import norm_stream

    streamed = norm_stream(job, op_name, params, opts, max_pixels, preview, build_record)
    if streamed is not None:
        return streamed
    op = registry.get(op_name)
    img = read(job.source, max_pixels)
    values = op.run(img.array, params, False).values
    notes = list(img.notes)
    stats = stats_beside(img.array, values, img.channels, opts.stats)
    display = write_values(values, job.output, channels=img.channels, opts=opts, notes=notes,
                           signed=True, provenance=provenance("norm", op.name, params))
    extra = {PREVIEW_KEY: (values, None, img.channels)} if preview else {}
    return build_record(img, job.output, op.name, params, values, notes, stats=stats,
                        display=display, **extra)


# ----------------------------------------------------------------------------------------------
# unpool
# ----------------------------------------------------------------------------------------------


def unpool_compute(x, m, *, accumulate: bool, output_size=None, what: str = "the map"):
    """Max-unpool ``x`` with a loaded map ``m`` (an :class:`~poolcli.imageio.indexmap.IndexMap`);
    a shape mismatch is a ValueError naming ``what``."""
    from poolcli.ops import max_unpool2d

    idx = m.indices
    if x.shape[:2] != idx.shape[:2]:
        raise ValueError(f"image is {x.shape[0]}x{x.shape[1]} but {what} was made for a "
                         f"{idx.shape[0]}x{idx.shape[1]} pooled image")
    if x.shape[2] != idx.shape[2]:
        raise ValueError(f"{x.shape[2]} channels but {what} has {idx.shape[2]}")
    h, w, _ = m.input_shape
    geo = m.geometry()
    return max_unpool2d(x, idx, geo["kernel_size"], geo["stride"], geo["padding"],
                        output_size=output_size or (h, w),
                        reduce="sum" if accumulate else None)


def unpool_one(job, m, map_path: str, accumulate: bool, output_size, opts: WriteOptions,
               max_pixels, preview: bool = False) -> dict:
    """Unpool one image with the map ``m`` loaded (and validated) from ``map_path``. A large
    one is unpooled band by band (:func:`poolcli.app.stream.unpool_stream`) when it can be."""
    from poolcli.app.stream import unpool_stream

    streamed = unpool_stream(job, m, map_path, accumulate, output_size, opts, max_pixels,
                             preview, build_record)
    if streamed is not None:
        return streamed
    img = read(job.source, max_pixels)
    x = img.array
    try:
        values = unpool_compute(x, m, accumulate=accumulate, output_size=output_size,
                                what=f"the map {map_path}")
    except ValueError as exc:
        raise PoolcliError(f"{img.source}: {exc}") from None
    h, w, _ = m.input_shape
    notes = list(img.notes) + [f"map {map_path}: {m.meta.get('operator')} of "
                               f"{m.meta.get('source')} {h}x{w}"]
    signed = x.dtype.kind == "f" and bool(x.size) and float(x.min()) < 0  # normalized input
    stats = stats_beside(x, values, img.channels, opts.stats)
    made = provenance("unpool", "unpool", {"accumulate": accumulate})
    display = write_values(values, job.output, channels=img.channels, opts=opts, notes=notes,
                           source_dtype=x.dtype, signed=signed, provenance=made)
    zero = float((values == 0).mean())
    notes.append(f"zero cells: {100 * zero:.1f}% (non-overlapping k x k pooling gives about "
                 f"1 - 1/k²)")
    params = {"indices": map_path, "accumulate": accumulate,
              "output_size": list(output_size or (h, w))}
    extra = {PREVIEW_KEY: (values, x.dtype, img.channels)} if preview else {}
    return build_record(img, job.output, "unpool", params, values, notes, stats=stats,
                        display=display, zero_fraction=zero, **extra)


# ----------------------------------------------------------------------------------------------
# stats
# ----------------------------------------------------------------------------------------------


def stats_one(job, max_pixels) -> dict:
    """Statistics of one image, and how poolcli made it when it did (its metadata says)."""
    from poolcli.imageio.provenance import read_provenance

    img = read(job.source, max_pixels)
    notes = list(img.notes)
    made = None if job.source == "-" else read_provenance(job.source)
    if made:
        from poolcli.report import describe_params

        params = describe_params(made.get("params") or {})
        notes.append(" ".join(f"made by {made.get('software')}: {made.get('command')} --op "
                              f"{made.get('op')} {params}".split()))
    return {"input": img.source, "shape_in": list(img.array.shape),
            "dtype_in": str(img.array.dtype), "channels": list(img.channels),
            "stats_in": channel_stats(img.array, img.channels), "notes": notes,
            "provenance": made}
