"""Large images: poolcli's streaming path against libvips, in the same run (issue 17).

Every case runs ``poolcli pool`` and the matching ``vips`` command as child processes and reports
the median wall time of ``--repeat`` runs and the peak RSS (``os.wait4``'s ``ru_maxrss``) of each:

* 8192² RGB PNG: avg 2x2 (``vips shrink 2 2``) and max 3x3/2 (``vips reduce``'s nearest
  neighbour is no max; vips has no max pool, so ``vips rank 3 3 8`` + ``shrink`` is the honest
  pairing, and ``reduce 2 2 --kernel linear`` is listed too);
* a 30000² tiled RGB TIFF (``benchmarks/make_large.py``): max 2x2 and avg 2x2 (skipped with
  ``--quick``);
* a 4096² PNG with 1 and 2 threads (``POOLCLI_THREADS``);
* wall and peak against size, 1024² ... 30000² (``--quick`` stops at 8192²).

    python benchmarks/bench_large.py [--quick] [--repeat 3] [--dir /tmp/bench_large]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
POOLCLI = [sys.executable, "-m", "poolcli"]
BIG = ["--max-pixels", "2000000000"]


def measure(cmd, env=None, repeat=3) -> tuple[float, float]:
    """(median wall seconds, max peak RSS MiB) of ``cmd`` run ``repeat`` times."""
    walls, peaks = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - start)
        err = proc.stderr.read().decode()
        proc.stderr.close()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{err}")
        peaks.append(usage.ru_maxrss / 1024)
    return statistics.median(walls), max(peaks)


def image(directory: str, side: int, kind: str) -> str:
    import make_large

    path = os.path.join(directory, f"large_{side}.{'png' if kind == 'png' else 'tif'}")
    if not os.path.exists(path):
        (make_large.make_png if kind == "png" else make_large.make_tiff)(path, side, side)
    return path


def poolcli(src, out, op, *extra):
    return [*POOLCLI, "pool", src, "--op", op, *extra, "-o", out, "--force", "--quiet", *BIG]


def row(label, ours, theirs):
    ratio = ours[0] / theirs[0] if theirs else float("nan")
    vips = f"{theirs[0]:7.2f} s {theirs[1]:7.0f} MiB" if theirs else " " * 19
    print(f"| {label:<34} | {ours[0]:7.2f} s {ours[1]:7.0f} MiB | {vips} | {ratio:5.2f} |",
          flush=True)


def header(title):
    print(f"\n{title}\n\n| case | poolcli wall, peak | vips wall, peak | ratio |\n|---|---|---|---|")


def versus_vips(directory, side, kind, repeat):
    src = image(directory, side, kind)
    ext = "png" if kind == "png" else "tif"
    out, vout = os.path.join(directory, f"o.{ext}"), os.path.join(directory, f"v.{ext}")
    header(f"{side}x{side} RGB {kind.upper()}")
    row("avg 2x2 / vips shrink 2 2", measure(poolcli(src, out, "avg", "-k", "2"), repeat=repeat),
        measure(["vips", "shrink", src, vout, "2", "2"], repeat=repeat))
    mx = ["-k", "3", "-s", "2"] if kind == "png" else ["-k", "2"]
    row(f"max {'3x3/2' if kind == 'png' else '2x2'} / vips reduce 2 2",
        measure(poolcli(src, out, "max", *mx), repeat=repeat),
        measure(["vips", "reduce", src, vout, "2", "2", "--kernel", "linear"], repeat=repeat))


def threads(directory, repeat):
    src = image(directory, 4096, "png")
    out = os.path.join(directory, "t.png")
    header("4096x4096 RGB PNG, threads (POOLCLI_STREAM_ROWS=64 forces streaming)")
    for op, extra in (("avg", ["-k", "2"]), ("max", ["-k", "2"])):
        one = measure(poolcli(src, out, op, *extra), {"POOLCLI_THREADS": "1",
                                                      "POOLCLI_STREAM_ROWS": "64"}, repeat)
        two = measure(poolcli(src, out, op, *extra), {"POOLCLI_THREADS": "2",
                                                      "POOLCLI_STREAM_ROWS": "64"}, repeat)
        row(f"{op} 2x2: 2 threads vs 1", two, one)


def sizes(directory, quick, repeat):
    header("avg 2x2 against size (PNG to 8192, tiled TIFF above); vips shrink beside")
    for side in (1024, 2048, 4096, 8192) + (() if quick else (16384, 30000)):
        kind = "png" if side <= 8192 else "tiff"
        src = image(directory, side, kind)
        ext = "png" if kind == "png" else "tif"
        out, vout = os.path.join(directory, f"s.{ext}"), os.path.join(directory, f"sv.{ext}")
        row(f"{side}^2 {kind}", measure(poolcli(src, out, "avg", "-k", "2"), repeat=repeat),
            measure(["vips", "shrink", src, vout, "2", "2"], repeat=repeat))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="stop at 8192^2, no 30000^2 TIFF")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default="/tmp/bench_large")
    parser.add_argument("--only", choices=("8192", "30000", "threads", "sizes"))
    args = parser.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    print(f"cores: {os.cpu_count()}; median of {args.repeat}; peak = max ru_maxrss")
    if args.only in (None, "8192"):
        versus_vips(args.dir, 8192, "png", args.repeat)
    if args.only == "30000" or (args.only is None and not args.quick):
        versus_vips(args.dir, 30000, "tiff", args.repeat)
    if args.only in (None, "threads"):
        threads(args.dir, args.repeat)
    if args.only in (None, "sizes"):
        sizes(args.dir, args.quick, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
