"""Pooling band by band (see :mod:`poolcli.app.stream`): fixed windows (:class:`_Streamed`),
adaptive windows (:class:`_Adaptive`) and global pooling (:func:`_pool_global`)."""

from __future__ import annotations

import os
from collections import deque
from contextlib import ExitStack, closing
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np

from poolcli import registry
from poolcli.app.stream._common import (_READ_AHEAD, _WRITERS, _open_large, _Policy, _RowStats,
                                        _shaped, band_geometry, forced_rows, setting, threads)


def pool_stream(job, spec, opts, max_pixels, build_record) -> dict | None:
    """Pool one job band by band; ``None`` when it should run in memory instead.
    ``build_record`` is :func:`poolcli.app.jobs.build_record` (the one record builder)."""
    if spec.preview or job.output == "-" or "://" in job.output:
        return None
    op = registry.get(spec.op)
    fmt = _format(job.output)
    if not op.stream or fmt not in _WRITERS:
        return None
    if (spec.save_indices or spec.indices_png) and not op.selects_with(spec.params):
        return None
    reader = _open_large(job.source, max_pixels)
    if reader is None:
        return None
    with reader:
        if op.stream.startswith(("adaptive-", "global-")):
            return _pool_adaptive(job, op, spec, opts, reader, build_record)
        rows = band_geometry(op, spec.params, reader.height, reader.dtype)
        if rows is None:
            return None
        streamed = _Streamed(job, op, spec.params, opts, reader, rows)
        streamed.want_indices = spec.save_indices
        streamed.want_picture = spec.indices_png
        streamed.encode_in_pool(fmt)
        return streamed.run(build_record)


class _Band(NamedTuple):
    """One band's output rows, as :meth:`_Streamed.compute` gives them to :meth:`_Streamed.run`."""

    values: np.ndarray
    idx: np.ndarray | None  # the max locations (in the whole image's plane)
    picked: tuple | None  # the selected cells, for _Picture
    piece: object | None  # the rows encoded for the writer (PNG), if encoded in the pool


