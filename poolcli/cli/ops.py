"""``poolcli ops``: every operator with its source."""

from __future__ import annotations

import json

import click

from poolcli import registry
from poolcli.cli.options import CONTEXT


@click.command("ops", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def command(as_json):
    """List every operator with a one-line description and its source."""
    if as_json:
        for op in registry.OPERATORS:
            click.echo(json.dumps({"name": op.name, "family": op.family, "aliases": op.aliases,
                                   "summary": op.summary, "source": op.source,
                                   "params": list(op.params), "selects": op.selects}))
        return
    width = max(len(", ".join((op.name, *op.aliases))) for op in registry.OPERATORS)
    for family in ("pool", "norm"):
        members = [op for op in registry.OPERATORS if op.family == family]
        click.echo(f"{family}:")
        for op in members:
            label = ", ".join((op.name, *op.aliases))
            mark = " [indices]" if op.selects else ""
            click.echo(f"  {label:<{width}}  {op.summary}{mark}")
            click.echo(f"  {'':<{width}}  source: {op.source}")
