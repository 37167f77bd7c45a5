"""--partition pipeline: whole layers per chip, activations handed chip to chip.

Outputs bit-identical to one chip at 2, 3 (uneven) and the most chips (one layer each), in-process
and under mpiexec; dry-run counters equal real-run counters; every weight on exactly one chip;
link bytes in closed form (a hop's rows x width x 2 bytes, times the hops); the per-token figures
are the last chip's pass (the sum of the stages); bad inputs refused in one line.
"""
import json
from pathlib import Path

import pytest

import mcu_emul
from conftest import ROOT, results, run_cli
from mcu_emul.config import load_model
from mcu_emul.dryrun import replayable
from mcu_emul.files.weights import make_weights
from mcu_emul.hardware.placement import chip_specs
from mcu_emul.models.stages import stages

TINY = ("tinyllama-tiny", "tinyllama-tiny-gqa", "mobilebert-tiny")
DEEP = 5                     # layers of the deep variants: 3 chips split them 2/2/1
RUN = {"tinyllama-tiny": dict(prompt_ids=[3, 17, 99], gen_tokens=5), "tinyllama-tiny-gqa": dict(gen_tokens=4),
       "mobilebert-tiny": dict(seq_len=24)}
HOST = ("host_wall_time_s", "host_wall_time_per_step_s", "host_peak_rss_bytes", "provenance")
COUNTERS = ("cycles", "busy_cycles", "idle_cycles", "cycles_by_category", "energy_mj", "energy_mj_by_category",
            "offchip_bytes", "onchip_dma_bytes", "link_bytes", "macs", "messages_sent", "allreduce_calls",
            "weight_bytes", "weight_bytes_by_place", "onchip_used_bytes", "kv_cache_bytes", "sections", "layers")


def deep_toml(name: str, folder: Path) -> Path:
    """The tiny model with DEEP layers (the shipped ones have 2: too few for 3 pipeline chips)."""
    text = (ROOT / "data" / "models" / f"{name}.toml").read_text()
    text = text.replace(f'name = "{name}"', f'name = "{name}-deep"').replace("n_layers = 2", f"n_layers = {DEEP}")
    path = folder / f"{name}-deep.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def models(tiny_weights, tmp_path_factory):
    """name -> (model path or name, weights file, run options): the tiny models and their deep variants."""
    d = tmp_path_factory.mktemp("deep")
    out = {m: (m, tiny_weights[m], RUN[m]) for m in TINY}
    for m in TINY:
        toml = deep_toml(m, d)
        out[m + "-deep"] = (str(toml), str(make_weights(load_model(str(toml)), 0, d / f"{m}-deep.h5")), RUN[m])
    return out


def run(models, name, chips, **kw):
    model, weights, opts = models[name]
    return mcu_emul.run(weights=weights, chips=chips, **(opts | kw))


@pytest.mark.parametrize("name,counts", [(m, (2,)) for m in TINY] + [(m + "-deep", (2, 3, DEEP)) for m in TINY])
def test_bit_identical_to_one_chip(models, name, counts):
    one = run(models, name, 1)
    for n in counts:
        r = run(models, name, n, partition="pipeline")
        assert r.partition == "pipeline" and r.chips == n
        assert (r.output_sha256, r.token_ids) == (one.output_sha256, one.token_ids), n
        assert [c["layers"] for c in r.per_chip] == [list(s.layers) for s in stages(load_model(models[name][0]), n)]


def test_token_prefill_bit_identical(models):
    one = run(models, "tinyllama-tiny-deep", 1, prefill="token")
    r = run(models, "tinyllama-tiny-deep", 3, partition="pipeline", prefill="token")
    assert (r.output_sha256, r.token_ids) == (one.output_sha256, one.token_ids)
    assert r.output_sha256 != run(models, "tinyllama-tiny-deep", 3, partition="pipeline").output_sha256  # more rows


def test_one_stage_is_one_chip(models):
    """A pipeline of one chip is the one-chip run, counter for counter (it has no all-reduce to count)."""
    for name in ("tinyllama-tiny-gqa", "mobilebert-tiny"):
        one, pipe = run(models, name, 1).to_dict(), run(models, name, 1, partition="pipeline").to_dict()
        for c in one["per_chip"]:
            c["allreduce_calls"] = 0
        for k in HOST + ("partition",):
            one.pop(k), pipe.pop(k)
        assert one == pipe


