"""Model, chip and topology descriptions: frozen dataclasses loaded from TOML in data/."""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
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
    """llama2.c-style decoder: RMSNorm, RoPE (adjacent pairs), SwiGLU; classifier tied to the
    embedding or a separate `lm_head`."""
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
    table, where = load_table("models", name, "model")
    return model_from_dict(table, where)


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


@dataclass(frozen=True)
class MemorySpec:
    """One chip's memories, bytes."""
    l1_bytes: int
    l2_bytes: int
    weight_mem_bytes: int

    def __post_init__(self):
        for k in ("l1_bytes", "l2_bytes", "weight_mem_bytes"):
            _check(isinstance(getattr(self, k), int) and getattr(self, k) >= 0, "memory",
                   f"{k} must be a non-negative integer, got {getattr(self, k)!r}")


@dataclass(frozen=True)
class ComputeSpec:
    freq_hz: float
    cluster_gemv_macs_per_cycle: float
    cluster_gemm_macs_per_cycle: float
    engine_gemv_macs_per_cycle: float
    engine_gemm_macs_per_cycle: float
    kernel_overhead_cycles: int
    elementwise_per_cycle: float


@dataclass(frozen=True)
class DmaSpec:
    l2_l1_bytes_per_cycle: float


@dataclass(frozen=True)
class OffchipSpec:
    l3_bytes_per_s: float
    l3_latency_cycles: int
    l3_overlaps_compute: bool


@dataclass(frozen=True)
class PowerSpec:
    cluster_active_w: float
    engine_active_w: float
    idle_w: float


@dataclass(frozen=True)
class EnergySpec:
    l2_pj_per_byte: float
    l3_pj_per_byte: float


_HW_SECTIONS = {"memory": MemorySpec, "compute": ComputeSpec, "dma": DmaSpec, "offchip": OffchipSpec,
                "power": PowerSpec, "energy": EnergySpec}


@dataclass(frozen=True)
class ChipSpec:
    """A chip: memories, compute rates, off-chip memory, power and energy (see data/hw/*.toml)."""
    name: str
    memory: MemorySpec
    compute: ComputeSpec
    dma: DmaSpec
    offchip: OffchipSpec
    power: PowerSpec
    energy: EnergySpec
    origin: dict = field(default_factory=dict)

    @property
    def onchip_capacity_bytes(self) -> int:
        return self.memory.l2_bytes + self.memory.weight_mem_bytes

    def __post_init__(self):
        for sec in _HW_SECTIONS:
            obj = getattr(self, sec)
            for f in fields(obj):
                v = getattr(obj, f.name)
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
                    raise UserError(f"chip '{self.name}': {sec}.{f.name} must be >= 0, got {v!r}")
        for k in ("compute.freq_hz", "dma.l2_l1_bytes_per_cycle", "offchip.l3_bytes_per_s"):
            sec, key = k.split(".")
            if getattr(getattr(self, sec), key) <= 0:
                raise UserError(f"chip '{self.name}': {k} must be > 0")


@dataclass(frozen=True)
class Topology:
    """All-reduce hierarchy (group size per level, innermost first; the last level spans the
    rest) and chip-to-chip links: level 0 values, upper levels scaled by the factors."""
    name: str
    group_sizes: tuple
    link_bytes_per_s: float = 2.0e8
    link_latency_s: float = 2.0e-6
    link_pj_per_byte: float = 100.0
    upper_bandwidth_factor: float = 0.5
    upper_latency_factor: float = 2.0
    link_ports: str = "per_peer"
    note: str = ""
    origin: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "group_sizes", tuple(self.group_sizes))
        _check(all(isinstance(g, int) and g >= 2 for g in self.group_sizes), f"topology '{self.name}'",
               f"group_sizes must be integers >= 2, got {list(self.group_sizes)!r}")
        _check(self.link_ports in ("per_peer", "single"), f"topology '{self.name}'",
               f"link_ports must be 'per_peer' or 'single', got {self.link_ports!r}")
        for k in ("link_bytes_per_s", "upper_bandwidth_factor"):
            _check(getattr(self, k) > 0, f"topology '{self.name}'", f"{k} must be > 0, got {getattr(self, k)!r}")

    def level(self, a: int, b: int) -> int:
        """Hierarchy level of the link between ranks a and b (0 = same innermost group)."""
        span = 1
        for lvl, g in enumerate(self.group_sizes):
            span *= g
            if a // span == b // span:
                return lvl
        return len(self.group_sizes)


