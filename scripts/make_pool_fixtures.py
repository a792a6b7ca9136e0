#!/usr/bin/env python
"""Generate ``tests/fixtures/pool_torch.npz``: PyTorch reference results for poolcli's operators.

Development tool only: it imports torch (the pinned reference, see ``pyproject.toml`` extra
``torch``); nothing under ``poolcli/`` may. Run from the repository root::

    python scripts/make_pool_fixtures.py            # writes tests/fixtures/pool_torch.npz
    python scripts/make_pool_fixtures.py -o other.npz --seed 20240601

The output is deterministic for a given seed and torch version.

Fixture layout
--------------
A compressed ``.npz``. Every array is stored in poolcli's CHANNELS-LAST layout ``(N, H, W, C)``
(torch works in NCHW; inputs are handed to torch as ``torch.from_numpy(x.transpose(0, 3, 1, 2))``
and results come back through ``.permute(0, 2, 3, 1)``). Index arrays are int64 and hold PyTorch's
flat ``h * W + w`` position inside the unpadded input plane of each (n, c): layout-independent
values, only the array is transposed.

Array keys are ``"<case id>__<name>"``, e.g. ``"max_pool2d-017__x"``. Alongside the arrays:

``meta``      0-d unicode array, a JSON object: ``torch_version``, ``numpy_version``, ``seed``,
              ``layout`` ("NHWC"), ``index_rule`` and case counts.
``cases``     0-d unicode array, a JSON list of cases. Each case is an object::

                {"id": "max_pool2d-017", "op": "max_pool2d",
                 "label": "k(2, 3) s2 p(1, 0) d1 ceil f32 nan",   # human-readable summary
                 "params": {...},       # keyword arguments of the poolcli call (lists = tuples)
                 "arrays": {"x": "<key>", "values": "<key>", "indices": "<key>", ...},
                 "dtype": "float32", "input_shape": [N, H, W, C], "tags": ["nan", ...]}

              Tags worth knowing: ``edge`` (hand-picked), ``nan``/``multi-nan``/``-inf``/``ties``,
              ``all-padding-window`` (max/min only: with dilation some window holds no input
              cell; torch returns -inf / +inf and an index outside the plane or aliasing a cell
              that is not in the window, so tests accept either that or a ValueError),
              ``none-axis`` (adaptive output_size with a null axis).

              ``op`` is one of:

              * ``max_pool2d``   params: kernel_size, stride, padding, dilation, ceil_mode.
                                 arrays: x, values, indices (from return_indices=True).
              * ``min_pool2d``   same params; reference is ``-max_pool2d(-x)`` (values and
                                 indices; integer inputs are negated in int32 and cast back).
                                 Its ``x`` key points at the matching max_pool2d case's input.
              * ``avg_pool2d``   params: kernel_size, stride, padding, ceil_mode,
                                 count_include_pad, divisor_override. arrays: x, values.
              * ``lp_pool2d``    params: norm_type, kernel_size, stride, ceil_mode (ceil_mode=True
                                 only where it creates no partial window). arrays: x, values.
              * ``adaptive_avg_pool2d``  params: output_size (may hold null for "same as input",
                                 as torch allows); extra field ``resolved_output_size`` [oh, ow].
                                 arrays: x, values.
              * ``adaptive_max_pool2d``  same, arrays: x, values, indices.
              * ``max_unpool2d`` params: kernel_size, stride, padding, output_size (the original
                                 input's (H, W), or null for torch's default size); extra field
                                 ``pool_params`` (the max_pool2d call that made the input).
                                 arrays: values (pooled values = unpool input), indices, result.
              * ``max_pool2d_backward``  params as max_pool2d (dilation 1); float64 input without
                                 ties. arrays: x, values, indices, grad (d/dx of
                                 ``max_pool2d(x).sum()``), which equals
                                 ``max_unpool2d(ones_like(values), indices, ..., output_size=(H, W),
                                 reduce="sum")``.

``rejected``  0-d unicode array, a JSON list of parameter combinations PyTorch refuses::

                {"id": "rejected-max_pool2d-003", "op": "max_pool2d", "params": {...},
                 "input_shape": [N, H, W, C], "dtype": "float32",
                 "error": "<torch's exception type>: <message>", "kind": "...",
                 "arrays": {...}}      # only for max_unpool2d rejections

              ``kind`` is one of ``padding`` (pad > kernel // 2), ``output_size`` (output < 1),
              ``kernel``, ``stride``, ``dilation``, ``negative_padding``, ``divisor``,
              ``adaptive_size`` (negative adaptive output), and for ``max_unpool2d``:
              ``invalid_index`` (an index does not fit the requested plane: poolcli must reject
              these too; arrays ``values``/``indices`` and params are stored; one of them is a
              default output size of 0, for which torch silently returns an empty tensor) and
              ``output_size_range`` (torch's Python-side rule that output_size lies strictly
              within default +- stride; informational, poolcli need not copy it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "pool_torch.npz"
DEFAULT_SEED = 20240611
MAX_BYTES = 1_500_000

N_RANDOM = {
    "max_pool2d": 110,
    "avg_pool2d": 90,
    "lp_pool2d": 70,
    "adaptive_avg_pool2d": 70,
    "adaptive_max_pool2d": 80,
    "max_unpool2d": 60,
    "max_pool2d_backward": 24,
}
MAX_RANDOM_REJECTED = 12  # per op, on top of the hand-picked ones


# ----------------------------------------------------------------------------- helpers

def to_torch(x: np.ndarray) -> torch.Tensor:
    """NHWC numpy -> NCHW torch view (channels-last strides, no copy)."""
    return torch.from_numpy(x.transpose(0, 3, 1, 2))


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """NCHW torch -> NHWC numpy (contiguous copy)."""
    return np.ascontiguousarray(t.detach().permute(0, 2, 3, 1).numpy())


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def jsonable(v):
    if isinstance(v, tuple):
        return [jsonable(e) for e in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def short(dtype) -> str:
    return {"float32": "f32", "float64": "f64", "uint8": "u8", "int16": "i16"}[np.dtype(dtype).name]


def fmt(v) -> str:
    return str(v) if isinstance(v, int) or v is None else str(tuple(v))


def classify(msg: str) -> str:
    m = msg.lower()
    if "pad must be non-negative" in m:
        return "negative_padding"
    if "pad should" in m:
        return "padding"
    if "output size is too small" in m:
        return "output_size"
    if "kernel size" in m:
        return "kernel"
    if "stride" in m:
        return "stride"
    if "dilation" in m:
        return "dilation"
    if "divisor" in m:
        return "divisor"
    if "output_size" in m or "negative dimension" in m or "greater than or equal to 0" in m:
        return "adaptive_size"
    return "other"


def torch_error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"


class Store:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.cases: list[dict] = []
        self.rejected: list[dict] = []
        self.counters: dict[str, int] = {}

    def new_id(self, op: str) -> str:
        n = self.counters.get(op, 0)
        self.counters[op] = n + 1
        return f"{op}-{n:03d}"

    def add(self, op, params, arrays, *, label, dtype, input_shape, tags=(), shared=None, **extra):
        cid = self.new_id(op)
        keys = dict(shared or {})
        for name, arr in arrays.items():
            key = f"{cid}__{name}"
            self.arrays[key] = np.ascontiguousarray(arr)
            keys[name] = key
        case = {
            "id": cid,
            "op": op,
            "label": label,
            "params": {k: jsonable(v) for k, v in params.items()},
            "arrays": keys,
            "dtype": np.dtype(dtype).name,
            "input_shape": [int(s) for s in input_shape],
            "tags": sorted(set(tags)),
        }
        case.update({k: jsonable(v) for k, v in extra.items()})
        self.cases.append(case)
        return case

    def reject(self, op, params, input_shape, dtype, exc, *, kind=None, arrays=None, **extra):
        n = sum(1 for r in self.rejected if r["op"] == op)
        rid = f"rejected-{op}-{n:03d}"
        msg = torch_error(exc)
        entry = {
            "id": rid,
            "op": op,
            "params": {k: jsonable(v) for k, v in params.items()},
            "input_shape": [int(s) for s in input_shape],
            "dtype": np.dtype(dtype).name,
            "error": msg,
            "kind": kind or classify(msg),
        }
        if arrays:
            entry["arrays"] = {}
            for name, arr in arrays.items():
                key = f"{rid}__{name}"
                self.arrays[key] = np.ascontiguousarray(arr)
                entry["arrays"][name] = key
        entry.update({k: jsonable(v) for k, v in extra.items()})
        self.rejected.append(entry)


# ----------------------------------------------------------------------------- torch calls

def torch_max(x, p):
    """max_pool2d values+indices; also cross-checks the contiguous (NCHW) kernel.

    Integer inputs go through float64 (exact for uint8/int16, same tie rule): torch 2.13's
    channels-last integer kernel fails with "Expected input_depth * input_height * input_width <=
    std::numeric_limits<integer_t>::max()" once C*H*W exceeds the dtype's range.
    """
    if np.issubdtype(x.dtype, np.integer):
        v, i = torch_max(x.astype(np.float64), p)
        return v.astype(x.dtype), i
    t = to_torch(x)
    v, i = F.max_pool2d(t, p["kernel_size"], p["stride"], p["padding"], p["dilation"],
                        p["ceil_mode"], return_indices=True)
    v2, i2 = F.max_pool2d(t.contiguous(), p["kernel_size"], p["stride"], p["padding"],
                          p["dilation"], p["ceil_mode"], return_indices=True)
    assert torch.equal(i, i2), "channels-last and contiguous kernels disagree on indices"
    assert np.array_equal(v.numpy(), v2.numpy(), equal_nan=True)
    return to_numpy(v), to_numpy(i)


def torch_min(x, p):
    if np.issubdtype(x.dtype, np.integer):
        neg = (-x.astype(np.int32))
        v, i = torch_max(neg, p)
        return (-v).astype(x.dtype), i
    v, i = torch_max(-x, p)
    return -v, i


def torch_avg(x, p):
    t = to_torch(x)
    v = F.avg_pool2d(t, p["kernel_size"], p["stride"], p["padding"], p["ceil_mode"],
                     p["count_include_pad"], p["divisor_override"])
    return to_numpy(v)


def torch_lp(x, p):
    v = F.lp_pool2d(to_torch(x), p["norm_type"], p["kernel_size"], p["stride"], p["ceil_mode"])
    return to_numpy(v)


def torch_size_arg(o):
    return o if isinstance(o, int) else tuple(o)


def torch_aavg(x, o):
    return to_numpy(F.adaptive_avg_pool2d(to_torch(x), torch_size_arg(o)))


def torch_amax(x, o):
    t = to_torch(x)
    v, i = F.adaptive_max_pool2d(t, torch_size_arg(o), return_indices=True)
    v2, i2 = F.adaptive_max_pool2d(t.contiguous(), torch_size_arg(o), return_indices=True)
    assert torch.equal(i, i2), "adaptive_max_pool2d: channels-last and contiguous disagree"
    return to_numpy(v), to_numpy(i)


# ----------------------------------------------------------------------------- random inputs

def rand_shape(rng, hmax=13, wmax=13):
    n = int(rng.choice([1, 2]))
    c = int(rng.choice([1, 3, 4]))
    return (n, int(rng.integers(1, hmax + 1)), int(rng.integers(1, wmax + 1)), c)


def rand_int_or_pair(rng, lo, hi, p_pair=0.4):
    if rng.random() < p_pair:
        return (int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1)))
    return int(rng.integers(lo, hi + 1))


def rand_pool_params(rng, *, dilation=True, max_k=4, max_s=4):
    k = rand_int_or_pair(rng, 1, max_k)
    kh, kw = pair(k)
    stride = None if rng.random() < 0.3 else rand_int_or_pair(rng, 1, max_s)
    ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
    padding = ph if ph == pw and rng.random() < 0.6 else (ph, pw)
    p = {"kernel_size": k, "stride": stride, "padding": padding}
    if dilation:
        p["dilation"] = 1 if rng.random() < 0.5 else rand_int_or_pair(rng, 1, 3)
    p["ceil_mode"] = bool(rng.random() < 0.5)
    return p


def tie_input(rng, shape, dtype=np.float32, hi=4):
    """Small integers: lots of ties inside windows."""
    return rng.integers(0, hi, size=shape).astype(dtype)


def max_input(rng, shape):
    """Input for max/min pooling cases, with tags."""
    r = rng.random()
    tags = ["ties"]
    if r < 0.12:
        x = tie_input(rng, shape, np.float64)
        tags.append("float64")
    elif r < 0.20:
        x = tie_input(rng, shape, np.uint8, hi=256 if rng.random() < 0.5 else 4)
        tags.append("uint8")
    else:
        x = tie_input(rng, shape, np.float32)
    if x.dtype.kind == "f":
        r = rng.random()
        if r < 0.18:  # NaNs, often several in a window
            m = rng.random(shape) < rng.choice([0.1, 0.3, 0.6])
            x[m] = np.nan
            tags.append("nan")
        elif r < 0.30:
            m = rng.random(shape) < rng.choice([0.2, 0.5, 0.9])
            x[m] = -np.inf
            tags.append("-inf")
            if rng.random() < 0.4:
                x[rng.random(shape) < 0.1] = np.inf
                tags.append("+inf")
    return x, tags


# ----------------------------------------------------------------------------- case builders

def pool_label(p, dtype, tags=()):
    s = f"k{fmt(p['kernel_size'])} s{fmt(p['stride'])} p{fmt(p['padding'])}"
    if "dilation" in p:
        s += f" d{fmt(p['dilation'])}"
    if p.get("ceil_mode"):
        s += " ceil"
    if p.get("count_include_pad") is False:
        s += " nopad"
    if p.get("divisor_override") is not None:
        s += f" div{p['divisor_override']}"
    s += " " + short(dtype)
    extra = [t for t in tags if t not in ("ties", "float64", "uint8")]
    return s + ("" if not extra else " " + " ".join(extra))


def empty_windows(n, k, s, p, d, ceil_mode) -> bool:
    """True if some output window along this axis holds no input cell at all (only padding).

    Possible only with dilation > 1 (e.g. n=2, k=2, d=3, p=1: rows -1 and 2). torch then returns
    -inf (+inf for -max(-x)) and an index *outside* the plane (it walks the first row/column past
    the padding without checking the end), so such cases are tagged ``all-padding-window``.
    """
    s = k if s is None else s
    out = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    for o in range(max(out, 0)):
        start = o * s - p
        if not any(0 <= start + j * d < n for j in range(k)):
            return True
    return False


def has_empty_window(shape, p) -> bool:
    (kh, kw), (ph, pw), (dh, dw) = pair(p["kernel_size"]), pair(p["padding"]), pair(p["dilation"])
    sh, sw = pair(p["stride"]) if p["stride"] is not None else (kh, kw)
    return empty_windows(shape[1], kh, sh, ph, dh, p["ceil_mode"]) or \
        empty_windows(shape[2], kw, sw, pw, dw, p["ceil_mode"])


def add_max_case(st: Store, x, p, tags, *, with_min=True):
    """Store a max_pool2d case (+ its min_pool2d mirror). Returns torch's error if it rejects."""
    tags = list(tags)
    if has_empty_window(x.shape, p):
        if x.dtype.kind != "f":  # -inf does not fit an integer dtype; not worth storing
            return None
        tags.append("all-padding-window")
    try:
        v, i = torch_max(x, p)
    except RuntimeError as exc:
        return exc
    if np.prod(v.shape[1:3]) == 1:
        tags.append("output1x1")
    case = st.add("max_pool2d", p, {"x": x, "values": v, "indices": i},
                  label=pool_label(p, x.dtype, tags), dtype=x.dtype, input_shape=x.shape, tags=tags)
    if with_min:
        mv, mi = torch_min(x, p)
        st.add("min_pool2d", p, {"values": mv, "indices": mi}, shared={"x": case["arrays"]["x"]},
               label=pool_label(p, x.dtype, tags), dtype=x.dtype, input_shape=x.shape,
               tags=tags, reference="-max_pool2d(-x)", source_case=case["id"])
    return None


