"""Large images band by band: decode a band of rows, pool it, encode it, drop it.

:func:`pool_stream` is what :func:`poolcli.app.jobs.pool_one` tries first. It streams when the
decoded image passes :data:`STREAM_BYTES` (or ``POOLCLI_STREAM_ROWS`` forces it, with that many
output rows per band), the file streams (:func:`poolcli.imageio.stream.open_band_reader`), the
operator does (its registry ``stream`` attribute), and banding is bit-identical for this
geometry and dtype (:func:`poolcli.ops.order_safe`); otherwise it returns ``None`` and the job
runs in memory. Output rows ``[a, b)`` of a band come from running the unchanged operator on the
input rows :meth:`poolcli.ops.BandRows.slice_for` names, so the results, the written file, the
statistics (same blocks, same accumulator) and the record equal the in-memory path's.
Stochastic pooling (8/16-bit unsigned input) gets, for each band, the image's generator advanced
to the band's first output row (:meth:`_Streamed.generator`): the same picks as in memory.

With more than one thread the stages overlap: one reader thread decodes the next bands
(:class:`~poolcli.imageio.stream.ReadAhead`, at most :data:`_READ_AHEAD` waiting; a PNG's zlib
stream is inflated ahead in one more thread, libpng unfilters in the reader thread), the bands
are pooled on a thread pool with at most ``2 * threads`` in flight, and the calling thread
filters them in order for the writer, which deflates in a thread of its own. zlib, libpng,
imagecodecs and numpy release the GIL. Every stage that carries state from band to band (the
zlib streams, the PNG filters, the statistics) runs in one thread, in order, so the bytes are
those of one thread. Threads: ``POOLCLI_THREADS``, else every core when this process runs the
image alone, one in a ``-j N`` worker process; one thread starts no thread at all (no
oversubscription: the runner's workers already use the cores).

Memory: about ``2 * threads + 1 + _READ_AHEAD`` input bands of :data:`BAND_BYTES`, their
results, and the reader's and writer's buffers, whatever the image size. The bomb guard is the
reader's: a file claiming more than ``--max-pixels`` is refused before any pixel is decoded.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from types import SimpleNamespace

import numpy as np

from poolcli import registry

__all__ = ["STREAM_BYTES", "BAND_BYTES", "ROWS_ENV", "THREADS_ENV", "pool_stream", "threads",
           "band_geometry", "unpool_stream", "norm_stream"]

#: Decoded size from which an image is streamed. Measured with the read-ahead pipeline (2 cores,
#: whole processes, median of 7, max and avg 2x2 RGB PNG to PNG): streamed against in memory,
#: 2048² 295/275 ms against 248/238 ms, 3072² 366/378 against 345/353, 4096² 512/557 against
#: 516/557: the in-memory decoder and encoder work on whole buffers and win on small images,
#: so streaming starts where it stops costing time (and memory starts to matter): 32 MiB.
STREAM_BYTES = 32 << 20
#: Input bytes per band (about); a band is at least one output row.
BAND_BYTES = 2 << 20
#: Force streaming with this many output rows per band (tests, experiments).
ROWS_ENV = "POOLCLI_STREAM_ROWS"
#: Threads per streamed image (default: every core, or 1 in a worker process).
THREADS_ENV = "POOLCLI_THREADS"
#: Files smaller than this are read whole without looking further (a header parse saved).
_SMALL_FILE = 256 << 10
#: Bands the reader thread may decode ahead of the pool.
_READ_AHEAD = 2
_WRITERS = ("PNG", "TIFF", "NPY")  # the formats open_band_writer writes band by band


def forced_rows() -> int | None:
    value = os.environ.get(ROWS_ENV, "").strip()
    return max(1, int(value)) if value.isdigit() else None


def threads() -> int:
    """Threads for one streamed image (see the module docstring)."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    if multiprocessing.parent_process() is not None:  # a -j N worker
        return 1
    return os.cpu_count() or 1


