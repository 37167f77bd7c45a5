"""All-reduce over a transport: hierarchical (default), ring and flat.

Y = sum_r X_r (or max) on every rank, integers only, so the result is exact and identical on
all ranks whatever the algorithm. Every algorithm returns early at one rank.

- flat: every rank sends to rank 0, which reduces and sends the result back.
  Messages sent: rank 0 N-1, others 1.
- ring: reduce-scatter then all-gather over N chunks; each rank sends 2(N-1) messages.
- hierarchical: levels of group sizes (innermost first, from the topology file). Reduce
  within each group to its leader (first rank), recurse on the leaders with the next level,
  broadcast back down. At the top, the leaders run the topology's `top_algorithm`:
  ring (bandwidth-optimal: 2(L-1) steps of 1/L of the buffer), recursive_doubling
  (latency-optimal: log2 L exchanges of the whole buffer; a leader beyond the largest power
  of two folds into a partner first) or tree (binomial reduce to the first leader, then
  binomial broadcast: 2 log2 L steps of the whole buffer).
"""
from __future__ import annotations

import numpy as np

from ..config import TOP_ALGORITHMS  # noqa: F401 - re-exported: the choices of Topology.top_algorithm

ALGORITHMS = ("hierarchical", "ring", "flat")


def sat_add8(a, b):
    """Saturating int8 addition (the --payload int8 reduction: approximate by design)."""
    return np.clip(a.astype(np.int16) + b, -127, 127).astype(np.int8)


class Link:
    """A transport plus (optionally) the chip's emulated clock: every send is serialized on
    the link and stamped with its arrival time; every receive waits for that time; every
    reduction is charged as elementwise work."""

    def __init__(self, t, clock=None):
        self.t, self.clock, self.rank, self.size = t, clock, t.rank, t.size

    def send(self, buf, dest):
        stamp = self.clock.send(buf.nbytes, dest) if self.clock is not None else (0, 0)
        self.t.send(buf, dest, stamp=stamp)                          # (arrival, transfer cycles)

    def recv(self, source, shape, dtype):
        x, stamp = self.t.recv_msg(source, shape, dtype)
        if self.clock is not None:
            self.clock.receive(stamp[0], stamp[1], source)
        return x

    def reduce(self, op, a, b):
        if self.clock is not None:
            self.clock.charge(self.clock.costs.elementwise(int(b.size)), "reduce")
        return op(a, b)


def flat(buf, t, op, ranks=None):
    ranks = list(range(t.size)) if ranks is None else ranks
    if len(ranks) == 1:
        return buf.copy()
    root = ranks[0]
    if t.rank == root:
        acc = buf.copy()
        for r in ranks[1:]:
            acc = t.reduce(op, acc, t.recv(r, buf.shape, buf.dtype))
        for r in ranks[1:]:
            t.send(acc, r)
        return acc
    t.send(buf, root)
    return t.recv(root, buf.shape, buf.dtype)


def ring(buf, t, op, ranks=None):
    ranks = list(range(t.size)) if ranks is None else ranks
    n = len(ranks)
    if n == 1:
        return buf.copy()
    i = ranks.index(t.rank)
    nxt, prv = ranks[(i + 1) % n], ranks[(i - 1) % n]
    chunks = [c.copy() for c in np.array_split(buf.reshape(-1), n)]
    for s in range(n - 1):                       # reduce-scatter: chunk (i-s) goes right
        c_out, c_in = (i - s) % n, (i - s - 1) % n
        t.send(chunks[c_out], nxt)
        chunks[c_in] = t.reduce(op, chunks[c_in], t.recv(prv, chunks[c_in].shape, buf.dtype))
    for s in range(n - 1):                       # all-gather: rank i now owns chunk (i+1)
        c_out, c_in = (i + 1 - s) % n, (i - s) % n
        t.send(chunks[c_out], nxt)
        chunks[c_in] = t.recv(prv, chunks[c_in].shape, buf.dtype)
    return np.concatenate(chunks).reshape(buf.shape)


def recursive_doubling(buf, t, op, ranks=None):
    ranks = list(range(t.size)) if ranks is None else ranks
    n, i = len(ranks), ranks.index(t.rank)
    p = 1 << (n.bit_length() - 1)                 # largest power of two <= n
    if i >= p:                                    # fold in, wait for the result
        t.send(buf, ranks[i - p])
        return t.recv(ranks[i - p], buf.shape, buf.dtype)
    acc = buf.copy()
    if i + p < n:
        acc = t.reduce(op, acc, t.recv(ranks[i + p], buf.shape, buf.dtype))
    mask = 1
    while mask < p:                               # exchange with the partner, both reduce
        peer = ranks[i ^ mask]
        t.send(acc, peer)
        other = t.recv(peer, buf.shape, buf.dtype)
        acc = t.reduce(op, acc, other) if i < (i ^ mask) else t.reduce(op, other, acc)
        mask <<= 1
    if i + p < n:
        t.send(acc, ranks[i + p])
    return acc


