"""Partition plan: which heads, FFN columns, hidden columns and vocabulary rows each chip owns.

Pure arithmetic (no MPI). Shares are equal (balanced: today's split, the default) or in
proportion to each chip's throughput (by speed: `speeds`, one positive number per chip).
Every big weight is owned by exactly one chip:
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
from fractions import Fraction

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


def apportion(n_units: int, weights, minimum: int = 0) -> list[int]:
    """n_units whole units shared in proportion to weights by largest remainders (ties to the
    lower rank), each share at least `minimum`: a chip whose quota falls below it gets the
    minimum, and the rest is shared again among the others. Exact (Fractions): the same
    shares on every rank and machine. Equal weights give split()'s shares."""
    k = len(weights)
    minimum = minimum if n_units >= minimum * k else 0
    w = [Fraction(x) for x in weights]
    fixed: dict[int, int] = {}
    while True:
        free = [r for r in range(k) if r not in fixed]
        left = n_units - sum(fixed.values())
        total = sum(w[r] for r in free)
        quota = {r: left * w[r] / total for r in free}
        low = [r for r in free if quota[r] < minimum]
        if not low:
            break
        fixed.update((r, minimum) for r in low)
    out = [fixed.get(r, 0) for r in range(k)]
    for r in free:
        out[r] = int(quota[r])                      # floor: quotas are >= 0
    rest = left - sum(out[r] for r in free)
    for r in sorted(free, key=lambda r: (-(quota[r] - int(quota[r])), r))[:rest]:
        out[r] += 1
    return out


def split_by(n_items: int, weights, align: int = 1, minimum: int = 0) -> list[tuple[int, int]]:
    """Contiguous split of range(n_items) in proportion to weights (apportion over units of
    `align` items, boundaries on multiples of align; the last range ends at n_items)."""
    units = apportion(-(-n_items // align), weights, minimum)
    out, start = [], 0
    for u in units:
        stop = min(n_items, start + u * align)
        out.append((start, stop))
        start = stop
    return out


def head_shares(n_heads: int, speeds, unit: str = "heads") -> list[int]:
    """Whole heads per chip in proportion to speeds, at least one each. A chip whose quota of
    heads is below one half (it would round to none) is too slow for a head of its own: refused."""
    total = sum(Fraction(s) for s in speeds)
    for r, s in enumerate(speeds):
        q = n_heads * Fraction(s) / total
        if q < Fraction(1, 2):
            raise UserError(f"--split by-speed: chip {r} is too slow to get one of the {n_heads} {unit} "
                            f"(its throughput share {float(Fraction(s) / total):.3g} x {n_heads} {unit} = "
                            f"{float(q):.2f} < 0.5); use --split balanced, fewer chips or a faster chip")
    return apportion(n_heads, speeds, 1)


def _ranges(counts: list[int]) -> list[tuple[int, int]]:
    out, start = [], 0
    for c in counts:
        out.append((start, start + c))
        start += c
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


def plan(cfg: ModelConfig, n_chips: int, speeds: tuple | None = None) -> list[ChipSlice]:
    """Every chip's slices: equal shares (speeds None), or shares in proportion to speeds."""
    return list(_plan(cfg, n_chips, speeds))


@functools.lru_cache(maxsize=64)
def _plan(cfg: ModelConfig, n_chips: int, speeds: tuple | None) -> tuple[ChipSlice, ...]:
    """plan() computed once (every in-process chip asks for the whole plan)."""
    check_chips(cfg, n_chips)
    if speeds is not None and len(speeds) != n_chips:
        raise ValueError(f"{len(speeds)} speeds for {n_chips} chips")
    llama = isinstance(cfg, LlamaConfig)
    n_heads = cfg.n_kv_heads if llama else cfg.n_heads
    n_ffn = cfg.ffn_hidden if llama else cfg.intermediate
    if speeds is None:
        heads = split(n_heads, n_chips)
        ffn = split(n_ffn, n_chips, SIMD_ALIGN)
        hidden = [(0, cfg.dim)] * n_chips if llama else split(cfg.hidden, n_chips, SIMD_ALIGN)
        vocab = split(cfg.vocab_size, n_chips)
    else:
        assert llama or isinstance(cfg, MobileBertConfig)
        heads = _ranges(head_shares(n_heads, speeds, "KV heads" if llama else "heads"))
        ffn = split_by(n_ffn, speeds, SIMD_ALIGN, 1)
        hidden = [(0, cfg.dim)] * n_chips if llama else split_by(cfg.hidden, speeds, SIMD_ALIGN, 1)
        vocab = split_by(cfg.vocab_size, speeds, 1, 1)
    return tuple(ChipSlice(r, n_chips, heads[r], ffn[r], vocab[r], hidden[r]) for r in range(n_chips))


def syncs_per_block(cfg: ModelConfig) -> int:
    """All-reduces per Transformer block (see module docstring and README)."""
    if isinstance(cfg, LlamaConfig):
        return 2                    # after attention, after FFN
    return 2 + cfg.n_ffn            # bottleneck+value partials, attention output, one per FFN
