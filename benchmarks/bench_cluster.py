"""poolcli on a Dask cluster and on an S3 store, beside a local ``-j 2`` run.

Usage::

    python benchmarks/bench_cluster.py            # 200 images of 512x512 RGB, median of 3
    python benchmarks/bench_cluster.py --quick    # 40 images, median of 3

Everything runs on this machine and is started here: a ``dask scheduler`` and two
single-threaded ``dask worker`` processes on 127.0.0.1 (the same two cores ``-j 2`` uses), and
moto's S3 server on 127.0.0.1 (``AWS_ENDPOINT_URL``; the S3 rows are left out with a note when
moto or s3fs is missing). Each row times the whole ``poolcli pool`` process, from start-up
(connecting to the scheduler included) to exit, as the median of interleaved runs; the ratio
is to the local ``-j 2`` run. The ``--dask`` overhead target is 1.3x on 512x512 PNGs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

POOLCLI = [sys.executable, "-m", "poolcli"]
DASK = pathlib.Path(sys.executable).with_name("dask")
BUCKET = "poolcli-bench"


def make_images(directory: pathlib.Path, count: int, n: int = 512) -> None:
    """Photo-like RGB PNGs (gradients plus texture), four contents under ``count`` names."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:n, 0:n] / n
    for k in range(min(4, count)):
        base = np.stack([np.sin((6 + k) * x + 2 * y), np.cos(5 * y - 3 * x),
                         np.sin(4 * (x + y) + k)], -1)
        img = (base * 80 + 128 + rng.normal(0, 12, (n, n, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(directory / f"img{k:03d}.png", compress_level=1)
    for i in range(4, count):
        shutil.copy(directory / f"img{i % 4:03d}.png", directory / f"img{i:03d}.png")


# ----------------------------------------------------------------------------------------------
# The local services: a Dask cluster, an S3 server
# ----------------------------------------------------------------------------------------------


class LocalCluster:
    """``dask scheduler`` + two ``dask worker --nthreads 1`` processes, in process groups."""

    def __init__(self, directory: pathlib.Path, env: dict):
        self.dir, self.env, self.procs = directory, env, []
        self.scheduler_file = directory / "scheduler.json"

    def _spawn(self, *args) -> None:
        log = open(self.dir / f"dask-{len(self.procs)}.log", "wb")
        self.procs.append(subprocess.Popen([str(DASK), *args], stdout=log,
                                           stderr=subprocess.STDOUT, cwd=self.dir,
                                           env=self.env, start_new_session=True))
        log.close()

    def __enter__(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self._spawn("scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file",
                    str(self.scheduler_file), "--no-dashboard")
        deadline = time.monotonic() + 60
        while not self.scheduler_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the dask scheduler did not start")
            time.sleep(0.05)
        time.sleep(0.1)
        for _ in range(2):
            self._spawn("worker", "--scheduler-file", str(self.scheduler_file), "--nthreads",
                        "1", "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1",
                        "--local-directory", str(self.dir))
        import distributed

        with distributed.Client(scheduler_file=str(self.scheduler_file),
                                set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            with _suppress():
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                with _suppress():
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


def _suppress():
    import contextlib

    return contextlib.suppress(ProcessLookupError)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_s3() -> tuple[object | None, dict, str]:
    """moto's S3 server on 127.0.0.1 and the standard AWS variables pointing at it; (None, {},
    why) when moto or s3fs is missing, or poolcli has no object-store support yet."""
    try:
        import s3fs  # noqa: F401
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        return None, {}, f"S3 rows left out: {exc.name} is not installed"
    if not (pathlib.Path(__file__).parent.parent / "poolcli" / "imageio" / "store.py").exists():
        return None, {}, "S3 rows left out: this poolcli has no object-store support"
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    return server, env, ""


def upload(local_dir: pathlib.Path, env: dict) -> None:
    """The input images to s3://BUCKET/in/."""
    import s3fs

    fs = s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                           client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"],
                                          "region_name": env["AWS_DEFAULT_REGION"]})
    import boto3  # s3fs would send us-east-1 as a location constraint, which S3 refuses

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=BUCKET)
    fs.put(str(local_dir) + "/", f"{BUCKET}/in/", recursive=True)


def clear_s3_outputs(env: dict) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                           client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"],
                                          "region_name": env["AWS_DEFAULT_REGION"]})
    for prefix in ("out", "out-dask"):
        if fs.exists(f"{BUCKET}/{prefix}"):
            fs.rm(f"{BUCKET}/{prefix}", recursive=True)
    fs.invalidate_cache()


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


