"""Tests for poolcli.ops.norm: instance, batch, layer, group norm and RunningStats.

References, by role:
- PyTorch fixtures (tests/fixtures/norm_torch.npz, made by scripts/make_norm_fixtures.py),
- a naive float64 loop reference (math.fsum statistics, explicit loops over images/channels/groups),
- invariants (hypothesis), error messages, and a live torch comparison when torch is installed.
"""

from __future__ import annotations

import doctest
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from poolcli.ops import norm as norm_module
from poolcli.ops.norm import RunningStats, batch_norm, group_norm, instance_norm, layer_norm

FIXTURE = Path(__file__).parent / "fixtures" / "norm_torch.npz"


# --------------------------------------------------------------------------- fixture helpers


def _load_fixture():
    with np.load(FIXTURE) as data:  # no allow_pickle: the file holds plain arrays only
        meta = json.loads(str(data["meta"]))
        arrays = {name: data[name] for name in data.files if name != "meta"}
    return meta, arrays


META, ARRAYS = _load_fixture()


def _cases(op):
    cases = [c for c in META["cases"] if c["op"] == op]
    assert cases, f"fixture has no {op} cases"
    return pytest.mark.parametrize(
        "case", cases, ids=[f"{c['key']}-{c['dtype']}-{c['weight_kind'] if 'weight_kind' in c else ''}"
                            for c in cases]
    )


def _arr(case, name):
    return ARRAYS.get(f"{case['key']}_{name}")


def _tol(case):
    """float32 results (float32 or integer input): torch float32 or float32 rounding of ours."""
    if case["dtype"] == "float64":
        return {"rtol": 1e-10, "atol": 1e-10}
    return {"rtol": 1e-5, "atol": 1e-5}


def _expected_dtype(dtype):
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def test_fixture_records_its_origin():
    assert META["torch_version"].startswith("2.")
    assert META["generator"] == "scripts/make_norm_fixtures.py"
    assert FIXTURE.stat().st_size < 300 * 1024


# --------------------------------------------------------------------------- (a) fixture agreement


@_cases("instance_norm")
def test_instance_norm_matches_torch(case):
    x = _arr(case, "x")
    y = instance_norm(x, eps=case["eps"], weight=_arr(case, "weight"), bias=_arr(case, "bias"))
    assert y.shape == x.shape
    assert y.dtype == _expected_dtype(case["dtype"])
    np.testing.assert_allclose(y, _arr(case, "out"), **_tol(case))


@_cases("layer_norm")
def test_layer_norm_matches_torch(case):
    x = _arr(case, "x")
    y = layer_norm(x, eps=case["eps"], weight=_arr(case, "weight"), bias=_arr(case, "bias"))
    assert y.shape == x.shape
    assert y.dtype == _expected_dtype(case["dtype"])
    np.testing.assert_allclose(y, _arr(case, "out"), **_tol(case))


@_cases("group_norm")
def test_group_norm_matches_torch(case):
    x = _arr(case, "x")
    y = group_norm(x, case["num_groups"], eps=case["eps"], weight=_arr(case, "weight"),
                   bias=_arr(case, "bias"))
    assert y.shape == x.shape
    assert y.dtype == _expected_dtype(case["dtype"])
    np.testing.assert_allclose(y, _arr(case, "out"), **_tol(case))


@_cases("batch_norm_eval")
def test_batch_norm_eval_matches_torch(case):
    x, rm, rv = _arr(case, "x"), _arr(case, "rm"), _arr(case, "rv")
    rm_before, rv_before = rm.copy(), rv.copy()
    y = batch_norm(x, rm, rv, weight=_arr(case, "weight"), bias=_arr(case, "bias"),
                   training=False, eps=case["eps"])
    assert y.shape == x.shape
    assert y.dtype == _expected_dtype(case["dtype"])
    np.testing.assert_allclose(y, _arr(case, "out"), **_tol(case))
    np.testing.assert_array_equal(rm, rm_before)  # evaluation never touches the statistics
    np.testing.assert_array_equal(rv, rv_before)


# --------------------------------------------------------------------------- (c) running statistics


