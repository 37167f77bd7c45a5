"""Start N ranks (emulated chips) with whichever MPI is installed: MPICH or Open MPI.

    python -m mcu_emul.commands.launcher N [run options...]     (launch/run.sh calls this)

Uses MCU_EMUL_MPIEXEC, else the mpiexec next to this Python (the mpich wheel's), else the
one on PATH. Open MPI gets --oversubscribe (more ranks than cores) and, as root,
--allow-run-as-root; MPICH's hydra needs neither.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def find_mpiexec() -> str:
    env = os.environ.get("MCU_EMUL_MPIEXEC")
    if env:
        return env
    here = Path(sys.executable).parent / "mpiexec"
    if here.exists():
        return str(here)
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if not found:
        raise SystemExit("mcu_emul launcher: no mpiexec found (pip install mpich, or set MCU_EMUL_MPIEXEC)")
    return found


def flavor(mpiexec: str) -> str:
    """'openmpi', 'mpich' or 'unknown', from `mpiexec --version`."""
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout + out.stderr).lower()
    if "open mpi" in text or "openrte" in text or "open-mpi" in text:
        return "openmpi"
    if "hydra" in text or "mpich" in text:
        return "mpich"
    return "unknown"


def mpi_command(n: int, args: list[str], mpiexec: str | None = None, python: str | None = None,
                module: str = "mcu_emul") -> list[str]:
    mpiexec = mpiexec or find_mpiexec()
    extra = []
    if flavor(mpiexec) == "openmpi":
        extra.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            extra.append("--allow-run-as-root")
    return [mpiexec, *extra, "-n", str(n), python or sys.executable, "-m", module, *args]


def run_report(args: list[str], chips: int, json_path, dry: bool = False) -> dict:
    """Run `python -m mcu_emul run ARGS --json json_path` on `chips` chips (MPI ranks, or
    in-process with dry) and return its report; a failed run is a one-line UserError."""
    import json
    from ..errors import UserError
    args = ["run", *args, "--json", str(json_path), "--quiet"]
    if dry:
        cmd = [sys.executable, "-m", "mcu_emul", *args, "--dry-run", "--chips", str(chips)]
    elif chips == 1:
        cmd = [sys.executable, "-m", "mcu_emul", *args]
    else:
        cmd = mpi_command(chips, args)
    p = subprocess.run(cmd, capture_output=True, text=True, env=without_launcher_env())
    if p.returncode != 0:
        raise UserError(f"run on {chips} chip(s) failed ({' '.join(args[:3])} ...): {cause(p.stderr)}")
    return json.loads(Path(json_path).read_text())


def without_launcher_env() -> dict:
    """This process's environment minus an MPI launcher's per-process variables, so that a run
    started from inside an MPI or Slurm step starts its own world."""
    drop = ("PMI_", "PMIX_", "OMPI_", "HYDI_", "HYDRA_", "MPI_LOCAL")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def cause(stderr: str) -> str:
    """The failing run's own message (not the launcher's lines after it)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    ours = [ln for ln in lines if ln.startswith("mcu_emul:") and "making default weights" not in ln]
    msg = (ours or lines[-1:] or ["(no message)"])[-1]
    return msg.removeprefix("mcu_emul: error: ")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or not argv[0].isdigit() or int(argv[0]) < 1:
        print("usage: python -m mcu_emul.commands.launcher N [mcu_emul run options...]", file=sys.stderr)
        return 2
    n, rest = int(argv[0]), argv[1:]
    if not rest or rest[0].startswith("-"):
        rest = ["run", *rest]
    return subprocess.call(mpi_command(n, rest))


if __name__ == "__main__":
    sys.exit(main())
