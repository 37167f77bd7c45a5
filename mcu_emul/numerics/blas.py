"""The host's BLAS thread count (OpenBLAS, numpy's bundled one or a system one), read and set
through its own API: numpy has loaded it by the time mcu_emul decides, so environment
variables would come too late. Host speed only; no value depends on it."""
from __future__ import annotations

import os

CHOICE_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


def chosen() -> bool:
    """Did the user choose a thread count (environment)?"""
    return any(os.environ.get(k) for k in CHOICE_VARS)


def blas_threads(n: int | None = None) -> int | None:
    """Set (given n) and return the thread count of the OpenBLAS this process has loaded
    (numpy's bundled one or a system one); None where there is none to ask."""
    import ctypes
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({ln.split()[-1] for ln in f if "openblas" in ln.rsplit("/", 1)[-1].lower()})
    except OSError:
        return None
    for path in libs:
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "")):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                if n is not None:
                    put(ctypes.c_int(n))
                return int(get())
    return None
