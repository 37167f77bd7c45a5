"""launch/mcu_emul.sbatch against a real (throwaway, single-node) Slurm cluster."""
import json
import os
import sys

import pytest

from conftest import ROOT, results, run_cli
from slurm_cluster import running

pytestmark = pytest.mark.mpiexec


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    with running(tmp_path_factory.mktemp("slurm"), nodes=1, cpus=8) as c:
        yield c


@pytest.mark.parametrize("launch", ["srun", "mpiexec"])
def test_sbatch_eight_chips_matches_mpiexec(slurm, tiny_weights, tmp_path, launch):
    args = ["--model", "tinyllama-tiny", "--weights", tiny_weights["tinyllama-tiny"], "--gen-tokens", "4", "--quiet"]
    direct = run_cli(["run", *args, "--json", tmp_path / "direct.json"], n=8)
    assert direct.returncode == 0, direct.stderr
    slurm.env |= {"MCU_EMUL_PYTHON": sys.executable, "MCU_EMUL_LAUNCH": launch,
                  "MCU_EMUL_ARGS": " ".join(map(str, args + ["--json", tmp_path / "slurm.json"]))}
    job = slurm.sbatch(ROOT / "launch/mcu_emul.sbatch", "--ntasks=8", f"--output={tmp_path}/job-%j.out", cwd=tmp_path)
    info = slurm.wait(job)
    out = (tmp_path / f"job-{job}.out").read_text() if (tmp_path / f"job-{job}.out").exists() else ""
    assert info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0", (info, out, slurm.logs())
    a = json.loads((tmp_path / "direct.json").read_text())
    b = json.loads((tmp_path / "slurm.json").read_text())
    assert b["chips"] == 8
    assert {c["node"] for c in b["per_chip"]} == {"n1"}                  # the node's Slurm name
    assert {c["node"] for c in a["per_chip"]} == {os.environ.get("SLURMD_NODENAME")}
    assert results(a) == results(b)
    assert a["provenance"]["weights"] == b["provenance"]["weights"]


def test_serial_run_inside_allocation_honours_chips(slurm, tmp_path):
    """Inside an sbatch job (SLURM_NTASKS=2) a plain serial run is not an MPI rank: --chips and a
    dry sweep's chip counts are honoured."""
    script = tmp_path / "serial.sh"
    script.write_text("\n".join([
        "#!/bin/bash", "set -e",
        f"{sys.executable} -m mcu_emul run --model tinyllama-tiny --dry-run --chips 4 --json {tmp_path}/r.json --quiet",
        f"{sys.executable} -m mcu_emul sweep --model tinyllama-tiny --chips 1,2,4 --dry-run --quiet --out {tmp_path}/sw",
        ""]))
    job = slurm.sbatch(script, "--ntasks=2", f"--output={tmp_path}/job-%j.out", cwd=tmp_path)
    info = slurm.wait(job)
    out = (tmp_path / f"job-{job}.out").read_text() if (tmp_path / f"job-{job}.out").exists() else ""
    assert info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0", (info, out)
    assert json.loads((tmp_path / "r.json").read_text())["chips"] == 4
    rows = json.loads((tmp_path / "sw/sweep.json").read_text())["rows"]
    assert [r["chips"] for r in rows] == [1, 2, 4]
    assert len({r["latency_ms"] for r in rows}) == 3, rows
