"""Deployment planner: dry runs of one model over chip counts, topologies, all-reduce algorithms
(and the top-level algorithm of the hierarchical one) and payloads, each tried stationary and,
when a chip is over capacity, with its weights streaming; then which configurations fit, the
smallest chip count meeting each budget, and the latency-energy Pareto front.

Every figure comes from the run reports (`api.execute`, the `run --dry-run` path); every
refusal is the emulator's own error text. `assess` is a pure function of the rows, so the
budgets and the front can be re-evaluated without running again.

    import mcu_emul
    p = mcu_emul.plan("tinyllama-42m", latency_ms=1.0)
    p.smallest["latency_ms"], p.pareto_front, p.rows[0]["latency_ms"]
"""
from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

from .api import DEFAULT_MODEL, MAX_CHIPS, PAYLOADS, RunOptions, _cli_args, execute, resolve
from .comm.collectives import ALGORITHMS
from .config import DATA_DIR, TOP_ALGORITHMS, LlamaConfig, load_model
from .errors import CapacityError, UserError
from .files.report import Document
from .models.partition import check_chips
from .presets import hardware, load_preset

SCHEMA = "mcu_emul.plan/1"
DEFAULT_CHIPS = (1, 2, 4, 8, 16, 32, 64)
SCOPES = ("model", "blocks")
PLACEMENTS = ("auto", "stationary")          # auto: stationary when it fits, else streaming
# the row keys the budgets and the front use, per scope
FIGURES = {"model": {"latency_ms": "latency_ms", "energy_mj": "energy_mj"},
           "blocks": {"latency_ms": "blocks_latency_ms", "energy_mj": "blocks_energy_mj"}}
# run options the planner sets itself for every point
OWNED = ("chips", "allreduce", "placement", "topology", "payload", "dry_run", "json", "trace", "save_logits",
         "check_float", "progress", "fail_rank", "fail_at", "weights", "seed", "prompt", "cluster")
# figures that make two rows the same point (then only the first is shown and on the front)
SAME_KEYS = ("placement", "latency_ms", "energy_mj", "blocks_latency_ms", "blocks_energy_mj",
             "offchip_memory_energy_mj", "link_bytes_per_token", "offchip_bytes_per_token")


@dataclass(frozen=True)
class Point:
    """One configuration of the grid (placement apart: it is tried stationary first)."""
    chips: int
    topology: str
    allreduce: str
    top_algorithm: str | None          # the group leaders' algorithm, hierarchical only
    payload: str

    def fields(self) -> dict:
        return {"chips": self.chips, "topology": self.topology, "allreduce": self.allreduce,
                "top_algorithm": self.top_algorithm, "payload": self.payload}


def known_topologies() -> list[str]:
    return sorted(p.stem for p in (DATA_DIR / "topology").glob("*.toml"))


def _names(v, what: str, choices) -> list:
    """A checked, de-duplicated list of choices (order kept)."""
    if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__") or not list(v):
        raise UserError(f"{what} must be a non-empty list, got {v!r}")
    v = list(v)
    for x in v:
        if not isinstance(x, str) or x.strip() == "":
            raise UserError(f"{what} {x!r}: expected a name")
        if choices is not None and x not in choices:
            raise UserError(f"{what} {x!r}: choose from {', '.join(choices)}")
    return list(dict.fromkeys(v))


def _budget(v, what: str):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise UserError(f"{what} {v!r}: must be a finite number > 0")
    return float(v)


def _chips(cfg, chips) -> list[int]:
    if chips is None:
        n = [c for c in DEFAULT_CHIPS if c <= cfg.max_chips]
        return n + ([cfg.max_chips] if cfg.max_chips <= DEFAULT_CHIPS[-1] and cfg.max_chips not in n else [])
    if isinstance(chips, (str, bytes)) or not hasattr(chips, "__iter__") or not list(chips) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= MAX_CHIPS for c in chips):
        raise UserError(f"--chips {chips!r}: expected a non-empty list of integers from 1 to {MAX_CHIPS}")
    for c in chips:
        check_chips(cfg, c)
    return sorted(set(chips))


def grid(chips, topologies, allreduce, tops, payloads) -> list[Point]:
    """Every configuration, in the order rows are numbered: chips, topology, algorithm (the
    hierarchical one once per top-level algorithm), payload."""
    algs = [(a, t) for a in allreduce for t in (tops if a == "hierarchical" else (None,))]
    return [Point(n, topo, a, t, p) for n in chips for topo in topologies for a, t in algs for p in payloads]


