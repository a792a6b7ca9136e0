"""Pictures of what operators do: contact sheets, selection maps and terminal previews.

Pure composition: numpy arrays (and Pillow for text) in, numpy arrays or strings out. No click,
no file I/O, no printing; ``poolcli.cli_visual`` decides what to show and where.

Contact-sheet layout (all sizes in pixels, see :func:`compose_sheet`)::

    +-- MARGIN ------------------------------------------------------------+
    | title (only with a title: title_height(tile) tall)                    |
    | [tile][GAP][tile][GAP]...[tile]     one cell = cell_w x (th + label)  |
    |  label  (LABEL_LINES lines)                                          |
    | GAP between wrapped rows of one image, IMAGE_GAP between images       |
    +----------------------------------------------------------------------+

    width  = 2*MARGIN + cols*cell_w + (cols-1)*GAP
    height = 2*MARGIN + title_h + sum(tile_h_i + label_h) over sheet rows
             + GAP between rows of one image + IMAGE_GAP between images

``cell_w`` is the widest tile (``tile`` itself unless every image is portrait). Every tile of one
image is resized to that image's tile box: the input's aspect ratio with its longer side
``tile``, with nearest-neighbour sampling so pooled pixels stay crisp blocks.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from poolcli.formats import DEFAULT_DISPLAY

__all__ = [
    "MARGIN",
    "GAP",
    "IMAGE_GAP",
    "LABEL_LINES",
    "NEUTRAL_GREY",
    "DisplayScale",
    "Tile",
    "font_size_for",
    "line_height_for",
    "label_height",
    "title_height",
    "tile_box",
    "sheet_size",
    "to_rgb8",
    "resize_nearest",
    "resize_max",
    "selection_picture",
    "abs_diff_picture",
    "compose_sheet",
    "render_halfblocks",
    "preview_enabled",
    "latin",
]

MARGIN = 12  # around the whole sheet
GAP = 8  # between cells of one image (horizontally and between wrapped rows)
IMAGE_GAP = 20  # between the rows of two different images
LABEL_LINES = 3  # text lines under every tile (wrapped, the last one ellipsized)
LABEL_PAD = 4  # space between a tile and its label, and below the label
NEUTRAL_GREY = 128  # background alpha is composited over
BACKGROUND = (250, 250, 250)
TEXT = (25, 25, 25)
HEADLINE = (10, 55, 130)  # first label line (the operator)
BORDER = (180, 180, 180)

# The bundled Aileron font covers Latin-1 (and the ellipsis); other characters would show as boxes.
_REPLACE = {"×": "x", "−": "-", "→": "->", "α": "alpha", "·": "*", "…": "…"}


def latin(text: str) -> str:
    """Text drawable with Pillow's bundled font: Latin-1 plus the ellipsis, others replaced."""
    out = []
    for ch in str(text):
        if ch in _REPLACE:
            out.append(_REPLACE[ch])
        elif ord(ch) < 256 and ch.isprintable():
            out.append(ch)
        else:
            out.append("?")
    return "".join(out)


# --------------------------------------------------------------------------------------------------
# Geometry of the sheet
# --------------------------------------------------------------------------------------------------


def font_size_for(tile: int) -> int:
    """Label font size (px) for tiles whose longer side is ``tile``: legible, never huge."""
    return max(11, min(24, round(tile / 18)))


def line_height_for(tile: int) -> int:
    return round(font_size_for(tile) * 1.3)


def label_height(tile: int) -> int:
    """Height of the label block under each tile."""
    return LABEL_LINES * line_height_for(tile) + 2 * LABEL_PAD


def title_height(tile: int, has_title: bool) -> int:
    """Height of the title band (0 without a title), GAP below it included."""
    if not has_title:
        return 0
    return round((font_size_for(tile) + 6) * 1.3) + GAP


def tile_box(hw: tuple[int, int], tile: int) -> tuple[int, int]:
    """``(th, tw)`` of an ``(h, w)`` image scaled so that its longer side is ``tile``.

    >>> tile_box((300, 451), 256)
    (170, 256)
    >>> tile_box((512, 512), 100), tile_box((10, 5), 100)
    ((100, 100), (100, 50))
    """
    h, w = int(hw[0]), int(hw[1])
    if h < 1 or w < 1 or tile < 1:
        raise ValueError(f"tile_box needs positive sizes, got image {h}x{w} and tile {tile}")
    if w >= h:
        return max(1, round(tile * h / w)), tile
    return tile, max(1, round(tile * w / h))


