"""`timing.clock`: a step of known length times at its length, every step runs once, and the statistics by hand."""

import time

import pytest

from flopbench.timing.clock import Clock, TimingStats, time_step


def test_a_sleep_step_times_at_its_length():
    # time.sleep(0.02) lasts at least 20 ms; a loaded CI machine may add some, not 30 ms at the median.
    stats = time_step(lambda i: time.sleep(0.02), "cpu", warmup=1, iters=5)
    assert len(stats.times_ms) == 5
    assert 18.0 <= stats.median_ms <= 50.0, stats
    assert stats.min_ms >= 18.0, stats


def test_the_marks_bracket_the_step():
    # The step measures itself; the clock's start mark must come before it and the end mark after it.
    inner = []

    def step(i):
        start = time.perf_counter()
        time.sleep(0.005)
        inner.append((time.perf_counter() - start) * 1e3)

    stats = time_step(step, "cpu", warmup=2, iters=4)
    timed = inner[2:]  # the warm-up steps are not timed
    assert len(timed) == len(stats.times_ms) == 4
    for outer, own in zip(stats.times_ms, timed):
        assert outer >= own > 4.5, (outer, own)


@pytest.mark.parametrize("warmup, iters", [(0, 1), (3, 5), (2, 1)])
def test_the_step_runs_exactly_warmup_plus_iters_times(warmup, iters):
    calls = []
    stats = time_step(calls.append, "cpu", warmup=warmup, iters=iters)
    assert calls == list(range(warmup + iters))  # step(i), i = 0 .. warmup + iters - 1, each once
    assert len(stats.times_ms) == iters


@pytest.mark.parametrize("warmup, iters", [(0, 0), (-1, 3)])
def test_bad_counts_are_refused(warmup, iters):
    with pytest.raises(ValueError, match="iters >= 1 and warmup >= 0"):
        time_step(lambda i: None, "cpu", warmup=warmup, iters=iters)


def test_cpu_clock_elapsed_is_the_perf_counter_difference_in_ms():
    clock = Clock("cpu")
    assert clock.elapsed_ms(1.0, 1.25) == pytest.approx(250.0)
    a = clock.mark()
    time.sleep(0.01)
    b = clock.mark()
    assert 9.5 <= clock.elapsed_ms(a, b) <= 1000.0  # milliseconds: seconds would give 0.01


# --------------------------------------------------------------------------------------------------
# Statistics, by hand
# --------------------------------------------------------------------------------------------------


def test_stats_of_five_times_with_an_outlier():
    # Sorted 1, 2, 3, 4, 100. Median: the middle value, 3 (the mean would be 22).
    # Inclusive quartiles (statistics.quantiles(method="inclusive"), numpy's default "linear"): the
    # quartile p sits at 0-based position p·(n - 1) of the sorted list: q1 at 0.25·4 = 1 -> 2, q3 at
    # 0.75·4 = 3 -> 4; IQR = 4 - 2 = 2. (q3 - min would be 3; the exclusive method, positions
    # p·(n + 1) - 1 = 0.5 and 3.5, gives q1 1.5, q3 52 and an IQR of 50.5.)
    s = TimingStats((4.0, 100.0, 1.0, 3.0, 2.0))  # order does not matter
    assert s.median_ms == 3.0 and s.min_ms == 1.0 and s.max_ms == 100.0
    assert s.iqr_ms == pytest.approx(2.0)
    d = s.as_dict()
    assert (d["median_ms"], d["min_ms"], d["max_ms"], d["n"]) == (3.0, 1.0, 100.0, 5)
    assert d["iqr_ms"] == pytest.approx(2.0) and d["times_ms"] == (4.0, 100.0, 1.0, 3.0, 2.0)


def test_stats_of_four_times():
    # Sorted 1, 2, 3, 10. Median: the mean of the two middle values, (2 + 3) / 2 = 2.5 (median_low: 2).
    # Inclusive quartiles at positions 0.25·3 = 0.75 -> 1 + 0.75·(2 - 1) = 1.75 and 0.75·3 = 2.25 ->
    # 3 + 0.25·(10 - 3) = 4.75: IQR 3.0.
    s = TimingStats((10.0, 1.0, 3.0, 2.0))
    assert s.median_ms == 2.5
    assert s.iqr_ms == pytest.approx(3.0)


def test_stats_of_one_time():
    s = TimingStats((7.5,))
    assert (s.median_ms, s.min_ms, s.max_ms, s.iqr_ms) == (7.5, 7.5, 7.5, 0.0)


def test_before_timed_runs_after_the_warm_up_and_before_the_first_mark(monkeypatch):
    """Issue 23 item 14: what starts a measurement window (telemetry) runs outside the timed steps."""
    events = []
    real_mark = Clock.mark
    monkeypatch.setattr(Clock, "mark", lambda self: (events.append("mark"), real_mark(self))[1])
    time_step(lambda i: events.append(f"step{i}"), "cpu", warmup=2, iters=2,
              before_timed=lambda: events.append("start"))
    assert events == ["step0", "step1", "start", "mark", "step2", "mark", "mark", "step3", "mark"]
