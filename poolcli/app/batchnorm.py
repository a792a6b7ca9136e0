"""Batch normalization over files: one batch, fitting statistics, inference with stored ones.

- :func:`apply_batch`: every input as one batch (training-mode statistics over the batch).
- :func:`fit`: stream the inputs in chunks and accumulate exact and running statistics
  (:class:`poolcli.ops.RunningStats`), written to a statistics file
  (:mod:`poolcli.imageio.statsfile`).
- :func:`infer_one`: one image normalized with stored statistics, a per-image job like any other.

Tables and JSON go through the reporter, as for every command.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from poolcli import __version__, registry
from poolcli.app.jobs import PREVIEW_KEY, build_record, read, stats_beside
from poolcli.app.outputs import WriteOptions, provenance, write_values
from poolcli.app.runner import Outcome, Runner, guarded
from poolcli.errors import PoolcliError

__all__ = ["FitOptions", "fit", "apply_batch", "infer_one", "inference_statistics",
           "normalize_with", "image_moments", "ImageMoments", "MergedStats"]


@dataclass(frozen=True)
class FitOptions:
    batch_size: int = 8
    momentum: float | None = 0.1  # None: cumulative average (PyTorch's momentum=None)
    save_stats: str | None = None
    force: bool = False


def inference_statistics(stored: dict, running: bool = False) -> tuple[list, list, str]:
    """(mean, var, description) for inference from a loaded statistics file.

    By default the exact mean and (biased) variance of every pixel of the whole fitted set, as
    the tutorial defines inference ("in principle the mean and variance of all samples");
    ``running``: PyTorch's momentum-averaged running statistics, the fallback for sets too
    large to see whole (``model.eval()`` in PyTorch uses these).
    """
    if running:
        momentum = stored.get("momentum")
        how = "cumulative average" if momentum is None else f"momentum {momentum:g}"
        return (stored["running_mean"], stored["running_var"],
                f"running statistics ({how}, {stored.get('num_batches_tracked')} chunks)")
    return (stored["mean"], stored["var"],
            f"exact statistics of {stored.get('images')} images "
            f"({stored.get('count')} pixels per channel)")


def normalize_with(x, stored: dict, params: dict, what: str, running: bool = False):
    """Batch norm of one image ``x`` (H, W, C) in inference mode with the loaded statistics
    ``stored`` of the file ``what``; returns (values, description of the statistics)."""
    import numpy as np

    from poolcli.ops import batch_norm

    mean, var, used = inference_statistics(stored, running)
    mean, var = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
    if x.shape[-1] != mean.size:
        raise ValueError(f"{x.shape[-1]} channels, but {what} has statistics for {mean.size}")
    p = registry.affine(params, x.shape[-1])
    values = batch_norm(x[None], mean, var, weight=p["weight"], bias=p["bias"], training=False,
                        eps=p["eps"])[0]
    return values, used


def infer_one(job, stored: dict, stats_path: str, running: bool, params: dict,
              opts: WriteOptions, max_pixels, preview: bool = False) -> dict:
    """Normalize one image with the statistics ``stored`` (loaded from ``stats_path``); a large
    one band by band when it can be (:func:`poolcli.app.stream.infer_stream`)."""
    from poolcli.app.stream import infer_stream

    made = provenance("norm", "batch", {**params, "running": running})
    note = f"inference with {inference_statistics(stored, running)[2]} of {stats_path}"
    streamed = infer_stream(job, lambda rows: normalize_with(rows, stored, params, stats_path,
                                                             running)[0],
                            note, params, made, opts, max_pixels, preview, build_record)
    if streamed is not None:
        return streamed
    img = read(job.source, max_pixels)
    try:
        values, used = normalize_with(img.array, stored, params, stats_path, running)
    except ValueError as exc:
        raise PoolcliError(f"{img.source}: {exc}") from None
    notes = list(img.notes) + [f"inference with {used} of {stats_path}"]
    stats = stats_beside(img.array, values, img.channels, opts.stats)
    display = write_values(values, job.output, channels=img.channels, opts=opts, notes=notes,
                           signed=True, provenance=made)
    extra = {PREVIEW_KEY: (values, None, img.channels)} if preview else {}
    return build_record(img, job.output, "batch", params, values, notes, stats=stats,
                        display=display, **extra)


def _read_all(runner: Runner, jobs, max_pixels) -> list:
    """Read every job (errors reported as outcomes); returns [(job, image)] of readable ones."""
    loaded = []

    def load(job):
        loaded.append((job, read(job.source, max_pixels)))

    for job in jobs:
        outcome = guarded(load, job, ())
        if outcome.status == "interrupted":
            raise KeyboardInterrupt
        if outcome.status == "error":
            runner.record(outcome)
    return loaded


def _fail(runner: Runner, items, message: str) -> None:
    for job, _ in items:
        runner.record(Outcome(job.index, job.source, "error", message=message))


def _keep_common_shape(runner: Runner, loaded: list) -> list:
    """Batch norm needs one shape: keep the most common one, fail each odd image in one line."""
    from collections import Counter

    shapes = Counter(img.array.shape for _, img in loaded)
    if len(shapes) <= 1:
        return loaded
    common = shapes.most_common(1)[0][0]
    for job, img in loaded:
        if img.array.shape != common:
            runner.record(Outcome(job.index, job.source, "error", message=(
                f"{img.source}: shape {img.array.shape} differs from the batch's {common} "
                f"(batch norm needs images of one shape; left out)")))
    return [(job, img) for job, img in loaded if img.array.shape == common]


def apply_batch(runner: Runner, reporter, jobs, params: dict, opts: WriteOptions,
                max_pixels) -> None:
    """Batch norm of all inputs as one batch (training-mode statistics), each written."""
    import numpy as np

    from poolcli.errors import one_line
    from poolcli.ops import batch_norm

    loaded = _keep_common_shape(runner, _read_all(runner, jobs, max_pixels))
    if not loaded:
        return
    batch = np.stack([img.array for _, img in loaded])
    channels = loaded[0][1].channels
    try:
        p = registry.affine(params, batch.shape[-1])
        values = batch_norm(batch, None, None, weight=p["weight"], bias=p["bias"],
                            training=True, eps=p["eps"])
    except (ValueError, TypeError) as exc:
        names = ", ".join(img.source for _, img in loaded)
        _fail(runner, loaded, f"{names}: {one_line(exc)}")
        return
    with np.errstate(invalid="ignore"):  # a signalling NaN warns when widened
        x64 = batch.astype(np.float64)
    reporter.batch_stats(f"batch statistics over {len(loaded)} images", channels,
                         x64.mean(axis=(0, 1, 2)), x64.var(axis=(0, 1, 2)),
                         "biased variance, as used for normalizing")
    del x64
    results = {job.index: out for (job, _), out in zip(loaded, values)}
    images = {job.index: img for job, img in loaded}

    def write(job):
        img, out = images[job.index], results[job.index]
        notes = list(img.notes) + [f"batch statistics over {len(loaded)} images"]
        display = write_values(out, job.output, channels=img.channels, opts=opts, notes=notes,
                               signed=True, provenance=provenance("norm", "batch", params))
        return build_record(img, job.output, "batch", params, out, notes,
                            stats=opts.stats or None, display=display)

    runner.run([job for job, _ in loaded], write)


def fit(runner: Runner, reporter, jobs, params: dict, fit_opts: FitOptions, max_pixels) -> None:
    """Stream the inputs in chunks and accumulate statistics; write them to ``save_stats``.

    Locally each chunk's images are read here; on a cluster (``runner.distributed``) each image
    is a task returning its partial statistics (:func:`image_moments`), combined here chunk by
    chunk (:class:`MergedStats`) into the same statistics file, within float rounding.
    """
    if runner.distributed:
        rs, batch_of = MergedStats(), list
        seen = _moments_each(runner, jobs, max_pixels)
    else:
        from poolcli.ops import RunningStats

        rs, batch_of = RunningStats(), _as_batch
        seen = _read_each(runner, jobs, max_pixels)
    used, shape, channels = _accumulate(runner, rs, seen, batch_of, fit_opts)
    if not used:
        return
    record = _stats_record(rs, channels, used, shape, params, fit_opts)
    if not all(math.isfinite(v) for key in ("mean", "var") for v in record[key]):
        raise PoolcliError(f"{fit_opts.save_stats or 'the statistics'}: not written: the "
                           f"images hold NaN or inf, so the statistics are not finite")
    momentum = "cumulative" if fit_opts.momentum is None else f"{fit_opts.momentum:g}"
    reporter.batch_stats(
        f"running statistics over {len(used)} images ({rs.num_batches_tracked} chunks)",
        channels, rs.running_mean, rs.running_var,
        f"momentum {momentum}; exact mean/var over all pixels: "
        + ", ".join(f"{m:.4g}/{v:.4g}" for m, v in zip(rs.mean, rs.var)))
    if fit_opts.save_stats:
        from poolcli.app.runner import track_commit
        from poolcli.imageio import statsfile

        statsfile.save(fit_opts.save_stats, record, overwrite=fit_opts.force,
                       on_commit=track_commit)
    runner.tally.ok += len(used)  # the fitted images are in the statistics now on disk
    reporter.json({"stats": record, "output": fit_opts.save_stats})


def _accumulate(runner: Runner, rs, seen, batch_of, fit_opts: FitOptions):
    """Feed ``rs`` chunk by chunk with the (job, image or moments) of ``seen``; images whose
    channels differ from the first one's are errors. Returns (used, shape, channels)."""
    from poolcli.errors import one_line

    shape, channels, used, chunk = None, None, [], []

    def flush():
        if chunk:
            try:
                rs.update(batch_of([_data(item) for _, item in chunk]),
                          momentum=fit_opts.momentum)
            except (ValueError, TypeError) as exc:
                _fail(runner, chunk, f"{', '.join(item.source for _, item in chunk)}: "
                                     f"{one_line(exc)}")
            else:
                used.extend(chunk)
            chunk.clear()

    for job, item in seen:
        item_shape = _shape(item)
        if shape is None:
            shape, channels = item_shape, item.channels
        if item_shape[-1] != shape[-1]:
            runner.record(Outcome(job.index, job.source, "error", message=(
                f"{item.source}: {item_shape[-1]} channels, but the first image has "
                f"{shape[-1]}; statistics are per channel")))
            continue
        if item_shape != shape:
            shape = (None, None, shape[-1])  # images of several sizes: per-pixel statistics
        chunk.append((job, item))
        if len(chunk) == fit_opts.batch_size:
            flush()
    flush()
    return used, shape, channels