def tree(buf, t, op, ranks=None):
    ranks = list(range(t.size)) if ranks is None else ranks
    n, i = len(ranks), ranks.index(t.rank)
    acc, mask = buf.copy(), 1
    while mask < n:                               # binomial reduce to ranks[0]
        if i & mask:
            t.send(acc, ranks[i - mask])
            break
        if i + mask < n:
            acc = t.reduce(op, acc, t.recv(ranks[i + mask], buf.shape, buf.dtype))
        mask <<= 1
    if i:                                         # binomial broadcast back
        acc = t.recv(ranks[i - (i & -i)], buf.shape, buf.dtype)
    mask = (i & -i) >> 1 if i else 1 << (max(n - 1, 1).bit_length() - 1)
    while mask:
        if i + mask < n:
            t.send(acc, ranks[i + mask])
        mask >>= 1
    return acc


TOP = {"ring": ring, "recursive_doubling": recursive_doubling, "tree": tree}


def hierarchical(buf, t, op, group_sizes=(4,), ranks=None, top="ring"):
    ranks = list(range(t.size)) if ranks is None else ranks
    if len(ranks) == 1:
        return buf.copy()
    if not group_sizes:
        return TOP[top](buf, t, op, ranks)
    g = group_sizes[0]
    groups = [ranks[j:j + g] for j in range(0, len(ranks), g)]
    mine = next(grp for grp in groups if t.rank in grp)
    leader = mine[0]
    if t.rank != leader:                                           # 1. reduce to the group leader
        t.send(buf, leader)
        return t.recv(leader, buf.shape, buf.dtype)                # 3. result comes back down
    acc = buf.copy()
    for r in mine[1:]:
        acc = t.reduce(op, acc, t.recv(r, buf.shape, buf.dtype))
    acc = hierarchical(acc, t, op, group_sizes[1:], [grp[0] for grp in groups], top)   # 2. leaders
    for r in mine[1:]:
        t.send(acc, r)
    return acc


def allreduce(buf, t, op, algorithm: str = "hierarchical", group_sizes=(4,), top: str = "ring"):
    """One all-reduce of buf over the ranks of t (a Link, or anything with its send/recv/reduce)."""
    if algorithm == "hierarchical":
        return hierarchical(buf, t, op, group_sizes, top=top)
    return (ring if algorithm == "ring" else flat)(buf, t, op)


def _top_messages(top: str, i: int, n: int) -> int:
    """Messages leader i of n sends in the top-level algorithm."""
    if top == "ring":
        return 2 * (n - 1)
    if top == "recursive_doubling":
        p = 1 << (n.bit_length() - 1)
        return 1 if i >= p else (p.bit_length() - 1) + (1 if i + p < n else 0)
    low = i & -i
    masks = [m for m in (1 << k for k in range(n.bit_length())) if (m < low if i else m < n)]
    return (1 if i else 0) + sum(1 for m in masks if i + m < n)


def messages_sent(algorithm: str, rank: int, size: int, group_sizes=(4,), top: str = "ring") -> int:
    """Closed form of the messages one rank sends in one all-reduce (for tests and costs)."""
    if size == 1:
        return 0
    if algorithm == "flat":
        return size - 1 if rank == 0 else 1
    if algorithm == "ring":
        return 2 * (size - 1)
    ranks, n = list(range(size)), 0
    for g in group_sizes:
        if len(ranks) == 1 or rank not in ranks:
            return n
        groups = [ranks[j:j + g] for j in range(0, len(ranks), g)]
        mine = next(grp for grp in groups if rank in grp)
        n += 1 if rank != mine[0] else len(mine) - 1
        ranks = [grp[0] for grp in groups]
    if rank in ranks and len(ranks) > 1:
        n += _top_messages(top, ranks.index(rank), len(ranks))     # the top-level leaders
    return n


class Collectives:
    """The all-reduces a chip's model calls: sum (partial sums) and max (argmax key)."""

    def __init__(self, transport, algorithm: str = "hierarchical", group_sizes=(4,), clock=None, top: str = "ring",
                 exchange=None):
        """exchange: an exchange.Exchange, to run the exact all-reduces (integer sums but int8's
        saturating ones, maxima) as one exchange with the same counters; None: every message moves."""
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown all-reduce algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
        if top not in TOP_ALGORITHMS:
            raise ValueError(f"unknown top-level algorithm {top!r}; known: {', '.join(TOP_ALGORITHMS)}")
        self.t, self.algorithm, self.group_sizes = Link(transport, clock), algorithm, tuple(group_sizes)
        self.top, self.exchange = top, exchange
        self.calls = 0

    def _run(self, buf, op, label):
        self.calls += 1
        buf = np.ascontiguousarray(buf)
        clock = self.t.clock
        if clock is not None and clock.trace is not None:
            with clock.span(f"all-reduce {label}"):
                return self._algo(buf, op)
        return self._algo(buf, op)

    def _algo(self, buf, op):
        if self.exchange is not None and op is not sat_add8 and buf.dtype.kind in "iu" and self.t.size > 1:
            return self.exchange.allreduce(buf, op)
        return allreduce(buf, self.t, op, self.algorithm, self.group_sizes, self.top)

    def sum(self, buf, label: str = ""):
        return self._run(buf, sat_add8 if buf.dtype == np.int8 else np.add, label)

    def max(self, buf, label: str = ""):
        return self._run(buf, np.maximum, label)
