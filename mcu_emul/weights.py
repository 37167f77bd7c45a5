"""Weights: deterministic generation, int8 quantization, calibration, and the HDF5 file.

File layout (format_version 1): root attrs `format` = "mcu_emul.weights", `format_version`,
`model` (name), `config` (JSON of the model config), `seed`, `init`, `calibration`.
- `t/NAME`        int8 (out, in) for matrices, rows = output channels, per-row scale in
                  `t/NAME.scale` float32 (out,); float32 for small vectors (norms, biases).
- `act_maxabs`    group whose attrs map each activation site to its calibrated max |x|.
- `float/NAME`    optional float32 originals (the reference model for --check-float).
A chip reads only its slices with hyperslabs (`ds[a:b, :]` or `ds[:, a:b]`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from .config import LlamaConfig, ModelConfig, config_to_dict, load_model, model_from_dict
from .errors import UserError
from .quant import quantize_rows
from .reference import LlamaRef, mobilebert_f

FORMAT = "mcu_emul.weights"
FORMAT_VERSION = 1
INIT_DOC = ("normal(0, 0.02) matrices, residual projections scaled by 1/sqrt(2*n_layers); "
            "norm gains 1 (Llama) or 1 + normal(0, 0.05) (NoNorm); biases normal(0, 0.02)")
CALIB_SEQS = 2


def tensor_shapes(cfg: ModelConfig) -> dict[str, tuple]:
    """name -> shape; 2-D entries are int8 matrices, 1-D entries are float vectors."""
    s = {}
    if isinstance(cfg, LlamaConfig):
        D, F, KV = cfg.dim, cfg.ffn_hidden, cfg.n_kv_heads * cfg.head_dim
        s["tok_embedding"] = (cfg.vocab_size, D)
        for l in range(cfg.n_layers):
            p = f"layers.{l}."
            s |= {p + "attn_norm": (D,), p + "wq": (D, D), p + "wk": (KV, D), p + "wv": (KV, D),
                  p + "wo": (D, D), p + "ffn_norm": (D,), p + "w1": (F, D), p + "w2": (D, F), p + "w3": (F, D)}
        s["final_norm"] = (D,)
        if not cfg.tie_embeddings:
            s["lm_head"] = (cfg.vocab_size, D)
        return s
    H, B, I, E = cfg.hidden, cfg.bottleneck, cfg.intermediate, cfg.embedding_size
    s |= {"word_emb": (cfg.vocab_size, E), "emb_transform.w": (H, 3 * E), "emb_transform.b": (H,),
          "pos_emb": (cfg.max_positions, H), "type_emb": (cfg.type_vocab_size, H),
          "emb_norm.w": (H,), "emb_norm.b": (H,)}
    for l in range(cfg.n_layers):
        p = f"layers.{l}."
        for n, shp in (("bn_in", (B, H)), ("bn_att", (B, H)), ("q", (B, B)), ("k", (B, B)), ("v", (B, H)),
                       ("att_out", (B, B)), ("out_bn", (H, B))):
            s[p + n + ".w"], s[p + n + ".b"] = shp, (shp[0],)
        for n, d in (("bn_in_norm", B), ("bn_att_norm", B), ("att_norm", B), ("out_norm", H)):
            s[p + n + ".w"], s[p + n + ".b"] = (d,), (d,)
        for f in range(cfg.n_ffn):
            fp = f"{p}ffn{f}."
            s |= {fp + "in.w": (I, B), fp + "in.b": (I,), fp + "out.w": (B, I), fp + "out.b": (B,),
                  fp + "norm.w": (B,), fp + "norm.b": (B,)}
    return s


def init_weights(cfg: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """Deterministic float32 weights (see INIT_DOC)."""
    rng = np.random.default_rng(seed)
    w = {}
    resid = 0.02 / np.sqrt(2 * cfg.n_layers)
    for name, shape in sorted(tensor_shapes(cfg).items()):
        x = rng.standard_normal(shape, dtype=np.float32)
        leaf = name.rsplit(".", 2)
        if len(shape) == 2:
            std = resid if name.endswith((".wo", ".w2", "att_out.w", "out.w", "out_bn.w")) else 0.02
            w[name] = x * np.float32(std)
        elif name.endswith("norm") or name.endswith("norm.w") or name == "emb_norm.w":
            w[name] = np.ones(shape, np.float32) if isinstance(cfg, LlamaConfig) else 1 + 0.05 * x
        else:
            w[name] = x * np.float32(0.02)
        del leaf
    return w


def calibration_inputs(cfg: ModelConfig, seed: int) -> list[np.ndarray]:
    """Seeded random token ids: CALIB_SEQS sequences (24 decode steps or 128 positions)."""
    rng = np.random.default_rng(seed + 1)
    n = min(24, cfg.context_len) if isinstance(cfg, LlamaConfig) else min(128, cfg.max_positions)
    return [rng.integers(0, cfg.vocab_size, n) for _ in range(CALIB_SEQS)]


def calibration_doc(seed: int) -> str:
    return f"{CALIB_SEQS} seeded random-token sequences (seed {seed} + 1)"


def calibrate(cfg: ModelConfig, w: dict, seed: int, inputs=None) -> dict[str, float]:
    """Max |x| at every quantization site over the float model on calibration inputs."""
    amax: dict[str, float] = {}

    def obs(site, x):
        m = float(np.max(np.abs(x)))
        amax[site] = max(amax.get(site, 0.0), m)

    for ids in (inputs if inputs is not None else calibration_inputs(cfg, seed)):
        if isinstance(cfg, LlamaConfig):
            ref = LlamaRef(cfg, w, len(ids), obs)
            for pos, t in enumerate(ids):
                ref.step(int(t), pos)
        else:
            mobilebert_f(cfg, w, ids, observe=obs)
    return amax


def _atomic_h5(out: Path):
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(f".{out.name}.tmp-{os.getpid()}")


def write_weights(cfg: ModelConfig, w: dict, out, seed: int = 0, init: str = INIT_DOC,
                  keep_float: bool = True, calib_seed: int | None = None, calib_inputs=None,
                  calib_doc: str | None = None, tokenizer_json: str | None = None) -> Path:
    """Quantize, calibrate and write the HDF5 weights file whole (temp file, then rename)."""
    out = Path(out)
    amax = calibrate(cfg, w, seed if calib_seed is None else calib_seed, calib_inputs)
    tmp = _atomic_h5(out)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["model"] = cfg.name
            f.attrs["config"] = json.dumps(config_to_dict(cfg))
            f.attrs["seed"] = seed
            f.attrs["init"] = init
            f.attrs["calibration"] = "max-abs over " + (
                calib_doc or calibration_doc(seed if calib_seed is None else calib_seed))
            if tokenizer_json:
                f.attrs["tokenizer_json"] = tokenizer_json
            t = f.create_group("t")
            for name, shape in tensor_shapes(cfg).items():
                a = np.asarray(w[name], np.float32)
                if a.shape != tuple(shape):
                    raise UserError(f"tensor {name}: shape {a.shape}, expected {tuple(shape)}")
                if a.ndim == 2:
                    q, sc = quantize_rows(a)
                    t.create_dataset(name, data=q)
                    t.create_dataset(name + ".scale", data=sc)
                else:
                    t.create_dataset(name, data=a)
            g = f.create_group("act_maxabs")
            for k in sorted(amax):
                g.attrs[k] = amax[k]
            if keep_float:
                fl = f.create_group("float")
                for name in tensor_shapes(cfg):
                    fl.create_dataset(name, data=np.asarray(w[name], np.float32))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def make_weights(model: str, seed: int, out, keep_float: bool = True) -> Path:
    cfg = load_model(model)
    return write_weights(cfg, init_weights(cfg, seed), out, seed=seed, keep_float=keep_float)


def cache_dir() -> Path:
    base = os.environ.get("MCU_EMUL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mcu_emul"
    return Path(base)


def default_weights_path(model: str, seed: int = 0) -> Path:
    return cache_dir() / f"{model}-seed{seed}-v{FORMAT_VERSION}.h5"


class WeightsFile:
    """Read-only view of a weights file that counts the bytes each caller reads."""

    def __init__(self, path, expect_model: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"weights file {self.path} does not exist")
        try:
            self.f = h5py.File(self.path, "r", locking=False)
        except OSError as e:
            raise UserError(f"weights file {self.path} is not a readable HDF5 file ({e})") from None
        a = self.f.attrs
        if a.get("format") != FORMAT:
            raise UserError(f"weights file {self.path}: not an mcu_emul weights file (format attribute "
                            f"{a.get('format')!r}, expected {FORMAT!r})")
        ver = int(a.get("format_version", -1))
        if ver != FORMAT_VERSION:
            raise UserError(f"weights file {self.path}: format_version {ver}, this mcu_emul reads "
                            f"version {FORMAT_VERSION}; re-make it with 'weights make'")
        try:
            self.cfg = model_from_dict(json.loads(a["config"]), f"{self.path} (config attribute)")
        except (KeyError, json.JSONDecodeError) as e:
            raise UserError(f"weights file {self.path}: bad config attribute ({e})") from None
        if expect_model is not None and self.cfg.name != expect_model:
            raise UserError(f"weights file {self.path} holds model '{self.cfg.name}', not '{expect_model}'")
        self.model = self.cfg.name
        try:
            self.act_maxabs = {k: float(v) for k, v in self.f["act_maxabs"].attrs.items()}
        except KeyError:
            raise UserError(f"weights file {self.path}: missing group 'act_maxabs'") from None
        self.has_float = "float" in self.f
        self.tokenizer_json = a.get("tokenizer_json")
        self.bytes_read = 0

    def read(self, name: str, rows=None, cols=None, group: str = "t") -> np.ndarray:
        """Read t/NAME (or a hyperslab of it) and count the bytes read."""
        key = f"{group}/{name}"
        try:
            ds = self.f[key]
            sel = (slice(*rows) if rows else slice(None),) + ((slice(*cols),) if cols else ())
            if ds.ndim == 1:
                sel = sel[:1]
            a = ds[sel]
        except KeyError:
            raise UserError(f"weights file {self.path}: missing dataset '{key}'") from None
        except (OSError, ValueError) as e:
            raise UserError(f"weights file {self.path}: cannot read dataset '{key}' (corrupted? {e})") from None
        self.bytes_read += a.nbytes
        return a

    def read_float(self) -> dict[str, np.ndarray]:
        if not self.has_float:
            raise UserError(f"weights file {self.path} has no float reference weights ('float' group); "
                            "make it without --no-float to use --check-float")
        return {n: self.read(n, group="float") for n in tensor_shapes(self.cfg)}

    def close(self):
        self.f.close()