class _Streamed:
    """One streamed pool job: the bands, the output policy per band, the record."""

    def __init__(self, job, op, params, opts, reader, rows):
        self.job, self.op, self.params, self.opts = job, op, params, opts
        self.reader, self.rows = reader, rows
        row_bytes = reader.width * len(reader.channels) * reader.dtype.itemsize
        self.band = forced_rows() or max(1, setting("BAND_BYTES") // max(1, row_bytes * rows.s))
        self.stats_in = _RowStats(reader.width, reader.channels) if opts.stats else None
        self.fed = 0  # input rows given to stats_in
        self.threads = threads()
        reader.use_threads(self.threads)
        self.seed = self.per_row = None
        if op.stream == "stochastic" and params.get("mode", "train") == "train":
            self.seed = _image_seed(params.get("seed"), job.index)
            self.per_row = len(reader.channels) * _out_width(params, reader.width)
        self.info: dict = {}
        self.want_indices = False  # also the max-location map, written band by band
        self.want_picture = False  # also --indices-png's picture of the selected cells
        self.encoded_here = self.needs_above = False  # see encode_in_pool

        self.encode = self.policy = None  # set by run() once the first band gave the dtype
        self.map_path: str | None = None

    def compute(self, x: np.ndarray, r0: int, skip: int, count: int, first: int,
                above: bool) -> _Band:
        """Output rows ``[first + skip, first + skip + count)`` from input rows ``x`` (from
        ``r0``); the operator computes them from output row ``first`` on. ``above``: the first
        of them is the row above the band, computed only to encode the band on its own."""
        values, idx = self.values_of(x, r0, skip, count, first)
        row_above = None
        if above:
            row_above, values = values[0], values[1:]
            idx = None if idx is None else idx[1:]
        picked = _Picture.picked(x, r0, idx, self.reader.height) if self.want_picture \
            else None
        piece = None
        if self.encode is not None:  # set by run() before any band is computed
            convert = self.policy.convert
            piece = self.encode(convert(values), None if row_above is None
                                else convert(row_above[np.newaxis])[0])
        return _Band(values, idx, picked, piece)

    def encode_in_pool(self, fmt: str | None) -> None:
        """PNG and TIFF outputs: each band is encoded in the thread that computed it, as one
        piece of the file (:meth:`poolcli.imageio.stream.BandWriter.encoder`): a TIFF strip of
        the band's rows, or a piece of a PNG's zlib stream, filtered given the output row above
        the band, which the band computes once more for it."""
        self.encoded_here = fmt in ("PNG", "TIFF")
        self.needs_above = fmt == "PNG"

    def values_of(self, x: np.ndarray, r0: int, skip: int, count: int, first: int):
        """``(values, indices in the whole image's plane or None)`` of the rows
        :meth:`compute` names."""
        from poolcli.ops import keep_band

        params = self.params
        if self.seed is not None:  # the image's random stream, from output row `first` on
            params = dict(params, seed=self.generator(first))
        located = self.want_indices or self.want_picture
        result = self.op.run(x, params, located)
        info = dict(result.info)
        if self.seed is not None:
            info["seed"] = self.seed
        self.info = info
        if located:
            values, idx = keep_band((result.values, result.indices), skip, count, r0,
                                    x.shape[1])
            return np.ascontiguousarray(values), idx
        return np.ascontiguousarray(keep_band(result.values, skip, count, r0, x.shape[1])), None

    def feed_input(self, x: np.ndarray, r0: int) -> None:
        if self.stats_in is not None and r0 + x.shape[0] > self.fed:
            self.stats_in.add(x[self.fed - r0 :])
            self.fed = r0 + x.shape[0]

    def generator(self, first: int) -> np.random.Generator:
        """The image's generator advanced to output row ``first``: stochastic pooling draws
        one uniform (one PCG64 step) per output cell in C order over ``(oh, ow, C)``, so the
        band's picks are the whole image's whatever the band boundaries."""
        rng = np.random.default_rng(self.seed)
        rng.bit_generator.advance(first * self.per_row)
        return rng

    def plan(self):
        """``(start, stop, r0, skip, count, first output row computed, above)`` of each band,
        in order: the band reads input rows ``[start, stop)`` and computes from row ``r0`` on;
        with statistics wanted, ``start`` is earlier when windows skip rows (stride over the
        kernel), so every input row is counted once, in order, as in memory. ``above``: the
        band also computes the output row above it (for :meth:`encode_in_pool`)."""
        done = 0  # rows read so far (for the statistics)
        for a, b in _plan(self.rows, self.band):
            above = self.needs_above and a > 0
            lo = a - 1 if above else a
            r0, r1, skip = self.rows.slice_for(lo, b)
            start = min(r0, done) if self.stats_in is not None else r0
            done = max(done, r1)
            yield start, r1, r0, skip, b - lo, lo - skip, above

    def inputs(self):
        """``(block, start, r0, ...)`` of each band in :meth:`plan`, ``block`` its rows read in
        order."""
        for start, stop, *rest in self.plan():
            yield self.reader.read_rows(start, stop), start, *rest

    def results(self):
        """Output bands in order (:meth:`run` made the writer from :meth:`probe` first, so
        every band is encoded where it is computed). With one thread, each band is decoded and
        computed here, nothing else runs. With more, a file whose rows can be decoded from
        anywhere (tiled or striped TIFF) has each band decoded in the pool thread that computes
        it (:meth:`_on_threads`); any other is decoded ahead by one reader thread and computed
        on the pool. Either way at most ``2 * threads`` bands are in flight (:func:`_in_order`)."""
        n = self.threads
        if n == 1:
            for block, start, r0, skip, count, first, above in self.inputs():
                self.feed_input(block, start)
                yield self.compute(block[r0 - start :], r0, skip, count, first, above)
        elif self.reader.random_access:
            yield from self._on_threads(n)
        else:
            from poolcli.imageio.stream import ReadAhead, started_pool

            def calls(inputs):
                for block, start, r0, skip, count, first, above in inputs:
                    self.feed_input(block, start)
                    yield None, self.compute, block[r0 - start :], r0, skip, count, first, above

            with started_pool(n, "poolcli-band") as pool:
                inputs = ReadAhead(self.inputs(), _READ_AHEAD)
                try:
                    with closing(_in_order(pool, calls(inputs), 2 * n)) as bands:
                        for _, band in bands:
                            yield band
                finally:
                    inputs.close()
        self._feed_rows_no_band_read()

    def _feed_rows_no_band_read(self) -> None:
        """The input statistics of the rows after the last window."""
        if self.stats_in is None:
            return
        for r0 in range(self.fed, self.reader.height, self.band):
            self.feed_input(self.reader.read_rows(r0, min(self.reader.height, r0 + self.band)),
                            r0)

    def _on_threads(self, n: int):
        """:meth:`results` for a random-access file: each band reads its own rows in its pool
        thread (:meth:`~poolcli.imageio.stream.BandReader.rows_at`), so decoding, pooling and
        encoding a band run where it is computed, with no reader thread to wait for; the input
        statistics still take the rows in order, here."""
        from poolcli.imageio.stream import started_pool

        calls = ((start, self._band_at, start, *rest) for start, *rest in self.plan())
        with started_pool(n, "poolcli-band") as pool, \
                closing(_in_order(pool, calls, 2 * n)) as bands:
            for start, (block, band) in bands:
                if block is not None:
                    self.feed_input(block, start)
                self.reader.release_before(start)  # the bands to come start here or later
                yield band

    def _band_at(self, start, stop, r0, skip, count, first, above):
        block = self.reader.rows_at(start, stop)
        band = self.compute(block[r0 - start :], r0, skip, count, first, above)
        return (block if self.stats_in is not None else None), band

    def run(self, build_record) -> dict | None:
        from poolcli.app.outputs import provenance

        try:
            first = self.probe()
        except ValueError:  # a geometry the operator refuses: in memory, the message names the
            return None  # image's size, not a band's
        policy = _Policy.make(self.job.output, first.dtype, self.reader.dtype)
        shown = _Picture.policy(self.job.output, self.reader.dtype) if self.want_picture \
            else None
        if policy is None or (self.want_picture and shown is None):
            return None
        stats_out = _RowStats(first.shape[1], self.reader.channels) if self.opts.stats else None
        self.made = provenance("pool", self.op.name, self.params, self.info)
        with ExitStack() as stack:
            # as in memory: the map, then the picture, then the image (a failure removes them)
            maps = stack.enter_context(self.open_map(first)) if self.want_indices else None
            picture = _Picture(stack, self, shown) if self.want_picture else None
            writer = stack.enter_context(self.open_writer(first, policy))
            encode = writer.encoder() if self.encoded_here else None
            self.policy, self.encode = policy, encode  # the bands computed from now on
            for band in self.results():
                if band.values.dtype != first.dtype or band.values.shape[1:] != first.shape[1:]:
                    raise AssertionError(f"{self.op.name}: a band of {band.values.dtype} "
                                         f"{band.values.shape}, the probe {first.dtype} "
                                         f"{first.shape}")
                if stats_out is not None:
                    stats_out.add(band.values)
                if maps is not None:
                    maps.write_rows(band.idx)
                if picture is not None:
                    picture.add(*band.picked)
                if encode is None:
                    writer.write_rows(policy.convert(band.values))
                else:
                    writer.write_encoded(band.piece)
            if maps is not None:
                maps.commit()
            if picture is not None:
                picture.commit()
            writer.commit()
        return self.record(first, policy, stats_out, build_record)

    def probe(self) -> np.ndarray:
        """The first output row computed from zeros: its dtype and shape are every band's (they
        depend on the input's dtype, width and the parameters only), so the policy, the writer
        and the encoder exist before any band is computed, and every band, the first included,
        is computed and encoded on the pool. Raises ``ValueError`` for a geometry the operator
        refuses, as the first band would."""
        r0, r1, skip = self.rows.slice_for(0, 1)
        zeros = np.zeros((r1 - r0, self.reader.width, len(self.reader.channels)),
                         self.reader.dtype)
        return self.values_of(zeros, r0, skip, 1, -skip)[0]

    def open_map(self, first):
        """The max-location map's band writer (the bytes ``indexmap.save`` writes)."""
        from poolcli.app.runner import track_commit
        from poolcli.imageio import indexmap

        r = self.reader
        shape = (self.rows.out, *first.shape[1:])
        meta = indexmap.build_meta(operator=self.op.name, params=self.params,
                                   input_shape=(r.height, r.width, len(r.channels)),
                                   input_dtype=r.dtype, output_shape=shape, source=r.source)
        self.map_path = indexmap.map_path_for(self.job.output)
        return indexmap.open_writer(self.map_path, shape=shape, meta=meta,
                                    overwrite=self.opts.force, on_commit=track_commit)

    def open_writer(self, first, policy):
        from poolcli import imageio
        from poolcli.app.runner import track_commit
        from poolcli.formats import SUFFIX_FORMAT
        from poolcli.imageio.stream import open_band_writer

        imageio.make_parent_dirs(self.job.output)
        fmt = SUFFIX_FORMAT[os.path.splitext(self.job.output)[1].lower()]
        return open_band_writer(self.job.output, height=self.rows.out, width=first.shape[1],
                                channels=self.reader.channels, dtype=policy.target, fmt=fmt,
                                overwrite=self.opts.force, on_commit=track_commit,
                                metadata=self.made, compress_level=self.opts.compress_level,
                                threads=1 if self.encoded_here else self.threads,
                                piece_rows=min(self.band, self.rows.out) if self.encoded_here
                                else None)

    def record(self, first, policy, stats_out, build_record) -> dict:
        r = self.reader
        img = SimpleNamespace(source=r.source, channels=r.channels,
                              array=_shaped((r.height, r.width, len(r.channels)), r.dtype))
        values = _shaped((self.rows.out, *first.shape[1:]), first.dtype)
        notes = list(r.notes) + [f"{k}: {v}" for k, v in self.info.items()] + policy.notes
        extra = dict(self.info)
        if self.map_path is not None:
            extra["indices"] = self.map_path
        record = build_record(img, self.job.output, self.op.name, self.params, values, notes,
                              stats=None, **extra)
        if self.stats_in is not None:
            record["stats_in"] = self.stats_in.result()
            record["stats_out"] = stats_out.result()
        return record


class _Picture:
    """``--indices-png`` band by band: the input with only the selected cells, the rest 0
    (:func:`poolcli.visual.selection_picture`), written as ``write_values`` writes it. Input
    rows are held from the first one a band may still select (bands' first input rows only go
    forward: the rows above are final) to the last one read, so a cell that windows of two
    bands select is set by both, as in memory."""

    def __init__(self, stack: ExitStack, streamed: _Streamed, policy: _Policy):
        from poolcli.app.jobs import selection_path
        from poolcli.app.runner import track_commit
        from poolcli.imageio.stream import open_band_writer

        r = streamed.reader
        self.width, self.height, self.policy = r.width, r.height, policy
        self.held = np.zeros((0, r.width, len(r.channels)), r.dtype)
        self.top = 0  # the input row held[0] is
        self.writer = stack.enter_context(open_band_writer(
            selection_path(streamed.job.output), height=r.height, width=r.width,
            channels=r.channels, dtype=policy.target, fmt="PNG", overwrite=streamed.opts.force,
            on_commit=track_commit, metadata={**streamed.made, "picture": "selected cells"},
            compress_level=streamed.opts.compress_level, threads=streamed.threads))

    @staticmethod
    def policy(output: str, dtype) -> _Policy | None:
        from poolcli.app.jobs import selection_path

        return _Policy.make(selection_path(output), dtype, dtype)

    @staticmethod
    def picked(x: np.ndarray, r0: int, idx: np.ndarray, height: int):
        """``(r0, r1, cells, values)`` of a band (in a pool thread): the flat positions in the
        ``(H, W, C)`` image of the cells ``idx`` selects (those inside the plane, as
        ``selection_picture`` keeps them) and their input values, from the band's rows ``x``."""
        w, c = x.shape[1], x.shape[2]
        flat = x.reshape(-1, c)
        cells, values = [], []
        for ch in range(c):
            sel = idx[..., ch].reshape(-1)
            sel = sel[(sel >= 0) & (sel < height * w)]
            cells.append(sel * c + ch)
            values.append(flat[sel - r0 * w, ch])
        return r0, r0 + x.shape[0], np.concatenate(cells), np.concatenate(values)

    def add(self, r0: int, r1: int, cells: np.ndarray, values: np.ndarray) -> None:
        self._write_until(r0)
        if r1 > self.top + len(self.held):
            more = np.zeros((r1 - self.top - len(self.held), *self.held.shape[1:]),
                            self.held.dtype)
            self.held = np.concatenate([self.held, more])
        self.held.reshape(-1)[cells - self.top * self.width * self.held.shape[2]] = values

    def commit(self) -> None:
        self._write_until(self.height)
        self.writer.commit()

    def _write_until(self, row: int) -> None:
        """Write the rows above ``row`` (held, then zeros for rows no window reached)."""
        done = min(max(0, row - self.top), len(self.held))
        if done:
            self.writer.write_rows(self.policy.convert(self.held[:done]))
            self.held, self.top = self.held[done:].copy(), self.top + done
        while self.top < row:  # rows above ``row`` that no band held
            zeros = np.zeros((min(row - self.top, 256), *self.held.shape[1:]), self.held.dtype)
            self.writer.write_rows(self.policy.convert(zeros))
            self.top += len(zeros)


def _format(path: str) -> str | None:
    from poolcli.formats import SUFFIX_FORMAT

    return SUFFIX_FORMAT.get(os.path.splitext(path)[1].lower())


def _plan(rows, band: int):
    from poolcli.ops import plan_bands

    return plan_bands(rows, band)


def _in_order(pool, calls, window: int):
    """``(tag, result)`` of each ``(tag, fn, *args)`` in ``calls``, run on ``pool`` with at most
    ``window`` in flight, in the order given; when the caller stops (an error, an interrupt),
    the calls not started yet are cancelled."""
    flight: deque = deque()
    try:
        for tag, fn, *args in calls:
            flight.append((tag, pool.submit(fn, *args)))
            if len(flight) >= window:
                tag, future = flight.popleft()
                yield tag, future.result()
        while flight:
            tag, future = flight.popleft()
            yield tag, future.result()
    finally:
        for _, future in flight:
            future.cancel()


def _image_seed(seed, index: int) -> int:
    """The seed ``poolcli.app.jobs.pool_compute`` gives this image (drawn when none is set)."""
    if seed is None:
        return registry.new_seed()
    return registry.image_seed(seed, index)


def _out_width(params: dict, width: int) -> int:
    """Output columns of a PyTorch-style pooling of ``width`` columns."""
    from poolcli.ops import pool_output_size

    def second(value, default):
        value = default if value is None else value
        return int(value) if np.ndim(value) == 0 else int(value[1])

    k = second(params["kernel"], None)
    return pool_output_size(width, k, second(params.get("stride"), k),
                            second(params.get("padding"), 0), second(params.get("dilation"), 1),
                            bool(params.get("ceil_mode", False)))


# ---- adaptive and global pooling ---------------------------------------------------------------


def _pool_adaptive(job, op, spec, opts, reader, build_record) -> dict | None:
    """Adaptive pooling band by band (each band with the whole image's windows), global pooling
    through an accumulator over the bands; ``None``: in memory (the max locations, or a case
    :class:`~poolcli.ops.adaptive.GlobalPool` cannot give bit for bit)."""
    if spec.save_indices or spec.indices_png:
        return None
    kind = op.stream.split("-", 1)[1]
    if op.stream.startswith("global-"):
        return _pool_global(job, op, spec.params, opts, reader, kind, build_record)
    from poolcli.ops.adaptive import adaptive_band_rows

    rows = adaptive_band_rows(reader.height, spec.params["output_size"])
    adaptive = _Adaptive(job, op, spec.params, opts, reader, rows)
    adaptive.encode_in_pool(_format(job.output))
    return adaptive.run(build_record)


class _Adaptive(_Streamed):
    """Adaptive pooling: output rows ``[a, b)`` from input rows ``[floor(a*H/oh),
    ceil(b*H/oh))`` by :func:`poolcli.ops.adaptive.adaptive_pool_rows`, not by the operator on
    the slice (whose own adaptive windows would not be the image's)."""

    def values_of(self, x: np.ndarray, r0: int, skip: int, count: int, first: int):
        from poolcli.ops.adaptive import adaptive_pool_rows

        a = first + skip
        return np.ascontiguousarray(adaptive_pool_rows(
            x, self.op.stream.split("-", 1)[1], self.params["output_size"], self.reader.height,
            a, a + count, r0)), None


def _pool_global(job, op, params, opts, reader, kind, build_record) -> dict | None:
    """Every band into one :class:`~poolcli.ops.adaptive.GlobalPool`, then the ``1x1`` result
    written and recorded as in memory (:func:`poolcli.app.outputs.write_values`)."""
    from poolcli.app.outputs import provenance, write_values
    from poolcli.ops.adaptive import GlobalPool

    r = reader
    pool = GlobalPool.make(kind, r.height, r.width, len(r.channels), r.dtype)
    if pool is None:
        return None
    row_bytes = r.width * len(r.channels) * r.dtype.itemsize
    band = forced_rows() or max(1, setting("BAND_BYTES") // max(1, row_bytes))
    stats_in = _RowStats(r.width, r.channels) if opts.stats else None
    for r0 in range(0, r.height, band):
        x = r.read_rows(r0, min(r.height, r0 + band))
        pool.add(x)
        if stats_in is not None:
            stats_in.add(x)
    values = pool.result()
    if values is None:
        return None
    notes = list(r.notes)
    write_values(values, job.output, channels=r.channels, opts=opts, notes=notes,
                 source_dtype=r.dtype, provenance=provenance("pool", op.name, params, {}))
    img = SimpleNamespace(source=r.source, channels=r.channels,
                          array=_shaped((r.height, r.width, len(r.channels)), r.dtype))
    record = build_record(img, job.output, op.name, params, values, notes, stats=None)
    if stats_in is not None:
        stats_out = _RowStats(values.shape[1], r.channels)
        stats_out.add(values)
        record["stats_in"], record["stats_out"] = stats_in.result(), stats_out.result()
    return record
