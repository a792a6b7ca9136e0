"""Worked examples: what an operator computes on a small matrix, window by window.

Pure: numpy in, an :class:`Explanation` (text blocks and grids) out, rendered as plain text
(:func:`render_plain`) or rich tables (:func:`render_rich`). The numbers shown as results are
always the operator's own output (run through the registry); the formulas beside them spell out
the arithmetic. Window positions come from :func:`poolcli.ops.pool_axes` (and
``adaptive_bounds``), the one place window geometry is defined: window ``j`` of an axis reads
input positions ``j*s - p + t*d`` for taps ``t = 0..k-1``.

Plain grids mark cells with brackets ``[7]`` (selected by a window), padding with ``·``, and, when
the windows tile the input without overlap (stride = kernel, no dilation), separate windows with
``|`` and ``-`` lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from poolcli import registry
from poolcli.formats import fmt_num

__all__ = ["Grid", "Block", "Explanation", "parse_values", "random_matrix", "explain",
           "render_plain", "render_rich", "fmt_value", "MAX_SIDE"]

MAX_SIDE = 20  # largest matrix side explained (a terminal-sized example)
MAX_TERMS = 16  # longer sums are summarized
PAD = "·"



# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def parse_values(text: str) -> np.ndarray:
    """Rows separated by ``;`` (or new lines), values by ``,`` or spaces.

    Integers give an int64 matrix, anything else float64.

    >>> parse_values("1,2,3;4,5,6").tolist()
    [[1, 2, 3], [4, 5, 6]]
    >>> parse_values("0.5 1; 2 3").dtype
    dtype('float64')
    """
    rows = [r for r in text.replace("\n", ";").split(";") if r.strip()]
    if not rows:
        raise ValueError(f"{text!r} holds no values; write rows like '1,2,3;4,5,6'")
    parsed = []
    for i, row in enumerate(rows):
        items = [v for v in row.replace(",", " ").split() if v]
        try:
            parsed.append([float(v) for v in items])
        except ValueError:
            raise ValueError(f"row {i} ({row.strip()!r}) is not a list of numbers") from None
    widths = {len(r) for r in parsed}
    if len(widths) != 1:
        raise ValueError(f"rows have different lengths {[len(r) for r in parsed]}; "
                         f"every row needs the same number of values")
    x = np.array(parsed, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("values must be finite numbers")
    if max(x.shape) > MAX_SIDE:
        raise ValueError(f"{x.shape[0]}x{x.shape[1]} is too large to explain (at most "
                         f"{MAX_SIDE} per side)")
    if np.all(x == np.round(x)) and np.abs(x).max() < 2**53:
        return x.astype(np.int64)
    return x


def random_matrix(hw: tuple[int, int], seed: int) -> np.ndarray:
    """Integers 0..9 of shape ``hw`` from ``numpy.random.default_rng(seed)``."""
    h, w = int(hw[0]), int(hw[1])
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ValueError(f"matrix size {h}x{w}: each side must lie in 1..{MAX_SIDE}")
    return np.random.default_rng(seed).integers(0, 10, size=(h, w)).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# The explanation
# --------------------------------------------------------------------------------------------------


def fmt_value(v) -> str:
    """Integers as integers, other numbers with at most 3 decimals (``3.75``, ``4.733``).

    >>> fmt_value(6), fmt_value(3.75), fmt_value(2.0), fmt_value(1 / 3), fmt_value(-0.0)
    ('6', '3.75', '2', '0.333', '0')
    """
    return fmt_num(v, decimals=3)


@dataclass
class Grid:
    """A matrix to show: cell texts with row/column labels and marks."""

    title: str
    cells: list[list[str]]
    row_labels: list[str]
    col_labels: list[str]
    marks: set = field(default_factory=set)  # (gi, gj) cells shown as [v]
    pads: set = field(default_factory=set)  # (gi, gj) padding cells
    vbounds: set = field(default_factory=set)  # grid columns preceded by a "|"
    hbounds: set = field(default_factory=set)  # grid rows preceded by a "-" line
    shade: dict = field(default_factory=dict)  # (gi, gj) -> window parity (rich background)


@dataclass
class Block:
    """A titled list of text lines."""

    title: str
    lines: list[str]


@dataclass
class Explanation:
    op: str
    header: list[str]
    sections: list = field(default_factory=list)  # Grid and Block, in display order
    output: np.ndarray | None = None
    indices: np.ndarray | None = None
    unpooled: np.ndarray | None = None
    selected: list = field(default_factory=list)  # input cells (r, c) some window selected
    info: dict = field(default_factory=dict)


def _grid(title, m, *, row0=0, col0=0, marks=(), pads=(), vb=(), hb=(), shade=None) -> Grid:
    m = np.asarray(m)
    cells = [[fmt_value(v) for v in row] for row in (m.tolist() if m.dtype.kind in "iu"
                                                    else m.astype(np.float64).tolist())]
    return Grid(title, cells, [str(row0 + i) for i in range(m.shape[0])],
                [str(col0 + j) for j in range(m.shape[1])], set(marks), set(pads), set(vb),
                set(hb), dict(shade or {}))


def _pair(v) -> str:
    return f"{v[0]}x{v[1]}"


def _span(taps: list[int], n: int, what: str, pad: int = 0) -> str:
    """``rows 0-1``; ``rows -1..0 (row -1 padding)``; ``cols 0,2`` (dilated).

    Positions in ``[-pad, n + pad)`` outside the input are padding; further out (ceil mode's
    last window) they are "beyond" the padded input.
    """
    contiguous = all(b - a == 1 for a, b in zip(taps, taps[1:]))
    if len(taps) == 1:
        text = str(taps[0])
    elif contiguous:
        text = f"{taps[0]}-{taps[-1]}" if taps[0] >= 0 else f"{taps[0]}..{taps[-1]}"
    else:
        text = ",".join(str(t) for t in taps)
    text = f"{what}s {text}"
    padded = [t for t in taps if not 0 <= t < n and -pad <= t < n + pad]
    beyond = [t for t in taps if not -pad <= t < n + pad]
    notes = []
    for group, word in ((padded, "padding"), (beyond, "beyond the padding")):
        if group:
            plural = "s" if len(group) > 1 else ""
            notes.append(f"{what}{plural} {','.join(str(t) for t in group)} {word}")
    if notes:
        text += " (" + "; ".join(notes) + ")"
    return text


def _terms(vals: list[str], joiner: str = " + ") -> str:
    return joiner.join(vals)


def _sum_text(vals, n_div, out) -> str:
    if len(vals) > MAX_TERMS:
        total = fmt_value(sum(float(v) for v in vals))
        return f"sum of {len(vals)} cells {total} / {n_div} = {out}"
    return f"({_terms([fmt_value(v) for v in vals])}) / {n_div} = {out}"


def _resolve(op, params: dict, seed: int) -> dict:
    p = op.resolve(params)
    if "seed" in op.params:
        p["seed"] = seed
    return p


def explain(x, op_name: str, params: dict | None = None, *, seed: int = 0) -> Explanation:
    """Run ``op_name`` on the 2-D matrix ``x`` and explain it.

    Parameters
    ----------
    x : ndarray, shape (H, W)
        The example matrix (one channel).
    params : dict
        Operator parameters by registry name (missing ones take the registry defaults).
    seed : int
        Seed of stochastic pooling's draw.

    Raises
    ------
    ValueError
        Parameters the operator rejects for this matrix (kernel larger than the input, ...).
    """
    op = registry.get(op_name)
    x = np.asarray(x)
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"explain needs a non-empty 2-D matrix, got shape {x.shape}")
    p = _resolve(op, params or {}, seed)
    result = op.run(x[:, :, None], dict(p), op.selects)
    out = np.asarray(result.values)[:, :, 0]
    idx = None if result.indices is None else np.asarray(result.indices)[:, :, 0]
    e = Explanation(op.name, [f"{op.name}: {op.summary}", f"source: {op.source}"], output=out,
                    indices=idx, info=dict(result.info))
    if op.explain == "window":
        _explain_windowed(e, op, x, p, out, idx)
    elif op.explain in ("adaptive", "global"):
        _explain_adaptive(e, op, x, p, out, idx)
    elif op.explain == "kmax":
        _explain_kmax(e, x, p, out, idx)
    elif op.explain == "blur":
        _explain_blur(e, x, p, out)
    else:
        _explain_norm(e, op, x, p, out)
    return e


def _selected_cell(idx_value, h, w):
    i = int(idx_value)
    if 0 <= i < h * w:
        return divmod(i, w)
    return None


def _out_size_line(axis, name: str, ceil_mode: bool) -> str:
    num = axis.n + 2 * axis.p - axis.d * (axis.k - 1) - 1
    rnd = "ceil" if ceil_mode else "floor"
    raw = (-(-num // axis.s) if ceil_mode else num // axis.s) + 1
    text = (f"{name}: {rnd}(({axis.n} + 2*{axis.p} - {axis.d}*({axis.k}-1) - 1) / {axis.s}) + 1 "
            f"= {raw}")
    if raw != axis.out:
        text += f", minus the last window that would start in the padding = {axis.out}"
    return text


def _window_formula(op, p, vals, out_v, sel, idx_v, div=None) -> str:
    """The arithmetic of one window, ending in the operator's own result ``out_v``."""
    out = fmt_value(out_v)
    sv = [fmt_value(v) for v in vals]
    name = op.formula
    if name in ("max", "min"):
        fn = name
        listed = ", ".join(sv) if len(sv) <= MAX_TERMS else f"{len(sv)} cells"
        if sel is None:
            return f"{fn}({listed}) = {out} (window lies in the padding; index {int(idx_v)})"
        return f"{fn}({listed}) = {out} at ({sel[0]},{sel[1]}) -> index {int(idx_v)}"
    if name == "mean":
        n_div = len(vals) if div is None else div
        text = _sum_text(vals, n_div, out)
        if div is not None and div > len(vals):
            text += f" (the divisor counts {div - len(vals)} padding cell(s) as 0)"
        return text
    if name == "lp":
        q = float(p["norm_type"])
        if math.isinf(q):
            return f"max(|a|) = max({', '.join(sv)}) = {out}"
        qs = fmt_value(q)
        parts = [f"|{s}|^{qs}" if float(v) < 0 else f"{s}^{qs}" for s, v in zip(sv, vals)]
        return f"({_terms(parts)})^(1/{qs}) = {out}"
    if name == "stochastic":
        total = sum(float(v) for v in vals)
        ts = fmt_value(total)
        if p["mode"] == "test":
            if total == 0:
                return f"all zero -> {out}"
            sq = fmt_value(sum(float(v) ** 2 for v in vals))
            return f"sum(a^2)/sum(a) = {sq}/{ts} = {out}"
        if sel is None:
            return f"-> index {int(idx_v)}"
        where = f"({sel[0]},{sel[1]})"
        if total == 0:
            return f"all zero: picks its first cell {where} = {out} -> index {int(idx_v)}"
        probs = ", ".join(f"{s}/{ts}" for s in sv)
        return (f"p = a/{ts}: {probs} -> drew {where} = {out} (p = {out}/{ts}) "
                f"-> index {int(idx_v)}")
    if name == "sort":
        weights = list(p["weights"])
        ranked = sorted((float(v) for v in vals), reverse=True)
        terms = [f"{fmt_value(w)}*{fmt_value(v)}" for w, v in zip(weights, ranked)]
        text = f"sorted {', '.join(fmt_value(v) for v in ranked)}: {_terms(terms)} = {out}"
        if len(ranked) < len(weights):
            text += f" ({len(weights) - len(ranked)} weight(s) unused: fewer real cells)"
        return text
    if name == "mixed":
        a = float(p["alpha"])
        mx = max(float(v) for v in vals)
        av = sum(float(v) for v in vals) / len(vals)
        return (f"{fmt_value(a)}*max {fmt_value(mx)} + {fmt_value(1 - a)}*avg {fmt_value(av)} "
                f"= {out}")
    if name == "softpool":
        f = np.array([float(v) for v in vals])
        w = np.exp(f - f.max())
        w /= w.sum()
        return (f"weights e^a/sum(e^a) = {', '.join(fmt_value(v) for v in w)}; "
                f"sum(weight*a) = {out}")
    if name == "gem":
        q = fmt_value(float(p["p"]))
        parts = [f"{s}^{q}" for s in sv]
        text = f"(({_terms(parts)}) / {len(vals)})^(1/{q}) = {out}"
        if any(float(v) < 1e-6 for v in vals):
            text += " (values below 1e-6 count as 1e-6)"
        return text
    if name == "lse":
        r = float(p["r"])
        rs = fmt_value(r)
        parts = [f"e^{s}" if r == 1 else f"e^({rs}*{s})" for s in sv]
        return f"(1/{rs})*log(({_terms(parts)}) / {len(vals)}) = {out}"
    return f"= {out}"


