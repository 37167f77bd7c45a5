"""Cost model: pure cost functions, emulated clocks, dry run == real run, sanity that can fail."""
import dataclasses

import pytest

from mcu_emul.hardware import costs
from mcu_emul.chip import RunSpec, run_chip
from mcu_emul.config import load_chip, load_topology, with_overrides
from mcu_emul.comm.virtual import run_virtual

CHIP, TOPO = load_chip(), load_topology()
COUNTERS = ("cycles", "busy_cycles", "idle_cycles", "cycles_by_category", "energy_mj", "energy_mj_by_category",
            "offchip_bytes", "onchip_dma_bytes", "link_bytes", "macs", "messages_sent", "weight_bytes_by_place",
            "sections")


def run(model, n, weights="", dry=True, chip=CHIP, topo=TOPO, **kw):
    spec = RunSpec(model=model, weights=weights, chip=chip, topology=topo, dry_run=dry, **kw)
    return run_virtual(n, lambda t: run_chip(spec, t))[0]


def counters(res):
    return [{k: c[k] for k in COUNTERS} for c in res["chips"]]


@pytest.mark.parametrize("model,counts,kw", [("tinyllama-tiny", (1, 2, 3, 8), dict(gen_tokens=5, prompt_ids=[2, 3])),
                                             ("tinyllama-tiny-gqa", (1, 4), dict(gen_tokens=3)),
                                             ("mobilebert-tiny", (1, 2, 4), dict(seq_len=20))])
def test_dry_run_equals_real_run(tiny_weights, model, counts, kw):
    for n in counts:
        for alg in ("hierarchical", "ring"):
            real = run(model, n, tiny_weights[model], dry=False, allreduce=alg, **kw)
            dry = run(model, n, dry=True, allreduce=alg, **kw)
            assert counters(real) == counters(dry), (n, alg)


def test_matmul_cost_mechanism():
    c = CHIP
    wm = costs.matmul(c, 1, 512, 512, costs.WEIGHT_MEM)
    l2 = costs.matmul(c, 1, 512, 512, costs.L2)
    l3 = costs.matmul(c, 1, 512, 512, costs.L3)
    assert wm.macs == l2.macs == 512 * 512
    assert l2.onchip > 0                      # GEMV from L2 is DMA-bound at 8 B/cycle < 12.8 MAC/cycle
    assert l3.offchip_bytes == 512 * 512 and l3.cycles > l2.cycles
    assert wm.offchip == l2.offchip == 0
    slow = dataclasses.replace(c, offchip=dataclasses.replace(c.offchip, l3_overlaps_compute=False))
    assert costs.matmul(slow, 1, 512, 512, costs.L3).cycles > l3.cycles
    assert costs.elementwise(c, 800).compute == 100 + c.compute.kernel_overhead_cycles


def test_clock_waits_for_slower_sender():
    from mcu_emul.hardware.counters import ChipClock
    a, b = ChipClock(CHIP, TOPO, 0), ChipClock(CHIP, TOPO, 1)
    a.charge(costs.Cost(compute=10_000))
    arrival, transfer = a.send(2048, 1)
    ser, lat = costs.link_cycles(CHIP.compute.freq_hz, TOPO, 2048, 0)
    assert (arrival, transfer) == (10_000 + ser + lat, ser + lat)
    assert a.now == 10_000                         # DMA-driven send: the sender goes on
    arrival2, _ = a.send(2048, 1)                  # the same link is busy: queued behind
    assert arrival2 == arrival + ser
    b.receive(arrival, transfer)
    assert b.now == arrival and b.cycles["link"] == transfer and b.cycles["idle"] == arrival - transfer
    b.receive(5, 3)                                # data already there: no wait
    assert b.now == arrival


def test_energy_is_sum_of_categories():
    r = run("tinyllama-tiny", 3, gen_tokens=4)
    for c in r["chips"]:
        assert c["energy_mj"] == pytest.approx(sum(c["energy_mj_by_category"].values()), rel=1e-12)
        assert c["cycles"] == sum(c["cycles_by_category"].values())
        assert c["busy_cycles"] + c["idle_cycles"] == c["cycles"]


def test_faster_links_never_slow_a_run():
    for model, n, kw in (("tinyllama-tiny", 8, dict(gen_tokens=3)), ("mobilebert-tiny", 4, dict(seq_len=16)),
                         ("tinyllama-tiny", 5, dict(gen_tokens=3, allreduce="ring"))):
        base = None
        for bw in (1e7, 2e7, 4e7, 1e8, 1e9):
            topo = dataclasses.replace(TOPO, link_bytes_per_s=bw)
            lat = max(c["cycles"] for c in run(model, n, topo=topo, **kw)["chips"])
            assert base is None or lat <= base, (model, n, bw)
            base = lat


