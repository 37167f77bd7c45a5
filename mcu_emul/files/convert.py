"""Import real checkpoints into the HDF5 weights format (quantizing and calibrating on the way).

- Hugging Face folders (config.json + *.safetensors in float32, float16 or bfloat16):
  LlamaForCausalLM (any dims, grouped-query attention, tied or separate lm_head; RoPE from
  `rope_theta` or transformers 5's `rope_parameters`, default rope type only) and
  MobileBertModel / MobileBert* heads (the encoder is taken). What the emulator cannot
  reproduce exactly (RoPE scaling, a head_dim other than hidden/heads, biases) is refused by name.
- llama2.c checkpoints: the legacy float layout (7-int header) and the versioned header
  (magic "ak42", version 1 = float32). Version 2 (Q8_0) is refused with a clear message.

HF Llama applies RoPE to the two halves of each head (rotate_half); llama2.c and mcu_emul
rotate adjacent pairs. Interleaving each head's Q and K rows (row i and row i + hd/2 become
rows 2i and 2i+1) makes the two identical: scores are unchanged and each pair keeps its
frequency.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from ..config import LlamaConfig, MobileBertConfig
from ..errors import UserError

LLAMA2C_MAGIC = 0x616B3432


def _need(cond, msg):
    if not cond:
        raise UserError(msg)


def _read_safetensors(folder: Path) -> dict:
    from .safetensors_np import read_floats
    files = sorted(folder.glob("*.safetensors"))
    _need(files, f"{folder}: no *.safetensors file (save the model with safe_serialization=True)")
    out = {}
    for f in files:
        out |= read_floats(f)
    return out


def _interleave_heads(w: np.ndarray, n_heads: int) -> np.ndarray:
    """(n_heads*hd, in) rows [h: first half, second half] -> adjacent pairs."""
    if w.ndim != 2 or w.shape[0] % n_heads or (w.shape[0] // n_heads) % 2:
        raise ValueError(f"a projection of shape {list(w.shape)} for {n_heads} heads")
    hd = w.shape[0] // n_heads
    w = w.reshape(n_heads, 2, hd // 2, -1)          # (head, half, i, in)
    return w.transpose(0, 2, 1, 3).reshape(n_heads * hd, -1)


LLAMA_KEYS_OK = {"hidden_act": ("silu",), "model_type": ("llama",)}


def rope_theta_of(c: dict, where: str) -> float:
    """RoPE base from config.json: transformers 5's `rope_parameters` or the older top-level
    `rope_theta` / `rope_scaling`; any scaling (linear, dynamic, yarn, llama3, ...) is refused,
    since mcu_emul's integer RoPE implements the default rotation only."""
    rp = c.get("rope_parameters")
    top = c.get("rope_theta")
    scaling = c.get("rope_scaling")
    if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) in ("default", None) \
            and set(scaling) <= {"rope_type", "type", "rope_theta"}:
        scaling = None
    if scaling:
        raise UserError(f"{where}: rope_scaling = {scaling!r} is not supported (default RoPE only)")
    if rp is None:
        return 10000.0 if top is None else top
    if not isinstance(rp, dict):
        raise UserError(f"{where}: rope_parameters must be an object, got {rp!r}")
    kind = rp.get("rope_type", rp.get("type", "default"))
    if kind != "default":
        raise UserError(f"{where}: rope_parameters.rope_type = {kind!r} is not supported (default RoPE only: "
                        "mcu_emul would not reproduce the checkpoint)")
    extra = {k: v for k, v in rp.items() if k not in ("rope_type", "type", "rope_theta")
             and not (k == "partial_rotary_factor" and v == 1.0)}
    if extra:
        raise UserError(f"{where}: rope_parameters {', '.join(f'{k} = {v!r}' for k, v in extra.items())} "
                        "not supported (default RoPE only)")
    theta = rp.get("rope_theta", 10000.0 if top is None else top)
    if top is not None and top != theta:
        raise UserError(f"{where}: rope_theta = {top!r} and rope_parameters.rope_theta = {theta!r} disagree")
    return theta