@_cases("batch_norm_train")
def test_batch_norm_training_sequence_matches_torch(case):
    rm = _arr(case, "rm_init").copy()
    rv = _arr(case, "rv_init").copy()
    rm_id, rv_id = id(rm), id(rv)
    for k in range(case["n_batches"]):
        x = _arr(case, f"x{k}")
        y = batch_norm(x, rm, rv, weight=_arr(case, "weight"), bias=_arr(case, "bias"),
                       training=True, momentum=case["momentum"], eps=case["eps"])
        assert y.shape == x.shape
        expected = _arr(case, f"out{k}")
        if case["constant_channel"]:
            # torch float32 leaves a rounding residue (~1e-4) on a constant channel; poolcli's
            # float64 mean makes it exactly 0 (+ bias). Compare the other channels to torch.
            # (float64 input: the float64 mean itself may be off by an ulp, so only ~0.)
            bias = _arr(case, "bias")
            exact = np.zeros((), y.dtype) if bias is None else bias[0].astype(y.dtype)
            if case["dtype"] == "float64":
                np.testing.assert_allclose(y[..., 0], exact, rtol=0, atol=1e-9)
            else:
                assert (y[..., 0] == exact).all()
            y, expected = y[..., 1:], expected[..., 1:]
        np.testing.assert_allclose(y, expected, **_tol(case))
        # updated in place, in the arrays' own dtype
        assert id(rm) == rm_id and id(rv) == rv_id
        assert rm.dtype == _arr(case, "rm_init").dtype
        np.testing.assert_allclose(rm, _arr(case, f"rm{k}"), **_tol(case))
        np.testing.assert_allclose(rv, _arr(case, f"rv{k}"), **_tol(case))


def _default_init_train_cases():
    return [c for c in META["cases"] if c["op"] == "batch_norm_train" and c["init"] == "default"]


@pytest.mark.parametrize("case", _default_init_train_cases(), ids=lambda c: c["key"])
def test_running_stats_ema_matches_torch_batch_norm(case):
    rs = RunningStats()
    for k in range(case["n_batches"]):
        rs.update(_arr(case, f"x{k}"), momentum=case["momentum"])
        assert rs.running_mean.dtype == np.float64
        np.testing.assert_allclose(rs.running_mean, _arr(case, f"rm{k}"), **_tol(case))
        np.testing.assert_allclose(rs.running_var, _arr(case, f"rv{k}"), **_tol(case))
    assert rs.num_batches_tracked == case["n_batches"]


@_cases("bn_module_cma")
def test_running_stats_cumulative_average_matches_torch_module(case):
    """momentum=None is nn.BatchNorm2d(momentum=None): weight 1/num_batches_tracked."""
    rs = RunningStats()
    for k in range(case["n_batches"]):
        rs.update(_arr(case, f"x{k}"))
        np.testing.assert_allclose(rs.running_mean, _arr(case, f"rm{k}"), **_tol(case))
        np.testing.assert_allclose(rs.running_var, _arr(case, f"rv{k}"), **_tol(case))


@_cases("batch_norm_train")
def test_running_stats_exact_equals_concatenated_batches(case):
    batches = [_arr(case, f"x{k}") for k in range(case["n_batches"])]
    c = batches[0].shape[-1]
    rs = RunningStats(num_channels=c)
    for b in batches:
        rs.update(b, momentum=0.1)
    flat = np.concatenate([b.reshape(-1, c).astype(np.float64) for b in batches])
    assert rs.count == flat.shape[0]
    np.testing.assert_allclose(rs.mean, flat.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rs.var, flat.var(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rs.var_unbiased, flat.var(axis=0, ddof=1), rtol=1e-10, atol=1e-12)


def test_running_stats_defaults_before_first_update():
    rs = RunningStats(num_channels=3)
    np.testing.assert_array_equal(rs.running_mean, np.zeros(3))
    np.testing.assert_array_equal(rs.running_var, np.ones(3))
    assert rs.count == 0 and rs.num_batches_tracked == 0 and rs.num_channels == 3


def test_running_stats_properties_are_copies():
    rs = RunningStats()
    rs.update(np.arange(12.0).reshape(2, 2, 3))
    rs.mean[:] = 99
    rs.running_mean[:] = 99
    assert not np.any(rs.mean == 99) and not np.any(rs.running_mean == 99)


def test_running_stats_is_stable_for_large_offsets():
    """Chan's update keeps the variance exact where E[x^2] - E[x]^2 would cancel."""
    rng = np.random.default_rng(3)
    batches = [1e9 + rng.normal(0, 1, size=(2, 5, 5, 1)) for _ in range(4)]
    rs = RunningStats()
    for b in batches:
        rs.update(b)
    flat = np.concatenate([b.ravel() for b in batches])
    np.testing.assert_allclose(rs.var, [flat.var()], rtol=1e-6)


def test_batch_norm_momentum_zero_and_one():
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4, 1)
    rm, rv = np.array([5.0]), np.array([7.0])
    batch_norm(x, rm, rv, momentum=0.0)
    np.testing.assert_array_equal(rm, [5.0])
    np.testing.assert_array_equal(rv, [7.0])
    batch_norm(x, rm, rv, momentum=1.0)
    np.testing.assert_allclose(rm, [x.mean()])
    np.testing.assert_allclose(rv, [x.var(ddof=1)])


