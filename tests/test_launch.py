"""The MPI launcher (MPICH and Open MPI command lines) and the sweep runner."""
import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, env
from mcu_emul.commands.launcher import find_mpiexec, flavor, mpi_command


def test_launcher_runs_with_mpich(tiny_weights, tmp_path):
    assert flavor(find_mpiexec()) == "mpich"
    js = tmp_path / "r.json"
    e = env() | {"PYTHON": sys.executable}
    p = subprocess.run([str(ROOT / "launch/run.sh"), "3", "--model", "tinyllama-tiny", "--weights",
                        tiny_weights["tinyllama-tiny"], "--gen-tokens", "2", "--json", str(js), "--quiet"],
                       capture_output=True, text=True, timeout=120, env=e)
    assert p.returncode == 0, p.stderr
    assert json.loads(js.read_text())["chips"] == 3


def test_openmpi_command_line(tmp_path):
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\necho 'mpiexec (OpenRTE) 4.1.4'\necho 'Report bugs to http://www.open-mpi.org/'\n")
    fake.chmod(0o755)
    assert flavor(str(fake)) == "openmpi"
    cmd = mpi_command(8, ["run"], mpiexec=str(fake), python="py")
    assert cmd[:2] == [str(fake), "--oversubscribe"]
    assert ("--allow-run-as-root" in cmd) == (os.geteuid() == 0)
    assert cmd[cmd.index("-n") + 1] == "8" and cmd[-3:] == ["-m", "mcu_emul", "run"]
    mpich = mpi_command(2, ["run"], mpiexec=find_mpiexec(), python="py")
    assert "--oversubscribe" not in mpich and "--allow-run-as-root" not in mpich


@pytest.mark.skipif(shutil.which("ompi_info") is None, reason="Open MPI is not installed here")
def test_launcher_runs_with_openmpi(tiny_weights, tmp_path):
    js = tmp_path / "r.json"
    cmd = mpi_command(2, ["run", "--model", "tinyllama-tiny", "--weights", tiny_weights["tinyllama-tiny"],
                          "--json", str(js), "--quiet"], mpiexec=shutil.which("mpiexec"))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env())
    assert p.returncode == 0, p.stderr


def _sweep(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "mcu_emul", "sweep", "--model", "tinyllama-tiny", "--out",
                           str(tmp_path), *args], capture_output=True, text=True, timeout=300, env=env())


def test_sweep_dry_grid_csv_json(tmp_path):
    p = _sweep(tmp_path, "--chips", "1,4", "--allreduce", "hierarchical,ring", "--set",
               "link.link_bytes_per_s=2e7,2e9", "--dry-run", "--run-args", "--gen-tokens 2")
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip() == "", p.stderr                          # batch (no terminal): no progress bar
    rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert len(rows) == 8 and len(json.loads((tmp_path / "sweep.json").read_text())["rows"]) == 8
    assert {r["chips"] for r in rows} == {"1", "4"} and len({r["output_sha256"] for r in rows}) == 1
    by = {(r["chips"], r["allreduce"], r["overrides"]): float(r["latency_ms"]) for r in rows}
    for alg in ("hierarchical", "ring"):             # faster links never slower
        assert by[("4", alg, "link.link_bytes_per_s=2e9")] <= by[("4", alg, "link.link_bytes_per_s=2e7")]
    assert all(0 < float(r["blocks_latency_ms"]) < float(r["latency_ms"]) for r in rows)


def test_sweep_real_mpi_quiet(tiny_weights, tmp_path):
    p = _sweep(tmp_path, "--chips", "1,2", "--quiet", "--run-args",
               f"--weights {tiny_weights['tinyllama-tiny']} --gen-tokens 2")
    assert p.returncode == 0, p.stderr
    assert "[" not in p.stderr and "1 chips" not in p.stdout        # quiet: no bar, no table
    rows = json.loads((tmp_path / "sweep.json").read_text())["rows"]
    assert [r["chips"] for r in rows] == [1, 2] and rows[0]["output_sha256"] == rows[1]["output_sha256"]


def test_sweep_progress_bar_on_a_terminal(tmp_path):
    """On a terminal (a pty made by `script`) the sweep shows a bar with an ETA."""
    import shlex
    if not shutil.which("script"):
        pytest.skip("needs util-linux `script` for a pseudo-terminal")
    cmd = shlex.join([sys.executable, "-m", "mcu_emul", "sweep", "--model", "tinyllama-tiny", "--chips", "1,2",
                      "--dry-run", "--out", str(tmp_path), "--run-args", "--gen-tokens 2"])
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=120, env=env())
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2/2 done in" in p.stdout and "ETA" in p.stdout, p.stdout
