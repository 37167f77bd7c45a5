"""Pipeline partition: one rank = one stage of whole layers; activations go chip to chip.

The alternative to the paper's head/FFN splitting (`--partition pipeline`). Chip r runs layers
[l0, l1) whole (models/stages.py), with the models' own layer code, so every layer's numerics
are one chip's and the outputs are bit-identical to one chip (no partial sums anywhere). The
int16 residual stream is handed from chip to chip (comm/pipe.py: the all-reduce's links,
stamps and charges); there is no all-reduce.

- Llama: a token's pass goes last -> 0 -> 1 -> ... -> last. The last chip holds the tied
  embedding (= the classifier) and the final norm: it embeds the token and sends its residual
  to chip 0; each chip runs its layers and sends the residual on; the last chip runs its
  layers, the final norm and the classifier and picks the next token (greedy argmax over the
  whole vocabulary, on chip). Decode is one token at a time, so a token's latency is the sum
  of the stages plus the hand-offs. The prompt goes through the same pipeline: in one pass of
  its rows (parallel prefill) or one token at a time (token prefill; the prompt's tokens are
  not overlapped in the pipeline).
- MobileBERT: chip 0 embeds the input; the hidden stream goes through the chips' layers; the
  final hidden states end on the last chip (the report's output is gathered from it on the
  report channel, which is not emulated chip traffic, as for the tensor partition).

Sections and phases (the report's figures): a chip's "blocks" section holds its own layers and
the hand-offs between two stages' layers (the transfer into it and its send onwards), not the
idle wait for an upstream chip; the report adds the chips' block sections up (a token visits
them in turn). The hand-off of the embedded token (last chip -> chip 0) is outside the blocks.
A chip other than the last waits for the first decode token outside both phases: that wait
covers the end of the prompt's pass on the later chips (prefill) and the first token's embedding
(decode), so the last chip's clock alone bounds each phase: time to first token and latency per
token are its time, which is the whole pass.
"""
from __future__ import annotations

import time

import numpy as np

from .chip import (InjectedFailure, RunSpec, Shard, _DryAmax, _from_file, _progress, chip_summary, encoder_inputs,
                   llama_logit_scale, make_meter, merge, prompt_of, run_len_of, validate_inputs)
from .comm.pipe import Pipe
from .config import LlamaConfig, load_model
from .errors import UserError
from .files.weights import WeightsFile
from .hardware.counters import ChipClock
from .hardware.placement import choose_placement, place_shard
from .models import llama, mobilebert
from .models.stages import Stage, stage_slice, stages, width


def check_options(payload: str, allreduce: str):
    """Options of the tensor partition's all-reduce have no meaning here: refused, not ignored."""
    if payload != "int32":
        raise UserError(f"--payload {payload} requantizes all-reduce partial sums; --partition pipeline has no "
                        "all-reduce (its activations travel as the int16 residual stream): drop --payload")
    if allreduce != "hierarchical":
        raise UserError(f"--allreduce {allreduce}: --partition pipeline has no all-reduce (activations go chip to "
                        "chip): drop --allreduce")


class Alone:
    """The collectives' interface of a chip that holds its layers whole: every sum and max is
    over this one chip (the identity, as an all-reduce over one rank)."""

    calls = 0

    def sum(self, buf, label: str = ""):
        return np.array(buf, copy=True)

    def max(self, buf, label: str = ""):
        return np.array(buf, copy=True)


