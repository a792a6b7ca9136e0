"""Per-channel statistics of an image array (pure numpy, no printing)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["BLOCK_CELLS", "ChannelAccumulator", "ChannelStats", "channel_names", "channel_stats"]


@dataclass(frozen=True)
class ChannelStats:
    """Statistics of one channel plane. ``std`` is the population standard deviation (ddof=0).

    ``min``/``max``/``mean``/``std`` ignore NaN; ``nan`` counts NaN cells so they are not hidden.
    """

    channel: str
    min: float
    max: float
    mean: float
    std: float
    zero_fraction: float
    nan: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def channel_names(n_channels: int, names=None) -> tuple[str, ...]:
    """Names for ``n_channels`` channels: the given ones, else L / LA / RGB / RGBA / c0, c1, ..."""
    if names is not None and len(names) == n_channels:
        return tuple(names)
    return {1: ("L",), 2: ("L", "A"), 3: ("R", "G", "B"), 4: ("R", "G", "B", "A")}.get(
        n_channels, tuple(f"c{i}" for i in range(n_channels))
    )


#: Cells of one channel handled at a time: float64 temporaries stay at a few MiB however large
#: the image (a whole-plane ``std`` would allocate a float64 copy of the plane: 512 MiB for
#: one channel of an 8192 x 8192 image).
BLOCK_CELLS = 1 << 18


class ChannelAccumulator:
    """Statistics of one channel, merged block by block (Chan et al.'s parallel update).

    Feed it the same blocks in the same order and the numbers are the same to the bit: the
    streaming job (:mod:`poolcli.app.stream`) feeds it the row blocks :func:`channel_stats` does.

    Each block's sum of squared deviations is computed two-pass around the block's own mean
    (in float64), and blocks are merged with ``M2 = M2_a + M2_b + delta**2 * n_a * n_b / n``:
    as accurate as a two-pass over the whole plane, with one pass over the data.
    """

    __slots__ = ("size", "count", "zeros", "nan", "lo", "hi", "total", "mean", "m2")

    def __init__(self):
        self.size = self.count = self.zeros = self.nan = 0
        self.lo = self.hi = None
        self.total = 0.0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, plane: np.ndarray) -> None:
        """Add a contiguous 1-D block of one channel."""
        self.size += plane.size
        self.zeros += int(np.count_nonzero(plane == 0))
        if plane.dtype.kind == "f":
            nan = np.isnan(plane)
            count = int(np.count_nonzero(nan))
            if count:
                self.nan += count
                plane = plane[~nan]
        n_b = plane.size
        if n_b == 0:
            return
        lo, hi = plane.min(), plane.max()
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)
        s_b = float(np.add.reduce(plane, dtype=np.float64))
        mean_b = s_b / n_b
        d = np.subtract(plane, mean_b, dtype=np.float64)
        m2_b = float(np.einsum("i,i->", d, d))  # (np.dot can be slow with threaded BLAS)
        n_a = self.count
        n = n_a + n_b
        if n_a == 0:
            self.mean, self.m2 = mean_b, m2_b
        else:
            delta = mean_b - self.mean
            self.mean += delta * (n_b / n)
            self.m2 += m2_b + delta * delta * (n_a * n_b / n)
        self.total += s_b
        self.count = n

    def result(self) -> tuple[float, float, float, float, float, int]:
        nan = float("nan")
        if self.size == 0:
            return (nan,) * 5 + (0,)  # type: ignore[return-value]
        zeros = self.zeros / self.size
        if self.count == 0:
            return (nan,) * 4 + (zeros, self.nan)  # type: ignore[return-value]
        mean = self.total / self.count
        if not np.isfinite(mean):  # inf in the data: the merged M2 is meaningless
            std = nan
        else:
            std = float(np.sqrt(self.m2 / self.count)) if self.m2 >= 0 else nan
        return float(self.lo), float(self.hi), mean, std, float(zeros), self.nan


def _images(x: np.ndarray):
    """The ``(H, W, C)`` images of an ``(..., H, W, C)`` array, as views."""
    for index in np.ndindex(*x.shape[:-3]):
        yield x[index]


def channel_stats(x: np.ndarray, names=None) -> list[ChannelStats]:
    """Statistics of every channel of ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)`` data.

    Memory stays small whatever the size: channels are read in blocks of rows (a few MiB of
    temporaries), never copied or widened to float64 as a whole.

    >>> [s.mean for s in channel_stats(np.array([[[0, 10], [2, 10]]], dtype=np.uint8))]
    [1.0, 10.0]
    """
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[:, :, None]
    c = x.shape[-1]
    names = channel_names(c, names)
    accs = [ChannelAccumulator() for _ in range(c)]
    if x.ndim >= 3 and x.size:
        width = int(np.prod(x.shape[-2:-1]))
        rows = max(1, BLOCK_CELLS // max(1, width))
        with np.errstate(invalid="ignore", over="ignore"):
            for image in _images(x):
                for r0 in range(0, image.shape[0], rows):
                    block = image[r0 : r0 + rows]
                    for i in range(c):
                        accs[i].add(np.ascontiguousarray(block[..., i]).reshape(-1))
    return [ChannelStats(names[i], *accs[i].result()) for i in range(c)]
