"""A chip's on-chip memory: one arena of exactly the chip's capacity (weight memory + L2).

Weights go to the weight memory first (the neural engine reads them there), then to L2;
everything else (per-channel constants, KV cache, activations) lives in L2.
"""
from __future__ import annotations

import numpy as np

from .errors import CapacityError

ALIGN = 8
CATEGORIES = ("weights", "params", "kv_cache", "activations")
WEIGHT_MEM, L2 = "weight_mem", "l2"


def fmt_bytes(n: int) -> str:
    return f"{n:,} B ({n / 2**20:.2f} MiB)"


class Arena:
    """Bump allocators over one uint8 buffer: [0, wm) weight memory, [wm, wm + l2) L2."""

    def __init__(self, l2_bytes: int, weight_mem_bytes: int = 0, who: str = "chip", virtual: bool = False):
        self.capacity = int(l2_bytes) + int(weight_mem_bytes)
        # the chip's on-chip memory; a virtual arena only does the arithmetic
        self.buf = None if virtual else np.zeros(self.capacity, np.uint8)
        self.bounds = {WEIGHT_MEM: (0, int(weight_mem_bytes)), L2: (int(weight_mem_bytes), self.capacity)}
        self.top = {WEIGHT_MEM: 0, L2: int(weight_mem_bytes)}
        self.who = who
        self.used_by = {c: 0 for c in CATEGORIES}

    def _start(self, region):
        return -(-self.top[region] // ALIGN) * ALIGN

    def region_for(self, nbytes: int, category: str) -> str | None:
        for region in ((WEIGHT_MEM, L2) if category == "weights" else (L2,)):
            if self._start(region) + nbytes <= self.bounds[region][1]:
                return region
        return None

    def fits(self, nbytes: int, category: str = "weights") -> bool:
        return self.region_for(nbytes, category) is not None

    def alloc(self, shape, dtype, category: str) -> tuple[np.ndarray, str]:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        region = self.region_for(nbytes, category)
        if region is None:
            raise CapacityError(f"{self.who}: {category} tensor of {nbytes:,} B does not fit: "
                                f"{self.used:,} of {self.capacity:,} B used")
        start = self._start(region)
        self.top[region] = start + nbytes
        self.used_by[category] += nbytes
        if self.buf is None:
            return None, region
        return self.buf[start:start + nbytes].view(dtype).reshape(shape), region

    @property
    def used(self) -> int:
        return (self.top[WEIGHT_MEM] - self.bounds[WEIGHT_MEM][0]) + (self.top[L2] - self.bounds[L2][0])
