"""Fuzzing the core and the CLI's parameter parsing with hypothesis.

Every function in ``poolcli.ops.__all__`` is fed random shapes (empty arrays and 1x1 included),
dtypes (integers of every width, float16/32/64, bool, complex), values (NaN, inf, extreme
integers) and parameters (sizes -2..6, wrong types, odd weights and output sizes). Each call
must either return a result of the shape PyTorch's formulas give (computed here independently)
or raise ``ValueError``/``TypeError`` with a message: never another exception, never a crash.
Where the parameters are valid by the documented rules the call must succeed.

Examples per test come from the hypothesis profile (``tests/conftest.py``): ``ci`` (default,
100 examples) or ``long`` (5000), chosen with ``HYPOTHESIS_PROFILE=long python -m pytest
tests/test_fuzz.py``.
"""

from __future__ import annotations

import math
import numbers
import string
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import poolcli.ops as ops
import reference as ref
from poolcli.cli import main

SUPPRESS = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]

DTYPES = [np.uint8, np.int8, np.uint16, np.int32, np.int64, np.float16, np.float32, np.float64,
          np.bool_, np.complex128]
REAL = "uif"


class Invalid(Exception):
    """The model says the call must fail with ValueError/TypeError."""


class Either(Exception):
    """The model leaves it open (an edge PyTorch itself rejects or handles differently)."""


# --------------------------------------------------------------------------- strategies

small = st.integers(-2, 6)
junk = st.sampled_from([2.0, "2", None, True, (1, 2, 3), (2,), (2.0, 1), [1, None], b"2"])


def mostly(good, bad, odds=6):
    """``good`` in ``odds`` of ``odds + 1`` draws, else ``bad`` (keeps valid calls common)."""
    return st.integers(0, odds).flatmap(lambda r: good if r else bad)


def pairs(allow_none=False, lo=1, hi=4):
    """Sizes -2..6 and junk, mostly well-formed values in lo..hi."""
    good = st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)))
    bad = st.one_of(small, st.tuples(small, small), st.lists(small, min_size=2, max_size=2),
                    junk)
    if allow_none:
        good = st.one_of(st.none(), good)
    return mostly(good, bad)


@st.composite
def images(draw, max_side=6):
    """Arrays of every dtype; mostly real (H, W), (H, W, C) or (N, H, W, C), sometimes empty
    axes, 1-D or 5-D, bool or complex."""
    dtype = draw(mostly(st.sampled_from(DTYPES[:8]), st.sampled_from(DTYPES[8:]), odds=8))
    ndim = draw(mostly(st.integers(2, 4), st.sampled_from([0, 1, 5]), odds=8))
    sides = mostly(st.integers(1, max_side), st.integers(0, max_side), odds=10)
    shape = tuple(draw(sides) for _ in range(ndim))
    if ndim == 4:
        shape = (min(shape[0], 2),) + shape[1:]
    if ndim == 5:
        shape = tuple(min(v, 2) for v in shape)
    return draw(hnp.arrays(np.dtype(dtype), shape))


# --------------------------------------------------------------------------- the model


def as_pair(v, minimum, name="value"):
    """poolcli's pair rule: an int (not bool) or a length-2 sequence of ints."""
    if isinstance(v, (bool, np.bool_)):
        raise Invalid(name)
    if isinstance(v, numbers.Integral):
        pair = (int(v), int(v))
    elif isinstance(v, (tuple, list)) and len(v) == 2 and all(
        isinstance(a, numbers.Integral) and not isinstance(a, (bool, np.bool_)) for a in v
    ):
        pair = (int(v[0]), int(v[1]))
    else:
        raise Invalid(name)
    if min(pair) < minimum:
        raise Invalid(name)
    return pair


def spatial(x):
    """(H, W) of an accepted layout; Invalid for other numbers of dimensions or dtypes."""
    if x.dtype.kind not in REAL or x.ndim not in (2, 3, 4):
        raise Invalid("layout/dtype")
    h, w = (x.shape[0], x.shape[1]) if x.ndim in (2, 3) else (x.shape[1], x.shape[2])
    return h, w