def _per_step(rep, key: str):
    """A run's byte counter per generated token (decode) or per inference (encode), from the
    same phase as the report's headline figures."""
    if rep.mode == "encode":
        total, steps = rep[key], 1
    else:
        phase = "decode" if rep.figures_per == "token" else "prefill"
        total = sum(c["sections"][phase][key] for c in rep.per_chip)
        steps = rep.decode_tokens if phase == "decode" else 1
    v = total / steps
    return int(v) if float(v).is_integer() else v


def _row(point: Point, rep, o: RunOptions) -> dict:
    args = ["python", "-m", "mcu_emul", "run", "--chips", str(point.chips), "--dry-run", *_cli_args(o)]
    return point.fields() | {
        "placement": rep.placement,
        **{k: rep[k] for k in ("latency_ms", "energy_mj", "edp_mj_ms")},
        **{f"blocks_{k}": rep.blocks[k] for k in ("latency_ms", "energy_mj", "edp_mj_ms")},
        "offchip_memory_energy_mj": rep.offchip_memory_energy_mj,
        "link_bytes_per_token": _per_step(rep, "link_bytes"),
        "offchip_bytes_per_token": _per_step(rep, "offchip_bytes"),
        "weight_bytes_total": rep.weight_bytes_total,
        "onchip_used_max_bytes": max(c["onchip_used_bytes"] for c in rep.per_chip),
        "onchip_capacity_bytes": rep.per_chip[0]["onchip_capacity_bytes"],
        "run": shlex.join(args),
    }


def dominates(a: dict, b: dict, lat: str, en: str) -> bool:
    """a is at least as good as b in both figures and better in one."""
    return a[lat] <= b[lat] and a[en] <= b[en] and (a[lat] < b[lat] or a[en] < b[en])


def pareto_front(rows: list[dict], lat: str, en: str) -> list[int]:
    """Ids of the rows no other row dominates (rows with the figures of an earlier row left
    out), by latency."""
    pts = [r for r in rows if r["same_figures_as"] is None]
    front = [r for r in pts if not any(dominates(o, r, lat, en) for o in pts)]
    return [r["id"] for r in sorted(front, key=lambda r: (r[lat], r[en], r["id"]))]


def _answer(rows: list[dict], names: list[str], budgets: dict, fig: dict, chips: list[int]) -> dict:
    """The smallest chip count at which some row meets every budget in `names`, its best row
    (lowest figure of the first budget), and per chip count the best row and its miss."""
    key = fig[names[0]]

    def over(r):                                   # largest miss, relative to its budget
        return max((r[fig[k]] - budgets[k]) / budgets[k] for k in names)
    ok = [r for r in rows if over(r) <= 0]
    by_chips = []
    for n in chips:
        at = [r for r in rows if r["chips"] == n]
        best = min(at, key=lambda r: (over(r), r[key], r["id"])) if at else None
        by_chips.append({"chips": n, "best_row": best["id"] if best else None,
                         "misses": {k: best[fig[k]] - budgets[k] for k in names
                                    if best[fig[k]] > budgets[k]} if best else None})
    out = {"budgets": names, "by_chips": by_chips}
    if ok:
        n = min(r["chips"] for r in ok)
        at = [r for r in ok if r["chips"] == n]
        best = min(at, key=lambda r: (r[key], r["id"]))
        return out | {"chips": n, "row": best["id"], "rows": [r["id"] for r in at], "closest_row": None,
                      "closest_misses": None}
    closest = min(rows, key=lambda r: (over(r), r[key], r["id"])) if rows else None
    return out | {"chips": None, "row": None, "rows": [], "closest_row": closest["id"] if closest else None,
                  "closest_misses": {k: closest[fig[k]] - budgets[k] for k in names
                                     if closest[fig[k]] > budgets[k]} if closest else None}


def assess(rows: list[dict], scope: str, latency_ms: float | None = None, energy_mj: float | None = None,
           chips: list[int] | None = None) -> dict:
    """Budgets, smallest chip counts and the Pareto front of `rows` (pure: no run); `chips`:
    the chip counts planned (default: those of the rows). Returns {"scope", "figures",
    "budgets", "misses": {id: {budget: over by}}, "smallest": {budget or "both": answer},
    "pareto_front": [ids]}."""
    if scope not in SCOPES:
        raise UserError(f"--scope {scope!r}: choose from {', '.join(SCOPES)}")
    fig = FIGURES[scope]
    budgets = {k: v for k, v in (("latency_ms", _budget(latency_ms, "--latency-ms")),
                                 ("energy_mj", _budget(energy_mj, "--energy-mj"))) if v is not None}
    chips = sorted(set(chips or ()) | {r["chips"] for r in rows})
    smallest = {k: _answer(rows, [k], budgets, fig, chips) for k in budgets}
    if len(budgets) == 2:
        smallest["both"] = _answer(rows, ["latency_ms", "energy_mj"], budgets, fig, chips)
    misses = {r["id"]: {k: r[fig[k]] - v for k, v in budgets.items() if r[fig[k]] > v} for r in rows}
    return {"scope": scope, "figures": fig, "budgets": {"latency_ms": budgets.get("latency_ms"),
                                                          "energy_mj": budgets.get("energy_mj")},
            "misses": misses, "smallest": smallest,
            "pareto_front": pareto_front(rows, fig["latency_ms"], fig["energy_mj"])}


