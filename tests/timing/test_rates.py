"""MFU and HFU (`timing.rates`): the one division, checked by hand and as a property over random inputs."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flopbench.timing.rates import rates


@settings(max_examples=200, deadline=None)
@given(flops=st.integers(1, 10**18), hw_extra=st.integers(0, 10**17), peak=st.floats(1.0, 5000.0),
       t1=st.floats(1e-3, 1e4), factor=st.floats(1.001, 100.0))
def test_mfu_and_hfu_fall_as_time_grows(flops, hw_extra, peak, t1, factor):
    fast = rates(flops, flops + hw_extra, t1 / 1e3, peak)
    slow = rates(flops, flops + hw_extra, t1 * factor / 1e3, peak)
    assert slow.mfu < fast.mfu and slow.hfu < fast.hfu and slow.achieved_tflops < fast.achieved_tflops
    assert fast.hfu >= fast.mfu
    assert fast.mfu == pytest.approx(flops / (t1 / 1e3) / (peak * 1e12))


def test_rates_by_hand():
    # 6e12 model FLOPs and 8e12 hardware FLOPs in 20 ms on a 1000 TFLOP/s peak:
    # 6e12 / 0.02 s = 300 TFLOP/s -> MFU 0.3; 8e12 / 0.02 s = 400 TFLOP/s -> HFU 0.4.
    r = rates(6 * 10**12, 8 * 10**12, 0.02, 1000.0)
    assert r.achieved_tflops == pytest.approx(300.0)
    assert r.mfu == pytest.approx(0.3) and r.hfu == pytest.approx(0.4)
    assert rates(6 * 10**12, None, 0.02, None) == type(r)(pytest.approx(300.0), None, None)


def test_bandwidth_utilization_by_hand():
    from flopbench.timing.rates import bandwidth_utilization, gb_per_s

    # 3.35e9 bytes in 2 ms = 1675 GB/s; on a 3350 GB/s H100 SXM that is half: MBU 0.5
    assert gb_per_s(3.35e9, 0.002) == pytest.approx(1675.0)
    assert bandwidth_utilization(3.35e9, 0.002, 3350.0) == pytest.approx(0.5)
    assert bandwidth_utilization(3.35e9, 0.002, None) is None
