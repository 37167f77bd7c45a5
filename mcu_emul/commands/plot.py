"""Plots of mcu_emul's own outputs (PNG, SVG or PDF; needs matplotlib, `pip install -e '.[plot]'`):
- a paper table (paper.json): speed-up vs chips with the published points, energy and latency by category;
- a run report (`run --json`): per-chip emulated time and energy by category, on-chip memory
  by category against the chip's capacity;
- a sweep (sweep.json): one figure against the chip count, a line per value of the other axes;
- a plan (`plan --json`): energy against latency of every configuration that fits, the Pareto
  front and the budgets.
Every number drawn is checked first; all figures are drawn in memory, then written."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import UserError

CATS = ("compute", "onchip", "offchip", "link", "idle")
SCHEMAS = ("mcu_emul.paper/1", "mcu_emul.report/1", "mcu_emul.sweep/1", "mcu_emul.plan/1")
FORMATS = ("png", "svg", "pdf")
SWEEP_FIGURES = {"latency_ms": "latency (ms)", "energy_mj": "energy (mJ)", "edp_mj_ms": "EDP (mJ ms)",
                 "blocks_latency_ms": "blocks latency (ms)", "blocks_energy_mj": "blocks energy (mJ)",
                 "blocks_edp_mj_ms": "blocks EDP (mJ ms)", "offchip_bytes": "off-chip traffic (B)",
                 "link_bytes": "link traffic (B)"}


def _load(path) -> dict:
    if not Path(path).is_file():
        raise UserError(f"cannot read results {path}: not an existing regular file")
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"cannot read results {path}: {type(e).__name__}: {e}") from None
    schema = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
    if schema not in SCHEMAS:
        raise UserError(f"{path}: not a paper table, run report, sweep or plan (schema {schema!r}, expected one of "
                        f"{', '.join(SCHEMAS)}); make one with `paper --json`, `run --json`, `sweep` or `plan --json`")
    return doc


def _image(fig, fmt: str) -> bytes:
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=130, bbox_inches="tight")
    return buf.getvalue()


def _number(v, where: str, positive: bool = True) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or (v == 0 and not positive))
    if not ok:
        raise UserError(f"{where} = {v!r}: expected a finite number {'> 0' if positive else '>= 0'}")
    return float(v)


def validate_report(doc: dict, path: str):
    chips = doc.get("per_chip")
    if not isinstance(chips, list) or not chips or not all(isinstance(c, dict) for c in chips):
        raise UserError(f"{path}: 'per_chip' must be a non-empty list of chips")
    for k in ("latency_ms", "energy_mj"):
        _number(doc.get(k), f"{path}: {k}")
    for i, c in enumerate(chips):
        at = f"{path}: per_chip[{i}]"
        _number(c.get("cycles"), f"{at}.cycles")
        _number(c.get("onchip_capacity_bytes"), f"{at}.onchip_capacity_bytes")
        for key in ("cycles_by_category", "energy_mj_by_category", "onchip_used_by_category"):
            cats = c.get(key)
            if not isinstance(cats, dict) or not cats:
                raise UserError(f"{at}.{key} must be an object of numbers")
            for k, v in cats.items():
                _number(v, f"{at}.{key}.{k}", positive=False)


def validate_sweep(doc: dict, path: str, y: str):
    rows = doc.get("rows")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{path}: 'rows' must be a non-empty list of points")
    for i, r in enumerate(rows):
        c = r.get("chips")
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise UserError(f"{path}: rows[{i}].chips = {c!r}: expected an integer >= 1")
        _number(r.get(y), f"{path}: rows[{i}].{y}", positive=False)


def validate_plan(doc: dict, path: str):
    """The rows, figures, budgets and front a plan's figure draws."""
    from ..planner import FIGURES
    rows = doc.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{path}: 'rows' must be a list of configurations")
    if not rows:
        raise UserError(f"{path}: no configuration fits (see its refusals): nothing to draw")
    if doc.get("figures") not in FIGURES.values():
        raise UserError(f"{path}: 'figures' = {doc.get('figures')!r}: expected one of {list(FIGURES.values())}")
    for i, r in enumerate(rows):
        c = r.get("chips")
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise UserError(f"{path}: rows[{i}].chips = {c!r}: expected an integer >= 1")
        if r.get("id") != i + 1:
            raise UserError(f"{path}: rows[{i}].id = {r.get('id')!r}: expected {i + 1}")
        for k in doc["figures"].values():
            _number(r.get(k), f"{path}: rows[{i}].{k}")
    budgets = doc.get("budgets")
    if not isinstance(budgets, dict):
        raise UserError(f"{path}: 'budgets' must be an object")
    for k in ("latency_ms", "energy_mj"):
        if budgets.get(k) is not None:
            _number(budgets[k], f"{path}: budgets.{k}")
    front = doc.get("pareto_front")
    if not isinstance(front, list) or not front or not all(
            isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= len(rows) for i in front):
        raise UserError(f"{path}: 'pareto_front' must be a non-empty list of row ids 1..{len(rows)}")


