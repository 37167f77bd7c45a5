"""Exact all-reduces as one exchange (comm/exchange.py) equal moving every message of the
algorithm (--hops): outputs, tokens, every per-chip counter and section, message counts and
trace events, over every algorithm, uneven splits, busy links, mixed clusters, both payloads
(int8's saturating sums keep their messages) and MobileBERT; in-process chips against MPI ranks
(which move every message), and the exchange over MPI in tests/mpi_allreduce_check.py."""
import dataclasses
import json

import numpy as np
import pytest

from mcu_emul.chip import run_chip
from mcu_emul.comm import exchange
from mcu_emul.comm.virtual import Deadlock, run_virtual
from test_dryrun import CASES, same, spec_of

from conftest import results, run_cli


def both(spec, n):
    """(one exchange per all-reduce, every message moved) results of spec on n in-process chips."""
    fast = run_virtual(n, lambda t: run_chip(dataclasses.replace(spec, hops=False), t))[0]
    slow = run_virtual(n, lambda t: run_chip(dataclasses.replace(spec, hops=True), t))[0]
    return fast, slow


@pytest.mark.parametrize("name", [k for k in CASES if CASES[k][1] > 1])
def test_one_exchange_equals_moving_every_message(name):
    model, n, topo, kw = CASES[name]
    exchange._MEMO.clear()
    fast, slow = both(spec_of(model, topo, kw), n)
    same(fast, slow, name)


@pytest.mark.parametrize("model,n,kw", [("tinyllama-tiny", 4, dict(gen_tokens=4, prompt_ids=[5, 9])),
                                        ("tinyllama-tiny-gqa", 2, dict(gen_tokens=3, payload="int8")),
                                        ("mobilebert-tiny", 3, dict(seq_len=12))])
def test_real_weights_and_traces_are_the_same(tiny_weights, model, n, kw):
    spec = dataclasses.replace(spec_of(model, {}, kw), dry_run=False, weights=tiny_weights[model], trace=True)
    fast, slow = both(spec, n)
    assert fast["traces"] == slow["traces"] and any(fast["traces"])
    same(fast, slow, model)


def test_a_busy_link_changes_the_outcome_and_is_not_taken_from_memory():
    """Slow single-port links stay busy past the next all-reduce: the remembered arrival
    times must not serve a round whose links are busy (breaking that key fails this test)."""
    model, n, topo, kw = CASES["llama-8-slow-single-port"]
    spec = spec_of(model, topo, kw)
    exchange._MEMO.clear()
    fast, slow = both(spec, n)
    same(fast, slow, "slow links")
    assert any(len(k[2]) for k in exchange._MEMO), "no round entered with a busy link: the case tests nothing"


def test_ranks_wait_for_each_other_at_an_exchange():
    order = []

    def body(t):
        order.append(("in", t.rank))
        rnd = t.allgather(np.array([t.rank], np.int64), np.full(2, t.rank, np.int32))
        order.append(("out", t.rank))
        return [int(b[0]) for _, b in rnd]

    got = run_virtual(3, body)
    assert got == [[0, 1, 2]] * 3
    assert [k for k, _ in order] == ["in"] * 3 + ["out"] * 3


def test_a_rank_missing_from_an_exchange_is_a_deadlock_not_a_hang():
    def body(t):
        if t.rank == 1:
            return None
        t.allgather(np.zeros(1, np.int64), np.zeros(1, np.int32))

    with pytest.raises(Deadlock, match="waits for the others at an all-reduce"):
        run_virtual(3, body)


@pytest.mark.mpiexec
def test_in_process_exchange_equals_mpi_ranks_moving_every_message(tiny_weights, tmp_path):
    """4 MPI ranks (which move every message: Transport.exchange_pays) against in-process chips."""
    w = tiny_weights["tinyllama-tiny"]
    reps = {}
    for name, extra, n in (("mpi", [], 4), ("in-process", ["--chips", "4"], None)):
        out = tmp_path / f"{name}.json"
        p = run_cli(["run", "--weights", w, "--gen-tokens", "4", "--allreduce", "ring", "--json", out, "--quiet",
                     *extra], n=n)
        assert p.returncode == 0, p.stderr
        reps[name] = results(json.loads(out.read_text()))
    assert reps["mpi"] == reps["in-process"]
