"""Issue 16's "Done when", end to end: ``--dask`` on a real local cluster (a scheduler and two
worker processes on 127.0.0.1) reading and writing a real S3 API (moto's server), no mocks.

A batch of local and S3 inputs written to S3 and to local files gives the bytes of ``-j 1``; a
worker SIGKILLed mid-run still gives every output exactly once, exact counts and no temporary
file or object; when Dask gives up on a task (``KilledWorker``) each of its images is one line
(a failed record), never a traceback.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from helpers import POOLCLI, SAMPLES, run_process
from test_imageio_store import S3, s3  # noqa: F401  (the session's moto server)

distributed = pytest.importorskip(
    "distributed", reason="the --dask tests need distributed: pip install 'poolcli[dask]'")
pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'poolcli[s3]')")

from test_cli_dask import START_TIMEOUT, files, lines, start_cluster  # noqa: E402


@pytest.fixture(scope="module")
def s3_cluster(tmp_path_factory, s3):  # noqa: F811
    """Two single-threaded workers that reach the S3 server through the standard AWS
    variables, as poolcli's own process does."""
    c = start_cluster(tmp_path_factory.mktemp("dask-s3"), env=s3.env)
    yield c
    c.stop()


def poolcli(s3: S3, *args, timeout=180):  # noqa: F811
    return run_process(*args, env=s3.env, timeout=timeout)


def s3_files(s3: S3, prefix: str) -> dict:  # noqa: F811
    """Every object under ``prefix`` by relative key -> bytes."""
    return {url[len(prefix) + 1:]: s3.cat(url) for url in s3.ls(prefix)}


def leftovers(s3: S3, prefix: str) -> list:  # noqa: F811
    """Temporary files under the working directory and multipart uploads never completed."""
    local = [f for _, _, fs in os.walk(".") for f in fs if f.endswith(".part")]
    bucket, _, key = prefix[len("s3://"):].partition("/")
    uploads = s3.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key)
    return local + [u["Key"] for u in uploads.get("Uploads", [])]


# ----------------------------------------------------------------------------------------------
# Mixed local and S3 inputs, outputs to S3 and to local files: the bytes of -j 1
# ----------------------------------------------------------------------------------------------

LOCAL = ["astronaut.png", "camera.png", "coffee16.png"]
REMOTE = ["camera16.png", "chelsea.png", "chelsea_rgba.png", "coffee.png"]


