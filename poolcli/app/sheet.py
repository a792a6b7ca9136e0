"""The comparison sheet (``poolcli compare``): each image and what each operator makes of it.

:func:`image_tiles` computes one image's tiles (a failing operator becomes a grey placeholder
tile and an error line, the other tiles still come); :func:`build_sheet` reads every input
through the per-job error boundary, composes the sheet and returns it with its JSON record;
writing goes through the output policy like every other output.
"""

from __future__ import annotations

import math
import os

from poolcli import registry
from poolcli.app.jobs import jsonable, pool_compute, read
from poolcli.errors import one_line
from poolcli.formats import fmt_num

__all__ = ["auto_cols", "image_tiles", "build_sheet", "Sheet", "AUTO_COLS_MAX"]

AUTO_COLS_MAX = 6


def auto_cols(n_tiles: int) -> int:
    """Default tiles per row: all of them up to 6, else balanced rows of at most 6.

    >>> [auto_cols(n) for n in (1, 6, 7, 10, 15)]
    [1, 6, 4, 5, 5]
    """
    if n_tiles <= AUTO_COLS_MAX:
        return max(1, n_tiles)
    return math.ceil(n_tiles / math.ceil(n_tiles / AUTO_COLS_MAX))


def _colour_stats(values, ncol: int) -> tuple[float, float]:
    import numpy as np

    with np.errstate(invalid="ignore"):  # a signalling NaN warns when widened
        v = np.asarray(values, dtype=np.float64)[..., :ncol]
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())


def _short(v) -> str:
    """4 significant digits, whole numbers from 1000 on, 0 for tiny values."""
    return fmt_num(v, digits=4, tiny=5e-4, whole=True)


def _stat_text(shape, mean, std) -> str:
    """``75x112  mean 127.9  std 39.47`` (one pixel: no std, it would be the channels' spread)."""
    text = f"{shape[0]}x{shape[1]}  mean {_short(mean)}"
    return text if shape[0] * shape[1] == 1 else f"{text}  std {_short(std)}"


def _failed(kind, op, message):
    import numpy as np

    from poolcli import visual

    return visual.Tile(np.full((8, 8, 3), 215, dtype=np.uint8), [f"{op.name}: failed", message],
                       meta={"kind": "error", "for": kind, "op": op.name, "error": message})


def _original_tile(img, scale, ncol, has_alpha):
    from poolcli import visual

    x = img.array
    h, w, c = x.shape
    rgb0, notes0 = visual.to_rgb8(x, scale=scale, channels=img.channels)
    show = []
    if has_alpha:
        show.append("alpha on grey")
    if scale.kind == "uint16":
        show.append("16-bit shown /257")
    elif scale.kind == "linear":
        show.append(f"shown {scale.lo:.4g}..{scale.hi:.4g} -> 0..255")
    mean0, std0 = _colour_stats(x, ncol)
    chan = "".join(img.channels) if all(len(n) == 1 for n in img.channels) else f"{c}ch"
    head = f"{h}x{w} {chan} {x.dtype}" + (f", {', '.join(show)}" if show else "")
    tile = visual.Tile(rgb0, [os.path.basename(img.source) or img.source, head,
                              f"mean {_short(mean0)}  std {_short(std0)}"],
                       meta={"kind": "original", "op": None, "shape": [h, w, c],
                             "dtype": str(x.dtype), "mean": mean0, "std": std0})
    return tile, notes0


def _op_tile(img, index, op, params, selection, scale, ncol, has_alpha):
    """(tile, (values, result)) of one operator; ValueError/TypeError/MemoryError propagate."""
    import numpy as np

    from poolcli import visual

    op_p = op.resolve(params)
    res = pool_compute(img.array, op, op_p, index, op.selects_with(op_p) and selection)
    values = np.asarray(res.values)
    if values.ndim == 2:
        values = values[:, :, None]
    if op.family == "norm":
        rgb, notes = visual.to_rgb8(values, channels=img.channels, signed=True)
    else:
        rgb, notes = visual.to_rgb8(values, scale=scale, channels=img.channels)
    mean, std = _colour_stats(values, ncol)
    third = ""
    if op.family == "norm":
        third = "shown mean ± 3 std" + (", alpha dropped" if has_alpha else "")
    else:
        clipped = scale.clipped_fraction(values[..., :ncol])
        if clipped >= 0.005:
            top = {"uint8": "255", "uint16": "65535"}.get(scale.kind, f"{scale.hi:.4g}")
            third = f"{100 * clipped:.0f}% of values > {top}, shown clipped"
    info = dict(res.info)
    tile = visual.Tile(
        rgb, [f"{op.name} {registry.describe(op, op_p, info)}".strip(),
              _stat_text(values.shape, mean, std), third],
        meta={"kind": "op", "op": op.name, "shape": list(values.shape),
              "dtype": str(values.dtype), "mean": mean, "std": std, "params": jsonable(op_p),
              "info": dict(res.info), "display": notes})
    return tile, (values, res)


