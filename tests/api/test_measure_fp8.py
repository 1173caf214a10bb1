"""`flopbench.measure(dtype="fp8")` around a training loop of a module converted to float8 with torchao, on the
CPU: the float8 FLOPs counted apart and three MFUs, against hand counts (`helpers.FP8_*`)."""

import pytest
import torch
from helpers import FP8_BATCH, FP8_FORWARD, FP8_IN, HEAD_FORWARD, float8_mlp, weighted_utilization

import flopbench
from flopbench import UsageError

pytest.importorskip("torchao.float8")


def loop(model, m, steps):
    x = torch.randn(FP8_BATCH, FP8_IN)
    for _ in m.steps(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x).float().pow(2).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)


def test_fp8_loop_counts_the_float8_layers_apart_and_rates_three_ways():
    model = float8_mlp()
    with flopbench.measure(model, peak_tflops=2, dtype="fp8", peak_fp8_tflops=4) as m:
        loop(model, m, 3)
    train = 3 * (FP8_FORWARD + HEAD_FORWARD)
    for r in m.records:
        s = r["time_ms"] / 1e3
        assert r["hardware_flops"] == r["model_flops"] == train
        assert r["fp8_flops"] == 3 * FP8_FORWARD == 3 * 2 * 32 * (64 * 128 + 128 * 64)
        assert r["mfu"] == pytest.approx(train / s / 2e12, rel=1e-9)
        assert r["mfu_fp8_peak"] == pytest.approx(train / s / 4e12, rel=1e-9)
        assert r["mfu_weighted"] == pytest.approx(weighted_utilization(train, 3 * FP8_FORWARD, s, 2, 4), rel=1e-9)
        assert r["hfu_weighted"] == r["mfu_weighted"]
    summary = m.summary()
    s = summary["time_ms"]["median_ms"] / 1e3
    assert summary["compute_dtype"] == "bf16" and summary["peak_fp8_tflops"] == 4
    assert summary["fp8_flops"] == 3 * FP8_FORWARD
    assert summary["mfu_weighted"] == pytest.approx(weighted_utilization(train, 3 * FP8_FORWARD, s, 2, 4), rel=1e-9)


def test_without_fp8_the_fields_are_none():
    model = float8_mlp()
    with flopbench.measure(model, peak_tflops=2) as m:
        loop(model, m, 2)
    assert all(r["fp8_flops"] is None and r["mfu_weighted"] is None for r in m.records)
    assert m.summary()["peak_fp8_tflops"] is None and m.summary()["mfu_fp8_peak"] is None


def test_fp8_on_a_module_without_float8_layers_is_refused_at_the_counted_step():
    model = torch.nn.Sequential(torch.nn.Linear(FP8_IN, 16))
    with pytest.raises(UsageError) as info:
        with flopbench.measure(model, peak_tflops=2, dtype="fp8") as m:
            loop(model, m, 2)
    assert str(info.value) == ("measure(dtype='fp8'): Sequential ran no op with a float8 operand; convert it with "
                               "torchao.float8.convert_to_float8_training first")


def test_peak_fp8_without_fp8_is_refused():
    with pytest.raises(UsageError, match=r"^peak_fp8_tflops=4: it applies to dtype='fp8' only"):
        flopbench.measure(float8_mlp(), peak_fp8_tflops=4)
