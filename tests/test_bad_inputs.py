"""Bad input of every kind: one line `mcu_emul: error: ...` naming the thing, exit 2, no
traceback, no file damaged, no temp file left; the MPI cases under real mpiexec.

Each case is (id, command line, words the message must contain). Placeholders in braces are
files made by the `bad` fixture below (broken weights, TOMLs, checkpoints)."""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from checkpoints import hf_llama_folder, safetensors_bytes
import forked_cli
from conftest import cleanup_mpich, env, mpiexec_path

DATA = Path(__file__).resolve().parent.parent / "data"
TINY = ["--model", "tinyllama-tiny"]
DRY = [*TINY, "--dry-run", "--quiet"]

CASES = [
    # --- command-line values -------------------------------------------------------------
    ("chips-0", ["run", *DRY, "--chips", "0"], ["--chips", "0"]),
    ("chips-negative", ["run", *DRY, "--chips", "-1"], ["--chips", "-1"]),
    ("chips-text", ["run", *DRY, "--chips", "abc"], ["--chips", "'abc'"]),
    ("chips-3000", ["run", *DRY, "--chips", "3000"], ["3000 chips", "8 KV heads"]),
    ("chips-over-heads", ["run", *DRY, "--chips", "9"], ["9 chips", "8 KV heads"]),
    ("chips-huge", ["run", *DRY, "--chips", str(10**9)], ["--chips"]),
    ("seed-negative", ["run", *TINY, "--seed", "-1"], ["--seed", "-1"]),
    ("seed-2^70", ["run", *TINY, "--seed", str(2**70)], ["--seed", str(2**70)]),
    ("gen-tokens-0", ["run", *DRY, "--gen-tokens", "0"], ["--gen-tokens", "0"]),
    ("gen-tokens-text", ["run", *DRY, "--gen-tokens", "x"], ["--gen-tokens", "'x'"]),
    ("gen-tokens-past-context", ["run", *DRY, "--gen-tokens", "200", "--prompt-ids", "1"],
     ["needs 200 positions", "context of 128"]),
    ("prompt-512+2-positions", ["run", *DRY, "--gen-tokens", "2", "--prompt-ids", ",".join(["1"] * 128)],
     ["needs 129 positions"]),
    ("prompt-ids-text", ["run", *DRY, "--prompt-ids", "1,x"], ["--prompt-ids", "'1,x'"]),
    ("prompt-ids-empty", ["run", *DRY, "--prompt-ids", ""], ["--prompt-ids is empty"]),
    ("prompt-id-out-of-vocab", ["run", *DRY, "--prompt-ids", "1,512"], ["prompt id 512", "0..511"]),
    ("prompt-id-negative", ["run", *DRY, "--prompt-ids=-1"], ["prompt id -1"]),
    ("prompt-and-ids", ["run", *DRY, "--prompt", "hi", "--prompt-ids", "1"], ["--prompt or --prompt-ids"]),
    ("seq-len-for-decoder", ["run", *DRY, "--seq-len", "4"], ["--seq-len is for encoders"]),
    ("gen-tokens-for-encoder", ["run", "--model", "mobilebert-tiny", "--dry-run", "--gen-tokens", "4"],
     ["--gen-tokens is for decoders"]),
    ("seq-len-0", ["run", "--model", "mobilebert-tiny", "--dry-run", "--seq-len", "0"], ["--seq-len", "0"]),
    ("seq-len-past-positions", ["run", "--model", "mobilebert-tiny", "--dry-run", "--seq-len", "5000"],
     ["--seq-len 5000", "max positions"]),
    ("encoder-ids-vs-seq-len", ["run", "--model", "mobilebert-tiny", "--dry-run", "--prompt-ids", "1,2",
                                "--seq-len", "8"], ["2 input ids", "--seq-len 8"]),
    ("placement-bogus", ["run", *DRY, "--placement", "nowhere"], ["--placement", "'nowhere'"]),
    ("allreduce-bogus", ["run", *DRY, "--allreduce", "tree"], ["--allreduce", "'tree'"]),
    ("payload-bogus", ["run", *DRY, "--payload", "int4"], ["--payload", "'int4'"]),
    ("payload-int8-encoder", ["run", "--model", "mobilebert-tiny", "--dry-run", "--payload", "int8"],
     ["--payload int8"]),
    ("fail-at-bogus", ["run", *DRY, "--fail-at", "lunch"], ["--fail-at 'lunch'"]),
    ("unknown-option", ["run", *DRY, "--chip", "2"], ["unrecognized arguments", "--chip"]),
    ("unknown-command", ["fly"], ["invalid choice", "'fly'"]),
    ("unknown-model", ["run", "--model", "gpt5"], ["unknown model 'gpt5'", "tinyllama-42m"]),
    ("dry-run-check-float", ["run", *DRY, "--check-float"], ["--check-float", "--dry-run"]),
    ("check-float-no-float", ["run", *TINY, "--weights", "{w_nofloat}", "--check-float", "--quiet"],
     ["w_nofloat.h5", "no float reference weights", "weights make --model tinyllama-tiny"]),
    ("unknown-hw", ["run", *DRY, "--hw", "cortex-m4"], ["unknown hw description 'cortex-m4'"]),
    ("unknown-topology", ["run", *DRY, "--topology", "torus"], ["unknown topology description 'torus'"]),
    ("unknown-preset", ["run", *DRY, "--preset", "fast"], ["unknown preset 'fast'"]),
    # --- --set ---------------------------------------------------------------------------
    ("set-text", ["run", *DRY, "--set", "compute.freq_hz=abc"], ["compute.freq_hz", "'abc'"]),
    ("set-nan", ["run", *DRY, "--set", "compute.freq_hz=nan"], ["compute.freq_hz", "finite", "nan"]),
    ("set-inf-l3", ["run", *DRY, "--set", "offchip.l3_bytes_per_s=inf"], ["l3_bytes_per_s", "inf"]),
    ("set-zero-rate", ["run", *DRY, "--set", "compute.engine_gemv_macs_per_cycle=0"],
     ["engine_gemv_macs_per_cycle", ">= 0.001"]),
    ("set-zero-dma", ["run", *DRY, "--set", "dma.l2_l1_bytes_per_cycle=0"], ["l2_l1_bytes_per_cycle"]),
    ("set-negative-latency", ["run", *DRY, "--set", "link.link_latency_s=-1"], ["link_latency_s", ">= 0"]),
    ("set-nan-power", ["run", *DRY, "--set", "power.idle_w=nan"], ["idle_w", "nan"]),
    ("set-bool-as-text", ["run", *DRY, "--set", 'offchip.l3_overlaps_compute="no"'],
     ["l3_overlaps_compute", "true or false", "'no'"]),
    ("set-fractional-bytes", ["run", *DRY, "--set", "memory.l2_bytes=1.5"], ["l2_bytes", "integer"]),
    ("set-unknown-section", ["run", *DRY, "--set", "gpu.cores=4"], ["unknown section 'gpu'"]),
    ("set-unknown-key", ["run", *DRY, "--set", "compute.cores=4"], ["unknown key 'cores'"]),
    ("set-no-equals", ["run", *DRY, "--set", "compute.freq_hz"], ["SECTION.KEY=VALUE"]),
    ("set-link-ports", ["run", *DRY, "--set", 'link.link_ports="bus"'], ["link_ports", "'bus'"]),
    # --- data files (TOML) ---------------------------------------------------------------
    ("model-garbage-toml", ["run", "--model", "{model_garbage}", "--dry-run"], ["model_garbage.toml", "not valid TOML"]),
    ("model-binary-toml", ["run", "--model", "{model_binary}", "--dry-run"], ["model_binary.toml", "not valid TOML"]),
    ("model-dim-string", ["run", "--model", "{model_dim_string}", "--dry-run"], ["dim must be an integer", "'64'"]),
    ("model-bool-string", ["run", "--model", "{model_bool_string}", "--dry-run"],
     ["tie_embeddings must be true or false", "'no'"]),
    ("model-rope-nan", ["run", "--model", "{model_rope_nan}", "--dry-run"], ["rope_theta", "nan"]),
    ("model-norm-eps-negative", ["run", "--model", "{model_eps_neg}", "--dry-run"], ["norm_eps", "-1"]),
    ("model-100k-layers", ["run", "--model", "{model_layers}", "--dry-run"], ["n_layers must be <= 1024", "100000"]),
    ("model-huge-vocab", ["run", "--model", "{model_vocab}", "--dry-run"], ["vocab_size must be <="]),
    ("model-zero-dim", ["run", "--model", "{model_zero}", "--dry-run"], ["dim must be >= 2", "0"]),
    ("model-unknown-key", ["run", "--model", "{model_unknown}", "--dry-run"], ["unknown key(s) colour"]),
    ("model-missing-key", ["run", "--model", "{model_missing}", "--dry-run"], ["missing key(s) vocab_size"]),
    ("model-arch", ["run", "--model", "{model_arch}", "--dry-run"], ["arch must be one of", "'gpt'"]),
    ("hw-freq-nan", ["run", *DRY, "--hw", "{hw_freq_nan}"], ["hw_freq_nan.toml", "freq_hz", "nan"]),
    ("hw-power-string", ["run", *DRY, "--hw", "{hw_power_string}"], ["cluster_active_w must be a number"]),
    ("hw-l3-inf", ["run", *DRY, "--hw", "{hw_l3_inf}"], ["l3_bytes_per_s", "inf"]),
    ("hw-bool-string", ["run", *DRY, "--hw", "{hw_bool_string}"], ["l3_overlaps_compute must be true or false"]),
    ("hw-l2-zero", ["run", *DRY, "--hw", "{hw_l2_zero}"], ["l2_bytes must be > 0"]),
    ("hw-missing-section", ["run", *DRY, "--hw", "{hw_missing}"], ["missing section(s) [energy]"]),
    ("topology-latency-negative", ["run", *DRY, "--topology", "{topo_latency}"], ["link_latency_s must be >= 0"]),
    ("topology-group-1", ["run", *DRY, "--topology", "{topo_group}"], ["group_sizes", "[1]"]),
    ("topology-group-string", ["run", *DRY, "--topology", "{topo_group_str}"], ["group_sizes must be a list"]),
    ("topology-ports", ["run", *DRY, "--topology", "{topo_ports}"], ["link_ports must be one of"]),
    ("topology-zero-bandwidth", ["run", *DRY, "--topology", "{topo_bw}"], ["link_bytes_per_s must be >= 1000"]),
    ("preset-unknown-param", ["run", *DRY, "--preset", "{preset_unknown}"], ["unknown parameter(s) compute.cores"]),
    ("preset-text-value", ["run", *DRY, "--preset", "{preset_text}"], ["preset_text.toml [fitted]", "'fast'"]),
    # --- weights files -------------------------------------------------------------------
    ("weights-missing", ["run", "--weights", "{dir}/none.h5"], ["none.h5 does not exist"]),
    ("weights-is-folder", ["run", "--weights", "{dir}"], ["is not a regular file"]),
    ("weights-junk", ["run", "--weights", "{w_junk}"], ["not a readable HDF5 file"]),
    ("weights-wrong-dtype", ["run", "--weights", "{w_dtype}"], ["t/layers.0.wq", "int16", "int8"]),
    ("weights-wrong-shape", ["run", "--weights", "{w_shape}"], ["t/layers.0.wq", "[32, 64]", "[64, 64]"]),
    ("weights-small-vocab", ["run", "--weights", "{w_vocab}"], ["t/tok_embedding", "[256, 64]", "[512, 64]"]),
    ("weights-nan-scale", ["run", "--weights", "{w_nan_scale}"], ["t/layers.0.wq.scale", "nan", "scales must be from"]),
    ("weights-inf-scale", ["run", "--weights", "{w_inf_scale}"], ["t/layers.0.wq.scale", "inf"]),
    ("weights-zero-scale", ["run", "--weights", "{w_zero_scale}"], ["t/layers.0.wq.scale", "0.0"]),
    ("weights-negative-scale", ["run", "--weights", "{w_neg_scale}"], ["t/layers.0.wq.scale", "-"]),
    ("weights-nan-norm", ["run", "--weights", "{w_nan_norm}"], ["t/layers.0.attn_norm", "nan", "finite"]),
    ("weights-nan-calibration", ["run", "--weights", "{w_nan_calib}"], ["act_maxabs res", "nan"]),
    ("weights-missing-calibration", ["run", "--weights", "{w_no_calib}"], ["act_maxabs has no entry", "'res'"]),
    ("weights-version-string", ["run", "--weights", "{w_version}"], ["format_version 'abc'"]),
    ("weights-config-not-json", ["run", "--weights", "{w_config}"], ["bad config attribute"]),
    ("weights-config-string-field", ["run", "--weights", "{w_config_field}"], ["n_layers must be an integer"]),
    ("weights-missing-dataset", ["run", "--weights", "{w_no_dataset}"], ["missing dataset 't/layers.1.w2'"]),
    ("weights-external-link", ["run", "--weights", "{w_extlink}"], ["external link"]),
    ("weights-external-storage", ["run", "--weights", "{w_extstore}"], ["external file"]),
    ("weights-virtual-dataset", ["run", "--weights", "{w_virtual}"], ["virtual dataset"]),
    ("weights-other-model", ["run", "--model", "tinyllama-tiny-gqa", "--weights", "{w_good}"],
     ["holds model 'tinyllama-tiny', not 'tinyllama-tiny-gqa'"]),
    ("weights-other-shape-same-name", ["run", "--model", "{model_same_name}", "--weights", "{w_good}"],
     ["holds another 'tinyllama-tiny'", "n_layers"]),
    ("weights-truncated", ["run", "--weights", "{w_trunc}"], ["w_trunc.h5"]),
    # --- outputs -------------------------------------------------------------------------
    ("json-is-weights", ["run", "--weights", "{w_victim}", "--json", "{w_victim}", "--quiet"],
     ["--json", "is also the input --weights"]),
    ("json-is-trace", ["run", *DRY, "--json", "{dir}/x.json", "--trace", "{dir}/x.json"],
     ["--json and --trace name the same file"]),
    ("json-is-logits", ["run", "--weights", "{w_good}", "--json", "{dir}/y", "--save-logits", "{dir}/y"],
     ["--json and --save-logits name the same file"]),
    ("json-is-model-toml", ["run", "--model", "{model_victim}", "--dry-run", "--json", "{model_victim}"],
     ["is also the input --model"]),
    ("json-symlink", ["run", *DRY, "--json", "{json_link}"], ["is a symbolic link"]),
    ("json-fifo", ["run", *DRY, "--json", "{fifo}"], ["not a regular file", "FIFO"]),
    ("json-folder", ["run", *DRY, "--json", "{dir}"], ["is a directory"]),
    ("json-dev-stdout", ["run", *DRY, "--json", "/dev/stdout"], ["/dev/stdout", "symbolic link"]),
    ("json-under-a-file", ["run", *DRY, "--json", "{w_victim}/r.json"], ["cannot write"]),
    ("two-outputs-to-stdout", ["run", *DRY, "--json", "-", "--trace", "-"], ["both write to standard output"]),
    ("weights-out-is-model", ["weights", "make", "--model", "{model_victim}", "--out", "{model_victim}"],
     ["--out", "is also the input --model"]),
    ("convert-out-is-source", ["convert", "--from", "llama2c", "{l2c_victim}", "--out", "{l2c_victim}"],
     ["--out", "is also the input --from"]),
    # --- other commands ------------------------------------------------------------------
    ("bench-tokens-0", ["bench", "--tokens", "0"], ["--tokens", "0"]),
    ("bench-encoder", ["bench", "--model", "mobilebert-tiny"], ["not a Llama model"]),
    ("weights-make-unknown", ["weights", "make", "--model", "nope", "--out", "{dir}/n.h5"], ["unknown model 'nope'"]),
    ("weights-no-subcommand", ["weights"], ["weights make"]),
    ("calibrate-sweeps-negative", ["calibrate", "--sweeps", "-1"], ["--sweeps", "-1"]),
    ("paper-unknown-preset", ["paper", "--dry-run", "--preset", "nope", "--json", "{dir}/p.json"],
     ["unknown preset 'nope'"]),
    ("sweep-chips-0", ["sweep", "--model", "tinyllama-tiny", "--chips", "0", "--dry-run", "--out", "{dir}/sw"],
     ["--chips 0"]),
    ("sweep-chips-text", ["sweep", "--model", "tinyllama-tiny", "--chips", "1,x", "--dry-run"], ["--chips", "'1,x'"]),
    ("sweep-chips-over-heads", ["sweep", "--model", "tinyllama-tiny", "--chips", "1,16", "--dry-run"],
     ["16 chips > 8 KV heads"]),
    ("sweep-allreduce-bogus", ["sweep", "--model", "tinyllama-tiny", "--allreduce", "tree", "--dry-run"],
     ["--allreduce 'tree'"]),
    ("sweep-set-value", ["sweep", "--model", "tinyllama-tiny", "--chips", "1", "--set", "compute.freq_hz=1e8,abc",
                         "--dry-run"], ["compute.freq_hz", "'abc'"]),
    ("sweep-run-args-quote", ["sweep", "--model", "tinyllama-tiny", "--run-args", '"open', "--dry-run"],
     ["--run-args"]),
    ("sweep-run-args-bad-run", ["sweep", "--model", "tinyllama-tiny", "--chips", "2", "--dry-run",
                                "--run-args", "--prompt-ids 9999", "--out", "{dir}/sw2"], ["prompt id 9999"]),
    ("plot-missing", ["plot", "{dir}/none.json"], ["cannot read results"]),
    ("plot-not-paper", ["plot", "{not_paper}"], ["not a paper table"]),
    ("plot-broken-paper", ["plot", "{broken_paper}", "--out", "{dir}/plots"], ["broken_paper.json"]),
    # --- checkpoints ---------------------------------------------------------------------
    ("convert-from-bogus", ["convert", "--from", "onnx", "{dir}", "--out", "{dir}/c.h5"], ["--from 'onnx'"]),
    ("convert-hf-missing", ["convert", "--from", "hf", "{dir}/nohf", "--out", "{dir}/c.h5"], ["nohf"]),
    ("convert-hf-bad-json", ["convert", "--from", "hf", "{hf_bad_json}", "--out", "{dir}/c.h5"],
     ["config.json: not valid JSON"]),
    ("convert-hf-json-list", ["convert", "--from", "hf", "{hf_json_list}", "--out", "{dir}/c.h5"],
     ["expected a JSON object"]),
    ("convert-hf-rope-linear", ["convert", "--from", "hf", "{hf_rope_linear}", "--out", "{dir}/c.h5"],
     ["rope_parameters.rope_type = 'linear'"]),
    ("convert-hf-rope-factor", ["convert", "--from", "hf", "{hf_rope_factor}", "--out", "{dir}/c.h5"],
     ["rope_parameters factor = 4.0"]),
    ("convert-hf-rope-scaling", ["convert", "--from", "hf", "{hf_rope_scaling}", "--out", "{dir}/c.h5"],
     ["rope_scaling"]),
    ("convert-hf-head-dim", ["convert", "--from", "hf", "{hf_head_dim}", "--out", "{dir}/c.h5"],
     ["head_dim = 16", "differs"]),
    ("convert-hf-string-field", ["convert", "--from", "hf", "{hf_string}", "--out", "{dir}/c.h5"],
     ["config.json", "n_layers must be an integer"]),
    ("convert-hf-junk-safetensors", ["convert", "--from", "hf", "{hf_junk_st}", "--out", "{dir}/c.h5"],
     ["model.safetensors", "not a safetensors file"]),
    ("convert-hf-int8-safetensors", ["convert", "--from", "hf", "{hf_i8_st}", "--out", "{dir}/c.h5"],
     ["dtype 'I8' is not supported"]),
    ("convert-hf-truncated-safetensors", ["convert", "--from", "hf", "{hf_trunc_st}", "--out", "{dir}/c.h5"],
     ["data_offsets", "truncated"]),
    ("convert-hf-nan-tensor", ["convert", "--from", "hf", "{hf_nan}", "--out", "{dir}/c.h5"],
     ["NaN or infinite"]),
    ("convert-hf-wrong-shape", ["convert", "--from", "hf", "{hf_shape}", "--out", "{dir}/c.h5"],
     ["tensors do not match config.json"]),
    ("convert-llama2c-missing", ["convert", "--from", "llama2c", "{dir}/none.bin", "--out", "{dir}/c.h5"],
     ["none.bin: no such file"]),
    ("convert-llama2c-folder", ["convert", "--from", "llama2c", "{dir}", "--out", "{dir}/c.h5"],
     ["not a regular file"]),
    ("convert-llama2c-header", ["convert", "--from", "llama2c", "{l2c_header}", "--out", "{dir}/c.h5"],
     ["not a llama2.c checkpoint"]),
    ("convert-llama2c-nan", ["convert", "--from", "llama2c", "{l2c_nan}", "--out", "{dir}/c.h5"],
     ["NaN or infinite"]),
    # --- found by a fresh-eyes attack ------------------------------------------------------
    ("calibrate-out-is-calibration", ["calibrate", "--calibration", "{cal_copy}", "--out", "{cal_copy}", "--sweeps", "0"],
     ["--out", "is also the input --calibration"]),
    ("calibrate-out-is-shipped-topology", ["calibrate", "--out", str(DATA / "topology/siracusa-boards.toml")],
     ["is also the input --calibration's topology"]),
    ("calibrate-out-is-shipped-hw", ["calibrate", "--out", str(DATA / "hw/siracusa.toml")],
     ["is also the input --calibration's hw"]),
    ("calibrate-unknown", ["calibrate", "--calibration", "nope"], ["unknown calibration description 'nope'"]),
    ("calibrate-bad-bounds", ["calibrate", "--calibration", "{cal_bounds}"], ["needs 0 < low < high"]),
    ("calibrate-set-fitted", ["calibrate", "--set", "compute.freq_hz=3e8"], ["--set compute.freq_hz", "fitted parameter"]),
    ("calibrate-set-unknown", ["calibrate", "--set", "compute.turbo=1", "--sweeps", "0", "--nm-iters", "0",
                               "--no-validation", "--out", "{dir}/p.toml"], ["structure compute.turbo", "unknown key"]),
    ("run-json-is-shipped-hw", ["run", *DRY, "--json", str(DATA / "hw/siracusa.toml")], ["is also the input --hw"]),
    ("set-tiny-link-rate", ["run", *DRY, "--set", "link.link_bytes_per_s=1e-300"], ["link_bytes_per_s must be >= 1000"]),
    ("set-tiny-clock", ["run", *DRY, "--set", "compute.freq_hz=1e-308"], ["freq_hz must be >= 1000"]),
    ("set-tiny-elementwise", ["run", *DRY, "--set", "compute.elementwise_per_cycle=1e-300"],
     ["elementwise_per_cycle must be >= 0.001"]),
    ("json-name-too-long", ["run", *DRY, "--json", "{dir}/" + "a" * 300 + ".json"], ["too long"]),
    ("json-trailing-slash", ["run", *DRY, "--json", "{dir}/x.json/"], ["names a folder"]),
    ("weights-huge-calibration", ["run", "--weights", "{w_huge_calib}"], ["act_maxabs res", "1e+300"]),
    ("weights-tiny-calibration", ["run", "--weights", "{w_tiny_calib}"], ["act_maxabs res", "1e-300"]),
    ("weights-huge-scale", ["run", "--weights", "{w_huge_scale}"], ["t/layers.0.wq.scale", "scales must be from"]),
    ("weights-unrequantizable-scale", ["run", "--weights", "{w_requant}"], ["cannot be requantized"]),
    ("weights-config-list", ["run", "--weights", "{w_config_list}"], ["expected a table of model fields"]),
    ("weights-version-array", ["run", "--weights", "{w_version_array}"], ["format_version"]),
    ("weights-and-seed", ["run", "--weights", "{w_good}", "--seed", "5"], ["--seed 5", "no effect with --weights"]),
    ("model-empty-name", ["run", "--model", "", "--dry-run"], ["unknown model ''"]),
    ("preset-empty-name", ["run", *DRY, "--preset", ""], ["unknown preset ''"]),
    ("preset-is-hw-file", ["run", *DRY, "--preset", str(DATA / "hw/siracusa.toml")], ["in a preset"]),
    ("preset-for-other-hw", ["run", *DRY, "--hw", "{hw_copy}"], ["was fitted for hw 'siracusa'", "--preset none"]),
    ("chips-fullwidth-digit", ["run", *DRY, "--chips", "\uff14"], ["--chips", "expected an integer"]),
    ("prompt-ids-trailing-comma", ["run", *DRY, "--prompt-ids", "1,2,"], ["--prompt-ids"]),
    ("newline-in-value", ["run", "--weights", "{dir}/a\nb.h5"], ["a\\nb.h5 does not exist"]),
    ("sweep-run-args-chips", ["sweep", "--model", "tinyllama-tiny", "--dry-run", "--run-args", "--chips 2"],
     ["--run-args --chips", "the sweep sets it"]),
    ("sweep-out-empty", ["sweep", "--model", "tinyllama-tiny", "--dry-run", "--out", ""], ["--out", "empty path"]),
    ("plot-out-empty", ["plot", "{broken_paper}", "--out", ""], ["--out", "empty path"]),
    ("plot-curves-string", ["plot", "{paper_curves_str}"], ["'curves' must be"]),
    ("plot-speedup-string", ["plot", "{paper_speedup_str}", "--out", "{dir}/plots2"], ["speedup = 'fast'"]),
    ("plot-deep-json", ["plot", "{deep_json}"], ["cannot read results", "RecursionError"]),
    ("convert-hf-huge-weights", ["convert", "--from", "hf", "{hf_huge}", "--out", "{dir}/c.h5"], ["beyond the |x| <="]),
    ("convert-hf-bad-tokenizer", ["convert", "--from", "hf", "{hf_bad_tok}", "--out", "{dir}/c.h5"],
     ["tokenizer.json"]),
    ("convert-hf-deep-config", ["convert", "--from", "hf", "{hf_deep}", "--out", "{dir}/c.h5"], ["not valid JSON"]),
    ("convert-calib-ids-empty", ["convert", "--from", "llama2c", "{l2c_victim}", "--out", "{dir}/c.h5",
                                 "--calib-ids", ""], ["--calib-ids is empty"]),
    ("convert-calib-ids-and-text", ["convert", "--from", "llama2c", "{l2c_victim}", "--out", "{dir}/c.h5",
                                    "--calib-ids", "1", "--calib-text", "x"], ["not both"]),
    ("convert-calib-ids-too-many", ["convert", "--from", "llama2c", "{l2c_victim}", "--out", "{dir}/c.h5",
                                    "--calib-ids", ",".join(["1"] * 300)], ["300 ids", "128 positions"]),
    ("convert-empty-name", ["convert", "--from", "llama2c", "{l2c_victim}", "--out", "{dir}/c.h5", "--name", ""],
     ["name must be a non-empty string"]),
    ("config-missing", ["run", "--config", "{dir}/none.toml"], ["none.toml: no such file"]),
    ("config-bad-value", ["run", "--config", "{config_bad}"], ["config_bad.toml", "--chips", "'x'"]),
    ("config-unknown-key", ["run", "--config", "{config_unknown}"], ["config_unknown.toml", "unknown option 'colour'"]),
    ("config-bad-set", ["run", "--config", "{config_set}"], ["config_set.toml", "set must be a table"]),
    ("config-bool", ["run", "--config", "{config_bool}"], ["config_bool.toml", "dry_run must be true or false"]),
    ("convert-calib-ids-vocab", ["convert", "--from", "llama2c", "{l2c_victim}", "--out", "{dir}/c.h5",
                                 "--calib-ids", "1,99999"], ["--calib-ids", "99999"]),
    # --- cluster descriptions (--cluster) and --split ----------------------------------------
    ("cluster-unknown", ["run", *DRY, "--cluster", "nope"], ["unknown cluster description 'nope'", "mixed-clock"]),
    ("cluster-garbage-toml", ["run", *DRY, "--cluster", "{cl_garbage}"], ["cl_garbage.toml", "not valid TOML"]),
    ("cluster-unknown-key", ["run", *DRY, "--cluster", "{cl_unknown_key}"],
     ["cl_unknown_key.toml", "unknown key(s) colour"]),
    ("cluster-entry-unknown-key", ["run", *DRY, "--cluster", "{cl_entry_key}"], ["ranks 0-7", "unknown key 'speed'"]),
    ("cluster-unknown-param", ["run", *DRY, "--cluster", "{cl_param}"],
     ["ranks 4-7", "compute.cores", "unknown key 'cores'"]),
    ("cluster-bad-units", ["run", *DRY, "--cluster", "{cl_units}"], ["ranks 4-7", "unknown key 'freq_mhz'"]),
    ("cluster-clock-text", ["run", *DRY, "--cluster", "{cl_clock_text}"],
     ["ranks 4-7", "freq_hz must be a number", "'fast'"]),
    ("cluster-clock-zero", ["run", *DRY, "--cluster", "{cl_clock_zero}"],
     ["ranks 4-7", "freq_hz must be >= 1000", "0"]),
    ("cluster-clock-negative", ["run", *DRY, "--cluster", "{cl_clock_neg}"], ["ranks 4-7", "freq_hz", "-180000000.0"]),
    ("cluster-memory-fraction", ["run", *DRY, "--cluster", "{cl_memory}"],
     ["ranks 4-7", "l2_bytes must be an integer"]),
    ("cluster-overlap", ["run", *DRY, "--cluster", "{cl_overlap}"], ["chip 3 is described twice", "'0-3'", "'3-7'"]),
    ("cluster-missing-chips", ["run", *DRY, "--cluster", "{cl_missing}"], ["chip(s) 2, 6-7 of 8 not described"]),
    ("cluster-range-outside", ["run", *DRY, "--cluster", "{cl_outside}"], ["ranks '4-9'", "outside", "0..7"]),
    ("cluster-range-text", ["run", *DRY, "--cluster", "{cl_ranks_text}"],
     ["ranks must be a chip number or a range", "'a-b'"]),
    ("cluster-no-ranks", ["run", *DRY, "--cluster", "{cl_no_ranks}"], ["[[chip]] 2", "missing key ranks"]),
    ("cluster-chips-zero", ["run", *DRY, "--cluster", "{cl_chips_zero}"], ["chips must be an integer from 1", "0"]),
    ("cluster-chip-not-table", ["run", *DRY, "--cluster", "{cl_chip_int}"], ["chip must be an array of tables"]),
    ("cluster-link-structure", ["run", *DRY, "--cluster", "{cl_link_groups}"], ["link.upper_bandwidth_factor",
                                                                                "the topology's"]),
    ("cluster-link-bad-value", ["run", *DRY, "--cluster", "{cl_link_bw}"], ["link.link_bytes_per_s", "must be >= 1000"]),
    ("cluster-hw-unknown", ["run", *DRY, "--cluster", "{cl_hw}"], ["cl_hw.toml [[chip]] ranks 4-7",
                                                                  "unknown hw description 'cortex-m4'"]),
    ("cluster-vs-chips", ["run", *DRY, "--cluster", "mixed-clock", "--chips", "4"],
     ["--cluster mixed-clock describes 8 chips", "--chips 4"]),
    ("cluster-and-set", ["run", *DRY, "--chips", "8", "--cluster", "mixed-clock", "--set", "compute.freq_hz=3e8"],
     ["ranks 0-3", "sets compute.freq_hz, and so does --set"]),
    ("cluster-json-is-cluster", ["run", *DRY, "--cluster", "{cl_victim}", "--json", "{cl_victim}"],
     ["is also the input --cluster"]),
    ("split-unknown", ["run", *DRY, "--split", "fastest"], ["--split", "'fastest'"]),
    ("split-too-slow-for-a-head", ["run", *DRY, "--cluster", "{cl_quarter}", "--split", "by-speed"],
     ["--split by-speed: chip 3 is too slow to get one of the 8 KV heads", "< 0.5"]),
    ("split-by-speed-over-capacity", ["run", "--model", "tinyllama-42m", "--dry-run", "--cluster", "mixed-clock",
                                      "--split", "by-speed", "--placement", "stationary"],
     ["does not fit stationary on 8 chip(s): chip 0 needs", "over its on-chip capacity", "--split balanced"]),
]


