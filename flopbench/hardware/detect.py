"""What GPU this is, and everything else about where a measurement was made.

Detection goes through NVML (``pynvml``, from the nvidia-ml-py package), falling back to ``torch.cuda``
when NVML is missing or fails. `environment` is the record stored beside every result; `device_peak`
is the peak of the GPU a device is on, from the one lookup in `hardware.peaks`.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import __version__
from .peaks import resolve_peak


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
    source: str = "none"  # "nvml", "torch" or "none"

    def as_dict(self) -> dict:
        return asdict(self)


def _text(value: str | bytes) -> str:
    """pynvml returns bytes in old versions, str in new ones."""
    return value.decode() if isinstance(value, bytes) else value


def _optional(fn, *args):
    """``fn(*args)``, or None if it raises (a field this GPU or driver does not report)."""
    try:
        return fn(*args)
    except Exception:
        return None


def _cuda_version_string(version: int | None) -> str | None:
    """NVML encodes CUDA 12.8 as 12080."""
    return None if version is None else f"{version // 1000}.{version % 1000 // 10}"


def _detect_with_nvml(index: int) -> GpuInfo:
    """Ask NVML about GPU ``index``. Raises (ImportError, ``pynvml.NVMLError``, ...) if it cannot."""
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        cuda_version = getattr(pynvml, "nvmlSystemGetCudaDriverVersion_v2", None)
        cuda = _optional(cuda_version) if cuda_version else None
        if cuda is None:
            cuda = _optional(pynvml.nvmlSystemGetCudaDriverVersion)
        driver = _optional(pynvml.nvmlSystemGetDriverVersion)
        memory = _optional(pynvml.nvmlDeviceGetMemoryInfo, handle)
        power_mw = _optional(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        return GpuInfo(
            name=_text(pynvml.nvmlDeviceGetName(handle)),
            memory_total_bytes=None if memory is None else int(memory.total),
            driver_version=None if driver is None else _text(driver),
            cuda_driver_version=_cuda_version_string(cuda),
            sm_clock_mhz=_optional(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM),
            sm_clock_max_mhz=_optional(pynvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_SM),
            power_limit_w=None if power_mw is None else power_mw / 1000.0,
            source="nvml",
        )
    finally:
        _optional(pynvml.nvmlShutdown)


def _detect_with_torch(index: int) -> GpuInfo | None:
    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        return None
    props = _optional(torch.cuda.get_device_properties, index)
    return GpuInfo(
        name=torch.cuda.get_device_name(index),
        memory_total_bytes=getattr(props, "total_memory", None),
        source="torch",
    )


def detect_gpu(index: int = 0) -> GpuInfo | None:
    """Describe GPU ``index``: through NVML if it works, else through ``torch.cuda``; None if no GPU."""
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


def device_peak(device: torch.device, column: str | None, peak_tflops: float | None = None,
                dtype=None) -> tuple[float | None, str]:
    """(peak TFLOP/s, where it came from) for work in peak-table column `column` on `device`: `peak_tflops`
    if given, else the table entry of the GPU NVML names; None with the reason otherwise (the CPU has
    no entry). `dtype` only names a compute dtype that has no column (`column` None) in the reason."""
    if peak_tflops is None and column is None:
        return None, f"no peak-table column for {dtype}; pass peak_tflops="
    gpu = detect_gpu(device.index or 0) if device.type == "cuda" else None
    return resolve_peak(gpu.name if gpu else None, column or "fp32", peak_tflops)
