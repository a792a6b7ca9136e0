"""``poolcli explain``: a worked example on a small matrix."""

from __future__ import annotations

import sys

import click

from poolcli import registry
from poolcli.cli import common
from poolcli.cli.options import CONTEXT, op_options, usage
from poolcli.cli.paramtypes import PairType


@click.command("explain", context_settings=CONTEXT)
@click.option("--op", "op_name", type=click.Choice(registry.names()), default="max",
              show_default=True, help="Operator to explain (see `poolcli ops`).")
@op_options(set(registry.PARAMS) - {"seed"}, {"output_size": (2, 2)})
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
def command(op_name, seed, input_hw, values, plain, **op_params):
    """A worked example on a small matrix: windows, selected cells, output, indices.

    \b
    Examples:
      poolcli explain --op max -k 2 -s 2
      poolcli explain --op avg -k 3 -s 2 -p 1 --values "1,2,3;4,5,6;7,8,9"
      poolcli explain --op stochastic --seed 3 --input 6x6
    """
    from poolcli import explain as ex
    from poolcli.errors import one_line

    if values is not None and input_hw is not None:
        raise usage("--values and --input exclude each other")
    try:
        x = ex.parse_values(values) if values is not None else ex.random_matrix(
            input_hw or (4, 4), seed)
    except ValueError as exc:
        raise usage(one_line(exc), "--values" if values is not None else "--input") from None
    op, params = common.checked_op(op_name, op_params)
    try:
        e = ex.explain(x, op.name, params, seed=seed)
    except (ValueError, TypeError) as exc:
        raise usage(f"{op.name}: {one_line(exc)}") from None
    if plain or not sys.stdout.isatty():
        click.echo(ex.render_plain(e), nl=False)
    else:
        from rich.console import Console

        Console(highlight=False).print(ex.render_rich(e))
