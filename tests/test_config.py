import pytest

from mcu_emul.config import (chip_from_dict, known_models, load_chip, load_model, load_topology,
                             model_from_dict, with_overrides)
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
    import tomllib
    from mcu_emul.config import DATA_DIR
    c = load_chip("siracusa")
    assert c.onchip_capacity_bytes == 6 * 2**20 and c.memory.l1_bytes == 256 * 1024
    assert c.compute.cluster_gemv_macs_per_cycle == 12.8 and c.dma.l2_l1_bytes_per_cycle == 8.0
    assert all(v.split(":")[0] in ("public", "public, fitted", "typical", "typical, fitted", "assumed") for v in c.origin.values())
    t = load_topology("siracusa-boards")
    assert t.group_sizes == (4,) and t.level(0, 3) == 0 and t.level(3, 4) == 1
    table = tomllib.loads((DATA_DIR / "hw/siracusa.toml").read_text())
    with pytest.raises(UserError, match="l2_bytes"):
        chip_from_dict(table | {"memory": table["memory"] | {"l2_bytes": -1}}, "x.toml")
    with pytest.raises(UserError, match="x.toml: unknown key.*cache"):
        chip_from_dict(table | {"cache": {}}, "x.toml")
    with pytest.raises(UserError, match=r"x.toml \[compute\]: unknown key.*turbo"):
        chip_from_dict(table | {"compute": table["compute"] | {"turbo": 1}}, "x.toml")
    origin = dict(table["origin"])
    del origin["compute.freq_hz"]
    with pytest.raises(UserError, match="no entry for compute.freq_hz"):
        chip_from_dict(table | {"origin": origin}, "x.toml")


def test_overrides():
    c, t = with_overrides(load_chip(), load_topology(), ["compute.freq_hz=2e8", "link.link_bytes_per_s=5e8"])
    assert c.compute.freq_hz == 2e8 and t.link_bytes_per_s == 5e8
    with pytest.raises(UserError, match="unknown key 'freq'"):
        with_overrides(load_chip(), load_topology(), ["compute.freq=1"])
    with pytest.raises(UserError, match="unknown section 'gpu'"):
        with_overrides(load_chip(), load_topology(), ["gpu.x=1"])
