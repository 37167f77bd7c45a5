"""The paper's table (Bochem et al., DATE 2025): configurations, targets, ours vs published."""
from __future__ import annotations

from dataclasses import dataclass

from ..chip import RunSpec
from ..config import ChipSpec, Topology, load_model
from ..files.report import figures
from ..dryrun import run_in_process

# Run settings behind the figures (not published; ours): TinyLlama decode of prompt [1] and
# 32 greedy tokens, figures averaged per token over KV positions 0..31; the scaled model the
# same with 8 tokens; MobileBERT one inference of 128 tokens.
PAPER_RUN = {
    "tinyllama-42m": dict(prompt_ids=[1], gen_tokens=32),
    "tinyllama-scaled": dict(prompt_ids=[1], gen_tokens=8),
    "mobilebert": dict(seq_len=128),
}


# What the published figures cover: the Transformer blocks (their kernels, waits and the two
# all-reduces per block), not the embedding lookup and classifier (our assumption, see README
# "The paper table"). Whole-model figures are printed and written beside them.
PAPER_SCOPE = "blocks"
HEADLINE = ("latency_ms", "energy_mj", "edp_mj_ms")


@dataclass(frozen=True)
class Target:
    id: str
    what: str
    published: float
    unit: str


TARGETS = (
    Target("T1", "TinyLlama-42M latency per token, 8 chips", 0.54, "ms"),
    Target("T2", "TinyLlama-42M energy per token, 8 chips", 0.64, "mJ"),
    Target("T3", "TinyLlama-42M speed-up, 8 vs 1 chip", 26.1, "x"),
    Target("T4", "TinyLlama-42M energy-delay-product gain, 8 vs 1 chip", 27.2, "x"),
    Target("T5", "scaled TinyLlama speed-up, 64 vs 1 chip", 60.1, "x"),
    Target("T6", "MobileBERT latency per inference, 4 chips", 38.8, "ms"),
    Target("T7", "MobileBERT speed-up, 4 vs 1 chip", 4.7, "x"),
)

CURVES = {"tinyllama-42m": (1, 2, 4, 8), "mobilebert": (1, 2, 3, 4),
          "tinyllama-scaled": (1, 2, 4, 8, 16, 32, 64)}
# speed-up targets: (model, chips) against the same model on one chip
SPEEDUP_POINTS = {"T3": ("tinyllama-42m", 8), "T5": ("tinyllama-scaled", 64), "T7": ("mobilebert", 4)}
TARGET_RUNS = {m: (1, n) for m, n in SPEEDUP_POINTS.values()}     # every target uses these runs


def run_spec(model: str, chip: ChipSpec, topo: Topology, dry: bool, weights: str = "", **over) -> RunSpec:
    kw = dict(PAPER_RUN[model]) | over
    # the config loaded once here, not by every chip (64 TOML loads at 64 chips)
    return RunSpec(model=model, cfg=load_model(model), weights=weights, chip=chip, topology=topo, dry_run=dry, **kw)


def dry_figures(model: str, chips: int, chip: ChipSpec, topo: Topology, over: dict | None = None) -> dict:
    """Figures of one configuration from a dry run (in-process ranks, no numerics)."""
    spec = run_spec(model, chip, topo, True, **(over or {}))
    res = run_in_process(spec, chips)
    whole = figures(res, "model")
    return figures(res, PAPER_SCOPE) | {"chips": chips, "placement": res["placement"],
                                        "model": {k: whole[k] for k in HEADLINE}}


def dry_table(configs, chip: ChipSpec, topo: Topology, pool=None, over_by_model=None, progress=None) -> dict:
    """Figures of each (model, chips) configuration by dry runs; independent configurations
    spread over a process pool when one is given (each is deterministic by itself).
    progress(done, total, what) is called as each one completes."""
    import concurrent.futures
    over_by_model = over_by_model or {}
    tell = progress or (lambda *a: None)
    if pool is None:
        out = {}
        for i, c in enumerate(configs):
            out[c] = dry_figures(c[0], c[1], chip, topo, over_by_model.get(c[0]))
            tell(i + 1, len(configs), f"{c[0]} on {c[1]}")
        return out
    futs = {pool.submit(dry_figures, c[0], c[1], chip, topo, over_by_model.get(c[0])): c
            for c in sorted(configs, key=lambda c: -c[1])}            # biggest first
    done = {}
    for f in concurrent.futures.as_completed(futs):
        done[futs[f]] = f.result()
        tell(len(done), len(configs), f"{futs[f][0]} on {futs[f][1]}")
    return {c: done[c] for c in configs}


def dry_pool():
    import concurrent.futures
    import os
    return concurrent.futures.ProcessPoolExecutor(max_workers=min(4, os.cpu_count() or 1))


def ours(fig: dict) -> dict:
    """Our value of each target from figures keyed by (model, chips)."""
    out = {t: fig[(m, 1)]["latency_ms"] / fig[(m, n)]["latency_ms"] for t, (m, n) in SPEEDUP_POINTS.items()}
    tl1, tl8 = fig[SPEEDUP_POINTS["T3"][0], 1], fig[SPEEDUP_POINTS["T3"]]
    out |= {"T1": tl8["latency_ms"], "T2": tl8["energy_mj"], "T4": tl1["edp_mj_ms"] / tl8["edp_mj_ms"],
            "T6": fig[SPEEDUP_POINTS["T7"]]["latency_ms"]}
    return {t.id: out[t.id] for t in TARGETS}


