"""The one batch runner and the per-job error boundary.

Every command that processes images hands its jobs to :class:`Runner`: it runs them in this
process or in worker processes, reports each outcome in input order to a *reporter* (the CLI's
tables and JSON lines; the runner itself prints nothing), stops at the first failure with
``fail_fast``, and turns Ctrl-C or SIGTERM into a clean stop: work in progress is abandoned with
its temporary files removed (or finished, when it was already committed), the rest is not
started, and :class:`Interrupted` carries the exact number of outputs on disk.

:func:`guarded` is the per-job error boundary: an exception in one job becomes a one-line
message for that input, never a traceback, and the batch goes on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from poolcli.errors import Interrupted, PoolcliError, one_line
from poolcli.imageio.files import signals_blocked
from poolcli.imageio.store import is_url, local_path
from poolcli.imageio.store import remove as remove_url

__all__ = ["Outcome", "Tally", "Runner", "Interrupted", "guarded", "interrupt_signals",
           "default_workers", "committed", "track_commit", "skipped_outcome",
           "sweep_temporaries", "reuse_freed_memory", "remove_outputs"]

#: Exceptions a job may raise that are about its input, not a bug: one line, the batch goes on.
INPUT_ERRORS = (PoolcliError, ValueError, TypeError, MemoryError, OverflowError, OSError)


@dataclass
class Outcome:
    """What became of one job: ``status`` is ``ok``, ``error``, ``skipped`` or ``interrupted``."""

    index: int
    source: str
    status: str
    record: dict | None = None
    message: str = ""
    written: list[str] = field(default_factory=list)  # files committed by this job

    @property
    def wrote_output(self) -> bool:
        """Whether the job's main output (its last write) is on disk."""
        return self.status == "ok" or (self.status == "interrupted" and bool(self.written)
                                       and self.record is not None)


@dataclass
class Tally:
    """Counts of one run, for the summary line and the exit status."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    total: int = 0
    started: float = field(default_factory=time.perf_counter)

    def summary(self) -> dict:
        return {"ok": self.ok, "failed": self.failed, "skipped": self.skipped,
                "seconds": round(time.perf_counter() - self.started, 3)}


# ----------------------------------------------------------------------------------------------
# Which files a job has committed (so an interrupt never loses count of them)
# ----------------------------------------------------------------------------------------------

# Per thread: a Dask worker runs several jobs at once in one process, one per thread.
_LOCAL = threading.local()


def track_commit(path: str) -> None:
    """Record that ``path`` is complete on disk (called with signals blocked, after the rename)."""
    journal = getattr(_LOCAL, "journal", None)
    if journal is not None:
        journal.append(path)


def committed() -> list[str]:
    """Files committed by the job running in this thread so far."""
    return list(getattr(_LOCAL, "journal", None) or ())


@contextlib.contextmanager
def interrupt_signals():
    """SIGTERM unwinds like Ctrl-C (``KeyboardInterrupt``) inside the block, so every
    ``finally`` runs and temporary files are removed; the previous handler is restored after."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


_IN_WORKER = False


def _worker_init():
    """Between jobs a worker ignores Ctrl-C (the parent decides) and exits at once, silently,
    on SIGTERM (it holds no file then); :func:`guarded` listens to both during a job.

    They are forked with SIGINT/SIGTERM blocked (see :meth:`Runner._parallel`), so a signal
    can never reach one before this runs and print a traceback from its start-up. SIGTERM must
    end an idle worker: from Python 3.12 a broken pool terminates its remaining workers and
    then waits for them, and a worker deaf to SIGTERM would hang the run forever.
    """
    global _IN_WORKER
    _IN_WORKER = True
    _idle_signals()
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def guarded(fn: Callable, job: Any, args: tuple, verbose: bool = False) -> Outcome:
    """Run ``fn(job, *args)`` and say what became of it; exceptions never escape as tracebacks.

    Top-level so worker processes can run it; exceptions never cross the process boundary.
    A ``KeyboardInterrupt`` during the job is reported as ``interrupted`` with the files the job
    had already committed, so the caller's count of outputs on disk stays exact.
    """
    _LOCAL.journal = []
    if _IN_WORKER:
        signal.signal(signal.SIGINT, _raise_interrupt)
        signal.signal(signal.SIGTERM, _raise_interrupt)
    index, source = getattr(job, "index", 0), getattr(job, "source", str(job))
    try:
        record = fn(job, *args)
        return Outcome(index, source, "ok", record, written=committed())
    except KeyboardInterrupt:
        done = committed()
        main = getattr(job, "output", None)
        if main in done:  # the result is complete; count it
            return Outcome(index, source, "interrupted", {"output": main}, written=done)
        remove_outputs(done)  # side files without their image are useless
        return Outcome(index, source, "interrupted", written=[])
    except INPUT_ERRORS as exc:
        remove_outputs(committed())
        return Outcome(index, source, "error", message=error_message(exc, source, verbose))
    except Exception as exc:  # a bug in poolcli: still one input's failure, loudly named
        remove_outputs(committed())
        message = error_message(exc, source, verbose)
        first, _, rest = message.partition("\n")
        hint = "" if verbose else " (-v shows the traceback)"
        return Outcome(index, source, "error", message=(
            f"{first} [internal error {type(exc).__name__}: a bug in poolcli, please report "
            f"it{hint}]" + (f"\n{rest}" if rest else "")))
    finally:
        if _IN_WORKER:
            _idle_signals()
        _LOCAL.journal = None


