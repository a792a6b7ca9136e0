"""Generate ``tests/fixtures/norm_torch.npz``: PyTorch reference results for ``poolcli.ops.norm``.

Development tool only (needs torch; the test suite does not). Run from the repository root::

    python scripts/make_norm_fixtures.py            # writes tests/fixtures/norm_torch.npz
    python scripts/make_norm_fixtures.py --seed 1 --out /tmp/other.npz

Layout of the file (``np.load(path)`` works without ``allow_pickle``):

- ``meta``: a 0-d string array holding JSON: ``torch_version``, ``numpy_version``, ``seed`` and
  ``cases``, a list of dicts, one per case: ``key``, ``op`` (``instance_norm``, ``batch_norm_train``,
  ``batch_norm_eval``, ``layer_norm``, ``group_norm``, ``bn_module_cma``), ``dtype`` (of the stored
  input), ``torch_dtype`` (what torch computed in: float32 for float32 input, float64 otherwise,
  uint8 is converted to float64), ``eps``, and per op ``num_groups``, ``momentum``,
  ``n_batches``, ``weight_kind`` (``none``, ``channel``, ``weight_only``, ``bias_only`` or
  ``full``), ``constant_channel`` (batch norm: channel 0 of every batch is constant; torch's
  float32 result there is off by its rounding of the mean, poolcli's is exactly ``bias``).
- ``<key>_x`` (or ``<key>_x0``, ``_x1``, ... for batch sequences): inputs, CHANNELS LAST
  (``(N, H, W, C)``, ``(H, W, C)`` or ``(H, W)``), exactly as poolcli receives them.
- ``<key>_weight``, ``<key>_bias``: affine parameters in poolcli's form (per-channel ``(C,)``, or
  ``(H, W, C)`` for layer norm's ``full`` weight); absent when not used.
- ``<key>_out`` (``_out0``, ...): torch's output transposed back to channels last.
- batch norm: ``<key>_rm_init``/``_rv_init`` (running stats before), ``_rm<k>``/``_rv<k>`` after
  batch k (training), or ``_rm``/``_rv`` used for evaluation.

Torch works in NCHW: inputs are transposed ``(N, H, W, C) -> (N, C, H, W)`` before the call and
outputs ``(N, C, H, W) -> (N, H, W, C)`` after it; a per-channel layer-norm weight is expanded to
PyTorch's ``(C, H, W)`` elementwise shape.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "norm_torch.npz"


def to_torch(x: np.ndarray, torch_dtype: str) -> torch.Tensor:
    """Channels-last numpy (2-, 3- or 4-D) -> contiguous NCHW tensor."""
    if x.ndim == 2:
        x = x[None, :, :, None]
    elif x.ndim == 3:
        x = x[None]
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2).astype(torch_dtype)))


def from_torch(t: torch.Tensor, ndim: int) -> np.ndarray:
    """NCHW tensor -> channels-last numpy with the input's ndim."""
    y = t.detach().numpy().transpose(0, 2, 3, 1)
    if ndim == 2:
        return np.ascontiguousarray(y[0, :, :, 0])
    if ndim == 3:
        return np.ascontiguousarray(y[0])
    return np.ascontiguousarray(y)


def vec(a, torch_dtype):
    return None if a is None else torch.from_numpy(np.asarray(a, dtype=torch_dtype))


class Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.arrays: dict[str, np.ndarray] = {}
        self.cases: list[dict] = []

    # ---- random ingredients
    def shape(self, *, c, ndim=4, min_spatial=2, n=None):
        rng = self.rng
        while True:
            h, w = (int(v) for v in rng.integers(1, 8, size=2))
            if h * w >= min_spatial:
                break
        n = int(rng.integers(1, 4)) if n is None else n
        if ndim == 2:
            return (h, w)
        if ndim == 3:
            return (h, w, c)
        return (n, h, w, c)

    def data(self, shape, dtype):
        rng = self.rng
        if dtype == "uint8":
            return rng.integers(0, 256, size=shape, dtype=np.uint8)
        scale = float(rng.choice([0.01, 1.0, 50.0]))
        loc = float(rng.uniform(-2, 2)) * scale
        return (rng.normal(loc, scale, size=shape)).astype(dtype)

    def eps(self):
        return float(self.rng.choice([1e-5, 1e-5, 1e-3, 0.1, float(10 ** self.rng.uniform(-6, -1))]))

    def affine(self, c, torch_dtype, *, allow_full_shape=None, kind=None):
        """Return (weight_kind, weight, bias) in poolcli form."""
        rng = self.rng
        kinds = ["none", "channel", "channel", "weight_only", "bias_only"]
        if allow_full_shape is not None:
            kinds.append("full")
        if kind is None:
            kind = str(rng.choice(kinds))
        if kind == "none":
            return kind, None, None
        wshape = allow_full_shape if kind == "full" else (c,)
        weight = rng.normal(1.0, 0.5, size=wshape).astype(torch_dtype)
        bias = rng.normal(0.0, 1.0, size=wshape).astype(torch_dtype)
        if kind == "weight_only":
            bias = None
        elif kind == "bias_only":
            weight = None
        return kind, weight, bias

    @staticmethod
    def torch_dtype(dtype):
        return "float32" if dtype == "float32" else "float64"

    def add(self, case: dict, **arrays):
        key = f"c{len(self.cases):03d}"
        case = {"key": key, **case}
        self.cases.append(case)
        for name, arr in arrays.items():
            if arr is not None:
                self.arrays[f"{key}_{name}"] = np.asarray(arr)

    # ---- cases
    def instance_norm(self, dtype, c, ndim=4):
        td = self.torch_dtype(dtype)
        x = self.data(self.shape(c=c, ndim=ndim), dtype)
        eps = self.eps()
        kind, weight, bias = self.affine(x.shape[-1] if ndim > 2 else 1, td)
        out = F.instance_norm(to_torch(x, td), weight=vec(weight, td), bias=vec(bias, td), eps=eps)
        self.add({"op": "instance_norm", "dtype": dtype, "torch_dtype": td, "eps": eps,
                  "weight_kind": kind}, x=x, weight=weight, bias=bias, out=from_torch(out, ndim))

    def layer_norm(self, dtype, c, ndim=4, kind=None):
        td = self.torch_dtype(dtype)
        x = self.data(self.shape(c=c, ndim=ndim, min_spatial=1), dtype)
        eps = self.eps()
        image_shape = x.shape[-3:] if ndim > 2 else x.shape
        kind, weight, bias = self.affine(x.shape[-1] if ndim > 2 else 1, td,
                                         allow_full_shape=image_shape, kind=kind)
        t = to_torch(x, td)
        cc, h, w = t.shape[1:]

        def to_elementwise(p):
            if p is None:
                return None
            p = np.asarray(p, dtype=td)
            if kind == "full":
                p = p.reshape(h, w, cc).transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
            else:
                p = np.broadcast_to(p[:, None, None], (cc, h, w))
            return torch.from_numpy(np.ascontiguousarray(p))

        out = F.layer_norm(t, (cc, h, w), weight=to_elementwise(weight),
                           bias=to_elementwise(bias), eps=eps)
        self.add({"op": "layer_norm", "dtype": dtype, "torch_dtype": td, "eps": eps,
                  "weight_kind": kind}, x=x, weight=weight, bias=bias, out=from_torch(out, ndim))

    def group_norm(self, dtype, c, num_groups, ndim=4):
        td = self.torch_dtype(dtype)
        x = self.data(self.shape(c=c, ndim=ndim, min_spatial=1), dtype)
        eps = self.eps()
        kind, weight, bias = self.affine(c, td)
        out = F.group_norm(to_torch(x, td), num_groups, weight=vec(weight, td),
                           bias=vec(bias, td), eps=eps)
        self.add({"op": "group_norm", "dtype": dtype, "torch_dtype": td, "eps": eps,
                  "num_groups": num_groups, "weight_kind": kind},
                 x=x, weight=weight, bias=bias, out=from_torch(out, ndim))

    def batch_norm_train(self, dtype, c, *, n_batches=3, init="default", momentum=0.1,
                         constant_channel=False):
        td = self.torch_dtype(dtype)
        eps = self.eps()
        kind, weight, bias = self.affine(c, td)
        if init == "default":
            rm0, rv0 = np.zeros(c, dtype=td), np.ones(c, dtype=td)
        else:
            rm0 = self.rng.normal(0, 2, size=c).astype(td)
            rv0 = self.rng.uniform(0.5, 2.0, size=c).astype(td)
        rm_t, rv_t = torch.from_numpy(rm0.copy()), torch.from_numpy(rv0.copy())
        arrays = {"weight": weight, "bias": bias, "rm_init": rm0, "rv_init": rv0}
        for k in range(n_batches):
            ndim = 4 if k or self.rng.random() < 0.7 else 3  # sometimes one (H, W, C) image
            x = self.data(self.shape(c=c, ndim=ndim), dtype)
            if constant_channel:
                x[..., 0] = x.flat[0]
            out = F.batch_norm(to_torch(x, td), rm_t, rv_t, weight=vec(weight, td),
                               bias=vec(bias, td), training=True, momentum=momentum, eps=eps)
            arrays[f"x{k}"] = x
            arrays[f"out{k}"] = from_torch(out, ndim)
            arrays[f"rm{k}"] = rm_t.numpy().copy()
            arrays[f"rv{k}"] = rv_t.numpy().copy()
        self.add({"op": "batch_norm_train", "dtype": dtype, "torch_dtype": td, "eps": eps,
                  "momentum": momentum, "n_batches": n_batches, "init": init,
                  "weight_kind": kind, "constant_channel": constant_channel}, **arrays)

    def batch_norm_eval(self, dtype, c, ndim=4):
        td = self.torch_dtype(dtype)
        eps = self.eps()
        x = self.data(self.shape(c=c, ndim=ndim, min_spatial=1), dtype)
        kind, weight, bias = self.affine(c if ndim > 2 else 1, td)
        cc = c if ndim > 2 else 1
        scale = float(np.std(x.astype(np.float64))) + 1.0
        rm = (float(np.mean(x.astype(np.float64))) + self.rng.normal(0, scale, size=cc)).astype(td)
        rv = (self.rng.uniform(0.2, 2.0, size=cc) * scale**2).astype(td)
        out = F.batch_norm(to_torch(x, td), torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy()),
                           weight=vec(weight, td), bias=vec(bias, td), training=False, eps=eps)
        self.add({"op": "batch_norm_eval", "dtype": dtype, "torch_dtype": td, "eps": eps,
                  "weight_kind": kind}, x=x, weight=weight, bias=bias, rm=rm, rv=rv,
                 out=from_torch(out, ndim))

    def bn_module_cma(self, dtype, c, n_batches=3):
        """nn.BatchNorm2d(momentum=None): PyTorch's cumulative moving average of batch stats."""
        td = self.torch_dtype(dtype)
        bn = torch.nn.BatchNorm2d(c, momentum=None, affine=False, dtype=getattr(torch, td))
        bn.train()
        arrays = {}
        for k in range(n_batches):
            x = self.data(self.shape(c=c), dtype)
            with torch.no_grad():
                bn(to_torch(x, td))
            arrays[f"x{k}"] = x
            arrays[f"rm{k}"] = bn.running_mean.numpy().copy()
            arrays[f"rv{k}"] = bn.running_var.numpy().copy()
        self.add({"op": "bn_module_cma", "dtype": dtype, "torch_dtype": td, "eps": bn.eps,
                  "n_batches": n_batches}, **arrays)


