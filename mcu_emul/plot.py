"""PNG plots of a paper table (paper.json): speed-up vs chips, energy by category, latency
breakdown. Needs matplotlib (`pip install -e '.[plot]'`)."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError

CATS = ("compute", "onchip", "offchip", "link", "idle")


def _load(path) -> dict:
    if not Path(path).is_file():
        raise UserError(f"cannot read results {path}: not an existing regular file")
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read results {path}: {e}") from None
    schema = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
    if schema != "mcu_emul.paper/1":
        raise UserError(f"{path}: not a paper table (schema {schema!r}, expected 'mcu_emul.paper/1'); "
                        "make one with `python -m mcu_emul paper --dry-run --json FILE`")
    return doc


def _save(fig, path):
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    from .files import write_bytes
    write_bytes(path, buf.getvalue())


def plot(results: str, out: str) -> list[Path]:
    doc = _load(results)
    try:
        return _plot(doc, Path(out), results)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise UserError(f"{results}: not a complete paper table ({type(e).__name__}: {e}); "
                        "make one with `python -m mcu_emul paper --dry-run --json FILE`") from None


def _plot(doc: dict, out: Path, results: str) -> list[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plot needs matplotlib: pip install -e '.[plot]'") from None
    from .files import check_paths
    check_paths({f"--out {n}": out / n for n in ("speedup.png", "energy.png", "latency.png")}, 
                {"results": results})
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
