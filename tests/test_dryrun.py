"""Dry runs by replay (mcu_emul/dryrun.py) equal dry runs of run_chip on in-process chips that
move every message: every per-chip counter, section, output and token, for every all-reduce
algorithm, uneven splits, both payloads and prefills, streamed weights, MobileBERT inputs
owned by different chips, and mixed clusters (chips at other clocks, memories, engine rates,
a slow link; balanced and by-speed splits)."""
import dataclasses

import numpy as np
import pytest

from mcu_emul.chip import RunSpec, run_chip
from mcu_emul.comm.collectives import messages_sent
from mcu_emul.comm.schedule import SEND, compile_allreduce
from mcu_emul.comm.virtual import run_virtual
from mcu_emul.cluster import Cluster
from mcu_emul.config import load_chip, load_topology, with_values
from mcu_emul.dryrun import replayable, run_dry, run_in_process

HOST = {"host_step_s", "host_peak_rss_bytes"}          # host-side measurements, not emulated figures
SPREAD = list(range(0, 30522, 30522 // 24))[:24]       # MobileBERT ids over every chip's vocabulary rows


def mixed(n: int, chips: dict, links: dict | None = None) -> Cluster:
    """A cluster of n Siracusa chips, chip r with the --set-style values chips[r], and chip r's
    link values links[r] ({"link.link_bytes_per_s": ...})."""
    base, topo = load_chip(), load_topology()
    hws = [with_values(base, topo, chips.get(r, {}))[0] for r in range(n)]
    tops = None if not links else tuple(with_values(base, topo, links.get(r, {}))[1] for r in range(n))
    return Cluster("test", "", tuple(hws), tops)


HALF = {"compute.freq_hz": 1.8e8}

CASES = {
    "llama-1": ("tinyllama-tiny", 1, {}, dict(gen_tokens=3)),
    "llama-3-uneven": ("tinyllama-tiny", 3, {}, dict(prompt_ids=[3, 17, 99], gen_tokens=4)),
    "llama-5-flat-token": ("tinyllama-tiny", 5, {}, dict(prompt_ids=[1, 2], gen_tokens=3, allreduce="flat",
                                                         prefill="token")),
    "llama-8-ring": ("tinyllama-tiny", 8, {}, dict(gen_tokens=3, allreduce="ring")),
    "llama-6-rd": ("tinyllama-tiny", 6, dict(group_sizes=(2,), top_algorithm="recursive_doubling"),
                   dict(gen_tokens=3)),
    "llama-7-tree": ("tinyllama-tiny", 7, dict(group_sizes=(2,), top_algorithm="tree"), dict(gen_tokens=3)),
    "llama-8-single-port": ("tinyllama-tiny", 8, dict(link_ports="single"), dict(gen_tokens=3)),
    # links busy past their chip's next all-reduce: the replay cannot reuse an earlier outcome
    "llama-8-slow-single-port": ("tinyllama-tiny", 8, dict(link_ports="single", link_bytes_per_s=2e5,
                                                           group_sizes=(8,)), dict(gen_tokens=3)),
    "llama-8-three-level": ("tinyllama-tiny", 8, "three-level", dict(gen_tokens=3)),
    "llama-2-int8": ("tinyllama-tiny", 2, {}, dict(gen_tokens=3, payload="int8")),
    "gqa-4": ("tinyllama-tiny-gqa", 4, {}, dict(gen_tokens=3)),
    "llama64-16": ("tinyllama-tiny64", 16, {}, dict(gen_tokens=2)),
    "42m-2-stream": ("tinyllama-42m", 2, {}, dict(gen_tokens=2, placement="stream")),
    "42m-1-auto": ("tinyllama-42m", 1, {}, dict(gen_tokens=2)),
    "bert-tiny-3-spread": ("mobilebert-tiny", 3, {}, dict(seq_len=24, prompt_ids=list(range(0, 256, 11))[:24])),
    "bert-4-spread": ("mobilebert", 4, {}, dict(seq_len=24, prompt_ids=SPREAD)),
    "bert-3-seeded": ("mobilebert", 3, {}, dict(seq_len=16)),
    # mixed clusters
    "mixed-4-balanced": ("tinyllama-tiny", 4, {}, dict(gen_tokens=3, cluster=mixed(4, {2: HALF, 3: HALF}))),
    "mixed-4-by-speed": ("tinyllama-tiny", 4, {}, dict(gen_tokens=3, cluster=mixed(4, {2: HALF, 3: HALF}),
                                                       split="by-speed")),
    "straggler-8-ring-token": ("tinyllama-tiny", 8, {}, dict(gen_tokens=3, allreduce="ring", prefill="token",
                                                             prompt_ids=[1, 2],
                                                             cluster=mixed(8, {3: {"compute.freq_hz": 9e7}}))),
    "slow-link-5-tree": ("tinyllama-tiny", 5, dict(group_sizes=(2,), top_algorithm="tree"),
                         dict(gen_tokens=3, cluster=mixed(5, {}, {2: {"link.link_bytes_per_s": 2e6,
                                                                       "link.link_latency_s": 2e-5}}))),
    "gqa-4-engine-less-by-speed": ("tinyllama-tiny-gqa", 4, {}, dict(
        gen_tokens=3, split="by-speed", cluster=mixed(4, {0: {"compute.engine_gemv_macs_per_cycle": 72.0},
                                                          1: {"memory.weight_mem_bytes": 0,
                                                              "compute.cluster_gemv_macs_per_cycle": 24.0}}))),
    "bert-tiny-3-by-speed-spread": ("mobilebert-tiny", 3, {}, dict(
        seq_len=24, prompt_ids=list(range(0, 256, 11))[:24], split="by-speed",
        cluster=mixed(3, {0: {"compute.freq_hz": 7.2e8, "power.idle_w": 0.01}, 2: HALF}))),
    "42m-8-mixed-by-speed-stream": ("tinyllama-42m", 8, {}, dict(gen_tokens=2, split="by-speed",
                                                                 cluster=mixed(8, {r: HALF for r in range(4, 8)}))),
}


def spec_of(model, topo, kw, **more) -> RunSpec:
    t = load_topology(topo) if isinstance(topo, str) else dataclasses.replace(load_topology(), **topo)
    return RunSpec(model=model, weights="", chip=load_chip(), topology=t, dry_run=True, hops=True, **kw, **more)


def same(a: dict, b: dict, where=""):
    """Equal results, but for host-side measurements; names the first difference."""
    assert a.keys() == b.keys(), where
    for k in a:
        if k in HOST:
            continue
        if k == "chips":
            for ca, cb in zip(a[k], b[k], strict=True):
                same(ca, cb, f"{where} chip {ca['rank']}")
        elif isinstance(a[k], np.ndarray):
            assert np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype, f"{where} {k}"
        else:
            assert a[k] == b[k], f"{where} {k}: {a[k]!r} != {b[k]!r}"


@pytest.mark.parametrize("name", CASES)
def test_replay_equals_moving_messages(name):
    model, n, topo, kw = CASES[name]
    spec = spec_of(model, topo, kw)
    slow = run_virtual(n, lambda t: run_chip(spec, t))[0]
    same(slow, run_dry(spec, n), name)


def test_mobilebert_chips_own_different_inputs():
    """The case the replay corrects for: chips of one kind fetching different numbers of rows."""
    model, n, topo, kw = CASES["bert-4-spread"]
    res = run_dry(spec_of(model, topo, kw), n)
    onchip = [c["onchip_dma_bytes"] for c in res["chips"]]
    assert len(set(onchip)) > 1


def test_the_replay_is_taken_only_for_plain_dry_runs():
    spec = spec_of("tinyllama-tiny", {}, dict(gen_tokens=2))
    assert replayable(spec)
    assert not replayable(dataclasses.replace(spec, trace=True))
    assert not replayable(dataclasses.replace(spec, fail_rank=1, fail_at="ffn"))
    assert not replayable(dataclasses.replace(spec, dry_run=False))
    traced = run_in_process(dataclasses.replace(spec, trace=True), 2)
    assert traced["traces"] is not None
    same({**traced, "traces": None}, run_in_process(spec, 2), "traced vs replay")


@pytest.mark.parametrize("algorithm,groups,top", [("flat", (4,), "ring"), ("ring", (4,), "ring"),
                                                  ("hierarchical", (4,), "ring"), ("hierarchical", (2, 4), "tree"),
                                                  ("hierarchical", (3,), "recursive_doubling")])
@pytest.mark.parametrize("size", [1, 2, 5, 12])
def test_compiled_schedule_sends_the_closed_form(algorithm, groups, top, size):
    sch = compile_allreduce(algorithm, groups, top, size, (7, 5), "<i4")
    sent = [0] * size
    for kind, r, *_ in sch.ops:
        sent[r] += kind == SEND
    assert sent == [messages_sent(algorithm, r, size, groups, top) for r in range(size)]
    assert sch.n_messages == sum(sent)


def test_an_allreduce_is_reused_only_when_no_link_is_still_busy():
    """The clock set remembers an all-reduce's outcome by the chips' clock offsets; a link still
    busy from an earlier message must not take a remembered outcome."""
    from mcu_emul.comm.clockset import ClockSet
    topo = dataclasses.replace(load_topology(), link_ports="single")
    sch = compile_allreduce("flat", (4,), "ring", 3, (64,), "<i4")

    def after(busy: int):
        cs = ClockSet([load_chip()] * 3, topo)
        cs.allreduce(sch)                                  # remembered at offsets (0, 0, 0)
        for s in cs.state:                                 # the same offsets again
            s[0] = 10_000_000
        cs.link_free[1][0] = cs.state[1][0] + busy         # chip 1's port still sending
        cs.allreduce(sch)
        return [list(s) for s in cs.state]

    fresh = ClockSet([load_chip()] * 3, topo)
    fresh.allreduce(sch)
    for s in fresh.state:
        s[0] = 10_000_000
    fresh.link_free[1][0] = fresh.state[1][0] + 5_000
    fresh._execute(sch, fresh._bound[sch])
    fresh._totals(fresh._bound[sch])
    assert after(5_000) == [list(s) for s in fresh.state]
    assert after(5_000) != after(0)


def test_a_sweep_over_topologies_records_each_program_once():
    """Programs do not depend on the topology or algorithm: the second run reuses the first's,
    and still equals moving every message."""
    from mcu_emul import dryrun
    dryrun._PROGRAMS.clear()
    run_dry(spec_of("tinyllama-tiny", {}, dict(gen_tokens=3)), 6)
    recorded = len(dryrun._PROGRAMS)
    for topo, algo in (({}, "ring"), (dict(group_sizes=(2,), top_algorithm="tree"), "hierarchical"),
                       ("three-level", "flat")):
        spec = spec_of("tinyllama-tiny", topo, dict(gen_tokens=3, allreduce=algo))
        same(run_virtual(6, lambda t: run_chip(spec, t))[0], run_dry(spec, 6), f"{topo} {algo}")
    assert len(dryrun._PROGRAMS) == recorded
