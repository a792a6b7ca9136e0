"""A file-level fuzzer: hostile variants of every kind of file poolcli reads, through the CLI.

Valid seeds are made here (PNG 8/16-bit grey, RGB, RGBA and palette; TIFF striped, tiled,
compressed and multi-page; NPY; index maps written by ``pool --save-indices``; statistics
written by ``norm --op batch --fit --save-stats``; pipeline TOML and JSON; ``--from-list``
files). Hypothesis mutates them: bit flips, truncation, byte insertion, deletion and overwrites,
and edits that know the format (PNG chunk lengths, duplicated, dropped or swapped chunks, IHDR
fields and re-filtered IDAT data with the CRCs fixed so the edit gets past the checksum; TIFF
IFD entries, types, counts and offsets; NPY header dictionaries; index-map and statistics
fields; pipeline stages; list lines). Each variant goes to every command that reads that kind
of file (stats, pool, norm incl. batch fit and inference, unpool as image and --indices, chain
incl. --pipeline, compare), in this process through click's CliRunner with
``catch_exceptions=False`` (a traceback fails the test), and a few as real processes.

Every run must end with exit status 0, 1 or 2; stderr holds only ``poolcli:`` lines (or, for a
usage error, click's usage block with one ``Error:`` line), no internal error, and nothing a
real process would add: Python warnings and log records (logging's last-resort handler is
let through to the captured stderr); inputs are byte-identical after it; no ``.part`` file is
left anywhere; a failed run leaves no output for the hostile file (compare keeps its sheet with
a placeholder tile when an operator fails on an image it could read), and every output of a
successful run reads back. Sizes stay bounded: runs use ``--max-pixels 65536`` and the address
space is capped at 2 GiB above the test process's own, so a crafted header that makes a decoder
allocate for a 40000x40000 image (or a billion channels) shows up as an error line about
memory, which fails the test. Each example also has a 30 s alarm.

Crashes already found have a deterministic ``xfail(strict=True)`` test at the end of the file;
the fuzzer recognizes them (``KNOWN_CRASHES``, ``KNOWN_WARNINGS``) and rejects those examples,
so it keeps looking for new ones.

Examples per test scale with the hypothesis profile of ``tests/conftest.py``: the default
``ci`` profile keeps the file under a minute, ``HYPOTHESIS_PROFILE=long`` runs 50 times more.

The crash tests at the end started as ``xfail(strict=True)`` findings; each is fixed and is a
plain regression test now.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import json
import logging
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st
from PIL import Image

from poolcli.cli import main
from poolcli.imageio import read_image, write_image

MAX_PIXELS = "65536"
HEADROOM = 2 << 30  # address space allowed above the test process's own
ALARM = 30  # seconds per example


def examples(n: int) -> int:
    """``n`` examples under the default profile (100 examples), scaled with the loaded one."""
    return max(5, round(n * settings.default.max_examples / 100))


def fuzz(n: int):
    return settings(max_examples=examples(n), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# ================================================================================== the seeds


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk of a well-formed PNG."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        out.append((kind, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


def _png_build(chunks) -> bytes:
    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, body in chunks:
        out.append(struct.pack(">I", len(body)) + kind + body
                   + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    return b"".join(out)


def _make_images(d, rng) -> dict[str, str]:
    """Valid images of every kind; name -> path."""
    import tifffile

    rgb = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (10, 12), dtype=np.uint8)
    out = {}

    def path(name):
        out[name] = str(d / name)
        return out[name]

    Image.fromarray(grey).save(path("grey8.png"))
    Image.fromarray(rgb).save(path("rgb8.png"))
    Image.fromarray(np.dstack([rgb, grey]), "RGBA").save(path("rgba8.png"))
    Image.fromarray(rgb).quantize(colors=16).save(path("palette.png"))
    write_image(path("grey16.png"), rng.integers(0, 65536, (10, 12), dtype=np.uint16))
    write_image(path("rgb16.png"), rng.integers(0, 65536, (10, 12, 3), dtype=np.uint16))
    tifffile.imwrite(path("striped.tif"), rgb, photometric="rgb", rowsperstrip=3)
    tifffile.imwrite(path("striped-zlib.tif"), grey, photometric="minisblack",
                     rowsperstrip=4, compression="zlib")
    tifffile.imwrite(path("tiled.tif"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                     photometric="rgb", tile=(16, 16))
    tifffile.imwrite(path("multipage.tif"), rng.integers(0, 65536, (2, 10, 12), dtype=np.uint16),
                     photometric="minisblack")
    np.save(path("rgb8.npy"), rgb)
    np.save(path("float32.npy"), rng.normal(size=(10, 12)).astype(np.float32))
    return out


def _run(*args) -> None:
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, (args, res.output)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Seeds, and what the commands need beside them: for each image its pooled version and
    index map (unpool), and batch-norm statistics fitted on it (norm --stats)."""
    d = tmp_path_factory.mktemp("seeds")
    rng = np.random.default_rng(11)
    images = _make_images(d, rng)
    side = {}
    for name, path in images.items():
        ext = os.path.splitext(name)[1]
        stem = name.replace(".", "-")
        pooled = str(d / f"{stem}.pooled{ext}")
        _run("pool", "-q", "-j", "1", path, "-o", pooled, "--save-indices")
        stats = str(d / f"{stem}.stats.json")
        _run("norm", "-q", "-j", "1", "--op", "batch", "--fit", "--save-stats", stats, path,
             "-o", d / "fit-out", "--force")
        side[name] = {"pooled": pooled, "indices": str(d / f"{stem}.pooled.indices.npz"),
                      "stats": stats}
    maps = [side[n]["indices"] for n in images]
    _run("pool", "-q", "-j", "1", "--op", "max", "-k", "3", "-s", "2", "-p", "1", "--ceil-mode",
         images["rgb8.png"], "-o", d / "k3.png", "--save-indices")
    maps.append(str(d / "k3.indices.npz"))
    stats_files = [side[n]["stats"] for n in images]
    _run("norm", "-q", "-j", "1", "--op", "batch", "--fit", "--cumulative", "--batch-size", "2",
         "--save-stats", d / "three.stats.json", images["rgb8.png"], images["striped.tif"],
         images["rgb8.npy"], "-o", d / "fit-out", "--force")
    stats_files.append(str(d / "three.stats.json"))
    pipelines = {
        "pipe.toml": ('[[stage]]\ncommand = "pool"\nop = "max"\nkernel = "3x3"\nstride = 2\n'
                      'save-indices = true\n\n[[stage]]\ncommand = "norm"\nop = "instance"\n\n'
                      '[[stage]]\ncommand = "unpool"\n'),
        "pipe.json": json.dumps({"stage": [
            {"command": "pool", "op": "sort", "kernel": 2, "weights": [0.5, 0.3, 0.2]},
            {"command": "norm", "op": "group", "groups": 1, "eps": 1e-3},
            {"command": "pool", "op": "adaptive-avg", "output-size": "2x3"}]}),
        "pipe-list.json": json.dumps([{"command": "pool", "op": "lp", "norm-type": 2},
                                      {"command": "unpool", "accumulate": True}]),
    }
    for name, text in pipelines.items():
        (d / name).write_text(text)
    return Corpus(dir=d, images=images, side=side, maps=maps, stats=stats_files,
                  pipelines={n: str(d / n) for n in pipelines})


