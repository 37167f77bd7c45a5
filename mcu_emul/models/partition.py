"""Partition plan: which heads, FFN columns, hidden columns and vocabulary rows each chip owns.

Pure arithmetic (no MPI). Every big weight is owned by exactly one chip:
- Llama: whole KV heads (with their query heads): Q/K/V rows, W_o columns, KV cache;
  FFN hidden units: W1/W3 rows and W2 columns; vocabulary rows of the tied embedding.
- MobileBERT: heads (Q/K rows, attention-output columns); hidden columns of the 512-wide
  stream (bottleneck-input / bottleneck-attention / value columns, output-bottleneck and
  embedding-transform rows, position/type embedding columns); intermediate units of each
  stacked FFN; vocabulary rows of the word embedding.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from ..config import LlamaConfig, MobileBertConfig, ModelConfig
from ..errors import UserError

SIMD_ALIGN = 4  # int8 SIMD dot products take 4 lanes: FFN/hidden slices are multiples of 4


def split(n_items: int, n_parts: int, align: int = 1) -> list[tuple[int, int]]:
    """Balanced contiguous split of range(n_items) into n_parts, boundaries on multiples of align."""
    units = -(-n_items // align)
    base, extra = divmod(units, n_parts)
    out, start = [], 0
    for p in range(n_parts):
        stop = min(n_items, start + (base + (p < extra)) * align)
        out.append((start, stop))
        start = stop
    return out


@dataclass(frozen=True)
class ChipSlice:
    """What chip `rank` of `n_chips` owns; all ranges are [start, stop)."""
    rank: int
    n_chips: int
    heads: tuple[int, int]      # KV heads (Llama) or heads (MobileBERT)
    ffn: tuple[int, int]        # FFN hidden / intermediate units
    vocab: tuple[int, int]      # vocabulary rows
    hidden: tuple[int, int]     # MobileBERT 512-wide stream columns; Llama: (0, dim)


def check_chips(cfg: ModelConfig, n_chips: int):
    if n_chips < 1:
        raise UserError(f"chip count must be >= 1, got {n_chips}")
    unit = "KV heads" if isinstance(cfg, LlamaConfig) else "heads"
    if n_chips > cfg.max_chips:
        raise UserError(f"{n_chips} chips > {cfg.max_chips} {unit} of model '{cfg.name}': head-wise "
                        f"splitting needs at least one {unit[:-1]} per chip (use at most {cfg.max_chips} chips)")


def plan(cfg: ModelConfig, n_chips: int) -> list[ChipSlice]:
    return list(_plan(cfg, n_chips))


@functools.lru_cache(maxsize=64)
def _plan(cfg: ModelConfig, n_chips: int) -> tuple[ChipSlice, ...]:
    """plan() computed once (every in-process chip asks for the whole plan)."""
    check_chips(cfg, n_chips)
    if isinstance(cfg, LlamaConfig):
        heads = split(cfg.n_kv_heads, n_chips)
        ffn = split(cfg.ffn_hidden, n_chips, SIMD_ALIGN)
        hidden = [(0, cfg.dim)] * n_chips
    else:
        assert isinstance(cfg, MobileBertConfig)
        heads = split(cfg.n_heads, n_chips)
        ffn = split(cfg.intermediate, n_chips, SIMD_ALIGN)
        hidden = split(cfg.hidden, n_chips, SIMD_ALIGN)
    vocab = split(cfg.vocab_size, n_chips)
    return tuple(ChipSlice(r, n_chips, heads[r], ffn[r], vocab[r], hidden[r]) for r in range(n_chips))


def syncs_per_block(cfg: ModelConfig) -> int:
    """All-reduces per Transformer block (see module docstring and README)."""
    if isinstance(cfg, LlamaConfig):
        return 2                    # after attention, after FFN
    return 2 + cfg.n_ffn            # bottleneck+value partials, attention output, one per FFN
