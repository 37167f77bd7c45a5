"""In-process virtual ranks: one thread per chip, run one at a time by a cooperative scheduler.

Free-running threads that poll queues spend the host on handing the GIL around (64 chips cost
seconds of nothing). Here exactly one chip thread holds the baton and runs; it runs until it
receives from a source whose queue is empty, then hands the baton to the next runnable rank in
cyclic rank order. A send to a rank that waits for that source makes it runnable again. The
order is fixed, so a run takes the same path every time (the counters never depended on it:
they come from message stamps).

A rank that finishes or raises hands the baton on; after a failure every other rank raises
`Aborted` where it waits (or before it starts), and run_virtual re-raises the real error. No
runnable rank while some wait is a deadlock: it is reported as an error, never a hang.
"""
from __future__ import annotations

import threading
from collections import deque

import numpy as np

from .transport import Aborted, Transport


class Deadlock(RuntimeError):
    """Every unfinished in-process rank waits for a message that no rank will send."""


class Fabric:
    """Shared state of a set of in-process ranks: one FIFO per (source, dest) pair, and the
    scheduler's state. Only the baton holder changes it (no lock needed for that)."""

    def __init__(self, size: int):
        self.size = size
        self.inbox = [{} for _ in range(size)]  # inbox[dest][source]: FIFO, made on first use
        self.aborted = False
        self.error = None                      # a Deadlock found by the scheduler
        self.waits_on = [None] * size          # rank -> the source it waits for (None: runnable)
        self.done = [False] * size
        self.go = [threading.Event() for _ in range(size)]                 # the baton, per rank
        self.scheduled = False                 # under run_virtual (else: one thread, no baton)

    def queue(self, source: int, dest: int) -> deque:
        box = self.inbox[dest]
        q = box.get(source)
        if q is None:
            q = box[source] = deque()
        return q

    def _runnable(self, r: int) -> bool:
        return not self.done[r] and (self.aborted or self.waits_on[r] is None)

    def hand_on(self, me: int):
        """Give the baton to the next runnable rank after `me` (cyclic order). With none, and
        some rank waiting: a deadlock, reported to every waiting rank (they raise Aborted)."""
        n = self.size
        for k in range(1, n + 1):
            r = (me + k) % n
            if self._runnable(r):
                self.go[r].set()
                return
        waiting = [(r, s) for r, s in enumerate(self.waits_on) if s is not None and not self.done[r]]
        if not waiting:
            return                             # every rank is done
        self.error = Deadlock("in-process chips deadlocked: " +
                              ", ".join(f"rank {r} waits for rank {s}" for r, s in waiting))
        self.aborted = True
        self.go[waiting[0][0]].set()

    def wait_for(self, me: int, source: int):
        """Block rank `me` until a message from `source` is queued (or the run is aborted)."""
        if not self.scheduled:
            raise Deadlock(f"rank {me} waits for a message from rank {source} that was never sent")
        self.waits_on[me] = source
        self.hand_on(me)
        self.go[me].wait()
        self.go[me].clear()
        self.waits_on[me] = None
        if self.aborted:
            raise Aborted(f"rank {me}: another rank failed")


class ThreadTransport(Transport):
    """A rank of a Fabric. Without run_virtual (one rank, e.g. bench) it needs no scheduler:
    a receive from an empty queue is then an error, not a wait."""

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
            f.waits_on[dest] = None            # runnable: it gets the baton in its turn

    def recv_msg(self, source, shape, dtype):
        q = self.fabric.queue(source, self.rank)
        if not q:
            self.fabric.wait_for(self.rank, source)
        a, stamp = q.popleft()
        if a.shape != tuple(shape) or a.dtype != np.dtype(dtype):
            raise RuntimeError(f"rank {self.rank}: message from {source} is {a.dtype}{a.shape}, "
                               f"expected {np.dtype(dtype)}{tuple(shape)}")
        return a, stamp


def run_virtual(size: int, fn):
    """Run fn(transport) on `size` in-process ranks, one at a time (see the module docstring);
    results by rank. If any rank raises, the others stop (Aborted) and the first real error is
    re-raised; a deadlock raises Deadlock."""
    fabric = Fabric(size)
    fabric.scheduled = True
    results, errors = [None] * size, [None] * size

    def body(r):
        fabric.go[r].wait()                    # the first turn
        fabric.go[r].clear()
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
            fabric.hand_on(r)

    threads = [threading.Thread(target=body, args=(r,), name=f"chip{r}", daemon=True) for r in range(size)]
    for th in threads:
        th.start()
    fabric.go[0].set()
    for th in threads:
        th.join()
    real = [e for e in errors if e is not None and not isinstance(e, Aborted)]
    if real:
        raise real[0]
    if fabric.error is not None:
        raise fabric.error
    return results
