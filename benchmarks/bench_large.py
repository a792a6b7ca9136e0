"""Large images: poolcli's streaming path against libvips, in the same run (issue 17).

Every case runs ``poolcli pool`` and the matching ``vips`` command as child processes and reports
the median wall time of ``--repeat`` runs and the peak RSS (``os.wait4``'s ``ru_maxrss``) of each:

* 8192² RGB PNG: avg 2x2 (``vips shrink 2 2``) and max 3x3/2 against ``vips reduce 2 2
  --kernel linear`` (vips has no max pooling: the nearest resampler of equal work);
* a 30000² tiled RGB TIFF (``benchmarks/make_large.py``): max 2x2 and avg 2x2, writing a
  deflated TIFF (poolcli's default) and an uncompressed one (vips' default) (skipped with
  ``--quick``);
* a 4096² PNG and a 4096² tiled TIFF with 1 and 2 threads (``POOLCLI_THREADS``), as whole runs
  and in process (from after the imports to the end: Python's start-up is the same for any
  thread count);
* PNG inflaters: the streamed PNG's one serial step, inflating its image data, in process, with
  ISA-L (python-isal), zlib-ng and the standard library's zlib on the 4096² and 8192² images (the
  same bytes asserted); the PNG rows above also run poolcli with isal hidden (``ZLIB_ONLY``: the
  zlib fallback) in the same run;
* PNG deflaters: the streamed PNG writer's pieces with zlib and ISA-L (what it uses), against
  libdeflate on the whole image (the in-memory writer), bytes and CPU (``--only deflate``);
* wall and peak against size, 1024² ... 30000² (``--quick`` stops at 8192²);
* max-location maps on the 8192² PNG: ``pool --save-indices`` (the 400 MiB map written band by
  band) and ``unpool`` from it (plain and ``--accumulate``), streamed against the in-memory
  path (forced by raising ``STREAM_BYTES`` and ``indexmap.LAZY_BYTES`` in the child).

    python benchmarks/bench_large.py [--quick] [--repeat 3] [--dir /tmp/bench_large]
    python benchmarks/bench_large.py --only inflate   # needs: pip install isal zlib-ng
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
POOLCLI = [sys.executable, "-m", "poolcli"]
BIG = ["--max-pixels", "2000000000"]
#: ``python -m poolcli`` with python-isal hidden: the streamed PNG reader falls back to zlib.
ZLIB_ONLY = [sys.executable, "-c", "import sys; sys.modules['isal'] = None; "
             "from poolcli.cli import main; main(prog_name='poolcli')"]


def run_once(cmd, env=None) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one run of ``cmd``."""
    wall, peak, _ = _spawn([cmd], env)
    return wall, peak


def _spawn(cmds, env=None) -> tuple[float, float, list[str]]:
    """Start ``cmds`` together, one process each: (wall until the last ends, the largest peak
    RSS in MiB, each one's standard error); a failure stops the benchmark."""
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, env={**os.environ, **(env or {})},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for cmd in cmds]
    peak, errs = 0.0, []
    for proc in procs:
        err = proc.stderr.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.stderr.close()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"failed: {' '.join(proc.args)}\n{err}")
        peak = max(peak, usage.ru_maxrss / 1024)
        errs.append(err)
    return time.perf_counter() - start, peak, errs


def measure(*runs, repeat=3) -> list[tuple[float, float]]:
    """(median wall seconds, max peak RSS MiB) of each ``(cmd, env)`` in ``runs``, run
    ``repeat`` times interleaved (a b a b ...), so a load that comes and goes on a shared
    machine falls on both sides alike."""
    walls: list[list[float]] = [[] for _ in runs]
    peaks: list[list[float]] = [[] for _ in runs]
    for _ in range(repeat):
        for i, (cmd, env) in enumerate(runs):
            wall, peak = run_once(cmd, env)
            walls[i].append(wall)
            peaks[i].append(peak)
    return [(statistics.median(w), max(p)) for w, p in zip(walls, peaks)]


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def image(directory: str, side: int, kind: str) -> str:
    import make_large

    path = os.path.join(directory, f"large_{side}.{'png' if kind == 'png' else 'tif'}")
    if not os.path.exists(path):
        (make_large.make_png if kind == "png" else make_large.make_tiff)(path, side, side)
    return path


def poolcli(src, out, op, *extra, prefix=POOLCLI):
    return [*prefix, "pool", src, "--op", op, *extra, "-o", out, "--force", "--quiet", *BIG]


