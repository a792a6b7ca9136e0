"""Max-location map files: the int64 indices of a selecting pooling plus what produced them.

A map is an uncompressed ``.npz`` (readable with plain ``numpy.load``, no pickles; the same map
gives the same bytes, whenever and wherever it is written):

``indices``
    int64 array ``(H_out, W_out, C)``: for each pooled cell, the flat position ``h * W + w`` of the
    selected input cell in its channel plane, PyTorch's ``return_indices`` encoding.
``meta``
    a 0-d unicode array holding a JSON object: ``format`` (``"poolcli-indices"``),
    ``format_version`` (1), ``operator``, ``kernel``, ``stride``, ``padding``, ``dilation``,
    ``ceil_mode``, ``output_size`` (adaptive), ``input_shape`` ``[H, W, C]``, ``input_dtype``,
    ``output_shape``, ``source`` (input file name), ``poolcli_version`` and ``params`` (all the
    operator's parameters as given).

:func:`load` treats the file as hostile: it checks the file (regular, at most ``max_bytes``),
the zip members (exactly ``indices`` and ``meta``, stored or deflated, not encrypted), each
member's ``.npy`` header before allocating anything (dtype, shape, and that the shape matches
the member's size and the metadata), the metadata field by field, and every index against the
input plane. Any problem is an :class:`~poolcli.errors.IndexMapError` naming the file and the
field.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from typing import BinaryIO, Callable

import numpy as np

from poolcli import __version__
from poolcli.errors import IndexMapError
from poolcli.imageio._common import NpyVersionError, npy_header
from poolcli.imageio._sidefile import (
    FieldError,
    check_bool,
    check_pair,
    check_str,
    display_name,
    human_bytes,
    is_int,
    open_checked,
    parse_json,
    read_url,
    require,
    shown,
)
from poolcli.imageio.files import atomic_write, make_parent_dirs
from poolcli.imageio.read import DEFAULT_MAX_PIXELS
from poolcli.imageio.store import is_url, write_bytes
from poolcli.imageio.stream import BandWriter

FORMAT = "poolcli-indices"
FORMAT_VERSION = 1
SUFFIX = ".indices.npz"

#: Largest map file read (the indices of a stride-1 pooling of a 178-megapixel RGB image are
#: 4.3 GB). Memory is bounded more tightly by the header checks: the indices can never claim
#: more bytes than their zip member holds, nor more cells than ``max_pixels`` allows.
MAX_FILE_BYTES = 16 << 30

#: Largest ``meta`` JSON text, in characters, and how deeply it may nest (``params`` holds lists).
MAX_META_CHARS = 1 << 20
MAX_META_DEPTH = 8

#: Largest kernel, stride, padding or dilation accepted in a map.
MAX_GEOMETRY = 1 << 20

_MEMBERS = {"indices.npy": "indices", "meta.npy": "meta"}
#: The date of every zip entry written (zip's earliest): no run or clock shows in a map's bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_CHUNK = 16 << 20  # bytes read from a zip member at a time
_EOCD_SEARCH = 22 + 65535  # the end-of-directory record and the longest zip comment
_MAX_DIRECTORY_ENTRIES = 16
_MAX_DIRECTORY_BYTES = 64 << 10
#: Indices of at least this many bytes, stored uncompressed in a local file, are loaded lazily
#: (checked while loading, read when used, or a band of rows at a time: :meth:`IndexMap.rows`).
LAZY_BYTES = 32 << 20

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_FILE_BYTES",
    "SUFFIX",
    "IndexMap",
    "IndexMapWriter",
    "LAZY_BYTES",
    "build_meta",
    "load",
    "map_path_for",
    "open_writer",
    "save",
]


class IndexMap:
    """A loaded map: ``indices`` (H_out, W_out, C) int64, its ``meta`` dict, and the ``path`` it
    was loaded from (``None`` for a map made in memory, as a pipeline stage does).

    A large map loaded from a local file whose ``indices`` member is stored uncompressed is
    *lazy* (:func:`load`): everything was checked while loading, but the array is read only
    when :attr:`indices` is first used; :meth:`rows` reads a band of its rows from the file
    without ever holding the whole array (banded unpooling). A lazy map pickles small (path and
    offset), so a worker process reads the rows itself."""

    def __init__(self, indices: np.ndarray | None, meta: dict, path: str | None = None, *,
                 stored: _StoredIndices | None = None):
        self._indices = indices
        self.meta = meta
        self.path = path
        self._stored = stored

    @property
    def indices(self) -> np.ndarray:
        if self._indices is None:
            self._indices = self._stored.read(0, self._stored.shape[0])
        return self._indices

    @property
    def lazy(self) -> bool:
        """Whether the indices are still in the file only."""
        return self._indices is None

    @property
    def shape(self) -> tuple[int, int, int]:
        """The indices' shape, without reading them."""
        if self._indices is None:
            return self._stored.shape
        shape = self._indices.shape
        return (shape[0], shape[1], shape[2] if len(shape) > 2 else 1)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Index rows ``[start, stop)`` as int64 ``(n, W_out, C)``: from the file when lazy."""
        if self._indices is None:
            return self._stored.read(start, stop)
        idx = self._indices if self._indices.ndim == 3 else self._indices[:, :, None]
        return np.asarray(idx[start:stop], dtype=np.int64)

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
        out_h, out_w = self.shape[:2]
        in_h, in_w = self.input_shape[:2]
        if out_h > in_h or out_w > in_w:
            where = f"{self.path}: " if self.path else ""
            raise IndexMapError(
                f"{where}map of {m.get('operator')} output {out_h}x{out_w} is larger than its "
                f"input {in_h}x{in_w}; give --output-size to unpool it")
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


def save(path: str, indices: np.ndarray, meta: dict, *, overwrite: bool = False,
         on_commit: Callable[[str], None] | None = None) -> None:
    """Write a map atomically (temporary file, then rename). ``indices`` is (H, W) or (H, W, C).

    The directory is created if missing (the map is often written before the image it belongs
    to, into an output directory that does not exist yet). Problems raise ``ImageWriteError``.
    ``on_commit`` is passed to :func:`~poolcli.imageio.files.atomic_write`.
    """
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim == 2:
        idx = idx[:, :, None]

    def encode(fh):
        _encode(fh, idx, meta)

    target = os.fspath(path)
    if is_url(target):  # encoded in memory, stored in one request: never a partial object
        buffer = io.BytesIO()
        encode(buffer)
        write_bytes(target, buffer.getvalue(), overwrite=overwrite, on_commit=on_commit)
        return
    make_parent_dirs(target)
    atomic_write(target, encode, overwrite, on_commit)


def _encode(fh: BinaryIO, indices: np.ndarray, meta: dict) -> None:
    """The ``.npz`` of a map, the same bytes for the same map on every run and machine.

    ``np.savez`` leaves the archive to ``zipfile``, whose entries may carry the time of writing
    and the system's conventions; a retried Dask task must produce exactly the bytes its killed
    first attempt committed (see :func:`~poolcli.imageio.files.retried_commits`). So every
    choice is pinned here: stored entries dated :data:`_ZIP_DATE` with Unix attributes, C-order
    little-endian arrays, ``.npy`` format 1.0 headers, no pickles. The result is what
    ``np.savez`` wrote for such maps on Linux (any numpy reads it); :func:`load` still reads
    maps written with real dates, byte orders or layouts.
    """
    members = (("indices.npy", np.ascontiguousarray(indices, dtype="<i8")),
               ("meta.npy", _meta_array(meta)))
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
        for name, array in members:
            with zf.open(_zip_info(name), "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, version=(1, 0), allow_pickle=False)


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.create_system, info.external_attr = 3, 0  # Unix, no mode bits (as numpy)
    return info


def _meta_array(meta: dict) -> np.ndarray:
    text = json.dumps(meta)
    return np.array(text, dtype=f"<U{max(1, len(text))}")


class IndexMapWriter(BandWriter):
    """A map written a band of rows at a time (:func:`open_writer`): the bytes :func:`save`
    writes for the whole array. The ``indices`` member is opened as :func:`_encode` opens it
    (stored, zip64 sizes, dated :data:`_ZIP_DATE`), its ``.npy`` 1.0 header first, then the rows
    as they come; ``zipfile`` rewrites the member's local header with the final sizes and CRC
    when it closes, as it does for the whole array, and ``meta`` follows."""

    def __init__(self, target: str, *, meta: dict, **kw):
        self._meta = meta
        self._zip: zipfile.ZipFile | None = None
        self._member = None
        super().__init__(target, dtype=np.dtype("<i8"), **kw)

    def _start(self, fh: BinaryIO) -> None:
        self._zip = zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED)
        self._member = self._zip.open(_zip_info("indices.npy"), "w", force_zip64=True)
        header = {"descr": "<i8", "fortran_order": False,
                  "shape": (self.height, self.width, self.channel_count)}
        np.lib.format.write_array_header_1_0(self._member, header)

    def _encode(self, fh: BinaryIO, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(rows, dtype="<i8")
        self._member.write(memoryview(data.reshape(-1)).cast("B"))

    def _finish(self, fh: BinaryIO) -> None:
        member, self._member = self._member, None
        member.close()
        with self._zip.open(_zip_info("meta.npy"), "w", force_zip64=True) as out:
            np.lib.format.write_array(out, _meta_array(self._meta), version=(1, 0),
                                      allow_pickle=False)
        archive, self._zip = self._zip, None
        archive.close()

    def _discard(self) -> None:
        """Close the half-written archive before its file is closed and deleted (its objects
        would otherwise try to finish it when collected, and complain)."""
        member, archive, self._member, self._zip = self._member, self._zip, None, None
        for obj in (member, archive):
            if obj is not None:
                try:
                    obj.close()  # marks itself closed first, even if the writing fails
                except Exception:  # the file is being thrown away anyway
                    pass


def open_writer(path: str, *, shape, meta: dict, overwrite: bool = False,
                on_commit: Callable[[str], None] | None = None) -> IndexMapWriter:
    """An :class:`IndexMapWriter` for int64 indices of ``shape`` ``(H_out, W_out, C)`` at the
    local ``path``: ``write_rows`` the bands in order, then ``commit`` (a temporary file renamed
    as :func:`~poolcli.imageio.files.atomic_write` does); the file equals :func:`save`'s."""
    h, w, c = (int(v) for v in shape)
    make_parent_dirs(path)
    return IndexMapWriter(os.fspath(path), meta=meta, height=h, width=w, channels=c,
                          overwrite=overwrite, on_commit=on_commit)


