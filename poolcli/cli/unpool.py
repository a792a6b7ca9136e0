"""``poolcli unpool``: max-unpooling from a saved map."""

from __future__ import annotations

import click

from poolcli.cli import common
from poolcli.cli.options import CONTEXT, BatchArgs, batch_options, preview_option
from poolcli.cli.paramtypes import SIZE


@click.command("unpool", context_settings=CONTEXT)
@click.argument("pooled")
@click.option("--indices", "map_path", required=True, type=click.Path(dir_okay=False),
              help="Max-location map written by `pool --save-indices` ({stem}.indices.npz).")
@click.option("--accumulate", is_flag=True,
              help="Add values that land on the same cell (the true backward pass of "
                   "overlapping pooling) instead of overwriting like PyTorch.")
@click.option("--output-size", type=SIZE, default=None,
              help="Override the output size HxW [default: the input size stored in the map].")
@preview_option
@batch_options
def command(pooled, map_path, accumulate, output_size, preview, **kw):
    """Rebuild the pre-pooling size from POOLED and its max-location map (zeros elsewhere).

    POOLED may be the pooled image itself or any image of the pooled shape (for example after
    `poolcli norm`). The output size comes from the map, so it never has to be guessed.
    """
    from poolcli.app.jobs import unpool_one
    from poolcli.imageio import indexmap

    b = BatchArgs.pop(kw)
    reporter = common.new_reporter(b, preview=preview)
    plan = common.plan(reporter, [pooled], "unpool", b, reads=[map_path])
    # a bad map is exit 2, before the image is read; loaded once, for the one job
    m = indexmap.load(map_path, **({} if b.max_pixels is None else
                                   {"max_pixels": b.max_pixels}))
    common.run(reporter, plan.jobs, unpool_one,
               (m, map_path, accumulate, output_size, common.write_options(b), b.max_pixels,
                reporter.preview != "never"), b)
    common.exit_with(reporter)
