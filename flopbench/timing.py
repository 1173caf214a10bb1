"""Time a step: warm-up, then N timed iterations; CUDA events on a GPU, a monotonic clock on the CPU.

GPU work is asynchronous, so on CUDA each iteration is bracketed by a pair of events recorded on the
stream, and all are read after one synchronize at the end (no host sync between iterations, which would
add launch gaps). On the CPU `time.perf_counter` brackets each call. Statistics are medians and spread
(min, max, interquartile range): these machines are noisy, a mean hides that.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class TimingStats:
    """Per-iteration wall times of one timed step, in milliseconds."""

    times_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    @property
    def max_ms(self) -> float:
        return max(self.times_ms)

    @property
    def iqr_ms(self) -> float:
        if len(self.times_ms) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.times_ms, n=4, method="inclusive")
        return q3 - q1

    def as_dict(self) -> dict:
        return {"median_ms": self.median_ms, "min_ms": self.min_ms, "max_ms": self.max_ms,
                "iqr_ms": self.iqr_ms, "n": len(self.times_ms), **asdict(self)}


def time_step(step: Callable[[int], object], device: torch.device | str, warmup: int = 3,
              iters: int = 10) -> TimingStats:
    """Run `step(i)` `warmup` times untimed, then `iters` times timed; return the per-iteration times."""
    if iters < 1 or warmup < 0:
        raise ValueError(f"time_step needs iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    device = torch.device(device)
    for i in range(warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(iters)]
        for i, (start, end) in enumerate(events):
            start.record()
            step(warmup + i)
            end.record()
        torch.cuda.synchronize(device)
        return TimingStats(tuple(start.elapsed_time(end) for start, end in events))
    times = []
    for i in range(iters):
        t0 = time.perf_counter()
        step(warmup + i)
        times.append((time.perf_counter() - t0) * 1e3)
    return TimingStats(tuple(times))
