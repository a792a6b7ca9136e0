"""poolcli.imageio.store: URLs read, listed and written through fsspec.

``memory://`` (fsspec's in-process store) for the quick unit tests; a real S3 API (moto's server,
started here on 127.0.0.1) for what only a real store shows: the conditional put. The ``s3``
fixture is shared with tests/test_cli_s3.py. Local runs importing no fsspec is tested too.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import uuid

import numpy as np
import pytest

from helpers import POOLCLI, ROOT, SAMPLES
from poolcli import imageio
from poolcli.app.plan import make_plan
from poolcli.errors import ImageReadError, ImageWriteError, IndexMapError, StatsFileError
from poolcli.imageio import indexmap, statsfile, store
from poolcli.imageio.files import retried_commits
from poolcli.imageio.provenance import read_provenance

fsspec = pytest.importorskip("fsspec", reason="fsspec is not installed (pip install 'poolcli[s3]')")


@pytest.fixture
def mem():
    """A fresh ``memory://`` prefix."""
    prefix = f"memory://t{uuid.uuid4().hex[:8]}"
    yield prefix
    fs = fsspec.filesystem("memory")
    fs.rm(fs._strip_protocol(prefix), recursive=True)


def image(seed=0, shape=(8, 6, 3)):
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


# ---- memory:// -------------------------------------------------------------------------------


@pytest.mark.parametrize("path, url", [("s3://b/k.png", True), ("gs://b/k", True),
                                       ("file:///tmp/x.png", True), ("memory://x", True),
                                       ("C://x.png", False), ("x.png", False), ("-", False),
                                       ("a/s3://b", False), ("://x", False)])
def test_is_url(path, url):
    assert store.is_url(path) is url


def test_images_round_trip_with_provenance(mem):
    a = image()
    imageio.write_image(f"{mem}/a.png", a, provenance={"command": "pool", "op": "max",
                                                       "params": {}})
    img = imageio.read_image(f"{mem}/a.png")
    assert img.source == f"{mem}/a.png" and (img.array == a).all()
    assert read_provenance(f"{mem}/a.png")["op"] == "max"
    assert read_provenance(f"{mem}/missing.png") is None


def test_write_never_replaces_without_overwrite(mem):
    store.write_bytes(f"{mem}/x.bin", b"one", overwrite=False)
    with pytest.raises(ImageWriteError, match=r"x\.bin: exists \(use --force to replace\)"):
        store.write_bytes(f"{mem}/x.bin", b"two", overwrite=False)
    assert store.read_bytes(f"{mem}/x.bin") == b"one"
    with pytest.raises(ImageWriteError, match="exists"):  # the same bytes, but no retry
        store.write_bytes(f"{mem}/x.bin", b"one", overwrite=False)
    with retried_commits():  # a retried task finds its own output: committed
        store.write_bytes(f"{mem}/x.bin", b"one", overwrite=False)
    committed = []
    store.write_bytes(f"{mem}/x.bin", b"three", overwrite=True, on_commit=committed.append)
    assert store.read_bytes(f"{mem}/x.bin") == b"three" and committed == [f"{mem}/x.bin"]


def test_reads_are_bounded_before_download(mem):
    imageio.write_image(f"{mem}/a.png", image(shape=(40, 40, 3)))
    with pytest.raises(ImageReadError, match="decompression-bomb guard"):
        imageio.read_image(f"{mem}/a.png", max_pixels=100)
    seen = []

    def refuse(size):
        seen.append(size)
        raise ImageReadError("too big")

    with pytest.raises(ImageReadError, match="too big"):
        store.read_bytes(f"{mem}/a.png", check_size=refuse)
    assert len(seen) == 1  # refused on the size alone
    store.write_bytes(f"{mem}/s.json", b"{}" + b" " * 100, overwrite=False)
    with pytest.raises(StatsFileError, match="over the 64 bytes limit"):
        statsfile.load(f"{mem}/s.json", max_bytes=64)


