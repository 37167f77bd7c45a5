"""Checkpoint import: llama2.c (legacy and version 1) and Hugging Face (Llama, MobileBERT)."""
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from checkpoints import hf_llama_folder, to_bf16_bits
from conftest import run_cli
from mcu_emul.config import load_model
from mcu_emul.files.weights import init_weights, write_weights


def write_llama2c(path, cfg, w, version=0, shared=True):
    L, D, F, V, T = cfg.n_layers, cfg.dim, cfg.ffn_hidden, cfg.vocab_size, cfg.context_len
    stack = lambda k: np.stack([w[f"layers.{l}.{k}"] for l in range(L)])   # noqa: E731
    hd = D // cfg.n_heads
    if version == 0:
        head = struct.pack("<7i", D, F, L, cfg.n_heads, cfg.n_kv_heads, V if shared else -V, T)
        parts = [w["tok_embedding"], stack("attn_norm"), stack("wq"), stack("wk"), stack("wv"), stack("wo"),
                 stack("ffn_norm"), stack("w1"), stack("w2"), stack("w3"), w["final_norm"],
                 np.zeros((T, hd // 2)), np.zeros((T, hd // 2))]
    else:
        head = struct.pack("<Ii7iB", 0x616B3432, 1, D, F, L, cfg.n_heads, cfg.n_kv_heads, V, T, int(shared))
        head += b"\0" * (256 - len(head))
        parts = [stack("attn_norm"), stack("ffn_norm"), w["final_norm"], w["tok_embedding"], stack("wq"),
                 stack("wk"), stack("wv"), stack("wo"), stack("w1"), stack("w2"), stack("w3")]
    if not shared:
        parts.append(w["lm_head"])
    with open(path, "wb") as f:
        f.write(head)
        for p in parts:
            f.write(np.asarray(p, np.float32).tobytes())


def sha(tmp_path, weights, *extra, name="r"):
    js = tmp_path / f"{name}.json"
    p = run_cli(["run", "--weights", weights, "--gen-tokens", "6", "--prompt-ids", "3,7", "--json", js, "--quiet",
                 *extra])
    assert p.returncode == 0, p.stderr
    return json.loads(js.read_text())


@pytest.mark.parametrize("version", [0, 1])
def test_llama2c_same_int8_outputs_as_hdf5(tmp_path, version):
    cfg = load_model("tinyllama-tiny")
    w = init_weights(cfg, 3)
    ref = write_weights(cfg, w, tmp_path / "ref.h5", seed=0)
    write_llama2c(tmp_path / "m.bin", cfg, w, version)
    p = run_cli(["convert", "--from", "llama2c", tmp_path / "m.bin", "--out", tmp_path / "conv.h5"])
    assert p.returncode == 0, p.stderr
    a = sha(tmp_path, ref, name="a")
    for n in ("1", "4"):
        b = sha(tmp_path, tmp_path / "conv.h5", "--chips", n, name="b" + n)
        assert (a["output_sha256"], a["token_ids"]) == (b["output_sha256"], b["token_ids"])


def test_llama2c_untied_classifier_and_errors(tmp_path):
    import dataclasses
    cfg = dataclasses.replace(load_model("tinyllama-tiny"), tie_embeddings=False)
    w = init_weights(cfg, 4)
    write_llama2c(tmp_path / "u.bin", cfg, w, 0, shared=False)
    p = run_cli(["convert", "--from", "llama2c", tmp_path / "u.bin", "--out", tmp_path / "u.h5"])
    assert p.returncode == 0, p.stderr
    r = sha(tmp_path, tmp_path / "u.h5", "--chips", "2", "--check-float")
    assert r["accuracy"]["logits_cosine_vs_float"] > 0.99
    (tmp_path / "bad.bin").write_bytes(struct.pack("<Ii", 0x616B3432, 2) + b"\0" * 300)
    p = run_cli(["convert", "--from", "llama2c", tmp_path / "bad.bin", "--out", tmp_path / "x.h5"])
    assert p.returncode == 2 and "version 2 is not supported" in p.stderr
    data = (tmp_path / "u.bin").read_bytes()
    (tmp_path / "t.bin").write_bytes(data[:-1000])
    p = run_cli(["convert", "--from", "llama2c", tmp_path / "t.bin", "--out", tmp_path / "x.h5"])
    assert p.returncode == 2 and "truncated" in p.stderr


def test_hf_unsupported_is_clear(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    p = run_cli(["convert", "--from", "hf", tmp_path, "--out", tmp_path / "x.h5"])
    assert p.returncode == 2 and "unsupported architecture 'GPT2LMHeadModel'" in p.stderr
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_act": "gelu"}))
    p = run_cli(["convert", "--from", "hf", tmp_path, "--out", tmp_path / "x.h5"])
    assert p.returncode == 2 and "hidden_act = 'gelu' is not supported" in p.stderr


def _cos(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def compare_runs(tmp_path, h5, extra, ref):
    """Run the converted file at 1 and 4 chips; yield (chips, per-row cosine, top-1) vs ref(ids)."""
    for n in ("1", "4"):
        r = sha(tmp_path, h5, "--chips", n, *extra, "--save-logits", tmp_path / f"o{n}.npy", name=f"c{n}")
        ours = np.load(tmp_path / f"o{n}.npy").astype(np.float64)
        want = ref(r["input_ids"]).astype(np.float64)
        yield n, _cos(ours, want), float(np.mean(ours.argmax(-1) == want.argmax(-1)))


def _hf_roundtrip(tmp_path, make_model, output, extra):
    """Save a random-init transformers model, convert it, run it at 1 and 4 chips; yield
    (chips, per-row cosine vs transformers, top-1 agreement)."""
    torch = pytest.importorskip("torch", reason="needs torch (pip install torch transformers)")
    transformers = pytest.importorskip("transformers", reason="needs transformers")
    torch.manual_seed(0)
    model = make_model(transformers).eval()
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    p = run_cli(["convert", "--from", "hf", tmp_path / "hf", "--out", tmp_path / "hf.h5"])
    assert p.returncode == 0, p.stderr

    def ref(ids):
        with torch.no_grad():
            return getattr(model(torch.tensor([ids])), output)[0].numpy()
    yield from compare_runs(tmp_path, tmp_path / "hf.h5", extra, ref)


@pytest.mark.parametrize("tied", [False, True])
def test_hf_llama_matches_transformers(tmp_path, tied):
    def make(tf):
        return tf.LlamaForCausalLM(tf.LlamaConfig(
            hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=8,
            num_key_value_heads=4, vocab_size=300, max_position_embeddings=64, tie_word_embeddings=tied))
    for n, cos, top1 in _hf_roundtrip(tmp_path, make, "logits", ["--gen-tokens", "16"]):
        print(f"HF Llama tied={tied} chips={n}: mean cosine {cos.mean():.4f}, top-1 agreement {top1:.2f}")
        assert len(cos) >= 16 and cos.mean() >= 0.99


def test_hf_mobilebert_matches_transformers(tmp_path):
    def make(tf):
        return tf.MobileBertModel(tf.MobileBertConfig(
            vocab_size=200, hidden_size=64, embedding_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, intra_bottleneck_size=32, true_hidden_size=32, max_position_embeddings=64))
    for n, cos, _ in _hf_roundtrip(tmp_path, make, "last_hidden_state", ["--seq-len", "32"]):
        print(f"HF MobileBERT chips={n}: mean hidden-state cosine {cos.mean():.4f}")
        assert cos.mean() >= 0.99


def test_text_in_text_out(tmp_path):
    tokenizers = pytest.importorskip("tokenizers", reason="text needs tokenizers (pip install -e '.[text]')")
    cfg = load_model("tinyllama-tiny")
    w = init_weights(cfg, 5)
    hf = Path(hf_llama_folder(tmp_path / "hf", cfg, w))
    vocab = {f"w{i}": i for i in range(cfg.vocab_size) if i not in (10, 11)} | {"hello": 10, "world": 11}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(hf / "tokenizer.json"))
    p = run_cli(["convert", "--from", "hf", hf, "--out", tmp_path / "t.h5", "--calib-text", "hello world hello"])
    assert p.returncode == 0, p.stderr
    assert "text through tokenizer.json" in p.stdout and "tokenizer stored" in p.stdout
    p = run_cli(["run", "--weights", tmp_path / "t.h5", "--prompt", "hello world", "--gen-tokens", "3",
                 "--chips", "2", "--json", tmp_path / "r.json"])
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["input_ids"][:2] == [10, 11]
    line = [ln for ln in p.stdout.splitlines() if ln.strip().startswith("text:")][0]
    assert line.strip().startswith("text: hello world") and len(line.split()) >= 4
    plain = write_weights(cfg, w, tmp_path / "plain.h5")          # no tokenizer stored
    p = run_cli(["run", "--weights", plain, "--prompt", "hi"])
    assert p.returncode == 2 and "has none" in p.stderr


def test_hf_bfloat16_and_rope_parameters(tmp_path):
    """A bfloat16 checkpoint converts exactly (same int8 file as its float32 values), and
    transformers 5's rope_parameters carry the RoPE base into the weights file."""
    cfg = load_model("tinyllama-tiny")
    w = {k: (to_bf16_bits(v).astype(np.uint32) << 16).view(np.float32) for k, v in init_weights(cfg, 6).items()}
    rope = {"rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}
    f32 = hf_llama_folder(tmp_path / "f32", cfg, w, rope)
    bf16 = hf_llama_folder(tmp_path / "bf16", cfg, w, rope, dtype="BF16")
    outs = {}
    for name, folder in (("f32", f32), ("bf16", bf16)):
        p = run_cli(["convert", "--from", "hf", folder, "--out", tmp_path / f"{name}.h5", "--name", "m"])
        assert p.returncode == 0, p.stderr
        outs[name] = sha(tmp_path, tmp_path / f"{name}.h5", name=name)
    assert outs["f32"]["output_sha256"] == outs["bf16"]["output_sha256"]
    import h5py
    with h5py.File(tmp_path / "bf16.h5") as f:
        assert json.loads(f.attrs["config"])["rope_theta"] == 500000.0
