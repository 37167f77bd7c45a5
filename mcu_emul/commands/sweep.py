"""Sweep command: a grid of chip counts, all-reduce algorithms, placements and hardware/link
overrides, run through the API (`mcu_emul.sweep`: dry runs in-process, real runs one
`mpiexec` per point); results merged into one CSV and one JSON, written whole."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from ..api import grid_points, sweep as api_sweep
from ..tomltext import split_set, toml_value
from ..files.outputs import write_bytes, write_json
from .progress import Progress

COLUMNS = ("model", "chips", "allreduce", "placement_asked", "placement", "overrides", "latency_ms",
           "energy_mj", "edp_mj_ms", "blocks_latency_ms", "blocks_energy_mj", "blocks_edp_mj_ms", "offchip_bytes",
           "link_bytes", "weight_bytes_total", "output_sha256")


def axes_from_sets(sets: list[str]) -> dict:
    """`--set SECTION.KEY=V1,V2` strings -> {"SECTION.KEY": ["V1", "V2"]} (the text as given)."""
    return {k: vals.split(",") for k, vals in (split_set(s, "V1[,V2...]") for s in sets)}


def _label(p: dict) -> str:
    return ";".join(f"{k}={v}" for k, v in p["overrides"].items())


def sweep(model: str, chips, algs, places, sets: list[str], options: dict, dry: bool, out: Path,
          quiet: bool) -> list[dict]:
    axes = axes_from_sets(sets)
    pts = grid_points(chips, algs, places, axes)                  # labels: the values as typed
    grid = {"chips": chips, "allreduce": algs, "placement": places,
            **{k: [toml_value(v) for v in vals] for k, vals in axes.items()}}
    bar = Progress(quiet)
    label = lambda p: f"chips={p['chips']} {p['allreduce']} {p['placement']} " + " ".join(  # noqa: E731
        f"{k}={v}" for k, v in p["overrides"].items())
    reports = api_sweep(model, grid=grid, dry_run=dry, progress=lambda d, n, p: bar(d, n, label(p)), **options)
    rows, prov = [], []
    for p, rep in zip(pts, reports):
        prov.append(rep.provenance)
        rows.append({"model": rep.model, "chips": p["chips"], "allreduce": p["allreduce"],
                     "placement_asked": p["placement"], "placement": rep.placement, "overrides": _label(p),
                     **{k: rep[k] for k in ("latency_ms", "energy_mj", "edp_mj_ms")},
                     **{f"blocks_{k}": rep.blocks[k] for k in ("latency_ms", "energy_mj", "edp_mj_ms")},
                     **{k: rep[k] for k in ("offchip_bytes", "link_bytes", "weight_bytes_total", "output_sha256")},
                     **{k: grid[k][axes[k].index(v)] for k, v in p["overrides"].items()}})   # one column per axis
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=(*COLUMNS, *axes))
    w.writeheader()
    w.writerows(rows)
    write_bytes(out / "sweep.csv", buf.getvalue().encode())
    write_json(out / "sweep.json", {"schema": "mcu_emul.sweep/1",
                                    "rows": [r | {"provenance": pv} for r, pv in zip(rows, prov)]})
    return rows