def validate(doc: dict, path: str):
    """Every number the paper plots draw, checked before anything is drawn or written."""
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


def plot(results: str, out: str, fmt: str = "png", y: str = "latency_ms") -> list[Path]:
    """Draw every figure of `results` in memory, then write them (none is written if any
    input is bad). Returns the files written."""
    from ..files.outputs import check_paths, write_bytes
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    if y not in SWEEP_FIGURES:
        raise UserError(f"--y {y!r}: choose from {', '.join(SWEEP_FIGURES)}")
    doc = _load(results)
    schema = doc["schema"]
    if schema == "mcu_emul.paper/1":
        validate(doc, results)
        names = ("speedup", "energy", "latency")
    elif schema == "mcu_emul.report/1":
        validate_report(doc, results)
        names = ("run",)
    elif schema == "mcu_emul.plan/1":
        validate_plan(doc, results)
        names = ("pareto",)
    else:
        validate_sweep(doc, results, y)
        names = ("sweep",)
    out = Path(out)
    files = {n: out / f"{n}.{fmt}" for n in names}
    check_paths({f"--out {f.name}": f for f in files.values()}, {"results": results})
    plt = _pyplot()
    draw = {"mcu_emul.paper/1": _draw_paper, "mcu_emul.report/1": _draw_run, "mcu_emul.sweep/1": _draw_sweep,
            "mcu_emul.plan/1": _draw_plan}[schema]
    figs = draw(plt, doc, y) if schema == "mcu_emul.sweep/1" else draw(plt, doc)
    images = {n: _image(figs[n], fmt) for n in names}
    plt.close("all")
    for n in names:
        write_bytes(files[n], images[n])
    return list(files.values())


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plot needs matplotlib: pip install -e '.[plot]'") from None
    return plt


