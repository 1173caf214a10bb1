"""`flopbench infer` on the CPU: the document, MFU and MBU by hand from the step times, files, bad input."""

import fcntl
import json
import os
from pathlib import Path

import pytest
import torch

import flopbench
from flopbench.api.infer import infer
from flopbench.cli import main
from flopbench.flops import inference
from flopbench.model import gpt
from flopbench.model.config import ModelConfig
from helpers import pretend_gpu

SMALL = ModelConfig("small", n_layer=2, d_model=32, n_head=4, vocab_size=64, max_seq_len=32)
FAST = dict(batch_size=2, prompt_len=8, gen_len=5, device="cpu", warmup=0, iters=2, ceilings=False,
            peak_tflops=1.0, peak_gbps=10.0, progress=lambda m: None)


def test_infer_document_and_rates_by_hand():
    doc = infer(SMALL, out=None, **FAST)
    p, d = doc["prefill"], doc["decode"]
    assert p["flops"] == inference.prefill_flops(SMALL, 2, 8) and p["bytes"] == inference.prefill_bytes(SMALL, 2, 8, "fp32")
    seconds = p["time_ms"]["median_ms"] / 1e3
    assert p["mfu"] == pytest.approx(p["flops"] / (seconds * 1e12))  # peak 1 TFLOP/s
    # 4 decode steps (the first of the 5 tokens comes from the prefill) at contexts 9 .. 12
    assert [s["context"] for s in d["steps"]] == [9, 10, 11, 12]
    for s in d["steps"]:
        assert s["flops"] == inference.decode_flops(SMALL, 2, s["context"])
        assert s["bytes"] == inference.decode_bytes(SMALL, 2, s["context"], "fp32").total
        assert s["mbu"] == pytest.approx(s["bytes"] / (s["time_ms"] / 1e3) / 10e9)  # peak 10 GB/s
    median_ms = sorted(s["time_ms"] for s in d["steps"])[1:3]
    assert d["time_ms"]["median_ms"] == pytest.approx(sum(median_ms) / 2)
    assert d["tokens_per_s"] == pytest.approx(2 / (d["time_ms"]["median_ms"] / 1e3))
    status = {r["left"]: r["status"] for r in doc["reconciliation"]}
    assert status == {"counted.meta.prefill": "equal", "counted.meta.decode": "equal",
                      "counted.cpu.prefill": "equal", "counted.cpu.decode": "explained"}
    # the timed decode step is static: it scores all S = 8 + 5 = 13 cached keys in both layers, the 4 beyond
    # the first step's context of 9 masked: QK^T and AV, 4·B·n_head·head_dim per key per layer
    gap = next(r for r in doc["reconciliation"] if r["left"] == "counted.cpu.decode")
    assert gap["left_flops"] - gap["right_flops"] == gap["explained"] == 4 * 2 * 32 * 2 * (13 - 9) == 2048


def test_infer_writes_two_rows_and_is_in_the_api(tmp_path):
    doc = flopbench.infer(SMALL, out=str(tmp_path), **FAST)
    rows = flopbench.read_rows(doc["files"]["rows.jsonl"])
    assert list(rows["mode"]) == ["prefill", "decode"] and set(rows["kind"]) == {"infer"}
    assert rows["mbu"].notna().all()


@pytest.mark.parametrize("argv, fragment", [
    (["--prompt-len", "30", "--gen-len", "3"], "= 33 exceeds the model's 32 positions"),
    (["--gen-len", "0"], "'0' must be a positive integer"),
    (["--prompt-len", "0"], "'0' must be a positive integer"),
])
def test_infer_bad_lengths(capsys, tmp_path, argv, fragment):
    base = ["infer", "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--vocab-size", "64", "--max-seq-len", "32",
            "--device", "cpu", "--no-ceilings", "--out", str(tmp_path)]
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err
    assert not list(tmp_path.rglob("rows.jsonl"))