def _toml(d: Path, name: str, text: str) -> str:
    p = d / f"{name}.toml"
    p.write_text(text)
    return str(p)


def _edit(src: str, dst: Path, fn) -> str:
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        fn(f)
    return str(dst)


def _replace(f, key, data, **kw):
    del f[key]
    f.create_dataset(key, data=data, **kw)


def _set_row(key, value):
    def fn(f):
        a = f[key][...]
        a.flat[0] = value
        f[key][...] = a
    return fn


def _hf(d: Path, name: str, cfg_over=None, tensors=None, raw: bytes | None = None, cfg_text: str | None = None):
    """A tiny Hugging Face Llama folder with one thing broken."""
    from mcu_emul.config import load_model
    from mcu_emul.files.weights import init_weights
    cfg = load_model("tinyllama-tiny")
    return hf_llama_folder(d / name, cfg, init_weights(cfg, 1), cfg_over, edit=tensors, config_text=cfg_text, raw=raw)


@pytest.fixture(scope="module")
def bad(tiny_weights, tmp_path_factory):
    """Placeholder -> path of each broken input."""
    d = tmp_path_factory.mktemp("bad")
    good = tiny_weights["tinyllama-tiny"]
    tiny = (Path(__file__).resolve().parent.parent / "data/models/tinyllama-tiny.toml").read_text()
    hw = (Path(__file__).resolve().parent.parent / "data/hw/siracusa.toml").read_text()
    topo = (Path(__file__).resolve().parent.parent / "data/topology/siracusa-boards.toml").read_text()
    sub = lambda text, a, b: text.replace(a, b, 1) if a in text else pytest.fail(f"{a!r} not in file")  # noqa: E731
    p = {"dir": str(d), "w_good": good}
    from mcu_emul.files.weights import make_weights
    p["w_nofloat"] = str(make_weights("tinyllama-tiny", 0, d / "w_nofloat.h5", keep_float=False))
    p["model_garbage"] = _toml(d, "model_garbage", "dim = = 3\n[[[")
    (d / "model_binary.toml").write_bytes(b"\xff\xfe\x00garbage")
    p["model_binary"] = str(d / "model_binary.toml")
    p["model_dim_string"] = _toml(d, "model_dim_string", sub(tiny, "dim = 64", 'dim = "64"'))
    p["model_bool_string"] = _toml(d, "model_bool_string", sub(tiny, "tie_embeddings = true", 'tie_embeddings = "no"'))
    p["model_rope_nan"] = _toml(d, "model_rope_nan", sub(tiny, "rope_theta = 10000.0", "rope_theta = nan"))
    p["model_eps_neg"] = _toml(d, "model_eps_neg", sub(tiny, "norm_eps = 1e-5", "norm_eps = -1.0"))
    p["model_layers"] = _toml(d, "model_layers", sub(tiny, "n_layers = 2", "n_layers = 100000"))
    p["model_vocab"] = _toml(d, "model_vocab", sub(tiny, "vocab_size = 512", "vocab_size = 1000000000"))
    p["model_zero"] = _toml(d, "model_zero", sub(tiny, "dim = 64", "dim = 0"))
    p["model_unknown"] = _toml(d, "model_unknown", tiny + 'colour = "blue"\n')
    p["model_missing"] = _toml(d, "model_missing", sub(tiny, "vocab_size = 512", ""))
    p["model_arch"] = _toml(d, "model_arch", sub(tiny, 'arch = "llama"', 'arch = "gpt"'))
    p["model_same_name"] = _toml(d, "model_same_name", sub(tiny, "n_layers = 2", "n_layers = 3"))
    p["model_victim"] = _toml(d, "model_victim", tiny.replace('name = "tinyllama-tiny"', 'name = "victim"'))
    p["hw_freq_nan"] = _toml(d, "hw_freq_nan", sub(hw, "freq_hz = 360000000.0", "freq_hz = nan"))
    p["hw_power_string"] = _toml(d, "hw_power_string", sub(hw, "cluster_active_w = 0.167", 'cluster_active_w = "low"'))
    p["hw_l3_inf"] = _toml(d, "hw_l3_inf", sub(hw, "l3_bytes_per_s = 8.0e8", "l3_bytes_per_s = inf"))
    p["hw_bool_string"] = _toml(d, "hw_bool_string", sub(hw, "l3_overlaps_compute = true", 'l3_overlaps_compute = "no"'))
    p["hw_l2_zero"] = _toml(d, "hw_l2_zero", sub(hw, "l2_bytes = 2097152", "l2_bytes = 0"))
    p["hw_missing"] = _toml(d, "hw_missing", hw.split("\n[energy]")[0] + "\n[origin]" + hw.split("\n[origin]")[1])
    p["topo_latency"] = _toml(d, "topo_latency", sub(topo, "link_latency_s = 1.0e-6", "link_latency_s = -1.0"))
    p["topo_group"] = _toml(d, "topo_group", sub(topo, "group_sizes = [4]", "group_sizes = [1]"))
    p["topo_group_str"] = _toml(d, "topo_group_str", sub(topo, "group_sizes = [4]", 'group_sizes = "4"'))
    p["topo_ports"] = _toml(d, "topo_ports", sub(topo, 'link_ports = "per_peer"', 'link_ports = "bus"'))
    p["topo_bw"] = _toml(d, "topo_bw", sub(topo, "link_bytes_per_s = 2.0e9", "link_bytes_per_s = 0.0"))
    cl = DATA.joinpath("clusters/mixed-clock.toml").read_text()
    p["cl_garbage"] = _toml(d, "cl_garbage", "chips = = 8\n[[[")
    p["cl_unknown_key"] = _toml(d, "cl_unknown_key", 'colour = "blue"\n' + cl)
    p["cl_entry_key"] = _toml(d, "cl_entry_key", 'chips = 8\n[[chip]]\nranks = "0-7"\nspeed = 2\n')
    p["cl_param"] = _toml(d, "cl_param", sub(cl, "compute.freq_hz = 1.8e8", "compute.cores = 4"))
    p["cl_units"] = _toml(d, "cl_units", sub(cl, "compute.freq_hz = 1.8e8", "compute.freq_mhz = 180"))
    p["cl_clock_text"] = _toml(d, "cl_clock_text", sub(cl, "compute.freq_hz = 1.8e8", 'compute.freq_hz = "fast"'))
    p["cl_clock_zero"] = _toml(d, "cl_clock_zero", sub(cl, "compute.freq_hz = 1.8e8", "compute.freq_hz = 0"))
    p["cl_clock_neg"] = _toml(d, "cl_clock_neg", sub(cl, "compute.freq_hz = 1.8e8", "compute.freq_hz = -1.8e8"))
    p["cl_memory"] = _toml(d, "cl_memory", sub(cl, "compute.freq_hz = 1.8e8", "memory.l2_bytes = 1500000.5"))
    p["cl_overlap"] = _toml(d, "cl_overlap", sub(cl, 'ranks = "4-7"', 'ranks = "3-7"'))
    p["cl_missing"] = _toml(d, "cl_missing", 'chips = 8\n[[chip]]\nranks = "0-1"\n[[chip]]\nranks = "3-5"\n')
    p["cl_outside"] = _toml(d, "cl_outside", sub(cl, 'ranks = "4-7"', 'ranks = "4-9"'))
    p["cl_ranks_text"] = _toml(d, "cl_ranks_text", sub(cl, 'ranks = "4-7"', 'ranks = "a-b"'))
    p["cl_no_ranks"] = _toml(d, "cl_no_ranks", sub(cl, 'ranks = "4-7"', ''))
    p["cl_chips_zero"] = _toml(d, "cl_chips_zero", sub(cl, "chips = 8", "chips = 0"))
    p["cl_chip_int"] = _toml(d, "cl_chip_int", "chips = 8\nchip = 3\n")
    p["cl_link_groups"] = _toml(d, "cl_link_groups", sub(cl, "compute.freq_hz = 1.8e8", "link.upper_bandwidth_factor = 0.1"))
    p["cl_link_bw"] = _toml(d, "cl_link_bw", sub(cl, "compute.freq_hz = 1.8e8", "link.link_bytes_per_s = 0.0"))
    p["cl_hw"] = _toml(d, "cl_hw", sub(cl, 'ranks = "4-7"', 'ranks = "4-7"\nhw = "cortex-m4"'))
    p["cl_victim"] = _toml(d, "cl_victim", cl)
    p["cl_quarter"] = _toml(d, "cl_quarter", 'chips = 8\n[[chip]]\nranks = "0-2"\n[[chip]]\nranks = 3\n'
                            'compute.freq_hz = 9e7\n[[chip]]\nranks = "4-7"\n')
    head = 'hw = "siracusa"\ntopology = "siracusa-boards"\n'
    p["preset_unknown"] = _toml(d, "preset_unknown", head + '[fitted]\n"compute.cores" = 4\n')
    p["preset_text"] = _toml(d, "preset_text", head + '[fitted]\n"compute.freq_hz" = "fast"\n')
    p["hw_copy"] = _toml(d, "hw_copy", hw)
    cal = (DATA / "calibration/siracusa-paper.toml").read_text()
    p["cal_copy"] = _toml(d, "cal_copy", cal)
    p["cal_bounds"] = _toml(d, "cal_bounds", sub(cal, "low = 12.8", "low = 40.0"))
    p["config_bad"] = _toml(d, "config_bad", 'chips = "x"\n')
    p["config_unknown"] = _toml(d, "config_unknown", 'colour = 1\n')
    p["config_set"] = _toml(d, "config_set", 'set = 4\n')
    p["config_bool"] = _toml(d, "config_bool", 'dry_run = "yes"\n')
    # weights files
    (d / "w_junk.h5").write_bytes(b"not hdf5" * 64)
    p["w_junk"] = str(d / "w_junk.h5")
    p["w_dtype"] = _edit(good, d / "w_dtype.h5", lambda f: _replace(f, "t/layers.0.wq", f["t/layers.0.wq"][...].astype(np.int16)))
    p["w_shape"] = _edit(good, d / "w_shape.h5", lambda f: _replace(f, "t/layers.0.wq", f["t/layers.0.wq"][:32]))
    p["w_vocab"] = _edit(good, d / "w_vocab.h5", lambda f: _replace(f, "t/tok_embedding", f["t/tok_embedding"][:256]))
    for key, v in (("nan", np.nan), ("inf", np.inf), ("zero", 0.0), ("neg", -0.5)):
        p[f"w_{key}_scale"] = _edit(good, d / f"w_{key}_scale.h5", _set_row("t/layers.0.wq.scale", v))
    p["w_huge_calib"] = _edit(good, d / "w_huge_calib.h5", lambda f: f["act_maxabs"].attrs.__setitem__("res", 1e300))
    p["w_tiny_calib"] = _edit(good, d / "w_tiny_calib.h5", lambda f: f["act_maxabs"].attrs.__setitem__("res", 1e-300))
    p["w_huge_scale"] = _edit(good, d / "w_huge_scale.h5", _set_row("t/layers.0.wq.scale", 3e38))
    p["w_requant"] = _edit(good, d / "w_requant.h5", _set_row("t/layers.0.wq.scale", 1e25))
    p["w_config_list"] = _edit(good, d / "w_config_list.h5", lambda f: f.attrs.__setitem__("config", "[1]"))
    p["w_version_array"] = _edit(good, d / "w_version_array.h5",
                                 lambda f: f.attrs.__setitem__("format_version", np.array([1, 1])))
    p["w_nan_norm"] = _edit(good, d / "w_nan_norm.h5", _set_row("t/layers.0.attn_norm", np.nan))
    p["w_nan_calib"] = _edit(good, d / "w_nan_calib.h5", lambda f: f["act_maxabs"].attrs.__setitem__("res", np.nan))
    p["w_no_calib"] = _edit(good, d / "w_no_calib.h5", lambda f: f["act_maxabs"].attrs.__delitem__("res"))
    p["w_version"] = _edit(good, d / "w_version.h5", lambda f: f.attrs.__setitem__("format_version", "abc"))
    p["w_config"] = _edit(good, d / "w_config.h5", lambda f: f.attrs.__setitem__("config", "{"))

    def string_field(f):
        c = json.loads(f.attrs["config"])
        c["n_layers"] = "2"
        f.attrs["config"] = json.dumps(c)
    p["w_config_field"] = _edit(good, d / "w_config_field.h5", string_field)
    p["w_no_dataset"] = _edit(good, d / "w_no_dataset.h5", lambda f: f.__delitem__("t/layers.1.w2"))
    secret = d / "secret.bin"
    secret.write_bytes(np.arange(64, dtype=np.float32).tobytes())
    p["w_extlink"] = _edit(good, d / "w_extlink.h5",
                           lambda f: f["t"].__setitem__("stolen", h5py.ExternalLink(str(secret), "/x")))
    p["w_extstore"] = _edit(good, d / "w_extstore.h5", lambda f: _replace(
        f, "t/layers.0.attn_norm", None, shape=(64,), dtype=np.float32, external=[(str(secret), 0, 256)]))

    def virtual(f):
        lay = h5py.VirtualLayout(shape=(64,), dtype=np.float32)
        lay[:] = h5py.VirtualSource(str(secret), "x", shape=(64,))
        del f["t/layers.0.attn_norm"]
        f["t"].create_virtual_dataset("layers.0.attn_norm", lay)
    p["w_virtual"] = _edit(good, d / "w_virtual.h5", virtual)
    data = Path(good).read_bytes()
    (d / "w_trunc.h5").write_bytes(data[: len(data) // 2])
    p["w_trunc"] = str(d / "w_trunc.h5")
    shutil.copy(good, d / "w_victim.h5")
    p["w_victim"] = str(d / "w_victim.h5")
    # outputs
    (d / "target.json").write_text("{}")
    os.symlink(d / "target.json", d / "link.json")
    p["json_link"] = str(d / "link.json")
    os.mkfifo(d / "fifo")
    p["fifo"] = str(d / "fifo")
    (d / "report.json").write_text(json.dumps({"schema": "mcu_emul.trace/1"}))
    p["not_paper"] = str(d / "report.json")
    (d / "broken_paper.json").write_text(json.dumps({"schema": "mcu_emul.paper/1", "curves": {"m": [{"chips": 1}]}}))
    p["broken_paper"] = str(d / "broken_paper.json")
    (d / "curves_str.json").write_text(json.dumps({"schema": "mcu_emul.paper/1", "curves": "x"}))
    p["paper_curves_str"] = str(d / "curves_str.json")
    cats = {c: 1.0 for c in ("compute", "onchip", "offchip", "link", "idle")}
    pt = {"chips": 1, "speedup": "fast", "energy_mj_by_category": cats, "latency_ms_by_category": cats}
    (d / "speedup_str.json").write_text(json.dumps({"schema": "mcu_emul.paper/1", "curves": {"m": [pt]}}))
    p["paper_speedup_str"] = str(d / "speedup_str.json")
    (d / "deep.json").write_text("[" * 100000 + "]" * 100000)
    p["deep_json"] = str(d / "deep.json")
    # checkpoints
    p["hf_bad_json"] = _hf(d, "hf_bad_json", cfg_text="{not json")
    p["hf_json_list"] = _hf(d, "hf_json_list", cfg_text="[1, 2]")
    p["hf_rope_linear"] = _hf(d, "hf_rope_linear", {"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4,
                                                                         "factor": 4.0}})
    p["hf_rope_factor"] = _hf(d, "hf_rope_factor", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4,
                                                                         "factor": 4.0}})
    p["hf_rope_scaling"] = _hf(d, "hf_rope_scaling", {"rope_scaling": {"type": "dynamic", "factor": 2.0}})
    p["hf_head_dim"] = _hf(d, "hf_head_dim", {"head_dim": 16})
    p["hf_string"] = _hf(d, "hf_string", {"num_hidden_layers": "2"})
    p["hf_junk_st"] = _hf(d, "hf_junk_st", raw=b"\x00" * 7)
    p["hf_i8_st"] = _hf(d, "hf_i8_st", raw=safetensors_bytes({"x": np.zeros(4, np.int8)}, "I8"))
    p["hf_trunc_st"] = _hf(d, "hf_trunc_st", raw=safetensors_bytes({"x": np.zeros(64, np.float32)})[:-40])
    p["hf_nan"] = _hf(d, "hf_nan", tensors=lambda t: t["model.layers.0.mlp.up_proj.weight"].__setitem__((0, 0), np.nan))
    p["hf_shape"] = _hf(d, "hf_shape", tensors=lambda t: t.__setitem__(
        "model.layers.0.self_attn.q_proj.weight", np.zeros((60, 64), np.float32)))
    p["hf_huge"] = _hf(d, "hf_huge", tensors=lambda t: t["model.layers.0.self_attn.q_proj.weight"].fill(3e38))
    p["hf_bad_tok"] = _hf(d, "hf_bad_tok")
    (Path(p["hf_bad_tok"]) / "tokenizer.json").write_text("{bad")
    p["hf_deep"] = _hf(d, "hf_deep", cfg_text="[" * 100000 + "]" * 100000)
    from test_convert import write_llama2c
    from mcu_emul.config import load_model
    from mcu_emul.files.weights import init_weights
    cfg = load_model("tinyllama-tiny")
    w = init_weights(cfg, 2)
    write_llama2c(d / "victim.bin", cfg, w)
    p["l2c_victim"] = str(d / "victim.bin")
    (d / "header.bin").write_bytes(struct.pack("<7i", 64, 0, 2, 8, 8, 512, 128) + b"\0" * 64)
    p["l2c_header"] = str(d / "header.bin")
    w["layers.1.w3"][3, 3] = np.inf
    write_llama2c(d / "nan.bin", cfg, w)
    p["l2c_nan"] = str(d / "nan.bin")
    return p


