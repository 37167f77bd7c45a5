"""Real mpiexec runs: bit-exact at every world size, all-reduce vs MPI_Allreduce, failures end the job."""
import json
import subprocess
import sys
import time

import pytest

from conftest import ROOT, cleanup_mpich, env, mpiexec_path, run_cli

pytestmark = pytest.mark.mpiexec


def report(tmp_path, weights, model, n, *extra):
    js = tmp_path / f"{model}-{n}.json"
    p = run_cli(["run", "--model", model, "--weights", weights, "--json", js, "--quiet", *extra], n=n)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(js.read_text())


def test_allreduce_equals_mpi_allreduce_n1_to_17():
    p = subprocess.run([mpiexec_path(), "-n", "17", sys.executable, str(ROOT / "tests/mpi_allreduce_check.py")],
                       capture_output=True, text=True, timeout=300, env=env())
    assert p.returncode == 0, p.stderr[-3000:]
    assert "allreduce OK for N = 1..17" in p.stdout


@pytest.mark.parametrize("model,counts,extra", [
    ("tinyllama-tiny", (1, 2, 3, 5, 8), ["--prompt-ids", "4,8,15", "--gen-tokens", "6"]),
    ("tinyllama-tiny-gqa", (3, 4), ["--gen-tokens", "6"]),
    ("mobilebert-tiny", (1, 2, 3, 4), ["--seq-len", "24"]),
])
def test_bit_exact_under_mpiexec(tiny_weights, tmp_path, model, counts, extra):
    ref = run_cli(["run", "--model", model, "--weights", tiny_weights[model], "--json", tmp_path / "ref.json",
                   "--quiet", *extra])
    assert ref.returncode == 0, ref.stderr
    want = json.loads((tmp_path / "ref.json").read_text())
    for n in counts:
        r = report(tmp_path, tiny_weights[model], model, n, *extra)
        assert r["chips"] == n and [c["rank"] for c in r["per_chip"]] == list(range(n))
        assert (r["output_sha256"], r["token_ids"]) == (want["output_sha256"], want["token_ids"]), n


def test_sixteen_ranks_many_heads(tiny_weights, tmp_path):
    m = "tinyllama-tiny64"
    one = report(tmp_path, tiny_weights[m], m, 1, "--gen-tokens", "3", "--allreduce", "ring")
    r = report(tmp_path, tiny_weights[m], m, 16, "--gen-tokens", "3")
    assert r["output_sha256"] == one["output_sha256"] and r["token_ids"] == one["token_ids"]


@pytest.mark.parametrize("phase", ["load", "attention", "ffn", "report"])
def test_failure_on_one_rank_ends_the_job(tiny_weights, phase):
    t0 = time.monotonic()
    p = run_cli(["run", "--model", "tinyllama-tiny", "--weights", tiny_weights["tinyllama-tiny"], "--gen-tokens", "4",
                 "--fail-rank", "5", "--fail-at", phase, "--quiet"], n=8, timeout=60)
    took = time.monotonic() - t0
    cleanup_mpich()
    assert p.returncode != 0
    assert took < 30, took
    assert f"injected failure at phase '{phase}' on rank 5" in p.stderr


def test_user_error_under_mpi_ends_job(tiny_weights):
    p = run_cli(["run", "--model", "tinyllama-tiny", "--weights", tiny_weights["tinyllama-tiny"],
                 "--prompt-ids", "9999"], n=4, timeout=60)
    cleanup_mpich()
    assert p.returncode != 0 and "prompt id 9999 is outside the vocabulary" in p.stderr


def test_one_blas_thread_per_rank_unless_chosen(tmp_path):
    """Ranks of one job share the cores: each gets one BLAS thread, unless the user set a count."""
    code = ("import os, numpy; from mcu_emul.numerics.blas import blas_threads; "
            "from mcu_emul.__main__ import rank_blas_threads; blas_threads(2); rank_blas_threads(); "
            f"open(os.path.join({str(tmp_path)!r}, 'rank' + os.environ['PMI_RANK']), 'w').write(str(blas_threads()))")
    for chosen, want in ((None, 1), ("2", 2)):
        e = env()
        e.pop("OMP_NUM_THREADS", None)
        e.pop("OPENBLAS_NUM_THREADS", None)
        if chosen:
            e["OPENBLAS_NUM_THREADS"] = chosen
        p = subprocess.run([mpiexec_path(), "-n", "2", sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120, env=e)
        assert p.returncode == 0, p.stderr[-2000:]
        # each rank writes its own file: two ranks' lines on one pipe may interleave on a busy machine
        assert [(tmp_path / f"rank{r}").read_text() for r in range(2)] == [str(want)] * 2, chosen