def load_table(kind: str, name: str, what: str = "") -> tuple[dict, str]:
    """data/KIND/NAME.toml (or a path to a .toml file) as a table, and its path; clear errors
    for an unknown name (listing the known ones) and for invalid TOML."""
    path = Path(name) if name.endswith(".toml") else DATA_DIR / kind / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in (DATA_DIR / kind).glob("*.toml"))
        raise UserError(f"unknown {what or kind + ' description'} {name!r}; known: {', '.join(known) or 'none'}")
    try:
        return tomllib.loads(path.read_text()), str(path)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None


def chip_from_dict(table: dict, where: str) -> ChipSpec:
    allowed = {"name", "origin", *_HW_SECTIONS}
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    missing = [m for m in _HW_SECTIONS if m not in table]
    if missing:
        raise UserError(f"{where}: missing section(s) {', '.join('[' + m + ']' for m in missing)}")
    secs = {sec: _build(cls, table[sec], f"{where} [{sec}]") for sec, cls in _HW_SECTIONS.items()}
    origin = dict(table.get("origin", {}))
    need = {f"{sec}.{f.name}" for sec, cls in _HW_SECTIONS.items() for f in fields(cls)}
    lacking = sorted(need - set(origin))
    if lacking:
        raise UserError(f"{where}: [origin] has no entry for {', '.join(lacking)}")
    return ChipSpec(name=table.get("name", Path(where).stem), origin=origin, **secs)


def load_chip(name: str = "siracusa") -> ChipSpec:
    table, where = load_table("hw", name)
    return chip_from_dict(table, where)


def load_topology(name: str = "siracusa-boards") -> Topology:
    table, where = load_table("topology", name)
    return _build(Topology, table, where)


def with_values(chip: ChipSpec, topo: Topology, values: dict) -> tuple[ChipSpec, Topology]:
    """Replace parameters by name: {"section.key": value} (hw sections) or {"link.key": value}."""
    for lhs, v in values.items():
        sec, key = lhs.split(".", 1)
        if sec == "link":
            if key not in {f.name for f in fields(Topology)} - {"name", "origin", "note"}:
                raise UserError(f"--set {lhs}: unknown link/topology key {key!r}")
            topo = dataclasses.replace(topo, **{key: v})
        elif sec in _HW_SECTIONS:
            obj = getattr(chip, sec)
            if key not in {f.name for f in fields(obj)}:
                raise UserError(f"--set {lhs}: unknown key {key!r} in [{sec}] "
                                f"(known: {', '.join(f.name for f in fields(obj))})")
            chip = dataclasses.replace(chip, **{sec: dataclasses.replace(obj, **{key: v})})
        else:
            raise UserError(f"--set {lhs}: unknown section {sec!r} (known: link, {', '.join(_HW_SECTIONS)})")
    return chip, topo


def with_overrides(chip: ChipSpec, topo: Topology, sets: list[str]) -> tuple[ChipSpec, Topology]:
    """Apply `--set section.key=value` strings (values parsed as TOML, else kept as text)."""
    values = {}
    for item in sets:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UserError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. compute.freq_hz=4e8")
        lhs, val = item.split("=", 1)
        try:
            values[lhs] = tomllib.loads(f"v = {val}")["v"]
        except tomllib.TOMLDecodeError:
            values[lhs] = val
    return with_values(chip, topo, values)
