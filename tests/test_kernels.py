import math
import numpy as np
import pytest

from mcu_emul.numerics import kernels as K
from mcu_emul.numerics.quant import Requant, multiplier, quantize_rows


@pytest.mark.parametrize("m,n,k", [(1, 7, 3), (1, 512, 512), (1, 512, 1376), (5, 13, 1025),
                                   (3, 17, 2049), (1, 1, 1), (128, 128, 512), (2, 64, 1024)])
def test_matmul_exact_vs_int64(m, n, k):
    rng = np.random.default_rng(k * 7 + n)
    # worst case magnitudes: every product +-127*128 with the same sign
    w = rng.choice(np.array([-127, 127], np.int8), (n, k))
    x = np.where(w[0] > 0, 127, -128).astype(np.int8) if n else rng.integers(-128, 128, k).astype(np.int8)
    x2 = rng.integers(-128, 128, (m, k)).astype(np.int8)
    qw = K.QWeight(w)
    assert np.array_equal(K.matmul_i8(x, qw), K.matmul_i8_ref(x[None], w)[0])
    assert np.array_equal(K.matmul_i8(x2, qw), K.matmul_i8_ref(x2, w))
    assert K.matmul_i8(x2, qw).dtype == np.int32


def test_kernels_reject_wrong_dtypes():
    w = K.QWeight(np.ones((4, 8), np.int8))
    with pytest.raises(K.KernelError, match="activation must be int8, got int16"):
        K.matmul_i8(np.ones(8, np.int16), w)
    with pytest.raises(K.KernelError, match="weight must be int8, got float32"):
        K.QWeight(np.ones((4, 8), np.float32))
    with pytest.raises(K.KernelError, match="length 7 != weight in-dim 8"):
        K.matmul_i8(np.ones(7, np.int8), w)
    with pytest.raises(K.KernelError, match="x must be int16"):
        K.rmsnorm_i(np.ones(8, np.int8), np.ones(8, np.int64), 1)
    with pytest.raises(K.KernelError, match="scores must be integer"):
        K.softmax_i(np.ones(8, np.float32), np.int64(1 << 23), np.int64(20))
    with pytest.raises(K.KernelError, match="x must be int8"):
        K.rope_i(np.ones((2, 4), np.int32), np.ones(2, np.int64), np.ones(2, np.int64))
    with pytest.raises(TypeError, match="integer accumulator"):
        Requant(0.5)(np.ones(3, np.float32))


def test_requant_matches_round_half_up_rule():
    rng = np.random.default_rng(1)
    acc = rng.integers(-(2**31), 2**31, 2000)
    for real in (0.0123, 1.7e-4, 0.5, 3.3, -0.21):
        rq = Requant(real)
        m, s = int(rq.mult), int(rq.shift)
        assert abs(m / 2**s - real) <= abs(real) * 2**-23
        got = rq(acc, 32)
        # reference: floor(acc * m / 2^s + 1/2) with Python integers, saturated
        ref = [max(-(2**31), min(2**31 - 1, (int(a) * m + (1 << (s - 1))) >> s)) for a in acc]
        assert got.tolist() == ref
        assert np.max(np.abs(got.astype(np.float64) - np.clip(acc * real, -(2**31), 2**31 - 1))) <= 1 + 2**31 * 2**-22


def test_multiplier_signs_and_zero():
    m, s = multiplier(np.array([0.0, -0.5, 1e-30]))
    assert m[0] == 0 and m[1] < 0 and m[2] == 0


def test_softmax_rows_sum_to_one_within_bound():
    rng = np.random.default_rng(2)
    for n in (1, 2, 7, 128, 1024):
        s = rng.integers(-5000, 5000, (6, n))
        mult, shift = multiplier(0.01 * 1.4427 * 256)
        p = K.softmax_i(s, mult, shift)
        assert p.dtype == np.uint16
        tot = p.astype(np.int64).sum(-1)
        assert np.all(tot <= K.SOFTMAX_ONE) and np.all(tot > K.SOFTMAX_ONE - n)
        ref = np.exp(0.01 * (s - s.max(-1, keepdims=True)))
        ref /= ref.sum(-1, keepdims=True)
        assert np.max(np.abs(p / K.SOFTMAX_ONE - ref)) < 0.01


def test_rmsnorm_close_to_float():
    rng = np.random.default_rng(3)
    x = rng.integers(-20000, 20000, (4, 512)).astype(np.int16)
    g = rng.uniform(0.5, 1.5, 512)
    s_out = 4.0 / 127
    y = K.rmsnorm_i(x, K.rmsnorm_gain(g, s_out), 1)
    xf = x.astype(np.float64)
    ref = xf / np.sqrt((xf ** 2).mean(-1, keepdims=True)) * g / s_out
    assert np.max(np.abs(y - np.clip(ref, -127, 127))) <= 1.01


def test_rmsnorm_equals_python_integer_arithmetic():
    """The float64 sum of squares and math.isqrt give the integer definition bit for bit, also
    at the int16 extremes, long rows and several rows (prefill)."""
    rng = np.random.default_rng(5)
    rows = [np.full(4096, 32767), np.full(4096, -32767), rng.integers(-32767, 32768, 2048),
            rng.integers(-3, 4, 512), np.zeros(64, np.int64)]
    for x in rows:
        x = x.astype(np.int16)
        gain = rng.integers(1, 1 << 27, x.size)
        for eps in (1, 12345):
            n = x.size
            r = max(math.isqrt((sum(int(v) * int(v) for v in x) // n + eps) << 16), 1) << K.RMS_FRAC
            want = [min(127, max(-127, (int(v) * int(g) + r // 2) // r)) for v, g in zip(x, gain)]
            assert K.rmsnorm_i(x, gain, eps).tolist() == want
            assert K.rmsnorm_i(np.stack([x, x[::-1]]), gain, eps)[0].tolist() == want


def test_rope_rotates_like_float():
    cos, sin = K.rope_tables(8, 16, 10000.0)
    x = np.array([[100, -50, 30, 20, -127, 127, 5, 0]], np.int8)
    y = K.rope_i(x, cos[9], sin[9])
    from mcu_emul.numerics.reference import rope_f
    ref = rope_f(x.astype(np.float32), 9, 10000.0)
    assert np.max(np.abs(y - np.clip(np.rint(ref), -127, 127))) <= 1


def test_quantize_rows_roundtrip():
    w = np.random.default_rng(4).standard_normal((16, 33)).astype(np.float32)
    q, s = quantize_rows(w)
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    assert np.max(np.abs(q * s[:, None] - w)) <= s.max() / 2 + 1e-7
