"""``--dask ADDRESS`` against a real local cluster: a ``dask scheduler`` and two ``dask worker``
processes on 127.0.0.1, started here and torn down after (no mocks).

Every batch command gives the same bytes, records and exit status as ``-j 1``; the start-up
checks are one line and exit 2; Ctrl-C is exit 130 with an exact count; a worker killed
mid-run loses nothing.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from helpers import POOLCLI, SAMPLES, digest, run

distributed = pytest.importorskip(
    "distributed", reason="the --dask tests need distributed: pip install 'poolcli[dask]'")

DASK = pathlib.Path(sys.executable).with_name("dask")
START_TIMEOUT = 60


# ----------------------------------------------------------------------------------------------
# The cluster
# ----------------------------------------------------------------------------------------------


class Cluster:
    """Dask processes in their own process groups (a worker's nanny and its worker die
    together); ``scheduler_file`` is what ``--dask`` is given."""

    def __init__(self, directory: pathlib.Path):
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.scheduler_file = directory / "scheduler.json"
        self.procs: list[subprocess.Popen] = []

    def _spawn(self, args, env=None) -> subprocess.Popen:
        log = open(self.dir / f"dask-{len(self.procs)}.log", "wb")
        p = subprocess.Popen([str(DASK), *args], stdout=log, stderr=subprocess.STDOUT,
                             cwd=self.dir, env=env, start_new_session=True)
        log.close()
        self.procs.append(p)
        return p

    def start_scheduler(self, env=None) -> None:
        self._spawn(["scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file",
                     str(self.scheduler_file), "--no-dashboard"], env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.scheduler_file.exists():
            assert time.monotonic() < deadline, "the dask scheduler did not start"
            time.sleep(0.05)
        time.sleep(0.1)  # the file is written in one go, but let it land

    def start_worker(self, env=None) -> subprocess.Popen:
        return self._spawn(["worker", "--scheduler-file", str(self.scheduler_file),
                            "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                            "--host", "127.0.0.1", "--local-directory", str(self.dir)], env=env)

    def client(self):
        return distributed.Client(scheduler_file=str(self.scheduler_file), timeout=20,
                                  set_as_default=False)

    def wait_for_workers(self, n: int) -> None:
        with self.client() as client:
            client.wait_for_workers(n, timeout=START_TIMEOUT)

    def stop(self) -> None:
        for p in self.procs:
            _kill_group(p, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                _kill_group(p, signal.SIGKILL)
                p.wait(10)


def _kill_group(p: subprocess.Popen, sig) -> None:
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


def start_cluster(directory: pathlib.Path, workers: int = 2, env=None,
                  scheduler_env=None) -> Cluster:
    cluster = Cluster(directory)
    try:
        cluster.start_scheduler(scheduler_env)
        for _ in range(workers):
            cluster.start_worker(env)
        if workers:
            cluster.wait_for_workers(workers)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two single-threaded workers on 127.0.0.1 for this module."""
    c = start_cluster(tmp_path_factory.mktemp("dask"))
    yield c
    c.stop()


@pytest.fixture
def images(tmp_path, monkeypatch):
    """The sample PNGs (several sizes, grey, RGB, RGBA, 16-bit) in a temporary directory."""
    for path in sorted(SAMPLES.glob("*.png")):
        shutil.copy(path, tmp_path / path.name)
    monkeypatch.chdir(tmp_path)
    return sorted(p.name for p in SAMPLES.glob("*.png"))


