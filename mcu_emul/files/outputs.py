"""Output files: whole or absent. Paths are checked before any work (no collision with an input
or another output, no symlink, FIFO or directory in the way; `-` is standard output), written
through an exclusive, unpredictable temp file in the target's folder, fsynced and renamed;
temp files are removed on every failure path, SIGTERM included."""
from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import tempfile
from pathlib import Path

from ..errors import UserError

STDOUT = "-"
_live_temps: set[str] = set()
_UMASK = os.umask(0)
os.umask(_UMASK)


def remove_temps():
    """Remove the temp files still being written (a signal or an abort ends the process)."""
    for p in list(_live_temps):
        with contextlib.suppress(OSError):
            os.unlink(p)
        _live_temps.discard(p)


def install_signal_cleanup():
    """SIGTERM / SIGHUP: remove live temp files, then exit 128 + signal (the shell's convention)."""
    def handler(signum, frame):
        remove_temps()
        raise SystemExit(128 + signum)
    for s in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):      # not the main thread: leave it
            signal.signal(s, handler)


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_paths(outputs: dict, inputs: dict | None = None, stdout_ok: tuple = ()):
    """Refuse, before any work, outputs that would damage an input or each other, or that cannot
    be a regular file. outputs/inputs: {option name: path or None}; stdout_ok: the outputs that
    may be `-` (standard output), at most one of them."""
    outs = {k: v for k, v in outputs.items() if v is not None}
    ins = {k: v for k, v in (inputs or {}).items() if v}
    to_stdout = [k for k, v in outs.items() if str(v) == STDOUT]
    for k in to_stdout:
        if k not in stdout_ok:
            raise UserError(f"{k} -: standard output is not supported for this output; give a file")
    if len(to_stdout) > 1:
        raise UserError(f"{' and '.join(to_stdout)} both write to standard output: give files")
    files = {k: Path(v) for k, v in outs.items() if str(v) != STDOUT}
    for k, v in outs.items():
        if str(v).strip() == "":
            raise UserError(f"{k}: empty path")
        if k in files and str(v).endswith(("/", os.sep)):
            raise UserError(f"{k} {v}: names a folder; give a file name")
    try:
        for k, p in files.items():
            _check_target(k, p, k in stdout_ok)
        names = list(files)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if _same(files[a], files[b]):
                    raise UserError(f"{a} and {b} name the same file {files[a]}: give each output its own file")
            for k, v in ins.items():
                if _same(files[a], Path(v)):
                    raise UserError(f"{a} {files[a]} is also the input {k}: writing it would destroy the input")
    except OSError as e:
        raise UserError(f"cannot write {e.filename or ''}: {e.strerror or e}") from None


def _check_target(k: str, p: Path, stdout_ok: bool):
    hint = " (or - for standard output)" if stdout_ok else ""
    if p.is_symlink():
        raise UserError(f"{k} {p}: is a symbolic link; give the file it points to{hint} (outputs are replaced "
                        "whole, so a link would be replaced by a file)")
    if p.exists():
        mode = p.stat().st_mode
        if stat.S_ISDIR(mode):
            raise UserError(f"{k} {p}: is a directory")
        if not stat.S_ISREG(mode):
            raise UserError(f"{k} {p}: is not a regular file (a FIFO, socket or device); give a file{hint}")
    if len(p.name.encode()) > 200:
        raise UserError(f"{k}: file name of {len(p.name.encode())} bytes is too long (at most 200)")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a fresh temp path in path's folder (created exclusively, unpredictable name); on
    success it is renamed onto path, on any failure removed. For writers that open by name (HDF5)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    _live_temps.add(tmp)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _live_temps.discard(tmp)


def write_bytes(path, data: bytes):
    """Write whole or not at all (`-`: standard output)."""
    if str(path) == STDOUT:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_json(path, doc, indent: int | None = 2):
    """Strict JSON (no NaN or Infinity: a non-finite figure is a bug, never an output), whole."""
    import json
    try:
        text = json.dumps(doc, indent=indent, allow_nan=False)
    except ValueError as e:
        raise RuntimeError(f"refusing to write non-finite numbers to {path}: {e}") from None
    write_bytes(path, (text + "\n").encode())


def check_folder(opt: str, path) -> Path:
    """An output folder option: non-empty, and not an existing non-folder."""
    if path is None or str(path).strip() == "":
        raise UserError(f"{opt}: empty path; give a folder")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{opt} {p}: exists and is not a folder")
    return p