# ---- loading --------------------------------------------------------------------------------


def load(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
         max_bytes: int = MAX_FILE_BYTES) -> IndexMap:
    """Read and validate a map; any problem is an :class:`IndexMapError` naming the file.

    Parameters
    ----------
    path : str or path-like
        The ``.indices.npz`` file.
    max_pixels : int or None, optional
        Largest input plane (H x W) the map may describe, and largest pooled plane it may hold:
        pass ``--max-pixels``. ``None`` disables the pixel check (the byte checks stay).
    max_bytes : int, optional
        Largest file, and largest indices array, in bytes.
    """
    name = display_name(path)
    if is_url(name):
        opened = io.BytesIO(read_url(name, error=IndexMapError, what="index map",
                                     max_bytes=max_bytes))
    else:
        opened = open_checked(path, error=IndexMapError, what="index map", max_bytes=max_bytes)
    with opened as fh:
        try:
            return _load_zip(fh, name, max_pixels, max_bytes)
        except IndexMapError:
            raise
        except FieldError as exc:
            raise IndexMapError(f"{name}: index map {exc}") from None
        except MemoryError:
            raise IndexMapError(f"{name}: not enough memory to read the index map") from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
                ValueError, NotImplementedError, RuntimeError) as exc:
            raise IndexMapError(f"{name}: not a readable .npz index map ({_short(exc)})") \
                from None