def band_geometry(op, params: dict, height: int, dtype):
    """The operator's :class:`~poolcli.ops.BandRows` over ``height`` rows, or ``None`` when it
    does not stream or banding would not be bit-identical for this geometry and ``dtype``."""
    from poolcli import ops

    if op.stream == "blur":
        stride = params.get("stride") or (2, 2)
        return ops.blur_rows(height, params["kernel"][0], stride[0], None)
    if op.stream not in ("exact", "int", "float", "stochastic"):
        return None
    rows = ops.window_rows(height, params["kernel"], params.get("stride"),
                           params.get("padding") or 0, params.get("dilation") or 1,
                           params.get("ceil_mode", False))
    if rows.out < 1:
        return None
    kind = np.dtype(dtype).kind
    if op.stream == "stochastic":
        # 8/16-bit unsigned: exact window sums (no tap order), and no band can fail a check
        # (negative or NaN input) the whole image would fail with other numbers in its message
        return rows if kind == "u" and np.dtype(dtype).itemsize <= 2 else None
    exact = op.stream == "exact" or (op.stream == "int" and kind in "iub"
                                     and np.dtype(dtype).itemsize <= 2)
    return rows if ops.order_safe(rows, exact) else None


def _open_large(path: str, max_pixels):
    """A band reader when ``path`` is worth streaming, else None (the bomb guard may raise)."""
    from poolcli.imageio.stream import open_band_reader

    if path == "-" or "://" in path:
        return None
    try:
        if not forced_rows() and os.path.getsize(path) < _SMALL_FILE:
            return None  # not worth a second header parse
    except OSError:
        return None  # read_image says what is wrong
    kwargs = {"max_pixels": max_pixels}
    if max_pixels is None:
        from poolcli.imageio import DEFAULT_MAX_PIXELS

        kwargs["max_pixels"] = DEFAULT_MAX_PIXELS
    reader = open_band_reader(path, **kwargs)
    if reader is None:
        return None
    size = reader.height * reader.width * len(reader.channels) * reader.dtype.itemsize
    if forced_rows() or size > STREAM_BYTES:
        return reader
    reader.close()
    return None


def pool_stream(job, spec, opts, max_pixels, build_record) -> dict | None:
    """Pool one job band by band; ``None`` when it should run in memory instead.
    ``build_record`` is :func:`poolcli.app.jobs.build_record` (the one record builder)."""
    if spec.indices_png or spec.preview or job.output == "-" or "://" in job.output:
        return None
    from poolcli.formats import SUFFIX_FORMAT

    op = registry.get(spec.op)
    fmt = SUFFIX_FORMAT.get(os.path.splitext(job.output)[1].lower())
    if not op.stream or fmt not in _WRITERS:
        return None
    if spec.save_indices and not op.selects_with(spec.params):
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
        return streamed.run(build_record)


