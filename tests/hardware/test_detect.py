"""GPU detection: NVML (a fake pynvml module), which NVML device torch's device is, MIG, the torch fallback."""

import sys

import pytest
import torch
from hardware.fake_nvml import FakeNvml, NVMLError, cuda_props, pretend_cuda

from flopbench.errors import UsageError
from flopbench.hardware import detect as hardware
from flopbench.hardware.peaks import peak_tflops

A100 = dict(name="NVIDIA A100-SXM4-80GB", uuid="GPU-aaaaaaaa-0000-0000-0000-000000000000", bus_id="00000000:07:00.0",
            memory=85899345920, sm_clock=1410, sm_clock_max=1410, power_limit_mw=400000)
H100 = dict(name="NVIDIA H100 80GB HBM3", uuid="GPU-bbbbbbbb-0000-0000-0000-000000000000", bus_id="00000000:18:00.0",
            memory=85520809984, sm_clock=1980, sm_clock_max=1980, power_limit_mw=700000)


def _no_nvml(index):
    raise ImportError("No module named 'pynvml'")


def test_no_nvml_and_no_cuda_gives_none(monkeypatch):
    monkeypatch.setattr(hardware, "_detect_with_nvml", _no_nvml)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.detect_gpu() is None


def test_no_nvml_falls_back_to_torch(monkeypatch):
    monkeypatch.setattr(hardware, "_detect_with_nvml", _no_nvml)
    pretend_cuda(monkeypatch, [cuda_props(uuid=None, sms=114, memory=80 * 2**30)], ["NVIDIA H100 PCIe"])
    info = hardware.detect_gpu()
    assert info == hardware.GpuInfo(name="NVIDIA H100 PCIe", memory_total_bytes=80 * 2**30, source="torch",
                                    sm_count=114)
    assert info.as_dict()["source"] == "torch"


def test_detect_with_a_fake_nvml(monkeypatch):
    nvml = FakeNvml([dict(H100)])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    pretend_cuda(monkeypatch, [cuda_props(uuid="bbbbbbbb-0000-0000-0000-000000000000")])
    info = hardware.detect_gpu(0)
    assert info == hardware.GpuInfo(
        name="NVIDIA H100 80GB HBM3", memory_total_bytes=85520809984, driver_version="570.86.15",
        cuda_driver_version="12.8", sm_clock_mhz=1980, sm_clock_max_mhz=1980, power_limit_w=700.0,
        source="nvml", uuid=H100["uuid"], sm_count=132, mig=False)
    assert nvml.calls[0] == "init" and nvml.calls[-1] == "shutdown"
    assert peak_tflops(info.name, "bf16") == 989.4


def test_nvml_handle_follows_cuda_visible_devices_by_uuid(monkeypatch):
    """CUDA_VISIBLE_DEVICES=1 on a node of an A100 (NVML 0) and an H100 (NVML 1): torch's cuda:0 is the H100.
    NVML ignores CUDA_VISIBLE_DEVICES, so NVML's index 0 would be the A100."""
    nvml = FakeNvml([dict(A100), dict(H100)])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    pretend_cuda(monkeypatch, [cuda_props(uuid="bbbbbbbb-0000-0000-0000-000000000000")])  # torch prints it bare
    info = hardware.detect_gpu(0)
    assert info.name == "NVIDIA H100 80GB HBM3" and info.source == "nvml" and info.power_limit_w == 700.0
    assert "by_uuid:GPU-bbbbbbbb-0000-0000-0000-000000000000" in nvml.calls
    assert not any(c.startswith("by_index") for c in nvml.calls)


def test_nvml_handle_by_pci_bus_id_when_the_uuid_is_not_found(monkeypatch):
    nvml = FakeNvml([dict(A100), dict(H100, uuid="GPU-other")])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    pretend_cuda(monkeypatch, [cuda_props(uuid="not-known", bus=(0, 0x18, 0))])
    handle, how = hardware.nvml_handle(nvml, 0)
    assert (handle["name"], how) == ("NVIDIA H100 80GB HBM3", "pci_bus_id")
    assert hardware.detect_gpu(0).source == "nvml"


def test_nvml_by_index_only_without_uuid_or_bus_and_it_says_so(monkeypatch):
    nvml = FakeNvml([dict(A100), dict(H100)])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # e.g. `flopbench gpus` with CPU-only torch
    info = hardware.detect_gpu(1)
    assert info.name == "NVIDIA H100 80GB HBM3" and info.source == hardware.BY_INDEX
    assert "by index" in info.source and "CUDA_VISIBLE_DEVICES" in info.source


def test_mig_slice_by_uuid_is_scaled_by_its_sms(monkeypatch):
    """A 1g.10gb slice of an H100 SXM: 16 of 132 SMs, so 989.4 x 16 / 132 = 119.93 TFLOP/s bf16, not 989.4."""
    parent = dict(H100, mig_mode=(1, 1))
    slice_ = dict(name="NVIDIA H100 80GB HBM3 MIG 1g.10gb", uuid="MIG-cccccccc-0000-0000-0000-000000000000",
                  memory=10 * 2**30, parent=parent)
    nvml = FakeNvml([parent, slice_])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    pretend_cuda(monkeypatch, [cuda_props(uuid="cccccccc-0000-0000-0000-000000000000", sms=16)])
    info = hardware.detect_gpu(0)
    assert info.name == "NVIDIA H100 80GB HBM3 MIG 1g.10gb" and info.mig and info.sm_count == 16
    assert info.sm_clock_max_mhz == 1980 and info.power_limit_w == 700.0  # read from the parent GPU
    peak, source = hardware.device_peak(torch.device("cuda", 0), "bf16")
    assert peak == pytest.approx(989.4 * 16 / 132) == pytest.approx(119.927, abs=1e-3)
    assert source.startswith("table: H100 SXM bf16 × 16/132 SMs (MIG slice 1g.10gb)")


