"""A chip's meter: every kernel the model runs is charged to the chip's emulated clock from its
shapes and the place of each weight, and computed by the chip's kernels (the real ones, or
shape-only stand-ins in a dry run: the meter hands the model its kernels)."""
from __future__ import annotations

import contextlib

import numpy as np

from ..numerics import drykernels
from .counters import ChipClock


class Meter:
    """Charges every kernel of one chip to its emulated clock, from shapes and the place of
    each weight (weight memory, L2, or off-chip L3, or rows split over places)."""

    def __init__(self, hw, clock: ChipClock, shapes: dict, where: dict, dry: bool = False):
        self.hw, self.clock, self.shapes, self.where = hw, clock, shapes, where
        # the kernels the chip computes with (stand-ins in a dry run); the models take them here
        num = drykernels.numerics(dry)
        self.K, self.Rq = num.K, num.Rq
        # trace labels: "layers.3.wq" -> "wq"
        self.labels = {k: k.split(".", 2)[2] if k.startswith("layers.") else k for k in shapes}
        self.current = ""                      # the phase being run (see phase())
        self.costs = clock.costs
        self._mm = {}                          # (weight, rows) -> (its Cost, trace label)

    def matmul(self, name: str, m: int):
        hit = self._mm.get((name, m))
        if hit is None:
            n, k = self.shapes[name]
            hit = self._mm[(name, m)] = (self.costs.matmul(m, n, k, self.where[name]), self.labels[name])
        self.clock.charge(*hit)

    def weight_kernel(self, name: str, w, x: np.ndarray) -> np.ndarray:
        """W x for weight `name` (a QWeight of self.K): charged from shapes, then computed
        (zeros of the right shape in a dry run). int32 (..., n)."""
        self.matmul(name, 1 if x.ndim == 1 else x.shape[0])
        return self.K.matmul_i8(x, w)

    def weight_kernels(self, names, w, x: np.ndarray) -> np.ndarray:
        """The weights `names`, stacked by rows in w (kernels.stack), applied to one input:
        each charged as its own kernel, computed as one product."""
        m = 1 if x.ndim == 1 else x.shape[0]
        for name in names:
            self.matmul(name, m)
        return self.K.matmul_i8(x, w)

    def rows(self, name: str, nbytes: int):
        self.clock.charge(self.costs.row_fetch(nbytes, self.where[name]), name + " rows")

    def elementwise(self, n: int, name: str = "elementwise"):
        self.clock.charge(self.costs.elementwise(n), name)

    def attention(self, heads: int, m: int, t: int, hd: int, pairs: int | None = None):
        self.clock.charge(self.costs.attention(heads, m, t, hd, pairs), "attention")

    def span(self, name: str):
        return self.clock.span(name)

    def section(self, name: str):
        """Counters of the enclosed work under `name` (the whole run), and within the current
        phase: "blocks" inside phase "decode" is also section "decode.blocks"."""
        if not self.current:
            return self.clock.section(name)
        both = contextlib.ExitStack()
        both.enter_context(self.clock.section(name))
        both.enter_context(self.clock.section(f"{self.current}.{name}"))
        return both

    def phase(self, name: str):
        """Context manager: the enclosed work is phase `name` (prefill, decode): its counters
        go to section `name`, and sections opened inside it are prefixed with it."""
        return _Phase(self, name)


class _Phase:
    def __init__(self, meter: Meter, name: str):
        self.meter, self.name = meter, name

    def __enter__(self):
        self.meter.current = self.name
        self.section = self.meter.clock.section(self.name)
        self.section.__enter__()

    def __exit__(self, *exc):
        self.section.__exit__(*exc)
        self.meter.current = ""