def _fill(args, p):
    return [a.format(**p) if "{" in a else a for a in args]


def _env(cwd, extra_env=None) -> dict:
    return env() | {"MCU_EMUL_CACHE": str(Path(cwd) / "cache")} | (extra_env or {})


def _run(args, cwd, n=None, extra_env=None, timeout=120):
    cmd = [sys.executable, "-m", "mcu_emul", *args]
    if n is not None:
        cmd = [mpiexec_path(), "-n", str(n), *cmd]
    e = _env(cwd, extra_env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e, cwd=cwd, stdin=subprocess.DEVNULL)


def _digest(folder: Path) -> dict:
    out = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file() and not f.is_symlink() and not f.name.startswith("."):
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def results(bad, tmp_path_factory):
    """Every case, run two at a time, each in its own process (forked from a server that
    imported mcu_emul once: tests/forked_cli.py) and working folder."""
    before = _digest(Path(bad["dir"]))
    cwd = tmp_path_factory.mktemp("cwd")
    pool = forked_cli.Pool(2)

    def one(case):
        cid, args, _ = case
        c = cwd / cid
        c.mkdir()
        t0 = time.monotonic()
        p = pool.run(_fill(args, bad), c, _env(c), 120)
        return cid, p, time.monotonic() - t0
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            out = {cid: (p, dt) for cid, p, dt in ex.map(one, CASES)}
    finally:
        pool.close()
    return out, before, _digest(Path(bad["dir"]))


