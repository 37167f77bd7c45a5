"""Integer kernels of an int8 MCU: GEMV/GEMM (int32 acc), softmax, RMSNorm, NoNorm, SiLU, RoPE.

Every result equals integer arithmetic bit for bit. numpy has no integer BLAS, so products
are computed on float copies of the int8 values where that is provably exact: a float32 sum
of int8 x int8 products is exact while every partial sum stays below 2^24, i.e. for
reduction lengths K <= 1024 (1024 * 127 * 128 < 2^24); longer reductions are split into
chunks whose int32 results are added. Attention products use float64 (exact below 2^53).
"""
from __future__ import annotations

import math

import numpy as np

from .quant import clamp

F32_EXACT_K = 1024  # longest int8 x int8 reduction that float32 sums exactly


class KernelError(TypeError):
    """A kernel was handed an operand of the wrong dtype or shape."""


def _need(x: np.ndarray, dtype, name: str, kernel: str):
    if not isinstance(x, np.ndarray) or x.dtype != np.dtype(dtype):
        got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise KernelError(f"{kernel}: {name} must be {np.dtype(dtype).name}, got {got}")


class QWeight:
    """An int8 weight (out, in) with its float32 shadow (host-side speed-up, exact values)."""

    __slots__ = ("q", "f32", "_chunks", "shape")

    def __init__(self, q: np.ndarray):
        _need(q, np.int8, "weight", "QWeight")
        if q.ndim != 2:
            raise KernelError(f"QWeight: weight must be 2-D (out, in), got shape {q.shape}")
        self.q = q                                   # int8 (out, in), lives in the chip's arena
        self.f32 = q.astype(np.float32)              # float32 (out, in), host compute copy
        self.shape = q.shape
        self._chunks = _chunks(q.shape[1])

    @property
    def nbytes(self) -> int:
        return self.q.nbytes