def hf_llama(folder: Path, cfg_json: dict, name: str) -> tuple[LlamaConfig, dict]:
    where = f"{folder}/config.json"
    for k, ok in LLAMA_KEYS_OK.items():
        if k in cfg_json and cfg_json[k] not in ok:
            raise UserError(f"{where}: {k} = {cfg_json[k]!r} is not supported (supported: {ok})")
    for k in ("attention_bias", "mlp_bias"):
        if cfg_json.get(k):
            raise UserError(f"{where}: {k} = {cfg_json[k]!r} is not supported")
    D, H = cfg_json["hidden_size"], cfg_json["num_attention_heads"]
    KV = cfg_json.get("num_key_value_heads", H)
    if KV is None:
        KV = H
    theta = rope_theta_of(cfg_json, where)
    try:
        cfg = LlamaConfig(name=name, arch="llama", dim=D, n_layers=cfg_json["num_hidden_layers"], n_heads=H,
                          n_kv_heads=KV, ffn_hidden=cfg_json["intermediate_size"], vocab_size=cfg_json["vocab_size"],
                          context_len=cfg_json.get("max_position_embeddings", 2048),
                          norm_eps=cfg_json.get("rms_norm_eps", 1e-6), rope_theta=theta,
                          tie_embeddings=cfg_json.get("tie_word_embeddings", False),
                          note=f"converted from Hugging Face {folder.name}")
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    hd = cfg_json.get("head_dim")
    if hd is not None and hd != cfg.head_dim:
        raise UserError(f"{where}: head_dim = {hd!r} differs from hidden_size / num_attention_heads = "
                        f"{cfg.head_dim}; mcu_emul supports head_dim = hidden_size / heads only")
    t = _read_safetensors(folder)
    pre = "model." if "model.embed_tokens.weight" in t else ""
    g = lambda k: t[pre + k]                       # noqa: E731
    w = {"tok_embedding": g("embed_tokens.weight"), "final_norm": g("norm.weight")}
    for l in range(cfg.n_layers):
        p, q = f"layers.{l}.", f"layers.{l}."
        w[p + "wq"] = _interleave_heads(g(q + "self_attn.q_proj.weight"), H)
        w[p + "wk"] = _interleave_heads(g(q + "self_attn.k_proj.weight"), KV)
        w[p + "wv"] = g(q + "self_attn.v_proj.weight")
        w[p + "wo"] = g(q + "self_attn.o_proj.weight")
        w[p + "w1"] = g(q + "mlp.gate_proj.weight")
        w[p + "w3"] = g(q + "mlp.up_proj.weight")
        w[p + "w2"] = g(q + "mlp.down_proj.weight")
        w[p + "attn_norm"] = g(q + "input_layernorm.weight")
        w[p + "ffn_norm"] = g(q + "post_attention_layernorm.weight")
    if not cfg.tie_embeddings:
        w["lm_head"] = t["lm_head.weight"]
    return cfg, w


MB_REQUIRED = {"normalization_type": "no_norm", "hidden_act": "relu", "key_query_shared_bottleneck": True,
               "use_bottleneck": True, "use_bottleneck_attention": False, "trigram_input": True,
               "classifier_activation": None}