def assert_one_line_error(p, needles, what=""):
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2, f"{what}: exit {p.returncode}\n{p.stderr[-1500:]}"
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert len(lines) == 1, f"{what}: expected one line, got:\n{p.stderr}"
    assert lines[0].startswith("mcu_emul: error: "), lines[0]
    for n in needles:
        assert n in lines[0], f"{what}: {n!r} not in: {lines[0]}"


@pytest.mark.parametrize("cid,args,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input(results, cid, args, needles):
    out, _, _ = results
    p, dt = out[cid]
    assert_one_line_error(p, needles, cid)
    assert dt < 60, f"{cid} took {dt:.0f} s"


def test_no_input_damaged_no_temp_left(results, bad):
    _, before, after = results
    assert before == after
    d = Path(bad["dir"])
    assert not (d / "plots").exists() or not list((d / "plots").iterdir()), "plot wrote part of its output"
    assert not (d / "plots2").exists() or not list((d / "plots2").iterdir()), "plot wrote part of its output"
    assert not [f for f in d.rglob(".*") if f.is_file()], "temp files left"
    assert os.path.islink(bad["json_link"]) and Path(bad["json_link"]).resolve() == d / "target.json"


def test_enough_cases():
    assert len(CASES) >= 80


# --- valid inputs at the same boundaries: they must work -------------------------------------
def test_stdout_report_is_strict_json(tmp_path):
    p = _run(["run", *TINY, "--dry-run", "--chips", "2", "--json", "-"], tmp_path)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert doc["chips"] == 2 and "on 2 chip(s)" in p.stderr        # the summary went to stderr


def test_encoder_prompt_ids_are_used(tiny_weights, tmp_path):
    w = tiny_weights["mobilebert-tiny"]
    p = _run(["run", "--model", "mobilebert-tiny", "--weights", w, "--prompt-ids", "1", "--json", "-", "--quiet"],
             tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["input_ids"] == [1]


def test_model_toml_path_with_default_weights(tmp_path):
    """--model PATH.toml: default weights cached under the cache folder, keyed by content."""
    src = (Path(__file__).resolve().parent.parent / "data/models/tinyllama-tiny.toml").read_text()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/m.toml").write_text(src.replace("n_layers = 2", "n_layers = 1"))
    for _ in range(2):
        p = _run(["run", "--model", "sub/../sub/m.toml", "--gen-tokens", "2", "--json", "r.json", "--quiet"], tmp_path)
        assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in (tmp_path / "sub").iterdir()) == ["m.toml"]
    cached = sorted((tmp_path / "cache").glob("*.h5"))
    assert len(cached) == 1 and cached[0].name.startswith("tinyllama-tiny-")
    (tmp_path / "sub/m.toml").write_text(src)                 # edited model: its own cache file
    assert _run(["run", "--model", "sub/m.toml", "--gen-tokens", "2", "--quiet"], tmp_path).returncode == 0
    assert len(list((tmp_path / "cache").glob("*.h5"))) == 2


def test_damaged_cache_is_made_again(tmp_path):
    args = ["run", *TINY, "--gen-tokens", "2", "--json", "r.json", "--quiet"]
    assert _run(args, tmp_path).returncode == 0
    first = json.loads((tmp_path / "r.json").read_text())["output_sha256"]
    (cached,) = (tmp_path / "cache").glob("*.h5")
    cached.write_bytes(cached.read_bytes()[:5000])
    p = _run(args, tmp_path)
    assert p.returncode == 0, p.stderr
    assert "damaged" in p.stderr and "making them again" in p.stderr
    assert json.loads((tmp_path / "r.json").read_text())["output_sha256"] == first


def test_unusable_cache_folder(tmp_path):
    (tmp_path / "afile").write_text("x")
    p = _run(["run", *TINY, "--gen-tokens", "2"], tmp_path, extra_env={"MCU_EMUL_CACHE": str(tmp_path / "afile")})
    assert_one_line_error(p, ["MCU_EMUL_CACHE", "afile", "not a writable folder"], "cache is a file")


@pytest.mark.mpiexec
def test_commands_that_start_processes_refuse_mpiexec(tmp_path):
    p = _run(["sweep", "--model", "tinyllama-tiny", "--chips", "1", "--dry-run", "--out", "sw"], tmp_path, n=2)
    assert_one_line_error(p, ["'sweep' is not run one rank per chip", "starts its own processes"], "sweep under mpiexec")
    cleanup_mpich()


def test_serial_run_inside_an_allocation_honours_chips(tmp_path):
    """SLURM_NTASKS > 1 (every sbatch job) does not make a serial process an MPI rank."""
    slurm = {"SLURM_NTASKS": "4", "SLURM_NPROCS": "4", "SLURM_JOB_ID": "7"}
    p = _run(["run", *TINY, "--dry-run", "--chips", "4", "--json", "-", "--quiet"], tmp_path, extra_env=slurm)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["chips"] == 4
    p = _run(["run", *TINY, "--chips", "2", "--gen-tokens", "2", "--json", "-", "--quiet"], tmp_path, extra_env=slurm)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["chips"] == 2


def _mount_tmpfs(path: Path, opts: str) -> bool:
    path.mkdir()
    return os.geteuid() == 0 and shutil.which("mount") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode == 0


def test_full_and_read_only_disks(tmp_path):
    full, ro = tmp_path / "full", tmp_path / "ro"
    if not _mount_tmpfs(full, "size=200k"):
        pytest.skip("needs root and tmpfs mounts to make a full disk")
    try:
        p = _run(["weights", "make", "--model", "tinyllama-tiny", "--out", str(full / "w.h5")], tmp_path)
        assert_one_line_error(p, ["cannot write", "w.h5", "No space left"], "full disk")
        assert list(full.iterdir()) == []
        assert _mount_tmpfs(ro, "ro,size=200k")
        for args in (["weights", "make", "--model", "tinyllama-tiny", "--out", str(ro / "w.h5")],
                     ["run", *DRY, "--json", str(ro / "r.json")]):
            assert_one_line_error(_run(args, tmp_path), ["cannot write", "Read-only"], "read-only")
    finally:
        for m in (full, ro):
            subprocess.run(["umount", str(m)], capture_output=True)


def test_sigterm_leaves_no_temp_file(tmp_path):
    """SIGTERM while an output is being written: the entry point's handler removes the temp file
    and exits 143; the target is not created."""
    script = (
        "import os, signal, sys\n"
        "from mcu_emul.files import outputs as files\n"
        "from mcu_emul import __main__ as m\n"
        "files.install_signal_cleanup()\n"
        "try:\n"
        f"    with files.atomic_path({str(tmp_path / 'out.json')!r}) as tmp:\n"
        "        open(tmp, 'w').write('half')\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        signal.pause()\n"
        "except SystemExit as e:\n"
        "    m._fail(e.code, None, None, False)\n")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, env=env())
    assert p.returncode == 143, p.stderr
    assert list(tmp_path.iterdir()) == []


