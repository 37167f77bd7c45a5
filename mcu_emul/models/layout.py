"""What one chip stores: tensor specs (name, slice, dtype, category) as pure functions of shapes."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Spec:
    """One buffer of a chip. `dataset` None means a reservation (KV cache, activations)."""
    key: str
    category: str                 # weights | params | kv_cache | activations
    shape: tuple
    dtype: str
    dataset: str | None = None
    rows: tuple | None = None     # hyperslab [a, b) on axis 0
    cols: tuple | None = None     # hyperslab [a, b) on axis 1

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def matrix(name: str, full_shape, rows=None, cols=None) -> list[Spec]:
    """An int8 matrix slice and its per-row float32 scales (params)."""
    r = rows or (0, full_shape[0])
    c = cols or (0, full_shape[1])
    return [Spec(name, "weights", (r[1] - r[0], c[1] - c[0]), "int8", name, rows, cols),
            Spec(name + ".scale", "params", (r[1] - r[0],), "float32", name + ".scale", rows)]


def vector(name: str, n: int, rows=None) -> Spec:
    r = rows or (0, n)
    return Spec(name, "params", (r[1] - r[0],), "float32", name, rows)


def totals(specs: list[Spec]) -> dict[str, int]:
    out = {"weights": 0, "params": 0, "kv_cache": 0, "activations": 0}
    for s in specs:
        out[s.category] += s.nbytes
    return out
