"""Object stores and other fsspec URLs: the one module that knows about ``scheme://`` paths.

Everything else in poolcli keeps its local-file code; where a path may be a URL, the caller asks
:func:`is_url` (a string test, no import) and hands URLs to the functions here. fsspec and the
protocol's package (s3fs, gcsfs, adlfs, ...) are imported on the first URL only, so plain local
runs and ``--help`` never import them.

What holds on a store
---------------------
* **Reads are bounded**: the object's size is asked first and checked by the caller (the bomb
  guard's file-size limit, a side file's cap) before a byte is downloaded; the download itself
  asks for at most that many bytes, so an object that grew meanwhile cannot exceed it.
* **No partial objects**: a result is encoded in memory first and sent in one PUT (one request
  up to 5 GiB on S3), which the store applies whole or not at all. Nothing is streamed.
* **No replacing without --force**: a conditional put where the store has one, checked by the
  store itself at the moment of the write: S3 (``If-None-Match: *``, s3fs ``mode="create"``),
  GCS (``ifGenerationMatch=0``, gcsfs ``mode="create"``), ``memory://`` (exclusive create in
  this process) and ``file://`` (poolcli's local atomic write: a hard link never replaces).
  Other protocols (Azure through adlfs, HTTP, SFTP, ...) get a check then a put: a writer that
  creates the object between the two is replaced. With ``--force`` it is a plain put.
* **A retried task is idempotent**: inside :func:`~poolcli.imageio.files.retried_commits`
  (every Dask task), an existing object holding exactly the bytes being written is this output,
  committed by an earlier try whose worker died: it counts as committed and is not written
  again. Different bytes, or the same bytes outside a retry (a local run), are "exists".
* **Errors are one line** naming the URL (no such bucket or object, access denied, missing
  credentials, endpoint unreachable), in bounded time: S3 requests time out after 5 s to
  connect and 30 s to read, and are tried twice.

Credentials and endpoints come from each library's standard configuration: for S3 the AWS
variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` -- botocore reads the last one itself since 1.31), ``~/.aws``, or an
instance role; for GCS ``GOOGLE_APPLICATION_CREDENTIALS`` or gcloud's login.
"""

from __future__ import annotations

import contextlib
import re
from typing import Callable

from poolcli.errors import ImageReadError, ImageWriteError, PoolcliError, UsageError, one_line

__all__ = ["MissingExtra", "canonical", "exists", "existing", "glob_urls", "is_dir", "is_url",
           "list_files", "local_path", "open_ranged", "read_bytes", "remove", "write_bytes"]

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

#: The poolcli extra that installs each protocol's package.
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
          "abfss": "azure", "adl": "azure"}

#: Protocols whose package refuses an existing object at the moment of the write (see above).
CONDITIONAL = frozenset({"s3", "s3a", "gs", "gcs", "memory"})

# One S3 PUT holds up to 5 GiB; s3fs switches to a multipart upload (without the condition) at
# twice its chunk size, so the chunk size is set to keep every object up to that in one PUT.
_S3_PUT_LIMIT = 5 << 30

# Bounded time against an unreachable or slow endpoint.
_S3_OPTIONS = {"config_kwargs": {"connect_timeout": 5, "read_timeout": 30,
                                 "retries": {"max_attempts": 2, "mode": "standard"}}}

# Provenance is read from the head of an object (and, for WebP, its chunk headers): small blocks.
_RANGED_BLOCK = 64 << 10


class MissingExtra(UsageError):
    """The package for a URL's protocol is not installed (exit 2, before any image is read)."""


def is_url(path: object) -> bool:
    """Whether ``path`` is a ``scheme://`` URL (``file://`` included; ``C://x`` is a drive)."""
    if not isinstance(path, str):
        return False
    match = _URL.match(path)
    return match is not None and len(match.group(1)) > 1


def scheme(url: str) -> str:
    """``"s3"`` for ``s3://bucket/key`` (lower case)."""
    return _URL.match(url).group(1).lower()