def test_errors_are_one_line_naming_the_url(mem):
    with pytest.raises(ImageReadError, match=rf"^{mem}/nope\.png: no such object$"):
        imageio.read_image(f"{mem}/nope.png")
    store.write_bytes(f"{mem}/d/a.png", b"x", overwrite=False)
    with pytest.raises(ImageReadError, match="is a directory"):
        imageio.read_image(f"{mem}/d")
    with pytest.raises(IndexMapError, match=r"m\.npz: no such object"):
        indexmap.load(f"{mem}/m.npz")
    with pytest.raises(store.MissingExtra, match=r"zzz://"):
        imageio.read_image("zzz://b/x.png")


def test_missing_extra_names_what_to_install(monkeypatch):
    real = fsspec.core.url_to_fs

    def no_package(url, **kw):
        if url.startswith(("s3://", "gs://")):
            raise ImportError("Install s3fs to access S3")
        return real(url, **kw)

    monkeypatch.setattr(fsspec.core, "url_to_fs", no_package)
    with pytest.raises(store.MissingExtra) as info:
        imageio.read_image("s3://b/x.png")
    assert str(info.value) == ("s3://b/x.png: reading s3:// URLs needs the s3 extra: "
                               "pip install 'poolcli[s3]'")
    with pytest.raises(store.MissingExtra, match=r"poolcli\[gcs\]"):
        store.write_bytes("gs://b/x.png", b"", overwrite=False)


def test_side_files_round_trip(mem):
    meta = indexmap.build_meta(operator="max", params={"kernel": (2, 2)}, input_shape=(4, 4, 1),
                               input_dtype="uint8", output_shape=(2, 2, 1), source="a.png")
    indexmap.save(f"{mem}/a.indices.npz", np.zeros((2, 2, 1), np.int64), meta)
    assert indexmap.load(f"{mem}/a.indices.npz").indices.shape == (2, 2, 1)
    record = {"channels": ["L"], "images": 1, "count": 4, "num_batches_tracked": 1,
              **{k: [1.0] for k in statsfile.VECTORS}}
    statsfile.save(f"{mem}/s.json", record, overwrite=False)
    assert statsfile.load(f"{mem}/s.json")["mean"] == [1.0]
    with pytest.raises(ImageWriteError, match="exists"):
        statsfile.save(f"{mem}/s.json", {**record, "images": 2}, overwrite=False)


def test_listing_and_globs_like_local_directories(mem):
    for name in ("b.png", "a.png", "notes.txt", ".hidden.png", "sub/c.png"):
        store.write_bytes(f"{mem}/in/{name}", b"x", overwrite=False)
    assert store.list_files(f"{mem}/in", False) == [
        (f"{mem}/in/a.png", ""), (f"{mem}/in/b.png", ""), (f"{mem}/in/notes.txt", "")]
    assert store.list_files(f"{mem}/in/", True)[-1] == (f"{mem}/in/sub/c.png", "sub")
    assert store.glob_urls(f"{mem}/in/*.png") == [(f"{mem}/in/a.png", False),
                                                 (f"{mem}/in/b.png", False)]
    assert (f"{mem}/in/sub", True) in store.glob_urls(f"{mem}/in/*")


