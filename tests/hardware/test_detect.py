"""GPU detection: NVML (faked) and its torch fallback."""

from types import SimpleNamespace

import pytest
import torch

from flopbench.hardware import detect as hardware
from flopbench.hardware.peaks import peak_tflops

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
    assert peak_tflops(info.name, "bf16") == 989.4


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