def hf_mobilebert(folder: Path, c: dict, name: str) -> tuple[MobileBertConfig, dict]:
    for k, v in MB_REQUIRED.items():
        if v is not None and k in c and c[k] != v:
            raise UserError(f"{folder}/config.json: {k} = {c[k]!r} is not supported (mcu_emul needs {v!r})")
    try:
        cfg = MobileBertConfig(name=name, arch="mobilebert", hidden=c["hidden_size"],
                               bottleneck=c["intra_bottleneck_size"], n_layers=c["num_hidden_layers"],
                               n_heads=c["num_attention_heads"], intermediate=c["intermediate_size"],
                               n_ffn=c.get("num_feedforward_networks", 4), embedding_size=c["embedding_size"],
                               vocab_size=c["vocab_size"], max_positions=c["max_position_embeddings"],
                               type_vocab_size=c.get("type_vocab_size", 2),
                               note=f"converted from Hugging Face {folder.name}")
    except UserError as e:
        raise UserError(f"{folder}/config.json: {e}") from None
    t = _read_safetensors(folder)
    pre = "mobilebert." if "mobilebert.embeddings.word_embeddings.weight" in t else ""
    g = lambda k: t[pre + k]                       # noqa: E731
    e = "embeddings."
    w = {"word_emb": g(e + "word_embeddings.weight"),
         "emb_transform.w": g(e + "embedding_transformation.weight"),
         "emb_transform.b": g(e + "embedding_transformation.bias"),
         "pos_emb": g(e + "position_embeddings.weight"), "type_emb": g(e + "token_type_embeddings.weight"),
         "emb_norm.w": g(e + "LayerNorm.weight"), "emb_norm.b": g(e + "LayerNorm.bias")}

    def lin(ours, theirs):
        w[ours + ".w"], w[ours + ".b"] = g(theirs + ".weight"), g(theirs + ".bias")
    for l in range(cfg.n_layers):
        p, q = f"layers.{l}.", f"encoder.layer.{l}."
        lin(p + "bn_in", q + "bottleneck.input.dense")
        lin(p + "bn_in_norm", q + "bottleneck.input.LayerNorm")
        lin(p + "bn_att", q + "bottleneck.attention.dense")
        lin(p + "bn_att_norm", q + "bottleneck.attention.LayerNorm")
        lin(p + "q", q + "attention.self.query")
        lin(p + "k", q + "attention.self.key")
        lin(p + "v", q + "attention.self.value")
        lin(p + "att_out", q + "attention.output.dense")
        lin(p + "att_norm", q + "attention.output.LayerNorm")
        for f in range(cfg.n_ffn - 1):
            lin(f"{p}ffn{f}.in", f"{q}ffn.{f}.intermediate.dense")
            lin(f"{p}ffn{f}.out", f"{q}ffn.{f}.output.dense")
            lin(f"{p}ffn{f}.norm", f"{q}ffn.{f}.output.LayerNorm")
        last = f"{p}ffn{cfg.n_ffn - 1}."
        lin(last + "in", q + "intermediate.dense")
        lin(last + "out", q + "output.dense")
        lin(last + "norm", q + "output.LayerNorm")
        lin(p + "out_bn", q + "output.bottleneck.dense")
        lin(p + "out_norm", q + "output.bottleneck.LayerNorm")
    return cfg, w