def _settings(op, p) -> list[str]:
    """``kernel 2x2, stride 2x2, padding 0x0, ..., mode train, seed 0`` for the header."""
    ceil = bool(p.get("ceil_mode", False))
    out = [f"kernel {_pair(p['kernel'])}", f"stride {_pair(p.get('stride') or p['kernel'])}"]
    if "padding" in op.params:
        out.append(f"padding {_pair(p.get('padding') or (0, 0))}")
    if "dilation" in op.params:
        out.append(f"dilation {_pair(p.get('dilation') or (1, 1))}")
    if "ceil_mode" in op.params:
        out.append("ceil mode" if ceil else "floor mode")
    if "count_include_pad" in op.params:
        out.append(f"count_include_pad {'on' if p['count_include_pad'] else 'off'}")
    for name in ("norm_type", "p", "r"):
        if name in op.params:
            out.append(f"{'r' if name == 'r' else 'p'} = {fmt_value(float(p[name]))}")
    if "mode" in op.params:
        out.append(f"mode {p['mode']}")
        if p["mode"] == "train" and "seed" in op.params:
            out.append(f"seed {p['seed']}")
    if "weights" in op.params:
        out.append("weights " + ", ".join(fmt_value(v) for v in p["weights"])
                   + " (largest value first)")
    if "alpha" in op.params:
        out.append(f"alpha {fmt_value(float(p['alpha']))}")
    return out


