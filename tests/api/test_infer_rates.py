"""`infer`'s rates recomputed by hand from its own step times: decode MFU per second (not per
millisecond), prefill MBU from the median prefill, and the peak of the run's dtype (not always bf16)."""

import statistics

import pytest

from flopbench.api import infer as infer_module
from flopbench.api.infer import infer
from flopbench.model.config import ModelConfig
from helpers import pretend_gpu

SMALL = ModelConfig("small", n_layer=2, d_model=32, n_head=4, vocab_size=64, max_seq_len=32)
FAST = dict(batch_size=2, prompt_len=8, gen_len=5, device="cpu", warmup=0, iters=5, ceilings=False,
            out=None, progress=lambda m: None)
H100 = "NVIDIA H100 80GB HBM3"


def test_decode_step_mfu_and_prefill_mbu_by_hand():
    doc = infer(SMALL, peak_tflops=2.0, peak_gbps=20.0, **FAST)
    for s in doc["decode"]["steps"]:  # FLOPs / (seconds x 2e12 FLOP/s)
        assert s["mfu"] == pytest.approx(s["flops"] / (s["time_ms"] / 1e3) / 2e12, rel=1e-9)
    p = doc["prefill"]
    times = p["time_ms"]["times_ms"]
    assert len(times) == 5 and p["time_ms"]["median_ms"] == statistics.median(times)
    # MBU of the median prefill, not the fastest one (the five times are never all equal on a real clock)
    assert p["mbu"] == pytest.approx(p["bytes"] / (statistics.median(times) / 1e3) / 20e9, rel=1e-9)
    assert p["mfu"] == pytest.approx(p["flops"] / (statistics.median(times) / 1e3) / 2e12, rel=1e-9)


@pytest.fixture
def pretend_h100(monkeypatch):
    pretend_gpu(monkeypatch, infer_module, {"name": H100, "source": "test"})


# H100 SXM5 dense peaks (NVIDIA H100 Tensor Core GPU Architecture whitepaper, Table 1, sparse halved):
# FP32 66.9 TFLOP/s (no tensor cores), BF16 989.4; HBM3 3.35 TB/s (H100 SXM datasheet).
def test_fp32_infer_on_an_h100_is_rated_at_the_fp32_peak(pretend_h100):
    doc = infer(SMALL, dtype="fp32", **FAST)
    assert doc["peak"]["tflops"] == 66.9 and doc["peak"]["gbps"] == 3350
    p = doc["prefill"]
    assert p["mfu"] == pytest.approx(p["flops"] / (p["time_ms"]["median_ms"] / 1e3) / 66.9e12, rel=1e-9)
