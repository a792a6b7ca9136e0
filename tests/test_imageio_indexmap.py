"""poolcli.imageio.indexmap: round trips, and every hostile map refused with one clear line.

Every crafted file is made here (zipfile, numpy's .npy writer, hand-made .npy headers).
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
import warnings
import zipfile

import numpy as np
import pytest

from sidefiles import assert_refused, no_hang  # noqa: F401  (no_hang: autouse)

from poolcli.errors import IndexMapError
from poolcli.imageio import indexmap
from poolcli.ops import max_pool2d

RNG = np.random.default_rng(7)


def pooled(shape=(8, 10, 3)):
    x = RNG.integers(0, 255, shape, dtype=np.uint8)
    values, idx = max_pool2d(x, 2, return_indices=True)
    meta = indexmap.build_meta(
        operator="max", params={"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0),
                                "dilation": (1, 1), "ceil_mode": False},
        input_shape=x.shape, input_dtype=x.dtype, output_shape=values.shape, source="in.png")
    return idx, meta


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def npy_header(shape, dtype, *, fortran=False, version=(1, 0)) -> bytes:
    """Just a .npy header: it can claim any shape."""
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": fortran,
              "shape": tuple(shape)}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buffer, header)
    else:
        np.lib.format.write_array_header_2_0(buffer, header)
    return buffer.getvalue()


def meta_npy(meta) -> bytes:
    return npy(np.array(meta if isinstance(meta, str) else json.dumps(meta)))


def write_zip(path, members: dict, compression=zipfile.ZIP_STORED) -> str:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return str(path)


def craft(tmp_path, *, idx=None, meta=None, name="m.indices.npz", **changes) -> str:
    """A map whose members are given as arrays/bytes; meta fields changed (None deletes)."""
    good_idx, good_meta = pooled()
    idx = good_idx if idx is None else idx
    meta = dict(good_meta) if meta is None else meta
    if isinstance(meta, dict):
        for key, value in changes.items():
            if value is _DELETE:
                meta.pop(key, None)
            else:
                meta[key] = value
    members = {"indices.npy": idx if isinstance(idx, bytes) else npy(idx),
               "meta.npy": meta if isinstance(meta, bytes) else meta_npy(meta)}
    return write_zip(tmp_path / name, members)


_DELETE = object()


def refused(path, *fields, **kwargs) -> str:
    """Load ``path``; assert one IndexMapError line naming the file and each of ``fields``."""
    return assert_refused(IndexMapError, indexmap.load, path, *fields, **kwargs)


# ---- round trips ----------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    idx, meta = pooled()
    path = tmp_path / "out" / "a_max.indices.npz"  # the directory is created
    indexmap.save(path, idx, meta)
    m = indexmap.load(path)
    np.testing.assert_array_equal(m.indices, idx)
    assert m.indices.dtype == np.int64
    assert m.meta == json.loads(json.dumps(meta))
    assert m.input_shape == (8, 10, 3)
    assert m.geometry() == {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)}
    with np.load(path, allow_pickle=False) as z:  # still a plain .npz
        assert sorted(z.files) == ["indices", "meta"]


def test_save_reports_the_commit(tmp_path):
    idx, meta = pooled()
    seen = []
    indexmap.save(tmp_path / "a.indices.npz", idx, meta, on_commit=seen.append)
    assert seen == [str(tmp_path / "a.indices.npz")]


def test_the_same_map_gives_the_same_bytes_whenever_it_is_written(tmp_path, monkeypatch):
    """A Dask task retried after its first attempt committed the map must write the very same
    bytes (else "exists"): no clock, layout or byte order may show in the file."""
    idx, meta = pooled()
    indexmap.save(tmp_path / "a.indices.npz", idx, meta)
    later = time.time() + 400 * 86400 + 3.0  # another day, another second
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setattr(time, "time_ns", lambda: int(later * 1e9))
    indexmap.save(tmp_path / "b.indices.npz", np.asfortranarray(idx), dict(meta))
    indexmap.save(tmp_path / "c.indices.npz", idx.astype(">i8"), meta)
    first = (tmp_path / "a.indices.npz").read_bytes()
    assert (tmp_path / "b.indices.npz").read_bytes() == first
    assert (tmp_path / "c.indices.npz").read_bytes() == first
    with zipfile.ZipFile(tmp_path / "a.indices.npz") as zf:
        assert [(i.filename, i.date_time, i.compress_type) for i in zf.infolist()] == [
            ("indices.npy", (1980, 1, 1, 0, 0, 0), zipfile.ZIP_STORED),
            ("meta.npy", (1980, 1, 1, 0, 0, 0), zipfile.ZIP_STORED)]
    other = dict(meta, source="other.png")  # a different map is different bytes
    indexmap.save(tmp_path / "d.indices.npz", idx, other)
    assert (tmp_path / "d.indices.npz").read_bytes() != first


def test_a_retried_write_of_the_same_map_is_committed_and_a_first_write_refuses(tmp_path):
    from poolcli.errors import ImageWriteError
    from poolcli.imageio.files import retried_commits

    idx, meta = pooled()
    path = tmp_path / "a.indices.npz"
    indexmap.save(path, idx, meta)
    before = path.read_bytes()
    with pytest.raises(ImageWriteError, match=r"a\.indices\.npz: exists \(use --force"):
        indexmap.save(path, idx, meta)  # outside a retry: never accepted
    seen = []
    time.sleep(2.1)  # zip dates count in 2 s steps: a time-stamped writer would differ now
    with retried_commits():
        indexmap.save(path, idx, meta, on_commit=seen.append)  # the rerun: committed
        assert seen == [str(path)]
        other = idx.copy()
        other[0, 0, 0] ^= 1
        with pytest.raises(ImageWriteError, match="exists"):
            indexmap.save(path, other, meta)  # a different map is never "the same output"
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["a.indices.npz"]  # no temporary file left


def test_maps_written_by_np_savez_with_real_dates_still_load(tmp_path):
    idx, meta = pooled()
    path = tmp_path / "old.indices.npz"
    with zipfile.ZipFile(path, "w") as zf:  # as older writers did: dated entries
        for name, data in (("indices.npy", npy(idx)), ("meta.npy", meta_npy(meta))):
            zf.writestr(zipfile.ZipInfo(name, date_time=(2023, 5, 17, 12, 34, 56)), data)
    np.testing.assert_array_equal(indexmap.load(path).indices, idx)
    np.savez(tmp_path / "savez.indices.npz", indices=idx, meta=np.array(json.dumps(meta)))
    assert indexmap.load(tmp_path / "savez.indices.npz").meta == json.loads(json.dumps(meta))


def test_round_trip_of_an_adaptive_map_and_2d_indices(tmp_path):
    idx = RNG.integers(0, 80, (3, 4)).astype(np.int64)
    meta = indexmap.build_meta(operator="adaptive-max", params={"output_size": (3, 4)},
                               input_shape=(8, 10, 1), input_dtype="uint8",
                               output_shape=(3, 4, 1), source="in.png")
    indexmap.save(tmp_path / "a.indices.npz", idx, meta)
    m = indexmap.load(tmp_path / "a.indices.npz")
    assert m.indices.shape == (3, 4, 1) and m.meta["kernel"] is None
    assert m.geometry() == {"kernel_size": (6, 7), "stride": (1, 1), "padding": (0, 0)}


def test_other_layouts_numpy_writes_are_read(tmp_path):
    idx, meta = pooled()
    for variant in (np.asfortranarray(idx), idx.astype(">i4"), idx.astype(np.uint16)):
        m = indexmap.load(craft(tmp_path, idx=variant))
        np.testing.assert_array_equal(m.indices, idx)
        assert m.indices.dtype == np.int64
    path = tmp_path / "deflated.indices.npz"
    write_zip(path, {"indices.npy": npy(idx), "meta.npy": meta_npy(meta)}, zipfile.ZIP_DEFLATED)
    np.testing.assert_array_equal(indexmap.load(path).indices, idx)


def test_geometry_of_a_map_larger_than_its_input_names_the_file(tmp_path):
    idx = np.zeros((9, 4, 1), np.int64)
    meta = indexmap.build_meta(operator="adaptive-max", params={"output_size": (9, 4)},
                               input_shape=(8, 10, 1), input_dtype="uint8",
                               output_shape=(9, 4, 1), source="in.png")
    path = tmp_path / "big.indices.npz"
    indexmap.save(path, idx, meta)
    m = indexmap.load(path)
    assert m.path == str(path)
    with pytest.raises(IndexMapError, match=f"^{path}: map of adaptive-max output 9x4"):
        m.geometry()
    with pytest.raises(IndexMapError, match="^map of adaptive-max"):  # made in memory
        indexmap.IndexMap(idx, meta).geometry()


def test_map_path_for():
    assert indexmap.map_path_for("out/cat_max.png") == "out/cat_max.indices.npz"


# ---- the file itself ------------------------------------------------------------------------


def test_missing_directory_device_and_fifo(tmp_path):
    assert "no such file" in refused(tmp_path / "none.indices.npz")
    assert "directory" in refused(tmp_path)
    assert "character device" in refused("/dev/zero")
    fifo = tmp_path / "pipe.indices.npz"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert "FIFO" in refused(fifo)  # refused at once: nobody ever writes to it
    assert time.monotonic() - started < 5


def test_empty_text_and_truncated_files(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    assert "not a readable .npz" in refused(tmp_path / "empty.npz")
    (tmp_path / "text.npz").write_text("hello\n")
    refused(tmp_path / "text.npz", "not a readable .npz")
    idx, meta = pooled()
    indexmap.save(tmp_path / "good.npz", idx, meta)
    data = (tmp_path / "good.npz").read_bytes()
    for cut in (10, 100, len(data) // 2, len(data) - 30):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        refused(tmp_path / "cut.npz")


def test_damaged_data_fails_its_crc(tmp_path):
    idx, meta = pooled()
    indexmap.save(tmp_path / "good.npz", idx, meta)
    data = bytearray((tmp_path / "good.npz").read_bytes())
    at = data.find(b"indices.npy") + 200  # inside the stored index data
    data[at] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    assert "CRC" in refused(tmp_path / "bad.npz")


def test_file_size_cap_is_checked_before_reading(tmp_path):
    idx, meta = pooled()
    indexmap.save(tmp_path / "good.npz", idx, meta)
    assert "limit" in refused(tmp_path / "good.npz", max_bytes=100)


# ---- zip members ----------------------------------------------------------------------------


def test_members_other_than_indices_and_meta(tmp_path):
    idx, meta = pooled()
    extra = write_zip(tmp_path / "extra.npz", {"indices.npy": npy(idx), "meta.npy": meta_npy(meta),
                                                "evil.npy": npy(idx)})
    refused(extra, "'evil.npy'", "only 'indices' and 'meta'")
    lone = write_zip(tmp_path / "lone.npz", {"indices.npy": npy(idx)})
    refused(lone, "'indices'/'meta'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        twice = write_zip(tmp_path / "twice.npz", {"indices.npy": npy(idx),
                                                   "meta.npy": meta_npy(meta)})
        with zipfile.ZipFile(twice, "a") as zf:
            zf.writestr("meta.npy", meta_npy(meta))
    refused(twice, "'meta.npy'", "twice")


def test_a_directory_of_many_entries_is_refused_before_zipfile_reads_it(tmp_path, monkeypatch):
    idx, meta = pooled()
    many = {f"x{i}.npy": b"" for i in range(3000)}
    path = write_zip(tmp_path / "many.npz", {"indices.npy": npy(idx), "meta.npy": meta_npy(meta),
                                             **many})

    def no_zipfile(*args, **kwargs):
        raise AssertionError("zipfile parsed the directory")

    with monkeypatch.context() as patched:
        patched.setattr(zipfile, "ZipFile", no_zipfile)
        refused(path, "not a poolcli index map", "3002 members")


def test_unusual_compression_is_refused(tmp_path):
    idx, meta = pooled()
    path = write_zip(tmp_path / "bz.npz", {"indices.npy": npy(idx), "meta.npy": meta_npy(meta)},
                     zipfile.ZIP_BZIP2)
    refused(path, "compression")


# ---- .npy headers, checked before anything is allocated -------------------------------------


def test_huge_claimed_shape_is_refused_before_allocating(tmp_path):
    """A header claiming 13000 x 13000 x 3 int64 (3.8 GiB) over a few bytes of data."""
    shape = [13000, 13000, 3]
    meta = pooled()[1] | {"input_shape": shape, "output_shape": shape}
    path = craft(tmp_path, idx=npy_header(shape, "<i8") + b"\0" * 64, meta=meta)
    started = time.monotonic()
    message = refused(path, "'indices'", "announces")
    assert time.monotonic() - started < 2, message
    refused(path, "'indices'", "limit", max_bytes=1 << 20)


def test_huge_shape_beyond_the_pixel_guard(tmp_path):
    """A map claiming a 20000 x 20000 input would unpool to a 1.2 GiB image."""
    meta = pooled()[1] | {"input_shape": [20000, 20000, 3]}
    refused(craft(tmp_path, meta=meta), "'input_shape'", "--max-pixels 178956970")
    refused(craft(tmp_path), "'input_shape'", "--max-pixels 50", max_pixels=50)
    big_out = pooled()[1] | {"output_shape": [20000, 20000, 3]}
    refused(craft(tmp_path, meta=big_out), "'output_shape'", "--max-pixels")
    assert indexmap.load(craft(tmp_path), max_pixels=None).input_shape == (8, 10, 3)


def test_meta_header_claiming_a_huge_string(tmp_path):
    path = craft(tmp_path, meta=npy_header((), "<U100000000") + b"{}")
    refused(path, "metadata", "characters")


def test_pickled_object_arrays_are_refused(tmp_path):
    idx, meta = pooled()
    objects = np.empty(idx.shape, dtype=object)
    objects[...] = 1
    refused(craft(tmp_path, idx=objects), "'indices'", "pickle")
    refused(craft(tmp_path, meta=npy(np.array([meta], dtype=object))), "'meta'", "pickle")


@pytest.mark.parametrize("bad", [
    np.zeros((4, 5, 3), np.float64),
    np.zeros((4, 5), np.int64),
    np.zeros((4, 5, 3, 1), np.int64),
    np.zeros((4, 5, 3), [("a", "<i8")]),
    np.zeros((4, 5, 3), np.bool_),
])
def test_indices_of_the_wrong_kind(tmp_path, bad):
    refused(craft(tmp_path, idx=bad), "indices")


def test_unsupported_or_garbled_npy_headers(tmp_path):
    idx, meta = pooled()
    v3 = bytearray(npy(idx))
    v3[6] = 3
    refused(craft(tmp_path, idx=bytes(v3)), "'indices'", "version 3.0")
    garbled = b"\x93NUMPY\x01\x00\x10\x00{'descr': what}\n" + b"\0" * 64
    assert "object at" not in refused(craft(tmp_path, idx=garbled), "'indices'", ".npy header")
    # numpy retries a 1.0 header that does not parse through tokenize, whose TokenError (an
    # open triple-quoted string; found by the fuzzer) is no ValueError
    text = b"{" + b"'" * 3 + b"descr': 1}\n"
    quoted = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + b"\0" * 64
    refused(craft(tmp_path, idx=quoted), "'indices'", ".npy header")
    refused(craft(tmp_path, meta=quoted), "'meta'", ".npy header")
    refused(craft(tmp_path, idx=npy(idx)[:-8]), "'indices'")  # data shorter than announced
    refused(craft(tmp_path, idx=npy(idx) + b"\0" * 8), "'indices'")  # longer


# ---- metadata fields ------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "words"), [
    ("format", "poolcli-other", "'format'"),
    ("format", _DELETE, "'format'"),
    ("format_version", 2, "'format_version'"),
    ("format_version", True, "'format_version'"),
    ("format_version", "1", "'format_version'"),
    ("operator", 3, "'operator'"),
    ("operator", "", "'operator'"),
    ("operator", _DELETE, "'operator'"),
    ("kernel", [0, 2], "'kernel'"),
    ("kernel", [2], "'kernel'"),
    ("kernel", [2, 2, 2], "'kernel'"),
    ("kernel", [True, 2], "'kernel'"),
    ("kernel", [2.0, 2], "'kernel'"),
    ("kernel", "2x2", "'kernel'"),
    ("kernel", [1 << 21, 2], "'kernel'"),
    ("kernel", _DELETE, "'kernel'"),
    ("stride", [0, 1], "'stride'"),
    ("padding", [-1, 0], "'padding'"),
    ("dilation", [0, 1], "'dilation'"),
    ("dilation", [1, False], "'dilation'"),
    ("ceil_mode", 1, "'ceil_mode'"),
    ("ceil_mode", "false", "'ceil_mode'"),
    ("ceil_mode", _DELETE, "'ceil_mode'"),
    ("output_size", [0, 3], "'output_size'"),
    ("input_shape", [8, 10], "'input_shape'"),
    ("input_shape", [8, 10, 0], "'input_shape'"),
    ("input_shape", [8, 10, True], "'input_shape'"),
    ("input_shape", "8x10x3", "'input_shape'"),
    ("input_shape", _DELETE, "'input_shape'"),
    ("output_shape", [4, 5], "'output_shape'"),
    ("output_shape", [4, 6, 3], "'output_shape'"),
    ("output_shape", _DELETE, "'output_shape'"),
    ("params", [1, 2], "'params'"),
    ("source", 3, "'source'"),
])
def test_bad_meta_fields(tmp_path, field, value, words):
    refused(craft(tmp_path, **{field: value}), words)


def test_meta_that_is_not_a_json_object(tmp_path):
    refused(craft(tmp_path, meta="[1, 2, 3]"), "not a poolcli index map")
    refused(craft(tmp_path, meta="{not json"), "metadata", "invalid JSON")
    refused(craft(tmp_path, meta='{"params": ' + "[" * 100_000), "metadata", "nested")
    nested = pooled()[1] | {"params": {"a": [[[[[[[[[[1]]]]]]]]]]}}
    refused(craft(tmp_path, meta=nested), "metadata", "nested")
    refused(craft(tmp_path, meta=npy(np.zeros(3))), "metadata")


def test_indices_outside_the_input_plane(tmp_path):
    idx, _ = pooled()
    for bad in (-1, 80, 1 << 40):
        wrong = idx.copy()
        wrong[1, 2, 0] = bad
        refused(craft(tmp_path, idx=wrong), "outside the 8x10 input plane", "'input_shape'")
    huge = idx.astype(np.uint64)
    huge[0, 0, 0] = np.iinfo(np.uint64).max
    refused(craft(tmp_path, idx=huge), "outside")


def test_channels_must_agree(tmp_path):
    idx, meta = pooled()
    refused(craft(tmp_path, idx=idx[:, :, :2], meta=meta | {"output_shape": [4, 5, 2]}),
            "2 index channels for a 3-channel input", "'input_shape'")


# ---- written band by band, loaded lazily (large maps, issue 17) ----------------------------


@pytest.mark.parametrize("shape,band", [((8, 10, 3), 1), ((8, 10, 3), 3), ((30, 7, 1), 4),
                                        ((1, 1, 2), 1)])
def test_a_map_written_band_by_band_has_the_bytes_of_save(tmp_path, shape, band):
    x = RNG.integers(0, 255, (2 * shape[0], 2 * shape[1], shape[2]), dtype=np.uint8)
    _, idx = max_pool2d(x, 2, return_indices=True)
    meta = indexmap.build_meta(operator="max", params={"kernel": (2, 2)}, input_shape=x.shape,
                               input_dtype=x.dtype, output_shape=idx.shape, source="in.png")
    whole, banded = tmp_path / "whole.indices.npz", tmp_path / "sub" / "banded.indices.npz"
    indexmap.save(whole, idx, meta)
    committed = []
    with indexmap.open_writer(str(banded), shape=idx.shape, meta=meta,
                              on_commit=committed.append) as writer:
        for a in range(0, idx.shape[0], band):
            writer.write_rows(idx[a : a + band])
        writer.commit()
    assert whole.read_bytes() == banded.read_bytes()
    assert committed == [str(banded)]


def test_an_aborted_band_writer_leaves_nothing(tmp_path, capfd):
    idx, meta = pooled()
    target = tmp_path / "m.indices.npz"
    with pytest.raises(RuntimeError):
        with indexmap.open_writer(str(target), shape=idx.shape, meta=meta) as writer:
            writer.write_rows(idx[:2])
            raise RuntimeError("stop")
    import gc

    gc.collect()
    assert os.listdir(tmp_path) == []
    assert capfd.readouterr().err == ""  # the half-written archive did not complain
    (tmp_path / "m.indices.npz").write_bytes(b"x")
    with pytest.raises(Exception, match="exists"):
        indexmap.open_writer(str(target), shape=idx.shape, meta=meta)


def test_a_large_stored_map_loads_lazily_and_reads_bands(tmp_path, monkeypatch):
    import pickle

    idx, meta = pooled((20, 14, 3))
    path = tmp_path / "m.indices.npz"
    indexmap.save(path, idx, meta)
    assert not indexmap.load(path).lazy
    monkeypatch.setattr(indexmap, "LAZY_BYTES", 1)
    m = indexmap.load(path)
    assert m.lazy and m.shape == idx.shape
    assert np.array_equal(m.rows(2, 5), idx[2:5]) and m.rows(2, 5).dtype == np.int64
    assert len(pickle.dumps(m)) < idx.nbytes
    again = pickle.loads(pickle.dumps(m))
    assert np.array_equal(again.indices, idx) and not again.lazy
    assert m.geometry() == indexmap.IndexMap(idx, meta).geometry()
    os.utime(path, ns=(0, 0))  # the file changed since it was checked
    with pytest.raises(IndexMapError, match="changed since it was checked"):
        m.rows(0, 1)


def test_a_lazy_map_checks_every_index_and_its_crc(tmp_path, monkeypatch):
    monkeypatch.setattr(indexmap, "LAZY_BYTES", 1)
    idx, meta = pooled()
    bad = idx.copy()
    bad[-1, -1, -1] = 8 * 10
    path = tmp_path / "m.indices.npz"
    indexmap.save(path, bad, meta)
    refused(path, "outside the 8x10 input plane")
    indexmap.save(path, idx, meta, overwrite=True)
    data = bytearray(path.read_bytes())
    data[data.find(b"indices.npy") + 200] ^= 0xFF  # inside the indices' data
    path.write_bytes(bytes(data))
    refused(path, "CRC")
