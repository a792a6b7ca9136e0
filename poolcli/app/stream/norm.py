"""Normalization band by band: instance, layer and group norm (:func:`norm_stream`, statistics
passes first) and batch-norm inference with stored statistics (:func:`infer_stream`, elementwise);
to TIFF/NPY as computed, to an 8-bit PNG through the whole result's display mapping
(:class:`poolcli.imageio.DisplayMapping`, its statistics passes before the write pass)."""

from __future__ import annotations

import os
from types import SimpleNamespace

from poolcli import registry
from poolcli.app.stream._common import (_READ_AHEAD, _WRITERS, _open_large, _RowStats, _shaped,
                                        forced_rows, setting, threads)


def norm_stream(job, op_name: str, params: dict, opts, max_pixels, preview: bool,
                build_record) -> dict | None:
    """Instance/layer/group norm in passes over the bands: sums, squared deviations
    (:class:`poolcli.ops.norm.NormBands`, the in-memory row blocks), then for an 8-bit PNG the
    display mapping's statistics of the normalized bands (:class:`poolcli.imageio.DisplayMapping`:
    one pass for minmax, two for sigma, none for clip), then normalize (and map) and write.
    ``None``: in memory (preview, stdout, URL, a format not written band by band)."""
    from poolcli.app.outputs import provenance
    from poolcli.ops.norm import NormBands

    op = registry.get(op_name)
    if op.name not in ("instance", "layer", "group") or not _streams(job, preview):
        return None
    first = _open_large(job.source, max_pixels)
    if first is None:
        return None
    with first:
        r, c = first, len(first.channels)
        norm = NormBands.make(op.name, (r.height, r.width, c), r.dtype,
                              num_groups=params.get("groups"), **registry.affine(params, c))
        if norm is None:
            return None
        how = _How.make(job.output, opts, r, norm, (op.name, params,
                                                    provenance("norm", op.name, params)))
        if how is None:
            return None
        stats_in = _RowStats(r.width, r.channels) if opts.stats else None
        _norm_pass(r, norm, stats_in)
    return _passes(job, opts, max_pixels, first, how, stats_in, build_record)


def infer_stream(job, apply, note: str, params: dict, made: dict, opts, max_pixels,
                 preview: bool, build_record) -> dict | None:
    """Batch norm inference with stored statistics band by band: ``apply`` normalizes rows
    (elementwise: :func:`poolcli.app.batchnorm.normalize_with`), so TIFF/NPY take one pass, an
    8-bit PNG the display mapping's passes first (as :func:`norm_stream`). ``note`` is the
    in-memory path's "inference with ..." note, ``made`` the provenance. ``None``: in memory
    (as :func:`norm_stream`, and when ``apply`` refuses the image: in memory says why)."""
    if not _streams(job, preview):
        return None
    first = _open_large(job.source, max_pixels)
    if first is None:
        return None
    with first:
        try:
            head = apply(first.read_rows(0, 1))
        except (ValueError, TypeError):
            return None
        how = _How.make(job.output, opts, first, _Inference(apply, head.dtype),
                        ("batch", params, made), note)
    if how is None:
        return None
    how.feed_in = True  # no statistics pass: the input's statistics from the write pass
    stats_in = _RowStats(first.width, first.channels) if opts.stats else None
    return _passes(job, opts, max_pixels, first, how, stats_in, build_record)


def _streams(job, preview: bool) -> bool:
    """Whether the job's output is written band by band (not preview, stdout, URL, JPEG...)."""
    from poolcli.formats import SUFFIX_FORMAT

    fmt = SUFFIX_FORMAT.get(os.path.splitext(job.output)[1].lower())
    return not (preview or job.output == "-" or "://" in job.output or fmt not in _WRITERS)


class _Inference:
    """Rows normalized by an elementwise ``apply``: no statistics pass (``passes`` ended)."""

    passes = 2

    def __init__(self, apply, out_dtype):
        self.fn, self.out_dtype = apply, out_dtype

    def apply(self, band, r0: int):
        return self.fn(band)


