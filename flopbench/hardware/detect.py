"""What GPU this is, and everything else about where a measurement was made.

Detection goes through NVML (``pynvml``, from the nvidia-ml-py package), falling back to ``torch.cuda``
when NVML is missing, fails or has no such device. `environment` is the record stored beside every result;
`gpu_peak` and `device_peak` are the peak of a detected GPU, from the one lookup in `hardware.peaks`, and
`gpu_fp8_peak` (`device_fp8_peak` on a device) its fp8 peak for float8 training.

**AMD GPUs.** NVML is NVIDIA's library and does not see AMD GPUs. A ROCm build of torch answers
``torch.cuda`` for them, so the name is ``torch.cuda.get_device_name`` ("AMD Instinct MI300X"), which the peak
table matches, and `GpuInfo.source` says where it came from: "torch (ROCm <HIP version>)". On a ROCm build an
NVML device found only by index is not trusted (it would be an NVIDIA GPU torch does not run on).

**Which NVML device.** NVML numbers GPUs by PCI bus order and ignores ``CUDA_VISIBLE_DEVICES``, while
torch's ``cuda:i`` counts only the visible ones, in CUDA's order: with ``CUDA_VISIBLE_DEVICES=3`` torch's
device 0 is NVML's device 3. So `nvml_handle` finds torch's device by its UUID
(``torch.cuda.get_device_properties(i).uuid`` → ``nvmlDeviceGetHandleByUUID``), else by its PCI bus id,
and only when torch gives neither by the index (`GpuInfo.source` then says so).

**MIG.** A MIG slice is named "<GPU> MIG <profile>" and has only some of the chip's SMs; it is detected by
its name, by ``nvmlDeviceIsMigDeviceHandle`` or by the parent's ``nvmlDeviceGetMigMode``, and its SM count
is torch's ``multi_processor_count`` (`GpuInfo.mig`, `GpuInfo.sm_count`), which `hardware.peaks` turns into
the slice's share of the chip's peak. Clocks and power are the parent GPU's (`physical_handle`).
"""

from __future__ import annotations

import math
import os
import platform
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import __version__
from ..errors import UsageError
from .peaks import check_fp8, is_mig, resolve_peak

#: NVML's clock domains and temperature sensor (nvml.h: nvmlClockType_t, nvmlTemperatureSensors_t).
NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

#: `GpuInfo.source` when NVML had to be asked by index.
BY_INDEX = ("nvml, by index: torch gave no UUID or PCI bus id, so with CUDA_VISIBLE_DEVICES set this may be "
            "another GPU than the one measured")


@dataclass
class GpuInfo:
    """What is known about one GPU. Fields NVML (or torch) could not give are None."""

    name: str
    memory_total_bytes: int | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # highest CUDA version the driver supports, e.g. "12.8"
    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    power_limit_w: float | None = None
    source: str = "none"  # "nvml" (by UUID or PCI bus id), `BY_INDEX`, "torch", "torch (ROCm <v>)" or "none"
    uuid: str | None = None
    sm_count: int | None = None  # SMs this device has (a MIG slice: the slice's), from torch
    mig: bool = False  # a MIG slice (or a GPU in MIG mode)

    def as_dict(self) -> dict:
        return asdict(self)


def _text(value: str | bytes) -> str:
    """pynvml returns bytes in old versions, str in new ones."""
    return value.decode() if isinstance(value, bytes) else value


def optional(fn, *args):
    """``fn(*args)``, or None if it raises (a field this GPU or driver does not report)."""
    try:
        return fn(*args)
    except Exception:
        return None


def nvml_call(pynvml, function: str, *args):
    """``pynvml.<function>(*args)``, or None where this pynvml lacks the function or the GPU refuses it."""
    fn = getattr(pynvml, function, None)
    return None if fn is None else optional(fn, *args)


def _cuda_version_string(version: int | None) -> str | None:
    """NVML encodes CUDA 12.8 as 12080."""
    return None if version is None else f"{version // 1000}.{version % 1000 // 10}"


def torch_properties(index: int):
    """``torch.cuda.get_device_properties(index)``, or None without CUDA or such a device."""
    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        return None
    return optional(torch.cuda.get_device_properties, index)


def _uuids(props) -> list[str]:
    """NVML's spellings of the device's UUID: torch prints it bare ("58e5…") or with its prefix; NVML wants
    "GPU-…" for a GPU and "MIG-…" for a MIG slice."""
    raw = getattr(props, "uuid", None)
    text = _text(str(raw)).strip() if raw is not None else ""
    if not text:
        return []
    if text[:4] in ("GPU-", "MIG-"):
        return [text]
    return [f"GPU-{text}", f"MIG-{text}"]


