"""signals_blocked: a commit and the bookkeeping that says it happened are never split by
SIGINT or SIGTERM, also in a process with other threads (a Dask client's event loop, a process
pool's manager thread), where masking the main thread alone does not hold the signal back."""

import os
import signal
import threading
import time

import pytest

from poolcli.imageio.files import signals_blocked


@pytest.fixture
def other_thread():
    """A thread that does not block signals, so the kernel may hand them to it."""
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    yield t
    stop.set()
    t.join()


def test_sigint_waits_for_the_end_of_the_block_with_other_threads(other_thread):
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with signals_blocked():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # a handler would have run by now
            steps.append("committed")
            steps.append("journaled")
        steps.append("after the block")  # never: the interrupt is raised at the block's end
    assert steps == ["committed", "journaled"]


def test_sigterm_goes_to_the_previous_handler_once_after_the_block(other_thread):
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        with signals_blocked():
            with signals_blocked():  # nested: delivered when the outermost block ends
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                assert seen == []
            time.sleep(0.05)
            assert seen == []
        time.sleep(0.05)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_handlers_are_restored_and_nothing_is_delivered_without_a_signal(other_thread):
    int_handler = signal.getsignal(signal.SIGINT)
    term_handler = signal.getsignal(signal.SIGTERM)
    with signals_blocked():
        pass
    assert signal.getsignal(signal.SIGINT) is int_handler
    assert signal.getsignal(signal.SIGTERM) is term_handler


def test_outside_the_main_thread_it_is_a_plain_block():
    result = []

    def body():
        with signals_blocked():
            result.append("ran")

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert result == ["ran"]
