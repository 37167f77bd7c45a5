"""The pytest plugin as a user meets it: their own test file, plain and under
`mpiexec -n 4 python -m pytest --with-mpi` (pytest-mpi installed)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cleanup_mpich, env, mpiexec_path

EXAMPLE = Path(__file__).resolve().parent / "user_example" / "test_my_cluster.py"


def _pytest(tmp_path, *pre, extra=()):
    shutil.copy(EXAMPLE, tmp_path / EXAMPLE.name)
    cmd = [*pre, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
           *extra, EXAMPLE.name]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=env() | {"MCU_EMUL_CACHE": str(tmp_path / "cache")})


def test_plain_pytest(tmp_path):
    p = _pytest(tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "3 passed, 2 skipped" in p.stdout, p.stdout[-1500:]


@pytest.mark.mpiexec
def test_under_mpiexec_with_mpi(tmp_path):
    pytest.importorskip("pytest_mpi", reason="needs pytest-mpi (pip install -e '.[test]')")
    p = _pytest(tmp_path, mpiexec_path(), "-n", "4", extra=["--with-mpi"])
    cleanup_mpich()
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert p.stdout.count("5 passed") == 4, p.stdout[-3000:]          # every rank ran every test
