"""Placement: what each chip stores and where (weight memory, L2, or off-chip L3), as pure
arithmetic over tensor specs; then reading a chip's shard into its arena. Each chip is
bounded by its own memories (the chips of a mixed cluster may differ)."""
from __future__ import annotations

import functools

import numpy as np

from . import costs
from ..models import llama, mobilebert
from ..config import ChipSpec, LlamaConfig, ModelConfig
from ..errors import CapacityError
from ..models.layout import Spec, totals
from .memory import Arena, fmt_bytes
from ..models.partition import plan
from ..models.stages import max_chips, stage_specs, stages


@functools.lru_cache(maxsize=64)
def chip_specs(cfg: ModelConfig, n_chips: int, run_len: int,
               speeds: tuple | None = None, partition: str = "tensor") -> tuple[tuple[Spec, ...], ...]:
    """Buffers of every chip (pure function of shapes; speeds: partition.plan's). Every chip of
    an in-process run asks for all of them (N^2 specs at N chips): computed once, and
    immutable (tuples of frozen Specs)."""
    mod = llama if isinstance(cfg, LlamaConfig) else mobilebert
    if partition == "pipeline":                  # whole layers per chip (models/stages.py)
        return tuple(tuple(stage_specs(cfg, st, run_len)) for st in stages(cfg, n_chips))
    return tuple(tuple(mod.specs(cfg, sl, run_len)) for sl in plan(cfg, n_chips, speeds))


def footprint(cfg: ModelConfig, n_chips: int, run_len: int, speeds: tuple | None = None,
              partition: str = "tensor") -> list[dict]:
    return [totals(s) for s in chip_specs(cfg, n_chips, run_len, speeds, partition)]


def _placement_order(specs: list[Spec]) -> list[Spec]:
    """Reservations and per-channel constants first (they must be on chip), then the weights of
    the Transformer blocks in layer order (they fill the weight memory first), then embedding
    and classifier weights. Weights are packed without gaps (see memory.Arena), so the order
    decides which weights sit in the weight memory, which in L2 and, when streaming, which
    stay off chip."""
    weights = [s for s in specs if s.category == "weights"]
    weights.sort(key=lambda s: not s.key.startswith("layers."))          # stable: spec order within
    return [s for s in specs if s.category != "weights"] + weights


def _pack(specs: list[Spec], arena: Arena, stream: bool):
    """Allocate every buffer of a chip in placement order; yields (spec, view or None, places).
    A weight that does not fit stays off chip (L3) when streaming, else CapacityError."""
    for s in _placement_order(specs):
        if s.category == "weights" and not arena.fits(s.nbytes, s.category):
            if not stream:
                raise CapacityError(f"{arena.who}: weight {s.key} ({s.nbytes:,} B) does not fit")
            yield s, None, ((costs.L3, s.shape[0]),)
            continue
        try:
            buf, places = arena.alloc(s.shape, s.dtype, s.category)
        except CapacityError:
            raise CapacityError(f"{arena.who}: even without weights, {s.category} of {fmt_bytes(s.nbytes)} does "
                                f"not fit in {fmt_bytes(arena.capacity - arena.wm)} of L2 "
                                f"({fmt_bytes(arena.used)} of the chip already used)") from None
        yield s, buf, places


def fits_stationary(specs: list[Spec], chip) -> bool:
    """Does every buffer fit on chip (a ChipSpec or its MemorySpec), allocated the way
    place_shard allocates?"""
    mem = getattr(chip, "memory", chip)
    try:
        for _ in _pack(specs, Arena(mem.l2_bytes, mem.weight_mem_bytes, virtual=True), stream=False):
            pass
    except CapacityError:
        return False
    return True


@functools.lru_cache(maxsize=256)
def _unfit_chips(cfg: ModelConfig, n_chips: int, run_len: int, mems, speeds: tuple | None = None,
                 partition: str = "tensor") -> tuple:
    """The chips whose shard does not fit their memories (mems: one MemorySpec for all, or one per chip)."""
    each = mems if isinstance(mems, tuple) else (mems,) * n_chips
    return tuple(r for r, s in enumerate(chip_specs(cfg, n_chips, run_len, speeds, partition))
                 if not fits_stationary(s, each[r]))


def min_chips_fitting(cfg: ModelConfig, run_len: int, chip: ChipSpec, partition: str = "tensor") -> int | None:
    for n in range(1, max_chips(cfg, partition) + 1):
        if not _unfit_chips(cfg, n, run_len, chip.memory, None, partition):
            return n
    return None


def choose_placement(cfg, n_chips, run_len, chip, placement, speeds: tuple | None = None,
                     partition: str = "tensor") -> str:
    """'stationary' or 'stream' for the whole run (same decision on every rank). chip: the
    ChipSpec of every chip, or a sequence of one per chip (a mixed cluster)."""
    chips = (chip,) * n_chips if isinstance(chip, ChipSpec) else tuple(chip)
    mems = tuple(c.memory for c in chips)
    bad = _unfit_chips(cfg, n_chips, run_len, mems[0] if len(set(mems)) == 1 else mems, speeds, partition)
    if not bad:
        return "stationary"
    fps = footprint(cfg, n_chips, run_len, speeds, partition)
    if placement == "stationary":
        worst = max(bad, key=lambda r: sum(fps[r].values()))
        mine = chips[worst]
        capacity = mine.onchip_capacity_bytes
        need = sum(fps[worst].values())
        parts = ", ".join(f"{k} {v:,}" for k, v in fps[worst].items())
        if len(set(mems)) == 1 and speeds is None:
            best = min_chips_fitting(cfg, run_len, mine, partition)
            hint = (f"the smallest chip count that fits is {best}" if best else
                    f"no chip count up to {max_chips(cfg, partition)} fits")
        else:
            hint = "give it more memory" + (" or use --split balanced" if speeds is not None else "")
        over = (f"{need - capacity:,} B over its on-chip capacity of {capacity:,} B" if need > capacity else
                f"within its {capacity:,} B on-chip capacity in total, but not in its "
                f"{mine.memory.l2_bytes:,} B L2 + {mine.memory.weight_mem_bytes:,} B weight memory split")
        raise CapacityError(
            f"model '{cfg.name}' does not fit stationary on {n_chips} chip(s): chip {worst} needs "
            f"{need:,} B ({parts}), {over}; {hint} (or use --placement stream)")
    return "stream"


def place_shard(wf, cfg, size, rank, run_len, chip: ChipSpec, placement, dry: bool = False,
                speeds: tuple | None = None, partition: str = "tensor"):
    """Read this chip's slices (hyperslabs) into its arena; weights that do not fit stay off chip
    (stream placement). Returns specs, arena, tensors and where each weight lives."""
    specs = chip_specs(cfg, size, run_len, speeds, partition)[rank]
    arena = Arena(chip.memory.l2_bytes, chip.memory.weight_mem_bytes, f"chip {rank}")
    tensors, where = {}, {}
    for s, buf, places in _pack(specs, arena, stream=placement != "stationary"):
        where[s.key] = places
        if buf is None:
            buf = np.zeros(s.shape, s.dtype)                      # host memory standing for L3
        if s.dataset is not None and not dry:
            buf[...] = wf.read(s.dataset, s.rows, s.cols)
        elif dry and s.category == "params":
            buf[...] = 1.0                                        # neutral scales and gains
        tensors[s.key] = buf
    return specs, arena, tensors, where
