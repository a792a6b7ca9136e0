"""File formats poolcli reads and writes, by suffix. Import-light: no numpy, no Pillow."""

SUPPORTED_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".npy")
