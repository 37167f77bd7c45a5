"""Typed, bounded fields of the data-file dataclasses: one check for every TOML table, weights
file config and `--set` value (type, finite, range), with errors that name the field and value."""
from __future__ import annotations

import dataclasses
import functools
import math
import typing

from .errors import UserError


def bound(*, ge=None, gt=None, le=None, choices=None, default=dataclasses.MISSING):
    """A dataclass field with limits: ge/gt (lower, inclusive/strict), le (upper), choices."""
    return dataclasses.field(default=default, metadata={"ge": ge, "gt": gt, "le": le, "choices": choices})


def _type_name(t) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(t, t.__name__)


@functools.lru_cache(maxsize=None)
def _fields(cls) -> dict:
    """name -> (field, its type) of a dataclass (type hints resolved once per class)."""
    hints = typing.get_type_hints(cls)
    return {x.name: (x, hints[x.name]) for x in dataclasses.fields(cls)}


@typing.no_type_check
def coerce(cls, name: str, value, where: str):
    """value checked against field `name` of dataclass `cls`: its type (an int is a valid float;
    an integral float a valid int; nothing else converts: "no" is not a boolean), finite, within
    its limits. Returns the value in the field's type; raises UserError naming `where` and value."""
    f, t = _fields(cls)[name]
    bad = f"{where}: {name} must be {_type_name(t)}, got {value!r}"
    if t is bool:
        if not isinstance(value, bool):
            raise UserError(bad)
    elif t is int:
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(bad)
    elif t is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(bad)
        if not math.isfinite(value):
            raise UserError(f"{where}: {name} must be a finite number, got {value!r}")
        value = float(value)
    elif t is str:
        if not isinstance(value, str):
            raise UserError(bad)
    elif t is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: {name} must be a list, got {value!r}")
        value = tuple(value)
    elif t is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: {name} must be a table, got {value!r}")
    m = f.metadata
    if m.get("choices") is not None and value not in m["choices"]:
        raise UserError(f"{where}: {name} must be one of {', '.join(map(repr, m['choices']))}, got {value!r}")
    if m.get("ge") is not None and not value >= m["ge"]:
        raise UserError(f"{where}: {name} must be >= {m['ge']:g}, got {value!r}")
    if m.get("gt") is not None and not value > m["gt"]:
        raise UserError(f"{where}: {name} must be > {m['gt']:g}, got {value!r}")
    if m.get("le") is not None and not value <= m["le"]:
        raise UserError(f"{where}: {name} must be <= {m['le']:g}, got {value!r}")
    return value


def check(obj, where: str):
    """Check (and normalize: int -> float for float fields) every field of a frozen dataclass;
    call from __post_init__."""
    for f in dataclasses.fields(obj):
        v = coerce(type(obj), f.name, getattr(obj, f.name), where)
        object.__setattr__(obj, f.name, v)


def limits(cls) -> dict[str, str]:
    """field -> its type and range in words (for the README and error hints)."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        m, parts = f.metadata, [_type_name(hints[f.name])]
        if m.get("choices") is not None:
            parts.append("one of " + ", ".join(map(str, m["choices"])))
        for k, op in (("ge", ">="), ("gt", ">"), ("le", "<=")):
            if m.get(k) is not None:
                parts.append(f"{op} {m[k]:g}")
        out[f.name] = " ".join(parts)
    return out