def _load_zip(fh: BinaryIO, name: str, max_pixels: int | None, max_bytes: int) -> IndexMap:
    _check_directory_size(fh, name)
    with zipfile.ZipFile(fh) as zf:
        members = _members(zf, name)
        text = _read_meta_text(zf, members["meta"], name)
        try:
            meta = parse_json(text, max_depth=MAX_META_DEPTH)
        except ValueError as exc:
            raise IndexMapError(f"{name}: corrupt metadata (member 'meta'): {exc}") from None
        _check_meta(meta, name, max_pixels)
        indices = _read_indices(zf, members["indices"], name, meta, max_bytes)
    if isinstance(indices, _StoredIndices):
        return IndexMap(None, meta, name, stored=indices)
    return IndexMap(indices, meta, name)


def _check_directory_size(fh: BinaryIO, name: str) -> None:
    """Refuse an archive whose directory is far larger than a map's, before ``zipfile`` builds
    an object for every entry (a crafted directory of millions of entries would eat memory and
    time); a few extra members are named later, by :func:`_members`. The end-of-directory
    record is found as ``zipfile`` finds it (the last ``PK\\5\\6`` in the final 64 KiB);
    anything odd is left to ``zipfile`` to report."""
    size = fh.seek(0, os.SEEK_END)
    fh.seek(max(0, size - _EOCD_SEARCH))
    tail = fh.read()
    fh.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return
    entries, directory_bytes = struct.unpack("<HI", tail[at + 10 : at + 16])
    if entries > _MAX_DIRECTORY_ENTRIES or directory_bytes > _MAX_DIRECTORY_BYTES:
        raise IndexMapError(f"{name}: not a poolcli index map: its archive directory lists "
                            f"{entries} members in {directory_bytes} bytes (a map holds only "
                            "'indices' and 'meta')")


