"""The ``poolcli`` group, its error boundary and the console entry point.

Every command runs inside :meth:`PoolcliGroup.invoke`, the one place where exceptions become
one-line messages and exit statuses (:class:`poolcli.errors.ExitStatus`): a usage problem found
by the application layer is exit 2, an interrupt is exit 130 with the exact count of outputs
written, a closed or full standard output is one line and exit 1.
"""

from __future__ import annotations

import os
import sys

import click

from poolcli import __version__
from poolcli.cli.options import CONTEXT
from poolcli.errors import ExitStatus

__all__ = ["main", "entry"]


class PoolcliGroup(click.Group):
    """A click group whose commands share one error boundary."""

    def invoke(self, ctx: click.Context):
        # errors only: importing the application layer here would load numpy for `ops`
        from poolcli.errors import Interrupted, PoolcliError, UsageError, one_line

        try:
            return super().invoke(ctx)
        except UsageError as exc:  # found by the application layer, before any image was read
            _say(f"poolcli: error: {one_line(exc)}")
            ctx.exit(ExitStatus.USAGE)
        except (KeyboardInterrupt, Interrupted):
            _say(f"poolcli: {_interrupted_text(ctx)}")
            ctx.exit(ExitStatus.INTERRUPTED)
        except PoolcliError as exc:  # a problem outside any job (a run's own output)
            _say(f"poolcli: error: {one_line(exc)}")
            ctx.exit(ExitStatus.FAILED)
        except OSError as exc:
            if not _stdout_broken(exc):
                raise
            _stdout_failed(exc)
            ctx.exit(ExitStatus.FAILED)


def _interrupted_text(ctx: click.Context) -> str:
    from poolcli.errors import Interrupted

    exc = sys.exc_info()[1]
    if isinstance(exc, Interrupted):
        return str(exc)
    reporter = ctx.meta.get("poolcli.reporter")
    if reporter is not None:
        reporter.stop_progress()
        t = reporter.tally
        return str(Interrupted(t.ok, t.failed, t.total))
    return "interrupted: 0 outputs written; no partial files left"


def _stdout_broken(exc: OSError) -> bool:
    import errno

    return exc.errno in (errno.EPIPE, errno.ENOSPC, errno.EBADF, errno.EIO, None) or isinstance(
        exc, BrokenPipeError)


_STDOUT_REPORTED = False


def _stdout_failed(exc: OSError) -> None:
    """One line for a standard output that cannot be written (full, closed, reader gone)."""
    global _STDOUT_REPORTED
    if not _STDOUT_REPORTED:
        _STDOUT_REPORTED = True
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        _say(f"poolcli: error: cannot write to standard output ({why})")


class _ClosedStdout:
    """``sys.stdout`` when descriptor 1 was closed (``poolcli ... >&-``): every write is an
    error (one line, exit 1) instead of output silently lost."""

    encoding = "utf-8"
    errors = "strict"

    def write(self, text):
        if text:
            raise OSError(9, "standard output is closed")
        return 0

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        raise OSError(9, "standard output is closed")

    @property
    def buffer(self):
        raise OSError(9, "standard output is closed")


def _guard_standard_descriptors() -> None:
    """A closed descriptor 0, 1 or 2 is filled with /dev/null, so no output file poolcli opens
    can take its number (and receive what a library prints there); a closed stdout still
    makes every print an error."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
            if fd == 1:
                sys.stdout = _ClosedStdout()


def _say(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


@click.group(cls=PoolcliGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="poolcli")
def main():
    """See what CNN pooling and normalization operators do to real images.

    \b
    Examples:
      poolcli pool --op max -k 2 photo.png          # writes photo_max.png, prints statistics
      poolcli pool --op avg -k 3 -s 2 -p 1 dir/ -o out/
      poolcli stats photo.png --json
      poolcli ops                                    # every operator with its source
    """


def _register() -> None:
    from poolcli.cli import chain, compare, explain, norm, ops, pool, stats, unpool

    for module in (pool, unpool, norm, chain, stats, ops, compare, explain):
        main.add_command(module.command)


_register()


def entry() -> None:
    """The console script (and ``python -m poolcli``): run the CLI, then skip the teardown.

    Python's interpreter teardown (freeing every module, array and thread state) took 50-70 ms
    of a ~0.55 s ``poolcli pool`` run on the development machine, and poolcli needs none of it:
    outputs are written and renamed, worker pools shut down and temporary files removed before
    a command returns. So the exit status is taken from ``SystemExit`` and, once stdout and
    stderr are flushed, the process ends with ``os._exit``. A reader that closed the pipe early
    (``poolcli stats ... | head -1``) gets no "Exception ignored" noise, and exit status 1 if
    the command had succeeded. SIGTERM unwinds like Ctrl-C from the start, so every command
    cleans up the same way.
    """
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    _guard_standard_descriptors()
    try:
        main()
        code = ExitStatus.OK
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:  # before or after a command's own boundary
        _say("poolcli: interrupted; no partial files left")
        code = ExitStatus.INTERRUPTED
    if code is None:
        code = ExitStatus.OK
    elif not isinstance(code, int):
        _say(str(code))
        code = ExitStatus.FAILED
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError as exc:  # the reader went away (BrokenPipeError), or the disk is full
        _stdout_failed(exc)
        code = code or ExitStatus.FAILED
    except ValueError:
        code = code or ExitStatus.FAILED
    try:
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
    os._exit(int(code))
