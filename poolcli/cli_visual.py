"""Visual commands: ``poolcli compare`` (a contact sheet) and ``poolcli explain`` (a worked
example), plus the terminal-preview helpers other commands use.

Registered on :data:`poolcli.cli.main` when ``poolcli.cli`` imports this module (its last line).
Import-light like ``poolcli.cli``: click and the registry only; numpy, Pillow and rich are imported
inside the commands.

Preview API (for pool/norm/unpool)::

    @add_preview_option                       # adds --preview [auto|always|never], default auto
    def cmd(..., preview, as_json, ...):
        show_preview(values, preview, as_json=as_json, source_dtype=x.dtype)

``show_preview`` draws on stderr with half-block characters, never when ``as_json`` is true,
and in ``auto`` mode only when stderr is a terminal and ``NO_COLOR`` is unset.
"""

from __future__ import annotations

import math
import os
import shutil
import sys

import click

from poolcli import registry
from poolcli.cli import CONTEXT, Session, _one_line, _read, _validate_geometry, main
from poolcli.paramtypes import PairType, click_type_for

__all__ = ["add_preview_option", "show_preview", "compare", "explain_cmd", "DEFAULT_OPS",
           "MAX_PREVIEW_COLS", "auto_cols"]

PREVIEW_MODES = ("auto", "always", "never")  # as poolcli.visual.PREVIEW_MODES (kept numpy-free)
DEFAULT_OPS = ("max", "avg", "min", "stochastic", "sort", "lp")
DEFAULT_TILE = 256
AUTO_COLS_MAX = 6
MAX_PREVIEW_COLS = 80


# ----------------------------------------------------------------------------------------------
# Terminal preview helpers
# ----------------------------------------------------------------------------------------------


def add_preview_option(f=None, *, default: str = "auto"):
    """Decorator adding ``--preview [auto|always|never]`` (parameter name ``preview``).

    Use bare (``@add_preview_option``) or with another default
    (``@add_preview_option(default="never")``).
    """

    def decorate(func):
        return click.option(
            "--preview", type=click.Choice(PREVIEW_MODES), default=default, show_default=True,
            help="Draw the result in the terminal (stderr, 24-bit colour half blocks): auto = "
                 "when stderr is a terminal and NO_COLOR is unset; never with --json.")(func)

    return decorate(f) if f is not None else decorate


def _preview_width(hw: tuple[int, int]) -> int:
    """Columns for an ``hw`` picture: the terminal's width (at most 80), the picture's own width
    when smaller (but at least 16, so tiny outputs stay visible); no taller than the terminal."""
    size = shutil.get_terminal_size((80, 24))
    h, w = int(hw[0]), int(hw[1])
    cols = max(1, min(MAX_PREVIEW_COLS, size.columns, max(w, 16)))
    max_pixel_rows = 2 * max(8, size.lines - 2)
    if h * cols / w > max_pixel_rows:
        cols = max(1, math.floor(max_pixel_rows * w / h))
    return cols


def show_preview(array, mode: str, *, as_json: bool, width: int | None = None,
                 source_dtype=None, channels=None, stream=None) -> bool:
    """Draw ``array`` on stderr as a half-block picture if ``mode`` says so; True if drawn.

    Parameters
    ----------
    array : ndarray
        Any result: ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)`` (first image), any dtype.
        Mapped to 8-bit by :func:`poolcli.visual.to_rgb8`: pass ``source_dtype`` (the input's
        dtype) for float results on an 8/16-bit input's scale; signed floats without it are
        shown with a ``sigma:3`` stretch; alpha is composited over grey.
    mode : {"auto", "always", "never"}
        The ``--preview`` value.
    as_json : bool
        True: nothing is drawn (stdout carries JSON; keep the terminal quiet too).
    width : int, optional
        Columns [default: fit the terminal, at most 80].
    """
    if as_json:
        return False
    from poolcli import visual

    stream = sys.stderr if stream is None else stream
    if not visual.preview_enabled(mode, stream):
        return False
    rgb, _ = visual.to_rgb8(array, source_dtype=source_dtype, channels=channels)
    cols = int(width) if width else _preview_width(rgb.shape[:2])
    stream.write(visual.render_halfblocks(rgb, cols) + "\n")
    stream.flush()
    return True