def sheet_size(boxes: list[tuple[int, int]], n_tiles: int, cols: int, tile: int,
               has_title: bool) -> tuple[int, int]:
    """``(width, height)`` of a sheet: one ``(th, tw)`` box per image, ``n_tiles`` tiles each."""
    cols = max(1, min(cols, n_tiles))
    cell_w = max(tw for _, tw in boxes)
    rows_per_image = math.ceil(n_tiles / cols)
    width = 2 * MARGIN + cols * cell_w + (cols - 1) * GAP
    height = 2 * MARGIN + title_height(tile, has_title)
    lab = label_height(tile)
    for i, (th, _) in enumerate(boxes):
        height += rows_per_image * (th + lab) + (rows_per_image - 1) * GAP
        if i:
            height += IMAGE_GAP
    return width, height


# --------------------------------------------------------------------------------------------------
# Values to 8-bit RGB
# --------------------------------------------------------------------------------------------------


#: Float values may hold signalling NaNs (any bit pattern in a .npy file): casting them raises
#: numpy's "invalid value encountered in cast" warning, which a real process prints on stderr.
#: Every NaN here is handled on purpose (mapped, counted, ignored), so that warning is off.
_QUIET_NAN = np.errstate(invalid="ignore")


@dataclass(frozen=True)
class DisplayScale:
    """How values on an input image's scale become 0..255, shared by every tile of that image.

    ``uint8`` input: :func:`poolcli.imageio.fit_to_dtype` to uint8 (round and clip). ``uint16``:
    fit to uint16, then divided by 257 (65535 -> 255). Anything else: ``lo..hi`` -> 0..255
    linearly, clipped (``0..1`` for floats already in that range, else the input's finite range).
    """

    kind: str  # "uint8", "uint16" or "linear"
    lo: float = 0.0
    hi: float = 255.0

    @classmethod
    def for_input(cls, x: np.ndarray, colour_channels: int | None = None) -> "DisplayScale":
        x = np.asarray(x)
        if x.dtype == np.uint8:
            return cls("uint8")
        if x.dtype == np.uint16:
            return cls("uint16", 0.0, 65535.0)
        data = x if colour_channels is None else x[..., :colour_channels]
        data = data[np.isfinite(data)] if data.dtype.kind == "f" else data.ravel()
        if data.size == 0:
            return cls("linear", 0.0, 1.0)
        lo, hi = float(data.min()), float(data.max())
        if x.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
            return cls("linear", 0.0, 1.0)
        if hi <= lo:
            hi = lo + 1.0
        return cls("linear", lo, hi)

    def describe(self) -> str:
        if self.kind == "uint8":
            return "8-bit values as they are (float results rounded and clipped)"
        if self.kind == "uint16":
            return "16-bit values shown as 8-bit (value / 257)"
        return f"[{self.lo:.4g}, {self.hi:.4g}] -> [0, 255], clipped"

    @_QUIET_NAN
    def clipped_fraction(self, values: np.ndarray) -> float:
        """Fraction of the finite values outside the displayed range (shown clipped)."""
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return 0.0
        lo, hi = (0.0, 255.0) if self.kind == "uint8" else (self.lo, self.hi)
        return float(np.count_nonzero((v < lo - 0.5) | (v > hi + 0.5)) / v.size)

    @_QUIET_NAN
    def apply(self, values: np.ndarray) -> np.ndarray:
        from poolcli.imageio import fit_to_dtype

        values = np.asarray(values)
        if self.kind == "uint8":
            return fit_to_dtype(values, np.uint8)
        if self.kind == "uint16":
            v16 = fit_to_dtype(values, np.uint16).astype(np.float64)
            return np.rint(v16 / 257.0).astype(np.uint8)
        x = np.nan_to_num(values.astype(np.float64), nan=self.lo, posinf=self.hi, neginf=self.lo)
        return np.clip(np.rint((x - self.lo) / (self.hi - self.lo) * 255.0), 0, 255).astype(
            np.uint8)