def test_more_chips_never_more_weight_bytes():
    prev_w = None
    for n in (1, 2, 4, 8):
        r = run("tinyllama-42m", n, gen_tokens=2)
        w = sum(c["weight_bytes"] for c in r["chips"])
        assert prev_w is None or w <= prev_w
        prev_w = w


def test_waiting_longer_costs_more_idle_energy():
    slow = dataclasses.replace(TOPO, link_latency_s=TOPO.link_latency_s * 10)
    fast = run("tinyllama-tiny", 4, gen_tokens=3)
    late = run("tinyllama-tiny", 4, gen_tokens=3, topo=slow)
    for a, b in zip(fast["chips"], late["chips"]):
        assert b["idle_cycles"] > a["idle_cycles"]
        assert b["energy_mj_by_category"]["idle"] > a["energy_mj_by_category"]["idle"]
    # and within one run, the chip that waited more has more idle energy
    chips = sorted(late["chips"], key=lambda c: c["idle_cycles"])
    assert chips[0]["energy_mj_by_category"]["idle"] < chips[-1]["energy_mj_by_category"]["idle"]


def test_superlinear_speedup_comes_from_offchip_streaming():
    r1, r8 = run("tinyllama-42m", 1, gen_tokens=2), run("tinyllama-42m", 8, gen_tokens=2)
    assert r1["placement"] == "stream" and r8["placement"] == "stationary"
    assert r1["chips"][0]["offchip_bytes"] > 30e6 and all(c["offchip_bytes"] == 0 for c in r8["chips"])
    lat1 = r1["chips"][0]["cycles"]
    lat8 = max(c["cycles"] for c in r8["chips"])
    # off-chip stalls plus on-chip DMA of streamed weights are most of the one-chip time
    c1 = r1["chips"][0]["cycles_by_category"]
    assert c1["offchip"] + c1["onchip"] > 0.3 * lat1
    assert lat1 / lat8 > 8


def test_costs_independent_of_host_load():
    a = counters(run("tinyllama-tiny", 4, gen_tokens=3))
    b = counters(run("tinyllama-tiny", 4, gen_tokens=3))
    assert a == b


def test_overrides_change_costs():
    c2, _ = with_overrides(CHIP, TOPO, ["compute.freq_hz=7.2e8"])
    a = run("tinyllama-tiny", 2, gen_tokens=2)
    b = run("tinyllama-tiny", 2, gen_tokens=2, chip=c2)
    assert b["freq_hz"] == 7.2e8 != a["freq_hz"]
    # link latencies are given in seconds: at a faster clock they take more cycles
    assert b["chips"][1]["cycles_by_category"]["link"] > a["chips"][1]["cycles_by_category"]["link"]


def test_split_weight_runs_as_two_kernels():
    parts = ((costs.WEIGHT_MEM, 300), (costs.L2, 212))
    split = costs.matmul(CHIP, 1, 512, 512, parts)
    assert split == costs.matmul(CHIP, 1, 300, 512, costs.WEIGHT_MEM) + costs.matmul(CHIP, 1, 212, 512, costs.L2)
    assert split.engine == costs.matmul(CHIP, 1, 300, 512, costs.WEIGHT_MEM).compute > 0
    assert costs.matmul(CHIP, 1, 512, 512, costs.L2).engine == 0


def test_cost_addition_is_field_by_field():
    a, b = costs.Cost(1, 2, 3, 4, 5, 6, 7), costs.Cost(10, 20, 30, 40, 50, 60, 70)
    assert a + b == costs.Cost(11, 22, 33, 44, 55, 66, 77) and (a + b).cycles == 66


def test_cost_table_is_the_pure_functions_memoized():
    parts = ((costs.WEIGHT_MEM, 300), (costs.L2, 212))
    tab = costs.Table(CHIP)
    for args in ((1, 512, 512, parts), (4, 512, 512, costs.L3), (1, 64, 64, costs.WEIGHT_MEM)):
        assert tab.matmul(*args) == costs.matmul(CHIP, *args)
        assert tab.matmul(*args) is tab.matmul(*args)              # computed once
    assert tab.attention(8, 3, 17, 32, 40) == costs.attention(CHIP, 8, 3, 17, 32, 40)
    assert tab.attention(8, 1, 17, 32) == costs.attention(CHIP, 8, 1, 17, 32) != tab.attention(8, 1, 18, 32)
    assert tab.elementwise(800) == costs.elementwise(CHIP, 800)
    assert tab.row_fetch(256, parts) == costs.row_fetch(CHIP, 256, parts) != tab.row_fetch(256, costs.L3)


