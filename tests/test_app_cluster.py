"""The pieces of ``--dask`` that need no cluster: scheduler addresses, the idempotent commit a
retried task relies on, batch-norm statistics merged from per-image partials, and how a run
hears signals.

The cluster itself (a real scheduler and workers) is exercised in ``test_cli_dask.py``.
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from poolcli.app import cluster  # imports no dask by itself
from poolcli.app.batchnorm import ImageMoments, MergedStats
from poolcli.errors import ImageWriteError, UsageError
from poolcli.imageio.files import atomic_write, retried_commits
from poolcli.ops import RunningStats

# ----------------------------------------------------------------------------------------------
# Addresses
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("given, address", [
    ("tcp://10.0.0.1:8786", "tcp://10.0.0.1:8786"),
    ("tls://sched:8786", "tls://sched:8786"),
    ("sched.example.org:8786", "tcp://sched.example.org:8786"),
])
def test_scheduler_addresses(given, address):
    assert cluster.scheduler_address(given) == address


def test_a_scheduler_file_gives_its_address(tmp_path):
    path = tmp_path / "scheduler.json"
    path.write_text(json.dumps({"type": "Scheduler", "address": "tcp://127.0.0.1:4242"}))
    assert cluster.scheduler_address(str(path)) == "tcp://127.0.0.1:4242"
    path.write_text(json.dumps({"type": "Scheduler"}))
    with pytest.raises(UsageError, match="without an \"address\""):
        cluster.scheduler_address(str(path))


def test_neither_address_nor_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="neither a scheduler address"):
        cluster.scheduler_address(str(tmp_path / "missing.json"))


# ----------------------------------------------------------------------------------------------
# The idempotent commit: a retried task finds its own output
# ----------------------------------------------------------------------------------------------


def _write(path, data: bytes, committed: list):
    with retried_commits():  # as every task on a Dask worker
        atomic_write(path, lambda fh: fh.write(data), overwrite=False,
                     on_commit=committed.append)


def test_the_same_bytes_already_there_count_as_committed(tmp_path):
    target = str(tmp_path / "out.png")
    first, retry = [], []
    _write(target, b"result", first)
    _write(target, b"result", retry)  # the retry of a task whose worker died after commit
    assert first == retry == [target]
    with pytest.raises(ImageWriteError, match="exists"):  # outside a task: never retried
        atomic_write(target, lambda fh: fh.write(b"result"), overwrite=False)
    assert open(target, "rb").read() == b"result"
    assert [f for f in os.listdir(tmp_path) if f.endswith(".part")] == []


def test_other_bytes_stay_an_error_and_are_not_touched(tmp_path):
    target = str(tmp_path / "out.png")
    _write(target, b"result", [])
    committed = []
    with pytest.raises(ImageWriteError, match="exists"):
        _write(target, b"another result", committed)
    assert committed == [] and open(target, "rb").read() == b"result"
    assert [f for f in os.listdir(tmp_path) if f.endswith(".part")] == []


def test_a_symlink_with_the_same_bytes_is_still_an_error(tmp_path):
    (tmp_path / "elsewhere.png").write_bytes(b"result")
    os.symlink(tmp_path / "elsewhere.png", tmp_path / "out.png")
    with pytest.raises(ImageWriteError, match="exists"):
        _write(str(tmp_path / "out.png"), b"result", [])


def test_the_sweep_finds_temporaries_of_file_urls_and_skips_store_urls(tmp_path):
    """A killed attempt's temporary file is swept for an output given as a file:// URL (a
    local atomic write) as for a plain path; an s3:// output has none (one PUT) and the
    sweep asks no store about it."""
    from types import SimpleNamespace

    from poolcli.app.runner import sweep_temporaries
    from poolcli.imageio.files import temp_prefix

    left = [tmp_path / f"{temp_prefix(str(tmp_path), name)}abcd1234.part"
            for name in ("a.png", "a.indices.npz", "b.png")]
    for path in left:
        path.write_bytes(b"half")
    (tmp_path / "other.png.abcd1234.part").write_bytes(b"not ours")
    jobs = [SimpleNamespace(output=f"file://{tmp_path}/a.png",
                            side=(f"file://{tmp_path}/a.indices.npz",)),
            SimpleNamespace(output=str(tmp_path / "b.png"), side=()),
            SimpleNamespace(output="s3://no-such-bucket/c.png", side=("s3://x/c.npz",))]
    sweep_temporaries(jobs)
    assert sorted(os.listdir(tmp_path)) == ["other.png.abcd1234.part"]


# ----------------------------------------------------------------------------------------------
# Batch-norm statistics from per-image partials
# ----------------------------------------------------------------------------------------------


def _moments(a: np.ndarray) -> ImageMoments:
    x = a.reshape(-1, a.shape[-1]).astype(np.float64)
    mean = x.mean(axis=0)
    return ImageMoments("x", ("R", "G", "B"), a.shape, x.shape[0], mean,
                        np.square(x - mean).sum(axis=0))


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
def test_merged_partials_equal_running_stats_within_rounding(momentum):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 65535, (h, 17, 3)).astype(np.uint16)
              for h in (5, 9, 9, 31, 2, 11, 11)]
    local, merged = RunningStats(), MergedStats()
    for chunk in (images[:3], images[3:6], images[6:]):
        local.update(np.concatenate([a.reshape(-1, 3) for a in chunk])[None, :, None, :],
                     momentum=momentum)
        merged.update([_moments(a) for a in chunk], momentum=momentum)
    assert merged.count == local.count
    assert merged.num_batches_tracked == local.num_batches_tracked
    for name in ("mean", "var", "var_unbiased", "running_mean", "running_var"):
        np.testing.assert_allclose(getattr(merged, name), getattr(local, name), rtol=1e-13,
                                   err_msg=name)


def test_a_chunk_of_one_value_is_refused_like_running_stats():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        MergedStats().update([_moments(np.ones((1, 1, 3)))])


# ----------------------------------------------------------------------------------------------
# Signals during a run
# ----------------------------------------------------------------------------------------------

class _Noted:
    def __init__(self):
        self.interrupted = self.forced = False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_first_signal_is_noted_and_a_second_raises(sig):
    """The first signal must not raise wherever the main thread is (inside distributed's own
    blocking calls, an exception there leaves a traceback from its event loop thread), nor take
    a lock (the main thread may hold it, in a wait): it sets a flag the batch's loop checks at
    its next step. A second one raises at once."""
    batch = _Noted()
    before = signal.getsignal(sig)
    with cluster._noted(batch):
        os.kill(os.getpid(), sig)  # the handler runs before kill returns to Python
        assert batch.interrupted and not batch.forced
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), sig)
        assert batch.forced
    assert signal.getsignal(sig) is before