def secs(value: float) -> str:
    return f"{value:.2f} s"


def mib(value: float) -> str:
    return f"{value:.0f} MiB"


def table(title: str, columns: list[str]) -> None:
    # a child's ru_maxrss is never below this process's own peak (the kernel keeps the forked
    # image's high-water mark across exec): anything big is measured in a child of its own
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n#### {title}\n\n({load()} before; this process's peak {own:.0f} MiB, the "
          f"floor of every peak below)\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|",
          flush=True)


def line(*cells) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def versus_vips(directory, side, kind, repeat):
    src = image(directory, side, kind)
    ext = "png" if kind == "png" else "tif"
    out, vout = os.path.join(directory, f"o.{ext}"), os.path.join(directory, f"v.{ext}")
    png = kind == "png"
    table(f"{side}x{side} RGB {'PNG' if png else 'tiled TIFF (256² tiles, deflate)'}"
          f" -> {ext.upper()}, median of {repeat}",
          ["case", "poolcli wall", "poolcli peak", "vips wall", "vips peak", "poolcli / vips"]
          + (["poolcli, zlib inflate", "zlib / isal"] if png else []))
    mx = ["-k", "3", "-s", "2"] if kind == "png" else ["-k", "2"]
    cases = [("avg 2x2 vs vips shrink 2 2", poolcli(src, out, "avg", "-k", "2"),
              ["vips", "shrink", src, vout, "2", "2"]),
             (f"max {'3x3/2' if kind == 'png' else '2x2'} vs vips reduce 2 2 (linear)",
              poolcli(src, out, "max", *mx),
              ["vips", "reduce", src, vout, "2", "2", "--kernel", "linear"])]
    if kind != "png":  # vips writes uncompressed TIFF by default; poolcli deflates (level 1)
        cases += [("avg 2x2, uncompressed out vs vips shrink 2 2",
                   poolcli(src, out, "avg", "-k", "2", "--compress-level", "0"),
                   ["vips", "shrink", src, vout, "2", "2"]),
                  ("max 2x2, uncompressed out vs vips reduce 2 2 (linear)",
                   poolcli(src, out, "max", "-k", "2", "--compress-level", "0"),
                   ["vips", "reduce", src, vout, "2", "2", "--kernel", "linear"])]
    for label, ours, theirs in cases:
        runs = [(ours, None), (theirs, None)]
        if png:  # the same command with the zlib fallback, interleaved in the same run
            runs.append(([*ZLIB_ONLY, *ours[len(POOLCLI):]], None))
        (w, p), (vw, vp), *fallback = measure(*runs, repeat=repeat)
        extra = [secs(fallback[0][0]), f"{fallback[0][0] / w:.2f}"] if png else []
        line(label, secs(w), mib(p), secs(vw), mib(vp), f"{w / vw:.2f}", *extra)


#: ``python -m poolcli`` that also reports, on its last line of standard error, the seconds from
#: after its imports (numpy, the codecs and their extension modules, which imagecodecs loads on
#: first use, poolcli's modules, and difflib, which click imports to parse a short option:
#: imported first) to the end of the
#: command: the run without Python's start-up and imports (about 0.25 s here, 0.11 s of it
#: numpy's), which are the same for any thread count.
TIMED = [sys.executable, "-c", "import sys, time, numpy, imagecodecs, tifffile, isal.isal_zlib; "
         "import poolcli.app.jobs, poolcli.app.stream.pool, poolcli.imageio.stream, "
         "poolcli.imageio.indexmap, poolcli.imageio._stream_png, poolcli.imageio._stream_tiff, "
         "poolcli.ops.pool, poolcli.app.plan, poolcli.cli.output, difflib; "
         "imagecodecs.deflate_encode, imagecodecs.zlib_decode, imagecodecs.png_decode; "
         "from poolcli.cli import main; t = time.perf_counter()\ntry: main(prog_name='poolcli')\n"
         "finally: print(f'in-process {time.perf_counter() - t:.6f}', file=sys.stderr)"]


def run_timed(cmds, env=None) -> tuple[float, float, float]:
    """(wall s, peak RSS MiB, in-process s) of :data:`TIMED` commands ``cmds`` started
    together (the largest in-process time)."""
    wall, peak, errs = _spawn(cmds, env)
    return wall, peak, max(float(err.strip().splitlines()[-1].split()[-1]) for err in errs)


