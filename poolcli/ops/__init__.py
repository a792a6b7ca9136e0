"""The pure-numpy operator core: numpy in, numpy out; no I/O, no printing.

Arrays are channels-last: ``(H, W)`` grey, ``(H, W, C)`` one image, ``(N, H, W, C)`` a batch.
"""

from poolcli.ops.adaptive import (
    adaptive_avg_pool2d,
    adaptive_max_pool2d,
    global_avg_pool2d,
    global_max_pool2d,
)
from poolcli.ops.pool import avg_pool2d, lp_pool2d, max_pool2d, min_pool2d

__all__ = [
    "max_pool2d",
    "min_pool2d",
    "avg_pool2d",
    "lp_pool2d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "global_avg_pool2d",
    "global_max_pool2d",
]
