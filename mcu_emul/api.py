"""The Python API: `run` one configuration, `sweep` a grid; the command line is a thin layer
over it. Every option is checked here (the same checks the command line gets), errors raise
`UserError` with the message the command line prints after `mcu_emul: error:`.

    import mcu_emul
    r = mcu_emul.run("tinyllama-42m", chips=8, dry_run=True)
    r.latency_ms, r.energy_mj, r.blocks["latency_ms"], r.per_chip[0]["weight_bytes"]
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import sys
import time
from dataclasses import dataclass, field

from .chip import FAIL_PHASES, PLACEMENTS, PREFILLS, RunSpec, ensure_weights, run_chip, validate_inputs
from .cluster import run_cluster, same_count
from .runspec import SPLITS
from .comm.collectives import ALGORITHMS
from .comm.transport import Aborted, MPITransport, mpi_launched
from .dryrun import run_in_process
from .config import MAX_CONTEXT, LlamaConfig, load_model, table_path
from .tomltext import toml_text
from .errors import UserError
from .files.outputs import check_paths, write_json
from .files.report import Report
from .models.partition import plan
from .models.stages import PARTITIONS, check_chips_for
from .presets import hardware

DEFAULT_MODEL = "tinyllama-42m"
DEFAULT_PRESET = "siracusa-paper"
MAX_CHIPS = 4096
MAX_SEED = 2**63 - 1
PAYLOADS = ("int32", "int8")
# integer options and their ranges (README "Limits")
INT_RANGES = {"chips": (1, MAX_CHIPS), "seed": (0, MAX_SEED), "gen_tokens": (1, MAX_CONTEXT),
              "seq_len": (1, MAX_CONTEXT), "fail_rank": (-1, MAX_CHIPS)}
CHOICES = {"placement": PLACEMENTS, "allreduce": ALGORITHMS, "payload": PAYLOADS, "prefill": PREFILLS, "split": SPLITS,
           "partition": PARTITIONS}
# run options a sweep sets for every point itself (grid axes, per-point outputs)
SWEEP_SETS = ("chips", "allreduce", "placement", "json", "trace", "save_logits")


@dataclass
class RunOptions:
    """The options of one run: `run`'s long options with underscores (`--set` strings in
    `sets`; the API's `overrides` dict in `overrides`)."""
    model: str | None = None
    chips: int | None = None
    weights: str | None = None
    seed: int | None = None
    prompt_ids: list | None = None
    prompt: str | None = None
    gen_tokens: int | None = None
    seq_len: int | None = None
    placement: str = "auto"
    allreduce: str = "hierarchical"
    topology: str = "siracusa-boards"
    hw: str = "siracusa"
    cluster: str | None = None      # data/clusters NAME or a .toml path: each chip's own hardware
    split: str = "balanced"         # or "by-speed": shares in proportion to each chip's throughput
    payload: str = "int32"
    preset: str = DEFAULT_PRESET
    sets: list = field(default_factory=list)
    overrides: dict | None = None
    dry_run: bool = False
    check_float: bool = False
    json: str | None = None
    save_logits: str | None = None
    trace: str | None = None
    fail_rank: int = -1
    fail_at: str = ""
    prefill: str | None = None      # decode: "parallel" (default: the prompt in one pass) or "token"
    progress: bool = False          # decode steps with an ETA on stderr (rank 0)
    partition: str = "tensor"       # "tensor" (heads/FFN split, the paper's) or "pipeline" (whole layers per chip)
    hops: bool = False              # every message of the all-reduce algorithm moves (same results, slower)

    @classmethod
    def from_kwargs(cls, kw: dict) -> "RunOptions":
        """Checked options from Python keywords (names, types, ranges, choices)."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "sets"]
        unknown = sorted(set(kw) - set(names))
        if unknown:
            raise UserError(f"unknown option(s) {', '.join(unknown)} (options: {', '.join(names)})")
        o = cls(**kw)
        for k, (lo, hi) in INT_RANGES.items():
            v = getattr(o, k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi):
                raise UserError(f"{k} must be an integer from {lo} to {hi}, got {v!r}")
        for k, allowed in CHOICES.items():
            if getattr(o, k) not in allowed and not (k == "prefill" and o.prefill is None):
                raise UserError(f"{k} must be one of {', '.join(allowed)}, got {getattr(o, k)!r}")
        for k in ("dry_run", "check_float", "progress", "hops"):
            if not isinstance(getattr(o, k), bool):
                raise UserError(f"{k} must be True or False, got {getattr(o, k)!r}")
        for k in ("model", "weights", "prompt", "topology", "hw", "cluster", "preset", "json", "save_logits", "trace"):
            v = getattr(o, k)
            if v is not None and not isinstance(v, (str, os.PathLike)):
                raise UserError(f"{k} must be a string or path, got {v!r}")
            if isinstance(v, os.PathLike):
                setattr(o, k, os.fspath(v))
        if o.prompt_ids is not None:
            ids = o.prompt_ids
            if isinstance(ids, (str, bytes)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise UserError(f"prompt_ids must be a list of integers, got {ids!r}")
            o.prompt_ids = [int(i) for i in ids]
        if o.overrides is not None and not (isinstance(o.overrides, dict) and all(isinstance(k, str) for k in o.overrides)):
            raise UserError(f"overrides must be a dict of 'section.key': value, got {o.overrides!r}")
        return o


def _inputs(o: RunOptions) -> dict:
    """The files a run reads (for the output-collision check), data files named by name too."""
    ins = {"--weights": o.weights}
    for opt, kind, v in (("--model", "models", o.model), ("--hw", "hw", o.hw), ("--topology", "topology", o.topology),
                         ("--cluster", "clusters", o.cluster), ("--preset", "presets", o.preset)):
        if v:
            ins[opt] = str(table_path(kind, v))
    return ins


def resolve(o: RunOptions, transport):
    """The run's model (checked against its weights file), inputs and hardware, all checked
    before any chip starts. Returns (spec, chips, tokenizer or None)."""
    from .files.weights import WeightsFile
    if o.fail_at and o.fail_at not in FAIL_PHASES:
        raise UserError(f"--fail-at {o.fail_at!r}: phases are {', '.join(FAIL_PHASES)}")
    check_paths({"--json": o.json, "--trace": o.trace, "--save-logits": o.save_logits}, _inputs(o),
                stdout_ok=("--json", "--trace", "--save-logits"))
    if o.dry_run and (o.check_float or o.save_logits):
        raise UserError("--check-float and --save-logits need the numerics: drop --dry-run")
    given = load_model(o.model) if o.model is not None else None
    if o.weights is not None and o.seed is not None:
        raise UserError(f"--seed {o.seed} picks the generated default weights; it has no effect with --weights")
    if o.weights is not None:
        wf = WeightsFile(o.weights, expect=given)
        cfg, tj = wf.cfg, wf.tokenizer_json
        wf.close()
    else:
        cfg, tj = given or load_model(DEFAULT_MODEL), None
    tok, prompt_ids = None, o.prompt_ids
    if o.prompt is not None:
        if o.prompt_ids is not None:
            raise UserError("give --prompt or --prompt-ids, not both")
        from .files.tokenizer import Tokenizer
        if not tj:
            raise UserError(f"--prompt needs a tokenizer, and {o.weights or 'the default weights'} has none: convert "
                            "a model folder that has tokenizer.json, or give --prompt-ids")
        tok = Tokenizer.from_json(tj)
        prompt_ids = tok.encode(o.prompt)
    decode = isinstance(cfg, LlamaConfig)
    if decode and o.seq_len is not None:
        raise UserError(f"--seq-len is for encoders; model '{cfg.name}' decodes: use --gen-tokens")
    if not decode and o.gen_tokens is not None:
        raise UserError(f"--gen-tokens is for decoders; model '{cfg.name}' encodes: use --seq-len")
    if not decode and o.prefill is not None:
        raise UserError(f"--prefill {o.prefill} is for decoders; model '{cfg.name}' encodes its input in one pass")
    gen_tokens = o.gen_tokens
    if gen_tokens is None:
        from .commands.paper import PAPER_RUN
        gen_tokens = PAPER_RUN.get(cfg.name, {}).get("gen_tokens", 32)
    seq_len = o.seq_len or (len(prompt_ids) if prompt_ids else min(128, getattr(cfg, "max_positions", 128)))
    if transport is not None and o.chips is not None and o.chips != transport.size:
        raise UserError(f"--chips {o.chips} differs from the MPI world size {transport.size}; omit --chips under mpirun")
    chip, topo = hardware(o.hw, o.topology, o.preset, o.sets, o.overrides)
    cluster = run_cluster(o.cluster, o.hw, chip, topo, o.preset, o.sets, o.overrides)
    chips = transport.size if transport is not None else (o.chips or (cluster.size if cluster else 1))
    same_count(o.cluster, cluster, chips, transport is not None)
    check_chips_for(cfg, chips, o.partition)
    if o.partition == "pipeline":
        from .pipeline import check_options
        check_options(o.payload, o.allreduce)
    if o.fail_rank >= chips:
        raise UserError(f"--fail-rank {o.fail_rank}: there are only {chips} chips")
    spec = RunSpec(model=cfg.name, cfg=cfg, weights=o.weights or "", chip=chip, prompt_ids=prompt_ids,
                   gen_tokens=gen_tokens, seq_len=seq_len, placement=o.placement, allreduce=o.allreduce,
                   topology=topo, payload=o.payload, fail_rank=o.fail_rank, fail_at=o.fail_at, dry_run=o.dry_run,
                   trace=bool(o.trace), progress=o.progress, prefill=o.prefill or "parallel", cluster=cluster,
                   split=o.split, partition=o.partition, hops=o.hops)
    validate_inputs(cfg, spec)
    if o.partition == "tensor":
        plan(cfg, chips, spec.speeds(cfg, chips))         # a by-speed split that cannot be made: refused here
    return spec, chips, tok


def execute(o: RunOptions, transport, invocation: str = "") -> tuple[Report, object]:
    """Run one configuration: on the ranks of `transport` (one chip each), or on in-process
    chips when it is None. Output files are written by rank 0; every rank gets the Report.
    Returns (report, tokenizer or None)."""
    spec, chips, tok = resolve(o, transport)
    t = transport
    if not spec.weights and not spec.dry_run:
        spec.weights = ensure_weights(spec.cfg, o.seed or 0, t)
    if o.check_float:                             # before the run, not after it
        from .files.weights import WeightsFile
        with contextlib.closing(WeightsFile(spec.weights)) as wf:
            if not wf.has_float:
                wf.read_float()                   # its one-line error
    rep = None
    t0 = time.perf_counter()
    if spec.dry_run or t is None:                 # dry runs: rank 0 emulates every chip in-process
        if t is None or t.rank == 0:
            res = run_in_process(spec, chips)
            rep = _finish(o, spec, res, time.perf_counter() - t0, provenance(o, spec, invocation, t))
    else:
        res = run_chip(spec, t)
        if res is not None:
            rep = _finish(o, spec, res, time.perf_counter() - t0, provenance(o, spec, invocation, t))
    if t is not None:
        rep = t.bcast_obj(rep)
    return Report(rep), tok


def provenance(o: RunOptions, spec, invocation: str, transport) -> dict:
    """What produced a report: version, invocation, preset and the fitted values applied,
    overrides, the data files and the weights file (each with its sha256, or the generator's
    model and seed), the input seed, library versions."""
    import hashlib
    import platform
    from importlib import metadata
    from ._version import __version__
    from .comm.transport import mpi_library_version
    from .tomltext import parse_sets
    from .presets import load_preset

    def sha256(path):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def file(kind, name):
        p = table_path(kind, name)
        return {"name": name, "path": str(p.resolve()), "sha256": sha256(p)}

    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None
    preset = load_preset(o.preset) if o.preset != "none" else {}
    if spec.weights:
        weights = {"path": str(os.path.abspath(spec.weights)), "sha256": sha256(spec.weights),
                   "generated": o.weights is None}
        if o.weights is None:
            weights |= {"model": spec.cfg.name, "seed": o.seed or 0}
    else:
        weights = None                                # a dry run reads no weights
    return {"mcu_emul_version": __version__, "invocation": invocation,
            "preset": o.preset, "fitted": dict(preset.get("fitted", {})),
            "structure": dict(preset.get("structure", {})),
            "overrides": parse_sets(o.sets) | (o.overrides or {}),
            "model_file": file("models", o.model) if o.model is not None and o.weights is None else None,
            "hw_file": file("hw", o.hw), "topology_file": file("topology", o.topology),
            "cluster_file": file("clusters", o.cluster) if o.cluster is not None else None, "split": o.split,
            "weights": weights, "input_seed": spec.input_seed,
            "versions": {"python": platform.python_version(), "numpy": version("numpy"), "h5py": version("h5py"),
                         "mpi4py": version("mpi4py"), "mpich": version("mpich"),
                         "mpi_library": mpi_library_version() if transport is not None else None}}


def _finish(o: RunOptions, spec, res, wall, prov: dict) -> dict:
    """Rank 0: accuracy, the report, and the output files."""
    from .files import report
    from .numerics.accuracy import check_float
    acc = None
    if o.check_float:
        from .files.weights import WeightsFile
        wf = WeightsFile(spec.weights)
        acc = check_float(res["cfg"], wf.read_float(), res)
        wf.close()
    rep = report.build(res, spec, acc, wall) | {"provenance": prov}
    if o.json:
        write_json(o.json, rep)
    if o.trace:
        from .files.trace import write_trace
        names = None
        if spec.cluster is not None:                 # each track names its chip and clock
            names = [f"chip {c['rank']} ({c['hw']}, {c['freq_hz'] / 1e6:.4g} MHz)" for c in res["chips"]]
        write_trace(o.trace, res["traces"], res["freq_hz"], {"model": rep["model"], "chips": rep["chips"],
                                                             "latency_ms": rep["latency_ms"]}, names)
    if o.save_logits:
        import numpy as np
        report.save_npy(o.save_logits, (res["output"].astype(np.float64) * res["output_scale"]).astype(np.float32))
    return rep


def run(model: str | None = None, chips: int | None = None, *, comm=None, **options) -> Report:
    """Run `model` on `chips` emulated chips and return its Report.

    In a plain process the chips run in-process. Given `comm` (an mpi4py communicator), or
    when this process was started by an MPI launcher and `chips` is None, each rank of the
    communicator is one chip and every rank returns the same Report. An error on any rank
    raises on every rank (UserError with its message), instead of leaving the others hung.
    Options: `run`'s long options with underscores (gen_tokens, placement, allreduce,
    topology, hw, preset, weights, prompt_ids, prompt, seq_len, check_float, dry_run, payload,
    partition, json, trace, save_logits, seed) and overrides={"link.link_bytes_per_s": 4e8} for --set.
    """
    o = RunOptions.from_kwargs(dict(options, model=model, chips=chips))
    if comm is None and chips is None and mpi_launched():
        from .comm.transport import world
        comm = world()
    call = "mcu_emul.run(" + ", ".join(f"{k}={v!r}" for k, v in dict(options, model=model, chips=chips).items()) + ")"
    if comm is None:
        return execute(o, None, call)[0]
    t = MPITransport(comm, private=True)
    failed = True
    try:
        rep = execute(o, t, call)[0]
        failed = False
        return rep
    except Aborted as e:
        raise e.as_error() from None
    except BaseException as e:
        t.notify_failure(e)
        raise
    finally:
        t.close(failed)


def grid_points(chips=(1,), allreduce=("hierarchical",), placement=("auto",), axes: dict | None = None) -> list[dict]:
    """Cartesian product of chip counts, algorithms, placements and override axes
    ({"section.key": [v1, v2]}): one point per combination, the sweep command's order."""
    axes = axes or {}
    points = []
    for n, alg, pl, *vals in itertools.product(chips, allreduce, placement, *axes.values()):
        points.append({"chips": n, "allreduce": alg, "placement": pl, "overrides": dict(zip(axes, vals))})
    return points


