"""launch/mcu_emul.sbatch's own logic, run directly by bash with a stand-in `srun` that prints
its arguments (the real-Slurm runs are in test_slurm.py and test_multinode.py)."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPT = ROOT / "launch/mcu_emul.sbatch"
PLUGINS = "MPI plugin types are...\n\tpmix\n\tnone\n\tcray_shasta\n\tpmi2\nspecific pmix plugin versions available: pmix_v4\n"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture
def fake_srun(tmp_path):
    """A `srun` that lists the plugins in $PLUGINS for --mpi=list, else prints one <arg> a line."""
    d = tmp_path / "bin"
    d.mkdir()
    (d / "srun").write_text('#!/bin/sh\nif [ "$1" = --mpi=list ]; then printf "$PLUGINS"; exit 0; fi\n'
                            'for a in "$@"; do printf "<%s>\\n" "$a"; done\n')
    (d / "srun").chmod(0o755)
    return d


def script(fake_srun, *args, plugins=PLUGINS, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "MCU_EMUL_"))}
    e |= {"PATH": f"{fake_srun}:{os.environ['PATH']}", "PLUGINS": plugins, "SLURM_NTASKS": "4",
          "MCU_EMUL_PYTHON": sys.executable} | env
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=e, timeout=60)


def launched(p) -> list[str]:
    assert p.returncode == 0, p.stderr
    return [ln[1:-1] for ln in p.stdout.splitlines()]


def test_no_arguments_under_set_u(fake_srun):
    assert launched(script(fake_srun)) == ["--mpi=pmi2", "-n", "4", sys.executable, "-m", "mcu_emul", "run"]


def test_arguments_are_never_split(fake_srun, tmp_path):
    f = tmp_path / "args"
    f.write_text("--prompt\r\nOnce upon a time\r\n\n--json\nmy results/r.json")     # CRLF, blank, no last \n
    got = launched(script(fake_srun, "--seed", "a b  c", "", MCU_EMUL_ARGS="--model  mobilebert --quiet",
                          MCU_EMUL_ARGS_FILE=str(f)))
    assert got[got.index("run") + 1:] == ["--model", "mobilebert", "--quiet", "--prompt", "Once upon a time",
                                          "--json", "my results/r.json", "--seed", "a b  c", ""]


@pytest.mark.parametrize("lib,plugins,want", [
    ("MPICH Version: 5.0.2", PLUGINS, "pmi2"),
    ("Open MPI v5.0.3, package: Open MPI", PLUGINS, "pmix"),
    ("MPICH Version: 5.0.2", "MPI plugin types are...\n\tpmix\n\tnone\n", "pmix"),
    ("Open MPI v4.1.4", "MPI plugin types are...\n\tpmi2\n\tnone\n", "pmi2"),
])
def test_default_plugin_follows_the_mpi_library(fake_srun, tmp_path, lib, plugins, want):
    py = tmp_path / "python"
    py.write_text(f"#!/bin/sh\necho '{lib}'\n")         # what mpi4py's MPI.Get_library_version() says
    py.chmod(0o755)
    got = launched(script(fake_srun, plugins=plugins, MCU_EMUL_PYTHON=str(py)))
    assert got[0] == f"--mpi={want}"


def test_plugin_chosen_by_name(fake_srun):
    assert launched(script(fake_srun, MCU_EMUL_SRUN_MPI="pmix"))[0] == "--mpi=pmix"


@pytest.mark.parametrize("env,message", [
    ({"MCU_EMUL_SRUN_MPI": "pmi5"}, "MCU_EMUL_SRUN_MPI=pmi5: srun offers only: pmix none cray_shasta pmi2"),
    ({"PLUGINS": "MPI plugin types are...\n\tnone\n"}, "srun offers neither pmi2 nor pmix (srun --mpi=list: none)"),
    ({"MCU_EMUL_LAUNCH": "mpirun"}, "MCU_EMUL_LAUNCH must be srun or mpiexec, got 'mpirun'"),
    ({"MCU_EMUL_ARGS_FILE": "/nonexistent/args"}, "MCU_EMUL_ARGS_FILE=/nonexistent/args: no such readable file"),
    ({"MCU_EMUL_PYTHON": "/nonexistent/python"}, "MCU_EMUL_PYTHON=/nonexistent/python is not an executable file"),
    ({"SLURM_NTASKS": ""}, "SLURM_NTASKS is not set: submit this script with sbatch"),
])
def test_bad_knobs_are_one_line_errors(fake_srun, env, message):
    p = script(fake_srun, **env)
    assert p.returncode == 2 and p.stdout == "", (p.stdout, p.stderr)
    assert p.stderr.startswith("mcu_emul: error: ") and p.stderr.count("\n") == 1 and message in p.stderr, p.stderr