class Corpus(dict):
    def __repr__(self):  # hypothesis prints the arguments of a failing example
        return "<the seed corpus>"


# ============================================================================== the mutations

INTERESTING = [0, 1, 2, 3, 7, 8, 15, 16, 255, 256, 65535, 65536, 40000, 0x7FFFFFFF, 0x80000000,
               0xFFFFFFFF]


def _flip(data: bytearray, draw) -> None:
    if data:
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] ^= 1 << draw(st.integers(0, 7))


def _truncate(data: bytearray, draw) -> None:
    del data[draw(st.integers(0, len(data))):]


def _insert(data: bytearray, draw) -> None:
    pos = draw(st.integers(0, len(data)))
    data[pos:pos] = draw(st.binary(min_size=1, max_size=16))


def _delete(data: bytearray, draw) -> None:
    if data:
        pos = draw(st.integers(0, len(data) - 1))
        del data[pos:pos + draw(st.integers(1, 16))]


def _overwrite(data: bytearray, draw) -> None:
    """An interesting 1/2/4-byte integer, either byte order, somewhere."""
    if len(data) < 4:
        return
    size = draw(st.sampled_from([1, 2, 4]))
    pos = draw(st.integers(0, len(data) - size))
    value = draw(st.sampled_from(INTERESTING)) & ((1 << (8 * size)) - 1)
    data[pos:pos + size] = value.to_bytes(size, draw(st.sampled_from(["little", "big"])))


def _duplicate(data: bytearray, draw) -> None:
    if data:
        start = draw(st.integers(0, len(data) - 1))
        piece = data[start:start + draw(st.integers(1, 64))]
        pos = draw(st.integers(0, len(data)))
        data[pos:pos] = piece


GENERIC = [_flip, _truncate, _insert, _delete, _overwrite, _duplicate]


def generic(draw, data: bytes, most: int = 3) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, most))):
        draw(st.sampled_from(GENERIC))(out, draw)
    return bytes(out)


def _png_structured(draw, data: bytes) -> bytes:
    chunks = _png_chunks(data)
    kind = draw(st.sampled_from(["length", "dup", "drop", "swap", "ihdr", "idat", "plte",
                                 "inside"]))
    if kind == "length":  # a chunk's length field lies (CRCs left as they are)
        out = bytearray(_png_build(chunks))
        i = draw(st.integers(0, len(chunks) - 1))
        pos = 8 + sum(12 + len(b) for _, b in chunks[:i])
        length = len(chunks[i][1])
        value = draw(st.sampled_from([0, 1, length - 1, length + 1, length + 4, 0x7FFFFFFF,
                                      0xFFFFFFFF, 40000]))
        out[pos:pos + 4] = struct.pack(">I", max(0, value))
        return bytes(out)
    if kind == "dup":
        i = draw(st.integers(0, len(chunks) - 1))
        chunks.insert(draw(st.integers(0, len(chunks))), chunks[i])
    elif kind == "drop":
        del chunks[draw(st.integers(0, len(chunks) - 1))]
    elif kind == "swap":
        i, j = (draw(st.integers(0, len(chunks) - 1)) for _ in range(2))
        chunks[i], chunks[j] = chunks[j], chunks[i]
    elif kind == "ihdr":  # a header field, CRC fixed so the edit is believed
        body = bytearray(chunks[0][1])
        field = draw(st.sampled_from(["width", "height", "depth", "colour", "compression",
                                      "filter", "interlace"]))
        if field in ("width", "height"):
            pos = 0 if field == "width" else 4
            body[pos:pos + 4] = struct.pack(">I", draw(st.sampled_from(
                [0, 1, 2, 11, 13, 255, 40000, 65535, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])))
        else:
            pos = {"depth": 8, "colour": 9, "compression": 10, "filter": 11, "interlace": 12}
            body[pos[field]] = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 255]))
        chunks[0] = (b"IHDR", bytes(body))
    elif kind == "idat":  # the scanlines themselves (filter bytes too), recompressed
        idat = [i for i, (k, _) in enumerate(chunks) if k == b"IDAT"]
        raw = bytearray(zlib.decompress(b"".join(chunks[i][1] for i in idat)))
        raw = bytearray(generic(draw, bytes(raw), 4))
        chunks = [c for c in chunks if c[0] != b"IDAT"]
        chunks.insert(idat[0], (b"IDAT", zlib.compress(bytes(raw))))
    elif kind == "plte":
        plte = [i for i, (k, _) in enumerate(chunks) if k == b"PLTE"]
        i = plte[0] if plte else 1
        body = chunks[i][1] if plte else b""
        body = draw(st.sampled_from([body[:3], body[:-1], body + b"\x00" * 3, b"", body * 30]))
        if plte:
            chunks[i] = (b"PLTE", body)
        else:
            chunks.insert(i, (b"PLTE", body))
    else:  # bytes inside a chunk, CRC fixed
        i = draw(st.integers(0, len(chunks) - 1))
        chunks[i] = (chunks[i][0], generic(draw, chunks[i][1], 2))
    return _png_build(chunks)


