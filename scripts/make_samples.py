#!/usr/bin/env python3
"""(Re)create ``sample_images/`` from scikit-image's bundled data files.

Nothing is downloaded: the four source photographs ship inside the installed ``skimage`` package
(``skimage/data/*.png``) and are read from there with Pillow. The script is deterministic, so
running it twice gives byte-identical files.

Files written
-------------
chelsea.png, coffee.png, astronaut.png, camera.png
    Byte copies of the scikit-image originals (8-bit RGB; camera is 8-bit grey).
chelsea_rgba.png
    chelsea plus an alpha channel: a soft elliptical vignette (opaque centre, transparent corners),
    so alpha takes every value from 0 to 255.
camera16.png
    16-bit grey (Pillow mode ``I;16``): camera smoothed in float (Gaussian, sigma 1.2) and stretched
    to 0..65535, so the values genuinely use more than 8 bits.
coffee16.png
    16 bits per channel RGB: coffee downscaled 2x (2x2 block mean) to 200x300, smoothed (Gaussian,
    sigma 0.8) and scaled to 0..65535; written with ``imagecodecs.png_encode`` because Pillow cannot
    write 16-bit RGB PNG.
LICENSES.md
    Origin and licence of every file.

Usage::

    python scripts/make_samples.py [OUTPUT_DIR]     # default: <repo>/sample_images
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

COPIED = ("chelsea.png", "coffee.png", "astronaut.png", "camera.png")
MAX_TOTAL_BYTES = 3 * 1024 * 1024

LICENSES = """\
# Sample images: origin and licence

All files come from, or are derived from, the data files bundled with
[scikit-image](https://scikit-image.org) (`skimage/data/`); the licence notes are those of the
`skimage.data` docstrings. Regenerate this directory with `python scripts/make_samples.py`.

## Copies (byte-identical to the scikit-image files)

- `chelsea.png`: Chelsea the cat, 451x300 RGB.
  CC0 by the photographer, Stefan van der Walt ("No copyright restrictions").
- `coffee.png`: coffee cup, 600x400 RGB; photograph courtesy of Pikolo Espresso Bar.
  CC0 by the photographer, Rachel Michetti ("No copyright restrictions").
- `astronaut.png`: astronaut Eileen Collins, 512x512 RGB, from the NASA Great Images database.
  Public domain ("No known copyright restrictions, released into the public domain").
- `camera.png`: grey "camera" image, 512x512.
  CC0 by the photographer, Lav Varshney ("No copyright restrictions").

## Derived by `scripts/make_samples.py` (same licence as their source)

- `chelsea_rgba.png`: `chelsea.png` plus an alpha channel, a soft elliptical vignette
  (opaque centre, transparent corners). CC0.
- `camera16.png`: `camera.png` Gaussian-smoothed (sigma 1.2) in float and stretched to
  16-bit grey 0..65535. CC0.
- `coffee16.png`: `coffee.png` downscaled 2x by block mean to 300x200, Gaussian-smoothed
  (sigma 0.8), 16 bits per channel RGB. CC0.
"""


def skimage_data_dir() -> Path:
    """Return the directory holding scikit-image's bundled data files."""
    import skimage

    return Path(skimage.__file__).resolve().parent / "data"


def gaussian_smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of the two leading axes (float64, reflect padding).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        Input values (any real dtype).
    sigma : float
        Standard deviation in pixels; the kernel is truncated at 3 sigma.
    """
    radius = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = np.asarray(image, dtype=np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        acc = np.zeros_like(out)
        n = out.shape[axis]
        for i, w in enumerate(kernel):
            acc += w * np.take(padded, np.arange(i, i + n), axis=axis)
        out = acc
    return out


def stretch_to_uint16(values: np.ndarray) -> np.ndarray:
    """Map the full range of ``values`` linearly onto 0..65535 (rounded)."""
    lo, hi = float(values.min()), float(values.max())
    scaled = (values - lo) / (hi - lo) * 65535.0
    return np.clip(np.rint(scaled), 0, 65535).astype(np.uint16)


def make_chelsea_rgba(rgb: np.ndarray) -> np.ndarray:
    """Append a soft elliptical vignette (255 in the centre, 0 in the corners) as alpha."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.hypot((xx - (w - 1) / 2) / (w / 2), (yy - (h - 1) / 2) / (h / 2))
    # r = 0 at the centre, 1 on the inscribed ellipse, ~1.41 in the corners.
    ramp = np.clip((1.25 - r) / 0.6, 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
    alpha = np.rint(ramp * 255).astype(np.uint8)
    return np.dstack([rgb, alpha])


def make_camera16(grey: np.ndarray) -> np.ndarray:
    """Smooth the 8-bit camera image in float and stretch it to 16 bits (H, W) uint16."""
    return stretch_to_uint16(gaussian_smooth(grey, 1.2))


def make_coffee16(rgb: np.ndarray) -> np.ndarray:
    """Downscale coffee 2x by block mean to 200x300, smooth, scale to 16 bits (H, W, 3) uint16."""
    h, w = (rgb.shape[0] // 2) * 2, (rgb.shape[1] // 2) * 2
    blocks = rgb[:h, :w].astype(np.float64).reshape(h // 2, 2, w // 2, 2, 3)
    small = blocks.mean(axis=(1, 3))
    smooth = gaussian_smooth(small, 0.8)
    # Keep the photometric scale of the original: 8-bit value v maps to v * 257.
    return np.clip(np.rint(smooth * 257.0), 0, 65535).astype(np.uint16)


def main(argv: list[str]) -> int:
    """Write every sample file into the output directory; return a process exit code."""
    import imagecodecs

    default = Path(__file__).resolve().parent.parent / "sample_images"
    out_dir = Path(argv[1]) if len(argv) > 1 else default
    out_dir.mkdir(parents=True, exist_ok=True)
    src = skimage_data_dir()

    for name in COPIED:
        shutil.copyfile(src / name, out_dir / name)

    with Image.open(src / "chelsea.png") as im:
        chelsea = np.asarray(im.convert("RGB"))
    with Image.open(src / "camera.png") as im:
        camera = np.asarray(im.convert("L"))
    with Image.open(src / "coffee.png") as im:
        coffee = np.asarray(im.convert("RGB"))

    Image.fromarray(make_chelsea_rgba(chelsea)).save(out_dir / "chelsea_rgba.png", compress_level=9)
    # A 2-D uint16 array becomes Pillow mode "I;16", saved as a 16-bit greyscale PNG.
    Image.fromarray(make_camera16(camera)).save(out_dir / "camera16.png", compress_level=9)
    (out_dir / "coffee16.png").write_bytes(imagecodecs.png_encode(make_coffee16(coffee), level=9))
    (out_dir / "LICENSES.md").write_text(LICENSES, encoding="utf-8")

    total = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
    if total > MAX_TOTAL_BYTES:
        sys.stderr.write(f"make_samples: {out_dir} holds {total} bytes, over {MAX_TOTAL_BYTES}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
