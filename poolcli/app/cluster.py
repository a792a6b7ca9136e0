"""Running a batch on a Dask cluster (``--dask ADDRESS``).

:class:`ClusterRunner` is :class:`~poolcli.app.runner.Runner` with the batch's images as tasks
on a ``dask.distributed`` scheduler instead of local processes; everything else is the same:
outcomes reported in input order, ``fail_fast``, skipped jobs from the plan, exact counts.

- **Imported only for ``--dask``**: dask and distributed are imported inside :func:`connected`;
  without them the run stops with one line naming the extra to install.
- **Checked once at start**: the scheduler is reachable (one line after at most
  :data:`CONNECT_TIMEOUT` seconds, never a traceback), a worker has joined, and every worker
  imports poolcli at this version (exit 2 otherwise: nothing was read or written). Each task
  checks the version again, for workers that join later.
- **The same working directory**: paths are the client's, relative ones included, so each task
  runs in the client's working directory (shared file system). Tasks of one run share it; a
  worker running tasks of runs from different directories runs them one directory at a time.
- **A window of tasks**: at most a few tasks per worker thread are submitted ahead (scheduler
  keys unique per run). On Ctrl-C or SIGTERM nothing more is submitted, the tasks already
  submitted finish (a running task cannot be stopped from here, and one left running would
  commit a file after the count), the temporary files of this run's outputs are removed and
  :class:`~poolcli.errors.Interrupted` carries the exact count.
- **Worker death loses nothing**: Dask reruns the tasks of a dead worker elsewhere; a rerun
  finding its output already committed by the dead attempt counts it (tasks commit idempotently,
  see :func:`poolcli.imageio.files.retried_commits`); temporary files of killed attempts are swept
  at the end. A task whose workers keep dying (dask's ``allowed-failures``) is that input's error.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Iterator, Sequence

from poolcli import __version__
from poolcli.app.runner import Outcome, Runner, guarded, interrupt_signals, \
    reuse_freed_memory, skipped_outcome, sweep_temporaries
from poolcli.errors import UsageError, one_line
from poolcli.imageio.files import retried_commits, signals_blocked

__all__ = ["ClusterRunner", "connected", "cluster_task", "CONNECT_TIMEOUT", "WORKER_TIMEOUT",
           "MISSING_EXTRA"]

#: Seconds to reach the scheduler before giving up with one line.
CONNECT_TIMEOUT = 10
#: Seconds to wait for a first worker on a scheduler that has none (an adaptive cluster).
WORKER_TIMEOUT = 30
#: Tasks submitted ahead per worker thread (and at least this many in all).
AHEAD = 2
MISSING_EXTRA = "--dask needs the dask extra: pip install 'poolcli[dask]'"


# ----------------------------------------------------------------------------------------------
# Connecting: address or scheduler file, reachable, workers with this poolcli
# ----------------------------------------------------------------------------------------------


def _fail(address: str, why: str) -> UsageError:
    return UsageError(f"--dask {address}: {why}", "--dask")


def scheduler_address(address: str) -> str:
    """The scheduler address of ``address``: itself (``tcp://host:port``, ``host:port``) or the
    ``address`` field of a scheduler file (what ``dask scheduler --scheduler-file`` writes)."""
    if os.path.isfile(address):
        try:
            with open(address, encoding="utf-8") as fh:
                found = json.load(fh).get("address")
        except (OSError, ValueError, AttributeError) as exc:
            raise _fail(address, f"not a readable scheduler file ({one_line(exc)})") from None
        if not isinstance(found, str) or not found:
            raise _fail(address, "scheduler file without an \"address\" field") from None
        return found
    if "://" in address:
        return address
    host, _, port = address.rpartition(":")
    if host and port.isdigit():
        return f"tcp://{address}"
    raise _fail(address, "neither a scheduler address (tcp://host:port) nor an existing "
                         "scheduler file")


def _reachable(address: str, shown: str) -> None:
    """Fail fast with the OS's reason when a TCP scheduler does not answer (dask itself would
    retry a refused connection until its timeout)."""
    scheme, _, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme not in ("tcp", "tls") or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError) or isinstance(exc, socket.timeout):
            why = f"no answer within {CONNECT_TIMEOUT} s"
        raise _fail(shown, f"cannot reach the Dask scheduler ({why.lower()})") from None


def _version_probe() -> Callable[[], str | None]:
    """A function for ``client.run`` that workers can unpickle without poolcli: defined in a
    function, so cloudpickle sends it by value, not as a reference into poolcli."""

    def probe():
        try:
            import poolcli
        except Exception:
            return None
        return str(getattr(poolcli, "__version__", "unknown"))

    return probe


def _check_workers(client, shown: str) -> None:
    """Every worker has poolcli at this version; one line naming the first that has not."""
    try:
        client.wait_for_workers(1, timeout=WORKER_TIMEOUT)
    except Exception:
        raise _fail(shown, f"no worker joined the scheduler within {WORKER_TIMEOUT} s") from None
    versions = client.run(_version_probe(), on_error="return")
    wrong = {w: v for w, v in versions.items() if v != __version__}
    if not wrong:
        return
    worker, version = sorted(wrong.items())[0]
    others = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
    has = "no poolcli" if not isinstance(version, str) else f"poolcli {version}"
    raise _fail(shown, f"worker {worker}{others} has {has}, this is poolcli {__version__}: "
                       f"install the same version on the workers")


@contextlib.contextmanager
def connected(address: str):
    """A ``distributed.Client`` for ``address`` whose workers run this poolcli; closed after."""
    try:
        import distributed
    except ImportError:
        raise UsageError(MISSING_EXTRA, "--dask") from None
    target = scheduler_address(address)
    _reachable(target, address)
    try:
        client = distributed.Client(target, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise _fail(address, f"cannot connect to the Dask scheduler ({one_line(exc)})") from None
    try:
        _check_workers(client, address)
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close(timeout=CONNECT_TIMEOUT)


# ----------------------------------------------------------------------------------------------
# On the worker
# ----------------------------------------------------------------------------------------------


class _Directory:
    """Tasks run in their client's working directory; a process has one, so tasks of clients
    in different directories take turns (tasks of one run, all in one directory, do not)."""

    def __init__(self):
        self.turn = threading.Condition()
        self.current, self.active = None, 0

    @contextlib.contextmanager
    def entered(self, cwd: str):
        with self.turn:
            while self.active and self.current != cwd:
                self.turn.wait()
            if self.current != cwd or os.getcwd() != cwd:
                os.chdir(cwd)
                self.current = cwd
            self.active += 1
        try:
            yield
        finally:
            with self.turn:
                self.active -= 1
                self.turn.notify_all()


_DIRECTORY = _Directory()
_TUNED = []  # this worker process has poolcli's malloc settings (see reuse_freed_memory)


def cluster_task(cwd: str, version: str, fn: Callable, job: Any, args: tuple,
                 verbose: bool) -> Outcome:
    """One job on a worker: :func:`~poolcli.app.runner.guarded` in the client's directory."""
    index, source = getattr(job, "index", 0), getattr(job, "source", str(job))
    if version != __version__:
        return Outcome(index, source, "error", message=(
            f"{source}: this worker has poolcli {__version__}, the client {version}"))
    if not _TUNED:
        _TUNED.append(reuse_freed_memory())
    try:
        with _DIRECTORY.entered(cwd), retried_commits():  # Dask may run a task twice
            return guarded(fn, job, args, verbose)
    except OSError as exc:
        return Outcome(index, source, "error", message=(
            f"{source}: the worker cannot enter the client's directory {cwd} "
            f"({exc.strerror or one_line(exc)}; the cluster needs a shared file system)"))


