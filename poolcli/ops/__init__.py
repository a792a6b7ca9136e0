"""The pure-numpy operator core: numpy in, numpy out; no I/O, no printing.

Arrays are channels-last: ``(H, W)`` grey, ``(H, W, C)`` one image, ``(N, H, W, C)`` a batch.

The functions are imported from their modules on first use (PEP 562): ``poolcli pool --op max``
then loads the fixed-window engine only, not the stochastic, ranked, zoo and normalization
modules (about 15 ms of a whole command's start-up).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# name -> submodule that defines it
_HOME = {
    "max_pool2d": "pool",
    "min_pool2d": "pool",
    "avg_pool2d": "pool",
    "lp_pool2d": "pool",
    "adaptive_avg_pool2d": "adaptive",
    "adaptive_max_pool2d": "adaptive",
    "global_avg_pool2d": "adaptive",
    "global_max_pool2d": "adaptive",
    "max_unpool2d": "unpool",
    "stochastic_pool2d": "stochastic",
    "kmax_pool": "ranked",
    "dynamic_k": "ranked",
    "sort_pool2d": "ranked",
    "mixed_pool2d": "zoo",
    "softpool2d": "zoo",
    "gem_pool2d": "zoo",
    "lse_pool2d": "zoo",
    "blur_pool2d": "zoo",
    "instance_norm": "norm",
    "batch_norm": "norm",
    "layer_norm": "norm",
    "group_norm": "norm",
    "RunningStats": "norm",
    # window geometry, for tools that draw windows (explain): the one place computing them
    "pool_axes": "_geometry",
    "pool_output_size": "_geometry",
    "adaptive_bounds": "_geometry",
    # bands of rows, for streaming a large image through a windowed operator
    "BandRows": "_bands",
    "window_rows": "_bands",
    "blur_rows": "_bands",
    "order_safe": "_bands",
    "keep_band": "_bands",
    "plan_bands": "_bands",
    "RowBlocks": "_bands",
}

__all__ = list(_HOME)


def __getattr__(name: str):
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'poolcli.ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"poolcli.ops.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOME))


if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from poolcli.ops._bands import (
        BandRows,
        RowBlocks,
        blur_rows,
        keep_band,
        order_safe,
        plan_bands,
        window_rows,
    )
    from poolcli.ops._geometry import adaptive_bounds, pool_axes, pool_output_size
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
