"""The paper table: dry-run command, shipped preset consistent with the model, preset checks."""
import json
import tomllib

import pytest

from conftest import run_cli
from mcu_emul.commands.calibrate import write_preset
from mcu_emul.presets import BOUNDS, PRESET_DIR, load_preset
from mcu_emul.config import load_chip, load_topology
from mcu_emul.errors import UserError


def test_paper_dry_run_table_matches_shipped_preset(tmp_path):
    out = tmp_path / "paper.json"
    p = run_cli(["paper", "--dry-run", "--json", out], timeout=300)
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert [t["id"] for t in doc["targets"]] == [f"T{i}" for i in range(1, 8)]
    preset = tomllib.loads((PRESET_DIR / "siracusa-paper.toml").read_text())
    for t in doc["targets"]:
        # the shipped preset is calibrate's output for the current model: same residuals
        assert t["error_pct"] == pytest.approx(preset["error_pct"][t["id"]], abs=0.01), t["id"]
    curve = {c["chips"]: c for c in doc["curves"]["tinyllama-42m"]}
    assert curve[8]["placement"] == "stationary" and curve[1]["placement"] == "stream"
    assert curve[8]["speedup"] > 8                       # super-linear
    assert "T1" in p.stdout and "published" in p.stdout


def test_preset_values_within_bounds_and_counted():
    preset = load_preset("siracusa-paper")
    fitted = preset["fitted"]
    assert len(fitted) <= 5                              # fewer fitted parameters than targets
    for k, v in fitted.items():
        lo, hi, why = BOUNDS[k]
        assert lo <= v <= hi, k
        assert len(why) > 40, k                          # each bound has its source
    from mcu_emul.commands.calibrate import at_bounds
    assert preset.get("at_bound", {}) == at_bounds(fitted, BOUNDS)   # the preset says which sit at a bound
    chip, topo = load_chip(), load_topology()
    label = lambda v: v.split(":")[0]                    # noqa: E731 - "public", "typical, fitted", ...
    fitted_origin = {k for k, v in chip.origin.items() if "fitted" in label(v)}
    fitted_origin |= {f"link.{k}" for k, v in topo.origin.items() if "fitted" in label(v)}
    assert fitted_origin == set(fitted)                  # the data files say which are fitted


def test_preset_is_validated_by_prediction():
    preset = load_preset("siracusa-paper")
    ids = {f"T{i}" for i in range(1, 8)}
    assert set(preset["loo_error_pct"]) == ids
    sens = preset["sensitivity"]
    assert set(BOUNDS) <= set(sens)                      # every fitted parameter
    from mcu_emul.presets import load_calibration
    assert set(load_calibration()["assumed"]) <= set(sens)   # and every influential assumed one
    assert all(set(row) == ids for row in sens.values())
    assert -1.0 <= sens["compute.freq_hz"]["T1"] < 0   # a faster clock: a faster token, at most proportionally


def test_bad_preset_is_clear(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text('hw = "siracusa"\ntopology = "siracusa-boards"\n[fitted]\n"compute.turbo" = 1.0\n')
    with pytest.raises(UserError, match="unknown parameter.*compute.turbo"):
        load_preset(str(bad))
    with pytest.raises(UserError, match="unknown preset 'nope'"):
        load_preset("nope")


def test_write_preset_roundtrip(tmp_path):
    vals = {k: lo for k, (lo, hi, _) in BOUNDS.items()}
    path = tmp_path / "x.toml"
    ids = [f"T{i}" for i in range(1, 8)]
    check = {"loo_error_pct": {k: -2.5 for k in ids}, "at_bound": {"compute.freq_hz": "low"},
             "sensitivity": {"power.idle_w": {k: 0.25 for k in ids}}}
    write_preset(path, "siracusa", "siracusa-boards", vals, {k: 1.5 for k in ids}, 1.0, validation=check,
                 structure={"link.group_sizes": [8]})
    pre = load_preset(str(path))
    assert pre["fitted"] == vals and pre["structure"] == {"link.group_sizes": [8]}
    assert {k: pre[k] for k in check} == check


def test_calibrate_command_writes_a_preset(tmp_path):
    out = tmp_path / "p.toml"
    p = run_cli(["calibrate", "--sweeps", "0", "--nm-iters", "0", "--no-validation", "--out", out], timeout=300)
    assert p.returncode == 0, p.stderr
    assert "residual per target" in p.stdout and "T7" in p.stdout
    pre = load_preset(str(out))
    assert set(pre["fitted"]) == set(BOUNDS) and set(pre["error_pct"]) == {f"T{i}" for i in range(1, 8)}
    assert "--sweeps 0 --nm-iters 0 --no-validation" in out.read_text().splitlines()[0]


class FakeModel:
    """Targets as power laws of the parameters (exponents A), exact at TRUE: what validate()
    must recover (sensitivities = exponents, leave-one-out errors 0 from the true values)."""
    TRUE = {"a.x": 2.0, "a.y": 10.0}
    A = {"a.x": [1.0, -1.0, 0.5, 0.0, 2.0, 1.0, -0.5], "a.y": [0.0, 1.0, 1.0, -2.0, 0.0, 0.5, 1.0]}

    def __init__(self):
        from mcu_emul.commands.paper import TARGETS
        self.ids, self.pub = [t.id for t in TARGETS], [t.published for t in TARGETS]

    def targets(self, values, full=False):
        import math
        out = {}
        for i, k in enumerate(self.ids):
            out[k] = self.pub[i] * math.prod((values[p] / self.TRUE[p]) ** self.A[p][i] for p in self.TRUE)
        return out


def test_validate_recovers_a_known_model():
    from mcu_emul.commands.calibrate import at_bounds, fit, validate
    m = FakeModel()
    bounds = {"a.x": (1.0, 4.0, "s"), "a.y": (1.0, 100.0, "s")}
    v = validate(m, bounds, dict(FakeModel.TRUE), [], loo_nm_iters=5, log=lambda *a: None)
    assert all(abs(e) < 1e-9 for e in v["loo_error_pct"].values())
    for p, row in v["sensitivity"].items():
        assert [round(row[k], 6) for k in m.ids] == FakeModel.A[p]
    assert v["at_bound"] == {}
    assert at_bounds({"a.x": 1.05, "a.y": 99.0}, bounds) == {"a.x": "low", "a.y": "high"}
    # a fit from elsewhere finds the true values (an exactly consistent model)
    got, best = fit(m, bounds, {"a.x": 3.0, "a.y": 30.0}, sweeps=2, nm_iters=60, log=lambda *a: None)
    assert best < 0.01 and abs(got["a.x"] / 2.0 - 1) < 0.01


def test_readme_table_is_the_shipped_preset():
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    preset = tomllib.loads((PRESET_DIR / "siracusa-paper.toml").read_text())
    for tid, e in preset["error_pct"].items():
        m = re.search(rf"^\| {tid} \|.*\| ([+-]\d+\.\d)% \| ([+-]\d+\.\d)% \|$", readme, re.M)
        assert m, f"README has no row for {tid}"
        assert m.group(1) == f"{e:+.1f}", (tid, m.group(1), e)
        assert m.group(2) == f"{preset['loo_error_pct'][tid]:+.1f}", (tid, m.group(2))
