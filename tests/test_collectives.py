"""All-reduce over in-process ranks: values and the shape of the communication."""
import numpy as np
import pytest

from mcu_emul.comm.collectives import ALGORITHMS, Collectives, messages_sent
from mcu_emul.comm.virtual import run_virtual

GROUPS = [(4,), (2, 4), (3,)]


def _data(rank, n):
    return (np.random.default_rng(rank).integers(-(2**20), 2**20, n)).astype(np.int32)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("size", list(range(1, 18)))
def test_allreduce_sum_and_messages(algorithm, size):
    for groups in GROUPS if algorithm == "hierarchical" else [(4,)]:
        def body(t):
            c = Collectives(t, algorithm, groups)
            outs = [c.sum(_data(t.rank, n)) for n in (1, 5, 1000)]
            mx = c.max(np.array([t.rank * 7 % 5, -t.rank], np.int64))
            return outs, mx, t.sent_messages
        res = run_virtual(size, body)
        for i, n in enumerate((1, 5, 1000)):
            want = sum(_data(r, n).astype(np.int64) for r in range(size))
            for r in range(size):
                assert np.array_equal(res[r][0][i], want), (r, n)
        for r in range(size):
            assert res[r][1].tolist() == [max(q * 7 % 5 for q in range(size)), 0]
            assert res[r][2] == 4 * messages_sent(algorithm, r, size, groups), (groups, r)


def test_message_shape_closed_forms():
    # ring: every rank 2(N-1); all ranks together 2N(N-1)
    assert sum(messages_sent("ring", r, 8) for r in range(8)) == 2 * 8 * 7
    # flat: N-1 up and N-1 down
    assert sum(messages_sent("flat", r, 8) for r in range(8)) == 2 * 7
    # hierarchical, groups of 4 on 8 ranks: 6 up, 6 down, a 2-leader ring (2 each)
    assert sum(messages_sent("hierarchical", r, 8, (4,)) for r in range(8)) == 16
    assert [messages_sent("hierarchical", r, 8, (4,)) for r in range(8)] == [5, 1, 1, 1, 5, 1, 1, 1]
    # 17 ranks in groups of 4: 5 groups (the last of one rank), leaders ring over 5
    assert [messages_sent("hierarchical", r, 17, (4,)) for r in (0, 1, 16)] == [3 + 8, 1, 8]


@pytest.mark.parametrize("top", ["ring", "recursive_doubling", "tree"])
@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 12, 16, 17])
def test_top_level_algorithms_exact(top, size):
    """The leaders' algorithm at the top of the hierarchy: every rank gets the exact sum and
    max, and sends the closed-form number of messages; groups of 2 put 1-9 leaders on top."""
    for groups in [(2,), ()]:
        def body(t):
            c = Collectives(t, "hierarchical", groups, top=top)
            outs = [c.sum(_data(t.rank, n)) for n in (1, 1000)]
            mx = c.max(np.array([t.rank * 7 % 5, -t.rank], np.int64))
            return outs, mx, t.sent_messages
        res = run_virtual(size, body)
        for i, n in enumerate((1, 1000)):
            want = sum(_data(r, n).astype(np.int64) for r in range(size))
            assert all(np.array_equal(res[r][0][i], want) for r in range(size)), (groups, n)
        for r in range(size):
            assert res[r][1].tolist() == [max(q * 7 % 5 for q in range(size)), 0]
            assert res[r][2] == 3 * messages_sent("hierarchical", r, size, groups, top), (groups, r)


def test_top_level_message_counts():
    # 16 leaders: ring 30 messages each; recursive doubling log2 16 = 4; tree 15 up + 15 down
    assert messages_sent("hierarchical", 0, 16, (), "ring") == 30
    assert {messages_sent("hierarchical", r, 16, (), "recursive_doubling") for r in range(16)} == {4}
    assert sum(messages_sent("hierarchical", r, 16, (), "tree") for r in range(16)) == 30