def test_batch_norm_training_without_running_stats():
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4, 1)
    y = batch_norm(x, None, None)
    np.testing.assert_allclose(y, (x - x.mean()) / np.sqrt(x.var() + 1e-5))


# --------------------------------------------------------------------------- (b) naive reference


def _stats(values):
    values = [float(v) for v in values]
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / n
    return mean, var


def _affine_vec(p, c):
    if p is None:
        return None
    return np.broadcast_to(np.asarray(p, dtype=np.float64), (c,))


def _apply(values, mean, var, eps, w, b):
    out = (values - mean) / math.sqrt(var + eps)
    if w is not None:
        out = out * w
    if b is not None:
        out = out + b
    return out


def naive_instance_norm(x4, eps, weight, bias):
    n_img, h, w_, c = x4.shape
    wv, bv = _affine_vec(weight, c), _affine_vec(bias, c)
    out = np.empty(x4.shape, dtype=np.float64)
    for n in range(n_img):
        for ch in range(c):
            plane = x4[n, :, :, ch].astype(np.float64)
            mean, var = _stats(plane.ravel())
            out[n, :, :, ch] = _apply(plane, mean, var, eps,
                                      None if wv is None else wv[ch], None if bv is None else bv[ch])
    return out


def naive_group_norm(x4, num_groups, eps, weight, bias):
    n_img, h, w_, c = x4.shape
    cpg = c // num_groups
    wv, bv = _affine_vec(weight, c), _affine_vec(bias, c)
    out = np.empty(x4.shape, dtype=np.float64)
    for n in range(n_img):
        for g in range(num_groups):
            chans = list(range(g * cpg, (g + 1) * cpg))
            values = [x4[n, i, j, ch] for i in range(h) for j in range(w_) for ch in chans]
            mean, var = _stats(values)
            for ch in chans:
                plane = x4[n, :, :, ch].astype(np.float64)
                out[n, :, :, ch] = _apply(plane, mean, var, eps, None if wv is None else wv[ch],
                                          None if bv is None else bv[ch])
    return out


def naive_layer_norm(x4, eps, weight, bias):
    return naive_group_norm(x4, 1, eps, weight, bias)


def naive_batch_norm_train(x4, eps, weight, bias):
    n_img, h, w_, c = x4.shape
    wv, bv = _affine_vec(weight, c), _affine_vec(bias, c)
    out = np.empty(x4.shape, dtype=np.float64)
    stats = []
    for ch in range(c):
        values = [x4[n, i, j, ch] for n in range(n_img) for i in range(h) for j in range(w_)]
        mean, var = _stats(values)
        stats.append((mean, var))
        out[..., ch] = _apply(x4[..., ch].astype(np.float64), mean, var, eps,
                              None if wv is None else wv[ch], None if bv is None else bv[ch])
    return out, stats


def _random_input(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True, dtype=dtype)
    return rng.normal(3.0, 2.0, size=shape).astype(dtype)


SPATIAL = [(5, 7), (2, 3), (1, 4), (6, 1), (4, 4)]
DTYPES = ["uint8", "uint16", "float32", "float64"]
CHANNELS = [1, 3, 4]


def _ref_tol(dtype):
    return {"rtol": 1e-12, "atol": 1e-12} if dtype == "float64" else {"rtol": 1e-6, "atol": 1e-6}


def _params(c, seed, with_affine):
    if not with_affine:
        return None, None
    rng = np.random.default_rng(seed + 1000)
    return rng.normal(1, 0.5, size=c), rng.normal(0, 1, size=c)


@pytest.mark.parametrize("hw", SPATIAL)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("n", [1, 2])
def test_instance_norm_naive_reference(n, c, dtype, hw):
    x = _random_input((n, *hw, c), dtype, seed=n * 100 + c)
    weight, bias = _params(c, n + c, with_affine=(n == 2))
    y = instance_norm(x, eps=1e-3, weight=weight, bias=bias)
    assert y.dtype == _expected_dtype(dtype)
    np.testing.assert_allclose(y, naive_instance_norm(x, 1e-3, weight, bias), **_ref_tol(dtype))


