"""Benchmark: host wall time per decode token of every way mcu_emul runs a model, side by side
in one run, as ratios to the numpy float32 reference forward (the arithmetic it emulates).

Rows, each measured once per round (rounds interleave the rows, so that all of them see the
same machine; medians printed): the float32 reference, the int8 path alone (the chip's kernels, no metering, no
collectives), a metered one-chip run, N in-process chips (`run --chips N`), N MPI ranks
(`mpiexec -n N run`, through the launcher), optionally 64 ranks of tinyllama-scaled (--scaled:
its first run on a fresh cache, then a cached run), and dry runs of the paper's configurations
(in-process, start-up excluded). Peak RSS per rank beside each run. A measurement, not a test.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import tempfile
import time

import numpy as np

from ..chip import RunSpec, run_chip
from ..comm.collectives import Collectives
from ..comm.virtual import Fabric, ThreadTransport, run_virtual
from ..config import LlamaConfig, load_chip, load_topology
from ..errors import UserError
from ..files.weights import WeightsFile
from ..hardware.placement import place_shard
from ..models.llama import LlamaChip
from ..models.partition import plan
from ..numerics import blas, kernels as K
from ..numerics.quant import Requant
from ..numerics.reference import LlamaRef

ROUNDS = 3
SCALED, SCALED_CHIPS = "tinyllama-scaled", 64


class _NoMeter:
    """The int8 path alone: every charge is a no-op."""

    K, Rq = K, Requant

    def span(self, name):
        return contextlib.nullcontext()

    section = span

    @staticmethod
    def weight_kernel(name, w, x):
        return K.matmul_i8(x, w)

    @staticmethod
    def weight_kernels(names, w, x):
        return K.matmul_i8(x, w)

    def __getattr__(self, name):
        return lambda *a, **k: None


def _mb(nbytes) -> str:
    return f"{nbytes / 2**20:.0f} MB"


def _peak_rss(rep: dict) -> str:
    return "peak RSS " + _mb(max(rep["host_peak_rss_bytes"])) + " per rank"


class _Numerics:
    """The int8 path alone and the float32 reference, ready to time a pass over n tokens."""

    def __init__(self, cfg, wf, n: int, ids):
        self.cfg, self.n, self.ids, self.amax = cfg, n, ids, wf.act_maxabs
        self.t = ThreadTransport(Fabric(1), 0)
        _, _, self.tensors, _ = place_shard(wf, cfg, 1, 0, n, load_chip(), "stream")
        self.sl, self.w = plan(cfg, 1)[0], wf.read_float()
        self.times()                                   # warm-up (caches, BLAS)

    def times(self) -> tuple[float, float]:
        """Per-token wall time of the int8 path, then of the float32 reference, over n tokens."""
        chip = LlamaChip(self.cfg, self.sl, self.tensors, self.amax, Collectives(self.t), _NoMeter(), self.n)
        ref = LlamaRef(self.cfg, self.w, self.n)
        t0 = time.perf_counter()
        for p in range(self.n):
            chip.step(int(self.ids[p]), p)
        t1 = time.perf_counter()
        for p in range(self.n):
            ref.step(int(self.ids[p]), p)
        t2 = time.perf_counter()
        return (t1 - t0) / self.n, (t2 - t1) / self.n


def _in_process(spec: RunSpec, chips: int) -> float:
    """Per-step host time of an in-process run (metered, as `run` does it)."""
    return run_virtual(chips, lambda t: run_chip(spec, t))[0]["host_step_s"]


def _launched(args: list, chips: int) -> tuple[dict, float]:
    """A `run` in its own processes (mpiexec -n chips through the launcher): report, wall s."""
    from .launcher import run_report
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        rep = run_report(args, chips, os.path.join(d, "r.json"))
        return rep, time.perf_counter() - t0


def _dry_configs(progress) -> list[tuple]:
    """(model, chips, ms) of a dry run of each configuration of the paper's curves, in this
    process (start-up excluded), with the paper's run settings and preset."""
    from .paper import CURVES, dry_figures
    from ..presets import hardware
    chip, topo = hardware("siracusa", "siracusa-boards", "siracusa-paper", [])
    out = []
    for model, counts in CURVES.items():
        for n in counts:
            t0 = time.perf_counter()
            dry_figures(model, n, chip, topo)
            out.append((model, n, (time.perf_counter() - t0) * 1e3))
            progress()
    return out


@contextlib.contextmanager
def _fresh_cache():
    """MCU_EMUL_CACHE pointing at a new empty folder (the first-run measurement), removed after."""
    old = os.environ.get("MCU_EMUL_CACHE")
    with tempfile.TemporaryDirectory(prefix="mcu_emul_bench_") as d:
        os.environ["MCU_EMUL_CACHE"] = d
        try:
            yield d
        finally:
            if old is None:
                os.environ.pop("MCU_EMUL_CACHE", None)
            else:
                os.environ["MCU_EMUL_CACHE"] = old