# ----------------------------------------------------------------------------------------------
# Shared option plumbing
# ----------------------------------------------------------------------------------------------


def _registry_options(names, overrides=None):
    """One click option per registry parameter in ``names`` (defaults from ``overrides``)."""
    overrides = overrides or {}

    def decorate(f):
        for name in reversed([n for n in registry.PARAMS if n in names]):
            param = registry.PARAMS[name]
            default = overrides.get(name, param.default)
            if param.kind == "bool":
                f = click.option(*param.flags, param.name, default=default, show_default=True,
                                 help=param.help)(f)
            else:
                if isinstance(default, tuple):  # as text, so --help shows "4", not "4, 4"
                    default = (_short_pair(default) if param.kind in ("pair", "size")
                               else ",".join(f"{v:g}" for v in default))
                f = click.option(*param.flags, param.name, type=click_type_for(param),
                                 default=default, show_default=default is not None,
                                 help=param.help)(f)
        return f

    return decorate


def _short_pair(v) -> str:
    return str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"


def _num(v) -> str:
    from poolcli.report import fmt_num

    return fmt_num(float(v)) if isinstance(v, float) else str(v)


def param_text(op, params: dict, info: dict) -> str:
    """``k=4 s=4 seed=0`` style text of the parameters that matter for ``op``."""
    parts = []
    p = params
    for name in op.params:
        v = p.get(name)
        if name == "kernel":
            parts.append(f"k={_short_pair(v)}")
        elif name == "stride":
            eff = v or ((2, 2) if op.name == "blur" else p.get("kernel"))
            parts.append(f"s={_short_pair(eff)}")
        elif name == "padding" and v and any(v):
            parts.append(f"p={_short_pair(v)}")
        elif name == "dilation" and v and tuple(v) != (1, 1):
            parts.append(f"d={_short_pair(v)}")
        elif name == "ceil_mode" and v:
            parts.append("ceil")
        elif name == "count_include_pad" and not v and any(p.get("padding") or (0, 0)):
            parts.append("pad not counted")
        elif name == "norm_type":
            parts.append(f"p={_num(v)}")
        elif name == "output_size":
            parts.append(f"out={v[0]}x{v[1]}")
        elif name == "mode":
            parts.append(v)
        elif name == "seed" and p.get("mode", "train") == "train" and v is not None:
            parts.append(f"seed={v}")
        elif name == "axis":
            parts.append(f"along {'width' if v == 'w' else 'height'}")
        elif name == "k_top" and v is not None:
            parts.append(f"k_top={v} l={p.get('layer')} L={p.get('layers')}")
        elif name == "weights":
            parts.append("w=" + ",".join(_num(float(a)) for a in v))
        elif name == "alpha":
            parts.append(f"alpha={_num(v)}")
        elif name in ("p", "r"):
            parts.append(f"{name}={_num(v)}")
        elif name == "eps" and v != registry.PARAMS["eps"].default:
            parts.append(f"eps={_num(v)}")
        elif name in ("gamma", "beta") and v is not None:
            parts.append(f"{name}=" + ",".join(_num(float(a)) for a in v))
        elif name == "groups":
            parts.append(f"groups={v}")
    if "k" in info:
        parts.append(f"k={info['k']}")
    return " ".join(parts)


def auto_cols(n_tiles: int) -> int:
    """Default tiles per row: all of them up to 6, else balanced rows of at most 6.

    >>> [auto_cols(n) for n in (1, 6, 7, 10, 15)]
    [1, 6, 4, 5, 5]
    """
    if n_tiles <= AUTO_COLS_MAX:
        return max(1, n_tiles)
    return math.ceil(n_tiles / math.ceil(n_tiles / AUTO_COLS_MAX))


# ----------------------------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------------------------


def _parse_ops(text: str):
    ops = []
    for name in (s.strip() for s in text.split(",")):
        if not name:
            continue
        try:
            op = registry.get(name)
        except KeyError as exc:
            raise click.BadParameter(exc.args[0], param_hint="'--ops'") from None
        if op not in ops:
            ops.append(op)
    if not ops:
        raise click.BadParameter("no operator given", param_hint="'--ops'")
    return ops


def _selects_here(op, params) -> bool:
    return op.selects and not (op.name == "stochastic" and params.get("mode") == "test")


