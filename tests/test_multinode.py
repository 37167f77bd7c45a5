"""One MPI world across the two nodes of a real Slurm cluster (two slurmd on this machine,
started here): the ranks sit on both nodes, results equal one node's, a failure on the second
node ends the whole job, and the batch script runs across nodes.

Both nodes are this machine, so where a rank ran is told by its Slurm node name
(SLURMD_NODENAME, in the report's per-chip `node`), never by host names.
"""
import json
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, results, run_cli
from slurm_cluster import running

pytestmark = pytest.mark.multinode

TINY = ["--model", "tinyllama-tiny", "--gen-tokens", "4"]
# 4 ranks, 2 a node (without --ntasks-per-node, Slurm's block distribution puts 3 on n1)
SRUN = ["srun", "--mpi=pmi2", "-N", "2", "-n", "4", "--ntasks-per-node=2"]
NODES = ["n1", "n1", "n2", "n2"]
# The mpich wheel's default netmod (UCX) sees one host and carries n1<->n2 messages through
# shared memory; libfabric's tcp provider on loopback makes them real TCP.
NETMODS = {"shm": {}, "tcp": {"MPICH_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp", "FI_TCP_IFACE": "lo"}}


@pytest.fixture(scope="module")
def slurm2(tmp_path_factory):
    with running(tmp_path_factory.mktemp("slurm2"), nodes=2, cpus=4) as c:
        yield c


def one_node(tmp_path, args) -> dict:
    """The reference: the same run under mpiexec -n 4 on this machine, outside Slurm."""
    js = tmp_path / "one-node.json"
    p = run_cli(["run", *args, "--json", js, "--quiet"], n=4)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(js.read_text())


@pytest.fixture(scope="module")
def tiny(tiny_weights, tmp_path_factory):
    """The tiny model's run options, and its one-node reference report."""
    args = [*TINY, "--weights", tiny_weights["tinyllama-tiny"]]
    return args, one_node(tmp_path_factory.mktemp("one-node"), args)


def srun(slurm, args, js, env=None, timeout=120):
    cmd = [*SRUN, sys.executable, "-m", "mcu_emul", "run", *map(str, args), "--json", str(js), "--quiet"]
    return slurm.run(cmd, env=slurm.env | (env or {}), timeout=timeout)


