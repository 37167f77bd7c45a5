"""The message schedule of one all-reduce, taken from the algorithm itself.

Each rank's sends, receives and reductions are recorded by running collectives.allreduce with
a recording link (values do not matter: the algorithms' control flow depends only on ranks and
shapes), then put in one order in which every message is sent before it is received (rank by
rank, each until it waits: the cooperative scheduler's order). The schedule is a pure function
of (algorithm, group sizes, top algorithm, ranks, buffer shape, dtype), computed once.

A dry run replays it on every chip's clock at once (comm/clockset.py) instead of moving
messages between chips: the same sends, receives and reductions in each chip's own order, so
the same counters.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .collectives import allreduce

SEND, RECV, REDUCE = 0, 1, 2


class _Recorder:
    """The interface of collectives.Link, recording instead of moving data."""

    def __init__(self, rank: int, size: int):
        self.rank, self.size, self.ops = rank, size, []

    def send(self, buf, dest):
        self.ops.append((SEND, dest, int(buf.nbytes)))

    def recv(self, source, shape, dtype):
        self.ops.append((RECV, source, 0))
        return np.zeros(shape, dtype)

    def reduce(self, op, a, b):
        self.ops.append((REDUCE, -1, int(b.size)))
        return a


@dataclass(frozen=True)
class Schedule:
    """ops: (kind, rank, peer, n, message id) in a causal order; n is the bytes of a send or
    the elements of a reduction. Receives name the id of the send they take (FIFO per pair)."""
    ops: tuple
    n_messages: int
    size: int


@functools.lru_cache(maxsize=512)
def compile_allreduce(algorithm: str, group_sizes: tuple, top: str, size: int, shape: tuple,
                      dtype: str) -> Schedule:
    per_rank = []
    for r in range(size):
        rec = _Recorder(r, size)
        allreduce(np.zeros(shape, dtype), rec, np.add, algorithm, group_sizes, top)
        per_rank.append(rec.ops)
    sent, taken = {}, {}                       # (src, dst) -> message ids; -> how many received
    pos, out, n_msg = [0] * size, [], 0
    moved = True
    while moved:
        moved = False
        for r in range(size):
            ops = per_rank[r]
            while pos[r] < len(ops):
                kind, peer, n = ops[pos[r]]
                if kind == SEND:
                    sent.setdefault((r, peer), []).append(n_msg)
                    out.append((SEND, r, peer, n, n_msg))
                    n_msg += 1
                elif kind == RECV:
                    ids, k = sent.get((peer, r), ()), taken.get((peer, r), 0)
                    if k >= len(ids):
                        break                  # waits for a message not sent yet
                    taken[(peer, r)] = k + 1
                    out.append((RECV, r, peer, 0, ids[k]))
                else:
                    out.append((REDUCE, r, -1, n, -1))
                pos[r] += 1
                moved = True
    if any(p < len(o) for p, o in zip(pos, per_rank)):
        raise RuntimeError(f"all-reduce {algorithm} on {size} ranks does not complete (a receive is never sent)")
    return Schedule(tuple(out), n_msg, size)