# ----------------------------------------------------------------------------------------------
# Fitting on a cluster: per-image partial statistics, merged here
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageMoments:
    """One image's per-channel partial statistics: values ``count``, ``mean`` and ``m2`` (the
    sum of squared deviations from the mean), float64, computed two-pass."""

    source: str
    channels: tuple
    shape: tuple
    count: int
    mean: Any
    m2: Any


def image_moments(job, max_pixels) -> ImageMoments:
    """The partial statistics of one input (a task of a fit on a cluster)."""
    import numpy as np

    img = read(job.source, max_pixels)
    c = img.array.shape[-1]
    with np.errstate(invalid="ignore", over="ignore"):
        x = img.array.reshape(-1, c).astype(np.float64)
        mean = x.mean(axis=0)
        m2 = np.square(x - mean).sum(axis=0)
    return ImageMoments(img.source, tuple(img.channels), tuple(img.array.shape), x.shape[0],
                        mean, m2)


def _chan(a: tuple, b: tuple) -> tuple:
    """Chan et al.'s merge of two (count, mean, M2), as :class:`poolcli.ops.RunningStats`."""
    import numpy as np

    (n_a, mean_a, m2_a), (n_b, mean_b, m2_b) = a, b
    n = n_a + n_b
    with np.errstate(invalid="ignore", over="ignore"):
        delta = mean_b - mean_a
        return n, mean_a + delta * (n_b / n), m2_a + m2_b + np.square(delta) * (n_a * n_b / n)


