"""timing.memory: the estimate by hand, the refusal before building, the peak memory of a row."""

import resource

import pytest
import torch

from flopbench.api import run as run_module
from flopbench.api.run import RunOptions, run
from flopbench.cli import main
from flopbench.model.config import ModelConfig
from flopbench.timing import memory
from flopbench.timing.device import ModelDoesNotFit

CFG = ModelConfig("mem", n_layer=2, d_model=32, n_head=2, vocab_size=64, max_seq_len=16)
# Parameters by hand: wte 64·32 + wpe 16·32 + 2 blocks x (LN 64 + c_attn 32·96+96 + c_proj 32·32+32 + LN 64
# + c_fc 32·128+128 + c_proj 128·32+32) + ln_f 64 = 2048 + 512 + 2 x 12,704 + 64 (LM head tied)
PARAMS = 2048 + 512 + 2 * (64 + 3168 + 1056 + 64 + 4224 + 4128) + 64
B, T = 2, 16
SBH = T * B * 32


def test_estimate_by_hand():
    assert PARAMS == 28_032
    e = memory.estimate(CFG, B, T, "train_step", "none", "fp32")
    assert (e.weights, e.gradients, e.optimizer) == (4 * PARAMS, 4 * PARAMS, 8 * PARAMS)
    # Korthikanti et al. 2022, Eq. 1 without the 5·a·s²·b scores (fused SDPA): 34·s·b·h bytes at 16 bits,
    # x 4/2 in fp32
    assert e.activations == 2 * 34 * SBH * 2 == 139_264
    assert e.logits == B * T * 64 * (4 + 8) == 24_576  # logits + their fp32 copy and gradient
    assert e.total == 612_352
    full = memory.estimate(CFG, B, T, "fwd_bwd", "full", "bf16")
    # checkpointed: each block's input (2·s·b·h at 16 bits) + one block being recomputed (34·s·b·h)
    assert full.activations == 2 * 2 * SBH + 34 * SBH and full.optimizer == 0
    forward = memory.estimate(CFG, B, T, "forward", "none", "bf16")
    assert (forward.gradients, forward.activations, forward.logits) == (0, 0, B * T * 64 * 2)
    sharded = memory.estimate(CFG, B, T, "train_step", "none", "fp32", shards=2)
    assert sharded.weights == 2 * PARAMS and sharded.optimizer == 4 * PARAMS


def test_llama3_70b_on_a_24_gb_cpu_is_refused_up_front(monkeypatch, capsys):
    monkeypatch.setattr(run_module, "available_bytes", lambda device: (24_000_000_000, "test: 24 GB"))
    built = []
    monkeypatch.setattr(run_module, "build_model", lambda *a, **k: built.append(1))
    code = main(["run", "--model", "llama3-70b", "--device", "cpu", "--seq-len", "128", "--batch-size", "1",
                 "--no-save", "--no-gemm"])
    _, err = capsys.readouterr()
    assert code == 2 and built == []
    assert err.count("\n") == 1 and "does not fit on cpu" in err
    # 70,553,706,496 parameters x 4 bytes (fp32) = 282.2 GB of weights alone
    assert "weights 282.2 GB" in err and "24.0 GB free" in err


def test_a_row_that_cannot_fit_on_the_cpu_is_not_run(monkeypatch):
    forward = memory.estimate(CFG, B, T, "forward", "none", "fp32").total
    train = memory.estimate(CFG, B, T, "train_step", "none", "fp32").total
    free = (forward + train) // 2  # the forward fits, the train step does not
    monkeypatch.setattr(run_module, "available_bytes", lambda device: (free, "test"))
    doc = run(CFG, RunOptions(batch_size=B, seq_len=T, device="cpu", warmup=0, iters=1, gemm=False, out=None,
                              checkpointing="none", modes=("forward", "train_step")), progress=lambda m: None)
    assert [r["status"] for r in doc["rows"]] == ["ok", "oom"]
    assert "not run" in doc["rows"][1]["error"] and doc["rows"][1]["time_ms"] == {}
    assert doc["rows"][1]["memory_estimate_bytes"] == train == doc["memory"]["estimates"]["train_step/none"]["total"]


def test_check_fits_refuses_only_when_nothing_fits():
    plan = [("forward", "none"), ("train_step", "none")]
    smallest = memory.estimate(CFG, B, T, "forward", "none", "fp32").total
    verdicts = memory.check_fits(CFG, B, T, plan, torch.device("cpu"), "fp32", available=(smallest, "test"))
    assert verdicts[("forward", "none")].fits and not verdicts[("train_step", "none")].fits
    with pytest.raises(ModelDoesNotFit, match="smallest row \\(forward, checkpointing none\\)"):
        memory.check_fits(CFG, B, T, plan, torch.device("cpu"), "fp32", available=(smallest - 1, "test"))
    # unknown free memory refuses nothing
    assert all(v.fits for v in memory.check_fits(CFG, B, T, plan, torch.device("cpu"), "fp32",
                                                 available=(None, "unknown")).values())


def test_on_a_gpu_rows_run_and_a_real_oom_decides():
    plan = [("forward", "none"), ("train_step", "none")]
    smallest = memory.estimate(CFG, B, T, "forward", "none", "fp32").total
    verdicts = memory.check_fits(CFG, B, T, plan, torch.device("cuda", 0), "fp32", available=(smallest, "test"))
    assert all(v.fits for v in verdicts.values())


def test_available_bytes_on_linux_reads_meminfo():
    free, source = memory.available_bytes(torch.device("cpu"))
    with open("/proc/meminfo") as f:
        available_kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    assert source == "MemAvailable in /proc/meminfo"
    assert abs(free - available_kb * 1024) < 2**30  # read a moment apart


def test_peak_bytes_on_a_gpu_is_reset_per_row(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 123_456_789)
    gpu = torch.device("cuda", 0)
    memory.reset_peak(gpu)
    assert calls == ["reset"] and memory.peak_bytes(gpu) == 123_456_789


def test_rows_record_peak_memory_on_the_cpu():
    doc = run(CFG, RunOptions(batch_size=B, seq_len=T, device="cpu", warmup=0, iters=1, gemm=False, out=None,
                              checkpointing="none", modes=("forward",)), progress=lambda m: None)
    peak = doc["rows"][0]["peak_memory_bytes"]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
    assert 0 < peak <= after
