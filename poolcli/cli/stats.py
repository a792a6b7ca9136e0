"""``poolcli stats``: the statistics table alone."""

from __future__ import annotations

import click

from poolcli.cli import common
from poolcli.cli.options import CONTEXT, BatchArgs, input_options


@click.command("stats", context_settings=CONTEXT)
@click.argument("inputs", nargs=-1)
@input_options
def command(inputs, **kw):
    """Print per-channel statistics (min, max, mean, population std, zeros) of each image."""
    from poolcli.app.jobs import stats_one

    b = BatchArgs.pop(kw)
    reporter = common.new_reporter(b)
    plan = common.plan(reporter, inputs, "stats", b, name_outputs=False)
    common.run(reporter, plan.jobs, stats_one, (b.max_pixels,), b)
    common.exit_with(reporter)