def from_hf(folder, name: str | None = None):
    folder = Path(folder)
    cj = folder / "config.json"
    _need(folder.is_dir(), f"{folder}: not a folder (expected a Hugging Face model folder)")
    _need(cj.is_file(), f"{folder}: no config.json (expected a Hugging Face model folder)")
    try:
        c = json.loads(cj.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{cj}: not valid JSON ({type(e).__name__}: {e})") from None
    _need(isinstance(c, dict), f"{cj}: expected a JSON object")
    archs = c.get("architectures") or [""]
    arch = archs[0] if isinstance(archs, list) and isinstance(archs[0], str) else ""
    mt = c.get("model_type", "")
    name = folder.resolve().name if name is None else name
    try:
        if mt == "llama" or arch.startswith("Llama"):
            return hf_llama(folder, c, name)
        if mt == "mobilebert" or arch.startswith("MobileBert"):
            return hf_mobilebert(folder, c, name)
    except KeyError as e:
        raise UserError(f"{folder}: missing config key or tensor {e}") from None
    except ValueError as e:                      # a tensor whose shape contradicts config.json
        raise UserError(f"{folder}: tensors do not match config.json ({e})") from None
    raise UserError(f"{folder}/config.json: unsupported architecture {arch or mt!r} "
                    "(supported: LlamaForCausalLM, MobileBert*)")


def from_llama2c(path, name: str | None = None):
    """llama2.c checkpoint: legacy (7 x int32 header) or versioned (magic 'ak42', version 1)."""
    path = Path(path)
    _need(path.is_file(), f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    _need(len(data) >= 28, f"{path}: too short for a llama2.c checkpoint ({len(data)} B)")
    magic = struct.unpack_from("<I", data, 0)[0]
    if magic == LLAMA2C_MAGIC:
        version = struct.unpack_from("<i", data, 4)[0]
        _need(version == 1, f"{path}: llama2.c format version {version} is not supported (only 1, float32; "
                            "version 2 is Q8_0)")
        dim, hidden, L, H, KV, V, T = struct.unpack_from("<7i", data, 8)
        shared = struct.unpack_from("<B", data, 36)[0] == 1
        off, legacy = 256, False
    else:
        dim, hidden, L, H, KV, V, T = struct.unpack_from("<7i", data, 0)
        shared, V = V > 0, abs(V)
        off, legacy = 28, True
    _need(min(dim, hidden, L, H, KV, V, T) > 0 and dim % H == 0,
          f"{path}: not a llama2.c checkpoint (header dim={dim} hidden={hidden} layers={L} heads={H})")
    try:
        cfg = LlamaConfig(name=path.stem if name is None else name, arch="llama", dim=dim, n_layers=L, n_heads=H, n_kv_heads=KV,
                          ffn_hidden=hidden, vocab_size=V, context_len=T, norm_eps=1e-5, tie_embeddings=shared,
                          note=f"converted from llama2.c {path.name} ({'legacy' if legacy else 'version 1'})")
    except UserError as e:
        raise UserError(f"{path}: header: {e}") from None
    _need((len(data) - off) % 4 == 0, f"{path}: {len(data) - off} B of tensors is not a whole number of float32")
    f = np.frombuffer(data, np.float32, offset=off)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        _need(pos + n <= f.size, f"{path}: truncated ({f.size * 4 + off} B; needs more for shape {shape})")
        a = f[pos:pos + n].reshape(shape).copy()
        pos += n
        return a
    hd, kvd = dim // H, KV * dim // H
    w = {}
    if legacy:
        w["tok_embedding"] = take(V, dim)
        att_norm = take(L, dim)
    else:
        att_norm = take(L, dim)
    if not legacy:
        ffn_norm, final = take(L, dim), take(dim)
        w["tok_embedding"] = take(V, dim)
    wq, wk, wv, wo = take(L, dim, dim), take(L, kvd, dim), take(L, kvd, dim), take(L, dim, dim)
    if legacy:
        ffn_norm = take(L, dim)
    w1, w2, w3 = take(L, hidden, dim), take(L, dim, hidden), take(L, hidden, dim)
    if legacy:
        final = take(dim)
        take(T, hd // 2), take(T, hd // 2)                 # freq_cis_real / imag (unused)
    if not shared:
        w["lm_head"] = take(V, dim)
    _need(pos == f.size, f"{path}: {4 * (f.size - pos)} B left over after the tensors: wrong header?")
    for l in range(L):
        p = f"layers.{l}."
        w |= {p + "wq": wq[l], p + "wk": wk[l], p + "wv": wv[l], p + "wo": wo[l], p + "w1": w1[l],
              p + "w2": w2[l], p + "w3": w3[l], p + "attn_norm": att_norm[l], p + "ffn_norm": ffn_norm[l]}
    w["final_norm"] = final
    return cfg, w


def tokenizer_json(folder: Path | None) -> str | None:
    """The folder's tokenizer.json text, if any (stored in the weights file for --prompt)."""
    tj = folder / "tokenizer.json" if folder else None
    if tj is None or not tj.is_file():
        return None
    try:
        text = tj.read_text()
        json.loads(text)
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"cannot read {tj} as JSON: {e}") from None
    try:
        from .tokenizer import Tokenizer
        Tokenizer.from_json(text)
    except UserError as e:
        if "needs the tokenizers package" not in str(e):
            raise UserError(f"{tj}: {e}") from None
    return text


def calibration_ids(cfg, seed: int, folder: Path | None, ids: list[int] | None, text: str | None):
    """(sequences of ids, how they were chosen): given ids, else text through the folder's
    tokenizer, else the seeded random ids of weights.calibration_inputs."""
    from .weights import calibration_doc, calibration_inputs
    max_len = cfg.context_len if isinstance(cfg, LlamaConfig) else cfg.max_positions
    _need(ids is None or text is None, "give --calib-ids or --calib-text, not both")
    if ids is not None:
        _need(len(ids) > 0, "--calib-ids is empty: give at least one token id")
        bad = [i for i in ids if not 0 <= i < cfg.vocab_size]
        _need(not bad, f"--calib-ids: id {bad[0] if bad else ''} outside the vocabulary 0..{cfg.vocab_size - 1}")
        _need(len(ids) <= max_len, f"--calib-ids: {len(ids)} ids, more than the {max_len} positions of the model")
        return [np.asarray(ids)], f"given token ids ({len(ids)})"
    if text is not None:
        _need(text.strip() != "", "--calib-text is empty")
        tok = folder / "tokenizer.json" if folder else None
        _need(tok is not None and tok.is_file(),
              f"--calib-text needs a tokenizer.json in the model folder ({folder or 'llama2.c files have none'})")
        from .tokenizer import Tokenizer
        seq = Tokenizer.from_json(tokenizer_json(folder)).encode(text)
        _need(0 < len(seq) <= max_len, f"--calib-text: {len(seq)} tokens; the model takes 1 to {max_len}")
        return [np.asarray(seq)], f"text through {tok.name} ({len(seq)} tokens)"
    return calibration_inputs(cfg, seed), calibration_doc(seed)
