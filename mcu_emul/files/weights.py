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

import hashlib
import json
import math
import os
import re
from pathlib import Path

import h5py
import numpy as np

from ..config import LlamaConfig, ModelConfig, config_to_dict, load_model, model_from_dict
from ..errors import UserError
from .outputs import write_bytes
from ..numerics.quant import quantize_rows
from ..numerics.reference import LlamaRef, mobilebert_f

FORMAT = "mcu_emul.weights"
FORMAT_VERSION = 1
INIT_DOC = ("normal(0, 0.02) matrices, residual projections scaled by 1/sqrt(2*n_layers); "
            "norm gains 1 (Llama) or 1 + normal(0, 0.05) (NoNorm); biases normal(0, 0.02)")
CALIB_SEQS = 2
# the float originals (for --check-float) are kept in a default weights file up to this size:
# TinyLlama-42M's 0.16 GB are; tinyllama-scaled's 1.08 GB are not (four times its int8 file,
# and most of its first run's time; `weights make` keeps them for any model)
DEFAULT_FLOAT_MAX_BYTES = 256 * 2**20
# Range of every float a weights file holds (scales, gains, biases, calibrated ranges): far
# outside any trained model, inside what the integer requantization can represent.
MIN_VALUE, MAX_VALUE = 1e-30, 1e30
MAX_WEIGHT = 1e6          # |float weight| accepted by convert / write_weights


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
            x *= np.float32(std)                      # in place: the same products, no copy
            w[name] = x
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


def _check_values(w: dict):
    for name, a in w.items():
        if not np.all(np.isfinite(a)):
            raise UserError(f"tensor {name}: {int(np.size(a) - np.isfinite(a).sum())} NaN or infinite value(s); "
                            "refusing to quantize it")
        if np.size(a) and float(np.abs(a).max()) > MAX_WEIGHT:
            raise UserError(f"tensor {name}: values up to {float(np.abs(a).max()):g}, beyond the |x| <= "
                            f"{MAX_WEIGHT:g} mcu_emul quantizes (not a trained model's weights?)")


def write_weights(cfg: ModelConfig, w: dict, out, seed: int = 0, init: str = INIT_DOC,
                  keep_float: bool = True, calib_seed: int | None = None, calib_inputs=None,
                  calib_doc: str | None = None, tokenizer_json: str | None = None) -> Path:
    """Check, quantize, calibrate and write the HDF5 weights file whole (temp file, then rename)."""
    out = Path(out)
    for name, shape in tensor_shapes(cfg).items():
        if name not in w:
            raise UserError(f"tensor {name} is missing")
        if np.shape(w[name]) != tuple(shape):
            raise UserError(f"tensor {name}: shape {np.shape(w[name])}, expected {tuple(shape)}")
    _check_values(w)
    amax = calibrate(cfg, w, seed if calib_seed is None else calib_seed, calib_inputs)
    if not all(v == 0 or MIN_VALUE <= v <= MAX_VALUE for v in amax.values()):
        raise UserError("calibration gave an activation range outside 1e-30..1e30 (the float model overflows "
                        "or vanishes on the calibration inputs)")
    # The file is built in memory and written by plain file I/O: HDF5 writing to a full disk
    # crashes the process (measured), a failed Python write is an error like any other.
    with h5py.File(f"{out.name}.image", "w", driver="core", backing_store=False) as f:
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
        f.flush()
        image = f.id.get_file_image()
    write_bytes(out, image)
    return out


def make_weights(model: str | ModelConfig, seed: int, out, keep_float: bool = True) -> Path:
    cfg = load_model(model) if isinstance(model, str) else model
    return write_weights(cfg, init_weights(cfg, seed), out, seed=seed, keep_float=keep_float)


def default_keeps_float(cfg: ModelConfig) -> bool:
    """Does the default weights file of cfg keep the float originals?"""
    return 4 * sum(math.prod(s) for s in tensor_shapes(cfg).values()) <= DEFAULT_FLOAT_MAX_BYTES


