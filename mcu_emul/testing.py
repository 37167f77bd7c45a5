"""pytest plugin (installed with the package, entry point `pytest11`): the `emulate` fixture.

    def test_fits(emulate):
        r = emulate("tinyllama-tiny", chips=4, dry_run=True)
        assert r.offchip_bytes == 0

In plain pytest the chips run in-process. Under `mpiexec -n N python -m pytest --with-mpi`
(pytest-mpi's convention), `emulate(model)` without `chips` runs one chip per rank over
COMM_WORLD and returns the same Report on every rank, so the same assertions hold on all
ranks; an error on one rank raises on every rank (the failing rank's UserError, or a
RuntimeError naming it) instead of hanging them. Ranks meet at a barrier after each test.
"""
from __future__ import annotations

import pytest


@pytest.fixture
def emulate():
    from . import api
    from .comm.transport import mpi_launched
    yield api.run
    if mpi_launched():
        from .comm.transport import world
        world().Barrier()
