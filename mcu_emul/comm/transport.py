"""Point-to-point transports: the interface, and real MPI (the only module importing mpi4py);
in-process ranks are in virtual.py.

A transport moves numpy buffers between ranks: `send` never blocks (buffered), `recv` blocks
until the matching message from `source` arrives. Messages between a pair arrive in order.
`gather_obj` is the report channel (results to rank 0); it is not emulated chip traffic.
"""
from __future__ import annotations

import pickle
import time

import numpy as np


class Aborted(Exception):
    """Another rank failed; this one stops. Carries that rank's error (kind and message)."""

    def __init__(self, msg: str, kind: str = "", rank: int = -1):
        super().__init__(msg)
        self.kind, self.rank = kind, rank

    def as_error(self) -> Exception:
        """The failing rank's error, to raise here too: a UserError stays a UserError."""
        from ..errors import UserError
        if self.kind == "UserError":
            return UserError(str(self))
        return RuntimeError(f"rank {self.rank} failed: {self.kind}: {self}")


class Round(list):
    """Every rank's (head, buffer) of one exchange, by rank. `shared`: what a rank computed from
    them, for the other ranks of its process to reuse (in-process ranks share one Round)."""

    def __init__(self, items):
        super().__init__(items)
        self.shared = {}


class Transport:
    rank: int
    size: int
    # whether an exact all-reduce should run as one exchange (comm/exchange.py) over this
    # transport: in-process ranks, yes (a rendezvous, no copies); MPI ranks, no: measured on
    # 2 cores, one MPI_Iallgather a token's all-reduce took TinyLlama-42M on 8 ranks 106-123 ms a
    # token against 84-103 moving every message, the 64-rank tinyllama-scaled 5.9 s against 1.5
    # (each round of the collective waits for a sleeping rank), a gather to rank 0 and back 116-117
    exchange_pays = False

    def __init__(self):
        self.sent_messages = 0

    def _count(self, arr):
        self.sent_messages += 1

    def send(self, arr: np.ndarray, dest: int, count: bool = True, stamp=(0, 0)) -> None:
        """Send arr to dest with a stamp of two int64 (emulated arrival time, transfer cycles)."""
        raise NotImplementedError

    def recv_msg(self, source: int, shape, dtype) -> tuple[np.ndarray, tuple]:
        """The next message from source: (array, stamp)."""
        raise NotImplementedError

    def recv(self, source: int, shape, dtype) -> np.ndarray:
        return self.recv_msg(source, shape, dtype)[0]

    def gather_obj(self, obj, root: int = 0):
        """Every rank's obj at root (list by rank), None elsewhere."""
        if self.rank == root:
            out = [None] * self.size
            out[root] = obj
            for r in range(self.size):
                if r != root:
                    n = int(self.recv(r, (1,), np.int64)[0])
                    out[r] = pickle.loads(self.recv(r, (n,), np.uint8).tobytes())
            return out
        data = np.frombuffer(pickle.dumps(obj), np.uint8)
        self.send(np.array([len(data)], np.int64), root, count=False)
        self.send(data, root, count=False)
        return None

    def allgather(self, head: np.ndarray, buf: np.ndarray) -> Round:
        """Every rank's (head: int64 vector, buf), by rank; heads alike in length and bufs in
        shape and dtype on every rank. One message to every other rank (not counted: an
        exchange.Exchange counts the emulated algorithm's messages instead)."""
        nh = head.nbytes
        packed = np.concatenate([head.view(np.uint8), np.ascontiguousarray(buf).reshape(-1).view(np.uint8)])
        for r in range(self.size):
            if r != self.rank:
                self.send(packed, r, count=False)
        items = []
        for r in range(self.size):
            if r == self.rank:
                items.append((head, buf))
            else:
                p = self.recv(r, packed.shape, np.uint8)
                items.append((p[:nh].view(np.int64), p[nh:].view(buf.dtype).reshape(buf.shape)))
        return Round(items)

    def bcast_obj(self, obj, root: int = 0):
        if self.rank == root:
            data = np.frombuffer(pickle.dumps(obj), np.uint8)
            for r in range(self.size):
                if r != root:
                    self.send(np.array([len(data)], np.int64), r, count=False)
                    self.send(data, r, count=False)
            return obj
        n = int(self.recv(root, (1,), np.int64)[0])
        return pickle.loads(self.recv(root, (n,), np.uint8).tobytes())

    def barrier(self):
        self.bcast_obj(self.gather_obj(None))

    def finish(self):
        """Complete outstanding sends."""