def _tiff_entries(data: bytes):
    """(byte order, [(offset of entry, tag, type, count)]) of every IFD of a classic TIFF."""
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    entries, seen = [], set()
    while 0 < ifd < len(data) - 2 and ifd not in seen:
        seen.add(ifd)
        (n,) = struct.unpack(order + "H", data[ifd:ifd + 2])
        for k in range(n):
            pos = ifd + 2 + 12 * k
            tag, typ, count = struct.unpack(order + "HHI", data[pos:pos + 8])
            entries.append((pos, tag, typ, count))
        end = ifd + 2 + 12 * n
        (ifd,) = struct.unpack(order + "I", data[end:end + 4])
    return order, entries


def _tiff_structured(draw, data: bytes) -> bytes:
    order, entries = _tiff_entries(data)
    out = bytearray(data)
    kind = draw(st.sampled_from(["value", "value", "type", "count", "loop", "first-ifd"]))
    pos, tag, typ, count = draw(st.sampled_from(entries))
    if kind == "value":  # ImageWidth, BitsPerSample, StripOffsets, TileWidth... any entry
        value = draw(st.sampled_from(INTERESTING))
        if typ == 3:
            out[pos + 8:pos + 10] = struct.pack(order + "H", value & 0xFFFF)
        else:
            out[pos + 8:pos + 12] = struct.pack(order + "I", value)
    elif kind == "type":
        out[pos + 2:pos + 4] = struct.pack(order + "H", draw(st.integers(0, 20)))
    elif kind == "count":
        out[pos + 4:pos + 8] = struct.pack(order + "I", draw(st.sampled_from(INTERESTING)))
    elif kind == "loop":  # the next-IFD offset points back at the first IFD
        (first,) = struct.unpack(order + "I", data[4:8])
        (n,) = struct.unpack(order + "H", data[first:first + 2])
        end = first + 2 + 12 * n
        out[end:end + 4] = struct.pack(order + "I", first)
    else:
        out[4:8] = struct.pack(order + "I", draw(st.sampled_from(INTERESTING)))
    return bytes(out)


def _npy_structured(draw, data: bytes) -> bytes:
    version = data[6]
    hl_size = 2 if version == 1 else 4
    start = 8 + hl_size
    (hl,) = struct.unpack("<H" if hl_size == 2 else "<I", data[8:start])
    header = ast.literal_eval(data[start:start + hl].decode("latin1"))
    body = data[start + hl:]
    kind = draw(st.sampled_from(["shape", "descr", "order", "length", "version", "text"]))
    if kind == "shape":
        header["shape"] = draw(st.sampled_from([
            (40000, 40000, 3), (4, 4, 10**9), (10, 12, 65536), (10**12,), (), (0, 12), (-1, 12),
            (10, 12, 3, 2), (12, 10), (10, 12, 1), (3, 3), (2**62, 2**62)]))
    elif kind == "descr":
        header["descr"] = draw(st.sampled_from(["|O", "<c16", ">u2", "|V8", "<M8[s]", "|b1",
                                                "<f2", "|S4", "<U1", "u8", "<i8", "xyz"]))
    elif kind == "order":
        header["fortran_order"] = True
    text = repr(header)
    if kind == "text":
        text = draw(st.sampled_from(["{}", "[1, 2]", "{'descr': '<f8'", "__import__('os')",
                                     text.replace("'", '"'), text * 2, "{" * 500 + "}" * 500]))
    encoded = text.encode("latin1")
    pad = (-(start + len(encoded) + 1)) % 64
    encoded += b" " * pad + b"\n"
    length = len(encoded)
    if kind == "length":
        length = draw(st.sampled_from([0, 1, length - 1, length + 1, 0xFFFF]))
    out = bytearray(data[:8])
    out[6] = draw(st.sampled_from([1, 2, 3, 0, 255])) if kind == "version" else version
    out += struct.pack("<H" if hl_size == 2 else "<I", length & (0xFFFF if hl_size == 2 else
                                                                 0xFFFFFFFF))
    return bytes(out) + encoded + body


JSON_ODD = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1, 2**53, 2**64, -(2**63) - 1, 1e308, -1e308,
                     1e-320, float("nan"), float("inf"), float("-inf"), "", "x", "3x3", "0",
                     "-1", "1e9", [], [1], [1, 2, 3, 4], [0.5] * 3, [[1]], {}, {"a": 1},
                     ["R", "G", "B"], [40000, 40000, 3], [4, 4, 10**9]]),
    st.integers(), st.floats(), st.text(max_size=20),
    st.lists(st.floats(allow_nan=True), max_size=5),
)


DEEP = "\x00deep\x00"


def _json_structured(draw, obj) -> bytes:
    """A field of a JSON object edited, deleted or added, or the whole thing replaced."""
    kind = draw(st.sampled_from(["set", "set", "delete", "add", "nest", "replace"]))
    if isinstance(obj, dict) and obj and kind in ("set", "delete", "nest"):
        key = draw(st.sampled_from(sorted(obj)))
        if kind == "set":
            obj[key] = draw(JSON_ODD)
        elif kind == "delete":
            del obj[key]
        else:  # buried in nested lists (written as text: json.dumps would recurse)
            depth = draw(st.sampled_from([2, 10, 3000]))
            obj[key] = DEEP
            text = json.dumps(obj)
            return text.replace(json.dumps(DEEP), "[" * depth + "1" + "]" * depth).encode()
    elif isinstance(obj, dict) and kind == "add":
        obj[draw(st.sampled_from(["extra", "__proto__", "x" * 300, ""]))] = draw(JSON_ODD)
    else:
        obj = draw(JSON_ODD)
    text = json.dumps(obj) if draw(st.booleans()) else json.dumps(obj, indent=2)
    return text.encode()


