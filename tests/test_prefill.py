"""Prefill (the prompt in one pass) against the token-by-token path: the same integers, fewer cycles."""
import json

import numpy as np
import pytest

from mcu_emul.chip import RunSpec, run_chip
from mcu_emul.comm.virtual import run_virtual
from mcu_emul.config import load_chip, load_topology
from mcu_emul.models import llama
from conftest import run_cli

SIRACUSA = load_chip()
PROMPT = [3, 17, 99, 5, 250, 42, 7]


def run(weights, model, n, **kw):
    spec = RunSpec(model=model, weights=weights, chip=SIRACUSA, topology=load_topology(), **kw)
    return run_virtual(n, lambda t: run_chip(spec, t))[0]


@pytest.mark.parametrize("model,counts", [("tinyllama-tiny", (1, 2, 3, 8)), ("tinyllama-tiny-gqa", (1, 2, 4))])
def test_prefill_logits_bit_identical_to_token_path(tiny_weights, model, counts):
    kw = dict(prompt_ids=PROMPT, gen_tokens=5)
    ref = run(tiny_weights[model], model, 1, prefill="token", **kw)
    P = len(PROMPT)
    assert ref["output"].shape[0] == P + 4 and ref["output_first_position"] == 0
    for n in counts:
        for alg in ("hierarchical", "ring", "flat"):
            r = run(tiny_weights[model], model, n, allreduce=alg, prefill="parallel", **kw)
            # one row for the prompt (its last position), then one per decode step
            assert r["output_first_position"] == P - 1 and r["output"].shape[0] == 5
            assert np.array_equal(r["output"], ref["output"][P - 1:]), (n, alg)
            assert r["token_ids"] == ref["token_ids"]


def test_kv_cache_after_prefill_equals_token_path(tiny_weights, monkeypatch):
    """The cache rows 0..P-1 written by one pass equal those of P single steps, on every chip."""
    caches = {}

    class Recording(llama.LlamaChip):
        def prefill(self, ids, fail=lambda phase: None):
            out = super().prefill(ids, fail)
            caches.setdefault("parallel", {})[self.sl.heads] = self.kv[:, :, :len(ids)].copy()
            return out

        def step(self, token, pos, fail=lambda phase: None):
            out = super().step(token, pos, fail)
            if pos == len(PROMPT) - 1 and not caches.get("in_parallel"):
                caches.setdefault("token", {})[self.sl.heads] = self.kv[:, :, :pos + 1].copy()
            return out
    monkeypatch.setattr(llama, "LlamaChip", Recording)
    m = "tinyllama-tiny"
    for n in (1, 4):
        caches.clear()
        run(tiny_weights[m], m, n, prompt_ids=PROMPT, gen_tokens=1, prefill="token")
        caches["in_parallel"] = True
        run(tiny_weights[m], m, n, prompt_ids=PROMPT, gen_tokens=1, prefill="parallel")
        assert sorted(caches["token"]) == sorted(caches["parallel"]) and len(caches["token"]) == n
        for heads, kv in caches["token"].items():
            assert kv.any() and np.array_equal(kv, caches["parallel"][heads]), (n, heads)


def test_prefill_costs(tiny_weights):
    """One pass over the prompt costs less than its tokens one by one (GEMMs, fewer kernel
    calls and all-reduces), and a one-token prompt costs exactly one step either way; decode
    steps are the same in both modes."""
    m = "tinyllama-tiny"
    kw = dict(prompt_ids=PROMPT, gen_tokens=4, dry_run=True)
    par, tok = run("", m, 4, prefill="parallel", **kw), run("", m, 4, prefill="token", **kw)
    sec = lambda r, name: max(c["sections"][name]["cycles"] for c in r["chips"])   # noqa: E731
    assert sec(par, "prefill") < 0.6 * sec(tok, "prefill")
    assert sec(par, "decode") == sec(tok, "decode")
    assert sum(c["messages_sent"] for c in par["chips"]) < sum(c["messages_sent"] for c in tok["chips"])
    one = dict(prompt_ids=[9], gen_tokens=3, dry_run=True)
    a, b = run("", m, 2, prefill="parallel", **one), run("", m, 2, prefill="token", **one)
    assert [c["sections"] for c in a["chips"]] == [c["sections"] for c in b["chips"]]


def test_report_gives_prefill_apart_from_decode(tiny_weights, tmp_path):
    js = tmp_path / "r.json"
    p = run_cli(["run", "--model", "tinyllama-tiny", "--weights", tiny_weights["tinyllama-tiny"], "--chips", "2",
                 "--prompt-ids", ",".join(map(str, PROMPT)), "--gen-tokens", "4", "--json", js, "--check-float"])
    assert p.returncode == 0, p.stderr
    assert "prefill (parallel) of 7 prompt token(s), time to first token" in p.stdout
    r = json.loads(js.read_text())
    assert r["figures_per"] == "token" and r["decode_tokens"] == 3
    pf = r["prefill"]
    assert pf["mode"] == "parallel" and pf["tokens"] == 7
    # the prefill pass of 7 tokens takes longer than one decode step, far less than 7
    assert r["latency_ms"] < pf["latency_ms"] < 7 * r["latency_ms"]
    assert 0 < pf["blocks"]["latency_ms"] < pf["latency_ms"]
    assert r["output_shape"] == [4, 512] and r["output_first_position"] == 6
    assert r["accuracy"]["steps"] == 4 and r["accuracy"]["logits_cosine_vs_float"] > 0.9
    # nothing decoded after the first token: the figures are the prefill's
    p = run_cli(["run", "--model", "tinyllama-tiny", "--dry-run", "--prompt-ids", "1,2", "--gen-tokens", "1",
                 "--json", "-", "--quiet"])
    r = json.loads(p.stdout)
    assert r["figures_per"] == "prefill" and r["latency_ms"] == r["prefill"]["latency_ms"]


@pytest.mark.parametrize("args,words", [
    (["--model", "mobilebert-tiny", "--prefill", "token"], ["--prefill token is for decoders"]),
    (["--model", "tinyllama-tiny", "--prefill", "chunked"], ["--prefill", "'chunked'"]),
])
def test_prefill_option_errors(args, words):
    p = run_cli(["run", "--dry-run", *args])
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("mcu_emul: error:"), p.stderr
    assert all(w in lines[0] for w in words), lines[0]
