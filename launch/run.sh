#!/usr/bin/env bash
# Start N emulated chips (MPI ranks) with whichever mpiexec is installed:
#   launch/run.sh N [mcu_emul run options...]
# Uses the mpiexec next to the Python in use (the mpich wheel's) if present, else the one on PATH.
# Open MPI needs extra flags as root and beyond the core count; they are added when detected.
set -euo pipefail
n="${1:?usage: launch/run.sh N [options]}"; shift
py="${PYTHON:-python3}"
bindir="$(dirname "$(command -v "$py")")"
mpiexec="${MPIEXEC:-$( [ -x "$bindir/mpiexec" ] && echo "$bindir/mpiexec" || command -v mpiexec )}"
extra=()
if "$mpiexec" --version 2>&1 | grep -qi "open mpi"; then
  extra+=(--oversubscribe)
  [ "$(id -u)" = 0 ] && extra+=(--allow-run-as-root)
fi
exec "$mpiexec" "${extra[@]}" -n "$n" "$py" -m mcu_emul run "$@"
