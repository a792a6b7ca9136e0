"""The pure-numpy operator core: numpy in, numpy out; no I/O, no printing.

Arrays are channels-last: ``(H, W)`` grey, ``(H, W, C)`` one image, ``(N, H, W, C)`` a batch.
"""

from poolcli.ops.adaptive import (
    adaptive_avg_pool2d,
    adaptive_max_pool2d,
    global_avg_pool2d,
    global_max_pool2d,
)
from poolcli.ops.norm import RunningStats, batch_norm, group_norm, instance_norm, layer_norm
from poolcli.ops.pool import avg_pool2d, lp_pool2d, max_pool2d, min_pool2d
from poolcli.ops.ranked import dynamic_k, kmax_pool, sort_pool2d
from poolcli.ops.stochastic import stochastic_pool2d
from poolcli.ops.unpool import max_unpool2d
from poolcli.ops.zoo import blur_pool2d, gem_pool2d, lse_pool2d, mixed_pool2d, softpool2d

__all__ = [
    "max_pool2d",
    "min_pool2d",
    "avg_pool2d",
    "lp_pool2d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "global_avg_pool2d",
    "global_max_pool2d",
    "max_unpool2d",
    "stochastic_pool2d",
    "kmax_pool",
    "dynamic_k",
    "sort_pool2d",
    "mixed_pool2d",
    "softpool2d",
    "gem_pool2d",
    "lse_pool2d",
    "blur_pool2d",
    "instance_norm",
    "batch_norm",
    "layer_norm",
    "group_norm",
    "RunningStats",
]
