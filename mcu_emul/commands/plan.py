"""plan command: the planner's options, and its plan as a text table (every configuration that
fits, the refusals in words, the smallest chip count meeting each budget, the Pareto front);
`--json` writes the plan itself (schema mcu_emul.plan/1), whole."""
from __future__ import annotations

import argparse
import math
import re
import shlex
import sys

from ..errors import UserError

# `run` options a plan passes to every point (--run-args); the rest it sets itself or refuses
RUN_ARGS = ("--gen-tokens", "--seq-len", "--prompt-ids", "--prefill", "--hw", "--preset", "--set")
SCOPE_WORDS = {"model": "whole model (embedding to logits)", "blocks": "Transformer blocks alone (the paper's scope)"}


def _budget(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s!r}")
    return v


def add_arguments(sp):
    """The plan subcommand's options (called by cli.parser)."""
    from ..api import DEFAULT_MODEL
    from ..planner import PLACEMENTS, SCOPES
    sp.add_argument("--model", default=DEFAULT_MODEL)
    sp.add_argument("--latency-ms", type=_budget, help="budget: ms per token (decode) or inference (encode)")
    sp.add_argument("--energy-mj", type=_budget, help="budget: mJ per token or inference (the chips' energy)")
    sp.add_argument("--scope", choices=SCOPES, default="model",
                    help="what the budgets and the front apply to: the whole model (default) or the Transformer "
                         "blocks alone (the paper's figures)")
    sp.add_argument("--chips", help="comma-separated chip counts (default 1,2,4,... up to the model's (KV) heads, "
                                    "at most 64)")
    sp.add_argument("--topology", help="comma-separated data/topology names or .toml paths (default: every "
                                       "topology file the preset was fitted for)")
    sp.add_argument("--allreduce", help="comma-separated algorithms (default hierarchical,ring,flat)")
    sp.add_argument("--top-algorithm", help="comma-separated top-level algorithms of the hierarchical all-reduce "
                                            "(default ring,recursive_doubling,tree)")
    sp.add_argument("--payload", help="comma-separated payloads (default int32,int8 for Llama; int32)")
    sp.add_argument("--placement", choices=PLACEMENTS, default="auto",
                    help="auto: configurations that fit stationary or streaming (default); stationary: only "
                         "those whose weights all fit on chip")
    sp.add_argument("--run-args", default="", help="more `run` options for every point, one string ("
                                                  + ", ".join(RUN_ARGS) + ")")
    sp.add_argument("--json", help="write the plan here (JSON; - for standard output)")
    sp.add_argument("--quiet", action="store_true", help="no table and no progress")


def _run_options(text: str) -> dict:
    """--run-args as the planner's run options, checked by `run`'s own parser."""
    from ..tomltext import parse_sets
    from .cli import parser
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise UserError(f"--run-args {text!r}: {e}") from None
    bad = [w.split("=")[0] for w in words if w.startswith("-") and w.split("=")[0] not in RUN_ARGS]
    if bad:
        raise UserError(f"--run-args {bad[0]}: not for plans (the plan sets chips, topology, all-reduce, payload "
                        f"and placement itself, and runs dry); allowed: {', '.join(RUN_ARGS)}")
    ra, default = parser().parse_args(["run", *words]), parser().parse_args(["run"])
    opts = {k: getattr(ra, k) for k in ("gen_tokens", "seq_len", "prompt_ids", "prefill", "hw", "preset")
            if getattr(ra, k) != getattr(default, k)}
    if ra.set:
        opts["overrides"] = parse_sets(ra.set)
    return opts