# --- MPI -------------------------------------------------------------------------------
_RETIRED = []          # communicators of failed private runs, never freed (see MPITransport.close)

class MPITransport(Transport):
    """Buffer (upper-case) mpi4py calls. Waits poll Test() with short sleeps (see _wait), so
    oversubscribed ranks waiting for a message do not spin and starve the ranks still computing."""

    TAG = 17
    FAIL_TAG = 18

    def __init__(self, comm=None, private: bool = False):
        """private: work on a duplicate of comm (the API: each run in its own context, so that
        a failed run leaves nothing behind), and turn a failure notice from another rank into
        Aborted in every wait (instead of MPI_Abort, which would end the caller's job)."""
        super().__init__()
        from mpi4py import MPI
        self.MPI = MPI
        comm = comm if comm is not None else MPI.COMM_WORLD
        self.private = private
        self.comm = comm.Dup() if private else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self._pending = []

    def _progress(self):
        if self._pending:
            self._pending = [(r, a) for r, a in self._pending if not r.Test()]

    def _wait(self, req, status=None):
        """Poll req.Test() with sleeps between polls: a waiting rank leaves its core to the
        ranks still computing. Measured at 8 ranks on 2 cores (an all-reduce after 0.5 ms of
        work per rank): sleeping polls took 5.4-7.3 ms a round and 8.4-10.7 ms of CPU; blocking
        Wait() 6.9-8.6 ms and 12-15 ms, Test() + sched_yield 7.4-8.0 ms and 13-14 ms, MPICH's
        MPIR_CVAR_POLLS_BEFORE_YIELD=1 7.6-8.3 ms and 13-15 ms (MPICH's shared memory has no
        wait that sleeps in the kernel). On TinyLlama-42M decode (8 ranks, 2 cores) the spins
        before sleeping (0-50), the sleep step, a 1 us timer slack and sched_yield polls all gave
        74-90 ms a token; waits that block in the kernel until the sender's hint (a datagram
        after each send) gave 91-95 ms (the woken receiver preempts the sender). A long wait (rank 0 making the weights, a slow peer)
        sleeps up to a tenth of the time waited so far, up to 50 ms: at 64 ranks, 63 ranks
        polling every millisecond had taken the two cores from the one working rank."""
        i, t0 = 0, None
        while not req.Test(status):
            if self.private and self.comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=self.FAIL_TAG):
                req.Cancel()
                import pickle
                st = self.MPI.Status()
                self.comm.Probe(source=self.MPI.ANY_SOURCE, tag=self.FAIL_TAG, status=st)
                buf = np.empty(st.Get_count(self.MPI.BYTE), np.uint8)
                self.comm.Recv(buf, source=st.Get_source(), tag=self.FAIL_TAG)
                kind, msg = pickle.loads(buf.tobytes())
                raise Aborted(msg, kind, st.Get_source())
            self._progress()
            i += 1
            if i > 50:
                t0 = t0 or time.monotonic()
                time.sleep(min(2e-5 * (i - 50), max(1e-3, (time.monotonic() - t0) / 10), 0.05))

    def send(self, arr, dest, count=True, stamp=(0, 0)):
        a = np.ascontiguousarray(arr)
        if count:
            self._count(a)
        buf = np.empty(a.nbytes + 16, np.uint8)                 # [2 x int64 stamp][payload]
        buf[:16].view(np.int64)[:] = stamp
        buf[16:] = a.reshape(-1).view(np.uint8)
        self._pending.append((self.comm.Isend(buf, dest=dest, tag=self.TAG), buf))

    def recv_msg(self, source, shape, dtype):
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        buf = np.empty(n + 16, np.uint8)
        status = self.MPI.Status()
        self._wait(self.comm.Irecv(buf, source=source, tag=self.TAG), status)
        if status.Get_count(self.MPI.BYTE) != n + 16:        # MPI accepts a shorter message
            raise RuntimeError(f"rank {self.rank}: message from {source} has {status.Get_count(self.MPI.BYTE) - 16} "
                               f"bytes, expected {np.dtype(dtype)}{tuple(shape)} ({n} bytes)")
        st = buf[:16].view(np.int64)
        return buf[16:].view(dtype).reshape(shape), (int(st[0]), int(st[1]))

    def finish(self):
        for r, _ in self._pending:
            self._wait(r)
        self._pending = []

    def barrier(self):
        self.finish()
        self._wait(self.comm.Ibarrier())

    def notify_failure(self, e: BaseException):
        """Tell every other rank that this one failed (kind and message), so that their waits
        raise Aborted instead of hanging; wait until the notices are sent."""
        import pickle
        data = np.frombuffer(pickle.dumps((type(e).__name__, str(e))), np.uint8).copy()
        reqs = [self.comm.Isend(data, dest=r, tag=self.FAIL_TAG) for r in range(self.size) if r != self.rank]
        for r in reqs:
            r.Wait()

    def close(self, failed: bool = False):
        """End a private run. A run that ended well has matched every message: its sends are
        completed (never cancelled: a cancelled rendezvous send can deliver a torn message) and
        its duplicate communicator is freed. A failed run may leave messages in flight (eager sends cannot be
        cancelled); freeing its communicator would let the next Dup reuse the context id and
        receive them, so it is kept (retired) for the life of the process instead."""
        if not self.private:
            return
        if failed:
            for r, _ in self._pending:
                if not r.Test():
                    r.Cancel()
            self._pending = []
            _RETIRED.append(self.comm)
        else:
            self.finish()                  # e.g. the report's broadcast: sent whole before Free
            self.comm.Free()

    def abort(self, code: int):
        """End the whole job now. First unlink the MPICH shared-memory segments this rank maps
        (they would outlive the abort; unlinking a mapped segment is safe), give the launcher a
        moment to forward this rank's last message, and silence MPICH's own 'Abort(...)' line."""
        import os
        for seg in _own_shm_segments():
            try:
                os.unlink(seg)
            except OSError:
                pass
        time.sleep(0.1)
        try:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 2)
        except OSError:
            pass
        self.comm.Abort(code)


