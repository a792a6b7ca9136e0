"""``poolcli compare``: one contact sheet of each image and what each operator makes of it."""

from __future__ import annotations

import os

import click

from poolcli import registry
from poolcli.cli import common
from poolcli.cli.options import CONTEXT, BatchArgs, op_options, preview_option, usage
from poolcli.errors import UsageError

DEFAULT_OPS = ("max", "avg", "min", "stochastic", "sort", "lp")
DEFAULT_TILE = 256
AUTO_COLS_MAX = 6


def _parse_ops(text: str):
    ops = []
    for name in (s.strip() for s in text.split(",")):
        if not name:
            continue
        try:
            op = registry.get(name)
        except KeyError as exc:
            raise usage(exc.args[0], "--ops") from None
        if op not in ops:
            ops.append(op)
    if not ops:
        raise usage("no operator given", "--ops")
    return ops


def _is_directory(output: str) -> bool:
    """A local directory, or a URL prefix ("s3://bucket/sheets/", or one holding objects)."""
    from poolcli.imageio import store

    if store.is_url(output):
        return output.endswith("/") or store.is_dir(output)
    return os.path.isdir(output)


def _sheet_path(jobs, output) -> str:
    """Where the sheet goes ("-" for stdout); usage errors for stdin without -o, suffixes."""
    from poolcli.formats import SUFFIX_FORMAT

    first = jobs[0].source
    default_name = os.path.splitext(os.path.basename(first))[0] + "_compare.png"
    if output == "-":
        return "-"
    if output is None:
        if first == "-":
            raise usage("the first input is standard input: give the sheet a name with "
                        "-o FILE (or -o - for stdout)")
        path = os.path.join(os.path.dirname(first), default_name)
    elif _is_directory(output):
        path = os.path.join(output, "stdin_compare.png" if first == "-" else default_name)
    else:
        path = output
    suffix = os.path.splitext(path)[1].lower()
    if SUFFIX_FORMAT.get(suffix) in (None, "NPY"):
        raise usage(f"unsupported sheet suffix {suffix or '(none)'}: use .png, .jpg, .webp, "
                    f".tif, .bmp or .gif", "-o / --output")
    return path


@click.command("compare", context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True)
@click.option("--ops", "ops_text", default=",".join(DEFAULT_OPS), show_default=True,
              help="Comma-separated operators (see `poolcli ops`); pool and norm operators.")
@op_options(set(registry.PARAMS), {"kernel": (4, 4)})
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
@preview_option
@click.option("-r", "--recursive", is_flag=True, help="Descend into sub-directories.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="Refuse images with more pixels [default: 178956970].")
@click.option("-q", "--quiet", is_flag=True, help="No summary; errors only.")
@click.option("-v", "--verbose", is_flag=True, help="Tracebacks for errors.")
def command(inputs, ops_text, diff_ref, selection, tile_size, cols, title, output, force,
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
    from poolcli.app.plan import make_plan
    from poolcli.app.sheet import build_sheet

    ops = _parse_ops(ops_text)
    ref = _diff_ref(diff_ref, ops)
    params = dict(op_params)
    for op in ops:
        common.checked_op(op.name, params)
    if as_json and output == "-":
        raise usage("--json and -o - both need stdout; write the sheet to a file")
    b = BatchArgs(recursive=recursive, max_pixels=max_pixels, as_json=as_json, quiet=quiet,
                  verbose=verbose, force=force)
    reporter = common.new_reporter(b, preview=preview, data_on_stdout=output == "-",
                                   json_per_input=False)  # one JSON document: the sheet
    plan = make_plan(inputs, op_label="compare", recursive=recursive, name_outputs=False)
    for pattern in plan.missing:
        reporter.error(f"{pattern}: no files match")
    reporter.tally.total = 1
    if not plan.jobs:
        common.exit_with(reporter, summary=False)
    path = _sheet_path(plan.jobs, output)
    if path != "-":  # the sheet is checked like any output: never an input, never a surprise
        plan.add_run_output(path)
        if not force and plan.existing():  # one line and exit 2, as every command says it
            raise UsageError(f"{path} exists; use --force to replace")
    seed_drawn = any("seed" in op.params for op in ops) and params.get("seed") is None
    if seed_drawn:
        params["seed"] = registry.new_seed()
    sheet = build_sheet(common.runner_for(reporter, b), plan.jobs, ops, params, ref, selection,
                        tile_size, cols, title, max_pixels)
    if sheet is not None:
        _write(sheet, path, force, ops)
        reporter.tally.ok += 1
        _report(reporter, sheet, path, ops, params, ref, selection, tile_size, seed_drawn)
    common.exit_with(reporter, summary=False)


def _diff_ref(diff_ref, ops):
    if diff_ref is None:
        return None
    try:
        ref = registry.get(diff_ref.strip())
    except KeyError as exc:
        raise usage(exc.args[0], "--diff") from None
    if ref not in ops:
        raise usage(f"{ref.name} is not in --ops ({', '.join(o.name for o in ops)})", "--diff")
    return ref


def _write(sheet, path: str, force: bool, ops) -> None:
    from poolcli import imageio
    from poolcli.app.runner import track_commit
    from poolcli.imageio import store

    made = {"command": "compare", "op": ",".join(op.name for op in ops)}
    if path == "-":
        imageio.write_image("-", sheet.picture, format="PNG", provenance=made)
        return
    if not store.is_url(path):  # a store has no directories to make
        imageio.make_parent_dirs(path)
    imageio.write_image(path, sheet.picture, overwrite=force, on_commit=track_commit,
                        provenance=made)


def _report(reporter, sheet, path, ops, params, ref, selection, tile_size, seed_drawn):
    height, width = sheet.picture.shape[:2]
    seed = params.get("seed") if any("seed" in op.params for op in ops) else None
    shown = "<stdout>" if path == "-" else path
    if reporter.as_json:
        from poolcli.app.jobs import jsonable

        reporter.json({
            "output": shown, "size": [width, height], "tile_size": tile_size,
            "cols": sheet.layout["cols"], "ops": [op.name for op in ops],
            "diff": ref.name if ref else None, "selection": selection, "seed": seed,
            "params": jsonable(params), "layout": sheet.layout, "images": sheet.records,
            "tiles": sheet.tile_records()})
    else:
        reporter.line(f"{shown}: {width}x{height} sheet, {len(sheet.rows)} image(s) x "
                      f"{len(sheet.rows[0])} tiles, {sheet.layout['cols']} per row")
        for rec in sheet.records:
            if rec["notes"]:
                reporter.line(f"  {rec['input']}: " + "; ".join(rec["notes"]))
        if seed is not None:
            how = "drawn" if seed_drawn else "given"
            reporter.line(f"  stochastic seed {seed} ({how}; repeat with --seed {seed})")
    reporter.show_preview(sheet.picture)
