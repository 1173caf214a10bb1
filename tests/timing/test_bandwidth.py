"""The copy-bandwidth ceiling: bytes moved per copy (read + write) over the measured times."""

import pytest

from flopbench.errors import UsageError
from flopbench.timing import bandwidth
from flopbench.timing.clock import TimingStats


def test_copy_bandwidth_counts_a_read_and_a_write(monkeypatch):
    # pretend the copies took 1, 2 and 4 ms: 2 x 1 MiB moved each -> 2.097, 1.049, 0.524 GB/s
    def fake_time_step(step, device, warmup, iters):
        step(0)
        return TimingStats((1.0, 2.0, 4.0))

    monkeypatch.setattr(bandwidth, "time_step", fake_time_step)
    r = bandwidth.copy_bandwidth("cpu", 2**20, iters=3, warmup=0)
    assert r["gbps_max"] == pytest.approx(2 * 2**20 / 1e-3 / 1e9)
    assert r["gbps_median"] == pytest.approx(2 * 2**20 / 2e-3 / 1e9)
    assert r["gbps_min"] == pytest.approx(2 * 2**20 / 4e-3 / 1e9)


def test_copy_bandwidth_on_the_cpu_is_positive():
    r = bandwidth.copy_bandwidth("cpu", 2**20, iters=3, warmup=1)
    assert 0 < r["gbps_min"] <= r["gbps_median"] <= r["gbps_max"]


def test_copy_bandwidth_rejects_bad_arguments():
    with pytest.raises(UsageError):
        bandwidth.copy_bandwidth("cpu", 0)
