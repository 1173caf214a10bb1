"""The GEMM-ceiling microbenchmark."""

import math
import time

import pytest
import torch

from flopbench.errors import UsageError
from flopbench.hardware.detect import detect_gpu
from flopbench.hardware.peaks import match_gpu
from flopbench.timing.gemm import gemm_ceiling

# --- GEMM ceiling ------------------------------------------------------------------------------


def test_gemm_ceiling_cpu():
    n = 128
    r = gemm_ceiling("cpu", torch.float32, size=n, iters=5, warmup=1)
    assert r["size"] == n and r["dtype"] == "float32" and len(r["times_ms"]) == 5
    assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("tflops_median", "tflops_min", "tflops_max"))
    assert r["tflops_min"] <= r["tflops_median"] <= r["tflops_max"]
    # FLOPs = 2·n³ per product: the slowest time gives the lowest rate, the fastest the highest.
    assert r["tflops_min"] * 1e12 * max(r["times_ms"]) * 1e-3 == pytest.approx(2 * n**3)
    assert r["tflops_max"] * 1e12 * min(r["times_ms"]) * 1e-3 == pytest.approx(2 * n**3)


def test_gemm_ceiling_rejects_bad_arguments():
    with pytest.raises(UsageError):
        gemm_ceiling("cpu", torch.float32, size=0)


@pytest.mark.gpu
def test_gemm_ceiling_cuda_bf16_against_the_table_peak_and_the_wall_clock():
    info = detect_gpu(0)
    entry = match_gpu(info.name)
    assert entry is not None and entry.tflops["bf16"] is not None, (
        f"GPU {info.name!r} has no bf16 peak in peaks.csv: add its dense datasheet peak")
    peak = entry.tflops["bf16"]
    n = 8192
    r = gemm_ceiling("cuda", torch.bfloat16, size=n, iters=20, warmup=5)
    # Hopper (H100 / H200) reaches ~780-800 of 989.4 dense TFLOP/s on 8192³ bf16 matmuls; 0.5 x peak is a floor.
    floor = 0.5 if entry.key.startswith(("h100", "h200")) else 0.1
    assert floor * peak <= r["tflops_median"] <= 1.02 * peak, (r["tflops_median"], peak)
    # Second method: 20 products between two synchronizes, timed with time.perf_counter.
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(5):
        torch.mm(a, b)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        torch.mm(a, b)
    torch.cuda.synchronize()
    wall_tflops = 2 * n**3 * 20 / (time.perf_counter() - start) / 1e12
    assert r["tflops_median"] == pytest.approx(wall_tflops, rel=0.15)