@st.composite
def mutated(draw, data: bytes, structured=None):
    """``data`` edited generically, with a format-aware edit, or both."""
    how = draw(st.sampled_from(["generic", "structured", "both"] if structured else ["generic"]))
    if how in ("structured", "both"):
        try:
            data = structured(draw, data)
        except (ValueError, IndexError, struct.error, zlib.error, SyntaxError):
            pass  # the seed was not what the editor expected: generic only
    if how in ("generic", "both"):
        data = generic(draw, data)
    return data


# =============================================================================== the harness


class ExampleTimeout(BaseException):
    """One example ran longer than ALARM seconds (BaseException: nothing may swallow it)."""


def _vm_size() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def bounded():
    """The address space capped at HEADROOM above this process's own, and an alarm."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_size() + HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)

    def timeout(signum, frame):
        raise ExampleTimeout(f"example ran over {ALARM} s")

    old = signal.signal(signal.SIGALRM, timeout)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    signal.alarm(ALARM)
    try:
        yield
    finally:
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, old)


def digests(root) -> dict[str, str]:
    out = {}
    for d, dirs, files in os.walk(root):
        if os.path.basename(d) == "out" or "/out/" in d + "/":
            continue
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


def part_files(root) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files
            if f.endswith(".part")]


def check_stderr(stderr: str, code: int) -> None:
    """Only poolcli's lines (or click's usage block for exit 2); no traceback, no internal
    error, nothing about memory. Lines split at "\\n" only: a file name may hold other line
    breaks (``test_control_characters_in_names_are_escaped``)."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    usage = [line for line in lines if not line.startswith("poolcli:")]
    if usage:  # click's usage block: Usage:, Try ..., a blank line, one Error: line
        assert code == 2, stderr
        assert all(line == "" or line.startswith(("Usage:", "Try ", "Error:", "  "))
                   for line in usage), stderr
        assert sum(line.startswith("Error:") for line in usage) == 1, stderr
    for line in lines:
        assert "internal error" not in line, line
        assert "memory" not in line.lower(), f"a small crafted file ran out of memory: {line}"