# ----------------------------------------------------------------------------------------------
# On the client
# ----------------------------------------------------------------------------------------------


class _Batch:
    """The tasks of one batch: submitted a window ahead, outcomes taken in input order."""

    def __init__(self, client, jobs: Sequence, fn: Callable, args: tuple, verbose: bool):
        from distributed import as_completed

        self.client, self.task = client, (os.getcwd(), __version__, fn)
        self.args, self.verbose = args, verbose
        self.run_id = uuid.uuid4().hex
        self.todo = iter(jobs)
        self.order: deque = deque()  # (job, future or None), submitted and not yet taken
        self.reported: set[int] = set()  # indices counted by the caller (with signals blocked)
        self.fetched: dict[int, Outcome] = {}  # results of finished tasks, not yet taken
        self.done_ahead = as_completed(loop=client.loop)
        self.window, self.window_at = 0, 0.0

    def _refresh_window(self) -> None:
        if time.monotonic() - self.window_at > 2:  # workers come and go
            threads = sum(self.client.nthreads().values())
            self.window, self.window_at = max(4, AHEAD * threads + 2), time.monotonic()

    def _fill(self) -> None:
        self._refresh_window()
        running = sum(1 for _, f in self.order if f is not None and not f.done())
        with signals_blocked():  # a future is either submitted and in order, or not submitted
            for job in self.todo:
                if skipped_outcome(job):
                    self.order.append((job, None))
                    continue
                future = self.client.submit(cluster_task, *self.task, job, self.args,
                                            self.verbose, pure=False,
                                            key=f"poolcli-{self.run_id}-{job.index}")
                self.done_ahead.add(future)
                self.order.append((job, future))
                running += 1
                if running >= self.window:
                    break

    def outcomes(self) -> Iterator[Outcome]:
        """Every job's outcome, in input order."""
        self._fill()
        while self.order:
            job, future = self.order[0]
            if future is not None and not future.done():
                next(self.done_ahead, None)  # any task finished: the window has room
                self._fill()
                continue
            self._fetch_ready()
            yield skipped_outcome(job) or self.fetched.pop(job.index, None) \
                or _result(job, future)
            self.order.popleft()  # after the caller took it: see reported
            self._fill()

    def _fetch_ready(self) -> None:
        """The results of the finished tasks at the head of the order, in one request (one
        request per task costs about a millisecond each)."""
        ready = []
        for job, future in self.order:
            if future is None:
                continue
            if future.status != "finished":
                break
            if job.index not in self.fetched:
                ready.append((job, future))
        if len(ready) > 1:
            with contextlib.suppress(Exception):  # then one at a time, each its own error
                results = self.client.gather([f for _, f in ready])
                self.fetched.update((job.index, r) for (job, _), r in zip(ready, results))

    def drain(self) -> list[Outcome]:
        """Submit nothing more and wait for the tasks already submitted: their outcomes (not
        yet reported), so the count of outputs on disk is exact."""
        self.todo = iter(())
        futures = [f for _, f in self.order if f is not None]
        deadline = time.monotonic() + max(60, 10 * len(futures))
        for future in futures:
            with contextlib.suppress(Exception):  # its error is its outcome, below
                future.result(timeout=max(0.1, deadline - time.monotonic()))
        return [skipped_outcome(job) or self.fetched.get(job.index) or _result(job, f)
                for job, f in self.order
                if job.index not in self.reported and (f is None or f.done())]

    def cancel(self) -> None:
        """Submit nothing more and cancel what was submitted (``--fail-fast``, the end)."""
        self.todo = iter(())
        futures = [f for _, f in self.order if f is not None]
        if futures:
            with contextlib.suppress(Exception):
                self.client.cancel(futures)
        self.order.clear()


