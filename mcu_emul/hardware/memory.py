"""A chip's on-chip memory: one arena of exactly the chip's capacity (weight memory + L2).

Address map of the arena: [0, wm) is the weight memory, [wm, wm + l2) is L2. Weights are
allocated upward from address 0: the weight memory first (the neural engine reads them there),
then on into L2, so one weight may straddle the two (its first rows in the weight memory, the
rest in L2). Everything else (per-channel constants, KV cache, activations) may live in L2 only
and is allocated downward from the top of L2.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import CapacityError

ALIGN = 8
CATEGORIES = ("weights", "params", "kv_cache", "activations")
WEIGHT_MEM, L2 = "weight_mem", "l2"


def fmt_bytes(n: int) -> str:
    return f"{n:,} B ({n / 2**20:.2f} MiB)"


def _up(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _down(n: int) -> int:
    return n // ALIGN * ALIGN


class Arena:
    """Two bump allocators over one uint8 buffer: weights up from 0, the rest down from the top."""

    def __init__(self, l2_bytes: int, weight_mem_bytes: int = 0, who: str = "chip", virtual: bool = False):
        self.wm = int(weight_mem_bytes)
        self.capacity = int(l2_bytes) + self.wm
        # the chip's on-chip memory; a virtual arena only does the arithmetic
        self.buf = None if virtual else np.zeros(self.capacity, np.uint8)
        self.low, self.high = 0, self.capacity      # weights: [0, low); the rest: [high, capacity)
        self.who = who
        self.used_by = {c: 0 for c in CATEGORIES}

    def _span(self, nbytes: int, category: str) -> tuple[int, int] | None:
        if category == "weights":
            start = _up(self.low)
            return (start, start + nbytes) if start + nbytes <= self.high else None
        start = _down(self.high - nbytes)
        return (start, start + nbytes) if start >= max(self.low, self.wm) else None

    def fits(self, nbytes: int, category: str = "weights") -> bool:
        return self._span(nbytes, category) is not None

    def alloc(self, shape, dtype, category: str) -> tuple[np.ndarray | None, tuple]:
        """Allocate; returns (view or None when virtual, places) where places is a tuple of
        (region, leading rows there) for a weight matrix, ((region, rows),) otherwise."""
        dtype = np.dtype(dtype)
        shape = tuple(int(s) for s in shape)
        nbytes = math.prod(shape) * dtype.itemsize
        span = self._span(nbytes, category)
        if span is None:
            raise CapacityError(f"{self.who}: {category} tensor of {nbytes:,} B does not fit: "
                                f"{self.used:,} of {self.capacity:,} B used")
        start, end = span
        if category == "weights":
            self.low = end
        else:
            self.high = start
        self.used_by[category] += nbytes
        places = self.places(start, end, shape, dtype.itemsize)
        if self.buf is None:
            return None, places
        return self.buf[start:end].view(dtype).reshape(shape), places

    def places(self, start: int, end: int, shape: tuple, itemsize: int) -> tuple:
        """Rows of a tensor at [start, end) in each region; a row cut by the boundary counts as L2."""
        rows = shape[0] if shape else 1
        if end <= self.wm:
            return ((WEIGHT_MEM, rows),)
        if start >= self.wm:
            return ((L2, rows),)
        row_bytes = (end - start) // max(rows, 1)
        in_wm = (self.wm - start) // row_bytes if row_bytes else 0
        return tuple((r, n) for r, n in ((WEIGHT_MEM, in_wm), (L2, rows - in_wm)) if n)

    @property
    def used(self) -> int:
        return self.low + (self.capacity - self.high)
