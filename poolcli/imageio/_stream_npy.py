"""``.npy`` read and written a band of rows at a time (private to :mod:`poolcli.imageio`).

The reader gives what ``read_image`` gives (``bool`` as ``uint8`` 0/1, ``float16`` widened to
``float32``, native byte order, channels ``c0, c1, ...``); the writer's file is byte-identical
to ``np.save`` of the whole array.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

from poolcli.imageio._common import corrupt, npy_header
from poolcli.imageio._guard import check_bytes, check_pixels
from poolcli.imageio._stream_base import BandReader, BandWriter

__all__ = ["NpyBandWriter", "open_npy_reader"]

_BLOCK_BYTES = 4 << 20  # rows read at a time


class _NpyReader(BandReader):
    def __init__(self, fh: BinaryIO, offset: int, stored: np.dtype, **kw):
        super().__init__(**kw)
        self._fh, self._offset, self._stored = fh, offset, stored
        self._row_bytes = self.width * len(self.channels) * stored.itemsize
        self._block = max(1, _BLOCK_BYTES // max(1, self._row_bytes))

    def _produce(self, wanted: int) -> np.ndarray:
        first = max(self._next, wanted)
        count = min(self._block, self.height - first)
        self._fh.seek(self._offset + first * self._row_bytes)
        data = self._fh.read(count * self._row_bytes)
        if len(data) != count * self._row_bytes:
            raise corrupt(self.source, "NPY")
        self._next = first
        rows = np.frombuffer(data, self._stored).reshape(count, self.width, len(self.channels))
        return rows.astype(self.dtype)  # native order, bool -> uint8, float16 -> float32

    def _release(self) -> None:
        self._fh.close()


def open_npy_reader(fh: BinaryIO, source: str, size: int, max_pixels: int | None,
                    notes: list[str]) -> BandReader | None:
    """A reader of a C-order numeric ``.npy`` (anything else: ``None``, read_image decides)."""
    fh.seek(0)
    try:
        shape, fortran, stored = npy_header(fh)
    except Exception:
        return None
    if fortran or stored.hasobject or stored.names is not None or stored.kind not in "biuf":
        return None
    if len(shape) not in (2, 3) or 0 in shape:
        return None
    height, width = int(shape[0]), int(shape[1])
    count = int(shape[2]) if len(shape) == 3 else 1
    check_pixels(source, width, height, max_pixels)
    itemsize = 4 if stored == np.float16 else stored.itemsize
    check_bytes(source, width, height, count, itemsize, stored.name, max_pixels)
    offset = fh.tell()
    if size - offset < width * height * count * stored.itemsize:
        raise corrupt(source, "NPY")
    dtype = stored.newbyteorder("=")
    if stored == np.bool_:
        dtype = np.dtype(np.uint8)
        notes.append("bool array read as uint8 0/1")
    elif stored == np.float16:
        dtype = np.dtype(np.float32)
        notes.append("float16 widened to float32 (exact)")
    return _NpyReader(fh, offset, stored, source=source, fmt="NPY", height=height, width=width,
                      channels=tuple(f"c{i}" for i in range(count)), dtype=dtype,
                      mode=f"npy {stored.name}", notes=notes)


class NpyBandWriter(BandWriter):
    """``np.save``'s header, then the rows as they come."""

    def __init__(self, target: str, *, names: tuple[str, ...], **kw):
        self._names = names
        super().__init__(target, channels=len(names), **kw)
        if self.dtype.hasobject or self.dtype.names is not None or self.dtype.kind not in "biufc":
            self.abort()
            raise ValueError(f"cannot write dtype {self.dtype} to .npy (numeric arrays only)")

    def _start(self, fh: BinaryIO) -> None:
        shape = (self.height, self.width, self.channel_count)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": shape}
        _write_header(fh, header)

    def _encode(self, fh: BinaryIO, rows: np.ndarray) -> None:
        fh.write(np.ascontiguousarray(rows).data)


def _write_header(fh: BinaryIO, header: dict) -> None:
    """The header ``np.save`` writes for this array (version 1.0 unless it needs 2.0)."""
    try:
        np.lib.format.write_array_header_1_0(fh, header)
    except ValueError:
        np.lib.format.write_array_header_2_0(fh, header)
