"""The clocks and counters of all chips of a run at once, for dry runs: the arithmetic of
counters.ChipClock (charge, send, receive, sections) applied to every chip from recorded work
instead of one call per kernel and per message.

A chip's state is one row of ints: [now, compute, onchip, offchip, link, idle cycles,
onchip, offchip, link bytes, macs, engine cycles]. Work between two all-reduces is charged as
one summed Cost (integer sums: the order of the terms does not matter); an all-reduce runs
its compiled schedule (comm/schedule.py): sends, receives and reductions in each chip's own
order with the same link and wait rules as ChipClock, so every counter equals the one a run
with real messages gets (tests/test_dryrun.py compares them).
"""
from __future__ import annotations

from ..hardware import costs
from ..hardware.counters import ChipClock
from .schedule import RECV, REDUCE, SEND, Schedule

NOW, LINK, IDLE, LINK_BYTES = 0, 4, 5, 8
WIDTH = 11


def cost_row(c: costs.Cost) -> tuple:
    """A Cost as increments of a state row."""
    return (c.cycles, c.compute, c.onchip, c.offchip, 0, 0, c.onchip_bytes, c.offchip_bytes, 0, c.macs, c.engine)


def add_rows(a, b) -> tuple:
    return tuple(x + y for x, y in zip(a, b))


ZERO = (0,) * WIDTH


