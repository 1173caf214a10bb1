"""The copy-bandwidth ceiling: the GB/s a device-to-device copy of a large buffer reaches on this device, a
practical upper bound for MBU, measured beside the datasheet bandwidth (as the GEMM ceiling stands beside
the peak for MFU). A copy reads and writes the buffer once each, 2 x its size moved, as STREAM's "Copy"
counts it (McCalpin 1995)."""

from __future__ import annotations

import statistics

import torch

from ..errors import UsageError
from .clock import time_step
from .rates import gb_per_s


def copy_bandwidth(device: str | torch.device, nbytes: int = 2**28, iters: int = 20, warmup: int = 5) -> dict:
    """Time `iters` copies of an `nbytes` buffer into another on `device`; report the GB/s they reach."""
    if nbytes < 1 or iters < 1 or warmup < 0:
        raise UsageError(f"copy_bandwidth needs nbytes >= 1, iters >= 1, warmup >= 0; got {nbytes}, {iters}, {warmup}")
    device = torch.device(device)
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    stats = time_step(lambda i: dst.copy_(src), device, warmup=warmup, iters=iters)
    rates = [gb_per_s(2 * nbytes, t * 1e-3) for t in stats.times_ms]
    return {"bytes": nbytes, "device": str(device), "gbps_median": statistics.median(rates),
            "gbps_min": min(rates), "gbps_max": max(rates)}
