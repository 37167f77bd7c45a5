"""A throwaway Slurm cluster of one or more nodes on this machine (munged, slurmctld and one
`slurmd -N <node>` per node, as plain background processes under one temp dir), for testing
batch scripts and multi-node MPI worlds against a real Slurm.

Several slurmd on one host need a Slurm built with multiple-slurmd support (Debian's is): each
gets its own port, and its spool dir, pid file and log differ through `%n` in slurm.conf.
"""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import cleanup_mpich

NEEDED = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "sinfo", "scancel")


def missing() -> list[str]:
    return [c for c in NEEDED if shutil.which(c) is None and not Path("/usr/sbin", c).exists()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:                           # gone meanwhile
        return []


class SlurmCluster:
    """`nodes` nodes named n1, n2, ... with `cpus` CPUs each (more than the machine has:
    config_overrides lets Slurm believe it)."""

    def __init__(self, root: Path, nodes: int = 1, cpus: int = 8):
        if nodes < 1:
            raise ValueError(f"nodes = {nodes}: need at least one")
        self.root = Path(root)
        self.names = [f"n{i + 1}" for i in range(nodes)]
        self.cpus = cpus
        # A fresh cluster would start again at job 1: MPICH names its shared-memory segments
        # after the PMI job id, so a segment an aborted job 1 left behind would be opened by
        # the next cluster's job 1 (MPI_Init fails when it needs a bigger one). A random first
        # id also keeps two test sessions on one machine apart.
        self.first_job_id = random.randint(10_000, 60_000_000)
        self.daemons: dict[str, list[subprocess.Popen]] = {"munged": [], "slurmctld": [], "slurmd": []}
        self.conf = self.root / "slurm.conf"
        # Set before any daemon starts, so that every process of this cluster (daemons, their
        # stepds, the job's tasks) carries it in /proc/PID/environ: that is how stop() finds them.
        self.env = dict(os.environ) | {"SLURM_CONF": str(self.conf)}

    def start(self, timeout_s: float = 30.0):
        r = self.root
        for d in ("state", "munge", "log", *(f"spool/{n}" for n in self.names)):   # spool/<node>: slurmd
            (r / d).mkdir(parents=True, exist_ok=True)                              # will not make it
        os.chmod(r, 0o755)                   # munged wants the socket's parent dirs world-executable
        os.chmod(r / "munge", 0o755)
        key, sock = r / "munge" / "munge.key", r / "munge" / "munge.socket"
        subprocess.run([_exe("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        os.chmod(key, 0o600)
        self._spawn("munged", [_exe("munged"), "-F", "--force", f"--key-file={key}", f"--socket={sock}",
                               f"--pid-file={r}/munge/munged.pid", f"--seed-file={r}/munge/seed",
                               f"--log-file={r}/log/munged.log"])
        ports = [_free_port() for _ in self.names]
        self.conf.write_text("\n".join([
            "ClusterName=mcuemultest", "SlurmctldHost=localhost(127.0.0.1)",
            "AuthType=auth/munge", f"AuthInfo=socket={sock}", "CredType=cred/munge",
            "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={ports[0]}",
            f"StateSaveLocation={r}/state", f"FirstJobId={self.first_job_id}",
            f"SlurmdSpoolDir={r}/spool/%n", f"SlurmdPidFile={r}/slurmd-%n.pid",
            f"SlurmdLogFile={r}/log/slurmd-%n.log",
            f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmctldLogFile={r}/log/slurmctld.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            # refuse an impossible job at once (else it waits forever); schedule jobs in ~1 s, not ~3 s
            "EnforcePartLimits=ALL", "SchedulerParameters=batch_sched_delay=0", "MinJobAge=600",
            "MpiDefault=none", "ReturnToService=2", "SlurmdParameters=config_overrides",
            *(f"NodeName={n} NodeAddr=127.0.0.1 Port={p} CPUs={self.cpus} State=UNKNOWN"
              for n, p in zip(self.names, ports)),
            f"PartitionName=test Nodes={','.join(self.names)} Default=YES MaxTime=INFINITE State=UP", ""]))
        time.sleep(0.3)                      # munged's socket, before slurmctld asks for credentials
        self._spawn("slurmctld", [_exe("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        for n in self.names:
            self._spawn("slurmd", [_exe("slurmd"), "-D", "-N", n, "-f", str(self.conf)], n)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.node_states() == {n: "idle" for n in self.names}:
                return self
            if any(p.poll() is not None for ps in self.daemons.values() for p in ps):
                break
            time.sleep(0.2)
        raise RuntimeError(f"slurm nodes {self.node_states()} not all idle after {time.monotonic() - t0:.0f} s "
                           f"(multiple slurmd: {self.multiple_slurmd()}): {self.logs()}")

    def _spawn(self, role: str, cmd: list[str], node: str = ""):
        log = open(self.root / "log" / f"{role}{'-' + node if node else ''}.out", "w")
        self.daemons[role].append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env))
        log.close()                           # the child holds its own copy

    def run(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        """A client command (srun, sbatch, squeue, ...) against this cluster."""
        kw.setdefault("timeout", 60)
        return subprocess.run(cmd, capture_output=True, text=True, env=kw.pop("env", self.env), **kw)

    def node_states(self) -> dict[str, str]:
        p = self.run(["sinfo", "-h", "-N", "-o", "%N %T"])
        pairs = [ln.split() for ln in p.stdout.splitlines()]
        return {a[0]: a[1] for a in pairs if len(a) == 2} if p.returncode == 0 else {}

    def multiple_slurmd(self) -> bool | None:
        """Whether this Slurm was built to run several slurmd on one host (None: no controller)."""
        p = self.run(["scontrol", "show", "config"])
        if p.returncode != 0:
            return None
        return any(ln.split() == ["MULTIPLE_SLURMD", "=", "Yes"] for ln in p.stdout.splitlines())

    def logs(self) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*")):
            out.append(f"--- {f.name}\n{f.read_text(errors='replace')[-2000:]}")
        return "\n".join(out)

    def sbatch(self, script, *options, args=(), cwd=None, env=None) -> str:
        """Submit `script` with sbatch `options` and the script's own `args`; the job id."""
        p = self.run(["sbatch", "--parsable", *map(str, options), str(script), *map(str, args)], cwd=cwd,
                     env=env or self.env)
        if p.returncode != 0:
            raise RuntimeError(f"sbatch failed: {p.stderr}")
        return p.stdout.strip().split(";")[0]

    def wait(self, job: str, timeout_s: float = 180.0) -> dict:
        """Wait for a job to leave the queue (polling squeue: `sbatch --wait` is slow); its
        `scontrol show job` fields (JobState, ExitCode, NodeList, ...)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            q = self.run(["squeue", "-h", "-j", job])
            if q.returncode == 0 and not q.stdout.strip():
                break
            time.sleep(0.3)
        else:
            raise TimeoutError(f"job {job} still running after {timeout_s} s")
        p = self.run(["scontrol", "show", "job", job])
        return dict(kv.split("=", 1) for kv in p.stdout.split() if "=" in kv)

    def processes(self, name: str = "") -> list[int]:
        """PIDs of live processes of this cluster (named `name`, if given): daemons, stepds, tasks."""
        mine = f"SLURM_CONF={self.conf}".encode()
        out = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if int(pid) == os.getpid():
                continue
            # a stepd names itself "slurmstepd: [job.step]"
            if name and os.path.basename((_cmdline(pid) or [""])[0].split(":")[0]) != name:
                continue
            try:
                if mine in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    out.append(int(pid))
            except OSError:                   # gone meanwhile, or a zombie
                continue
        return out

    def quiesce(self, timeout_s: float = 15.0) -> bool:
        """Wait until no job is queued or running, every node is idle and no stepd is left.
        srun returns (and the job is complete in slurmctld) while the second node's stepd may
        still be reporting the step's end for a second or two."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            q = self.run(["squeue", "-h"])
            if q.returncode == 0 and not q.stdout.strip() and set(self.node_states().values()) <= {"idle"} \
                    and not self.processes("slurmstepd"):
                return True
            time.sleep(0.2)
        return False

    def stop(self):
        """Cancel every job, wait until quiet, then stop slurmd, slurmctld and munged in that
        order. Stopping them all at once once left a slurmd hung on SIGTERM and its stepd
        retrying its step-completion message forever; such a stepd ignores SIGTERM."""
        if any(p.poll() is None for p in self.daemons["slurmctld"]):
            self.run(["scancel", "--full", "-u", str(os.getuid())])
            self.quiesce()
        for role in ("slurmd", "slurmctld", "munged"):
            for p in self.daemons[role]:
                p.terminate()
            for p in self.daemons[role]:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for pid in self.processes("slurmstepd"):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@contextlib.contextmanager
def running(root: Path, nodes: int, cpus: int):
    """A started cluster for a test fixture; afterwards it is stopped, MPICH's orphan segments
    of its aborted jobs are removed, and nothing of it may be left running."""
    if os.geteuid() != 0:
        pytest.skip("the throwaway Slurm cluster runs its daemons as root")
    lack = missing()
    if lack:
        pytest.skip(f"Slurm/munge not installed ({', '.join(lack)}): apt-get install slurm-wlm munge")
    c = SlurmCluster(root, nodes, cpus)
    try:
        c.start()
    except Exception as e:   # noqa: BLE001 - whatever failed, stop what did start
        multiple = c.multiple_slurmd()
        c.stop()
        if nodes > 1 and multiple is False:
            pytest.skip("this Slurm is built without multiple-slurmd support (scontrol show config: "
                        "MULTIPLE_SLURMD), so it cannot run two nodes on one host")
        pytest.fail(f"could not start the test Slurm cluster: {e}")
    try:
        yield c
    finally:
        c.stop()
        cleanup_mpich()
        left = {pid: " ".join(_cmdline(pid)) for pid in c.processes()}
        assert not left, f"processes of the test Slurm cluster left running: {left}"
