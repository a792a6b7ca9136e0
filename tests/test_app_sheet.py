"""`poolcli.app.sheet`: the compare sheet's layout rules."""

from poolcli.app.sheet import auto_cols


def test_auto_cols_balances_rows():
    assert [auto_cols(n) for n in (1, 4, 6, 7, 10, 12, 15, 23)] == [1, 4, 6, 4, 5, 6, 5, 6]
