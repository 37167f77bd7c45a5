"""safetensors files read with numpy alone, every header field checked; floats widened to float32
exactly (F16, BF16: numpy has no bfloat16, so its 16 bits become the top half of a float32).

Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
data_offsets: [begin, end]}, "__metadata__": {...}}, then the data (offsets from its start).
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from ..errors import UserError

FLOATS = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "F64": np.dtype("<f8")}
MAX_HEADER = 100 * 2**20


def read_floats(path) -> dict[str, np.ndarray]:
    """name -> float32 array, for every tensor of the file."""
    path = Path(path)
    where = f"{path}"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise UserError(f"{where}: not a safetensors file (only {size} B)")
            (n,) = struct.unpack("<Q", head)
            if not 2 <= n <= min(MAX_HEADER, size - 8):
                raise UserError(f"{where}: not a safetensors file (header length {n} for a {size} B file)")
            try:
                header = json.loads(f.read(n))
            except (ValueError, UnicodeDecodeError) as e:
                raise UserError(f"{where}: not a safetensors file (header is not JSON: {e})") from None
            if not isinstance(header, dict):
                raise UserError(f"{where}: not a safetensors file (header is not a JSON object)")
            data_len = size - 8 - n
            out = {}
            for name, e in header.items():
                if name == "__metadata__":
                    continue
                out[name] = _tensor(f, 8 + n, data_len, name, e, where)
            return out
    except OSError as e:
        raise UserError(f"cannot read {where}: {e.strerror or e}") from None


def _tensor(f, base: int, data_len: int, name: str, e, where: str) -> np.ndarray:
    at = f"{where}: tensor {name!r}"
    if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= set(e):
        raise UserError(f"{at}: header entry needs dtype, shape and data_offsets, got {e!r}")
    dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
    if dt not in FLOATS:
        raise UserError(f"{at}: dtype {dt!r} is not supported (supported: {', '.join(FLOATS)}; a quantized "
                        "checkpoint must be de-quantized first)")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                            for d in shape)):
        raise UserError(f"{at}: bad shape {shape!r}")
    if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)
            and 0 <= offs[0] <= offs[1] <= data_len):
        raise UserError(f"{at}: data_offsets {offs!r} outside the file's {data_len} data bytes (truncated?)")
    item = FLOATS[dt].itemsize
    if offs[1] - offs[0] != math.prod(shape) * item:
        raise UserError(f"{at}: {offs[1] - offs[0]} data bytes for shape {shape} of {dt}")
    f.seek(base + offs[0])
    a = np.frombuffer(f.read(offs[1] - offs[0]), FLOATS[dt]).reshape(shape)
    if dt == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)
