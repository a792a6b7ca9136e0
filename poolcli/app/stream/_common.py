"""What the streamed jobs share: threads, band sizes, the band reader of a large file, the
output policy and the statistics band by band, the record's stand-in arrays."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np

#: Force streaming with this many output rows per band (tests, experiments).
ROWS_ENV = "POOLCLI_STREAM_ROWS"
#: Threads per streamed image (default: every core, or 1 in a worker process).
THREADS_ENV = "POOLCLI_THREADS"
#: Files smaller than this are read whole without looking further (a header parse saved).
_SMALL_FILE = 256 << 10
#: Bands the reader thread may decode ahead of the pool.
_READ_AHEAD = 2
_WRITERS = ("PNG", "TIFF", "NPY")  # the formats open_band_writer writes band by band


def setting(name: str):
    """``poolcli.app.stream.<name>`` (:data:`~poolcli.app.stream.STREAM_BYTES`,
    :data:`~poolcli.app.stream.BAND_BYTES`) read now: tests and benchmarks set them there."""
    from poolcli.app import stream

    return getattr(stream, name)


def forced_rows() -> int | None:
    value = os.environ.get(ROWS_ENV, "").strip()
    return max(1, int(value)) if value.isdigit() else None


def threads() -> int:
    """Threads for one streamed image (see :mod:`poolcli.app.stream`)."""
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
    if op.stream == "rows":  # K-max along the width: row by row, k from the width alone
        return ops.window_rows(height, 1, 1, 0, 1, False) if params.get("axis") == "w" \
            else None
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
    if forced_rows() or size > setting("STREAM_BYTES"):
        from poolcli.app.runner import reuse_freed_memory

        reuse_freed_memory()  # every band allocates and frees a few MiB (see its measurements)
        return reader
    reader.close()
    return None




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