def _explain_windowed(e, op, x, p, out, idx):
    from poolcli.ops import pool_axes

    h, w = x.shape
    k = p["kernel"]
    s = p.get("stride") or k
    pad = p.get("padding") or (0, 0)
    dil = p.get("dilation") or (1, 1)
    ceil = bool(p.get("ceil_mode", False))
    ah, aw = pool_axes((h, w), k, s, pad, dil, ceil)
    e.header.append(", ".join(_settings(op, p)) + f": {h}x{w} input -> {ah.out}x{aw.out} output")
    e.header.append("output size " + _out_size_line(ah, "rows", ceil))
    e.header.append("            " + _out_size_line(aw, "cols", ceil))

    def taps(axis, j):
        return [j * axis.s - axis.p + t * axis.d for t in range(axis.k)]

    row_taps = [taps(ah, i) for i in range(ah.out)]
    col_taps = [taps(aw, j) for j in range(aw.out)]
    r0 = min(0, min(t[0] for t in row_taps))
    r1 = max(h - 1, max(t[-1] for t in row_taps))
    c0 = min(0, min(t[0] for t in col_taps))
    c1 = max(w - 1, max(t[-1] for t in col_taps))
    divisors = None
    if "count_include_pad" in op.params:
        divisors = np.outer(ah.divisors(p["count_include_pad"]),
                            aw.divisors(p["count_include_pad"]))
    lines, marks = [], []
    for i in range(ah.out):
        for j in range(aw.out):
            cells = [(r, c) for r in row_taps[i] for c in col_taps[j]
                     if 0 <= r < h and 0 <= c < w]
            vals = [x[r, c] for r, c in cells]
            sel = None
            idx_v = None
            if idx is not None:
                idx_v = idx[i, j]
                sel = _selected_cell(idx_v, h, w)
                if sel is not None:
                    marks.append(sel)
            where = f"{_span(row_taps[i], h, 'row', ah.p)}, {_span(col_taps[j], w, 'col', aw.p)}"
            if not vals:
                formula = f"no input cell -> {fmt_value(out[i, j])}"
            else:
                div = None if divisors is None else int(divisors[i, j])
                formula = _window_formula(op, p, vals, out[i, j], sel, idx_v, div)
            lines.append(f"window ({i},{j}): {where}: {formula}")
    tiled_r = ah.s == ah.k and ah.d == 1
    tiled_c = aw.s == aw.k and aw.d == 1
    hb = {i * ah.s - ah.p - r0 for i in range(1, ah.out + 1)} if tiled_r else set()
    vb = {j * aw.s - aw.p - c0 for j in range(1, aw.out + 1)} if tiled_c else set()
    hb = {b for b in hb if 0 < b <= r1 - r0}
    vb = {b for b in vb if 0 < b <= c1 - c0}
    shade = {}
    if tiled_r and tiled_c:
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                wi, wj = (r + ah.p) // ah.s, (c + aw.p) // aw.s
                if 0 <= wi < ah.out and 0 <= wj < aw.out:
                    shade[(r - r0, c - c0)] = (wi + wj) % 2
    _input_grid(e, x, (r0, r1, c0, c1), marks, vb, hb, shade,
                "[v] = selected by a window" if idx is not None else "")
    uncovered = _uncovered(row_taps, h, "row") + _uncovered(col_taps, w, "col")
    if uncovered:
        lines.append("not in any window: " + "; ".join(uncovered))
    e.sections.append(Block("windows", lines))
    _output_sections(e, x, out, idx, marks, unpool_geometry=(k, s, pad))


