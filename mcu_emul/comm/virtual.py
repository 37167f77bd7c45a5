"""In-process virtual ranks: one greenlet per chip, run one at a time by a cooperative scheduler.

Free-running threads that poll queues spend the host on handing the GIL around (64 chips cost
seconds of nothing), and even a baton passed between OS threads costs a kernel wake-up per hand-
over (measured here: 37 us on an idle machine, 200-360 us on a loaded one). Greenlets switch in
the one OS thread (4 us here, whatever the load). Exactly one chip runs; it runs until it
receives from a source whose queue is empty, then the scheduler resumes the next runnable rank
in cyclic rank order. A send to a rank that waits for that source makes it runnable again. The
order is fixed, so a run takes the same path every time (the counters never depended on it:
they come from message stamps).

A rank that finishes or raises hands the baton on; after a failure every other rank raises
`Aborted` where it waits (or before it starts), and run_virtual re-raises the real error. No
runnable rank while some wait is a deadlock: it is reported as an error, never a hang.
"""
from __future__ import annotations

from collections import deque

import greenlet
import numpy as np

from .transport import Aborted, Round, Transport

GATHER = -1                # waits_on of a rank waiting at an exchange (Transport.allgather) for the others


class Deadlock(RuntimeError):
    """Every unfinished in-process rank waits for a message that no rank will send."""


class Fabric:
    """Shared state of a set of in-process ranks: one FIFO per (source, dest) pair, and what
    the scheduler needs to know of each rank."""

    def __init__(self, size: int):
        self.size = size
        self.inbox = [{} for _ in range(size)]  # inbox[dest][source]: FIFO, made on first use
        self.aborted = False
        self.error = None                      # a Deadlock found by the scheduler
        self.waits_on = [None] * size          # rank -> the source it waits for (None: runnable)
        self.done = [False] * size
        self.scheduler = None                  # the greenlet of run_virtual (None: one rank, no waits)
        self.round, self.arrived = None, 0     # the exchange being gathered, how many ranks are in it

    def queue(self, source: int, dest: int) -> deque:
        box = self.inbox[dest]
        q = box.get(source)
        if q is None:
            q = box[source] = deque()
        return q

    def runnable(self, r: int) -> bool:
        return not self.done[r] and (self.aborted or self.waits_on[r] is None)

    def wait_for(self, me: int, source: int):
        """Suspend rank `me` until a message from `source` is queued (or the run is aborted)."""
        if self.scheduler is None:
            raise Deadlock(f"rank {me} waits for a message from rank {source} that was never sent")
        self.waits_on[me] = source
        self.scheduler.switch()                # back when runnable: the message is there
        self.waits_on[me] = None
        if self.aborted:
            raise Aborted(f"rank {me}: another rank failed")

    def deadlock(self):
        """No rank can run but some wait: every waiting rank is released (Aborted) and the
        run raises Deadlock, naming the waits."""
        waiting = [(r, s) for r, s in enumerate(self.waits_on) if s is not None and not self.done[r]]
        self.error = Deadlock("in-process chips deadlocked: " + ", ".join(
            f"rank {r} waits for " + ("the others at an all-reduce" if s == GATHER else f"rank {s}")
            for r, s in waiting))
        self.aborted = True


class ThreadTransport(Transport):
    """A rank of a Fabric (a thread of execution: a greenlet under run_virtual). Without
    run_virtual (one rank, e.g. bench) it needs no scheduler: a receive from an empty queue is
    then an error, not a wait."""

    exchange_pays = True

    def __init__(self, fabric: Fabric, rank: int):
        super().__init__()
        self.fabric, self.rank, self.size = fabric, rank, fabric.size

    def send(self, arr, dest, count=True, stamp=(0, 0)):
        a = np.array(arr, copy=True)
        if count:
            self._count(a)
        f = self.fabric
        f.queue(self.rank, dest).append((a, (int(stamp[0]), int(stamp[1]))))
        if f.waits_on[dest] == self.rank:
            f.waits_on[dest] = None            # runnable: it is resumed in its turn

    def recv_msg(self, source, shape, dtype):
        q = self.fabric.queue(source, self.rank)
        if not q:
            self.fabric.wait_for(self.rank, source)
        a, stamp = q.popleft()
        if a.shape != tuple(shape) or a.dtype != np.dtype(dtype):
            raise RuntimeError(f"rank {self.rank}: message from {source} is {a.dtype}{a.shape}, "
                               f"expected {np.dtype(dtype)}{tuple(shape)}")
        return a, stamp

    def allgather(self, head, buf):
        """Every rank's (head, buf), by rank, handed over by reference (no copies, no
        messages): each rank adds its own and waits until the last one has; all share one Round."""
        f = self.fabric
        if f.round is None:
            f.round, f.arrived = Round([None] * self.size), 0
        rnd = f.round
        rnd[self.rank] = (head, buf)
        f.arrived += 1
        if f.arrived < self.size:
            f.wait_for(self.rank, GATHER)
        else:                                   # the last one in: everyone goes on
            f.round = None
            for r, s in enumerate(f.waits_on):
                if s == GATHER:
                    f.waits_on[r] = None
        return rnd


def run_virtual(size: int, fn):
    """Run fn(transport) on `size` in-process ranks, one at a time (see the module docstring);
    results by rank. If any rank raises, the others stop (Aborted) and the first real error is
    re-raised; a deadlock raises Deadlock."""
    fabric = Fabric(size)
    fabric.scheduler = greenlet.getcurrent()
    results, errors = [None] * size, [None] * size

    def body(r):
        try:
            if fabric.aborted:
                raise Aborted(f"rank {r}: another rank failed")
            results[r] = fn(ThreadTransport(fabric, r))
        except BaseException as e:   # noqa: BLE001 - reported below
            if not hasattr(e, "mcu_rank"):
                e.mcu_rank = r
            errors[r] = e
            if not isinstance(e, Aborted):
                fabric.aborted = True
        finally:
            fabric.done[r] = True

    chips = [greenlet.greenlet(body) for _ in range(size)]
    r = 0
    while not all(fabric.done):
        for k in range(size):                  # the next runnable rank, from r on
            if fabric.runnable((r + k) % size):
                r = (r + k) % size
                break
        else:
            fabric.deadlock()
            continue
        chips[r].switch(r)                     # first turn: body(r); later: back into its wait_for
        r = (r + 1) % size
    real = [e for e in errors if e is not None and not isinstance(e, Aborted)]
    if real:
        raise real[0]
    if fabric.error is not None:
        raise fabric.error
    return results
