"""``poolcli chain``: stages run in order on each image (click's ``chain=True``, as in its
``imagepipe`` example); each stage takes the options of its standalone command."""

from __future__ import annotations

import click

from poolcli import registry
from poolcli.cli import common
from poolcli.cli.options import CONTEXT, BatchArgs, batch_options, display_option, op_options, \
    usage
from poolcli.formats import DEFAULT_DISPLAY


@click.group("chain", chain=True, context_settings=CONTEXT, invoke_without_command=True)
@click.option("-i", "--input", "inputs", multiple=True,
              help="Input file, directory or glob pattern (repeatable; - for stdin).")
@click.option("--pipeline", "pipeline_file", type=click.Path(dir_okay=False), default=None,
              help="Read the stages from a TOML or JSON file (see README); stages given on "
                   "the command line run after them.")
@click.option("--stats", "stats_mode", type=click.Choice(["each", "last", "none"]),
              default="last", show_default=True,
              help="Statistics table rows: after every stage, input and final result, or none.")
@batch_options
def command(**kw):
    """Run several stages in order on each image: pool, norm and unpool, each with the options
    of its standalone command.

    \b
    Example:
      poolcli chain -i 'photos/*.jpg' -o out/ pool --op max -k 2 norm --op instance unpool
    `unpool` uses the indices of the most recent selecting stage, so no files are needed in
    between. The output is named {stem}_{op}{ext} with {op} the stage operators joined by '-'.
    """


def _file_stages(ctx: click.Context, path: str) -> list:
    from poolcli.imageio.pipelinefile import read_pipeline

    stages = []
    for command, args in read_pipeline(path):
        cmd = command_group.commands[command]
        with cmd.make_context(command, list(args), parent=ctx) as sub:
            stages.append(cmd.invoke(sub))
    return stages


@command.result_callback()
def _run_chain(stages, inputs, pipeline_file, stats_mode, **kw):
    from poolcli.app.pipeline import pipeline_side_files, run_pipeline

    ctx = click.get_current_context()
    stages = list(stages or [])
    if pipeline_file:
        stages = _file_stages(ctx, pipeline_file) + stages
    if not stages:
        raise usage("no stages: give pool/norm/unpool after the options, or --pipeline FILE")
    if stages[0].command == "unpool":
        raise usage("a pipeline cannot start with unpool (nothing selected yet)")
    b = BatchArgs.pop(kw)
    reporter = common.new_reporter(b, quiet=b.quiet or stats_mode == "none")
    for n, stage in enumerate(stages, 1):
        common.say_seed(reporter, stage.params.pop("_drawn", None), f"stage {n} stochastic seed")
    reads = [pipeline_file] + [s.flags.get("stats") for s in stages]
    plan = common.plan(reporter, inputs, _label(stages), b,
                       side_files=pipeline_side_files(stages), reads=[r for r in reads if r])
    display = next((s.flags["display"] for s in stages if s.command == "norm"), DEFAULT_DISPLAY)
    common.run(reporter, plan.jobs, run_pipeline,
               (stages, common.write_options(b, display), b.max_pixels, stats_mode), b)
    common.exit_with(reporter)


command_group = command


def _label(stages, limit: int = 64) -> str:
    """``{op}`` of a pipeline: the stage operators joined by '-', shortened past ``limit``
    characters so a long pipeline's file names stay within the file system's limit."""
    ops = [s.op for s in stages]
    label = "-".join(ops)
    if len(label) <= limit:
        return label
    head = ops[:1]
    while len("-".join(ops[:len(head) + 1])) <= limit // 2:
        head = ops[:len(head) + 1]
    return f"{'-'.join(head)}-{len(ops) - len(head) - 1}-more-{ops[-1]}"


@command.command("pool", context_settings=CONTEXT)
@click.option("--op", "op_name", type=click.Choice(registry.names("pool")), default="max",
              show_default=True, help="Pooling operator.")
@op_options("pool")
@click.option("--save-indices", is_flag=True,
              help="Also write this stage's map as {output stem}.stageN.indices.npz.")
def chain_pool(op_name, save_indices, **op_params):
    """A pooling stage (options as `poolcli pool`)."""
    from poolcli.app.pipeline import Stage

    op, params = common.checked_op(op_name, op_params)
    common.unused(click.get_current_context(), set(op_params) - set(op.params),
                  f"does not apply to --op {op.name}")
    params["_drawn"] = common.draw_seed(op, params)
    if save_indices and not op.selects_with(params):
        raise usage(f"--op {op.name} does not select cells; --save-indices needs one that "
                    f"does", "--save-indices")
    return Stage("pool", op.name, params, {"save_indices": save_indices})


@command.command("norm", context_settings=CONTEXT)
@click.option("--op", "op_name", type=click.Choice(registry.names("norm")), default="instance",
              show_default=True, help="Normalization.")
@op_options("norm")
@display_option
@click.option("--stats", "stats_file", type=click.Path(dir_okay=False), default=None,
              help="batch: stored statistics (inference mode; required in a chain).")
@click.option("--running", is_flag=True,
              help="batch: PyTorch's running statistics instead of the exact ones.")
def chain_norm(op_name, display, stats_file, running, **op_params):
    """A normalization stage (options as `poolcli norm`)."""
    from poolcli.app.pipeline import Stage

    op, params = common.checked_op(op_name, op_params)
    common.unused(click.get_current_context(), set(op_params) - set(op.params),
                  f"does not apply to --op {op.name}")
    common.check_display(display)
    if op.name == "batch" and not stats_file:
        raise usage("norm --op batch in a chain needs --stats FILE (fit it first with "
                    "`poolcli norm --op batch --fit --save-stats FILE`)")
    if stats_file:
        if op.name != "batch":
            raise usage("--stats works with --op batch only", "--stats")
        from poolcli.imageio import statsfile

        statsfile.load(stats_file)  # fail before any image is read
    return Stage("norm", op.name, params, {"display": display, "stats": stats_file,
                                           "running": running})


@command.command("unpool", context_settings=CONTEXT)
@click.option("--accumulate", is_flag=True,
              help="Add values landing on the same cell (the max-pool backward pass).")
def chain_unpool(accumulate):
    """Unpool with the indices of the most recent selecting stage."""
    from poolcli.app.pipeline import Stage

    return Stage("unpool", "unpool", {}, {"accumulate": accumulate})