@pytest.mark.parametrize("hw", SPATIAL)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CHANNELS)
def test_layer_norm_naive_reference(c, dtype, hw):
    x = _random_input((2, *hw, c), dtype, seed=c)
    weight, bias = _params(c, c, with_affine=True)
    y = layer_norm(x, weight=weight, bias=bias)
    assert y.dtype == _expected_dtype(dtype)
    np.testing.assert_allclose(y, naive_layer_norm(x, 1e-5, weight, bias), **_ref_tol(dtype))


@pytest.mark.parametrize("hw", SPATIAL)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c, num_groups", [(1, 1), (3, 1), (3, 3), (4, 1), (4, 2), (4, 4), (6, 2)])
def test_group_norm_naive_reference(c, num_groups, dtype, hw):
    x = _random_input((2, *hw, c), dtype, seed=c * 10 + num_groups)
    weight, bias = _params(c, c, with_affine=num_groups != 1)
    y = group_norm(x, num_groups, eps=1e-4, weight=weight, bias=bias)
    assert y.dtype == _expected_dtype(dtype)
    np.testing.assert_allclose(y, naive_group_norm(x, num_groups, 1e-4, weight, bias),
                               **_ref_tol(dtype))


@pytest.mark.parametrize("hw", SPATIAL)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CHANNELS)
def test_batch_norm_naive_reference(c, dtype, hw):
    x = _random_input((3, *hw, c), dtype, seed=c + 7)
    weight, bias = _params(c, c, with_affine=True)
    rm0 = np.linspace(-1, 1, c)
    rv0 = np.linspace(0.5, 2, c)
    rm, rv = rm0.copy(), rv0.copy()
    y = batch_norm(x, rm, rv, weight=weight, bias=bias, momentum=0.25)
    ref, stats = naive_batch_norm_train(x, 1e-5, weight, bias)
    np.testing.assert_allclose(y, ref, **_ref_tol(dtype))
    count = x.shape[0] * x.shape[1] * x.shape[2]
    for ch, (mean, var) in enumerate(stats):
        assert rm[ch] == pytest.approx(0.75 * rm0[ch] + 0.25 * mean, rel=1e-12, abs=1e-12)
        assert rv[ch] == pytest.approx(0.75 * rv0[ch] + 0.25 * var * count / (count - 1),
                                       rel=1e-12, abs=1e-12)
    # evaluation with the updated statistics
    y_eval = batch_norm(x, rm, rv, training=False, weight=weight, bias=bias)
    ref_eval = (x.astype(np.float64) - rm) / np.sqrt(rv + 1e-5) * weight + bias
    np.testing.assert_allclose(y_eval, ref_eval, **_ref_tol(dtype))


# --------------------------------------------------------------------------- shapes and dtypes


@pytest.mark.parametrize("func", [
    instance_norm, layer_norm, lambda x, **k: group_norm(x, 1, **k),
    lambda x, **k: batch_norm(x, None, None, **k),
], ids=["instance", "layer", "group", "batch"])
def test_grey_and_single_image_layouts(func):
    x = _random_input((5, 6), "uint8", seed=1)
    y2 = func(x)
    assert y2.shape == (5, 6)
    np.testing.assert_array_equal(y2, func(x[:, :, None])[:, :, 0])
    np.testing.assert_array_equal(y2, func(x[None, :, :, None])[0, :, :, 0])


@pytest.mark.parametrize("dtype, expected", [
    ("uint8", np.float32), ("uint16", np.float32), ("int16", np.float32), ("int64", np.float32),
    ("float16", np.float32), ("float32", np.float32), ("float64", np.float64),
])
def test_output_dtype(dtype, expected):
    x = np.arange(2 * 3 * 4 * 2).reshape(2, 3, 4, 2).astype(dtype)
    assert instance_norm(x).dtype == expected
    assert layer_norm(x).dtype == expected
    assert group_norm(x, 2).dtype == expected
    assert batch_norm(x, None, None).dtype == expected
    assert batch_norm(x, np.zeros(2), np.ones(2), training=False).dtype == expected


