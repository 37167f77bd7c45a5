"""Run under mpiexec -n 17: for every N in 1..17 (sub-communicators of the first N ranks), every
algorithm equals MPI's own Allreduce on random int32 buffers, and each rank sends exactly the
closed-form number of messages, moving every message or as one exchange (comm/exchange.py:
the same values, and the algorithm's messages counted). Prints 'allreduce OK' on rank 0; any mismatch aborts non-zero."""
import itertools
import sys

import numpy as np
from mpi4py import MPI

from mcu_emul.comm.collectives import ALGORITHMS, Collectives, messages_sent
from mcu_emul.comm.exchange import Exchange
from mcu_emul.comm.transport import MPITransport
from mcu_emul.config import load_chip, load_topology
from mcu_emul.hardware.counters import ChipClock

HW, TOPO = load_chip(), load_topology()

world = MPI.COMM_WORLD
bad = []
for n in range(1, world.size + 1):
    sub = world.Split(0 if world.rank < n else MPI.UNDEFINED, world.rank)
    if sub == MPI.COMM_NULL:
        continue
    t = MPITransport(sub)
    for alg in ALGORITHMS:
        for groups, exchange in itertools.product(((4,), (2, 4), (3,)) if alg == "hierarchical" else ((4,),),
                                                  (False, True)):
            clock = ChipClock(HW, TOPO, t.rank) if exchange else None
            ex = Exchange(t, clock, [HW] * n, TOPO, HW.compute.freq_hz, None, alg, groups, "ring") if exchange else None
            c = Collectives(t, alg, groups, clock, exchange=ex)
            for length in (1, 3, 17, 4099):
                x = np.random.default_rng(1000 * n + 10 * t.rank + length).integers(-(2**24), 2**24, length).astype(np.int32)
                want = np.empty_like(x)
                sub.Allreduce(x, want, op=MPI.SUM)
                before = t.sent_messages
                got = c.sum(x)
                if not np.array_equal(got, want):
                    bad.append(f"N={n} {alg} {groups} exchange={exchange} len={length} rank {t.rank}: values differ")
                if t.sent_messages - before != messages_sent(alg, t.rank, n, groups):
                    bad.append(f"N={n} {alg} {groups} rank {t.rank}: sent {t.sent_messages - before} messages, "
                               f"expected {messages_sent(alg, t.rank, n, groups)}")
    t.finish()
    sub.Free()
allbad = world.gather(bad, root=0)
if world.rank == 0:
    flat = [b for r in allbad for b in r]
    if flat:
        print("\n".join(flat[:20]), file=sys.stderr)
        world.Abort(1)
    print(f"allreduce OK for N = 1..{world.size}")
