"""Shared fixtures: tiny weights files, CLI and mpiexec helpers."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mcu_emul.files.weights import make_weights

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 120


def mpiexec_path() -> str:
    cand = Path(sys.executable).parent / "mpiexec"
    return str(cand) if cand.exists() else (shutil.which("mpiexec") or "mpiexec")


def env():
    e = dict(os.environ)
    e.setdefault("MPIEXEC_TIMEOUT", str(TIMEOUT_S))
    e.pop("MCU_EMUL_MPI", None)
    return e


def _in_use() -> set:
    """Files under /dev/shm or /tmp that a live process maps or holds open."""
    used = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/maps") as f:
                used.update(line.split()[-1] for line in f if "/dev/shm/" in line)
            fd_dir = f"/proc/{pid}/fd"
            used.update(os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir))
        except OSError:
            continue
    return used


def cleanup_mpich():
    """MPICH leaves shared-memory segments and hwloc files behind after an abort. Remove the
    orphans only: a segment that a live process still maps belongs to a running MPI job
    (another test session, a user's run) and is left alone."""
    leftovers = glob.glob("/dev/shm/mpich_shm_*") + glob.glob("/tmp/hydra_hwloc_xmlfile_*")
    if not leftovers:
        return
    used = _in_use()
    for p in leftovers:
        if p in used:
            continue
        try:
            os.unlink(p)
        except OSError:
            pass


def results(rep: dict) -> dict:
    """A report's results: without the host's timings, the provenance of the invocation and
    where each chip ran (node, host), which differ between launchers and machines while every
    result (outputs, counters, emulated figures) must not."""
    out = {k: v for k, v in rep.items() if not k.startswith("host_") and k != "provenance"}
    out["per_chip"] = [{k: v for k, v in c.items() if k not in ("node", "host")} for c in rep["per_chip"]]
    return out


def run_cli(args, timeout=TIMEOUT_S, n=None, cwd=None):
    """python -m mcu_emul ARGS, under mpiexec -n N when n is given."""
    cmd = [sys.executable, "-m", "mcu_emul", *map(str, args)]
    if n is not None:
        cmd = [mpiexec_path(), "-n", str(n), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(), cwd=cwd)


@pytest.fixture(scope="session")
def wdir(tmp_path_factory):
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="session")
def tiny_weights(wdir):
    """model name -> weights file, for the tiny test models."""
    out = {}
    for m in ("tinyllama-tiny", "tinyllama-tiny-gqa", "tinyllama-tiny64", "mobilebert-tiny"):
        out[m] = str(make_weights(m, 0, wdir / f"{m}.h5"))
    return out


@pytest.fixture(scope="session")
def full_weights(wdir):
    out = {}
    for m in ("tinyllama-42m", "mobilebert"):
        out[m] = str(make_weights(m, 0, wdir / f"{m}.h5"))
    return out