def _selection_tile(img, op, res, scale, tile_size):
    import numpy as np

    from poolcli import visual

    x = img.array
    h, w, c = x.shape
    pic = visual.selection_picture(x, res.indices)
    rgb, _ = visual.to_rgb8(pic, scale=scale, channels=img.channels, alpha="drop")
    idx = np.asarray(res.indices).reshape(-1, c)
    n_kept = sum(np.unique(idx[:, ch]).size for ch in range(c))
    kept = n_kept / (h * w * c)
    share = (f"{100 * kept:.1f}% of cells kept" if kept >= 0.001 else
             f"{n_kept / c:.3g} cell(s) per channel kept")
    seed = f" seed={res.info['seed']}" if "seed" in res.info else ""
    shrunk = "shrunk: brightest of each block" if max(h, w) > tile_size else ""
    return visual.Tile(
        rgb, [f"{op.name}: selected cells{seed}", f"{share}, others black", shrunk],
        resample="max",
        meta={"kind": "selection", "op": op.name, "shape": [h, w, c], "kept_fraction": kept})


def _diff_tile(op, ref_op, values, ref_values, hw, ncol):
    from poolcli import visual

    pic, top = visual.abs_diff_picture(values[..., :ncol], ref_values[..., :ncol], hw)
    rgb, _ = visual.to_rgb8(pic, scale=visual.DisplayScale("uint8"))
    return visual.Tile(
        rgb, [f"|{op.name} - {ref_op.name}|",
              f"0..{_short(top)} -> black..white" if top else "identical (all 0)",
              "contrast stretched per tile"],
        meta={"kind": "diff", "op": op.name, "ref": ref_op.name, "max_diff": top})


def image_tiles(img, ops, params, diff_ref, selection, tile_size, index: int = 0):
    """The tiles of one image, its record and error lines; a failing operator becomes a grey
    placeholder tile (and an error line), the other tiles still come."""
    from poolcli import visual

    x = img.array
    h, w, c = x.shape
    ncol, has_alpha = visual.colour_count(c, img.channels)
    scale = visual.DisplayScale.for_input(x, ncol)
    first, notes0 = _original_tile(img, scale, ncol, has_alpha)
    tiles, errors, results = [first], [], {}
    for op in ops:
        try:
            tile, results[op.name] = _op_tile(img, index, op, params, selection, scale,
                                              ncol, has_alpha)
        except (ValueError, TypeError, MemoryError) as exc:
            errors.append(f"{img.source}: {op.name}: {one_line(exc)}")
            tile, results[op.name] = _failed("op", op, one_line(exc)), None
        tiles.append(tile)
    for op in ops if selection else ():
        if op.selects_with(op.resolve(params)):
            got = results.get(op.name)
            tiles.append(_failed("selection", op, "the operator failed")
                         if got is None or got[1].indices is None
                         else _selection_tile(img, op, got[1], scale, tile_size))
    ref = results.get(diff_ref.name) if diff_ref is not None else None
    for op in ops if diff_ref is not None else ():
        if op.name == diff_ref.name or op.family != diff_ref.family:
            continue  # pooled and normalized values are on different scales
        got = results.get(op.name)
        tiles.append(_failed("diff", op, "an operator failed") if got is None or ref is None
                     else _diff_tile(op, diff_ref, got[0], ref[0], (h, w), ncol))
    record = {"input": img.source, "shape": [h, w, c], "dtype": str(x.dtype),
              "channels": list(img.channels), "display": scale.describe(),
              "notes": list(dict.fromkeys(list(img.notes) + notes0 + (
                  [scale.describe()] if scale.kind != "uint8" else [])))}
    return tiles, record, errors


class Sheet:
    """A composed sheet: the uint8 picture, its layout and one record per image."""

    def __init__(self, picture, rows, placed, layout, records):
        self.picture, self.rows, self.placed = picture, rows, placed
        self.layout, self.records = layout, records

    def tile_records(self) -> list[dict]:
        from poolcli import visual

        out = []
        for i, (tiles, boxes) in enumerate(zip(self.rows, self.placed)):
            for t, box in zip(tiles, boxes):
                out.append({"image": i, "input": self.records[i]["input"], **t.meta,
                            "label": [visual.latin(line) for line in t.label if line],
                            "box": box})
        return out


def build_sheet(runner, jobs, ops, params, ref, selection, tile_size, cols, title,
                max_pixels) -> Sheet | None:
    """Tiles of every readable input (failures reported through ``runner``), composed."""
    from poolcli import visual
    from poolcli.app.runner import Outcome, guarded

    rows, records, boxes = [], [], []

    def one(job):
        img = read(job.source, max_pixels)
        tiles, record, errors = image_tiles(img, ops, params, ref, selection, tile_size,
                                            job.index)
        return {"tiles": tiles, "record": record, "errors": errors,
                "box": visual.tile_box(img.array.shape[:2], tile_size)}

    for job in jobs:
        outcome = guarded(one, job, (), runner.verbose)
        if outcome.status == "interrupted":
            raise KeyboardInterrupt
        if outcome.status == "error":
            runner.record(outcome)
            continue
        got = outcome.record
        for message in got["errors"]:
            runner.record(Outcome(job.index, job.source, "error", message=message))
        rows.append(got["tiles"])
        records.append(got["record"])
        boxes.append(got["box"])
    if not rows:
        return None
    n_tiles = len(rows[0])
    ncols = min(cols, n_tiles) if cols else auto_cols(n_tiles)
    picture, placed, layout = visual.compose_sheet(rows, boxes, tile=tile_size, cols=ncols,
                                                   title=title)
    return Sheet(picture, rows, placed, layout, records)
