"""What a person or a script sees: one reporter per command run.

The application layer reports outcomes (:class:`poolcli.app.runner.Outcome`) in input order; the
:class:`Reporter` turns them into rich tables (stdout, or stderr when stdout carries JSON or
an image), JSON lines, one-line errors on stderr, terminal previews and one progress bar. While
the bar is live every line goes through its console, so nothing is glued onto it.
"""

from __future__ import annotations

import sys

from poolcli.app.runner import Outcome, Tally
from poolcli.errors import ExitStatus

__all__ = ["Reporter"]


class Reporter:
    """Renders one run. ``data_on_stdout``: stdout carries an image (``-o -``), so everything
    else goes to stderr."""

    def __init__(self, *, as_json: bool = False, quiet: bool = False, verbose: bool = False,
                 preview: str = "never", data_on_stdout: bool = False,
                 json_per_input: bool = True):
        self.as_json, self.quiet, self.verbose = as_json, quiet, verbose
        self.json_per_input = json_per_input  # False: the command prints one JSON document
        self.preview = "never" if as_json else preview
        self.tables_to_stderr = as_json or data_on_stdout
        self.tally = Tally()
        self._console = None
        self._progress = None

    # -- output streams ------------------------------------------------------------------------

    @property
    def console(self):
        """The console for tables (a live progress bar's own console while one is shown)."""
        if self._progress is not None and (self.tables_to_stderr or _same_terminal()):
            return self._progress.console
        if self._console is None:
            from rich.console import Console

            tty = _isatty(self.tables_to_stderr)
            # not a terminal (a log, a pipe): lines are never wrapped, tables keep their width
            self._console = _console_class()(stderr=self.tables_to_stderr, highlight=False,
                                             soft_wrap=not tty, width=None if tty else 1000)
        return self._console

    def _stderr_line(self, text: str) -> None:
        from poolcli.report import printable

        text = printable(text)
        if self._progress is not None:
            from rich.text import Text

            self._progress.console.print(Text(text), soft_wrap=True)
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def _stdout_line(self, text: str) -> None:
        stream = sys.stdout
        if stream is None:
            raise OSError("standard output is closed")
        stream.write(text + "\n")
        stream.flush()

    # -- what the runner calls -----------------------------------------------------------------

    def started(self, total: int) -> None:
        self.tally.total = max(self.tally.total, total)
        if self.quiet or total < 2 or not _isatty(True) or self._progress is not None:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._progress = Progress("[progress.description]{task.description}", BarColumn(),
                                  MofNCompleteColumn(), TimeRemainingColumn(),
                                  console=Console(stderr=True, highlight=False), transient=True)
        self._progress.add_task("images", total=total)
        self._progress.start()

    def outcome(self, outcome: Outcome) -> None:
        if self._progress is not None:
            self._progress.advance(self._progress.task_ids[0])
        if outcome.status == "ok":
            self.record(outcome.record)
        elif outcome.status == "error":
            self._stderr_line(f"poolcli: error: {outcome.message}")
            if self.json_per_input:
                self.json({"input": outcome.source, "error": outcome.message.split("\n")[0]})
        elif outcome.status == "skipped":
            if not self.quiet:
                self._stderr_line(f"poolcli: skipped {outcome.source}: {outcome.message}")
            self.json({"input": outcome.source, "output": (outcome.record or {}).get("output"),
                       "skipped": outcome.message})

    def record(self, record: dict, table: bool = True) -> None:
        """Print one result: its JSON line, its table, its preview."""
        from poolcli.app.jobs import PREVIEW_KEY

        preview = record.pop(PREVIEW_KEY, None)
        if self.as_json:
            from poolcli.report import json_line

            self._stdout_line(json_line(record))
        if table and not self.quiet:
            from poolcli.report import stats_table

            self.console.print(stats_table(record))
        if preview is not None:
            self.show_preview(*preview)

    def show_preview(self, values, source_dtype=None, channels=None) -> None:
        if self.preview == "never":
            return
        from poolcli import visual

        self.stop_progress()
        visual.draw_preview(values, self.preview, sys.stderr, source_dtype=source_dtype,
                            channels=channels)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self._stderr_line(f"poolcli: {message}")

    def note(self, message: str) -> None:
        """A line on stderr that even -q shows (what is needed to repeat the run)."""
        self._stderr_line(f"poolcli: {message}")

    def error(self, message: str, source: str | None = None) -> None:
        """An error outside any job (a pattern matching nothing, ...): counted as a failure,
        with a JSON record for ``source`` when there is one."""
        self.tally.failed += 1
        self._stderr_line(f"poolcli: error: {message}")
        if source is not None and self.json_per_input:
            self.json({"input": source, "error": message})

    def batch_stats(self, title, channels, mean, var, caption: str = "") -> None:
        if self.quiet:
            return
        from poolcli.report import batch_stats_table

        self.console.print(batch_stats_table(title, channels, mean, var, caption))

    def json(self, obj: dict) -> None:
        if self.as_json:
            from poolcli.report import json_line

            self._stdout_line(json_line(obj))

    def line(self, text: str) -> None:
        """A plain line of human output (stdout, or stderr when stdout carries data)."""
        if self.quiet:
            return
        if self.tables_to_stderr:
            self._stderr_line(text)
        else:
            from poolcli.report import printable

            self._stdout_line(printable(text))

    # -- the end -------------------------------------------------------------------------------

    def stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def finish(self, summary: bool = True) -> ExitStatus:
        """Stop the bar, print the JSON summary; the exit status of the run."""
        self.stop_progress()
        if summary and self.as_json:
            self.json({"summary": self.tally.summary()})
        return ExitStatus.FAILED if self.tally.failed else ExitStatus.OK


def _console_class():
    """rich's Console, except that a reader leaving the pipe is an error poolcli reports in one
    line (rich itself would exit 1 silently)."""
    import errno
    import os

    from rich.console import Console

    class ReportingConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    return ReportingConsole


def _isatty(stderr: bool) -> bool:
    stream = sys.stderr if stderr else sys.stdout
    try:
        return bool(stream is not None and stream.isatty())
    except (ValueError, OSError):
        return False


def _same_terminal() -> bool:
    """Whether stdout and stderr are one terminal (tables then go through the live bar)."""
    import os

    if not (_isatty(False) and _isatty(True)):
        return False
    try:
        return os.path.samestat(os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno()))
    except (OSError, ValueError):
        return False