def _sheet_path(jobs, output) -> tuple[str, bool]:
    """(path, to_stdout) of the sheet; usage errors for stdin without -o, inputs, suffixes."""
    import numpy as np

    from poolcli import imageio

    first = jobs[0].source
    default_name = os.path.splitext(os.path.basename(first))[0] + "_compare.png"
    if output == "-":
        return "-", True
    if output is None:
        if first == "-":
            raise click.UsageError("the first input is standard input: give the sheet a name "
                                   "with -o FILE (or -o - for stdout)")
        path = os.path.join(os.path.dirname(first), default_name)
    elif os.path.isdir(output):
        path = os.path.join(output, "stdin_compare.png" if first == "-" else default_name)
    else:
        path = output
    try:
        imageio.output_dtype_for(path, np.uint8)
    except ValueError as exc:
        raise click.BadParameter(_one_line(exc), param_hint="'-o' / '--output'") from None
    real = os.path.realpath(path)
    for job in jobs:
        if job.source != "-" and os.path.realpath(job.source) == real:
            raise click.UsageError(f"{path} is one of the inputs; inputs are never overwritten")
    return path, False


def _colour_stats(values, ncol: int) -> tuple[float, float]:
    import numpy as np

    v = np.asarray(values, dtype=np.float64)[..., :ncol]
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())


def _short(v) -> str:
    """4 significant digits, whole numbers from 1000 on, 0 for tiny values."""
    v = float(v)
    if not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if abs(v) < 5e-4:
        return "0"
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def _stat_text(shape, mean, std) -> str:
    """``75x112  mean 127.9  std 39.47`` (one pixel: no std, it would be the channels' spread)."""
    text = f"{shape[0]}x{shape[1]}  mean {_short(mean)}"
    return text if shape[0] * shape[1] == 1 else f"{text}  std {_short(std)}"


