"""Peak memory of poolcli on a large legal image: does it stay bounded?

Usage::

    python benchmarks/bench_memory.py               # 8192 x 8192 RGB uint8 PNG (192 MiB decoded)
    python benchmarks/bench_memory.py --size 4096   # quicker
    python benchmarks/bench_memory.py --keep DIR    # keep the generated image in DIR

Generates a photo-like PNG (smooth gradient plus noise, zlib level 1, so it is not trivially
small), then runs each command in a fresh process and reads that process's peak resident set
size (``ru_maxrss`` of ``getrusage(RUSAGE_CHILDREN)`` in a one-shot wrapper process, which
waits for exactly one child). The baseline is the peak RSS of ``python -c "import numpy, PIL"``
(the interpreter and the libraries every command loads). The bound checked is
``peak - baseline < 3 x decoded size``: decoding, the input array, the result and encoding
together may not hold more than three image-sized buffers at once. ``norm`` is reported
without a bound: its float32 result alone is 4x a uint8 input.

Measured on the development machine (8192 x 8192, 192 MiB decoded, baseline 27 MiB), peak RSS
above the baseline / decoded size:

    command                      before   after    with the libdeflate PNG writer (stop 11)
    pool --op max -k 2 (PNG)     4.32x    1.83-1.91x   1.88x
    pool --op avg -k 2 (PNG)     8.07x    2.66x        2.86x (filtered rows + compressed stream
                                                             are held at once: 0.5x a uint8 result)
    stats                        4.17x    1.82x        1.82x
    pool --op max -k 2 (.npy)    4.32x    1.83x
    norm (instance, to PNG)     46.07x    7.42x  (float32 result alone: 4x)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

BOUND = 3.0

WRAPPER = (
    "import resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
    "sys.stderr.write(p.stderr.decode(errors='replace')[-2000:])\n"
    "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def make_image(path: str, n: int, seed: int = 0) -> int:
    """Write an n x n RGB PNG, built in row strips (the generator stays small); return bytes."""
    rng = np.random.default_rng(seed)
    img = np.empty((n, n, 3), dtype=np.uint8)
    x = np.arange(n) / n
    strip = 512
    for y0 in range(0, n, strip):
        y = (np.arange(y0, min(n, y0 + strip)) / n)[:, None]
        base = np.stack([np.sin(6 * x + 2 * y), np.cos(5 * y - 3 * x), np.sin(4 * (x + y))], -1)
        noise = rng.normal(0, 12, base.shape)
        img[y0 : y0 + strip] = (base * 80 + 128 + noise).clip(0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, compress_level=1)
    return img.nbytes


def peak_rss_kib(cmd: list[str], cwd: str) -> tuple[int, int]:
    """(return code, peak RSS in KiB) of ``cmd`` run alone in a fresh wrapper process."""
    out = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], cwd=cwd, capture_output=True,
                         text=True)
    if out.stderr.strip():
        print(out.stderr.strip(), file=sys.stderr)
    code, kib = out.stdout.split()
    return int(code), int(kib)


def poolcli_cmd() -> list[str]:
    exe = shutil.which("poolcli")
    return [exe] if exe else [sys.executable, "-m", "poolcli"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192, help="image side in pixels")
    ap.add_argument("--keep", default=None, help="directory for the image (kept)")
    ap.add_argument("--commands", default="max,avg,stats",
                    help="comma list of: max, avg, stats, norm, npy (max to .npy)")
    args = ap.parse_args(argv)

    work = args.keep or tempfile.mkdtemp(prefix="poolcli-mem-")
    os.makedirs(work, exist_ok=True)
    src = os.path.join(work, f"big{args.size}.png")
    if not os.path.exists(src):
        decoded = make_image(src, args.size)
    else:
        decoded = args.size * args.size * 3
    mib = 1 << 20
    print(f"image: {src}  {args.size}x{args.size} RGB uint8, decoded {decoded / mib:.0f} MiB, "
          f"file {os.path.getsize(src) / mib:.0f} MiB")

    code, base_kib = peak_rss_kib([sys.executable, "-c", "import numpy, PIL"], work)
    baseline = base_kib * 1024
    print(f"baseline (python -c 'import numpy, PIL'): {baseline / mib:.0f} MiB peak RSS\n")

    pc = poolcli_cmd()
    commands = {
        "max": ["pool", "--op", "max", "-k", "2", src, "-o", "out_max.png", "--force", "-q"],
        "avg": ["pool", "--op", "avg", "-k", "2", src, "-o", "out_avg.png", "--force", "-q"],
        "stats": ["stats", src, "-q"],
        "norm": ["norm", src, "-o", "out_norm.png", "--force", "-q"],
        "npy": ["pool", "--op", "max", "-k", "2", src, "-o", "out_max.npy", "--force", "-q"],
    }
    header = (f"{'command (on the image)':<40} {'decoded':>9} {'peak RSS':>9} {'above base':>10} "
              f"{'ratio':>6}  bound {BOUND:g}x")
    print(header)
    print("-" * len(header))
    failed = 0
    for key in args.commands.split(","):
        argv_ = commands[key]
        code, kib = peak_rss_kib(pc + argv_, work)
        peak = kib * 1024
        above = peak - baseline
        ratio = above / decoded
        if code != 0:
            verdict = f"exit {code}"
        elif key == "norm":
            verdict = "(no bound)"
        else:
            verdict = "ok" if ratio < BOUND else "FAIL"
        failed += verdict not in ("ok", "(no bound)")
        shown = " ".join(a for a in argv_ if a not in (src, "--force", "-q", "-o"))
        print(f"{shown:<40} {decoded / mib:>7.0f}Mi {peak / mib:>7.0f}Mi {above / mib:>8.0f}Mi "
              f"{ratio:>6.2f}  {verdict}")
    if args.size < 4096:
        print("\nnote: below 4096 x 4096 the fixed cost of poolcli's own imports (click, rich, "
              "imagecodecs: ~10-25 MiB above the baseline) dominates the ratio")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
