import pytest

from mcu_emul.hardware.placement import chip_specs, footprint, min_chips_fitting
from mcu_emul.config import load_model
from mcu_emul.errors import UserError
from mcu_emul.models.layout import totals
from mcu_emul.models.partition import SIMD_ALIGN, plan, split
from mcu_emul.files.weights import tensor_shapes


@pytest.mark.parametrize("n,parts,align", [(8, 3, 1), (1376, 5, 4), (1376, 8, 4), (10, 4, 4), (3, 5, 1), (512, 3, 4)])
def test_split_balanced_aligned_covering(n, parts, align):
    s = split(n, parts, align)
    assert s[0][0] == 0 and s[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(s, s[1:]))
    assert all(a % align == 0 or a == n for a, _ in s)
    sizes = [b - a for a, b in s]
    assert max(sizes) - min(sizes) <= align


def model_weight_bytes(cfg):
    return sum(int(__import__("numpy").prod(s)) for s in tensor_shapes(cfg).values() if len(s) == 2)


@pytest.mark.parametrize("model", ["tinyllama-42m", "mobilebert", "tinyllama-tiny-gqa", "tinyllama-scaled"])
def test_every_weight_byte_owned_once(model):
    cfg = load_model(model)
    for n in sorted({1, 2, 3, cfg.max_chips // 2 or 1, cfg.max_chips}):
        specs = chip_specs(cfg, n, 64)
        total = sum(totals(s)["weights"] for s in specs)
        if model != "mobilebert":
            assert total == model_weight_bytes(cfg), n
        else:   # MobileBERT holds only the positions it uses (64 of 512)
            assert total == model_weight_bytes(cfg) - (cfg.max_positions - 64) * cfg.hidden
        # no matrix slice is held by two chips: (dataset, rows, cols) ranges are disjoint
        seen = {}
        for s in (x for chip in specs for x in chip if x.category == "weights"):
            seen.setdefault(s.dataset, []).append((s.rows, s.cols))
        for ds, parts in seen.items():
            assert len(parts) == len(set(parts)), ds


def test_more_chips_than_heads_is_clear_error():
    with pytest.raises(UserError, match="9 chips > 8 KV heads of model 'tinyllama-42m'"):
        plan(load_model("tinyllama-42m"), 9)
    with pytest.raises(UserError, match="5 chips > 4 heads"):
        plan(load_model("mobilebert"), 5)


def test_ffn_slices_simd_aligned():
    for sl in plan(load_model("tinyllama-42m"), 5):
        assert sl.ffn[0] % SIMD_ALIGN == 0


def test_memory_arithmetic_matches_paper():
    cfg = load_model("tinyllama-42m")
    cap = 6 * 2**20
    per_chip = {n: max(f["weights"] for f in footprint(cfg, n, 64)) for n in (1, 2, 4, 8)}
    # block weights 25.3 MB / N plus embedding 16.4 MB / N
    for n, v in per_chip.items():
        assert abs(v - 41_680_896 / n) <= 41_680_896 * 0.01
    from mcu_emul.config import load_chip
    assert min_chips_fitting(cfg, 64, load_chip()) == 8
    assert max(sum(f.values()) for f in footprint(cfg, 8, 64)) <= cap
