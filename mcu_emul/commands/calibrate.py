"""Fit the fitted parameters to the paper targets with the dry-run model; validate the fit by
prediction; write a preset.

What is fitted, within which bounds and why, is data (data/calibration/NAME.toml). The
objective is the largest |log(ours / published)| over the targets, plus a hundredth of their
sum of squares to break ties; minimized by coordinate descent in log space (golden-section
search per parameter, within its bounds), then Nelder-Mead. Each evaluation is a set of dry
runs (same chip code, no numerics). Deterministic.

Validation (written into the preset beside the fit): the leave-one-out error of each target
(fit without it, from the full fit's values, then predict it), the parameters that end within
2% of a bound, and the sensitivity d log(target) / d log(parameter) of every target to every
fitted and every influential assumed parameter.
"""
from __future__ import annotations

import datetime
import math
import time
from pathlib import Path

from ..config import load_chip, load_topology, param_value, with_values
from ..tomltext import toml_text
from ..errors import UserError
from .paper import TARGETS, dry_pool, errors_pct, evaluate
from ..presets import PRESET_DIR, load_calibration, load_preset
from ..files.outputs import write_bytes

# reduced run length while fitting: the scaled model's 64-chip run is the slowest, and its
# speed-up does not change (to 0.01%) between 2 and 8 tokens; the rest as in the table
FIT_RUNS = {"tinyllama-scaled": dict(gen_tokens=2)}
GOLDEN = (math.sqrt(5) - 1) / 2
NEAR_BOUND = 0.02              # "at a bound": within 2% of the parameter's range of either end
SENSITIVITY_STEP = 1.05        # finite difference in log space: the parameter times 1.05


def log_errors(ours: dict) -> dict:
    pub = {x.id: x.published for x in TARGETS}
    return {k: math.log(ours[k] / pub[k]) for k in pub}


def score(logs: dict, targets) -> float:
    x = [abs(logs[k]) for k in targets]
    return max(x) + 0.01 * sum(v * v for v in x)


class Model:
    """The dry-run model as a function of parameter values: targets by evaluation (cached)."""

    def __init__(self, chip, topo, pool=None, runs_over=FIT_RUNS):
        self.chip, self.topo, self.pool, self.runs_over = chip, topo, pool, runs_over
        self.cache, self.evaluations = {}, 0

    def targets(self, values: dict, full: bool = False) -> dict:
        key = (full, tuple(sorted(values.items())))
        if key not in self.cache:
            c, t = with_values(self.chip, self.topo, values)
            self.cache[key] = evaluate(c, t, pool=self.pool, **({} if full else self.runs_over))[0]
            self.evaluations += 1
        return self.cache[key]


