"""A one-line progress bar with an ETA on stderr (plain lines when stderr is not a terminal,
nothing with quiet): sweeps, the paper table."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()

    def __call__(self, done: int, total: int, what: str):
        if self.quiet:
            return
        bar = "#" * (20 * done // total)
        spent = time.monotonic() - self.t0
        eta = f"ETA {spent / done * (total - done):.0f} s" if done < total else f"done in {spent:.0f} s"
        msg = f"[{bar:<20}] {done}/{total} {eta} {what}"
        print(("\r" + msg + " " * 10) if self.tty else msg, end="" if self.tty else "\n", file=sys.stderr,
              flush=True)
        if self.tty and done == total:
            print(file=sys.stderr)
