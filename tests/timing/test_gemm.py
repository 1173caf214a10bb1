"""The GEMM-ceiling microbenchmark."""

import math
import time

import pytest
import torch

from flopbench.errors import UsageError
from flopbench.hardware.detect import detect_gpu
from flopbench.hardware.peaks import match_gpu
from flopbench.timing.gemm import CPU_MIN_SECONDS, CUDA_MIN_SECONDS, CUDA_SHAPES, gemm_ceiling

# --- GEMM ceiling ------------------------------------------------------------------------------


def test_gemm_ceiling_cpu():
    n = 128
    r = gemm_ceiling("cpu", torch.float32, shapes=[(n, n, n)], iters=5, warmup=1)
    assert r["shape"] == [n, n, n] and r["dtype"] == "float32" and len(r["times_ms"]) == 5
    assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("tflops_median", "tflops_min", "tflops_max"))
    assert r["tflops_min"] <= r["tflops_median"] <= r["tflops_max"]
    # FLOPs = 2·n³ per product: the slowest time gives the lowest rate, the fastest the highest.
    assert r["tflops_min"] * 1e12 * max(r["times_ms"]) * 1e-3 == pytest.approx(2 * n**3)
    assert r["tflops_max"] * 1e12 * min(r["times_ms"]) * 1e-3 == pytest.approx(2 * n**3)


def test_gemm_ceiling_searches_shapes_and_runs_the_best_for_its_time_budget():
    """Issue 23 item 15: a 28 ms burst of one square shape was no ceiling for power-capped rows. The search
    times each shape briefly, then the fastest runs for at least `min_seconds` (1 s on CUDA)."""
    shapes = [(64, 64, 64), (192, 128, 256), (256, 256, 256)]
    r = gemm_ceiling("cpu", torch.float32, shapes=shapes, min_seconds=0.05)
    assert [s["shape"] for s in r["search"]] == [list(s) for s in shapes]
    best = max(r["search"], key=lambda s: s["tflops"])
    assert r["shape"] == best["shape"]
    m, n, k = r["shape"]  # an (M x K) @ (K x N) product is 2·M·N·K FLOPs
    assert r["tflops_max"] * 1e12 * min(r["times_ms"]) * 1e-3 == pytest.approx(2 * m * n * k)
    assert r["seconds"] == pytest.approx(sum(r["times_ms"]) / 1e3) and r["seconds"] >= 0.05
    assert r["iters"] == len(r["times_ms"]) and r["sm_clock_mhz"] is None and r["telemetry"] is None  # no NVML


def test_a_shape_that_does_not_fit_is_skipped(monkeypatch):
    """A MIG slice of 5 GB cannot hold five 16384² fp32 matrices: the search goes on with the shapes that fit."""
    from flopbench.timing import gemm

    real = gemm._operands

    def operands(shape, device, dtype):
        if max(shape) > 64:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(shape, device, dtype)

    monkeypatch.setattr(gemm, "_operands", operands)
    r = gemm_ceiling("cpu", torch.float32, shapes=[(256, 256, 256), (64, 64, 64)], min_seconds=0.01)
    assert r["shape"] == [64, 64, 64]
    assert r["search"][0] == {"shape": [256, 256, 256], "tflops": None, "error": "out of memory"}
    with pytest.raises(torch.OutOfMemoryError):
        gemm_ceiling("cpu", torch.float32, shapes=[(256, 256, 256)], min_seconds=0.01)


def test_the_cuda_search_covers_4096_to_16384_and_several_aspect_ratios():
    sizes = {d for shape in CUDA_SHAPES for d in shape}
    assert min(sizes) == 4096 and max(sizes) == 16384
    assert len({(m / k, n / k) for m, n, k in CUDA_SHAPES}) >= 4
    assert CUDA_MIN_SECONDS == 1.0 and CPU_MIN_SECONDS <= 0.2  # tests on a CPU stay fast


def test_gemm_ceiling_records_the_sm_clock_over_its_timed_window(monkeypatch):
    from hardware.fake_nvml import FakeNvml

    from flopbench.hardware.telemetry import Telemetry
    from flopbench.timing.clock import Clock

    nvml = FakeNvml([dict(name="NVIDIA H100 80GB HBM3", sm_clock=[1740, 1770], energy_mj=[0, 10])])
    sampler = Telemetry(nvml, nvml.gpus[0], interval_s=60)
    real_mark = Clock.mark
    monkeypatch.setattr(Clock, "mark", lambda self: (nvml.calls.append("mark"), real_mark(self))[1])
    r = gemm_ceiling("cpu", torch.float32, shapes=[(64, 64, 64)], min_seconds=0.01, telemetry=sampler)
    # the sampler opens the best shape's window (energy, a first sample) just before its first timed mark and
    # closes it (a last sample, energy) after its last: every mark of that window lies between
    calls = [c for c in nvml.calls if c in ("mark", "energy_mj", "sm_clock")]
    start = calls.index("energy_mj")
    assert calls[start:start + 3] == ["energy_mj", "sm_clock", "mark"]
    assert calls[-3:] == ["mark", "sm_clock", "energy_mj"]
    assert calls[start + 2:-2] == ["mark"] * (2 * r["iters"])
    # samples at start and stop (the thread waits 60 s): median of 1740 and 1770 MHz = 1755
    assert r["sm_clock_mhz"] == 1755 and r["telemetry"]["sm_clock_mhz"] == {"median": 1755, "min": 1740}


@pytest.mark.parametrize("kwargs", [dict(shapes=[(0, 8, 8)]), dict(shapes=[]), dict(min_seconds=-1.0),
                                    dict(iters=0), dict(warmup=-1)])
def test_gemm_ceiling_rejects_bad_arguments(kwargs):
    with pytest.raises(UsageError):
        gemm_ceiling("cpu", torch.float32, **kwargs)


@pytest.mark.gpu
def test_gemm_ceiling_cuda_bf16_against_the_table_peak_and_the_wall_clock():
    info = detect_gpu(0)
    entry = match_gpu(info.name)
    assert entry is not None and entry.tflops["bf16"] is not None, (
        f"GPU {info.name!r} has no bf16 peak in peaks.csv: add its dense datasheet peak")
    peak = entry.tflops["bf16"]
    n = 8192
    r = gemm_ceiling("cuda", torch.bfloat16, shapes=[(n, n, n)], iters=20, warmup=5)
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


@pytest.mark.gpu
def test_cuda_gemm_ceiling_runs_a_second_of_the_best_shape_with_its_clock():
    from flopbench.hardware.telemetry import open_telemetry

    sampler = open_telemetry(torch.device("cuda", 0))
    try:
        r = gemm_ceiling("cuda", torch.bfloat16, telemetry=sampler)
    finally:
        if sampler:
            sampler.close()
    assert tuple(r["shape"]) in CUDA_SHAPES and len(r["search"]) == len(CUDA_SHAPES)
    assert r["seconds"] >= CUDA_MIN_SECONDS and r["iters"] == len(r["times_ms"])
    fitted = [s["tflops"] for s in r["search"] if s["tflops"] is not None]
    assert max(fitted) == next(s["tflops"] for s in r["search"] if s["shape"] == r["shape"])
    if sampler:  # NVML there: the SM clock of the sustained window
        assert r["sm_clock_mhz"] > 0 and r["telemetry"]["window_s"] >= CUDA_MIN_SECONDS
