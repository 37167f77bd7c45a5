"""Compare the integer run with the float reference (host-side yardstick)."""
from __future__ import annotations

import numpy as np

from ..config import LlamaConfig
from .reference import LlamaRef, mobilebert_f


def _cos(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def check_float(cfg, wfloat: dict, res: dict) -> dict:
    """Teacher-forced float run on the same inputs; cosine (and top-1 agreement for decode)."""
    out = res["output"].astype(np.float64) * res["output_scale"]
    if isinstance(cfg, LlamaConfig):
        ref = LlamaRef(cfg, wfloat, len(res["inputs"]))
        fl = np.stack([ref.step(int(t), p) for p, t in enumerate(res["inputs"])])
        fl = fl[res.get("output_first_position", 0):]       # rows the chips computed (after a prefill: its last)
        cos = _cos(out, fl)
        top1 = float(np.mean(np.argmax(out, -1) == np.argmax(fl, -1)))
        return {"logits_cosine_vs_float": float(cos.mean()), "logits_cosine_min": float(cos.min()),
                "top1_agreement_vs_float": top1, "steps": int(len(cos))}
    fl = mobilebert_f(cfg, wfloat, np.asarray(res["inputs"]))
    cos = _cos(out, fl)
    return {"hidden_cosine_vs_float": float(cos.mean()), "hidden_cosine_min": float(cos.min()),
            "tokens": int(len(cos))}
