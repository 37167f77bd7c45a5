"""Model, chip and topology descriptions: frozen dataclasses loaded from TOML in data/."""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import UserError
from .fields import bound, check, coerce
from .tomltext import parse_sets

def _data_dir() -> Path:
    """The data files: $MCU_EMUL_DATA, else the source tree's data/ (a checkout or an editable
    install), else PREFIX/share/mcu_emul/data where a wheel installs them (PREFIX: the folder
    that holds lib/pythonX.Y/site-packages/mcu_emul)."""
    if os.environ.get("MCU_EMUL_DATA"):
        return Path(os.environ["MCU_EMUL_DATA"])
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "data", here.parents[3] / "share" / "mcu_emul" / "data" if len(here.parents) > 3 else None):
        if cand is not None and (cand / "models").is_dir():
            return cand
    return here.parent / "data"


DATA_DIR = _data_dir()


# Limits of a model description (README "Limits"): far beyond any model a cluster of MCUs can
# hold, small enough that a mistyped value is refused before anything is allocated.
MAX_WEIGHTS = 16_000_000_000
MAX_DIM, MAX_LAYERS, MAX_HEADS, MAX_VOCAB, MAX_CONTEXT = 65536, 1024, 1024, 2**21, 131072


def _build(cls, table: dict, where: str):
    """Instantiate dataclass `cls` from a TOML table, rejecting unknown and missing keys."""
    if not isinstance(table, dict):
        raise UserError(f"{where}: expected a table, got {table!r}")
    names = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(names)})")
    missing = [f.name for f in fields(cls) if f.init and f.name not in table
               and f.default is dataclasses.MISSING]
    if missing:
        raise UserError(f"{where}: missing key(s) {', '.join(missing)}")
    return cls(**{k: coerce(cls, k, v, where) for k, v in table.items()})


def _named(obj, what: str) -> str:
    """Check a description's fields; its name must be a non-empty string. Returns "what 'name'"."""
    if not (isinstance(obj.name, str) and obj.name.strip()):
        raise UserError(f"{what}: name must be a non-empty string, got {obj.name!r}")
    w = f"{what} '{obj.name}'"
    check(obj, w)
    return w


def _check(cond: bool, where: str, msg: str):
    if not cond:
        raise UserError(f"{where}: {msg}")


