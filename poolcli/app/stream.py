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
from types import SimpleNamespace

import numpy as np

from poolcli import registry

__all__ = ["STREAM_BYTES", "BAND_BYTES", "ROWS_ENV", "THREADS_ENV", "pool_stream", "threads",
           "band_geometry"]

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
    if spec.save_indices or spec.indices_png or spec.preview or job.output == "-":
        return None
    from poolcli.formats import SUFFIX_FORMAT

    op = registry.get(spec.op)
    fmt = SUFFIX_FORMAT.get(os.path.splitext(job.output)[1].lower())
    if not op.stream or fmt not in _WRITERS:
        return None
    reader = _open_large(job.source, max_pixels)
    if reader is None:
        return None
    with reader:
        rows = band_geometry(op, spec.params, reader.height, reader.dtype)
        if rows is None:
            return None
        return _Streamed(job, op, spec.params, opts, reader, rows).run(build_record)


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

    def compute(self, x: np.ndarray, r0: int, skip: int, count: int, first: int) -> np.ndarray:
        """Output rows ``[first + skip, first + skip + count)`` from input rows ``x`` (from
        ``r0``); the operator computes them from output row ``first`` on."""
        from poolcli.ops import keep_band

        params = self.params
        if self.seed is not None:  # the image's random stream, from output row `first` on
            params = dict(params, seed=self.generator(first))
        result = self.op.run(x, params, False)
        info = dict(result.info)
        if self.seed is not None:
            info["seed"] = self.seed
        self.info = info
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
        """``(rows, r0, skip, count, first output row computed)`` of each band, in order."""
        for a, b in _plan(self.rows, self.band):
            r0, r1, skip = self.rows.slice_for(a, b)
            yield self.reader.read_rows(r0, r1), r0, skip, b - a, a - skip

    def results(self):
        """Output bands in order. One thread: decoded and computed here, nothing else runs.
        More: decoded ahead by one reader thread, computed on the thread pool."""
        n = self.threads
        if n == 1:
            for x, r0, skip, count, first in self.inputs():
                self.feed_input(x, r0)
                yield self.compute(x, r0, skip, count, first)
        else:
            from poolcli.imageio.stream import ReadAhead

            with ThreadPoolExecutor(n, thread_name_prefix="poolcli-band") as pool:
                _start_threads(pool, n)
                inputs = ReadAhead(self.inputs(), _READ_AHEAD)
                try:
                    flight: deque = deque()
                    for x, r0, skip, count, first in inputs:
                        self.feed_input(x, r0)
                        flight.append(pool.submit(self.compute, x, r0, skip, count, first))
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
        first = next(bands)
        policy = _Policy.make(self.job.output, first.dtype, self.reader.dtype)
        if policy is None:
            bands.close()
            return None
        stats_out = _RowStats(first.shape[1], self.reader.channels) if self.opts.stats else None
        with self.open_writer(first, policy) as writer:
            for values in _chain(first, bands):
                if stats_out is not None:
                    stats_out.add(values)
                writer.write_rows(policy.convert(values))
            writer.commit()
        return self.record(first, policy, stats_out, build_record)

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
        record = build_record(img, self.job.output, self.op.name, self.params, values, notes,
                              stats=None, **self.info)
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
        from poolcli.stats import BLOCK_CELLS, ChannelAccumulator

        # channel_stats's row blocks: the same blocks give the same floating-point sums
        self.rows = max(1, BLOCK_CELLS // max(1, width))
        self.names = tuple(channels)
        self.accs = [ChannelAccumulator() for _ in self.names]
        self.pending: list[np.ndarray] = []
        self.count = 0

    def add(self, band: np.ndarray) -> None:
        band = band.reshape(band.shape[0], band.shape[1], -1)
        while band.shape[0]:
            take = min(self.rows - self.count, band.shape[0])
            self.pending.append(band[:take])
            self.count += take
            band = band[take:]
            if self.count == self.rows:
                self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        block = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending, self.count = [], 0
        with np.errstate(invalid="ignore", over="ignore"):
            for i, acc in enumerate(self.accs):
                acc.add(np.ascontiguousarray(block[..., i]).reshape(-1))

    def result(self) -> list[dict]:
        from poolcli.stats import ChannelStats, channel_names

        self.flush()
        names = channel_names(len(self.accs), self.names)
        return [ChannelStats(names[i], *acc.result()).as_dict() for i, acc in
                enumerate(self.accs)]

