"""Strict, typed validation of config dataclasses (``TrainConfig``, the task options).

``check_fields(obj)`` compares every field's value with its annotation: an ``int`` field takes
an int (never a bool, never 2.0), a ``float`` field a finite int or float (an int becomes a
float), a ``bool`` field a bool, a ``str`` field a string, ``X | None`` also None,
``tuple[float, float]`` two floats, ``dict[str, Any]`` a table of named options. A wrong type is
a ``UsageError`` naming the field, the value and the type expected -- never a silent coercion
that changes the experiment, never a crash after files were written.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from circuits.core.errors import UsageError


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is tuple:
        return f"a list of {len(typing.get_args(hint))} numbers"
    if typing.get_origin(hint) is dict:
        return "a table of options"
    return {
        int: "an integer",
        float: "a finite number",
        bool: "true or false",
        str: "a string",
    }.get(hint, str(hint))


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """(matches, the value as stored) for one annotation."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            ok, stored = _coerce(value, option)
            if ok:
                return True, stored
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number and math.isfinite(value), float(value) if number else value
    if hint is str:
        return isinstance(value, str), value
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            return False, value
        pairs = [_coerce(v, a) for v, a in zip(value, args, strict=True)]
        return all(ok for ok, _ in pairs), tuple(v for _, v in pairs)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value), value
    return True, value


def check_fields(obj: Any) -> None:
    """Check (and normalise) every field of dataclass ``obj`` against its annotation."""
    hints = typing.get_type_hints(type(obj))
    name = type(obj).__name__
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        ok, stored = _coerce(value, hints[f.name])
        if not ok:
            raise UsageError(
                f"{name} {f.name} must be {_describe(hints[f.name])}, got {value!r} "
                f"({type(value).__name__})"
            )
        object.__setattr__(obj, f.name, stored)


def check_keys(cls: type, data: dict[str, Any]) -> None:
    """``UsageError`` listing the keys of ``data`` that are not fields of dataclass ``cls``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"unknown {cls.__name__} keys {unknown}; known keys: {sorted(known)}")


def check_range(
    name: str, value: float, low: float | None = None, high: float | None = None
) -> None:
    """``UsageError`` unless ``low <= value <= high`` (either bound may be open: None)."""
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (
            f"in [{low}, {high}]"
            if low is not None and high is not None
            else f">= {low}"
            if low is not None
            else f"<= {high}"
        )
        raise UsageError(f"{name} must be {bounds}, got {value}")
