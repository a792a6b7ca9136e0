"""What a command does, without click or rich.

- :mod:`~poolcli.app.plan`: expand the inputs and decide every path a run reads and writes,
  checked together before any image is read.
- :mod:`~poolcli.app.runner`: the one batch runner (workers, input order, fail-fast, signals,
  exact counts) and the per-job error boundary.
- :mod:`~poolcli.app.jobs`: what one image goes through in each command, and the one record
  builder; :mod:`~poolcli.app.outputs`: the one output policy (dtype, display mapping, side files).
- :mod:`~poolcli.app.batchnorm`, :mod:`~poolcli.app.pipeline`, :mod:`~poolcli.app.sheet`: batch
  normalization (fit, inference), chained stages, the comparison sheet.

Each module imports numpy and the codecs only inside the functions that need them, so the CLI's
``--help`` stays fast.
"""
