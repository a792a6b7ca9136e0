"""Large images band by band: decode a band of rows, pool it, encode it, drop it.

The package: :mod:`poolcli.app.stream._common` (threads, the bands' sizes, the band reader,
the output policy and statistics band by band), :mod:`poolcli.app.stream.pool` (fixed, adaptive
and global pooling), :mod:`poolcli.app.stream.unpool`, :mod:`poolcli.app.stream.norm`
(instance, layer and group norm, batch-norm inference). :data:`STREAM_BYTES` and
:data:`BAND_BYTES` are read from this module when used, so setting them here (tests,
benchmarks) takes effect.

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

Before any band, a probe (the first output row, computed from zeros: :meth:`_Streamed.probe`)
gives the output's dtype and width, which depend on the input's dtype, width and the parameters
only; the writer is opened from it, so every band is computed and encoded alike.

With more than one thread the bands are pooled on a thread pool with at most ``2 * threads`` in
flight. Where their input comes from depends on the file. A file whose rows decode from
anywhere (striped or tiled TIFF: :attr:`~poolcli.imageio.stream.BandReader.random_access`) has
each band decode its own rows in the pool thread that computes it
(:meth:`~poolcli.imageio.stream.BandReader.rows_at`; a strip or row of tiles two bands share is
decoded once, by the threads asking, tile by tile). Any other is decoded in order by one reader
thread (:class:`~poolcli.imageio.stream.ReadAhead`, at most :data:`_READ_AHEAD` waiting; a
PNG's zlib stream is inflated ahead in one more thread, libpng unfilters in the reader thread).
A PNG or TIFF output's bands are also encoded in the pool thread that computed them
(:meth:`poolcli.imageio.stream.BandWriter.encoder`: a TIFF strip per band, or an independent
piece of the PNG's zlib stream, filtered given the output row above the band, which the band
computes once more); other writers (NPY, and unpool's and norm's outputs) get the rows in order
in the calling thread (the PNG and TIFF writers then deflate on threads of their own). zlib,
ISA-L, libpng, imagecodecs and numpy release the GIL. What carries state from band to band (the
zlib streams read, the statistics) runs in one thread, in order, and the pieces written are cut
by the band plan alone, so the bytes are those of one thread. Threads: ``POOLCLI_THREADS``, else every core when this process
runs the image alone, one in a ``-j N`` worker process; one thread starts no thread at all (no
oversubscription: the runner's workers already use the cores).

Memory: about ``2 * threads + 1 + _READ_AHEAD`` input bands of :data:`BAND_BYTES`, their
results, and the reader's and writer's buffers (a TIFF's: the strips or rows of tiles the bands
in flight read), whatever the image size; freed memory is kept for the next band
(:func:`poolcli.app.runner.reuse_freed_memory`). The bomb guard is the reader's: a file
claiming more than ``--max-pixels`` is refused before any pixel is decoded.
"""

from __future__ import annotations

__all__ = ["STREAM_BYTES", "BAND_BYTES", "ROWS_ENV", "THREADS_ENV", "pool_stream", "threads",
           "band_geometry", "unpool_stream", "norm_stream", "infer_stream"]

#: Decoded size from which an image is streamed. Measured with the read-ahead pipeline (2 cores,
#: whole processes, median of 7, max and avg 2x2 RGB PNG to PNG): streamed against in memory,
#: 2048² 295/275 ms against 248/238 ms, 3072² 366/378 against 345/353, 4096² 512/557 against
#: 516/557: the in-memory decoder and encoder work on whole buffers and win on small images,
#: so streaming starts where it stops costing time (and memory starts to matter): 32 MiB.
STREAM_BYTES = 32 << 20
#: Input bytes per band (about); a band is at least one output row.
BAND_BYTES = 2 << 20

# after the tunables: the submodules read them from here at call time
from poolcli.app.stream._common import ROWS_ENV, THREADS_ENV, band_geometry, threads  # noqa: E402
from poolcli.app.stream.norm import infer_stream, norm_stream  # noqa: E402
from poolcli.app.stream.pool import pool_stream  # noqa: E402
from poolcli.app.stream.unpool import unpool_stream  # noqa: E402