def evaluate(chip: ChipSpec, topo: Topology, runs=TARGET_RUNS, pool=None, **over_by_model) -> tuple[dict, dict]:
    fig = dry_table([(m, n) for m, counts in runs.items() for n in counts], chip, topo, pool, over_by_model)
    return ours(fig), fig


def errors_pct(values: dict) -> dict:
    pub = {t.id: t.published for t in TARGETS}
    return {k: 100.0 * (v - pub[k]) / pub[k] for k, v in values.items()}


def real_figures(model: str, chips: int, preset: str, tmpdir) -> dict:
    """Figures of one configuration from a real run: `mpiexec -n chips python -m mcu_emul run`."""
    from pathlib import Path
    from .launcher import run_report
    kw = PAPER_RUN[model]
    args = ["--model", model, "--preset", preset]
    if "gen_tokens" in kw:
        args += ["--gen-tokens", str(kw["gen_tokens"]), "--prompt-ids", ",".join(map(str, kw["prompt_ids"]))]
    else:
        args += ["--seq-len", str(kw["seq_len"])]
    r = run_report(args, chips, Path(tmpdir) / f"{model}-{chips}.json")
    return dict(r[PAPER_SCOPE]) | {"chips": chips, "placement": r["placement"],
                                   "model": {k: r[k] for k in HEADLINE}}


def paper_cmd(dry: bool, preset: str, out: str | None) -> int:
    import functools
    import sys
    import tempfile
    import time
    from ..files.outputs import check_paths, write_json
    from ..presets import hardware
    check_paths({"--json": out}, stdout_ok=("--json",))
    say = functools.partial(print, file=sys.stderr if out == "-" else sys.stdout)   # JSON owns stdout
    from .progress import Progress
    bar = Progress(quiet=False)                             # configurations, on a terminal only
    t0 = time.perf_counter()
    chip, topo = hardware("siracusa", "siracusa-boards", preset, [])
    fig = {}
    configs = [(model, n) for model, counts in CURVES.items() for n in counts]
    if dry:
        with dry_pool() as pool:
            fig = dry_table(configs, chip, topo, pool, progress=bar)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for i, (model, n) in enumerate(configs):
                fig[(model, n)] = real_figures(model, n, preset, tmp)
                bar(i + 1, len(configs), f"{model} on {n}")
    vals = ours(fig)
    err = errors_pct(vals)
    pub = {t.id: t.published for t in TARGETS}
    curves = {model: [{"chips": n, "latency_ms": fig[(model, n)]["latency_ms"],
                       "energy_mj": fig[(model, n)]["energy_mj"],
                       "speedup": fig[(model, 1)]["latency_ms"] / fig[(model, n)]["latency_ms"],
                       "placement": fig[(model, n)]["placement"],
                       "whole_model": fig[(model, n)]["model"],
                       "latency_ms_by_category": fig[(model, n)]["latency_ms_by_category"],
                       "energy_mj_by_category": fig[(model, n)]["energy_mj_by_category"]} for n in counts]
              for model, counts in CURVES.items()}
    if out:
        doc = {"schema": "mcu_emul.paper/1", "mode": "dry-run" if dry else "mpi", "preset": preset,
               "scope": PAPER_SCOPE,
               "run_settings": PAPER_RUN,
               "published_points": {m: {str(n): pub[tid]} for tid, (m, n) in SPEEDUP_POINTS.items()},
               "targets": [{"id": t.id, "what": t.what, "unit": t.unit, "published": t.published,
                            "ours": vals[t.id], "error_pct": err[t.id]} for t in TARGETS],
               "curves": curves}
        write_json(out, doc)
    mode = "dry run (analytic counters)" if dry else "real MPI runs"
    say(f"mcu_emul paper: {mode}, preset {preset}, {time.perf_counter() - t0:.1f} s; "
          f"figures of the Transformer blocks (scope '{PAPER_SCOPE}')")
    say(f"  {'id':3s} {'figure':54s} {'ours':>10s} {'published':>10s} {'error':>8s}")
    for t in TARGETS:
        say(f"  {t.id:3s} {t.what + ' (' + t.unit + ')':54s} {vals[t.id]:10.4g} {t.published:10.4g} {err[t.id]:+7.1f}%")
    for model, pts in curves.items():
        say(f"  speed-up {model}: " + ", ".join(f"{c['chips']}: {c['speedup']:.2f}x ({c['placement'][:4]})"
                                                 for c in pts))
    say("  whole model (embedding and classifier included), per token / inference:")
    for model, pts in curves.items():
        say(f"    {model}: " + ", ".join(f"{c['chips']}: {c['whole_model']['latency_ms']:.4g} ms "
                                          f"{c['whole_model']['energy_mj']:.4g} mJ" for c in pts))
    if out:
        say(f"  wrote {'standard output' if out == '-' else out}")
    return 0
