"""Run report: JSON (schema mcu_emul.report/1), human summary, atomic file writes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .config import LlamaConfig
from .memory import fmt_bytes

SCHEMA = "mcu_emul.report/1"


def atomic_write_bytes(path, data: bytes):
    """Write whole or not at all: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_npy(path, arr: np.ndarray):
    import io
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


def build(res: dict, spec, accuracy: dict | None, wall_s: float) -> dict:
    cfg = res["cfg"]
    decode = isinstance(cfg, LlamaConfig)
    chips = res["chips"]
    rep = {
        "schema": SCHEMA,
        "model": cfg.name,
        "mode": "decode" if decode else "encode",
        "chips": len(chips),
        "placement": res["placement"],
        "allreduce": spec.allreduce,
        "topology_group_sizes": list(spec.group_sizes),
        "payload": spec.payload,
        "input_ids": [int(i) for i in res["inputs"]],
        "token_ids": [int(i) for i in res["token_ids"]] if decode else [],
        "output_dtype": "int16",
        "output_shape": list(res["output"].shape),
        "output_scale": float(res["output_scale"]),
        "output_sha256": res["output_sha256"],
        "weight_bytes_total": int(sum(c["weight_bytes"] for c in chips)),
        "offchip_bytes": int(sum(c["offchip_bytes"] for c in chips)),
        "link_bytes": int(sum(c["link_bytes_sent"] for c in chips)),
        "per_chip": chips,
        "host_wall_time_s": round(wall_s, 3),
        "host_wall_time_per_step_s": round(res["host_step_s"], 4),
    }
    if accuracy is not None:
        rep["accuracy"] = accuracy
    return rep


def write_json(path, rep: dict):
    atomic_write_bytes(path, (json.dumps(rep, indent=2) + "\n").encode())


def summary(rep: dict) -> str:
    lines = [f"mcu_emul: {rep['model']} {rep['mode']} on {rep['chips']} chip(s); placement {rep['placement']}; "
             f"all-reduce {rep['allreduce']} (groups {rep['topology_group_sizes']}), payload {rep['payload']}"]
    if rep["mode"] == "decode":
        lines.append(f"  prompt ids {rep['input_ids'][:1]}..., generated {len(rep['token_ids'])} tokens: "
                     f"{' '.join(map(str, rep['token_ids'][:16]))}{' ...' if len(rep['token_ids']) > 16 else ''}")
    lines.append(f"  output {rep['output_dtype']}{rep['output_shape']} sha256 {rep['output_sha256'][:16]}...")
    lines.append(f"  {'chip':>4} {'on-chip used':>14} {'of capacity':>12} {'weights B':>12} {'kv B':>9} "
                 f"{'off-chip B':>12} {'link B sent':>12}")
    for c in rep["per_chip"]:
        lines.append(f"  {c['rank']:>4} {c['onchip_used_bytes']:>14,} {c['onchip_capacity_bytes']:>12,} "
                     f"{c['weight_bytes']:>12,} {c['kv_cache_bytes']:>9,} {c['offchip_bytes']:>12,} "
                     f"{c['link_bytes_sent']:>12,}")
    lines.append(f"  total weights {fmt_bytes(rep['weight_bytes_total'])}, off-chip traffic "
                 f"{fmt_bytes(rep['offchip_bytes'])}, link traffic {fmt_bytes(rep['link_bytes'])}")
    acc = rep.get("accuracy")
    if acc:
        lines.append("  accuracy vs float: " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()
                                                         if isinstance(v, float)))
    return "\n".join(lines)
