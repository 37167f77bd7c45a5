"""Run report: JSON (schema mcu_emul.report/1) and the human summary."""
from __future__ import annotations

import math

import numpy as np

from ..config import LlamaConfig
from .outputs import write_bytes, write_json
from ..hardware.memory import fmt_bytes

SCHEMA = "mcu_emul.report/1"


def save_npy(path, arr: np.ndarray):
    import io
    buf = io.BytesIO()
    np.save(buf, arr)
    write_bytes(path, buf.getvalue())


def figure_phase(res: dict) -> str | None:
    """The phase a decode run's per-token figures describe: "decode" (per generated token),
    or "prefill" when no token was decoded after it (--gen-tokens 1); None for an encoder."""
    ph = res.get("phases")
    if ph is None:
        return None
    return "decode" if ph["decode"]["steps"] else "prefill"


def figures(res: dict, scope: str = "model", phase: str | None = None) -> dict:
    """Emulated latency, energy and EDP: per generated token (decode), per inference (encode),
    or of the whole prompt pass (phase "prefill": the time to first token).

    scope "model": embedding to logits; "blocks": the Transformer blocks only (their kernels,
    waits and all-reduces), the scope of the paper's figures. A pipeline's blocks are the sum of
    its chips' block sections: a token visits the stages in turn (pipeline.py)."""
    f = res["freq_hz"]
    phase = phase or figure_phase(res)
    if phase is None:
        steps = res["steps"]
        chips = res["chips"] if scope == "model" else [c["sections"][scope] for c in res["chips"]]
    else:
        steps = res["phases"]["decode"]["steps"] if phase == "decode" else 1
        name = phase if scope == "model" else f"{phase}.{scope}"
        chips = [c["sections"][name] for c in res["chips"]]
    if scope == "blocks" and res.get("partition") == "pipeline":
        chips = [in_turn(chips)]
    latency_ms = max(c["cycles"] for c in chips) / f * 1e3 / steps
    energy_mj = sum(c["energy_mj"] for c in chips) / steps
    cats = chips[0]["energy_mj_by_category"].keys()
    slow = max(chips, key=lambda c: c["cycles"])
    pj = res["l3_device_pj_per_byte"]                  # per chip: a mixed cluster's may differ
    l3_pj = sum(sum(c["offchip_bytes"] for c, q in zip(chips, pj) if q == p) * p for p in sorted(set(pj)))
    l3_mj = l3_pj * 1e-9 / steps
    return {"latency_ms": latency_ms, "energy_mj": energy_mj, "edp_mj_ms": latency_ms * energy_mj,
            "offchip_memory_energy_mj": l3_mj,
            "latency_ms_by_category": {k: v / f * 1e3 / steps for k, v in slow["cycles_by_category"].items()},
            "energy_mj_by_category": {k: sum(c["energy_mj_by_category"][k] for c in chips) / steps for k in cats}}


def in_turn(chips: list) -> dict:
    """The counters of chips that work one after the other, as one: every counter summed."""
    out = {k: sum(c[k] for c in chips) for k in ("cycles", "energy_mj", "offchip_bytes")}
    for k in ("cycles_by_category", "energy_mj_by_category"):
        out[k] = {cat: sum(c[k][cat] for c in chips) for cat in chips[0][k]}
    return out


