"""Dry runs of in-process chips by replay: the chip code runs once per kind of chip, not once
per chip, and no message moves.

A dry run's counters come from shapes and the all-reduce schedule alone. Chips whose slices
have the same sizes and the same placement (all of them, or two or three kinds, in the
paper's configurations) do the same work: the chip code (chip.drive with the dry kernels)
runs once for each kind with a recording clock, which keeps the work between two
all-reduces as one summed cost and marks the sections and all-reduces in order. Then every
chip's clock (comm/clockset.py) is charged that work and runs each all-reduce's compiled
message schedule (comm/schedule.py) in the order of the recorded program. The result is the
one run_chip gives on run_virtual's chips, counter for counter (tests/test_dryrun.py); a
traced run, or one with an injected failure, takes that path instead.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time

import numpy as np

from .chip import RunSpec, Shard, chip_summary, drive, load_shard, make_meter, make_model, merge
from .cluster import chip_key, link_key
from .comm.schedule import compile_allreduce
from .config import LlamaConfig
from .hardware import costs
from .comm.clockset import ZERO, ClockSet, add_rows, cost_row
from .hardware.placement import chip_specs
from .models import llama, mobilebert
from .models.partition import plan
from .numerics import drykernels


class _Recorder:
    """The ChipClock interface the Meter and chip.drive use, recording one chip's program:
    rows[i] is the summed work before events[i] (and rows[-1] after the last)."""

    trace = None

    def __init__(self, hw, fetches: dict, ref_hz: float):
        self.costs = costs.Table(hw, ref_hz)
        self.rows, self.events, self._row = [], [], [0] * len(ZERO)
        self._fetches = {k + " rows" for k in fetches}     # the Meter's label of a row fetch

    def charge(self, c: costs.Cost, name: str = "kernel"):
        if name in self._fetches and self.events:
            raise RuntimeError(f"dry run: the input-dependent fetch '{name}' comes after an all-reduce")
        p = self._row                          # clockset.cost_row(c), added in place
        p[0] += c.compute + c.onchip + c.offchip
        p[1] += c.compute
        p[2] += c.onchip
        p[3] += c.offchip
        p[6] += c.onchip_bytes
        p[7] += c.offchip_bytes
        p[9] += c.macs
        p[10] += c.engine

    def mark(self, event: tuple):
        self.rows.append(tuple(self._row))
        self.events.append(event)
        self._row = [0] * len(ZERO)

    def section(self, name: str):
        return _Mark(self, name)

    def span(self, name: str):
        return contextlib.nullcontext()

    def done(self):
        self.rows.append(tuple(self._row))

    def checkpoint(self) -> tuple:
        return len(self.events), tuple(self._row)

    def since(self, cp: tuple) -> tuple:
        """What was recorded since checkpoint cp: (work before the first mark, ((mark, work
        after it), ...)), to be replayed elsewhere."""
        n0, row0 = cp
        now = tuple(self._row)
        if len(self.events) == n0:
            return tuple(a - b for a, b in zip(now, row0)), ()
        after = self.rows[n0 + 1:] + [now]
        return (tuple(a - b for a, b in zip(self.rows[n0], row0)),
                tuple(zip(self.events[n0:], after)))

    def replay(self, part: tuple):
        head, marks = part
        self._row = [a + b for a, b in zip(self._row, head)]
        for event, row in marks:
            self.mark(event)
            self._row = list(row)


class _SameLayers:
    """The model's layer function, run once for each kind of layer: layers whose weights have
    the same shapes and places, on inputs of the same shape at the same position, charge the
    same work and all-reduces (a dry run's values are all zeros), so the others replay the
    first one's record. A Llama decode step runs its 8 or 32 layers as one."""

    def __init__(self, model, meter, rec: _Recorder):
        self.layer, self.meter, self.rec = model._layer, meter, rec
        self.memo, self.keys = {}, {}
        for k, places in meter.where.items():                       # layer -> its buffers' shapes and places
            if k.startswith("layers."):
                _, l, name = k.split(".", 2)
                self.keys.setdefault(int(l), []).append((name, meter.shapes.get(k), places))
        self.keys = {l: tuple(v) for l, v in self.keys.items()}

    def __call__(self, l, L, x, *args):
        key = (self.keys.get(l), x.shape, x.dtype.str, args[:-1])  # args[-1]: the failure hook
        hit = self.memo.get(key)
        if hit is None:
            cp = self.rec.checkpoint()
            y = self.layer(l, L, x, *args)
            hit = self.memo[key] = (self.rec.since(cp), y.shape, y.dtype)
        else:
            self.rec.replay(hit[0])
        return drykernels.zeros(hit[1], hit[2])


class _Mark:
    def __init__(self, rec: _Recorder, name: str):
        self.rec, self.name = rec, name

    def __enter__(self):
        self.rec.mark(("enter", self.name))

    def __exit__(self, *exc):
        self.rec.mark(("exit", self.name))


class _Sync:
    """Collectives' interface: records each all-reduce (shape, dtype). Returns this chip's own
    buffer, which is the all-reduce's value in a dry run of the chip of the lowest rank of its
    kind: every value a dry chip computes is 0, so a sum is 0, and the argmax key of chip 0
    (all logits 0, ties to the lowest index: its vocabulary starts at 0) is the largest."""

    def __init__(self, rec: _Recorder):
        self.rec = rec

    def _run(self, buf):
        buf = np.ascontiguousarray(buf)
        self.rec.mark(("allreduce", buf.shape, buf.dtype.str))
        return buf.copy()

    def sum(self, buf, label: str = ""):
        return self._run(buf)

    def max(self, buf, label: str = ""):
        return self._run(buf)


_PROGRAMS = {}          # recorded programs of this process (a sweep repeats them: see _record)


def _record(spec: RunSpec, sh: Shard, fetches: dict, kind: tuple, size: int):
    """One chip's program: (recorder, drive()'s result, all-reduce calls). A program depends on
    the chip's hardware, its kind, the run's settings and which chip recorded it, never on the
    topology or the all-reduce algorithm: a sweep over those records each kind once."""
    key = (repr(sh.hw), spec.ref_hz, sh.cfg, kind, size, sh.sl.rank, sh.placement, spec.payload, spec.prefill,
           None if spec.prompt_ids is None else tuple(spec.prompt_ids), spec.gen_tokens, spec.seq_len,
           spec.input_seed, tuple(sorted(fetches.items())))
    hit = _PROGRAMS.get(key)
    if hit is None:
        rec = _Recorder(sh.hw, fetches, spec.ref_hz)
        sync = _Sync(rec)
        meter = make_meter(spec, sh, rec)
        model = make_model(spec, sh, sync, meter)
        model._layer = _SameLayers(model, meter, rec)
        run = drive(spec, sh, model, meter)
        rec.done()
        if len(_PROGRAMS) >= 256:
            _PROGRAMS.clear()
        hit = _PROGRAMS[key] = (rec, run, sum(e[0] == "allreduce" for e in rec.events))   # replayed layers too
    rec, run, calls = hit
    return rec, dict(run, gen=list(run["gen"]), inputs=list(run["inputs"])), calls


def _kind(mod, cfg, sl, specs, hw, link) -> tuple:
    """Chips of one kind do the same work, but for the fetches of input rows (mod.input_fetches):
    the same chip (its parameters, hence its costs and memories; its link values), the same
    slice sizes and buffer shapes, hence the same places (placement is a function of shapes
    and memories)."""
    return (mod.work_class(cfg, sl), tuple((s.key, tuple(s.shape), s.dtype, s.category) for s in specs),
            chip_key(hw), link_key(link))


def _fetch_row(table: costs.Table, sh: Shard, fetches: dict) -> tuple:
    """The state-row increments of a chip's input-row fetches (as Meter.rows charges them)."""
    row = ZERO
    for key, nbytes in fetches.items():
        row = add_rows(row, cost_row(table.row_fetch(nbytes, sh.where[key])))
    return row


def run_dry(spec: RunSpec, size: int) -> dict:
    """run_virtual(size, lambda t: run_chip(spec, t))[0] of a dry run, by replay."""
    from .chip import encoder_inputs, prompt_of
    t0 = time.perf_counter()
    first = load_shard(spec, 0, size, None)                 # checks the run, chooses the placement
    cfg = first.cfg
    inputs = prompt_of(spec) if isinstance(cfg, LlamaConfig) else encoder_inputs(cfg, spec)
    speeds = spec.speeds(cfg, size)
    slices, specs = plan(cfg, size, speeds), chip_specs(cfg, size, first.run_len, speeds)
    mod = llama if isinstance(cfg, LlamaConfig) else mobilebert
    tables = {}                                             # chip_key -> its costs.Table
    kinds, of, shards, fix = {}, [], [], {}
    for r in range(size):
        hw = spec.hw_of(r)
        k = _kind(mod, cfg, slices[r], specs[r], hw, None if spec.links is None else spec.links[r])
        if k[2] not in tables:
            tables[k[2]] = costs.Table(hw, spec.ref_hz)
        table = tables[k[2]]
        fetches = mod.input_fetches(cfg, slices[r], inputs)
        if k not in kinds:                                  # its shard placed, its program recorded
            sh = first if r == 0 else load_shard(spec, r, size, None)
            kinds[k] = (sh, _fetch_row(table, sh, fetches)) + _record(spec, sh, fetches, k, size)
        else:                                               # the same placement: only its slice differs
            sh = dataclasses.replace(kinds[k][0], sl=slices[r], specs=specs[r], hw=hw)
            mine = _fetch_row(table, sh, fetches)
            if mine != kinds[k][1]:                         # its fetches in place of the recorded chip's
                fix[r] = tuple(a - b for a, b in zip(mine, kinds[k][1]))
        of.append(k)
        shards.append(sh)
    kinds = {k: v[2:] for k, v in kinds.items()}
    programs = list(kinds.values())
    events = programs[0][0].events
    if any(p[0].events != events for p in programs):
        raise RuntimeError("dry run: chips of different kinds disagree on their all-reduces")
    ranks = {k: [r for r in range(size) if of[r] == k] for k in kinds}
    cs = ClockSet(spec.hws(size), spec.topology, spec.ref_hz, spec.links)
    for r, row in fix.items():                              # charged before the first all-reduce
        cs.charge([r], row)
    topo = spec.topology
    for i, ev in enumerate(events):
        for k, rs in ranks.items():
            cs.charge(rs, kinds[k][0].rows[i])
        if ev[0] == "enter":
            cs.enter(ev[1])
        elif ev[0] == "exit":
            cs.exit(ev[1])
        else:
            cs.allreduce(compile_allreduce(spec.allreduce, tuple(topo.group_sizes), topo.top_algorithm, size,
                                           ev[1], ev[2]))
    for k, rs in ranks.items():
        cs.charge(rs, kinds[k][0].rows[-1])
    parts = [(chip_summary(spec, sh, cs.clock(r), r, kinds[of[r]][2], cs.messages[r]), kinds[of[r]][1]["out_local"])
             for r, sh in enumerate(shards)]
    run = dict(kinds[of[0]][1])
    run["step_s"] = (time.perf_counter() - t0) / run["steps"]
    return merge(spec, shards[0], run, parts)


def replayable(spec: RunSpec) -> bool:
    """A dry run without a trace or an injected failure (those take run_chip's path), of the
    tensor partition (a pipeline's dry run runs its stages on in-process chips)."""
    return spec.dry_run and not spec.trace and spec.fail_rank < 0 and spec.partition == "tensor"


def run_in_process(spec: RunSpec, size: int) -> dict:
    """The merged result of `size` in-process chips: by replay for a plain dry run, else
    run_chip on run_virtual's chips."""
    if replayable(spec):
        return run_dry(spec, size)
    from .comm.virtual import run_virtual
    from .chip import run_chip
    return run_virtual(size, lambda t: run_chip(spec, t))[0]