def _image_tiles(img, ops, params, diff_ref, selection, tile_size):
    """The tiles of one image and their records; failures become grey placeholder tiles."""
    import numpy as np

    from poolcli import visual
    from poolcli.cli import _affine_arrays

    x = img.array
    h, w, c = x.shape
    ncol, has_alpha = visual._colour_count(c, img.channels)
    scale = visual.DisplayScale.for_input(x, ncol)
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
    tiles = [visual.Tile(rgb0, [os.path.basename(img.source) or img.source, head,
                                f"mean {_short(mean0)}  std {_short(std0)}"],
                         meta={"kind": "original", "op": None, "shape": [h, w, c],
                               "dtype": str(x.dtype), "mean": mean0, "std": std0})]
    errors = []
    results = {}
    placeholder = np.full((8, 8, 3), 215, dtype=np.uint8)

    def failed(kind, op, message):
        return visual.Tile(placeholder, [f"{op.name}: failed", message],
                           meta={"kind": "error", "for": kind, "op": op.name, "error": message})

    for op in ops:
        op_p = {name: params[name] for name in op.params}
        run_p = dict(op_p)
        if "seed" in op.params:  # each image its own stream, exactly as `poolcli pool` draws
            run_p["_key"] = os.path.basename(img.source)
        try:
            if op.family == "norm":
                run_p = _affine_arrays(run_p, c)
            res = op.run(x, run_p, _selects_here(op, params) and selection)
            values = np.asarray(res.values)
            if values.ndim == 2:
                values = values[:, :, None]
            if op.family == "norm":
                rgb, notes = visual.to_rgb8(values, channels=img.channels, signed=True)
            else:
                rgb, notes = visual.to_rgb8(values, scale=scale, channels=img.channels)
        except (ValueError, TypeError, MemoryError) as exc:
            msg = _one_line(exc)
            errors.append(f"{img.source}: {op.name}: {msg}")
            tiles.append(failed("op", op, msg))
            results[op.name] = None
            continue
        results[op.name] = (values, res)
        mean, std = _colour_stats(values, ncol)
        third = ""
        if op.family == "norm":
            third = "shown mean ± 3 std" + (", alpha dropped" if has_alpha else "")
        else:
            clipped = scale.clipped_fraction(values[..., :ncol])
            if clipped >= 0.005:
                top = {"uint8": "255", "uint16": "65535"}.get(scale.kind, f"{scale.hi:.4g}")
                third = f"{100 * clipped:.0f}% of values > {top}, shown clipped"
        info = {k: v for k, v in res.info.items() if k != "stream"}
        tiles.append(visual.Tile(
            rgb, [f"{op.name} {param_text(op, op_p, info)}".strip(),
                  _stat_text(values.shape, mean, std), third],
            meta={"kind": "op", "op": op.name, "shape": list(values.shape),
                  "dtype": str(values.dtype), "mean": mean, "std": std,
                  "params": {k: list(v) if isinstance(v, tuple) else v
                             for k, v in op_p.items()},
                  "info": dict(res.info), "display": notes}))
    if selection:
        for op in ops:
            if not _selects_here(op, params):
                continue
            got = results.get(op.name)
            if got is None or got[1].indices is None:
                tiles.append(failed("selection", op, "the operator failed"))
                continue
            res = got[1]
            pic = visual.selection_picture(x, res.indices)
            rgb, _ = visual.to_rgb8(pic, scale=scale, channels=img.channels, alpha="drop")
            idx = np.asarray(res.indices).reshape(-1, c)
            n_kept = sum(np.unique(idx[:, ch]).size for ch in range(c))
            kept = n_kept / (h * w * c)
            share = (f"{100 * kept:.1f}% of cells kept" if kept >= 0.001 else
                     f"{n_kept / c:.3g} cell(s) per channel kept")
            seed = f" seed={res.info['seed']}" if "seed" in res.info else ""
            shrunk = "shrunk: brightest of each block" if max(h, w) > tile_size else ""
            tiles.append(visual.Tile(
                rgb, [f"{op.name}: selected cells{seed}", f"{share}, others black", shrunk],
                resample="max",
                meta={"kind": "selection", "op": op.name, "shape": [h, w, c],
                      "kept_fraction": kept}))
    if diff_ref is not None:
        ref = results.get(diff_ref.name)
        for op in ops:
            if op.name == diff_ref.name or op.family != diff_ref.family:
                continue  # pooled and normalized values are on different scales
            got = results.get(op.name)
            if got is None or ref is None:
                tiles.append(failed("diff", op, "an operator failed"))
                continue
            a = got[0][..., :ncol]
            b = ref[0][..., :ncol]
            pic, top = visual.abs_diff_picture(a, b, (h, w))
            rgb, _ = visual.to_rgb8(pic, scale=visual.DisplayScale("uint8"))
            tiles.append(visual.Tile(
                rgb, [f"|{op.name} - {diff_ref.name}|",
                      f"0..{_short(top)} -> black..white" if top else "identical (all 0)",
                      "contrast stretched per tile"],
                meta={"kind": "diff", "op": op.name, "ref": diff_ref.name, "max_diff": top}))
    record = {"input": img.source, "shape": [h, w, c], "dtype": str(x.dtype),
              "channels": list(img.channels), "display": scale.describe(),
              "notes": list(dict.fromkeys(list(img.notes) + notes0 + (
                  [scale.describe()] if scale.kind != "uint8" else [])))}
    return tiles, record, errors


@main.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True)
@click.option("--ops", "ops_text", default=",".join(DEFAULT_OPS), show_default=True,
              help="Comma-separated operators (see `poolcli ops`); pool and norm operators.")
@_registry_options(set(registry.PARAMS), {"kernel": (4, 4)})
@click.option("--diff", "diff_ref", default=None, metavar="REFOP",
              help="Add a tile |op - REFOP| per operator (REFOP must be in --ops), "
                   "contrast-stretched per tile.")
@click.option("--selection/--no-selection", default=True, show_default=True,
              help="Add a 'selected cells' tile for each selecting operator (max, min, "
                   "stochastic, ...): the chosen input cells, others black.")
@click.option("--tile-size", type=click.IntRange(32, 2048), default=DEFAULT_TILE,
              show_default=True, help="Longer side of every tile, in pixels.")
@click.option("--cols", type=click.IntRange(min=1), default=None,
              help="Tiles per row; each image starts a new row [default: all of an image's "
                   f"tiles up to {AUTO_COLS_MAX}, else balanced rows of at most {AUTO_COLS_MAX}].")
@click.option("--title", default=None, help="A title line at the top of the sheet.")
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Sheet file (png, jpg, webp, ...), a directory, or - for stdout "
                   "[default: {stem}_compare.png beside the first input].")