class _How:
    """How the bands become the file: the normalizer (``norm``: ``apply(band, r0)``, ``passes``
    below 2 while statistics passes remain), the display mapping or ``None``, the record's
    operator, parameters and extra note, the provenance, whether the last pass also feeds the
    input statistics (``feed_in``)."""

    def __init__(self, norm, display, what, note):
        self.norm, self.display, self.note = norm, display, note
        self.op, self.params, self.made = what
        self.feed_in = False

    @classmethod
    def make(cls, output: str, opts, reader, norm, what, note: str | None = None):
        """``None`` when the output is not written here (see :func:`_display`)."""
        from poolcli.formats import SUFFIX_FORMAT

        fmt = SUFFIX_FORMAT[os.path.splitext(output)[1].lower()]
        display = _display(output, fmt, norm.out_dtype, reader, opts)
        return None if display is False else cls(norm, display, what, note)


def _passes(job, opts, max_pixels, first, how, stats_in, build_record) -> dict | None:
    """The passes left over the file (reopened for each): the variance, the display's
    statistics, then normalize and write."""
    while True:
        r = _open_large(job.source, max_pixels)
        if r is None:
            return None
        with r:
            if (r.height, r.width, r.channels, r.dtype) != (first.height, first.width,
                                                            first.channels, first.dtype):
                return None  # the file changed: in memory
            if how.norm.passes < 2:
                _norm_pass(r, how.norm, None)
            elif how.display is not None and how.display.wants_pass():
                _display_pass(r, how.norm, how.display)
            else:
                return _norm_write(job, opts, how, r, stats_in, build_record)


def _display(output: str, fmt: str, out_dtype, reader, opts):
    """What :func:`poolcli.app.outputs.write_values` does with a signed result: ``None``
    written as is (TIFF, NPY), a :class:`~poolcli.imageio.DisplayMapping` to ``uint8`` (PNG of
    1-4 channels), ``False``: not here (in memory says what is wrong)."""
    import numpy as np

    from poolcli.imageio import DisplayMapping, output_dtype_for

    target = output_dtype_for(output, out_dtype)  # signed: no source dtype
    if target == out_dtype:
        return None
    if fmt != "PNG" or target != np.uint8 or not 1 <= len(reader.channels) <= 4:
        return False
    return DisplayMapping(opts.display, row_size=reader.width * len(reader.channels))


def _display_pass(reader, norm, display) -> None:
    for r0, x in _norm_bands(reader):
        display.add(norm.apply(x, r0))
    display.end_pass()


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


def _norm_write(job, opts, how, r, stats_in, build_record) -> dict:
    """The last pass: each band normalized, mapped for display, written, counted in the
    statistics (``how``: a :class:`_How`); the record."""
    import numpy as np

    from poolcli.app.runner import track_commit
    from poolcli.formats import SUFFIX_FORMAT
    from poolcli.imageio import make_parent_dirs
    from poolcli.imageio.stream import open_band_writer

    norm, display = how.norm, how.display
    stats_out = _RowStats(r.width, r.channels) if opts.stats else None
    feed_in = stats_in if how.feed_in else None
    make_parent_dirs(job.output)
    fmt = SUFFIX_FORMAT[os.path.splitext(job.output)[1].lower()]
    dtype = norm.out_dtype if display is None else np.dtype(np.uint8)
    with open_band_writer(job.output, height=r.height, width=r.width, channels=r.channels,
                          dtype=dtype, fmt=fmt, overwrite=opts.force, on_commit=track_commit,
                          metadata=how.made, compress_level=opts.compress_level,
                          threads=threads()) as writer:
        for r0, x in _norm_bands(r):
            if feed_in is not None:
                feed_in.add(x)
            values = norm.apply(x, r0)
            if stats_out is not None:
                stats_out.add(values)
            writer.write_rows(values if display is None else display.map(values))
        writer.commit()
    shape = (r.height, r.width, len(r.channels))
    notes, described = list(r.notes) + ([how.note] if how.note else []), None
    if display is not None:  # as write_values says it
        described = display.description(int(np.prod(shape)))
        notes.append(f"display mapping: {described}")
    img = SimpleNamespace(source=r.source, channels=r.channels, array=_shaped(shape, r.dtype))
    record = build_record(img, job.output, how.op, how.params, _shaped(shape, norm.out_dtype),
                          notes, stats=None, display=described)
    if stats_in is not None:
        record["stats_in"], record["stats_out"] = stats_in.result(), stats_out.result()
    return record