def test_plan_names_outputs_under_a_url_prefix_and_checks_them(mem):
    for name in ("a.png", "b.png", "notes.txt"):
        store.write_bytes(f"{mem}/in/{name}", b"x", overwrite=False)
    plan = make_plan([f"{mem}/in"], op_label="max", output=f"{mem}/out")
    assert [(j.source, j.output) for j in plan.jobs] == [
        (f"{mem}/in/a.png", f"{mem}/out/a_max.png"), (f"{mem}/in/b.png", f"{mem}/out/b_max.png")]
    assert plan.unsupported == 1
    beside = make_plan([f"{mem}/in/a.png"], op_label="max", template="{parent}-{stem}{ext}")
    assert beside.jobs[0].output == f"{mem}/in/in-a.png"
    store.write_bytes(f"{mem}/out/a_max.png", b"x", overwrite=False)
    with pytest.raises(Exception, match=r"out/a_max\.png exists; use --force"):
        make_plan([f"{mem}/in"], op_label="max", output=f"{mem}/out")
    skip = make_plan([f"{mem}/in"], op_label="max", output=f"{mem}/out", existing="skip")
    assert [bool(j.skip) for j in skip.jobs] == [True, False]
    with pytest.raises(Exception, match="would overwrite an input"):  # another spelling
        make_plan([f"{mem}/in/a.png"], op_label="max", output=f"memory:///{mem[9:]}/in/a.png")


def test_plan_leaves_out_poolcli_outputs_found_under_a_prefix(mem):
    imageio.write_image(f"{mem}/in/a.png", image())
    imageio.write_image(f"{mem}/in/a_max.png", image(), provenance={"command": "pool",
                                                                    "op": "max", "params": {}})
    plan = make_plan([f"{mem}/in"], op_label="max", output=f"{mem}/out", include_outputs=False)
    assert [j.source for j in plan.jobs] == [f"{mem}/in/a.png"] and plan.own_outputs == 1


def test_file_urls_are_local_files(tmp_path):
    a = image()
    url = f"file://{tmp_path}/new/a.png"
    imageio.write_image(url, a)  # the local atomic write, parents made
    assert (imageio.read_image(str(tmp_path / "new" / "a.png")).array == a).all()
    with pytest.raises(ImageWriteError, match="exists"):
        imageio.write_image(url, a[::-1])
    assert store.canonical(url) == os.path.realpath(tmp_path / "new" / "a.png")


# ---- no fsspec for local paths ------------------------------------------------------------------


def test_a_local_run_imports_no_fsspec(tmp_path):
    """The fast path: pooling local files imports neither fsspec, nor s3fs, nor dask
    (``-X importtime`` lists every module imported, on stderr; poolcli ends with os._exit)."""
    r = subprocess.run([sys.executable, "-X", "importtime", *POOLCLI[1:], "pool",
                        str(SAMPLES / "camera.png"), "-o", str(tmp_path / "out"), "-q"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0]
                for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "poolcli" in imported and "numpy" in imported
    assert not imported & {"fsspec", "s3fs", "gcsfs", "botocore", "aiobotocore", "dask",
                           "distributed"}
    assert (tmp_path / "out" / "camera_max.png").exists()


# ---- a real S3 API -----------------------------------------------------------------------------


class S3:
    """moto's S3 server on 127.0.0.1: ``env`` for poolcli processes, ``fs`` for the test."""

    def __init__(self, port: int):
        import s3fs

        self.endpoint = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_ENDPOINT_URL": self.endpoint, "NO_PROXY": "127.0.0.1,localhost",
                    "no_proxy": "127.0.0.1,localhost"}
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            self.env.pop(name, None)
        self.fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=self.endpoint,
                                    client_kwargs={"region_name": "us-east-1"},
                                    skip_instance_cache=True, use_listings_cache=False)
        self.bucket = "poolcli-test"
        self.fs.call_s3("create_bucket", Bucket=self.bucket)
        self._ids = itertools.count()

    def prefix(self) -> str:
        """A fresh ``s3://bucket/tN-<random>`` for one test: unique even across modules that
        each import the fixture (moto's servers in one process share one store)."""
        return f"s3://{self.bucket}/t{next(self._ids)}-{uuid.uuid4().hex[:8]}"

    def put(self, url: str, data: bytes) -> None:
        self.fs.pipe_file(url, data)

    def cat(self, url: str) -> bytes:
        return self.fs.cat_file(url)

    def ls(self, url: str) -> list[str]:
        return sorted("s3://" + p for p in self.fs.find(url))


