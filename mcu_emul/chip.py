"""One rank = one MCU: places its shard in a capped arena, runs the model, reports.

The transport is handed in from the top, so the same code runs over MPI or in-process ranks.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np

from . import llama, mobilebert
from .collectives import Collectives
from .config import ChipSpec, LlamaConfig, ModelConfig
from .errors import CapacityError, UserError
from .layout import Spec, totals
from .memory import Arena, fmt_bytes
from .partition import plan
from .weights import WeightsFile

PLACEMENTS = ("auto", "stationary", "stream")
FAIL_PHASES = ("load", "embed", "attention", "ffn", "report")


@dataclass
class RunSpec:
    """Everything a run needs, identical on every rank."""
    model: str
    weights: str
    chip: ChipSpec
    prompt_ids: list = field(default_factory=lambda: [1])
    gen_tokens: int = 32
    seq_len: int = 128
    placement: str = "auto"
    allreduce: str = "hierarchical"
    group_sizes: tuple = (4,)
    payload: str = "int32"
    fail_rank: int = -1
    fail_at: str = ""
    input_seed: int = 0


class InjectedFailure(RuntimeError):
    """A failure injected on purpose (--fail-rank/--fail-at) to test that the job ends."""


class Meter:
    """Counts off-chip bytes: every use of a weight that lives off chip."""

    def __init__(self, offchip: set):
        self.offchip = offchip
        self.offchip_bytes = 0

    def use_weight(self, name: str, nbytes: int, row: bool = False):
        if name in self.offchip:
            self.offchip_bytes += int(nbytes)


def chip_specs(cfg: ModelConfig, n_chips: int, run_len: int) -> list[list[Spec]]:
    """Buffers of every chip (pure function of shapes)."""
    mod = llama if isinstance(cfg, LlamaConfig) else mobilebert
    return [mod.specs(cfg, sl, run_len) for sl in plan(cfg, n_chips)]


def footprint(cfg: ModelConfig, n_chips: int, run_len: int) -> list[dict]:
    return [totals(s) for s in chip_specs(cfg, n_chips, run_len)]


def min_chips_fitting(cfg: ModelConfig, run_len: int, capacity: int) -> int | None:
    for n in range(1, cfg.max_chips + 1):
        if max(sum(f.values()) for f in footprint(cfg, n, run_len)) <= capacity:
            return n
    return None


def choose_placement(cfg, n_chips, run_len, capacity, placement) -> str:
    """'stationary' or 'stream' for the whole run (same decision on every rank)."""
    fps = footprint(cfg, n_chips, run_len)
    worst = max(range(n_chips), key=lambda r: sum(fps[r].values()))
    need = sum(fps[worst].values())
    if need <= capacity:
        return "stationary"
    if placement == "stationary":
        best = min_chips_fitting(cfg, run_len, capacity)
        parts = ", ".join(f"{k} {v:,}" for k, v in fps[worst].items())
        hint = (f"the smallest chip count that fits is {best}" if best else
                f"no chip count up to {cfg.max_chips} fits")
        raise CapacityError(
            f"model '{cfg.name}' does not fit stationary on {n_chips} chip(s): chip {worst} needs "
            f"{need:,} B ({parts}), {need - capacity:,} B over its on-chip capacity of {capacity:,} B; "
            f"{hint} (or use --placement stream)")
    return "stream"


def run_len_of(cfg: ModelConfig, spec: RunSpec) -> int:
    if isinstance(cfg, LlamaConfig):
        return len(spec.prompt_ids) + spec.gen_tokens - 1
    return spec.seq_len


def validate_inputs(cfg: ModelConfig, spec: RunSpec):
    """Prompt ids, lengths: clear errors before any chip starts."""
    bad = [i for i in spec.prompt_ids if not 0 <= i < cfg.vocab_size]
    if bad:
        raise UserError(f"prompt id {bad[0]} is outside the vocabulary of '{cfg.name}' (0..{cfg.vocab_size - 1})")
    if isinstance(cfg, LlamaConfig):
        if not spec.prompt_ids:
            raise UserError("--prompt-ids is empty: give at least one token id")
        if spec.gen_tokens < 1:
            raise UserError(f"--gen-tokens must be >= 1, got {spec.gen_tokens}")
        n = run_len_of(cfg, spec)
        if n > cfg.context_len:
            raise UserError(f"prompt ({len(spec.prompt_ids)} ids) + --gen-tokens {spec.gen_tokens} needs {n + 1} "
                            f"positions, more than the context of {cfg.context_len} of '{cfg.name}'")
    else:
        if not 1 <= spec.seq_len <= cfg.max_positions:
            raise UserError(f"--seq-len {spec.seq_len} outside 1..{cfg.max_positions} (max positions of '{cfg.name}')")


def encoder_inputs(cfg, spec: RunSpec) -> np.ndarray:
    """MobileBERT input ids: the given ids, else seeded random ids of length --seq-len."""
    if spec.prompt_ids and spec.prompt_ids != [1]:
        return np.asarray(spec.prompt_ids, np.int64)
    rng = np.random.default_rng(spec.input_seed)
    return rng.integers(0, cfg.vocab_size, spec.seq_len)


def place_shard(wf, cfg, size, rank, run_len, capacity, placement):
    """Read this chip's slices (hyperslabs) into its arena; weights that do not fit stay off chip
    (stream placement). Reservations and params come first: they must be on chip."""
    specs = chip_specs(cfg, size, run_len)[rank]
    arena = Arena(capacity, f"chip {rank}")
    tensors, offchip = {}, set()
    order = [s for s in specs if s.category != "weights"] + [s for s in specs if s.category == "weights"]
    for s in order:
        if s.category == "weights" and not arena.fits(s.nbytes):
            if placement == "stationary":
                raise CapacityError(f"chip {rank}: weight {s.key} ({s.nbytes:,} B) does not fit")
            buf = np.empty(s.shape, s.dtype)                      # host memory standing for L3
            offchip.add(s.key)
        else:
            try:
                buf = arena.alloc(s.shape, s.dtype, s.category)
            except CapacityError:
                raise CapacityError(f"chip {rank}: even without weights, {s.category} of "
                                    f"{fmt_bytes(s.nbytes)} does not fit in {fmt_bytes(capacity)} "
                                    f"({fmt_bytes(arena.used)} already used)") from None
        if s.dataset is not None:
            buf[...] = wf.read(s.dataset, s.rows, s.cols)
        tensors[s.key] = buf
    return specs, arena, tensors, offchip


def run_chip(spec: RunSpec, t) -> dict | None:
    """Run one chip (rank t.rank of t.size). Returns the merged result on rank 0, None elsewhere."""
    rank, size = t.rank, t.size

    def fail(phase):
        if rank == spec.fail_rank and phase == spec.fail_at:
            raise InjectedFailure(f"injected failure at phase '{phase}' on rank {rank}")

    wf = WeightsFile(spec.weights, expect_model=spec.model)
    cfg = wf.cfg
    if isinstance(cfg, LlamaConfig) is False and spec.payload != "int32":
        raise UserError("--payload int8 is implemented for Llama models only")
    validate_inputs(cfg, spec)
    sl = plan(cfg, size)[rank]
    run_len = run_len_of(cfg, spec)
    capacity = spec.chip.onchip_capacity_bytes
    placement = choose_placement(cfg, size, run_len, capacity, spec.placement)
    fail("load")

    specs, arena, tensors, offchip = place_shard(wf, cfg, size, rank, run_len, capacity, placement)
    weight_bytes = sum(s.nbytes for s in specs if s.category == "weights")
    meter = Meter(offchip)
    sync = Collectives(t, spec.allreduce, spec.group_sizes)

    if isinstance(cfg, LlamaConfig):
        model = llama.LlamaChip(cfg, sl, tensors, wf.act_maxabs, sync, meter, run_len, spec.payload)
        ids, logits = list(spec.prompt_ids), []
        gen = []
        t0 = time.perf_counter()
        for pos in range(run_len):
            tok = ids[pos] if pos < len(ids) else gen[-1]
            lg = model.step(tok, pos, fail)
            logits.append(lg)
            if pos >= len(ids) - 1:
                gen.append(model.argmax(lg))
        step_s = (time.perf_counter() - t0) / run_len
        out_local = np.stack(logits)                               # int16 (steps, v1 - v0)
        out_scale = llama_logit_scale(wf.act_maxabs)
        inputs = ids + gen[:-1]
    else:
        model = mobilebert.MobileBertChip(cfg, sl, tensors, wf.act_maxabs, sync, meter)
        ids = encoder_inputs(cfg, spec)
        t0 = time.perf_counter()
        out_local = model.encode(ids, np.zeros(len(ids), np.int64), fail)   # int16 (S, x1 - x0)
        out_scale = model.s_x
        step_s = time.perf_counter() - t0
        gen, inputs = [], [int(i) for i in ids]
    fail("report")
    t.finish()
    chip = dict(rank=rank, onchip_capacity_bytes=capacity, onchip_used_bytes=arena.used,
                onchip_used_by_category=dict(arena.used_by), weight_bytes=weight_bytes,
                weight_bytes_offchip=sum(tensors[k].nbytes for k in offchip),
                kv_cache_bytes=int(tensors["kv_cache"].nbytes) if "kv_cache" in tensors else 0,
                weights_read_bytes=wf.bytes_read, offchip_bytes=meter.offchip_bytes,
                allreduce_calls=sync.calls, messages_sent=t.sent_messages, link_bytes_sent=t.sent_bytes,
                heads=list(sl.heads), ffn=list(sl.ffn), vocab=list(sl.vocab), hidden=list(sl.hidden))
    wf.close()
    parts = t.gather_obj((chip, out_local))
    if rank != 0:
        return None
    out = np.concatenate([p[1] for p in parts], axis=1)
    return dict(cfg=cfg, placement=placement, chips=[p[0] for p in parts], output=out,
                output_scale=out_scale, token_ids=gen, inputs=inputs, host_step_s=step_s,
                output_sha256=hashlib.sha256(np.ascontiguousarray(out).astype("<i2").tobytes()).hexdigest())


def llama_logit_scale(amax: dict) -> float:
    from .quant import scale_for
    return scale_for(amax["logits"], 16)