def load_stage(spec: RunSpec, rank: int, size: int, wf, fail=lambda phase: None) -> tuple[Shard, Stage]:
    """Check the run, and place stage `rank` of `size` (from wf, or zeros in a dry run)."""
    cfg = wf.cfg if wf is not None else (spec.cfg or load_model(spec.model))
    amax = _DryAmax() if spec.dry_run else wf.act_maxabs
    check_options(spec.payload, spec.allreduce)
    if spec.split != "balanced":
        raise UserError(f"--split {spec.split} shares heads and FFN units by speed; --partition pipeline gives "
                        "each chip whole layers: drop --split")
    validate_inputs(cfg, spec)
    st = stages(cfg, size)[rank]
    run_len = run_len_of(cfg, spec)
    placement = choose_placement(cfg, size, run_len, spec.hws(size), spec.placement, partition="pipeline")
    fail("load")
    hw = spec.hw_of(rank)
    specs, arena, tensors, where = place_shard(wf, cfg, size, rank, run_len, hw, placement, spec.dry_run,
                                               partition="pipeline")
    return Shard(cfg, stage_slice(cfg, st), run_len, placement, specs, arena, tensors, where, amax, hw), st


def make_stage_model(spec: RunSpec, sh: Shard, st: Stage, meter):
    cfg = sh.cfg
    if isinstance(cfg, LlamaConfig):
        return _from_file(spec, lambda: llama.LlamaChip(cfg, sh.sl, sh.tensors, sh.amax, Alone(), meter, sh.run_len,
                                                        layers=st.layers, embedding=st.embedding))
    return _from_file(spec, lambda: mobilebert.MobileBertChip(cfg, sh.sl, sh.tensors, sh.amax, Alone(), meter,
                                                              layers=st.layers, embedding=st.embedding))


class Flow:
    """One chip's part of a pass (a token, the prompt, or the encoder's input)."""

    def __init__(self, cfg, st: Stage, model, meter, pipe: Pipe, fail):
        self.cfg, self.st, self.model, self.meter, self.pipe, self.fail = cfg, st, model, meter, pipe, fail
        self.decoder = isinstance(cfg, LlamaConfig)
        self.prev = (st.rank - 1) % st.n_chips          # Llama's chip 0 takes the last chip's embedding

    def take(self, rows: int):
        """The next hand-off into this chip (host side), or None where a pass starts."""
        starts = self.st.last if self.decoder else self.st.rank == 0
        return None if starts else self.pipe.recv(self.prev, (rows, width(self.cfg)))

    def _blocks(self, x, msg, *pos):
        """This chip's layers, with the hand-off from the stage before (not from the embedding)
        and to the stage after inside its blocks section."""
        st, pipe = self.st, self.pipe
        upstream_blocks = msg is not None and not (self.decoder and st.rank == 0)
        if msg is not None:
            pipe.idle_until_sent(msg)
            if not upstream_blocks:
                x = pipe.arrive(msg)
        with self.meter.section("blocks"):
            if upstream_blocks:
                x = pipe.arrive(msg)
            x = self.model.blocks(x, *pos, self.fail)
            if not st.last:
                self.pipe.send(x, st.rank + 1)
        return x

    def token(self, ids, pos0: int, msg):
        """Llama: tokens ids at positions pos0.. (the last chip; msg None), or the residual in msg
        (the others). Returns the int16 logits of the last row on the last chip, else None."""
        st = self.st
        if not st.last:
            self._blocks(None, msg, pos0)
            return None
        x = self.model.embed(ids, self.fail)
        if st.n_chips > 1:
            self.pipe.send(x, 0)
            msg = self.pipe.recv(st.n_chips - 2, x.shape)
        return self.model.head(self._blocks(x, msg, pos0))

    def encode(self, ids, msg):
        """MobileBERT: the input ids (chip 0), or the hidden stream in msg (the others). Returns
        the hidden stream after this chip's layers, int16 (S, hidden)."""
        x = self.model.embed(ids, np.zeros(len(ids), np.int64), self.fail) if msg is None else None
        return self._blocks(x, msg)


