"""Whole-process timings of poolcli commands beside libvips and ImageMagick.

Usage::

    python benchmarks/bench_cli.py            # 1024² and 2048² PNGs, 5 runs each, 200-image batch
    python benchmarks/bench_cli.py --quick    # 1024² only, 3 runs, 40-image batch
    python benchmarks/bench_cli.py --baseline f9a66cc~1   # also this tree against an older commit

Peers are optional and skipped with a note when missing; install them on Debian/Ubuntu with
``apt-get install libvips-tools imagemagick``. Run it with the README's virtual environment
active: the ``poolcli`` found on PATH is timed, and the ``python -c`` rows use the interpreter
that script runs on. poolcli's modules are compiled to bytecode first (see ``warm_bytecode``). Every number is the median of several runs of
the whole process (start-up, decode, operator, encode), measured in this run on this machine,
so compare the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image


def make_image(path: str, n: int, seed: int = 0) -> None:
    """A photo-like RGB image: smooth gradients plus texture, so PNG is not trivially small."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n] / n
    base = np.stack([np.sin(6 * x + 2 * y), np.cos(5 * y - 3 * x), np.sin(4 * (x + y))], -1)
    img = (base * 80 + 128 + rng.normal(0, 12, (n, n, 3))).clip(0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, compress_level=1)