def test_infer_cli_json(capsys):
    assert main(["infer", "--model", "tiny", "--device", "cpu", "--prompt-len", "16", "--gen-len", "4", "--iters", "1",
                 "--no-ceilings", "--no-save", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"flops", "bytes", "time_ms", "mfu"} <= set(doc["prefill"])
    assert {"steps", "time_ms", "tokens_per_s", "mbu", "mfu"} <= set(doc["decode"])


def test_report_draws_the_roofline_of_infer_rows(tmp_path):
    doc = infer(SMALL, out=str(tmp_path), **FAST)
    rep = flopbench.report(tmp_path, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## 5. Generation: the roofline" in md and "roofline" in rep["plots"]
    # the prefill's intensity is FLOPs / bytes from flops.inference, shown to 4 significant digits
    assert f"{doc['prefill']['flops'] / doc['prefill']['bytes']:.4g}" in md
    assert "| 1 " in md.split("## 5.")[1] and "| 10 " in md.split("## 5.")[1]  # the given peaks as the roofs


def test_static_decode_steps_carry_hardware_flops_and_bytes_of_the_whole_cache():
    doc = infer(SMALL, out=None, **FAST)
    n_matmul = 2 * (12 * 32 * 32) + 32 * 64  # 2 GPT-2 blocks of 12·d² and the LM head d·V (tied)
    for s in doc["decode"]["steps"]:
        # model FLOPs at the context, hardware FLOPs over all 13 cached keys (B=2, n_head·head_dim=32, L=2)
        assert s["flops"] == 2 * 2 * n_matmul + 4 * 2 * 32 * 2 * s["context"]
        assert s["hardware_flops"] == 2 * 2 * n_matmul + 4 * 2 * 32 * 2 * 13
        # the bytes read beyond the context: K and V (2 x 32 wide) of 13 - c positions, B=2, L=2, 4 bytes each
        assert s["hardware_bytes"] - s["bytes"] == 4 * 2 * 32 * 2 * 2 * (13 - s["context"])
        assert s["launch_bound"] is None and s["host_ms"] > 0  # one clock on the CPU
    assert doc["cache_len"] == 13 and doc["decode"]["launch_bound"] is None


def test_bf16_infer_runs_every_linear_with_bf16_weights():
    seen = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Linear) and not module.weight.is_meta:
            seen.append((module.weight.dtype, inputs[0].dtype))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        doc = infer(SMALL, out=None, **{**FAST, "dtype": "bf16"})
    finally:
        handle.remove()
    # 2 blocks x 4 Linears + the LM head, in the device count, every timed prefill and every decode step
    assert len(seen) >= 9 * (2 + FAST["iters"] + 4) and set(seen) == {(torch.bfloat16, torch.bfloat16)}
    assert doc["weights_dtype"] == "bf16"
    # the decode bytes MBU divides are 2 per weight: half the fp32 figure (2 bytes per value throughout)
    step = doc["decode"]["steps"][0]
    assert 2 * step["bytes"] == inference.decode_bytes(SMALL, 2, step["context"], "fp32").total


def _lock_is_free(folder: Path) -> bool:
    fd = os.open(folder / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_failing_decode_keeps_the_prefill_row_and_closes_the_writer(tmp_path, monkeypatch):
    update = gpt.KVCache.update
    calls = {"decode": 0}

    def failing(self, layer, pos, k, v):
        # the one-token calls on the CPU: the device count's decode step (2 layers), then the timed ones
        if k.shape[2] == 1 and not k.is_meta:
            calls["decode"] += 1
            if calls["decode"] > SMALL.n_layer:
                raise RuntimeError("injected decode failure")
        return update(self, layer, pos, k, v)

    monkeypatch.setattr(gpt.KVCache, "update", failing)
    with pytest.raises(RuntimeError, match="injected") as failure:
        infer(SMALL, out=str(tmp_path), **FAST)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rows = flopbench.read_rows(folder / "rows.jsonl")
    assert list(rows["mode"]) == ["prefill"] and rows["mfu"].notna().all()
    assert (folder / "rows.csv").exists() and _lock_is_free(folder)  # closed while the error is still held
    del failure


def test_infer_run_id_is_the_folder_name(tmp_path):
    doc = infer(SMALL.replace(name="small+pad64 v2"), out=str(tmp_path), **FAST)
    folder = Path(doc["files"]["rows.jsonl"]).parent
    assert doc["run_id"] == folder.name and doc["run_id"].endswith("-small-pad64-v2-infer-cpu-fp32")
    assert set(flopbench.read_rows(folder / "rows.jsonl")["run_id"]) == {folder.name}


def test_infer_rates_a_mig_slice_as_run_does(monkeypatch):
    from flopbench.api import infer as infer_module

    pretend_gpu(monkeypatch, infer_module, {"name": "NVIDIA H100 80GB HBM3 MIG 3g.40gb", "sm_count": 60, "mig": True})
    doc = infer(SMALL, out=None, **{**FAST, "peak_tflops": None})
    # H100 SXM fp32 66.9 TFLOP/s on 132 SMs; the slice has 60 of them
    assert doc["peak"]["tflops"] == pytest.approx(66.9 * 60 / 132)
    assert doc["prefill"]["mfu"] == pytest.approx(
        doc["prefill"]["flops"] / (doc["prefill"]["time_ms"]["median_ms"] / 1e3) / (66.9 * 60 / 132 * 1e12))