def colour_count(c: int, channels: tuple[str, ...] | None) -> tuple[int, bool]:
    """(colour channels, has alpha) for ``c`` channels named ``channels``."""
    if channels is not None and len(channels) == c:
        alpha = c in (2, 4) and channels[-1] == "A"
    else:
        alpha = c in (2, 4)
    if alpha:
        return c - 1, True
    return (3 if c >= 3 else 1), False


@_QUIET_NAN
def to_rgb8(
    values: np.ndarray,
    *,
    scale: DisplayScale | None = None,
    source_dtype=None,
    channels: tuple[str, ...] | None = None,
    signed: bool | None = None,
    alpha: str = "composite",
) -> tuple[np.ndarray, list[str]]:
    """Any operator result as ``(H, W, 3)`` uint8 for a picture, and notes on what was done.

    Parameters
    ----------
    values : ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)`` (the first image is shown).
    scale : DisplayScale, optional
        The input image's scale (results on the input's scale: pooling). Default: from
        ``source_dtype`` when given (``uint8``/``uint16``), else from the values themselves.
    signed : bool, optional
        Normalized (signed) values: shown with ``to_display(..., "sigma:3")`` and alpha dropped.
        Default: float values with a negative entry and no ``scale``/``source_dtype``.
    alpha : {"composite", "drop"}
        What to do with an alpha channel: composite the colour over neutral grey (128) with
        the (pooled) alpha, or drop it.

    Grey stays grey (repeated to RGB); channels beyond RGB(A) are not shown (noted).
    """
    from poolcli.imageio import to_display

    v = np.asarray(values)
    notes: list[str] = []
    if v.ndim == 4:
        if v.shape[0] > 1:
            notes.append(f"first of {v.shape[0]} images shown")
        v = v[0]
    if v.ndim == 2:
        v = v[:, :, None]
    if v.ndim != 3 or 0 in v.shape:
        raise ValueError(f"cannot show an array of shape {np.shape(values)} as an image")
    if v.dtype == np.bool_:
        v = v.astype(np.uint8) * 255
    if v.dtype.kind not in "uif":
        raise ValueError(f"cannot show a {v.dtype} array as an image")
    ncol, has_alpha = colour_count(v.shape[2], channels)
    if v.shape[2] > ncol + has_alpha:
        notes.append(f"channels {ncol + has_alpha}..{v.shape[2] - 1} not shown")
    colour = v[..., :ncol]
    if signed is None:
        signed = False
        if scale is None and source_dtype is None and v.dtype.kind == "f":
            finite = colour[np.isfinite(colour)]
            signed = bool(finite.size and finite.min() < 0)
    if signed:
        rgb8, desc = to_display(colour, DEFAULT_DISPLAY)
        notes.append(f"display {desc}")
        if has_alpha:
            notes.append("alpha dropped")
        has_alpha = False
    else:
        if scale is None:
            if source_dtype is not None and np.dtype(source_dtype) in (np.uint8, np.uint16):
                scale = DisplayScale("uint8" if np.dtype(source_dtype) == np.uint8 else "uint16")
            elif v.dtype in (np.uint8, np.uint16):
                scale = DisplayScale.for_input(v)
            elif v.dtype.kind == "f":
                finite = colour[np.isfinite(colour)]
                top = float(finite.max()) if finite.size else 0.0
                low = float(finite.min()) if finite.size else 0.0
                if low >= 0 and top <= 1.0:
                    scale = DisplayScale("linear", 0.0, 1.0)
                elif low >= 0 and top <= 255.0:
                    scale = DisplayScale("uint8")
                else:
                    scale = DisplayScale.for_input(colour)
            else:
                scale = DisplayScale.for_input(colour)
        rgb8 = scale.apply(colour)
    if ncol == 1:
        rgb8 = np.repeat(rgb8, 3, axis=2)
    elif ncol == 2:
        rgb8 = np.concatenate([rgb8, np.zeros_like(rgb8[..., :1])], axis=2)
    if has_alpha:
        if alpha == "composite":
            a = (scale.apply(v[..., ncol:ncol + 1]).astype(np.float64) / 255.0)
            mixed = rgb8.astype(np.float64) * a + NEUTRAL_GREY * (1.0 - a)
            rgb8 = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
            notes.append(f"alpha composited over grey {NEUTRAL_GREY}")
        else:
            notes.append("alpha dropped")
    return np.ascontiguousarray(rgb8), notes


