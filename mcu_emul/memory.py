"""A chip's on-chip memory: one arena of exactly the chip's capacity, plus the off-chip store."""
from __future__ import annotations

import numpy as np

from .errors import CapacityError

ALIGN = 8
CATEGORIES = ("weights", "params", "kv_cache", "activations")


def fmt_bytes(n: int) -> str:
    return f"{n:,} B ({n / 2**20:.2f} MiB)"


class Arena:
    """Bump allocator over one uint8 buffer of `capacity_bytes`; tensors are views into it."""

    def __init__(self, capacity_bytes: int, who: str = "chip"):
        self.capacity = int(capacity_bytes)
        self.buf = np.zeros(self.capacity, np.uint8)      # the chip's L2 + weight memory
        self.top = 0
        self.who = who
        self.used_by = {c: 0 for c in CATEGORIES}

    def fits(self, nbytes: int) -> bool:
        return -(-self.top // ALIGN) * ALIGN + nbytes <= self.capacity

    def alloc(self, shape, dtype, category: str) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        start = -(-self.top // ALIGN) * ALIGN
        if start + nbytes > self.capacity:
            raise CapacityError(f"{self.who}: {category} tensor of {nbytes:,} B does not fit: "
                                f"{start:,} of {self.capacity:,} B used")
        self.top = start + nbytes
        self.used_by[category] += nbytes
        return self.buf[start:start + nbytes].view(dtype).reshape(shape)

    @property
    def used(self) -> int:
        return self.top