def threads(directory, repeat):
    """The same 4096² image pooled with 1 and 2 threads (``POOLCLI_THREADS``), PNG and tiled
    TIFF, interleaved: whole runs, and in process (without start-up, see :data:`TIMED`).

    The host's own ceiling, measured in the same loop: two 1-thread runs of the same command
    started together, as two processes (nothing shared, nothing to wait for): their throughput
    against one run alone, ``2 * t1 / t_pair``, is the most two cores give this work here.
    """
    reps = max(9, repeat)
    table(f"4096x4096 RGB, POOLCLI_THREADS=1 vs 2 (bands of the default 2 MiB), median of {reps}",
          ["case", "1 thread", "2 threads", "speedup", "in process, 1", "in process, 2",
           "speedup in process", "ceiling: 2 processes", "in process", "peak 1", "peak 2"])
    env1, env2 = {"POOLCLI_THREADS": "1"}, {"POOLCLI_THREADS": "2"}  # 48 MiB: streamed
    for kind in ("png", "tiff"):
        src = image(directory, 4096, kind)
        ext = "png" if kind == "png" else "tif"
        for op in ("avg", "max"):
            got: list[list[tuple[float, float, float]]] = [[], [], []]
            out = os.path.join(directory, f"t{{}}.{ext}")
            one, other = (poolcli(src, out.format(i), op, "-k", "2", prefix=TIMED)
                          for i in (1, 2))
            for _ in range(reps):  # interleaved; the pair writes two files
                for i, (cmds, env) in enumerate((([one], env1), ([one], env2),
                                                 ([one, other], env1))):
                    for k in (1, 2):  # each run writes a new file: replacing one makes the
                        with contextlib.suppress(FileNotFoundError):  # kernel free its pages,
                            os.unlink(out.format(k))  # ~15 ms for 22 MB, inside the timing
                    got[i].append(run_timed(cmds, env))
            (w1, w2, wp), (i1, i2, ip) = ([statistics.median(r[k] for r in runs) for runs in got]
                                          for k in (0, 2))
            p1, p2 = (max(r[1] for r in runs) for runs in got[:2])
            line(f"{kind.upper()} {op} 2x2", secs(w1), secs(w2), f"{w1 / w2:.2f}x", secs(i1),
                 secs(i2), f"{i1 / i2:.2f}x", f"{2 * w1 / wp:.2f}x", f"{2 * i1 / ip:.2f}x",
                 mib(p1), mib(p2))


#: ``python -m poolcli`` with streaming switched off: the in-memory path on the same files.
IN_MEMORY = [sys.executable, "-c", "import sys, poolcli.app.stream as s, poolcli.imageio.indexmap "
             "as m; s.STREAM_BYTES = m.LAZY_BYTES = 1 << 62; from poolcli.cli import main; "
             "main(prog_name='poolcli')"]


def indices(directory, repeat):
    src = image(directory, 8192, "png")
    out, maps = os.path.join(directory, "i.png"), os.path.join(directory, "i.indices.npz")
    back = os.path.join(directory, "u.png")
    table(f"8192x8192 RGB PNG, max 2x2 with its max-location map (400 MiB) and unpooling from "
          f"it, streamed vs in memory, median of {repeat}",
          ["case", "streamed wall", "streamed peak", "in-memory wall", "in-memory peak"])
    pool = ["pool", src, "--op", "max", "-k", "2", "-o", out, "--force", "--quiet", *BIG]
    unpool = ["unpool", out, "--indices", maps, "-o", back, "--force", "--quiet", *BIG]
    cases = [("max 2x2 (no map)", pool), ("max 2x2 --save-indices", [*pool, "--save-indices"]),
             ("unpool from the map", unpool), ("unpool --accumulate", [*unpool, "--accumulate"])]
    for label, args in cases:
        (w, p), (mw, mp) = measure(([*POOLCLI, *args], None), ([*IN_MEMORY, *args], None),
                                   repeat=repeat)
        line(label, secs(w), mib(p), secs(mw), mib(mp))


def _idat(path: str) -> bytes:
    """The concatenated image data (one zlib stream) of the PNG at ``path``."""
    import struct

    parts = []
    with open(path, "rb") as fh:
        fh.read(8)
        while True:
            length, ctype = struct.unpack(">I4s", fh.read(8))
            payload = fh.read(length)
            fh.read(4)
            if ctype == b"IDAT":
                parts.append(payload)
            if ctype == b"IEND":
                return b"".join(parts)


