"""`poolcli.app.runner`: the one runner (input order, workers, fail-fast, a dead worker) and
the per-job error boundary `guarded` (one-line errors, files a failing job committed are
removed). Jobs are small module-level functions (workers must import them) on real files in
tmp_path; the reporter is a plain object that collects what it is told."""

import os
import time

import pytest

from poolcli.app.plan import Job
from poolcli.app.runner import Interrupted, Outcome, Runner, Tally, guarded, track_commit
from poolcli.errors import ImageReadError


class Collect:
    """A reporter: remembers the total, every outcome in the order told, every warning."""

    def __init__(self):
        self.total, self.outcomes, self.warnings = None, [], []

    def started(self, total):
        self.total = total

    def outcome(self, outcome):
        self.outcomes.append(outcome)

    def warn(self, message):
        self.warnings.append(message)

    def seen(self):
        return [(o.source, o.status) for o in self.outcomes]


def run_jobs(jobs, fn, *, workers=1, fail_fast=False, args=()):
    reporter, tally = Collect(), Tally(total=len(jobs))
    Runner(reporter, tally, workers=workers, fail_fast=fail_fast).run(jobs, fn, args)
    return reporter, tally


def jobs_for(tmp_path, *names):
    return [Job(name, output=str(tmp_path / f"{name}.out"), index=i)
            for i, name in enumerate(names)]


def commit(path, text="done"):
    """Write a file and journal it, as write_values does through atomic_write."""
    with open(path, "w") as fh:
        fh.write(text)
    track_commit(path)


# Job functions (module level: worker processes import them by name).

def echo(job):
    return {"input": job.source, "pid": os.getpid()}


def fail_on_bad(job):
    if "bad" in job.source:
        raise ValueError("cannot decode\n  (second line folded)")
    return echo(job)


def first_waits_for_second(job, flag):
    """Job 0 finishes only after job 1 did: with two workers they must run side by side."""
    if job.index == 1:
        open(flag, "w").close()
    elif job.index == 0:
        deadline = time.monotonic() + 30
        while not os.path.exists(flag):
            if time.monotonic() > deadline:
                raise OSError("job 1 never ran beside job 0")
            time.sleep(0.01)
    return echo(job)


def side_then_fail(job):
    """Writes a side file and the main output, then fails: like an encoder error after the
    map was written."""
    side = job.output + ".indices.npz"
    commit(side)
    commit(job.output)
    raise ImageReadError(f"{job.source}: disk said no")


def die_on_die(job):
    if "die" in job.source:
        os._exit(3)  # a worker killed (OOM killer, SIGKILL): no exception, no outcome
    return echo(job)


def interrupted_after_main(job):
    commit(job.output + ".side")
    commit(job.output)
    raise KeyboardInterrupt


def interrupted_before_main(job):
    commit(job.output + ".side")
    raise KeyboardInterrupt


def broken(job):
    return {}["no such key"]


# ----------------------------------------------------------------------------------------------
# guarded: the per-job error boundary
# ----------------------------------------------------------------------------------------------


def test_guarded_ok_carries_the_record_and_what_was_committed(tmp_path):
    job = Job("a.png", output=str(tmp_path / "a_max.png"), index=4)

    def write(job):
        commit(job.output)
        return {"input": job.source}

    outcome = guarded(write, job, ())
    assert outcome == Outcome(4, "a.png", "ok", {"input": "a.png"}, written=[job.output])
    assert outcome.wrote_output


def test_an_exception_becomes_one_error_line_naming_the_input(tmp_path):
    outcome = guarded(fail_on_bad, Job("in/bad.png", index=2), ())
    assert (outcome.index, outcome.source, outcome.status) == (2, "in/bad.png", "error")
    assert outcome.message == "in/bad.png: cannot decode (second line folded)"
    assert outcome.record is None and not outcome.wrote_output


def test_a_poolcli_error_keeps_its_own_message(tmp_path):
    """PoolcliError messages already start with the file they are about: not named twice."""
    job = Job("a.png", output=str(tmp_path / "a_max.png"))
    outcome = guarded(side_then_fail, job, ())
    assert outcome.message == "a.png: disk said no"


def test_verbose_adds_the_traceback():
    outcome = guarded(fail_on_bad, Job("bad.png"), (), verbose=True)
    first, *rest = outcome.message.splitlines()
    assert first == "bad.png: cannot decode (second line folded)"
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-2:] == ["ValueError: cannot decode", "  (second line folded)"]  # unfolded


def test_guarded_removes_what_a_failing_job_committed(tmp_path):
    job = Job("a.png", output=str(tmp_path / "a_max.png"))
    outcome = guarded(side_then_fail, job, ())
    assert outcome.status == "error" and outcome.written == []
    assert os.listdir(tmp_path) == []  # the map and the image are gone


def test_an_interrupt_after_the_main_output_counts_it(tmp_path):
    job = Job("a.png", output=str(tmp_path / "a_max.png"))
    outcome = guarded(interrupted_after_main, job, ())
    assert outcome.status == "interrupted" and outcome.record == {"output": job.output}
    assert outcome.written == [job.output + ".side", job.output] and outcome.wrote_output
    assert sorted(os.listdir(tmp_path)) == ["a_max.png", "a_max.png.side"]


def test_an_interrupt_before_the_main_output_removes_its_side_files(tmp_path):
    job = Job("a.png", output=str(tmp_path / "a_max.png"))
    outcome = guarded(interrupted_before_main, job, ())
    assert outcome.status == "interrupted" and outcome.written == []
    assert not outcome.wrote_output
    assert os.listdir(tmp_path) == []  # a map never outlives its image


