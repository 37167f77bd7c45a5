"""A chip's emulated clock and counters: cycles, bytes and MACs by category."""
from __future__ import annotations

from . import costs
from ..config import ChipSpec, Topology


class ChipClock:
    """Cycle clock of one chip. Kernels advance it by their cost. Sends are DMA-driven and do
    not stop the chip: a message occupies its link (one link per peer, or one port for all,
    per the topology) for its serialization time and arrives `latency` later, stamped with
    that arrival time. A receiver that is ahead of the data waits: the part of the wait that
    the transfer itself explains (serialization + latency) counts as link time, the rest as
    idle (waiting for the sender to get there).

    The clock counts cycles of ref_hz (default: the chip's own clock): a mixed cluster's chips
    all count the fastest chip's cycles, so that message times compare (costs.Table scales
    this chip's kernel costs to it). links: every rank's link values (a cluster's per-chip link
    overrides; None: `topo` for all), so that a message runs at the slower end's rate."""

    def __init__(self, hw: ChipSpec, topo: Topology, rank: int, ref_hz: float | None = None,
                 links: tuple | None = None):
        self.hw, self.topo, self.rank, self.links = hw, topo, rank, links
        self.ref_hz = ref_hz or hw.compute.freq_hz
        self.link_free = {}                    # port -> cycle at which it is free again
        self.trace = None                      # list of events when tracing (see trace.py)
        self._sent, self._recvd = {}, {}       # message sequence numbers per peer (flow ids)
        self.now = 0
        self.cycles = {c: 0 for c in costs.CATEGORIES}
        self.bytes = {"onchip": 0, "offchip": 0, "link": 0}
        self.macs = 0
        self.engine_cycles = 0                 # compute cycles run on the neural engine
        self.sections = {}                     # name -> counters accumulated inside section(name)
        self.costs = costs.Table(hw, self.ref_hz)   # this chip's kernel costs, memoized by shape
        self._links = {}                       # (nbytes, dest) -> (serialization, latency, port)

    def charge(self, c: costs.Cost, name: str = "kernel"):
        if self.trace is not None and c.cycles:
            cat = max(("compute", "onchip", "offchip"), key=lambda k: getattr(c, k))
            self.trace.append(("X", name, self.now, c.cycles, cat))
        cy, by = self.cycles, self.bytes
        cy["compute"] += c.compute
        cy["onchip"] += c.onchip
        cy["offchip"] += c.offchip
        by["onchip"] += c.onchip_bytes
        by["offchip"] += c.offchip_bytes
        self.macs += c.macs
        self.engine_cycles += c.engine
        self.now += c.compute + c.onchip + c.offchip

    def send(self, nbytes: int, dest: int) -> tuple[int, int]:
        """Queue a message on its link; returns (arrival time at dest, transfer cycles)."""
        link = self._links.get((nbytes, dest))
        if link is None:                       # a pure function of (size, peer): computed once
            ends = () if self.links is None else (self.links[self.rank], self.links[dest])
            ser, lat = costs.link_cycles(self.ref_hz, self.topo, nbytes, self.topo.level(self.rank, dest), ends)
            link = self._links[(nbytes, dest)] = (ser, lat, dest if self.topo.link_ports == "per_peer" else 0)
        ser, lat, port = link
        start = max(self.now, self.link_free.get(port, 0))
        self.link_free[port] = start + ser
        self.bytes["link"] += nbytes
        if self.trace is not None:
            seq = self._sent[dest] = self._sent.get(dest, -1) + 1
            self.trace.append(("s", flow_id(self.rank, dest, seq), self.now, nbytes, dest))
        return start + ser + lat, ser + lat

    def receive(self, arrival: int, transfer: int = 0, source: int = -1):
        if arrival > self.now:
            wait = arrival - self.now
            if self.trace is not None:
                self.trace.append(("X", "wait (idle)" if wait > transfer else "wait (link)", self.now, wait,
                                   "idle" if wait > transfer else "link"))
            self.cycles["link"] += min(wait, transfer)
            self.cycles["idle"] += wait - min(wait, transfer)
            self.now = arrival
        if self.trace is not None and source >= 0:
            seq = self._recvd[source] = self._recvd.get(source, -1) + 1
            self.trace.append(("f", flow_id(source, self.rank, seq), self.now, 0, source))

    def span(self, name: str):
        """Context manager: a named slice (layer, all-reduce) on this chip's timeline."""
        return _Span(self, name)

    def section(self, name: str):
        """Context manager: add the counters of the enclosed work to self.sections[name]
        (e.g. "blocks": the Transformer blocks of every step, the scope of the paper's figures)."""
        return _Section(self, name)

    def counters(self) -> dict:
        return {"cycles": dict(self.cycles), "bytes": dict(self.bytes), "engine_cycles": self.engine_cycles,
                "macs": self.macs}

    def energy_mj(self, counters: dict | None = None) -> dict:
        c = counters or self.counters()
        own = self.topo if self.links is None else self.links[self.rank]        # its link's pJ per byte
        return costs.energy_mj(self.hw, own, c["cycles"], c["bytes"], c["engine_cycles"], self.ref_hz)


def flow_id(src: int, dst: int, seq: int) -> int:
    return (src * 4096 + dst) * 10_000_000 + seq


class _Span:
    def __init__(self, clock, name):
        self.clock, self.name = clock, name

    def __enter__(self):
        self.start = self.clock.now

    def __exit__(self, *exc):
        if self.clock.trace is not None:
            self.clock.trace.append(("X", self.name, self.start, self.clock.now - self.start, "span"))


def _delta(a, b):
    """b - a for (nested dicts of) counters."""
    if isinstance(a, dict):
        return {k: _delta(a[k], b[k]) for k in a}
    return b - a


def _add(acc, d):
    if isinstance(d, dict):
        return {k: _add(acc.get(k, 0) if acc else 0, v) for k, v in d.items()}
    return (acc or 0) + d


class _Section:
    def __init__(self, clock, name):
        self.clock, self.name = clock, name

    def __enter__(self):
        self.start = self.clock.counters()

    def __exit__(self, *exc):
        d = _delta(self.start, self.clock.counters())
        self.clock.sections[self.name] = _add(self.clock.sections.get(self.name), d)