class MergedStats:
    """:class:`poolcli.ops.RunningStats` fed with per-image partials instead of pixels.

    The chunks are the local fit's (same images, same order), and the exact statistics use the
    same Chan merge; but a chunk's mean and M2 are merged from its images' partials instead of
    computed two-pass over the chunk's pixels, so the statistics file equals a local fit's
    within float rounding (about 1e-15 relative), not bit for bit. The running statistics
    follow PyTorch's per-chunk update, as RunningStats.
    """

    def __init__(self):
        self.count, self.num_batches_tracked = 0, 0
        self._mean = self._m2 = None
        self.running_mean = self.running_var = None

    def update(self, partials: list, *, momentum=None) -> None:
        import numpy as np

        n_b, mean_b, m2_b = 0, 0.0, 0.0
        for p in partials:
            n_b, mean_b, m2_b = _chan((n_b, mean_b, m2_b), (p.count, p.mean, p.m2))
        if n_b == 1:
            raise ValueError("expected more than 1 value per channel in a chunk")
        if self._mean is None:
            c = len(mean_b)
            self._mean, self._m2 = np.zeros(c), np.zeros(c)
            self.running_mean, self.running_var = np.zeros(c), np.ones(c)
        self.count, self._mean, self._m2 = _chan((self.count, self._mean, self._m2),
                                                 (n_b, mean_b, m2_b))
        self.num_batches_tracked += 1
        factor = momentum if momentum is not None else 1.0 / self.num_batches_tracked
        with np.errstate(invalid="ignore", over="ignore"):
            var_unbiased = (m2_b / n_b) * (n_b / (n_b - 1))
            self.running_mean = (1.0 - factor) * self.running_mean + factor * mean_b
            self.running_var = (1.0 - factor) * self.running_var + factor * var_unbiased

    @property
    def mean(self):
        return self._mean.copy()

    @property
    def var(self):
        return self._m2 / self.count

    @property
    def var_unbiased(self):
        return self._m2 / (self.count - 1)