def local_path(url: str) -> str | None:
    """The local path of a ``file://`` URL, else ``None``."""
    if scheme(url) != "file":
        return None
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(url).path) or "/"


# ---- the file system of a URL ------------------------------------------------------------------


def _filesystem(url: str, verb: str = "reading"):
    """``(fs, path)`` for ``url``; a missing package is one line saying what to install."""
    proto = scheme(url)
    try:
        import fsspec
        import fsspec.asyn
    except ImportError:
        raise MissingExtra(f"{url}: {verb} {proto}:// URLs needs {_install_hint(proto)}") from None
    _start_io_thread(fsspec.asyn)
    options = _S3_OPTIONS if proto in ("s3", "s3a") else {}
    try:
        return fsspec.core.url_to_fs(url, **options)
    except ImportError:
        raise MissingExtra(f"{url}: {verb} {proto}:// URLs needs {_install_hint(proto)}") from None
    except ValueError as exc:
        if "Protocol not known" in str(exc):
            raise MissingExtra(f"{url}: no fsspec implementation knows {proto}:// URLs") from None
        raise UsageError(f"{url}: {one_line(exc)}") from None


def _install_hint(proto: str) -> str:
    extra = EXTRAS.get(proto)
    if extra:
        return f"the {extra} extra: pip install 'poolcli[{extra}]'"
    return "fsspec and the package for that protocol: pip install fsspec"


_IO_THREAD_PID: int | None = None


def _start_io_thread(asyn) -> None:
    """Start fsspec's I/O thread with SIGINT/SIGTERM blocked, once per process: a signal then
    always reaches the main thread, where :func:`write_bytes` holds it back from a PUT until
    the write is counted (a thread inherits the signal mask of the thread that starts it)."""
    import os

    global _IO_THREAD_PID
    if _IO_THREAD_PID == os.getpid():
        return
    from poolcli.imageio.files import signals_blocked

    with signals_blocked():
        asyn.get_loop()
    _IO_THREAD_PID = os.getpid()


def canonical(url: str) -> str:
    """One spelling of a URL, for comparing outputs with inputs and each other
    (``s3a://b//k`` and ``s3://b/k`` are one object; a ``file://`` URL is its real path)."""
    local = local_path(url)
    if local is not None:
        import os

        return os.path.normcase(os.path.realpath(local))
    fs, path = _filesystem(url)
    return fs.unstrip_protocol(path)


# ---- errors ------------------------------------------------------------------------------------


def _problem(exc: BaseException) -> str:
    """A short phrase for what a store said (no traceback, one line)."""
    text = one_line(exc)
    if isinstance(exc, FileNotFoundError):
        return "no such bucket" if "bucket" in text.lower() else "no such object"
    if isinstance(exc, PermissionError):
        return f"access denied ({text})" if text != "PermissionError" else "access denied"
    if isinstance(exc, FileExistsError):
        return "exists (use --force to replace)"
    name = type(exc).__name__
    if name == "NoCredentialsError":
        return "no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or ~/.aws)"
    if "Connect" in name or "Timeout" in name or isinstance(exc, (ConnectionError, TimeoutError)):
        return f"cannot reach the store ({text})"
    return f"{text} ({name})" if text != name else name


def _failed(url: str, exc: BaseException, error: type[PoolcliError]) -> PoolcliError:
    if isinstance(exc, PoolcliError):
        return exc
    return error(f"{url}: {_problem(exc)}")


# ---- reading -----------------------------------------------------------------------------------