def test_arena_packs_weight_memory_then_l2():
    from mcu_emul.hardware.memory import Arena
    a = Arena(l2_bytes=1000, weight_mem_bytes=400, virtual=True)
    _, kv = a.alloc((96,), "uint8", "kv_cache")                  # top of L2
    _, w1 = a.alloc((30, 8), "int8", "weights")                  # 240 B: weight memory
    _, w2 = a.alloc((40, 8), "int8", "weights")                  # 320 B: 20 rows in wm, 20 in L2
    assert kv == ((costs.L2, 96),) and w1 == ((costs.WEIGHT_MEM, 30),)
    assert w2 == ((costs.WEIGHT_MEM, 20), (costs.L2, 20))
    assert a.fits(744) and not a.fits(745) and a.used == 656
    assert a.fits(8, "params")                                  # into L2, never into the weight memory
    a.alloc((744,), "int8", "weights")
    assert not a.fits(1, "params") and a.used == a.capacity


def test_eight_chips_hold_every_block_weight_in_weight_memory():
    r = run("tinyllama-42m", 8, gen_tokens=1)
    for c in r["chips"]:
        place = c["weight_bytes_by_place"]
        assert place["l3"] == 0 and place["weight_mem"] == 4 * 2**20
        # the blocks (3.16 MB) sit in the weight memory: in the blocks no kernel stalls on DMA
        assert c["sections"]["blocks"]["cycles_by_category"]["onchip"] == 0


def test_compute_energy_at_the_power_of_the_unit():
    hot = dataclasses.replace(CHIP, power=dataclasses.replace(CHIP.power, engine_active_w=2 * CHIP.power.engine_active_w))
    a, b = run("tinyllama-42m", 8, gen_tokens=1), run("tinyllama-42m", 8, gen_tokens=1, chip=hot)
    ea, eb = a["chips"][0]["energy_mj_by_category"]["compute"], b["chips"][0]["energy_mj_by_category"]["compute"]
    assert ea < eb < 2 * ea                     # engine kernels cost more, cluster kernels the same
    s1 = run("tinyllama-42m", 1, gen_tokens=1)
    s1_hot = run("tinyllama-42m", 1, gen_tokens=1, chip=hot)
    assert s1_hot["chips"][0]["energy_mj"] > s1["chips"][0]["energy_mj"]


def test_blocks_scope_is_the_blocks_only():
    from mcu_emul.files.report import figures
    steps = 3
    r = run("tinyllama-tiny", 2, gen_tokens=steps)
    cfg = r["cfg"]
    for c in r["chips"]:
        b = c["sections"]["blocks"]
        assert b["cycles"] == sum(b["cycles_by_category"].values()) < c["cycles"]
        assert b["energy_mj"] == pytest.approx(sum(b["energy_mj_by_category"].values()), rel=1e-12)
        assert b["energy_mj"] < c["energy_mj"]
        # every MAC except the classifier's (this chip's vocab rows) is in the blocks
        v0, v1 = c["vocab"]
        assert c["macs"] - b["macs"] == steps * (v1 - v0) * cfg.dim
    fb, fm = figures(r, "blocks"), figures(r, "model")
    assert 0 < fb["latency_ms"] < fm["latency_ms"] and 0 < fb["energy_mj"] < fm["energy_mj"]


def test_offchip_memory_energy_is_outside_the_chip_scope():
    """The L3 device's energy per byte is reported apart: the chip's energy does not move."""
    import mcu_emul
    a = mcu_emul.run("tinyllama-42m", chips=1, gen_tokens=2, dry_run=True, preset="none")
    b = mcu_emul.run("tinyllama-42m", chips=1, gen_tokens=2, dry_run=True, preset="none",
                     overrides={"energy.l3_device_pj_per_byte": 200.0})
    assert a.offchip_bytes > 0 and a.energy_mj == b.energy_mj
    assert b.offchip_memory_energy_mj == pytest.approx(2 * a.offchip_memory_energy_mj, rel=1e-12)
    per_token = a.offchip_bytes / 2 * 100.0 * 1e-9     # two passes (prefill, one decode step), 100 pJ/B
    assert a.offchip_memory_energy_mj == pytest.approx(per_token, rel=1e-12)


def test_dma_weights_unit_moves_compute_not_data():
    """dma_weights_unit = engine: weights DMA-ed into L1 run on the engine (its rate, its power);
    the bytes moved and a weight-memory kernel are unchanged."""
    eng = dataclasses.replace(CHIP, compute=dataclasses.replace(CHIP.compute, dma_weights_unit="engine"))
    for place in (costs.L2, costs.L3):
        a, b = costs.matmul(CHIP, 1, 512, 512, place), costs.matmul(eng, 1, 512, 512, place)
        assert a.engine == 0 and b.engine == b.compute > 0
        assert b.compute < a.compute                  # the engine's GEMV rate is above the cluster's
        assert (a.onchip_bytes, a.offchip_bytes, a.macs) == (b.onchip_bytes, b.offchip_bytes, b.macs)
        assert b.cycles == a.cycles                   # a GEMV from L2 / L3 stays bound by the DMA / L3
    assert costs.matmul(eng, 1, 512, 512, costs.WEIGHT_MEM) == costs.matmul(CHIP, 1, 512, 512, costs.WEIGHT_MEM)