def _stream_inflate(module, data: bytes, block: int = 1 << 20) -> tuple[bytes, float, float]:
    """Inflate ``data`` as the band reader does (1 MiB of compressed bytes read at a time, at
    most ``block`` bytes out a call): ``(output, wall s, CPU s of this thread)``."""
    wall, cpu = time.perf_counter(), time.thread_time()
    z, parts, pos = module.decompressobj(), [], 0
    while not z.eof:
        data_in = z.unconsumed_tail or data[pos:pos + (1 << 20)]
        pos += 0 if z.unconsumed_tail else len(data_in)
        piece = z.decompress(data_in, block)
        if not piece and not data_in:
            break
        parts.append(piece)
    return b"".join(parts), time.perf_counter() - wall, time.thread_time() - cpu


def inflaters(directory, repeat):
    """The streamed PNG's serial step: which streaming inflater is fastest. Measured in a child
    process: a child forked later inherits its parent's peak RSS in ``ru_maxrss``, so this
    process must not grow by the 8192² image's data."""
    subprocess.run([sys.executable, os.path.abspath(__file__), "--dir", directory, "--repeat",
                    str(repeat), "--only", "inflate-here"], check=True)


def _inflaters_here(directory, repeat):
    import zlib

    modules = {f"zlib {zlib.ZLIB_RUNTIME_VERSION} (stdlib)": zlib}
    try:
        from isal import isal_zlib

        modules[f"ISA-L (isal {_version('isal')})"] = isal_zlib
    except ImportError:
        print("\n(isal not installed: pip install isal)")
    try:
        from zlib_ng import zlib_ng

        modules[f"zlib-ng {zlib_ng.ZLIBNG_VERSION} (zlib-ng {_version('zlib-ng')})"] = zlib_ng
    except ImportError:
        print("\n(zlib-ng not installed: pip install zlib-ng)")
    reps = max(5, repeat)
    for side in (4096, 8192):
        data = _idat(image(directory, side, "png"))
        ref = zlib.decompress(data)
        table(f"inflating the {side}² PNG's image data ({len(data) / 2**20:.0f} MiB -> "
              f"{len(ref) / 2**20:.0f} MiB) in 1 MiB steps, in process, median of {reps}",
              ["inflater", "wall", "CPU", "MB/s (CPU)", "zlib CPU / CPU"])
        got: dict[str, list[tuple[float, float]]] = {name: [] for name in modules}
        for _ in range(reps):  # interleaved, as measure() does
            for name, module in modules.items():
                out, wall, cpu = _stream_inflate(module, data)
                assert out == ref, f"{name} inflated other bytes than zlib"
                got[name].append((wall, cpu))
        base = statistics.median(c for _, c in next(iter(got.values())))
        for name, times in got.items():
            wall, cpu = (statistics.median(t[i] for t in times) for i in (0, 1))
            line(name, secs(wall), f"{cpu:.3f} s", f"{len(ref) / cpu / 1e6:.0f}",
                 f"{base / cpu:.2f}x")
        print("\nthe same bytes as zlib.decompress from every inflater (asserted)")


def deflaters(directory, repeat):
    """:func:`_deflaters_here` in a child process, as :func:`inflaters`: it holds a 4096²
    image's data, which every child spawned later would report as its own peak."""
    subprocess.run([sys.executable, os.path.abspath(__file__), "--dir", directory, "--repeat",
                    str(repeat), "--only", "deflate-here"], check=True)


