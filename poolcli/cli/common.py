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
                         run_outputs=run_outputs, reads=reads)
    for pattern in the_plan.missing:
        reporter.error(f"{pattern}: no files match")
    if the_plan.unsupported:
        reporter.tally.skipped += the_plan.unsupported
        reporter.warn(f"skipped {the_plan.unsupported} unsupported file(s) in input directories")
    reporter.tally.total = len(the_plan.jobs)
    if b.dry_run:
        _dry_run(reporter, the_plan)
    return the_plan


def _dry_run(reporter, the_plan) -> None:
    for job in the_plan.jobs:
        if reporter.as_json:
            reporter.json({"input": job.source, "output": job.output, "side_files": list(job.side),
                           "dry_run": True})
        else:
            reporter.line(" ".join([job.source, "->", job.output or "(nothing)", *job.side]))
    for path in the_plan.run_outputs:
        if reporter.as_json:
            reporter.json({"output": path, "dry_run": True})
        else:
            reporter.line(f"(run) -> {path}")
    exit_with(reporter, summary=False)


def run(reporter, jobs, fn, args, b: BatchArgs, *, workers: int | None = None) -> None:
    """Run ``fn(job, *args)`` over ``jobs`` through the one runner."""
    from poolcli.app.runner import Runner, default_workers

    if workers is None:
        workers = 1 if reporter.preview != "never" else (b.workers or default_workers())
    runner = Runner(reporter, reporter.tally, workers=workers, fail_fast=b.fail_fast,
                    verbose=b.verbose)
    runner.run(jobs, fn, args)


def exit_with(reporter, summary: bool = True) -> None:
    """Finish the run and exit with its status."""
    code = reporter.finish(summary)
    sys.exit(int(code))


def runner_for(reporter, b: BatchArgs, workers: int = 1):
    from poolcli.app.runner import Runner

    return Runner(reporter, reporter.tally, workers=workers, fail_fast=b.fail_fast,
                  verbose=b.verbose)


def write_options(b: BatchArgs, display: str = DEFAULT_DISPLAY):
    """How outputs are written; statistics only when someone will see them."""
    from poolcli.app.outputs import WriteOptions

    return WriteOptions(force=b.force, quality=b.quality, compress_level=b.compress_level,
                        display=display, stats=bool(b.as_json or not b.quiet))


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
        kw = {"as_json": b.as_json, "quiet": b.quiet, "verbose": b.verbose, **kw}
    reporter = Reporter(**kw)
    click.get_current_context().meta["poolcli.reporter"] = reporter
    return reporter