def _members(zf: zipfile.ZipFile, name: str) -> dict[str, zipfile.ZipInfo]:
    """The ``indices`` and ``meta`` members; anything else in the archive is refused."""
    found: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        key = _MEMBERS.get(info.filename)
        if key is None:
            raise IndexMapError(f"{name}: not a poolcli index map: unexpected member "
                                f"{info.filename!r} (a map holds only 'indices' and 'meta')")
        if key in found:
            raise IndexMapError(f"{name}: member {info.filename!r} appears twice")
        if info.flag_bits & 0x1:
            raise IndexMapError(f"{name}: member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise IndexMapError(f"{name}: member {info.filename!r} uses an unsupported "
                                f"compression method ({info.compress_type})")
        found[key] = info
    if len(found) != 2:
        raise IndexMapError(f"{name}: not a poolcli index map (no 'indices'/'meta' arrays)")
    return found


def _npy_header(fh: BinaryIO, name: str, member: str) -> tuple[tuple, bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, header_bytes)`` of a ``.npy`` member, data not read."""
    try:
        shape, fortran, dtype = npy_header(fh)
    except NpyVersionError as exc:
        raise IndexMapError(f"{name}: member {member!r}: {exc}") from None
    except (ValueError, SyntaxError, TypeError):  # numpy's messages can hold object addresses
        raise IndexMapError(f"{name}: member {member!r}: not a readable .npy header") from None
    if dtype.hasobject:
        raise IndexMapError(f"{name}: member {member!r} holds Python objects (a pickle); "
                            "refused")
    if dtype.names is not None or dtype.subdtype is not None:
        raise IndexMapError(f"{name}: member {member!r} holds a structured array ({dtype})")
    return shape, fortran, dtype, fh.tell()


def _read_member_data(fh: BinaryIO, nbytes: int, name: str, member: str) -> bytearray:
    """Exactly ``nbytes`` more bytes of a member, then its end (which checks the CRC)."""
    buffer = bytearray(nbytes)
    view = memoryview(buffer)
    pos = 0
    while pos < nbytes:
        chunk = fh.read(min(_CHUNK, nbytes - pos))
        if not chunk:
            raise IndexMapError(f"{name}: member {member!r} is truncated")
        view[pos : pos + len(chunk)] = chunk
        pos += len(chunk)
    if fh.read(1):
        raise IndexMapError(f"{name}: member {member!r} is longer than its header says")
    return buffer


def _check_size(info: zipfile.ZipInfo, header: int, nbytes: int, name: str, member: str):
    """The member must hold exactly the header plus the data it announces (before allocating)."""
    if header + nbytes != info.file_size:
        raise IndexMapError(
            f"{name}: member {member!r}: its header announces {human_bytes(nbytes)} of data but "
            f"the member holds {human_bytes(max(0, info.file_size - header))}")


def _read_meta_text(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> str:
    with zf.open(info) as fh:
        shape, _, dtype, header = _npy_header(fh, name, "meta")
        if shape != () or dtype.kind != "U":
            raise IndexMapError(f"{name}: corrupt metadata: expected a 0-d unicode array, got "
                                f"{dtype} {shape}")
        if dtype.itemsize > 4 * MAX_META_CHARS:
            raise IndexMapError(f"{name}: corrupt metadata: {dtype.itemsize // 4} characters "
                                f"(at most {MAX_META_CHARS})")
        _check_size(info, header, dtype.itemsize, name, "meta")
        data = _read_member_data(fh, dtype.itemsize, name, "meta")
    return str(np.frombuffer(data, dtype=dtype, count=1)[0])


def _check_meta(meta: object, name: str, max_pixels: int | None) -> None:
    """Validate the metadata fields (raises IndexMapError or FieldError)."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise IndexMapError(f"{name}: not a poolcli index map (field 'format' is not {FORMAT!r})")
    version = meta.get("format_version")
    if not is_int(version) or version != FORMAT_VERSION:
        raise IndexMapError(
            f"{name}: index map field 'format_version': version {shown(version)} is not "
            f"supported (this poolcli reads version {FORMAT_VERSION})"
        )
    check_str("operator", require(meta, "operator"))
    for field, low in (("kernel", 1), ("stride", 1), ("padding", 0), ("dilation", 1)):
        check_pair(field, require(meta, field), minimum=low, maximum=MAX_GEOMETRY, nullable=True)
    check_pair("output_size", meta.get("output_size"), minimum=1, maximum=MAX_GEOMETRY,
               nullable=True)
    check_bool("ceil_mode", require(meta, "ceil_mode"))
    for field in ("input_dtype", "source", "poolcli_version"):
        if field in meta:
            check_str(field, meta[field], nonempty=False)
    if "params" in meta and not isinstance(meta["params"], dict):
        raise FieldError("params", f"expected an object, got {shown(meta['params'])}")
    for field in ("input_shape", "output_shape"):
        h, w, _ = _check_shape(field, require(meta, field))
        if max_pixels is not None and h * w > max_pixels:
            raise FieldError(field, f"{h}x{w} = {h * w} pixels exceeds --max-pixels {max_pixels}")


