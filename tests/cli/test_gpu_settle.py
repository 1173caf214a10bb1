"""scripts/gpu_settle.sh in its CPU smoke mode (tiny shapes, no compiles): steps run under the budget, the
folder is packed after each step, summary.md holds each step's status and key numbers."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tarfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load(path: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def settle(tmp_path, steps, budget="300"):
    env = {**os.environ, "FLOPBENCH_SMOKE": "1", "GPU_SETTLE_STEPS": steps, "GPU_SETTLE_BUDGET_S": budget,
           "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_settle.sh"), str(tmp_path / "work"),
                           str(tmp_path / "out" / "settle.tgz")], capture_output=True, text=True, env=env, timeout=200)
    rows = [line.split("\t") for line in (tmp_path / "work" / "steps.tsv").read_text().splitlines()]
    return proc, {r[0]: r[1:] for r in rows}


def test_smoke_steps_run_are_packed_and_summarized(tmp_path):
    proc, steps = settle(tmp_path, "env,train_full_eager,fp8_rowwise_b8")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert steps["env"][0] == "ok" and steps["train_full_eager"][0] == "ok"
    assert steps["fp8_rowwise_b8"][0] == "ok"  # torchao is in the test extra: the fp8 step runs
    assert list(steps) == ["env", "train_full_eager", "fp8_rowwise_b8"]  # only the steps asked for, in order
    fp8 = json.loads((tmp_path / "work" / "fp8_rowwise_b8.json").read_text())
    assert fp8["fp8"]["recipe"] == "rowwise" and 0 < fp8["rows"][0]["fp8_flops"] < fp8["rows"][0]["hardware_flops"]
    doc = json.loads((tmp_path / "work" / "train_full_eager.json").read_text())
    assert [(r["mode"], r["checkpointing"], r["status"]) for r in doc["rows"]] == [
        ("forward", "none", "ok"), ("fwd_bwd", "full", "ok"), ("train_step", "full", "ok")]
    with tarfile.open(tmp_path / "out" / "settle.tgz") as tar:
        names = tar.getnames()
    assert {"work/env.txt", "work/steps.tsv", "work/train_full_eager.json", "work/summary.md"} <= set(names)
    summary = (tmp_path / "work" / "summary.md").read_text()
    median = doc["rows"][1]["time_ms"]["median_ms"]
    assert f"| fwd_bwd/full | ok | {median:.1f} |" in summary and "| train_full_eager | ok |" in summary
    assert "torch" in (tmp_path / "work" / "env.txt").read_text()


def test_a_spent_budget_skips_the_step_and_says_so(tmp_path):
    proc, steps = settle(tmp_path, "gpus", budget="5")
    assert proc.returncode == 1 and steps == {"gpus": ["skipped", "0", "-"]}
    assert "| gpus | skipped | 0 | - |" in (tmp_path / "work" / "summary.md").read_text()
    assert not (tmp_path / "work" / "gpus.json").exists()


def test_summary_of_each_kind_of_document():
    s = _load(ROOT / "scripts" / "settle_summary.py", "settle_summary")
    run = {"config": {"name": "gpt2-xl"}, "batch_size": 8, "seq_len": 1024, "dtype": "bf16", "compile": True,
           "peak": {"tflops": 989.4}, "rows": [{"mode": "train_step", "checkpointing": "none", "status": "ok",
                                               "time_ms": {"median_ms": 812.34}, "mfu": 0.4567, "hfu": 0.5,
                                               "hfu_causal": 0.41, "mfu_vs_clock": None,
                                               "attention_kernel": "flash", "peak_memory_bytes": 49_877_452_800,
                                               "achieved_tflops": 451.86}]}
    assert ("| train_step/none | ok | 812.3 | 45.7 % | 50.0 % | 41.0 % | - | flash | - | 49.88 | 451.9 | - |"
            in s.lines_for(run))
    fp8 = {**run, "dtype": "fp8", "fp8": {"recipe": "rowwise"}, "rows": [{**run["rows"][0], "mfu_weighted": 0.3}]}
    lines = s.lines_for(fp8)
    assert lines[0].startswith("gpt2-xl, B 8 x T 1024, fp8 rowwise,") and lines[-1].endswith("| 451.9 | 30.0 % |")
    infer = {"config": {"name": "gpt2-xl"}, "prefill": {"time_ms": {"median_ms": 10.0}, "mfu": 0.3, "mbu": None},
             "decode": {"time_ms": {"median_ms": 5.0}, "mfu": 0.01, "mbu": 0.72, "tokens_per_s": 1600.0}}
    assert "| decode | 5.000 | 1.0 % | 72.0 % | 1600.0 | - |" in s.lines_for(infer)
    probe = {"torch": "2.11", "gpu": "H200", "cases": [{"mask": "band", "n_head": 32, "n_kv_head": 8,
                                                         "seq_len": 8192, "backend": "math", "fwd_ms": 1.5,
                                                         "fwd_bwd_ms": 4.25, "peak_bytes_above_inputs": 8.6e9,
                                                         "kernels": ["ampere_bf16_gemm"]}]}
    assert "| band | 32/8 | 8192 | math | 1.50 | 4.25 | 8.60 | ampere_bf16_gemm |" in s.lines_for(probe)


def test_sdpa_probe_names_the_backend_from_the_aten_operators():
    probe = _load(ROOT / "benchmarks" / "sdpa_probe.py", "sdpa_probe")
    assert probe.backend_of(["aten::bmm", "aten::_softmax", "aten::scaled_dot_product_attention"]) == "math"
    assert probe.backend_of(["aten::_scaled_dot_product_efficient_attention"]) == "efficient"
    assert probe.backend_of(["aten::_scaled_dot_product_cudnn_attention"]) == "cudnn"
    assert probe.backend_of(["aten::_scaled_dot_product_flash_attention_for_cpu"]) == "flash"
