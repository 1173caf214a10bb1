"""The GEMM ceiling: the TFLOP/s that large square matmuls reach on this device, a practical upper bound
for MFU, measured beside the datasheet peak."""

from __future__ import annotations

import statistics

import torch

from ..errors import UsageError
from .clock import time_step
from .rates import tflops_per_s


def gemm_ceiling(device: str | torch.device, dtype: torch.dtype, size: int = 8192, iters: int = 20,
                 warmup: int = 5) -> dict:
    """Time ``iters`` square ``size``×``size`` matmuls and report the TFLOP/s they reach.

    Each product costs 2·size³ FLOPs. Inputs are random normal (zeros would let some hardware run
    cooler and faster) and alternate between two pairs; timed by `clock.time_step`.
    """
    if size < 1 or iters < 1 or warmup < 0:
        raise UsageError(f"gemm_ceiling needs size >= 1, iters >= 1, warmup >= 0; got {size}, {iters}, {warmup}")
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    pairs = [tuple(torch.randn(size, size, generator=gen).to(device=device, dtype=dtype) for _ in range(2))
             for _ in range(2)]
    out = torch.empty(size, size, device=device, dtype=dtype)
    flops = 2 * size**3
    stats = time_step(lambda i: torch.mm(*pairs[i % 2], out=out), device, warmup=warmup, iters=iters)
    times_ms = list(stats.times_ms)
    tflops = [tflops_per_s(flops, t * 1e-3) for t in times_ms]
    return {
        "size": size,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "tflops_median": statistics.median(tflops),
        "tflops_min": min(tflops),
        "tflops_max": max(tflops),
        "times_ms": times_ms,
    }
