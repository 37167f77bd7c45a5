"""mcu_emul: a Transformer on a cluster of emulated Siracusa MCUs (int8, real MPI, cycles and
energy). `python -m mcu_emul` alone = `run` with the paper defaults. Only this layer (and the
entry point) picks the transport."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import dataclasses

from ..api import (DEFAULT_MODEL, DEFAULT_PRESET, MAX_CHIPS, MAX_SEED, PAYLOADS, SWEEP_SETS, RunOptions, execute,
                   summary_stream)
from ..chip import PLACEMENTS, PREFILLS
from ..runspec import SPLITS
from ..comm.collectives import ALGORITHMS
from ..config import MAX_CONTEXT, known_models, load_model, table_path
from ..tomltext import parse_sets, toml_text
from ..errors import UserError
from ..files.outputs import check_folder, check_paths
from ..models.stages import PARTITIONS

class Parser(argparse.ArgumentParser):
    """argparse whose errors are ours: one line `mcu_emul: error: ...`, exit 2 (no usage dump);
    no abbreviated options (`--chip 2` is an error, not --chips)."""

    def __init__(self, *args, **kw):
        kw.setdefault("allow_abbrev", False)
        super().__init__(*args, **kw)

    def error(self, message):
        cmd = self.prog.replace("python -m mcu_emul", "").strip()
        raise UserError(f"{cmd + ': ' if cmd else ''}{message} (see --help)")


def _ascii_int(s: str) -> int:
    """An integer in ASCII digits only (Python's int() also reads other scripts' digits)."""
    if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", s):
        raise ValueError(s)
    return int(s)


def _int_in(lo: int, hi: int):
    def parse(s: str) -> int:
        try:
            v = _ascii_int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo} to {hi}, got {v}")
        return v
    parse.__name__ = "integer"
    return parse


def _ids(s: str) -> list[int]:
    if s.strip() == "":
        return []
    try:
        return [_ascii_int(x) for x in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def parser() -> argparse.ArgumentParser:
    from .._version import __version__
    ap = Parser(prog="python -m mcu_emul", description=__doc__.split(" Only this")[0])
    ap.add_argument("--version", action="version", version=f"mcu_emul {__version__}")
    sub = ap.add_subparsers(dest="cmd")
    r = sub.add_parser("run", help="run a model on N emulated chips (N = MPI world size or --chips)")
    r.add_argument("--model", default=None,
                   help=f"model name (default: the model of --weights, else {DEFAULT_MODEL})")
    r.add_argument("--weights", help="HDF5 weights file (default: a cached file made on first use)")
    r.add_argument("--seed", type=_int_in(0, MAX_SEED), default=None,
                   help="seed of the default generated weights (default 0; not with --weights)")
    r.add_argument("--prompt-ids", type=_ids, default=None,
                   help="comma-separated token ids (decode default: 1; encode default: seeded random ids)")
    r.add_argument("--prompt", help="prompt text (needs a weights file converted with a tokenizer)")
    r.add_argument("--gen-tokens", type=_int_in(1, MAX_CONTEXT), default=None,
                   help="tokens to generate, decode (default: the paper setting, 32; 8 for tinyllama-scaled)")
    r.add_argument("--seq-len", type=_int_in(1, MAX_CONTEXT), default=None,
                   help="sequence length, encoder (default: the --prompt-ids given, else 128)")
    r.add_argument("--prefill", choices=PREFILLS, default=None,
                   help="decode: the prompt in one pass (parallel, default) or token by token (token)")
    r.add_argument("--chips", type=_int_in(1, MAX_CHIPS),
                   help="in-process emulated chips when not under mpirun (default 1)")
    r.add_argument("--placement", choices=PLACEMENTS, default="auto")
    r.add_argument("--allreduce", choices=ALGORITHMS, default="hierarchical")
    r.add_argument("--topology", default="siracusa-boards", help="data/topology NAME or a .toml path")
    r.add_argument("--hw", default="siracusa", help="data/hw NAME or a .toml path")
    r.add_argument("--cluster", default=None, help="data/clusters NAME or a .toml path: each chip's own hardware "
                   "(default: every chip is --hw)")
    r.add_argument("--split", choices=SPLITS, default="balanced",
                   help="equal shares (balanced, default) or in proportion to each chip's throughput (by-speed)")
    r.add_argument("--payload", choices=PAYLOADS, default="int32",
                   help="partial sums travel as exact int32 (default) or requantized int8")
    r.add_argument("--partition", choices=PARTITIONS, default="tensor",
                   help="how the model is split: heads and FFN slices of every layer (tensor, default: the paper's) "
                        "or whole layers per chip, activations passed chip to chip (pipeline)")
    r.add_argument("--hops", action="store_true",
                   help="in-process chips move every message of the all-reduce algorithm (the reference path: "
                        "same outputs and counters, slower; by default each exact all-reduce is one exchange; "
                        "MPI ranks always move every message)")
    r.add_argument("--preset", default=DEFAULT_PRESET,
                   help=f"fitted parameter values from data/presets (default {DEFAULT_PRESET}; 'none' for the raw files)")
    r.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a hardware (compute/dma/offchip/power/energy/memory) or link parameter")
    r.add_argument("--dry-run", action="store_true",
                   help="counters only: same chip code and collectives, kernels stubbed (no arithmetic), no weights file")
    r.add_argument("--check-float", action="store_true", help="compare with the float reference")
    r.add_argument("--json", help="write the report here (JSON; - for standard output)")
    r.add_argument("--save-logits", help="write dequantized float32 outputs (.npy)")
    r.add_argument("--trace", help="write a Chrome/Perfetto trace of the emulated timeline (JSON; - for standard output)")
    r.add_argument("--quiet", action="store_true", help="no summary on stdout")
    r.add_argument("--config", metavar="FILE.toml", help="options from a TOML file (keys: the long options; "
                   "the command line wins)")
    r.add_argument("--fail-rank", type=int, default=-1, help=argparse.SUPPRESS)
    r.add_argument("--fail-at", default="", help=argparse.SUPPRESS)
    w = sub.add_parser("weights", help="weights files")
    wsub = w.add_subparsers(dest="wcmd")
    mk = wsub.add_parser("make", help="generate deterministic float weights, quantize, write HDF5")
    mk.add_argument("--model", required=True)
    mk.add_argument("--seed", type=_int_in(0, MAX_SEED), default=0)
    mk.add_argument("--out", required=True)
    mk.add_argument("--no-float", action="store_true", help="do not store the float reference weights")
    pp = sub.add_parser("paper", help="reproduce the paper's table T1-T7 and the speed-up curves")
    pp.add_argument("--dry-run", action="store_true", help="analytic counters only (seconds); else real MPI runs")
    pp.add_argument("--preset", default=DEFAULT_PRESET)
    pp.add_argument("--json", default="paper.json", help="write the table here (default paper.json; - for standard output)")
    cb = sub.add_parser("calibrate", help="fit the fitted parameters to T1-T7, validate by prediction; write a preset")
    cb.add_argument("--calibration", default="siracusa-paper",
                    help="what to fit within which bounds: data/calibration/NAME.toml or a .toml path")
    cb.add_argument("--sweeps", type=_int_in(0, 100), default=1, help="coordinate-descent sweeps before Nelder-Mead")
    cb.add_argument("--nm-iters", type=_int_in(0, 10000), default=60, help="Nelder-Mead iterations (then one more sweep)")
    cb.add_argument("--start", help="start from this preset's fitted values (default: the hw/topology files)")
    cb.add_argument("--out", help="preset file to write (default data/presets/siracusa-paper.toml)")
    cb.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a structure choice fixed before the fit (repeatable), e.g. link.group_sizes=[8]; "
                         "written into the preset")
    cb.add_argument("--no-validation", action="store_true",
                    help="skip the leave-one-out fits and the sensitivities (a quick trial)")
    cb.add_argument("--loo-nm-iters", type=_int_in(0, 10000), default=20,
                    help="Nelder-Mead iterations of each leave-one-out fit (from the full fit's values)")
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
    sw.add_argument("--config", metavar="FILE.toml", help="options from a TOML file (the command line wins)")
    pn = sub.add_parser("plan", help="deployment planner: dry runs over chips, topologies, all-reduces, payloads; "
                        "what fits, the smallest cluster meeting a budget, the latency-energy Pareto front")
    from .plan import add_arguments
    add_arguments(pn)
    pl = sub.add_parser("plot", help="plots of a paper table, a run report, a sweep or a plan (needs matplotlib)")
    pl.add_argument("results", help="paper.json (`paper`), a run report (`run --json`), sweep.json (`sweep`) or a plan "
                    "(`plan --json`)")
    pl.add_argument("--out", default="plots", help="folder for the figures (default plots)")
    pl.add_argument("--format", default="png", help="png (default), svg or pdf")
    pl.add_argument("--y", default="latency_ms", help="sweeps: the figure to draw against chips (default latency_ms)")
    cv = sub.add_parser("convert", help="import a Hugging Face or llama2.c checkpoint into HDF5")
    cv.add_argument("--from", dest="src", nargs=2, metavar=("hf|llama2c", "PATH"), required=True)
    cv.add_argument("--out", required=True)
    cv.add_argument("--name", help="model name stored in the file (default: folder or file name)")
    cv.add_argument("--calib-ids", type=_ids, help="calibration token ids (default: text or seeded random ids)")
    cv.add_argument("--calib-text", help="calibration text, through the folder's tokenizer.json")
    cv.add_argument("--seed", type=_int_in(0, MAX_SEED), default=0)
    cv.add_argument("--no-float", action="store_true", help="do not store the float reference weights")
    b = sub.add_parser("bench", help="wall time per token of every way of running, as ratios to the float32 reference")
    b.add_argument("--model", default=DEFAULT_MODEL)
    b.add_argument("--tokens", type=_int_in(1, MAX_CONTEXT), default=32)
    b.add_argument("--chips", type=_int_in(1, MAX_CHIPS), default=8,
                   help="chips of the in-process and mpiexec rows (default 8)")
    b.add_argument("--scaled", action="store_true",
                   help="also 64 ranks of tinyllama-scaled: first run on a fresh cache, then cached (minutes)")
    b.add_argument("--no-dry", action="store_true", help="skip the dry runs of the paper's configurations")
    sub.add_parser("models", help="list known models")
    return ap


def cmd_convert(a):
    from ..files import convert
    from ..files.weights import write_weights
    kind, src = a.src
    if kind not in ("hf", "llama2c"):
        raise UserError(f"--from {kind!r}: expected hf or llama2c")
    srcp = Path(src)
    ins = {"--from": src} if kind == "llama2c" else {
        f"--from {p.name}": str(p) for p in (srcp.glob("*") if srcp.is_dir() else [])}
    check_paths({"--out": a.out}, ins)
    if kind == "hf":
        cfg, w = convert.from_hf(src, a.name)
        folder = srcp
    else:
        cfg, w = convert.from_llama2c(src, a.name)
        folder = None
    inputs, how = convert.calibration_ids(cfg, a.seed, folder, a.calib_ids, a.calib_text)
    tj = convert.tokenizer_json(folder)
    out = write_weights(cfg, w, a.out, seed=a.seed, init=f"converted from {kind} {src}", keep_float=not a.no_float,
                        calib_inputs=inputs, calib_doc=how, tokenizer_json=tj)
    print(f"wrote {out} ({out.stat().st_size:,} B): model '{cfg.name}' ({cfg.arch}), calibration: {how}"
          + ("; tokenizer stored" if tj else ""))
    return 0


def _run_options(a) -> RunOptions:
    """The `run` command's namespace as the API's options (argparse has checked the values)."""
    names = {f.name for f in dataclasses.fields(RunOptions)} - {"overrides", "progress"}
    return RunOptions(**{k: (a.set if k == "sets" else getattr(a, k)) for k in names},
                      progress=not a.quiet and sys.stderr.isatty())


def cmd_run(a, transport_factory):
    import shlex
    o, t = _run_options(a), transport_factory()
    rep, tok = execute(o, t, "python -m mcu_emul " + shlex.join(sys.argv[1:]))
    if (t is None or t.rank == 0) and not a.quiet:
        out = summary_stream(o)
        print(rep.summary(), file=out)
        if tok is not None:
            print(f"  text: {a.prompt}{tok.decode(rep.token_ids)}", file=out)
        for f in (o.json, o.trace, o.save_logits):
            if f is not None and f != "-":
                print(f"wrote {f}", file=out)
    return 0


def cmd_weights(a):
    from ..files.weights import make_weights
    if a.wcmd != "make":
        raise UserError("usage: python -m mcu_emul weights make --model NAME [--seed S] --out FILE")
    check_paths({"--out": a.out}, {"--model": str(table_path("models", a.model))})
    p = make_weights(load_model(a.model), a.seed, Path(a.out), keep_float=not a.no_float)
    print(f"wrote {p} ({p.stat().st_size:,} B)")
    return 0


def cmd_sweep(a):
    import shlex
    from .sweep import sweep
    chips = _int_list(a.chips, "--chips")
    algs, places = _choice_list(a.allreduce, "--allreduce", ALGORITHMS), _choice_list(a.placement, "--placement", PLACEMENTS)
    try:
        extra = shlex.split(a.run_args)
    except ValueError as e:
        raise UserError(f"--run-args {a.run_args!r}: {e}") from None
    owned = [x.split("=")[0] for x in extra if x.split("=")[0] in SWEEP_OWNS]
    if owned:
        raise UserError(f"--run-args {owned[0]}: the sweep sets it for every point (use the sweep's own options)")
    ra = parser().parse_args(["run", *extra])                 # the same checks as `run` itself
    o = _run_options(ra)
    options = {k: getattr(o, k) for k in ("weights", "seed", "prompt_ids", "prompt", "gen_tokens", "seq_len", "topology",
                                          "hw", "cluster", "split", "payload", "preset", "check_float", "partition")
               if getattr(o, k) != getattr(RunOptions, k, None)}
    if o.sets:
        options["overrides"] = parse_sets(o.sets)
    out = check_folder("--out", a.out)
    check_paths({"--out sweep.csv": out / "sweep.csv", "--out sweep.json": out / "sweep.json"},
                {"--model": str(table_path("models", a.model))})
    rows = sweep(a.model, chips, algs, places, a.set, options, a.dry_run, out, a.quiet)
    if not a.quiet:
        for r in rows:
            print(f"{r['chips']:>3} chips {r['allreduce']:>12} {r['placement']:>10} {r['overrides']:30s} "
                  f"latency {r['latency_ms']:.4g} ms  energy {r['energy_mj']:.4g} mJ")
    print(f"wrote {out / 'sweep.csv'} and sweep.json ({len(rows)} points)")
    return 0


SWEEP_OWNS = ("--model", "--quiet", "--dry-run", *("--" + k.replace("_", "-") for k in SWEEP_SETS))


def _int_list(s: str, opt: str) -> list[int]:
    try:
        vals = [_ascii_int(x) for x in s.split(",")]
    except ValueError:
        raise UserError(f"{opt} must be comma-separated integers, got {s!r}") from None
    bad = [v for v in vals if not 1 <= v <= MAX_CHIPS]
    if bad:
        raise UserError(f"{opt} {bad[0]}: chip counts must be from 1 to {MAX_CHIPS}")
    return vals


def _choice_list(s: str, opt: str, choices) -> list[str]:
    vals = s.split(",")
    bad = [v for v in vals if v not in choices]
    if bad:
        raise UserError(f"{opt} {bad[0]!r}: choose from {', '.join(choices)}")
    return vals


def config_argv(cmd: str, path: str) -> list[str]:
    """A TOML options file as command-line words, so that it gets exactly the command line's
    checks. Keys are the long options (`gen_tokens` or `gen-tokens`); lists for comma-separated
    options (`prompt_ids = [1, 2]`, sweep `chips = [1, 2, 4]`); `--set` values as a table
    (`[set]` with `"link.link_bytes_per_s" = 4e8`) or a list of "KEY=VALUE" strings."""
    from ..config import read_toml
    table = read_toml(path)
    sub = parser()._subparsers._group_actions[0].choices[cmd]
    actions = {o: act for act in sub._actions for o in act.option_strings}
    words = []
    for key, v in table.items():
        opt = "--" + key.replace("_", "-")
        act = actions.get(opt)
        if act is None or opt in ("--config", "--help", "--fail-rank", "--fail-at"):
            known = sorted(o[2:] for o in actions if o.startswith("--") and o not in
                           ("--config", "--help", "--fail-rank", "--fail-at"))
            raise UserError(f"{path}: unknown option {key!r} for '{cmd}' (options: {', '.join(known)})")
        if isinstance(act, argparse._StoreTrueAction):
            if not isinstance(v, bool):
                raise UserError(f"{path}: {key} must be true or false, got {v!r}")
            words += [opt] if v else []
        elif isinstance(act, argparse._AppendAction):
            items = [f"{k}={toml_text(x)}" for k, x in v.items()] if isinstance(v, dict) else v
            if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                raise UserError(f"{path}: {key} must be a table or a list of \"KEY=VALUE\" strings, got {v!r}")
            for x in items:
                words += [opt, x]
        elif isinstance(v, list):
            words += [opt, ",".join(str(x) for x in v)]
        elif isinstance(v, (str, int, float)) and not isinstance(v, bool):
            words += [opt, str(v)]
        else:
            raise UserError(f"{path}: {key} = {v!r} is not a value for {opt}")
    return words


def main(argv=None, transport_factory=lambda: None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["run"] + argv
    a = parser().parse_args(argv)
    if getattr(a, "config", None) is not None:            # the file first, the command line after it wins
        words = config_argv(a.cmd, a.config)
        try:
            parser().parse_args([a.cmd, *words])
        except UserError as e:
            raise UserError(f"{a.config}: {e}") from None
        a = parser().parse_args([a.cmd, *words, *argv[1:]])
    t = transport_factory()
    if a.cmd not in ("run", None) and t is not None:
        raise UserError(f"'{a.cmd}' is not run one rank per chip (only 'run' is): start it without mpiexec/srun"
                        + (" (it starts its own processes)" if a.cmd in ("sweep", "paper", "calibrate") else ""))
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
        return calibrate_cmd(a.calibration, a.out, a.sweeps, a.start, a.nm_iters, not a.no_validation,
                             a.loo_nm_iters, a.set)
    if a.cmd == "sweep":
        return cmd_sweep(a)
    if a.cmd == "plan":
        from .plan import cmd_plan
        return cmd_plan(a)
    if a.cmd == "plot":
        from .plot import plot
        for p in plot(a.results, str(check_folder("--out", a.out)), a.format, a.y):
            print(f"wrote {p}")
        return 0
    if a.cmd == "bench":
        from .bench import bench
        return bench(a.model, a.tokens, a.chips, a.scaled, not a.no_dry)
    if a.cmd == "models":
        for m in known_models():
            cfg = load_model(m)
            print(f"{m:22s} {cfg.arch:10s} max chips {cfg.max_chips:3d}  {cfg.note}")
        return 0
    parser().print_help()
    return 2
