"""A user's own test file (README "pytest fixtures"), using mcu_emul's `emulate` fixture.

    python -m pytest test_my_cluster.py                                  # in-process chips
    mpiexec -n 4 python -m pytest --with-mpi test_my_cluster.py          # one chip per rank
"""
import pytest

import mcu_emul


def test_fits_without_offchip_traffic(emulate):
    r = emulate("tinyllama-tiny", chips=4, dry_run=True)
    assert r.offchip_bytes == 0 and r.chips == 4


def test_eight_chips_more_than_eight_times_faster(emulate):
    one = emulate("tinyllama-42m", chips=1, gen_tokens=4, dry_run=True)
    eight = emulate("tinyllama-42m", chips=8, gen_tokens=4, dry_run=True)
    assert one.offchip_bytes > 0 and eight.offchip_bytes == 0        # the weights fit on 8 chips only
    assert one.latency_ms / eight.latency_ms > 8                      # super-linear


def test_bad_input_raises(emulate):
    with pytest.raises(mcu_emul.UserError, match="prompt id 9999"):
        emulate("tinyllama-tiny", chips=2, prompt_ids=[9999], dry_run=True)


@pytest.mark.mpi(min_size=2)
def test_one_chip_per_rank(emulate):
    from mpi4py import MPI
    r = emulate("tinyllama-tiny", gen_tokens=3)
    assert r.chips == MPI.COMM_WORLD.size
    same = emulate("tinyllama-tiny", chips=1, gen_tokens=3)         # in-process, on every rank
    assert r.output_sha256 == same.output_sha256                     # bit-identical to one chip


@pytest.mark.mpi(min_size=2)
def test_failure_on_one_rank_fails_all(emulate):
    with pytest.raises(RuntimeError, match="injected failure"):
        emulate("tinyllama-tiny", gen_tokens=3, fail_rank=1, fail_at="ffn")
    r = emulate("tinyllama-tiny", gen_tokens=2)                      # the communicator still works
    assert r.chips >= 2