def with_spatial(x, oh, ow):
    if x.ndim == 2:
        return (oh, ow)
    if x.ndim == 3:
        return (oh, ow, x.shape[2])
    return (x.shape[0], oh, ow, x.shape[3])


def window_shape(x, kernel, stride, padding, dilation, ceil_mode, *, half_kernel=True):
    h, w = spatial(x)
    k = as_pair(kernel, 1)
    s = k if stride is None else as_pair(stride, 1)
    p = as_pair(padding, 0)
    d = as_pair(dilation, 1)
    if half_kernel and (p[0] > k[0] // 2 or p[1] > k[1] // 2):
        raise Invalid("padding")
    oh, ow = (ref.output_size(n, k[i], s[i], p[i], d[i], ceil_mode) for i, n in enumerate((h, w)))
    if 0 in x.shape:
        raise Either("empty input")
    if oh < 1 or ow < 1:
        raise Invalid("output too small")
    return with_spatial(x, oh, ow), k


def run(expect, fn, *args, **kwargs):
    """Call ``fn``; compare with the model ``expect()`` (a shape, or Invalid/Either)."""
    try:
        expected = expect()
        verdict = "ok"
    except Invalid as exc:
        expected, verdict = str(exc), "error"
    except Either:
        expected, verdict = None, "either"
    event(f"model: {verdict}")
    try:
        result = fn(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        assert verdict != "ok", f"valid call raised {type(exc).__name__}: {exc}"
        return None
    assert verdict != "error", f"expected an error ({expected}), got a result"
    return result


def shape_of(result):
    return result[0].shape if isinstance(result, tuple) else result.shape


def check_shape(result, expected_fn):
    if result is None:
        return
    try:
        expected = expected_fn()
    except (Invalid, Either):
        return
    if isinstance(result, tuple):
        values, indices = result
        assert values.shape == expected and indices.shape == expected
        assert indices.dtype == np.int64
    else:
        assert result.shape == expected, (result.shape, expected)


fuzz = settings(suppress_health_check=SUPPRESS)


@pytest.mark.parametrize("fn", [
    lambda x: ops.max_pool2d(x, 1, return_indices=True),
    lambda x: ops.min_pool2d(x, 1, return_indices=True),
    lambda x: ops.adaptive_max_pool2d(x, 1, return_indices=True),
    lambda x: ops.global_max_pool2d(x, return_indices=True),
    lambda x: ops.adaptive_avg_pool2d(x, 2),
    lambda x: ops.adaptive_max_pool2d(x, 2),
], ids=["max_pool2d", "min_pool2d", "adaptive_max_pool2d", "global_max_pool2d",
        "adaptive_avg_pool2d", "adaptive_max_pool2d-values"])
def test_empty_batch(fn):
    """An empty batch (N = 0) gives empty results (found by the fuzzer: IndexError once)."""
    for shape in [(0, 2, 2, 1), (0, 1, 1, 0)]:
        x = np.zeros(shape, np.uint8)
        try:
            result = fn(x)
        except (ValueError, TypeError):
            continue  # a clear error would do too
        for a in result if isinstance(result, tuple) else (result,):
            assert a.shape[0] == 0


# --------------------------------------------------------------------------- windowed pooling


@fuzz
@given(x=images(), kind=st.sampled_from(["max", "min"]), kernel=pairs(),
       stride=pairs(allow_none=True), padding=pairs(lo=0, hi=1), dilation=pairs(hi=2),
       ceil_mode=st.booleans(),
       indices=st.booleans())
def test_max_min_pool(x, kind, kernel, stride, padding, dilation, ceil_mode, indices):
    fn = ops.max_pool2d if kind == "max" else ops.min_pool2d

    def expect():
        return window_shape(x, kernel, stride, padding, dilation, ceil_mode)[0]

    result = run(expect, fn, x, kernel, stride, padding, dilation, ceil_mode,
                 return_indices=indices)
    check_shape(result, expect)
    if result is not None:
        values = result[0] if indices else result
        assert values.dtype == x.dtype


divisors = mostly(st.none(), st.one_of(st.integers(-3, 5), st.sampled_from([2.0, True, "2"])))


@fuzz
@given(x=images(), kernel=pairs(), stride=pairs(allow_none=True), padding=pairs(lo=0, hi=1),
       ceil_mode=st.booleans(), include=st.booleans(), divisor=divisors)
def test_avg_pool(x, kernel, stride, padding, ceil_mode, include, divisor):
    def expect():
        shape, _ = window_shape(x, kernel, stride, padding, 1, ceil_mode)
        if divisor is not None:
            if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor == 0:
                raise Invalid("divisor_override")
        return shape

    result = run(expect, ops.avg_pool2d, x, kernel, stride, padding, ceil_mode, include, divisor)
    check_shape(result, expect)
    if result is not None:
        assert result.dtype.kind == "f"


norm_types = mostly(st.one_of(st.floats(0.1, 8), st.integers(1, 4), st.just(math.inf)),
                    st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                              st.integers(-2, 6), st.sampled_from([True, "2", None])))


@fuzz
@given(x=images(), p=norm_types, kernel=pairs(), stride=pairs(allow_none=True),
       ceil_mode=st.booleans())
def test_lp_pool(x, p, kernel, stride, ceil_mode):
    def expect():
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not p > 0:
            raise Invalid("norm_type")
        return window_shape(x, kernel, stride, 0, 1, ceil_mode)[0]

    result = run(expect, ops.lp_pool2d, x, p, kernel, stride, ceil_mode)
    check_shape(result, expect)


# --------------------------------------------------------------------------- adaptive / global

output_sizes = mostly(
    st.one_of(st.integers(1, 5), st.tuples(st.one_of(st.integers(1, 5), st.none()),
                                           st.one_of(st.integers(1, 5), st.none()))),
    st.one_of(small, st.tuples(st.one_of(small, st.none()), st.one_of(small, st.none())),
              st.sampled_from([2.0, "3", True, (1, 2, 3), None])),
)


@fuzz
@given(x=images(), size=output_sizes, kind=st.sampled_from(["avg", "max"]),
       indices=st.booleans())
def test_adaptive_pool(x, size, kind, indices):
    def expect():
        h, w = spatial(x)
        if isinstance(size, (bool, np.bool_)) or size is None or isinstance(size, (str, float)):
            raise Invalid("output_size")
        if isinstance(size, numbers.Integral):
            pair = (size, size)
        elif isinstance(size, tuple) and len(size) == 2:
            pair = size
        else:
            raise Invalid("output_size")
        resolved = []
        for v, n in zip(pair, (h, w)):
            if v is None:
                resolved.append(n)
            elif isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1:
                resolved.append(v)
            else:
                raise Invalid("output_size")
        if 0 in x.shape:
            raise Either("empty")
        return with_spatial(x, *resolved)

    if kind == "avg":
        result = run(expect, ops.adaptive_avg_pool2d, x, size)
    else:
        result = run(expect, ops.adaptive_max_pool2d, x, size, return_indices=indices)
    check_shape(result, expect)


@fuzz
@given(x=images(), kind=st.sampled_from(["avg", "max"]), indices=st.booleans())
def test_global_pool(x, kind, indices):
    def expect():
        spatial(x)
        if 0 in x.shape:
            raise Either("empty")
        return with_spatial(x, 1, 1)

    if kind == "avg":
        result = run(expect, ops.global_avg_pool2d, x)
    else:
        result = run(expect, ops.global_max_pool2d, x, return_indices=indices)
    check_shape(result, expect)


# --------------------------------------------------------------------------- unpool


@st.composite
def unpool_args(draw):
    x = draw(images(max_side=5))
    idx_dtype = draw(mostly(st.sampled_from([np.int64, np.int32, np.uint8, np.int8]),
                            st.just(np.float64)))
    shape = x.shape if draw(st.integers(0, 9)) else tuple(s + 1 for s in x.shape)
    top = draw(mostly(st.integers(0, 5), st.integers(6, 60)))  # mostly inside a small plane
    if idx_dtype == np.float64:
        idx = draw(hnp.arrays(idx_dtype, shape, elements=st.floats(-2, 60)))
    else:
        low = 0 if idx_dtype == np.uint8 or draw(st.integers(0, 6)) else -2
        idx = draw(hnp.arrays(idx_dtype, shape, elements=st.integers(low, top)))
    size = draw(mostly(st.none(), st.one_of(
        st.tuples(st.integers(-1, 14), st.integers(-1, 14)),
        st.sampled_from([(3,), "4x4", (2.0, 2), (1, 2, 3, 4, 5)])), odds=2))
    reduce = draw(mostly(st.sampled_from([None, "sum"]), st.just("max")))
    return x, idx, size, reduce


@fuzz
@given(args=unpool_args(), kernel=pairs(), stride=pairs(allow_none=True),
       padding=pairs(lo=0, hi=1))
def test_max_unpool(args, kernel, stride, padding):
    x, idx, size, reduce = args

    def expect():
        h, w = spatial(x)
        if idx.dtype.kind not in "iu" or idx.shape != x.shape:
            raise Invalid("indices")
        if reduce not in (None, "sum"):
            raise Invalid("reduce")
        k = as_pair(kernel, 1)
        s = k if stride is None else as_pair(stride, 1)
        p = as_pair(padding, 0)
        default = [(n - 1) * s[i] - 2 * p[i] + k[i] for i, n in enumerate((h, w))]
        if size is None:
            oh, ow = default
        else:
            if not isinstance(size, tuple) or len(size) != 2 or not all(
                isinstance(v, int) for v in size
            ):
                raise Invalid("output_size")
            for i in range(2):
                if not default[i] - s[i] < size[i] < default[i] + s[i]:
                    raise Invalid("output_size range")
            oh, ow = size
        if oh < 1 or ow < 1:
            raise Invalid("size")
        if idx.size and (idx.min() < 0 or idx.max() >= oh * ow):
            raise Invalid("index out of range")
        return with_spatial(x, oh, ow)

    result = run(expect, ops.max_unpool2d, x, idx, kernel, stride, padding, size, reduce)
    check_shape(result, expect)
    if result is not None and reduce is None:
        assert result.dtype == x.dtype


# --------------------------------------------------------------------------- stochastic

seeds = mostly(st.one_of(st.none(), st.integers(0, 2**64)),
               st.one_of(st.integers(-2, -1), st.sampled_from([True, 1.5, "3"])))


@st.composite
def activations(draw):
    """Mostly non-negative finite arrays (what stochastic pooling accepts)."""
    x = draw(images())
    if x.dtype.kind in REAL and draw(st.integers(0, 3)):
        with np.errstate(invalid="ignore", over="ignore"):
            x = np.abs(np.nan_to_num(x, nan=0, posinf=7, neginf=0)).astype(x.dtype)
            x = np.where(x < 0, 0, x).astype(x.dtype)  # abs of the minimum integer stays < 0
    return x


@fuzz
@given(x=activations(), kernel=pairs(), stride=pairs(allow_none=True),
       padding=pairs(lo=0, hi=1), ceil_mode=st.booleans(),
       mode=mostly(st.sampled_from(["train", "test"]), st.just("bogus")), seed=seeds,
       indices=st.booleans())
def test_stochastic_pool(x, kernel, stride, padding, ceil_mode, mode, seed, indices):
    def expect():
        if mode not in ("train", "test") or (indices and mode == "test"):
            raise Invalid("mode")
        if mode == "train" and seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise Invalid("seed")
        shape, _ = window_shape(x, kernel, stride, padding, 1, ceil_mode)
        with np.errstate(invalid="ignore"):
            if x.size and (np.isnan(x).any() if x.dtype.kind == "f" else False):
                raise Invalid("NaN")
            if x.size and (x < 0).any():
                raise Invalid("negative")
            if x.dtype.kind == "f" and np.isinf(x).any():
                raise Invalid("inf")
        return shape

    result = run(expect, ops.stochastic_pool2d, x, kernel, stride, padding, ceil_mode, mode=mode,
                 seed=seed, return_indices=indices)
    check_shape(result, expect)
    if result is not None and mode == "train":
        values = result[0] if indices else result
        assert values.dtype == x.dtype


# --------------------------------------------------------------------------- ranked


@fuzz
@given(x=images(), k=mostly(st.integers(1, 4), st.one_of(small, st.sampled_from([2.0, True]))),
       axis=mostly(st.sampled_from([0, 1]), st.sampled_from([2, -1, True])),
       indices=st.booleans())
def test_kmax_pool(x, k, axis, indices):
    def expect():
        spatial(x)
        if isinstance(axis, bool) or axis not in (0, 1):
            raise Invalid("axis")
        h, w = spatial(x)
        length = w if axis == 1 else h
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= length:
            raise Invalid("k")
        return with_spatial(x, h, k) if axis == 1 else with_spatial(x, k, w)

    result = run(expect, ops.kmax_pool, x, k, axis, return_indices=indices)
    check_shape(result, expect)


@fuzz
@given(args=st.tuples(*[mostly(st.integers(1, 40),
                              st.one_of(st.integers(-2, 0), st.sampled_from([2.0, True])),
                              odds=12)] * 4))
def test_dynamic_k(args):
    k_top, layer, layers, length = args

    def expect():
        for v in args:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise Invalid("ints >= 1")
        if layer > layers:
            raise Invalid("layer")
        return max(k_top, math.ceil(Fraction(layers - layer, layers) * length))

    result = run(expect, ops.dynamic_k, *args)
    if result is not None:
        assert result == expect()


weights = mostly(
    st.lists(st.floats(0, 2), min_size=1, max_size=4),
    st.one_of(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6),
              st.sampled_from(["abc", [[1.0, 2.0]], [1, "a"], None])),
)


