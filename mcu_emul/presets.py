"""Presets: the fitted parameter values (written by `calibrate`) applied on top of the
hardware and topology descriptions, and the bounds each fitted parameter may take."""
from __future__ import annotations

from pathlib import Path

from .config import (DATA_DIR, known_parameter, load_chip, load_table, load_topology, table_path, with_overrides,
                     with_values)
from .errors import UserError

PRESET_DIR = DATA_DIR / "presets"

CALIBRATION = "siracusa-paper"       # data/calibration/NAME.toml: what calibrate fits, bounds, sources


def load_calibration(name: str = CALIBRATION) -> dict:
    """The calibration description: {"hw", "topology", "bounds": {param: (low, high, source)},
    "assumed": [param, ...]} (the assumed parameters whose influence calibrate reports)."""
    table, path = load_table("calibration", name, "calibration description")
    try:
        bounds = {k: (float(v["low"]), float(v["high"]), str(v["source"])) for k, v in table["fitted"].items()}
        assumed = [str(k) for k in table.get("assumed", {}).get("params", [])]
        structure = dict(table.get("structure", {}))
        targets = [str(t) for t in table.get("targets", {}).get("fitted", [])]
        hw, topo = str(table["hw"]), str(table["topology"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: not a calibration description ({e}): needs hw, topology, "
                        "[fitted.\"section.key\"] with low, high, source") from None
    for k, (lo, hi, _) in bounds.items():
        if not 0 < lo < hi:
            raise UserError(f"{path}: [fitted.\"{k}\"] needs 0 < low < high, got {lo}, {hi}")
    return {"hw": hw, "topology": topo, "bounds": bounds, "assumed": assumed, "structure": structure,
            "targets": targets, "path": path}      # targets: [] = all


# parameter -> (low, high, the public source of these bounds)
BOUNDS = load_calibration()["bounds"]

PRESET_KEYS = {"hw", "topology", "structure", "fitted", "bounds", "error_pct", "loo_error_pct", "at_bound",
               "sensitivity"}


def load_preset(name: str) -> dict:
    """Preset file: {"hw":..., "topology":..., "fitted": {param: value}, ...}."""
    table, path = load_table("presets", name, "preset")
    unknown = sorted(set(table) - PRESET_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown key(s) {', '.join(unknown)} in a preset (allowed: {', '.join(sorted(PRESET_KEYS))})")
    for k in ("hw", "topology", "fitted"):
        if k not in table:
            raise UserError(f"{path}: not a preset: no {k!r} (presets are written by `calibrate`)")
    for sec in ("fitted", "structure"):
        if not isinstance(table.get(sec, {}), dict):
            raise UserError(f"{path}: [{sec}] must be a table")
    for k in ("hw", "topology"):
        if not isinstance(table[k], str):
            raise UserError(f"{path}: {k} must be a name, got {table[k]!r}")
    for sec in ("fitted", "structure"):
        unknown = sorted(k for k in table.get(sec, {}) if not known_parameter(k))
        if unknown:
            raise UserError(f"{path}: [{sec}] has unknown parameter(s) {', '.join(unknown)}")
    table["path"] = path
    return table


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def hardware(hw: str, topology: str, preset: str, sets: list[str], values: dict | None = None):
    """Chip and topology descriptions, the preset's fitted values, then --set overrides
    (strings) and the API's overrides (values).
    A preset was fitted for one hardware and one topology description: applied to another,
    its values would silently replace the user's, so that is refused."""
    chip, topo = load_chip(hw), load_topology(topology)
    if preset != "none":
        p = load_preset(preset)
        for kind, opt, given in (("hw", "--hw", hw), ("topology", "--topology", topology)):
            if not _same_file(table_path(kind, p[kind]), table_path(kind, given)):
                raise UserError(f"--preset {preset} was fitted for {kind} '{p[kind]}', not {opt} {given}: its "
                                f"fitted values would replace yours; give --preset none (and --set for changes)")
        chip, topo = with_values(chip, topo, p.get("structure", {}), f"{p['path']} [structure]")
        chip, topo = with_values(chip, topo, p["fitted"], f"{p['path']} [fitted]")
    chip, topo = with_overrides(chip, topo, sets)
    return with_values(chip, topo, values or {}, "overrides")


def other_chip(hw: str, topo, preset: str, sets: list[str], values: dict | None = None):
    """A chip of another hardware file than the run's (a mixed cluster's): its file, the
    preset's values only if the preset was fitted for that file, then --set and overrides
    (their link values are the run's topology's, applied there)."""
    chip = load_chip(hw)
    if preset != "none":
        p = load_preset(preset)
        if _same_file(table_path("hw", p["hw"]), table_path("hw", hw)):
            chip, _ = with_values(chip, topo, p.get("structure", {}), f"{p['path']} [structure]")
            chip, _ = with_values(chip, topo, p["fitted"], f"{p['path']} [fitted]")
    chip, _ = with_overrides(chip, topo, sets)
    return with_values(chip, topo, values or {}, "overrides")[0]