LOCAL = "local files, -j 2"
SOFTPOOL = ["--op", "softpool", "-k", "3", "-s", "1"]


def commands(cluster: LocalCluster, s3: bool) -> dict[str, tuple[list[str], str]]:
    """Row label -> (the poolcli command line, the row it is compared with); run in the work
    directory, outputs removed between runs. The softpool rows are the same batch with 20x
    the work per image: the fixed cost of --dask (importing distributed, connecting) fades."""
    dask = ["--dask", str(cluster.scheduler_file)]
    rows = {
        LOCAL: (["pool", "in/", "-o", "out", "-j", "2", "-q"], LOCAL),
        "local files, --dask (2 workers)": (["pool", "in/", "-o", "out", *dask, "-q"], LOCAL),
        "softpool 3x3/1, -j 2": (["pool", *SOFTPOOL, "in/", "-o", "out", "-j", "2", "-q"],
                                 "softpool 3x3/1, -j 2"),
        "softpool 3x3/1, --dask": (["pool", *SOFTPOOL, "in/", "-o", "out", *dask, "-q"],
                                   "softpool 3x3/1, -j 2"),
    }
    if s3:
        url = f"s3://{BUCKET}"
        rows.update({
            "S3 -> local files, -j 2": (["pool", f"{url}/in/", "-o", "out", "-j", "2", "-q"],
                                        LOCAL),
            "local files -> S3, -j 2": (["pool", "in/", "-o", f"{url}/out/", "-j", "2", "-q"],
                                        LOCAL),
            "S3 -> S3, --dask (2 workers)": (["pool", f"{url}/in/", "-o", f"{url}/out-dask/",
                                              *dask, "-q"], LOCAL),
        })
    return rows


def time_rows(rows: dict, runs: int, cwd: pathlib.Path, env: dict, s3: bool) -> dict:
    """Median seconds per row, interleaved rounds (each round runs every row once)."""
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(runs):
        for name, (args, _) in rows.items():
            shutil.rmtree(cwd / "out", ignore_errors=True)
            if s3:
                clear_s3_outputs(env)
            t = time.perf_counter()
            p = subprocess.run(POOLCLI + args, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
            dt = time.perf_counter() - t
            if p.returncode != 0:
                raise SystemExit(f"{name}: poolcli {' '.join(args)} failed:\n{p.stderr[-2000:]}")
            times[name].append(dt)
    return {name: statistics.median(ts) for name, ts in times.items()}


def table(medians: dict, rows: dict, count: int, runs: int) -> str:
    width = max(len(name) for name in medians)
    lines = [f"{count} PNGs of 512x512 RGB, poolcli pool (max 2x2 unless said), median of "
             f"{runs} runs",
             f"{'run':<{width}}  {'seconds':>8}  {'vs -j 2':>8}",
             f"{'-' * width}  {'-' * 8}  {'-' * 8}"]
    for name, seconds in medians.items():
        base = medians[rows[name][1]]
        lines.append(f"{name:<{width}}  {seconds:8.2f}  {seconds / base:7.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 images instead of 200")
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    count = 40 if opts.quick else 200
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_cluster."))
    server, s3_env, note = start_s3()
    env = {**os.environ, **s3_env}
    try:
        make_images(work / "in", count)
        if server is not None:
            upload(work / "in", s3_env)
        with LocalCluster(work / "dask", env) as cluster:
            rows = commands(cluster, server is not None)
            medians = time_rows(rows, opts.runs, work, env, server is not None)
        print(table(medians, rows, count, opts.runs))
        if note:
            print(note)
        print(json.dumps({"images": count, "runs": opts.runs, "seconds": medians}))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