def _uncovered(taps, n, what) -> list[str]:
    covered = {t for ts in taps for t in ts}
    missing = [i for i in range(n) if i not in covered]
    if not missing:
        return []
    return [f"{what}{'s' if len(missing) > 1 else ''} {','.join(map(str, missing))}"]


def _input_grid(e, x, extent, marks, vb=(), hb=(), shade=None, legend=""):
    r0, r1, c0, c1 = extent
    h, w = x.shape
    cells, pads = [], set()
    for r in range(r0, r1 + 1):
        row = []
        for c in range(c0, c1 + 1):
            if 0 <= r < h and 0 <= c < w:
                row.append(fmt_value(x[r, c]))
            else:
                row.append(PAD)
                pads.add((r - r0, c - c0))
        cells.append(row)
    notes = []
    if pads:
        notes.append(f"{PAD} = padding")
    if legend:
        notes.append(legend)
    if vb or hb:
        notes.append("| and - separate the windows")
    title = f"input ({h}x{w})" + ("; " + ", ".join(notes) if notes else "")
    g = Grid(title, cells, [str(r) for r in range(r0, r1 + 1)],
             [str(c) for c in range(c0, c1 + 1)], {(r - r0, c - c0) for r, c in marks}, pads,
             set(vb), set(hb), dict(shade or {}))
    e.sections.append(g)
    e.selected = sorted(set(marks))