@pytest.mark.parametrize("netmod", NETMODS)
def test_one_world_on_two_nodes_equals_one_node(slurm2, tiny, tmp_path, netmod):
    args, ref = tiny
    # rank 0 prints MPICH's configuration summary: which netmod (and libfabric provider) ran
    p = srun(slurm2, args, tmp_path / "r.json", NETMODS[netmod] | {"MPIR_CVAR_DEBUG_SUMMARY": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert [(c["rank"], c["node"]) for c in r["per_chip"]] == list(enumerate(NODES))
    assert results(r) == results(ref)
    if netmod == "tcp":
        assert "libfabric provider: tcp - 127.0.0.1/32" in p.stdout, p.stdout[-3000:]
    else:
        assert "UCX netmod" in p.stdout and "libfabric provider" not in p.stdout, p.stdout[-3000:]


@pytest.mark.full
def test_default_model_on_two_nodes_equals_one_node(slurm2, full_weights, tmp_path):
    """The default model (tinyllama-42m, seed-0 weights), two decode steps."""
    args = ["--weights", full_weights["tinyllama-42m"], "--gen-tokens", "2"]
    p = srun(slurm2, args, tmp_path / "r.json")
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["model"] == "tinyllama-42m" and [c["node"] for c in r["per_chip"]] == NODES
    assert results(r) == results(one_node(tmp_path, args))


def test_failure_on_the_second_node_ends_the_job(slurm2, tiny_weights, tmp_path):
    t0 = time.monotonic()
    p = srun(slurm2, [*TINY, "--weights", tiny_weights["tinyllama-tiny"], "--fail-rank", "3", "--fail-at", "ffn"],
             tmp_path / "r.json", timeout=60)
    took = time.monotonic() - t0
    assert p.returncode != 0 and took < 30, (p.returncode, took, p.stderr)
    assert "mcu_emul: rank 3 failed: InjectedFailure: injected failure at phase 'ffn' on rank 3" in p.stderr
    # rank 3 ended on the second node, and Slurm killed the first node's ranks (MPI_Abort), not a timeout
    ends = task_ends(p.stderr)
    assert ends.get(3) == ("n2", "Exited with exit code 1") and ends.get(0) == ends.get(1) == ("n1", "Killed"), \
        p.stderr
    assert not (tmp_path / "r.json").exists()
    assert slurm2.quiesce(), "a job or step of the failed run is still there"
    assert not slurm2.processes(Path(sys.executable).name), "a rank of the failed run is still running"


def task_ends(stderr: str) -> dict:
    """srun's account of how each task ended: {task: (node, how)}, from lines such as
    `srun: error: n1: tasks 0-1: Killed` (one line per node and outcome, maybe several)."""
    ends = {}
    for node, tasks, how in re.findall(r"^srun: error: (\S+): tasks? ([\d,-]+): (.+)$", stderr, re.M):
        for part in tasks.split(","):
            lo, _, hi = part.partition("-")
            ends |= {t: (node, how) for t in range(int(lo), int(hi or lo) + 1)}
    return ends


def fake_checkout(tmp_path) -> Path:
    """This project's batch script in a checkout (with a space in its path) whose .venv/bin/python
    is a stand-in for this test's Python: what the script finds from its own location."""
    co = tmp_path / "check out"
    (co / "launch").mkdir(parents=True)
    shutil.copy(ROOT / "launch/mcu_emul.sbatch", co / "launch")
    (co / ".venv/bin").mkdir(parents=True)
    (co / ".venv/bin/python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (co / ".venv/bin/python").chmod(0o755)
    return co


@pytest.mark.parametrize("launch", ["srun", "mpiexec"])
def test_batch_script_on_two_nodes_equals_mpiexec(slurm2, tiny, tiny_weights, tmp_path, launch):
    """sbatch -N 2: run options from all three sources, none split; the venv found from the
    script's own path (sbatch runs a copy from its spool); the report equals mpiexec -n 4's."""
    co = fake_checkout(tmp_path)
    (tmp_path / "my results").mkdir()
    (tmp_path / "args").write_text(f"--weights\n{tiny_weights['tinyllama-tiny']}\n")
    env = {k: v for k, v in slurm2.env.items() if not k.startswith("MCU_EMUL_") or k == "MCU_EMUL_CACHE"}
    env |= {"MCU_EMUL_LAUNCH": launch, "MCU_EMUL_ARGS": " ".join(TINY), "MCU_EMUL_ARGS_FILE": str(tmp_path / "args")}
    submit = tmp_path / "submit"                       # no .venv here: not what the script finds
    submit.mkdir()
    job = slurm2.sbatch(co / "launch/mcu_emul.sbatch", "-N", "2", "--ntasks=4", "--ntasks-per-node=2",
                        f"--output={tmp_path}/job.out",
                        args=["--json", tmp_path / "my results/r.json", "--quiet"], cwd=submit, env=env)
    info = slurm2.wait(job, timeout_s=120)
    out = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
    assert (info.get("JobState"), info.get("ExitCode"), info.get("NodeList")) == ("COMPLETED", "0:0", "n[1-2]"), \
        (info, out)
    by = f"srun --mpi=pmi2, python {co}/.venv/bin/python" if launch == "srun" else f"mpiexec, python {co}/.venv/bin/python"
    assert f"mcu_emul.sbatch: 4 ranks on n[1-2] by {by}" in out, out
    r = json.loads((tmp_path / "my results/r.json").read_text())
    assert [c["node"] for c in r["per_chip"]] == NODES
    assert results(r) == results(tiny[1])
    assert r["provenance"]["weights"] == tiny[1]["provenance"]["weights"]
