"""Speed of the pooling core (``poolcli.ops``) against PyTorch and scikit-image, one thread.

Usage::

    python benchmarks/bench_ops.py              # 4096x4096 RGB, uint8 and float32, 7 runs each
    python benchmarks/bench_ops.py --size 2048 --repeat 11
    python benchmarks/bench_ops.py --quick      # 512x512, 3 runs: a smoke test
    python benchmarks/bench_ops.py --ops max2,avg2 --dtypes uint8

Prints one table per input dtype: the median wall time of each operator in poolcli, in PyTorch
(CPU, ``torch.set_num_threads(1)``, NCHW float32 contiguous tensor prepared outside the timing)
and in ``skimage.measure.block_reduce`` where it can compute the same thing (max/min/mean over
non-overlapping blocks), all in this process, beside a plain ``np.copyto`` of the input into a
preallocated array timed alternately with each operator (so both see the same machine load).

Targets (from the speed issue), checked in the last two columns:

* ``torch``: every operator at least 3x faster than PyTorch on the same data;
* ``copyto``: 2x2 stride-2 max and average pooling within 3x of the ``np.copyto`` time.

Threads are pinned to one before numpy/torch load (``OMP_NUM_THREADS`` etc.). On some
processors ``OPENBLAS_CORETYPE`` is set in the environment; it changes which BLAS kernels
OpenBLAS picks and does not matter here (no operator calls BLAS). The machine this was tuned on
is shared and noisy: compare ratios within one run rather than absolute times across runs.
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from poolcli import ops  # noqa: E402

try:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
except Exception:  # pragma: no cover - torch is optional
    torch = F = None

try:
    from skimage.measure import block_reduce
except Exception:  # pragma: no cover - scikit-image is optional
    block_reduce = None


# name: (description, poolcli call, torch call or None, skimage call or None, copyto target?)
def _operators(h, w):
    def sk(func, block):
        return lambda x: block_reduce(x, block, func)

    return {
        "max2": ("max 2x2/2", lambda x: ops.max_pool2d(x, 2),
                 lambda t: F.max_pool2d(t, 2), sk(np.max, (2, 2, 1)), True),
        "max3": ("max 3x3/2 pad 1", lambda x: ops.max_pool2d(x, 3, 2, 1),
                 lambda t: F.max_pool2d(t, 3, 2, 1), None, False),
        "min2": ("min 2x2/2", lambda x: ops.min_pool2d(x, 2),
                 lambda t: -F.max_pool2d(-t, 2), sk(np.min, (2, 2, 1)), False),
        "avg2": ("avg 2x2/2", lambda x: ops.avg_pool2d(x, 2),
                 lambda t: F.avg_pool2d(t, 2), sk(np.mean, (2, 2, 1)), True),
        "avg3": ("avg 3x3/2 pad 1", lambda x: ops.avg_pool2d(x, 3, 2, 1),
                 lambda t: F.avg_pool2d(t, 3, 2, 1), None, False),
        "lp2": ("lp p=2 2x2/2", lambda x: ops.lp_pool2d(x, 2, 2),
                lambda t: F.lp_pool2d(t, 2, 2), None, False),
        "maxidx2": ("max 2x2/2 +indices", lambda x: ops.max_pool2d(x, 2, return_indices=True),
                    lambda t: F.max_pool2d(t, 2, return_indices=True), None, False),
        "maxidx3": ("max 3x3/2 pad 1 +indices",
                    lambda x: ops.max_pool2d(x, 3, 2, 1, return_indices=True),
                    lambda t: F.max_pool2d(t, 3, 2, 1, return_indices=True), None, False),
        "aavg7": ("adaptive avg 7x7", lambda x: ops.adaptive_avg_pool2d(x, 7),
                  lambda t: F.adaptive_avg_pool2d(t, 7), None, False),
        "amax7": ("adaptive max 7x7", lambda x: ops.adaptive_max_pool2d(x, 7),
                  lambda t: F.adaptive_max_pool2d(t, 7), None, False),
        "amaxidx7": ("adaptive max 7x7 +indices",
                     lambda x: ops.adaptive_max_pool2d(x, 7, return_indices=True),
                     lambda t: F.adaptive_max_pool2d(t, 7, return_indices=True), None, False),
        "aavg_odd": (f"adaptive avg {h * 5 // 16}x{w * 5 // 16}",
                     lambda x: ops.adaptive_avg_pool2d(x, (h * 5 // 16, w * 5 // 16)),
                     lambda t: F.adaptive_avg_pool2d(t, (h * 5 // 16, w * 5 // 16)), None, False),
        "amax_odd": (f"adaptive max {h * 5 // 16}x{w * 5 // 16}",
                     lambda x: ops.adaptive_max_pool2d(x, (h * 5 // 16, w * 5 // 16)),
                     lambda t: F.adaptive_max_pool2d(t, (h * 5 // 16, w * 5 // 16)), None, False),
        # Not an operator: one read of the input at memory speed, the floor of the global rows
        # (torch's global average float32 runs at about this speed, so 3x is out of reach).
        "readmax": ("(ref) np.max: 1 read", np.max, lambda t: t.max(), None, False),
        "gavg": ("global avg", ops.global_avg_pool2d,
                 lambda t: F.adaptive_avg_pool2d(t, 1), sk(np.mean, (h, w, 1)), False),
        "gmax": ("global max", ops.global_max_pool2d,
                 lambda t: F.adaptive_max_pool2d(t, 1), sk(np.max, (h, w, 1)), False),
        "gmaxidx": ("global max +indices", lambda x: ops.global_max_pool2d(x, return_indices=True),
                    lambda t: F.adaptive_max_pool2d(t, 1, return_indices=True), None, False),
    }


# Rows that time a reference, not a poolcli operator: no target applies.
REFERENCE = {"readmax"}


def _median_ms(fn, repeat, *, alternate=None):
    """Median wall time of ``fn()`` in ms over ``repeat`` runs after one warm-up run. With
    ``alternate``, that function is run (and timed) between the runs too; both medians are
    returned."""
    fn()
    times, other = [], []
    for _ in range(repeat):
        if alternate is not None:
            t = time.perf_counter()
            alternate()
            other.append(time.perf_counter() - t)
        gc.collect()
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
        del result
    med = float(np.median(times)) * 1e3
    return (med, float(np.median(other)) * 1e3) if alternate is not None else med


def _fmt(v, spec="{:.1f}"):
    return "-" if v is None else spec.format(v)


def _table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join(h.ljust(wd) if i < 2 else h.rjust(wd) for i, (h, wd) in
                     enumerate(zip(header, widths)))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).ljust(wd) if i < 2 else str(c).rjust(wd) for i, (c, wd) in
                        enumerate(zip(r, widths))))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=4096, help="image height and width (4096)")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs per measurement (7)")
    ap.add_argument("--quick", action="store_true", help="512x512 and 3 runs")
    ap.add_argument("--ops", default="", help="comma-separated subset of: " + ",".join(
        _operators(8, 8)))
    ap.add_argument("--dtypes", default="uint8,float32", help="uint8,float32")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-skimage", action="store_true")
    args = ap.parse_args(argv)
    size, repeat = (512, 3) if args.quick else (args.size, args.repeat)
    use_torch = torch is not None and not args.no_torch
    use_sk = block_reduce is not None and not args.no_skimage
    table = _operators(size, size)
    names = [n for n in args.ops.split(",") if n] or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        ap.error(f"unknown ops {unknown}; choose from {list(table)}")
    warnings.simplefilter("ignore", RuntimeWarning)

    print(f"poolcli.ops vs PyTorch {torch.__version__ if use_torch else '(not installed)'} "
          f"(1 thread) and scikit-image block_reduce"
          f"{'' if use_sk else ' (not installed)'}: {size}x{size} RGB, median of {repeat} "
          f"runs, numpy {np.__version__}")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    status = 0
    for dtype_name in args.dtypes.split(","):
        x = image if dtype_name == "uint8" else (image / np.float32(255)).astype(dtype_name)
        dst = np.empty_like(x)
        copy = lambda: np.copyto(dst, x)  # noqa: E731
        # PyTorch pools float tensors only: uint8 data is given to it as float32.
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32)) \
            if use_torch else None
        rows = []
        for name in names:
            desc, ours, theirs, skim, copy_target = table[name]
            ms, copy_ms = _median_ms(lambda: ours(x), repeat, alternate=copy)
            torch_ms = _median_ms(lambda: theirs(t), repeat) if use_torch else None
            sk_ms = _median_ms(lambda: skim(x), max(1, min(repeat, 3))) \
                if use_sk and skim is not None else None
            vs_torch = None if torch_ms is None else torch_ms / ms
            vs_copy = ms / copy_ms
            ok_torch = "-" if vs_torch is None else ("PASS" if vs_torch >= 3 else "FAIL")
            ok_copy = ("PASS" if vs_copy <= 3 else "FAIL") if copy_target else "-"
            if name in REFERENCE:
                ok_torch = ok_copy = "(ref)"
            status |= "FAIL" in (ok_torch, ok_copy)
            rows.append([desc, dtype_name, _fmt(ms), _fmt(copy_ms), _fmt(torch_ms),
                         _fmt(sk_ms), _fmt(vs_torch, "{:.1f}x"), _fmt(vs_copy, "{:.1f}x"),
                         ok_torch, ok_copy])
            print(f"  ... {desc} {dtype_name}: {ms:.1f} ms", file=sys.stderr, flush=True)
        print()
        _table(rows, ["op", "dtype", "poolcli ms", "copyto ms", "torch ms", "skimage ms",
                      "torch/poolcli", "poolcli/copyto", ">=3x torch", "<=3x copyto"])
        del t, dst
        gc.collect()
    print()
    print("copyto: np.copyto(preallocated, input), timed alternately with each operator.")
    print("torch: NCHW float32 contiguous tensor built before timing; for uint8 input torch is "
          "given the same")
    print("  data as float32 (its pooling does not take uint8), so its time is the same in both "
          "tables.")
    print("  min pooling in torch is -max_pool2d(-x); global pooling is adaptive pooling to 1x1.")
    print("poolcli: channels-last (H, W, C) input; results may be non-contiguous views "
          "(no final copy).")
    print("skimage: block_reduce with np.max / np.min / np.mean, only where its non-overlapping "
          "blocks")
    print("  compute the same thing.")
    print("(ref) np.max: numpy's max of the whole input (and torch's Tensor.max), one read at "
          "memory speed:")
    print("  the floor for global pooling, which must read every input byte once.")
    return status


if __name__ == "__main__":
    sys.exit(main())
