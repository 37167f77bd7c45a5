"""Model, chip and topology descriptions: frozen dataclasses loaded from TOML in data/."""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import UserError

DATA_DIR = Path(os.environ.get("MCU_EMUL_DATA", Path(__file__).resolve().parent.parent / "data"))


def _build(cls, table: dict, where: str):
    """Instantiate dataclass `cls` from a TOML table, rejecting unknown and missing keys."""
    names = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(names)})")
    missing = [f.name for f in fields(cls) if f.init and f.name not in table
               and f.default is dataclasses.MISSING]
    if missing:
        raise UserError(f"{where}: missing key(s) {', '.join(missing)}")
    return cls(**table)


def _check(cond: bool, where: str, msg: str):
    if not cond:
        raise UserError(f"{where}: {msg}")


@dataclass(frozen=True)
class LlamaConfig:
    """llama2.c-style decoder: RMSNorm, RoPE, SwiGLU, tied classifier optional."""
    name: str
    arch: str
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_hidden: int
    vocab_size: int
    context_len: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    note: str = ""

    def __post_init__(self):
        w = f"model '{self.name}'"
        _check(self.arch == "llama", w, f"arch must be 'llama', got {self.arch!r}")
        for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden", "vocab_size", "context_len"):
            _check(isinstance(getattr(self, k), int) and getattr(self, k) > 0, w,
                   f"{k} must be a positive integer, got {getattr(self, k)!r}")
        _check(self.dim % self.n_heads == 0, w, f"dim {self.dim} not divisible by n_heads {self.n_heads}")
        _check(self.n_heads % self.n_kv_heads == 0, w,
               f"n_heads {self.n_heads} not divisible by n_kv_heads {self.n_kv_heads}")
        _check((self.dim // self.n_heads) % 2 == 0, w, "head dim must be even for RoPE")
        _check(self.tie_embeddings, w, "only tie_embeddings = true is supported")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def max_chips(self) -> int:
        return self.n_kv_heads


@dataclass(frozen=True)
class MobileBertConfig:
    """MobileBERT encoder: bottlenecks, shared Q/K bottleneck, stacked FFNs, NoNorm, ReLU."""
    name: str
    arch: str
    hidden: int
    bottleneck: int
    n_layers: int
    n_heads: int
    intermediate: int
    n_ffn: int
    embedding_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int = 2
    note: str = ""

    def __post_init__(self):
        w = f"model '{self.name}'"
        _check(self.arch == "mobilebert", w, f"arch must be 'mobilebert', got {self.arch!r}")
        for k in ("hidden", "bottleneck", "n_layers", "n_heads", "intermediate", "n_ffn",
                  "embedding_size", "vocab_size", "max_positions", "type_vocab_size"):
            _check(isinstance(getattr(self, k), int) and getattr(self, k) > 0, w,
                   f"{k} must be a positive integer, got {getattr(self, k)!r}")
        _check(self.bottleneck % self.n_heads == 0, w,
               f"bottleneck {self.bottleneck} not divisible by n_heads {self.n_heads}")

    @property
    def head_dim(self) -> int:
        return self.bottleneck // self.n_heads

    @property
    def max_chips(self) -> int:
        return self.n_heads


ModelConfig = LlamaConfig | MobileBertConfig
_ARCH = {"llama": LlamaConfig, "mobilebert": MobileBertConfig}


def known_models() -> list[str]:
    return sorted(p.stem for p in (DATA_DIR / "models").glob("*.toml"))


def model_from_dict(table: dict, where: str) -> ModelConfig:
    arch = table.get("arch")
    if arch not in _ARCH:
        raise UserError(f"{where}: arch must be one of {sorted(_ARCH)}, got {arch!r}")
    return _build(_ARCH[arch], table, where)


def load_model(name: str) -> ModelConfig:
    """Load data/models/NAME.toml (or a path to a .toml file)."""
    path = Path(name) if name.endswith(".toml") else DATA_DIR / "models" / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"unknown model {name!r}; known models: {', '.join(known_models())}")
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None
    return model_from_dict(table, str(path))


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


@dataclass(frozen=True)
class ChipSpec:
    """One chip's memories; sizes in bytes."""
    name: str
    l1_bytes: int
    l2_bytes: int
    weight_mem_bytes: int
    note: str = ""

    def __post_init__(self):
        for k in ("l1_bytes", "l2_bytes", "weight_mem_bytes"):
            _check(isinstance(getattr(self, k), int) and getattr(self, k) >= 0, f"chip '{self.name}'",
                   f"{k} must be a non-negative integer, got {getattr(self, k)!r}")

    @property
    def onchip_capacity_bytes(self) -> int:
        return self.l2_bytes + self.weight_mem_bytes


@dataclass(frozen=True)
class Topology:
    """All-reduce hierarchy: group size per level, innermost first (last level spans the rest)."""
    name: str
    group_sizes: tuple
    note: str = ""

    def __post_init__(self):
        object.__setattr__(self, "group_sizes", tuple(self.group_sizes))
        _check(all(isinstance(g, int) and g >= 2 for g in self.group_sizes), f"topology '{self.name}'",
               f"group_sizes must be integers >= 2, got {list(self.group_sizes)!r}")


def _load_table(kind: str, name: str) -> tuple[dict, str]:
    path = Path(name) if name.endswith(".toml") else DATA_DIR / kind / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in (DATA_DIR / kind).glob("*.toml"))
        raise UserError(f"unknown {kind} description {name!r}; known: {', '.join(known)}")
    try:
        return tomllib.loads(path.read_text()), str(path)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None


def load_chip(name: str = "siracusa") -> ChipSpec:
    table, where = _load_table("hw", name)
    return _build(ChipSpec, table.get("memory", {}) | {"name": table.get("name", name)}, where)


def load_topology(name: str = "siracusa-boards") -> Topology:
    table, where = _load_table("topology", name)
    return _build(Topology, table, where)