def files(directory) -> dict:
    """Every file under ``directory`` by relative path -> SHA-256."""
    root = pathlib.Path(directory)
    return {str(p.relative_to(root)): digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def lines(result) -> list[dict]:
    """The JSON lines of a run, the summary's seconds left out."""
    out = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    for obj in out:
        obj.get("summary", {}).pop("seconds", None)
    return out


def same_as_local(*args, out="out"):
    """Run ``args`` with ``-j 1`` into out.local and with ``--dask`` into out.dask: the same
    exit status, JSON lines and files, byte for byte (index maps included: a retried task
    must write the very bytes of its first attempt)."""
    local = run(*args, "-o", f"{out}.local", "-j", "1", "--json")
    dask = run(*args, "-o", f"{out}.dask", "--dask", CLUSTER.scheduler_file, "--json")
    assert dask.exit_code == local.exit_code, dask.stderr
    renamed = [json.loads(json.dumps(rec).replace(f"{out}.dask", f"{out}.local"))
               for rec in lines(dask)]
    assert renamed == lines(local)
    assert files(f"{out}.dask") == files(f"{out}.local")
    return dask


CLUSTER: Cluster


@pytest.fixture(autouse=True)
def _cluster_global(cluster):
    global CLUSTER
    CLUSTER = cluster


# ----------------------------------------------------------------------------------------------
# The same results as -j 1
# ----------------------------------------------------------------------------------------------


def test_pool_is_byte_identical_with_maps_and_selections(images):
    result = same_as_local("pool", *images, "--save-indices", "--indices-png")
    assert lines(result)[-1]["summary"] == {"ok": 7, "failed": 0, "skipped": 0}


def test_stochastic_pool_with_a_seed_is_byte_identical(images):
    same_as_local("pool", "--op", "stochastic", "--seed", "7", *images)


def test_instance_norm_is_byte_identical(images):
    same_as_local("norm", "--op", "instance", *images, "--format", "tif")


def test_stats_records_come_in_input_order(images):
    local = run("stats", *images, "-j", "1", "--json")
    dask = run("stats", *images, "--dask", CLUSTER.scheduler_file, "--json")
    assert dask.exit_code == 0, dask.stderr
    assert lines(dask) == lines(local)
    assert [r["input"] for r in lines(dask)[:-1]] == images


def test_unpool_and_chain_are_byte_identical(images):
    assert run("pool", "astronaut.png", "--save-indices", "-q").exit_code == 0
    local = run("unpool", "astronaut_max.png", "--indices", "astronaut_max.indices.npz",
                "-o", "u.local.png", "-j", "1", "-q")
    dask = run("unpool", "astronaut_max.png", "--indices", "astronaut_max.indices.npz",
               "-o", "u.dask.png", "--dask", CLUSTER.scheduler_file, "-q")
    assert local.exit_code == dask.exit_code == 0, dask.stderr
    assert digest("u.local.png") == digest("u.dask.png")
    rgb = ["astronaut.png", "chelsea.png", "coffee.png"]
    inputs = sum((["-i", f] for f in rgb), [])
    same_as_local("chain", *inputs, "pool", "--save-indices", "norm", "unpool")


def test_batch_norm_fit_equals_a_local_fit_and_inference_is_byte_identical(images):
    rgb = ["astronaut.png", "chelsea.png", "coffee.png", "coffee16.png"]
    for where, how in (("local", ["-j", "1"]), ("dask", ["--dask", CLUSTER.scheduler_file])):
        result = run("norm", "--op", "batch", "--fit", "--batch-size", "3", "--save-stats",
                     f"{where}.json", *rgb, "-q", *how)
        assert result.exit_code == 0, result.stderr
    local, dask = (json.load(open(f"{w}.json")) for w in ("local", "dask"))
    for key in local:  # within float rounding: per-image partials merged (see MergedStats)
        if isinstance(local[key], list) and local[key] and isinstance(local[key][0], float):
            np.testing.assert_allclose(dask[key], local[key], rtol=1e-13, err_msg=key)
        else:
            assert dask[key] == local[key], key
    same_as_local("norm", "--op", "batch", "--stats", "local.json", *rgb)
    same_as_local("norm", "--op", "batch", "--stats", "local.json", "--running", *rgb,
                  out="running")


def test_batch_norm_of_one_batch_runs_here_and_says_so(images):
    rgb = ["astronaut.png", "coffee.png"]
    result = same_as_local("norm", "--op", "batch", *rgb)
    assert "--dask: batch norm of one batch needs every image at once" in result.stderr


# ----------------------------------------------------------------------------------------------
# Errors, --fail-fast, --skip-existing, --dry-run
# ----------------------------------------------------------------------------------------------


def test_a_corrupt_input_in_the_middle_is_its_one_line_error(images):
    pathlib.Path("broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    inputs = images[:3] + ["broken.png"] + images[3:]
    result = same_as_local("pool", *inputs)
    assert result.exit_code == 1
    errors = [r for r in lines(result) if "error" in r]
    assert [r["input"] for r in errors] == ["broken.png"]
    assert "Traceback" not in result.stderr


def test_fail_fast_stops_at_the_first_failure(images):
    pathlib.Path("broken.png").write_bytes(b"not an image")
    result = run("pool", images[0], "broken.png", *images[1:], "-o", "out", "--fail-fast",
                 "--json", "--dask", CLUSTER.scheduler_file)
    assert result.exit_code == 1
    out = lines(result)
    assert [("error" in r) for r in out[:-1]] == [False, True]
    assert out[-1]["summary"] == {"ok": 1, "failed": 1, "skipped": 0}
    assert "--fail-fast: stopped after 2 of 8 inputs" in result.stderr


def test_skip_existing_leaves_existing_outputs_alone(images):
    assert run("pool", *images[:3], "-o", "out", "-q").exit_code == 0
    before = files("out")
    result = run("pool", *images, "-o", "out", "--skip-existing", "--json",
                 "--dask", CLUSTER.scheduler_file)
    assert result.exit_code == 0, result.stderr
    assert lines(result)[-1]["summary"] == {"ok": 4, "failed": 0, "skipped": 3}
    after = files("out")
    assert {k: after[k] for k in before} == before and len(after) == 7


def test_dry_run_never_connects(images):
    result = run("pool", *images, "--dry-run", "--dask", "tcp://127.0.0.1:1")
    assert result.exit_code == 0
    assert not pathlib.Path(f"{pathlib.Path(images[0]).stem}_max.png").exists()


# ----------------------------------------------------------------------------------------------
# Start-up: one line, exit 2, bounded time
# ----------------------------------------------------------------------------------------------


def _one_line_exit_2(result, *needles):
    assert result.exit_code == 2, result.stderr
    text = result.stderr.strip()
    assert "\n" not in text and "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text


def test_an_unreachable_scheduler_is_one_line_and_quick(images):
    started = time.monotonic()
    result = run("pool", images[0], "--dask", "tcp://127.0.0.1:1")
    _one_line_exit_2(result, "--dask tcp://127.0.0.1:1: cannot reach the Dask scheduler")
    assert time.monotonic() - started < 5


def test_a_missing_scheduler_file_is_one_line(images):
    _one_line_exit_2(run("pool", images[0], "--dask", "nowhere.json"),
                     "neither a scheduler address", "nor an existing scheduler file")
    pathlib.Path("bad.json").write_text("{not json")
    _one_line_exit_2(run("pool", images[0], "--dask", "bad.json"), "not a readable scheduler")


@pytest.mark.parametrize("args, needle", [
    (["-o", "-"], "-o - writes to this process's standard output"),
    (["-j", "2"], "-j and --dask exclude each other"),
    (["-"], "standard input (-) is this process's"),
], ids=["stdout", "jobs", "stdin"])
def test_dask_excludes_stdin_stdout_and_jobs(images, args, needle):
    result = run("pool", *args, "--dask", CLUSTER.scheduler_file, input=b"")
    assert result.exit_code == 2 and needle in result.stderr, result.stderr


def test_a_worker_with_another_poolcli_version_stops_the_run(tmp_path, images):
    fake = tmp_path / "fake" / "poolcli"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "0.0.0-fake"\n')
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    other = start_cluster(tmp_path / "other", workers=1, env=env)
    try:
        result = run("pool", images[0], "--dask", other.scheduler_file)
    finally:
        other.stop()
    _one_line_exit_2(result, "has poolcli 0.0.0-fake", "install the same version")
    assert not pathlib.Path("astronaut_max.png").exists()


def test_without_the_extra_it_says_what_to_install(tmp_path, images):
    blocker = tmp_path / "blocker" / "distributed"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named distributed')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker.parent)}
    p = subprocess.run(POOLCLI + ["pool", images[0], "--dask", "tcp://127.0.0.1:1"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2
    assert p.stderr.strip() == ("poolcli: error: --dask needs the dask extra: pip install "
                                "'poolcli[dask]'")


@pytest.mark.parametrize("args", [["--help"], ["pool", "--help"],
                                  ["pool", "astronaut.png", "-q", "-j", "2"]],
                         ids=["help", "pool-help", "local-run"])
def test_help_and_local_runs_never_import_dask(images, args):
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "poolcli", *args],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines()
                if line.startswith("import time:")}
    assert "poolcli.cli.root" in imported  # the check sees poolcli's own imports
    assert not {name.split(".")[0] for name in imported} & {"dask", "distributed"}


# ----------------------------------------------------------------------------------------------
# Ctrl-C and a dying worker: real processes, real signals
# ----------------------------------------------------------------------------------------------

SLOW = ["--op", "softpool", "-k", "3", "-s", "1", "--compress-level", "9"]


@pytest.fixture
def slow_batch(tmp_path, monkeypatch):
    """40 noisy 512x512 RGB PNGs (four contents, ten names each) and, in ref/, their -j 1
    results: a run on the cluster takes seconds."""
    rng = np.random.default_rng(3)
    names = []
    for k in range(4):
        Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(
            tmp_path / f"src{k}.png", compress_level=0)
    monkeypatch.chdir(tmp_path)
    assert run("pool", *SLOW, *(f"src{k}.png" for k in range(4)), "-o", "ref", "-j", "1",
               "-q").exit_code == 0
    for i in range(40):
        os.link(tmp_path / f"src{i % 4}.png", tmp_path / f"in{i:02d}.png")
        names.append(f"in{i:02d}.png")
    return names


def _spawn_run(names, *extra):
    return subprocess.Popen(POOLCLI + ["pool", *SLOW, *names, "-o", "out", "--json", "--dask",
                                       str(CLUSTER.scheduler_file), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_outputs(n: int, p: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.poll() is None:
        if os.path.isdir("out") and len([f for f in os.listdir("out")
                                         if f.endswith(".png")]) >= n:
            return
        time.sleep(0.02)
    pytest.fail(f"fewer than {n} outputs appeared")


def _leftovers() -> list[str]:
    return [f for _, _, fs in os.walk(".") for f in fs if f.endswith(".part")]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_is_exit_130_with_the_exact_count(slow_batch, sig):
    p = _spawn_run(slow_batch)
    _wait_for_outputs(3, p)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert _leftovers() == []
    match = re.search(r"interrupted: (\d+) of 40 outputs written", err)
    assert match, err
    on_disk = sorted(os.listdir("out"))
    assert int(match.group(1)) == len(on_disk) < 40
    for name in on_disk:
        k = int(name[2:4]) % 4
        assert digest(f"out/{name}") == digest(f"ref/src{k}_softpool.png"), name


def test_a_second_interrupt_stops_waiting_and_still_loses_nothing(slow_batch):
    """The first Ctrl-C waits for the tasks on the workers; a second stops waiting. The count
    is then a lower bound, and what the workers still write is whole."""
    p = _spawn_run(slow_batch)
    _wait_for_outputs(3, p)
    p.send_signal(signal.SIGINT)
    lines = []
    for line in p.stderr:  # the run says it is waiting
        lines.append(line)
        if "waiting for the tasks" in line:
            break
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    err = "".join(lines) + err
    assert p.returncode == 130, err
    assert "Traceback" not in err
    match = re.search(r"interrupted: at least (\d+) of 40 outputs written", err)
    assert match, err
    with CLUSTER.client() as client:  # the tasks it stopped waiting for end on their own
        deadline = time.monotonic() + 60
        while any(client.processing().values()) and time.monotonic() < deadline:
            time.sleep(0.05)
    time.sleep(0.5)
    assert _leftovers() == []
    on_disk = sorted(os.listdir("out"))
    assert int(match.group(1)) <= len(on_disk) < 40
    for name in on_disk:
        assert digest(f"out/{name}") == digest(f"ref/src{int(name[2:4]) % 4}_softpool.png"), name


def test_an_interrupt_while_fail_fast_waits_is_still_an_interrupt(slow_batch):
    """--fail-fast stopped at a broken input and waits for the tasks on the workers: a Ctrl-C
    then is an interrupt (exit 130, the exact count), not lost in the wait."""
    pathlib.Path("broken.png").write_bytes(b"not an image")
    p = _spawn_run([slow_batch[0], "broken.png", *slow_batch[1:]], "--fail-fast")
    for line in p.stderr:  # the failure is reported: the run now waits for the workers
        if "broken.png" in line:
            break
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    match = re.search(r"interrupted: (\d+) of 41 outputs written, 1 failed", err)
    assert match, err
    assert int(match.group(1)) == len(os.listdir("out"))
    assert _leftovers() == []


def test_a_worker_killed_mid_run_loses_nothing(slow_batch):
    with CLUSTER.client() as client:
        pids = client.run(os.getpid)
        p = _spawn_run(slow_batch)
        _wait_for_outputs(4, p)
        os.kill(sorted(pids.values())[0], signal.SIGKILL)
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        summary = json.loads(out.splitlines()[-1])["summary"]
        assert (summary["ok"], summary["failed"]) == (40, 0)
        assert sorted(os.listdir("out")) == [f"in{i:02d}_softpool.png" for i in range(40)]
        for i in range(40):
            assert digest(f"out/in{i:02d}_softpool.png") == \
                digest(f"ref/src{i % 4}_softpool.png")
        assert _leftovers() == []
        client.wait_for_workers(2, timeout=START_TIMEOUT)  # the nanny restarts it
