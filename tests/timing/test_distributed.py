"""Data-parallel runs under torchrun on the CPU (gloo): two ranks, rank 0 reports and writes once."""

import json
import subprocess
import sys

import pytest

from flopbench.timing.distributed import aggregate

TINY = ["--n-layer", "2", "--d-model", "32", "--n-head", "2", "--vocab-size", "64", "--seq-len", "16",
        "--batch-size", "2", "--warmup", "1", "--iters", "3", "--no-gemm", "--peak-tflops", "1", "--device", "cpu"]


def torchrun(kind, out_dir):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "flopbench", "run",
           *TINY, "--dist", kind, "--checkpointing", "none", "--json", "--out", str(out_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_two_ranks_rank0_reports_once(kind, tmp_path):
    proc = torchrun(kind, tmp_path)
    doc = json.loads(proc.stdout)  # one JSON document: only rank 0 printed
    assert doc["parallelism"]["kind"] == kind and doc["parallelism"]["world_size"] == 2
    assert doc["parallelism"]["backend"] == "gloo"
    assert len(list(tmp_path.iterdir())) == 1  # one run folder, written by rank 0 only
    lines = (next(tmp_path.iterdir()) / "rows.jsonl").read_text().splitlines()
    assert len(lines) == len(doc["rows"]) == 3
    for row in doc["rows"]:
        d = row["distributed"]
        assert [r["rank"] for r in d["per_rank"]] == [0, 1]
        assert d["aggregate_tokens_per_s"] == pytest.approx(sum(r["tokens_per_s"] for r in d["per_rank"]))
        slowest = max(d["per_rank"], key=lambda r: r["median_ms"])
        assert row["time_ms"]["median_ms"] == slowest["median_ms"]
        assert row["tokens_per_s"] == pytest.approx(2 * 16 / (slowest["median_ms"] / 1e3))
        # per-GPU model FLOPs: each rank's own batch of 2 x 16 tokens
        assert row["mfu"] == pytest.approx(row["model_flops"] / (slowest["median_ms"] / 1e3) / 1e12)
        assert row["world_size"] == 2 and row["dist"] == kind


def test_aggregate_by_hand():
    agg = aggregate([{"median_ms": 100.0}, {"median_ms": 200.0}], tokens_per_rank=1000)
    assert agg["aggregate_tokens_per_s"] == pytest.approx(10_000 + 5_000)
    assert agg["slowest_rank"] == 1 and agg["slowest_median_ms"] == 200.0


def test_dist_without_torchrun_is_a_usage_error(capsys, monkeypatch):
    from flopbench.cli import main

    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    code = main(["run", *TINY, "--dist", "ddp", "--no-save"])
    _, err = capsys.readouterr()
    assert code == 2 and "needs torchrun" in err and err.count("\n") == 1


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_nccl_on_the_gpus_here(kind, tmp_path):
    import torch

    n = torch.cuda.device_count()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "-m", "flopbench", "run",
           "--n-layer", "2", "--d-model", "256", "--n-head", "4", "--vocab-size", "1024", "--seq-len", "256",
           "--batch-size", "4", "--iters", "5", "--no-gemm", "--device", "cuda", "--dist", kind,
           "--checkpointing", "none", "--json", "--no-save"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["parallelism"]["backend"] == "nccl" and doc["parallelism"]["world_size"] == n
    assert all(r["status"] == "ok" for r in doc["rows"])
