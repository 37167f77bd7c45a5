"""One rank = one MCU: places its shard in a capped arena, runs the model, reports.

The transport is handed in from the top, so the same code runs over MPI or in-process ranks.
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
from dataclasses import dataclass

import numpy as np

from .comm.collectives import Collectives
from .comm.exchange import Exchange
from .config import ChipSpec, LlamaConfig, ModelConfig, load_model
from .errors import UserError
from .files.weights import WeightsFile
from .hardware import costs
from .hardware.counters import ChipClock
from .hardware.meter import Meter
from .hardware.placement import choose_placement, place_shard
from .models import llama, mobilebert
from .models.partition import plan
from .runspec import RunSpec, encoder_inputs, prompt_of, run_len_of, validate_inputs  # noqa: F401 (the chip's API)

PLACEMENTS = ("auto", "stationary", "stream")
PREFILLS = ("parallel", "token")
FAIL_PHASES = ("load", "embed", "attention", "ffn", "report")


class InjectedFailure(RuntimeError):
    """A failure injected on purpose (--fail-rank/--fail-at) to test that the job ends."""


class _DryAmax(dict):
    """Activation scales for a dry run: any site, scale 1 (values do not matter)."""

    def __missing__(self, key):
        return 1.0


@dataclass
class Shard:
    """What one chip holds before it runs: its model slice, placement and arena."""
    cfg: ModelConfig
    sl: object                    # partition.ChipSlice
    run_len: int
    placement: str
    specs: tuple
    arena: object                 # memory.Arena
    tensors: dict
    where: dict                   # weight key -> its places
    amax: dict
    hw: ChipSpec                  # this chip's own description

    @property
    def weight_bytes(self) -> int:
        return sum(s.nbytes for s in self.specs if s.category == "weights")


def load_shard(spec: RunSpec, rank: int, size: int, wf, fail=lambda phase: None) -> Shard:
    """Check the run, plan chip `rank` of `size` and place its shard (from wf, or zeros in a dry run)."""
    dry = spec.dry_run
    cfg = wf.cfg if wf is not None else (spec.cfg or load_model(spec.model))
    amax = _DryAmax() if dry else wf.act_maxabs
    if not isinstance(cfg, LlamaConfig) and spec.payload != "int32":
        raise UserError("--payload int8 is implemented for Llama models only")
    validate_inputs(cfg, spec)
    speeds, hw = spec.speeds(cfg, size), spec.hw_of(rank)
    sl = plan(cfg, size, speeds)[rank]
    run_len = run_len_of(cfg, spec)
    placement = choose_placement(cfg, size, run_len, spec.hws(size), spec.placement, speeds)
    fail("load")
    specs, arena, tensors, where = place_shard(wf, cfg, size, rank, run_len, hw, placement, dry, speeds)
    return Shard(cfg, sl, run_len, placement, specs, arena, tensors, where, amax, hw)


def make_meter(spec: RunSpec, sh: Shard, clock) -> Meter:
    return Meter(sh.hw, clock, {s.key: s.shape for s in sh.specs if s.category == "weights"}, sh.where,
                 spec.dry_run)


def make_model(spec: RunSpec, sh: Shard, sync, meter):
    cfg = sh.cfg
    if isinstance(cfg, LlamaConfig):
        return _from_file(spec, lambda: llama.LlamaChip(cfg, sh.sl, sh.tensors, sh.amax, sync, meter, sh.run_len,
                                                        spec.payload))
    return _from_file(spec, lambda: mobilebert.MobileBertChip(cfg, sh.sl, sh.tensors, sh.amax, sync, meter))


def collectives_of(spec: RunSpec, t, clock) -> Collectives:
    """The chip's all-reduces: exact ones as one exchange each (comm/exchange.py) where the
    transport gains by it (in-process chips), unless spec.hops asks that every message move."""
    topo = spec.topology
    ex = None if spec.hops or not t.exchange_pays else Exchange(t, clock, spec.hws(t.size), topo, spec.ref_hz, spec.links, spec.allreduce,
                                         topo.group_sizes, topo.top_algorithm)
    return Collectives(t, spec.allreduce, topo.group_sizes, clock, topo.top_algorithm, ex)


def drive(spec: RunSpec, sh: Shard, model, meter, fail=lambda phase: None, show: bool = False) -> dict:
    """The run itself: the prompt and every decode step (Llama), or one encoder pass. Returns
    this chip's output slice and what the report says of the inputs and steps."""
    cfg, run_len, amax = sh.cfg, sh.run_len, sh.amax
    t0 = time.perf_counter()
    if isinstance(cfg, LlamaConfig):
        ids, logits, gen = prompt_of(spec), [], []
        # prefill: the prompt (in one pass, or token by token), up to the first generated token
        with meter.phase("prefill"):
            if spec.prefill == "parallel":
                logits.append(model.prefill(ids, fail))
            else:
                for pos, tok in enumerate(ids):
                    logits.append(model.step(tok, pos, fail))
            gen.append(model.argmax(logits[-1]))
        # decode: one generated token per step
        for pos in range(len(ids), run_len):
            if show:
                _progress(pos - len(ids), run_len - len(ids), t0)
            with meter.phase("decode"):
                logits.append(model.step(gen[-1], pos, fail))
                gen.append(model.argmax(logits[-1]))
        return dict(out_local=np.stack(logits), out_scale=llama_logit_scale(amax),   # int16 (rows, v1 - v0)
                    first_pos=len(ids) - 1 if spec.prefill == "parallel" else 0,
                    inputs=ids + gen[:-1], steps=run_len, gen=gen,
                    phases={"prefill": {"tokens": len(ids), "steps": 1 if spec.prefill == "parallel" else len(ids)},
                            "decode": {"tokens": run_len - len(ids), "steps": run_len - len(ids)}},
                    step_s=(time.perf_counter() - t0) / run_len)
    ids = encoder_inputs(cfg, spec)
    out_local = model.encode(ids, np.zeros(len(ids), np.int64), fail)   # int16 (S, x1 - x0)
    return dict(out_local=out_local, out_scale=model.s_x, first_pos=0, inputs=[int(i) for i in ids], steps=1,
                gen=[], phases=None, step_s=time.perf_counter() - t0)


