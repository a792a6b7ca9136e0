"""Per-channel statistics of an image array (pure numpy, no printing)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["ChannelStats", "channel_names", "channel_stats"]


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


def _plane_stats(plane: np.ndarray) -> tuple[float, float, float, float, float, int]:
    size = plane.size
    if size == 0:
        return (float("nan"),) * 5 + (0,)  # type: ignore[return-value]
    zeros = np.count_nonzero(plane == 0) / size
    if plane.dtype.kind == "f":
        nan = int(np.count_nonzero(np.isnan(plane)))
        if nan:
            finite = plane[~np.isnan(plane)]
            if finite.size == 0:
                return (float("nan"),) * 4 + (zeros, nan)  # type: ignore[return-value]
            plane = finite
    else:
        nan = 0
    mean = float(plane.mean(dtype=np.float64))
    with np.errstate(invalid="ignore", over="ignore"):
        std = float(plane.std(dtype=np.float64))
    return float(plane.min()), float(plane.max()), mean, std, float(zeros), nan


def channel_stats(x: np.ndarray, names=None) -> list[ChannelStats]:
    """Statistics of every channel of ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)`` data.

    >>> [s.mean for s in channel_stats(np.array([[[0, 10], [2, 10]]], dtype=np.uint8))]
    [1.0, 10.0]
    """
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[:, :, None]
    c = x.shape[-1]
    names = channel_names(c, names)
    out = []
    for i in range(c):
        plane = np.ascontiguousarray(x[..., i])
        out.append(ChannelStats(names[i], *_plane_stats(plane)))
    return out
