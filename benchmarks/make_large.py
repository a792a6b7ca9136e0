"""Huge test images generated band by band, in bounded memory (issue 17's benchmarks).

``make_png(path, width, height)`` writes an 8-bit RGB PNG through poolcli's own band writer
(:func:`poolcli.imageio.stream.open_band_writer`); ``make_tiff(path, width, height)`` writes a
tiled RGB TIFF (BigTIFF past 4 GB) through tifffile, one row of tiles at a time. Neither holds
more than a band of rows: memory stays flat whatever the size (``python
benchmarks/make_large.py`` prints it).

The content is the same for a given size whatever the band height: smooth colour waves (what
pooling keeps), a checker of 8-pixel cells (edges), and uniform noise of a few grey levels (what a
compressor cannot squeeze away and pooling averages out), seeded per block of
:data:`BLOCK_ROWS` rows. The waves come from per-row and per-column tables added together, so a
gigapixel image costs little more than writing it.

    python benchmarks/make_large.py --png 8192 out.png
    python benchmarks/make_large.py --tiff 30000 out.tif [--compression none]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from typing import Iterator

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

BLOCK_ROWS = 256  #: rows generated at a time (and the noise's seeding unit)
TILE = 256  #: TIFF tile side
NOISE = 24  #: noise amplitude, in grey levels


def _waves(n: int, period: float, phase: float) -> np.ndarray:
    return (60 * np.sin(np.arange(n) * (2 * np.pi / period) + phase)).astype(np.int16)


def rows(y0: int, y1: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """Rows ``y0:y1`` (``y0`` a multiple of :data:`BLOCK_ROWS`) of the ``width x height`` image."""
    if y0 % BLOCK_ROWS:
        raise ValueError(f"bands start at multiples of {BLOCK_ROWS}, not {y0}")
    out = np.empty((y1 - y0, width, 3), np.uint8)
    period = max(width, height) / 3
    columns = [_waves(width, period * f, p) for f, p in ((1.0, 0), (0.7, 1), (0.45, 2))]
    lines = [_waves(height, period * f, p)[y0:y1] for f, p in ((0.8, 3), (0.55, 4), (1.3, 5))]
    checker = ((np.arange(width) // 8) % 2).astype(np.int16) * 16
    for b0 in range(0, y1 - y0, BLOCK_ROWS):
        b1 = min(y1 - y0, b0 + BLOCK_ROWS)
        rng = np.random.default_rng([seed, y0 + b0])
        noise = rng.integers(0, NOISE, (b1 - b0, width, 3), dtype=np.uint8)
        for c in range(3):
            base = 100 + columns[c][np.newaxis, :] + lines[c][b0:b1, np.newaxis]
            base += checker[np.newaxis, :] ^ ((np.arange(y0 + b0, y0 + b1) // 8 % 2) * 16)[:, None]
            out[b0:b1, :, c] = base.astype(np.uint8)
        out[b0:b1] += noise
    return out


def make_png(path: str, width: int, height: int, *, seed: int = 0, level: int | None = None,
             overwrite: bool = True) -> str:
    """Write a ``width x height`` 8-bit RGB PNG band by band; returns ``path``."""
    from poolcli.imageio.stream import open_band_writer

    with open_band_writer(path, height=height, width=width, channels=3, dtype=np.uint8,
                          fmt="PNG", overwrite=overwrite, compress_level=level) as writer:
        for y0 in range(0, height, BLOCK_ROWS):
            writer.write_rows(rows(y0, min(height, y0 + BLOCK_ROWS), width, height, seed))
        writer.commit()
    return path


def make_tiff(path: str, width: int, height: int, *, seed: int = 0, tile: int = TILE,
              compression: str | None = "zlib") -> str:
    """Write a ``width x height`` tiled RGB TIFF (``tile x tile``, ``compression`` as tifffile
    names it: ``"zlib"`` level 1, or ``None``); BigTIFF past 4 GB. Returns ``path``."""
    import tifffile

    if tile % 16 or BLOCK_ROWS % tile and tile % BLOCK_ROWS:
        raise ValueError(f"tile {tile}: a multiple of 16 dividing or divisible by {BLOCK_ROWS}")
    options = {}
    if compression:
        options = {"compression": compression, "compressionargs": {"level": 1}}
    big = width * height * 3 > 4_000_000_000
    with tifffile.TiffWriter(path, bigtiff=big) as tif:
        tif.write(_tiles(width, height, tile, seed), shape=(height, width, 3), dtype=np.uint8,
                  tile=(tile, tile), photometric="rgb", metadata=None, **options)
    return path


def _tiles(width: int, height: int, tile: int, seed: int) -> Iterator[np.ndarray]:
    """The tiles in file order (left to right, top to bottom), one row of tiles generated at a
    time; edge tiles are cut (tifffile pads them)."""
    step = max(tile, BLOCK_ROWS)
    for y0 in range(0, height, step):
        band = rows(y0, min(height, y0 + step), width, height, seed)
        for t0 in range(0, len(band), tile):
            for x0 in range(0, width, tile):
                yield band[t0:t0 + tile, x0:x0 + tile]


def peak_rss_mib() -> float:
    """This process's peak resident set so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--png", type=int, metavar="SIDE", help="square PNG of this side")
    kind.add_argument("--tiff", type=int, metavar="SIDE", help="square tiled TIFF of this side")
    parser.add_argument("path")
    parser.add_argument("--compression", default="zlib", help="TIFF: zlib (default) or none")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.png:
        make_png(args.path, args.png, args.png)
    else:
        compression = None if args.compression == "none" else args.compression
        make_tiff(args.path, args.tiff, args.tiff, compression=compression)
    size = os.path.getsize(args.path)
    print(f"{args.path}: {size / 2**20:.0f} MiB in {time.perf_counter() - start:.1f} s, "
          f"peak RSS {peak_rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
