"""poolcli.ops loads its submodules on first use, and still exports every name."""

import subprocess
import sys

import pytest


def test_every_exported_name_resolves_to_its_function():
    import poolcli.ops as ops

    for name in ops.__all__:
        value = getattr(ops, name)
        assert value.__name__ == name
        assert value.__module__.startswith("poolcli.ops.")
    assert set(ops.__all__) <= set(dir(ops))


def test_unknown_name_is_an_attribute_error():
    import poolcli.ops as ops

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ops.nope  # noqa: B018
    with pytest.raises(ImportError):
        exec("from poolcli.ops import nope", {})


def test_max_pool_loads_only_the_fixed_window_engine():
    code = ("import sys; from poolcli.ops import max_pool2d; "
            "print(sorted(m for m in sys.modules if m.startswith('poolcli.ops')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = eval(out)
    assert "poolcli.ops.pool" in loaded
    for heavy in ("stochastic", "ranked", "zoo", "norm", "adaptive", "unpool"):
        assert f"poolcli.ops.{heavy}" not in loaded
