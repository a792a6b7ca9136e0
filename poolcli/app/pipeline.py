"""Pipelines: several stages (pool, norm, unpool) run in order on each image.

A stage is plain data (:class:`Stage`), so a pipeline can be parsed from the command line or from
a file (:mod:`poolcli.imageio.pipelinefile`) and shipped to worker processes. Each stage calls the
same computation as its standalone command (:func:`~poolcli.app.jobs.pool_compute`,
:func:`~poolcli.app.jobs.unpool_compute`, batch-norm inference), and ``unpool`` uses the indices
of the most recent selecting stage, so pool -> norm -> unpool needs no files in between.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from poolcli import registry
from poolcli.app.jobs import build_record, channel_stats, jsonable, pool_compute, read, \
    unpool_compute
from poolcli.app.outputs import WriteOptions, provenance, write_values

__all__ = ["Stage", "run_pipeline", "stage_map_path", "pipeline_side_files"]


@dataclass
class Stage:
    command: str  # "pool", "norm" or "unpool"
    op: str  # operator name; "unpool" for unpool stages
    params: dict = field(default_factory=dict)
    flags: dict = field(default_factory=dict)


def stage_map_path(output: str, n: int) -> str:
    """``{output stem}.stageN.indices.npz``: the map a pipeline's stage ``n`` saves."""
    return os.path.splitext(output)[0] + f".stage{n}.indices.npz"


def pipeline_side_files(stages: list[Stage]):
    """The side files one pipeline job writes beside ``output``, for the plan."""
    def side(output: str) -> list[str]:
        return [stage_map_path(output, n) for n, s in enumerate(stages, 1)
                if s.command == "pool" and s.flags.get("save_indices")]

    return side


def _pool_stage(n, stage, x, img, job, opts, notes, selection):
    from poolcli.imageio import indexmap
    from poolcli.app.runner import track_commit

    op = registry.get(stage.op)
    result = pool_compute(x, op, stage.params, job.index, op.selects)
    if op.selects and result.indices is not None:
        meta = indexmap.build_meta(operator=op.name, params=stage.params, input_shape=x.shape,
                                   input_dtype=x.dtype, output_shape=result.values.shape,
                                   source=img.source)
        selection = indexmap.IndexMap(result.indices, meta)
        if stage.flags.get("save_indices"):
            indexmap.save(stage_map_path(job.output, n), result.indices, meta,
                          overwrite=opts.force, on_commit=track_commit)
    notes.extend(f"stage {n} {k}: {v}" for k, v in result.info.items())
    return result.values, selection


def _norm_stage(stage, x):
    op = registry.get(stage.op)
    if op.name != "batch":
        return op.run(x, stage.params, False).values
    from poolcli.app.batchnorm import normalize_with
    from poolcli.imageio import statsfile

    path = stage.flags["stats"]
    return normalize_with(x, statsfile.load(path), stage.params, path,
                          bool(stage.flags.get("running")))[0]


def run_pipeline(job, stages: list[Stage], opts: WriteOptions, max_pixels,
                 stats_mode: str) -> dict:
    """Run every stage on one input and write the final result; returns the report record."""
    img = read(job.source, max_pixels)
    x, notes, selection, signed, records = img.array, list(img.notes), None, False, []
    for n, stage in enumerate(stages, 1):
        if stage.command == "pool":
            x, selection = _pool_stage(n, stage, x, img, job, opts, notes, selection)
        elif stage.command == "norm":
            x, signed = _norm_stage(stage, x), True
        else:  # unpool
            if selection is None:
                raise ValueError(f"stage {n} unpool: no earlier stage selected cells "
                                 f"(use a selecting pool: max, min, stochastic, ...)")
            x = unpool_compute(x, selection, accumulate=bool(stage.flags.get("accumulate")),
                               what=f"stage {n} unpool: the indices of the last selecting stage")
        records.append({
            "stage": n, "command": stage.command, "op": stage.op,
            "params": jsonable(stage.params), "shape_out": list(x.shape),
            "dtype_out": str(x.dtype),
            "stats_out": channel_stats(x, img.channels) if stats_mode == "each" else None})
    made = provenance("chain", "-".join(s.op for s in stages), {})
    made["stages"] = [{"command": s.command, "op": s.op, **{k: list(v) if isinstance(v, tuple)
                                                          else v for k, v in s.params.items()
                                                          if not k.startswith("_")}}
                      for s in stages]
    display = write_values(x, job.output, channels=img.channels, opts=opts, notes=notes,
                           source_dtype=img.array.dtype, signed=signed and x.dtype.kind == "f",
                           provenance=made)
    extra = {"stages": records}
    if stats_mode == "each":
        extra["sections"] = [(f"{r['stage']} {r['op']}", r["stats_out"]) for r in records]
    maps = pipeline_side_files(stages)(job.output)
    if maps:
        extra["indices"] = maps
    return build_record(img, job.output, "-".join(s.op for s in stages), {}, x, notes,
                        stats=opts.stats or None, display=display, **extra)