def bench(model: str, tokens: int, chips: int = 8, scaled: bool = False, dry: bool = True) -> int:
    from ..chip import ensure_weights
    from ..config import load_model
    cfg = load_model(model)
    if not isinstance(cfg, LlamaConfig):
        raise UserError(f"bench times decode: model '{model}' is not a Llama model")
    if not 1 <= chips <= cfg.max_chips:
        raise UserError(f"--chips {chips}: model '{model}' runs on 1 to {cfg.max_chips} chips")
    n = min(tokens, cfg.context_len)
    # one BLAS thread in every row, as each MPI rank has (__main__.rank_blas_threads): a pool
    # of threads here would make the in-process rows a different machine (on a loaded 2-core
    # machine, 3-5x slower), unless the user chose a count
    if not blas.chosen():
        blas.blas_threads(1)
    path = ensure_weights(cfg, 0)
    wf = WeightsFile(path, expect=cfg)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, n)
    env = {k: os.environ.get(k, "unset") for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS")}
    print(f"bench {model}: decode {n} tokens (prompt [1]), host wall time per token, medians of {ROUNDS}; "
          f"BLAS threads {blas.blas_threads()} per process; " + ", ".join(f"{k}={v}" for k, v in env.items()),
          flush=True)
    num = _Numerics(cfg, wf, n, ids)
    wf.close()
    spec = RunSpec(model=cfg.name, cfg=cfg, weights=path, chip=load_chip(), topology=load_topology(),
                   prompt_ids=[1], gen_tokens=n)
    args = ["--model", model, "--prompt-ids", "1", "--gen-tokens", str(n)]
    ti, tf, one, many, launched, hops = [], [], [], [], [], []
    for _ in range(ROUNDS):                  # rounds of every row, so that all see the same machine
        i, f = num.times()
        ti.append(i), tf.append(f)
        one.append(_in_process(spec, 1))
        many.append(_in_process(spec, chips))
        launched.append(_launched(args, chips))
        hops.append(_in_process(dataclasses.replace(spec, hops=True), chips))
    mpi, mpi_wall = launched[-1]
    f = statistics.median(tf)
    rows = [("float32 reference", tf, None), ("int8 path alone", ti, None), ("run, 1 chip (metered)", one, None),
            (f"run --chips {chips}", many, None),
            (f"run --chips {chips} --hops", hops, "(every message moved)"),
            (f"mpiexec -n {chips} run", [r["host_wall_time_per_step_s"] for r, _ in launched], _peak_rss(mpi))]
    print(f"  {'':32s}{'ms/token':>10s}{'x float32':>11s}")
    for name, ts, extra in rows:
        m = statistics.median(ts)
        print(f"  {name:32s}{m * 1e3:10.2f}{m / f:11.2f}" + (f"   {extra}" if extra else ""))
    med = {name: statistics.median(ts) for name, ts, _ in rows}
    print(f"  ratio int8/float {med['int8 path alone'] / f:8.2f}  (target <= 2)")
    print(f"  metered 1 chip / int8 path {med['run, 1 chip (metered)'] / med['int8 path alone']:5.2f}  (target <= 1.2)")
    print(f"  --chips {chips} / 1 chip {med[f'run --chips {chips}'] / med['run, 1 chip (metered)']:12.2f}  "
          f"(target <= 1.5)")
    print(f"  mpiexec -n {chips} / 1 chip {med[f'mpiexec -n {chips} run'] / med['run, 1 chip (metered)']:9.2f}  "
          f"(target <= 2; one run's processes took {mpi_wall:.1f} s in all)", flush=True)
    if scaled:
        _scaled()
    if dry:
        done = []
        runs = _dry_configs(lambda: done.append(1))
        ms = [r[2] for r in runs]
        big = max(runs, key=lambda r: r[1])
        print(f"  dry runs of the paper's {len(runs)} configurations: median {statistics.median(ms):.0f} ms, "
              f"max {max(ms):.0f} ms each (target <= 50); {big[0]} on {big[1]} chips {big[2] / 1e3:.2f} s "
              f"(target <= 0.5)")
    return 0


def _scaled():
    """64 ranks of tinyllama-scaled: the first run on a fresh cache (the default weights made
    on the way), then a second run on that cache (steady state per token)."""
    args = ["--model", SCALED]
    with _fresh_cache():
        first, first_wall = _launched(args, SCALED_CHIPS)
        again, again_wall = _launched(args, SCALED_CHIPS)
    print(f"  {SCALED} on {SCALED_CHIPS} ranks: {again['host_wall_time_per_step_s']:.2f} s/token (cached run, "
          f"target <= 5), first run on a fresh cache {first_wall:.1f} s in all (target <= 60), cached run "
          f"{again_wall:.1f} s in all; {_peak_rss(again)}", flush=True)
