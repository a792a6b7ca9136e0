"""`poolcli.app.outputs`: the one output policy. Exact values stay exact, results on the
input's scale are rounded and clipped with a note, signed results get a named display mapping;
each file is read back and compared with values worked out by hand."""

import os

import numpy as np
import pytest

from poolcli import imageio
from poolcli.app.outputs import WriteOptions, write_values
from poolcli.app.plan import Job
from poolcli.app.runner import guarded
from poolcli.errors import ImageWriteError

ROUNDED = "use --format npy or tiff for the exact values"


def write(values, path, *, channels=None, opts=WriteOptions(), **kw):
    """write_values; returns (display, notes)."""
    notes = []
    channels = channels or {1: ("L",), 3: ("R", "G", "B")}[values.shape[-1]]
    display = write_values(values, str(path), channels=channels, opts=opts, notes=notes, **kw)
    return display, notes


def back(path):
    return imageio.read_image(str(path)).array


RNG = np.random.default_rng(5)


EXACT = {
    "u8.png": RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8),
    "u16.png": RNG.integers(0, 65536, (4, 5, 1), dtype=np.uint16),
    "u8.bmp": RNG.integers(0, 256, (3, 2, 3), dtype=np.uint8),
    "f32.tif": RNG.normal(0, 100, (4, 5, 3)).astype(np.float32),
    "i16.tif": RNG.integers(-32768, 32768, (4, 5, 1), dtype=np.int16),
    "f64.npy": np.array([[[-1.5], [np.nan]], [[np.inf], [1e-300]]]),
    "i64.npy": np.array([[[2 ** 62], [-7]]], dtype=np.int64),
}


@pytest.mark.parametrize("name, values", EXACT.items(), ids=list(EXACT))
def test_values_the_format_holds_are_written_exactly(tmp_path, name, values):
    path = tmp_path / name
    display, notes = write(values, path, source_dtype=np.uint8)
    assert display is None and notes == []
    got = np.load(path) if name.endswith(".npy") else back(path)
    assert got.dtype == values.dtype
    np.testing.assert_array_equal(got, values)


def test_floats_on_an_8_bit_scale_are_rounded_and_clipped_with_a_note(tmp_path):
    # an average of uint8 cells: half to even, outside 0..255 clipped, NaN -> 0
    values = np.array([[-3.2, 0.5, 1.5], [2.5, 254.5, 255.7], [np.nan, 127.49, 3.5]])[..., None]
    display, notes = write(values, tmp_path / "avg.png", source_dtype=np.uint8)
    assert display is None
    assert notes == [f"written as uint8 (rounded and clipped); {ROUNDED}"]
    got = back(tmp_path / "avg.png")
    assert got.dtype == np.uint8
    assert got[..., 0].tolist() == [[0, 0, 2], [2, 254, 255], [0, 127, 4]]


def test_floats_from_a_16_bit_input_go_to_a_16_bit_png(tmp_path):
    values = np.array([[70000.2, -1.0], [1000.5, 1001.5]])[..., None]
    display, notes = write(values, tmp_path / "avg.png", source_dtype=np.uint16)
    assert notes == [f"written as uint16 (rounded and clipped); {ROUNDED}"]
    got = back(tmp_path / "avg.png")
    assert got.dtype == np.uint16
    assert got[..., 0].tolist() == [[65535, 0], [1000, 1002]]


def test_the_same_floats_are_exact_in_npy_and_tiff(tmp_path):
    values = np.array([[0.25, 300.75], [-2.5, 7.0]])[..., None]
    for name in ("avg.npy", "avg.tif"):
        display, notes = write(values, tmp_path / name, source_dtype=np.uint8)
        assert (display, notes) == (None, [])
    np.testing.assert_array_equal(np.load(tmp_path / "avg.npy"), values)
    np.testing.assert_array_equal(back(tmp_path / "avg.tif"), values)


def test_signed_results_get_the_display_mapping_asked_for(tmp_path):
    values = np.array([[-2.0, 0.0], [1.0, 2.0]])[..., None]
    display, notes = write(values, tmp_path / "n.png", signed=True,
                           opts=WriteOptions(display="minmax"))
    # (x + 2) / 4 * 255: 0, 127.5 -> 128 (half to even), 191.25 -> 191, 255
    assert display == "minmax [-2, 2] -> [0, 255] (whole image, all channels)"
    assert notes == [f"display mapping: {display}"]
    assert back(tmp_path / "n.png")[..., 0].tolist() == [[0, 128], [191, 255]]


def test_the_default_display_mapping_is_three_sigma(tmp_path):
    values = np.array([[-3.0, 3.0], [3.0, -3.0]])[..., None]  # mean 0, std 3
    display, notes = write(values, tmp_path / "n.png", signed=True)
    assert WriteOptions().display == "sigma:3"
    # -9..9 -> 0..255: -3 -> 6/18 * 255 = 85, 3 -> 12/18 * 255 = 170
    assert display == ("sigma 3: mean 0 +/- 3*std 3 = [-9, 9] -> [0, 255], clipped "
                       "(whole image, all channels)")
    assert notes == [f"display mapping: {display}"]
    assert back(tmp_path / "n.png")[..., 0].tolist() == [[85, 170], [170, 85]]


def test_a_clipping_display_mapping_counts_what_it_clipped(tmp_path):
    values = np.array([[-0.5, 0.25, 1.5]])[..., None]
    display, _ = write(values, tmp_path / "n.png", signed=True, opts=WriteOptions(display="clip"))
    assert display == "clip [0, 1] -> [0, 255] (2 of 3 values clipped)"
    assert back(tmp_path / "n.png")[..., 0].tolist() == [[0, 64, 255]]  # 63.75 -> 64


def test_signed_results_stay_exact_where_the_format_holds_them(tmp_path):
    values = np.array([[-1.25, 0.0], [3.5, -7.0]], dtype=np.float32)[..., None]
    display, notes = write(values, tmp_path / "n.npy", signed=True)
    assert (display, notes) == (None, [])
    got = np.load(tmp_path / "n.npy")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values)


def test_an_existing_file_needs_force(tmp_path):
    path = tmp_path / "a.png"
    first = np.zeros((2, 2, 1), np.uint8)
    write(first, path)
    with pytest.raises(ImageWriteError, match="exists"):
        write(first + 9, path)
    assert back(path)[..., 0].tolist() == [[0, 0], [0, 0]]
    write(first + 9, path, opts=WriteOptions(force=True))
    assert back(path)[..., 0].tolist() == [[9, 9], [9, 9]]
    assert sorted(os.listdir(tmp_path)) == ["a.png"]  # no temporary file left


def test_parent_directories_are_made(tmp_path):
    path = tmp_path / "new" / "deeper" / "a.npy"
    write(np.ones((1, 1, 1)), path)
    assert np.load(path).tolist() == [[[1.0]]]


def test_every_file_written_is_journaled_for_the_runner(tmp_path):
    def job_fn(job):
        write(np.ones((2, 2, 1), np.uint8), job.output + ".selected.png")
        write(np.ones((2, 2, 1), np.uint8), job.output)
        return {"output": job.output}

    job = Job("a.png", output=str(tmp_path / "a_max.png"))
    outcome = guarded(job_fn, job, ())
    assert outcome.written == [job.output + ".selected.png", job.output]
