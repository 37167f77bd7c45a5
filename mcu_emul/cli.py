"""mcu_emul: a Transformer on a cluster of emulated Siracusa MCUs (int8, real MPI, cycles and
energy). `python -m mcu_emul` alone = `run` with the paper defaults. Only this layer (and the
entry point) picks the transport."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import known_models, load_model
from .errors import UserError
from .presets import hardware

DEFAULT_MODEL = "tinyllama-42m"
DEFAULT_PRESET = "siracusa-paper"


def _ids(s: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--prompt-ids must be comma-separated integers, got {s!r}") from None


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m mcu_emul", description=__doc__.split(" Only this")[0])
    sub = ap.add_subparsers(dest="cmd")
    r = sub.add_parser("run", help="run a model on N emulated chips (N = MPI world size or --chips)")
    r.add_argument("--model", default=None,
                   help=f"model name (default: the model of --weights, else {DEFAULT_MODEL})")
    r.add_argument("--weights", help="HDF5 weights file (default: a cached file made on first use)")
    r.add_argument("--seed", type=int, default=0, help="seed of the default generated weights")
    r.add_argument("--prompt-ids", type=_ids, default=[1], help="comma-separated token ids (default 1)")
    r.add_argument("--prompt", help="prompt text (needs a weights file converted with a tokenizer)")
    r.add_argument("--gen-tokens", type=int, default=None,
                   help="tokens to generate, decode (default: the paper setting, 32; 8 for tinyllama-scaled)")
    r.add_argument("--seq-len", type=int, default=128, help="sequence length, encoder (default 128)")
    r.add_argument("--chips", type=int, help="in-process emulated chips when not under mpirun (default 1)")
    r.add_argument("--placement", choices=("auto", "stationary", "stream"), default="auto")
    r.add_argument("--allreduce", choices=("hierarchical", "ring", "flat"), default="hierarchical")
    r.add_argument("--topology", default="siracusa-boards", help="data/topology NAME or a .toml path")
    r.add_argument("--hw", default="siracusa", help="data/hw NAME or a .toml path")
    r.add_argument("--payload", choices=("int32", "int8"), default="int32",
                   help="partial sums travel as exact int32 (default) or requantized int8")
    r.add_argument("--preset", default=DEFAULT_PRESET,
                   help=f"fitted parameter values from data/presets (default {DEFAULT_PRESET}; 'none' for the raw files)")
    r.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a hardware (compute/dma/offchip/power/energy/memory) or link parameter")
    r.add_argument("--dry-run", action="store_true",
                   help="counters only: same chip code and collectives, kernels stubbed (no arithmetic), no weights file")
    r.add_argument("--check-float", action="store_true", help="compare with the float reference")
    r.add_argument("--json", help="write the report here (JSON)")
    r.add_argument("--save-logits", help="write dequantized float32 outputs (.npy)")
    r.add_argument("--trace", help="write a Chrome/Perfetto trace of the emulated timeline (JSON)")
    r.add_argument("--quiet", action="store_true", help="no summary on stdout")
    r.add_argument("--fail-rank", type=int, default=-1, help=argparse.SUPPRESS)
    r.add_argument("--fail-at", default="", help=argparse.SUPPRESS)
    w = sub.add_parser("weights", help="weights files")
    wsub = w.add_subparsers(dest="wcmd")
    mk = wsub.add_parser("make", help="generate deterministic float weights, quantize, write HDF5")
    mk.add_argument("--model", required=True)
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--out", required=True)
    mk.add_argument("--no-float", action="store_true", help="do not store the float reference weights")
    pp = sub.add_parser("paper", help="reproduce the paper's table T1-T7 and the speed-up curves")
    pp.add_argument("--dry-run", action="store_true", help="analytic counters only (seconds); else real MPI runs")
    pp.add_argument("--preset", default=DEFAULT_PRESET)
    pp.add_argument("--json", default="paper.json", help="write the table here (default paper.json)")
    cb = sub.add_parser("calibrate", help="fit the fitted parameters to T1-T7; write a preset")
    cb.add_argument("--hw", default="siracusa")
    cb.add_argument("--topology", default="siracusa-boards")
    cb.add_argument("--sweeps", type=int, default=1, help="coordinate-descent sweeps before Nelder-Mead")
    cb.add_argument("--nm-iters", type=int, default=60, help="Nelder-Mead iterations (then one more sweep)")
    cb.add_argument("--start", help="start from this preset's fitted values (default: the hw/topology files)")
    cb.add_argument("--out", help="preset file to write (default data/presets/siracusa-paper.toml)")
    sw = sub.add_parser("sweep", help="run a grid of configurations; merge results into CSV and JSON")
    sw.add_argument("--model", default=DEFAULT_MODEL)
    sw.add_argument("--chips", default="1,2,4,8", help="comma-separated chip counts")
    sw.add_argument("--allreduce", default="hierarchical", help="comma-separated algorithms")
    sw.add_argument("--placement", default="auto", help="comma-separated placements")
    sw.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=V1,V2",
                    help="an override axis (repeatable), e.g. link.link_bytes_per_s=2e8,2e9")
    sw.add_argument("--run-args", default="", help="more `run` options for every point, one string")
    sw.add_argument("--dry-run", action="store_true", help="counters only, in-process (fast)")
    sw.add_argument("--out", default="sweep", help="folder for sweep.csv and sweep.json")
    sw.add_argument("--quiet", action="store_true", help="no progress bar (batch jobs)")
    pl = sub.add_parser("plot", help="PNG plots of a paper table (needs matplotlib)")
    pl.add_argument("results", help="paper.json written by `paper`")
    pl.add_argument("--out", default="plots", help="folder for the PNGs (default plots)")
    cv = sub.add_parser("convert", help="import a Hugging Face or llama2.c checkpoint into HDF5")
    cv.add_argument("--from", dest="src", nargs=2, metavar=("hf|llama2c", "PATH"), required=True)
    cv.add_argument("--out", required=True)
    cv.add_argument("--name", help="model name stored in the file (default: folder or file name)")
    cv.add_argument("--calib-ids", type=_ids, help="calibration token ids (default: text or seeded random ids)")
    cv.add_argument("--calib-text", help="calibration text, through the folder's tokenizer.json")
    cv.add_argument("--seed", type=int, default=0)
    cv.add_argument("--no-float", action="store_true", help="do not store the float reference weights")
    b = sub.add_parser("bench", help="wall time per token: int8 path vs float32 reference")
    b.add_argument("--model", default=DEFAULT_MODEL)
    b.add_argument("--tokens", type=int, default=32)
    sub.add_parser("models", help="list known models")
    return ap


def ensure_weights(model: str, seed: int, t=None) -> str:
    """The cached default weights file, made on first use (by rank 0 under MPI)."""
    from .weights import default_weights_path, make_weights
    path = default_weights_path(model, seed)
    if t is None or t.rank == 0:
        if not path.is_file():
            load_model(model)   # unknown model -> clear error before anything else
            print(f"mcu_emul: making default weights for {model} (seed {seed}) at {path} (once)", file=sys.stderr)
            make_weights(model, seed, path)
    if t is not None:
        t.barrier()
    return str(path)


def prompt_tokenizer(a):
    from .tokenizer import Tokenizer
    from .weights import WeightsFile, default_weights_path
    path = a.weights or str(default_weights_path(a.model or DEFAULT_MODEL, a.seed))
    wf = WeightsFile(path)
    tj = wf.tokenizer_json
    wf.close()
    if not tj:
        raise UserError(f"--prompt needs a tokenizer, and {path} has none: convert a model folder that has "
                        "tokenizer.json, or give --prompt-ids")
    return Tokenizer.from_json(tj)


def cmd_convert(a):
    from . import convert
    from .weights import write_weights
    kind, src = a.src
    if kind == "hf":
        cfg, w = convert.from_hf(src, a.name)
        folder = Path(src)
    elif kind == "llama2c":
        cfg, w = convert.from_llama2c(src, a.name)
        folder = None
    else:
        raise UserError(f"--from {kind!r}: expected hf or llama2c")
    inputs, how = convert.calibration_ids(cfg, a.seed, folder, a.calib_ids, a.calib_text)
    tj = (folder / "tokenizer.json").read_text() if folder and (folder / "tokenizer.json").is_file() else None
    out = write_weights(cfg, w, a.out, seed=a.seed, init=f"converted from {kind} {src}", keep_float=not a.no_float,
                        calib_inputs=inputs, calib_doc=how, tokenizer_json=tj)
    print(f"wrote {out} ({out.stat().st_size:,} B): model '{cfg.name}' ({cfg.arch}), calibration: {how}"
          + ("; tokenizer stored" if tj else ""))
    return 0


def cmd_run(a, transport_factory):
    from .chip import FAIL_PHASES, RunSpec, run_chip
    from .transport import run_virtual
    if a.fail_at and a.fail_at not in FAIL_PHASES:
        raise UserError(f"--fail-at {a.fail_at!r}: phases are {', '.join(FAIL_PHASES)}")
    if a.model is None and a.weights:
        from .weights import WeightsFile
        wf = WeightsFile(a.weights)
        a.model = wf.model
        wf.close()
    a.model = a.model or DEFAULT_MODEL
    if not a.weights:
        load_model(a.model)
    tok = None
    if a.prompt is not None:
        tok = prompt_tokenizer(a)
        a.prompt_ids = tok.encode(a.prompt)
    if a.gen_tokens is None:
        from .paper import PAPER_RUN
        a.gen_tokens = PAPER_RUN.get(a.model, {}).get("gen_tokens", 32)
    chip, topo = hardware(a.hw, a.topology, a.preset, a.set)
    if a.dry_run and (a.check_float or a.save_logits):
        raise UserError("--check-float and --save-logits need the numerics: drop --dry-run")
    t = transport_factory()
    if a.dry_run and t is not None:          # under mpirun: rank 0 emulates the world size in-process
        if t.rank != 0:
            return 0
        a.chips, t = t.size, None
    if t is not None and a.chips is not None and a.chips != t.size:
        raise UserError(f"--chips {a.chips} differs from the MPI world size {t.size}; omit --chips under mpirun")
    weights = a.weights or ("" if a.dry_run else ensure_weights(a.model, a.seed, t))
    spec = RunSpec(model=a.model, weights=weights, chip=chip, prompt_ids=a.prompt_ids, gen_tokens=a.gen_tokens,
                   seq_len=a.seq_len, placement=a.placement, allreduce=a.allreduce, topology=topo,
                   payload=a.payload, fail_rank=a.fail_rank, fail_at=a.fail_at, dry_run=a.dry_run,
                   trace=bool(a.trace))
    t0 = time.perf_counter()
    if t is not None:
        res = run_chip(spec, t)
    else:
        res = run_virtual(a.chips or 1, lambda tt: run_chip(spec, tt))[0]
    wall = time.perf_counter() - t0
    if res is None:
        return 0
    code = finish_run(a, spec, res, wall)
    if tok is not None and not a.quiet:
        print(f"  text: {a.prompt}{tok.decode(res['token_ids'])}")
    return code


def finish_run(a, spec, res, wall) -> int:
    from . import report
    from .accuracy import check_float
    acc = None
    if a.check_float:
        from .weights import WeightsFile
        wf = WeightsFile(spec.weights)
        acc = check_float(res["cfg"], wf.read_float(), res)
        wf.close()
    rep = report.build(res, spec, acc, wall)
    if a.json:
        report.write_json(a.json, rep)
    if a.trace:
        from .trace import write_trace
        write_trace(a.trace, res["traces"], res["freq_hz"], {"model": rep["model"], "chips": rep["chips"],
                                                             "latency_ms": rep["latency_ms"]})
    if a.save_logits:
        import numpy as np
        report.save_npy(a.save_logits, (res["output"].astype(np.float64) * res["output_scale"]).astype(np.float32))
    if not a.quiet:
        print(report.summary(rep))
    return 0


def cmd_weights(a):
    from .weights import make_weights
    if a.wcmd != "make":
        raise UserError("usage: python -m mcu_emul weights make --model NAME [--seed S] --out FILE")
    load_model(a.model)
    p = make_weights(a.model, a.seed, Path(a.out), keep_float=not a.no_float)
    print(f"wrote {p} ({p.stat().st_size:,} B)")
    return 0


def main(argv=None, transport_factory=lambda: None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run"] + argv
    a = parser().parse_args(argv)
    if a.cmd == "run":
        return cmd_run(a, transport_factory)
    if a.cmd == "weights":
        return cmd_weights(a)
    if a.cmd == "convert":
        return cmd_convert(a)
    if a.cmd == "paper":
        from .paper import paper_cmd
        return paper_cmd(a.dry_run, a.preset, a.json)
    if a.cmd == "calibrate":
        from .calibrate import calibrate_cmd
        return calibrate_cmd(a.hw, a.topology, a.out, a.sweeps, a.start, a.nm_iters)
    if a.cmd == "sweep":
        import shlex
        from .sweep import grid, sweep
        try:
            chips = [int(x) for x in a.chips.split(",")]
        except ValueError:
            raise UserError(f"--chips must be comma-separated integers, got {a.chips!r}") from None
        pts = grid(chips, a.allreduce.split(","), a.placement.split(","), a.set)
        rows = sweep(a.model, pts, shlex.split(a.run_args), a.dry_run, Path(a.out), a.quiet)
        if not a.quiet:
            for r in rows:
                print(f"{r['chips']:>3} chips {r['allreduce']:>12} {r['placement']:>10} {r['overrides']:30s} "
                      f"latency {r['latency_ms']:.4g} ms  energy {r['energy_mj']:.4g} mJ")
        print(f"wrote {Path(a.out) / 'sweep.csv'} and sweep.json ({len(rows)} points)")
        return 0
    if a.cmd == "plot":
        from .plot import plot
        for p in plot(a.results, a.out):
            print(f"wrote {p}")
        return 0
    if a.cmd == "bench":
        from .bench import bench
        return bench(a.model, a.tokens)
    if a.cmd == "models":
        for m in known_models():
            cfg = load_model(m)
            print(f"{m:22s} {cfg.arch:10s} max chips {cfg.max_chips:3d}  {cfg.note}")
        return 0
    parser().print_help()
    return 2