@contextlib.contextmanager
def real_logging():
    """Log records as a real process prints them: poolcli configures no logging, so a record of
    WARNING and up reaches logging's last-resort handler, which writes to ``sys.stderr`` at that
    moment (CliRunner's capture, or poolcli's own capture during a decode). pytest's handlers on
    the root logger would swallow them: they are set aside meanwhile."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers = handlers
        root.setLevel(level)


@contextlib.contextmanager
def python_warnings():
    """Python warnings a real process would print (once per place; here every time), collected;
    those poolcli catches itself during a decode never arrive here."""
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield found
    found += [f"warning {w.category.__name__}: {w.message} ({os.path.basename(w.filename)})"
              for w in caught if not known_warning(w)]


#: Crashes already found, each with a deterministic xfail(strict) test below: (exception type,
#: module and function innermost in poolcli on the traceback) -> that test's name. The fuzzer
#: rejects such examples and goes on looking for others.
KNOWN_CRASHES: list = [
    # (exception type, innermost poolcli function, words of the message, file suffix) -> test;
    # fixed so far: AssertionError in pillow_to_array (palette PNG without PLTE), ValueError
    # in statsfile.save (fit over NaN/inf), IndexError in _to_image (TIFF of width 0)
]

#: Error lines already found, by words in them -> the test that shows them.
KNOWN_LINES: list[tuple[str, str]] = []

#: Numpy warnings already found (a real process prints them on stderr), by the poolcli module
#: that raised them -> the test that shows them: signalling NaNs cast to float64.
KNOWN_WARNINGS: dict = {}  # fixed: values.py, sheet.py, batchnorm.py (signalling NaNs)


def known_crash(exc: BaseException) -> bool:
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/poolcli/" in f.filename]
    return bool(frames) and any(
        (type(exc).__name__, frames[-1].name.lstrip("_")) == (kind, where.lstrip("_"))
        and words in str(exc)
        for kind, where, words, _, _ in KNOWN_CRASHES)


def known_line(stderr: str) -> bool:
    """A known crash caught by the per-job boundary ('[internal error IndexError: ...'), or a
    known error line."""
    for line in stderr.split("\n"):
        if any(f"internal error {kind}" in line and words in line and suffix in line
               for kind, _, words, suffix, _ in KNOWN_CRASHES):
            return True
        if any(words in line for words, _ in KNOWN_LINES):
            return True
    return False


def known_warning(w) -> bool:
    return ("/poolcli/" in w.filename and os.path.basename(w.filename) in KNOWN_WARNINGS
            and "invalid value encountered" in str(w.message))


def run_case(work, args, *, hostile_stems=("fuzzed",), operators=()):
    """Run poolcli in this process on files in ``work`` and check the guarantees.

    ``operators``: compare's operators; an image read but failed by one of them still gets its
    sheet (a grey placeholder tile), so then the outputs need only be complete."""
    before = digests(work)
    try:
        with bounded(), real_logging(), python_warnings() as noise:
            res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    except Exception as exc:
        if known_crash(exc):
            reject()  # a known finding, with its own xfail test: keep searching for others
        raise
    if known_line(res.stderr):
        reject()
    assert noise == [], noise
    code = res.exit_code
    event(f"{args[0]}: exit {int(code)}")
    assert code in (0, 1, 2), (code, res.output)
    check_stderr(res.stderr, code)
    assert "Traceback" not in res.stdout
    assert digests(work) == before, "an input changed"
    assert part_files(work) == []
    out = os.path.join(work, "out")
    made = sorted(os.listdir(out)) if os.path.isdir(out) else []
    failed = [line for line in res.stderr.split("\n") if line.startswith("poolcli: error:")]
    if code != 0 and not (operators and failed and all(
            any(f": {op}: " in line for op in operators) for line in failed)):
        hostile = [n for n in made if n.startswith(hostile_stems)]
        assert hostile == [], (made, res.stderr)
    else:  # success, or compare's sheet with a placeholder tile for a failed operator
        for name in made:
            path = os.path.join(out, name)
            if name.endswith((".png", ".tif", ".npy")):
                read_image(path)  # complete and readable
            elif name.endswith(".json"):
                with open(path) as fh:
                    json.load(fh)
    return res


@contextlib.contextmanager
def workdir():
    d = tempfile.mkdtemp(prefix="fuzzfiles-")
    try:
        os.makedirs(os.path.join(d, "out"))
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def place(work, name, data: bytes) -> str:
    path = os.path.join(work, name)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def copy(work, src, name=None) -> str:
    dst = os.path.join(work, name or os.path.basename(src))
    shutil.copyfile(src, dst)
    return dst


# ============================================================================ images, by command

IMAGE_COMMANDS = ["stats", "pool", "norm", "batch-fit", "batch-stats", "unpool", "chain",
                  "compare"]
STRUCTURED = {".png": _png_structured, ".tif": _tiff_structured, ".npy": _npy_structured}


def image_args(command, f, work, side, partner):
    out = os.path.join(work, "out")
    common = ["--max-pixels", MAX_PIXELS]
    if command == "stats":
        return ["stats", "-q", "--json", "-j", "1", f, *common]
    if command == "pool":
        return ["pool", "-q", "-j", "1", f, "-o", out, "--save-indices", "--indices-png",
                *common]
    if command == "norm":
        return ["norm", "-q", "-j", "1", "--op", "instance", f, "-o", out, *common]
    if command == "batch-fit":
        return ["norm", "-q", "-j", "1", "--op", "batch", "--fit", "--batch-size", "2",
                "--save-stats", os.path.join(out, "fit.json"), f, partner, "-o", out, *common]
    if command == "batch-stats":
        return ["norm", "-q", "-j", "1", "--op", "batch", "--stats", copy(work, side["stats"]),
                f, "-o", out, *common]
    if command == "unpool":
        return ["unpool", "-q", "-j", "1", f, "--indices", copy(work, side["indices"]), "-o",
                out, *common]
    if command == "chain":
        return ["chain", "-q", "-j", "1", "-i", f, "-o", out, *common, "pool", "--op", "max",
                "norm", "--op", "instance", "unpool"]
    return ["compare", "-q", f, "--ops", "max,avg,instance", "--tile-size", "32", "-o",
            os.path.join(out, "fuzzed_sheet.png"), *common]


def image_case(corpus, suffixes):
    names = sorted(n for n in corpus["images"] if n.endswith(suffixes))

    @st.composite
    def case(draw):
        name = draw(st.sampled_from(names))
        command = draw(st.sampled_from(IMAGE_COMMANDS))
        side = corpus["side"][name]
        seed = side["pooled"] if command == "unpool" else corpus["images"][name]
        with open(seed, "rb") as fh:
            data = draw(mutated(fh.read(), STRUCTURED[os.path.splitext(name)[1]]))
        return name, command, data

    return case()


def run_image_case(corpus, name, command, data):
    ext = os.path.splitext(name)[1]
    with workdir() as work:
        f = place(work, "fuzzed" + ext, data)
        partner = copy(work, corpus["images"][name], "partner" + ext)
        args = image_args(command, f, work, corpus["side"][name], partner)
        run_case(work, args, operators=("max", "avg", "instance") if command == "compare" else ())


@fuzz(300)
@given(data=st.data())
def test_fuzzed_png(corpus, data):
    run_image_case(corpus, *data.draw(image_case(corpus, (".png",)), label="case"))


@fuzz(200)
@given(data=st.data())
def test_fuzzed_tiff(corpus, data):
    run_image_case(corpus, *data.draw(image_case(corpus, (".tif",)), label="case"))


@fuzz(150)
@given(data=st.data())
def test_fuzzed_npy(corpus, data):
    run_image_case(corpus, *data.draw(image_case(corpus, (".npy",)), label="case"))


# ============================================================================ side files


def _npz_structured(draw, data: bytes) -> bytes:
    """Rebuilt with numpy: the meta JSON's fields or the indices array edited."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    kind = draw(st.sampled_from(["meta", "meta", "indices", "members", "inner-header"]))
    if kind == "meta":
        arrays["meta"] = np.array(_json_structured(draw, json.loads(str(arrays["meta"])))
                                  .decode())
    elif kind == "indices":
        idx = arrays["indices"]
        arrays["indices"] = draw(st.sampled_from([
            idx[:-1], idx.astype(np.float64), idx.astype(np.int8), idx * 1000, -idx, idx[..., :1],
            idx.reshape(-1), np.full_like(idx, 2**62), idx.astype(np.uint64), idx[None],
            np.zeros((0,) + idx.shape[1:], idx.dtype)]))
    elif kind == "members":
        drop = draw(st.sampled_from(sorted(arrays) + ["none"]))
        arrays.pop(drop, None)
        if draw(st.booleans()):
            arrays["extra"] = np.zeros(3)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    out = buffer.getvalue()
    if kind == "inner-header":  # the shape inside a member's .npy header, in place
        pos = out.find(b"'shape': (")
        if pos >= 0:
            end = out.index(b")", pos)
            new = draw(st.sampled_from([b"40000, 40000, 3", b"99999999, 9", b"-1,", b"",
                                        b"4, 4, 1000000000"]))
            fill = new[:end - pos - 10].ljust(end - pos - 10)
            out = out[:pos + 10] + fill + out[end:]
    return out


@st.composite
def index_map_case(draw, corpus):
    path = draw(st.sampled_from(corpus["maps"]))
    with open(path, "rb") as fh:
        data = draw(mutated(fh.read(), _npz_structured))
    accumulate = draw(st.booleans())
    return path, data, accumulate


