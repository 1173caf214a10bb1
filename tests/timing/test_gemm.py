"""The GEMM-ceiling microbenchmark."""

import math

import pytest
import torch

from flopbench.errors import UsageError
from flopbench.hardware.detect import detect_gpu
from flopbench.hardware.peaks import peak_tflops
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
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gemm_ceiling_cuda_bf16_within_table_peak():
    info = detect_gpu(0)
    peak = peak_tflops(info.name, "bf16")
    if peak is None:
        pytest.skip(f"no bf16 peak in the table for {info.name!r}")
    r = gemm_ceiling("cuda", torch.bfloat16, size=8192, iters=20, warmup=5)
    assert 0.10 * peak <= r["tflops_median"] <= peak, (r, peak)