def chip_summary(spec: RunSpec, sh: Shard, clock, rank: int, allreduce_calls: int, messages_sent: int,
                 weights_read_bytes: int = 0) -> dict:
    """The per-chip part of the report, from its clock's counters."""
    energy = clock.energy_mj()
    sections = {}
    for name, c in clock.sections.items():
        e = clock.energy_mj(c)
        sections[name] = dict(cycles=sum(c["cycles"].values()), cycles_by_category=c["cycles"],
                              energy_mj=sum(e.values()), energy_mj_by_category=e, macs=c["macs"],
                              offchip_bytes=c["bytes"]["offchip"], link_bytes=c["bytes"]["link"])
    busy = sum(v for k, v in clock.cycles.items() if k != "idle")
    sl, tensors = sh.sl, sh.tensors
    gemm = not isinstance(sh.cfg, LlamaConfig)
    return dict(rank=rank, **where_this_runs(), hw=sh.hw.name, freq_hz=sh.hw.compute.freq_hz,
                throughput_macs_per_s=costs.throughput_macs_per_s(sh.hw, gemm),
                onchip_capacity_bytes=sh.hw.onchip_capacity_bytes, onchip_used_bytes=sh.arena.used,
                onchip_used_by_category=dict(sh.arena.used_by), weight_bytes=sh.weight_bytes,
                weight_bytes_by_place=weight_bytes_by_place(sh.specs, sh.where),
                kv_cache_bytes=int(tensors["kv_cache"].nbytes) if "kv_cache" in tensors else 0,
                weights_read_bytes=weights_read_bytes, offchip_bytes=clock.bytes["offchip"],
                onchip_dma_bytes=clock.bytes["onchip"], link_bytes=clock.bytes["link"],
                allreduce_calls=allreduce_calls, messages_sent=messages_sent, macs=clock.macs,
                cycles=clock.now, busy_cycles=busy, idle_cycles=clock.cycles["idle"],
                cycles_by_category=dict(clock.cycles), energy_mj=sum(energy.values()),
                energy_mj_by_category=energy, sections=sections,
                heads=list(sl.heads), ffn=list(sl.ffn), vocab=list(sl.vocab), hidden=list(sl.hidden),
                host_peak_rss_bytes=_peak_rss_bytes())


def merge(spec: RunSpec, sh: Shard, run: dict, parts: list, traces=None) -> dict:
    """The run's result on rank 0 from every chip's (summary, output slice)."""
    out = np.concatenate([p[1] for p in parts], axis=1)
    return dict(cfg=sh.cfg, placement=sh.placement, chips=[p[0] for p in parts], output=out, steps=run["steps"],
                phases=run["phases"], output_first_position=run["first_pos"],
                output_scale=run["out_scale"], token_ids=run["gen"], inputs=run["inputs"],
                host_step_s=run["step_s"], dry_run=spec.dry_run, traces=traces,
                freq_hz=spec.ref_hz, l3_device_pj_per_byte=[spec.hw_of(r).energy.l3_device_pj_per_byte
                                                             for r in range(len(parts))],
                output_sha256=hashlib.sha256(np.ascontiguousarray(out).astype("<i2").tobytes()).hexdigest())