def _result(job, future) -> Outcome:
    """The outcome a task returned, or that input's one-line error when the task never
    returned one (its workers died, it was cancelled, the worker could not load poolcli)."""
    try:
        return future.result()
    except Exception as exc:
        name = type(exc).__name__
        if name == "KilledWorker":
            why = ("the workers running it died (killed, or out of memory) too many times "
                   "(dask's distributed.scheduler.allowed-failures)")
        else:
            why = f"the cluster could not run it ({name}: {one_line(exc)})"
        return Outcome(job.index, job.source, "error", message=f"{job.source}: {why}")


class ClusterRunner(Runner):
    """The runner with a Dask cluster as its workers; see the module docstring."""

    distributed = True

    def __init__(self, reporter, tally, *, address: str, fail_fast: bool = False,
                 verbose: bool = False):
        super().__init__(reporter, tally, workers=1, fail_fast=fail_fast, verbose=verbose)
        self.address = address

    def run(self, jobs: Sequence, fn: Callable, args: tuple = ()) -> None:
        jobs = list(jobs)
        with interrupt_signals(), connected(self.address) as client:
            self.reporter.started(len(jobs))
            batch = _Batch(client, jobs, fn, args, self.verbose)
            try:
                for outcome in batch.outcomes():
                    with signals_blocked():  # counted and marked reported together
                        self._count(outcome)
                        batch.reported.add(outcome.index)
                    if not self._report(outcome):  # --fail-fast: as -j, what runs finishes
                        batch.drain()
                        return
            except KeyboardInterrupt:
                self.reporter.warn("--dask: interrupted; waiting for the tasks already on the "
                                   "workers, so the count is exact")
                raise self._interrupted(batch.drain()) from None
            finally:
                batch.cancel()
                sweep_temporaries(jobs)  # of attempts on workers killed mid-write

    def outcomes(self, jobs: Sequence, fn: Callable, args: tuple = ()) -> Iterator[Outcome]:
        """Each job's outcome in input order, neither counted nor reported (for a caller that
        combines results, as batch-norm fitting does); Ctrl-C cancels the rest."""
        jobs = list(jobs)
        with interrupt_signals(), connected(self.address) as client:
            batch = _Batch(client, jobs, fn, args, self.verbose)
            try:
                yield from batch.outcomes()
            finally:
                batch.cancel()