def _deflaters_here(directory, repeat):
    """The streamed PNG writer's deflate: a 4096² avg 2x2 pool's filtered scanlines in 64-row
    pieces (raw DEFLATE, sync-flushed, as the band writer cuts them) with zlib and ISA-L, and
    libdeflate on the whole image as the in-memory writer does, in process."""
    import zlib

    import imagecodecs
    import numpy as np

    from poolcli.imageio import read_image
    from poolcli.imageio.png import RowFilter

    src = image(directory, 4096, "png")
    out = os.path.join(directory, "deflate_src.png")
    subprocess.run(poolcli(src, out, "avg", "-k", "2"), check=True)
    a = read_image(out).array
    rows = RowFilter(a.shape[1], a.shape[2], a.dtype, filtered=True)
    scan = np.empty((a.shape[0], 1 + rows.line), np.uint8)
    rows.filter_into(a, scan)
    data, step = scan.tobytes(), 64 * scan.shape[1]

    def pieces(module, level):
        size = 0
        for i in range(0, len(data), step):
            z = module.compressobj(level, module.DEFLATED, -15)
            size += len(z.compress(data[i:i + step]) + z.flush(module.Z_SYNC_FLUSH))
        return size

    cases = [(f"zlib {zlib.ZLIB_RUNTIME_VERSION} level {lv}, 64-row pieces", zlib, lv)
             for lv in (1, 6, 9)]
    try:
        from isal import isal_zlib

        cases += [(f"ISA-L level {lv} (isal {_version('isal')}), 64-row pieces", isal_zlib, lv)
                  for lv in (1, 2, 3)]
    except ImportError:
        print("\n(isal not installed: pip install isal)")
    cases += [(f"libdeflate level {lv}, whole image (in-memory writer)", None, lv)
              for lv in (1, 6, 9)]
    reps = max(5, repeat)
    table(f"deflating a 4096² avg 2x2 pool's filtered rows ({len(data) / 2**20:.0f} MiB), in "
          f"process, CPU median of {reps}", ["deflater", "bytes", "vs zlib 1", "CPU", "MB/s"])
    base = None
    for label, module, level in cases:
        cpus, size = [], 0
        for _ in range(reps):
            cpu = time.thread_time()
            size = (len(imagecodecs.deflate_encode(data, level=level)) if module is None
                    else pieces(module, level))
            cpus.append(time.thread_time() - cpu)
        cpu = statistics.median(cpus)
        base = base or size
        line(label, f"{size:,}", f"{size / base:.3f}", f"{cpu:.3f} s",
             f"{len(data) / cpu / 1e6:.0f}")


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def sizes(directory, quick, repeat):
    table(f"avg 2x2 against size (PNG to 8192², tiled TIFF above), median of {repeat}",
          ["side", "decoded", "poolcli wall", "ns / pixel", "poolcli peak", "vips wall",
           "vips peak"])
    for side in (1024, 2048, 4096, 8192) + (() if quick else (16384, 30000)):
        kind = "png" if side <= 8192 else "tiff"
        src = image(directory, side, kind)
        ext = "png" if kind == "png" else "tif"
        out, vout = os.path.join(directory, f"s.{ext}"), os.path.join(directory, f"sv.{ext}")
        (w, p), (vw, vp) = measure((poolcli(src, out, "avg", "-k", "2"), None),
                                   (["vips", "shrink", src, vout, "2", "2"], None),
                                   repeat=repeat)
        decoded = side * side * 3
        size = f"{decoded / 2**20:.0f} MiB" if decoded < 2**30 else f"{decoded / 2**30:.1f} GiB"
        line(f"{side}² {kind.upper()}", size, secs(w), f"{w / (side * side) * 1e9:.1f}",
             mib(p), secs(vw), mib(vp))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="stop at 8192^2, no 30000^2 TIFF")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default="/tmp/bench_large")
    parser.add_argument("--only", choices=("8192", "30000", "threads", "sizes", "indices",
                                           "inflate", "inflate-here", "deflate",
                                           "deflate-here"))
    parser.add_argument("--note", default="", help="a sentence printed under the title "
                        "(e.g. what else the machine was doing)")
    args = parser.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    if args.only == "inflate-here":  # inflaters()'s child
        _inflaters_here(args.dir, args.repeat)
        return 0
    if args.only == "deflate-here":  # deflaters()'s child
        _deflaters_here(args.dir, args.repeat)
        return 0
    print(f"### bench_large ({time.strftime('%Y-%m-%d %H:%M')})\n")
    print(f"{os.cpu_count()} cores, {load()} at the start; walls are medians of {args.repeat} "
          "runs, poolcli and vips interleaved; peak = the largest ru_maxrss of the runs"
          + (f". {args.note}" if args.note else ""))
    if args.only in (None, "8192"):
        versus_vips(args.dir, 8192, "png", args.repeat)
    if args.only == "30000" or (args.only is None and not args.quick):
        versus_vips(args.dir, 30000, "tiff", args.repeat)
    if args.only in (None, "threads"):
        threads(args.dir, args.repeat)
    if args.only in (None, "inflate"):
        inflaters(args.dir, args.repeat)
    if args.only in (None, "deflate"):
        deflaters(args.dir, args.repeat)
    if args.only in (None, "sizes"):
        sizes(args.dir, args.quick, args.repeat)
    if args.only in (None, "indices"):
        indices(args.dir, args.repeat)
    print(f"\n({load()} at the end)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