def cmd_plan(a) -> int:
    from ..api import ALGORITHMS, PAYLOADS
    from ..config import TOP_ALGORITHMS, table_path
    from ..files.outputs import check_paths, write_json
    from ..planner import run_plan
    from .cli import _choice_list, _int_list
    from .progress import Progress
    lists = {"chips": _int_list(a.chips, "--chips") if a.chips is not None else None,
             "topologies": _names(a.topology, "--topology"),
             "allreduce": _choice_list(a.allreduce, "--allreduce", ALGORITHMS) if a.allreduce is not None else None,
             "top_algorithms": _choice_list(a.top_algorithm, "--top-algorithm", TOP_ALGORITHMS)
             if a.top_algorithm is not None else None,
             "payloads": _choice_list(a.payload, "--payload", PAYLOADS) if a.payload is not None else None}
    options = _run_options(a.run_args)
    check_paths({"--json": a.json}, {"--model": str(table_path("models", a.model))}, stdout_ok=("--json",))
    bar = Progress(a.quiet)
    p = run_plan(a.model, latency_ms=a.latency_ms, energy_mj=a.energy_mj, scope=a.scope, placement=a.placement,
                 progress=lambda d, n, pt: bar(d, n, f"{pt.chips} chips {_alg(pt.allreduce, pt.top_algorithm)} "
                                                    f"{pt.payload} {pt.topology}"),
                 invocation="python -m mcu_emul " + shlex.join(sys.argv[1:]), **lists, **options)
    doc = p.to_dict()
    if a.json is not None:
        write_json(a.json, doc)
    if not a.quiet:
        out = sys.stderr if a.json == "-" else sys.stdout
        print(render(doc), file=out)
        if a.json not in (None, "-"):
            print(f"wrote {a.json}", file=out)
    return 0


def _names(s: str | None, opt: str) -> list[str] | None:
    if s is None:
        return None
    vals = s.split(",")
    if any(v.strip() == "" for v in vals):
        raise UserError(f"{opt} {s!r}: an empty name; give comma-separated names")
    return vals


def _alg(allreduce: str, top: str | None) -> str:
    return f"hier/{top}" if top else allreduce


def _config(r: dict) -> str:
    return f"{r['chips']} chip(s), {_alg(r['allreduce'], r['top_algorithm'])}, {r['payload']}, {r['placement']}, " \
           f"{r['topology']}"


def _miss(m: dict, budgets: dict) -> str:
    unit = {"latency_ms": "ms", "energy_mj": "mJ"}
    return ", ".join(f"{k.split('_')[0]} +{v:.4g} {unit[k]} (+{100 * v / budgets[k]:.1f}%)" for k, v in m.items())


