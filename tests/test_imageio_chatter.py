"""Libraries' chatter never reaches the user raw.

imagecodecs' libpng writes ``PNG warning: ...`` lines, tifffile logs warnings through logging's
last-resort handler, Pillow raises ``UserWarning``s, C code may write to descriptor 2. Each file
here (generated, real decoders) makes one of them talk; the real CLI runs on it in a subprocess
(``python -m poolcli pool FILE -q``) and every stderr line must be poolcli's own, while the
chatter shows up as a note on the file's record (``--json``). The capture's own guarantees
(threads, descriptor 2, poolcli's own stderr never lost) are checked in a child process.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from helpers import run_process
from poolcli.imageio import read_image


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(
        ">I", zlib.crc32(ctype + payload))


def rgb_png(chunks=(), width=4, height=3, interlace=0) -> bytes:
    rows = b"".join(b"\0" + bytes(range(i, i + 3 * width)) for i in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + b"".join(png_chunk(t, p) for t, p in chunks)
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))


def tiff_with_next_ifd(next_offset=None) -> bytes:
    """A 4 x 4 TIFF (tifffile) whose first IFD's next-IFD offset is patched (itself: a loop)."""
    import io

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.arange(16, dtype=np.uint8).reshape(4, 4))
    data = bytearray(buf.getvalue())
    ifd = struct.unpack("<I", data[4:8])[0]
    count = struct.unpack("<H", data[ifd:ifd + 2])[0]
    at = ifd + 2 + 12 * count
    data[at:at + 4] = struct.pack("<I", ifd if next_offset is None else next_offset)
    return bytes(data)


def tiff_with_tag(tag: int, typ: int, count: int, value: int) -> bytes:
    """A 4 x 4 TIFF (tifffile) with one more IFD entry, written as given (types, offsets)."""
    import io

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.arange(16, dtype=np.uint8).reshape(4, 4),
                     extratags=[(tag, 3, 1, 1, False)])
    data = bytearray(buf.getvalue())
    at = data.find(struct.pack("<HHI", tag, 3, 1))
    data[at:at + 12] = struct.pack("<HHII", tag, typ, count, value)
    return bytes(data)


def jpeg_with_bad_exif() -> bytes:
    """Its EXIF ImageDescription claims 100 bytes at an offset past the end."""
    import io

    tiff = (b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHII", 0x010E, 2, 100, 1000)
            + struct.pack("<I", 0))
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 99, np.uint8)).save(buf, "JPEG", exif=b"Exif\0\0" + tiff)
    return buf.getvalue()


def png_tiles_with_bad_srgb() -> bytes:
    """A 64 x 64 TIFF of 16 PNG-compressed tiles, each with an invalid sRGB chunk: libpng
    complains from tifffile's decoding threads."""
    import io

    import imagecodecs

    tile = bytearray(imagecodecs.png_encode(np.full((16, 16), 7, np.uint8)))
    tile[33:33] = png_chunk(b"sRGB", b"\x09")  # after the IHDR chunk
    buf = io.BytesIO()
    tifffile.imwrite(buf, iter([bytes(tile)] * 16), shape=(64, 64), dtype=np.uint8,
                     tile=(16, 16), compression="png")
    return buf.getvalue()


CHATTY = {
    # name: (bytes, words the note must hold)
    "iccp_short.png": (lambda: rgb_png([(b"iCCP", b"x\0\0" + zlib.compress(b"tiny"))]),
                       "decoder warning (libpng): iCCP:"),
    "srgb_invalid.png": (lambda: rgb_png([(b"sRGB", b"\x09")]),
                         "decoder warning (libpng): sRGB: invalid"),
    "gama_short.png": (lambda: rgb_png([(b"gAMA", b"\x01")]),
                       "decoder warning (libpng): gAMA: too short"),
    "phys_short.png": (lambda: rgb_png([(b"pHYs", b"\x01")]),
                       "decoder warning (libpng): pHYs: too short"),
    "loop.tif": (tiff_with_next_ifd, "decoder warning (tifffile): invalid circular reference"),
    "far_next.tif": (lambda: tiff_with_next_ifd(10**8),
                     "decoder warning (tifffile): invalid page offset"),
    "bad_type.tif": (lambda: tiff_with_tag(65000, 99, 1, 0),
                     "decoder warning (tifffile): raised TiffFileError('invalid data type 99')"),
    "bad_offset.tif": (lambda: tiff_with_tag(65001, 4, 3, 10**9),
                       "decoder warning (tifffile): raised TiffFileError('invalid value offset"),
    # Pillow 13 says "Tag data larger than file", Pillow 12 (the last for Python 3.10)
    # "Truncated File Read": either way a note, never a raw warning
    "bad_exif.jpg": (jpeg_with_bad_exif, "decoder warning (Pillow): UserWarning: "),
    "png_tiles.tif": (png_tiles_with_bad_srgb, "decoder warning (libpng): sRGB: invalid"),
}


