import pytest

from mcu_emul.config import (ChipSpec, known_models, load_chip, load_model, load_topology,
                             model_from_dict)
from mcu_emul.errors import UserError


def test_shipped_models_load_with_paper_shapes():
    assert {"tinyllama-42m", "mobilebert", "tinyllama-scaled", "tinyllama-tiny", "mobilebert-tiny"} <= set(known_models())
    c = load_model("tinyllama-42m")
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.ffn_hidden, c.vocab_size, c.context_len) == \
        (512, 8, 8, 8, 1376, 32000, 1024)
    m = load_model("mobilebert")
    assert (m.hidden, m.bottleneck, m.n_layers, m.n_heads, m.intermediate, m.n_ffn, m.embedding_size,
            m.vocab_size, m.max_positions) == (512, 128, 24, 4, 512, 4, 128, 30522, 512)
    assert load_model("tinyllama-scaled").n_kv_heads >= 64


def test_unknown_model_lists_known():
    with pytest.raises(UserError, match="unknown model 'nope'.*tinyllama-42m"):
        load_model("nope")


def test_unknown_and_missing_keys_are_named(tmp_path):
    good = dict(name="x", arch="llama", dim=64, n_layers=1, n_heads=4, n_kv_heads=4, ffn_hidden=64,
                vocab_size=10, context_len=16)
    with pytest.raises(UserError, match="unknown key.*hidden_dim"):
        model_from_dict(good | {"hidden_dim": 3}, "f.toml")
    bad = dict(good)
    del bad["dim"]
    with pytest.raises(UserError, match="f.toml: missing key.*dim"):
        model_from_dict(bad, "f.toml")
    with pytest.raises(UserError, match="n_heads 5"):
        model_from_dict(good | {"n_heads": 5}, "f.toml")
    p = tmp_path / "m.toml"
    p.write_text('name = "m"\narch = "llama"\ndim = 64\nbogus = 1\n')
    with pytest.raises(UserError, match=f"{p}.*bogus"):
        load_model(str(p))


def test_chip_and_topology():
    c = load_chip("siracusa")
    assert c.onchip_capacity_bytes == 6 * 2**20 and c.l1_bytes == 256 * 1024
    assert load_topology("siracusa-boards").group_sizes == (4,)
    with pytest.raises(UserError, match="l2_bytes"):
        ChipSpec(name="x", l1_bytes=1, l2_bytes=-1, weight_mem_bytes=0)
