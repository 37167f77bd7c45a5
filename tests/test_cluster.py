"""Mixed clusters (`--cluster`, `--split`): outputs bit-identical to one chip whatever the
chips and the split (in-process and under real mpiexec), by-speed shares in proportion to
throughput, a straggler in the report and the trace, the replay on a cluster from a file, and
a uniform cluster giving exactly the homogeneous run."""
import hashlib
import json
import random
from fractions import Fraction

import pytest

import mcu_emul
from conftest import results, run_cli
from mcu_emul.config import load_chip, load_model
from mcu_emul.hardware import costs
from mcu_emul.models.partition import SIMD_ALIGN, apportion, plan, split, split_by

FAST, SLOW = 3.6e8, 1.8e8


def cluster_file(tmp_path, name: str, clocks: list, links: dict | None = None) -> str:
    """A cluster of len(clocks) Siracusa chips, chip r at clocks[r] Hz (one entry per chip),
    chip r's link values links[r]."""
    text = f'name = "{name}"\nchips = {len(clocks)}\n'
    for r, f in enumerate(clocks):
        text += f"[[chip]]\nranks = {r}\ncompute.freq_hz = {f!r}\n"
        for k, v in (links or {}).get(r, {}).items():
            text += f"link.{k} = {v!r}\n"
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return str(p)


# --- outputs: bit-identical to one chip --------------------------------------------------------
@pytest.mark.parametrize("model,clocks,kw", [
    ("tinyllama-tiny", [FAST, FAST, SLOW, SLOW], dict(prompt_ids=[3, 17, 99], gen_tokens=5)),
    ("tinyllama-tiny", [FAST, SLOW, FAST, FAST, SLOW], dict(gen_tokens=4, prefill="token")),
    ("tinyllama-tiny-gqa", [SLOW, FAST, FAST, FAST], dict(gen_tokens=4)),
    ("mobilebert-tiny", [FAST, FAST, SLOW], dict(seq_len=24)),
])
def test_outputs_bit_identical_whatever_the_split(tiny_weights, tmp_path, model, clocks, kw):
    one = mcu_emul.run(model, 1, weights=tiny_weights[model], **kw)
    path = cluster_file(tmp_path, "mix", clocks)
    for split_name in ("balanced", "by-speed"):
        r = mcu_emul.run(model, len(clocks), weights=tiny_weights[model], cluster=path, split=split_name, **kw)
        assert (r.output_sha256, r.token_ids) == (one.output_sha256, one.token_ids), split_name
        assert [c["freq_hz"] for c in r.per_chip] == clocks
    heads = [c["heads"][1] - c["heads"][0] for c in r.per_chip]        # by-speed: the fast chips hold more
    assert min(h for h, f in zip(heads, clocks) if f == FAST) >= max(h for h, f in zip(heads, clocks) if f == SLOW)


