"""Sweep runner: a grid of chip counts, all-reduce algorithms, placements and hardware/link
overrides; every point is a `run` (real MPI, or --dry-run in-process); results merged into
one CSV and one JSON, written whole."""
from __future__ import annotations

import csv
import io
import itertools
import sys
import tempfile
from pathlib import Path

from ..errors import UserError
from .launcher import run_report
from ..files.outputs import write_bytes, write_json

COLUMNS = ("model", "chips", "allreduce", "placement_asked", "placement", "overrides", "latency_ms",
           "energy_mj", "edp_mj_ms", "blocks_latency_ms", "blocks_energy_mj", "blocks_edp_mj_ms", "offchip_bytes", "link_bytes", "weight_bytes_total", "output_sha256")


def grid(chips: list[int], allreduce: list[str], placement: list[str], sets: list[str]) -> list[dict]:
    """Cartesian product; each --set KEY=V1,V2 adds an axis."""
    axes = []
    for s in sets:
        if "=" not in s:
            raise UserError(f"--set {s!r}: expected SECTION.KEY=V1[,V2...]")
        k, vals = s.split("=", 1)
        axes.append([f"{k}={v}" for v in vals.split(",")])
    points = []
    for n, alg, pl, *ov in itertools.product(chips, allreduce, placement, *axes):
        points.append({"chips": n, "allreduce": alg, "placement": pl, "overrides": list(ov)})
    return points


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet, self.done = total, quiet, 0
        self.tty = sys.stderr.isatty()

    def step(self, what: str):
        self.done += 1
        if self.quiet:
            return
        bar = "#" * (20 * self.done // self.total)
        msg = f"[{bar:<20}] {self.done}/{self.total} {what}"
        print(("\r" + msg + " " * 10) if self.tty else msg, end="" if self.tty else "\n", file=sys.stderr,
              flush=True)
        if self.tty and self.done == self.total:
            print(file=sys.stderr)


def run_point(model: str, p: dict, extra: list[str], dry: bool, tmp: Path, index: int = 0) -> dict:
    args = ["--model", model, "--allreduce", p["allreduce"], "--placement", p["placement"], *extra]
    for o in p["overrides"]:
        args += ["--set", o]
    rep = run_report(args, p["chips"], tmp / f"point-{index}.json", dry)
    return {"model": model, "chips": p["chips"], "allreduce": p["allreduce"], "placement_asked": p["placement"],
            "placement": rep["placement"], "overrides": ";".join(p["overrides"]),
            **{k: rep[k] for k in ("latency_ms", "energy_mj", "edp_mj_ms")},
            **{f"blocks_{k}": rep["blocks"][k] for k in ("latency_ms", "energy_mj", "edp_mj_ms")},
            **{k: rep[k] for k in ("offchip_bytes", "link_bytes", "weight_bytes_total", "output_sha256")}}


def sweep(model: str, points: list[dict], extra: list[str], dry: bool, out: Path, quiet: bool) -> list[dict]:
    prog = Progress(len(points), quiet)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, p in enumerate(points):
            rows.append(run_point(model, p, extra, dry, Path(tmp), i))
            prog.step(f"{model} chips={p['chips']} {p['allreduce']} {p['placement']} {' '.join(p['overrides'])}")
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(rows)
    write_bytes(out / "sweep.csv", buf.getvalue().encode())
    write_json(out / "sweep.json", {"schema": "mcu_emul.sweep/1", "rows": rows})
    return rows
