"""The GEMM ceiling: the TFLOP/s that large matmuls sustain on this device, a practical upper bound for MFU,
measured beside the datasheet peak.

Like-for-like with the rows it bounds: a short burst runs at unthrottled clocks while a row's steps run
power-capped, so the ceiling is first a quick search over a few shapes (`CUDA_SHAPES`: 4096 to 16384 and
several aspect ratios, as matmul autotuners search), then the fastest shape run for at least
`CUDA_MIN_SECONDS` of work, with the SM clock it held (from a `hardware.telemetry.Telemetry` where NVML is
there). On the CPU the shapes are small and the budget short, so tests stay fast.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import torch

from ..errors import UsageError
from .clock import time_step
from .rates import tflops_per_s

#: (M, N, K) searched on CUDA: squares of 4096, 8192 and 16384, and four aspect ratios of them.
CUDA_SHAPES = ((4096, 4096, 4096), (8192, 8192, 8192), (16384, 16384, 16384), (16384, 8192, 8192),
               (8192, 16384, 8192), (8192, 8192, 16384), (16384, 16384, 4096))
#: (M, N, K) searched on the CPU: small, so a test's run spends milliseconds here.
CPU_SHAPES = ((256, 256, 256), (512, 512, 512), (512, 256, 1024))
#: Seconds of work the best shape runs for: long enough for the power cap to act, as it does on the rows.
CUDA_MIN_SECONDS = 1.0
CPU_MIN_SECONDS = 0.1
#: Timed products per shape in the search (after two warm-up products).
SEARCH_ITERS = 3


def _operands(shape: tuple[int, int, int], device: torch.device, dtype: torch.dtype):
    """Two (A, B) pairs of random normal inputs (zeros would let some hardware run cooler and faster) and the
    output, for an (M x K) @ (K x N) product; the pairs alternate so no product reads what the last left in
    cache."""
    m, n, k = shape
    gen = torch.Generator(device).manual_seed(0)
    pairs = [(torch.randn(m, k, device=device, dtype=dtype, generator=gen),
              torch.randn(k, n, device=device, dtype=dtype, generator=gen)) for _ in range(2)]
    return pairs, torch.empty(m, n, device=device, dtype=dtype)


def _check(shapes, min_seconds, iters, warmup) -> None:
    bad_shape = not shapes or any(len(s) != 3 or min(s) < 1 for s in shapes)
    if bad_shape or (iters is not None and iters < 1) or warmup < 0 or not (min_seconds > 0):
        raise UsageError(f"gemm_ceiling needs (M, N, K) shapes >= 1, min_seconds > 0, iters >= 1 and warmup >= 0; "
                         f"got shapes={shapes}, min_seconds={min_seconds}, iters={iters}, warmup={warmup}")


def gemm_ceiling(device: str | torch.device, dtype: torch.dtype, shapes: Sequence[tuple[int, int, int]] | None = None,
                 min_seconds: float | None = None, iters: int | None = None, warmup: int = 3,
                 telemetry=None) -> dict:
    """Search `shapes` for the fastest matmul, then time it for at least `min_seconds` of work (or exactly
    `iters` products) and report the TFLOP/s it sustains, its shape and the SM clock it held.

    An (M x K) @ (K x N) product costs 2·M·N·K FLOPs. Defaults: `CUDA_SHAPES` and `CUDA_MIN_SECONDS` on
    CUDA, `CPU_SHAPES` and `CPU_MIN_SECONDS` elsewhere. Each shape is timed for `SEARCH_ITERS` products
    (`clock.time_step`); the best median wins. `telemetry` (a `hardware.telemetry.Telemetry`, or None) is
    started after the best shape's warm-up and before its first timed mark, and stopped after the last:
    the document's `sm_clock_mhz` is its median SM clock, `telemetry` its whole summary (None without)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    shapes = [tuple(s) for s in (CUDA_SHAPES if cuda else CPU_SHAPES)] if shapes is None else list(shapes)
    min_seconds = (CUDA_MIN_SECONDS if cuda else CPU_MIN_SECONDS) if min_seconds is None else min_seconds
    _check(shapes, min_seconds, iters, warmup)

    search, error = [], None
    for shape in shapes:
        try:
            pairs, out = _operands(shape, device, dtype)
            stats = time_step(lambda i, p=pairs, o=out: torch.mm(*p[i % 2], out=o), device, warmup=2,
                              iters=SEARCH_ITERS)
        except torch.OutOfMemoryError as e:  # a small device (a MIG slice): the shapes that fit are searched
            search.append({"shape": list(shape), "tflops": None, "error": "out of memory"})
            error = e
            continue
        finally:
            pairs = out = None
        search.append({"shape": list(shape), "tflops": tflops_per_s(2 * math.prod(shape), stats.median_ms * 1e-3)})
    if all(s["tflops"] is None for s in search):
        raise error
    best = max((s for s in search if s["tflops"] is not None), key=lambda s: s["tflops"])
    shape = tuple(best["shape"])
    flops = 2 * math.prod(shape)
    pairs, out = _operands(shape, device, dtype)

    def product(i: int) -> None:
        torch.mm(*pairs[i % 2], out=out)

    # chunks of a quarter of the products min_seconds takes at the searched rate, until min_seconds is run: a
    # device slower than its search (a power cap, a busy CPU) overshoots by at most one chunk
    chunk = iters or max(1, math.ceil(min_seconds * best["tflops"] * 1e12 / flops / 4))
    times_ms = list(time_step(product, device, warmup=warmup, iters=chunk,
                              before_timed=telemetry.start if telemetry else None).times_ms)
    while iters is None and sum(times_ms) < min_seconds * 1e3:
        times_ms += time_step(product, device, warmup=0, iters=chunk).times_ms
    summary = telemetry.stop() if telemetry else None
    tflops = [tflops_per_s(flops, t * 1e-3) for t in times_ms]
    return {
        "shape": list(shape),
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "tflops_median": statistics.median(tflops),
        "tflops_min": min(tflops),
        "tflops_max": max(tflops),
        "iters": len(times_ms),
        "seconds": sum(times_ms) / 1e3,
        "sm_clock_mhz": ((summary or {}).get("sm_clock_mhz") or {}).get("median"),
        "telemetry": summary,
        "search": search,
        "times_ms": times_ms,
    }