@pytest.mark.parametrize("name,n", [("tinyllama-tiny-deep", 3), ("tinyllama-tiny-gqa-deep", DEEP),
                                    ("mobilebert-tiny-deep", 3)])
def test_dry_run_counters_equal_real_run(models, name, n):
    model, _, opts = models[name]
    real = run(models, name, n, partition="pipeline")
    dry = mcu_emul.run(model, n, partition="pipeline", dry_run=True, **opts)
    for a, b in zip(real.per_chip, dry.per_chip, strict=True):
        assert {k: a[k] for k in COUNTERS} == {k: b[k] for k in COUNTERS}, a["rank"]
    assert (real.latency_ms, real.energy_mj, real.blocks, real.prefill) == \
        (dry.latency_ms, dry.energy_mj, dry.blocks, dry.prefill)


def test_a_pipeline_dry_run_moves_its_messages():
    spec = mcu_emul.api.resolve(mcu_emul.api.RunOptions(model="tinyllama-tiny", chips=2, dry_run=True,
                                                        partition="pipeline"), None)[0]
    assert not replayable(spec)


@pytest.mark.parametrize("model,n", [("tinyllama-42m", 8), ("tinyllama-42m", 3), ("mobilebert", 4),
                                     ("mobilebert", 24), ("tinyllama-tiny", 2)])
def test_every_weight_on_exactly_one_chip(model, n):
    cfg = load_model(model)
    whole = {s.key: s.nbytes for s in chip_specs(cfg, 1, 16)[0] if s.category == "weights"}
    keys = [s.key for chip in chip_specs(cfg, n, 16, partition="pipeline") for s in chip if s.category == "weights"]
    assert sorted(keys) == sorted(whole)                          # each once, none split
    r = mcu_emul.run(model, n, partition="pipeline", dry_run=True,
                     **({"gen_tokens": 2} if "llama" in model else {"seq_len": 16}))
    assert sum(c["weight_bytes"] for c in r.per_chip) == r.weight_bytes_total == sum(whole.values())
    owner = n - 1 if "llama" in model else 0                      # the embedding's chip
    assert all((c["vocab"] == [0, cfg.vocab_size]) == (c["rank"] == owner) for c in r.per_chip)


@pytest.mark.parametrize("n", [1, 2, 3, DEEP])
def test_link_bytes_closed_form_decode(models, n):
    """A token visits every chip: n hops of dim x 2 bytes per token (none at one chip); the
    prompt's parallel pass the same with its rows."""
    cfg = load_model(models["tinyllama-tiny-deep"][0])
    r = run(models, "tinyllama-tiny-deep", n, partition="pipeline", dry_run=True)
    P = len(RUN["tinyllama-tiny"]["prompt_ids"])
    hops = n if n > 1 else 0
    decode = sum(c["sections"]["decode"]["link_bytes"] for c in r.per_chip) / r.decode_tokens
    prefill = sum(c["sections"]["prefill"]["link_bytes"] for c in r.per_chip)
    assert decode == hops * cfg.dim * 2
    assert prefill == hops * P * cfg.dim * 2
    assert r.link_bytes == hops * (P + r.decode_tokens) * cfg.dim * 2
    assert all(c["messages_sent"] == (1 + r.decode_tokens if n > 1 else 0) for c in r.per_chip)


def test_link_bytes_closed_form_encode(models):
    cfg = load_model(models["mobilebert-tiny-deep"][0])
    S = RUN["mobilebert-tiny"]["seq_len"]
    for n in (2, 3, DEEP):
        r = run(models, "mobilebert-tiny-deep", n, partition="pipeline", dry_run=True)
        assert [c["link_bytes"] for c in r.per_chip] == [S * cfg.hidden * 2] * (n - 1) + [0]


