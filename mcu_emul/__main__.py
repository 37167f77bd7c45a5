"""Entry point: `python -m mcu_emul` / `mpirun -n N python -m mcu_emul`.

Under an MPI launcher every rank is one chip; an error on any rank ends the whole job at once
(COMM_WORLD.Abort), never leaving the other ranks hung in a collective, with one message: an
input error is reported by rank 0 (every rank meets it); an error only one rank meets is
reported by that rank, after a grace period in which rank 0 may report it for the job.
"""
from __future__ import annotations

import os
import sys
import time
import traceback

GRACE_S = 1.0


def _fail(code: int, msg: str | None, transport, user_error: bool):
    """Print the one message, clean up, end this process (and the MPI job)."""
    from .files.outputs import remove_temps
    remove_temps()
    size = transport.size if transport is not None else 1
    if msg:
        msg = msg.replace("\r", "\\r").replace("\n", "\\n")        # one line, whatever the values hold
        if size > 1 and transport.rank != 0 and user_error:
            time.sleep(GRACE_S)              # rank 0 usually meets the same input and reports it
            msg = f"{msg} (rank {transport.rank} of {size})"
        print(msg, file=sys.stderr, flush=True)
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    if size > 1:
        transport.abort(code)
    os._exit(code)


def rank_blas_threads():
    """One BLAS thread per MPI rank unless the user chose a count: the ranks share the cores,
    and a thread pool per rank oversubscribes them further (8 ranks on 2 cores: 0.32-0.40 s a
    decode step with OpenBLAS's 2 threads per rank, 0.18-0.21 s with 1). numpy has loaded
    OpenBLAS already (the transport imports it), so the count is set through its API."""
    from .numerics.blas import blas_threads, chosen
    if not chosen():
        blas_threads(1)


def main() -> None:
    from .errors import UserError
    from .files.outputs import install_signal_cleanup
    from .comm.transport import MPITransport, mpi_launched

    install_signal_cleanup()
    transport = None
    if mpi_launched():
        rank_blas_threads()
        from mpi4py import MPI
        transport = MPITransport(MPI.COMM_WORLD)
    from .commands import cli
    try:
        code = cli.main(transport_factory=lambda: transport)
    except UserError as e:
        _fail(e.exit_code, f"mcu_emul: error: {e}", transport, True)
    except KeyboardInterrupt:
        _fail(130, None, transport, False)
    except BrokenPipeError:                    # output piped into `head`: not an error
        _fail(0, None, None, False)
    except SystemExit as e:                    # --help (0), a signal (128 + n)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code:
            _fail(code, None, transport, False)
    except BaseException as e:  # noqa: BLE001 - a bug or an injected failure: say which rank
        from .chip import InjectedFailure
        rank = getattr(e, "mcu_rank", transport.rank if transport is not None else 0)
        if not isinstance(e, InjectedFailure):
            traceback.print_exc()
        _fail(1, f"mcu_emul: rank {rank} failed: {type(e).__name__}: {e}", transport, False)
    else:
        if code:
            _fail(code, None, transport, False)
    sys.stdout.flush()
    if transport is not None:
        transport.finish()
    sys.exit(0)


if __name__ == "__main__":
    main()