def _check_shape(field: str, value: object) -> tuple[int, int, int]:
    if not (isinstance(value, list) and len(value) == 3 and all(is_int(v) and v > 0
                                                                 for v in value)):
        raise FieldError(field, f"expected [H, W, C], three integers >= 1, got {shown(value)}")
    return tuple(value)  # type: ignore[return-value]


def _read_indices(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, meta: dict,
                  max_bytes: int) -> np.ndarray:
    """The indices array, its header checked against the metadata before it is allocated."""
    h, w, c = meta["input_shape"]
    with zf.open(info) as fh:
        shape, fortran, dtype, header = _npy_header(fh, name, "indices")
        if dtype.kind not in "iu" or len(shape) != 3:
            raise IndexMapError(
                f"{name}: corrupt map: indices must be an integer (H, W, C) array, got "
                f"{dtype} {shape}"
            )
        if list(shape) != meta["output_shape"]:
            raise IndexMapError(
                f"{name}: corrupt map: indices are {_dims(shape)} but field 'output_shape' says "
                f"{_dims(meta['output_shape'])}")
        if shape[2] != c:
            raise IndexMapError(
                f"{name}: corrupt map: {shape[2]} index channels for a {c}-channel input "
                "(field 'input_shape')")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes > max_bytes:
            raise IndexMapError(f"{name}: member 'indices': {human_bytes(nbytes)} of indices, "
                                f"over the {human_bytes(max_bytes)} limit")
        _check_size(info, header, nbytes, name, "indices")
        if _lazy(zf, info, dtype, fortran, nbytes):
            return _StoredIndices.checked(zf, info, fh, header, shape, name, (h, w))
        data = _read_member_data(fh, nbytes, name, "indices")
    indices = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    _check_range(indices, h * w, name, meta)
    return indices.astype(np.int64, copy=False)


