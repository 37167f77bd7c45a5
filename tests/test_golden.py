"""Golden references: outputs, weights and every counter of fixed runs, stored in
tests/data/golden.json, so that a change made for speed (scheduler, cost caching, weight
generation) cannot move a single cycle, byte or output bit unseen.

The references were written by the code before those changes:
    python tests/test_golden.py --write      (only when a change is meant to move them)
"""
import hashlib
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from mcu_emul.chip import RunSpec, run_chip
from mcu_emul.comm.virtual import run_virtual
from mcu_emul.config import load_chip, load_topology
from mcu_emul.files.weights import make_weights

GOLDEN = Path(__file__).resolve().parent / "data" / "golden.json"
CHIP_KEYS = ("cycles", "busy_cycles", "idle_cycles", "cycles_by_category", "energy_mj", "energy_mj_by_category",
             "offchip_bytes", "onchip_dma_bytes", "link_bytes", "macs", "messages_sent", "allreduce_calls",
             "weight_bytes_by_place", "onchip_used_bytes", "sections")
# name -> (model, chips, RunSpec keywords); real runs read the seed-0 generated weights
REAL = {"llama-1": ("tinyllama-tiny", 1, dict(prompt_ids=[3, 17, 99], gen_tokens=6)),
        "llama-3": ("tinyllama-tiny", 3, dict(prompt_ids=[3, 17, 99], gen_tokens=6)),
        "llama-8-ring": ("tinyllama-tiny", 8, dict(prompt_ids=[5], gen_tokens=5, allreduce="ring")),
        "llama-5-flat-token": ("tinyllama-tiny", 5, dict(prompt_ids=[1, 2], gen_tokens=4, allreduce="flat",
                                                        prefill="token")),
        "llama-2-int8": ("tinyllama-tiny", 2, dict(gen_tokens=4, payload="int8")),
        "gqa-4": ("tinyllama-tiny-gqa", 4, dict(gen_tokens=4)),
        "llama64-16": ("tinyllama-tiny64", 16, dict(gen_tokens=3)),
        "bert-1": ("mobilebert-tiny", 1, dict(seq_len=24)),
        "bert-4": ("mobilebert-tiny", 4, dict(seq_len=24))}
DRY = {"dry-42m-8": ("tinyllama-42m", 8, dict(gen_tokens=8)),
       "dry-42m-1": ("tinyllama-42m", 1, dict(gen_tokens=4)),
       "dry-bert-4": ("mobilebert", 4, dict(seq_len=32)),
       "dry-scaled-64": ("tinyllama-scaled", 64, dict(gen_tokens=2))}
WEIGHTS = ("tinyllama-tiny", "tinyllama-tiny-gqa", "mobilebert-tiny")


def run(model, n, weights="", **kw):
    spec = RunSpec(model=model, weights=weights, chip=load_chip(), topology=load_topology(),
                   dry_run=not weights, trace=True, **kw)
    return run_virtual(n, lambda t: run_chip(spec, t))[0]


def summary(res) -> dict:
    """Everything a run reports that must not move: output bits, tokens, per-chip counters,
    and a digest of the emulated timeline (every traced event with its cycle)."""
    trace = hashlib.sha256(json.dumps(res["traces"]).encode()).hexdigest()
    return {"output_sha256": res["output_sha256"], "token_ids": [int(t) for t in res["token_ids"]],
            "trace_sha256": trace, "chips": [{k: c[k] for k in CHIP_KEYS} for c in res["chips"]]}


def weights_digest(path) -> str:
    """sha256 over every dataset (name, dtype, shape, bytes) and attribute of a weights file."""
    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            h.update(name.encode())
            for k in sorted(obj.attrs):
                h.update(f"{k}={obj.attrs[k]!r}".encode())
            if isinstance(obj, h5py.Dataset):
                a = np.ascontiguousarray(obj[()])
                h.update(f"{a.dtype.str}{a.shape}".encode() + a.tobytes())
        visit("/", f)
        f.visititems(visit)
    return h.hexdigest()


def compute(wdir) -> dict:
    files = {m: str(make_weights(m, 0, Path(wdir) / f"{m}.h5")) for m in {m for m, _, _ in REAL.values()}}
    out = {"weights": {m: weights_digest(files[m]) for m in WEIGHTS}}
    for name, (m, n, kw) in REAL.items():
        out[name] = summary(run(m, n, files[m], **kw))
    for name, (m, n, kw) in DRY.items():
        out[name] = summary(run(m, n, **kw))
    return json.loads(json.dumps(out))          # as stored (tuples become lists)


@pytest.fixture(scope="module")
def now(tmp_path_factory):
    return compute(tmp_path_factory.mktemp("golden"))


GOLD = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}


@pytest.mark.parametrize("name", ["weights", *REAL, *DRY])
def test_matches_golden(now, name):
    assert name in GOLD, f"{GOLDEN} has no entry {name!r}"
    assert now[name] == GOLD[name]


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_golden.py --write")
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        GOLDEN.write_text(json.dumps(compute(d), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")


def test_calibration_does_not_depend_on_blas_threads():
    """Rank 0 makes default weights with BLAS on every core (chip.ensure_weights), a plain
    process with its default: the calibrated ranges must be the same bits."""
    from mcu_emul.config import load_model
    from mcu_emul.files.weights import calibrate, init_weights
    from mcu_emul.numerics.blas import blas_threads
    cfg = load_model("tinyllama-42m")
    w, ids = init_weights(cfg, 0), [np.arange(1, 2000, 250)]
    before = blas_threads()
    try:
        got = [(blas_threads(n), calibrate(cfg, w, 0, ids))[1] for n in (1, 2, 4)]
    finally:
        blas_threads(before)
    assert got[0] == got[1] == got[2]


def test_default_weights_keep_floats_of_small_models_only():
    from mcu_emul.config import load_model
    from mcu_emul.files.weights import default_keeps_float
    assert default_keeps_float(load_model("tinyllama-42m")) and default_keeps_float(load_model("mobilebert"))
    assert not default_keeps_float(load_model("tinyllama-scaled"))