def test_local_and_s3_inputs_to_s3_and_local_outputs_are_byte_identical_to_j1(
        s3, s3_cluster, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    t = s3.prefix()
    for name in LOCAL:
        shutil.copy(SAMPLES / name, name)
    for name in REMOTE:
        s3.put(f"{t}/in/{name}", (SAMPLES / name).read_bytes())
    inputs = [LOCAL[0], f"{t}/in/{REMOTE[0]}", LOCAL[1], f"{t}/in/{REMOTE[1]}",
              f"{t}/in/{REMOTE[2]}", LOCAL[2], f"{t}/in/{REMOTE[3]}"]
    how = {"local": ["-j", "1"], "dask": ["--dask", str(s3_cluster.scheduler_file)]}
    common = ["pool", "--op", "max", "--save-indices", "--indices-png", *inputs, "--json"]
    results = {}
    for where in ("s3", "dir"):
        for mode, flags in how.items():
            out = f"{t}/{mode}" if where == "s3" else f"{mode}.out"
            r = poolcli(s3, *common, "-o", out, *flags)
            assert r.returncode == 0, r.stderr
            assert "Traceback" not in r.stderr
            results[where, mode] = json.loads(json.dumps(lines(r)).replace(out, "OUT"))
        assert results[where, "dask"] == results[where, "local"]
        assert results[where, "dask"][-1]["summary"] == {"ok": 7, "failed": 0, "skipped": 0}
        assert [r["input"] for r in results[where, "dask"][:-1]] == inputs
    on_s3 = {mode: s3_files(s3, f"{t}/{mode}") for mode in how}
    assert len(on_s3["local"]) == 21  # image, map and selection of each of 7 inputs
    assert on_s3["dask"] == on_s3["local"]
    local = {mode: files(f"{mode}.out") for mode in how}
    assert local["dask"] == local["local"]
    # and the same bytes whichever way they went: S3 objects equal the local files
    assert on_s3["dask"] == {k: (tmp_path / "dask.out" / k).read_bytes() for k in local["dask"]}
    assert leftovers(s3, t) == []


# ----------------------------------------------------------------------------------------------
# A worker SIGKILLed mid-run: every S3 output exactly once
# ----------------------------------------------------------------------------------------------

SLOW = ["--op", "max", "-k", "3", "-s", "1", "--compress-level", "9", "--save-indices"]
N = 48


@pytest.fixture
def noisy_batch(tmp_path, monkeypatch):
    """N noisy 512x512 RGB PNGs (four contents; names differ) and their -j 1 results in ref/."""
    rng = np.random.default_rng(5)
    monkeypatch.chdir(tmp_path)
    for k in range(4):
        Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(
            f"src{k}.png", compress_level=0)
    names = []
    for i in range(N):
        os.link(f"src{i % 4}.png", f"in{i:02d}.png")
        names.append(f"in{i:02d}.png")
    r = run_process("pool", *SLOW, *names, "-o", "ref", "-j", "1", "-q")
    assert r.returncode == 0, r.stderr
    return names


def _start(s3, cluster, names, out):  # noqa: F811
    return subprocess.Popen(POOLCLI + ["pool", *SLOW, *names, "-o", out, "--json", "--dask",
                                       str(cluster.scheduler_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=s3.env)


def _wait_for_objects(s3, prefix, n, p, timeout=90):  # noqa: F811
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.poll() is None:
        done = [u for u in s3.ls(prefix) if u.endswith("_max.png")] if s3.fs.exists(prefix) \
            else []
        if len(done) >= n:
            return len(done)
        time.sleep(0.02)
    pytest.fail(f"fewer than {n} outputs appeared on S3 before the run ended")


def _worker_pids(cluster) -> list[int]:
    with cluster.client() as client:
        return sorted(client.run(os.getpid).values())


def test_a_worker_killed_mid_run_with_s3_outputs_loses_nothing(s3, s3_cluster,
                                                               noisy_batch):  # noqa: F811
    t = s3.prefix()
    pid = _worker_pids(s3_cluster)[0]
    p = _start(s3, s3_cluster, noisy_batch, t)
    seen = _wait_for_objects(s3, t, 4, p)
    os.kill(pid, signal.SIGKILL)
    assert seen < N and p.poll() is None  # mid-run, not after
    out, err = p.communicate(timeout=180)
    assert p.returncode == 0, err
    assert "Traceback" not in err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in records[:-1]] == noisy_batch  # each image once, in order
    assert all("error" not in r for r in records[:-1])
    assert {k: records[-1]["summary"][k] for k in ("ok", "failed", "skipped")} == \
        {"ok": N, "failed": 0, "skipped": 0}
    expected = files("ref")
    assert len(expected) == 2 * N
    stored = s3_files(s3, t)
    assert stored.keys() == expected.keys()  # every output, nothing else
    for name, data in stored.items():
        assert data == (pathlib.Path("ref") / name).read_bytes(), name
    assert leftovers(s3, t) == []
    with s3_cluster.client() as client:  # the nanny restarts it, for the next test
        client.wait_for_workers(2, timeout=START_TIMEOUT)


# ----------------------------------------------------------------------------------------------
# Dask gives up on a task: one line per image, never a traceback
# ----------------------------------------------------------------------------------------------


def test_when_dask_gives_up_on_a_task_each_image_is_one_failed_line(s3, tmp_path,
                                                                    noisy_batch):  # noqa: F811
    """With ``allowed-failures`` 0 the scheduler gives up on a task at its first dead worker
    (``KilledWorker``): each image of that task is its own failed record and one stderr line,
    the others are written, exit 1, and the counts add up."""
    env = {**s3.env, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    cluster = start_cluster(tmp_path / "strict", env=s3.env, scheduler_env=env)
    try:
        t = s3.prefix()
        pid = _worker_pids(cluster)[0]
        p = _start(s3, cluster, noisy_batch, t)
        _wait_for_objects(s3, t, 4, p)
        os.kill(pid, signal.SIGKILL)
        out, err = p.communicate(timeout=180)
    finally:
        cluster.stop()
    assert p.returncode == 1, err
    assert "Traceback" not in err and "KilledWorker(" not in err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in records[:-1]] == noisy_batch
    failed = [r for r in records[:-1] if "error" in r]
    assert failed, "no task was given up: the kill came too late"
    why = ("the workers running it died (killed, or out of memory) too many times "
           "(dask's distributed.scheduler.allowed-failures)")
    for r in failed:
        assert r["error"] == f"{r['input']}: {why}"
    err_lines = [line for line in err.splitlines() if why in line]
    assert len(err_lines) == len(failed)  # one line each, nothing more about them
    summary = records[-1]["summary"]
    assert (summary["ok"], summary["failed"]) == (N - len(failed), len(failed))
    stored = s3_files(s3, t)
    for r in records[:-1]:
        if "error" not in r:
            name = pathlib.Path(r["output"]).name
            assert stored[name] == (pathlib.Path("ref") / name).read_bytes(), name
    # a failed image leaves nothing: what the dead attempt committed of it is removed
    written = {pathlib.Path(r["output"]).stem for r in records[:-1] if "error" not in r}
    assert {name.split(".")[0] for name in stored} == written
    assert leftovers(s3, t) == []