def read_bytes(url: str, *, error: type[PoolcliError] = ImageReadError,
               check_size: Callable[[int], None] | None = None,
               max_bytes: int | None = None) -> bytes:
    """All bytes of the object at ``url``.

    ``check_size(size)`` is called with the object's size before anything is downloaded (it
    raises to refuse) and again with the length received; at most ``max_bytes + 1`` bytes are
    asked for. Problems raise ``error("<url>: ...")``.
    """
    fs, path = _filesystem(url)
    try:
        info = fs.info(path)
        if info.get("type") == "directory":
            raise error(f"{url}: is a directory (a prefix), not an object")
        size = int(info.get("size") or 0)
        if check_size is not None:
            check_size(size)
        if size == 0:
            return b""  # a range request on an empty object is refused by S3
        want = size + 1 if max_bytes is None else min(size, max_bytes) + 1
        data = fs.cat_file(path, start=0, end=want)
    except MemoryError:
        raise error(f"{url}: not enough memory to read the object") from None
    except Exception as exc:
        raise _failed(url, exc, error) from None
    if check_size is not None:
        check_size(len(data))  # it may have grown since
    return data


def open_ranged(url: str):
    """``(file object, size)`` reading the object in small ranged blocks (seekable), or
    ``None`` when it is missing, a prefix or unreadable; for reading a few header bytes."""
    try:
        fs, path = _filesystem(url)
        info = fs.info(path)
        if info.get("type") != "file":
            return None
        size = int(info.get("size") or 0)
        return fs.open(path, "rb", block_size=_RANGED_BLOCK, cache_type="readahead",
                       size=size), size
    except Exception:
        return None


def exists(url: str) -> bool:
    """Whether an object (or a non-empty prefix) is at ``url``; errors raise ImageReadError."""
    fs, path = _filesystem(url)
    try:
        return bool(fs.exists(path))
    except Exception as exc:
        raise _failed(url, exc, ImageReadError) from None


def is_dir(url: str) -> bool:
    """Whether ``url`` is a "directory": a prefix with objects under it (or a bucket)."""
    fs, path = _filesystem(url)
    try:
        return bool(fs.isdir(path))
    except Exception as exc:
        raise _failed(url, exc, ImageReadError) from None


def _child(fs, base_url: str, base_path: str, child: str) -> str:
    """The URL of ``child`` (a path the file system listed under ``base_path``), spelled like
    ``base_url`` (the user's own spelling of ``base_path``)."""
    base_path = base_path.rstrip("/")
    if not base_path or not child.startswith(base_path + "/"):
        return fs.unstrip_protocol(child)
    return base_url.rstrip("/") + "/" + child[len(base_path) + 1:]


def list_files(url: str, recursive: bool) -> list[tuple[str, str]]:
    """``(object URL, sub-directory)`` of the objects under the prefix ``url``, sorted by name;
    with ``recursive`` the whole tree (the sub-directory relative to ``url``), else one level.
    Names starting with ``.`` are left out, as in local directories."""
    fs, path = _filesystem(url)
    try:
        if recursive:
            found = list(fs.find(path, withdirs=False))
        else:
            found = [e["name"] for e in fs.ls(path, detail=True, refresh=True)
                     if e.get("type") == "file"]
    except Exception as exc:
        raise _failed(url, exc, ImageReadError) from None
    out = []
    for child in found:
        child_url = _child(fs, url, path, child)
        rel, _, name = child_url[len(url.rstrip("/")) + 1:].rpartition("/")
        if not name.startswith(".") and child_url.rstrip("/") != url.rstrip("/"):
            out.append((child_url, rel))
    return sorted(out)


def glob_urls(pattern: str, recursive: bool = False) -> list[tuple[str, bool]]:
    """``(URL, is a directory)`` of what ``pattern`` matches (``*``, ``?``, ``[...]``; ``**``
    spans levels only with ``recursive``), sorted. A missing bucket matches nothing."""
    fs, path = _filesystem(pattern)
    magic = min(i for i in (pattern.find(c) for c in "*?[") if i >= 0)
    base_url = pattern[:pattern.rfind("/", 0, magic)]
    base_path = _filesystem(base_url)[1] if base_url.partition("://")[2] else ""
    if not recursive:
        path = path.replace("**", "*")
    try:
        found = fs.glob(path, detail=True)
    except FileNotFoundError:
        return []
    except Exception as exc:
        raise _failed(pattern, exc, ImageReadError) from None
    hidden_ok = pattern.rpartition("/")[2].startswith(".")  # like glob: * skips dot files
    return sorted((_child(fs, base_url, base_path, name), info.get("type") == "directory")
                  for name, info in found.items()
                  if hidden_ok or not name.rpartition("/")[2].startswith("."))