def test_track_commit_outside_a_job_is_ignored(tmp_path):
    commit(tmp_path / "x")  # no journal open: nothing recorded, nothing raised
    outcome = guarded(echo, Job("a.png"), ())
    assert outcome.written == []


# ----------------------------------------------------------------------------------------------
# Runner
# ----------------------------------------------------------------------------------------------


def test_serial_run_reports_every_outcome_in_order_and_counts(tmp_path):
    jobs = jobs_for(tmp_path, "a.png", "bad1.png", "c.png", "bad2.png")
    reporter, tally = run_jobs(jobs, fail_on_bad)
    assert reporter.total == 4
    assert reporter.seen() == [("a.png", "ok"), ("bad1.png", "error"), ("c.png", "ok"),
                               ("bad2.png", "error")]
    assert (tally.ok, tally.failed, tally.skipped) == (2, 2, 0)
    assert reporter.warnings == []
    assert set(tally.summary()) == {"ok", "failed", "skipped", "seconds"}


def test_two_workers_run_side_by_side_and_report_in_input_order(tmp_path):
    names = [f"img{i}.png" for i in range(6)]
    reporter, tally = run_jobs(jobs_for(tmp_path, *names), first_waits_for_second, workers=2,
                               args=(str(tmp_path / "flag"),))
    assert reporter.seen() == [(n, "ok") for n in names]  # job 0 finished after job 1
    assert [o.index for o in reporter.outcomes] == list(range(6))
    pids = {o.record["pid"] for o in reporter.outcomes}
    assert len(pids) == 2 and os.getpid() not in pids
    assert tally.ok == 6


def test_errors_in_workers_are_outcomes_too(tmp_path):
    jobs = jobs_for(tmp_path, "a.png", "bad.png", "c.png")
    reporter, tally = run_jobs(jobs, fail_on_bad, workers=2)
    assert reporter.seen() == [("a.png", "ok"), ("bad.png", "error"), ("c.png", "ok")]
    assert reporter.outcomes[1].message == "bad.png: cannot decode (second line folded)"
    assert (tally.ok, tally.failed) == (2, 1)


def test_a_failing_job_in_a_worker_leaves_no_files(tmp_path):
    jobs = jobs_for(tmp_path, "a.png", "b.png")
    reporter, _ = run_jobs(jobs, side_then_fail, workers=2)
    assert reporter.seen() == [("a.png", "error"), ("b.png", "error")]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_fail_fast_stops_at_the_first_error_in_input_order(tmp_path, workers):
    jobs = jobs_for(tmp_path, "a.png", "bad.png", "c.png", "bad2.png", "e.png")
    reporter, tally = run_jobs(jobs, fail_on_bad, workers=workers, fail_fast=True)
    assert reporter.seen() == [("a.png", "ok"), ("bad.png", "error")]
    assert (tally.ok, tally.failed) == (1, 1)
    assert reporter.warnings == ["--fail-fast: stopped after 2 of 5 inputs"]


def test_a_worker_that_dies_is_an_error_outcome_not_a_traceback(tmp_path):
    jobs = jobs_for(tmp_path, "a.png", "die.png", "c.png")
    reporter, tally = run_jobs(jobs, die_on_die, workers=2)
    assert [o.source for o in reporter.outcomes] == ["a.png", "die.png", "c.png"]
    died = reporter.outcomes[1]
    assert died.status == "error"
    assert died.message == "die.png: a worker process died (killed, or out of memory)"
    # the pool is broken: what had not finished fails the same way, and nothing is lost
    for o in (reporter.outcomes[0], reporter.outcomes[2]):
        assert o.status == "ok" or o.message.startswith(f"{o.source}: a worker process died")
    assert tally.ok + tally.failed == 3 and tally.failed >= 1


def test_stdin_jobs_run_in_this_process(tmp_path):
    jobs = [Job("-", index=0), Job("b.png", index=1)]
    reporter, _ = run_jobs(jobs, echo, workers=4)
    assert {o.record["pid"] for o in reporter.outcomes} == {os.getpid()}


def test_an_interrupt_stops_the_run_with_the_exact_count(tmp_path):
    jobs = jobs_for(tmp_path, "a.png", "bad.png", "c.png", "d.png")

    def third_is_interrupted(job):
        if job.index == 2:
            return interrupted_after_main(job)
        return fail_on_bad(job)

    reporter, tally = Collect(), Tally(total=4)
    with pytest.raises(Interrupted) as info:
        Runner(reporter, tally).run(jobs, third_is_interrupted)
    # a.png ok, bad.png failed, c.png interrupted with its output complete, d.png not started
    assert (info.value.written, info.value.failed, info.value.total) == (2, 1, 4)
    assert str(info.value) == ("interrupted: 2 of 4 outputs written, 1 failed, the rest not "
                               "processed; no partial files left")
    assert reporter.seen() == [("a.png", "ok"), ("bad.png", "error")]


def test_record_counts_an_outcome_decided_outside_run():
    reporter, tally = Collect(), Tally(total=1)
    Runner(reporter, tally).record(Outcome(0, "x.png", "skipped", message="exists"))
    assert tally.skipped == 1 and reporter.seen() == [("x.png", "skipped")]


def test_a_bug_in_a_job_is_one_loud_line_and_the_batch_goes_on():
    """A KeyError is a bug in poolcli, not the input's fault: it still fails that input only
    (one line, no traceback unless -v), says it is a bug, and the other inputs go on."""
    reporter, tally = run_jobs([Job("a.png", index=0), Job("b.png", index=1)], broken)
    assert [o.status for o in reporter.outcomes] == ["error", "error"]
    assert tally.failed == 2
    message = reporter.outcomes[0].message
    assert message.startswith("a.png: ") and "internal error KeyError" in message
    assert "\n" not in message