def render(doc: dict) -> str:
    """The plan as text: a table of the configurations that fit, then refusals, budgets, front."""
    rows, budgets, fig = doc["rows"], doc["budgets"], doc["figures"]
    per = doc["figures_per"] or ("token" if doc["mode"] == "decode" else "inference")
    g = doc["grid"]
    out = [f"plan: {doc['model']} ({doc['mode']}), {doc['points']} configurations (dry runs): chips "
           f"{','.join(map(str, g['chips']))}; topology {','.join(g['topologies'])}; all-reduce "
           f"{','.join(g['allreduce'])}" + (f" (top level {','.join(g['top_algorithms'])})" if g["top_algorithms"]
                                           else "") + f"; payload {','.join(g['payloads'])}; preset "
           f"{doc['provenance']['preset']}",
           f"figures per {per}; budgets and front on the {SCOPE_WORDS[doc['scope']]}"]
    shown = [r for r in rows if r["same_figures_as"] is None]
    same = {r["id"]: sum(1 for x in rows if x["same_figures_as"] == r["id"]) for r in shown}
    out.append(f"\n{len(rows)} configurations fit ({len(shown)} with distinct figures; `same`: how many more have "
               "exactly these figures; * on the Pareto front):")
    tw = max([8] + [len(t) for t in g["topologies"]])
    cols = [("id", ">4", lambda r: r["id"]), ("chips", ">5", lambda r: r["chips"]),
            *([("topology", f"<{tw}", lambda r: r["topology"])] if len(g["topologies"]) > 1 else []),
            ("all-reduce", "<23", lambda r: _alg(r["allreduce"], r["top_algorithm"])),
            ("payload", "<7", lambda r: r["payload"]), ("placement", "<10", lambda r: r["placement"]),
            ("ms", ">9.4g", lambda r: r["latency_ms"]), ("blocks ms", ">9.4g", lambda r: r["blocks_latency_ms"]),
            ("mJ", ">8.4g", lambda r: r["energy_mj"]), ("blocks mJ", ">9.4g", lambda r: r["blocks_energy_mj"]),
            ("L3 mJ", ">8.4g", lambda r: r["offchip_memory_energy_mj"]),
            ("link B", ">11,.0f", lambda r: r["link_bytes_per_token"]),
            ("off-chip B", ">12,.0f", lambda r: r["offchip_bytes_per_token"]),
            ("same", ">4", lambda r: f"+{same[r['id']]}" if same[r["id"]] else ""),
            ("front", ">5", lambda r: "*" if r["pareto"] else "")]
    with_budgets = budgets["latency_ms"] is not None or budgets["energy_mj"] is not None
    out.append(" ".join(f"{h:{re.match(r'[<>][0-9]+', f)[0]}}" for h, f, _ in cols)
               + ("  budgets" if with_budgets else ""))
    for r in shown:
        ok = (_miss(r["misses"], budgets) if r["misses"] else "met") if with_budgets else ""
        out.append((" ".join(f"{get(r):{f}}" for _, f, get in cols) + f"  {ok}").rstrip())
    out.append(f"  ms, mJ: per {per}, whole model (mJ: the chips' energy, the budgets' and the front's); blocks: "
               f"the Transformer blocks alone; L3 mJ: the off-chip memory device's energy beyond the chips' "
               f"(streaming rows); link B, off-chip B: bytes per {per} over all chips; hier/X: hierarchical, the "
               f"group leaders running X")
    if doc["refusals"]:
        out.append("\nrefused:")
        groups: dict = {}
        for f in doc["refusals"]:
            groups.setdefault((f["placement"], f["message"]), []).append(f)
        point = ("chips", "topology", "allreduce", "top_algorithm", "payload")
        streamed = {tuple(r[k] for k in point) for r in rows if r["placement"] == "stream"}
        for (pl, msg), fs in groups.items():
            ran = sum(tuple(f[k] for k in point) in streamed for f in fs)
            tail = f" ({ran} ran streaming instead)" if ran else ""
            out.append(f"  {pl}, {len(fs)} configuration(s) on {fs[0]['chips']} chip(s){tail}: {msg}")
    for s in doc["skipped_topologies"]:
        out.append(f"  skipped topology {s['topology']}: {s['message']}")
    unit = {"latency_ms": "ms", "energy_mj": "mJ"}
    for name, ans in doc["smallest"].items():
        what = " and ".join(f"{k.split('_')[0]} <= {budgets[k]:g} {unit[k]}" for k in ans["budgets"])
        if ans["chips"] is not None:
            r = rows[ans["row"] - 1]
            out.append(f"\nsmallest chip count with {what} per {per} ({doc['scope']}): {ans['chips']}; best: row "
                       f"{r['id']} ({_config(r)}): {r[fig['latency_ms']]:.4g} ms, {r[fig['energy_mj']]:.4g} mJ")
        elif ans["closest_row"] is not None:
            r = rows[ans["closest_row"] - 1]
            out.append(f"\nsmallest chip count with {what} per {per} ({doc['scope']}): none meets it; "
                       f"closest: row {r['id']} ({_config(r)}): {r[fig['latency_ms']]:.4g} ms, "
                       f"{r[fig['energy_mj']]:.4g} mJ, over by {_miss(ans['closest_misses'], budgets)}")
        else:
            out.append(f"\nsmallest chip count with {what}: no configuration fits at all")
        for b in ans["by_chips"]:
            if b["best_row"] is None:
                out.append(f"  {b['chips']:>3} chip(s): nothing fits (see refused)")
            else:
                m = b["misses"]
                out.append(f"  {b['chips']:>3} chip(s): best row {b['best_row']}: "
                           + (f"misses {_miss(m, budgets)}" if m else "meets it"))
    front = [rows[i - 1] for i in doc["pareto_front"]]
    out.append(f"\nPareto front (latency vs energy per {per}, {doc['scope']}; no other configuration is both "
               f"faster and more frugal):" + ("" if front else " none"))
    for r in front:
        out.append(f"  row {r['id']:>3}: {r[fig['latency_ms']]:.4g} ms, {r[fig['energy_mj']]:.4g} mJ  ({_config(r)})")
    return "\n".join(out)