@fuzz(150)
@given(data=st.data())
def test_fuzzed_index_map(corpus, data):
    """unpool POOLED --indices MAP, the map hostile (the pooled image is the map's own)."""
    by_map = {side["indices"]: side["pooled"] for side in corpus["side"].values()}
    by_map[corpus["maps"][-1]] = str(corpus["dir"] / "k3.png")
    case = data.draw(index_map_case(corpus), label="case")
    path, blob, accumulate = case
    with workdir() as work:
        pooled = copy(work, by_map[path], "pooled" + os.path.splitext(by_map[path])[1])
        f = place(work, "fuzzed.indices.npz", blob)
        args = ["unpool", "-q", "-j", "1", pooled, "--indices", f, "-o",
                os.path.join(work, "out"), "--max-pixels", MAX_PIXELS]
        if accumulate:
            args.append("--accumulate")
        run_case(work, args, hostile_stems=("pooled", "fuzzed"))


def _json_file_structured(draw, data: bytes) -> bytes:
    return _json_structured(draw, json.loads(data))


@st.composite
def stats_case(draw, corpus):
    path = draw(st.sampled_from(corpus["stats"]))
    with open(path, "rb") as fh:
        data = draw(mutated(fh.read(), _json_file_structured))
    return path, data, draw(st.sampled_from(["norm", "chain"])), draw(st.booleans())


@fuzz(150)
@given(data=st.data())
def test_fuzzed_stats_file(corpus, data):
    """norm --op batch --stats FILE and a chain's batch-norm stage, FILE hostile."""
    image_for = {side["stats"]: corpus["images"][name] for name, side in corpus["side"].items()}
    image_for[corpus["stats"][-1]] = corpus["images"]["rgb8.png"]
    case = data.draw(stats_case(corpus), label="case")
    path, blob, command, running = case
    with workdir() as work:
        img = copy(work, image_for[path], "img" + os.path.splitext(image_for[path])[1])
        f = place(work, "fuzzed.json", blob)
        out = os.path.join(work, "out")
        stage = ["--op", "batch", "--stats", f] + (["--running"] if running else [])
        if command == "norm":
            args = ["norm", "-q", "-j", "1", img, "-o", out, "--max-pixels", MAX_PIXELS,
                    *stage]
        else:
            args = ["chain", "-q", "-j", "1", "-i", img, "-o", out, "--max-pixels", MAX_PIXELS,
                    "pool", "-k", "1", "norm", *stage]
        run_case(work, args, hostile_stems=("img", "fuzzed"))


STAGE_KEYS = ["op", "kernel", "stride", "padding", "dilation", "output-size", "weights", "eps",
              "groups", "stats", "save-indices", "accumulate", "ceil-mode", "k", "seed",
              "norm-type", "mode", "gamma", "beta", "help", "version", "--op", "o", "output",
              "json", "from-list", "a b", ""]


@st.composite
def stage_lists(draw):
    stages = []
    for _ in range(draw(st.integers(0, 5))):
        stage = {"command": draw(st.sampled_from(["pool", "norm", "unpool", "chain", "stats",
                                                  "", "POOL", 3]))}
        for key in draw(st.lists(st.sampled_from(STAGE_KEYS), max_size=4, unique=True)):
            stage[key] = draw(JSON_ODD)
        stages.append(stage)
    return stages


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)) and not (isinstance(v, float) and v != v):
        return repr(v) if not isinstance(v, float) or abs(v) != float("inf") else (
            "inf" if v > 0 else "-inf")
    if isinstance(v, list) and all(isinstance(x, (int, float, str)) for x in v):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


@st.composite
def pipeline_case(draw, corpus):
    how = draw(st.sampled_from(["seed", "stages"]))
    if how == "seed":
        name = draw(st.sampled_from(sorted(corpus["pipelines"])))
        with open(corpus["pipelines"][name], "rb") as fh:
            data = fh.read()
        structured = _json_file_structured if name.endswith(".json") else None
        return name, draw(mutated(data, structured))
    stages = draw(stage_lists())
    if draw(st.booleans()):
        return "pipe.json", json.dumps(draw(st.sampled_from([
            {"stage": stages}, {"stages": stages}, stages, {"stage": stages, "x": 1}])))\
            .encode()
    text = ""
    for stage in stages:
        text += "[[stage]]\n" + "".join(f'"{k}" = {_toml_value(v)}\n' for k, v in stage.items())
    return "pipe.toml", text.encode()


@fuzz(150)
@given(data=st.data())
def test_fuzzed_pipeline_file(corpus, data):
    """chain --pipeline FILE (TOML or JSON), FILE hostile; stages run on a good image."""
    case = data.draw(pipeline_case(corpus), label="case")
    name, blob = case
    with workdir() as work:
        img = copy(work, corpus["images"]["rgb8.png"], "img.png")
        copy(work, corpus["side"]["rgb8.png"]["stats"], "stats.json")
        f = place(work, "fuzzed" + os.path.splitext(name)[1], blob)
        args = ["chain", "-q", "-j", "1", "--pipeline", f, "-i", img, "-o",
                os.path.join(work, "out"), "--max-pixels", MAX_PIXELS]
        run_case(work, args, hostile_stems=("img", "fuzzed"))


LIST_LINES = ["img.png", "img2.tif", "./img.png", "missing.png", "sub", "sub/", "*.png",
              "fuzzed.list", "-", "", "   ", "# a comment", "  img.png  ", "img.png\r",
              "x" * 5000, "/dev/null", ".", "img.png\x00", "caf\xe9.png"]


@st.composite
def list_case(draw):
    how = draw(st.sampled_from(["lines", "lines", "bytes"]))
    lines = draw(st.lists(st.sampled_from(LIST_LINES), min_size=0, max_size=6))
    data = "\n".join(lines).encode("utf-8", "surrogateescape")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if how == "bytes":
        data = generic(draw, data or b"img.png\n")
    return data, draw(st.sampled_from(["pool", "stats", "norm"]))


