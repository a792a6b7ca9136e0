"""Option bundles shared by the commands (decorators, in the style of sqlite-utils).

Operator options are built from the registry, so a new operator or parameter needs no change
here. Import-light: click and the registry only, so ``--help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from poolcli import registry
from poolcli.cli.paramtypes import ShardType, click_type_for
from poolcli.formats import DEFAULT_DISPLAY, OUTPUT_FORMATS

__all__ = ["CONTEXT", "op_options", "preview_option", "batch_options", "input_options",
           "BatchArgs", "usage", "DEFAULT_DISPLAY", "display_option"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _show(param, default):
    """A default as --help should show it: ``4`` not ``(4, 4)``, ``0.5,0.3,0.2``."""
    if isinstance(default, tuple):
        if param.kind in ("pair", "size"):
            return str(default[0]) if default[0] == default[1] else f"{default[0]}x{default[1]}"
        return ",".join(f"{v:g}" for v in default)
    return default


def op_options(names, overrides: dict | None = None):
    """One click option per registry parameter in ``names`` (a family name or a set of
    parameter names); ``overrides`` change defaults (compare's kernel 4)."""
    if isinstance(names, str):
        names = {p.name for p in registry.params_for(names)}
    overrides = overrides or {}

    def decorate(f):
        for name in reversed([n for n in registry.PARAMS if n in names]):
            param = registry.PARAMS[name]
            default = overrides.get(name, param.default)
            if param.kind == "bool":
                f = click.option(*param.flags, param.name, default=default, show_default=True,
                                 help=param.help)(f)
            else:  # a tuple default as text ("2", "0.5,0.3,0.2"): the type parses it back
                f = click.option(*param.flags, param.name, type=click_type_for(param),
                                 default=_show(param, default), show_default=default is not None,
                                 help=param.help)(f)
        return f

    return decorate


def preview_option(f):
    """``--preview`` (= auto), ``--preview always|never``: draw results in the terminal."""
    return click.option(
        "--preview", type=click.Choice(["auto", "always", "never"]), default="never",
        is_flag=False, flag_value="auto", show_default=True,
        help="Draw each result on stderr with true-colour half blocks: alone or 'auto' when "
             "stderr is a terminal and NO_COLOR is unset, 'always' to force; never with --json "
             "(runs with one worker).")(f)


def display_option(f):
    return click.option(
        "--display", default=DEFAULT_DISPLAY, show_default=True,
        help="How signed results are mapped to 8-bit files (png/jpg): minmax, sigma:K "
             "(mean ± K·std to 0..255), clip (0..1). npy/tiff store exact values.")(f)


def input_options(f):
    """Inputs beyond the arguments, and how far to look."""
    for option in reversed([
        click.option("-r", "--recursive", is_flag=True,
                     help="Descend into sub-directories of directory inputs (the folder "
                          "structure is mirrored under -o)."),
        click.option("--from-list", "from_list", type=click.Path(allow_dash=True), default=None,
                     help="Read more input paths from FILE, one a line (- for stdin)."),
        click.option("--include-outputs", is_flag=True,
                     help="Also take images poolcli wrote (their metadata says so) when "
                          "expanding directories and patterns [default: left out]."),
        click.option("--max-pixels", type=click.IntRange(min=1), default=None,
                     help="Refuse images with more pixels (decompression-bomb guard) "
                          "[default: 178956970]."),
        click.option("-j", "--jobs", "workers", type=click.IntRange(min=1), default=None,
                     help="Parallel worker processes [default: number of cores]."),
        click.option("--dask", "dask", metavar="ADDRESS", default=None,
                     help="Run the images as tasks on a Dask cluster: its scheduler's address "
                          "(tcp://host:8786) or scheduler file. Workers need this poolcli "
                          "and the same file system (pip install 'poolcli[dask]')."),
        click.option("--json", "as_json", is_flag=True,
                     help="One JSON object per image on stdout, then a summary object; "
                          "tables go to stderr."),
        click.option("-v", "--verbose", is_flag=True, help="Tracebacks for errors."),
        click.option("-q", "--quiet", is_flag=True, help="No tables or progress; errors only."),
    ]):
        f = option(f)
    return f


def batch_options(f):
    """Options shared by commands that write one result per input (batch processing)."""
    for option in reversed([
        click.option("-o", "--output", type=click.Path(allow_dash=True), default=None,
                     help="Output file (one input), - for standard output (one input; "
                          "tables go to stderr), or directory (created if missing) "
                          "[default: beside each input]."),
        click.option("--name", "name_template", default="{stem}_{op}{ext}", show_default=True,
                     help="Output file name template: {stem} {ext} {op} {name} {parent} "
                          "{index} (see README)."),
        click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS, case_sensitive=False),
                     default=None, help="Output format [default: the input's]."),
        click.option("--force", is_flag=True, help="Replace existing outputs (never inputs)."),
        click.option("--skip-existing", is_flag=True,
                     help="Leave inputs whose output exists alone (reported as skipped): "
                          "re-run or resume a batch."),
        click.option("--quality", type=click.IntRange(1, 100), default=None,
                     help="JPEG/WebP quality [default: 90]."),
        click.option("--compress-level", type=click.IntRange(0, 9), default=None,
                     help="PNG/TIFF deflate level, 0 = none [default: 1, see README]."),
        click.option("--fail-fast", is_flag=True, help="Stop at the first failing input."),
        click.option("--dry-run", is_flag=True, help="List what would be written; read nothing."),
        click.option("--shard", type=ShardType(), default=None,
                     help="Process only slice I of N (I/N, 1-based) of the sorted inputs, "
                          "for N array jobs on a cluster."),
    ]):
        f = option(f)
    return input_options(f)


