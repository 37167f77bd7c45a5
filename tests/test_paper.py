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
    fitted = load_preset("siracusa-paper")["fitted"]
    assert len(fitted) <= 7                              # no more fitted parameters than targets
    for k, v in fitted.items():
        lo, hi, _ = BOUNDS[k]
        assert lo <= v <= hi, k
    chip, topo = load_chip(), load_topology()
    fitted_origin = {k for k, v in chip.origin.items() if v.startswith("fitted")}
    fitted_origin |= {f"link.{k}" for k, v in topo.origin.items() if v.startswith("fitted")}
    assert fitted_origin == set(fitted)                  # the data files say which are fitted


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
    write_preset(path, "siracusa", "siracusa-boards", vals, {f"T{i}": 1.5 for i in range(1, 8)}, 1.0)
    assert load_preset(str(path))["fitted"] == vals


def test_calibrate_command_writes_a_preset(tmp_path):
    out = tmp_path / "p.toml"
    p = run_cli(["calibrate", "--sweeps", "0", "--nm-iters", "0", "--out", out], timeout=300)
    assert p.returncode == 0, p.stderr
    assert "residual per target" in p.stdout and "T7" in p.stdout
    pre = load_preset(str(out))
    assert set(pre["fitted"]) == set(BOUNDS) and set(pre["error_pct"]) == {f"T{i}" for i in range(1, 8)}
    assert "--sweeps 0 --nm-iters 0" in out.read_text().splitlines()[0]


def test_readme_table_is_the_shipped_preset():
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    preset = tomllib.loads((PRESET_DIR / "siracusa-paper.toml").read_text())
    for tid, e in preset["error_pct"].items():
        m = re.search(rf"^\| {tid} \|.*\| ([+-]\d+\.\d)% \|$", readme, re.M)
        assert m, f"README has no row for {tid}"
        assert m.group(1) == f"{e:+.1f}", (tid, m.group(1), e)
