"""PNG plots of a paper table (paper.json): speed-up vs chips, energy by category, latency
breakdown. Needs matplotlib (`pip install -e '.[plot]'`)."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError

CATS = ("compute", "onchip", "offchip", "link", "idle")


def _load(path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read results {path}: {e}") from None
    if doc.get("schema") != "mcu_emul.paper/1":
        raise UserError(f"{path}: not a paper table (schema {doc.get('schema')!r}, expected 'mcu_emul.paper/1'); "
                        "make one with `python -m mcu_emul paper --dry-run --json FILE`")
    return doc


def _save(fig, path):
    from .report import atomic_write_bytes
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot(results: str, out: str) -> list[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plot needs matplotlib: pip install -e '.[plot]'") from None
    doc = _load(results)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    curves, pub = doc["curves"], doc.get("published_points", {})
    written = []

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4))
    for ax, (model, pts) in zip(axes, curves.items()):
        n = [p["chips"] for p in pts]
        ax.plot(n, [p["speedup"] for p in pts], "o-", label="mcu_emul")
        ax.plot(n, n, "--", color="grey", label="ideal linear")
        pp = pub.get(model, {})
        if pp:
            ax.plot([int(k) for k in pp], list(pp.values()), "r*", markersize=12, label="published")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_title(model)
        ax.set_xlabel("chips")
        ax.set_ylabel("speed-up vs 1 chip")
        ax.legend()
    _save(fig, out / "speedup.png")
    written.append(out / "speedup.png")

    for key, fname, unit in (("energy_mj_by_category", "energy.png", "energy per token/inference (mJ)"),
                             ("latency_ms_by_category", "latency.png", "latency per token/inference (ms)")):
        fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4))
        for ax, (model, pts) in zip(axes, curves.items()):
            labels = [str(p["chips"]) for p in pts]
            bottom = [0.0] * len(pts)
            for c in CATS:
                vals = [p[key][c] for p in pts]
                ax.bar(labels, vals, bottom=bottom, label=c)
                bottom = [b + v for b, v in zip(bottom, vals)]
            ax.set_title(model)
            ax.set_xlabel("chips")
            ax.set_ylabel(unit)
            ax.legend()
        _save(fig, out / fname)
        written.append(out / fname)
    plt.close("all")
    return written