def test_non_contiguous_input_and_input_untouched():
    base = _random_input((2, 9, 8, 6), "float32", seed=5)
    x = base[:, ::2, 1::2, ::2]  # strided view, C = 3
    assert not x.flags.c_contiguous
    before = base.copy()
    for f in (instance_norm, layer_norm, lambda a: group_norm(a, 3),
              lambda a: batch_norm(a, None, None)):
        np.testing.assert_array_equal(f(x), f(np.ascontiguousarray(x)))
    np.testing.assert_array_equal(base, before)


def test_float64_input_is_not_modified_in_place():
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    before = x.copy()
    instance_norm(x, weight=2.0, bias=1.0)
    group_norm(x, 2, weight=2.0, bias=1.0)
    batch_norm(x, None, None, weight=2.0, bias=1.0)
    np.testing.assert_array_equal(x, before)


def test_scalar_weight_and_bias():
    x = _random_input((2, 4, 5, 3), "float64", seed=2)
    np.testing.assert_allclose(instance_norm(x, weight=2.0, bias=-1.0),
                               instance_norm(x, weight=[2.0] * 3, bias=[-1.0] * 3))


def test_layer_norm_full_shape_weight_equals_broadcast_channel_weight():
    x = _random_input((2, 4, 5, 3), "float64", seed=3)
    w = np.array([0.5, 2.0, -1.0])
    b = np.array([1.0, 0.0, 3.0])
    full_w = np.broadcast_to(w, (4, 5, 3))
    full_b = np.broadcast_to(b, (4, 5, 3))
    np.testing.assert_array_equal(layer_norm(x, weight=w, bias=b),
                                  layer_norm(x, weight=full_w, bias=full_b))


def test_layer_norm_grey_full_shape_weight():
    x = _random_input((4, 5), "uint8", seed=4)
    w = np.arange(20.0).reshape(4, 5)
    np.testing.assert_allclose(layer_norm(x, weight=w), layer_norm(x) * w, rtol=1e-6)


