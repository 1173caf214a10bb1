"""Peak table, GPU detection (NVML and its torch fallback) and the GEMM-ceiling microbenchmark."""

import math
from types import SimpleNamespace

import pytest
import torch

from flopbench import hardware
from flopbench.errors import UsageError


@pytest.mark.parametrize("name, key, bf16", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm", 989.4),
    ("NVIDIA H100 PCIe", "h100-pcie", 756),
    ("NVIDIA H100 NVL", "h100-nvl", 835),
    ("NVIDIA H200", "h200-sxm", 989.4),
    ("NVIDIA H200 NVL", "h200-nvl", 835),
    ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb", 312),
    ("NVIDIA A100-SXM4-40GB", "a100-sxm4-40gb", 312),
    ("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb", 312),
    ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb", 312),
    ("NVIDIA A10G", "a10g", 125),
    ("NVIDIA L4", "l4", 121),
    ("NVIDIA L40S", "l40s", 362),
    ("NVIDIA GeForce RTX 4090", "rtx-4090", 165.2),
    ("NVIDIA GeForce RTX 3090", "rtx-3090", 71),
    ("Tesla V100-SXM2-16GB", "v100-sxm2", None),
    ("Tesla V100-PCIE-32GB", "v100-pcie", None),
    ("Tesla T4", "t4", None),
])
def test_real_nvml_names_match_their_entry(name, key, bf16):
    entry = hardware.match_gpu(name)
    assert entry is not None and entry.key == key
    assert hardware.peak_tflops(name, "bf16") == bf16


@pytest.mark.parametrize("name", [
    "NVIDIA B999", "NVIDIA GH200 480GB", "NVIDIA GeForce RTX 4090 D", "NVIDIA GeForce RTX 3090 Ti", "",
])
def test_unknown_or_different_gpus_match_nothing(name):
    assert hardware.match_gpu(name) is None
    assert hardware.peak_tflops(name, "bf16") is None


def test_tf32_and_fp32_peaks():
    assert hardware.peak_tflops("NVIDIA H100 80GB HBM3", "tf32") == 494.7
    assert hardware.peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == 66.9
    assert hardware.peak_tflops("NVIDIA A100-SXM4-80GB", "tf32") == 156
    assert hardware.peak_tflops("NVIDIA A100-SXM4-80GB", "fp32") == 19.5
    assert hardware.peak_tflops("Tesla V100-SXM2-16GB", "tf32") is None
    assert hardware.peak_tflops("Tesla V100-SXM2-16GB", "fp16") == 125


def test_bad_dtype_is_a_usage_error():
    with pytest.raises(UsageError, match="fp8"):
        hardware.peak_tflops("NVIDIA H100 PCIe", "fp8")


def test_table_is_well_formed():
    table = hardware.load_peak_table()
    assert len({e.key for e in table}) == len(table)
    for e in table:
        assert e.source and e.match
        assert all(v is None or v > 0 for v in e.tflops.values())
        assert hardware.match_gpu(e.display_name) is e and hardware.match_gpu(e.key) is e
    assert "H100 SXM" in hardware.format_peak_table()


def test_peak_dtype_follows_tf32_setting():
    assert hardware.peak_dtype(torch.bfloat16) == "bf16"
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert hardware.peak_dtype(torch.float32) == "fp32"
        torch.set_float32_matmul_precision("high")
        assert hardware.peak_dtype(torch.float32) == "tf32"
    finally:
        torch.set_float32_matmul_precision(before)


def test_resolve_peak():
    assert hardware.resolve_peak("NVIDIA H100 80GB HBM3", "bf16", 500.0) == (500.0, "--peak-tflops")
    assert hardware.resolve_peak(None, "bf16", 123) == (123.0, "--peak-tflops")
    value, source = hardware.resolve_peak("NVIDIA H100 80GB HBM3", "bf16", None)
    assert value == 989.4 and source.startswith("table: H100 SXM bf16")
    value, source = hardware.resolve_peak("NVIDIA B999", "bf16", None)
    assert value is None and "NVIDIA B999" in source and "--peak-tflops" in source
    assert hardware.resolve_peak("Tesla T4", "bf16", None)[0] is None
    assert hardware.resolve_peak(None, "bf16", None)[0] is None
    with pytest.raises(UsageError):
        hardware.resolve_peak("NVIDIA H100 PCIe", "bf16", -1.0)


# --- detection ---------------------------------------------------------------------------------


def _no_nvml(index):
    raise ImportError("No module named 'pynvml'")