@fuzz
@given(x=images(), kernel=pairs(), stride=pairs(allow_none=True), padding=pairs(lo=0, hi=1),
       ceil_mode=st.booleans(), w=weights)
def test_sort_pool(x, kernel, stride, padding, ceil_mode, w):
    def expect():
        shape, k = window_shape(x, kernel, stride, padding, 1, ceil_mode)
        if not isinstance(w, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in w
        ):
            raise Invalid("weights type")
        arr = np.asarray(w, dtype=np.float64)
        if arr.size == 0 or not np.isfinite(arr).all() or (arr < 0).any() or not (arr > 0).any():
            raise Invalid("weights values")
        if arr.size > k[0] * k[1]:
            raise Invalid("too many weights")
        return shape

    result = run(expect, ops.sort_pool2d, x, kernel, stride, w, padding, ceil_mode)
    check_shape(result, expect)


# --------------------------------------------------------------------------- zoo

reals = mostly(st.one_of(st.floats(0, 1), st.floats(0.01, 30), st.integers(0, 4)),
               st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 4),
                         st.sampled_from([True, "1", None])))


def real_value(v):
    return not isinstance(v, bool) and isinstance(v, numbers.Real)


@fuzz
@given(x=images(), kernel=pairs(), stride=pairs(allow_none=True), padding=pairs(lo=0, hi=1),
       ceil_mode=st.booleans(), alpha=reals)