class Plan(Document):
    """A plan as an object: its JSON keys as attributes (`p.rows`, `p.refusals`, `p.smallest`,
    `p.pareto_front`, ...); `to_dict()` is what `plan --json` writes; `save(path)`;
    `summary()` is the text the command prints."""

    what = "plan"

    def __repr__(self):
        d = self._doc
        return f"Plan({d['model']}: {len(d['rows'])} configurations fit, Pareto front rows {d['pareto_front']})"

    def summary(self) -> str:
        from .commands.plan import render
        return render(self._doc)


def _topologies(given, hw: str, preset: str, overrides: dict) -> tuple[list[str], list[dict]]:
    """The topologies to plan over and those skipped. Named ones must load with the preset (its
    error otherwise); of the default ones (every data/topology file), those the preset was
    not fitted for are skipped with the preset's own message."""
    if preset != "none":
        load_preset(preset)                             # its own errors first, not as a skipped topology
    if given is not None:
        names = _names(given, "--topology", None)
        for t in names:
            hardware(hw, t, preset, [], overrides)
        return names, []
    names, skipped = [], []
    for t in known_topologies():
        try:
            hardware(hw, t, preset, [], overrides)
            names.append(t)
        except UserError as e:
            hardware(hw, t, "none", [], overrides)       # any other problem is the user's: raise it
            skipped.append({"topology": t, "message": str(e)})
    return names, skipped


