"""A chip's emulated clock and counters: cycles, bytes and MACs by category."""
from __future__ import annotations

from . import costs
from .config import ChipSpec, Topology


class ChipClock:
    """Cycle clock of one chip. Kernels advance it by their cost; messages carry the sender's
    clock, and a receiver that is ahead of the data waits (idle) until it arrives."""

    def __init__(self, hw: ChipSpec, topo: Topology, rank: int):
        self.hw, self.topo, self.rank = hw, topo, rank
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

    def send(self, nbytes: int, dest: int) -> int:
        """Serialize a message onto the link; returns its arrival time at `dest`."""
        ser, lat = costs.link_cycles(self.hw, self.topo, nbytes, self.topo.level(self.rank, dest))
        self.now += ser
        self.cycles["link"] += ser
        self.bytes["link"] += nbytes
        self.messages += 1
        return self.now + lat

    def receive(self, arrival: int):
        if arrival > self.now:
            self.cycles["idle"] += arrival - self.now
            self.now = arrival

    def snapshot(self) -> dict:
        return dict(now=self.now, cycles=dict(self.cycles), bytes=dict(self.bytes), macs=self.macs)

    def energy_mj(self) -> dict:
        return costs.energy_mj(self.hw, self.topo, self.cycles, self.bytes)