def test_gpu_in_mig_mode_found_by_index_is_scaled_too(monkeypatch):
    """NVML by index gives the parent GPU (its name has no MIG profile) whose MIG mode is on: the SMs torch
    reports for the slice it runs on still scale the peak."""
    nvml = FakeNvml([dict(H100, mig_mode=(1, 1))])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    pretend_cuda(monkeypatch, [cuda_props(uuid=None, sms=32)])
    info = hardware.detect_gpu(0)
    assert info.mig and info.sm_count == 32 and info.source == hardware.BY_INDEX
    peak, source = hardware.gpu_peak(info, "bf16")
    assert peak == pytest.approx(989.4 * 32 / 132) and "32/132 SMs (MIG slice)" in source


def test_nvml_fields_it_cannot_give_are_none(monkeypatch):
    gpu = dict(H100)
    del gpu["power_limit_mw"]
    nvml = FakeNvml([gpu])
    nvml.nvmlSystemGetCudaDriverVersion_v2 = lambda: (_ for _ in ()).throw(NVMLError("not supported"))
    nvml.nvmlSystemGetCudaDriverVersion = lambda: 12040
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    pretend_cuda(monkeypatch, [cuda_props(uuid=H100["uuid"])])
    info = hardware.detect_gpu(0)
    assert info.source == "nvml" and info.power_limit_w is None and info.cuda_driver_version == "12.4"


def test_nvml_failure_falls_back_to_torch(monkeypatch):
    nvml = FakeNvml([dict(H100)])

    def no_driver():
        raise NVMLError("NVML_ERROR_DRIVER_NOT_LOADED")

    nvml.nvmlInit = no_driver
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.detect_gpu() is None


# --- AMD GPUs: torch on ROCm names them, NVML does not see them ----------------------------------

MI300X_PROPS = dict(uuid=None, sms=304, memory=192 * 2**30)


@pytest.mark.parametrize("nvml", [FakeNvml([]), None], ids=["nvml-without-devices", "no-pynvml"])
def test_an_amd_gpu_is_named_by_torch_on_rocm(monkeypatch, nvml):
    """ROCm torch answers torch.cuda.* for an AMD GPU; NVML (NVIDIA's library) has no device, or is absent."""
    if nvml is None:
        monkeypatch.setattr(hardware, "_detect_with_nvml", _no_nvml)
    else:
        monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(torch.version, "hip", "6.2.41133", raising=False)
    pretend_cuda(monkeypatch, [cuda_props(**MI300X_PROPS)], ["AMD Instinct MI300X"])
    info = hardware.detect_gpu(0)
    assert info == hardware.GpuInfo(name="AMD Instinct MI300X", memory_total_bytes=192 * 2**30,
                                    source="torch (ROCm 6.2.41133)", sm_count=304)
    # MI300X datasheet: FP8 5229.8 TFLOP/s with sparsity, 2614.9 dense
    peak, source = hardware.gpu_peak(info, "fp8")
    assert peak == pytest.approx(5229.8 / 2, abs=0.05) and source.startswith("table: Instinct MI300X fp8")


def test_on_rocm_an_nvidia_gpu_nvml_finds_only_by_index_is_not_the_measured_one(monkeypatch):
    """A node with an A100 (NVML's device 0) and an MI300X that ROCm torch runs on: NVML by index would name the
    A100, which torch cannot see; the name is torch's."""
    nvml = FakeNvml([dict(A100)])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(torch.version, "hip", "6.2.41133", raising=False)
    pretend_cuda(monkeypatch, [cuda_props(**MI300X_PROPS)], ["AMD Instinct MI300X"])
    info = hardware.detect_gpu(0)
    assert info.name == "AMD Instinct MI300X" and info.source == "torch (ROCm 6.2.41133)"


def test_a_cuda_build_without_nvml_still_says_torch(monkeypatch):
    monkeypatch.setattr(hardware, "_detect_with_nvml", _no_nvml)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    pretend_cuda(monkeypatch, [cuda_props(uuid=None, sms=148)], ["NVIDIA B200"])
    info = hardware.detect_gpu(0)
    assert info.source == "torch" and hardware.gpu_peak(info, "fp8")[0] == 9000 / 2  # HGX B200: 9 PFLOPS sparse


@pytest.mark.parametrize("name, expected", [
    ("NVIDIA H100 80GB HBM3", (1979.0, "table")),  # H100 whitepaper, Table 1: 3958 sparse fp8, halved
    ("NVIDIA A100-SXM4-80GB", r"^dtype fp8: the A100 SXM4 80GB has no fp8 tensor cores .*; use bf16$"),
])
def test_device_fp8_peak_reads_the_table_and_refuses_a_gpu_without_fp8(monkeypatch, name, expected):
    monkeypatch.setattr(hardware, "detect_gpu", lambda index: hardware.GpuInfo(name=name))
    cuda = torch.device("cuda")
    if isinstance(expected, str):
        with pytest.raises(UsageError, match=expected):
            hardware.device_fp8_peak(cuda, "fp8")
        return
    peak, source = hardware.device_fp8_peak(cuda, "fp8")
    assert (peak, source.split(":")[0]) == expected
    assert hardware.device_fp8_peak(cuda, "fp8", 4) == (4.0, "peak_fp8_tflops")
    assert hardware.device_fp8_peak(cuda, "bf16") == (None, None)  # nothing looked up for another dtype