def build(res: dict, spec, accuracy: dict | None, wall_s: float) -> dict:
    cfg = res["cfg"]
    decode = isinstance(cfg, LlamaConfig)
    chips = res["chips"]
    fig = figures(res)
    blocks = figures(res, "blocks")
    phase = figure_phase(res)
    pre = (figures(res, "model", "prefill"), figures(res, "blocks", "prefill")) if decode else ()
    bad = [k for f in (fig, blocks, *pre) for k in ("latency_ms", "energy_mj", "edp_mj_ms") if not math.isfinite(f[k])]
    if bad:
        from ..errors import UserError
        raise UserError(f"the emulated {bad[0]} is not finite: the hardware parameters (--hw, --topology, "
                        "--set) combine into a cost no counter can hold")
    rep = {
        "schema": SCHEMA,
        "model": cfg.name,
        "mode": "decode" if decode else "encode",
        "chips": len(chips),
        "placement": res["placement"],
        "partition": res.get("partition", "tensor"),
        "allreduce": spec.allreduce,
        "topology": spec.topology.name,
        "topology_group_sizes": list(spec.topology.group_sizes),
        "payload": spec.payload,
        "dry_run": bool(res.get("dry_run")),
        "hw": spec.chip.name,
        "cluster": spec.cluster.name if spec.cluster is not None else None,
        "split": spec.split,
        "freq_hz": res["freq_hz"],
        "latency_ms": fig["latency_ms"],
        "energy_mj": fig["energy_mj"],
        "edp_mj_ms": fig["edp_mj_ms"],
        "figures_per": {"decode": "token", "prefill": "prefill", None: "inference"}[phase],
        "energy_mj_by_category": fig["energy_mj_by_category"],
        "latency_ms_by_category": fig["latency_ms_by_category"],
        "offchip_memory_energy_mj": fig["offchip_memory_energy_mj"],
        "blocks": {k: blocks[k] for k in ("latency_ms", "energy_mj", "edp_mj_ms", "latency_ms_by_category",
                                          "energy_mj_by_category", "offchip_memory_energy_mj")},
        "prefill": {"mode": spec.prefill, "tokens": res["phases"]["prefill"]["tokens"],
                    "latency_ms": pre[0]["latency_ms"], "energy_mj": pre[0]["energy_mj"],
                    "edp_mj_ms": pre[0]["edp_mj_ms"],
                    "blocks": {k: pre[1][k] for k in ("latency_ms", "energy_mj", "edp_mj_ms")}} if decode else None,
        "decode_tokens": res["phases"]["decode"]["steps"] if decode else 0,
        "input_ids": [int(i) for i in res["inputs"]],
        "token_ids": [int(i) for i in res["token_ids"]] if decode else [],
        "output_dtype": "int16",
        "output_shape": list(res["output"].shape),
        "output_first_position": int(res["output_first_position"]),
        "output_scale": float(res["output_scale"]),
        "output_sha256": res["output_sha256"],
        "weight_bytes_total": int(sum(c["weight_bytes"] for c in chips)),
        "offchip_bytes": int(sum(c["offchip_bytes"] for c in chips)),
        "link_bytes": int(sum(c["link_bytes"] for c in chips)),
        "per_chip": [{k: v for k, v in c.items() if k != "host_peak_rss_bytes"} | {"busy_share": _busy(c)}
                     | {"layers": c.get("layers", [0, cfg.n_layers])} for c in chips],
        "load_balance": load_balance(chips),
        "host_wall_time_s": round(wall_s, 3),
        "host_wall_time_per_step_s": round(res["host_step_s"], 4),
        # host memory by rank (in-process chips share one process): apart from the chips' results
        "host_peak_rss_bytes": [int(c["host_peak_rss_bytes"]) for c in chips],
    }
    if accuracy is not None:
        rep["accuracy"] = accuracy
    return rep


def _busy(c: dict) -> float:
    return c["busy_cycles"] / max(c["cycles"], 1)


def load_balance(chips: list) -> dict:
    """Who the others wait for: the chip with the most work of its own (compute, on-chip and
    off-chip cycles, not links or waits: a straggler), its share of the run, and the share of
    their time the other chips are idle (waiting for a slower chip beyond the transfers
    themselves), over the whole run."""
    def work(c):
        return sum(c["cycles_by_category"][k] for k in ("compute", "onchip", "offchip"))
    slowest = max(chips, key=lambda c: (work(c), -c["rank"]))
    others = [c["idle_cycles"] / max(c["cycles"], 1) for c in chips if c is not slowest]
    return {"slowest_rank": slowest["rank"], "slowest_work_share": work(slowest) / max(slowest["cycles"], 1),
            "others_idle_share_mean": sum(others) / len(others) if others else 0.0,
            "others_idle_share_max": max(others, default=0.0)}


