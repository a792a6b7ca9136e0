"""The display mapping band by band (:class:`poolcli.imageio.DisplayMapping`) against the
whole-array computation as :func:`poolcli.imageio.to_display` did it before streaming existed
(:func:`reference`, a verbatim copy): the same ``lo``/``hi`` bits, description, ``uint8`` values
and clipped count, whatever the band boundaries, for every mapping, with NaN, +/-inf, constant
and empty inputs. Row blocks are made small (``_BLOCK_CELLS``) so that sums run over many blocks
and blocks span bands; :func:`test_the_cases_need_the_blocks` shows that summing band by band
instead would give other bits on these inputs, so the agreement is not luck.
"""

from __future__ import annotations

import numpy as np
import pytest

from poolcli.imageio import DisplayMapping, to_display
from poolcli.imageio import values as values_module

SPECS = ["minmax", "sigma", "sigma:2", "sigma:0.5", "clip", "clip255"]


def reference(array, mapping, cells, sigma_k=3.0):
    """``to_display`` before :class:`DisplayMapping`: ``(out, description, lo, hi)``."""
    from poolcli.imageio import parse_display

    values = np.asarray(array)
    name, k = parse_display(mapping)
    if name == "sigma" and ":" not in mapping:
        k = sigma_k
    flat = values.reshape(1) if values.ndim == 0 else values

    def float_blocks(v):
        row = int(np.prod(v.shape[1:], dtype=np.int64)) if v.ndim > 1 else 1
        rows = max(1, cells // max(1, row))
        for r0 in range(0, v.shape[0], rows):
            yield r0, min(v.shape[0], r0 + rows), v[r0 : r0 + rows].astype(np.float64)

    def display_range():
        if name == "clip":
            return 0.0, 1.0, "clip [0, 1] -> [0, 255]"
        if name == "clip255":
            return 0.0, 255.0, "clip [0, 255], rounded"
        count, lo, hi, total = 0, np.inf, -np.inf, 0.0
        for _, _, x in float_blocks(flat):
            data = x[np.isfinite(x)]
            if data.size:
                count += data.size
                lo, hi = min(lo, float(data.min())), max(hi, float(data.max()))
                total += float(data.sum())
        if name == "minmax":
            lo, hi = (lo, hi) if count else (0.0, 0.0)
            if hi > lo:
                return lo, hi, (f"minmax [{lo:.4g}, {hi:.4g}] -> [0, 255] (whole image, all "
                                f"channels)")
            return lo, hi, f"minmax: constant image ({lo:.4g}) -> 128"
        mean = total / count if count else 0.0
        squares = 0.0
        if count:
            for _, _, x in float_blocks(flat):
                d = x[np.isfinite(x)] - mean
                squares += float(np.einsum("i,i->", d, d))
        std = float(np.sqrt(squares / count)) if count else 0.0
        lo, hi = mean - k * std, mean + k * std
        if hi > lo:
            return lo, hi, (
                f"sigma {k:g}: mean {mean:.4g} +/- {k:g}*std {std:.4g} "
                f"= [{lo:.4g}, {hi:.4g}] -> [0, 255], clipped (whole image, all channels)"
            )
        return lo, hi, f"sigma {k:g}: constant image ({mean:.4g}) -> 128"

    lo, hi, description = display_range()
    out = np.empty(flat.shape, dtype=np.uint8)
    clipped = 0
    for r0, r1, x in float_blocks(flat):
        if name in ("minmax", "sigma"):
            if hi > lo:
                scaled = (x - lo) / (hi - lo) * 255.0
            else:
                scaled = np.where(np.isposinf(x), 255.0, np.where(np.isneginf(x), 0.0, 128.0))
        elif name == "clip":
            scaled = x * 255.0
        else:
            scaled = x
        if name in ("sigma", "clip", "clip255"):
            clipped += int(np.count_nonzero((scaled < -0.5) | (scaled > 255.5)))
        nan = np.isnan(x)
        np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        np.rint(scaled, out=scaled)
        np.clip(scaled, 0, 255, out=scaled)
        scaled[nan] = 0
        out[r0:r1] = scaled
    if clipped:
        description += f" ({clipped} of {flat.size} values clipped)"
    return out.reshape(values.shape), description, lo, hi


def cases():
    """``(label, array)``: floats with NaN and +/-inf, sums that depend on their order,
    integers, a constant, nothing finite, empty, 1-D and 0-D."""
    rng = np.random.default_rng(2024)
    for i in range(6):
        shape = (int(rng.integers(1, 40)), int(rng.integers(1, 9)), int(rng.integers(1, 5)))
        x = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 6)).astype(
            np.float32 if i % 2 else np.float64)
        x += rng.standard_normal() * 1e3
        flat = x.reshape(-1)
        for bad in (np.nan, np.inf, -np.inf):
            flat[rng.integers(0, flat.size, size=int(rng.integers(0, 3)))] = bad
        yield f"float{i}", x
    yield "clip-range", rng.uniform(-0.2, 1.2, (17, 6, 3))
    yield "uint8", rng.integers(0, 256, (33, 5, 3), dtype=np.uint8)
    yield "int16", rng.integers(-3000, 3000, (21, 4), dtype=np.int16)
    yield "constant", np.full((9, 4, 2), 2.5, np.float32)
    yield "constant-inf", np.where(np.arange(24).reshape(6, 4) % 5, 1.0, np.inf)
    yield "no-finite", np.full((7, 3), np.nan)
    yield "empty", np.zeros((0, 4, 3), np.float32)
    yield "1-d", rng.standard_normal(301) * 7
    yield "0-d", np.array(4.5)