def run_plan(model: str = DEFAULT_MODEL, *, latency_ms=None, energy_mj=None, scope: str = "model", chips=None,
             topologies=None, allreduce=None, top_algorithms=None, payloads=None, placement: str = "auto",
             progress=None, invocation: str = "", **options) -> Plan:
    """`plan` with the invocation recorded in the provenance (the command line's or the call's)."""
    import dataclasses
    from .api import provenance
    lat, en = _budget(latency_ms, "--latency-ms"), _budget(energy_mj, "--energy-mj")
    if scope not in SCOPES:
        raise UserError(f"--scope {scope!r}: choose from {', '.join(SCOPES)}")
    if placement not in PLACEMENTS:
        raise UserError(f"--placement {placement!r}: choose from {', '.join(PLACEMENTS)}")
    owned = sorted(set(options) & set(OWNED))
    if owned:
        raise UserError(f"plan option {owned[0]!r}: the planner sets it for every point (or it does not apply to "
                        "dry runs); give chips, topologies, allreduce, top_algorithms, payloads, placement")
    overrides = dict(options.pop("overrides", None) or {})
    if "link.top_algorithm" in overrides:
        raise UserError("--set link.top_algorithm: the plan sets it for every point; give --top-algorithm "
                        "(top_algorithms=)")
    if not isinstance(model, str):
        raise UserError(f"model must be a name or a .toml path, got {model!r}")
    base = RunOptions.from_kwargs(dict(options, model=model, overrides=overrides or None))   # names and types
    cfg = load_model(model)
    decode = isinstance(cfg, LlamaConfig)
    n_chips = _chips(cfg, chips)
    algs = _names(ALGORITHMS if allreduce is None else allreduce, "--allreduce", ALGORITHMS)
    tops = _names(TOP_ALGORITHMS if top_algorithms is None else top_algorithms, "--top-algorithm", TOP_ALGORITHMS)
    if top_algorithms is not None and "hierarchical" not in algs:
        raise UserError(f"--top-algorithm {','.join(tops)}: applies to the hierarchical all-reduce only, and "
                        f"--allreduce {','.join(algs)} has none")
    pays = _names((PAYLOADS if decode else ("int32",)) if payloads is None else payloads, "--payload", PAYLOADS)
    if not decode and "int8" in pays:
        raise UserError(f"--payload int8: implemented for Llama models only, and '{cfg.name}' is an encoder")
    topos, skipped = _topologies(topologies, base.hw, base.preset, overrides)
    if not topos:
        raise UserError(f"no topology to plan over: --preset {base.preset} was fitted for none of "
                        f"{', '.join(s['topology'] for s in skipped)}; name one, or give --preset none")
    points = grid(n_chips, topos, algs, tops, pays)
    opts = []
    for pt in points:                                  # every point checked before the first runs
        ov = overrides | ({"link.top_algorithm": pt.top_algorithm} if pt.top_algorithm else {})
        o = dataclasses.replace(base, chips=pt.chips, topology=pt.topology, allreduce=pt.allreduce,
                                payload=pt.payload, placement="stationary", dry_run=True, overrides=ov or None)
        resolve(o, None)
        opts.append(o)
    rows, refusals, figures_per = [], [], None
    for i, (pt, o) in enumerate(zip(points, opts)):
        call = f"{invocation or 'mcu_emul.plan'} point {i + 1}"
        tries = ("stationary", "stream") if placement == "auto" else ("stationary",)
        for pl in tries:
            o = dataclasses.replace(o, placement=pl)
            try:
                rep = execute(o, None, call)[0]
            except CapacityError as e:
                refusals.append(pt.fields() | {"placement": pl, "message": str(e)})
                continue
            figures_per = rep.figures_per
            rows.append({"id": len(rows) + 1} | _row(pt, rep, o))
            break
        if progress:
            progress(i + 1, len(points), pt)
    seen = {}
    for r in rows:
        first = seen.setdefault((r["chips"], *(r[k] for k in SAME_KEYS)), r["id"])
        r["same_figures_as"] = first if first != r["id"] else None
    a = assess(rows, scope, lat, en, n_chips)
    front = set(a["pareto_front"])
    for r in rows:
        r["misses"] = a["misses"][r["id"]]
        r["pareto"] = r["id"] in front
    spec = resolve(opts[0], None)[0]
    prov = provenance(opts[0], spec, invocation, None)
    prov = {k: v for k, v in prov.items() if k not in ("topology_file", "weights", "input_seed")} | {
        "overrides": overrides, "topology_files": [provenance(dataclasses.replace(opts[0], topology=t), spec, "",
                                                              None)["topology_file"] for t in topos]}
    return Plan({
        "schema": SCHEMA, "model": cfg.name, "mode": "decode" if decode else "encode", "figures_per": figures_per,
        "scope": scope, "figures": a["figures"], "budgets": a["budgets"], "placement": placement,
        "grid": {"chips": n_chips, "topologies": topos, "allreduce": algs,
                 "top_algorithms": tops if "hierarchical" in algs else [], "payloads": pays},
        "run_options": {k: v for k, v in options.items()}, "points": len(points),
        "rows": rows, "refusals": refusals, "skipped_topologies": skipped,
        "smallest": a["smallest"], "pareto_front": a["pareto_front"], "provenance": prov})


def plan(model: str = DEFAULT_MODEL, *, latency_ms: float | None = None, energy_mj: float | None = None,
         scope: str = "model", chips=None, topologies=None, allreduce=None, top_algorithms=None, payloads=None,
         placement: str = "auto", progress=None, **options) -> Plan:
    """Plan a deployment of `model`: dry runs over chip counts (default 1, 2, 4, ... 64 up to
    the model's (KV) heads), topologies (default: every data/topology file the preset was
    fitted for), all-reduce algorithms (default all; the hierarchical one with every top-level
    algorithm), payloads (default int32 and, for Llama, int8). Each configuration is tried
    stationary; when a chip is over capacity that refusal is kept and, with placement "auto",
    the configuration runs with its weights streaming (placement "stationary": not).

    Budgets (`latency_ms`, `energy_mj`, per token or inference) apply to the whole model
    (scope "model", the reports' headline figures) or to the Transformer blocks alone (scope
    "blocks", the paper's scope). Other keywords are `run` options for every point
    (gen_tokens, seq_len, prompt_ids, prefill, hw, preset, overrides). `progress(done, total,
    point)` is called after each configuration."""
    call = "mcu_emul.plan(" + ", ".join(f"{k}={v!r}" for k, v in dict(
        options, model=model, latency_ms=latency_ms, energy_mj=energy_mj, scope=scope, chips=chips,
        topologies=topologies, allreduce=allreduce, top_algorithms=top_algorithms, payloads=payloads,
        placement=placement).items() if v is not None) + ")"
    return run_plan(model, latency_ms=latency_ms, energy_mj=energy_mj, scope=scope, chips=chips,
                    topologies=topologies, allreduce=allreduce, top_algorithms=top_algorithms, payloads=payloads,
                    placement=placement, progress=progress, invocation=call, **options)
