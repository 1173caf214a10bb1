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


class Clock:
    """Timestamps on a device's timeline, read after the work is done.

    On CUDA a mark is an event recorded on the device's current stream (no host synchronization; call
    `sync()` once before reading); on the CPU it is `time.perf_counter()`. `elapsed_ms(a, b)` is the
    time between two marks.
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            return event
        return time.perf_counter()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def elapsed_ms(self, start, end) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3


def time_step(step: Callable[[int], object], device: torch.device | str, warmup: int = 3,
              iters: int = 10, before_timed: Callable[[], object] | None = None) -> TimingStats:
    """Run `step(i)` `warmup` times untimed, then `iters` times timed; return the per-iteration times.

    `before_timed()` runs after the warm-up has finished on the device and before the first timed mark:
    what opens a measurement window (telemetry) costs no timed step anything."""
    if iters < 1 or warmup < 0:
        raise ValueError(f"time_step needs iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    clock = Clock(device)
    for i in range(warmup):
        step(i)
    clock.sync()
    if before_timed is not None:
        before_timed()
    marks = []
    for i in range(iters):
        start = clock.mark()
        step(warmup + i)
        marks.append((start, clock.mark()))
    clock.sync()
    return TimingStats(tuple(clock.elapsed_ms(start, end) for start, end in marks))