CASES = list(cases())


def cut(n: int, rng) -> list[int]:
    """Random band boundaries over ``n`` rows (bands of 1 row up to all of them)."""
    bounds = sorted({0, n, *rng.integers(0, n + 1, size=int(rng.integers(0, 6)))})
    return bounds if n else [0, 0]


def banded(x, spec, cells, seed, monkeypatch):
    """:class:`DisplayMapping` fed ``x`` in random bands, a new cut for every pass and for
    the mapping: ``(out, description, lo, hi)``."""
    monkeypatch.setattr(values_module, "_BLOCK_CELLS", cells)
    rng = np.random.default_rng(seed)
    flat = x.reshape(1) if x.ndim == 0 else x
    row = int(np.prod(flat.shape[1:])) if flat.ndim > 1 else 1
    m = DisplayMapping(spec, row_size=row)
    while m.wants_pass():
        bounds = cut(flat.shape[0], rng)
        for a, b in zip(bounds, bounds[1:]):
            m.add(flat[a:b])
        m.end_pass()
    bounds = cut(flat.shape[0], rng)
    out = np.concatenate([m.map(flat[a:b]) for a, b in zip(bounds, bounds[1:])])
    return out.reshape(x.shape), m.description(flat.size), m.range[0], m.range[1]


def same(got, want):
    out, description, lo, hi = got
    ref_out, ref_description, ref_lo, ref_hi = want
    assert description == ref_description
    assert float(lo).hex() == float(ref_lo).hex() and float(hi).hex() == float(ref_hi).hex()
    assert out.dtype == np.uint8 and out.shape == ref_out.shape
    assert out.tobytes() == ref_out.tobytes()


@pytest.mark.parametrize("cells", [7, 40, 1 << 18])
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("label,x", CASES, ids=[c[0] for c in CASES])
def test_bands_give_the_whole_arrays_mapping(label, x, spec, cells, monkeypatch):
    want = reference(x, spec, cells)
    for seed in range(4):
        same(banded(x, spec, cells, seed, monkeypatch), want)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("label,x", CASES, ids=[c[0] for c in CASES])
def test_to_display_is_unchanged(label, x, spec, monkeypatch):
    out, description = to_display(x, spec)
    ref = reference(x, spec, 1 << 18)
    assert description == ref[1] and out.tobytes() == ref[0].tobytes()
    monkeypatch.setattr(values_module, "_BLOCK_CELLS", 11)
    out, description = to_display(x, spec)
    ref = reference(x, spec, 11)
    assert description == ref[1] and out.tobytes() == ref[0].tobytes()


def test_sigma_k_argument():
    x = np.linspace(-4, 9, 60).reshape(10, 6)
    assert to_display(x, "sigma", sigma_k=1.5)[1] == reference(x, "sigma", 1 << 18, 1.5)[1]
    m = DisplayMapping("sigma", row_size=6, sigma_k=1.5)
    assert m.k == 1.5
    with pytest.raises(ValueError, match="sigma K must be a positive number"):
        DisplayMapping("sigma", row_size=6, sigma_k=-1.0)
    with pytest.raises(ValueError, match="unknown display mapping"):
        DisplayMapping("bogus", row_size=6)


def test_the_cases_need_the_blocks():
    """Summing each band's finite values (no regrouping) gives other bits than the whole
    array's row blocks on some case: the regrouping is what makes the test above pass."""
    rng = np.random.default_rng(7)
    differ = 0
    for label, x in CASES:
        if x.ndim < 2 or x.dtype.kind != "f":
            continue
        blocks = sum(float(b[np.isfinite(b)].sum()) for b in
                     (x[r:r + 3].astype(np.float64) for r in range(0, x.shape[0], 3)))
        bounds = cut(x.shape[0], rng)
        bands = sum(float(b[np.isfinite(b)].sum()) for b in
                    (x[a:c].astype(np.float64) for a, c in zip(bounds, bounds[1:])))
        differ += blocks != bands
    assert differ


def test_order_of_calls():
    m = DisplayMapping("minmax", row_size=2)
    with pytest.raises(ValueError, match="end the statistics passes first"):
        m.map(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="end the statistics passes first"):
        m.description(2)
    m.add(np.array([[1.0, 3.0]]))
    m.end_pass()
    assert not m.wants_pass()
    with pytest.raises(ValueError, match="the range is known"):
        m.add(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="every statistics pass has ended"):
        m.end_pass()
    assert m.map(np.array([[2.0, 3.0]])).tolist() == [[128, 255]]
    clip = DisplayMapping("clip", row_size=1)
    assert not clip.wants_pass()  # no statistics at all
    assert clip.map(np.array([-1.0, 0.5, 2.0])).tolist() == [0, 128, 255]
    assert clip.description(3) == "clip [0, 1] -> [0, 255] (2 of 3 values clipped)"
