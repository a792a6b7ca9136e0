"""Max-location map files: the int64 indices of a selecting pooling plus what produced them.

A map is an uncompressed ``.npz`` (readable with plain ``numpy.load``, no pickles):

``indices``
    int64 array ``(H_out, W_out, C)``: for each pooled cell, the flat position ``h * W + w`` of the
    selected input cell in its channel plane, PyTorch's ``return_indices`` encoding.
``meta``
    a 0-d unicode array holding a JSON object: ``format`` (``"poolcli-indices"``),
    ``format_version`` (1), ``operator``, ``kernel``, ``stride``, ``padding``, ``dilation``,
    ``ceil_mode``, ``output_size`` (adaptive), ``input_shape`` ``[H, W, C]``, ``input_dtype``,
    ``output_shape``, ``source`` (input file name), ``poolcli_version`` and ``params`` (all the
    operator's parameters as given).
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from poolcli import __version__
from poolcli.errors import IndexMapError
from poolcli.imageio.files import atomic_write, make_parent_dirs

FORMAT = "poolcli-indices"
FORMAT_VERSION = 1
SUFFIX = ".indices.npz"

__all__ = ["FORMAT", "FORMAT_VERSION", "SUFFIX", "IndexMap", "map_path_for", "save", "load"]


class IndexMap:
    """A loaded map: ``indices`` (H_out, W_out, C) int64 and its ``meta`` dict."""

    def __init__(self, indices: np.ndarray, meta: dict):
        self.indices = indices
        self.meta = meta

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.meta["input_shape"])  # type: ignore[return-value]

    def geometry(self) -> dict:
        """kernel/stride/padding (h, w) pairs for :func:`poolcli.ops.max_unpool2d`.

        Fixed windows use the map's own geometry, with the effective kernel ``d*(k-1)+1`` when
        dilated (PyTorch's unpool size check ignores dilation). Maps of adaptive, global and
        K-max pooling have no fixed window; for them a stride-1 window of ``in - out + 1`` gives
        exactly the input size, which is all unpooling needs (indices carry the positions).
        """
        m = self.meta
        if m.get("kernel"):
            k = m["kernel"]
            d = m.get("dilation") or (1, 1)
            return {
                "kernel_size": tuple(d[i] * (k[i] - 1) + 1 for i in range(2)),
                "stride": tuple(m.get("stride") or k),
                "padding": tuple(m.get("padding") or (0, 0)),
            }
        out_h, out_w = self.indices.shape[:2]
        in_h, in_w = self.input_shape[:2]
        if out_h > in_h or out_w > in_w:
            raise IndexMapError(
                f"map of {m.get('operator')} output {out_h}x{out_w} is larger than its input "
                f"{in_h}x{in_w}; give --output-size to unpool it")
        return {"kernel_size": (in_h - out_h + 1, in_w - out_w + 1), "stride": (1, 1),
                "padding": (0, 0)}


def map_path_for(output_path: str) -> str:
    """``out/cat_max.png`` -> ``out/cat_max.indices.npz``."""
    root, _ = os.path.splitext(output_path)
    return root + SUFFIX


def build_meta(*, operator: str, params: dict, input_shape, input_dtype, output_shape,
               source: str) -> dict:
    """The metadata dict written beside the indices."""

    def pair(v):
        return None if v is None else [int(a) for a in v]

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "operator": operator,
        "kernel": pair(params.get("kernel")),
        "stride": pair(params.get("stride") or params.get("kernel")),
        "padding": pair(params.get("padding", (0, 0))),
        "dilation": pair(params.get("dilation", (1, 1))),
        "ceil_mode": bool(params.get("ceil_mode", False)),
        "output_size": pair(params.get("output_size")),
        "input_shape": [int(v) for v in input_shape],
        "input_dtype": str(input_dtype),
        "output_shape": [int(v) for v in output_shape],
        "source": os.path.basename(source),
        "poolcli_version": __version__,
        "params": {k: _jsonable(v) for k, v in params.items()},
    }


def _jsonable(v):
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return v


def save(path: str, indices: np.ndarray, meta: dict, *, overwrite: bool = False) -> None:
    """Write a map atomically (temporary file, then rename). ``indices`` is (H, W) or (H, W, C).

    The directory is created if missing (the map is often written before the image it belongs
    to, into an output directory that does not exist yet). Problems raise ``ImageWriteError``.
    """
    make_parent_dirs(path)

    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim == 2:
        idx = idx[:, :, None]

    def encode(fh):
        np.savez(fh, indices=idx, meta=np.array(json.dumps(meta)))

    atomic_write(os.fspath(path), encode, overwrite)


def load(path: str) -> IndexMap:
    """Read and validate a map; any problem is an :class:`IndexMapError` naming the file."""
    name = os.fspath(path)
    try:
        with np.load(name, allow_pickle=False) as z:
            if "indices" not in z.files or "meta" not in z.files:
                raise IndexMapError(f"{name}: not a poolcli index map (no 'indices'/'meta' arrays)")
            indices = z["indices"]
            meta_text = str(z["meta"][()])
    except IndexMapError:
        raise
    except FileNotFoundError:
        raise IndexMapError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise IndexMapError(f"{name}: is a directory") from None
    except PermissionError:
        raise IndexMapError(f"{name}: permission denied") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise IndexMapError(f"{name}: not a readable .npz index map ({_short(exc)})") from None
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError:
        raise IndexMapError(f"{name}: corrupt metadata (not JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise IndexMapError(f"{name}: not a poolcli index map (format is not {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise IndexMapError(
            f"{name}: index map format version {meta.get('format_version')!r} is not supported "
            f"(this poolcli reads version {FORMAT_VERSION})"
        )
    if indices.dtype.kind not in "iu" or indices.ndim != 3:
        raise IndexMapError(
            f"{name}: corrupt map: indices must be an integer (H, W, C) array, got "
            f"{indices.dtype} {indices.shape}"
        )
    shape = meta.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0
                                                                 for v in shape)):
        raise IndexMapError(f"{name}: corrupt metadata: input_shape {shape!r}")
    plane = shape[0] * shape[1]
    if indices.size and (indices.min() < 0 or indices.max() >= plane):
        raise IndexMapError(
            f"{name}: corrupt map: indices outside the {shape[0]}x{shape[1]} input plane"
        )
    if indices.shape[2] != shape[2]:
        raise IndexMapError(
            f"{name}: corrupt map: {indices.shape[2]} index channels for a {shape[2]}-channel input"
        )
    return IndexMap(indices.astype(np.int64, copy=False), meta)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]