def _moments_each(runner: Runner, jobs, max_pixels):
    """Yield (job, ImageMoments) in input order from the cluster; failures are reported."""
    by_index = {job.index: job for job in jobs}
    for outcome in runner.outcomes(jobs, image_moments, (max_pixels,)):
        if outcome.status == "interrupted":
            raise KeyboardInterrupt
        if outcome.status != "ok":
            runner.record(outcome)
            continue
        yield by_index[outcome.index], outcome.record


def _shape(item) -> tuple:
    return item.shape if isinstance(item, ImageMoments) else item.array.shape


def _data(item):
    return item if isinstance(item, ImageMoments) else item.array


def _as_batch(arrays: list):
    """One chunk as a batch for the statistics: stacked (N, H, W, C) when the images share a
    size (exactly PyTorch's mini-batch), else every pixel of every image as one (1, P, 1, C)
    batch: per-channel statistics over all pixels, each pixel counted once."""
    import numpy as np

    if len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    c = arrays[0].shape[-1]
    return np.concatenate([a.reshape(-1, c) for a in arrays])[None, :, None, :]


def _read_each(runner: Runner, jobs, max_pixels):
    """Yield (job, image) one at a time; unreadable inputs are reported as failures."""
    for job in jobs:
        box = []
        outcome = guarded(lambda j: box.append(read(j.source, max_pixels)), job, ())
        if outcome.status == "interrupted":
            raise KeyboardInterrupt
        if outcome.status == "error":
            runner.record(outcome)
            continue
        yield job, box[0]


def _stats_record(rs, channels, used, shape, params, fit_opts: FitOptions) -> dict:
    from poolcli.imageio import statsfile

    return {
        "format": statsfile.FORMAT, "format_version": statsfile.FORMAT_VERSION,
        "poolcli_version": __version__, "channels": list(channels), "images": len(used),
        "count": int(rs.count), "mean": rs.mean.tolist(), "var": rs.var.tolist(),
        "var_unbiased": rs.var_unbiased.tolist(), "running_mean": rs.running_mean.tolist(),
        "running_var": rs.running_var.tolist(), "num_batches_tracked": int(rs.num_batches_tracked),
        "momentum": fit_opts.momentum, "batch_size": fit_opts.batch_size, "eps": params["eps"],
        "shape": list(shape) if shape[0] is not None else None,
        "sources": [os.path.basename(item.source) for _, item in used],
    }
