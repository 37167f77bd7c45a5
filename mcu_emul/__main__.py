"""Entry point: `python -m mcu_emul` / `mpirun -n N python -m mcu_emul`.

Under an MPI launcher every rank is one chip; an error on any rank ends the whole job at once
(COMM_WORLD.Abort), never leaving the other ranks hung in a collective.
"""
from __future__ import annotations

import os
import sys
import traceback


def main() -> None:
    from .errors import UserError
    from .transport import MPITransport, mpi_launched

    comm = None
    transport = None
    if mpi_launched():
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        transport = MPITransport(comm)
    from . import cli
    code = 0
    try:
        code = cli.main(transport_factory=lambda: transport)
    except UserError as e:
        where = f" (rank {comm.Get_rank()})" if comm is not None and comm.Get_size() > 1 else ""
        print(f"mcu_emul: error{where}: {e}", file=sys.stderr, flush=True)
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:                    # output piped into `head`: not an error
        code = 0
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, SystemExit):
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if code == 0:
                sys.exit(0)
        else:
            from .chip import InjectedFailure
            rank = getattr(e, "mcu_rank", comm.Get_rank() if comm is not None else 0)
            if not isinstance(e, InjectedFailure):
                traceback.print_exc()
            print(f"mcu_emul: rank {rank} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            code = 1
    sys.stdout.flush()
    if code and comm is not None and comm.Get_size() > 1:
        comm.Abort(code)
    if comm is not None and transport is not None:
        transport.finish()
    os._exit(code) if code else sys.exit(0)


if __name__ == "__main__":
    main()