def sweep(model: str = DEFAULT_MODEL, grid: dict | None = None, dry_run: bool = True, progress=None,
          **options) -> list[Report]:
    """Reports of every point of a grid: {"chips": [1, 2, 4, 8], "allreduce": [...],
    "placement": [...], "section.key": [v1, v2], ...}. Dry runs run in-process; real runs start
    `mpiexec -n CHIPS` per point (the sweep command's semantics)."""
    g = dict(grid or {})
    chips = g.pop("chips", [1, 2, 4, 8])
    algs = g.pop("allreduce", ["hierarchical"])
    places = g.pop("placement", ["auto"])
    for k, v in {"chips": chips, "allreduce": algs, "placement": places, **g}.items():
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__") or not list(v):
            raise UserError(f"grid axis {k!r} must be a non-empty list, got {v!r}")
    bad = sorted(set(options) & set(SWEEP_SETS))
    if bad:
        raise UserError(f"sweep option {bad[0]!r}: the sweep sets it for every point (give it as a grid axis)")
    base = dict(options.pop("overrides", None) or {})
    pts = grid_points(list(chips), list(algs), list(places), {k: list(v) for k, v in g.items()})
    checked = [RunOptions.from_kwargs(dict(options, model=model, chips=p["chips"], allreduce=p["allreduce"],
                                           placement=p["placement"], overrides=base | p["overrides"],
                                           dry_run=dry_run)) for p in pts]
    for o in checked:                                 # every point checked before the first runs
        cfg = load_model(o.model) if o.model else load_model(DEFAULT_MODEL)
        check_chips_for(cfg, o.chips, o.partition)
        chip, topo = hardware(o.hw, o.topology, o.preset, [], o.overrides)
        same_count(o.cluster, run_cluster(o.cluster, o.hw, chip, topo, o.preset, [], o.overrides), o.chips, False)
    out = []
    for i, o in enumerate(checked):
        call = f"mcu_emul.sweep({model!r}, grid={grid!r}, dry_run={dry_run!r}, ...) point {i}"
        out.append(execute(o, None, call)[0] if dry_run else _real_point(o))
        if progress:
            progress(i + 1, len(checked), pts[i])
    return out


def _real_point(o: RunOptions) -> Report:
    import tempfile
    from .commands.launcher import run_report
    args = _cli_args(o)
    with tempfile.TemporaryDirectory() as tmp:
        return Report(run_report(args, o.chips, os.path.join(tmp, "point.json")))


def _cli_args(o: RunOptions) -> list[str]:
    """The `run` command line of options (for a run in its own processes)."""
    args = []
    for f in dataclasses.fields(RunOptions):
        v = getattr(o, f.name)
        if f.name in ("chips", "sets", "overrides", "dry_run", "json", "trace", "save_logits") or v == f.default \
                or v is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(v, bool):
            args += [flag] if v else []
        elif f.name == "prompt_ids":
            args += [flag, ",".join(map(str, v))]
        else:
            args += [flag, str(v)]
    for s in o.sets:
        args += ["--set", s]
    for k, v in (o.overrides or {}).items():
        args += ["--set", f"{k}={toml_text(v)}"]
    return args


def summary_stream(o: RunOptions):
    """The summary goes to stdout, or to stderr when an output is written to stdout."""
    return sys.stderr if "-" in (o.json, o.trace, o.save_logits) else sys.stdout
