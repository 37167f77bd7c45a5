"""Benchmark: wall time per decode token of the int8 path vs the float32 reference."""
from __future__ import annotations

import contextlib
import time

import numpy as np

from ..hardware.placement import place_shard
from ..comm.collectives import Collectives
from ..config import LlamaConfig, load_chip
from ..errors import UserError
from ..models.llama import LlamaChip
from ..models.partition import plan
from ..numerics import kernels as K
from ..numerics.quant import Requant
from ..numerics.reference import LlamaRef
from ..comm.virtual import Fabric, ThreadTransport
from ..files.weights import WeightsFile


class _NoMeter:
    """Bench times the numerics only: every charge is a no-op."""

    K, Rq = K, Requant

    def span(self, name):
        return contextlib.nullcontext()

    section = span

    @staticmethod
    def weight_kernel(name, w, x):
        return K.matmul_i8(x, w)

    def __getattr__(self, name):
        return lambda *a, **k: None


def bench(model: str, tokens: int) -> int:
    from ..chip import ensure_weights
    from ..config import load_model
    cfg = load_model(model)
    if not isinstance(cfg, LlamaConfig):
        raise UserError(f"bench times decode: model '{model}' is not a Llama model")
    wf = WeightsFile(ensure_weights(cfg, 0), expect=cfg)
    n = min(tokens, cfg.context_len)
    t = ThreadTransport(Fabric(1), 0)
    _, _, tensors, _ = place_shard(wf, cfg, 1, 0, n, load_chip(), "stream")
    chip = LlamaChip(cfg, plan(cfg, 1)[0], tensors,
                     wf.act_maxabs, Collectives(t), _NoMeter(), n)
    ref = LlamaRef(cfg, wf.read_float(), n)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, n)
    chip.step(int(ids[0]), 0), ref.step(int(ids[0]), 0)           # warm-up (caches, BLAS threads)
    chip = LlamaChip(cfg, chip.sl, tensors, wf.act_maxabs, Collectives(t), _NoMeter(), n)
    ref = LlamaRef(cfg, ref.w, n)
    best_i, best_f = [], []
    for rnd in range(3):
        t0 = time.perf_counter()
        for p in range(n // 3 * rnd, n // 3 * (rnd + 1)):
            chip.step(int(ids[p]), p)
        t1 = time.perf_counter()
        for p in range(n // 3 * rnd, n // 3 * (rnd + 1)):
            ref.step(int(ids[p]), p)
        t2 = time.perf_counter()
        k = max(1, n // 3)
        best_i.append((t1 - t0) / k), best_f.append((t2 - t1) / k)
    ti, tf = float(np.median(best_i)), float(np.median(best_f))
    print(f"bench {model}: decode {n} tokens, positions 0..{n - 1}, 1 chip, host wall time per token")
    print(f"  int8 path        {ti * 1e3:8.2f} ms/token")
    print(f"  float32 reference{tf * 1e3:8.2f} ms/token")
    print(f"  ratio int8/float {ti / tf:8.2f}  (target <= 2)")
    return 0
