"""Chrome trace: valid JSON, one track per chip, slices that add up, a flow per message."""
import json

from conftest import run_cli


def test_trace_known_schedule(tiny_weights, tmp_path):
    tr, js = tmp_path / "t.json", tmp_path / "r.json"
    steps, chips, layers = 2, 4, 2          # tinyllama-tiny has 2 layers
    p = run_cli(["run", "--model", "tinyllama-tiny", "--weights", tiny_weights["tinyllama-tiny"], "--chips", chips,
                 "--gen-tokens", steps, "--trace", tr, "--json", js, "--quiet"])
    assert p.returncode == 0, p.stderr
    ev = json.loads(tr.read_text())["traceEvents"]
    rep = json.loads(js.read_text())
    names = {e["pid"]: e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {r: f"chip {r}" for r in range(chips)}
    s = {e["id"]: e for e in ev if e["ph"] == "s"}
    f = {e["id"]: e for e in ev if e["ph"] == "f"}
    assert set(s) == set(f)
    assert all(f[i]["ts"] >= s[i]["ts"] for i in s)
    # hierarchical, one group of 4: 3 messages up and 3 down per all-reduce;
    # all-reduces per step: embedding + 2 per layer + argmax
    assert len(s) == 6 * (1 + 2 * layers + 1) * steps == sum(c["messages_sent"] for c in rep["per_chip"])
    for r in range(chips):
        mine = [e for e in ev if e["ph"] == "X" and e["pid"] == r]
        spans = [e for e in mine if e["cat"] == "span"]
        assert sum(e["name"].startswith("layer ") for e in spans) == layers * steps
        assert sum(e["name"].startswith("all-reduce") for e in spans) == (2 + 2 * layers) * steps
        leaf = [e for e in mine if e["cat"] in ("compute", "onchip", "offchip", "link", "idle")]
        assert sum(e["args"]["cycles"] for e in leaf) == rep["per_chip"][r]["cycles"]
        assert any(e["name"].startswith("wait") for e in leaf) or r == 0
