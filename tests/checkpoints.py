"""Checkpoint files written by the tests: safetensors (the format's own layout, without the
package) and Hugging Face Llama folders."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

HF_NAMES = (("wq", "self_attn.q_proj"), ("wk", "self_attn.k_proj"), ("wv", "self_attn.v_proj"),
            ("wo", "self_attn.o_proj"), ("w1", "mlp.gate_proj"), ("w3", "mlp.up_proj"), ("w2", "mlp.down_proj"),
            ("attn_norm", "input_layernorm"), ("ffn_norm", "post_attention_layernorm"))


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), truncating."""
    return (np.ascontiguousarray(a, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def safetensors_bytes(t: dict, dtype: str = "F32") -> bytes:
    """header length, JSON header, data; F32 from floats, any other dtype from the raw array."""
    header, blobs, off = {}, [], 0
    for k, a in t.items():
        b = np.ascontiguousarray(a, np.float32).tobytes() if dtype == "F32" else np.ascontiguousarray(a).tobytes()
        header[k] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def hf_tensors(cfg, w: dict) -> dict:
    """Our tensors (tied embedding) under Hugging Face Llama names. HF rotates half-split
    pairs, we rotate adjacent pairs: a model saved this way is a different model, fine for
    tests that compare conversions with each other."""
    t = {"model.embed_tokens.weight": w["tok_embedding"], "model.norm.weight": w["final_norm"]}
    for l in range(cfg.n_layers):
        for ours, theirs in HF_NAMES:
            t[f"model.layers.{l}.{theirs}.weight"] = np.ascontiguousarray(w[f"layers.{l}.{ours}"])
    return t


def hf_config(cfg, **over) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cfg.dim,
            "intermediate_size": cfg.ffn_hidden, "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads, "vocab_size": cfg.vocab_size,
            "max_position_embeddings": cfg.context_len, "tie_word_embeddings": True, "hidden_act": "silu"} | over


def hf_llama_folder(folder: Path, cfg, w: dict, config_over: dict | None = None, dtype: str = "F32",
                    edit=None, config_text: str | None = None, raw: bytes | None = None) -> str:
    """A Hugging Face Llama folder (config.json + model.safetensors) of our tensors."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(config_text if config_text is not None
                                        else json.dumps(hf_config(cfg, **(config_over or {}))))
    if raw is None:
        t = hf_tensors(cfg, w)
        if edit:
            edit(t)
        if dtype == "BF16":
            t = {k: to_bf16_bits(v) for k, v in t.items()}
        raw = safetensors_bytes(t, dtype)
    (folder / "model.safetensors").write_bytes(raw)
    return str(folder)
