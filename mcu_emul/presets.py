"""Presets: the fitted parameter values (written by `calibrate`) applied on top of the
hardware and topology descriptions, and the bounds each fitted parameter may take."""
from __future__ import annotations

from pathlib import Path

from .config import DATA_DIR, load_chip, load_table, load_topology, table_path, with_overrides, with_values
from .errors import UserError

PRESET_DIR = DATA_DIR / "presets"

# parameter -> (low, high, why these bounds)
BOUNDS = {
    "compute.freq_hz": (1.0e8, 5.0e8, "the chip's operating range"),
    "compute.engine_gemv_macs_per_cycle": (8.0, 64.0, "no weight reuse in a GEMV: the engine is bound by its "
                                                      "weight port, from the cluster DMA's 8 B/cycle to 512 bit"),
    "compute.engine_gemm_macs_per_cycle": (32.0, 512.0, "from the cluster's GEMM peak to a quarter of the "
                                                        "engine's 1.95 TOp/s peak (1x1 kernels use part of its array)"),
    "offchip.l3_bytes_per_s": (2.0e8, 3.2e9, "single HyperRAM (0.2 GB/s) to a wide dual-channel L3 (3.2 GB/s)"),
    "link.upper_latency_factor": (1.0, 20.0, "a board-to-board message costs from as much as an on-board one "
                                             "to a software-forwarded hop (~20 us)"),
    "power.engine_active_w": (0.02, 0.40, "a 16 nm chip with its engine busy; on the cluster it draws ~0.167 W"),
    "energy.l3_pj_per_byte": (0.5, 200.0, "from an idealized on-package memory to board-level HyperRAM"),
}

PRESET_KEYS = {"hw", "topology", "fitted", "bounds", "error_pct"}


def load_preset(name: str) -> dict:
    """Preset file: {"hw":..., "topology":..., "fitted": {param: value}, ...}."""
    table, path = load_table("presets", name, "preset")
    unknown = sorted(set(table) - PRESET_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown key(s) {', '.join(unknown)} in a preset (allowed: {', '.join(sorted(PRESET_KEYS))})")
    for k in ("hw", "topology", "fitted"):
        if k not in table:
            raise UserError(f"{path}: not a preset: no {k!r} (presets are written by `calibrate`)")
    if not isinstance(table["fitted"], dict):
        raise UserError(f"{path}: [fitted] must be a table")
    for k in ("hw", "topology"):
        if not isinstance(table[k], str):
            raise UserError(f"{path}: {k} must be a name, got {table[k]!r}")
    unknown = sorted(set(table["fitted"]) - set(BOUNDS))
    if unknown:
        raise UserError(f"{path}: [fitted] has unknown parameter(s) {', '.join(unknown)}")
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
        chip, topo = with_values(chip, topo, p["fitted"], f"{p['path']} [fitted]")
    chip, topo = with_overrides(chip, topo, sets)
    return with_values(chip, topo, values or {}, "overrides")
