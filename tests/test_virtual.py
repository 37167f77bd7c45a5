"""In-process ranks: one chip runs at a time, in a fixed order; failures and deadlocks end the
run with the real error, never a hang."""
import threading

import numpy as np
import pytest

from mcu_emul.comm.transport import Aborted
from mcu_emul.comm.virtual import Deadlock, Fabric, ThreadTransport, run_virtual


def one(x):
    return np.array([x], np.int64)


def ring_pass(log, rounds=3):
    """Each rank passes a token around the ring `rounds` times, logging what it does."""
    def body(t):
        nxt, prv = (t.rank + 1) % t.size, (t.rank - 1) % t.size
        v = t.rank
        for k in range(rounds):
            log.append((t.rank, "send", k))
            t.send(one(v), nxt)
            v = int(t.recv(prv, (1,), np.int64)[0]) + 1
            log.append((t.rank, "got", k))
        return v
    return body


def test_results_by_rank_closed_form():
    for n in (1, 2, 3, 7):
        res = run_virtual(n, ring_pass([], rounds=4))
        assert res == [(r - 4) % n + 4 for r in range(n)]


def test_one_rank_runs_at_a_time():
    running, most = [0], [0]

    def body(t):
        for k in range(20):
            running[0] += 1
            most[0] = max(most[0], running[0])
            # give other threads every chance to run here, were they not held by the baton
            threading.Event().wait(0.0005)
            running[0] -= 1
            t.send(one(k), (t.rank + 1) % t.size)
            t.recv((t.rank - 1) % t.size, (1,), np.int64)
    run_virtual(6, body)
    assert most[0] == 1


def test_order_is_fixed():
    """A rank runs until it waits; the baton then goes to the next runnable rank."""
    logs = []
    for _ in range(3):
        log = []
        run_virtual(3, ring_pass(log, rounds=2))
        logs.append(log)
    assert logs[0] == logs[1] == logs[2]
    # rank 0 sends, waits for rank 2: rank 1 receives, sends, waits; rank 2 likewise; then 0 again
    assert logs[0][:6] == [(0, "send", 0), (1, "send", 0), (1, "got", 0), (1, "send", 1),
                           (2, "send", 0), (2, "got", 0)]


def test_failure_ends_every_rank_with_the_real_error():
    started = []

    def body(t):
        started.append(t.rank)
        if t.rank == 2:
            raise ValueError("boom on 2")
        return t.recv((t.rank + 1) % t.size, (1,), np.int64)      # nobody sends: would hang
    with pytest.raises(ValueError, match="boom on 2") as e:
        run_virtual(5, body)
    assert e.value.mcu_rank == 2
    assert started == [0, 1, 2]               # ranks 3, 4 never start after the failure


def test_failure_while_others_hold_messages():
    def body(t):
        if t.rank == 0:
            for r in range(1, t.size):
                t.send(one(r), r)
            raise KeyError("late failure")
        t.recv(0, (1,), np.int64)
        return t.recv(0, (1,), np.int64)         # the second message never comes
    with pytest.raises(KeyError, match="late failure"):
        run_virtual(4, body)


def test_deadlock_is_an_error_naming_the_ranks():
    def body(t):
        return t.recv(1 - t.rank, (1,), np.int64)                # both receive first
    with pytest.raises(Deadlock, match="rank 0 waits for rank 1, rank 1 waits for rank 0"):
        run_virtual(2, body)


def test_deadlock_when_the_sender_finished():
    def body(t):
        if t.rank == 1:
            return t.recv(0, (1,), np.int64)
        return None                                              # rank 0 ends without sending
    with pytest.raises(Deadlock, match="rank 1 waits for rank 0"):
        run_virtual(2, body)


def test_aborted_carries_no_real_error():
    """Ranks released by a failure raise Aborted; run_virtual never re-raises an Aborted."""
    seen = []

    def body(t):
        try:
            if t.rank == 0:
                t.recv(1, (1,), np.int64)
            raise OSError("rank 1 fails")
        except Aborted as e:
            seen.append(e)
            raise
    with pytest.raises(OSError):
        run_virtual(2, body)
    assert len(seen) == 1


def test_single_rank_without_scheduler():
    t = ThreadTransport(Fabric(1), 0)
    t.send(np.arange(3, dtype=np.int32), 0, stamp=(5, 2))
    a, stamp = t.recv_msg(0, (3,), np.int32)
    assert a.tolist() == [0, 1, 2] and stamp == (5, 2) and t.sent_messages == 1
    with pytest.raises(Deadlock):
        t.recv(0, (1,), np.int64)


def test_wrong_message_shape_is_an_error():
    def body(t):
        if t.rank == 0:
            t.send(one(1), 1)
        else:
            t.recv(0, (2,), np.int64)
    with pytest.raises(RuntimeError, match="expected int64"):
        run_virtual(2, body)


@pytest.mark.parametrize("phase", ["load", "attention", "ffn", "report"])
def test_chip_failure_ends_the_in_process_run(phase):
    from mcu_emul.chip import InjectedFailure, RunSpec, run_chip
    from mcu_emul.config import load_chip, load_topology
    spec = RunSpec(model="tinyllama-tiny", weights="", chip=load_chip(), topology=load_topology(), dry_run=True,
                   gen_tokens=3, fail_rank=2, fail_at=phase)
    with pytest.raises(InjectedFailure, match=f"phase '{phase}' on rank 2") as e:
        run_virtual(4, lambda t: run_chip(spec, t))
    assert e.value.mcu_rank == 2