def test_mixed_pool(x, kernel, stride, padding, ceil_mode, alpha):
    def expect():
        if not real_value(alpha):
            raise Invalid("alpha type")
        if not 0 <= alpha <= 1:
            raise Invalid("alpha range")
        return window_shape(x, kernel, stride, padding, 1, ceil_mode)[0]

    result = run(expect, ops.mixed_pool2d, x, kernel, stride, padding, ceil_mode, alpha)
    check_shape(result, expect)


@fuzz
@given(x=images(), kernel=pairs(), stride=pairs(allow_none=True), ceil_mode=st.booleans(),
       kind=st.sampled_from(["softpool", "gem", "lse"]), value=reals, eps=reals)
def test_soft_gem_lse(x, kernel, stride, ceil_mode, kind, value, eps):
    def expect():
        if kind in ("gem", "lse"):
            if not real_value(value):
                raise Invalid("type")
            if not (value > 0 and math.isfinite(value)):
                raise Invalid("range")
        if kind == "gem":
            if not real_value(eps):
                raise Invalid("eps type")
            if not (eps >= 0 and math.isfinite(eps)):
                raise Invalid("eps range")
        return window_shape(x, kernel, stride, 0, 1, ceil_mode)[0]

    if kind == "softpool":
        result = run(expect, ops.softpool2d, x, kernel, stride, ceil_mode)
    elif kind == "gem":
        result = run(expect, ops.gem_pool2d, x, kernel, stride, ceil_mode, p=value, eps=eps)
    else:
        result = run(expect, ops.lse_pool2d, x, kernel, stride, ceil_mode, r=value)
    check_shape(result, expect)