def timeit(cmds: dict, runs: int, cwd: str, raw: dict | None = None) -> dict:
    """Median wall time in ms of each command, run interleaved: every round runs each command
    once, in turn, so all of them see the same load on a shared machine (the host this was
    developed on drifts by +-30% over minutes, which made back-to-back blocks of runs of one
    command and then the next disagree). None for a command that is missing or fails.
    ``raw``, if given, receives every run's time (s) per command, in round order.
    """
    times: dict[str, list[float]] = {name: [] for name, cmd in cmds.items() if cmd}
    for _ in range(runs):
        for name in list(times):
            t = time.perf_counter()
            p = subprocess.run(cmds[name], cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
            dt = time.perf_counter() - t
            if p.returncode != 0:
                print(f"  ! {' '.join(cmds[name])} failed: "
                      f"{p.stderr.decode(errors='replace')[:200]}", file=sys.stderr)
                del times[name]
                continue
            times[name].append(dt)
    if raw is not None:
        raw.update(times)
    return {name: statistics.median(times[name]) * 1e3 if name in times else None
            for name in cmds}


def poolcli_cmd() -> tuple[list[str], str]:
    """The installed console script and the interpreter it runs on (from its #! line)."""
    exe = shutil.which("poolcli")
    if not exe:
        return [sys.executable, "-m", "poolcli"], sys.executable
    with open(exe, "rb") as fh:
        first = fh.readline().decode(errors="replace").strip()
    python = first[2:].split()[0] if first.startswith("#!") else sys.executable
    return [exe], python if os.path.exists(python) else sys.executable


def warm_bytecode(python: str) -> str:
    """Compile poolcli's modules to bytecode, as a non-editable ``pip install`` does.

    An editable install (the README's) writes ``__pycache__`` on first import, unless
    PYTHONDONTWRITEBYTECODE is set (as on the development machine): then every run would
    recompile poolcli's sources, ~110 ms that no installed copy pays.
    """
    where = subprocess.run([python, "-c", "import os, poolcli; print(os.path.dirname("
                            "poolcli.__file__))"], capture_output=True, text=True).stdout.strip()
    if where:
        subprocess.run([python, "-m", "compileall", "-q", where], capture_output=True)
    return where


def row(name, ms, ref_name=None, ref_ms=None, target=None):
    ratio = "" if ref_ms is None or ms is None else f"{ms / ref_ms:6.2f}x {ref_name}"
    verdict = ""
    if target is not None and ms is not None and ref_ms is not None:
        verdict = "PASS" if target(ms, ref_ms) else "FAIL"
    shown = "skipped" if ms is None else f"{ms:9.1f}"
    print(f"{name:<58} {shown:>9}  {ratio:<26} {verdict}")


def baseline_block(rev: str, python: str, runs: int, d: str) -> None:
    """This source tree against commit ``rev`` (a git worktree), both run as
    ``python -m poolcli`` from their own sources, interleaved: did a change slow local runs?
    (Issue 16: URLs and --dask must cost local paths nothing.)"""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tree = os.path.join(d, "baseline")
    subprocess.run(["git", "-C", here, "worktree", "add", "-q", "--detach", tree, rev],
                   check=True)
    try:
        for root in (here, tree):
            subprocess.run([python, "-m", "compileall", "-q", os.path.join(root, "poolcli")],
                           capture_output=True)
        src = os.path.join(d, "base2048.png")
        make_image(src, 2048)
        many = os.path.join(d, "base_many")
        os.mkdir(many)
        make_image(os.path.join(many, "b000.png"), 512)
        for i in range(1, 40):
            shutil.copy(os.path.join(many, "b000.png"), os.path.join(many, f"b{i:03d}.png"))
        jobs = {"--help": ["--help"],
                "pool --op max -k 2 -q, 2048² PNG": ["pool", "--op", "max", "-k", "2", src,
                                                     "-o", "{out}.png", "-q", "--force"],
                "pool --op avg -k 2 (tables), 2048² PNG": ["pool", "--op", "avg", "-k", "2",
                                                           src, "-o", "{out}.png", "--force"],
                "pool -j 2 -q, 40 PNGs of 512²": ["pool", "--op", "max", "-k", "2", many, "-o",
                                                  "{out}", "-q", "--force", "-j", "2"]}
        print(f"-- this tree against {rev} (python -m poolcli from each source, interleaved)")
        for label, args in jobs.items():
            cmds = {name: ["env", f"PYTHONPATH={root}", python, "-m", "poolcli",
                           *[a.replace("{out}", os.path.join(d, f"base_{name}")) for a in args]]
                    for name, root in (("now", here), ("then", tree))}
            t = timeit(cmds, runs, d)
            row(f"{label}: {rev}", t["then"])
            row(f"{label}: this tree", t["now"], rev, t["then"])
    finally:
        subprocess.run(["git", "-C", here, "worktree", "remove", "--force", tree],
                       capture_output=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None, help="images in the batch test")
    ap.add_argument("--batch-runs", type=int, default=None, help="runs of each batch command")
    ap.add_argument("--baseline", metavar="REV",
                    help="only compare this source tree with git commit REV (interleaved)")
    args = ap.parse_args(argv)
    runs = args.runs or (3 if args.quick else 5)
    sizes = [1024] if args.quick else [1024, 2048]
    batch_n = args.batch or (40 if args.quick else 200)
    batch_runs = args.batch_runs or (2 if args.quick else 5)
    pc, python = poolcli_cmd()
    where = warm_bytecode(python)
    vips = shutil.which("vips")
    magick = shutil.which("magick") or shutil.which("convert")
    if magick:  # some machines have a stand-in `convert` that is not ImageMagick
        out = subprocess.run([magick, "-version"], capture_output=True, text=True).stdout
        if not out.startswith("Version: ImageMagick"):
            magick = None
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cores; "
          f"median of {runs} whole-process runs (ms), commands of a block interleaved")
    if not vips:
        print("note: libvips not found (apt-get install libvips-tools): vips rows skipped")
    if not magick:
        print("note: ImageMagick not found (apt-get install imagemagick): its rows skipped")
    print(f"poolcli: {' '.join(pc)} on {python}; package {where or '?'} (bytecode compiled)")
    print(f"{'command':<58} {'ms':>9}  {'ratio':<26} target")
    if args.baseline:
        with tempfile.TemporaryDirectory() as d:
            baseline_block(args.baseline, python, runs, d)
        return 0
    with tempfile.TemporaryDirectory() as d:
        t = timeit({"pass": [python, "-c", "pass"], "click": [python, "-c", "import click"],
                    "--help": pc + ["--help"], "ops": pc + ["ops"],
                    "pool --help": pc + ["pool", "--help"]}, runs, d)
        row("python -c pass", t["pass"])
        row("python -c 'import click'", t["click"])
        for sub in ("--help", "ops", "pool --help"):
            row("poolcli " + sub, t[sub], "import click", t["click"],
                (lambda a, b: a <= 2 * b) if sub == "--help" else None)
        for n in sizes:
            src = os.path.join(d, f"in{n}.png")
            make_image(src, n)
            print(f"-- {n}x{n} RGB PNG -> {n // 2}x{n // 2}")
            pool = pc + ["pool", "-k", "2", src, "--force"]
            t = timeit({
                "vips": [vips, "shrink", src, os.path.join(d, "v.png"), "2", "2"] if vips
                else None,
                "im": [magick, src, "-statistic", "Maximum", "2x2", "-sample", "50%",
                       os.path.join(d, "m.png")] if magick else None,
                "max": pool + ["--op", "max", "-o", os.path.join(d, "p.png"), "-q"],
                "tables": pool + ["--op", "max", "-o", os.path.join(d, "t.png")],
                "avg": pool + ["--op", "avg", "-o", os.path.join(d, "a.png"), "-q"],
                "stats": pc + ["stats", src],
            }, runs, d)
            row("vips shrink 2 2 (box average)", t["vips"])
            row("ImageMagick -statistic Maximum 2x2 -sample 50%", t["im"])
            target = n == 2048  # the targets are set on a 2048x2048 PNG
            row("poolcli pool --op max -k 2 -q", t["max"], "vips", t["vips"],
                (lambda a, b: a <= 1.5 * b) if target else None)
            if t["im"] and t["max"] and target:
                print(f"{'':<58} {'':>9}  poolcli {t['im'] / t['max']:5.2f}x faster than "
                      f"ImageMagick {'PASS' if t['im'] / t['max'] >= 3 else 'FAIL'}")
            row("poolcli pool --op max -k 2 (statistics tables printed)", t["tables"], "vips",
                t["vips"])
            row("poolcli pool --op avg -k 2 -q", t["avg"], "vips", t["vips"])
            row("poolcli stats (table printed)", t["stats"])
        # batch throughput
        bdir = os.path.join(d, "batch")
        os.mkdir(bdir)
        make_image(os.path.join(bdir, "b000.png"), 512)
        for i in range(1, batch_n):
            shutil.copy(os.path.join(bdir, "b000.png"), os.path.join(bdir, f"b{i:03d}.png"))
        print(f"-- batch: {batch_n} RGB PNGs of 512x512, pool --op max -k 2 -q, "
              f"{batch_runs} interleaved runs")
        raw: dict = {}
        t = timeit({j: pc + ["pool", "--op", "max", "-k", "2", bdir, "-o",
                             os.path.join(d, f"out{j}"), "-q", "--force", "-j", str(j)]
                    for j in (1, 2)}, batch_runs, d, raw)
        for j in (1, 2):
            if t[j] is not None:
                print(f"{'poolcli -j ' + str(j):<58} {t[j]:9.1f}  "
                      f"{batch_n / (t[j] / 1e3):8.1f} images/s")
        if t[1] and t[2]:
            # the median of each round's own ratio: the two runs of a round see the same load
            speedup = statistics.median(a / b for a, b in zip(raw[1], raw[2]))
            print(f"{'-j 2 throughput / -j 1 (median of per-round ratios)':<58} {'':>9}  "
                  f"{speedup:6.2f}x{'':<19} {'PASS' if speedup >= 1.7 else 'FAIL'} "
                  f"(target 1.7x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
