"""Pipeline partition plan: which whole layers each chip runs, and what it stores.

Pure arithmetic (no MPI), the alternative to partition.py's head/FFN splitting. Chip r of N
runs a balanced contiguous range of layers (partition.split: at least one layer per chip) and
holds those layers whole: every head, every FFN unit, their KV cache. Every weight is owned by
exactly one chip:
- Llama: the tied embedding (which is the classifier), the final norm and a separate lm_head
  live on the last chip. It ends a token's pass (final norm, logits, greedy token) and starts
  the next one (the token's embedding row), so a token goes last -> 0 -> 1 -> ... -> last.
- MobileBERT: the embeddings live on chip 0, which starts the pass; the final hidden states
  end on the last chip.
Activations travel chip to chip as the int16 residual stream: rows x width x 2 bytes a hop.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from ..config import LlamaConfig, ModelConfig
from ..errors import UserError
from . import llama, mobilebert
from .layout import Spec
from .partition import ChipSlice, check_chips, split

PARTITIONS = ("tensor", "pipeline")


@dataclass(frozen=True)
class Stage:
    """What chip `rank` of `n_chips` runs in a pipeline; layers is [start, stop)."""
    rank: int
    n_chips: int
    layers: tuple[int, int]
    embedding: bool             # holds the embedding (Llama: also the final norm and classifier)

    @property
    def last(self) -> bool:
        return self.rank == self.n_chips - 1


def max_chips(cfg: ModelConfig, partition: str) -> int:
    """The most chips a partition can use: one (KV) head each, or one layer each."""
    return cfg.max_chips if partition == "tensor" else cfg.n_layers


def check_stages(cfg: ModelConfig, n_chips: int):
    if n_chips < 1:
        raise UserError(f"chip count must be >= 1, got {n_chips}")
    if n_chips > cfg.n_layers:
        raise UserError(f"{n_chips} chips > {cfg.n_layers} layers of model '{cfg.name}': pipeline splitting "
                        f"needs at least one layer per chip (use at most {cfg.n_layers} chips)")


def check_chips_for(cfg: ModelConfig, n_chips: int, partition: str):
    """The chip count's limit under `partition` (a clear error naming both numbers)."""
    (check_chips if partition == "tensor" else check_stages)(cfg, n_chips)


@functools.lru_cache(maxsize=64)
def stages(cfg: ModelConfig, n_chips: int) -> tuple[Stage, ...]:
    check_stages(cfg, n_chips)
    owner = n_chips - 1 if isinstance(cfg, LlamaConfig) else 0
    return tuple(Stage(r, n_chips, lr, r == owner) for r, lr in enumerate(split(cfg.n_layers, n_chips)))


def stage_slice(cfg: ModelConfig, st: Stage) -> ChipSlice:
    """A stage's chip owns every head, FFN unit and hidden column of its layers, and the
    vocabulary rows only if it holds the embedding."""
    llama_ = isinstance(cfg, LlamaConfig)
    heads = (0, cfg.n_kv_heads if llama_ else cfg.n_heads)
    ffn = (0, cfg.ffn_hidden if llama_ else cfg.intermediate)
    hidden = (0, cfg.dim if llama_ else cfg.hidden)
    vocab = (0, cfg.vocab_size) if st.embedding else (0, 0)
    return ChipSlice(st.rank, st.n_chips, heads, ffn, vocab, hidden)


def width(cfg: ModelConfig) -> int:
    """Columns of the residual stream that travels between stages."""
    return cfg.dim if isinstance(cfg, LlamaConfig) else cfg.hidden


def hop_bytes(cfg: ModelConfig, rows: int) -> int:
    """Bytes of one hand-off: the int16 residual stream, rows x width."""
    return rows * width(cfg) * 2


def receives(st: Stage, cfg: ModelConfig) -> bool:
    """Does this stage's chip receive activations (Llama: every chip, the first from the
    embedding on the last; MobileBERT: every chip but chip 0)?"""
    return st.n_chips > 1 and (isinstance(cfg, LlamaConfig) or st.rank > 0)


def stage_specs(cfg: ModelConfig, st: Stage, run_len: int) -> list[Spec]:
    """Every buffer chip `st` holds: its layers (the models' own specs over its layer range),
    the embedding on its owner, and a buffer for the incoming activations of one pass
    (one row, decode; the sequence, encode)."""
    mod = llama if isinstance(cfg, LlamaConfig) else mobilebert
    out = mod.specs(cfg, stage_slice(cfg, st), run_len, layers=st.layers, embedding=st.embedding)
    if receives(st, cfg):
        rows = 1 if isinstance(cfg, LlamaConfig) else run_len
        out.insert(1, Spec("link_buffer", "activations", (hop_bytes(cfg, rows),), "uint8"))
    return out
