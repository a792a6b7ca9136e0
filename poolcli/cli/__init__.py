"""The command line: thin click commands over :mod:`poolcli.app`, one module per command.

Nothing in the package imports this layer; click is imported only here. Start-up matters
(``poolcli --help`` is run often): these modules import click and the registry only, and
numpy, the codecs and rich are imported inside the commands that need them.
"""

from poolcli.cli.root import entry, main

__all__ = ["main", "entry"]
