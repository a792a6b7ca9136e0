"""click parameter types: malformed values die in parsing with a usage error (exit 2).

Import-light on purpose (no numpy): used while building ``--help``.
"""

from __future__ import annotations

import math
import re

import click

__all__ = ["PairType", "FloatListType", "BoundedFloat", "ShardType", "PAIR", "SIZE", "FLOATS",
           "click_type_for"]

_PAIR_RE = re.compile(r"^\s*(-?\d+)\s*(?:[x×X,]\s*(-?\d+)\s*)?$")


class PairType(click.ParamType):
    """``3`` -> (3, 3); ``3x2`` or ``3,2`` -> (3, 2) as height x width; values >= ``minimum``."""

    name = "N|HxW"

    def __init__(self, minimum: int = 1, what: str = "value"):
        self.minimum = minimum
        self.what = what

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            pair = value
        else:
            m = _PAIR_RE.match(str(value))
            if not m:
                self.fail(f"{value!r} is not N or HxW (e.g. 3 or 3x2)", param, ctx)
            h = int(m.group(1))
            pair = (h, int(m.group(2)) if m.group(2) is not None else h)
        if min(pair) < self.minimum:
            self.fail(f"{value!r}: each {self.what} must be >= {self.minimum}", param, ctx)
        return pair


class FloatListType(click.ParamType):
    """``0.5,0.3,0.2`` -> (0.5, 0.3, 0.2); finite numbers, optionally non-negative."""

    name = "X[,X...]"

    def __init__(self, nonnegative: bool = False):
        self.nonnegative = nonnegative

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = [p for p in str(value).replace(" ", "").split(",")]
        if not parts or any(p == "" for p in parts):
            self.fail(f"{value!r} is not a comma-separated list of numbers", param, ctx)
        try:
            nums = tuple(float(p) for p in parts)
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers", param, ctx)
        if not all(math.isfinite(v) for v in nums):
            self.fail(f"{value!r}: values must be finite", param, ctx)
        if self.nonnegative and any(v < 0 for v in nums):
            self.fail(f"{value!r}: values must be >= 0", param, ctx)
        return nums


class BoundedFloat(click.ParamType):
    """A float with an open/closed lower bound and optional upper bound; ``inf`` allowed if said."""

    name = "FLOAT"

    def __init__(self, minimum=None, *, open_min=False, maximum=None, allow_inf=False):
        self.minimum, self.open_min, self.maximum, self.allow_inf = (
            minimum, open_min, maximum, allow_inf)

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if math.isnan(v) or (math.isinf(v) and not self.allow_inf):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.minimum is not None:
            if (v <= self.minimum) if self.open_min else (v < self.minimum):
                rel = ">" if self.open_min else ">="
                self.fail(f"{value!r}: must be {rel} {self.minimum:g}", param, ctx)
        if self.maximum is not None and v > self.maximum:
            self.fail(f"{value!r}: must be <= {self.maximum:g}", param, ctx)
        return v


class ShardType(click.ParamType):
    """``I/N``: slice I of N (1-based) of the sorted inputs."""

    name = "I/N"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            i, n = (int(v) for v in str(value).split("/"))
        except ValueError:
            self.fail(f"{value!r} is not I/N (e.g. 2/8)", param, ctx)
        if not 1 <= i <= n:
            self.fail(f"{value!r}: need 1 <= I <= N", param, ctx)
        return (i, n)


PAIR = PairType()
SIZE = PairType(minimum=1, what="size")
FLOATS = FloatListType()


def click_type_for(param):
    """The click type and default for a :class:`poolcli.registry.Param`."""
    kind = param.kind
    if kind in ("pair", "size"):
        return PairType(minimum=int(param.minimum or 0), what=param.name.replace("_", " "))
    if kind == "int":
        return click.IntRange(min=None if param.minimum is None else int(param.minimum),
                              max=None if param.maximum is None else int(param.maximum))
    if kind == "float":
        return BoundedFloat(param.minimum, open_min=param.minimum == 0, allow_inf=True)
    if kind == "floats":
        return FloatListType(nonnegative=param.minimum == 0)
    if kind == "choice":
        return click.Choice(param.choices)
    raise ValueError(f"unknown parameter kind {kind!r}")