def nelder_mead(obj, cur: dict, bounds: dict, iters: int, log=print) -> tuple[dict, float]:
    """Nelder-Mead on the bounds-normalized log parameters (clipped to [0, 1])."""
    keys = list(bounds)
    lo = [math.log(bounds[k][0]) for k in keys]
    hi = [math.log(bounds[k][1]) for k in keys]
    to_u = lambda v: [(math.log(v[k]) - lo[i]) / (hi[i] - lo[i]) for i, k in enumerate(keys)]   # noqa: E731
    to_v = lambda u: {k: float(f"{math.exp(lo[i] + min(max(u[i], 0.0), 1.0) * (hi[i] - lo[i])):.4g}")  # noqa: E731
                      for i, k in enumerate(keys)}

    def f(u):
        return obj(to_v(u))
    u0 = to_u(cur)
    simplex = [u0] + [[x + (0.15 if j == i else 0.0) for j, x in enumerate(u0)] for i in range(len(keys))]
    simplex = [[min(max(x, 0.0), 1.0) for x in u] for u in simplex]
    vals = [f(u) for u in simplex]
    t0 = time.perf_counter()
    for it in range(iters):
        order = sorted(range(len(simplex)), key=lambda i: vals[i])
        simplex, vals = [simplex[i] for i in order], [vals[i] for i in order]
        n = len(keys)
        cen = [sum(u[j] for u in simplex[:-1]) / n for j in range(n)]
        refl = [c + (c - w) for c, w in zip(cen, simplex[-1])]
        fr = f(refl)
        if fr < vals[0]:
            exp_ = [c + 2 * (c - w) for c, w in zip(cen, simplex[-1])]
            fe = f(exp_)
            simplex[-1], vals[-1] = (exp_, fe) if fe < fr else (refl, fr)
        elif fr < vals[-2]:
            simplex[-1], vals[-1] = refl, fr
        else:
            con = [c + 0.5 * (w - c) for c, w in zip(cen, simplex[-1])]
            fc = f(con)
            if fc < vals[-1]:
                simplex[-1], vals[-1] = con, fc
            else:
                simplex = [simplex[0]] + [[b + 0.5 * (x - b) for b, x in zip(simplex[0], u)] for u in simplex[1:]]
                vals = [vals[0]] + [f(u) for u in simplex[1:]]
        if it % 10 == 0:
            eta = (time.perf_counter() - t0) / (it + 1) * (iters - it - 1)
            log(f"nelder-mead {it + 1}/{iters}: objective {min(vals):.4f}, ETA {eta:.0f} s")
    i = min(range(len(vals)), key=lambda i: vals[i])
    return to_v(simplex[i]), vals[i]


def _sweeps(obj, cur, bounds, best, sweeps, steps, log):
    for sweep in range(sweeps):
        for k, (lo, hi, _) in bounds.items():
            a, b = math.log(lo), math.log(hi)
            cache = {}

            def f(x):
                if x not in cache:
                    cache[x] = obj(cur | {k: math.exp(x)})
                return cache[x]
            c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
            for _ in range(steps):
                if f(c) < f(d):
                    b, d = d, c
                    c = b - GOLDEN * (b - a)
                else:
                    a, c = c, d
                    d = a + GOLDEN * (b - a)
            x = min(cache, key=cache.get)
            if cache[x] < best:
                cur = cur | {k: float(f"{math.exp(x):.4g}")}
                best = obj(cur)
            log(f"sweep {sweep + 1}: {k} = {cur[k]:.4g}  objective {best:.4f}")
    return cur, best


def fit(model: Model, bounds: dict, start: dict, targets=None, sweeps: int = 1, steps: int = 8,
        nm_iters: int = 0, log=print, polish: bool = True) -> tuple[dict, float]:
    """Minimize the objective over `targets` (default all): coordinate descent (`sweeps`),
    then Nelder-Mead (`nm_iters`) and, with `polish`, one more sweep."""
    targets = targets or [t.id for t in TARGETS]

    def obj(values):
        return score(log_errors(model.targets(values)), targets)
    cur = dict(start)
    best = obj(cur)
    log(f"start: objective {best:.4f}")
    cur, best = _sweeps(obj, cur, bounds, best, sweeps, steps, log)
    if nm_iters:
        cur, best = nelder_mead(obj, cur, bounds, nm_iters, log)
        if polish:
            cur, best = _sweeps(obj, cur, bounds, best, 1, steps, log)
    return cur, best


def start_values(chip, topo, bounds: dict, preset: dict | None = None) -> dict:
    """The hw/topology files' values (or a preset's), clipped into the bounds."""
    cur = {}
    for k, (lo, hi, _) in bounds.items():
        v = float(preset[k]) if preset and k in preset else float(param_value(chip, topo, k))
        cur[k] = min(max(v, lo), hi)
    return cur


def at_bounds(values: dict, bounds: dict) -> dict:
    """{param: "low" | "high"} for the values within NEAR_BOUND of their range's ends."""
    out = {}
    for k, v in values.items():
        lo, hi, _ = bounds[k]
        u = (v - lo) / (hi - lo)
        if u <= NEAR_BOUND or u >= 1 - NEAR_BOUND:
            out[k] = "low" if u <= NEAR_BOUND else "high"
    return out


