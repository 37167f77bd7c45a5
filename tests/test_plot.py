"""plot: PNGs from a paper table; clear errors for other files."""
import json

import pytest

from conftest import run_cli

PNG = b"\x89PNG\r\n\x1a\n"


def _table(tmp_path):
    curves = {m: [{"chips": n, "speedup": n * 1.1, "latency_ms": 1.0 / n, "energy_mj": 1.0, "placement": "stream",
                   "latency_ms_by_category": {c: 0.2 / n for c in ("compute", "onchip", "offchip", "link", "idle")},
                   "energy_mj_by_category": {c: 0.2 for c in ("compute", "onchip", "offchip", "link", "idle")}}
                  for n in (1, 2, 4)] for m in ("tinyllama-42m", "mobilebert")}
    p = tmp_path / "paper.json"
    p.write_text(json.dumps({"schema": "mcu_emul.paper/1", "curves": curves,
                             "published_points": {"tinyllama-42m": {"4": 5.0}}}))
    return p


def test_plot_writes_pngs(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (pip install -e '.[plot]')")
    out = tmp_path / "plots"
    p = run_cli(["plot", _table(tmp_path), "--out", out])
    assert p.returncode == 0, p.stderr
    for name in ("speedup.png", "energy.png", "latency.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000


def test_plot_rejects_other_json(tmp_path, tiny_weights):
    other = tmp_path / "r.json"
    other.write_text(json.dumps({"schema": "mcu_emul.trace/1"}))
    p = run_cli(["plot", other, "--out", tmp_path])
    assert p.returncode == 2 and "not a paper table" in p.stderr


def test_plot_run_report_and_sweep(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (pip install -e '.[plot]')")
    assert run_cli(["run", "--model", "tinyllama-tiny", "--chips", "4", "--dry-run", "--json", tmp_path / "r.json",
                    "--quiet"]).returncode == 0
    p = run_cli(["plot", tmp_path / "r.json", "--out", tmp_path / "a"])
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "a/run.png").read_bytes().startswith(PNG)
    s = run_cli(["sweep", "--model", "tinyllama-tiny", "--chips", "1,2,4", "--allreduce", "hierarchical,ring",
                 "--dry-run", "--quiet", "--out", tmp_path / "sw", "--run-args", "--gen-tokens 2"])
    assert s.returncode == 0, s.stderr
    for fmt, magic in (("svg", b"<?xml"), ("pdf", b"%PDF")):
        p = run_cli(["plot", tmp_path / "sw/sweep.json", "--out", tmp_path / "b", "--format", fmt, "--y", "energy_mj"])
        assert p.returncode == 0, p.stderr
        assert (tmp_path / f"b/sweep.{fmt}").read_bytes().startswith(magic)
    p = run_cli(["plot", tmp_path / "sw/sweep.json", "--out", tmp_path / "c", "--y", "colour"])
    assert p.returncode == 2 and "--y 'colour'" in p.stderr and not (tmp_path / "c").exists()
