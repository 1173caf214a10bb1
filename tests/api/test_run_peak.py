"""The peak `run` divides by: the table entry of the detected GPU for the run's dtype, and MFU = FLOPs / (time x peak).

The run happens on the CPU while the environment pretends to be an H100 SXM ("NVIDIA H100 80GB HBM3", as
NVML names it), so the peak-table lookup and the division are checked with a peak other than 1.
"""

import pytest

from flopbench.api import run as run_module
from flopbench.api.run import RunOptions, run
from flopbench.hardware.peaks import resolve_peak
from flopbench.model.config import ModelConfig
from helpers import pretend_gpu

H100 = "NVIDIA H100 80GB HBM3"
CFG = ModelConfig("peak", n_layer=1, d_model=32, n_head=2, vocab_size=64, max_seq_len=16)
B, T = 2, 16
FAST = dict(batch_size=B, seq_len=T, device="cpu", warmup=0, iters=3, gemm=False, out=None, checkpointing="none")
# By hand: N_matmul = 12·32² + 32·64 = 14,336; forward = 2·B·T·N_matmul + 4·B·T²·d·L = 917,504 + 65,536.
FORWARD = 983_040


@pytest.fixture
def pretend_h100(monkeypatch):
    """`run` reads the GPU name from `environment(device)`: report an H100 SXM there."""
    pretend_gpu(monkeypatch, run_module, {"name": H100, "source": "test"})


# Dense peaks of the H100 SXM5 (NVIDIA H100 Tensor Core GPU Architecture whitepaper, Table 1; the sparse
# figures halved): FP32 66.9, TF32 494.7, BF16 / FP16 989.4 TFLOP/s.
@pytest.mark.parametrize("column, tflops", [("fp32", 66.9), ("tf32", 494.7), ("bf16", 989.4), ("fp16", 989.4)])
def test_resolve_peak_per_column(column, tflops):
    value, source = resolve_peak(H100, column, None)
    assert value == tflops and source.startswith(f"table: H100 SXM {column}")


def check_rates(doc, peak):
    assert FORWARD == 2 * B * T * (12 * 32 * 32 + 32 * 64) + 4 * B * T * T * 32
    for r in doc["rows"]:
        assert r["status"] == "ok" and r["peak_tflops"] == peak
        seconds = r["time_ms"]["median_ms"] / 1e3
        assert r["time_ms"]["min_ms"] <= r["time_ms"]["median_ms"] <= r["time_ms"]["max_ms"]
        assert r["mfu"] == pytest.approx(r["model_flops"] / (seconds * peak * 1e12), rel=1e-9)
        assert r["hfu"] == pytest.approx(r["hardware_flops"] / (seconds * peak * 1e12), rel=1e-9)
        assert r["mfu_simple"] == pytest.approx(r["simple_flops"] / (seconds * peak * 1e12), rel=1e-9)
        assert r["achieved_tflops"] == pytest.approx(r["model_flops"] / seconds / 1e12, rel=1e-9)
        assert r["model_flops"] == (FORWARD if r["mode"] == "forward" else 3 * FORWARD)  # backward = 2 x forward
        # causal (Megatron-LM, MaxText): half of the forward's 4·B·T²·d square, 32,768, is not counted
        passes = 1 if r["mode"] == "forward" else 3
        assert r["model_flops_causal"] == passes * (FORWARD - 2 * B * T * T * 32)
        assert r["mfu_causal"] == pytest.approx(r["model_flops_causal"] / (seconds * peak * 1e12), rel=1e-9)


def test_fp32_run_on_an_h100_divides_by_the_fp32_peak(pretend_h100):
    doc = run(CFG, RunOptions(**FAST, dtype="fp32"), progress=lambda m: None)
    assert [r["mode"] for r in doc["rows"]] == ["forward", "fwd_bwd", "train_step"]
    assert doc["peak"]["tflops"] == 66.9 and doc["peak"]["dtype"] == "fp32"
    assert doc["peak"]["source"].startswith("table: H100 SXM fp32")
    check_rates(doc, 66.9)


def test_bf16_run_on_an_h100_divides_by_the_bf16_peak(pretend_h100):
    doc = run(CFG, RunOptions(**FAST, dtype="bf16", modes=("forward", "fwd_bwd")), progress=lambda m: None)
    assert doc["peak"]["tflops"] == 989.4 and doc["peak"]["dtype"] == "bf16"
    check_rates(doc, 989.4)


def test_peak_tflops_overrides_the_table(pretend_h100):
    doc = run(CFG, RunOptions(**FAST, dtype="fp32", peak_tflops=2.5, modes=("forward",)), progress=lambda m: None)
    assert doc["peak"] == {"tflops": 2.5, "source": "--peak-tflops", "dtype": "fp32"}
    r = doc["rows"][0]
    assert r["mfu"] == pytest.approx(FORWARD / (r["time_ms"]["median_ms"] / 1e3 * 2.5e12), rel=1e-9)


def test_the_same_run_on_a_cpu_without_a_gpu_has_no_peak():
    doc = run(CFG, RunOptions(**FAST, dtype="fp32", modes=("forward",)), progress=lambda m: None)
    assert doc["peak"]["tflops"] is None and doc["rows"][0]["mfu"] is None
    assert doc["rows"][0]["achieved_tflops"] > 0
