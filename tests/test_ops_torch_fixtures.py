"""poolcli.ops against stored PyTorch results (``tests/fixtures/pool_torch.npz``).

The fixture is made by ``scripts/make_pool_fixtures.py`` (its docstring describes the layout) from
``torch.nn.functional`` and needs no torch at test time. All arrays are channels-last
``(N, H, W, C)``; indices are PyTorch's flat ``h * W + w`` into the unpadded input plane, int64.

What is checked, per stored case:

* max/min pooling (and adaptive max): values and indices exactly equal (NaN positions included,
  PyTorch's CPU NaN rule: the LAST NaN of a window in row-major order wins), dtype kept;
* avg, Lp, adaptive avg: ``allclose`` (float32: rtol 1e-5 / atol 1e-6), float32/float64 dtype;
* max_unpool2d: exact equality;
* max_pool2d backward: ``max_unpool2d(ones_like(values), indices, ..., output_size=(H, W),
  reduce="sum")`` equals d/dx of ``max_pool2d(x).sum()``;
* parameter combinations PyTorch rejects raise ``ValueError``;
* cases tagged ``all-padding-window`` (a dilated window holding no input cell, where torch
  returns -inf and a meaningless index) accept either torch's exact output or ``ValueError``.

``poolcli.ops`` is imported lazily so that the module collects even while the core is being
written; a missing function makes only its own tests fail.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "pool_torch.npz"

POOL_KEYS = ("kernel_size", "stride", "padding", "dilation", "output_size")


def _load():
    with np.load(FIXTURE, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    cases = json.loads(str(arrays.pop("cases")))
    rejected = json.loads(str(arrays.pop("rejected")))
    return meta, cases, rejected, arrays


META, CASES, REJECTED, ARRAYS = _load()


def op(name):
    """``from poolcli.ops import <name>``, at test time."""
    mod = importlib.import_module("poolcli.ops")
    try:
        return getattr(mod, name)
    except AttributeError:
        raise ImportError(f"cannot import name {name!r} from 'poolcli.ops'") from None


def tuplify(v):
    return tuple(tuplify(e) for e in v) if isinstance(v, list) else v


def kwargs(params, drop=()):
    return {k: (tuplify(v) if k in POOL_KEYS else v) for k, v in params.items() if k not in drop}


def arr(case, name):
    return ARRAYS[case["arrays"][name]]


QUIRK = "all-padding-window"  # see test_all_padding_window


def cases_for(op_name, tag=None):
    sel = [c for c in CASES if c["op"] == op_name
           and (tag in c["tags"] if tag is not None else QUIRK not in c["tags"])]
    return [pytest.param(c, id=f"{c['id']}[{c['label']}]") for c in sel]


def rejected_for(*op_names, kinds=None):
    sel = [r for r in REJECTED if r["op"] in op_names and (kinds is None or r["kind"] in kinds)]
    return [pytest.param(r, id=f"{r['id']}[{r['kind']}]") for r in sel]


def float_dtype(x):
    return np.float64 if x.dtype == np.float64 else np.float32


def assert_close(got, want):
    assert got.shape == want.shape, f"shape {got.shape} != torch {want.shape}"
    assert got.dtype == want.dtype, f"dtype {got.dtype} != {want.dtype}"
    if want.dtype == np.float64:
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def assert_selected(res, case, x):
    """(values, indices) from a max/min-type operator, exactly as torch."""
    assert isinstance(res, tuple) and len(res) == 2, "return_indices=True must give (values, indices)"
    vals, idx = res
    want_v, want_i = arr(case, "values"), arr(case, "indices")
    assert vals.shape == want_v.shape, f"values shape {vals.shape} != torch {want_v.shape}"
    assert idx.shape == want_i.shape, f"indices shape {idx.shape} != torch {want_i.shape}"
    assert vals.dtype == x.dtype, f"values dtype {vals.dtype} != input dtype {x.dtype}"
    assert idx.dtype == np.int64, f"indices dtype {idx.dtype} != int64"
    np.testing.assert_array_equal(idx, want_i, err_msg="indices differ from torch")
    np.testing.assert_array_equal(vals, want_v, err_msg="values differ from torch")


def test_fixture_metadata():
    assert META["layout"] == "NHWC"
    assert META["torch_version"]
    assert len(CASES) > 500 and len(REJECTED) > 20


# ----------------------------------------------------------------------------- max / min


@pytest.mark.parametrize("case", cases_for("max_pool2d"))
def test_max_pool2d(case):
    x = arr(case, "x")
    f = op("max_pool2d")
    res = f(x, **kwargs(case["params"]), return_indices=True)
    assert_selected(res, case, x)
    only = f(x, **kwargs(case["params"]))
    np.testing.assert_array_equal(only, arr(case, "values"))


@pytest.mark.parametrize("case", cases_for("min_pool2d"))
def test_min_pool2d(case):
    """Reference: ``-max_pool2d(-x)``; padded cells never win, first index wins ties."""
    x = arr(case, "x")
    f = op("min_pool2d")
    res = f(x, **kwargs(case["params"]), return_indices=True)
    assert_selected(res, case, x)
    only = f(x, **kwargs(case["params"]))
    np.testing.assert_array_equal(only, arr(case, "values"))


@pytest.mark.parametrize("case", cases_for("max_pool2d", QUIRK) + cases_for("min_pool2d", QUIRK))
def test_all_padding_window(case):
    """With dilation a window can hold only padding (e.g. rows -1 and 2 of a 2-row input, k=2,
    d=3, p=1). torch 2.13 then returns -inf (+inf for min) and an index that is outside the plane
    or names a cell that is not in the window. poolcli may either reproduce that exactly or reject
    the configuration with ValueError; nothing else (no IndexError, no silent other answer)."""
    x = arr(case, "x")
    try:
        res = op(case["op"])(x, **kwargs(case["params"]), return_indices=True)
    except ValueError:
        return
    assert_selected(res, case, x)


@pytest.mark.parametrize("case", cases_for("max_pool2d")[:12])
def test_max_pool2d_single_image(case):
    """An (H, W, C) image gives the same as a batch of one."""
    x = arr(case, "x")[0]
    vals, idx = op("max_pool2d")(x, **kwargs(case["params"]), return_indices=True)
    np.testing.assert_array_equal(vals, arr(case, "values")[0])
    np.testing.assert_array_equal(idx, arr(case, "indices")[0])


# ----------------------------------------------------------------------------- averages


@pytest.mark.parametrize("case", cases_for("avg_pool2d"))
def test_avg_pool2d(case):
    x = arr(case, "x")
    got = op("avg_pool2d")(x, **kwargs(case["params"]))
    want = arr(case, "values")
    assert want.dtype == float_dtype(x)
    assert_close(got, want)


@pytest.mark.parametrize("case", cases_for("lp_pool2d"))
def test_lp_pool2d(case):
    x = arr(case, "x")
    p = kwargs(case["params"])
    got = op("lp_pool2d")(x, p.pop("norm_type"), **p)
    assert_close(got, arr(case, "values"))


# ----------------------------------------------------------------------------- adaptive


@pytest.mark.parametrize("case", cases_for("adaptive_avg_pool2d"))
def test_adaptive_avg_pool2d(case):
    x = arr(case, "x")
    got = op("adaptive_avg_pool2d")(x, tuple(case["resolved_output_size"]))
    assert_close(got, arr(case, "values"))


@pytest.mark.parametrize("case", cases_for("adaptive_max_pool2d"))
def test_adaptive_max_pool2d(case):
    x = arr(case, "x")
    f = op("adaptive_max_pool2d")
    res = f(x, tuple(case["resolved_output_size"]), return_indices=True)
    assert_selected(res, case, x)
    only = f(x, tuple(case["resolved_output_size"]))
    np.testing.assert_array_equal(only, arr(case, "values"))


@pytest.mark.parametrize("case", cases_for("adaptive_avg_pool2d", "none-axis"))
def test_adaptive_avg_pool2d_none_axis(case):
    """torch accepts ``output_size=(None, k)``: None keeps that axis' input size."""
    x = arr(case, "x")
    got = op("adaptive_avg_pool2d")(x, kwargs(case["params"])["output_size"])
    assert_close(got, arr(case, "values"))


