"""The command line: runs, reports, and one-line errors with non-zero exits."""
import json
import os
import socket

import h5py
import numpy as np

from conftest import ROOT, run_cli


def one_line_error(p, *needles):
    assert p.returncode != 0, p.stdout
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("mcu_emul: error"), lines[0]
    for n in needles:
        assert n in lines[0], lines[0]


def test_run_json_and_logits(tiny_weights, tmp_path):
    js, npy = tmp_path / "r.json", tmp_path / "l.npy"
    p = run_cli(["run", "--model", "tinyllama-tiny", "--weights", tiny_weights["tinyllama-tiny"], "--chips", "3",
                 "--prompt-ids", "5,6,7", "--gen-tokens", "8", "--json", js, "--save-logits", npy, "--check-float"])
    assert p.returncode == 0, p.stderr
    assert "tinyllama-tiny decode on 3 chip(s)" in p.stdout
    r = json.loads(js.read_text())
    assert r["schema"] == "mcu_emul.report/1" and r["mode"] == "decode" and r["chips"] == 3
    assert len(r["token_ids"]) == 8 and len(r["output_sha256"]) == 64
    assert r["accuracy"]["logits_cosine_vs_float"] >= 0.99
    assert {"rank", "onchip_capacity_bytes", "onchip_used_bytes", "weight_bytes", "kv_cache_bytes",
            "weights_read_bytes", "offchip_bytes"} <= set(r["per_chip"][0])
    # where each chip ran: in-process chips share this process's node and host
    assert [(c["rank"], c["node"], c["host"]) for c in r["per_chip"]] == \
        [(i, os.environ.get("SLURMD_NODENAME"), socket.gethostname()) for i in range(3)]
    lg = np.load(npy)
    assert lg.shape == (8, 512) and lg.dtype == np.float32     # prefill row (last prompt position) + 7 steps


def test_encoder_run(tiny_weights, tmp_path):
    js = tmp_path / "m.json"
    p = run_cli(["run", "--model", "mobilebert-tiny", "--weights", tiny_weights["mobilebert-tiny"], "--seq-len", "20",
                 "--json", js, "--check-float", "--quiet"])
    assert p.returncode == 0, p.stderr
    r = json.loads(js.read_text())
    assert r["mode"] == "encode" and r["output_shape"] == [20, 64] and r["accuracy"]["hidden_cosine_vs_float"] > 0.99


def test_unknown_model():
    one_line_error(run_cli(["run", "--model", "gpt5"]), "unknown model 'gpt5'", "tinyllama-42m", "mobilebert")


def test_missing_weights(tmp_path):
    one_line_error(run_cli(["run", "--model", "tinyllama-tiny", "--weights", tmp_path / "no.h5"]),
                   "no.h5 does not exist")


