"""An exact all-reduce as one exchange: every chip's buffer and clock state gathered, the sum (or
maximum) formed on each chip in rank order, and each chip's clock advanced by the algorithm's
compiled message schedule (comm/schedule.py) with the same ChipClock calls the messages make.

Why: moving each of the algorithm's messages between host processes costs a wake-up per
dependent hop (4 hops per hierarchical all-reduce at 8 chips, 18 all-reduces a token); one
exchange costs one. The emulated chips still run the algorithm: every send, receive and
reduction of the schedule is charged on the chip that makes it, with arrival times computed
from every chip's clock and link state exactly as the stamps of real messages would carry them
(ChipClock.send/receive), so every counter and trace event equals the message path's (tests).

Exact only where the order of the terms cannot matter: integer sums (int32 wraps alike in any
order) and maxima. The int8 payload's saturating hops depend on the order: they always move
their messages (Collectives chooses).
"""
from __future__ import annotations

import itertools

import numpy as np

from ..hardware import costs
from .schedule import RECV, REDUCE, SEND, compile_allreduce

_MEMO = {}                 # (bound schedule's token, relative clock state) -> relative arrival times
_TOKENS = itertools.count()   # one per bound schedule (its ops and costs), for the memo's keys


class Exchange:
    """The one-exchange all-reduce of one chip: `clock` (its ChipClock), hws[r]: every rank's
    chip spec (reduction costs), topo, ref_hz and links as the clocks have them."""

    def __init__(self, t, clock, hws, topo, ref_hz, links, algorithm, group_sizes, top):
        self.t, self.clock, self.hws, self.topo, self.ref_hz, self.links = t, clock, hws, topo, ref_hz, links
        self.how = (algorithm, tuple(group_sizes), top, t.size)
        self.ports = t.size if topo.link_ports == "per_peer" else 1
        self._bound = {}                   # (shape, dtype) -> (schedule ops with costs, my ops)

    def allreduce(self, buf: np.ndarray, op) -> np.ndarray:
        clock, n = self.clock, self.t.size
        head = np.zeros(1 + self.ports, np.int64)          # [now, link free cycle per port]
        head[0] = clock.now
        if clock.link_free:
            lf = clock.link_free
            head[1:][list(lf)] = list(lf.values())
        rnd = self.t.allgather(head, buf)
        shared = rnd.shared
        out = shared.get("out")
        if out is None:                                     # the first of this process to see the round
            out = rnd[0][1].copy()
            for r in range(1, n):
                op(out, rnd[r][1], out=out)
            shared["out"] = out
        bound, mine = self._bind(buf)
        times = shared.get("times")
        if times is None:
            times = shared["times"] = _arrivals(bound, [h for h, _ in rnd])
        arrival, transfer = times
        t = self.t
        for kind, peer, nbytes, m in mine:                  # this chip's part, as Link makes it
            if kind == SEND:
                clock.send(nbytes, peer)
                t.sent_messages += 1
            elif kind == RECV:
                clock.receive(arrival[m], transfer[m], peer)
            else:
                clock.charge(clock.costs.elementwise(nbytes), "reduce")
        return out.copy()

    def _bind(self, buf):
        key = (buf.shape, buf.dtype.str)
        hit = self._bound.get(key)
        if hit is None:
            sch = compile_allreduce(*self.how[:3], self.how[3], buf.shape, buf.dtype.str)
            hit = self._bound[key] = (self._costed(sch), [(k, peer, nb, m) for k, r, peer, nb, m in sch.ops
                                                          if r == self.t.rank])
        return hit

    def _costed(self, sch) -> tuple:
        """The schedule's ops with their link cycles and reduction cycles (every rank's own)."""
        topo, ops, tables, links = self.topo, [], {}, {}
        for kind, r, peer, n, m in sch.ops:
            if kind == SEND:
                if (n, r, peer) not in links:
                    ends = () if self.links is None else (self.links[r], self.links[peer])
                    ser, lat = costs.link_cycles(self.ref_hz, topo, n, topo.level(r, peer), ends)
                    links[(n, r, peer)] = (ser, lat, peer if topo.link_ports == "per_peer" else 0)
                ops.append((SEND, r, m) + links[(n, r, peer)])
            elif kind == RECV:
                ops.append((RECV, r, m, 0, 0, 0))
            else:
                hw = self.hws[r]
                if id(hw) not in tables:
                    tables[id(hw)] = costs.Table(hw, self.ref_hz)
                ops.append((REDUCE, r, tables[id(hw)].elementwise(n).cycles, 0, 0, 0))
        return tuple(ops), sch.n_messages, next(_TOKENS)


def _arrivals(bound, heads) -> tuple:
    """Arrival time and transfer cycles of every message of the schedule, from each rank's
    [now, link free per port] at entry (ChipClock.send/receive's arithmetic). They depend only
    on the clocks relative to the earliest, and on link free times later than their chip's
    clock: remembered by those."""
    ops, n_msg, token = bound
    h = np.stack(heads) if len(heads) > 1 else heads[0][None]   # int64 (ranks, 1 + ports)
    base = int(h[:, 0].min())
    h -= base
    now = h[:, 0].tolist()
    r, p = np.nonzero(h[:, 1:] > h[:, :1])                    # ports busy past their chip's clock
    busy = tuple(zip(r.tolist(), p.tolist(), h[r, 1 + p].tolist())) if len(r) else ()
    key = (token, tuple(now), busy)
    rel = _MEMO.get(key)
    if rel is None:
        free = [{} for _ in heads]
        for r, p, f in busy:
            free[r][p] = f
        arrival, transfer = [0] * n_msg, [0] * n_msg
        for kind, r, a, b, c, port in ops:
            if kind == SEND:                # a = message, b = serialization, c = latency
                start = max(now[r], free[r].get(port, 0))
                free[r][port] = start + b
                arrival[a], transfer[a] = start + b + c, b + c
            elif kind == RECV:
                if arrival[a] > now[r]:
                    now[r] = arrival[a]
            else:                           # a = the reduction's cycles
                now[r] += a
        if len(_MEMO) > 4096:
            _MEMO.clear()
        rel = _MEMO[key] = (tuple(arrival), tuple(transfer))
    return [a + base for a in rel[0]], rel[1]
