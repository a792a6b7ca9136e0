"""The operator registry: the only place that knows operator names and their parameter rules.

The CLI (options, ``poolcli ops``), the application layer (jobs, pipelines, sheets), ``explain``
and the docs all read it. Adding an operator means writing it in ``poolcli/ops`` and adding one
:class:`Operator` entry here (plus a :class:`Param` if it needs a new option): its run function,
the checks that need no image (:attr:`Operator.checks`, exit 2 before reading), its per-operator
defaults, how ``explain`` draws it and what its worked formula looks like. Nothing else changes.

This module must stay import-light (no numpy): ``poolcli --help`` and ``poolcli ops`` read it.
The ``run`` callables import the core lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Param", "Operator", "Result", "PARAMS", "OPERATORS", "ParamError", "get", "names",
           "params_for", "affine", "describe", "new_seed", "image_seed", "SEED_LIMIT"]


class ParamError(ValueError):
    """A parameter that is wrong whatever the image; ``option`` names the CLI option."""

    def __init__(self, message: str, option: str):
        super().__init__(message)
        self.option = option


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
    maximum: float | None = None
    show: Callable[[Any, dict], str | None] | None = None  # text for labels, or None to omit


@dataclass
class Result:
    """What running an operator gives: the values, optional indices and notes for the report."""

    values: Any
    indices: Any = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Operator:
    """One operator: what it is, its parameters and rules, and how to run and explain it.

    ``explain`` is how ``poolcli explain`` lays it out: ``window`` (fixed windows), ``adaptive``,
    ``kmax``, ``blur`` or ``norm``; ``formula`` names the arithmetic shown for one window
    (``max``, ``min``, ``mean``, ``lp``, ``stochastic``, ``sort``, ``mixed``, ``softpool``,
    ``gem``, ``lse``; anything else shows just the result). ``defaults`` override a
    parameter's global default for this operator; ``checks`` are run by :meth:`check`.
    """

    name: str
    family: str  # "pool" or "norm"
    summary: str
    source: str
    params: tuple[str, ...]
    run: Callable[[Any, dict, bool], Result]
    selects: bool = False  # picks input cells and can return their indices
    aliases: tuple[str, ...] = ()
    explain: str = "window"
    formula: str = ""
    defaults: dict = field(default_factory=dict)
    checks: tuple[Callable[[dict], None], ...] = ()
    selects_if: Callable[[dict], bool] | None = None
    scope: str = ""  # norm: what the statistics are taken over, for explain (str.format(params))
    # Band by band over a large image (app/stream/): "" no; "exact" (a window's arithmetic
    # is order-free: max/min), "int" (exact for integer input, float sums otherwise), "float"
    # (float sums), "blur" (blur's reflect-padded geometry, whole-array arithmetic),
    # "stochastic" (8/16-bit unsigned input; each band's generator advanced to its first row),
    # "adaptive-avg"/"adaptive-max" (bands with the whole image's adaptive windows),
    # "global-avg"/"global-max" (an accumulator over the bands), "rows" (each output row from
    # its own input row alone, when ``axis`` is the width: K-max)
    stream: str = ""

    def resolve(self, params: dict) -> dict:
        """This operator's parameters from ``params``: its own defaults fill what is None or
        missing, the globals the rest."""
        out = {}
        for name in self.params:
            value = params.get(name)
            if value is None:
                value = self.defaults.get(name, PARAMS[name].default)
            out[name] = value
        return out

    def check(self, params: dict) -> None:
        """Raise :class:`ParamError` for parameters wrong whatever the image."""
        _check_common(self, params)
        for check in self.checks:
            check(params)

    def selects_with(self, params: dict) -> bool:
        """Whether this run picks input cells (stochastic pooling's test mode does not)."""
        return self.selects and (self.selects_if is None or self.selects_if(params))


def _floats(v) -> str:
    return ",".join(_num(a) for a in v)


PARAMS: dict[str, Param] = {
    p.name: p
    for p in [
        Param("kernel", ("-k", "--kernel"), "pair", (2, 2), "Window size, N or HxW.", minimum=1,
              show=lambda v, p: f"k={_pair(v)}"),
        Param("stride", ("-s", "--stride"), "pair", None,
              "Step, N or HxW [default: the kernel; blur: 2].", minimum=1,
              show=lambda v, p: f"s={_pair(v or p['kernel'])}"),
        Param("padding", ("-p", "--padding"), "pair", (0, 0),
              "Implicit padding on each side, at most half the kernel.", minimum=0,
              show=lambda v, p: f"p={_pair(v)}" if v and any(v) else None),
        Param("dilation", ("--dilation",), "pair", (1, 1), "Spacing between window taps.",
              minimum=1, show=lambda v, p: f"d={_pair(v)}" if tuple(v) != (1, 1) else None),
        Param("ceil_mode", ("--ceil-mode/--floor-mode",), "bool", False,
              "Round the output size up (PyTorch ceil_mode).",
              show=lambda v, p: "ceil" if v else None),
        Param("count_include_pad", ("--count-include-pad/--no-count-include-pad",), "bool", True,
              "avg: count padding cells in the divisor.",
              show=lambda v, p: ("pad not counted" if not v and any(p.get("padding") or (0, 0))
                                 else None)),
        Param("norm_type", ("--norm-type",), "float", 2.0, "lp: the power p (> 0, inf allowed).",
              minimum=0, show=lambda v, p: f"p={_num(v)}"),
        Param("output_size", ("--output-size",), "size", (32, 32),
              "adaptive: output size, N or HxW.", minimum=1,
              show=lambda v, p: f"out={v[0]}x{v[1]}"),
        Param("mode", ("--mode",), "choice", "train",
              "stochastic: train samples a cell by probability, test weights by probability.",
              choices=("train", "test"), show=lambda v, p: v),
        Param("seed", ("--seed",), "int", None,
              "stochastic: random seed below 2**53 [default: drawn and reported]; each image's "
              "own seed is in its record.", minimum=0, maximum=2**53 - 1,
              show=lambda v, p: (f"seed={v}" if v is not None and p.get("mode", "train") == "train"
                                 else None)),
        Param("k", ("--k",), "int", None,
              "kmax: values kept per row/column [default: dynamic k, or half the length].",
              minimum=1),
        Param("axis", ("--axis",), "choice", "w", "kmax: along the width (w) or height (h).",
              choices=("w", "h"),
              show=lambda v, p: f"along {'width' if v == 'w' else 'height'}"),
        Param("k_top", ("--k-top",), "int", None, "kmax dynamic k: k at the top layer.",
              minimum=1,
              show=lambda v, p: (f"k_top={v} l={p.get('layer')} L={p.get('layers')}"
                                 if v is not None else None)),
        Param("layer", ("--layer",), "int", 1, "kmax dynamic k: this layer l (1-based).",
              minimum=1),
        Param("layers", ("--layers",), "int", 1, "kmax dynamic k: number of layers L.",
              minimum=1),
        Param("weights", ("--weights",), "floats", (0.5, 0.3, 0.2),
              "sort: weights of the largest values, largest first (>= 0).", minimum=0,
              show=lambda v, p: f"w={_floats(v)}"),
        Param("alpha", ("--alpha",), "float", 0.5, "mixed: weight of max (0..1) vs avg.",
              minimum=None, show=lambda v, p: f"alpha={_num(v)}"),
        Param("p", ("--gem-p",), "float", 3.0, "gem: the generalized-mean power p (> 0).",
              minimum=0, show=lambda v, p: f"p={_num(v)}"),
        Param("r", ("--lse-r",), "float", 1.0, "lse: sharpness r (> 0).", minimum=0,
              show=lambda v, p: f"r={_num(v)}"),
        Param("eps", ("--eps",), "float", 1e-5, "Added to the variance (> 0).", minimum=0,
              show=lambda v, p: f"eps={_num(v)}" if v != 1e-5 else None),
        Param("gamma", ("--gamma",), "floats", None,
              "Scale per channel (one value, or one per channel).", minimum=None,
              show=lambda v, p: f"gamma={_floats(v)}" if v is not None else None),
        Param("beta", ("--beta",), "floats", None,
              "Shift per channel (one value, or one per channel).", minimum=None,
              show=lambda v, p: f"beta={_floats(v)}" if v is not None else None),
        Param("groups", ("--groups",), "int", 1, "group: number of channel groups.", minimum=1,
              show=lambda v, p: f"groups={v}"),
    ]
}


# ----------------------------------------------------------------------------------------------
# Checks that need no image (exit 2 before anything is read)
# ----------------------------------------------------------------------------------------------


def _check_common(op: "Operator", p: dict) -> None:
    import math

    k = p.get("kernel")
    if k is not None and "padding" in op.params:
        pad = p.get("padding") or (0, 0)
        if pad[0] > k[0] // 2 or pad[1] > k[1] // 2:
            raise ParamError(f"padding {pad[0]}x{pad[1]} is more than half the kernel "
                             f"{k[0]}x{k[1]} (at most {k[0] // 2}x{k[1] // 2})", "-p")
    for name in ("p", "r", "eps"):
        if name in op.params and p.get(name) is not None and not math.isfinite(p[name]):
            raise ParamError(f"{p[name]}: must be a finite number > 0", PARAMS[name].flags[-1])


def _check_sort(p: dict) -> None:
    w, k = p["weights"], p["kernel"]
    if not any(w):
        raise ParamError(f"{','.join(map(str, w))}: weights must be not all zero", "--weights")
    if len(w) > k[0] * k[1]:
        raise ParamError(f"{len(w)} weights for a {k[0]}x{k[1]} window (at most "
                         f"{k[0] * k[1]})", "--weights")


def _check_mixed(p: dict) -> None:
    if not 0 <= p["alpha"] <= 1:
        raise ParamError(f"{p['alpha']}: alpha must be in 0..1", "--alpha")


def _check_blur(p: dict) -> None:
    k = p["kernel"]
    if k[0] != k[1]:
        raise ParamError(f"{k[0]}x{k[1]}: blur needs a square kernel", "-k")
    if not 1 <= k[0] <= 7:
        raise ParamError(f"{k[0]}: blur kernels are binomial of size 1..7", "-k")
    s = p.get("stride") or (2, 2)
    if s[0] != s[1]:
        raise ParamError(f"{s[0]}x{s[1]}: blur needs one stride for both axes", "-s")


def affine(params: dict, channels: int) -> dict:
    """``eps``, ``weight`` and ``bias`` for a normalization from ``--eps``/``--gamma``/``--beta``:
    one value for all channels or one per channel (a ValueError names the option otherwise)."""
    out = {"eps": params.get("eps", PARAMS["eps"].default)}
    for key, arg in (("gamma", "weight"), ("beta", "bias")):
        v = params.get(key)
        if v is not None and len(v) not in (1, channels):
            valid = "1" if channels == 1 else f"1 or {channels}"
            raise ValueError(f"--{key} has {len(v)} values for a {channels}-channel image "
                             f"(give {valid})")
        out[arg] = None if v is None else (float(v[0]) if len(v) == 1 else list(v))
    return out


def _num(v) -> str:
    from poolcli.formats import fmt_num

    return fmt_num(v)


def _pair(v) -> str:
    return str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"


def describe(op: "Operator", params: dict, info: dict | None = None) -> str:
    """``k=4 s=4 seed=0`` style text of the parameters that matter for ``op``."""
    p = op.resolve(params)
    parts = []
    for name in op.params:
        text = PARAMS[name].show(p[name], p) if PARAMS[name].show else None
        if text:
            parts.append(text)
    if info and "k" in info:
        parts.append(f"k={info['k']}")
    return " ".join(parts)



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


#: Seeds are below 2**53, so every JSON reader (jq, JavaScript) keeps them exact.
SEED_LIMIT = 2**53


def new_seed() -> int:
    """A fresh seed in ``[0, 2**53)`` from OS entropy, reported so the run can be repeated."""
    import secrets

    return secrets.randbelow(SEED_LIMIT)


def image_seed(base: int, index: int) -> int:
    """The seed of the ``index``-th image of a run seeded with ``base``: ``base`` itself for the
    first, an independent stream for the others (SHA-256 of the position, not of the file name,
    so a renamed copy run alone with ``--seed <its seed>`` gives the same picks)."""
    if index == 0:
        return int(base)
    from poolcli.ops.stochastic import derive_seed

    return derive_seed(int(base), f"image {index}") >> 10  # 63 -> 53 bits


def _run_stochastic(x, p, want_indices):
    from poolcli.ops.stochastic import stochastic_pool2d

    train = p["mode"] == "train"
    seed = p.get("seed")
    if seed is None and train:
        seed = new_seed()
    want = want_indices and train
    out = stochastic_pool2d(x, p["kernel"], p["stride"], p["padding"], p["ceil_mode"],
                            mode=p["mode"], seed=seed or 0, return_indices=want)
    res = Result(*out) if want else Result(out)
    if train:
        res.info["seed"] = seed
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

    _check_blur(p)  # square kernel and stride: blur_pool2d takes one size each
    return Result(blur_pool2d(x, p["kernel"][0], (p.get("stride") or (2, 2))[0]))


def _run_instance(x, p, want_indices):
    from poolcli.ops.norm import instance_norm

    return Result(instance_norm(x, **affine(p, x.shape[-1])))


def _run_layer(x, p, want_indices):
    from poolcli.ops.norm import layer_norm

    return Result(layer_norm(x, **affine(p, x.shape[-1])))


def _run_group(x, p, want_indices):
    from poolcli.ops.norm import group_norm

    return Result(group_norm(x, p["groups"], **affine(p, x.shape[-1])))


def _run_batch(x, p, want_indices):
    """Batch norm over ``x`` as one batch (N, H, W, C), training statistics."""
    from poolcli.ops.norm import batch_norm

    return Result(batch_norm(x, None, None, training=True, **affine(p, x.shape[-1])))


_WINDOW = ("kernel", "stride", "padding", "dilation", "ceil_mode")
_NORM = ("eps", "gamma", "beta")

OPERATORS: list[Operator] = [
    Operator("max", "pool", "Max pooling: the largest value of each window.",
             "torch.nn.functional.max_pool2d", _WINDOW, _run_max, selects=True, formula="max",
             stream="exact"),
    Operator("avg", "pool", "Average (mean) pooling of each window.",
             "torch.nn.functional.avg_pool2d",
             ("kernel", "stride", "padding", "ceil_mode", "count_include_pad"), _run_avg,
             aliases=("mean",), formula="mean", stream="int"),
    Operator("min", "pool", "Min pooling: the smallest value of each window.",
             "-max_pool2d(-x), without the negation overflow", _WINDOW, _run_min, selects=True,
             formula="min", stream="exact"),
    Operator("lp", "pool", "Power-average pooling: (sum |x|^p)^(1/p) over each window.",
             "torch.nn.functional.lp_pool2d (Boureau et al. 2010)",
             ("norm_type", "kernel", "stride", "ceil_mode"), _run_lp, formula="lp",
             stream="float"),
    Operator("gap", "pool", "Global average pooling: one mean per channel (Lin et al. 2013).",
             "Network in Network, arXiv:1312.4400", (), _run_gap, explain="global",
             formula="mean", stream="global-avg"),
    Operator("gmp", "pool", "Global max pooling: one maximum per channel.",
             "torch.nn.functional.adaptive_max_pool2d(x, 1)", (), _run_gmp, selects=True,
             explain="global", formula="max", stream="global-max"),
    Operator("adaptive-avg", "pool", "Adaptive average pooling to a fixed output size.",
             "torch.nn.functional.adaptive_avg_pool2d", ("output_size",), _run_adaptive_avg,
             explain="adaptive", formula="mean", stream="adaptive-avg"),
    Operator("adaptive-max", "pool", "Adaptive max pooling to a fixed output size.",
             "torch.nn.functional.adaptive_max_pool2d", ("output_size",), _run_adaptive_max,
             selects=True, explain="adaptive", formula="max", stream="adaptive-max"),
    Operator("stochastic", "pool",
             "Stochastic pooling: sample a cell with probability a/sum(a) (test: weighted mean).",
             "Zeiler & Fergus, ICLR 2013, arXiv:1301.3557; Caffe StoPoolForwardTrain/Test",
             ("kernel", "stride", "padding", "ceil_mode", "mode", "seed"), _run_stochastic,
             selects=True, formula="stochastic", selects_if=lambda p: p.get("mode") != "test",
             stream="stochastic"),
    Operator("kmax", "pool",
             "K-max pooling: the k largest values of each row (or column), in original order.",
             "Kalchbrenner et al., ACL 2014 (DCNN), arXiv:1404.2188",
             ("k", "axis", "k_top", "layer", "layers"), _run_kmax, selects=True,
             explain="kmax", stream="rows"),
    Operator("sort", "pool", "Sort pooling: weighted sum of each window's largest values.",
             "Singla 2017 (sort_pool2d); weights largest first",
             ("kernel", "stride", "padding", "ceil_mode", "weights"), _run_sort,
             formula="sort", checks=(_check_sort,), stream="float"),
    Operator("mixed", "pool", "Mixed pooling: alpha*max + (1-alpha)*avg.",
             "Yu et al., RSKT 2014, 'Mixed pooling for CNNs'",
             ("kernel", "stride", "padding", "ceil_mode", "alpha"), _run_mixed,
             formula="mixed", checks=(_check_mixed,), stream="int"),
    Operator("softpool", "pool", "SoftPool: softmax-weighted sum sum(e^a a)/sum(e^a).",
             "Stergiou et al., ICCV 2021, arXiv:2101.00440",
             ("kernel", "stride", "ceil_mode"), _run_softpool, formula="softpool",
             stream="float"),
    Operator("gem", "pool", "Generalized-mean pooling: mean(clamp(x, eps)^p)^(1/p).",
             "Radenović et al., TPAMI 2018, arXiv:1711.02512",
             ("kernel", "stride", "ceil_mode", "p"), _run_gem, formula="gem", stream="float"),
    Operator("lse", "pool", "Log-sum-exp pooling: (1/r) log mean(e^(r x)).",
             "Pinheiro & Collobert, CVPR 2015, arXiv:1411.6228",
             ("kernel", "stride", "ceil_mode", "r"), _run_lse, formula="lse", stream="float"),
    Operator("blur", "pool", "BlurPool: binomial low-pass filter, then subsample (anti-aliased).",
             "Zhang, ICML 2019, 'Making CNNs shift-invariant again', arXiv:1904.11486",
             ("kernel", "stride"), _run_blur, explain="blur", defaults={"stride": (2, 2)},
             checks=(_check_blur,), stream="blur"),
    Operator("instance", "norm",
             "Instance (contrast) normalization: each channel of each image to mean 0, var 1.",
             "Ulyanov et al. 2016, arXiv:1607.08022; torch.nn.functional.instance_norm",
             _NORM, _run_instance, aliases=("contrast",), explain="norm",
             scope="this image's channel"),
    Operator("batch", "norm",
             "Batch normalization: channels normalized with statistics of the whole batch.",
             "Ioffe & Szegedy 2015, arXiv:1502.03167; torch.nn.functional.batch_norm",
             _NORM, _run_batch, explain="norm",
             scope="the batch (N, H, W); a batch of this one image"),
    Operator("layer", "norm", "Layer normalization: each image over all its pixels and channels.",
             "Ba et al. 2016, arXiv:1607.06450; torch.nn.functional.layer_norm",
             _NORM, _run_layer, explain="norm",
             scope="all pixels and channels of the image (one channel here)"),
    Operator("group", "norm", "Group normalization: each image over groups of channels.",
             "Wu & He 2018, arXiv:1803.08494; torch.nn.functional.group_norm",
             (*_NORM, "groups"), _run_group, explain="norm",
             scope="each of {groups} channel group(s) (one channel here)"),
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