def _output_sections(e, x, out, idx, marks, *, unpool_geometry=None, scatter=False):
    from poolcli.visual import selection_picture

    oh, ow = out.shape
    e.sections.append(_grid(f"output ({oh}x{ow})", out))
    if idx is None:
        return
    h, w = x.shape
    e.sections.append(_grid(f"indices (flat h*W + w with W = {w}; output cell -> input cell)",
                            idx))
    unpooled = None
    how = "scattered back to their cells"
    if unpool_geometry is not None and not scatter:
        from poolcli.ops import max_unpool2d

        k, s, pad = unpool_geometry
        try:
            unpooled = max_unpool2d(out, idx, k, s, pad, output_size=(h, w))
            how = "max_unpool2d"
        except ValueError as exc:
            how = f"scattered back to their cells (max_unpool2d refuses: {exc})"
    if unpooled is None:
        unpooled = selection_picture(x, idx)
    e.unpooled = np.asarray(unpooled)
    e.sections.append(_grid(f"unpooled ({how}, {h}x{w}): selected values in place, 0 elsewhere",
                            e.unpooled, marks={tuple(m) for m in marks}))


def _explain_adaptive(e, op, x, p, out, idx):
    from poolcli.ops import adaptive_bounds

    h, w = x.shape
    oh, ow = out.shape
    if op.explain == "global":
        e.header.append(f"one window over the whole {h}x{w} input -> 1x1 output")
    else:
        e.header.append(f"output size {_pair(p['output_size'])}: window i of an axis of length "
                        f"n spans [floor(i*n/out), ceil((i+1)*n/out))")
    rs, re_ = adaptive_bounds(h, oh)
    cs, ce = adaptive_bounds(w, ow)
    lines, marks = [], []
    for i in range(oh):
        for j in range(ow):
            rows = list(range(int(rs[i]), int(re_[i])))
            cols = list(range(int(cs[j]), int(ce[j])))
            cells = [(r, c) for r in rows for c in cols]
            vals = [x[r, c] for r, c in cells]
            sel = idx_v = None
            if idx is not None:
                idx_v = idx[i, j]
                sel = _selected_cell(idx_v, h, w)
                if sel is not None:
                    marks.append(sel)
            formula = _window_formula(op, p, vals, out[i, j], sel, idx_v)
            lines.append(f"window ({i},{j}): {_span(rows, h, 'row')}, {_span(cols, w, 'col')}: "
                         f"{formula}")
    _input_grid(e, x, (0, h - 1, 0, w - 1), marks,
                legend="[v] = selected by a window" if idx is not None else "")
    e.sections.append(Block("windows", lines))
    _output_sections(e, x, out, idx, marks, scatter=True)