@fuzz(150)
@given(case=list_case())
def test_fuzzed_list_file(case, corpus_dir):
    data, command = case
    with workdir() as work:
        copy(work, os.path.join(corpus_dir, "rgb8.png"), "img.png")
        copy(work, os.path.join(corpus_dir, "striped.tif"), "img2.tif")
        os.makedirs(os.path.join(work, "sub"))
        copy(work, os.path.join(corpus_dir, "grey8.png"), "sub/g.png")
        f = place(work, "fuzzed.list", data)
        out = os.path.join(work, "out")
        if command == "stats":
            args = ["stats", "-q", "--json", "-j", "1", "--from-list", f]
        else:
            args = [command, "-q", "-j", "1", "--from-list", f, "-o", out]
        cwd = os.getcwd()
        os.chdir(work)
        try:
            run_case(work, args + ["--max-pixels", MAX_PIXELS], hostile_stems=("fuzzed",))
        finally:
            os.chdir(cwd)


@pytest.fixture(scope="module")
def corpus_dir(corpus):
    return str(corpus["dir"])


# ============================================================================ real processes


def _hostile_files(corpus) -> dict[str, tuple[str, bytes]]:
    """A few deterministic hostile files: name -> (seed image name, bytes)."""
    images = corpus["images"]
    with open(images["rgb8.png"], "rb") as fh:
        png = fh.read()
    chunks = _png_chunks(png)
    ihdr = bytearray(chunks[0][1])
    ihdr[0:8] = struct.pack(">II", 40000, 40000)
    bomb = _png_build([(b"IHDR", bytes(ihdr))] + chunks[1:])
    raw = bytearray(zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT")))
    raw[0] = 9  # an unknown filter type, CRC fixed
    bad_filter = _png_build([c if c[0] != b"IDAT" else (b"IDAT", zlib.compress(bytes(raw)))
                             for c in chunks])
    with open(images["striped.tif"], "rb") as fh:
        tif = fh.read()
    order, entries = _tiff_entries(tif)
    loop = bytearray(tif)
    (first,) = struct.unpack(order + "I", tif[4:8])
    (n,) = struct.unpack(order + "H", tif[first:first + 2])
    loop[first + 2 + 12 * n:first + 6 + 12 * n] = struct.pack(order + "I", first)
    wide = bytearray(tif)
    for pos, tag, _, _ in entries:
        if tag in (256, 257):  # ImageWidth, ImageLength
            wide[pos + 8:pos + 12] = struct.pack(order + "I", 40000)
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((4, 4, 3), np.uint8))
    npy = buffer.getvalue()
    with open(images["grey8.png"], "rb") as fh:
        grey = _png_chunks(fh.read())
    grey.insert(1, (b"PLTE", bytes(6)))  # not allowed in a grey PNG; libpng ignores it
    return {
        "plte-grey.png": ("grey8.png", _png_build(grey)),
        "bomb.png": ("rgb8.png", bomb),
        "filter.png": ("rgb8.png", bad_filter),
        "loop.tif": ("striped.tif", bytes(loop)),
        "wide.tif": ("striped.tif", bytes(wide)),
        "truncated.tif": ("striped.tif", tif[: len(tif) // 2]),
        "channels.npy": ("rgb8.npy", npy.replace(b"(4, 4, 3)", b"(4, 4, 9)")),
    }


@pytest.mark.parametrize("name", [
    "plte-grey.png", "bomb.png", "filter.png", "loop.tif", "wide.tif", "truncated.tif",
    "channels.npy"])
def test_hostile_files_in_a_real_process(name, corpus, tmp_path):
    """Beside a good image, with two workers: one line naming the hostile file and exit 1, or
    (a TIFF whose IFD chain loops back, a grey PNG with a palette: the image is whole) both
    written and exit 0; decoders' warnings never reach stderr."""
    seed, data = _hostile_files(corpus)[name]
    bad = tmp_path / name
    bad.write_bytes(data)
    ext = os.path.splitext(name)[1]
    good = tmp_path / ("good" + ext)
    shutil.copyfile(corpus["images"][seed], good)
    before = digests(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "poolcli", "pool", "-q", "-j", "2", str(bad), str(good), "-o",
         str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert "Exception ignored" not in res.stderr and "Traceback" not in res.stderr
    assert digests(tmp_path) == before
    assert part_files(tmp_path) == []
    made = sorted(os.listdir(tmp_path / "out"))
    lines = res.stderr.splitlines()
    if name in ("loop.tif", "plte-grey.png"):  # the image is whole: decoded
        assert (res.returncode, lines) == (0, []), res.stderr
        assert made == ["good_max" + ext, name.replace(ext, "_max" + ext)]
        return
    assert res.returncode == 1, res.stderr
    assert len(lines) == 1 and lines[0].startswith(f"poolcli: error: {bad}"), res.stderr
    assert made == ["good_max" + ext]


def test_a_billion_channels_in_an_npy_header_is_refused_before_allocating(tmp_path):
    """(4, 4, 10**9) uint8 passes the pixel guard (16 pixels) but asks for 16 GB; the file holds
    48 bytes. Under a 2 GiB address-space cap the decoder must say the file is short, not that
    memory ran out."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (4, 4, 10**9)})
    (tmp_path / "c.npy").write_bytes(buffer.getvalue() + bytes(48))

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (HEADROOM, HEADROOM))

    res = subprocess.run([sys.executable, "-m", "poolcli", "stats", "-q", str(tmp_path / "c.npy")],
                         capture_output=True, text=True, timeout=120, preexec_fn=cap)
    assert res.returncode == 1
    assert "memory" not in res.stderr, res.stderr
    assert res.stderr.startswith("poolcli: error:") and len(res.stderr.splitlines()) == 1


# ======================================================================== crashes found above


def test_palette_png_without_plte(corpus, tmp_path):
    with open(corpus["images"]["palette.png"], "rb") as fh:
        chunks = [c for c in _png_chunks(fh.read()) if c[0] != b"PLTE"]
    bad = tmp_path / "noplte.png"
    bad.write_bytes(_png_build(chunks))
    res = CliRunner().invoke(main, ["stats", "-q", str(bad)], catch_exceptions=False)
    assert res.exit_code == 1
    assert res.stderr.startswith(f"poolcli: error: {bad}: ")
    assert "internal error" not in res.stderr


@pytest.mark.parametrize("seed", ["multipage.tif", "striped.tif"])
def test_tiff_of_width_zero(seed, corpus, tmp_path):
    with open(corpus["images"][seed], "rb") as fh:
        data = bytearray(fh.read())
    order, entries = _tiff_entries(bytes(data))
    for pos, tag, _, _ in entries[:1]:
        assert tag == 256  # ImageWidth, first entry of the first IFD
        data[pos + 8:pos + 12] = struct.pack(order + "I", 0)
    bad = tmp_path / "w0.tif"
    bad.write_bytes(bytes(data))
    res = CliRunner().invoke(main, ["stats", "-q", str(bad)], catch_exceptions=False)
    assert res.exit_code == 1
    assert res.stderr.startswith(f"poolcli: error: {bad}: ")
    assert "internal error" not in res.stderr


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_batch_fit_over_nan_or_inf_values(bad, tmp_path):
    x = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    x[2, 3] = bad
    np.save(tmp_path / "x.npy", x)
    res = CliRunner().invoke(main, ["norm", "-q", "--op", "batch", "--fit", "--save-stats",
                                    str(tmp_path / "s.json"), str(tmp_path / "x.npy")],
                             catch_exceptions=False)
    assert res.exit_code in (1, 2)
    assert res.stderr.startswith("poolcli: error: ") and len(res.stderr.splitlines()) == 1
    assert not (tmp_path / "s.json").exists()


def signalling_nan_image(path):
    """float32 (6, 8, 3) with one signalling NaN (bits 0x7f800001): any .npy may hold one."""
    x = np.random.default_rng(0).normal(size=(6, 8, 3)).astype(np.float32) * 50 + 100
    x.view(np.uint32)[1, 2, 0] = 0x7F800001
    np.save(path, x)
    return x


def test_signalling_nans_are_quiet_in_pictures():
    """visual's conversions handle NaN on purpose: no 'invalid value encountered in cast'."""
    from poolcli import visual

    x = np.random.default_rng(0).normal(size=(6, 8, 3)).astype(np.float32) * 50 + 100
    signed = x - np.float32(100)
    x.view(np.uint32)[1, 2, 0] = 0x7F800001
    signed.view(np.uint32)[1, 2, 0] = 0x7F800001
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kind, lo, hi in [("linear", 0, 1), ("uint8", 0, 255), ("uint16", 0, 65535)]:
            scale = visual.DisplayScale(kind, lo, hi)
            scale.apply(x)
            scale.clipped_fraction(x)
        rgb, _ = visual.to_rgb8(x)
        visual.to_rgb8(signed)
        visual.to_rgb8(np.dstack([x, x[..., :1]]), channels=("R", "G", "B", "A"))
        visual.abs_diff_picture(x, x[::-1], (6, 8))
        visual.render_halfblocks(rgb, 4)
    assert rgb.dtype == np.uint8


_SNAN = "RuntimeWarning 'invalid value encountered in cast' printed on stderr, from "


@pytest.mark.parametrize("args", [
    pytest.param(["pool", "-q", "IN", "-o", "OUT.png"], id="pool-png"),
    pytest.param(["pool", "-q", "IN", "-o", "OUT.npy", "--indices-png"], id="pool-indices-png"),
    pytest.param(["compare", "-q", "IN", "--ops", "max,avg", "-o", "OUT.png"],
                 id="compare"),
    pytest.param(["norm", "-q", "--op", "batch", "IN", "-o", "OUT.png"],
                 id="norm-batch"),
    pytest.param(["norm", "-q", "IN", "-o", "OUT.png"], id="norm"),
    pytest.param(["stats", "-q", "IN"], id="stats"),
    pytest.param(["chain", "-q", "-i", "IN", "-o", "OUT.png", "pool", "norm", "unpool"],
                 id="chain"),
])
def test_signalling_nans_print_no_warnings(args, tmp_path):
    signalling_nan_image(tmp_path / "snan.npy")
    argv = [str(tmp_path / "snan.npy") if a == "IN" else
            str(tmp_path / a.replace("OUT", "out")) if a.startswith("OUT") else a for a in args]
    res = subprocess.run([sys.executable, "-m", "poolcli", *argv], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode in (0, 1)
    assert all(line.startswith("poolcli:") for line in res.stderr.splitlines()), res.stderr


@pytest.mark.parametrize("kind", ["corrupt-file", "no-match"])
def test_control_characters_in_names_are_escaped(kind, tmp_path):
    """A name with ESC [31m (a colour escape) and a vertical tab: the error line shows them
    escaped, so a file name cannot restyle the terminal or break the one-line message."""
    name = "bad\x1b[31mred\x0bx.png"
    if kind == "corrupt-file":
        (tmp_path / name).write_bytes(b"x")
        arg = str(tmp_path / name)
    else:
        arg = str(tmp_path / ("none\x1b[31m\x0b*.png"))
    res = CliRunner().invoke(main, ["stats", "-q", arg], catch_exceptions=False)
    assert res.exit_code == 1
    assert res.stderr.startswith("poolcli: error: ") and res.stderr.count("\n") == 1
    assert not any(ord(c) < 32 and c != "\n" or ord(c) == 127 for c in res.stderr), \
        repr(res.stderr)


def test_reading_a_small_image_needs_no_gigabytes(corpus):
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (HEADROOM, HEADROOM))

    res = subprocess.run([sys.executable, "-m", "poolcli", "stats", "-q", "--json",
                          corpus["images"]["rgb8.png"]], capture_output=True, text=True,
                         timeout=120, preexec_fn=cap)
    assert (res.returncode, res.stderr) == (0, "")