def _chunks(k: int) -> list:
    n = -(-k // F32_EXACT_K) if k else 1
    bounds = np.linspace(0, k, n + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def stack(ws: list) -> QWeight:
    """Weights that take the same input, stacked by rows: one product for all of them (host
    side only: each keeps its own int8 buffer and its own cost). Their float32 shadows become
    views of the stack's, so the host holds them once."""
    if len({w.shape[1] for w in ws}) != 1:
        raise KernelError(f"stack: weights of different in-dims {[w.shape for w in ws]}")
    out = QWeight.__new__(QWeight)
    out.q, out.f32 = None, np.concatenate([w.f32 for w in ws])
    out.shape, out._chunks = out.f32.shape, ws[0]._chunks
    start = 0
    for w in ws:
        w.f32 = out.f32[start:start + w.shape[0]]
        start += w.shape[0]
    return out


def matmul_i8(x: np.ndarray, w: QWeight) -> np.ndarray:
    """Y = X W^T. x: int8 (K,) or (M, K); w: int8 (N, K) -> int32 (N,) or (M, N)."""
    _need(x, np.int8, "activation", "matmul_i8")
    if not isinstance(w, QWeight):
        raise KernelError(f"matmul_i8: weight must be a QWeight, got {type(w).__name__}")
    if x.shape[-1] != w.shape[1]:
        raise KernelError(f"matmul_i8: activation length {x.shape[-1]} != weight in-dim {w.shape[1]}")
    xf = x.astype(np.float32)
    out = None
    for a, b in w._chunks:
        part = (w.f32[:, a:b] @ xf[a:b]) if x.ndim == 1 else (xf[:, a:b] @ w.f32[:, a:b].T)
        part = part.astype(np.int32)
        out = part if out is None else out + part
    if out is None:
        out = np.zeros(x.shape[:-1] + (w.shape[0],), np.int32)
    return out


def matmul_i8_ref(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Reference Y = X W^T in int64 (slow, for tests)."""
    return x.astype(np.int64) @ w.astype(np.int64).T


def int_matmul_small(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact integer product of small operands (attention), via float64; int64 result."""
    if a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
        raise KernelError(f"int_matmul_small: integer operands required, got {a.dtype} and {b.dtype}")
    return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)


# --- softmax ---------------------------------------------------------------------------
SOFTMAX_ONE = 1 << 15            # probabilities are Q15 in uint16: 32768 == 1.0
_EXP2_LUT = np.array([round(SOFTMAX_ONE * 2.0 ** (-r / 256)) for r in range(256)], np.int64)


def softmax_i(scores: np.ndarray, mult: np.ndarray, shift: np.ndarray, mask=None) -> np.ndarray:
    """Integer softmax over the last axis. scores: int (.., n) at scale s; (mult, shift)
    encodes s*log2(e)*256 so that t = (x - max) in Q8 log2 units; exp2 from a 256-entry LUT.

    Returns uint16 Q15 (.., n); each row sums to within (2^15 - n, 2^15].
    """
    if scores.dtype.kind not in "iu":
        raise KernelError(f"softmax_i: scores must be integer, got {scores.dtype}")
    s = scores.astype(np.int64)
    if mask is not None:
        s = np.where(mask, s, np.iinfo(np.int64).min // 4)
    d = s - s.max(axis=-1, keepdims=True)                         # <= 0
    d = np.maximum(d, -(1 << 38))                                  # keep d*mult in int64
    t = -((d * mult + (np.int64(1) << (shift - 1))) >> shift)     # >= 0, Q8 of -log2
    t = np.minimum(t, 31 * 256)
    e = _EXP2_LUT[t & 255] >> (t >> 8)                             # Q15, max element -> 32768
    if mask is not None:
        e = np.where(mask, e, 0)
    total = e.sum(axis=-1, keepdims=True)
    return ((e << 15) // total).astype(np.uint16)


# --- norms -----------------------------------------------------------------------------
RMS_FRAC = 12


def rmsnorm_gain(gain: np.ndarray, s_out: float) -> np.ndarray:
    """Integer gains G for rmsnorm_i: G = round(g / s_out * 2^(8 + RMS_FRAC))."""
    return np.rint(np.asarray(gain, np.float64) / s_out * 2.0 ** (8 + RMS_FRAC)).astype(np.int64)


def rmsnorm_i(x: np.ndarray, gain_int: np.ndarray, eps_int: int) -> np.ndarray:
    """y = x * g / sqrt(mean(x^2) + eps), int16 in -> int8 out.

    r = isqrt((sum(x^2)//n + eps_int) << 16) = sqrt(ms)*2^8; y = round(x*G / (r*2^RMS_FRAC)).
    sum(x^2) is summed in float64, exact: every partial sum is an integer below 2^53 (n < 2^22
    int16 squares); the square root of each row is math.isqrt (exact, and one row per decode step).
    """
    _need(x, np.int16, "x", "rmsnorm_i")
    n = x.shape[-1]
    if n >= 1 << 22:
        raise KernelError(f"rmsnorm_i: rows of {n} values are too long to sum exactly")
    xf = x.astype(np.float64)
    xi = x.astype(np.int64)
    if x.ndim == 1:                           # one row: Python ints
        r = max(math.isqrt((int(xf @ xf) // n + eps_int) << 16), 1) << RMS_FRAC
        y = (xi * gain_int + r // 2) // r
    else:
        ss = np.einsum("...i,...i->...", xf, xf)
        r = np.array([max(math.isqrt((int(v) // n + eps_int) << 16), 1) << RMS_FRAC for v in np.ravel(ss).tolist()],
                     np.int64).reshape(x.shape[:-1] + (1,))
        y = (xi * gain_int + r // 2) // r
    return clamp(y, -127, 127).astype(np.int8)


# --- activations -----------------------------------------------------------------------
def silu_lut(s_in: float, s_out: float) -> np.ndarray:
    """int16 table of silu(v * s_in) / s_out for v in [-128, 127], indexed by v + 128."""
    v = np.arange(-128, 128, dtype=np.float64) * s_in
    y = v / (1.0 + np.exp(-v))
    return np.clip(np.rint(y / s_out), -32767, 32767).astype(np.int16)


def lut8(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Apply a 256-entry table to int8 values."""
    _need(x, np.int8, "x", "lut8")
    return table[x.astype(np.int16) + 128]


# --- RoPE ------------------------------------------------------------------------------
ROPE_FRAC = 14


def rope_tables(head_dim: int, n_pos: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Q14 cos/sin (n_pos, head_dim/2) for llama2.c's adjacent-pair rotation."""
    freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = np.arange(n_pos, dtype=np.float64)[:, None] * freq[None, :]
    one = 1 << ROPE_FRAC
    return (np.rint(np.cos(ang) * one).astype(np.int64), np.rint(np.sin(ang) * one).astype(np.int64))


def rope_i(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate adjacent pairs of int8 x (.., heads, head_dim) by Q14 cos/sin (head_dim/2,)."""
    _need(x, np.int8, "x", "rope_i")
    x0 = x[..., 0::2].astype(np.int64)
    x1 = x[..., 1::2].astype(np.int64)
    half = 1 << (ROPE_FRAC - 1)
    y = np.empty(x.shape, np.int64)
    y[..., 0::2] = (x0 * cos - x1 * sin + half) >> ROPE_FRAC
    y[..., 1::2] = (x0 * sin + x1 * cos + half) >> ROPE_FRAC
    return clamp(y, -127, 127).astype(np.int8)


def sat16(x: np.ndarray) -> np.ndarray:
    """Saturate to the int16 residual stream."""
    return clamp(x, -32767, 32767).astype(np.int16)