def _pci_bus_id(props) -> str | None:
    """"00000000:18:00.0" from torch's PCI domain, bus and device ids (where this torch has them)."""
    ids = [getattr(props, f"pci_{part}_id", None) for part in ("domain", "bus", "device")]
    if any(i is None for i in ids):
        return None
    return f"{ids[0]:08x}:{ids[1]:02x}:{ids[2]:02x}.0"


def nvml_handle(pynvml, index: int, props=None) -> tuple[object, str]:
    """(NVML handle of torch's CUDA device ``index``, how it was found: "uuid", "pci_bus_id" or "index").

    By UUID first, then PCI bus id; NVML's own index only when torch gives neither (see the module
    docstring). ``props``: torch's device properties (default: read them)."""
    props = props if props is not None else torch_properties(index)
    if props is not None:
        for uuid in _uuids(props):
            handle = nvml_call(pynvml, "nvmlDeviceGetHandleByUUID", uuid)
            if handle is not None:
                return handle, "uuid"
        bus_id = _pci_bus_id(props)
        for function in ("nvmlDeviceGetHandleByPciBusId_v2", "nvmlDeviceGetHandleByPciBusId"):
            handle = nvml_call(pynvml, function, bus_id) if bus_id else None
            if handle is not None:
                return handle, "pci_bus_id"
    return pynvml.nvmlDeviceGetHandleByIndex(index), "index"


