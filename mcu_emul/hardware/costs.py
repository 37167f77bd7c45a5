"""Cycle, byte and energy costs: pure functions of shapes and the hardware description.

A kernel's time is set by the slowest of its compute, its on-chip data movement (L2 -> L1 DMA)
and, for a weight streamed from off-chip L3, the off-chip transfer (hidden behind compute when
`l3_overlaps_compute`, else added). Cycles are integers so that every run, real or dry, adds
up the same numbers.

Chips of one cluster may run at different clocks. Their clocks then all count cycles of one
reference clock (the fastest chip's; Table and ChipClock take it as `ref_hz`): a kernel's own
cycles are scaled by ref_hz / its chip's clock, rounded up, and time-based costs (links, the
off-chip memory) are the same time on every chip. With one clock the scaling is the identity.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from fractions import Fraction

from ..config import ChipSpec, Topology

WEIGHT_MEM, L2, L3 = "weight_mem", "l2", "l3"


@dataclass(frozen=True, slots=True)
class Cost:
    """Cycles by category and bytes moved by one kernel (or a few, added)."""
    compute: int = 0
    onchip: int = 0          # stall on L2 <-> L1 DMA beyond compute
    offchip: int = 0         # stall on L3 beyond compute and DMA
    onchip_bytes: int = 0
    offchip_bytes: int = 0
    macs: int = 0
    engine: int = 0          # the part of `compute` run by the neural engine (the rest: cluster)

    @property
    def cycles(self) -> int:
        return self.compute + self.onchip + self.offchip

    def __add__(self, o: "Cost") -> "Cost":
        # field by field: dataclasses.astuple deep-copies, ten times slower
        return Cost(*(getattr(self, f) + getattr(o, f) for f in _COST_FIELDS))


_COST_FIELDS = tuple(f.name for f in fields(Cost))


def _ceil(x: float) -> int:
    return int(math.ceil(x - 1e-9))


def matmul(hw: ChipSpec, m: int, n: int, k: int, where) -> Cost:
    """Y(m, n) = X(m, k) W(n, k)^T with int8 W held in `where`: weight_mem, l2 or l3, or a
    tuple of (place, rows) parts when W's rows are split over places (one kernel per part).

    Weights in the weight memory feed the neural engine directly: at its GEMV rate for one
    token (no weight reuse: bound by its weight port), at its GEMM rate for several; weights
    in L2 (or streamed from L3) pass through L1 by DMA and are computed there by the cluster,
    or by the engine reading L1 (`dma_weights_unit`).
    """
    if not isinstance(where, str):
        parts = [matmul(hw, m, rows, k, place) for place, rows in where]
        return sum(parts[1:], parts[0])
    c, macs, wbytes = hw.compute, m * n * k, n * k
    act_bytes = m * k + 4 * m * n                           # int8 in, int32 out
    engine = where == WEIGHT_MEM or c.dma_weights_unit == "engine"
    if engine:
        rate = c.engine_gemv_macs_per_cycle if m == 1 else c.engine_gemm_macs_per_cycle
    else:
        rate = c.cluster_gemv_macs_per_cycle if m == 1 else c.cluster_gemm_macs_per_cycle
    dma_bytes = act_bytes if where == WEIGHT_MEM else act_bytes + wbytes
    compute = _ceil(macs / rate) + c.kernel_overhead_cycles
    dma = _ceil(dma_bytes / hw.dma.l2_l1_bytes_per_cycle)
    onchip = max(0, dma - compute)
    offchip, off_bytes = 0, 0
    if where == L3:
        off_bytes = wbytes
        l3 = _ceil(wbytes * c.freq_hz / hw.offchip.l3_bytes_per_s) + hw.offchip.l3_latency_cycles
        offchip = max(0, l3 - compute - onchip) if hw.offchip.l3_overlaps_compute else l3
    return Cost(compute, onchip, offchip, dma_bytes, off_bytes, macs, compute if engine else 0)


def attention(hw: ChipSpec, heads: int, m: int, t: int, hd: int, pairs: int | None = None) -> Cost:
    """Scores (m x t per head, reduction hd) and P V (m x hd, reduction t); KV in L2.
    pairs: the (row, key) pairs computed, m*t, or fewer under a causal mask (a prefill)."""
    a, b = matmul(hw, m, t, hd, L2), matmul(hw, m, hd, t, L2)
    compute, macs = a.compute + b.compute, a.macs + b.macs
    if pairs is not None and pairs != m * t:
        c = hw.compute
        rate = c.cluster_gemv_macs_per_cycle if m == 1 else c.cluster_gemm_macs_per_cycle
        macs = 2 * pairs * hd
        compute = 2 * (_ceil(pairs * hd / rate) + c.kernel_overhead_cycles)
    return Cost(heads * compute, heads * (a.onchip + b.onchip), 0,
                heads * (a.onchip_bytes + b.onchip_bytes), 0, heads * macs)


def elementwise(hw: ChipSpec, n: int) -> Cost:
    """n elements of an integer elementwise kernel (norm, softmax, requant, RoPE, add)."""
    return Cost(compute=_ceil(n / hw.compute.elementwise_per_cycle) + hw.compute.kernel_overhead_cycles)


def row_fetch(hw: ChipSpec, nbytes: int, where) -> Cost:
    """Fetch embedding rows (nbytes) into L1; from L3 when the table is off chip. For a table
    split over places, the row is charged from the slowest (which holds it is known only at
    run time)."""
    if not isinstance(where, str):
        where = L3 if any(p == L3 for p, _ in where) else L2
    dma = _ceil(nbytes / hw.dma.l2_l1_bytes_per_cycle)
    if where == L3:
        l3 = _ceil(nbytes * hw.compute.freq_hz / hw.offchip.l3_bytes_per_s) + hw.offchip.l3_latency_cycles
        return Cost(onchip=dma, offchip=l3, onchip_bytes=nbytes, offchip_bytes=nbytes)
    return Cost(onchip=dma, onchip_bytes=nbytes)


def link_cycles(hz: float, topo: Topology, nbytes: int, level: int, ends: tuple = ()) -> tuple[int, int]:
    """(serialization cycles at the sender, latency cycles at clock hz) of one message on a
    `level` link of topology topo. ends: the two chips' own link values (a cluster's per-chip
    link overrides; objects with link_bytes_per_s and link_latency_s): the link then runs at
    the slower end's bandwidth and the longer latency."""
    bw, lat0 = topo.link_bytes_per_s, topo.link_latency_s
    if ends:
        bw, lat0 = min(e.link_bytes_per_s for e in ends), max(e.link_latency_s for e in ends)
    bw *= topo.upper_bandwidth_factor if level > 0 else 1.0
    lat = lat0 * (topo.upper_latency_factor if level > 0 else 1.0)
    return _ceil(nbytes * hz / bw), _ceil(lat * hz)


