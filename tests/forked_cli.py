"""`python -m mcu_emul ARGS` in a process of its own, forked from a server that imported
mcu_emul once: each run is a fresh child (its own cwd, environment, stdin from /dev/null,
stdout/stderr captured, normal interpreter exit), without paying ~0.5 s of imports per run.
The bad-input suite runs its ~220 cases this way (plain subprocesses elsewhere)."""
from __future__ import annotations

import json
import os
import queue
import select
import subprocess
import sys
import tempfile
from pathlib import Path

SERVER = r"""
import json, os, sys, traceback
import numpy, h5py
import mcu_emul.__main__ as entry, mcu_emul.commands.cli, mcu_emul.api, mcu_emul.chip
for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            f = os.open(path, flags, 0o644)
            os.dup2(f, fd)
            os.close(f)
        sys.argv = [entry.__file__, *req["args"]]
        entry.main()                              # ends the child: sys.exit or os._exit
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    print(json.dumps(os.waitstatus_to_exitcode(status)), flush=True)
"""


class ForkServer:
    def __init__(self):
        self.p = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, env={k: v for k, v in os.environ.items() if k != "MCU_EMUL_MPI"})

    def run(self, args, cwd, env: dict, timeout: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="forked_cli_") as d:
            out, err = Path(d) / "out", Path(d) / "err"
            self.p.stdin.write(json.dumps(dict(args=[str(a) for a in args], cwd=str(cwd), env=env,
                                               out=str(out), err=str(err))) + "\n")
            self.p.stdin.flush()
            if not select.select([self.p.stdout], [], [], timeout)[0]:
                self.close()
                raise subprocess.TimeoutExpired(args, timeout)
            code = json.loads(self.p.stdout.readline())
            return subprocess.CompletedProcess(args, code, out.read_text(errors="replace"),
                                               err.read_text(errors="replace"))

    def close(self):
        self.p.kill()
        self.p.wait()


class Pool:
    """n fork servers, for n runs at a time from a thread pool."""

    def __init__(self, n: int):
        self.free = queue.Queue()
        self.all = [ForkServer() for _ in range(n)]
        for s in self.all:
            self.free.put(s)

    def run(self, *a, **k):
        s = self.free.get()
        try:
            return s.run(*a, **k)
        finally:
            self.free.put(s)

    def close(self):
        for s in self.all:
            s.close()