def drive_stage(spec: RunSpec, sh: Shard, st: Stage, model, meter, pipe: Pipe, fail=lambda phase: None,
                show: bool = False) -> dict:
    """chip.drive's pipeline counterpart: this chip's part of every pass. Its output slice is
    the whole output on the last chip, no columns elsewhere."""
    cfg, run_len = sh.cfg, sh.run_len
    flow = Flow(cfg, st, model, meter, pipe, fail)
    t0 = time.perf_counter()
    if not isinstance(cfg, LlamaConfig):
        ids = encoder_inputs(cfg, spec)
        x = flow.encode(ids, flow.take(len(ids)))
        out = x if st.last else np.zeros((len(ids), 0), np.int16)       # int16 (S, hidden) on the last chip
        return dict(out_local=out, out_scale=model.s_x, first_pos=0, inputs=[int(i) for i in ids], steps=1,
                    gen=[], phases=None, step_s=time.perf_counter() - t0)
    ids = prompt_of(spec)
    passes = [(ids, 0)] if spec.prefill == "parallel" else [([tok], pos) for pos, tok in enumerate(ids)]
    logits, gen = [], []
    with meter.phase("prefill"):
        for chunk, pos0 in passes:
            logits.append(flow.token(chunk, pos0, flow.take(len(chunk))))
        if st.last:
            gen.append(model.argmax(logits[-1]))
    for pos in range(len(ids), run_len):
        if show:
            _progress(pos - len(ids), run_len - len(ids), t0)
        msg = flow.take(1)
        if msg is not None and pos == len(ids):
            pipe.idle_until_sent(msg)                   # outside the phases: see the module docstring
        with meter.phase("decode"):
            logits.append(flow.token([gen[-1]] if st.last else None, pos, msg))
            if st.last:
                gen.append(model.argmax(logits[-1]))
    out = np.stack(logits) if st.last else np.zeros((len(logits), 0), np.int16)   # int16 (rows, vocab) on the last
    return dict(out_local=out, out_scale=llama_logit_scale(sh.amax),
                first_pos=len(ids) - 1 if spec.prefill == "parallel" else 0,
                inputs=ids + gen[:-1], steps=run_len, gen=gen,
                phases={"prefill": {"tokens": len(ids), "steps": len(passes)},
                        "decode": {"tokens": run_len - len(ids), "steps": run_len - len(ids)}},
                step_s=(time.perf_counter() - t0) / run_len)


def run_stage(spec: RunSpec, t) -> dict | None:
    """chip.run_chip for --partition pipeline: run stage t.rank of t.size. Returns the merged
    result on rank 0 (the outputs, tokens and inputs are the last chip's), None elsewhere."""
    rank, size = t.rank, t.size

    def fail(phase):
        if rank == spec.fail_rank and phase == spec.fail_at:
            raise InjectedFailure(f"injected failure at phase '{phase}' on rank {rank}")

    wf = WeightsFile(spec.weights, expect=spec.cfg) if spec.weights else None
    sh, st = load_stage(spec, rank, size, wf, fail)
    clock = ChipClock(sh.hw, spec.topology, rank, spec.ref_hz, spec.links)
    if spec.trace:
        clock.trace = []
    meter = make_meter(spec, sh, clock)
    model = make_stage_model(spec, sh, st, meter)
    pipe = Pipe(t, clock)
    t.barrier()                                         # every chip loaded before the clocks start
    run = drive_stage(spec, sh, st, model, meter, pipe, fail, show=spec.progress and rank == 0 and not spec.dry_run)
    fail("report")
    t.finish()
    chip = chip_summary(spec, sh, clock, rank, 0, t.sent_messages, wf.bytes_read if wf is not None else 0)
    chip["layers"] = list(st.layers)
    if wf is not None:
        wf.close()
    meta = {k: v for k, v in run.items() if k != "out_local"} if st.last else None
    parts = t.gather_obj((chip, run["out_local"], clock.trace, meta))
    if rank != 0:
        return None
    last = dict(parts[-1][3], out_local=None)
    res = merge(spec, sh, last, parts, [p[2] for p in parts] if spec.trace else None)
    res["partition"] = "pipeline"
    return res