def test_wrong_version_and_other_model_and_corrupt(tiny_weights, tmp_path):
    import shutil
    bad = tmp_path / "v9.h5"
    shutil.copy(tiny_weights["tinyllama-tiny"], bad)
    with h5py.File(bad, "a") as f:
        f.attrs["format_version"] = 9
    one_line_error(run_cli(["run", "--model", "tinyllama-tiny", "--weights", bad]), "format_version 9")
    one_line_error(run_cli(["run", "--model", "tinyllama-tiny", "--weights", tiny_weights["mobilebert-tiny"]]),
                   "holds model 'mobilebert-tiny', not 'tinyllama-tiny'")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not hdf5" * 100)
    one_line_error(run_cli(["run", "--model", "tinyllama-tiny", "--weights", junk]), "not a readable HDF5 file")
    trunc = tmp_path / "trunc.h5"
    data = open(tiny_weights["tinyllama-tiny"], "rb").read()
    trunc.write_bytes(data[: len(data) // 2])
    p = run_cli(["run", "--model", "tinyllama-tiny", "--weights", trunc])
    one_line_error(p, "trunc.h5")


def test_prompt_errors(tiny_weights):
    w = tiny_weights["tinyllama-tiny"]
    one_line_error(run_cli(["run", "--model", "tinyllama-tiny", "--weights", w, "--prompt-ids", "1,512"]),
                   "prompt id 512 is outside the vocabulary", "0..511")
    one_line_error(run_cli(["run", "--model", "tinyllama-tiny", "--weights", w, "--prompt-ids", "1,2",
                            "--gen-tokens", "200"]), "more than the context of 128")
    one_line_error(run_cli(["run", "--model", "tinyllama-tiny", "--weights", w, "--chips", "9"]),
                   "9 chips > 8 KV heads")
    one_line_error(run_cli(["run", "--model", "tinyllama-tiny", "--weights", w, "--placement", "stationary",
                            "--hw", str(ROOT / "tests/data/hw-small.toml"), "--preset", "none"]),
                   "smallest chip count that fits")


def test_weights_make_is_deterministic(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for out in (a, b):
        assert run_cli(["weights", "make", "--model", "tinyllama-tiny", "--seed", "5", "--out", out]).returncode == 0
    with h5py.File(a) as fa, h5py.File(b) as fb:
        assert np.array_equal(fa["t/layers.1.w2"][...], fb["t/layers.1.w2"][...])
        assert dict(fa["act_maxabs"].attrs) == dict(fb["act_maxabs"].attrs)
    assert not list(tmp_path.glob(".*tmp*"))


def test_unwritable_report_is_one_line(tiny_weights, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(run_cli(["run", "--model", "tinyllama-tiny", "--weights", tiny_weights["tinyllama-tiny"],
                            "--json", blocker / "r.json", "--quiet"]), "cannot write", "r.json")


def test_bench_prints_ratio(monkeypatch, tmp_path):
    monkeypatch.setenv("MCU_EMUL_CACHE", str(tmp_path))
    p = run_cli(["bench", "--model", "tinyllama-tiny", "--tokens", "6", "--chips", "2", "--no-dry"])
    assert p.returncode == 0, p.stderr
    assert "int8 path" in p.stdout and "float32 reference" in p.stdout and "ratio int8/float" in p.stdout
    for row in ("run, 1 chip (metered)", "run --chips 2", "mpiexec -n 2 run", "peak RSS", "metered 1 chip / int8 path",
                "mpiexec -n 2 / 1 chip"):
        assert row in p.stdout, row
    assert "dry runs" not in p.stdout


def test_report_provenance_and_version(tiny_weights, tmp_path):
    import hashlib
    js = tmp_path / "r.json"
    w = tiny_weights["tinyllama-tiny"]
    p = run_cli(["run", "--weights", w, "--chips", "2", "--gen-tokens", "2", "--set", "link.link_bytes_per_s=4e8",
                 "--preset", "none", "--json", js, "--quiet"])
    assert p.returncode == 0, p.stderr
    pv = json.loads(js.read_text())["provenance"]
    assert pv["invocation"].startswith("python -m mcu_emul run --weights") and pv["preset"] == "none"
    assert pv["fitted"] == {} and pv["overrides"] == {"link.link_bytes_per_s": 4e8}
    assert pv["weights"]["sha256"] == hashlib.sha256(open(w, "rb").read()).hexdigest()
    assert pv["weights"]["generated"] is False and pv["model_file"] is None
    hw = (ROOT / "data/hw/siracusa.toml").read_bytes()
    assert pv["hw_file"]["sha256"] == hashlib.sha256(hw).hexdigest()
    assert pv["versions"]["numpy"] and pv["mcu_emul_version"]
    v = run_cli(["--version"])
    assert v.returncode == 0 and v.stdout.strip() == f"mcu_emul {pv['mcu_emul_version']}"


def test_config_file_and_command_line_wins(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('model = "tinyllama-tiny"\nchips = 4\ngen_tokens = 3\ndry_run = true\nquiet = true\n'
                   'prompt_ids = [5, 6]\n[set]\n"link.link_bytes_per_s" = 4e8\n')
    p = run_cli(["run", "--config", cfg, "--chips", "2", "--json", tmp_path / "r.json"])
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["chips"] == 2 and len(r["token_ids"]) == 3 and r["input_ids"][:2] == [5, 6]
    assert r["provenance"]["overrides"] == {"link.link_bytes_per_s": 4e8} and r["dry_run"]