def test_latency_per_token_is_the_last_chips_pass(models):
    """The last chip's clock bounds both phases (the others wait for the first decode token
    outside them), and the blocks are the sum of the stages' blocks."""
    r = run(models, "tinyllama-tiny-deep", 3, partition="pipeline", prompt_ids=list(range(1, 12)), gen_tokens=4,
            dry_run=True)
    f = r.freq_hz
    last = r.per_chip[-1]["sections"]
    for phase, steps, fig in (("decode", r.decode_tokens, r.latency_ms), ("prefill", 1, r.prefill["latency_ms"])):
        cycles = [c["sections"][phase]["cycles"] for c in r.per_chip]
        assert max(cycles) == cycles[-1]
        assert fig == pytest.approx(last[phase]["cycles"] / f * 1e3 / steps, rel=1e-12)
    busy = sum(c["sections"]["decode"]["cycles"] - c["sections"]["decode"]["cycles_by_category"]["idle"]
               for c in r.per_chip)
    assert busy == last["decode"]["cycles"]                  # one chip works at a time: the stages in turn
    blocks = sum(c["sections"]["decode.blocks"]["cycles"] for c in r.per_chip)
    assert r.blocks["latency_ms"] == pytest.approx(blocks / f * 1e3 / r.decode_tokens, rel=1e-12)
    assert r.blocks["latency_ms"] < r.latency_ms


def test_tensor_runs_unchanged_in_the_report(models):
    r = run(models, "tinyllama-tiny", 2)
    assert r.partition == "tensor" and all(c["layers"] == [0, 2] for c in r.per_chip)


@pytest.mark.parametrize("args,expect", [
    (["--partition", "foo"], "argument --partition: invalid choice: 'foo'"),
    (["--partition", "pipeline", "--chips", "3"], "3 chips > 2 layers of model 'tinyllama-tiny'"),
    (["--partition", "pipeline", "--chips", "2", "--payload", "int8"], "--payload int8 requantizes"),
    (["--partition", "pipeline", "--chips", "2", "--allreduce", "ring"], "--allreduce ring: --partition pipeline"),
])
def test_bad_inputs(args, expect):
    p = run_cli(["run", "--model", "tinyllama-tiny", "--dry-run", *args])
    assert p.returncode == 2 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mcu_emul: error:") and expect in lines[0], p.stderr


def test_stationary_refusal_names_the_pipeline(tmp_path):
    p = run_cli(["run", "--model", "tinyllama-42m", "--dry-run", "--partition", "pipeline", "--chips", "8",
                 "--placement", "stationary"])
    assert p.returncode == 2 and "chip 7 needs" in p.stderr and "no chip count up to 8 fits" in p.stderr, p.stderr


@pytest.mark.mpiexec
def test_under_mpiexec_equals_in_process(models, tmp_path):
    model, weights, _ = models["tinyllama-tiny-deep"]
    args = ["run", "--weights", weights, "--partition", "pipeline", "--prompt-ids", "3,17,99", "--gen-tokens", "5",
            "--quiet", "--json"]
    p = run_cli([*args, tmp_path / "mpi.json"], n=3)
    assert p.returncode == 0, p.stderr[-2000:]
    q = run_cli([*args, tmp_path / "in.json", "--chips", "3"])
    assert q.returncode == 0, q.stderr[-2000:]
    mpi, inproc = (json.loads((tmp_path / f).read_text()) for f in ("mpi.json", "in.json"))
    assert results(mpi) == results(inproc)
    assert mpi["output_sha256"] == run(models, "tinyllama-tiny-deep", 1).output_sha256


@pytest.mark.full
@pytest.mark.parametrize("model,n,opts", [("tinyllama-42m", 8, dict(gen_tokens=4)), ("tinyllama-42m", 3, dict(gen_tokens=3)),
                                          ("mobilebert", 4, dict(seq_len=32))])
def test_full_size_bit_identical(full_weights, model, n, opts):
    one = mcu_emul.run(weights=full_weights[model], chips=1, **opts)
    r = mcu_emul.run(weights=full_weights[model], chips=n, partition="pipeline", **opts)
    assert (r.output_sha256, r.token_ids) == (one.output_sha256, one.token_ids)
    dry = mcu_emul.run(model, n, partition="pipeline", dry_run=True, **opts)
    assert [{k: c[k] for k in COUNTERS} for c in r.per_chip] == [{k: c[k] for k in COUNTERS} for c in dry.per_chip]
