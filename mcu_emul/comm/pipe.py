"""Point-to-point hand-offs of a pipeline: one stage's activations to the next stage.

A hand-off is one message on the same Link as an all-reduce's messages: serialized on the
sender's link (the sender does not stop: sends are DMA-driven), stamped with its arrival time,
its bytes charged to the sender's link counters. The receiver's wait is taken in two steps
so that a chip can put them in different sections of its clock: first it idles until the
message left the sender (`idle_until_sent`: the sender was still computing), then it waits
for the transfer itself (`arrive`: serialization and latency, link time). The two steps charge
exactly what Link.recv charges in one.
"""
from __future__ import annotations

import numpy as np

from .collectives import Link


class Pipe:
    """A chip's hand-offs over transport t, charged to its clock (None: not emulated)."""

    def __init__(self, t, clock=None):
        self.link = Link(t, clock)
        self.clock = clock

    def send(self, x: np.ndarray, dest: int):
        """x (the int16 residual stream) to chip dest."""
        self.link.send(np.ascontiguousarray(x, np.int16), dest)

    def recv(self, source: int, shape) -> "Message":
        """The next hand-off from source, on the host; the clock has not waited for it yet."""
        x, stamp = self.link.t.recv_msg(source, shape, np.int16)
        return Message(x, int(stamp[0]), int(stamp[1]), source)

    def idle_until_sent(self, m: "Message"):
        """Wait (idle) until the message left its sender."""
        if self.clock is not None:
            self.clock.receive(m.arrival - m.transfer, 0)

    def arrive(self, m: "Message") -> np.ndarray:
        """Wait for the message's transfer (link time); returns its activations."""
        if self.clock is not None:
            self.clock.receive(m.arrival, m.transfer, m.source)
        return m.x


class Message:
    """A received hand-off: activations int16 (rows, width), arrival time and transfer cycles."""

    def __init__(self, x, arrival: int, transfer: int, source: int):
        self.x, self.arrival, self.transfer, self.source = x, arrival, transfer, source