def test_group_norm_identities():
    x = _random_input((2, 5, 3, 4), "float64", seed=6)
    np.testing.assert_allclose(group_norm(x, 4), instance_norm(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(group_norm(x, 1), layer_norm(x), rtol=1e-12, atol=1e-12)


def test_batch_norm_single_image_equals_instance_norm():
    x = _random_input((1, 5, 3, 4), "float32", seed=8)
    np.testing.assert_array_equal(batch_norm(x, None, None), instance_norm(x))


def test_group_norm_one_element_per_group_gives_bias():
    """Like PyTorch's F.group_norm: no error, zero variance, output = bias."""
    x = np.array([[[1.0, 2.0, 3.0]]])
    np.testing.assert_array_equal(group_norm(x, 3, bias=[4.0, 5.0, 6.0]), [[[4.0, 5.0, 6.0]]])


def test_layer_norm_single_element_gives_bias():
    assert layer_norm(np.array([[7.0]]), bias=2.5)[0, 0] == 2.5


# --------------------------------------------------------------------------- NaN / inf / zero var


def test_nan_poisons_its_own_plane_only_and_no_warnings():
    x = _random_input((2, 3, 4, 2), "float32", seed=9)
    x[1, 2, 3, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = instance_norm(x)
    assert np.isnan(y[1, ..., 0]).all()
    assert np.isfinite(y[0]).all() and np.isfinite(y[1, ..., 1]).all()


def test_inf_gives_nan_plane_like_torch():
    x = np.array([[np.inf, 1.0], [2.0, 3.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = instance_norm(x)
        yb = batch_norm(x, None, None)
    assert np.isnan(y).all() and np.isnan(yb).all()


def test_nan_propagates_into_running_stats():
    x = np.arange(8.0).reshape(2, 2, 2)
    x[0, 0, 0] = np.nan
    rm, rv = np.zeros(2), np.ones(2)
    batch_norm(x, rm, rv)
    assert np.isnan(rm[0]) and np.isnan(rv[0]) and np.isfinite(rm[1]) and np.isfinite(rv[1])
    rs = RunningStats()
    rs.update(x)
    assert np.isnan(rs.mean[0]) and np.isfinite(rs.mean[1])


def test_zero_variance_channel_gives_bias_exactly():
    x = np.full((2, 3, 3, 2), 0.1, dtype=np.float32)
    x[..., 1] = np.arange(18, dtype=np.float32).reshape(2, 3, 3)
    y = batch_norm(x, None, None, bias=[1.5, 0.0])
    assert (y[..., 0] == 1.5).all()


# --------------------------------------------------------------------------- (d) invariants


@st.composite
def planes(draw, dtype):
    h = draw(st.integers(1, 6))
    w = draw(st.integers(1 if h > 1 else 2, 6))
    c = draw(st.sampled_from([1, 3, 4]))
    if dtype == "uint8":
        elements = st.integers(0, 255)
    elif dtype == "float32":
        elements = st.floats(-1e3, 1e3, width=32)
    else:
        elements = st.floats(-1e3, 1e3)
    return draw(hnp.arrays(np.dtype(dtype), (h, w, c), elements=elements))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dtype=st.sampled_from(["uint8", "float32", "float64"]),
       eps=st.sampled_from([1e-5, 1e-3, 0.5]))
def test_instance_norm_mean_zero_unit_variance(data, dtype, eps):
    x = data.draw(planes(dtype))
    y = instance_norm(x, eps=eps).astype(np.float64)
    atol = 1e-9 if dtype == "float64" else 1e-5
    for ch in range(x.shape[-1]):
        plane = x[..., ch].astype(np.float64)
        if plane.min() == plane.max():
            continue  # constant planes: see the next test
        v = plane.var()
        assert abs(y[..., ch].mean()) <= atol
        # the variance of y is exactly var / (var + eps); ~1 once var >> eps
        assert y[..., ch].var() == pytest.approx(v / (v + eps), rel=1e-5, abs=atol)
        if v > 1e3 * eps:
            assert y[..., ch].var() == pytest.approx(1.0, abs=1e-3)


@settings(max_examples=60, deadline=None)
@given(value=st.floats(width=32, allow_nan=False, allow_infinity=False),
       shape=st.tuples(st.integers(1, 3), st.integers(1, 7), st.integers(2, 7), st.integers(1, 4)),
       bias=st.floats(-10, 10))
def test_constant_float32_plane_normalizes_to_exactly_zero(value, shape, bias):
    x = np.full(shape, value, dtype=np.float32)
    assert (instance_norm(x) == 0).all()
    assert (layer_norm(x) == 0).all()
    assert (group_norm(x, 1) == 0).all()
    assert (batch_norm(x, None, None) == 0).all()
    np.testing.assert_array_equal(instance_norm(x, bias=bias), np.float32(bias))


@settings(max_examples=40, deadline=None)
@given(value=st.integers(0, 65535), hw=st.tuples(st.integers(1, 6), st.integers(2, 6)))
def test_constant_uint16_plane_normalizes_to_exactly_zero(value, hw):
    x = np.full(hw, value, dtype=np.uint16)
    assert (instance_norm(x) == 0).all()


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n_batches=st.integers(1, 4))
def test_running_stats_exact_over_random_batch_sizes(data, n_batches):
    batches = []
    for _ in range(n_batches):
        shape = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(2, 4),
                                    st.just(2)))
        batches.append(data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-1e3, 1e3))))
    rs = RunningStats()
    for b in batches:
        rs.update(b, momentum=0.1)
    flat = np.concatenate([b.reshape(-1, 2) for b in batches])
    np.testing.assert_allclose(rs.mean, flat.mean(axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(rs.var, flat.var(axis=0), rtol=1e-7, atol=1e-6)


# --------------------------------------------------------------------------- (e) error messages


def test_error_x_ndim():
    with pytest.raises(ValueError, match=r"x must be \(H, W\), \(H, W, C\) or \(N, H, W, C\)"):
        instance_norm(np.zeros(5))
    with pytest.raises(ValueError, match=r"got an array of shape \(1, 2, 3, 4, 5\)"):
        layer_norm(np.zeros((1, 2, 3, 4, 5)))


def test_error_empty():
    with pytest.raises(ValueError, match=r"x is empty \(shape \(0, 3, 1\)\)"):
        group_norm(np.zeros((0, 3, 1)), 1)


@pytest.mark.parametrize("dtype", [bool, complex, object, "U3"])
def test_error_x_dtype(dtype):
    with pytest.raises(TypeError, match="x must have a real integer or floating dtype"):
        instance_norm(np.zeros((2, 2, 1), dtype=dtype))


@pytest.mark.parametrize("eps", [0.0, -1e-5, float("nan"), float("inf")])
def test_error_eps_value(eps):
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        layer_norm(np.zeros((2, 2)), eps=eps)


def test_error_eps_type():
    with pytest.raises(TypeError, match="eps must be a real number"):
        instance_norm(np.zeros((2, 2)), eps="1e-5")


@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan")])
def test_error_momentum_range(momentum):
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        batch_norm(np.zeros((2, 2, 1)), None, None, momentum=momentum)


def test_error_momentum_none():
    with pytest.raises(ValueError, match=r"momentum must be a float in \[0, 1\], got None"):
        batch_norm(np.zeros((2, 2, 1)), None, None, momentum=None)


def test_error_momentum_type():
    with pytest.raises(TypeError, match=r"momentum must be a float in \[0, 1\]"):
        batch_norm(np.zeros((2, 2, 1)), None, None, momentum="0.1")


def test_error_weight_length():
    with pytest.raises(ValueError, match=r"weight has length 5, expected .*length C=3"):
        instance_norm(np.zeros((2, 2, 3)), weight=np.ones(5))


def test_error_bias_length():
    with pytest.raises(ValueError, match=r"bias has length 2, expected .*length C=3"):
        group_norm(np.zeros((2, 2, 3)), 3, bias=[1.0, 2.0])


def test_error_weight_shape():
    with pytest.raises(ValueError, match=r"weight has shape \(3, 1\), expected"):
        batch_norm(np.zeros((2, 2, 3)), None, None, weight=np.ones((3, 1)))


def test_error_layer_norm_weight_shape_names_image_shape():
    with pytest.raises(ValueError, match=r"or the image shape \(2, 4, 3\)"):
        layer_norm(np.zeros((5, 2, 4, 3)), weight=np.ones((3, 2, 4)))


def test_error_weight_dtype():
    with pytest.raises(TypeError, match="weight must have a real integer or floating dtype"):
        instance_norm(np.zeros((2, 2, 2)), weight=np.array([True, False]))


def test_error_instance_norm_single_spatial_element():
    with pytest.raises(ValueError, match="expected more than 1 spatial element per channel"):
        instance_norm(np.zeros((4, 1, 1, 3)))


def test_error_batch_norm_single_value_per_channel():
    with pytest.raises(ValueError, match="expected more than 1 value per channel when training"):
        batch_norm(np.zeros((1, 1, 1, 3)), np.zeros(3), np.ones(3))


def test_batch_norm_single_value_allowed_in_eval():
    y = batch_norm(np.ones((1, 1, 3)), np.zeros(3), np.full(3, 4.0), training=False, eps=1e-12)
    np.testing.assert_allclose(y, np.full((1, 1, 3), 0.5))


def test_error_batch_norm_eval_requires_running_stats():
    with pytest.raises(ValueError, match="running_mean and running_var are required when training=False"):
        batch_norm(np.zeros((2, 2, 1)), None, np.ones(1), training=False)


def test_error_batch_norm_running_stats_together():
    with pytest.raises(ValueError, match="must be given together"):
        batch_norm(np.zeros((2, 2, 1)), np.zeros(1), None)


def test_error_running_stats_not_an_array():
    with pytest.raises(TypeError, match="running_mean must be a float numpy array of length C=1"):
        batch_norm(np.zeros((2, 2, 1)), [0.0], np.ones(1))


def test_error_running_stats_integer_dtype():
    with pytest.raises(TypeError, match="running_var must have a floating dtype to be updated"):
        batch_norm(np.zeros((2, 2, 1)), np.zeros(1), np.ones(1, dtype=np.int64))


def test_error_running_stats_length():
    with pytest.raises(ValueError, match=r"running_mean has shape \(4,\), expected .*C=3"):
        batch_norm(np.zeros((2, 2, 3)), np.zeros(4), np.ones(4))


def test_error_running_stats_read_only():
    rm = np.zeros(1)
    rm.flags.writeable = False
    with pytest.raises(ValueError, match="running_mean is read-only"):
        batch_norm(np.zeros((2, 2, 1)), rm, np.ones(1))


def test_eval_accepts_lists_and_read_only_arrays():
    rv = np.ones(2)
    rv.flags.writeable = False
    y = batch_norm(np.zeros((2, 2, 2)), [1.0, 2.0], rv, training=False)
    assert y.shape == (2, 2, 2)


def test_error_negative_running_var():
    with pytest.raises(ValueError, match="running_var must be >= 0"):
        batch_norm(np.zeros((2, 2, 1)), np.zeros(1), -np.ones(1), training=False)


def test_error_training_type():
    with pytest.raises(TypeError, match="training must be a bool"):
        batch_norm(np.zeros((2, 2, 1)), None, None, training="False")


def test_error_group_norm_divisibility():
    with pytest.raises(ValueError, match=r"num_groups=3 does not divide the number of channels C=4"):
        group_norm(np.zeros((2, 2, 4)), 3)


def test_error_group_norm_num_groups_value():
    with pytest.raises(ValueError, match="num_groups must be >= 1, got 0"):
        group_norm(np.zeros((2, 2, 4)), 0)


def test_error_group_norm_num_groups_type():
    with pytest.raises(TypeError, match="num_groups must be an integer"):
        group_norm(np.zeros((2, 2, 4)), 2.0)


def test_error_running_stats_channel_mismatch():
    rs = RunningStats()
    rs.update(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="batch has C=4 channels, but earlier batches had C=3"):
        rs.update(np.zeros((2, 2, 4)))


def test_error_running_stats_single_value_batch():
    with pytest.raises(ValueError, match="expected more than 1 value per channel in a batch"):
        RunningStats().update(np.zeros((1, 1, 2)))


def test_error_running_stats_before_data():
    rs = RunningStats()
    with pytest.raises(ValueError, match=r"RunningStats.mean is undefined before the first update"):
        rs.mean
    with pytest.raises(ValueError, match=r"RunningStats.running_var is undefined before C is known"):
        rs.running_var


def test_error_running_stats_num_channels():
    with pytest.raises(ValueError, match="num_channels must be >= 1"):
        RunningStats(num_channels=0)
    with pytest.raises(TypeError, match="num_channels must be an integer"):
        RunningStats(num_channels=2.5)


def test_error_running_stats_momentum():
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        RunningStats().update(np.zeros((2, 2, 1)), momentum=2.0)


# --------------------------------------------------------------------------- docs


def test_docstring_examples():
    result = doctest.testmod(norm_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


# --------------------------------------------------------------------------- (f) live torch


def test_live_random_comparison_with_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(12345)

    def nchw(a):
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))

    def nhwc(t):
        return t.numpy().transpose(0, 2, 3, 1)

    for _ in range(25):
        n, h, w = (int(v) for v in rng.integers(1, 8, size=3))
        if h * w < 2:
            h = 2
        c = int(rng.choice([1, 2, 3, 4, 6]))
        x = rng.normal(rng.uniform(-5, 5), rng.uniform(0.1, 10), size=(n, h, w, c))
        eps = float(10 ** rng.uniform(-6, -1))
        weight, bias = rng.normal(1, 0.5, size=c), rng.normal(0, 1, size=c)
        tw, tb = torch.from_numpy(weight), torch.from_numpy(bias)
        tol = {"rtol": 1e-10, "atol": 1e-10}

        np.testing.assert_allclose(
            instance_norm(x, eps=eps, weight=weight, bias=bias),
            nhwc(F.instance_norm(nchw(x), weight=tw, bias=tb, eps=eps)), **tol)

        groups = int(rng.choice([g for g in range(1, c + 1) if c % g == 0]))
        np.testing.assert_allclose(
            group_norm(x, groups, eps=eps, weight=weight, bias=bias),
            nhwc(F.group_norm(nchw(x), groups, weight=tw, bias=tb, eps=eps)), **tol)

        ew = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(weight[:, None, None], (c, h, w))))
        eb = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(bias[:, None, None], (c, h, w))))
        np.testing.assert_allclose(
            layer_norm(x, eps=eps, weight=weight, bias=bias),
            nhwc(F.layer_norm(nchw(x), (c, h, w), weight=ew, bias=eb, eps=eps)), **tol)

        if n * h * w > 1:
            momentum = float(rng.uniform(0, 1))
            rm, rv = rng.normal(size=c), rng.uniform(0.5, 2, size=c)
            trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
            y = batch_norm(x, rm, rv, weight=weight, bias=bias, momentum=momentum, eps=eps)
            ty = F.batch_norm(nchw(x), trm, trv, weight=tw, bias=tb, training=True,
                              momentum=momentum, eps=eps)
            np.testing.assert_allclose(y, nhwc(ty), **tol)
            np.testing.assert_allclose(rm, trm.numpy(), **tol)
            np.testing.assert_allclose(rv, trv.numpy(), **tol)
            y = batch_norm(x, rm, rv, weight=weight, bias=bias, training=False, eps=eps)
            ty = F.batch_norm(nchw(x), trm, trv, weight=tw, bias=tb, training=False, eps=eps)
            np.testing.assert_allclose(y, nhwc(ty), **tol)