@dataclass
class BatchArgs:
    """The batch options of one command, as parsed."""

    recursive: bool = False
    from_list: str | None = None
    include_outputs: bool = False
    max_pixels: int | None = None
    workers: int | None = None
    dask: str | None = None
    as_json: bool = False
    verbose: bool = False
    quiet: bool = False
    output: str | None = None
    name_template: str = "{stem}_{op}{ext}"
    fmt: str | None = None
    force: bool = False
    skip_existing: bool = False
    quality: int | None = None
    compress_level: int | None = None
    fail_fast: bool = False
    dry_run: bool = False
    shard: tuple[int, int] | None = None

    @classmethod
    def pop(cls, kw: dict) -> "BatchArgs":
        """Take the batch options out of a command's keyword arguments; conflicting ones are
        a usage error."""
        names = cls.__dataclass_fields__
        b = cls(**{k: kw.pop(k) for k in list(kw) if k in names})
        if b.force and b.skip_existing:
            raise usage("--force and --skip-existing exclude each other")
        if b.output == "-" and b.as_json:
            raise usage("-o - and --json both need standard output; write the result to a "
                        "file", "-o")
        if b.dask is not None:
            b.check_dask()
        return b

    def check_dask(self) -> None:
        """What cannot go to a cluster: this process's standard input and output."""
        if not self.dask.strip():
            raise usage("needs a scheduler address (tcp://host:8786) or scheduler file",
                        "--dask")
        if self.workers is not None:
            raise usage("-j and --dask exclude each other (the cluster's workers run the "
                        "images)", "--dask")
        if self.output == "-":
            raise usage("-o - writes to this process's standard output; with --dask write "
                        "to files", "--dask")

    @property
    def to_stdout(self) -> bool:
        return self.output == "-"

    @property
    def existing(self) -> str:
        """What an existing output means for the plan (see poolcli.app.plan.make_plan)."""
        if self.skip_existing:
            return "skip"
        return "replace" if self.force or self.dry_run else "refuse"


def usage(message: str, option: str | None = None):
    """A click usage error (exit 2) naming the option (all its spellings, for a registry
    parameter: ``'-p' / '--padding'``)."""
    if not option:
        return click.UsageError(message)
    flags = next((p.flags for p in registry.PARAMS.values() if option in p.flags), (option,))
    hint = " / ".join(f"'{f.split('/')[0]}'" for f in flags)
    return click.BadParameter(message, param_hint=hint)
