"""The one output policy: how a result array becomes a file, and what is said about it.

- Values the format can hold exactly are written as they are (max/min/unpool keep the input's
  dtype; ``.npy`` and TIFF keep floats).
- Results on the input's scale (averages, Lp, ...) going into an 8/16-bit format are rounded and
  clipped, and a note says so.
- Signed results (normalization) going into an 8-bit format get a named display mapping
  (``--display``), reported in the record, so nobody mistakes a stretch for the data.

Every file is written atomically and registered with the runner's journal once complete, so an
interrupt never loses count of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from poolcli.formats import DEFAULT_DISPLAY

__all__ = ["WriteOptions", "write_values"]


@dataclass(frozen=True)
class WriteOptions:
    """How outputs are written: one value for the whole run."""

    force: bool = False
    quality: int | None = None
    compress_level: int | None = None
    display: str = DEFAULT_DISPLAY
    stats: bool = True  # compute statistics for the record (someone will see them)


def write_values(values, path: str, *, channels, opts: WriteOptions, notes: list[str],
                 source_dtype=None, signed: bool = False) -> str | None:
    """Write ``values`` to ``path`` in a dtype its format holds; returns the display mapping
    used for signed results (or None). Notes about rounding or mapping go into ``notes``."""
    import numpy as np

    from poolcli import imageio
    from poolcli.app.runner import track_commit

    target = np.dtype(imageio.output_dtype_for(
        path, values.dtype, source_dtype=None if signed else source_dtype))
    data, display = values, None
    if target != values.dtype:
        if signed:
            data, display = imageio.to_display(values, opts.display)
            notes.append(f"display mapping: {display}")
        else:
            data = imageio.fit_to_dtype(values, target)
            notes.append(f"written as {target} (rounded and clipped); "
                         f"use --format npy or tiff for the exact values")
    imageio.make_parent_dirs(path)
    imageio.write_image(path, data, channels=channels, overwrite=opts.force,
                        compress_level=opts.compress_level, quality=opts.quality,
                        on_commit=track_commit)
    return display