def _chip_axis(ax, chips):
    """Chip counts on a log2 axis with plain tick labels."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(chips)))
    ax.set_xticklabels([str(c) for c in sorted(set(chips))])
    ax.minorticks_off()
    ax.set_xlabel("chips")


def _draw_run(plt, doc: dict) -> dict:
    """Per-chip time and energy per token/inference by category; on-chip memory use."""
    per = doc.get("figures_per", "token")
    # the counters behind the figures: a decode run's decode (or prefill) phase, else the whole run
    phase = {"token": "decode", "prefill": "prefill"}.get(per) if doc.get("mode") == "decode" else None
    chips = [c["sections"].get(phase, c) | {"rank": c.get("rank", i), "onchip_used_by_category":
                                            c["onchip_used_by_category"], "onchip_capacity_bytes":
                                            c["onchip_capacity_bytes"]} if phase else c
             for i, c in enumerate(doc["per_chip"])]
    ms_per_cycle = doc["latency_ms"] / max(c["cycles"] for c in chips)         # per step
    steps = sum(c["energy_mj"] for c in chips) / doc["energy_mj"] if doc["energy_mj"] else 1.0
    ranks = [str(c.get("rank", i)) for i, c in enumerate(chips)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = ((axes[0], "cycles_by_category", ms_per_cycle, f"emulated time per {per} (ms)"),
              (axes[1], "energy_mj_by_category", 1.0 / steps, f"energy per {per} (mJ)"))
    for ax, key, scale, label in panels:
        bottom = [0.0] * len(chips)
        for cat in CATS:
            vals = [c[key].get(cat, 0.0) * scale for c in chips]
            ax.bar(ranks, vals, bottom=bottom, label=cat)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xlabel("chip (rank)")
        ax.set_ylabel(label)
    axes[0].legend(loc="upper left", bbox_to_anchor=(0.0, -0.15), ncol=5, frameon=False)
    ax = axes[2]
    bottom = [0.0] * len(chips)
    for cat in chips[0]["onchip_used_by_category"]:
        vals = [c["onchip_used_by_category"].get(cat, 0) / 2**20 for c in chips]
        ax.bar(ranks, vals, bottom=bottom, label=cat)
        bottom = [b + v for b, v in zip(bottom, vals)]
    cap = chips[0]["onchip_capacity_bytes"] / 2**20
    ax.axhline(cap, color="black", linestyle="--", linewidth=1)
    ax.text(len(chips) - 0.5, cap, f" capacity {cap:.0f} MiB", va="bottom", ha="right", fontsize=8)
    ax.set_ylim(0, cap * 1.15)
    ax.set_xlabel("chip (rank)")
    ax.set_ylabel("on-chip memory used (MiB)")
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.15), ncol=4, frameon=False)
    fig.suptitle(f"{doc.get('model', '?')}: {doc.get('mode', '')} on {len(chips)} chip(s), placement "
                 f"{doc.get('placement', '?')}, whole model (embedding to logits)")
    return {"run": fig}


def _draw_sweep(plt, doc: dict, y: str) -> dict:
    """`y` against the chip count, one line per combination of the other axes."""
    lines = {}
    for r in doc["rows"]:
        key = " ".join(x for x in (r.get("allreduce", ""), r.get("placement_asked", ""), r.get("overrides", "")) if x)
        lines.setdefault(key, []).append((r["chips"], r[y]))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for key, pts in lines.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=key or "all points")
    _chip_axis(ax, [r["chips"] for r in doc["rows"]])
    ax.set_ylabel(SWEEP_FIGURES[y] + (" per token/inference" if "bytes" not in y else ""))
    ax.set_title(f"sweep of {doc['rows'][0].get('model', '?')}")
    if len(lines) > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8)
    return {"sweep": fig}


def _draw_paper(plt, doc: dict) -> dict:
    curves, pub = doc["curves"], doc.get("published_points", {})
    figs = {}

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, (model, pts) in zip(axes[0], curves.items()):
        n = [p["chips"] for p in pts]
        ax.plot(n, [p["speedup"] for p in pts], "o-", label="mcu_emul")
        ax.plot(n, n, "--", color="grey", label="ideal linear")
        pp = pub.get(model, {})
        if pp:
            ax.plot([int(k) for k in pp], list(pp.values()), "r*", markersize=12, label="published")
        _chip_axis(ax, n)
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
        ax.set_title(f"{model} (Transformer blocks)")
        ax.set_ylabel("speed-up vs 1 chip")
        ax.legend(loc="upper left", frameon=False)
    figs["speedup"] = fig

    for key, fname, unit in (("energy_mj_by_category", "energy", "energy per token/inference (mJ)"),
                             ("latency_ms_by_category", "latency", "latency per token/inference (ms)")):
        fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
        for ax, (model, pts) in zip(axes[0], curves.items()):
            labels = [str(p["chips"]) for p in pts]
            bottom = [0.0] * len(pts)
            for c in CATS:
                vals = [p[key][c] for p in pts]
                ax.bar(labels, vals, bottom=bottom, label=c)
                bottom = [b + v for b, v in zip(bottom, vals)]
            ax.set_title(f"{model} (Transformer blocks)")
            ax.set_xlabel("chips")
            ax.set_ylabel(unit)
        axes[0][0].legend(loc="upper right", frameon=False)
        figs[fname] = fig
    return figs


def _draw_plan(plt, doc: dict) -> dict:
    """Energy against latency of every configuration with distinct figures (colour: chips;
    marker: placement), the Pareto front as a staircase, the budgets as dashed lines."""
    lat, en = doc["figures"]["latency_ms"], doc["figures"]["energy_mj"]
    rows = [r for r in doc["rows"] if r.get("same_figures_as") is None]
    per = doc.get("figures_per") or "token"
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    chips = sorted({r["chips"] for r in rows})
    colours = plt.get_cmap("viridis")
    for j, n in enumerate(chips):
        for pl, marker in (("stationary", "o"), ("stream", "x")):
            pts = [r for r in rows if r["chips"] == n and r.get("placement") == pl]
            if pts:
                ax.scatter([r[lat] for r in pts], [r[en] for r in pts], marker=marker, s=36,
                           color=colours(j / max(1, len(chips) - 1)), label=f"{n} chip(s), {pl}")
    front = [doc["rows"][i - 1] for i in doc["pareto_front"]]
    ax.step([r[lat] for r in front], [r[en] for r in front], where="post", color="black", linewidth=1)
    ax.scatter([r[lat] for r in front], [r[en] for r in front], s=110, facecolors="none", edgecolors="black",
               label="Pareto front")
    for k, r in enumerate(front):                       # labels above and below in turn: neighbours overlap less
        alg = f"hier/{r['top_algorithm']}" if r.get("top_algorithm") else r.get("allreduce", "")
        ax.annotate(f"#{r['id']} {r['chips']} ch. {alg} {r.get('payload', '')}", (r[lat], r[en]), fontsize=7,
                    xytext=(4, 4 if k % 2 == 0 else -11), textcoords="offset points")
    b = doc["budgets"]
    if b.get("latency_ms") is not None:
        ax.axvline(b["latency_ms"], color="red", linestyle="--", linewidth=1, label=f"budget {b['latency_ms']:g} ms")
    if b.get("energy_mj") is not None:
        ax.axhline(b["energy_mj"], color="red", linestyle=":", linewidth=1, label=f"budget {b['energy_mj']:g} mJ")
    if max(r[lat] for r in rows) > 10 * min(r[lat] for r in rows):
        ax.set_xscale("log")
    scope = {"model": "whole model", "blocks": "Transformer blocks"}.get(doc.get("scope"), "")
    ax.set_xlabel(f"latency per {per} (ms), {scope}")
    ax.set_ylabel(f"chips' energy per {per} (mJ), {scope}")
    ax.set_title(f"plan of {doc.get('model', '?')}: {len(doc['rows'])} configurations fit")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8)
    return {"pareto": fig}
