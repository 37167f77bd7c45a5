"""PNG plots of a paper table (paper.json): speed-up vs chips, energy by category, latency
breakdown. Needs matplotlib (`pip install -e '.[plot]'`)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import UserError

CATS = ("compute", "onchip", "offchip", "link", "idle")


def _load(path) -> dict:
    if not Path(path).is_file():
        raise UserError(f"cannot read results {path}: not an existing regular file")
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"cannot read results {path}: {type(e).__name__}: {e}") from None
    schema = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
    if schema != "mcu_emul.paper/1":
        raise UserError(f"{path}: not a paper table (schema {schema!r}, expected 'mcu_emul.paper/1'); "
                        "make one with `python -m mcu_emul paper --dry-run --json FILE`")
    return doc


def _png(fig) -> bytes:
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _number(v, where: str, positive: bool = True) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or (v == 0 and not positive))
    if not ok:
        raise UserError(f"{where} = {v!r}: expected a finite number {'> 0' if positive else '>= 0'}")
    return float(v)


def validate(doc: dict, path: str):
    """Every number the plots draw, checked before anything is drawn or written."""
    curves = doc.get("curves")
    if not isinstance(curves, dict) or not curves:
        raise UserError(f"{path}: 'curves' must be a non-empty object of model -> points")
    for model, pts in curves.items():
        if not isinstance(pts, list) or not pts or not all(isinstance(p, dict) for p in pts):
            raise UserError(f"{path}: curves.{model} must be a non-empty list of points")
        for i, p in enumerate(pts):
            at = f"{path}: curves.{model}[{i}]"
            c = p.get("chips")
            if isinstance(c, bool) or not isinstance(c, int) or c < 1:
                raise UserError(f"{at}.chips = {c!r}: expected an integer >= 1")
            _number(p.get("speedup"), f"{at}.speedup")
            for key in ("energy_mj_by_category", "latency_ms_by_category"):
                cats = p.get(key)
                if not isinstance(cats, dict):
                    raise UserError(f"{at}.{key} must be an object of {', '.join(CATS)}")
                for c in CATS:
                    _number(cats.get(c), f"{at}.{key}.{c}", positive=False)
    pub = doc.get("published_points", {})
    if not isinstance(pub, dict) or not all(isinstance(v, dict) for v in pub.values()):
        raise UserError(f"{path}: 'published_points' must be an object of model -> {{chips: value}}")
    for model, pts in pub.items():
        for k, v in pts.items():
            if not k.isdigit():
                raise UserError(f"{path}: published_points.{model} key {k!r}: expected a chip count")
            _number(v, f"{path}: published_points.{model}.{k}")


def plot(results: str, out: str) -> list[Path]:
    """Draw the three PNGs in memory, then write them (none is written if any input is bad)."""
    from ..files.outputs import check_paths, write_bytes
    doc = _load(results)
    validate(doc, results)
    out = Path(out)
    names = ("speedup.png", "energy.png", "latency.png")
    check_paths({f"--out {n}": out / n for n in names}, {"results": results})
    pngs = _draw(doc)
    for n in names:
        write_bytes(out / n, pngs[n])
    return [out / n for n in names]


def _draw(doc: dict) -> dict[str, bytes]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plot needs matplotlib: pip install -e '.[plot]'") from None
    curves, pub = doc["curves"], doc.get("published_points", {})
    pngs = {}

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, (model, pts) in zip(axes[0], curves.items()):
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
    pngs["speedup.png"] = _png(fig)

    for key, fname, unit in (("energy_mj_by_category", "energy.png", "energy per token/inference (mJ)"),
                             ("latency_ms_by_category", "latency.png", "latency per token/inference (ms)")):
        fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
        for ax, (model, pts) in zip(axes[0], curves.items()):
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
        pngs[fname] = _png(fig)
    plt.close("all")
    return pngs