@pytest.fixture(scope="session")
def s3():
    """A real S3 API (moto's server) on a free port of 127.0.0.1, stopped after the tests."""
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'poolcli[s3]')")
    server_mod = pytest.importorskip("moto.server",
                                     reason="moto's server is not installed "
                                            "(pip install 'moto[server]')")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield S3(server.get_host_and_port()[1])
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3_env(s3, monkeypatch):
    """This process talks to the S3 server through the standard variables, like poolcli."""
    for key, value in s3.env.items():
        if key.startswith(("AWS_", "NO_PROXY", "no_proxy")):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    fsspec.filesystem("s3").clear_instance_cache()
    yield s3
    fsspec.filesystem("s3").clear_instance_cache()


def test_s3_put_is_conditional_at_the_store(s3_env, monkeypatch):
    """No check from poolcli: the store refuses (If-None-Match: *), so an object created after
    the plan looked (here: before the write, with exists() made to lie) is never replaced."""
    import s3fs

    url = f"{s3_env.prefix()}/x.png"
    s3_env.put(url, b"theirs")
    monkeypatch.setattr(s3fs.S3FileSystem, "exists", lambda *a, **k: False)
    monkeypatch.setattr(s3fs.S3FileSystem, "_exists", None)
    with pytest.raises(ImageWriteError, match=r"x\.png: exists \(use --force to replace\)"):
        store.write_bytes(url, b"ours", overwrite=False)
    assert s3_env.cat(url) == b"theirs"
    store.write_bytes(url, b"ours", overwrite=True)
    assert s3_env.cat(url) == b"ours"


def _put_counter(monkeypatch):
    """The keys of the PUT requests s3fs sends from now on (a pass-through spy where s3fs calls
    the S3 API; the requests still go to the real server)."""
    import s3fs

    puts = []
    real = s3fs.S3FileSystem._call_s3

    async def counting(self, method, *args, **kwargs):
        if method == "put_object":
            puts.append(kwargs.get("Key"))
        return await real(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counting)
    return puts


@pytest.mark.parametrize("protocol", ["conditional put", "check then put"])
def test_s3_a_retried_write_of_the_same_bytes_is_committed_other_bytes_are_not(
        s3_env, monkeypatch, protocol):
    """Inside retried_commits() (every Dask task) an existing object with our very bytes is
    our output, committed by a first attempt whose worker died; anything else is "exists".
    Both protocols: S3's If-None-Match put, and the check a store without one gets."""
    if protocol == "check then put":
        monkeypatch.setattr(store, "CONDITIONAL", store.CONDITIONAL - {"s3"})
    url = f"{s3_env.prefix()}/x.indices.npz"
    store.write_bytes(url, b"first attempt", overwrite=False)  # the attempt that died
    puts = _put_counter(monkeypatch)
    with pytest.raises(ImageWriteError, match=r"x\.indices\.npz: exists \(use --force"):
        store.write_bytes(url, b"first attempt", overwrite=False)  # no retry: a local run
    committed = []
    with retried_commits():
        store.write_bytes(url, b"first attempt", overwrite=False, on_commit=committed.append)
        assert committed == [url]
        for other in (b"first attempT", b"another run's output"):  # same size, or not
            with pytest.raises(ImageWriteError, match=r"exists \(use --force to replace\)$"):
                store.write_bytes(url, other, overwrite=False, on_commit=committed.append)
    assert committed == [url]
    assert s3_env.cat(url) == b"first attempt"
    if protocol == "check then put":
        assert puts == []  # found by the check: never sent
    else:
        assert len(puts) == 4  # every try asked the store, which refused each


def test_s3_unreachable_endpoint_is_one_line_in_bounded_time(s3_env, monkeypatch):
    import time

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    fsspec.filesystem("s3").clear_instance_cache()
    start = time.monotonic()
    with pytest.raises(ImageReadError, match=r"^s3://b/x\.png: cannot reach the store"):
        imageio.read_image("s3://b/x.png")
    assert time.monotonic() - start < 10