@click.option("--force", is_flag=True, help="Replace an existing sheet (never an input).")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON record of the sheet (tiles, labels, boxes, size) on stdout.")
@add_preview_option
@click.option("-r", "--recursive", is_flag=True, help="Descend into sub-directories.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="Refuse images with more pixels [default: 178956970].")
@click.option("-q", "--quiet", is_flag=True, help="No summary; errors only.")
@click.option("-v", "--verbose", is_flag=True, help="Tracebacks for errors.")
def compare(inputs, ops_text, diff_ref, selection, tile_size, cols, title, output, force,
            as_json, preview, recursive, max_pixels, quiet, verbose, **op_params):
    """One PNG contact sheet: each image and what each operator makes of it, side by side.

    \b
    Every tile is scaled (nearest neighbour, so pooled pixels stay crisp) to the image's
    aspect ratio with its longer side --tile-size, and labelled with the operator, its
    parameters and the output's size, mean and std. One -k/-s/-p applies to every windowed
    operator (others ignore it). Alpha is composited over grey; 16-bit is shown as 8-bit;
    normalized results are stretched (mean +/- 3 std).

    \b
    Examples:
      poolcli compare photo.png                          # max,avg,min,stochastic,sort,lp, k=4
      poolcli compare a.png b.png --ops max,avg --diff avg -k 2 -o sheet.png
      poolcli compare photo.png --ops max,stochastic --seed 0 --cols 2
    """
    from poolcli.batch import expand_inputs

    ops = _parse_ops(ops_text)
    ref = None
    if diff_ref is not None:
        try:
            ref = registry.get(diff_ref.strip())
        except KeyError as exc:
            raise click.BadParameter(exc.args[0], param_hint="'--diff'") from None
        if ref not in ops:
            listed = ", ".join(o.name for o in ops)
            raise click.BadParameter(f"{ref.name} is not in --ops ({listed})",
                                     param_hint="'--diff'")
    params = dict(op_params)
    for op in ops:
        _validate_geometry(op, {n: params[n] for n in op.params})
    if as_json and output == "-":
        raise click.UsageError("--json and -o - both need stdout; write the sheet to a file")
    session = Session(as_json, quiet, verbose)
    jobs, skipped, missing = expand_inputs(inputs, recursive=recursive)
    for pattern in missing:
        session.error(f"{pattern}: no files match")
    if skipped:
        session.warn(f"skipped {skipped} unsupported file(s) in input directories")
    if not jobs:
        if missing:
            session.exit()
        raise click.UsageError("no input images found")
    path, to_stdout = _sheet_path(jobs, output)
    if not to_stdout and os.path.exists(path) and not force:
        raise click.UsageError(f"{path} exists; use --force to replace it")
    seed_drawn = False
    if any("seed" in op.params for op in ops) and params.get("seed") is None:
        from poolcli.ops.stochastic import new_seed

        params["seed"] = new_seed()
        seed_drawn = True
    run(session, jobs, ops, params, ref, selection, tile_size, cols, title, path, to_stdout,
        force, preview, max_pixels, seed_drawn)
    session.exit()


def run(session, jobs, ops, params, ref, selection, tile_size, cols, title, path, to_stdout,
        force, preview, max_pixels, seed_drawn):
    """Build, write and report the sheet (errors are counted in ``session``)."""
    import json

    from poolcli import imageio, visual
    from poolcli.errors import PoolcliError
    from poolcli.report import _clean

    rows, records, boxes = [], [], []
    for job in jobs:
        try:
            img = _read(job.source, max_pixels)
            tiles, record, errors = _image_tiles(img, ops, params, ref, selection,
                                                  tile_size)
        except PoolcliError as exc:
            session.error(_one_line(exc))
            continue
        except (ValueError, TypeError, MemoryError) as exc:
            if session.verbose:
                import traceback

                traceback.print_exc()
            session.error(f"{job.source}: {_one_line(exc)}")
            continue
        for message in errors:
            session.error(message)
        rows.append(tiles)
        records.append(record)
        boxes.append(visual.tile_box(img.array.shape[:2], tile_size))
    if not rows:
        return
    n_tiles = len(rows[0])
    ncols = min(cols, n_tiles) if cols else auto_cols(n_tiles)
    sheet, placed, layout = visual.compose_sheet(rows, boxes, tile=tile_size, cols=ncols,
                                                 title=title)
    try:
        if to_stdout:
            imageio.write_image("-", sheet, format="PNG")
        else:
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            imageio.write_image(path, sheet, overwrite=force)
    except PoolcliError as exc:
        session.error(_one_line(exc))
        return
    session.ok += 1
    height, width = sheet.shape[:2]
    tile_records = []
    for i, (tiles, boxes_i) in enumerate(zip(rows, placed)):
        for t, box in zip(tiles, boxes_i):
            rec = {"image": i, "input": records[i]["input"], **t.meta,
                   "label": [visual.latin(line) for line in t.label if line], "box": box}
            tile_records.append(rec)
    seed = params.get("seed") if any("seed" in op.params for op in ops) else None
    if session.as_json:
        out = {
            "output": "<stdout>" if to_stdout else path,
            "size": [width, height],
            "tile_size": tile_size,
            "cols": layout["cols"],
            "ops": [op.name for op in ops],
            "diff": ref.name if ref else None,
            "selection": selection,
            "seed": seed,
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
            "layout": layout,
            "images": records,
            "tiles": tile_records,
        }
        click.echo(json.dumps(_clean(out), ensure_ascii=False, allow_nan=False, default=str))
    elif not session.quiet:
        echo = (lambda m: click.echo(m, err=True)) if to_stdout else click.echo
        echo(f"{'<stdout>' if to_stdout else path}: {width}x{height} sheet, {len(rows)} "
             f"image(s) x {n_tiles} tiles, {layout['cols']} per row")
        for rec in records:
            if rec["notes"]:
                echo(f"  {rec['input']}: " + "; ".join(rec["notes"]))
        if seed is not None:
            how = "drawn" if seed_drawn else "given"
            echo(f"  stochastic seed {seed} ({how}; repeat with --seed {seed})")
    show_preview(sheet, preview, as_json=session.as_json)


# ----------------------------------------------------------------------------------------------
# explain
# ----------------------------------------------------------------------------------------------


@main.command("explain", context_settings=CONTEXT)
@click.option("--op", "op_name", type=click.Choice(registry.names()), default="max",
              show_default=True, help="Operator to explain (see `poolcli ops`).")
@_registry_options(set(registry.PARAMS) - {"seed"}, {"output_size": (2, 2)})
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the random matrix and of stochastic pooling's draw.")
@click.option("--input", "input_hw", type=PairType(minimum=1, what="size"), default=None,
              metavar="HxW", help="Size of the random matrix of integers 0..9 [default: 4x4].")
@click.option("--values", default=None, metavar="ROWS",
              help='The matrix itself: rows separated by ";", values by "," '
                   '(e.g. "1,2,3;4,5,6").')
@click.option("--plain", is_flag=True,
              help="Plain text, brackets instead of colour [default when stdout is not a "
                   "terminal].")
def explain_cmd(op_name, seed, input_hw, values, plain, **op_params):
    """A worked example on a small matrix: windows, selected cells, output, indices.

    \b
    Examples:
      poolcli explain --op max -k 2 -s 2
      poolcli explain --op avg -k 3 -s 2 -p 1 --values "1,2,3;4,5,6;7,8,9"
      poolcli explain --op stochastic --seed 3 --input 6x6
    """
    from poolcli import explain as ex

    if values is not None and input_hw is not None:
        raise click.UsageError("--values and --input exclude each other")
    try:
        if values is not None:
            x = ex.parse_values(values)
        else:
            x = ex.random_matrix(input_hw or (4, 4), seed)
    except ValueError as exc:
        hint = "'--values'" if values is not None else "'--input'"
        raise click.BadParameter(_one_line(exc), param_hint=hint) from None
    op = registry.get(op_name)
    params = {name: op_params[name] for name in op.params if name in op_params}
    _validate_geometry(op, params)
    try:
        e = ex.explain(x, op.name, params, seed=seed)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(f"{op.name}: {_one_line(exc)}") from None
    if plain or not sys.stdout.isatty():
        click.echo(ex.render_plain(e), nl=False)
    else:
        from rich.console import Console

        Console(highlight=False).print(ex.render_rich(e))