def build(seed: int) -> Builder:
    torch.manual_seed(seed)
    b = Builder(seed)
    dtypes = ("float32", "float64", "uint8")
    for dtype in dtypes:
        for c in (1, 3, 4):
            b.instance_norm(dtype, c)
            b.layer_norm(dtype, c)
            b.batch_norm_eval(dtype, c)
        b.instance_norm(dtype, 3, ndim=3)
        b.instance_norm(dtype, 1, ndim=2)
        b.layer_norm(dtype, 4, ndim=3, kind="full")
        b.layer_norm(dtype, 3, kind="full")
        b.layer_norm(dtype, 1, ndim=2, kind="full")
        b.batch_norm_eval(dtype, 3, ndim=3)
        for c, groups in ((1, 1), (3, 1), (3, 3), (4, 2), (4, 4), (6, 3)):
            b.group_norm(dtype, c, groups)
        b.group_norm(dtype, 4, 2, ndim=3)
        for c, init, momentum in ((1, "default", 0.1), (3, "default", 0.1), (4, "random", 0.3),
                                  (3, "random", 0.0), (4, "default", 1.0)):
            b.batch_norm_train(dtype, c, init=init, momentum=momentum)
        b.batch_norm_train(dtype, 3, init="default", momentum=0.1, constant_channel=True)
        b.bn_module_cma(dtype, 3)
    return b


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    b = build(args.seed)
    meta = {
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "seed": args.seed,
        "generator": "scripts/make_norm_fixtures.py",
        "cases": b.cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, meta=np.array(json.dumps(meta)), **b.arrays)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({len(b.cases)} cases, {size / 1024:.1f} KiB, torch {torch.__version__})")
    if size > 300 * 1024:
        raise SystemExit(f"fixture is too large ({size} bytes > 300 KiB); shrink the cases")


if __name__ == "__main__":
    main()
