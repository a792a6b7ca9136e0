"""poolcli: see what CNN pooling and normalization operators do to real images.

The numerical core lives in :mod:`poolcli.ops` (pure numpy); everything else is I/O and CLI.
This module stays import-light so ``poolcli --help`` starts fast.
"""

__version__ = "0.1.0"