@pytest.mark.mpiexec
def test_mixed_cluster_under_mpiexec_by_speed(tiny_weights, tmp_path):
    """Each rank takes its own chip from the cluster: the same report as in-process chips, the
    output of one chip."""
    w, path = tiny_weights["tinyllama-tiny"], cluster_file(tmp_path, "mix4", [FAST, FAST, SLOW, SLOW])
    args = ["run", "--model", "tinyllama-tiny", "--weights", w, "--gen-tokens", "5", "--cluster", path,
            "--split", "by-speed", "--quiet"]
    p = run_cli([*args, "--json", tmp_path / "mpi.json"], n=4)
    assert p.returncode == 0, p.stderr[-2000:]
    p = run_cli([*args, "--chips", "4", "--json", tmp_path / "local.json"])
    assert p.returncode == 0, p.stderr[-2000:]
    mpi, local = (json.loads((tmp_path / f).read_text()) for f in ("mpi.json", "local.json"))
    one = mcu_emul.run("tinyllama-tiny", 1, weights=w, gen_tokens=5)
    assert mpi["output_sha256"] == one.output_sha256 and mpi["token_ids"] == one.token_ids
    assert results(mpi) == results(local)
    assert [c["freq_hz"] for c in mpi["per_chip"]] == [FAST, FAST, SLOW, SLOW]
    assert [c["heads"] for c in mpi["per_chip"]] == [[0, 3], [3, 6], [6, 7], [7, 8]]
    assert mpi["provenance"]["cluster_file"]["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()


# --- by-speed shares ----------------------------------------------------------------------------
def test_by_speed_shares_in_proportion():
    """Speeds 2:2:1:1 (tinyllama-tiny: 8 KV heads, 176 FFN units, 512 vocabulary rows): each
    share is its quota n * s / sum(s) rounded by largest remainders, ties to the lower rank."""
    cfg = load_model("tinyllama-tiny")
    sl = plan(cfg, 4, (2.0, 2.0, 1.0, 1.0))
    size = lambda r: r[1] - r[0]                                         # noqa: E731
    assert [size(s.heads) for s in sl] == [3, 3, 1, 1]                   # quotas 2.67, 2.67, 1.33, 1.33
    assert [size(s.ffn) for s in sl] == [60, 60, 28, 28]                 # 44 units of 4: 14.67 ... 7.33
    assert [size(s.vocab) for s in sl] == [171, 171, 85, 85]             # 170.67 ... 85.33
    assert all(s.ffn[0] % SIMD_ALIGN == 0 for s in sl)
    assert sl[-1].ffn[1] == cfg.ffn_hidden and sl[-1].vocab[1] == cfg.vocab_size


def test_apportion_closed_form_properties():
    rng = random.Random(0)
    for _ in range(300):
        k = rng.randint(1, 9)
        w = [rng.choice([0.25, 0.5, 1.0, 1.5, 2.0, 3.3]) for _ in range(k)]
        n = rng.randint(k, 400)
        got = apportion(n, w)
        quota = [n * Fraction(x) / sum(map(Fraction, w)) for x in w]
        assert sum(got) == n
        assert all(abs(g - q) < 1 for g, q in zip(got, quota)), (n, w, got)
        assert all(a >= b for a, b, x, y in ((got[i], got[j], w[i], w[j]) for i in range(k) for j in range(k))
                   if x > y)
        floor1 = apportion(n, w, 1)
        assert sum(floor1) == n and min(floor1) >= 1
    for n in (8, 176, 1376, 512, 30):                                    # equal speeds: the balanced split
        for parts in range(1, 9):
            for align in (1, SIMD_ALIGN):
                if -(-n // align) >= parts:
                    assert split_by(n, [1.0] * parts, align, 1) == split(n, parts, align)


def test_throughput_rule():
    """Clock x the MAC rate of the unit holding the stationary weights: the engine (GEMV for
    decode, GEMM for encode), or the cluster on a chip without a weight memory."""
    chip = load_chip()
    c = chip.compute
    assert costs.throughput_macs_per_s(chip, False) == c.freq_hz * c.engine_gemv_macs_per_cycle
    assert costs.throughput_macs_per_s(chip, True) == c.freq_hz * c.engine_gemm_macs_per_cycle
    import dataclasses
    bare = dataclasses.replace(chip, memory=dataclasses.replace(chip.memory, weight_mem_bytes=0))
    assert costs.throughput_macs_per_s(bare, False) == c.freq_hz * c.cluster_gemv_macs_per_cycle


# --- stragglers -------------------------------------------------------------------------------
def test_straggler_idles_the_others_and_shows_in_the_trace(tmp_path):
    n = 8
    even = mcu_emul.run("tinyllama-tiny", n, dry_run=True, gen_tokens=4, cluster=cluster_file(tmp_path, "even", [FAST] * n))
    slow = [FAST] * n
    slow[3] = FAST / 4
    tr = tmp_path / "t.json"
    r = mcu_emul.run("tinyllama-tiny", n, dry_run=True, gen_tokens=4, cluster=cluster_file(tmp_path, "slow", slow),
                     trace=str(tr))
    assert r.latency_ms > 1.2 * even.latency_ms
    for a, b in zip(even.per_chip, r.per_chip):
        if a["rank"] != 3:
            assert b["idle_cycles"] > a["idle_cycles"] + 1000, a["rank"]
            assert b["busy_share"] < a["busy_share"]
    lb = r.load_balance
    assert lb["slowest_rank"] == 3 and lb["others_idle_share_mean"] > even.load_balance["others_idle_share_mean"]
    assert "load balance: chip 3 works longest" in r.summary()
    ev = json.loads(tr.read_text())["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
    assert names[3] == "chip 3 (siracusa, 90 MHz)" and names[0] == "chip 0 (siracusa, 360 MHz)"
    for c in r.per_chip:                         # each track's waits: its idle and link cycles
        waits = [e for e in ev if e["ph"] == "X" and e["pid"] == c["rank"] and e["name"].startswith("wait")]
        assert sum(e["args"]["cycles"] for e in waits) == c["idle_cycles"] + c["cycles_by_category"]["link"]
        assert any(e["name"] == "wait (idle)" for e in waits)


def test_slow_link_of_one_chip(tmp_path):
    n = 4
    base = mcu_emul.run("tinyllama-tiny", n, dry_run=True, gen_tokens=3, cluster=cluster_file(tmp_path, "a", [FAST] * n))
    r = mcu_emul.run("tinyllama-tiny", n, dry_run=True, gen_tokens=3,
                     cluster=cluster_file(tmp_path, "b", [FAST] * n, {2: {"link_bytes_per_s": 2e6}}))
    assert r.latency_ms > base.latency_ms
    # chip 2's messages (to and from its group leader, chip 0) run at its port's rate
    assert r.per_chip[2]["cycles_by_category"]["link"] > 10 * base.per_chip[2]["cycles_by_category"]["link"]
    assert r.per_chip[1]["cycles_by_category"]["link"] == base.per_chip[1]["cycles_by_category"]["link"]


# --- the replay, and homogeneous runs unchanged -----------------------------------------------------
def test_replay_equals_moving_messages_on_the_shipped_clusters():
    from mcu_emul.api import RunOptions, resolve
    from mcu_emul.chip import run_chip
    from mcu_emul.comm.virtual import run_virtual
    from mcu_emul.dryrun import run_dry
    from test_dryrun import same
    for name, split_name in (("straggler", "balanced"), ("mixed-clock", "by-speed")):
        spec, n, _ = resolve(RunOptions(model="tinyllama-tiny", cluster=name, split=split_name, dry_run=True,
                                        gen_tokens=3), None)
        assert n == 8 and spec.cluster.name == name
        same(run_virtual(n, lambda t: run_chip(spec, t))[0], run_dry(spec, n), name)


def test_uniform_cluster_is_the_homogeneous_run(tmp_path):
    """A cluster of the run's own chip (no overrides) gives every figure of the plain run."""
    p = tmp_path / "same.toml"
    p.write_text('chips = 4\n[[chip]]\nranks = "0-3"\n')
    a = mcu_emul.run("tinyllama-tiny", 4, dry_run=True, gen_tokens=3).to_dict()
    b = mcu_emul.run("tinyllama-tiny", dry_run=True, gen_tokens=3, cluster=str(p)).to_dict()   # chips: the cluster's
    assert b["cluster"] == "same" and b["provenance"]["cluster_file"]["path"] == str(p.resolve())
    c = mcu_emul.run("tinyllama-tiny", dry_run=True, gen_tokens=3, cluster=str(p), split="by-speed").to_dict()
    for x in (b, c):
        x["cluster"], x["split"] = None, "balanced"
    assert results(a) == results(b) == results(c)
