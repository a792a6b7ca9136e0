"""PNG encoding: time against file size for each ``--compress-level``, beside Pillow.

Usage::

    python benchmarks/bench_png.py             # sample photos + a 1024x1024 photo, 5 runs
    python benchmarks/bench_png.py --runs 9

For every image: the median encode time and the file size of
``poolcli.imageio.png.encode_png`` at levels 0-9, and of Pillow's encoder (zlib, adaptive
filters) at levels 1 and 6 (6 is Pillow's and zlib's default). The chosen default
(``DEFAULT_PNG_COMPRESS_LEVEL``) is marked. Encoding only: no file is written, so disk speed does
not enter. Times are from a shared, noisy machine: compare the columns within one run.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from poolcli.imageio import DEFAULT_PNG_COMPRESS_LEVEL, read_image  # noqa: E402
from poolcli.imageio.png import encode_png  # noqa: E402


def median_ms(fn, runs: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(runs):
        t = time.perf_counter()
        size = len(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, size


def pillow(array: np.ndarray, level: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(
        buf, format="PNG", compress_level=level)
    return buf.getvalue()


def images():
    samples = ROOT / "sample_images"
    for name in ("astronaut.png", "coffee.png", "camera.png", "coffee16.png"):
        yield name, read_image(samples / name).array
    big = read_image(samples / "astronaut.png").array
    yield "astronaut 2x (1024x1024, nearest)", big.repeat(2, 0).repeat(2, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    print(f"median of {args.runs} encodes; size in KiB; * = poolcli's default level")
    print(f"{'image':<36} {'encoder':<16} {'ms':>8} {'KiB':>8} {'vs Pillow 1':>12}")
    for name, array in images():
        label = f"{name} {array.shape[1]}x{array.shape[0]}x{array.shape[2]} {array.dtype}"
        ref_ms, ref_size = (median_ms(lambda: pillow(array, 1), args.runs)
                            if array.dtype == np.uint8 else (None, None))
        rows = []
        for level in range(10):
            ms, size = median_ms(lambda: encode_png(array, level), args.runs)
            mark = "*" if level == DEFAULT_PNG_COMPRESS_LEVEL else " "
            rows.append((f"poolcli {level}{mark}", ms, size))
        if ref_ms is not None:
            rows.append(("Pillow 1", ref_ms, ref_size))
            rows.append(("Pillow 6", *median_ms(lambda: pillow(array, 6), args.runs)))
        for encoder, ms, size in rows:
            versus = "" if ref_ms is None else f"{ms / ref_ms:5.2f}x {size / ref_size:5.2f}s"
            print(f"{label:<36} {encoder:<16} {ms:8.1f} {size / 1024:8.0f} {versus:>12}")
            label = ""
    print("vs Pillow 1: time ratio, then size ratio (s), against Pillow's level 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
