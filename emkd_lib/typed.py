"""Typed, closed configuration dataclasses.

Every config in the library (encoders, methods, training, runs) is a frozen
dataclass whose fields are checked on construction against their annotation
(``int``, ``float``, ``bool``, ``str``, optionally ``| None``) and the bounds
in their metadata (``bound(ge=1)``), and whose ``from_dict`` rejects unknown
keys, naming the key and the allowed ones. A typo never vanishes silently
into a run's hash.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def bound(default: Any, *, ge: float | None = None, gt: float | None = None, lt: float | None = None,
          le: float | None = None, choices: tuple | None = None):
    """A dataclass field with a default and bounds checked by ``check_fields``."""
    return dataclasses.field(default=default, metadata={"ge": ge, "gt": gt, "lt": lt, "le": le, "choices": choices})


def _kind_ok(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    return True  # nested configs and other types are checked by their own class


def check_fields(obj) -> None:
    """Check every field of dataclass ``obj`` against its type and bounds."""
    name = type(obj).__name__
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        kinds = [a for a in args if a is not type(None)] or [hint]
        if value is None:
            if not optional:
                raise ValueError(f"{name}: {f.name} must not be None")
            continue
        if not any(_kind_ok(value, k) for k in kinds):
            expected = " or ".join(getattr(k, "__name__", str(k)) for k in kinds) + (" or None" if optional else "")
            raise ValueError(f"{name}: {f.name} must be {expected}, got {type(value).__name__} {value!r}")
        m = f.metadata
        if m.get("choices") is not None and value not in m["choices"]:
            raise ValueError(f"{name}: {f.name} must be one of {m['choices']}, got {value!r}")
        for key, ok, text in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                              ("lt", lambda v, b: v < b, "<"), ("le", lambda v, b: v <= b, "<=")):
            if m.get(key) is not None and isinstance(value, (int, float)) and not ok(value, m[key]):
                raise ValueError(f"{name}: {f.name} must be {text} {m[key]}, got {value!r}")


def from_dict(cls: type[T], mapping: dict | None) -> T:
    """``cls(**mapping)``, with unknown keys an error naming them and the allowed ones."""
    mapping = dict(mapping or {})
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown key(s) {unknown}; allowed: {allowed}")
    return cls(**mapping)


def replace(obj: T, **changes) -> T:
    """``dataclasses.replace`` with unknown names an error naming the allowed ones."""
    allowed = [f.name for f in dataclasses.fields(obj)]
    unknown = sorted(set(changes) - set(allowed))
    if unknown:
        raise ValueError(f"{type(obj).__name__}: unknown key(s) {unknown}; allowed: {allowed}")
    return dataclasses.replace(obj, **changes)