def build_max(st: Store, rng):
    # ---- hand-picked edge cases
    nan, inf = np.nan, np.inf
    f32 = np.float32
    edge = []
    # several NaNs in one window: which index does torch return?
    a = np.array([[nan, 1, nan, nan], [2, nan, 0, nan]], f32)
    edge.append((a, {"kernel_size": (2, 4)}, ["nan", "multi-nan"]))
    edge.append((a, {"kernel_size": 2}, ["nan", "multi-nan"]))
    edge.append((a, {"kernel_size": 3, "stride": 1, "padding": 1}, ["nan", "multi-nan", "padding"]))
    b = np.array([[1, nan, 2, nan], [nan, 5, nan, 0], [3, 3, nan, 3]], f32)
    edge.append((b, {"kernel_size": (3, 4)}, ["nan", "multi-nan"]))
    edge.append((b, {"kernel_size": 2, "stride": 1}, ["nan", "multi-nan"]))
    edge.append((b, {"kernel_size": 2, "stride": 1, "dilation": 2}, ["nan", "multi-nan"]))
    c = np.full((3, 3), nan, f32)
    edge.append((c, {"kernel_size": 3, "stride": 1, "padding": 1}, ["nan", "all-nan"]))
    # -inf everywhere: value -inf, index = first real cell of the window (padding never wins)
    d = np.full((4, 5), -inf, f32)
    edge.append((d, {"kernel_size": 3, "stride": 2, "padding": 1}, ["-inf", "padding"]))
    edge.append((d, {"kernel_size": 3, "stride": 1, "padding": 1, "ceil_mode": True}, ["-inf", "padding"]))
    e = np.array([[-inf, -inf, 7], [-inf, nan, -inf], [inf, -inf, -inf]], f32)
    edge.append((e, {"kernel_size": 2, "stride": 1, "padding": 1}, ["-inf", "nan", "+inf", "padding"]))
    # ties everywhere, with padding, dilation, ceil
    t = np.zeros((5, 6), f32)
    edge.append((t, {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, ["ties", "padding"]))
    edge.append((t, {"kernel_size": 2, "stride": 1, "dilation": 2, "padding": 1}, ["ties", "dilation"]))
    # negative values next to padding: padded cells (which would be -inf / 0) never win
    neg = -np.arange(1, 26, dtype=f32).reshape(5, 5)
    edge.append((neg, {"kernel_size": 3, "stride": 2, "padding": 1}, ["negative", "padding"]))
    # ceil_mode drops the last window when it would start in the right padding: n=5 k2 s2 p1
    g = np.arange(25, dtype=f32).reshape(5, 5)
    edge.append((g, {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True}, ["ceil-drop"]))
    edge.append((g, {"kernel_size": 2, "stride": 2, "padding": 0, "ceil_mode": True}, ["ceil-partial"]))
    edge.append((g, {"kernel_size": 3, "stride": 3, "padding": 1, "ceil_mode": True}, ["ceil-partial"]))
    # kernel larger than the input, output 1x1
    h1 = np.array([[3, 1], [4, 1]], f32)
    edge.append((h1, {"kernel_size": 4, "stride": 4, "padding": 2}, ["kernel>input", "output1x1"]))
    edge.append((np.array([[2.0]], f32), {"kernel_size": 3, "stride": 3, "ceil_mode": True},
                 ["kernel>input", "output1x1"]))
    edge.append((np.array([[5, 9, 9]], f32), {"kernel_size": (1, 4), "stride": 4, "ceil_mode": True},
                 ["kernel>input", "output1x1", "ties"]))
    edge.append((h1, {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
                 ["kernel>input", "ceil-drop"]))
    # 1x1 input, stride > kernel (gaps), big dilation
    edge.append((np.array([[7.0]], f32), {"kernel_size": 1}, ["1x1"]))
    edge.append((np.arange(13 * 13, dtype=f32).reshape(13, 13) % 7,
                 {"kernel_size": 2, "stride": 4}, ["gaps"]))
    edge.append((np.arange(13 * 11, dtype=f32).reshape(13, 11) % 5,
                 {"kernel_size": 3, "stride": 2, "dilation": 3, "padding": 1, "ceil_mode": True},
                 ["dilation"]))
    # dilation lets a window hold only padding (rows -1 and 2 of a 2-row input): torch gives -inf
    # and an index outside the plane. Tagged "all-padding-window"; the tests accept either
    # torch's output or a ValueError from poolcli.
    edge.append((np.arange(24, dtype=f32).reshape(2, 12) % 5,
                 {"kernel_size": (2, 4), "stride": 4, "padding": 1, "dilation": 3, "ceil_mode": True},
                 ["dilation"]))
    edge.append((np.ones((5, 2), f32), {"kernel_size": 2, "stride": 1, "padding": 1, "dilation": 3},
                 ["dilation"]))
    # float64 and uint8
    edge.append((np.array([[1e-300, -1e300], [1e300, 1e300]], np.float64), {"kernel_size": 2},
                 ["float64", "ties"]))
    edge.append((np.array([[0, 255, 255], [255, 0, 3]], np.uint8), {"kernel_size": 2, "stride": 1,
                                                                     "padding": 1}, ["uint8", "ties"]))
    for arr, p, tags in edge:
        full = {"kernel_size": p["kernel_size"], "stride": p.get("stride"),
                "padding": p.get("padding", 0), "dilation": p.get("dilation", 1),
                "ceil_mode": p.get("ceil_mode", False)}
        x = np.ascontiguousarray(arr[None, :, :, None])
        if rng.random() < 0.5:  # the same plane in 3 channels
            x = np.concatenate([x, x, x], axis=3)
        err = add_max_case(st, x, full, tags + ["edge"])
        assert err is None, (p, err)

    # ---- random cases
    made = n_rej = 0
    while made < N_RANDOM["max_pool2d"]:
        shape = rand_shape(rng)
        p = rand_pool_params(rng)
        x, tags = max_input(rng, shape)
        err = add_max_case(st, x, p, tags)
        if err is None:
            made += 1
        elif n_rej < MAX_RANDOM_REJECTED:
            n_rej += 1
            st.reject("max_pool2d", p, shape, x.dtype, err)


def build_avg(st: Store, rng):
    edge = [
        # count_include_pad divisor of ceil-mode partial windows: clipped to [-p, n+p)
        ((5, 5), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
        ((5, 5), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                  "count_include_pad": False}),
        ((6, 6), {"kernel_size": 4, "stride": 3, "padding": 2, "ceil_mode": True}),
        ((5, 5), {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True}),  # drop
        ((5, 7), {"kernel_size": (2, 3), "stride": (3, 2), "padding": (1, 1), "ceil_mode": True}),
        ((4, 4), {"kernel_size": 3, "padding": 1, "divisor_override": 2}),
        ((4, 4), {"kernel_size": 3, "padding": 1, "divisor_override": 7, "count_include_pad": False}),
        ((1, 1), {"kernel_size": 3, "stride": 3, "ceil_mode": True}),
        ((2, 2), {"kernel_size": 4, "stride": 4, "padding": 2}),
        ((2, 3), {"kernel_size": 4, "stride": 4, "padding": 2, "count_include_pad": False}),
        ((13, 13), {"kernel_size": 1, "stride": 3}),
    ]
    for (h, w), p in edge:
        full = {"kernel_size": p["kernel_size"], "stride": p.get("stride"),
                "padding": p.get("padding", 0), "ceil_mode": p.get("ceil_mode", False),
                "count_include_pad": p.get("count_include_pad", True),
                "divisor_override": p.get("divisor_override")}
        x = rng.standard_normal((1, h, w, 3)).astype(np.float32)
        v = torch_avg(x, full)
        st.add("avg_pool2d", full, {"x": x, "values": v}, label=pool_label(full, x.dtype),
               dtype=x.dtype, input_shape=x.shape, tags=["edge"])
    made = n_rej = 0
    while made < N_RANDOM["avg_pool2d"]:
        shape = rand_shape(rng)
        p = rand_pool_params(rng, dilation=False)
        p["count_include_pad"] = bool(rng.random() < 0.5)
        p["divisor_override"] = None if rng.random() < 0.6 else int(rng.integers(1, 8))
        dtype = np.float64 if rng.random() < 0.25 else np.float32
        x = (rng.standard_normal(shape) * 3).astype(dtype)
        try:
            v = torch_avg(x, p)
        except RuntimeError as exc:
            if n_rej < MAX_RANDOM_REJECTED:
                n_rej += 1
                st.reject("avg_pool2d", p, shape, dtype, exc)
            continue
        st.add("avg_pool2d", p, {"x": x, "values": v}, label=pool_label(p, dtype), dtype=dtype,
               input_shape=shape)
        made += 1


def build_lp(st: Store, rng):
    made = n_rej = 0
    n_ceil = 0
    while made < N_RANDOM["lp_pool2d"] or n_ceil < 8:
        shape = rand_shape(rng)
        k = rand_int_or_pair(rng, 1, 4)
        stride = None if rng.random() < 0.3 else rand_int_or_pair(rng, 1, 4)
        norm = float(rng.choice([1, 2, 3, 1.5]))
        norm = int(norm) if norm.is_integer() else norm
        kh, kw = pair(k)
        sh, sw = pair(stride if stride is not None else k)
        # ceil_mode=True only where it creates no partial window (PyTorch's lp over-counts those)
        full_only = shape[1] >= kh and shape[2] >= kw and (shape[1] - kh) % sh == 0 \
            and (shape[2] - kw) % sw == 0
        want_ceil = made >= N_RANDOM["lp_pool2d"]
        if want_ceil and not full_only:
            continue
        p = {"norm_type": norm, "kernel_size": k, "stride": stride, "ceil_mode": bool(want_ceil)}
        dtype = np.float64 if rng.random() < 0.25 else np.float32
        x = rng.uniform(0.05, 2.0, size=shape).astype(dtype)
        try:
            v = torch_lp(x, p)
        except RuntimeError as exc:
            if n_rej < MAX_RANDOM_REJECTED:
                n_rej += 1
                st.reject("lp_pool2d", p, shape, dtype, exc)
            continue
        label = f"p{norm} k{fmt(k)} s{fmt(stride)}" + (" ceil" if want_ceil else "") + " " + short(dtype)
        st.add("lp_pool2d", p, {"x": x, "values": v}, label=label, dtype=dtype, input_shape=shape,
               tags=["ceil-full-windows"] if want_ceil else [])
        if want_ceil:
            n_ceil += 1
        else:
            made += 1


def rand_out_size(rng, n):
    r = rng.random()
    if r < 0.35:
        return int(rng.integers(1, n + 1))  # smaller or equal
    if r < 0.5:
        return n
    if r < 0.85:
        return int(rng.integers(n + 1, 2 * n + 4))  # larger than the input
    return None


def build_adaptive(st: Store, rng, op):
    edge = [((13, 13), 1), ((1, 1), 5), ((7, 5), (3, 2)), ((5, 7), (5, 7)), ((6, 4), (4, 6)),
            ((10, 3), (4, None)), ((3, 10), (None, 4)), ((1, 13), (3, 5)), ((13, 1), (13, 2))]
    made = 0
    cases = [(s, o, True) for s, o in edge]
    while made < N_RANDOM[op]:
        shape = rand_shape(rng)
        oh, ow = rand_out_size(rng, shape[1]), rand_out_size(rng, shape[2])
        if oh is None and ow is None:
            continue
        o = oh if oh == ow else (oh, ow)
        cases.append((shape, o, False))
        made += 1
    for shape, o, is_edge in cases:
        if is_edge:
            shape = (1, *shape, 3)
        tags = ["edge"] if is_edge else []
        if op == "adaptive_max_pool2d":
            x, t2 = max_input(rng, shape)
            if x.dtype == np.uint8:  # torch: adaptive_max_pool2d not implemented for 'Byte'
                x = x.astype(np.float32)
                t2 = [t for t in t2 if t != "uint8"]
            tags += t2
            v, i = torch_amax(x, o)
            arrays = {"x": x, "values": v, "indices": i}
        else:
            dtype = np.float64 if rng.random() < 0.25 else np.float32
            x = (rng.standard_normal(shape) * 3).astype(dtype)
            v = torch_aavg(x, o)
            arrays = {"x": x, "values": v}
        resolved = [int(v.shape[1]), int(v.shape[2])]
        oo = o if isinstance(o, int) or o is None else list(o)
        if isinstance(o, tuple) and None in o:
            tags.append("none-axis")
        label = f"{shape[1]}x{shape[2]} -> {fmt(o)} {short(x.dtype)}"
        st.add(op, {"output_size": oo}, arrays, label=label, dtype=x.dtype, input_shape=shape,
               tags=tags, resolved_output_size=resolved)
    # negative output sizes are errors
    x = np.zeros((1, 4, 4, 1), np.float32)
    for o in [-1, (2, -1)]:
        try:
            (torch_amax if op == "adaptive_max_pool2d" else torch_aavg)(x, o)
        except RuntimeError as exc:
            st.reject(op, {"output_size": o}, x.shape, x.dtype, exc, kind="adaptive_size")


def unpool_label(pp, output_size):
    return pool_label(pp, np.float32) + (" default-size" if output_size is None else "")


def build_unpool(st: Store, rng):
    edge = [((5, 5), {"kernel_size": 2, "stride": 2, "padding": 0, "ceil_mode": True}, True),
            ((5, 5), {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True}, True),
            ((6, 6), {"kernel_size": 3, "stride": 1, "padding": 1, "ceil_mode": False}, True),
            ((6, 8), {"kernel_size": 2, "stride": 2, "padding": 0, "ceil_mode": False}, False),
            ((7, 7), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": False}, True)]
    made = rej_idx = rej_rng = 0
    todo = [(s, p, d, True) for s, p, d in edge]
    while made < N_RANDOM["max_unpool2d"] or rej_idx < 3:
        if todo:
            hw, pp, use_given, is_edge = todo.pop(0)
            shape = (1, *hw, 3)
        else:
            shape = rand_shape(rng)
            pp = rand_pool_params(rng, dilation=False)
            use_given = rng.random() < 0.8
            is_edge = False
        pp = dict(pp, dilation=1)
        x = tie_input(rng, shape, np.float32, hi=int(rng.choice([4, 100])))
        try:
            v, i = torch_max(x, pp)
        except RuntimeError:
            continue
        up = {"kernel_size": pp["kernel_size"], "stride": pp["stride"], "padding": pp["padding"],
              "output_size": [shape[1], shape[2]] if use_given else None}
        os_arg = tuple(up["output_size"]) if use_given else None
        try:
            r = to_numpy(F.max_unpool2d(to_torch(v), to_torch(i), up["kernel_size"], up["stride"],
                                        up["padding"], os_arg))
        except (ValueError, RuntimeError) as exc:
            kind = "output_size_range" if isinstance(exc, ValueError) else "invalid_index"
            if kind == "invalid_index" and rej_idx < 8:
                rej_idx += 1
                st.reject("max_unpool2d", up, v.shape, v.dtype, exc, kind=kind,
                          arrays={"values": v, "indices": i}, pool_params=pp)
            elif kind == "output_size_range" and rej_rng < 4:
                rej_rng += 1
                st.reject("max_unpool2d", up, v.shape, v.dtype, exc, kind=kind,
                          arrays={"values": v, "indices": i}, pool_params=pp)
            continue
        if made >= N_RANDOM["max_unpool2d"] and not is_edge:
            continue
        st.add("max_unpool2d", up, {"values": v, "indices": i, "result": r},
               label=unpool_label(pp, up["output_size"]), dtype=v.dtype, input_shape=v.shape,
               tags=(["edge"] if is_edge else []) + (["default-size"] if not use_given else []),
               pool_params=pp, original_shape=list(shape))
        made += 1


def build_backward(st: Store, rng):
    configs = [(3, 2, 0, False), (3, 2, 1, False), (3, 1, 1, False), (3, 1, 0, False),
               (2, 1, 0, False), (2, 1, 1, False), (3, 2, 1, True), (4, 2, 2, False),
               (4, 1, 2, True), ((3, 2), (2, 1), (1, 1), False), ((2, 3), 1, (0, 1), True),
               (3, None, 1, False)]
    made = 0
    while made < N_RANDOM["max_pool2d_backward"]:
        if made < len(configs):
            k, s, pd, ceil = configs[made]
        else:
            k = rand_int_or_pair(rng, 2, 4)
            kh, kw = pair(k)
            s = rand_int_or_pair(rng, 1, 2)
            pd = (int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1)))
            ceil = bool(rng.random() < 0.5)
        p = {"kernel_size": k, "stride": s, "padding": pd, "dilation": 1, "ceil_mode": ceil}
        n, c = int(rng.choice([1, 2])), int(rng.choice([1, 3]))
        h, w = int(rng.integers(3, 12)), int(rng.integers(3, 12))
        x = rng.permutation(n * h * w * c).reshape(n, h, w, c).astype(np.float64) - (n * h * w * c) // 2
        t = to_torch(x).clone().requires_grad_(True)
        try:
            out, idx = F.max_pool2d(t, k, s, pd, 1, ceil, return_indices=True)
        except RuntimeError:
            continue
        out.sum().backward()
        st.add("max_pool2d_backward", p,
               {"x": x, "values": to_numpy(out), "indices": to_numpy(idx), "grad": to_numpy(t.grad)},
               label=pool_label(p, x.dtype), dtype=x.dtype, input_shape=x.shape,
               tags=["no-ties", "overlapping"])
        made += 1


def build_rejected(st: Store):
    """Hand-picked parameter combinations torch refuses (poolcli must raise ValueError)."""
    mx = [
        ((1, 5, 5, 1), {"kernel_size": 3, "padding": 2}),
        ((1, 5, 5, 1), {"kernel_size": 2, "padding": 2}),
        ((1, 5, 5, 1), {"kernel_size": (3, 4), "padding": (1, 3)}),
        ((1, 9, 9, 1), {"kernel_size": 3, "padding": 2, "dilation": 2}),  # eff. kernel 5, still no
        ((1, 9, 9, 1), {"kernel_size": 2, "padding": 2, "dilation": 3}),
        ((1, 3, 3, 1), {"kernel_size": 5}),
        ((1, 3, 3, 1), {"kernel_size": 4, "stride": 4}),  # floor(-1/4) + 1 = 0 (floor, not trunc)
        ((1, 3, 3, 1), {"kernel_size": 5, "stride": 1, "ceil_mode": True}),
        ((1, 3, 8, 1), {"kernel_size": 2, "dilation": 3}),
        ((1, 4, 4, 1), {"kernel_size": 0}),
        ((1, 4, 4, 1), {"kernel_size": 0, "stride": 1}),
        ((1, 4, 4, 1), {"kernel_size": -1, "stride": 1}),
        ((1, 4, 4, 1), {"kernel_size": 2, "stride": 0}),
        ((1, 4, 4, 1), {"kernel_size": 2, "stride": -1}),
        ((1, 4, 4, 1), {"kernel_size": 2, "dilation": 0}),
        ((1, 4, 4, 1), {"kernel_size": 2, "padding": -1}),
    ]
    for shape, p in mx:
        full = {"kernel_size": p["kernel_size"], "stride": p.get("stride"),
                "padding": p.get("padding", 0), "dilation": p.get("dilation", 1),
                "ceil_mode": p.get("ceil_mode", False)}
        x = np.zeros(shape, np.float32)
        try:
            torch_max(x, full)
        except RuntimeError as exc:
            st.reject("max_pool2d", full, shape, x.dtype, exc)
            st.reject("min_pool2d", full, shape, x.dtype, exc)
        else:
            raise AssertionError(f"torch accepted {full} on {shape}")
    av = [
        ((1, 5, 5, 1), {"kernel_size": 3, "padding": 2}),
        ((1, 5, 5, 1), {"kernel_size": (2, 4), "padding": (2, 1)}),
        ((1, 3, 3, 1), {"kernel_size": 5}),
        ((1, 3, 3, 1), {"kernel_size": 2, "stride": 0}),
        ((1, 3, 3, 1), {"kernel_size": 0, "stride": 1}),
        ((1, 3, 3, 1), {"kernel_size": 2, "padding": -1}),
        ((1, 3, 3, 1), {"kernel_size": 2, "divisor_override": 0}),
    ]
    for shape, p in av:
        full = {"kernel_size": p["kernel_size"], "stride": p.get("stride"),
                "padding": p.get("padding", 0), "ceil_mode": p.get("ceil_mode", False),
                "count_include_pad": True, "divisor_override": p.get("divisor_override")}
        x = np.zeros(shape, np.float32)
        try:
            torch_avg(x, full)
        except RuntimeError as exc:
            st.reject("avg_pool2d", full, shape, x.dtype, exc)
        else:
            raise AssertionError(f"torch accepted {full} on {shape}")
    lp = [((1, 3, 3, 1), {"norm_type": 2, "kernel_size": 4, "stride": None, "ceil_mode": False}),
          ((1, 3, 3, 1), {"norm_type": 2, "kernel_size": 2, "stride": 0, "ceil_mode": False})]
    # unpool output_size outside torch's (default - stride, default + stride) window
    rng = np.random.default_rng(7)
    for hw, pp, os_ in [((4, 4), {"kernel_size": 2, "stride": 2, "padding": 0}, (7, 7)),
                        ((6, 6), {"kernel_size": 3, "stride": 3, "padding": 1}, (1, 6))]:
        x = tie_input(rng, (1, *hw, 1), np.float32, hi=100)
        pp = dict(pp, dilation=1, ceil_mode=False)
        v, i = torch_max(x, pp)
        up = {"kernel_size": pp["kernel_size"], "stride": pp["stride"], "padding": pp["padding"],
              "output_size": list(os_)}
        try:
            F.max_unpool2d(to_torch(v), to_torch(i), up["kernel_size"], up["stride"], up["padding"],
                           os_)
        except ValueError as exc:
            st.reject("max_unpool2d", up, v.shape, v.dtype, exc, kind="output_size_range",
                      arrays={"values": v, "indices": i}, pool_params=pp)
        else:
            raise AssertionError(f"torch accepted unpool {up}")
    # default unpool size 0 along an axis: torch returns an empty tensor without checking indices
    x = tie_input(rng, (1, 8, 2, 1), np.float32, hi=100)
    pp = {"kernel_size": 4, "stride": None, "padding": (0, 2), "dilation": 1, "ceil_mode": True}
    v, i = torch_max(x, pp)
    up = {"kernel_size": 4, "stride": None, "padding": (0, 2), "output_size": None}
    r = F.max_unpool2d(to_torch(v), to_torch(i), 4, None, (0, 2), None)
    assert r.numel() == 0, r.shape
    st.reject("max_unpool2d", up, v.shape, v.dtype,
              RuntimeError(f"(not raised by torch: it returns an empty {tuple(r.shape)} tensor "
                           "without checking the indices)"),
              kind="invalid_index", arrays={"values": v, "indices": i}, pool_params=pp)
    for shape, p in lp:
        x = np.ones(shape, np.float32)
        try:
            torch_lp(x, p)
        except RuntimeError as exc:
            st.reject("lp_pool2d", p, shape, x.dtype, exc)
        else:
            raise AssertionError(f"torch accepted {p} on {shape}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    st = Store()
    build_max(st, rng)
    build_avg(st, rng)
    build_lp(st, rng)
    build_adaptive(st, rng, "adaptive_avg_pool2d")
    build_adaptive(st, rng, "adaptive_max_pool2d")
    build_unpool(st, rng)
    build_backward(st, rng)
    build_rejected(st)

    counts: dict[str, int] = {}
    for c in st.cases:
        counts[c["op"]] = counts.get(c["op"], 0) + 1
    meta = {
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "seed": args.seed,
        "layout": "NHWC",
        "index_rule": "flat h*W+w into the unpadded input plane of each (n, c), int64",
        "generator": "scripts/make_pool_fixtures.py",
        "counts": counts,
        "rejected": len(st.rejected),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), cases=np.array(json.dumps(st.cases)),
                        rejected=np.array(json.dumps(st.rejected)), **st.arrays)
    tmp.replace(args.output)
    size = args.output.stat().st_size
    print(f"wrote {args.output} ({size} bytes, {len(st.cases)} cases, {len(st.rejected)} rejected, "
          f"torch {torch.__version__})")
    print("  " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    if size > MAX_BYTES:
        print(f"error: fixture is larger than {MAX_BYTES} bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
