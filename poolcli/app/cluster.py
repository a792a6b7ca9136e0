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
- **Tasks of a few images, a window ahead**: consecutive images go into one task (up to
  :data:`CHUNK_JOBS` images and about :data:`CHUNK_BYTES` of input, yet at least
  :data:`CHUNKS_PER_THREAD` tasks per worker thread), and only :data:`AHEAD` tasks beyond one
  per worker thread are submitted ahead (scheduler keys unique per run).
- **Ctrl-C or SIGTERM**: nothing more is submitted, the tasks already submitted finish (a
  running task cannot be stopped from here, and one left running would commit a file after the
  count), the temporary files of this run's outputs are removed and
  :class:`~poolcli.errors.Interrupted` carries the exact count. The signal is only noted and
  the batch's loop raises at its next step (see :func:`_noted`); a second one stops waiting,
  and the count is then a lower bound.
- **Worker death loses nothing**: Dask reruns the tasks of a dead worker elsewhere; a rerun
  finding its output already committed by the dead attempt counts it (tasks commit idempotently,
  see :func:`poolcli.imageio.files.retried_commits`); temporary files of killed attempts are swept
  at the end. A task whose workers keep dying (dask's ``allowed-failures``) is that input's error.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Iterator, Sequence

from poolcli import __version__
from poolcli.app.runner import Outcome, Runner, guarded, interrupt_signals, remove_outputs, \
    reuse_freed_memory, skipped_outcome, sweep_temporaries
from poolcli.errors import Interrupted, UsageError, one_line
from poolcli.imageio.files import retried_commits, signals_blocked

__all__ = ["ClusterRunner", "connected", "cluster_task", "CONNECT_TIMEOUT", "WORKER_TIMEOUT",
           "MISSING_EXTRA"]

#: Seconds to reach the scheduler before giving up with one line.
CONNECT_TIMEOUT = 10
#: Seconds to wait for a first worker on a scheduler that has none (an adaptive cluster).
WORKER_TIMEOUT = 30
#: Tasks submitted beyond one per worker thread, so no worker waits for the next.
AHEAD = 2
#: Seconds between the batch's checks for a signal while it waits on the cluster.
POLL = 0.05
#: At most this many images in one task, and about this much input: a task costs a few
#: milliseconds of scheduling, as much as a small image's work.
CHUNK_JOBS = 8
CHUNK_BYTES = 8 << 20
#: ... but at least this many tasks per worker thread, so the work stays balanced.
CHUNKS_PER_THREAD = 8
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


def cluster_task(cwd: str, version: str, fn: Callable, jobs: list, args: tuple,
                 verbose: bool) -> list[Outcome]:
    """Jobs on a worker, one after the other: :func:`~poolcli.app.runner.guarded` in the
    client's directory; one outcome per job."""
    if version != __version__:
        return [Outcome(job.index, job.source, "error", message=(
            f"{job.source}: this worker has poolcli {__version__}, the client {version}"))
            for job in jobs]
    if not _TUNED:
        _TUNED.append(reuse_freed_memory())
    try:
        with _DIRECTORY.entered(cwd), retried_commits():  # Dask may run a task twice
            return [guarded(fn, job, args, verbose) for job in jobs]
    except OSError as exc:
        return [Outcome(job.index, job.source, "error", message=(
            f"{job.source}: the worker cannot enter the client's directory {cwd} "
            f"({exc.strerror or one_line(exc)}; the cluster needs a shared file system)"))
            for job in jobs]


# ----------------------------------------------------------------------------------------------
# On the client
# ----------------------------------------------------------------------------------------------


def _input_bytes(job) -> int:
    """The size of a job's input file, to keep big images in tasks of their own (a URL or an
    unreadable path counts as big: its task stays small)."""
    try:
        return os.path.getsize(job.source)
    except (OSError, TypeError, ValueError):
        return CHUNK_BYTES


def _chunks(jobs: Sequence, limit: int) -> Iterator[list]:
    """Runs of up to ``limit`` consecutive jobs (and :data:`CHUNK_BYTES` of input) to run as
    one task; a job the plan skips is a run of its own, never submitted."""
    chunk, weight = [], 0
    for job in jobs:
        if skipped_outcome(job):
            if chunk:
                yield chunk
                chunk, weight = [], 0
            yield [job]
            continue
        chunk.append(job)
        weight += _input_bytes(job)
        if len(chunk) >= limit or weight >= CHUNK_BYTES:
            yield chunk
            chunk, weight = [], 0
    if chunk:
        yield chunk


class _Batch:
    """The tasks of one batch: consecutive images grouped into tasks (a task costs a few
    milliseconds of scheduling, as much as a small image's work), a few tasks submitted ahead
    of the workers, outcomes taken one by one in input order."""

    def __init__(self, client, jobs: Sequence, fn: Callable, args: tuple, verbose: bool,
                 force: bool = False):
        from distributed import as_completed

        self.client, self.task = client, (os.getcwd(), __version__, fn)
        self.args, self.verbose, self.force = args, verbose, force
        self.run_id = uuid.uuid4().hex
        self.window, self.window_at = 0, 0.0
        self._refresh_window()
        limit = max(1, min(CHUNK_JOBS, len(jobs) // (CHUNKS_PER_THREAD * self.threads or 1)))
        self.todo = _chunks(jobs, limit)
        self.order: deque = deque()  # (job, future or None, position in the task), not taken
        self.inflight: set = set()  # submitted tasks not finished
        self.reported: set[int] = set()  # indices counted by the caller (with signals blocked)
        self.fetched: dict[int, Outcome] = {}  # outcomes of finished tasks, not yet taken
        self.done_ahead = as_completed(loop=client.loop)
        # set by the run's signal handler (see _noted): plain attributes, no lock the handler
        # could block on (it may run while this thread holds one in a wait)
        self.interrupted = False
        self.forced = False  # a second signal: stop waiting for the tasks on the workers

    def _refresh_window(self) -> None:
        if time.monotonic() - self.window_at > 2:  # workers come and go
            self.threads = sum(self.client.nthreads().values())
            self.window, self.window_at = max(2, self.threads + AHEAD), time.monotonic()

    def _fill(self) -> None:
        self._refresh_window()
        self.inflight = {f for f in self.inflight if not f.done()}
        with signals_blocked():  # a task is either submitted and in order, or not submitted
            while len(self.inflight) < self.window:
                chunk = next(self.todo, None)
                if chunk is None:
                    return
                if skipped_outcome(chunk[0]):
                    self.order.append((chunk[0], None, 0))
                    continue
                future = self.client.submit(cluster_task, *self.task, chunk, self.args,
                                            self.verbose, pure=False,
                                            key=f"poolcli-{self.run_id}-{chunk[0].index}")
                self.done_ahead.add(future)
                self.inflight.add(future)
                self.order.extend((job, future, i) for i, job in enumerate(chunk))

    def outcomes(self) -> Iterator[Outcome]:
        """Every job's outcome, in input order."""
        self._fill()
        while self.order:
            self.check()
            job, future, position = self.order[0]
            if future is not None and not future.done():
                self._await_any()  # any task finished: the window has room
                self._fill()
                continue
            self._fetch_ready()
            yield self._outcome(job, future, position)
            self.order.popleft()  # after the caller took it: see reported
            self._fill()
        self.check()  # a signal while the caller handled the last outcome

    def _await_any(self) -> None:
        """Until a submitted task finishes, in short waits of our own, so a signal is seen
        within :data:`POLL` seconds and never lands inside one of distributed's blocking calls
        (see :func:`_noted`)."""
        while not self.done_ahead.has_ready() and not self.done_ahead.is_empty():
            self.check()
            time.sleep(POLL)
        next(self.done_ahead, None)

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a signal was noted (see :func:`_noted`)."""
        if self.interrupted:
            raise KeyboardInterrupt

    def _outcome(self, job, future, position: int) -> Outcome:
        return skipped_outcome(job) or self.fetched.pop(job.index, None) \
            or _result(job, future, position, self.force)

    def _fetch_ready(self) -> None:
        """The outcomes of the finished tasks at the head of the order, in one request."""
        ready = {}
        for job, future, _ in self.order:
            if future is None or job.index in self.fetched:
                continue
            if future.status != "finished":
                break
            ready[future.key] = future
        if ready:
            with contextlib.suppress(Exception):  # then one at a time, each its own error
                results = dict(zip(ready, self.client.gather(list(ready.values()))))
                for job, future, position in self.order:
                    if future is not None and future.key in results:
                        self.fetched[job.index] = results[future.key][position]

    def drain(self) -> list[Outcome]:
        """Submit nothing more and wait for the tasks already submitted: their outcomes (not
        yet reported), so the count of outputs on disk is exact."""
        self.todo = iter(())
        deadline = time.monotonic() + max(60, 10 * len(self.order))
        while time.monotonic() < deadline and not all(f.done() for f in self.inflight):
            time.sleep(POLL)  # our own wait: a second signal stops it (see _noted)
        return [self._outcome(job, f, i) for job, f, i in self.order
                if job.index not in self.reported and (f is None or f.done())]

    def cancel(self) -> None:
        """Submit nothing more and cancel what was submitted (``--fail-fast``, the end)."""
        self.todo = iter(())
        futures = list({f.key: f for _, f, _ in self.order if f is not None}.values())
        if futures:
            with contextlib.suppress(Exception):
                self.client.cancel(futures)
        self.order.clear()


@contextlib.contextmanager
def _noted(batch: "_Batch"):
    """SIGINT and SIGTERM are noted on the batch, whose loop raises KeyboardInterrupt at its
    next step (every wait of the loop is a short one of its own, :data:`POLL`).

    The handler does not raise: an exception raised wherever the main thread happens to be may
    land inside distributed's ``sync`` (distributed 2026.8 then logs a NameError traceback from
    its event loop thread) or inside a finalizer (a Future's ``__del__``, which prints and drops
    it). A second signal does raise, so a client stuck on a scheduler that stopped answering
    can still be stopped; the count is then not exact (see :class:`ClusterRunner`)."""
    def handler(signum, frame):
        if batch.interrupted:
            batch.forced = True
            raise KeyboardInterrupt
        batch.interrupted = True

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _result(job, future, position: int, force: bool = False) -> Outcome:
    """The outcome of ``job`` in its task, or that input's one-line error when the task never
    returned (its workers died, it was cancelled, the worker could not load poolcli).

    An attempt that died may have committed some of the job's files before it did: without
    ``--force`` none of them existed when the run was planned (the plan refuses existing
    outputs), so whatever is there now is that attempt's, and a failed input leaves no output.
    With ``--force`` they may be the previous run's, which are left alone.
    """
    try:
        return future.result()[position]
    except Exception as exc:
        if not force:
            remove_outputs([p for p in (job.output, *job.side) if p and p != "-"])
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
                 verbose: bool = False, force: bool = False):
        super().__init__(reporter, tally, workers=1, fail_fast=fail_fast, verbose=verbose)
        self.address, self.force = address, force

    def run(self, jobs: Sequence, fn: Callable, args: tuple = ()) -> None:
        jobs = list(jobs)
        with interrupt_signals(), connected(self.address) as client:
            self.reporter.started(len(jobs))
            batch = _Batch(client, jobs, fn, args, self.verbose, self.force)
            try:
                with _noted(batch):
                    try:
                        for outcome in batch.outcomes():
                            with signals_blocked():  # counted and marked reported together
                                self._count(outcome)
                                batch.reported.add(outcome.index)
                            if not self._report(outcome):  # --fail-fast: what runs finishes
                                batch.drain()
                                batch.check()  # a signal while it waited is an interrupt
                                return
                    except KeyboardInterrupt:
                        if batch.forced:
                            raise
                        self.reporter.warn("--dask: interrupted; waiting for the tasks already "
                                           "on the workers, so the count is exact (Ctrl-C "
                                           "again to stop waiting)")
                        raise self._interrupted(batch.drain()) from None
            except KeyboardInterrupt:  # the second signal: the tally is what is known
                raise Interrupted(self.tally.ok, self.tally.failed, self.tally.total,
                                  exact=False) from None
            finally:
                batch.cancel()
                sweep_temporaries(jobs)  # of attempts on workers killed mid-write

    def outcomes(self, jobs: Sequence, fn: Callable, args: tuple = ()) -> Iterator[Outcome]:
        """Each job's outcome in input order, neither counted nor reported (for a caller that
        combines results, as batch-norm fitting does); Ctrl-C cancels the rest."""
        jobs = list(jobs)
        with interrupt_signals(), connected(self.address) as client:
            batch = _Batch(client, jobs, fn, args, self.verbose, self.force)
            try:
                with _noted(batch):
                    yield from batch.outcomes()
            finally:
                batch.cancel()
