"""Unpooling band by band from a max-location map (see :func:`unpool_stream`)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np

from poolcli.app.stream._common import (_WRITERS, _Policy, _RowStats, _shaped, forced_rows,
                                        setting, threads)


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
    if not (forced_rows() or m.lazy or h * w * c * 8 > setting("STREAM_BYTES")):
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
        band = forced_rows() or max(1, setting("BAND_BYTES") // max(1, w * m.shape[2] * 8))
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
