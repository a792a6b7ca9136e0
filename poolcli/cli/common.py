"""The steps every batch command shares: check the operator, plan, dry-run, run, finish.

A command module parses its options, then calls these; what happens to each image is in
:mod:`poolcli.app`.
"""

from __future__ import annotations

import sys

import click

from poolcli import registry
from poolcli.cli.options import BatchArgs, usage
from poolcli.errors import ExitStatus
from poolcli.formats import DEFAULT_DISPLAY

__all__ = ["checked_op", "plan", "run", "read_inputs", "exit_with"]


def checked_op(op_name: str, op_params: dict):
    """The operator and its resolved parameters; wrong parameters are exit 2 now."""
    op = registry.get(op_name)
    params = op.resolve(op_params)
    try:
        op.check(params)
    except registry.ParamError as exc:
        raise usage(str(exc), exc.option) from None
    return op, params


def draw_seed(op, params: dict) -> int | None:
    """A seeded operator without --seed gets one base seed for the run (returned, to report);
    each image's own seed derives from it by position (see registry.image_seed)."""
    if "seed" not in op.params or params.get("seed") is not None:
        return None
    if params.get("mode", "train") != "train":
        return None
    params["seed"] = registry.new_seed()
    return params["seed"]


def say_seed(reporter, seed: int | None, what: str = "stochastic seed") -> None:
    """Tell the drawn seed even with -q: without it the run cannot be repeated."""
    if seed is not None:
        reporter.note(f"{what} {seed} (drawn): repeat the run with --seed {seed}; each "
                      f"image's own seed is in its record and repeats it alone")


def read_inputs(inputs, b: BatchArgs) -> list[str]:
    """The command-line inputs and those of ``--from-list``."""
    items = list(inputs)
    if b.from_list:
        from poolcli.imageio.listfile import read_list

        items += read_list(b.from_list)
    return items


def plan(reporter, inputs, op_label: str, b: BatchArgs, *, name_outputs: bool = True,
         side_files=None, run_outputs=(), reads=()):
    """Expand the inputs and decide every output; ``--dry-run`` prints the plan and exits."""
    from poolcli.app.plan import make_plan

    reads = [p for p in (*reads, b.from_list) if p]
    the_plan = make_plan(read_inputs(inputs, b), op_label=op_label, output=b.output,
                         fmt=b.fmt, template=b.name_template, recursive=b.recursive,
                         shard=b.shard, name_outputs=name_outputs, side_files=side_files,
                         run_outputs=run_outputs, reads=reads, existing=b.existing,
                         include_outputs=b.include_outputs)
    for pattern in the_plan.missing:
        reporter.error(f"{pattern}: no files match", source=pattern)
    if the_plan.unsupported:
        reporter.tally.skipped += the_plan.unsupported
        reporter.warn(f"skipped {the_plan.unsupported} unsupported file(s) in input directories")
    if the_plan.own_outputs:
        reporter.tally.skipped += the_plan.own_outputs
        reporter.warn(f"left out {the_plan.own_outputs} image(s) poolcli wrote "
                      f"(--include-outputs takes them)")
    reporter.tally.total = len(the_plan.jobs)
    if b.dask and any(job.source == "-" for job in the_plan.jobs):
        raise usage("standard input (-) is this process's; with --dask read files", "--dask")
    if b.dry_run:
        _dry_run(reporter, the_plan, b)
    return the_plan


def _dry_run(reporter, the_plan, b: BatchArgs) -> None:
    """List ``input -> output [side files]``, marking outputs that exist and what would
    happen to them; read and write nothing."""
    exists = set(the_plan.existing())
    fate = "skipped" if b.skip_existing else "replaced" if b.force else \
        "needs --force or --skip-existing"

    def shown(path):
        return f"{path} (exists: {fate})" if path in exists else path

    for job in the_plan.jobs:
        paths = [p for p in (job.output, *job.side) if p]
        if reporter.as_json:
            reporter.json({"input": job.source, "output": job.output,
                           "side_files": list(job.side), "exists": [p for p in paths
                                                                    if p in exists],
                           "dry_run": True})
        else:
            reporter.line(" ".join([job.source, "->", *(shown(p) for p in paths)]
                                   if paths else [job.source]))
    for path in the_plan.run_outputs:
        if reporter.as_json:
            reporter.json({"output": path, "exists": path in exists, "dry_run": True})
        else:
            reporter.line(f"(run) -> {shown(path)}")
    exit_with(reporter, summary=False)


def run(reporter, jobs, fn, args, b: BatchArgs, *, workers: int | None = None) -> None:
    """Run ``fn(job, *args)`` over ``jobs`` through the one runner (on the cluster with
    ``--dask``)."""
    from poolcli.app.runner import default_workers

    if workers is None:
        workers = 1 if reporter.preview != "never" else (b.workers or default_workers())
    runner_for(reporter, b, workers).run(jobs, fn, args)


def exit_with(reporter, summary: bool = True) -> None:
    """Finish the run and exit with its status."""
    code = reporter.finish(summary)
    sys.exit(int(code))


def runner_for(reporter, b: BatchArgs, workers: int = 1, *, local: str | None = None):
    """The runner of this command: local processes, or the Dask cluster of ``--dask``;
    ``local`` says why this step runs here even with ``--dask`` (warned)."""
    if b.dask and local:
        reporter.warn(f"--dask: {local}, so it runs in this process")
    elif b.dask:
        from poolcli.app.cluster import ClusterRunner

        return ClusterRunner(reporter, reporter.tally, address=b.dask, fail_fast=b.fail_fast,
                             verbose=b.verbose, force=b.force)
    from poolcli.app.runner import Runner

    return Runner(reporter, reporter.tally, workers=workers, fail_fast=b.fail_fast,
                  verbose=b.verbose)


def write_options(b: BatchArgs, display: str = DEFAULT_DISPLAY):
    """How outputs are written; statistics only when someone will see them."""
    from poolcli.app.outputs import WriteOptions

    return WriteOptions(force=b.force, quality=b.quality, compress_level=b.compress_level,
                        display=display, stats=bool(b.as_json or not b.quiet),
                        stdout_format=b.fmt)


def check_display(display: str) -> None:
    """``--display`` is checked before any file is read."""
    from poolcli.imageio.values import parse_display

    try:
        parse_display(display)
    except ValueError as exc:
        raise usage(str(exc), "--display") from None


def unused(ctx: click.Context, names, why: str) -> None:
    """Exit 2 when an option in ``names`` was given on the command line but does nothing."""
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name == "COMMANDLINE":
            param = next(p for p in ctx.command.params if p.name == name)
            raise usage(f"{param.opts[0]} {why}", param.opts[0])


EXIT = ExitStatus


def new_reporter(b: BatchArgs | None = None, **kw):
    """The reporter of this command run (the error boundary reads its tally on an interrupt)."""
    from poolcli.cli.output import Reporter

    if b is not None:
        kw = {"as_json": b.as_json, "quiet": b.quiet, "verbose": b.verbose,
              "data_on_stdout": b.to_stdout, **kw}
    reporter = Reporter(**kw)
    click.get_current_context().meta["poolcli.reporter"] = reporter
    return reporter