@pytest.mark.parametrize("case", cases_for("adaptive_max_pool2d", "none-axis"))
def test_adaptive_max_pool2d_none_axis(case):
    x = arr(case, "x")
    res = op("adaptive_max_pool2d")(x, kwargs(case["params"])["output_size"], return_indices=True)
    assert_selected(res, case, x)


# ----------------------------------------------------------------------------- unpool, backward


@pytest.mark.parametrize("case", cases_for("max_unpool2d"))
def test_max_unpool2d(case):
    vals, idx = arr(case, "values"), arr(case, "indices")
    got = op("max_unpool2d")(vals, idx, **kwargs(case["params"]))
    want = arr(case, "result")
    assert got.shape == want.shape, f"shape {got.shape} != torch {want.shape}"
    assert got.dtype == vals.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", cases_for("max_pool2d_backward"))
def test_max_pool2d_backward_is_accumulating_unpool(case):
    x = arr(case, "x")
    p = kwargs(case["params"])
    vals, idx = op("max_pool2d")(x, **p, return_indices=True)
    np.testing.assert_array_equal(vals, arr(case, "values"))
    np.testing.assert_array_equal(idx, arr(case, "indices"))
    ones = np.ones_like(arr(case, "values"))
    grad = op("max_unpool2d")(ones, arr(case, "indices"), p["kernel_size"], p["stride"],
                              p["padding"], output_size=x.shape[1:3], reduce="sum")
    want = arr(case, "grad")
    assert grad.shape == want.shape
    np.testing.assert_array_equal(grad, want)
    # overlapping windows: some input cells are picked more than once
    assert want.max() >= 1


# ----------------------------------------------------------------------------- rejected


@pytest.mark.parametrize("bad", rejected_for("max_pool2d", "min_pool2d", "avg_pool2d", "lp_pool2d",
                                             "adaptive_avg_pool2d", "adaptive_max_pool2d"))
def test_rejected_like_torch(bad):
    """torch said: ``bad['error']``; poolcli must raise ValueError."""
    x = np.zeros(bad["input_shape"], dtype=bad["dtype"])
    p = kwargs(bad["params"])
    f = op(bad["op"])
    with pytest.raises(ValueError):
        if bad["op"] == "lp_pool2d":
            f(x, p.pop("norm_type"), **p)
        elif bad["op"].startswith("adaptive"):
            f(x, p["output_size"])
        else:
            f(x, **p)


@pytest.mark.parametrize("bad", rejected_for("max_unpool2d", kinds={"invalid_index"}))
def test_unpool_rejects_index_outside_output(bad):
    """An index that does not fit the (default) output plane is an error, as in torch.

    (torch's other unpool rule, output_size strictly within default +- stride, is stored as kind
    ``output_size_range`` but not required here.)
    """
    vals, idx = ARRAYS[bad["arrays"]["values"]], ARRAYS[bad["arrays"]["indices"]]
    with pytest.raises(ValueError):
        op("max_unpool2d")(vals, idx, **kwargs(bad["params"]))