def test_no_nvml_and_no_cuda_gives_none(monkeypatch):
    monkeypatch.setattr(hardware, "_detect_with_nvml", _no_nvml)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.detect_gpu() is None


def test_no_nvml_falls_back_to_torch(monkeypatch):
    monkeypatch.setattr(hardware, "_detect_with_nvml", _no_nvml)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA H100 PCIe")
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index=None: SimpleNamespace(total_memory=80 * 2**30))
    info = hardware.detect_gpu()
    assert info == hardware.GpuInfo(name="NVIDIA H100 PCIe", memory_total_bytes=80 * 2**30, source="torch")
    assert info.as_dict()["source"] == "torch"


@pytest.fixture
def fake_nvml(monkeypatch):
    """pynvml answering like an H100 SXM node; returns the list of calls to init/shutdown."""
    pynvml = pytest.importorskip("pynvml")
    calls = []
    fakes = {
        "nvmlInit": lambda: calls.append("init"),
        "nvmlShutdown": lambda: calls.append("shutdown"),
        "nvmlDeviceGetHandleByIndex": lambda i: ("handle", i),
        "nvmlDeviceGetName": lambda h: b"NVIDIA H100 80GB HBM3",
        "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(total=85520809984, free=0, used=0),
        "nvmlSystemGetDriverVersion": lambda: b"570.86.15",
        "nvmlSystemGetCudaDriverVersion_v2": lambda: 12080,
        "nvmlDeviceGetClockInfo": lambda h, c: 1980 if c == pynvml.NVML_CLOCK_SM else 0,
        "nvmlDeviceGetMaxClockInfo": lambda h, c: 1980 if c == pynvml.NVML_CLOCK_SM else 0,
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: 700000,
    }
    for name, fn in fakes.items():
        monkeypatch.setattr(pynvml, name, fn)
    return calls


def test_detect_with_mocked_nvml(fake_nvml):
    info = hardware.detect_gpu(0)
    assert info == hardware.GpuInfo(
        name="NVIDIA H100 80GB HBM3", memory_total_bytes=85520809984, driver_version="570.86.15",
        cuda_driver_version="12.8", sm_clock_mhz=1980, sm_clock_max_mhz=1980, power_limit_w=700.0,
        source="nvml")
    assert fake_nvml == ["init", "shutdown"]
    assert hardware.peak_tflops(info.name, "bf16") == 989.4


def test_nvml_fields_it_cannot_give_are_none(fake_nvml, monkeypatch):
    import pynvml

    def not_supported(*args):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetEnforcedPowerLimit", not_supported)
    monkeypatch.setattr(pynvml, "nvmlSystemGetCudaDriverVersion_v2", not_supported)
    monkeypatch.setattr(pynvml, "nvmlSystemGetCudaDriverVersion", lambda: 12040)
    info = hardware.detect_gpu(0)
    assert info.source == "nvml" and info.power_limit_w is None and info.cuda_driver_version == "12.4"


def test_nvml_failure_falls_back_to_torch(fake_nvml, monkeypatch):
    import pynvml

    def no_driver():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.detect_gpu() is None


# --- GEMM ceiling ------------------------------------------------------------------------------


def test_gemm_ceiling_cpu():
    n = 128
    r = hardware.gemm_ceiling("cpu", torch.float32, size=n, iters=5, warmup=1)
    assert r["size"] == n and r["dtype"] == "float32" and len(r["times_ms"]) == 5
    assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("tflops_median", "tflops_min", "tflops_max"))
    assert r["tflops_min"] <= r["tflops_median"] <= r["tflops_max"]
    # FLOPs = 2·n³ per product: the slowest time gives the lowest rate, the fastest the highest.
    assert r["tflops_min"] * 1e12 * max(r["times_ms"]) * 1e-3 == pytest.approx(2 * n**3)
    assert r["tflops_max"] * 1e12 * min(r["times_ms"]) * 1e-3 == pytest.approx(2 * n**3)


def test_gemm_ceiling_rejects_bad_arguments():
    with pytest.raises(UsageError):
        hardware.gemm_ceiling("cpu", torch.float32, size=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gemm_ceiling_cuda_bf16_within_table_peak():
    info = hardware.detect_gpu(0)
    peak = hardware.peak_tflops(info.name, "bf16")
    if peak is None:
        pytest.skip(f"no bf16 peak in the table for {info.name!r}")
    r = hardware.gemm_ceiling("cuda", torch.bfloat16, size=8192, iters=20, warmup=5)
    assert 0.10 * peak <= r["tflops_median"] <= peak, (r, peak)