@dataclass(frozen=True)
class LlamaConfig:
    """llama2.c-style decoder: RMSNorm, RoPE (adjacent pairs), SwiGLU; classifier tied to the
    embedding or a separate `lm_head`."""
    name: str
    arch: str = bound(choices=("llama",))
    dim: int = bound(ge=2, le=MAX_DIM)
    n_layers: int = bound(ge=1, le=MAX_LAYERS)
    n_heads: int = bound(ge=1, le=MAX_HEADS)
    n_kv_heads: int = bound(ge=1, le=MAX_HEADS)
    ffn_hidden: int = bound(ge=1, le=4 * MAX_DIM)
    vocab_size: int = bound(ge=1, le=MAX_VOCAB)
    context_len: int = bound(ge=1, le=MAX_CONTEXT)
    norm_eps: float = bound(gt=0.0, le=1.0, default=1e-5)
    rope_theta: float = bound(gt=1.0, le=1e12, default=10000.0)
    tie_embeddings: bool = True
    note: str = ""

    def __post_init__(self):
        w = _named(self, "model")
        _check(self.dim % self.n_heads == 0, w, f"dim {self.dim} not divisible by n_heads {self.n_heads}")
        _check(self.n_heads % self.n_kv_heads == 0, w,
               f"n_heads {self.n_heads} not divisible by n_kv_heads {self.n_kv_heads}")
        _check((self.dim // self.n_heads) % 2 == 0, w, "head dim must be even for RoPE")
        D, F, KV = self.dim, self.ffn_hidden, self.n_kv_heads * self.head_dim
        n = self.vocab_size * D * (1 if self.tie_embeddings else 2) + self.n_layers * (2 * D * D + 2 * KV * D + 3 * F * D)
        _check(n <= MAX_WEIGHTS, w, f"{n:,} weights, more than the limit of {MAX_WEIGHTS:,}")

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
    arch: str = bound(choices=("mobilebert",))
    hidden: int = bound(ge=1, le=MAX_DIM)
    bottleneck: int = bound(ge=1, le=MAX_DIM)
    n_layers: int = bound(ge=1, le=MAX_LAYERS)
    n_heads: int = bound(ge=1, le=MAX_HEADS)
    intermediate: int = bound(ge=1, le=4 * MAX_DIM)
    n_ffn: int = bound(ge=1, le=16)
    embedding_size: int = bound(ge=1, le=MAX_DIM)
    vocab_size: int = bound(ge=1, le=MAX_VOCAB)
    max_positions: int = bound(ge=1, le=MAX_CONTEXT)
    type_vocab_size: int = bound(ge=1, le=1024, default=2)
    note: str = ""

    def __post_init__(self):
        w = _named(self, "model")
        _check(self.bottleneck % self.n_heads == 0, w,
               f"bottleneck {self.bottleneck} not divisible by n_heads {self.n_heads}")
        H, B, I = self.hidden, self.bottleneck, self.intermediate
        n = self.vocab_size * self.embedding_size + self.n_layers * (2 * self.n_ffn * I * B + 4 * B * H + 3 * B * B)
        _check(n <= MAX_WEIGHTS, w, f"{n:,} weights, more than the limit of {MAX_WEIGHTS:,}")

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
    if not isinstance(table, dict):
        raise UserError(f"{where}: expected a table of model fields, got {type(table).__name__}")
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


class _Checked:
    """A hardware section: every field checked (type, finite, limits) on construction."""

    def __post_init__(self):
        check(self, f"[{_SECTION_OF[type(self)]}]")


@dataclass(frozen=True)
class MemorySpec(_Checked):
    """One chip's memories, bytes."""
    l1_bytes: int = bound(ge=0, le=2**34)
    l2_bytes: int = bound(gt=0, le=2**34)
    weight_mem_bytes: int = bound(ge=0, le=2**34)


@dataclass(frozen=True)
class ComputeSpec(_Checked):
    freq_hz: float = bound(ge=1e3, le=1e11)
    cluster_gemv_macs_per_cycle: float = bound(ge=1e-3, le=1e6)
    cluster_gemm_macs_per_cycle: float = bound(ge=1e-3, le=1e6)
    engine_gemv_macs_per_cycle: float = bound(ge=1e-3, le=1e6)
    engine_gemm_macs_per_cycle: float = bound(ge=1e-3, le=1e6)
    kernel_overhead_cycles: int = bound(ge=0, le=10**9)
    elementwise_per_cycle: float = bound(ge=1e-3, le=1e6)
    # who computes weights the DMA brings into L1 (from L2/L3); weight-memory ones run on the engine
    dma_weights_unit: str = bound(choices=("cluster", "engine"), default="cluster")


@dataclass(frozen=True)
class DmaSpec(_Checked):
    l2_l1_bytes_per_cycle: float = bound(ge=1e-3, le=1e6)


@dataclass(frozen=True)
class OffchipSpec(_Checked):
    l3_bytes_per_s: float = bound(ge=1e3, le=1e13)
    l3_latency_cycles: int = bound(ge=0, le=10**9)
    l3_overlaps_compute: bool


@dataclass(frozen=True)
class PowerSpec(_Checked):
    cluster_active_w: float = bound(ge=0.0, le=1e3)
    engine_active_w: float = bound(ge=0.0, le=1e3)
    idle_w: float = bound(ge=0.0, le=1e3)


@dataclass(frozen=True)
class EnergySpec(_Checked):
    l2_pj_per_byte: float = bound(ge=0.0, le=1e6)
    l3_device_pj_per_byte: float = bound(ge=0.0, le=1e6)   # the L3 device, outside the chip


_HW_SECTIONS = {"memory": MemorySpec, "compute": ComputeSpec, "dma": DmaSpec, "offchip": OffchipSpec,
                "power": PowerSpec, "energy": EnergySpec}
_SECTION_OF = {cls: sec for sec, cls in _HW_SECTIONS.items()}


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
        _check(isinstance(self.name, str), "chip", f"name must be a string, got {self.name!r}")
        _check(isinstance(self.origin, dict), f"chip '{self.name}'", f"[origin] must be a table, got {self.origin!r}")


TOP_ALGORITHMS = ("ring", "recursive_doubling", "tree")     # the group leaders' all-reduce (comm/collectives)


@dataclass(frozen=True)
class Topology:
    """All-reduce hierarchy (group size per level, innermost first; the last level spans the
    rest) and chip-to-chip links: level 0 values, upper levels scaled by the factors."""
    name: str
    group_sizes: tuple
    link_bytes_per_s: float = bound(ge=1e3, le=1e13, default=2.0e8)
    link_latency_s: float = bound(ge=0.0, le=1.0, default=2.0e-6)
    link_pj_per_byte: float = bound(ge=0.0, le=1e6, default=100.0)
    upper_bandwidth_factor: float = bound(ge=1e-6, le=1e3, default=0.5)
    upper_latency_factor: float = bound(ge=0.0, le=1e6, default=2.0)
    link_ports: str = bound(choices=("per_peer", "single"), default="per_peer")
    top_algorithm: str = bound(choices=TOP_ALGORITHMS, default="ring")
    note: str = ""
    origin: dict = field(default_factory=dict)

    def __post_init__(self):
        w = _named(self, "topology")
        _check(all(isinstance(g, int) and not isinstance(g, bool) and 2 <= g <= 4096 for g in self.group_sizes),
               w, f"group_sizes must be integers from 2 to 4096, got {list(self.group_sizes)!r}")

    def level(self, a: int, b: int) -> int:
        """Hierarchy level of the link between ranks a and b (0 = same innermost group)."""
        span = 1
        for lvl, g in enumerate(self.group_sizes):
            span *= g
            if a // span == b // span:
                return lvl
        return len(self.group_sizes)


def table_path(kind: str, name: str) -> Path:
    """The file a data-file option names: a .toml path, or data/KIND/NAME.toml."""
    return Path(name) if name.endswith(".toml") else DATA_DIR / kind / f"{name}.toml"


def load_table(kind: str, name: str, what: str = "") -> tuple[dict, str]:
    """data/KIND/NAME.toml (or a path to a .toml file) as a table, and its path; clear errors
    for an unknown name (listing the known ones) and for invalid TOML."""
    path = table_path(kind, name)
    if not path.is_file():
        known = sorted(p.stem for p in (DATA_DIR / kind).glob("*.toml"))
        raise UserError(f"unknown {what or kind + ' description'} {name!r}; known: {', '.join(known) or 'none'}")
    return read_toml(path), str(path)


def read_toml(path) -> dict:
    """A TOML file as a table; one-line errors for a missing file, bad bytes or bad TOML."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid TOML: not UTF-8 text") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None


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


def with_values(chip: ChipSpec, topo: Topology, values: dict, where: str = "--set") -> tuple[ChipSpec, Topology]:
    """Replace parameters by name: {"section.key": value} (hw sections) or {"link.key": value};
    each value checked like the data files' (errors name `where` and the parameter)."""
    for lhs, v in values.items():
        sec, key = lhs.split(".", 1) if "." in lhs else (lhs, "")
        at = f"{where} {lhs}"
        if sec == "link":
            if key not in {f.name for f in fields(Topology)} - {"name", "origin", "note"}:
                raise UserError(f"{at}: unknown link/topology key {key!r}")
            topo = dataclasses.replace(topo, **{key: coerce(Topology, key, v, at)})
        elif sec in _HW_SECTIONS:
            obj = getattr(chip, sec)
            if key not in {f.name for f in fields(obj)}:
                raise UserError(f"{at}: unknown key {key!r} in [{sec}] "
                                f"(known: {', '.join(f.name for f in fields(obj))})")
            v = coerce(type(obj), key, v, at)
            chip = dataclasses.replace(chip, **{sec: dataclasses.replace(obj, **{key: v})})
        else:
            raise UserError(f"{at}: unknown section {sec!r} (known: link, {', '.join(_HW_SECTIONS)})")
    return chip, topo


def known_parameter(name: str) -> bool:
    """Whether "section.key" names a hardware or link parameter (what --set accepts)."""
    sec, _, key = name.partition(".")
    if sec == "link":
        return key in {f.name for f in fields(Topology)} - {"name", "origin", "note"}
    return sec in _HW_SECTIONS and key in {f.name for f in fields(_HW_SECTIONS[sec])}


def param_value(chip: ChipSpec, topo: Topology, name: str):
    """The value of a parameter by name ("section.key" or "link.key"), as with_values names it."""
    sec, key = name.split(".", 1)
    obj = topo if sec == "link" else getattr(chip, sec, None)
    if obj is None or key not in {f.name for f in fields(obj)}:
        raise UserError(f"unknown parameter {name!r}")
    return getattr(obj, key)


def with_overrides(chip: ChipSpec, topo: Topology, sets: list[str]) -> tuple[ChipSpec, Topology]:
    """Apply `--set section.key=value` strings (values parsed as TOML, else kept as text)."""
    return with_values(chip, topo, parse_sets(sets))