def physical_handle(pynvml, handle):
    """The handle of the GPU itself: a MIG slice's parent (clocks, power and energy are the chip's)."""
    if nvml_call(pynvml, "nvmlDeviceIsMigDeviceHandle", handle):
        parent = nvml_call(pynvml, "nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle)
        return parent if parent is not None else handle
    return handle


def _is_mig(pynvml, handle, name: str) -> bool:
    """A MIG slice by its name or NVML handle, or a GPU whose MIG mode is on (NVML_DEVICE_MIG_ENABLE = 1)."""
    if is_mig(name) or nvml_call(pynvml, "nvmlDeviceIsMigDeviceHandle", handle):
        return True
    mode = nvml_call(pynvml, "nvmlDeviceGetMigMode", handle)  # (current, pending)
    return bool(mode) and mode[0] == 1


def _detect_with_nvml(index: int) -> GpuInfo:
    """Ask NVML about torch's GPU ``index``. Raises (ImportError, ``pynvml.NVMLError``, ...) if it cannot."""
    import pynvml

    pynvml.nvmlInit()
    try:
        props = torch_properties(index)
        handle, how = nvml_handle(pynvml, index, props)
        if how == "index" and rocm_version():
            raise LookupError("NVML does not see the GPUs a ROCm build of torch runs on")
        chip = physical_handle(pynvml, handle)
        name = _text(pynvml.nvmlDeviceGetName(handle))
        cuda = nvml_call(pynvml, "nvmlSystemGetCudaDriverVersion_v2")
        if cuda is None:
            cuda = nvml_call(pynvml, "nvmlSystemGetCudaDriverVersion")
        driver = nvml_call(pynvml, "nvmlSystemGetDriverVersion")
        memory = nvml_call(pynvml, "nvmlDeviceGetMemoryInfo", handle)
        power_mw = nvml_call(pynvml, "nvmlDeviceGetEnforcedPowerLimit", chip)
        uuid = nvml_call(pynvml, "nvmlDeviceGetUUID", handle)
        return GpuInfo(
            name=name,
            memory_total_bytes=None if memory is None else int(memory.total),
            driver_version=None if driver is None else _text(driver),
            cuda_driver_version=_cuda_version_string(cuda),
            sm_clock_mhz=nvml_call(pynvml, "nvmlDeviceGetClockInfo", chip, NVML_CLOCK_SM),
            sm_clock_max_mhz=nvml_call(pynvml, "nvmlDeviceGetMaxClockInfo", chip, NVML_CLOCK_SM),
            power_limit_w=None if power_mw is None else power_mw / 1000.0,
            source=BY_INDEX if how == "index" else "nvml",
            uuid=None if uuid is None else _text(uuid),
            sm_count=getattr(props, "multi_processor_count", None),
            mig=_is_mig(pynvml, handle, name),
        )
    finally:
        nvml_call(pynvml, "nvmlShutdown")


def rocm_version() -> str | None:
    """The HIP version of a ROCm build of torch ("6.2.41133"), None on a CUDA or CPU build."""
    return getattr(torch.version, "hip", None) or None


def _detect_with_torch(index: int) -> GpuInfo | None:
    """Describe torch's GPU ``index`` with torch alone: the name is ``torch.cuda.get_device_name`` (on ROCm an AMD
    GPU's, "AMD Instinct MI300X", and the source says ROCm)."""
    props = torch_properties(index)
    if props is None:
        return None
    name = torch.cuda.get_device_name(index)
    uuids = _uuids(props)
    hip = rocm_version()
    return GpuInfo(
        name=name,
        memory_total_bytes=getattr(props, "total_memory", None),
        source=f"torch (ROCm {hip})" if hip else "torch",
        uuid=uuids[0] if uuids else None,
        sm_count=getattr(props, "multi_processor_count", None),
        mig=is_mig(name),
    )


def detect_gpu(index: int = 0) -> GpuInfo | None:
    """Describe torch's GPU ``index``: through NVML if it works, else through ``torch.cuda`` (an AMD GPU on ROCm:
    see the module docstring); None if no GPU."""
    try:
        return _detect_with_nvml(index)
    except Exception:  # no pynvml, no driver library, no such device, ...
        return _detect_with_torch(index)


def environment(device: torch.device) -> dict:
    """Everything about where a measurement was made that could change its numbers."""
    gpu = detect_gpu(device.index or 0) if device.type == "cuda" else None
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "flopbench": __version__,
        "flopbench_git": _git_commit(),
        "device": str(device),
        "gpu": gpu.as_dict() if gpu else None,
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def gpu_peak(gpu: dict | GpuInfo | None, column: str, peak_tflops: float | None = None) -> tuple[float | None, str]:
    """(peak TFLOP/s, where it came from) of a detected GPU (a `GpuInfo` or its dict, as `environment`
    stores it) for peak-table column `column`: `hardware.peaks.resolve_peak` with the GPU's MIG state and
    SM count, so a MIG slice gets its share of the chip."""
    if isinstance(gpu, GpuInfo):
        gpu = gpu.as_dict()
    if not gpu:
        return resolve_peak(None, column, peak_tflops)
    return resolve_peak(gpu.get("name"), column, peak_tflops, sm_count=gpu.get("sm_count"), mig=gpu.get("mig"))


def device_peak(device: torch.device, column: str | None, peak_tflops: float | None = None,
                dtype=None) -> tuple[float | None, str]:
    """(peak TFLOP/s, where it came from) for work in peak-table column `column` on `device`: `peak_tflops`
    if given, else the table entry of the GPU NVML names (its MIG share on a slice); None with the reason
    otherwise (the CPU has no entry). `dtype` only names a compute dtype that has no column (`column` None)
    in the reason."""
    if peak_tflops is None and column is None:
        return None, f"no peak-table column for {dtype}; pass peak_tflops="
    gpu = detect_gpu(device.index or 0) if device.type == "cuda" else None
    return gpu_peak(gpu, column or "fp32", peak_tflops)


def gpu_fp8_peak(gpu: dict | GpuInfo | None, peak_fp8_tflops: float | None = None,
                 option: str = "--peak-fp8-tflops", dtype_option: str = "--dtype") -> tuple[float | None, str]:
    """(fp8 dense peak TFLOP/s, where it came from) of a detected GPU (a `GpuInfo` or its dict) for float8 work:
    `peak_fp8_tflops` if given (`option` names it, in the source and in an error), else the table's fp8 entry
    (`gpu_peak`). A GPU the table knows has no fp8 tensor cores is refused (`hardware.peaks.check_fp8`, naming
    `dtype_option`)."""
    if peak_fp8_tflops is not None and not (math.isfinite(peak_fp8_tflops) and peak_fp8_tflops > 0):
        raise UsageError(f"{option}={peak_fp8_tflops!r}: pass a positive number (TFLOP/s) or None")
    if isinstance(gpu, GpuInfo):
        gpu = gpu.as_dict()
    check_fp8((gpu or {}).get("name"), dtype_option)
    if peak_fp8_tflops is not None:
        return float(peak_fp8_tflops), option
    return gpu_peak(gpu, "fp8")


def device_fp8_peak(device: torch.device, dtype: str | None,
                    peak_fp8_tflops: float | None = None) -> tuple[float | None, str | None]:
    """(fp8 dense peak TFLOP/s, where it came from) for work in `dtype` "fp8" on `device` (`gpu_fp8_peak` of the
    GPU there); (None, None) for any other dtype, which may not be given `peak_fp8_tflops`."""
    if dtype != "fp8":
        if peak_fp8_tflops is not None:
            raise UsageError(f"peak_fp8_tflops={peak_fp8_tflops!r}: it applies to dtype='fp8' only "
                             f"(got dtype={dtype!r})")
        return None, None
    gpu = detect_gpu(device.index or 0) if device.type == "cuda" else None
    return gpu_fp8_peak(gpu, peak_fp8_tflops, "peak_fp8_tflops", "dtype")
