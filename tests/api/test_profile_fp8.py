"""`flopbench.profile(dtype="fp8")` of a module converted to float8 with torchao, on the CPU: the float8 FLOPs
apart and three MFUs, against hand counts (`helpers.FP8_*`)."""

import pytest
import torch
from helpers import FP8_BATCH, FP8_FORWARD, FP8_IN, HEAD_FORWARD, float8_mlp, weighted_utilization

import flopbench
from flopbench import UsageError
from flopbench.flops.counter import count_module
from flopbench.model.inputs import Inputs

pytest.importorskip("torchao.float8")

FAST = dict(warmup=0, iters=2, peak_tflops=2, peak_fp8_tflops=4, fvcore=False)


def x():
    return torch.randn(FP8_BATCH, FP8_IN)


@pytest.mark.parametrize("meta", [True, False])
def test_fp8_profile_counts_the_float8_layers_apart_and_rates_three_ways(meta):
    p = flopbench.profile(float8_mlp(), x(), dtype="fp8", meta=meta, **FAST)
    assert p.dtype == "fp8" and p.compute_dtype == "bf16"  # mfu: against the bf16 column
    assert (p.peak_tflops, p.peak_fp8_tflops, p.peak_fp8_source) == (2, 4, "peak_fp8_tflops")
    assert p.counted_on == ("meta" if meta else "cpu")
    assert (p.forward_flops, p.train_flops) == (FP8_FORWARD + HEAD_FORWARD, 3 * (FP8_FORWARD + HEAD_FORWARD))
    for r, passes in zip(p.rows, (1, 3), strict=True):
        assert r.status == "ok" and r.fp8_flops == r.fp8_model_flops == passes * FP8_FORWARD
        s = r.time_ms["median_ms"] / 1e3
        assert r.mfu == pytest.approx(r.model_flops / s / 2e12, rel=1e-9)
        assert r.mfu_fp8_peak == pytest.approx(r.model_flops / s / 4e12, rel=1e-9)
        assert r.mfu_weighted == pytest.approx(weighted_utilization(r.model_flops, r.fp8_flops, s, 2, 4), rel=1e-9)
        assert r.hfu_weighted == r.mfu_weighted and r.hfu_fp8_peak == r.mfu_fp8_peak  # nothing recomputed
        assert r.mfu_fp8_peak < r.mfu_weighted < r.mfu
    record = p.records()[1]
    assert record["fp8_flops"] == 3 * FP8_FORWARD == 3 * 2 * 32 * (64 * 128 + 128 * 64)


def test_fp8_checkpointing_full_recomputes_float8_work_in_hfu_only():
    p = flopbench.profile(float8_mlp(), x(), dtype="fp8", checkpointing="full", **FAST)
    r = p.row("fwd_bwd")
    # torch's early stop ends the recompute once the head's input is rebuilt: the float8 layers run again, the
    # head does not
    assert (r.fp8_model_flops, r.fp8_flops) == (3 * FP8_FORWARD, 4 * FP8_FORWARD)
    assert r.hardware_flops == r.model_flops + FP8_FORWARD
    s = r.time_ms["median_ms"] / 1e3
    assert r.hfu_weighted == pytest.approx(weighted_utilization(r.hardware_flops, r.fp8_flops, s, 2, 4), rel=1e-9)
    assert r.mfu_weighted == pytest.approx(weighted_utilization(r.model_flops, r.fp8_model_flops, s, 2, 4),
                                           rel=1e-9)


def test_count_module_float8_on_meta_and_on_the_device_agree():
    module, inputs = float8_mlp(), Inputs.of(x())
    meta, cpu = count_module(module, inputs), count_module(module, inputs, meta=False)
    assert meta.counted_on == "meta" and cpu.counted_on == "cpu"
    for c in (meta, cpu):
        assert (c.fp8_forward, c.fp8_train, c.fp8_train_recompute) == (FP8_FORWARD, 3 * FP8_FORWARD, None)


def test_without_fp8_the_fields_are_none():
    p = flopbench.profile(float8_mlp(), x(), warmup=0, iters=1, peak_tflops=2, fvcore=False)
    assert p.peak_fp8_tflops is None
    assert all(r.fp8_flops is None and r.mfu_weighted is None and r.hfu_fp8_peak is None for r in p.rows)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(dtype="fp8"), "profile(dtype='fp8'): Sequential ran no op with a float8 operand; convert it with "
                               "torchao.float8.convert_to_float8_training first"),
    (dict(dtype="bf16", peak_fp8_tflops=4), "peak_fp8_tflops=4: it applies to dtype='fp8' only"),
    (dict(dtype="fp8", peak_fp8_tflops=-1), "peak_fp8_tflops=-1: pass a positive number (TFLOP/s) or None"),
])
def test_fp8_misuse_is_one_line(kwargs, fragment):
    module = torch.nn.Sequential(torch.nn.Linear(FP8_IN, 16))  # not converted
    with pytest.raises(UsageError) as info:
        flopbench.profile(module, x(), **{**FAST, "peak_fp8_tflops": None, **kwargs})
    assert fragment in str(info.value) and "\n" not in str(info.value)