def _idle_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_quietly)


def _exit_quietly(signum, frame):
    os._exit(128 + signum)


def error_message(exc: BaseException, source: str | None, verbose: bool = False) -> str:
    """The one-line message for ``exc`` (naming ``source`` unless the message already starts
    with a file name), plus the traceback with ``verbose``."""
    message = one_line(exc)
    if not isinstance(exc, PoolcliError) and source:
        message = f"{source}: {message}"
    if verbose:
        import traceback

        message += "\n" + "".join(traceback.format_exception(exc)).rstrip()
    return message


def remove_outputs(paths: Sequence[str]) -> None:
    """Delete files a failed or interrupted job committed: local files here, URLs (an object
    on S3, ...) through the store, which knows them."""
    for path in paths:
        if is_url(path):
            remove_url(path)  # never raises: a file left behind is not the job's error
            continue
        with contextlib.suppress(OSError):
            os.unlink(path)


def default_workers() -> int:
    return os.cpu_count() or 1


class Runner:
    """Run jobs in input order and report each outcome; see the module docstring.

    ``reporter`` has ``started(total)``, ``outcome(outcome)`` and ``warn(message)``; it is told
    every outcome in input order, in this process.
    """

    distributed = False  # jobs run on a cluster (see poolcli.app.cluster.ClusterRunner)

    def __init__(self, reporter, tally: Tally, *, workers: int = 1, fail_fast: bool = False,
                 verbose: bool = False):
        self.reporter, self.tally = reporter, tally
        self.workers, self.fail_fast, self.verbose = workers, fail_fast, verbose

    def run(self, jobs: Sequence, fn: Callable, args: tuple = ()) -> None:
        jobs = list(jobs)
        workers = max(1, min(self.workers, len(jobs)))
        if any(getattr(j, "source", None) == "-" for j in jobs):
            workers = 1  # stdin can be read once, by this process
        if len(jobs) > 1:
            reuse_freed_memory()
        self.reporter.started(len(jobs))
        with interrupt_signals():
            if workers == 1:
                self._serial(jobs, fn, args)
            else:
                self._parallel(jobs, fn, args, workers)

    def record(self, outcome: Outcome) -> None:
        """Count and report an outcome decided outside :meth:`run` (e.g. an unreadable input
        of a batch-norm batch)."""
        with signals_blocked():
            self._count(outcome)
        self.reporter.outcome(outcome)

    def _count(self, outcome: Outcome) -> None:
        if outcome.status == "ok":
            self.tally.ok += 1
        elif outcome.status == "error":
            self.tally.failed += 1
        elif outcome.status == "skipped":
            self.tally.skipped += 1

    def _report(self, outcome: Outcome) -> bool:
        """Report one counted outcome; False when the run should stop."""
        self.reporter.outcome(outcome)
        if outcome.status == "error" and self.fail_fast:
            done = self.tally.ok + self.tally.failed + self.tally.skipped
            self.reporter.warn(f"--fail-fast: stopped after {done} of {self.tally.total} inputs")
            return False
        return True

    def _serial(self, jobs, fn, args) -> None:
        try:
            for job in jobs:
                outcome = skipped_outcome(job) or guarded(fn, job, args, self.verbose)
                if outcome.status == "interrupted":
                    raise self._interrupted([outcome])
                with signals_blocked():
                    self._count(outcome)
                if not self._report(outcome):
                    return
        except KeyboardInterrupt:  # between jobs: everything done is counted
            raise self._interrupted([]) from None

    def _parallel(self, jobs, fn, args, workers: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
        executor, futures, reported = None, [], 0
        try:
            with signals_blocked():  # workers are born deaf; the parent hears it right after
                executor = ProcessPoolExecutor(workers, mp_context=ctx,
                                               initializer=_worker_init)
                futures = [None if skipped_outcome(job) else
                           executor.submit(guarded, fn, job, args, self.verbose)
                           for job in jobs]
            for job, future in zip(jobs, futures):
                try:
                    outcome = skipped_outcome(job) or future.result()
                except BrokenProcessPool:
                    outcome = Outcome(job.index, job.source, "error",
                                      message=f"{job.source}: a worker process died (killed, "
                                              f"or out of memory)")
                with signals_blocked():  # counted and marked reported together
                    self._count(outcome)
                    reported += 1
                if not self._report(outcome):
                    return
        except KeyboardInterrupt:
            late = []
            if executor is not None:
                _stop_workers(executor)
                executor.shutdown(wait=True, cancel_futures=True)
                late = [f.result() for f in futures[reported:] if f is not None and f.done()
                        and not f.cancelled() and f.exception() is None]
                sweep_temporaries(jobs)
            raise self._interrupted(late) from None
        finally:
            if executor is not None:  # never leave a worker behind (it would hold our pipes)
                executor.shutdown(wait=True, cancel_futures=True)

    def _interrupted(self, late: list[Outcome]) -> Interrupted:
        """The exception for an interrupt; ``late`` are outcomes not yet reported."""
        written = self.tally.ok + sum(1 for o in late if o.wrote_output)
        failed = self.tally.failed + sum(1 for o in late if o.status == "error")
        return Interrupted(written, failed, self.tally.total)


def skipped_outcome(job) -> Outcome | None:
    """The outcome of a job the plan marked to skip (its output exists), else None."""
    reason = getattr(job, "skip", None)
    if not reason:
        return None
    return Outcome(job.index, job.source, "skipped", {"input": job.source,
                                                       "output": job.output}, message=reason)


def sweep_temporaries(jobs) -> None:
    """After the workers are gone: no temporary file of this run's outputs may remain, even
    from a worker stopped where its own cleanup could not run."""
    from poolcli.imageio.files import TEMP_SUFFIX, remove_temporaries

    by_directory: dict[str, list[str]] = {}
    for job in jobs:
        for path in (getattr(job, "output", None), *getattr(job, "side", ())):
            if path and is_url(path):  # a store gets one PUT: no temporary object to sweep
                path = local_path(path)  # but a file:// URL is a local atomic write
            if path and path != "-":
                by_directory.setdefault(os.path.dirname(os.path.abspath(path)), []).append(path)
    for directory, paths in by_directory.items():
        try:  # one listing per directory: usually there is nothing to remove
            names = os.listdir(directory)
        except OSError:
            continue
        if any(n.startswith(".") and n.endswith(TEMP_SUFFIX) for n in names):
            for path in paths:
                remove_temporaries(path)


def _stop_workers(executor) -> None:
    """Ask running workers to abandon their image (their temporary files are removed)."""
    for process in list(getattr(executor, "_processes", {}).values()):
        with contextlib.suppress(Exception):
            process.terminate()


def reuse_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory for the next image instead of unmapping it.

    Every image allocates a few MiB (file bytes, pixels, result, PNG buffers). By default glibc
    maps blocks over 128 KiB fresh and trims the heap top on free, so each image faulted in and
    zeroed ~2.4 MiB of new pages: on 200 RGB images of 512x512, 128k page faults and 0.6 s of
    kernel time. Kept (blocks up to 32 MiB from the heap, up to 256 MiB of it retained): 6k
    faults and 0.2 s; over 7 interleaved rounds ``-j 1`` went 3615 -> 3301 ms (9%) and ``-j 2``
    2091 -> 2007 ms (4%). Blocks over 32 MiB (large images) are still mapped and returned at
    once, so peak memory on big images is unchanged. Batches of two or more images use it, and
    so does an image streamed band by band (each band allocates and frees a few MiB; with
    threads, fresh mappings also cost TLB shootdowns: a 4096² PNG's two-thread run in a warm
    process went from 0.26-0.29 s to 0.19-0.21 s, peaks unchanged). Called before workers
    fork, so they inherit it; a no-op where there is no glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt  # this process's own C library
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 256 << 20)
    mallopt(m_top_pad, 16 << 20)