def _check_range(indices: np.ndarray, plane: int, name: str, meta: dict) -> None:
    if indices.size and (indices.min() < 0 or indices.max() >= plane):
        h, w, _ = meta["input_shape"]
        raise IndexMapError(
            f"{name}: corrupt map: indices outside the {h}x{w} input plane (field 'input_shape')"
        )


def _lazy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dtype: np.dtype, fortran: bool,
          nbytes: int) -> bool:
    """Whether to leave the indices in the file: large, stored as is, little-endian int64 in C
    order, in a local file (a URL's map is in memory already)."""
    return (nbytes >= LAZY_BYTES and info.compress_type == zipfile.ZIP_STORED and not fortran
            and dtype == np.dtype("<i8") and _has_descriptor(zf.fp))


def _has_descriptor(fh) -> bool:
    try:
        fh.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return False
    return True


class _StoredIndices:
    """Where a stored ``indices`` member's data lie in a local file, checked once (every index
    in the plane, the CRC) and read again a band of rows at a time; the file must not have
    changed since (size and modification time)."""

    def __init__(self, path: str, name: str, offset: int, shape, plane: int, stamp):
        self.path, self.name, self.offset = path, name, offset
        self.shape = tuple(int(v) for v in shape)
        self.plane, self.stamp = plane, stamp

    @classmethod
    def checked(cls, zf: zipfile.ZipFile, info: zipfile.ZipInfo, fh: BinaryIO, header: int,
                shape, name: str, dims: tuple[int, int]) -> _StoredIndices:
        plane = dims[0] * dims[1]
        row = shape[1] * shape[2] * 8
        block = max(1, _CHUNK // max(1, row)) * row
        left = info.file_size - header
        while left:
            data = fh.read(min(block, left))
            if not data or len(data) % 8:
                raise IndexMapError(f"{name}: member 'indices' is truncated")
            chunk = np.frombuffer(data, "<i8")
            if chunk.min() < 0 or chunk.max() >= plane:
                raise IndexMapError(f"{name}: corrupt map: indices outside the "
                                    f"{dims[0]}x{dims[1]} input plane (field 'input_shape')")
            left -= len(data)
        if fh.read(1):  # the member's end: zipfile checks the CRC
            raise IndexMapError(f"{name}: member 'indices' is longer than its header says")
        raw = zf.fp
        raw.seek(info.header_offset)
        local = raw.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise IndexMapError(f"{name}: member 'indices' has no local header")
        skip = 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30],
                                                                            "little")
        st = os.fstat(raw.fileno())
        return cls(os.path.abspath(name), name, info.header_offset + skip + header, shape,
                   plane, (st.st_size, st.st_mtime_ns, st.st_ino))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as native int64, each index checked again."""
        h, w, c = self.shape
        start, stop = max(0, start), min(h, stop)
        count = max(0, stop - start) * w * c
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if (st.st_size, st.st_mtime_ns, st.st_ino) != self.stamp:
                    raise IndexMapError(f"{self.name}: index map changed since it was checked")
                fh.seek(self.offset + start * w * c * 8)
                data = bytearray(count * 8)
                got = fh.readinto(data)
        except OSError as exc:
            raise IndexMapError(f"{self.name}: cannot read the index map ({_short(exc)})") \
                from None
        if got != count * 8:
            raise IndexMapError(f"{self.name}: index map changed since it was checked")
        rows = np.frombuffer(data, "<i8").reshape(-1, w, c).astype(np.int64, copy=False)
        if rows.size and (rows.min() < 0 or rows.max() >= self.plane):
            raise IndexMapError(f"{self.name}: index map changed since it was checked")
        return rows


def _dims(shape) -> str:
    return "x".join(str(v) for v in shape)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]
