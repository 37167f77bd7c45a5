"""Static post-training quantization: int8 weights per output channel, integer multipliers."""
from __future__ import annotations

import numpy as np

MULT_BITS = 24  # requantization multipliers lie in [2^23, 2^24): 24-bit precision, int64-safe


def clamp(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """np.clip of an integer array, without np.clip's per-call overhead (on the small arrays of
    a chip's kernels, 18 us a call against 7 us here: a tenth of a chip's host time)."""
    return np.minimum(np.maximum(x, lo), hi)


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (row). w: float (out, in) -> (int8 (out, in), float32 (out,))."""
    w = np.asarray(w, np.float32)
    amax = np.maximum(w.max(axis=-1), -w.min(axis=-1))       # max |w| without a copy of w
    # a row below 1e-27 (denormals) is a zero row: its scale would leave float32's normal range
    scale = np.where(amax > 1e-27, amax / 127.0, 1.0).astype(np.float32)
    t = w / scale[..., None]                                  # one temporary, rounded in place
    np.rint(t, out=t)
    np.clip(t, -127, 127, out=t)
    return t.astype(np.int8), scale


def quantize_tensor(x: np.ndarray, scale: float, bits: int = 8) -> np.ndarray:
    """Float -> signed integer of `bits` at a per-tensor scale (symmetric, saturating)."""
    qmax = 2 ** (bits - 1) - 1
    dtype = np.int8 if bits == 8 else np.int16 if bits == 16 else np.int32
    return np.clip(np.rint(np.asarray(x, np.float64) / scale), -qmax, qmax).astype(dtype)


def scale_for(maxabs: float, bits: int = 8) -> float:
    """Per-tensor symmetric scale from a calibrated max-abs value."""
    maxabs = float(maxabs)
    return (maxabs if maxabs > 0 else 1.0) / (2 ** (bits - 1) - 1)


class ScaleMap:
    """Per-tensor int8 scales by site, from calibrated max-abs values."""

    def __init__(self, amax, bits: int = 8):
        self.amax, self.bits = amax, bits

    def __getitem__(self, site: str) -> float:
        return scale_for(self.amax[site], self.bits)


def multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """Integer (mult, shift) with mult / 2^shift ~= real, elementwise; mult carries the sign.

    |mult| in [2^23, 2^24) (or 0 for real == 0 or negligibly small), shift in [1, 62].
    """
    real = np.asarray(real, np.float64)
    frac, exp = np.frexp(np.abs(real))          # |real| = frac * 2^exp, frac in [0.5, 1)
    mult = np.rint(frac * 2.0 ** MULT_BITS).astype(np.int64)
    shift = (MULT_BITS - exp).astype(np.int64)
    carry = mult == 2 ** MULT_BITS
    mult = np.where(carry, mult // 2, mult)
    shift = np.where(carry, shift - 1, shift)
    if np.any((shift < 1) & (mult != 0)):
        raise ValueError(f"requantization multiplier too large: max {np.abs(real).max():g} >= 2^{MULT_BITS - 1}")
    tiny = shift > 62
    mult = np.where(tiny, 0, mult)
    shift = np.where(tiny, 1, shift)
    mult = np.where(real < 0, -mult, mult)
    return mult.astype(np.int64), shift.astype(np.int64)


class Requant:
    """A fixed requantization: out = clip(round_half_up(acc * real)) done as (acc*mult + 2^(s-1)) >> s."""

    __slots__ = ("mult", "shift", "half")

    def __init__(self, real):
        self.mult, self.shift = multiplier(real)
        self.half = np.left_shift(np.int64(1), self.shift - 1)

    @staticmethod
    def stack(rqs: list) -> "Requant":
        """Per-row requantizations of stacked rows (kernels.stack), one after the other."""
        if any(np.ndim(q.mult) != 1 for q in rqs):
            raise ValueError("Requant.stack: per-row requantizations only")
        r = Requant.__new__(Requant)
        r.mult, r.shift, r.half = (np.concatenate([getattr(q, a) for q in rqs]) for a in ("mult", "shift", "half"))
        return r

    def take(self, idx) -> "Requant":
        """The sub-requantization of rows `idx` (per-row multipliers)."""
        r = Requant.__new__(Requant)
        r.mult, r.shift, r.half = self.mult[idx], self.shift[idx], self.half[idx]
        return r

    def __call__(self, acc: np.ndarray, bits: int = 8) -> np.ndarray:
        acc = np.asarray(acc)
        if acc.dtype.kind not in "iu":
            raise TypeError(f"requant expects an integer accumulator, got dtype {acc.dtype}")
        y = (acc.astype(np.int64) * self.mult + self.half) >> self.shift
        qmax = 2 ** (bits - 1) - 1
        dtype = {8: np.int8, 16: np.int16, 32: np.int32}[bits]
        return clamp(y, -qmax - 1 if bits == 32 else -qmax, qmax).astype(dtype)
