"""Full-size checks (marked `full`): TinyLlama-42M and MobileBERT, accuracy, memory, real MPI."""
import json

import pytest

from conftest import run_cli

pytestmark = pytest.mark.full
TL_WEIGHT_BYTES = 25_296_896 + 16_384_000      # block weights + tied embedding, int8


def _run(tmp_path, weights, model, *extra, n=None, name="r"):
    js = tmp_path / f"{name}.json"
    wargs = ["--weights", weights] if weights else []
    p = run_cli(["run", "--model", model, *wargs, "--json", js, "--quiet", *extra], n=n, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(js.read_text())


def test_tinyllama_accuracy_32_steps(full_weights, tmp_path):
    r = _run(tmp_path, full_weights["tinyllama-42m"], "tinyllama-42m", "--gen-tokens", "32",
             "--prompt-ids", "1,400,7000", "--check-float")
    assert r["accuracy"]["steps"] >= 32
    assert r["accuracy"]["logits_cosine_vs_float"] >= 0.99, r["accuracy"]


def test_mobilebert_accuracy_128_tokens(full_weights, tmp_path):
    r = _run(tmp_path, full_weights["mobilebert"], "mobilebert", "--seq-len", "128", "--check-float")
    assert r["accuracy"]["tokens"] == 128 and r["accuracy"]["hidden_cosine_vs_float"] >= 0.99, r["accuracy"]


def test_tinyllama_memory(full_weights, tmp_path):
    w = full_weights["tinyllama-42m"]
    r8 = _run(tmp_path, w, "tinyllama-42m", "--chips", "8", "--placement", "stationary", "--gen-tokens", "8")
    assert r8["placement"] == "stationary" and r8["offchip_bytes"] == 0
    assert sum(c["weight_bytes"] for c in r8["per_chip"]) == TL_WEIGHT_BYTES
    assert all(c["onchip_used_bytes"] <= c["onchip_capacity_bytes"] for c in r8["per_chip"])
    p = run_cli(["run", "--model", "tinyllama-42m", "--weights", w, "--chips", "4", "--placement", "stationary"])
    assert p.returncode != 0 and "smallest chip count that fits is 8" in p.stderr and "weights 10,420,224" in p.stderr
    r1 = _run(tmp_path, w, "tinyllama-42m", "--placement", "stream", "--gen-tokens", "4", name="one")
    assert r1["placement"] == "stream" and r1["offchip_bytes"] > 0
    assert r1["output_sha256"] != "" and r1["per_chip"][0]["onchip_used_bytes"] <= 6 * 2**20


@pytest.mark.mpiexec
def test_tinyllama_bit_exact_mpi_uneven(full_weights, tmp_path):
    """Uneven splits (3 and 5 ranks); 2, 4 and 8 ranks: test_dry_run_counters_equal_mpi_run."""
    w, m = full_weights["tinyllama-42m"], "tinyllama-42m"
    ref = _run(tmp_path, w, m, "--gen-tokens", "6", name="ref")
    for n in (3, 5):
        r = _run(tmp_path, w, m, "--gen-tokens", "6", n=n, name=f"n{n}")
        assert (r["output_sha256"], r["token_ids"]) == (ref["output_sha256"], ref["token_ids"]), n


@pytest.mark.mpiexec
def test_mobilebert_bit_exact_mpi_uneven(full_weights, tmp_path):
    """128 tokens on 3 ranks; 2 and 4 ranks: test_dry_run_counters_equal_mpi_run."""
    w, m = full_weights["mobilebert"], "mobilebert"
    ref = _run(tmp_path, w, m, name="ref")
    for n in (3,):
        r = _run(tmp_path, w, m, n=n, name=f"n{n}")
        assert r["output_sha256"] == ref["output_sha256"], n


COUNTERS = ("cycles", "busy_cycles", "idle_cycles", "cycles_by_category", "energy_mj", "energy_mj_by_category",
            "offchip_bytes", "onchip_dma_bytes", "link_bytes", "macs", "messages_sent", "weight_bytes_by_place",
            "sections")


@pytest.mark.mpiexec
@pytest.mark.parametrize("model,counts,extra", [("tinyllama-42m", (1, 2, 4, 8), ["--gen-tokens", "4"]),
                                                ("mobilebert", (1, 2, 4), ["--seq-len", "64"])])
def test_dry_run_counters_equal_mpi_run(full_weights, tmp_path, model, counts, extra):
    """Every counter of a real run under mpiexec equals the dry run's, and its output is bit
    for bit the one chip's."""
    one = None
    for n in counts:
        real = _run(tmp_path, full_weights[model], model, *extra, n=n if n > 1 else None, name=f"real{n}")
        one = one or real
        assert (real["output_sha256"], real["token_ids"]) == (one["output_sha256"], one["token_ids"]), (model, n)
        dry = _run(tmp_path, "", model, "--dry-run", "--chips", str(n), *extra, name=f"dry{n}") if n > 1 else \
            _run(tmp_path, "", model, "--dry-run", *extra, name=f"dry{n}")
        for a, b in zip(real["per_chip"], dry["per_chip"]):
            assert {k: a[k] for k in COUNTERS} == {k: b[k] for k in COUNTERS}, (model, n, a["rank"])
        assert (real["latency_ms"], real["energy_mj"]) == (dry["latency_ms"], dry["energy_mj"])
        assert real["blocks"] == dry["blocks"]
