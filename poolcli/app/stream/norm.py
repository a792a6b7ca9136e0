"""Instance, layer and group norm band by band (see :func:`norm_stream`)."""

from __future__ import annotations

import os
from types import SimpleNamespace

from poolcli import registry
from poolcli.app.stream._common import (_READ_AHEAD, _open_large, _RowStats, _shaped,
                                        forced_rows, setting, threads)


def norm_stream(job, op_name: str, params: dict, opts, max_pixels, preview: bool,
                build_record) -> dict | None:
    """Instance/layer/group norm in three passes over the bands: sums, squared deviations
    (:class:`poolcli.ops.norm.NormBands`, the in-memory row blocks), normalize and write. ``None``:
    in memory (preview, stdout, URL, not TIFF/NPY: PNG's display needs the whole range)."""
    from poolcli.formats import SUFFIX_FORMAT
    from poolcli.imageio import output_dtype_for
    from poolcli.ops.norm import NormBands

    op = registry.get(op_name)
    fmt = SUFFIX_FORMAT.get(os.path.splitext(job.output)[1].lower())
    if preview or job.output == "-" or "://" in job.output or fmt not in ("TIFF", "NPY") \
            or op.name not in ("instance", "layer", "group"):
        return None
    first = _open_large(job.source, max_pixels)
    if first is None:
        return None
    with first:
        r, c = first, len(first.channels)
        norm = NormBands.make(op.name, (r.height, r.width, c), r.dtype,
                              num_groups=params.get("groups"), **registry.affine(params, c))
        if norm is None or output_dtype_for(job.output, norm.out_dtype) != norm.out_dtype:
            return None
        stats_in = _RowStats(r.width, r.channels) if opts.stats else None
        _norm_pass(r, norm, stats_in)
    for write in (False, True):  # pass 2: the variance; pass 3: normalize and write
        r = _open_large(job.source, max_pixels)
        if r is None:
            return None
        with r:
            if (r.height, r.width, r.channels, r.dtype) != (first.height, first.width,
                                                            first.channels, first.dtype):
                return None  # the file changed: in memory
            if write:
                return _norm_write(job, op, params, opts, norm, r, stats_in, build_record)
            _norm_pass(r, norm, None)


def _norm_pass(reader, norm, stats) -> None:
    for _, x in _norm_bands(reader):
        norm.add(x)
        if stats is not None:
            stats.add(x)
    norm.end_pass()


def _norm_bands(reader):
    """``(r0, rows)`` of every band of ``reader``, in order (decoded ahead with threads)."""
    row_bytes = reader.width * len(reader.channels) * reader.dtype.itemsize
    band = forced_rows() or max(1, setting("BAND_BYTES") // max(1, row_bytes))
    items = ((r0, reader.read_rows(r0, min(reader.height, r0 + band)))
             for r0 in range(0, reader.height, band))
    if threads() == 1:
        yield from items
        return
    from poolcli.imageio.stream import ReadAhead

    ahead = ReadAhead(items, _READ_AHEAD)
    try:
        yield from ahead
    finally:
        ahead.close()


def _norm_write(job, op, params, opts, norm, r, stats_in, build_record) -> dict:
    """Pass 3: each band normalized, written, counted in the statistics; the record."""
    from poolcli.app.outputs import provenance
    from poolcli.app.runner import track_commit
    from poolcli.formats import SUFFIX_FORMAT
    from poolcli.imageio import make_parent_dirs
    from poolcli.imageio.stream import open_band_writer

    stats_out = _RowStats(r.width, r.channels) if opts.stats else None
    make_parent_dirs(job.output)
    fmt = SUFFIX_FORMAT[os.path.splitext(job.output)[1].lower()]
    with open_band_writer(job.output, height=r.height, width=r.width, channels=r.channels,
                          dtype=norm.out_dtype, fmt=fmt, overwrite=opts.force,
                          on_commit=track_commit, metadata=provenance("norm", op.name, params),
                          compress_level=opts.compress_level, threads=threads()) as writer:
        for r0, x in _norm_bands(r):
            values = norm.apply(x, r0)
            if stats_out is not None:
                stats_out.add(values)
            writer.write_rows(values)
        writer.commit()
    shape = (r.height, r.width, len(r.channels))
    img = SimpleNamespace(source=r.source, channels=r.channels, array=_shaped(shape, r.dtype))
    record = build_record(img, job.output, op.name, params, _shaped(shape, norm.out_dtype),
                          list(r.notes), stats=None)
    if stats_in is not None:
        record["stats_in"], record["stats_out"] = stats_in.result(), stats_out.result()
    return record
