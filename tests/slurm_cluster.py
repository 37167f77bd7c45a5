"""A throwaway single-node Slurm cluster (munged, slurmctld, slurmd as plain background
processes under one temp dir), for testing the batch script against a real Slurm."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

NEEDED = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")


def missing() -> list[str]:
    return [c for c in NEEDED if shutil.which(c) is None and not Path("/usr/sbin", c).exists()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class SlurmCluster:
    def __init__(self, root: Path, cpus: int = 8):
        self.root = Path(root)
        self.cpus = cpus
        self.procs: list[subprocess.Popen] = []
        self.env = dict(os.environ)

    def start(self, timeout_s: float = 30.0):
        r = self.root
        for d in ("state", "spool", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)
        os.chmod(r / "munge", 0o755)
        key, sock = r / "munge" / "munge.key", r / "munge" / "munge.socket"
        subprocess.run([_exe("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        os.chmod(key, 0o600)
        self._spawn([_exe("munged"), "-F", "--force", f"--key-file={key}", f"--socket={sock}",
                     f"--pid-file={r / 'munge' / 'munged.pid'}", f"--seed-file={r / 'munge' / 'seed'}",
                     f"--log-file={r / 'munge' / 'munged.log'}"])
        conf = r / "slurm.conf"
        conf.write_text("\n".join([
            "ClusterName=mcuemultest",
            "SlurmctldHost=localhost(127.0.0.1)",
            "AuthType=auth/munge", f"AuthInfo=socket={sock}", "CredType=cred/munge",
            "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'slurmctld.log'}", f"SlurmdLogFile={r / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            "EnforcePartLimits=ALL", "SchedulerParameters=batch_sched_delay=0", "MinJobAge=600",
            "MpiDefault=none", "ReturnToService=2", "SlurmdParameters=config_overrides",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN",
            "PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP", ""]))
        self.env["SLURM_CONF"] = str(conf)
        time.sleep(0.3)
        self._spawn([_exe("slurmctld"), "-D", "-i", "-f", str(conf)])
        self._spawn([_exe("slurmd"), "-D", "-N", "localhost", "-f", str(conf)])
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env)
            if p.returncode == 0 and p.stdout.strip().startswith("idle"):
                return self
            time.sleep(0.3)
        raise RuntimeError(f"slurm did not become idle in {timeout_s} s: {self.logs()}")

    def _spawn(self, cmd):
        log = open(self.root / (Path(cmd[0]).name + ".out"), "w")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env))

    def logs(self) -> str:
        out = []
        for f in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out")):
            out.append(f"--- {f.name}\n{f.read_text()[-2000:]}")
        return "\n".join(out)

    def sbatch(self, script, *args, cwd=None) -> str:
        p = subprocess.run(["sbatch", "--parsable", *args, str(script)], capture_output=True, text=True,
                           env=self.env, cwd=cwd)
        if p.returncode != 0:
            raise RuntimeError(f"sbatch failed: {p.stderr}")
        return p.stdout.strip().split(";")[0]

    def wait(self, job: str, timeout_s: float = 180.0) -> dict:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            q = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, env=self.env)
            if q.returncode == 0 and not q.stdout.strip():
                break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"job {job} still running after {timeout_s} s")
        p = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=self.env)
        fields = dict(kv.split("=", 1) for kv in p.stdout.split() if "=" in kv)
        return fields

    def stop(self):
        subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True, env=self.env)
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
