"""What a run is, identical on every rank (RunSpec), and its inputs: which chip each rank is
(its own hardware, for a mixed cluster), how the model is split over them, the prompt."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cluster import Cluster
from .config import ChipSpec, LlamaConfig, ModelConfig, Topology
from .errors import UserError
from .hardware.costs import throughput_macs_per_s

SPLITS = ("balanced", "by-speed")


@dataclass
class RunSpec:
    """Everything a run needs, identical on every rank."""
    model: str
    weights: str
    chip: ChipSpec
    prompt_ids: list | None = None     # decode: default [1]; encode: default seeded random ids
    cfg: ModelConfig | None = None     # the model as the user gave it (checked against the weights file)
    gen_tokens: int = 32
    seq_len: int = 128
    placement: str = "auto"
    allreduce: str = "hierarchical"
    payload: str = "int32"
    fail_rank: int = -1
    fail_at: str = ""
    input_seed: int = 0
    topology: Topology | None = None
    dry_run: bool = False
    trace: bool = False
    progress: bool = False          # rank 0 shows decode steps with an ETA on a terminal
    prefill: str = "parallel"       # decode: the prompt in one pass, or "token" by token
    partition: str = "tensor"       # heads/FFN split over chips (the paper's), or "pipeline": whole layers
    cluster: Cluster | None = None  # each rank's own chip (None: every rank is `chip`)
    split: str = "balanced"         # equal shares, or "by-speed": in proportion to throughput
    hops: bool = False              # every message of the all-reduce algorithm moves (else one exchange each)

    def hw_of(self, rank: int) -> ChipSpec:
        """The chip rank `rank` is."""
        return self.chip if self.cluster is None else self.cluster.chips[rank]

    def hws(self, size: int) -> list:
        return [self.hw_of(r) for r in range(size)]

    @property
    def ref_hz(self) -> float:
        """The clock every chip's cycles count: the fastest chip's (costs.py)."""
        chips = (self.chip,) if self.cluster is None else self.cluster.chips
        return max(c.compute.freq_hz for c in chips)

    @property
    def links(self) -> tuple | None:
        """Each rank's link values, when a chip of the cluster has its own (else None)."""
        return None if self.cluster is None else self.cluster.links

    def speeds(self, cfg: ModelConfig, size: int) -> tuple | None:
        """partition.plan's speeds: None (balanced), or each chip's throughput (by-speed:
        costs.throughput_macs_per_s, at the GEMV rate for a decoder, GEMM for an encoder)."""
        if self.split == "balanced":
            return None
        gemm = not isinstance(cfg, LlamaConfig)
        return tuple(throughput_macs_per_s(self.hw_of(r), gemm) for r in range(size))


def prompt_of(spec: RunSpec) -> list:
    """Decode prompt: the given ids, else [1]."""
    return [1] if spec.prompt_ids is None else list(spec.prompt_ids)


def run_len_of(cfg: ModelConfig, spec: RunSpec) -> int:
    if isinstance(cfg, LlamaConfig):
        return len(prompt_of(spec)) + spec.gen_tokens - 1
    return spec.seq_len


def validate_inputs(cfg: ModelConfig, spec: RunSpec):
    """Prompt ids, lengths: clear errors before any chip starts."""
    ids = [] if spec.prompt_ids is None else spec.prompt_ids
    bad = [i for i in ids if not 0 <= i < cfg.vocab_size]
    if bad:
        raise UserError(f"prompt id {bad[0]} is outside the vocabulary of '{cfg.name}' (0..{cfg.vocab_size - 1})")
    if spec.prompt_ids is not None and not spec.prompt_ids:
        raise UserError("--prompt-ids is empty: give at least one token id")
    if isinstance(cfg, LlamaConfig):
        if spec.gen_tokens < 1:
            raise UserError(f"--gen-tokens must be >= 1, got {spec.gen_tokens}")
        n = run_len_of(cfg, spec)
        if n > cfg.context_len:
            raise UserError(f"prompt ({len(prompt_of(spec))} ids) + --gen-tokens {spec.gen_tokens} needs {n} "
                            f"positions, more than the context of {cfg.context_len} of '{cfg.name}'")
    else:
        if not 1 <= spec.seq_len <= cfg.max_positions:
            raise UserError(f"--seq-len {spec.seq_len} outside 1..{cfg.max_positions} (max positions of '{cfg.name}')")
        if spec.prompt_ids is not None and len(spec.prompt_ids) != spec.seq_len:
            raise UserError(f"{len(spec.prompt_ids)} input ids (--prompt-ids) but --seq-len {spec.seq_len}: "
                            "give one of them, or the same length")


def encoder_inputs(cfg, spec: RunSpec) -> np.ndarray:
    """MobileBERT input ids: the given ids, else seeded random ids of length --seq-len."""
    if spec.prompt_ids is not None:
        return np.asarray(spec.prompt_ids, np.int64)
    rng = np.random.default_rng(spec.input_seed)
    return rng.integers(0, cfg.vocab_size, spec.seq_len)
