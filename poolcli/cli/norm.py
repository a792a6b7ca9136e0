"""``poolcli norm``: normalize each image, or all of them as one batch."""

from __future__ import annotations

import click

from poolcli import registry
from poolcli.cli import common
from poolcli.cli.options import CONTEXT, BatchArgs, batch_options, display_option, \
    op_options, preview_option, usage
from poolcli.cli.paramtypes import BoundedFloat


@click.command("norm", context_settings=CONTEXT)
@click.argument("inputs", nargs=-1)
@click.option("--op", "op_name", type=click.Choice(registry.names("norm")), default="instance",
              show_default=True, help="Normalization (see `poolcli ops`).")
@op_options("norm")
@display_option
@click.option("--fit", is_flag=True,
              help="batch: compute running statistics over all inputs, streaming in chunks.")
@click.option("--batch-size", type=click.IntRange(min=2), default=8, show_default=True,
              help="batch --fit: images per chunk.")
@click.option("--momentum", type=BoundedFloat(0, maximum=1), default=0.1, show_default=True,
              help="batch --fit: running = (1-m)·running + m·batch, as PyTorch.")
@click.option("--cumulative", is_flag=True,
              help="batch --fit: cumulative average instead of momentum "
                   "(PyTorch's momentum=None).")
@click.option("--save-stats", type=click.Path(dir_okay=False), default=None,
              help="batch --fit: write the statistics JSON here.")
@click.option("--stats", "stats_file", type=click.Path(dir_okay=False), default=None,
              help="batch: normalize with stored statistics (inference mode): the exact mean "
                   "and variance of the whole fitted set.")
@click.option("--running", is_flag=True,
              help="batch --stats: use PyTorch's momentum running statistics instead (what "
                   "model.eval() uses).")
@preview_option
@batch_options
def command(inputs, op_name, display, fit, batch_size, momentum, cumulative, save_stats,
            stats_file, running, preview, **kw):
    """Normalize each image in INPUTS (instance, layer, group) or all of them as one batch.

    \b
    batch norm has three modes:
      poolcli norm --op batch a.png b.png ...                 # one batch, batch statistics
      poolcli norm --op batch --fit --save-stats s.json dir/  # fit statistics (any sizes)
      poolcli norm --op batch --stats s.json new.png          # inference: exact statistics
      poolcli norm --op batch --stats s.json --running new.png  # ... PyTorch's running ones
    """
    from poolcli.app import batchnorm
    from poolcli.app.jobs import norm_one

    b = BatchArgs.pop(kw)
    op, params = common.checked_op(op_name, kw)
    ctx = click.get_current_context()
    common.unused(ctx, set(kw) - set(op.params), f"does not apply to --op {op.name}")
    common.check_display(display)
    if op.name != "batch" and (fit or save_stats or stats_file):
        raise usage("--fit, --save-stats and --stats work with --op batch only")
    if save_stats and not fit:
        raise usage("--save-stats needs --fit")
    if fit and stats_file:
        raise usage("--fit and --stats exclude each other")
    if not fit:
        common.unused(ctx, ("batch_size", "momentum", "cumulative"), "works with --fit only")
    if not stats_file:
        common.unused(ctx, ("running",), "works with --stats only")
    reporter = common.new_reporter(b, preview=preview)
    if stats_file:
        from poolcli.app.batchnorm import inference_statistics
        from poolcli.imageio import statsfile

        stored = statsfile.load(stats_file)  # a bad statistics file is exit 2, before any image
        mean, var, used = inference_statistics(stored, running)
        reporter.batch_stats(f"inference with the {used} of {stats_file}",
                             stored["channels"], mean, var)
    preview_on = reporter.preview != "never"
    # fitting writes only the statistics file, so outputs are not named
    plan = common.plan(reporter, inputs, op.name, b, name_outputs=not fit,
                       run_outputs=[save_stats] if save_stats else [],
                       reads=[stats_file] if stats_file else [])
    opts = common.write_options(b, display)
    if op.name != "batch":
        common.run(reporter, plan.jobs, norm_one, (op.name, params, opts, b.max_pixels,
                                                   preview_on), b)
    elif stats_file:
        common.run(reporter, plan.jobs, batchnorm.infer_one,
                   (stored, stats_file, running, params, opts, b.max_pixels, preview_on), b)
    elif fit:
        fit_opts = batchnorm.FitOptions(batch_size, None if cumulative else momentum,
                                        save_stats, b.force)
        batchnorm.fit(common.runner_for(reporter, b), reporter, plan.jobs, params, fit_opts,
                      b.max_pixels)
    else:
        why = "batch norm of one batch needs every image at once (--fit, then --stats, run " \
              "on the cluster)"
        batchnorm.apply_batch(common.runner_for(reporter, b, local=why), reporter, plan.jobs,
                              params, opts, b.max_pixels)
    common.exit_with(reporter)