def existing(urls: list[str]) -> set[str]:
    """Which of ``urls`` exist, asking each "directory" for its listing once (not one request
    per object). A missing bucket or prefix holds nothing; other errors raise
    ImageWriteError naming the URL."""
    by_parent: dict[str, list[str]] = {}
    for url in urls:
        by_parent.setdefault(url.rsplit("/", 1)[0], []).append(url)
    found = set()
    for parent, children in by_parent.items():
        fs, path = _filesystem(parent)
        try:
            listed = {fs.unstrip_protocol(p) for p in fs.ls(path, detail=False, refresh=True)}
        except FileNotFoundError:
            continue
        except Exception as exc:
            raise _failed(children[0], exc, ImageWriteError) from None
        found.update(u for u in children if canonical(u) in listed)
    return found


# ---- writing -----------------------------------------------------------------------------------


def write_bytes(url: str, data: bytes, *, overwrite: bool,
                on_commit: Callable[[str], None] | None = None) -> None:
    """Store ``data`` at ``url`` in one request; without ``overwrite`` an existing object is
    never replaced (see the module docstring for how, per protocol). ``on_commit(url)`` is
    called once it is stored, with SIGINT/SIGTERM held back from the PUT to the end of the
    call, so whoever counts outputs never misses a complete one."""
    local = local_path(url)
    if local is not None:
        from poolcli.imageio.files import atomic_write, make_parent_dirs

        make_parent_dirs(local)
        atomic_write(local, lambda fh: fh.write(data), overwrite,
                     None if on_commit is None else lambda _: on_commit(url))
        return
    fs, path = _filesystem(url, "writing")
    proto = scheme(url)
    from poolcli.imageio.files import signals_blocked

    try:
        options = {"chunksize": _S3_PUT_LIMIT // 2} if proto in ("s3", "s3a") else {}
        if not overwrite and proto in CONDITIONAL:
            options["mode"] = "create"
        if not overwrite and (proto not in CONDITIONAL or len(data) >= _S3_PUT_LIMIT):
            _invalidate(fs, path)  # no conditional put: check, never from a stale listing
            if fs.exists(path):
                _committed_before(fs, path, data, url)  # or FileExistsError
                with signals_blocked():
                    if on_commit is not None:
                        on_commit(url)
                return
        with signals_blocked():
            try:
                fs.pipe_file(path, bytes(data), **options)
            except FileExistsError:
                _committed_before(fs, path, data, url)
            if on_commit is not None:
                on_commit(url)
    except Exception as exc:
        raise _failed(url, exc, ImageWriteError) from None


def _committed_before(fs, path: str, data: bytes, url: str) -> None:
    """Return when the existing object at ``path`` is this very output, committed by an
    earlier try of a retried task: inside :func:`~poolcli.imageio.files.retried_commits`
    (every Dask task) and holding exactly ``data``, as for local files. Otherwise it is
    another output: raise FileExistsError ("exists (use --force to replace)")."""
    from poolcli.imageio.files import retrying

    if not retrying() or not _holds(fs, path, data):
        raise FileExistsError(url)


def _invalidate(fs, path: str) -> None:
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)


def _holds(fs, path: str, data: bytes) -> bool:
    """Whether the object holds exactly ``data`` (its size asked first: a different object
    is not downloaded unless it has the same size)."""
    _invalidate(fs, path)
    try:
        return int(fs.info(path).get("size", -1)) == len(data) and fs.cat_file(path) == data
    except Exception:
        return False


def remove(url: str) -> bool:
    """Delete the object at ``url`` (a side file of a job that failed); whether it went."""
    try:
        local = local_path(url)
        if local is not None:
            import os

            os.unlink(local)
            return True
        fs, path = _filesystem(url, "writing")
        fs.rm_file(path)
        return True
    except Exception:
        return False
