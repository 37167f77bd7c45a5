"""A chip's emulated clock and counters: cycles, bytes and MACs by category."""
from __future__ import annotations

from . import costs
from .config import ChipSpec, Topology


class ChipClock:
    """Cycle clock of one chip. Kernels advance it by their cost. Sends are DMA-driven and do
    not stop the chip: a message occupies its link (one link per peer, or one port for all,
    per the topology) for its serialization time and arrives `latency` later, stamped with
    that arrival time. A receiver that is ahead of the data waits: the part of the wait that
    the transfer itself explains (serialization + latency) counts as link time, the rest as
    idle (waiting for the sender to get there)."""

    def __init__(self, hw: ChipSpec, topo: Topology, rank: int):
        self.hw, self.topo, self.rank = hw, topo, rank
        self.link_free = {}                    # port -> cycle at which it is free again
        self.now = 0
        self.cycles = {c: 0 for c in costs.CATEGORIES}
        self.bytes = {"onchip": 0, "offchip": 0, "link": 0}
        self.macs = 0
        self.messages = 0

    def charge(self, c: costs.Cost):
        self.cycles["compute"] += c.compute
        self.cycles["onchip"] += c.onchip
        self.cycles["offchip"] += c.offchip
        self.bytes["onchip"] += c.onchip_bytes
        self.bytes["offchip"] += c.offchip_bytes
        self.macs += c.macs
        self.now += c.cycles

    def send(self, nbytes: int, dest: int) -> tuple[int, int]:
        """Queue a message on its link; returns (arrival time at dest, transfer cycles)."""
        ser, lat = costs.link_cycles(self.hw, self.topo, nbytes, self.topo.level(self.rank, dest))
        port = dest if self.topo.link_ports == "per_peer" else 0
        start = max(self.now, self.link_free.get(port, 0))
        self.link_free[port] = start + ser
        self.bytes["link"] += nbytes
        self.messages += 1
        return start + ser + lat, ser + lat

    def receive(self, arrival: int, transfer: int = 0):
        if arrival > self.now:
            wait = arrival - self.now
            self.cycles["link"] += min(wait, transfer)
            self.cycles["idle"] += wait - min(wait, transfer)
            self.now = arrival

    def snapshot(self) -> dict:
        return dict(now=self.now, cycles=dict(self.cycles), bytes=dict(self.bytes), macs=self.macs)

    def energy_mj(self) -> dict:
        return costs.energy_mj(self.hw, self.topo, self.cycles, self.bytes)