def summary(rep: dict) -> str:
    lines = [f"mcu_emul: {rep['model']} {rep['mode']} on {rep['chips']} chip(s); placement {rep['placement']}; "
             f"all-reduce {rep['allreduce']} (groups {rep['topology_group_sizes']}), payload {rep['payload']}"]
    if rep.get("partition") == "pipeline":
        layers = " ".join(f"{c['layers'][0]}-{c['layers'][1] - 1}" for c in rep["per_chip"])
        lines[0] = (f"mcu_emul: {rep['model']} {rep['mode']} on {rep['chips']} chip(s); placement {rep['placement']}; "
                    f"partition pipeline: layers by chip {layers}, activations chip to chip "
                    f"(groups {rep['topology_group_sizes']}), no all-reduce")
    if rep["mode"] == "decode":
        lines.append(f"  prompt ids {rep['input_ids'][:1]}..., generated {len(rep['token_ids'])} tokens: "
                     f"{' '.join(map(str, rep['token_ids'][:16]))}{' ...' if len(rep['token_ids']) > 16 else ''}")
    if not rep["dry_run"]:
        lines.append(f"  output {rep['output_dtype']}{rep['output_shape']} sha256 {rep['output_sha256'][:16]}...")
    else:
        lines.append("  dry run: counters only (kernels stubbed, no arithmetic)")
    mixed = rep.get("cluster") is not None or rep.get("split", "balanced") != "balanced"
    if mixed:
        lines.append(f"  cluster {rep['cluster'] or '(uniform)'}, split {rep['split']}: cycles count the fastest "
                     f"clock ({rep['freq_hz'] / 1e6:.4g} MHz)")
    lines.append(f"  {'chip':>4} {'on-chip used':>13} {'weights B':>11} {'kv B':>8} {'off-chip B':>12} "
                 f"{'link B':>10} {'cycles':>12} {'busy %':>7} {'energy mJ':>10}  energy split c/on/off/link/idle %"
                 + ("   MHz heads   ffn" if mixed else ""))
    for c in rep["per_chip"]:
        e = c["energy_mj_by_category"]
        tot = max(c["energy_mj"], 1e-30)
        split = "/".join(f"{100 * e[k] / tot:.0f}" for k in ("compute", "onchip", "offchip", "link", "idle"))
        share = (f" {c['freq_hz'] / 1e6:>5.4g} {c['heads'][1] - c['heads'][0]:>5} {c['ffn'][1] - c['ffn'][0]:>5}"
                 if mixed else "")
        lines.append(f"  {c['rank']:>4} {c['onchip_used_bytes']:>13,} {c['weight_bytes']:>11,} {c['kv_cache_bytes']:>8,} "
                     f"{c['offchip_bytes']:>12,} {c['link_bytes']:>10,} {c['cycles']:>12,} "
                     f"{100 * c['busy_cycles'] / max(c['cycles'], 1):>6.1f}% {c['energy_mj']:>10.4f}  "
                     + (f"{split:<17}{share}" if mixed else split))
    lb = rep["load_balance"]
    if mixed and rep["chips"] > 1:
        lines.append(f"  load balance: chip {lb['slowest_rank']} works longest "
                     f"({100 * lb['slowest_work_share']:.1f}% of its time on its own kernels); the others are idle "
                     f"{100 * lb['others_idle_share_mean']:.1f}% of their time on average "
                     f"(at most {100 * lb['others_idle_share_max']:.1f}%), waiting for slower chips")
    b = rep["blocks"]
    pf = rep.get("prefill")
    if pf:
        lines.append(f"  prefill ({pf['mode']}) of {pf['tokens']} prompt token(s), time to first token: latency "
                     f"{pf['latency_ms']:.4g} ms, energy {pf['energy_mj']:.4g} mJ (blocks {pf['blocks']['latency_ms']:.4g} ms, "
                     f"{pf['blocks']['energy_mj']:.4g} mJ); then {rep['decode_tokens']} decode step(s)")
    lines.append(f"  emulated on {rep['hw']} at {rep['freq_hz'] / 1e6:.0f} MHz, per {rep['figures_per']}: "
                 f"latency {rep['latency_ms']:.4g} ms, energy {rep['energy_mj']:.4g} mJ, "
                 f"EDP {rep['edp_mj_ms']:.4g} mJ*ms")
    lines.append(f"  of which the Transformer blocks (the paper's scope): latency {b['latency_ms']:.4g} ms, "
                 f"energy {b['energy_mj']:.4g} mJ, EDP {b['edp_mj_ms']:.4g} mJ*ms")
    lines.append(f"  total weights {fmt_bytes(rep['weight_bytes_total'])}, off-chip traffic "
                 f"{fmt_bytes(rep['offchip_bytes'])}, link traffic {fmt_bytes(rep['link_bytes'])}")
    if rep["offchip_bytes"]:
        lines.append(f"  the off-chip memory device draws {rep['offchip_memory_energy_mj']:.4g} mJ per "
                     f"{rep['figures_per']} beyond the chips' energy above (HyperRAM and board, not in the chip scope)")
    acc = rep.get("accuracy")
    if acc:
        lines.append("  accuracy vs float: " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()
                                                         if isinstance(v, float)))
    return "\n".join(lines)


class Document:
    """A JSON document as an object: its keys as attributes and items; `to_dict()` is what
    `--json` writes (same schema); `save(path)` writes it (the Report and the Plan)."""

    what = "document"

    def __init__(self, doc: dict):
        self._doc = doc

    def __getattr__(self, name):
        try:
            return self._doc[name]
        except KeyError:
            raise AttributeError(f"{self.what} has no field {name!r} (fields: {', '.join(self._doc)})") from None

    def __getitem__(self, key):
        return self._doc[key]

    def __eq__(self, other):
        return type(other) is type(self) and self._doc == other._doc

    def to_dict(self) -> dict:
        import copy
        return copy.deepcopy(self._doc)

    def save(self, path):
        from .outputs import check_paths
        check_paths({"path": path}, stdout_ok=("path",))
        write_json(path, self._doc)


class Report(Document):
    """A run report as an object: the JSON report's keys as attributes (`r.latency_ms`,
    `r.energy_mj`, `r.edp_mj_ms`, `r.blocks`, `r.chips`, `r.per_chip`, `r.output_sha256`, ...);
    `to_dict()` is what `--json` writes (same schema); `save(path)` writes it."""

    what = "report"

    def __repr__(self):
        return (f"Report({self._doc['model']} on {self._doc['chips']} chip(s): latency {self._doc['latency_ms']:.4g} ms, "
                f"energy {self._doc['energy_mj']:.4g} mJ per {self._doc['figures_per']})")

    def summary(self) -> str:
        return summary(self._doc)
