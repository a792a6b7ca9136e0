"""Pipelines: several stages (pool, norm, unpool) run in order on each image.

A stage is plain data (:class:`Stage`), so a pipeline can be parsed from the command line
(``poolcli chain ... pool --op max -k 2 norm --op instance unpool``) or from a TOML/JSON file and
shipped to worker processes. ``unpool`` uses the indices of the most recent selecting stage, so
pool -> norm -> unpool needs no files in between.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

__all__ = ["Stage", "run_pipeline", "stages_from_file", "stage_args"]


@dataclass
class Stage:
    command: str  # "pool", "norm" or "unpool"
    op: str  # operator name; "unpool" for unpool stages
    params: dict = field(default_factory=dict)
    flags: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.op


def stages_from_file(path: str) -> list[tuple[str, list[str]]]:
    """Read a pipeline file into ``[(command, argv)]`` for the stage commands to parse.

    TOML (``.toml``)::

        [[stage]]
        command = "pool"
        op = "max"
        kernel = "3x3"
        stride = 2
        save-indices = true

        [[stage]]
        command = "norm"
        op = "instance"

    or JSON: ``{"stage": [{"command": "pool", "op": "max", "kernel": 2}, ...]}`` (a bare list
    works too). Keys are the stage command's long option names without ``--``; ``true`` adds a
    flag, ``false`` leaves it out (``ceil-mode = false``), lists are joined with commas.
    Raises ValueError with the file name on any problem.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    try:
        if path.lower().endswith(".toml"):
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw.decode("utf-8"))
    except Exception as exc:  # tomllib.TOMLDecodeError, JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not a readable pipeline file ({exc})") from None
    stages = data.get("stage", data.get("stages")) if isinstance(data, dict) else data
    if not isinstance(stages, list) or not stages:
        raise ValueError(f"{path}: no stages (expected [[stage]] tables or a 'stage' list)")
    out = []
    for i, st in enumerate(stages, 1):
        if not isinstance(st, dict) or "command" not in st:
            raise ValueError(f"{path}: stage {i} has no 'command' (pool, norm or unpool)")
        out.append((str(st["command"]), stage_args(st)))
    return out


def stage_args(st: dict) -> list[str]:
    """argv for one stage dict (see :func:`stages_from_file`)."""
    args: list[str] = []
    for key, value in st.items():
        if key == "command":
            continue
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (list, tuple)):
            args += [flag, ",".join(str(v) for v in value)]
        else:
            args += [flag, str(value)]
    return args


def run_pipeline(job, stages: list[Stage], opts: dict, max_pixels, stats_mode: str) -> dict:
    """Run every stage on one input and write the final result; returns the report record."""
    import numpy as np

    from poolcli import cli, indexmap, registry

    img = cli._read(job.source, max_pixels)
    x = img.array
    notes = list(img.notes)
    last_select = None  # (indices, IndexMap-like geometry, input shape) of the last selecting stage
    stage_records = []
    signed = False
    written = []
    try:
        for n, stage in enumerate(stages, 1):
            if stage.command == "pool":
                op = registry.get(stage.op)
                params = dict(stage.params)
                if "seed" in op.params:
                    params["_key"] = os.path.basename(job.source)
                result = op.run(x, params, op.selects)
                if op.selects and result.indices is not None:
                    meta = indexmap.build_meta(operator=op.name, params=stage.params,
                                               input_shape=x.shape, input_dtype=x.dtype,
                                               output_shape=result.values.shape,
                                               source=img.source)
                    last_select = indexmap.IndexMap(result.indices, meta)
                    if stage.flags.get("save_indices"):
                        map_path = os.path.splitext(job.output)[0] + f".stage{n}.indices.npz"
                        indexmap.save(map_path, result.indices, meta, overwrite=opts["force"])
                        written.append(map_path)
                notes.extend(f"stage {n} {k}: {v}" for k, v in result.info.items())
                x = result.values
            elif stage.command == "norm":
                op = registry.get(stage.op)
                params = cli._affine_arrays(stage.params, x.shape[-1])
                if op.name == "batch":
                    x = _batch_inference(x, params, stage.flags.get("stats"))
                else:
                    x = op.run(x, params, False).values
                signed = True
            elif stage.command == "unpool":
                if last_select is None:
                    raise ValueError(f"stage {n} unpool: no earlier stage selected cells "
                                     f"(use a selecting pool: max, min, stochastic, ...)")
                from poolcli.ops import max_unpool2d

                idx = last_select.indices
                if x.shape[:2] != idx.shape[:2] or x.shape[2] != idx.shape[2]:
                    raise ValueError(f"stage {n} unpool: image {x.shape} does not match the "
                                     f"indices {idx.shape} of the last selecting stage")
                geo = last_select.geometry()
                h, w, _ = last_select.input_shape
                x = max_unpool2d(x, idx, geo["kernel_size"], geo["stride"], geo["padding"],
                                 output_size=(h, w),
                                 reduce="sum" if stage.flags.get("accumulate") else None)
            else:  # pragma: no cover - the parser only builds the three kinds
                raise ValueError(f"unknown stage {stage.command!r}")
            stage_records.append({
                "stage": n, "command": stage.command, "op": stage.op,
                "params": _jsonable(stage.params), "shape_out": list(x.shape),
                "dtype_out": str(x.dtype),
                "stats_out": cli._stats(x, img.channels) if stats_mode == "each" else None,
            })
        if signed and x.dtype.kind == "f":
            display = cli.write_normalized(x, job.output, channels=img.channels, opts=opts,
                                           notes=notes)
        else:
            display = None
            cli.write_result(x, job.output, channels=img.channels, source_dtype=img.array.dtype,
                             opts=opts, notes=notes)
    except BaseException:
        for path in written:
            if os.path.exists(path):
                os.unlink(path)
        raise
    record = {
        "input": img.source, "output": job.output,
        "op": "-".join(s.op for s in stages), "params": {},
        "stages": stage_records,
        "shape_in": list(img.array.shape), "shape_out": list(x.shape),
        "dtype_in": str(img.array.dtype), "dtype_out": str(np.asarray(x).dtype),
        "stats_in": cli._stats(img.array, img.channels), "stats_out": cli._stats(x, img.channels),
        "display": display, "notes": notes,
    }
    if stats_mode == "each":
        record["sections"] = [(f"{r['stage']} {r['op']}", r["stats_out"]) for r in stage_records]
    if written:
        record["indices"] = written
    return record


def _batch_inference(x, params, stats_file):
    import numpy as np

    from poolcli.ops.norm import batch_norm

    if not stats_file:
        raise ValueError("batch norm in a chain needs --stats FILE (inference with stored "
                         "statistics); fit them with `poolcli norm --op batch --fit`")
    from poolcli.cli import load_stats

    stored = load_stats(stats_file)
    mean = np.asarray(stored["running_mean"], dtype=np.float64)
    var = np.asarray(stored["running_var"], dtype=np.float64)
    if x.shape[-1] != mean.size:
        raise ValueError(f"{x.shape[-1]} channels, but {stats_file} has statistics for "
                         f"{mean.size}")
    return batch_norm(x[None], mean, var, weight=params.get("gamma"), bias=params.get("beta"),
                      training=False, eps=params["eps"])[0]


def _jsonable(params: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()
            if not k.startswith("_")}
