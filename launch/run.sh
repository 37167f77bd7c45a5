#!/usr/bin/env bash
# Start N emulated chips (MPI ranks) with whichever MPI is installed (MPICH or Open MPI):
#   launch/run.sh N [mcu_emul run options...]
# PYTHON selects the interpreter (default: python3); MCU_EMUL_MPIEXEC a specific mpiexec.
exec "${PYTHON:-python3}" -m mcu_emul.commands.launcher "$@"
