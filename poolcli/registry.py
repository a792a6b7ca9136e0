"""The operator registry: the one list the CLI, the pipeline parser, ``poolcli ops`` and the docs read.

Adding an operator means writing it in ``poolcli/ops`` and adding one :class:`Operator` entry
here (plus a :class:`Param` if it needs a new option); nothing in the CLI changes.

This module must stay import-light (no numpy): ``poolcli --help`` and ``poolcli ops`` read it.
The ``run`` callables import the core lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Param", "Operator", "Result", "PARAMS", "OPERATORS", "get", "names", "params_for"]


@dataclass(frozen=True)
class Param:
    """One operator parameter and the CLI option that sets it.

    ``kind``: ``pair`` (``3`` or ``3x2``, height x width), ``size`` (like pair, for output sizes),
    ``int``, ``float``, ``floats`` (comma-separated), ``bool`` (a flag pair), ``choice``.
    """

    name: str
    flags: tuple[str, ...]
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None


@dataclass
class Result:
    """What running an operator gives: the values, optional indices and notes for the report."""

    values: Any
    indices: Any = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Operator:
    name: str
    family: str  # "pool" or "norm"
    summary: str
    source: str
    params: tuple[str, ...]
    run: Callable[[Any, dict, bool], Result]
    selects: bool = False  # picks input cells and can return their indices
    aliases: tuple[str, ...] = ()


PARAMS: dict[str, Param] = {
    p.name: p
    for p in [
        Param("kernel", ("-k", "--kernel"), "pair", (2, 2), "Window size, N or HxW.", minimum=1),
        Param("stride", ("-s", "--stride"), "pair", None, "Step, N or HxW [default: kernel].",
              minimum=1),
        Param("padding", ("-p", "--padding"), "pair", (0, 0),
              "Implicit padding on each side, at most half the kernel.", minimum=0),
        Param("dilation", ("--dilation",), "pair", (1, 1), "Spacing between window taps.",
              minimum=1),
        Param("ceil_mode", ("--ceil-mode/--floor-mode",), "bool", False,
              "Round the output size up (PyTorch ceil_mode)."),
        Param("count_include_pad", ("--count-include-pad/--no-count-include-pad",), "bool", True,
              "avg: count padding cells in the divisor."),
        Param("norm_type", ("--norm-type",), "float", 2.0, "lp: the power p (> 0, inf allowed).",
              minimum=0),
        Param("output_size", ("--output-size",), "size", (32, 32),
              "adaptive: output size, N or HxW.", minimum=1),
        Param("mode", ("--mode",), "choice", "train",
              "stochastic: train samples a cell by probability, test weights by probability.",
              choices=("train", "test")),
        Param("seed", ("--seed",), "int", None,
              "stochastic: random seed [default: drawn and reported].", minimum=0),
        Param("k", ("--k",), "int", None,
              "kmax: values kept per row/column [default: dynamic k, or half the length].",
              minimum=1),
        Param("axis", ("--axis",), "choice", "w", "kmax: along the width (w) or height (h).",
              choices=("w", "h")),
        Param("k_top", ("--k-top",), "int", None, "kmax dynamic k: k at the top layer.",
              minimum=1),
        Param("layer", ("--layer",), "int", 1, "kmax dynamic k: this layer l (1-based).",
              minimum=1),
        Param("layers", ("--layers",), "int", 1, "kmax dynamic k: number of layers L.",
              minimum=1),
        Param("weights", ("--weights",), "floats", (0.5, 0.3, 0.2),
              "sort: weights of the largest values, largest first (>= 0).", minimum=0),
        Param("alpha", ("--alpha",), "float", 0.5, "mixed: weight of max (0..1) vs avg.",
              minimum=None),
        Param("p", ("--gem-p",), "float", 3.0, "gem: the generalized-mean power p (> 0).",
              minimum=0),
        Param("r", ("--lse-r",), "float", 1.0, "lse: sharpness r (> 0).", minimum=0),
        Param("eps", ("--eps",), "float", 1e-5, "Added to the variance (> 0).", minimum=0),
        Param("gamma", ("--gamma",), "floats", None,
              "Scale per channel (one value, or one per channel).", minimum=None),
        Param("beta", ("--beta",), "floats", None,
              "Shift per channel (one value, or one per channel).", minimum=None),
        Param("groups", ("--groups",), "int", 1, "group: number of channel groups.", minimum=1),
    ]
}


def _pool_args(p: dict) -> tuple:
    return p["kernel"], p["stride"], p["padding"]


def _run_max(x, p, want_indices):
    from poolcli.ops import max_pool2d

    out = max_pool2d(x, *_pool_args(p), p["dilation"], p["ceil_mode"], return_indices=want_indices)
    return Result(*out) if want_indices else Result(out)


def _run_min(x, p, want_indices):
    from poolcli.ops import min_pool2d

    out = min_pool2d(x, *_pool_args(p), p["dilation"], p["ceil_mode"], return_indices=want_indices)
    return Result(*out) if want_indices else Result(out)


def _run_avg(x, p, want_indices):
    from poolcli.ops import avg_pool2d

    return Result(avg_pool2d(x, *_pool_args(p), p["ceil_mode"], p["count_include_pad"]))


def _run_lp(x, p, want_indices):
    from poolcli.ops import lp_pool2d

    return Result(lp_pool2d(x, p["norm_type"], p["kernel"], p["stride"], p["ceil_mode"]))


def _run_gap(x, p, want_indices):
    from poolcli.ops import global_avg_pool2d

    return Result(global_avg_pool2d(x))


def _run_gmp(x, p, want_indices):
    from poolcli.ops import global_max_pool2d

    out = global_max_pool2d(x, return_indices=want_indices)
    return Result(*out) if want_indices else Result(out)


def _run_adaptive_avg(x, p, want_indices):
    from poolcli.ops import adaptive_avg_pool2d

    return Result(adaptive_avg_pool2d(x, p["output_size"]))


def _run_adaptive_max(x, p, want_indices):
    from poolcli.ops import adaptive_max_pool2d

    out = adaptive_max_pool2d(x, p["output_size"], return_indices=want_indices)
    return Result(*out) if want_indices else Result(out)


def _seeded(p: dict) -> dict:
    """Resolve the stochastic seed: the given one, or a fresh one that is reported."""
    from poolcli.ops.stochastic import derive_seed, new_seed

    base = p.get("seed")
    info = {}
    if base is None:
        base = new_seed()
    key = p.get("_key")
    seed = derive_seed(base, key) if key else base
    info["seed"] = base
    if key:
        info["stream"] = f"derive_seed({base}, {key!r})"
    return {"seed": seed, "info": info}


def _run_stochastic(x, p, want_indices):
    from poolcli.ops.stochastic import stochastic_pool2d

    s = _seeded(p)
    want = want_indices and p["mode"] == "train"
    out = stochastic_pool2d(x, p["kernel"], p["stride"], p["padding"], p["ceil_mode"],
                            mode=p["mode"], seed=s["seed"], return_indices=want)
    res = Result(*out) if want else Result(out)
    res.info.update(s["info"])
    return res


def _kmax_k(x, p) -> int:
    from poolcli.ops.ranked import dynamic_k

    length = x.shape[1 if p["axis"] == "w" else 0]
    if p.get("k_top") is not None:
        return dynamic_k(p["k_top"], p["layer"], p["layers"], length)
    if p.get("k") is not None:
        return p["k"]
    return max(1, length // 2)


def _run_kmax(x, p, want_indices):
    from poolcli.ops.ranked import kmax_pool

    k = _kmax_k(x, p)
    out = kmax_pool(x, k, axis=1 if p["axis"] == "w" else 0, return_indices=want_indices)
    res = Result(*out) if want_indices else Result(out)
    res.info["k"] = k
    return res


def _run_sort(x, p, want_indices):
    from poolcli.ops.ranked import sort_pool2d

    return Result(sort_pool2d(x, p["kernel"], p["stride"], p["weights"], p["padding"],
                              p["ceil_mode"]))


def _run_mixed(x, p, want_indices):
    from poolcli.ops.zoo import mixed_pool2d

    return Result(mixed_pool2d(x, *_pool_args(p), p["ceil_mode"], alpha=p["alpha"]))


def _run_softpool(x, p, want_indices):
    from poolcli.ops.zoo import softpool2d

    return Result(softpool2d(x, p["kernel"], p["stride"], p["ceil_mode"]))


def _run_gem(x, p, want_indices):
    from poolcli.ops.zoo import gem_pool2d

    return Result(gem_pool2d(x, p["kernel"], p["stride"], p["ceil_mode"], p=p["p"]))


def _run_lse(x, p, want_indices):
    from poolcli.ops.zoo import lse_pool2d

    return Result(lse_pool2d(x, p["kernel"], p["stride"], p["ceil_mode"], r=p["r"]))


def _run_blur(x, p, want_indices):
    from poolcli.ops.zoo import blur_pool2d

    k = p["kernel"]
    if k[0] != k[1]:
        raise ValueError(f"blur needs a square kernel, got {k[0]}x{k[1]}")
    stride = p["stride"] or (2, 2)
    if stride[0] != stride[1]:
        raise ValueError(f"blur needs one stride for both axes, got {stride[0]}x{stride[1]}")
    return Result(blur_pool2d(x, k[0], stride[0]))


def _affine(p: dict) -> dict:
    return {"eps": p["eps"], "weight": p.get("gamma"), "bias": p.get("beta")}


def _run_instance(x, p, want_indices):
    from poolcli.ops.norm import instance_norm

    return Result(instance_norm(x, **_affine(p)))


def _run_layer(x, p, want_indices):
    from poolcli.ops.norm import layer_norm

    return Result(layer_norm(x, **_affine(p)))


def _run_group(x, p, want_indices):
    from poolcli.ops.norm import group_norm

    return Result(group_norm(x, p["groups"], **_affine(p)))


def _run_batch(x, p, want_indices):
    """Batch norm over ``x`` as one batch (N, H, W, C), training statistics."""
    from poolcli.ops.norm import batch_norm

    return Result(batch_norm(x, None, None, training=True, **_affine(p)))


_WINDOW = ("kernel", "stride", "padding", "dilation", "ceil_mode")
_NORM = ("eps", "gamma", "beta")

OPERATORS: list[Operator] = [
    Operator("max", "pool", "Max pooling: the largest value of each window.",
             "torch.nn.functional.max_pool2d", _WINDOW, _run_max, selects=True),
    Operator("avg", "pool", "Average (mean) pooling of each window.",
             "torch.nn.functional.avg_pool2d",
             ("kernel", "stride", "padding", "ceil_mode", "count_include_pad"), _run_avg,
             aliases=("mean",)),
    Operator("min", "pool", "Min pooling: the smallest value of each window.",
             "-max_pool2d(-x), without the negation overflow", _WINDOW, _run_min, selects=True),
    Operator("lp", "pool", "Power-average pooling: (sum |x|^p)^(1/p) over each window.",
             "torch.nn.functional.lp_pool2d (Boureau et al. 2010)",
             ("norm_type", "kernel", "stride", "ceil_mode"), _run_lp),
    Operator("gap", "pool", "Global average pooling: one mean per channel (Lin et al. 2013).",
             "Network in Network, arXiv:1312.4400", (), _run_gap),
    Operator("gmp", "pool", "Global max pooling: one maximum per channel.",
             "torch.nn.functional.adaptive_max_pool2d(x, 1)", (), _run_gmp, selects=True),
    Operator("adaptive-avg", "pool", "Adaptive average pooling to a fixed output size.",
             "torch.nn.functional.adaptive_avg_pool2d", ("output_size",), _run_adaptive_avg),
    Operator("adaptive-max", "pool", "Adaptive max pooling to a fixed output size.",
             "torch.nn.functional.adaptive_max_pool2d", ("output_size",), _run_adaptive_max,
             selects=True),
    Operator("stochastic", "pool",
             "Stochastic pooling: sample a cell with probability a/sum(a) (test: weighted mean).",
             "Zeiler & Fergus, ICLR 2013, arXiv:1301.3557; Caffe StoPoolForwardTrain/Test",
             ("kernel", "stride", "padding", "ceil_mode", "mode", "seed"), _run_stochastic,
             selects=True),
    Operator("kmax", "pool",
             "K-max pooling: the k largest values of each row (or column), in original order.",
             "Kalchbrenner et al., ACL 2014 (DCNN), arXiv:1404.2188",
             ("k", "axis", "k_top", "layer", "layers"), _run_kmax, selects=True),
    Operator("sort", "pool", "Sort pooling: weighted sum of each window's largest values.",
             "Singla 2017 (sort_pool2d); weights largest first",
             ("kernel", "stride", "padding", "ceil_mode", "weights"), _run_sort),
    Operator("mixed", "pool", "Mixed pooling: alpha*max + (1-alpha)*avg.",
             "Yu et al., RSKT 2014, 'Mixed pooling for CNNs'",
             ("kernel", "stride", "padding", "ceil_mode", "alpha"), _run_mixed),
    Operator("softpool", "pool", "SoftPool: softmax-weighted sum sum(e^a a)/sum(e^a).",
             "Stergiou et al., ICCV 2021, arXiv:2101.00440",
             ("kernel", "stride", "ceil_mode"), _run_softpool),
    Operator("gem", "pool", "Generalized-mean pooling: mean(clamp(x, eps)^p)^(1/p).",
             "Radenović et al., TPAMI 2018, arXiv:1711.02512",
             ("kernel", "stride", "ceil_mode", "p"), _run_gem),
    Operator("lse", "pool", "Log-sum-exp pooling: (1/r) log mean(e^(r x)).",
             "Pinheiro & Collobert, CVPR 2015, arXiv:1411.6228",
             ("kernel", "stride", "ceil_mode", "r"), _run_lse),
    Operator("blur", "pool", "BlurPool: binomial low-pass filter, then subsample (anti-aliased).",
             "Zhang, ICML 2019, 'Making CNNs shift-invariant again', arXiv:1904.11486",
             ("kernel", "stride"), _run_blur),
    Operator("instance", "norm",
             "Instance (contrast) normalization: each channel of each image to mean 0, var 1.",
             "Ulyanov et al. 2016, arXiv:1607.08022; torch.nn.functional.instance_norm",
             _NORM, _run_instance, aliases=("contrast",)),
    Operator("batch", "norm",
             "Batch normalization: channels normalized with statistics of the whole batch.",
             "Ioffe & Szegedy 2015, arXiv:1502.03167; torch.nn.functional.batch_norm",
             _NORM, _run_batch),
    Operator("layer", "norm", "Layer normalization: each image over all its pixels and channels.",
             "Ba et al. 2016, arXiv:1607.06450; torch.nn.functional.layer_norm",
             _NORM, _run_layer),
    Operator("group", "norm", "Group normalization: each image over groups of channels.",
             "Wu & He 2018, arXiv:1803.08494; torch.nn.functional.group_norm",
             (*_NORM, "groups"), _run_group),
]


def _index() -> dict[str, Operator]:
    table = {}
    for op in OPERATORS:
        for key in (op.name, *op.aliases):
            table[key] = op
    return table


def get(name: str) -> Operator:
    """The operator called ``name`` (or one of its aliases); KeyError lists the valid names."""
    try:
        return _index()[name]
    except KeyError:
        raise KeyError(f"unknown operator {name!r}; choose from {', '.join(names())}") from None


def names(family: str | None = None, *, aliases: bool = True) -> list[str]:
    """Operator names (and aliases) in registry order, optionally of one family."""
    out = []
    for op in OPERATORS:
        if family is None or op.family == family:
            out.append(op.name)
            if aliases:
                out.extend(op.aliases)
    return out


def params_for(family: str) -> list[Param]:
    """The union of parameters used by a family's operators, in ``PARAMS`` order."""
    used = {name for op in OPERATORS if op.family == family for name in op.params}
    return [p for name, p in PARAMS.items() if name in used]
