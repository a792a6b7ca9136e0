"""The one output policy: how a result array becomes a file, and what is said about it.

- Values the format can hold exactly are written as they are (max/min/unpool keep the input's
  dtype; ``.npy`` and TIFF keep floats).
- Results on the input's scale (averages, Lp, ...) going into an 8/16-bit format are rounded and
  clipped, and a note says so.
- 16-bit data (or floats on a 16-bit scale) going into an 8-bit-only format is scaled (x/257),
  never clipped to white; float data from a float image is mapped by its range.
- Signed results (normalization) going into an 8-bit format get a named display mapping
  (``--display``), reported in the record, so nobody mistakes a stretch for the data.

Every file is written atomically and registered with the runner's journal once complete, so an
interrupt never loses count of it; an object-store URL is written in one request, never replacing
an existing object without ``--force`` (:mod:`poolcli.imageio.store`).
"""

from __future__ import annotations

from dataclasses import dataclass

from poolcli.formats import DEFAULT_DISPLAY

STDOUT = "-"

__all__ = ["WriteOptions", "write_values", "provenance"]


@dataclass(frozen=True)
class WriteOptions:
    """How outputs are written: one value for the whole run."""

    force: bool = False
    quality: int | None = None
    compress_level: int | None = None
    display: str = DEFAULT_DISPLAY
    stats: bool = True  # compute statistics for the record (someone will see them)
    stdout_format: str | None = None  # -o -: the format written to standard output


def write_values(values, path: str, *, channels, opts: WriteOptions, notes: list[str],
                 source_dtype=None, signed: bool = False, provenance: dict | None = None
                 ) -> str | None:
    """Write ``values`` to ``path`` in a dtype its format holds; returns the display mapping
    used for signed results (or None). Notes about rounding or mapping go into ``notes``;
    ``provenance`` (what made the file) goes into the file's own metadata."""
    import numpy as np

    from poolcli import imageio
    from poolcli.app.runner import track_commit
    from poolcli.imageio.store import is_url

    named = path if path != STDOUT else f"stdout.{(opts.stdout_format or 'png').lower()}"
    target = np.dtype(imageio.output_dtype_for(
        named, values.dtype, source_dtype=None if signed else source_dtype))
    data, display = values, None
    scale = np.dtype(source_dtype) if values.dtype.kind == "f" and source_dtype is not None \
        else values.dtype
    if target != values.dtype:
        if signed:
            data, display = imageio.to_display(values, opts.display)
            notes.append(f"display mapping: {display}")
        elif target == np.uint8 and not (scale.kind in "iub" and scale.itemsize == 1):
            data, how = imageio.to_uint8(values, scale)  # scaled, never clipped to white
            notes.append(f"{how}; use --format png, npy or tiff for the exact values")
        else:
            data = imageio.fit_to_dtype(values, target)
            notes.append(f"written as {target} (rounded and clipped); "
                         f"use --format npy or tiff for the exact values")
    if path == STDOUT:
        imageio.write_image(STDOUT, data, channels=channels, format=named.rsplit(".", 1)[1],
                            compress_level=opts.compress_level, quality=opts.quality,
                            provenance=provenance)
        return display
    if "://" not in path or not is_url(path):  # a store has no directories to make
        imageio.make_parent_dirs(path)
    imageio.write_image(path, data, channels=channels, overwrite=opts.force,
                        compress_level=opts.compress_level, quality=opts.quality,
                        on_commit=track_commit, provenance=provenance)
    return display


def provenance(command: str, op: str, params: dict, info: dict | None = None) -> dict:
    """What made an output, for its metadata (the writer adds poolcli's version): the command,
    the operator and the parameters that repeat it. A seeded operator records the image's own
    seed, and no file name is recorded, so a rerun on a renamed copy writes the same bytes."""
    record = {"command": command, "op": op,
              "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()
                         if not k.startswith("_")}}
    if info and "seed" in info and "seed" in record["params"]:
        record["params"]["seed"] = info["seed"]
    return record