def run_chip(spec: RunSpec, t) -> dict | None:
    """Run one chip (rank t.rank of t.size). Returns the merged result on rank 0, None elsewhere.

    With spec.dry_run the same chip code runs with its kernels stubbed (drykernels.numerics,
    handed to the model through the Meter) and no weights file: shapes, placement, collectives and clocks
    (hence every counter) are the real ones. (dryrun.py replays a dry run of in-process chips
    faster, to the same counters.)
    """
    if spec.partition == "pipeline":
        from .pipeline import run_stage
        return run_stage(spec, t)
    rank, size = t.rank, t.size

    def fail(phase):
        if rank == spec.fail_rank and phase == spec.fail_at:
            raise InjectedFailure(f"injected failure at phase '{phase}' on rank {rank}")

    # a dry run needs no weights file; given one (a converted model), its config is the model
    wf = WeightsFile(spec.weights, expect=spec.cfg) if spec.weights else None
    sh = load_shard(spec, rank, size, wf, fail)
    clock = ChipClock(sh.hw, spec.topology, rank, spec.ref_hz, spec.links)
    if spec.trace:
        clock.trace = []
    meter = make_meter(spec, sh, clock)
    sync = collectives_of(spec, t, clock)
    model = make_model(spec, sh, sync, meter)
    # every chip loaded before the clock starts: in-process chips load one after the other, so
    # without it the first chip's host time per step would include the others' loading
    t.barrier()
    run = drive(spec, sh, model, meter, fail, show=spec.progress and rank == 0 and not spec.dry_run)
    fail("report")
    t.finish()
    chip = chip_summary(spec, sh, clock, rank, sync.calls, t.sent_messages, wf.bytes_read if wf is not None else 0)
    if wf is not None:
        wf.close()
    parts = t.gather_obj((chip, run["out_local"], clock.trace))
    if rank != 0:
        return None
    return merge(spec, sh, run, parts, [p[2] for p in parts] if spec.trace else None)


def where_this_runs() -> dict:
    """Where this rank's process runs: its Slurm node name (SLURMD_NODENAME, set in every
    Slurm step; None outside Slurm) and its host name. Several Slurm nodes may share one host,
    so the node name, not the host, tells the nodes of a multi-node run apart."""
    return {"node": os.environ.get("SLURMD_NODENAME") or None, "host": socket.gethostname()}


def _peak_rss_bytes() -> int:
    """This process's peak resident memory so far (host memory, not chip memory; in-process
    chips share one process)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024       # Linux: KiB


def _progress(done: int, total: int, t0: float):
    import sys
    eta = (time.perf_counter() - t0) / done * (total - done) if done else 0.0
    end = "\n" if done + 1 == total else ""
    print(f"\r  step {done + 1}/{total}, ETA {eta:.0f} s ", end=end, file=sys.stderr, flush=True)


def _from_file(spec: RunSpec, make):
    """The model built from the file's scales: each requantization must fit a 24-bit
    multiplier with a shift in 1..62 (quant.multiplier); scales that do not are the file's."""
    try:
        return make()
    except (ValueError, OverflowError, ZeroDivisionError) as e:
        raise UserError(f"weights file {spec.weights}: its scales cannot be requantized in integer arithmetic "
                        f"({e})") from None


def weight_bytes_by_place(specs, where: dict) -> dict:
    out = {p: 0 for p in (costs.WEIGHT_MEM, costs.L2, costs.L3)}
    for s in specs:
        if s.category == "weights":
            row_bytes = s.nbytes // max(s.shape[0], 1)
            for place, rows in where[s.key]:
                out[place] += rows * row_bytes
    return out


def llama_logit_scale(amax) -> float:
    from .numerics.quant import scale_for
    return scale_for(amax["logits"], 16)


def ensure_weights(cfg, seed: int, t=None) -> str:
    """The cached default weights file, made on first use (by rank 0 under MPI)."""
    from .files.weights import cached_default_weights, default_weights_path
    import sys
    path = default_weights_path(cfg, seed)
    if t is None or t.rank == 0:
        path = cached_default_weights(cfg, seed, log=lambda m: print(m, file=sys.stderr, flush=True))
    if t is not None:
        t.barrier()
    return str(path)