def cache_dir() -> Path:
    base = os.environ.get("MCU_EMUL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mcu_emul"
    return Path(base)


def config_digest(cfg: ModelConfig) -> str:
    """Content key of a model description (every field but the note)."""
    d = {k: v for k, v in config_to_dict(cfg).items() if k != "note"}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def default_weights_path(cfg: ModelConfig, seed: int = 0) -> Path:
    """The cache file of a model's generated weights, keyed by the model's content (an edited
    TOML gets its own file) and the seed; always inside the cache folder."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", cfg.name)[:64]
    return cache_dir() / f"{safe}-{config_digest(cfg)}-seed{seed}-v{FORMAT_VERSION}.h5"


def _check_cache(path: Path):
    """The cache folder must be usable before anything is announced or computed."""
    import tempfile
    where = "MCU_EMUL_CACHE" if os.environ.get("MCU_EMUL_CACHE") else "the cache folder"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as e:
        raise UserError(f"{where} {path.parent} is not a writable folder ({e.strerror or e})") from None
    if path.exists() and not path.is_file():
        raise UserError(f"cache entry {path} is not a file: remove it")


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".complete")


def cached_default_weights(cfg: ModelConfig, seed: int, log=print) -> Path:
    """The default weights file, made once; a cached file that is damaged (size differs from
    its completion marker, or it does not open as this model's weights) is made again."""
    path = default_weights_path(cfg, seed)
    _check_cache(path)
    if path.is_file():
        why = None
        try:
            size = json.loads(_marker(path).read_text())["size_bytes"]
            if size != path.stat().st_size:
                why = f"{path.stat().st_size:,} B, its completion marker says {size:,} B"
        except (OSError, ValueError, KeyError, TypeError):
            why = "its completion marker is missing or unreadable"
        if why is None:
            try:
                WeightsFile(path, expect=cfg).close()
            except UserError as e:
                why = str(e)
        if why is None:
            return path
        log(f"mcu_emul: cached default weights {path} are damaged ({why}): making them again")
    else:
        log(f"mcu_emul: making default weights for {cfg.name} (seed {seed}) at {path} (once)")
    make_weights(cfg, seed, path, keep_float=default_keeps_float(cfg))
    write_bytes(_marker(path), json.dumps({"size_bytes": path.stat().st_size}).encode())
    return path


class _ActScales(dict):
    """Calibrated max |x| by site; a site the file lacks is a one-line error naming it."""

    def __init__(self, values: dict, path):
        super().__init__(values)
        self.path = path

    def __missing__(self, key):
        raise UserError(f"weights file {self.path}: act_maxabs has no entry for site {key!r} (incomplete "
                        "calibration); re-make or re-convert the file")


def _self_contained(g, path, prefix=""):
    """Refuse links and storage that point outside the file: a crafted weights file must not
    make the emulator read other files."""
    for name in g:
        link = g.get(name, getlink=True)
        where = f"weights file {path}: '{prefix}{name}'"
        if isinstance(link, h5py.ExternalLink):
            raise UserError(f"{where} is an external link (to {link.filename}); weights files must be self-contained")
        if isinstance(link, h5py.SoftLink):
            raise UserError(f"{where} is a soft link (to {link.path}); mcu_emul weights files have none")
        obj = g[name]
        if isinstance(obj, h5py.Group):
            _self_contained(obj, path, f"{prefix}{name}/")
        elif isinstance(obj, h5py.Dataset):
            if obj.is_virtual:
                raise UserError(f"{where} is a virtual dataset; weights files must be self-contained")
            if obj.external:
                raise UserError(f"{where} keeps its data in an external file "
                                f"({obj.external[0][0]}); weights files must be self-contained")


def _differs(a: ModelConfig, b: ModelConfig) -> str | None:
    da, db = config_to_dict(a), config_to_dict(b)
    for k in da:
        if k != "note" and da[k] != db.get(k):
            return f"{k} {da[k]!r} (file) vs {db.get(k)!r}"
    return None


class WeightsFile:
    """Read-only view of a weights file that checks what it reads (shape, dtype, finite
    scales) and counts the bytes each caller reads."""

    def __init__(self, path, expect: ModelConfig | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"weights file {self.path} does not exist" if not self.path.exists() else
                            f"weights file {self.path} is not a regular file")
        try:
            self.f = h5py.File(self.path, "r", locking=False)
        except OSError as e:
            raise UserError(f"weights file {self.path} is not a readable HDF5 file ({e})") from None
        try:
            self._open(expect)
        except BaseException:
            self.f.close()
            raise

    def _open(self, expect):
        a = self.f.attrs
        fmt = a.get("format")
        if not (isinstance(fmt, str) and fmt == FORMAT):
            raise UserError(f"weights file {self.path}: not an mcu_emul weights file (format attribute "
                            f"{a.get('format')!r}, expected {FORMAT!r})")
        ver = a.get("format_version")
        ver = int(ver) if isinstance(ver, (int, np.integer)) else ver
        if not (isinstance(ver, int) and ver == FORMAT_VERSION):
            raise UserError(f"weights file {self.path}: format_version {ver!r}, this mcu_emul reads "
                            f"version {FORMAT_VERSION}; re-make it with 'weights make'")
        _self_contained(self.f, self.path)
        try:
            table = json.loads(a["config"])
        except (KeyError, ValueError, TypeError, RecursionError) as e:
            raise UserError(f"weights file {self.path}: bad config attribute ({e})") from None
        self.cfg = model_from_dict(table, f"{self.path} (config attribute)")
        if expect is not None:
            if self.cfg.name != expect.name:
                raise UserError(f"weights file {self.path} holds model '{self.cfg.name}', not '{expect.name}'")
            diff = _differs(self.cfg, expect)
            if diff:
                raise UserError(f"weights file {self.path} holds another '{expect.name}' than --model: {diff}")
        self.model = self.cfg.name
        self.shapes = tensor_shapes(self.cfg)
        if "act_maxabs" not in self.f or not isinstance(self.f["act_maxabs"], h5py.Group):
            raise UserError(f"weights file {self.path}: missing group 'act_maxabs'")
        vals = {}
        for k, v in self.f["act_maxabs"].attrs.items():
            try:
                vals[k] = float(v)
            except (TypeError, ValueError):
                vals[k] = float("nan")
            if not (vals[k] == 0 or MIN_VALUE <= vals[k] <= MAX_VALUE):
                raise UserError(f"weights file {self.path}: act_maxabs {k} = {v!r} (must be 0 or from "
                                f"{MIN_VALUE:g} to {MAX_VALUE:g})")
        self.act_maxabs = _ActScales(vals, self.path)
        self.has_float = "float" in self.f
        tj = a.get("tokenizer_json")
        self.tokenizer_json = tj.decode() if isinstance(tj, bytes) else tj
        self.bytes_read = 0

    def _dataset(self, group: str, name: str):
        """t/NAME (or float/NAME) checked against the model's shapes: dtype and full shape."""
        key = f"{group}/{name}"
        base = name[:-len(".scale")] if name.endswith(".scale") else name
        if base not in self.shapes:
            raise UserError(f"weights file {self.path}: '{key}' is not a tensor of model '{self.model}'")
        full = self.shapes[base]
        if group == "float":                       # the float originals
            shape, dtype = full, np.float32
        elif name != base:                         # per-row scales of an int8 matrix
            shape, dtype = (full[0],), np.float32
        else:                                      # int8 matrix, or a float vector
            shape, dtype = full, np.int8 if len(full) == 2 else np.float32
        ds = self.f.get(key)
        if not isinstance(ds, h5py.Dataset):
            raise UserError(f"weights file {self.path}: missing dataset '{key}'")
        if ds.shape != tuple(shape) or ds.dtype != dtype:
            raise UserError(f"weights file {self.path}: dataset '{key}' is {ds.dtype}{list(ds.shape)}, "
                            f"model '{self.model}' needs {np.dtype(dtype)}{list(shape)}")
        return ds, key

    def read(self, name: str, rows=None, cols=None, group: str = "t") -> np.ndarray:
        """Read t/NAME (or a hyperslab of it), checked, and count the bytes read."""
        ds, key = self._dataset(group, name)
        try:
            sel = (slice(*rows) if rows else slice(None),) + ((slice(*cols),) if cols else ())
            a = ds[sel[:ds.ndim]]
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"weights file {self.path}: cannot read dataset '{key}' (corrupted? {e})") from None
        if a.dtype.kind == "f":
            scale = name.endswith(".scale")
            ok = (a >= MIN_VALUE) & (a <= MAX_VALUE) if scale else np.abs(a) <= MAX_VALUE
            if not ok.all():
                bad = a[~ok].flat[0]
                raise UserError(f"weights file {self.path}: dataset '{key}' holds {bad!r}"
                                + (f" (scales must be from {MIN_VALUE:g} to {MAX_VALUE:g})" if scale else
                                   f" (values must be finite, |x| <= {MAX_VALUE:g})"))
        self.bytes_read += a.nbytes
        return a

    def read_float(self) -> dict[str, np.ndarray]:
        if not self.has_float:
            raise UserError(f"weights file {self.path} has no float reference weights ('float' group): made with "
                            f"--no-float, or the default file of a model over {DEFAULT_FLOAT_MAX_BYTES >> 20} MiB of "
                            f"float weights; for --check-float make one with `python -m mcu_emul weights make --model "
                            f"{self.cfg.name} --out FILE` and give --weights FILE")
        return {n: self.read(n, group="float") for n in tensor_shapes(self.cfg)}

    def close(self):
        self.f.close()
