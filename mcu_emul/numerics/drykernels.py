"""Stand-ins for the integer kernels and requantizers in a dry run: the same output shapes
and dtypes, no arithmetic. A dry run's values are never looked at (its counters come from
shapes and the collective schedule). `numerics(dry)` is the one place that picks them."""
from __future__ import annotations

import sys
import types

import numpy as np

from . import kernels
from .quant import Requant


_ZEROS = {}


def zeros(shape, dtype) -> np.ndarray:
    """A read-only array of zeros, one per (shape, dtype): a dry run makes the same few
    thousands of times (nothing writes into a kernel's result: read-only makes sure)."""
    key = (tuple(shape), dtype)
    z = _ZEROS.get(key)
    if z is None:
        if len(_ZEROS) >= 4096:                # a long run's attention shapes: bounded
            _ZEROS.clear()
        z = _ZEROS[key] = np.zeros(key[0], dtype)
        z.flags.writeable = False
    return z


class QWeight:
    """kernels.QWeight's interface without the float32 shadow."""

    def __init__(self, q: np.ndarray):
        self.q = q
        self.shape = q.shape


def stack(ws: list) -> QWeight:
    out = QWeight.__new__(QWeight)
    out.q, out.shape = None, (sum(w.shape[0] for w in ws), ws[0].shape[1])
    return out


def matmul_i8(x: np.ndarray, w) -> np.ndarray:
    return zeros(x.shape[:-1] + (w.shape[0],), np.int32)


def int_matmul_small(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return zeros(batch + a.shape[-2:-1] + b.shape[-1:], np.int64)


def softmax_i(scores: np.ndarray, mult=None, shift=None, mask=None) -> np.ndarray:
    return zeros(scores.shape, np.uint16)


def rmsnorm_i(x: np.ndarray, gain_int=None, eps_int=None) -> np.ndarray:
    return zeros(x.shape, np.int8)


def rope_i(x: np.ndarray, cos=None, sin=None) -> np.ndarray:
    return zeros(x.shape, np.int8)


def lut8(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    return zeros(x.shape, table.dtype)


def sat16(x: np.ndarray) -> np.ndarray:
    return zeros(np.shape(x), np.int16)


class DryRequant:
    """Requant's interface: int8/16/32 zeros of the accumulator's shape."""

    mult = shift = None

    def __init__(self, real=None):
        pass

    def take(self, idx) -> "DryRequant":
        return self

    @staticmethod
    def stack(rqs: list) -> "DryRequant":
        return DryRequant()

    def __call__(self, acc: np.ndarray, bits: int = 8) -> np.ndarray:
        return zeros(np.shape(acc), {8: np.int8, 16: np.int16, 32: np.int32}[bits])


_REAL = types.SimpleNamespace(K=kernels, Rq=Requant)
_DRY = types.SimpleNamespace(K=sys.modules[__name__], Rq=DryRequant)


def numerics(dry: bool) -> types.SimpleNamespace:
    """The kernels (`.K`: QWeight, matmul_i8, norms, softmax, ...) and requantizer class (`.Rq`)
    a chip computes with: the real ones, or this module's stand-ins for a dry run."""
    return _DRY if dry else _REAL
