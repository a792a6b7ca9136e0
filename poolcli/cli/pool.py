"""``poolcli pool``: pool each image."""

from __future__ import annotations

import click

from poolcli import registry
from poolcli.cli import common
from poolcli.cli.options import CONTEXT, BatchArgs, batch_options, op_options, \
    preview_option, usage


@click.command("pool", context_settings=CONTEXT)
@click.argument("inputs", nargs=-1)
@click.option("--op", "op_name", type=click.Choice(registry.names("pool")), default="max",
              show_default=True, help="Pooling operator (see `poolcli ops`).")
@op_options("pool")
@click.option("--save-indices", is_flag=True,
              help="Also write the max-location map {output stem}.indices.npz (selecting ops).")
@click.option("--indices-png", is_flag=True,
              help="Also write {output stem}.selected.png: the input with only the selected "
                   "cells kept (others black), selecting ops.")
@preview_option
@batch_options
def command(inputs, op_name, save_indices, indices_png, preview, **kw):
    """Pool each image in INPUTS (files, directories, glob patterns, - for stdin).

    Prints per-channel statistics of input and output; writes the result beside each input as
    {stem}_{op}{ext} unless -o or --name say otherwise. Inputs are never overwritten.
    """
    from poolcli.app.jobs import PoolSpec, pool_one, pool_side_files

    b = BatchArgs.pop(kw)
    op, params = common.checked_op(op_name, kw)
    if (save_indices or indices_png) and not op.selects_with(params):
        selecting = ", ".join(o.name for o in registry.OPERATORS if o.selects)
        flag = "--save-indices" if save_indices else "--indices-png"
        raise usage(f"--op {op.name} does not select cells; {flag} works with {selecting}",
                    flag)
    if b.to_stdout and (save_indices or indices_png):
        raise usage("-o - writes the image to standard output; side files need a file "
                    "output (-o FILE)", "--save-indices" if save_indices else "--indices-png")
    common.unused(click.get_current_context(), set(kw) - set(op.params),
                  f"does not apply to --op {op.name}")
    reporter = common.new_reporter(b, preview=preview)
    drawn = common.draw_seed(op, params)
    spec = PoolSpec(op.name, params, save_indices, indices_png,
                    preview=reporter.preview != "never")
    plan = common.plan(reporter, inputs, op.name, b, side_files=pool_side_files(spec))
    common.say_seed(reporter, drawn)
    common.run(reporter, plan.jobs, pool_one,
               (spec, common.write_options(b), b.max_pixels), b)
    common.exit_with(reporter)