# --- under real mpiexec ---------------------------------------------------------------------
MPI_CASES = [
    ("mpi-prompt-vocab", ["--prompt-ids", "9999"], ["prompt id 9999"]),
    ("mpi-set-nan", ["--set", "compute.freq_hz=nan"], ["compute.freq_hz", "nan"]),
    ("mpi-chips-vs-world", ["--chips", "2"], ["--chips 2 differs from the MPI world size 4"]),
    ("mpi-nan-scale-one-rank", ["--weights", "{w_nan_last_rank}"], ["t/layers.0.w1.scale", "nan", "rank 3 of 4"]),
    ("mpi-json-collision", ["--weights", "{w_victim}", "--json", "{w_victim}"], ["is also the input --weights"]),
    ("mpi-cluster-vs-world", ["--cluster", "mixed-clock"], ["--cluster mixed-clock describes 8 chips",
                                                            "the MPI world size is 4"]),
]


@pytest.mark.mpiexec
@pytest.mark.parametrize("cid,args,needles", MPI_CASES, ids=[c[0] for c in MPI_CASES])
def test_bad_input_under_mpiexec(bad, tiny_weights, tmp_path, cid, args, needles):
    if "w_nan_last_rank" not in bad:      # row 150 of 176 FFN rows: chip 3 of 4 owns it
        bad["w_nan_last_rank"] = _edit(tiny_weights["tinyllama-tiny"], Path(bad["dir"]) / "w_nan_last.h5",
                                       lambda f: f["t/layers.0.w1.scale"].__setitem__(150, np.nan))
    segs = set(Path("/dev/shm").glob("mpich_shm_*"))
    t0 = time.monotonic()
    p = _run(["run", "--model", "tinyllama-tiny", "--weights", tiny_weights["tinyllama-tiny"], "--gen-tokens", "3",
              "--quiet", *_fill(args, bad)], tmp_path, n=4)
    assert_one_line_error(p, needles, cid)
    assert time.monotonic() - t0 < 30
    assert set(Path("/dev/shm").glob("mpich_shm_*")) <= segs, "MPICH segments left behind"
    cleanup_mpich()