def _explain_kmax(e, x, p, out, idx):
    h, w = x.shape
    k = int(e.info.get("k", out.shape[1] if p["axis"] == "w" else out.shape[0]))
    along_w = p["axis"] == "w"
    how = "given by --k" if p.get("k") is not None and p.get("k_top") is None else (
        "dynamic k" if p.get("k_top") is not None else "default: half the length")
    lane = "width: each row" if along_w else "height: each column"
    e.header.append(f"k = {k} ({how}), along the {lane} keeps its {k} largest values in their "
                    f"original order (ties: earliest)")
    lines, marks = [], []
    lanes = h if along_w else w
    for lane in range(lanes):
        vals = x[lane, :] if along_w else x[:, lane]
        kept_idx = idx[lane, :] if along_w else idx[:, lane]
        pos = [int(v) % w if along_w else int(v) // w for v in kept_idx]
        marks.extend((lane, q) if along_w else (q, lane) for q in pos)
        kept = out[lane, :] if along_w else out[:, lane]
        what = "row" if along_w else "col"
        lines.append(f"{what} {lane}: {' '.join(fmt_value(v) for v in vals)} -> "
                     f"{' '.join(fmt_value(v) for v in kept)} "
                     f"({'cols' if along_w else 'rows'} {','.join(map(str, pos))})")
    _input_grid(e, x, (0, h - 1, 0, w - 1), marks, legend="[v] = kept")
    e.sections.append(Block("rows" if along_w else "columns", lines))
    _output_sections(e, x, out, idx, marks, scatter=True)


def _explain_blur(e, x, p, out):
    h, w = x.shape
    k = p["kernel"]
    s = p.get("stride") or (2, 2)
    e.header.append(f"kernel {_pair(k)}, stride {_pair(s)}: binomial filter "
                    f"[{', '.join(str(math.comb(k[0] - 1, t)) for t in range(k[0]))}]"
                    f"/{2 ** (k[0] - 1)} in each direction (sums to 1), reflect padding "
                    f"{(k[0] - 1) // 2} before and {k[0] // 2} after, windows "
                    f"{s[0]} cells apart: {h}x{w} -> {out.shape[0]}x{out.shape[1]}")
    before, after = (k[0] - 1) // 2, k[0] // 2
    padded = np.pad(x, ((before, after), (before, after)), mode="reflect")
    _input_grid(e, x, (0, h - 1, 0, w - 1), [])
    if before or after:
        e.sections.append(_grid("input with reflect padding (mirrored at the edge cell, which "
                                "is not repeated)", padded, row0=-before, col0=-before))
    den = 4 ** (k[0] - 1)
    num = np.outer([math.comb(k[0] - 1, t) for t in range(k[0])],
                   [math.comb(k[1] - 1, t) for t in range(k[1])])
    wgrid = _grid(f"filter weights ({_pair(k)}, outer product of the 1-D filter; sum 1)", num)
    wgrid.cells = [[f"{c}/{den}" for c in row] for row in wgrid.cells]
    e.sections.append(wgrid)
    lines = []
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            r, c = i * s[0] - before, j * s[1] - before
            terms = [f"{num[a, b]}*{fmt_value(padded[r + before + a, c + before + b])}"
                     for a in range(k[0]) for b in range(k[1])]
            formula = (f"({' + '.join(terms)}) / {den}" if len(terms) <= MAX_TERMS
                       else "sum(weight*a)")
            lines.append(f"window ({i},{j}): rows {r}..{r + k[0] - 1}, cols {c}..{c + k[1] - 1}"
                         f" of the padded input: {formula} = {fmt_value(out[i, j])}")
    e.sections.append(Block("windows", lines))
    _output_sections(e, x, out, None, [])


def _explain_norm(e, op, x, p, out):
    xf = x.astype(np.float64)
    mean, var = float(xf.mean()), float(xf.var())
    eps = float(p["eps"])
    scope = op.scope.format(**p)
    e.header.append(f"statistics over {scope}: mean = {fmt_value(mean)}, variance (biased) = "
                    f"{fmt_value(var)}, eps = {eps:g}")
    formula = f"y = (x - {fmt_value(mean)}) / sqrt({fmt_value(var)} + {eps:g})"
    g, b = p.get("gamma"), p.get("beta")
    if g is not None:
        formula += f" * {fmt_value(float(g[0]))}"
    if b is not None:
        formula += f" + {fmt_value(float(b[0]))}"
    e.header.append(formula + ", for every cell")
    _input_grid(e, x, (0, x.shape[0] - 1, 0, x.shape[1] - 1), [])
    _output_sections(e, x, out, None, [])


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _grid_plain(g: Grid) -> list[str]:
    width = max([len(c) for row in g.cells for c in row] + [len(c) for c in g.col_labels])
    lw = max(len(r) for r in g.row_labels)
    n = len(g.col_labels)

    def sep(j):
        return "|" if j in g.vbounds else " "

    out = [f"{g.title}:"]
    head = " " * lw + " " + "".join((sep(j) if j else "") + " " + g.col_labels[j].rjust(width)
                                    + " " for j in range(n))
    out.append(head)
    for i, row in enumerate(g.cells):
        if i in g.hbounds:
            line = " " * lw + " " + "".join(("+" if j in g.vbounds else "-") * (j > 0)
                                            + "-" * (width + 2) for j in range(n))
            out.append(line)
        parts = []
        for j, cell in enumerate(row):
            text = cell.rjust(width)
            parts.append((sep(j) if j else "") + (f"[{text}]" if (i, j) in g.marks
                                                   else f" {text} "))
        out.append(g.row_labels[i].rjust(lw) + " " + "".join(parts))
    return [out[0]] + ["  " + line.rstrip() for line in out[1:]]


def render_plain(e: Explanation) -> str:
    """The explanation as plain text (no colour, brackets mark selected cells)."""
    lines = list(e.header)
    for sec in e.sections:
        lines.append("")
        if isinstance(sec, Grid):
            lines.extend(_grid_plain(sec))
        else:
            lines.append(f"{sec.title}:")
            lines.extend("  " + line for line in sec.lines)
    return "\n".join(lines) + "\n"


def render_rich(e: Explanation):
    """The explanation as rich renderables (tables with coloured windows and selections)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    shades = ("on grey19", "on grey35")
    parts = [Text(e.header[0], style="bold")]
    parts.extend(Text(line, style="dim" if i == 0 else "") for i, line in enumerate(e.header[1:]))
    for sec in e.sections:
        parts.append(Text(""))
        if isinstance(sec, Block):
            parts.append(Text(sec.title + ":", style="bold"))
            for line in sec.lines:
                t = Text("  " + line)
                t.highlight_regex(r"= -?[\d.]+( at \(\d+,\d+\))?", "bold yellow")
                parts.append(t)
            continue
        parts.append(Text(sec.title + ":", style="bold"))
        t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1))
        t.add_column("", style="dim", justify="right")
        for label in sec.col_labels:
            t.add_column(label, justify="right")
        for i, row in enumerate(sec.cells):
            cells = []
            for j, cell in enumerate(row):
                style = shades[sec.shade[(i, j)]] if (i, j) in sec.shade else ""
                if (i, j) in sec.pads:
                    style += " dim"
                if (i, j) in sec.marks:
                    cells.append(Text(f"[{cell}]", style=style + " bold yellow"))
                else:
                    cells.append(Text(cell, style=style.strip()))
            t.add_row(sec.row_labels[i], *cells)
        parts.append(t)
    return Group(*parts)
