"""A one-line progress bar with an ETA on stderr when it is a terminal; silent with --quiet and
in batch jobs (stderr not a terminal): sweeps, the paper table."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, quiet: bool):
        self.tty = sys.stderr.isatty()
        self.quiet = quiet or not self.tty
        self.t0 = time.monotonic()

    def __call__(self, done: int, total: int, what: str):
        if self.quiet:
            return
        bar = "#" * (20 * done // total)
        spent = time.monotonic() - self.t0
        eta = f"ETA {spent / done * (total - done):.0f} s" if done < total else f"done in {spent:.0f} s"
        msg = f"[{bar:<20}] {done}/{total} {eta} {what}"
        print("\r" + msg + " " * 10, end="", file=sys.stderr, flush=True)
        if done == total:
            print(file=sys.stderr)