class _Streamed:
    """One streamed pool job: the bands, the output policy per band, the record."""

    def __init__(self, job, op, params, opts, reader, rows):
        self.job, self.op, self.params, self.opts = job, op, params, opts
        self.reader, self.rows = reader, rows
        row_bytes = reader.width * len(reader.channels) * reader.dtype.itemsize
        self.band = forced_rows() or max(1, BAND_BYTES // max(1, row_bytes * rows.s))
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
        self.map_path: str | None = None

    def compute(self, x: np.ndarray, r0: int, skip: int, count: int, first: int) -> np.ndarray:
        """Output rows ``[first + skip, first + skip + count)`` from input rows ``x`` (from
        ``r0``); the operator computes them from output row ``first`` on."""
        from poolcli.ops import keep_band

        params = self.params
        if self.seed is not None:  # the image's random stream, from output row `first` on
            params = dict(params, seed=self.generator(first))
        result = self.op.run(x, params, self.want_indices)
        info = dict(result.info)
        if self.seed is not None:
            info["seed"] = self.seed
        self.info = info
        if self.want_indices:  # (values, indices in the whole image's plane)
            values, idx = keep_band((result.values, result.indices), skip, count, r0,
                                    x.shape[1])
            return np.ascontiguousarray(values), idx
        return np.ascontiguousarray(keep_band(result.values, skip, count, r0, x.shape[1]))

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

    def inputs(self):
        """``(block, start, r0, skip, count, first output row computed)`` of each band, in
        order: the band's rows are ``block[r0 - start:]``; with statistics wanted, ``block``
        starts earlier when windows skip rows (stride over the kernel), so every input row is
        counted once, in order, as in memory."""
        done = 0  # rows read so far (for the statistics)
        for a, b in _plan(self.rows, self.band):
            r0, r1, skip = self.rows.slice_for(a, b)
            start = min(r0, done) if self.stats_in is not None else r0
            done = max(done, r1)
            yield self.reader.read_rows(start, r1), start, r0, skip, b - a, a - skip

    def results(self):
        """Output bands in order. One thread: decoded and computed here, nothing else runs.
        More: decoded ahead by one reader thread, computed on the thread pool."""
        n = self.threads
        if n == 1:
            for block, start, r0, skip, count, first in self.inputs():
                self.feed_input(block, start)
                yield self.compute(block[r0 - start :], r0, skip, count, first)
        else:
            from poolcli.imageio.stream import ReadAhead

            with ThreadPoolExecutor(n, thread_name_prefix="poolcli-band") as pool:
                _start_threads(pool, n)
                inputs = ReadAhead(self.inputs(), _READ_AHEAD)
                try:
                    flight: deque = deque()
                    for block, start, r0, skip, count, first in inputs:
                        self.feed_input(block, start)
                        flight.append(pool.submit(self.compute, block[r0 - start :], r0, skip,
                                                  count, first))
                        if len(flight) >= 2 * n:
                            yield flight.popleft().result()
                    while flight:
                        yield flight.popleft().result()
                finally:
                    inputs.close()
        if self.stats_in is None:
            return
        for r0 in range(self.fed, self.reader.height, self.band):  # rows no band read
            self.feed_input(self.reader.read_rows(r0, min(self.reader.height, r0 + self.band)),
                            r0)

    def run(self, build_record) -> dict | None:
        bands = self.results()
        head = next(bands)
        first = head[0] if self.want_indices else head
        policy = _Policy.make(self.job.output, first.dtype, self.reader.dtype)
        if policy is None:
            bands.close()
            return None
        stats_out = _RowStats(first.shape[1], self.reader.channels) if self.opts.stats else None
        with ExitStack() as stack:
            # the map first, committed before the image, as in memory (a failure removes it)
            maps = stack.enter_context(self.open_map(first)) if self.want_indices else None
            writer = stack.enter_context(self.open_writer(first, policy))
            for band in _chain(head, bands):
                values, idx = band if maps is not None else (band, None)
                if stats_out is not None:
                    stats_out.add(values)
                if maps is not None:
                    maps.write_rows(idx)
                writer.write_rows(policy.convert(values))
            if maps is not None:
                maps.commit()
            writer.commit()
        return self.record(first, policy, stats_out, build_record)

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
        from poolcli.app.outputs import provenance
        from poolcli.app.runner import track_commit
        from poolcli.formats import SUFFIX_FORMAT
        from poolcli.imageio.stream import open_band_writer

        self.made = provenance("pool", self.op.name, self.params, self.info)
        imageio.make_parent_dirs(self.job.output)
        fmt = SUFFIX_FORMAT[os.path.splitext(self.job.output)[1].lower()]
        return open_band_writer(self.job.output, height=self.rows.out, width=first.shape[1],
                                channels=self.reader.channels, dtype=policy.target, fmt=fmt,
                                overwrite=self.opts.force, on_commit=track_commit,
                                metadata=self.made, compress_level=self.opts.compress_level,
                                threads=self.threads)

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


def _plan(rows, band: int):
    from poolcli.ops import plan_bands

    return plan_bands(rows, band)


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


def _start_threads(pool, n: int) -> None:
    """Start the pool's ``n`` threads now: a thread started while the reader thread captures a
    decoder's chatter would count as the decoder's (see ``poolcli.imageio._quiet``)."""
    barrier = threading.Barrier(n)
    for future in [pool.submit(barrier.wait) for _ in range(n)]:
        future.result()


def _chain(first, rest):
    yield first
    yield from rest


def _shaped(shape, dtype) -> np.ndarray:
    """A read-only array of ``shape`` taking no memory (the record needs shape and dtype)."""
    return np.broadcast_to(np.zeros((), dtype), shape)


class _Policy:
    """The output policy of :func:`poolcli.app.outputs.write_values`, applied band by band:
    only its elementwise cases (as is, rounded and clipped, 16-bit scaled to 8)."""

    def __init__(self, target, convert, notes):
        self.target, self.convert, self.notes = target, convert, notes

    @classmethod
    def make(cls, output: str, dtype, source_dtype):
        from poolcli import imageio

        dtype, source = np.dtype(dtype), np.dtype(source_dtype)
        target = np.dtype(imageio.output_dtype_for(output, dtype, source_dtype=source))
        if target == dtype:
            return cls(target, lambda v: v, [])
        scale = source if dtype.kind == "f" else dtype
        if target == np.uint8 and not (scale.kind in "iub" and scale.itemsize == 1):
            if not (scale.kind in "iu" and scale.itemsize == 2):
                return None  # a float or wide range: mapped by the whole image's range
            how = imageio.to_uint8(np.zeros(1, dtype), scale)[1]
            return cls(target, lambda v: imageio.to_uint8(v, scale)[0],
                       [f"{how}; use --format png, npy or tiff for the exact values"])
        return cls(target, lambda v: imageio.fit_to_dtype(v, target),
                   [f"written as {target} (rounded and clipped); "
                    f"use --format npy or tiff for the exact values"])


class _RowStats:
    """:func:`poolcli.stats.channel_stats` of an image given band by band: the same row blocks
    fed to the same accumulator in the same order, so the numbers are identical."""

    def __init__(self, width: int, channels):
        from poolcli.ops import RowBlocks
        from poolcli.stats import BLOCK_CELLS, ChannelAccumulator

        # channel_stats's row blocks: the same blocks give the same floating-point sums
        self.blocks = RowBlocks(BLOCK_CELLS // max(1, width))
        self.names = tuple(channels)
        self.accs = [ChannelAccumulator() for _ in self.names]

    def add(self, band: np.ndarray) -> None:
        for block in self.blocks.feed(band.reshape(band.shape[0], band.shape[1], -1)):
            self._accumulate(block)

    def _accumulate(self, block) -> None:
        if block is None:
            return
        with np.errstate(invalid="ignore", over="ignore"):
            for i, acc in enumerate(self.accs):
                acc.add(np.ascontiguousarray(block[..., i]).reshape(-1))

    def result(self) -> list[dict]:
        from poolcli.stats import ChannelStats, channel_names

        self._accumulate(self.blocks.rest())
        names = channel_names(len(self.accs), self.names)
        return [ChannelStats(names[i], *acc.result()).as_dict() for i, acc in
                enumerate(self.accs)]



# ---- unpool ----------------------------------------------------------------------------------


def unpool_stream(job, m, map_path: str, accumulate: bool, output_size, opts, max_pixels,
                  preview: bool, build_record) -> dict | None:
    """Unpool one job band by band from the map ``m`` (an
    :class:`~poolcli.imageio.indexmap.IndexMap`, lazy when large); ``None``: run in memory.

    Output rows ``[A, B)`` can only receive values from the pooled rows whose windows reach
    them (``j*s - p <= row <= j*s - p + K - 1``, ``K`` the effective kernel; for maps of
    adaptive, global and K-max pooling the stride-1 window of :meth:`IndexMap.geometry`, which
    holds every row they can select). Each band reads those pooled rows and their index rows,
    checks that every index lies in its window (a map edited by hand may not: then the job
    runs in memory), and scatters the values whose targets fall in the band, in the pooled
    image's C order: the same last-wins cells, the same float64 sums in the same order, so the
    same bits as :func:`poolcli.ops.max_unpool2d` on the whole image."""
    if preview or m.path is None or job.output == "-" or "://" in job.output \
            or "://" in job.source or job.source == "-":
        return None
    from poolcli.formats import SUFFIX_FORMAT

    fmt = SUFFIX_FORMAT.get(os.path.splitext(job.output)[1].lower())
    h, w, c = (int(v) for v in m.input_shape)
    if fmt not in _WRITERS or (output_size is not None and tuple(output_size) != (h, w)):
        return None
    if not (forced_rows() or m.lazy or h * w * c * 8 > STREAM_BYTES):
        return None  # small: whole arrays are faster (8 bytes: the widest result)
    plan = _UnpoolPlan.make(m, (h, w))
    if plan is None:
        return None
    from poolcli.imageio import DEFAULT_MAX_PIXELS
    from poolcli.imageio.stream import open_band_reader

    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    reader = open_band_reader(job.source, max_pixels=limit)
    if reader is None:
        return None
    with reader:
        if (reader.height, reader.width, len(reader.channels)) != tuple(m.shape):
            return None  # the in-memory path says what does not match
        run = _Unpooled(job, m, map_path, accumulate, opts, reader, plan)
        return run.run(build_record)


class _UnpoolPlan:
    """Output bands and the pooled rows each needs; ``None`` from :meth:`make` when some
    pooled row is needed by no band (its indices could not be placed) or the size is not
    PyTorch's for the map's geometry (the in-memory path reports that)."""

    def __init__(self, bands, k: int, s: int, p: int):
        self.bands, self.k, self.s, self.p = bands, k, s, p

    @classmethod
    def make(cls, m, size):
        from poolcli.ops.unpool import unpool_output_size

        geo = m.geometry()
        pooled = tuple(m.shape[:2])
        try:
            unpool_output_size(pooled, geo["kernel_size"], geo["stride"], geo["padding"],
                               output_size=size)
        except (ValueError, TypeError):
            return None
        k, s, p = geo["kernel_size"][0], geo["stride"][0], geo["padding"][0]
        h, w = size
        band = forced_rows() or max(1, BAND_BYTES // max(1, w * m.shape[2] * 8))
        bands, covered = [], 0
        for a in range(0, h, band):
            b = min(h, a + band)
            j0 = max(0, -(-(a - k + 1 + p) // s))
            j1 = min(pooled[0], (b - 1 + p) // s + 1)
            if j0 < j1:
                if j0 > covered:
                    return None
                covered = max(covered, j1)
            bands.append((a, b, j0, j1))
        return cls(bands, k, s, p) if covered == pooled[0] else None

    def in_windows(self, idx: np.ndarray, j0: int, width: int) -> bool:
        """Whether every index of pooled rows ``j0...`` lies in its window's rows."""
        rows = idx // width
        first = (np.arange(j0, j0 + idx.shape[0], dtype=np.int64) * self.s - self.p)
        first = first[:, None, None]
        return bool(((rows >= first) & (rows <= first + self.k - 1)).all())


class _Unpooled:
    """One streamed unpool job: bands scattered as :func:`poolcli.ops.max_unpool2d` does."""

    def __init__(self, job, m, map_path, accumulate, opts, reader, plan):
        self.job, self.m, self.map_path, self.accumulate = job, m, map_path, accumulate
        self.opts, self.reader, self.plan = opts, reader, plan
        self.h, self.w, self.c = (int(v) for v in m.input_shape)
        x = reader.dtype
        if not accumulate:
            self.dtype = x
        elif x.kind == "f":
            self.dtype = x
        else:
            self.dtype = np.dtype(np.uint64 if x == np.uint64 else np.int64)
        self.stats_in = _RowStats(reader.width, reader.channels) if opts.stats else None
        self.fed = 0
        self.zeros = 0

    def policy(self):
        from poolcli import imageio

        x = self.reader.dtype
        if x.kind == "f":  # signed (normalized) input is mapped by range in memory: as is only
            for source in (x, None):
                if imageio.output_dtype_for(self.job.output, self.dtype,
                                            source_dtype=source) != self.dtype:
                    return None
        return _Policy.make(self.job.output, self.dtype, x)

    def band(self, a: int, b: int, j0: int, j1: int) -> np.ndarray | None:
        """Output rows ``[a, b)``, or ``None`` when an index lies outside its window."""
        w, c = self.w, self.c
        size = (b - a) * w * c
        if j0 >= j1:
            return np.zeros((b - a, w, c), self.dtype)
        x = self.reader.read_rows(j0, j1)
        if self.stats_in is not None and j1 > self.fed:
            self.stats_in.add(x[self.fed - j0 :])
            self.fed = j1
        idx = self.m.rows(j0, j1)
        if not self.plan.in_windows(idx, j0, w):
            return None
        inside = (idx >= a * w) & (idx < b * w)
        target = ((idx - a * w) * c + np.arange(c, dtype=np.int64))[inside]
        values = x[inside]
        if not self.accumulate:
            out = np.zeros(size, self.dtype)
            winner = np.full(size, -1, dtype=np.int64)  # the last source of a cell wins
            np.maximum.at(winner, target, np.arange(target.size, dtype=np.int64))
            cells = np.flatnonzero(winner >= 0)
            out[cells] = values[winner[cells]]
        elif self.dtype.kind == "f":  # float64 sums in the whole image's order, rounded once
            sums = np.bincount(target, weights=values.astype(np.float64, copy=False),
                               minlength=size)
            with np.errstate(over="ignore", invalid="ignore"):
                out = sums.astype(self.dtype, copy=False)
        else:
            out = np.zeros(size, self.dtype)
            np.add.at(out, target, values.astype(self.dtype, copy=False))
        return out.reshape(b - a, w, c)

    def run(self, build_record) -> dict | None:
        from poolcli.app.outputs import provenance
        from poolcli.app.runner import track_commit
        from poolcli.formats import SUFFIX_FORMAT
        from poolcli.imageio import make_parent_dirs
        from poolcli.imageio.stream import open_band_writer

        policy = self.policy()
        if policy is None:
            return None
        stats_out = _RowStats(self.w, self.reader.channels) if self.opts.stats else None
        made = provenance("unpool", "unpool", {"accumulate": self.accumulate})
        make_parent_dirs(self.job.output)
        fmt = SUFFIX_FORMAT[os.path.splitext(self.job.output)[1].lower()]
        with open_band_writer(self.job.output, height=self.h, width=self.w,
                              channels=self.reader.channels, dtype=policy.target, fmt=fmt,
                              overwrite=self.opts.force, on_commit=track_commit, metadata=made,
                              compress_level=self.opts.compress_level,
                              threads=threads()) as writer:
            for a, b, j0, j1 in self.plan.bands:
                values = self.band(a, b, j0, j1)
                if values is None:
                    return None  # the writer aborts; the job runs in memory
                self.zeros += int(np.count_nonzero(values == 0))
                if stats_out is not None:
                    stats_out.add(values)
                writer.write_rows(policy.convert(values))
            writer.commit()
        return self.record(policy, stats_out, build_record)

    def record(self, policy, stats_out, build_record) -> dict:
        r = self.reader
        img = SimpleNamespace(source=r.source, channels=r.channels,
                              array=_shaped((r.height, r.width, len(r.channels)), r.dtype))
        values = _shaped((self.h, self.w, self.c), self.dtype)
        notes = list(r.notes) + [f"map {self.map_path}: {self.m.meta.get('operator')} of "
                                 f"{self.m.meta.get('source')} {self.h}x{self.w}"]
        notes += policy.notes
        zero = float(np.float64(self.zeros) / (self.h * self.w * self.c))
        notes.append(f"zero cells: {100 * zero:.1f}% (non-overlapping k x k pooling gives about "
                     f"1 - 1/k²)")
        params = {"indices": self.map_path, "accumulate": self.accumulate,
                  "output_size": [self.h, self.w]}
        record = build_record(img, self.job.output, "unpool", params, values, notes,
                              stats=None, display=None, zero_fraction=zero)
        if self.stats_in is not None:
            record["stats_in"] = self.stats_in.result()  # every pooled row: the plan covers them
            record["stats_out"] = stats_out.result()
        return record


# ---- adaptive and global pooling ---------------------------------------------------------------


def _pool_adaptive(job, op, spec, opts, reader, build_record) -> dict | None:
    """Adaptive pooling band by band (each band with the whole image's windows), global pooling
    through an accumulator over the bands; ``None``: in memory (the max locations, or a case
    :class:`~poolcli.ops.adaptive.GlobalPool` cannot give bit for bit)."""
    if spec.save_indices:
        return None
    kind = op.stream.split("-", 1)[1]
    if op.stream.startswith("global-"):
        return _pool_global(job, op, spec.params, opts, reader, kind, build_record)
    from poolcli.ops.adaptive import adaptive_band_rows

    rows = adaptive_band_rows(reader.height, spec.params["output_size"])
    return _Adaptive(job, op, spec.params, opts, reader, rows).run(build_record)


class _Adaptive(_Streamed):
    """Adaptive pooling: output rows ``[a, b)`` from input rows ``[floor(a*H/oh),
    ceil(b*H/oh))`` by :func:`poolcli.ops.adaptive.adaptive_pool_rows`, not by the operator on
    the slice (whose own adaptive windows would not be the image's)."""

    def compute(self, x: np.ndarray, r0: int, skip: int, count: int, first: int) -> np.ndarray:
        from poolcli.ops.adaptive import adaptive_pool_rows

        a = first + skip
        return np.ascontiguousarray(adaptive_pool_rows(
            x, self.op.stream.split("-", 1)[1], self.params["output_size"], self.reader.height,
            a, a + count, r0))


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
    band = forced_rows() or max(1, BAND_BYTES // max(1, row_bytes))
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


# ---- instance, layer and group norm ------------------------------------------------------------


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
    band = forced_rows() or max(1, BAND_BYTES // max(1, row_bytes))
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