def throughput_macs_per_s(hw: ChipSpec, gemm: bool) -> float:
    """A chip's weight-kernel throughput, the measure --split by-speed shares work by: its clock
    times the MAC rate of the unit that runs its stationary weights (the neural engine when it
    has a weight memory, else the cluster), at the GEMV rate (decode) or the GEMM rate (encode)."""
    c = hw.compute
    if hw.memory.weight_mem_bytes > 0:
        rate = c.engine_gemm_macs_per_cycle if gemm else c.engine_gemv_macs_per_cycle
    else:
        rate = c.cluster_gemm_macs_per_cycle if gemm else c.cluster_gemv_macs_per_cycle
    return c.freq_hz * rate


def scaled(c: Cost, ratio: Fraction) -> Cost:
    """A Cost in cycles of a faster reference clock (ratio = reference / own clock > 1):
    every cycle count scaled and rounded up, bytes and MACs unchanged."""
    def up(x):
        return -(-x * ratio.numerator // ratio.denominator)
    return Cost(up(c.compute), up(c.onchip), up(c.offchip), c.onchip_bytes, c.offchip_bytes, c.macs, up(c.engine))


class Table:
    """The kernel cost functions above for one chip, memoized by their shape arguments. They
    are pure functions of (hw, shapes) and a run asks for the same few shapes thousands of
    times; the specs are not hashable (their `origin` tables), so the memo is per chip."""

    def __init__(self, hw: ChipSpec, ref_hz: float | None = None):
        self.hw = hw
        self._memo = {}
        f = hw.compute.freq_hz
        self.ratio = None if ref_hz is None or ref_hz == f else Fraction(ref_hz) / Fraction(f)

    def _get(self, fn, *args) -> Cost:
        key = (fn, *args)
        c = self._memo.get(key)
        if c is None:
            c = fn(self.hw, *args)
            c = self._memo[key] = c if self.ratio is None else scaled(c, self.ratio)
        return c

    def matmul(self, m: int, n: int, k: int, where) -> Cost:
        return self._get(matmul, m, n, k, where)

    def attention(self, heads: int, m: int, t: int, hd: int, pairs: int | None = None) -> Cost:
        return self._get(attention, heads, m, t, hd, pairs)

    def elementwise(self, n: int) -> Cost:
        return self._get(elementwise, n)

    def row_fetch(self, nbytes: int, where) -> Cost:
        return self._get(row_fetch, nbytes, where)


CATEGORIES = ("compute", "onchip", "offchip", "link", "idle")


def energy_mj(hw: ChipSpec, topo: Topology, cycles: dict, nbytes: dict, engine_cycles: int = 0,
              hz: float | None = None) -> dict:
    """Energy by category (mJ) from a chip's cycle and byte counters (cycles of clock hz:
    the reference clock of a mixed cluster, else the chip's own).

    The chip's energy: compute time at the active power of the unit that ran it (cluster or
    neural engine); every stall (waiting on L2 DMA, on L3, on a link that the DMA drives, or on
    another chip) at idle power, the cluster being clock-gated while it waits; energy per byte
    of L2 and link traffic. The off-chip memory device (HyperRAM and its board traces) is
    outside this scope: see offchip_memory_energy_mj.
    """
    f, p, pi = hz or hw.compute.freq_hz, hw.power, hw.power.idle_w
    mj = 1e3
    compute_j = (p.cluster_active_w * (cycles["compute"] - engine_cycles) + p.engine_active_w * engine_cycles) / f
    return {
        "compute": compute_j * mj,
        "onchip": (pi * cycles["onchip"] / f + hw.energy.l2_pj_per_byte * 1e-12 * nbytes["onchip"]) * mj,
        "offchip": pi * cycles["offchip"] / f * mj,
        "link": (pi * cycles["link"] / f + topo.link_pj_per_byte * 1e-12 * nbytes["link"]) * mj,
        "idle": pi * cycles["idle"] / f * mj,
    }


def offchip_memory_energy_mj(hw: ChipSpec, offchip_bytes: int) -> float:
    """Energy of the off-chip memory device for the bytes it delivered (mJ): reported apart
    from the chip's energy (the published figures read as chip-only energy, see README)."""
    return hw.energy.l3_device_pj_per_byte * 1e-12 * offchip_bytes * 1e3
