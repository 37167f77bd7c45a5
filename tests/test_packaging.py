"""A built wheel, installed outside the source tree, carries its data files and runs the
default job (TinyLlama-42M on 8 ranks; 2 tokens here instead of 32, to keep the suite short)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, cleanup_mpich, env, mpiexec_path


@pytest.mark.mpiexec
def test_wheel_installs_data_and_runs_default_job(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                        str(ROOT)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    if p.returncode != 0 and "Could not find a version" in p.stderr:
        pytest.skip(f"cannot build a wheel here (no build backend to be had): {p.stderr[-300:]}")
    assert p.returncode == 0, p.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("mcu_emul-*.whl")
    # a fresh venv that borrows the dependencies (numpy, h5py, mpi4py) of this one, so the
    # install touches neither this environment nor the network
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (site,) = venv.glob("lib/python*/site-packages")
    deps = [p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir()]
    (site / "_deps.pth").write_text("\n".join(map(str, deps)) + "\n")
    py = str(venv / "bin" / "python")
    p = subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    e = env() | {"MCU_EMUL_CACHE": str(tmp_path / "cache")}
    libmpi = sorted(Path(sys.prefix, "lib").glob("libmpi.so.*"))        # the mpich wheel's, borrowed too
    if libmpi:
        e["MPI4PY_LIBMPI"] = str(libmpi[0])
    e.pop("MCU_EMUL_DATA", None)
    out = tmp_path / "elsewhere"
    out.mkdir()
    where = subprocess.run([py, "-c", "import mcu_emul.config as c; print(c.__file__, c.DATA_DIR)"],
                           capture_output=True, text=True, env=e, cwd=out)
    assert str(site) in where.stdout and str(venv / "share/mcu_emul/data") in where.stdout, where.stdout + where.stderr
    models = subprocess.run([py, "-m", "mcu_emul", "models"], capture_output=True, text=True, env=e, cwd=out)
    assert models.returncode == 0 and "tinyllama-42m" in models.stdout, models.stderr
    run = subprocess.run([mpiexec_path(), "-n", "8", py, "-m", "mcu_emul", "--gen-tokens", "2", "--json",
                          "-", "--quiet"], capture_output=True, text=True, env=e, cwd=out, timeout=300)
    cleanup_mpich()
    assert run.returncode == 0, run.stderr[-2000:]
    rep = json.loads(run.stdout)
    assert rep["model"] == "tinyllama-42m" and rep["chips"] == 8 and rep["offchip_bytes"] == 0
    assert list(out.iterdir()) == []                      # nothing written next to the user