def validate(model: Model, bounds: dict, values: dict, assumed: list[str], loo_nm_iters: int = 20,
             log=print, targets=None) -> dict:
    """Leave-one-out errors (%): for each target, Nelder-Mead (`loo_nm_iters`) from the full
    fit's values on the other targets, then that target as predicted; parameters at a bound;
    sensitivities (d log T / d log p)."""
    ids = [t.id for t in TARGETS]
    fitted = targets or ids
    loo = {}
    for i, k in enumerate(fitted):
        others = [x for x in fitted if x != k]
        v, _ = fit(model, bounds, values, others, sweeps=0, nm_iters=loo_nm_iters, log=lambda *a: None,
                   polish=False)
        loo[k] = errors_pct(model.targets(v, full=True))[k]
        log(f"leave-one-out {i + 1}/{len(fitted)}: fitted without {k}, predicts it {loo[k]:+.1f}% off")
    base = model.targets(values)
    sens = {}
    for p in list(bounds) + list(assumed):
        v0 = float(values[p]) if p in values else float(param_value(model.chip, model.topo, p))
        moved = model.targets(values | {p: v0 * SENSITIVITY_STEP})
        sens[p] = {k: math.log(moved[k] / base[k]) / math.log(SENSITIVITY_STEP) for k in ids}
    log(f"sensitivities of {len(ids)} targets to {len(sens)} parameters")
    return {"loo_error_pct": loo, "at_bound": at_bounds(values, bounds), "sensitivity": sens}


def _toml_key(k: str) -> str:
    return f'"{k}"'


def write_preset(path, hw: str, topology: str, values: dict, table: dict, seconds: float, how: str = "",
                 bounds: dict | None = None, validation: dict | None = None, calibration: str = "",
                 structure: dict | None = None):
    from ..presets import BOUNDS
    bounds = bounds or BOUNDS
    lines = [f"# Written by `python -m mcu_emul calibrate{how}` on {datetime.date.today().isoformat()} "
             f"in {seconds:.0f} s: the fitted parameters",
             f"# of the hardware and link descriptions ({calibration or 'data/calibration'}), fitted to the paper",
             "# targets T1-T7 with the dry-run model (objective: largest |log error|, ties broken by the sum",
             "# of squares). Bounds and their sources in [bounds]; validation by prediction below.",
             f'hw = "{hw}"', f'topology = "{topology}"', ""]
    if structure:
        lines += ["# the structure: fixed values applied to the hw/topology files before the fitted ones",
                  "[structure]"] + [f"{_toml_key(k)} = {toml_text(v)}" for k, v in structure.items()] + [""]
    lines += ["[fitted]"]
    lines += [f'{_toml_key(k)} = {v!r}' for k, v in values.items()]
    lines += ["", "[bounds]"]
    lines += [f'{_toml_key(k)} = [{lo!r}, {hi!r}, {toml_text(why)}]' for k, (lo, hi, why) in bounds.items()
              if k in values]
    lines += ["", "# in-sample error of each target with this preset, % (full paper run settings)", "[error_pct]"]
    lines += [f"{k} = {v:.3f}" for k, v in table.items()]
    if validation:
        lines += ["", "# leave-one-out: fitted to the other six targets (from the values above), the error of",
                  "# this one as predicted, % (full paper run settings)", "[loo_error_pct]"]
        lines += [f"{k} = {v:.3f}" for k, v in validation["loo_error_pct"].items()]
        lines += ["", f"# fitted parameters within {100 * NEAR_BOUND:.0f}% of their range of a bound (none: empty)",
                  "[at_bound]"]
        lines += [f'{_toml_key(k)} = "{side}"' for k, side in validation["at_bound"].items()]
        lines += ["", "# d log(target) / d log(parameter), fitted and assumed parameters"]
        for p, row in validation["sensitivity"].items():
            lines += [f"[sensitivity.{_toml_key(p)}]"] + [f"{k} = {v:.3f}" for k, v in row.items()]
    write_bytes(path, ("\n".join(lines) + "\n").encode())