def mpi_library_version() -> str | None:
    """The MPI library's version line, if this process has MPI up (never initializes it)."""
    import sys
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not mpi.Is_initialized():
        return None
    return mpi.Get_library_version().strip().splitlines()[0]


def world():
    """COMM_WORLD (for the API's 'started by an MPI launcher' case)."""
    from mpi4py import MPI
    return MPI.COMM_WORLD


def _own_shm_segments() -> list[str]:
    try:
        with open("/proc/self/maps") as f:
            return sorted({ln.split()[-1] for ln in f if "/dev/shm/mpich_shm_" in ln})
    except OSError:
        return []


def mpi_launched() -> bool:
    """True when this process was started by an MPI launcher (mpiexec/mpirun/srun --mpi) with
    more than one rank, judged by its own launcher variables (PMI, PMIx, Open MPI), never by a
    Slurm allocation around it (SLURM_NTASKS is set in every batch job); or MCU_EMUL_MPI=1."""
    import os
    env = os.environ
    if env.get("MCU_EMUL_MPI") == "1":
        return True

    def more_than_one(k):
        v = env.get(k, "")
        return v.isdigit() and int(v) > 1
    if any(more_than_one(k) for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")):
        return True
    # srun --mpi=pmix: the step's own task count (not the allocation's)
    return "PMIX_RANK" in env and more_than_one("SLURM_STEP_NUM_TASKS")