# --------------------------------------------------------------------------------------------------
# Resizing
# --------------------------------------------------------------------------------------------------


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output position: the input cell under the output cell's centre."""
    idx = ((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def resize_nearest(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of ``(H, W[, C])`` to ``hw`` (sample at each cell's centre).

    >>> resize_nearest(np.array([[1, 2]]), (2, 4)).tolist()
    [[1, 1, 2, 2], [1, 1, 2, 2]]
    """
    img = np.asarray(img)
    rows = _nearest_index(img.shape[0], int(hw[0]))
    cols = _nearest_index(img.shape[1], int(hw[1]))
    return img[rows][:, cols]


def resize_max(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Like :func:`resize_nearest`, but a shrunk axis keeps the maximum of each source block.

    Used for sparse pictures (selected cells on black), where plain sampling would drop most
    of the lit pixels when the tile is smaller than the image.
    """
    out = np.asarray(img)
    for axis, n_out in enumerate(hw):
        n_in = out.shape[axis]
        if n_out < n_in:
            starts = (np.arange(n_out) * n_in) // n_out
            out = np.maximum.reduceat(out, starts, axis=axis)
        elif n_out > n_in:
            out = np.take(out, _nearest_index(n_in, n_out), axis=axis)
    return out


# --------------------------------------------------------------------------------------------------
# Pictures of indices and differences
# --------------------------------------------------------------------------------------------------


def selection_picture(x_hwc: np.ndarray, indices: np.ndarray, out_hw=None) -> np.ndarray:
    """The input with only the cells an operator selected: the rest set to 0 (black).

    Parameters
    ----------
    x_hwc : ndarray, shape (H, W, C) or (H, W)
        The input the operator ran on.
    indices : ndarray of int
        The operator's indices, PyTorch's flat ``h * W + w`` per channel: ``(h_out, w_out, C)``
        (or ``(h_out, w_out)`` for one channel). Indices outside the plane (windows lying wholly
        in the padding) are ignored.
    out_hw : (int, int), optional
        The pooled output size; when given, ``indices`` may also be flat ``(h_out * w_out, C)``
        and its size is checked against it.

    Returns
    -------
    ndarray
        Same shape and dtype as ``x_hwc``: selected values in place, zeros elsewhere (what
        ``max_unpool2d`` of the pooled values gives).

    >>> x = np.array([[1, 5], [7, 2]])
    >>> selection_picture(x, np.array([[2]])).tolist()
    [[0, 0], [7, 0]]
    """
    x = np.asarray(x_hwc)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[:, :, None]
    if x.ndim != 3:
        raise ValueError(f"x_hwc must be (H, W) or (H, W, C), got shape {np.shape(x_hwc)}")
    h, w, c = x.shape
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices must be integers, got {idx.dtype}")
    if out_hw is not None:
        oh, ow = int(out_hw[0]), int(out_hw[1])
        if idx.size != oh * ow * c:
            raise ValueError(f"indices hold {idx.size} values, expected {oh}x{ow}x{c}")
    if c == 1 and (idx.ndim < 3 or idx.shape[-1] == 1):
        idx = idx.reshape(-1, 1)
    elif idx.ndim in (2, 3) and idx.shape[-1] == c:
        idx = idx.reshape(-1, c)
    else:
        raise ValueError(f"indices of shape {np.shape(indices)} do not fit {c} channels")
    flat_x = x.reshape(h * w, c)
    out = np.zeros_like(flat_x)
    for ch in range(c):
        sel = idx[:, ch].astype(np.int64)
        sel = sel[(sel >= 0) & (sel < h * w)]
        out[sel, ch] = flat_x[sel, ch]
    out = out.reshape(h, w, c)
    return out[:, :, 0] if squeeze else out


@_QUIET_NAN
def abs_diff_picture(a: np.ndarray, b: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, float]:
    """``|a - b|`` contrast-stretched to 0..255 on its own (largest difference -> 255).

    ``a`` and ``b`` are ``(h, w, C)`` results on the same scale (any sizes: both are first
    resized to ``hw`` with nearest neighbour). Returns the uint8 picture ``(H, W, C)`` and the
    largest difference (0 when identical: the picture is then black). NaN counts as 0.
    """
    a2 = resize_nearest(np.asarray(a, dtype=np.float64), hw)
    b2 = resize_nearest(np.asarray(b, dtype=np.float64), hw)
    if a2.ndim == 2:
        a2, b2 = a2[:, :, None], b2[:, :, None]
    with np.errstate(invalid="ignore"):
        d = np.nan_to_num(np.abs(a2 - b2), nan=0.0, posinf=0.0)
    top = float(d.max()) if d.size else 0.0
    if top <= 0:
        return np.zeros(d.shape, dtype=np.uint8), 0.0
    return np.clip(np.rint(d / top * 255.0), 0, 255).astype(np.uint8), top


# --------------------------------------------------------------------------------------------------
# The contact sheet
# --------------------------------------------------------------------------------------------------


@dataclass
class Tile:
    """One picture of the sheet: uint8 ``(h, w, 3)`` pixels (any size) and its label lines."""

    pixels: np.ndarray
    label: list[str]
    resample: str = "nearest"  # or "max" (sparse pictures)
    meta: dict = field(default_factory=dict)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _text_width(font, text: str) -> float:
    try:
        return font.getlength(text)
    except AttributeError:
        box = font.getbbox(text)
        return box[2] - box[0]


ELLIPSIS = "…"


def _fits(font, text: str, width: int) -> bool:
    return _text_width(font, text) <= width


def _last_true(ok, lo: int, hi: int) -> int:
    """The largest ``k`` in ``lo..hi`` with ``ok(k)``, given ``ok(lo)`` and that ``ok`` turns
    false once (monotone). Galloping from ``lo``, then bisection: ``O(log(k - lo))`` calls, and
    no call beyond ``2 * (k - lo)`` past ``lo`` (candidates stay short when ``hi`` is huge)."""
    step, good = 1, lo
    while good < hi:  # gallop: good + 1, good + 2, good + 4, ... until one fails
        probe = min(hi, lo + step)
        if not ok(probe):
            hi = probe - 1
            break
        good, step = probe, step * 2
    while good < hi:  # bisection on good..hi: ok(good) holds, ok(hi + 1) does not
        mid = (good + hi + 1) // 2
        if ok(mid):
            good = mid
        else:
            hi = mid - 1
    return good


def _ellipsized(font, text: str, width: int) -> str:
    """The longest prefix of ``text`` that fits ``width`` with an ellipsis after it, plus
    the ellipsis (just the ellipsis when not even one character fits)."""
    if not _fits(font, text[:1] + ELLIPSIS, width):
        return ELLIPSIS
    k = _last_true(lambda n: _fits(font, text[:n] + ELLIPSIS, width), 1, len(text))
    return text[:k].rstrip() + ELLIPSIS


def _wrap_line(line: str, font, width: int, limit: int) -> tuple[list[str], bool]:
    """Greedy word wrap of one line to ``width``: at most ``limit`` lines, and whether text was
    left over; a line of one word wider than ``width`` is kept whole here. Each line
    costs ``O(log words)`` measurements: the break point is found by galloping + bisection over
    the word boundaries, so wrapping is ``O(n log n)``, never one measurement per character."""
    words = line.split(" ")
    out: list[str] = []
    i = 0
    while i < len(words) and len(out) < limit:
        j = _last_true(lambda n: _fits(font, " ".join(words[i:n]), width), i + 1, len(words))
        out.append(" ".join(words[i:j]))
        i = j
    return out, i < len(words)


def wrap_label(lines: list[str], font, width: int, max_lines: int = LABEL_LINES) -> list[str]:
    """Wrap label lines to ``width`` pixels; at most ``max_lines`` lines, the last ellipsized.

    Lines break at spaces (the wrapped lines joined with a space give the text back); a word
    wider than ``width`` is cut and ellipsized; when the text needs more than ``max_lines``
    lines, the last shown line ends with an ellipsis. The font's ``getlength`` is called
    ``O(log n)`` times per output line, so a 6,000-character title costs a few dozen calls.
    """
    out: list[str] = []
    more = False
    for line in lines:
        if len(out) == max_lines:  # a further line (even an empty one) is not shown
            more = True
            break
        wrapped, more = _wrap_line(latin(line), font, width, max_lines - len(out))
        out += wrapped
        if more:
            break
    out = [ln if len(ln) <= 1 or _fits(font, ln, width) else _ellipsized(font, ln, width)
           for ln in out]
    if more:
        last = out[-1][:-1] if out[-1].endswith(ELLIPSIS) else out[-1]
        out[-1] = _ellipsized(font, last, width)
    return out


def compose_sheet(
    images: list[list[Tile]],
    boxes: list[tuple[int, int]],
    *,
    tile: int,
    cols: int,
    title: str | None = None,
) -> tuple[np.ndarray, list[list[list[int]]], dict]:
    """Lay out the tiles of each image in rows of ``cols`` and draw the labels.

    Parameters
    ----------
    images : list of list of Tile
        Tiles of each input image, in order; every image must have the same number of tiles.
    boxes : list of (th, tw)
        The tile box of each image (:func:`tile_box`).

    Returns
    -------
    sheet : ndarray, uint8 (H, W, 3)
    placed : list of list of [x, y, w, h]
        Where each tile's picture landed.
    layout : dict
        The numbers of the module docstring's formula (margin, gap, image_gap, cell_width,
        label_height, title_height, font_size, cols, rows_per_image, size).
    """
    from PIL import Image, ImageDraw

    if not images or not images[0]:
        raise ValueError("compose_sheet needs at least one tile")
    n_tiles = len(images[0])
    if any(len(t) != n_tiles for t in images):
        raise ValueError("every image needs the same number of tiles")
    cols = max(1, min(int(cols), n_tiles))
    has_title = bool(title)
    width, height = sheet_size(boxes, n_tiles, cols, tile, has_title)
    cell_w = max(tw for _, tw in boxes)
    lab_h = label_height(tile)
    line_h = line_height_for(tile)
    font = _font(font_size_for(tile))
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = MARGIN
    if has_title:
        tfont = _font(font_size_for(tile) + 6)
        draw.text((MARGIN, y), wrap_label([title], tfont, width - 2 * MARGIN, 1)[0], font=tfont,
                  fill=TEXT)
        y += title_height(tile, True)
    placed: list[list[list[int]]] = []
    rows_per_image = math.ceil(n_tiles / cols)
    for i, (tiles, (th, tw)) in enumerate(zip(images, boxes)):
        if i:
            y += IMAGE_GAP
        boxes_i = []
        for r in range(rows_per_image):
            if r:
                y += GAP
            for c in range(cols):
                k = r * cols + c
                if k >= n_tiles:
                    break
                t = tiles[k]
                x0 = MARGIN + c * (cell_w + GAP)
                px = x0 + (cell_w - tw) // 2
                pixels = np.asarray(t.pixels)
                if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
                    raise ValueError(f"tile pixels must be uint8 (h, w, 3), got {pixels.dtype} "
                                     f"{pixels.shape}")
                resize = resize_max if t.resample == "max" else resize_nearest
                canvas.paste(Image.fromarray(np.ascontiguousarray(resize(pixels, (th, tw)))),
                             (px, y))
                draw.rectangle((px - 1, y - 1, px + tw, y + th), outline=BORDER)
                ty = y + th + LABEL_PAD
                for j, line in enumerate(wrap_label(t.label, font, cell_w)):
                    draw.text((x0, ty + j * line_h), line, font=font,
                              fill=HEADLINE if j == 0 else TEXT)
                boxes_i.append([px, y, tw, th])
            y += th + lab_h
        placed.append(boxes_i)
    layout = {
        "margin": MARGIN, "gap": GAP, "image_gap": IMAGE_GAP, "cell_width": cell_w,
        "label_height": lab_h, "label_lines": LABEL_LINES, "title_height":
        title_height(tile, has_title), "font_size": font_size_for(tile), "cols": cols,
        "rows_per_image": rows_per_image, "size": [width, height],
    }
    return np.asarray(canvas), placed, layout


# --------------------------------------------------------------------------------------------------
# Terminal preview
# --------------------------------------------------------------------------------------------------

UPPER_HALF = "\u2580"  # ▀: foreground paints the upper pixel, background the lower
RESET = "\x1b[0m"


def render_halfblocks(rgb_uint8: np.ndarray, width: int) -> str:
    """A picture for a 24-bit-colour terminal: two pixel rows per text line.

    The image is resized with nearest neighbour to ``width`` columns and
    ``round(H * width / W)`` (at least 1) pixel rows. Each character cell is ``▀`` (U+2580) with
    the upper pixel as foreground ``\\x1b[38;2;R;G;Bm`` and the lower pixel as background
    ``\\x1b[48;2;R;G;Bm``; with an odd number of pixel rows the last line sets only the
    foreground (the lower half keeps the terminal's background). Every line ends with
    ``\\x1b[0m``; lines are joined with ``\\n`` (no trailing newline).

    Parameters
    ----------
    rgb_uint8 : ndarray of uint8, shape (H, W, 3), (H, W, 1) or (H, W)
        Grey is shown as grey.
    width : int
        Columns, >= 1.

    >>> render_halfblocks(np.array([[[255, 0, 0]], [[0, 0, 255]]], dtype=np.uint8), 1)
    '\\x1b[38;2;255;0;0m\\x1b[48;2;0;0;255m▀\\x1b[0m'
    """
    img = np.asarray(rgb_uint8)
    if img.dtype != np.uint8:
        raise TypeError(f"render_halfblocks needs uint8 pixels, got {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3) or 0 in img.shape:
        raise ValueError(f"render_halfblocks needs (H, W, 3) or (H, W, 1), got {img.shape}")
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"width must be an int >= 1, got {width!r}")
    h, w = img.shape[:2]
    rows = max(1, round(h * int(width) / w))
    small = resize_nearest(img, (rows, int(width)))
    if small.shape[2] == 1:
        small = np.repeat(small, 3, axis=2)
    lines = []
    for top in range(0, rows, 2):
        cells = []
        for col in range(small.shape[1]):
            r, g, b = (int(v) for v in small[top, col])
            cell = f"\x1b[38;2;{r};{g};{b}m"
            if top + 1 < rows:
                r2, g2, b2 = (int(v) for v in small[top + 1, col])
                cell += f"\x1b[48;2;{r2};{g2};{b2}m"
            cells.append(cell + UPPER_HALF)
        lines.append("".join(cells) + RESET)
    return "\n".join(lines)


PREVIEW_MODES = ("auto", "always", "never")


def preview_enabled(mode: str, stream, env=os.environ) -> bool:
    """Whether to draw a terminal preview on ``stream``.

    ``"always"``: yes. ``"never"``: no. ``"auto"``: only when ``stream`` is a terminal, the
    ``NO_COLOR`` environment variable is unset or empty (https://no-color.org) and ``TERM`` is
    not ``dumb``.
    """
    if mode == "always":
        return True
    if mode == "never":
        return False
    if mode != "auto":
        raise ValueError(f"preview mode must be one of {', '.join(PREVIEW_MODES)}, got {mode!r}")
    if env.get("NO_COLOR"):
        return False
    if env.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def draw_preview(array, mode: str, stream, *, width: int | None = None, source_dtype=None,
                 channels=None) -> bool:
    """Draw ``array`` on ``stream`` as a half-block picture if ``mode`` says so; True if drawn.

    ``array``: any result, ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)`` (first image), any dtype,
    mapped by :func:`to_rgb8` (pass the input's ``source_dtype`` for float results on an
    8/16-bit scale; signed floats without it get a ``sigma:3`` stretch). ``width``: columns
    [default: the terminal's width, at most 80, and no taller than the terminal].
    """
    if not preview_enabled(mode, stream):
        return False
    rgb, _ = to_rgb8(array, source_dtype=source_dtype, channels=channels)
    cols = int(width) if width else preview_width(rgb.shape[:2])
    stream.write(render_halfblocks(rgb, cols) + "\n")
    stream.flush()
    return True


MAX_PREVIEW_COLS = 80


def preview_width(hw: tuple[int, int]) -> int:
    """Columns for an ``hw`` picture: the terminal's width (at most 80), the picture's own width
    when smaller (but at least 16, so tiny outputs stay visible); no taller than the terminal."""
    import shutil

    size = shutil.get_terminal_size((80, 24))
    h, w = int(hw[0]), int(hw[1])
    cols = max(1, min(MAX_PREVIEW_COLS, size.columns, max(w, 16)))
    max_pixel_rows = 2 * max(8, size.lines - 2)
    if h * cols / w > max_pixel_rows:
        cols = max(1, math.floor(max_pixel_rows * w / h))
    return cols
