"""`flopbench run` on the CPU: every field, MFU / HFU arithmetic, files on disk, OOM rows, bad input."""

import json

import pandas as pd
import pytest
import torch
from helpers import FailOnCall

from flopbench.api import run as run_module
from flopbench.api.run import RunOptions, run
from flopbench.cli import main
from flopbench.flops.analytic import train_flops, train_recompute_flops
from flopbench.model.config import ModelConfig
from flopbench.output.records import read_rows

SMALL = ModelConfig("small", n_layer=2, d_model=64, n_head=4, vocab_size=128, max_seq_len=32)
FAST = dict(batch_size=2, seq_len=32, warmup=1, iters=3, gemm=False, device="cpu")


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    return run(SMALL, RunOptions(**FAST, peak_tflops=1.0, out=str(out)), progress=lambda m: None), out


def test_run_rows_and_every_field(cpu_run):
    doc, _ = cpu_run
    assert [(r["mode"], r["checkpointing"]) for r in doc["rows"]] == [
        ("forward", "none"), ("fwd_bwd", "none"), ("fwd_bwd", "full"), ("train_step", "none"), ("train_step", "full")]
    for r in doc["rows"]:
        assert r["status"] == "ok"
        t = r["time_ms"]
        assert t["n"] == 3 and t["min_ms"] <= t["median_ms"] <= t["max_ms"] and t["iqr_ms"] >= 0
        assert r["tokens_per_s"] == pytest.approx(2 * 32 / (t["median_ms"] / 1e3))
        assert r["hardware_flops_note"] in ("equal", "attention backward re-forms QK^T (fused kernel: 5 bmm instead of 4)")
    assert doc["peak"] == {"tflops": 1.0, "source": "--peak-tflops", "dtype": "fp32"}
    assert doc["environment"]["torch"] == torch.__version__


def test_mfu_hfu_arithmetic(cpu_run):
    doc, _ = cpu_run
    by = {(r["mode"], r["checkpointing"]): r for r in doc["rows"]}
    for (mode, ckpt), r in by.items():
        seconds = r["time_ms"]["median_ms"] / 1e3
        assert r["mfu"] == pytest.approx(r["model_flops"] / seconds / 1e12)
        assert r["hfu"] == pytest.approx(r["hardware_flops"] / seconds / 1e12)
    train = by[("train_step", "full")]
    assert train["model_flops"] == train_flops(SMALL, 2, 32)  # model FLOPs never include recompute
    assert train["hardware_flops_analytic"] == train_recompute_flops(SMALL, 2, 32)
    assert train["hfu"] > train["mfu"]  # recompute counted in HFU only
    assert by[("fwd_bwd", "full")]["hfu"] > by[("fwd_bwd", "full")]["mfu"]
    assert train["simple_formula"] == "8N" and by[("fwd_bwd", "none")]["simple_formula"] == "6N"


def test_files_written_and_rereadable(cpu_run):
    doc, out = cpu_run
    folder = out / doc["run_id"]
    lines = (folder / "rows.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[2])["checkpointing"] == "full"
    df = pd.read_csv(folder / "rows.csv")
    assert len(df) == 5 and {"mfu", "hfu", "time_ms.median_ms", "config.d_model"} <= set(df.columns)
    assert json.loads((folder / "environment.json").read_text())["device"] == "cpu"
    assert len(read_rows(out)) == 5


def test_unknown_peak_gives_null_mfu_and_a_warning(tmp_path):
    messages = []
    doc = run(SMALL, RunOptions(**FAST, modes=("forward",), out=None), progress=messages.append)
    assert doc["rows"][0]["mfu"] is None and doc["rows"][0]["achieved_tflops"] > 0
    assert any("MFU and HFU will be null" in m for m in messages)


def test_oom_in_one_mode_is_recorded_and_others_run(monkeypatch, tmp_path):
    monkeypatch.setattr(run_module, "time_step", FailOnCall(run_module.time_step, fail_at=2))  # the second mode OOMs
    doc = run(SMALL, RunOptions(**FAST, checkpointing="none", out=str(tmp_path)), progress=lambda m: None)
    assert [r["status"] for r in doc["rows"]] == ["ok", "oom", "ok"]
    assert doc["rows"][1]["mfu"] is None and "out of memory" in doc["rows"][1]["error"]
    assert len(read_rows(tmp_path)) == 3


def test_pad_vocab_counts_padded_matmul():
    doc = run(SMALL.replace(vocab_size=100), RunOptions(**FAST, modes=("fwd_bwd",), checkpointing="none",
                                                          pad_vocab=64, out=None), progress=lambda m: None)
    assert doc["config"]["vocab_size"] == 128
    assert doc["rows"][0]["model_flops"] == train_flops(SMALL, 2, 32)


def test_cli_run_json(capsys, tmp_path):
    code = main(["run", "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--vocab-size", "64", "--seq-len", "16",
                 "--batch-size", "2", "--warmup", "0", "--iters", "2", "--checkpointing", "full", "--no-gemm",
                 "--peak-tflops", "2.5", "--out", str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    doc = json.loads(out)
    # a forward without autograd saves nothing, so it never checkpoints
    assert [(r["mode"], r["checkpointing"]) for r in doc["rows"]] == [
        ("forward", "none"), ("fwd_bwd", "full"), ("train_step", "full")]
    assert doc["peak"]["tflops"] == 2.5 and all(r["mfu"] > 0 for r in doc["rows"])
    assert "timing" in err  # progress goes to stderr


def test_unwritable_out_is_a_usage_error(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["run", "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--seq-len", "8", "--iters", "1",
                 "--no-gemm", "--out", str(blocker / "sub")])
    _, err = capsys.readouterr()
    assert code == 2 and "cannot write there" in err


@pytest.mark.gpu
def test_cuda_counted_matches_analytic_and_mfu_in_range(tmp_path):
    cfg = ModelConfig("gpu-small", n_layer=4, d_model=512, n_head=8, vocab_size=8192, max_seq_len=512)
    doc = run(cfg, RunOptions(batch_size=8, seq_len=512, device="cuda", warmup=3, iters=10, out=None, gemm=False),
              progress=lambda m: None)
    for r in doc["rows"]:
        assert r["status"] == "ok"
        assert not r["hardware_flops_note"].startswith("unexplained"), r
        if doc["peak"]["tflops"]:
            assert 0 < r["mfu"] < 1 and r["hfu"] >= r["mfu"]
