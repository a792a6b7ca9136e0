"""Small helpers shared by the modules of :mod:`poolcli.imageio` (private to the package)."""

from __future__ import annotations

from poolcli.errors import ImageReadError

__all__ = ["corrupt", "is_stdio", "pil"]


def pil():
    """Pillow's ``Image`` module, imported on first use: PNG, TIFF and ``.npy`` never need it."""
    from PIL import Image

    return Image


def is_stdio(path: object) -> bool:
    """Whether ``path`` is ``"-"`` (standard input or output)."""
    return isinstance(path, str) and path == "-"


def corrupt(source: str, fmt: str) -> ImageReadError:
    """The error for a file whose ``fmt`` data is cut short or damaged."""
    return ImageReadError(f"{source}: truncated or corrupt {fmt} data")