@pytest.mark.parametrize("name", sorted(CHATTY))
def test_library_chatter_becomes_a_note(tmp_path, name):
    make, words = CHATTY[name]
    path = tmp_path / name
    path.write_bytes(make())
    env = dict(os.environ, TIFFFILE_NUM_THREADS="4")  # tiles decoded in tifffile's threads
    quiet = run_process("pool", path, "-q", "-o", tmp_path / "q.png", env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    loud = run_process("pool", path, "--json", "-q", "-o", tmp_path / "j.png", env=env)
    assert loud.returncode == 0 and loud.stderr == "", loud.stderr
    record = json.loads(loud.stdout.splitlines()[0])
    assert any(words in note for note in record["notes"]), record["notes"]
    assert all(line.startswith("decoder warning (") or "decoder warning" not in line
               for line in record["notes"])


def test_interlace_chatter_is_silenced_not_noted(tmp_path):
    """libpng's interlace complaint is about how imagecodecs calls it; the pixels are right."""
    import imagecodecs

    rows = np.arange(9 * 11 * 3, dtype=np.uint8).reshape(9, 11, 3)
    plain = tmp_path / "plain.png"
    plain.write_bytes(imagecodecs.png_encode(rows))
    data = bytearray(plain.read_bytes())
    path = tmp_path / "adam7.png"
    path.write_bytes(_adam7(rows))
    img = read_image(path)
    np.testing.assert_array_equal(img.array, rows)
    assert not any("decoder warning" in n for n in img.notes)
    proc = run_process("pool", path, "-q", "-o", tmp_path / "out.png")
    assert (proc.returncode, proc.stderr) == (0, "")
    del data


def _adam7(rgb: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit RGB PNG of ``rgb`` (filter 0 on every pass line)."""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
              (0, 1, 1, 2)]
    out = []
    for x0, y0, dx, dy in passes:
        sub = rgb[y0::dy, x0::dx]
        if sub.size:
            out.extend(b"\0" + row.tobytes() for row in sub)
    h, w = rgb.shape[:2]
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"".join(out))) + png_chunk(b"IEND", b""))


def test_notes_of_one_file_do_not_repeat_or_flood(tmp_path):
    """Many warnings: one note each, at most three, then a count."""
    chunks = [(b"gAMA", b"\x01"), (b"cHRM", b"\x01"), (b"pHYs", b"\x01"), (b"sRGB", b"\x09"),
              (b"tIME", b"\x01"), (b"oFFs", b"\x01")]
    path = tmp_path / "many.png"
    path.write_bytes(rgb_png(chunks))
    notes = [n for n in read_image(path).notes if "decoder warning" in n]
    assert len(notes) == 4 and notes[-1] == "3 more decoder warnings", notes
    again = [n for n in read_image(path).notes if "decoder warning" in n]
    assert again == notes  # a warning seen before in this process is caught again


def test_warnings_already_shown_once_are_caught_again(tmp_path):
    path = tmp_path / "bad_exif.jpg"
    path.write_bytes(jpeg_with_bad_exif())
    for _ in range(3):
        assert any("decoder warning (Pillow): UserWarning: " in n
                   for n in read_image(path).notes)


# ==================================================================================================
# The capture itself: descriptor 2, other threads, poolcli's own lines
# ==================================================================================================

_CAPTURE_CHILD = textwrap.dedent("""
    import ctypes, json, logging, os, sys, threading, warnings
    from poolcli.imageio._quiet import captured

    libc = ctypes.CDLL(None)
    go, done = threading.Event(), threading.Event()

    def bystander():  # a thread that was running before the decode began
        go.wait()
        sys.stderr.write("bystander: plain text\\n")
        warnings.warn("bystander warning")
        logging.getLogger("tifffile").warning("bystander log record")
        done.set()

    threading.Thread(target=bystander).start()
    with captured() as chatter:
        msg = b"libfoo: written by C to descriptor 2\\n"
        libc.write(2, msg, len(msg))
        os.write(2, b"poolcli: error: own line during the decode\\n")
        sys.stderr.write("PNG warning: through sys.stderr\\n")
        warnings.warn("a decoder's warning")
        worker = threading.Thread(target=lambda: warnings.warn("from a decoding thread"))
        worker.start(); worker.join()
        go.set(); done.wait()
    sys.stderr.write("after: stderr works\\n")
    sys.stderr.flush()
    msg = b"after: descriptor 2 works\\n"
    libc.write(2, msg, len(msg))
    try:
        with captured():
            raise KeyError("boom")
    except KeyError:
        pass
    os.write(2, b"after an error: descriptor 2 restored\\n")
    print(json.dumps({"lines": [f"{o}: {t}" for o, t in chatter.lines()],
                      "notes": chatter.notes()}))
""")


def test_capture_catches_descriptor_2_and_spares_other_threads_and_poolcli():
    proc = subprocess.run([sys.executable, "-c", _CAPTURE_CHILD], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    lines = out["lines"]
    assert "stderr: libfoo: written by C to descriptor 2" in lines
    assert "stderr: PNG warning: through sys.stderr" in lines
    assert any("a decoder's warning" in line for line in lines)
    assert any("from a decoding thread" in line for line in lines)
    assert len(lines) == 4 and not any("bystander" in line for line in lines), lines
    assert "decoder warning (libpng): through sys.stderr" in out["notes"]
    assert len(out["notes"]) == 4 and out["notes"][-1] == "1 more decoder warning"
    err = proc.stderr
    assert "libfoo" not in err and "PNG warning" not in err and "a decoder's warning" not in err
    for kept in ("poolcli: error: own line during the decode", "bystander: plain text",
                 "bystander warning", "bystander log record", "after: stderr works",
                 "after: descriptor 2 works", "after an error: descriptor 2 restored"):
        assert kept in err, (kept, err)


def test_no_pillow_decompression_bomb_warning(tmp_path):
    """9500 x 9500 is past Pillow's warning level but within --max-pixels: poolcli's guard
    replaces Pillow's, so no DecompressionBombWarning (here the data is cut short: one line)."""
    ihdr = struct.pack(">IIBBBBB", 9500, 9500, 8, 3, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"PLTE", bytes(48))
            + png_chunk(b"IDAT", zlib.compress(bytes(1000))) + png_chunk(b"IEND", b""))
    path = tmp_path / "big.png"
    path.write_bytes(data)
    proc = run_process("pool", path, "-q", "-o", tmp_path / "out.png")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"poolcli: error: {path}: truncated or corrupt PNG data"]