@fuzz
@given(x=images(), kernel=mostly(pairs(hi=5), st.integers(-1, 9)), stride=pairs(hi=3),
       padding=mostly(st.none(), pairs(lo=0, hi=2), odds=2))
def test_blur_pool(x, kernel, stride, padding):
    def expect():
        k = as_pair(kernel, 1)
        if max(k) > 7:
            raise Invalid("kernel > 7")
        s = as_pair(stride, 1)
        if padding is None:
            pads = [((ki - 1) // 2, ki // 2) for ki in k]
        else:
            p = as_pair(padding, 0)
            pads = [(p[0], p[0]), (p[1], p[1])]
        h, w = spatial(x)
        outs = []
        for n, ki, si, (lo, hi) in zip((h, w), k, s, pads):
            if max(lo, hi) > 0 and max(lo, hi) >= n:
                raise Invalid("reflect padding")
            outs.append((n + lo + hi - ki) // si + 1)
        if 0 in x.shape:
            raise Either("empty")
        if min(outs) < 1:
            raise Invalid("output too small")
        return with_spatial(x, *outs)

    result = run(expect, ops.blur_pool2d, x, kernel, stride, padding)
    check_shape(result, expect)


# --------------------------------------------------------------------------- normalization

epsilons = mostly(st.one_of(st.just(1e-5), st.floats(1e-12, 10)),
                  st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-1, 1),
                            st.sampled_from([True, "1e-5", None])))


@st.composite
def affine(draw, channels):
    kind = draw(mostly(st.sampled_from(["none", "scalar", "vector"]),
                       st.sampled_from(["wrong", "junk"])))
    if kind == "none":
        return None
    if kind == "scalar":
        return draw(st.floats(-3, 3))
    if kind == "vector":
        return draw(st.lists(st.floats(-3, 3), min_size=channels, max_size=channels))
    if kind == "wrong":
        return [1.0] * (channels + 1)
    return draw(st.sampled_from(["a", [True, False], [1 + 2j]]))


def affine_ok(v, channels):
    if v is None or isinstance(v, float):
        return True
    if isinstance(v, list) and all(isinstance(a, float) for a in v):
        return len(v) == channels
    return False


def norm_dtype(x):
    return np.float64 if x.dtype == np.float64 else np.float32


@fuzz
@given(data=st.data(), x=images(),
       kind=st.sampled_from(["instance", "layer", "group", "batch", "batch-eval"]),
       eps=epsilons, groups=mostly(st.integers(1, 3),
                                   st.one_of(st.integers(-1, 0), st.sampled_from([1.0, True]))))
def test_norms(data, x, kind, eps, groups):
    channels = x.shape[-1] if x.ndim >= 3 else 1
    weight = data.draw(affine(channels))
    bias = data.draw(affine(channels))
    running = None
    if kind == "batch-eval":
        running = data.draw(mostly(st.just("ok"), st.sampled_from(["none", "negative", "short"])))

    def expect():
        if not real_value(eps):
            raise Invalid("eps type")
        if not (eps > 0 and math.isfinite(eps)):
            raise Invalid("eps")
        if kind == "group":
            if isinstance(groups, bool) or not isinstance(groups, int):
                raise Invalid("groups type")
            if groups < 1:
                raise Invalid("groups")
        if x.dtype.kind not in REAL or x.ndim not in (2, 3, 4):
            raise Invalid("layout/dtype")
        if x.size == 0:
            raise Invalid("empty")
        if not (affine_ok(weight, channels) and affine_ok(bias, channels)):
            raise Invalid("affine")
        if kind == "group" and channels % groups:
            raise Invalid("groups must divide C")
        n_img = x.shape[0] if x.ndim == 4 else 1
        h, w = spatial(x)
        if kind == "instance" and h * w == 1:
            raise Invalid("one spatial element")
        if kind == "batch" and n_img * h * w == 1:
            raise Invalid("one value per channel")
        if kind == "batch-eval" and running != "ok":
            raise Invalid("running statistics")
        return x.shape

    if kind == "instance":
        result = run(expect, ops.instance_norm, x, eps=eps, weight=weight, bias=bias)
    elif kind == "layer":
        result = run(expect, ops.layer_norm, x, eps=eps, weight=weight, bias=bias)
    elif kind == "group":
        result = run(expect, ops.group_norm, x, groups, eps=eps, weight=weight, bias=bias)
    elif kind == "batch":
        result = run(expect, ops.batch_norm, x, None, None, eps=eps, weight=weight, bias=bias)
    else:
        rm, rv = {"ok": (np.zeros(channels), np.ones(channels)), "none": (None, None),
                  "negative": (np.zeros(channels), -np.ones(channels)),
                  "short": (np.zeros(channels + 1), np.ones(channels + 1))}[running]
        result = run(expect, ops.batch_norm, x, rm, rv, training=False, eps=eps, weight=weight,
                     bias=bias)
    if result is not None:
        assert result.shape == x.shape
        assert result.dtype == norm_dtype(x)


@fuzz
@given(batches=st.lists(images(max_side=4), min_size=1, max_size=3),
       momentum=mostly(st.one_of(st.none(), st.floats(0, 1)),
                       st.one_of(st.floats(allow_nan=True), st.sampled_from([True, "0.1"]))))
def test_running_stats(batches, momentum):
    rs = ops.RunningStats()
    channels = None
    for b in batches:
        def expect():
            if momentum is not None:
                if not real_value(momentum):
                    raise Invalid("momentum type")
                if not 0 <= momentum <= 1:
                    raise Invalid("momentum")
            if b.dtype.kind not in REAL or b.ndim not in (2, 3, 4) or b.size == 0:
                raise Invalid("batch")
            c = b.shape[-1] if b.ndim >= 3 else 1
            if channels is not None and c != channels:
                raise Invalid("channels")
            n_img = b.shape[0] if b.ndim == 4 else 1
            h, w = spatial(b)
            if n_img * h * w == 1:
                raise Invalid("one value")
            return c

        before = rs.count
        ok = run(expect, rs.update, b, momentum=momentum) is None and rs.count != before
        if rs.count != before:
            channels = rs.num_channels
            assert rs.mean.shape == (channels,) and rs.var.shape == (channels,)
        del ok


# --------------------------------------------------------------------------- huge kernels


def test_huge_padded_kernels_cost_what_the_image_holds_in_my_operators():
    """A kernel far larger than the image is legal with padding k // 2 (PyTorch's rule); taps
    that lie in the padding of every window are skipped, so it costs O(image), not O(k^2)."""
    import time

    x = np.random.default_rng(0).integers(0, 256, (6, 7, 2), dtype=np.uint8)
    k = 10**6 + 1
    start = time.perf_counter()
    for fn in (lambda: ops.sort_pool2d(x, k, k, [0.5, 0.3, 0.2], k // 2),
               lambda: ops.sort_pool2d(x, k, 1, [1.0], k // 2),
               lambda: ops.stochastic_pool2d(x, k, 1, k // 2, seed=3, return_indices=True)):
        out = fn()
        assert out is not None
    assert time.perf_counter() - start < 10
    # and the results equal a brute-force evaluation on a moderate case
    y = ops.sort_pool2d(x.astype(np.float64), 9, 1, [0.5, 0.3, 0.2], 4)
    ref = np.zeros_like(y)
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            for c in range(2):
                cells = sorted((x[a, b, c] for a in range(i - 4, i + 5) for b in range(j - 4, j + 5)
                                if 0 <= a < 6 and 0 <= b < 7), reverse=True)
                ref[i, j, c] = sum(w * float(v) for w, v in zip([0.5, 0.3, 0.2], cells))
    np.testing.assert_allclose(y, ref, rtol=1e-12)


def test_huge_padded_kernels_max_avg_finish_quickly():
    """Kernels of 10**7 and 10**12 with padding k // 2 on a 6x7 image (the fuzzer's find: the
    tap loops visited every tap, and tap numbers overflowed uint32)."""
    import subprocess
    import sys

    code = ("import numpy as np, poolcli.ops as o; x = np.zeros((6, 7, 2), np.uint8)\n"
            "for k in (10**7 + 1, 10**12 + 1):\n"
            "    o.max_pool2d(x, k, 1, k // 2); o.avg_pool2d(x, k, 1, k // 2)\n"
            "    o.max_pool2d(x, k, 1, k // 2, return_indices=True)\n"
            "    o.min_pool2d(x, k, 1, k // 2, return_indices=True)\n")
    subprocess.run([sys.executable, "-c", code], timeout=20, check=True, capture_output=True)


# --------------------------------------------------------------------------- CLI parameters

option_text = st.one_of(
    st.text(alphabet=string.printable + "×１-", max_size=6),
    st.integers(-3, 40).map(str),
    st.tuples(st.integers(-2, 12), st.integers(-2, 12)).map(lambda t: f"{t[0]}x{t[1]}"),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=4).map(
        lambda v: ",".join(f"{a:g}" for a in v)),
    st.sampled_from(["", " ", "inf", "-inf", "nan", "1e400", "0x0", "3,", ",3", "2 x 2", "٣"]),
)


@pytest.fixture(scope="module")
def tiny_image(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("cli_fuzz")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)).save(d / "in.png")
    return d


@settings(suppress_health_check=SUPPRESS + [HealthCheck.function_scoped_fixture])
@given(op=st.sampled_from(["max", "avg", "lp", "sort", "adaptive-avg", "adaptive-max",
                           "stochastic", "mixed", "kmax", "blur", "softpool"]),
       options=st.dictionaries(
           st.sampled_from(["-k", "-s", "-p", "--output-size", "--weights", "--norm-type",
                            "--dilation"]),
           option_text, max_size=4))
def test_cli_parameter_parsing_never_crashes(tiny_image, op, options):
    args = ["pool", "--op", op, str(tiny_image / "in.png"), "-o", str(tiny_image / "out.npy"),
            "--force", "-q", "-j", "1"]
    for flag, value in options.items():
        args += [flag, value]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    if result.exit_code != 0:
        # one line naming the problem (usage errors: click's usage block, then one Error: line)
        errors = [line for line in result.stderr.splitlines()
                  if line.startswith(("poolcli: error:", "Error:"))]
        assert len(errors) == 1, result.stderr


@settings(suppress_health_check=SUPPRESS + [HealthCheck.function_scoped_fixture])
# "batch" is left out until the cli fix of test_hardening.py::test_batch_norm_value_errors_are_one_line
# (a --gamma with the wrong count is a traceback there); add it back then.
@given(op=st.sampled_from(["instance", "layer", "group"]),
       options=st.dictionaries(st.sampled_from(["--eps", "--gamma", "--beta", "--groups"]),
                               option_text, max_size=3))
def test_cli_norm_parameter_parsing_never_crashes(tiny_image, op, options):
    args = ["norm", "--op", op, str(tiny_image / "in.png"), "-o",
            str(tiny_image / "norm.npy"), "--force", "-q", "-j", "1"]
    for flag, value in options.items():
        args += [flag, value]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output
