"""Values as TOML text: `--set SECTION.KEY=VALUE` words, and a value written back as TOML."""
from __future__ import annotations

import tomllib

from .errors import UserError


def parse_sets(sets: list[str]) -> dict:
    """`--set section.key=value` strings -> {"section.key": value} (TOML values, else text)."""
    return {lhs: toml_value(val) for lhs, val in map(split_set, sets)}


def split_set(item: str, example: str = "VALUE, e.g. compute.freq_hz=4e8") -> tuple[str, str]:
    """'section.key=text' -> ('section.key', 'text')."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise UserError(f"--set {item!r}: expected SECTION.KEY={example}")
    lhs, val = item.split("=", 1)
    return lhs, val


def toml_text(v) -> str:
    """A value as TOML text (the inverse of toml_value): true, "x", 4e8."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def toml_value(text: str):
    """A value as TOML reads it (4e8, true, "x"), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