def calibrate_cmd(calibration: str | None, out: str | None, sweeps: int = 1, start: str | None = None,
                  nm_iters: int = 60, validation: bool = True, loo_nm_iters: int = 20,
                  sets: list[str] | None = None) -> int:
    from ..files.outputs import check_paths
    from ..config import table_path
    from ..tomltext import parse_sets
    from ..presets import CALIBRATION
    name = calibration or CALIBRATION
    cal = load_calibration(name)
    check_paths({"--out": out}, {"--calibration": table_path("calibration", name),
                                 "--calibration's hw": table_path("hw", cal["hw"]),
                                 "--calibration's topology": table_path("topology", cal["topology"]),
                                 "--start": table_path("presets", start) if start else None})
    bounds = cal["bounds"]
    ids = [t.id for t in TARGETS]
    bad = sorted(set(cal["targets"]) - set(ids))
    if bad:
        raise UserError(f"{cal['path']}: [targets] fitted names unknown target(s) {', '.join(bad)} "
                        f"(known: {', '.join(ids)})")
    structure = cal["structure"] | parse_sets(sets or [])
    clash = sorted(set(structure) & set(bounds))
    if clash:
        raise UserError(f"--set {clash[0]}: a fitted parameter of --calibration {name}; set only fixed ones")
    t0 = time.perf_counter()
    chip, topo = with_values(load_chip(cal["hw"]), load_topology(cal["topology"]), structure, "structure")
    cur = start_values(chip, topo, bounds, load_preset(start).get("fitted") if start else None)
    with dry_pool() as pool:
        model = Model(chip, topo, pool)
        values, _ = fit(model, bounds, cur, cal["targets"] or None, sweeps=sweeps, nm_iters=nm_iters)
        ours = model.targets(values, full=True)
        check = validate(model, bounds, values, cal["assumed"], loo_nm_iters, targets=cal["targets"] or None) \
            if validation else None
    err = errors_pct(ours)
    print(f"fitted {len(values)} parameters to {len(TARGETS)} targets ({model.evaluations} evaluations):")
    for k, v in values.items():
        lo, hi, _ = bounds[k]
        side = (check or {}).get("at_bound", {}).get(k)
        print(f"  {k:34s} {v:12.4g}   bounds [{lo:.3g}, {hi:.3g}]{'  AT ' + side.upper() + ' BOUND' if side else ''}")
    print("residual per target (full paper run settings):" + ("  in-sample / leave-one-out" if check else ""))
    pub = {t.id: t for t in TARGETS}
    for k, e in err.items():
        loo = f"  leave-one-out {check['loo_error_pct'][k]:+7.1f}%" if check else ""
        print(f"  {k}  ours {ours[k]:10.4g}  published {pub[k].published:8.4g} {pub[k].unit:3s}  error {e:+7.1f}%{loo}")
    if check:
        print("sensitivity d log(target) / d log(parameter):")
        print(f"  {'parameter':36s}" + "".join(f"{k:>7s}" for k in ids))
        for p, row in check["sensitivity"].items():
            print(f"  {p:36s}" + "".join(f"{row[k]:+7.2f}" for k in ids))
    path = Path(out) if out else PRESET_DIR / "siracusa-paper.toml"
    how = "" if (sweeps, start, nm_iters, validation, loo_nm_iters, sets) == (1, None, 60, True, 20, []) else (
        f" --sweeps {sweeps} --nm-iters {nm_iters}" + (f" --start {start}" if start else "")
        + ("" if validation else " --no-validation") + (f" --loo-nm-iters {loo_nm_iters}" if loo_nm_iters != 20 else "")
        + "".join(f" --set {s}" for s in sets or []))
    write_preset(path, cal["hw"], cal["topology"], values, err, time.perf_counter() - t0, how, bounds, check,
                 f"data/calibration/{name}.toml" if not name.endswith(".toml") else name, structure)
    print(f"wrote {path}")
    return 0
