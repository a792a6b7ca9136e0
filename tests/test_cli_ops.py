"""`poolcli ops`: the operator list comes from the registry."""

from helpers import run
from poolcli import registry


def test_ops_lists_every_registered_operator():
    r = run("ops")
    assert r.exit_code == 0
    for op in registry.OPERATORS:
        assert op.name in r.output and op.summary in r.output