class ClockSet:
    """Clocks of chips 0..n-1 with specs hws[r] on topology topo, counting cycles of ref_hz
    (default: the fastest chip's clock), with each rank's link values links[r] (None: topo's)."""

    def __init__(self, hws: list, topo, ref_hz: float | None = None, links: tuple | None = None):
        self.hws, self.topo, self.n, self.links = hws, topo, len(hws), links
        self.ref_hz = ref_hz or max(hw.compute.freq_hz for hw in hws)
        self.state = [[0] * WIDTH for _ in hws]
        self.link_free = [{} for _ in hws]     # per chip: port -> cycle it is free again
        self.messages = [0] * self.n
        self.sections = [{} for _ in hws]      # per chip: name -> summed state row
        self._open = {}                        # section name -> stack of state snapshots
        self._bound = {}                       # Schedule -> its ops with this set's link costs
        self._tables = {}                      # id(hw) -> costs.Table (at ref_hz)
        self._memo = {}                        # (Schedule, clock offsets) -> each chip's outcome

    def charge(self, ranks, row):
        if row == ZERO:
            return
        for r in ranks:
            s = self.state[r]
            for i, v in enumerate(row):
                if v:
                    s[i] += v

    def enter(self, name: str):
        self._open.setdefault(name, []).append([list(s) for s in self.state])

    def exit(self, name: str):
        snap = self._open[name].pop()
        for r, (s, s0) in enumerate(zip(self.state, snap)):
            acc = self.sections[r].get(name)
            d = [a - b for a, b in zip(s, s0)]
            self.sections[r][name] = d if acc is None else [a + b for a, b in zip(acc, d)]

    def _bind(self, sch: Schedule):
        """The schedule's ops with this chip set's link cycles and reduction costs, and the
        per-chip totals that do not depend on timing (bytes, MACs, messages)."""
        topo, ops, totals, sends = self.topo, [], [ZERO] * self.n, [0] * self.n
        links, ports = {}, [set() for _ in range(self.n)]
        for kind, r, peer, n, m in sch.ops:
            hw = self.hws[r]
            if kind == SEND:
                key = (n, r, peer)
                if key not in links:
                    ends = () if self.links is None else (self.links[r], self.links[peer])
                    ser, lat = costs.link_cycles(self.ref_hz, topo, n, topo.level(r, peer), ends)
                    links[key] = (ser, lat, peer if topo.link_ports == "per_peer" else 0)
                ser, lat, port = links[key]
                ops.append((SEND, r, m, ser, lat, port))
                ports[r].add(port)
                totals[r] = add_rows(totals[r], (0,) * LINK_BYTES + (n, 0, 0))
                sends[r] += 1
            elif kind == RECV:
                ops.append((RECV, r, m, 0, 0, 0))
            else:
                t = self._tables.get(id(hw))
                if t is None:
                    t = self._tables[id(hw)] = costs.Table(hw, self.ref_hz)
                c = t.elementwise(n)
                ops.append((REDUCE, r, c.cycles, 0, 0, 0))
                totals[r] = add_rows(totals[r], (0,) + cost_row(c)[1:])
        return ops, totals, sends, [sorted(p) for p in ports]

    def allreduce(self, sch: Schedule):
        """Run one all-reduce on every chip. Its timing depends on the chips' clocks only
        relative to the earliest one, as long as no link is still busy with an earlier message
        when its chip enters (then the old link times cannot matter: a send starts at the
        later of its chip's clock and its link's free time). Such all-reduces are remembered
        by the chips' clock offsets: the layers of a model repeat the same ones."""
        bound = self._bound.get(sch)
        if bound is None:
            bound = self._bound[sch] = self._bind(sch)
        state, lfree = self.state, self.link_free
        key = None
        if all(not f or max(f.values()) <= s[NOW] for f, s in zip(lfree, state)):
            base = min(s[NOW] for s in state)
            key = (sch, tuple(s[NOW] - base for s in state))
            hit = self._memo.get(key)
            if hit is not None:
                for r, (now, link, idle, written) in enumerate(hit):
                    s = state[r]
                    s[NOW], s[LINK], s[IDLE] = base + now, s[LINK] + link, s[IDLE] + idle
                    for port, t in written:
                        lfree[r][port] = base + t
                self._totals(bound)
                return
            before = [(s[LINK], s[IDLE]) for s in state]
        self._execute(sch, bound)
        if key is not None:
            self._memo[key] = [(s[NOW] - base, s[LINK] - b[0], s[IDLE] - b[1],
                                tuple((p, lfree[r][p] - base) for p in bound[3][r]))
                               for r, (s, b) in enumerate(zip(state, before))]
        self._totals(bound)

    def _totals(self, bound):
        """The counters of an all-reduce that do not depend on timing."""
        _, totals, sends, _ = bound
        for r in range(self.n):
            if totals[r] != ZERO:
                s = self.state[r]
                for i, v in enumerate(totals[r]):
                    s[i] += v
            self.messages[r] += sends[r]

    def _execute(self, sch: Schedule, bound):
        ops = bound[0]
        state, lfree = self.state, self.link_free
        arrival, transfer = [0] * sch.n_messages, [0] * sch.n_messages
        for kind, r, a, b, c, port in ops:
            s = state[r]
            if kind == SEND:                   # ChipClock.send: a = message, b = serialization, c = latency
                free = lfree[r]
                start = free.get(port, 0)
                if start < s[NOW]:
                    start = s[NOW]
                free[port] = start + b
                arrival[a], transfer[a] = start + b + c, b + c
            elif kind == RECV:                 # ChipClock.receive
                wait = arrival[a] - s[NOW]
                if wait > 0:
                    link = min(wait, transfer[a])
                    s[LINK] += link
                    s[IDLE] += wait - link
                    s[NOW] = arrival[a]
            else:                              # the reduction's cycles (its counters: totals)
                s[NOW] += a

    def counters(self, r: int, row=None) -> dict:
        """ChipClock.counters() of chip r (or of a section's row)."""
        s = self.state[r] if row is None else row
        return {"cycles": dict(zip(costs.CATEGORIES, s[1:6])),
                "bytes": {"onchip": s[6], "offchip": s[7], "link": s[8]},
                "engine_cycles": s[10], "macs": s[9]}

    def clock(self, r: int) -> ChipClock:
        """A ChipClock holding chip r's final counters and sections (for the report)."""
        clk = ChipClock(self.hws[r], self.topo, r, self.ref_hz, self.links)
        c = self.counters(r)
        clk.now, clk.cycles, clk.bytes = self.state[r][NOW], c["cycles"], c["bytes"]
        clk.macs, clk.engine_cycles = c["macs"], c["engine_cycles"]
        clk.sections = {k: self.counters(r, v) for k, v in self.sections[r].items()}
        return clk
